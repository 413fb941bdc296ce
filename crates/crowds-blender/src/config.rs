//! The blender's settings and their defaults: [`BlenderConfig`] and the API's limits
//! against hostile load ([`ApiLimits`]). Plain data: nothing here opens, binds or
//! reads the clock.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
pub(crate) const BUSY_RETRY_AFTER_MS: u64 = 1_000;
/// Most API connections of one member key at once. A jondo makes one request per
/// connection and rarely more than two at a time (heartbeat, document poll).
pub const MEMBER_CONNECTIONS_PER_KEY: usize = 8;
/// Largest JSON request body.
pub const MAX_API_BODY: usize = crowds_proto::api::MAX_API_BODY;
/// Join requests accepted per source address per minute, by default.
pub const DEFAULT_MAX_JOINS_PER_MINUTE: u32 = 60;
/// One day: the default join interval and grace period.
pub(crate) const DAY: Duration = Duration::from_secs(86_400);
/// How often the epoch ticker looks at the store.
pub(crate) const TICK: Duration = Duration::from_millis(100);
/// How often it looks when the store is PostgreSQL shared with other blenders.
pub(crate) const TICK_SHARED: Duration = Duration::from_millis(250);

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
