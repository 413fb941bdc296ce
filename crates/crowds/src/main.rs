//! `crowds`: the command line. Parses arguments and config files, sets up logging,
//! and hands over to [`crowds_node`]. No protocol logic lives here.

mod cli;

use anyhow::Result;
use clap::Parser;

fn main() -> Result<()> {
    let args = cli::Cli::parse();
    cli::init_logging(&args);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(cli::run(args))
}
