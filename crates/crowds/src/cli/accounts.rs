//! `crowds account`: adding, listing and removing the blender's accounts. Where the
//! store is (`--data-dir`, `--database`, `--database-password-file`) is the blender's
//! settings ([`super::blender::STORE_KEYS`]), taken here as flags and environment.
//!
//! Passwords come from standard input or a file only its owner can read, never from
//! argv; this module must not print one.

use super::blender::{self, BlenderSettings, STORE_KEYS};
use anyhow::{bail, Context, Result};
use clap::{ArgMatches, Subcommand};
use crowds_blender::store::Store;
use std::io::BufRead;

#[derive(Subcommand, Debug)]
pub enum AccountCommand {
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

/// Where the blender keeps its accounts and crowds: the blender's store settings, given
/// by flags and environment variables.
#[derive(Debug)]
pub struct StoreArgs(Box<BlenderSettings>);

impl clap::FromArgMatches for StoreArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(Self(Box::new(BlenderSettings::from_matches(matches))))
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

/// Without a config file to give them, clap checks that the data directory is given,
/// and that a database password file comes with a database.
impl clap::Args for StoreArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        cmd.args(
            BlenderSettings::args()
                .into_iter()
                .filter(|arg| STORE_KEYS.contains(&arg.get_id().as_str()))
                .map(|arg| match arg.get_id().as_str() {
                    "data_dir" => arg.required(true),
                    "database_password_file" => arg.requires("database"),
                    _ => arg,
                }),
        )
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl StoreArgs {
    fn open(&self) -> Result<Store> {
        let (data_dir, database) = blender::store(&self.0)?;
        Ok(Store::open_database(&data_dir, database.as_ref())?)
    }
}

/// Runs `crowds account …`.
pub fn run(cmd: AccountCommand) -> Result<()> {
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
