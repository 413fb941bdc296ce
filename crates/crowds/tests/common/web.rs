//! Helpers of the "whole web through the crowd" tests (tests/web_*.rs): real clients
//! (curl, Python `requests`, headless Chromium) run as child processes in their own
//! process groups (killed on drop), a test certificate authority, a recording web
//! origin over HTTP and HTTPS serving a small multi-resource site and test routes, a
//! raw TCP origin that misbehaves on purpose, and crowds with extra jondo flags.
//!
//! Included by each test file with `#[path = "common/web.rs"] mod web;` next to
//! `mod common;`, so the shared harness in `common/mod.rs` stays untouched. Everything
//! listens and connects on 127.0.0.0/8 only.

#![allow(dead_code)]

use crate::common::*;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::{header, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use std::convert::Infallible;
use std::fs::{self, File};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Debian's Python (with python3-requests and python3-socks), not whatever `python3`
/// is first on the PATH.
pub const PYTHON: &str = "/usr/bin/python3";
/// Debian's Chromium.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// curl.
pub const CURL: &str = "curl";

/// Whether `CROWDS_FULL=1` asks for the full sizes of the big transfers.
pub fn full_mode() -> bool {
    std::env::var("CROWDS_FULL").is_ok_and(|v| v == "1")
}

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
        "{program} is needed by this test and cannot be run: install it (.ci/run does: \
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

// ---------------------------------------------------------------------------------
// The web origin.

/// A request as the web origin saw it.
#[derive(Debug, Clone)]
pub struct Hit {
    /// The client address (the exit's peer address when it came through the crowd).
    pub ip: IpAddr,
    /// Over TLS?
    pub tls: bool,
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers (lower-case names).
    pub headers: Vec<(String, String)>,
}

impl Hit {
    /// The first value of header `name`, if any.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What an upload to `/upload` delivered: hash and length, or the error that cut it.
#[derive(Debug, Clone)]
pub struct Upload {
    /// Path and query.
    pub path: String,
    /// SHA-256 and length, or the body error.
    pub outcome: Result<(String, u64), String>,
}

#[derive(Default)]
struct WebState {
    hits: Mutex<Vec<Hit>>,
    uploads: Mutex<Vec<Upload>>,
}

/// The test site's page.
pub const SITE_HTML: &str = "<!doctype html>
<html><head><meta charset=\"utf-8\"><title>crowds test site</title>
<link rel=\"stylesheet\" href=\"style.css\">
</head><body>
<h1>A page with a style sheet, an image and a script</h1>
<img id=\"pic\" src=\"pixel.png\" width=\"64\" height=\"64\" alt=\"a gradient\">
<p id=\"out\">the script has not run</p>
<script src=\"app.js\"></script>
</body></html>
";

/// The test site's style sheet: its colour is what `app.js` checks.
pub const SITE_CSS: &str = "body { background: rgb(255, 204, 0); font-family: sans-serif; }
h1 { color: rgb(0, 0, 160); }
";

/// The test site's script: once everything loaded, it writes what it found.
pub const SITE_JS: &str = "document.getElementById('out').setAttribute('data-ran', 'yes');
window.addEventListener('load', function () {
  var img = document.getElementById('pic');
  var bg = getComputedStyle(document.body).backgroundColor;
  document.getElementById('out').textContent = 'script ran; image ' +
    (img.complete && img.naturalWidth === 48 ? 'loaded' : 'missing') + '; style ' +
    (bg === 'rgb(255, 204, 0)' ? 'applied' : 'missing (' + bg + ')');
});
";

/// What the script writes when the page, style sheet, image and script all loaded.
pub const SITE_RENDERED: &str = "script ran; image loaded; style applied";

/// The embedded objects of the site's page.
pub const SITE_OBJECTS: [&str; 3] = ["/site/style.css", "/site/pixel.png", "/site/app.js"];

type WebBody = BoxBody<Bytes, std::io::Error>;

/// A recording web origin on 127.0.0.1, over plain HTTP and (with a [`TestCa`]) HTTPS:
/// - `GET /site/` (`index.html`), `/site/style.css`, `/site/pixel.png` (48×48),
///   `/site/app.js`: the test site;
/// - `GET /blob/N`: N deterministic bytes with Content-Length; `/chunked/N`: chunked;
/// - `GET /slow/N`: the same bytes, 16 KiB every 20 ms (about 800 KiB/s);
/// - `GET /stall`: a 200 head announcing 1 MiB, then never a body byte;
/// - `POST|PUT /upload`: reads the body, answers `SHA256 LENGTH`;
/// - `GET /whoami`: the client address; anything else: `ok`.
pub struct WebOrigin {
    /// Plain HTTP address.
    pub http: SocketAddr,
    /// HTTPS address, if started with TLS.
    pub https: Option<SocketAddr>,
    state: Arc<WebState>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for WebOrigin {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn web_text(status: StatusCode, ctype: &'static str, body: impl Into<Bytes>) -> Response<WebBody> {
    let body: Bytes = body.into();
    let len = body.len();
    let mut resp = Response::new(full_body(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(ctype),
    );
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, header::HeaderValue::from(len));
    resp
}

/// A body that yields an inner body's frames no faster than one per `every`.
struct Paced {
    inner: PatternBody,
    every: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Body for Paced {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        use std::future::Future;
        if self.sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        let next = tokio::time::Instant::now() + self.every;
        self.sleep.as_mut().reset(next);
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A body that never yields anything (a stalled server).
struct Stalled;

impl Body for Stalled {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        Poll::Pending
    }
}

async fn web_handle(
    state: Arc<WebState>,
    peer: SocketAddr,
    tls: bool,
    req: Request<Incoming>,
) -> Response<WebBody> {
    let full_path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    state
        .hits
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Hit {
            ip: peer.ip(),
            tls,
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
        });
    let path = req.uri().path().to_string();
    let size = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|n| n.parse::<u64>().ok())
    };
    let sized = |body: WebBody, n: u64| {
        let mut resp = Response::new(body);
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, header::HeaderValue::from(n));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/octet-stream"),
        );
        resp
    };
    if let Some(n) = size("/blob/") {
        return sized(PatternBody::new(n, MAX_CHUNK, true).boxed(), n);
    }
    if let Some(n) = size("/chunked/") {
        return Response::new(PatternBody::new(n, 32 * 1024 + 7, false).boxed());
    }
    if let Some(n) = size("/slow/") {
        let body = Paced {
            inner: PatternBody::new(n, 16 * 1024, true),
            every: Duration::from_millis(20),
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
        };
        return sized(body.boxed(), n);
    }
    match path.as_str() {
        "/site/" | "/site/index.html" => {
            web_text(StatusCode::OK, "text/html; charset=utf-8", SITE_HTML)
        }
        "/site/style.css" => web_text(StatusCode::OK, "text/css", SITE_CSS),
        "/site/app.js" => web_text(StatusCode::OK, "text/javascript", SITE_JS),
        "/site/pixel.png" => web_text(StatusCode::OK, "image/png", png(48, 48)),
        "/whoami" => web_text(StatusCode::OK, "text/plain", format!("{}\n", peer.ip())),
        "/stall" => sized(Stalled.boxed(), 1024 * 1024),
        "/upload" => {
            let mut body = req.into_body();
            let mut h = Sha256::new();
            let mut len = 0u64;
            let mut error = None;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => {
                        if let Ok(d) = f.into_data() {
                            h.update(&d);
                            len += d.len() as u64;
                        }
                    }
                    Err(e) => {
                        error = Some(format!("body error after {len} bytes: {e}"));
                        break;
                    }
                }
            }
            let outcome = match error {
                Some(e) => Err(e),
                None => Ok((hex(&h.finalize()), len)),
            };
            state
                .uploads
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Upload {
                    path: full_path,
                    outcome: outcome.clone(),
                });
            match outcome {
                Ok((sha, len)) => web_text(StatusCode::OK, "text/plain", format!("{sha} {len}")),
                Err(e) => web_text(StatusCode::BAD_REQUEST, "text/plain", e),
            }
        }
        _ => web_text(StatusCode::OK, "text/plain", "ok\n"),
    }
}

async fn serve_web<S>(state: Arc<WebState>, peer: SocketAddr, tls: bool, stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let st = state.clone();
        async move { Ok::<_, Infallible>(web_handle(st, peer, tls, req).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

impl WebOrigin {
    /// Starts the origin on free ports of 127.0.0.1 (HTTPS too if `ca` is given).
    pub async fn start(ca: Option<&TestCa>) -> WebOrigin {
        let state: Arc<WebState> = Arc::default();
        let mut tasks = Vec::new();
        let plain = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind web origin");
        let http = plain.local_addr().expect("address");
        let st = state.clone();
        tasks.push(tokio::spawn(async move {
            while let Ok((stream, peer)) = plain.accept().await {
                tokio::spawn(serve_web(st.clone(), peer, false, stream));
            }
        }));
        let mut https = None;
        if let Some(ca) = ca {
            let secure = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .await
                .expect("bind web origin (TLS)");
            https = Some(secure.local_addr().expect("address"));
            let acceptor = tokio_rustls::TlsAcceptor::from(ca.server.clone());
            let st = state.clone();
            tasks.push(tokio::spawn(async move {
                while let Ok((stream, peer)) = secure.accept().await {
                    let acceptor = acceptor.clone();
                    let st = st.clone();
                    tokio::spawn(async move {
                        let handshake =
                            tokio::time::timeout(Duration::from_secs(30), acceptor.accept(stream))
                                .await;
                        if let Ok(Ok(tls)) = handshake {
                            serve_web(st, peer, true, tls).await;
                        }
                    });
                }
            }));
        }
        WebOrigin {
            http,
            https,
            state,
            tasks,
        }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// `https://localhost:PORT{path}` (the certificate names `localhost`).
    pub fn https_url(&self, path: &str) -> String {
        let a = self.https.expect("started with TLS");
        format!("https://localhost:{}{path}", a.port())
    }

    /// `https://127.0.0.1:PORT{path}` (the certificate also names the IP).
    pub fn https_ip_url(&self, path: &str) -> String {
        format!("https://{}{path}", self.https.expect("started with TLS"))
    }

    /// Every request so far.
    pub fn hits(&self) -> Vec<Hit> {
        self.state
            .hits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Requests for exactly this path and query.
    pub fn hits_for(&self, path: &str) -> Vec<Hit> {
        self.hits().into_iter().filter(|h| h.path == path).collect()
    }

    /// Uploads to this path and query, in order.
    pub fn uploads(&self, path: &str) -> Vec<Upload> {
        self.state
            .uploads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|u| u.path == path)
            .cloned()
            .collect()
    }
}

// ---------------------------------------------------------------------------------
// A raw origin that misbehaves on purpose.

/// A raw TCP origin on 127.0.0.1 that reads one request head, records the client
/// address and request line, then:
/// - `/cut/N`: a 200 head announcing N bytes, N/2 bytes, then an orderly close;
/// - `/reset/N`: the same, but a TCP reset instead of the close (the reset may
///   overtake the bytes before it, so the exit may not even see the head);
/// - `/headers-then-nothing`: a 200 head announcing 1 MiB, then silence, socket open;
/// - `/no-answer`: never a byte, socket open;
/// - anything else: closes the socket without answering.
pub struct RawOrigin {
    /// Its address.
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<(IpAddr, String)>>>,
    task: tokio::task::JoinHandle<()>,
    held: Arc<Mutex<Vec<TcpStream>>>,
}

impl Drop for RawOrigin {
    fn drop(&mut self) {
        self.task.abort();
        self.held.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

impl RawOrigin {
    /// Starts it.
    pub async fn start() -> RawOrigin {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind raw origin");
        let addr = l.local_addr().expect("address");
        let seen: Arc<Mutex<Vec<(IpAddr, String)>>> = Arc::default();
        let held: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (s, h) = (seen.clone(), held.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, peer)) = l.accept().await {
                tokio::spawn(raw_serve(stream, peer, s.clone(), h.clone()));
            }
        });
        RawOrigin {
            addr,
            seen,
            task,
            held,
        }
    }

    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// (client address, request line) of every request so far.
    pub fn seen(&self) -> Vec<(IpAddr, String)> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

async fn raw_serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    seen: Arc<Mutex<Vec<(IpAddr, String)>>>,
    held: Arc<Mutex<Vec<TcpStream>>>,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > 64 * 1024 {
            return;
        }
        match tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
            _ => return,
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let line = text.lines().next().unwrap_or_default().to_string();
    seen.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((peer.ip(), line.clone()));
    let path = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let cut = path
        .strip_prefix("/cut/")
        .map(|n| (n, false))
        .or_else(|| path.strip_prefix("/reset/").map(|n| (n, true)))
        .and_then(|(n, reset)| Some((n.split('?').next()?.parse::<u64>().ok()?, reset)));
    if let Some((n, reset)) = cut {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {n}\r\n\r\n"
        );
        if stream.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let mut body = PatternBody::new(n / 2, 16 * 1024, true);
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(d) = frame.into_data() {
                if stream.write_all(&d).await.is_err() {
                    return;
                }
            }
        }
        let _ = stream.flush().await;
        if reset {
            // A reset, not an orderly close.
            let _ = stream.set_zero_linger();
        } else {
            let _ = stream.shutdown().await;
        }
        drop(stream);
    } else if path.starts_with("/no-answer") {
        held.lock().unwrap_or_else(|p| p.into_inner()).push(stream);
    } else if path.starts_with("/headers-then-nothing") {
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 1048576\r\n\r\n";
        if stream.write_all(head.as_bytes()).await.is_ok() {
            held.lock().unwrap_or_else(|p| p.into_inner()).push(stream);
        }
    }
}

// ---------------------------------------------------------------------------------
// Crowds with extra jondo flags.

/// Starts a blender (`--pf 0.75`, join interval 1 s) and `n` jondos on
/// 127.0.0.(11 + i), each with `extra` flags and `--allow-private-destinations` if
/// `allow_private`, and waits until every jondo lists `n` members and is admitted. The
/// same as [`Crowd::start`] but with the flags.
pub async fn start_crowd(n: usize, allow_private: bool, extra: &[&str]) -> Crowd {
    let dir = tempfile::Builder::new()
        .prefix("crowds-web-")
        .tempdir()
        .expect("tempdir");
    let blender_dir = dir.path().join("blender");
    let logs = dir.path().join("logs");
    let mut passwords = Vec::new();
    for i in 0..n {
        let pw = format!("web password of jondo {i} ({})", std::process::id());
        account_add(&blender_dir, &format!("jondo{i}"), &pw);
        passwords.push(pw);
    }
    let (blender, blender_addr, blender_pub) =
        start_blender(&blender_dir, &logs, &["--pf", "0.75"]).await;
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
            allow_private,
            extra,
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

/// Adds one more jondo (on the next 127.0.0.x, with the given flags) to a running
/// crowd and waits until every member lists it. A new member makes every jondo forget
/// its paths, so this also re-forms every path in the crowd.
pub async fn add_jondo(crowd: &mut Crowd, allow_private: bool, extra: &[&str]) {
    let i = crowd.jondos.len();
    let account = format!("jondo{i}");
    let pw = format!("web password of jondo {i} ({})", std::process::id());
    account_add(&crowd.blender_dir, &account, &pw);
    let ip = jondo_ip(i);
    let data_dir = crowd.dir.path().join(&account);
    let pw_file = crowd.dir.path().join(format!("{account}.password"));
    write_file_mode(&pw_file, &format!("{pw}\n"), 0o600);
    let peer = SocketAddr::new(IpAddr::V4(ip), free_port(ip));
    let (proxy, socks, control) = (free_local_addr(), free_local_addr(), free_local_addr());
    let logs = crowd.dir.path().join("logs");
    let proc = spawn_jondo(&JondoSpec {
        name: &account,
        data_dir: &data_dir,
        blender: crowd.blender_addr,
        blender_key: &crowd.blender_pub,
        account: &account,
        password_file: &pw_file,
        peer,
        proxy,
        socks,
        control,
        allow_private,
        extra,
        log_dir: &logs,
    });
    crowd.jondos.push(Jondo {
        account,
        data_dir,
        peer,
        proxy,
        socks,
        control,
        proc,
    });
    crowd.wait_formed(i + 1).await;
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
            add_jondo(crowd, true, &[]).await;
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
