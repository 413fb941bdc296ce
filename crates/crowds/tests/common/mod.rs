//! Shared harness of the integration tests: the `crowds` binary as child processes
//! (killed on drop), whole crowds of jondo processes, a recording origin server, a
//! small HTTP/1.1 client for the jondos' proxy ports, and bounded polling.
//!
//! Everything listens and connects on 127.0.0.0/8 only. No test sleeps to synchronise:
//! waits poll a condition with short pauses and fail with a clear message at a deadline.

#![allow(dead_code)]

pub mod fake_blender;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::{header, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use std::convert::Infallible;
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_crowds");

/// Pause between two looks at a polled condition.
pub const POLL: Duration = Duration::from_millis(50);

/// Time a crowd has to form (every jondo admitted, every document listing all).
pub const FORM_TIMEOUT: Duration = Duration::from_secs(60);

/// Time allowed for one proxied request to produce its response head.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The peer address of jondo `i` (0-based) of a crowd: 127.0.0.(11 + i).
pub fn jondo_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 11 + u8::try_from(i).expect("small crowd"))
}

/// A port that was free on `ip` a moment ago. It is picked below the kernel's
/// ephemeral range (32768 and up), which outgoing connections of busy tests use all the
/// time, so another socket is unlikely to take it before the process under test binds.
pub fn free_port(ip: Ipv4Addr) -> u16 {
    use std::sync::atomic::AtomicU16;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = 12_000 + (std::process::id() % 1000) as u16 * 20;
    for _ in 0..20_000 {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % 20_000;
        let port = 12_000 + (start - 12_000 + offset) % 20_000;
        if std::net::TcpListener::bind((ip, port)).is_ok() {
            return port;
        }
    }
    let l = std::net::TcpListener::bind((ip, 0)).expect("bind a probe listener");
    l.local_addr().expect("probe address").port()
}

/// A free address on 127.0.0.1.
pub fn free_local_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port(Ipv4Addr::LOCALHOST)))
}

/// Polls `check` every [`POLL`] until it returns `Ok`, for at most `timeout`; panics
/// naming `what` and the last reason otherwise.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(v) => return v,
            Err(e) => e,
        };
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; last state: {last}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Writes `text` to `path` with `mode`.
pub fn write_file_mode(path: &Path, text: &str, mode: u32) {
    let _ = fs::remove_file(path);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .expect("create file");
    f.write_all(text.as_bytes()).expect("write file");
    // The umask may have narrowed the mode: set it exactly.
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Runs `crowds account add --data-dir DIR NAME` with `password` on standard input.
pub fn account_add(data_dir: &Path, name: &str, password: &str) {
    account_add_with(data_dir, name, password, &[]);
}

/// Runs `crowds account add --data-dir DIR EXTRA… NAME` with `password` on standard input.
pub fn account_add_with(data_dir: &Path, name: &str, password: &str, extra: &[&str]) {
    let mut child = Command::new(BIN)
        .args(["account", "add", "--data-dir"])
        .arg(data_dir)
        .args(extra)
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
    let out = child.wait_with_output().expect("account add output");
    assert!(
        out.status.success(),
        "crowds account add {name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs the binary to completion (bounded) and returns status, stdout, stderr.
pub async fn run_to_end(args: &[&str], timeout: Duration) -> (ExitStatus, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    let mut p = Proc::spawn("crowds", &mut cmd, dir.path());
    let status = p.wait_exit(timeout).await;
    (status, p.stdout(), p.stderr())
}

/// A child process of the binary, killed (and reaped) on drop. Its standard output
/// and error go to files so they can be read at any time.
pub struct Proc {
    /// A name for messages.
    pub name: String,
    child: Option<Child>,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
}

impl Proc {
    /// Spawns `cmd` with output captured in files under `log_dir`.
    pub fn spawn(name: &str, cmd: &mut Command, log_dir: &Path) -> Proc {
        fs::create_dir_all(log_dir).expect("log dir");
        let stdout_path = log_dir.join(format!("{name}.stdout"));
        let stderr_path = log_dir.join(format!("{name}.stderr"));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(File::create(&stdout_path).expect("stdout file"))
            .stderr(File::create(&stderr_path).expect("stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {name}: {e}"));
        Proc {
            name: name.to_string(),
            child: Some(child),
            stdout_path,
            stderr_path,
        }
    }

    /// What the process wrote to standard error so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// What the process wrote to standard output so far.
    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// The process id (while it runs).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Resident memory of the process in KiB (Linux), if known.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// The exit status if the process has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("try_wait"))
    }

    /// Panics (with its standard error) if the process has ended.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.exited() {
            panic!(
                "{} exited unexpectedly ({status}); stderr:\n{}",
                self.name,
                self.stderr()
            );
        }
    }

    /// Waits (bounded) for the process to end by itself.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let name = self.name.clone();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not exit within {timeout:?}; stderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Sends SIGTERM (a polite request to stop) to the process.
    pub fn terminate(&self) {
        let pid = self.pid().expect("a running process");
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -TERM {pid}"))
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid} failed");
    }

    /// Kills and reaps the process (idempotent).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The last lines of standard error, for failure reports.
    pub fn stderr_tail(&self, lines: usize) -> String {
        let text = self.stderr();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() && self.child.is_some() {
            eprintln!(
                "---- last stderr lines of {} ----\n{}",
                self.name,
                self.stderr_tail(40)
            );
        }
        self.kill();
    }
}

/// One jondo process of a [`Crowd`].
pub struct Jondo {
    /// Account name at the blender.
    pub account: String,
    /// Its data directory (holds `identity.key`).
    pub data_dir: PathBuf,
    /// Its peer address (127.0.0.(11 + i)).
    pub peer: SocketAddr,
    /// Its HTTP proxy.
    pub proxy: SocketAddr,
    /// Its SOCKS port.
    pub socks: SocketAddr,
    /// Its status port.
    pub control: SocketAddr,
    /// The process.
    pub proc: Proc,
}

impl Jondo {
    /// The jondo's identity key, read from its data directory.
    pub fn identity(&self) -> crowds_proto::identity::SecretKey {
        crowds_net::files::load_or_create_identity(&self.data_dir).expect("jondo identity")
    }

    /// `GET /status.json` of this jondo.
    pub async fn status(&self) -> Result<serde_json::Value, String> {
        status_of(self.control).await
    }
}

/// Options of a jondo process.
pub struct JondoSpec<'a> {
    /// Process name for messages and log files.
    pub name: &'a str,
    /// Data directory.
    pub data_dir: &'a Path,
    /// The blender's address.
    pub blender: SocketAddr,
    /// The blender's public key file.
    pub blender_key: &'a Path,
    /// Account name.
    pub account: &'a str,
    /// Password file.
    pub password_file: &'a Path,
    /// Peer address.
    pub peer: SocketAddr,
    /// Proxy address.
    pub proxy: SocketAddr,
    /// SOCKS address.
    pub socks: SocketAddr,
    /// Control address.
    pub control: SocketAddr,
    /// Whether to pass `--allow-private-destinations`.
    pub allow_private: bool,
    /// Extra arguments.
    pub extra: &'a [&'a str],
    /// Where stdout/stderr files go.
    pub log_dir: &'a Path,
}

/// Spawns `crowds jondo` with the given options.
pub fn spawn_jondo(spec: &JondoSpec<'_>) -> Proc {
    let mut cmd = Command::new(BIN);
    cmd.arg("jondo")
        .arg("--data-dir")
        .arg(spec.data_dir)
        .arg("--blender")
        .arg(spec.blender.to_string())
        .arg("--blender-key")
        .arg(spec.blender_key)
        .arg("--account")
        .arg(spec.account)
        .arg("--password-file")
        .arg(spec.password_file)
        .arg("--peer-listen")
        .arg(spec.peer.to_string())
        .arg("--proxy-listen")
        .arg(spec.proxy.to_string())
        .arg("--socks-listen")
        .arg(spec.socks.to_string())
        .arg("--control-listen")
        .arg(spec.control.to_string())
        .args(spec.extra);
    if spec.allow_private {
        cmd.arg("--allow-private-destinations");
    }
    Proc::spawn(spec.name, &mut cmd, spec.log_dir)
}

/// A blender process and its jondo processes, all killed on drop.
pub struct Crowd {
    /// The jondos, in order (jondo i on 127.0.0.(11 + i)).
    pub jondos: Vec<Jondo>,
    /// The blender process.
    pub blender: Proc,
    /// The blender's API address.
    pub blender_addr: SocketAddr,
    /// The blender's data directory.
    pub blender_dir: PathBuf,
    /// `blender.pub`.
    pub blender_pub: PathBuf,
    /// Holds every data directory and log file (removed last).
    pub dir: tempfile::TempDir,
}

impl Drop for Crowd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for p in self.jondos.iter().map(|j| &j.proc).chain([&self.blender]) {
                eprintln!(
                    "---- last stderr lines of {} ----\n{}",
                    p.name,
                    p.stderr_tail(20)
                );
            }
        }
        for j in &mut self.jondos {
            j.proc.kill();
        }
        self.blender.kill();
    }
}

/// Starts a blender process (`--join-interval 1s` and `extra`, e.g. `--pf 0.75`) on a
/// free port of 127.0.0.1 and waits until it has written `blender.pub` and accepts
/// connections.
pub async fn start_blender(
    data_dir: &Path,
    log_dir: &Path,
    extra: &[&str],
) -> (Proc, SocketAddr, PathBuf) {
    let addr = free_local_addr();
    let (p, pub_path) = start_blender_at("blender", addr, data_dir, log_dir, extra).await;
    (p, addr, pub_path)
}

/// Like [`start_blender`], on `addr`, with `name` for its log files.
pub async fn start_blender_at(
    name: &str,
    addr: SocketAddr,
    data_dir: &Path,
    log_dir: &Path,
    extra: &[&str],
) -> (Proc, PathBuf) {
    let mut cmd = Command::new(BIN);
    cmd.arg("blender")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--listen")
        .arg(addr.to_string())
        .args(["--join-interval", "1s"])
        .args(extra);
    let mut blender = Proc::spawn(name, &mut cmd, log_dir);
    let pub_path = data_dir.join("blender.pub");
    eventually(
        "the blender to write blender.pub and listen",
        Duration::from_secs(30),
        || {
            let ready = pub_path.exists();
            let exited = blender.exited();
            let stderr = blender.stderr();
            async move {
                if let Some(s) = exited {
                    panic!("the blender exited ({s}); stderr:\n{stderr}");
                }
                if !ready {
                    return Err("no blender.pub yet".to_string());
                }
                tokio::net::TcpStream::connect(addr)
                    .await
                    .map(drop)
                    .map_err(|e| format!("connect: {e}"))
            }
        },
    )
    .await;
    (blender, pub_path)
}

impl Crowd {
    /// Starts a blender and `n` jondo processes (with `--allow-private-destinations`)
    /// and waits until every jondo reports `members == n` and `admitted == true`.
    pub async fn start(n: usize) -> Crowd {
        Self::start_with(n, &[]).await
    }

    /// Like [`Crowd::start`], with more blender flags (`--pf 0.75` comes first).
    pub async fn start_with(n: usize, blender_extra: &[&str]) -> Crowd {
        let dir = tempfile::Builder::new()
            .prefix("crowds-it-")
            .tempdir()
            .expect("tempdir");
        let blender_dir = dir.path().join("blender");
        let logs = dir.path().join("logs");
        let mut passwords = Vec::new();
        for i in 0..n {
            let pw = format!("password of jondo {i} ({})", std::process::id());
            account_add(&blender_dir, &format!("jondo{i}"), &pw);
            passwords.push(pw);
        }
        let (blender, blender_addr, blender_pub) = start_blender(
            &blender_dir,
            &logs,
            &[&["--pf", "0.75"], blender_extra].concat(),
        )
        .await;
        let mut jondos = Vec::new();
        for (i, pw) in passwords.iter().enumerate() {
            let ip = jondo_ip(i);
            let data_dir = dir.path().join(format!("jondo{i}"));
            let pw_file = dir.path().join(format!("jondo{i}.password"));
            write_file_mode(&pw_file, &format!("{pw}\n"), 0o600);
            let account = format!("jondo{i}");
            let peer = SocketAddr::new(IpAddr::V4(ip), free_port(ip));
            let (proxy, socks, control) = (free_local_addr(), free_local_addr(), free_local_addr());
            let proc = spawn_jondo(&JondoSpec {
                name: &account,
                data_dir: &data_dir,
                blender: blender_addr,
                blender_key: &blender_pub,
                account: &account,
                password_file: &pw_file,
                peer,
                proxy,
                socks,
                control,
                allow_private: true,
                // The default is one thread; the last jondo runs on two, so crowds
                // mixing both runtimes are tested too.
                extra: if i + 1 == n { &["--threads", "2"] } else { &[] },
                log_dir: &logs,
            });
            jondos.push(Jondo {
                account,
                data_dir,
                peer,
                proxy,
                socks,
                control,
                proc,
            });
        }
        let mut crowd = Crowd {
            jondos,
            blender,
            blender_addr,
            blender_dir,
            blender_pub,
            dir,
        };
        crowd.wait_formed(n).await;
        crowd
    }

    /// Waits until every jondo's status shows `members == n` and `admitted`.
    pub async fn wait_formed(&mut self, n: usize) {
        let controls: Vec<SocketAddr> = self.jondos.iter().map(|j| j.control).collect();
        let deadline = Instant::now() + FORM_TIMEOUT;
        loop {
            self.blender.assert_running();
            for j in &mut self.jondos {
                j.proc.assert_running();
            }
            let mut waiting = Vec::new();
            for (i, c) in controls.iter().enumerate() {
                match status_of(*c).await {
                    Ok(s) if s["members"] == n && s["admitted"] == true => {}
                    Ok(s) => waiting.push(format!(
                        "jondo{i}: members {} admitted {}",
                        s["members"], s["admitted"]
                    )),
                    Err(e) => waiting.push(format!("jondo{i}: {e}")),
                }
            }
            if waiting.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the crowd of {n} did not form within {FORM_TIMEOUT:?}: {}",
                waiting.join("; ")
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The status of every jondo, in order.
    pub async fn statuses(&self) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        for j in &self.jondos {
            out.push(j.status().await.expect("status.json"));
        }
        out
    }

    /// The peer IPs of the crowd's jondos.
    pub fn member_ips(&self) -> Vec<IpAddr> {
        self.jondos.iter().map(|j| j.peer.ip()).collect()
    }
}

/// `GET /status.json` at `control`, parsed.
pub async fn status_of(control: SocketAddr) -> Result<serde_json::Value, String> {
    let (status, body) = direct_get(control, "/status.json").await?;
    if status != StatusCode::OK {
        return Err(format!("status.json answered {status}"));
    }
    serde_json::from_slice(&body).map_err(|e| format!("status.json is not JSON: {e}"))
}

/// A plain `GET path` to `addr` (origin form), bounded in time.
pub async fn direct_get(addr: SocketAddr, path: &str) -> Result<(StatusCode, Bytes), String> {
    let run = async {
        let mut client = HttpClient::connect(addr).await?;
        let req = Request::get(path)
            .header(header::HOST, addr.to_string())
            .body(empty_body())
            .map_err(|e| e.to_string())?;
        let resp = client.send(req).await?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .map_err(|_| format!("GET {path} at {addr} timed out"))?
}

/// The request body type of [`HttpClient`].
pub type ReqBody = BoxBody<Bytes, std::io::Error>;

/// An empty request body.
pub fn empty_body() -> ReqBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A request body holding `bytes`.
pub fn full_body(bytes: impl Into<Bytes>) -> ReqBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// One HTTP/1.1 client connection (to a jondo's proxy, or any server).
pub struct HttpClient {
    sender: hyper::client::conn::http1::SendRequest<ReqBody>,
    conn: tokio::task::JoinHandle<()>,
}

impl Drop for HttpClient {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

impl HttpClient {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> Result<HttpClient, String> {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| format!("handshake {addr}: {e}"))?;
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(HttpClient { sender, conn })
    }

    /// Sends a request on this connection; the response head must come within
    /// [`REQUEST_TIMEOUT`].
    pub async fn send(&mut self, req: Request<ReqBody>) -> Result<Response<Incoming>, String> {
        let run = async {
            self.sender.ready().await.map_err(|e| e.to_string())?;
            self.sender
                .send_request(req)
                .await
                .map_err(|e| e.to_string())
        };
        tokio::time::timeout(REQUEST_TIMEOUT, run)
            .await
            .map_err(|_| "no response in time".to_string())?
    }

    /// `GET url` (absolute form, as to a proxy) with extra headers; status, headers
    /// and the whole body.
    pub async fn get(
        &mut self,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<(StatusCode, hyper::HeaderMap, Bytes), String> {
        let uri: hyper::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
        let mut req = Request::get(uri.clone());
        if let Some(a) = uri.authority() {
            req = req.header(header::HOST, a.as_str());
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(empty_body()).map_err(|e| e.to_string())?;
        let resp = self.send(req).await?;
        let (parts, body) = resp.into_parts();
        let body = tokio::time::timeout(REQUEST_TIMEOUT, body.collect())
            .await
            .map_err(|_| "body timed out".to_string())?
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((parts.status, parts.headers, body))
    }

    /// `GET url` whose body must be text; panics on transport errors.
    pub async fn get_text(&mut self, url: &str) -> (StatusCode, String) {
        let (status, _, body) = self
            .get(url, &[])
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

/// Hashes a response body frame by frame (never holding it whole): SHA-256 and length.
pub async fn hash_body(mut body: Incoming, timeout: Duration) -> Result<(String, u64), String> {
    let run = async {
        let mut hasher = Sha256::new();
        let mut len = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("body error after {len} bytes: {e}"))?;
            if let Ok(data) = frame.into_data() {
                hasher.update(&data);
                len += data.len() as u64;
            }
        }
        Ok((hex(&hasher.finalize()), len))
    };
    tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| format!("body not complete within {timeout:?}"))?
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------
// Deterministic content.

/// The content repeats with this (prime) period, so chunk boundaries never line up.
const PERIOD: usize = 65_521;
/// Largest chunk a [`PatternBody`] yields.
pub const MAX_CHUNK: usize = 64 * 1024;

fn pattern() -> &'static [u8] {
    static P: OnceLock<Vec<u8>> = OnceLock::new();
    P.get_or_init(|| {
        (0..PERIOD + MAX_CHUNK)
            .map(|i| {
                let i = (i % PERIOD) as u64;
                (i.wrapping_mul(2_654_435_761) >> 11) as u8 ^ (i as u8)
            })
            .collect()
    })
}

fn pattern_slice(offset: u64, n: usize) -> &'static [u8] {
    let start = (offset % PERIOD as u64) as usize;
    &pattern()[start..start + n]
}

/// SHA-256 (hex) of the first `len` bytes of the deterministic content.
pub fn expected_sha(len: u64) -> String {
    let mut hasher = Sha256::new();
    let mut offset = 0u64;
    while offset < len {
        let n = (len - offset).min(MAX_CHUNK as u64) as usize;
        hasher.update(pattern_slice(offset, n));
        offset += n as u64;
    }
    hex(&hasher.finalize())
}

/// A streaming body of the first `len` bytes of the deterministic content, in chunks
/// of `chunk` bytes; with `exact` it announces its length (Content-Length), without
/// it the length is unknown (chunked transfer encoding).
pub struct PatternBody {
    offset: u64,
    len: u64,
    chunk: usize,
    exact: bool,
    fail_at: Option<u64>,
    produced: Option<Arc<AtomicU64>>,
}

impl PatternBody {
    /// See the type's documentation.
    pub fn new(len: u64, chunk: usize, exact: bool) -> Self {
        assert!(chunk > 0 && chunk <= MAX_CHUNK);
        Self {
            offset: 0,
            len,
            chunk,
            exact,
            fail_at: None,
            produced: None,
        }
    }

    /// Fails with an I/O error once `at` bytes were produced (a server or client that
    /// dies mid-body).
    pub fn failing_at(mut self, at: u64) -> Self {
        self.fail_at = Some(at);
        self
    }

    /// Counts the bytes produced in `counter`.
    pub fn counting(mut self, counter: Arc<AtomicU64>) -> Self {
        self.produced = Some(counter);
        self
    }
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.fail_at.is_some_and(|at| self.offset >= at) {
            return Poll::Ready(Some(Err(std::io::Error::other("the body dies here"))));
        }
        if self.offset >= self.len {
            return Poll::Ready(None);
        }
        let mut n = (self.len - self.offset).min(self.chunk as u64);
        if let Some(at) = self.fail_at {
            n = n.min(at - self.offset);
        }
        let n = n as usize;
        let data = Bytes::copy_from_slice(pattern_slice(self.offset, n));
        self.offset += n as u64;
        if let Some(c) = &self.produced {
            c.fetch_add(n as u64, Ordering::SeqCst);
        }
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.exact && self.offset >= self.len
    }

    fn size_hint(&self) -> SizeHint {
        if self.exact {
            SizeHint::with_exact(self.len - self.offset)
        } else {
            SizeHint::default()
        }
    }
}

// ---------------------------------------------------------------------------------
// The origin server.

/// A request as the origin server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The client address the server saw.
    pub ip: IpAddr,
    /// The method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Every header (lower-case names), in order.
    pub headers: Vec<(String, String)>,
}

impl Seen {
    /// The values of header `name`.
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// How an `/echo-sha` upload ended: hash and length, or the error that cut it.
pub type EchoOutcome = Result<(String, u64), String>;

/// What the origin server remembers.
#[derive(Default)]
struct OriginState {
    /// Every request, in order of arrival.
    log: Mutex<Vec<Seen>>,
    /// For each `/echo-sha` request (path and query): the body's hash and length, or
    /// the error that ended it.
    echoes: Mutex<Vec<(String, EchoOutcome)>>,
    /// Bytes produced so far for `/slow-blob/N` responses.
    slow_produced: Arc<AtomicU64>,
}

/// A recording origin server on 127.0.0.1:
/// - `GET /blob/N`: N deterministic bytes, streamed in chunks, with Content-Length;
/// - `GET /chunked/N`: the same bytes with chunked transfer encoding;
/// - `GET /slow-blob/N`: like `/blob/N`, counting the bytes produced (backpressure);
/// - `GET /truncated/N`, `/truncated-chunked/N`: announce N bytes (or chunked), send
///   half, then fail (a server dying mid-body);
/// - `POST /echo-sha`: reads the body streaming, answers `HEX_SHA256 LENGTH`;
/// - `GET /whoami`: the client IP as text;
/// - `GET /spoof`: a 200 response carrying crowd-control and hop-by-hop headers;
/// - `GET /not-modified`: 304 with an ETag; `GET /no-content`: 204;
/// - `POST /hold`: never reads the body and never answers;
/// - anything else: `ok`.
pub struct Origin {
    /// Its address.
    pub addr: SocketAddr,
    state: Arc<OriginState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type RespBody = BoxBody<Bytes, std::io::Error>;

fn text_response(status: StatusCode, text: String) -> Response<RespBody> {
    let mut resp = Response::new(full_body(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    resp
}

fn sized(body: PatternBody, n: u64) -> Response<RespBody> {
    let mut resp = Response::new(body.boxed());
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, hyper::header::HeaderValue::from(n));
    resp
}

async fn origin_handle(
    state: Arc<OriginState>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<RespBody> {
    let full_path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let seen = Seen {
        ip: peer.ip(),
        method: req.method().to_string(),
        path: full_path.clone(),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
    };
    state
        .log
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(seen);
    let path = req.uri().path().to_string();
    let size = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|n| n.parse::<u64>().ok())
    };
    if let Some(n) = size("/blob/") {
        return sized(PatternBody::new(n, 48 * 1024 + 13, true), n);
    }
    if let Some(n) = size("/slow-blob/") {
        let body = PatternBody::new(n, 16 * 1024, true).counting(state.slow_produced.clone());
        return sized(body, n);
    }
    if let Some(n) = size("/chunked/") {
        return Response::new(PatternBody::new(n, 32 * 1024 + 7, false).boxed());
    }
    if let Some(n) = size("/truncated/") {
        return sized(PatternBody::new(n, 16 * 1024, true).failing_at(n / 2), n);
    }
    if let Some(n) = size("/truncated-chunked/") {
        let body = PatternBody::new(n, 16 * 1024, false).failing_at(n / 2);
        return Response::new(body.boxed());
    }
    match path.as_str() {
        "/whoami" => text_response(StatusCode::OK, format!("{}\n", peer.ip())),
        "/hold" => {
            // Never read the body, never answer (a stalled server).
            let _req = req;
            std::future::pending::<()>().await;
            text_response(StatusCode::OK, String::new())
        }
        "/echo-sha" => {
            let mut body = req.into_body();
            let mut hasher = Sha256::new();
            let mut len = 0u64;
            let mut outcome = None;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => {
                        if let Ok(data) = f.into_data() {
                            hasher.update(&data);
                            len += data.len() as u64;
                        }
                    }
                    Err(e) => {
                        outcome = Some(Err(format!("body error after {len} bytes: {e}")));
                        break;
                    }
                }
            }
            let outcome = outcome.unwrap_or_else(|| Ok((hex(&hasher.finalize()), len)));
            state
                .echoes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((full_path, outcome.clone()));
            match outcome {
                Ok((sha, len)) => text_response(StatusCode::OK, format!("{sha} {len}")),
                Err(e) => text_response(StatusCode::BAD_REQUEST, e),
            }
        }
        "/spoof" => {
            let mut resp = text_response(StatusCode::OK, "genuine origin page".into());
            let h = resp.headers_mut();
            h.insert("crowds-error", "path-broken".parse().expect("value"));
            h.insert("connection", "x-hop".parse().expect("value"));
            h.insert("x-hop", "1".parse().expect("value"));
            h.insert("x-kept", "yes".parse().expect("value"));
            h.insert(
                "set-cookie",
                "tracker=secret; Path=/".parse().expect("value"),
            );
            resp
        }
        "/not-modified" => {
            let mut resp = Response::new(empty_body());
            *resp.status_mut() = StatusCode::NOT_MODIFIED;
            resp.headers_mut()
                .insert(header::ETAG, "\"v1\"".parse().expect("value"));
            resp
        }
        "/no-content" => {
            let mut resp = Response::new(empty_body());
            *resp.status_mut() = StatusCode::NO_CONTENT;
            resp
        }
        _ => text_response(StatusCode::OK, "ok\n".into()),
    }
}

impl Origin {
    /// Starts an origin server on a free port of 127.0.0.1.
    pub async fn start() -> Origin {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind origin");
        let addr = listener.local_addr().expect("origin address");
        let state: Arc<OriginState> = Arc::default();
        let st = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                let st = st.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, Infallible>(origin_handle(st, peer, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Origin { addr, state, task }
    }

    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The requests seen for exactly this path (and query).
    pub fn seen_path(&self, path: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.path == path).collect()
    }

    /// How each `/echo-sha` request with this path and query ended, in order.
    pub fn echoes(&self, path: &str) -> Vec<EchoOutcome> {
        self.state
            .echoes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// Bytes of `/slow-blob/N` bodies produced so far.
    pub fn slow_produced(&self) -> u64 {
        self.state.slow_produced.load(Ordering::SeqCst)
    }
}

/// Starts `POST /echo-sha?ID` through `proxy` with `parts` pieces of 32 KiB of a body
/// that is announced longer (chunked, or a 10 MB Content-Length), and returns the open
/// connection once the origin is receiving it: the caller then cuts or corrupts it.
pub async fn start_partial_upload(
    proxy: SocketAddr,
    origin: &Origin,
    id: &str,
    chunked: bool,
    parts: usize,
) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let o = origin.addr;
    let framing = if chunked {
        "Transfer-Encoding: chunked"
    } else {
        "Content-Length: 10000000"
    };
    let mut tcp = tokio::net::TcpStream::connect(proxy)
        .await
        .expect("connect proxy");
    let head = format!("POST http://{o}/echo-sha?{id} HTTP/1.1\r\nHost: {o}\r\n{framing}\r\n\r\n");
    tcp.write_all(head.as_bytes()).await.expect("head");
    let part = vec![7u8; 32 * 1024];
    for _ in 0..parts {
        if chunked {
            tcp.write_all(format!("{:x}\r\n", part.len()).as_bytes())
                .await
                .expect("chunk size");
            tcp.write_all(&part).await.expect("chunk");
            tcp.write_all(b"\r\n").await.expect("chunk end");
        } else {
            tcp.write_all(&part).await.expect("part");
        }
    }
    let path = format!("/echo-sha?{id}");
    eventually(
        &format!("the origin to receive {path}"),
        Duration::from_secs(30),
        || {
            let n = origin.seen_path(&path).len();
            async move {
                if n > 0 {
                    Ok(())
                } else {
                    Err("not yet".to_string())
                }
            }
        },
    )
    .await;
    tcp
}

/// Waits until the origin has seen the upload `ID` of [`start_partial_upload`] end, and
/// asserts that it did not arrive as a complete body.
pub async fn assert_upload_cut(origin: &Origin, id: &str) {
    let path = format!("/echo-sha?{id}");
    let outcome = eventually(
        &format!("the origin to learn that {path} ended"),
        Duration::from_secs(30),
        || {
            let e = origin.echoes(&path);
            async move {
                e.first()
                    .cloned()
                    .ok_or_else(|| "body still open".to_string())
            }
        },
    )
    .await;
    assert!(
        outcome.is_err(),
        "{path}: a cut upload reached the server as complete: {outcome:?}"
    );
}

/// Waits until `/status.json` of every jondo in `controls` has `key == want`.
pub async fn wait_every_status(
    what: &str,
    controls: &[SocketAddr],
    key: &str,
    want: serde_json::Value,
) {
    eventually(what, Duration::from_secs(30), || {
        let (controls, want) = (controls.to_vec(), want.clone());
        async move {
            for c in controls {
                let s = status_of(c).await?;
                if s[key] != want {
                    return Err(format!("{c}: {key} {}", s[key]));
                }
            }
            Ok(())
        }
    })
    .await;
}
