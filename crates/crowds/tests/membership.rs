//! Membership changes nobody can force, on real processes on 127.0.0.0/8: every epoch
//! re-forms every path in the crowd and gives collaborators another look at each
//! initiator (the predecessor attack), so none may follow from
//! - a member advertising another member's peer address (the blender checks with a TLS
//!   handshake that the joining key answers there, and refuses the join);
//! - a member whose heartbeats stop for longer than the heartbeat timeout but within the
//!   grace period (a laptop that sleeps: here the jondo is SIGSTOPped);
//! - the blender being unreachable for longer than the grace period (SIGSTOPped): that
//!   time is nobody's silence.
//!
//! Each test starts its own blender and jondos (`--join-interval 1s`, so a scheduled time
//! passes every second and a wrongly cut epoch would show at once) and asserts on the
//! blender's and the jondos' `status.json` that the epoch and the member list stay put.

use crowds_testkit::life;

use crowds_testkit::*;
use life::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The `crowds` binary these tests run.
const KIT: Kit = Kit::new(env!("CARGO_BIN_EXE_crowds"));

/// A member of the blender's member list: id, peer address, key.
type Listed = (u64, String, String);

/// The blender's epoch, member list and count of silent members.
async fn blender_view(crowd: &LifeCrowd) -> Result<(u64, Vec<Listed>, u64), String> {
    let s = crowd.blender_status().await?;
    let epoch = s["epoch"].as_u64().ok_or("no epoch")?;
    let silent = s["silent_members"].as_u64().ok_or("no silent_members")?;
    let list = s["member_list"]
        .as_array()
        .ok_or("no member_list")?
        .iter()
        .map(|m| {
            Ok((
                m["id"].as_u64().ok_or("member id")?,
                m["addr"].as_str().ok_or("member addr")?.to_string(),
                m["key"].as_str().ok_or("member key")?.to_string(),
            ))
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok((epoch, list, silent))
}

/// Checks that every member in `alive` is admitted in `epoch` with `n` members.
async fn jondos_hold(
    crowd: &LifeCrowd,
    alive: &[usize],
    epoch: u64,
    n: usize,
) -> Result<(), String> {
    for &i in alive {
        let s = crowd.members[i].status().await?;
        if s["epoch"] != epoch || s["members"] != n || s["admitted"] != true {
            return Err(format!(
                "{}: epoch {} members {} admitted {} (expected epoch {epoch}, {n} members)",
                crowd.members[i].account, s["epoch"], s["members"], s["admitted"]
            ));
        }
    }
    Ok(())
}

/// Asserts `check` at every look for `window` (it observes that nothing changes over a
/// span of time that covers several scheduled epoch times; it synchronises nothing).
async fn holds_for<F, Fut>(what: &str, window: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let start = Instant::now();
    let mut looks = 0u32;
    while start.elapsed() < window || looks < 2 {
        if let Err(e) = check().await {
            panic!("{what}: broken after {:?}: {e}", start.elapsed());
        }
        looks += 1;
        tokio::time::sleep(POLL).await;
    }
}

/// Sends `signal` (e.g. "STOP", "CONT") to the process `pid`.
fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// Waits until the blender shows the crowd of `n` settled (every member listed, none
/// silent, nothing pending) and returns its epoch and member list.
async fn settled(crowd: &LifeCrowd, n: usize) -> (u64, Vec<Listed>) {
    eventually(
        &format!("the blender to list {n} members, none silent"),
        FORM_TIMEOUT,
        || async {
            let s = crowd.blender_status().await?;
            let (epoch, list, silent) = blender_view(crowd).await?;
            if list.len() != n || silent != 0 || s["pending_joins"] != 0 {
                return Err(format!(
                    "{} listed, {silent} silent, {} pending",
                    list.len(),
                    s["pending_joins"]
                ));
            }
            Ok((epoch, list))
        },
    )
    .await
}

/// A second identity advertises an existing member's peer address: the blender finds
/// the victim's key there, not the joining one, and refuses the join (403, counted);
/// the epoch does not change and the victim stays listed with its own address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cannot_claim_another_members_address() {
    let settings = Settings::new(101, "2s", &["--grace-period", "60s"]);
    let mut crowd = LifeCrowd::start(KIT, 2, settings).await;
    let (epoch, listed) = settled(&crowd, 2).await;
    let victim = crowd.members[0].peer;
    assert!(
        listed
            .iter()
            .any(|(_, addr, _)| *addr == victim.to_string()),
        "the victim is listed at its own address: {listed:?}"
    );

    // Mallory: an account of its own, its own peer port, but advertising the victim's.
    let m = crowd.create_member();
    let mut extra: Vec<String> = crowd.settings.jondo.clone();
    extra.extend(["--advertise".to_string(), victim.to_string()]);
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let mallory = &crowd.members[m];
    let proc = KIT.spawn_jondo(&JondoSpec {
        name: &mallory.account,
        data_dir: &mallory.data_dir,
        blender: crowd.blender_addr,
        blender_key: &crowd.blender_pub,
        account: &mallory.account,
        password_file: &mallory.password_file,
        peer: mallory.peer,
        proxy: mallory.proxy,
        socks: mallory.socks,
        control: mallory.control,
        allow_private: true,
        extra: &extra,
        log_dir: &crowd.logs,
    });
    crowd.members[m].proc = Some(proc);

    // The claim is refused, and Mallory is told why.
    eventually(
        "the blender to refuse the forged address claim",
        Duration::from_secs(30),
        || async {
            let s = crowd.blender_status().await?;
            let refused = s["counters"]["address_claims_refused"]
                .as_u64()
                .unwrap_or(0);
            let told = crowd.members[m]
                .proc
                .as_ref()
                .is_some_and(|p| p.stderr().contains("answers with another key"));
            if refused >= 1 && told {
                Ok(())
            } else {
                Err(format!("refused {refused}, mallory told: {told}"))
            }
        },
    )
    .await;
    let metrics = direct_get(crowd.blender_control, "/metrics")
        .await
        .expect("metrics");
    let text = String::from_utf8_lossy(&metrics.1);
    assert!(
        text.lines().any(
            |l| l.starts_with("crowds_blender_address_claims_refused_total ") && !l.ends_with(" 0")
        ),
        "no refusal in /metrics:\n{text}"
    );

    // Over several scheduled times: the same epoch, the same
    // members, the victim at its own address, and nothing pending.
    holds_for(
        "the crowd after a forged address claim",
        Duration::from_secs(4),
        || async {
            let s = crowd.blender_status().await?;
            let (now_epoch, now_listed, _) = blender_view(&crowd).await?;
            if now_epoch != epoch || now_listed != listed {
                return Err(format!(
                    "epoch {epoch} -> {now_epoch}, members {listed:?} -> {now_listed:?}"
                ));
            }
            if s["pending_joins"] != 0 {
                return Err(format!("{} joins pending", s["pending_joins"]));
            }
            jondos_hold(&crowd, &[0, 1], epoch, 2).await
        },
    )
    .await;
    // Mallory's jondo is told why and stops, rather than retrying a join that cannot
    // succeed (a wrong --advertise is a configuration error).
    let exit = crowd.members[m]
        .proc
        .as_mut()
        .expect("mallory")
        .wait_exit(Duration::from_secs(30))
        .await;
    assert!(!exit.success(), "a refused jondo must exit with an error");
    let blender_log = crowd.blender.as_ref().expect("blender").stderr();
    assert!(
        blender_log.contains("join refused: the peer address does not answer"),
        "the blender logs the refusal:\n{blender_log}"
    );
    assert!(
        !blender_log.contains(&victim.to_string()),
        "the blender logged the claimed address unredacted:\n{blender_log}"
    );
    crowd.assert_running(&[0, 1]);
}

/// A member is SIGSTOPped for longer than the heartbeat timeout (2 s), well within the
/// grace period (60 s): the blender shows it as silent, but it stays a member, and when
/// it resumes nothing has changed: no epoch, the same member list, no re-join.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_gap_within_the_grace_period_changes_nothing() {
    let settings = Settings::new(111, "2s", &["--grace-period", "60s"]);
    let mut crowd = LifeCrowd::start(KIT, 3, settings).await;
    let (epoch, listed) = settled(&crowd, 3).await;
    let sleeper = 1;
    let pid = crowd.members[sleeper].pid().expect("running");

    signal(pid, "STOP");
    let stopped = Instant::now();
    // The blender notices the silence (the heartbeat timeout passed) ...
    eventually(
        "the blender to show the stopped member as silent",
        Duration::from_secs(20),
        || async {
            let (now_epoch, now_listed, silent) = blender_view(&crowd).await?;
            assert_eq!(now_epoch, epoch, "an epoch was cut while the member slept");
            assert_eq!(now_listed, listed, "the member list changed");
            if silent == 1 {
                Ok(())
            } else {
                Err(format!("{silent} silent"))
            }
        },
    )
    .await;
    // ... and for twice the heartbeat timeout more (several scheduled times), the crowd
    // stays as it was.
    holds_for(
        "the crowd while a member sleeps",
        Duration::from_secs(4),
        || async {
            let (now_epoch, now_listed, silent) = blender_view(&crowd).await?;
            if now_epoch != epoch || now_listed != listed || silent != 1 {
                return Err(format!(
                    "epoch {now_epoch}, {silent} silent, members {now_listed:?}"
                ));
            }
            jondos_hold(&crowd, &[0, 2], epoch, 3).await
        },
    )
    .await;
    let slept = stopped.elapsed();
    signal(pid, "CONT");
    assert!(slept > Duration::from_secs(2), "stopped for only {slept:?}");

    // Back: simply still a member.
    eventually(
        "the member to be heard again",
        Duration::from_secs(20),
        || async {
            let (_, _, silent) = blender_view(&crowd).await?;
            if silent == 0 {
                Ok(())
            } else {
                Err(format!("{silent} silent"))
            }
        },
    )
    .await;
    holds_for(
        "the crowd after the member woke up",
        Duration::from_secs(3),
        || async {
            let (now_epoch, now_listed, _) = blender_view(&crowd).await?;
            if now_epoch != epoch || now_listed != listed {
                return Err(format!("epoch {now_epoch}, members {now_listed:?}"));
            }
            jondos_hold(&crowd, &[0, 1, 2], epoch, 3).await
        },
    )
    .await;
    let log = crowd.members[sleeper].proc().stderr();
    assert!(
        !log.contains("no longer lists this jondo"),
        "the sleeper had to join again:\n{log}"
    );
    eprintln!("a member slept {slept:?}: epoch {epoch} throughout");
    crowd.assert_running(&[0, 1, 2]);
}

/// The blender is SIGSTOPped for longer than both the heartbeat timeout (2 s) and the
/// grace period (5 s): no heartbeat reaches it, yet when it resumes nobody is dropped
/// and no epoch is cut, because the time it was away is nobody's silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_briefly_unreachable_blender_drops_nobody() {
    let settings = Settings::new(121, "2s", &["--grace-period", "5s"]);
    let mut crowd = LifeCrowd::start(KIT, 3, settings).await;
    let (epoch, listed) = settled(&crowd, 3).await;
    let all = [0, 1, 2];
    let pid = crowd
        .blender
        .as_ref()
        .and_then(|b| b.pid())
        .expect("blender");

    signal(pid, "STOP");
    let stopped = Instant::now();
    // Every jondo notices (a heartbeat failed), and the outage outlasts the grace period.
    let controls: Vec<SocketAddr> = all.iter().map(|&i| crowd.members[i].control).collect();
    wait_every_status(
        "every jondo to find the blender unreachable",
        &controls,
        "blender_reachable",
        serde_json::json!(false),
    )
    .await;
    let outage = Duration::from_secs(8);
    if let Some(rest) = outage.checked_sub(stopped.elapsed()) {
        holds_for("the jondos while the blender is away", rest, || {
            jondos_hold(&crowd, &all, epoch, 3)
        })
        .await;
    }
    let away = stopped.elapsed();
    signal(pid, "CONT");
    assert!(away > Duration::from_secs(5), "stopped for only {away:?}");

    // Back: the same epoch and members at the blender and at every jondo, over several
    // scheduled times.
    eventually(
        "the blender to answer again",
        Duration::from_secs(30),
        || async { crowd.blender_status().await.map(drop) },
    )
    .await;
    holds_for(
        "the crowd after the blender came back",
        Duration::from_secs(4),
        || async {
            let (now_epoch, now_listed, _) = blender_view(&crowd).await?;
            if now_epoch != epoch || now_listed != listed {
                return Err(format!(
                    "epoch {epoch} -> {now_epoch}, members {listed:?} -> {now_listed:?}"
                ));
            }
            jondos_hold(&crowd, &all, epoch, 3).await
        },
    )
    .await;
    for &i in &all {
        let log = crowd.members[i].proc().stderr();
        assert!(
            !log.contains("no longer lists this jondo"),
            "{} was dropped and had to join again:\n{log}",
            crowd.members[i].account
        );
    }
    eprintln!("the blender was away {away:?}: epoch {epoch} throughout");
    crowd.assert_running(&all);
}
