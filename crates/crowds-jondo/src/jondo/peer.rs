//! The peer server: connections from other members' jondos.
//!
//! Owns the peer port's admission (per-address caps, handshake eviction, the TLS key
//! policy that admits only keys in the current crowd document, and the blender's
//! address check) and the lifetime of each incoming link, which lasts only while the
//! crowd document vouches for its key. It hands each stream to the relay engine
//! ([`crate::node`]) and never routes itself; it never logs member ids above debug level.

use crate::node::Node;
use crowds_net::body;
use crowds_net::link;
use crowds_net::net::{self, now_ms};
use crowds_net::tls;
use crowds_proto::identity::PublicKey;
use crowds_proto::path::Predecessor;
use crowds_proto::relay;
use http::Request;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Most concurrent peer connections.
pub const MAX_PEER_CONNECTIONS: usize = 1024;
/// Default most connections to the peer port from one address
/// ([`super::JondoConfig::peer_connections_per_address`]). Members keep one link each
/// way; several members behind one NAT share an address, hence the room.
pub const PEER_CONNECTIONS_PER_ADDRESS: usize = 32;
/// Default most peer connections still in their TLS handshake
/// ([`super::JondoConfig::peer_handshakes`]).
pub const PEER_HANDSHAKES: usize = 128;

/// The TLS key policy of the peer port: keys listed in the current crowd document, and
/// the blender's. An unknown key asks for an early document fetch (rate-limited by the
/// node). It holds the node weakly: the policy must not keep a stopped jondo alive.
pub(super) fn key_policy(node: &Arc<Node>, blender_key: PublicKey) -> tls::KeyPolicy {
    let crowd = node.crowd_cell();
    let policy_node = Arc::downgrade(node);
    Arc::new(move |key: &PublicKey| {
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
            // Perhaps it joined in an epoch we have not fetched yet.
            if let Some(n) = policy_node.upgrade() {
                n.unknown_key_seen(now_ms());
            }
        }
        known
    })
}

/// Starts the peer port's accept loop: each connection within its address's share
/// (`per_address`) takes a handshake slot (of `handshakes`) and is served by
/// [`serve_peer`]; the others are closed at once.
pub(super) fn spawn_server(
    node: Arc<Node>,
    listener: tokio::net::TcpListener,
    acceptor: TlsAcceptor,
    per_address: usize,
    handshakes: usize,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let per_address = net::PerAddress::new(per_address);
    let handshakes = net::Handshakes::new(handshakes);
    net::spawn_accept_loop(
        listener,
        MAX_PEER_CONNECTIONS,
        shutdown,
        move |stream, from: SocketAddr| {
            let node = node.clone();
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
    )
}

/// Serves one peer connection: the TLS handshake (cut short if a newer one evicts it),
/// then HTTP/2 streams relayed from the member the key belongs to, for as long as the
/// crowd document vouches for that key.
pub(super) async fn serve_peer(
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
    let mut adopted = node.adoptions();
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
            let mut req = req.map(body::stream);
            // A tunnel arrives in its link form: it is a CONNECT again from here on.
            match relay::from_link_form(req.method(), req.uri()) {
                Some(Ok(uri)) => {
                    *req.method_mut() = http::Method::CONNECT;
                    *req.uri_mut() = uri;
                }
                Some(Err(_)) => {
                    return Ok(body::crowd_error(relay::ErrorKind::BadRequest));
                }
                None => {}
            }
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
