//! Deadlines: invitation timeouts (seed 7.1.7 c), subscription expiry (and the deletion of an
//! expired subscription's record once its last notifications' minute is up), the end of idle
//! sessions ([`Chat::idle_sweeper`]: one task for every session but ad hoc ones, which have a
//! timer each, `oma2012`), and, in the same task, the deletion of subscriptions disabled for
//! the retention period.
//!
//! A timer is a tokio task that sleeps until an absolute deadline (Unix ms, stored with the record
//! it belongs to) and then calls the core; it holds only a `Weak<Chat>`, so a timer never keeps the
//! core alive. A restart re-arms them from the stored deadlines (see `restore`; those that
//! passed while it was down fire there, in the order they fell due), so a deadline fires as if
//! the server had stayed up. An invitation timer carries its invitation's `seq`, so a
//! timer of an invitation already answered (or replaced) does nothing; and it is stopped as
//! soon as its invitation is not pending any more (`Chat::apply`), so the tasks follow the
//! pending invitations.

use super::Chat;
use super::state::State;
use crate::store::now_ms;
use std::collections::HashMap;
use std::sync::{Arc, MutexGuard};
use std::time::Duration;
use tokio::task::AbortHandle;

/// How often the idle sweeper looks for idle sessions: a quarter of the idle time (so a
/// session ends at most a quarter late), at least every minute, at most ten times a second.
pub fn sweep_period(idle: Duration) -> Duration {
    (idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(60))
}

/// Whether the idle sweeper looks at session `s`: not an ad hoc chat (its own timer does), not
/// one ended, and not one waiting for an answer to an invitation (its time-out, a change,
/// comes first: a session is not idle while someone is asked to join it).
fn sweeps(s: &super::state::Session) -> bool {
    !s.adhoc && !s.ended && !s.participants.iter().any(|p| p.invitation.is_pending())
}

/// What the idle sweeper finds among the sessions filed under a time `idle_ms` or more before
/// `now_ms` ([`State::filed_before`]): those it looks at ([`sweeps`]) whose clock is that far
/// behind too (`candidates`), and the others, filed again so that the next rounds pass them
/// by: under their clock when it moved since, by a message (`refile`), under the round's time
/// when they are not for the sweeper now (`set_aside`). Each session is read about once an
/// idle period, not each round.
fn idle_candidates(state: &State, idle_ms: i64, now_ms: i64) -> Idle {
    let relaxed = std::sync::atomic::Ordering::Relaxed;
    let cutoff = now_ms.saturating_sub(idle_ms);
    let mut found = Idle::default();
    for sid in state.filed_before(cutoff) {
        let at = state
            .active
            .get(sid)
            .map_or(i64::MAX, |c| c.at.load(relaxed));
        if !state.sessions.get(sid).is_some_and(sweeps) {
            found.set_aside.push(sid.to_owned());
        } else if at <= cutoff {
            found.candidates.push(sid.to_owned());
        } else {
            found.refile.push(sid.to_owned());
        }
    }
    found
}

/// See [`idle_candidates`].
#[derive(Debug, Default, PartialEq)]
struct Idle {
    /// Idle by their clock: the sweeper reads their last message, then ends them.
    candidates: Vec<String>,
    /// Active since they were filed: filed again under their clock.
    refile: Vec<String>,
    /// Not for the sweeper now (ad hoc, an invitation waiting): filed under the round's
    /// time, until a change files them again.
    set_aside: Vec<String>,
}

/// Whether subscription `rec` was disabled by delivery longer than `retention_ms` before
/// `now_ms`: its dead letters are purged by then, and nothing is left of it to redeliver.
fn lapsed_disabled(rec: &super::state::SubscriptionRecord, retention_ms: i64, now_ms: i64) -> bool {
    rec.disabled
        .as_ref()
        .is_some_and(|d| now_ms >= d.at_ms.saturating_add(retention_ms))
}

/// How often an expired subscription's deletion looks whether the receipts under way are
/// recorded (`Chat::expired_record_timer`): they are gathered for 20 ms, so most often the
/// first look finds none; under a steady stream of them it looks ten times a second until
/// the minute's end, as many wake-ups as subscriptions expired within that minute.
const RECEIPTS_LOOK: Duration = Duration::from_millis(100);

impl Chat {
    /// Starts the task that ends every session (but ad hoc ones) idle for
    /// `NETAPI_CHAT_SESSION_IDLE_SECS`: no message and no decision for that long
    /// (`State::active`, `sessions::idle`). Without it a session nobody uses stayed for good
    /// (a group whose invitations timed out, its originator still `Connected`), holding its
    /// place under `NETAPI_CHAT_MAX_SESSIONS` with nothing to free it. One task walking the
    /// sessions each [`sweep_period`] (a read of each session's clock) instead of a timer
    /// per session.
    ///
    /// The same task deletes subscriptions delivery disabled longer ago than the retention
    /// period ([`Chat::forget_lapsed_disabled`]), each quarter of it, at least every hour.
    pub(super) fn idle_sweeper(self: &Arc<Self>) {
        let chat = Arc::downgrade(self);
        let sessions_every = sweep_period(self.settings.session_idle);
        // A walk of every subscription (a field read each, a few ms for 100,000 under the
        // read lock): at most once an hour, a quarter of the retention period at most late.
        let subscriptions_every =
            (self.retention() / 4).clamp(Duration::from_millis(100), Duration::from_secs(3600));
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            let (mut sessions_at, mut subscriptions_at) =
                (start + sessions_every, start + subscriptions_every);
            loop {
                tokio::time::sleep_until(sessions_at.min(subscriptions_at)).await;
                let Some(chat) = chat.upgrade() else { return };
                if chat.is_stopping() {
                    return;
                }
                let now = tokio::time::Instant::now();
                if now >= sessions_at {
                    chat.end_idle_sessions().await;
                    sessions_at = now + sessions_every;
                }
                if now >= subscriptions_at {
                    chat.forget_lapsed_disabled();
                    subscriptions_at = now + subscriptions_every;
                }
            }
        });
    }

    /// The retention period (`NETAPI_CHAT_RETENTION`): how long a message, and a dead letter
    /// after it was given up, is kept.
    pub(super) fn retention(&self) -> Duration {
        self.settings.limits.sent_bytes.1
    }

    /// Deletes every subscription delivery disabled for longer than the retention period
    /// ([`lapsed_disabled`]), with what is left of its dead letters (none: they are purged
    /// after as long), in one change. Before, a disabled subscription stayed until its owner
    /// deleted it, or until its owner at the per-user limit made a new one: an application
    /// gone for good left its subscriptions holding places under
    /// `NETAPI_CHAT_MAX_SUBSCRIPTIONS` for ever.
    fn forget_lapsed_disabled(&self) {
        let retention_ms = i64::try_from(self.retention().as_millis()).unwrap_or(i64::MAX);
        let now = now_ms();
        let lapsed: Vec<String> = self
            .read_state()
            .subscriptions
            .values()
            .filter(|s| lapsed_disabled(&s.rec, retention_ms, now))
            .map(|s| s.rec.id.clone())
            .collect();
        if lapsed.is_empty() {
            return;
        }
        let mut state = self.write_state();
        let mut change = super::Change::default();
        for id in lapsed {
            // Enabled again meanwhile (a redelivery): kept.
            if !state
                .subscriptions
                .get(&id)
                .is_some_and(|s| lapsed_disabled(&s.rec, retention_ms, now))
            {
                continue;
            }
            if let Some(sub) = super::subscriptions::remove_subscription(&mut state, &id) {
                sub.queue.cancel();
                tracing::info!(
                    user = %crate::logsafe::Escaped(&sub.rec.user),
                    subscription = %crate::logsafe::Escaped(&id),
                    "a subscription disabled for the retention period was deleted"
                );
            }
            change
                .batch
                .deletes
                .push((crate::store::Kind::Subscription, id));
        }
        if change.batch.deletes.is_empty() {
            return;
        }
        // Nobody waits: the sweeper made this change.
        drop(self.submit(&mut state, change));
    }

    /// One round of the idle sweeper: the sessions whose clock says idle are looked at one at
    /// a time, the time of the last stored message first (a message sent before a restart is
    /// not in the clock, which starts at the session's last stored change; a store that does
    /// not answer leaves the session for the next round), then under the lock ended if still
    /// idle.
    async fn end_idle_sessions(self: &Arc<Self>) {
        let idle_ms = i64::try_from(self.settings.session_idle.as_millis()).unwrap_or(i64::MAX);
        let relaxed = std::sync::atomic::Ordering::Relaxed;
        let now = now_ms();
        let Idle {
            candidates,
            refile,
            set_aside,
        } = idle_candidates(&self.read_state(), idle_ms, now);
        if !refile.is_empty() || !set_aside.is_empty() {
            let mut state = self.write_state();
            for sid in &refile {
                state.refile(sid);
            }
            for sid in &set_aside {
                state.refile_not_before(sid, now);
            }
        }
        for sid in candidates {
            let s = sid.clone();
            match self.read(move |b| b.last_message_ms(&s)).await {
                // Not known now (the store does not answer): looked at again next round.
                Err(_) => continue,
                Ok(Some(last)) => {
                    if let Some(clock) = self.read_state().active.get(&sid) {
                        clock.at.fetch_max(last, relaxed);
                    }
                }
                Ok(None) => {}
            }
            let mut state = self.write_state();
            let Some(s) = state.sessions.get(&sid).filter(|s| sweeps(s)) else {
                state.refile_not_before(&sid, now);
                continue;
            };
            let active = state.active.get(&sid).map_or(now, |c| c.at.load(relaxed));
            let why = format!(
                "nothing happened in it for {} s",
                self.settings.session_idle.as_secs_f64()
            );
            match super::sessions::idle(&self.urls, s, active, idle_ms, now_ms(), &why) {
                // Nobody waits: the sweeper made this change.
                Ok(d) => drop(self.apply(&mut state, d)),
                // A message before a restart keeps it: filed under that.
                Err(_) => state.refile(&sid),
            }
        }
    }

    /// Starts the expiry task of subscription `id`, due at `at_ms` (`Chat::expiry_due` decides
    /// when it wakes), in place of the one it had: one task per subscription at most.
    pub(super) fn expiry_timer(self: &Arc<Self>, id: String, at_ms: i64) {
        let chat = Arc::downgrade(self);
        let key = id.clone();
        let task = tokio::spawn(async move {
            let mut at = at_ms;
            loop {
                let wait = Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0));
                tokio::time::sleep(wait).await;
                let Some(chat) = chat.upgrade() else { return };
                match chat.expiry_due(&id) {
                    Some(next) => at = next,
                    None => return,
                }
            }
        })
        .abort_handle();
        let mut state = self.write_state();
        match state.subscriptions.get_mut(&key) {
            Some(sub) => {
                if let Some(old) = sub.timer.replace(task) {
                    old.abort();
                }
            }
            None => task.abort(),
        }
    }

    /// Deletes the record of subscription `id`, which expired, once its last notifications'
    /// time is up at `until_ms` (`Chat::expire_subscription`), or sooner once its delivery task
    /// has returned (`ended`: its cancellation notice delivered, or what it held dropped;
    /// kept the whole minute, the records of subscriptions with nothing left outnumbered the
    /// subscriptions gauge by dozens under churn, an outside soak): its outbox rows go with
    /// it, what its queue has not delivered by then being dropped by the queue itself. A
    /// server stopping first leaves it to the restart (or the next leader), which deletes a
    /// record whose time is up as it starts (`restore`).
    pub(super) fn expired_record_timer(
        self: &Arc<Self>,
        id: String,
        until_ms: i64,
        ended: crate::notify::Ended,
    ) {
        let chat = Arc::downgrade(self);
        tokio::spawn(async move {
            let wait = Duration::from_millis(u64::try_from(until_ms - now_ms()).unwrap_or(0));
            let end = tokio::time::Instant::now() + wait;
            tokio::select! {
                () = tokio::time::sleep_until(end) => {}
                () = ended.wait() => {
                    // What it delivered last may wait to be recorded `Delivered` (an OMA 2012
                    // receiver, `delivered.rs`), for which its outbox row stands until then:
                    // deleted first, a crash in between lost the receipt (the diff review).
                    // So the deletion waits for the receipts under way (the minute at most).
                    loop {
                        let Some(chat) = chat.upgrade() else { return };
                        if chat.receipts_pending.load(std::sync::atomic::Ordering::SeqCst) == 0
                            || tokio::time::Instant::now() >= end
                        {
                            break;
                        }
                        drop(chat);
                        tokio::time::sleep(RECEIPTS_LOOK).await;
                    }
                }
            }
            let Some(chat) = chat.upgrade() else { return };
            if chat.is_stopping() {
                return;
            }
            chat.delete_subscriptions([id]);
        });
    }

    /// Arms the time-out of invitation `seq` (of `address` to session `sid`): at
    /// `deadline_ms` (at once when past) it times out, unless answered, withdrawn or ended
    /// before (`stop_invitation_timers`).
    pub(super) fn invitation_timer(
        self: &Arc<Self>,
        sid: String,
        address: String,
        seq: u64,
        deadline_ms: i64,
    ) {
        let chat = Arc::downgrade(self);
        let wait = Duration::from_millis(u64::try_from(deadline_ms - now_ms()).unwrap_or(0));
        // Registered before the task can run: its first step (taking itself out) waits for
        // this lock, so a task due at once cannot end before it is in the map and leave its
        // handle there for good.
        let mut tasks = self.invitation_tasks();
        let task = tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            if let Some(chat) = chat.upgrade() {
                chat.invitation_tasks().remove(&seq);
                chat.invitation_timed_out(&sid, &address, seq);
            }
        })
        .abort_handle();
        tasks.insert(seq, task);
    }

    /// Stops the timers of the invitations pending `before` a change and not after it
    /// (answered, withdrawn, timed out, or ended with their session).
    pub(super) fn stop_invitation_timers(&self, before: &[u64], after: &[u64]) {
        let mut tasks = None;
        for seq in before.iter().filter(|s| !after.contains(s)) {
            let tasks = tasks.get_or_insert_with(|| self.invitation_tasks());
            if let Some(task) = tasks.remove(seq) {
                task.abort();
            }
        }
    }

    /// The pending invitations' timer tasks, by `seq`.
    fn invitation_tasks(&self) -> MutexGuard<'_, HashMap<u64, AbortHandle>> {
        self.invitation_timers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

/// A number no other invitation has: tells a timer whether its invitation is still the
/// participant's current one.
pub(super) fn next_invitation_seq() -> u64 {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    // Start from the clock so numbers stay unique across restarts too.
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(|| u64::try_from(now_ms()).unwrap_or(0) << 16);
    base + SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Not an ad hoc chat, an ended session, or one with an invitation waiting for an answer.
    #[test]
    fn the_sweeper_looks_at_sessions_nobody_is_asked_to_join() {
        use super::super::state::Invitation;
        use super::super::testkit::{B, C, pending, session};
        use netapi_chat_api::ParticipantStatus::{Connected, Invited};
        let open = session(true, &[(B, Connected, Invitation::Accepted)]);
        assert!(sweeps(&open));
        let asking = session(
            true,
            &[
                (B, Connected, Invitation::Accepted),
                (C, Invited, pending(2)),
            ],
        );
        assert!(!sweeps(&asking));
        let mut adhoc = open.clone();
        adhoc.adhoc = true;
        let mut ended = open.clone();
        ended.ended = true;
        assert!(!sweeps(&adhoc) && !sweeps(&ended));
    }

    /// A disabled subscription is forgotten once disabled for the retention period; an
    /// active one never.
    #[test]
    fn a_subscription_disabled_for_the_retention_period_lapses() {
        use super::super::state::Disabled;
        let mut rec = super::super::testkit::subscription("sub-1", super::super::testkit::A, 1);
        assert!(!lapsed_disabled(&rec, 1_000, i64::MAX));
        rec.disabled = Some(Disabled {
            reason: "410".into(),
            at_ms: 5_000,
        });
        assert!(!lapsed_disabled(&rec, 1_000, 5_999));
        assert!(lapsed_disabled(&rec, 1_000, 6_000));
        assert!(!lapsed_disabled(&rec, i64::MAX, i64::MAX - 1));
    }

    /// Sessions whose clock is the idle time behind are candidates, the others not; a
    /// session's change moves its clock.
    #[test]
    fn idle_candidates_are_the_sessions_whose_clock_is_behind() {
        use super::super::state::{Invitation, State};
        use super::super::testkit::{B, session};
        use netapi_chat_api::ParticipantStatus::Connected;
        let mut state = State::default();
        for (id, changed) in [("s-old", 1_000), ("s-new", 9_000)] {
            let mut s = session(true, &[(B, Connected, Invitation::Accepted)]);
            (s.id, s.changed_ms) = (id.to_owned(), Some(changed));
            state.put_session(s);
        }
        let found = |state: &State, now| idle_candidates(state, 5_000, now);
        assert_eq!(found(&state, 10_000).candidates, ["s-old"]);
        assert_eq!(
            found(&state, 5_999),
            Idle::default(),
            "none filed that far back"
        );
        // A change files it again: not a candidate, not even read.
        let mut again = state.sessions["s-old"].clone();
        again.changed_ms = Some(9_500);
        state.put_session(again);
        assert_eq!(found(&state, 10_000), Idle::default());
        // A message moves the clock, not the filing: read once, filed again, then passed by.
        let clock = &state.active["s-new"].at;
        clock.store(19_000, std::sync::atomic::Ordering::Relaxed);
        let found_now = found(&state, 14_400);
        assert_eq!(
            (found_now.candidates.len(), found_now.refile),
            (0, vec!["s-new".to_owned()])
        );
        state.refile("s-new");
        assert_eq!(found(&state, 14_400), Idle::default());
        assert_eq!(found(&state, 24_000).candidates.len(), 2);
        // Asking someone to join: set aside, and passed by once filed under the round's time.
        let mut asking = state.sessions["s-old"].clone();
        asking.participants[1].invitation = super::super::testkit::pending(7);
        state.put_session(asking);
        assert_eq!(found(&state, 24_000).set_aside, ["s-old"]);
        state.refile_not_before("s-old", 24_000);
        assert_eq!(found(&state, 24_000).candidates, ["s-new"]);
        assert!(found(&state, 24_000).set_aside.is_empty());
    }

    /// The cost of one sweep's walk over 100,000 sessions, none idle (the common round).
    /// `cargo test --release -p netapi-chat --lib -- --ignored --nocapture idle_sweep_cost`.
    #[test]
    #[ignore = "a measurement"]
    fn idle_sweep_cost() {
        use super::super::state::{Invitation, State};
        use super::super::testkit::{B, session};
        use netapi_chat_api::ParticipantStatus::Connected;
        let mut state = State::default();
        for i in 0..100_000u64 {
            let mut s = session(true, &[(B, Connected, Invitation::Accepted)]);
            (s.id, s.seq, s.changed_ms) = (format!("sess-{i}-x"), i, Some(1_000_000));
            state.put_session(s);
        }
        let rounds = 20;
        let started = std::time::Instant::now();
        for _ in 0..rounds {
            assert_eq!(
                idle_candidates(&state, 604_800_000, 1_000_001),
                Idle::default()
            );
        }
        println!(
            "one sweep of 100,000 sessions, none filed an idle time back: {:?}",
            started.elapsed() / rounds
        );
        // The old walk: every session's clock read.
        let relaxed = std::sync::atomic::Ordering::Relaxed;
        let started = std::time::Instant::now();
        for _ in 0..rounds {
            let n = state
                .sessions
                .values()
                .filter(|s| sweeps(s))
                .filter(|s| {
                    state.active.get(&s.id).is_some_and(|c| {
                        1_000_001 >= c.at.load(relaxed).saturating_add(604_800_000)
                    })
                })
                .count();
            assert_eq!(n, 0);
        }
        println!(
            "reading every session's clock instead: {:?}",
            started.elapsed() / rounds
        );
    }

    #[test]
    fn the_sweeper_looks_four_times_an_idle_time_within_bounds() {
        assert_eq!(
            sweep_period(Duration::from_secs(2)),
            Duration::from_millis(500)
        );
        assert_eq!(
            sweep_period(Duration::from_millis(10)),
            Duration::from_millis(100)
        );
        assert_eq!(
            sweep_period(Duration::from_secs(604_800)),
            Duration::from_secs(60)
        );
    }
}
