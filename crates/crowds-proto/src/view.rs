//! A jondo's view of its crowd: which signed documents it accepts, and what changed.
//!
//! Owns the acceptance rules: the signature must verify under the pinned blender key,
//! the document must not be expired nor issued in the future (beyond a small clock
//! skew), and its epoch must not go backwards. A document for the current epoch is only
//! a refresh (a later expiry) and must list exactly the same members. It does not fetch
//! documents and does not act on changes; the jondo does both.

use crate::document::{CrowdDocument, DocumentError};
use crate::identity::PublicKey;
use crate::MemberId;

/// Clocks of jondos and blender may differ by this much (milliseconds).
pub const MAX_CLOCK_SKEW_MS: u64 = 5 * 60 * 1000;

/// Why a verified document was still not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ViewError {
    /// Bad bytes or a bad signature.
    #[error(transparent)]
    Document(#[from] DocumentError),
    /// The document's expiry has passed.
    #[error("crowd document of epoch {epoch} has expired")]
    Expired {
        /// The document's epoch.
        epoch: u64,
    },
    /// Issued further in the future than clock skew explains.
    #[error("crowd document claims to be issued in the future")]
    FromFuture,
    /// An older epoch than the one already held (a replay or a rollback).
    #[error("stale crowd document: epoch {got} is older than the current epoch {current}")]
    Stale {
        /// Epoch of the offered document.
        got: u64,
        /// Epoch already held.
        current: u64,
    },
    /// The same epoch with a different member list: the blender contradicts itself.
    #[error("crowd document for epoch {0} lists different members than before")]
    Inconsistent(u64),
    /// Another crowd's document.
    #[error("crowd document is for another crowd")]
    WrongCrowd,
}

/// What an accepted document changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Same epoch, fresher signature (or the very same document again).
    Refreshed,
    /// A new epoch.
    NewEpoch {
        /// Members that were not in the previous epoch.
        joined: Vec<MemberId>,
        /// Members of the previous epoch that are gone.
        left: Vec<MemberId>,
    },
}

impl Change {
    /// Whether every path must be forgotten (new members join: all paths re-form at
    /// once, so a newcomer's path does not stand out).
    pub fn reforms_paths(&self) -> bool {
        matches!(self, Change::NewEpoch { joined, .. } if !joined.is_empty())
    }
}

/// The current crowd as a jondo knows it.
#[derive(Debug, Clone)]
pub struct CrowdView {
    blender: PublicKey,
    crowd: Option<String>,
    current: Option<CrowdDocument>,
}

impl CrowdView {
    /// A view trusting documents signed by `blender` (the pinned key).
    pub fn new(blender: PublicKey) -> Self {
        Self {
            blender,
            crowd: None,
            current: None,
        }
    }

    /// Only accept documents of the named crowd.
    pub fn for_crowd(mut self, crowd: &str) -> Self {
        self.crowd = Some(crowd.to_string());
        self
    }

    /// The pinned blender key documents must be signed with.
    pub fn blender_key(&self) -> PublicKey {
        self.blender
    }

    /// From now on, only accept documents of the named crowd (set once the blender has
    /// said which crowd this jondo's account belongs to).
    pub fn set_crowd(&mut self, crowd: &str) {
        self.crowd = Some(crowd.to_string());
    }

    /// The current document, if any, whether expired or not.
    pub fn current(&self) -> Option<&CrowdDocument> {
        self.current.as_ref()
    }

    /// The current document if it may still be used at `now`.
    pub fn usable(&self, now: u64) -> Option<&CrowdDocument> {
        self.current.as_ref().filter(|d| now < d.expires_at)
    }

    /// Verifies `bytes` and adopts the document if the rules allow.
    pub fn accept(&mut self, bytes: &[u8], now: u64) -> Result<Change, ViewError> {
        let doc = CrowdDocument::verify(bytes, &self.blender)?;
        if let Some(crowd) = &self.crowd {
            if &doc.crowd != crowd {
                return Err(ViewError::WrongCrowd);
            }
        }
        if now >= doc.expires_at {
            return Err(ViewError::Expired { epoch: doc.epoch });
        }
        if doc.issued_at > now.saturating_add(MAX_CLOCK_SKEW_MS) {
            return Err(ViewError::FromFuture);
        }
        let change = match &self.current {
            None => Change::NewEpoch {
                joined: doc.members.iter().map(|m| m.id).collect(),
                left: Vec::new(),
            },
            Some(cur) if doc.epoch < cur.epoch => {
                return Err(ViewError::Stale {
                    got: doc.epoch,
                    current: cur.epoch,
                })
            }
            Some(cur) if doc.epoch == cur.epoch => {
                if doc.members != cur.members || doc.forward_probability != cur.forward_probability
                {
                    return Err(ViewError::Inconsistent(doc.epoch));
                }
                if doc.issued_at < cur.issued_at {
                    return Err(ViewError::Stale {
                        got: doc.epoch,
                        current: cur.epoch,
                    });
                }
                Change::Refreshed
            }
            Some(cur) => Change::NewEpoch {
                joined: doc
                    .members
                    .iter()
                    .filter(|m| cur.member(m.id).is_none_or(|old| old != *m))
                    .map(|m| m.id)
                    .collect(),
                left: cur
                    .members
                    .iter()
                    .filter(|m| doc.member(m.id).is_none_or(|new| new != *m))
                    .map(|m| m.id)
                    .collect(),
            },
        };
        self.current = Some(doc);
        Ok(change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::Member;
    use crate::identity::SecretKey;
    use std::net::SocketAddr;

    fn doc(epoch: u64, ids: &[u64], issued: u64) -> CrowdDocument {
        CrowdDocument {
            crowd: "default".into(),
            epoch,
            forward_probability: 0.75,
            issued_at: issued,
            expires_at: issued + 60_000,
            members: ids
                .iter()
                .map(|&id| Member {
                    id,
                    addr: SocketAddr::from(([127, 0, 0, 2], 7000 + id as u16)),
                    key: PublicKey([id as u8; 32]),
                    flags: 0,
                })
                .collect(),
        }
    }

    #[test]
    fn accepts_newer_rejects_older_and_expired() {
        let key = SecretKey::generate().expect("key");
        let mut view = CrowdView::new(key.public());
        let d1 = doc(1, &[1, 2], 1_000).sign(&key).expect("sign");
        let d2 = doc(2, &[1, 2, 3], 2_000).sign(&key).expect("sign");
        assert_eq!(
            view.accept(&d1, 1_500),
            Ok(Change::NewEpoch {
                joined: vec![1, 2],
                left: vec![]
            })
        );
        let change = view.accept(&d2, 2_500).expect("newer");
        assert!(change.reforms_paths());
        assert_eq!(
            view.accept(&d1, 2_600),
            Err(ViewError::Stale { got: 1, current: 2 })
        );
        let expired = doc(3, &[1], 1_000).sign(&key).expect("sign");
        assert_eq!(
            view.accept(&expired, 70_000),
            Err(ViewError::Expired { epoch: 3 })
        );
        assert_eq!(view.current().map(|d| d.epoch), Some(2));
        assert!(view.usable(2_500).is_some());
        assert!(view.usable(62_000).is_none());
    }

    #[test]
    fn departures_do_not_reform_paths() {
        let key = SecretKey::generate().expect("key");
        let mut view = CrowdView::new(key.public());
        view.accept(&doc(1, &[1, 2, 3], 1_000).sign(&key).expect("s"), 1_000)
            .expect("first");
        let change = view
            .accept(&doc(2, &[1, 3], 2_000).sign(&key).expect("s"), 2_000)
            .expect("second");
        assert_eq!(
            change,
            Change::NewEpoch {
                joined: vec![],
                left: vec![2]
            }
        );
        assert!(!change.reforms_paths());
    }

    #[test]
    fn refresh_and_inconsistency() {
        let key = SecretKey::generate().expect("key");
        let mut view = CrowdView::new(key.public());
        view.accept(&doc(4, &[1, 2], 1_000).sign(&key).expect("s"), 1_000)
            .expect("first");
        assert_eq!(
            view.accept(&doc(4, &[1, 2], 5_000).sign(&key).expect("s"), 5_000),
            Ok(Change::Refreshed)
        );
        assert_eq!(
            view.accept(&doc(4, &[1, 2, 3], 6_000).sign(&key).expect("s"), 6_000),
            Err(ViewError::Inconsistent(4))
        );
        assert!(matches!(
            view.accept(&doc(4, &[1, 2], 2_000).sign(&key).expect("s"), 6_000),
            Err(ViewError::Stale { .. })
        ));
    }

    #[test]
    fn forged_and_future_documents() {
        let key = SecretKey::generate().expect("key");
        let rogue = SecretKey::generate().expect("key");
        let mut view = CrowdView::new(key.public());
        assert!(matches!(
            view.accept(&doc(1, &[1], 1_000).sign(&rogue).expect("s"), 1_000),
            Err(ViewError::Document(DocumentError::BadSignature))
        ));
        let future = doc(1, &[1], 10 * MAX_CLOCK_SKEW_MS).sign(&key).expect("s");
        assert_eq!(view.accept(&future, 1_000), Err(ViewError::FromFuture));
        assert!(view.current().is_none());
    }
}
