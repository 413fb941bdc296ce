//! Command-line definitions and the glue from flags (and the jondo's TOML file) to the
//! daemons' configurations. Secrets never come from argv: passwords are read from
//! standard input or from a file only its owner can read.

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use crowds_node::blender::{self, BlenderConfig};
use crowds_node::demo::{self, DemoConfig};
use crowds_node::files;
use crowds_node::jondo::{self, JondoConfig};
use crowds_node::store::Store;
use serde::Deserialize;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Crowds: browse the web anonymously by hiding in a crowd of each other's proxies.
#[derive(Parser, Debug)]
#[command(name = "crowds", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Manage the blender's accounts (passwords are read from standard input).
    #[command(subcommand)]
    Account(AccountCommand),
    /// Run the blender: the crowd's membership server.
    Blender(BlenderArgs),
    /// Run a jondo: your member of the crowd, with a local HTTP proxy.
    Jondo(Box<JondoArgs>),
    /// Run a whole crowd on this machine, with a sample website, ready to browse.
    Demo(DemoArgs),
}

#[derive(Subcommand, Debug)]
enum AccountCommand {
    /// Create an account; reads the password (one line) from standard input.
    ///
    /// Example: echo "$PASSWORD" | crowds account add --data-dir blender-data alice
    Add {
        /// The blender's data directory (created if missing).
        #[arg(long)]
        data_dir: PathBuf,
        /// Account name: letters, digits, '.', '_' or '-'.
        name: String,
    },
    /// List accounts (never passwords).
    List {
        /// The blender's data directory.
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Remove an account.
    Remove {
        /// The blender's data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// Account name.
        name: String,
    },
}

#[derive(Args, Debug)]
struct BlenderArgs {
    /// Directory for the signing key, blender.pub and the account database.
    #[arg(long)]
    data_dir: PathBuf,
    /// Address of the blender's API, HOST:PORT.
    #[arg(long)]
    listen: SocketAddr,
    /// Forward probability pf of the crowd (must be > 0.5 and < 1).
    #[arg(long, default_value_t = 0.75)]
    pf: f64,
    /// Allow any pf in [0, 1) for experiments (no anonymity guarantee below 0.5).
    #[arg(long)]
    insecure_pf: bool,
    /// At most one new epoch (batch of joins) per this interval, e.g. 30s.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    join_interval: Duration,
    /// Drop members that send no heartbeat for this long.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    heartbeat_timeout: Duration,
    /// Validity of each signed crowd document (re-signed at half-life).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    document_lifetime: Duration,
    /// An account is admitted at most once per this interval (each admission re-forms
    /// every path, giving collaborators another look at each initiator).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    rejoin_interval: Duration,
    /// Serve a status page, /status.json and /metrics here (e.g. 127.0.0.1:7001).
    #[arg(long)]
    control_listen: Option<SocketAddr>,
}

/// Jondo settings; each may also come from the TOML file given with `--config`
/// (same names with underscores); flags win over the file.
#[derive(Args, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct JondoArgs {
    /// TOML file with any of these settings (flags override it).
    #[arg(long)]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Directory for the identity key.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The blender's API address, HOST:PORT.
    #[arg(long)]
    blender: Option<String>,
    /// File with the blender's public key (its blender.pub).
    #[arg(long)]
    blender_key: Option<PathBuf>,
    /// Account name at the blender.
    #[arg(long)]
    account: Option<String>,
    /// File holding the password (first line); must not be group/world readable.
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// Where other jondos connect, HOST:PORT.
    #[arg(long)]
    peer_listen: Option<SocketAddr>,
    /// Address announced to the crowd if not the peer-listen address (NAT, 0.0.0.0).
    #[arg(long)]
    advertise: Option<SocketAddr>,
    /// The local HTTP proxy for your browser [default: 127.0.0.1:8118].
    #[arg(long)]
    proxy_listen: Option<SocketAddr>,
    /// The local SOCKS5 proxy (not yet supported: answers with a refusal) [default: 127.0.0.1:1080].
    #[arg(long)]
    socks_listen: Option<SocketAddr>,
    /// The status port (GET /status.json) [default: 127.0.0.1:8119].
    #[arg(long)]
    control_listen: Option<SocketAddr>,
    /// Let this jondo's exit reach loopback and private addresses (testing only).
    #[arg(long)]
    #[serde(default)]
    allow_private_destinations: bool,
    /// Heartbeat interval [default: 5s].
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(default, with = "opt_duration")]
    heartbeat_interval: Option<Duration>,
    /// How often to check for a new crowd document [default: 1s].
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(default, with = "opt_duration")]
    poll_interval: Option<Duration>,
    /// Close tunnels and response bodies that move no byte for this long [default: 5m].
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(default, with = "opt_duration")]
    idle_timeout: Option<Duration>,
    /// Keep Cookie/Set-Cookie on plain HTTP (every jondo on your path can read them).
    #[arg(long)]
    #[serde(default)]
    keep_cookies: bool,
    /// Destination ports this jondo's exit allows: a list like 80,443 or `any`
    /// [default: 80,443,8000,8008,8080,8443,8888; any with --allow-private-destinations].
    #[arg(long, value_parser = crowds_proto::policy::PortPolicy::parse)]
    #[serde(default, deserialize_with = "opt_ports")]
    exit_ports: Option<crowds_proto::policy::PortPolicy>,
    /// Time a server has to start answering, at this jondo's exit [default: 60s].
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(default, with = "opt_duration")]
    server_timeout: Option<Duration>,
}

mod opt_duration {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| humantime::parse_duration(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

fn opt_ports<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<crowds_proto::policy::PortPolicy>, D::Error> {
    let text: Option<String> = Option::deserialize(d)?;
    text.map(|t| crowds_proto::policy::PortPolicy::parse(&t).map_err(serde::de::Error::custom))
        .transpose()
}

#[derive(Args, Debug)]
struct DemoArgs {
    /// Number of jondos (on 127.0.0.2, 127.0.0.3, …).
    #[arg(long, default_value_t = 8)]
    jondos: usize,
    /// Forward probability pf.
    #[arg(long, default_value_t = 0.75)]
    pf: f64,
    /// Fetch this many pages through random members, print who the server saw, and exit.
    #[arg(long)]
    requests: Option<usize>,
    /// Port of the first jondo's HTTP proxy (another is chosen if it is taken).
    #[arg(long, default_value_t = 8118)]
    proxy_port: u16,
}

/// Logs go to standard error, filtered by `RUST_LOG` (default `info`; `warn` for the
/// demo, whose output is its table and instructions).
pub fn init_logging(cli: &Cli) {
    let default = match cli.command {
        Command::Demo(_) => "warn",
        _ => "info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Account(cmd) => account(cmd),
        Command::Blender(args) => run_blender(args).await,
        Command::Jondo(args) => run_jondo(*args).await,
        Command::Demo(args) => run_demo(args).await,
    }
}

fn account(cmd: AccountCommand) -> Result<()> {
    match cmd {
        AccountCommand::Add { data_dir, name } => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("cannot read the password from standard input")?;
            let password = line.trim_end_matches(['\n', '\r']);
            if password.is_empty() {
                bail!("no password on standard input; pipe one line, e.g.: echo \"$PASSWORD\" | crowds account add --data-dir DIR NAME");
            }
            let mut store = Store::open(&data_dir)?;
            let id = store.add_account(&name, password)?;
            eprintln!("account {name} created (member id {id})");
        }
        AccountCommand::List { data_dir } => {
            let store = Store::open(&data_dir)?;
            for a in store.list_accounts()? {
                println!("{}\t{}", a.id, a.name);
            }
        }
        AccountCommand::Remove { data_dir, name } => {
            let mut store = Store::open(&data_dir)?;
            store.remove_account(&name)?;
            eprintln!("account {name} removed");
        }
    }
    Ok(())
}

/// Cancels the token on Ctrl-C or SIGTERM.
fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    t.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        t.cancel();
    });
    token
}

fn check_pf(pf: f64, insecure: bool) -> Result<()> {
    if insecure {
        if !crowds_proto::pf_is_valid(pf) {
            bail!("--pf {pf} is invalid: it must be at least 0 and below 1");
        }
        tracing::warn!("--insecure-pf: pf {pf} is for experiments only");
    } else if !crowds_proto::pf_is_secure(pf) {
        bail!("--pf {pf} is invalid: it must be greater than 0.5 and less than 1 (use --insecure-pf for experiments)");
    }
    Ok(())
}

async fn run_blender(args: BlenderArgs) -> Result<()> {
    check_pf(args.pf, args.insecure_pf)?;
    let mut config = BlenderConfig::new(args.data_dir, args.listen);
    config.forward_probability = args.pf;
    config.join_interval = args.join_interval;
    config.heartbeat_timeout = args.heartbeat_timeout;
    config.document_lifetime = args.document_lifetime;
    config.rejoin_interval = args.rejoin_interval;
    config.control_listen = args.control_listen;
    let shutdown = shutdown_on_signal();
    let running = blender::start(config, shutdown).await?;
    eprintln!(
        "blender listening on {} with key {}",
        running.addr, running.public_key
    );
    running.wait().await;
    Ok(())
}

fn merge(flags: JondoArgs) -> Result<JondoConfig> {
    let file: JondoArgs = match &flags.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?;
            toml::from_str(&text).map_err(|e| anyhow!("config file {}: {e}", path.display()))?
        }
        None => JondoArgs::default(),
    };
    fn need<T>(flag: Option<T>, file: Option<T>, name: &str) -> Result<T> {
        flag.or(file).ok_or_else(|| {
            anyhow!(
                "missing --{name} (or `{}` in the --config file)",
                name.replace('-', "_")
            )
        })
    }
    let blender_key_file = need(flags.blender_key, file.blender_key, "blender-key")?;
    let password_file = need(flags.password_file, file.password_file, "password-file")?;
    let config = JondoConfig {
        data_dir: need(flags.data_dir, file.data_dir, "data-dir")?,
        blender: need(flags.blender, file.blender, "blender")?,
        blender_key: files::read_public_key(&blender_key_file)?,
        account: need(flags.account, file.account, "account")?,
        password: files::read_password_file(&password_file)?,
        peer_listen: need(flags.peer_listen, file.peer_listen, "peer-listen")?,
        advertise: flags.advertise.or(file.advertise),
        proxy_listen: flags
            .proxy_listen
            .or(file.proxy_listen)
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8118))),
        socks_listen: Some(
            flags
                .socks_listen
                .or(file.socks_listen)
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 1080))),
        ),
        control_listen: flags
            .control_listen
            .or(file.control_listen)
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8119))),
        allow_private_destinations: flags.allow_private_destinations
            || file.allow_private_destinations,
        heartbeat_interval: flags
            .heartbeat_interval
            .or(file.heartbeat_interval)
            .unwrap_or(Duration::from_secs(5)),
        poll_interval: flags
            .poll_interval
            .or(file.poll_interval)
            .unwrap_or(Duration::from_secs(1)),
        idle_timeout: flags
            .idle_timeout
            .or(file.idle_timeout)
            .unwrap_or(Duration::from_secs(300)),
        server_timeout: flags
            .server_timeout
            .or(file.server_timeout)
            .unwrap_or(Duration::from_secs(60)),
        keep_cookies: flags.keep_cookies || file.keep_cookies,
        exit_ports: flags.exit_ports.or(file.exit_ports),
    };
    for (name, addr) in [
        ("proxy-listen", Some(config.proxy_listen)),
        ("socks-listen", config.socks_listen),
        ("control-listen", Some(config.control_listen)),
    ] {
        if let Some(a) = addr.filter(|a| !a.ip().is_loopback()) {
            tracing::warn!(
                "--{name} {a} is not a loopback address: other machines can use this port"
            );
        }
    }
    Ok(config)
}

async fn run_jondo(args: JondoArgs) -> Result<()> {
    let config = merge(args)?;
    let shutdown = shutdown_on_signal();
    let running = jondo::start(config, shutdown.clone()).await?;
    eprintln!(
        "jondo member {}: HTTP proxy on {}, status on http://{}/status.json, peers on {}",
        running.member_id, running.proxy_addr, running.control_addr, running.peer_addr
    );
    shutdown.cancelled().await;
    let busy = running.node.in_flight();
    eprintln!("leaving the crowd; letting {busy} in-flight requests finish (at most 10 s)…");
    running.leave(Duration::from_secs(10)).await;
    running.wait().await;
    Ok(())
}

async fn run_demo(args: DemoArgs) -> Result<()> {
    check_pf(args.pf, false)?;
    let shutdown = shutdown_on_signal();
    let config = DemoConfig {
        jondos: args.jondos,
        forward_probability: args.pf,
        proxy_port: args.proxy_port,
    };
    eprintln!(
        "starting a crowd of {} jondos (pf {}) on this machine…",
        args.jondos, args.pf
    );
    let crowd = demo::start(&config, shutdown.clone()).await?;
    let site = crowd.site.addr;
    let first = crowd.jondos[0].proxy_addr;
    if let Some(k) = args.requests {
        let visits = demo::browse(&crowd, k)
            .await
            .map_err(|e| anyhow!("demo request failed: {e}"))?;
        println!(
            "{:>7}  {:>9}  {:<22}",
            "request", "initiator", "server saw (exit)"
        );
        for v in &visits {
            println!(
                "{:>7}  {:>9}  {:<22}",
                v.n,
                format!("jondo {}", v.initiator),
                describe(&v.seen_as)
            );
        }
        println!(
            "\nThe server saw only crowd members; each initiator's requests leave through one exit\nuntil the crowd changes (static paths)."
        );
        shutdown.cancel();
        return Ok(());
    }
    println!(
        "A crowd of {} jondos is running (pf {}).",
        args.jondos, args.pf
    );
    match crowd.blender.control_addr {
        Some(c) => println!(
            "  blender       {}   status http://{c}/",
            crowd.blender.addr
        ),
        None => println!("  blender       {}", crowd.blender.addr),
    }
    for (i, j) in crowd.jondos.iter().enumerate() {
        println!(
            "  jondo {:<3}    peer {:<21} proxy http://{:<21} status http://{}/",
            i + 1,
            j.peer_addr.to_string(),
            j.proxy_addr.to_string(),
            j.control_addr
        );
    }
    println!("  sample site   http://{site}/");
    if let Some(socks) = crowd.jondos[0].socks_addr {
        println!("  SOCKS5        {socks} (jondo 1)");
    }
    println!();
    println!("Browse through the crowd:");
    println!("  curl -x http://{first} http://{site}/whoami");
    if let Some(socks) = crowd.jondos[0].socks_addr {
        println!("  curl --socks5-hostname {socks} http://{site}/whoami");
    }
    println!(
        "  chromium --proxy-server=http://{first} --proxy-bypass-list='<-loopback>' http://{site}/"
    );
    println!("Press Ctrl-C to stop.");
    shutdown.cancelled().await;
    eprintln!("stopping the crowd…");
    Ok(())
}

fn describe(seen: &str) -> String {
    // Jondo i listens on 127.0.0.(i+1).
    match seen
        .strip_prefix("127.0.0.")
        .and_then(|d| d.parse::<u8>().ok())
    {
        Some(d) if d >= 2 => format!("{seen} (jondo {})", d - 1),
        _ => seen.to_string(),
    }
}
