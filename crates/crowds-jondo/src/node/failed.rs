//! Members paused as successors after their link failed at this jondo.
//!
//! Owns the pause list and its rule: a member whose link failed is not chosen again
//! until [`FAILED_MEMBER_PAUSE`] has passed or a new epoch clears the list, unless every
//! forwarder is paused. Time comes in as `now_ms` (unix ms); it never reads the clock,
//! so the rule is tested without sleeping.

use super::FAILED_MEMBER_PAUSE;
use crowds_proto::MemberId;
use std::borrow::Cow;
use std::collections::HashMap;

/// Members whose link failed here, each with the time (unix ms) its pause ends.
#[derive(Debug, Default)]
pub(super) struct FailedMembers {
    until: HashMap<MemberId, u64>,
}

impl FailedMembers {
    /// Pauses `member` from `now_ms` on, for [`FAILED_MEMBER_PAUSE`].
    pub(super) fn pause(&mut self, member: MemberId, now_ms: u64) {
        let until = now_ms.saturating_add(FAILED_MEMBER_PAUSE.as_millis() as u64);
        self.until.insert(member, until);
    }

    /// Forgets every pause (a new epoch is a fresh start).
    pub(super) fn clear(&mut self) {
        self.until.clear();
    }

    /// The members that may be chosen as successors at `now_ms`: `forwarders` without
    /// those still paused (borrowed as they are when none is). Expired pauses are dropped.
    /// When every forwarder is paused, all of them: better to try them again than to
    /// refuse the user.
    pub(super) fn usable<'a>(
        &mut self,
        forwarders: &'a [MemberId],
        now_ms: u64,
    ) -> Cow<'a, [MemberId]> {
        if self.until.is_empty() {
            return Cow::Borrowed(forwarders);
        }
        self.until.retain(|_, until| *until > now_ms);
        let usable: Vec<MemberId> = forwarders
            .iter()
            .copied()
            .filter(|m| !self.until.contains_key(m))
            .collect();
        if usable.is_empty() {
            Cow::Borrowed(forwarders)
        } else {
            Cow::Owned(usable)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAUSE_MS: u64 = FAILED_MEMBER_PAUSE.as_millis() as u64;

    #[test]
    fn a_failed_member_is_paused_until_its_time_is_up() {
        let mut failed = FailedMembers::default();
        let forwarders = [1, 2, 3];
        assert_eq!(failed.usable(&forwarders, 1_000)[..], [1, 2, 3]);
        failed.pause(2, 1_000);
        assert_eq!(failed.usable(&forwarders, 1_000)[..], [1, 3]);
        assert_eq!(failed.usable(&forwarders, 1_000 + PAUSE_MS - 1)[..], [1, 3]);
        assert_eq!(failed.usable(&forwarders, 1_000 + PAUSE_MS)[..], [1, 2, 3]);
        assert!(failed.until.is_empty(), "the expired pause is dropped");
    }

    #[test]
    fn when_every_forwarder_failed_all_are_tried_again() {
        let mut failed = FailedMembers::default();
        failed.pause(1, 0);
        failed.pause(2, 0);
        assert_eq!(failed.usable(&[1, 2], 10)[..], [1, 2]);
        failed.clear();
        assert!(matches!(failed.usable(&[1, 2], 10), Cow::Borrowed(_)));
    }
}
