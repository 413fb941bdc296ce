//! The jondo's control port: the HTTP shell around its status.
//!
//! Owns the routes: `/` (the status page), `/status.json`, `/metrics` and `/proxy.pac`,
//! each built per request from one [`JondoStatus`] (in [`crate::status`]). It listens on
//! loopback, refuses foreign `Host` headers, needs no external assets, and never shows
//! where the user browsed. It must not compute status figures or words itself.

use crate::node::Node;
use crate::status::{self, JondoStatus};
use crowds_net::body::{self, Body};
use crowds_net::metrics;
use crowds_net::net::now_ms;
use crowds_net::page::{html_response, refuse_foreign_host};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

pub use crate::status::{ASSUMED_COLLABORATOR_PERCENT, HTTPS_TIMING, HTTPS_TIMING_LEAD};

/// Serves one control connection.
pub async fn serve(node: Arc<Node>, stream: TcpStream) {
    let service = service_fn(move |req| {
        let node = node.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(&node, &req)) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .max_buf_size(16 * 1024)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// Answers one request on the control port (loopback only: a foreign `Host` is refused).
fn handle(node: &Node, req: &Request<Incoming>) -> Response<Body> {
    if let Some(refused) = refuse_foreign_host(req) {
        return refused;
    }
    #[cfg(feature = "measure")]
    if req.method() == Method::POST && req.uri().path() == "/measure/reform" {
        node.reform_own_path();
        return body::text(StatusCode::NO_CONTENT, "");
    }
    if req.method() != Method::GET {
        return body::text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match req.uri().path() {
        "/" => html_response(status::page::page(&JondoStatus::of(node, now_ms()))),
        "/status.json" => match JondoStatus::of(node, now_ms()).to_json() {
            Ok(json) => body::json(StatusCode::OK, &json),
            Err(e) => {
                tracing::warn!("cannot encode the status: {e}");
                body::text(StatusCode::INTERNAL_SERVER_ERROR, "status unavailable\n")
            }
        },
        "/metrics" => {
            let status = JondoStatus::of(node, now_ms());
            let mut resp = Response::new(body::full(status::prometheus::metrics(&status)));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(metrics::CONTENT_TYPE),
            );
            resp
        }
        "/proxy.pac" => {
            // Everything, HTTP and HTTPS, through this jondo; never DIRECT, which would
            // silently bypass the crowd if the jondo is down.
            let pac = format!(
                "function FindProxyForURL(url, host) {{\n  return \"PROXY {}\";\n}}\n",
                node.proxy_addr
            );
            let mut resp = Response::new(body::full(pac));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-ns-proxy-autoconfig"),
            );
            resp
        }
        _ => body::text(StatusCode::NOT_FOUND, "not found\n"),
    }
}
