//! `crowds browser`: a web browser set up for the crowd, without the leaks a
//! hand-configured browser has.
//!
//! A proxy sees only what the browser sends it. A browser merely pointed at the jondo
//! still sends WebRTC STUN packets straight to the server a page names (measured here
//! with Chromium: they reveal the user's own address), resolves names for DNS
//! prefetching, opens speculative connections, speaks QUIC over UDP, and phones home
//! for telemetry, updates and safe browsing (requests that identify the browser even
//! when they travel through the crowd). Inside HTTPS the jondo cannot strip cookies or
//! cache tricks, and no proxy can hide the browser's fingerprint.
//!
//! This module owns the launcher:
//! - it asks the jondo's control port whether the jondo is a member of the crowd
//!   (`/status.json`) and where its HTTP proxy is (`/proxy.pac`), and refuses to start
//!   otherwise, saying what to do;
//! - it finds Firefox (ESR) or Chromium, makes a fresh private profile (or uses
//!   `--profile DIR`), writes the hardened settings into it, runs the browser, and
//!   removes the temporary profile and cache when the browser ends;
//! - `--headless --screenshot FILE URL` loads one page, saves a PNG and exits, bounded
//!   by `--timeout`.
//!
//! Layout: [`hardening`] holds the settings, one table ([`hardening::HARDENING`]) in
//! which each rule gives its reason and the knobs that carry it out in each browser;
//! this file holds the launcher; `browser/tests.rs` the unit tests (the processes are
//! tested in `tests/browser.rs`). The launcher itself sends nothing but two requests
//! to the jondo's control port and one connection to its proxy (to check that it
//! listens); it never contacts anything else.

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde_json::Value as Json;
use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub mod hardening;
#[cfg(test)]
mod tests;

use hardening::{chromium_flags, chromium_prefs, firefox_env, firefox_user_js};

/// Time the jondo's control port has to answer each of the launcher's two requests.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest answer the launcher reads from the control port (`status.json` is a few KiB).
pub const MAX_CONTROL_ANSWER: usize = 1 << 20;

/// Time the browser has, after the launcher passed on a request to stop (SIGTERM), to
/// close by itself (and save a persistent profile) before it is killed.
pub const GRACE: Duration = Duration::from_secs(5);

/// Time the browser's helper processes have, after the main one ended, to stop
/// writing into the temporary profile so that it can be removed.
pub const REMOVE_PATIENCE: Duration = Duration::from_secs(5);

/// Window size of `--screenshot` (Firefox's fingerprinting resistance rounds it).
pub const SCREENSHOT_SIZE: (u32, u32) = (1280, 800);

/// Lines of the browser's own output shown when it fails.
const LOG_TAIL_LINES: usize = 30;

/// Program names searched for on the `PATH`, preferred first.
const FIREFOX_NAMES: &[&str] = &["firefox-esr", "firefox"];
/// Program names searched for on the `PATH`, preferred first.
const CHROMIUM_NAMES: &[&str] = &["chromium", "chromium-browser"];

/// Flags of `crowds browser`.
#[derive(Args, Debug)]
pub struct BrowserArgs {
    /// The browser [default: Firefox (ESR) if installed, else Chromium]. Firefox is
    /// preferred: it resists fingerprinting, Chromium does not.
    #[arg(long, value_enum)]
    browser: Option<Kind>,
    /// The browser's program, if it is not on the PATH under its usual name (give
    /// --browser too unless the file name says firefox or chromium).
    #[arg(long, value_name = "PATH")]
    browser_binary: Option<PathBuf>,
    /// Your jondo's control port (its status page), IP:PORT or localhost:PORT.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8119", value_parser = parse_control, env = "CROWDS_JONDO_CONTROL")]
    jondo_control: SocketAddr,
    /// Keep the browser's state (cookies, history, bookmarks) in DIR from run to run,
    /// instead of a fresh private profile removed at exit. The hardened settings are
    /// written into it again at every start.
    #[arg(long, value_name = "DIR")]
    profile: Option<PathBuf>,
    /// Run the browser without a window.
    #[arg(long)]
    headless: bool,
    /// Load URL, save a PNG of the page in FILE and exit (with --headless and a URL).
    #[arg(long, value_name = "FILE", requires_all = ["headless", "url"])]
    screenshot: Option<PathBuf>,
    /// With --screenshot: the longest the browser may take; then it is stopped.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// The page to open [default: a blank page].
    url: Option<String>,
}

/// A browser the launcher knows how to harden.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Firefox, preferably Debian's Firefox ESR.
    Firefox,
    /// Chromium.
    Chromium,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Firefox => "Firefox",
            Kind::Chromium => "Chromium",
        }
    }
}

// ---------------------------------------------------------------------------------
// The jondo.

/// `--jondo-control`: an IP address and port, or `localhost:PORT` (the control port
/// answers only requests addressed to an IP literal or localhost).
fn parse_control(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse() {
        return Ok(a);
    }
    if let Some(port) = s.strip_prefix("localhost:") {
        if let Ok(p) = port.parse::<u16>() {
            return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, p)));
        }
    }
    Err(format!(
        "{s:?}: give the jondo's control address as IP:PORT (e.g. 127.0.0.1:8119)"
    ))
}

/// What the launcher learnt from the jondo.
#[derive(Debug)]
struct JondoInfo {
    /// Its HTTP proxy.
    proxy: SocketAddr,
    /// Members in its crowd.
    members: u64,
}

/// Splits an HTTP answer into status code and body.
fn parse_answer(raw: &[u8]) -> Result<(u16, &[u8]), String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("an incomplete HTTP answer")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let code = head
        .lines()
        .next()
        .filter(|l| l.starts_with("HTTP/1."))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or("not an HTTP answer")?;
    Ok((code, &raw[end + 4..]))
}

/// `GET path` at the control port, addressed to its IP literal (a name would be
/// refused as a possible DNS rebinding), bounded in time and size.
async fn control_get(control: SocketAddr, path: &str) -> Result<Vec<u8>, String> {
    let run = async {
        let mut stream = tokio::net::TcpStream::connect(control)
            .await
            .map_err(|e| e.to_string())?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {control}\r\nAccept: */*\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        (&mut stream)
            .take(MAX_CONTROL_ANSWER as u64 + 1)
            .read_to_end(&mut raw)
            .await
            .map_err(|e| e.to_string())?;
        if raw.len() > MAX_CONTROL_ANSWER {
            return Err(format!(
                "an answer to {path} longer than {MAX_CONTROL_ANSWER} bytes"
            ));
        }
        let (code, body) = parse_answer(&raw)?;
        if code != 200 {
            return Err(format!("{path} answered {code}"));
        }
        Ok(body.to_vec())
    };
    tokio::time::timeout(CONTROL_TIMEOUT, run)
        .await
        .map_err(|_| format!("no answer to {path} within {CONTROL_TIMEOUT:?}"))?
}

/// The proxy a PAC file names: the jondo's says `return "PROXY IP:PORT";` for every
/// URL. One that could answer DIRECT is refused: it would let the browser bypass the
/// crowd whenever the jondo does not answer. A proxy listening on every address
/// (0.0.0.0 or ::) is reached on loopback.
fn proxy_from_pac(pac: &str) -> Result<SocketAddr, String> {
    let mut proxy = named_proxy(pac)?;
    if proxy.ip().is_unspecified() {
        let loopback = match proxy {
            SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            SocketAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        };
        proxy.set_ip(loopback);
    }
    Ok(proxy)
}

/// The address after the PAC file's `PROXY`.
fn named_proxy(pac: &str) -> Result<SocketAddr, String> {
    if pac.contains("DIRECT") {
        return Err("the PAC file allows DIRECT connections, around the crowd".into());
    }
    let after = pac
        .split("PROXY")
        .nth(1)
        .ok_or("the PAC file names no PROXY")?;
    let token: String = after
        .trim_start()
        .chars()
        .take_while(|c| !matches!(c, '"' | '\'' | ';') && !c.is_whitespace())
        .collect();
    if let Ok(a) = token.parse::<SocketAddr>() {
        return Ok(a);
    }
    parse_control(&token)
        .map_err(|_| format!("the PAC file names a proxy {token:?} that is not IP:PORT"))
}

/// Why the launcher will not start: the jondo's answer to `/status.json`, judged.
fn judge_status(control: SocketAddr, status: &Json) -> Result<u64, String> {
    let Some(admitted) = status.get("admitted").and_then(Json::as_bool) else {
        return Err(format!(
            "{control} is not a jondo's control port (its status.json has no \"admitted\"); \
             give your jondo's control address with --jondo-control IP:PORT \
             (its --control-listen, 127.0.0.1:8119 by default)"
        ));
    };
    if !admitted {
        let said: Vec<&str> = status["warnings"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|w| w["message"].as_str())
            .collect();
        let said = if said.is_empty() {
            String::new()
        } else {
            format!(" It says: {}", said.join(" "))
        };
        return Err(format!(
            "your jondo ({control}) is not yet a member of the crowd, so a browser would have \
             nowhere to send your requests.{said} Wait until its status page \
             (http://{control}/) says you are in the crowd, then run `crowds browser` again."
        ));
    }
    Ok(status["members"].as_u64().unwrap_or(0))
}

/// Asks the jondo whether it is a member and where its proxy is; checks that the proxy
/// accepts connections.
async fn ask_jondo(control: SocketAddr) -> Result<JondoInfo> {
    let unreachable = |e: String| {
        anyhow!(
            "cannot reach your jondo's control port at {control} ({e}). Is the jondo running? \
             Start it with `crowds jondo` (see `crowds init`), or give its control address \
             with --jondo-control IP:PORT. Not starting a browser that could only fail or \
             go around the crowd."
        )
    };
    let body = control_get(control, "/status.json")
        .await
        .map_err(unreachable)?;
    let status: Json = serde_json::from_slice(&body).map_err(|e| {
        anyhow!("{control}/status.json is not JSON ({e}): is this a jondo's control port?")
    })?;
    let members = judge_status(control, &status).map_err(|e| anyhow!(e))?;
    let pac = control_get(control, "/proxy.pac")
        .await
        .map_err(unreachable)?;
    let proxy = proxy_from_pac(&String::from_utf8_lossy(&pac))
        .map_err(|e| anyhow!("your jondo's /proxy.pac at {control}: {e}"))?;
    // Whatever answers on the control port names the proxy: it must be on this machine
    // (or on the host the user named), never a stranger's proxy elsewhere.
    if !proxy.ip().is_loopback() && proxy.ip() != control.ip() {
        bail!(
            "the jondo at {control} names a proxy at {proxy}, which is neither on this \
             machine's loopback nor at {}; refusing to send the browser there",
            control.ip()
        );
    }
    tokio::time::timeout(CONTROL_TIMEOUT, tokio::net::TcpStream::connect(proxy))
        .await
        .map_err(|_| anyhow!("timed out"))
        .and_then(|r| r.map_err(anyhow::Error::from))
        .map_err(|e| {
            anyhow!(
                "your jondo's HTTP proxy at {proxy} does not accept connections ({e}); \
                 restart the jondo"
            )
        })?;
    Ok(JondoInfo { proxy, members })
}

// ---------------------------------------------------------------------------------
// The browser program.

/// Whether `p` is a file someone may execute.
fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The first executable `name` in the `PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

/// The browser to run: the one asked for, or the first installed (Firefox first).
fn find_browser(kind: Option<Kind>, binary: Option<&Path>) -> Result<(Kind, PathBuf)> {
    if let Some(b) = binary {
        if !is_executable(b) {
            bail!("--browser-binary {}: not an executable file", b.display());
        }
        let file = b
            .file_name()
            .map(|f| f.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        let guessed = if file.contains("firefox") {
            Some(Kind::Firefox)
        } else if file.contains("chrom") {
            Some(Kind::Chromium)
        } else {
            None
        };
        let kind = kind.or(guessed).ok_or_else(|| {
            anyhow!(
                "cannot tell which browser {} is: add --browser firefox or --browser chromium",
                b.display()
            )
        })?;
        return Ok((kind, b.to_path_buf()));
    }
    let wanted: &[Kind] = match kind {
        Some(Kind::Firefox) => &[Kind::Firefox],
        Some(Kind::Chromium) => &[Kind::Chromium],
        None => &[Kind::Firefox, Kind::Chromium],
    };
    for k in wanted {
        let names = match k {
            Kind::Firefox => FIREFOX_NAMES,
            Kind::Chromium => CHROMIUM_NAMES,
        };
        if let Some(p) = names.iter().find_map(|n| on_path(n)) {
            return Ok((*k, p));
        }
    }
    let which = match kind {
        Some(k) => format!("no {}", k.name()),
        None => "neither Firefox nor Chromium".to_string(),
    };
    bail!(
        "{which} found on the PATH; install one (Debian: apt-get install firefox-esr, or \
         chromium), or name the program with --browser-binary PATH"
    )
}

/// Whether this process runs as root (Chromium's sandbox then needs --no-sandbox).
fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A private directory of this run (profile unless `--profile`, cache, browser log),
/// removed with everything in it.
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn new() -> Result<Scratch> {
        let base = std::env::temp_dir();
        for _ in 0..16 {
            let path = base.join(format!("crowds-browser-{:016x}", rand::random::<u64>()));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(Scratch { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot create {}", path.display()))
                }
            }
        }
        bail!("cannot create a temporary directory in {}", base.display())
    }

    /// Removes it, retrying while the browser's last helpers still write into it.
    async fn remove(&self) {
        let deadline = tokio::time::Instant::now() + REMOVE_PATIENCE;
        loop {
            match std::fs::remove_dir_all(&self.path) {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    eprintln!(
                        "crowds browser: could not remove the temporary profile {}: {e}",
                        self.path.display()
                    );
                    return;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Normally already gone (see `remove`); this covers early returns.
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Creates a directory (and its parents) readable by its owner only.
fn private_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    // An existing directory (--profile) keeps the mode it had: make it private too.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot make {} private", path.display()))
}

/// Refuses to replace a `user.js` the launcher did not write: a `--profile` pointed at
/// an everyday Firefox profile must not lose the user's own settings silently.
fn user_js_is_ours(user_js: &Path) -> Result<()> {
    match std::fs::read_to_string(user_js) {
        Ok(old) if !old.starts_with(hardening::USER_JS_HEADER) => bail!(
            "{} was not written by `crowds browser`, which rewrites user.js at every \
             start; give --profile a directory of its own (a new one is fine)",
            user_js.display()
        ),
        _ => Ok(()),
    }
}

/// Writes the hardened Firefox profile; returns Firefox's arguments.
fn prepare_firefox(
    profile: &Path,
    proxy: SocketAddr,
    temporary: bool,
    args: &BrowserArgs,
) -> Result<Vec<OsString>> {
    let user_js = profile.join("user.js");
    user_js_is_ours(&user_js)?;
    std::fs::write(&user_js, firefox_user_js(proxy, temporary))
        .with_context(|| format!("cannot write {}", user_js.display()))?;
    // --no-remote and --new-instance: never hand the URL to a Firefox already
    // running, which would open it without any of this (and maybe without the proxy).
    let mut a: Vec<OsString> = vec!["--no-remote".into(), "--new-instance".into()];
    a.push("--profile".into());
    a.push(profile.into());
    if args.headless {
        a.push("--headless".into());
    }
    if let Some(file) = &args.screenshot {
        a.push("--screenshot".into());
        a.push(file.into());
        a.push("--window-size".into());
        a.push(format!("{},{}", SCREENSHOT_SIZE.0, SCREENSHOT_SIZE.1).into());
    }
    a.push(args.url.as_deref().unwrap_or("about:blank").into());
    Ok(a)
}

/// Reads a Chromium preferences file (JSON), if there is one.
fn read_json(path: &Path) -> Option<Json> {
    let text = std::fs::read(path).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Writes the hardened Chromium profile; returns Chromium's arguments.
fn prepare_chromium(
    profile: &Path,
    cache: &Path,
    proxy: SocketAddr,
    temporary: bool,
    args: &BrowserArgs,
) -> Result<Vec<OsString>> {
    let default = profile.join("Default");
    private_dir(&default)?;
    for (file, local_state) in [
        (default.join("Preferences"), false),
        (profile.join("Local State"), true),
    ] {
        let prefs = chromium_prefs(read_json(&file), local_state, proxy);
        std::fs::write(&file, prefs.to_string())
            .with_context(|| format!("cannot write {}", file.display()))?;
    }
    let mut a: Vec<OsString> = vec![format!("--user-data-dir={}", profile.display()).into()];
    a.extend(
        chromium_flags(proxy, cache, temporary)
            .into_iter()
            .map(OsString::from),
    );
    if running_as_root() {
        // Chromium refuses to run as root with its sandbox.
        eprintln!(
            "crowds browser: running as root, so Chromium runs without its sandbox \
             (--no-sandbox); run as an ordinary user to keep it"
        );
        a.push("--no-sandbox".into());
    }
    if args.headless {
        a.push("--headless".into());
        a.push("--disable-gpu".into());
    }
    if let Some(file) = &args.screenshot {
        a.push(format!("--screenshot={}", file.display()).into());
        a.push(format!("--window-size={},{}", SCREENSHOT_SIZE.0, SCREENSHOT_SIZE.1).into());
    }
    a.push(args.url.as_deref().unwrap_or("about:blank").into());
    Ok(a)
}

/// The last `n` lines of a log file.
fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Sends `signal` (`TERM` or `KILL`) to the browser's process group with the
/// system's `kill` (the standard library signals single processes, and only with
/// KILL); false if that could not be done.
fn signal_group(pgid: u32, signal: &str) -> bool {
    std::process::Command::new("kill")
        .args(["-s", signal, "--", &format!("-{pgid}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Ends the browser's process group: if the launcher was asked to stop (`asked`), the
/// browser gets SIGTERM and [`GRACE`] to close (and save a persistent profile), then
/// SIGKILL; whatever helpers outlive the main process are killed, so that nothing
/// writes into the profile while it is removed.
async fn stop_browser(child: &mut tokio::process::Child, pgid: Option<u32>, asked: bool) {
    if asked {
        let termed = pgid.is_some_and(|g| signal_group(g, "TERM"));
        if !termed {
            let _ = child.start_kill();
        }
        if tokio::time::timeout(GRACE, child.wait()).await.is_err() {
            let _ = child.kill().await;
        }
    }
    if let Some(g) = pgid {
        // Usually nothing is left and `kill` finds no such group.
        signal_group(g, "KILL");
    }
}

/// How the browser run ended.
enum End {
    /// The browser exited by itself.
    Exited(ExitStatus),
    /// The launcher was asked to stop.
    Signal(&'static str),
    /// `--screenshot` took longer than `--timeout`.
    TimedOut,
}

/// Runs `crowds browser`.
pub fn run(args: BrowserArgs) -> Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(launch(args))
}

async fn launch(mut args: BrowserArgs) -> Result<()> {
    if let Some(url) = &args.url {
        // The URL is the browser's last argument: one that looks like a switch
        // (`--proxy-server=direct://`) would change how the browser connects.
        if url.starts_with('-') {
            bail!("{url:?} is not a URL");
        }
    }
    let jondo = ask_jondo(args.jondo_control).await?;
    let (kind, program) = find_browser(args.browser, args.browser_binary.as_deref())?;
    if let Some(file) = &args.screenshot {
        // An absolute path for the browser, and no old file that could pass for a new
        // screenshot.
        let abs = std::path::absolute(file)
            .with_context(|| format!("--screenshot {}", file.display()))?;
        match std::fs::remove_file(&abs) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot replace {}", abs.display())),
        }
        args.screenshot = Some(abs);
    }
    let scratch = Scratch::new()?;
    let temporary = args.profile.is_none();
    let profile = match &args.profile {
        Some(dir) => {
            std::path::absolute(dir).with_context(|| format!("--profile {}", dir.display()))?
        }
        None => scratch.path.join("profile"),
    };
    private_dir(&profile)?;
    let cache = scratch.path.join("cache");
    private_dir(&cache)?;
    let browser_args = match kind {
        Kind::Firefox => prepare_firefox(&profile, jondo.proxy, temporary, &args)?,
        Kind::Chromium => prepare_chromium(&profile, &cache, jondo.proxy, temporary, &args)?,
    };
    let log_path = scratch.path.join("browser.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(&browser_args)
        // A process group of its own, so that stopping it reaches every helper
        // process (and a wrapper script's browser), not only the first.
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true);
    if kind == Kind::Firefox {
        cmd.envs(firefox_env(temporary));
    }
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
        // The browser's proxy is the jondo, set above; nothing from the environment.
        cmd.env_remove(var);
    }
    let state = if temporary {
        "a fresh private profile, removed when the browser ends".to_string()
    } else {
        format!("profile {}", profile.display())
    };
    eprintln!(
        "crowds browser: {} ({}) through your jondo's proxy {} (a crowd of {} members); {state}.",
        kind.name(),
        program.display(),
        jondo.proxy,
        jondo.members
    );
    // From here on a signal must not end the launcher before it has stopped the
    // browser and removed the profile: handlers first, then the browser.
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", program.display()))?;
    let pgid = child.id();
    let deadline = tokio::time::sleep(args.timeout);
    let end = tokio::select! {
        status = child.wait() => End::Exited(status?),
        _ = interrupt.recv() => End::Signal("interrupted"),
        _ = term.recv() => End::Signal("terminated"),
        _ = hangup.recv() => End::Signal("hung up"),
        _ = deadline, if args.screenshot.is_some() => End::TimedOut,
    };
    stop_browser(&mut child, pgid, !matches!(end, End::Exited(_))).await;
    let tail = log_tail(&log_path, LOG_TAIL_LINES);
    scratch.remove().await;
    match end {
        End::Exited(status) => {
            if let Some(file) = &args.screenshot {
                let png = std::fs::read(file).unwrap_or_default();
                if !png.starts_with(b"\x89PNG\r\n\x1a\n") {
                    bail!(
                        "{} ended ({status}) without saving a PNG screenshot in {}; its last \
                         output:\n{tail}",
                        kind.name(),
                        file.display()
                    );
                }
                eprintln!("crowds browser: screenshot saved in {}", file.display());
            } else if !status.success() {
                bail!(
                    "{} ended with {status}; its last output:\n{tail}",
                    kind.name()
                );
            }
            Ok(())
        }
        End::Signal(how) => {
            eprintln!("crowds browser: {how}; {} stopped.", kind.name());
            Ok(())
        }
        End::TimedOut => bail!(
            "the page did not load within {:?} (--timeout); {} stopped. Its last output:\n{tail}",
            args.timeout,
            kind.name()
        ),
    }
}
