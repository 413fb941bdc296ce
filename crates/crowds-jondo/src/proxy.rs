//! The local HTTP proxy: where the user's browser hands requests to the jondo.
//!
//! Owns the client side of HTTP/1.x (keep-alive, pipelining, streaming bodies both
//! ways, header size limits, slow-client timeouts via hyper), the check that a request
//! is an absolute-form `http://` request, header hygiene before the request enters the
//! crowd, and turning crowd errors into pages the user can read. It listens on loopback
//! by default and never logs what the user asks for.

use crate::node::Node;
use crate::prefetch;
use crowds_net::body::{self, Body};
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
    let _ = client_connection()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await;
}

/// How a client connection is served: head size and time limits, keep-alive.
fn client_connection() -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_header_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    builder
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

/// Serves plain HTTP that a client sent through a tunnel (SOCKS, or CONNECT to a
/// plain-HTTP port) to `authority`: each request is treated exactly as if it had been
/// sent to the proxy in absolute form, so hygiene and the timing defence apply.
///
/// The future is boxed with its type written out: it calls `handle`, which reaches the
/// tunnel code that calls it, and the compiler cannot see through that loop by itself.
pub fn serve_in_tunnel<I>(
    node: Arc<Node>,
    stream: I,
    authority: String,
) -> futures_util::future::BoxFuture<'static, ()>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    Box::pin(serve_in_tunnel_inner(node, stream, authority))
}

async fn serve_in_tunnel_inner<I>(node: Arc<Node>, stream: I, authority: String)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    node.stats
        .plain_http_in_tunnels
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let service = service_fn(move |req: Request<Incoming>| {
        let node = node.clone();
        let authority = authority.clone();
        async move {
            let resp = match in_tunnel_target(req.uri(), req.method(), &authority) {
                Some(uri) => {
                    let (mut parts, body) = req.into_parts();
                    parts.uri = uri;
                    handle(node, Request::from_parts(parts, body)).await
                }
                None => page(
                    StatusCode::BAD_REQUEST,
                    "Bad request",
                    "This request cannot be sent through a tunnel.",
                ),
            };
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    let _ = client_connection()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// The absolute `http://` URI of a request received inside a tunnel to `authority`:
/// the tunnel's destination, whatever the request's own target or Host says.
fn in_tunnel_target(uri: &http::Uri, method: &Method, authority: &str) -> Option<http::Uri> {
    if method == Method::CONNECT {
        return None;
    }
    let pq = uri.path_and_query()?.as_str();
    if !pq.starts_with('/') {
        return None;
    }
    format!("http://{authority}{pq}").parse().ok()
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
        // The timing defence: an object an exit announced with its page is answered
        // here, whether or not it arrived; the request never enters the crowd.
        if let Some(url) = prefetch::normalize(&req.uri().to_string()) {
            if let Some(local) = node.objects.take(&url).await {
                return answer_locally(&node, local);
            }
        }
    }
    let (mut parts, incoming) = req.into_parts();
    headers::sanitize_request(&mut parts.headers, node.hygiene);
    headers::trim_origin(&mut parts.headers, &parts.uri);
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
    let marked = prefetch::wants_bundle(&req);
    let page_url = req.uri().clone();
    let resp = prefetch::receive(
        node.clone().initiate(req, serve_in_tunnel).await,
        objects,
        &page_url,
        marked,
    );
    if let Some(kind) = relay::error_kind(resp.headers()) {
        let status = StatusCode::from_u16(kind.status()).unwrap_or(StatusCode::BAD_GATEWAY);
        if kind == ErrorKind::NotAdmitted {
            if let Some(pf) = node.refused_pf() {
                let text = format!(
                    "This jondo refuses the crowd's current document: its forward probability \
                     pf = {pf} is at most 1/2, and at such a pf no crowd size gives probable \
                     innocence. Browsing through it fails until the blender publishes a pf \
                     above 1/2 (the status page says more)."
                );
                return page(status, "Crowd refused: pf too low", &text);
            }
        }
        let title = match kind {
            ErrorKind::ExitPolicy => "Refused by the crowd's exit policy",
            ErrorKind::PathBroken => "Crowd path broken",
            _ => "Crowd error",
        };
        return page(status, title, kind.explain());
    }
    if is_connect && resp.status().is_success() {
        // Answer the client with a bare 200: it now talks to the server through the tunnel.
        let mut ok = Response::new(body::empty());
        *ok.status_mut() = resp.status();
        return ok;
    }
    deliver(&node, resp)
}

/// An announced object, or the error that stands for it.
fn answer_locally(node: &Arc<Node>, local: prefetch::Local) -> Response<Body> {
    use std::sync::atomic::Ordering::Relaxed;
    match local {
        prefetch::Local::Object(resp) => {
            node.stats.served_from_bundles.fetch_add(1, Relaxed);
            deliver(node, resp)
        }
        prefetch::Local::Undelivered => {
            node.stats.bundle_objects_undelivered.fetch_add(1, Relaxed);
            page(
                StatusCode::BAD_GATEWAY,
                "Object not delivered",
                "The crowd's exit announced this object with its page but did not deliver \
                 it. It is not requested again through the crowd: that request would let \
                 members on the path time your browser. Reload the page to try again.",
            )
        }
        prefetch::Local::TimedOut => {
            node.stats.bundle_objects_undelivered.fetch_add(1, Relaxed);
            page(
                StatusCode::GATEWAY_TIMEOUT,
                "Object not delivered in time",
                "The crowd's exit announced this object with its page but it did not \
                 arrive in time. It is not requested again through the crowd: that \
                 request would let members on the path time your browser.",
            )
        }
    }
}

/// The user's side of every response: response hygiene, active-content removal if
/// asked for, and the byte count. Objects from page bundles go through here too.
fn deliver(node: &Arc<Node>, mut resp: Response<Body>) -> Response<Body> {
    headers::sanitize_response(resp.headers_mut(), node.hygiene);
    if node.strip_active_content {
        resp = crate::active::strip(resp);
    }
    let counter = node.clone();
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
