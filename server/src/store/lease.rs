//! The lease a shared engine's server answers under: it serves requests only while the
//! database confirmed, recently, that this server's session (and with it the instance lock,
//! `postgres::INSTANCE_LOCK`) is alive.
//!
//! Why: the core answers most reads from its memory, which describes the database only while
//! this server is the one writing it. A leader whose database link goes silent (a network
//! partition: nothing arrives, nothing closes) cannot tell that the database ended its
//! session and another instance took over; without a lease it went on answering from its
//! memory until its wait on the database ran out (~12 s): a session the new leader had ended
//! read back open, one it had made was `404`. With the lease, a server that heard nothing
//! from its database for [`LEASE`] answers `503` (as for an unreachable database), says it is
//! not ready and that it does not lead, until the database answers again.
//!
//! A confirmation is the time a round trip on the store's connection was *sent*, not when its
//! answer came: the session was alive when the database ran it, which is after the sending,
//! so a late answer never stretches the lease past what the database saw.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long one confirmation lets a server answer. Heartbeats go every `store::HEARTBEAT`
/// (0.5 s) when nothing else confirms, so a database has 1.5 s to answer one before requests
/// get `503`; a new leader of a cluster waits this long after taking the lock before it
/// answers (`cluster::start`), so a deposed leader has stopped answering from its memory
/// before the new one answers anything. Shorter would turn every slow moment of the database
/// into `503`s; longer delays every takeover as much.
pub const LEASE: Duration = Duration::from_secs(2);

/// The rule: a server holds its lease while its last confirmation is younger than [`LEASE`]
/// (`None`: never confirmed).
pub fn holds(unconfirmed_for: Option<Duration>) -> bool {
    unconfirmed_for.is_some_and(|age| age < LEASE)
}

/// The last confirmation of one backend: written by the store thread, read by every request.
#[derive(Debug)]
pub struct Lease {
    /// What the confirmations are counted from.
    base: Instant,
    /// Milliseconds from `base` to the last confirmation, rounded down, plus one (0: none yet).
    confirmed: AtomicU64,
}

impl Default for Lease {
    fn default() -> Lease {
        Lease::new()
    }
}

impl Lease {
    /// A lease never confirmed (it does not hold until the first confirmation).
    pub fn new() -> Lease {
        Lease {
            base: Instant::now(),
            confirmed: AtomicU64::new(0),
        }
    }

    /// The database answered a round trip sent at `sent`. An older confirmation arriving
    /// late changes nothing.
    pub fn confirm(&self, sent: Instant) {
        let ms = sent.saturating_duration_since(self.base).as_millis();
        let ms = u64::try_from(ms).unwrap_or(u64::MAX - 1) + 1;
        self.confirmed.fetch_max(ms, Ordering::SeqCst);
    }

    /// How long ago (at `now`) the last confirmed round trip was sent; `None` if none was.
    pub fn unconfirmed_for(&self, now: Instant) -> Option<Duration> {
        let ms = self.confirmed.load(Ordering::SeqCst).checked_sub(1)?;
        let at = self.base.checked_add(Duration::from_millis(ms))?;
        Some(now.saturating_duration_since(at))
    }

    /// Whether the lease holds at `now` ([`holds`]).
    pub fn holds_at(&self, now: Instant) -> bool {
        holds(self.unconfirmed_for(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_holds_while_its_last_confirmation_is_younger_than_the_bound() {
        let ms = Duration::from_millis;
        let cases = [
            (None, false, "never confirmed"),
            (Some(ms(0)), true, "just confirmed"),
            (Some(ms(1_999)), true, "just under the bound"),
            (Some(LEASE), false, "at the bound"),
            (Some(ms(12_000)), false, "a silent link's whole wait"),
        ];
        for (age, expected, case) in cases {
            assert_eq!(holds(age), expected, "{case}");
        }
    }

    #[test]
    fn a_confirmation_counts_from_when_its_round_trip_was_sent_and_never_goes_back() {
        let lease = Lease::new();
        let t0 = Instant::now();
        assert_eq!(lease.unconfirmed_for(t0), None);
        assert!(!lease.holds_at(t0));
        let sent = t0 + Duration::from_secs(1);
        lease.confirm(sent);
        let age = lease.unconfirmed_for(sent + Duration::from_millis(1_500));
        // Rounded down to the millisecond: never younger than it is.
        assert!(
            age.is_some_and(
                |a| a >= Duration::from_millis(1_500) && a < Duration::from_millis(1_502)
            ),
            "{age:?}"
        );
        assert!(lease.holds_at(sent + Duration::from_millis(1_500)));
        assert!(!lease.holds_at(sent + LEASE + Duration::from_millis(1)));
        // A round trip sent earlier, answered later (a delayed packet): no younger lease.
        lease.confirm(t0);
        assert!(!lease.holds_at(sent + LEASE + Duration::from_millis(1)));
        lease.confirm(sent + LEASE);
        assert!(lease.holds_at(sent + LEASE + Duration::from_millis(1)));
    }
}
