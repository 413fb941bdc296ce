//! `crowds account`: adding, listing and removing the blender's accounts, and the
//! store flags (`--data-dir`, `--database`) the blender shares with it.
//!
//! Passwords come from standard input or a file only its owner can read, never from
//! argv; this module must not print one.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use crowds_blender::store::{DatabaseConfig, Store};
use crowds_net::files;
use std::io::BufRead;
use std::path::PathBuf;

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

/// Where the blender keeps its accounts and crowds.
#[derive(Args, Debug)]
pub struct StoreArgs {
    /// The blender's data directory (created if missing): its signing key, and the
    /// SQLite database unless --database is given.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// A PostgreSQL database shared by replicated blenders, as postgres://USER@HOST:PORT/DB
    /// (no password in it: use --database-password-file) [default: SQLite in --data-dir].
    #[arg(long, env = "CROWDS_DATABASE")]
    database: Option<String>,
    /// File holding the database password (first line; mode 0600).
    #[arg(long, env = "CROWDS_DATABASE_PASSWORD_FILE", requires = "database")]
    database_password_file: Option<PathBuf>,
}

impl StoreArgs {
    /// The PostgreSQL database, with its password read from its file; `None` for SQLite.
    pub fn database(&self) -> Result<Option<DatabaseConfig>> {
        let Some(url) = &self.database else {
            return Ok(None);
        };
        let password = self
            .database_password_file
            .as_deref()
            .map(files::read_password_file)
            .transpose()?
            .map(std::sync::Arc::new);
        Ok(Some(DatabaseConfig {
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
