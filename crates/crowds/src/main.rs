//! `crowds`: the command line. Parses arguments and config files, sets up logging,
//! and hands over to the daemon crates ([`crowds_jondo`], [`crowds_blender`], [`crowds_demo`]). No protocol logic lives here.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![deny(clippy::await_holding_lock)]

mod analyze;
mod browser;
mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_logging(&args);
    // Daemons hold many connections; the common soft limit of 1,024 open files is less
    // than their listeners' caps together. (A failure here leaves the limit as it was.)
    match crowds_net::net::raise_open_files_limit() {
        Ok((before, after)) if after > before => {
            tracing::debug!("open files limit raised from {before} to {after}")
        }
        Ok(_) => {}
        Err(e) => tracing::debug!("cannot raise the open files limit: {e}"),
    }
    if let Ok((limit, _)) = crowds_net::net::open_files_limit() {
        if limit < crowds_net::net::OPEN_FILES_WANTED {
            tracing::warn!(
                "the open files limit is {limit}: under load this daemon may run out of \
                 connections (raise it to at least {}, e.g. LimitNOFILE= in its unit)",
                crowds_net::net::OPEN_FILES_WANTED
            );
        }
    }
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A closed pipe (e.g. `crowds manpage | head`) is not an error worth a word.
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
