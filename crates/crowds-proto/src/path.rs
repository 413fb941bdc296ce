//! Paths: ids, the per-jondo routing table and the forward/submit coin.
//!
//! Owns the paper's path rules. The initiator always forwards to a member chosen
//! uniformly at random from the crowd (possibly itself). Every jondo receiving a request
//! on a path it has not seen flips a coin biased by pf: forward to a uniformly random
//! member (possibly itself), or submit to the end server. The decision is remembered per
//! (predecessor, incoming path id), so the path is static. Outgoing path ids are fresh
//! random numbers per link, so ids cannot be matched across hops. Randomness is injected;
//! nothing here does I/O.

use crate::MemberId;
use rand::Rng;
use std::collections::{HashMap, HashSet};
use std::fmt;

/// Path entries a jondo shares out among its predecessors (each is a few dozen bytes).
pub const MAX_PATHS: usize = 1 << 16;
/// Most paths one predecessor may have through a jondo, so a member flooding path
/// set-ups cannot fill the table for everyone else.
pub const MAX_PATHS_PER_PREDECESSOR: usize = 1 << 12;
/// The smallest share of one predecessor, however big the crowd. An honest member
/// relays about `4/n` of all paths through any one other member, so this is plenty.
pub const MIN_PATHS_PER_PREDECESSOR: usize = 16;

/// A path identifier on one link, chosen by the sending side.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PathId(pub u64);

impl PathId {
    /// The id the initiator uses for its own path (it never crosses a link).
    pub const LOCAL: PathId = PathId(0);

    /// 16 hex digits, the form carried in the `crowds-path` header.
    pub fn to_hex(self) -> String {
        format!("{:016x}", self.0)
    }

    /// Parses exactly 16 hex digits.
    pub fn from_hex(text: &str) -> Option<PathId> {
        if text.len() != 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(text, 16).ok().map(PathId)
    }
}

impl fmt::Debug for PathId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PathId({:016x})", self.0)
    }
}

/// Where a request on a path came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Predecessor {
    /// This jondo's own user: the jondo is the initiator.
    Local,
    /// Another member (or this jondo itself, when it chose itself as successor).
    Member(MemberId),
}

/// What a jondo does with requests on a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    /// Relay to `successor`, naming the path `path` on that link.
    Forward {
        /// The next jondo.
        successor: MemberId,
        /// The path id on the link to it.
        path: PathId,
    },
    /// Submit the request to the end server.
    Submit,
}

/// Why no route could be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// The crowd lists no forwarding member (not yet admitted, or empty crowd).
    #[error("the crowd has no members to forward to")]
    EmptyCrowd,
    /// The routing table is full (cannot happen while every predecessor keeps to its
    /// share; kept as a last bound on memory).
    #[error("too many paths through this jondo")]
    TableFull,
    /// This predecessor already has its share of paths here (see
    /// [`PathTable::predecessor_share`]).
    #[error("too many paths from one predecessor")]
    PredecessorFull,
}

/// The coin of one jondo: forward (to whom) or submit.
///
/// `initiator` jondos always forward. `forwarders` are the members that may be chosen,
/// uniformly; it may include the deciding jondo itself.
pub fn choose_hop<R: Rng + ?Sized>(
    rng: &mut R,
    initiator: bool,
    forward_probability: f64,
    forwarders: &[MemberId],
) -> Result<Option<MemberId>, RouteError> {
    // A pf that is not a number never forwards (documents cannot carry one; callers
    // of this public function might).
    let pf = if forward_probability.is_nan() {
        0.0
    } else {
        forward_probability.clamp(0.0, 1.0)
    };
    if !initiator && !rng.gen_bool(pf) {
        return Ok(None);
    }
    if forwarders.is_empty() {
        return Err(RouteError::EmptyCrowd);
    }
    Ok(Some(forwarders[rng.gen_range(0..forwarders.len())]))
}

/// One jondo's routing table: (predecessor, incoming id) -> hop.
///
/// Every member predecessor gets an equal share of the table ([`PathTable::predecessor_share`]),
/// so the shares of all members together fit in [`MAX_PATHS`]: a few collaborating
/// predecessors opening paths in bulk only have their own new paths refused. The
/// jondo's own user's path ([`Predecessor::Local`], [`PathId::LOCAL`]) counts against
/// no limit.
#[derive(Debug, Default)]
pub struct PathTable {
    routes: HashMap<(Predecessor, PathId), Hop>,
    outgoing: HashSet<(MemberId, PathId)>,
    per_predecessor: HashMap<Predecessor, usize>,
    formed: u64,
    /// Members in the current crowd document (0: not known yet).
    crowd_size: usize,
}

impl PathTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of paths through this jondo.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// How many hops this table has decided since it was created.
    pub fn formed(&self) -> u64 {
        self.formed
    }

    /// Tells the table how many members the crowd has now, which sets each
    /// predecessor's share.
    pub fn set_crowd_size(&mut self, members: usize) {
        self.crowd_size = members;
    }

    /// Most paths one member predecessor may hold here: an equal part of [`MAX_PATHS`]
    /// for each member of the crowd, between [`MIN_PATHS_PER_PREDECESSOR`] and
    /// [`MAX_PATHS_PER_PREDECESSOR`].
    pub fn predecessor_share(&self) -> usize {
        (MAX_PATHS / self.crowd_size.max(1))
            .clamp(MIN_PATHS_PER_PREDECESSOR, MAX_PATHS_PER_PREDECESSOR)
    }

    /// The bound on member predecessors' entries: every member's share, at least
    /// [`MAX_PATHS`]. The user's own path may come on top (one entry).
    fn capacity(&self) -> usize {
        MAX_PATHS.max(self.crowd_size.saturating_mul(self.predecessor_share()))
    }

    /// Whether no path is known.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The hop for requests arriving from `pred` on `path`, deciding it now if the path is
    /// new or its successor is no longer in `forwarders`.
    pub fn route<R: Rng + ?Sized>(
        &mut self,
        rng: &mut R,
        pred: Predecessor,
        path: PathId,
        forward_probability: f64,
        forwarders: &[MemberId],
    ) -> Result<Hop, RouteError> {
        match self.routes.get(&(pred, path)) {
            Some(Hop::Submit) => return Ok(Hop::Submit),
            Some(hop @ Hop::Forward { successor, .. }) if forwarders.contains(successor) => {
                return Ok(*hop)
            }
            Some(_) => self.forget(pred, path),
            None => {}
        }
        // The user's own path is never refused: it is one entry (PathId::LOCAL).
        if (pred, path) != (Predecessor::Local, PathId::LOCAL) {
            if self.per_predecessor.get(&pred).copied().unwrap_or(0) >= self.predecessor_share() {
                return Err(RouteError::PredecessorFull);
            }
            if self.routes.len() >= self.capacity() {
                return Err(RouteError::TableFull);
            }
        }
        let initiator = pred == Predecessor::Local;
        let hop = match choose_hop(rng, initiator, forward_probability, forwarders)? {
            None => Hop::Submit,
            Some(successor) => {
                let path = loop {
                    let id = PathId(rng.gen_range(1..=u64::MAX));
                    if self.outgoing.insert((successor, id)) {
                        break id;
                    }
                };
                Hop::Forward { successor, path }
            }
        };
        self.routes.insert((pred, path), hop);
        *self.per_predecessor.entry(pred).or_default() += 1;
        self.formed += 1;
        Ok(hop)
    }

    /// Forgets one path (its successor failed).
    pub fn forget(&mut self, pred: Predecessor, path: PathId) {
        let Some(hop) = self.routes.remove(&(pred, path)) else {
            return;
        };
        if let Some(n) = self.per_predecessor.get_mut(&pred) {
            *n -= 1;
            if *n == 0 {
                self.per_predecessor.remove(&pred);
            }
        }
        if let Hop::Forward { successor, path } = hop {
            self.outgoing.remove(&(successor, path));
        }
    }

    /// Forgets every path (new members joined: all paths re-form at once).
    pub fn forget_all(&mut self) {
        self.routes.clear();
        self.outgoing.clear();
        self.per_predecessor.clear();
    }

    /// Forgets the paths that arrive from `member` (it left the crowd).
    pub fn forget_from(&mut self, member: MemberId) {
        let gone: Vec<_> = self
            .routes
            .keys()
            .filter(|(p, _)| *p == Predecessor::Member(member))
            .copied()
            .collect();
        for (pred, path) in gone {
            self.forget(pred, path);
        }
    }
}

#[cfg(test)]
mod tests;
