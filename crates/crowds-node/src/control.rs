//! The control port: `GET /status.json`, `GET /proxy.pac` and a small status page, on
//! loopback.
//!
//! Owns what a jondo tells its user about itself: epoch, crowd size, pf, admission,
//! what the crowd size means for anonymity, traffic counters. It never shows where the
//! user browsed, and the counters carry no destinations.

use crate::body::{self, Body};
use crate::jondo::Node;
use crate::net::now_ms;
use crowds_proto::anonymity;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

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

/// The status as JSON.
pub fn status(node: &Node) -> serde_json::Value {
    let crowd = node.crowd();
    let now = now_ms();
    let (epoch, members, pf) = crowd
        .as_ref()
        .map(|c| {
            (
                c.doc.epoch,
                c.doc.members.len() as u64,
                c.doc.forward_probability,
            )
        })
        .unwrap_or((0, 0, 0.0));
    let member_id = crowd.as_ref().and_then(|c| c.self_id);
    json!({
        "epoch": epoch,
        "members": members,
        "pf": pf,
        "member_id": member_id,
        "admitted": member_id.is_some(),
        "document_expires_in_ms": crowd.as_ref().map(|c| c.doc.expires_at.saturating_sub(now)),
        "probable_innocence_against": anonymity::max_collaborators(members, pf),
        "expected_path_length": if pf > 0.0 { Some(anonymity::expected_path_length(pf)) } else { None },
        "blender_reachable": node.blender_reachable(),
        "uptime_s": now.saturating_sub(node.started_at()) / 1000,
        "in_crowd_s": node.admitted_since().map(|t| now.saturating_sub(t) / 1000),
        "client_only": node.client_only(),
        "in_flight": node.in_flight(),
        "paths": node.path_count(),
        "links": node.open_links(),
        "requests": {
            "initiated": node.stats.initiated.load(Ordering::Relaxed),
            "relayed": node.stats.relayed.load(Ordering::Relaxed),
            "submitted": node.stats.submitted.load(Ordering::Relaxed),
            "path_failures": node.stats.path_failures.load(Ordering::Relaxed),
        },
    })
}

fn handle(node: &Node, req: &Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET {
        return body::text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match req.uri().path() {
        "/status.json" => body::json(StatusCode::OK, &status(node)),
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
        "/" => {
            let s = status(node);
            let safety = match s["probable_innocence_against"].as_u64() {
                Some(c) => format!("With {} members you keep probable innocence against up to {c} collaborating members.", s["members"]),
                None => format!("With {} members the crowd is too small for probable innocence.", s["members"]),
            };
            let html = format!(
                "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"5\">\
                 <title>crowds jondo</title></head><body style=\"font-family:sans-serif;max-width:40em;margin:2em auto\">\
                 <h1>crowds jondo</h1><p>Epoch {} · {} members · pf {} · admitted: {}</p><p>{safety}</p>\
                 <p>Requests: {} initiated, {} relayed, {} submitted.</p><p>Blender reachable: {}</p>\
                 <pre>{}</pre></body></html>",
                s["epoch"], s["members"], s["pf"], s["admitted"],
                s["requests"]["initiated"], s["requests"]["relayed"], s["requests"]["submitted"],
                s["blender_reachable"],
                serde_json::to_string_pretty(&s).unwrap_or_default(),
            );
            let mut resp = Response::new(body::full(html));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            resp
        }
        _ => body::text(StatusCode::NOT_FOUND, "not found\n"),
    }
}
