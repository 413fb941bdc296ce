//! Network namespaces for tests: a hub namespace holding a bridge, and one namespace
//! per host joined to it by a veth pair, all with addresses in 10.231.0.0/24 that
//! exist only inside these namespaces. Everything is deleted on drop; namespaces left
//! behind by an earlier run that died (their name carries its process id) are deleted
//! at the start.
//!
//! Commands run inside a namespace with `ip netns exec NAME ...`.

use std::net::Ipv4Addr;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Every namespace of these tests starts with this.
pub const PREFIX: &str = "crwlc";

/// The hub's address (on its bridge).
pub const HUB_IP: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 1);

/// The address of host `i` (inside its own namespace).
pub fn host_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 231, 0, 10 + u8::try_from(i).expect("few hosts"))
}

fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"))
}

/// Runs a command; panics with its output if it fails.
pub fn must(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether `prog` can be run (found on PATH).
pub fn have(prog: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {prog}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Checks once that this machine lets us create network namespaces and has the tools
/// the namespace tests need; panics with a clear message otherwise (a test that cannot
/// run its namespaces must fail, not pass silently).
pub fn require_netns() {
    for prog in ["ip", "nft", "curl", "python3"] {
        assert!(
            have(prog),
            "`{prog}` is not installed: the network-namespace tests need iproute2, \
             nftables, curl and python3 (tools/test --all installs them)"
        );
    }
    let probe = format!("{PREFIX}{}-probe", std::process::id());
    let out = run(&["ip", "netns", "add", &probe]);
    if !out.status.success() {
        panic!(
            "network namespaces are not permitted here (`ip netns add {probe}` failed: {}). \
             These tests need root and CAP_SYS_ADMIN, as CI has.",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let out = run(&["ip", "-n", &probe, "link", "set", "lo", "up"]);
    let _ = run(&["ip", "netns", "del", &probe]);
    assert!(
        out.status.success(),
        "cannot configure a network namespace: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Process ids of the processes in namespace `name`.
fn pids_in(name: &str) -> Vec<String> {
    let out = run(&["ip", "netns", "pids", name]);
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Kills the processes left in namespace `name` (ours: nothing else runs in these
/// namespaces) by id, then deletes it.
fn delete_namespace(name: &str) {
    for pid in pids_in(name) {
        let _ = run(&["kill", "-KILL", &pid]);
    }
    let _ = run(&["ip", "netns", "del", name]);
}

/// Deletes namespaces with [`PREFIX`] whose creating test process is gone.
pub fn remove_stale() {
    let out = run(&["ip", "netns", "list"]);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let alive = !pid.is_empty() && std::path::Path::new(&format!("/proc/{pid}")).exists();
        if !alive {
            eprintln!("removing stale network namespace {name}");
            delete_namespace(name);
        }
    }
}

/// A hub namespace with a bridge and hosts attached to it; deleted on drop.
pub struct Lab {
    /// The hub namespace.
    pub hub: String,
    /// Host namespaces, in order (host `i` has [`host_ip`]`(i)`).
    pub hosts: Vec<String>,
}

impl Lab {
    /// Creates the hub (bridge `br0` with [`HUB_IP`]/24) and `n` hosts, each with a
    /// veth `eth0` on the bridge.
    pub fn new(tag: &str, n: usize) -> Lab {
        let base = format!("{PREFIX}{}-{tag}", std::process::id());
        let mut lab = Lab {
            hub: format!("{base}-hub"),
            hosts: Vec::new(),
        };
        let hub = lab.hub.clone();
        must(&["ip", "netns", "add", &hub]);
        must(&["ip", "-n", &hub, "link", "set", "lo", "up"]);
        must(&["ip", "-n", &hub, "link", "add", "br0", "type", "bridge"]);
        must(&[
            "ip",
            "-n",
            &hub,
            "addr",
            "add",
            &format!("{HUB_IP}/24"),
            "dev",
            "br0",
        ]);
        must(&["ip", "-n", &hub, "link", "set", "br0", "up"]);
        for i in 0..n {
            let host = format!("{base}-h{i}");
            must(&["ip", "netns", "add", &host]);
            lab.hosts.push(host.clone());
            let veth = format!("vh{i}");
            must(&[
                "ip", "-n", &hub, "link", "add", &veth, "type", "veth", "peer", "name", "eth0",
                "netns", &host,
            ]);
            must(&[
                "ip", "-n", &hub, "link", "set", &veth, "master", "br0", "up",
            ]);
            must(&["ip", "-n", &host, "link", "set", "lo", "up"]);
            must(&[
                "ip",
                "-n",
                &host,
                "addr",
                "add",
                &format!("{}/24", host_ip(i)),
                "dev",
                "eth0",
            ]);
            must(&["ip", "-n", &host, "link", "set", "eth0", "up"]);
        }
        lab
    }

    /// A command run inside namespace `ns`.
    pub fn exec(ns: &str, prog: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).arg(prog);
        c
    }

    /// Loads an nftables ruleset (text) inside namespace `ns`.
    pub fn nft(ns: &str, ruleset_file: &std::path::Path) {
        must(&[
            "ip",
            "netns",
            "exec",
            ns,
            "nft",
            "-f",
            ruleset_file.to_str().expect("utf-8 path"),
        ]);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.hosts.iter().chain([&self.hub]) {
            delete_namespace(ns);
        }
    }
}

/// `curl -sS` inside namespace `ns` (bounded by `timeout`): the body, or why it
/// failed (with the HTTP status when there was one).
pub async fn curl(ns: &str, args: &[&str], timeout: Duration) -> Result<String, String> {
    let secs = format!("{}", timeout.as_secs().max(1));
    let mut cmd = tokio::process::Command::new("ip");
    cmd.args(["netns", "exec", ns, "curl", "-sS", "--max-time", &secs])
        .args(["-w", "\n%{http_code}"])
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(timeout + Duration::from_secs(5), cmd.output())
        .await
        .map_err(|_| format!("curl {args:?} in {ns} did not end"))?
        .map_err(|e| format!("cannot run curl: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    if !out.status.success() {
        return Err(format!(
            "curl {args:?} in {ns}: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    if code.trim() != "200" {
        return Err(format!("HTTP {}: {}", code.trim(), body.trim()));
    }
    Ok(body.to_string())
}
