//! The state one running blender shares between its tasks: the crowds it serves with
//! their published documents, the connection budgets, counters, and its connection to
//! the store. Owns no request handling and no epoch decisions.

use crate::admission::{Gate, Known, ThrottleKey};
use crate::config::ApiLimits;
use crate::store::password::PasswordChecks;
use crate::store::Store;
use crowds_net::error::NodeError;
use crowds_net::net::{self, now_ms};
use crowds_proto::document::CrowdDocument;
use crowds_proto::identity::{PublicKey, SecretKey};
use crowds_proto::roster::RosterConfig;
use crowds_proto::throttle::{LoginThrottle, RateLimit};
use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

pub(crate) struct Published {
    pub(crate) bytes: Arc<Vec<u8>>,
    pub(crate) etag: String,
    pub(crate) epoch: u64,
    pub(crate) issued_at: u64,
    pub(crate) document: Arc<CrowdDocument>,
    /// The members' keys, to tell quickly who may read the document.
    pub(crate) keys: HashSet<PublicKey>,
}

/// Earlier documents kept to answer with deltas.
pub(crate) const DELTA_BASES: usize = 8;

/// Encoded deltas to the current document, by the base's (epoch, issue time).
pub(crate) type DeltaCache = std::collections::HashMap<(u64, u64), Arc<Vec<u8>>>;

/// One crowd this blender serves.
pub(crate) struct Crowd {
    pub(crate) config: RosterConfig,
    pub(crate) published: RwLock<Option<Published>>,
    /// The documents published before the current one (newest last).
    pub(crate) history: Mutex<std::collections::VecDeque<Arc<CrowdDocument>>>,
    /// Deltas to the current document, by the base's (epoch, issue time).
    pub(crate) deltas: Mutex<DeltaCache>,
}

impl Crowd {
    /// Whether `key` is in this crowd's current document.
    pub(crate) fn lists(&self, key: &PublicKey) -> bool {
        self.published
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|p| p.keys.contains(key))
    }
}

/// The blender's counters (never account names or member traffic).
#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) joins_pending: AtomicU64,
    pub(crate) joins_member: AtomicU64,
    pub(crate) joins_too_soon: AtomicU64,
    pub(crate) logins_refused: AtomicU64,
    pub(crate) heartbeats: AtomicU64,
    pub(crate) epochs: AtomicU64,
    pub(crate) client_only_joins: AtomicU64,
    /// Joins refused because the peer address answered with another key (or no proof).
    pub(crate) address_claims_refused: AtomicU64,
}

pub(crate) struct State {
    pub(crate) logins: Mutex<LoginThrottle<ThrottleKey>>,
    pub(crate) join_rate: Mutex<RateLimit<IpAddr>>,
    /// Where password checks run (a fixed pool; see [`crate::store::password`]).
    pub(crate) checks: PasswordChecks,
    pub(crate) limits: ApiLimits,
    pub(crate) known: RwLock<Known>,
    pub(crate) gate: Gate,
    pub(crate) stats: Stats,
    pub(crate) started_at: u64,
    pub(crate) key: SecretKey,
    pub(crate) connect_back_timeout: Duration,
    /// The API's connection to the store (the ticker has its own).
    pub(crate) store: Arc<Mutex<Store>>,
    /// "sqlite" or "postgres".
    pub(crate) database: &'static str,
    pub(crate) crowds: std::collections::BTreeMap<String, Crowd>,
    /// When the API's accept loop last had every connection slot taken.
    pub(crate) saturation: Arc<net::Saturation>,
    /// When a store call last failed (unix ms; 0: never).
    pub(crate) store_failed_at: AtomicU64,
}

impl State {
    pub(crate) fn crowd(&self, name: &str) -> Option<&Crowd> {
        self.crowds.get(name)
    }

    /// Notes that `key` just proved to be a member's (or a pending member's), calling
    /// from `source`.
    pub(crate) fn note_member(&self, key: PublicKey, source: IpAddr, now: u64) {
        let source = net::source_of(source);
        {
            // Most calls are members' polls and heartbeats, seen a moment ago.
            let known = self.known.read().unwrap_or_else(|p| p.into_inner());
            let fresh = |at: Option<&u64>| at.is_some_and(|at| now.saturating_sub(*at) < 60_000);
            if fresh(known.keys.get(&key)) && fresh(known.sources.get(&source)) {
                return;
            }
        }
        let mut known = self.known.write().unwrap_or_else(|p| p.into_inner());
        *known.keys.touch_or_insert_with(key, || now) = now;
        *known.sources.touch_or_insert_with(source, || now) = now;
    }

    /// Rebuilds the members' keys and addresses from every crowd's current document.
    pub(crate) fn refresh_known(&self) {
        let mut keys = HashSet::new();
        let mut sources = HashSet::new();
        for crowd in self.crowds.values() {
            if let Some(p) = crowd
                .published
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
            {
                keys.extend(p.keys.iter().copied());
                sources.extend(
                    p.document
                        .members
                        .iter()
                        .map(|m| net::source_of(m.addr.ip())),
                );
            }
        }
        let mut known = self.known.write().unwrap_or_else(|p| p.into_inner());
        known.doc_keys = keys;
        known.doc_sources = sources;
    }

    /// Runs a store call off the async threads.
    pub(crate) async fn with_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<T, crate::store::StoreError> + Send + 'static,
    ) -> Result<T, NodeError> {
        let store = self.store.clone();
        let result = tokio::task::spawn_blocking(move || f(&mut lock(&store)))
            .await
            .map_err(|e| NodeError::Blender(e.to_string()))
            .and_then(|r| r.map_err(NodeError::from));
        if result.is_err() {
            self.store_failed();
        }
        result
    }

    /// Notes that the store failed now: members' heartbeats may have been lost.
    pub(crate) fn store_failed(&self) {
        self.store_failed_at
            .store(now_ms().max(1), Ordering::Relaxed);
    }

    /// The last time (unix ms) this blender may have turned members' heartbeats away:
    /// its API had no free connection slot, or its store failed.
    pub(crate) fn disrupted_at(&self, now: u64) -> Option<u64> {
        let store = match self.store_failed_at.load(Ordering::Relaxed) {
            0 => None,
            at => Some(at.min(now)),
        };
        store.max(self.saturation.last_at(now))
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
