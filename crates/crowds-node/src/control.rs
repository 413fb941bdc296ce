//! The jondo's control port: status page, `/status.json`, `/metrics`, `/proxy.pac`.
//!
//! Owns what a jondo tells its user about itself: epoch, crowd size, pf, admission,
//! what the crowd size means for anonymity, time in the crowd, traffic counters, link
//! and blender health, and warnings. It listens on loopback, needs no external assets,
//! and never shows where the user browsed: counters carry no destinations.

use crate::body::{self, Body};
use crate::jondo::{Node, ERROR_KINDS};
use crate::metrics::{self, Metrics};
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
    let (epoch, members, forwarders, pf) = crowd
        .as_ref()
        .map(|c| {
            (
                c.doc.epoch,
                c.doc.members.len() as u64,
                c.forwarders.len() as u64,
                c.doc.forward_probability,
            )
        })
        .unwrap_or((0, 0, 0, 0.0));
    let member_id = crowd.as_ref().and_then(|c| c.self_id);
    let s = &node.stats;
    let errors: serde_json::Map<String, serde_json::Value> = ERROR_KINDS
        .iter()
        .zip(&s.errors)
        .map(|(k, n)| (k.as_str().to_string(), json!(n.load(Ordering::Relaxed))))
        .collect();
    json!({
        "epoch": epoch,
        "members": members,
        "forwarding_members": forwarders,
        "pf": pf,
        "member_id": member_id,
        "admitted": member_id.is_some(),
        "client_only": node.client_only(),
        "document_expires_in_ms": crowd.as_ref().map(|c| c.doc.expires_at.saturating_sub(now)),
        "probable_innocence_against": anonymity::max_collaborators(members, pf),
        "expected_path_length": (pf > 0.0).then(|| anonymity::expected_path_length(pf)),
        "blender_reachable": node.blender_reachable(),
        "heartbeat_interval_ms": node.heartbeat_interval().as_millis() as u64,
        "poll_interval_ms": node.poll_interval().as_millis() as u64,
        "uptime_s": now.saturating_sub(node.started_at()) / 1000,
        "in_crowd_s": node.admitted_since().map(|t| now.saturating_sub(t) / 1000),
        "in_flight": node.in_flight(),
        "paths": node.path_count(),
        "paths_formed": node.paths_formed(),
        "links": node.open_links(),
        "requests": {
            "initiated": s.initiated.load(Ordering::Relaxed),
            "relayed": s.relayed.load(Ordering::Relaxed),
            "submitted": s.submitted.load(Ordering::Relaxed),
            "path_failures": s.path_failures.load(Ordering::Relaxed),
            "retries": s.retries.load(Ordering::Relaxed),
            "own_path_reforms": s.own_path_reforms.load(Ordering::Relaxed),
            "served_from_bundles": s.served_from_bundles.load(Ordering::Relaxed),
        },
        "errors": errors,
        "documents": {
            "full": s.documents_full.load(Ordering::Relaxed),
            "delta": s.documents_delta.load(Ordering::Relaxed),
        },
        "bytes": {
            "to_user": s.bytes_to_user.load(Ordering::Relaxed),
            "from_servers": s.bytes_from_servers.load(Ordering::Relaxed),
        },
        "handshakes": {
            "ok": s.handshakes_ok.load(Ordering::Relaxed),
            "refused": s.handshakes_refused.load(Ordering::Relaxed),
        },
    })
}

/// The Prometheus metrics page.
pub fn metrics(node: &Node) -> String {
    let st = status(node);
    let s = &node.stats;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let mut m = Metrics::new();
    m.counter(
        "crowds_requests_initiated_total",
        "Requests this jondo's user started.",
        load(&s.initiated),
    );
    m.counter(
        "crowds_requests_relayed_total",
        "Requests relayed for other members.",
        load(&s.relayed),
    );
    m.counter(
        "crowds_requests_submitted_total",
        "Requests submitted to servers as the exit.",
        load(&s.submitted),
    );
    m.counter(
        "crowds_path_failures_total",
        "Paths that broke at this jondo's successor.",
        load(&s.path_failures),
    );
    m.counter(
        "crowds_retries_total",
        "Requests retried after a broken path.",
        load(&s.retries),
    );
    m.counter(
        "crowds_own_path_reforms_total",
        "Times this jondo's first link failed and its whole path was re-formed.",
        load(&s.own_path_reforms),
    );
    m.counters_by(
        "crowds_documents_adopted_total",
        "Crowd documents adopted, by how they were fetched.",
        "fetch",
        &[
            ("full", load(&s.documents_full)),
            ("delta", load(&s.documents_delta)),
        ],
    );
    m.counter(
        "crowds_paths_formed_total",
        "Hops decided by this jondo (new paths through it).",
        node.paths_formed(),
    );
    m.counter(
        "crowds_bytes_to_user_total",
        "Plain-HTTP response bytes delivered to the user.",
        load(&s.bytes_to_user),
    );
    m.counter(
        "crowds_bytes_from_servers_total",
        "Plain-HTTP response bytes received as the exit.",
        load(&s.bytes_from_servers),
    );
    m.counters_by(
        "crowds_handshakes_total",
        "Peer TLS handshakes by result.",
        "result",
        &[
            ("ok", load(&s.handshakes_ok)),
            ("refused", load(&s.handshakes_refused)),
        ],
    );
    let errors: Vec<(&str, u64)> = ERROR_KINDS
        .iter()
        .zip(&s.errors)
        .map(|(k, n)| (k.as_str(), load(n)))
        .collect();
    m.counters_by(
        "crowds_errors_total",
        "Crowd errors returned to the user, by kind.",
        "kind",
        &errors,
    );
    m.gauge(
        "crowds_epoch",
        "Epoch of the current crowd document.",
        st["epoch"].as_f64().unwrap_or(0.0),
    );
    m.gauge(
        "crowds_members",
        "Members in the current crowd document.",
        st["members"].as_f64().unwrap_or(0.0),
    );
    m.gauge(
        "crowds_forward_probability",
        "The crowd's pf.",
        st["pf"].as_f64().unwrap_or(0.0),
    );
    m.gauge(
        "crowds_admitted",
        "1 if this jondo is a member of the current crowd.",
        f64::from(u8::from(st["admitted"].as_bool().unwrap_or(false))),
    );
    m.gauge(
        "crowds_blender_reachable",
        "1 if the blender answered the last call.",
        f64::from(u8::from(node.blender_reachable())),
    );
    m.gauge(
        "crowds_paths",
        "Paths through this jondo now.",
        node.path_count() as f64,
    );
    m.gauge(
        "crowds_links",
        "Open outgoing links.",
        node.open_links() as f64,
    );
    m.gauge(
        "crowds_in_flight",
        "Requests and tunnels in progress.",
        node.in_flight() as f64,
    );
    m.finish()
}

fn html_response(html: String) -> Response<Body> {
    let mut resp = Response::new(body::full(html));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp
}

/// A duration in words.
pub fn human(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min", s / 60),
        s if s < 86_400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        s => format!("{} days {} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// The page's shared look (no external assets).
pub const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:46em;margin:2em auto;padding:0 1em;color:#222}\
h1{font-size:1.6em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}\
.big{font-size:2em;font-weight:bold}.warn{background:#fff3cd;border:1px solid #e0c060;padding:.6em 1em;border-radius:6px}\
.ok{color:#1a7f37}.bad{color:#b42318}table{border-collapse:collapse}td{padding:.2em 1em .2em 0}small{color:#666}";

fn page(node: &Node) -> String {
    let s = status(node);
    let members = s["members"].as_u64().unwrap_or(0);
    let pf = s["pf"].as_f64().unwrap_or(0.0);
    let admitted = s["admitted"].as_bool().unwrap_or(false);
    let mut warnings = Vec::new();
    if !admitted {
        warnings.push("This jondo is not (yet) a member of the crowd: it is waiting for the next epoch. Browsing through it fails until then.".to_string());
    }
    if s["client_only"].as_bool().unwrap_or(false) {
        warnings.push("The blender cannot reach this jondo's peer port, so it is a <b>client-only</b> member: it can browse but never relays for others, and the first jondo on its path can tell that its requests start in its network. Its anonymity is weaker. Open the peer port (or set --advertise) and restart.".to_string());
    }
    if !s["blender_reachable"].as_bool().unwrap_or(true) {
        warnings.push(format!(
            "The blender is not reachable. The jondo keeps serving with the last crowd document (valid for another {}) and keeps retrying.",
            human(s["document_expires_in_ms"].as_u64().unwrap_or(0) / 1000)
        ));
    }
    let safety = match s["probable_innocence_against"].as_u64() {
        Some(c) if admitted => format!("With {members} members you keep <b>probable innocence</b> against up to <b>{c}</b> collaborating members: even if they pool what they see, it is no more likely than not that you started any request they observe."),
        _ if admitted => {
            warnings.push(format!("With {members} members the crowd is too small for probable innocence even against a single collaborator (pf {pf}). It needs at least {} members.", (pf / (pf - 0.5) * 2.0).ceil()));
            "The crowd is too small to protect you against collaborating members.".to_string()
        }
        _ => String::new(),
    };
    let in_crowd = s["in_crowd_s"]
        .as_u64()
        .map(human)
        .unwrap_or_else(|| "not yet".into());
    let warn_html: String = warnings
        .iter()
        .map(|w| format!("<p class=\"warn\">⚠ {w}</p>"))
        .collect();
    let r = &s["requests"];
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"5\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>crowds jondo</title><style>{STYLE}</style></head><body>\
         <h1>Your jondo</h1>{warn_html}\
         <h2>Crowd</h2><p><span class=\"big\" id=\"members\">{members}</span> members · epoch <b id=\"epoch\">{epoch}</b> · pf {pf} · \
         paths average {len} jondos</p><p>{safety}</p>\
         <h2>You in the crowd</h2><p>In the crowd for <b>{in_crowd}</b> (jondo running for {up}).</p>\
         <p><small>Staying helps everyone: each time members join, every path in the crowd is re-formed, and each re-formation \
         gives collaborators another chance to see who you are. A crowd of steady members re-forms rarely.</small></p>\
         <h2>Traffic</h2><table><tr><td>started by you</td><td>{init}</td></tr><tr><td>relayed for others</td><td>{rel}</td></tr>\
         <tr><td>submitted to servers (as exit)</td><td>{sub}</td></tr><tr><td>paths broken / retried</td><td>{broken} / {retries}</td></tr></table>\
         <h2>Health</h2><table><tr><td>blender</td><td class=\"{bcls}\">{bstate}</td></tr><tr><td>open links</td><td>{links}</td></tr>\
         <tr><td>peer handshakes ok / refused</td><td>{hok} / {hbad}</td></tr><tr><td>in progress</td><td>{inflight}</td></tr></table>\
         <p><small>This page never shows where you browsed. Machine-readable: <a href=\"/status.json\">status.json</a>, \
         <a href=\"/metrics\">metrics</a>. Browser set-up: use the proxy auto-config <a href=\"/proxy.pac\">/proxy.pac</a>.</small></p>\
         </body></html>",
        epoch = s["epoch"],
        len = s["expected_path_length"].as_f64().map(|l| format!("{l:.1}")).unwrap_or("–".into()),
        up = human(s["uptime_s"].as_u64().unwrap_or(0)),
        init = r["initiated"],
        rel = r["relayed"],
        sub = r["submitted"],
        broken = r["path_failures"],
        retries = r["retries"],
        bcls = if node.blender_reachable() { "ok" } else { "bad" },
        bstate = if node.blender_reachable() { "reachable" } else { "unreachable" },
        links = s["links"],
        hok = s["handshakes"]["ok"],
        hbad = s["handshakes"]["refused"],
        inflight = s["in_flight"],
    )
}

fn handle(node: &Node, req: &Request<Incoming>) -> Response<Body> {
    #[cfg(feature = "measure")]
    if req.method() == Method::POST && req.uri().path() == "/measure/reform" {
        node.reform_own_path();
        return body::text(StatusCode::NO_CONTENT, "");
    }
    if req.method() != Method::GET {
        return body::text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match req.uri().path() {
        "/" => html_response(page(node)),
        "/status.json" => body::json(StatusCode::OK, &status(node)),
        "/metrics" => {
            let mut resp = Response::new(body::full(metrics(node)));
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
