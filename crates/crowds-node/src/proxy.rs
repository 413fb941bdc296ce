//! The local HTTP proxy: where the user's browser hands requests to the jondo.
//!
//! Owns the client side of HTTP/1.x (keep-alive, pipelining, streaming bodies both
//! ways, header size limits, slow-client timeouts via hyper), the check that a request
//! is an absolute-form `http://` request, header hygiene before the request enters the
//! crowd, and turning crowd errors into pages the user can read. It listens on loopback
//! by default and never logs what the user asks for.

use crate::body::{self, Body};
use crate::jondo::Node;
use crate::prefetch;
use crowds_proto::headers;
use crowds_proto::relay::{self, ErrorKind, TargetError};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::sync::Arc;
use std::time::Duration;

/// Largest request head (request line plus headers) a client may send.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Time a client has to send a complete request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Most concurrent client connections.
pub const MAX_CLIENT_CONNECTIONS: usize = 1024;

/// Serves one client connection (a TCP stream, or an in-memory pipe for SOCKS).
pub async fn serve<I>(node: Arc<Node>, stream: I)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let node = node.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(node, req).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_header_size(MAX_HEAD_BYTES)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await;
}

fn page(status: StatusCode, title: &str, text: &str) -> Response<Body> {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body style=\"font-family:sans-serif;max-width:40em;margin:3em auto\">\
         <h1>{title}</h1><p>{text}</p><p><small>crowds jondo</small></p></body></html>"
    );
    let mut resp = Response::new(body::full(html));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp
}

async fn handle(node: Arc<Node>, req: Request<Incoming>) -> Response<Body> {
    if let Err(e) = relay::request_target(req.method(), req.uri()) {
        let text = match e {
            TargetError::NotAbsoluteHttp => "This is a Crowds proxy. Configure your browser or client to use it as its HTTP proxy; requests must be in absolute form (http://host/path).".to_string(),
            other => other.to_string(),
        };
        return page(StatusCode::BAD_REQUEST, "Bad request", &text);
    }
    let is_connect = req.method() == Method::CONNECT;
    if req.method() == Method::GET && http_body::Body::is_end_stream(req.body()) {
        // The timing defence: an object an exit already sent us with its page is
        // answered here; the request never enters the crowd.
        if let Some(url) = prefetch::normalize(&req.uri().to_string()) {
            if let Some(resp) = node.objects.take(&url).await {
                node.stats
                    .served_from_bundles
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return resp;
            }
        }
    }
    let (mut parts, incoming) = req.into_parts();
    headers::sanitize_request(&mut parts.headers, node.hygiene);
    let mut req = if is_connect {
        // The client's bytes follow the 200, on the upgraded connection.
        Request::from_parts(parts, body::empty())
    } else {
        Request::from_parts(parts, body::stream(incoming))
    };
    if node.prefetch {
        prefetch::mark_navigation(&mut req);
    }
    let objects = node.objects.clone();
    let hygiene = node.hygiene;
    let strip_active = node.strip_active_content;
    let counter = node.clone();
    let mut resp = prefetch::unbundle(node.initiate(req).await, objects);
    if let Some(kind) = relay::error_kind(resp.headers()) {
        let status = StatusCode::from_u16(kind.status()).unwrap_or(StatusCode::BAD_GATEWAY);
        let title = match kind {
            ErrorKind::ExitPolicy => "Refused by the crowd's exit policy",
            ErrorKind::PathBroken => "Crowd path broken",
            _ => "Crowd error",
        };
        return page(status, title, kind.explain());
    }
    headers::sanitize_response(resp.headers_mut(), hygiene);
    if strip_active && !is_connect {
        resp = crate::active::strip(resp);
    }
    if is_connect && resp.status().is_success() {
        // Answer the client with a bare 200: it now talks to the server through the tunnel.
        let mut ok = Response::new(body::empty());
        *ok.status_mut() = resp.status();
        return ok;
    }
    resp.map(|b| {
        b.map_frame(move |f| {
            if let Some(d) = f.data_ref() {
                counter
                    .stats
                    .bytes_to_user
                    .fetch_add(d.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
            f
        })
        .boxed_unsync()
    })
}
