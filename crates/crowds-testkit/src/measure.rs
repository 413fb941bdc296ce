//! Helpers of `tests/measured.rs`: the measurement build of the binary (cargo feature
//! `measure`, built once into `target/measure`), a crowd of its jondo processes of which
//! some play collaborators, readers of the collaborators' logs, and the statistics the
//! measured figures are judged by (Wilson intervals at any confidence, chi-square
//! quantiles).
//!
//! Everything runs on 127.0.0.0/8; children are
//! killed on drop; waits are bounded polls.

use crate::*;
use crowds_proto::analysis::Estimate;
use hyper::{header, Request, StatusCode};
use std::collections::HashMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The workspace root (two levels above this crate's manifest).
pub fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// Time the measurement build may take (a cold build of every dependency on a slow
/// machine included).
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Builds `crowds` with the cargo feature `measure` into `target/measure` of the
/// workspace, once, and returns the binary's path.
///
/// The shipped binary under test (`kit`) must stay as it is, so the
/// measurement build gets its own target directory. Its intermediate artifacts go to the
/// build directory of the build that compiled this test (cargo's `build.build-dir`,
/// unless one is configured already): every dependency compiled there with the same
/// settings is reused, and only `crowds-jondo` and the crates above it are compiled again with the
/// feature. Cargo's own locks keep the two builds apart.
pub async fn measure_binary(kit: Kit, log_dir: &Path) -> PathBuf {
    let root = workspace_root();
    let target = root.join("target").join("measure");
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "-p",
            "crowds",
            "--bin",
            "crowds",
            "--features",
            "measure",
        ])
        .arg("--target-dir")
        .arg(&target)
        .env_remove("CARGO_TARGET_DIR")
        .env("CARGO_TERM_COLOR", "never");
    if profile == "release" {
        cmd.arg("--release");
    }
    // The directory holding the binary under test is `<target-dir>/<profile>/`.
    let shared = kit.bin().parent().and_then(Path::parent);
    if std::env::var_os("CARGO_BUILD_BUILD_DIR").is_none() {
        if let Some(dir) = shared.filter(|d| d.is_dir()) {
            cmd.env("CARGO_BUILD_BUILD_DIR", dir);
        }
    }
    let started = Instant::now();
    let mut build = Proc::spawn("cargo-build-measure", &mut cmd, log_dir);
    let status = build.wait_exit(BUILD_TIMEOUT).await;
    assert!(
        status.success(),
        "cargo build --features measure failed ({status}):\n{}",
        build.stderr()
    );
    let bin = target.join(profile).join("crowds");
    assert!(bin.is_file(), "no measurement binary at {}", bin.display());
    eprintln!(
        "measurement build ({}) ready in {:.1?}",
        bin.display(),
        started.elapsed()
    );
    bin
}

/// Runs `BIN account add --data-dir DIR NAME` for each `(name, password)`, the
/// password on standard input: the first alone (it creates the store), the others at
/// once (hashing the password is the slow part; the store waits for its lock).
pub fn accounts_add(bin: &Path, data_dir: &Path, accounts: &[(String, String)]) {
    let spawn = |name: &str, password: &str| {
        let mut child = Command::new(bin)
            .args(["account", "add", "--data-dir"])
            .arg(data_dir)
            .arg(name)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn crowds account add");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{password}\n").as_bytes())
            .expect("write password");
        (name.to_string(), child)
    };
    let finish = |(name, child): (String, std::process::Child)| {
        let out = child.wait_with_output().expect("account add output");
        assert!(
            out.status.success(),
            "crowds account add {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let Some(((first, pw), rest)) = accounts.split_first() else {
        return;
    };
    finish(spawn(first, pw));
    let children: Vec<_> = rest.iter().map(|(n, p)| spawn(n, p)).collect();
    for child in children {
        finish(child);
    }
}

/// Peer address of member `i` of a measured crowd: 127.0.0.(121 + i); the blender
/// listens on 127.0.0.120.
pub fn measured_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 121 + u8::try_from(i).expect("small crowd"))
}

/// One jondo process of a [`MeasuredCrowd`].
pub struct MeasuredJondo {
    /// Account name (also the log name).
    pub account: String,
    /// Peer address: what the origin server sees when this jondo is the exit.
    pub peer: SocketAddr,
    /// HTTP proxy.
    pub proxy: SocketAddr,
    /// Control port (status, `/measure/reform`).
    pub control: SocketAddr,
    /// Its member id in the crowd (the blender's account number), once formed.
    pub member_id: u64,
    /// The file it logs predecessors to, if it plays a collaborator.
    pub collaborator_log: Option<PathBuf>,
    /// The process.
    pub proc: Proc,
}

/// A blender and jondo processes of the measurement build, some of them collaborators;
/// all killed on drop (the processes are dropped before the directory).
pub struct MeasuredCrowd {
    /// The jondos, in order (jondo i on 127.0.0.(121 + i)).
    pub jondos: Vec<MeasuredJondo>,
    /// The blender.
    pub blender: Proc,
    /// The blender's control port (`/status.json`).
    pub blender_control: SocketAddr,
    /// The crowd's epoch once formed.
    pub epoch: u64,
    /// Data directories and logs (removed last).
    pub dir: tempfile::TempDir,
}

impl MeasuredCrowd {
    /// Starts a blender (`--pf PF --join-interval 1s --control-listen`) and `n` jondos
    /// (`--allow-private-destinations`), of which those at the indices in `collaborators`
    /// log their predecessors, and waits until every jondo and the blender see the same
    /// crowd of `n` forwarding members.
    pub async fn start(bin: &Path, n: usize, collaborators: &[usize], pf: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("crowds-measured-")
            .tempdir()
            .expect("tempdir");
        let blender_dir = dir.path().join("blender");
        let logs = dir.path().join("logs");
        let accounts: Vec<(String, String)> = (0..n)
            .map(|i| {
                let pw = format!("password of member {i} ({})", std::process::id());
                (format!("member{i}"), pw)
            })
            .collect();
        let t = Instant::now();
        accounts_add(bin, &blender_dir, &accounts);
        eprintln!("{n} accounts created in {:.1?}", t.elapsed());
        let passwords: Vec<&String> = accounts.iter().map(|(_, pw)| pw).collect();
        let blender_ip = Ipv4Addr::new(127, 0, 0, 120);
        let blender_addr = SocketAddr::new(IpAddr::V4(blender_ip), free_port(blender_ip));
        let blender_control = free_local_addr();
        let mut cmd = Command::new(bin);
        cmd.arg("blender")
            .arg("--data-dir")
            .arg(&blender_dir)
            .arg("--listen")
            .arg(blender_addr.to_string())
            .args(["--pf", pf, "--join-interval", "1s"])
            .arg("--control-listen")
            .arg(blender_control.to_string())
            .env_remove("CROWDS_MEASURE_COLLABORATOR");
        let mut blender = Proc::spawn("blender", &mut cmd, &logs);
        let blender_pub = blender_dir.join("blender.pub");
        crate::crowd::wait_blender(&mut blender, &blender_pub, blender_addr).await;

        let mut jondos = Vec::new();
        for (i, pw) in passwords.iter().enumerate() {
            let account = format!("member{i}");
            let data_dir = dir.path().join(&account);
            let pw_file = dir.path().join(format!("{account}.password"));
            write_file_mode(&pw_file, &format!("{pw}\n"), 0o600);
            let ip = measured_ip(i);
            let peer = SocketAddr::new(IpAddr::V4(ip), free_port(ip));
            let (proxy, socks, control) = (free_local_addr(), free_local_addr(), free_local_addr());
            let collaborator_log = collaborators
                .contains(&i)
                .then(|| dir.path().join(format!("{account}.collaborator")));
            let mut cmd = Command::new(bin);
            cmd.arg("jondo")
                .arg("--data-dir")
                .arg(&data_dir)
                .arg("--blender")
                .arg(blender_addr.to_string())
                .arg("--blender-key")
                .arg(&blender_pub)
                .arg("--account")
                .arg(&account)
                .arg("--password-file")
                .arg(&pw_file)
                .arg("--peer-listen")
                .arg(peer.to_string())
                .arg("--proxy-listen")
                .arg(proxy.to_string())
                .arg("--socks-listen")
                .arg(socks.to_string())
                .arg("--control-listen")
                .arg(control.to_string())
                .arg("--allow-private-destinations")
                .args(["--heartbeat-interval", "500ms", "--poll-interval", "200ms"]);
            match &collaborator_log {
                Some(log) => cmd.env("CROWDS_MEASURE_COLLABORATOR", log),
                None => cmd.env_remove("CROWDS_MEASURE_COLLABORATOR"),
            };
            let proc = Proc::spawn(&account, &mut cmd, &logs);
            jondos.push(MeasuredJondo {
                account,
                peer,
                proxy,
                control,
                member_id: u64::MAX,
                collaborator_log,
                proc,
            });
        }
        let mut crowd = MeasuredCrowd {
            jondos,
            blender,
            blender_control,
            epoch: 0,
            dir,
        };
        let t = Instant::now();
        crowd.wait_formed().await;
        eprintln!("{n} jondos admitted in {:.1?}", t.elapsed());
        crowd
    }

    /// Waits until the blender lists every member and every jondo is admitted, forwards,
    /// and holds the document of the same epoch listing all of them; records member ids
    /// and the epoch.
    async fn wait_formed(&mut self) {
        let n = self.jondos.len();
        let deadline = Instant::now() + FORM_TIMEOUT;
        loop {
            self.blender.assert_running();
            for j in &mut self.jondos {
                j.proc.assert_running();
            }
            let mut waiting = Vec::new();
            let mut ids = Vec::new();
            let mut epochs = Vec::new();
            match status_of(self.blender_control).await {
                Ok(s) if s["members"] == n && s["pending_joins"] == 0 => {
                    epochs.push(s["epoch"].as_u64().unwrap_or(0));
                }
                Ok(s) => waiting.push(format!(
                    "blender: members {} pending {}",
                    s["members"], s["pending_joins"]
                )),
                Err(e) => waiting.push(format!("blender: {e}")),
            }
            for j in &self.jondos {
                match status_of(j.control).await {
                    Ok(s)
                        if s["members"] == n
                            && s["forwarding_members"] == n
                            && s["admitted"] == true
                            && s["client_only"] == false =>
                    {
                        ids.push(s["member_id"].as_u64().expect("member_id"));
                        epochs.push(s["epoch"].as_u64().unwrap_or(0));
                    }
                    Ok(s) => waiting.push(format!(
                        "{}: members {} forwarding {} admitted {} client_only {}",
                        j.account,
                        s["members"],
                        s["forwarding_members"],
                        s["admitted"],
                        s["client_only"]
                    )),
                    Err(e) => waiting.push(format!("{}: {e}", j.account)),
                }
            }
            if waiting.is_empty() && epochs.iter().all(|e| *e == epochs[0]) {
                for (j, id) in self.jondos.iter_mut().zip(ids) {
                    j.member_id = id;
                }
                self.epoch = epochs[0];
                let mut distinct: Vec<u64> = self.jondos.iter().map(|j| j.member_id).collect();
                distinct.sort_unstable();
                distinct.dedup();
                assert_eq!(distinct.len(), n, "member ids are not distinct");
                return;
            }
            if waiting.is_empty() {
                waiting.push(format!("epochs differ: {epochs:?}"));
            }
            assert!(
                Instant::now() < deadline,
                "the crowd of {n} did not form within {FORM_TIMEOUT:?}: {}",
                waiting.join("; ")
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Member id -> index in [`Self::jondos`].
    pub fn index_of_member(&self) -> HashMap<u64, usize> {
        self.jondos
            .iter()
            .enumerate()
            .map(|(i, j)| (j.member_id, i))
            .collect()
    }

    /// Peer IP -> index in [`Self::jondos`].
    pub fn index_of_ip(&self) -> HashMap<IpAddr, usize> {
        self.jondos
            .iter()
            .enumerate()
            .map(|(i, j)| (j.peer.ip(), i))
            .collect()
    }

    /// The status of every jondo, in order.
    pub async fn statuses(&self) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        for j in &self.jondos {
            let s = status_of(j.control)
                .await
                .unwrap_or_else(|e| panic!("{} status: {e}", j.account));
            out.push(s);
        }
        out
    }

    /// Panics if the blender or a jondo has ended.
    pub fn assert_running(&mut self) {
        self.blender.assert_running();
        for j in &mut self.jondos {
            j.proc.assert_running();
        }
    }
}

/// Each jondo's `paths_formed` (hops it has decided), read from all at once.
pub async fn formed_counts(controls: &[SocketAddr]) -> Vec<u64> {
    let tasks: Vec<_> = controls
        .iter()
        .map(|&c| tokio::spawn(async move { status_of(c).await }))
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for (task, c) in tasks.into_iter().zip(controls) {
        let s = task
            .await
            .expect("status task")
            .unwrap_or_else(|e| panic!("status of {c}: {e}"));
        out.push(s["paths_formed"].as_u64().expect("paths_formed"));
    }
    out
}

/// `POST /measure/reform` at a jondo's control port: its next request forms a new path.
pub async fn reform(control: SocketAddr) -> Result<(), String> {
    let run = async {
        let mut client = HttpClient::connect(control).await?;
        let req = Request::post("/measure/reform")
            .header(header::HOST, control.to_string())
            .body(empty_body())
            .map_err(|e| e.to_string())?;
        let resp = client.send(req).await?;
        match resp.status() {
            StatusCode::NO_CONTENT => Ok(()),
            s => Err(format!(
                "POST /measure/reform answered {s} (is this a measurement build?)"
            )),
        }
    };
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .map_err(|_| format!("POST /measure/reform at {control} timed out"))?
}

/// Reads the lines appended to a collaborator's log since the last look.
pub struct LogTail {
    path: PathBuf,
    offset: u64,
}

impl LogTail {
    /// Starts at the current end of `path` (which may not exist yet).
    pub fn at_end(path: &Path) -> Self {
        let offset = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        LogTail {
            path: path.to_path_buf(),
            offset,
        }
    }

    /// The complete lines written since the last call.
    pub fn new_lines(&mut self) -> Vec<String> {
        let Ok(mut f) = fs::File::open(&self.path) else {
            return Vec::new();
        };
        f.seek(SeekFrom::Start(self.offset)).expect("seek log");
        let mut text = String::new();
        f.read_to_string(&mut text).expect("read log");
        let complete = text.rfind('\n').map_or(0, |i| i + 1);
        self.offset += complete as u64;
        text[..complete].lines().map(str::to_string).collect()
    }
}

// ---------------------------------------------------------------------------------
// Statistics.

/// Two-sided standard normal quantile for 95% intervals.
pub const Z95: f64 = crowds_proto::analysis::Z95;
/// Two-sided standard normal quantile for 99.99% intervals (the assertions).
pub const Z9999: f64 = 3.890_591_886_413_1;
/// One-sided upper standard normal quantile at 99.99%.
pub const Z9999_ONE_SIDED: f64 = 3.719_016_485_455_7;

/// The Wilson score interval of `successes / trials` at normal quantile `z`.
pub fn wilson(successes: u64, trials: u64, z: f64) -> (f64, f64) {
    crowds_proto::analysis::wilson_interval(successes, trials, z).expect("no trials")
}

/// The chi-square quantile with `df` degrees of freedom at standard normal quantile `z`
/// (Wilson–Hilferty; within a few tenths of a percent for df >= 5).
pub fn chi_square_quantile(df: f64, z: f64) -> f64 {
    let a = 2.0 / (9.0 * df);
    df * (1.0 - a + z * a.sqrt()).powi(3)
}

/// Pearson's chi-square statistic of `counts` against equal expected counts.
pub fn chi_square_uniform(counts: &[u64]) -> f64 {
    let total: u64 = counts.iter().sum();
    let expected = total as f64 / counts.len() as f64;
    counts
        .iter()
        .map(|&o| (o as f64 - expected).powi(2) / expected)
        .sum()
}

/// One measured figure next to its closed form.
pub struct Row {
    /// What it is.
    pub what: String,
    /// The closed form.
    pub closed: f64,
    /// The measurement.
    pub value: f64,
    /// Its 95% interval.
    pub ci95: (f64, f64),
    /// The interval the assertion uses (99.99%).
    pub wide: (f64, f64),
    /// How many samples it rests on.
    pub samples: u64,
    /// For a proportion, how many samples counted.
    pub successes: Option<u64>,
}

impl Row {
    /// A proportion with Wilson intervals.
    pub fn proportion(what: &str, closed: f64, successes: u64, trials: u64) -> Row {
        Row {
            what: what.to_string(),
            closed,
            value: successes as f64 / trials as f64,
            ci95: Estimate::proportion(successes, trials)
                .map(|e| (e.low, e.high))
                .expect("trials"),
            wide: wilson(successes, trials, Z9999),
            samples: trials,
            successes: Some(successes),
        }
    }

    /// A mean with normal intervals from a known standard deviation per sample.
    pub fn mean(what: &str, closed: f64, mean: f64, sd: f64, samples: u64) -> Row {
        let se = sd / (samples as f64).sqrt();
        Row {
            what: what.to_string(),
            closed,
            value: mean,
            ci95: (mean - Z95 * se, mean + Z95 * se),
            wide: (mean - Z9999 * se, mean + Z9999 * se),
            samples,
            successes: None,
        }
    }

    /// Whether the closed form lies in the 95% interval.
    pub fn in95(&self) -> bool {
        self.ci95.0 - 1e-12 <= self.closed && self.closed <= self.ci95.1 + 1e-12
    }

    /// Whether the closed form lies in the 99.99% interval (what the test asserts).
    pub fn agrees(&self) -> bool {
        self.wide.0 - 1e-12 <= self.closed && self.closed <= self.wide.1 + 1e-12
    }

    /// One line of the report table.
    pub fn line(&self) -> String {
        format!(
            "  {:<50} {:>8.4} {:>9.4}  [{:.4}, {:.4}]  [{:.4}, {:.4}]  {:>12}  {}",
            self.what,
            self.closed,
            self.value,
            self.ci95.0,
            self.ci95.1,
            self.wide.0,
            self.wide.1,
            match self.successes {
                Some(k) => format!("{k}/{}", self.samples),
                None => self.samples.to_string(),
            },
            if !self.agrees() {
                "DISAGREES"
            } else if self.in95() {
                "agrees"
            } else {
                "agrees (outside 95%)"
            }
        )
    }
}

/// The header of the report table.
pub fn table_header() -> String {
    format!(
        "  {:<50} {:>8} {:>9}  {:<16}  {:<16}  {:>12}",
        "per path", "closed", "measured", "95% interval", "99.99% interval", "count/paths"
    )
}
