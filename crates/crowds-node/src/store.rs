//! The blender's account store: an embedded SQLite database in the data directory.
//!
//! Owns accounts (name, argon2id password hash) and the last published epoch with its
//! members, so a restarted blender loses neither. Every write is one transaction.
//! Passwords are never stored, logged or returned; only hashes are kept.

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use crowds_proto::document::Member;
use crowds_proto::identity::PublicKey;
use crowds_proto::MemberId;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;

/// File name of the database inside the blender's data directory.
pub const DATABASE_FILE: &str = "blender.sqlite3";
/// Longest account name.
pub const MAX_ACCOUNT_NAME: usize = 64;
/// Longest password accepted.
pub const MAX_PASSWORD: usize = 1024;

/// Errors of the account store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite failed.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The account name is already taken.
    #[error("account {0:?} already exists")]
    Exists(String),
    /// No such account.
    #[error("no account named {0:?}")]
    NoSuchAccount(String),
    /// The name has characters or a length we do not accept.
    #[error("invalid account name: use 1 to 64 letters, digits, '.', '_' or '-'")]
    BadName,
    /// The password is empty or too long.
    #[error("invalid password: it must be 1 to 1024 bytes")]
    BadPassword,
    /// Password hashing failed.
    #[error("password hashing failed: {0}")]
    Hash(String),
    /// A stored row is corrupt.
    #[error("corrupt row in the database: {0}")]
    Corrupt(&'static str),
}

/// An account as listed (never with its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The account's number; it is also the member id of its jondo.
    pub id: MemberId,
    /// The account name.
    pub name: String,
    /// Creation time, unix seconds.
    pub created_at: i64,
}

/// The SQLite account store.
pub struct Store {
    conn: Connection,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_ACCOUNT_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

impl Store {
    /// Opens (creating if needed) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Self, crate::error::NodeError> {
        crate::files::ensure_private_dir(dir)?;
        let path = dir.join(DATABASE_FILE);
        let conn = Connection::open(&path).map_err(StoreError::from)?;
        // The database holds password hashes: owner only.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .map_err(|e| crate::error::NodeError::io(format!("chmod {}", path.display()), e))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(StoreError::from)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS accounts (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 name TEXT NOT NULL UNIQUE,
                 password_hash TEXT NOT NULL,
                 created_at INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS crowd_state (
                 id INTEGER PRIMARY KEY CHECK (id = 1),
                 epoch INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS members (
                 account_id INTEGER PRIMARY KEY REFERENCES accounts(id) ON DELETE CASCADE,
                 addr TEXT NOT NULL,
                 public_key TEXT NOT NULL,
                 flags INTEGER NOT NULL
             );",
        )
        .map_err(StoreError::from)?;
        Ok(Self { conn })
    }

    /// Creates an account; the password is hashed with argon2id.
    pub fn add_account(&mut self, name: &str, password: &str) -> Result<MemberId, StoreError> {
        if !valid_name(name) {
            return Err(StoreError::BadName);
        }
        if password.is_empty() || password.len() > MAX_PASSWORD {
            return Err(StoreError::BadPassword);
        }
        let salt = SaltString::generate(&mut OsRng);
        let hash = Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map_err(|e| StoreError::Hash(e.to_string()))?
            .to_string();
        let now = unix_seconds();
        match self.conn.execute(
            "INSERT INTO accounts (name, password_hash, created_at) VALUES (?1, ?2, ?3)",
            params![name, hash, now],
        ) {
            Ok(_) => Ok(self.conn.last_insert_rowid() as MemberId),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::Exists(name.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Removes an account (and its membership record).
    pub fn remove_account(&mut self, name: &str) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        let id: Option<i64> = tx
            .query_row("SELECT id FROM accounts WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?;
        let id = id.ok_or_else(|| StoreError::NoSuchAccount(name.to_string()))?;
        tx.execute("DELETE FROM members WHERE account_id = ?1", [id])?;
        tx.execute("DELETE FROM accounts WHERE id = ?1", [id])?;
        tx.commit()?;
        Ok(())
    }

    /// All accounts, by id.
    pub fn list_accounts(&self) -> Result<Vec<Account>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, name, created_at FROM accounts ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            Ok(Account {
                id: r.get::<_, i64>(0)? as MemberId,
                name: r.get(1)?,
                created_at: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Checks a login. Returns the account id, or `None` for an unknown account or a
    /// wrong password (indistinguishable to the caller, and equally slow).
    pub fn verify_login(&self, name: &str, password: &str) -> Result<Option<MemberId>, StoreError> {
        let row: Option<(i64, String)> = if valid_name(name) {
            self.conn
                .query_row(
                    "SELECT id, password_hash FROM accounts WHERE name = ?1",
                    [name],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?
        } else {
            None
        };
        let (id, hash) = match row {
            Some(r) => r,
            None => {
                // Spend the same effort as a real check so timing does not reveal
                // which account names exist.
                let salt = SaltString::generate(&mut OsRng);
                let _ = Argon2::default().hash_password(password.as_bytes(), &salt);
                return Ok(None);
            }
        };
        let parsed = PasswordHash::new(&hash).map_err(|_| StoreError::Corrupt("password hash"))?;
        Ok(Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
            .then_some(id as MemberId))
    }

    /// Records a published epoch and its members, in one transaction.
    pub fn save_epoch(&mut self, epoch: u64, members: &[Member]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO crowd_state (id, epoch) VALUES (1, ?1)
             ON CONFLICT(id) DO UPDATE SET epoch = excluded.epoch",
            [epoch as i64],
        )?;
        tx.execute("DELETE FROM members", [])?;
        for m in members {
            tx.execute(
                "INSERT INTO members (account_id, addr, public_key, flags) VALUES (?1, ?2, ?3, ?4)",
                params![m.id as i64, m.addr.to_string(), m.key.to_hex(), m.flags],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The last published epoch and its members still holding an account.
    pub fn load_epoch(&self) -> Result<(u64, Vec<Member>), StoreError> {
        let epoch: Option<i64> = self
            .conn
            .query_row("SELECT epoch FROM crowd_state WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()?;
        let mut stmt = self.conn.prepare(
            "SELECT m.account_id, m.addr, m.public_key, m.flags FROM members m
             JOIN accounts a ON a.id = m.account_id ORDER BY m.account_id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, u8>(3)?,
            ))
        })?;
        let mut members = Vec::new();
        for row in rows {
            let (id, addr, key, flags) = row?;
            members.push(Member {
                id: id as MemberId,
                addr: addr
                    .parse()
                    .map_err(|_| StoreError::Corrupt("member address"))?,
                key: PublicKey::from_hex(&key).map_err(|_| StoreError::Corrupt("member key"))?,
                flags,
            });
        }
        Ok((epoch.unwrap_or(0) as u64, members))
    }
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
            store.add_account("bob", ""),
            Err(StoreError::BadPassword)
        ));
        assert_eq!(store.verify_login("alice", "pw one").expect("v"), Some(id));
        assert_eq!(store.verify_login("alice", "pw two").expect("v"), None);
        assert_eq!(store.verify_login("nobody", "pw one").expect("v"), None);
        assert_eq!(store.list_accounts().expect("list").len(), 1);
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
    }

    #[test]
    fn epochs_survive_reopening() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut store = Store::open(dir.path()).expect("open");
        let id = store.add_account("carol", "pw").expect("add");
        let member = Member {
            id,
            addr: "127.0.0.5:7000".parse().expect("addr"),
            key: PublicKey([5; 32]),
            flags: 0,
        };
        store
            .save_epoch(7, std::slice::from_ref(&member))
            .expect("save");
        drop(store);
        let store = Store::open(dir.path()).expect("reopen");
        assert_eq!(store.load_epoch().expect("load"), (7, vec![member]));
    }
}
