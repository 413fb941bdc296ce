//! Throttles for the blender: password guessing and registration floods.
//!
//! Owns two rules, both driven by a passed-in clock (unix milliseconds):
//! - [`LoginThrottle`]: after [`FREE_FAILURES`] wrong passwords for one key (an account
//!   name, or a source address), each further attempt must wait, twice as long as the
//!   last time, up to [`MAX_LOCKOUT_MS`]; a success clears the key.
//! - [`RateLimit`]: a token bucket per key (e.g. joins per source address).
//!
//! Both are bounded in memory: at most [`MAX_TRACKED`] keys, the stalest evicted first.

use std::collections::HashMap;
use std::hash::Hash;

/// Wrong passwords allowed before delays start (the last of them starts the first delay).
pub const FREE_FAILURES: u32 = 5;
/// The first delay after the free failures.
pub const FIRST_LOCKOUT_MS: u64 = 1_000;
/// The longest delay.
pub const MAX_LOCKOUT_MS: u64 = 15 * 60 * 1000;
/// Most keys a throttle remembers.
pub const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    locked_until: u64,
    last: u64,
}

/// Slows password guessing per key.
#[derive(Debug)]
pub struct LoginThrottle<K> {
    entries: HashMap<K, Failures>,
}

impl<K: Hash + Eq + Clone> Default for LoginThrottle<K> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq + Clone> LoginThrottle<K> {
    /// An empty throttle.
    pub fn new() -> Self {
        Self::default()
    }

    /// `Err(ms)` if `key` must wait `ms` more milliseconds before trying again.
    pub fn check(&self, key: &K, now: u64) -> Result<(), u64> {
        match self.entries.get(key) {
            Some(f) if f.locked_until > now => Err(f.locked_until - now),
            _ => Ok(()),
        }
    }

    /// Records a wrong password; returns the delay imposed from now on (0 if none).
    pub fn record_failure(&mut self, key: K, now: u64) -> u64 {
        if self.entries.len() >= MAX_TRACKED && !self.entries.contains_key(&key) {
            evict_stalest(&mut self.entries, |f| f.last);
        }
        let f = self.entries.entry(key).or_insert(Failures {
            count: 0,
            locked_until: 0,
            last: now,
        });
        f.count = f.count.saturating_add(1);
        f.last = now;
        let delay = if f.count < FREE_FAILURES {
            0
        } else {
            let doublings = (f.count - FREE_FAILURES).min(20);
            (FIRST_LOCKOUT_MS << doublings).min(MAX_LOCKOUT_MS)
        };
        f.locked_until = now + delay;
        delay
    }

    /// Records a correct password: the key starts afresh.
    pub fn record_success(&mut self, key: &K) {
        self.entries.remove(key);
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: u64,
}

/// A token bucket per key: `burst` events at once, refilled at `per_minute`.
#[derive(Debug)]
pub struct RateLimit<K> {
    burst: f64,
    per_ms: f64,
    buckets: HashMap<K, Bucket>,
}

impl<K: Hash + Eq + Clone> RateLimit<K> {
    /// A limit of `per_minute` events per key, with bursts of `burst`.
    pub fn new(per_minute: u32, burst: u32) -> Self {
        Self {
            burst: f64::from(burst.max(1)),
            per_ms: f64::from(per_minute) / 60_000.0,
            buckets: HashMap::new(),
        }
    }

    /// Takes one token for `key`; `Err(ms)` until one is available.
    pub fn take(&mut self, key: K, now: u64) -> Result<(), u64> {
        if self.buckets.len() >= MAX_TRACKED && !self.buckets.contains_key(&key) {
            evict_stalest(&mut self.buckets, |b| b.last);
        }
        let burst = self.burst;
        let b = self.buckets.entry(key).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.saturating_sub(b.last) as f64;
        b.tokens = (b.tokens + elapsed * self.per_ms).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else if self.per_ms > 0.0 {
            Err(((1.0 - b.tokens) / self.per_ms).ceil() as u64)
        } else {
            Err(u64::MAX)
        }
    }
}

fn evict_stalest<K: Hash + Eq + Clone, V>(map: &mut HashMap<K, V>, last: impl Fn(&V) -> u64) {
    if let Some(k) = map
        .iter()
        .min_by_key(|(_, v)| last(v))
        .map(|(k, _)| k.clone())
    {
        map.remove(&k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guessing_is_slowed_exponentially_and_success_clears() {
        let mut t = LoginThrottle::new();
        for i in 0..FREE_FAILURES - 1 {
            assert_eq!(t.check(&"alice", i as u64), Ok(()));
            assert_eq!(t.record_failure("alice", i as u64), 0);
        }
        assert_eq!(t.record_failure("alice", 10), 1_000);
        assert_eq!(t.check(&"alice", 500), Err(510));
        assert_eq!(t.check(&"bob", 500), Ok(()), "other keys unaffected");
        assert_eq!(t.record_failure("alice", 2_000), 2_000);
        assert_eq!(t.record_failure("alice", 5_000), 4_000);
        for n in 0..40 {
            t.record_failure("alice", 10_000 + n);
        }
        assert!(t.check(&"alice", 10_100).is_err());
        assert!(t.record_failure("alice", 20_000) <= MAX_LOCKOUT_MS);
        t.record_success(&"alice");
        assert_eq!(t.check(&"alice", 20_001), Ok(()));
    }

    #[test]
    fn token_bucket() {
        let mut r = RateLimit::new(60, 3); // one a second, bursts of 3
        for _ in 0..3 {
            assert_eq!(r.take("ip", 0), Ok(()));
        }
        assert_eq!(r.take("ip", 0), Err(1_000));
        assert_eq!(r.take("other", 0), Ok(()));
        assert_eq!(r.take("ip", 1_000), Ok(()));
        assert!(r.take("ip", 1_001).is_err());
    }

    #[test]
    fn memory_is_bounded() {
        let mut t = LoginThrottle::new();
        for i in 0..(MAX_TRACKED as u64 + 10) {
            t.record_failure(i, i);
        }
        assert!(t.entries.len() <= MAX_TRACKED);
    }
}
