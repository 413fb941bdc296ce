//! The blender daemon: accounts, admission, and the signed crowd document.
//!
//! Owns the blender's HTTPS API (TLS 1.3 with its Ed25519 key as a raw public key,
//! pinned by jondos; every client proves an Ed25519 identity key in the handshake), the
//! epoch ticker that applies [`crowds_proto::roster`] rules, signing, and persistence of
//! each epoch in the [`crate::store`]. Every piece of membership state lives in the store,
//! so several blenders sharing one PostgreSQL database (and one signing key) serve the
//! same crowds: each cuts epochs only under the crowd's lock. It never sees member traffic.
//!
//! Epochs are cut only at scheduled times (multiples of the join interval since the unix
//! epoch) and only when a change is waiting; a member that goes silent keeps its place
//! for the grace period; and while the API turns members' heartbeats away (every member
//! connection slot taken, or the store failing) nobody's silence counts (see
//! [`Store::tick_after`]).
//!
//! API (all JSON except the document):
//! - `POST /v1/join` `{"account", "password", "peer_addr"}`: registers the TLS client key
//!   as the account's member key; admitted at the next scheduled epoch. Before listing
//!   the peer address, the blender checks that this key answers there: a TLS handshake
//!   to it must prove the key (else 403); an address it cannot connect to at all makes a
//!   client-only member.
//! - `POST /v1/heartbeat`, `POST /v1/leave`: identified by the TLS client key.
//! - `GET /v1/crowd`: the signed document of the caller's crowd; `GET /v1/crowd/NAME`
//!   names the crowd. `ETag` and `If-None-Match` make an unchanged document a 304
//!   without a body, and a `crowds-have` header may get a delta instead of the whole.
//!
//! # Who may read the member list
//!
//! The document lists every member's address and key: a list of who uses an anonymity
//! tool. Only a client whose TLS key is in that crowd's current document, or that the
//! store lists as a member or pending member of that crowd (its key was registered by a
//! join with the account's password), gets it, whole or as a delta, or even as a 304;
//! anyone else gets 403. Members need the list to route, and a pending member needs it
//! the moment its epoch admits it; nobody else does. A jondo always joins before it
//! fetches, at start-up and again when its heartbeat is refused after it was dropped,
//! so honest jondos never meet the 403. A member of one crowd cannot read another
//! crowd's list. What stays public is only what a TLS handshake shows: that a blender
//! listens here, with this key.
//!
//! # Hostile load
//!
//! Strangers (no account needed) must not be able to empty the crowd or exhaust the
//! blender, so every number here is a setting ([`ApiLimits`]):
//! - Password checks (argon2id, about 19 MiB each) run on a fixed pool of threads with a
//!   short queue ([`crate::store::password`]); beyond it a join gets 503 with
//!   `Retry-After` before any work is done. A login attempt is counted against its
//!   account *before* its check runs, so parallel guesses for one account cannot all
//!   pass the lockout; its source address is checked first and charged for failures
//!   (counting it before would lock out members behind one NAT logging in together; a
//!   wave from one address is bounded by the join rate limit). Account names are
//!   validated before they become throttle keys; the throttle table is bounded.
//! - Connections are sorted as they are accepted. Those from a member's address (one in
//!   a current document, or one a member or pending member's key was recently proven
//!   from) take slots of the members' budget; any other connection is a stranger's:
//!   at most that many are in their TLS handshake (a new one cuts off the one waiting
//!   longest) and at most that many past it. After the handshake the key decides: a
//!   member's key moves the connection to the members' budget, a stranger's key to the
//!   strangers'. Connections not yet proven a member's are capped per source address
//!   (IPv6: per /64). Handshake, request head, request body and the whole connection
//!   each have a timeout, and a connection carries one request.
//! - [`net::Saturation`] records only the members' budget running out. Strangers are
//!   refused at their own budget, which is not saturation, so a flood of strangers
//!   neither pauses members' silence clocks nor keeps members from heartbeating. Either
//!   alternative would hand an attacker something: if strangers' floods counted as
//!   saturation, a flood without end would freeze every silence clock, so dead members
//!   would never be dropped and paths through them would keep failing; if strangers
//!   could take members' slots, the flood would silence members until they were
//!   dropped, and every drop re-forms paths. The members' budget can only be exhausted
//!   from members' own addresses (each capped), and then pausing the clocks is right.

#![forbid(unsafe_code)]
// A stranger's bytes must never panic the blender: no unwrap/expect outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![deny(clippy::await_holding_lock)]

pub mod store;

use crate::store::password::PasswordChecks;
use crate::store::{Store, Tick, DEFAULT_CROWD};
use crowds_net::body::{self, Body};
use crowds_net::error::NodeError;
use crowds_net::files::{self, BLENDER_PUB_FILE};
use crowds_net::net::{self, now_ms};
use crowds_net::safelog::Sensitive;
use crowds_net::tls;
use crowds_proto::document::CrowdDocument;
use crowds_proto::document::{Member, FLAG_CLIENT_ONLY};
use crowds_proto::identity::{PublicKey, SecretKey};
use crowds_proto::roster::{JoinOutcome, RosterConfig};
use crowds_proto::throttle::BoundedMap;
use crowds_proto::throttle::{LoginThrottle, RateLimit};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Most concurrent API connections of members (the default of
/// [`ApiLimits::max_member_connections`]).
pub const MAX_API_CONNECTIONS: usize = 512;
/// Default of [`ApiLimits::max_stranger_connections`].
pub const MAX_STRANGER_CONNECTIONS: usize = 128;
/// Default of [`ApiLimits::max_connections_per_address`].
pub const MAX_CONNECTIONS_PER_ADDRESS: usize = 32;
/// Default of [`ApiLimits::password_check_queue`]. A queued check holds no argon2
/// memory, only its request; at about 50 ms a check, a full queue waits about 1.6 s on
/// two cores, far within a jondo's 15 s call timeout, and a burst of honest joins (a
/// crowd forming, 64 at once) fits without a refusal.
pub const PASSWORD_CHECK_QUEUE: usize = 64;
/// What a join refused for a full password-check queue is told to wait.
const BUSY_RETRY_AFTER_MS: u64 = 1_000;
/// Most API connections of one member key at once. A jondo makes one request per
/// connection and rarely more than two at a time (heartbeat, document poll).
pub const MEMBER_CONNECTIONS_PER_KEY: usize = 8;

/// How long an address or key stays known as a member's after it was last proven.
const KNOWN_FOR_MS: u64 = 60 * 60 * 1000;
/// Most member addresses and keys remembered beyond the current documents' (the least
/// recently seen forgotten first; a forgotten member is a stranger until its next call).
const MAX_KNOWN: usize = 65_536;
/// Largest JSON request body.
pub const MAX_API_BODY: usize = crowds_proto::api::MAX_API_BODY;
/// Join requests accepted per source address per minute, by default.
pub const DEFAULT_MAX_JOINS_PER_MINUTE: u32 = 60;
/// One day: the default join interval and grace period.
const DAY: Duration = Duration::from_secs(86_400);
/// How often the epoch ticker looks at the store.
const TICK: Duration = Duration::from_millis(100);
/// How often it looks when the store is PostgreSQL shared with other blenders.
const TICK_SHARED: Duration = Duration::from_millis(250);

/// Settings of a blender.
#[derive(Debug, Clone)]
pub struct BlenderConfig {
    /// Holds the signing key, `blender.pub` and (without `database`) the SQLite file.
    pub data_dir: PathBuf,
    /// A PostgreSQL database shared with other blenders. `None`: SQLite in `data_dir`.
    pub database: Option<crate::store::DatabaseConfig>,
    /// More crowds served besides the default one: (name, pf).
    pub extra_crowds: Vec<(String, f64)>,
    /// Where the API listens.
    pub listen: SocketAddr,
    /// The crowd's forward probability.
    pub forward_probability: f64,
    /// Epochs are cut only at multiples of this interval since the unix epoch (midnight
    /// UTC for a day), and only when a change is waiting.
    pub join_interval: Duration,
    /// Pending joins silent this long are discarded; members silent this long are shown
    /// as silent.
    pub heartbeat_timeout: Duration,
    /// Members silent for longer than this are dropped at the next scheduled epoch.
    pub grace_period: Duration,
    /// Validity of each signed document.
    pub document_lifetime: Duration,
    /// An account is admitted at most once per this interval.
    pub rejoin_interval: Duration,
    /// Time allowed to connect back to a joining jondo's peer address.
    pub connect_back_timeout: Duration,
    /// Where to serve the status page and metrics (loopback; `None`: not served).
    pub control_listen: Option<SocketAddr>,
    /// Join requests accepted per source address per minute.
    pub max_joins_per_minute: u32,
    /// What the API gives each client at most (connections, time, password checks).
    pub limits: ApiLimits,
}

/// The API's limits against hostile load (see the module documentation).
#[derive(Debug, Clone)]
pub struct ApiLimits {
    /// Connections of members at once (from members' addresses, or proving a member's
    /// key). When they are all taken the blender stops accepting for a moment, and that
    /// time is nobody's silence.
    pub max_member_connections: usize,
    /// Connections of strangers at once: this many in their TLS handshake (a new one
    /// cuts off the one waiting longest) and this many past it (joins, mostly).
    pub max_stranger_connections: usize,
    /// Connections not yet proven a member's from one source address (IPv6: one /64).
    pub max_connections_per_address: usize,
    /// Time from accepting a connection to the end of its TLS handshake.
    pub handshake_timeout: Duration,
    /// Time for the request head, and again for a request body.
    pub read_timeout: Duration,
    /// Time for a whole connection, answer included.
    pub connection_timeout: Duration,
    /// Password checks run at once (each holds about 19 MiB for tens of milliseconds).
    pub password_checks: usize,
    /// Password checks waiting for a free worker; joins beyond get 503.
    pub password_check_queue: usize,
    /// Keys (account names and source addresses) the login throttle remembers.
    pub max_throttled_keys: usize,
}

impl Default for ApiLimits {
    fn default() -> Self {
        Self {
            max_member_connections: MAX_API_CONNECTIONS,
            max_stranger_connections: MAX_STRANGER_CONNECTIONS,
            max_connections_per_address: MAX_CONNECTIONS_PER_ADDRESS,
            handshake_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(10),
            connection_timeout: Duration::from_secs(60),
            password_checks: default_password_checks(),
            password_check_queue: PASSWORD_CHECK_QUEUE,
            max_throttled_keys: crowds_proto::throttle::DEFAULT_MAX_TRACKED,
        }
    }
}

/// One password check per core: checks are pure CPU work.
pub fn default_password_checks() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl BlenderConfig {
    /// Defaults for everything but the directory and address.
    pub fn new(data_dir: PathBuf, listen: SocketAddr) -> Self {
        Self {
            data_dir,
            database: None,
            extra_crowds: Vec::new(),
            listen,
            forward_probability: 0.75,
            // Every epoch re-forms every path, and each re-formation is another sample
            // for the predecessor attack (`crowds analyze`: with 10 % collaborators an
            // initiator stands out after about 17), so epochs are counted per day.
            join_interval: DAY,
            heartbeat_timeout: Duration::from_secs(30),
            grace_period: DAY,
            document_lifetime: Duration::from_secs(600),
            rejoin_interval: 7 * DAY,
            connect_back_timeout: Duration::from_secs(3),
            control_listen: None,
            max_joins_per_minute: DEFAULT_MAX_JOINS_PER_MINUTE,
            limits: ApiLimits::default(),
        }
    }
}

pub use crowds_proto::api::{JoinRequest, JoinResponse};

struct Published {
    bytes: Arc<Vec<u8>>,
    etag: String,
    epoch: u64,
    issued_at: u64,
    document: Arc<CrowdDocument>,
    /// The members' keys, to tell quickly who may read the document.
    keys: HashSet<PublicKey>,
}

/// Earlier documents kept to answer with deltas.
const DELTA_BASES: usize = 8;

/// Encoded deltas to the current document, by the base's (epoch, issue time).
type DeltaCache = std::collections::HashMap<(u64, u64), Arc<Vec<u8>>>;

/// One crowd this blender serves.
struct Crowd {
    config: RosterConfig,
    published: RwLock<Option<Published>>,
    /// The documents published before the current one (newest last).
    history: Mutex<std::collections::VecDeque<Arc<CrowdDocument>>>,
    /// Deltas to the current document, by the base's (epoch, issue time).
    deltas: Mutex<DeltaCache>,
}

impl Crowd {
    /// Whether `key` is in this crowd's current document.
    fn lists(&self, key: &PublicKey) -> bool {
        self.published
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|p| p.keys.contains(key))
    }
}

/// Who counts as a member when a connection arrives (by its address) and once its
/// handshake is done (by its key): everyone in the current documents, and any key
/// (with the address it called from) that a heartbeat, join or document fetch recently
/// proved to be a member's or a pending member's. Only connections are sorted by this;
/// what a client may do is always decided by the documents and the store.
struct Known {
    doc_keys: HashSet<PublicKey>,
    doc_sources: HashSet<IpAddr>,
    /// Unix ms each was last proven.
    keys: BoundedMap<PublicKey, u64>,
    sources: BoundedMap<IpAddr, u64>,
}

impl Known {
    fn new() -> Self {
        Self {
            doc_keys: HashSet::new(),
            doc_sources: HashSet::new(),
            keys: BoundedMap::new(MAX_KNOWN),
            sources: BoundedMap::new(MAX_KNOWN),
        }
    }

    fn key(&self, key: &PublicKey, now: u64) -> bool {
        self.doc_keys.contains(key)
            || self
                .keys
                .get(key)
                .is_some_and(|at| now.saturating_sub(*at) < KNOWN_FOR_MS)
    }

    fn source(&self, ip: IpAddr, now: u64) -> bool {
        let source = net::source_of(ip);
        self.doc_sources.contains(&source)
            || self
                .sources
                .get(&source)
                .is_some_and(|at| now.saturating_sub(*at) < KNOWN_FOR_MS)
    }
}

/// The API's connection budgets besides the members' (see the module documentation).
struct Gate {
    members: Arc<Semaphore>,
    strangers: Arc<Semaphore>,
    handshakes: Arc<net::Handshakes>,
    per_address: Arc<net::PerAddress>,
    refused_per_address: AtomicU64,
    /// Members' connections per key: one member (a collaborator) cannot take the whole
    /// members' budget and so stall everyone's heartbeats.
    per_key: Arc<net::PerAddress<PublicKey>>,
    refused_strangers: AtomicU64,
    handshakes_timed_out: AtomicU64,
    connections_timed_out: AtomicU64,
    bodies_timed_out: AtomicU64,
}

/// What a connection holds of the budgets; all given back when it ends.
struct Admission {
    member: Option<OwnedSemaphorePermit>,
    stranger: Option<OwnedSemaphorePermit>,
    handshake: Option<net::HandshakeTicket>,
    address: Option<net::AddressSlot>,
    /// A member's connection counts against its key ([`MEMBER_CONNECTIONS_PER_KEY`]).
    key: Option<net::AddressSlot<PublicKey>>,
}

/// The blender's counters (never account names or member traffic).
#[derive(Default)]
struct Stats {
    joins_pending: AtomicU64,
    joins_member: AtomicU64,
    joins_too_soon: AtomicU64,
    logins_refused: AtomicU64,
    heartbeats: AtomicU64,
    epochs: AtomicU64,
    client_only_joins: AtomicU64,
    /// Joins refused because the peer address answered with another key (or no proof).
    address_claims_refused: AtomicU64,
}

/// What login failures are counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ThrottleKey {
    Account(String),
    Source(IpAddr),
}

struct State {
    logins: Mutex<LoginThrottle<ThrottleKey>>,
    join_rate: Mutex<RateLimit<IpAddr>>,
    /// Where password checks run (a fixed pool; see [`crate::store::password`]).
    checks: PasswordChecks,
    limits: ApiLimits,
    known: RwLock<Known>,
    gate: Gate,
    stats: Stats,
    started_at: u64,
    key: SecretKey,
    connect_back_timeout: Duration,
    /// The API's connection to the store (the ticker has its own).
    store: Arc<Mutex<Store>>,
    /// "sqlite" or "postgres".
    database: &'static str,
    crowds: std::collections::BTreeMap<String, Crowd>,
    /// When the API's accept loop last had every connection slot taken.
    saturation: Arc<net::Saturation>,
    /// When a store call last failed (unix ms; 0: never).
    store_failed_at: AtomicU64,
}

impl State {
    fn crowd(&self, name: &str) -> Option<&Crowd> {
        self.crowds.get(name)
    }

    /// Notes that `key` just proved to be a member's (or a pending member's), calling
    /// from `source`.
    fn note_member(&self, key: PublicKey, source: IpAddr) {
        let now = now_ms();
        let source = net::source_of(source);
        {
            // Most calls are members' polls and heartbeats, seen a moment ago.
            let known = self.known.read().unwrap_or_else(|p| p.into_inner());
            let fresh = |at: Option<&u64>| at.is_some_and(|at| now.saturating_sub(*at) < 60_000);
            if fresh(known.keys.get(&key)) && fresh(known.sources.get(&source)) {
                return;
            }
        }
        let mut known = self.known.write().unwrap_or_else(|p| p.into_inner());
        *known.keys.touch_or_insert_with(key, || now) = now;
        *known.sources.touch_or_insert_with(source, || now) = now;
    }

    /// Rebuilds the members' keys and addresses from every crowd's current document.
    fn refresh_known(&self) {
        let mut keys = HashSet::new();
        let mut sources = HashSet::new();
        for crowd in self.crowds.values() {
            if let Some(p) = crowd
                .published
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
            {
                keys.extend(p.keys.iter().copied());
                sources.extend(
                    p.document
                        .members
                        .iter()
                        .map(|m| net::source_of(m.addr.ip())),
                );
            }
        }
        let mut known = self.known.write().unwrap_or_else(|p| p.into_inner());
        known.doc_keys = keys;
        known.doc_sources = sources;
    }

    /// Runs a store call off the async threads.
    async fn with_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<T, crate::store::StoreError> + Send + 'static,
    ) -> Result<T, NodeError> {
        let store = self.store.clone();
        let result = tokio::task::spawn_blocking(move || f(&mut lock(&store)))
            .await
            .map_err(|e| NodeError::Blender(e.to_string()))
            .and_then(|r| r.map_err(NodeError::from));
        if result.is_err() {
            self.store_failed();
        }
        result
    }

    /// Notes that the store failed now: members' heartbeats may have been lost.
    fn store_failed(&self) {
        self.store_failed_at
            .store(now_ms().max(1), Ordering::Relaxed);
    }

    /// The last time (unix ms) this blender may have turned members' heartbeats away:
    /// its API had no free connection slot, or its store failed.
    fn disrupted_at(&self, now: u64) -> Option<u64> {
        let store = match self.store_failed_at.load(Ordering::Relaxed) {
            0 => None,
            at => Some(at.min(now)),
        };
        store.max(self.saturation.last_at(now))
    }
}

/// A running blender.
pub struct RunningBlender {
    /// The API's bound address.
    pub addr: SocketAddr,
    /// The blender's public key (also written to `blender.pub`).
    pub public_key: PublicKey,
    /// The status port's bound address, if served.
    pub control_addr: Option<SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningBlender {
    /// Waits until the blender stops (after shutdown is signalled).
    pub async fn wait(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Loads or creates the signing key and writes `blender.pub`.
pub fn load_key(data_dir: &std::path::Path) -> Result<SecretKey, NodeError> {
    let key = files::load_or_create_identity(data_dir)?;
    let pub_path = data_dir.join(BLENDER_PUB_FILE);
    let text = format!("{}\n", key.public().to_hex());
    if std::fs::read_to_string(&pub_path).ok().as_deref() != Some(text.as_str()) {
        files::write_atomic(&pub_path, text.as_bytes(), 0o644)?;
    }
    Ok(key)
}

/// Starts a blender; it runs until `shutdown` is cancelled.
pub async fn start(
    config: BlenderConfig,
    shutdown: CancellationToken,
) -> Result<RunningBlender, NodeError> {
    if !crowds_proto::pf_is_valid(config.forward_probability) {
        return Err(NodeError::Config(
            "pf must be at least 0 and below 1".into(),
        ));
    }
    let key = load_key(&config.data_dir)?;
    let open = {
        let (dir, database) = (config.data_dir.clone(), config.database.clone());
        move || Store::open_database(&dir, database.as_ref())
    };
    let api_store = tokio::task::spawn_blocking(open.clone())
        .await
        .map_err(|e| NodeError::Blender(e.to_string()))??;
    let ticker_store = tokio::task::spawn_blocking(open)
        .await
        .map_err(|e| NodeError::Blender(e.to_string()))??;
    let shared = ticker_store.kind() == "postgres";
    let now = now_ms();
    let mut crowds = std::collections::BTreeMap::new();
    let all = std::iter::once((DEFAULT_CROWD.to_string(), config.forward_probability))
        .chain(config.extra_crowds.iter().cloned());
    for (name, pf) in all {
        if !crowds_proto::pf_is_valid(pf) {
            return Err(NodeError::Config(format!(
                "pf of crowd {name:?} must be at least 0 and below 1"
            )));
        }
        if !crate::store::valid_name(&name) {
            return Err(NodeError::Config(format!(
                "invalid crowd name {name:?}: use 1 to 64 letters, digits, '.', '_' or '-'"
            )));
        }
        let crowd = Crowd {
            config: RosterConfig {
                crowd: name.clone(),
                forward_probability: pf,
                join_interval_ms: config.join_interval.as_millis() as u64,
                heartbeat_timeout_ms: config.heartbeat_timeout.as_millis() as u64,
                grace_period_ms: config.grace_period.as_millis() as u64,
                document_lifetime_ms: config.document_lifetime.as_millis() as u64,
                rejoin_interval_ms: config.rejoin_interval.as_millis() as u64,
            },
            published: RwLock::new(None),
            history: Mutex::default(),
            deltas: Mutex::default(),
        };
        if crowds.insert(name.clone(), crowd).is_some() {
            return Err(NodeError::Config(format!("crowd {name:?} is given twice")));
        }
    }
    let listener = net::bind(config.listen, "the blender API").await?;
    let addr = listener
        .local_addr()
        .map_err(|e| NodeError::io("listener address", e))?;
    let limits = config.limits.clone();
    let checks = PasswordChecks::new(limits.password_checks, limits.password_check_queue)
        .map_err(|e| NodeError::io("starting the password-check threads", e))?;
    let state = Arc::new(State {
        logins: Mutex::new(LoginThrottle::with_limit(limits.max_throttled_keys)),
        join_rate: Mutex::new(RateLimit::with_limit(
            config.max_joins_per_minute,
            config.max_joins_per_minute.clamp(1, 20),
            limits.max_throttled_keys,
        )),
        checks,
        known: RwLock::new(Known::new()),
        gate: Gate {
            members: Arc::new(Semaphore::new(limits.max_member_connections.max(1))),
            strangers: Arc::new(Semaphore::new(limits.max_stranger_connections.max(1))),
            handshakes: net::Handshakes::new(limits.max_stranger_connections),
            per_address: net::PerAddress::new(limits.max_connections_per_address.max(1)),
            refused_per_address: AtomicU64::new(0),
            per_key: net::PerAddress::new(MEMBER_CONNECTIONS_PER_KEY),
            refused_strangers: AtomicU64::new(0),
            handshakes_timed_out: AtomicU64::new(0),
            connections_timed_out: AtomicU64::new(0),
            bodies_timed_out: AtomicU64::new(0),
        },
        limits,
        stats: Stats::default(),
        started_at: now,
        key,
        connect_back_timeout: config.connect_back_timeout,
        database: api_store.kind(),
        store: Arc::new(Mutex::new(api_store)),
        crowds,
        saturation: Arc::default(),
        store_failed_at: AtomicU64::new(0),
    });
    // Serve the stored documents at once (a restart, or a second blender joining).
    let ticker_store = Arc::new(Mutex::new(ticker_store));
    advance(&state, &ticker_store).await;
    let server_tls = tls::server_config(&state.key, Arc::new(|_: &PublicKey| true))?;
    let acceptor = TlsAcceptor::from(Arc::new(server_tls));
    let public_key = state.key.public();
    let (sort_state, admit_state) = (state.clone(), state.clone());
    // Members' addresses take the members' budget; the loop notes when it is all taken
    // (members' heartbeats then wait or fail, and the epoch clock must not take that
    // for their silence). Everyone else is admitted or refused at once by `admit`.
    let api = net::spawn_sorting_accept_loop(
        listener,
        state.gate.members.clone(),
        Some(state.saturation.clone()),
        shutdown.clone(),
        move |peer: SocketAddr| {
            sort_state
                .known
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .source(peer.ip(), now_ms())
        },
        move |stream, peer: SocketAddr, member| {
            let admission = admit(&admit_state, peer, member)?;
            Some(serve_api(
                admit_state.clone(),
                acceptor.clone(),
                stream,
                peer,
                admission,
            ))
        },
    );
    let mut tasks = vec![api];
    let mut control_addr = None;
    if let Some(listen) = config.control_listen {
        let listener = net::bind(listen, "the blender's control port").await?;
        control_addr = listener.local_addr().ok();
        let control_state = state.clone();
        tasks.push(net::spawn_accept_loop(
            listener,
            64,
            shutdown.clone(),
            move |stream, _| control(control_state.clone(), stream),
        ));
    }
    let every = if shared { TICK_SHARED } else { TICK };
    tasks.push(tokio::spawn(tick(state, ticker_store, every, shutdown)));
    tracing::info!(%addr, key = %public_key, database = if shared { "postgres" } else { "sqlite" }, "blender listening");
    Ok(RunningBlender {
        addr,
        public_key,
        control_addr,
        tasks,
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Takes a newly accepted connection's first places, or refuses it (`None`: it is
/// closed at once). `member` is its permit of the members' budget if it comes from a
/// member's address; every other connection enters the strangers' handshakes, where a
/// newer one cuts off the one waiting longest. Either way it counts against its source
/// address until its key proves a member's.
fn admit(
    state: &State,
    peer: SocketAddr,
    member: Option<OwnedSemaphorePermit>,
) -> Option<Admission> {
    let gate = &state.gate;
    let Some(address) = gate.per_address.try_take(net::source_of(peer.ip())) else {
        gate.refused_per_address.fetch_add(1, Ordering::Relaxed);
        return None;
    };
    let handshake = member.is_none().then(|| gate.handshakes.enter());
    Some(Admission {
        member,
        stranger: None,
        handshake,
        address: Some(address),
        key: None,
    })
}

/// Serves one API connection: the TLS handshake, then one request, each within its
/// time, moving the connection to the members' or the strangers' budget by its key.
async fn serve_api(
    state: Arc<State>,
    acceptor: TlsAcceptor,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    mut admission: Admission,
) {
    let started = std::time::Instant::now();
    let limits = state.limits.clone();
    let cut_off = admission.handshake.as_ref().map(|t| t.evicted.clone());
    let cut_off = async move {
        match cut_off {
            Some(token) => token.cancelled_owned().await,
            None => std::future::pending().await,
        }
    };
    let tls = tokio::select! {
        done = tokio::time::timeout(limits.handshake_timeout, acceptor.accept(stream)) => match done {
            Ok(Ok(tls)) => tls,
            Ok(Err(_)) => return,
            Err(_) => {
                state.gate.handshakes_timed_out.fetch_add(1, Ordering::Relaxed);
                return;
            }
        },
        // A newer stranger needed the place: this one waited longest.
        () = cut_off => return,
    };
    admission.handshake = None;
    let Some(client) = tls::peer_key(tls.get_ref().1) else {
        return;
    };
    let is_member = state
        .known
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .key(&client, now_ms());
    if is_member {
        // Proven a member's: it no longer counts against its address (members behind
        // one NAT are not capped together), but against its key.
        let Some(key) = state.gate.per_key.try_take(client) else {
            state
                .gate
                .refused_per_address
                .fetch_add(1, Ordering::Relaxed);
            return;
        };
        admission.key = Some(key);
        admission.address = None;
        if admission.member.is_none() {
            admission.member = state.gate.members.clone().try_acquire_owned().ok();
        }
    } else {
        // From a member's address, but not a member's key: a stranger after all.
        admission.member = None;
    }
    if admission.member.is_none() {
        match state.gate.strangers.clone().try_acquire_owned() {
            Ok(permit) => admission.stranger = Some(permit),
            Err(_) => {
                state.gate.refused_strangers.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
    let service_state = state.clone();
    let service = service_fn(move |req| {
        let state = service_state.clone();
        async move { Ok::<_, std::convert::Infallible>(api(state, client, peer.ip(), req).await) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.read_timeout)
        // One request per connection, as jondos make them: no idle connection waits
        // for a second one.
        .keep_alive(false)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(tls), service);
    let left = limits.connection_timeout.saturating_sub(started.elapsed());
    if tokio::time::timeout(left, connection).await.is_err() {
        state
            .gate
            .connections_timed_out
            .fetch_add(1, Ordering::Relaxed);
    }
    drop(admission);
}

async fn tick(
    state: Arc<State>,
    store: Arc<Mutex<Store>>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        advance(&state, &store).await;
    }
}

/// One turn for every crowd: cut or refresh an epoch if due (unless another blender is
/// doing it), then pick up the latest stored document, whoever signed it.
async fn advance(state: &Arc<State>, store: &Arc<Mutex<Store>>) {
    let mut published = false;
    for (name, crowd) in &state.crowds {
        let config = crowd.config.clone();
        let known = crowd
            .published
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|p| (p.epoch, p.issued_at));
        let (store, signer, crowd_name) = (store.clone(), state.clone(), name.clone());
        let result = tokio::task::spawn_blocking(move || {
            let mut store = lock(&store);
            let sign = |doc: &CrowdDocument| doc.sign(&signer.key).map_err(|e| e.to_string());
            let now = now_ms();
            let tick = store.tick_after(&config, now, signer.disrupted_at(now), &sign)?;
            let latest = store.latest_document(&crowd_name, known)?;
            Ok::<_, crate::store::StoreError>((tick, latest))
        })
        .await;
        let (tick, latest) = match result {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                state.store_failed();
                tracing::error!(crowd = %name, "cannot advance the crowd: {e}");
                continue;
            }
            Err(e) => {
                tracing::error!(crowd = %name, "epoch task failed: {e}");
                continue;
            }
        };
        if let Tick::NewEpoch { epoch, members } = tick {
            tracing::info!(crowd = %name, epoch, members, "new epoch");
            state.stats.epochs.fetch_add(1, Ordering::Relaxed);
        }
        let Some(latest) = latest else { continue };
        let Some(bytes) = latest.bytes else { continue };
        match CrowdDocument::verify(&bytes, &state.key.public()) {
            Ok(document) => {
                let old = crowd
                    .published
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .replace(Published {
                        bytes: Arc::new(bytes),
                        etag: format!("\"{}-{}\"", latest.epoch, latest.issued_at),
                        epoch: latest.epoch,
                        issued_at: latest.issued_at,
                        keys: document.members.iter().map(|m| m.key).collect(),
                        document: Arc::new(document),
                    });
                lock(&crowd.deltas).clear();
                published = true;
                if let Some(old) = old {
                    let mut history = lock(&crowd.history);
                    history.push_back(old.document);
                    while history.len() > DELTA_BASES {
                        history.pop_front();
                    }
                }
            }
            // Another blender with a different key shares this database: refuse to
            // serve what jondos would reject anyway.
            Err(e) => tracing::error!(
                crowd = %name,
                "the stored document does not verify with this blender's key ({e}); \
                 blenders sharing a database must share the data directory's key"
            ),
        }
    }
    if published {
        state.refresh_known();
    }
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    body::json(status, &serde_json::json!({ "error": message }))
}

async fn api(
    state: Arc<State>,
    client: PublicKey,
    source: IpAddr,
    req: Request<Incoming>,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/v1/crowd") => match readable_crowd(&state, client, source, None).await {
            Ok(name) => crowd(&state, &name, &req),
            Err(refused) => refused,
        },
        (Method::GET, p) if p.starts_with("/v1/crowd/") => {
            match readable_crowd(&state, client, source, Some(&p[10..])).await {
                Ok(name) => crowd(&state, &name, &req),
                Err(refused) => refused,
            }
        }
        (Method::POST, "/v1/join") => join(state, client, source, req).await,
        (Method::POST, "/v1/heartbeat") => {
            match state
                .with_store(move |s| s.heartbeat(&client, now_ms()))
                .await
            {
                Ok(true) => {
                    state.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
                    state.note_member(client, source);
                    let mut resp = body::text(StatusCode::NO_CONTENT, "");
                    // The heartbeat hint is the same for every crowd (one timeout).
                    if let Some(c) = state.crowds.values().next() {
                        add_hints(&mut resp, &c.config, None);
                    }
                    resp
                }
                Ok(false) => error(StatusCode::FORBIDDEN, "not a member: join again"),
                Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "the store is unavailable"),
            }
        }
        (Method::POST, "/v1/leave") => match state.with_store(move |s| s.leave(&client)).await {
            Ok(()) => body::text(StatusCode::NO_CONTENT, ""),
            Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "the store is unavailable"),
        },
        _ => error(StatusCode::NOT_FOUND, "no such endpoint"),
    }
}

/// Why a client that is neither a member nor a pending member gets no document.
const NOT_A_READER: &str =
    "only members and pending members of a crowd may read its document: join first";

/// The crowd whose document `client` may read (`wanted`, or else its own): one whose
/// current document lists its key, or whose member or pending member the store says it
/// is. Anyone else gets 403 (see "Who may read the member list" above).
async fn readable_crowd(
    state: &Arc<State>,
    client: PublicKey,
    source: IpAddr,
    wanted: Option<&str>,
) -> Result<String, Response<Body>> {
    // The current documents first: no store call for members' polls.
    let listed = state
        .crowds
        .iter()
        .find(|(name, c)| wanted.is_none_or(|w| w == name.as_str()) && c.lists(&client))
        .map(|(name, _)| name.clone());
    let name = match listed {
        Some(name) => name,
        None => match state.with_store(move |s| s.crowd_of(&client)).await {
            Ok(Some(name)) if wanted.is_none_or(|w| w == name) => name,
            Ok(_) => return Err(error(StatusCode::FORBIDDEN, NOT_A_READER)),
            Err(_) => {
                return Err(error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the store is unavailable",
                ))
            }
        },
    };
    state.note_member(client, source);
    Ok(name)
}

/// Adds the blender's suggested heartbeat interval for `config` to `resp`, and the poll
/// interval when the crowd's size is known (`members`).
fn add_hints(resp: &mut Response<Body>, config: &RosterConfig, members: Option<usize>) {
    let (heartbeat, poll) = crowds_proto::api::suggested_intervals(
        members.unwrap_or(0),
        config.heartbeat_timeout_ms,
        config.join_interval_ms,
    );
    let h = resp.headers_mut();
    h.insert(
        crowds_proto::api::HEARTBEAT_HINT_HEADER,
        HeaderValue::from(heartbeat),
    );
    if members.is_some() {
        h.insert(crowds_proto::api::POLL_HINT_HEADER, HeaderValue::from(poll));
    }
}

fn crowd(state: &State, name: &str, req: &Request<Incoming>) -> Response<Body> {
    let Some(crowd) = state.crowd(name) else {
        return error(
            StatusCode::NOT_FOUND,
            "this blender does not serve that crowd",
        );
    };
    let members = crowd
        .published
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .map_or(0, |p| p.document.members.len());
    let mut resp = crowd_document(crowd, req);
    add_hints(&mut resp, &crowd.config, Some(members));
    resp
}

fn crowd_document(crowd: &Crowd, req: &Request<Incoming>) -> Response<Body> {
    let published = crowd.published.read().unwrap_or_else(|p| p.into_inner());
    let Some(p) = published.as_ref() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "no epoch published yet");
    };
    let etag = HeaderValue::from_str(&p.etag).unwrap_or(HeaderValue::from_static("\"0\""));
    if req.headers().get(header::IF_NONE_MATCH) == Some(&etag) {
        let mut resp = body::text(StatusCode::NOT_MODIFIED, "");
        resp.headers_mut().insert(header::ETAG, etag);
        return resp;
    }
    // A jondo holding an earlier document gets only the change (it checks the whole
    // new document's signature after applying it).
    let have = req
        .headers()
        .get(crowds_proto::api::HAVE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(crowds_proto::api::parse_have);
    let (bytes, content_type) = match have.and_then(|base| delta_to(crowd, p, base)) {
        Some(delta) => (delta, crowds_proto::api::DELTA_CONTENT_TYPE),
        None => (p.bytes.clone(), crowds_proto::api::DOCUMENT_CONTENT_TYPE),
    };
    let mut resp = Response::new(body::full(bytes.as_ref().clone()));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp.headers_mut().insert(header::ETAG, etag);
    resp
}

/// The delta from the earlier document `base` (epoch, issue time) to the current one, if
/// that document is still known; computed once per base and cached.
fn delta_to(crowd: &Crowd, current: &Published, base: (u64, u64)) -> Option<Arc<Vec<u8>>> {
    if base == (current.epoch, current.issued_at) {
        return None;
    }
    if let Some(d) = lock(&crowd.deltas).get(&base) {
        return Some(d.clone());
    }
    let doc = lock(&crowd.history)
        .iter()
        .rev()
        .find(|d| (d.epoch, d.issued_at) == base)?
        .clone();
    let delta =
        Arc::new(crowds_proto::delta::DocumentDelta::encode_between(&doc, &current.bytes).ok()?);
    let mut deltas = lock(&crowd.deltas);
    if deltas.len() < DELTA_BASES {
        deltas.insert(base, delta.clone());
    }
    Some(delta)
}

fn too_many(message: &str, retry_after_ms: u64) -> Response<Body> {
    retry_later(StatusCode::TOO_MANY_REQUESTS, message, retry_after_ms)
}

/// An answer that says when to try again, in the body (`retry_after_ms`, which jondos
/// read) and in `Retry-After` (whole seconds, for everyone else).
fn retry_later(status: StatusCode, message: &str, retry_after_ms: u64) -> Response<Body> {
    let mut resp = body::json(
        status,
        &serde_json::json!({ "error": message, "retry_after_ms": retry_after_ms }),
    );
    resp.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(retry_after_ms.div_ceil(1000)),
    );
    resp
}

async fn join(
    state: Arc<State>,
    client: PublicKey,
    source: IpAddr,
    req: Request<Incoming>,
) -> Response<Body> {
    let now = now_ms();
    let source = net::source_of(source);
    if let Err(wait) = lock(&state.join_rate).take(source, now) {
        return too_many("too many join requests from this address; slow down", wait);
    }
    let body = tokio::time::timeout(
        state.limits.read_timeout,
        body::read_limited(req.into_body(), MAX_API_BODY),
    )
    .await;
    let bytes = match body {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => return error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
        Err(_) => {
            state.gate.bodies_timed_out.fetch_add(1, Ordering::Relaxed);
            return error(
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive in time",
            );
        }
    };
    // The account name is checked here, before it is used as a throttle key. A name
    // or password no account can have is a refused login (401, so that a jondo stops
    // and says so), at once: no check, nothing counted.
    let join = match crowds_proto::api::parse_join(&bytes) {
        Ok(join) => join,
        Err(
            e
            @ (crowds_proto::api::ApiError::BadAccount | crowds_proto::api::ApiError::BadPassword),
        ) => {
            state.stats.logins_refused.fetch_add(1, Ordering::Relaxed);
            return error(StatusCode::UNAUTHORIZED, &format!("login refused: {e}"));
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let password = zeroize::Zeroizing::new(join.password);
    let account = join.account.clone();
    let record = match state.with_store(move |s| s.login_record(&account)).await {
        Ok(record) => record,
        Err(_) => return error(StatusCode::SERVICE_UNAVAILABLE, "the store is unavailable"),
    };
    // A place among the password checks next: beyond the pool and its queue a join is
    // refused at once, before anything is counted against the account.
    let Some(ticket) = state.checks.try_admit() else {
        return retry_later(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many logins are being checked; try again shortly",
            BUSY_RETRY_AFTER_MS,
        );
    };
    // Password guessing is slowed per account and per source address. The attempt is
    // counted against the account before it is checked (a success clears it), so that
    // parallel guesses for one account cannot all pass a lockout none of them has
    // triggered yet: exactly the free ones run. The source address is checked now and
    // charged only for a failure, so that members behind one address (a NAT) can log in
    // at the same moment; what one address sends at once is bounded by the join rate
    // limit's burst.
    let account_key = ThrottleKey::Account(join.account.clone());
    let source_key = ThrottleKey::Source(source);
    let begun = {
        let mut throttle = lock(&state.logins);
        throttle
            .check(&source_key, now)
            .and_then(|()| throttle.begin(std::slice::from_ref(&account_key), now))
    };
    if let Err(wait) = begun {
        return too_many("too many failed logins; wait before trying again", wait);
    }
    // The slow hash check runs on the pool, outside the store's lock.
    let verified = state
        .checks
        .run(ticket, move || match record {
            Some(r) => r.verify(&password).map(|ok| ok.then_some((r.id, r.crowd))),
            None => {
                crate::store::waste_password_check(&password);
                Ok(None)
            }
        })
        .await;
    let (id, crowd_name) = match verified {
        Some(Ok(Some(found))) => {
            let mut throttle = lock(&state.logins);
            throttle.record_success(&account_key);
            throttle.record_success(&source_key);
            found
        }
        Some(Ok(None)) => {
            state.stats.logins_refused.fetch_add(1, Ordering::Relaxed);
            let delay = {
                let mut throttle = lock(&state.logins);
                let source_delay = throttle.record_failure(source_key, now_ms());
                source_delay.max(throttle.check(&account_key, now).err().unwrap_or(0))
            };
            // Neither the password nor the account name is logged.
            tracing::warn!(
                source = %Sensitive(source),
                next_attempt_delay_ms = delay,
                "refused a login: unknown account or wrong password"
            );
            return error(
                StatusCode::UNAUTHORIZED,
                "login refused: unknown account or wrong password",
            );
        }
        _ => return error(StatusCode::INTERNAL_SERVER_ERROR, "account store failure"),
    };
    let first_epoch_published = state.crowd(&crowd_name).is_some_and(|c| {
        c.published
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    });
    let Some(config) = state.crowd(&crowd_name).map(|c| c.config.clone()) else {
        tracing::warn!(
            member = id,
            "join refused: this blender does not serve the account's crowd"
        );
        return error(
            StatusCode::FORBIDDEN,
            "this account belongs to a crowd this blender does not serve",
        );
    };
    // The article's firewalled members: if we cannot reach the peer port, the member
    // may still initiate paths but is never chosen as a forwarder. If something answers
    // there, it must prove the joining key: listing another member's address would send
    // peers to the wrong key, and every path through it would break and re-form.
    let reachable = match check_peer(
        &state.key,
        client,
        join.peer_addr,
        state.connect_back_timeout,
    )
    .await
    {
        PeerCheck::Proven => true,
        PeerCheck::Unreachable => false,
        PeerCheck::Failed(e) => {
            tracing::error!("cannot check a joining member's peer address: {e}");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the blender cannot check the peer address",
            );
        }
        PeerCheck::OtherKey(why) => {
            state
                .stats
                .address_claims_refused
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                member = id,
                peer = %Sensitive(join.peer_addr),
                "join refused: the peer address does not answer with the member's key ({why})"
            );
            return error(
                StatusCode::FORBIDDEN,
                &format!(
                    "the peer address answers with another key: {why}; advertise this \
                     jondo's own peer address"
                ),
            );
        }
    };
    let member = Member {
        id,
        addr: join.peer_addr,
        key: client,
        flags: if reachable { 0 } else { FLAG_CLIENT_ONLY },
    };
    // A pending join is admitted at the next scheduled epoch (a new crowd's first epoch
    // is cut at once).
    let admission_expected_at = if first_epoch_published {
        config.scheduled_after(now_ms())
    } else {
        now_ms()
    };
    let outcome = match state
        .with_store(move |s| s.join(&config, &member, now_ms()))
        .await
    {
        Ok(outcome) => outcome,
        Err(_) => return error(StatusCode::SERVICE_UNAVAILABLE, "the store is unavailable"),
    };
    let status = match outcome {
        JoinOutcome::AlreadyMember => {
            state.stats.joins_member.fetch_add(1, Ordering::Relaxed);
            "member"
        }
        JoinOutcome::Pending => {
            state.stats.joins_pending.fetch_add(1, Ordering::Relaxed);
            if !reachable {
                state
                    .stats
                    .client_only_joins
                    .fetch_add(1, Ordering::Relaxed);
            }
            "pending"
        }
        JoinOutcome::TooSoon { retry_after_ms } => {
            state.stats.joins_too_soon.fetch_add(1, Ordering::Relaxed);
            tracing::info!(member = id, "join refused: admitted too recently");
            return too_many(
                "this account joined too recently; the crowd limits how often an account may join",
                retry_after_ms,
            );
        }
    };
    state.note_member(client, source);
    tracing::info!(member = id, status, client_only = !reachable, "join");
    body::json(
        StatusCode::OK,
        &serde_json::json!({
            "member_id": id,
            "status": status,
            "client_only": !reachable,
            "crowd": crowd_name,
            "admission_expected_at": (status == "pending").then_some(admission_expected_at),
        }),
    )
}

/// What answers at a joining member's peer address.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PeerCheck {
    /// A TLS handshake there proved the member's key.
    Proven,
    /// Nothing accepted a TCP connection in time (firewalled: a client-only member).
    Unreachable,
    /// Something accepted the connection but did not prove the key: why.
    OtherKey(String),
    /// The blender could not run the check itself: why.
    Failed(String),
}

/// Checks that `key` answers at `addr`: a TCP connection, then a TLS 1.3 handshake as a
/// client in which the server must prove `key`. The blender presents its own identity
/// key, which every jondo pins as the blender's. Each step gets `timeout`.
async fn check_peer(
    identity: &SecretKey,
    key: PublicKey,
    addr: SocketAddr,
    timeout: Duration,
) -> PeerCheck {
    let Ok(Ok(tcp)) = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await
    else {
        return PeerCheck::Unreachable;
    };
    let config = match tls::client_config(identity, key) {
        Ok(c) => c,
        Err(e) => return PeerCheck::Failed(e.to_string()),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    match tokio::time::timeout(timeout, connector.connect(tls::server_name(), tcp)).await {
        // The server proved the key in its handshake; the connection is closed at once.
        Ok(Ok(_)) => PeerCheck::Proven,
        Ok(Err(e)) => PeerCheck::OtherKey(format!(
            "the TLS handshake there did not prove this member's key ({e})"
        )),
        Err(_) => PeerCheck::OtherKey(format!(
            "no TLS handshake proving this member's key within {timeout:?}"
        )),
    }
}

async fn control(state: Arc<State>, stream: tokio::net::TcpStream) {
    let service = service_fn(move |req: Request<Incoming>| {
        let state = state.clone();
        async move { Ok::<_, std::convert::Infallible>(control_page(&state, &req).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .max_buf_size(16 * 1024)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn blender_status(state: &Arc<State>) -> serde_json::Value {
    let now = now_ms();
    let configs: Vec<RosterConfig> = state.crowds.values().map(|c| c.config.clone()).collect();
    // Per crowd: its counts and its members that missed the heartbeat timeout.
    let counts = state
        .with_store(move |s| {
            configs
                .iter()
                .map(|c| Ok((s.counts(&c.crowd)?, s.silent_members(c, now)?)))
                .collect::<Result<Vec<_>, crate::store::StoreError>>()
        })
        .await
        .unwrap_or_default();
    let mut crowds = Vec::new();
    let mut members = Vec::new();
    let mut silent_default = Vec::new();
    for (i, crowd) in state.crowds.values().enumerate() {
        let (c, silent) = counts.get(i).cloned().unwrap_or_default();
        let published = crowd.published.read().unwrap_or_else(|p| p.into_inner());
        let doc = published.as_ref().map(|p| p.document.clone());
        if crowd.config.crowd == DEFAULT_CROWD {
            members = doc
                .iter()
                .flat_map(|d| d.members.iter())
                .map(|m| {
                    serde_json::json!({
                        "id": m.id,
                        "addr": m.addr.to_string(),
                        "client_only": !m.forwards(),
                        "key": m.key.to_hex(),
                        "silent": silent.contains(&m.id),
                    })
                })
                .collect();
            silent_default = silent.clone();
        }
        crowds.push(serde_json::json!({
            "name": crowd.config.crowd,
            "pf": crowd.config.forward_probability,
            "epoch": doc.as_ref().map_or(0, |d| d.epoch),
            "members": doc.as_ref().map_or(0, |d| d.members.len()),
            "pending_joins": c.pending,
            "silent_members": silent.len(),
            "document_age_s": doc.as_ref().map(|d| now.saturating_sub(d.issued_at) / 1000),
        }));
    }
    let default = &crowds[0];
    let accounts = counts.first().map_or(0, |(c, _)| c.accounts);
    let first = state.crowds.values().next().map(|c| &c.config);
    let s = &state.stats;
    let g = &state.gate;
    serde_json::json!({
        "epoch": default["epoch"],
        "members": default["members"],
        "pending_joins": default["pending_joins"],
        "accounts": accounts,
        "pf": default["pf"],
        "silent_members": silent_default.len(),
        "join_interval_ms": first.map(|c| c.join_interval_ms),
        "heartbeat_timeout_ms": first.map(|c| c.heartbeat_timeout_ms),
        "grace_period_ms": first.map(|c| c.grace_period_ms),
        "rejoin_interval_ms": first.map(|c| c.rejoin_interval_ms),
        // The earliest moment a waiting change can become an epoch (none is cut
        // between two of these).
        "next_scheduled_epoch_ms": first.map(|c| c.scheduled_after(now)),
        "database": state.database,
        "uptime_s": now.saturating_sub(state.started_at) / 1000,
        "crowds": crowds,
        "member_list": members,
        "counters": {
            "epochs": s.epochs.load(Ordering::Relaxed),
            "joins_pending": s.joins_pending.load(Ordering::Relaxed),
            "joins_member": s.joins_member.load(Ordering::Relaxed),
            "joins_too_soon": s.joins_too_soon.load(Ordering::Relaxed),
            "client_only_joins": s.client_only_joins.load(Ordering::Relaxed),
            "address_claims_refused": s.address_claims_refused.load(Ordering::Relaxed),
            "logins_refused": s.logins_refused.load(Ordering::Relaxed),
            "heartbeats": s.heartbeats.load(Ordering::Relaxed),
            "password_checks": state.checks.ran(),
            "password_checks_refused_busy": state.checks.refused(),
            "connections_refused_per_address": g.refused_per_address.load(Ordering::Relaxed),
            "connections_refused_strangers": g.refused_strangers.load(Ordering::Relaxed),
            "handshakes_cut_off": g.handshakes.evicted(),
            "handshakes_timed_out": g.handshakes_timed_out.load(Ordering::Relaxed),
            "connections_timed_out": g.connections_timed_out.load(Ordering::Relaxed),
            "bodies_timed_out": g.bodies_timed_out.load(Ordering::Relaxed),
        },
        "load": {
            "password_checks_in_flight": state.checks.in_flight(),
            "password_check_workers": state.checks.workers(),
            "member_connections": state.limits.max_member_connections.saturating_sub(g.members.available_permits()),
            "stranger_connections": state.limits.max_stranger_connections.saturating_sub(g.strangers.available_permits()),
            "stranger_handshakes": g.handshakes.pending(),
            "throttled_keys": lock(&state.logins).len(),
        },
    })
}

async fn control_page(state: &Arc<State>, req: &Request<Incoming>) -> Response<Body> {
    if let Some(refused) = crowds_net::page::refuse_foreign_host(req) {
        return refused;
    }
    if req.method() != Method::GET {
        return body::text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    let st = blender_status(state).await;
    match req.uri().path() {
        "/status.json" => body::json(StatusCode::OK, &st),
        "/metrics" => {
            let c = &st["counters"];
            let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
            let mut m = crowds_net::metrics::Metrics::new();
            m.counter(
                "crowds_blender_epochs_total",
                "Epochs published since start.",
                n(&c["epochs"]),
            );
            m.counters_by(
                "crowds_blender_joins_total",
                "Join requests by outcome.",
                "outcome",
                &[
                    ("pending", n(&c["joins_pending"])),
                    ("member", n(&c["joins_member"])),
                    ("too_soon", n(&c["joins_too_soon"])),
                    ("refused", n(&c["logins_refused"])),
                ],
            );
            m.counter(
                "crowds_blender_client_only_joins_total",
                "Joins whose peer port was unreachable.",
                n(&c["client_only_joins"]),
            );
            m.counter(
                "crowds_blender_address_claims_refused_total",
                "Joins refused because the peer address did not prove the member's key.",
                n(&c["address_claims_refused"]),
            );
            m.counter(
                "crowds_blender_heartbeats_total",
                "Heartbeats received.",
                n(&c["heartbeats"]),
            );
            m.counter(
                "crowds_blender_password_checks_total",
                "Password checks run.",
                n(&c["password_checks"]),
            );
            m.counter(
                "crowds_blender_password_checks_refused_total",
                "Joins refused with 503 because every password-check worker and queue place was taken.",
                n(&c["password_checks_refused_busy"]),
            );
            m.counters_by(
                "crowds_blender_connections_refused_total",
                "API connections closed by a limit, by limit.",
                "limit",
                &[
                    ("per_address", n(&c["connections_refused_per_address"])),
                    ("strangers", n(&c["connections_refused_strangers"])),
                    ("handshake_cut_off", n(&c["handshakes_cut_off"])),
                    ("handshake_timeout", n(&c["handshakes_timed_out"])),
                    ("connection_timeout", n(&c["connections_timed_out"])),
                    ("body_timeout", n(&c["bodies_timed_out"])),
                ],
            );
            let l = &st["load"];
            m.gauge(
                "crowds_blender_password_checks_in_flight",
                "Password checks running or queued.",
                n(&l["password_checks_in_flight"]) as f64,
            );
            m.gauge(
                "crowds_blender_member_connections",
                "API connections counted as members'.",
                n(&l["member_connections"]) as f64,
            );
            m.gauge(
                "crowds_blender_stranger_connections",
                "API connections of strangers past their handshake.",
                n(&l["stranger_connections"]) as f64,
            );
            m.gauge(
                "crowds_blender_epoch",
                "Current epoch.",
                n(&st["epoch"]) as f64,
            );
            m.gauge(
                "crowds_blender_members",
                "Members in the current epoch.",
                n(&st["members"]) as f64,
            );
            m.gauge(
                "crowds_blender_pending_joins",
                "Joins waiting for the next epoch.",
                n(&st["pending_joins"]) as f64,
            );
            m.gauge(
                "crowds_blender_accounts",
                "Accounts in the store.",
                n(&st["accounts"]) as f64,
            );
            let mut resp = Response::new(body::full(m.finish()));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(crowds_net::metrics::CONTENT_TYPE),
            );
            resp
        }
        "/" => {
            let rows: String = st["member_list"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|m| {
                            format!(
                                "<tr><td>{}</td><td>{}</td><td>{}{}</td><td><code>{}…</code></td></tr>",
                                m["id"],
                                m["addr"].as_str().unwrap_or(""),
                                if m["client_only"].as_bool().unwrap_or(false) { "client-only" } else { "forwarder" },
                                // Missed the heartbeat timeout; kept for the grace period.
                                if m["silent"].as_bool().unwrap_or(false) { " · silent" } else { "" },
                                &m["key"].as_str().unwrap_or("")[..16.min(m["key"].as_str().unwrap_or("").len())],
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let html = format!(
                "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"5\">\
                 <title>crowds blender</title><style>{style}</style></head><body><h1>Blender</h1>\
                 <p><span class=\"big\" id=\"members\">{members}</span> members · epoch <b id=\"epoch\">{epoch}</b> · pf {pf} · \
                 {pending} joins pending · {silent} silent · {accounts} accounts</p>\
                 <h2>Crowds</h2><table><tr><th>crowd</th><th>pf</th><th>epoch</th><th>members</th><th>pending</th></tr>{crowd_rows}</table>\
                 <p>Store: {database}.</p>\
                 <h2>Members of the default crowd</h2><table><tr><th>id</th><th>peer address</th><th>role</th><th>key</th></tr>{rows}</table>\
                 <h2>Counters</h2><pre>{counters}</pre>\
                 <p><small>Accounts are managed on the command line (crowds account …). This page never shows passwords or member traffic. \
                 <a href=\"/status.json\">status.json</a> · <a href=\"/metrics\">metrics</a></small></p></body></html>",
                style = crowds_net::page::STYLE,
                members = st["members"],
                epoch = st["epoch"],
                pf = st["pf"],
                pending = st["pending_joins"],
                silent = st["silent_members"],
                accounts = st["accounts"],
                counters = serde_json::to_string_pretty(&st["counters"]).unwrap_or_default(),
                database = st["database"].as_str().unwrap_or(""),
                crowd_rows = st["crowds"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|c| {
                                format!(
                                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                                    c["name"].as_str().unwrap_or(""),
                                    c["pf"],
                                    c["epoch"],
                                    c["members"],
                                    c["pending_joins"]
                                )
                            })
                            .collect::<String>()
                    })
                    .unwrap_or_default(),
            );
            let mut resp = Response::new(body::full(html));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            resp
        }
        _ => body::text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TLS server proving `identity` on 127.0.0.1 (refusing every client key, as a
    /// jondo refuses keys it does not know: the proof comes before that).
    async fn tls_server(identity: &SecretKey) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let config = tls::server_config(identity, Arc::new(|_: &PublicKey| false)).expect("tls");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _ = acceptor.accept(stream).await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_peer_address_must_prove_the_joining_key() {
        let blender = SecretKey::generate().expect("key");
        let member = SecretKey::generate().expect("key");
        let other = SecretKey::generate().expect("key");
        let timeout = Duration::from_secs(3);
        let at_member = tls_server(&member).await;
        assert_eq!(
            check_peer(&blender, member.public(), at_member, timeout).await,
            PeerCheck::Proven
        );
        // Another member's address: it answers, with its own key.
        let at_other = tls_server(&other).await;
        let PeerCheck::OtherKey(why) =
            check_peer(&blender, member.public(), at_other, timeout).await
        else {
            panic!("another key must not prove the member's");
        };
        assert!(why.contains("did not prove"), "{why}");
        // Something that accepts connections but never speaks TLS.
        let mute = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let mute_addr = mute.local_addr().expect("addr");
        let PeerCheck::OtherKey(why) = check_peer(
            &blender,
            member.public(),
            mute_addr,
            Duration::from_millis(300),
        )
        .await
        else {
            panic!("no handshake is no proof");
        };
        assert!(why.contains("within"), "{why}");
        drop(mute);
        // Nothing listens: a firewalled (client-only) member, as before.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        assert_eq!(
            check_peer(&blender, member.public(), closed, timeout).await,
            PeerCheck::Unreachable
        );
    }
}
