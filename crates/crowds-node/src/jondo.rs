//! The jondo daemon: a crowd member's proxy, relay and exit in one process.
//!
//! Owns the wiring: it logs in at the blender, keeps the crowd document fresh (refusing
//! one with pf <= 1/2 unless started with `--insecure-allow-low-pf`, and acting on epoch
//! changes: new members re-form every path, departed members close links),
//! heartbeats, listens for peers (TLS admits only keys in the current document) and
//! runs each relayed request through the path table: forward on a link, to itself, or
//! submit at the exit. The rules themselves live in [`crowds_proto`]; this module is
//! the thin async shell around them. It never logs destinations or contents, nor other
//! members' ids above debug level (a log that names successors helps link paths).

use crate::blender_client::BlenderClient;
use crate::body::{self, Body};
use crate::control;
use crate::error::NodeError;
use crate::exit::{self, ExitConfig};
use crate::files;
use crate::link::{self, Links};
use crate::net::{self, now_ms};
use crate::proxy;
use crate::safelog::Secret;
use crate::socks;
use crate::tls;
use crate::tunnel;
use crowds_proto::document::CrowdDocument;
use crowds_proto::headers::Hygiene;
use crowds_proto::identity::PublicKey;
use crowds_proto::path::{Hop, PathId, PathTable, Predecessor, RouteError};
use crowds_proto::policy::PortPolicy;
use crowds_proto::recent::RecentEvents;
use crowds_proto::relay::{self, ErrorKind, PATH_HEADER};
use crowds_proto::view::{Change, CrowdView};
use crowds_proto::MemberId;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Most concurrent peer connections.
pub const MAX_PEER_CONNECTIONS: usize = 1024;
/// Default most connections to the peer port from one address
/// ([`JondoConfig::peer_connections_per_address`]). Members keep one link each way;
/// several members behind one NAT share an address, hence the room.
pub const PEER_CONNECTIONS_PER_ADDRESS: usize = 32;
/// Default most peer connections still in their TLS handshake
/// ([`JondoConfig::peer_handshakes`]).
pub const PEER_HANDSHAKES: usize = 128;
/// How often a bodiless request is retried after its path broke before any byte of
/// the answer reached the user.
pub const MAX_RETRIES: usize = 2;
/// How long a request waits for a fresher crowd document around a new epoch.
pub const EPOCH_SKEW_WAIT: Duration = Duration::from_secs(3);

/// Settings of a jondo.
#[derive(Debug, Clone)]
pub struct JondoConfig {
    /// Holds the identity key.
    pub data_dir: PathBuf,
    /// The blender's API address, `HOST:PORT`.
    pub blender: String,
    /// Replicas of the blender (same key, shared database) to fail over to.
    pub fallback_blenders: Vec<String>,
    /// The blender's public key (pinned).
    pub blender_key: PublicKey,
    /// Account name at the blender.
    pub account: String,
    /// The account's password.
    pub password: Secret,
    /// Where peers connect.
    pub peer_listen: SocketAddr,
    /// The address announced to the crowd (default: `peer_listen`'s bound address).
    pub advertise: Option<SocketAddr>,
    /// The local HTTP proxy.
    pub proxy_listen: SocketAddr,
    /// The local SOCKS5 proxy.
    pub socks_listen: Option<SocketAddr>,
    /// The status port.
    pub control_listen: SocketAddr,
    /// Allow non-public destinations at this jondo's exit.
    pub allow_private_destinations: bool,
    /// How often to heartbeat.
    pub heartbeat_interval: Duration,
    /// How often to check for a new crowd document.
    pub poll_interval: Duration,
    /// Follow the blender's suggested heartbeat and poll intervals (it scales them with
    /// its heartbeat timeout and the crowd's size) instead of the two above; the
    /// command line sets this when neither interval was given.
    pub follow_blender_intervals: bool,
    /// Tunnels and response bodies idle this long are closed.
    pub idle_timeout: Duration,
    /// Time a server has to start its response.
    pub server_timeout: Duration,
    /// Keep cookies on plain HTTP (every jondo on the path can read them).
    pub keep_cookies: bool,
    /// Do not ask exits for page bundles (turns the timing defence off for this user).
    pub no_prefetch: bool,
    /// Remove scripts and plug-ins from plain-HTTP pages.
    pub strip_active_content: bool,
    /// Destination ports this exit allows (`None`: the default list, or any port
    /// with `allow_private_destinations`).
    pub exit_ports: Option<PortPolicy>,
    /// Accept a crowd document whose pf is at most 1/2 (experiments only). Without it
    /// such a document is refused: at pf <= 1/2 no crowd size gives probable innocence.
    pub insecure_allow_low_pf: bool,
    /// Most connections to the peer port from one address.
    pub peer_connections_per_address: usize,
    /// Most peer connections in their TLS handshake at once; a new one cuts off the
    /// oldest (see [`net::Handshakes`]).
    pub peer_handshakes: usize,
}

impl JondoConfig {
    /// A configuration with the required settings and every other one at its default
    /// (local ports on 127.0.0.1 chosen by the system, SOCKS off).
    pub fn new(
        data_dir: PathBuf,
        blender: String,
        blender_key: PublicKey,
        account: String,
        password: Secret,
        peer_listen: SocketAddr,
    ) -> Self {
        let local = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            data_dir,
            blender,
            fallback_blenders: Vec::new(),
            blender_key,
            account,
            password,
            peer_listen,
            advertise: None,
            proxy_listen: local,
            socks_listen: None,
            control_listen: local,
            allow_private_destinations: false,
            heartbeat_interval: Duration::from_secs(5),
            poll_interval: Duration::from_secs(1),
            follow_blender_intervals: false,
            idle_timeout: Duration::from_secs(300),
            server_timeout: Duration::from_secs(60),
            keep_cookies: false,
            no_prefetch: false,
            strip_active_content: false,
            exit_ports: None,
            insecure_allow_low_pf: false,
            peer_connections_per_address: PEER_CONNECTIONS_PER_ADDRESS,
            peer_handshakes: PEER_HANDSHAKES,
        }
    }
}

/// The crowd as this jondo currently uses it.
pub struct Crowd {
    /// The verified document.
    pub doc: CrowdDocument,
    /// This jondo's member id, if it is listed.
    pub self_id: Option<MemberId>,
    /// Members that may be chosen as forwarders.
    pub forwarders: Vec<MemberId>,
    by_key: HashMap<PublicKey, MemberId>,
}

impl Crowd {
    fn new(doc: CrowdDocument, me: &PublicKey) -> Self {
        let by_key: HashMap<PublicKey, MemberId> =
            doc.members.iter().map(|m| (m.key, m.id)).collect();
        Self {
            self_id: by_key.get(me).copied(),
            forwarders: doc.forwarders(),
            by_key,
            doc,
        }
    }
}

type CrowdCell = Arc<RwLock<Option<Arc<Crowd>>>>;

/// Traffic counters (never destinations).
#[derive(Default)]
pub struct Stats {
    /// Requests this jondo's user started.
    pub initiated: AtomicU64,
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
    /// Objects received in page bundles, waiting for the browser's requests.
    pub objects: Arc<crate::prefetch::ObjectCache>,
    /// When the user's own path re-formed, and when new epochs were adopted (last day).
    recent: Mutex<Recent>,
    /// Whether the user's own path has been formed at least once.
    own_path_formed: AtomicBool,
    /// Members whose link failed at this jondo, with the time (unix ms) until which
    /// they are not chosen as successors (see [`FAILED_MEMBER_PAUSE`]).
    failed: Mutex<HashMap<MemberId, u64>>,
    /// Early document fetches asked for by handshakes with unknown keys: at most one per
    /// poll interval, so strangers cannot make this jondo hammer the blender.
    unknown_key_refresh: net::OncePer,
    /// Whether crowd documents with pf <= 1/2 are adopted
    /// ([`JondoConfig::insecure_allow_low_pf`]).
    allow_low_pf: bool,
    /// The pf of the last crowd document refused for being at most 1/2; `None` once a
    /// document is adopted.
    refused_pf: Mutex<Option<f64>>,
    /// The low pf last logged about (its bits), so the log says it once per pf rather
    /// than at every poll.
    low_pf_logged: Mutex<Option<u64>>,
}

/// Why a fetched crowd document was not adopted.
#[derive(Debug, thiserror::Error)]
enum AdoptError {
    /// The view's rules refused it (signature, expiry, epoch, crowd).
    #[error(transparent)]
    View(#[from] crowds_proto::view::ViewError),
    /// Its pf is at most 1/2 and this jondo was not started with
    /// `--insecure-allow-low-pf`.
    #[error("the crowd document's pf {0} is at most 1/2")]
    LowPf(f64),
}

/// Event records behind the status page's "last 24 hours" figures.
struct Recent {
    own_reforms: RecentEvents,
    epochs: RecentEvents,
}

/// How long a member whose link failed is not chosen again as a successor by this
/// jondo (unless a new epoch comes first): the retry of a broken request must not pick
/// the member that just failed, and a dead member still listed (within the blender's
/// grace period) must not break paths again and again.
pub const FAILED_MEMBER_PAUSE: Duration = Duration::from_secs(600);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Node {
    /// The crowd now, if a document is held.
    pub fn crowd(&self) -> Option<Arc<Crowd>> {
        self.crowd.read().unwrap_or_else(|p| p.into_inner()).clone()
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
    fn take_hints(&self, headers: &http::HeaderMap) {
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

    /// Notes a join answer: when a pending join is expected to be admitted.
    fn note_join(&self, joined: &crate::blender::JoinResponse) {
        let at = joined.admission_expected_at.unwrap_or(0);
        self.admission_expected_at.store(at, Ordering::Relaxed);
        if let Some(at) = joined.admission_expected_at {
            let wait = Duration::from_secs(at.saturating_sub(now_ms()) / 1000);
            tracing::info!(
                "waiting for the crowd's next scheduled epoch to be admitted, in about {}",
                humantime::format_duration(wait)
            );
        }
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

    /// Logs a document's pf <= 1/2 (refused, or adopted under the insecure flag), once
    /// per pf.
    fn log_low_pf(&self, pf: f64, adopted: bool) {
        let mut logged = lock(&self.low_pf_logged);
        if *logged == Some(pf.to_bits()) {
            return;
        }
        *logged = Some(pf.to_bits());
        if adopted {
            tracing::warn!(
                "--insecure-allow-low-pf: using a crowd whose pf {pf} is at most 1/2. No crowd \
                 size gives probable innocence at this pf: collaborators on a path can tell, \
                 more likely than not, who started a request. For experiments only."
            );
        } else {
            tracing::error!(
                "refusing the crowd document: its pf {pf} is at most 1/2, and at such a pf no \
                 crowd size gives probable innocence (collaborators on a path can tell, more \
                 likely than not, who started a request). Browsing through this jondo fails \
                 until the blender publishes a pf above 1/2. For experiments only, start the \
                 jondo with --insecure-allow-low-pf."
            );
        }
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

    /// Re-formations of the user's own path in the last 24 hours.
    pub fn own_reforms_last_day(&self) -> u64 {
        lock(&self.recent).own_reforms.count(now_ms())
    }

    /// New crowd epochs adopted in the last 24 hours.
    pub fn epochs_last_day(&self) -> u64 {
        lock(&self.recent).epochs.count(now_ms())
    }

    /// The members this jondo may choose as successors now: the document's forwarders
    /// without those whose link just failed here (borrowed as they are when none did).
    fn candidates<'a>(&self, crowd: &'a Crowd) -> std::borrow::Cow<'a, [MemberId]> {
        use std::borrow::Cow;
        let mut failed = lock(&self.failed);
        if failed.is_empty() {
            return Cow::Borrowed(&crowd.forwarders);
        }
        let now = now_ms();
        failed.retain(|_, until| *until > now);
        let usable: Vec<MemberId> = crowd
            .forwarders
            .iter()
            .copied()
            .filter(|m| !failed.contains_key(m))
            .collect();
        // Every member failed: better to try them again than to refuse the user.
        if usable.is_empty() {
            Cow::Borrowed(&crowd.forwarders)
        } else {
            Cow::Owned(usable)
        }
    }

    /// Verifies and adopts a fetched document; one with pf <= 1/2 only if this jondo
    /// allows it ([`JondoConfig::insecure_allow_low_pf`]).
    fn adopt(&self, bytes: &[u8]) -> Result<Change, AdoptError> {
        let mut view = lock(&self.view);
        // Accepted into a copy first, so a refused document leaves the view as it was.
        let mut next = view.clone();
        let change = next.accept(bytes, now_ms())?;
        let Some(doc) = next.current().cloned() else {
            *view = next;
            return Ok(change);
        };
        let pf = doc.forward_probability;
        if crowds_proto::pf_is_secure(pf) {
            *lock(&self.low_pf_logged) = None;
        } else {
            self.log_low_pf(pf, self.allow_low_pf);
            if !self.allow_low_pf {
                *lock(&self.refused_pf) = Some(pf);
                return Err(AdoptError::LowPf(pf));
            }
        }
        *view = next;
        drop(view);
        *lock(&self.refused_pf) = None;
        let crowd = Arc::new(Crowd::new(doc, &self.me));
        if crowd.self_id.is_none() {
            self.admitted_since.store(0, Ordering::Relaxed);
        } else if self.admitted_since.load(Ordering::Relaxed) == 0 {
            self.admitted_since.store(now_ms(), Ordering::Relaxed);
        }
        if let Change::NewEpoch { joined, left } = &change {
            lock(&self.recent).epochs.record(now_ms());
            // A new epoch is a fresh start for members that failed here before.
            lock(&self.failed).clear();
            let mut paths = lock(&self.paths);
            paths.set_crowd_size(crowd.doc.members.len());
            if change.reforms_paths() {
                // New members: every path in the crowd re-forms now, together.
                paths.forget_all();
            }
            for id in left {
                paths.forget_from(*id);
                self.links.forget(*id);
            }
            // Outgoing links follow the document: a member whose key changed is dialled
            // afresh with its new key (incoming links are closed by `serve_peer`).
            self.links.retain_keys(&crowd.by_key);
            tracing::info!(
                epoch = crowd.doc.epoch,
                members = crowd.doc.members.len(),
                joined = joined.len(),
                left = left.len(),
                admitted = crowd.self_id.is_some(),
                "new crowd epoch"
            );
        }
        *self.crowd.write().unwrap_or_else(|p| p.into_inner()) = Some(crowd);
        self.adopted.send_modify(|n| *n += 1);
        Ok(change)
    }

    /// Starts a request from this jondo's user into the crowd.
    ///
    /// If the path turns out to be broken before any response byte reached the user, a
    /// request without body (GET, HEAD, OPTIONS, TRACE, and CONNECT before its tunnel
    /// opens) is retried, at most [`MAX_RETRIES`] times.
    ///
    /// Paths are repaired where they broke: the jondo that could not reach its
    /// successor forgets only its own hop and decides it afresh on the retry. The
    /// initiator re-forms its whole path only when its own first link fails. A
    /// "path broken" answer from further along therefore never makes the initiator pick
    /// a new first hop, so a collaborator on the path cannot force re-formations (each
    /// would give collaborators another sample of the initiator's predecessor).
    pub async fn initiate(self: Arc<Self>, mut req: Request<Body>) -> Response<Body> {
        self.stats.initiated.fetch_add(1, Ordering::Relaxed);
        // The client's end of a tunnel stays here, so the request can be retried.
        let client_end = tunnel::take_end(&mut req);
        let authority = req.uri().authority().map(|a| a.to_string());
        let retry = retry_copy(&req);
        let mut resp = self.clone().relay(Predecessor::Local, req).await;
        // Each attempt repairs the hop that broke, so a second repair (around a new
        // epoch two hops may be stale at once) is worth one more try.
        for _ in 0..MAX_RETRIES {
            if relay::error_kind(resp.headers()) != Some(ErrorKind::PathBroken) {
                break;
            }
            let Some(again) = retry.as_ref().and_then(|r| retry_copy(r)) else {
                break;
            };
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            resp = self.clone().relay(Predecessor::Local, again).await;
        }
        if let Some(kind) = relay::error_kind(resp.headers()) {
            if let Some(i) = ERROR_KINDS.iter().position(|k| *k == kind) {
                self.stats.errors[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Some(client_end) = client_end {
            if resp.status().is_success() {
                let Some(crowd_end) = tunnel::take_end(&mut resp) else {
                    return body::crowd_error(ErrorKind::PathBroken);
                };
                let guard = InFlight::new(&self.in_flight);
                let node = self.clone();
                let authority = authority.unwrap_or_default();
                let on_http: tunnel::OnPlainHttp = Box::new(move |client| {
                    tokio::spawn(crate::proxy::serve_in_tunnel(node, client, authority));
                });
                tunnel::splice_sniffed(
                    client_end,
                    crowd_end,
                    self.exit.idle_timeout,
                    guard,
                    on_http,
                );
            }
        }
        resp
    }

    /// The crowd, if it lists this jondo (and `pred`) and has not expired. Around a new
    /// epoch, members fetch the document at slightly different moments: a request from
    /// a member that already has it may reach us first. Then we fetch at once and wait
    /// (at most [`EPOCH_SKEW_WAIT`]) instead of refusing.
    async fn usable_crowd(&self, pred: Predecessor) -> Option<Arc<Crowd>> {
        let usable = |c: &Arc<Crowd>| {
            c.self_id.is_some()
                && now_ms() < c.doc.expires_at
                && match pred {
                    Predecessor::Local => true,
                    Predecessor::Member(id) => c.doc.member(id).is_some(),
                }
        };
        if let Some(c) = self.crowd().filter(usable) {
            return Some(c);
        }
        let mut adopted = self.adopted.subscribe();
        self.refresh.notify_one();
        tokio::time::timeout(EPOCH_SKEW_WAIT, async {
            loop {
                if let Some(c) = self.crowd().filter(usable) {
                    return Some(c);
                }
                adopted.changed().await.ok()?;
            }
        })
        .await
        .ok()
        .flatten()
    }

    /// Notes that the user's own path was just (re-)formed.
    fn own_path_formed_now(&self) {
        if self.own_path_formed.swap(true, Ordering::Relaxed) {
            self.stats.own_path_reforms.fetch_add(1, Ordering::Relaxed);
            lock(&self.recent).own_reforms.record(now_ms());
        }
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

    /// Handles a request arriving on a path from `pred`.
    pub fn relay(
        self: Arc<Self>,
        pred: Predecessor,
        req: Request<Body>,
    ) -> BoxFuture<'static, Response<Body>> {
        async move {
            let guard = InFlight::new(&self.in_flight);
            let resp = self.route(pred, req, &guard).await;
            // The request stays in flight until its response body is done.
            let (parts, body) = resp.into_parts();
            let body = body
                .map_frame(move |f| {
                    let _ = &guard;
                    f
                })
                .boxed_unsync();
            Response::from_parts(parts, body)
        }
        .boxed()
    }

    async fn route(
        self: Arc<Self>,
        pred: Predecessor,
        mut req: Request<Body>,
        guard: &InFlight,
    ) -> Response<Body> {
        let Some(crowd) = self.usable_crowd(pred).await else {
            // A relayed request we cannot place even with a fresh document: answer
            // "path broken" so our predecessor re-decides its hop and the initiator
            // retries, rather than failing the user's request.
            return body::crowd_error(match pred {
                Predecessor::Local => ErrorKind::NotAdmitted,
                Predecessor::Member(_) => ErrorKind::PathBroken,
            });
        };
        let self_id = crowd.self_id.unwrap_or_default();
        let in_path = match pred {
            Predecessor::Local => PathId::LOCAL,
            Predecessor::Member(id) => {
                if id != self_id {
                    self.stats.relayed.fetch_add(1, Ordering::Relaxed);
                }
                match relay::path_id(req.headers()) {
                    Ok(p) => p,
                    Err(_) => return body::crowd_error(ErrorKind::BadRequest),
                }
            }
        };
        if relay::request_target(req.method(), req.uri()).is_err() {
            return body::crowd_error(ErrorKind::BadRequest);
        }
        #[cfg(feature = "bench")]
        let forced = bench::forced_hop(pred, &mut req, &crowd);
        #[cfg(not(feature = "bench"))]
        let forced: Option<Hop> = None;
        #[cfg(feature = "measure")]
        let formed_before = lock(&self.paths).formed();
        let candidates = self.candidates(&crowd);
        let hop = match forced {
            Some(hop) => Ok(hop),
            None => {
                let mut paths = lock(&self.paths);
                let before = paths.formed();
                let hop = paths.route(
                    &mut rand::thread_rng(),
                    pred,
                    in_path,
                    crowd.doc.forward_probability,
                    &candidates,
                );
                if pred == Predecessor::Local && paths.formed() > before {
                    drop(paths);
                    self.own_path_formed_now();
                }
                hop
            }
        };
        #[cfg(feature = "measure")]
        if lock(&self.paths).formed() > formed_before {
            measure::on_new_path(pred, &mut req);
        }
        match hop {
            Err(RouteError::TableFull | RouteError::PredecessorFull) => {
                body::crowd_error(ErrorKind::Overloaded)
            }
            Err(_) => body::crowd_error(ErrorKind::NotAdmitted),
            Ok(Hop::Submit) => {
                self.stats.submitted.fetch_add(1, Ordering::Relaxed);
                let resp = exit::submit(req, &self.exit, &crowd, guard.clone()).await;
                let node = self.clone();
                resp.map(|b| {
                    b.map_frame(move |f| {
                        if let Some(d) = f.data_ref() {
                            node.stats
                                .bytes_from_servers
                                .fetch_add(d.len() as u64, Ordering::Relaxed);
                        }
                        f
                    })
                    .boxed_unsync()
                })
            }
            Ok(Hop::Forward { successor, path }) => {
                let id =
                    HeaderValue::from_str(&path.to_hex()).unwrap_or(HeaderValue::from_static("0"));
                req.headers_mut().insert(PATH_HEADER, id);
                if successor == self_id {
                    return self.relay(Predecessor::Member(self_id), req).await;
                }
                let Some(member) = crowd.doc.member(successor) else {
                    return body::crowd_error(ErrorKind::PathBroken);
                };
                // A tunnel: our predecessor's end is spliced to our successor's once the
                // successor accepts. Without one (we initiated), the successor's end
                // travels back in the response.
                let upstream = tunnel::take_end(&mut req);
                // Whether a failure below is the request's own (its body failed on our
                // side: the client aborted an upload or sent a malformed body, or our
                // predecessor reset its stream) or the link's.
                let (req, body_failed) = {
                    let (parts, body) = req.into_parts();
                    let (body, failed) = body::watched(body);
                    (Request::from_parts(parts, body), failed)
                };
                match self.links.send(member, req).await {
                    Ok(mut resp) => {
                        if let Some(up) = upstream {
                            if resp.status().is_success() {
                                let Some(down) = tunnel::take_end(&mut resp) else {
                                    return body::crowd_error(ErrorKind::PathBroken);
                                };
                                tunnel::splice(up, down, self.exit.idle_timeout, guard.clone());
                                let (parts, _) = resp.into_parts();
                                return Response::from_parts(parts, body::empty());
                            }
                        }
                        resp.map(body::stream)
                    }
                    Err(_) if body_failed.load(Ordering::Relaxed) => {
                        // The sending side failed, not the path: the path stays.
                        tracing::debug!("a request body failed on its way in; the path stays");
                        self.stats.client_failures.fetch_add(1, Ordering::Relaxed);
                        body::crowd_error(ErrorKind::BadRequest)
                    }
                    Err(e) if !e.link_failed() => {
                        // The successor refused this one stream on a live link: this
                        // request fails, the hop stays (only a failed link re-forms it).
                        tracing::debug!("successor reset a stream: {e}");
                        body::crowd_error(ErrorKind::PathBroken)
                    }
                    Err(e) => {
                        // Debug, not warn: the error names the successor's member id, and
                        // member ids in logs help whoever reads them link paths.
                        tracing::debug!("path broken: {e}");
                        self.stats.path_failures.fetch_add(1, Ordering::Relaxed);
                        // Only this hop is forgotten: it is decided afresh next time, and
                        // not with the member that just failed.
                        lock(&self.paths).forget(pred, in_path);
                        self.links.forget(successor);
                        lock(&self.failed).insert(
                            successor,
                            now_ms().saturating_add(FAILED_MEMBER_PAUSE.as_millis() as u64),
                        );
                        body::crowd_error(ErrorKind::PathBroken)
                    }
                }
            }
        }
    }
}

/// A copy of a request that can be sent again: no body, and a safe method.
fn retry_copy(req: &Request<Body>) -> Option<Request<Body>> {
    let safe = matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::CONNECT
    );
    if !safe || !req.body().is_end_stream() {
        return None;
    }
    let mut copy = Request::new(body::empty());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Some(copy)
}

/// Counts a request or tunnel in progress while it lives.
#[derive(Clone)]
pub struct InFlight {
    _count: Arc<InFlightInner>,
}

struct InFlightInner(Arc<AtomicUsize>);

impl InFlight {
    fn new(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self {
            _count: Arc::new(InFlightInner(counter.clone())),
        }
    }
}

impl Drop for InFlightInner {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A running jondo.
pub struct RunningJondo {
    /// The bound peer address.
    pub peer_addr: SocketAddr,
    /// The bound HTTP proxy address.
    pub proxy_addr: SocketAddr,
    /// The bound SOCKS address.
    pub socks_addr: Option<SocketAddr>,
    /// The bound control address.
    pub control_addr: SocketAddr,
    /// This jondo's member id at the blender.
    pub member_id: MemberId,
    /// Shared state (for the demo and tests).
    pub node: Arc<Node>,
    blender: BlenderClient,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningJondo {
    /// Leaves gracefully (call after shutdown is signalled): tells the blender, so the
    /// next epoch drops this member, then lets in-flight requests and tunnels finish
    /// for at most `drain`.
    pub async fn leave(&self, drain: Duration) {
        let _ = tokio::time::timeout(
            Duration::from_secs(3),
            self.blender.call(Method::POST, "/v1/leave", None, None),
        )
        .await;
        self.node.drain(drain).await;
    }

    /// Waits for every task to end (after shutdown is signalled).
    pub async fn wait(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// The tokio runtime a jondo process runs on, with `threads` worker threads.
///
/// One thread (the default of `crowds jondo`) is a current-thread runtime: a relayed
/// request passes through several tasks at each jondo (the peer connection, the stream,
/// the outgoing link), and on one thread each hand-off is a push onto a local queue
/// instead of a wake-up of another worker: 12-15 % less CPU per relayed request in
/// crowds-bench (see BENCHMARKS.md), and one core moves far more than a home connection
/// carries. More threads spread TLS work over cores for a busy exit; 0 means one
/// per core.
pub fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    if threads > 1 {
        builder.worker_threads(threads);
    }
    builder.enable_all().build()
}

/// Starts a jondo: binds its ports, joins the crowd, and serves until `shutdown`.
pub async fn start(
    config: JondoConfig,
    shutdown: CancellationToken,
) -> Result<RunningJondo, NodeError> {
    let identity = Arc::new(files::load_or_create_identity(&config.data_dir)?);
    let me = identity.public();
    let peer_listener = net::bind(config.peer_listen, "peers").await?;
    let proxy_listener = net::bind(config.proxy_listen, "the HTTP proxy").await?;
    let control_listener = net::bind(config.control_listen, "the control port").await?;
    let socks_listener = match config.socks_listen {
        Some(a) => Some(net::bind(a, "the SOCKS proxy").await?),
        None => None,
    };
    let addr_of = |l: &tokio::net::TcpListener| {
        l.local_addr()
            .map_err(|e| NodeError::io("listener address", e))
    };
    let peer_addr = addr_of(&peer_listener)?;
    let proxy_addr = addr_of(&proxy_listener)?;
    let control_addr = addr_of(&control_listener)?;
    let socks_addr = socks_listener.as_ref().map(addr_of).transpose()?;
    let advertise = config.advertise.unwrap_or(peer_addr);

    let blenders: Vec<String> = std::iter::once(config.blender.clone())
        .chain(config.fallback_blenders.iter().cloned())
        .collect();
    let blender = BlenderClient::new(blenders.clone(), &identity, config.blender_key)?;
    // An exit never connects to any of the blenders for a user.
    let mut blender_addrs = Vec::new();
    for b in &blenders {
        if let Ok(found) = tokio::net::lookup_host(b.as_str()).await {
            blender_addrs.extend(found);
        }
    }
    // Listeners serve from now on (the proxy answers "not admitted" and the status page
    // says so until the crowd lists us); if the login fails they are stopped again.
    let serving = shutdown.child_token();

    let crowd: CrowdCell = Arc::new(RwLock::new(None));
    let node = Arc::new(Node {
        me,
        crowd: crowd.clone(),
        view: Mutex::new(CrowdView::new(config.blender_key)),
        paths: Mutex::new(PathTable::new()),
        links: Links::new(identity.clone()),
        exit: ExitConfig {
            source_ip: Some(peer_addr.ip()).filter(|ip| !ip.is_unspecified()),
            allow_private_destinations: config.allow_private_destinations,
            idle_timeout: config.idle_timeout,
            response_timeout: config.server_timeout,
            ports: config
                .exit_ports
                .clone()
                .unwrap_or(if config.allow_private_destinations {
                    PortPolicy::Any
                } else {
                    PortPolicy::default()
                }),
            deny: blender_addrs,
            ..ExitConfig::default()
        },
        stats: Stats::default(),
        blender_ok: AtomicBool::new(true),
        heartbeat_ms: AtomicU64::new(config.heartbeat_interval.as_millis() as u64),
        poll_ms: AtomicU64::new(config.poll_interval.as_millis() as u64),
        follow_hints: config.follow_blender_intervals,
        started_at: now_ms(),
        refresh: Notify::new(),
        adopted: tokio::sync::watch::channel(0).0,
        in_flight: Arc::default(),
        admitted_since: AtomicU64::new(0),
        admission_expected_at: AtomicU64::new(0),
        proxy_addr,
        hygiene: Hygiene {
            strip_cookies: !config.keep_cookies,
        },
        prefetch: !config.no_prefetch,
        strip_active_content: config.strip_active_content,
        objects: Arc::default(),
        recent: Mutex::new(Recent {
            own_reforms: RecentEvents::new(RecentEvents::DAY_MS),
            epochs: RecentEvents::new(RecentEvents::DAY_MS),
        }),
        own_path_formed: AtomicBool::new(false),
        failed: Mutex::new(HashMap::new()),
        unknown_key_refresh: net::OncePer::default(),
        allow_low_pf: config.insecure_allow_low_pf,
        refused_pf: Mutex::new(None),
        low_pf_logged: Mutex::new(None),
    });

    let mut tasks = Vec::new();
    let shutdown_all = shutdown;
    let shutdown = serving.clone();
    // Peers: TLS admits only keys listed in the current crowd document.
    let policy_node = Arc::downgrade(&node);
    let blender_key = config.blender_key;
    let policy: tls::KeyPolicy = Arc::new(move |key: &PublicKey| {
        // The blender proves that this jondo holds its key at the advertised address
        // with a handshake before it lists the address (it then closes at once).
        if *key == blender_key {
            return true;
        }
        let known = crowd
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|c| c.by_key.contains_key(key));
        if !known {
            // Perhaps it joined in an epoch we have not fetched yet. Anyone can make
            // this handshake, so at most one early fetch per poll interval.
            if let Some(n) = policy_node.upgrade() {
                if n.unknown_key_refresh.allow(now_ms(), n.poll_interval()) {
                    n.refresh.notify_one();
                }
            }
        }
        known
    });
    let acceptor = TlsAcceptor::from(Arc::new(tls::server_config(&identity, policy)?));
    let peer_node = node.clone();
    let per_address = net::PerAddress::new(config.peer_connections_per_address);
    let handshakes = net::Handshakes::new(config.peer_handshakes);
    tasks.push(net::spawn_accept_loop(
        peer_listener,
        MAX_PEER_CONNECTIONS,
        shutdown.clone(),
        move |stream, from: SocketAddr| {
            let node = peer_node.clone();
            let acceptor = acceptor.clone();
            let slot = per_address.try_take(net::source_of(from.ip()));
            // Only a connection within its address's share may push out a pending one.
            let ticket = slot.as_ref().map(|_| handshakes.enter());
            async move {
                let (Some(slot), Some(ticket)) = (slot, ticket) else {
                    node.stats
                        .peer_refused_per_address
                        .fetch_add(1, Ordering::Relaxed);
                    return;
                };
                serve_peer(node, acceptor, stream, ticket).await;
                drop(slot);
            }
        },
    ));
    let proxy_node = node.clone();
    tasks.push(net::spawn_accept_loop(
        proxy_listener,
        proxy::MAX_CLIENT_CONNECTIONS,
        shutdown.clone(),
        move |stream, _| proxy::serve(proxy_node.clone(), stream),
    ));
    let control_node = node.clone();
    tasks.push(net::spawn_accept_loop(
        control_listener,
        64,
        shutdown.clone(),
        move |stream, _| control::serve(control_node.clone(), stream),
    ));
    if let Some(l) = socks_listener {
        let socks_node = node.clone();
        tasks.push(net::spawn_accept_loop(
            l,
            proxy::MAX_CLIENT_CONNECTIONS,
            shutdown.clone(),
            move |stream, _| socks::serve(socks_node.clone(), stream),
        ));
    }
    let joined = match join_with_retry(&blender, &config, advertise, &shutdown_all).await {
        Ok(j) => j,
        Err(e) => {
            serving.cancel();
            return Err(e);
        }
    };
    tracing::info!(member = joined.member_id, status = %joined.status, "logged in at the blender");
    if let Some(crowd) = &joined.crowd {
        lock(&node.view).set_crowd(crowd);
    }
    node.note_join(&joined);
    if joined.client_only {
        warn_client_only(advertise);
    }
    tasks.push(tokio::spawn(poll_documents(
        node.clone(),
        blender.clone(),
        shutdown.clone(),
    )));
    tasks.push(tokio::spawn(heartbeat(
        node.clone(),
        blender.clone(),
        config.clone(),
        advertise,
        shutdown.clone(),
    )));
    Ok(RunningJondo {
        peer_addr,
        proxy_addr,
        socks_addr,
        control_addr,
        member_id: joined.member_id,
        node,
        blender,
        tasks,
    })
}

/// Tells the user, at warn level, what joining as a client-only member costs.
fn warn_client_only(advertise: SocketAddr) {
    tracing::warn!(
        "the blender cannot reach this jondo's peer address {advertise}: it joins as a client-only member. \
         It can browse, but it never relays for others, so the first jondo on its path knows that \
         every request it gets from this jondo was started here: against a collaborating first hop \
         its user has no anonymity, and the crowd's probable innocence does not cover it. Open the \
         peer port (or set --advertise) and restart to become a forwarding member."
    );
}

async fn join_with_retry(
    blender: &BlenderClient,
    config: &JondoConfig,
    advertise: SocketAddr,
    shutdown: &CancellationToken,
) -> Result<crate::blender::JoinResponse, NodeError> {
    let mut delay = Duration::from_millis(250);
    loop {
        match blender
            .join(&config.account, config.password.expose(), advertise)
            .await
        {
            Err(NodeError::Blender(e)) => {
                tracing::warn!("blender not reachable yet ({e}); retrying in {delay:?}");
                tokio::select! {
                    _ = shutdown.cancelled() => return Err(NodeError::Blender("shut down before joining".into())),
                    _ = tokio::time::sleep(jitter(delay)) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(30));
            }
            Err(NodeError::JoinTooSoon(wait)) => {
                tracing::warn!(
                    "the crowd limits how often an account joins; joining again in {wait:?}"
                );
                tokio::select! {
                    _ = shutdown.cancelled() => return Err(NodeError::Blender("shut down before joining".into())),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            other => return other,
        }
    }
}

fn jitter(d: Duration) -> Duration {
    use rand::Rng;
    d.mul_f64(rand::thread_rng().gen_range(0.75..1.25))
}

async fn serve_peer(
    node: Arc<Node>,
    acceptor: TlsAcceptor,
    stream: tokio::net::TcpStream,
    ticket: net::HandshakeTicket,
) {
    let handshake = tokio::select! {
        h = tokio::time::timeout(net::HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => h.ok(),
        () = ticket.evicted.cancelled() => {
            node.stats.peer_handshakes_evicted.fetch_add(1, Ordering::Relaxed);
            None
        }
    };
    drop(ticket);
    let Some(Ok(tls)) = handshake else {
        node.stats
            .handshakes_refused
            .fetch_add(1, Ordering::Relaxed);
        return;
    };
    node.stats.handshakes_ok.fetch_add(1, Ordering::Relaxed);
    let Some(key) = tls::peer_key(tls.get_ref().1) else {
        return;
    };
    let Some(pred) = node.crowd().and_then(|c| c.by_key.get(&key).copied()) else {
        // The blender's address check, or a key that left the crowd meanwhile.
        return;
    };
    // The link lives only while the crowd document vouches for this key as `pred`.
    let mut adopted = node.adopted.subscribe();
    let watch_node = node.clone();
    let still_vouched = async move {
        loop {
            if adopted.changed().await.is_err() {
                return;
            }
            let vouched = watch_node
                .crowd()
                .is_some_and(|c| c.by_key.get(&key) == Some(&pred));
            if !vouched {
                return;
            }
        }
    };
    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
        let node = node.clone();
        async move {
            let req = req.map(body::stream);
            Ok::<_, std::convert::Infallible>(node.relay(Predecessor::Member(pred), req).await)
        }
    });
    let result = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .initial_stream_window_size(link::STREAM_WINDOW)
        .initial_connection_window_size(link::CONNECTION_WINDOW)
        .max_concurrent_streams(link::MAX_STREAMS_PER_LINK)
        .max_header_list_size(link::MAX_HEADER_LIST)
        .keep_alive_interval(link::KEEPALIVE)
        .keep_alive_timeout(link::KEEPALIVE)
        .serve_connection(TokioIo::new(tls), service);
    tokio::pin!(result);
    tokio::select! {
        result = result.as_mut() => {
            if let Err(e) = result {
                tracing::debug!("peer link ended: {e}");
            }
            return;
        }
        () = still_vouched => {}
    }
    // No new stream on a key the crowd no longer vouches for (GOAWAY); what is in flight
    // finishes, so a member leaving gracefully still completes its transfers.
    tracing::debug!("closing a peer link: its key is no longer in the crowd document");
    result.as_mut().graceful_shutdown();
    if let Err(e) = result.await {
        tracing::debug!("peer link ended: {e}");
    }
}

async fn poll_documents(node: Arc<Node>, blender: BlenderClient, shutdown: CancellationToken) {
    let mut etag: Option<HeaderValue> = None;
    let mut failures = 0u32;
    // After a delta that did not apply, the next fetch asks for the whole document.
    let mut whole = false;
    loop {
        let every = node.poll_interval();
        let wait = if failures == 0 {
            every
        } else {
            jitter((every * 2u32.saturating_pow(failures.min(5))).min(Duration::from_secs(60)))
        };
        let (base, blender_key) = {
            let view = lock(&node.view);
            (view.current().cloned(), view.blender_key())
        };
        let have = base
            .as_ref()
            .filter(|_| !whole)
            .map(|d| (d.epoch, d.issued_at));
        whole = false;
        node.stats.document_fetches.fetch_add(1, Ordering::Relaxed);
        let fetched = blender.fetch_document(etag.as_ref(), have).await;
        if let Ok(reply) = &fetched {
            node.take_hints(&reply.headers);
        }
        match fetched {
            Ok(reply) if reply.status == StatusCode::OK => {
                failures = 0;
                node.blender_ok.store(true, Ordering::Relaxed);
                let is_delta = reply
                    .headers
                    .get(header::CONTENT_TYPE)
                    .map(|v| v.as_bytes())
                    == Some(crowds_proto::api::DELTA_CONTENT_TYPE.as_bytes());
                let bytes = match (is_delta, &base) {
                    (false, _) => Ok(reply.body.to_vec()),
                    (true, Some(base)) => {
                        crowds_proto::delta::DocumentDelta::apply(base, &reply.body, &blender_key)
                    }
                    (true, None) => Err(crowds_proto::document::DocumentError::Invalid(
                        "a delta without a base document",
                    )),
                };
                match bytes.map(|b| node.adopt(&b)) {
                    Ok(Ok(_)) => {
                        etag = reply.headers.get(header::ETAG).cloned();
                        let counter = if is_delta {
                            &node.stats.documents_delta
                        } else {
                            &node.stats.documents_full
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Err(AdoptError::LowPf(_))) => {
                        // Logged once by `adopt`. The same document is not fetched again
                        // until the blender changes it.
                        etag = reply.headers.get(header::ETAG).cloned();
                    }
                    Ok(Err(e)) => tracing::warn!("rejected a crowd document: {e}"),
                    Err(e) => {
                        tracing::warn!(
                            "a document delta did not apply ({e}); fetching the whole document"
                        );
                        whole = true;
                        continue;
                    }
                }
            }
            Ok(reply) if reply.status == StatusCode::NOT_MODIFIED => {
                failures = 0;
                node.blender_ok.store(true, Ordering::Relaxed);
            }
            Ok(reply) if reply.status == StatusCode::SERVICE_UNAVAILABLE => {
                node.blender_ok.store(true, Ordering::Relaxed);
            }
            Ok(reply) => {
                failures += 1;
                tracing::warn!("blender answered {} to a document fetch", reply.status);
            }
            Err(e) => {
                failures += 1;
                node.blender_ok.store(false, Ordering::Relaxed);
                tracing::warn!("{e}; keeping the last crowd document until it expires");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            _ = node.refresh.notified() => {}
        }
    }
}

async fn heartbeat(
    node: Arc<Node>,
    blender: BlenderClient,
    config: JondoConfig,
    advertise: SocketAddr,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(jitter(node.heartbeat_interval())) => {}
        }
        let sent = blender
            .call(Method::POST, "/v1/heartbeat", None, None)
            .await;
        if let Ok(reply) = &sent {
            node.take_hints(&reply.headers);
        }
        match sent {
            Ok(r) if r.status == StatusCode::FORBIDDEN => {
                // The blender dropped us (we were silent, or it lost state): join again.
                tracing::warn!("the blender no longer lists this jondo; joining again");
                match blender
                    .join(&config.account, config.password.expose(), advertise)
                    .await
                {
                    Ok(joined) => {
                        if joined.client_only {
                            warn_client_only(advertise);
                        }
                        node.note_join(&joined);
                    }
                    Err(e) => tracing::warn!("re-join failed: {e}"),
                }
            }
            Ok(_) => node.blender_ok.store(true, Ordering::Relaxed),
            Err(e) => {
                node.blender_ok.store(false, Ordering::Relaxed);
                tracing::warn!("heartbeat failed: {e}");
            }
        }
    }
}

/// Benchmark builds only (cargo feature `bench`, never in the shipped binary): paths of
/// an exact length, so a crowd path of k jondos can be compared with a chain of k relays.
/// The initiator reads the length from `CROWDS_BENCH_PATH_LENGTH` (jondos on the path,
/// itself included) and each hop counts down in a `crowds-bench-hops` header, choosing a
/// random other member each time. This breaks the protocol's anonymity on purpose.
#[cfg(feature = "bench")]
mod bench {
    use super::Crowd;
    use crowds_proto::path::{Hop, PathId, Predecessor};
    use http::{HeaderValue, Request};
    use rand::Rng;

    const HEADER: &str = "crowds-bench-hops";

    pub(super) fn forced_hop<B>(
        pred: Predecessor,
        req: &mut Request<B>,
        crowd: &Crowd,
    ) -> Option<Hop> {
        let remaining: u32 = match pred {
            Predecessor::Local => {
                let k: u32 = std::env::var("CROWDS_BENCH_PATH_LENGTH")
                    .ok()?
                    .parse()
                    .ok()?;
                if k <= 1 {
                    return Some(Hop::Submit);
                }
                k - 1
            }
            Predecessor::Member(_) => {
                // Defence in depth: even in a bench build, a jondo obeys the header only
                // when its own process was started for benchmarking.
                std::env::var_os("CROWDS_BENCH_PATH_LENGTH")?;
                req.headers().get(HEADER)?.to_str().ok()?.parse().ok()?
            }
        };
        if remaining == 0 {
            req.headers_mut().remove(HEADER);
            return Some(Hop::Submit);
        }
        let me = crowd.self_id?;
        let others: Vec<_> = crowd
            .forwarders
            .iter()
            .copied()
            .filter(|m| *m != me)
            .collect();
        if others.is_empty() {
            return None;
        }
        let mut rng = rand::thread_rng();
        let successor = others[rng.gen_range(0..others.len())];
        req.headers_mut()
            .insert(HEADER, HeaderValue::from(remaining - 1));
        Some(Hop::Forward {
            successor,
            path: PathId(rng.gen_range(1..=u64::MAX)),
        })
    }
}

/// Measurement builds only (cargo feature `measure`, never in the shipped binary): a
/// jondo started with `CROWDS_MEASURE_COLLABORATOR=FILE` plays a collaborator. When a
/// new path reaches it and no collaborator saw that path before (they mark requests with
/// a header among themselves), it appends its predecessor's member id to FILE, one per
/// line. A harness compares how often that is the initiator with the paper's
/// 1 - pf(n-c-1)/n. This breaks anonymity on purpose.
#[cfg(feature = "measure")]
mod measure {
    use crowds_proto::path::Predecessor;
    use http::{HeaderValue, Request};
    use std::io::Write;

    const SEEN: &str = "crowds-measure-seen";

    pub(super) fn on_new_path<B>(pred: Predecessor, req: &mut Request<B>) {
        let Ok(file) = std::env::var("CROWDS_MEASURE_COLLABORATOR") else {
            return;
        };
        if req.headers().contains_key(SEEN) {
            return;
        }
        req.headers_mut()
            .insert(SEEN, HeaderValue::from_static("1"));
        let line = match pred {
            Predecessor::Local => "local\n".to_string(),
            Predecessor::Member(id) => format!("{id}\n"),
        };
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
        {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

impl Node {
    /// Measurement builds only: forget this jondo's own path, so the next request forms
    /// a new one (a re-formation without a new epoch).
    #[cfg(feature = "measure")]
    pub fn reform_own_path(&self) {
        lock(&self.paths).forget(Predecessor::Local, PathId::LOCAL);
    }
}

#[cfg(test)]
mod tests {
    use tokio::runtime::RuntimeFlavor;

    #[test]
    fn threads_choose_the_runtime() {
        let built = |n| super::runtime(n).expect("runtime");
        assert_eq!(
            built(1).handle().runtime_flavor(),
            RuntimeFlavor::CurrentThread
        );
        let two = built(2);
        assert_eq!(two.handle().runtime_flavor(), RuntimeFlavor::MultiThread);
        assert_eq!(two.metrics().num_workers(), 2);
        assert_eq!(
            built(0).handle().runtime_flavor(),
            RuntimeFlavor::MultiThread
        );
    }
}
