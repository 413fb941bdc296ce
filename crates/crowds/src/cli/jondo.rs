//! `crowds jondo`: the jondo's settings (the one table their flags, environment
//! variables, TOML keys, defaults and help come from), their merge into a
//! [`JondoConfig`], and running the jondo until a signal.
//!
//! Defaults come from [`crowds_jondo`] (its [`JondoConfig::new`] and constants) except
//! the local ports, which are the command line's own. It must not repeat a library
//! default as a number, nor parse a value itself: [`super::settings`] does that.

use super::settings::{
    config_arg, need, read_file, settings, xdg_data_dir, Fallback, Limit, SettingValue,
};
use anyhow::{bail, Result};
use clap::ArgMatches;
use crowds_jondo::jondo::{self, JondoConfig};
use crowds_net::files;
use crowds_net::safelog::Secret;
use crowds_proto::identity::PublicKey;
use crowds_proto::policy::PortPolicy;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

/// The local HTTP proxy's address unless told otherwise (on loopback: only this
/// machine's browser may use it).
pub const PROXY_LISTEN: SocketAddr = loopback(8118);
/// The local SOCKS5 proxy's address unless told otherwise.
pub const SOCKS_LISTEN: SocketAddr = loopback(1080);
/// The status port's address unless told otherwise.
pub const CONTROL_LISTEN: SocketAddr = loopback(8119);
/// Worker threads unless told otherwise: one, the cheapest per relayed request (see
/// [`jondo::runtime`]).
pub const THREADS: usize = 1;

const fn loopback(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
}

/// The library's defaults, to read each setting's default from.
fn library() -> JondoConfig {
    JondoConfig::new(
        PathBuf::new(),
        String::new(),
        PublicKey([0; 32]),
        String::new(),
        Secret::new(String::new()),
        loopback(0),
    )
}

/// The jondo's config file in the XDG config directory.
pub const CONFIG_FILE: &str = "jondo.toml";

settings! {
    #[env_prefix = "CROWDS_"]
    /// Jondo settings, each from (in this order of precedence) its flag, its environment
    /// variable (`CROWDS_` and the name in capitals), the TOML file given with `--config`
    /// (default: `$XDG_CONFIG_HOME/crowds/jondo.toml` if it exists), or its default.
    pub struct JondoSettings {
        /// Directory holding this jondo's identity key (identity.key, mode 0600).
        data_dir: PathBuf = Fallback::Unset {
            meaning: "$XDG_DATA_HOME/crowds".into(),
            example: "\"/home/alice/.local/share/crowds\"".into(),
        };
        /// The blender's API address, HOST:PORT. Replicated blenders (one key, one shared
        /// database) are given as a list: the flag repeated or comma-separated, in the
        /// file ["a:7000", "b:7000"]; the jondo fails over between them.
        blender: Vec<String> = Fallback::Required { example: "\"blender.example.org:7000\"" };
        /// File with the blender's public key (its blender.pub).
        blender_key: PathBuf = Fallback::Required { example: "\"/etc/crowds/blender.pub\"" };
        /// Your account name at the blender.
        account: String = Fallback::Required { example: "\"alice\"" };
        /// File whose first line is your password; must not be group or world readable
        /// (mode 0600).
        password_file: PathBuf = Fallback::Required {
            example: "\"/home/alice/.config/crowds/password\"",
        };
        /// Where other members connect to this jondo, HOST:PORT; must be reachable by them.
        peer_listen: SocketAddr = Fallback::Required { example: "\"0.0.0.0:7070\"" };
        /// Address announced to the crowd if not the peer-listen address (behind NAT, or
        /// when listening on 0.0.0.0).
        advertise: SocketAddr = Fallback::Unset {
            meaning: "the peer-listen address".into(),
            example: "\"203.0.113.5:7070\"".into(),
        };
        /// The local HTTP proxy for your browser (keep it on loopback).
        proxy_listen: SocketAddr = Fallback::Value(PROXY_LISTEN);
        /// The local SOCKS5 proxy (CONNECT; names are resolved at the exit).
        socks_listen: SocketAddr = Fallback::Value(SOCKS_LISTEN);
        /// The status port: a status page, /status.json, /metrics and /proxy.pac.
        control_listen: SocketAddr = Fallback::Value(CONTROL_LISTEN);
        /// Let this jondo's exit reach loopback and private addresses (testing only).
        allow_private_destinations: bool = Fallback::Value(library().allow_private_destinations);
        /// Destination ports this jondo's exit allows: a list like 80,443 or `any`.
        exit_ports: PortPolicy = Fallback::Unset {
            meaning: format!(
                "{}; any with --allow-private-destinations",
                PortPolicy::default().to_toml().as_str().unwrap_or_default()
            ),
            example: PortPolicy::default().to_toml().to_string(),
        };
        /// Keep Cookie/Set-Cookie on plain HTTP (every jondo on your path can read them).
        keep_cookies: bool = Fallback::Value(library().keep_cookies);
        /// Do not ask exits for page bundles: turns off the timing defence (the exit
        /// fetching a page's embedded objects and sending them with the page).
        no_prefetch: bool = Fallback::Value(library().no_prefetch);
        /// Remove scripts, plug-ins, event handlers and javascript: links from plain-HTTP
        /// pages, and forbid scripts with a Content-Security-Policy.
        strip_active_content: bool = Fallback::Value(library().strip_active_content);
        /// Answer CONNECT and SOCKS requests only once the exit has connected, instead of
        /// at once. Costs one round trip over the whole path per tunnel, but a refusal or
        /// failure then reaches the client as an HTTP status (or SOCKS reply) rather than
        /// as a TLS alert; for scripts that read the status.
        no_optimistic_tunnels: bool = Fallback::Value(!library().optimistic_tunnels);
        /// How often to tell the blender this jondo is alive. With neither this nor
        /// poll_interval given the jondo follows the blender's suggestions (this default
        /// with the blender's defaults, more with a longer heartbeat timeout); giving
        /// either turns them off.
        heartbeat_interval: Duration = Fallback::Value(library().heartbeat_interval);
        /// How often to check for a new crowd document. With neither this nor
        /// heartbeat_interval given the jondo follows the blender's suggestions (this
        /// default, and one second more per thousand members in bigger crowds).
        poll_interval: Duration = Fallback::Value(library().poll_interval);
        /// Close tunnels and response bodies that move no byte for this long.
        idle_timeout: Duration = Fallback::Value(library().idle_timeout);
        /// Time a server has to start answering, at this jondo's exit.
        server_timeout: Duration = Fallback::Value(library().server_timeout);
        /// Accept a crowd whose pf is at most 1/2, for experiments only: at such a pf no
        /// crowd size gives probable innocence, so by default the jondo refuses the crowd.
        insecure_allow_low_pf: bool = Fallback::Value(library().insecure_allow_low_pf);
        /// Most connections to the peer port from one address, so that one machine cannot
        /// take every slot.
        peer_connections_per_address: Limit = Fallback::Value(Limit(jondo::PEER_CONNECTIONS_PER_ADDRESS));
        /// Most connections to the peer port still in their TLS handshake; a new one cuts
        /// off the one waiting longest, so idle connections cannot lock members out.
        peer_handshakes: Limit = Fallback::Value(Limit(jondo::PEER_HANDSHAKES));
        /// Worker threads: 1 runs the jondo on one thread, the cheapest per relayed
        /// request; more let a busy exit spread TLS over cores; 0 means one per core.
        threads: usize = Fallback::Value(THREADS);
    }
}

/// The `jondo` command's arguments: the settings given by flags and environment
/// variables, and where the rest may come from.
#[derive(Debug)]
pub struct JondoArgs {
    /// The TOML file (`--config`), if given.
    pub config: Option<PathBuf>,
    /// What the flags and environment variables give.
    pub given: JondoSettings,
}

impl clap::FromArgMatches for JondoArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(Self {
            config: matches.get_one::<PathBuf>("config").cloned(),
            given: JondoSettings::from_matches(matches),
        })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl clap::Args for JondoArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        JondoSettings::augment(cmd.arg(config_arg("CROWDS_CONFIG", CONFIG_FILE)))
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

/// The jondo's settings from flags, environment and config file, and its thread count.
pub fn merge(args: JondoArgs) -> Result<(JondoConfig, usize)> {
    let file: JondoSettings = read_file(args.config.as_deref(), CONFIG_FILE)?;
    let given = args.given.or(file);
    // Either interval given turns the blender's suggestions off.
    let follow_blender_intervals =
        given.heartbeat_interval.is_none() && given.poll_interval.is_none();
    let s = given.or(JondoSettings::defaults());
    let mut blenders = need(s.blender, "blender")?;
    if blenders.is_empty() {
        bail!("missing --blender (or `blender` in the --config file)");
    }
    let blender_key_file = need(s.blender_key, "blender_key")?;
    let password_file = need(s.password_file, "password_file")?;
    let config = JondoConfig {
        data_dir: s.data_dir.unwrap_or_else(xdg_data_dir),
        blender: blenders.remove(0),
        fallback_blenders: blenders,
        blender_key: files::read_public_key(&blender_key_file)?,
        account: need(s.account, "account")?,
        password: files::read_password_file(&password_file)?,
        peer_listen: need(s.peer_listen, "peer_listen")?,
        advertise: s.advertise,
        proxy_listen: need(s.proxy_listen, "proxy_listen")?,
        socks_listen: Some(need(s.socks_listen, "socks_listen")?),
        control_listen: need(s.control_listen, "control_listen")?,
        allow_private_destinations: need(
            s.allow_private_destinations,
            "allow_private_destinations",
        )?,
        follow_blender_intervals,
        heartbeat_interval: need(s.heartbeat_interval, "heartbeat_interval")?,
        poll_interval: need(s.poll_interval, "poll_interval")?,
        idle_timeout: need(s.idle_timeout, "idle_timeout")?,
        server_timeout: need(s.server_timeout, "server_timeout")?,
        keep_cookies: need(s.keep_cookies, "keep_cookies")?,
        no_prefetch: need(s.no_prefetch, "no_prefetch")?,
        strip_active_content: need(s.strip_active_content, "strip_active_content")?,
        optimistic_tunnels: !need(s.no_optimistic_tunnels, "no_optimistic_tunnels")?,
        exit_ports: s.exit_ports,
        insecure_allow_low_pf: need(s.insecure_allow_low_pf, "insecure_allow_low_pf")?,
        peer_connections_per_address: need(
            s.peer_connections_per_address,
            "peer_connections_per_address",
        )?
        .0,
        peer_handshakes: need(s.peer_handshakes, "peer_handshakes")?.0,
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
    Ok((config, need(s.threads, "threads")?))
}

/// Runs the jondo until Ctrl-C or SIGTERM, then leaves the crowd politely.
pub async fn run(config: JondoConfig) -> Result<()> {
    let shutdown = super::shutdown_on_signal();
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
