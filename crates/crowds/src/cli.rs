//! Command-line definitions and the glue from flags (and the jondo's TOML file) to the
//! daemons' configurations. Secrets never come from argv: passwords are read from
//! standard input or from a file only its owner can read.

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use crowds_blender::store::Store;
use crowds_blender::{self as blender, BlenderConfig};
use crowds_demo::demo::{self, DemoConfig};
use crowds_jondo::jondo::{self, JondoConfig};
use crowds_net::files;
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
    #[command(flatten)]
    global: GlobalArgs,
}

/// Options every command accepts.
#[derive(Args, Debug)]
struct GlobalArgs {
    /// Log format on standard error.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "CROWDS_LOG_FORMAT")]
    log_format: LogFormat,
    /// Log destinations (host names and addresses) at debug level. Never do this on a
    /// jondo others rely on: its log becomes a record of where people browse.
    #[arg(long, global = true)]
    unsafe_logging: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Manage the blender's accounts (passwords are read from standard input).
    #[command(subcommand)]
    Account(AccountCommand),
    /// Run the blender: the crowd's membership server.
    Blender(Box<BlenderArgs>),
    /// Run a jondo: your member of the crowd, with a local HTTP proxy.
    Jondo(Box<JondoArgs>),
    /// Run a whole crowd on this machine, with a sample website, ready to browse.
    Demo(DemoArgs),
    /// Write a commented jondo config file (every setting, its default and meaning) and
    /// create the identity key. Any jondo flag given here is written into the file.
    ///
    /// Example: crowds init --blender blender.example.org:7000 --account alice
    Init(Box<InitArgs>),
    /// Print shell completions (bash, zsh, fish, elvish, powershell) to standard output.
    ///
    /// Example: crowds completions bash > /etc/bash_completion.d/crowds
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to standard output.
    ///
    /// Example: crowds manpage > /usr/local/share/man/man1/crowds.1
    Manpage,
    /// Anonymity figures of a crowd: the paper's closed forms beside Monte Carlo over the
    /// jondos' own path code, the predecessor attack, optional JSON and SVG plots.
    ///
    /// Example: crowds analyze --members 20 --collaborators 3 --pf 0.75 --svg crowd.svg
    Analyze(crate::analyze::AnalyzeArgs),
    /// Open a web browser that sends everything through your jondo, hardened against
    /// the leaks a proxy cannot see (WebRTC, DNS prefetch, QUIC, background requests);
    /// refuses to start until the jondo is a member of the crowd.
    ///
    /// Example: crowds browser example.org
    ///
    /// Example: crowds browser --headless --screenshot page.png example.org
    Browser(Box<crate::browser::BrowserArgs>),
}

#[derive(Args, Debug)]
struct InitArgs {
    /// Where to write the config file [default: $XDG_CONFIG_HOME/crowds/jondo.toml].
    #[arg(long)]
    output: Option<PathBuf>,
    /// Replace an existing file.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    jondo: JondoArgs,
}

#[derive(Subcommand, Debug)]
enum AccountCommand {
    /// Create an account; reads the password (one line) from standard input.
    ///
    /// Example: echo "$PASSWORD" | crowds account add --data-dir blender-data alice
    ///
    /// Example (a separate slow crowd): echo "$PASSWORD" | crowds account add --data-dir blender-data --crowd slow bob
    Add {
        #[command(flatten)]
        store: StoreArgs,
        /// The named crowd this account joins (the blender must serve it: --crowd on
        /// `crowds blender`).
        #[arg(long, default_value = crowds_blender::store::DEFAULT_CROWD)]
        crowd: String,
        /// Account name: letters, digits, '.', '_' or '-'.
        name: String,
    },
    /// List accounts (never passwords): id, name, crowd.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove an account.
    Remove {
        #[command(flatten)]
        store: StoreArgs,
        /// Account name.
        name: String,
    },
}

/// Where the blender keeps its accounts and crowds.
#[derive(Args, Debug)]
struct StoreArgs {
    /// The blender's data directory (created if missing): its signing key, and the
    /// SQLite database unless --database is given.
    #[arg(long)]
    data_dir: PathBuf,
    /// A PostgreSQL database shared by replicated blenders, as postgres://USER@HOST:PORT/DB
    /// (no password in it: use --database-password-file) [default: SQLite in --data-dir].
    #[arg(long, env = "CROWDS_DATABASE")]
    database: Option<String>,
    /// File holding the database password (first line; mode 0600).
    #[arg(long, env = "CROWDS_DATABASE_PASSWORD_FILE", requires = "database")]
    database_password_file: Option<PathBuf>,
}

impl StoreArgs {
    fn database(&self) -> Result<Option<crowds_blender::store::DatabaseConfig>> {
        let Some(url) = &self.database else {
            return Ok(None);
        };
        let password = self
            .database_password_file
            .as_deref()
            .map(files::read_password_file)
            .transpose()?
            .map(std::sync::Arc::new);
        Ok(Some(crowds_blender::store::DatabaseConfig {
            url: url.clone(),
            password,
        }))
    }

    fn open(&self) -> Result<Store> {
        Ok(Store::open_database(
            &self.data_dir,
            self.database()?.as_ref(),
        )?)
    }
}

#[derive(Args, Debug)]
struct BlenderArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Address of the blender's API, HOST:PORT.
    #[arg(long)]
    listen: SocketAddr,
    /// Forward probability pf of the default crowd (must be > 0.5 and < 1).
    #[arg(long, default_value_t = 0.75)]
    pf: f64,
    /// Also serve the named crowd with its own pf, as NAME=PF (repeatable), e.g. a
    /// separate slow crowd for poorly connected members: --crowd slow=0.6.
    #[arg(long = "crowd", value_name = "NAME=PF", value_parser = parse_crowd)]
    crowds: Vec<(String, f64)>,
    /// Allow any pf in [0, 1) for experiments (no anonymity guarantee below 0.5).
    #[arg(long)]
    insecure_pf: bool,
    /// Epochs (batches of joins, leaves and drops; each re-forms every path) are cut only
    /// at multiples of this interval since the unix epoch, and only when a change is
    /// waiting: with the default, at midnight UTC. New members wait for the next one.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    join_interval: Duration,
    /// A pending join that sends no heartbeat for this long is discarded; a member that
    /// long silent is shown as silent (it is dropped only after --grace-period).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    heartbeat_timeout: Duration,
    /// A member silent for longer than this is dropped at the next scheduled epoch; one
    /// back within it (a laptop that slept) is still a member and costs no epoch.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    grace_period: Duration,
    /// Validity of each signed crowd document (re-signed at half-life).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    document_lifetime: Duration,
    /// An account is admitted at most once per this interval (each admission re-forms
    /// every path, giving collaborators another look at each initiator).
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    rejoin_interval: Duration,
    /// Serve a status page, /status.json and /metrics here (e.g. 127.0.0.1:7001).
    #[arg(long)]
    control_listen: Option<SocketAddr>,
    /// Most API connections of members at once (from members' addresses, or proving a
    /// member's key); strangers cannot take these.
    #[arg(long, default_value_t = blender::MAX_API_CONNECTIONS, value_parser = at_least_one)]
    max_member_connections: usize,
    /// Most API connections of strangers (no member key yet, e.g. joins) at once: this
    /// many in their TLS handshake (a new one cuts off the oldest) and this many past it.
    #[arg(long, default_value_t = blender::MAX_STRANGER_CONNECTIONS, value_parser = at_least_one)]
    max_stranger_connections: usize,
    /// Most API connections not yet proven a member's from one address (IPv6: one /64).
    #[arg(long, default_value_t = blender::MAX_CONNECTIONS_PER_ADDRESS, value_parser = at_least_one)]
    max_connections_per_address: usize,
    /// Time for a client's TLS handshake with the API.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    handshake_timeout: Duration,
    /// Time for a request's head, and again for its body.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    read_timeout: Duration,
    /// Time for a whole API connection, answer included.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    connection_timeout: Duration,
    /// Password checks run at once; each holds about 19 MiB [default: one per core].
    #[arg(long, value_parser = at_least_one)]
    password_checks: Option<usize>,
    /// Password checks waiting for a free worker; joins beyond them get 503 with
    /// Retry-After.
    #[arg(long, default_value_t = blender::PASSWORD_CHECK_QUEUE)]
    password_check_queue: usize,
    /// Account names and addresses the login throttle remembers (the least recently
    /// seen are forgotten first).
    #[arg(long, default_value_t = crowds_proto::throttle::DEFAULT_MAX_TRACKED, value_parser = at_least_one)]
    max_throttled_keys: usize,
}

/// A count of at least one.
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{s:?}: give a whole number of at least 1")),
    }
}

/// Jondo settings. Each comes, in this order of precedence, from its flag, its
/// environment variable (`CROWDS_` + the name in capitals with underscores), the TOML
/// file given with `--config` (default: `$XDG_CONFIG_HOME/crowds/jondo.toml` if it
/// exists), or its default.
#[derive(Args, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct JondoArgs {
    /// TOML file with any of these settings (flags and environment override it)
    /// [default: $XDG_CONFIG_HOME/crowds/jondo.toml if it exists].
    #[arg(long, env = "CROWDS_CONFIG")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Directory for the identity key [default: $XDG_DATA_HOME/crowds].
    #[arg(long, env = "CROWDS_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The blender's API address, HOST:PORT. Repeat it (or separate with commas) for
    /// replicated blenders sharing one key and database: the jondo fails over between them.
    #[arg(long, env = "CROWDS_BLENDER", value_delimiter = ',')]
    #[serde(default, deserialize_with = "one_or_many")]
    blender: Option<Vec<String>>,
    /// File with the blender's public key (its blender.pub).
    #[arg(long, env = "CROWDS_BLENDER_KEY")]
    blender_key: Option<PathBuf>,
    /// Account name at the blender.
    #[arg(long, env = "CROWDS_ACCOUNT")]
    account: Option<String>,
    /// File holding the password (first line); must not be group/world readable.
    #[arg(long, env = "CROWDS_PASSWORD_FILE")]
    password_file: Option<PathBuf>,
    /// Where other jondos connect, HOST:PORT.
    #[arg(long, env = "CROWDS_PEER_LISTEN")]
    peer_listen: Option<SocketAddr>,
    /// Address announced to the crowd if not the peer-listen address (NAT, 0.0.0.0).
    #[arg(long, env = "CROWDS_ADVERTISE")]
    advertise: Option<SocketAddr>,
    /// The local HTTP proxy for your browser [default: 127.0.0.1:8118].
    #[arg(long, env = "CROWDS_PROXY_LISTEN")]
    proxy_listen: Option<SocketAddr>,
    /// The local SOCKS5 proxy (CONNECT; names are resolved at the exit) [default: 127.0.0.1:1080].
    #[arg(long, env = "CROWDS_SOCKS_LISTEN")]
    socks_listen: Option<SocketAddr>,
    /// The status port (GET /status.json) [default: 127.0.0.1:8119].
    #[arg(long, env = "CROWDS_CONTROL_LISTEN")]
    control_listen: Option<SocketAddr>,
    /// Let this jondo's exit reach loopback and private addresses (testing only).
    #[arg(long, env = "CROWDS_ALLOW_PRIVATE_DESTINATIONS")]
    #[serde(default)]
    allow_private_destinations: bool,
    /// Heartbeat interval [default: as the blender suggests, 5s with its defaults;
    /// giving this or --poll-interval turns the blender's suggestions off].
    #[arg(long, env = "CROWDS_HEARTBEAT_INTERVAL", value_parser = humantime::parse_duration)]
    #[serde(default, with = "opt_duration")]
    heartbeat_interval: Option<Duration>,
    /// How often to check for a new crowd document [default: as the blender suggests:
    /// 1s, and longer in crowds of more than 1000 members].
    #[arg(long, env = "CROWDS_POLL_INTERVAL", value_parser = humantime::parse_duration)]
    #[serde(default, with = "opt_duration")]
    poll_interval: Option<Duration>,
    /// Close tunnels and response bodies that move no byte for this long [default: 5m].
    #[arg(long, env = "CROWDS_IDLE_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(default, with = "opt_duration")]
    idle_timeout: Option<Duration>,
    /// Keep Cookie/Set-Cookie on plain HTTP (every jondo on your path can read them).
    #[arg(long, env = "CROWDS_KEEP_COOKIES")]
    #[serde(default)]
    keep_cookies: bool,
    /// Do not ask exits for page bundles: turns off the timing defence (the exit
    /// fetching a page's embedded objects and sending them with the page).
    #[arg(long, env = "CROWDS_NO_PREFETCH")]
    #[serde(default)]
    no_prefetch: bool,
    /// Remove scripts, plug-ins, event handlers and javascript: links from plain-HTTP
    /// pages, and forbid scripts with a Content-Security-Policy.
    #[arg(long, env = "CROWDS_STRIP_ACTIVE_CONTENT")]
    #[serde(default)]
    strip_active_content: bool,
    /// Destination ports this jondo's exit allows: a list like 80,443 or `any`
    /// [default: 80,443,8000,8008,8080,8443,8888; any with --allow-private-destinations].
    #[arg(long, env = "CROWDS_EXIT_PORTS", value_parser = crowds_proto::policy::PortPolicy::parse)]
    #[serde(default, deserialize_with = "opt_ports")]
    exit_ports: Option<crowds_proto::policy::PortPolicy>,
    /// Time a server has to start answering, at this jondo's exit [default: 60s].
    #[arg(long, env = "CROWDS_SERVER_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(default, with = "opt_duration")]
    server_timeout: Option<Duration>,
    /// Accept a crowd whose pf is at most 1/2, for experiments only: at such a pf no
    /// crowd size gives probable innocence, so by default the jondo refuses the crowd.
    #[arg(long, env = "CROWDS_INSECURE_ALLOW_LOW_PF")]
    #[serde(default)]
    insecure_allow_low_pf: bool,
    /// Worker threads: 1 runs the jondo on one thread, the cheapest per relayed request;
    /// more let a busy exit spread TLS over cores; 0 means one per core [default: 1].
    #[arg(long, env = "CROWDS_THREADS")]
    threads: Option<usize>,
    /// Most connections to the peer port from one address, so that one machine cannot
    /// take every slot [default: 32].
    #[arg(long, env = "CROWDS_PEER_CONNECTIONS_PER_ADDRESS", value_parser = clap::value_parser!(u32).range(1..))]
    peer_connections_per_address: Option<u32>,
    /// Most connections to the peer port still in their TLS handshake; a new one cuts
    /// off the one waiting longest, so idle connections cannot lock members out
    /// [default: 128].
    #[arg(long, env = "CROWDS_PEER_HANDSHAKES", value_parser = clap::value_parser!(u32).range(1..))]
    peer_handshakes: Option<u32>,
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

/// `blender = "host:port"` or `blender = ["host:port", "other:port"]`.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => None,
        Some(OneOrMany::One(s)) => Some(vec![s]),
        Some(OneOrMany::Many(v)) => Some(v),
    })
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
/// demo, whose output is its table and instructions), as text or JSON lines.
pub fn init_logging(cli: &Cli) {
    let default = match cli.command {
        Command::Demo(_) => "warn",
        _ => "info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.global.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    if cli.global.unsafe_logging {
        crowds_net::safelog::set_unsafe_logging(true);
        tracing::warn!(
            "UNSAFE LOGGING IS ON: destinations will appear in this log. This log is now a record \
             of where people browse; turn it off unless you are debugging your own traffic."
        );
    }
}

/// Runs the parsed command: a jondo on as many threads as its settings say (see
/// [`jondo::runtime`]), the blender and the demo on one worker per core, and the rest
/// without a runtime.
pub fn run(cli: Cli) -> Result<()> {
    let multi_thread = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    };
    match cli.command {
        Command::Jondo(args) => {
            let (config, threads) = merge(*args)?;
            jondo::runtime(threads)?.block_on(run_jondo(config))
        }
        Command::Blender(args) => multi_thread()?.block_on(run_blender(*args)),
        Command::Demo(args) => multi_thread()?.block_on(run_demo(args)),
        // The PostgreSQL client runs a small runtime of its own, so none here.
        Command::Account(cmd) => account(cmd),
        Command::Init(args) => init(*args),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "crowds", &mut std::io::stdout());
            Ok(())
        }
        Command::Manpage => {
            let cmd = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?;
            Ok(())
        }
        Command::Analyze(args) => crate::analyze::run(args),
        Command::Browser(args) => crate::browser::run(*args),
    }
}

fn parse_crowd(text: &str) -> Result<(String, f64), String> {
    let (name, pf) = text
        .split_once('=')
        .ok_or("expected NAME=PF, e.g. slow=0.6")?;
    if !crowds_blender::store::valid_name(name) || name == crowds_blender::store::DEFAULT_CROWD {
        return Err(format!(
            "invalid crowd name {name:?}: use 1 to 64 letters, digits, '.', '_' or '-' (not \"default\")"
        ));
    }
    let pf: f64 = pf
        .parse()
        .map_err(|_| format!("invalid pf {pf:?}: expected a number like 0.75"))?;
    Ok((name.to_string(), pf))
}

fn account(cmd: AccountCommand) -> Result<()> {
    match cmd {
        AccountCommand::Add { store, crowd, name } => {
            let mut line = zeroize::Zeroizing::new(String::new());
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("cannot read the password from standard input")?;
            let password = line.trim_end_matches(['\n', '\r']);
            if password.is_empty() {
                bail!("no password on standard input; pipe one line, e.g.: echo \"$PASSWORD\" | crowds account add --data-dir DIR NAME");
            }
            let mut store = store.open()?;
            let id = store.add_account_in(&name, password, &crowd)?;
            eprintln!("account {name} created in crowd {crowd} (member id {id})");
        }
        AccountCommand::List { store } => {
            let mut store = store.open()?;
            for a in store.list_accounts()? {
                println!("{}\t{}\t{}", a.id, a.name, a.crowd);
            }
        }
        AccountCommand::Remove { store, name } => {
            let mut store = store.open()?;
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
    for (_, pf) in &args.crowds {
        check_pf(*pf, args.insecure_pf)?;
    }
    let mut config = BlenderConfig::new(args.store.data_dir.clone(), args.listen);
    config.database = args.store.database()?;
    config.extra_crowds = args.crowds;
    config.forward_probability = args.pf;
    config.join_interval = args.join_interval;
    config.heartbeat_timeout = args.heartbeat_timeout;
    config.grace_period = args.grace_period;
    config.document_lifetime = args.document_lifetime;
    config.rejoin_interval = args.rejoin_interval;
    config.control_listen = args.control_listen;
    config.limits = blender::ApiLimits {
        max_member_connections: args.max_member_connections,
        max_stranger_connections: args.max_stranger_connections,
        max_connections_per_address: args.max_connections_per_address,
        handshake_timeout: args.handshake_timeout,
        read_timeout: args.read_timeout,
        connection_timeout: args.connection_timeout,
        password_checks: args
            .password_checks
            .unwrap_or_else(blender::default_password_checks),
        password_check_queue: args.password_check_queue,
        max_throttled_keys: args.max_throttled_keys,
    };
    let shutdown = shutdown_on_signal();
    let running = blender::start(config, shutdown).await?;
    eprintln!(
        "blender listening on {} with key {}",
        running.addr, running.public_key
    );
    running.wait().await;
    Ok(())
}

/// The jondo's settings from flags, environment and config file, and its thread count.
fn merge(flags: JondoArgs) -> Result<(JondoConfig, usize)> {
    let config_path = flags
        .config
        .clone()
        .or_else(|| Some(xdg_config_file()).filter(|p| p.exists()));
    let file: JondoArgs = match &config_path {
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
    let mut blenders = need(flags.blender, file.blender, "blender")?;
    if blenders.is_empty() {
        bail!("missing --blender (or `blender` in the --config file)");
    }
    let blender_key_file = need(flags.blender_key, file.blender_key, "blender-key")?;
    let password_file = need(flags.password_file, file.password_file, "password-file")?;
    let config = JondoConfig {
        data_dir: flags
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(xdg_data_dir),
        blender: blenders.remove(0),
        fallback_blenders: blenders,
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
        follow_blender_intervals: flags
            .heartbeat_interval
            .or(file.heartbeat_interval)
            .or(flags.poll_interval)
            .or(file.poll_interval)
            .is_none(),
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
        no_prefetch: flags.no_prefetch || file.no_prefetch,
        strip_active_content: flags.strip_active_content || file.strip_active_content,
        exit_ports: flags.exit_ports.or(file.exit_ports),
        insecure_allow_low_pf: flags.insecure_allow_low_pf || file.insecure_allow_low_pf,
        peer_connections_per_address: flags
            .peer_connections_per_address
            .or(file.peer_connections_per_address)
            .map_or(jondo::PEER_CONNECTIONS_PER_ADDRESS, |n| n as usize),
        peer_handshakes: flags
            .peer_handshakes
            .or(file.peer_handshakes)
            .map_or(jondo::PEER_HANDSHAKES, |n| n as usize),
    };
    if config.insecure_allow_low_pf {
        tracing::warn!(
            "--insecure-allow-low-pf: this jondo will use a crowd whose pf is at most 1/2, \
             where no crowd size gives probable innocence; for experiments only"
        );
    }
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
    Ok((config, flags.threads.or(file.threads).unwrap_or(1)))
}

async fn run_jondo(config: JondoConfig) -> Result<()> {
    let shutdown = shutdown_on_signal();
    let running = match jondo::start(config, shutdown.clone()).await {
        Ok(r) => r,
        // Stopped while waiting for the blender: a clean exit, not a failure.
        Err(_) if shutdown.is_cancelled() => return Ok(()),
        Err(e) => return Err(e.into()),
    };
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
    // Progress on one rewritten line on a terminal, one line per step otherwise.
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let show = move |step: demo::Step| {
        if tty {
            eprint!("\r\x1b[2K{step}");
        } else {
            eprintln!("{step}");
        }
    };
    let crowd = demo::start_with_progress(&config, shutdown.clone(), &show).await?;
    if tty {
        eprintln!();
    }
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

fn xdg_dir(var: &str, fallback: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(fallback)))
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `$XDG_DATA_HOME/crowds` (or `~/.local/share/crowds`).
fn xdg_data_dir() -> PathBuf {
    xdg_dir("XDG_DATA_HOME", ".local/share").join("crowds")
}

/// `$XDG_CONFIG_HOME/crowds/jondo.toml` (or `~/.config/crowds/jondo.toml`).
fn xdg_config_file() -> PathBuf {
    xdg_dir("XDG_CONFIG_HOME", ".config")
        .join("crowds")
        .join("jondo.toml")
}

fn toml_value<T: std::fmt::Display>(v: &Option<T>) -> Option<String> {
    v.as_ref()
        .map(|v| toml::Value::String(v.to_string()).to_string())
}

fn init(args: InitArgs) -> Result<()> {
    let path = args.output.clone().unwrap_or_else(xdg_config_file);
    if path.exists() && !args.force {
        bail!(
            "{} already exists; use --force to replace it",
            path.display()
        );
    }
    let j = &args.jondo;
    let data_dir = j.data_dir.clone().unwrap_or_else(xdg_data_dir);
    let key = files::load_or_create_identity(&data_dir)?;
    let dur = |d: &Option<Duration>| d.map(|d| humantime::format_duration(d).to_string());
    let line = |out: &mut String, help: &str, key: &str, value: Option<String>, example: &str| {
        out.push_str(&format!("\n# {help}\n"));
        match value {
            Some(v) => out.push_str(&format!("{key} = {v}\n")),
            None => out.push_str(&format!("# {key} = {example}\n")),
        }
    };
    let mut out = String::from(
        "# crowds jondo configuration (written by `crowds init`).\n\
         # Run with: crowds jondo --config THIS_FILE\n\
         # Precedence: command-line flags > CROWDS_* environment variables > this file > defaults.\n\
         # Lines starting with '#' show the default or an example; remove the '#' to set them.\n",
    );
    let path_s = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
    line(
        &mut out,
        "Directory holding this jondo's identity key (identity.key, mode 0600).",
        "data_dir",
        Some(toml::Value::String(data_dir.display().to_string()).to_string()),
        "",
    );
    line(
        &mut out,
        "The blender's API address, HOST:PORT. Required. A list [\"a:7000\", \"b:7000\"] names\n\
         # replicated blenders (one key, one shared database) to fail over between.",
        "blender",
        j.blender.as_ref().map(|b| match b.as_slice() {
            [one] => toml::Value::String(one.clone()).to_string(),
            many => toml::Value::Array(many.iter().cloned().map(toml::Value::String).collect())
                .to_string(),
        }),
        "\"blender.example.org:7000\"",
    );
    line(
        &mut out,
        "File holding the blender's public key (its blender.pub). Required.",
        "blender_key",
        toml_value(&path_s(&j.blender_key)),
        "\"/etc/crowds/blender.pub\"",
    );
    line(
        &mut out,
        "Your account at the blender. Required.",
        "account",
        toml_value(&j.account),
        "\"alice\"",
    );
    line(
        &mut out,
        "File whose first line is your password; must be mode 0600. Required.",
        "password_file",
        toml_value(&path_s(&j.password_file)),
        "\"/home/alice/.config/crowds/password\"",
    );
    line(&mut out, "Where other members connect to this jondo, HOST:PORT. Required; must be reachable by them.", "peer_listen", toml_value(&j.peer_listen), "\"0.0.0.0:7070\"");
    line(&mut out, "Address announced to the crowd, if not peer_listen (behind NAT, or when listening on 0.0.0.0).", "advertise", toml_value(&j.advertise), "\"203.0.113.5:7070\"");
    line(
        &mut out,
        "The local HTTP proxy for your browser (keep it on loopback).",
        "proxy_listen",
        toml_value(&j.proxy_listen),
        "\"127.0.0.1:8118\"",
    );
    line(
        &mut out,
        "The local SOCKS5 proxy (CONNECT, names resolved at the exit).",
        "socks_listen",
        toml_value(&j.socks_listen),
        "\"127.0.0.1:1080\"",
    );
    line(
        &mut out,
        "The status page, /status.json, /metrics and /proxy.pac.",
        "control_listen",
        toml_value(&j.control_listen),
        "\"127.0.0.1:8119\"",
    );
    line(
        &mut out,
        "Let this jondo's exit reach loopback and private addresses (testing only).",
        "allow_private_destinations",
        j.allow_private_destinations.then(|| "true".into()),
        "false",
    );
    line(
        &mut out,
        "Destination ports this jondo's exit allows: \"80,443,...\" or \"any\".",
        "exit_ports",
        toml_value(&j.exit_ports.as_ref().map(|p| {
            match p {
                crowds_proto::policy::PortPolicy::Any => "any".to_string(),
                crowds_proto::policy::PortPolicy::Only(v) => v
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            }
        })),
        "\"80,443,8000,8008,8080,8443,8888\"",
    );
    line(
        &mut out,
        "Keep Cookie/Set-Cookie on plain HTTP (every jondo on your path can read them).",
        "keep_cookies",
        j.keep_cookies.then(|| "true".into()),
        "false",
    );
    line(
        &mut out,
        "How often to tell the blender this jondo is alive. Unset (with poll_interval\n\
         # unset too): as the blender suggests (5s with its defaults, more with a longer\n\
         # heartbeat timeout). Setting either turns the blender's suggestions off.",
        "heartbeat_interval",
        toml_value(&dur(&j.heartbeat_interval)),
        "\"5s\"",
    );
    line(
        &mut out,
        "How often to check for a new crowd document. Unset: as the blender suggests\n\
         # (1s, and one second per thousand members in bigger crowds).",
        "poll_interval",
        toml_value(&dur(&j.poll_interval)),
        "\"1s\"",
    );
    line(
        &mut out,
        "Close tunnels and response bodies that move no byte for this long.",
        "idle_timeout",
        toml_value(&dur(&j.idle_timeout)),
        "\"5m\"",
    );
    line(
        &mut out,
        "Time a server has to start answering, at this jondo's exit.",
        "server_timeout",
        toml_value(&dur(&j.server_timeout)),
        "\"60s\"",
    );
    line(
        &mut out,
        "Accept a crowd whose pf is at most 1/2 (experiments only: no crowd size then gives\n\
         # probable innocence, so by default the jondo refuses such a crowd).",
        "insecure_allow_low_pf",
        j.insecure_allow_low_pf.then(|| "true".into()),
        "false",
    );
    line(
        &mut out,
        "Most connections to the peer port from one address.",
        "peer_connections_per_address",
        j.peer_connections_per_address.map(|n| n.to_string()),
        &jondo::PEER_CONNECTIONS_PER_ADDRESS.to_string(),
    );
    line(
        &mut out,
        "Most peer connections still in their TLS handshake (the oldest makes room).",
        "peer_handshakes",
        j.peer_handshakes.map(|n| n.to_string()),
        &jondo::PEER_HANDSHAKES.to_string(),
    );
    line(
        &mut out,
        "Worker threads: 1 is the cheapest per relayed request; more let a busy exit\n\
         # spread TLS over cores; 0 means one per core.",
        "threads",
        j.threads.map(|n| n.to_string()),
        "1",
    );
    // The file must parse as a config before it is written.
    toml::from_str::<JondoArgs>(&out)
        .map_err(|e| anyhow!("internal error: generated config does not parse: {e}"))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(&path, out).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    eprintln!(
        "identity key in {} (public key {})",
        data_dir.display(),
        key.public()
    );
    eprintln!(
        "next: fill in the required settings, then run: crowds jondo --config {}",
        path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FULL: &str = r#"
data_dir = "/home/alice/.local/share/crowds"
blender = ["a.example.org:7000", "b.example.org:7000"]
blender_key = "/home/alice/blender.pub"
account = "alice"
password_file = "/home/alice/.crowds-password"
peer_listen = "0.0.0.0:7070"
advertise = "203.0.113.5:7070"
proxy_listen = "127.0.0.1:8118"
socks_listen = "127.0.0.1:1080"
control_listen = "127.0.0.1:8119"
heartbeat_interval = "5s"
poll_interval = "1s"
idle_timeout = "5m"
server_timeout = "60s"
exit_ports = "80,443"
keep_cookies = false
no_prefetch = false
strip_active_content = true
allow_private_destinations = false
insecure_allow_low_pf = false
threads = 2
"#;

    fn parse(text: &str) -> Result<JondoArgs, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn a_full_config_file_parses() {
        let args = parse(FULL).expect("parses");
        assert_eq!(
            args.blender.as_deref(),
            Some(
                &[
                    "a.example.org:7000".to_string(),
                    "b.example.org:7000".to_string()
                ][..]
            )
        );
        assert_eq!(args.heartbeat_interval, Some(Duration::from_secs(5)));
        assert!(args.strip_active_content);
        assert!(!args.insecure_allow_low_pf);
        assert_eq!(args.threads, Some(2));
        let low = parse("insecure_allow_low_pf = true").expect("the insecure flag");
        assert!(low.insecure_allow_low_pf);
        let one = parse("blender = \"a:1\"").expect("one blender");
        assert_eq!(one.blender, Some(vec!["a:1".to_string()]));
    }

    #[test]
    fn config_mistakes_get_clear_messages() {
        for (text, expect) in [
            ("acount = \"alice\"", "unknown field"),
            ("peer_listen = \"not an address\"", "peer_listen"),
            ("heartbeat_interval = \"soon\"", "heartbeat_interval"),
            ("exit_ports = \"80,http\"", "exit_ports"),
            ("blender = 7", "blender"),
            ("account = ", "account"),
            ("threads = -1", "threads"),
        ] {
            let err = parse(text).expect_err(text);
            assert!(err.contains(expect), "{text:?}: {err}");
        }
    }

    #[test]
    fn crowd_flags_are_checked() {
        assert_eq!(parse_crowd("slow=0.6"), Ok(("slow".to_string(), 0.6)));
        assert!(parse_crowd("slow").is_err());
        assert!(parse_crowd("default=0.8").is_err());
        assert!(parse_crowd("sl ow=0.8").is_err());
        assert!(parse_crowd("slow=fast").is_err());
    }

    proptest! {
        /// Any text: parsing never panics, and a refusal says something.
        #[test]
        fn arbitrary_config_text_never_panics(text in "\\PC{0,300}") {
            if let Err(e) = parse(&text) {
                prop_assert!(!e.is_empty());
            }
        }

        /// A valid file with one byte replaced or cut: a clean parse or a message.
        #[test]
        fn damaged_config_files_never_panic(at in 0usize..FULL.len(), byte in any::<u8>(), cut in any::<bool>()) {
            let mut bytes = FULL.as_bytes().to_vec();
            if cut {
                bytes.truncate(at);
            } else {
                bytes[at] = byte;
            }
            let text = String::from_utf8_lossy(&bytes);
            if let Err(e) = parse(&text) {
                prop_assert!(!e.is_empty());
            }
        }
    }
}
