//! The user-facing surfaces: status pages in a real browser, Prometheus metrics, and
//! `crowds init` configs that round-trip through `crowds jondo --config`.

use crowds_proto::analysis::CrowdModel;
use crowds_testkit::*;
use hyper::{header, Request, StatusCode};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The `crowds` binary these tests run.
const KIT: Kit = Kit::new(env!("CARGO_BIN_EXE_crowds"));

/// Checks Prometheus text exposition format 0.0.4 line by line; returns the samples.
fn parse_prometheus(text: &str) -> Vec<(String, f64)> {
    let mut samples = Vec::new();
    let mut typed = std::collections::HashSet::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let name = parts.next().expect("TYPE names a metric");
            let kind = parts.next().expect("TYPE has a kind");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "bad type line: {line}"
            );
            assert!(typed.insert(name.to_string()), "metric typed twice: {name}");
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment line: {line}");
        let (series, value) = line.rsplit_once(' ').expect("sample has a value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let name = series.split('{').next().expect("name");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && !name.is_empty(),
            "bad metric name: {line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(
                    labels.starts_with('{') && labels.ends_with('}'),
                    "bad labels: {line}"
                );
                for pair in labels[1..labels.len() - 1].split(',') {
                    let (k, v) = pair.split_once('=').expect("label k=v");
                    assert!(
                        !k.is_empty() && v.starts_with('"') && v.ends_with('"'),
                        "{line}"
                    );
                }
            }
        }
        assert!(typed.contains(name), "sample before its TYPE line: {line}");
        samples.push((series.to_string(), value));
    }
    samples
}

fn sample(samples: &[(String, f64)], series: &str) -> f64 {
    samples
        .iter()
        .find(|(s, _)| s == series)
        .unwrap_or_else(|| panic!("no sample {series}"))
        .1
}

/// The status of `GET path` at `addr` with the given `Host` header.
async fn get_with_host(addr: SocketAddr, path: &str, host: &str) -> StatusCode {
    let mut client = HttpClient::connect(addr).await.expect("connect");
    let req = Request::get(path)
        .header(header::HOST, host)
        .body(empty_body())
        .expect("request");
    client.send(req).await.expect("response").status()
}

async fn get_text(addr: SocketAddr, path: &str) -> String {
    let (status, body) = direct_get(addr, path).await.expect("GET");
    assert_eq!(status, 200, "{path}");
    String::from_utf8(body.to_vec()).expect("utf-8")
}

fn chromium_dump(url: &str, shot: &Path, profile: &Path) -> String {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=3000",
            "--window-size=1000,800",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(url)
        .output()
        .expect("chromium (tools/test --all installs it)");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dom = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=3000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .output()
        .expect("chromium");
    assert!(
        dom.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&dom.stderr)
    );
    String::from_utf8_lossy(&dom.stdout).into_owned()
}

/// Both status pages render in Chromium and show the crowd; metrics parse and move.
/// Heavy tier (it needs Chromium): runs with `--features heavy`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "heavy"),
    ignore = "needs Chromium: heavy tier (--features heavy)"
)]
async fn status_pages_and_metrics() {
    let dir = tempfile::tempdir().expect("tmp");
    let blender_dir = dir.path().join("blender");
    let logs = dir.path().join("logs");
    for i in 0..2 {
        KIT.account_add(&blender_dir, &format!("member{i}"), "a password");
    }
    let blender_control = free_local_addr();
    let control_arg = blender_control.to_string();
    let (_blender, blender_addr, blender_pub) = KIT
        .start_blender(&blender_dir, &logs, &["--control-listen", &control_arg])
        .await;
    let pw = dir.path().join("pw");
    write_file_mode(&pw, "a password\n", 0o600);
    let mut jondos = Vec::new();
    for i in 0..2 {
        let ip = jondo_ip(40 + i);
        let control = free_local_addr();
        let proxy = free_local_addr();
        let proc = KIT.spawn_jondo(&JondoSpec {
            name: &format!("member{i}"),
            data_dir: &dir.path().join(format!("j{i}")),
            blender: blender_addr,
            blender_key: &blender_pub,
            account: &format!("member{i}"),
            password_file: &pw,
            peer: SocketAddr::new(IpAddr::V4(ip), free_port(ip)),
            proxy,
            socks: free_local_addr(),
            control,
            allow_private: true,
            extra: &[],
            log_dir: &logs,
        });
        jondos.push((proc, control, proxy));
    }
    for (_, control, _) in &jondos {
        let control = *control;
        eventually("both jondos admitted", FORM_TIMEOUT, || async move {
            let s = status_of(control).await?;
            (s["members"] == 2 && s["admitted"] == true)
                .then_some(())
                .ok_or_else(|| format!("{s}"))
        })
        .await;
    }
    let (_, control, proxy) = jondos[0];
    let status = status_of(control).await.expect("status");
    let epoch = status["epoch"].as_u64().expect("epoch");

    // DNS rebinding: a page whose own name now points at 127.0.0.1 reads nothing.
    for (port, what) in [(control, "jondo"), (blender_control, "blender")] {
        for path in ["/status.json", "/", "/metrics", "/proxy.pac"] {
            for (host, allowed) in [
                ("evil.example", false),
                (&*format!("rebind.example:{}", port.port()), false),
                (&*port.to_string(), true),
                (&*format!("localhost:{}", port.port()), true),
            ] {
                let status = get_with_host(port, path, host).await;
                assert_eq!(
                    status == StatusCode::FORBIDDEN,
                    !allowed,
                    "{what} {path} with Host {host}: {status}"
                );
            }
        }
    }

    // Metrics parse, and counters move with traffic.
    let before = parse_prometheus(&get_text(control, "/metrics").await);
    assert_eq!(sample(&before, "crowds_members"), 2.0);
    let origin = Origin::start().await;
    let mut client = HttpClient::connect(proxy).await.expect("proxy");
    for _ in 0..3 {
        let (s, _, _) = client
            .get(&format!("http://{}/whoami", origin.addr), &[])
            .await
            .expect("request");
        assert_eq!(s, 200);
    }
    let after = parse_prometheus(&get_text(control, "/metrics").await);
    assert_eq!(
        sample(&after, "crowds_requests_initiated_total")
            - sample(&before, "crowds_requests_initiated_total"),
        3.0
    );
    assert!(
        sample(&after, "crowds_bytes_to_user_total")
            > sample(&before, "crowds_bytes_to_user_total")
    );
    let blender_metrics = parse_prometheus(&get_text(blender_control, "/metrics").await);
    assert_eq!(sample(&blender_metrics, "crowds_blender_members"), 2.0);
    assert!(sample(&blender_metrics, "crowds_blender_heartbeats_total") >= 0.0);
    // No label names a destination or a member.
    let all = get_text(control, "/metrics").await + &get_text(blender_control, "/metrics").await;
    assert!(!all.contains("127.0.0."), "metrics mention an address");

    // Re-formations and epochs of the last 24 hours, beside what they mean for the
    // predecessor attack, from the analysis code.
    let status = status_of(control).await.expect("status");
    let reforms_24h = status["own_path_reforms_24h"]
        .as_u64()
        .expect("reforms 24h");
    let reforms = status["requests"]["own_path_reforms"]
        .as_u64()
        .expect("reforms");
    assert!(reforms_24h <= reforms, "{status}");
    let epochs_24h = status["epochs_24h"].as_u64().expect("epochs 24h");
    assert!(
        epochs_24h >= 1,
        "admitted, so at least one epoch was adopted: {status}"
    );
    // Every adopted epoch has a number of its own (0 included), so no more were adopted.
    assert!(
        epochs_24h <= status["epoch"].as_u64().expect("epoch") + 1,
        "{status}"
    );
    // Three plain GETs fail on nobody's side.
    assert_eq!(status["requests"]["client_failures"], 0, "{status}");
    let attack = &status["predecessor_attack"];
    assert_eq!(attack["assumed_share_percent"], 10, "{status}");
    // Two members: 10 % rounds up to one collaborator, and no c keeps probable innocence.
    let share = &attack["at_assumed_share"];
    assert_eq!(share["collaborators"], 1, "{status}");
    let model = CrowdModel::new(2, 1, 0.75).expect("model");
    let observed = share["initiator_observed_per_reformation"]
        .as_f64()
        .expect("p");
    assert!(
        (observed - model.initiator_observed()).abs() < 1e-12,
        "{status}"
    );
    assert!(
        (observed - 0.8).abs() < 1e-12,
        "P(H1+) 0.8 x P(I|H1+) 1: {status}"
    );
    assert_eq!(share["reformations_to_stand_out"], 1, "{status}");
    assert_eq!(share["probable_innocence"], false, "{status}");
    assert!(attack["at_probable_innocence_limit"].is_null(), "{status}");
    let metrics = parse_prometheus(&get_text(control, "/metrics").await);
    let gauge_24h = sample(&metrics, "crowds_own_path_reforms_24h");
    assert!(gauge_24h >= reforms_24h as f64);
    assert!(gauge_24h <= sample(&metrics, "crowds_own_path_reforms_total"));
    assert!(sample(&metrics, "crowds_epochs_24h") >= epochs_24h as f64);
    assert_eq!(sample(&metrics, "crowds_client_failures_total"), 0.0);
    assert_eq!(
        sample(&metrics, "crowds_attack_observed_per_reformation"),
        observed
    );
    assert_eq!(
        sample(&metrics, "crowds_attack_reformations_to_stand_out"),
        1.0
    );
    let text = get_text(control, "/metrics").await;
    assert!(
        text.contains(
            "# HELP crowds_own_path_reforms_total Re-formations of the user's own path, all causes"
        ),
        "{text}"
    );

    // The status pages in a real browser.
    let profile = tempfile::tempdir().expect("profile");
    let shot = dir.path().join("jondo-status.png");
    let dom = chromium_dump(&format!("http://{control}/"), &shot, profile.path());
    assert!(
        dom.contains("<span class=\"big\" id=\"members\">2</span>"),
        "{dom}"
    );
    assert!(dom.contains(&format!("id=\"epoch\">{epoch}<")), "{dom}");
    assert!(
        dom.contains("probable innocence") || dom.contains("too small"),
        "{dom}"
    );
    assert!(
        !dom.contains(&origin.addr.to_string()),
        "the page names a destination"
    );
    assert!(dom.contains("id=\"reforms24h\">"), "{dom}");
    assert!(dom.contains("id=\"epochs24h\">"), "{dom}");
    assert!(
        dom.contains("each re-formation shows you to them with probability <b>0.80</b>"),
        "{dom}"
    );
    assert!(
        dom.contains("after about <b>1 re-formation</b> you would likely stand out"),
        "{dom}"
    );
    let png = std::fs::metadata(&shot).expect("screenshot written");
    assert!(
        png.len() > 5_000,
        "screenshot too small: {} bytes",
        png.len()
    );
    let shot = dir.path().join("blender-status.png");
    let dom = chromium_dump(&format!("http://{blender_control}/"), &shot, profile.path());
    assert!(
        dom.contains("<span class=\"big\" id=\"members\">2</span>"),
        "{dom}"
    );
    assert!(
        !dom.contains("member0"),
        "the blender page shows account names"
    );
    assert!(std::fs::metadata(&shot).expect("screenshot").len() > 5_000);
    // The PAC file sends everything to this jondo.
    let pac = get_text(control, "/proxy.pac").await;
    assert!(pac.contains(&format!("PROXY {proxy}")), "{pac}");
    assert!(!pac.contains("DIRECT"), "{pac}");
}

/// `crowds init` writes a config that `crowds jondo --config` runs with; bad values
/// give an error naming the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_config_round_trips_and_bad_values_are_named() {
    let dir = tempfile::tempdir().expect("tmp");
    let blender_dir = dir.path().join("blender");
    let logs = dir.path().join("logs");
    KIT.account_add(&blender_dir, "solo", "solo password");
    let (_blender, blender_addr, blender_pub) = KIT.start_blender(&blender_dir, &logs, &[]).await;
    let pw = dir.path().join("pw");
    write_file_mode(&pw, "solo password\n", 0o600);
    let ip = jondo_ip(45);
    let peer = SocketAddr::new(IpAddr::V4(ip), free_port(ip));
    let control = free_local_addr();
    let config = dir.path().join("jondo.toml");
    let data = dir.path().join("data");
    let args: Vec<String> = vec![
        "init".into(),
        "--output".into(),
        config.display().to_string(),
        "--data-dir".into(),
        data.display().to_string(),
        "--blender".into(),
        blender_addr.to_string(),
        "--blender-key".into(),
        blender_pub.display().to_string(),
        "--account".into(),
        "solo".into(),
        "--password-file".into(),
        pw.display().to_string(),
        "--peer-listen".into(),
        peer.to_string(),
        "--proxy-listen".into(),
        free_local_addr().to_string(),
        "--socks-listen".into(),
        free_local_addr().to_string(),
        "--control-listen".into(),
        control.to_string(),
        "--exit-ports".into(),
        "80,443,8080".into(),
        "--allow-private-destinations".into(),
    ];
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (status, _, stderr) = KIT.run_to_end(&argv, Duration::from_secs(30)).await;
    assert!(status.success(), "{stderr}");
    let text = std::fs::read_to_string(&config).expect("config written");
    assert!(text.contains("# Precedence:"), "commented: {text}");
    assert!(text.contains("exit_ports = \"80,443,8080\""), "{text}");
    assert!(data.join("identity.key").exists(), "identity key created");
    // A second init refuses to overwrite.
    let (status, _, stderr) = KIT.run_to_end(&argv, Duration::from_secs(30)).await;
    assert!(!status.success() && stderr.contains("--force"), "{stderr}");

    // The written config alone runs a jondo that joins the crowd.
    let mut cmd = Command::new(KIT.bin());
    cmd.arg("jondo").arg("--config").arg(&config);
    let _jondo = Proc::spawn("from-config", &mut cmd, &logs);
    eventually(
        "the jondo from the config joins",
        FORM_TIMEOUT,
        || async move {
            let s = status_of(control).await?;
            (s["admitted"] == true)
                .then_some(())
                .ok_or_else(|| format!("{s}"))
        },
    )
    .await;

    // Bad values are refused with the key named.
    for (line, key) in [
        ("peer_listen = \"not an address\"", "peer_listen"),
        ("heartbeat_interval = \"soon\"", "heartbeat_interval"),
        ("exit_ports = \"80,http\"", "exit_ports"),
        ("no_such_setting = 1", "no_such_setting"),
    ] {
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, format!("{line}\n")).expect("write");
        let (status, _, stderr) = KIT
            .run_to_end(
                &["jondo", "--config", bad.to_str().expect("path")],
                Duration::from_secs(30),
            )
            .await;
        assert!(!status.success(), "{line} was accepted");
        assert!(
            stderr.contains(key),
            "the error for {line} does not name {key}: {stderr}"
        );
    }
}
