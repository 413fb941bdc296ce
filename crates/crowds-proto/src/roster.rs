//! The blender's membership rules: who is admitted when, and when an epoch ends.
//!
//! Owns the batching of joins, leaves and drops into scheduled epochs, heartbeat
//! expiry and the content of each new crowd document. Every epoch re-forms every path
//! in the crowd and gives collaborators another sample of each initiator's predecessor,
//! so nobody may choose when one happens: apart from a crowd's very first epoch, epochs
//! are cut only at scheduled times, multiples of the join interval since the unix epoch
//! ([`RosterConfig::scheduled_after`]; midnight UTC for a day), and only if a change is
//! waiting. A member of the current epoch that goes silent keeps its place for a grace
//! period (a laptop that sleeps costs nobody a re-formation); only pending joins expire
//! after the heartbeat timeout. Time is passed in (unix milliseconds); nothing here
//! signs, stores or sends: the blender daemon does that with what [`Roster::poll_epoch`]
//! returns.

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
    /// Epochs are cut only at multiples of this many milliseconds since the unix epoch
    /// (at most one per interval), and only when a change is waiting.
    pub join_interval_ms: u64,
    /// A pending join silent for this long is discarded; a member silent this long is
    /// shown as silent (but stays a member for the grace period).
    pub heartbeat_timeout_ms: u64,
    /// A member of the current epoch silent for longer than this is dropped at the next
    /// scheduled epoch; one that comes back within it is simply still a member.
    pub grace_period_ms: u64,
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
    /// When the epoch clock last looked at the crowd (unix ms), if known: a scheduled
    /// time counts only at the first look at or after it (see [`Roster::next_epoch_at`]).
    pub last_checked_at: Option<u64>,
    /// Members of the current epoch: the member, its last heartbeat, whether it leaves.
    pub members: Vec<(Member, u64, bool)>,
    /// Members waiting for the next epoch, with their last heartbeat.
    pub pending: Vec<(Member, u64)>,
    /// The forward probability the current epoch's document was published with, if
    /// known: when the settings' differs, an epoch is due at the next scheduled time
    /// (see [`RosterConfig::pf_changed`]).
    pub published_pf: Option<f64>,
}

/// A stretch of time in which nobody could hear a crowd's heartbeats: no blender looked
/// after the crowd for longer than the heartbeat timeout (all were down), or the one
/// that did was turning heartbeats away (see [`RosterConfig::silence_pause`]). Silence
/// clocks stand still over it: nobody is dropped for it, and silence before it is not
/// pardoned either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SilencePause {
    /// When the epoch clock last looked at the crowd before the pause (unix ms).
    pub from: u64,
    /// When it looked again (unix ms): now.
    pub to: u64,
}

impl SilencePause {
    /// The pause's length in milliseconds.
    pub fn length(&self) -> u64 {
        self.to.saturating_sub(self.from)
    }

    /// A last heartbeat as it counts after the pause: one heard during the pause counts
    /// as heard at its end; one heard before it is moved on by the pause's length (its
    /// silence before the pause still counts); one heard at or after its end is
    /// unchanged. A store updating many rows at once applies exactly this:
    /// `CASE WHEN last_seen > from THEN to ELSE last_seen + length END` for the rows
    /// with `last_seen < to`.
    pub fn last_seen(&self, seen: u64) -> u64 {
        if seen >= self.to {
            seen
        } else if seen > self.from {
            self.to
        } else {
            seen.saturating_add(self.length())
        }
    }
}

impl RosterConfig {
    /// The first scheduled epoch time strictly after `t`: the next multiple of the join
    /// interval since the unix epoch. The grid is fixed in advance, not counted from the
    /// last epoch or from any request, so no member chooses the moment by joining or
    /// leaving.
    pub fn scheduled_after(&self, t: u64) -> u64 {
        let interval = self.join_interval_ms.max(1);
        (t / interval).saturating_add(1).saturating_mul(interval)
    }

    /// When the next epoch may be cut, if a change is waiting: at once for a crowd's
    /// first epoch (so a new crowd starts), else the first scheduled time after the last
    /// epoch that the clock has not looked past yet. `last_checked_at` is when the clock
    /// last looked: a scheduled time that passed with nothing waiting is gone, so a
    /// change arriving later waits for the next one instead of cutting an epoch at the
    /// moment of its arrival.
    pub fn next_scheduled(
        &self,
        last_epoch_at: Option<u64>,
        last_checked_at: Option<u64>,
        now: u64,
    ) -> u64 {
        match last_epoch_at {
            None => now,
            Some(t) => self.scheduled_after(last_checked_at.map_or(t, |c| c.max(t))),
        }
    }

    /// A member last heard before this time (unix ms) is [`RosterConfig::expired`] at
    /// `now`: a store can select them with `last_seen < expired_before(now)`.
    pub fn expired_before(&self, now: u64) -> u64 {
        now.saturating_sub(self.grace_period_ms)
    }

    /// A member or pending join last heard before this time is [`RosterConfig::silent`]
    /// at `now`.
    pub fn silent_before(&self, now: u64) -> u64 {
        now.saturating_sub(self.heartbeat_timeout_ms)
    }

    /// Whether a member last heard at `last_seen` is dropped at the next scheduled epoch:
    /// silent for longer than the grace period.
    pub fn expired(&self, last_seen: u64, now: u64) -> bool {
        last_seen < self.expired_before(now)
    }

    /// Whether a member last heard at `last_seen` is shown as silent: it missed the
    /// heartbeat timeout (it is not dropped before the grace period has passed).
    pub fn silent(&self, last_seen: u64, now: u64) -> bool {
        last_seen < self.silent_before(now)
    }

    /// Whether a pending join last heard at `last_seen` still counts: a join silent for
    /// the heartbeat timeout is discarded at the next epoch (it never was a member).
    pub fn pending_alive(&self, last_seen: u64, now: u64) -> bool {
        !self.silent(last_seen, now)
    }

    /// Whether a scheduled time for an epoch has come at `now` (see
    /// [`RosterConfig::next_scheduled`]). Only then can an epoch be cut, so a store may
    /// skip loading a crowd's membership at any other time.
    pub fn scheduled_by(
        &self,
        last_epoch_at: Option<u64>,
        last_checked_at: Option<u64>,
        now: u64,
    ) -> bool {
        self.next_scheduled(last_epoch_at, last_checked_at, now) <= now
    }

    /// When a join pending at `now` is expected to be admitted, as the blender tells the
    /// joining jondo: at once when the crowd has published no epoch yet (its first is
    /// cut at once), else at the next scheduled time.
    pub fn admission_expected_at(&self, first_epoch_published: bool, now: u64) -> u64 {
        if first_epoch_published {
            self.scheduled_after(now)
        } else {
            now
        }
    }

    /// Whether the current epoch's document, issued at `issued_at`, is due to be signed
    /// again with a later expiry: half its lifetime has passed (there is an epoch).
    pub fn refresh_due(&self, epoch: u64, issued_at: u64, now: u64) -> bool {
        epoch > 0 && now.saturating_sub(issued_at) > self.document_lifetime_ms / 2
    }

    /// Whether the forward probability changed since the current epoch was published
    /// with `published_pf`: then an epoch with the same members is due at the next
    /// scheduled time. Compared bit for bit, as stored.
    pub fn pf_changed(&self, epoch: u64, published_pf: Option<f64>) -> bool {
        epoch > 0
            && published_pf.is_some_and(|pf| pf.to_bits() != self.forward_probability.to_bits())
    }

    /// The pause in everyone's silence clocks when the epoch clock looks at `now`, last
    /// having looked at `last_checked_at`: if the gap is longer than the heartbeat
    /// timeout (no blender looked after the crowd, so nobody could be heard), or the
    /// blender reports it may have turned heartbeats away at `disrupted_at` since then
    /// (its API connections all taken, or its store failing). A member is never dropped
    /// because the blender was unreachable or refusing.
    pub fn silence_pause(
        &self,
        last_checked_at: u64,
        now: u64,
        disrupted_at: Option<u64>,
    ) -> Option<SilencePause> {
        let gap = now.saturating_sub(last_checked_at);
        let disrupted =
            gap > self.heartbeat_timeout_ms || disrupted_at.is_some_and(|at| at >= last_checked_at);
        (disrupted && gap > 0).then_some(SilencePause {
            from: last_checked_at,
            to: now,
        })
    }
}

/// Whether a pending join of `pending` gives way to the join of `joining`: a key belongs
/// to one member, so an older pending join holding the same key under another account
/// is withdrawn (the document check would otherwise reject the whole epoch).
pub fn displaces(joining: &Member, pending: &Member) -> bool {
    pending.key == joining.key && pending.id != joining.id
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
    /// When [`Roster::poll_epoch`] last looked (see [`RosterConfig::next_scheduled`]).
    last_checked_at: Option<u64>,
    admitted_at: BTreeMap<MemberId, u64>,
    forced: bool,
}

impl Roster {
    /// An empty crowd that has published no epoch yet.
    pub fn new(config: RosterConfig) -> Self {
        Self::resume(config, 0, Vec::new(), 0)
    }

    /// A crowd restored from storage: the last epoch and its members (all considered
    /// seen at `now`, so members get a whole grace period to come back; the epoch is
    /// taken as cut at `now`, so the next one waits for its scheduled time).
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
            last_epoch_at: (epoch > 0).then_some(now),
            last_checked_at: None,
            admitted_at: BTreeMap::new(),
            forced: false,
        }
    }

    /// A crowd restored from a shared store between two epochs (replicated blenders):
    /// members of the current epoch with their last heartbeat and whether they asked to
    /// leave, members waiting for the next epoch, and when the last epoch was cut.
    pub fn restore(config: RosterConfig, state: RosterState) -> Self {
        let entry = |(member, last_seen): (Member, u64)| (member.id, Entry { member, last_seen });
        let forced = config.pf_changed(state.epoch, state.published_pf);
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
            last_checked_at: state.last_checked_at,
            admitted_at: BTreeMap::new(),
            forced,
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
        self.pending.retain(|_, e| !displaces(&member, &e.member));
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

    /// Stops every silence clock over `pause` (see [`SilencePause::last_seen`]).
    pub fn pause_silence(&mut self, pause: SilencePause) {
        for entry in self.members.values_mut().chain(self.pending.values_mut()) {
            entry.last_seen = pause.last_seen(entry.last_seen);
        }
    }

    /// A member leaves gracefully; it is dropped at the next epoch.
    pub fn handle_leave(&mut self, id: MemberId) {
        self.pending.remove(&id);
        if self.members.contains_key(&id) && !self.leaving.contains(&id) {
            self.leaving.push(id);
        }
    }

    /// Members of the current epoch silent for longer than the grace period: they are
    /// dropped at the next scheduled epoch.
    pub fn expired(&self, now: u64) -> impl Iterator<Item = MemberId> + '_ {
        self.members
            .values()
            .filter(move |e| self.config.expired(e.last_seen, now))
            .map(|e| e.member.id)
    }

    /// Members of the current epoch that missed the heartbeat timeout (shown as silent;
    /// still members until the grace period has passed).
    pub fn silent(&self, now: u64) -> impl Iterator<Item = MemberId> + '_ {
        self.members
            .values()
            .filter(move |e| self.config.silent(e.last_seen, now))
            .map(|e| e.member.id)
    }

    /// Asks for a new epoch with the same members at the next scheduled time (the
    /// crowd's settings changed, e.g. its pf).
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
            .any(|e| self.config.pending_alive(e.last_seen, now));
        pending_alive || !self.leaving.is_empty() || self.expired(now).next().is_some()
    }

    /// When [`Roster::poll_epoch`] may next produce an epoch, if a change is waiting:
    /// at once for the crowd's first epoch, else the next scheduled time (see
    /// [`RosterConfig::next_scheduled`]); it may lie in the past, when the clock did not
    /// look at the crowd since that time.
    pub fn next_epoch_at(&self, now: u64) -> Option<u64> {
        if !self.change_waiting(now) {
            return None;
        }
        Some(
            self.config
                .next_scheduled(self.last_epoch_at, self.last_checked_at, now),
        )
    }

    /// Cuts a new epoch if a change is waiting and its scheduled time has come.
    /// Returns the new document (unsigned) for the blender to sign and publish. Every
    /// call counts as the clock looking at the crowd: a scheduled time passed by a call
    /// that found nothing waiting is not used again.
    pub fn poll_epoch(&mut self, now: u64) -> Option<CrowdDocument> {
        let due = self.next_epoch_at(now).is_some_and(|at| at <= now);
        self.last_checked_at = Some(self.last_checked_at.map_or(now, |c| c.max(now)));
        if !due {
            return None;
        }
        let expired: Vec<MemberId> = self.expired(now).collect();
        for id in expired.iter().chain(self.leaving.iter()) {
            self.members.remove(id);
        }
        self.leaving.clear();
        let pending = std::mem::take(&mut self.pending);
        // Who holds each key now: one pass, not one per admitted member.
        let mut holders: std::collections::HashMap<crate::identity::PublicKey, MemberId> = self
            .members
            .values()
            .map(|e| (e.member.key, e.member.id))
            .collect();
        for (id, entry) in pending {
            if !self.config.pending_alive(entry.last_seen, now) {
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

    /// Epochs on a 30 s grid; pending joins expire after 20 s of silence, members after
    /// 100 s.
    fn config() -> RosterConfig {
        RosterConfig {
            crowd: "default".into(),
            forward_probability: 0.75,
            join_interval_ms: 30_000,
            heartbeat_timeout_ms: 20_000,
            grace_period_ms: 100_000,
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

    fn ids(d: &CrowdDocument) -> Vec<MemberId> {
        d.members.iter().map(|m| m.id).collect()
    }

    /// A roster whose first epoch (at time 0) admitted members `1..=n`.
    fn crowd_of(n: u64) -> Roster {
        let mut r = Roster::new(config());
        for id in 1..=n {
            r.handle_join(member(id), 0);
        }
        r.poll_epoch(0).expect("the first epoch is cut at once");
        r
    }

    #[test]
    fn scheduled_times_are_a_fixed_grid() {
        let c = config();
        assert_eq!(c.scheduled_after(0), 30_000);
        assert_eq!(c.scheduled_after(29_999), 30_000);
        assert_eq!(c.scheduled_after(30_000), 60_000, "strictly after");
        // A day's interval: midnight UTC, whenever the last epoch was.
        let day = RosterConfig {
            join_interval_ms: 86_400_000,
            ..config()
        };
        let noon_2024_06_01 = 1_717_243_200_000;
        assert_eq!(day.scheduled_after(noon_2024_06_01), 1_717_286_400_000);
        assert_eq!(day.scheduled_after(noon_2024_06_01) % 86_400_000, 0);
        // Before the first epoch there is no schedule.
        assert_eq!(c.next_scheduled(None, Some(5), 17), 17);
        assert_eq!(c.admission_expected_at(false, 17), 17);
        assert_eq!(c.admission_expected_at(true, 17), 30_000);
        assert!(c.scheduled_by(Some(1_000), Some(29_000), 30_000));
        assert!(!c.scheduled_by(Some(1_000), Some(30_000), 40_000));
        // A scheduled time the clock looked past is gone.
        assert_eq!(c.next_scheduled(Some(1_000), Some(31_000), 40_000), 60_000);
        assert_eq!(c.next_scheduled(Some(1_000), Some(29_000), 40_000), 30_000);
    }

    /// The cut-off times a store selects with say exactly what the rules say.
    #[test]
    fn silence_cutoffs_match_the_rules() {
        let c = config();
        let times: [u64; 12] = [
            0, 1, 19_999, 20_000, 20_001, 79_999, 80_000, 99_999, 100_000, 100_001, 150_000,
            250_000,
        ];
        for now in times {
            for seen in times {
                let silence = now.saturating_sub(seen);
                assert_eq!(c.expired(seen, now), silence > 100_000, "{seen} {now}");
                assert_eq!(c.silent(seen, now), silence > 20_000, "{seen} {now}");
                assert_eq!(c.pending_alive(seen, now), silence <= 20_000);
            }
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
        assert_eq!(ids(&d2), [1, 2, 3]);
    }

    /// A join arriving after a scheduled time passed with nothing waiting waits for the
    /// next scheduled time: it cannot cut an epoch at the moment of its arrival.
    #[test]
    fn a_join_waits_for_the_scheduled_time() {
        let mut r = crowd_of(1);
        r.handle_heartbeat(1, 29_000);
        assert_eq!(r.poll_epoch(30_000), None, "nothing waiting at 30 s");
        r.handle_heartbeat(1, 40_000);
        assert_eq!(r.handle_join(member(2), 41_000), JoinOutcome::Pending);
        assert_eq!(r.next_epoch_at(41_000), Some(60_000));
        for now in [41_000, 45_000, 59_999] {
            r.handle_heartbeat(2, now);
            assert_eq!(r.poll_epoch(now), None, "no epoch at {now}");
        }
        r.handle_heartbeat(1, 59_999);
        let d = r.poll_epoch(60_000).expect("the scheduled epoch");
        assert_eq!((d.epoch, ids(&d)), (2, vec![1, 2]));
        assert_eq!(d.issued_at, 60_000);
    }

    /// A member that misses heartbeats for less than the grace period stays a member:
    /// no epoch, nothing changes, even across scheduled times.
    #[test]
    fn a_member_silent_within_the_grace_period_is_kept_and_cuts_no_epoch() {
        let mut r = crowd_of(2);
        for now in (0..=90_000).step_by(10_000) {
            r.handle_heartbeat(1, now);
            assert_eq!(r.next_epoch_at(now), None, "member 2 silent for {now} ms");
            assert_eq!(r.poll_epoch(now), None);
        }
        assert_eq!(r.silent(90_000).collect::<Vec<_>>(), [2], "shown as silent");
        assert_eq!(r.expired(90_000).count(), 0, "but not dropped");
        // Back after 95 s: simply still a member.
        assert!(r.handle_heartbeat(2, 95_000));
        assert_eq!(r.handle_join(member(2), 95_000), JoinOutcome::AlreadyMember);
        r.handle_heartbeat(1, 95_000);
        assert_eq!(r.silent(95_000).count(), 0);
        assert_eq!(r.next_epoch_at(120_000), None);
        assert_eq!(r.poll_epoch(120_000), None);
        assert_eq!((r.epoch(), r.members().count()), (1, 2));
    }

    /// Silent beyond the grace period: dropped at the next scheduled time, not earlier.
    #[test]
    fn a_member_silent_beyond_the_grace_period_is_dropped_at_the_next_scheduled_time() {
        let mut r = crowd_of(2);
        for now in [30_000, 60_000, 90_000] {
            r.handle_heartbeat(1, now);
            assert_eq!(r.poll_epoch(now), None);
        }
        r.handle_heartbeat(1, 100_500);
        assert_eq!(r.expired(100_500).collect::<Vec<_>>(), [2]);
        assert_eq!(r.next_epoch_at(100_500), Some(120_000));
        assert_eq!(r.poll_epoch(100_500), None, "not before its scheduled time");
        r.handle_heartbeat(1, 119_000);
        let d = r.poll_epoch(120_000).expect("member 2 is dropped");
        assert_eq!((d.epoch, ids(&d)), (2, vec![1]));
        assert!(
            !r.handle_heartbeat(2, 121_000),
            "dropped member is a stranger"
        );
    }

    #[test]
    fn rejoining_member_is_a_heartbeat_and_leave_is_batched() {
        let mut r = crowd_of(1);
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
        assert_eq!(r.poll_epoch(40_000), None, "the schedule still applies");
        assert!(r.poll_epoch(60_000).expect("epoch 3").members.is_empty());
    }

    /// Leaving and joining again, in any order and at any moment, never cuts an epoch
    /// off the schedule: at most it puts a change into the next scheduled epoch.
    #[test]
    fn leave_and_rejoin_cannot_cut_an_extra_epoch() {
        let mut r = crowd_of(2);
        let mut epochs = vec![(0, 1)];
        for now in (1_000..=150_000).step_by(1_000) {
            r.handle_heartbeat(1, now);
            // Member 2 leaves and comes back (same key, same address) every few seconds,
            // and once with a new address.
            match now % 7_000 {
                0 => r.handle_leave(2),
                3_000 => {
                    let mut m = member(2);
                    if now == 73_000 {
                        m.addr = SocketAddr::from(([127, 0, 0, 99], 9));
                    }
                    r.handle_join(m, now);
                }
                _ => {
                    r.handle_heartbeat(2, now);
                }
            }
            if let Some(d) = r.poll_epoch(now) {
                epochs.push((now, d.epoch));
            }
        }
        assert!(epochs.len() > 1, "some change landed: {epochs:?}");
        for (at, epoch) in &epochs[1..] {
            assert_eq!(at % 30_000, 0, "epoch {epoch} cut off the schedule at {at}");
        }
    }

    #[test]
    fn an_account_joins_at_most_once_per_rejoin_interval() {
        let mut r = Roster::new(RosterConfig {
            rejoin_interval_ms: 300_000,
            ..config()
        });
        r.handle_join(member(1), 0);
        r.poll_epoch(0).expect("epoch 1");
        // Silent beyond the grace period, dropped at 120 s, then back with a new address
        // at 150 s: too soon.
        assert_eq!(r.poll_epoch(90_000), None, "within the grace period");
        r.poll_epoch(120_000).expect("dropped");
        let mut moved = member(1);
        moved.addr = SocketAddr::from(([127, 0, 0, 3], 1));
        assert_eq!(
            r.handle_join(moved.clone(), 150_000),
            JoinOutcome::TooSoon {
                retry_after_ms: 150_000
            }
        );
        assert_eq!(r.next_epoch_at(150_000), None, "nothing pending");
        assert_eq!(r.handle_join(moved, 300_000), JoinOutcome::Pending);
        // An unchanged member re-joining is only a heartbeat, never limited.
        let d = r.poll_epoch(300_000).expect("epoch");
        assert_eq!(
            r.handle_join(d.members[0].clone(), 301_000),
            JoinOutcome::AlreadyMember
        );
    }

    /// A pending join still expires after the heartbeat timeout, not the grace period.
    #[test]
    fn a_silent_pending_join_is_discarded() {
        let mut r = crowd_of(1);
        r.handle_join(member(2), 1_000);
        r.handle_heartbeat(1, 25_000);
        assert_eq!(
            r.next_epoch_at(25_000),
            None,
            "the join went silent at 21 s"
        );
        assert_eq!(r.poll_epoch(30_000), None);
        assert_eq!(r.pending_count(), 1, "kept until an epoch discards it");
        // Another join cuts the next epoch; the silent one is not admitted.
        r.handle_join(member(3), 40_000);
        r.handle_heartbeat(1, 59_000);
        let d = r.poll_epoch(60_000).expect("epoch 2");
        assert_eq!(ids(&d), [1, 3]);
        assert_eq!(r.pending_count(), 0);
    }

    /// A roster resumed from storage schedules its next epoch; it does not cut one at
    /// once, and its members get a whole grace period.
    #[test]
    fn a_resumed_roster_keeps_the_schedule() {
        let mut r = Roster::resume(config(), 7, vec![member(1), member(2)], 45_000);
        r.handle_join(member(3), 45_000);
        assert_eq!(r.next_epoch_at(45_000), Some(60_000));
        assert_eq!(r.poll_epoch(45_000), None);
        for id in 1..=3 {
            r.handle_heartbeat(id, 59_000);
        }
        let d = r.poll_epoch(60_000).expect("epoch 8");
        assert_eq!((d.epoch, ids(&d)), (8, vec![1, 2, 3]));
        assert_eq!(r.poll_epoch(140_000), None, "members 1, 2 within grace");
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
        assert_eq!(ids(&d), [1, 3, 5]);
        assert_eq!(d.member(1).map(|m| m.key), Some(PublicKey([99; 32])));
    }

    /// Silence clocks stand still over a pause: heard during it counts as heard at its
    /// end, silence before it still counts, later heartbeats are untouched.
    #[test]
    fn a_pause_stops_silence_clocks_without_resetting_them() {
        let c = config();
        // No look for longer than the heartbeat timeout, or a reported disruption since
        // the last look: a pause. Otherwise none.
        assert_eq!(c.silence_pause(10_000, 25_000, None), None);
        assert_eq!(
            c.silence_pause(10_000, 40_000, None),
            Some(SilencePause {
                from: 10_000,
                to: 40_000
            })
        );
        assert_eq!(
            c.silence_pause(10_000, 15_000, Some(9_999)),
            None,
            "old news"
        );
        assert!(c.silence_pause(10_000, 15_000, Some(10_000)).is_some());
        assert_eq!(
            c.silence_pause(10_000, 10_000, Some(10_000)),
            None,
            "no gap"
        );
        let pause = SilencePause {
            from: 50_000,
            to: 80_000,
        };
        assert_eq!(pause.length(), 30_000);
        for (seen, counts_as) in [
            (0, 30_000),
            (50_000, 80_000),
            (50_001, 80_000),
            (79_999, 80_000),
            (80_000, 80_000),
            (90_000, 90_000),
        ] {
            assert_eq!(pause.last_seen(seen), counts_as, "heard at {seen}");
        }
    }

    /// An outage of 100 s: a member silent since 0 is not dropped at once but a grace
    /// period after its silence, outage left out, has passed.
    #[test]
    fn a_member_is_never_dropped_for_an_outage() {
        let mut r = crowd_of(1);
        for now in [10_000, 20_000, 30_000, 40_000, 50_000, 60_000] {
            assert_eq!(r.poll_epoch(now), None);
        }
        // Nobody looked from 60 s to 160 s.
        let pause = r
            .config()
            .silence_pause(60_000, 160_000, None)
            .expect("a pause");
        r.pause_silence(pause);
        assert_eq!(r.expired(160_000).count(), 0, "60 s of silence so far");
        assert_eq!(r.poll_epoch(180_000), None);
        assert_eq!(r.next_epoch_at(200_001), Some(210_000));
        assert!(r.poll_epoch(210_000).expect("dropped").members.is_empty());
    }

    #[test]
    fn documents_are_refreshed_at_half_their_lifetime() {
        let c = config();
        assert!(!c.refresh_due(0, 0, 1_000_000), "no epoch yet");
        assert!(!c.refresh_due(1, 0, 300_000));
        assert!(c.refresh_due(1, 0, 300_001));
    }

    /// A restored roster whose document was published with another pf cuts an epoch
    /// with the same members at the next scheduled time.
    #[test]
    fn a_changed_pf_forces_a_scheduled_epoch() {
        let state = |pf: f64| RosterState {
            epoch: 1,
            last_epoch_at: Some(0),
            last_checked_at: Some(10_000),
            members: vec![(member(1), 10_000, false)],
            pending: Vec::new(),
            published_pf: Some(pf),
        };
        let mut same = Roster::restore(config(), state(0.75));
        assert_eq!(same.next_epoch_at(10_000), None);
        assert_eq!(same.poll_epoch(30_000), None);
        let mut changed = Roster::restore(config(), state(0.8));
        assert!(config().pf_changed(1, Some(0.8)));
        assert!(!config().pf_changed(0, Some(0.8)), "before the first epoch");
        assert_eq!(changed.next_epoch_at(10_000), Some(30_000));
        assert_eq!(changed.poll_epoch(29_999), None);
        let d = changed.poll_epoch(30_000).expect("forced epoch");
        assert_eq!(
            (d.epoch, ids(&d), d.forward_probability),
            (2, vec![1], 0.75)
        );
    }

    #[test]
    fn a_pending_key_gives_way_only_to_another_account() {
        let mut other = member(2);
        other.key = member(1).key;
        assert!(displaces(&member(1), &other));
        assert!(!displaces(&member(1), &member(1)), "the same account");
        assert!(!displaces(&member(1), &member(3)), "another key");
    }
}
