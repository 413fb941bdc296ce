//! A jondo's client for the blender API, over TLS with the blender's key pinned.
//!
//! Owns dialling the blender (failing over between replicated blenders: the first one
//! that answers is used until it stops answering), the join/heartbeat/leave/fetch calls
//! and their limits.
//! It does not judge documents (that is [`crowds_proto::view`]): it only fetches bytes.

use bytes::Bytes;
use crowds_net::body::{self, BoxError};
use crowds_net::error::NodeError;
use crowds_net::net::HANDSHAKE_TIMEOUT;
use crowds_net::tls;
use crowds_proto::api::{JoinRequest, JoinResponse};
use crowds_proto::document::MAX_DOCUMENT_BYTES;
use crowds_proto::identity::{PublicKey, SecretKey};
use http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Time allowed for one whole API call.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// What a call returned.
pub struct Reply {
    /// Status code.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body (at most a crowd document's size).
    pub body: Bytes,
}

/// The blender API client.
#[derive(Clone)]
pub struct BlenderClient {
    addrs: Arc<Vec<String>>,
    /// Index of the blender that answered last.
    current: Arc<std::sync::atomic::AtomicUsize>,
    connector: TlsConnector,
}

impl BlenderClient {
    /// A client for the blenders at `addrs` (`HOST:PORT`, replicas of one blender,
    /// tried in order) holding `blender_key`.
    pub fn new(
        addrs: Vec<String>,
        identity: &SecretKey,
        blender_key: PublicKey,
    ) -> Result<Self, NodeError> {
        if addrs.is_empty() {
            return Err(NodeError::Config("no blender address given".into()));
        }
        let config = tls::client_config(identity, blender_key)?;
        Ok(Self {
            addrs: Arc::new(addrs),
            current: Arc::default(),
            connector: TlsConnector::from(Arc::new(config)),
        })
    }

    /// Dials the blender that answered last, else the others in turn.
    async fn dial(&self) -> Result<tokio_rustls::client::TlsStream<TcpStream>, BoxError> {
        use std::sync::atomic::Ordering;
        let first = self.current.load(Ordering::Relaxed);
        let mut last: BoxError = "no blender address".into();
        for i in 0..self.addrs.len() {
            let index = (first + i) % self.addrs.len();
            match self.dial_one(&self.addrs[index]).await {
                Ok(s) => {
                    if index != first {
                        tracing::warn!(blender = index + 1, "failed over to another blender");
                        self.current.store(index, Ordering::Relaxed);
                    }
                    return Ok(s);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn dial_one(
        &self,
        addr: &str,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, BoxError> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(addr).await?.collect();
        let mut last: BoxError = "blender address resolves to nothing".into();
        for addr in addrs {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
                let tcp = TcpStream::connect(addr).await?;
                let _ = tcp.set_nodelay(true);
                self.connector.connect(tls::server_name(), tcp).await
            })
            .await
            {
                Ok(Ok(s)) => return Ok(s),
                Ok(Err(e)) => last = e.into(),
                Err(_) => last = "timed out connecting to the blender".into(),
            }
        }
        Err(last)
    }

    /// One API call.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        json: Option<Vec<u8>>,
        if_none_match: Option<&HeaderValue>,
    ) -> Result<Reply, NodeError> {
        self.call_with(method, path, json, if_none_match, None)
            .await
    }

    /// Fetches the crowd document: conditionally (`etag`), and as a delta from the
    /// document `have` (epoch, issue time) if the blender still knows it.
    pub async fn fetch_document(
        &self,
        etag: Option<&HeaderValue>,
        have: Option<(u64, u64)>,
    ) -> Result<Reply, NodeError> {
        let have = have.map(|(e, t)| {
            (
                crowds_proto::api::HAVE_HEADER,
                HeaderValue::from_str(&format!("{e}-{t}")).unwrap_or(HeaderValue::from_static("")),
            )
        });
        self.call_with(Method::GET, "/v1/crowd", None, etag, have)
            .await
    }

    async fn call_with(
        &self,
        method: Method,
        path: &str,
        json: Option<Vec<u8>>,
        if_none_match: Option<&HeaderValue>,
        extra: Option<(&'static str, HeaderValue)>,
    ) -> Result<Reply, NodeError> {
        let run = async {
            let stream = self.dial().await?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let mut req = Request::builder()
                .method(method)
                .uri(path)
                .header(header::HOST, "blender");
            if let Some(tag) = if_none_match {
                req = req.header(header::IF_NONE_MATCH, tag);
            }
            if let Some((name, value)) = extra {
                req = req.header(name, value);
            }
            let req = match json {
                Some(b) => req
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(body::full(b))?,
                None => req.body(body::empty())?,
            };
            let resp = sender.send_request(req).await?;
            let (parts, incoming) = resp.into_parts();
            let body = body::read_limited(incoming, MAX_DOCUMENT_BYTES + 1024).await?;
            Ok::<_, BoxError>(Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(CALL_TIMEOUT, run).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(NodeError::Blender(format!("cannot reach the blender: {e}"))),
            Err(_) => Err(NodeError::Blender(
                "the blender did not answer in time".into(),
            )),
        }
    }

    /// Logs in and registers this jondo's key and peer address.
    pub async fn join(
        &self,
        account: &str,
        password: &str,
        peer_addr: SocketAddr,
    ) -> Result<JoinResponse, NodeError> {
        let req = JoinRequest {
            account: account.to_string(),
            password: password.to_string(),
            peer_addr,
        };
        let body = serde_json::to_vec(&req).map_err(|e| NodeError::Blender(e.to_string()));
        // Our copy of the password is wiped at once; the request bytes are handed to
        // hyper, whose buffers we cannot wipe.
        let mut req = req;
        zeroize::Zeroize::zeroize(&mut req.password);
        let reply = self
            .call(Method::POST, "/v1/join", Some(body?), None)
            .await?;
        match reply.status {
            StatusCode::OK => serde_json::from_slice(&reply.body)
                .map_err(|_| NodeError::Blender("malformed join answer".into())),
            StatusCode::UNAUTHORIZED => Err(NodeError::LoginRefused),
            StatusCode::FORBIDDEN => Err(NodeError::JoinRefused(
                serde_json::from_slice::<serde_json::Value>(&reply.body)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_string))
                    .unwrap_or_else(|| "forbidden".to_string()),
            )),
            StatusCode::TOO_MANY_REQUESTS => {
                let ms = serde_json::from_slice::<serde_json::Value>(&reply.body)
                    .ok()
                    .and_then(|v| v["retry_after_ms"].as_u64())
                    .unwrap_or(60_000);
                Err(NodeError::JoinTooSoon(Duration::from_millis(ms)))
            }
            s => Err(NodeError::Blender(format!(
                "join refused ({s}): {}",
                String::from_utf8_lossy(&reply.body[..reply.body.len().min(200)])
            ))),
        }
    }
}
