//! The jondo daemon: a crowd member's proxy, relay and exit in one process.
//!
//! Owns the settings ([`JondoConfig`]) and the wiring ([`start`]): it binds the ports,
//! builds the relay engine ([`crate::node`]), logs in at the blender and starts the
//! loops. The jobs it wires live in submodules: `peer` (the peer server: TLS admits only
//! keys in the current document, links close when their key leaves it) and
//! `blender_sync` (joining, heartbeats, and keeping the crowd document fresh, refusing
//! one with pf <= 1/2 unless started with `--insecure-allow-low-pf`). The rules
//! themselves live in [`crowds_proto`] and the relay engine; this module is the thin
//! async shell around them. It never logs destinations or contents, nor other members'
//! ids above debug level (a log that names successors helps link paths).

mod blender_sync;
mod peer;

pub use peer::{MAX_PEER_CONNECTIONS, PEER_CONNECTIONS_PER_ADDRESS, PEER_HANDSHAKES};

use crate::blender_client::BlenderClient;
use crate::control;
use crate::exit::ExitConfig;
use crate::node::{Node, NodeSettings};
use crate::proxy;
use crate::socks;
use crowds_net::error::NodeError;
use crowds_net::files;
use crowds_net::net::{self, now_ms};
use crowds_net::safelog::Secret;
use crowds_net::tls;
use crowds_proto::headers::Hygiene;
use crowds_proto::identity::PublicKey;
use crowds_proto::policy::PortPolicy;
use crowds_proto::MemberId;
use http::Method;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

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
    /// Answer a client's `CONNECT` (or SOCKS request) at once and send its first bytes
    /// along with the tunnel request, saving one whole-path round trip per tunnel. A
    /// failure at the exit then reaches a TLS client as a TLS alert rather than an HTTP
    /// status. `false` waits for the exit's answer, as scripts that read the status do.
    pub optimistic_tunnels: bool,
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
            optimistic_tunnels: true,
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

    let exit = ExitConfig {
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
    };
    let node = Arc::new(Node::new(NodeSettings {
        identity: identity.clone(),
        blender_key: config.blender_key,
        exit,
        heartbeat_interval: config.heartbeat_interval,
        poll_interval: config.poll_interval,
        follow_blender_intervals: config.follow_blender_intervals,
        proxy_addr,
        hygiene: Hygiene {
            strip_cookies: !config.keep_cookies,
        },
        prefetch: !config.no_prefetch,
        strip_active_content: config.strip_active_content,
        optimistic_tunnels: config.optimistic_tunnels,
        insecure_allow_low_pf: config.insecure_allow_low_pf,
        started_at: now_ms(),
    }));

    let mut tasks = Vec::new();
    let shutdown_all = shutdown;
    let shutdown = serving.clone();
    // Peers: TLS admits only keys listed in the current crowd document.
    let policy = peer::key_policy(&node, config.blender_key);
    let acceptor = TlsAcceptor::from(Arc::new(tls::server_config(&identity, policy)?));
    tasks.push(peer::spawn_server(
        node.clone(),
        peer_listener,
        acceptor,
        config.peer_connections_per_address,
        config.peer_handshakes,
        shutdown.clone(),
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
    let joined =
        match blender_sync::join_with_retry(&blender, &config, advertise, &shutdown_all).await {
            Ok(j) => j,
            Err(e) => {
                serving.cancel();
                return Err(e);
            }
        };
    tracing::info!(member = joined.member_id, status = %joined.status, "logged in at the blender");
    if let Some(crowd) = &joined.crowd {
        node.set_crowd_name(crowd);
    }
    node.note_join(&joined, now_ms());
    if joined.client_only {
        blender_sync::warn_client_only(advertise);
    }
    tasks.push(tokio::spawn(blender_sync::poll_documents(
        node.clone(),
        blender.clone(),
        shutdown.clone(),
    )));
    tasks.push(tokio::spawn(blender_sync::heartbeat(
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
