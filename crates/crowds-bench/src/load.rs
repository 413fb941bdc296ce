//! Many concurrent clients through one jondo (requests/s, latency under load) and
//! the resident memory of jondos that run one process each.

use crate::client::{Mode, Target};
use crate::paths::SERIES_LIMIT;
use crate::progress;
use crate::results::*;
use crate::{client, crowd, proxies};
use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub(crate) async fn load(
    s: &Settings,
    origins: &[SocketAddr],
    crowd: &crowd::Crowd,
    tinyproxy: &Option<proxies::Proxy>,
    privoxy: &Option<proxies::Proxy>,
    results: &mut Results,
) -> Result<()> {
    let duration = Duration::from_secs_f64(s.load_seconds);
    let via = |proxy: SocketAddr| -> Vec<Target> {
        origins.iter().map(|o| Target::proxy(proxy, *o)).collect()
    };
    let mut runs: Vec<(String, Vec<Target>, Mode, Option<usize>)> = vec![(
        "direct to the origins".into(),
        origins
            .iter()
            .map(|o| Target::transparent(*o, *o))
            .collect(),
        Mode::KeepAlive,
        None,
    )];
    if let Some(p) = tinyproxy {
        runs.push(("tinyproxy".into(), via(p.addr), Mode::Fresh, None));
    }
    if let Some(p) = privoxy {
        runs.push(("privoxy".into(), via(p.addr), Mode::KeepAlive, None));
    }
    // Different initiators, so each run's exit connections come from another address.
    runs.push((
        "one jondo (path of 1)".into(),
        via(crowd.jondos[0].proxy_addr),
        Mode::Fresh,
        Some(1),
    ));
    runs.push((
        "one jondo (path of 1)".into(),
        via(crowd.jondos[1].proxy_addr),
        Mode::KeepAlive,
        Some(1),
    ));
    runs.push((
        "crowd path of 3 jondos".into(),
        via(crowd.jondos[2].proxy_addr),
        Mode::KeepAlive,
        Some(3),
    ));
    for (name, targets, mode, k) in runs {
        let conn = if mode == Mode::Fresh {
            "fresh"
        } else {
            "keep-alive"
        };
        progress(&format!("load: {name}, {} {conn} clients", s.streams));
        crowd::set_path_length(k);
        let result = client::load(&targets, "/whoami", s.streams, duration, mode).await;
        crowd::set_path_length(None);
        match result {
            Ok(load) => results.load.push(LoadRow {
                name,
                connections: conn.into(),
                load,
            }),
            Err(e) => results
                .notes
                .push(format!("load run {name} ({conn}) failed: {e:#}")),
        }
        // Let closed connections settle before the next run.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

/// Samples the memory of `pids` every 20 ms until stopped; returns each one's peak KiB.
pub(crate) fn sample_peaks(
    pids: Vec<u32>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<Vec<u64>> {
    tokio::spawn(async move {
        let mut peaks = vec![0u64; pids.len()];
        // Bounded: at most an hour of samples.
        for _ in 0..180_000 {
            for (peak, pid) in peaks.iter_mut().zip(&pids) {
                if let Some((rss, _)) = crowd::rss_kib(*pid) {
                    *peak = (*peak).max(rss);
                }
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
        peaks
    })
}

pub(crate) fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub(crate) fn rss_now(pids: &[u32]) -> Vec<u64> {
    pids.iter()
        .map(|p| crowd::rss_kib(*p).map_or(0, |(rss, _)| rss))
        .collect()
}

pub(crate) async fn memory(
    s: &Settings,
    path_jondos: usize,
    origins: &[SocketAddr],
    shutdown: &CancellationToken,
) -> Result<Memory> {
    const JONDOS: usize = 3;
    let path_jondos = path_jondos.max(1);
    let blender = crowd::start_blender(JONDOS, s.pf, shutdown.child_token()).await?;
    let mut starting = Vec::new();
    for i in 0..JONDOS {
        let ip = crowd::jondo_ip(20 + i);
        let path = (i == 0).then_some(path_jondos);
        starting.push(crowd::spawn_child(
            &blender,
            i,
            ip,
            JONDOS,
            path,
            s.jondo_threads,
        )?);
    }
    let mut children = Vec::new();
    for c in starting {
        children.push(c.ready().await?);
    }
    let pids: Vec<u32> = children.iter().map(|c| c.pid).collect();
    let entry = children[0].proxy;
    let origin = origins[0];
    let target = Target::proxy(entry, origin);
    let targets: Vec<Target> = origins.iter().map(|o| Target::proxy(entry, *o)).collect();
    let mut m = Memory {
        jondos: JONDOS,
        path_jondos,
        ..Memory::default()
    };
    let mut per = vec![[0f64; 6]; JONDOS];
    let max_mib = |v: &[u64]| mib(v.iter().copied().max().unwrap_or(0));

    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss_now(&pids);
    m.idle_mib = max_mib(&idle);
    for (p, v) in per.iter_mut().zip(&idle) {
        p[0] = mib(*v);
    }
    client::latency(&[target], "/whoami", 50, 0, Mode::KeepAlive, SERIES_LIMIT)
        .await
        .context("warm-up through the jondo processes")?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    m.idle_warm_mib = max_mib(&rss_now(&pids));
    match client::latency(
        &[target],
        "/whoami",
        s.requests,
        s.warmup,
        Mode::KeepAlive,
        SERIES_LIMIT,
    )
    .await
    {
        Ok(l) => m.keepalive = Some(l),
        Err(e) => m.note.push_str(&format!("latency failed: {e:#}; ")),
    }

    progress("memory: transfer");
    let stop = CancellationToken::new();
    let sampler = sample_peaks(pids.clone(), stop.clone());
    let transfer = client::download(&target, s.transfer_bytes).await;
    stop.cancel();
    let peaks = sampler.await?;
    m.transfer_mib = max_mib(&peaks);
    for (p, v) in per.iter_mut().zip(&peaks) {
        p[1] = mib(*v);
    }
    m.transfer_bytes = s.transfer_bytes;
    match transfer {
        Ok(t) => m.transfer_mb_per_s = t.mb_per_s,
        Err(e) => m.note.push_str(&format!("transfer failed: {e:#}; ")),
    }

    progress(&format!("memory: {} busy keep-alive clients", s.streams));
    let stop = CancellationToken::new();
    let sampler = sample_peaks(pids.clone(), stop.clone());
    let busy = client::load(
        &targets,
        "/whoami",
        s.streams,
        Duration::from_secs_f64(s.load_seconds),
        Mode::KeepAlive,
    )
    .await;
    stop.cancel();
    let peaks = sampler.await?;
    m.busy_streams_mib = max_mib(&peaks);
    for (p, v) in per.iter_mut().zip(&peaks) {
        p[3] = mib(*v);
    }
    match busy {
        Ok(l) => m.busy_requests_per_s = l.requests_per_s,
        Err(e) => m.note.push_str(&format!("busy clients failed: {e:#}; ")),
    }

    tokio::time::sleep(Duration::from_secs(1)).await;

    progress(&format!("memory: {} open streams", s.streams));
    let stop = CancellationToken::new();
    let sampler = sample_peaks(pids.clone(), stop.clone());
    let (open, failed, first_error) =
        client::open_stalled(&targets, s.streams, crowds_demo::site::MAX_BLOB).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    let peaks = sampler.await?;
    m.open_streams = open.len();
    m.open_failed = failed;
    if let Some(e) = first_error {
        m.note
            .push_str(&format!("open streams: {failed} failed, first: {e}; "));
    }
    drop(open);
    m.open_streams_mib = max_mib(&peaks);
    for (p, v) in per.iter_mut().zip(&peaks) {
        p[2] = mib(*v);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_now(&pids);
    m.idle_after_mib = max_mib(&after);
    let hwm: Vec<u64> = pids
        .iter()
        .map(|p| crowd::rss_kib(*p).map_or(0, |(_, h)| h))
        .collect();
    m.hwm_mib = max_mib(&hwm);
    for (i, p) in per.iter_mut().enumerate() {
        p[4] = mib(after[i]);
        p[5] = mib(hwm[i]);
    }
    m.per_jondo = per;
    for c in children {
        c.stop().await;
    }
    Ok(m)
}
