//! The client side of every measurement: a hyper HTTP/1.1 client.
//!
//! Small GETs (`/whoami`) for latency, a fresh TCP connection per request or one
//! keep-alive connection (through a proxy either in proxy form or inside a `CONNECT`
//! tunnel, as a browser sends HTTPS); `/blob/N` downloads for throughput (every frame's
//! first byte is checked against the origin's pattern, and the length must match); and
//! many concurrent clients for load. Every request has a timeout and every loop a bound
//! in count and time.

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rand::Rng;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Time allowed for one small request (connect included).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A request sender on one HTTP/1.1 connection.
pub type Sender = SendRequest<Empty<Bytes>>;

/// Where a client sends its requests, and in which form.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    /// The address the client connects to (origin, first relay or proxy).
    pub connect: SocketAddr,
    /// The origin server the requests are for.
    pub origin: SocketAddr,
    /// Proxy form (absolute URI) rather than origin form.
    pub proxy: bool,
    /// Through a `CONNECT` tunnel opened at `connect` (requests in origin form inside).
    pub tunnel: bool,
}

impl Target {
    /// Straight to the origin (or through transparent relays starting at `connect`).
    pub fn transparent(connect: SocketAddr, origin: SocketAddr) -> Self {
        Self {
            connect,
            origin,
            proxy: false,
            tunnel: false,
        }
    }

    /// Through an HTTP proxy.
    pub fn proxy(proxy: SocketAddr, origin: SocketAddr) -> Self {
        Self {
            connect: proxy,
            origin,
            proxy: true,
            tunnel: false,
        }
    }

    /// Inside a `CONNECT` tunnel through an HTTP proxy, one tunnel per connection.
    pub fn tunnel(proxy: SocketAddr, origin: SocketAddr) -> Self {
        Self {
            connect: proxy,
            origin,
            proxy: false,
            tunnel: true,
        }
    }

    fn request(&self, path: &str) -> Result<Request<Empty<Bytes>>> {
        let uri = if self.proxy {
            format!("http://{}{}", self.origin, path)
        } else {
            path.to_string()
        };
        Ok(Request::get(uri)
            .header(header::HOST, self.origin.to_string())
            .body(Empty::new())?)
    }
}

/// Opens a TCP connection (no Nagle) and an HTTP/1.1 client on it.
pub async fn connect(target: &Target) -> Result<Sender> {
    let stream = tokio::time::timeout(REQUEST_TIMEOUT, TcpStream::connect(target.connect))
        .await
        .map_err(|_| anyhow!("connect to {} timed out", target.connect))?
        .with_context(|| format!("connect to {}", target.connect))?;
    stream.set_nodelay(true)?;
    let stream = if target.tunnel {
        tokio::time::timeout(REQUEST_TIMEOUT, open_tunnel(stream, target.origin))
            .await
            .map_err(|_| anyhow!("CONNECT through {} timed out", target.connect))??
    } else {
        stream
    };
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Sends `CONNECT origin` on `stream` and reads the proxy's answer up to the end of its
/// head; the stream then carries the tunnel.
pub(crate) async fn open_tunnel(mut stream: TcpStream, origin: SocketAddr) -> Result<TcpStream> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let head = format!("CONNECT {origin} HTTP/1.1\r\nHost: {origin}\r\n\r\n");
    stream.write_all(head.as_bytes()).await?;
    // Byte by byte, so nothing after the head (the tunnel's first bytes) is consumed.
    let mut got = Vec::new();
    while !got.ends_with(b"\r\n\r\n") {
        if got.len() > 8192 {
            bail!("CONNECT answer head longer than 8 KiB");
        }
        let mut byte = [0u8; 1];
        if stream.read(&mut byte).await? == 0 {
            bail!("proxy closed the connection during CONNECT");
        }
        got.push(byte[0]);
    }
    let status_line = String::from_utf8_lossy(&got);
    let status_line = status_line.lines().next().unwrap_or_default();
    if status_line.split_whitespace().nth(1) != Some("200") {
        bail!("CONNECT refused: {status_line}");
    }
    Ok(stream)
}

/// One small GET on `sender`; the whole body is read. Returns the body length.
pub async fn get_small(sender: &mut Sender, target: &Target, path: &str) -> Result<usize> {
    tokio::time::timeout(REQUEST_TIMEOUT, async {
        sender.ready().await?;
        let resp = sender.send_request(target.request(path)?).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        if status != StatusCode::OK {
            bail!(
                "status {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(160)]).trim()
            );
        }
        Ok(body.len())
    })
    .await
    .map_err(|_| anyhow!("request timed out after {REQUEST_TIMEOUT:?}"))?
}

/// Latency figures of a series of requests, in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Requests measured.
    pub requests: usize,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Mean.
    pub mean_us: f64,
    /// Failed requests (not in the figures).
    pub errors: u64,
    /// Keep-alive connections the server closed (a reconnect was needed).
    pub reconnects: u64,
    /// The first error, if any.
    pub first_error: Option<String>,
    /// CPU time per measured request, microseconds, over every process of the way
    /// (client, relays or jondos, origin); `NaN` when not measured.
    pub cpu_us_per_request: f64,
    /// The measured latencies, sorted (for merging series).
    #[serde(skip)]
    pub samples: Vec<f64>,
}

impl Latency {
    /// One series made of several (for instance of several crowd epochs).
    pub fn merge(parts: Vec<Latency>) -> Option<Latency> {
        if parts.is_empty() {
            return None;
        }
        let cpu: f64 = parts
            .iter()
            .map(|p| p.cpu_us_per_request * p.requests as f64)
            .sum();
        let us: Vec<f64> = parts
            .iter()
            .flat_map(|p| p.samples.iter().copied())
            .collect();
        let errors = parts.iter().map(|p| p.errors).sum();
        let reconnects = parts.iter().map(|p| p.reconnects).sum();
        let first_error = parts.iter().find_map(|p| p.first_error.clone());
        let mut l = summarize(us, errors, reconnects, first_error);
        l.cpu_us_per_request = cpu / l.requests.max(1) as f64;
        Some(l)
    }
}

/// Percentile `q` (0..=1) of sorted values, nearest rank.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summarize(
    mut us: Vec<f64>,
    errors: u64,
    reconnects: u64,
    first_error: Option<String>,
) -> Latency {
    us.sort_by(f64::total_cmp);
    let mean = if us.is_empty() {
        f64::NAN
    } else {
        us.iter().sum::<f64>() / us.len() as f64
    };
    Latency {
        requests: us.len(),
        p50_us: percentile(&us, 0.5),
        p99_us: percentile(&us, 0.99),
        mean_us: mean,
        errors,
        reconnects,
        first_error,
        cpu_us_per_request: f64::NAN,
        samples: us,
    }
}

/// How a latency series uses connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A new TCP connection for every request (connect time included).
    Fresh,
    /// One connection per target, reused (reconnect if the server closes it).
    KeepAlive,
}

/// Sends `warmup + n` sequential small GETs, each to a random one of `targets`, and
/// returns the latency of the last `n`. Stops early after `limit` of wall time or when
/// more than a tenth of the requests failed.
pub async fn latency(
    targets: &[Target],
    path: &str,
    n: usize,
    warmup: usize,
    mode: Mode,
    limit: Duration,
) -> Result<Latency> {
    let group = Group {
        targets: targets.to_vec(),
        pids: Vec::new(),
    };
    latency_interleaved(&[group], path, n, warmup, mode, limit)
        .await
        .pop()
        .unwrap_or_else(|| Err(anyhow!("no result")))
}

/// Targets measured together as one way: each request goes to a random one of them.
#[derive(Debug, Clone)]
pub struct Group {
    /// The targets.
    pub targets: Vec<Target>,
    /// Processes besides this one whose CPU time counts (external proxies).
    pub pids: Vec<u32>,
}

/// Latency state of one group of targets.
#[derive(Default)]
struct Series {
    cpu: f64,
    senders: Vec<Option<Sender>>,
    us: Vec<f64>,
    errors: u64,
    reconnects: u64,
    first_error: Option<String>,
    failed: bool,
}

/// Requests measured in a row for one group before the next group's turn.
const BLOCK: usize = 50;

impl Series {
    /// One request to a random target of the group; returns its duration.
    async fn request(&mut self, targets: &[Target], path: &str, mode: Mode) -> Result<Duration> {
        let t = if targets.len() == 1 {
            0
        } else {
            rand::thread_rng().gen_range(0..targets.len())
        };
        let target = targets[t];
        let t0 = Instant::now();
        let result = match mode {
            Mode::Fresh => match connect(&target).await {
                Ok(mut s) => get_small(&mut s, &target, path).await,
                Err(e) => Err(e),
            },
            Mode::KeepAlive => {
                let slot = &mut self.senders[t];
                if slot.as_ref().is_some_and(|s| s.is_closed()) {
                    *slot = None;
                    self.reconnects += 1;
                }
                let sender = match slot {
                    Some(s) => Ok(s),
                    None => connect(&target).await.map(|s| slot.insert(s)),
                };
                match sender {
                    Ok(s) => {
                        let r = get_small(s, &target, path).await;
                        if r.is_err() {
                            *slot = None;
                        }
                        r
                    }
                    Err(e) => Err(e),
                }
            }
        };
        let elapsed = t0.elapsed();
        if let Err(e) = &result {
            self.errors += 1;
            self.first_error.get_or_insert_with(|| format!("{e:#}"));
        }
        result.map(|_| elapsed)
    }
}

/// Like [`latency`] for several groups at once, interleaved: the groups take turns
/// (rotating order) with blocks of 50 measured requests, so all groups see the same
/// stretches of the machine's time and their ratios stay fair while other work comes
/// and goes. Each turn starts with a 2 ms pause and one unmeasured request, so the
/// previous group's connection teardown does not land in this group's figures. A
/// group is given up (its result is an error) when more than a tenth of its requests
/// fail.
pub async fn latency_interleaved(
    groups: &[Group],
    path: &str,
    n: usize,
    warmup: usize,
    mode: Mode,
    limit: Duration,
) -> Vec<Result<Latency>> {
    let started = Instant::now();
    let mut series: Vec<Series> = groups
        .iter()
        .map(|g| Series {
            senders: g.targets.iter().map(|_| None).collect(),
            us: Vec::with_capacity(n),
            failed: g.targets.is_empty(),
            ..Series::default()
        })
        .collect();
    let max_errors = (warmup + n) as u64 / 10 + 5;
    for (group, st) in groups.iter().zip(series.iter_mut()) {
        for _ in 0..warmup {
            if st.failed || started.elapsed() > limit {
                break;
            }
            let _ = st.request(&group.targets, path, mode).await;
            st.failed = st.errors > max_errors;
        }
        // Reconnects during warm-up (first connections) do not count.
        st.reconnects = 0;
    }
    // Bounded: every round measures at least one request of an unfinished group, or
    // counts an error towards giving that group up.
    let max_rounds = n.div_ceil(BLOCK) + max_errors as usize + 1;
    for round in 0..max_rounds {
        if started.elapsed() > limit {
            break;
        }
        let mut busy = false;
        for j in 0..groups.len() {
            let gi = (round + j) % groups.len();
            let (group, st) = (&groups[gi], &mut series[gi]);
            if st.failed || st.us.len() >= n {
                continue;
            }
            busy = true;
            tokio::time::sleep(Duration::from_millis(2)).await;
            let _ = st.request(&group.targets, path, mode).await;
            let want = BLOCK.min(n - st.us.len());
            let cpu0 = CpuSnapshot::take(&group.pids);
            for _ in 0..want {
                if st.failed || started.elapsed() > limit {
                    break;
                }
                match st.request(&group.targets, path, mode).await {
                    Ok(d) => st.us.push(d.as_secs_f64() * 1e6),
                    Err(_) => st.failed = st.errors > max_errors,
                }
            }
            st.cpu += cpu0.elapsed();
        }
        if !busy {
            break;
        }
    }
    series
        .into_iter()
        .map(|st| {
            if st.failed || st.us.is_empty() {
                bail!(
                    "{} errors, {} requests succeeded; first error: {}",
                    st.errors,
                    st.us.len(),
                    st.first_error.unwrap_or_default()
                );
            }
            let measured = st.us.len() as f64;
            let mut l = summarize(st.us, st.errors, st.reconnects, st.first_error);
            l.cpu_us_per_request = st.cpu * 1e6 / measured;
            Ok(l)
        })
        .collect()
}

/// A measured download.
#[derive(Debug, Clone, Serialize)]
pub struct Transfer {
    /// Bytes received (all checked).
    pub bytes: u64,
    /// Seconds from connect to the last byte.
    pub seconds: f64,
    /// Throughput, 10^6 bytes per second.
    pub mb_per_s: f64,
    /// Every run's throughput when the best of several is reported.
    pub runs_mb_per_s: Vec<f64>,
    /// CPU time (user + system, every process of the way) per GB moved, seconds;
    /// a figure that other load on the machine disturbs less than throughput.
    pub cpu_s_per_gb: f64,
}

/// Downloads `/blob/{bytes}` through `target`, checking length and content.
pub async fn download(target: &Target, bytes: u64) -> Result<Transfer> {
    let limit = Duration::from_secs(60 + bytes / 5_000_000);
    let t0 = Instant::now();
    let got = tokio::time::timeout(limit, async {
        let mut sender = connect(target).await?;
        let resp = sender
            .send_request(target.request(&format!("/blob/{bytes}"))?)
            .await?;
        if resp.status() != StatusCode::OK {
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            bail!(
                "status {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(160)]).trim()
            );
        }
        read_blob(resp).await
    })
    .await
    .map_err(|_| anyhow!("download timed out after {limit:?}"))??;
    let seconds = t0.elapsed().as_secs_f64();
    if got != bytes {
        bail!("download cut short: {got} of {bytes} bytes");
    }
    Ok(Transfer {
        bytes,
        seconds,
        mb_per_s: bytes as f64 / seconds / 1e6,
        runs_mb_per_s: Vec::new(),
        cpu_s_per_gb: f64::NAN,
    })
}

async fn read_blob(resp: Response<Incoming>) -> Result<u64> {
    let mut body = resp.into_body();
    let mut offset = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if let Some(first) = data.first() {
                if *first != crowds_demo::site::blob_byte(offset) {
                    bail!("wrong byte at offset {offset}");
                }
            }
            offset += data.len() as u64;
        }
    }
    Ok(offset)
}

/// Throughput and latency of many concurrent clients.
#[derive(Debug, Clone, Serialize)]
pub struct Load {
    /// Concurrent clients.
    pub clients: usize,
    /// Clients that were ready when measuring began.
    pub ready: usize,
    /// Measured seconds.
    pub seconds: f64,
    /// Successful requests in that time.
    pub ok: u64,
    /// Requests per second.
    pub requests_per_s: f64,
    /// Latency under this load.
    pub latency: Latency,
}

/// `clients` concurrent clients (client `i` uses `targets[i % len]`), each sending small
/// GETs back to back for `duration` (fresh connections, or one keep-alive connection
/// each). Each client first sends one request, unmeasured; measuring starts when all
/// are ready.
pub async fn load(
    targets: &[Target],
    path: &str,
    clients: usize,
    duration: Duration,
    mode: Mode,
) -> Result<Load> {
    if targets.is_empty() || clients == 0 {
        bail!("no target or no client");
    }
    const MAX_PER_CLIENT: usize = 1_000_000;
    let barrier = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let path: Arc<str> = Arc::from(path);
    let mut tasks = Vec::with_capacity(clients);
    for i in 0..clients {
        let target = targets[i % targets.len()];
        let barrier = barrier.clone();
        let path = path.clone();
        tasks.push(tokio::spawn(async move {
            // Warm-up: connect and one request, bounded in time.
            let mut sender: Option<Sender> = None;
            let warm = tokio::time::timeout(Duration::from_secs(60), async {
                let mut s = connect(&target).await?;
                get_small(&mut s, &target, &path).await?;
                Ok::<_, anyhow::Error>(s)
            })
            .await;
            let ready = matches!(warm, Ok(Ok(_)));
            if let (Mode::KeepAlive, Ok(Ok(s))) = (mode, warm) {
                sender = Some(s);
            }
            barrier.wait().await;
            let deadline = Instant::now() + duration;
            let mut us: Vec<f64> = Vec::new();
            let (mut errors, mut reconnects) = (0u64, 0u64);
            let mut first_error = None;
            while Instant::now() < deadline && us.len() < MAX_PER_CLIENT {
                let t0 = Instant::now();
                let result = match mode {
                    Mode::Fresh => match connect(&target).await {
                        Ok(mut s) => get_small(&mut s, &target, &path).await,
                        Err(e) => Err(e),
                    },
                    Mode::KeepAlive => {
                        if sender.as_ref().is_none_or(|s| s.is_closed()) {
                            reconnects += 1;
                            sender = connect(&target).await.ok();
                        }
                        match sender.as_mut() {
                            Some(s) => get_small(s, &target, &path).await,
                            None => Err(anyhow!("cannot connect to {}", target.connect)),
                        }
                    }
                };
                match result {
                    Ok(_) => us.push(t0.elapsed().as_secs_f64() * 1e6),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                        if mode == Mode::KeepAlive {
                            sender = None;
                        }
                        // Do not spin on a refusing server.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            (ready, us, errors, reconnects, first_error)
        }));
    }
    barrier.wait().await;
    let start = Instant::now();
    let mut all = Vec::new();
    let (mut errors, mut reconnects, mut ready) = (0u64, 0u64, 0usize);
    let mut first_error = None;
    for t in tasks {
        let (r, us, e, rc, fe) = t.await?;
        ready += usize::from(r);
        all.extend(us);
        errors += e;
        reconnects += rc;
        if first_error.is_none() {
            first_error = fe;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let ok = all.len() as u64;
    Ok(Load {
        clients,
        ready,
        seconds,
        ok,
        requests_per_s: ok as f64 / seconds,
        latency: summarize(all, errors, reconnects, first_error),
    })
}

/// A download whose response head arrived and whose body is left unread.
pub struct Stalled {
    _sender: Sender,
    _response: Response<Incoming>,
}

/// Opens `clients` concurrent downloads of `/blob/{bytes}` (client `i` through
/// `targets[i % len]`), waits for each response head and returns them unread, with the
/// number of downloads that could not be opened and the first error.
pub async fn open_stalled(
    targets: &[Target],
    clients: usize,
    bytes: u64,
) -> (Vec<Stalled>, usize, Option<String>) {
    let mut set = tokio::task::JoinSet::new();
    for i in 0..clients {
        let target = targets[i % targets.len()];
        set.spawn(async move {
            tokio::time::timeout(Duration::from_secs(60), async move {
                let mut sender = connect(&target).await?;
                let resp = sender
                    .send_request(target.request(&format!("/blob/{bytes}"))?)
                    .await?;
                if resp.status() != StatusCode::OK {
                    bail!("status {}", resp.status());
                }
                Ok(Stalled {
                    _sender: sender,
                    _response: resp,
                })
            })
            .await
            .map_err(|_| anyhow!("no response head within 60 s"))?
        });
    }
    let mut open = Vec::with_capacity(clients);
    let mut failed = 0;
    let mut first_error = None;
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok(s)) => open.push(s),
            Ok(Err(e)) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    (open, failed, first_error)
}

/// CPU time of every thread of this process and of some other processes, per thread
/// (the first field of `/proc/PID/task/TID/schedstat`: nanoseconds on a CPU; the
/// kernel brings a running thread's figure up to date at its next tick, so a single
/// short interval can be off by a few milliseconds; sums over many are not).
pub struct CpuSnapshot {
    pids: Vec<u32>,
    threads: std::collections::HashMap<(u32, u32), u64>,
}

fn thread_times(pids: &[u32]) -> std::collections::HashMap<(u32, u32), u64> {
    let mut out = std::collections::HashMap::new();
    for pid in std::iter::once(std::process::id()).chain(pids.iter().copied()) {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let Some(tid) = t.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let ns = std::fs::read_to_string(t.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok());
            if let Some(ns) = ns {
                out.insert((pid, tid), ns);
            }
        }
    }
    out
}

impl CpuSnapshot {
    /// Reads the CPU time of this process's threads and of `pids`' threads now.
    pub fn take(pids: &[u32]) -> Self {
        Self {
            pids: pids.to_vec(),
            threads: thread_times(pids),
        }
    }

    /// CPU seconds used since the snapshot by the threads alive now (threads that
    /// ended in between are left out rather than subtracted).
    pub fn elapsed(&self) -> f64 {
        let now = thread_times(&self.pids);
        let ns: u64 = now
            .iter()
            .map(|(k, v)| v.saturating_sub(self.threads.get(k).copied().unwrap_or(0)))
            .sum();
        ns as f64 / 1e9
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[7.0], 0.5), 7.0);
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn cpu_time_is_counted() {
        let before = CpuSnapshot::take(&[]);
        let mut x = 0u64;
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_millis(100) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        assert!(x != 1);
        // The busy loop ran on this thread for 100 ms of wall time; allow for a busy
        // machine taking some of it.
        assert!(before.elapsed() > 0.005, "{}", before.elapsed());
    }
}
