//! A count of events in a sliding time window (for example "re-formations of my own
//! path in the last 24 hours").
//!
//! Owns only the arithmetic: times come in as unix milliseconds, nothing here reads a
//! clock. Memory is bounded: at most [`RecentEvents::MAX_KEPT`] times are kept, and a
//! window holding more than that reports the bound (it never under-reports by more).

use std::collections::VecDeque;

/// Event times within a window, oldest first.
#[derive(Debug, Clone)]
pub struct RecentEvents {
    window_ms: u64,
    times: VecDeque<u64>,
    /// Events dropped because the window held [`RecentEvents::MAX_KEPT`] already.
    overflowed: u64,
}

impl RecentEvents {
    /// Most event times kept.
    pub const MAX_KEPT: usize = 4096;
    /// One day, the window the status page reports.
    pub const DAY_MS: u64 = 24 * 60 * 60 * 1000;

    /// An empty record over a window of `window_ms`.
    pub fn new(window_ms: u64) -> Self {
        Self {
            window_ms,
            times: VecDeque::new(),
            overflowed: 0,
        }
    }

    fn expire(&mut self, now: u64) {
        let start = now.saturating_sub(self.window_ms);
        while self.times.front().is_some_and(|t| *t < start) {
            self.times.pop_front();
        }
        if self.times.is_empty() {
            self.overflowed = 0;
        }
    }

    /// Records one event at `now`.
    pub fn record(&mut self, now: u64) {
        self.expire(now);
        if self.times.len() >= Self::MAX_KEPT {
            self.times.pop_front();
            self.overflowed = self.overflowed.saturating_add(1);
        }
        self.times.push_back(now);
    }

    /// Events in the window ending at `now`.
    pub fn count(&mut self, now: u64) -> u64 {
        self.expire(now);
        self.times.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_the_window() {
        let mut r = RecentEvents::new(1_000);
        assert_eq!(r.count(0), 0);
        r.record(100);
        r.record(500);
        assert_eq!(r.count(600), 2);
        assert_eq!(r.count(1_101), 1, "the event at 100 left the window");
        assert_eq!(r.count(1_501), 0);
    }

    #[test]
    fn memory_is_bounded() {
        let mut r = RecentEvents::new(u64::MAX);
        for t in 0..(RecentEvents::MAX_KEPT as u64 + 10) {
            r.record(t);
        }
        assert_eq!(r.count(10_000), RecentEvents::MAX_KEPT as u64);
    }
}
