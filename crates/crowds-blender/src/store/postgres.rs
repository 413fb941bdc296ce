//! The PostgreSQL driver, for blenders that share one database (`--database postgres://…`).
//!
//! Owns the translation of [`super::sql`] calls to the `postgres` crate and the crowd
//! locks, which are transaction-scoped advisory locks (`pg_advisory_xact_lock`): they are
//! released at commit, at rollback, and when a blender's session dies with it.

use super::sql::{Db, Row, Tx, Value};
use super::StoreError;
use postgres::types::{IsNull, ToSql, Type};
use postgres::{Client, NoTls};

/// A connection to PostgreSQL.
pub struct Postgres {
    client: Client,
}

impl Postgres {
    /// Connects to `url` (`postgres://user@host:port/db`), with `password` if given.
    /// A password inside the URL is refused: it would show in process listings.
    pub fn connect(url: &str, password: Option<&str>) -> Result<Self, StoreError> {
        let mut config: postgres::Config = url
            .parse()
            .map_err(|_| StoreError::Postgres("the database URL is not valid".into()))?;
        if config.get_password().is_some() {
            return Err(StoreError::PasswordInUrl);
        }
        if let Some(p) = password {
            config.password(p);
        }
        config.application_name("crowds-blender");
        config.connect_timeout(std::time::Duration::from_secs(10));
        let client = config.connect(NoTls).map_err(pg)?;
        Ok(Self { client })
    }
}

fn pg(e: postgres::Error) -> StoreError {
    if e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION) {
        return StoreError::Conflict;
    }
    StoreError::Postgres(e.to_string())
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) if *ty == Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
            Value::Int(i) if *ty == Type::BOOL => (*i != 0).to_sql(ty, out),
            Value::Int(i) => i.to_sql(ty, out),
            Value::Text(s) => s.to_sql(ty, out),
            Value::Bytes(b) => b.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

struct PgTx<'a>(postgres::Transaction<'a>);

fn params(values: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    values.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

impl Tx for PgTx<'_> {
    fn exec(&mut self, sql: &str, values: &[Value]) -> Result<u64, StoreError> {
        self.0.execute(sql, &params(values)).map_err(pg)
    }

    fn query(&mut self, sql: &str, values: &[Value]) -> Result<Vec<Row>, StoreError> {
        let rows = self.0.query(sql, &params(values)).map_err(pg)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let mut values = Vec::with_capacity(row.len());
            for (i, column) in row.columns().iter().enumerate() {
                let ty = column.type_();
                let v = if *ty == Type::INT8 {
                    row.try_get::<_, Option<i64>>(i)
                        .map_err(pg)?
                        .map(Value::Int)
                } else if *ty == Type::INT4 {
                    row.try_get::<_, Option<i32>>(i)
                        .map_err(pg)?
                        .map(|v| Value::Int(v.into()))
                } else if *ty == Type::BOOL {
                    row.try_get::<_, Option<bool>>(i)
                        .map_err(pg)?
                        .map(|v| Value::Int(v.into()))
                } else if *ty == Type::BYTEA {
                    row.try_get::<_, Option<Vec<u8>>>(i)
                        .map_err(pg)?
                        .map(Value::Bytes)
                } else {
                    row.try_get::<_, Option<String>>(i)
                        .map_err(pg)?
                        .map(Value::Text)
                };
                values.push(v.unwrap_or(Value::Null));
            }
            out.push(values);
        }
        Ok(out)
    }

    fn lock(&mut self, key: i64, wait: bool) -> Result<bool, StoreError> {
        if wait {
            self.0
                .execute("SELECT pg_advisory_xact_lock($1)", &[&key])
                .map_err(pg)?;
            return Ok(true);
        }
        let row = self
            .0
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&key])
            .map_err(pg)?;
        row.try_get::<_, bool>(0).map_err(pg)
    }
}

impl Db for Postgres {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn transaction(
        &mut self,
        f: &mut dyn FnMut(&mut dyn Tx) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let tx = self.client.transaction().map_err(pg)?;
        let mut tx = PgTx(tx);
        f(&mut tx)?;
        tx.0.commit().map_err(pg)
    }
}
