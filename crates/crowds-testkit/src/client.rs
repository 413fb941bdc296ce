//! A small HTTP/1.1 client for the jondos' proxy and status ports, request bodies, and
//! deterministic streamed bodies whose SHA-256 the test knows in advance.

use crate::*;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::{header, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

/// A plain `GET path` to `addr` (origin form), bounded in time.
pub async fn direct_get(addr: SocketAddr, path: &str) -> Result<(StatusCode, Bytes), String> {
    let run = async {
        let mut client = HttpClient::connect(addr).await?;
        let req = Request::get(path)
            .header(header::HOST, addr.to_string())
            .body(empty_body())
            .map_err(|e| e.to_string())?;
        let resp = client.send(req).await?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .map_err(|_| format!("GET {path} at {addr} timed out"))?
}

/// The request body type of [`HttpClient`].
pub type ReqBody = BoxBody<Bytes, std::io::Error>;

/// An empty request body.
pub fn empty_body() -> ReqBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A request body holding `bytes`.
pub fn full_body(bytes: impl Into<Bytes>) -> ReqBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// One HTTP/1.1 client connection (to a jondo's proxy, or any server).
pub struct HttpClient {
    sender: hyper::client::conn::http1::SendRequest<ReqBody>,
    conn: tokio::task::JoinHandle<()>,
}

impl Drop for HttpClient {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

impl HttpClient {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> Result<HttpClient, String> {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| format!("handshake {addr}: {e}"))?;
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(HttpClient { sender, conn })
    }

    /// Sends a request on this connection; the response head must come within
    /// [`REQUEST_TIMEOUT`].
    pub async fn send(&mut self, req: Request<ReqBody>) -> Result<Response<Incoming>, String> {
        let run = async {
            self.sender.ready().await.map_err(|e| e.to_string())?;
            self.sender
                .send_request(req)
                .await
                .map_err(|e| e.to_string())
        };
        tokio::time::timeout(REQUEST_TIMEOUT, run)
            .await
            .map_err(|_| "no response in time".to_string())?
    }

    /// `GET url` (absolute form, as to a proxy) with extra headers; status, headers
    /// and the whole body.
    pub async fn get(
        &mut self,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<(StatusCode, hyper::HeaderMap, Bytes), String> {
        let uri: hyper::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
        let mut req = Request::get(uri.clone());
        if let Some(a) = uri.authority() {
            req = req.header(header::HOST, a.as_str());
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(empty_body()).map_err(|e| e.to_string())?;
        let resp = self.send(req).await?;
        let (parts, body) = resp.into_parts();
        let body = tokio::time::timeout(REQUEST_TIMEOUT, body.collect())
            .await
            .map_err(|_| "body timed out".to_string())?
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((parts.status, parts.headers, body))
    }

    /// `GET url` whose body must be text; panics on transport errors.
    pub async fn get_text(&mut self, url: &str) -> (StatusCode, String) {
        let (status, _, body) = self
            .get(url, &[])
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

/// Hashes a response body frame by frame (never holding it whole): SHA-256 and length.
pub async fn hash_body(mut body: Incoming, timeout: Duration) -> Result<(String, u64), String> {
    let run = async {
        let mut hasher = Sha256::new();
        let mut len = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("body error after {len} bytes: {e}"))?;
            if let Ok(data) = frame.into_data() {
                hasher.update(&data);
                len += data.len() as u64;
            }
        }
        Ok((hex(&hasher.finalize()), len))
    };
    tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| format!("body not complete within {timeout:?}"))?
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------
// Deterministic content.

/// The content repeats with this (prime) period, so chunk boundaries never line up.
const PERIOD: usize = 65_521;
/// Largest chunk a [`PatternBody`] yields.
pub const MAX_CHUNK: usize = 64 * 1024;

fn pattern() -> &'static [u8] {
    static P: OnceLock<Vec<u8>> = OnceLock::new();
    P.get_or_init(|| {
        (0..PERIOD + MAX_CHUNK)
            .map(|i| {
                let i = (i % PERIOD) as u64;
                (i.wrapping_mul(2_654_435_761) >> 11) as u8 ^ (i as u8)
            })
            .collect()
    })
}

fn pattern_slice(offset: u64, n: usize) -> &'static [u8] {
    let start = (offset % PERIOD as u64) as usize;
    &pattern()[start..start + n]
}

/// SHA-256 (hex) of the first `len` bytes of the deterministic content.
pub fn expected_sha(len: u64) -> String {
    let mut hasher = Sha256::new();
    let mut offset = 0u64;
    while offset < len {
        let n = (len - offset).min(MAX_CHUNK as u64) as usize;
        hasher.update(pattern_slice(offset, n));
        offset += n as u64;
    }
    hex(&hasher.finalize())
}

/// A streaming body of the first `len` bytes of the deterministic content, in chunks
/// of `chunk` bytes; with `exact` it announces its length (Content-Length), without
/// it the length is unknown (chunked transfer encoding).
pub struct PatternBody {
    offset: u64,
    len: u64,
    chunk: usize,
    exact: bool,
    fail_at: Option<u64>,
    produced: Option<Arc<AtomicU64>>,
}

impl PatternBody {
    /// See the type's documentation.
    pub fn new(len: u64, chunk: usize, exact: bool) -> Self {
        assert!(chunk > 0 && chunk <= MAX_CHUNK);
        Self {
            offset: 0,
            len,
            chunk,
            exact,
            fail_at: None,
            produced: None,
        }
    }

    /// Fails with an I/O error once `at` bytes were produced (a server or client that
    /// dies mid-body).
    pub fn failing_at(mut self, at: u64) -> Self {
        self.fail_at = Some(at);
        self
    }

    /// Counts the bytes produced in `counter`.
    pub fn counting(mut self, counter: Arc<AtomicU64>) -> Self {
        self.produced = Some(counter);
        self
    }
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.fail_at.is_some_and(|at| self.offset >= at) {
            return Poll::Ready(Some(Err(std::io::Error::other("the body dies here"))));
        }
        if self.offset >= self.len {
            return Poll::Ready(None);
        }
        let mut n = (self.len - self.offset).min(self.chunk as u64);
        if let Some(at) = self.fail_at {
            n = n.min(at - self.offset);
        }
        let n = n as usize;
        let data = Bytes::copy_from_slice(pattern_slice(self.offset, n));
        self.offset += n as u64;
        if let Some(c) = &self.produced {
            c.fetch_add(n as u64, Ordering::SeqCst);
        }
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.exact && self.offset >= self.len
    }

    fn size_hint(&self) -> SizeHint {
        if self.exact {
            SizeHint::with_exact(self.len - self.offset)
        } else {
            SizeHint::default()
        }
    }
}

/// The opening of a TLS handshake as a client sends it into a tunnel (a handshake record
/// holding an empty ClientHello): enough for a jondo to tell the client speaks TLS.
pub const TLS_OPENING: [u8; 9] = [0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x00, 0x00, 0x00];

/// Sends [`TLS_OPENING`] into a tunnel that was answered "connected" and returns all the
/// tunnel sends back until it closes (within `timeout`): a jondo whose tunnel then
/// failed answers a fatal TLS alert record `[21, 3, 3, 0, 2, 2, description]`.
pub async fn tls_opening_answer<S>(stream: &mut S, timeout: Duration) -> Result<Vec<u8>, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(&TLS_OPENING)
        .await
        .map_err(|e| format!("send the TLS opening: {e}"))?;
    let mut answer = Vec::new();
    match tokio::time::timeout(timeout, stream.read_to_end(&mut answer)).await {
        Err(_) => Err(format!("not closed within {timeout:?} (got {answer:?})")),
        // A reset after the alert still delivered the alert.
        Ok(_) => Ok(answer),
    }
}
