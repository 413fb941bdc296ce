//! `crowds analyze` as a user runs it: the JSON report's figures and their agreement
//! with the closed forms, the SVG plots, the `--reformations-list` table, and refusals
//! that name the offending flag.

use serde_json::Value;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_crowds");

/// A debug build simulates a few hundred thousand paths well within this.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

struct Run {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Runs `crowds` with `args`, killing it if it outlives [`RUN_TIMEOUT`].
fn crowds(args: &[&str]) -> Run {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn crowds");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            pipe.read_to_string(&mut text).expect("read pipe");
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("crowds {args:?} ran longer than {RUN_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        success: status.success(),
        stdout: stdout.join().expect("stdout thread"),
        stderr: stderr.join().expect("stderr thread"),
    }
}

const CROWD: [&str; 11] = [
    "analyze",
    "--members",
    "20",
    "--collaborators",
    "3",
    "--pf",
    "0.75",
    "--trials",
    "20000",
    "--seed",
    "1",
];

fn json_report(extra: &[&str]) -> Value {
    let mut args = CROWD.to_vec();
    args.push("--json");
    args.extend_from_slice(extra);
    let run = crowds(&args);
    assert!(run.success, "crowds {args:?} failed:\n{}", run.stderr);
    serde_json::from_str(&run.stdout).expect("stdout is JSON")
}

fn number(v: &Value, pointer: &str) -> f64 {
    v.pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("no number at {pointer} in {v:#}"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// The closed form lies close to its estimate: within 4.5 standard errors always (the
/// 95% interval spans 2 x 1.96 of them).
fn assert_near(report: &Value, pointer: &str) -> bool {
    let figure = report.pointer(pointer).expect(pointer);
    let closed = number(figure, "/closed_form");
    let estimate = number(figure, "/estimate");
    let (low, high) = (number(figure, "/ci95/0"), number(figure, "/ci95/1"));
    assert!(low <= estimate && estimate <= high, "{pointer}: {figure}");
    let se = (high - low) / (2.0 * 1.96);
    assert!(
        (estimate - closed).abs() <= 4.5 * se,
        "{pointer}: {figure} is far from its closed form"
    );
    let agrees = figure["agrees"].as_bool().expect("agrees");
    assert_eq!(agrees, low <= closed && closed <= high, "{pointer}");
    agrees
}

#[test]
fn json_report_has_every_figure_and_agrees_with_the_closed_forms() {
    let r = json_report(&[]);
    assert_eq!(r["crowd"]["members"], 20);
    assert_eq!(r["crowd"]["collaborators"], 3);
    assert_eq!(r["crowd"]["initiator"], 0);
    assert_eq!(r["monte_carlo"]["seed"], 1);
    assert_eq!(r["monte_carlo"]["trials"], 20000);

    // Closed forms, exactly.
    assert!(close(number(&r, "/closed_form/expected_path_length"), 5.0));
    assert!(close(
        number(&r, "/closed_form/collaborator_on_path"),
        12.0 / 29.0
    ));
    assert!(close(
        number(&r, "/closed_form/initiator_given_collaborator"),
        0.4
    ));
    assert!(close(number(&r, "/closed_form/exit_is_initiator"), 0.05));
    assert!(close(
        number(&r, "/closed_form/initiator_observed_per_reformation"),
        12.0 / 29.0 * 0.4
    ));
    assert_eq!(r["probable_innocence"]["holds"], true);
    assert_eq!(r["probable_innocence"]["min_members"], 12);
    assert_eq!(r["probable_innocence"]["max_collaborators"], 5);
    assert!(close(
        number(&r, "/probable_innocence/required_members"),
        12.0
    ));

    // Monte Carlo beside them. With six independent 95% intervals one miss is
    // unremarkable, two would be a one-in-thirty event: allow one.
    let figures = [
        "/estimates/path_length",
        "/estimates/collaborator_on_path",
        "/estimates/initiator_given_collaborator",
        "/estimates/exit_is_initiator",
        "/predecessor_attack/initiator_count",
        "/predecessor_attack/initiator_more_than_once",
    ];
    let agreeing = figures.iter().filter(|p| assert_near(&r, p)).count();
    assert!(agreeing >= figures.len() - 1, "{r:#}");
    assert_eq!(r["estimates"]["path_length"]["samples"], 20000);

    // The predecessor attack.
    let attack = &r["predecessor_attack"];
    assert_eq!(attack["reformations"], 10);
    let campaigns = attack["campaigns"].as_u64().expect("campaigns");
    let histogram = attack["initiator_histogram"].as_array().expect("histogram");
    assert_eq!(histogram.len(), 11);
    let total: u64 = histogram.iter().map(|v| v.as_u64().expect("count")).sum();
    assert_eq!(total, campaigns);
    for pointer in [
        "/top_other_count",
        "/top_other_more_than_once",
        "/initiator_stands_out",
    ] {
        let e = number(attack, &format!("{pointer}/estimate"));
        assert!(e >= 0.0, "{pointer}");
        assert!(attack.pointer(pointer).expect(pointer)["closed_form"].is_null());
    }
    let stand_out = number(attack, "/initiator_stands_out/estimate");
    assert!(stand_out > 0.0 && stand_out < 1.0);
    let needed = attack["reformations_to_stand_out"]
        .as_u64()
        .expect("the initiator stands out within the search");
    let curve = attack["stand_out_curve"]["by_reformations"]
        .as_array()
        .expect("curve");
    assert!(needed >= 1 && needed as usize <= curve.len());
    assert!(curve[needed as usize - 1]["estimate"].as_f64().expect("p") >= 0.5);
    if needed > 1 {
        assert!(curve[needed as usize - 2]["estimate"].as_f64().expect("p") < 0.5);
    }

    // The join-rate table: a week of joins every 30 s, 5 min, 1 h.
    let rows = r["join_rate"].as_array().expect("join_rate");
    let weekly: Vec<u64> = rows
        .iter()
        .map(|row| row["reformations_per_week"].as_u64().expect("R"))
        .collect();
    assert_eq!(weekly, [20160, 2016, 168]);
    for row in rows {
        // A row the budget cannot cover says which --trials would.
        match row
            .pointer("/initiator_stands_out/estimate")
            .and_then(Value::as_f64)
        {
            Some(p) => assert!((0.0..=1.0).contains(&p), "{row}"),
            None => {
                let note = row["initiator_stands_out"]["note"].as_str().expect("note");
                assert!(note.contains("--trials"), "{row}");
            }
        }
    }
    // A week of hourly joins is well within the budget; with n = 20 and c = 3 the
    // initiator stands out almost surely by then.
    assert!(
        number(&rows[2], "/initiator_stands_out/estimate") > 0.9,
        "{:#}",
        rows[2]
    );
}

#[test]
fn svg_plots_are_written_and_the_run_is_reproducible() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("crowd.svg");
    let file_arg = file.to_str().expect("utf-8 path");
    let with_svg = json_report(&["--svg", file_arg]);
    let svg = std::fs::read_to_string(&file).expect("the SVG was written");
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
    assert!(svg.trim_end().ends_with("</svg>"));
    for label in [
        "crowd size n (members)",
        "P(I | H1+)",
        "re-formations R of the initiator's path",
        "P(initiator is the most-observed member)",
        "c = 1",
        "pf = 0.9",
        "probable innocence",
        "Monte Carlo",
    ] {
        assert!(svg.contains(label), "the SVG lacks {label:?}");
    }
    // Same seed, same figures, with or without the plot.
    assert_eq!(with_svg, json_report(&[]));
}

#[test]
fn text_report_shows_the_figures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("small.svg");
    let file_arg = file.to_str().expect("utf-8 path");
    let run = crowds(&[
        "analyze",
        "--members",
        "10",
        "--collaborators",
        "1",
        "--pf",
        "0.6",
        "--trials",
        "2000",
        "--reformations",
        "3",
        "--svg",
        file_arg,
    ]);
    assert!(run.success, "{}", run.stderr);
    for text in [
        "P(H1+)",
        "P(I|H1+)",
        "Probable innocence",
        "does NOT hold",
        "R = 3",
        "joins every",
        "seed ",
        file_arg,
    ] {
        assert!(
            run.stdout.contains(text),
            "the report lacks {text:?}:\n{}",
            run.stdout
        );
    }
    assert!(file.exists());
}

/// `--reformations-list`: the approximation for every listed R, Monte Carlo beside it
/// where the budget allows, and nothing else in the report changes.
#[test]
fn reformations_list_gives_the_approximation_beside_monte_carlo() {
    let plain = json_report(&[]);
    let r = json_report(&["--reformations-list", "1,5,30,86400"]);
    // The list is computed last: every other figure is the same for the same seed.
    let mut without_list = r.clone();
    without_list["reformations_list"] = plain["reformations_list"].clone();
    assert_eq!(without_list, plain);
    assert_eq!(plain["reformations_list"], serde_json::json!([]));

    let rows = r["reformations_list"].as_array().expect("list");
    let listed: Vec<u64> = rows
        .iter()
        .map(|row| row["reformations"].as_u64().expect("R"))
        .collect();
    assert_eq!(listed, [1, 5, 30, 86400]);
    let approx: Vec<f64> = rows
        .iter()
        .map(|row| number(row, "/approximation"))
        .collect();
    // After one re-formation the initiator stands out exactly when it is observed.
    assert!(close(
        approx[0],
        number(&r, "/closed_form/initiator_observed_per_reformation")
    ));
    assert!(approx.windows(2).all(|w| w[0] < w[1]), "{approx:?}");
    assert!(approx[3] > 0.999_999 && approx[3] <= 1.0, "{approx:?}");
    for row in &rows[..3] {
        // An upper bound, and a close one: within 0.06 above the estimate, never clearly
        // below it.
        let e = number(row, "/initiator_stands_out/estimate");
        let (low, high) = (
            number(row, "/initiator_stands_out/ci95/0"),
            number(row, "/initiator_stands_out/ci95/1"),
        );
        let a = number(row, "/approximation");
        let slack = 2.5 * (high - low) / 2.0;
        assert!(a >= e - slack && a <= e + 0.06 + slack, "{row}");
    }
    // 20,000 trials cannot buy campaigns of 86,400 re-formations: the note says what would.
    let note = rows[3]["initiator_stands_out"]["note"]
        .as_str()
        .expect("note");
    assert!(note.contains("--trials"), "{note}");
    // The approximation's count for 1/2 is close to the simulated one (and no later).
    let attack = &r["predecessor_attack"];
    let simulated = attack["reformations_to_stand_out"].as_u64().expect("MC");
    let approximated = attack["reformations_to_stand_out_approximation"]
        .as_u64()
        .expect("approximation");
    assert!(
        approximated <= simulated + 1 && approximated + 2 >= simulated,
        "{approximated} vs {simulated}"
    );
    // Every join-rate row has the approximation too.
    for row in r["join_rate"].as_array().expect("join_rate") {
        let a = number(row, "/approximation");
        assert!((0.0..=1.0).contains(&a), "{row}");
    }

    // The text report shows the table.
    let mut args = CROWD.to_vec();
    args.extend_from_slice(&["--reformations-list", "7,30"]);
    let run = crowds(&args);
    assert!(run.success, "{}", run.stderr);
    for text in [
        "P(initiator stands out after R) for the listed R",
        "approximation",
        "By the approximation the initiator likely (p >= 1/2) stands out after",
    ] {
        assert!(run.stdout.contains(text), "no {text:?} in:\n{}", run.stdout);
    }
    // Its row: R, then the approximation (not the join-rate table's "30 s").
    let line = run
        .stdout
        .lines()
        .find(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words.len() > 2 && words[0] == "30" && words[1].parse::<f64>().is_ok()
        })
        .expect("a row for R = 30");
    assert!(line.contains("campaigns"), "{line}");
}

#[test]
fn invalid_arguments_are_refused_naming_the_flag() {
    let base = |members: &str, collaborators: &str, pf: &str| {
        vec![
            "analyze".to_string(),
            format!("--members={members}"),
            format!("--collaborators={collaborators}"),
            format!("--pf={pf}"),
        ]
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (base("0", "0", "0.75"), "--members"),
        (base("200000", "0", "0.75"), "--members"),
        (base("abc", "0", "0.75"), "--members"),
        (base("20", "20", "0.75"), "--collaborators"),
        (base("20", "25", "0.75"), "--collaborators"),
        (base("20", "3", "1"), "--pf"),
        (base("20", "3", "-0.1"), "--pf"),
        (base("20", "3", "NaN"), "--pf"),
        (base("20", "3", "0.9999"), "--pf"),
        (
            [base("20", "3", "0.75"), vec!["--trials=0".into()]].concat(),
            "--trials",
        ),
        (
            [base("20", "3", "0.75"), vec!["--trials=20000000".into()]].concat(),
            "--trials",
        ),
        (
            [base("20", "3", "0.99"), vec!["--trials=10000000".into()]].concat(),
            "--trials",
        ),
        (
            [base("20", "3", "0.75"), vec!["--reformations=0".into()]].concat(),
            "--reformations",
        ),
        (
            [base("20", "3", "0.75"), vec!["--reformations=10001".into()]].concat(),
            "--reformations",
        ),
        (
            vec![
                "analyze".into(),
                "--members=20".into(),
                "--collaborators=3".into(),
            ],
            "--pf",
        ),
        (
            [
                base("20", "3", "0.75"),
                vec!["--reformations-list=30,0".into()],
            ]
            .concat(),
            "--reformations-list",
        ),
        (
            [
                base("20", "3", "0.75"),
                vec!["--reformations-list=1000001".into()],
            ]
            .concat(),
            "--reformations-list",
        ),
        (
            [
                base("20", "3", "0.75"),
                vec!["--reformations-list=7,a month".into()],
            ]
            .concat(),
            "--reformations-list",
        ),
        (
            [
                base("20", "3", "0.75"),
                vec![format!("--reformations-list={}", vec!["1"; 33].join(","))],
            ]
            .concat(),
            "--reformations-list",
        ),
    ];
    for (args, flag) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = crowds(&args);
        assert!(!run.success, "crowds {args:?} succeeded");
        assert!(
            run.stderr.contains(flag),
            "crowds {args:?}: the error does not name {flag}:\n{}",
            run.stderr
        );
        assert!(run.stdout.is_empty(), "crowds {args:?} printed a report");
    }
}
