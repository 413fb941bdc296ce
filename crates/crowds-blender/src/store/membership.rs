//! A crowd's membership between epochs, as stored: joins, heartbeats and leaves, and the
//! counts the status page shows. Every decision comes from [`crowds_proto::roster`]; this
//! file only loads the rows a rule needs and writes back what the rule says.

use super::sql::{Tx, Value};
use super::{to_u64, Store, StoreError};
use crowds_proto::document::Member;
use crowds_proto::identity::PublicKey;
use crowds_proto::roster::{displaces, join_outcome, JoinOutcome, RosterConfig};
use crowds_proto::MemberId;

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

/// The lock of a crowd's epochs (FNV-1a of its name).
pub(super) fn crowd_lock(crowd: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in b"crowds-epoch:".iter().chain(crowd.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

pub(super) fn member_from(row: &[Value], at: usize) -> Result<Member, StoreError> {
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

pub(super) fn member_params(m: &Member, crowd: &str, last_seen: u64) -> Vec<Value> {
    vec![
        m.id.into(),
        crowd.into(),
        m.key.to_hex().into(),
        m.addr.to_string().into(),
        Value::Int(i64::from(m.flags)),
        last_seen.into(),
    ]
}

impl Store {
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
                    // A key belongs to one member: the roster says which pending joins
                    // holding it give way.
                    let holders = tx.query(
                        "SELECT account_id, public_key, addr, flags FROM pending
                         WHERE public_key = $1",
                        &[member.key.to_hex().into()],
                    )?;
                    for holder in holders {
                        let holder = member_from(&holder, 0)?;
                        if displaces(member, &holder) {
                            tx.exec(
                                "DELETE FROM pending WHERE account_id = $1",
                                &[holder.id.into()],
                            )?;
                        }
                    }
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
