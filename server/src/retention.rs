//! Retention: messages older than `NETAPI_CHAT_RETENTION` are purged in the background, so that
//! the data directory is bounded by live data plus the retained history (issue 12 item 4).
//!
//! Messages are the one thing that grows with use while a session stays open (ended sessions go
//! with their messages when they end; delivered notifications, expired and deleted
//! subscriptions are deleted when that happens). Dead letters (notifications given up or left
//! by a disabled subscription) are kept for the same retention, counted from their burial, then
//! purged in the same rounds (issue 13: replay stays possible for the retention period). A message's delivery statuses are part of its
//! record, so they go with it.
//!
//! How it runs: a task wakes every purge interval and runs a round: a walk over the sessions
//! that have messages, deleting in each the messages sent before `now - retention`, from its
//! oldest (a session's messages are in sending order, so they are the head of its range in
//! the primary key: no index by sending time is kept, which would cost every send). The walk
//! is cut into jobs, each one short transaction on the store thread, queued like a read
//! between two group commits (the store is a single thread: a long delete would hold every
//! request waiting behind it). A job does a budget of work (a session visited or a message
//! deleted is one unit), adapted so that it holds the store thread for about [`JOB_BUDGET`]
//! ([`next_batch`]): what a unit costs depends on the disk and the data. Jobs are [`PAUSE`]
//! apart so that requests queued meanwhile are served first; the round ends when the walk
//! has passed the last session.
//!
//! A purged message answers exactly like one that never existed (`404` on it and its status,
//! absent from pages, a confirmation of it `404`): nothing in memory refers to messages, a page
//! cursor is a position, not a lookup, so it stays valid across purged rows, and a
//! confirmation that read a message just before its purge writes an update that finds no row
//! (`store::MessageRow::sent_ms`).
//!
//! The rules ([`parse_retention`], [`cutoff_ms`], [`next_batch`], and the store's
//! `expired_head`) are plain functions, unit-tested; the loop only sequences them.

use crate::store::{Store, now_ms};
use std::time::Duration;

/// Default retention when `NETAPI_CHAT_RETENTION` is unset: 30 days, long enough to read back
/// a month of conversation, short enough that a busy server's disk stays bounded.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Default time between purge rounds (`NETAPI_CHAT_PURGE_INTERVAL_MS`): 10 s. A round visits
/// every session with messages, so rounds far apart make each delete more of a session's head
/// at once (fewer pages touched per message), and rounds close together make retention exact
/// to the interval; 10 s is exact enough for any retention counted in hours or days.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// How long one purge job should hold the store thread: about one group commit of busy
/// traffic, so that a request queued behind a job waits no longer than behind another commit.
pub const JOB_BUDGET: Duration = Duration::from_millis(2);

/// The first budget (units of work, see the module doc) of the first job; later ones adapt.
pub const FIRST_BATCH: usize = 100;

/// Bounds of the adapted budget: a few units at least (progress even on a slow disk), at most
/// what one job should ever do whatever the timing says (a visit to a session with nothing
/// to purge is a seek of a few µs, so a walk over many idle sessions grows the budget).
pub const MIN_BATCH: usize = 16;
/// See [`MIN_BATCH`].
pub const MAX_BATCH: usize = 5000;

/// Pause between two jobs of a round: requests queued during a job are served before the next
/// one (and the store thread's idle-time checkpoint gets its moment), so the purge takes a
/// fraction of the store thread however large the backlog (e.g. after retention was
/// shortened). Measured (`purge_batch_cost` in `store::sqlite`, release build, 1M messages
/// sent round-robin in 1000 sessions, on a 2-core machine shared with other builds): rounds
/// of 50,000 expired messages, jobs p50 1.3 ms, p99 4.0 ms, max 5.3 ms; one round finding all
/// 1M expired (a backlog), 5.2 s of jobs, p50 1.25 ms, p99 14 ms.
pub const PAUSE: Duration = Duration::from_millis(5);

/// Retention settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// How long a message is kept after it was sent.
    pub keep: Duration,
    /// Time between purge rounds.
    pub interval: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            keep: DEFAULT_RETENTION,
            interval: DEFAULT_INTERVAL,
        }
    }
}

/// Reads `NETAPI_CHAT_RETENTION`: a duration such as `30d`, `12h`, `90s` or `1h 30m`
/// (`humantime` syntax); zero is refused (it would purge every message at once, which is not
/// a retention but a bug in a deployment file), and so is [`crate::config::MAX_DURATION`] or
/// more, the bound of every duration setting (`1000000000000000000s` and `300000y` were
/// accepted although the README says every duration is below it).
pub fn parse_retention(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim()).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("a retention of zero would purge every message as it is sent".to_owned());
    }
    if d >= crate::config::MAX_DURATION {
        return Err("a retention must be less than 1000000000s".to_owned());
    }
    Ok(d)
}

/// The purge cutoff: messages sent before it (Unix milliseconds) are past retention. Saturates
/// instead of overflowing, so a retention of centuries simply purges nothing.
pub fn cutoff_ms(now_ms: i64, keep: Duration) -> i64 {
    now_ms.saturating_sub(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX))
}

/// The next batch size, from the last one and how long its job held the store thread: halved
/// when it took over twice [`JOB_BUDGET`], down by a quarter when over it, up by a quarter when
/// under half of it; within [`MIN_BATCH`]..=[`MAX_BATCH`].
pub fn next_batch(batch: usize, took: Duration) -> usize {
    let next = if took > 2 * JOB_BUDGET {
        batch / 2
    } else if took > JOB_BUDGET {
        batch - batch / 4
    } else if took < JOB_BUDGET / 2 {
        batch + batch.div_ceil(4)
    } else {
        batch
    };
    next.clamp(MIN_BATCH, MAX_BATCH)
}

/// Starts the purge task (on the current tokio runtime): a round at once, then one every
/// `interval`. It ends when the store has stopped.
pub fn start(store: Store, settings: Retention) {
    tokio::spawn(run(store, settings));
}

async fn run(store: Store, settings: Retention) {
    let mut batch = FIRST_BATCH;
    loop {
        let messages = purge(
            &store,
            settings.keep,
            &mut batch,
            "messages",
            |b, cutoff, from, batch| {
                b.purge_messages(cutoff, from, batch)
                    .map(|p| (p.deleted, p.next))
            },
        );
        let Some(purged) = messages.await else { return };
        if purged > 0 {
            tracing::info!(messages = purged, "messages past retention purged");
        }
        // Dead letters buried before the cutoff, in jobs of the same adapted size; a job that
        // used its whole batch may have left some.
        let dead = purge(
            &store,
            settings.keep,
            &mut batch,
            "dead letters",
            |b, cutoff, _, batch| {
                b.purge_dead_letters(cutoff, batch)
                    .map(|n| (n, (n >= batch).then(String::new)))
            },
        );
        let Some(dead) = dead.await else { return };
        if dead > 0 {
            tracing::info!(dead_letters = dead, "dead letters past retention purged");
        }
        tokio::time::sleep(settings.interval).await;
    }
}

/// One round's purge of `what`, in jobs on the store thread [`PAUSE`] apart, each sized by
/// [`next_batch`] from how long the last one held the thread (the job itself is timed there,
/// not its wait in the queue): `job(backend, cutoff, from, batch)` deletes what was sent or
/// buried before the cutoff, from `from` on, and says how many it deleted and where the next
/// job starts (`None`: the round is over). How many went; a failed job ends the round (nothing
/// in memory depends on a purge: the next round tries again); `None` when the store has
/// stopped (shutdown, or fail-stop). One loop for messages and dead letters, so both keep to
/// the same budget.
async fn purge<J>(
    store: &Store,
    keep: Duration,
    batch: &mut usize,
    what: &str,
    job: J,
) -> Option<usize>
where
    J: Fn(
            &mut dyn crate::store::Backend,
            i64,
            &str,
            usize,
        ) -> Result<(usize, Option<String>), crate::store::StoreError>
        + Clone
        + Send
        + 'static,
{
    let mut total = 0usize;
    let mut from = String::new();
    loop {
        let cutoff = cutoff_ms(now_ms(), keep);
        let (start, size, job) = (from.clone(), *batch, job.clone());
        let timed = move |b: &mut dyn crate::store::Backend| {
            let t = std::time::Instant::now();
            job(b, cutoff, &start, size).map(|done| (done, t.elapsed()))
        };
        match store.read(timed).await {
            Ok(Ok(((deleted, next), took))) => {
                total += deleted;
                *batch = next_batch(*batch, took);
                match next {
                    Some(next) => {
                        from = next;
                        tokio::time::sleep(PAUSE).await;
                    }
                    None => return Some(total),
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(
                    error = %e,
                    "purging {what} past retention failed; retried at the next round"
                );
                return Some(total);
            }
            Err(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_reads_human_durations_and_refuses_nonsense() {
        assert_eq!(parse_retention("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_retention(" 12h "), Ok(Duration::from_secs(43_200)));
        assert_eq!(parse_retention("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_retention("1h 30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_retention("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(
            parse_retention("999999999s"),
            Ok(Duration::from_secs(999_999_999))
        );
        for bad in [
            "",
            "30",
            "thirty days",
            "-5d",
            "0s",
            "0d",
            "5 fortnights",
            "1000000000s",
            "1000000000000000000s",
            "300000y",
        ] {
            assert!(parse_retention(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_retention("0s").unwrap_err().contains("zero"));
    }

    #[test]
    fn the_cutoff_is_now_minus_retention_and_saturates() {
        assert_eq!(cutoff_ms(10_000, Duration::from_secs(2)), 8_000);
        assert_eq!(cutoff_ms(10_000, Duration::from_millis(1)), 9_999);
        // Longer than the epoch: before any message, never an overflow.
        assert_eq!(cutoff_ms(10_000, Duration::from_secs(3600)), -3_590_000);
        assert_eq!(cutoff_ms(i64::MIN + 5, Duration::from_secs(1)), i64::MIN);
        assert_eq!(cutoff_ms(0, Duration::MAX), -i64::MAX);
        assert_eq!(
            cutoff_ms(1_796_309_514_000, DEFAULT_RETENTION),
            1_796_309_514_000 - 2_592_000_000
        );
    }

    #[test]
    fn the_batch_follows_the_time_a_job_takes() {
        let ms = Duration::from_millis;
        // Far over budget: halved; over: down a quarter; well under: up a quarter; near: kept.
        assert_eq!(next_batch(400, ms(9)), 200);
        assert_eq!(next_batch(400, JOB_BUDGET + ms(1)), 300);
        assert_eq!(next_batch(400, Duration::ZERO), 500);
        assert_eq!(next_batch(400, JOB_BUDGET), 400);
        assert_eq!(next_batch(400, JOB_BUDGET * 3 / 4), 400);
        // Within bounds whatever the timing.
        assert_eq!(next_batch(MIN_BATCH, Duration::from_secs(5)), MIN_BATCH);
        assert_eq!(next_batch(MAX_BATCH, Duration::ZERO), MAX_BATCH);
        assert_eq!(next_batch(0, Duration::ZERO), MIN_BATCH);
        // A job at 15 µs a row settles near the budget from the first batch.
        let mut b = FIRST_BATCH;
        for _ in 0..20 {
            b = next_batch(b, Duration::from_micros(15) * u32::try_from(b).unwrap());
        }
        assert!((67..=134).contains(&b), "{b}");
    }

    /// A round over a real store, job by job as [`run`] does it: a backlog larger than a
    /// job drains, and what is younger than the cutoff stays.
    #[test]
    fn a_backlog_drains_job_by_job_and_the_young_stay() {
        use crate::store::{Backend, Batch, MessageRow, sqlite};
        let dir = std::env::temp_dir().join(format!(
            "netapi-chat-retention-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let mut db = sqlite::Sqlite::open(&dir, sqlite::Sync::Normal).unwrap();
        let now = now_ms();
        let old = u64::try_from(FIRST_BATCH * 2 + 7).unwrap();
        let messages = (1..=old + 3)
            .map(|seq| MessageRow {
                session: format!("s{}", seq % 3),
                seq,
                id: format!("m{seq}"),
                sender: "a".into(),
                correlator: None,
                value: b"{}".to_vec(),
                // The last three were sent just now, the others two hours ago.
                sent_ms: Some(if seq > old { now } else { now - 7_200_000 }),
            })
            .collect();
        db.commit(&[&Batch {
            messages,
            ..Batch::default()
        }])
        .unwrap();
        let cutoff = cutoff_ms(now, Duration::from_secs(3600));
        let (mut from, mut jobs, mut deleted) = (String::new(), 0, 0);
        loop {
            let p = db.purge_messages(cutoff, &from, FIRST_BATCH).unwrap();
            jobs += 1;
            deleted += p.deleted;
            match p.next {
                Some(next) => from = next,
                None => break,
            }
        }
        assert_eq!(deleted, FIRST_BATCH * 2 + 7);
        assert!(jobs >= 3, "{jobs} jobs for {deleted} messages");
        let mut left: Vec<u64> = (0..3)
            .flat_map(|s| db.messages_after(&format!("s{s}"), None, 100).unwrap())
            .map(|(seq, _)| seq)
            .collect();
        left.sort();
        assert_eq!(left, [old + 1, old + 2, old + 3]);
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
