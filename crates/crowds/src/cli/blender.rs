//! `crowds blender`: the blender's flags, their checks, and running the blender until a
//! signal.
//!
//! Every default is read from [`crowds_blender`] ([`BlenderConfig::new`], [`ApiLimits`]'s
//! `Default` and the crate's constants); this module must not repeat one as a number.
//! The blender's settings are flags only (no environment variables or file).

use super::accounts::StoreArgs;
use anyhow::{bail, Result};
use clap::Args;
use crowds_blender::{self as blender, ApiLimits, BlenderConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The library's defaults, to read each flag's default from.
pub fn defaults() -> BlenderConfig {
    BlenderConfig::new(PathBuf::new(), SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// A duration written the way people write it (`30s`, `10m`, `1day`), so that a
/// library default can be shown in the help and parsed back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span(pub Duration);

impl std::fmt::Display for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl std::str::FromStr for Span {
    type Err = humantime::DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(s).map(Span)
    }
}

#[derive(Args, Debug)]
pub struct BlenderArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Address of the blender's API, HOST:PORT.
    #[arg(long)]
    listen: SocketAddr,
    /// Forward probability pf of the default crowd (must be > 0.5 and < 1).
    #[arg(long, default_value_t = defaults().forward_probability)]
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
    #[arg(long, default_value_t = Span(defaults().join_interval))]
    join_interval: Span,
    /// A pending join that sends no heartbeat for this long is discarded; a member that
    /// long silent is shown as silent (it is dropped only after --grace-period).
    #[arg(long, default_value_t = Span(defaults().heartbeat_timeout))]
    heartbeat_timeout: Span,
    /// A member silent for longer than this is dropped at the next scheduled epoch; one
    /// back within it (a laptop that slept) is still a member and costs no epoch.
    #[arg(long, default_value_t = Span(defaults().grace_period))]
    grace_period: Span,
    /// Validity of each signed crowd document (re-signed at half-life).
    #[arg(long, default_value_t = Span(defaults().document_lifetime))]
    document_lifetime: Span,
    /// An account is admitted at most once per this interval (each admission re-forms
    /// every path, giving collaborators another look at each initiator).
    #[arg(long, default_value_t = Span(defaults().rejoin_interval))]
    rejoin_interval: Span,
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
    #[arg(long, default_value_t = Span(ApiLimits::default().handshake_timeout))]
    handshake_timeout: Span,
    /// Time for a request's head, and again for its body.
    #[arg(long, default_value_t = Span(ApiLimits::default().read_timeout))]
    read_timeout: Span,
    /// Time for a whole API connection, answer included.
    #[arg(long, default_value_t = Span(ApiLimits::default().connection_timeout))]
    connection_timeout: Span,
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

/// `NAME=PF` of `--crowd`: a valid name other than the default crowd's, and a number.
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

/// Refuses a pf without probable innocence unless `insecure` (then only an impossible one).
pub fn check_pf(pf: f64, insecure: bool) -> Result<()> {
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

/// Runs the blender until Ctrl-C or SIGTERM.
pub async fn run(args: BlenderArgs) -> Result<()> {
    check_pf(args.pf, args.insecure_pf)?;
    for (_, pf) in &args.crowds {
        check_pf(*pf, args.insecure_pf)?;
    }
    let mut config = BlenderConfig::new(args.store.data_dir.clone(), args.listen);
    config.database = args.store.database()?;
    config.extra_crowds = args.crowds;
    config.forward_probability = args.pf;
    config.join_interval = args.join_interval.0;
    config.heartbeat_timeout = args.heartbeat_timeout.0;
    config.grace_period = args.grace_period.0;
    config.document_lifetime = args.document_lifetime.0;
    config.rejoin_interval = args.rejoin_interval.0;
    config.control_listen = args.control_listen;
    config.limits = ApiLimits {
        max_member_connections: args.max_member_connections,
        max_stranger_connections: args.max_stranger_connections,
        max_connections_per_address: args.max_connections_per_address,
        handshake_timeout: args.handshake_timeout.0,
        read_timeout: args.read_timeout.0,
        connection_timeout: args.connection_timeout.0,
        password_checks: args
            .password_checks
            .unwrap_or_else(blender::default_password_checks),
        password_check_queue: args.password_check_queue,
        max_throttled_keys: args.max_throttled_keys,
    };
    let shutdown = super::shutdown_on_signal();
    let running = blender::start(config, shutdown).await?;
    eprintln!(
        "blender listening on {} with key {}",
        running.addr, running.public_key
    );
    running.wait().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crowd_flags_are_checked() {
        assert_eq!(parse_crowd("slow=0.6"), Ok(("slow".to_string(), 0.6)));
        assert!(parse_crowd("slow").is_err());
        assert!(parse_crowd("default=0.8").is_err());
        assert!(parse_crowd("sl ow=0.8").is_err());
        assert!(parse_crowd("slow=fast").is_err());
    }

    #[test]
    fn durations_shown_in_the_help_parse_back() {
        let d = defaults();
        for span in [
            d.join_interval,
            d.heartbeat_timeout,
            d.grace_period,
            d.rejoin_interval,
        ] {
            assert_eq!(Span(span).to_string().parse::<Span>(), Ok(Span(span)));
        }
    }
}
