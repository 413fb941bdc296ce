//! Origins for the whole-web suites: [`WebOrigin`], a recording site over HTTP and
//! HTTPS with test routes, and [`RawOrigin`], a raw TCP server that misbehaves on purpose.

use super::*;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::{header, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------------------------
// The web origin.

/// A request as the web origin saw it.
#[derive(Debug, Clone)]
pub struct Hit {
    /// The client address (the exit's peer address when it came through the crowd).
    pub ip: IpAddr,
    /// Over TLS?
    pub tls: bool,
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers (lower-case names).
    pub headers: Vec<(String, String)>,
}

impl Hit {
    /// The first value of header `name`, if any.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What an upload to `/upload` delivered: hash and length, or the error that cut it.
#[derive(Debug, Clone)]
pub struct Upload {
    /// Path and query.
    pub path: String,
    /// SHA-256 and length, or the body error.
    pub outcome: Result<(String, u64), String>,
}

#[derive(Default)]
struct WebState {
    hits: Mutex<Vec<Hit>>,
    uploads: Mutex<Vec<Upload>>,
}

/// The test site's page.
pub const SITE_HTML: &str = "<!doctype html>
<html><head><meta charset=\"utf-8\"><title>crowds test site</title>
<link rel=\"stylesheet\" href=\"style.css\">
</head><body>
<h1>A page with a style sheet, an image and a script</h1>
<img id=\"pic\" src=\"pixel.png\" width=\"64\" height=\"64\" alt=\"a gradient\">
<p id=\"out\">the script has not run</p>
<script src=\"app.js\"></script>
</body></html>
";

/// The test site's style sheet: its colour is what `app.js` checks.
pub const SITE_CSS: &str = "body { background: rgb(255, 204, 0); font-family: sans-serif; }
h1 { color: rgb(0, 0, 160); }
";

/// The test site's script: once everything loaded, it writes what it found.
pub const SITE_JS: &str = "document.getElementById('out').setAttribute('data-ran', 'yes');
window.addEventListener('load', function () {
  var img = document.getElementById('pic');
  var bg = getComputedStyle(document.body).backgroundColor;
  document.getElementById('out').textContent = 'script ran; image ' +
    (img.complete && img.naturalWidth === 48 ? 'loaded' : 'missing') + '; style ' +
    (bg === 'rgb(255, 204, 0)' ? 'applied' : 'missing (' + bg + ')');
});
";

/// What the script writes when the page, style sheet, image and script all loaded.
pub const SITE_RENDERED: &str = "script ran; image loaded; style applied";

/// The embedded objects of the site's page.
pub const SITE_OBJECTS: [&str; 3] = ["/site/style.css", "/site/pixel.png", "/site/app.js"];

type WebBody = BoxBody<Bytes, std::io::Error>;

/// A recording web origin on 127.0.0.1, over plain HTTP and (with a [`TestCa`]) HTTPS:
/// - `GET /site/` (`index.html`), `/site/style.css`, `/site/pixel.png` (48×48),
///   `/site/app.js`: the test site;
/// - `GET /blob/N`: N deterministic bytes with Content-Length; `/chunked/N`: chunked;
/// - `GET /slow/N`: the same bytes, 16 KiB every 20 ms (about 800 KiB/s);
/// - `GET /stall`: a 200 head announcing 1 MiB, then never a body byte;
/// - `POST|PUT /upload`: reads the body, answers `SHA256 LENGTH`;
/// - `GET /whoami`: the client address; anything else: `ok`.
pub struct WebOrigin {
    /// Plain HTTP address.
    pub http: SocketAddr,
    /// HTTPS address, if started with TLS.
    pub https: Option<SocketAddr>,
    state: Arc<WebState>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for WebOrigin {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn web_text(status: StatusCode, ctype: &'static str, body: impl Into<Bytes>) -> Response<WebBody> {
    let body: Bytes = body.into();
    let len = body.len();
    let mut resp = Response::new(full_body(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(ctype),
    );
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, header::HeaderValue::from(len));
    resp
}

/// A body that yields an inner body's frames no faster than one per `every`.
struct Paced {
    inner: PatternBody,
    every: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Body for Paced {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        use std::future::Future;
        if self.sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        let next = tokio::time::Instant::now() + self.every;
        self.sleep.as_mut().reset(next);
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A body that never yields anything (a stalled server).
struct Stalled;

impl Body for Stalled {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        Poll::Pending
    }
}

async fn web_handle(
    state: Arc<WebState>,
    peer: SocketAddr,
    tls: bool,
    req: Request<Incoming>,
) -> Response<WebBody> {
    let full_path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    state
        .hits
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Hit {
            ip: peer.ip(),
            tls,
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
        });
    let path = req.uri().path().to_string();
    let size = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|n| n.parse::<u64>().ok())
    };
    let sized = |body: WebBody, n: u64| {
        let mut resp = Response::new(body);
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, header::HeaderValue::from(n));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/octet-stream"),
        );
        resp
    };
    if let Some(n) = size("/blob/") {
        return sized(PatternBody::new(n, MAX_CHUNK, true).boxed(), n);
    }
    if let Some(n) = size("/chunked/") {
        return Response::new(PatternBody::new(n, 32 * 1024 + 7, false).boxed());
    }
    if let Some(n) = size("/slow/") {
        let body = Paced {
            inner: PatternBody::new(n, 16 * 1024, true),
            every: Duration::from_millis(20),
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
        };
        return sized(body.boxed(), n);
    }
    match path.as_str() {
        "/site/" | "/site/index.html" => {
            web_text(StatusCode::OK, "text/html; charset=utf-8", SITE_HTML)
        }
        "/site/style.css" => web_text(StatusCode::OK, "text/css", SITE_CSS),
        "/site/app.js" => web_text(StatusCode::OK, "text/javascript", SITE_JS),
        "/site/pixel.png" => web_text(StatusCode::OK, "image/png", png(48, 48)),
        "/whoami" => web_text(StatusCode::OK, "text/plain", format!("{}\n", peer.ip())),
        "/stall" => sized(Stalled.boxed(), 1024 * 1024),
        "/upload" => {
            let mut body = req.into_body();
            let mut h = Sha256::new();
            let mut len = 0u64;
            let mut error = None;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => {
                        if let Ok(d) = f.into_data() {
                            h.update(&d);
                            len += d.len() as u64;
                        }
                    }
                    Err(e) => {
                        error = Some(format!("body error after {len} bytes: {e}"));
                        break;
                    }
                }
            }
            let outcome = match error {
                Some(e) => Err(e),
                None => Ok((hex(&h.finalize()), len)),
            };
            state
                .uploads
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Upload {
                    path: full_path,
                    outcome: outcome.clone(),
                });
            match outcome {
                Ok((sha, len)) => web_text(StatusCode::OK, "text/plain", format!("{sha} {len}")),
                Err(e) => web_text(StatusCode::BAD_REQUEST, "text/plain", e),
            }
        }
        _ => web_text(StatusCode::OK, "text/plain", "ok\n"),
    }
}

async fn serve_web<S>(state: Arc<WebState>, peer: SocketAddr, tls: bool, stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let st = state.clone();
        async move { Ok::<_, Infallible>(web_handle(st, peer, tls, req).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

impl WebOrigin {
    /// Starts the origin on free ports of 127.0.0.1 (HTTPS too if `ca` is given).
    pub async fn start(ca: Option<&TestCa>) -> WebOrigin {
        let state: Arc<WebState> = Arc::default();
        let mut tasks = Vec::new();
        let plain = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind web origin");
        let http = plain.local_addr().expect("address");
        let st = state.clone();
        tasks.push(tokio::spawn(async move {
            while let Ok((stream, peer)) = plain.accept().await {
                tokio::spawn(serve_web(st.clone(), peer, false, stream));
            }
        }));
        let mut https = None;
        if let Some(ca) = ca {
            let secure = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .await
                .expect("bind web origin (TLS)");
            https = Some(secure.local_addr().expect("address"));
            let acceptor = tokio_rustls::TlsAcceptor::from(ca.server.clone());
            let st = state.clone();
            tasks.push(tokio::spawn(async move {
                while let Ok((stream, peer)) = secure.accept().await {
                    let acceptor = acceptor.clone();
                    let st = st.clone();
                    tokio::spawn(async move {
                        let handshake =
                            tokio::time::timeout(Duration::from_secs(30), acceptor.accept(stream))
                                .await;
                        if let Ok(Ok(tls)) = handshake {
                            serve_web(st, peer, true, tls).await;
                        }
                    });
                }
            }));
        }
        WebOrigin {
            http,
            https,
            state,
            tasks,
        }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// `https://localhost:PORT{path}` (the certificate names `localhost`).
    pub fn https_url(&self, path: &str) -> String {
        let a = self.https.expect("started with TLS");
        format!("https://localhost:{}{path}", a.port())
    }

    /// `https://127.0.0.1:PORT{path}` (the certificate also names the IP).
    pub fn https_ip_url(&self, path: &str) -> String {
        format!("https://{}{path}", self.https.expect("started with TLS"))
    }

    /// Every request so far.
    pub fn hits(&self) -> Vec<Hit> {
        self.state
            .hits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Requests for exactly this path and query.
    pub fn hits_for(&self, path: &str) -> Vec<Hit> {
        self.hits().into_iter().filter(|h| h.path == path).collect()
    }

    /// Uploads to this path and query, in order.
    pub fn uploads(&self, path: &str) -> Vec<Upload> {
        self.state
            .uploads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|u| u.path == path)
            .cloned()
            .collect()
    }
}

// ---------------------------------------------------------------------------------
// A raw origin that misbehaves on purpose.

/// A raw TCP origin on 127.0.0.1 that reads one request head, records the client
/// address and request line, then:
/// - `/cut/N`: a 200 head announcing N bytes, N/2 bytes, then an orderly close;
/// - `/reset/N`: the same, but a TCP reset instead of the close (the reset may
///   overtake the bytes before it, so the exit may not even see the head);
/// - `/headers-then-nothing`: a 200 head announcing 1 MiB, then silence, socket open;
/// - `/no-answer`: never a byte, socket open;
/// - anything else: closes the socket without answering.
pub struct RawOrigin {
    /// Its address.
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<(IpAddr, String)>>>,
    task: tokio::task::JoinHandle<()>,
    held: Arc<Mutex<Vec<TcpStream>>>,
}

impl Drop for RawOrigin {
    fn drop(&mut self) {
        self.task.abort();
        self.held.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

impl RawOrigin {
    /// Starts it.
    pub async fn start() -> RawOrigin {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind raw origin");
        let addr = l.local_addr().expect("address");
        let seen: Arc<Mutex<Vec<(IpAddr, String)>>> = Arc::default();
        let held: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (s, h) = (seen.clone(), held.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, peer)) = l.accept().await {
                tokio::spawn(raw_serve(stream, peer, s.clone(), h.clone()));
            }
        });
        RawOrigin {
            addr,
            seen,
            task,
            held,
        }
    }

    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// (client address, request line) of every request so far.
    pub fn seen(&self) -> Vec<(IpAddr, String)> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

async fn raw_serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    seen: Arc<Mutex<Vec<(IpAddr, String)>>>,
    held: Arc<Mutex<Vec<TcpStream>>>,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > 64 * 1024 {
            return;
        }
        match tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
            _ => return,
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let line = text.lines().next().unwrap_or_default().to_string();
    seen.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((peer.ip(), line.clone()));
    let path = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let cut = path
        .strip_prefix("/cut/")
        .map(|n| (n, false))
        .or_else(|| path.strip_prefix("/reset/").map(|n| (n, true)))
        .and_then(|(n, reset)| Some((n.split('?').next()?.parse::<u64>().ok()?, reset)));
    if let Some((n, reset)) = cut {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {n}\r\n\r\n"
        );
        if stream.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let mut body = PatternBody::new(n / 2, 16 * 1024, true);
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(d) = frame.into_data() {
                if stream.write_all(&d).await.is_err() {
                    return;
                }
            }
        }
        let _ = stream.flush().await;
        if reset {
            // A reset, not an orderly close.
            let _ = stream.set_zero_linger();
        } else {
            let _ = stream.shutdown().await;
        }
        drop(stream);
    } else if path.starts_with("/no-answer") {
        held.lock().unwrap_or_else(|p| p.into_inner()).push(stream);
    } else if path.starts_with("/headers-then-nothing") {
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 1048576\r\n\r\n";
        if stream.write_all(head.as_bytes()).await.is_ok() {
            held.lock().unwrap_or_else(|p| p.into_inner()).push(stream);
        }
    }
}
