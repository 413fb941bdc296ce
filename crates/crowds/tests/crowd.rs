//! A real crowd: one `crowds blender` process and four `crowds jondo` processes on
//! 127.0.0.11–14, checked end to end through the jondos' HTTP proxies against a
//! recording origin server. One crowd is shared by every check (starting one takes a
//! few seconds), each check in its own function so a failure names it.

use crowds_proto::headers::{CROWD_ACCEPT_LANGUAGE, CROWD_USER_AGENT};
use crowds_proto::identity::{PublicKey, SecretKey};
use crowds_testkit::*;
use http_body_util::BodyExt;
use hyper::{header, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// The `crowds` binary these tests run.
const KIT: Kit = Kit::new(env!("CARGO_BIN_EXE_crowds"));

const N: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crowd_of_four_jondo_processes() {
    let started = Instant::now();
    // The last jondo answers tunnels only once its exit has (the others are optimistic).
    let mut crowd = Crowd::builder(KIT, N)
        .jondo_args_for(N - 1, &["--no-optimistic-tunnels"])
        .start()
        .await;
    eprintln!("crowd formed in {:?}", started.elapsed());
    let origin = Origin::start().await;
    let origin2 = Origin::start().await;

    let t = Instant::now();
    status_documents(&crowd).await;
    proxy_edges(&crowd, &origin).await;
    eprintln!("status and proxy edges: {:?}", t.elapsed());
    let t = Instant::now();
    let exits = static_paths_and_keep_alive(&crowd, &origin, &origin2).await;
    eprintln!("static paths: {:?}", t.elapsed());
    let t = Instant::now();
    connect_and_socks_tunnels(&crowd, &origin, &exits).await;
    eprintln!("tunnels: {:?}", t.elapsed());
    let t = Instant::now();
    header_hygiene(&crowd, &origin).await;
    eprintln!("header hygiene: {:?}", t.elapsed());
    let t = Instant::now();
    http_semantics(&crowd, &origin).await;
    eprintln!("HTTP semantics: {:?}", t.elapsed());
    let t = Instant::now();
    byte_exact_bodies(&crowd, &origin).await;
    eprintln!("byte-exact bodies: {:?}", t.elapsed());
    let t = Instant::now();
    concurrent_transfers(&crowd, &origin).await;
    eprintln!("concurrent transfers: {:?}", t.elapsed());
    let t = Instant::now();
    peer_port_refuses_strangers(&mut crowd, &origin).await;
    eprintln!("peer port: {:?}", t.elapsed());
    let t = Instant::now();
    wrong_password_is_refused(&mut crowd, &origin).await;
    eprintln!("wrong password: {:?}", t.elapsed());
    let t = Instant::now();
    exits_refuse_crowd_infrastructure(&crowd).await;
    eprintln!("exit refusals: {:?}", t.elapsed());

    // Nothing above may have changed the crowd or killed a member.
    crowd.blender.assert_running();
    for j in &mut crowd.jondos {
        j.proc.assert_running();
    }
    for s in crowd.statuses().await {
        assert_eq!(s["members"], N, "{s}");
        assert_eq!(s["admitted"], true, "{s}");
    }

    // Life cycle: the blender goes away and comes back; then a member leaves.
    let t = Instant::now();
    blender_outage_and_restart(&mut crowd, &origin).await;
    eprintln!("blender restart: {:?}", t.elapsed());
    let t = Instant::now();
    graceful_leave(&mut crowd, &origin).await;
    eprintln!("graceful leave: {:?}", t.elapsed());
}

/// Exits never connect to the crowd's own peer ports or to the blender's API.
async fn exits_refuse_crowd_infrastructure(crowd: &Crowd) {
    let proxy = crowd.jondos[0].proxy;
    for target in [
        crowd.jondos[2].peer,
        crowd.jondos[0].peer,
        crowd.blender_addr,
    ] {
        let mut client = HttpClient::connect(proxy).await.expect("connect proxy");
        let (status, _, _) = client
            .get(&format!("http://{target}/v1/crowd"), &[])
            .await
            .expect("answer");
        assert_eq!(status, StatusCode::FORBIDDEN, "GET to {target}");
        let (head, _, _) = proxy_connect(proxy, &target.to_string()).await;
        assert!(
            head.starts_with("HTTP/1.1 403"),
            "CONNECT to {target}: {head}"
        );
    }
}

async fn fetch_ok(proxy: SocketAddr, origin: &Origin, tag: &str) -> IpAddr {
    let mut client = HttpClient::connect(proxy).await.expect("connect proxy");
    let (status, text) = client
        .get_text(&origin.url(&format!("/whoami?{tag}")))
        .await;
    assert_eq!(status, StatusCode::OK, "{tag}: {text}");
    text.trim().parse().expect("an IP")
}

/// Without its blender the crowd keeps working on its last document; a restarted
/// blender (same data directory and address) serves the same members in the same epoch
/// from its store (no path is re-formed, which would give collaborators another look),
/// without anyone having to log in again.
async fn blender_outage_and_restart(crowd: &mut Crowd, origin: &Origin) {
    let epoch_before = crowd.statuses().await[0]["epoch"].as_u64().expect("epoch");
    crowd.blender.kill();
    let controls: Vec<SocketAddr> = crowd.jondos.iter().map(|j| j.control).collect();
    eventually(
        "every jondo to notice the blender is gone",
        Duration::from_secs(60),
        || {
            let controls = controls.clone();
            async move {
                for c in controls {
                    let s = status_of(c).await?;
                    if s["blender_reachable"] != false {
                        return Err(format!("{c}: {s}"));
                    }
                }
                Ok(())
            }
        },
    )
    .await;
    for (i, j) in crowd.jondos.iter().enumerate() {
        fetch_ok(j.proxy, origin, &format!("blender-down-{i}")).await;
    }
    let (blender, _) = KIT
        .start_blender_at(
            "blender-restarted",
            crowd.blender_addr,
            &crowd.blender_dir,
            &crowd.dir.path().join("logs"),
            &["--pf", "0.75"],
        )
        .await;
    crowd.blender = blender;
    eventually(
        "every jondo to reach the restarted blender and keep its epoch",
        FORM_TIMEOUT,
        || {
            let controls = controls.clone();
            async move {
                for c in controls {
                    let s = status_of(c).await?;
                    let ok = s["blender_reachable"] == true
                        && s["epoch"].as_u64() == Some(epoch_before)
                        && s["members"] == N
                        && s["admitted"] == true;
                    if !ok {
                        return Err(format!("{c}: {s}"));
                    }
                }
                Ok(())
            }
        },
    )
    .await;
    for (i, j) in crowd.jondos.iter().enumerate() {
        fetch_ok(j.proxy, origin, &format!("blender-back-{i}")).await;
    }
}

/// SIGTERM: the jondo says goodbye and exits cleanly; the blender drops it at the next
/// epoch (long before its heartbeats would time out), and the others route around it.
async fn graceful_leave(crowd: &mut Crowd, origin: &Origin) {
    let leaver = crowd.jondos.pop().expect("a jondo");
    let mut proc = leaver.proc;
    let gone = leaver.peer.ip();
    let asked = Instant::now();
    proc.terminate();
    let status = proc.wait_exit(Duration::from_secs(30)).await;
    assert!(
        status.success(),
        "SIGTERM: exited {status}; {}",
        proc.stderr_tail(5)
    );
    let controls: Vec<SocketAddr> = crowd.jondos.iter().map(|j| j.control).collect();
    eventually(
        "the others to see a crowd without the leaver",
        Duration::from_secs(20),
        || {
            let controls = controls.clone();
            async move {
                for c in controls {
                    let s = status_of(c).await?;
                    if s["members"] != N - 1 || s["admitted"] != true {
                        return Err(format!("{c}: {s}"));
                    }
                }
                Ok(())
            }
        },
    )
    .await;
    eprintln!("the crowd shrank {:?} after SIGTERM", asked.elapsed());
    for (i, j) in crowd.jondos.iter().enumerate() {
        for k in 0..3 {
            let exit = fetch_ok(j.proxy, origin, &format!("after-leave-{i}-{k}")).await;
            assert_ne!(exit, gone, "a request left through the departed member");
        }
    }
}

/// Every jondo holds the same document: same epoch, N members, pf 0.75, distinct ids.
async fn status_documents(crowd: &Crowd) {
    let statuses = crowd.statuses().await;
    let epoch = statuses[0]["epoch"].as_u64().expect("epoch");
    assert!(epoch >= 1, "{}", statuses[0]);
    let mut ids = HashSet::new();
    for s in &statuses {
        assert_eq!(
            s["epoch"].as_u64(),
            Some(epoch),
            "same epoch everywhere: {s}"
        );
        assert_eq!(s["members"], N, "{s}");
        assert_eq!(s["pf"].as_f64(), Some(0.75), "{s}");
        assert_eq!(s["admitted"], true, "{s}");
        assert!(
            ids.insert(s["member_id"].as_u64().expect("member_id")),
            "{s}"
        );
        for k in ["initiated", "relayed", "submitted"] {
            assert!(s["requests"][k].is_u64(), "requests.{k} in {s}");
        }
    }
}

/// The proxy refuses what it cannot carry: origin-form requests, and CONNECT to a
/// target without a port.
async fn proxy_edges(crowd: &Crowd, origin: &Origin) {
    let j = &crowd.jondos[0];
    let (status, _) = direct_get(j.proxy, "/whoami").await.expect("origin-form");
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (head, _, _) = proxy_connect(j.proxy, "127.0.0.1").await;
    assert!(
        head.starts_with("HTTP/1.1 400"),
        "CONNECT without port: {head}"
    );
    assert!(origin.seen().is_empty(), "{:?}", origin.seen());
}

/// Tunnels the jondo at `control` opened for its user since the status `before`.
async fn tunnels_since(control: SocketAddr, before: &serde_json::Value) -> u64 {
    let now = status_of(control).await.expect("status");
    counter(&now, "tunnels_initiated") - counter(before, "tunnels_initiated")
}

fn counter(s: &serde_json::Value, name: &str) -> u64 {
    s["requests"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("requests.{name} in {s}"))
}

/// Each initiator's requests leave the crowd through one exit, whatever the server and
/// the client connection; one client connection carries many requests.
async fn static_paths_and_keep_alive(
    crowd: &Crowd,
    origin: &Origin,
    origin2: &Origin,
) -> Vec<IpAddr> {
    let before = crowd.statuses().await;
    let members: HashSet<IpAddr> = crowd.member_ips().into_iter().collect();
    let mut exits = Vec::new();
    let mut total = 0u64;
    for (i, j) in crowd.jondos.iter().enumerate() {
        let mut seen_ips = Vec::new();
        // Keep-alive: ten requests on one connection to the proxy.
        let mut client = HttpClient::connect(j.proxy).await.expect("connect proxy");
        for k in 0..10 {
            let (status, text) = client
                .get_text(&origin.url(&format!("/whoami?from={i}&n={k}")))
                .await;
            assert_eq!(status, StatusCode::OK, "jondo{i} request {k}: {text}");
            seen_ips.push(text.trim().to_string());
        }
        // Another server, on fresh connections: the same exit.
        for k in 0..5 {
            let mut fresh = HttpClient::connect(j.proxy).await.expect("connect proxy");
            let (status, text) = fresh
                .get_text(&origin2.url(&format!("/whoami?from={i}&n={k}")))
                .await;
            assert_eq!(status, StatusCode::OK, "jondo{i} second origin {k}: {text}");
            seen_ips.push(text.trim().to_string());
        }
        total += 15;
        // What the servers recorded agrees with what they answered.
        for (o, n) in [(origin, 10), (origin2, 5)] {
            let recorded: Vec<String> = o
                .seen()
                .iter()
                .filter(|s| s.path.starts_with(&format!("/whoami?from={i}&")))
                .map(|s| s.ip.to_string())
                .collect();
            assert_eq!(recorded.len(), n, "jondo{i}: {recorded:?}");
            seen_ips.extend(recorded);
        }
        let distinct: HashSet<&String> = seen_ips.iter().collect();
        assert_eq!(
            distinct.len(),
            1,
            "jondo{i}'s requests left through several exits (paths must be static): {seen_ips:?}"
        );
        let exit: IpAddr = seen_ips[0].parse().expect("an IP address");
        assert!(
            members.contains(&exit),
            "jondo{i}'s exit {exit} is not a crowd member ({members:?})"
        );
        exits.push(exit);
    }
    eprintln!("exits per initiator: {exits:?}");
    let after = crowd.statuses().await;
    let mut submitted = 0;
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        assert_eq!(
            counter(a, "initiated") - counter(b, "initiated"),
            15,
            "jondo{i} initiated every request of its user: {a}"
        );
        submitted += counter(a, "submitted") - counter(b, "submitted");
    }
    assert_eq!(submitted, total, "every request was submitted exactly once");
    exits
}

/// Identifying headers never reach the server; harmless ones do; User-Agent and
/// Accept-Language are the crowd's; cookies are stripped (the default). Crowd-control
/// and hop-by-hop headers and cookies from the server never reach the user.
async fn header_hygiene(crowd: &Crowd, origin: &Origin) {
    let j = &crowd.jondos[1];
    let mut client = HttpClient::connect(j.proxy).await.expect("connect proxy");
    let sent = [
        ("Referer", "http://secret.example/private-page"),
        ("From", "secret-user@example.org"),
        ("Via", "1.1 secret-proxy"),
        ("X-Forwarded-For", "10.9.8.7"),
        ("X-Forwarded-Host", "secret.internal"),
        ("X-Forwarded-Proto", "https"),
        ("Forwarded", "for=10.9.8.7;by=secret"),
        ("X-Real-IP", "10.9.8.7"),
        ("Client-IP", "10.9.8.7"),
        ("True-Client-IP", "10.9.8.7"),
        ("Proxy-Authorization", "Basic c2VjcmV0OnNlY3JldA=="),
        ("Proxy-Connection", "keep-alive"),
        ("User-Agent", "Secret/1.0"),
        ("Connection", "X-Secret"),
        ("X-Secret", "1"),
        ("Crowds-Path", "00000000000000aa"),
        ("Accept", "text/plain"),
        ("Accept-Language", "x-secret-dialect"),
        ("DNT", "1"),
        ("Sec-GPC", "1"),
        ("Cookie", "session=secret-session"),
    ];
    let (status, _, body) = client
        .get(&origin.url("/hygiene"), &sent)
        .await
        .expect("hygiene request");
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let seen = origin.seen_path("/hygiene");
    assert_eq!(seen.len(), 1, "{seen:?}");
    let seen = &seen[0];
    for name in [
        "referer",
        "from",
        "via",
        "x-forwarded-for",
        "forwarded",
        "x-real-ip",
        "client-ip",
        "true-client-ip",
        "x-secret",
        "dnt",
        "sec-gpc",
        "cookie",
    ] {
        assert!(
            seen.header(name).is_empty(),
            "{name} reached the server: {seen:?}"
        );
    }
    for (k, v) in &seen.headers {
        for prefix in ["proxy-", "x-forwarded-", "crowds-"] {
            assert!(!k.starts_with(prefix), "{k} reached the server: {seen:?}");
        }
        assert!(
            !k.contains("secret") && !v.to_ascii_lowercase().contains("secret"),
            "identifying data reached the server in {k}: {v}"
        );
        assert!(!v.contains("10.9.8.7"), "{k}: {v}");
    }
    assert_eq!(seen.header("user-agent"), [CROWD_USER_AGENT], "{seen:?}");
    // Accept arrives in its common form for the kind of request (text/plain: "*/*").
    assert_eq!(seen.header("accept"), ["*/*"], "{seen:?}");
    assert_eq!(
        seen.header("accept-language"),
        [CROWD_ACCEPT_LANGUAGE],
        "{seen:?}"
    );
    assert_eq!(seen.header("host"), [origin.addr.to_string()], "{seen:?}");
    assert_eq!(seen.method, "GET");

    // The server's reply: its own headers arrive; a fake crowd error and the headers it
    // names in Connection do not.
    let (status, headers, body) = client
        .get(&origin.url("/spoof"), &[])
        .await
        .expect("spoof request");
    assert_eq!(status, StatusCode::OK, "{headers:?}");
    assert_eq!(&body[..], b"genuine origin page");
    assert!(headers.get("crowds-error").is_none(), "{headers:?}");
    assert!(headers.get("x-hop").is_none(), "{headers:?}");
    assert!(headers.get("set-cookie").is_none(), "{headers:?}");
    assert_eq!(
        headers.get("x-kept").map(|v| v.as_bytes()),
        Some(&b"yes"[..])
    );
}

async fn download(proxy: SocketAddr, url: &str) -> (StatusCode, hyper::HeaderMap, String, u64) {
    let mut client = HttpClient::connect(proxy).await.expect("connect proxy");
    let uri: hyper::Uri = url.parse().expect("uri");
    let req = Request::get(uri.clone())
        .header(header::HOST, uri.authority().expect("authority").as_str())
        .body(empty_body())
        .expect("request");
    let resp = client.send(req).await.expect("response head");
    let (parts, body) = resp.into_parts();
    let (sha, len) = hash_body(body, Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    (parts.status, parts.headers, sha, len)
}

async fn upload(proxy: SocketAddr, url: &str, len: u64, with_length: bool) -> String {
    let mut client = HttpClient::connect(proxy).await.expect("connect proxy");
    let uri: hyper::Uri = url.parse().expect("uri");
    let mut req = Request::post(uri.clone())
        .header(header::HOST, uri.authority().expect("authority").as_str())
        .header(header::CONTENT_TYPE, "application/octet-stream");
    if with_length {
        req = req.header(header::CONTENT_LENGTH, len);
    }
    let body = PatternBody::new(len, 40 * 1024 + 3, with_length).boxed();
    let resp = client
        .send(req.body(body).expect("request"))
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = resp.status();
    let text = tokio::time::timeout(Duration::from_secs(120), resp.into_body().collect())
        .await
        .expect("echo body in time")
        .expect("echo body")
        .to_bytes();
    let text = String::from_utf8_lossy(&text).into_owned();
    assert_eq!(status, StatusCode::OK, "POST {url}: {text}");
    text
}

/// Bodies cross the crowd byte for byte, both ways, with and without Content-Length.
async fn byte_exact_bodies(crowd: &Crowd, origin: &Origin) {
    let proxy = crowd.jondos[2].proxy;
    for (path, len) in [
        ("/blob/1000".to_string(), 1000u64),
        ("/blob/0".to_string(), 0),
        ("/chunked/5242880".to_string(), 5 * 1024 * 1024),
        ("/blob/52428800".to_string(), 50 * 1024 * 1024),
    ] {
        let t = Instant::now();
        let (status, headers, sha, got) = download(proxy, &origin.url(&path)).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {headers:?}");
        assert_eq!(got, len, "GET {path}: length");
        assert_eq!(sha, expected_sha(len), "GET {path}: content");
        if path.starts_with("/blob/") {
            if let Some(cl) = headers.get(header::CONTENT_LENGTH) {
                assert_eq!(cl.to_str().ok(), Some(len.to_string().as_str()), "{path}");
            }
        }
        eprintln!("GET {path}: {:?}", t.elapsed());
    }
    let proxy = crowd.jondos[3].proxy;
    let len = 20 * 1024 * 1024;
    let expected = format!("{} {len}", expected_sha(len));
    for with_length in [true, false] {
        let t = Instant::now();
        let answer = upload(proxy, &origin.url("/echo-sha"), len, with_length).await;
        assert_eq!(
            answer, expected,
            "POST /echo-sha (content-length: {with_length})"
        );
        eprintln!(
            "POST 20 MiB (content-length: {with_length}): {:?}",
            t.elapsed()
        );
    }
    let posts = origin.seen_path("/echo-sha");
    assert_eq!(posts.len(), 2, "{posts:?}");
    for p in &posts {
        assert_eq!(p.method, "POST");
        for cl in p.header("content-length") {
            assert_eq!(cl, len.to_string(), "{p:?}");
        }
    }
}

/// Outcome of a TLS attempt on a peer port.
enum Attempt {
    /// The handshake failed.
    HandshakeFailed(String),
    /// The handshake completed, then the first read failed or found the end.
    ClosedAfterHandshake(String),
    /// The connection works.
    Open(Box<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>),
}

impl std::fmt::Debug for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Attempt::HandshakeFailed(e) => write!(f, "handshake failed: {e}"),
            Attempt::ClosedAfterHandshake(e) => write!(f, "closed after the handshake: {e}"),
            Attempt::Open(_) => f.write_str("open"),
        }
    }
}

async fn tls_attempt(addr: SocketAddr, client: &SecretKey, server: PublicKey) -> Attempt {
    let config = crowds_net::tls::client_config(client, server).expect("client config");
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("TCP connect to the peer port");
    let handshake = tokio::time::timeout(
        Duration::from_secs(15),
        connector.connect(crowds_net::tls::server_name(), tcp),
    )
    .await
    .expect("the handshake ends in time");
    let mut tls = match handshake {
        Ok(tls) => tls,
        Err(e) => return Attempt::HandshakeFailed(e.to_string()),
    };
    // With TLS 1.3 the client finishes first; a refused client learns it on reading.
    // A member's link speaks HTTP/2: the server sends its SETTINGS frame first.
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(15), tls.read(&mut buf)).await {
        Err(_) => panic!("no answer and no close within 15 s on {addr}"),
        Ok(Ok(0)) => Attempt::ClosedAfterHandshake("end of stream".into()),
        Ok(Err(e)) => Attempt::ClosedAfterHandshake(e.to_string()),
        Ok(Ok(_)) => Attempt::Open(Box::new(tls)),
    }
}

/// Peer ports admit only keys of the current crowd document and survive garbage.
async fn peer_port_refuses_strangers(crowd: &mut Crowd, origin: &Origin) {
    let target = &crowd.jondos[0];
    let target_key = target.identity().public();
    let member_key = crowd.jondos[1].identity();

    // A key that is in no document, with the right pinned server key.
    let stranger = SecretKey::generate().expect("key");
    let a = tls_attempt(target.peer, &stranger, target_key).await;
    assert!(
        !matches!(a, Attempt::Open(_)),
        "a stranger got a link: {a:?}"
    );
    eprintln!("stranger: {a:?}");
    // The blender's own key is not a member key either.
    let blender_key =
        crowds_net::files::load_or_create_identity(&crowd.blender_dir).expect("blender key");
    let a = tls_attempt(target.peer, &blender_key, target_key).await;
    assert!(
        !matches!(a, Attempt::Open(_)),
        "the blender key got a link: {a:?}"
    );
    eprintln!("blender key: {a:?}");
    // A member key, but the client pins another server key: the client refuses.
    let a = tls_attempt(target.peer, &member_key, stranger.public()).await;
    assert!(
        matches!(a, Attempt::HandshakeFailed(_)),
        "wrong pin accepted: {a:?}"
    );
    eprintln!("wrong pin: {a:?}");

    // Control: a member's key is admitted, and the link relays requests.
    let before = target.status().await.expect("status");
    let a = tls_attempt(target.peer, &member_key, target_key).await;
    let Attempt::Open(tls) = a else {
        panic!("a member's key was refused: {a:?}")
    };
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("HTTP/2 on the link");
    let conn = tokio::spawn(conn);
    let req = Request::get(origin.url("/whoami?relayed=1"))
        .header("crowds-path", "00000000000000ab")
        .body(empty_body())
        .expect("request");
    let resp = tokio::time::timeout(REQUEST_TIMEOUT, sender.send_request(req))
        .await
        .expect("relayed response in time")
        .expect("relayed response");
    assert_eq!(resp.status(), StatusCode::OK, "{resp:?}");
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let exit: IpAddr = String::from_utf8_lossy(&body)
        .trim()
        .parse()
        .expect("an IP");
    assert!(crowd.member_ips().contains(&exit), "relayed exit {exit}");
    // Without a path id the relayed request is refused as malformed.
    let req = Request::get(origin.url("/whoami?relayed=2"))
        .body(empty_body())
        .expect("request");
    let resp = sender.send_request(req).await.expect("answer");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(origin.seen_path("/whoami?relayed=2").is_empty());
    drop(sender);
    conn.abort();
    let after = target.status().await.expect("status");
    assert!(
        counter(&after, "relayed") > counter(&before, "relayed"),
        "{after}"
    );

    // Garbage on the peer port: the connection is closed, nothing else happens.
    let mut tcp = tokio::net::TcpStream::connect(target.peer)
        .await
        .expect("connect");
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
        .collect();
    let _ = tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let _ = tcp.write_all(&garbage).await;
    let mut buf = vec![0u8; 1024];
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match tokio::time::timeout_at(deadline.into(), tcp.read(&mut buf)).await {
            Err(_) => panic!("the peer port kept a garbage connection open for 15 s"),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            // A TLS alert may come first; then the close.
            Ok(Ok(_)) => continue,
        }
    }
    crowd.jondos[0].proc.assert_running();
    let mut client = HttpClient::connect(crowd.jondos[0].proxy)
        .await
        .expect("connect proxy");
    let (status, text) = client.get_text(&origin.url("/whoami?after-garbage")).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let (status, _) = direct_get(crowd.jondos[0].control, "/status.json")
        .await
        .expect("status");
    assert_eq!(status, StatusCode::OK);
}

/// A jondo with a wrong password (or an unknown account) exits non-zero, saying the
/// blender refused the login; the blender and the crowd carry on.
async fn wrong_password_is_refused(crowd: &mut Crowd, origin: &Origin) {
    KIT.account_add(&crowd.blender_dir, "mallory", "the right password");
    let dir = crowd.dir.path().join("mallory");
    std::fs::create_dir_all(&dir).expect("dir");
    let pw = dir.join("password");
    write_file_mode(&pw, "a wrong password\n", 0o600);
    let logs = crowd.dir.path().join("logs");
    for (name, account) in [("mallory", "mallory"), ("nobody", "no-such-account")] {
        let ip = jondo_ip(N);
        let mut p = KIT.spawn_jondo(&JondoSpec {
            name,
            data_dir: &dir.join("data"),
            blender: crowd.blender_addr,
            blender_key: &crowd.blender_pub,
            account,
            password_file: &pw,
            peer: SocketAddr::new(IpAddr::V4(ip), free_port(ip)),
            proxy: free_local_addr(),
            socks: free_local_addr(),
            control: free_local_addr(),
            allow_private: true,
            extra: &[],
            log_dir: &logs,
        });
        let status = p.wait_exit(Duration::from_secs(30)).await;
        let stderr = p.stderr();
        assert!(
            !status.success(),
            "{name} exited {status}; stderr:\n{stderr}"
        );
        assert!(
            stderr.contains("refused the login"),
            "{name}: stderr does not mention the refusal:\n{stderr}"
        );
        assert!(
            !stderr.contains("a wrong password"),
            "{name}: the password was printed:\n{stderr}"
        );
    }
    crowd.blender.assert_running();
    let mut client = HttpClient::connect(crowd.jondos[3].proxy)
        .await
        .expect("connect proxy");
    let (status, text) = client.get_text(&origin.url("/whoami?after-refusal")).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    for s in crowd.statuses().await {
        assert_eq!(s["members"], N, "a refused login changed the crowd: {s}");
    }
}

/// Reads an HTTP head (up to the blank line) from `s`, byte by byte so that nothing
/// after it is consumed; returns it and the bytes read past it (always none, kept so
/// callers can assert it).
async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    while !buf.ends_with(b"\r\n\r\n") {
        assert!(buf.len() < 64 * 1024, "no end of head in 64 KiB");
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout_at(deadline.into(), s.read(&mut byte))
            .await
            .expect("an HTTP head in time")
            .expect("read an HTTP head");
        assert!(
            n > 0,
            "closed before the end of the head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.push(byte[0]);
    }
    (String::from_utf8_lossy(&buf).into_owned(), Vec::new())
}

/// `CONNECT target` on a proxy port, spoken by hand: the response head, the stream
/// (a tunnel if the head says 200) and bytes already read past the head.
async fn proxy_connect(proxy: SocketAddr, target: &str) -> (String, TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(proxy).await.expect("connect proxy");
    let req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("send CONNECT");
    let (head, rest) = read_head(&mut s).await;
    (head, s, rest)
}

/// A `GET path` with `Connection: close` over a raw byte stream (a tunnel); reads to
/// the end. Returns the response head and body.
async fn get_over<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    host: SocketAddr,
    path: &str,
) -> (String, Vec<u8>) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .await
        .expect("send request in tunnel");
    let (head, mut body) = read_head(s).await;
    tokio::time::timeout(Duration::from_secs(120), s.read_to_end(&mut body))
        .await
        .unwrap_or_else(|_| {
            panic!("the tunnel did not close after the server closed ({path}; head {head:?})")
        })
        .expect("read the body in the tunnel");
    (head, body)
}

/// SOCKS5 greeting (no authentication) and CONNECT request `request` (from ATYP on);
/// returns the stream and the 10-byte reply.
async fn socks_connect(socks: SocketAddr, dest: &[u8]) -> (TcpStream, [u8; 10]) {
    let mut s = TcpStream::connect(socks).await.expect("connect socks");
    s.write_all(&[5, 1, 0]).await.expect("greeting");
    let mut choice = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut choice))
        .await
        .expect("method choice in time")
        .expect("method choice");
    assert_eq!(choice, [5, 0], "no-authentication method chosen");
    let mut req = vec![5, 1, 0];
    req.extend_from_slice(dest);
    s.write_all(&req).await.expect("request");
    let mut reply = [0u8; 10];
    tokio::time::timeout(REQUEST_TIMEOUT, s.read_exact(&mut reply))
        .await
        .expect("SOCKS reply in time")
        .expect("SOCKS reply");
    (s, reply)
}

async fn expect_closed(s: &mut TcpStream, what: &str) {
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut rest))
        .await
        .unwrap_or_else(|_| panic!("{what}: connection not closed"))
        .ok();
}

/// HTTPS-style tunnels: CONNECT on the HTTP proxy and SOCKS5 CONNECT carry bytes
/// exactly, leave through the initiator's exit, and report failures.
async fn connect_and_socks_tunnels(crowd: &Crowd, origin: &Origin, exits: &[IpAddr]) {
    let o = origin.addr;
    // CONNECT on the HTTP proxy.
    let j = &crowd.jondos[0];
    let before = status_of(j.control).await.expect("status");
    let (head, mut tunnel, rest) = proxy_connect(j.proxy, &o.to_string()).await;
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "CONNECT answered {head:?}"
    );
    assert!(rest.is_empty(), "bytes before the server spoke: {rest:?}");
    let (inner, body) = get_over(&mut tunnel, o, "/whoami?via=connect").await;
    assert!(inner.starts_with("HTTP/1.1 200"), "{inner}");
    let ip = String::from_utf8_lossy(&body).trim().to_string();
    assert_eq!(
        ip,
        exits[0].to_string(),
        "CONNECT left through another exit than GETs"
    );
    // A tunnel is a byte pipe: 5 MiB arrive exactly.
    let (head, mut tunnel, _) = proxy_connect(j.proxy, &o.to_string()).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let len = 5 * 1024 * 1024;
    let (inner, body) = get_over(&mut tunnel, o, &format!("/blob/{len}")).await;
    assert!(inner.starts_with("HTTP/1.1 200"), "{inner}");
    assert_eq!(body.len() as u64, len, "tunnelled body length");
    assert_eq!(
        hex(&Sha256::digest(&body)),
        expected_sha(len),
        "tunnelled body"
    );
    // A closed port at the exit. An optimistic jondo has said "connected" already: a TLS
    // client gets a fatal alert (internal_error) at once, then the tunnel closes.
    let closed = free_local_addr();
    let (head, mut tunnel, _) = proxy_connect(j.proxy, &closed.to_string()).await;
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "optimistic CONNECT: {head}"
    );
    let answer = tls_opening_answer(&mut tunnel, REQUEST_TIMEOUT)
        .await
        .expect("the failed tunnel closes");
    assert_eq!(answer, [21, 3, 3, 0, 2, 2, 80], "a TLS alert, then the end");
    // The status counts the three tunnels apart from the requests they carried.
    assert_eq!(
        tunnels_since(j.control, &before).await,
        3,
        "CONNECT tunnels of jondo 0"
    );
    // A jondo that waits for its exit answers a gateway error, not a hang.
    let waiting = &crowd.jondos[N - 1];
    let (head, _, _) = proxy_connect(waiting.proxy, &closed.to_string()).await;
    assert!(
        head.starts_with("HTTP/1.1 502"),
        "CONNECT to a closed port: {head}"
    );
    // It carries bytes exactly like the others.
    let (head, mut tunnel, _) = proxy_connect(waiting.proxy, &o.to_string()).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (inner, body) = get_over(&mut tunnel, o, &format!("/blob/{len}")).await;
    assert!(inner.starts_with("HTTP/1.1 200"), "{inner}");
    assert_eq!(
        hex(&Sha256::digest(&body)),
        expected_sha(len),
        "tunnelled body"
    );

    // SOCKS5 on jondo 1: an IPv4 literal and a name (resolved at the exit).
    let j = &crowd.jondos[1];
    let before = status_of(j.control).await.expect("status");
    let port = o.port().to_be_bytes();
    let ipv4 = [&[1u8, 127, 0, 0, 1][..], &port].concat();
    let name = [&[3u8, 9][..], b"127.0.0.1", &port].concat();
    for (form, dest) in [("IPv4", &ipv4), ("name", &name)] {
        let (mut s, reply) = socks_connect(j.socks, dest).await;
        assert_eq!(reply[..2], [5, 0], "SOCKS CONNECT ({form}) reply {reply:?}");
        let (inner, body) = get_over(&mut s, o, &format!("/whoami?via=socks-{form}")).await;
        assert!(inner.starts_with("HTTP/1.1 200"), "{inner}");
        let ip = String::from_utf8_lossy(&body).trim().to_string();
        assert_eq!(
            ip,
            exits[1].to_string(),
            "SOCKS ({form}) left through another exit"
        );
    }
    // Only "no authentication" is offered.
    let mut s = TcpStream::connect(j.socks).await.expect("connect socks");
    s.write_all(&[5, 1, 2]).await.expect("greeting");
    let mut choice = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut choice))
        .await
        .expect("answer in time")
        .expect("answer");
    assert_eq!(choice, [5, 0xff]);
    expect_closed(&mut s, "SOCKS without acceptable method").await;
    // BIND is not supported; a closed port is unreachable.
    let mut s = TcpStream::connect(j.socks).await.expect("connect socks");
    s.write_all(&[5, 1, 0]).await.expect("greeting");
    let mut choice = [0u8; 2];
    s.read_exact(&mut choice).await.expect("choice");
    s.write_all(&[&[5u8, 2, 0][..], &ipv4].concat())
        .await
        .expect("BIND");
    let mut reply = [0u8; 10];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut reply))
        .await
        .expect("reply in time")
        .expect("reply");
    assert_eq!(reply[..2], [5, 7], "BIND: command not supported");
    let closed_port = free_local_addr().port().to_be_bytes();
    let closed_dest = [&[1u8, 127, 0, 0, 1][..], &closed_port].concat();
    // An optimistic jondo has replied "succeeded": the TLS client gets the alert.
    let (mut s, reply) = socks_connect(j.socks, &closed_dest).await;
    assert_eq!(reply[..2], [5, 0], "optimistic SOCKS reply {reply:?}");
    let answer = tls_opening_answer(&mut s, REQUEST_TIMEOUT)
        .await
        .expect("the failed tunnel closes");
    assert_eq!(answer, [21, 3, 3, 0, 2, 2, 80], "a TLS alert, then the end");
    // Three SOCKS tunnels were opened; the refused greeting and BIND never became one.
    assert_eq!(
        tunnels_since(j.control, &before).await,
        3,
        "SOCKS tunnels of jondo 1"
    );
    // A jondo that waits for its exit replies "host unreachable".
    let (_, reply) = socks_connect(waiting.socks, &closed_dest).await;
    assert_eq!(
        reply[..2],
        [5, 4],
        "SOCKS CONNECT to a closed port: host unreachable"
    );
    // SOCKS4 is refused without a success reply.
    let mut s = TcpStream::connect(j.socks).await.expect("connect socks");
    let mut v4 = vec![4u8, 1];
    v4.extend_from_slice(&port);
    v4.extend_from_slice(&[127, 0, 0, 1, 0]);
    s.write_all(&v4).await.expect("SOCKS4 request");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut answer))
        .await
        .expect("SOCKS4 connection closed in time")
        .ok();
    assert!(
        !(answer.len() >= 2 && answer[1] == 0x5a),
        "SOCKS4 was granted: {answer:?}"
    );
    assert!(origin.seen_path("/whoami?via=socks4").is_empty());
}

/// Reads one HTTP/1.1 response with a Content-Length body from a raw stream.
async fn read_response<S: AsyncRead + Unpin>(s: &mut S) -> (String, Vec<u8>) {
    let (head, mut body) = read_head(s).await;
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no content-length in {head:?}"));
    while body.len() < len {
        let mut chunk = vec![0u8; len - body.len()];
        let n = tokio::time::timeout(REQUEST_TIMEOUT, s.read(&mut chunk))
            .await
            .expect("body in time")
            .expect("read body");
        assert!(n > 0, "closed inside the body of {head:?}");
        body.extend_from_slice(&chunk[..n]);
    }
    (head, body)
}

/// HTTP/1.1 as browsers and tools use it: bodiless responses on kept-alive
/// connections, pipelining, `Expect: 100-continue`, limits, and bodies that die.
async fn http_semantics(crowd: &Crowd, origin: &Origin) {
    let j = &crowd.jondos[1];
    // HEAD, 304 and 204 carry no body; the next response on the connection is intact.
    let mut client = HttpClient::connect(j.proxy).await.expect("connect proxy");
    let req = Request::head(origin.url("/blob/1000"))
        .header(header::HOST, origin.addr.to_string())
        .body(empty_body())
        .expect("request");
    let resp = client.send(req).await.expect("HEAD");
    assert_eq!(resp.status(), StatusCode::OK);
    if let Some(cl) = resp.headers().get(header::CONTENT_LENGTH) {
        assert_eq!(cl, "1000", "HEAD keeps the length of the GET");
    }
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("HEAD body")
        .to_bytes();
    assert!(
        body.is_empty(),
        "a HEAD response carried {} bytes",
        body.len()
    );
    for (path, want) in [
        ("/not-modified", StatusCode::NOT_MODIFIED),
        ("/no-content", StatusCode::NO_CONTENT),
        ("/whoami?after-head", StatusCode::OK),
    ] {
        let (status, headers, body) = client.get(&origin.url(path), &[]).await.expect(path);
        assert_eq!(status, want, "{path}: {headers:?}");
        if want == StatusCode::OK {
            let ip: IpAddr = String::from_utf8_lossy(&body).trim().parse().expect("IP");
            assert!(crowd.member_ips().contains(&ip));
        } else {
            assert!(body.is_empty(), "{path} carried a body");
        }
        if want == StatusCode::NOT_MODIFIED {
            assert_eq!(
                headers.get(header::ETAG).map(|v| v.as_bytes()),
                Some(&b"\"v1\""[..])
            );
        }
    }

    // Pipelining: three requests written at once, three answers in order.
    let mut tcp = TcpStream::connect(j.proxy).await.expect("connect proxy");
    let o = origin.addr;
    let pipelined = format!(
        "GET http://{o}/blob/100?pipe=1 HTTP/1.1\r\nHost: {o}\r\n\r\n\
         GET http://{o}/blob/200?pipe=2 HTTP/1.1\r\nHost: {o}\r\n\r\n\
         GET http://{o}/blob/300?pipe=3 HTTP/1.1\r\nHost: {o}\r\n\r\n"
    );
    tcp.write_all(pipelined.as_bytes()).await.expect("pipeline");
    for len in [100usize, 200, 300] {
        let (head, body) = read_response(&mut tcp).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body.len(), len, "pipelined answers out of order: {head}");
        assert_eq!(hex(&Sha256::digest(&body)), expected_sha(len as u64));
    }

    // Expect: 100-continue (curl sends it for uploads over 1 MiB).
    let mut tcp = TcpStream::connect(j.proxy).await.expect("connect proxy");
    let head = format!(
        "POST http://{o}/echo-sha?expect=1 HTTP/1.1\r\nHost: {o}\r\n\
         Content-Length: 4096\r\nExpect: 100-continue\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.expect("head");
    let continued = tokio::time::timeout(Duration::from_secs(10), read_head(&mut tcp)).await;
    let body: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    match continued {
        Ok((interim, rest)) => {
            assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");
            assert!(rest.is_empty());
        }
        Err(_) => panic!("no 100 Continue within 10 s for Expect: 100-continue"),
    }
    tcp.write_all(&body).await.expect("body");
    let (head, answer) = read_response(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(
        String::from_utf8_lossy(&answer),
        format!("{} 4096", hex(&Sha256::digest(&body)))
    );

    // A server dying mid-body must not look like a complete (shorter) response.
    for path in ["/truncated/2000000", "/truncated-chunked/2000000"] {
        let mut client = HttpClient::connect(j.proxy).await.expect("connect proxy");
        let uri: hyper::Uri = origin.url(path).parse().expect("uri");
        let req = Request::get(uri)
            .header(header::HOST, o.to_string())
            .body(empty_body())
            .expect("request");
        match client.send(req).await {
            Err(e) => eprintln!("{path}: failed before the body: {e}"),
            Ok(resp) => {
                let result = hash_body(resp.into_body(), Duration::from_secs(60)).await;
                assert!(
                    result.is_err(),
                    "{path}: a truncated body arrived as a complete response: {result:?}"
                );
            }
        }
    }

    // A client dying mid-upload must not deliver a complete (shorter) body.
    for (id, chunked) in [("cut-chunked", true), ("cut-length", false)] {
        // Wait until the origin is receiving, then vanish.
        drop(start_partial_upload(j.proxy, origin, id, chunked, 8).await);
        assert_upload_cut(origin, id).await;
    }

    // Refusals, before anything reaches the server.
    let seen_before = origin.seen().len();
    for url in [
        format!("https://{o}/whoami"),
        format!("http://user:secret@{o}/whoami"),
        format!("ftp://{o}/whoami"),
    ] {
        let mut client = HttpClient::connect(j.proxy).await.expect("connect proxy");
        let (status, _, _) = client.get(&url, &[]).await.expect("answer");
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}");
    }
    assert_eq!(origin.seen().len(), seen_before, "{:?}", origin.seen());
}

/// Many requests at once, from every member, are each delivered exactly.
async fn concurrent_transfers(crowd: &Crowd, origin: &Origin) {
    let mut tasks = Vec::new();
    for k in 0..16u64 {
        let proxy = crowd.jondos[k as usize % crowd.jondos.len()].proxy;
        let len = 1024 * 1024 + k * 4099;
        let url = origin.url(&format!("/blob/{len}"));
        tasks.push(tokio::spawn(async move {
            let (status, _, sha, got) = download(proxy, &url).await;
            (status, sha, got, len)
        }));
    }
    for t in tasks {
        let (status, sha, got, len) = t.await.expect("download task");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            (got, sha),
            (len, expected_sha(len)),
            "concurrent download of {len}"
        );
    }
}

/// Far more than any sane buffering along a path (kernel socket buffers on loopback
/// included) and far less than the bodies below.
const BACKPRESSURE_LIMIT: u64 = 96 * 1024 * 1024;
const HUGE: u64 = 1024 * 1024 * 1024;

/// A client that stops reading stops the server, and a server that stops reading stops
/// the client: bodies are streamed with bounded buffers along the whole path, never
/// accumulated in a jondo (a slow reader must not be able to make its jondo, or any
/// jondo on the path, hold a whole response in memory).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_readers_and_writers_meet_backpressure() {
    let crowd = Crowd::start(KIT, 2).await;
    let origin = Origin::start().await;
    let rss = |crowd: &Crowd| -> Vec<u64> {
        crowd
            .jondos
            .iter()
            .map(|j| j.proc.rss_kib().unwrap_or(0) / 1024)
            .collect()
    };

    // Download, then stop reading after 1 MiB.
    let mut client = HttpClient::connect(crowd.jondos[0].proxy)
        .await
        .expect("connect proxy");
    let uri: hyper::Uri = origin
        .url(&format!("/slow-blob/{HUGE}"))
        .parse()
        .expect("uri");
    let req = Request::get(uri)
        .header(header::HOST, origin.addr.to_string())
        .body(empty_body())
        .expect("request");
    let resp = client.send(req).await.expect("response head");
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut read = 0u64;
    while read < 1024 * 1024 {
        let frame = tokio::time::timeout(REQUEST_TIMEOUT, body.frame())
            .await
            .expect("a frame in time")
            .expect("more body")
            .expect("body frame");
        read += frame.into_data().map(|d| d.len() as u64).unwrap_or(0);
    }
    // The server must stall well short of the whole body: poll until its output has
    // not moved for two seconds (bounded by a deadline).
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut last, mut since) = (origin.slow_produced(), Instant::now());
    loop {
        let now = origin.slow_produced();
        assert!(
            now < BACKPRESSURE_LIMIT,
            "the server produced {} MiB for a client that read {} MiB: a jondo buffers the \
             response (jondo RSS in MiB: {:?})",
            now >> 20,
            read >> 20,
            rss(&crowd)
        );
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() > Duration::from_secs(2) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server never stalled ({now} bytes)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "download: the server stalled at {} MiB for a client that read {} MiB; RSS {:?} MiB",
        last >> 20,
        read >> 20,
        rss(&crowd)
    );
    drop(body);
    drop(client);

    // Upload to a server that never reads: the client's writes must block.
    let o = origin.addr;
    let mut tcp = TcpStream::connect(crowd.jondos[1].proxy)
        .await
        .expect("connect proxy");
    let head =
        format!("POST http://{o}/hold HTTP/1.1\r\nHost: {o}\r\nContent-Length: {HUGE}\r\n\r\n");
    tcp.write_all(head.as_bytes()).await.expect("head");
    let chunk = vec![0x5au8; 64 * 1024];
    let mut written = 0u64;
    loop {
        assert!(
            written < BACKPRESSURE_LIMIT,
            "the crowd accepted {} MiB of a body the server does not read (jondo RSS in MiB: \
             {:?})",
            written >> 20,
            rss(&crowd)
        );
        match tokio::time::timeout(Duration::from_secs(2), tcp.write_all(&chunk)).await {
            Ok(Ok(())) => written += chunk.len() as u64,
            Ok(Err(e)) => panic!("the upload failed after {written} bytes: {e}"),
            Err(_) => break,
        }
    }
    eprintln!(
        "upload: the client blocked after {} MiB; RSS {:?} MiB",
        written >> 20,
        rss(&crowd)
    );
    assert_eq!(origin.seen_path("/hold").len(), 1);
}
