//! The Crowds daemons: blender, jondo and demo, on tokio.
//!
//! This crate is the I/O shell around [`crowds_proto`]: sockets, TLS, HTTP, files and
//! SQLite live here; protocol rules do not.
//!
//! # Layout
//!
//! - [`blender`]: the membership server (HTTPS API, epoch ticker, signing);
//!   [`store`] keeps its accounts and epochs in SQLite.
//! - [`jondo`]: the member daemon wiring everything below together.
//! - [`link`]: TLS 1.3 + HTTP/2 connections between jondos; [`tls`] pins raw keys.
//! - [`proxy`]: the local HTTP proxy; [`socks`]: the local SOCKS5 proxy.
//! - [`tunnel`]: splicing CONNECT tunnels hop by hop.
//! - [`active`]: optional removal of scripts and plug-ins from plain-HTTP pages.
//! - [`prefetch`]: the timing defence (page bundles at the exit, object cache at the initiator).
//! - [`exit`]: submitting requests to servers (DNS at the exit, address policy).
//! - [`control`]: the jondo's status port; [`metrics`]: Prometheus text format.
//! - [`blender_client`]: a jondo's calls to the blender.
//! - [`demo`] and [`site`]: a whole crowd plus a sample website in one process.
//! - [`safelog`]: redaction of destinations in logs.
//! - [`files`], [`net`], [`body`], [`error`]: small shared helpers.

#![forbid(unsafe_code)]
// A peer's bytes must never panic a jondo: no unwrap/expect outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![deny(clippy::await_holding_lock)]

pub mod active;
pub mod blender;
pub mod blender_client;
pub mod body;
pub mod control;
pub mod demo;
pub mod error;
pub mod exit;
pub mod files;
pub mod jondo;
pub mod link;
pub mod metrics;
pub mod net;
pub mod prefetch;
pub mod proxy;
pub mod safelog;
pub mod site;
pub mod socks;
pub mod store;
pub mod tls;
pub mod tunnel;

pub use error::NodeError;
