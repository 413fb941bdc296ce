//! Links: authenticated, encrypted, multiplexed connections between jondos.
//!
//! Owns dialling members (TLS 1.3, the member's key pinned from the crowd document, our
//! identity key presented), HTTP/2 on top for multiplexing and flow control, and the
//! pool that keeps one connection per peer and direction for all paths. A link carries
//! relayed requests only from the dialling side to the listening side (HTTP/2 streams
//! are opened by the client), so two members relaying to each other hold one connection
//! each way. The listening side is in [`crate::jondo`]. Links know nothing of paths.

use crate::body::{Body, BoxError};
use crate::net::HANDSHAKE_TIMEOUT;
use crate::tls;
use crowds_proto::document::Member;
use crowds_proto::identity::{PublicKey, SecretKey};
use crowds_proto::MemberId;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// HTTP/2 flow-control window per stream: what one slow reader may have in flight.
pub const STREAM_WINDOW: u32 = 1024 * 1024;
/// HTTP/2 flow-control window per connection.
pub const CONNECTION_WINDOW: u32 = 8 * 1024 * 1024;
/// Most concurrent relayed requests on one link.
pub const MAX_STREAMS_PER_LINK: u32 = 1024;
/// Largest header block on a link.
pub const MAX_HEADER_LIST: u32 = 64 * 1024;
/// Interval of HTTP/2 pings that detect a dead peer.
pub const KEEPALIVE: Duration = Duration::from_secs(20);

/// Why a link could not carry a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// TCP connect or TLS handshake failed (the member is down or not who it claims).
    #[error("cannot connect to member {0}: {1}")]
    Connect(MemberId, BoxError),
    /// The HTTP/2 connection failed while sending.
    #[error("link to member {0} failed: {1}")]
    Http(MemberId, hyper::Error),
}

impl LinkError {
    /// Whether this is evidence that the member or the link to it failed, so the hop
    /// through it must be decided afresh: the connection or TLS handshake failed, or
    /// the connection broke (I/O error, GOAWAY, keep-alive timeout). A single stream
    /// that the member reset while the connection lives is not: it fails that request
    /// only. Otherwise a collaborating successor could re-form its predecessor's hop
    /// whenever it liked, and each re-formation of an initiator's first hop gives
    /// collaborators another look at the initiator (the predecessor attack).
    pub fn link_failed(&self) -> bool {
        match self {
            LinkError::Connect(..) => true,
            LinkError::Http(_, e) => !stream_reset_by_peer(e),
        }
    }
}

fn stream_reset_by_peer(e: &hyper::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            return h2.is_reset() && h2.is_remote();
        }
        source = err.source();
    }
    false
}

type Slot = Arc<tokio::sync::Mutex<Option<SendRequest<Body>>>>;

/// The pool of outgoing links.
pub struct Links {
    identity: Arc<SecretKey>,
    slots: Mutex<HashMap<(MemberId, PublicKey), Slot>>,
}

impl Links {
    /// A pool presenting `identity`.
    pub fn new(identity: Arc<SecretKey>) -> Self {
        Self {
            identity,
            slots: Mutex::new(HashMap::new()),
        }
    }

    fn slot(&self, member: &Member) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry((member.id, member.key)).or_default().clone()
    }

    /// Drops the connection to a member (it failed or left the crowd).
    pub fn forget(&self, id: MemberId) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.retain(|(m, _), _| *m != id);
    }

    /// Drops links to keys that are no longer the member's key in the current document
    /// (`current`: key -> member id), so nothing is relayed on a connection made with a
    /// key the crowd no longer vouches for.
    pub fn retain_keys(&self, current: &HashMap<PublicKey, MemberId>) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.retain(|(m, key), _| current.get(key) == Some(m));
    }

    /// Number of open outgoing links.
    pub fn open_links(&self) -> usize {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    async fn dial(&self, member: &Member) -> Result<SendRequest<Body>, BoxError> {
        let config = tls::client_config(&self.identity, member.key)?;
        let connector = TlsConnector::from(Arc::new(config));
        let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
            let tcp = TcpStream::connect(member.addr).await?;
            let _ = tcp.set_nodelay(true);
            connector.connect(tls::server_name(), tcp).await
        })
        .await
        .map_err(|_| "timed out")??;
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_header_list_size(MAX_HEADER_LIST)
            .keep_alive_interval(KEEPALIVE)
            .keep_alive_timeout(KEEPALIVE)
            .handshake(TokioIo::new(tls))
            .await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("link closed: {e}");
            }
        });
        Ok(sender)
    }

    /// Sends a relayed request to `member`, dialling if no live link exists. A `CONNECT`
    /// travels in its link form ([`crowds_proto::relay::link_form`]), so the tunnel's
    /// bytes ride in its request and response bodies.
    pub async fn send(
        &self,
        member: &Member,
        mut req: Request<Body>,
    ) -> Result<Response<Incoming>, LinkError> {
        if let Some((method, uri)) = crowds_proto::relay::link_form(req.method(), req.uri()) {
            *req.method_mut() = method;
            *req.uri_mut() = uri;
        }
        let slot = self.slot(member);
        let mut sender = {
            let mut guard = slot.lock().await;
            match guard.as_ref() {
                Some(s) if !s.is_closed() => s.clone(),
                _ => {
                    let s = self
                        .dial(member)
                        .await
                        .map_err(|e| LinkError::Connect(member.id, e))?;
                    *guard = Some(s.clone());
                    s
                }
            }
        };
        sender
            .ready()
            .await
            .map_err(|e| LinkError::Http(member.id, e))?;
        sender
            .send_request(req)
            .await
            .map_err(|e| LinkError::Http(member.id, e))
    }
}
