//! The blender's store: accounts, the membership of each crowd between epochs, and the
//! signed documents, in SQLite (the default, a file in the data directory) or PostgreSQL
//! (`--database postgres://…`, shared by replicated blenders).
//!
//! Owns the schema and its versioned migrations, and every read and write the blender
//! makes; the membership rules themselves stay in [`crowds_proto::roster`]. Each call
//! is one transaction, and everything that changes a crowd's epoch runs under that
//! crowd's lock, so two blenders sharing a database never publish different documents
//! for the same epoch (the documents table's primary key is the last safety net).
//! Passwords are never stored, logged or returned; only argon2id hashes are kept.
//! [`password`] runs the (deliberately slow and memory-hard) checks on a fixed pool of
//! threads, so their memory is bounded whatever arrives.

//!
//! Layout: [`sql`] is the one SQL layer over the SQLite and PostgreSQL connections;
//! `schema` creates and migrates the tables; `accounts` creates, lists and checks
//! accounts; `membership` records joins, heartbeats and leaves; `epochs` runs the epoch
//! clock (loads a crowd's rows under its lock, asks the roster, writes the result) and
//! reads the signed documents back. This file holds the connection and the types the
//! others share.

mod accounts;
mod epochs;
mod membership;
pub mod password;
mod postgres;
mod schema;
pub mod sql;
mod sqlite;
#[cfg(test)]
mod tests;

pub use accounts::{waste_password_check, Account, LoginRecord};
pub use epochs::{StoredDocument, Tick};
pub use membership::Counts;

use sql::{Db, Tx};
use std::path::Path;

/// File name of the SQLite database inside the blender's data directory.
pub const DATABASE_FILE: &str = "blender.sqlite3";
/// Longest account name.
pub const MAX_ACCOUNT_NAME: usize = crowds_proto::api::MAX_NAME;
/// Longest password accepted.
pub const MAX_PASSWORD: usize = crowds_proto::api::MAX_PASSWORD;
/// The crowd accounts join unless told otherwise.
pub const DEFAULT_CROWD: &str = "default";
/// Signed documents kept per crowd (older epochs are deleted).
pub const DOCUMENTS_KEPT: u64 = 64;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite failed.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL failed.
    #[error("database: {0}")]
    Postgres(String),
    /// A unique key was already taken (another blender won a race).
    #[error("database: a row with this key already exists")]
    Conflict,
    /// The URL carries a password, which would show in process listings and logs.
    #[error("the database URL must not contain a password: put it in a file given with --database-password-file (mode 0600)")]
    PasswordInUrl,
    /// A file operation failed.
    #[error("{0}")]
    Io(String),
    /// The `--database` value is not one we understand.
    #[error("unsupported database {0:?}: use postgres://user@host:port/dbname (or leave --database out for SQLite in the data directory)")]
    BadUrl(String),
    /// The database was written by a newer crowds.
    #[error("the database has schema version {0}, newer than this crowds understands ({1}); upgrade crowds")]
    TooNew(i64, usize),
    /// The account name is already taken.
    #[error("account {0:?} already exists")]
    Exists(String),
    /// No such account.
    #[error("no account named {0:?}")]
    NoSuchAccount(String),
    /// The name has characters or a length we do not accept.
    #[error("invalid account name: use 1 to 64 letters, digits, '.', '_' or '-'")]
    BadName,
    /// The crowd name has characters or a length we do not accept.
    #[error("invalid crowd name: use 1 to 64 letters, digits, '.', '_' or '-'")]
    BadCrowd,
    /// The password is empty or too long.
    #[error("invalid password: it must be 1 to 1024 bytes")]
    BadPassword,
    /// Password hashing failed.
    #[error("password hashing failed: {0}")]
    Hash(String),
    /// Signing a document failed.
    #[error("signing the crowd document failed: {0}")]
    Sign(String),
    /// A stored row is corrupt.
    #[error("corrupt row in the database: {0}")]
    Corrupt(&'static str),
}

impl From<StoreError> for crowds_net::NodeError {
    fn from(e: StoreError) -> Self {
        crowds_net::NodeError::Store(Box::new(e))
    }
}

/// Where a shared store lives: a PostgreSQL URL without a password, and the password
/// (read from a file, never from the command line).
#[derive(Clone)]
pub struct DatabaseConfig {
    /// `postgres://user@host:port/dbname` (or `postgresql://…`).
    pub url: String,
    /// The database user's password, if it needs one.
    pub password: Option<std::sync::Arc<crowds_net::safelog::Secret>>,
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &self.url)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// The store: one connection to SQLite or PostgreSQL.
pub struct Store {
    db: Box<dyn Db>,
}

/// Account and crowd names: short, printable, no separators (the one rule is
/// [`crowds_proto::api::valid_name`], which the blender also applies to every join).
pub fn valid_name(name: &str) -> bool {
    crowds_proto::api::valid_name(name)
}

pub(super) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Store {
    /// Opens (creating if needed) the SQLite database in `dir`.
    pub fn open(dir: &Path) -> Result<Self, crowds_net::error::NodeError> {
        Self::open_database(dir, None)
    }

    /// Opens the database: PostgreSQL when `database` is given, else SQLite in `dir`.
    /// Applies pending migrations.
    pub fn open_database(
        dir: &Path,
        database: Option<&DatabaseConfig>,
    ) -> Result<Self, crowds_net::error::NodeError> {
        let db: Box<dyn Db> = match database {
            None => {
                crowds_net::files::ensure_private_dir(dir)?;
                Box::new(sqlite::Sqlite::open(&dir.join(DATABASE_FILE))?)
            }
            Some(d) if d.url.starts_with("postgres://") || d.url.starts_with("postgresql://") => {
                Box::new(postgres::Postgres::connect(
                    &d.url,
                    d.password.as_ref().map(|p| p.expose()),
                )?)
            }
            Some(d) => {
                // Never echo a URL that may hold a password.
                let scheme = d
                    .url
                    .split(':')
                    .next()
                    .unwrap_or("")
                    .chars()
                    .take(16)
                    .collect();
                return Err(StoreError::BadUrl(scheme).into());
            }
        };
        let mut store = Self { db };
        store.migrate()?;
        Ok(store)
    }

    /// "sqlite" or "postgres".
    pub fn kind(&self) -> &'static str {
        self.db.kind()
    }

    fn tx<T>(
        &mut self,
        mut f: impl FnMut(&mut dyn Tx) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut out = None;
        self.db.transaction(&mut |tx| {
            out = Some(f(tx)?);
            Ok(())
        })?;
        out.ok_or(StoreError::Corrupt("transaction without result"))
    }
}
