//! A blender and N jondo processes on 127.0.0.x: [`Crowd`] and its [`CrowdBuilder`],
//! the single-jondo [`JondoSpec`] they are made of, and `status.json` polling.

use crate::*;
use hyper::StatusCode;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One jondo process of a [`Crowd`].
pub struct Jondo {
    /// Account name at the blender.
    pub account: String,
    /// Its data directory (holds `identity.key`).
    pub data_dir: PathBuf,
    /// Its peer address (127.0.0.(11 + i)).
    pub peer: SocketAddr,
    /// Its HTTP proxy.
    pub proxy: SocketAddr,
    /// Its SOCKS port.
    pub socks: SocketAddr,
    /// Its status port.
    pub control: SocketAddr,
    /// The process.
    pub proc: Proc,
}

impl Jondo {
    /// The jondo's identity key, read from its data directory.
    pub fn identity(&self) -> crowds_proto::identity::SecretKey {
        crowds_net::files::load_or_create_identity(&self.data_dir).expect("jondo identity")
    }

    /// `GET /status.json` of this jondo.
    pub async fn status(&self) -> Result<serde_json::Value, String> {
        status_of(self.control).await
    }
}

/// Options of a jondo process.
pub struct JondoSpec<'a> {
    /// Process name for messages and log files.
    pub name: &'a str,
    /// Data directory.
    pub data_dir: &'a Path,
    /// The blender's address.
    pub blender: SocketAddr,
    /// The blender's public key file.
    pub blender_key: &'a Path,
    /// Account name.
    pub account: &'a str,
    /// Password file.
    pub password_file: &'a Path,
    /// Peer address.
    pub peer: SocketAddr,
    /// Proxy address.
    pub proxy: SocketAddr,
    /// SOCKS address.
    pub socks: SocketAddr,
    /// Control address.
    pub control: SocketAddr,
    /// Whether to pass `--allow-private-destinations`.
    pub allow_private: bool,
    /// Extra arguments.
    pub extra: &'a [&'a str],
    /// Where stdout/stderr files go.
    pub log_dir: &'a Path,
}

impl Kit {
    /// Spawns `crowds jondo` with the given options.
    pub fn spawn_jondo(self, spec: &JondoSpec<'_>) -> Proc {
        let mut cmd = self.command();
        cmd.arg("jondo")
            .arg("--data-dir")
            .arg(spec.data_dir)
            .arg("--blender")
            .arg(spec.blender.to_string())
            .arg("--blender-key")
            .arg(spec.blender_key)
            .arg("--account")
            .arg(spec.account)
            .arg("--password-file")
            .arg(spec.password_file)
            .arg("--peer-listen")
            .arg(spec.peer.to_string())
            .arg("--proxy-listen")
            .arg(spec.proxy.to_string())
            .arg("--socks-listen")
            .arg(spec.socks.to_string())
            .arg("--control-listen")
            .arg(spec.control.to_string())
            .args(spec.extra);
        if spec.allow_private {
            cmd.arg("--allow-private-destinations");
        }
        Proc::spawn(spec.name, &mut cmd, spec.log_dir)
    }
}

/// A blender process and its jondo processes, all killed on drop.
pub struct Crowd {
    /// The jondos, in order (jondo i on 127.0.0.(11 + i)).
    pub jondos: Vec<Jondo>,
    /// The blender process.
    pub blender: Proc,
    /// The blender's API address.
    pub blender_addr: SocketAddr,
    /// The blender's data directory.
    pub blender_dir: PathBuf,
    /// `blender.pub`.
    pub blender_pub: PathBuf,
    /// Holds every data directory and log file (removed last).
    pub dir: tempfile::TempDir,
    /// The kit that started it (for [`Crowd::add_jondo`]).
    pub kit: Kit,
}

impl Drop for Crowd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for p in self.jondos.iter().map(|j| &j.proc).chain([&self.blender]) {
                eprintln!(
                    "---- last stderr lines of {} ----\n{}",
                    p.name,
                    p.stderr_tail(20)
                );
            }
        }
        for j in &mut self.jondos {
            j.proc.kill();
        }
        self.blender.kill();
    }
}

impl Kit {
    /// Starts a blender process (`--join-interval 1s` and `extra`, e.g. `--pf 0.75`) on a
    /// free port of 127.0.0.1 and waits until it has written `blender.pub` and accepts
    /// connections.
    pub async fn start_blender(
        self,
        data_dir: &Path,
        log_dir: &Path,
        extra: &[&str],
    ) -> (Proc, SocketAddr, PathBuf) {
        let addr = free_local_addr();
        let (p, pub_path) = self
            .start_blender_at("blender", addr, data_dir, log_dir, extra)
            .await;
        (p, addr, pub_path)
    }

    /// Like [`Kit::start_blender`], on `addr`, with `name` for its log files.
    pub async fn start_blender_at(
        self,
        name: &str,
        addr: SocketAddr,
        data_dir: &Path,
        log_dir: &Path,
        extra: &[&str],
    ) -> (Proc, PathBuf) {
        let mut cmd = self.command();
        cmd.arg("blender")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg(addr.to_string())
            .args(["--join-interval", "1s"])
            .args(extra);
        let mut blender = Proc::spawn(name, &mut cmd, log_dir);
        let pub_path = data_dir.join("blender.pub");
        wait_blender(&mut blender, &pub_path, addr).await;
        (blender, pub_path)
    }
}

/// Waits (bounded) until a started blender has written `blender.pub` and listens on
/// `addr`; panics with its standard error if it exits first.
pub async fn wait_blender(blender: &mut Proc, pub_path: &Path, addr: SocketAddr) {
    eventually(
        "the blender to write blender.pub and listen",
        Duration::from_secs(30),
        || {
            let ready = pub_path.exists();
            let exited = blender.exited();
            let stderr = blender.stderr();
            async move {
                if let Some(s) = exited {
                    panic!("the blender exited ({s}); stderr:\n{stderr}");
                }
                if !ready {
                    return Err("no blender.pub yet".to_string());
                }
                tokio::net::TcpStream::connect(addr)
                    .await
                    .map(drop)
                    .map_err(|e| format!("connect: {e}"))
            }
        },
    )
    .await;
}

/// How to start a [`Crowd`]: `n` jondos on 127.0.0.(11 + i) and a blender (`--pf 0.75`,
/// `--join-interval 1s`) on 127.0.0.1. Made by [`Crowd::builder`].
pub struct CrowdBuilder {
    kit: Kit,
    n: usize,
    blender_args: Vec<String>,
    jondo_args: Vec<String>,
    jondo_args_for: Vec<(usize, Vec<String>)>,
    allow_private: bool,
    mixed_threads: bool,
}

impl CrowdBuilder {
    /// More blender flags (after `--pf 0.75`, so `--pf` here wins).
    pub fn blender_args(mut self, args: &[&str]) -> Self {
        self.blender_args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// More flags for every jondo.
    pub fn jondo_args(mut self, args: &[&str]) -> Self {
        self.jondo_args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// More flags for jondo `i` only (after those for every jondo).
    pub fn jondo_args_for(mut self, i: usize, args: &[&str]) -> Self {
        self.jondo_args_for
            .push((i, args.iter().map(|a| a.to_string()).collect()));
        self
    }

    /// Whether the jondos get `--allow-private-destinations` (default: yes, so their
    /// exits reach the test's origins on loopback).
    pub fn allow_private(mut self, allow: bool) -> Self {
        self.allow_private = allow;
        self
    }

    /// Whether the last jondo runs on two threads (`--threads 2`) while the others run
    /// on the default one, so crowds mixing both runtimes are tested too (default: no).
    pub fn mixed_threads(mut self, mixed: bool) -> Self {
        self.mixed_threads = mixed;
        self
    }

    /// Creates the accounts, starts the blender and the jondos, and waits until every
    /// jondo reports `members == n` and `admitted == true`.
    pub async fn start(self) -> Crowd {
        let CrowdBuilder {
            kit,
            n,
            blender_args,
            jondo_args,
            jondo_args_for,
            allow_private,
            mixed_threads,
        } = self;
        let dir = tempfile::Builder::new()
            .prefix("crowds-it-")
            .tempdir()
            .expect("tempdir");
        let blender_dir = dir.path().join("blender");
        let logs = dir.path().join("logs");
        let mut passwords = Vec::new();
        for i in 0..n {
            let pw = format!("password of jondo {i} ({})", std::process::id());
            kit.account_add(&blender_dir, &format!("jondo{i}"), &pw);
            passwords.push(pw);
        }
        let mut blender_extra = vec!["--pf", "0.75"];
        blender_extra.extend(blender_args.iter().map(String::as_str));
        let (blender, blender_addr, blender_pub) =
            kit.start_blender(&blender_dir, &logs, &blender_extra).await;
        let mut crowd = Crowd {
            jondos: Vec::new(),
            blender,
            blender_addr,
            blender_dir,
            blender_pub,
            dir,
            kit,
        };
        for (i, pw) in passwords.iter().enumerate() {
            let mut extra: Vec<&str> = jondo_args.iter().map(String::as_str).collect();
            for (_, args) in jondo_args_for.iter().filter(|(j, _)| *j == i) {
                extra.extend(args.iter().map(String::as_str));
            }
            if mixed_threads && i + 1 == n {
                extra.extend(["--threads", "2"]);
            }
            let jondo = crowd.spawn_member(i, pw, allow_private, &extra);
            crowd.jondos.push(jondo);
        }
        crowd.wait_formed(n).await;
        crowd
    }
}

impl Crowd {
    /// A builder for a crowd of `n` jondos (see [`CrowdBuilder`]).
    pub fn builder(kit: Kit, n: usize) -> CrowdBuilder {
        CrowdBuilder {
            kit,
            n,
            blender_args: Vec::new(),
            jondo_args: Vec::new(),
            jondo_args_for: Vec::new(),
            allow_private: true,
            mixed_threads: false,
        }
    }

    /// Starts a blender and `n` jondo processes (with `--allow-private-destinations`,
    /// the last one on two threads) and waits until the crowd has formed.
    pub async fn start(kit: Kit, n: usize) -> Crowd {
        Self::builder(kit, n).mixed_threads(true).start().await
    }

    /// Like [`Crowd::start`], with more blender flags (`--pf 0.75` comes first).
    pub async fn start_with(kit: Kit, n: usize, blender_extra: &[&str]) -> Crowd {
        Self::builder(kit, n)
            .mixed_threads(true)
            .blender_args(blender_extra)
            .start()
            .await
    }

    /// Files, addresses and process of jondo `i` (account `jondo{i}`, which must exist).
    fn spawn_member(&self, i: usize, password: &str, allow_private: bool, extra: &[&str]) -> Jondo {
        let account = format!("jondo{i}");
        let ip = jondo_ip(i);
        let data_dir = self.dir.path().join(&account);
        let pw_file = self.dir.path().join(format!("{account}.password"));
        write_file_mode(&pw_file, &format!("{password}\n"), 0o600);
        let peer = SocketAddr::new(IpAddr::V4(ip), free_port(ip));
        let (proxy, socks, control) = (free_local_addr(), free_local_addr(), free_local_addr());
        let logs = self.dir.path().join("logs");
        let proc = self.kit.spawn_jondo(&JondoSpec {
            name: &account,
            data_dir: &data_dir,
            blender: self.blender_addr,
            blender_key: &self.blender_pub,
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
        Jondo {
            account,
            data_dir,
            peer,
            proxy,
            socks,
            control,
            proc,
        }
    }

    /// Adds one more jondo (on the next 127.0.0.x, with the flags `extra` only) to the running crowd and waits until every member lists it. A new member
    /// makes every jondo forget its paths, so this also re-forms every path in the crowd.
    pub async fn add_jondo(&mut self, allow_private: bool, extra: &[&str]) {
        let i = self.jondos.len();
        let account = format!("jondo{i}");
        let pw = format!("password of jondo {i} ({})", std::process::id());
        self.kit.account_add(&self.blender_dir, &account, &pw);
        let jondo = self.spawn_member(i, &pw, allow_private, extra);
        self.jondos.push(jondo);
        self.wait_formed(i + 1).await;
    }

    /// Waits until every jondo's status shows `members == n` and `admitted`.
    pub async fn wait_formed(&mut self, n: usize) {
        let controls: Vec<SocketAddr> = self.jondos.iter().map(|j| j.control).collect();
        let deadline = Instant::now() + FORM_TIMEOUT;
        loop {
            self.blender.assert_running();
            for j in &mut self.jondos {
                j.proc.assert_running();
            }
            let mut waiting = Vec::new();
            for (i, c) in controls.iter().enumerate() {
                match status_of(*c).await {
                    Ok(s) if s["members"] == n && s["admitted"] == true => {}
                    Ok(s) => waiting.push(format!(
                        "jondo{i}: members {} admitted {}",
                        s["members"], s["admitted"]
                    )),
                    Err(e) => waiting.push(format!("jondo{i}: {e}")),
                }
            }
            if waiting.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the crowd of {n} did not form within {FORM_TIMEOUT:?}: {}",
                waiting.join("; ")
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The status of every jondo, in order.
    pub async fn statuses(&self) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        for j in &self.jondos {
            out.push(j.status().await.expect("status.json"));
        }
        out
    }

    /// The peer IPs of the crowd's jondos.
    pub fn member_ips(&self) -> Vec<IpAddr> {
        self.jondos.iter().map(|j| j.peer.ip()).collect()
    }
}

/// `GET /status.json` at `control`, parsed.
pub async fn status_of(control: SocketAddr) -> Result<serde_json::Value, String> {
    let (status, body) = direct_get(control, "/status.json").await?;
    if status != StatusCode::OK {
        return Err(format!("status.json answered {status}"));
    }
    serde_json::from_slice(&body).map_err(|e| format!("status.json is not JSON: {e}"))
}

/// Waits until `/status.json` of every jondo in `controls` has `key == want`.
pub async fn wait_every_status(
    what: &str,
    controls: &[SocketAddr],
    key: &str,
    want: serde_json::Value,
) {
    eventually(what, Duration::from_secs(30), || {
        let (controls, want) = (controls.to_vec(), want.clone());
        async move {
            for c in controls {
                let s = status_of(c).await?;
                if s[key] != want {
                    return Err(format!("{c}: {key} {}", s[key]));
                }
            }
            Ok(())
        }
    })
    .await;
}
