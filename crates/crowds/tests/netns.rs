//! A crowd spread over network namespaces: the blender and an origin server in a hub
//! namespace (a bridge, 10.231.0.1), each jondo in its own namespace on a veth pair
//! (10.231.0.1x). One jondo's namespace drops inbound connections to its peer port
//! (nftables), as a firewall would: the blender must list it client-only, it must say
//! so itself, it can still browse through the others, and it never relays or exits
//! for anyone (the origin never sees its address).
//!
//! Needs root (network namespaces), iproute2, nftables, curl and python3; fails with
//! a clear message where they are missing rather than passing silently.

use crowds_testkit::netns;

use crowds_testkit::*;
use netns::*;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

/// The `crowds` binary these tests run.
const KIT: Kit = Kit::new(env!("CARGO_BIN_EXE_crowds"));

const BLENDER_PORT: u16 = 7000;
const BLENDER_CONTROL_PORT: u16 = 7001;
const ORIGIN_PORT: u16 = 8080;
const PEER_PORT: u16 = 7070;
const PROXY_PORT: u16 = 8118;
const SOCKS_PORT: u16 = 1080;
const CONTROL_PORT: u16 = 8119;
const CURL_TIMEOUT: Duration = Duration::from_secs(30);

/// The origin: answers every GET with the client's address and logs `SEEN IP PATH`.
const ORIGIN_PY: &str = r#"
import sys, http.server, socketserver

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        ip = self.client_address[0]
        sys.stdout.write("SEEN %s %s\n" % (ip, self.path))
        sys.stdout.flush()
        body = (ip + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        pass

class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

server = Server((sys.argv[1], int(sys.argv[2])), Handler)
print("READY", flush=True)
server.serve_forever()
"#;

/// Drops new inbound TCP connections to the peer port.
fn firewall_rules() -> String {
    format!(
        "table inet crwlc_firewall {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    tcp dport {PEER_PORT} ct state new drop\n  }}\n}}\n"
    )
}

async fn status_in(ns: &str) -> Result<serde_json::Value, String> {
    let body = curl(
        ns,
        &[&format!("http://127.0.0.1:{CONTROL_PORT}/status.json")],
        Duration::from_secs(10),
    )
    .await?;
    serde_json::from_str(&body).map_err(|e| format!("status.json: {e}: {body}"))
}

async fn blender_status_in(ns: &str) -> Result<serde_json::Value, String> {
    let body = curl(
        ns,
        &[&format!(
            "http://127.0.0.1:{BLENDER_CONTROL_PORT}/status.json"
        )],
        Duration::from_secs(10),
    )
    .await?;
    serde_json::from_str(&body).map_err(|e| format!("blender status.json: {e}: {body}"))
}

/// `GET /whoami` through the jondo in `ns`: the address the origin saw.
async fn whoami_in(ns: &str, tag: &str) -> Result<Ipv4Addr, String> {
    let body = curl(
        ns,
        &[
            "-x",
            &format!("http://127.0.0.1:{PROXY_PORT}"),
            &format!("http://{HUB_IP}:{ORIGIN_PORT}/whoami?{tag}"),
        ],
        CURL_TIMEOUT,
    )
    .await?;
    body.trim()
        .parse()
        .map_err(|e| format!("not an address ({e}): {body}"))
}

fn spawn_jondo_in(ns: &str, i: usize, dir: &Path, blender_pub: &Path) -> Proc {
    let account = format!("h{i}");
    let pw = dir.join(format!("{account}.password"));
    let mut cmd = Lab::exec(ns, KIT.bin());
    cmd.arg("jondo")
        .arg("--data-dir")
        .arg(dir.join(&account))
        .args(["--blender", &format!("{HUB_IP}:{BLENDER_PORT}")])
        .arg("--blender-key")
        .arg(blender_pub)
        .args(["--account", &account])
        .arg("--password-file")
        .arg(&pw)
        .args(["--peer-listen", &format!("{}:{PEER_PORT}", host_ip(i))])
        .args(["--proxy-listen", &format!("127.0.0.1:{PROXY_PORT}")])
        .args(["--socks-listen", &format!("127.0.0.1:{SOCKS_PORT}")])
        .args(["--control-listen", &format!("127.0.0.1:{CONTROL_PORT}")])
        .args(["--allow-private-destinations"])
        .args(["--heartbeat-interval", "500ms", "--poll-interval", "200ms"]);
    Proc::spawn(&account, &mut cmd, &dir.join("logs"))
}

/// Waits until the jondos in `hosts` are admitted in a crowd of `n`.
async fn wait_crowd(lab: &Lab, hosts: &[usize], n: usize, procs: &mut [Option<Proc>]) {
    let deadline = Instant::now() + FORM_TIMEOUT;
    loop {
        let mut waiting = Vec::new();
        for &h in hosts {
            if let Some(p) = procs[h].as_mut() {
                p.assert_running();
            }
            match status_in(&lab.hosts[h]).await {
                Ok(s) if s["members"] == n && s["admitted"] == true => {}
                Ok(s) => waiting.push(format!(
                    "h{h}: members {} admitted {}",
                    s["members"], s["admitted"]
                )),
                Err(e) => waiting.push(format!("h{h}: {e}")),
            }
        }
        if waiting.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no crowd of {n} within {FORM_TIMEOUT:?}: {}",
            waiting.join("; ")
        );
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firewalled_member_is_client_only() {
    require_netns();
    remove_stale();
    let started = Instant::now();
    const HOSTS: usize = 5;
    const FIREWALLED: usize = 3;
    const LATE: usize = 4;
    let dir = tempfile::Builder::new()
        .prefix("crowds-netns-")
        .tempdir()
        .expect("tempdir");
    let logs = dir.path().join("logs");
    let lab = Lab::new("cl", HOSTS);

    // The origin and the blender live in the hub.
    let script = dir.path().join("origin.py");
    std::fs::write(&script, ORIGIN_PY).expect("origin script");
    let mut cmd = Lab::exec(&lab.hub, "python3");
    cmd.arg("-u")
        .arg(&script)
        .arg(HUB_IP.to_string())
        .arg(ORIGIN_PORT.to_string());
    let mut origin = Proc::spawn("origin", &mut cmd, &logs);
    eventually("the origin to listen", Duration::from_secs(30), || {
        origin.assert_running();
        let out = origin.stdout();
        async move {
            if out.contains("READY") {
                Ok(())
            } else {
                Err("not ready".to_string())
            }
        }
    })
    .await;

    let blender_dir = dir.path().join("blender");
    for i in 0..HOSTS {
        let pw = format!("password of h{i}");
        KIT.account_add(&blender_dir, &format!("h{i}"), &pw);
        write_file_mode(
            &dir.path().join(format!("h{i}.password")),
            &format!("{pw}\n"),
            0o600,
        );
    }
    let mut cmd = Lab::exec(&lab.hub, KIT.bin());
    cmd.arg("blender")
        .arg("--data-dir")
        .arg(&blender_dir)
        .args(["--listen", &format!("{HUB_IP}:{BLENDER_PORT}")])
        .args([
            "--control-listen",
            &format!("127.0.0.1:{BLENDER_CONTROL_PORT}"),
        ])
        .args([
            "--pf",
            "0.75",
            "--join-interval",
            "1s",
            "--heartbeat-timeout",
            "5s",
        ]);
    let mut blender = Proc::spawn("blender", &mut cmd, &logs);
    let blender_pub = blender_dir.join("blender.pub");
    let hub = lab.hub.clone();
    eventually("the blender to listen", Duration::from_secs(30), || {
        blender.assert_running();
        let hub = hub.clone();
        async move { blender_status_in(&hub).await.map(drop) }
    })
    .await;
    assert!(blender_pub.exists(), "no blender.pub");

    // The firewall goes up before its jondo starts.
    let rules = dir.path().join("firewall.nft");
    std::fs::write(&rules, firewall_rules()).expect("ruleset");
    Lab::nft(&lab.hosts[FIREWALLED], &rules);

    let mut procs: Vec<Option<Proc>> = (0..HOSTS).map(|_| None).collect();
    for (i, slot) in procs.iter_mut().enumerate().take(LATE) {
        *slot = Some(spawn_jondo_in(&lab.hosts[i], i, dir.path(), &blender_pub));
    }
    let first: Vec<usize> = (0..LATE).collect();
    wait_crowd(&lab, &first, LATE, &mut procs).await;
    eprintln!(
        "crowd of {LATE} in namespaces formed after {:?}",
        started.elapsed()
    );

    // The blender classified the firewalled member client-only, and only it.
    let b = blender_status_in(&lab.hub).await.expect("blender status");
    let list = b["member_list"].as_array().expect("member_list").clone();
    assert_eq!(list.len(), LATE, "{b}");
    for i in 0..LATE {
        let addr = format!("{}:{PEER_PORT}", host_ip(i));
        let entry = list
            .iter()
            .find(|m| m["addr"] == addr.as_str())
            .unwrap_or_else(|| panic!("{addr} not in the blender's member list: {b}"));
        assert_eq!(
            entry["client_only"],
            i == FIREWALLED,
            "h{i} ({addr}) client_only in the blender's list: {b}"
        );
    }
    assert_eq!(b["counters"]["client_only_joins"], 1, "{b}");
    for i in 0..LATE {
        let s = status_in(&lab.hosts[i]).await.expect("status");
        assert_eq!(s["client_only"], i == FIREWALLED, "h{i}: {s}");
        assert_eq!(s["forwarding_members"], LATE - 1, "h{i}: {s}");
    }
    let log = procs[FIREWALLED].as_ref().expect("running").stderr();
    assert!(
        log.contains("client-only member"),
        "the firewalled jondo's log does not warn:\n{log}"
    );

    // Everyone browses; nothing leaves through the firewalled member.
    let fw_ip = host_ip(FIREWALLED);
    let mut exits = BTreeSet::new();
    let rounds = 4;
    for r in 0..rounds {
        for (i, ns) in lab.hosts.iter().enumerate().take(LATE) {
            let ip = whoami_in(ns, &format!("h{i}-{r}"))
                .await
                .unwrap_or_else(|e| panic!("h{i} request {r}: {e}"));
            assert_ne!(
                ip, fw_ip,
                "h{i}'s request left through the client-only member"
            );
            exits.insert(ip);
        }
    }

    // A new member joins: every path re-forms; browse again.
    procs[LATE] = Some(spawn_jondo_in(
        &lab.hosts[LATE],
        LATE,
        dir.path(),
        &blender_pub,
    ));
    let all: Vec<usize> = (0..HOSTS).collect();
    wait_crowd(&lab, &all, HOSTS, &mut procs).await;
    for r in 0..rounds {
        for (i, ns) in lab.hosts.iter().enumerate() {
            let ip = whoami_in(ns, &format!("h{i}-late-{r}"))
                .await
                .unwrap_or_else(|e| panic!("h{i} request {r} after the join: {e}"));
            assert_ne!(
                ip, fw_ip,
                "h{i}'s request left through the client-only member"
            );
            exits.insert(ip);
        }
    }

    // The origin's log: only forwarders, never the client-only member.
    let seen: Vec<String> = origin
        .stdout()
        .lines()
        .filter_map(|l| l.strip_prefix("SEEN "))
        .map(str::to_string)
        .collect();
    let total = rounds * (LATE + HOSTS);
    assert_eq!(seen.len(), total, "origin log: {seen:?}");
    for line in &seen {
        let ip: Ipv4Addr = line
            .split_whitespace()
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("origin log line {line}"));
        assert_ne!(ip, fw_ip, "the origin saw the client-only member: {line}");
        assert!(
            (0..HOSTS).any(|i| i != FIREWALLED && host_ip(i) == ip),
            "the origin saw a stranger: {line}"
        );
    }
    // The client-only member initiated, but never relayed or submitted for anyone.
    let s = status_in(&lab.hosts[FIREWALLED]).await.expect("status");
    assert_eq!(s["client_only"], true, "{s}");
    assert_eq!(s["requests"]["relayed"], 0, "it relayed: {s}");
    assert_eq!(s["requests"]["submitted"], 0, "it was an exit: {s}");
    assert_eq!(s["requests"]["initiated"], 2 * rounds, "{s}");
    let b = blender_status_in(&lab.hub).await.expect("blender status");
    for m in b["member_list"].as_array().expect("member_list") {
        let firewalled = m["addr"] == format!("{fw_ip}:{PEER_PORT}").as_str();
        assert_eq!(m["client_only"], firewalled, "{b}");
    }
    blender.assert_running();
    for p in procs.iter_mut().flatten() {
        p.assert_running();
    }
    eprintln!(
        "NETNS: {total} requests from {HOSTS} namespaces, exits seen {exits:?}; the \
         firewalled {fw_ip} was client-only and never relayed or exited; {:?}",
        started.elapsed()
    );
    // Processes end before their namespaces go.
    drop(procs);
    origin.kill();
    blender.kill();
}
