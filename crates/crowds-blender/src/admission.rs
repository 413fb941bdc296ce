//! Admission of API connections: who counts as a member when a connection arrives
//! ([`Known`]), the members' and strangers' budgets and the per-address and per-key caps
//! ([`Gate`], [`Admission`]), and what failed logins are counted against
//! ([`ThrottleKey`]). Sorts connections only: what a client may do is decided by the
//! documents and the store, never here.

use crowds_net::net;
use crowds_proto::identity::PublicKey;
use crowds_proto::throttle::BoundedMap;
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long an address or key stays known as a member's after it was last proven.
pub(crate) const KNOWN_FOR_MS: u64 = 60 * 60 * 1000;
/// Most member addresses and keys remembered beyond the current documents' (the least
/// recently seen forgotten first; a forgotten member is a stranger until its next call).
pub(crate) const MAX_KNOWN: usize = 65_536;

/// Who counts as a member when a connection arrives (by its address) and once its
/// handshake is done (by its key): everyone in the current documents, and any key
/// (with the address it called from) that a heartbeat, join or document fetch recently
/// proved to be a member's or a pending member's. Only connections are sorted by this;
/// what a client may do is always decided by the documents and the store.
pub(crate) struct Known {
    pub(crate) doc_keys: HashSet<PublicKey>,
    pub(crate) doc_sources: HashSet<IpAddr>,
    /// Unix ms each was last proven.
    pub(crate) keys: BoundedMap<PublicKey, u64>,
    pub(crate) sources: BoundedMap<IpAddr, u64>,
}

impl Known {
    pub(crate) fn new() -> Self {
        Self {
            doc_keys: HashSet::new(),
            doc_sources: HashSet::new(),
            keys: BoundedMap::new(MAX_KNOWN),
            sources: BoundedMap::new(MAX_KNOWN),
        }
    }

    pub(crate) fn key(&self, key: &PublicKey, now: u64) -> bool {
        self.doc_keys.contains(key)
            || self
                .keys
                .get(key)
                .is_some_and(|at| now.saturating_sub(*at) < KNOWN_FOR_MS)
    }

    pub(crate) fn source(&self, ip: IpAddr, now: u64) -> bool {
        let source = net::source_of(ip);
        self.doc_sources.contains(&source)
            || self
                .sources
                .get(&source)
                .is_some_and(|at| now.saturating_sub(*at) < KNOWN_FOR_MS)
    }
}

/// The API's connection budgets besides the members' (see the module documentation).
pub(crate) struct Gate {
    pub(crate) members: Arc<Semaphore>,
    pub(crate) strangers: Arc<Semaphore>,
    pub(crate) handshakes: Arc<net::Handshakes>,
    pub(crate) per_address: Arc<net::PerAddress>,
    pub(crate) refused_per_address: AtomicU64,
    /// Members' connections per key: one member (a collaborator) cannot take the whole
    /// members' budget and so stall everyone's heartbeats.
    pub(crate) per_key: Arc<net::PerAddress<PublicKey>>,
    pub(crate) refused_strangers: AtomicU64,
    pub(crate) handshakes_timed_out: AtomicU64,
    pub(crate) connections_timed_out: AtomicU64,
    pub(crate) bodies_timed_out: AtomicU64,
}

/// What a connection holds of the budgets; all given back when it ends.
pub(crate) struct Admission {
    pub(crate) member: Option<OwnedSemaphorePermit>,
    pub(crate) stranger: Option<OwnedSemaphorePermit>,
    pub(crate) handshake: Option<net::HandshakeTicket>,
    pub(crate) address: Option<net::AddressSlot>,
    /// A member's connection counts against its key ([`MEMBER_CONNECTIONS_PER_KEY`]).
    pub(crate) key: Option<net::AddressSlot<PublicKey>>,
}

/// What login failures are counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum ThrottleKey {
    Account(String),
    Source(IpAddr),
}

/// Takes a newly accepted connection's first places, or refuses it (`None`: it is
/// closed at once). `member` is its permit of the members' budget if it comes from a
/// member's address; every other connection enters the strangers' handshakes, where a
/// newer one cuts off the one waiting longest. Either way it counts against its source
/// address until its key proves a member's.
pub(crate) fn admit(
    gate: &Gate,
    peer: SocketAddr,
    member: Option<OwnedSemaphorePermit>,
) -> Option<Admission> {
    let Some(address) = gate.per_address.try_take(net::source_of(peer.ip())) else {
        gate.refused_per_address.fetch_add(1, Ordering::Relaxed);
        return None;
    };
    let handshake = member.is_none().then(|| gate.handshakes.enter());
    Some(Admission {
        member,
        stranger: None,
        handshake,
        address: Some(address),
        key: None,
    })
}
