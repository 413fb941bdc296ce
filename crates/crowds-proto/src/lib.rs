//! Crowds protocol logic, without any I/O.
//!
//! This crate owns every rule of the Crowds protocol that can be stated without a socket
//! or a clock: it never opens a connection, never reads the system time and never draws
//! randomness it was not handed. Time comes in as "unix milliseconds" arguments and
//! randomness as an injected [`rand::Rng`], so tests are deterministic and the analysis
//! tools run the very same code the daemons run.
//!
//! # Layout
//!
//! - [`identity`]: Ed25519 identity keys of jondos and the blender, their SPKI form.
//! - [`document`]: the signed crowd document (epoch, pf, members) and its codec.
//! - [`view`]: a jondo's view of the crowd: which documents it accepts.
//! - [`roster`]: the blender's membership rules: batched joins, heartbeats, epochs.
//! - [`path`]: path ids, the per-jondo routing table, the forward/submit coin.
//! - [`relay`]: the form of a relayed request on a link, and the crowd's error kinds.
//! - [`html`]: pages read as they stream: embedded objects, active-content removal.
//! - [`css`]: the references a stylesheet makes (`url()`, `@import`), for the same scan.
//! - [`headers`]: header hygiene for requests entering the crowd and responses leaving it.
//! - [`api`]: the blender's API messages.
//! - [`bundle`]: the page bundle of the timing defence (page plus embedded objects).
//! - [`anonymity`]: the paper's closed-form guarantees (probable innocence).
//! - [`analysis`]: those figures beside Monte Carlo over the real path code (`crowds analyze`).
//! - [`policy`]: which destination addresses an exit may submit to.
//! - [`recent`]: counts of events in a sliding window (re-formations in the last day).
//! - [`sniff`]: whether a tunnel's opening bytes are plaintext HTTP.
//! - [`socks`]: SOCKS5 messages for the local SOCKS port.
//! - [`throttle`]: the blender's limits on password guessing and join floods.

#![forbid(unsafe_code)]
// A peer's bytes must never panic a jondo: no unwrap/expect outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![deny(clippy::await_holding_lock)]

pub mod analysis;
pub mod anonymity;
pub mod api;
pub mod bundle;
pub mod css;
pub mod delta;
pub mod document;
pub mod headers;
pub mod html;
pub mod identity;
pub mod path;
pub mod policy;
pub mod recent;
pub mod relay;
pub mod roster;
pub mod sniff;
pub mod socks;
pub mod throttle;
pub mod view;

/// A member of a crowd, as numbered by the blender (one account, one member id).
pub type MemberId = u64;

/// The forward probability `pf` must lie in this open interval in a real crowd.
///
/// Below 1/2 probable innocence is impossible whatever the crowd size; 1 means a
/// request is never submitted.
pub fn pf_is_secure(pf: f64) -> bool {
    pf > 0.5 && pf < 1.0
}

/// Whether `pf` is usable at all (experiments only when not [`pf_is_secure`]).
pub fn pf_is_valid(pf: f64) -> bool {
    pf.is_finite() && (0.0..1.0).contains(&pf)
}
