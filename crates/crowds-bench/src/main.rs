//! `crowds-bench`: Crowds measured side by side with the physical limit and real proxies.
//!
//! One run on this machine measures, against the same local origin (`crowds_demo::site`
//! on 127.0.0.1):
//!
//! 1. the limit: chains of k plain TCP relays and of k TLS relays;
//! 2. the crowd: paths of exactly k jondos (crowds-node's `bench` feature) and a normal
//!    crowd at pf = 0.75;
//! 3. tinyproxy and privoxy, single-hop proxies people use instead;
//! 4. many concurrent clients through one jondo: requests/s and latency under load;
//! 5. the memory of jondos running one process each (this binary's hidden
//!    `jondo-process` subcommand);
//! 6. the paper's scale, with the real path code and a 10,000-member crowd document;
//!
//! and prints a table (or `--json`) with PASS/FAIL lines for the targets of issue 6.
//! `--quick` is the short CI mode. Only loopback addresses are used.

mod client;
mod crowd;
mod own_thread;
mod proxies;
mod relays;
mod report;
mod scale;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use client::{Latency, Load, Mode, Target, Transfer};
use serde::Serialize;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "crowds-bench",
    about = "Crowds against relay chains, tinyproxy/privoxy and the paper's scale, in one run"
)]
struct Cli {
    /// Short CI mode: 200 requests, 64 MiB transfers, k in {1,3,5}, 100 streams.
    #[arg(long)]
    quick: bool,
    /// Print the results as JSON on standard output (the table goes to standard error).
    #[arg(long)]
    json: bool,
    /// Requests per latency series (default: 2000, quick 200).
    #[arg(long)]
    requests: Option<usize>,
    /// Size of each transfer in MiB (default: 1024, quick 64).
    #[arg(long)]
    transfer_mib: Option<u64>,
    /// Concurrent streams for the load and memory tests (default: 1000, quick 100).
    #[arg(long)]
    streams: Option<usize>,
    /// Path lengths to measure, e.g. 1,2,3 (default: 1..6, quick 1,3,5).
    #[arg(long, value_delimiter = ',')]
    k: Option<Vec<usize>>,
    /// Sections to run (default all): paths, load, memory, scale.
    #[arg(long, value_delimiter = ',')]
    only: Option<Vec<String>>,
    /// Ways to measure in the paths section (default all): direct, tcp, tls, crowd, tunnel,
    /// pf, proxies.
    #[arg(long, value_delimiter = ',')]
    ways: Option<Vec<String>>,
    /// Worker threads of this process's tokio runtime (default: one per core), for
    /// experiments on where per-hop latency goes.
    #[arg(long)]
    worker_threads: Option<usize>,
    /// Run every relay and every jondo on this process's shared runtime instead of each
    /// on a runtime and thread of its own (as hops on separate hosts run).
    #[arg(long)]
    shared_runtime: bool,
    /// Worker threads of each jondo on a thread of its own and of each jondo process,
    /// as `crowds jondo --threads N` (1, the default, is a current-thread runtime).
    #[arg(long, default_value_t = 1)]
    jondo_threads: usize,
    /// Path length (jondos) of the requests in the memory section.
    #[arg(long, default_value_t = 3)]
    memory_path: usize,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs one jondo in this process (used by the harness for per-jondo memory).
    #[command(hide = true)]
    JondoProcess(crowd::ProcessArgs),
}

/// What one run measures.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// "full" or "quick".
    pub mode: String,
    /// Requests per latency series.
    pub requests: usize,
    /// Unmeasured requests before each series.
    pub warmup: usize,
    /// Bytes per transfer.
    pub transfer_bytes: u64,
    /// Transfers per way (the best is reported).
    pub transfer_runs: usize,
    /// Path lengths.
    pub ks: Vec<usize>,
    /// Concurrent streams (load and memory).
    pub streams: usize,
    /// Seconds of each load run.
    pub load_seconds: f64,
    /// Jondos of the in-process crowd.
    pub crowd_size: usize,
    /// Each relay and in-process jondo on a runtime and thread of its own (as on
    /// separate hosts), rather than all on the harness's shared runtime.
    pub hop_threads: bool,
    /// Worker threads of each jondo running on a runtime of its own.
    pub jondo_threads: usize,
    /// Origin instances (each serves at most 256 connections at once).
    pub origins: usize,
    /// The crowd's pf.
    pub pf: f64,
    /// Epochs of the normal crowd measured (one more member joins before each after
    /// the first, which re-forms every path).
    pub pf_epochs: usize,
    /// Crowd sizes simulated.
    pub scale_sizes: Vec<usize>,
    /// Paths walked per simulated size (about).
    pub scale_walks: usize,
    /// Members of the signed document.
    pub document_members: usize,
    /// Verifications timed.
    pub document_runs: usize,
}

/// One way from the client to the origin, measured.
#[derive(Debug, Clone, Serialize)]
pub struct PathRow {
    /// Display name.
    pub name: String,
    /// "direct", "tcp", "tls", "crowd", "crowd-tunnel", "crowd-pf", "proxy".
    pub kind: String,
    /// Relays or jondos on the way.
    pub k: Option<usize>,
    /// Fresh TCP connection per request.
    pub fresh: Option<Latency>,
    /// One keep-alive connection.
    pub keepalive: Option<Latency>,
    /// A large download.
    pub transfer: Option<Transfer>,
    /// Remarks (path lengths seen, failures).
    pub note: String,
}

/// Added latency per relay or jondo: least-squares slope of p50 over k.
#[derive(Debug, Clone, Serialize)]
pub struct Slope {
    /// "tcp", "tls", "crowd", "crowd-tunnel".
    pub kind: String,
    /// Per hop, keep-alive client, microseconds.
    pub keepalive_us_per_hop: f64,
    /// Per hop, fresh connection per request, microseconds.
    pub fresh_us_per_hop: f64,
    /// CPU time per hop and request (keep-alive), microseconds.
    pub keepalive_cpu_us_per_hop: f64,
}

/// One load run.
#[derive(Debug, Clone, Serialize)]
pub struct LoadRow {
    /// Display name.
    pub name: String,
    /// "fresh" or "keep-alive".
    pub connections: String,
    /// Figures.
    pub load: Load,
}

/// Memory of jondos running one process each, MiB.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Memory {
    /// Jondo processes.
    pub jondos: usize,
    /// Path length of the measured requests.
    pub path_jondos: usize,
    /// VmRSS just after joining, largest of the jondos.
    pub idle_mib: f64,
    /// VmRSS after a few requests opened the links, largest.
    pub idle_warm_mib: f64,
    /// Peak VmRSS during the transfer (sampled every 20 ms), largest.
    pub transfer_mib: f64,
    /// Bytes of that transfer.
    pub transfer_bytes: u64,
    /// Its throughput with every jondo in its own process, MB/s.
    pub transfer_mb_per_s: f64,
    /// Small GET latency through the jondo processes, keep-alive connection.
    pub keepalive: Option<Latency>,
    /// Streams held open (response head received, body unread).
    pub open_streams: usize,
    /// Streams that could not be opened.
    pub open_failed: usize,
    /// Peak VmRSS with those streams open, largest.
    pub open_streams_mib: f64,
    /// Peak VmRSS while that many keep-alive clients send small GETs, largest.
    pub busy_streams_mib: f64,
    /// Requests/s of that load.
    pub busy_requests_per_s: f64,
    /// VmRSS after everything closed, largest.
    pub idle_after_mib: f64,
    /// VmHWM at the end, largest.
    pub hwm_mib: f64,
    /// Per jondo process: (idle, transfer, open streams, busy, after, hwm) MiB.
    pub per_jondo: Vec<[f64; 6]>,
    /// Remarks.
    pub note: String,
}

/// A target of issue 6.
#[derive(Debug, Clone, Serialize)]
pub struct TargetLine {
    /// "PASS", "FAIL" or "SKIP".
    pub status: String,
    /// What is compared.
    pub what: String,
    /// Measured value, and against what.
    pub measured: String,
}

/// The machine.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Cores (`nproc`).
    pub cores: usize,
    /// `uname -r`.
    pub kernel: String,
    /// CPU model from /proc/cpuinfo.
    pub cpu: String,
    /// Memory.
    pub memory_gib: f64,
    /// /proc/loadavg when the run started (other work on the machine).
    pub loadavg_start: String,
    /// /proc/loadavg when it ended.
    pub loadavg_end: String,
}

/// Everything a run produced.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    /// The exact command.
    pub command: String,
    /// The machine.
    pub machine: Machine,
    /// Settings.
    pub settings: Settings,
    /// Latency and throughput of each way to the origin.
    pub paths: Vec<PathRow>,
    /// Added latency per hop.
    pub slopes: Vec<Slope>,
    /// Load runs.
    pub load: Vec<LoadRow>,
    /// Memory.
    pub memory: Option<Memory>,
    /// Simulated scale.
    pub scale: Vec<scale::ScaleRow>,
    /// The signed document.
    pub document: Option<scale::DocumentFigures>,
    /// Targets.
    pub targets: Vec<TargetLine>,
    /// What was skipped and why.
    pub notes: Vec<String>,
    /// Wall time of the run, seconds.
    pub elapsed_seconds: f64,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(Command::JondoProcess(args)) = cli.command {
        return match crowd::run_process(args) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("jondo-process: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = cli.worker_threads {
        builder.worker_threads(n.max(1));
    }
    let result = builder
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run(cli)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crowds-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn settings(cli: &Cli) -> Settings {
    let quick = cli.quick;
    let requests = cli.requests.unwrap_or(if quick { 200 } else { 2000 });
    Settings {
        mode: if quick { "quick" } else { "full" }.into(),
        requests,
        warmup: (requests / 10).max(20),
        transfer_bytes: cli.transfer_mib.unwrap_or(if quick { 64 } else { 1024 }) * 1024 * 1024,
        transfer_runs: if quick { 1 } else { 2 },
        ks: cli.k.clone().unwrap_or(if quick {
            vec![1, 3, 5]
        } else {
            (1..=6).collect()
        }),
        streams: cli.streams.unwrap_or(if quick { 100 } else { 1000 }),
        load_seconds: if quick { 2.0 } else { 5.0 },
        crowd_size: 8,
        hop_threads: !cli.shared_runtime,
        jondo_threads: cli.jondo_threads,
        origins: 4,
        pf: 0.75,
        pf_epochs: if quick { 2 } else { 4 },
        scale_sizes: vec![10, 100, 1000, 10_000],
        scale_walks: if quick { 20_000 } else { 200_000 },
        document_members: 10_000,
        document_runs: if quick { 5 } else { 21 },
    }
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).trim().to_string())
        .unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    Machine {
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        cpu,
        memory_gib: mem_kib / 1024.0 / 1024.0,
        loadavg_start: loadavg(),
        loadavg_end: String::new(),
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// TIME_WAIT sockets per local IPv4 address (`/proc/net/tcp`, state 06).
fn time_wait_by_address() -> std::collections::HashMap<Ipv4Addr, usize> {
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
fn time_wait_note(crowd_size: usize) -> String {
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

fn progress(text: &str) {
    eprintln!("[crowds-bench] {text}");
}

/// Upper bound on the wall time of one latency series.
const SERIES_LIMIT: Duration = Duration::from_secs(180);

/// One way from the client to the origin, to be measured.
struct Way {
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
async fn measure_ways(ways: Vec<Way>, s: &Settings, requests: usize) -> Vec<PathRow> {
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

/// Theil-Sen slope: the median of the slopes between all pairs of points (robust to a
/// point disturbed by other work on the machine).
fn slope(points: &[(f64, f64)]) -> f64 {
    let pts: Vec<_> = points.iter().filter(|(_, y)| y.is_finite()).collect();
    let mut slopes = Vec::new();
    for (i, a) in pts.iter().enumerate() {
        for b in &pts[i + 1..] {
            if b.0 != a.0 {
                slopes.push((b.1 - a.1) / (b.0 - a.0));
            }
        }
    }
    if slopes.is_empty() {
        return f64::NAN;
    }
    slopes.sort_by(f64::total_cmp);
    let m = slopes.len();
    if m % 2 == 1 {
        slopes[m / 2]
    } else {
        (slopes[m / 2 - 1] + slopes[m / 2]) / 2.0
    }
}

async fn run(cli: Cli) -> Result<()> {
    let started = Instant::now();
    let s = settings(&cli);
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let wants = |section: &str| {
        cli.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|x| x == section))
    };
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let mut notes = Vec::new();
    let mut results = Results {
        command,
        machine: machine(),
        settings: s.clone(),
        paths: Vec::new(),
        slopes: Vec::new(),
        load: Vec::new(),
        memory: None,
        scale: Vec::new(),
        document: None,
        targets: Vec::new(),
        notes: Vec::new(),
        elapsed_seconds: 0.0,
    };
    crowd::set_path_length(None);

    progress("starting the origins on 127.0.0.1");
    let mut origins = Vec::new();
    for _ in 0..s.origins {
        let site =
            crowds_demo::site::start(SocketAddr::from(([127, 0, 0, 1], 0)), shutdown.clone())
                .await?;
        origins.push(site.addr);
    }
    let origin = origins[0];

    let needs_crowd = wants("paths") || wants("load");
    let mut crowd = if needs_crowd {
        progress(&format!(
            "starting a crowd of {} jondos (127.0.0.2..) and its blender",
            s.crowd_size
        ));
        Some(
            crowd::start_in_process(
                s.crowd_size,
                s.pf_epochs,
                s.pf,
                shutdown.clone(),
                s.hop_threads.then_some(s.jondo_threads),
            )
            .await?,
        )
    } else {
        None
    };
    let max_clients = s.streams + 100;
    let tinyproxy = match proxies::tinyproxy(max_clients).await {
        Ok(p) => Some(p),
        Err(e) => {
            notes.push(format!("tinyproxy row skipped: {e:#}"));
            None
        }
    };
    let privoxy = match proxies::privoxy(max_clients).await {
        Ok(p) => Some(p),
        Err(e) => {
            notes.push(format!("privoxy row skipped: {e:#}"));
            None
        }
    };
    for p in [&tinyproxy, &privoxy].into_iter().flatten() {
        notes.push(format!("{}: {}", p.name, p.version));
    }

    if let (true, Some(crowd)) = (wants("paths"), crowd.as_mut()) {
        let ways = cli.ways.clone().unwrap_or_default();
        let way = |w: &str| ways.is_empty() || ways.iter().any(|x| x == w);
        paths(
            &s,
            &way,
            origin,
            crowd,
            &tinyproxy,
            &privoxy,
            &shutdown,
            &mut results,
        )
        .await?;
    }
    if let (true, Some(crowd)) = (wants("load"), crowd.as_ref()) {
        load(&s, &origins, crowd, &tinyproxy, &privoxy, &mut results).await?;
    }
    crowd::set_path_length(None);
    if wants("memory") {
        progress("memory: jondos in their own processes");
        match memory(&s, cli.memory_path, &origins, &shutdown).await {
            Ok(m) => results.memory = Some(m),
            Err(e) => notes.push(format!("memory section failed: {e:#}")),
        }
    }
    if wants("scale") {
        progress("scale: simulated crowds with the real path code");
        results.scale = scale::simulate(&s.scale_sizes, s.pf, s.scale_walks)?;
        progress("scale: a signed crowd document");
        results.document = Some(scale::document(s.document_members, s.document_runs)?);
    }
    notes.push(time_wait_note(s.crowd_size));
    results.notes = notes;
    results.targets = report::targets(&results, tinyproxy.is_some());
    results.elapsed_seconds = started.elapsed().as_secs_f64();
    results.machine.loadavg_end = loadavg();
    let table = report::table(&results);
    if cli.json {
        eprintln!("{table}");
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        println!("{table}");
    }
    shutdown.cancel();
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn paths(
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
async fn pf_way(
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

fn slopes(results: &mut Results) {
    for kind in ["tcp", "tls", "crowd", "crowd-tunnel"] {
        let rows: Vec<_> = results.paths.iter().filter(|r| r.kind == kind).collect();
        let pts = |f: fn(&PathRow) -> Option<f64>| -> Vec<(f64, f64)> {
            rows.iter()
                .filter_map(|r| Some((r.k? as f64, f(r)?)))
                .collect()
        };
        results.slopes.push(Slope {
            kind: kind.into(),
            keepalive_us_per_hop: slope(&pts(|r| r.keepalive.as_ref().map(|l| l.p50_us))),
            fresh_us_per_hop: slope(&pts(|r| r.fresh.as_ref().map(|l| l.p50_us))),
            keepalive_cpu_us_per_hop: slope(&pts(|r| {
                r.keepalive.as_ref().map(|l| l.cpu_us_per_request)
            })),
        });
    }
}

async fn load(
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
fn sample_peaks(pids: Vec<u32>, stop: CancellationToken) -> tokio::task::JoinHandle<Vec<u64>> {
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

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn rss_now(pids: &[u32]) -> Vec<u64> {
    pids.iter()
        .map(|p| crowd::rss_kib(*p).map_or(0, |(rss, _)| rss))
        .collect()
}

async fn memory(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_a_line_and_of_too_few_points() {
        let pts = [(1.0, 12.0), (2.0, 14.0), (3.0, 16.0), (5.0, 20.0)];
        assert!((slope(&pts) - 2.0).abs() < 1e-9);
        assert!(slope(&[(1.0, 3.0)]).is_nan());
        assert!((slope(&[(1.0, 3.0), (2.0, f64::NAN), (3.0, 7.0)]) - 2.0).abs() < 1e-9);
    }

    #[test]
    fn quick_mode_is_small() {
        let cli = Cli::parse_from(["crowds-bench", "--quick"]);
        let s = settings(&cli);
        assert_eq!(
            (s.requests, s.streams, s.ks.clone()),
            (200, 100, vec![1, 3, 5])
        );
        assert_eq!(s.transfer_bytes, 64 << 20);
        let full = settings(&Cli::parse_from(["crowds-bench"]));
        assert_eq!(
            (full.requests, full.streams, full.transfer_bytes),
            (2000, 1000, 1 << 30)
        );
        assert_eq!(full.ks, (1..=6).collect::<Vec<_>>());
    }

    /// Both kinds of relay chain carry requests and checked downloads to the origin.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn relay_chains_reach_the_origin() {
        let shutdown = CancellationToken::new();
        let site =
            crowds_demo::site::start(SocketAddr::from(([127, 0, 0, 1], 0)), shutdown.clone())
                .await
                .expect("origin");
        for (kind, base) in [(relays::Kind::Tcp, 11u8), (relays::Kind::Tls, 12u8)] {
            let ips: Vec<IpAddr> = (0..3)
                .map(|i| IpAddr::V4(Ipv4Addr::new(127, base, 0, 1 + i)))
                .collect();
            let entry = relays::start_chain(kind, &ips, site.addr, shutdown.clone(), true)
                .await
                .expect("chain");
            let target = Target::transparent(entry, site.addr);
            for mode in [Mode::Fresh, Mode::KeepAlive] {
                let l = client::latency(&[target], "/whoami", 10, 2, mode, Duration::from_secs(30))
                    .await
                    .expect("latency");
                assert_eq!((l.requests, l.errors), (10, 0), "{kind:?} {mode:?}");
            }
            let t = client::download(&target, 3 << 20).await.expect("download");
            assert_eq!(t.bytes, 3 << 20);
        }
        shutdown.cancel();
    }
}
