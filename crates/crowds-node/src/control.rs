//! The jondo's control port: status page, `/status.json`, `/metrics`, `/proxy.pac`.
//!
//! Owns what a jondo tells its user about itself: epoch, crowd size, pf, admission,
//! what the crowd size means for anonymity, time in the crowd, how often the user's own
//! path re-formed and how many epochs passed in the last 24 hours next to what that
//! means for the predecessor attack in this crowd (figures from
//! [`crowds_proto::analysis`], computed per request in microseconds), traffic counters,
//! link and blender health, and warnings. It listens on loopback, needs no external
//! assets, and never shows where the user browsed: counters carry no destinations.

use crate::body::{self, Body};
use crate::jondo::{Node, ERROR_KINDS};
use crate::metrics::{self, Metrics};
use crate::net::now_ms;
use crowds_proto::analysis::CrowdModel;
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

/// The share of members assumed to collaborate in the status page's predecessor-attack
/// figures, in percent (the crowd's own probable-innocence limit is shown beside it).
pub const ASSUMED_COLLABORATOR_PERCENT: u64 = 10;

/// "Likely to stand out": the collaborators' most-observed predecessor is the user with
/// at least this probability.
const STAND_OUT_PROBABILITY: f64 = 0.5;

/// The search for the re-formations that make the user stand out stops here (a crowd at
/// 10 % collaborators gets there within a few dozen; this only bounds the work).
const STAND_OUT_SEARCH_LIMIT: u64 = 1_000_000;

/// What the predecessor attack achieves with `collaborators` of `members` collaborating,
/// or `None` when the analysis has nothing to say (no collaborators, a crowd of one, a
/// pf outside what it covers).
fn attack_scenario(members: u64, pf: f64, collaborators: u64) -> Option<serde_json::Value> {
    if collaborators == 0 {
        return None;
    }
    let model = CrowdModel::new(members, collaborators, pf).ok()?;
    Some(json!({
        "collaborators": collaborators,
        "probable_innocence": model.probable_innocence(),
        "initiator_observed_per_reformation": model.initiator_observed(),
        "reformations_to_stand_out": model.reformations_to_stand_out(STAND_OUT_PROBABILITY, STAND_OUT_SEARCH_LIMIT),
    }))
}

/// What the predecessor attack achieves in a crowd of `members` at `pf`, under two
/// assumptions: [`ASSUMED_COLLABORATOR_PERCENT`] of the members collaborate, and the most
/// collaborators against which the crowd keeps probable innocence (either may be null).
fn predecessor_attack(members: u64, pf: f64) -> serde_json::Value {
    let share = anonymity::collaborators_at_percent(members, ASSUMED_COLLABORATOR_PERCENT);
    let limit = anonymity::max_collaborators(members, pf);
    json!({
        "stands_out_means": "the user is strictly the collaborators' most-observed predecessor with probability >= 1/2, if they can link the user's paths across re-formations",
        "assumed_share_percent": ASSUMED_COLLABORATOR_PERCENT,
        "at_assumed_share": attack_scenario(members, pf, share),
        "at_probable_innocence_limit": limit.and_then(|c| attack_scenario(members, pf, c)),
    })
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
        "admission_expected_at_ms": node.admission_expected_at().filter(|_| member_id.is_none()),
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
        "own_path_reforms_24h": node.own_reforms_last_day(),
        "epochs_24h": node.epochs_last_day(),
        "predecessor_attack": predecessor_attack(members, pf),
        "links": node.open_links(),
        "requests": {
            "initiated": s.initiated.load(Ordering::Relaxed),
            "relayed": s.relayed.load(Ordering::Relaxed),
            "submitted": s.submitted.load(Ordering::Relaxed),
            "path_failures": s.path_failures.load(Ordering::Relaxed),
            "retries": s.retries.load(Ordering::Relaxed),
            "own_path_reforms": s.own_path_reforms.load(Ordering::Relaxed),
            "client_failures": s.client_failures.load(Ordering::Relaxed),
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
        "Re-formations of the user's own path, all causes: its first link failed, its first hop left the crowd, or an epoch with new members re-formed every path.",
        load(&s.own_path_reforms),
    );
    m.counter(
        "crowds_client_failures_total",
        "Requests that failed on the user's side (aborted uploads, malformed bodies); they never re-form a path.",
        load(&s.client_failures),
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
        "crowds_own_path_reforms_24h",
        "Re-formations of the user's own path in the last 24 hours.",
        st["own_path_reforms_24h"].as_f64().unwrap_or(0.0),
    );
    m.gauge(
        "crowds_epochs_24h",
        "New crowd epochs adopted in the last 24 hours.",
        st["epochs_24h"].as_f64().unwrap_or(0.0),
    );
    // The predecessor attack at the assumed share only. A crowd the analysis has nothing
    // to say about leaves the gauges out rather than reporting a reassuring 0.
    let assumed = &st["predecessor_attack"]["at_assumed_share"];
    if let Some(p) = assumed["initiator_observed_per_reformation"].as_f64() {
        m.gauge(
            "crowds_attack_observed_per_reformation",
            &format!("P(one re-formation shows the user to the collaborators), if {ASSUMED_COLLABORATOR_PERCENT} % of members collaborate."),
            p,
        );
    }
    if let Some(r) = assumed["reformations_to_stand_out"].as_f64() {
        m.gauge(
            "crowds_attack_reformations_to_stand_out",
            &format!("Re-formations of the user's path after which the predecessor attack likely singles the user out, if {ASSUMED_COLLABORATOR_PERCENT} % of members collaborate."),
            r,
        );
    }
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
        let when = s["admission_expected_at_ms"]
            .as_u64()
            .map(|at| {
                format!(
                    " The blender admits new members only at scheduled epochs; the next is in about {}.",
                    human(at.saturating_sub(now_ms()) / 1000)
                )
            })
            .unwrap_or_default();
        warnings.push(format!("This jondo is not (yet) a member of the crowd: it is waiting for the next epoch. Browsing through it fails until then.{when}"));
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
        Some(c) if admitted => format!("With {members} members you keep <b>probable innocence</b> against up to <b>{c}</b> collaborating {}: even if they pool what they see, it is no more likely than not that you started any request they observe.", if c == 1 { "member" } else { "members" }),
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
    let reform_html = reformations_html(&s, members);
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
         <h2>Your path</h2>{reform_html}\
         <h2>Traffic</h2><table><tr><td>started by you</td><td>{init}</td></tr><tr><td>relayed for others</td><td>{rel}</td></tr>\
         <tr><td>submitted to servers (as exit)</td><td>{sub}</td></tr><tr><td>paths broken / retried</td><td>{broken} / {retries}</td></tr>\
         <tr><td>failed on your side (aborted uploads, bad bodies; never re-form your path)</td><td>{client}</td></tr></table>\
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
        client = r["client_failures"],
        bcls = if node.blender_reachable() { "ok" } else { "bad" },
        bstate = if node.blender_reachable() { "reachable" } else { "unreachable" },
        links = s["links"],
        hok = s["handshakes"]["ok"],
        hbad = s["handshakes"]["refused"],
        inflight = s["in_flight"],
    )
}

/// `n` followed by the singular or plural noun.
fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The "Your path" section: re-formations and epochs in the last 24 hours, and what
/// re-formations mean for the predecessor attack in this crowd, in plain words.
fn reformations_html(s: &serde_json::Value, members: u64) -> String {
    let reforms = s["own_path_reforms_24h"].as_u64().unwrap_or(0);
    let epochs = s["epochs_24h"].as_u64().unwrap_or(0);
    let total = s["requests"]["own_path_reforms"].as_u64().unwrap_or(0);
    let mut html = format!(
        "<p>Your path re-formed <b id=\"reforms24h\">{reforms}</b> {} in the last 24 h, \
         and the crowd had <b id=\"epochs24h\">{epochs}</b> new {} ({} since this jondo started).</p>",
        if reforms == 1 { "time" } else { "times" },
        if epochs == 1 { "epoch" } else { "epochs" },
        count(total, "re-formation", "re-formations"),
    );
    let attack = &s["predecessor_attack"];
    let after = |scenario: &serde_json::Value| match scenario["reformations_to_stand_out"].as_u64()
    {
        Some(r) => {
            // At the pace of the last day, how long that many re-formations take (no
            // pace to extrapolate from a day without any).
            let pace = r
                .saturating_mul(86_400)
                .checked_div(reforms)
                .map(|secs| format!(" (at the last 24 hours' pace, in about {})", human(secs)))
                .unwrap_or_default();
            format!(
                "after about <b>{}</b> you would likely stand out{pace}",
                count(r, "re-formation", "re-formations")
            )
        }
        None => {
            format!("even {STAND_OUT_SEARCH_LIMIT} re-formations would likely not single you out")
        }
    };
    let share = &attack["at_assumed_share"];
    if let (Some(c), Some(p)) = (
        share["collaborators"].as_u64(),
        share["initiator_observed_per_reformation"].as_f64(),
    ) {
        html += &format!(
            "<p id=\"attack\">With {}&nbsp;% of this crowd's {members} members collaborating ({}), each re-formation \
             shows you to them with probability <b>{p:.2}</b>; {}.",
            attack["assumed_share_percent"],
            count(c, "member", "members"),
            after(share)
        );
        let limit = &attack["at_probable_innocence_limit"];
        match (
            limit["collaborators"].as_u64(),
            limit["initiator_observed_per_reformation"].as_f64(),
        ) {
            (Some(max), Some(p)) if max != c => {
                html += &format!(
                    " With {max} collaborators, the most against which this crowd keeps probable innocence, \
                     the probability is {p:.2} and {}.",
                    after(limit)
                );
            }
            _ => {}
        }
        html += "</p>";
    }
    html += "<p><small>Each re-formation of your path gives collaborating members another look at who precedes \
             them, and you are the one member always there (the predecessor attack). To <i>stand out</i> is to be, more \
             likely than not, the predecessor they saw most often, if they can tell your paths from others' (by the sites \
             you visit, say). Your path re-forms only when a scheduled epoch admits new members, or when the first jondo \
             on it fails or leaves the crowd; errors on your side never re-form it. The figures come from the analysis \
             behind <code>crowds analyze</code>, which errs on the attacker's side.</small></p>";
    html
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attack_figures_come_from_the_analysis() {
        let attack = predecessor_attack(50, 0.75);
        let share = &attack["at_assumed_share"];
        assert_eq!(share["collaborators"], 5);
        let model = CrowdModel::new(50, 5, 0.75).expect("model");
        assert_eq!(
            share["initiator_observed_per_reformation"].as_f64(),
            Some(model.initiator_observed())
        );
        assert_eq!(
            share["reformations_to_stand_out"].as_u64(),
            model.reformations_to_stand_out(0.5, STAND_OUT_SEARCH_LIMIT)
        );
        assert_eq!(share["probable_innocence"], true);
        // pf = 3/4: n >= 3 (c + 1) holds up to c = 15 of 50.
        let limit = &attack["at_probable_innocence_limit"];
        assert_eq!(limit["collaborators"], 15);
        assert!(
            limit["reformations_to_stand_out"].as_u64()
                < share["reformations_to_stand_out"].as_u64()
        );
        // Nothing to say about a crowd of one, or before there is a crowd.
        for (n, pf) in [(1, 0.75), (0, 0.0)] {
            let attack = predecessor_attack(n, pf);
            assert!(attack["at_assumed_share"].is_null(), "{attack}");
            assert!(attack["at_probable_innocence_limit"].is_null(), "{attack}");
        }
        // A pf beyond what the analysis covers (--insecure-pf) says nothing either.
        assert!(predecessor_attack(50, 0.995)["at_assumed_share"].is_null());
    }

    #[test]
    fn reformations_in_plain_words() {
        let status = json!({
            "own_path_reforms_24h": 2,
            "epochs_24h": 1,
            "requests": { "own_path_reforms": 3 },
            "predecessor_attack": predecessor_attack(50, 0.75),
        });
        let html = reformations_html(&status, 50);
        for text in [
            "Your path re-formed <b id=\"reforms24h\">2</b> times in the last 24 h",
            "<b id=\"epochs24h\">1</b> new epoch (3 re-formations since this jondo started)",
            "With 10&nbsp;% of this crowd's 50 members collaborating (5 members), each re-formation \
             shows you to them with probability <b>0.10</b>; after about <b>17 re-formations</b> you would likely \
             stand out (at the last 24 hours' pace, in about 8 days 12 h).",
            "With 15 collaborators, the most against which this crowd keeps probable innocence",
        ] {
            assert!(html.contains(text), "{text:?} not in {html}");
        }
        // Without re-formations in the last day there is no pace to extrapolate.
        let quiet = json!({
            "own_path_reforms_24h": 0,
            "epochs_24h": 0,
            "requests": { "own_path_reforms": 0 },
            "predecessor_attack": predecessor_attack(2, 0.75),
        });
        let html = reformations_html(&quiet, 2);
        assert!(
            html.contains("re-formed <b id=\"reforms24h\">0</b> times"),
            "{html}"
        );
        assert!(
            html.contains("after about <b>1 re-formation</b> you would"),
            "{html}"
        );
        assert!(!html.contains("pace"), "{html}");
        assert!(!html.contains("the most against which"), "{html}");
    }
}
