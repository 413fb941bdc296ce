//! Crowds for the benchmark: a blender plus jondos, in this process or one process each.
//!
//! Follows `crowds_demo::demo` (accounts made up on the spot in a temporary directory,
//! jondos on 127.0.0.x, every exit allowed to reach the loopback origin) with settings
//! of our own: crowd size, pf, a short join interval. Exact path lengths come from the
//! `bench` feature of crowds-jondo: `CROWDS_BENCH_PATH_LENGTH=k` in the environment of the
//! process hosting the initiator.

use anyhow::{anyhow, bail, Context, Result};
use crowds_blender::store::Store;
use crowds_blender::{self as blender, BlenderConfig, RunningBlender};
use crowds_jondo::jondo::{self, JondoConfig, RunningJondo};
use crowds_net::safelog::Secret;
use crowds_proto::identity::PublicKey;
use rand::Rng;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio_util::sync::CancellationToken;

/// The variable read by the `bench` feature of crowds-jondo.
pub const PATH_LENGTH_VAR: &str = "CROWDS_BENCH_PATH_LENGTH";
/// Where a child jondo process finds its password (never on the command line).
const PASSWORD_VAR: &str = "CROWDS_BENCH_JONDO_PASSWORD";
/// The exits' extra connect time (read by crowds-jondo's `bench` feature).
const CONNECT_DELAY_VAR: &str = "CROWDS_BENCH_CONNECT_DELAY_MS";
/// Time allowed for a crowd to form.
const FORM_TIMEOUT: Duration = Duration::from_secs(60);

/// Makes every request initiated in this process travel through exactly `k` jondos
/// (`None`: normal routing with the crowd's pf). Call only between measurements.
pub fn set_path_length(k: Option<usize>) {
    match k {
        Some(k) => std::env::set_var(PATH_LENGTH_VAR, k.to_string()),
        None => std::env::remove_var(PATH_LENGTH_VAR),
    }
}

/// Makes every exit connect in this process take `delay` longer (crowds-jondo's `bench`
/// feature), as a TCP handshake over a link with that round trip does; `None` for none.
/// Call only between measurements.
pub fn set_exit_connect_delay(delay: Option<Duration>) {
    match delay {
        Some(d) => std::env::set_var(CONNECT_DELAY_VAR, d.as_millis().to_string()),
        None => std::env::remove_var(CONNECT_DELAY_VAR),
    }
}

fn random_password() -> String {
    let bytes: [u8; 18] = rand::thread_rng().gen();
    hex::encode(bytes)
}

/// The address of jondo `i` (0-based): 127.0.0.(i+2).
pub fn jondo_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i as u8))
}

fn jondo_config(
    data_dir: PathBuf,
    blender: String,
    blender_key: PublicKey,
    account: String,
    password: String,
    ip: IpAddr,
) -> JondoConfig {
    let mut config = JondoConfig::new(
        data_dir,
        blender,
        blender_key,
        account,
        Secret::new(password),
        SocketAddr::new(ip, 0),
    );
    // The origin is on 127.0.0.1, on a port of its own.
    config.allow_private_destinations = true;
    config.exit_ports = None;
    config.poll_interval = Duration::from_millis(500);
    config
}

/// A blender with `n` accounts ready to join.
pub struct Blender {
    /// The running blender.
    pub blender: RunningBlender,
    /// Account names and passwords, in order.
    pub accounts: Vec<(String, String)>,
    /// Holds the blender's and the jondos' data.
    pub dir: tempfile::TempDir,
}

/// Starts a blender (pf, 200 ms join interval) with `n` accounts.
pub async fn start_blender(n: usize, pf: f64, shutdown: CancellationToken) -> Result<Blender> {
    let dir = tempfile::Builder::new()
        .prefix("crowds-bench-")
        .tempdir()
        .context("temporary directory")?;
    let blender_dir = dir.path().join("blender");
    let mut accounts = Vec::new();
    {
        let mut store = Store::open(&blender_dir)?;
        for i in 0..n {
            let (name, pw) = (format!("bench{}", i + 1), random_password());
            store
                .add_account(&name, &pw)
                .map_err(|e| anyhow!("add account: {e}"))?;
            accounts.push((name, pw));
        }
    }
    let mut config = BlenderConfig::new(blender_dir, SocketAddr::from(([127, 0, 0, 1], 0)));
    config.forward_probability = pf;
    config.join_interval = Duration::from_millis(200);
    // Benchmark crowds live for seconds: a member that stopped is dropped as soon as it
    // misses the heartbeat timeout.
    config.grace_period = config.heartbeat_timeout;
    let blender = blender::start(config, shutdown).await?;
    Ok(Blender {
        blender,
        accounts,
        dir,
    })
}

/// Changes jondo `i`'s configuration before it starts (addresses, switches).
pub type Tweak = std::sync::Arc<dyn Fn(usize, &mut JondoConfig) + Send + Sync>;

/// A crowd whose jondos all run in this process.
pub struct Crowd {
    /// The jondos, jondo i on 127.0.0.(i+2).
    pub jondos: Vec<RunningJondo>,
    blender: Blender,
    shutdown: CancellationToken,
    /// Each jondo on a thread and a runtime of its own with this many workers
    /// ([`jondo::runtime`]), or all on the caller's runtime (`None`).
    own_threads: Option<usize>,
    tweak: Option<Tweak>,
}

/// Starts a blender with `n + spare` accounts and `n` jondos in this process (each on a
/// thread and a runtime of `own_threads` workers of its own if given, see
/// [`crate::own_thread`]) and waits
/// until every jondo holds a document listing all of them. Each spare account lets one
/// more member join later ([`Crowd::add_member`]), which re-forms every path.
pub async fn start_in_process(
    n: usize,
    spare: usize,
    pf: f64,
    shutdown: CancellationToken,
    own_threads: Option<usize>,
) -> Result<Crowd> {
    start_in_process_with(n, spare, pf, shutdown, own_threads, None).await
}

/// [`start_in_process`], with `tweak` applied to each jondo's configuration.
pub async fn start_in_process_with(
    n: usize,
    spare: usize,
    pf: f64,
    shutdown: CancellationToken,
    own_threads: Option<usize>,
    tweak: Option<Tweak>,
) -> Result<Crowd> {
    anyhow::ensure!(
        (1..=200).contains(&(n + spare)),
        "crowd size must be 1..=200"
    );
    let blender = start_blender(n + spare, pf, shutdown.clone()).await?;
    let mut crowd = Crowd {
        jondos: Vec::new(),
        blender,
        shutdown,
        own_threads,
        tweak,
    };
    for _ in 0..n {
        crowd.start_jondo().await?;
    }
    crowd.wait_formed().await?;
    Ok(crowd)
}

impl Crowd {
    async fn start_jondo(&mut self) -> Result<()> {
        let i = self.jondos.len();
        let (account, password) = self
            .blender
            .accounts
            .get(i)
            .cloned()
            .ok_or_else(|| anyhow!("no spare account left"))?;
        let mut config = jondo_config(
            self.blender.dir.path().join(format!("jondo{}", i + 1)),
            self.blender.blender.addr.to_string(),
            self.blender.blender.public_key,
            account,
            password,
            jondo_ip(i),
        );
        if let Some(tweak) = &self.tweak {
            tweak(i, &mut config);
        }
        let shutdown = self.shutdown.clone();
        let jondo = if let Some(threads) = self.own_threads {
            let name = format!("jondo{}", i + 1);
            let runtime = jondo::runtime(threads);
            crate::own_thread::start(&name, runtime, shutdown.clone(), || async {
                Ok(jondo::start(config, shutdown).await?)
            })
            .await?
        } else {
            jondo::start(config, shutdown).await?
        };
        self.jondos.push(jondo);
        Ok(())
    }

    /// Waits (bounded) until every jondo holds a document listing all of them.
    async fn wait_formed(&self) -> Result<()> {
        let n = self.jondos.len();
        let deadline = tokio::time::Instant::now() + FORM_TIMEOUT;
        loop {
            let ready = self.jondos.iter().all(|j| {
                j.node
                    .crowd()
                    .is_some_and(|c| c.self_id.is_some() && c.doc.members.len() == n)
            });
            if ready {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("the crowd did not form within {FORM_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// One more member joins; the new epoch re-forms every path in the crowd.
    pub async fn add_member(&mut self) -> Result<()> {
        self.start_jondo().await?;
        self.wait_formed().await
    }

    /// The sum of the jondos' `relayed` counters (requests relayed for other members).
    pub fn relayed(&self) -> u64 {
        use std::sync::atomic::Ordering::Relaxed;
        self.jondos
            .iter()
            .map(|j| j.node.stats.relayed.load(Relaxed))
            .sum()
    }

    /// The sum of the jondos' `initiated` counters.
    pub fn initiated(&self) -> u64 {
        use std::sync::atomic::Ordering::Relaxed;
        self.jondos
            .iter()
            .map(|j| j.node.stats.initiated.load(Relaxed))
            .sum()
    }
}

/// A jondo running in a child process (`crowds-bench jondo-process`).
pub struct ChildJondo {
    /// Its process id.
    pub pid: u32,
    /// Its HTTP proxy.
    pub proxy: SocketAddr,
    child: tokio::process::Child,
}

impl ChildJondo {
    /// Asks the child to stop (closes its standard input) and waits at most 10 s, then
    /// kills it.
    pub async fn stop(mut self) {
        drop(self.child.stdin.take());
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// Starts jondo `i` of `blender` (peer port on `ip`, a runtime of `threads` workers) as
/// a child process of this very binary; `path_length` (for requests it initiates; 1 if
/// `None`) goes into its environment. It reports ready (see [`StartingJondo::ready`])
/// once the crowd lists `members` members.
pub fn spawn_child(
    blender: &Blender,
    i: usize,
    ip: IpAddr,
    members: usize,
    path_length: Option<usize>,
    threads: usize,
) -> Result<StartingJondo> {
    let (account, password) = &blender.accounts[i];
    let exe = std::env::current_exe().context("locate this executable")?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("jondo-process")
        .arg("--blender")
        .arg(blender.blender.addr.to_string())
        .arg("--blender-key")
        .arg(blender.blender.public_key.to_hex())
        .arg("--account")
        .arg(account)
        .arg("--data-dir")
        .arg(blender.dir.path().join(format!("proc-jondo{}", i + 1)))
        .arg("--peer-ip")
        .arg(ip.to_string())
        .arg("--members")
        .arg(members.to_string())
        .arg("--threads")
        .arg(threads.to_string())
        .env(PASSWORD_VAR, password)
        // A relaying jondo obeys the bench hop header only when its own process was
        // started for benchmarking (the variable is set); only an initiator reads its
        // value.
        .env(PATH_LENGTH_VAR, path_length.unwrap_or(1).to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true);
    let mut child = cmd.spawn().context("spawn a jondo process")?;
    let pid = child.id().ok_or_else(|| anyhow!("child has no pid"))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("child has no stdout"))?;
    Ok(StartingJondo {
        n: i + 1,
        pid,
        child,
        lines: BufReader::new(stdout).lines(),
    })
}

/// A child jondo process that has not said it is ready yet.
pub struct StartingJondo {
    n: usize,
    pid: u32,
    child: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl StartingJondo {
    /// Waits (bounded) for the child's `READY <proxy address>` line.
    pub async fn ready(mut self) -> Result<ChildJondo> {
        let n = self.n;
        let line = tokio::time::timeout(FORM_TIMEOUT, self.lines.next_line())
            .await
            .map_err(|_| anyhow!("jondo process {n} not ready within {FORM_TIMEOUT:?}"))??
            .ok_or_else(|| anyhow!("jondo process {n} exited before it was ready"))?;
        let proxy = line
            .strip_prefix("READY ")
            .ok_or_else(|| anyhow!("unexpected line from jondo process {n}: {line}"))?
            .trim()
            .parse()
            .context("proxy address from jondo process")?;
        Ok(ChildJondo {
            pid: self.pid,
            proxy,
            child: self.child,
        })
    }
}

/// Arguments of the hidden `jondo-process` subcommand.
#[derive(Debug, clap::Args)]
pub struct ProcessArgs {
    /// The blender's API address.
    #[arg(long)]
    pub blender: String,
    /// The blender's public key, hex.
    #[arg(long)]
    pub blender_key: String,
    /// Account name (the password comes from CROWDS_BENCH_JONDO_PASSWORD).
    #[arg(long)]
    pub account: String,
    /// Data directory (identity key).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Loopback address of the peer port.
    #[arg(long)]
    pub peer_ip: IpAddr,
    /// Report ready once the crowd lists this many members.
    #[arg(long)]
    pub members: usize,
    /// Worker threads, as `crowds jondo --threads`.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

/// Longest life of a child jondo process (it stops earlier when its stdin closes).
const CHILD_MAX_LIFE: Duration = Duration::from_secs(3600);

/// Body of `crowds-bench jondo-process`: one jondo in this process, on the runtime
/// `crowds jondo --threads N` uses. Prints `READY <proxy address>` once admitted, then
/// serves until standard input closes.
pub fn run_process(args: ProcessArgs) -> Result<()> {
    let runtime = jondo::runtime(args.threads)?;
    runtime.block_on(async move {
        let password = std::env::var(PASSWORD_VAR).context(PASSWORD_VAR)?;
        let blender_key =
            PublicKey::from_hex(&args.blender_key).map_err(|e| anyhow!("blender key: {e:?}"))?;
        let shutdown = CancellationToken::new();
        let config = jondo_config(
            args.data_dir.clone(),
            args.blender.clone(),
            blender_key,
            args.account.clone(),
            password,
            args.peer_ip,
        );
        let jondo = jondo::start(config, shutdown.clone()).await?;
        let deadline = tokio::time::Instant::now() + FORM_TIMEOUT;
        while !jondo
            .node
            .crowd()
            .is_some_and(|c| c.self_id.is_some() && c.doc.members.len() == args.members)
        {
            if tokio::time::Instant::now() > deadline {
                bail!("not admitted within {FORM_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!("READY {}", jondo.proxy_addr);
        use std::io::Write;
        std::io::stdout().flush()?;
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 64];
        let _ = tokio::time::timeout(CHILD_MAX_LIFE, async {
            while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
        })
        .await;
        shutdown.cancel();
        Ok(())
    })?;
    // Do not wait for connection tasks to wind down.
    std::process::exit(0);
}

/// Memory of a process from `/proc/PID/status`, in KiB: (VmRSS, VmHWM).
pub fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    read_status(Path::new(&format!("/proc/{pid}/status")))
}

fn read_status(path: &Path) -> Option<(u64, u64)> {
    parse_status(&std::fs::read_to_string(path).ok()?)
}

fn parse_status(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_are_read_in_kib() {
        let text = "Name:\tx\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\nThreads:\t3\n";
        assert_eq!(parse_status(text), Some((10240, 20480)));
        assert_eq!(parse_status("Name: x\n"), None);
        let own = rss_kib(std::process::id()).expect("own status");
        assert!(own.0 > 0 && own.1 >= own.0);
    }
}
