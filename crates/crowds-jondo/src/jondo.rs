//! The jondo daemon: a crowd member's proxy, relay and exit in one process.
//!
//! Owns the wiring and the settings: it logs in at the blender, keeps the crowd document fresh (refusing
//! one with pf <= 1/2 unless started with `--insecure-allow-low-pf`, and acting on epoch
//! changes: new members re-form every path, departed members close links),
//! heartbeats, listens for peers (TLS admits only keys in the current document) and
//! hands each request to the relay engine ([`crate::node`]). The rules themselves live
//! in [`crowds_proto`]; this module is the thin async shell around them. It never logs destinations or contents, nor other
//! members' ids above debug level (a log that names successors helps link paths).

use crate::blender_client::BlenderClient;
use crate::control;
use crate::exit::ExitConfig;
use crate::node::{lock, AdoptError, CrowdCell, Node, Recent, Stats};
use crate::proxy;
use crate::socks;
use crowds_net::body::{self};
use crowds_net::error::NodeError;
use crowds_net::files;
use crowds_net::link::{self, Links};
use crowds_net::net::{self, now_ms};
use crowds_net::safelog::Secret;
use crowds_net::tls;
use crowds_proto::headers::Hygiene;
use crowds_proto::identity::PublicKey;
use crowds_proto::path::{PathTable, Predecessor};
use crowds_proto::policy::PortPolicy;
use crowds_proto::recent::RecentEvents;
use crowds_proto::view::CrowdView;
use crowds_proto::MemberId;
use http::{header, HeaderValue, Method, Request, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
) -> Result<crowds_proto::api::JoinResponse, NodeError> {
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
