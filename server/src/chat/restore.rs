//! Start-up: the state rebuilt from the store's snapshot (live records and the undelivered
//! outbox; never messages), delivery queues resumed, deadlines that passed while the server
//! was down fired in the order they fell due and the others re-armed.
//!
//! Kept apart from the flows because it is the one place that trusts nothing it reads: a record
//! that does not decode stops the start (see [`Chat::restore`]).

use super::records;
use super::state::{ChannelRecord, Counters, Invitation, Session, SubscriptionRecord};
use super::subscriptions::EXPIRY_NOTICE_WITHIN_MS;
use super::{Change, Chat};
use crate::notify::{Delivery, Notification, Queue};
use crate::store::{Kind, Snapshot};
use std::collections::HashMap;
use std::sync::Arc;

impl Chat {
    /// Rebuilds the state from the stored records (read by [`read_records`], which stops the
    /// start at a record it cannot read), resumes the undelivered notifications of each
    /// subscription and re-arms the timers.
    pub(super) fn restore(self: &Arc<Self>, snapshot: Snapshot) -> Result<(), String> {
        if let Some(m) = &snapshot.migrated {
            tracing::info!(
                from_version = m.from,
                to_version = m.to,
                records_rewritten = m.records,
                notifications_rewritten = m.outbox,
                "stored format migrated"
            );
        }
        let live = read_records(snapshot.records)?;
        let mut state = self.write_state();
        if let Some(c) = live.counters {
            state.ids.resume(c);
        }
        state
            .ids
            .floor_notifications(u64::try_from(crate::store::now_ms()).unwrap_or(0));
        if !live.ended.is_empty() {
            let mut change = Change::default();
            for sid in live.ended {
                change.batch.deletes.push((Kind::Session, sid));
            }
            self.store.submit_detached(change.batch);
        }
        // A session whose record has no change time (format 8 and older) gets the restart's,
        // written back once, so that its idle time counts from here across later restarts
        // too; left unwritten, each restart would start it again, and one more often than the
        // idle time kept a session nobody uses for ever.
        let now = crate::store::now_ms();
        let mut stamped = Change::default();
        for mut s in live.sessions {
            if s.changed_ms.is_none() {
                s.changed_ms = Some(now);
                stamped.put_session(&s);
            }
            state.put_session(s);
        }
        if !stamped.batch.puts.is_empty() {
            self.store.submit_detached(stamped.batch);
        }
        // Channels first: a subscription whose notifyURL is a channel's callbackURL is
        // attached to that channel.
        let channels: Vec<String> = live.channels.iter().map(|c| c.id.clone()).collect();
        for rec in live.channels {
            self.attach_channel(&mut state, rec);
        }
        // Expired ones whose last minute is still running deliver what they hold until then,
        // as if the server had stayed up; the others' time is up (`expired_leftovers`).
        // Those, and any subscription that feeds a notification channel no longer there
        // (`Chat::names_a_gone_channel`: an earlier version deleted with a channel only the
        // subscriptions spelling its callbackURL byte for byte; an expired one's channel may
        // have gone in its minute), are deleted with what they hold (`gone`), instead of being
        // POSTed to the server's own URL.
        let (expiring, mut gone) = expired_leftovers(live.expired, now);
        const CHANNEL_GONE: &str = "the notification channel it fed is gone";
        for rec in live.subscriptions {
            if self.names_a_gone_channel(&state, &rec.callback.notify_url) {
                gone.insert(rec.id, CHANNEL_GONE);
            } else {
                self.attach_subscription(&mut state, rec);
            }
        }
        let mut expiring: HashMap<String, (Queue, i64)> = expiring
            .into_iter()
            .filter_map(|(rec, until)| {
                if self.names_a_gone_channel(&state, &rec.callback.notify_url) {
                    gone.insert(rec.id, CHANNEL_GONE);
                    return None;
                }
                let queue = self.start_queue(&state, &rec);
                queue.expire(until);
                Some((rec.id, (queue, until)))
            })
            .collect();
        let mut dropped: HashMap<String, usize> = HashMap::new();
        let mut resumed = 0usize;
        for e in snapshot.outbox {
            let queue = match state.subscriptions.get(&e.subscription) {
                Some(sub) => &sub.queue,
                None => match expiring.get(&e.subscription) {
                    Some((queue, _)) => queue,
                    None => {
                        if gone.contains_key(&e.subscription) {
                            *dropped.entry(e.subscription).or_default() += 1;
                        }
                        continue;
                    }
                },
            };
            let notification = records::decode_notification(&e.body)
                .map_err(|err| format!("stored notification {} is unreadable: {err}", e.id))?;
            // An expired subscription's notice holds no bytes, as when it was made
            // (`Chat::expire_subscription`): it is never shed for the budget.
            let bytes = match notification {
                Notification::SubscriptionCancellationNotification(_) => 0,
                _ => e.body.len(),
            };
            queue.push(Delivery {
                id: e.id,
                notification,
                created_ms: e.created_ms,
                bytes,
                progress: e.progress,
                deadline_ms: None,
                best_effort: false,
            });
            resumed += 1;
        }
        if !gone.is_empty() {
            for (subscription, why) in &gone {
                // A warning only when something was lost: in a cluster every takeover meets
                // the subscriptions whose minute ended while no instance led, most of which
                // had delivered everything (an outside soak: 6 of 8 such lines said 0).
                match dropped.get(subscription).copied().unwrap_or(0) {
                    0 => tracing::info!(
                        subscription = subscription.as_str(),
                        why,
                        "a subscription deleted at start, with nothing undelivered"
                    ),
                    n => tracing::warn!(
                        subscription = subscription.as_str(),
                        dropped = n,
                        why,
                        "a subscription deleted at start, its undelivered notifications dropped"
                    ),
                }
            }
            self.delete_subscriptions(gone.into_keys());
        }
        // Their handles go: each queue's task ends once it has done with what it holds.
        for (id, (queue, until)) in expiring.drain() {
            self.expired_record_timer(id, until, queue.ended());
        }
        // Timers: what was pending before the restart fires as if the server had stayed up.
        let invitations = pending_invitations(state.sessions.values());
        // Sessions are idle from their last stored change on (`Session::changed_ms`, set as
        // they were put in above); an ad hoc one's timer reads the time of its last stored
        // message first (`Chat::adhoc_timer_restored`), the idle sweeper any other's when it
        // looks idle.
        let adhoc: Vec<String> = state
            .sessions
            .values()
            .filter(|s| s.adhoc)
            .map(|s| s.id.clone())
            .collect();
        let expiries: Vec<(String, i64)> = state
            .subscriptions
            .values()
            .filter_map(|s| s.rec.expires_at_ms.map(|t| (s.rec.id.clone(), t)))
            .collect();
        let counts = (state.sessions.len(), state.subscriptions.len());
        drop(state);
        // What fell due while the server was down fires here, one after the other in the order
        // it fell due (`overdue_in_order`); the rest is armed as usual.
        let (overdue, later) = overdue_in_order(invitations, expiries, now);
        for due in later {
            match due {
                Due::Invitation {
                    sid,
                    address,
                    seq,
                    at,
                } => self.invitation_timer(sid, address, seq, at),
                Due::Expiry { id, at } => self.expiry_timer(id, at),
            }
        }
        for due in overdue {
            match due {
                Due::Invitation {
                    sid, address, seq, ..
                } => self.invitation_timed_out(&sid, &address, seq),
                Due::Expiry { id, .. } => {
                    if let Some(next) = self.expiry_due(&id) {
                        self.expiry_timer(id, next);
                    }
                }
            }
        }
        for sid in adhoc {
            self.adhoc_timer_restored(sid, now);
        }
        for id in channels {
            self.channel_timer(id);
        }
        self.idle_sweeper();
        tracing::info!(
            sessions = counts.0,
            subscriptions = counts.1,
            pending_notifications = resumed,
            "state restored"
        );
        Ok(())
    }
}

/// The rule of a restart for the subscriptions that had expired (`expired`, each with its
/// [`SubscriptionRecord::expired_until_ms`]): those whose minute for their last
/// notifications still runs at `now`, each with its end, to be delivered until then (at most
/// a minute from `now`: the instance that wrote the end may have had a clock ahead of this
/// one's); and the ids of those whose minute is up, each with why, to be deleted with what
/// they still hold.
fn expired_leftovers(
    expired: Vec<SubscriptionRecord>,
    now: i64,
) -> (
    Vec<(SubscriptionRecord, i64)>,
    HashMap<String, &'static str>,
) {
    let latest = now.saturating_add(EXPIRY_NOTICE_WITHIN_MS);
    let mut running = Vec::new();
    let mut over = HashMap::new();
    for rec in expired {
        match rec.expired_until_ms {
            Some(until) if until > now => running.push((rec, until.min(latest))),
            _ => {
                over.insert(
                    rec.id,
                    "no server was running (or leading the database) when their minute after \
                     the expiry ended",
                );
            }
        }
    }
    (running, over)
}

/// A stored deadline: an invitation's timeout or a subscription's expiry, due at `at` (Unix ms).
#[derive(Debug, PartialEq)]
enum Due {
    /// An invitation's timeout (`Chat::invitation_timed_out`).
    Invitation {
        sid: String,
        address: String,
        seq: u64,
        at: i64,
    },
    /// A subscription's expiry (`Chat::expiry_due`).
    Expiry { id: String, at: i64 },
}

impl Due {
    fn at(&self) -> i64 {
        match self {
            Due::Invitation { at, .. } | Due::Expiry { at, .. } => *at,
        }
    }
}

/// The rule of a restart's deadlines: those due by `now` (passed while the server was down)
/// in the order they fell due, an invitation's timeout before an expiry due at the same
/// moment (its notification then still reaches the expiring subscription); and the others.
/// Fired as tasks due at once, the overdue raced: a subscription's expiry could run before an
/// invitation timeout due earlier, whose `Timeout` it then never got (the timers review of
/// 2026-12-07).
fn overdue_in_order(
    invitations: Vec<(String, String, u64, i64)>,
    expiries: Vec<(String, i64)>,
    now: i64,
) -> (Vec<Due>, Vec<Due>) {
    let all = invitations
        .into_iter()
        .map(|(sid, address, seq, at)| Due::Invitation {
            sid,
            address,
            seq,
            at,
        })
        .chain(expiries.into_iter().map(|(id, at)| Due::Expiry { id, at }));
    let (mut overdue, later): (Vec<Due>, Vec<Due>) = all.partition(|d| d.at() <= now);
    // Stable: at the same moment, invitations (listed first) before expiries.
    overdue.sort_by_key(Due::at);
    (overdue, later)
}

/// The live state the stored records describe, before anything runs on it.
#[derive(Debug, Default)]
struct Live {
    /// The persisted counters (absent in a new store).
    counters: Option<Counters>,
    /// Sessions that have not ended, in creation order.
    sessions: Vec<Session>,
    /// Ids of ended sessions an earlier version kept, to be deleted.
    ended: Vec<String>,
    /// Subscriptions, in creation order.
    subscriptions: Vec<SubscriptionRecord>,
    /// Subscriptions that expired, kept for their last notifications
    /// ([`SubscriptionRecord::expired_until_ms`]): nobody's any more.
    expired: Vec<SubscriptionRecord>,
    /// Notification channels, in creation order.
    channels: Vec<ChannelRecord>,
}

/// The rule of start-up: every record decodes as its stored type or the start stops with an
/// error naming it (guessing would serve wrong data, skipping would lose it at the next
/// write); a message record is an error too (messages stay in the store). Earlier versions
/// kept ended sessions readable; they are gone now, so they are listed for deletion instead
/// of being loaded.
fn read_records(records: Vec<(Kind, String, Vec<u8>)>) -> Result<Live, String> {
    let bad = |kind: Kind, key: &str, e: String| {
        format!("stored {} `{key}` is unreadable: {e}", kind.name())
    };
    let mut live = Live::default();
    let mut sessions: Vec<Session> = Vec::new();
    for (kind, key, value) in records {
        match kind {
            Kind::Meta => {
                live.counters =
                    Some(records::decode_counters(&value).map_err(|e| bad(kind, &key, e))?)
            }
            Kind::Subscription => live
                .subscriptions
                .push(records::decode_subscription(&value).map_err(|e| bad(kind, &key, e))?),
            Kind::Session => {
                sessions.push(records::decode_session(&value).map_err(|e| bad(kind, &key, e))?)
            }
            Kind::Channel => live
                .channels
                .push(records::decode_channel(&value).map_err(|e| bad(kind, &key, e))?),
            // Messages stay in the store and are read on demand; a backend never hands
            // them over at start-up.
            Kind::Message => {
                return Err(bad(
                    kind,
                    &key,
                    "messages are not loaded at start-up".to_owned(),
                ));
            }
        }
    }
    sessions.sort_by_key(|s| s.seq);
    let (ended, sessions): (Vec<Session>, Vec<Session>) =
        // A session nobody is in any more was stored open by an older version (before
        // `sessions::end_if_deserted`): it goes now, as it would have then (no notification:
        // it was deserted long ago), else nothing would ever end it.
        sessions
            .into_iter()
            .partition(|s| s.ended || super::sessions::deserted(s));
    live.ended = ended.into_iter().map(|s| s.id).collect();
    live.sessions = sessions;
    live.subscriptions.sort_by_key(|s| s.seq);
    let (expired, subscriptions) = std::mem::take(&mut live.subscriptions)
        .into_iter()
        .partition(|s| s.expired_until_ms.is_some());
    (live.expired, live.subscriptions) = (expired, subscriptions);
    live.channels.sort_by_key(|c| c.seq);
    Ok(live)
}

/// The invitations still waiting for an answer, as (session, invitee, invitation seq,
/// deadline): their timers fire after a restart as if the server had stayed up.
fn pending_invitations<'a>(
    sessions: impl Iterator<Item = &'a Session>,
) -> Vec<(String, String, u64, i64)> {
    let mut pending = Vec::new();
    for s in sessions {
        for p in &s.participants {
            if let Invitation::Pending { seq, deadline_ms } = p.invitation {
                pending.push((s.id.clone(), p.address.clone(), seq, deadline_ms));
            }
        }
    }
    pending
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;

    fn numbered(id: &str, seq: u64, ended: bool) -> Session {
        let mut s = session(false, &[(B, Invited, pending(seq))]);
        s.id = id.into();
        s.seq = seq;
        s.ended = ended;
        s
    }

    /// Live sessions and subscriptions come back in creation order whatever the key order;
    /// ended sessions of earlier versions, and sessions they kept open with nobody in them,
    /// are listed for deletion, not loaded.
    #[test]
    fn start_up_loads_what_is_live_in_creation_order() {
        let counters = Counters {
            next_id: 42,
            next_notification: 7,
        };
        let records = vec![
            (
                Kind::Meta,
                "counters".into(),
                records::encode_counters(&counters),
            ),
            (
                Kind::Session,
                "a".into(),
                records::encode_session(&numbered("s-3", 3, false)),
            ),
            (
                Kind::Session,
                "b".into(),
                records::encode_session(&numbered("s-1", 1, false)),
            ),
            (
                Kind::Session,
                "c".into(),
                records::encode_session(&numbered("s-2", 2, true)),
            ),
            (
                Kind::Session,
                "d".into(),
                records::encode_session(&{
                    // Stored open by an older version with nobody in it any more.
                    let mut s = numbered("s-4", 4, false);
                    for p in &mut s.participants {
                        p.status = Disconnected;
                        if p.invitation.is_pending() {
                            p.invitation = Invitation::Declined;
                        }
                    }
                    s
                }),
            ),
            (
                Kind::Subscription,
                "x".into(),
                records::encode_subscription(&subscription("sub-9", A, 9)),
            ),
            (
                Kind::Subscription,
                "y".into(),
                records::encode_subscription(&subscription("sub-4", A, 4)),
            ),
            (
                Kind::Subscription,
                "z".into(),
                records::encode_subscription(&SubscriptionRecord {
                    expired_until_ms: Some(5_000),
                    ..subscription("sub-2", A, 2)
                }),
            ),
        ];
        let live = read_records(records).unwrap();
        assert_eq!(
            live.counters.map(|c| (c.next_id, c.next_notification)),
            Some((42, 7))
        );
        let ids: Vec<&str> = live.sessions.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["s-1", "s-3"]);
        assert_eq!(live.ended, ["s-2", "s-4"], "ended, or deserted");
        let subs: Vec<&str> = live.subscriptions.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(subs, ["sub-4", "sub-9"], "an expired one is nobody's");
        let expired: Vec<&str> = live.expired.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(expired, ["sub-2"]);
        assert_eq!(
            pending_invitations(live.sessions.iter()),
            [
                ("s-1".to_owned(), B.to_owned(), 1, 1_000),
                ("s-3".to_owned(), B.to_owned(), 3, 1_000)
            ]
        );
    }

    /// After a restart, an expired subscription whose minute for its last notifications still
    /// runs delivers until its end; one whose minute is up (at `now` too) is deleted.
    #[test]
    fn expired_subscriptions_deliver_until_their_minute_is_up() {
        let expired = |id: &str, until: i64| SubscriptionRecord {
            expired_until_ms: Some(until),
            ..subscription(id, A, 1)
        };
        let (running, over) = expired_leftovers(
            vec![
                expired("sub-1", 999),
                expired("sub-2", 1_000),
                expired("sub-3", 1_001),
                // Written by an instance whose clock ran ahead: a minute from now at most.
                expired("sub-4", 1_000 + 10 * EXPIRY_NOTICE_WITHIN_MS),
            ],
            1_000,
        );
        let running: Vec<(&str, i64)> = running.iter().map(|(r, t)| (r.id.as_str(), *t)).collect();
        assert_eq!(
            running,
            [("sub-3", 1_001), ("sub-4", 1_000 + EXPIRY_NOTICE_WITHIN_MS)]
        );
        let mut over: Vec<&str> = over.keys().map(String::as_str).collect();
        over.sort_unstable();
        assert_eq!(over, ["sub-1", "sub-2"]);
    }

    /// A record that does not read stops the start with an error naming it; so does a
    /// message handed over at start-up.
    #[test]
    fn start_up_stops_at_a_record_it_cannot_read() {
        let err =
            read_records(vec![(Kind::Session, "s-1".into(), b"{not json".to_vec())]).unwrap_err();
        assert!(
            err.starts_with("stored session `s-1` is unreadable"),
            "{err}"
        );
        let err =
            read_records(vec![(Kind::Message, "s-1/m-1".into(), b"{}".to_vec())]).unwrap_err();
        assert!(
            err.contains("`s-1/m-1`") && err.contains("not loaded at start-up"),
            "{err}"
        );
        assert!(read_records(Vec::new()).unwrap().counters.is_none());
    }
}
