//! Helpers of the crowd life-cycle suites (`tests/lifecycle.rs`, `tests/soak.rs`):
//! a crowd whose blender and jondo processes a test can kill (SIGKILL), stop
//! (SIGTERM), restart on the same data directory and address, and extend with new
//! members; transfers classified as complete, errored, corrupt or hung; and process
//! resource readings (file descriptors, RSS).
//!
//! Everything runs on 127.0.0.0/8.

use crate::*;
use hyper::{header, Request, StatusCode};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How the processes of a [`LifeCrowd`] are started.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Extra blender arguments (`--join-interval 1s` is always passed, and
    /// `--control-listen` is added by the crowd).
    pub blender: Vec<String>,
    /// Extra jondo arguments (`--allow-private-destinations` is always passed).
    pub jondo: Vec<String>,
    /// Member `i` gets the peer address 127.0.0.(`ip_base` + i).
    pub ip_base: u8,
}

impl Settings {
    /// Blender with `--pf 0.75 --heartbeat-timeout {heartbeat_timeout}` plus `blender`;
    /// jondos heartbeating every 500 ms and polling the document every 200 ms.
    pub fn new(ip_base: u8, heartbeat_timeout: &str, blender: &[&str]) -> Settings {
        let mut b: Vec<String> = ["--pf", "0.75", "--heartbeat-timeout", heartbeat_timeout]
            .iter()
            .map(|s| s.to_string())
            .collect();
        b.extend(blender.iter().map(|s| s.to_string()));
        Settings {
            blender: b,
            jondo: ["--heartbeat-interval", "500ms", "--poll-interval", "200ms"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            ip_base,
        }
    }
}

/// One member of a [`LifeCrowd`]: its account, files and addresses stay the same
/// across restarts, so a restarted process is the same member (same key, same address).
pub struct Member {
    /// Account name (also the log name).
    pub account: String,
    /// Its data directory (identity key).
    pub data_dir: PathBuf,
    /// Its password file (mode 0600).
    pub password_file: PathBuf,
    /// Peer address (127.0.0.x, distinct per member).
    pub peer: SocketAddr,
    /// HTTP proxy.
    pub proxy: SocketAddr,
    /// SOCKS port.
    pub socks: SocketAddr,
    /// Status port.
    pub control: SocketAddr,
    /// The running process, if any.
    pub proc: Option<Proc>,
    /// Processes started so far for this member.
    pub starts: u32,
}

impl Member {
    /// The peer IP (what an origin sees when this member is the exit).
    pub fn ip(&self) -> IpAddr {
        self.peer.ip()
    }

    /// `status.json` of this member.
    pub async fn status(&self) -> Result<serde_json::Value, String> {
        status_of(self.control).await
    }

    /// The running process (panics if there is none).
    pub fn proc(&mut self) -> &mut Proc {
        let name = self.account.clone();
        self.proc
            .as_mut()
            .unwrap_or_else(|| panic!("{name} has no running process"))
    }

    /// The process id, if a process runs.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().and_then(|p| p.pid())
    }
}

/// A blender and its members as processes the test controls; everything is killed on
/// drop (and the last log lines of every process are printed if the test failed).
pub struct LifeCrowd {
    /// The binary the crowd runs.
    pub kit: Kit,
    /// Holds data directories and logs (removed last).
    pub dir: tempfile::TempDir,
    /// Log files of every process.
    pub logs: PathBuf,
    /// How processes are started.
    pub settings: Settings,
    /// The blender process, if running.
    pub blender: Option<Proc>,
    /// Blender processes started so far.
    pub blender_starts: u32,
    /// The blender API address (the same across restarts).
    pub blender_addr: SocketAddr,
    /// The blender's data directory.
    pub blender_dir: PathBuf,
    /// `blender.pub`.
    pub blender_pub: PathBuf,
    /// The blender's status port (the same across restarts).
    pub blender_control: SocketAddr,
    /// Members, in order of creation.
    pub members: Vec<Member>,
}

impl Drop for LifeCrowd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for p in self.members.iter().filter_map(|m| m.proc.as_ref()) {
                eprintln!(
                    "---- last stderr lines of {} ----\n{}",
                    p.name,
                    p.stderr_tail(15)
                );
            }
            if let Some(b) = &self.blender {
                eprintln!(
                    "---- last stderr lines of {} ----\n{}",
                    b.name,
                    b.stderr_tail(30)
                );
            }
        }
        for m in &mut self.members {
            if let Some(mut p) = m.proc.take() {
                p.kill();
            }
        }
        if let Some(mut b) = self.blender.take() {
            b.kill();
        }
    }
}

impl LifeCrowd {
    /// Starts a blender and `n` members and waits until every member is admitted in a
    /// document listing all `n`.
    pub async fn start(kit: Kit, n: usize, settings: Settings) -> LifeCrowd {
        let dir = tempfile::Builder::new()
            .prefix("crowds-life-")
            .tempdir()
            .expect("tempdir");
        let logs = dir.path().join("logs");
        let blender_dir = dir.path().join("blender");
        let blender_ip = Ipv4Addr::new(127, 0, 0, settings.ip_base - 1);
        let ports = low_ports(blender_ip, 2);
        let mut crowd = LifeCrowd {
            kit,
            blender_pub: blender_dir.join("blender.pub"),
            blender_dir,
            logs,
            settings,
            blender: None,
            blender_starts: 0,
            blender_addr: SocketAddr::new(IpAddr::V4(blender_ip), ports[0]),
            blender_control: SocketAddr::new(IpAddr::V4(blender_ip), ports[1]),
            members: Vec::new(),
            dir,
        };
        crowd.create_members(n);
        crowd.start_blender().await;
        for i in 0..n {
            crowd.spawn(i);
        }
        let all: Vec<usize> = (0..n).collect();
        crowd.wait_view(&all, n, FORM_TIMEOUT).await;
        crowd
    }

    /// Creates the account, files and addresses of a new member (no process yet);
    /// returns its index.
    pub fn create_member(&mut self) -> usize {
        self.create_members(1).start
    }

    /// Creates `k` new members' accounts (in parallel: each costs an argon2 hash),
    /// files and addresses; returns their indices.
    pub fn create_members(&mut self, k: usize) -> std::ops::Range<usize> {
        let first = self.members.len();
        let names: Vec<(String, String)> = (first..first + k)
            .map(|i| {
                let account = format!("m{i}");
                let password = format!("password of {account} ({})", std::process::id());
                (account, password)
            })
            .collect();
        let (kit, dir) = (self.kit, &self.blender_dir);
        let mut rest = names.as_slice();
        if !dir.join("blender.sqlite3").exists() {
            // The first account creates the database alone.
            if let Some(((a, p), tail)) = rest.split_first() {
                kit.account_add(dir, a, p);
                rest = tail;
            }
        }
        std::thread::scope(|s| {
            for (a, p) in rest {
                s.spawn(move || kit.account_add(dir, a, p));
            }
        });
        for (account, password) in names {
            self.add_member_files(account, password);
        }
        first..first + k
    }

    fn add_member_files(&mut self, account: String, password: String) {
        let i = self.members.len();
        let password_file = self.dir.path().join(format!("{account}.password"));
        write_file_mode(&password_file, &format!("{password}\n"), 0o600);
        let ip = Ipv4Addr::new(
            127,
            0,
            0,
            self.settings
                .ip_base
                .checked_add(u8::try_from(i).expect("small crowd"))
                .expect("member IP within 127.0.0.0/24"),
        );
        // All of a member's ports on its own address, below the ephemeral range, so a
        // restart finds them free again.
        let ports = low_ports(ip, 4);
        let at = |k: usize| SocketAddr::new(IpAddr::V4(ip), ports[k]);
        self.members.push(Member {
            data_dir: self.dir.path().join(&account),
            password_file,
            peer: at(0),
            proxy: at(1),
            socks: at(2),
            control: at(3),
            account,
            proc: None,
            starts: 0,
        });
    }

    /// Starts (or restarts) member `i`'s process with the same data directory and
    /// addresses.
    pub fn spawn(&mut self, i: usize) {
        let extra: Vec<&str> = self.settings.jondo.iter().map(String::as_str).collect();
        let m = &mut self.members[i];
        assert!(m.proc.is_none(), "{} is already running", m.account);
        let name = if m.starts == 0 {
            m.account.clone()
        } else {
            format!("{}-restart{}", m.account, m.starts)
        };
        m.starts += 1;
        m.proc = Some(self.kit.spawn_jondo(&JondoSpec {
            name: &name,
            data_dir: &m.data_dir,
            blender: self.blender_addr,
            blender_key: &self.blender_pub,
            account: &m.account,
            password_file: &m.password_file,
            peer: m.peer,
            proxy: m.proxy,
            socks: m.socks,
            control: m.control,
            allow_private: true,
            extra: &extra,
            log_dir: &self.logs,
        }));
    }

    /// SIGKILLs member `i` (and reaps it).
    pub fn kill(&mut self, i: usize) {
        let mut p = self.members[i]
            .proc
            .take()
            .unwrap_or_else(|| panic!("member {i} is not running"));
        p.kill();
    }

    /// Starts the blender on the crowd's data directory, API address and status port,
    /// and waits until it listens.
    pub async fn start_blender(&mut self) {
        assert!(self.blender.is_none(), "the blender is already running");
        let name = if self.blender_starts == 0 {
            "blender".to_string()
        } else {
            format!("blender-restart{}", self.blender_starts)
        };
        self.blender_starts += 1;
        let control = self.blender_control.to_string();
        let mut extra: Vec<&str> = self.settings.blender.iter().map(String::as_str).collect();
        extra.extend(["--control-listen", control.as_str()]);
        let (p, _) = self
            .kit
            .start_blender_at(
                &name,
                self.blender_addr,
                &self.blender_dir,
                &self.logs,
                &extra,
            )
            .await;
        self.blender = Some(p);
        let control = self.blender_control;
        eventually(
            "the blender's status port",
            Duration::from_secs(20),
            || async move { status_of(control).await.map(drop) },
        )
        .await;
    }

    /// SIGKILLs the blender.
    pub fn kill_blender(&mut self) {
        self.blender
            .take()
            .expect("the blender is not running")
            .kill();
    }

    /// The blender's `status.json`.
    pub async fn blender_status(&self) -> Result<serde_json::Value, String> {
        status_of(self.blender_control).await
    }

    /// The index of the member whose peer IP is `ip`.
    pub fn member_by_ip(&self, ip: IpAddr) -> Option<usize> {
        self.members.iter().position(|m| m.ip() == ip)
    }

    /// Panics (with its log) if a member in `alive` or the blender has exited.
    pub fn assert_running(&mut self, alive: &[usize]) {
        if let Some(b) = self.blender.as_mut() {
            b.assert_running();
        }
        for &i in alive {
            self.members[i].proc().assert_running();
        }
    }

    /// Waits until every member in `alive` is admitted and sees `n` members.
    pub async fn wait_view(&mut self, alive: &[usize], n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            self.assert_running(alive);
            let mut waiting = Vec::new();
            for &i in alive {
                let m = &self.members[i];
                match m.status().await {
                    Ok(s) if s["members"] == n && s["admitted"] == true => {}
                    Ok(s) => waiting.push(format!(
                        "{}: members {} admitted {} epoch {}",
                        m.account, s["members"], s["admitted"], s["epoch"]
                    )),
                    Err(e) => waiting.push(format!("{}: {e}", m.account)),
                }
            }
            if waiting.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "members {alive:?} did not all see a crowd of {n} within {timeout:?}: {}",
                waiting.join("; ")
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until no request is in flight at any member in `alive`.
    pub async fn wait_quiet(&self, alive: &[usize]) {
        let controls: Vec<SocketAddr> = alive.iter().map(|&i| self.members[i].control).collect();
        wait_every_status(
            "no request in flight at any jondo",
            &controls,
            "in_flight",
            serde_json::json!(0),
        )
        .await;
    }

    /// The member the origin saw for the last `/whoami` through member `i`'s proxy (its
    /// path's exit), fetching one now.
    pub async fn exit_of(&self, i: usize, origin: &Origin, tag: &str) -> Result<usize, String> {
        let ip = whoami(self.members[i].proxy, origin, tag).await?;
        self.member_by_ip(ip)
            .ok_or_else(|| format!("the origin saw {ip}, which is no member"))
    }
}

/// `k` distinct ports free on `ip` a moment ago, below the kernel's ephemeral port
/// range (32768 and up): no outgoing connection's local port can take one of them
/// between this choice and a process binding it, even at a restart.
pub fn low_ports(ip: Ipv4Addr, k: usize) -> Vec<u16> {
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let offset = std::process::id()
        .wrapping_mul(7_919)
        .wrapping_add(NEXT.fetch_add(101, Ordering::SeqCst))
        % SPAN;
    let mut held = Vec::new();
    for step in 0..SPAN {
        if held.len() == k {
            break;
        }
        let port = u16::try_from(LOW + (offset + step) % SPAN).expect("port");
        if let Ok(l) = std::net::TcpListener::bind((ip, port)) {
            held.push(l);
        }
    }
    assert_eq!(held.len(), k, "not {k} free ports on {ip}");
    held.iter()
        .map(|l| l.local_addr().expect("address").port())
        .collect()
}

// ---------------------------------------------------------------------------------
// Requests.

/// `GET /whoami?{tag}` through `proxy` on a fresh connection: the IP the origin saw,
/// or why the request failed.
pub async fn whoami(proxy: SocketAddr, origin: &Origin, tag: &str) -> Result<IpAddr, String> {
    let mut c = HttpClient::connect(proxy).await?;
    let (status, _, body) = c.get(&origin.url(&format!("/whoami?{tag}")), &[]).await?;
    let text = String::from_utf8_lossy(&body);
    if status != StatusCode::OK {
        return Err(format!("{status}: {}", text.trim()));
    }
    text.trim()
        .parse()
        .map_err(|e| format!("not an IP ({e}): {text}"))
}

/// Repeats [`whoami`] through `proxy` (a fresh request each time) until one succeeds;
/// returns the exit's IP, the time taken and the failed attempts. Panics after
/// `timeout`.
pub async fn first_success(
    proxy: SocketAddr,
    origin: &Origin,
    tag: &str,
    timeout: Duration,
) -> (IpAddr, Duration, u32) {
    let started = Instant::now();
    let mut failures = 0u32;
    loop {
        match whoami(proxy, origin, &format!("{tag}-{failures}")).await {
            Ok(ip) => return (ip, started.elapsed(), failures),
            Err(e) => {
                failures += 1;
                assert!(
                    started.elapsed() < timeout,
                    "{tag}: no request through {proxy} succeeded within {timeout:?} \
                     ({failures} failures, last: {e})"
                );
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// How a checked transfer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Status 200 and every byte exactly as the origin sent it.
    Complete,
    /// The client was told: an error status, or a body that ended with an error.
    Errored(String),
    /// Reported as a success (200, body ended cleanly) but short or wrong: never allowed.
    Corrupt(String),
    /// Nothing decided within the transfer's deadline: never allowed.
    Hung(String),
}

const PERIOD: usize = 65_521;

/// The origin's deterministic content (see `PatternBody` in the shared harness),
/// `PERIOD + MAX_CHUNK` bytes, checked once against `expected_sha`.
fn pattern() -> &'static [u8] {
    static P: OnceLock<Vec<u8>> = OnceLock::new();
    P.get_or_init(|| {
        let p: Vec<u8> = (0..PERIOD + MAX_CHUNK)
            .map(|i| {
                let i = (i % PERIOD) as u64;
                (i.wrapping_mul(2_654_435_761) >> 11) as u8 ^ (i as u8)
            })
            .collect();
        let n = 3 * PERIOD + 17;
        let mut whole = Vec::with_capacity(n);
        while whole.len() < n {
            let take = (n - whole.len()).min(PERIOD);
            whole.extend_from_slice(&p[..take]);
        }
        assert_eq!(
            hex(&<sha2::Sha256 as sha2::Digest>::digest(&whole)),
            expected_sha(n as u64),
            "the life-cycle checker's copy of the origin's content is out of date"
        );
        p
    })
}

/// Compares `data`, found at `offset` of a body, with the origin's content; returns
/// the first differing offset.
pub fn check_pattern(offset: u64, data: &[u8]) -> Result<(), u64> {
    let p = pattern();
    let mut done = 0usize;
    while done < data.len() {
        let at = offset + done as u64;
        let start = (at % PERIOD as u64) as usize;
        let n = (data.len() - done).min(MAX_CHUNK);
        let want = &p[start..start + n];
        let got = &data[done..done + n];
        if want != got {
            let k = want.iter().zip(got).position(|(a, b)| a != b).unwrap_or(0);
            return Err(at + k as u64);
        }
        done += n;
    }
    Ok(())
}

/// `GET url` through `proxy` on a fresh connection, expecting `len` bytes of the
/// origin's deterministic content; everything must be decided before `deadline`.
pub async fn checked_get(proxy: SocketAddr, url: &str, len: u64, deadline: Instant) -> Outcome {
    let connect = tokio::time::timeout_at(deadline.into(), HttpClient::connect(proxy)).await;
    match connect {
        Err(_) => Outcome::Hung(format!("no connection before its deadline: {url}")),
        Ok(Err(e)) => Outcome::Errored(e),
        Ok(Ok(mut c)) => checked_get_on(&mut c, url, len, deadline).await,
    }
}

/// Like [`checked_get`], on an existing client connection (which the caller should
/// drop after anything but [`Outcome::Complete`]).
pub async fn checked_get_on(c: &mut HttpClient, url: &str, len: u64, deadline: Instant) -> Outcome {
    use http_body_util::BodyExt;
    let run = async {
        let uri: hyper::Uri = url.parse().expect("url");
        let req = Request::get(uri.clone())
            .header(header::HOST, uri.authority().expect("authority").as_str())
            .body(empty_body())
            .expect("request");
        let resp = match c.send(req).await {
            Ok(r) => r,
            Err(e) => return Outcome::Errored(format!("no response: {e}")),
        };
        let status = resp.status();
        let mut body = resp.into_body();
        if status != StatusCode::OK {
            // The crowd's error page names the error in its title.
            let mut text = Vec::new();
            while let Some(Ok(f)) = body.frame().await {
                if let Ok(d) = f.into_data() {
                    text.extend_from_slice(&d);
                }
                if text.len() > 64 * 1024 {
                    break;
                }
            }
            let text = String::from_utf8_lossy(&text);
            let title = text
                .split_once("<title>")
                .and_then(|(_, t)| t.split_once("</title>"))
                .map(|(t, _)| t)
                .unwrap_or("");
            return Outcome::Errored(format!("status {status} ({title})"));
        }
        let mut got = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = match frame {
                Ok(f) => f,
                Err(e) => return Outcome::Errored(format!("body error after {got} bytes: {e}")),
            };
            if let Ok(data) = frame.into_data() {
                if got + data.len() as u64 > len {
                    return Outcome::Corrupt(format!("more than {len} bytes"));
                }
                if let Err(at) = check_pattern(got, &data) {
                    return Outcome::Corrupt(format!("wrong byte at offset {at}"));
                }
                got += data.len() as u64;
            }
        }
        if got == len {
            Outcome::Complete
        } else {
            Outcome::Corrupt(format!("body ended cleanly after {got} of {len} bytes"))
        }
    };
    match tokio::time::timeout_at(deadline.into(), run).await {
        Ok(o) => o,
        Err(_) => Outcome::Hung(format!("undecided at its deadline: {url}")),
    }
}

// ---------------------------------------------------------------------------------
// Resources.

/// Open file descriptors of process `pid`.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}"))
        .count()
}

/// Resident memory of process `pid` in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// Median of some durations.
pub fn median(v: &[Duration]) -> Duration {
    assert!(!v.is_empty(), "median of nothing");
    let mut s = v.to_vec();
    s.sort();
    if s.len() % 2 == 1 {
        s[s.len() / 2]
    } else {
        (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2
    }
}

/// `crowds account list --data-dir DIR`: the account names.
pub async fn account_names(kit: Kit, data_dir: &Path) -> Vec<String> {
    let dir = data_dir.to_str().expect("utf-8 path");
    let (status, out, err) = kit
        .run_to_end(
            &["account", "list", "--data-dir", dir],
            Duration::from_secs(30),
        )
        .await;
    assert!(status.success(), "crowds account list failed: {err}");
    out.lines()
        .filter_map(|l| l.split('\t').nth(1))
        .map(str::to_string)
        .collect()
}
