//! Networking pieces both Crowds daemons share, below either of them.
//!
//! Nothing here knows what a jondo or a blender is: the daemons use these pieces, never
//! the other way round.
//!
//! - [`tls`]: TLS 1.3 with pinned raw keys; [`link`]: TLS + HTTP/2 connections between
//!   jondos (they know nothing of paths).
//! - [`body`]: response bodies and the crowd's error answers.
//! - [`net`]: listeners, accept loops, per-address limits, the clock in unix ms.
//! - [`files`]: the data directory, identity keys, private files.
//! - [`safelog`]: redaction of destinations and secrets in logs.
//! - [`metrics`]: Prometheus text format; [`page`]: what the status pages share.
//! - [`error`]: [`NodeError`], the error of the daemons' I/O.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![deny(clippy::await_holding_lock)]

pub mod body;
pub mod error;
pub mod files;
pub mod link;
pub mod metrics;
pub mod net;
pub mod page;
pub mod safelog;
pub mod tls;

pub use error::NodeError;
