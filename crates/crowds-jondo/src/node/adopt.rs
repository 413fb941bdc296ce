//! Document adoption: how a fetched crowd document becomes the crowd this jondo routes in.
//!
//! Owns the checks before adoption (the view's rules, and the refusal of a pf <= 1/2
//! unless the jondo was started with `--insecure-allow-low-pf`) and what a new epoch
//! changes (paths re-formed or forgotten, links to departed members closed, failure
//! pauses cleared). It must not fetch documents or read the clock: the poller in
//! [`crate::jondo`] hands in the bytes and `now_ms`.

use super::{lock, Node};
use crate::crowd::Crowd;
use crowds_proto::view::Change;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Why a fetched crowd document was not adopted.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AdoptError {
    /// The view's rules refused it (signature, expiry, epoch, crowd).
    #[error(transparent)]
    View(#[from] crowds_proto::view::ViewError),
    /// Its pf is at most 1/2 and this jondo was not started with
    /// `--insecure-allow-low-pf`.
    #[error("the crowd document's pf {0} is at most 1/2")]
    LowPf(f64),
}

impl Node {
    /// Verifies and adopts a document fetched at `now_ms` (unix ms); one with pf <= 1/2
    /// only if this jondo allows it ([`crate::JondoConfig::insecure_allow_low_pf`]).
    pub(crate) fn adopt(&self, bytes: &[u8], now_ms: u64) -> Result<Change, AdoptError> {
        let mut view = lock(&self.view);
        // Accepted into a copy first, so a refused document leaves the view as it was.
        let mut next = view.clone();
        let change = next.accept(bytes, now_ms)?;
        let Some(doc) = next.current().cloned() else {
            *view = next;
            return Ok(change);
        };
        let pf = doc.forward_probability;
        if crowds_proto::pf_is_secure(pf) {
            *lock(&self.low_pf_logged) = None;
        } else {
            self.log_low_pf(pf, self.allow_low_pf);
            if !self.allow_low_pf {
                *lock(&self.refused_pf) = Some(pf);
                return Err(AdoptError::LowPf(pf));
            }
        }
        *view = next;
        drop(view);
        *lock(&self.refused_pf) = None;
        let crowd = Arc::new(Crowd::new(doc, &self.me));
        if crowd.self_id.is_none() {
            self.admitted_since.store(0, Ordering::Relaxed);
        } else if self.admitted_since.load(Ordering::Relaxed) == 0 {
            self.admitted_since.store(now_ms, Ordering::Relaxed);
        }
        if let Change::NewEpoch { joined, left } = &change {
            lock(&self.recent).epochs.record(now_ms);
            // A new epoch is a fresh start for members that failed here before.
            lock(&self.failed).clear();
            let mut paths = lock(&self.paths);
            paths.set_crowd_size(crowd.doc.members.len());
            if change.reforms_paths() {
                // New members: every path in the crowd re-forms now, together.
                paths.forget_all();
            }
            for id in left {
                paths.forget_from(*id);
                self.links.forget(*id);
            }
            // Outgoing links follow the document: a member whose key changed is dialled
            // afresh with its new key (incoming links are closed by `serve_peer`).
            self.links.retain_keys(&crowd.by_key);
            tracing::info!(
                epoch = crowd.doc.epoch,
                members = crowd.doc.members.len(),
                joined = joined.len(),
                left = left.len(),
                admitted = crowd.self_id.is_some(),
                "new crowd epoch"
            );
        }
        *self.crowd.write().unwrap_or_else(|p| p.into_inner()) = Some(crowd);
        self.adopted.send_modify(|n| *n += 1);
        Ok(change)
    }

    /// Notes a join answer received at `now_ms` (unix ms): when a pending join is
    /// expected to be admitted.
    pub(crate) fn note_join(&self, joined: &crowds_proto::api::JoinResponse, now_ms: u64) {
        let at = joined.admission_expected_at.unwrap_or(0);
        self.admission_expected_at.store(at, Ordering::Relaxed);
        if let Some(at) = joined.admission_expected_at {
            let wait = Duration::from_secs(at.saturating_sub(now_ms) / 1000);
            tracing::info!(
                "waiting for the crowd's next scheduled epoch to be admitted, in about {}",
                humantime::format_duration(wait)
            );
        }
    }

    /// Logs a document's pf <= 1/2 (refused, or adopted under the insecure flag), once
    /// per pf.
    fn log_low_pf(&self, pf: f64, adopted: bool) {
        let mut logged = lock(&self.low_pf_logged);
        if *logged == Some(pf.to_bits()) {
            return;
        }
        *logged = Some(pf.to_bits());
        if adopted {
            tracing::warn!(
                "--insecure-allow-low-pf: using a crowd whose pf {pf} is at most 1/2. No crowd \
                 size gives probable innocence at this pf: collaborators on a path can tell, \
                 more likely than not, who started a request. For experiments only."
            );
        } else {
            tracing::error!(
                "refusing the crowd document: its pf {pf} is at most 1/2, and at such a pf no \
                 crowd size gives probable innocence (collaborators on a path can tell, more \
                 likely than not, who started a request). Browsing through this jondo fails \
                 until the blender publishes a pf above 1/2. For experiments only, start the \
                 jondo with --insecure-allow-low-pf."
            );
        }
    }
}
