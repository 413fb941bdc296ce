//! The store's unit tests: accounts, and the membership rules applied to stored state.

use super::schema::MIGRATIONS;
use super::*;
use crowds_proto::document::{CrowdDocument, Member};
use crowds_proto::identity::PublicKey;
use crowds_proto::roster::{JoinOutcome, RosterConfig};
use crowds_proto::MemberId;
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
    serde_json::to_vec(&(doc.epoch, doc.issued_at, doc.members.len())).map_err(|e| e.to_string())
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
    let err = Store::open_database(dir.path(), Some(&cfg("postgres://u:hunter2@127.0.0.1:1/x")))
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

/// The bulk update of an outage does exactly what the roster's rule says, row by row.
#[test]
fn the_silence_pause_in_sql_is_the_roster_rule() {
    use crowds_proto::roster::SilencePause;
    let dir = tempfile::tempdir().expect("tmp");
    let mut store = Store::open(dir.path()).expect("open");
    let pause = SilencePause {
        from: 50_000,
        to: 80_000,
    };
    let seen: [u64; 8] = [0, 1, 49_999, 50_000, 50_001, 79_999, 80_000, 90_000];
    let mut ids = Vec::new();
    for (i, _) in seen.iter().enumerate() {
        ids.push(store.add_account(&format!("m{i}"), "pw").expect("add"));
    }
    let crowd = sql::Value::from(DEFAULT_CROWD);
    let after = store
        .tx(|tx| {
            for (id, last_seen) in ids.iter().zip(seen) {
                let key = u8::try_from(*id).expect("small id");
                let mut params = membership::member_params(&member(*id, key), DEFAULT_CROWD, last_seen);
                params.push(sql::Value::Int(0));
                tx.exec(
                    "INSERT INTO members (account_id, crowd, public_key, addr, flags, last_seen, leaving)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    &params,
                )?;
            }
            epochs::pause_silence(tx, &crowd, pause)?;
            tx.query(
                "SELECT last_seen FROM members ORDER BY account_id",
                &[],
            )?
            .iter()
            .map(|r| Ok(to_u64(r[0].int("last_seen")?)))
            .collect::<Result<Vec<_>, StoreError>>()
        })
        .expect("tx");
    let expected: Vec<u64> = seen.iter().map(|s| pause.last_seen(*s)).collect();
    assert_eq!(after, expected);
}
