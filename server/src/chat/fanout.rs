//! Notification fan-out: a flow says *which user* is told *what*; this module turns that into
//! one outbox entry per subscription of that user (fresh notification id, the subscription's
//! `callbackData`, a last link to the subscription) and the delivery each entry becomes after
//! its commit.
//!
//! **Invariant:** a notification reaches a delivery queue only through [`Chat::notify`] into a
//! [`Change`], so it is in the same store batch as the records that caused it (the transactional
//! outbox), and queued only after that batch committed.
//!
//! A flow builds each notification once, in the seed's profile; a subscription made on the OMA
//! 2012 face gets it rendered in that face's profile (`oma2012::rendered`, once per user and
//! notification: one notification, or two where OMA 2012 tells more), and the outbox holds
//! what each subscription is told.

use super::oma2012;
use super::records;
use super::state::{Face, State};
use super::subscriptions;
use super::{Change, Chat, Outbox};
use crate::notify::{Delivery, Notification};
use crate::store::{OutboxEntry, Progress, now_ms};

impl Chat {
    /// Adds the notifications of `outbox` to the change: one outbox entry per subscription of
    /// each user, with a fresh id, the subscription's `callbackData` and its link.
    pub(super) fn notify(&self, state: &State, change: &mut Change, outbox: Outbox) {
        self.fan_out(state, change, outbox, None);
    }

    /// Like [`Chat::notify`], for notifications that are never stored (`isComposing`): no
    /// outbox entry (nothing to resend after a restart, no bytes counted against a backlog),
    /// a delivery deadline `deadline_ms` past which a queue drops it, and best effort: a
    /// queue whose callback fails or that is not short drops it at once
    /// (`notify::Delivery::best_effort`), so memory for them stays bounded.
    pub(super) fn notify_transient(
        &self,
        state: &State,
        change: &mut Change,
        outbox: Outbox,
        deadline_ms: i64,
    ) {
        self.fan_out(state, change, outbox, Some(deadline_ms));
    }

    fn fan_out(
        &self,
        state: &State,
        change: &mut Change,
        outbox: Outbox,
        deadline_ms: Option<i64>,
    ) {
        let created_ms = now_ms();
        for (user, n) in outbox {
            let Some(ids) = state.user_subscriptions.get(&user) else {
                continue;
            };
            let mut oma2012: Option<Vec<Notification>> = None;
            for id in ids {
                // A disabled subscription gets nothing new (see `disable_subscription`).
                let Some(sub) = state
                    .subscriptions
                    .get(id)
                    .filter(|s| s.rec.disabled.is_none())
                else {
                    continue;
                };
                let told: &[Notification] = match sub.rec.face {
                    Face::Seed => std::slice::from_ref(&n),
                    Face::Oma2012 => oma2012.get_or_insert_with(|| {
                        let s = oma2012::session_of(&n).and_then(|sid| state.sessions.get(sid));
                        oma2012::rendered(&self.urls, &user, s, n.clone())
                    }),
                };
                for mut n in told.iter().cloned() {
                    n.set_callback_data(sub.rec.callback.callback_data.clone());
                    n.push_link(subscriptions::link(&self.urls, &sub.rec));
                    // Its id comes at hand-over (`Change::number`).
                    if deadline_ms.is_some() {
                        // Best effort: a queue that cannot take it soon drops it (`Queue::push`).
                        let delivery = Delivery {
                            created_ms,
                            deadline_ms,
                            best_effort: true,
                            ..Delivery::new(0, n, 0)
                        };
                        change.new_notification(sub.queue.clone(), delivery, None);
                        continue;
                    }
                    let body = records::encode_notification(&n);
                    let delivery = Delivery {
                        created_ms,
                        ..Delivery::new(0, n, body.len())
                    };
                    let entry = OutboxEntry {
                        id: 0,
                        subscription: id.clone(),
                        body,
                        created_ms,
                        progress: Progress::default(),
                    };
                    change.new_notification(sub.queue.clone(), delivery, Some(entry));
                }
            }
        }
    }
}
