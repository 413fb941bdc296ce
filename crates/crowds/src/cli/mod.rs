//! The command line: its commands and global flags, logging set-up, and dispatch to
//! each command's module. Secrets never come from argv: passwords are read from
//! standard input or from a file only its owner can read.
//!
//! Layout (arrows point one way: `mod.rs` → commands → `settings`):
//!
//! - [`settings`]: the machinery of one definition per setting (flag, environment
//!   variable, TOML key, default, help, template), of merging their layers and of
//!   finding and reading a config file;
//! - [`jondo`]: the jondo's settings table, their merge into a `JondoConfig`, running it;
//! - [`blender`]: the blender's settings table (defaults read from `crowds-blender`),
//!   their merge into a `BlenderConfig`, running it;
//! - [`init`]: the commented config files written from those tables;
//! - [`accounts`]: the blender's accounts, in the store the blender's settings name;
//! - [`demo`]: a whole crowd on this machine.
//!
//! This module must not hold a setting or a default: those live with their command.

mod accounts;
mod blender;
mod demo;
mod init;
mod jondo;
pub(crate) mod settings;

use accounts::AccountCommand;
use anyhow::Result;
use blender::BlenderArgs;
use clap::{Args, Parser, Subcommand};
use demo::DemoArgs;
use init::InitArgs;
use jondo::JondoArgs;
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
    /// `crowds init blender` writes the blender's instead.
    ///
    /// Example: crowds init --blender blender.example.org:7000 --account alice
    #[command(args_conflicts_with_subcommands = true)]
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
/// [`crowds_jondo::jondo::runtime`]), the blender and the demo on one worker per core, and the rest
/// without a runtime.
pub fn run(cli: Cli) -> Result<()> {
    let multi_thread = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    };
    match cli.command {
        Command::Jondo(args) => {
            let (config, threads) = jondo::merge(*args)?;
            crowds_jondo::jondo::runtime(threads)?.block_on(jondo::run(config))
        }
        Command::Blender(args) => {
            let config = blender::merge(*args)?;
            multi_thread()?.block_on(blender::run(config))
        }
        Command::Demo(args) => multi_thread()?.block_on(demo::run(args)),
        // The PostgreSQL client runs a small runtime of its own, so none here.
        Command::Account(cmd) => accounts::run(cmd),
        Command::Init(args) => init::run(*args),
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

/// Cancels the token on Ctrl-C or SIGTERM.
pub(crate) fn shutdown_on_signal() -> CancellationToken {
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

#[cfg(test)]
mod tests;
