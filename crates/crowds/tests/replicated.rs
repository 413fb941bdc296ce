//! Replicated blenders on one PostgreSQL database, and several crowds per blender.
//!
//! Each test starts a private PostgreSQL cluster (initdb + pg_ctl on a loopback port,
//! removed at the end) and real `crowds blender` / `crowds jondo` processes on
//! 127.0.0.0/8. What must hold: two blenders sharing one database and one signing key
//! publish one consistent sequence of epochs (never two documents for one epoch), a
//! jondo fails over to the surviving blender, new members join through it, and no
//! account is lost.

use crowds_testkit::postgres;

use crowds_blender::store::{DatabaseConfig, Store};
use crowds_jondo::blender_client::BlenderClient;
use crowds_proto::document::CrowdDocument;
use crowds_proto::identity::{PublicKey, SecretKey};
use crowds_testkit::*;
use http::{Method, StatusCode};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The `crowds` binary these tests run.
const KIT: Kit = Kit::new(env!("CARGO_BIN_EXE_crowds"));

/// Runs `f` on the shared store, on a plain thread: the `postgres` crate runs its own
/// small runtime, which must not be nested in the test's.
fn with_store<T: Send>(url: &str, dir: &Path, f: impl FnOnce(&mut Store) -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let config = DatabaseConfig {
                url: url.to_string(),
                password: None,
            };
            let mut store =
                Store::open_database(dir, Some(&config)).expect("open the shared store");
            f(&mut store)
        })
        .join()
        .expect("store thread")
    })
}

fn addr_on(ip: Ipv4Addr) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), free_port(ip))
}

/// Every stored document of the default crowd, checked: epochs 1..=last with none
/// missing, each signed by the blender key, each naming its own epoch, issue times
/// increasing. Returns them in order.
fn stored_epochs(url: &str, dir: &Path, key: &PublicKey) -> Vec<CrowdDocument> {
    let stored: Vec<Vec<u8>> = with_store(url, dir, |store| {
        let last = store.counts("default").expect("counts").epoch;
        (1..=last)
            .map(|epoch| {
                store
                    .document("default", epoch)
                    .expect("read")
                    .unwrap_or_else(|| panic!("epoch {epoch} of {last} has no document"))
            })
            .collect()
    });
    let mut docs = Vec::new();
    for (i, bytes) in stored.iter().enumerate() {
        let epoch = i as u64 + 1;
        let doc = CrowdDocument::verify(bytes, key).expect("a stored document verifies");
        assert_eq!(doc.epoch, epoch, "document stored under the wrong epoch");
        if let Some(prev) = docs.last() {
            let prev: &CrowdDocument = prev;
            assert!(
                doc.issued_at >= prev.issued_at,
                "epoch {epoch} issued before {}",
                prev.epoch
            );
        }
        docs.push(doc);
    }
    docs
}

struct Shared {
    /// Kept alive (stopped on drop).
    _cluster: postgres::Cluster,
    url: String,
    dir: tempfile::TempDir,
    blender_dir: PathBuf,
    logs: PathBuf,
}

impl Shared {
    fn new() -> Shared {
        let cluster = postgres::Cluster::start();
        let url = cluster.create_database("crowds");
        let dir = tempfile::Builder::new()
            .prefix("crowds-replicated-")
            .tempdir()
            .expect("tmp");
        Shared {
            blender_dir: dir.path().join("blender"),
            logs: dir.path().join("logs"),
            _cluster: cluster,
            url,
            dir,
        }
    }

    fn add_account(&self, name: &str, password: &str) {
        KIT.account_add_with(
            &self.blender_dir,
            name,
            password,
            &["--database", &self.url],
        );
    }

    /// Starts a blender on the shared database; returns it, `blender.pub` and its
    /// status port.
    async fn blender(&self, name: &str, addr: SocketAddr) -> (Proc, PathBuf, SocketAddr) {
        self.blender_with(name, addr, "4s").await
    }

    /// Like [`Shared::blender`], with another heartbeat timeout.
    async fn blender_with(
        &self,
        name: &str,
        addr: SocketAddr,
        heartbeat_timeout: &str,
    ) -> (Proc, PathBuf, SocketAddr) {
        let IpAddr::V4(ip) = addr.ip() else {
            unreachable!("IPv4 loopback")
        };
        let control = addr_on(ip);
        let control_text = control.to_string();
        let args = [
            "--database",
            self.url.as_str(),
            "--heartbeat-timeout",
            heartbeat_timeout,
            "--control-listen",
            control_text.as_str(),
        ];
        let (p, key) = KIT
            .start_blender_at(name, addr, &self.blender_dir, &self.logs, &args)
            .await;
        (p, key, control)
    }
}

/// A jondo process of the failover test.
struct Jondo {
    proc: Proc,
    control: SocketAddr,
}

fn spawn_member(shared: &Shared, i: u8, blenders: &[SocketAddr], key: &Path) -> Jondo {
    let account = format!("m{i}");
    let password = format!("password of {account}");
    shared.add_account(&account, &password);
    let password_file = shared.dir.path().join(format!("{account}.password"));
    write_file_mode(&password_file, &format!("{password}\n"), 0o600);
    let ip = Ipv4Addr::new(127, 0, 3, 10 + i);
    let ports = [0; 4].map(|_| free_port(ip));
    let at = |p: u16| SocketAddr::new(IpAddr::V4(ip), p);
    let others: Vec<String> = blenders[1..].iter().map(|b| b.to_string()).collect();
    let mut extra = vec!["--heartbeat-interval", "300ms", "--poll-interval", "200ms"];
    for b in &others {
        extra.extend(["--blender", b.as_str()]);
    }
    let data_dir = shared.dir.path().join(&account);
    let proc = KIT.spawn_jondo(&JondoSpec {
        name: &account,
        data_dir: &data_dir,
        blender: blenders[0],
        blender_key: key,
        account: &account,
        password_file: &password_file,
        peer: at(ports[0]),
        proxy: at(ports[1]),
        socks: at(ports[2]),
        control: at(ports[3]),
        allow_private: true,
        extra: &extra,
        log_dir: &shared.logs,
    });
    Jondo {
        proc,
        control: at(ports[3]),
    }
}

async fn wait_members(jondos: &[Jondo], n: usize) {
    eventually(
        &format!("every jondo to see a crowd of {n}"),
        FORM_TIMEOUT,
        || {
            let controls: Vec<SocketAddr> = jondos.iter().map(|j| j.control).collect();
            async move {
                for c in controls {
                    let s = status_of(c).await?;
                    if s["members"] != n || s["admitted"] != true {
                        return Err(format!(
                            "{c}: members {} admitted {}",
                            s["members"], s["admitted"]
                        ));
                    }
                }
                Ok(())
            }
        },
    )
    .await;
}

/// Two blenders on one database: jondos listing both fail over when the one they use
/// is killed, a new member joins through the survivor, the epochs stay one strictly
/// increasing, consistent sequence, and no account is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jondos_fail_over_between_blenders_sharing_one_database() {
    let shared = Shared::new();
    let a = addr_on(Ipv4Addr::new(127, 0, 3, 2));
    let b = addr_on(Ipv4Addr::new(127, 0, 3, 3));
    // The first start creates the signing key; the second blender uses the same one.
    let (mut blender_a, key_path, _) = shared.blender("blender-a", a).await;
    let (_blender_b, _, control_b) = shared.blender("blender-b", b).await;
    let key = crowds_net::files::read_public_key(&key_path).expect("key");
    let mut jondos: Vec<Jondo> = (0..3)
        .map(|i| spawn_member(&shared, i, &[a, b], &key_path))
        .collect();
    wait_members(&jondos, 3).await;

    blender_a.kill();
    // Each jondo notices at its next heartbeat and moves to blender b.
    for (i, j) in jondos.iter().enumerate() {
        eventually(
            &format!("jondo m{i} to fail over to blender b"),
            Duration::from_secs(30),
            || {
                let log = j.proc.stderr();
                async move {
                    if log.contains("failed over to another blender") {
                        Ok(())
                    } else {
                        Err("no failover logged yet".to_string())
                    }
                }
            },
        )
        .await;
    }
    // A newcomer lists the dead blender first: it fails over too, and is admitted.
    jondos.push(spawn_member(&shared, 3, &[a, b], &key_path));
    wait_members(&jondos, 4).await;
    // Their heartbeats reach blender b: for longer than a heartbeat timeout (4 s) every
    // jondo keeps seeing all four members.
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(6) {
        for j in &jondos {
            let s = status_of(j.control).await.expect("jondo status");
            assert_eq!(
                s["members"], 4,
                "a member was dropped while blender a is down"
            );
        }
        tokio::time::sleep(POLL).await;
    }

    // The newcomer's epoch reached the three older members as a delta, not the whole
    // document.
    for j in &jondos[..3] {
        let s = status_of(j.control).await.expect("status");
        assert!(
            s["documents"]["delta"].as_u64().is_some_and(|d| d >= 1),
            "no document delta adopted: {}",
            s["documents"]
        );
    }
    let docs = stored_epochs(&shared.url, &shared.blender_dir, &key);
    let last = docs.last().expect("epochs");
    assert_eq!(
        last.members.len(),
        4,
        "the last epoch lists all four members"
    );
    let status = status_of(control_b).await.expect("blender b status");
    assert_eq!(
        status["epoch"], last.epoch,
        "blender b serves the latest stored epoch"
    );
    assert_eq!(status["database"], "postgres");

    // Restarted, blender a serves the same latest epoch.
    let (_blender_a2, _, control_a2) = shared.blender("blender-a-restart", a).await;
    let served = status_of(control_a2).await.expect("blender a status");
    assert_eq!(
        served["epoch"], last.epoch,
        "a restarted blender serves the latest epoch"
    );
    let names: Vec<String> = with_store(&shared.url, &shared.blender_dir, |store| {
        store
            .list_accounts()
            .expect("list")
            .into_iter()
            .map(|a| a.name)
            .collect()
    });
    assert_eq!(names, ["m0", "m1", "m2", "m3"], "no account lost");
}

/// Many joins at once, half through each blender: one consistent sequence of epochs,
/// each document listing a superset of the previous one (nobody leaves), ending with
/// everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_joins_through_two_blenders_give_one_sequence_of_epochs() {
    const MEMBERS: usize = 32;
    let shared = Shared::new();
    let a = addr_on(Ipv4Addr::new(127, 0, 3, 4));
    let b = addr_on(Ipv4Addr::new(127, 0, 3, 5));
    // A long heartbeat timeout: on a loaded machine the 32 joins may take longer than
    // a short one, and a member dropped while pending would (rightly) get a 403.
    let (_blender_a, key_path, _) = shared.blender_with("blender-a", a, "60s").await;
    let (_blender_b, _, _) = shared.blender_with("blender-b", b, "60s").await;
    let key = crowds_net::files::read_public_key(&key_path).expect("key");
    with_store(&shared.url, &shared.blender_dir, |store| {
        let cheap = argon2::Params::new(8, 1, 1, None).expect("params");
        for i in 0..MEMBERS {
            store
                .add_account_with(&format!("c{i}"), "pw", "default", cheap.clone())
                .expect("account");
        }
    });
    let clients: Vec<BlenderClient> = (0..MEMBERS)
        .map(|i| {
            let me = SecretKey::generate().expect("key");
            let via = if i % 2 == 0 { a } else { b };
            BlenderClient::new(vec![via.to_string()], &me, key).expect("client")
        })
        .collect();
    let joins = clients.iter().enumerate().map(|(i, c)| async move {
        let peer = SocketAddr::from(([127, 0, 3, 200], 10_000 + i as u16));
        c.join(&format!("c{i}"), "pw", peer).await
    });
    for (i, r) in futures_util::future::join_all(joins)
        .await
        .into_iter()
        .enumerate()
    {
        let joined = r.unwrap_or_else(|e| panic!("join c{i}: {e}"));
        assert_eq!(joined.status, "pending");
    }
    // Keep everyone alive until a document lists all of them.
    let deadline = Instant::now() + FORM_TIMEOUT;
    loop {
        let beats = clients
            .iter()
            .map(|c| c.call(Method::POST, "/v1/heartbeat", None, None));
        for r in futures_util::future::join_all(beats).await {
            assert_eq!(r.expect("heartbeat").status, StatusCode::NO_CONTENT);
        }
        let reply = clients[0]
            .call(Method::GET, "/v1/crowd", None, None)
            .await
            .expect("fetch");
        if reply.status == StatusCode::OK {
            let doc = CrowdDocument::verify(&reply.body, &key).expect("verifies");
            if doc.members.len() == MEMBERS {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "not everyone was admitted in time"
        );
        tokio::time::sleep(POLL).await;
    }
    let docs = stored_epochs(&shared.url, &shared.blender_dir, &key);
    for pair in docs.windows(2) {
        let before: Vec<u64> = pair[0].members.iter().map(|m| m.id).collect();
        assert!(
            before.iter().all(|id| pair[1].member(*id).is_some()),
            "epoch {} dropped a member of epoch {}",
            pair[1].epoch,
            pair[0].epoch
        );
    }
    assert_eq!(docs.last().expect("some epoch").members.len(), MEMBERS);
    // Both blenders serve that same last document (each picks it up from the store
    // within a tick).
    let last = docs.last().expect("last").epoch;
    for c in [&clients[0], &clients[1]] {
        eventually(
            "both blenders to serve the last epoch",
            Duration::from_secs(10),
            || {
                let c = c.clone();
                async move {
                    let reply = c
                        .call(Method::GET, "/v1/crowd", None, None)
                        .await
                        .map_err(|e| e.to_string())?;
                    if reply.status != StatusCode::OK {
                        return Err(format!(
                            "{}: {}",
                            reply.status,
                            String::from_utf8_lossy(&reply.body)
                        ));
                    }
                    let doc =
                        CrowdDocument::verify(&reply.body, &key).map_err(|e| e.to_string())?;
                    if doc.epoch == last {
                        Ok(())
                    } else {
                        Err(format!("epoch {}", doc.epoch))
                    }
                }
            },
        )
        .await;
    }
}

/// One blender, two named crowds: each account joins its own crowd, with its own pf,
/// members and documents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_crowds_are_separate() {
    let dir = tempfile::tempdir().expect("tmp");
    let blender_dir = dir.path().join("blender");
    let logs = dir.path().join("logs");
    KIT.account_add(&blender_dir, "fast1", "pw");
    KIT.account_add_with(&blender_dir, "slow1", "pw", &["--crowd", "slow"]);
    KIT.account_add_with(&blender_dir, "slow2", "pw", &["--crowd", "slow"]);
    KIT.account_add_with(&blender_dir, "lost1", "pw", &["--crowd", "unserved"]);
    let addr = addr_on(Ipv4Addr::new(127, 0, 3, 6));
    let (_blender, key_path) = KIT
        .start_blender_at(
            "blender",
            addr,
            &blender_dir,
            &logs,
            &["--crowd", "slow=0.6"],
        )
        .await;
    let key = crowds_net::files::read_public_key(&key_path).expect("key");
    let client = |_: usize| {
        BlenderClient::new(
            vec![addr.to_string()],
            &SecretKey::generate().expect("key"),
            key,
        )
        .expect("client")
    };
    let (f1, s1, s2, l1) = (client(0), client(1), client(2), client(3));
    let peer = |p: u16| SocketAddr::from(([127, 0, 3, 201], p));
    assert_eq!(
        f1.join("fast1", "pw", peer(1))
            .await
            .expect("join")
            .crowd
            .as_deref(),
        Some("default")
    );
    assert_eq!(
        s1.join("slow1", "pw", peer(2))
            .await
            .expect("join")
            .crowd
            .as_deref(),
        Some("slow")
    );
    assert_eq!(
        s2.join("slow2", "pw", peer(3))
            .await
            .expect("join")
            .crowd
            .as_deref(),
        Some("slow")
    );
    let refused = l1.join("lost1", "pw", peer(4)).await;
    assert!(
        refused.is_err(),
        "an account of a crowd this blender does not serve must be refused"
    );
    let fetch = |c: &BlenderClient, path: &'static str| {
        let c = c.clone();
        async move {
            let reply = c
                .call(Method::GET, path, None, None)
                .await
                .map_err(|e| e.to_string())?;
            if reply.status != StatusCode::OK {
                return Err(format!("{path}: {}", reply.status));
            }
            CrowdDocument::verify(&reply.body, &key).map_err(|e| e.to_string())
        }
    };
    let slow = eventually(
        "the slow crowd's first epoch",
        Duration::from_secs(20),
        || {
            let s1 = s1.clone();
            async move {
                s1.call(Method::POST, "/v1/heartbeat", None, None)
                    .await
                    .map_err(|e| e.to_string())?;
                let doc = fetch(&s1, "/v1/crowd").await?;
                if doc.members.len() == 2 {
                    Ok(doc)
                } else {
                    Err(format!("{} members", doc.members.len()))
                }
            }
        },
    )
    .await;
    assert_eq!(slow.crowd, "slow");
    assert_eq!(slow.forward_probability, 0.6);
    let fast = fetch(&f1, "/v1/crowd").await.expect("default crowd");
    assert_eq!(
        (
            fast.crowd.as_str(),
            fast.forward_probability,
            fast.members.len()
        ),
        ("default", 0.75, 1)
    );
    let named = fetch(&s2, "/v1/crowd/slow").await.expect("named");
    assert_eq!(named.members, slow.members);
    // A member of one crowd may not read another crowd's member list.
    let other = fetch(&f1, "/v1/crowd/slow").await;
    assert_eq!(
        other.err().as_deref(),
        Some("/v1/crowd/slow: 403 Forbidden")
    );
    assert!(fetch(&f1, "/v1/crowd/unserved").await.is_err());
}

/// Jondos started without interval flags follow the blender's suggestions (one heartbeat
/// timeout set by the operator scales every member's heartbeats); a jondo given an
/// interval keeps its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jondos_follow_the_blenders_interval_hints_unless_told() {
    let dir = tempfile::tempdir().expect("tmp");
    let blender_dir = dir.path().join("blender");
    let logs = dir.path().join("logs");
    let addr = addr_on(Ipv4Addr::new(127, 0, 3, 7));
    KIT.account_add(&blender_dir, "follower", "pw");
    KIT.account_add(&blender_dir, "own", "pw");
    let (_blender, key_path) = KIT
        .start_blender_at(
            "blender",
            addr,
            &blender_dir,
            &logs,
            &["--heartbeat-timeout", "60s"],
        )
        .await;
    let mut jondos = Vec::new();
    for (i, (account, extra)) in [
        ("follower", &[][..]),
        ("own", &["--poll-interval", "300ms"][..]),
    ]
    .into_iter()
    .enumerate()
    {
        let password_file = dir.path().join(format!("{account}.password"));
        write_file_mode(&password_file, "pw\n", 0o600);
        let ip = Ipv4Addr::new(127, 0, 3, 20 + i as u8);
        let at = |_: usize| SocketAddr::new(IpAddr::V4(ip), free_port(ip));
        let control = at(3);
        let data_dir = dir.path().join(account);
        let proc = KIT.spawn_jondo(&JondoSpec {
            name: account,
            data_dir: &data_dir,
            blender: addr,
            blender_key: &key_path,
            account,
            password_file: &password_file,
            peer: at(0),
            proxy: at(1),
            socks: at(2),
            control,
            allow_private: true,
            extra,
            log_dir: &logs,
        });
        jondos.push((proc, control));
    }
    let expect = [(10_000, 1_000), (5_000, 300)];
    for ((_, control), (heartbeat, poll)) in jondos.iter().zip(expect) {
        let control = *control;
        eventually(
            "the jondo's intervals",
            Duration::from_secs(30),
            || async move {
                let s = status_of(control).await?;
                if s["heartbeat_interval_ms"] == heartbeat && s["poll_interval_ms"] == poll {
                    Ok(())
                } else {
                    Err(format!(
                        "heartbeat {} poll {} (want {heartbeat} {poll})",
                        s["heartbeat_interval_ms"], s["poll_interval_ms"]
                    ))
                }
            },
        )
        .await;
    }
}
