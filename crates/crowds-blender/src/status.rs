//! The status port (loopback): the blender's status as one typed [`BlenderStatus`],
//! from which `status.json`, the HTML page and `/metrics` are all produced. Reads
//! counters and the store; changes nothing.

use crate::state::{lock, State};
use crate::store::{Counts, DEFAULT_CROWD};
use crowds_net::body::{self, Body};
use crowds_net::net::now_ms;
use crowds_proto::document::CrowdDocument;
use crowds_proto::roster::RosterConfig;
use crowds_proto::MemberId;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

pub(crate) async fn control(state: Arc<State>, stream: tokio::net::TcpStream) {
    let service = service_fn(move |req: Request<Incoming>| {
        let state = state.clone();
        async move { Ok::<_, std::convert::Infallible>(control_page(&state, &req).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .max_buf_size(16 * 1024)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// The blender's status: what `status.json` shows, field for field (scripts and tests
/// read these names), and what the HTML page and `/metrics` are made from. The
/// top-level crowd figures are those of the first crowd served (by name); the member
/// list and `silent_members` are the default crowd's.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BlenderStatus {
    /// The first crowd's current epoch (0 before the first).
    pub epoch: u64,
    /// Members in the first crowd's current document.
    pub members: usize,
    /// Joins waiting for the first crowd's next epoch.
    pub pending_joins: u64,
    /// Accounts in the store, all crowds.
    pub accounts: u64,
    /// The first crowd's forward probability.
    pub pf: f64,
    /// Members of the default crowd that missed the heartbeat timeout.
    pub silent_members: usize,
    /// The join interval (ms): epochs fall on multiples of it.
    pub join_interval_ms: Option<u64>,
    /// The heartbeat timeout (ms).
    pub heartbeat_timeout_ms: Option<u64>,
    /// The grace period of a silent member (ms).
    pub grace_period_ms: Option<u64>,
    /// How often an account may be admitted (ms).
    pub rejoin_interval_ms: Option<u64>,
    /// The earliest moment a waiting change can become an epoch (none is cut between
    /// two of these), unix ms.
    pub next_scheduled_epoch_ms: Option<u64>,
    /// "sqlite" or "postgres".
    pub database: &'static str,
    /// Seconds since the blender started.
    pub uptime_s: u64,
    /// Every crowd served, by name.
    pub crowds: Vec<CrowdStatus>,
    /// The default crowd's members.
    pub member_list: Vec<MemberStatus>,
    /// Counters since start.
    pub counters: StatusCounters,
    /// What is in use right now.
    pub load: StatusLoad,
}

/// One crowd's line of the status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CrowdStatus {
    /// The crowd's name.
    pub name: String,
    /// Its forward probability.
    pub pf: f64,
    /// Its current epoch (0 before the first).
    pub epoch: u64,
    /// Members in its current document.
    pub members: usize,
    /// Joins waiting for its next epoch.
    pub pending_joins: u64,
    /// Its members that missed the heartbeat timeout.
    pub silent_members: usize,
    /// Age of its current document in seconds, if one is published.
    pub document_age_s: Option<u64>,
}

/// One member of the default crowd, as the status page lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberStatus {
    /// Its member id (the account's number).
    pub id: MemberId,
    /// Its peer address.
    pub addr: String,
    /// Never chosen as a forwarder (its peer port was unreachable).
    pub client_only: bool,
    /// Its public key, hex.
    pub key: String,
    /// Missed the heartbeat timeout (kept for the grace period).
    pub silent: bool,
}

/// The blender's counters since start (never account names or member traffic).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StatusCounters {
    /// Epochs this blender published.
    pub epochs: u64,
    /// Joins that became pending.
    pub joins_pending: u64,
    /// Joins of members already in the document (heartbeats).
    pub joins_member: u64,
    /// Joins refused as too soon after the last admission.
    pub joins_too_soon: u64,
    /// Pending joins whose peer port was unreachable.
    pub client_only_joins: u64,
    /// Joins refused because the peer address did not prove the key.
    pub address_claims_refused: u64,
    /// Refused logins.
    pub logins_refused: u64,
    /// Heartbeats received.
    pub heartbeats: u64,
    /// Password checks run.
    pub password_checks: u64,
    /// Joins refused because every password-check place was taken.
    pub password_checks_refused_busy: u64,
    /// Connections closed by the per-address (or per-key) cap.
    pub connections_refused_per_address: u64,
    /// Connections closed because the strangers' budget was taken.
    pub connections_refused_strangers: u64,
    /// Strangers' handshakes cut off by newer ones.
    pub handshakes_cut_off: u64,
    /// Handshakes that took too long.
    pub handshakes_timed_out: u64,
    /// Connections that took too long.
    pub connections_timed_out: u64,
    /// Request bodies that took too long.
    pub bodies_timed_out: u64,
}

/// What is in use right now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StatusLoad {
    /// Password checks running or queued.
    pub password_checks_in_flight: usize,
    /// Password-check worker threads.
    pub password_check_workers: usize,
    /// API connections counted as members'.
    pub member_connections: usize,
    /// API connections of strangers past their handshake.
    pub stranger_connections: usize,
    /// Strangers' connections in their TLS handshake.
    pub stranger_handshakes: usize,
    /// Keys the login throttle remembers.
    pub throttled_keys: usize,
}

/// One crowd as the status is assembled from it: its settings, its current document,
/// and what the store counted.
pub(crate) struct CrowdView<'a> {
    pub(crate) config: &'a RosterConfig,
    pub(crate) document: Option<&'a CrowdDocument>,
    pub(crate) counts: Counts,
    pub(crate) silent: &'a [MemberId],
}

impl BlenderStatus {
    /// Assembles the status at `now` (unix ms) from every crowd (in the order served),
    /// the counters and the load. Pure: the caller reads the clock and the store.
    pub(crate) fn assemble(
        now: u64,
        crowds: &[CrowdView<'_>],
        database: &'static str,
        started_at: u64,
        counters: StatusCounters,
        load: StatusLoad,
    ) -> Self {
        let mut member_list = Vec::new();
        let mut silent_default = 0;
        let mut lines = Vec::with_capacity(crowds.len());
        for view in crowds {
            if view.config.crowd == DEFAULT_CROWD {
                member_list = view
                    .document
                    .iter()
                    .flat_map(|d| d.members.iter())
                    .map(|m| MemberStatus {
                        id: m.id,
                        addr: m.addr.to_string(),
                        client_only: !m.forwards(),
                        key: m.key.to_hex(),
                        silent: view.silent.contains(&m.id),
                    })
                    .collect();
                silent_default = view.silent.len();
            }
            lines.push(CrowdStatus {
                name: view.config.crowd.clone(),
                pf: view.config.forward_probability,
                epoch: view.document.map_or(0, |d| d.epoch),
                members: view.document.map_or(0, |d| d.members.len()),
                pending_joins: view.counts.pending,
                silent_members: view.silent.len(),
                document_age_s: view
                    .document
                    .map(|d| now.saturating_sub(d.issued_at) / 1000),
            });
        }
        let first = crowds.first().map(|v| v.config);
        let line = lines.first();
        Self {
            epoch: line.map_or(0, |c| c.epoch),
            members: line.map_or(0, |c| c.members),
            pending_joins: line.map_or(0, |c| c.pending_joins),
            accounts: crowds.first().map_or(0, |v| v.counts.accounts),
            pf: line.map_or(0.0, |c| c.pf),
            silent_members: silent_default,
            join_interval_ms: first.map(|c| c.join_interval_ms),
            heartbeat_timeout_ms: first.map(|c| c.heartbeat_timeout_ms),
            grace_period_ms: first.map(|c| c.grace_period_ms),
            rejoin_interval_ms: first.map(|c| c.rejoin_interval_ms),
            next_scheduled_epoch_ms: first.map(|c| c.scheduled_after(now)),
            database,
            uptime_s: now.saturating_sub(started_at) / 1000,
            crowds: lines,
            member_list,
            counters,
            load,
        }
    }

    /// The Prometheus text of `/metrics`.
    pub fn metrics(&self) -> String {
        let c = &self.counters;
        let l = &self.load;
        let mut m = crowds_net::metrics::Metrics::new();
        m.counter(
            "crowds_blender_epochs_total",
            "Epochs published since start.",
            c.epochs,
        );
        m.counters_by(
            "crowds_blender_joins_total",
            "Join requests by outcome.",
            "outcome",
            &[
                ("pending", c.joins_pending),
                ("member", c.joins_member),
                ("too_soon", c.joins_too_soon),
                ("refused", c.logins_refused),
            ],
        );
        m.counter(
            "crowds_blender_client_only_joins_total",
            "Joins whose peer port was unreachable.",
            c.client_only_joins,
        );
        m.counter(
            "crowds_blender_address_claims_refused_total",
            "Joins refused because the peer address did not prove the member's key.",
            c.address_claims_refused,
        );
        m.counter(
            "crowds_blender_heartbeats_total",
            "Heartbeats received.",
            c.heartbeats,
        );
        m.counter(
            "crowds_blender_password_checks_total",
            "Password checks run.",
            c.password_checks,
        );
        m.counter(
            "crowds_blender_password_checks_refused_total",
            "Joins refused with 503 because every password-check worker and queue place was taken.",
            c.password_checks_refused_busy,
        );
        m.counters_by(
            "crowds_blender_connections_refused_total",
            "API connections closed by a limit, by limit.",
            "limit",
            &[
                ("per_address", c.connections_refused_per_address),
                ("strangers", c.connections_refused_strangers),
                ("handshake_cut_off", c.handshakes_cut_off),
                ("handshake_timeout", c.handshakes_timed_out),
                ("connection_timeout", c.connections_timed_out),
                ("body_timeout", c.bodies_timed_out),
            ],
        );
        m.gauge(
            "crowds_blender_password_checks_in_flight",
            "Password checks running or queued.",
            l.password_checks_in_flight as f64,
        );
        m.gauge(
            "crowds_blender_member_connections",
            "API connections counted as members'.",
            l.member_connections as f64,
        );
        m.gauge(
            "crowds_blender_stranger_connections",
            "API connections of strangers past their handshake.",
            l.stranger_connections as f64,
        );
        m.gauge("crowds_blender_epoch", "Current epoch.", self.epoch as f64);
        m.gauge(
            "crowds_blender_members",
            "Members in the current epoch.",
            self.members as f64,
        );
        m.gauge(
            "crowds_blender_pending_joins",
            "Joins waiting for the next epoch.",
            self.pending_joins as f64,
        );
        m.gauge(
            "crowds_blender_accounts",
            "Accounts in the store.",
            self.accounts as f64,
        );
        m.finish()
    }

    /// The HTML status page.
    pub fn html(&self) -> String {
        let rows: String = self
            .member_list
            .iter()
            .map(|m| {
                format!(
                    "<tr><td>{}</td><td>{}</td><td>{}{}</td><td><code>{}…</code></td></tr>",
                    m.id,
                    m.addr,
                    if m.client_only {
                        "client-only"
                    } else {
                        "forwarder"
                    },
                    // Missed the heartbeat timeout; kept for the grace period.
                    if m.silent { " · silent" } else { "" },
                    m.key.get(..16).unwrap_or(&m.key),
                )
            })
            .collect();
        let crowd_rows: String = self
            .crowds
            .iter()
            .map(|c| {
                format!(
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    c.name,
                    json_number(c.pf),
                    c.epoch,
                    c.members,
                    c.pending_joins
                )
            })
            .collect();
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"5\">\
             <title>crowds blender</title><style>{style}</style></head><body><h1>Blender</h1>\
             <p><span class=\"big\" id=\"members\">{members}</span> members · epoch <b id=\"epoch\">{epoch}</b> · pf {pf} · \
             {pending} joins pending · {silent} silent · {accounts} accounts</p>\
             <h2>Crowds</h2><table><tr><th>crowd</th><th>pf</th><th>epoch</th><th>members</th><th>pending</th></tr>{crowd_rows}</table>\
             <p>Store: {database}.</p>\
             <h2>Members of the default crowd</h2><table><tr><th>id</th><th>peer address</th><th>role</th><th>key</th></tr>{rows}</table>\
             <h2>Counters</h2><pre>{counters}</pre>\
             <p><small>Accounts are managed on the command line (crowds account …). This page never shows passwords or member traffic. \
             <a href=\"/status.json\">status.json</a> · <a href=\"/metrics\">metrics</a></small></p></body></html>",
            style = crowds_net::page::STYLE,
            members = self.members,
            epoch = self.epoch,
            pf = json_number(self.pf),
            pending = self.pending_joins,
            silent = self.silent_members,
            accounts = self.accounts,
            counters = serde_json::to_value(&self.counters)
                .and_then(|v| serde_json::to_string_pretty(&v))
                .unwrap_or_default(),
            database = self.database,
        )
    }
}

/// A number as `status.json` writes it (`0.0`, not `0`), so the page shows what the
/// JSON says.
fn json_number(x: f64) -> String {
    serde_json::to_string(&x).unwrap_or_default()
}

/// Reads the counters, the load and the store, and assembles the status at `now`.
pub(crate) async fn blender_status(state: &Arc<State>, now: u64) -> BlenderStatus {
    let configs: Vec<RosterConfig> = state.crowds.values().map(|c| c.config.clone()).collect();
    // Per crowd: its counts and its members that missed the heartbeat timeout.
    let counts = state
        .with_store(move |s| {
            configs
                .iter()
                .map(|c| Ok((s.counts(&c.crowd)?, s.silent_members(c, now)?)))
                .collect::<Result<Vec<_>, crate::store::StoreError>>()
        })
        .await
        .unwrap_or_default();
    let documents: Vec<Option<Arc<CrowdDocument>>> = state
        .crowds
        .values()
        .map(|crowd| {
            crowd
                .published
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .map(|p| p.document.clone())
        })
        .collect();
    let views: Vec<CrowdView<'_>> = state
        .crowds
        .values()
        .zip(&documents)
        .enumerate()
        .map(|(i, (crowd, document))| {
            let (counts, silent) = counts
                .get(i)
                .map_or((Counts::default(), &[][..]), |(c, s)| (*c, s.as_slice()));
            CrowdView {
                config: &crowd.config,
                document: document.as_deref(),
                counts,
                silent,
            }
        })
        .collect();
    let s = &state.stats;
    let g = &state.gate;
    let counters = StatusCounters {
        epochs: s.epochs.load(Ordering::Relaxed),
        joins_pending: s.joins_pending.load(Ordering::Relaxed),
        joins_member: s.joins_member.load(Ordering::Relaxed),
        joins_too_soon: s.joins_too_soon.load(Ordering::Relaxed),
        client_only_joins: s.client_only_joins.load(Ordering::Relaxed),
        address_claims_refused: s.address_claims_refused.load(Ordering::Relaxed),
        logins_refused: s.logins_refused.load(Ordering::Relaxed),
        heartbeats: s.heartbeats.load(Ordering::Relaxed),
        password_checks: state.checks.ran(),
        password_checks_refused_busy: state.checks.refused(),
        connections_refused_per_address: g.refused_per_address.load(Ordering::Relaxed),
        connections_refused_strangers: g.refused_strangers.load(Ordering::Relaxed),
        handshakes_cut_off: g.handshakes.evicted(),
        handshakes_timed_out: g.handshakes_timed_out.load(Ordering::Relaxed),
        connections_timed_out: g.connections_timed_out.load(Ordering::Relaxed),
        bodies_timed_out: g.bodies_timed_out.load(Ordering::Relaxed),
    };
    let load = StatusLoad {
        password_checks_in_flight: state.checks.in_flight(),
        password_check_workers: state.checks.workers(),
        member_connections: state
            .limits
            .max_member_connections
            .saturating_sub(g.members.available_permits()),
        stranger_connections: state
            .limits
            .max_stranger_connections
            .saturating_sub(g.strangers.available_permits()),
        stranger_handshakes: g.handshakes.pending(),
        throttled_keys: lock(&state.logins).len(),
    };
    BlenderStatus::assemble(
        now,
        &views,
        state.database,
        state.started_at,
        counters,
        load,
    )
}

pub(crate) async fn control_page(state: &Arc<State>, req: &Request<Incoming>) -> Response<Body> {
    if let Some(refused) = crowds_net::page::refuse_foreign_host(req) {
        return refused;
    }
    if req.method() != Method::GET {
        return body::text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    let status = blender_status(state, now_ms()).await;
    let (text, content_type) = match req.uri().path() {
        "/status.json" => match serde_json::to_value(&status) {
            Ok(json) => return body::json(StatusCode::OK, &json),
            Err(_) => return body::text(StatusCode::INTERNAL_SERVER_ERROR, "status\n"),
        },
        "/metrics" => (status.metrics(), crowds_net::metrics::CONTENT_TYPE),
        "/" => (status.html(), "text/html; charset=utf-8"),
        _ => return body::text(StatusCode::NOT_FOUND, "not found\n"),
    };
    let mut resp = Response::new(body::full(text));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crowds_proto::document::Member;
    use crowds_proto::identity::PublicKey;

    fn config(crowd: &str, pf: f64) -> RosterConfig {
        RosterConfig {
            crowd: crowd.into(),
            forward_probability: pf,
            join_interval_ms: 30_000,
            heartbeat_timeout_ms: 20_000,
            grace_period_ms: 100_000,
            document_lifetime_ms: 600_000,
            rejoin_interval_ms: 0,
        }
    }

    fn document(crowd: &str, epoch: u64, members: u64) -> CrowdDocument {
        CrowdDocument {
            crowd: crowd.into(),
            epoch,
            forward_probability: 0.75,
            issued_at: 10_000,
            expires_at: 610_000,
            members: (1..=members)
                .map(|id| Member {
                    id,
                    addr: format!("127.0.0.{id}:7000").parse().expect("addr"),
                    key: PublicKey([id as u8; 32]),
                    flags: 0,
                })
                .collect(),
        }
    }

    /// The JSON keeps its field names, and the page and the metrics show the same
    /// figures as the JSON (read from the struct, not back by string key).
    #[test]
    fn json_page_and_metrics_come_from_one_status() {
        let (default, other) = (config(DEFAULT_CROWD, 0.75), config("other", 0.5));
        let (d1, d2) = (document(DEFAULT_CROWD, 3, 2), document("other", 7, 1));
        let counts = |pending| Counts {
            accounts: 5,
            members: 0,
            pending,
            epoch: 0,
        };
        let silent = [2];
        let views = [
            CrowdView {
                config: &default,
                document: Some(&d1),
                counts: counts(1),
                silent: &silent,
            },
            CrowdView {
                config: &other,
                document: Some(&d2),
                counts: counts(4),
                silent: &[],
            },
        ];
        let counters = StatusCounters {
            heartbeats: 9,
            joins_pending: 2,
            ..StatusCounters::default()
        };
        let status = BlenderStatus::assemble(
            45_000,
            &views,
            "sqlite",
            5_000,
            counters,
            StatusLoad::default(),
        );
        let json = serde_json::to_value(&status).expect("json");
        assert_eq!(json["epoch"], 3);
        assert_eq!(json["members"], 2);
        assert_eq!(json["pending_joins"], 1);
        assert_eq!(json["accounts"], 5);
        assert_eq!(json["pf"], 0.75);
        assert_eq!(json["silent_members"], 1);
        assert_eq!(json["next_scheduled_epoch_ms"], 60_000);
        assert_eq!(json["uptime_s"], 40);
        assert_eq!(json["database"], "sqlite");
        assert_eq!(json["crowds"][1]["name"], "other");
        assert_eq!(json["crowds"][1]["pending_joins"], 4);
        assert_eq!(json["crowds"][0]["document_age_s"], 35);
        assert_eq!(json["member_list"][1]["silent"], true);
        assert_eq!(json["member_list"][0]["client_only"], false);
        assert_eq!(json["counters"]["heartbeats"], 9);
        assert_eq!(json["load"]["throttled_keys"], 0);
        let metrics = status.metrics();
        assert!(
            metrics.contains("crowds_blender_heartbeats_total 9"),
            "{metrics}"
        );
        assert!(metrics.contains("crowds_blender_epoch 3"), "{metrics}");
        assert!(
            metrics.contains("crowds_blender_pending_joins 1"),
            "{metrics}"
        );
        let html = status.html();
        assert!(html.contains("<b id=\"epoch\">3</b>"), "{html}");
        assert!(
            html.contains("<td>other</td><td>0.5</td><td>7</td>"),
            "{html}"
        );
        assert!(html.contains(" · silent"), "{html}");
    }
}
