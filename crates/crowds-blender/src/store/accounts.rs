//! Accounts: creating, removing and listing them, and checking a login. Passwords are
//! hashed with argon2id and never stored, logged or returned; the slow checks run on
//! the [`super::password`] pool, outside the store's lock. Knows nothing of crowds'
//! membership beyond the crowd an account joins.

use super::sql::Value;
use super::{password, to_u64, valid_name, Store, StoreError, DEFAULT_CROWD, MAX_PASSWORD};
use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, SaltString};
use argon2::Argon2;
use crowds_proto::MemberId;

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
    pub(super) hash: String,
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

pub(super) fn hash_password(password: &str, params: argon2::Params) -> Result<String, StoreError> {
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
}

pub(super) fn unix_seconds() -> i64 {
    (crowds_net::net::now_ms() / 1000) as i64
}
