//! The few things the store needs from a SQL database, so that its logic is written once
//! for SQLite and PostgreSQL.
//!
//! Owns the value and transaction types the two drivers translate to. It holds no SQL of
//! its own and no knowledge of accounts or crowds.

use super::StoreError;

/// A parameter or column value. Integers are 64-bit everywhere (SQLite `INTEGER`,
/// PostgreSQL `BIGINT`); blobs are `BLOB` / `BYTEA`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A 64-bit integer (also booleans, as 0 or 1).
    Int(i64),
    /// UTF-8 text.
    Text(String),
    /// Bytes.
    Bytes(Vec<u8>),
}

impl Value {
    /// The integer, or a corrupt-row error naming `what`.
    pub fn int(&self, what: &'static str) -> Result<i64, StoreError> {
        match self {
            Value::Int(i) => Ok(*i),
            _ => Err(StoreError::Corrupt(what)),
        }
    }

    /// The integer, or `None` for NULL.
    pub fn opt_int(&self, what: &'static str) -> Result<Option<i64>, StoreError> {
        match self {
            Value::Null => Ok(None),
            v => v.int(what).map(Some),
        }
    }

    /// The text.
    pub fn text(&self, what: &'static str) -> Result<&str, StoreError> {
        match self {
            Value::Text(s) => Ok(s),
            _ => Err(StoreError::Corrupt(what)),
        }
    }

    /// The bytes.
    pub fn bytes(&self, what: &'static str) -> Result<&[u8], StoreError> {
        match self {
            Value::Bytes(b) => Ok(b),
            _ => Err(StoreError::Corrupt(what)),
        }
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_string())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Bytes(v)
    }
}

/// A row of a result.
pub type Row = Vec<Value>;

/// An open transaction. Statements use PostgreSQL's `$1, $2, …` placeholders; the
/// SQLite driver translates them.
pub trait Tx {
    /// Runs a statement; returns the number of rows changed.
    fn exec(&mut self, sql: &str, params: &[Value]) -> Result<u64, StoreError>;
    /// Runs a query; returns all rows.
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, StoreError>;
    /// Takes the lock named `key` until the transaction ends, waiting for it if
    /// `wait`; returns false if `wait` is false and another session holds it. Every
    /// change to a crowd's epoch is made under its lock, so two blenders sharing one
    /// database never cut the same epoch twice.
    fn lock(&mut self, key: i64, wait: bool) -> Result<bool, StoreError>;
}

/// A database connection.
pub trait Db: Send {
    /// "sqlite" or "postgres".
    fn kind(&self) -> &'static str;
    /// Runs `f` in one transaction: committed if it returns `Ok`, rolled back otherwise.
    fn transaction(
        &mut self,
        f: &mut dyn FnMut(&mut dyn Tx) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;
}
