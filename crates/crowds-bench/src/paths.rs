//! Path latency: chains of plain and TLS relays, crowds with paths of exactly k
//! jondos, a crowd at pf = 0.75 and single-hop proxies, measured the same way against
//! the same origin; and the TIME_WAIT note that explains outliers.

use crate::client::{Latency, Mode, Target, Transfer};
use crate::progress;
use crate::results::*;
use crate::{client, crowd, proxies, relays};
use anyhow::{Context, Result};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// TIME_WAIT sockets per local IPv4 address (`/proc/net/tcp`, state 06).
pub(crate) fn time_wait_by_address() -> std::collections::HashMap<Ipv4Addr, usize> {
    let mut counts = std::collections::HashMap::new();
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.get(3) != Some(&"06") {
            continue;
        }
        let Some(ip) = f
            .get(1)
            .and_then(|a| a.split(':').next())
            .and_then(|h| u32::from_str_radix(h, 16).ok())
        else {
            continue;
        };
        // The kernel prints the address in host byte order (little-endian here).
        *counts.entry(Ipv4Addr::from(ip.to_le_bytes())).or_insert(0) += 1;
    }
    counts
}

/// Exits connect to servers from their own address with a fresh connection per
/// request. They ask the server to close first (`Connection: close`); a request whose
/// connection the exit closes first leaves a TIME_WAIT socket holding one of that
/// address's ephemeral ports for 60 s, and this note counts them.
pub(crate) fn time_wait_note(crowd_size: usize) -> String {
    let counts = time_wait_by_address();
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|v| v.parse::<u32>().ok())
        .collect::<Vec<_>>();
    let ports = match range.as_slice() {
        [lo, hi] => format!("{}", hi - lo + 1),
        _ => "?".into(),
    };
    let per: Vec<String> = (0..crowd_size)
        .map(|i| {
            let ip = Ipv4Addr::new(127, 0, 0, 2 + i as u8);
            format!("{ip}: {}", counts.get(&ip).copied().unwrap_or(0))
        })
        .collect();
    format!(
        "TIME_WAIT sockets on the jondos' addresses at the end (each holds one of {ports} ephemeral ports for 60 s): {}",
        per.join(", ")
    )
}

/// Upper bound on the wall time of one latency series.
pub(crate) const SERIES_LIMIT: Duration = Duration::from_secs(180);

/// One way from the client to the origin, to be measured.
pub(crate) struct Way {
    name: String,
    kind: &'static str,
    k: Option<usize>,
    /// Latency requests go to a random one of these.
    targets: Vec<Target>,
    /// The transfer goes here (`None`: no transfer).
    transfer: Option<Target>,
    /// Processes besides this one whose CPU time counts (external proxies).
    pids: Vec<u32>,
    /// Measure keep-alive latency (not for servers that close every connection).
    keepalive: bool,
    note: String,
}

/// Measures `ways` side by side: latency requests interleaved across the ways (fresh
/// connections, then keep-alive), then transfers, run by run across the ways, keeping
/// each way's best run.
pub(crate) async fn measure_ways(ways: Vec<Way>, s: &Settings, requests: usize) -> Vec<PathRow> {
    let mut rows: Vec<PathRow> = ways
        .iter()
        .map(|w| PathRow {
            name: w.name.clone(),
            kind: w.kind.into(),
            k: w.k,
            fresh: None,
            keepalive: None,
            transfer: None,
            note: w.note.clone(),
        })
        .collect();
    let mut notes: Vec<Vec<String>> = ways.iter().map(|_| Vec::new()).collect();
    for mode in [Mode::Fresh, Mode::KeepAlive] {
        let chosen: Vec<usize> = (0..ways.len())
            .filter(|i| mode == Mode::Fresh || ways[*i].keepalive)
            .collect();
        let groups: Vec<client::Group> = chosen
            .iter()
            .map(|i| client::Group {
                targets: ways[*i].targets.clone(),
                pids: ways[*i].pids.clone(),
            })
            .collect();
        let results =
            client::latency_interleaved(&groups, "/whoami", requests, s.warmup, mode, SERIES_LIMIT)
                .await;
        for (i, r) in chosen.into_iter().zip(results) {
            let name = if mode == Mode::Fresh {
                "fresh"
            } else {
                "keep-alive"
            };
            match r {
                Ok(l) if mode == Mode::Fresh => rows[i].fresh = Some(l),
                Ok(l) => rows[i].keepalive = Some(l),
                Err(e) => notes[i].push(format!("{name} latency failed: {e:#}")),
            }
        }
    }
    let mut runs: Vec<Vec<Transfer>> = ways.iter().map(|_| Vec::new()).collect();
    for _ in 0..s.transfer_runs.max(1) {
        for (i, w) in ways.iter().enumerate() {
            let Some(target) = w.transfer else { continue };
            let cpu0 = client::CpuSnapshot::take(&w.pids);
            match client::download(&target, s.transfer_bytes).await {
                Ok(mut t) => {
                    t.cpu_s_per_gb = cpu0.elapsed() / (t.bytes as f64 / 1e9);
                    runs[i].push(t);
                }
                Err(e) => notes[i].push(format!("transfer failed: {e:#}")),
            }
        }
    }
    for (i, r) in runs.into_iter().enumerate() {
        let all: Vec<f64> = r.iter().map(|t| t.mb_per_s).collect();
        let cpu: Vec<f64> = r.iter().map(|t| t.cpu_s_per_gb).collect();
        if let Some(mut best) = r
            .into_iter()
            .max_by(|a, b| a.mb_per_s.total_cmp(&b.mb_per_s))
        {
            // CPU cost per GB: the lowest run (least disturbed by other work).
            best.cpu_s_per_gb = cpu.iter().copied().fold(f64::INFINITY, f64::min);
            best.runs_mb_per_s = all;
            rows[i].transfer = Some(best);
        }
    }
    for (row, n) in rows.iter_mut().zip(notes) {
        for n in n {
            if !row.note.is_empty() {
                row.note.push_str("; ");
            }
            row.note.push_str(&n);
        }
    }
    rows
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn paths(
    s: &Settings,
    way: &dyn Fn(&str) -> bool,
    origin: SocketAddr,
    crowd: &mut crowd::Crowd,
    tinyproxy: &Option<proxies::Proxy>,
    privoxy: &Option<proxies::Proxy>,
    shutdown: &CancellationToken,
    results: &mut Results,
) -> Result<()> {
    let jondo0 = Target::proxy(crowd.jondos[0].proxy_addr, origin);
    let initiators: Vec<Target> = crowd
        .jondos
        .iter()
        .map(|j| Target::proxy(j.proxy_addr, origin))
        .collect();
    // The same, as a browser sends HTTPS: inside one CONNECT tunnel per connection.
    let tunnels: Vec<Target> = crowd
        .jondos
        .iter()
        .map(|j| Target::tunnel(j.proxy_addr, origin))
        .collect();
    // Open the links the exact-length paths will use before measuring anything.
    let kmax = s.ks.iter().copied().max().unwrap_or(1);
    crowd::set_path_length(Some(kmax.max(2)));
    client::latency(
        &initiators,
        "/whoami",
        40 * s.crowd_size,
        0,
        Mode::KeepAlive,
        SERIES_LIMIT,
    )
    .await
    .context("warming up the crowd's links")?;
    crowd::set_path_length(None);

    if way("direct") {
        progress("paths: direct");
        let direct = Target::transparent(origin, origin);
        let rows = measure_ways(
            vec![Way {
                name: "direct to the origin".into(),
                kind: "direct",
                k: Some(0),
                targets: vec![direct],
                transfer: Some(direct),
                pids: Vec::new(),
                keepalive: true,
                note: String::new(),
            }],
            s,
            s.requests,
        )
        .await;
        results.paths.extend(rows);
    }

    for &k in &s.ks {
        let mut ways = Vec::new();
        for (kind, label, base) in [
            (relays::Kind::Tcp, "tcp", 1u8),
            (relays::Kind::Tls, "tls", 2u8),
        ] {
            if !way(label) {
                continue;
            }
            let ips: Vec<IpAddr> = (0..k)
                .map(|i| IpAddr::V4(Ipv4Addr::new(127, base, k as u8, 1 + i as u8)))
                .collect();
            let entry =
                relays::start_chain(kind, &ips, origin, shutdown.child_token(), s.hop_threads)
                    .await?;
            let target = Target::transparent(entry, origin);
            ways.push(Way {
                name: format!("{} relays", label.to_uppercase()),
                kind: label,
                k: Some(k),
                targets: vec![target],
                transfer: Some(target),
                pids: Vec::new(),
                keepalive: true,
                note: String::new(),
            });
        }
        if way("crowd") {
            ways.push(Way {
                name: "crowd, exact path".into(),
                kind: "crowd",
                k: Some(k),
                // Random initiators, so exits (which bind their own address for every
                // request) spread over the crowd's addresses as they do in a crowd.
                targets: initiators.clone(),
                transfer: Some(jondo0),
                pids: Vec::new(),
                keepalive: true,
                note: String::new(),
            });
        }
        if way("tunnel") {
            ways.push(Way {
                name: "crowd, exact, CONNECT".into(),
                kind: "crowd-tunnel",
                k: Some(k),
                targets: tunnels.clone(),
                transfer: Some(Target::tunnel(crowd.jondos[0].proxy_addr, origin)),
                pids: Vec::new(),
                keepalive: true,
                note: String::new(),
            });
        }
        if ways.is_empty() {
            continue;
        }
        progress(&format!(
            "paths: k = {k}: TCP relays, TLS relays, crowd path of exactly {k} jondos (proxy form and CONNECT tunnel)"
        ));
        crowd::set_path_length(Some(k));
        let rows = measure_ways(ways, s, s.requests).await;
        crowd::set_path_length(None);
        results.paths.extend(rows);
    }

    // The normal crowd beside tinyproxy and privoxy, over several epochs: paths are
    // static within an epoch, so each epoch samples a new path for every initiator.
    let epochs = s.pf_epochs.max(1);
    let per_epoch = s.requests.div_ceil(epochs);
    let mut parts: Vec<Vec<PathRow>> = Vec::new();
    let mut lengths = Vec::new();
    let (r0, i0) = (crowd.relayed(), crowd.initiated());
    for epoch in 0..epochs {
        if epoch > 0 {
            crowd.add_member().await?;
        }
        let mut ways = Vec::new();
        if way("pf") {
            let (mut w, l) = pf_way(s, origin, crowd).await?;
            lengths.push(l);
            if epoch > 0 {
                w.transfer = None;
            }
            ways.push(w);
        }
        if way("proxies") {
            for p in [tinyproxy, privoxy].into_iter().flatten() {
                // tinyproxy closes every client connection after one response.
                let keepalive = p.name != "tinyproxy";
                let target = Target::proxy(p.addr, origin);
                ways.push(Way {
                    name: p.name.into(),
                    kind: "proxy",
                    k: Some(1),
                    targets: vec![target],
                    transfer: (epoch == 0).then_some(target),
                    pids: p.pid.into_iter().collect(),
                    keepalive,
                    note: if keepalive {
                        String::new()
                    } else {
                        "closes every client connection after one response".into()
                    },
                });
            }
        }
        if ways.is_empty() {
            break;
        }
        progress(&format!(
            "paths: normal crowd (pf = {}, epoch {} of {epochs}) beside tinyproxy and privoxy",
            s.pf,
            epoch + 1
        ));
        parts.push(measure_ways(ways, s, per_epoch).await);
    }
    let (r1, i1) = (crowd.relayed(), crowd.initiated());
    if let Some(first) = parts.first() {
        let mut rows = first.clone();
        for (i, row) in rows.iter_mut().enumerate() {
            let fresh: Vec<Latency> = parts.iter().filter_map(|p| p[i].fresh.clone()).collect();
            let keep: Vec<Latency> = parts
                .iter()
                .filter_map(|p| p[i].keepalive.clone())
                .collect();
            row.fresh = Latency::merge(fresh);
            row.keepalive = Latency::merge(keep);
            if row.kind == "crowd-pf" {
                let mean = 1.0 + (r1 - r0) as f64 / (i1 - i0).max(1) as f64;
                let mut all: Vec<usize> = lengths.iter().flatten().copied().collect();
                all.sort_unstable();
                let list: Vec<String> = lengths
                    .iter()
                    .map(|l| {
                        l.iter()
                            .map(|x| x.to_string())
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .collect();
                row.note = format!(
                    "random initiator of {}, {epochs} epochs (a member joins before each, re-forming all paths); {mean:.2} jondos per request on average; the initiators' static paths had {} jondos; {}",
                    s.crowd_size,
                    list.join(" | "),
                    row.note
                );
            }
        }
        results.paths.extend(rows);
    }
    slopes(results);
    Ok(())
}

/// The normal crowd at the crowd's pf. Paths are static (each initiator keeps one until
/// the crowd changes), so one request from each initiator tells its path's length
/// (self-loops not counted); latency requests go to random initiators, and the transfer
/// through the initiator whose path has the median length. Returns the way and the
/// initiators' path lengths.
pub(crate) async fn pf_way(
    s: &Settings,
    origin: SocketAddr,
    crowd: &crowd::Crowd,
) -> Result<(Way, Vec<usize>)> {
    let all: Vec<Target> = crowd
        .jondos
        .iter()
        .take(s.crowd_size)
        .map(|j| Target::proxy(j.proxy_addr, origin))
        .collect();
    let mut lengths = Vec::new();
    for (i, t) in all.iter().enumerate() {
        let r0 = crowd.relayed();
        let mut sender = client::connect(t).await?;
        client::get_small(&mut sender, t, "/whoami").await?;
        lengths.push((1 + crowd.relayed() - r0, i));
    }
    let mut sorted = lengths.clone();
    sorted.sort();
    let (median_len, median_at) = sorted[(sorted.len() - 1) / 2];
    let way = Way {
        name: format!("crowd, pf = {}", s.pf),
        kind: "crowd-pf",
        k: None,
        transfer: Some(all[median_at]),
        targets: all,
        pids: Vec::new(),
        keepalive: true,
        note: format!("transfer on a path of {median_len} jondos (first epoch, median path)"),
    };
    Ok((way, lengths.iter().map(|(l, _)| *l as usize).collect()))
}
