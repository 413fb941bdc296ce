//! Helpers of the "whole web through the crowd" tests (tests/web_*.rs): real clients
//! (curl, Python `requests`, headless Chromium) run as child processes in their own
//! process groups (killed on drop), a test certificate authority, a recording web
//! origin over HTTP and HTTPS serving a small multi-resource site and test routes, a
//! raw TCP origin that misbehaves on purpose (in [`origin`]), and probes of
//! the paths through a crowd. Everything listens and connects on 127.0.0.0/8 only.

pub mod origin;
pub use origin::*;

use crate::*;
use http_body_util::BodyExt;
use hyper::StatusCode;
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Debian's Python (with python3-requests and python3-socks), not whatever `python3`
/// is first on the PATH.
pub const PYTHON: &str = "/usr/bin/python3";
/// Debian's Chromium.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// curl.
pub const CURL: &str = "curl";

/// Panics with an installation hint unless `program` can be run.
pub fn require_tool(program: &str, version_arg: &str) {
    let ok = Command::new(program)
        .arg(version_arg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{program} is needed by this test and cannot be run: install it (tools/test --all does: \
         apt-get install -y chromium python3-requests python3-socks curl)"
    );
}

/// Whether Debian's Python has the `requests` module, and the `socks` module.
pub fn python_modules() -> (bool, bool) {
    let has = |m: &str| {
        Command::new(PYTHON)
            .args(["-c", &format!("import {m}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    (has("requests"), has("socks"))
}

// ---------------------------------------------------------------------------------
// External programs.

/// What an external program did.
#[derive(Debug)]
pub struct Finished {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Time from spawn to exit (as seen by polling every few milliseconds).
    pub elapsed: Duration,
}

impl Finished {
    /// The exit code (-1 if killed by a signal).
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }

    /// Panics with the program's output unless it exited 0.
    pub fn assert_ok(&self, what: &str) -> &Self {
        assert!(
            self.status.success(),
            "{what} failed ({}) after {:?}\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.elapsed,
            tail(&self.stdout, 3000),
            tail(&self.stderr, 3000)
        );
        self
    }
}

/// The last `n` bytes of `text` (on a character boundary).
pub fn tail(text: &str, n: usize) -> &str {
    let mut start = text.len().saturating_sub(n);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// An external program in its own process group; the whole group is killed on drop,
/// so helpers it forked (Chromium's renderers, curl under a shell) go with it.
pub struct Tool {
    /// A name for messages.
    pub name: String,
    child: Option<Child>,
    pgid: u32,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    started: Instant,
}

impl Tool {
    /// Spawns `cmd` with its output in files under `dir`.
    pub fn spawn(name: &str, cmd: &mut Command, dir: &Path) -> Tool {
        fs::create_dir_all(dir).expect("log dir");
        let stdout_path = dir.join(format!("{name}.stdout"));
        let stderr_path = dir.join(format!("{name}.stderr"));
        let started = Instant::now();
        for var in [
            "http_proxy",
            "https_proxy",
            "all_proxy",
            "no_proxy",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "NO_PROXY",
        ] {
            cmd.env_remove(var);
        }
        let child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout_path).expect("stdout file"))
            .stderr(File::create(&stderr_path).expect("stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {name}: {e}"));
        Tool {
            name: name.to_string(),
            pgid: child.id(),
            child: Some(child),
            stdout_path,
            stderr_path,
            started,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pgid
    }

    /// Standard output so far.
    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// Standard error so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Polls (every 10 ms) for the program to end, for at most `timeout`; `None` if it
    /// still runs.
    pub async fn wait(&mut self, timeout: Duration) -> Option<Finished> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut().expect("not yet reaped");
            if let Some(status) = child.try_wait().expect("try_wait") {
                let elapsed = self.started.elapsed();
                self.child = None;
                // Helpers it left behind go now.
                kill_group(self.pgid);
                return Some(Finished {
                    status,
                    stdout: self.stdout(),
                    stderr: self.stderr(),
                    elapsed,
                });
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits for the program to end; kills it and panics (with its output) if it takes
    /// longer than `timeout`.
    pub async fn finish(&mut self, timeout: Duration) -> Finished {
        match self.wait(timeout).await {
            Some(f) => f,
            None => {
                self.kill();
                panic!(
                    "{} did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                    self.name,
                    tail(&self.stdout(), 3000),
                    tail(&self.stderr(), 3000)
                );
            }
        }
    }

    /// Kills the process group and reaps the program (idempotent).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_group(self.pgid);
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Tool {
    fn drop(&mut self) {
        self.kill();
    }
}

fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Runs `program args` to the end (bounded by `timeout`, else killed and a panic).
pub async fn run_tool(
    name: &str,
    program: &str,
    args: &[String],
    dir: &Path,
    timeout: Duration,
) -> Finished {
    let mut cmd = Command::new(program);
    cmd.args(args).env("LC_ALL", "C");
    let mut t = Tool::spawn(name, &mut cmd, dir);
    t.finish(timeout).await
}

/// Sends SIGKILL to one process (one we started, by its id).
pub fn sigkill(pid: u32) {
    let status = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -KILL {pid} failed");
}

/// The peak resident memory (VmHWM) of process `pid` in KiB.
pub fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// SHA-256 of a file (hex) and its length, read in pieces.
pub fn file_sha(path: &Path) -> (String, u64) {
    use std::io::Read;
    let mut f = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf).expect("read file");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
    (hex(&h.finalize()), len)
}

/// Writes the first `len` bytes of the deterministic content (see [`expected_sha`])
/// to `path`.
pub async fn write_pattern_file(path: &Path, len: u64) {
    let mut f = std::io::BufWriter::new(File::create(path).expect("create pattern file"));
    let mut body = PatternBody::new(len, MAX_CHUNK, true);
    while let Some(frame) = body.frame().await {
        let data = frame.expect("pattern").into_data().expect("data");
        f.write_all(&data).expect("write pattern file");
    }
    f.flush().expect("flush pattern file");
}

// ---------------------------------------------------------------------------------
// Base64, PNG: just enough for the tests.

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A valid `w`×`h` RGB PNG (a colour gradient), zlib with stored blocks.
pub fn png(w: u32, h: u32) -> Vec<u8> {
    let mut raw = Vec::new();
    for y in 0..h {
        raw.push(0u8); // filter: none
        for x in 0..w {
            raw.extend_from_slice(&[(x * 255 / w) as u8, (y * 255 / h) as u8, 0x80]);
        }
    }
    let mut z = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (i, block) in blocks.iter().enumerate() {
        z.push(u8::from(i + 1 == blocks.len()));
        let n = block.len() as u16;
        z.extend_from_slice(&n.to_le_bytes());
        z.extend_from_slice(&(!n).to_le_bytes());
        z.extend_from_slice(block);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in &raw {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    z.extend_from_slice(&((b << 16) | a).to_be_bytes());
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut c = kind.to_vec();
        c.extend_from_slice(data);
        out.extend_from_slice(&c);
        out.extend_from_slice(&crc32(&c).to_be_bytes());
    };
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &z);
    chunk(b"IEND", &[]);
    out
}

// ---------------------------------------------------------------------------------
// A test certificate authority.

/// A CA made for one test run, and a server certificate it signed for `localhost` and
/// 127.0.0.1.
pub struct TestCa {
    /// The CA certificate (PEM), for `curl --cacert` and `requests` `verify=`.
    pub ca_pem: PathBuf,
    /// The server's TLS configuration (HTTP/1.1).
    pub server: Arc<rustls::ServerConfig>,
    /// base64(SHA-256(server SubjectPublicKeyInfo)), for Chromium's
    /// `--ignore-certificate-errors-spki-list`.
    pub spki_sha256: String,
}

impl TestCa {
    /// Creates the CA and the server certificate; writes the CA to `dir/ca.pem`.
    pub fn new(dir: &Path) -> TestCa {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
            KeyUsagePurpose,
        };
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.distinguished_name
            .push(DnType::CommonName, "crowds test CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).expect("self-sign CA");
        let key = KeyPair::generate().expect("server key");
        let mut leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".into()])
            .expect("server params");
        leaf.distinguished_name
            .push(DnType::CommonName, "localhost");
        leaf.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_cert = leaf
            .signed_by(&key, &ca_cert, &ca_key)
            .expect("sign server certificate");
        let ca_pem = dir.join("ca.pem");
        fs::write(&ca_pem, ca_cert.pem()).expect("write ca.pem");
        let chain = vec![leaf_cert.der().clone(), ca_cert.der().clone()];
        let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(
            rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()),
        );
        let mut server = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .expect("server TLS config");
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        TestCa {
            ca_pem,
            server: Arc::new(server),
            spki_sha256: base64(&Sha256::digest(key.public_key_der())),
        }
    }
}

/// A counter of `/status.json` (`requests.NAME`) of a jondo.
pub async fn counter(control: SocketAddr, name: &str) -> u64 {
    let s = status_of(control).await.expect("status.json");
    s["requests"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no requests.{name} in {s}"))
}

/// The requests counters (`relayed`, `submitted`) of every jondo.
pub async fn path_counters(crowd: &Crowd) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for j in &crowd.jondos {
        out.push((
            counter(j.control, "relayed").await,
            counter(j.control, "submitted").await,
        ));
    }
    out
}

/// What one request from jondo `initiator` showed of its (static) path.
#[derive(Debug, Clone)]
pub struct PathProbe {
    /// The initiator's index.
    pub initiator: usize,
    /// The exit's IP as the origin saw it.
    pub exit: IpAddr,
    /// Indices of the jondos other than the initiator that relayed the request.
    pub relays: Vec<usize>,
}

impl PathProbe {
    /// Distinct jondos on the path (initiator, relays and exit).
    pub fn distinct_jondos(&self, crowd: &Crowd) -> usize {
        let mut set: std::collections::BTreeSet<usize> = self.relays.iter().copied().collect();
        set.insert(self.initiator);
        if let Some(e) = crowd.member_ips().iter().position(|ip| *ip == self.exit) {
            set.insert(e);
        }
        set.len()
    }
}

/// Sends one `/whoami` through each jondo in turn (one at a time, so the counters tell
/// whose path is whose) and reports each initiator's path: its exit and relays.
pub async fn probe_paths(crowd: &Crowd, origin: &WebOrigin) -> Vec<PathProbe> {
    let mut out = Vec::new();
    for (i, j) in crowd.jondos.iter().enumerate() {
        let before = path_counters(crowd).await;
        let mut client = HttpClient::connect(j.proxy).await.expect("connect proxy");
        let (status, text) = client
            .get_text(&origin.url(&format!("/whoami?probe={i}")))
            .await;
        assert_eq!(status, StatusCode::OK, "probe through jondo{i}: {text}");
        let exit: IpAddr = text.trim().parse().expect("an IP");
        drop(client);
        let after = path_counters(crowd).await;
        let relays = (0..crowd.jondos.len())
            .filter(|k| *k != i && after[*k].0 > before[*k].0)
            .collect();
        out.push(PathProbe {
            initiator: i,
            exit,
            relays,
        });
    }
    out
}

/// Panics unless `ip` is one of the crowd's jondos' peer addresses.
pub fn assert_member(crowd: &Crowd, ip: IpAddr, what: &str) {
    assert!(
        crowd.member_ips().contains(&ip),
        "{what} reached the origin from {ip}, not from a crowd member ({:?})",
        crowd.member_ips()
    );
}

/// `curl` arguments common to every call: quiet but with errors, no config file,
/// bounded in time ([`Tool`] removes proxy variables from the environment).
pub fn curl_base(max_time_s: u64) -> Vec<String> {
    [
        "-q",
        "--silent",
        "--show-error",
        "--max-time",
        &max_time_s.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Owned strings from string slices.
pub fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Probes every initiator's path and returns the one with the most distinct jondos,
/// adding members (which re-forms every path) until one has at least `min_distinct`
/// (at most `max_additions` times).
pub async fn long_path(
    crowd: &mut Crowd,
    origin: &WebOrigin,
    min_distinct: usize,
    max_additions: usize,
) -> PathProbe {
    let mut tried = Vec::new();
    for attempt in 0..=max_additions {
        if attempt > 0 {
            crowd.add_jondo(true, &[]).await;
        }
        let probes = probe_paths(crowd, origin).await;
        let best = probes
            .iter()
            .max_by_key(|p| (p.distinct_jondos(crowd), p.relays.len()))
            .expect("a jondo")
            .clone();
        if best.distinct_jondos(crowd) >= min_distinct {
            return best;
        }
        tried.push(probes);
    }
    panic!(
        "no initiator's path had {min_distinct} distinct jondos after {max_additions} re-formations: {tried:?}"
    );
}
