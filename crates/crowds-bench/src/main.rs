//! `crowds-bench`: Crowds measured side by side with the physical limit and real proxies.
//!
//! One run on this machine measures, against the same local origin (`crowds_demo::site`
//! on 127.0.0.1):
//!
//! 1. the limit: chains of k plain TCP relays and of k TLS relays;
//! 2. the crowd: paths of exactly k jondos (crowds-jondo's `bench` feature) and a normal
//!    crowd at pf = 0.75;
//! 3. tinyproxy and privoxy, single-hop proxies people use instead;
//! 4. many concurrent clients through one jondo: requests/s and latency under load;
//! 5. the memory of jondos running one process each (this binary's hidden
//!    `jondo-process` subcommand);
//! 6. the paper's scale, with the real path code and a 10,000-member crowd document;
//! 7. page loads over emulated wide-area links (a one-way delay on every link) beside
//!    their lower bounds ([`wan`], issue 18);
//!
//! and prints a table (or `--json`) with PASS/FAIL lines for the targets of issues 6
//! and 18.
//! `--quick` is the short CI mode. Only loopback addresses are used.

mod client;
mod crowd;
mod load;
mod own_thread;
mod paths;
mod proxies;
mod relays;
mod report;
mod results;
mod scale;
mod wan;

use anyhow::Result;
use clap::{Parser, Subcommand};
use load::{load, memory};
use paths::{paths, time_wait_note};
use results::{loadavg, machine, Results, Settings};
use std::net::SocketAddr;
use std::time::Instant;
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
    /// Path lengths to measure, e.g. 1,2,3 (default: 1..6, quick 1,3,5; in the WAN
    /// section 1..5, quick 1,5).
    #[arg(long, value_delimiter = ',')]
    k: Option<Vec<usize>>,
    /// Sections to run (default all): paths, load, memory, scale, wan.
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
    /// One-way delays of the WAN section in milliseconds (default: 10,25,50; quick 25).
    #[arg(long, value_delimiter = ',')]
    delays_ms: Option<Vec<u64>>,
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
        wan_delays_ms: cli.delays_ms.clone().unwrap_or(if quick {
            vec![25]
        } else {
            vec![10, 25, 50]
        }),
        wan_ks: cli
            .k
            .clone()
            .unwrap_or(if quick { vec![1, 5] } else { (1..=5).collect() }),
        wan_loads: if quick { 3 } else { 7 },
    }
}

fn progress(text: &str) {
    eprintln!("[crowds-bench] {text}");
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
        wan: Vec::new(),
        wan_setup: None,
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
    if wants("wan") {
        progress("wan: page loads over links with a one-way delay");
        if let Err(e) = wan::wan(&s, &tinyproxy, &shutdown, &mut results).await {
            notes.push(format!("wan section failed: {e:#}"));
        }
        crowd::set_path_length(None);
    }
    notes.push(time_wait_note(s.crowd_size));
    notes.append(&mut results.notes);
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

#[cfg(test)]
mod tests {
    use super::*;
    use client::{Mode, Target};
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

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
        assert_eq!(
            (s.wan_delays_ms, s.wan_ks, s.wan_loads),
            (vec![25], vec![1, 5], 3)
        );
        assert_eq!(
            (full.wan_delays_ms, full.wan_ks, full.wan_loads),
            (vec![10, 25, 50], (1..=5).collect(), 7)
        );
        let chosen = settings(&Cli::parse_from([
            "crowds-bench",
            "--only",
            "wan",
            "--delays-ms",
            "5,80",
        ]));
        assert_eq!(chosen.wan_delays_ms, vec![5, 80]);
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
