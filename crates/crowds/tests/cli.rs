//! The command line as a user meets it: refusals with clear messages (password file
//! permissions, insecure pf, missing passwords) and `crowds demo` end to end.

use crowds_proto::identity::SecretKey;
use crowds_testkit::*;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// The `crowds` binary these tests run.
const KIT: Kit = Kit::new(env!("CARGO_BIN_EXE_crowds"));

const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn jondo_refuses_a_password_file_others_can_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("blender.pub");
    let key = SecretKey::generate().expect("key").public().to_hex();
    std::fs::write(&key_file, format!("{key}\n")).expect("key file");
    for mode in [0o644, 0o640, 0o604] {
        let pw = dir.path().join(format!("password-{mode:o}"));
        write_file_mode(&pw, "a password\n", mode);
        let ip = jondo_ip(20);
        let mut p = KIT.spawn_jondo(&JondoSpec {
            name: &format!("jondo-{mode:o}"),
            data_dir: &dir.path().join("data"),
            // Nothing listens there: the jondo must stop before trying.
            blender: free_local_addr(),
            blender_key: &key_file,
            account: "alice",
            password_file: &pw,
            peer: SocketAddr::new(IpAddr::V4(ip), free_port(ip)),
            proxy: free_local_addr(),
            socks: free_local_addr(),
            control: free_local_addr(),
            allow_private: true,
            extra: &[],
            log_dir: dir.path(),
        });
        let status = p.wait_exit(EXIT_TIMEOUT).await;
        let stderr = p.stderr();
        assert!(!status.success(), "mode {mode:o}: exited {status}");
        assert!(
            stderr.contains("chmod 600"),
            "mode {mode:o}: stderr does not say how to fix it:\n{stderr}"
        );
        assert!(
            stderr.contains(&pw.display().to_string()),
            "mode {mode:o}: stderr does not name the file:\n{stderr}"
        );
        assert!(!stderr.contains("a password"), "the password was printed");
    }
}

async fn blender_with_pf(pf_args: &[&str]) -> (std::process::ExitStatus, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let listen = free_local_addr().to_string();
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8 path");
    let mut args = vec!["blender", "--data-dir", data, "--listen", &listen];
    args.extend_from_slice(pf_args);
    let (status, _, stderr) = KIT.run_to_end(&args, EXIT_TIMEOUT).await;
    (status, stderr)
}

#[tokio::test]
async fn blender_refuses_an_insecure_pf_unless_told() {
    for pf in ["0.4", "0.5", "1.0", "1", "0", "NaN", "inf", "-0.2"] {
        let arg = format!("--pf={pf}");
        let (status, stderr) = blender_with_pf(&[&arg]).await;
        assert!(!status.success(), "--pf {pf} was accepted");
        assert!(
            stderr.contains("--pf") && stderr.contains("invalid"),
            "--pf {pf}: unclear message:\n{stderr}"
        );
    }
    // Even for experiments, pf must be in [0, 1).
    for pf in ["1.0", "1.5", "NaN", "-0.2"] {
        let arg = format!("--pf={pf}");
        let (status, stderr) = blender_with_pf(&[&arg, "--insecure-pf"]).await;
        assert!(!status.success(), "--pf {pf} --insecure-pf was accepted");
        assert!(stderr.contains("invalid"), "--pf {pf}: {stderr}");
    }
    // With --insecure-pf, 0.4 runs (with a warning).
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut blender, _, pub_path) = KIT
        .start_blender(
            &dir.path().join("data"),
            dir.path(),
            &["--pf", "0.4", "--insecure-pf"],
        )
        .await;
    let key = std::fs::read_to_string(&pub_path).expect("blender.pub");
    crowds_proto::identity::PublicKey::from_hex(&key).expect("blender.pub holds a key");
    blender.assert_running();
    assert!(
        blender.stderr().contains("insecure-pf"),
        "no warning about --insecure-pf:\n{}",
        blender.stderr()
    );
    blender.kill();
}

#[tokio::test]
async fn account_add_reads_one_password_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("blender");
    KIT.account_add(&data, "alice", "correct horse");
    // No password on standard input: refused, with a hint.
    let out = std::process::Command::new(KIT.bin())
        .args(["account", "add", "--data-dir"])
        .arg(&data)
        .arg("bob")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("password"), "{stderr}");
    // A name taken twice is refused.
    let mut child = std::process::Command::new(KIT.bin())
        .args(["account", "add", "--data-dir"])
        .arg(&data)
        .arg("alice")
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"another\n").expect("write");
    }
    let out = child.wait_with_output().expect("wait");
    assert!(!out.status.success(), "a second alice was created");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exists"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Listing shows names, never passwords.
    let out = std::process::Command::new(KIT.bin())
        .args(["account", "list", "--data-dir"])
        .arg(&data)
        .output()
        .expect("run");
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("alice"), "{stdout}");
    assert!(!stdout.contains("bob"), "{stdout}");
    assert!(!stdout.contains("correct horse"), "{stdout}");
}

#[tokio::test]
async fn demo_runs_requests_and_prints_who_the_server_saw() {
    let (status, stdout, stderr) = KIT
        .run_to_end(
            &[
                "demo",
                "--jondos",
                "3",
                "--requests",
                "5",
                "--proxy-port",
                "0",
            ],
            Duration::from_secs(120),
        )
        .await;
    assert!(
        status.success(),
        "demo failed ({status}):\n{stdout}\n{stderr}"
    );
    // Rows: "N  jondo I  127.0.0.X (jondo J)".
    let mut rows = Vec::new();
    for line in stdout.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(n) = words.first().and_then(|w| w.parse::<usize>().ok()) else {
            continue;
        };
        assert!(words.len() >= 4, "short row: {line:?}");
        assert_eq!(words[1], "jondo", "{line:?}");
        let initiator: usize = words[2].parse().expect("initiator number");
        let seen: IpAddr = words[3]
            .parse()
            .unwrap_or_else(|_| panic!("no IP in {line:?}"));
        rows.push((n, initiator, seen, line.to_string()));
    }
    assert_eq!(
        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5],
        "five numbered rows expected:\n{stdout}"
    );
    let mut exit_of: HashMap<usize, IpAddr> = HashMap::new();
    for (_, initiator, seen, line) in &rows {
        assert!((1..=3).contains(initiator), "{line}");
        let IpAddr::V4(v4) = seen else {
            panic!("not IPv4: {line}")
        };
        let [a, b, c, d] = v4.octets();
        assert!(
            (a, b, c) == (127, 0, 0) && (2..=4).contains(&d),
            "the server saw {seen}, not a demo jondo: {line}"
        );
        assert!(
            line.contains(&format!("(jondo {})", d - 1)),
            "row does not name the exit jondo: {line}"
        );
        let first = *exit_of.entry(*initiator).or_insert(*seen);
        assert_eq!(
            first, *seen,
            "jondo {initiator} left through two exits (static paths):\n{stdout}"
        );
    }
}
