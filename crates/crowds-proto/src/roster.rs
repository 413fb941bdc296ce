//! The blender's membership rules: who is admitted when, and when an epoch ends.
//!
//! Owns the batching of joins (at most one new epoch per join interval, so every jondo
//! re-forms its paths at the same moment and a newcomer's path does not stand out),
//! heartbeat expiry (a silent member is dropped at the next epoch) and the content of
//! each new crowd document. Time is passed in (unix milliseconds); nothing here signs,
//! stores or sends: the blender daemon does that with what [`Roster::poll_epoch`] returns.

use crate::document::{CrowdDocument, Member};
use crate::MemberId;
use std::collections::BTreeMap;

/// Settings of a crowd's membership rules.
#[derive(Debug, Clone, PartialEq)]
pub struct RosterConfig {
    /// The crowd's name.
    pub crowd: String,
    /// The forward probability published in every document.
    pub forward_probability: f64,
    /// At most one new epoch per this many milliseconds.
    pub join_interval_ms: u64,
    /// A member silent for this long is dropped at the next epoch.
    pub heartbeat_timeout_ms: u64,
    /// How long a signed document stays valid.
    pub document_lifetime_ms: u64,
    /// An account is admitted at most once per this many milliseconds: every admission
    /// re-forms all paths and gives collaborators another look at each initiator.
    pub rejoin_interval_ms: u64,
}

/// What happened to a join request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinOutcome {
    /// Already a member with this key and address: counted as a heartbeat.
    AlreadyMember,
    /// Waiting for the next epoch.
    Pending,
    /// Admitted too recently; may join again after this many milliseconds.
    TooSoon {
        /// Milliseconds until a join is accepted.
        retry_after_ms: u64,
    },
}

/// What a shared store holds about a crowd between two epochs (see [`Roster::restore`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RosterState {
    /// The current epoch (0 before the first).
    pub epoch: u64,
    /// When it was cut (unix ms), if ever.
    pub last_epoch_at: Option<u64>,
    /// Members of the current epoch: the member, its last heartbeat, whether it leaves.
    pub members: Vec<(Member, u64, bool)>,
    /// Members waiting for the next epoch, with their last heartbeat.
    pub pending: Vec<(Member, u64)>,
}

/// The rule for a join request, apart from any state: `current` is the account's member
/// entry in the current epoch, `admitted_at` when it was last admitted.
pub fn join_outcome(
    config: &RosterConfig,
    current: Option<&Member>,
    admitted_at: Option<u64>,
    member: &Member,
    now: u64,
) -> JoinOutcome {
    if current == Some(member) {
        return JoinOutcome::AlreadyMember;
    }
    if let Some(at) = admitted_at {
        let next = at.saturating_add(config.rejoin_interval_ms);
        if now < next {
            return JoinOutcome::TooSoon {
                retry_after_ms: next - now,
            };
        }
    }
    JoinOutcome::Pending
}

#[derive(Debug, Clone)]
struct Entry {
    member: Member,
    last_seen: u64,
}

/// The membership state of one crowd.
#[derive(Debug, Clone)]
pub struct Roster {
    config: RosterConfig,
    epoch: u64,
    members: BTreeMap<MemberId, Entry>,
    pending: BTreeMap<MemberId, Entry>,
    leaving: Vec<MemberId>,
    last_epoch_at: Option<u64>,
    admitted_at: BTreeMap<MemberId, u64>,
    forced: bool,
}

impl Roster {
    /// An empty crowd that has published no epoch yet.
    pub fn new(config: RosterConfig) -> Self {
        Self::resume(config, 0, Vec::new(), 0)
    }

    /// A crowd restored from storage: the last epoch and its members (all considered
    /// seen at `now`, so members get one heartbeat timeout to come back).
    pub fn resume(config: RosterConfig, epoch: u64, members: Vec<Member>, now: u64) -> Self {
        let members = members
            .into_iter()
            .map(|member| {
                (
                    member.id,
                    Entry {
                        member,
                        last_seen: now,
                    },
                )
            })
            .collect();
        Self {
            config,
            epoch,
            members,
            pending: BTreeMap::new(),
            leaving: Vec::new(),
            last_epoch_at: None,
            admitted_at: BTreeMap::new(),
            forced: false,
        }
    }

    /// A crowd restored from a shared store between two epochs (replicated blenders):
    /// members of the current epoch with their last heartbeat and whether they asked to
    /// leave, members waiting for the next epoch, and when the last epoch was cut.
    pub fn restore(config: RosterConfig, state: RosterState) -> Self {
        let entry = |(member, last_seen): (Member, u64)| (member.id, Entry { member, last_seen });
        let leaving = state
            .members
            .iter()
            .filter(|(_, _, leaving)| *leaving)
            .map(|(m, _, _)| m.id)
            .collect();
        Self {
            config,
            epoch: state.epoch,
            members: state
                .members
                .into_iter()
                .map(|(m, seen, _)| entry((m, seen)))
                .collect(),
            pending: state.pending.into_iter().map(entry).collect(),
            leaving,
            last_epoch_at: state.last_epoch_at,
            admitted_at: BTreeMap::new(),
            forced: false,
        }
    }

    /// The settings.
    pub fn config(&self) -> &RosterConfig {
        &self.config
    }

    /// The current epoch (0 before the first).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Members of the current epoch.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values().map(|e| &e.member)
    }

    /// When the member was admitted by this roster (not kept by [`Roster::restore`]).
    pub fn admitted_at(&self, id: MemberId) -> Option<u64> {
        self.admitted_at.get(&id).copied()
    }

    /// Number of members waiting for the next epoch.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// A member asks to join (or re-join with a new address or key).
    pub fn handle_join(&mut self, member: Member, now: u64) -> JoinOutcome {
        self.leaving.retain(|id| *id != member.id);
        let current = self.members.get(&member.id).map(|e| &e.member);
        let admitted_at = self.admitted_at.get(&member.id).copied();
        let outcome = join_outcome(&self.config, current, admitted_at, &member, now);
        if outcome == JoinOutcome::AlreadyMember {
            if let Some(entry) = self.members.get_mut(&member.id) {
                entry.last_seen = now;
            }
            self.pending.remove(&member.id);
        }
        if outcome != JoinOutcome::Pending {
            return outcome;
        }
        // A member whose key changed while another member already holds that key cannot
        // be admitted twice; the document check would reject the whole epoch.
        self.pending.retain(|_, e| e.member.key != member.key);
        self.pending.insert(
            member.id,
            Entry {
                member,
                last_seen: now,
            },
        );
        JoinOutcome::Pending
    }

    /// A member (or pending member) says it is alive. Returns false for strangers.
    pub fn handle_heartbeat(&mut self, id: MemberId, now: u64) -> bool {
        let mut known = false;
        for entry in [self.members.get_mut(&id), self.pending.get_mut(&id)]
            .into_iter()
            .flatten()
        {
            entry.last_seen = now;
            known = true;
        }
        known
    }

    /// A member leaves gracefully; it is dropped at the next epoch.
    pub fn handle_leave(&mut self, id: MemberId) {
        self.pending.remove(&id);
        if self.members.contains_key(&id) && !self.leaving.contains(&id) {
            self.leaving.push(id);
        }
    }

    fn expired(&self, now: u64) -> impl Iterator<Item = MemberId> + '_ {
        self.members
            .values()
            .filter(move |e| now.saturating_sub(e.last_seen) > self.config.heartbeat_timeout_ms)
            .map(|e| e.member.id)
    }

    /// Asks for a new epoch with the same members at the next opportunity (the crowd's
    /// settings changed, e.g. its pf).
    pub fn force_epoch(&mut self) {
        self.forced = true;
    }

    fn change_waiting(&self, now: u64) -> bool {
        if self.forced {
            return true;
        }
        let pending_alive = self
            .pending
            .values()
            .any(|e| now.saturating_sub(e.last_seen) <= self.config.heartbeat_timeout_ms);
        pending_alive || !self.leaving.is_empty() || self.expired(now).next().is_some()
    }

    /// When [`Roster::poll_epoch`] may next produce an epoch, if a change is waiting.
    pub fn next_epoch_at(&self, now: u64) -> Option<u64> {
        if !self.change_waiting(now) {
            return None;
        }
        Some(match self.last_epoch_at {
            None => now,
            Some(t) => t.saturating_add(self.config.join_interval_ms).max(now),
        })
    }

    /// Cuts a new epoch if a change is waiting and the join interval has passed.
    /// Returns the new document (unsigned) for the blender to sign and publish.
    pub fn poll_epoch(&mut self, now: u64) -> Option<CrowdDocument> {
        if self.next_epoch_at(now)? > now {
            return None;
        }
        let expired: Vec<MemberId> = self.expired(now).collect();
        for id in expired.iter().chain(self.leaving.iter()) {
            self.members.remove(id);
        }
        self.leaving.clear();
        let timeout = self.config.heartbeat_timeout_ms;
        let pending = std::mem::take(&mut self.pending);
        // Who holds each key now: one pass, not one per admitted member.
        let mut holders: std::collections::HashMap<crate::identity::PublicKey, MemberId> = self
            .members
            .values()
            .map(|e| (e.member.key, e.member.id))
            .collect();
        for (id, entry) in pending {
            if now.saturating_sub(entry.last_seen) > timeout {
                continue;
            }
            // A key may only belong to one member: drop any other holder.
            let key = entry.member.key;
            if let Some(other) = holders.insert(key, id) {
                if other != id {
                    self.members.remove(&other);
                }
            }
            if let Some(old) = self.members.insert(id, entry) {
                // The member's previous key, if it changed, is no longer held by it.
                if old.member.key != key && holders.get(&old.member.key) == Some(&id) {
                    holders.remove(&old.member.key);
                }
            }
            self.admitted_at.insert(id, now);
        }
        self.epoch += 1;
        self.last_epoch_at = Some(now);
        self.forced = false;
        Some(self.document(now))
    }

    /// The current epoch's document, issued at `now` (used to refresh its expiry).
    pub fn document(&self, now: u64) -> CrowdDocument {
        CrowdDocument {
            crowd: self.config.crowd.clone(),
            epoch: self.epoch,
            forward_probability: self.config.forward_probability,
            issued_at: now,
            expires_at: now.saturating_add(self.config.document_lifetime_ms),
            members: self.members().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::PublicKey;
    use std::net::SocketAddr;

    fn config() -> RosterConfig {
        RosterConfig {
            crowd: "default".into(),
            forward_probability: 0.75,
            join_interval_ms: 30_000,
            heartbeat_timeout_ms: 20_000,
            document_lifetime_ms: 600_000,
            rejoin_interval_ms: 0,
        }
    }

    fn member(id: u64) -> Member {
        Member {
            id,
            addr: SocketAddr::from(([127, 0, 0, 2], 7000 + id as u16)),
            key: PublicKey([id as u8; 32]),
            flags: 0,
        }
    }

    #[test]
    fn joins_are_batched_one_epoch_per_interval() {
        let mut r = Roster::new(config());
        assert_eq!(r.poll_epoch(0), None, "nothing to publish yet");
        assert_eq!(r.handle_join(member(1), 0), JoinOutcome::Pending);
        let d1 = r.poll_epoch(0).expect("first epoch at once");
        assert_eq!((d1.epoch, d1.members.len()), (1, 1));
        // Two joins during the interval wait and land together.
        r.handle_join(member(2), 1_000);
        r.handle_join(member(3), 10_000);
        r.handle_heartbeat(1, 10_000);
        assert_eq!(r.poll_epoch(29_999), None);
        assert_eq!(r.next_epoch_at(12_000), Some(30_000));
        r.handle_heartbeat(2, 15_000);
        r.handle_heartbeat(1, 25_000);
        let d2 = r.poll_epoch(30_000).expect("second epoch");
        assert_eq!(d2.epoch, 2);
        assert_eq!(
            d2.members.iter().map(|m| m.id).collect::<Vec<_>>(),
            [1, 2, 3]
        );
    }

    #[test]
    fn silent_members_are_dropped_at_next_epoch() {
        let mut r = Roster::new(config());
        r.handle_join(member(1), 0);
        r.handle_join(member(2), 0);
        r.poll_epoch(0).expect("epoch 1");
        r.handle_heartbeat(1, 19_000);
        assert_eq!(r.next_epoch_at(19_000), None, "nobody silent yet");
        r.handle_heartbeat(1, 35_000);
        let d = r.poll_epoch(35_000).expect("member 2 timed out");
        assert_eq!(d.members.iter().map(|m| m.id).collect::<Vec<_>>(), [1]);
        assert!(
            !r.handle_heartbeat(2, 36_000),
            "dropped member is a stranger"
        );
    }

    #[test]
    fn rejoining_member_is_a_heartbeat_and_leave_is_batched() {
        let mut r = Roster::new(config());
        r.handle_join(member(1), 0);
        r.poll_epoch(0).expect("epoch 1");
        assert_eq!(r.handle_join(member(1), 5_000), JoinOutcome::AlreadyMember);
        assert_eq!(r.next_epoch_at(5_000), None);
        let mut moved = member(1);
        moved.addr = SocketAddr::from(([127, 0, 0, 9], 1));
        assert_eq!(r.handle_join(moved.clone(), 6_000), JoinOutcome::Pending);
        assert!(r.handle_heartbeat(1, 25_000));
        let d = r.poll_epoch(30_000).expect("epoch 2");
        assert_eq!(d.members, vec![moved]);
        r.handle_leave(1);
        assert!(!r.handle_heartbeat(9, 40_000));
        assert_eq!(r.poll_epoch(40_000), None, "join interval still applies");
        assert!(r.poll_epoch(60_000).expect("epoch 3").members.is_empty());
    }

    #[test]
    fn an_account_joins_at_most_once_per_rejoin_interval() {
        let mut r = Roster::new(RosterConfig {
            rejoin_interval_ms: 300_000,
            ..config()
        });
        r.handle_join(member(1), 0);
        r.poll_epoch(0).expect("epoch 1");
        // Silent, dropped, then back with a new address after 2 minutes: too soon.
        r.poll_epoch(60_000).expect("dropped");
        let mut moved = member(1);
        moved.addr = SocketAddr::from(([127, 0, 0, 3], 1));
        assert_eq!(
            r.handle_join(moved.clone(), 120_000),
            JoinOutcome::TooSoon {
                retry_after_ms: 180_000
            }
        );
        assert_eq!(r.next_epoch_at(120_000), None, "nothing pending");
        assert_eq!(r.handle_join(moved, 300_000), JoinOutcome::Pending);
        // An unchanged member re-joining is only a heartbeat, never limited.
        let d = r.poll_epoch(300_000).expect("epoch");
        assert_eq!(
            r.handle_join(d.members[0].clone(), 301_000),
            JoinOutcome::AlreadyMember
        );
    }

    #[test]
    fn documents_carry_config() {
        let mut r = Roster::new(config());
        r.handle_join(member(4), 100);
        let d = r.poll_epoch(100).expect("epoch");
        assert_eq!(d.forward_probability, 0.75);
        assert_eq!(d.expires_at - d.issued_at, 600_000);
        assert!(d.check().is_ok());
        let refreshed = r.document(500);
        assert_eq!((refreshed.epoch, refreshed.issued_at), (1, 500));
    }

    /// The one-pass key check admits exactly what the simple rule (drop every other
    /// holder of an admitted key) admits.
    #[test]
    fn key_collisions_drop_the_older_holder() {
        let mut r = Roster::new(config());
        for id in 1..=4 {
            r.handle_join(member(id), 0);
        }
        r.poll_epoch(0).expect("epoch 1");
        // 5 joins with member 2's key, 3 moves to member 4's key, 1 re-keys to a fresh key.
        let mut five = member(5);
        five.key = member(2).key;
        let mut three = member(3);
        three.key = member(4).key;
        let mut one = member(1);
        one.key = PublicKey([99; 32]);
        for (i, m) in [five, three, one].into_iter().enumerate() {
            for id in 1..=5 {
                r.handle_heartbeat(id, 30_000 + i as u64);
            }
            assert_eq!(r.handle_join(m, 30_000 + i as u64), JoinOutcome::Pending);
        }
        let d = r.poll_epoch(30_000).expect("epoch 2");
        assert!(d.check().is_ok(), "{:?}", d.check());
        assert_eq!(
            d.members.iter().map(|m| m.id).collect::<Vec<_>>(),
            [1, 3, 5]
        );
        assert_eq!(d.member(1).map(|m| m.key), Some(PublicKey([99; 32])));
    }
}
