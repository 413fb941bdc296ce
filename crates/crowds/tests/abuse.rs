//! Abuse cases (hardening): slow and half-open clients, a member flooding path set-ups,
//! and password guessing at the blender. Every case checks that the attacker is limited
//! and that honest users are still served.

use crowds_jondo::blender_client::BlenderClient;
use crowds_net::NodeError;
use crowds_proto::identity::PublicKey;
use crowds_proto::relay::{ERROR_HEADER, PATH_HEADER};
use crowds_testkit::*;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// The `crowds` binary these tests run.
const KIT: Kit = Kit::new(env!("CARGO_BIN_EXE_crowds"));

/// 1000 clients that send half a request head and stall must not stop a normal request
/// from being served promptly, on the HTTP proxy and on the SOCKS port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_half_open_clients_do_not_starve_others() {
    let crowd = Crowd::start(KIT, 2).await;
    let origin = Origin::start().await;
    let victim = &crowd.jondos[0];
    let mut stalled = Vec::new();
    for i in 0..1000 {
        let target = if i % 2 == 0 {
            victim.proxy
        } else {
            victim.socks
        };
        let mut s = tokio::net::TcpStream::connect(target)
            .await
            .expect("open a slow connection");
        // Half a request head (or half a SOCKS greeting), then nothing.
        let partial: &[u8] = if i % 2 == 0 {
            b"GET http://x/ HTTP/1.1\r\nHo"
        } else {
            b"\x05"
        };
        s.write_all(partial).await.expect("write partial");
        stalled.push(s);
    }
    let started = Instant::now();
    let mut client = HttpClient::connect(victim.proxy).await.expect("connect");
    let url = format!("http://{}/whoami", origin.addr);
    // A generous deadline: stalled clients that blocked the proxy would hang it forever.
    let (status, _, body) = tokio::time::timeout(REQUEST_TIMEOUT, client.get(&url, &[]))
        .await
        .expect("a normal request is served while 1000 clients stall")
        .expect("request");
    assert_eq!(status, 200, "{body:?}");
    eprintln!("served in {:?} while 1000 clients stall", started.elapsed());
    // And the jondo is still healthy afterwards.
    let status = victim.status().await.expect("status");
    assert_eq!(status["admitted"], true);
    drop(stalled);
}

/// A member that opens thousands of paths through another jondo gets refused beyond
/// the per-predecessor limit, while other users keep being served through that jondo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_flooding_path_setups_is_limited_without_harming_others() {
    let mut crowd = Crowd::start(KIT, 3).await;
    let origin = Origin::start().await;
    // The flooder is a member whose key we hold; its own jondo is stopped, so no honest
    // traffic is relayed by it (a jondo cannot tell a flooder's own requests from those
    // it relays, so honest paths through a flooder share its limit by design).
    crowd.jondos[1].proc.kill();
    let flooder = &crowd.jondos[1];
    let victim = &crowd.jondos[0];
    // The victim's own user has a working path before the flood (a first attempt may
    // pick the stopped flooder and repair the hop, a genuine failure).
    let victim_exit = |origin: &Origin| {
        let (proxy, url) = (victim.proxy, origin.url("/whoami"));
        async move {
            let mut client = HttpClient::connect(proxy).await.expect("connect");
            let (status, text) = client.get_text(&url).await;
            assert_eq!(status, 200, "{text}");
            text
        }
    };
    let exit_before = victim_exit(&origin).await;
    let reforms = |s: serde_json::Value| s["requests"]["own_path_reforms"].as_u64();
    let reforms_before = reforms(victim.status().await.expect("status"));
    // The flooder's own key lets it pass the victim's TLS check, as any member could.
    let key = flooder.identity();
    let victim_key: PublicKey = victim.identity().public();
    let config = crowds_net::tls::client_config(&key, victim_key).expect("tls config");
    let tcp = tokio::net::TcpStream::connect(victim.peer)
        .await
        .expect("connect");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(crowds_net::tls::server_name(), tcp)
        .await
        .expect("a member's handshake succeeds");
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("h2");
    tokio::spawn(conn);
    // Cheap requests: the blender's address is refused by every exit's policy, so no
    // origin is involved; each new path id still costs the victim a table entry.
    let target = format!("http://{}/", crowd.blender_addr);
    // About a third of the set-ups choose the stopped flooder and are forgotten again.
    let total = crowds_proto::path::MAX_PATHS_PER_PREDECESSOR * 2;
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let mut sender = sender.clone();
        let target = target.clone();
        let permit = sem.clone().acquire_owned().await.expect("permit");
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let req = hyper::Request::get(target)
                .header(PATH_HEADER, format!("{:016x}", 0x1000_0000 + i as u64))
                .body(empty_body())
                .expect("request");
            sender.ready().await.ok()?;
            let resp = tokio::time::timeout(Duration::from_secs(60), sender.send_request(req))
                .await
                .ok()?
                .ok()?;
            Some(
                resp.headers()
                    .get(ERROR_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string(),
            )
        }));
    }
    let mut overloaded = 0;
    let mut answered = 0;
    for t in tasks {
        if let Some(kind) = t.await.expect("task") {
            answered += 1;
            if kind == "overloaded" {
                overloaded += 1;
            }
        }
    }
    assert!(
        answered >= total - 10,
        "only {answered} of {total} answered"
    );
    assert!(
        overloaded >= 250,
        "the per-predecessor limit refused only {overloaded} of the {total} path set-ups"
    );
    // The flood did not touch the victim's own path: same exit, no re-formation.
    assert_eq!(victim_exit(&origin).await, exit_before);
    assert_eq!(
        reforms(victim.status().await.expect("status")),
        reforms_before,
        "the flood re-formed the victim's own path"
    );
    // Honest users are still served, through the victim and by the victim. A path that
    // chose the stopped flooder breaks and is repaired, so allow a few attempts.
    for j in [&crowd.jondos[0], &crowd.jondos[2]] {
        let mut last = String::new();
        let mut served = false;
        for _ in 0..6 {
            let mut client = HttpClient::connect(j.proxy).await.expect("connect");
            let (status, _, body) = client
                .get(&format!("http://{}/whoami", origin.addr), &[])
                .await
                .expect("request");
            if status == 200 {
                served = true;
                break;
            }
            last = format!("{status}: {}", String::from_utf8_lossy(&body));
        }
        assert!(served, "an honest user was not served: {last}");
    }
}

/// Password guessing at the blender is slowed (per account and per source address)
/// and logged without the password or the account name; the right password still works
/// once the delay has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_guessing_is_slowed_and_logged_without_secrets() {
    let dir = tempfile::tempdir().expect("tmp");
    let blender_dir = dir.path().join("blender");
    let logs = dir.path().join("logs");
    let secret = "the correct horse battery";
    KIT.account_add(&blender_dir, "victim-account", secret);
    let (blender, addr, pub_path) = KIT.start_blender(&blender_dir, &logs, &[]).await;
    let blender_key = crowds_net::files::read_public_key(&pub_path).expect("key");
    let me = crowds_proto::identity::SecretKey::generate().expect("key");
    let client = BlenderClient::new(vec![addr.to_string()], &me, blender_key).expect("client");
    let peer: SocketAddr = "127.0.0.77:9".parse().expect("addr");
    let guesses = [
        "guess-one",
        "guess-two",
        "guess-three",
        "guess-four",
        "guess-five",
    ];
    for g in guesses {
        match client.join("victim-account", g, peer).await {
            Err(NodeError::LoginRefused) => {}
            other => panic!("a wrong password must be refused, got {other:?}"),
        }
    }
    // The sixth guess, even with the right password, must wait.
    let wait = match client.join("victim-account", secret, peer).await {
        Err(NodeError::JoinTooSoon(d)) => d,
        other => panic!("guessing must be slowed after 5 failures, got {other:?}"),
    };
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_secs(2),
        "{wait:?}"
    );
    // After the delay the right password works (and resets the count).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match client.join("victim-account", secret, peer).await {
            Ok(joined) => {
                assert_eq!(joined.status, "pending");
                break;
            }
            Err(NodeError::JoinTooSoon(_)) if Instant::now() < deadline => {
                tokio::time::sleep(POLL).await;
            }
            other => panic!("the right password must work after the delay: {other:?}"),
        }
    }
    let log = blender.stderr();
    assert!(
        log.contains("refused a login"),
        "refusals are logged:\n{log}"
    );
    for g in guesses.iter().chain([&secret]) {
        assert!(!log.contains(g), "the blender logged a password");
    }
    assert!(
        !log.contains("victim-account"),
        "the blender logged the account name"
    );
}
