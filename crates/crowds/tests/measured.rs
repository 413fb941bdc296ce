//! Anonymity measured on a real crowd: 12 jondo processes of the measurement build
//! (cargo feature `measure`) on 127.0.0.121–132, 3 of them playing collaborators, form
//! thousands of paths, one at a time, from the honest members; the figures the
//! collaborators and the end server see are compared with the paper's closed forms
//! (`crowds_proto::analysis`).
//!
//! Each path: `POST /measure/reform` at an honest initiator's control port (it forgets
//! its own path), then one `GET /whoami?path=K` through its HTTP proxy to a recording
//! origin server, which answers with the address of the exit that submitted it. A
//! collaborator that sees a new path no collaborator saw before appends its
//! predecessor's member id to its log, so the lines the three logs gained during the
//! request (zero or one) say whether a collaborator was on the path and whom the first
//! one saw before it.
//!
//! Asserted: the closed forms of P(H1+) (a collaborator is on the path), P(I|H1+) (the
//! first collaborator's predecessor is the initiator), P(exit = initiator) = 1/n,
//! P(exit is a collaborator) = c/n and the mean path length lie within the 99.99%
//! intervals of the measurements, and the exits' chi-square against the uniform
//! distribution stays below its 99.99% quantile (together, a false alarm about once in
//! 1,700 runs). Also: at most one collaborator logs a path, the observed predecessor is
//! never a collaborator, the origin sees each request exactly once and never a
//! `crowds-*` header, no path broke or was retried, every path was submitted once, and
//! the crowd stayed in one epoch.
//!
//! CI runs 4,000 paths; `CROWDS_FULL=1` runs 10,000; `CROWDS_MEASURE_PATHS=N` runs N
//! (at least 100). `CROWDS_MEASURE_DUMP=FILE` also writes one CSV line per path with
//! how many hops each jondo decided on it (slower: every status is read per path). The
//! binary is built once, at the start, into `target/measure` (see `common/measure.rs`).

use crowds_testkit::measure;

use crowds_proto::analysis::CrowdModel;
use crowds_testkit::*;
use measure::*;
use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;
use std::time::Instant;

/// The `crowds` binary these tests run.
const KIT: Kit = Kit::new(env!("CARGO_BIN_EXE_crowds"));

/// Crowd size n.
const N: usize = 12;
/// Collaborators c: members 1, 5 and 9 (by index; their member ids are read back).
const COLLABORATORS: [usize; 3] = [1, 5, 9];
/// Forward probability.
const PF: f64 = 0.75;
/// Paths formed in CI.
const CI_PATHS: usize = 4_000;
/// Paths formed with `CROWDS_FULL=1`.
const FULL_PATHS: usize = 10_000;

/// What one formed path showed.
struct PathRecord {
    /// Index of the initiator.
    initiator: usize,
    /// Index of the exit (the address the origin saw).
    exit: usize,
    /// Index of the first collaborator's predecessor, if a collaborator was on the path.
    observed: Option<usize>,
}

/// Counters of one jondo's status that the run must account for.
#[derive(Clone, Copy, Default)]
struct Counters {
    formed: u64,
    submitted: u64,
    path_failures: u64,
    retries: u64,
}

fn counters(s: &serde_json::Value) -> Counters {
    let n = |v: &serde_json::Value| v.as_u64().expect("counter");
    Counters {
        formed: n(&s["paths_formed"]),
        submitted: n(&s["requests"]["submitted"]),
        path_failures: n(&s["requests"]["path_failures"]),
        retries: n(&s["requests"]["retries"]),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymity_measured_on_a_real_crowd() {
    let started = Instant::now();
    let paths = std::env::var("CROWDS_MEASURE_PATHS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&p| p >= 100)
        .unwrap_or(if full_mode() { FULL_PATHS } else { CI_PATHS });
    let build_logs = tempfile::tempdir().expect("tempdir");
    let bin = measure_binary(KIT, build_logs.path()).await;
    let built = started.elapsed();

    let t = Instant::now();
    let mut crowd = MeasuredCrowd::start(&bin, N, &COLLABORATORS, &PF.to_string()).await;
    let formed_in = t.elapsed();
    let origin = Origin::start().await;
    let by_member = crowd.index_of_member();
    let by_ip = crowd.index_of_ip();
    let honest: Vec<usize> = (0..N).filter(|i| !COLLABORATORS.contains(i)).collect();
    let model = CrowdModel::new(N as u64, COLLABORATORS.len() as u64, PF).expect("model");
    eprintln!(
        "crowd of {N} formed in {formed_in:.1?} (epoch {}); member ids {:?}; collaborators {:?}",
        crowd.epoch,
        crowd.jondos.iter().map(|j| j.member_id).collect::<Vec<_>>(),
        COLLABORATORS
            .iter()
            .map(|&i| crowd.jondos[i].member_id)
            .collect::<Vec<_>>()
    );

    let before: Vec<Counters> = crowd.statuses().await.iter().map(counters).collect();
    let mut tails: Vec<LogTail> = COLLABORATORS
        .iter()
        .map(|&i| {
            LogTail::at_end(
                crowd.jondos[i]
                    .collaborator_log
                    .as_ref()
                    .expect("a collaborator logs"),
            )
        })
        .collect();
    let mut clients: Vec<Option<HttpClient>> = (0..N).map(|_| None).collect();
    let mut records = Vec::with_capacity(paths);
    // CROWDS_MEASURE_DUMP=FILE: one CSV line per path with how many hops each jondo
    // decided on it (its paths_formed before and after), for offline analysis.
    let controls: Vec<_> = crowd.jondos.iter().map(|j| j.control).collect();
    let mut dump = match std::env::var_os("CROWDS_MEASURE_DUMP") {
        Some(file) => {
            let mut w = std::io::BufWriter::new(std::fs::File::create(file).expect("dump file"));
            let ids: Vec<String> = crowd
                .jondos
                .iter()
                .map(|j| {
                    let tag = if j.collaborator_log.is_some() {
                        "c"
                    } else {
                        ""
                    };
                    format!("{tag}{}", j.member_id)
                })
                .collect();
            writeln!(w, "path,initiator,exit,observed,{}", ids.join(",")).expect("dump");
            Some((w, formed_counts(&controls).await))
        }
        None => None,
    };
    let t = Instant::now();
    for k in 0..paths {
        let who = honest[k % honest.len()];
        let jondo = &crowd.jondos[who];
        reform(jondo.control)
            .await
            .unwrap_or_else(|e| panic!("path {k}: {e}"));
        let client = match &mut clients[who] {
            Some(c) => c,
            slot => slot.insert(
                HttpClient::connect(jondo.proxy)
                    .await
                    .unwrap_or_else(|e| panic!("proxy of {}: {e}", jondo.account)),
            ),
        };
        let url = origin.url(&format!("/whoami?path={k}"));
        let (status, _, body) = client
            .get(&url, &[])
            .await
            .unwrap_or_else(|e| panic!("path {k} from {}: {e}", jondo.account));
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, 200, "path {k} from {}: {body}", jondo.account);
        let ip: IpAddr = body
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("path {k}: the origin answered {body:?}: {e}"));
        let exit = *by_ip
            .get(&ip)
            .unwrap_or_else(|| panic!("path {k}: exit {ip} is not a member"));

        // The collaborators' logs: one line if a collaborator was on the path.
        let mut lines = Vec::new();
        for (tail, &c) in tails.iter_mut().zip(&COLLABORATORS) {
            lines.extend(tail.new_lines().into_iter().map(|l| (c, l)));
        }
        assert!(
            lines.len() <= 1,
            "path {k}: more than one collaborator logged it: {lines:?}"
        );
        let observed = lines.first().map(|(c, line)| {
            let id: u64 = line.parse().unwrap_or_else(|e| {
                panic!(
                    "path {k}: {} logged {line:?} ({e}); it never initiates",
                    crowd.jondos[*c].account
                )
            });
            let index = *by_member
                .get(&id)
                .unwrap_or_else(|| panic!("path {k}: predecessor {id} is not a member"));
            assert!(
                !COLLABORATORS.contains(&index),
                "path {k}: the first collaborator's predecessor {id} is a collaborator"
            );
            index
        });
        if let Some((w, last)) = &mut dump {
            let now = formed_counts(&controls).await;
            let hops: Vec<String> = now
                .iter()
                .zip(last.iter())
                .map(|(a, b)| (a - b).to_string())
                .collect();
            let id = |i: usize| crowd.jondos[i].member_id;
            writeln!(
                w,
                "{k},{},{},{},{}",
                id(who),
                id(exit),
                observed.map(|o| id(o).to_string()).unwrap_or_default(),
                hops.join(",")
            )
            .expect("dump");
            *last = now;
        }
        records.push(PathRecord {
            initiator: who,
            exit,
            observed,
        });
        if (k + 1) % 500 == 0 {
            eprintln!("{} paths in {:.1?}", k + 1, t.elapsed());
        }
    }
    let measured_in = t.elapsed();
    crowd.assert_running();

    // Cross-checks: the origin saw each request once, from the exit that answered; the
    // crowd stayed the same; every path submitted once and none broke.
    let mut at_origin: HashMap<String, Vec<IpAddr>> = HashMap::new();
    for s in origin.seen() {
        assert!(
            s.headers.iter().all(|(h, _)| !h.starts_with("crowds-")),
            "the origin saw a crowd header: {:?}",
            s.headers
        );
        at_origin.entry(s.path).or_default().push(s.ip);
    }
    for (k, r) in records.iter().enumerate() {
        let seen = at_origin
            .get(&format!("/whoami?path={k}"))
            .map(Vec::as_slice)
            .unwrap_or_default();
        assert_eq!(
            seen,
            [crowd.jondos[r.exit].peer.ip()],
            "path {k}: the origin's view"
        );
    }
    let statuses = crowd.statuses().await;
    let after: Vec<Counters> = statuses.iter().map(counters).collect();
    for (j, s) in crowd.jondos.iter().zip(&statuses) {
        assert_eq!(s["epoch"], crowd.epoch, "{}: the epoch changed", j.account);
        assert_eq!(s["members"], N, "{}: the crowd changed", j.account);
    }
    let delta = |f: fn(&Counters) -> u64| -> u64 {
        before.iter().zip(&after).map(|(b, a)| f(a) - f(b)).sum()
    };
    assert_eq!(delta(|c| c.path_failures), 0, "paths broke during the run");
    assert_eq!(delta(|c| c.retries), 0, "requests were retried");
    assert_eq!(
        delta(|c| c.submitted),
        paths as u64,
        "submissions do not match the paths"
    );
    let hops = delta(|c| c.formed);

    // The figures.
    let with_collaborator = records.iter().filter(|r| r.observed.is_some()).count() as u64;
    let initiator_observed = records
        .iter()
        .filter(|r| r.observed == Some(r.initiator))
        .count() as u64;
    let exit_is_initiator = records.iter().filter(|r| r.exit == r.initiator).count() as u64;
    let exit_is_collaborator = records
        .iter()
        .filter(|r| COLLABORATORS.contains(&r.exit))
        .count() as u64;
    let mut exits = vec![0u64; N];
    for r in &records {
        exits[r.exit] += 1;
    }
    let total = paths as u64;
    let rows = [
        Row::mean(
            "jondos on the path, initiator included (mean)",
            model.expected_path_length(),
            hops as f64 / paths as f64,
            PF.sqrt() / (1.0 - PF),
            total,
        ),
        Row::proportion(
            "P(H1+): a collaborator is on the path",
            model.collaborator_on_path(),
            with_collaborator,
            total,
        ),
        Row::proportion(
            "P(I|H1+): first collaborator's predecessor is I",
            model.initiator_given_collaborator(),
            initiator_observed,
            with_collaborator,
        ),
        Row::proportion(
            "P(exit = initiator): the end server's view",
            model.exit_is_initiator(),
            exit_is_initiator,
            total,
        ),
        Row::proportion(
            "P(exit is a collaborator) = c/n",
            COLLABORATORS.len() as f64 / N as f64,
            exit_is_collaborator,
            total,
        ),
    ];
    let df = (N - 1) as f64;
    let chi2 = chi_square_uniform(&exits);
    let (chi2_low, chi2_high) = (chi_square_quantile(df, -Z95), chi_square_quantile(df, Z95));
    let chi2_limit = chi_square_quantile(df, Z9999_ONE_SIDED);
    let expected_share = 1.0 / N as f64;
    let share_sd = (expected_share * (1.0 - expected_share) / paths as f64).sqrt();
    let max_dev = exits
        .iter()
        .map(|&e| (e as f64 / paths as f64 - expected_share).abs())
        .fold(0.0, f64::max);

    let mut report = String::new();
    report.push_str(&format!(
        "Crowd: n = {N} jondo processes, c = {} collaborators (members {:?}), pf = {PF}; \
         {paths} paths from the {} honest members in turn.\n\n",
        COLLABORATORS.len(),
        COLLABORATORS
            .iter()
            .map(|&i| crowd.jondos[i].member_id)
            .collect::<Vec<_>>(),
        honest.len()
    ));
    report.push_str(&table_header());
    report.push('\n');
    for r in &rows {
        report.push_str(&r.line());
        report.push('\n');
    }
    report.push_str(&format!(
        "\n  (path length: normal interval from the geometric law's sd {:.3} per path)\n\
         \nExits seen by the origin (expected share 1/n = {expected_share:.4} each, \
         sd {share_sd:.4}):\n",
        PF.sqrt() / (1.0 - PF)
    ));
    for (j, e) in crowd.jondos.iter().zip(&exits) {
        report.push_str(&format!(
            "  member {:>2} ({}){}  {:>5} exits  share {:.4}  ({:+.2} sd)\n",
            j.member_id,
            j.peer.ip(),
            if j.collaborator_log.is_some() {
                " collaborator"
            } else {
                "             "
            },
            e,
            *e as f64 / paths as f64,
            (*e as f64 / paths as f64 - expected_share) / share_sd
        ));
    }
    report.push_str(&format!(
        "  chi-square {chi2:.2} with {df} df: 95% range [{chi2_low:.2}, {chi2_high:.2}], \
         asserted below the 99.99% quantile {chi2_limit:.2}; \
         largest deviation {max_dev:.4} ({:.2} sd)\n",
        max_dev / share_sd
    ));
    report.push_str(&format!(
        "\nTimes: measurement build {built:.1?}, crowd formed {formed_in:.1?}, \
         {paths} paths {measured_in:.1?} ({:.1} ms per path), total {:.1?}.\n",
        measured_in.as_secs_f64() * 1000.0 / paths as f64,
        started.elapsed()
    ));
    eprintln!("\n{report}");

    for r in &rows {
        assert!(
            r.agrees(),
            "{}: closed form {} outside the 99.99% interval [{}, {}] of the measurement {}",
            r.what,
            r.closed,
            r.wide.0,
            r.wide.1,
            r.value
        );
    }
    assert!(
        chi2 < chi2_limit,
        "exits are not uniform: chi-square {chi2:.2} >= {chi2_limit:.2} ({exits:?})"
    );
}
