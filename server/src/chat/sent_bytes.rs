//! What one sender may make the server keep: a budget of stored message bytes per sender
//! (`NETAPI_CHAT_SENT_BYTES_BUDGET`), so that the disk is bounded by configured budgets and
//! not by what one client sends (an outside review: one token limited to one user stored
//! 18.8 MB in 2 s of ad hoc messages to an address that never answered, about 290 GB a day at
//! the default rate, kept for the whole retention period).
//!
//! The rule is a leaky bucket per sender: a message's cost ([`cost`]: its text's bytes, its
//! recipients' addresses and what is kept beside them) fills the sender's bucket, which drains at `budget / retention`
//! a second; a message that would overflow `budget` is refused (`403 POL2008`) and stores
//! nothing. Messages leave the store at the retention age at the latest, so what a sender
//! has stored is what it sent within one retention period, and no window of that length
//! admits more than the budget plus what drained in it: **at most twice the budget stored per
//! sender**, whatever it sends. A sender under the budget is never refused: with the defaults
//! (1 GiB, 30 days) a user may burst 1 GiB of text and then go on at about 36 MB a day.
//!
//! The buckets live in the deciding instance's memory (a restart, or a takeover, starts them
//! empty: each adds at most one budget to what a sender may have stored), one per sender that
//! sent within the time its bucket takes to drain, swept when their number doubles (as
//! `crate::rate`'s). A replay of a message (its `clientCorrelator`) stores nothing and costs
//! nothing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a stored message costs beside its text and its recipients: its id, sender, session
/// and timestamps as the store keeps them, about this many bytes.
pub const KEPT_BESIDE_TEXT: u64 = 256;

/// What each recipient costs beside its address: its delivery status and the record's
/// framing of the two.
pub const KEPT_PER_RECIPIENT: u64 = 32;

/// The default budget: 1 GiB a sender.
pub const DEFAULT_BUDGET: u64 = 1 << 30;

/// Buckets kept before the first sweep of drained ones (later sweeps wait for the table to
/// double again).
const SWEEP_FROM: usize = 10_000;

/// What storing a message with `text` to `recipients` costs its sender: the record keeps
/// every recipient's address and status, so a one-character message to a group of 100 is
/// about 5 KB stored, not the 257 bytes its text and id would say (an outside review: a
/// budget of text alone let a sender store 20 to 110 times what it promised).
pub fn cost<'a>(text: &str, recipients: impl IntoIterator<Item = &'a str>) -> u64 {
    let bytes = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    recipients.into_iter().fold(
        bytes(text.len()).saturating_add(KEPT_BESIDE_TEXT),
        |sum, r| {
            sum.saturating_add(bytes(r.len()))
                .saturating_add(KEPT_PER_RECIPIENT)
        },
    )
}

/// The rule: a bucket at `level` bytes when last filled, `elapsed` ago, draining `per_sec`: its
/// level now, and whether `cost` more fits under `budget` (then the new level).
pub fn admit(level: f64, elapsed: Duration, per_sec: f64, cost: u64, budget: u64) -> (f64, bool) {
    let now = (level - elapsed.as_secs_f64() * per_sec).max(0.0);
    let after = now + cost as f64;
    if after <= budget as f64 {
        (after, true)
    } else {
        (now, false)
    }
}

/// The buckets of every sender that stored messages lately.
#[derive(Debug)]
pub struct SentBytes {
    /// Bytes a bucket holds (`0`: no budget).
    budget: u64,
    /// Bytes a bucket drains a second: the budget over the retention period.
    per_sec: f64,
    /// The buckets, and the size of the next sweep.
    buckets: Mutex<(Buckets, usize)>,
}

/// Per sender: its bucket's level and when it was last filled.
type Buckets = HashMap<String, (f64, Instant)>;

impl SentBytes {
    /// A budget of `budget` bytes a sender (`0`: none), drained over `retention`.
    pub fn new(budget: u64, retention: Duration) -> SentBytes {
        SentBytes {
            budget,
            per_sec: budget as f64 / retention.as_secs_f64().max(1.0),
            buckets: Mutex::new((HashMap::new(), SWEEP_FROM)),
        }
    }

    /// Takes `cost` bytes from `sender`'s budget at `now`: `Err(budget)` when they do not fit.
    pub fn take(&self, sender: &str, cost: u64, now: Instant) -> Result<(), u64> {
        if self.budget == 0 {
            return Ok(());
        }
        let mut guard = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let (buckets, sweep_at) = &mut *guard;
        let (level, at) = buckets.get(sender).copied().unwrap_or((0.0, now));
        let (level, fits) = admit(
            level,
            now.saturating_duration_since(at),
            self.per_sec,
            cost,
            self.budget,
        );
        // The sender's name is copied once, when its bucket is made, not on every send.
        match buckets.get_mut(sender) {
            Some(bucket) => *bucket = (level, now),
            None => {
                buckets.insert(sender.to_owned(), (level, now));
            }
        }
        if buckets.len() >= *sweep_at {
            let per_sec = self.per_sec;
            buckets.retain(|_, (level, at)| {
                *level - now.saturating_duration_since(*at).as_secs_f64() * per_sec > 0.0
            });
            *sweep_at = (buckets.len() * 2).max(SWEEP_FROM);
        }
        if fits { Ok(()) } else { Err(self.budget) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_takes_up_to_its_budget_and_drains_over_the_retention() {
        let day = Duration::from_secs(86_400);
        // 1,000 bytes over 1,000 s: 1 byte a second.
        assert_eq!(admit(0.0, Duration::ZERO, 1.0, 600, 1000), (600.0, true));
        assert_eq!(admit(600.0, Duration::ZERO, 1.0, 400, 1000), (1000.0, true));
        assert_eq!(admit(1000.0, Duration::ZERO, 1.0, 1, 1000), (1000.0, false));
        assert_eq!(
            admit(1000.0, Duration::from_secs(10), 1.0, 10, 1000),
            (1000.0, true)
        );
        assert_eq!(
            admit(500.0, day, 1.0, 10, 1000),
            (10.0, true),
            "drained to empty"
        );
        assert_eq!(
            admit(0.0, Duration::ZERO, 1.0, 1001, 1000),
            (0.0, false),
            "never fits"
        );
    }

    #[test]
    fn senders_have_a_budget_each_and_none_without_one() {
        let t = Instant::now();
        let b = SentBytes::new(1000, Duration::from_secs(1000));
        assert_eq!(b.take("tel:+1", 900, t), Ok(()));
        assert_eq!(b.take("tel:+1", 200, t), Err(1000));
        assert_eq!(b.take("tel:+2", 900, t), Ok(()), "another sender's own");
        assert_eq!(b.take("tel:+1", 200, t + Duration::from_secs(100)), Ok(()));
        let off = SentBytes::new(0, Duration::from_secs(1000));
        assert_eq!(off.take("tel:+1", u64::MAX, t), Ok(()));
        assert_eq!(cost("héllo", []), 6 + KEPT_BESIDE_TEXT);
        assert_eq!(
            cost("hi", ["tel:+1", "sip:b@c"]),
            2 + KEPT_BESIDE_TEXT + 6 + 7 + 2 * KEPT_PER_RECIPIENT
        );
    }

    #[test]
    fn drained_buckets_are_swept_when_the_table_doubles() {
        let t = Instant::now();
        let b = SentBytes::new(1000, Duration::from_secs(1000));
        for i in 0..SWEEP_FROM - 1 {
            assert_eq!(b.take(&format!("tel:+{i}"), 10, t), Ok(()));
        }
        // Much later every bucket has drained: the next sender's fill sweeps them.
        let later = t + Duration::from_secs(100);
        assert_eq!(b.take("tel:+x", 10, later), Ok(()));
        let (buckets, sweep_at) = &*b.buckets.lock().unwrap();
        assert_eq!(buckets.len(), 1);
        assert_eq!(*sweep_at, SWEEP_FROM);
    }
}
