//! A fixed pool of threads for password checks, with a short queue in front of it.
//!
//! Owns where argon2 runs, and how many checks run or wait at once. One argon2id check
//! holds about 19 MiB (the default memory cost) for tens of milliseconds; run on tokio's
//! blocking pool, a flood of wrong passwords ran one check per request, all at once (300
//! parallel joins took a blender to about 6 GB). Here at most `workers` checks run at
//! once, at most `queue` more wait, and [`PasswordChecks::try_admit`] refuses anything
//! beyond that at once, before any work is done: the blender answers 503 with
//! `Retry-After`. The threads live as long as the pool, so the allocator keeps at most
//! one check's memory per worker instead of one per short-lived blocking thread.
//!
//! A check admitted keeps its place until it has run, even if the client that asked
//! for it has gone: a client cannot free a place by hanging up and asking again.
//! The pool does not judge what it runs; the caller decides what a check is.
//!
//! Each thread keeps its argon2 working memory for its next check (`with_blocks`):
//! allocated once, wiped after every use. Freed and allocated again per check, that
//! memory ended up cached by the allocator in one arena per thread that ever touched it
//! (glibc keeps up to eight arenas per core), so the resident size depended on luck
//! rather than on the number of workers.

use argon2::Block;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};

thread_local! {
    /// This thread's argon2 working memory (see the module documentation).
    static BLOCKS: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with `count` argon2 blocks (1 KiB each) of this thread's working memory,
/// grown to `count` if it is smaller, and wiped afterwards.
pub(crate) fn with_blocks<T>(count: usize, f: impl FnOnce(&mut [Block]) -> T) -> T {
    BLOCKS.with(|blocks| {
        let mut blocks = blocks.borrow_mut();
        if blocks.len() < count {
            *blocks = vec![Block::new(); count];
        }
        let out = f(&mut blocks[..count]);
        blocks[..count].fill(Block::new());
        out
    })
}

type Job = Box<dyn FnOnce() + Send>;

/// The pool (see the module documentation).
pub struct PasswordChecks {
    /// Never full: at most `capacity` checks are admitted, and it holds that many.
    jobs: mpsc::SyncSender<Job>,
    /// Checks admitted and not yet finished (running or waiting).
    admitted: Arc<AtomicUsize>,
    capacity: usize,
    workers: usize,
    ran: Arc<AtomicU64>,
    refused: AtomicU64,
}

/// A place in the pool, taken by [`PasswordChecks::try_admit`] and handed to
/// [`PasswordChecks::run`]; given back when the check has run (or when dropped unused).
pub struct Ticket {
    admitted: Arc<AtomicUsize>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.admitted.fetch_sub(1, Ordering::AcqRel);
    }
}

impl PasswordChecks {
    /// Starts `workers` threads (at least one) with room for `queue` more checks waiting.
    pub fn new(workers: usize, queue: usize) -> std::io::Result<Self> {
        let workers = workers.max(1);
        let (jobs, receiver) = mpsc::sync_channel::<Job>(workers + queue);
        let receiver = Arc::new(Mutex::new(receiver));
        for i in 0..workers {
            let receiver = receiver.clone();
            std::thread::Builder::new()
                .name(format!("password-check-{i}"))
                .spawn(move || loop {
                    // The lock is held only while waiting for the next job, not while
                    // it runs.
                    let job = match receiver.lock().unwrap_or_else(|p| p.into_inner()).recv() {
                        Ok(job) => job,
                        Err(_) => return,
                    };
                    // A panicking check must not take a worker with it.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                })?;
        }
        Ok(Self {
            jobs,
            admitted: Arc::default(),
            capacity: workers + queue,
            workers,
            ran: Arc::default(),
            refused: AtomicU64::new(0),
        })
    }

    /// A place for one more check, or `None` if `workers + queue` are running or waiting.
    pub fn try_admit(&self) -> Option<Ticket> {
        let admitted = self
            .admitted
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.capacity).then_some(n + 1)
            });
        match admitted {
            Ok(_) => Some(Ticket {
                admitted: self.admitted.clone(),
            }),
            Err(_) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Runs `check` on a worker thread once one is free; `None` if the pool has stopped.
    /// The place `ticket` holds is given back as soon as `check` returns, whether or not
    /// the caller still waits for the answer.
    pub async fn run<T: Send + 'static>(
        &self,
        ticket: Ticket,
        check: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let ran = self.ran.clone();
        let job: Job = Box::new(move || {
            let out = check();
            ran.fetch_add(1, Ordering::Relaxed);
            drop(ticket);
            let _ = answer.send(out);
        });
        self.jobs.try_send(job).ok()?;
        answered.await.ok()
    }

    /// Checks running or waiting now.
    pub fn in_flight(&self) -> usize {
        self.admitted.load(Ordering::Acquire)
    }

    /// Checks that have run so far.
    pub fn ran(&self) -> u64 {
        self.ran.load(Ordering::Relaxed)
    }

    /// Checks refused so far because the pool and its queue were full.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Worker threads (checks that may run at once).
    pub fn workers(&self) -> usize {
        self.workers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// One worker and a queue of two: three checks are admitted, the fourth is refused
    /// at once; never more than one runs at a time; a check whose caller has gone still
    /// runs and then gives its place back.
    #[tokio::test]
    async fn checks_are_bounded_and_places_come_back() {
        let pool = Arc::new(PasswordChecks::new(1, 2).expect("pool"));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let (open, gate) = std::sync::mpsc::sync_channel::<()>(3);
        let gate = Arc::new(Mutex::new(gate));
        let tickets: Vec<Ticket> = (0..3).map(|_| pool.try_admit().expect("room")).collect();
        assert!(pool.try_admit().is_none(), "a fourth must be refused");
        assert_eq!((pool.in_flight(), pool.refused()), (3, 1));
        let check = |running: Arc<AtomicUsize>| {
            let (most, gate) = (most.clone(), gate.clone());
            move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                let _ = gate
                    .lock()
                    .expect("gate")
                    .recv_timeout(Duration::from_secs(10));
                running.fetch_sub(1, Ordering::SeqCst);
                7
            }
        };
        let mut tickets = tickets.into_iter();
        // The first caller goes away once its check runs; the check still finishes
        // and frees its place.
        let first = {
            let (pool, ticket) = (pool.clone(), tickets.next().expect("ticket"));
            let job = check(running.clone());
            tokio::spawn(async move { pool.run(ticket, job).await })
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while running.load(Ordering::SeqCst) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the first check never ran"
            );
            tokio::task::yield_now().await;
        }
        first.abort();
        assert!(first.await.expect_err("aborted").is_cancelled());
        let mut waiting = Vec::new();
        for ticket in tickets {
            let (pool, job) = (pool.clone(), check(running.clone()));
            waiting.push(tokio::spawn(async move { pool.run(ticket, job).await }));
        }
        for _ in 0..3 {
            open.send(()).expect("open");
        }
        for w in waiting {
            assert_eq!(w.await.expect("task"), Some(7));
        }
        // One worker runs in order: the abandoned check ran first and gave its place back.
        assert_eq!((pool.in_flight(), pool.ran()), (0, 3));
        assert_eq!(
            most.load(Ordering::SeqCst),
            1,
            "more checks ran at once than workers"
        );
        assert!(pool.try_admit().is_some(), "room again");
    }

    /// Checks in reused memory agree with argon2's own verifier, for the default
    /// parameters and for others (the parameters come from each stored hash), and
    /// the memory is wiped after each use.
    #[test]
    fn checks_in_reused_memory_match_argon2() {
        use argon2::password_hash::{PasswordHash, PasswordVerifier};
        let cheap = argon2::Params::new(64, 1, 1, None).expect("params");
        for params in [argon2::Params::default(), cheap] {
            let hash = super::super::accounts::hash_password("right", params).expect("hash");
            let record = super::super::LoginRecord {
                id: 1,
                crowd: "default".into(),
                hash: hash.clone(),
            };
            let parsed = PasswordHash::new(&hash).expect("parse");
            for (guess, right) in [("right", true), ("wrong", false), ("righ", false)] {
                assert_eq!(record.verify(guess).expect("verify"), right, "{guess}");
                assert_eq!(
                    argon2::Argon2::default()
                        .verify_password(guess.as_bytes(), &parsed)
                        .is_ok(),
                    right
                );
            }
        }
        BLOCKS.with(|b| {
            let b = b.borrow();
            assert!(b.len() >= argon2::Params::default().block_count());
            assert!(b.iter().all(|block| block.as_ref().iter().all(|w| *w == 0)));
        });
        let corrupt = super::super::LoginRecord {
            id: 1,
            crowd: "default".into(),
            hash: "$argon2id$v=19$m=64,t=1,p=1$bm90IGEgaGFzaA".into(),
        };
        assert!(
            corrupt.verify("x").is_err(),
            "a hash without output is corrupt"
        );
        super::super::waste_password_check("anything");
    }

    /// A check that panics does not take its worker (or its place) with it.
    #[tokio::test]
    async fn a_panicking_check_keeps_the_pool_alive() {
        let pool = PasswordChecks::new(1, 0).expect("pool");
        let ticket = pool.try_admit().expect("room");
        assert_eq!(pool.run(ticket, || -> u8 { panic!("boom") }).await, None);
        let ticket = pool.try_admit().expect("the place came back");
        assert_eq!(pool.run(ticket, || 5u8).await, Some(5));
    }
}
