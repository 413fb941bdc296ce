//! Paths re-form only when they must (issue 13): what a client, a page or a member can do
//! cheaply must not change an initiator's path, and a genuinely dead successor still
//! does. Real jondo processes on 127.0.0.x, a real origin, real TLS links.

use crowds_proto::identity::PublicKey;
use crowds_proto::relay::{ERROR_HEADER, PATH_HEADER};
use crowds_testkit::*;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The `crowds` binary these tests run.
const KIT: Kit = Kit::new(env!("CARGO_BIN_EXE_crowds"));

/// The address the origin saw for a `GET /whoami` through `proxy`: the path's exit.
async fn exit_of(proxy: SocketAddr, origin: &Origin) -> IpAddr {
    let mut client = HttpClient::connect(proxy).await.expect("connect proxy");
    let (status, text) = client.get_text(&origin.url("/whoami")).await;
    assert_eq!(status, 200, "whoami through the crowd: {text}");
    text.trim().parse().expect("an address")
}

/// What the assertions compare before and after an attack: the initiator's counters,
/// the crowd's epoch, and path failures anywhere in the crowd.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    epoch: u64,
    own_path_reforms: u64,
    failures_in_crowd: u64,
}

async fn snapshot(crowd: &Crowd, initiator: usize) -> Snapshot {
    let all = crowd.statuses().await;
    let n = |v: &serde_json::Value| v.as_u64().expect("a counter");
    Snapshot {
        epoch: n(&all[initiator]["epoch"]),
        own_path_reforms: n(&all[initiator]["requests"]["own_path_reforms"]),
        failures_in_crowd: all.iter().map(|s| n(&s["requests"]["path_failures"])).sum(),
    }
}

/// Five uploads the client aborts mid-body (a page's `xhr.abort()`, a user navigating
/// away) and a malformed chunked body: the client gets a clear error for its own broken
/// request, and the initiator's path, its exit and the epoch stay as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_aborts_and_malformed_bodies_do_not_reform_the_path() {
    let crowd = Crowd::start(KIT, 4).await;
    let origin = Origin::start().await;
    let j = &crowd.jondos[0];
    let exit = exit_of(j.proxy, &origin).await;
    let before = snapshot(&crowd, 0).await;

    for i in 0..5 {
        let id = format!("abort-{i}");
        let tcp = start_partial_upload(j.proxy, &origin, &id, i % 2 == 0, 2).await;
        drop(tcp);
        assert_upload_cut(&origin, &id).await;
    }

    // A malformed chunk size after a good chunk: the proxy answers 400 (or closes).
    let mut tcp = start_partial_upload(j.proxy, &origin, "malformed", true, 2).await;
    tcp.write_all(b"zz-not-hex\r\n").await.expect("bad chunk");
    assert_upload_cut(&origin, "malformed").await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), tcp.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "a malformed body must get a clear error, got: {answer}"
    );

    let after = snapshot(&crowd, 0).await;
    assert_eq!(
        after, before,
        "a failure on the client's side changed the path or the crowd"
    );
    assert_eq!(
        exit_of(j.proxy, &origin).await,
        exit,
        "the initiator's exit changed after client-side failures"
    );
    // (`client_failures` counts such requests when the jondo still holds them when the
    // body fails; a client that vanishes may take its request with it first, so the
    // count is not asserted here.)
}

/// The rule's other half: a successor that is really gone (SIGKILL) breaks the hop, the
/// request is retried on a re-formed hop that avoids the dead member, and it succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_successor_still_reforms_the_hop() {
    let mut crowd = Crowd::start(KIT, 5).await;
    let origin = Origin::start().await;
    // Find an initiator whose exit is another member (a path ends at its own jondo
    // with probability of about a fifth, so this takes a try or two; all five do with
    // probability of about 0.0003).
    let mut chosen = None;
    for (i, j) in crowd.jondos.iter().enumerate() {
        let exit = exit_of(j.proxy, &origin).await;
        if exit != j.peer.ip() {
            let victim = crowd
                .jondos
                .iter()
                .position(|k| k.peer.ip() == exit)
                .expect("the exit is a member");
            chosen = Some((i, victim));
            break;
        }
    }
    let (initiator, victim) = chosen.expect("some path ends at another member");
    let before = snapshot(&crowd, initiator).await;
    crowd.jondos[victim].proc.kill();
    let j = &crowd.jondos[initiator];
    // Bodiless requests are retried on the repaired hop; a GET succeeds at once.
    let exit = exit_of(j.proxy, &origin).await;
    assert_ne!(
        exit,
        crowd.jondos[victim].peer.ip(),
        "the dead exit answered"
    );
    let statuses = {
        let mut v = Vec::new();
        for (k, j) in crowd.jondos.iter().enumerate() {
            if k != victim {
                v.push(j.status().await.expect("status"));
            }
        }
        v
    };
    let failures: u64 = statuses
        .iter()
        .map(|s| s["requests"]["path_failures"].as_u64().expect("counter"))
        .sum();
    assert!(
        failures > before.failures_in_crowd,
        "the dead successor was not noticed as a failure"
    );
    // And the repaired path is static again.
    assert_eq!(exit_of(j.proxy, &origin).await, exit);
}

/// A member's key changes: links made with the old key stop relaying at the epoch that
/// publishes the new one, and the old key is refused from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_made_with_an_old_key_close_when_the_key_changes() {
    // Re-keying is a re-join: allowed at once here (the default is once a week).
    let mut crowd = Crowd::start_with(KIT, 3, &["--rejoin-interval", "0s"]).await;
    let victim = &crowd.jondos[0];
    let old_key = crowd.jondos[1].identity();
    let victim_key: PublicKey = victim.identity().public();
    let config = crowds_net::tls::client_config(&old_key, victim_key).expect("tls config");
    let tcp = TcpStream::connect(victim.peer).await.expect("connect");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config.clone()))
        .connect(crowds_net::tls::server_name(), tcp)
        .await
        .expect("the member's handshake succeeds");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("h2");
    let conn = tokio::spawn(conn);
    // The blender's address is refused by every exit's policy: a cheap relayed request
    // that gets a crowd answer without any origin.
    let target = format!("http://{}/", crowd.blender_addr);
    let relayed = |i: u64| {
        hyper::Request::get(&target)
            .header(PATH_HEADER, format!("{:016x}", 0x2000 + i))
            .body(empty_body())
            .expect("request")
    };
    sender.ready().await.expect("ready");
    let resp = sender.send_request(relayed(1)).await.expect("relayed");
    assert!(
        resp.headers().contains_key(ERROR_HEADER),
        "a crowd answer over the old key's link"
    );
    drop(resp);
    let epoch = crowd.statuses().await[0]["epoch"].as_u64().expect("epoch");

    // Jondo 1 gets a new identity key and joins again with it.
    crowd.jondos[1].proc.kill();
    std::fs::remove_file(crowd.jondos[1].data_dir.join("identity.key")).expect("remove key");
    let logs = crowd.dir.path().join("logs");
    let pw_file = crowd.dir.path().join("jondo1.password");
    let j1 = &crowd.jondos[1];
    let proc = KIT.spawn_jondo(&JondoSpec {
        name: "jondo1-rekeyed",
        data_dir: &j1.data_dir,
        blender: crowd.blender_addr,
        blender_key: &crowd.blender_pub,
        account: &j1.account,
        password_file: &pw_file,
        peer: j1.peer,
        proxy: j1.proxy,
        socks: j1.socks,
        control: j1.control,
        allow_private: true,
        extra: &[],
        log_dir: &logs,
    });
    crowd.jondos[1].proc = proc;
    let new_key = crowd.jondos[1].identity().public();
    assert_ne!(new_key, old_key.public());
    let control = crowd.jondos[0].control;
    eventually(
        "the victim to adopt the epoch with the new key",
        FORM_TIMEOUT,
        || async move {
            let s = status_of(control).await?;
            if s["epoch"].as_u64().unwrap_or(0) > epoch && s["members"] == 3 {
                Ok(())
            } else {
                Err(format!("epoch {} members {}", s["epoch"], s["members"]))
            }
        },
    )
    .await;
    // The old link is closed by the victim: its connection task ends.
    let _ended = tokio::time::timeout(Duration::from_secs(30), conn)
        .await
        .expect("the old key's link was not closed")
        .expect("task");
    // And a new handshake with the old key does not get a working link.
    let tcp = TcpStream::connect(crowd.jondos[0].peer)
        .await
        .expect("connect");
    let refused = match tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(crowds_net::tls::server_name(), tcp)
        .await
    {
        Err(_) => true,
        // TLS 1.3: the server checks the client's key after the client has finished;
        // the refusal then arrives as the first read failing.
        Ok(tls) => match hyper::client::conn::http2::handshake::<_, _, ReqBody>(
            TokioExecutor::new(),
            TokioIo::new(tls),
        )
        .await
        {
            Err(_) => true,
            Ok((mut s, c)) => {
                tokio::spawn(c);
                s.ready().await.is_err() || s.send_request(relayed(2)).await.is_err()
            }
        },
    };
    assert!(refused, "the old key still gets a link");
}

/// A newcomer to a crowd that already has an epoch waits for the next scheduled one, and
/// its status says when that is (here: the next full hour).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_is_told_when_it_will_be_admitted() {
    let dir = tempfile::tempdir().expect("tmp");
    let (blender_dir, logs) = (dir.path().join("blender"), dir.path().join("logs"));
    for i in 0..2 {
        KIT.account_add(&blender_dir, &format!("j{i}"), &format!("pw {i}"));
    }
    let addr = free_local_addr();
    let mut cmd = std::process::Command::new(KIT.bin());
    cmd.arg("blender")
        .arg("--data-dir")
        .arg(&blender_dir)
        .args(["--listen", &addr.to_string(), "--join-interval", "1h"]);
    let _blender = Proc::spawn("blender", &mut cmd, &logs);
    let blender_pub = blender_dir.join("blender.pub");
    eventually("blender.pub", Duration::from_secs(30), || {
        let ready = blender_pub.exists();
        async move { ready.then_some(()).ok_or("not yet".to_string()) }
    })
    .await;
    let mut jondos = Vec::new();
    for i in 0..2 {
        let ip = jondo_ip(40 + i);
        let data_dir = dir.path().join(format!("j{i}"));
        let pw_file = dir.path().join(format!("j{i}.password"));
        write_file_mode(&pw_file, &format!("pw {i}\n"), 0o600);
        let control = free_local_addr();
        let proc = KIT.spawn_jondo(&JondoSpec {
            name: &format!("j{i}"),
            data_dir: &data_dir,
            blender: addr,
            blender_key: &blender_pub,
            account: &format!("j{i}"),
            password_file: &pw_file,
            peer: SocketAddr::new(IpAddr::V4(ip), free_port(ip)),
            proxy: free_local_addr(),
            socks: free_local_addr(),
            control,
            allow_private: true,
            extra: &[],
            log_dir: &logs,
        });
        // The first member starts the crowd: its epoch is cut at once.
        if i == 0 {
            eventually(
                "the first member's admission",
                FORM_TIMEOUT,
                || async move {
                    let s = status_of(control).await?;
                    (s["admitted"] == true)
                        .then_some(())
                        .ok_or(format!("admitted {}", s["admitted"]))
                },
            )
            .await;
        }
        jondos.push((proc, control));
    }
    let control = jondos[1].1;
    let expected = eventually(
        "the newcomer's expected admission",
        FORM_TIMEOUT,
        || async move {
            let s = status_of(control).await?;
            s["admission_expected_at_ms"]
                .as_u64()
                .ok_or(format!("not told yet: {s}"))
        },
    )
    .await;
    let now = crowds_net::net::now_ms();
    let hour = 3_600_000;
    assert!(
        expected > now && expected <= now + hour,
        "{expected} vs {now}"
    );
    assert_eq!(expected % hour, 0, "admission at a scheduled time");
    let s = status_of(control).await.expect("status");
    assert_eq!(s["admitted"], false);
    let (_, page) = direct_get(control, "/").await.expect("page");
    assert!(
        String::from_utf8_lossy(&page).contains("only at scheduled epochs"),
        "the status page says when the newcomer will be admitted"
    );
}
