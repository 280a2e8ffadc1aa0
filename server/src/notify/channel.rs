//! Delivery into a notification channel (issue 15): the subscriptions whose `notifyURL` is a
//! channel's `callbackURL` put their notifications into the channel's [`Mailbox`], where the
//! application collects them by long polling or over a WebSocket, instead of having them
//! POSTed anywhere.
//!
//! The guarantees are those of a callback, because the path is the same up to the last step:
//! a notification is in the store's outbox from the commit of its cause, it reaches the
//! subscription's [`Queue`] after that commit, in order, and it leaves the outbox only when
//! the application has acknowledged it: a poll's `ack` names the last id of the previous
//! answer it read (what it does not cover comes again first, same ids), a poll without `ack`
//! acknowledges the whole previous answer (OMA: "each poll acknowledges the previous
//! answer"), our WebSocket binding acknowledges by `webhook-id`, and OMA's binding by the Pong
//! after a frame and `channel_socket::SETTLE` (5 s) more with the socket open. What a socket was sent and did not
//! get acknowledged comes again on the next socket or poll, and after a restart (the outbox is
//! loaded into the queues again), with the same id. Each subscription still has its own feed task, which applies the
//! subscription's state as the callback task does: cancelled or expired (only its
//! cancellation notice still goes), disabled (what arrives is buried as dead letters), and the
//! backlog cap and the share of the server's delivery budget, counted until acknowledged: a
//! subscription past either is disabled and what it holds in the channel becomes dead letters
//! with it (`give_way`), so that one channel's buffer is bounded by the caps of the
//! subscriptions feeding it (and those by the per-user subscription limit), and every
//! channel's together by the budget, as callbacks' backlogs are.

use super::{
    CANCELLED, DISABLED_STATE, Deliverer, Delivery, EXPIRED, Forgetter, LIVE, Left, Notification,
    Queue, Shared, Target, bury, disable, drop_expired, keep_cancellation_notices, settle,
};
use crate::signing::Signer;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};

/// Set when the server stops: waiting polls answer (an empty list) at once instead of holding
/// up the drain of requests in flight, and sockets close.
static ENDING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Rings when [`ENDING`] is set.
static ENDING_BELL: Notify = Notify::const_new();

/// The server is stopping (SIGTERM/SIGINT): every waiting poll answers now, with what it took
/// so far (nothing), and no new one waits; what waits in the mailboxes stays in the outbox for
/// the next start.
pub fn end_polls() {
    ENDING.store(true, Ordering::SeqCst);
    ENDING_BELL.notify_waiters();
}

/// Whether the server is stopping (see [`end_polls`]).
pub fn ending() -> bool {
    ENDING.load(Ordering::SeqCst)
}

/// A notification waiting in a channel, with the backlog it counts against.
struct Held {
    delivery: Delivery,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Inner {
    /// Not handed out yet, in arrival order (per subscription: creation order).
    pending: VecDeque<Held>,
    /// Handed to the last poll, waiting for the next poll to acknowledge them.
    handed: Vec<Held>,
    /// The ids of what was handed, in the order answered, which an `ack` names a place in: a
    /// disabled subscription's notifications leave `handed` ([`Mailbox::withdraw`]), and an
    /// `ack` naming one of them (the last id of the answer, as clients send) found nothing,
    /// so the rest of that answer was answered again.
    answered: Vec<u64>,
    /// The channel is gone: polls answer 404, nothing is taken any more.
    closed: bool,
    /// Number of the newest poll: an older one still waiting sees it changed and ends.
    poll: u64,
    /// Polls waiting now (a channel does not expire under a waiting poll).
    waiting: usize,
}

/// Where a channel's notifications wait for the application's polls.
pub struct Mailbox {
    inner: Mutex<Inner>,
    bell: Notify,
    /// Where acknowledged notifications are forgotten: the same grouped forgets as delivered
    /// callbacks (`super::forget`), so an acknowledgement costs no store commit of its own.
    forgetter: Forgetter,
    /// The server-wide key, which signs for a subscription without keys of its own (as for a
    /// callback).
    signer: Option<Arc<Signer>>,
}

/// A notification a poll (or socket) took: its outbox id (its `webhook-id`), the notification,
/// and the keys that sign it as they would sign its callback now (the subscription's own
/// current keys, else the server-wide one).
#[derive(Debug)]
pub struct Taken {
    /// Outbox id.
    pub id: u64,
    /// The notification, `callbackData` set.
    pub notification: Notification,
    /// The keys a callback of it would be signed with now.
    pub keys: Vec<Arc<Signer>>,
}

/// What a poll ends with.
#[derive(Debug)]
pub enum Polled {
    /// The notifications handed out (oldest first; empty when the wait ran out).
    Notifications(Vec<Taken>),
    /// The channel was deleted or expired.
    Closed,
    /// A newer poll of the channel took over (OMA `SVC1012`).
    Superseded,
    /// The poll's credentials stopped granting the channel while it waited (a token revoked,
    /// a JWT past its `exp`): nothing was taken.
    Revoked,
}

/// What a poll says about the previous answer of its channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ack {
    /// No `ack` (OMA 2012): the previous answer is acknowledged whole.
    Previous,
    /// `ack=<webhookId>`: the client has processed up to this outbox id (`None`: nothing).
    Through(Option<u64>),
}

/// How many of the previous answer (its outbox ids, in the order answered) an acknowledgement
/// covers: all of it without `ack`; with one, the prefix up to and including the id named, or
/// nothing when the id is not in it (the client read none of that answer). The rest is
/// answered again.
pub fn acknowledged(handed: &[u64], ack: Ack) -> usize {
    match ack {
        Ack::Previous => handed.len(),
        Ack::Through(None) => 0,
        Ack::Through(Some(id)) => handed.iter().position(|h| *h == id).map_or(0, |i| i + 1),
    }
}

/// Which of `pending` a poll takes: at most `max`, skipping nothing; the rule as a plain
/// function of the queue length.
pub fn take_count(pending: usize, max: usize) -> usize {
    pending.min(max.max(1))
}

/// Why notifications leave a channel by [`Mailbox::acknowledge`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Acked {
    /// Its client acknowledged them: delivered.
    Delivered,
    /// Not to be handed any more ([`take_wanted`]): dropped, not delivered.
    Unwanted,
}

impl Mailbox {
    /// An empty mailbox; acknowledged notifications are forgotten through `forgetter`;
    /// `signer` is the server-wide key.
    pub fn new(forgetter: Forgetter, signer: Option<Arc<Signer>>) -> Arc<Mailbox> {
        Arc::new(Mailbox {
            inner: Mutex::new(Inner::default()),
            bell: Notify::new(),
            forgetter,
            signer,
        })
    }

    /// What a callback of `held` would be signed with now.
    fn keys(&self, held: &Held) -> Vec<Arc<Signer>> {
        let own = held.shared.keys_at(crate::store::now_ms());
        if own.is_empty() {
            self.signer.iter().cloned().collect()
        } else {
            own
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a notification (after those already there) and wakes a waiting poll.
    fn put(&self, held: Held) {
        {
            let mut inner = self.lock();
            if inner.closed {
                // The channel is going with its subscriptions and their outbox rows; it
                // leaves its subscription's backlog (and the server's totals) too.
                drop(inner);
                held.shared.done(&held.delivery, Left::Discarded);
                return;
            }
            inner.pending.push_back(held);
        }
        self.bell.notify_waiters();
    }

    /// The channel is gone: a waiting poll answers 404, nothing more is taken. What it holds
    /// is dropped: the subscriptions feeding it are deleted with their outbox rows in the same
    /// change.
    pub fn close(&self) {
        let dropped: Vec<Held> = {
            let mut inner = self.lock();
            inner.closed = true;
            let handed = std::mem::take(&mut inner.handed);
            inner.pending.drain(..).chain(handed).collect()
        };
        // Off their subscriptions' backlogs and the server's delivery totals
        // (`super::Totals`), which would otherwise count them for good.
        for h in &dropped {
            h.shared.done(&h.delivery, Left::Discarded);
        }
        self.bell.notify_waiters();
    }

    /// Takes out everything of the subscription of `shared` (what a poll or socket was handed
    /// and has not acknowledged, then what waits), in its order, for it to become dead
    /// letters: the subscription was disabled, and a disabled subscription holds nothing in
    /// memory (what its channel held used to stay there for the channel's lifetime, counted
    /// against the delivery budget and freed by nothing). Its notifications are still in the
    /// outbox; the caller buries them. An acknowledgement naming one of them later finds
    /// nothing to forget: it stays a dead letter (a redelivery hands it again, same id).
    fn withdraw(&self, shared: &Arc<Shared>) -> Vec<Delivery> {
        let mut inner = self.lock();
        let Inner {
            pending, handed, ..
        } = &mut *inner;
        take_where(handed, pending, |h| Arc::ptr_eq(&h.shared, shared))
            .into_iter()
            .map(|h| h.delivery)
            .collect()
    }

    /// The feed of the subscription of `shared` ended (it was deleted, or it expired and its
    /// minute is up): what waits of it in the mailbox will never be handed, so it leaves now,
    /// off the subscription's backlog and the server's delivery totals, as a poll passing
    /// over it would drop it ([`take_wanted`]). What a poll or socket was handed stays until
    /// acknowledged (its client has it: an acknowledgement still records it delivered) or put
    /// back, at most one answer. Left for a poll, it stayed for as long
    /// as nobody polled (a channel's lifetime is refreshed without a poll), counted against
    /// the server's delivery budget: a client deleting and making again a subscription of a
    /// channel it never polled pinned the whole budget, and every other backlog over its
    /// shrunken share was disabled.
    fn let_go(&self, shared: &Arc<Shared>) {
        let gone: Vec<Held> = {
            let mut inner = self.lock();
            let mut handed = Vec::new();
            take_where(&mut handed, &mut inner.pending, |h| {
                Arc::ptr_eq(&h.shared, shared)
            })
        };
        self.acknowledge(gone, Acked::Unwanted);
    }

    /// A socket takes the channel over, in one step under the lock: what an earlier socket was
    /// handed and did not acknowledge goes back in front of what waits (it is sent again, with
    /// the same id), and an earlier socket (or poll) still waiting is superseded. Answers the
    /// socket's generation, which its later calls name.
    pub fn take_over(&self) -> u64 {
        let me = {
            let mut inner = self.lock();
            inner.poll += 1;
            put_back(&mut inner);
            inner.poll
        };
        self.bell.notify_waiters();
        me
    }

    /// A socket of generation `me` is gone without acknowledging what it was handed: that goes
    /// back in front, unless a newer socket has taken over (it did that already, and what is
    /// handed now is the newer socket's); what of it will never be handed again (its
    /// subscription deleted, or expired and its minute up: [`Mailbox::let_go`] ran while it
    /// was handed) leaves instead, as a poll passing over it would drop it, since no poll
    /// may come.
    pub fn release(&self, me: u64) {
        let gone = {
            let mut inner = self.lock();
            if inner.poll != me {
                return;
            }
            let now = crate::store::now_ms();
            let (gone, kept): (Vec<Held>, Vec<Held>) = std::mem::take(&mut inner.handed)
                .into_iter()
                .partition(|h| h.shared.skips(now));
            inner.handed = kept;
            put_back(&mut inner);
            gone
        };
        self.acknowledge(gone, Acked::Unwanted);
    }

    /// The client of a socket acknowledged notification `id`: it leaves the outbox wherever it
    /// waits (handed to this socket, or put back by a newer socket's take-over, which may have
    /// sent it again: the client has it all the same).
    pub fn acknowledge_id(&self, id: u64) {
        self.acknowledge_ids(&[id]);
    }

    /// [`Mailbox::acknowledge_id`] for every id of `ids` at once (an OMA socket's frame
    /// carries several, acknowledged together by one Pong), in one forget.
    pub fn acknowledge_ids(&self, ids: &[u64]) {
        let mut inner = self.lock();
        let mut done = Vec::with_capacity(ids.len());
        for id in ids {
            inner.answered.retain(|a| a != id);
            if let Some(i) = inner.handed.iter().position(|h| h.delivery.id == *id) {
                done.push(inner.handed.remove(i));
            } else if let Some(h) = inner
                .pending
                .iter()
                .position(|h| h.delivery.id == *id)
                .and_then(|i| inner.pending.remove(i))
            {
                done.push(h);
            }
        }
        // Nothing handed is left to acknowledge: nothing of that answer to name any more
        // (withdrawn ids included), so `answered` does not grow over a socket's life.
        if inner.handed.is_empty() {
            inner.answered.clear();
        }
        self.acknowledge(done, Acked::Delivered);
    }

    /// The next notifications for the socket of generation `me` (taking them,
    /// unacknowledged): at most `max` (our protocol takes 1, an OMA socket its channel's
    /// `maxNotifications`, by the long poll's [`take_count`]) and at most [`FRAME_BYTES`] of
    /// them ([`take_wanted`]), waiting up to `wait`;
    /// `Superseded` once a newer socket took over.
    pub async fn next(&self, me: u64, max: usize, wait: Duration) -> Polled {
        {
            let mut inner = self.lock();
            if inner.closed {
                return Polled::Closed;
            }
            inner.waiting += 1;
        }
        let _waiting = Waiting(self);
        // A socket checks its own grant before each frame (`channel_socket`).
        self.wait_for(me, (max, FRAME_BYTES), wait, &|| true).await
    }

    /// The generation of the newest socket or poll (a socket that sees it change was taken
    /// over).
    pub fn generation(&self) -> u64 {
        self.lock().poll
    }

    /// Whether the channel is gone.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Whether a poll is waiting now.
    pub fn polling(&self) -> bool {
        self.lock().waiting > 0
    }

    /// One long poll: acknowledges what `ack` covers of the previous answer (it leaves the
    /// outbox; the rest is put back in front, to be answered again), ends a poll still
    /// waiting (`Superseded`), then waits up to `wait` for notifications and takes at most
    /// `max` of them, as long as `granted()` says the poll's credentials still grant the
    /// channel (asked each time the poll wakes, before it takes anything).
    pub async fn poll(
        &self,
        ack: Ack,
        max: usize,
        wait: Duration,
        granted: &(dyn Fn() -> bool + Send + Sync),
    ) -> Polled {
        let me = {
            let mut inner = self.lock();
            if inner.closed {
                return Polled::Closed;
            }
            inner.poll += 1;
            let answered = std::mem::take(&mut inner.answered);
            let through = &answered[..acknowledged(&answered, ack)];
            let (acked, kept): (Vec<Held>, Vec<Held>) = std::mem::take(&mut inner.handed)
                .into_iter()
                .partition(|h| through.contains(&h.delivery.id));
            inner.handed = kept;
            put_back(&mut inner);
            self.acknowledge(acked, Acked::Delivered);
            inner.waiting += 1;
            inner.poll
        };
        // Counted down however the wait ends (a dropped request included).
        let _waiting = Waiting(self);
        // An older poll still waiting wakes, sees the newer number and ends.
        self.bell.notify_waiters();
        self.wait_for(me, (max, ANSWER_BYTES), wait, granted).await
    }

    /// Waits up to `wait` for notifications and takes at most `max` of them, and no more once
    /// they weigh `budget` ([`take_wanted`]).
    async fn wait_for(
        &self,
        me: u64,
        (max, budget): (usize, usize),
        wait: Duration,
        granted: &(dyn Fn() -> bool + Send + Sync),
    ) -> Polled {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.bell.notified();
            tokio::pin!(notified);
            // Registered before looking, so a put between the look and the wait is not missed.
            notified.as_mut().enable();
            let stopping = ENDING_BELL.notified();
            tokio::pin!(stopping);
            stopping.as_mut().enable();
            if ending() {
                return Polled::Notifications(Vec::new());
            }
            if !granted() {
                return Polled::Revoked;
            }
            {
                let mut inner = self.lock();
                if inner.closed {
                    return Polled::Closed;
                }
                if inner.poll != me {
                    return Polled::Superseded;
                }
                let now = crate::store::now_ms();
                let (taken, dropped) = take_wanted(
                    &mut inner.pending,
                    (max, budget),
                    |h| h.shared.skips(now) || lapsed(h.delivery.deadline_ms, now),
                    |h| h.delivery.bytes,
                );
                self.acknowledge(dropped, Acked::Unwanted);
                if !taken.is_empty() {
                    let out = taken
                        .iter()
                        .map(|h| Taken {
                            id: h.delivery.id,
                            notification: h.delivery.notification.clone(),
                            keys: self.keys(h),
                        })
                        .collect();
                    // Added to what is handed and not acknowledged yet (an OMA socket's frames
                    // settle after their Pong, `channel_socket::SETTLE`): a release or a
                    // take-over puts all of it back.
                    inner.answered.extend(taken.iter().map(|h| h.delivery.id));
                    inner.handed.extend(taken);
                    return Polled::Notifications(out);
                }
            }
            tokio::select! {
                () = &mut notified => {}
                () = &mut stopping => {}
                () = tokio::time::sleep_until(deadline) => return Polled::Notifications(Vec::new()),
            }
        }
    }

    /// Forgets acknowledged (or unwanted) notifications through the grouped forgets and takes
    /// them off their subscriptions' backlogs. As for a delivered callback, a crash within
    /// `super::forget::FORGET_DELAY` of the acknowledgement hands them again (same id) after the
    /// restart; a graceful stop waits for the forget to be submitted. What a subscription's
    /// hook takes over (`super::OnDelivered`) is forgotten with its record instead.
    fn acknowledge(&self, done: Vec<Held>, why: Acked) {
        if done.is_empty() {
            return;
        }
        // What reached the client is told to its subscription's hook, which may take the
        // forget over (`super::OnDelivered`).
        let ids: Vec<u64> = done
            .iter()
            .filter(|h| why == Acked::Unwanted || !h.shared.delivered(&h.delivery))
            .map(|h| h.delivery.id)
            .collect();
        let left = match why {
            Acked::Delivered => Left::Delivered,
            Acked::Unwanted => Left::Discarded,
        };
        for h in &done {
            h.shared.done(&h.delivery, left);
        }
        self.forgetter.forget(&ids);
    }
}

/// Puts what was handed and not acknowledged back in front of what waits, in its order.
fn put_back(inner: &mut Inner) {
    inner.answered.clear();
    let handed = std::mem::take(&mut inner.handed);
    for h in handed.into_iter().rev() {
        inner.pending.push_front(h);
    }
}

/// Takes out of a mailbox what `mine` selects, in the order a poll would get it: what was
/// handed (the older) before what waits; the rest stays in its order.
fn take_where<T>(
    handed: &mut Vec<T>,
    pending: &mut VecDeque<T>,
    mine: impl Fn(&T) -> bool,
) -> Vec<T> {
    let mut taken = Vec::new();
    let (kept_handed, kept_pending) = (
        std::mem::take(handed).into_iter(),
        std::mem::take(pending).into_iter(),
    );
    for t in kept_handed {
        if mine(&t) {
            taken.push(t);
        } else {
            handed.push(t);
        }
    }
    for t in kept_pending {
        if mine(&t) {
            taken.push(t);
        } else {
            pending.push_back(t);
        }
    }
    taken
}

/// One poll waiting on a mailbox, for as long as it lives.
struct Waiting<'a>(&'a Mailbox);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut inner = self.0.lock();
        inner.waiting = inner.waiting.saturating_sub(1);
    }
}

/// Takes from the front of `pending` what a poll answers, at most [`take_count`] of `max`,
/// and no more once what it took `weighs` `budget` or more (the first one always goes); and,
/// passed on the way, what must not be handed any more (`unwanted`; returned apart, to be
/// dropped): notifications of a subscription deleted since they arrived, and, of an expired
/// one, what is left once its time is up (as the callback task does, [`super::skipped`]); and
/// one past its delivery deadline (a lapsed `isComposing`: never handed late, as the callback
/// task does not send it late). Only the front is looked at, so a poll's work follows what it
/// takes and drops, not the backlog behind: a poll used to rebuild the whole queue, and a
/// socket draining a backlog of N one frame at a time moved N²/2 entries.
fn take_wanted<T>(
    pending: &mut VecDeque<T>,
    (max, budget): (usize, usize),
    unwanted: impl Fn(&T) -> bool,
    weighs: impl Fn(&T) -> usize,
) -> (Vec<T>, Vec<T>) {
    let mut taken = Vec::new();
    let mut dropped = Vec::new();
    let mut weight = 0usize;
    while taken.len() < take_count(pending.len() + taken.len(), max) && weight < budget {
        let Some(t) = pending.pop_front() else {
            break;
        };
        if unwanted(&t) {
            dropped.push(t);
        } else {
            weight = weight.saturating_add(weighs(&t));
            taken.push(t);
        }
    }
    (taken, dropped)
}

/// Most bytes of notifications (as stored) one poll's answer carries (a socket's frame
/// carries less: [`FRAME_BYTES`]): a page's budget ([`crate::chat::page::PAGE_BYTES`]). A channel's `maxNotifications`
/// (at most 100) bounds the count; invitations to large sessions, each with its roster,
/// made 100 of them tens of megabytes in one answer.
const ANSWER_BYTES: usize = crate::chat::page::PAGE_BYTES;

/// Most bytes of notifications (as stored) one socket frame carries (the first always goes):
/// a socket's write buffer keeps the room of the largest frame it sent for as long as it is
/// open (tungstenite never shrinks it), so frames of [`ANSWER_BYTES`] left up to a MiB
/// (encoded) behind each of thousands of sockets. A socket sends as many frames as it needs.
const FRAME_BYTES: usize = 64 * 1024;

/// Whether a notification with delivery deadline `deadline_ms` may no longer be handed out at
/// `now_ms` (none: it never lapses).
pub fn lapsed(deadline_ms: Option<i64>, now_ms: i64) -> bool {
    deadline_ms.is_some_and(|t| now_ms > t)
}

impl Queue {
    /// Starts the feed task of a subscription that delivers into a channel's `mailbox`
    /// (its `notifyURL` is the channel's `callbackURL`).
    pub fn start_channel(target: Target, deliverer: Deliverer, mailbox: Arc<Mailbox>) -> Queue {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            channel: true,
            ..Shared::new(&deliverer)
        });
        tokio::spawn(feed(target, rx, Arc::clone(&shared), deliverer, mailbox));
        Queue { tx, shared }
    }
}

/// One subscription's feed into its channel: the subscription's state and backlog cap
/// applied as in the callback task, then the notification waits in the mailbox. Between
/// notifications it listens for a push past the server's budget, which may make what its
/// channel holds the share that gives way ([`Shared::budget_passed`]).
async fn feed(
    target: Target,
    mut rx: mpsc::UnboundedReceiver<super::Queued>,
    shared: Arc<Shared>,
    d: Deliverer,
    mailbox: Arc<Mailbox>,
) {
    loop {
        let item = tokio::select! {
            item = rx.recv() => match item {
                Some(item) => *item,
                None => {
                    outlive_expired(&target, &d, &shared, &mailbox).await;
                    if matches!(shared.state.load(Ordering::SeqCst), CANCELLED | EXPIRED) {
                        mailbox.let_go(&shared);
                    }
                    return;
                }
            },
            () = shared.budget_passed() => {
                let state = shared.state.load(Ordering::SeqCst);
                if state == LIVE
                    && let Some(why) = shared.too_full(&d.policy)
                {
                    let _ = give_way(&target, &d, &shared, &mailbox, why, None);
                } else if state == EXPIRED && shared.expired_over_budget(&d.policy) {
                    shed_expired(&target, &d, &shared, &mailbox, None);
                }
                continue;
            }
        };
        let state = shared.state.load(Ordering::SeqCst);
        let Some(item) = settle(state, item, &mut rx, &target, &d, &shared) else {
            continue;
        };
        if state == EXPIRED && shared.expired_over_budget(&d.policy) {
            shed_expired(&target, &d, &shared, &mailbox, Some(item));
            continue;
        }
        let item = if state == LIVE
            && let Some(why) = shared.too_full(&d.policy)
        {
            match give_way(&target, &d, &shared, &mailbox, why, Some(item)) {
                Some(item) => item,
                None => continue,
            }
        } else {
            item
        };
        mailbox.put(Held {
            delivery: item,
            shared: Arc::clone(&shared),
        });
    }
}

/// The subscription is gone (every sender dropped). An expired one's leftovers still wait in
/// the mailbox for their minute (a poll drops what is left after it): until then they give way
/// to a full budget like a live backlog ([`shed_expired`]); the feed is their only listener.
async fn outlive_expired(target: &Target, d: &Deliverer, shared: &Arc<Shared>, mailbox: &Mailbox) {
    if shared.state.load(Ordering::SeqCst) != EXPIRED {
        return;
    }
    let until = shared.expired_until_ms.load(Ordering::SeqCst);
    let left = u64::try_from(until.saturating_sub(crate::store::now_ms())).unwrap_or(0);
    let minute_up = tokio::time::sleep(Duration::from_millis(left));
    tokio::pin!(minute_up);
    loop {
        tokio::select! {
            () = &mut minute_up => return,
            () = shared.budget_passed() => {
                if shared.expired_over_budget(&d.policy) {
                    shed_expired(target, d, shared, mailbox, None);
                }
            }
        }
    }
}

/// An expired subscription's leftovers in the channel (and `item`, arriving) hold more than
/// their share of a full delivery budget: dropped now, as the callback task drops them
/// (`super::shed_expired_over_budget`), its cancellation notice kept for the next poll.
fn shed_expired(
    target: &Target,
    d: &Deliverer,
    shared: &Arc<Shared>,
    mailbox: &Mailbox,
    item: Option<Delivery>,
) {
    let mut held = mailbox.withdraw(shared);
    held.extend(item);
    let (kept, dropped) = keep_cancellation_notices(held);
    drop_expired(target, d, shared, dropped);
    for notice in kept {
        mailbox.put(Held {
            delivery: notice,
            shared: Arc::clone(shared),
        });
    }
}

/// The application does not keep up (its subscription's backlog past its cap, or over its
/// share of a full delivery budget): as for a callback, the subscription is disabled, and what
/// its channel holds, with `item` that came past the cap, becomes dead letters (within the
/// per-subscription cap) and leaves memory, so that the budget gets back what it counted.
/// `item` comes back when the subscription was not disabled after all: cancelled or expired
/// in the meantime, it is left to the rules of that state (an expired subscription's backlog
/// is still handed out until its time is up), as the callback task leaves it.
#[must_use]
fn give_way(
    target: &Target,
    d: &Deliverer,
    shared: &Arc<Shared>,
    mailbox: &Mailbox,
    why: super::DisableReason,
    item: Option<Delivery>,
) -> Option<Delivery> {
    disable(target, d, shared, why, shared.count.load(Ordering::SeqCst));
    if shared.state.load(Ordering::SeqCst) != DISABLED_STATE {
        return item;
    }
    let mut dead = mailbox.withdraw(shared);
    dead.extend(item);
    bury(target, d, shared, dead);
    None
}

#[cfg(test)]
mod tests {
    use super::super::{CANCELLED, DISABLED_STATE, EXPIRED, LIVE, skipped};
    use super::{Ack, acknowledged, lapsed, take_count, take_wanted, take_where};
    use std::collections::VecDeque;

    /// A cancelled subscription's notifications are all dropped at once; an expired one's
    /// (its backlog, then its cancellation notice) only once its time is up; a live or
    /// disabled one's never (disabled ones become dead letters).
    #[test]
    fn the_skip_rule() {
        let (until, before, after) = (1_000, 999, 1_001);
        assert!(skipped(CANCELLED, 0, before) && skipped(CANCELLED, until, before));
        assert!(!skipped(EXPIRED, until, before) && !skipped(EXPIRED, until, until));
        assert!(skipped(EXPIRED, until, after));
        for state in [LIVE, DISABLED_STATE] {
            assert!(!skipped(state, 0, after) && !skipped(state, until, after));
        }
    }

    /// Without `ack` the previous answer is acknowledged whole (OMA 2012); with one, up to the
    /// id named; an id not in the answer (or `ack=` empty) acknowledges none of it.
    #[test]
    fn an_ack_covers_the_answer_up_to_the_id_it_names() {
        let handed = [7, 9, 12];
        assert_eq!(acknowledged(&handed, Ack::Previous), 3);
        assert_eq!(acknowledged(&handed, Ack::Through(Some(7))), 1);
        assert_eq!(acknowledged(&handed, Ack::Through(Some(12))), 3);
        assert_eq!(acknowledged(&handed, Ack::Through(Some(5))), 0);
        assert_eq!(acknowledged(&handed, Ack::Through(None)), 0);
        assert_eq!(acknowledged(&[], Ack::Through(Some(5))), 0);
        assert_eq!(acknowledged(&[], Ack::Previous), 0);
    }

    #[test]
    fn a_notification_lapses_only_past_its_deadline() {
        assert!(!lapsed(None, i64::MAX));
        assert!(!lapsed(Some(1_000), 999));
        assert!(!lapsed(Some(1_000), 1_000));
        assert!(lapsed(Some(1_000), 1_001));
    }

    /// A poll takes what is there, at most its channel's maximum, and at least one when
    /// something waits (a maximum of 0 would hand out nothing forever).
    #[test]
    fn a_poll_takes_at_most_its_maximum() {
        assert_eq!(take_count(0, 20), 0);
        assert_eq!(take_count(3, 20), 3);
        assert_eq!(take_count(30, 20), 20);
        assert_eq!(take_count(5, 0), 1);
    }

    /// A poll takes from the front what may still be handed, dropping what may not on the
    /// way, and leaves the rest as it is (a poll's work follows what it takes, not the
    /// backlog: the unwanted one behind is dropped when a poll reaches it).
    #[test]
    fn a_poll_takes_from_the_front_and_drops_what_it_passes() {
        // Multiples of 3 are unwanted.
        let unwanted = |n: &i32| n % 3 == 0;
        let weighs = |n: &i32| usize::try_from(*n).unwrap_or(0);
        let take = |p: &mut VecDeque<i32>, max| take_wanted(p, (max, 100), unwanted, weighs);
        let mut pending = VecDeque::from([3, 1, 6, 2, 4, 9, 5]);
        assert_eq!(take(&mut pending, 2), (vec![1, 2], vec![3, 6]));
        assert_eq!(pending, [4, 9, 5]);
        // A maximum of 0 takes one; the end of the queue ends the walk.
        assert_eq!(take(&mut pending, 0), (vec![4], vec![]));
        assert_eq!(take(&mut pending, 20), (vec![5], vec![9]));
        assert!(pending.is_empty());
        let mut only_unwanted = VecDeque::from([3, 6]);
        assert_eq!(take(&mut only_unwanted, 20), (vec![], vec![3, 6]));
        // The budget: taking stops once what was taken weighs it (the first always goes).
        let mut heavy = VecDeque::from([70, 20, 10, 5]);
        assert_eq!(
            take_wanted(&mut heavy, (20, 100), |_| false, weighs),
            (vec![70, 20, 10], vec![])
        );
        let mut one_too_heavy = VecDeque::from([500, 1]);
        assert_eq!(
            take_wanted(&mut one_too_heavy, (20, 100), |_| false, weighs),
            (vec![500], vec![])
        );
    }

    /// A subscription's notifications leave a mailbox in their order (what was handed, then
    /// what waits), and the other subscriptions' stay where they were, in theirs.
    #[test]
    fn what_a_subscription_holds_leaves_the_mailbox_in_order() {
        // Even numbers are the disabled subscription's.
        let mut handed = vec![2, 3, 4];
        let mut pending = VecDeque::from([5, 6, 7, 8]);
        let taken = take_where(&mut handed, &mut pending, |n| n % 2 == 0);
        assert_eq!(taken, [2, 4, 6, 8]);
        assert_eq!(handed, [3]);
        assert_eq!(pending, [5, 7]);
        let taken = take_where(&mut handed, &mut pending, |n| n % 2 == 0);
        assert!(taken.is_empty());
        assert_eq!((handed, pending), (vec![3], VecDeque::from([5, 7])));
    }
}
