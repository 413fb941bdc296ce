//! The whole web through the crowd (issue 3), with real clients: curl and Python
//! `requests` (Debian's) through the jondos' HTTP and SOCKS5 proxies, plain HTTP and
//! HTTPS (CONNECT, end-to-end TLS with a CA made by the test), uploads (chunked,
//! `Expect: 100-continue`), refused destinations, malformed SOCKS clients, and
//! transfers that break: a server cutting or resetting mid-body and a path whose
//! jondos are killed mid-transfer must give the client an error, never a short
//! "success".
//!
//! Three tests, each with its own crowd: five members shared by the checks above (each
//! a function, timed; the kill comes last); one member without
//! `--allow-private-destinations` for the exit-policy refusals; three members with
//! `--idle-timeout 3s --server-timeout 3s` for stalled servers and idle tunnels.

use crowds_testkit::web;

use crowds_testkit::*;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use web::*;

/// The `crowds` binary these tests run.
const KIT: Kit = Kit::new(env!("CARGO_BIN_EXE_crowds"));

const N: usize = 5;
const MIB: u64 = 1024 * 1024;
/// Time one client run may take.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

async fn step<F: Future<Output = ()>>(name: &str, f: F) {
    let t = Instant::now();
    f.await;
    eprintln!("STEP {name}: {:?}", t.elapsed());
}

/// The checks' shared fixtures.
struct Env {
    crowd: Crowd,
    origin: WebOrigin,
    raw: RawOrigin,
    ca: TestCa,
    work: tempfile::TempDir,
}

impl Env {
    fn dir(&self) -> &Path {
        self.work.path()
    }

    /// `curl` with the base options, `-x http://PROXY` of jondo `i`, and `rest`.
    async fn curl_via(&self, name: &str, i: usize, rest: &[&str]) -> Finished {
        let mut a = curl_base(CLIENT_TIMEOUT.as_secs() - 10);
        a.push("-x".into());
        a.push(format!("http://{}", self.crowd.jondos[i].proxy));
        a.extend(args(rest));
        run_tool(name, CURL, &a, self.dir(), CLIENT_TIMEOUT).await
    }

    /// `curl` with the base options and `rest` (no proxy unless `rest` names one).
    async fn curl(&self, name: &str, rest: &[&str]) -> Finished {
        let mut a = curl_base(CLIENT_TIMEOUT.as_secs() - 10);
        a.extend(args(rest));
        run_tool(name, CURL, &a, self.dir(), CLIENT_TIMEOUT).await
    }

    fn out(&self, name: &str) -> String {
        self.dir().join(name).to_string_lossy().into_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn curl_and_python_through_a_crowd_of_five() {
    require_tool(CURL, "--version");
    let work = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new(work.path());
    let origin = WebOrigin::start(Some(&ca)).await;
    let raw = RawOrigin::start().await;
    let t = Instant::now();
    // Jondo 4 answers tunnels only once its exit has; the others are optimistic.
    let crowd = Crowd::builder(KIT, N)
        .jondo_args_for(4, &["--no-optimistic-tunnels"])
        .start()
        .await;
    eprintln!("crowd of {N} formed in {:?}", t.elapsed());
    let mut env = Env {
        crowd,
        origin,
        raw,
        ca,
        work,
    };
    step("curl plain HTTP", curl_plain_http(&env)).await;
    step("curl HTTPS via CONNECT", curl_https_connect(&env)).await;
    step("curl SOCKS5", curl_socks5(&env)).await;
    step("curl uploads", curl_uploads(&env)).await;
    step("curl refused destinations", curl_refused(&env)).await;
    step("malformed SOCKS clients", malformed_socks(&env)).await;
    step("python requests", python_requests(&env)).await;
    step("server cut or reset mid-body", server_cut_mid_body(&env)).await;
    for j in &mut env.crowd.jondos {
        j.proc.assert_running();
    }
    // Last: it kills most of the crowd.
    step(
        "path killed mid-transfer",
        path_killed_mid_transfer(&mut env),
    )
    .await;
}

/// Parses curl's `-w '%{http_code} %{size_download}'`-style output.
fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

/// curl downloads through every member, Content-Length and chunked, byte-exact, and
/// the origin sees a crowd member.
async fn curl_plain_http(env: &Env) {
    for i in 0..N {
        let len = 2 * MIB + 7 * i as u64;
        let path = format!("/blob/{len}");
        let file = env.out(&format!("plain{i}.bin"));
        let out = env
            .curl_via(
                &format!("curl-plain-{i}"),
                i,
                &[
                    "-o",
                    &file,
                    "-w",
                    "%{http_code} %{size_download}",
                    &env.origin.url(&path),
                ],
            )
            .await;
        out.assert_ok("curl GET through the proxy");
        assert_eq!(words(&out.stdout), [String::from("200"), len.to_string()]);
        assert_eq!(file_sha(Path::new(&file)), (expected_sha(len), len));
        let hits = env.origin.hits_for(&path);
        assert_eq!(hits.len(), 1, "{hits:?}");
        assert_member(&env.crowd, hits[0].ip, &path);
        // What the origin saw is what it reports.
        let out = env
            .curl_via(
                &format!("curl-whoami-{i}"),
                i,
                &[&env.origin.url(&format!("/whoami?plain={i}"))],
            )
            .await;
        out.assert_ok("curl whoami");
        assert_eq!(
            out.stdout.trim(),
            hits[0].ip.to_string(),
            "paths are static"
        );
    }
    let len = 3 * MIB + 1;
    let file = env.out("chunked.bin");
    let out = env
        .curl_via(
            "curl-chunked",
            0,
            &["-o", &file, &env.origin.url(&format!("/chunked/{len}"))],
        )
        .await;
    out.assert_ok("curl chunked download");
    assert_eq!(file_sha(Path::new(&file)), (expected_sha(len), len));
}

/// HTTPS through a CONNECT tunnel: TLS end to end with the test CA (curl checks the
/// certificate against it, and refuses without it), by name and by IP.
async fn curl_https_connect(env: &Env) {
    let ca = env.ca.ca_pem.to_string_lossy().into_owned();
    let len = 4 * MIB + 3;
    let file = env.out("https.bin");
    let url = env.origin.https_url(&format!("/blob/{len}"));
    let out = env
        .curl_via(
            "curl-https",
            1,
            &[
                "--cacert",
                &ca,
                "-o",
                &file,
                "-w",
                "%{http_code} %{http_connect} %{size_download} %{ssl_verify_result}",
                &url,
            ],
        )
        .await;
    out.assert_ok("curl HTTPS through the proxy");
    assert_eq!(
        words(&out.stdout),
        ["200", "200", &len.to_string(), "0"],
        "status, CONNECT status, length, verification"
    );
    assert_eq!(file_sha(Path::new(&file)), (expected_sha(len), len));
    let hits = env.origin.hits_for(&format!("/blob/{len}"));
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert!(hits[0].tls);
    assert_member(&env.crowd, hits[0].ip, "HTTPS download");
    // By IP address (the certificate names 127.0.0.1 too).
    let out = env
        .curl_via(
            "curl-https-ip",
            1,
            &[
                "--cacert",
                &ca,
                &env.origin.https_ip_url("/whoami?https-ip"),
            ],
        )
        .await;
    out.assert_ok("curl HTTPS by IP");
    assert_eq!(out.stdout.trim(), hits[0].ip.to_string());
    // The jondos cannot present a certificate of their own: without the CA, curl
    // refuses the server (60: peer certificate cannot be authenticated).
    let out = env
        .curl_via(
            "curl-https-untrusted",
            1,
            &[&env.origin.https_url("/whoami?untrusted")],
        )
        .await;
    assert_eq!(
        out.code(),
        60,
        "curl without the test CA: {}",
        out.stderr.trim()
    );
}

/// SOCKS5 with names resolved at the exit (`--socks5-hostname localhost`), plain and
/// TLS, and with an address resolved by the client (`--socks5`).
async fn curl_socks5(env: &Env) {
    let j = &env.crowd.jondos[2];
    let socks = j.socks.to_string();
    let http_port = env.origin.http.port();
    let out = env
        .curl(
            "curl-socks-whoami",
            &[
                "--socks5-hostname",
                &socks,
                &format!("http://localhost:{http_port}/whoami?socks=name"),
            ],
        )
        .await;
    out.assert_ok("curl --socks5-hostname");
    let ip = out.stdout.trim().to_string();
    assert_member(&env.crowd, ip.parse().expect("an IP"), "SOCKS5 request");
    let len = 3 * MIB + 11;
    let file = env.out("socks.bin");
    let out = env
        .curl(
            "curl-socks-blob",
            &[
                "--socks5-hostname",
                &socks,
                "-o",
                &file,
                &format!("http://localhost:{http_port}/blob/{len}"),
            ],
        )
        .await;
    out.assert_ok("curl --socks5-hostname download");
    assert_eq!(file_sha(Path::new(&file)), (expected_sha(len), len));
    let ca = env.ca.ca_pem.to_string_lossy().into_owned();
    let file = env.out("socks-tls.bin");
    let out = env
        .curl(
            "curl-socks-https",
            &[
                "--socks5-hostname",
                &socks,
                "--cacert",
                &ca,
                "-o",
                &file,
                &env.origin.https_url(&format!("/blob/{len}")),
            ],
        )
        .await;
    out.assert_ok("curl --socks5-hostname HTTPS");
    assert_eq!(file_sha(Path::new(&file)), (expected_sha(len), len));
    let out = env
        .curl(
            "curl-socks-ip",
            &["--socks5", &socks, &env.origin.url("/whoami?socks=ip")],
        )
        .await;
    out.assert_ok("curl --socks5");
    assert_eq!(out.stdout.trim(), ip, "SOCKS by name and by IP: same path");
    let blob_path = format!("/blob/{len}");
    for path in ["/whoami?socks=name", &blob_path, "/whoami?socks=ip"] {
        let hits = env.origin.hits_for(path);
        assert!(!hits.is_empty(), "{path} never arrived");
        for h in hits {
            assert_eq!(h.ip.to_string(), ip, "{path}");
        }
    }
}

/// Uploads: chunked transfer encoding, `Expect: 100-continue` (the client gets its
/// 100 and sends), and a plain Content-Length PUT; the origin gets every byte.
async fn curl_uploads(env: &Env) {
    let len = 6 * MIB + 5;
    let file = env.dir().join("upload.bin");
    write_pattern_file(&file, len).await;
    let file = file.to_string_lossy().into_owned();
    let want = format!("{} {len}", expected_sha(len));
    let out = env
        .curl_via(
            "curl-upload-chunked",
            3,
            &[
                "-H",
                "Transfer-Encoding: chunked",
                "-H",
                "Expect:",
                "-T",
                &file,
                &env.origin.url("/upload?chunked"),
            ],
        )
        .await;
    out.assert_ok("chunked upload");
    assert_eq!(out.stdout.trim(), want, "chunked upload");
    let out = env
        .curl_via(
            "curl-upload-expect",
            3,
            &[
                "-v",
                "-H",
                "Expect: 100-continue",
                "-H",
                "Content-Type: application/octet-stream",
                "--data-binary",
                &format!("@{file}"),
                &env.origin.url("/upload?expect"),
            ],
        )
        .await;
    out.assert_ok("upload with Expect: 100-continue");
    assert_eq!(out.stdout.trim(), want, "upload with Expect: 100-continue");
    assert!(
        out.stderr.contains("< HTTP/1.1 100 Continue"),
        "curl never got 100 Continue (it then waits its expect timeout and sends \
         anyway): {}",
        tail(&out.stderr, 3000)
    );
    let out = env
        .curl_via(
            "curl-upload-put",
            4,
            &["-H", "Expect:", "-T", &file, &env.origin.url("/upload?put")],
        )
        .await;
    out.assert_ok("PUT upload");
    assert_eq!(out.stdout.trim(), want, "PUT upload");
    for q in ["/upload?chunked", "/upload?expect", "/upload?put"] {
        let hits = env.origin.hits_for(q);
        assert_eq!(hits.len(), 1, "{q}: {hits:?}");
        assert_member(&env.crowd, hits[0].ip, q);
    }
}

/// Destinations that cannot be reached: a clear answer, not a hang or a success.
async fn curl_refused(env: &Env) {
    let closed = free_local_addr();
    // An optimistic jondo (0) has answered the CONNECT with 200 before its exit found the
    // port closed: curl's TLS handshake fails on the jondo's alert (exit 35).
    let out = env
        .curl_via(
            "curl-connect-closed-optimistic",
            0,
            &["-w", "%{http_connect}", &format!("https://{closed}/")],
        )
        .await;
    assert_eq!(out.code(), 35, "curl: {}", out.stderr.trim());
    assert_eq!(
        out.stdout.trim(),
        "200",
        "optimistic CONNECT to a closed port"
    );
    assert!(
        out.stderr.to_lowercase().contains("alert internal error"),
        "curl should name the TLS alert: {}",
        out.stderr.trim()
    );
    // Plain HTTP over optimistic SOCKS: the jondo serves it as proxied requests, so the
    // failure comes back as its 502 page.
    let out = env
        .curl(
            "curl-socks-closed-optimistic",
            &[
                "--socks5-hostname",
                &env.crowd.jondos[0].socks.to_string(),
                "-w",
                "\n%{http_code}",
                &format!("http://{closed}/"),
            ],
        )
        .await;
    out.assert_ok("curl over SOCKS to a closed port");
    assert_eq!(out.stdout.lines().last(), Some("502"), "{}", out.stdout);
    // The crowd's own members are refused up front, with a status, even optimistically.
    let member = env.crowd.jondos[2].peer;
    let out = env
        .curl_via(
            "curl-connect-member-optimistic",
            0,
            &["-w", "%{http_connect}", &format!("https://{member}/")],
        )
        .await;
    assert_eq!(out.code(), 56, "curl: {}", out.stderr.trim());
    assert_eq!(out.stdout.trim(), "403", "optimistic CONNECT to a member");
    // Jondo 4 waits for its exit. CONNECT to a port where nothing listens: 502 to the
    // CONNECT (curl exit 56).
    let out = env
        .curl_via(
            "curl-connect-closed",
            4,
            &["-w", "%{http_connect}", &format!("https://{closed}/")],
        )
        .await;
    assert_eq!(out.code(), 56, "curl: {}", out.stderr.trim());
    assert_eq!(out.stdout.trim(), "502", "CONNECT to a closed port");
    // A GET to it: the proxy's 502 page.
    let out = env
        .curl_via(
            "curl-get-closed",
            4,
            &["-w", "\n%{http_code}", &format!("http://{closed}/")],
        )
        .await;
    out.assert_ok("curl GET to a closed port");
    assert_eq!(out.stdout.lines().last(), Some("502"), "{}", out.stdout);
    // SOCKS5 to it: curl reports the SOCKS failure (97: proxy handshake error).
    let out = env
        .curl(
            "curl-socks-closed",
            &[
                "--socks5-hostname",
                &env.crowd.jondos[4].socks.to_string(),
                &format!("http://{closed}/"),
            ],
        )
        .await;
    assert_eq!(out.code(), 97, "curl: {}", out.stderr.trim());
    // The crowd's own members are never destinations (403, exit policy).
    let member = env.crowd.jondos[2].peer;
    let out = env
        .curl_via(
            "curl-connect-member",
            4,
            &["-w", "%{http_connect}", &format!("https://{member}/")],
        )
        .await;
    assert_eq!(out.code(), 56, "curl: {}", out.stderr.trim());
    assert_eq!(out.stdout.trim(), "403", "CONNECT to a member's peer port");
}

async fn read_all_bounded(s: &mut TcpStream, what: &str) -> Vec<u8> {
    let mut got = Vec::new();
    match tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut got)).await {
        Ok(_) => got,
        Err(_) => panic!("{what}: the jondo kept the connection open (read so far {got:?})"),
    }
}

async fn socks_exchange(socks: SocketAddr, bytes: &[u8], what: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(socks).await.expect("connect SOCKS");
    s.write_all(bytes).await.expect("send");
    read_all_bounded(&mut s, what).await
}

/// Raw SOCKS clients that are not SOCKS5 CONNECT clients.
async fn malformed_socks(env: &Env) {
    let socks = env.crowd.jondos[0].socks;
    let port = env.origin.http.port().to_be_bytes();
    // SOCKS4 CONNECT: the connection is closed without a grant (0x5a).
    let v4 = [&[4u8, 1][..], &port, &[127, 0, 0, 1], b"user\0"].concat();
    let got = socks_exchange(socks, &v4, "SOCKS4").await;
    assert!(
        !(got.len() >= 2 && got[1] == 0x5a),
        "SOCKS4 was granted: {got:?}"
    );
    assert!(got.len() <= 2, "SOCKS4 got an answer: {got:?}");
    // SOCKS4a (name at the end).
    let v4a = [&[4u8, 1][..], &port, &[0, 0, 0, 1], b"\0localhost\0"].concat();
    let got = socks_exchange(socks, &v4a, "SOCKS4a").await;
    assert!(!(got.len() >= 2 && got[1] == 0x5a), "SOCKS4a: {got:?}");
    // An HTTP request on the SOCKS port.
    let got = socks_exchange(socks, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP on SOCKS").await;
    assert!(got.len() <= 2, "HTTP on the SOCKS port got {got:?}");
    // A SOCKS5 greeting offering no method at all.
    let got = socks_exchange(socks, &[5, 0], "no methods").await;
    assert!(
        got.is_empty() || got == [5, 0xff],
        "a greeting without methods: {got:?}"
    );
    // Unsupported commands: BIND (2) and UDP ASSOCIATE (3) get reply code 7.
    for cmd in [2u8, 3] {
        let req = [&[5u8, 1, 0, 5, cmd, 0, 1, 127, 0, 0, 1][..], &port].concat();
        let got = socks_exchange(socks, &req, &format!("command {cmd}")).await;
        assert!(got.len() >= 4, "command {cmd}: {got:?}");
        assert_eq!(got[..2], [5, 0], "method choice for command {cmd}");
        assert_eq!(got[2..4], [5, 7], "command {cmd}: command not supported");
    }
    // An unknown address type (ATYP 9): an error reply, never success.
    let req = [5u8, 1, 0, 5, 1, 0, 9, 1, 2, 3, 4];
    let got = socks_exchange(socks, &req, "address type 9").await;
    assert!(
        got.len() < 4 || got[3] != 0,
        "unknown address type answered success: {got:?}"
    );
    // A client that stops halfway does not hurt: the proxy still works.
    let mut s = TcpStream::connect(socks).await.expect("connect");
    s.write_all(&[5, 1]).await.expect("half a greeting");
    drop(s);
    let out = env
        .curl(
            "curl-socks-after-garbage",
            &[
                "--socks5-hostname",
                &socks.to_string(),
                &env.origin.url("/whoami?after-garbage"),
            ],
        )
        .await;
    out.assert_ok("SOCKS after malformed clients");
}

const PY_CLIENT: &str = r#"
import hashlib, json, os, sys
import requests

proxy, socks, ca = os.environ["PROXY"], os.environ["SOCKS"], os.environ["CA"]
http_url, https_url = os.environ["HTTP_URL"], os.environ["HTTPS_URL"]
upload_url, whoami = os.environ["UPLOAD_URL"], os.environ["WHOAMI_URL"]
out = {}
s = requests.Session()
s.trust_env = False
px = {"http": "http://" + proxy, "https": "http://" + proxy}

def digest(r):
    return [r.status_code, hashlib.sha256(r.content).hexdigest(), len(r.content)]

out["http"] = digest(s.get(http_url, proxies=px, timeout=60))
out["https"] = digest(s.get(https_url, proxies=px, verify=ca, timeout=60))
out["whoami"] = s.get(whoami, proxies=px, timeout=60).text.strip()
# A fresh session: requests 2.28 would reuse the pooled connection verified above.
fresh = requests.Session()
fresh.trust_env = False
try:
    fresh.get(https_url, proxies=px, timeout=60)
    out["https_default_trust"] = "accepted"
except requests.exceptions.SSLError:
    out["https_default_trust"] = "SSLError"

def body():
    for i in range(64):
        yield bytes([i]) * 65536 + b"tail"
h = hashlib.sha256()
n = 0
for c in body():
    h.update(c)
    n += len(c)
r = s.post(upload_url, data=body(), proxies=px, timeout=60)
out["upload"] = [r.status_code, r.text.strip(), "%s %d" % (h.hexdigest(), n)]

try:
    import socks as _pysocks
    sp = {"http": "socks5h://" + socks, "https": "socks5h://" + socks}
    out["socks_http"] = digest(s.get(http_url.replace("127.0.0.1", "localhost"), proxies=sp, timeout=60))
    out["socks_https"] = digest(s.get(https_url, proxies=sp, verify=ca, timeout=60))
except ImportError:
    out["socks_http"] = "no PySocks"
print(json.dumps(out))
"#;

/// Python `requests` through the HTTP proxy (http, https with the CA bundle, a
/// chunked upload from a generator) and through SOCKS5 (`socks5h://`, PySocks).
async fn python_requests(env: &Env) {
    let (has_requests, has_socks) = python_modules();
    assert!(
        has_requests,
        "Debian's python3-requests is needed ({PYTHON} -c 'import requests' failed): \
         apt-get install -y python3-requests python3-socks"
    );
    let len = 5 * MIB + 17;
    let j = &env.crowd.jondos[1];
    let mut cmd = std::process::Command::new(PYTHON);
    cmd.args(["-c", PY_CLIENT])
        .env("PROXY", j.proxy.to_string())
        .env("SOCKS", j.socks.to_string())
        .env("CA", &env.ca.ca_pem)
        .env("HTTP_URL", env.origin.url(&format!("/blob/{len}")))
        .env(
            "HTTPS_URL",
            env.origin.https_url(&format!("/blob/{len}?tls")),
        )
        .env("UPLOAD_URL", env.origin.url("/upload?python"))
        .env("WHOAMI_URL", env.origin.url("/whoami?python"));
    let mut tool = Tool::spawn("python-requests", &mut cmd, env.dir());
    let out = tool.finish(CLIENT_TIMEOUT).await;
    out.assert_ok("the Python requests client");
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("python printed no JSON ({e}): {}", out.stdout));
    let want = serde_json::json!([200, expected_sha(len), len]);
    assert_eq!(v["http"], want, "requests over http: {v}");
    assert_eq!(v["https"], want, "requests over https: {v}");
    assert_eq!(v["https_default_trust"], "SSLError", "{v}");
    let exit = v["whoami"]
        .as_str()
        .expect("whoami")
        .parse()
        .expect("an IP");
    assert_member(&env.crowd, exit, "requests");
    let up = &v["upload"];
    assert_eq!(up[0], 200, "{v}");
    assert_eq!(up[1], up[2], "the chunked upload from requests: {v}");
    let hit = &env.origin.hits_for("/upload?python")[0];
    assert_eq!(hit.ip, exit);
    if has_socks {
        assert_eq!(v["socks_http"], want, "requests over socks5h: {v}");
        assert_eq!(v["socks_https"], want, "requests over socks5h, TLS: {v}");
    } else {
        eprintln!("python3-socks is not installed: SOCKS5 checked with curl only");
    }
}

/// An origin that closes the connection halfway through a Content-Length body: curl
/// must fail (18: partial file, or 56: receive error), also through a CONNECT tunnel.
/// An origin that resets the connection there: never a success either. The reset may
/// overtake the head, so a 502 from the exit is a correct answer too, and so is curl's
/// 52 ("empty reply"): the initiator's HTTP/1 server closes the connection when the
/// body fails, and if head and failure arrive together the head is never flushed.
async fn server_cut_mid_body(env: &Env) {
    let len = 4 * MIB;
    for (i, kind, tunnel) in [
        (0usize, "cut", false),
        (2, "cut", false),
        (3, "cut", true),
        (0, "reset", false),
        (3, "reset", true),
    ] {
        let name = format!("curl-{kind}-{i}{}", if tunnel { "-tunnel" } else { "" });
        let file = env.out(&format!("{name}.bin"));
        let mut rest = vec!["-o", &file, "-w", "%{http_code} %{size_download}"];
        if tunnel {
            rest.push("--proxytunnel");
        }
        let url = env.raw.url(&format!("/{kind}/{len}?{name}"));
        rest.push(&url);
        let out = env.curl_via(&name, i, &rest).await;
        let got = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        let report = format!(
            "{name}: curl exit {} after {:?}; -w {:?}; stderr {}",
            out.code(),
            out.elapsed,
            out.stdout,
            out.stderr.trim()
        );
        eprintln!("{report}");
        if kind == "cut" {
            assert!(
                matches!(out.code(), 18 | 56),
                "curl must report the cut body as an error (18 or 56): {report}"
            );
        } else {
            assert!(
                matches!(out.code(), 18 | 52 | 56)
                    || (out.status.success() && out.stdout.starts_with("502 ")),
                "a reset must reach curl as an error or a 502: {report}"
            );
        }
        assert!(got < len, "{name}: {got} bytes of a cut {len}-byte body");
    }
    for (ip, line) in env.raw.seen() {
        assert_member(&env.crowd, ip, &line);
    }
}

/// A large slow download; every jondo but the initiator is killed while it runs: curl
/// must fail within a bounded time, never succeed with a short body.
async fn path_killed_mid_transfer(env: &mut Env) {
    let probes = probe_paths(&env.crowd, &env.origin).await;
    // An initiator whose path leaves it (its exit is another jondo).
    let probe = probes
        .iter()
        .find(|p| p.exit != env.crowd.jondos[p.initiator].peer.ip())
        .or_else(|| probes.iter().find(|p| !p.relays.is_empty()))
        .unwrap_or_else(|| panic!("every path stays inside its initiator: {probes:?}"))
        .clone();
    let i = probe.initiator;
    let len = 64 * MIB;
    let file = env.dir().join("slow.bin");
    let mut a = curl_base(110);
    a.extend(args(&[
        "-x",
        &format!("http://{}", env.crowd.jondos[i].proxy),
        "-o",
        &file.to_string_lossy(),
        &env.origin.url(&format!("/slow/{len}")),
    ]));
    let mut cmd = std::process::Command::new(CURL);
    cmd.args(&a);
    let mut curl = Tool::spawn("curl-slow", &mut cmd, env.dir());
    // Wait (bounded) until the body is flowing.
    let flowing = eventually(
        "the slow download to deliver 256 KiB",
        Duration::from_secs(30),
        || {
            let got = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            async move {
                if got >= 256 * 1024 {
                    Ok(got)
                } else {
                    Err(format!("{got} bytes so far"))
                }
            }
        },
    )
    .await;
    let killed_at = Instant::now();
    for (k, j) in env.crowd.jondos.iter_mut().enumerate() {
        if k != i {
            sigkill(j.proc.pid().expect("running"));
            j.proc.kill();
        }
    }
    let Some(out) = curl.wait(Duration::from_secs(60)).await else {
        let got = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        curl.kill();
        panic!(
            "curl still running 60 s after the path was killed ({got} bytes received; \
             path {probe:?})"
        );
    };
    let got = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "path {probe:?}: killed after {flowing} bytes; curl ended {:?} later with {} ({got} \
         bytes)",
        killed_at.elapsed(),
        out.code()
    );
    assert!(
        !out.status.success(),
        "curl reported success with {got} of {len} bytes after its path was killed"
    );
    assert!(
        matches!(out.code(), 18 | 56),
        "curl should see a broken transfer (18 or 56), got {}: {}",
        out.code(),
        out.stderr.trim()
    );
    assert!(got < len);
    env.crowd.jondos[i].proc.assert_running();
}

/// A member that is not allowed to reach private addresses (the default): CONNECT,
/// GET and SOCKS to loopback are refused with the exit-policy answer (403 to a GET or to
/// plain HTTP over SOCKS, a TLS access_denied alert in an optimistic tunnel), and nothing
/// reaches the origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_policy_refusals_at_a_public_only_exit() {
    require_tool(CURL, "--version");
    let work = tempfile::tempdir().expect("tempdir");
    let origin = WebOrigin::start(None).await;
    let t = Instant::now();
    let crowd = Crowd::builder(KIT, 1).allow_private(false).start().await;
    eprintln!("crowd of 1 formed in {:?}", t.elapsed());
    let j = &crowd.jondos[0];
    let curl = |name: &'static str, rest: Vec<String>| {
        let mut a = curl_base(60);
        a.extend(rest);
        let dir = work.path().to_path_buf();
        async move { run_tool(name, CURL, &a, &dir, CLIENT_TIMEOUT).await }
    };
    let proxy = format!("http://{}", j.proxy);
    // The jondo is optimistic: it answers CONNECT with 200, and its exit's refusal
    // reaches curl's TLS handshake as a fatal access_denied alert (exit 35).
    for (name, target) in [
        ("connect-ip", "https://127.0.0.1:443/"),
        ("connect-name", "https://localhost:443/"),
    ] {
        let out = curl(name, args(&["-x", &proxy, "-w", "%{http_connect}", target])).await;
        assert_eq!(out.code(), 35, "{name}: {}", out.stderr.trim());
        assert_eq!(out.stdout.trim(), "200", "{name}: CONNECT to {target}");
        assert!(
            out.stderr.to_lowercase().contains("alert access denied"),
            "{name}: {}",
            out.stderr
        );
    }
    for (name, target) in [
        ("get-port", origin.url("/whoami?port")),
        ("get-address", "http://127.0.0.1:80/".to_string()),
    ] {
        let out = curl(name, args(&["-x", &proxy, "-w", "\n%{http_code}", &target])).await;
        out.assert_ok(name);
        assert_eq!(
            out.stdout.lines().last(),
            Some("403"),
            "{name}: {}",
            out.stdout
        );
        assert!(
            out.stdout.contains("exit policy"),
            "{name}: the page should say why: {}",
            out.stdout
        );
    }
    // Plain HTTP over SOCKS is served as proxied requests: the exit policy's page.
    let out = curl(
        "socks-name",
        args(&[
            "--socks5-hostname",
            &j.socks.to_string(),
            "-w",
            "\n%{http_code}",
            "http://localhost:443/",
        ]),
    )
    .await;
    out.assert_ok("socks-name");
    assert_eq!(out.stdout.lines().last(), Some("403"), "{}", out.stdout);
    assert!(out.stdout.contains("exit policy"), "{}", out.stdout);
    // A raw SOCKS client that sends nothing after "succeeded" sees the tunnel close.
    let mut s = TcpStream::connect(j.socks).await.expect("connect SOCKS");
    s.write_all(&[5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, 1, 187])
        .await
        .expect("send");
    let got = read_all_bounded(&mut s, "SOCKS to loopback").await;
    assert!(got.len() >= 4, "{got:?}");
    assert_eq!(got[2..4], [5, 0], "optimistic SOCKS reply");
    assert!(origin.hits().is_empty(), "{:?}", origin.hits());
}

/// The idle and server timeouts of the jondos' flags.
const IDLE: Duration = Duration::from_secs(3);
/// The client must see the error well within this.
const STALL_LIMIT: Duration = Duration::from_secs(10);

fn within_timeout(what: &str, elapsed: Duration) {
    assert!(
        elapsed >= IDLE - Duration::from_millis(500) && elapsed < STALL_LIMIT,
        "{what} ended after {elapsed:?}: expected the {IDLE:?} timeout (and under {STALL_LIMIT:?})"
    );
}

/// Opens a tunnel with `CONNECT` (HTTP proxy) or SOCKS5, sends nothing, and returns
/// how long the jondo kept it open.
async fn idle_tunnel(j: &Jondo, target: SocketAddr, socks: bool) -> Duration {
    let mut s;
    if socks {
        s = TcpStream::connect(j.socks).await.expect("connect SOCKS");
        let port = target.port().to_be_bytes();
        s.write_all(&[&[5u8, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1][..], &port].concat())
            .await
            .expect("SOCKS request");
        let mut reply = [0u8; 12];
        tokio::time::timeout(REQUEST_TIMEOUT, s.read_exact(&mut reply))
            .await
            .expect("SOCKS reply in time")
            .expect("SOCKS reply");
        assert_eq!(reply[..4], [5, 0, 5, 0], "SOCKS tunnel opened");
    } else {
        s = TcpStream::connect(j.proxy).await.expect("connect proxy");
        let req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("CONNECT");
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            let n = tokio::time::timeout(REQUEST_TIMEOUT, s.read(&mut b))
                .await
                .expect("CONNECT answer in time")
                .expect("read");
            assert!(n == 1 && head.len() < 4096, "CONNECT answer: {head:?}");
            head.push(b[0]);
        }
        assert!(
            head.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&head)
        );
    }
    let t = Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(STALL_LIMIT * 2, s.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "an idle tunnel ({}) was still open after {:?}",
        if socks { "SOCKS" } else { "CONNECT" },
        STALL_LIMIT * 2
    );
    assert!(rest.is_empty(), "bytes from an idle tunnel: {rest:?}");
    t.elapsed()
}

/// Jondos started with `--idle-timeout 3s --server-timeout 3s`: a server that sends
/// its head and then nothing, or never answers, gives the client an error within
/// seconds; idle tunnels are closed; transfers that keep moving outlive the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_servers_and_idle_tunnels_time_out() {
    require_tool(CURL, "--version");
    let work = tempfile::tempdir().expect("tempdir");
    let origin = WebOrigin::start(None).await;
    let raw = RawOrigin::start().await;
    let t = Instant::now();
    let crowd = Crowd::builder(KIT, 3)
        .jondo_args(&["--idle-timeout", "3s", "--server-timeout", "3s"])
        .start()
        .await;
    eprintln!("crowd of 3 formed in {:?}", t.elapsed());
    let dir = work.path();
    let curl = |name: String, i: usize, rest: Vec<String>| {
        let mut a = curl_base(60);
        a.push("-x".into());
        a.push(format!("http://{}", crowd.jondos[i].proxy));
        a.extend(rest);
        async move { run_tool(&name, CURL, &a, dir, CLIENT_TIMEOUT).await }
    };
    let slow_len = 3 * MIB;
    let slow_url = origin.url(&format!("/slow/{slow_len}"));
    let (head_only, no_answer, slow, slow_tunnel, idle_connect, idle_socks) = tokio::join!(
        curl(
            "stall-body".into(),
            0,
            args(&[
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &raw.url("/headers-then-nothing")
            ]),
        ),
        curl(
            "stall-head".into(),
            1,
            args(&[
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &raw.url("/no-answer")
            ]),
        ),
        curl(
            "slow-plain".into(),
            2,
            args(&["-o", &dir.join("slow.bin").to_string_lossy(), &slow_url]),
        ),
        curl(
            "slow-tunnel".into(),
            0,
            args(&[
                "--proxytunnel",
                "-o",
                &dir.join("slow-tunnel.bin").to_string_lossy(),
                &slow_url,
            ]),
        ),
        idle_tunnel(&crowd.jondos[1], origin.http, false),
        idle_tunnel(&crowd.jondos[2], origin.http, true),
    );
    // Head, then silence: the body fails (curl 18) after the idle timeout.
    eprintln!(
        "stalled body: curl {} after {:?}: {}",
        head_only.code(),
        head_only.elapsed,
        head_only.stderr.trim()
    );
    assert!(
        matches!(head_only.code(), 18 | 56),
        "a body that stalls must fail: {head_only:?}"
    );
    assert_eq!(head_only.stdout.trim(), "200");
    within_timeout("the stalled body", head_only.elapsed);
    // No answer at all: 504 from the exit after the server timeout.
    eprintln!(
        "no answer: HTTP {} after {:?}",
        no_answer.stdout.trim(),
        no_answer.elapsed
    );
    no_answer.assert_ok("curl to a server that never answers");
    assert_eq!(no_answer.stdout.trim(), "504", "{no_answer:?}");
    within_timeout("the unanswered request", no_answer.elapsed);
    // Slow but moving: longer than the idle timeout, still complete.
    for (out, file) in [(&slow, "slow.bin"), (&slow_tunnel, "slow-tunnel.bin")] {
        out.assert_ok("a slow download");
        assert!(
            out.elapsed > IDLE,
            "the slow download should outlast the idle timeout ({:?})",
            out.elapsed
        );
        assert_eq!(
            file_sha(&dir.join(file)),
            (expected_sha(slow_len), slow_len),
            "{file}"
        );
    }
    eprintln!("idle tunnels closed after {idle_connect:?} (CONNECT) and {idle_socks:?} (SOCKS)");
    within_timeout("the idle CONNECT tunnel", idle_connect);
    within_timeout("the idle SOCKS tunnel", idle_socks);
    for (ip, line) in raw.seen() {
        assert_member(&crowd, ip, &line);
    }
}
