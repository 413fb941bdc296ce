//! A small local website for the demo: pages, an image, and deterministic blobs.
//!
//! Owns the sample origin server of `crowds demo`. Each page shows which address the
//! server saw (the exit jondo, never the user); `/blob/N` streams N deterministic bytes
//! without holding them in memory, for transfer checks. Listens on loopback only.

use bytes::Bytes;
use crowds_net::body::{self, Body, BoxError};
use futures_util::stream;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::StreamBody;
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Largest blob served.
pub const MAX_BLOB: u64 = 64 * 1024 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;

/// Blobs repeat with this (prime) period, so chunks never line up with it.
const PERIOD: u64 = 65_521;

/// The byte at `offset` of every blob: a fixed pattern anyone can recompute.
pub fn blob_byte(offset: u64) -> u8 {
    ((offset % PERIOD).wrapping_mul(2_654_435_761) >> 13) as u8
}

fn pattern() -> &'static [u8] {
    static PATTERN: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    PATTERN.get_or_init(|| (0..PERIOD + CHUNK as u64).map(blob_byte).collect())
}

/// Who the site saw, in order (the server's view of the crowd).
pub type VisitLog = Arc<Mutex<Vec<SocketAddr>>>;

/// A running sample site.
pub struct Site {
    /// Its address.
    pub addr: SocketAddr,
    /// Every visitor's address, in order.
    pub visits: VisitLog,
}

/// Starts the sample site on `listen` (use port 0 for any).
pub async fn start(
    listen: SocketAddr,
    shutdown: CancellationToken,
) -> Result<Site, crowds_net::NodeError> {
    let listener = crowds_net::net::bind(listen, "the sample site").await?;
    let addr = listener
        .local_addr()
        .map_err(|e| crowds_net::NodeError::io("listener address", e))?;
    let visits: VisitLog = Arc::default();
    let log = visits.clone();
    crowds_net::net::spawn_accept_loop(listener, 256, shutdown, move |stream, peer| {
        let log = log.clone();
        async move {
            let service = service_fn(move |req| {
                let log = log.clone();
                async move { Ok::<_, std::convert::Infallible>(page(&log, peer, req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
    });
    Ok(Site { addr, visits })
}

fn html(title: &str, content: &str) -> Response<Body> {
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title>\
         <link rel=\"icon\" href=\"/crowd.svg\"></head>\
         <body style=\"font-family:sans-serif;max-width:42em;margin:2em auto\">{content}</body></html>"
    );
    let mut resp = Response::new(body::full(page));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp
}

fn page(log: &VisitLog, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    log.lock().unwrap_or_else(|p| p.into_inner()).push(peer);
    let ip = peer.ip();
    let path = req.uri().path();
    match path {
        "/" => html(
            "Crowds sample site",
            &format!(
                "<h1>Hello from the sample site</h1>\
                 <p><img src=\"/crowd.svg\" width=\"96\" alt=\"a crowd\"></p>\
                 <p>This server saw your request come from <b>{ip}</b>: a random member of the crowd, not you.</p>\
                 <p>Reload the page: the address stays the same, because your path through the crowd is static \
                 until new members join.</p>\
                 <ul><li><a href=\"/headers\">the request headers this server received</a></li>\
                 <li><a href=\"/whoami\">/whoami</a> (plain text)</li>\
                 <li><a href=\"/blob/1048576\">a 1 MiB download</a></li></ul>"
            ),
        ),
        "/whoami" => body::text(StatusCode::OK, format!("{ip}\n")),
        "/headers" => {
            let mut rows = String::new();
            for (k, v) in req.headers() {
                let v = v.to_str().unwrap_or("(binary)");
                rows.push_str(&format!("<tr><td>{}</td><td>{}</td></tr>", escape(k.as_str()), escape(v)));
            }
            html("Headers", &format!("<h1>Headers the server received</h1><table>{rows}</table>"))
        }
        "/crowd.svg" => {
            let mut svg = String::from("<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 96 64\">");
            for i in 0..12 {
                let (x, y) = (10 + (i % 6) * 15, 18 + (i / 6) * 28);
                svg.push_str(&format!("<circle cx=\"{x}\" cy=\"{y}\" r=\"6\" fill=\"#36c\"/><rect x=\"{}\" y=\"{}\" width=\"10\" height=\"12\" rx=\"3\" fill=\"#36c\"/>", x - 5, y + 7));
            }
            svg.push_str("</svg>");
            let mut resp = Response::new(body::full(svg));
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("image/svg+xml"));
            resp
        }
        p if p.starts_with("/blob/") => match p["/blob/".len()..].parse::<u64>() {
            Ok(n) if n <= MAX_BLOB => blob(n),
            _ => body::text(StatusCode::BAD_REQUEST, "blob size must be a number of bytes\n"),
        },
        _ => body::text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn blob(len: u64) -> Response<Body> {
    let chunks = stream::unfold(0u64, move |offset| async move {
        if offset >= len {
            return None;
        }
        let n = (len - offset).min(CHUNK as u64);
        let start = (offset % PERIOD) as usize;
        let data = Bytes::copy_from_slice(&pattern()[start..start + n as usize]);
        Some((Ok::<_, BoxError>(Frame::data(data)), offset + n))
    });
    let mut resp = Response::new(body::stream(StreamBody::new(chunks)));
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    resp
}
