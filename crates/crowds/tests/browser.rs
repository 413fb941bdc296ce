//! `crowds browser` (issue 16): a browser set up for the crowd, without leaks, with
//! Debian's Chromium and Firefox ESR as real processes against a real crowd of jondo
//! processes on 127.0.0.0/8.
//!
//! For each browser:
//! - `--headless --screenshot FILE URL` loads a page through the crowd (the origin sees
//!   only members, never 127.0.0.1), writes a PNG and exits; its temporary profile is
//!   gone afterwards;
//! - a probe page opens a WebRTC connection to a local STUN listener (RTCPeerConnection
//!   with that STUN server, a data channel, an offer set as local description) and
//!   carries DNS-prefetch, preconnect and prefetch hints and a link towards a decoy
//!   server. Through `crowds browser` no UDP packet reaches the STUN listener; every
//!   socket of the browser's processes (read from `/proc` while it runs) is a TCP
//!   connection to the jondo's proxy; the decoy hears from nothing but crowd members;
//!   and every request the jondo started reached the test's own servers (no
//!   telemetry, update or other background request went through the crowd either);
//! - stopping the launcher (SIGTERM) stops the browser and removes the temporary
//!   profile; with Firefox the profile is a persistent `--profile` whose saved
//!   preferences let WebRTC use loopback addresses, so only the launcher's settings
//!   stand between the page and the STUN listener;
//! - a control run: the same page in the bare browser, merely pointed at the jondo,
//!   does send STUN packets to a second listener, so this machine can show the leak.
//!
//! With `CROWDS_FULL=1` the idle browser is also watched for a minute after the page.
//!
//! And the launcher refuses, before starting any browser, a jondo it cannot reach and
//! one that is not yet a member of the crowd.
//!
//! Firefox is skipped, with a message, only if no Firefox is installed (CI installs
//! firefox-esr).

use crowds_testkit::web;

use bytes::Bytes;
use crowds_testkit::*;
use http_body_util::Full;
use hyper::{header, Request, Response};
use hyper_util::rt::TokioIo;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use web::*;

/// The `crowds` binary these tests run.
const KIT: Kit = Kit::new(env!("CARGO_BIN_EXE_crowds"));

/// Jondos in the test crowds.
const N: usize = 3;
/// Time one launcher run (or control run) may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(90);
/// Time the page has to report its WebRTC attempt.
const REPORT_TIMEOUT: Duration = Duration::from_secs(45);
/// With `CROWDS_FULL=1`, how long the idle browser is watched after the probe page.
const FULL_IDLE_WATCH: Duration = Duration::from_secs(60);
/// Where the STUN listeners and the decoy listen (no jondo uses these addresses).
const STUN_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 61);
const DECOY_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 62);
/// Where Chromium `connect()`s UDP sockets without sending anything, to learn the
/// default route: WebRTC's default-address query (8.8.8.8:53 and its IPv6 twin) and
/// the resolver's IPv6 reachability probe (port 443). Connecting a UDP socket only
/// looks up a route; no packet leaves.
const ROUTE_PROBES: [&str; 3] = [
    "8.8.8.8:53",
    "[2001:4860:4860::8888]:53",
    "[2001:4860:4860::8888]:443",
];
/// Firefox's program names, preferred first.
const FIREFOX_NAMES: [&str; 2] = ["firefox-esr", "firefox"];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Browser {
    Firefox,
    Chromium,
}

impl Browser {
    fn flag(self) -> &'static str {
        match self {
            Browser::Firefox => "firefox",
            Browser::Chromium => "chromium",
        }
    }
}

/// Firefox on the PATH, if any.
fn find_firefox() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    FIREFOX_NAMES.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

// ---------------------------------------------------------------------------------
// The test's own servers: an origin with the probe pages, a decoy, a STUN listener.

/// The probe page: WebRTC to the STUN listener, hints towards the decoy, then a
/// report of what WebRTC did to `/report`.
fn leak_page(stun: SocketAddr, decoy: SocketAddr) -> String {
    format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>leak probe</title>
<link rel="dns-prefetch" href="//decoy-name.crowds-test.invalid">
<link rel="dns-prefetch" href="http://{decoy}/">
<link rel="preconnect" href="http://{decoy}/">
<link rel="prefetch" href="http://{decoy}/prefetched">
</head><body><h1>leak probe</h1>
<p><a href="http://{decoy}/linked">a link nobody clicks</a></p>
<img src="/pixel.png" alt="">
<script>
var reported = false;
function finish(what) {{
  if (reported) {{ return; }}
  reported = true;
  var img = new Image();
  img.src = '/report?' + encodeURIComponent(what);
  document.body.appendChild(img);
}}
try {{
  var pc = new RTCPeerConnection({{iceServers: [{{urls: 'stun:{stun}'}}]}});
  var found = 0;
  pc.onicecandidate = function (e) {{
    if (e.candidate) {{ found++; }} else {{ finish('gathered ' + found + ' candidates'); }}
  }};
  pc.createDataChannel('probe');
  pc.createOffer().then(function (o) {{ return pc.setLocalDescription(o); }})
    .catch(function (e) {{ finish('error ' + e); }});
  setTimeout(function () {{ finish('timeout ' + found + ' ' + pc.iceGatheringState); }}, 5000);
}} catch (e) {{
  finish('no WebRTC: ' + e.name);
}}
</script></body></html>"#
    )
}

/// A plain page for the screenshot.
const PLAIN_PAGE: &str = "<!doctype html><html><head><meta charset=\"utf-8\"><title>crowd</title>\
<style>body{background:#fc0;font:32px sans-serif}</style></head><body><h1>Seen through the crowd</h1>\
<img src=\"/pixel.png\" alt=\"\"></body></html>";

/// What the origin saw.
#[derive(Default)]
struct Seen {
    /// (client address, path and query) of every request.
    hits: Vec<(IpAddr, String)>,
    /// The page's reports.
    reports: Vec<String>,
}

/// A recording origin on 127.0.0.1 serving `/leak` (the probe page), `/leak-control`
/// (the same page for the control run, naming another STUN listener), `/plain`,
/// `/pixel.png` and `/report?…`.
struct Origin {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Origin {
    async fn start(leak: String, leak_control: String) -> Origin {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind origin");
        let addr = listener.local_addr().expect("origin address");
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let leak = Arc::new((leak, leak_control));
        let s = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                let (s, leak) = (s.clone(), leak.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<_>| {
                        let (s, leak) = (s.clone(), leak.clone());
                        async move {
                            let path = req
                                .uri()
                                .path_and_query()
                                .map(|p| p.to_string())
                                .unwrap_or_default();
                            let mut seen = s.lock().unwrap_or_else(|p| p.into_inner());
                            seen.hits.push((peer.ip(), path.clone()));
                            let (ctype, body): (&str, Bytes) = if path == "/leak" {
                                (
                                    "text/html; charset=utf-8",
                                    leak.0.as_bytes().to_vec().into(),
                                )
                            } else if path == "/leak-control" {
                                (
                                    "text/html; charset=utf-8",
                                    leak.1.as_bytes().to_vec().into(),
                                )
                            } else if path == "/plain" {
                                ("text/html; charset=utf-8", PLAIN_PAGE.into())
                            } else if path == "/pixel.png" {
                                ("image/png", png(48, 48).into())
                            } else if let Some(q) = path.strip_prefix("/report?") {
                                let text = percent_decode(q);
                                seen.reports.push(text);
                                ("image/png", png(1, 1).into())
                            } else {
                                ("text/plain", "ok\n".into())
                            };
                            let mut resp = Response::new(Full::new(body));
                            resp.headers_mut()
                                .insert(header::CONTENT_TYPE, ctype.parse().expect("type"));
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Origin { addr, seen, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn hits(&self) -> Vec<(IpAddr, String)> {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .hits
            .clone()
    }

    fn reports(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .reports
            .clone()
    }
}

/// `%XX` escapes decoded (the page's reports are plain ASCII).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A TCP listener that records who connects (and answers any request with "ok").
struct Decoy {
    addr: SocketAddr,
    from: Arc<Mutex<Vec<IpAddr>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Decoy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Decoy {
    async fn start() -> Decoy {
        let l = TcpListener::bind((DECOY_IP, 0)).await.expect("bind decoy");
        let addr = l.local_addr().expect("decoy address");
        let from: Arc<Mutex<Vec<IpAddr>>> = Arc::default();
        let f = from.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, peer)) = l.accept().await {
                f.lock().unwrap_or_else(|p| p.into_inner()).push(peer.ip());
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ =
                        tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
                        .await;
                });
            }
        });
        Decoy { addr, from, task }
    }

    fn from(&self) -> Vec<IpAddr> {
        self.from.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A UDP socket that records every packet (sender, length): the STUN server a page
/// names. It never answers.
struct Stun {
    addr: SocketAddr,
    packets: Arc<Mutex<Vec<(SocketAddr, usize)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Stun {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Stun {
    async fn start() -> Stun {
        let sock = UdpSocket::bind((STUN_IP, 0)).await.expect("bind STUN");
        let addr = sock.local_addr().expect("STUN address");
        let packets: Arc<Mutex<Vec<(SocketAddr, usize)>>> = Arc::default();
        let p = packets.clone();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                p.lock().unwrap_or_else(|e| e.into_inner()).push((from, n));
            }
        });
        Stun {
            addr,
            packets,
            task,
        }
    }

    fn packets(&self) -> Vec<(SocketAddr, usize)> {
        self.packets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

// ---------------------------------------------------------------------------------
// The browser's sockets, from /proc.

/// One socket of a process.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Sock {
    proto: &'static str,
    local: SocketAddr,
    remote: SocketAddr,
    /// The kernel's state number (TCP: 01 established, 02 SYN sent, 0A listening;
    /// UDP: 07 unconnected, 01 connected).
    state: u8,
}

/// `(pid, parent pid, process group)` of every process.
fn processes() -> Vec<(u32, u32, u32)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid pgrp …"; comm may hold spaces and parentheses.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.first() == Some(&"Z") {
            continue;
        }
        if let (Some(ppid), Some(pgrp)) = (
            f.get(1).and_then(|v| v.parse().ok()),
            f.get(2).and_then(|v| v.parse().ok()),
        ) {
            out.push((pid, ppid, pgrp));
        }
    }
    out
}

/// Every living descendant of `root` (not `root` itself).
fn descendants(root: u32) -> Vec<u32> {
    let procs = processes();
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (pid, ppid, _) in &procs {
        children.entry(*ppid).or_default().push(*pid);
    }
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for c in children.get(&p).into_iter().flatten() {
            out.push(*c);
            todo.push(*c);
        }
    }
    out
}

/// A `/proc/net` address: hex, in the kernel's byte order.
fn proc_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(ip, 16).ok()?.to_le_bytes(),
        )),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                let word = u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16).ok()?;
                chunk.copy_from_slice(&word.to_le_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// TCP and UDP sockets by inode, from /proc/net.
fn socket_table() -> HashMap<u64, Sock> {
    let mut out = HashMap::new();
    for (proto, file) in [
        ("tcp", "/proc/net/tcp"),
        ("tcp", "/proc/net/tcp6"),
        ("udp", "/proc/net/udp"),
        ("udp", "/proc/net/udp6"),
    ] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(remote), Some(state), Some(inode)) = (
                f.get(1).and_then(|a| proc_addr(a)),
                f.get(2).and_then(|a| proc_addr(a)),
                f.get(3).and_then(|s| u8::from_str_radix(s, 16).ok()),
                f.get(9).and_then(|i| i.parse::<u64>().ok()),
            ) else {
                continue;
            };
            out.insert(
                inode,
                Sock {
                    proto,
                    local,
                    remote,
                    state,
                },
            );
        }
    }
    out
}

/// The TCP and UDP sockets the processes hold now.
fn sockets_of(pids: &[u32]) -> Vec<Sock> {
    let mut inodes = HashSet::new();
    for pid in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                let t = target.to_string_lossy();
                if let Some(n) = t
                    .strip_prefix("socket:[")
                    .and_then(|r| r.strip_suffix(']'))
                    .and_then(|n| n.parse::<u64>().ok())
                {
                    inodes.insert(n);
                }
            }
        }
    }
    let table = socket_table();
    inodes
        .iter()
        .filter_map(|i| table.get(i).cloned())
        .collect()
}

/// Samples the sockets of `launcher`'s descendants (the browser's processes) until
/// stopped; keeps every distinct socket and every pid seen.
struct Sampler {
    stop: Arc<std::sync::atomic::AtomicBool>,
    rounds: Arc<std::sync::atomic::AtomicU64>,
    seen: Arc<Mutex<(BTreeSet<Sock>, BTreeSet<u32>)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(launcher: u32) -> Sampler {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let seen: Arc<Mutex<(BTreeSet<Sock>, BTreeSet<u32>)>> = Arc::default();
        let (st, r, s) = (stop.clone(), rounds.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let pids = descendants(launcher);
                let socks = sockets_of(&pids);
                {
                    let mut g = s.lock().unwrap_or_else(|p| p.into_inner());
                    g.0.extend(socks);
                    g.1.extend(pids);
                }
                r.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Sampler {
            stop,
            rounds,
            seen,
            thread: Some(thread),
        }
    }

    fn rounds(&self) -> u64 {
        self.rounds.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops sampling; returns the sockets and pids seen.
    fn finish(mut self) -> (BTreeSet<Sock>, BTreeSet<u32>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let g = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        g.clone()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// On drop, kills those of `pids` that still run and are this test's browser
/// processes (their environment names the test's TMPDIR), in case a check failed
/// before the launcher stopped them.
struct Reaper {
    pids: BTreeSet<u32>,
    tmp: PathBuf,
}

impl Drop for Reaper {
    fn drop(&mut self) {
        let mark = format!("TMPDIR={}", self.tmp.display());
        for pid in &self.pids {
            let ours = std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|var| var == mark.as_bytes()))
                .unwrap_or(false);
            if ours {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Runs.

/// `kill -SIG target` (a pid, or `-PGID` for a process group we started).
fn signal(sig: &str, target: &str) {
    let status = Command::new("kill")
        .args([sig, "--", target])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {sig} {target} failed");
}

/// The launcher's command line.
fn launcher(browser: Browser, control: SocketAddr, tmp: &Path, extra: &[String]) -> Command {
    let mut cmd = Command::new(KIT.bin());
    cmd.arg("browser")
        .args(["--browser", browser.flag()])
        .args(["--jondo-control", &control.to_string()])
        .args(extra)
        // Its temporary profile goes here, where the test can see it go.
        .env("TMPDIR", tmp)
        .env("LC_ALL", "C");
    cmd
}

/// `crowds-browser-*` directories left in `tmp`.
fn leftovers(tmp: &Path) -> Vec<String> {
    std::fs::read_dir(tmp)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("crowds-browser-"))
                .collect()
        })
        .unwrap_or_default()
}

/// `initiated` of the jondo's status.
async fn initiated(control: SocketAddr) -> u64 {
    counter(control, "initiated").await
}

/// The control run: the bare browser, only pointed at the jondo's proxy, on the probe
/// page; returns once the STUN listener got a packet (panics if none comes).
async fn control_run(
    browser: Browser,
    program: &Path,
    proxy: SocketAddr,
    url: &str,
    stun: &Stun,
    work: &Path,
) {
    let profile = work.join(format!("control-{}", browser.flag()));
    std::fs::create_dir_all(&profile).expect("control profile");
    let mut cmd = Command::new(program);
    match browser {
        Browser::Firefox => {
            std::fs::write(
                profile.join("user.js"),
                format!(
                    "user_pref(\"network.proxy.type\", 1);\n\
                     user_pref(\"network.proxy.http\", \"{ip}\");\n\
                     user_pref(\"network.proxy.http_port\", {port});\n\
                     user_pref(\"network.proxy.ssl\", \"{ip}\");\n\
                     user_pref(\"network.proxy.ssl_port\", {port});\n\
                     user_pref(\"network.proxy.no_proxies_on\", \"\");\n\
                     user_pref(\"network.proxy.allow_hijacking_localhost\", true);\n\
                     user_pref(\"media.peerconnection.ice.loopback\", true);\n",
                    ip = proxy.ip(),
                    port = proxy.port()
                ),
            )
            .expect("control user.js");
            cmd.args(["--headless", "--no-remote", "--new-instance", "--profile"])
                .arg(&profile)
                .arg(url);
        }
        Browser::Chromium => {
            cmd.args(["--headless", "--no-sandbox", "--disable-gpu"])
                .arg(format!("--user-data-dir={}", profile.display()))
                .arg(format!("--proxy-server=http://{proxy}"))
                .arg("--proxy-bypass-list=<-loopback>")
                .arg(url);
        }
    }
    let t = Instant::now();
    let mut tool = Tool::spawn(&format!("control-{}", browser.flag()), &mut cmd, work);
    let got = eventually(
        &format!(
            "a STUN packet from the bare {browser:?} (the control run: if none comes, this \
             machine cannot show a WebRTC leak and the test below proves nothing)"
        ),
        Duration::from_secs(45),
        || {
            let packets = stun.packets();
            async move {
                if packets.is_empty() {
                    Err("no packet yet".to_string())
                } else {
                    Ok(packets)
                }
            }
        },
    )
    .await;
    tool.kill();
    eprintln!(
        "STEP {browser:?} control run: the bare browser sent STUN {got:?} in {:?}",
        t.elapsed()
    );
}

/// The whole check for one browser (see the file's doc).
async fn through_the_crowd(browser: Browser, program: &Path) {
    let started = Instant::now();
    let work = tempfile::tempdir().expect("tempdir");
    let tmp = work.path().join("tmp");
    std::fs::create_dir_all(&tmp).expect("tmp");
    // One STUN listener for the control run, one for `crowds browser`: a late packet
    // of the control run cannot be taken for a leak.
    let stun = Stun::start().await;
    let control_stun = Stun::start().await;
    let decoy = Decoy::start().await;
    let origin = Origin::start(
        leak_page(stun.addr, decoy.addr),
        leak_page(control_stun.addr, decoy.addr),
    )
    .await;
    // No timing defence: every request the jondo starts is then one the browser made,
    // and it reaches the origin (or the decoy) exactly once.
    let crowd = Crowd::builder(KIT, N)
        .jondo_args(&["--no-prefetch"])
        .start()
        .await;
    let members: Vec<IpAddr> = crowd.member_ips();
    let jondo = &crowd.jondos[0];
    eprintln!(
        "STEP {browser:?} crowd of {N} formed: {:?}",
        started.elapsed()
    );

    // 1. A screenshot through the crowd.
    let t = Instant::now();
    let before = initiated(jondo.control).await;
    let shot = work.path().join("page.png");
    let mut cmd = launcher(
        browser,
        jondo.control,
        &tmp,
        &args(&[
            "--headless",
            "--screenshot",
            &shot.display().to_string(),
            "--timeout",
            "60s",
            &origin.url("/plain"),
        ]),
    );
    let mut run = Tool::spawn(
        &format!("{}-screenshot", browser.flag()),
        &mut cmd,
        work.path(),
    );
    let done = run.finish(RUN_TIMEOUT).await;
    done.assert_ok("crowds browser --screenshot");
    let png = std::fs::read(&shot).expect("the screenshot file");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 1000,
        "the screenshot is not a PNG ({} bytes)",
        png.len()
    );
    let (w, h) = (
        u32::from_be_bytes(png[16..20].try_into().expect("width")),
        u32::from_be_bytes(png[20..24].try_into().expect("height")),
    );
    assert!(w >= 300 && h >= 200, "a {w}x{h} screenshot");
    let hits = origin.hits();
    assert!(
        hits.iter().any(|(_, p)| p == "/plain"),
        "the page never reached the origin: {hits:?}"
    );
    for (ip, path) in &hits {
        assert!(
            members.contains(ip),
            "the origin saw {path} from {ip}, not from a crowd member {members:?}"
        );
    }
    assert_eq!(
        leftovers(&tmp),
        Vec::<String>::new(),
        "the temporary profile outlived the browser"
    );
    let after = initiated(jondo.control).await;
    assert!(
        after - before <= hits.len() as u64,
        "the jondo started {} requests for the browser but only {} reached the origin: \
         the browser sent requests of its own through the crowd",
        after - before,
        hits.len()
    );
    eprintln!(
        "STEP {browser:?} screenshot: {:?} ({w}x{h}, {} bytes; origin saw {:?})",
        t.elapsed(),
        png.len(),
        hits
    );

    // 2. The probe page through `crowds browser`, watched.
    let t = Instant::now();
    let hits_before = origin.hits().len();
    let decoy_before = decoy.from().len();
    let before = initiated(jondo.control).await;
    let mut extra = args(&["--headless"]);
    let persistent = browser == Browser::Firefox;
    if persistent {
        // A persistent profile whose saved preferences let WebRTC use loopback
        // addresses (as in the control run): only the launcher's settings stand
        // between the page and the STUN listener.
        let profile = work.path().join("firefox-profile");
        std::fs::create_dir_all(&profile).expect("profile");
        std::fs::write(
            profile.join("prefs.js"),
            "user_pref(\"media.peerconnection.ice.loopback\", true);\n",
        )
        .expect("prefs.js");
        extra.extend(args(&["--profile", &profile.display().to_string()]));
    }
    extra.push(origin.url("/leak"));
    let mut cmd = launcher(browser, jondo.control, &tmp, &extra);
    let mut run = Tool::spawn(&format!("{}-probe", browser.flag()), &mut cmd, work.path());
    let sampler = Sampler::start(run.pid());
    let report = eventually(
        "the probe page's report of its WebRTC attempt",
        REPORT_TIMEOUT,
        || {
            let reports = origin.reports();
            let exited = run.stderr();
            async move {
                reports.into_iter().next().ok_or(format!(
                    "no report yet; launcher said: {}",
                    tail(&exited, 2000)
                ))
            }
        },
    )
    .await;
    // A few more looks at the sockets after the page is done.
    let rounds = sampler.rounds();
    eventually("more socket samples", Duration::from_secs(10), || {
        let now = sampler.rounds();
        async move {
            (now >= rounds + 5)
                .then_some(())
                .ok_or(format!("{now} rounds"))
        }
    })
    .await;
    if full_mode() {
        // An observation window, not a wait for anything: requests on a timer (update
        // checks, telemetry) would show in the sockets or in the jondo's count.
        eprintln!(
            "STEP {browser:?} watching the idle browser for {FULL_IDLE_WATCH:?} (CROWDS_FULL=1)"
        );
        tokio::time::sleep(FULL_IDLE_WATCH).await;
    }
    let (sockets, pids) = sampler.finish();

    // Whatever happens below, no browser process of this test outlives it.
    let _reaper = Reaper {
        pids: pids.clone(),
        tmp: tmp.clone(),
    };
    // Stop it as a service manager would: SIGTERM to the launcher, which passes it on
    // to the browser's process group.
    signal("-TERM", &run.pid().to_string());
    let done = run
        .wait(RUN_TIMEOUT)
        .await
        .unwrap_or_else(|| panic!("the launcher did not stop on SIGTERM"));
    assert!(
        done.status.success(),
        "the launcher failed when stopped: {}\n{}",
        done.status,
        tail(&done.stderr, 3000)
    );
    assert!(
        done.stderr.contains("stopped"),
        "the launcher did not say it stopped the browser: {}",
        done.stderr
    );
    let survivors = |pids: &BTreeSet<u32>| -> Vec<u32> {
        pids.iter()
            .copied()
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| {
                    !s.rsplit(')')
                        .next()
                        .unwrap_or("")
                        .trim_start()
                        .starts_with('Z')
                })
            })
            .collect()
    };
    eventually(
        "every browser process to end with the launcher",
        Duration::from_secs(15),
        || {
            let left = survivors(&pids);
            async move {
                if left.is_empty() {
                    Ok(())
                } else {
                    Err(format!("still running: {left:?}"))
                }
            }
        },
    )
    .await;
    assert_eq!(
        leftovers(&tmp),
        Vec::<String>::new(),
        "the temporary directory outlived the browser"
    );

    // What the page did, and what reached anything.
    eprintln!(
        "STEP {browser:?} probe page: {:?}; report {report:?}; {} browser processes; \
         sockets {sockets:?}",
        t.elapsed(),
        pids.len()
    );
    assert!(!pids.is_empty(), "no browser process was ever seen");
    let packets = stun.packets();
    assert!(
        packets.is_empty(),
        "through `crowds browser` the page's WebRTC reached the STUN listener: {packets:?}"
    );
    let hits: Vec<(IpAddr, String)> = origin.hits().split_off(hits_before);
    assert!(
        hits.iter().any(|(_, p)| p == "/leak"),
        "the probe page never reached the origin: {hits:?}"
    );
    for (ip, path) in &hits {
        assert!(
            members.contains(ip),
            "the origin saw {path} from {ip}, not from a crowd member"
        );
    }
    let decoy_from: Vec<IpAddr> = decoy.from().split_off(decoy_before);
    for ip in &decoy_from {
        assert!(
            members.contains(ip),
            "the decoy was contacted from {ip}, not through the crowd: {decoy_from:?}"
        );
    }
    for s in &sockets {
        if s.proto == "tcp" {
            assert!(
                s.state == 0x0A || s.remote == jondo.proxy,
                "the browser had a TCP socket to {} (state {:02X}), not the jondo's proxy {}",
                s.remote,
                s.state,
                jondo.proxy
            );
        } else {
            // UDP: unconnected sockets, or Chromium's route probes, which connect (a
            // kernel route lookup) and send nothing. Nothing may listen for mDNS.
            assert!(
                s.remote.port() == 0 || ROUTE_PROBES.contains(&s.remote.to_string().as_str()),
                "the browser had a UDP socket sending to {}: {s:?}",
                s.remote
            );
            assert!(
                s.local.port() != 5353,
                "the browser listens for mDNS on the local network: {s:?}"
            );
        }
    }
    assert!(
        sockets
            .iter()
            .any(|s| s.proto == "tcp" && s.remote == jondo.proxy),
        "the sampler never saw the browser's connection to the jondo: {sockets:?}"
    );
    let after = initiated(jondo.control).await;
    let reached = (hits.len() + decoy_from.len()) as u64;
    assert!(
        after - before <= reached,
        "the jondo started {} requests for the browser but only {reached} reached the \
         test's servers: the browser sent requests of its own through the crowd \
         (origin {hits:?}, decoy {decoy_from:?})",
        after - before
    );
    eprintln!(
        "STEP {browser:?} through `crowds browser`: origin {hits:?}, decoy {decoy_from:?}, \
         {} requests started by the jondo",
        after - before
    );

    // 3. The control run: the same page in the bare browser, merely pointed at the
    // jondo, does reach its STUN listener (else the check above proves nothing here).
    control_run(
        browser,
        program,
        jondo.proxy,
        &origin.url("/leak-control"),
        &control_stun,
        work.path(),
    )
    .await;
    eprintln!("STEP {browser:?} all done in {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_browses_through_the_crowd_without_leaks() {
    require_tool(CHROMIUM, "--version");
    through_the_crowd(Browser::Chromium, Path::new(CHROMIUM)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firefox_browses_through_the_crowd_without_leaks() {
    let Some(firefox) = find_firefox() else {
        eprintln!(
            "SKIPPED firefox_browses_through_the_crowd_without_leaks: no firefox-esr or \
             firefox on the PATH (install it: apt-get install -y firefox-esr; CI does)"
        );
        return;
    };
    through_the_crowd(Browser::Firefox, &firefox).await;
}

/// A stand-in browser that leaves a mark if anything runs it.
fn marker_browser(dir: &Path) -> (PathBuf, PathBuf) {
    let mark = dir.join("browser-was-started");
    let program = dir.join("firefox-stand-in");
    write_file_mode(
        &program,
        &format!("#!/bin/sh\ntouch '{}'\n", mark.display()),
        0o755,
    );
    (program, mark)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_launcher_refuses_a_jondo_it_cannot_use() {
    let work = tempfile::tempdir().expect("tempdir");
    let (program, mark) = marker_browser(work.path());
    let run = |control: SocketAddr| {
        let program = program.display().to_string();
        async move {
            KIT.run_to_end(
                &[
                    "browser",
                    "--browser-binary",
                    &program,
                    "--jondo-control",
                    &control.to_string(),
                    "--headless",
                    "http://127.0.0.1:9/",
                ],
                Duration::from_secs(30),
            )
            .await
        }
    };

    // Nothing listens on the control port.
    let nobody = free_local_addr();
    let (status, _, stderr) = run(nobody).await;
    assert!(!status.success(), "started without a jondo: {stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot reach your jondo's control port at {nobody}"
        )) && stderr.contains("crowds jondo")
            && stderr.contains("--jondo-control"),
        "no clear message: {stderr}"
    );

    // A real jondo that is not (yet) a member: its blender never answers.
    let silent = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let key_file = work.path().join("blender.pub");
    let key = crowds_proto::identity::SecretKey::generate().expect("key");
    std::fs::write(&key_file, format!("{}\n", key.public().to_hex())).expect("key file");
    let pw = work.path().join("password");
    write_file_mode(&pw, "a password\n", 0o600);
    let ip = jondo_ip(40);
    let control = free_local_addr();
    let mut jondo = KIT.spawn_jondo(&JondoSpec {
        name: "waiting-jondo",
        data_dir: &work.path().join("jondo"),
        blender: silent.local_addr().expect("address"),
        blender_key: &key_file,
        account: "alice",
        password_file: &pw,
        peer: SocketAddr::new(IpAddr::V4(ip), free_port(ip)),
        proxy: free_local_addr(),
        socks: free_local_addr(),
        control,
        allow_private: false,
        extra: &[],
        log_dir: &work.path().join("logs"),
    });
    let s = eventually(
        "the waiting jondo's status page",
        Duration::from_secs(30),
        || async move { status_of(control).await },
    )
    .await;
    assert_eq!(s["admitted"], false, "{s}");
    // Its status page points to the launcher as the way to browse.
    let (_, page) = direct_get(control, "/").await.expect("status page");
    let page = String::from_utf8_lossy(&page);
    assert!(
        page.contains("<code>crowds browser</code>") && page.contains("/proxy.pac"),
        "the status page does not point to `crowds browser`: {page}"
    );
    let (status, _, stderr) = run(control).await;
    jondo.assert_running();
    assert!(
        !status.success(),
        "started with a jondo outside the crowd: {stderr}"
    );
    assert!(
        stderr.contains("not yet a member of the crowd")
            && stderr.contains(&format!("http://{control}/"))
            && stderr.contains("run `crowds browser` again"),
        "no clear message: {stderr}"
    );
    assert!(
        !mark.exists(),
        "the launcher ran the browser although it refused the jondo"
    );
    drop(silent);
}
