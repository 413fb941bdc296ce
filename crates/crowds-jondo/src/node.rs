//! The relay engine: the state a running jondo shares between its front ends and its
//! peer server, and the routing of each request through the path table (forward on a
//! link, to itself, or submit at the exit), with retries and path repair.
//!
//! Owns [`Node`], its counters and the adoption of crowd documents. It must not bind
//! sockets or talk to the blender: the daemon wiring in [`crate::jondo`] does, and hands
//! documents and hints in. It never logs destinations or contents.

use crate::crowd::Crowd;
use crate::exit::ExitConfig;
use crate::prefetch;
use crate::tunnel;
use crowds_net::body::{self, Body};
use crowds_net::link::Links;
use crowds_net::net::{self, now_ms};
use crowds_proto::headers::Hygiene;
use crowds_proto::identity::PublicKey;
use crowds_proto::path::{Hop, PathId, PathTable, Predecessor, RouteError};
use crowds_proto::recent::RecentEvents;
use crowds_proto::relay::{self, ErrorKind, PATH_HEADER};
use crowds_proto::view::{Change, CrowdView};
use crowds_proto::MemberId;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use http::{HeaderValue, Method, Request, Response};
use http_body::Body as _;
use http_body_util::BodyExt;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::Notify;

/// How often a bodiless request is retried after its path broke before any byte of
/// the answer reached the user.
pub const MAX_RETRIES: usize = 2;
/// How long a request waits for a fresher crowd document around a new epoch.
pub const EPOCH_SKEW_WAIT: Duration = Duration::from_secs(3);

pub(crate) type CrowdCell = Arc<RwLock<Option<Arc<Crowd>>>>;

/// Serves plain HTTP found in a tunnel to the given authority (see [`Node::initiate`]).
pub type PlainHttpServer =
    fn(Arc<Node>, tunnel::Rewound<Box<dyn tunnel::Io>>, String) -> BoxFuture<'static, ()>;

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
    pub(crate) me: PublicKey,
    pub(crate) crowd: CrowdCell,
    pub(crate) view: Mutex<CrowdView>,
    pub(crate) paths: Mutex<PathTable>,
    pub(crate) links: Links,
    pub(crate) exit: ExitConfig,
    /// Counters shown on the status port.
    pub stats: Stats,
    /// Current heartbeat and poll intervals (ms), and whether blender hints may change them.
    pub(crate) heartbeat_ms: AtomicU64,
    pub(crate) poll_ms: AtomicU64,
    pub(crate) follow_hints: bool,
    pub(crate) blender_ok: AtomicBool,
    pub(crate) started_at: u64,
    pub(crate) refresh: Notify,
    /// Bumped each time a document is adopted.
    pub(crate) adopted: tokio::sync::watch::Sender<u64>,
    pub(crate) in_flight: Arc<AtomicUsize>,
    /// When this jondo was (continuously) admitted to the crowd, unix ms; 0 if not.
    pub(crate) admitted_since: AtomicU64,
    /// When the blender expects to admit this jondo (its next scheduled epoch), unix ms;
    /// 0 if it did not say.
    pub(crate) admission_expected_at: AtomicU64,
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
    pub(crate) recent: Mutex<Recent>,
    /// Whether the user's own path has been formed at least once.
    pub(crate) own_path_formed: AtomicBool,
    /// Members whose link failed at this jondo, with the time (unix ms) until which
    /// they are not chosen as successors (see [`FAILED_MEMBER_PAUSE`]).
    pub(crate) failed: Mutex<HashMap<MemberId, u64>>,
    /// Early document fetches asked for by handshakes with unknown keys: at most one per
    /// poll interval, so strangers cannot make this jondo hammer the blender.
    pub(crate) unknown_key_refresh: net::OncePer,
    /// Whether crowd documents with pf <= 1/2 are adopted
    /// ([`JondoConfig::insecure_allow_low_pf`]).
    pub(crate) allow_low_pf: bool,
    /// The pf of the last crowd document refused for being at most 1/2; `None` once a
    /// document is adopted.
    pub(crate) refused_pf: Mutex<Option<f64>>,
    /// The low pf last logged about (its bits), so the log says it once per pf rather
    /// than at every poll.
    pub(crate) low_pf_logged: Mutex<Option<u64>>,
}

/// Why a fetched crowd document was not adopted.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AdoptError {
    /// The view's rules refused it (signature, expiry, epoch, crowd).
    #[error(transparent)]
    View(#[from] crowds_proto::view::ViewError),
    /// Its pf is at most 1/2 and this jondo was not started with
    /// `--insecure-allow-low-pf`.
    #[error("the crowd document's pf {0} is at most 1/2")]
    LowPf(f64),
}

/// Event records behind the status page's "last 24 hours" figures.
pub(crate) struct Recent {
    pub(crate) own_reforms: RecentEvents,
    pub(crate) epochs: RecentEvents,
}

/// How long a member whose link failed is not chosen again as a successor by this
/// jondo (unless a new epoch comes first): the retry of a broken request must not pick
/// the member that just failed, and a dead member still listed (within the blender's
/// grace period) must not break paths again and again.
pub const FAILED_MEMBER_PAUSE: Duration = Duration::from_secs(600);

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
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
    pub(crate) fn note_join(&self, joined: &crowds_proto::api::JoinResponse) {
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
    pub(crate) fn adopt(&self, bytes: &[u8]) -> Result<Change, AdoptError> {
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
    ///
    /// `on_plain_http` serves a tunnel whose client turned out to speak plain HTTP (the
    /// front end that owns proxied HTTP passes its server in, so this engine never
    /// reaches up to it).
    pub async fn initiate(
        self: Arc<Self>,
        mut req: Request<Body>,
        on_plain_http: PlainHttpServer,
    ) -> Response<Body> {
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
                    tokio::spawn(on_plain_http(node, client, authority));
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
                let resp = prefetch::submit(req, &self.exit, &crowd, guard.clone()).await;
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

/// Benchmark builds only (cargo feature `bench`, never in the shipped binary): paths of
/// an exact length, so a crowd path of k jondos can be compared with a chain of k relays.
/// The initiator reads the length from `CROWDS_BENCH_PATH_LENGTH` (jondos on the path,
/// itself included) and each hop counts down in a `crowds-bench-hops` header, choosing a
/// random other member each time. This breaks the protocol's anonymity on purpose.
#[cfg(feature = "bench")]
mod bench {
    use crate::crowd::Crowd;
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
