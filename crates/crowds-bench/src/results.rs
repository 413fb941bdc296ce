//! The figures a run produces (`Results` and its rows, shaped for report.rs and
//! `--json`), the machine it ran on, and the fitted slopes of latency per hop.

use crate::client::{Latency, Load, Transfer};
use crate::scale;
use serde::Serialize;

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
    /// WAN section: one-way delays, milliseconds.
    pub wan_delays_ms: Vec<u64>,
    /// WAN section: exact path lengths.
    pub wan_ks: Vec<usize>,
    /// WAN section: measured page loads per way and delay (after one warm-up).
    pub wan_loads: usize,
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

/// One way of loading the page in the WAN section, at one delay.
#[derive(Debug, Clone, Serialize)]
pub struct WanRow {
    /// "direct", "tinyproxy", "crowd", "crowd-waiting" (optimistic tunnels off) or
    /// "crowd-pf".
    pub way: String,
    /// Display name.
    pub name: String,
    /// "http" or "https".
    pub protocol: String,
    /// One-way delay of every delayed link.
    pub delay_ms: u64,
    /// Jondos on the path (exact paths), 1 for tinyproxy, 0 direct; none for pf.
    pub k: Option<usize>,
    /// Jondos on the path of each measured load (from the crowd's counters).
    pub path_lengths: Vec<usize>,
    /// Page loads measured (warm-up and failed loads not counted).
    pub loads: usize,
    /// Failed loads.
    pub errors: usize,
    /// Median page load, milliseconds.
    pub median_ms: f64,
    /// Fastest load.
    pub min_ms: f64,
    /// Slowest load.
    pub max_ms: f64,
    /// Lower bound (median of the loads' bounds for pf), milliseconds.
    pub bound_ms: f64,
    /// Median of measured / bound over the loads.
    pub ratio: f64,
    /// For optimistic tunnels off: the bound of that protocol (4E + origin).
    pub todays_bound_ms: Option<f64>,
    /// Remarks (first error, requests the crowd carried per load).
    pub note: String,
}

/// What the WAN section loaded and how.
#[derive(Debug, Clone, Serialize, Default)]
pub struct WanSetup {
    /// Embedded objects of the page.
    pub objects: usize,
    /// Bytes of the objects.
    pub object_bytes: usize,
    /// Bytes of the HTML.
    pub html_bytes: usize,
    /// HTTP/1.1 connections of the browser model.
    pub connections: usize,
    /// Jondos of the WAN crowd (optimistic tunnels on, off).
    pub jondos: [usize; 2],
    /// Links between the WAN crowd's jondos open before measuring (of n(n-1)).
    pub links_open: usize,
    /// The page load direct over loopback with no delay (median), plain HTTP, ms.
    pub origin_http_ms: f64,
    /// The same over HTTPS.
    pub origin_https_ms: f64,
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
    /// WAN section: every way at every delay.
    pub wan: Vec<WanRow>,
    /// WAN section: the page and the set-up.
    pub wan_setup: Option<WanSetup>,
    /// Targets.
    pub targets: Vec<TargetLine>,
    /// What was skipped and why.
    pub notes: Vec<String>,
    /// Wall time of the run, seconds.
    pub elapsed_seconds: f64,
}

pub(crate) fn machine() -> Machine {
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

pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Theil-Sen slope: the median of the slopes between all pairs of points (robust to a
/// point disturbed by other work on the machine).
pub(crate) fn slope(points: &[(f64, f64)]) -> f64 {
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

pub(crate) fn slopes(results: &mut Results) {
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
}
