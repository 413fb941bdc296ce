//! The epoch clock, as stored: one tick loads a crowd's state under its lock, asks
//! [`crowds_proto::roster`] whether an epoch is due and who is in it, and writes the new
//! members and the signed document; and the signed documents read back. Never decides
//! membership itself, and never cuts an epoch without the crowd's lock (replicated
//! blenders share one database).

use super::membership::{crowd_lock, member_from, member_params};
use super::sql::{Row, Tx, Value};
use super::{to_u64, Store, StoreError, DOCUMENTS_KEPT};
use crowds_proto::document::{CrowdDocument, Member};
use crowds_proto::roster::{Roster, RosterConfig, RosterState, SilencePause};
use crowds_proto::MemberId;
use std::collections::BTreeMap;

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

impl Store {
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
            let (epoch, last_epoch_at, last_tick_at, issued_at, published_pf) = match rows.first()
            {
                Some(r) => (
                    to_u64(r[0].int("epoch")?),
                    r[1].opt_int("last_epoch_at")?.map(to_u64),
                    to_u64(r[2].int("last_tick_at")?),
                    to_u64(r[3].int("issued_at")?),
                    f64::from_bits(r[4].int("pf_bits")? as u64),
                ),
                None => {
                    tx.exec(
                        "INSERT INTO crowds (name, epoch, last_epoch_at, last_tick_at, issued_at, pf_bits)
                         VALUES ($1, 0, NULL, $2, 0, $3)",
                        &[name.clone(), now.into(), pf_bits.clone()],
                    )?;
                    (0, None, now, 0, config.forward_probability)
                }
            };
            // Time in which nobody could be heard is nobody's silence (the roster's rule,
            // applied to every row at once: the CASE is `SilencePause::last_seen`).
            if let Some(pause) = config.silence_pause(last_tick_at, now, disrupted_at) {
                pause_silence(tx, &name, pause)?;
            }
            tx.exec(
                "UPDATE crowds SET last_tick_at = $2 WHERE name = $1",
                &[name.clone(), now.into()],
            )?;
            // Epochs happen only at scheduled times (and a crowd's first one at once);
            // only then, and only if the indexes show a change that may be waiting, is
            // the whole membership loaded for the roster to decide. The queries select
            // with the roster's own cut-off times, so they never miss what it would see.
            let may_be_waiting = config.scheduled_by(last_epoch_at, Some(last_tick_at), now)
                && (config.pf_changed(epoch, Some(published_pf))
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
            let refresh = config.refresh_due(epoch, issued_at, now);
            if !may_be_waiting && !refresh {
                return Ok(Tick::Idle);
            }
            let stored = Stored {
                epoch,
                last_epoch_at,
                last_checked_at: last_tick_at,
                published_pf,
            };
            let state = load_state(tx, &name, stored)?;
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
            // The roster's rules alone decide whether an epoch is due (a changed pf
            // forces one) and who is in it.
            let mut roster = Roster::restore(config.clone(), state);
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
}

/// Applies the roster's [`SilencePause::last_seen`] to every member and pending join of
/// `crowd` at once (one statement per table, not one per row).
pub(super) fn pause_silence(
    tx: &mut dyn Tx,
    crowd: &Value,
    pause: SilencePause,
) -> Result<(), StoreError> {
    for table in ["members", "pending"] {
        tx.exec(
            &format!(
                "UPDATE {table} SET last_seen =
                   CASE WHEN last_seen > $3 THEN $2 ELSE last_seen + $4 END
                 WHERE crowd = $1 AND last_seen < $2"
            ),
            &[
                crowd.clone(),
                pause.to.into(),
                pause.from.into(),
                pause.length().into(),
            ],
        )?;
    }
    Ok(())
}

/// What the crowds table holds about a crowd's epochs.
struct Stored {
    epoch: u64,
    last_epoch_at: Option<u64>,
    last_checked_at: u64,
    published_pf: f64,
}

/// Loads a crowd's membership rows (under its lock) as the roster's state.
fn load_state(tx: &mut dyn Tx, crowd: &Value, stored: Stored) -> Result<RosterState, StoreError> {
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
        epoch: stored.epoch,
        last_epoch_at: stored.last_epoch_at,
        last_checked_at: Some(stored.last_checked_at),
        members,
        pending,
        published_pf: Some(stored.published_pf),
    })
}
