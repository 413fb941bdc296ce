//! Soak: many requests through a crowd whose membership keeps changing (extra jondos
//! join and leave, so epochs follow each other), while the file descriptors and
//! resident memory of every long-lived jondo are watched: compared after a warm-up and
//! at the end, they must stay flat (modest slack for links to members and allocator
//! noise). CI runs 2,000 requests over 4 membership changes; `CROWDS_FULL=1` runs
//! 20,000 requests over 12 (at least 10 epochs after the warm-up).

use crowds_testkit::life;

use crowds_testkit::*;
use life::*;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The `crowds` binary these tests run.
const KIT: Kit = Kit::new(env!("CARGO_BIN_EXE_crowds"));

/// Long-lived members whose resources are watched.
const N: usize = 5;
/// Concurrent clients.
const WORKERS: usize = 8;
/// A client connection is reused for this many requests, then replaced.
const REQUESTS_PER_CONNECTION: usize = 25;
/// Attempts for one request before the soak fails.
const ATTEMPTS: u32 = 5;
/// Membership changes that belong to the warm-up (one join, one leave).
const WARMUP_CHANGES: usize = 2;

/// The body size of request `k`: 1 B to 64 KiB, spread by a multiplicative hash.
fn size_of(k: usize) -> u64 {
    1 + (k as u64).wrapping_mul(2_654_435_761) % (64 * 1024)
}

#[derive(Default)]
struct Counters {
    /// Requests claimed.
    issued: AtomicUsize,
    /// Requests completed (byte-exact).
    done: AtomicUsize,
    /// Requests that may be claimed so far.
    allowed: AtomicUsize,
    /// Attempts that failed visibly (and were retried).
    failed_attempts: AtomicU64,
    /// A client panicked.
    gave_up: AtomicBool,
    /// The first few errors of failed attempts.
    errors: std::sync::Mutex<Vec<String>>,
}

/// Sets [`Counters::gave_up`] if its client panics.
struct GiveUpFlag(Arc<Counters>);

impl Drop for GiveUpFlag {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.gave_up.store(true, Ordering::SeqCst);
        }
    }
}

/// One client: claims request numbers while allowed, one keep-alive connection for
/// up to [`REQUESTS_PER_CONNECTION`] requests; each request is retried (on a new
/// connection) until byte-exact, at most [`ATTEMPTS`] times.
async fn worker(
    w: usize,
    proxy: std::net::SocketAddr,
    base_url: String,
    total: usize,
    counters: Arc<Counters>,
    deadline: Instant,
) {
    let _flag = GiveUpFlag(counters.clone());
    let mut client: Option<HttpClient> = None;
    let mut used = 0usize;
    loop {
        let k = counters.issued.load(Ordering::SeqCst);
        if k >= total {
            return;
        }
        if k >= counters.allowed.load(Ordering::SeqCst) {
            // Idle until the next phase: hold no connection, so resource readings
            // between phases see no client.
            client = None;
            assert!(
                Instant::now() < deadline,
                "worker {w}: the soak did not finish in time"
            );
            tokio::time::sleep(POLL).await;
            continue;
        }
        if counters
            .issued
            .compare_exchange(k, k + 1, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            continue;
        }
        let len = size_of(k);
        let kind = ["chunked", "blob", "blob"][k % 3];
        let url = format!("{base_url}/{kind}/{len}?soak={k}");
        let mut errors = Vec::new();
        loop {
            if client.is_none() || used >= REQUESTS_PER_CONNECTION {
                used = 0;
                client = match HttpClient::connect(proxy).await {
                    Ok(c) => Some(c),
                    Err(e) => {
                        errors.push(e);
                        None
                    }
                };
            }
            if let Some(c) = client.as_mut() {
                used += 1;
                let per_request = (Instant::now() + Duration::from_secs(60)).min(deadline);
                match checked_get_on(c, &url, len, per_request).await {
                    Outcome::Complete => break,
                    Outcome::Errored(e) => errors.push(e),
                    Outcome::Corrupt(e) => panic!("request {k}: reported complete but {e}"),
                    Outcome::Hung(e) => panic!("request {k}: {e}"),
                }
                client = None;
            }
            counters.failed_attempts.fetch_add(1, Ordering::SeqCst);
            {
                let mut first = counters.errors.lock().unwrap_or_else(|p| p.into_inner());
                if first.len() < 10 {
                    first.push(format!("request {k}: {}", errors.last().map_or("", |e| e)));
                }
            }
            assert!(
                errors.len() < ATTEMPTS as usize,
                "request {k} failed {ATTEMPTS} times: {errors:?}"
            );
            tokio::time::sleep(POLL).await;
        }
        counters.done.fetch_add(1, Ordering::SeqCst);
    }
}

/// File descriptors and RSS (KiB) of each long-lived member.
fn readings(crowd: &LifeCrowd) -> Vec<(usize, u64)> {
    (0..N)
        .map(|i| {
            let pid = crowd.members[i].pid().expect("running");
            (fd_count(pid), rss_kib(pid))
        })
        .collect()
}

/// Waits until `target` requests are done; fails at once if a client gave up.
async fn wait_done(counters: &Counters, target: usize, deadline: Instant) {
    let timeout = deadline.saturating_duration_since(Instant::now());
    eventually(&format!("{target} requests done"), timeout, || {
        let done = counters.done.load(Ordering::SeqCst);
        if counters.gave_up.load(Ordering::SeqCst) {
            panic!("a client gave up (its panic message is above)");
        }
        async move {
            if done >= target {
                Ok(())
            } else {
                Err(format!("{done} done"))
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_fds_and_rss_stay_flat() {
    let test_started = Instant::now();
    let full = full_mode();
    let total = if full { 20_000 } else { 2_000 };
    let changes = if full { 12 } else { 4 };
    let deadline = test_started + Duration::from_secs(if full { 1800 } else { 240 });
    let mut crowd = LifeCrowd::start(KIT, N, Settings::new(81, "5s", &[])).await;
    let origin = Origin::start().await;
    let extras = crowd.create_members(changes / 2);
    let base: Vec<usize> = (0..N).collect();
    eprintln!(
        "soak: {total} requests, {changes} membership changes, {WORKERS} clients; crowd \
         ready after {:?}",
        test_started.elapsed()
    );

    let phase = total / (changes + 1);
    let counters = Arc::new(Counters::default());
    counters.allowed.store(phase, Ordering::SeqCst);
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let proxy = crowd.members[w % N].proxy;
        workers.push(tokio::spawn(worker(
            w,
            proxy,
            origin.url(""),
            total,
            counters.clone(),
            deadline,
        )));
    }
    wait_done(&counters, phase, deadline).await;

    let epoch_start = crowd.blender_status().await.expect("blender")["epoch"]
        .as_u64()
        .expect("epoch");
    let mut before = None;
    let mut epoch_measured = epoch_start;
    for c in 0..changes {
        if c == WARMUP_CHANGES {
            // Warm-up over (requests, a join and a leave): read the resources with
            // nothing in flight.
            crowd.wait_quiet(&base).await;
            before = Some(readings(&crowd));
            epoch_measured = crowd.blender_status().await.expect("blender")["epoch"]
                .as_u64()
                .expect("epoch");
        }
        // The next phase's requests run while the membership changes.
        let target = if c + 1 == changes {
            total
        } else {
            phase * (c + 2)
        };
        counters.allowed.store(target, Ordering::SeqCst);
        let epoch = crowd.blender_status().await.expect("blender")["epoch"]
            .as_u64()
            .expect("epoch");
        let extra = extras.start + c / 2;
        let join = c % 2 < 1;
        if join {
            crowd.spawn(extra);
            let mut view = base.clone();
            view.push(extra);
            crowd.wait_view(&view, N + 1, FORM_TIMEOUT).await;
        } else {
            crowd.members[extra].proc().terminate();
            let status = crowd.members[extra]
                .proc()
                .wait_exit(Duration::from_secs(30))
                .await;
            assert!(status.success(), "extra member {extra} exited {status}");
            crowd.members[extra].proc = None;
            crowd.wait_view(&base, N, FORM_TIMEOUT).await;
        }
        let now = crowd.blender_status().await.expect("blender")["epoch"]
            .as_u64()
            .expect("epoch");
        assert!(now > epoch, "change {c} cut no epoch ({epoch} -> {now})");
        eprintln!(
            "  change {c} ({}): epoch {now}, {} requests done",
            if join { "join" } else { "leave" },
            counters.done.load(Ordering::SeqCst)
        );
        wait_done(&counters, target, deadline).await;
    }
    for w in workers {
        w.await.expect("worker");
    }
    crowd.wait_quiet(&base).await;
    let after = readings(&crowd);
    let before = before.expect("readings after the warm-up");
    let epoch_end = crowd.blender_status().await.expect("blender")["epoch"]
        .as_u64()
        .expect("epoch");
    crowd.assert_running(&base);

    let failed = counters.failed_attempts.load(Ordering::SeqCst);
    eprintln!(
        "SOAK: {total} requests byte-exact ({failed} failed attempts retried), epochs \
         {epoch_start}..{epoch_end} ({} after the warm-up), {:?}",
        epoch_end - epoch_measured,
        test_started.elapsed()
    );
    let first_errors = counters
        .errors
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if !first_errors.is_empty() {
        eprintln!("  failed attempts (first ones): {first_errors:#?}");
    }
    let mut problems = Vec::new();
    for i in 0..N {
        let ((fd0, rss0), (fd1, rss1)) = (before[i], after[i]);
        eprintln!(
            "  jondo m{i}: fds {fd0} -> {fd1}, RSS {:.1} MiB -> {:.1} MiB",
            rss0 as f64 / 1024.0,
            rss1 as f64 / 1024.0
        );
        // Slack: a link each way to every other member (the warm-up may not have
        // used them all) plus a few sockets closing; memory: allocator noise.
        let fd_limit = fd0 + 2 * N + 6;
        let rss_limit = rss0 + (rss0 / 4).max(16 * 1024);
        if fd1 > fd_limit {
            problems.push(format!("m{i}: fds grew {fd0} -> {fd1} (limit {fd_limit})"));
        }
        if rss1 > rss_limit {
            problems.push(format!(
                "m{i}: RSS grew {rss0} -> {rss1} KiB (limit {rss_limit})"
            ));
        }
    }
    assert!(
        epoch_end - epoch_measured >= (changes - WARMUP_CHANGES) as u64,
        "too few epochs after the warm-up: {epoch_measured}..{epoch_end}"
    );
    assert!(problems.is_empty(), "resources grew: {problems:#?}");
}
