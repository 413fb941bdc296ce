//! A whole crowd plus a sample website in one process: `crowds demo`, and the crowds
//! the benchmarks and tests start.
//!
//! - [`demo`]: a blender and several jondos on loopback, with a throwaway account store.
//! - [`site`]: the sample website (pages with embedded objects, large blobs).
//!
//! On top of [`crowds_jondo`] and [`crowds_blender`]; nothing below imports it.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod demo;
pub mod site;
