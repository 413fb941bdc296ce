//! A jondo's peer port under a flood from strangers (issue 15, items 4 and 5), on a
//! real crowd of three jondo processes:
//!
//! - one address gets at most `--peer-connections-per-address` connections; the rest
//!   are closed at once;
//! - 1,280 idle connections from 40 addresses (more than the peer port's 1,024 slots)
//!   do not keep a member out: its TLS handshake, made with its real key, completes,
//!   the jondo's open files stay bounded, and browsing through the crowd works;
//! - 300 handshakes with random keys make the jondo fetch the crowd document early at
//!   most once per poll interval (it used to fetch on every one).

use crowds_testkit::web;

use crowds_proto::identity::SecretKey;
use crowds_testkit::*;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};
use web::*;

/// The `crowds` binary these tests run.
const KIT: Kit = Kit::new(env!("CARGO_BIN_EXE_crowds"));

const N: usize = 3;
/// The per-address cap the target jondo runs with (the default is 32).
const PER_ADDRESS: usize = 32;
/// Flooding addresses and connections from each.
const FLOOD_ADDRESSES: u8 = 40;

/// Open files of process `pid`.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}"))
        .count()
}

/// An idle TCP connection to `to` from `from` (a 127.0.0.x address).
async fn idle_connection(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(from), 0))?;
    socket.connect(to).await
}

/// Whether the jondo closed `stream` within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(within, stream.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// A TLS handshake with the jondo at `addr` (key `server`) as `identity`: Ok if the
/// jondo accepted it and answered.
async fn handshake(
    identity: &SecretKey,
    server: &SecretKey,
    addr: SocketAddr,
) -> Result<(), String> {
    let config = crowds_net::tls::client_config(identity, server.public())
        .map_err(|e| format!("client config: {e}"))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    connector
        .connect(crowds_net::tls::server_name(), tcp)
        .await
        .map(drop)
        .map_err(|e| format!("handshake: {e}"))
}

async fn handshakes_refused(control: SocketAddr) -> u64 {
    let s = status_of(control).await.expect("status.json");
    s["handshakes"]["refused"]
        .as_u64()
        .unwrap_or_else(|| panic!("no handshakes.refused in {s}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn strangers_cannot_lock_members_out_of_the_peer_port() {
    let origin = Origin::start().await;
    let per_address = PER_ADDRESS.to_string();
    let crowd = Crowd::builder(KIT, N)
        .jondo_args(&["--peer-connections-per-address", &per_address])
        .start()
        .await;
    let target = &crowd.jondos[0];
    let target_key = target.identity();
    let member_key = crowd.jondos[1].identity();
    let pid = target.proc.pid().expect("target running");

    // One address: its share, and not one connection more.
    let one = Ipv4Addr::new(127, 0, 0, 99);
    let mut held = Vec::new();
    for _ in 0..PER_ADDRESS {
        held.push(idle_connection(one, target.peer).await.expect("connect"));
    }
    let refused_before = counter(target.control, "peer_refused_per_address").await;
    let mut extra = Vec::new();
    for _ in 0..8 {
        extra.push(idle_connection(one, target.peer).await.expect("connect"));
    }
    for s in &mut extra {
        assert!(
            closed_within(s, Duration::from_secs(5)).await,
            "a connection over the per-address cap stayed open"
        );
    }
    assert_eq!(
        counter(target.control, "peer_refused_per_address").await - refused_before,
        8
    );
    drop(held);

    // The flood: more idle connections than the peer port has slots.
    let started = Instant::now();
    // All at once, as a flood does: the handshakes of the first ones are still pending
    // when the last ones arrive.
    let peer = target.peer;
    let tasks: Vec<_> = (0..FLOOD_ADDRESSES)
        .map(|a| {
            tokio::spawn(async move {
                let from = Ipv4Addr::new(127, 0, 1, 10 + a);
                let mut mine = Vec::new();
                for _ in 0..PER_ADDRESS {
                    if let Ok(s) = idle_connection(from, peer).await {
                        mine.push(s);
                    }
                }
                mine
            })
        })
        .collect();
    let mut flood = Vec::new();
    for t in tasks {
        flood.extend(t.await.expect("flood task"));
    }
    assert!(
        flood.len() > 1024,
        "only {} flood connections opened",
        flood.len()
    );
    let fds = fd_count(pid);
    eprintln!(
        "flood: {} idle connections from {FLOOD_ADDRESSES} addresses in {:?}; target held {fds} open files",
        flood.len(),
        started.elapsed()
    );
    assert!(
        fds < 600,
        "the target holds {fds} open files under a flood of {} idle connections",
        flood.len()
    );
    // A member still gets in, promptly.
    let t = Instant::now();
    tokio::time::timeout(
        Duration::from_secs(60),
        handshake(&member_key, &target_key, target.peer),
    )
    .await
    .expect("a member's handshake during the flood did not finish within 60 s")
    .expect("a member's handshake during the flood");
    eprintln!(
        "a member waited {:?} for its handshake during the flood",
        t.elapsed()
    );
    assert!(counter(target.control, "peer_handshakes_evicted").await > 0);
    // And the crowd carries requests from every member (paths may cross the target).
    for j in &crowd.jondos {
        let (status, _) = HttpClient::connect(j.proxy)
            .await
            .expect("proxy")
            .get_text(&format!("http://{}/whoami", origin.addr))
            .await;
        assert_eq!(status, 200, "browsing during the flood");
    }
    drop(flood);

    // Amplification: handshakes with random keys ask for early document fetches.
    let fetches_before = counter(target.control, "document_fetches").await;
    let refused_before = handshakes_refused(target.control).await;
    let t = Instant::now();
    for _ in 0..300 {
        let stranger = SecretKey::generate().expect("key");
        // The client side may finish before the jondo refuses the key: either is fine.
        let _ = handshake(&stranger, &target_key, target.peer).await;
    }
    let refused = eventually(
        "the jondo to refuse the strangers",
        Duration::from_secs(20),
        || async {
            let n = handshakes_refused(target.control).await - refused_before;
            (n >= 300).then_some(n).ok_or(format!("{n} refused"))
        },
    )
    .await;
    assert!(refused >= 300);
    let elapsed = t.elapsed();
    let fetches = counter(target.control, "document_fetches").await - fetches_before;
    // One regular fetch per poll interval (1 s here) plus at most one early one.
    let bound = 2 * (elapsed.as_secs() + 1) + 2;
    eprintln!(
        "300 unknown-key handshakes in {elapsed:?}: {fetches} document fetches (bound {bound})"
    );
    assert!(
        fetches <= bound,
        "{fetches} document fetches during 300 unknown-key handshakes in {elapsed:?}"
    );
}
