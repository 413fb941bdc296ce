//! The relay engine: the state a running jondo shares between its front ends and its
//! peer server, and the routing of each request through the path table (forward on a
//! link, to itself, or submit at the exit), with retries and path repair.
//!
//! This file owns [`Node`], its counters and its accessors; the jobs live in
//! submodules: `new` builds a `Node` from its [`NodeSettings`], `adopt` takes crowd
//! documents in (the low-pf refusal, epoch changes), `failed` pauses members whose link
//! failed, and `route` places requests (initiation, relaying, retries). None of them
//! binds sockets or talks to the blender: the daemon wiring in [`crate::jondo`] does, and
//! hands documents, hints and the time in. They never log destinations or contents.

mod adopt;
mod connect;
mod failed;
mod new;
mod route;

pub(crate) use adopt::AdoptError;
pub use new::NodeSettings;
pub use route::{InFlight, MAX_RETRIES};

use crate::crowd::Crowd;
use crate::exit::ExitConfig;
use crate::tunnel;
use crowds_net::link::Links;
use crowds_net::net;
use crowds_proto::document::CrowdDocument;
use crowds_proto::headers::Hygiene;
use crowds_proto::identity::PublicKey;
use crowds_proto::path::PathTable;
#[cfg(feature = "measure")]
use crowds_proto::path::{PathId, Predecessor};
use crowds_proto::recent::RecentEvents;
use crowds_proto::relay::ErrorKind;
use crowds_proto::view::CrowdView;
use futures_util::future::BoxFuture;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::Notify;

/// How long a request waits for a fresher crowd document around a new epoch.
pub const EPOCH_SKEW_WAIT: Duration = Duration::from_secs(3);

/// How long a member whose link failed is not chosen again as a successor by this
/// jondo (unless a new epoch comes first): the retry of a broken request must not pick
/// the member that just failed, and a dead member still listed (within the blender's
/// grace period) must not break paths again and again.
pub const FAILED_MEMBER_PAUSE: Duration = Duration::from_secs(600);

/// The current crowd, shared with the TLS key policy (which runs outside the node).
pub(crate) type CrowdCell = Arc<RwLock<Option<Arc<Crowd>>>>;

/// Serves plain HTTP found in a tunnel to the given authority (see [`Node::initiate`]).
pub type PlainHttpServer =
    fn(Arc<Node>, tunnel::Rewound<Box<dyn tunnel::Io>>, String) -> BoxFuture<'static, ()>;

/// Traffic counters (never destinations).
#[derive(Default)]
pub struct Stats {
    /// Requests this jondo's user started.
    pub initiated: AtomicU64,
    /// Tunnels (CONNECT, SOCKS) this jondo's user opened; each is also one of
    /// `initiated`. A client may open a tunnel again after it failed, so these tell
    /// tunnels apart from the page requests a browser sent.
    pub tunnels_initiated: AtomicU64,
    /// Requests relayed for other members.
    pub relayed: AtomicU64,
    /// Requests submitted to servers as the exit.
    pub submitted: AtomicU64,
    /// Paths that broke under this jondo.
    pub path_failures: AtomicU64,
    /// Requests retried after a broken path.
    pub retries: AtomicU64,
    /// Times this jondo's user's own path was formed again after it had been formed
    /// (its first link failed, its first hop left the crowd, or new members joined).
    /// Each one gives collaborators another look at the initiator (predecessor attack).
    pub own_path_reforms: AtomicU64,
    /// Requests that failed on the user's side of the initiator (an upload aborted, a
    /// malformed body): errors for the client, never a reason to re-form a path.
    pub client_failures: AtomicU64,
    /// Browser requests answered from page bundles, never sent into the crowd.
    pub served_from_bundles: AtomicU64,
    /// Announced objects that did not arrive: answered with an error by this jondo,
    /// never requested through the crowd (the timing defence fails closed).
    pub bundle_objects_undelivered: AtomicU64,
    /// Tunnels (SOCKS, CONNECT) whose client spoke plain HTTP: served as proxied
    /// requests, with hygiene and the timing defence, instead of passed through raw.
    pub plain_http_in_tunnels: AtomicU64,
    /// Crowd errors returned to this jondo's user, by kind (index: [`ERROR_KINDS`]).
    pub errors: [AtomicU64; ERROR_KINDS.len()],
    /// Peer TLS handshakes completed.
    pub handshakes_ok: AtomicU64,
    /// Peer TLS handshakes refused or failed (non-members, garbage).
    pub handshakes_refused: AtomicU64,
    /// Peer connections closed at once: their address had all its connections.
    pub peer_refused_per_address: AtomicU64,
    /// Peer connections cut off in their handshake to make room for a newer one.
    pub peer_handshakes_evicted: AtomicU64,
    /// Crowd document fetches, on schedule or early (an unknown key, a new epoch).
    pub document_fetches: AtomicU64,
    /// Response body bytes delivered to this jondo's user (plain HTTP).
    pub bytes_to_user: AtomicU64,
    /// Response body bytes received from servers as the exit (plain HTTP).
    pub bytes_from_servers: AtomicU64,
    /// Crowd documents adopted from a whole download.
    pub documents_full: AtomicU64,
    /// Crowd documents adopted from a delta to the previous one.
    pub documents_delta: AtomicU64,
}

/// The crowd error kinds, in the order of [`Stats::errors`].
pub const ERROR_KINDS: [ErrorKind; 7] = ErrorKind::ALL;

/// The shared state of a running jondo.
pub struct Node {
    me: PublicKey,
    crowd: CrowdCell,
    view: Mutex<CrowdView>,
    paths: Mutex<PathTable>,
    links: Links,
    exit: ExitConfig,
    /// Counters shown on the status port.
    pub stats: Stats,
    /// Current heartbeat and poll intervals (ms), and whether blender hints may change them.
    heartbeat_ms: AtomicU64,
    poll_ms: AtomicU64,
    follow_hints: bool,
    blender_ok: AtomicBool,
    started_at: u64,
    /// Wakes the document poller early (a new epoch, an unknown key).
    refresh: Notify,
    /// Bumped each time a document is adopted.
    adopted: tokio::sync::watch::Sender<u64>,
    in_flight: Arc<AtomicUsize>,
    /// When this jondo was (continuously) admitted to the crowd, unix ms; 0 if not.
    admitted_since: AtomicU64,
    /// When the blender expects to admit this jondo (its next scheduled epoch), unix ms;
    /// 0 if it did not say.
    admission_expected_at: AtomicU64,
    /// The local HTTP proxy's address (for the PAC file).
    pub proxy_addr: SocketAddr,
    /// Header rules applied to this user's requests.
    pub hygiene: Hygiene,
    /// Ask exits for page bundles (the timing defence).
    pub prefetch: bool,
    /// Remove scripts and plug-ins from plain-HTTP pages.
    pub strip_active_content: bool,
    /// Answer the user's tunnels at once ([`crate::JondoConfig::optimistic_tunnels`]).
    pub optimistic_tunnels: bool,
    /// Objects received in page bundles, waiting for the browser's requests.
    pub objects: Arc<crate::prefetch::ObjectCache>,
    /// When the user's own path re-formed, and when new epochs were adopted (last day).
    recent: Mutex<Recent>,
    /// Whether the user's own path has been formed at least once.
    own_path_formed: AtomicBool,
    /// Members whose link failed at this jondo, paused as successors (see
    /// [`FAILED_MEMBER_PAUSE`]).
    failed: Mutex<failed::FailedMembers>,
    /// Early document fetches asked for by handshakes with unknown keys: at most one per
    /// poll interval, so strangers cannot make this jondo hammer the blender.
    unknown_key_refresh: net::OncePer,
    /// Whether crowd documents with pf <= 1/2 are adopted
    /// ([`crate::JondoConfig::insecure_allow_low_pf`]).
    allow_low_pf: bool,
    /// The pf of the last crowd document refused for being at most 1/2; `None` once a
    /// document is adopted.
    refused_pf: Mutex<Option<f64>>,
    /// The low pf last logged about (its bits), so the log says it once per pf rather
    /// than at every poll.
    low_pf_logged: Mutex<Option<u64>>,
}

/// Event records behind the status page's "last 24 hours" figures.
struct Recent {
    own_reforms: RecentEvents,
    epochs: RecentEvents,
}

/// Locks a mutex, carrying on with its data if a panicking holder poisoned it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Node {
    /// The crowd now, if a document is held.
    pub fn crowd(&self) -> Option<Arc<Crowd>> {
        self.crowd.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The cell holding the crowd, for the TLS key policy (which must not keep the node
    /// alive).
    pub(crate) fn crowd_cell(&self) -> CrowdCell {
        self.crowd.clone()
    }

    /// The interval between two heartbeats now.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms.load(Ordering::Relaxed))
    }

    /// The interval between two document polls now.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_ms.load(Ordering::Relaxed))
    }

    /// Adopts the blender's suggested intervals from a reply, if this jondo follows them.
    pub(crate) fn take_hints(&self, headers: &http::HeaderMap) {
        if !self.follow_hints {
            return;
        }
        use crowds_proto::api::{parse_hint, HEARTBEAT_HINT_HEADER, POLL_HINT_HEADER};
        for (name, slot) in [
            (HEARTBEAT_HINT_HEADER, &self.heartbeat_ms),
            (POLL_HINT_HEADER, &self.poll_ms),
        ] {
            if let Some(ms) = headers.get(name).and_then(|v| parse_hint(v.as_bytes())) {
                slot.store(ms, Ordering::Relaxed);
            }
        }
    }

    /// Whether the blender answered the last call.
    pub fn blender_reachable(&self) -> bool {
        self.blender_ok.load(Ordering::Relaxed)
    }

    /// Notes whether the blender answered the last call.
    pub(crate) fn set_blender_reachable(&self, reachable: bool) {
        self.blender_ok.store(reachable, Ordering::Relaxed);
    }

    /// The document held now (the base for a delta) and the blender's key.
    pub(crate) fn document(&self) -> (Option<CrowdDocument>, PublicKey) {
        let view = lock(&self.view);
        (view.current().cloned(), view.blender_key())
    }

    /// Names the crowd this jondo joined (from the blender's join answer), so documents
    /// of another crowd are refused.
    pub(crate) fn set_crowd_name(&self, crowd: &str) {
        lock(&self.view).set_crowd(crowd);
    }

    /// Asks the document poller to fetch at once.
    pub(crate) fn want_document(&self) {
        self.refresh.notify_one();
    }

    /// Resolves when someone asked for an early document fetch.
    pub(crate) async fn document_wanted(&self) {
        self.refresh.notified().await;
    }

    /// A handshake offered a key the crowd does not list: perhaps it joined in an epoch
    /// not fetched yet. Anyone can make such a handshake, so this asks for an early
    /// fetch at most once per poll interval (`now_ms` is the wall clock, unix ms).
    pub(crate) fn unknown_key_seen(&self, now_ms: u64) {
        if self.unknown_key_refresh.allow(now_ms, self.poll_interval()) {
            self.want_document();
        }
    }

    /// Follows adopted documents: changes each time one is adopted.
    pub(crate) fn adoptions(&self) -> tokio::sync::watch::Receiver<u64> {
        self.adopted.subscribe()
    }

    /// Number of paths through this jondo.
    pub fn path_count(&self) -> usize {
        lock(&self.paths).len()
    }

    /// Number of paths this jondo has formed (decided a hop for) since it started.
    pub fn paths_formed(&self) -> u64 {
        lock(&self.paths).formed()
    }

    /// When this jondo started (unix ms).
    pub fn started_at(&self) -> u64 {
        self.started_at
    }

    /// Since when this jondo has been a member of the crowd (unix ms), if it is one.
    pub fn admitted_since(&self) -> Option<u64> {
        Some(self.admitted_since.load(Ordering::Relaxed)).filter(|t| *t > 0)
    }

    /// When the blender said this jondo's pending join will be admitted (unix ms).
    pub fn admission_expected_at(&self) -> Option<u64> {
        Some(self.admission_expected_at.load(Ordering::Relaxed)).filter(|t| *t > 0)
    }

    /// The pf of the crowd document this jondo last refused for being at most 1/2, while
    /// no later document was adopted.
    pub fn refused_pf(&self) -> Option<f64> {
        *lock(&self.refused_pf)
    }

    /// Whether this jondo adopts crowd documents with pf <= 1/2 (started with
    /// `--insecure-allow-low-pf`).
    pub fn allows_low_pf(&self) -> bool {
        self.allow_low_pf
    }

    /// Whether the crowd lists this jondo as client-only (unreachable behind a firewall).
    pub fn client_only(&self) -> bool {
        self.crowd()
            .and_then(|c| {
                c.self_id
                    .and_then(|id| c.doc.member(id).map(|m| !m.forwards()))
            })
            .unwrap_or(false)
    }

    /// Number of open outgoing links.
    pub fn open_links(&self) -> usize {
        self.links.open_links()
    }

    /// Re-formations of the user's own path in the 24 hours before `now_ms` (unix ms).
    pub fn own_reforms_last_day(&self, now_ms: u64) -> u64 {
        lock(&self.recent).own_reforms.count(now_ms)
    }

    /// New crowd epochs adopted in the 24 hours before `now_ms` (unix ms).
    pub fn epochs_last_day(&self, now_ms: u64) -> u64 {
        lock(&self.recent).epochs.count(now_ms)
    }

    /// Number of requests and tunnels in progress through this jondo.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Waits (at most `limit`) until no request or tunnel is in progress.
    pub async fn drain(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.in_flight() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Measurement builds only: forget this jondo's own path, so the next request forms
    /// a new one (a re-formation without a new epoch).
    #[cfg(feature = "measure")]
    pub fn reform_own_path(&self) {
        lock(&self.paths).forget(Predecessor::Local, PathId::LOCAL);
    }
}

#[cfg(test)]
pub(crate) mod testing;
