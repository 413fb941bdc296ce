//! The `/metrics` page: a jondo's status in the Prometheus text format.
//!
//! Owns the metric names and help texts, from a [`JondoStatus`]. Figures the analysis
//! has nothing to say about are left out rather than reported as a reassuring 0. It must
//! not compute figures (the status model does) nor serve HTTP.

use super::{JondoStatus, ASSUMED_COLLABORATOR_PERCENT};
use crowds_net::metrics::Metrics;

/// A yes/no as a gauge: 1 or 0.
fn flag(yes: bool) -> f64 {
    f64::from(u8::from(yes))
}

/// The Prometheus metrics page of a status.
pub fn metrics(st: &JondoStatus) -> String {
    let r = &st.requests;
    let mut m = Metrics::new();
    m.counter(
        "crowds_requests_initiated_total",
        "Requests this jondo's user started.",
        r.initiated,
    );
    m.counter(
        "crowds_tunnels_initiated_total",
        "Tunnels (CONNECT, SOCKS) this jondo's user opened, also counted in crowds_requests_initiated_total.",
        r.tunnels_initiated,
    );
    m.counter(
        "crowds_requests_relayed_total",
        "Requests relayed for other members.",
        r.relayed,
    );
    m.counter(
        "crowds_requests_submitted_total",
        "Requests submitted to servers as the exit.",
        r.submitted,
    );
    m.counter(
        "crowds_path_failures_total",
        "Paths that broke at this jondo's successor.",
        r.path_failures,
    );
    m.counter(
        "crowds_retries_total",
        "Requests retried after a broken path.",
        r.retries,
    );
    m.counter(
        "crowds_own_path_reforms_total",
        "Re-formations of the user's own path, all causes: its first link failed, its first hop left the crowd, or an epoch with new members re-formed every path.",
        r.own_path_reforms,
    );
    m.counter(
        "crowds_client_failures_total",
        "Requests that failed on the user's side (aborted uploads, malformed bodies); they never re-form a path.",
        r.client_failures,
    );
    m.counters_by(
        "crowds_documents_adopted_total",
        "Crowd documents adopted, by how they were fetched.",
        "fetch",
        &[("full", st.documents.full), ("delta", st.documents.delta)],
    );
    m.counter(
        "crowds_paths_formed_total",
        "Hops decided by this jondo (new paths through it).",
        st.paths_formed,
    );
    m.counter(
        "crowds_bytes_to_user_total",
        "Plain-HTTP response bytes delivered to the user.",
        st.bytes.to_user,
    );
    m.counter(
        "crowds_bytes_from_servers_total",
        "Plain-HTTP response bytes received as the exit.",
        st.bytes.from_servers,
    );
    m.counters_by(
        "crowds_handshakes_total",
        "Peer TLS handshakes by result.",
        "result",
        &[("ok", st.handshakes.ok), ("refused", st.handshakes.refused)],
    );
    m.counters_by(
        "crowds_errors_total",
        "Crowd errors returned to the user, by kind.",
        "kind",
        &st.errors.0,
    );
    m.gauge(
        "crowds_epoch",
        "Epoch of the current crowd document.",
        st.epoch as f64,
    );
    m.gauge(
        "crowds_members",
        "Members in the current crowd document.",
        st.members as f64,
    );
    m.gauge(
        "crowds_forwarding_members",
        "Members that relay (not client-only); every anonymity figure counts these only.",
        st.forwarding_members as f64,
    );
    m.gauge(
        "crowds_client_only",
        "1 if this jondo is a client-only member: its first hop knows that its requests start with it.",
        flag(st.client_only),
    );
    m.gauge("crowds_forward_probability", "The crowd's pf.", st.pf);
    m.gauge(
        "crowds_document_refused_low_pf",
        "1 if this jondo refused the crowd's document for a pf of at most 1/2.",
        flag(st.refused_pf.is_some()),
    );
    // Left out when no number of collaborators is tolerated, rather than a reassuring 0.
    if let Some(c) = st.figures.probable_innocence_against.filter(|c| *c > 0) {
        m.gauge(
            "crowds_probable_innocence_against",
            "Most collaborators against which the crowd's forwarding members keep probable innocence (plain HTTP; not for a client-only member).",
            c as f64,
        );
    }
    m.gauge(
        "crowds_admitted",
        "1 if this jondo is a member of the current crowd.",
        flag(st.admitted),
    );
    m.gauge(
        "crowds_blender_reachable",
        "1 if the blender answered the last call.",
        flag(st.blender_reachable),
    );
    m.gauge(
        "crowds_own_path_reforms_24h",
        "Re-formations of the user's own path in the last 24 hours.",
        st.own_path_reforms_24h as f64,
    );
    m.gauge(
        "crowds_epochs_24h",
        "New crowd epochs adopted in the last 24 hours.",
        st.epochs_24h as f64,
    );
    // The predecessor attack at the assumed share only. A crowd the analysis has nothing
    // to say about leaves the gauges out rather than reporting a reassuring 0.
    let assumed = st.figures.predecessor_attack.at_assumed_share.as_ref();
    if let Some(p) = assumed.map(|a| a.initiator_observed_per_reformation) {
        m.gauge(
            "crowds_attack_observed_per_reformation",
            &format!("P(one re-formation shows the user to the collaborators), if {ASSUMED_COLLABORATOR_PERCENT} % of forwarding members collaborate."),
            p,
        );
    }
    if let Some(r) = assumed.and_then(|a| a.reformations_to_stand_out) {
        m.gauge(
            "crowds_attack_reformations_to_stand_out",
            &format!("Re-formations of the user's path after which the predecessor attack likely singles the user out, if {ASSUMED_COLLABORATOR_PERCENT} % of forwarding members collaborate."),
            r as f64,
        );
    }
    m.gauge(
        "crowds_paths",
        "Paths through this jondo now.",
        st.paths as f64,
    );
    m.gauge("crowds_links", "Open outgoing links.", st.links as f64);
    m.gauge(
        "crowds_in_flight",
        "Requests and tunnels in progress.",
        st.in_flight as f64,
    );
    m.finish()
}
