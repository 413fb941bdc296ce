//! The blender daemon: accounts, admission, and the signed crowd document.
//!
//! Owns the blender's HTTPS API (TLS 1.3 with its Ed25519 key as a raw public key,
//! pinned by jondos; every client proves an Ed25519 identity key in the handshake), the
//! epoch ticker that applies [`crowds_proto::roster`] rules, signing, and persistence of
//! each epoch in the [`crate::store`]. It never sees member traffic.
//!
//! API (all JSON except the document):
//! - `POST /v1/join` `{"account", "password", "peer_addr"}`: registers the TLS client key
//!   as the account's member key; admitted at the next epoch.
//! - `POST /v1/heartbeat`, `POST /v1/leave`: identified by the TLS client key.
//! - `GET /v1/crowd`: the signed crowd document (`ETag`, `If-None-Match` -> 304).

use crate::body::{self, Body};
use crate::error::NodeError;
use crate::files::{self, BLENDER_PUB_FILE};
use crate::net::{self, now_ms};
use crate::safelog::Sensitive;
use crate::store::Store;
use crate::tls;
use crowds_proto::document::{Member, FLAG_CLIENT_ONLY};
use crowds_proto::identity::{PublicKey, SecretKey};
use crowds_proto::roster::{JoinOutcome, Roster, RosterConfig};
use crowds_proto::throttle::{LoginThrottle, RateLimit};
use crowds_proto::MemberId;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Most concurrent API connections.
pub const MAX_API_CONNECTIONS: usize = 512;
/// Largest JSON request body.
pub const MAX_API_BODY: usize = crowds_proto::api::MAX_API_BODY;
/// Join requests accepted per source address per minute, by default.
pub const DEFAULT_MAX_JOINS_PER_MINUTE: u32 = 60;
/// How often the epoch ticker looks at the roster.
const TICK: Duration = Duration::from_millis(100);

/// Settings of a blender.
#[derive(Debug, Clone)]
pub struct BlenderConfig {
    /// Holds the signing key, `blender.pub` and the database.
    pub data_dir: PathBuf,
    /// Where the API listens.
    pub listen: SocketAddr,
    /// The crowd's forward probability.
    pub forward_probability: f64,
    /// At most one epoch per this interval.
    pub join_interval: Duration,
    /// Members silent this long are dropped.
    pub heartbeat_timeout: Duration,
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
}

impl BlenderConfig {
    /// Defaults for everything but the directory and address.
    pub fn new(data_dir: PathBuf, listen: SocketAddr) -> Self {
        Self {
            data_dir,
            listen,
            forward_probability: 0.75,
            join_interval: Duration::from_secs(30),
            heartbeat_timeout: Duration::from_secs(30),
            document_lifetime: Duration::from_secs(600),
            rejoin_interval: Duration::from_secs(300),
            connect_back_timeout: Duration::from_secs(3),
            control_listen: None,
            max_joins_per_minute: DEFAULT_MAX_JOINS_PER_MINUTE,
        }
    }
}

pub use crowds_proto::api::{JoinRequest, JoinResponse};

struct Published {
    bytes: Arc<Vec<u8>>,
    etag: String,
    issued_at: u64,
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
    stats: Stats,
    started_at: u64,
    key: SecretKey,
    connect_back_timeout: Duration,
    roster: Mutex<Roster>,
    store: Arc<Mutex<Store>>,
    published: RwLock<Option<Published>>,
    /// Member keys registered (pending or admitted), to identify heartbeats.
    keys: Mutex<std::collections::HashMap<PublicKey, MemberId>>,
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
    let store = Store::open(&config.data_dir)?;
    let (epoch, members) = store.load_epoch()?;
    let now = now_ms();
    let roster_config = RosterConfig {
        crowd: "default".into(),
        forward_probability: config.forward_probability,
        join_interval_ms: config.join_interval.as_millis() as u64,
        heartbeat_timeout_ms: config.heartbeat_timeout.as_millis() as u64,
        document_lifetime_ms: config.document_lifetime.as_millis() as u64,
        rejoin_interval_ms: config.rejoin_interval.as_millis() as u64,
    };
    let keys = members.iter().map(|m| (m.key, m.id)).collect();
    let restored = epoch > 0;
    // A restarted blender publishes a fresh epoch with the stored members at once, so
    // a changed pf reaches everyone and no epoch number is ever reused.
    let roster = Roster::resume(roster_config, epoch + u64::from(restored), members, now);
    let listener = net::bind(config.listen, "the blender API").await?;
    let addr = listener
        .local_addr()
        .map_err(|e| NodeError::io("listener address", e))?;
    let state = Arc::new(State {
        logins: Mutex::new(LoginThrottle::new()),
        join_rate: Mutex::new(RateLimit::new(
            config.max_joins_per_minute,
            config.max_joins_per_minute.clamp(1, 20),
        )),
        stats: Stats::default(),
        started_at: now,
        key,
        connect_back_timeout: config.connect_back_timeout,
        roster: Mutex::new(roster),
        store: Arc::new(Mutex::new(store)),
        published: RwLock::new(None),
        keys: Mutex::new(keys),
    });
    if restored {
        let doc = lock(&state.roster).document(now);
        publish(&state, doc).await?;
    }
    let server_tls = tls::server_config(&state.key, Arc::new(|_: &PublicKey| true))?;
    let acceptor = TlsAcceptor::from(Arc::new(server_tls));
    let public_key = state.key.public();
    let api_state = state.clone();
    let api = net::spawn_accept_loop(
        listener,
        MAX_API_CONNECTIONS,
        shutdown.clone(),
        move |stream, peer: SocketAddr| {
            let state = api_state.clone();
            let acceptor = acceptor.clone();
            async move {
                let Ok(Ok(tls)) =
                    tokio::time::timeout(net::HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                else {
                    return;
                };
                let Some(client) = tls::peer_key(tls.get_ref().1) else {
                    return;
                };
                let service = service_fn(move |req| {
                    let state = state.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(api(state, client, peer.ip(), req).await)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .max_buf_size(64 * 1024)
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            }
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
    tasks.push(tokio::spawn(tick(state, shutdown)));
    tracing::info!(%addr, key = %public_key, "blender listening");
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

async fn tick(state: Arc<State>, shutdown: CancellationToken) {
    let mut interval = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        let now = now_ms();
        let next = lock(&state.roster).poll_epoch(now);
        let refresh = {
            let published = state.published.read().unwrap_or_else(|p| p.into_inner());
            let lifetime = lock(&state.roster).config().document_lifetime_ms;
            published
                .as_ref()
                .is_some_and(|p| now.saturating_sub(p.issued_at) > lifetime / 2)
        };
        let doc = match next {
            Some(doc) => {
                tracing::info!(epoch = doc.epoch, members = doc.members.len(), "new epoch");
                state.stats.epochs.fetch_add(1, Ordering::Relaxed);
                Some(doc)
            }
            None if refresh => Some(lock(&state.roster).document(now)),
            None => None,
        };
        if let Some(doc) = doc {
            if let Err(e) = publish(&state, doc).await {
                tracing::error!("cannot publish the crowd document: {e}");
            }
        }
    }
}

async fn publish(
    state: &Arc<State>,
    doc: crowds_proto::document::CrowdDocument,
) -> Result<(), NodeError> {
    let bytes = doc
        .sign(&state.key)
        .map_err(|e| NodeError::Blender(e.to_string()))?;
    let store = state.store.clone();
    let (epoch, members) = (doc.epoch, doc.members.clone());
    tokio::task::spawn_blocking(move || lock(&store).save_epoch(epoch, &members))
        .await
        .map_err(|e| NodeError::Blender(e.to_string()))??;
    let published = Published {
        bytes: Arc::new(bytes),
        etag: format!("\"{}-{}\"", doc.epoch, doc.issued_at),
        issued_at: doc.issued_at,
    };
    *state.published.write().unwrap_or_else(|p| p.into_inner()) = Some(published);
    Ok(())
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
    match (req.method().clone(), req.uri().path()) {
        (Method::GET, "/v1/crowd") => crowd(&state, &req),
        (Method::POST, "/v1/join") => join(state, client, source, req).await,
        (Method::POST, "/v1/heartbeat") => {
            let id = lock(&state.keys).get(&client).copied();
            match id {
                Some(id) if lock(&state.roster).handle_heartbeat(id, now_ms()) => {
                    state.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
                    body::text(StatusCode::NO_CONTENT, "")
                }
                _ => error(StatusCode::FORBIDDEN, "not a member: join again"),
            }
        }
        (Method::POST, "/v1/leave") => {
            if let Some(id) = lock(&state.keys).get(&client).copied() {
                lock(&state.roster).handle_leave(id);
            }
            body::text(StatusCode::NO_CONTENT, "")
        }
        _ => error(StatusCode::NOT_FOUND, "no such endpoint"),
    }
}

fn crowd(state: &State, req: &Request<Incoming>) -> Response<Body> {
    let published = state.published.read().unwrap_or_else(|p| p.into_inner());
    let Some(p) = published.as_ref() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "no epoch published yet");
    };
    let etag = HeaderValue::from_str(&p.etag).unwrap_or(HeaderValue::from_static("\"0\""));
    if req.headers().get(header::IF_NONE_MATCH) == Some(&etag) {
        let mut resp = body::text(StatusCode::NOT_MODIFIED, "");
        resp.headers_mut().insert(header::ETAG, etag);
        return resp;
    }
    let mut resp = Response::new(body::full(p.bytes.as_ref().clone()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-crowds-document"),
    );
    resp.headers_mut().insert(header::ETAG, etag);
    resp
}

fn too_many(message: &str, retry_after_ms: u64) -> Response<Body> {
    let mut resp = body::json(
        StatusCode::TOO_MANY_REQUESTS,
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
    if let Err(wait) = lock(&state.join_rate).take(source, now) {
        return too_many("too many join requests from this address; slow down", wait);
    }
    let Ok(bytes) = body::read_limited(req.into_body(), MAX_API_BODY).await else {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
    };
    let join = match crowds_proto::api::parse_join(&bytes) {
        Ok(join) => join,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    // Password guessing is slowed per account and per source address.
    {
        let throttle = lock(&state.logins);
        let waits = [
            throttle.check(&ThrottleKey::Account(join.account.clone()), now),
            throttle.check(&ThrottleKey::Source(source), now),
        ];
        if let Some(wait) = waits.into_iter().filter_map(Result::err).max() {
            return too_many("too many failed logins; wait before trying again", wait);
        }
    }
    let store = state.store.clone();
    let account = join.account.clone();
    let password = zeroize::Zeroizing::new(join.password);
    let verified =
        tokio::task::spawn_blocking(move || lock(&store).verify_login(&account, &password)).await;
    let id = match verified {
        Ok(Ok(Some(id))) => {
            let mut throttle = lock(&state.logins);
            throttle.record_success(&ThrottleKey::Account(join.account.clone()));
            throttle.record_success(&ThrottleKey::Source(source));
            id
        }
        Ok(Ok(None)) => {
            state.stats.logins_refused.fetch_add(1, Ordering::Relaxed);
            let delay = {
                let mut throttle = lock(&state.logins);
                let a = throttle.record_failure(ThrottleKey::Account(join.account.clone()), now);
                let b = throttle.record_failure(ThrottleKey::Source(source), now);
                a.max(b)
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
    // The article's firewalled members: if we cannot reach the peer port, the member
    // may still initiate paths but is never chosen as a forwarder.
    let reachable = matches!(
        tokio::time::timeout(
            state.connect_back_timeout,
            tokio::net::TcpStream::connect(join.peer_addr)
        )
        .await,
        Ok(Ok(_))
    );
    let member = Member {
        id,
        addr: join.peer_addr,
        key: client,
        flags: if reachable { 0 } else { FLAG_CLIENT_ONLY },
    };
    {
        let mut keys = lock(&state.keys);
        keys.retain(|_, v| *v != id);
        keys.insert(client, id);
    }
    let outcome = lock(&state.roster).handle_join(member, now_ms());
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
            let mut resp = body::json(
                StatusCode::TOO_MANY_REQUESTS,
                &serde_json::json!({
                    "error": "this account joined too recently; the crowd limits how often an account may join",
                    "retry_after_ms": retry_after_ms,
                }),
            );
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_ms.div_ceil(1000)),
            );
            return resp;
        }
    };
    tracing::info!(member = id, status, client_only = !reachable, "join");
    body::json(
        StatusCode::OK,
        &serde_json::json!({ "member_id": id, "status": status, "client_only": !reachable }),
    )
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
    let store = state.store.clone();
    let accounts =
        tokio::task::spawn_blocking(move || lock(&store).list_accounts().map(|a| a.len()))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(0);
    let now = now_ms();
    let roster = lock(&state.roster);
    let members: Vec<serde_json::Value> = roster
        .members()
        .map(|m| {
            serde_json::json!({
                "id": m.id,
                "addr": m.addr.to_string(),
                "client_only": !m.forwards(),
                "key": m.key.to_hex(),
            })
        })
        .collect();
    let s = &state.stats;
    serde_json::json!({
        "epoch": roster.epoch(),
        "members": members.len(),
        "pending_joins": roster.pending_count(),
        "next_epoch_in_ms": roster.next_epoch_at(now).map(|t| t.saturating_sub(now)),
        "accounts": accounts,
        "pf": roster.config().forward_probability,
        "join_interval_ms": roster.config().join_interval_ms,
        "uptime_s": now.saturating_sub(state.started_at) / 1000,
        "member_list": members,
        "counters": {
            "epochs": s.epochs.load(Ordering::Relaxed),
            "joins_pending": s.joins_pending.load(Ordering::Relaxed),
            "joins_member": s.joins_member.load(Ordering::Relaxed),
            "joins_too_soon": s.joins_too_soon.load(Ordering::Relaxed),
            "client_only_joins": s.client_only_joins.load(Ordering::Relaxed),
            "logins_refused": s.logins_refused.load(Ordering::Relaxed),
            "heartbeats": s.heartbeats.load(Ordering::Relaxed),
        },
    })
}

async fn control_page(state: &Arc<State>, req: &Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET {
        return body::text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    let st = blender_status(state).await;
    match req.uri().path() {
        "/status.json" => body::json(StatusCode::OK, &st),
        "/metrics" => {
            let c = &st["counters"];
            let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
            let mut m = crate::metrics::Metrics::new();
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
                "crowds_blender_heartbeats_total",
                "Heartbeats received.",
                n(&c["heartbeats"]),
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
                HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
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
                                "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}…</code></td></tr>",
                                m["id"],
                                m["addr"].as_str().unwrap_or(""),
                                if m["client_only"].as_bool().unwrap_or(false) { "client-only" } else { "forwarder" },
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
                 {pending} joins pending · {accounts} accounts</p>\
                 <h2>Members</h2><table><tr><th>id</th><th>peer address</th><th>role</th><th>key</th></tr>{rows}</table>\
                 <h2>Counters</h2><pre>{counters}</pre>\
                 <p><small>Accounts are managed on the command line (crowds account …). This page never shows passwords or member traffic. \
                 <a href=\"/status.json\">status.json</a> · <a href=\"/metrics\">metrics</a></small></p></body></html>",
                style = crate::control::STYLE,
                members = st["members"],
                epoch = st["epoch"],
                pf = st["pf"],
                pending = st["pending_joins"],
                accounts = st["accounts"],
                counters = serde_json::to_string_pretty(&st["counters"]).unwrap_or_default(),
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
