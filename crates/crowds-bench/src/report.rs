//! The printed table and the PASS/FAIL lines of issue 6's targets (ratios measured in
//! the same run; a missed target is reported, never turned into a failing exit).

use crate::results::{PathRow, Results, TargetLine};
use std::fmt::Write;

fn us(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.0}"),
        _ => "-".into(),
    }
}

fn num(v: f64, decimals: usize) -> String {
    if v.is_finite() {
        format!("{v:.decimals$}")
    } else {
        "-".into()
    }
}

fn row<'a>(r: &'a Results, kind: &str, k: Option<usize>) -> Option<&'a PathRow> {
    r.paths.iter().find(|p| p.kind == kind && p.k == k)
}

fn line(status: bool, what: &str, measured: String) -> TargetLine {
    TargetLine {
        status: if status { "PASS" } else { "FAIL" }.into(),
        what: what.into(),
        measured,
    }
}

fn skip(what: &str, why: &str) -> TargetLine {
    TargetLine {
        status: "SKIP".into(),
        what: what.into(),
        measured: why.into(),
    }
}

/// Evaluates the targets of issue 6 on `r`.
pub fn targets(r: &Results, have_tinyproxy: bool) -> Vec<TargetLine> {
    let mut out = Vec::new();
    let what = "added latency per jondo <= 1.5x added latency per TLS relay (slope of keep-alive p50 over k)";
    let slope = |kind: &str| r.slopes.iter().find(|s| s.kind == kind);
    match (slope("crowd"), slope("tls")) {
        (Some(c), Some(t))
            if t.keepalive_us_per_hop > 0.0 && c.keepalive_us_per_hop.is_finite() =>
        {
            let ratio = c.keepalive_us_per_hop / t.keepalive_us_per_hop;
            out.push(line(
                ratio <= 1.5,
                what,
                format!(
                    "{:.2}x ({:.0} us per jondo vs {:.0} us per TLS relay; fresh connections: {:.0} vs {:.0} us)",
                    ratio,
                    c.keepalive_us_per_hop,
                    t.keepalive_us_per_hop,
                    c.fresh_us_per_hop,
                    t.fresh_us_per_hop
                ),
            ))
        }
        _ => out.push(skip(what, "needs crowd and TLS rows at two or more k")),
    }
    let tput = |p: Option<&PathRow>| {
        p.and_then(|p| p.transfer.as_ref())
            .map(|t| (t.mb_per_s, t.cpu_s_per_gb))
    };
    let crowd5 = tput(row(r, "crowd", Some(5)));
    // On one machine every hop shares the same cores, so throughput is CPU-bound and
    // the inverse ratio of CPU cost per GB predicts the throughput ratio without the
    // noise of other work on the machine.
    let cpu_note = |c: f64, o: f64| {
        if c.is_finite() && o.is_finite() && c > 0.0 {
            format!(
                "; by CPU cost per GB {:.0}% ({c:.2} vs {o:.2} s/GB)",
                100.0 * o / c
            )
        } else {
            String::new()
        }
    };
    let what = "throughput of a 5-jondo path >= 60% of the 5-relay TLS chain";
    match (crowd5, tput(row(r, "tls", Some(5)))) {
        (Some((c, cc)), Some((t, tc))) => out.push(line(
            c >= 0.6 * t,
            what,
            format!(
                "{:.0}% ({c:.0} vs {t:.0} MB/s){}",
                100.0 * c / t,
                cpu_note(cc, tc)
            ),
        )),
        _ => out.push(skip(what, "needs k = 5 transfers")),
    }
    let what = "throughput of a 5-jondo path >= 35% of a direct download";
    match (crowd5, tput(row(r, "direct", Some(0)))) {
        (Some((c, cc)), Some((d, dc))) => out.push(line(
            c >= 0.35 * d,
            what,
            format!(
                "{:.0}% ({c:.0} vs {d:.0} MB/s){}",
                100.0 * c / d,
                cpu_note(cc, dc)
            ),
        )),
        _ => out.push(skip(what, "needs k = 5 and direct transfers")),
    }
    let what =
        "p50 small GET through a pf = 0.75 crowd <= 2x tinyproxy (fresh connections, interleaved)";
    let p50 = |p: Option<&PathRow>| p.and_then(|p| p.fresh.as_ref()).map(|l| l.p50_us);
    let tiny = r
        .paths
        .iter()
        .find(|p| p.name == "tinyproxy")
        .and_then(|p| p.fresh.as_ref())
        .map(|l| l.p50_us);
    match (p50(r.paths.iter().find(|p| p.kind == "crowd-pf")), tiny) {
        (Some(c), Some(t)) => out.push(line(
            c <= 2.0 * t,
            what,
            format!("{:.2}x ({c:.0} vs {t:.0} us)", c / t),
        )),
        _ if !have_tinyproxy => out.push(skip(what, "tinyproxy is not installed")),
        _ => out.push(skip(what, "needs the crowd and tinyproxy rows")),
    }
    match &r.memory {
        Some(m) => {
            out.push(line(
                m.idle_warm_mib <= 16.0,
                "jondo RSS idle <= 16 MiB",
                format!(
                    "{:.1} MiB with links open ({:.1} MiB just after joining, {:.1} MiB idle after the load)",
                    m.idle_warm_mib, m.idle_mib, m.idle_after_mib
                ),
            ));
            out.push(line(
                m.transfer_mib <= 32.0 && m.transfer_mb_per_s > 0.0,
                "jondo RSS during a 1 GiB transfer <= 32 MiB",
                format!(
                    "{:.1} MiB peak during {} MiB{}",
                    m.transfer_mib,
                    m.transfer_bytes / (1024 * 1024),
                    if m.transfer_mb_per_s > 0.0 {
                        ""
                    } else {
                        " (transfer failed)"
                    }
                ),
            ));
            let worst = m.open_streams_mib.max(m.busy_streams_mib);
            let n = r.settings.streams;
            out.push(line(
                worst <= 128.0 && m.open_failed == 0,
                "jondo RSS with 1000 streams <= 128 MiB",
                format!(
                    "{worst:.1} MiB peak with {n} streams ({:.1} MiB with {} downloads held open{}, {:.1} MiB with {n} busy clients){}",
                    m.open_streams_mib,
                    m.open_streams,
                    if m.open_failed > 0 { format!(", {} failed to open", m.open_failed) } else { String::new() },
                    m.busy_streams_mib,
                    if n < 1000 { " [fewer streams than the target's 1000]" } else { "" }
                ),
            ));
        }
        None => out.push(skip("jondo RSS targets", "memory section not run")),
    }
    match &r.document {
        Some(d) => out.push(line(
            d.verify_p50_ms <= 20.0,
            "crowd document with 10,000 members verified in <= 20 ms",
            format!(
                "{:.2} ms median of {} ({:.2} to {:.2} ms; {} members, {} bytes)",
                d.verify_p50_ms, d.runs, d.verify_min_ms, d.verify_max_ms, d.members, d.bytes
            ),
        )),
        None => out.push(skip("crowd document verification", "scale section not run")),
    }
    out.extend(crate::wan::report::targets(r));
    out
}

/// The human-readable report.
pub fn table(r: &Results) -> String {
    let mut o = String::new();
    let s = &r.settings;
    let mib = s.transfer_bytes / (1024 * 1024);
    let _ = writeln!(
        o,
        "crowds-bench, {} mode: Crowds beside relay chains, real proxies and the paper's scale",
        s.mode
    );
    let _ = writeln!(o, "command: {}", r.command);
    let _ = writeln!(
        o,
        "machine: {} cores, {}, kernel {}, {:.1} GiB; load average {} at the start, {} at the end",
        r.machine.cores,
        r.machine.cpu,
        r.machine.kernel,
        r.machine.memory_gib,
        r.machine.loadavg_start,
        r.machine.loadavg_end
    );
    let ks: Vec<String> = s.ks.iter().map(|k| k.to_string()).collect();
    let _ = writeln!(
        o,
        "settings: {} requests per latency series (+{} warm-up), {mib} MiB transfers (best of {}), k = {}, {} streams, {} s per load run, crowd of {} jondos, pf = {}; {}; jondos on {} thread(s) each (--jondo-threads)",
        s.requests,
        s.warmup,
        s.transfer_runs,
        ks.join(","),
        s.streams,
        s.load_seconds,
        s.crowd_size,
        s.pf,
        if s.hop_threads {
            "each relay and jondo on a thread and runtime of its own"
        } else {
            "relays and in-process jondos on the harness's shared runtime"
        },
        s.jondo_threads
    );
    if !r.paths.is_empty() {
        let _ = writeln!(
            o,
            "\n1-3. Small GET (/whoami): latency in microseconds (p50, p99; fresh TCP connection per request,\n     or one keep-alive connection) and CPU microseconds per keep-alive request; a {mib} MiB\n     download: MB/s and CPU seconds per GB. CPU counts every process of the way (client,\n     relays or jondos, origin, external proxy)."
        );
        let _ = writeln!(
            o,
            "{:<24} {:>2} | {:>7} {:>7} | {:>7} {:>7} {:>7} | {:>7} {:>8}",
            "way to the origin",
            "k",
            "fresh50",
            "fresh99",
            "keep50",
            "keep99",
            "CPU/req",
            "MB/s",
            "CPU s/GB"
        );
        let _ = writeln!(o, "{}", "-".repeat(94));
        for p in &r.paths {
            let _ = writeln!(
                o,
                "{:<24} {:>2} | {:>7} {:>7} | {:>7} {:>7} {:>7} | {:>7} {:>8}",
                p.name,
                p.k.map_or("-".into(), |k| k.to_string()),
                us(p.fresh.as_ref().map(|l| l.p50_us)),
                us(p.fresh.as_ref().map(|l| l.p99_us)),
                us(p.keepalive.as_ref().map(|l| l.p50_us)),
                us(p.keepalive.as_ref().map(|l| l.p99_us)),
                us(p.keepalive.as_ref().map(|l| l.cpu_us_per_request)),
                p.transfer
                    .as_ref()
                    .map_or("-".into(), |t| format!("{:.0}", t.mb_per_s)),
                p.transfer
                    .as_ref()
                    .map_or("-".into(), |t| num(t.cpu_s_per_gb, 2)),
            );
        }
        let notes: Vec<String> = r
            .paths
            .iter()
            .filter(|p| !p.note.is_empty())
            .map(|p| {
                format!(
                    "  {}{}: {}",
                    p.name,
                    p.k.map_or(String::new(), |k| format!(" (k = {k})")),
                    p.note
                )
            })
            .collect();
        for n in notes {
            let _ = writeln!(o, "{n}");
        }
        let errors: Vec<String> = r
            .paths
            .iter()
            .flat_map(|p| {
                [("fresh", &p.fresh), ("keep-alive", &p.keepalive)]
                    .into_iter()
                    .filter_map(move |(m, l)| {
                        let l = l.as_ref()?;
                        (l.errors > 0 || l.reconnects > 0).then(|| {
                            format!(
                                "  {} k={:?} {m}: {} errors, {} reconnects{}",
                                p.name,
                                p.k,
                                l.errors,
                                l.reconnects,
                                l.first_error
                                    .as_ref()
                                    .map_or(String::new(), |e| format!(" (first: {e})"))
                            )
                        })
                    })
            })
            .collect();
        for e in errors {
            let _ = writeln!(o, "{e}");
        }
        let _ = writeln!(
            o,
            "\nAdded latency per hop (Theil-Sen slope of p50 over k), microseconds"
        );
        let _ = writeln!(
            o,
            "{:<24} {:>12} {:>12} {:>16}",
            "", "keep-alive", "fresh", "CPU (keep-alive)"
        );
        for sl in &r.slopes {
            let _ = writeln!(
                o,
                "{:<24} {:>12} {:>12} {:>16}",
                match sl.kind.as_str() {
                    "tcp" => "per TCP relay",
                    "tls" => "per TLS relay",
                    "crowd-tunnel" => "per jondo, CONNECT",
                    _ => "per jondo",
                },
                num(sl.keepalive_us_per_hop, 1),
                num(sl.fresh_us_per_hop, 1),
                num(sl.keepalive_cpu_us_per_hop, 1)
            );
        }
        let per = |kind: &str| {
            r.slopes
                .iter()
                .find(|sl| sl.kind == kind)
                .map(|sl| (sl.keepalive_us_per_hop, sl.keepalive_cpu_us_per_hop))
        };
        if let Some((tls, tls_cpu)) = per("tls") {
            for (kind, label) in [("crowd", "proxy form"), ("crowd-tunnel", "CONNECT tunnel")] {
                if let Some((j, j_cpu)) = per(kind) {
                    let _ = writeln!(
                        o,
                        "per jondo / per TLS relay, {label}: {}x latency, {}x CPU",
                        num(j / tls, 2),
                        num(j_cpu / tls_cpu, 2)
                    );
                }
            }
        }
    }
    if !r.load.is_empty() {
        let _ = writeln!(
            o,
            "\n4. Load: {} concurrent clients sending small GETs for {} s each",
            s.streams, s.load_seconds
        );
        let _ = writeln!(
            o,
            "{:<24} {:<10} {:>6} {:>9} {:>9} {:>9} {:>7}",
            "run", "conns", "ready", "req/s", "p50 ms", "p99 ms", "errors"
        );
        let _ = writeln!(o, "{}", "-".repeat(79));
        for l in &r.load {
            let _ = writeln!(
                o,
                "{:<24} {:<10} {:>6} {:>9.0} {:>9.2} {:>9.2} {:>7}",
                l.name,
                l.connections,
                l.load.ready,
                l.load.requests_per_s,
                l.load.latency.p50_us / 1e3,
                l.load.latency.p99_us / 1e3,
                l.load.latency.errors
            );
            if let Some(e) = &l.load.latency.first_error {
                let _ = writeln!(o, "  first error: {e}");
            }
        }
    }
    if let Some(m) = &r.memory {
        let _ = writeln!(
            o,
            "\n5. Jondo memory, one process per jondo ({} jondos, paths of {} jondos), VmRSS MiB",
            m.jondos, m.path_jondos
        );
        let _ = writeln!(o, "{:<44} {:>8}", "", "largest");
        let rows = [
            ("idle, just after joining".to_string(), m.idle_mib),
            ("idle, links open".to_string(), m.idle_warm_mib),
            (
                format!(
                    "peak during a {} MiB transfer",
                    m.transfer_bytes / (1024 * 1024)
                ),
                m.transfer_mib,
            ),
            (
                format!("peak with {} downloads held open", m.open_streams),
                m.open_streams_mib,
            ),
            (
                format!("peak with {} busy keep-alive clients", s.streams),
                m.busy_streams_mib,
            ),
            ("idle afterwards".to_string(), m.idle_after_mib),
            ("VmHWM at the end".to_string(), m.hwm_mib),
        ];
        for (name, v) in rows {
            let _ = writeln!(o, "{name:<44} {v:>8.1}");
        }
        let _ = writeln!(
            o,
            "  with one process per jondo: transfer {:.0} MB/s; small GET keep-alive p50 {} us, p99 {} us; busy clients {:.0} req/s",
            m.transfer_mb_per_s,
            us(m.keepalive.as_ref().map(|l| l.p50_us)),
            us(m.keepalive.as_ref().map(|l| l.p99_us)),
            m.busy_requests_per_s
        );
        for (i, p) in m.per_jondo.iter().enumerate() {
            let _ = writeln!(
                o,
                "  jondo {}{}: idle {:.1}, transfer {:.1}, open {:.1}, busy {:.1}, after {:.1}, hwm {:.1}",
                i + 1,
                if i == 0 { " (initiator)" } else { "" },
                p[0],
                p[1],
                p[2],
                p[3],
                p[4],
                p[5]
            );
        }
        if !m.note.is_empty() {
            let _ = writeln!(o, "  {}", m.note.trim_end_matches("; "));
        }
    }
    if !r.scale.is_empty() {
        let _ = writeln!(
            o,
            "\n6. Scale on paper: real PathTable::route, one table per member, each member initiates one request, pf = {}",
            s.pf
        );
        let _ = writeln!(
            o,
            "{:>8} {:>7} {:>10} {:>22} {:>14} {:>9}",
            "members", "trials", "requests", "handled/jondo/request", "busiest jondo", "ns/route"
        );
        for sc in &r.scale {
            let _ = writeln!(
                o,
                "{:>8} {:>7} {:>10} {:>22.3} {:>14.1} {:>9.0}",
                sc.members,
                sc.trials,
                sc.initiated,
                sc.handled_per_initiated,
                sc.busiest_per_initiated,
                sc.route_ns
            );
        }
    }
    if let Some(d) = &r.document {
        let _ = writeln!(
            o,
            "signed crowd document, {} members: {} bytes ({:.0} KiB), signed in {:.1} ms, verified in {:.2} ms median of {} ({:.2} to {:.2} ms)",
            d.members,
            d.bytes,
            d.bytes as f64 / 1024.0,
            d.sign_ms,
            d.verify_p50_ms,
            d.runs,
            d.verify_min_ms,
            d.verify_max_ms
        );
    }
    crate::wan::report::table(r, &mut o);
    let _ = writeln!(
        o,
        "\nTargets (issues 6 and 18; ratios measured in this run)"
    );
    for t in &r.targets {
        let _ = writeln!(o, "{}  {}: {}", t.status, t.what, t.measured);
    }
    if !r.notes.is_empty() {
        let _ = writeln!(o, "\nNotes");
        for n in &r.notes {
            let _ = writeln!(o, "  {n}");
        }
    }
    let _ = writeln!(o, "\nelapsed: {:.0} s", r.elapsed_seconds);
    o
}
