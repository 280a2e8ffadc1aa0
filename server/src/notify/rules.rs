//! The delivery rules, as plain functions: when a failing callback is tried next, when a
//! notification is given up, when a subscription is disabled, when its backlog is full.
//!
//! The model is endpoint-level backoff with message-level order: a subscription's callback is
//! one endpoint with one queue; only the head of the queue is ever tried, so order holds. While
//! the endpoint fails, the head is retried on [`RetryPolicy::schedule`] (the position in it is
//! the endpoint's run of consecutive failures), each gap capped at
//! [`RetryPolicy::max_backoff`] so that a receiver that comes back is noticed within that
//! long; the first 2xx ends the run and the backlog drains at full speed. A notification is
//! given up by age ([`RetryPolicy::give_up_after`], counted from its creation), not by a count
//! of tries; an endpoint failing for longer than that age, or whose backlog reaches
//! [`BacklogLimit`], has its subscription disabled.

use std::time::Duration;

/// Most undelivered notifications one subscription may have (counted from when they are
/// committed until they are delivered or buried): past either figure the subscription is
/// disabled and its backlog kept as dead letters. Dead letters are kept within the same
/// figures per subscription (the oldest go first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BacklogLimit {
    /// Notifications (`NETAPI_CHAT_DELIVERY_BACKLOG`, default 10,000).
    pub count: usize,
    /// Bytes of stored notification bodies (`NETAPI_CHAT_DELIVERY_BACKLOG_BYTES`, default
    /// 16 MiB).
    pub bytes: usize,
}

impl Default for BacklogLimit {
    fn default() -> Self {
        BacklogLimit {
            count: 10_000,
            bytes: 16 * 1024 * 1024,
        }
    }
}

/// When deliveries are attempted and given up.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Delay before each attempt of a failing endpoint (the first is usually 0); past its end
    /// the last delay repeats. The default spans about 27 hours, like Svix's.
    pub schedule: Vec<Duration>,
    /// Timeout of one attempt.
    pub timeout: Duration,
    /// Longest gap between two attempts of a failing endpoint (`Retry-After` excepted), so
    /// that a receiver that recovers is noticed within it. Default 5 minutes.
    pub max_backoff: Duration,
    /// Age (from its creation) at which a notification that still fails is given up, and the
    /// time an endpoint may fail without a break before its subscription is disabled.
    /// Default: the schedule's total.
    pub give_up_after: Duration,
    /// Per-subscription cap of the backlog.
    pub backlog: BacklogLimit,
    /// Server-wide budget of undelivered notifications held for delivery, in bytes of stored
    /// bodies (`NETAPI_CHAT_DELIVERY_BUDGET_BYTES`, default 256 MiB): see [`over_budget`].
    pub budget_bytes: usize,
}

/// The default server-wide delivery budget: 256 MiB of stored bodies.
pub const DEFAULT_BUDGET_BYTES: usize = 256 * 1024 * 1024;

/// Whether a subscription whose backlog holds `own` bytes gives way to the server-wide
/// budget: the backlogs of every subscription hold `total` bytes, `holding` of them hold any,
/// and past `budget` each backlog over its fair share (`budget / holding`) is disabled like a
/// full one. The largest always is (it holds at least `total / holding`), so the total comes
/// back under the budget; subscriptions whose receivers keep up hold next to nothing and are
/// never touched. Without it the per-subscription caps alone let memory grow with the number
/// of users whose callbacks do not answer (each backlog's notifications are held decoded).
pub fn over_budget(budget: usize, total: usize, holding: usize, own: usize) -> bool {
    total > budget && own > budget / holding.max(1)
}

/// How long a receiver fails (a channel's client takes nothing) before a backlog of its one
/// notification gives way to the budget ([`gives_way_after`]): a receiver restarting or
/// blipping keeps its subscription.
pub const FAILING_GRACE: Duration = Duration::from_secs(30);

/// After how much more time a backlog of `count` notifications, its receiver failing for
/// `failing_for` (its head failed and waits for a retry) or not, may give way to the
/// server-wide budget (`ZERO`: now; `None`: not while it stays as it is). One of a single
/// notification to a receiver that keeps up (in flight, or waiting for a poll) never does,
/// since what such backlogs hold is one notification per subscription, live data. One whose
/// receiver has failed for [`FAILING_GRACE`] does: it holds its notification for a day of
/// retries, and with every single-notification backlog exempt, an application whose receivers
/// do not answer held one notification per subscription past the budget (the noisy-neighbour
/// review of 2026-12-07: 18,000 dead receivers held 290 MiB of a 256 MiB budget; at the caps,
/// 100,000 subscriptions of a 16 KiB message each, 1.6 GB). Not at the first failed attempt:
/// then a healthy application's receiver away for five seconds had its subscription disabled
/// while another application held the server over the budget. Only those that may are
/// weighed when another backlog's push passes the budget, so that push wakes them and not
/// every subscription.
pub fn gives_way_after(count: usize, failing_for: Option<Duration>) -> Option<Duration> {
    match (count, failing_for) {
        (0, _) | (1, None) => None,
        (1, Some(failing_for)) => Some(FAILING_GRACE.saturating_sub(failing_for)),
        _ => Some(Duration::ZERO),
    }
}

/// The default schedule: about 27 h in all.
fn default_schedule() -> Vec<Duration> {
    [0, 5, 300, 1800, 7200, 18_000, 36_000, 36_000]
        .into_iter()
        .map(Duration::from_secs)
        .collect()
}

impl Default for RetryPolicy {
    fn default() -> Self {
        let schedule = default_schedule();
        RetryPolicy {
            give_up_after: schedule.iter().sum(),
            schedule,
            timeout: Duration::from_secs(10),
            max_backoff: Duration::from_secs(300),
            backlog: BacklogLimit::default(),
            budget_bytes: DEFAULT_BUDGET_BYTES,
        }
    }
}

impl RetryPolicy {
    /// Parses a schedule such as `0,5s,5m,30m,2h` (units ms, s, m, h; a bare number is seconds).
    pub fn parse_schedule(text: &str) -> Option<Vec<Duration>> {
        text.split(',')
            .map(parse_duration)
            .collect::<Option<Vec<_>>>()
            .filter(|v| !v.is_empty())
    }
}

/// Parses one duration such as `5m`, `1.5h`, `250ms` or `30` (seconds).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let p = text.trim();
    let (num, unit) = p.split_at(p.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(p.len()));
    let n: f64 = num
        .trim()
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n >= 0.0)?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(secs).ok()
}

/// The gap before the next attempt of an endpoint that has just failed for the `failures`-th
/// time in a row (1 after the first failure): the schedule's delay at that position (its last
/// one past its end), at most [`RetryPolicy::max_backoff`], then stretched by `jitter` (1.0–1.2
/// in use: endpoints that failed together do not retry together). Jitter only lengthens a gap,
/// so a notification is never tried more often than the schedule says. A `Retry-After` the
/// receiver sent (429/503) lengthens the gap to it, even past the cap (it asked for that), and
/// never shortens it: `Retry-After: 0` from a receiver in maintenance made a tight loop of
/// thousands of attempts a second, past the schedule and the cap.
pub fn retry_delay(
    policy: &RetryPolicy,
    failures: u32,
    jitter: f64,
    retry_after: Option<Duration>,
) -> Duration {
    let scheduled = scheduled_delay(policy, failures, jitter);
    retry_after.map_or(scheduled, |hint| hint.max(scheduled))
}

/// [`retry_delay`] by the schedule alone.
fn scheduled_delay(policy: &RetryPolicy, failures: u32, jitter: f64) -> Duration {
    let last = policy.schedule.len().saturating_sub(1);
    let at = usize::try_from(failures).unwrap_or(usize::MAX).min(last);
    let capped = policy
        .schedule
        .get(at)
        .copied()
        .unwrap_or_default()
        .min(policy.max_backoff);
    if jitter.is_finite() && jitter >= 1.0 {
        capped.mul_f64(jitter.min(2.0))
    } else {
        capped
    }
}

/// Whether a failed attempt after `failures` earlier ones in the same failure run is logged:
/// the first, then the 2nd, 4th, 8th…, so a callback failing for a day at the schedule's
/// pace (or one retried fast) writes a few dozen lines instead of one per attempt, and each
/// line says how many so far.
pub fn worth_logging(failures: u32) -> bool {
    failures.saturating_add(1).is_power_of_two()
}

/// Lines a second the delivery warnings of all subscriptions together may write
/// ([`LineBudget`]).
pub const DELIVERY_LINES_PER_SECOND: u32 = 20;

/// A budget of log lines a second shared by every subscription: the per-subscription backoff
/// ([`worth_logging`]) bounds what one callback writes, not what many do, and a client making
/// subscriptions to a dead callback (200 a second within the rate limit) had the server write
/// about 200 warning lines, 40 KB, a second (the soak review of 2026-12-07). Past the budget
/// a line is not written but counted, and the next line written says how many were not;
/// the metrics count every event.
pub struct LineBudget {
    per_second: u32,
    /// The second (Unix ms / 1000) being counted, lines written in it, lines not written
    /// since the last one that was.
    state: std::sync::Mutex<(i64, u32, u64)>,
}

impl LineBudget {
    /// A budget of `per_second` lines.
    pub const fn new(per_second: u32) -> LineBudget {
        LineBudget {
            per_second,
            state: std::sync::Mutex::new((0, 0, 0)),
        }
    }

    /// Whether a line may be written at `now_ms`: `Some(n)` with the lines not written
    /// since the last that was, `None` (counted) when the second's budget is spent.
    pub fn take(&self, now_ms: i64) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (second, used, skipped) = &mut *state;
        if *second != now_ms.div_euclid(1000) {
            (*second, *used) = (now_ms.div_euclid(1000), 0);
        }
        if *used >= self.per_second {
            *skipped = skipped.saturating_add(1);
            return None;
        }
        *used += 1;
        Some(std::mem::take(skipped))
    }
}

/// What follows a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Try the same notification again at this time (Unix ms).
    RetryAt(i64),
    /// Give this notification up (it becomes a dead letter); the endpoint's failure run goes
    /// on with the next one.
    GiveUp,
    /// The endpoint has failed for longer than the give-up age: disable the subscription.
    Disable,
}

/// The rule after an attempt of the notification created at `created_ms` failed at `now_ms`,
/// the endpoint failing without a break since `failing_since_ms`, the next attempt `delay`
/// away ([`retry_delay`]): disable the subscription once the endpoint has failed without a
/// break for the give-up age (or will have by the next try, when the notification has
/// reached its age); otherwise give the notification up once it has reached its give-up
/// age; otherwise retry after `delay`, or at the give-up age if that comes first (the last
/// try is made at that age, never after it). Disabling is checked first: on an endpoint
/// that keeps failing while notifications keep coming, each head would otherwise reach its age
/// before its first try and be given up in turn, and the endpoint never be disabled.
pub fn after_failure(
    policy: &RetryPolicy,
    created_ms: i64,
    failing_since_ms: i64,
    now_ms: i64,
    delay: Duration,
) -> Next {
    let age = millis(policy.give_up_after);
    let deadline = created_ms.saturating_add(age);
    let failing_for = |at: i64| at.saturating_sub(failing_since_ms);
    if failing_for(now_ms) >= age {
        Next::Disable
    } else if now_ms >= deadline {
        // At its age, on an endpoint that will have failed for the give-up age by the next
        // try: disabled now (the backlog buried in order), not a gap later, after the next
        // notification was tried past this one's dead letter. The run starts at the first
        // failure, a few ms after the notification it failed with was created, so that
        // notification reaches its age first (the timers review: 2 runs in 5).
        match failing_for(now_ms.saturating_add(millis(delay))) >= age {
            true => Next::Disable,
            false => Next::GiveUp,
        }
    } else {
        Next::RetryAt(now_ms.saturating_add(millis(delay)).min(deadline))
    }
}

/// When the head is looked at next (Unix ms): its next attempt, not before the endpoint's next
/// probe; but one with a deadline (an `isComposing`, an expired subscription's cancellation
/// notice) at its deadline at the latest, to be dropped then rather than held in memory until
/// a try that will not be made (hours away on a failing endpoint).
pub fn due(next_attempt_ms: i64, probe_at_ms: i64, deadline_ms: Option<i64>) -> i64 {
    let due = next_attempt_ms.max(probe_at_ms);
    deadline_ms.map_or(due, |d| due.min(d.saturating_add(1)))
}

/// Whether a backlog of `count` notifications holding `bytes` is over the limit.
pub fn backlog_full(limit: BacklogLimit, count: usize, bytes: usize) -> bool {
    count > limit.count || bytes > limit.bytes
}

/// Whether a message nobody agreed to receive (an OMA 2012 ad hoc chat's: no invitation, no
/// accept) may be added for a recipient whose subscription's backlog holds `count`
/// notifications of `bytes`: only while that backlog is under half its cap. Without it any
/// sender could fill a recipient's backlog past the cap while its callback was down and get
/// the subscription disabled (an outside review: 320 ad hoc messages against a cap of 300),
/// which `NETAPI_CHAT_MAX_PENDING_INVITATIONS_RECEIVED` prevents for invitations. The other
/// half is left to what the recipient agreed to (its sessions' messages and notices).
pub fn unsolicited_may_add(limit: BacklogLimit, count: usize, bytes: usize) -> bool {
    count.saturating_mul(2) < limit.count && bytes.saturating_mul(2) < limit.bytes
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod line_budget_tests {
    use super::LineBudget;

    /// A second's budget is spent, the rest counted; the next second's first line says how
    /// many were not written.
    #[test]
    fn lines_past_a_seconds_budget_are_counted_and_told() {
        let budget = LineBudget::new(2);
        assert_eq!(budget.take(1_000), Some(0));
        assert_eq!(budget.take(1_500), Some(0));
        assert_eq!(budget.take(1_999), None);
        assert_eq!(budget.take(1_999), None);
        assert_eq!(budget.take(2_000), Some(2));
        assert_eq!(budget.take(2_001), Some(0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unsolicited messages fill at most half a backlog, by count and by bytes.
    #[test]
    fn unsolicited_messages_take_at_most_half_a_backlog() {
        let limit = BacklogLimit {
            count: 300,
            bytes: 1000,
        };
        assert!(unsolicited_may_add(limit, 0, 0));
        assert!(unsolicited_may_add(limit, 149, 499));
        assert!(!unsolicited_may_add(limit, 150, 0));
        assert!(!unsolicited_may_add(limit, 0, 500));
        assert!(!unsolicited_may_add(limit, usize::MAX, 0));
    }

    /// A head is looked at when its attempt and the endpoint's probe are due, or just past
    /// its deadline if that comes first.
    #[test]
    fn a_head_is_looked_at_when_due_or_past_its_deadline() {
        assert_eq!(due(1_000, 500, None), 1_000);
        assert_eq!(due(1_000, 5_000, None), 5_000);
        assert_eq!(due(1_000, 18_000_000, Some(60_000)), 60_001);
        assert_eq!(due(1_000, 500, Some(60_000)), 1_000);
        assert_eq!(due(i64::MAX, 0, Some(i64::MAX)), i64::MAX);
    }

    /// A backlog of one notification to a receiver that keeps up never gives way to the
    /// budget; one of two or more may, now; one whose receiver fails, once it has failed for
    /// the grace.
    #[test]
    fn a_backlog_of_more_than_one_or_failing_for_the_grace_may_give_way() {
        let s = Duration::from_secs;
        for failing_for in [None, Some(s(0)), Some(s(3600))] {
            assert_eq!(gives_way_after(0, failing_for), None);
            assert_eq!(gives_way_after(2, failing_for), Some(Duration::ZERO));
            assert_eq!(
                gives_way_after(usize::MAX, failing_for),
                Some(Duration::ZERO)
            );
        }
        assert_eq!(gives_way_after(1, None), None);
        assert_eq!(gives_way_after(1, Some(s(0))), Some(FAILING_GRACE));
        assert_eq!(gives_way_after(1, Some(s(5))), Some(FAILING_GRACE - s(5)));
        assert_eq!(
            gives_way_after(1, Some(FAILING_GRACE)),
            Some(Duration::ZERO)
        );
        assert_eq!(gives_way_after(1, Some(s(86_400))), Some(Duration::ZERO));
    }

    /// Under the budget nobody gives way; past it, every backlog over its fair share does,
    /// and so always the largest.
    #[test]
    fn past_the_budget_backlogs_over_their_share_give_way() {
        // (budget, total, holding, own, gives way)
        for (budget, total, holding, own, gives) in [
            (100, 100, 4, 100, false),
            (100, 101, 1, 101, true),
            (100, 120, 4, 60, true),
            (100, 120, 4, 25, false),
            (100, 120, 4, 26, true),
            (100, 120, 0, 1, false),
            (100, 1_000, 10, 10, false),
        ] {
            assert_eq!(
                over_budget(budget, total, holding, own),
                gives,
                "{budget} {total} {holding} {own}"
            );
        }
    }

    fn policy(schedule: &str, cap: &str, give_up: &str) -> RetryPolicy {
        RetryPolicy {
            schedule: RetryPolicy::parse_schedule(schedule).unwrap(),
            max_backoff: parse_duration(cap).unwrap(),
            give_up_after: parse_duration(give_up).unwrap(),
            ..RetryPolicy::default()
        }
    }

    #[test]
    fn schedules_parse() {
        let s = RetryPolicy::parse_schedule("0, 50ms, 2s, 1.5m, 2h").unwrap();
        assert_eq!(
            s,
            vec![
                Duration::ZERO,
                Duration::from_millis(50),
                Duration::from_secs(2),
                Duration::from_secs(90),
                Duration::from_secs(7200)
            ]
        );
        assert!(RetryPolicy::parse_schedule("").is_none());
        assert!(RetryPolicy::parse_schedule("5x").is_none());
        assert!(RetryPolicy::parse_schedule("-1").is_none());
        assert!(parse_duration("1e300h").is_none());
        let d = RetryPolicy::default();
        let total: Duration = d.schedule.iter().sum();
        assert!(
            total >= Duration::from_secs(24 * 3600),
            "default schedule spans a day: {total:?}"
        );
        assert_eq!(d.give_up_after, total, "give up at the schedule's total");
        assert_eq!(d.max_backoff, Duration::from_secs(300));
    }

    /// A failure run is logged on its 1st, 2nd, 4th, 8th… failed attempt.
    #[test]
    fn a_failure_run_is_logged_at_powers_of_two() {
        let logged: Vec<u32> = (0..40)
            .filter(|f| worth_logging(*f))
            .map(|f| f + 1)
            .collect();
        assert_eq!(logged, [1, 2, 4, 8, 16, 32]);
        assert!(!worth_logging(u32::MAX));
    }

    /// The gap follows the schedule by the run of failures, repeats its last delay, is
    /// jittered, capped, and lengthened (never shortened) by a Retry-After.
    #[test]
    fn delays_follow_the_schedule_capped() {
        let p = policy("0,5s,5m,30m,2h", "10m", "1h");
        let at = |failures, jitter| retry_delay(&p, failures, jitter, None);
        assert_eq!(at(1, 1.0), Duration::from_secs(5));
        assert_eq!(at(2, 1.0), Duration::from_secs(300));
        assert_eq!(at(2, 1.2), Duration::from_secs(360));
        // 30 m and 2 h are capped at 10 m, and so is everything past the schedule's end;
        // jitter stretches the capped gap (capped probes of many endpoints spread out).
        assert_eq!(at(3, 1.0), Duration::from_secs(600));
        assert_eq!(at(4, 1.1), Duration::from_secs(660));
        assert_eq!(at(99, 1.0), Duration::from_secs(600));
        assert_eq!(at(u32::MAX, 1.0), Duration::from_secs(600));
        // Jitter never shortens a gap; a nonsense one is ignored, not propagated.
        assert_eq!(at(1, 0.5), Duration::from_secs(5));
        assert_eq!(at(1, f64::NAN), Duration::from_secs(5));
        // The receiver's Retry-After lengthens the gap, even over the cap, and never
        // shortens it (0 was a tight loop).
        assert_eq!(
            retry_delay(&p, 1, 1.0, Some(Duration::from_secs(3600))),
            Duration::from_secs(3600)
        );
        assert_eq!(
            retry_delay(&p, 1, 1.0, Some(Duration::ZERO)),
            Duration::from_secs(5)
        );
        assert_eq!(
            retry_delay(&p, 3, 1.1, Some(Duration::from_secs(1))),
            Duration::from_secs(660)
        );
    }

    /// Give up by age (never a try past it), disable after failing for the age.
    #[test]
    fn give_up_by_age_and_disable_after_failing_that_long() {
        let p = policy("0,1s", "1m", "10s");
        let s = Duration::from_secs;
        // Created at 0, failing since 1 ms: retried after the delay while that is within its
        // age, and a last time at its age (10 s) when the delay would go past it.
        assert_eq!(after_failure(&p, 0, 1, 1000, s(5)), Next::RetryAt(6000));
        assert_eq!(after_failure(&p, 0, 1, 6000, s(5)), Next::RetryAt(10_000));
        // That last try failed: the notification is given up (never tried past its age)...
        assert_eq!(after_failure(&p, 0, 6000, 10_000, s(1)), Next::GiveUp);
        // ... and with it the subscription disabled when the endpoint will have failed for the
        // age by the next try (here since 1 ms after the notification was created).
        assert_eq!(after_failure(&p, 0, 1, 10_000, s(5)), Next::Disable);
        assert_eq!(after_failure(&p, 0, 5000, 10_000, s(5)), Next::Disable);
        // The endpoint has failed for 10 s: the subscription is disabled, whatever the age of
        // the notification that failed last.
        assert_eq!(after_failure(&p, 0, 0, 10_000, s(1)), Next::Disable);
        assert_eq!(after_failure(&p, 9000, 0, 10_000, s(1)), Next::Disable);
        assert_eq!(after_failure(&p, 0, 0, 12_000, s(1)), Next::Disable);
        // A younger notification on an endpoint failing for less long is retried.
        assert_eq!(
            after_failure(&p, 9000, 5000, 10_000, s(1)),
            Next::RetryAt(11_000)
        );
        // An old notification (e.g. queued before the endpoint started failing) is given up
        // by its own age even when the endpoint has not failed for long.
        assert_eq!(after_failure(&p, 0, 9000, 10_500, s(1)), Next::GiveUp);
    }

    /// Walks the rules for one notification on an endpoint that never answers: the times of
    /// its tries (ms after creation) and how it ended.
    fn tries(p: &RetryPolicy, jitter: f64) -> (Vec<i64>, Next) {
        let (mut now, mut failures, mut at) = (1i64, 0u32, vec![1i64]);
        loop {
            failures += 1;
            let delay = retry_delay(p, failures, jitter, None);
            match after_failure(p, 0, 1, now, delay) {
                Next::RetryAt(t) => {
                    at.push(t);
                    now = t;
                }
                other => return (at, other),
            }
        }
    }

    /// With the default policy, a dead endpoint is probed every 5–6 minutes until the
    /// notification's give-up age, where it is tried a last time; then the subscription is
    /// disabled (its endpoint failing since the notification's first try, it would be by the
    /// next).
    #[test]
    fn the_default_policy_probes_a_dead_endpoint_every_few_minutes() {
        let p = RetryPolicy::default();
        let age = millis(p.give_up_after);
        let (at, outcome) = tries(&p, 1.2);
        assert!(
            at.windows(2).all(|w| w[1] - w[0] <= 360_000),
            "capped at 5 minutes + jitter"
        );
        assert_eq!(*at.last().unwrap(), age, "last tried at its age");
        assert_eq!(outcome, Next::Disable);
        assert!(at.len() > 250, "probed all along: {} tries", at.len());
    }

    /// Without a cap in the way, a notification gets at most the schedule's tries, whatever
    /// the jitter, the last one at its give-up age (then, on an endpoint dead all along, the
    /// subscription is disabled).
    #[test]
    fn an_uncapped_schedule_gives_at_most_its_tries() {
        let p = policy("0,3s,3s,3s", "1h", "9s");
        for jitter in [1.0, 1.05, 1.2] {
            let (at, outcome) = tries(&p, jitter);
            assert!(at.len() <= 4, "{jitter}: {at:?}");
            assert_eq!(*at.last().unwrap(), 9000);
            assert_eq!(outcome, Next::Disable);
        }
        let (at, _) = tries(&p, 1.0);
        assert_eq!(at, [1, 3001, 6001, 9000]);
    }

    #[test]
    fn backlog_is_full_past_either_figure() {
        let l = BacklogLimit {
            count: 3,
            bytes: 100,
        };
        assert!(!backlog_full(l, 3, 100));
        assert!(backlog_full(l, 4, 10));
        assert!(backlog_full(l, 1, 101));
    }
}
