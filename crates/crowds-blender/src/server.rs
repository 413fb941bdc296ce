//! Starting a blender: the signing key, the store connections, the crowds, the API's
//! accept loop with its budgets, the status port and the epoch ticker, all wired to one
//! shared [`State`]; and serving one API connection (TLS handshake, then one request).

use crate::admission::{admit, Admission, Gate, Known};
use crate::api::api;
use crate::config::{BlenderConfig, MEMBER_CONNECTIONS_PER_KEY, TICK, TICK_SHARED};
use crate::epochs::{advance, tick};
use crate::state::{Crowd, State, Stats};
use crate::status::control;
use crate::store::password::PasswordChecks;
use crate::store::{Store, DEFAULT_CROWD};
use crowds_net::error::NodeError;
use crowds_net::files::{self, BLENDER_PUB_FILE};
use crowds_net::net::{self, now_ms};
use crowds_net::tls;
use crowds_proto::identity::{PublicKey, SecretKey};
use crowds_proto::roster::RosterConfig;
use crowds_proto::throttle::{LoginThrottle, RateLimit};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

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
    // Every port is bound before the slow start-up work (loading the stored epochs), so
    // once the API accepts connections the control port does too.
    let control_listener = match config.control_listen {
        Some(listen) => Some(net::bind(listen, "the blender's control port").await?),
        None => None,
    };
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
            let admission = admit(&admit_state.gate, peer, member)?;
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
    if let Some(listener) = control_listener {
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
