//! Lower bounds of one page load in the WAN section: round trips the browser model
//! ([`super::browser`]) cannot avoid on each way, plus `origin`, the same load measured
//! over loopback with no delay (everything that is not a round trip).
//!
//! d is the one-way delay of every delayed link, so a round trip over one link is 2d.
//! A path of k jondos (the initiator counts) has k − 1 jondo links and one link from the
//! exit to the origin; the client's link to its own first proxy is local. N objects,
//! C connections for HTTP/1.1. A TCP connect costs one round trip of its link (the
//! delay relay counts it, see [`super::delay`]).
//!
//! - plain HTTP, direct: connect + page (2 round trips); then C − 1 new connections take
//!   one round trip to open while the page's connection already fetches, so N objects
//!   need M rounds with M + (C − 1)(M − 1) ≥ N, M = ⌈(N + C − 1) / C⌉. (2 + M) × 2d.
//! - plain HTTP, tinyproxy: it opens a new origin connection for every request and
//!   closes the client's after each answer: every request is connect + request at the
//!   origin (2 round trips), the page first, then ⌈N / C⌉ rounds: (2 + 2⌈N/C⌉) × 2d.
//! - plain HTTP, crowd path of k: the request travels the path and the bundle comes
//!   back (2d(k − 1)); the exit connects and fetches the page (2 × 2d), then fetches
//!   every object at once on new connections (2 × 2d). The initiator answers the
//!   browser's object requests itself. 2d(k − 1) + 8d. (The exit fetches
//!   `prefetch::OBJECT_FETCHES` objects at a time today; the bound is the ideal.)
//! - HTTPS, direct and tinyproxy: connect (the proxy's connect to the origin, when the
//!   client's is local), TLS 1.3, page, all objects at once: 4 × 2d.
//! - HTTPS, crowd path of k, with optimistic tunnel data: E = 2dk is a round trip over
//!   the whole way. The `CONNECT` and the ClientHello travel together, the exit
//!   connects (2d) and the handshake completes (E), then the page (E) and the objects
//!   (E): 3E + 2d. Without optimistic data the `CONNECT` is answered first: 4E
//!   ("today's protocol"). The delay relay cannot make the exits' connects take a round
//!   trip (the kernel completes the handshake at once), so the jondos' exits sleep 2d
//!   after connecting (crowds-jondo's `bench` feature, `crowd::set_exit_connect_delay`);
//!   the relay's hold of the first bytes until accept + 2d has passed by then, so the
//!   first bytes still reach the origin at 3d, as after a real handshake.

use std::time::Duration;

/// The numbers a bound depends on.
#[derive(Debug, Clone, Copy)]
pub struct Model {
    /// One-way delay of each delayed link.
    pub d: Duration,
    /// Embedded objects.
    pub objects: usize,
    /// HTTP/1.1 connections of the browser.
    pub connections: usize,
    /// The page load over loopback with no delay.
    pub origin: Duration,
}

impl Model {
    fn rtts(&self, n: f64) -> Duration {
        self.d.mul_f64(2.0 * n) + self.origin
    }

    /// Object rounds after the page when the page's own connection starts at once and
    /// C − 1 new ones first connect.
    pub fn direct_object_rounds(&self) -> usize {
        let c = self.connections.max(1);
        (self.objects + c - 1).div_ceil(c)
    }

    /// Plain HTTP, direct to the origin.
    pub fn http_direct(&self) -> Duration {
        self.rtts((2 + self.direct_object_rounds()) as f64)
    }

    /// Plain HTTP through tinyproxy.
    pub fn http_tinyproxy(&self) -> Duration {
        let rounds = self.objects.div_ceil(self.connections.max(1));
        self.rtts((2 + 2 * rounds) as f64)
    }

    /// Plain HTTP through a crowd path of `k` jondos.
    pub fn http_crowd(&self, k: usize) -> Duration {
        self.rtts(k.saturating_sub(1) as f64 + 4.0)
    }

    /// HTTPS, direct or through a single-hop proxy.
    pub fn https_direct(&self) -> Duration {
        self.rtts(4.0)
    }

    /// HTTPS through a crowd path of `k` jondos, optimistic tunnel data.
    pub fn https_crowd(&self, k: usize) -> Duration {
        // 3E + 2d with E = k round trips of one link.
        self.rtts(3.0 * k as f64 + 1.0)
    }

    /// HTTPS through a crowd path of `k` jondos when the `CONNECT` is answered before
    /// the ClientHello leaves: 4E.
    pub fn https_crowd_waiting(&self, k: usize) -> Duration {
        self.rtts(4.0 * k as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn model() -> Model {
        Model {
            d: ms(25),
            objects: 40,
            connections: 6,
            origin: ms(3),
        }
    }

    #[test]
    fn the_issue_examples_at_25_ms() {
        let m = model();
        // (2 + 1 + ceil(40/6)) x 50 ms: ceil(45/6) = 8 = 1 + ceil(40/6).
        assert_eq!(m.direct_object_rounds(), 8);
        assert_eq!(m.http_direct(), ms(503));
        // (2 + 2 x 7) x 50 ms.
        assert_eq!(m.http_tinyproxy(), ms(803));
        // 2d(k-1) + 2d x 2 + 2d x 2 at k = 5: 200 + 100 + 100.
        assert_eq!(m.http_crowd(5), ms(403));
        assert_eq!(m.http_crowd(1), ms(203));
        assert_eq!(m.https_direct(), ms(203));
        // E = 250 ms: 3E + 2d = 800; 4E = 1000.
        assert_eq!(m.https_crowd(5), ms(803));
        assert_eq!(m.https_crowd_waiting(5), ms(1003));
    }

    #[test]
    fn one_jondo_is_one_link_like_a_single_proxy() {
        let m = model();
        // A path of one: no jondo link, only the exit's link to the origin.
        assert_eq!(m.https_crowd(1), m.https_direct());
        // Optimistic data saves exactly one round trip over the path's jondo links,
        // 2d(k - 1), on a real link.
        for k in 1..=8 {
            assert_eq!(
                m.https_crowd_waiting(k) - m.https_crowd(k),
                m.d * 2 * (k as u32 - 1)
            );
        }
    }

    #[test]
    fn object_rounds_follow_the_shared_queue() {
        let m = |objects, connections| Model {
            objects,
            connections,
            ..model()
        };
        // The page's connection fetches while the others connect.
        assert_eq!(m(37, 6).direct_object_rounds(), 7);
        assert_eq!(m(1, 6).direct_object_rounds(), 1);
        assert_eq!(m(6, 1).direct_object_rounds(), 6);
        assert_eq!(m(0, 6).http_tinyproxy(), ms(103));
    }
}
