//! The recording origin server on 127.0.0.1 ([`Origin`]) and helpers for uploads cut
//! in the middle.

use crate::*;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{header, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// ---------------------------------------------------------------------------------
// The origin server.

/// A request as the origin server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The client address the server saw.
    pub ip: IpAddr,
    /// The method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Every header (lower-case names), in order.
    pub headers: Vec<(String, String)>,
}

impl Seen {
    /// The values of header `name`.
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// How an `/echo-sha` upload ended: hash and length, or the error that cut it.
pub type EchoOutcome = Result<(String, u64), String>;

/// What the origin server remembers.
#[derive(Default)]
struct OriginState {
    /// Every request, in order of arrival.
    log: Mutex<Vec<Seen>>,
    /// For each `/echo-sha` request (path and query): the body's hash and length, or
    /// the error that ended it.
    echoes: Mutex<Vec<(String, EchoOutcome)>>,
    /// Bytes produced so far for `/slow-blob/N` responses.
    slow_produced: Arc<AtomicU64>,
}

/// A recording origin server on 127.0.0.1:
/// - `GET /blob/N`: N deterministic bytes, streamed in chunks, with Content-Length;
/// - `GET /chunked/N`: the same bytes with chunked transfer encoding;
/// - `GET /slow-blob/N`: like `/blob/N`, counting the bytes produced (backpressure);
/// - `GET /truncated/N`, `/truncated-chunked/N`: announce N bytes (or chunked), send
///   half, then fail (a server dying mid-body);
/// - `POST /echo-sha`: reads the body streaming, answers `HEX_SHA256 LENGTH`;
/// - `GET /whoami`: the client IP as text;
/// - `GET /spoof`: a 200 response carrying crowd-control and hop-by-hop headers;
/// - `GET /not-modified`: 304 with an ETag; `GET /no-content`: 204;
/// - `POST /hold`: never reads the body and never answers;
/// - anything else: `ok`.
pub struct Origin {
    /// Its address.
    pub addr: SocketAddr,
    state: Arc<OriginState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type RespBody = BoxBody<Bytes, std::io::Error>;

fn text_response(status: StatusCode, text: String) -> Response<RespBody> {
    let mut resp = Response::new(full_body(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    resp
}

fn sized(body: PatternBody, n: u64) -> Response<RespBody> {
    let mut resp = Response::new(body.boxed());
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, hyper::header::HeaderValue::from(n));
    resp
}

async fn origin_handle(
    state: Arc<OriginState>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<RespBody> {
    let full_path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let seen = Seen {
        ip: peer.ip(),
        method: req.method().to_string(),
        path: full_path.clone(),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
    };
    state
        .log
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(seen);
    let path = req.uri().path().to_string();
    let size = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|n| n.parse::<u64>().ok())
    };
    if let Some(n) = size("/blob/") {
        return sized(PatternBody::new(n, 48 * 1024 + 13, true), n);
    }
    if let Some(n) = size("/slow-blob/") {
        let body = PatternBody::new(n, 16 * 1024, true).counting(state.slow_produced.clone());
        return sized(body, n);
    }
    if let Some(n) = size("/chunked/") {
        return Response::new(PatternBody::new(n, 32 * 1024 + 7, false).boxed());
    }
    if let Some(n) = size("/truncated/") {
        return sized(PatternBody::new(n, 16 * 1024, true).failing_at(n / 2), n);
    }
    if let Some(n) = size("/truncated-chunked/") {
        let body = PatternBody::new(n, 16 * 1024, false).failing_at(n / 2);
        return Response::new(body.boxed());
    }
    match path.as_str() {
        "/whoami" => text_response(StatusCode::OK, format!("{}\n", peer.ip())),
        "/hold" => {
            // Never read the body, never answer (a stalled server).
            let _req = req;
            std::future::pending::<()>().await;
            text_response(StatusCode::OK, String::new())
        }
        "/echo-sha" => {
            let mut body = req.into_body();
            let mut hasher = Sha256::new();
            let mut len = 0u64;
            let mut outcome = None;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => {
                        if let Ok(data) = f.into_data() {
                            hasher.update(&data);
                            len += data.len() as u64;
                        }
                    }
                    Err(e) => {
                        outcome = Some(Err(format!("body error after {len} bytes: {e}")));
                        break;
                    }
                }
            }
            let outcome = outcome.unwrap_or_else(|| Ok((hex(&hasher.finalize()), len)));
            state
                .echoes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((full_path, outcome.clone()));
            match outcome {
                Ok((sha, len)) => text_response(StatusCode::OK, format!("{sha} {len}")),
                Err(e) => text_response(StatusCode::BAD_REQUEST, e),
            }
        }
        "/spoof" => {
            let mut resp = text_response(StatusCode::OK, "genuine origin page".into());
            let h = resp.headers_mut();
            h.insert("crowds-error", "path-broken".parse().expect("value"));
            h.insert("connection", "x-hop".parse().expect("value"));
            h.insert("x-hop", "1".parse().expect("value"));
            h.insert("x-kept", "yes".parse().expect("value"));
            h.insert(
                "set-cookie",
                "tracker=secret; Path=/".parse().expect("value"),
            );
            resp
        }
        "/not-modified" => {
            let mut resp = Response::new(empty_body());
            *resp.status_mut() = StatusCode::NOT_MODIFIED;
            resp.headers_mut()
                .insert(header::ETAG, "\"v1\"".parse().expect("value"));
            resp
        }
        "/no-content" => {
            let mut resp = Response::new(empty_body());
            *resp.status_mut() = StatusCode::NO_CONTENT;
            resp
        }
        _ => text_response(StatusCode::OK, "ok\n".into()),
    }
}

impl Origin {
    /// Starts an origin server on a free port of 127.0.0.1.
    pub async fn start() -> Origin {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind origin");
        let addr = listener.local_addr().expect("origin address");
        let state: Arc<OriginState> = Arc::default();
        let st = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                let st = st.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, Infallible>(origin_handle(st, peer, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Origin { addr, state, task }
    }

    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The requests seen for exactly this path (and query).
    pub fn seen_path(&self, path: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.path == path).collect()
    }

    /// How each `/echo-sha` request with this path and query ended, in order.
    pub fn echoes(&self, path: &str) -> Vec<EchoOutcome> {
        self.state
            .echoes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// Bytes of `/slow-blob/N` bodies produced so far.
    pub fn slow_produced(&self) -> u64 {
        self.state.slow_produced.load(Ordering::SeqCst)
    }
}

/// Starts `POST /echo-sha?ID` through `proxy` with `parts` pieces of 32 KiB of a body
/// that is announced longer (chunked, or a 10 MB Content-Length), and returns the open
/// connection once the origin is receiving it: the caller then cuts or corrupts it.
pub async fn start_partial_upload(
    proxy: SocketAddr,
    origin: &Origin,
    id: &str,
    chunked: bool,
    parts: usize,
) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let o = origin.addr;
    let framing = if chunked {
        "Transfer-Encoding: chunked"
    } else {
        "Content-Length: 10000000"
    };
    let mut tcp = tokio::net::TcpStream::connect(proxy)
        .await
        .expect("connect proxy");
    let head = format!("POST http://{o}/echo-sha?{id} HTTP/1.1\r\nHost: {o}\r\n{framing}\r\n\r\n");
    tcp.write_all(head.as_bytes()).await.expect("head");
    let part = vec![7u8; 32 * 1024];
    for _ in 0..parts {
        if chunked {
            tcp.write_all(format!("{:x}\r\n", part.len()).as_bytes())
                .await
                .expect("chunk size");
            tcp.write_all(&part).await.expect("chunk");
            tcp.write_all(b"\r\n").await.expect("chunk end");
        } else {
            tcp.write_all(&part).await.expect("part");
        }
    }
    let path = format!("/echo-sha?{id}");
    eventually(
        &format!("the origin to receive {path}"),
        Duration::from_secs(30),
        || {
            let n = origin.seen_path(&path).len();
            async move {
                if n > 0 {
                    Ok(())
                } else {
                    Err("not yet".to_string())
                }
            }
        },
    )
    .await;
    tcp
}

/// Waits until the origin has seen the upload `ID` of [`start_partial_upload`] end, and
/// asserts that it did not arrive as a complete body.
pub async fn assert_upload_cut(origin: &Origin, id: &str) {
    let path = format!("/echo-sha?{id}");
    let outcome = eventually(
        &format!("the origin to learn that {path} ended"),
        Duration::from_secs(30),
        || {
            let e = origin.echoes(&path);
            async move {
                e.first()
                    .cloned()
                    .ok_or_else(|| "body still open".to_string())
            }
        },
    )
    .await;
    assert!(
        outcome.is_err(),
        "{path}: a cut upload reached the server as complete: {outcome:?}"
    );
}
