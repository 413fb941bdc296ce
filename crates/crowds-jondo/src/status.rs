//! What a jondo tells its user about itself, as one typed value: [`JondoStatus`].
//!
//! Owns the status model and its rules: epoch, crowd size, pf, admission, what the crowd
//! size means for anonymity (counting forwarding members only: a client-only member
//! hides nobody, and is itself known to its first hop), what the crowd cannot promise
//! (HTTPS against a timing collaborator), time in the crowd, how often the user's own
//! path re-formed and how many epochs passed in the last 24 hours next to what that
//! means for the predecessor attack in this crowd (figures from
//! [`crowds_proto::analysis`], computed per request in microseconds), traffic counters,
//! link and blender health, and warnings. `/status.json` is this value serialized;
//! [`page`] renders the HTML page and [`prometheus`] the `/metrics` text from it. It
//! must not serve HTTP (that is [`crate::control`]) nor read the clock: the caller
//! passes `now_ms`. Counters carry no destinations.

pub mod page;
pub mod prometheus;

use crate::node::{Node, ERROR_KINDS};
use crowds_net::page::human;
use crowds_proto::analysis::CrowdModel;
use crowds_proto::anonymity;
use crowds_proto::MemberId;
use serde::ser::{Serialize, SerializeMap, Serializer};
use std::sync::atomic::{AtomicU64, Ordering};

/// The share of members assumed to collaborate in the status page's predecessor-attack
/// figures, in percent (the crowd's own probable-innocence limit is shown beside it).
pub const ASSUMED_COLLABORATOR_PERCENT: u64 = 10;

/// "Likely to stand out": the collaborators' most-observed predecessor is the user with
/// at least this probability.
const STAND_OUT_PROBABILITY: f64 = 0.5;

/// The search for the re-formations that make the user stand out stops here (a crowd at
/// 10 % collaborators gets there within a few dozen; this only bounds the work).
pub(crate) const STAND_OUT_SEARCH_LIMIT: u64 = 1_000_000;

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

/// What `stands_out` means in the predecessor-attack figures.
const STANDS_OUT_MEANS: &str = "the user is strictly the collaborators' most-observed predecessor \
with probability >= 1/2, if they can link the user's paths across re-formations";

/// The status of a jondo at one moment: `/status.json`, the status page and `/metrics`
/// all come from one of these, built per request by [`JondoStatus::of`].
///
/// Field names are the JSON's (scripts and tests read them); the JSON lists keys in
/// alphabetical order, as `serde_json` sorts them when serializing to a value.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct JondoStatus {
    /// Epoch of the crowd document held (0: none).
    pub epoch: u64,
    /// Members listed in it.
    pub members: u64,
    /// Of those, members that relay (not client-only): every anonymity figure counts these.
    pub forwarding_members: u64,
    /// The crowd's pf (0 without a document).
    pub pf: f64,
    /// This jondo's member id, if the crowd lists it.
    pub member_id: Option<MemberId>,
    /// Whether the crowd lists this jondo.
    pub admitted: bool,
    /// While not admitted: when the blender expects to admit it (unix ms), if it said.
    pub admission_expected_at_ms: Option<u64>,
    /// Whether the crowd lists this jondo as client-only.
    pub client_only: bool,
    /// The pf of a document refused for being at most 1/2, while no later one was adopted.
    pub refused_pf: Option<f64>,
    /// Whether this jondo adopts documents with pf <= 1/2 (`--insecure-allow-low-pf`).
    pub insecure_allow_low_pf: bool,
    /// How long the document held stays valid.
    pub document_expires_in_ms: Option<u64>,
    /// Whether the blender answered the last call.
    pub blender_reachable: bool,
    /// The heartbeat interval now.
    pub heartbeat_interval_ms: u64,
    /// The document poll interval now.
    pub poll_interval_ms: u64,
    /// Seconds since this jondo started.
    pub uptime_s: u64,
    /// Seconds since this jondo was (continuously) admitted, if it is.
    pub in_crowd_s: Option<u64>,
    /// Requests and tunnels in progress.
    pub in_flight: usize,
    /// Paths through this jondo now.
    pub paths: usize,
    /// Hops this jondo decided since it started.
    pub paths_formed: u64,
    /// Re-formations of the user's own path in the last 24 hours.
    pub own_path_reforms_24h: u64,
    /// New epochs adopted in the last 24 hours.
    pub epochs_24h: u64,
    /// Open outgoing links.
    pub links: usize,
    /// Request counters.
    pub requests: Requests,
    /// Crowd errors returned to the user, by kind.
    pub errors: ErrorCounts,
    /// Documents adopted, by how they were fetched.
    pub documents: Documents,
    /// Plain-HTTP body bytes.
    pub bytes: Bytes,
    /// Peer TLS handshakes.
    pub handshakes: Handshakes,
    /// What the crowd cannot promise, always.
    pub caveats: Vec<Notice>,
    /// The anonymity figures of the crowd (fields at the top level of the JSON).
    #[serde(flatten)]
    pub figures: Figures,
    /// What the user must know now.
    pub warnings: Vec<Notice>,
}

/// Request counters (never destinations).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Requests {
    /// Requests this jondo's user started.
    pub initiated: u64,
    /// Tunnels (CONNECT, SOCKS) this jondo's user opened, also counted in `initiated`.
    pub tunnels_initiated: u64,
    /// Requests relayed for other members.
    pub relayed: u64,
    /// Requests submitted to servers as the exit.
    pub submitted: u64,
    /// Paths that broke under this jondo.
    pub path_failures: u64,
    /// Requests retried after a broken path.
    pub retries: u64,
    /// Re-formations of the user's own path since start.
    pub own_path_reforms: u64,
    /// Requests that failed on the user's side.
    pub client_failures: u64,
    /// Browser requests answered from page bundles.
    pub served_from_bundles: u64,
    /// Announced objects that did not arrive.
    pub bundle_objects_undelivered: u64,
    /// Tunnels whose client spoke plain HTTP.
    pub plain_http_in_tunnels: u64,
    /// Crowd document fetches.
    pub document_fetches: u64,
    /// Peer connections refused for their address's share.
    pub peer_refused_per_address: u64,
    /// Peer handshakes cut off for a newer one.
    pub peer_handshakes_evicted: u64,
}

/// Crowd errors returned to the user, by kind, in the order of [`ERROR_KINDS`]; a JSON
/// object from kind name to count.
#[derive(Debug, Clone, Default)]
pub struct ErrorCounts(pub Vec<(&'static str, u64)>);

impl Serialize for ErrorCounts {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (kind, n) in &self.0 {
            map.serialize_entry(kind, n)?;
        }
        map.end()
    }
}

/// Crowd documents adopted.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Documents {
    /// From a whole download.
    pub full: u64,
    /// From a delta to the previous one.
    pub delta: u64,
}

/// Plain-HTTP response body bytes.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Bytes {
    /// Delivered to this jondo's user.
    pub to_user: u64,
    /// Received from servers as the exit.
    pub from_servers: u64,
}

/// Peer TLS handshakes.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Handshakes {
    /// Completed.
    pub ok: u64,
    /// Refused or failed.
    pub refused: u64,
}

/// A caveat or warning: a kind for scripts, a message in plain text (no markup) for people.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Notice {
    /// What it is about (`https_timing`, `not_admitted`, `too_small`...).
    pub kind: &'static str,
    /// What it means for the user.
    pub message: String,
}

/// The anonymity figures of a crowd with some forwarding members at some pf. They count
/// forwarding members only: they alone are on paths, so they alone hide each other (a
/// client-only member is known to its first hop).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Figures {
    /// Most collaborators against which the crowd keeps probable innocence, if any number.
    pub probable_innocence_against: Option<u64>,
    /// Forwarding members needed for probable innocence against one collaborator.
    pub forwarding_members_needed: Option<u64>,
    /// Jondos on a path on average (none at pf 0).
    pub expected_path_length: Option<f64>,
    /// What the predecessor attack achieves in this crowd.
    pub predecessor_attack: PredecessorAttack,
}

/// What the predecessor attack achieves, under two assumptions: that
/// [`ASSUMED_COLLABORATOR_PERCENT`] of the forwarding members collaborate, and that the
/// most collaborators against which the crowd keeps probable innocence do.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct PredecessorAttack {
    /// What "stands out" means.
    pub stands_out_means: &'static str,
    /// The assumed share of collaborators, in percent.
    pub assumed_share_percent: u64,
    /// The attack at the assumed share, if the analysis has something to say.
    pub at_assumed_share: Option<AttackScenario>,
    /// The attack at the probable-innocence limit, if there is one.
    pub at_probable_innocence_limit: Option<AttackScenario>,
}

/// The predecessor attack with a given number of collaborators.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AttackScenario {
    /// How many members collaborate.
    pub collaborators: u64,
    /// Whether the crowd keeps probable innocence against them.
    pub probable_innocence: bool,
    /// P(one re-formation shows the user to them).
    pub initiator_observed_per_reformation: f64,
    /// Re-formations after which the user likely stands out (none within the search limit).
    pub reformations_to_stand_out: Option<u64>,
}

/// What the predecessor attack achieves with `collaborators` of `members` collaborating,
/// or `None` when the analysis has nothing to say (no collaborators, a crowd of one, a
/// pf outside what it covers).
fn attack_scenario(members: u64, pf: f64, collaborators: u64) -> Option<AttackScenario> {
    if collaborators == 0 {
        return None;
    }
    let model = CrowdModel::new(members, collaborators, pf).ok()?;
    Some(AttackScenario {
        collaborators,
        probable_innocence: model.probable_innocence(),
        initiator_observed_per_reformation: model.initiator_observed(),
        reformations_to_stand_out: model
            .reformations_to_stand_out(STAND_OUT_PROBABILITY, STAND_OUT_SEARCH_LIMIT),
    })
}

/// What the predecessor attack achieves in a crowd of `members` forwarding members at `pf`.
pub(crate) fn predecessor_attack(members: u64, pf: f64) -> PredecessorAttack {
    let share = anonymity::collaborators_at_percent(members, ASSUMED_COLLABORATOR_PERCENT);
    let limit = anonymity::max_collaborators(members, pf);
    PredecessorAttack {
        stands_out_means: STANDS_OUT_MEANS,
        assumed_share_percent: ASSUMED_COLLABORATOR_PERCENT,
        at_assumed_share: attack_scenario(members, pf, share),
        at_probable_innocence_limit: limit.and_then(|c| attack_scenario(members, pf, c)),
    }
}

/// The anonymity figures of a crowd with `forwarders` forwarding members at `pf`.
pub(crate) fn figures(forwarders: u64, pf: f64) -> Figures {
    Figures {
        probable_innocence_against: anonymity::max_collaborators(forwarders, pf),
        forwarding_members_needed: anonymity::min_members(1, pf),
        expected_path_length: (pf > 0.0).then(|| anonymity::expected_path_length(pf)),
        predecessor_attack: predecessor_attack(forwarders, pf),
    }
}

impl JondoStatus {
    /// The status of `node` at `now_ms` (unix ms).
    pub fn of(node: &Node, now_ms: u64) -> Self {
        let now = now_ms;
        let crowd = node.crowd();
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
        let s = &node.stats;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut status = Self {
            epoch,
            members,
            forwarding_members: forwarders,
            pf,
            member_id,
            admitted: member_id.is_some(),
            admission_expected_at_ms: node.admission_expected_at().filter(|_| member_id.is_none()),
            client_only: node.client_only(),
            refused_pf: node.refused_pf(),
            insecure_allow_low_pf: node.allows_low_pf(),
            document_expires_in_ms: crowd.as_ref().map(|c| c.doc.expires_at.saturating_sub(now)),
            blender_reachable: node.blender_reachable(),
            heartbeat_interval_ms: node.heartbeat_interval().as_millis() as u64,
            poll_interval_ms: node.poll_interval().as_millis() as u64,
            uptime_s: now.saturating_sub(node.started_at()) / 1000,
            in_crowd_s: node.admitted_since().map(|t| now.saturating_sub(t) / 1000),
            in_flight: node.in_flight(),
            paths: node.path_count(),
            paths_formed: node.paths_formed(),
            own_path_reforms_24h: node.own_reforms_last_day(now),
            epochs_24h: node.epochs_last_day(now),
            links: node.open_links(),
            requests: Requests {
                initiated: load(&s.initiated),
                tunnels_initiated: load(&s.tunnels_initiated),
                relayed: load(&s.relayed),
                submitted: load(&s.submitted),
                path_failures: load(&s.path_failures),
                retries: load(&s.retries),
                own_path_reforms: load(&s.own_path_reforms),
                client_failures: load(&s.client_failures),
                served_from_bundles: load(&s.served_from_bundles),
                bundle_objects_undelivered: load(&s.bundle_objects_undelivered),
                plain_http_in_tunnels: load(&s.plain_http_in_tunnels),
                document_fetches: load(&s.document_fetches),
                peer_refused_per_address: load(&s.peer_refused_per_address),
                peer_handshakes_evicted: load(&s.peer_handshakes_evicted),
            },
            errors: ErrorCounts(
                ERROR_KINDS
                    .iter()
                    .zip(&s.errors)
                    .map(|(k, n)| (k.as_str(), load(n)))
                    .collect(),
            ),
            documents: Documents {
                full: load(&s.documents_full),
                delta: load(&s.documents_delta),
            },
            bytes: Bytes {
                to_user: load(&s.bytes_to_user),
                from_servers: load(&s.bytes_from_servers),
            },
            handshakes: Handshakes {
                ok: load(&s.handshakes_ok),
                refused: load(&s.handshakes_refused),
            },
            caveats: vec![Notice {
                kind: "https_timing",
                message: format!("{HTTPS_TIMING_LEAD} {HTTPS_TIMING}"),
            }],
            figures: figures(forwarders, pf),
            warnings: Vec::new(),
        };
        status.warnings = warnings(&status, now);
        status
    }

    /// The status as JSON, as `/status.json` serves it.
    pub fn to_json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::to_value(self)
    }
}

/// `n` members, in words.
pub(crate) fn members_word(n: u64) -> &'static str {
    if n == 1 {
        "member"
    } else {
        "members"
    }
}

/// What the user must know now, from the status: kind and plain text (no markup). Every
/// number in them is a count or a pf as it is: never a negative or infinite count.
fn warnings(s: &JondoStatus, now: u64) -> Vec<Notice> {
    let pf = s.pf;
    let forwarders = s.forwarding_members;
    let mut out = Vec::new();
    let mut warn = |kind, message| out.push(Notice { kind, message });
    if let Some(refused) = s.refused_pf {
        warn(
            "low_pf_refused",
            format!(
                "This jondo refuses its crowd: the crowd document's pf is {refused}, at most 1/2, and at \
                 such a pf no crowd size gives probable innocence (collaborators on a path can tell, more \
                 likely than not, who started a request). Browsing through this jondo fails until the \
                 blender publishes a pf above 1/2. For experiments only, restart it with \
                 --insecure-allow-low-pf."
            ),
        );
    } else if !s.admitted {
        let when = s
            .admission_expected_at_ms
            .map(|at| {
                format!(
                    " The blender admits new members only at scheduled epochs; the next is in about {}.",
                    human(at.saturating_sub(now) / 1000)
                )
            })
            .unwrap_or_default();
        warn("not_admitted", format!("This jondo is not (yet) a member of the crowd: it is waiting for the next epoch. Browsing through it fails until then.{when}"));
    }
    if s.admitted && !crowds_proto::pf_is_secure(pf) {
        warn(
            "low_pf_insecure",
            format!(
                "This crowd's pf is {pf}, at most 1/2, and this jondo was started with \
                 --insecure-allow-low-pf: no crowd size gives probable innocence at this pf, so \
                 collaborators on your path can tell, more likely than not, that you started your \
                 requests. For experiments only."
            ),
        );
    }
    if s.client_only {
        warn(
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
        );
    }
    if !s.blender_reachable {
        warn(
            "blender_unreachable",
            format!(
                "The blender is not reachable. The jondo keeps serving with the last crowd document (valid for another {}) and keeps retrying.",
                human(s.document_expires_in_ms.unwrap_or(0) / 1000)
            ),
        );
    }
    let tolerated = s.figures.probable_innocence_against.unwrap_or(0);
    if s.admitted && crowds_proto::pf_is_secure(pf) && tolerated == 0 {
        let needed = s
            .figures
            .forwarding_members_needed
            .map_or("far more".to_string(), |n| format!("at least {n}"));
        warn(
            "too_small",
            format!(
                "With {forwarders} forwarding {} the crowd is too small for probable innocence even \
                 against a single collaborator (pf {pf}). It needs {needed} forwarding members.",
                members_word(forwarders)
            ),
        );
    }
    out
}

#[cfg(test)]
mod tests;
