//! The records the chat core keeps: subscriptions, sessions, participants and messages.
//!
//! These are the core's working types, free to hold generated API types and to change with the
//! code; they have no serde form. What the store persists is the separate, versioned stored
//! format of [`super::records`], converted from and to these types.

use crate::notify::Queue;
use netapi_chat_api::{CallbackReference, MessageStatus, ParticipantStatus};
use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Everything the server knows, behind one read-write lock (see [`super::Chat`]): a change
/// of a session, a subscription or a channel record (and an `isComposing`, for its rate log)
/// writes it; reads, a message sent or confirmed, and a channel's polls only read it, with
/// the few fields they advance ([`State::ids`], [`State::active`],
/// `Channel::expires_at_ms`) atomic.
#[derive(Default)]
pub struct State {
    /// Subscriptions by id.
    pub subscriptions: HashMap<String, Subscription>,
    /// Subscription ids per user address, so a notification finds its callbacks at once.
    pub user_subscriptions: HashMap<String, Vec<String>>,
    /// Sessions by id. Put in and taken out only by [`State::put_session`] and
    /// [`State::take_session`], which keep `user_sessions`, `user_adhoc`, `correlated`,
    /// `active`, `idle_order`, `tally` and `owners` with it.
    pub sessions: HashMap<String, Session>,
    /// Session ids per user address, with and by the session's `seq` (creation order): a
    /// listing's page is a range of it, and a session leaves it in one step.
    user_sessions: HashMap<String, BTreeSet<(u64, String)>>,
    /// The ad hoc sessions (`Session::adhoc`) each user is in, by id: the few an ad hoc send
    /// looks among ([`State::adhoc_sessions_of`]), instead of every session naming the user,
    /// which others lengthen by inviting it.
    user_adhoc: HashMap<String, Vec<String>>,
    /// The session an originator started with each `clientCorrelator` (the first, if a data
    /// directory of an older version holds several): a resent start finds it at once
    /// ([`State::started_with`]).
    correlated: HashMap<(String, String), String>,
    /// What the per-user limits count of the sessions (see [`Tally`]).
    tally: Tally,
    /// Persisted counters, advanced by readers too (see [`Ids`]).
    pub ids: Ids,
    /// When each inviter sent its recent invitations (the invitation rate; not persisted).
    pub invitations_sent: super::quota::SendLog,
    /// When each sender last indicated `isComposing` (its rate; not persisted).
    pub composing: super::composing::Log,
    /// Notification channels by id (see `super::channels`).
    pub channels: HashMap<String, Channel>,
    /// Channel ids per user address, in creation order (at most the per-user channel limit).
    pub user_channels: HashMap<String, Vec<String>>,
    /// When each session was last active, Unix ms: its last message or decision. An ad hoc
    /// session's idle timer ends it once this is older than `NETAPI_CHAT_ADHOC_IDLE_SECS`,
    /// the idle sweeper any other once it is older than `NETAPI_CHAT_SESSION_IDLE_SECS`
    /// (`Chat::idle_sweeper`). One entry per session held, kept by [`State::put_session`] and
    /// [`State::take_session`]; not stored as such (a session's record keeps its last
    /// decision's time, [`Session::changed_ms`], and its messages theirs). A send moves it
    /// under the read lock ([`Clock::at`]).
    pub active: HashMap<String, Clock>,
    /// Every session held by the time its [`Clock`] is filed under (`Clock::filed`), so that
    /// the idle sweeper reads only the sessions whose filed time is the idle time behind
    /// ([`State::filed_before`]) instead of every session's clock each round (about 30 ms
    /// under the read lock for 100,000 sessions; `timers::idle_sweep_cost`). Kept by [`State::put_session`],
    /// [`State::take_session`] and [`State::refile`].
    idle_order: BTreeSet<(i64, String)>,
    /// Channel id by its `callbackURL` (keyed by `channels::callback_key`, so any spelling
    /// RFC 3986 makes equal finds it): how a subscription's `notifyURL` is recognised as a
    /// channel before the callback policy would look at it.
    pub channel_callbacks: HashMap<String, String>,
    /// What each token holds of what the server-wide caps count ([`Owners`]), for its share
    /// of them (`NETAPI_CHAT_TOKEN_SHARE_PERCENT`). Kept by [`State::put_session`],
    /// [`State::take_session`] and the subscriptions' and channels' attach and remove.
    pub owners: Owners,
}

/// The kinds of resource a server-wide cap counts (`super::InAll`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Held {
    Sessions = 0,
    Subscriptions = 1,
    Channels = 2,
}

/// How many sessions, subscriptions and channels each token holds (by `Principal::token_id`,
/// as stored in each record's `owner`): what a token's share of a server-wide cap is weighed
/// against. A record with no owner (made before stored format 11) counts for no token. An
/// entry goes with its token's last resource, so memory follows what is held.
#[derive(Debug, Default)]
pub struct Owners([HashMap<String, usize>; 3]);

impl Owners {
    /// What `owner` holds of `kind`.
    pub fn held(&self, owner: &str, kind: Held) -> usize {
        self.0[kind as usize].get(owner).copied().unwrap_or(0)
    }

    /// One more (`add`) or one less of `kind` held by `owner` (none: nobody's).
    pub fn count(&mut self, owner: Option<&str>, kind: Held, add: bool) {
        if let Some(owner) = owner {
            bump(&mut self.0[kind as usize], owner, add);
        }
    }
}

/// A notification channel: its stored part, where its notifications wait, and until when it
/// lives (in memory only: every poll moves it, and a restart starts it again).
pub struct Channel {
    pub rec: ChannelRecord,
    pub mailbox: std::sync::Arc<crate::notify::channel::Mailbox>,
    /// When its lifetime ends, Unix milliseconds. Atomic: a poll, a socket and a read move it
    /// under the state's read lock; the expiry, which removes the channel, writes the state.
    pub expires_at_ms: AtomicI64,
    /// Rung when the lifetime is set anew (a refresh may shorten it): the expiry timer looks
    /// again instead of sleeping to the old end.
    pub timer: std::sync::Arc<tokio::sync::Notify>,
}

/// The stored part of a notification channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelRecord {
    pub id: String,
    pub user: String,
    /// Creation order.
    pub seq: u64,
    pub client_correlator: Option<String>,
    pub application_tag: Option<String>,
    /// Granted lifetime, seconds.
    pub lifetime_secs: i64,
    /// The most notifications one poll answers.
    pub max_notifications: usize,
    /// Granted wait of a poll, seconds.
    pub max_wait_secs: i64,
    /// The `callbackURL` subscriptions give as `notifyURL` (kept as made, so that a changed
    /// public URL does not orphan the subscriptions that use it).
    pub callback_url: String,
    /// A `WebSockets` channel (else `LongPolling`).
    pub websocket: bool,
    /// The token that made it ([`Owners`]; `None`: stored before format 11).
    pub owner: Option<String>,
}

/// Counters that must never repeat, persisted with every change that advances them (as the
/// `meta` record `counters`): the value a change stores (see [`Ids::snapshot`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    /// Source of resource ids (and of creation order).
    pub next_id: u64,
    /// Source of notification ids (`webhook-id`).
    pub next_notification: u64,
}

/// The lowest notification id a server started at `now_ms` (Unix milliseconds) issues: a
/// thousand ids per millisecond since 1970. Receivers drop a notification whose `webhook-id`
/// they have seen (Standard Webhooks), so an id must never name two notifications. The stored
/// counter alone repeats them after a restore from a backup (the counter goes back with it:
/// every id issued after the backup was taken is issued again, for new notifications) or a
/// reinstall (from 1 again), and the receiver silently drops the new ones. Starting from the
/// clock instead, a server only issues an id again if an earlier run of the same database
/// issued more than a thousand notifications per millisecond on average since its start (or
/// the clock went back by as much). Below 2^53 until the year 2255, so an id read by a
/// JavaScript client as a number stays exact.
pub fn notification_floor(now_ms: u64) -> u64 {
    now_ms.saturating_mul(1000)
}

/// The live [`Counters`]: atomic, so that steps holding only the read lock (a message sent in
/// one session while another is sent in the next) take ids side by side. Every change stores
/// a [`Ids::snapshot`] taken when it is handed to the store, in hand-over order
/// (`Chat::submit`), so the last stored value is at least every id any stored change used.
#[derive(Debug, Default)]
pub struct Ids {
    next_id: AtomicU64,
    next_notification: AtomicU64,
}

impl Ids {
    /// Resumes from stored counters (start-up).
    pub fn resume(&self, c: Counters) {
        self.next_id.store(c.next_id, Ordering::SeqCst);
        self.next_notification
            .store(c.next_notification, Ordering::SeqCst);
    }

    /// Raises the notification counter to at least [`notification_floor`] of `now_ms` (at
    /// every start, after [`Ids::resume`]), so that a `webhook-id` is not issued again by a
    /// restored backup, a reinstall or a database whose counters went back.
    pub fn floor_notifications(&self, now_ms: u64) {
        self.next_notification
            .fetch_max(notification_floor(now_ms), Ordering::SeqCst);
    }

    /// The counters now, to store.
    pub fn snapshot(&self) -> Counters {
        Counters {
            next_id: self.next_id.load(Ordering::SeqCst),
            next_notification: self.next_notification.load(Ordering::SeqCst),
        }
    }

    /// The next resource sequence number (ids and creation order).
    pub fn next_seq(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The next notification id (`webhook-id`).
    pub fn next_notification(&self) -> u64 {
        self.next_notification.fetch_add(1, Ordering::SeqCst) + 1
    }
}

impl State {
    /// The user's subscriptions (every face's), in the order of [`State::user_subscriptions`],
    /// resolved through [`State::subscriptions`]: the one walk that both faces' listings and
    /// the replay lookup start from.
    pub fn subscriptions_of<'a>(
        &'a self,
        user: &str,
    ) -> impl Iterator<Item = &'a Subscription> + 'a {
        self.user_subscriptions
            .get(user)
            .into_iter()
            .flatten()
            .filter_map(|id| self.subscriptions.get(id))
    }

    /// The sessions held in memory that list `user` as a participant, whatever its status
    /// and theirs, in creation (`seq`) order from the one after `after` on (all when `None`):
    /// a page of the user's listing without a walk of what comes before it. The per-user
    /// counts ([`Tally`]), the ad hoc lookup ([`State::adhoc_sessions_of`]) and a resend's
    /// ([`State::started_with`]) have indexes of their own, since others lengthen this one.
    pub fn sessions_of_after<'a>(
        &'a self,
        user: &str,
        after: Option<u64>,
    ) -> impl Iterator<Item = &'a Session> + 'a {
        // After `seq`: from (`seq` + 1, "") on; nothing is after the largest.
        let from = match after.map(|seq| seq.checked_add(1)) {
            None => Some(Bound::Unbounded),
            Some(Some(next)) => Some(Bound::Included((next, String::new()))),
            Some(None) => None,
        };
        self.user_sessions
            .get(user)
            .zip(from)
            .into_iter()
            .flat_map(|(ids, from)| ids.range((from, Bound::Unbounded)))
            .filter_map(|(_, id)| self.sessions.get(id))
    }

    /// The ad hoc sessions `user` is in, ended or not (at most one open with each peer).
    pub fn adhoc_sessions_of<'a>(&'a self, user: &str) -> impl Iterator<Item = &'a Session> + 'a {
        self.user_adhoc
            .get(user)
            .into_iter()
            .flatten()
            .filter_map(|id| self.sessions.get(id))
    }

    /// The session `originator` started with `correlator`, if it is held.
    pub fn started_with(&self, originator: &str, correlator: &str) -> Option<&Session> {
        self.correlated
            .get(&(originator.to_owned(), correlator.to_owned()))
            .and_then(|id| self.sessions.get(id))
    }

    /// Sessions that have not ended in which `user` is connected (invitations are counted by
    /// [`State::pending_sent`]); an ad hoc session counts for the user who opened it only
    /// (`oma2012::open_adhoc`). Counted as sessions come and go ([`Tally`]), not by a walk of
    /// the user's sessions, which others can lengthen.
    pub fn open_sessions(&self, user: &str) -> usize {
        self.tally.open.get(user).copied().unwrap_or(0)
    }

    /// Puts session `s` in, in place of the one with its id if any: a participant new to it
    /// finds it in its per-user index (participants are only ever appended, so the new ones
    /// are those past the old roster's length), an ad hoc chat extended to a group leaves the
    /// ad hoc index, the [`Tally`] moves from the old session to the new one, and its clock
    /// ([`State::active`]) moves to its change (an ad hoc chat's only at its opening: it is
    /// idle from its last message). The one way a session enters the state.
    pub fn put_session(&mut self, s: Session) {
        let known = match self.sessions.get(&s.id) {
            Some(old) => {
                self.tally.count(old, false);
                if old.adhoc && !s.adhoc {
                    for p in &old.participants {
                        unindex(&mut self.user_adhoc, &p.address, &s.id);
                    }
                }
                old.participants.len()
            }
            None => {
                self.owners.count(s.owner.as_deref(), Held::Sessions, true);
                0
            }
        };
        for p in s.participants.iter().skip(known) {
            self.user_sessions
                .entry(p.address.clone())
                .or_default()
                .insert((s.seq, s.id.clone()));
            if s.adhoc {
                self.user_adhoc
                    .entry(p.address.clone())
                    .or_default()
                    .push(s.id.clone());
            }
        }
        if known == 0
            && let Some(c) = &s.client_correlator
        {
            self.correlated
                .entry((s.originator.clone(), c.clone()))
                .or_insert_with(|| s.id.clone());
        }
        self.tally.count(&s, true);
        let at = s.changed_ms.unwrap_or_else(crate::store::now_ms);
        match self.active.get(&s.id) {
            Some(clock) if !s.adhoc => {
                clock.at.fetch_max(at, Ordering::Relaxed);
            }
            Some(_) => {}
            None => {
                self.active.insert(
                    s.id.clone(),
                    Clock {
                        at: at.into(),
                        filed: at,
                    },
                );
                self.idle_order.insert((at, s.id.clone()));
            }
        }
        self.refile(&s.id);
        self.sessions.insert(s.id.clone(), s);
    }

    /// Takes session `sid` out, with its entries in the per-user index (a user left with no
    /// session loses its entry too, so memory follows live sessions) and in the [`Tally`].
    /// The one way a session leaves the state.
    pub fn take_session(&mut self, sid: &str) -> Option<Session> {
        let s = self.sessions.remove(sid)?;
        self.owners.count(s.owner.as_deref(), Held::Sessions, false);
        if let Some(clock) = self.active.remove(sid) {
            self.idle_order.remove(&(clock.filed, s.id.clone()));
        }
        self.tally.count(&s, false);
        for p in &s.participants {
            if let Some(ids) = self.user_sessions.get_mut(&p.address) {
                ids.remove(&(s.seq, s.id.clone()));
                if ids.is_empty() {
                    self.user_sessions.remove(&p.address);
                }
            }
            // Whatever it is now: the index holds ad hoc chats, which an extension turns into
            // groups (`put_session` takes those out too).
            unindex(&mut self.user_adhoc, &p.address, sid);
        }
        if let Some(c) = &s.client_correlator {
            let key = (s.originator.clone(), c.clone());
            if self.correlated.get(&key).is_some_and(|id| id == sid) {
                self.correlated.remove(&key);
            }
        }
        Some(s)
    }

    /// Files session `sid` under its clock's time now (`Clock::at`), when that moved since it
    /// was filed: a change of it, or a message the idle sweeper saw.
    pub fn refile(&mut self, sid: &str) {
        self.refile_not_before(sid, i64::MIN);
    }

    /// [`State::refile`], but under `not_before` at the earliest: for a session the idle
    /// sweeper may not end now (an ad hoc chat, a session with an invitation waiting), which
    /// a change files again once it may ([`State::put_session`]); left under an old time,
    /// every round would read it again.
    pub fn refile_not_before(&mut self, sid: &str, not_before: i64) {
        let Some(clock) = self.active.get_mut(sid) else {
            return;
        };
        let at = clock.at.load(Ordering::Relaxed).max(not_before);
        if at != clock.filed {
            self.idle_order.remove(&(clock.filed, sid.to_owned()));
            self.idle_order.insert((at, sid.to_owned()));
            clock.filed = at;
        }
    }

    /// The sessions filed under a time at or before `cutoff_ms` ([`State::idle_order`]),
    /// oldest first: those the idle sweeper may find idle (their clock may have moved since).
    pub fn filed_before(&self, cutoff_ms: i64) -> impl Iterator<Item = &str> + '_ {
        let to = cutoff_ms.saturating_add(1);
        self.idle_order
            .range(..(to, String::new()))
            .map(|(_, sid)| sid.as_str())
    }

    /// Unanswered invitations `inviter` sent, per invitee (none: `None`), in sessions not
    /// ended ([`Tally`]).
    pub fn pending_sent(&self, inviter: &str) -> Option<&HashMap<String, usize>> {
        self.tally.sent.get(inviter)
    }

    /// Unanswered invitations waiting for `invitee`, from anyone: one per session that has
    /// not ended in which its invitation is pending (an invitee takes part, as `Invited`, in
    /// every session it is invited into, so they are all among its sessions).
    pub fn pending_received(&self, invitee: &str) -> usize {
        self.tally.pending.get(invitee).copied().unwrap_or(0)
    }

    /// A fresh id with a readable prefix (`sess-…`, `msg-…`, `sub-…`), and its sequence number.
    pub fn new_id(&self, prefix: &str) -> (String, u64) {
        let seq = self.ids.next_seq();
        (
            format!("{prefix}-{seq}-{}", uuid::Uuid::new_v4().simple()),
            seq,
        )
    }
}

/// What the per-user limits count of the sessions held, per user address, kept by
/// [`State::put_session`] and [`State::take_session`] as each session comes, changes and goes:
/// the open sessions limit and the invitation quotas read a number, where they walked every
/// session the user is listed in, also as declined, timed out, cancelled or left, a list
/// other users lengthen by inviting it (an amplification review: each invitation to a user
/// listed in 100,000 sessions walked them all under the state's write lock).
#[derive(Default)]
struct Tally {
    /// Sessions not ended in which the user is connected (an ad hoc one for its opener only).
    open: HashMap<String, usize>,
    /// Invitations pending for the user, in sessions not ended.
    pending: HashMap<String, usize>,
    /// Invitations pending that the user sent, per invitee, in sessions not ended.
    sent: HashMap<String, HashMap<String, usize>>,
}

impl Tally {
    /// Counts what session `s` holds in (`add`) or out; an entry that reaches zero goes, so
    /// the tally's memory follows the live sessions.
    fn count(&mut self, s: &Session, add: bool) {
        if s.ended {
            return;
        }
        for p in &s.participants {
            if p.status == ParticipantStatus::Connected && (!s.adhoc || s.originator == p.address) {
                bump(&mut self.open, &p.address, add);
            }
            if p.invitation.is_pending() {
                bump(&mut self.pending, &p.address, add);
                if p.invited_by != p.address {
                    let per_invitee = self.sent.entry(p.invited_by.clone()).or_default();
                    bump(per_invitee, &p.address, add);
                    if per_invitee.is_empty() {
                        self.sent.remove(&p.invited_by);
                    }
                }
            }
        }
    }
}

/// One more (`add`) or one less of `key` in `counts`, dropping it at zero.
fn bump(counts: &mut HashMap<String, usize>, key: &str, add: bool) {
    if add {
        *counts.entry(key.to_owned()).or_default() += 1;
    } else if let Some(n) = counts.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(key);
        }
    }
}

/// Takes `id` out of `owner`'s list in a per-user index (`State::user_adhoc`,
/// `State::user_subscriptions`: lists the user's own limits keep short), dropping the list
/// once it is empty, so that the index's memory follows the live resources: the one way a
/// session or a subscription leaves it.
pub fn unindex(index: &mut HashMap<String, Vec<String>>, owner: &str, id: &str) {
    if let Some(ids) = index.get_mut(owner) {
        ids.retain(|i| i != id);
        if ids.is_empty() {
            index.remove(owner);
        }
    }
}

/// When a session was last active ([`State::active`]), and the time [`State::idle_order`]
/// files it under.
pub struct Clock {
    /// Its last message or decision, Unix ms. Atomic: a send moves it under the read lock.
    pub at: AtomicI64,
    /// The time it is filed under: `at` as of its last change or the idle sweeper's last look,
    /// or later for a session the sweeper may not end now ([`State::refile_not_before`]);
    /// moved only under the write lock. (An ad hoc chat restored from an older format has
    /// `at` moved back to its last message after it was filed: its own timer ends it.)
    filed: i64,
}

/// One chat notification subscription: the persisted record and its delivery queue.
pub struct Subscription {
    /// What is stored.
    pub rec: SubscriptionRecord,
    /// Its delivery queue.
    pub queue: Queue,
    /// Its expiry task (`Chat::expiry_timer`), while it has one: at most one per subscription
    /// (a refresh that moves the expiry replaces it, one that removes it aborts it).
    pub timer: Option<tokio::task::AbortHandle>,
}

/// The face a subscription was made through, which decides the profile its notifications are
/// told in (issue 16): the seed's names and links, or OMA 2012's (`oma2012::profile`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Face {
    /// `/v1/chat/{userId}/subscriptions` (and every subscription stored before faces were).
    #[default]
    Seed,
    /// `/chat/v1/{userId}/subscriptions`.
    Oma2012,
}

/// The stored part of a subscription.
#[derive(Clone, Debug)]
pub struct SubscriptionRecord {
    pub id: String,
    pub user: String,
    pub callback: CallbackReference,
    /// Granted duration in seconds (0 = no expiry).
    pub duration: i64,
    /// When it expires, Unix milliseconds.
    pub expires_at_ms: Option<i64>,
    pub client_correlator: Option<String>,
    /// Creation order.
    pub seq: u64,
    /// Set when delivery disabled it (410, failing past the give-up age, backlog full): it
    /// gets no new notifications and reads as `Disabled` with this reason.
    pub disabled: Option<Disabled>,
    /// Its own signing secrets, newest first (at most [`MAX_SECRETS`]); empty: signed with
    /// the server-wide secret.
    pub secrets: Vec<SigningSecret>,
    /// The face it was made through: the profile of its notifications.
    pub face: Face,
    /// Set when it expired (stored format 10): until when (Unix ms) its last notifications
    /// (what it had not delivered yet, then its cancellation notice) are still tried. Such a
    /// record is nobody's subscription any more (never in [`State::subscriptions`]); it is
    /// kept, with its outbox rows, only so that a restart or a takeover within that minute
    /// still delivers them (`Chat::expire_subscription`, `restore`), and deleted once they
    /// are delivered or dropped, or after the minute (`Chat::expired_record_timer`).
    pub expired_until_ms: Option<i64>,
    /// The token that made it ([`Owners`]; `None`: stored before format 11).
    pub owner: Option<String>,
}

/// Most secrets that sign a subscription's notifications at once (the current one and the
/// ones still in their rotation window).
pub const MAX_SECRETS: usize = 3;

/// One of a subscription's signing secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigningSecret {
    /// `whsec_…`.
    pub secret: String,
    /// Until when it still signs (Unix ms), once a newer one replaced it; `None`: current.
    pub until_ms: Option<i64>,
}

/// Why and when delivery disabled a subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disabled {
    /// Shown as the subscription's `statusReason`.
    pub reason: String,
    /// When, Unix milliseconds.
    pub at_ms: i64,
}

/// Where an invitation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invitation {
    /// The originator: never invited.
    None,
    /// Waiting for an answer until `deadline_ms` (Unix ms); `seq` tells this invitation's
    /// timer from an older one's.
    Pending {
        seq: u64,
        deadline_ms: i64,
    },
    Accepted,
    Declined,
    /// Nobody answered in time: the session is no longer visible to the invitee.
    TimedOut,
    /// The inviter withdrew it: the session is no longer visible to the invitee.
    Cancelled,
}

impl Invitation {
    /// True while waiting for an answer.
    pub fn is_pending(self) -> bool {
        matches!(self, Invitation::Pending { .. })
    }
}

/// A participant of a session.
#[derive(Clone, Debug)]
pub struct Participant {
    pub address: String,
    pub name: Option<String>,
    pub is_originator: bool,
    pub status: ParticipantStatus,
    pub invitation: Invitation,
    /// Who sent the invitation (the originator, or whoever extended the session).
    pub invited_by: String,
}

impl Participant {
    /// Whether this participant joined the session at some point: the originator (never
    /// invited, in it from the start) or an invitee who accepted.
    pub fn has_joined(&self) -> bool {
        matches!(self.invitation, Invitation::None | Invitation::Accepted)
    }

    /// Whether the session is still a resource for this participant (seed 7.1.7 c: an
    /// invitation that timed out makes the session invalid for the invitee).
    pub fn sees_session(&self) -> bool {
        !matches!(
            self.invitation,
            Invitation::TimedOut | Invitation::Cancelled
        )
    }
}

/// A chat session (1-1 or group). Its messages are not here: they live in the store and are
/// read on demand, so a session's memory does not grow with the messages sent in it.
#[derive(Clone, Debug)]
pub struct Session {
    pub id: String,
    /// Creation order.
    pub seq: u64,
    pub subject: Option<String>,
    pub originator: String,
    pub originator_name: Option<String>,
    pub client_correlator: Option<String>,
    /// The originator first, then invitees in invitation order.
    pub participants: Vec<Participant>,
    /// True once more than one invitee was ever invited.
    pub group: bool,
    /// An OMA 2012 ad hoc one-to-one session (`oneToOne/{otherUserId}/adhoc`): the server
    /// opened it for the pair at a first send, with both participants connected and nobody
    /// invited, and ends it once idle (`oma2012`). At most one is open per pair.
    pub adhoc: bool,
    pub ended: bool,
    /// When the last decision changed it (Unix ms; `Chat::apply` sets it, and it is stored):
    /// where its idle time counts from after a restart. `None` for a session a data
    /// directory of format 8 or older holds, until its next change.
    pub changed_ms: Option<i64>,
    /// The token that started it ([`Owners`]; `None`: stored before format 11).
    pub owner: Option<String>,
}

impl Session {
    /// The participant with this address.
    pub fn participant(&self, address: &str) -> Option<&Participant> {
        self.participants.iter().find(|p| p.address == address)
    }

    /// The participant with this address, for changes.
    pub fn participant_mut(&mut self, address: &str) -> Option<&mut Participant> {
        self.participants.iter_mut().find(|p| p.address == address)
    }

    /// Addresses of connected participants other than `except`.
    pub fn connected_others(&self, except: &str) -> Vec<String> {
        self.participants
            .iter()
            .filter(|p| p.address != except && p.status == ParticipantStatus::Connected)
            .map(|p| p.address.clone())
            .collect()
    }
}

/// A chat message and its delivery state per recipient.
#[derive(Clone, Debug)]
pub struct Message {
    pub id: String,
    /// Creation order.
    pub seq: u64,
    pub sender: String,
    pub text: String,
    pub date_time: String,
    pub report_delivered: bool,
    pub report_displayed: bool,
    pub client_correlator: Option<String>,
    /// Each recipient (connected when it was sent) and the status it confirmed.
    pub recipients: Vec<(String, MessageStatus)>,
}

/// Order of delivery statuses: a confirmation may only move forward.
pub fn status_rank(s: MessageStatus) -> u8 {
    match s {
        MessageStatus::Sent => 0,
        MessageStatus::Delivered => 1,
        MessageStatus::Displayed => 2,
        MessageStatus::Failed => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tally as the walks over each user's sessions counted it before there was one.
    fn walked(state: &State, user: &str) -> (usize, usize, HashMap<String, usize>) {
        let open = state
            .sessions_of_after(user, None)
            .filter(|s| {
                !s.ended
                    && (!s.adhoc || s.originator == user)
                    && s.participant(user)
                        .is_some_and(|p| p.status == ParticipantStatus::Connected)
            })
            .count();
        let pending = state
            .sessions_of_after(user, None)
            .filter(|s| {
                !s.ended
                    && s.participant(user)
                        .is_some_and(|p| p.invitation.is_pending())
            })
            .count();
        let mut sent: HashMap<String, usize> = HashMap::new();
        for s in state.sessions_of_after(user, None).filter(|s| !s.ended) {
            for p in &s.participants {
                if p.invited_by == user && p.address != user && p.invitation.is_pending() {
                    *sent.entry(p.address.clone()).or_default() += 1;
                }
            }
        }
        (open, pending, sent)
    }

    /// Sessions put in, changed (accepted, declined, re-invited, ended) and taken out: the
    /// tally the limits read is always what a walk of each user's sessions counts, and empty
    /// once no session is left.
    #[test]
    fn the_tally_follows_the_sessions() {
        use super::super::testkit::{A, B, C, D, pending, session};
        use ParticipantStatus::{Connected, Disconnected, Invited};
        let mut state = State::default();
        let check = |state: &State, step: &str| {
            for u in [A, B, C, D] {
                assert_eq!(
                    (
                        state.open_sessions(u),
                        state.pending_received(u),
                        state.pending_sent(u).cloned().unwrap_or_default()
                    ),
                    walked(state, u),
                    "{step}: {u}"
                );
            }
        };
        let mut s1 = session(true, &[(B, Invited, pending(1)), (C, Invited, pending(2))]);
        state.put_session(s1.clone());
        let mut s2 = session(false, &[(B, Invited, pending(3))]);
        s2.id = "sess-2".to_owned();
        state.put_session(s2.clone());
        check(&state, "two sessions started");
        assert_eq!((state.open_sessions(A), state.pending_received(B)), (2, 2));
        s1.participants[1].status = Connected;
        s1.participants[1].invitation = Invitation::None;
        s1.participants[2].status = Disconnected;
        s1.participants[2].invitation = Invitation::None;
        state.put_session(s1.clone());
        check(&state, "B accepts, C declines");
        assert_eq!((state.open_sessions(B), state.pending_received(C)), (1, 0));
        s1.participants[2].status = Invited;
        s1.participants[2].invitation = pending(4);
        s1.participants.push(Participant {
            address: D.to_owned(),
            name: None,
            is_originator: false,
            status: Invited,
            invitation: pending(5),
            invited_by: A.to_owned(),
        });
        state.put_session(s1.clone());
        check(&state, "C invited again, D invited");
        s2.ended = true;
        state.put_session(s2.clone());
        check(&state, "sess-2 ended (before its release)");
        assert_eq!(state.pending_received(B), 0);
        assert!(state.take_session("sess-2").is_some());
        check(&state, "sess-2 released");
        assert!(state.take_session("sess-1").is_some());
        check(&state, "sess-1 released");
        assert!(state.tally.open.is_empty() && state.tally.pending.is_empty());
        assert!(state.tally.sent.is_empty());
        assert!(state.user_sessions.is_empty());
        assert!(state.user_adhoc.is_empty() && state.correlated.is_empty());
        assert!(state.active.is_empty() && state.idle_order.is_empty());
    }

    /// A user's sessions are listed in creation order whatever the order it joined them (an
    /// invitation into an older session comes later), from after a cursor on; its ad hoc ones
    /// are found among themselves; a release takes a session out of each.
    #[test]
    fn a_users_sessions_are_in_creation_order_and_its_ad_hoc_ones_apart() {
        use super::super::testkit::{A, B, C, pending, session};
        use ParticipantStatus::{Connected, Invited};
        let mut state = State::default();
        let mut with = |id: &str, seq, adhoc, to: &str| {
            let mut s = session(false, &[(to, Invited, pending(seq))]);
            (s.id, s.seq, s.adhoc) = (id.to_owned(), seq, adhoc);
            if adhoc {
                s.participants[1].status = Connected;
            }
            state.put_session(s);
        };
        with("s-9", 9, false, B);
        with("s-3", 3, true, B);
        with("s-5", 5, false, C);
        with("s-7", 7, false, B);
        let listed = |state: &State, user, after| {
            state
                .sessions_of_after(user, after)
                .map(|s| s.id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(listed(&state, A, None), ["s-3", "s-5", "s-7", "s-9"]);
        assert_eq!(listed(&state, B, None), ["s-3", "s-7", "s-9"]);
        assert_eq!(listed(&state, A, Some(5)), ["s-7", "s-9"]);
        assert_eq!(listed(&state, A, Some(4)), ["s-5", "s-7", "s-9"]);
        assert!(listed(&state, A, Some(9)).is_empty());
        assert!(listed(&state, A, Some(u64::MAX)).is_empty());
        let adhoc = |state: &State, user| {
            state
                .adhoc_sessions_of(user)
                .map(|s| s.id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            (adhoc(&state, A), adhoc(&state, B)),
            (vec!["s-3".to_owned()], vec!["s-3".to_owned()])
        );
        assert!(adhoc(&state, C).is_empty());
        // Extended to a group: no longer an ad hoc chat, out of the ad hoc index.
        let mut grown = state.sessions["s-3"].clone();
        grown.adhoc = false;
        state.put_session(grown);
        assert!(adhoc(&state, A).is_empty() && adhoc(&state, B).is_empty());
        assert_eq!(listed(&state, B, None), ["s-3", "s-7", "s-9"]);
        state.take_session("s-3");
        state.take_session("s-7");
        assert_eq!(listed(&state, B, None), ["s-9"]);
        assert!(state.user_adhoc.is_empty());
    }

    /// A start raises the notification counter to the clock's floor and never lowers it: a
    /// restored backup (stored counter behind) starts past every id its first life issued,
    /// a database whose counter is already past the floor keeps counting from it.
    #[test]
    fn notification_ids_start_from_the_clock_and_never_go_back() {
        let ids = Ids::default();
        // The backup's counter: 41 ids issued.
        ids.resume(Counters {
            next_id: 7,
            next_notification: 41,
        });
        let restored_at = 1_764_900_000_000;
        ids.floor_notifications(restored_at);
        assert_eq!(ids.next_notification(), restored_at * 1000 + 1);
        // Started again a second later, but the counter ran ahead (a burst): kept.
        let ahead = (restored_at + 1_000) * 1000 + 5_000_000;
        ids.resume(Counters {
            next_id: 7,
            next_notification: ahead,
        });
        ids.floor_notifications(restored_at + 1_000);
        assert_eq!(ids.next_notification(), ahead + 1);
        assert_eq!(ids.snapshot().next_id, 7, "resource ids untouched");
        assert!(
            notification_floor(7_258_118_400_000) < 1 << 53,
            "exact in JavaScript to 2200"
        );
    }
}
