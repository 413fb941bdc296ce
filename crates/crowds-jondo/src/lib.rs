//! The jondo: a crowd member's daemon, on tokio.
//!
//! The I/O shell around [`crowds_proto`] for one member: local proxies, the relay
//! engine, the exit and the timing defence. Shared networking (TLS, links, bodies,
//! files) comes from [`crowds_net`]; the blender is another crate and never imported.
//!
//! # Layers (each module imports only those listed before it)
//!
//! 1. [`crowd`] (the current crowd), [`tunnel`] (splicing CONNECT tunnels hop by hop),
//!    [`active`] (removal of scripts and plug-ins), [`blender_client`] (a jondo's calls
//!    to the blender).
//! 2. [`exit`] (submitting requests to servers), then [`prefetch`] (the timing defence:
//!    page bundles at the exit, the object cache at the initiator).
//! 3. [`node`]: the relay engine: [`Node`] state and counters (`node.rs`), its
//!    constructor (`node/new.rs`), document adoption and the low-pf refusal
//!    (`node/adopt.rs`), pauses of failed members (`node/failed.rs`), routing and retries
//!    (`node/route.rs`).
//! 4. Front ends: [`proxy`] (local HTTP proxy), [`socks`] (local SOCKS5 proxy),
//!    [`status`] (the typed [`status::JondoStatus`], rendered as the status page by
//!    [`status::page`] and as `/metrics` by [`status::prometheus`]) and [`control`]
//!    (the control port's HTTP shell: `/`, `status.json`, `/metrics`, PAC file).
//! 5. [`jondo`]: settings ([`JondoConfig`]) and wiring ([`start`]): ports, login, and the
//!    loops in `jondo/blender_sync.rs` (join, heartbeats, document polling) and
//!    `jondo/peer.rs` (the peer server).
//!
//! Decisions that depend on the clock or on chance take them as arguments (`now_ms`, an
//! `Rng`); the async loops read [`crowds_net::net::now_ms`] and pass it in.

#![forbid(unsafe_code)]
// A peer's bytes must never panic a jondo: no unwrap/expect outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![deny(clippy::await_holding_lock)]

pub mod active;
pub mod blender_client;
pub mod control;
pub mod crowd;
pub mod exit;
pub mod jondo;
pub mod node;
pub mod prefetch;
pub mod proxy;
pub mod socks;
pub mod status;
pub mod tunnel;

pub use jondo::{runtime, start, JondoConfig, RunningJondo};
pub use node::Node;
