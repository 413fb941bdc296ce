//! The jondo's control port: status page, `/status.json`, `/metrics`, `/proxy.pac`.
//!
//! Owns what a jondo tells its user about itself: epoch, crowd size, pf, admission,
//! what the crowd size means for anonymity (counting forwarding members only: a
//! client-only member hides nobody, and is itself known to its first hop), what the
//! crowd cannot promise (HTTPS against a timing collaborator), time in the crowd, how
//! often the user's own path re-formed and how many epochs passed in the last 24 hours
//! next to what that means for the predecessor attack in this crowd (figures from
//! [`crowds_proto::analysis`], computed per request in microseconds), traffic counters,
//! link and blender health, and warnings. It listens on loopback, needs no external
//! assets, and never shows where the user browsed: counters carry no destinations.

use crate::node::{Node, ERROR_KINDS};
use crowds_net::body::{self, Body};
use crowds_net::metrics::{self, Metrics};
use crowds_net::net::now_ms;
use crowds_net::page::{html_response, human, refuse_foreign_host, STYLE};
use crowds_proto::analysis::CrowdModel;
use crowds_proto::anonymity;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// Serves one control connection.
pub async fn serve(node: Arc<Node>, stream: TcpStream) {
    let service = service_fn(move |req| {
        let node = node.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(&node, &req)) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .max_buf_size(16 * 1024)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// The share of members assumed to collaborate in the status page's predecessor-attack
/// figures, in percent (the crowd's own probable-innocence limit is shown beside it).
pub const ASSUMED_COLLABORATOR_PERCENT: u64 = 10;

/// "Likely to stand out": the collaborators' most-observed predecessor is the user with
/// at least this probability.
const STAND_OUT_PROBABILITY: f64 = 0.5;

/// The search for the re-formations that make the user stand out stops here (a crowd at
/// 10 % collaborators gets there within a few dozen; this only bounds the work).
const STAND_OUT_SEARCH_LIMIT: u64 = 1_000_000;

/// The HTTPS limitation, said on every status page and in `status.json`: the crowd
/// cannot bundle what it cannot read, so a collaborator on the path can time a tunnel.
pub const HTTPS_TIMING_LEAD: &str = "HTTPS gets less protection than plain HTTP.";

/// The rest of the HTTPS limitation (after [`HTTPS_TIMING_LEAD`]).
pub const HTTPS_TIMING: &str = "Jondos cannot read HTTPS, so no exit can send a page's embedded \
objects along with the page: the timing defence works for plain HTTP only. A collaborating jondo on \
your path can time the TLS handshake and the requests inside your tunnel against its own round trip \
to its predecessor, and so tell whether its predecessor started them. The crowd does not promise \
probable innocence for HTTPS against a collaborator on your path. It still hides you from the web \
server, and the collaborator never sees what the tunnel carries.";

/// What the predecessor attack achieves with `collaborators` of `members` collaborating,
/// or `None` when the analysis has nothing to say (no collaborators, a crowd of one, a
/// pf outside what it covers).
fn attack_scenario(members: u64, pf: f64, collaborators: u64) -> Option<serde_json::Value> {
    if collaborators == 0 {
        return None;
    }
    let model = CrowdModel::new(members, collaborators, pf).ok()?;
    Some(json!({
        "collaborators": collaborators,
        "probable_innocence": model.probable_innocence(),
        "initiator_observed_per_reformation": model.initiator_observed(),
        "reformations_to_stand_out": model.reformations_to_stand_out(STAND_OUT_PROBABILITY, STAND_OUT_SEARCH_LIMIT),
    }))
}

/// What the predecessor attack achieves in a crowd of `members` forwarding members at
/// `pf`, under two assumptions: [`ASSUMED_COLLABORATOR_PERCENT`] of them collaborate, and
/// the most collaborators against which the crowd keeps probable innocence (either may
/// be null).
fn predecessor_attack(members: u64, pf: f64) -> serde_json::Value {
    let share = anonymity::collaborators_at_percent(members, ASSUMED_COLLABORATOR_PERCENT);
    let limit = anonymity::max_collaborators(members, pf);
    json!({
        "stands_out_means": "the user is strictly the collaborators' most-observed predecessor with probability >= 1/2, if they can link the user's paths across re-formations",
        "assumed_share_percent": ASSUMED_COLLABORATOR_PERCENT,
        "at_assumed_share": attack_scenario(members, pf, share),
        "at_probable_innocence_limit": limit.and_then(|c| attack_scenario(members, pf, c)),
    })
}

/// The anonymity figures of a crowd with `forwarders` forwarding members at `pf`, as
/// status fields. They count forwarding members only: they alone are on paths, so they
/// alone hide each other (a client-only member is known to its first hop).
fn figures(forwarders: u64, pf: f64) -> serde_json::Map<String, serde_json::Value> {
    let figures = json!({
        "probable_innocence_against": anonymity::max_collaborators(forwarders, pf),
        "forwarding_members_needed": anonymity::min_members(1, pf),
        "expected_path_length": (pf > 0.0).then(|| anonymity::expected_path_length(pf)),
        "predecessor_attack": predecessor_attack(forwarders, pf),
    });
    match figures {
        serde_json::Value::Object(map) => map,
        _ => serde_json::Map::new(),
    }
}

/// The status as JSON.
pub fn status(node: &Node) -> serde_json::Value {
    let crowd = node.crowd();
    let now = now_ms();
    let (epoch, members, forwarders, pf) = crowd
        .as_ref()
        .map(|c| {
            (
                c.doc.epoch,
                c.doc.members.len() as u64,
                c.forwarders.len() as u64,
                c.doc.forward_probability,
            )
        })
        .unwrap_or((0, 0, 0, 0.0));
    let member_id = crowd.as_ref().and_then(|c| c.self_id);
    let client_only = node.client_only();
    let s = &node.stats;
    let errors: serde_json::Map<String, serde_json::Value> = ERROR_KINDS
        .iter()
        .zip(&s.errors)
        .map(|(k, n)| (k.as_str().to_string(), json!(n.load(Ordering::Relaxed))))
        .collect();
    let mut status = json!({
        "epoch": epoch,
        "members": members,
        "forwarding_members": forwarders,
        "pf": pf,
        "member_id": member_id,
        "admitted": member_id.is_some(),
        "admission_expected_at_ms": node.admission_expected_at().filter(|_| member_id.is_none()),
        "client_only": client_only,
        "refused_pf": node.refused_pf(),
        "insecure_allow_low_pf": node.allows_low_pf(),
        "document_expires_in_ms": crowd.as_ref().map(|c| c.doc.expires_at.saturating_sub(now)),
        "blender_reachable": node.blender_reachable(),
        "heartbeat_interval_ms": node.heartbeat_interval().as_millis() as u64,
        "poll_interval_ms": node.poll_interval().as_millis() as u64,
        "uptime_s": now.saturating_sub(node.started_at()) / 1000,
        "in_crowd_s": node.admitted_since().map(|t| now.saturating_sub(t) / 1000),
        "in_flight": node.in_flight(),
        "paths": node.path_count(),
        "paths_formed": node.paths_formed(),
        "own_path_reforms_24h": node.own_reforms_last_day(now),
        "epochs_24h": node.epochs_last_day(now),
        "links": node.open_links(),
        "requests": {
            "initiated": s.initiated.load(Ordering::Relaxed),
            "relayed": s.relayed.load(Ordering::Relaxed),
            "submitted": s.submitted.load(Ordering::Relaxed),
            "path_failures": s.path_failures.load(Ordering::Relaxed),
            "retries": s.retries.load(Ordering::Relaxed),
            "own_path_reforms": s.own_path_reforms.load(Ordering::Relaxed),
            "client_failures": s.client_failures.load(Ordering::Relaxed),
            "served_from_bundles": s.served_from_bundles.load(Ordering::Relaxed),
            "bundle_objects_undelivered": s.bundle_objects_undelivered.load(Ordering::Relaxed),
            "plain_http_in_tunnels": s.plain_http_in_tunnels.load(Ordering::Relaxed),
            "document_fetches": s.document_fetches.load(Ordering::Relaxed),
            "peer_refused_per_address": s.peer_refused_per_address.load(Ordering::Relaxed),
            "peer_handshakes_evicted": s.peer_handshakes_evicted.load(Ordering::Relaxed),
        },
        "errors": errors,
        "documents": {
            "full": s.documents_full.load(Ordering::Relaxed),
            "delta": s.documents_delta.load(Ordering::Relaxed),
        },
        "bytes": {
            "to_user": s.bytes_to_user.load(Ordering::Relaxed),
            "from_servers": s.bytes_from_servers.load(Ordering::Relaxed),
        },
        "handshakes": {
            "ok": s.handshakes_ok.load(Ordering::Relaxed),
            "refused": s.handshakes_refused.load(Ordering::Relaxed),
        },
        "caveats": [{
            "kind": "https_timing",
            "message": format!("{HTTPS_TIMING_LEAD} {HTTPS_TIMING}"),
        }],
    });
    if let Some(fields) = status.as_object_mut() {
        fields.extend(figures(forwarders, pf));
    }
    let warnings: Vec<serde_json::Value> = warnings(&status, now)
        .into_iter()
        .map(|(kind, message)| json!({ "kind": kind, "message": message }))
        .collect();
    status["warnings"] = warnings.into();
    status
}

/// `n` members, in words.
fn members_word(n: u64) -> &'static str {
    if n == 1 {
        "member"
    } else {
        "members"
    }
}

/// What the user must know now, from the status JSON: kind and plain text (no markup).
/// Every number in them is a count or a pf as it is: never a negative or infinite count.
fn warnings(s: &serde_json::Value, now: u64) -> Vec<(&'static str, String)> {
    let admitted = s["admitted"].as_bool().unwrap_or(false);
    let pf = s["pf"].as_f64().unwrap_or(0.0);
    let forwarders = s["forwarding_members"].as_u64().unwrap_or(0);
    let mut out = Vec::new();
    if let Some(refused) = s["refused_pf"].as_f64() {
        out.push((
            "low_pf_refused",
            format!(
                "This jondo refuses its crowd: the crowd document's pf is {refused}, at most 1/2, and at \
                 such a pf no crowd size gives probable innocence (collaborators on a path can tell, more \
                 likely than not, who started a request). Browsing through this jondo fails until the \
                 blender publishes a pf above 1/2. For experiments only, restart it with \
                 --insecure-allow-low-pf."
            ),
        ));
    } else if !admitted {
        let when = s["admission_expected_at_ms"]
            .as_u64()
            .map(|at| {
                format!(
                    " The blender admits new members only at scheduled epochs; the next is in about {}.",
                    human(at.saturating_sub(now) / 1000)
                )
            })
            .unwrap_or_default();
        out.push(("not_admitted", format!("This jondo is not (yet) a member of the crowd: it is waiting for the next epoch. Browsing through it fails until then.{when}")));
    }
    if admitted && !crowds_proto::pf_is_secure(pf) {
        out.push((
            "low_pf_insecure",
            format!(
                "This crowd's pf is {pf}, at most 1/2, and this jondo was started with \
                 --insecure-allow-low-pf: no crowd size gives probable innocence at this pf, so \
                 collaborators on your path can tell, more likely than not, that you started your \
                 requests. For experiments only."
            ),
        ));
    }
    if s["client_only"].as_bool().unwrap_or(false) {
        out.push((
            "client_only",
            format!(
                "This jondo is a client-only member: the blender cannot reach its peer port, so it never \
                 relays for others. The first jondo on your path therefore knows that every request it \
                 gets from you was started by you: a collaborating first hop learns that it is you, \
                 whatever the crowd's size, and the crowd's probable innocence (counted over its \
                 {forwarders} forwarding {}) does not cover you. Open the peer port (or set \
                 --advertise) and restart to become a forwarding member.",
                members_word(forwarders)
            ),
        ));
    }
    if !s["blender_reachable"].as_bool().unwrap_or(true) {
        out.push((
            "blender_unreachable",
            format!(
                "The blender is not reachable. The jondo keeps serving with the last crowd document (valid for another {}) and keeps retrying.",
                human(s["document_expires_in_ms"].as_u64().unwrap_or(0) / 1000)
            ),
        ));
    }
    let tolerated = s["probable_innocence_against"].as_u64().unwrap_or(0);
    if admitted && crowds_proto::pf_is_secure(pf) && tolerated == 0 {
        let needed = s["forwarding_members_needed"]
            .as_u64()
            .map_or("far more".to_string(), |n| format!("at least {n}"));
        out.push((
            "too_small",
            format!(
                "With {forwarders} forwarding {} the crowd is too small for probable innocence even \
                 against a single collaborator (pf {pf}). It needs {needed} forwarding members.",
                members_word(forwarders)
            ),
        ));
    }
    out
}

/// The Prometheus metrics page.
pub fn metrics(node: &Node) -> String {
    let st = status(node);
    let s = &node.stats;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let mut m = Metrics::new();
    m.counter(
        "crowds_requests_initiated_total",
        "Requests this jondo's user started.",
        load(&s.initiated),
    );
    m.counter(
        "crowds_requests_relayed_total",
        "Requests relayed for other members.",
        load(&s.relayed),
    );
    m.counter(
        "crowds_requests_submitted_total",
        "Requests submitted to servers as the exit.",
        load(&s.submitted),
    );
    m.counter(
        "crowds_path_failures_total",
        "Paths that broke at this jondo's successor.",
        load(&s.path_failures),
    );
    m.counter(
        "crowds_retries_total",
        "Requests retried after a broken path.",
        load(&s.retries),
    );
    m.counter(
        "crowds_own_path_reforms_total",
        "Re-formations of the user's own path, all causes: its first link failed, its first hop left the crowd, or an epoch with new members re-formed every path.",
        load(&s.own_path_reforms),
    );
    m.counter(
        "crowds_client_failures_total",
        "Requests that failed on the user's side (aborted uploads, malformed bodies); they never re-form a path.",
        load(&s.client_failures),
    );
    m.counters_by(
        "crowds_documents_adopted_total",
        "Crowd documents adopted, by how they were fetched.",
        "fetch",
        &[
            ("full", load(&s.documents_full)),
            ("delta", load(&s.documents_delta)),
        ],
    );
    m.counter(
        "crowds_paths_formed_total",
        "Hops decided by this jondo (new paths through it).",
        node.paths_formed(),
    );
    m.counter(
        "crowds_bytes_to_user_total",
        "Plain-HTTP response bytes delivered to the user.",
        load(&s.bytes_to_user),
    );
    m.counter(
        "crowds_bytes_from_servers_total",
        "Plain-HTTP response bytes received as the exit.",
        load(&s.bytes_from_servers),
    );
    m.counters_by(
        "crowds_handshakes_total",
        "Peer TLS handshakes by result.",
        "result",
        &[
            ("ok", load(&s.handshakes_ok)),
            ("refused", load(&s.handshakes_refused)),
        ],
    );
    let errors: Vec<(&str, u64)> = ERROR_KINDS
        .iter()
        .zip(&s.errors)
        .map(|(k, n)| (k.as_str(), load(n)))
        .collect();
    m.counters_by(
        "crowds_errors_total",
        "Crowd errors returned to the user, by kind.",
        "kind",
        &errors,
    );
    m.gauge(
        "crowds_epoch",
        "Epoch of the current crowd document.",
        st["epoch"].as_f64().unwrap_or(0.0),
    );
    m.gauge(
        "crowds_members",
        "Members in the current crowd document.",
        st["members"].as_f64().unwrap_or(0.0),
    );
    m.gauge(
        "crowds_forwarding_members",
        "Members that relay (not client-only); every anonymity figure counts these only.",
        st["forwarding_members"].as_f64().unwrap_or(0.0),
    );
    m.gauge(
        "crowds_client_only",
        "1 if this jondo is a client-only member: its first hop knows that its requests start with it.",
        f64::from(u8::from(st["client_only"].as_bool().unwrap_or(false))),
    );
    m.gauge(
        "crowds_forward_probability",
        "The crowd's pf.",
        st["pf"].as_f64().unwrap_or(0.0),
    );
    m.gauge(
        "crowds_document_refused_low_pf",
        "1 if this jondo refused the crowd's document for a pf of at most 1/2.",
        f64::from(u8::from(!st["refused_pf"].is_null())),
    );
    // Left out when no number of collaborators is tolerated, rather than a reassuring 0.
    if let Some(c) = st["probable_innocence_against"]
        .as_f64()
        .filter(|c| *c > 0.0)
    {
        m.gauge(
            "crowds_probable_innocence_against",
            "Most collaborators against which the crowd's forwarding members keep probable innocence (plain HTTP; not for a client-only member).",
            c,
        );
    }
    m.gauge(
        "crowds_admitted",
        "1 if this jondo is a member of the current crowd.",
        f64::from(u8::from(st["admitted"].as_bool().unwrap_or(false))),
    );
    m.gauge(
        "crowds_blender_reachable",
        "1 if the blender answered the last call.",
        f64::from(u8::from(node.blender_reachable())),
    );
    m.gauge(
        "crowds_own_path_reforms_24h",
        "Re-formations of the user's own path in the last 24 hours.",
        st["own_path_reforms_24h"].as_f64().unwrap_or(0.0),
    );
    m.gauge(
        "crowds_epochs_24h",
        "New crowd epochs adopted in the last 24 hours.",
        st["epochs_24h"].as_f64().unwrap_or(0.0),
    );
    // The predecessor attack at the assumed share only. A crowd the analysis has nothing
    // to say about leaves the gauges out rather than reporting a reassuring 0.
    let assumed = &st["predecessor_attack"]["at_assumed_share"];
    if let Some(p) = assumed["initiator_observed_per_reformation"].as_f64() {
        m.gauge(
            "crowds_attack_observed_per_reformation",
            &format!("P(one re-formation shows the user to the collaborators), if {ASSUMED_COLLABORATOR_PERCENT} % of forwarding members collaborate."),
            p,
        );
    }
    if let Some(r) = assumed["reformations_to_stand_out"].as_f64() {
        m.gauge(
            "crowds_attack_reformations_to_stand_out",
            &format!("Re-formations of the user's path after which the predecessor attack likely singles the user out, if {ASSUMED_COLLABORATOR_PERCENT} % of forwarding members collaborate."),
            r,
        );
    }
    m.gauge(
        "crowds_paths",
        "Paths through this jondo now.",
        node.path_count() as f64,
    );
    m.gauge(
        "crowds_links",
        "Open outgoing links.",
        node.open_links() as f64,
    );
    m.gauge(
        "crowds_in_flight",
        "Requests and tunnels in progress.",
        node.in_flight() as f64,
    );
    m.finish()
}

fn page(node: &Node) -> String {
    let s = status(node);
    let in_crowd = s["in_crowd_s"]
        .as_u64()
        .map(human)
        .unwrap_or_else(|| "not yet".into());
    // The messages are plain text of our own; nothing in them needs escaping.
    let warn_html: String = s["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| {
            format!(
                "<p class=\"warn\" id=\"warn-{}\">⚠ {}</p>",
                w["kind"].as_str().unwrap_or(""),
                w["message"].as_str().unwrap_or("")
            )
        })
        .collect();
    let crowd_html = crowd_html(&s);
    let reform_html = reformations_html(&s);
    let r = &s["requests"];
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"5\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>crowds jondo</title><style>{STYLE}</style></head><body>\
         <h1>Your jondo</h1>{warn_html}{crowd_html}\
         <h2>You in the crowd</h2><p>In the crowd for <b>{in_crowd}</b> (jondo running for {up}).</p>\
         <p><small>Staying helps everyone: each time members join, every path in the crowd is re-formed, and each re-formation \
         gives collaborators another chance to see who you are. A crowd of steady members re-forms rarely.</small></p>\
         <h2>Your path</h2>{reform_html}\
         <h2>Traffic</h2><table><tr><td>started by you</td><td>{init}</td></tr><tr><td>relayed for others</td><td>{rel}</td></tr>\
         <tr><td>submitted to servers (as exit)</td><td>{sub}</td></tr><tr><td>paths broken / retried</td><td>{broken} / {retries}</td></tr>\
         <tr><td>failed on your side (aborted uploads, bad bodies; never re-form your path)</td><td>{client}</td></tr></table>\
         <h2>Health</h2><table><tr><td>blender</td><td class=\"{bcls}\">{bstate}</td></tr><tr><td>open links</td><td>{links}</td></tr>\
         <tr><td>peer handshakes ok / refused</td><td>{hok} / {hbad}</td></tr><tr><td>in progress</td><td>{inflight}</td></tr></table>\
         <p><small>This page never shows where you browsed. Machine-readable: <a href=\"/status.json\">status.json</a>, \
         <a href=\"/metrics\">metrics</a>.</small></p>\
         <p id=\"browse\">To browse, run <code>crowds browser</code>: a browser set up for the crowd, without the leaks \
         (WebRTC, DNS prefetch, background requests) a browser merely pointed at this jondo has. \
         <small>Your own browser: the proxy auto-config <a href=\"/proxy.pac\">/proxy.pac</a>, with those leaks (see the README).</small></p>\
         </body></html>",
        up = human(s["uptime_s"].as_u64().unwrap_or(0)),
        init = r["initiated"],
        rel = r["relayed"],
        sub = r["submitted"],
        broken = r["path_failures"],
        retries = r["retries"],
        client = r["client_failures"],
        bcls = if node.blender_reachable() { "ok" } else { "bad" },
        bstate = if node.blender_reachable() { "reachable" } else { "unreachable" },
        links = s["links"],
        hok = s["handshakes"]["ok"],
        hbad = s["handshakes"]["refused"],
        inflight = s["in_flight"],
    )
}

/// The "Crowd" section: size, epoch, pf, and what they mean for anonymity, counting
/// forwarding members only; then what the crowd cannot promise for HTTPS.
fn crowd_html(s: &serde_json::Value) -> String {
    let members = s["members"].as_u64().unwrap_or(0);
    let forwarders = s["forwarding_members"].as_u64().unwrap_or(0);
    let pf = s["pf"].as_f64().unwrap_or(0.0);
    let admitted = s["admitted"].as_bool().unwrap_or(false);
    let client_only = s["client_only"].as_bool().unwrap_or(false);
    let safety = match s["probable_innocence_against"].as_u64() {
        _ if !admitted => String::new(),
        _ if !crowds_proto::pf_is_secure(pf) => format!(
            "At pf {pf} no crowd size gives <b>probable innocence</b>: collaborating members on your \
             path can tell, more likely than not, that you started a request."
        ),
        Some(c) if c > 0 && client_only => format!(
            "Counting its {forwarders} forwarding members, this crowd gives them <b>probable \
             innocence</b> against up to {c} collaborating {}. <b>Not you</b>: as a client-only \
             member you are known to your first hop (see above).",
            members_word(c)
        ),
        Some(c) if c > 0 => format!(
            "With {forwarders} forwarding members (only they relay, so only they hide each other) \
             you keep <b>probable innocence</b> against up to <b>{c}</b> collaborating {}: even if \
             they pool what they see, it is no more likely than not that you started any plain-HTTP \
             request they observe.",
            members_word(c)
        ),
        _ => "The crowd is too small to protect you against collaborating members.".to_string(),
    };
    format!(
        "<h2>Crowd</h2><p><span class=\"big\" id=\"members\">{members}</span> {} · \
         <b id=\"forwarding\">{forwarders}</b> forwarding · epoch <b id=\"epoch\">{epoch}</b> · pf {pf} · \
         paths average {len} jondos</p><p id=\"safety\">{safety}</p>\
         <p id=\"https\"><b>{HTTPS_TIMING_LEAD}</b> {HTTPS_TIMING}</p>",
        members_word(members),
        epoch = s["epoch"],
        len = s["expected_path_length"]
            .as_f64()
            .map(|l| format!("{l:.1}"))
            .unwrap_or("–".into()),
    )
}

/// `n` followed by the singular or plural noun.
fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The "Your path" section: re-formations and epochs in the last 24 hours, and what
/// re-formations mean for the predecessor attack in this crowd (counted over its
/// forwarding members), or for a client-only member, for its first hop, in plain words.
fn reformations_html(s: &serde_json::Value) -> String {
    let forwarders = s["forwarding_members"].as_u64().unwrap_or(0);
    let reforms = s["own_path_reforms_24h"].as_u64().unwrap_or(0);
    let epochs = s["epochs_24h"].as_u64().unwrap_or(0);
    let total = s["requests"]["own_path_reforms"].as_u64().unwrap_or(0);
    let mut html = format!(
        "<p>Your path re-formed <b id=\"reforms24h\">{reforms}</b> {} in the last 24 h, \
         and the crowd had <b id=\"epochs24h\">{epochs}</b> new {} ({} since this jondo started).</p>",
        if reforms == 1 { "time" } else { "times" },
        if epochs == 1 { "epoch" } else { "epochs" },
        count(total, "re-formation", "re-formations"),
    );
    let attack = &s["predecessor_attack"];
    let after = |scenario: &serde_json::Value| match scenario["reformations_to_stand_out"].as_u64()
    {
        Some(r) => {
            // At the pace of the last day, how long that many re-formations take (no
            // pace to extrapolate from a day without any).
            let pace = r
                .saturating_mul(86_400)
                .checked_div(reforms)
                .map(|secs| format!(" (at the last 24 hours' pace, in about {})", human(secs)))
                .unwrap_or_default();
            format!(
                "after about <b>{}</b> you would likely stand out{pace}",
                count(r, "re-formation", "re-formations")
            )
        }
        None => {
            format!("even {STAND_OUT_SEARCH_LIMIT} re-formations would likely not single you out")
        }
    };
    let share = &attack["at_assumed_share"];
    if s["client_only"].as_bool().unwrap_or(false) {
        // No statistics needed: a collaborating first hop knows, the first time.
        html += "<p id=\"first-hop\">You are a client-only member, so collaborators need no counting: \
                 whenever a collaborator is your first hop, it knows at once that you started the requests.";
        let c = anonymity::collaborators_at_percent(forwarders, ASSUMED_COLLABORATOR_PERCENT);
        if c > 0 {
            html += &format!(
                " With {ASSUMED_COLLABORATOR_PERCENT}&nbsp;% of this crowd's {forwarders} forwarding members \
                 collaborating ({}), each re-formation makes a collaborator your first hop with \
                 probability <b>{:.2}</b>.",
                count(c, "member", "members"),
                c as f64 / forwarders as f64
            );
        }
        html += "</p>";
    } else if let (Some(c), Some(p)) = (
        share["collaborators"].as_u64(),
        share["initiator_observed_per_reformation"].as_f64(),
    ) {
        html += &format!(
            "<p id=\"attack\">With {}&nbsp;% of this crowd's {forwarders} forwarding members collaborating ({}), \
             each re-formation shows you to them with probability <b>{p:.2}</b>; {}.",
            attack["assumed_share_percent"],
            count(c, "member", "members"),
            after(share)
        );
        let limit = &attack["at_probable_innocence_limit"];
        match (
            limit["collaborators"].as_u64(),
            limit["initiator_observed_per_reformation"].as_f64(),
        ) {
            (Some(max), Some(p)) if max != c => {
                html += &format!(
                    " With {max} collaborators, the most against which this crowd keeps probable innocence, \
                     the probability is {p:.2} and {}.",
                    after(limit)
                );
            }
            _ => {}
        }
        html += "</p>";
    }
    html += "<p><small>Each re-formation of your path gives collaborating members another look at who precedes \
             them, and you are the one member always there (the predecessor attack). To <i>stand out</i> is to be, more \
             likely than not, the predecessor they saw most often, if they can tell your paths from others' (by the sites \
             you visit, say). Your path re-forms only when a scheduled epoch admits new members, or when the first jondo \
             on it fails or leaves the crowd; errors on your side never re-form it. The figures come from the analysis \
             behind <code>crowds analyze</code>, which errs on the attacker's side.</small></p>";
    html
}

fn handle(node: &Node, req: &Request<Incoming>) -> Response<Body> {
    if let Some(refused) = refuse_foreign_host(req) {
        return refused;
    }
    #[cfg(feature = "measure")]
    if req.method() == Method::POST && req.uri().path() == "/measure/reform" {
        node.reform_own_path();
        return body::text(StatusCode::NO_CONTENT, "");
    }
    if req.method() != Method::GET {
        return body::text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match req.uri().path() {
        "/" => html_response(page(node)),
        "/status.json" => body::json(StatusCode::OK, &status(node)),
        "/metrics" => {
            let mut resp = Response::new(body::full(metrics(node)));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(metrics::CONTENT_TYPE),
            );
            resp
        }
        "/proxy.pac" => {
            // Everything, HTTP and HTTPS, through this jondo; never DIRECT, which would
            // silently bypass the crowd if the jondo is down.
            let pac = format!(
                "function FindProxyForURL(url, host) {{\n  return \"PROXY {}\";\n}}\n",
                node.proxy_addr
            );
            let mut resp = Response::new(body::full(pac));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-ns-proxy-autoconfig"),
            );
            resp
        }
        _ => body::text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attack_figures_come_from_the_analysis() {
        let attack = predecessor_attack(50, 0.75);
        let share = &attack["at_assumed_share"];
        assert_eq!(share["collaborators"], 5);
        let model = CrowdModel::new(50, 5, 0.75).expect("model");
        assert_eq!(
            share["initiator_observed_per_reformation"].as_f64(),
            Some(model.initiator_observed())
        );
        assert_eq!(
            share["reformations_to_stand_out"].as_u64(),
            model.reformations_to_stand_out(0.5, STAND_OUT_SEARCH_LIMIT)
        );
        assert_eq!(share["probable_innocence"], true);
        // pf = 3/4: n >= 3 (c + 1) holds up to c = 15 of 50.
        let limit = &attack["at_probable_innocence_limit"];
        assert_eq!(limit["collaborators"], 15);
        assert!(
            limit["reformations_to_stand_out"].as_u64()
                < share["reformations_to_stand_out"].as_u64()
        );
        // Nothing to say about a crowd of one, or before there is a crowd.
        for (n, pf) in [(1, 0.75), (0, 0.0)] {
            let attack = predecessor_attack(n, pf);
            assert!(attack["at_assumed_share"].is_null(), "{attack}");
            assert!(attack["at_probable_innocence_limit"].is_null(), "{attack}");
        }
        // A pf beyond what the analysis covers (--insecure-pf) says nothing either.
        assert!(predecessor_attack(50, 0.995)["at_assumed_share"].is_null());
    }

    #[test]
    fn reformations_in_plain_words() {
        let status = json!({
            "forwarding_members": 50,
            "own_path_reforms_24h": 2,
            "epochs_24h": 1,
            "requests": { "own_path_reforms": 3 },
            "predecessor_attack": predecessor_attack(50, 0.75),
        });
        let html = reformations_html(&status);
        for text in [
            "Your path re-formed <b id=\"reforms24h\">2</b> times in the last 24 h",
            "<b id=\"epochs24h\">1</b> new epoch (3 re-formations since this jondo started)",
            "With 10&nbsp;% of this crowd's 50 forwarding members collaborating (5 members), \
             each re-formation shows you to them with probability <b>0.10</b>; after about <b>17 re-formations</b> \
             you would likely stand out (at the last 24 hours' pace, in about 8 days 12 h).",
            "With 15 collaborators, the most against which this crowd keeps probable innocence",
        ] {
            assert!(html.contains(text), "{text:?} not in {html}");
        }
        // Without re-formations in the last day there is no pace to extrapolate.
        let quiet = json!({
            "forwarding_members": 2,
            "own_path_reforms_24h": 0,
            "epochs_24h": 0,
            "requests": { "own_path_reforms": 0 },
            "predecessor_attack": predecessor_attack(2, 0.75),
        });
        let html = reformations_html(&quiet);
        assert!(
            html.contains("re-formed <b id=\"reforms24h\">0</b> times"),
            "{html}"
        );
        assert!(
            html.contains("after about <b>1 re-formation</b> you would"),
            "{html}"
        );
        assert!(!html.contains("pace"), "{html}");
        assert!(!html.contains("the most against which"), "{html}");
    }

    /// The status fields the page's words are made of, as `status` builds them.
    fn sample(
        members: u64,
        forwarders: u64,
        pf: f64,
        admitted: bool,
        client_only: bool,
    ) -> serde_json::Value {
        let mut s = json!({
            "epoch": 3,
            "members": members,
            "forwarding_members": forwarders,
            "pf": pf,
            "admitted": admitted,
            "client_only": client_only,
            "refused_pf": null,
            "blender_reachable": true,
            "own_path_reforms_24h": 1,
            "epochs_24h": 1,
            "requests": { "own_path_reforms": 1 },
        });
        s.as_object_mut()
            .expect("an object")
            .extend(figures(forwarders, pf));
        s
    }

    /// No number in `text` follows a minus sign (a hyphen or an exponent's may), and no count is
    /// infinite or not a number.
    fn assert_no_impossible_count(text: &str) {
        let bytes = text.as_bytes();
        for i in 0..bytes.len().saturating_sub(1) {
            // After a letter it is a hyphen ("utf-8") or an exponent ("1e-5").
            let joined = i > 0 && bytes[i - 1].is_ascii_alphanumeric();
            assert!(
                !(bytes[i] == b'-' && bytes[i + 1].is_ascii_digit() && !joined),
                "a negative number at byte {i}: {text}"
            );
        }
        assert!(!text.contains('\u{2212}'), "a minus sign in {text}");
        for word in text.split(|c: char| !c.is_ascii_alphanumeric()) {
            assert!(
                !["inf", "NaN", "infinity"].contains(&word),
                "{word:?} in {text}"
            );
        }
    }

    #[test]
    fn no_status_text_prints_a_negative_or_infinite_count() {
        for pf in [0.0, 0.3, 0.4, 0.5, 0.51, 0.6, 0.75, 0.9, 0.99] {
            for forwarders in 0..8 {
                for client_only in [false, true] {
                    for admitted in [false, true] {
                        let s = sample(forwarders + 1, forwarders, pf, admitted, client_only);
                        let mut text = crowd_html(&s) + &reformations_html(&s);
                        for (_, w) in warnings(&s, 0) {
                            text += &w;
                        }
                        assert_no_impossible_count(&text);
                        let figures = serde_json::to_string(&s).expect("JSON");
                        assert_no_impossible_count(&figures);
                    }
                }
            }
        }
    }

    #[test]
    fn the_clamp_explains_instead_of_counting_below_zero() {
        // pf = 1/2 used to read "needs at least inf members", pf = 0.4 "at least -4".
        for pf in [0.4, 0.5] {
            let s = sample(5, 5, pf, true, false);
            assert!(s["probable_innocence_against"].is_null(), "{s}");
            assert!(s["forwarding_members_needed"].is_null(), "{s}");
            let warned = warnings(&s, 0);
            let (kind, text) = warned
                .iter()
                .find(|(k, _)| *k == "low_pf_insecure")
                .expect("a low-pf warning");
            assert_eq!(*kind, "low_pf_insecure");
            assert!(
                text.contains("no crowd size gives probable innocence"),
                "{text}"
            );
            assert!(!warned.iter().any(|(k, _)| *k == "too_small"), "{warned:?}");
            assert!(crowd_html(&s).contains("no crowd size gives"), "{s}");
        }
        // Two forwarding members at pf = 3/4 tolerate nobody: "too small", and how many
        // it needs (6 against one collaborator), never "up to -1" or "up to 0".
        let s = sample(3, 2, 0.75, true, false);
        let warned = warnings(&s, 0);
        let (_, text) = warned
            .iter()
            .find(|(k, _)| *k == "too_small")
            .expect("too small");
        assert!(text.contains("With 2 forwarding members"), "{text}");
        assert!(
            text.contains("It needs at least 6 forwarding members"),
            "{text}"
        );
        assert!(!crowd_html(&s).contains("up to"), "{}", crowd_html(&s));
    }

    #[test]
    fn figures_count_forwarding_members_only() {
        // Six members, three of them client-only: the figures are those of three.
        let s = sample(6, 3, 0.75, true, false);
        assert_eq!(s["probable_innocence_against"], 0, "{s}");
        assert_eq!(s["predecessor_attack"], predecessor_attack(3, 0.75), "{s}");
        assert_ne!(predecessor_attack(3, 0.75), predecessor_attack(6, 0.75));
        let big = sample(60, 30, 0.75, true, false);
        assert_eq!(big["probable_innocence_against"], 9, "{big}");
        let html = crowd_html(&big);
        assert!(html.contains("With 30 forwarding members"), "{html}");
        assert!(html.contains("up to <b>9</b>"), "{html}");
        assert!(
            reformations_html(&big).contains("of this crowd's 30 forwarding members"),
            "{}",
            reformations_html(&big)
        );
    }

    #[test]
    fn a_client_only_member_is_told_its_first_hop_knows() {
        let s = sample(31, 30, 0.75, true, true);
        let warned = warnings(&s, 0);
        let (_, text) = warned
            .iter()
            .find(|(k, _)| *k == "client_only")
            .expect("client-only warning");
        assert!(
            text.contains("first jondo on your path therefore knows"),
            "{text}"
        );
        assert!(text.contains("30 forwarding members"), "{text}");
        let html = crowd_html(&s);
        assert!(html.contains("<b>Not you</b>"), "{html}");
        assert!(!html.contains("you keep"), "{html}");
        let path = reformations_html(&s);
        assert!(path.contains("id=\"first-hop\""), "{path}");
        // 10 % of 30 is 3: a collaborator is the first hop with probability 3/30.
        assert!(path.contains("probability <b>0.10</b>"), "{path}");
        assert!(!path.contains("id=\"attack\""), "{path}");
        // A forwarding member gets no such warning.
        let forwarding = sample(31, 30, 0.75, true, false);
        assert!(!warnings(&forwarding, 0)
            .iter()
            .any(|(k, _)| *k == "client_only"));
    }

    #[test]
    fn https_is_never_promised_probable_innocence() {
        let html = crowd_html(&sample(60, 60, 0.75, true, false));
        assert!(html.contains("id=\"https\""), "{html}");
        assert!(html.contains(HTTPS_TIMING_LEAD), "{html}");
        assert!(
            html.contains("does not promise probable innocence for HTTPS"),
            "{html}"
        );
        // The promise that is made names plain HTTP.
        assert!(html.contains("any plain-HTTP request"), "{html}");
    }

    #[test]
    fn a_refused_crowd_is_explained_not_called_a_wait() {
        let mut s = sample(0, 0, 0.0, false, false);
        s["refused_pf"] = json!(0.5);
        let warned = warnings(&s, 0);
        let kinds: Vec<&str> = warned.iter().map(|(k, _)| *k).collect();
        assert_eq!(kinds, ["low_pf_refused"], "{warned:?}");
        assert!(
            warned[0].1.contains("--insecure-allow-low-pf"),
            "{warned:?}"
        );
        assert!(warned[0].1.contains("pf is 0.5"), "{warned:?}");
    }
}
