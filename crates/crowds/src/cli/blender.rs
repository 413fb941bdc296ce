//! `crowds blender`: the blender's settings (the one table their flags, environment
//! variables, TOML keys, defaults and help come from), their merge into a
//! [`BlenderConfig`], and running the blender until a signal.
//!
//! Every default is read from [`crowds_blender`] ([`BlenderConfig::new`], [`ApiLimits`]'s
//! `Default` and the crate's constants); this module must not repeat one as a number,
//! nor parse a value itself beyond `--crowd`'s `NAME=PF` ([`super::settings`] does the
//! rest). Secrets stay off the command line and out of the environment: the database
//! password is read from the file `database_password_file` names.

use super::settings::{config_arg, need, read_file, settings, Fallback, Limit, ListItem};
use anyhow::{bail, Result};
use clap::ArgMatches;
use crowds_blender::store::DatabaseConfig;
use crowds_blender::{self as blender, ApiLimits, BlenderConfig};
use crowds_net::files;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The blender's config file in the XDG config directory.
pub const CONFIG_FILE: &str = "blender.toml";

/// The settings saying where the accounts and crowds are kept, which `crowds account`
/// takes too.
pub const STORE_KEYS: [&str; 3] = ["data_dir", "database", "database_password_file"];

/// The library's defaults, to read each setting's default from.
pub fn defaults() -> BlenderConfig {
    BlenderConfig::new(PathBuf::new(), SocketAddr::from(([127, 0, 0, 1], 0)))
}

settings! {
    #[env_prefix = "CROWDS_BLENDER_"]
    /// Blender settings, each from (in this order of precedence) its flag, its environment
    /// variable (`CROWDS_BLENDER_` and the name in capitals; the database's keep their
    /// older names), the TOML file given with `--config` (default:
    /// `$XDG_CONFIG_HOME/crowds/blender.toml` if it exists), or its default.
    pub struct BlenderSettings {
        /// The blender's data directory (created if missing): its signing key, and the
        /// SQLite database unless --database is given.
        data_dir: PathBuf = Fallback::Required { example: "\"/var/lib/crowds-blender\"" };
        /// A PostgreSQL database shared by replicated blenders, as
        /// postgres://USER@HOST:PORT/DB (no password in it: use --database-password-file).
        #[env = "CROWDS_DATABASE"]
        database: String = Fallback::Unset {
            meaning: "SQLite in --data-dir".into(),
            example: "\"postgres://crowds@db.example.org:5432/crowds\"".into(),
        };
        /// File holding the database password (first line; mode 0600).
        #[env = "CROWDS_DATABASE_PASSWORD_FILE"]
        database_password_file: PathBuf = Fallback::Unset {
            meaning: "none".into(),
            example: "\"/etc/crowds/db-password\"".into(),
        };
        /// Address of the blender's API, HOST:PORT.
        listen: SocketAddr = Fallback::Required { example: "\"0.0.0.0:7000\"" };
        /// Forward probability pf of the default crowd (must be > 0.5 and < 1).
        pf: f64 = Fallback::Value(defaults().forward_probability);
        /// Also serve the named crowd with its own pf, as NAME=PF (the flag repeated or
        /// comma-separated, in the file ["slow=0.6"]), e.g. a separate slow crowd for
        /// poorly connected members: --crowd slow=0.6.
        crowd: Vec<ExtraCrowd> = Fallback::Unset {
            meaning: "none".into(),
            example: "[\"slow=0.6\"]".into(),
        };
        /// Allow any pf in [0, 1) for experiments (no anonymity guarantee below 0.5).
        insecure_pf: bool = Fallback::Value(false);
        /// Epochs (batches of joins, leaves and drops; each re-forms every path) are cut
        /// only at multiples of this interval since the unix epoch, and only when a change
        /// is waiting: with the default, at midnight UTC. New members wait for the next one.
        join_interval: Duration = Fallback::Value(defaults().join_interval);
        /// A pending join that sends no heartbeat for this long is discarded; a member that
        /// long silent is shown as silent (it is dropped only after --grace-period).
        heartbeat_timeout: Duration = Fallback::Value(defaults().heartbeat_timeout);
        /// A member silent for longer than this is dropped at the next scheduled epoch; one
        /// back within it (a laptop that slept) is still a member and costs no epoch.
        grace_period: Duration = Fallback::Value(defaults().grace_period);
        /// Validity of each signed crowd document (re-signed at half-life).
        document_lifetime: Duration = Fallback::Value(defaults().document_lifetime);
        /// An account is admitted at most once per this interval (each admission re-forms
        /// every path, giving collaborators another look at each initiator).
        rejoin_interval: Duration = Fallback::Value(defaults().rejoin_interval);
        /// Serve a status page, /status.json and /metrics here (e.g. 127.0.0.1:7001).
        control_listen: SocketAddr = Fallback::Unset {
            meaning: "off".into(),
            example: "\"127.0.0.1:7001\"".into(),
        };
        /// Most API connections of members at once (from members' addresses, or proving a
        /// member's key); strangers cannot take these.
        max_member_connections: Limit = Fallback::Value(Limit(blender::MAX_API_CONNECTIONS));
        /// Most API connections of strangers (no member key yet, e.g. joins) at once: this
        /// many in their TLS handshake (a new one cuts off the oldest) and this many past it.
        max_stranger_connections: Limit = Fallback::Value(Limit(blender::MAX_STRANGER_CONNECTIONS));
        /// Most API connections not yet proven a member's from one address (IPv6: one /64).
        max_connections_per_address: Limit = Fallback::Value(Limit(blender::MAX_CONNECTIONS_PER_ADDRESS));
        /// Time for a client's TLS handshake with the API.
        handshake_timeout: Duration = Fallback::Value(ApiLimits::default().handshake_timeout);
        /// Time for a request's head, and again for its body.
        read_timeout: Duration = Fallback::Value(ApiLimits::default().read_timeout);
        /// Time for a whole API connection, answer included.
        connection_timeout: Duration = Fallback::Value(ApiLimits::default().connection_timeout);
        /// Password checks run at once; each holds about 19 MiB.
        password_checks: Limit = Fallback::Unset {
            meaning: "one per core".into(),
            example: "2".into(),
        };
        /// Password checks waiting for a free worker; joins beyond them get 503 with
        /// Retry-After.
        password_check_queue: usize = Fallback::Value(blender::PASSWORD_CHECK_QUEUE);
        /// Account names and addresses the login throttle remembers (the least recently
        /// seen are forgotten first).
        max_throttled_keys: Limit = Fallback::Value(Limit(crowds_proto::throttle::DEFAULT_MAX_TRACKED));
    }
}

/// The `blender` command's arguments: the settings given by flags and environment
/// variables, and where the rest may come from.
#[derive(Debug)]
pub struct BlenderArgs {
    /// The TOML file (`--config`), if given.
    pub config: Option<PathBuf>,
    /// What the flags and environment variables give.
    pub given: BlenderSettings,
}

impl clap::FromArgMatches for BlenderArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(Self {
            config: matches.get_one::<PathBuf>("config").cloned(),
            given: BlenderSettings::from_matches(matches),
        })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl clap::Args for BlenderArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        BlenderSettings::augment(cmd.arg(config_arg("CROWDS_BLENDER_CONFIG", CONFIG_FILE)))
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

/// A named crowd served beside the default one, with its own pf (`--crowd NAME=PF`).
#[derive(Clone, Debug, PartialEq)]
pub struct ExtraCrowd {
    /// Its name: a valid one other than the default crowd's.
    pub name: String,
    /// Its forward probability.
    pub pf: f64,
}

impl ListItem for ExtraCrowd {
    /// `NAME=PF`: a valid name other than the default crowd's, and a number.
    fn parse(text: &str) -> Result<Self, String> {
        let (name, pf) = text
            .split_once('=')
            .ok_or("expected NAME=PF, e.g. slow=0.6")?;
        if !crowds_blender::store::valid_name(name) || name == crowds_blender::store::DEFAULT_CROWD
        {
            return Err(format!(
                "invalid crowd name {name:?}: use 1 to 64 letters, digits, '.', '_' or '-' (not \"default\")"
            ));
        }
        let pf: f64 = pf
            .parse()
            .map_err(|_| format!("invalid pf {pf:?}: expected a number like 0.75"))?;
        Ok(ExtraCrowd {
            name: name.to_string(),
            pf,
        })
    }

    fn show(&self) -> String {
        format!("{}={}", self.name, self.pf)
    }
}

/// The data directory and, for PostgreSQL, the database (its password read from its
/// file) that `settings` give; `crowds account` opens the store with these too.
pub fn store(settings: &BlenderSettings) -> Result<(PathBuf, Option<DatabaseConfig>)> {
    let data_dir = need(settings.data_dir.clone(), "data_dir")?;
    let Some(url) = &settings.database else {
        if settings.database_password_file.is_some() {
            bail!("--database-password-file needs --database (or `database` in the --config file)");
        }
        return Ok((data_dir, None));
    };
    let password = settings
        .database_password_file
        .as_deref()
        .map(files::read_password_file)
        .transpose()?
        .map(std::sync::Arc::new);
    let database = DatabaseConfig {
        url: url.clone(),
        password,
    };
    Ok((data_dir, Some(database)))
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

/// The blender's settings from flags, environment and config file, checked.
pub fn merge(args: BlenderArgs) -> Result<BlenderConfig> {
    let file: BlenderSettings = read_file(args.config.as_deref(), CONFIG_FILE)?;
    let s = args.given.or(file).or(BlenderSettings::defaults());
    let pf = need(s.pf, "pf")?;
    let insecure_pf = need(s.insecure_pf, "insecure_pf")?;
    let crowds = s.crowd.clone().unwrap_or_default();
    check_pf(pf, insecure_pf)?;
    for crowd in &crowds {
        check_pf(crowd.pf, insecure_pf)?;
    }
    let (data_dir, database) = store(&s)?;
    let mut config = BlenderConfig::new(data_dir, need(s.listen, "listen")?);
    config.database = database;
    config.extra_crowds = crowds.into_iter().map(|c| (c.name, c.pf)).collect();
    config.forward_probability = pf;
    config.join_interval = need(s.join_interval, "join_interval")?;
    config.heartbeat_timeout = need(s.heartbeat_timeout, "heartbeat_timeout")?;
    config.grace_period = need(s.grace_period, "grace_period")?;
    config.document_lifetime = need(s.document_lifetime, "document_lifetime")?;
    config.rejoin_interval = need(s.rejoin_interval, "rejoin_interval")?;
    config.control_listen = s.control_listen;
    config.limits = ApiLimits {
        max_member_connections: need(s.max_member_connections, "max_member_connections")?.0,
        max_stranger_connections: need(s.max_stranger_connections, "max_stranger_connections")?.0,
        max_connections_per_address: need(
            s.max_connections_per_address,
            "max_connections_per_address",
        )?
        .0,
        handshake_timeout: need(s.handshake_timeout, "handshake_timeout")?,
        read_timeout: need(s.read_timeout, "read_timeout")?,
        connection_timeout: need(s.connection_timeout, "connection_timeout")?,
        password_checks: s
            .password_checks
            .map_or_else(blender::default_password_checks, |n| n.0),
        password_check_queue: need(s.password_check_queue, "password_check_queue")?,
        max_throttled_keys: need(s.max_throttled_keys, "max_throttled_keys")?.0,
    };
    Ok(config)
}

/// Runs the blender until Ctrl-C or SIGTERM.
pub async fn run(config: BlenderConfig) -> Result<()> {
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
        let slow = ExtraCrowd {
            name: "slow".to_string(),
            pf: 0.6,
        };
        assert_eq!(ExtraCrowd::parse("slow=0.6"), Ok(slow.clone()));
        assert_eq!(ExtraCrowd::parse(&slow.show()), Ok(slow));
        assert!(ExtraCrowd::parse("slow").is_err());
        assert!(ExtraCrowd::parse("default=0.8").is_err());
        assert!(ExtraCrowd::parse("sl ow=0.8").is_err());
        assert!(ExtraCrowd::parse("slow=fast").is_err());
    }

    #[test]
    fn a_password_file_needs_a_database() {
        let settings = BlenderSettings {
            data_dir: Some(PathBuf::from("/nonexistent")),
            database_password_file: Some(PathBuf::from("/nonexistent/pw")),
            ..BlenderSettings::default()
        };
        let err = store(&settings).expect_err("refused").to_string();
        assert!(err.contains("--database"), "{err}");
    }
}
