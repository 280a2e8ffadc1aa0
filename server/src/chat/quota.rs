//! Invitation quotas (issue 11 item 9): how many invitations one inviter may have waiting,
//! in all and for one invitee, and how many it may send a minute; and how many one invitee
//! may have waiting from every inviter together.
//!
//! The inviter's quotas count only what it produced itself, so their refusals tell it nothing
//! about other users. The invitee's (`NETAPI_CHAT_MAX_PENDING_INVITATIONS_RECEIVED`) counts
//! every inviter's, deliberately: the inviter quotas bound what one inviter sends, and a token
//! acting for many inviters flooded one user past its backlog cap inside all of them. It is
//! the one refusal that tells an inviter something of another user (that the invitee has that
//! many waiting), and it is set high (100) so that one user filling it blocks only invitations
//! to that invitee, beyond what anyone answers. Withdrawing an invitation frees a pending
//! slot but not the rate: the rate counts invitations when they are sent, so a
//! cancel-and-re-invite loop still spends it.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// The window of the invitation rate.
pub const RATE_WINDOW: Duration = Duration::from_secs(60);

/// The quotas (from `NETAPI_CHAT_MAX_PENDING_INVITATIONS`, `…_PER_INVITEE`,
/// `NETAPI_CHAT_INVITATION_RATE` and `NETAPI_CHAT_MAX_PENDING_INVITATIONS_RECEIVED`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvitationLimits {
    /// Unanswered invitations one inviter may have waiting, over all invitees.
    pub per_inviter: usize,
    /// Unanswered invitations one inviter may have waiting for one invitee (in as many
    /// sessions).
    pub to_one_invitee: usize,
    /// Invitations one inviter may send per [`RATE_WINDOW`] (0 = no rate).
    pub per_minute: usize,
    /// Unanswered invitations one invitee may have waiting, from every inviter together: the
    /// inviter quotas bound what one inviter sends, not what one user receives, and a token
    /// acting for many inviters flooded one user's subscription past its backlog cap (every
    /// invitation repeats the roster), disabling it, inside every other limit.
    pub received: usize,
}

impl Default for InvitationLimits {
    fn default() -> Self {
        InvitationLimits {
            per_inviter: 1000,
            to_one_invitee: 5,
            per_minute: 300,
            received: 100,
        }
    }
}

/// What an inviter has outstanding when it asks to send more invitations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outstanding {
    /// Its unanswered invitations, over all invitees.
    pub pending: usize,
    /// Its unanswered invitations to the invitee (of those asked for now) it has invited most.
    pub pending_to_one: usize,
    /// Invitations it sent within the last [`RATE_WINDOW`].
    pub sent_recently: usize,
    /// The unanswered invitations, from anyone, of the invitee (of those asked for now) that
    /// has the most waiting.
    pub waiting_for_one: usize,
}

/// Why more invitations are refused: the inviter's own limits, and the invitee's cap on what waits
/// for it from everyone (which tells the inviter only that the invitee has that many unanswered).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Too many unanswered invitations from this inviter.
    Pending { limit: usize },
    /// Too many unanswered invitations from this inviter to one invitee.
    PendingToOne { limit: usize },
    /// Too many invitations sent within the window.
    Rate { limit: usize },
    /// An invitee has too many unanswered invitations waiting, from everyone.
    WaitingForOne { limit: usize },
}

/// The quota rule: may an inviter with `out` outstanding send `new` more invitations (each to
/// a different invitee)?
pub fn decide(out: Outstanding, new: usize, limits: InvitationLimits) -> Result<(), Refusal> {
    if limits.per_minute > 0 && out.sent_recently + new > limits.per_minute {
        return Err(Refusal::Rate {
            limit: limits.per_minute,
        });
    }
    if out.pending + new > limits.per_inviter {
        return Err(Refusal::Pending {
            limit: limits.per_inviter,
        });
    }
    if new > 0 && out.pending_to_one + 1 > limits.to_one_invitee {
        return Err(Refusal::PendingToOne {
            limit: limits.to_one_invitee,
        });
    }
    if new > 0 && out.waiting_for_one + 1 > limits.received {
        return Err(Refusal::WaitingForOne {
            limit: limits.received,
        });
    }
    Ok(())
}

/// When each inviter sent its recent invitations (in memory only: after a restart the window
/// starts empty, which at worst grants one more window's worth).
pub struct SendLog {
    sent: HashMap<String, VecDeque<Instant>>,
    /// Inviters tracked past which the next record drops the idle ones: twice those left by
    /// the last prune, at least [`PRUNE_ABOVE`], so that a log of many active inviters is
    /// not walked again at every invitation (amortized, as `rate::RateLimiter`'s sweep).
    prune_at: usize,
}

impl Default for SendLog {
    fn default() -> Self {
        SendLog {
            sent: HashMap::new(),
            prune_at: PRUNE_ABOVE,
        }
    }
}

/// Inviters tracked before idle ones are first dropped on the next record.
const PRUNE_ABOVE: usize = 4096;

impl SendLog {
    /// Invitations `inviter` sent within the window before `now`, and how long until the
    /// oldest of them leaves it.
    pub fn recent(&mut self, inviter: &str, now: Instant) -> (usize, Duration) {
        let Some(q) = self.sent.get_mut(inviter) else {
            return (0, Duration::ZERO);
        };
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) >= RATE_WINDOW)
        {
            q.pop_front();
        }
        let wait = q
            .front()
            .map_or(Duration::ZERO, |t| RATE_WINDOW - now.duration_since(*t));
        (q.len(), wait)
    }

    /// Counts `n` invitations sent by `inviter` at `now`.
    pub fn record(&mut self, inviter: &str, n: usize, now: Instant) {
        if self.sent.len() > self.prune_at {
            self.sent.retain(|_, q| {
                q.back()
                    .is_some_and(|t| now.duration_since(*t) < RATE_WINDOW)
            });
            self.prune_at = PRUNE_ABOVE.max(self.sent.len().saturating_mul(2));
        }
        let q = self.sent.entry(inviter.to_owned()).or_default();
        q.extend(std::iter::repeat_n(now, n));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: InvitationLimits = InvitationLimits {
        per_inviter: 5,
        to_one_invitee: 2,
        per_minute: 10,
        received: 3,
    };

    fn out(pending: usize, pending_to_one: usize, sent_recently: usize) -> Outstanding {
        Outstanding {
            pending,
            pending_to_one,
            sent_recently,
            waiting_for_one: 0,
        }
    }

    #[test]
    fn within_every_quota() {
        assert_eq!(decide(out(0, 0, 0), 1, L), Ok(()));
        assert_eq!(decide(out(4, 1, 9), 1, L), Ok(()));
        assert_eq!(decide(out(0, 0, 0), 5, L), Ok(()));
    }

    #[test]
    fn per_inviter_counts_the_whole_request() {
        assert_eq!(
            decide(out(5, 0, 0), 1, L),
            Err(Refusal::Pending { limit: 5 })
        );
        assert_eq!(
            decide(out(3, 0, 0), 3, L),
            Err(Refusal::Pending { limit: 5 })
        );
    }

    #[test]
    fn to_one_invitee() {
        assert_eq!(
            decide(out(2, 2, 2), 1, L),
            Err(Refusal::PendingToOne { limit: 2 })
        );
    }

    /// An invitee with `per_invitee` invitations waiting, from anyone, takes no more.
    #[test]
    fn per_invitee_from_everyone() {
        let full = Outstanding {
            waiting_for_one: 3,
            ..out(0, 0, 0)
        };
        assert_eq!(decide(full, 1, L), Err(Refusal::WaitingForOne { limit: 3 }));
        let room = Outstanding {
            waiting_for_one: 2,
            ..out(0, 0, 0)
        };
        assert_eq!(decide(room, 1, L), Ok(()));
    }

    #[test]
    fn rate_counts_sends_and_zero_turns_it_off() {
        assert_eq!(
            decide(out(0, 0, 10), 1, L),
            Err(Refusal::Rate { limit: 10 })
        );
        assert_eq!(decide(out(0, 0, 8), 3, L), Err(Refusal::Rate { limit: 10 }));
        let no_rate = InvitationLimits { per_minute: 0, ..L };
        assert_eq!(decide(out(0, 0, 1000), 1, no_rate), Ok(()));
    }

    #[test]
    fn send_log_window() {
        let mut log = SendLog::default();
        let t0 = Instant::now();
        log.record("a", 3, t0);
        assert_eq!(log.recent("a", t0).0, 3);
        assert_eq!(log.recent("b", t0), (0, Duration::ZERO));
        let later = t0 + Duration::from_secs(20);
        log.record("a", 1, later);
        let (n, wait) = log.recent("a", later);
        assert_eq!((n, wait), (4, Duration::from_secs(40)));
        // The first three leave the window after 60 s; the one sent later stays.
        assert_eq!(log.recent("a", t0 + RATE_WINDOW).0, 1);
        assert_eq!(log.recent("a", later + RATE_WINDOW).0, 0);
    }

    /// Idle inviters are dropped once the log passes its mark, which then doubles what the
    /// prune kept: many active inviters are walked once per doubling, not per invitation.
    #[test]
    fn send_log_prunes_idle_inviters_amortized() {
        let mut log = SendLog::default();
        let t0 = Instant::now();
        for i in 0..=PRUNE_ABOVE {
            log.record(&format!("idle{i}"), 1, t0);
        }
        let later = t0 + RATE_WINDOW;
        for i in 0..=PRUNE_ABOVE {
            log.record(&format!("active{i}"), 1, later);
        }
        // The first record past the mark dropped every idle inviter.
        assert_eq!(log.sent.len(), PRUNE_ABOVE + 1);
        assert!(log.sent.keys().all(|k| k.starts_with("active")));
        assert_eq!(log.prune_at, PRUNE_ABOVE);
        log.record("one-more", 1, later);
        // All active: kept, and the next prune waits for twice as many.
        assert_eq!(log.sent.len(), PRUNE_ABOVE + 2);
        assert_eq!(log.prune_at, 2 * (PRUNE_ABOVE + 1));
        assert_eq!(log.recent("active0", later).0, 1);
    }
}
