//! Throttles for the blender: password guessing and registration floods.
//!
//! Owns two rules, both driven by a passed-in clock (unix milliseconds):
//! - [`LoginThrottle`]: after [`FREE_FAILURES`] wrong passwords for one key (an account
//!   name, or a source address), each further attempt must wait, twice as long as the
//!   last time, up to [`MAX_LOCKOUT_MS`]; a success clears the key. An attempt is
//!   counted when it *begins* ([`LoginThrottle::begin`]), before its slow password
//!   check runs, so parallel guesses cannot all pass a check made before any of them
//!   failed.
//! - [`RateLimit`]: a token bucket per key (e.g. joins per source address).
//!
//! Both are bounded in memory by a [`BoundedMap`]: at most a set number of keys (by
//! default [`DEFAULT_MAX_TRACKED`]), the one touched least recently forgotten first.
//! Callers validate keys before they get here (the blender accepts only well-formed
//! account names, at most 64 bytes), so an entry's size is bounded too.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// Wrong passwords allowed before delays start (the last of them starts the first delay).
pub const FREE_FAILURES: u32 = 5;
/// The first delay after the free failures.
pub const FIRST_LOCKOUT_MS: u64 = 1_000;
/// The longest delay.
pub const MAX_LOCKOUT_MS: u64 = 15 * 60 * 1000;
/// Most keys a throttle remembers unless told otherwise. An entry takes at most about
/// 300 bytes (a 64-byte account name twice, the map's overhead), so about 3 MiB in all.
///
/// Why this is enough: forgetting a locked-out key gives its guesser
/// [`FREE_FAILURES`] fresh attempts, and to make the throttle forget one key a guesser
/// must make this many *other* keys fail. Each failure is a real password check (the
/// blender counts an attempt only once a check is admitted), and the blender runs a
/// bounded number of those at once, so that costs minutes of the blender's whole
/// hashing capacity per forgotten key.
pub const DEFAULT_MAX_TRACKED: usize = 10_000;
/// The former name of [`DEFAULT_MAX_TRACKED`].
pub const MAX_TRACKED: usize = DEFAULT_MAX_TRACKED;

/// A map holding at most a set number of keys: adding one more forgets the key touched
/// least recently. Lookups, updates and eviction are O(log n).
#[derive(Debug)]
pub struct BoundedMap<K, V> {
    limit: usize,
    /// Each key's value and the stamp of its last touch.
    entries: HashMap<K, (V, u64)>,
    /// Keys by the stamp of their last touch, oldest first.
    order: BTreeMap<u64, K>,
    next_stamp: u64,
    evicted: u64,
}

impl<K: Hash + Eq + Clone, V> BoundedMap<K, V> {
    /// An empty map of at most `limit` keys (at least one).
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            entries: HashMap::new(),
            order: BTreeMap::new(),
            next_stamp: 0,
            evicted: 0,
        }
    }

    /// The value of `key`, without touching it.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.entries.get(key).map(|(v, _)| v)
    }

    /// The value of `key` (inserted with `make` if absent, forgetting the stalest key if
    /// the map is full), marked as touched now.
    pub fn touch_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        if let Some((_, old)) = self.entries.get(&key) {
            self.order.remove(old);
        } else {
            while self.entries.len() >= self.limit {
                let Some((_, stalest)) = self.order.pop_first() else {
                    break;
                };
                self.entries.remove(&stalest);
                self.evicted += 1;
            }
        }
        self.order.insert(stamp, key.clone());
        let entry = self.entries.entry(key).or_insert_with(|| (make(), stamp));
        entry.1 = stamp;
        &mut entry.0
    }

    /// Forgets `key`; returns its value.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let (value, stamp) = self.entries.remove(key)?;
        self.order.remove(&stamp);
        Some(value)
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The most keys held.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Keys forgotten to make room so far.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    locked_until: u64,
}

/// Slows password guessing per key.
#[derive(Debug)]
pub struct LoginThrottle<K> {
    entries: BoundedMap<K, Failures>,
}

impl<K: Hash + Eq + Clone> Default for LoginThrottle<K> {
    fn default() -> Self {
        Self::with_limit(DEFAULT_MAX_TRACKED)
    }
}

impl<K: Hash + Eq + Clone> LoginThrottle<K> {
    /// An empty throttle remembering [`DEFAULT_MAX_TRACKED`] keys.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty throttle remembering at most `limit` keys (the stalest forgotten first).
    pub fn with_limit(limit: usize) -> Self {
        Self {
            entries: BoundedMap::new(limit),
        }
    }

    /// `Err(ms)` if `key` must wait `ms` more milliseconds before trying again.
    pub fn check(&self, key: &K, now: u64) -> Result<(), u64> {
        match self.entries.get(key) {
            Some(f) if f.locked_until > now => Err(f.locked_until - now),
            _ => Ok(()),
        }
    }

    /// Begins a login attempt for all of `keys` (say the account and the source
    /// address) before its password is checked. If any of them must wait, nothing is
    /// counted and `Err(ms)` gives the longest wait. Otherwise the attempt counts as a
    /// failure of every key at once, exactly as [`LoginThrottle::record_failure`], so
    /// that parallel attempts see each other: at most [`FREE_FAILURES`] run before the
    /// first delay, however many arrive together. A correct password then clears the
    /// keys with [`LoginThrottle::record_success`].
    pub fn begin(&mut self, keys: &[K], now: u64) -> Result<(), u64> {
        if let Some(wait) = keys.iter().filter_map(|k| self.check(k, now).err()).max() {
            return Err(wait);
        }
        for key in keys {
            self.record_failure(key.clone(), now);
        }
        Ok(())
    }

    /// Records a wrong password; returns the delay imposed from now on (0 if none).
    pub fn record_failure(&mut self, key: K, now: u64) -> u64 {
        let f = self.entries.touch_or_insert_with(key, || Failures {
            count: 0,
            locked_until: 0,
        });
        f.count = f.count.saturating_add(1);
        let delay = if f.count < FREE_FAILURES {
            0
        } else {
            let doublings = (f.count - FREE_FAILURES).min(20);
            (FIRST_LOCKOUT_MS << doublings).min(MAX_LOCKOUT_MS)
        };
        // Only a delay moves the lock (and never earlier): a free failure recorded with
        // a slightly later clock reading than a concurrent attempt's must not look like
        // a lockout to that attempt.
        if delay > 0 {
            f.locked_until = f.locked_until.max(now.saturating_add(delay));
        }
        delay
    }

    /// Records a correct password: the key starts afresh.
    pub fn record_success(&mut self, key: &K) {
        self.entries.remove(key);
    }

    /// Keys remembered now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keys forgotten to make room so far.
    pub fn evicted(&self) -> u64 {
        self.entries.evicted()
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
    buckets: BoundedMap<K, Bucket>,
}

impl<K: Hash + Eq + Clone> RateLimit<K> {
    /// A limit of `per_minute` events per key, with bursts of `burst`, remembering
    /// [`DEFAULT_MAX_TRACKED`] keys.
    pub fn new(per_minute: u32, burst: u32) -> Self {
        Self::with_limit(per_minute, burst, DEFAULT_MAX_TRACKED)
    }

    /// Like [`RateLimit::new`], remembering at most `limit` keys (a forgotten key starts
    /// again with a full bucket).
    pub fn with_limit(per_minute: u32, burst: u32, limit: usize) -> Self {
        Self {
            burst: f64::from(burst.max(1)),
            per_ms: f64::from(per_minute) / 60_000.0,
            buckets: BoundedMap::new(limit),
        }
    }

    /// Takes one token for `key`; `Err(ms)` until one is available.
    pub fn take(&mut self, key: K, now: u64) -> Result<(), u64> {
        let burst = self.burst;
        let b = self.buckets.touch_or_insert_with(key, || Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.saturating_sub(b.last) as f64;
        b.tokens = (b.tokens + elapsed * self.per_ms).min(burst);
        b.last = b.last.max(now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else if self.per_ms > 0.0 {
            Err(((1.0 - b.tokens) / self.per_ms).ceil() as u64)
        } else {
            Err(u64::MAX)
        }
    }

    /// Keys remembered now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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

    /// Twenty attempts arriving together (none has finished its check yet): only the
    /// free ones begin, and one locked key stops the attempt for every key.
    #[test]
    fn attempts_are_counted_before_they_are_checked() {
        let mut t = LoginThrottle::new();
        let begun = (0..20)
            .filter(|i| t.begin(&[("acct", 0), ("src", *i)], 100).is_ok())
            .count();
        assert_eq!(begun, FREE_FAILURES as usize);
        // The refused attempts counted nothing against their source addresses.
        assert_eq!(t.check(&("src", 19), 100), Ok(()));
        assert_eq!(t.len(), 1 + FREE_FAILURES as usize);
        // A success clears the keys; the delay already imposed on others stays.
        t.record_success(&("acct", 0));
        assert!(t.begin(&[("acct", 0), ("src", 0)], 101).is_ok());
        // A locked source stops an attempt on a fresh account, counting nothing.
        let mut t = LoginThrottle::new();
        for a in 0..FREE_FAILURES {
            t.begin(&[("acct", a), ("src", 9)], 0).expect("free");
        }
        assert_eq!(t.begin(&[("fresh", 0), ("src", 9)], 1), Err(999));
        assert_eq!(t.check(&("fresh", 0), 1), Ok(()));
        assert_eq!(t.len(), 1 + FREE_FAILURES as usize);
    }

    /// Concurrent attempts read the clock at slightly different moments: a free failure
    /// recorded "later" does not lock out one that read the clock earlier.
    #[test]
    fn free_failures_lock_nothing_whatever_the_clock_order() {
        let mut t = LoginThrottle::new();
        assert_eq!(t.begin(&["src"], 1_000), Ok(()));
        assert_eq!(t.begin(&["src"], 999), Ok(()));
        assert_eq!(t.check(&"src", 998), Ok(()));
        // A real delay is not shortened by an earlier reading either.
        for _ in 0..3 {
            t.begin(&["src"], 1_000).expect("free");
        }
        assert_eq!(t.record_failure("src", 500), 2_000);
        assert_eq!(t.check(&"src", 2_000), Err(500));
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
    fn memory_is_bounded_and_the_stalest_key_goes_first() {
        let mut t = LoginThrottle::with_limit(100);
        for i in 0..1_000u64 {
            t.record_failure(i, i);
        }
        assert_eq!(t.len(), 100);
        assert_eq!(t.evicted(), 900);
        // Key 950 (recent) is remembered; key 10 (stale) is not.
        assert!(t.entries.get(&950).is_some());
        assert!(t.entries.get(&10).is_none());
        // Touching a key makes it the freshest.
        t.record_failure(900, 2_000);
        for i in 2_000..2_099u64 {
            t.record_failure(i, i);
        }
        assert!(t.entries.get(&900).is_some(), "touched recently");
        assert!(t.entries.get(&901).is_none(), "not touched since");
        let mut r = RateLimit::with_limit(60, 3, 10);
        for i in 0..100u64 {
            let _ = r.take(i, 0);
        }
        assert_eq!(r.len(), 10);
    }

    proptest! {
        /// Whatever the order of attempts, successes and clock readings: an account
        /// never begins more than FREE_FAILURES attempts before its first delay ends
        /// (unless the table had to forget it), the table never exceeds its limit, and
        /// nothing panics.
        #[test]
        fn begins_are_bounded(
            ops in proptest::collection::vec((0u8..6, 0u8..4, 0u64..3_000, any::<bool>()), 0..400),
            limit in prop_oneof![Just(64usize), 1usize..8],
        ) {
            let mut t = LoginThrottle::with_limit(limit);
            let mut now = 0u64;
            let mut begun_before_first_delay = std::collections::HashMap::<u8, u32>::new();
            for (account, source, step, succeed) in ops {
                now = now.saturating_add(step % 10);
                let keys = [(0u8, account), (1u8, source)];
                if t.begin(&keys, now).is_ok() {
                    if now < FIRST_LOCKOUT_MS {
                        *begun_before_first_delay.entry(account).or_default() += 1;
                    }
                    if succeed {
                        for k in &keys {
                            t.record_success(k);
                        }
                        begun_before_first_delay.remove(&account);
                    }
                }
                prop_assert!(t.len() <= limit);
            }
            // (A forgotten key may begin afresh: that is the bound's documented cost.)
            if t.evicted() == 0 {
                for n in begun_before_first_delay.values() {
                    prop_assert!(*n <= FREE_FAILURES);
                }
            }
        }

        /// A bounded map holds at most its limit, and holds the most recently touched
        /// keys.
        #[test]
        fn bounded_map_keeps_the_freshest(keys in proptest::collection::vec(0u16..64, 1..300), limit in 1usize..16) {
            let mut m = BoundedMap::new(limit);
            for k in &keys {
                *m.touch_or_insert_with(*k, || 0u32) += 1;
                prop_assert!(m.len() <= limit);
            }
            let last = *keys.last().expect("non-empty");
            prop_assert!(m.get(&last).is_some());
            let mut freshest = Vec::new();
            for k in keys.iter().rev() {
                if !freshest.contains(k) {
                    freshest.push(*k);
                }
                if freshest.len() == limit {
                    break;
                }
            }
            for k in freshest {
                prop_assert!(m.get(&k).is_some(), "key {} was forgotten", k);
            }
        }
    }
}
