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

pub mod password;
mod postgres;
pub mod sql;
mod sqlite;

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, SaltString};
use argon2::Argon2;
use crowds_proto::document::{CrowdDocument, Member};
use crowds_proto::identity::PublicKey;
use crowds_proto::roster::{join_outcome, JoinOutcome, Roster, RosterConfig, RosterState};
use crowds_proto::MemberId;
use sql::{Db, Row, Tx, Value};
use std::collections::BTreeMap;
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

/// An account as listed (never with its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The account's number; it is also the member id of its jondo.
    pub id: MemberId,
    /// The account name.
    pub name: String,
    /// The crowd the account joins.
    pub crowd: String,
    /// Creation time, unix seconds.
    pub created_at: i64,
}

/// What a login needs from the store; the password check runs outside the store's lock.
pub struct LoginRecord {
    /// The account's number.
    pub id: MemberId,
    /// Its crowd.
    pub crowd: String,
    hash: String,
}

impl LoginRecord {
    /// Whether `password` matches (argon2id; deliberately slow). The work happens in
    /// this thread's reusable argon2 memory (see [`password`]); the comparison
    /// is constant-time.
    pub fn verify(&self, password: &str) -> Result<bool, StoreError> {
        let corrupt = |_| StoreError::Corrupt("password hash");
        let parsed = PasswordHash::new(&self.hash).map_err(corrupt)?;
        let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
            return Err(StoreError::Corrupt("password hash"));
        };
        let params = argon2::Params::try_from(&parsed).map_err(corrupt)?;
        let algorithm = argon2::Algorithm::try_from(parsed.algorithm).map_err(corrupt)?;
        let version = parsed
            .version
            .map(argon2::Version::try_from)
            .transpose()
            .map_err(|_| StoreError::Corrupt("password hash"))?
            .unwrap_or_default();
        let mut salt_bytes = [0u8; 64];
        let salt = salt.decode_b64(&mut salt_bytes).map_err(corrupt)?;
        let argon = Argon2::new(algorithm, version, params);
        let mut out = vec![0u8; expected.len()];
        password::with_blocks(argon.params().block_count(), |blocks| {
            argon.hash_password_into_with_memory(password.as_bytes(), salt, &mut out, blocks)
        })
        .map_err(|e| StoreError::Hash(e.to_string()))?;
        let computed = argon2::password_hash::Output::new(&out).map_err(corrupt)?;
        // `Output`'s equality is constant-time.
        Ok(computed == expected)
    }
}

/// Spends the effort of a real password check, so that timing does not reveal which
/// account names exist.
pub fn waste_password_check(password: &str) {
    let mut salt = [0u8; 16];
    argon2::password_hash::rand_core::RngCore::fill_bytes(&mut OsRng, &mut salt);
    let argon = Argon2::default();
    let mut out = [0u8; 32];
    let _ = password::with_blocks(argon.params().block_count(), |blocks| {
        argon.hash_password_into_with_memory(password.as_bytes(), &salt, &mut out, blocks)
    });
}

/// What one epoch tick did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tick {
    /// Another blender holds the crowd's lock right now.
    Busy,
    /// Nothing was due.
    Idle,
    /// A new epoch was cut and stored.
    NewEpoch {
        /// Its number.
        epoch: u64,
        /// Its member count.
        members: usize,
    },
    /// The current epoch's document was re-signed with a later expiry.
    Refreshed,
}

/// The latest stored document of a crowd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDocument {
    /// Its epoch.
    pub epoch: u64,
    /// When it was signed (unix ms).
    pub issued_at: u64,
    /// The signed bytes; `None` when the caller already has this (epoch, issue time).
    pub bytes: Option<Vec<u8>>,
}

/// Counts for the status page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Accounts, all crowds.
    pub accounts: u64,
    /// Members of the crowd's current epoch.
    pub members: u64,
    /// Members waiting for its next epoch.
    pub pending: u64,
    /// The crowd's current epoch.
    pub epoch: u64,
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

/// Schema migrations, in order: (SQLite, PostgreSQL). Statements are separated by `;`.
/// Applied at open under a lock; the version reached is kept in `schema_version`.
const MIGRATIONS: &[(&str, &str)] = &[(
    "CREATE TABLE accounts (
         id INTEGER PRIMARY KEY AUTOINCREMENT,
         name TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL, crowd TEXT NOT NULL,
         created_at BIGINT NOT NULL, admitted_at BIGINT)",
    "CREATE TABLE accounts (
         id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
         name TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL, crowd TEXT NOT NULL,
         created_at BIGINT NOT NULL, admitted_at BIGINT)",
)];

/// Tables both databases define the same way (part of migration 1).
const COMMON_SCHEMA_1: &str = "
    CREATE TABLE crowds (
        name TEXT PRIMARY KEY, epoch BIGINT NOT NULL, last_epoch_at BIGINT,
        last_tick_at BIGINT NOT NULL, issued_at BIGINT NOT NULL, pf_bits BIGINT NOT NULL);
    CREATE TABLE members (
        account_id BIGINT PRIMARY KEY REFERENCES accounts(id) ON DELETE CASCADE,
        crowd TEXT NOT NULL, public_key TEXT NOT NULL, addr TEXT NOT NULL,
        flags BIGINT NOT NULL, last_seen BIGINT NOT NULL, leaving BIGINT NOT NULL);
    CREATE INDEX members_key ON members (public_key);
    CREATE INDEX members_crowd ON members (crowd, last_seen);
    CREATE TABLE pending (
        account_id BIGINT PRIMARY KEY REFERENCES accounts(id) ON DELETE CASCADE,
        crowd TEXT NOT NULL, public_key TEXT NOT NULL, addr TEXT NOT NULL,
        flags BIGINT NOT NULL, last_seen BIGINT NOT NULL);
    CREATE INDEX pending_key ON pending (public_key);
    CREATE INDEX pending_crowd ON pending (crowd, last_seen);
    CREATE TABLE documents (
        crowd TEXT NOT NULL, epoch BIGINT NOT NULL, issued_at BIGINT NOT NULL,
        body BYTEA NOT NULL, PRIMARY KEY (crowd, epoch))";

/// The lock taken while migrating.
const MIGRATION_LOCK: i64 = 0x6372_6f77_6473_0001;

/// The lock of a crowd's epochs (FNV-1a of its name).
fn crowd_lock(crowd: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in b"crowds-epoch:".iter().chain(crowd.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn member_from(row: &[Value], at: usize) -> Result<Member, StoreError> {
    Ok(Member {
        id: to_u64(row[at].int("member id")?),
        key: PublicKey::from_hex(row[at + 1].text("member key")?)
            .map_err(|_| StoreError::Corrupt("member key"))?,
        addr: row[at + 2]
            .text("member address")?
            .parse()
            .map_err(|_| StoreError::Corrupt("member address"))?,
        flags: u8::try_from(row[at + 3].int("member flags")?)
            .map_err(|_| StoreError::Corrupt("member flags"))?,
    })
}

fn member_params(m: &Member, crowd: &str, last_seen: u64) -> Vec<Value> {
    vec![
        m.id.into(),
        crowd.into(),
        m.key.to_hex().into(),
        m.addr.to_string().into(),
        Value::Int(i64::from(m.flags)),
        last_seen.into(),
    ]
}

fn hash_password(password: &str, params: argon2::Params) -> Result<String, StoreError> {
    if password.is_empty() || password.len() > MAX_PASSWORD {
        return Err(StoreError::BadPassword);
    }
    let salt = SaltString::generate(&mut OsRng);
    Ok(
        Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password(password.as_bytes(), &salt)
            .map_err(|e| StoreError::Hash(e.to_string()))?
            .to_string(),
    )
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

    fn migrate(&mut self) -> Result<(), StoreError> {
        let postgres = self.db.kind() == "postgres";
        self.tx(|tx| {
            tx.lock(MIGRATION_LOCK, true)?;
            tx.exec(
                "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)",
                &[],
            )?;
            let rows = tx.query("SELECT version FROM schema_version", &[])?;
            let current = match rows.first() {
                Some(r) => r[0].int("schema version")?,
                None => {
                    tx.exec("INSERT INTO schema_version (version) VALUES (0)", &[])?;
                    0
                }
            };
            if current > MIGRATIONS.len() as i64 {
                return Err(StoreError::TooNew(current, MIGRATIONS.len()));
            }
            for (i, (lite, pg)) in MIGRATIONS.iter().enumerate().skip(current as usize) {
                let mut script = String::from(if postgres { *pg } else { *lite });
                if i == 0 {
                    script.push(';');
                    script.push_str(COMMON_SCHEMA_1);
                }
                for statement in script.split(';').filter(|s| !s.trim().is_empty()) {
                    tx.exec(statement, &[])?;
                }
                tx.exec(
                    "UPDATE schema_version SET version = $1",
                    &[Value::Int(i as i64 + 1)],
                )?;
            }
            Ok(())
        })
    }

    /// The schema version in use.
    pub fn schema_version(&mut self) -> Result<i64, StoreError> {
        self.tx(|tx| tx.query("SELECT version FROM schema_version", &[])?[0][0].int("version"))
    }

    /// Creates an account in the default crowd; the password is hashed with argon2id.
    pub fn add_account(&mut self, name: &str, password: &str) -> Result<MemberId, StoreError> {
        self.add_account_in(name, password, DEFAULT_CROWD)
    }

    /// Creates an account that joins `crowd`.
    pub fn add_account_in(
        &mut self,
        name: &str,
        password: &str,
        crowd: &str,
    ) -> Result<MemberId, StoreError> {
        self.add_account_with(name, password, crowd, argon2::Params::default())
    }

    /// Creates an account with explicit argon2 cost parameters (load tests create
    /// thousands of accounts with cheap ones; a blender always uses the defaults).
    pub fn add_account_with(
        &mut self,
        name: &str,
        password: &str,
        crowd: &str,
        params: argon2::Params,
    ) -> Result<MemberId, StoreError> {
        if !valid_name(name) {
            return Err(StoreError::BadName);
        }
        if !valid_name(crowd) {
            return Err(StoreError::BadCrowd);
        }
        let hash = hash_password(password, params)?;
        let now = unix_seconds();
        let result = self.tx(|tx| {
            let rows = tx.query(
                "INSERT INTO accounts (name, password_hash, crowd, created_at)
                 VALUES ($1, $2, $3, $4) RETURNING id",
                &[
                    name.into(),
                    hash.as_str().into(),
                    crowd.into(),
                    Value::Int(now),
                ],
            )?;
            Ok(to_u64(
                rows.first().ok_or(StoreError::Corrupt("id"))?[0].int("id")?,
            ))
        });
        match result {
            Err(StoreError::Conflict) => Err(StoreError::Exists(name.to_string())),
            Err(StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::Exists(name.to_string()))
            }
            other => other,
        }
    }

    /// Creates many accounts that join `crowd`, in one transaction, with explicit argon2
    /// cost parameters: a load test's thousands of accounts cost one disk sync, not one
    /// each. Nothing is created if any name is invalid or taken.
    pub fn add_accounts_with(
        &mut self,
        accounts: &[(String, String)],
        crowd: &str,
        params: argon2::Params,
    ) -> Result<Vec<MemberId>, StoreError> {
        if !valid_name(crowd) {
            return Err(StoreError::BadCrowd);
        }
        let mut rows = Vec::with_capacity(accounts.len());
        for (name, password) in accounts {
            if !valid_name(name) {
                return Err(StoreError::BadName);
            }
            rows.push((name.as_str(), hash_password(password, params.clone())?));
        }
        let now = unix_seconds();
        self.tx(|tx| {
            let mut ids = Vec::with_capacity(rows.len());
            for (name, hash) in &rows {
                let inserted = tx.query(
                    "INSERT INTO accounts (name, password_hash, crowd, created_at)
                     VALUES ($1, $2, $3, $4) RETURNING id",
                    &[
                        (*name).into(),
                        hash.as_str().into(),
                        crowd.into(),
                        Value::Int(now),
                    ],
                );
                let inserted = match inserted {
                    Err(StoreError::Conflict) => Err(StoreError::Exists(name.to_string())),
                    Err(StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)))
                        if e.code == rusqlite::ErrorCode::ConstraintViolation =>
                    {
                        Err(StoreError::Exists(name.to_string()))
                    }
                    other => other,
                }?;
                ids.push(to_u64(
                    inserted.first().ok_or(StoreError::Corrupt("id"))?[0].int("id")?,
                ));
            }
            Ok(ids)
        })
    }

    /// Removes an account (and its membership).
    pub fn remove_account(&mut self, name: &str) -> Result<(), StoreError> {
        self.tx(|tx| {
            let rows = tx.query("SELECT id FROM accounts WHERE name = $1", &[name.into()])?;
            let id = rows
                .first()
                .ok_or_else(|| StoreError::NoSuchAccount(name.to_string()))?[0]
                .int("id")?;
            tx.exec(
                "DELETE FROM members WHERE account_id = $1",
                &[Value::Int(id)],
            )?;
            tx.exec(
                "DELETE FROM pending WHERE account_id = $1",
                &[Value::Int(id)],
            )?;
            tx.exec("DELETE FROM accounts WHERE id = $1", &[Value::Int(id)])?;
            Ok(())
        })
    }

    /// All accounts, by id.
    pub fn list_accounts(&mut self) -> Result<Vec<Account>, StoreError> {
        self.tx(|tx| {
            tx.query(
                "SELECT id, name, crowd, created_at FROM accounts ORDER BY id",
                &[],
            )?
            .iter()
            .map(|r| {
                Ok(Account {
                    id: to_u64(r[0].int("id")?),
                    name: r[1].text("name")?.to_string(),
                    crowd: r[2].text("crowd")?.to_string(),
                    created_at: r[3].int("created_at")?,
                })
            })
            .collect()
        })
    }

    /// The account's id, crowd and hash, if it exists.
    pub fn login_record(&mut self, name: &str) -> Result<Option<LoginRecord>, StoreError> {
        if !valid_name(name) {
            return Ok(None);
        }
        self.tx(|tx| {
            let rows = tx.query(
                "SELECT id, crowd, password_hash FROM accounts WHERE name = $1",
                &[name.into()],
            )?;
            rows.first()
                .map(|r| {
                    Ok(LoginRecord {
                        id: to_u64(r[0].int("id")?),
                        crowd: r[1].text("crowd")?.to_string(),
                        hash: r[2].text("password hash")?.to_string(),
                    })
                })
                .transpose()
        })
    }

    /// Checks a login. Returns the account id, or `None` for an unknown account or a
    /// wrong password (indistinguishable to the caller, and equally slow).
    pub fn verify_login(
        &mut self,
        name: &str,
        password: &str,
    ) -> Result<Option<MemberId>, StoreError> {
        match self.login_record(name)? {
            Some(record) => Ok(record.verify(password)?.then_some(record.id)),
            None => {
                waste_password_check(password);
                Ok(None)
            }
        }
    }

    /// A member asks to join its crowd (the roster's rules, applied to the stored state).
    pub fn join(
        &mut self,
        config: &RosterConfig,
        member: &Member,
        now: u64,
    ) -> Result<JoinOutcome, StoreError> {
        let crowd = config.crowd.as_str();
        let id = Value::from(member.id);
        self.tx(|tx| {
            tx.lock(crowd_lock(crowd), true)?;
            tx.exec(
                "UPDATE members SET leaving = 0 WHERE account_id = $1",
                std::slice::from_ref(&id),
            )?;
            let current = tx
                .query(
                    "SELECT account_id, public_key, addr, flags FROM members
                     WHERE account_id = $1 AND crowd = $2",
                    &[id.clone(), crowd.into()],
                )?
                .first()
                .map(|r| member_from(r, 0))
                .transpose()?;
            let admitted_at = tx
                .query(
                    "SELECT admitted_at FROM accounts WHERE id = $1",
                    std::slice::from_ref(&id),
                )?
                .first()
                .map(|r| r[0].opt_int("admitted_at"))
                .transpose()?
                .flatten()
                .map(to_u64);
            let outcome = join_outcome(config, current.as_ref(), admitted_at, member, now);
            match outcome {
                JoinOutcome::AlreadyMember => {
                    tx.exec(
                        "UPDATE members SET last_seen = $2 WHERE account_id = $1",
                        &[id.clone(), now.into()],
                    )?;
                    tx.exec(
                        "DELETE FROM pending WHERE account_id = $1",
                        std::slice::from_ref(&id),
                    )?;
                }
                JoinOutcome::Pending => {
                    // A key belongs to one member: an older pending holder gives it up.
                    tx.exec(
                        "DELETE FROM pending WHERE public_key = $1 AND account_id <> $2",
                        &[member.key.to_hex().into(), id.clone()],
                    )?;
                    tx.exec(
                        "INSERT INTO pending (account_id, crowd, public_key, addr, flags, last_seen)
                         VALUES ($1, $2, $3, $4, $5, $6)
                         ON CONFLICT (account_id) DO UPDATE SET crowd = excluded.crowd,
                           public_key = excluded.public_key, addr = excluded.addr,
                           flags = excluded.flags, last_seen = excluded.last_seen",
                        &member_params(member, crowd, now),
                    )?;
                }
                JoinOutcome::TooSoon { .. } => {}
            }
            Ok(outcome)
        })
    }

    /// A member (or pending member) with this key says it is alive. Returns false for
    /// strangers.
    pub fn heartbeat(&mut self, key: &PublicKey, now: u64) -> Result<bool, StoreError> {
        let key = Value::from(key.to_hex());
        // Pending first: an epoch committed between the two statements moves the row from
        // pending to members, and under PostgreSQL's read-committed isolation the second
        // statement (a fresh snapshot) then finds it in members. The other order could
        // miss it in both and turn a member that was just admitted away with a 403.
        self.tx(|tx| {
            let b = tx.exec(
                "UPDATE pending SET last_seen = $1 WHERE public_key = $2",
                &[now.into(), key.clone()],
            )?;
            let a = tx.exec(
                "UPDATE members SET last_seen = $1 WHERE public_key = $2",
                &[now.into(), key.clone()],
            )?;
            Ok(a + b > 0)
        })
    }

    /// The member with this key leaves; it is dropped at the next epoch.
    pub fn leave(&mut self, key: &PublicKey) -> Result<(), StoreError> {
        let key = Value::from(key.to_hex());
        self.tx(|tx| {
            tx.exec(
                "DELETE FROM pending WHERE public_key = $1",
                std::slice::from_ref(&key),
            )?;
            tx.exec(
                "UPDATE members SET leaving = 1 WHERE public_key = $1",
                std::slice::from_ref(&key),
            )?;
            Ok(())
        })
    }

    /// The crowd of the member (or pending member) holding this key.
    pub fn crowd_of(&mut self, key: &PublicKey) -> Result<Option<String>, StoreError> {
        let key = Value::from(key.to_hex());
        self.tx(|tx| {
            for table in ["members", "pending"] {
                let rows = tx.query(
                    &format!("SELECT crowd FROM {table} WHERE public_key = $1"),
                    std::slice::from_ref(&key),
                )?;
                if let Some(r) = rows.first() {
                    return Ok(Some(r[0].text("crowd")?.to_string()));
                }
            }
            Ok(None)
        })
    }

    /// One turn of a crowd's epoch clock with nothing to report about the blender's own
    /// health (see [`Store::tick_after`]).
    pub fn tick(
        &mut self,
        config: &RosterConfig,
        now: u64,
        sign: &dyn Fn(&CrowdDocument) -> Result<Vec<u8>, String>,
    ) -> Result<Tick, StoreError> {
        self.tick_after(config, now, None, sign)
    }

    /// One turn of a crowd's epoch clock: cuts a new epoch if the roster's rules say one
    /// is due (only ever at a scheduled time, see [`RosterConfig::next_scheduled`]), or
    /// re-signs the current document when half its lifetime has passed. Runs under the
    /// crowd's lock and skips (`Tick::Busy`) if another blender holds it.
    ///
    /// `disrupted_at` is the last time (unix ms) the caller may have turned members'
    /// heartbeats away: its API connections were all taken, or the store failed. If that
    /// happened since the crowd's last tick, the time since that tick does not count as
    /// anyone's silence, exactly as when no blender ticked at all for a while: a member
    /// is never dropped because the blender was unreachable or refusing.
    pub fn tick_after(
        &mut self,
        config: &RosterConfig,
        now: u64,
        disrupted_at: Option<u64>,
        sign: &dyn Fn(&CrowdDocument) -> Result<Vec<u8>, String>,
    ) -> Result<Tick, StoreError> {
        let crowd = config.crowd.as_str();
        let name = Value::from(crowd);
        let pf_bits = Value::Int(config.forward_probability.to_bits() as i64);
        self.tx(|tx| {
            if !tx.lock(crowd_lock(crowd), false)? {
                return Ok(Tick::Busy);
            }
            let rows = tx.query(
                "SELECT epoch, last_epoch_at, last_tick_at, issued_at, pf_bits FROM crowds
                 WHERE name = $1",
                std::slice::from_ref(&name),
            )?;
            let (epoch, last_epoch_at, last_tick_at, issued_at, stored_pf) = match rows.first() {
                Some(r) => (
                    to_u64(r[0].int("epoch")?),
                    r[1].opt_int("last_epoch_at")?.map(to_u64),
                    to_u64(r[2].int("last_tick_at")?),
                    to_u64(r[3].int("issued_at")?),
                    r[4].clone(),
                ),
                None => {
                    tx.exec(
                        "INSERT INTO crowds (name, epoch, last_epoch_at, last_tick_at, issued_at, pf_bits)
                         VALUES ($1, 0, NULL, $2, 0, $3)",
                        &[name.clone(), now.into(), pf_bits.clone()],
                    )?;
                    (0, None, now, 0, pf_bits.clone())
                }
            };
            // No blender looked after this crowd for a heartbeat timeout (all were down),
            // or this one was turning heartbeats away since the last tick: that time is
            // nobody's silence. The silence clock of every member and pending join stands
            // still over it (one heard during it counts as heard now), so nobody is
            // dropped for it, and silence before it is not pardoned either.
            let gap = now.saturating_sub(last_tick_at);
            let disrupted = gap > config.heartbeat_timeout_ms
                || disrupted_at.is_some_and(|at| at >= last_tick_at);
            if disrupted && gap > 0 {
                for table in ["members", "pending"] {
                    tx.exec(
                        &format!(
                            "UPDATE {table} SET last_seen =
                               CASE WHEN last_seen > $3 THEN $2 ELSE last_seen + $4 END
                             WHERE crowd = $1 AND last_seen < $2"
                        ),
                        &[name.clone(), now.into(), last_tick_at.into(), gap.into()],
                    )?;
                }
            }
            tx.exec(
                "UPDATE crowds SET last_tick_at = $2 WHERE name = $1",
                &[name.clone(), now.into()],
            )?;
            let pf_changed = epoch > 0 && stored_pf != pf_bits;
            // Epochs happen only at scheduled times (and a crowd's first one at once);
            // only then, and only if the indexes show a change that may be waiting, is
            // the whole membership loaded for the roster to decide. The queries select
            // with the roster's own cut-off times, so they never miss what it would see.
            let scheduled = config.next_scheduled(last_epoch_at, Some(last_tick_at), now) <= now;
            let may_be_waiting = scheduled
                && (pf_changed
                    || !tx
                        .query(
                            "SELECT 1 FROM pending WHERE crowd = $1 AND last_seen >= $2 LIMIT 1",
                            &[name.clone(), config.silent_before(now).into()],
                        )?
                        .is_empty()
                    || !tx
                        .query(
                            "SELECT 1 FROM members WHERE crowd = $1
                             AND (leaving <> 0 OR last_seen < $2) LIMIT 1",
                            &[name.clone(), config.expired_before(now).into()],
                        )?
                        .is_empty());
            let refresh = epoch > 0 && now.saturating_sub(issued_at) > config.document_lifetime_ms / 2;
            if !may_be_waiting && !refresh {
                return Ok(Tick::Idle);
            }
            let state = load_state(tx, &name, epoch, last_epoch_at, Some(last_tick_at))?;
            let before: BTreeMap<MemberId, Member> = state
                .members
                .iter()
                .map(|(m, _, _)| (m.id, m.clone()))
                .collect();
            let last_seen: BTreeMap<MemberId, u64> = state
                .members
                .iter()
                .map(|(m, seen, _)| (m.id, *seen))
                .chain(state.pending.iter().map(|(m, seen)| (m.id, *seen)))
                .collect();
            let pending_ids: Vec<MemberId> = state.pending.iter().map(|(m, _)| m.id).collect();
            let mut roster = Roster::restore(config.clone(), state);
            if pf_changed {
                roster.force_epoch();
            }
            // The roster's rule alone decides whether an epoch is due.
            let due = roster.next_epoch_at(now).is_some_and(|at| at <= now);
            if !due && !refresh {
                return Ok(Tick::Idle);
            }
            let cut = if due { roster.poll_epoch(now) } else { None };
            let Some(doc) = cut else {
                // Same epoch, same members: only the issue and expiry times change.
                let doc = roster.document(now);
                let bytes = sign(&doc).map_err(StoreError::Sign)?;
                tx.exec(
                    "UPDATE documents SET issued_at = $3, body = $4 WHERE crowd = $1 AND epoch = $2",
                    &[name.clone(), epoch.into(), now.into(), bytes.into()],
                )?;
                tx.exec(
                    "UPDATE crowds SET issued_at = $2 WHERE name = $1",
                    &[name.clone(), now.into()],
                )?;
                return Ok(Tick::Refreshed);
            };
            let after: BTreeMap<MemberId, &Member> =
                doc.members.iter().map(|m| (m.id, m)).collect();
            for id in before.keys().filter(|id| !after.contains_key(id)) {
                tx.exec("DELETE FROM members WHERE account_id = $1", &[(*id).into()])?;
            }
            for (id, m) in &after {
                if before.get(id) == Some(*m) {
                    continue;
                }
                let seen = last_seen.get(id).copied().unwrap_or(now);
                let mut params = member_params(m, crowd, seen);
                params.push(Value::Int(0));
                tx.exec(
                    "INSERT INTO members (account_id, crowd, public_key, addr, flags, last_seen, leaving)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (account_id) DO UPDATE SET crowd = excluded.crowd,
                       public_key = excluded.public_key, addr = excluded.addr,
                       flags = excluded.flags, last_seen = excluded.last_seen, leaving = 0",
                    &params,
                )?;
                if roster.admitted_at(*id).is_some() {
                    tx.exec(
                        "UPDATE accounts SET admitted_at = $2 WHERE id = $1",
                        &[(*id).into(), now.into()],
                    )?;
                }
            }
            // Every pending entry was admitted or had gone silent (a silent one that
            // sent a heartbeat since it was loaded stays for the next epoch). Joins
            // take the crowd lock, so no entry changed under us.
            for id in &pending_ids {
                if roster.admitted_at(*id).is_some() {
                    tx.exec("DELETE FROM pending WHERE account_id = $1", &[(*id).into()])?;
                } else {
                    tx.exec(
                        "DELETE FROM pending WHERE account_id = $1 AND last_seen <= $2",
                        &[(*id).into(), last_seen.get(id).copied().unwrap_or(now).into()],
                    )?;
                }
            }
            let bytes = sign(&doc).map_err(StoreError::Sign)?;
            tx.exec(
                "INSERT INTO documents (crowd, epoch, issued_at, body) VALUES ($1, $2, $3, $4)",
                &[name.clone(), doc.epoch.into(), now.into(), bytes.into()],
            )?;
            tx.exec(
                "DELETE FROM documents WHERE crowd = $1 AND epoch <= $2",
                &[name.clone(), doc.epoch.saturating_sub(DOCUMENTS_KEPT).into()],
            )?;
            tx.exec(
                "UPDATE crowds SET epoch = $2, last_epoch_at = $3, issued_at = $3, pf_bits = $4
                 WHERE name = $1",
                &[name.clone(), doc.epoch.into(), now.into(), pf_bits.clone()],
            )?;
            Ok(Tick::NewEpoch {
                epoch: doc.epoch,
                members: doc.members.len(),
            })
        })
    }

    /// The crowd's latest signed document; its bytes are left out when `known` is its
    /// (epoch, issue time).
    pub fn latest_document(
        &mut self,
        crowd: &str,
        known: Option<(u64, u64)>,
    ) -> Result<Option<StoredDocument>, StoreError> {
        self.tx(|tx| {
            let rows = tx.query(
                "SELECT epoch, issued_at FROM documents WHERE crowd = $1
                 ORDER BY epoch DESC LIMIT 1",
                &[crowd.into()],
            )?;
            let Some(r) = rows.first() else {
                return Ok(None);
            };
            let (epoch, issued_at) = (to_u64(r[0].int("epoch")?), to_u64(r[1].int("issued_at")?));
            let bytes = if known == Some((epoch, issued_at)) {
                None
            } else {
                let rows = tx.query(
                    "SELECT body FROM documents WHERE crowd = $1 AND epoch = $2",
                    &[crowd.into(), epoch.into()],
                )?;
                Some(
                    rows.first().ok_or(StoreError::Corrupt("document"))?[0]
                        .bytes("document")?
                        .to_vec(),
                )
            };
            Ok(Some(StoredDocument {
                epoch,
                issued_at,
                bytes,
            }))
        })
    }

    /// The signed document of one epoch, if still kept.
    pub fn document(&mut self, crowd: &str, epoch: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.tx(|tx| {
            tx.query(
                "SELECT body FROM documents WHERE crowd = $1 AND epoch = $2",
                &[crowd.into(), epoch.into()],
            )?
            .first()
            .map(|r| Ok(r[0].bytes("document")?.to_vec()))
            .transpose()
        })
    }

    /// Members of the crowd's current epoch that missed the heartbeat timeout, by id:
    /// shown as silent, still members until the grace period has passed.
    pub fn silent_members(
        &mut self,
        config: &RosterConfig,
        now: u64,
    ) -> Result<Vec<MemberId>, StoreError> {
        // The roster's cut-off, so the page shows exactly what the rule says.
        let params = [
            Value::from(config.crowd.as_str()),
            Value::from(config.silent_before(now)),
        ];
        self.tx(|tx| {
            tx.query(
                "SELECT account_id FROM members
                 WHERE crowd = $1 AND last_seen < $2 ORDER BY account_id",
                &params,
            )?
            .iter()
            .map(|r| Ok(to_u64(r[0].int("member id")?)))
            .collect()
        })
    }

    /// Counts for a crowd's status.
    pub fn counts(&mut self, crowd: &str) -> Result<Counts, StoreError> {
        self.tx(|tx| {
            let count = |tx: &mut dyn Tx, sql: &str, p: &[Value]| -> Result<u64, StoreError> {
                Ok(to_u64(tx.query(sql, p)?[0][0].int("count")?))
            };
            let c = [crowd.into()];
            Ok(Counts {
                accounts: count(tx, "SELECT COUNT(*) FROM accounts", &[])?,
                members: count(tx, "SELECT COUNT(*) FROM members WHERE crowd = $1", &c)?,
                pending: count(tx, "SELECT COUNT(*) FROM pending WHERE crowd = $1", &c)?,
                epoch: tx
                    .query("SELECT epoch FROM crowds WHERE name = $1", &c)?
                    .first()
                    .map(|r| r[0].int("epoch"))
                    .transpose()?
                    .map_or(0, to_u64),
            })
        })
    }
}

fn load_state(
    tx: &mut dyn Tx,
    crowd: &Value,
    epoch: u64,
    last_epoch_at: Option<u64>,
    last_checked_at: Option<u64>,
) -> Result<RosterState, StoreError> {
    let rows: Vec<Row> = tx.query(
        "SELECT account_id, public_key, addr, flags, last_seen, leaving FROM members
         WHERE crowd = $1 ORDER BY account_id",
        std::slice::from_ref(crowd),
    )?;
    let members = rows
        .iter()
        .map(|r| {
            Ok((
                member_from(r, 0)?,
                to_u64(r[4].int("last_seen")?),
                r[5].int("leaving")? != 0,
            ))
        })
        .collect::<Result<_, StoreError>>()?;
    let rows = tx.query(
        "SELECT account_id, public_key, addr, flags, last_seen FROM pending
         WHERE crowd = $1 ORDER BY account_id",
        std::slice::from_ref(crowd),
    )?;
    let pending = rows
        .iter()
        .map(|r| Ok((member_from(r, 0)?, to_u64(r[4].int("last_seen")?))))
        .collect::<Result<_, StoreError>>()?;
    Ok(RosterState {
        epoch,
        last_epoch_at,
        last_checked_at,
        members,
        pending,
    })
}

fn unix_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A store in `dir` whose crowd admitted account "a" (key [1; 32]) at time 0.
    fn one_member_admitted_at_0(dir: &Path) -> (RosterConfig, Store) {
        let cfg = config();
        let mut store = Store::open(dir).expect("open");
        let a = store.add_account("a", "pw").expect("add");
        store.join(&cfg, &member(a, 1), 0).expect("join");
        store.tick(&cfg, 0, &sign).expect("tick");
        (cfg, store)
    }

    /// Epochs on a 30 s grid; pending joins expire after 20 s of silence, members after
    /// 100 s.
    fn config() -> RosterConfig {
        RosterConfig {
            crowd: DEFAULT_CROWD.into(),
            forward_probability: 0.75,
            join_interval_ms: 30_000,
            heartbeat_timeout_ms: 20_000,
            grace_period_ms: 100_000,
            document_lifetime_ms: 600_000,
            rejoin_interval_ms: 0,
        }
    }

    /// Ticks every 10 s over `times` (as a running blender would, only coarser), with
    /// `disrupted(t)` as the blender's report; returns the epochs cut, with their times.
    fn tick_over(
        store: &mut Store,
        cfg: &RosterConfig,
        times: impl Iterator<Item = u64>,
        disrupted: impl Fn(u64) -> Option<u64>,
        heard: &[PublicKey],
    ) -> Vec<(u64, Tick)> {
        let mut cut = Vec::new();
        for t in times {
            for key in heard {
                assert!(store.heartbeat(key, t).expect("hb"), "{key:?} is known");
            }
            match store.tick_after(cfg, t, disrupted(t), &sign).expect("tick") {
                Tick::Idle | Tick::Refreshed => {}
                other => cut.push((t, other)),
            }
        }
        cut
    }

    fn member(id: MemberId, key: u8) -> Member {
        Member {
            id,
            addr: format!("127.0.0.{key}:7000").parse().expect("addr"),
            key: PublicKey([key; 32]),
            flags: 0,
        }
    }

    fn sign(doc: &CrowdDocument) -> Result<Vec<u8>, String> {
        serde_json::to_vec(&(doc.epoch, doc.issued_at, doc.members.len()))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn accounts_and_logins() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut store = Store::open(dir.path()).expect("open");
        let id = store.add_account("alice", "pw one").expect("add");
        assert!(matches!(
            store.add_account("alice", "x"),
            Err(StoreError::Exists(_))
        ));
        assert!(matches!(
            store.add_account("bad name", "x"),
            Err(StoreError::BadName)
        ));
        assert!(matches!(
            store.add_account_in("bob", "x", "no crowd"),
            Err(StoreError::BadCrowd)
        ));
        assert!(matches!(
            store.add_account("bob", ""),
            Err(StoreError::BadPassword)
        ));
        assert_eq!(store.verify_login("alice", "pw one").expect("v"), Some(id));
        assert_eq!(store.verify_login("alice", "pw two").expect("v"), None);
        assert_eq!(store.verify_login("nobody", "pw one").expect("v"), None);
        let slow = store.add_account_in("slowpoke", "pw", "slow").expect("add");
        let accounts = store.list_accounts().expect("list");
        assert_eq!(accounts.len(), 2);
        assert_eq!((accounts[1].id, accounts[1].crowd.as_str()), (slow, "slow"));
        let mode = std::fs::metadata(dir.path().join(DATABASE_FILE))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0);
        store.remove_account("alice").expect("remove");
        assert!(matches!(
            store.remove_account("alice"),
            Err(StoreError::NoSuchAccount(_))
        ));
        assert_eq!(store.verify_login("alice", "pw one").expect("v"), None);
        assert_eq!(
            store.schema_version().expect("version"),
            MIGRATIONS.len() as i64
        );
    }

    #[test]
    fn bad_database_urls_are_refused_without_echoing_them() {
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = |url: &str| DatabaseConfig {
            url: url.into(),
            password: None,
        };
        let err =
            Store::open_database(dir.path(), Some(&cfg("postgres://u:hunter2@127.0.0.1:1/x")))
                .err()
                .expect("refused")
                .to_string();
        assert!(err.contains("--database-password-file"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let err = Store::open_database(dir.path(), Some(&cfg("mysql://root:hunter2@db/x")))
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("postgres://"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    /// The stored roster follows the same rules as the in-memory one, across reopening.
    #[test]
    fn epochs_follow_the_roster_rules_and_survive_reopening() {
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = config();
        let mut store = Store::open(dir.path()).expect("open");
        let a = store.add_account("a", "pw").expect("add");
        let b = store.add_account("b", "pw").expect("add");
        assert_eq!(store.tick(&cfg, 1_000, &sign).expect("tick"), Tick::Idle);
        assert_eq!(
            store.join(&cfg, &member(a, 1), 1_000).expect("join"),
            JoinOutcome::Pending
        );
        assert_eq!(
            store.tick(&cfg, 1_000, &sign).expect("tick"),
            Tick::NewEpoch {
                epoch: 1,
                members: 1
            },
            "a crowd's first epoch is cut at once"
        );
        assert_eq!(
            store.join(&cfg, &member(b, 2), 2_000).expect("join"),
            JoinOutcome::Pending
        );
        assert_eq!(
            store.join(&cfg, &member(a, 1), 2_000).expect("join"),
            JoinOutcome::AlreadyMember
        );
        // Batched: nothing before the scheduled time (30 s).
        assert_eq!(store.tick(&cfg, 15_000, &sign).expect("tick"), Tick::Idle);
        assert!(store.heartbeat(&PublicKey([1; 32]), 20_000).expect("hb"));
        assert!(store.heartbeat(&PublicKey([2; 32]), 20_000).expect("hb"));
        assert!(!store.heartbeat(&PublicKey([9; 32]), 20_000).expect("hb"));
        assert_eq!(store.tick(&cfg, 29_999, &sign).expect("tick"), Tick::Idle);
        drop(store);
        let mut store = Store::open(dir.path()).expect("reopen");
        assert_eq!(
            store.tick(&cfg, 30_000, &sign).expect("tick"),
            Tick::NewEpoch {
                epoch: 2,
                members: 2
            }
        );
        let latest = store
            .latest_document(DEFAULT_CROWD, None)
            .expect("doc")
            .expect("some");
        assert_eq!((latest.epoch, latest.issued_at), (2, 30_000));
        assert_eq!(
            store
                .latest_document(DEFAULT_CROWD, Some((2, 30_000)))
                .expect("doc"),
            Some(StoredDocument {
                epoch: 2,
                issued_at: 30_000,
                bytes: None
            })
        );
        assert_eq!(
            store
                .crowd_of(&PublicKey([2; 32]))
                .expect("crowd")
                .as_deref(),
            Some("default")
        );
        // b leaves, a stays alive: b is gone at the next scheduled epoch.
        store.leave(&PublicKey([2; 32])).expect("leave");
        assert!(store.heartbeat(&PublicKey([1; 32]), 45_000).expect("hb"));
        assert_eq!(store.tick(&cfg, 45_000, &sign).expect("tick"), Tick::Idle);
        assert_eq!(
            store.tick(&cfg, 60_000, &sign).expect("tick"),
            Tick::NewEpoch {
                epoch: 3,
                members: 1
            }
        );
        // a goes silent (last heard at 45 s): shown as silent, kept within the grace
        // period, dropped at the first scheduled time after it.
        let cut = tick_over(
            &mut store,
            &cfg,
            (70..=140).map(|s| s * 1_000),
            |_| None,
            &[],
        );
        assert_eq!(cut, []);
        assert_eq!(store.silent_members(&cfg, 140_000).expect("silent"), [a]);
        assert_eq!(store.counts(DEFAULT_CROWD).expect("counts").members, 1);
        assert_eq!(
            tick_over(
                &mut store,
                &cfg,
                (141..=150).map(|s| s * 1_000),
                |_| None,
                &[]
            ),
            [(
                150_000,
                Tick::NewEpoch {
                    epoch: 4,
                    members: 0
                }
            )]
        );
        assert!(!store.heartbeat(&PublicKey([1; 32]), 150_500).expect("hb"));
        let counts = store.counts(DEFAULT_CROWD).expect("counts");
        assert_eq!((counts.accounts, counts.members, counts.epoch), (2, 0, 4));
    }

    /// A member that misses heartbeats for less than the grace period stays a member:
    /// no epoch, and its return changes nothing.
    #[test]
    fn a_member_silent_within_the_grace_period_cuts_no_epoch() {
        let dir = tempfile::tempdir().expect("tmp");
        let (cfg, mut store) = one_member_admitted_at_0(dir.path());
        let b = store.add_account("b", "pw").expect("add");
        store.join(&cfg, &member(b, 2), 10_000).expect("join");
        assert_eq!(
            tick_over(
                &mut store,
                &cfg,
                (1..=3).map(|s| s * 10_000),
                |_| None,
                &[PublicKey([1; 32]), PublicKey([2; 32])]
            ),
            [(
                30_000,
                Tick::NewEpoch {
                    epoch: 2,
                    members: 2
                }
            )]
        );
        // b is silent from 30 s to 120 s, then back (a heartbeat, or a join with the
        // same key and address).
        let a_only = [PublicKey([1; 32])];
        let cut = tick_over(
            &mut store,
            &cfg,
            (4..=12).map(|s| s * 10_000),
            |_| None,
            &a_only,
        );
        assert_eq!(cut, [], "silent within the grace period");
        assert_eq!(store.silent_members(&cfg, 120_000).expect("silent"), [b]);
        assert!(store.heartbeat(&PublicKey([2; 32]), 125_000).expect("hb"));
        assert_eq!(
            store.join(&cfg, &member(b, 2), 126_000).expect("join"),
            JoinOutcome::AlreadyMember
        );
        assert!(store
            .silent_members(&cfg, 126_000)
            .expect("silent")
            .is_empty());
        let both = [PublicKey([1; 32]), PublicKey([2; 32])];
        let cut = tick_over(
            &mut store,
            &cfg,
            (13..=40).map(|s| s * 10_000),
            |_| None,
            &both,
        );
        assert_eq!(cut, []);
        assert_eq!(store.counts(DEFAULT_CROWD).expect("counts").epoch, 2);
    }

    /// A join arriving after a scheduled time that found nothing waiting waits for the
    /// next one; leaving and joining again never cut an epoch off the schedule.
    #[test]
    fn joins_wait_for_the_schedule_and_leave_and_rejoin_cut_no_extra_epoch() {
        let dir = tempfile::tempdir().expect("tmp");
        let (cfg, mut store) = one_member_admitted_at_0(dir.path());
        let a_key = [PublicKey([1; 32])];
        assert_eq!(
            tick_over(
                &mut store,
                &cfg,
                (1..=31).map(|s| s * 1_000),
                |_| None,
                &a_key
            ),
            []
        );
        let b = store.add_account("b", "pw").expect("add");
        assert_eq!(
            store.join(&cfg, &member(b, 2), 31_000).expect("join"),
            JoinOutcome::Pending
        );
        let both = [PublicKey([1; 32]), PublicKey([2; 32])];
        assert_eq!(
            tick_over(
                &mut store,
                &cfg,
                (32..=60).map(|s| s * 1_000),
                |_| None,
                &both
            ),
            [(
                60_000,
                Tick::NewEpoch {
                    epoch: 2,
                    members: 2
                }
            )]
        );
        // b leaves and is back (same key and address) before the next scheduled time:
        // nothing is waiting any more, so that time passes without an epoch.
        store.leave(&PublicKey([2; 32])).expect("leave");
        assert_eq!(
            tick_over(
                &mut store,
                &cfg,
                (61..=70).map(|s| s * 1_000),
                |_| None,
                &both
            ),
            []
        );
        assert_eq!(
            store.join(&cfg, &member(b, 2), 70_500).expect("join"),
            JoinOutcome::AlreadyMember
        );
        assert_eq!(
            tick_over(
                &mut store,
                &cfg,
                (71..=120).map(|s| s * 1_000),
                |_| None,
                &both
            ),
            []
        );
        // Leaving, then joining with a new address: both land in the scheduled epoch.
        store.leave(&PublicKey([2; 32])).expect("leave");
        let mut moved = member(b, 2);
        moved.addr = "127.0.0.99:7000".parse().expect("addr");
        assert_eq!(
            store.join(&cfg, &moved, 125_000).expect("join"),
            JoinOutcome::Pending
        );
        assert_eq!(
            tick_over(
                &mut store,
                &cfg,
                (121..=180).map(|s| s * 1_000),
                |_| None,
                &both
            ),
            [(
                150_000,
                Tick::NewEpoch {
                    epoch: 3,
                    members: 2
                }
            )]
        );
    }

    #[test]
    fn members_get_a_grace_period_after_every_blender_was_down() {
        let dir = tempfile::tempdir().expect("tmp");
        let (cfg, mut store) = one_member_admitted_at_0(dir.path());
        // No tick for 100 s (no blender running): a, silent since 0, is not dropped at
        // once: the outage is nobody's silence...
        assert_eq!(store.tick(&cfg, 100_000, &sign).expect("tick"), Tick::Idle);
        let ticks = |from: u64, to: u64| (from..=to).map(|s| s * 10_000);
        assert_eq!(
            tick_over(&mut store, &cfg, ticks(11, 20), |_| None, &[]),
            []
        );
        // ...but a grace period after it, still silent, it is dropped at the next
        // scheduled time.
        assert_eq!(
            tick_over(&mut store, &cfg, ticks(21, 21), |_| None, &[]),
            [(
                210_000,
                Tick::NewEpoch {
                    epoch: 2,
                    members: 0
                }
            )]
        );
    }

    /// The outage does not pardon silence before it either: the member's clock stood
    /// still only while no blender ran.
    #[test]
    fn an_outage_stops_the_silence_clock_without_resetting_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let (cfg, mut store) = one_member_admitted_at_0(dir.path());
        let ticks = |from: u64, to: u64| (from..=to).map(|s| s * 10_000);
        // Silent for 60 s, then 100 s without a blender, then silent on: dropped once
        // 100 s of its silence fell outside the outage (at 200 s), at 210 s.
        assert_eq!(tick_over(&mut store, &cfg, ticks(1, 6), |_| None, &[]), []);
        assert_eq!(
            tick_over(&mut store, &cfg, ticks(16, 20), |_| None, &[]),
            []
        );
        assert_eq!(
            tick_over(&mut store, &cfg, ticks(21, 21), |_| None, &[]),
            [(
                210_000,
                Tick::NewEpoch {
                    epoch: 2,
                    members: 0
                }
            )]
        );
    }

    /// While the blender turned heartbeats away (its API connections all taken, or its
    /// store failing), silence does not count: without the report, the silent member
    /// is dropped at 120 s; with 70 s of it reported, at 180 s.
    #[test]
    fn a_saturated_or_failing_blender_drops_nobody_for_it() {
        let ticks = |from: u64, to: u64| (from..=to).map(|s| s * 10_000);
        let run = |disrupted: &dyn Fn(u64) -> Option<u64>| {
            let dir = tempfile::tempdir().expect("tmp");
            let (cfg, mut store) = one_member_admitted_at_0(dir.path());
            let b = store.add_account("b", "pw").expect("add");
            store.join(&cfg, &member(b, 2), 10_000).expect("join");
            // b keeps heartbeating; a is silent from 0.
            tick_over(
                &mut store,
                &cfg,
                ticks(1, 30),
                disrupted,
                &[PublicKey([2; 32])],
            )
        };
        let dropped_at = |cut: &[(u64, Tick)]| {
            cut.iter()
                .find(|(_, t)| matches!(t, Tick::NewEpoch { members: 1, .. }))
                .map(|(at, _)| *at)
        };
        assert_eq!(dropped_at(&run(&|_| None)), Some(120_000));
        // Saturated (or failing) at some moment during each of the 7 intervals ending at
        // 60 s to 120 s: the time since each previous tick is nobody's silence.
        let saturated = |t: u64| (t > 50_000 && t <= 120_000).then_some(t - 5_000);
        let cut = run(&saturated);
        assert_eq!(dropped_at(&cut), Some(180_000), "{cut:?}");
        // A report from before the last tick is old news: nothing changes.
        let stale = |t: u64| (t > 50_000 && t <= 120_000).then_some(40_000);
        assert_eq!(dropped_at(&run(&stale)), Some(120_000));
    }

    #[test]
    fn documents_are_refreshed_and_a_changed_pf_forces_an_epoch() {
        let dir = tempfile::tempdir().expect("tmp");
        let (cfg, mut store) = one_member_admitted_at_0(dir.path());
        store.heartbeat(&PublicKey([1; 32]), 300_000).expect("hb");
        assert_eq!(
            store.tick(&cfg, 300_001, &sign).expect("tick"),
            Tick::Refreshed
        );
        let doc = store
            .latest_document(DEFAULT_CROWD, None)
            .expect("doc")
            .expect("some");
        assert_eq!((doc.epoch, doc.issued_at), (1, 300_001));
        let changed = RosterConfig {
            forward_probability: 0.8,
            ..config()
        };
        // The new pf waits for the next scheduled time like any other change.
        assert_eq!(
            store.tick(&changed, 310_000, &sign).expect("tick"),
            Tick::Idle
        );
        assert_eq!(
            store.tick(&changed, 330_000, &sign).expect("tick"),
            Tick::NewEpoch {
                epoch: 2,
                members: 1
            }
        );
        assert_eq!(
            store.tick(&changed, 360_001, &sign).expect("tick"),
            Tick::Idle
        );
    }

    #[test]
    fn crowds_are_separate() {
        let dir = tempfile::tempdir().expect("tmp");
        let fast = config();
        let slow = RosterConfig {
            crowd: "slow".into(),
            forward_probability: 0.6,
            ..config()
        };
        let mut store = Store::open(dir.path()).expect("open");
        let a = store.add_account("a", "pw").expect("add");
        let b = store.add_account_in("b", "pw", "slow").expect("add");
        store.join(&fast, &member(a, 1), 0).expect("join");
        store.join(&slow, &member(b, 2), 0).expect("join");
        assert_eq!(
            store.tick(&fast, 0, &sign).expect("tick"),
            Tick::NewEpoch {
                epoch: 1,
                members: 1
            }
        );
        assert_eq!(
            store.tick(&slow, 0, &sign).expect("tick"),
            Tick::NewEpoch {
                epoch: 1,
                members: 1
            }
        );
        assert_eq!(
            store.crowd_of(&PublicKey([2; 32])).expect("c").as_deref(),
            Some("slow")
        );
        assert_eq!(store.counts("slow").expect("counts").members, 1);
    }
}
