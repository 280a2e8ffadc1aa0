//! The chat core: the state machine of subscriptions, sessions, participants and messages, and
//! the notifications each change causes.
//!
//! Every changing operation takes the lock once, checks the rules, changes the in-memory state
//! and describes the change as a store `Batch`: the records it wrote and the notifications it
//! causes (the transactional outbox). The batch is handed to the store *under the lock*, so
//! commit order follows the state's order; the caller is answered only once the batch is
//! durable, and the notifications reach the delivery queues right after their commit, in
//! commit order. The lock is a read-write lock: a change of the session, subscription or
//! channel maps takes it for writing (and so does `isComposing`, for its rate log); a message
//! sent or confirmed changes no map and takes it for reading plus its session's order lock
//! ([`Chat::session_order`]) (reads and a channel's polls take only the read lock), so sends in unrelated sessions
//! go side by side: commit order is then state order per session, and notification ids are
//! given at hand-over, so they still increase in commit order per subscription. Reads of
//! sessions, participants and subscriptions are served from memory; messages live only in the
//! store and are read through the store thread without holding the lock (see `messages`), so
//! memory does not grow with messages sent.
//!
//! This module keeps the `Chat` type, its lock and the commit plumbing (`Change`,
//! `Chat::submit`, `Chat::apply`, `put_or_release`); each flow lives in the module of its
//! seam, its entry point doc-commented with the seed section it serves ("Seed 7.1.5").
//!
//! Each flow is split in two: its *rule*, a plain function from what it reads (a session, a
//! message, counts, the quota's verdict) to what it decides (a `Decision`: the session's
//! new state and who is told what, or a `refused::Refused` reason), unit-tested in its module
//! without tokio, HTTP or a store; and its *entry point*, a `Chat` method that takes the lock,
//! reads the rule's inputs, applies the decision to the state and commits it. The rules never
//! see the lock, the store or a clock, so the same rules can run under another order (per
//! session) or inside a database transaction (see ARCHITECTURE.md, "The chat core").
//!
//! The modules:
//! - `subscriptions`: 7.1.1, subscription expiry and `410 Gone`;
//! - `sessions`: 7.1.2 / 7.1.4 start, 7.1.3 extend, 7.1.5 end, 7.1.6 cancel, invitation quotas;
//! - `participants`: 7.1.7 accept / decline / time-out, 7.1.8 leave / re-join;
//! - `messages`: 7.1.9 send, 7.1.10 confirm, message reads;
//! - `deadletters`: catch up and replay (an extension): list a subscription's dead letters,
//!   redeliver them;
//! - `channels`: notification channels (create, list, delete, lifetime, the long poll, a
//!   socket's channel);
//! - `oma2012`: the OMA 2012 face over the same sessions; `composing`: `isComposing`;
//!   `delivered`: `Delivered` recorded by the server for OMA 2012 receivers;
//! - `secrets`: per-subscription signing secrets; `sent_bytes`: the stored bytes each sender
//!   may make the server keep;
//! - `timers`, `restore`, `fanout`: deadlines, start-up, notifications per subscription;
//! - `refused`: why a rule says no, and the OMA error each reason becomes;
//! - `state` (working types), `records` (stored format), `views` (documents as one user
//!   sees them), `page`, `quota`.

pub(crate) mod channels;
mod composing;
mod deadletters;
mod delivered;
mod fanout;
mod messages;
mod oma2012;
pub(crate) mod page;
mod participants;
pub(crate) mod quota;
pub(crate) mod records;
mod refused;
mod restore;
mod secrets;
mod sent_bytes;
mod sessions;
mod state;
/// The stored format's tests read what a record decodes to.
#[cfg(test)]
pub(crate) use state::Face;
mod subscriptions;
#[cfg(test)]
mod testkit;
mod timers;
mod views;

/// The reserved `sessionId` of an OMA 2012 ad hoc chat (see `oma2012`), and the status an
/// OMA 2012 accept asks for (with or without a body).
pub(crate) use oma2012::{ADHOC, asked_status};

use crate::callback_guard::CallbackPolicy;
use crate::notify::{Deliverer, Delivery, Notification, Queue, RetryPolicy};
use crate::signing::Signer;
use crate::store::{Batch, Kind, MessageRow, NotDone, OutboxEntry, Snapshot, Store};
use crate::urls::Urls;
use netapi_chat_runtime::ApiError;
use state::{Message, Participant, Session, State};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::Duration;
use tokio::sync::oneshot;

/// Longest subscription `duration` granted (one year); longer requests get this.
pub const MAX_SUBSCRIPTION_SECS: i64 = 365 * 24 * 3600;

/// Per-user and per-request limits of the chat core (see `config::Config::limits`).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Participants a session may have, the originator included (`403 POL1017` above).
    pub participants_per_session: usize,
    /// Characters in a message's `text` (`400 SVC0002` above).
    pub text_chars: usize,
    /// Subscriptions a user may hold (`403 POL2008` above).
    pub subscriptions_per_user: usize,
    /// Sessions (not ended) a user may be connected to, checked when it starts, accepts or
    /// re-joins one (`403 POL2008` above).
    pub sessions_per_user: usize,
    /// The inviter's own invitation quotas: unanswered invitations in all and per invitee
    /// (`403 POL2008` above), invitations a minute (`429 POL2005` above).
    pub invitations: quota::InvitationLimits,
    /// Notification channels a user may hold (`403 POL2008` above).
    pub channels_per_user: usize,
    /// The longest a long poll waits for a notification (a channel's `maxWaitTime` is at
    /// most this).
    pub channel_poll_wait: Duration,
    /// Bytes of messages one sender may have the server keep (`0`: no budget), and the
    /// period over which they drain (the retention period): `403 POL2008` above
    /// ([`sent_bytes`]).
    pub sent_bytes: (u64, Duration),
    /// What the server holds in all, whoever asked: `503 SVC2001` above ([`room_for`]).
    pub in_all: InAll,
}

/// The server-wide caps on live resources (`NETAPI_CHAT_MAX_SESSIONS`, `…_SUBSCRIPTIONS`,
/// `…_CHANNELS`): the per-user limits bound one user, and these bound memory however many
/// users the clients act for (a `*` token acts for any number: the soak review of
/// 2026-12-07 made 4,000 subscriptions for new users in 20 s, each held in memory).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InAll {
    /// Open sessions.
    pub sessions: usize,
    /// Subscriptions (disabled ones included, until deleted).
    pub subscriptions: usize,
    /// Notification channels.
    pub channels: usize,
    /// The percentage of each cap one token may hold (`NETAPI_CHAT_TOKEN_SHARE_PERCENT`,
    /// 1–100; 100: first come, first served), so that one application cannot take a cap
    /// whole and lock the others out.
    pub token_share_percent: u8,
}

impl Default for InAll {
    fn default() -> Self {
        InAll {
            sessions: 100_000,
            subscriptions: 100_000,
            channels: 10_000,
            token_share_percent: 100,
        }
    }
}

use state::Held;

impl InAll {
    /// Whether `state` has room for one more resource of kind `kind` made by token `owner`,
    /// under its cap and the token's share of it ([`room_for`] on what the state holds of
    /// it): the one check every entry point that makes one calls.
    fn room_for(
        &self,
        state: &state::State,
        kind: Held,
        owner: &str,
    ) -> Result<(), refused::Refused> {
        self.room_for_freeing(state, (kind, owner), None)
    }

    /// [`InAll::room_for`] as if one resource of `kind` made by `freed` (`Some(None)`: by no
    /// token) were gone: a create that replaces one (a user's oldest disabled subscription)
    /// is weighed before it removes it, so that a refused create removes nothing.
    fn room_for_freeing(
        &self,
        state: &state::State,
        (kind, owner): (Held, &str),
        freed: Option<Option<&str>>,
    ) -> Result<(), refused::Refused> {
        let (held, limit, what) = match kind {
            Held::Sessions => (state.sessions.len(), self.sessions, "sessions"),
            Held::Subscriptions => (
                state.subscriptions.len(),
                self.subscriptions,
                "subscriptions",
            ),
            Held::Channels => (state.channels.len(), self.channels, "notification channels"),
        };
        let share = token_share(limit, self.token_share_percent);
        let own = state.owners.held(owner, kind);
        room_for(
            held.saturating_sub(usize::from(freed.is_some())),
            limit,
            what,
        )
        .and_then(|()| {
            within_share(
                own.saturating_sub(usize::from(freed == Some(Some(owner)))),
                share,
                what,
            )
        })
    }
}

/// The rule of a server-wide cap: a new resource of kind `what` fits while the server holds
/// fewer than `limit` of them.
fn room_for(held: usize, limit: usize, what: &'static str) -> Result<(), refused::Refused> {
    if held < limit {
        Ok(())
    } else {
        Err(refused::Refused::ServerFull { what, limit })
    }
}

/// What one token may hold of a cap of `limit`: `percent` of it, at least one (a share never
/// shuts a token out of a cap that has room).
fn token_share(limit: usize, percent: u8) -> usize {
    (limit.saturating_mul(usize::from(percent.min(100))) / 100).max(1)
}

/// The rule of a token's share: a token holding `held` of kind `what` may make one more while
/// it holds fewer than its `share` (`403 POL2008`, as a per-user limit: the application, not
/// the server, is at its limit).
fn within_share(held: usize, share: usize, what: &'static str) -> Result<(), refused::Refused> {
    if held < share {
        Ok(())
    } else {
        Err(refused::Refused::TokenShare { what, share })
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            participants_per_session: 100,
            text_chars: 4096,
            subscriptions_per_user: 20,
            sessions_per_user: 1000,
            invitations: quota::InvitationLimits::default(),
            channels_per_user: 10,
            channel_poll_wait: Duration::from_secs(25),
            sent_bytes: (
                sent_bytes::DEFAULT_BUDGET,
                crate::retention::DEFAULT_RETENTION,
            ),
            in_all: InAll::default(),
        }
    }
}

/// Notifications produced by one operation: (user address, notification).
type Outbox = Vec<(String, Notification)>;

/// What a rule of a session flow decided: the session's new state (ended, when the flow ends
/// it) and the notifications it causes, per user. The entry point applies it with
/// [`Chat::apply`].
#[derive(Debug)]
struct Decision {
    session: Session,
    outbox: Outbox,
}

/// Whether session `s` is a resource for `user`: it has not ended and `user` takes part in it
/// with an invitation that did not time out and was not cancelled. Everyone else (a
/// stranger included) gets the `404` of a session that never existed.
fn visible_to(s: &Session, user: &str) -> bool {
    !s.ended && s.participant(user).is_some_and(Participant::sees_session)
}

/// Settings of the core.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How long an invitation waits for an answer.
    pub invitation_timeout: Duration,
    /// How long an OMA 2012 ad hoc chat stays open without a message before the server ends
    /// it (`sessions::idle`, `Chat::adhoc_timer`).
    pub adhoc_idle: Duration,
    /// How long any other session stays open without a message or a decision before the
    /// server ends it (`Chat::idle_sweeper`).
    pub session_idle: Duration,
    /// How notifications are delivered.
    pub retry: RetryPolicy,
    /// Which callback addresses may be reached.
    pub callbacks: CallbackPolicy,
    /// What `https` callbacks trust (`crate::tls::callback_client_config`).
    pub callback_tls: Arc<rustls::ClientConfig>,
    /// Most connections deliveries hold open, per endpoint and in all.
    pub delivery_connections: crate::notify::endpoints::Caps,
    /// The server-wide secret: signs the notifications of subscriptions without one of their
    /// own (see [`secrets`]).
    pub signer: Option<Arc<Signer>>,
    /// Whether a new subscription gets a secret of its own when its client sends none (the
    /// default); `false` when the operator chose one server-wide secret.
    pub own_secrets: bool,
    /// How long a replaced secret keeps signing after a rotation.
    pub rotation_window: Duration,
    /// Per-user limits.
    pub limits: Limits,
    /// The standbys that carry this leader's callback attempts (`notify::relay`): `None` on a
    /// lone server, and in a cluster whose leader makes every attempt itself.
    pub relays: Option<crate::notify::relay::Relays>,
}

/// The chat system: all state, and what runs on it.
pub struct Chat {
    /// The state: written by changes of a session, subscription or channel record (and by
    /// `isComposing`), read by everything else (see the module docs). Lock order: a message lock, then this, then a session order lock, then
    /// [`Chat::handing_over`], under which only leaf locks are taken (the store's queue, the
    /// meter's rate buckets); nothing waits for an earlier one while holding a later one.
    state: RwLock<State>,
    /// Orders the changes of one session made under the read lock (a message sent or
    /// confirmed): held from reading the session to handing the change to the store, so a
    /// session's messages get their sequence numbers and reach the store in one order. A
    /// writer of the state needs none (it excludes every reader). Striped by session id, like
    /// [`Chat::message_locks`]: fixed memory, and two sessions sharing a stripe only wait for
    /// each other's few microseconds of in-memory work.
    session_order: Box<[Mutex<()>]>,
    /// Held while a change numbers its new notifications, takes its counters snapshot and is
    /// handed to the store ([`Chat::hand_over`]): changes made side by side under the read
    /// lock reach the store in the order of their ids and snapshots, so each subscription's
    /// ids increase in commit order and the counters stored last are at least every id used.
    handing_over: Mutex<()>,
    urls: Urls,
    settings: Settings,
    store: Store,
    deliverer: Deliverer,
    /// Locks that order read-modify-write steps on a session's messages (a confirmation; a
    /// send with a `clientCorrelator`; a redelivery of a subscription's dead letters), which
    /// read from the store and so cannot hold the state lock. Striped by session (or
    /// subscription) id: memory stays fixed whatever the number of sessions, and two ids
    /// sharing a stripe only wait for each other's short read.
    message_locks: Box<[tokio::sync::Mutex<()>]>,
    /// The timer task of each pending invitation, by its `seq`: an invitation answered,
    /// withdrawn or ended with its session stops its timer (`Chat::apply`), so the tasks follow
    /// pending invitations, not the invitations of the last timeout period.
    invitation_timers: Mutex<std::collections::HashMap<u64, tokio::task::AbortHandle>>,
    /// Told how many notifications each change handed to the store causes, in the task of the
    /// request that made it ([`Chat::meter_notifications`]): how the request rate per token
    /// comes to count the work a request causes, not only the request. Unset (tools, unit
    /// tests): nothing is told.
    meter: std::sync::OnceLock<NotificationMeter>,
    /// Where the subscriptions of the OMA 2012 face send what reached their applications, to
    /// be recorded `Delivered` (`delivered`): bounded, never waited on by delivery.
    receipts: tokio::sync::mpsc::Sender<delivered::Receipt>,
    /// Set while receipts are dropped (their channel full), so that a run of drops is said
    /// once (`delivered`).
    receipts_dropping: Arc<std::sync::atomic::AtomicBool>,
    /// Bounds the groups of receipts recorded at once (`delivered`).
    recording: Arc<tokio::sync::Semaphore>,
    /// Receipts taken and not recorded yet (`delivered`): a graceful stop waits for 0.
    receipts_pending: Arc<std::sync::atomic::AtomicUsize>,
    /// Set when a graceful stop begins ([`Chat::begin_stop`]): every answer says
    /// `Connection: close` ([`Chat::is_stopping`]), and no subscription expires
    /// here any more. This server stops delivering before it exits, so a notice made while
    /// stopping could not go out from here (the issue 14 acceptance check lost it in 4 of 5
    /// rolling restarts under load, when it was held in memory only); the subscription stays
    /// stored, and the next leader (or this server's restart) expires it at once and sends the
    /// notice, with the whole minute to deliver it.
    stopping: std::sync::atomic::AtomicBool,
    /// Each sender's budget of stored message bytes ([`sent_bytes`]).
    sent_bytes: sent_bytes::SentBytes,
}

/// See [`Chat::meter_notifications`].
pub type NotificationMeter = Box<dyn Fn(usize) + Send + Sync>;

/// Stripes of [`Chat::message_locks`] and of [`Chat::session_order`].
const MESSAGE_LOCKS: usize = 64;

/// Proof that a session's order lock is held ([`Chat::session_order`]): what lets a change of
/// that session be handed to the store under the read lock ([`Chat::submit_in_order`]).
pub(super) struct SessionOrder<'a> {
    _held: MutexGuard<'a, ()>,
    /// The stripe held, checked against the session handed over (debug builds).
    stripe: usize,
}

/// The stripe of `id` among `n` (a session's or a subscription's lock).
fn stripe(id: &str, n: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut h);
    usize::try_from(h.finish() % n as u64).unwrap_or(0)
}

/// The rule on a create's `clientCorrelator` (every create, on both faces): an empty one is
/// none. `""` cannot tell one request from another: it is what an XML client that has no
/// correlator writes as an empty element, and kept as a correlator it made every later create
/// with an empty one the first one's replay or a `409 SVC0005`. (A nil one, `null` or
/// `xsi:nil`, is already absent when the body is read.)
fn correlator(given: Option<String>) -> Option<String> {
    given.filter(|c| !c.is_empty())
}

fn missing(what: &str) -> ApiError {
    ApiError::not_found(what)
}

/// One change being prepared under the lock: the batch to commit and, for after the commit,
/// the notifications to hand to delivery queues.
#[derive(Default)]
struct Change {
    batch: Batch,
    deliveries: Vec<(Queue, Delivery)>,
    /// The new notifications of this change, waiting for their ids: (index in `deliveries`,
    /// index of its outbox entry in `batch.outbox` unless it is never stored). They are
    /// numbered at hand-over ([`Change::number`]), so a subscription's ids increase in the
    /// order its notifications are committed and queued, whatever ran side by side.
    unnumbered: Vec<(usize, Option<usize>)>,
}

impl Change {
    /// Adds a new notification: its delivery, queued after the commit, and (unless it is
    /// never stored) its outbox entry; both get their id at hand-over.
    fn new_notification(&mut self, queue: Queue, delivery: Delivery, entry: Option<OutboxEntry>) {
        let stored = entry.map(|e| {
            self.batch.outbox.push(e);
            self.batch.outbox.len() - 1
        });
        self.deliveries.push((queue, delivery));
        self.unnumbered.push((self.deliveries.len() - 1, stored));
    }

    /// Gives each new notification its id (call under [`Chat::handing_over`]).
    fn number(&mut self, ids: &state::Ids) {
        for (d, o) in std::mem::take(&mut self.unnumbered) {
            let nid = ids.next_notification();
            if let Some((_, delivery)) = self.deliveries.get_mut(d) {
                delivery.id = nid;
            }
            if let Some(entry) = o.and_then(|o| self.batch.outbox.get_mut(o)) {
                entry.id = nid;
            }
        }
    }

    /// Writes a record, already in its stored form (see [`records`]).
    fn put(&mut self, kind: Kind, key: String, bytes: Vec<u8>) {
        self.batch.puts.push((kind, key, bytes));
    }

    fn put_session(&mut self, s: &Session) {
        self.put(Kind::Session, s.id.clone(), records::encode_session(s));
    }

    /// Writes a message: a new one with the time it was sent (`Some`, what retention goes by),
    /// or a new state of a stored one (`None`: its time stays, and one purged meanwhile stays
    /// purged; see `store::MessageRow::sent_ms`).
    fn put_message(&mut self, sid: &str, m: &Message, sent_ms: Option<i64>) {
        self.batch.messages.push(MessageRow {
            session: sid.to_owned(),
            seq: m.seq,
            id: m.id.clone(),
            sender: m.sender.clone(),
            correlator: m.client_correlator.clone(),
            value: records::encode_message(m),
            sent_ms,
        });
    }
}

/// Runs `request` (its whole wait on the store: a message lock, reads, the commit) within the
/// store's answer bound ([`crate::store::answer_within`]; none for SQLite), past which it is
/// `503` not confirmed ([`storage_unavailable`]), as any single wait is. Without it, requests
/// queued on one session's message lock while the database stopped answering each added
/// their own wait to the ones ahead (24 s for the second of them). A change already handed
/// to the store stays queued, as after any unconfirmed answer.
async fn within_answer<T>(
    request: impl std::future::Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    bounded(request)
        .await
        .unwrap_or_else(|| Err(storage_unavailable()))
}

/// `wait`'s output, or `None` once the store's answer bound ([`crate::store::answer_within`])
/// passed first (none for SQLite: it waits as long as it takes): the one bound of every wait
/// on the store (a commit, a read, a whole request).
async fn bounded<F: std::future::Future>(wait: F) -> Option<F::Output> {
    match crate::store::answer_within() {
        Some(within) => tokio::time::timeout(within, wait).await.ok(),
        None => Some(wait.await),
    }
}

/// The commit of a change handed to the store, to wait for with [`durable`] before answering.
type Committed = oneshot::Receiver<Result<(), NotDone>>;

/// Waits until a submitted change is durable; a failed store answers `503 SVC2001`, an
/// unreachable database `503 SVC2001` with `Retry-After` ([`storage_unavailable`]).
async fn durable(rx: Committed) -> Result<(), ApiError> {
    // A database that stopped answering: not confirmed (the batch stays queued).
    let Some(answer) = bounded(rx).await else {
        return Err(storage_unavailable());
    };
    match answer {
        Ok(Ok(())) => Ok(()),
        Ok(Err(NotDone::Unconfirmed)) => Err(storage_unavailable()),
        Ok(Err(NotDone::Damaged(_) | NotDone::Failed(_))) | Err(_) => Err(storage_failed()),
    }
}

/// Seconds a client is asked to wait (`Retry-After`) while the database is unreachable.
pub const UNAVAILABLE_RETRY_AFTER_SECS: u32 = 2;

/// `503 SVC2001` (OMA "no server resources") saying `why`, with `Retry-After: retry_after_secs`:
/// the one shape of every such answer the server makes itself (the store away, failed or
/// taken over, a read that failed, the sockets' share full).
pub fn no_resources(why: &str, retry_after_secs: u32) -> ApiError {
    let mut e = ApiError::service(
        http::StatusCode::SERVICE_UNAVAILABLE,
        "SVC2001",
        "No server resources available to process the request: %1",
        why,
    );
    e.headers.push((
        http::header::RETRY_AFTER,
        http::HeaderValue::from(retry_after_secs),
    ));
    e
}

/// `503 SVC2001` with `Retry-After` while the database (PostgreSQL) is unreachable: the server
/// keeps running and reconnects by itself. For a change that was in flight, the answer means
/// "not confirmed": it is kept and stored once the database is back, so a retry of a create
/// should carry the same `clientCorrelator` (which returns what the first one made).
pub fn storage_unavailable() -> ApiError {
    no_resources(
        "the server's database is unreachable: retry later; a change answered so is not confirmed (repeat a create with the same clientCorrelator)",
        UNAVAILABLE_RETRY_AFTER_SECS,
    )
}

/// `503 SVC2001` for a read the store could not answer (the server keeps running: nothing was
/// changed). The storage error itself is logged, not shown to clients.
pub fn read_failed() -> ApiError {
    no_resources(
        "the server could not read its storage; retry later",
        UNAVAILABLE_RETRY_AFTER_SECS,
    )
}

/// `503 SVC2001` for a read that met damaged database pages: unlike [`read_failed`], retrying
/// soon does not help (the operator must repair the file, and is told in the log), so the
/// client is asked to wait [`DAMAGED_RETRY_AFTER_SECS`]; everything else stays readable.
pub fn read_damaged() -> ApiError {
    no_resources(
        "the part of the server's storage that holds this is damaged and awaits repair by the operator",
        DAMAGED_RETRY_AFTER_SECS,
    )
}

/// `Retry-After` of [`read_damaged`]: a repair takes an operator, not seconds.
pub const DAMAGED_RETRY_AFTER_SECS: u32 = 300;

/// Seconds a client is asked to wait (`Retry-After`) after the storage failed: the server is
/// stopping, and a supervisor restarts it within seconds (a full disk: once there is room).
pub const FAILED_RETRY_AFTER_SECS: u32 = 5;

/// The longest a stopping leader waits for its standbys to say they have seen its stop
/// ([`Chat::stop_deliveries`]): each answers as the word arrives, so this bounds only a
/// standby that never will (an older version: its requests then meet the drain as before).
const STANDBYS_SEE_THE_STOP_WITHIN: std::time::Duration = std::time::Duration::from_secs(1);

/// `503 SVC2001` (OMA "no server resources"): the server's storage failed, the change was not
/// stored, and the server is stopping (fail-stop; a restart reloads a consistent state). The
/// storage error itself (paths, errno) is for the operator's log, not for clients.
pub fn storage_failed() -> ApiError {
    if crate::store::taken_over() {
        // Not a failure: another instance of the cluster leads the database now, and this one
        // starts over as a standby in a moment. The client repeats the request (it reaches
        // the new leader), as after any `503` with `Retry-After`.
        return no_resources(
            "another instance leads the database now; the request was not carried out (a \
             create: repeat it with the same clientCorrelator)",
            crate::cluster::RETRY_AFTER_SECS,
        );
    }
    no_resources(
        "the server's storage failed and it is stopping; the request was not carried out, retry once the server is back",
        FAILED_RETRY_AFTER_SECS,
    )
}

impl Chat {
    /// The chat system over `store`, with the state of `snapshot` (what the store held at
    /// start-up): subscriptions resume delivery of their undelivered notifications, pending
    /// invitations and subscriptions resume their timers.
    pub fn open(
        urls: Urls,
        settings: Settings,
        store: Store,
        snapshot: Snapshot,
    ) -> Result<Arc<Chat>, String> {
        let (receipts, to_record) = tokio::sync::mpsc::channel(delivered::RECEIPTS_WAITING);
        let chat = Arc::new_cyclic(|weak: &Weak<Chat>| {
            let gone = weak.clone();
            let deliverer = Deliverer {
                callbacks: settings.callbacks,
                signer: settings.signer.clone(),
                policy: settings.retry.clone(),
                store: store.clone(),
                forgetter: crate::notify::Forgetter::start(store.clone()),
                endpoints: crate::notify::endpoints::Endpoints::new(
                    settings.callback_tls.clone(),
                    settings.delivery_connections,
                ),
                relays: settings.relays.clone(),
                on_disable: Arc::new(move |id: &str, reason: &str| {
                    if let Some(chat) = gone.upgrade() {
                        chat.disable_subscription(id, reason);
                    }
                }),
                run: Arc::default(),
                totals: Arc::default(),
            };
            let (sent_budget, sent_over) = settings.limits.sent_bytes;
            Chat {
                state: RwLock::new(State::default()),
                session_order: (0..MESSAGE_LOCKS).map(|_| Mutex::new(())).collect(),
                handing_over: Mutex::new(()),
                urls,
                settings,
                store,
                deliverer,
                message_locks: (0..MESSAGE_LOCKS)
                    .map(|_| tokio::sync::Mutex::new(()))
                    .collect(),
                invitation_timers: Mutex::default(),
                stopping: std::sync::atomic::AtomicBool::new(false),
                sent_bytes: sent_bytes::SentBytes::new(sent_budget, sent_over),
                meter: std::sync::OnceLock::new(),
                receipts,
                receipts_dropping: Arc::default(),
                recording: Chat::recording_limit(),
                receipts_pending: Arc::default(),
            }
        });
        tokio::spawn(delivered::record(Arc::downgrade(&chat), to_record));
        chat.restore(snapshot)?;
        Ok(chat)
    }

    /// Sets what is told, at each change's hand-over, how many notifications the change
    /// causes (deliveries to subscriptions and channels, stored or not): the server charges
    /// them to the token of the request in whose task it runs (`crate::rate`). A change a
    /// timer makes runs in no request's task and is charged to nobody. Set once, at start.
    pub fn meter_notifications(&self, meter: NotificationMeter) {
        let _ = self.meter.set(meter);
    }

    /// `503` once the store has failed: the process is stopping and memory may hold changes
    /// the disk does not, so nothing is served from it any more (see `store::fail_stop`).
    /// `503` with `Retry-After` while the database is unreachable (`Store::is_down`): nothing
    /// new is taken into memory until the changes kept for it are stored. The same `503`
    /// while the database has not confirmed this server's session for `store::lease::LEASE`
    /// (`Store::holds_lease`): on a silent link the server cannot know whether another
    /// instance leads now, so it answers nothing from its memory, reads included.
    pub fn check_store(&self) -> Result<(), ApiError> {
        if self.store.has_failed() {
            Err(storage_failed())
        } else if self.store.is_down() || !self.store.holds_lease() {
            Err(storage_unavailable())
        } else {
            Ok(())
        }
    }

    /// Stops this server's deliveries for a graceful stop (see `notify::Deliverer::stop`):
    /// attempts under way and grouped forgets get until `deadline`, nothing new starts.
    /// Then tells the standbys the drain comes (`notify::relay::Relays::say_leaving`) and,
    /// within [`STANDBYS_SEE_THE_STOP_WITHIN`] more at most, waits for each to say it has seen
    /// it (`Relays::gone`), so that the listener's drain closes no kept-alive connection of
    /// theirs as they write into it.
    pub async fn stop_deliveries(&self, deadline: tokio::time::Instant) {
        self.deliverer.stop(deadline).await;
        if let Some(relays) = &self.deliverer.relays {
            relays.say_leaving();
            let within = tokio::time::Instant::now() + STANDBYS_SEE_THE_STOP_WITHIN;
            relays.gone(deadline.min(within)).await;
        }
    }

    /// The store (for the metrics' outbox count).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Sessions and subscriptions held (for the metrics).
    pub fn sizes(&self) -> (usize, usize) {
        let state = self.read_state();
        (state.sessions.len(), state.subscriptions.len())
    }

    /// Subscriptions delivery disabled (they read `Disabled`; their backlog is dead letters),
    /// for the summary.
    pub fn disabled_subscriptions(&self) -> usize {
        self.read_state()
            .subscriptions
            .values()
            .filter(|s| s.rec.disabled.is_some())
            .count()
    }

    /// Bytes of stored bodies every subscription's backlog holds together (the delivery
    /// budget's figure), for `/metrics`.
    pub fn held_bytes(&self) -> usize {
        self.deliverer.totals.bytes()
    }

    /// A graceful stop's wait for callback attempts ran out: the standbys still holding some
    /// are let go at once (`notify::relay::Relays::let_go`), so that their connections do not
    /// hold the listener's drain; what they held stays in the outbox.
    pub fn let_go_of_standbys(&self) {
        if let Some(relays) = &self.deliverer.relays {
            relays.let_go();
        }
    }

    /// A graceful stop begins: no subscription expires here any more ([`Chat::stopping`]),
    /// no callback attempt is handed to a standby any more, and each standby's connection
    /// closes once the attempts it holds are answered (`notify::relay::Relays::release`), so
    /// the listener's drain is not held by them.
    pub fn begin_stop(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(relays) = &self.deliverer.relays {
            relays.release();
        }
    }

    /// Whether a graceful stop has begun ([`Chat::begin_stop`]). The server still answers
    /// while its callback attempts wind down (up to half the grace), and then its listener
    /// drain closes every connection: each answer meanwhile says `Connection: close`
    /// (`server::answer_hook`), so a client learns with it to open its next
    /// request elsewhere instead of writing it into a kept-alive connection the drain closes
    /// (a balancer does not send an unanswered `POST` again).
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Standbys carrying this server's callback attempts now (`notify::relay`).
    pub fn carriers(&self) -> usize {
        self.deliverer
            .relays
            .as_ref()
            .map_or(0, crate::notify::relay::Relays::connected)
    }

    /// Best-effort indications (`isComposing`) every subscription's queue holds together
    /// (at most `notify::MAX_TRANSIENT_HELD` each), for `/metrics`.
    pub fn held_transient(&self) -> usize {
        self.deliverer.totals.transient()
    }

    /// When the oldest notification a callback has not taken yet was made (Unix ms), over
    /// every subscription, for `/metrics` (`None`: nothing waits).
    pub fn oldest_undelivered_ms(&self) -> Option<i64> {
        let state = self.read_state();
        state
            .subscriptions
            .values()
            .filter_map(|s| s.queue.oldest_ms())
            .min()
    }

    /// The URL builder.
    pub fn urls(&self) -> &Urls {
        &self.urls
    }

    /// The state for reading: every read, and a change of one session's messages (with
    /// [`Chat::session_order`]).
    fn read_state(&self) -> RwLockReadGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-made change that matters more
        // than refusing all further service; keep serving.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The state for a change of its maps (see the module docs).
    fn write_state(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Session `sid`'s order lock (see [`Chat::session_order`]); take it holding the read lock.
    fn session_order(&self, sid: &str) -> SessionOrder<'_> {
        let i = stripe(sid, MESSAGE_LOCKS);
        SessionOrder {
            _held: self.session_order[i]
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
            stripe: i,
        }
    }

    /// Hands the change to the store holding the write lock (the `&mut` is the proof); its
    /// notifications go to their queues right after the commit.
    fn submit(&self, state: &mut State, change: Change) -> Committed {
        self.hand_over(state, change)
    }

    /// Hands a change of session `sid` to the store holding the read lock and that session's
    /// order lock (see [`Chat::session_order`]).
    fn submit_in_order(
        &self,
        state: &State,
        order: &SessionOrder<'_>,
        sid: &str,
        change: Change,
    ) -> Committed {
        debug_assert_eq!(
            order.stripe,
            stripe(sid, MESSAGE_LOCKS),
            "the order lock of {sid}"
        );
        self.hand_over(state, change)
    }

    /// The new notifications' ids, the counters' snapshot and the hand-over, together under
    /// [`Chat::handing_over`]: ids are given in hand-over order, which is commit order and
    /// the order of the delivery queues, so each subscription's ids increase in the order its
    /// notifications are sent (dead letters listed `since` an id, and a restart that reloads
    /// the outbox by id, rely on it).
    fn hand_over(&self, state: &State, mut change: Change) -> Committed {
        let _in_order = self.handing_over.lock().unwrap_or_else(|e| e.into_inner());
        change.number(&state.ids);
        let deliveries = std::mem::take(&mut change.deliveries);
        if let (false, Some(meter)) = (deliveries.is_empty(), self.meter.get()) {
            meter(deliveries.len());
        }
        let hook: Option<Box<dyn FnOnce() + Send>> = (!deliveries.is_empty()).then(|| {
            Box::new(move || {
                for (queue, d) in deliveries {
                    queue.push(d);
                }
            }) as Box<dyn FnOnce() + Send>
        });
        change.put(
            Kind::Meta,
            "counters".to_owned(),
            records::encode_counters(&state.ids.snapshot()),
        );
        self.store.submit(change.batch, hook)
    }

    /// Session `sid` if it is a resource for `user` (see [`visible_to`]), else the `404` that
    /// names it.
    fn visible<'a>(
        &self,
        state: &'a State,
        user: &str,
        sid: &str,
    ) -> Result<&'a Session, ApiError> {
        match state.sessions.get(sid) {
            Some(s) if visible_to(s, user) => Ok(s),
            _ => Err(missing(&self.urls.session(user, sid))),
        }
    }

    /// Applies a rule's decision (call under the lock): the session takes its new state, a
    /// participant new to it finds it in its per-user index, a change of its own records it
    /// (or releases it, once ended) and carries the notifications, and goes to the store
    /// ([`Chat::submit`]; the answer tells when it is durable). Participants are only ever
    /// appended to a session (a position names one participant for good), so the new ones
    /// are those past the old session's length.
    fn apply(&self, state: &mut State, mut d: Decision) -> Committed {
        let deserted = sessions::end_if_deserted(&self.urls, &mut d.session);
        d.outbox.extend(deserted);
        let mut change = Change::default();
        let sid = d.session.id.clone();
        // Stored with it: where its idle time counts from after a restart.
        d.session.changed_ms = Some(crate::store::now_ms());
        if let Some(old) = state.sessions.get(&sid) {
            self.stop_invitation_timers(&pending_seqs(old, false), &pending_seqs(&d.session, true));
        }
        state.put_session(d.session);
        // Before the release: a subscriber of the OMA 2012 face is told with links that the
        // session's shape decides (`oma2012::profile`), an ended session's too.
        self.notify(state, &mut change, d.outbox);
        put_or_release(state, &mut change, &sid);
        self.submit(state, change)
    }
}

/// The `seq`s of `s`'s pending invitations (none once it has ended, when `ending_counts`).
fn pending_seqs(s: &Session, ending_counts: bool) -> Vec<u64> {
    if ending_counts && s.ended {
        return Vec::new();
    }
    s.participants
        .iter()
        .filter_map(|p| match p.invitation {
            state::Invitation::Pending { seq, .. } => Some(seq),
            _ => None,
        })
        .collect()
}

/// Records the session's new state in the change, or, once it has ended, releases it: an
/// ended session is gone (404 for everyone, on it and on every sub-resource), so its memory,
/// its index entries and its stored record and messages go in the same change. Notifications
/// about it must already be in the outbox being built (they are self-contained documents).
fn put_or_release(state: &mut State, change: &mut Change, sid: &str) {
    match state.sessions.get(sid) {
        Some(s) if s.ended => {
            // Out of memory with every index entry (`State::take_session`).
            state.take_session(sid);
            change.batch.deletes.push((Kind::Session, sid.to_owned()));
        }
        Some(s) => change.put_session(s),
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::state::Invitation;
    use super::testkit::*;
    use super::{correlator, visible_to};

    /// A server-wide cap admits while fewer than its limit are held.
    #[test]
    fn a_server_wide_cap_admits_below_its_limit() {
        use super::refused::Refused;
        assert_eq!(super::room_for(1, 2, "sessions"), Ok(()));
        let full = Refused::ServerFull {
            what: "sessions",
            limit: 2,
        };
        assert_eq!(super::room_for(2, 2, "sessions"), Err(full.clone()));
        assert_eq!(super::room_for(3, 2, "sessions"), Err(full));
    }

    /// A token's share is its percentage of the cap, at least one; it may make one more
    /// while it holds fewer, and what it holds is weighed apart from the others'.
    #[test]
    fn a_token_makes_more_while_it_holds_less_than_its_share() {
        use super::refused::Refused;
        use super::state::{Held, Owners};
        use super::{token_share, within_share};
        assert_eq!(token_share(100_000, 100), 100_000);
        assert_eq!(token_share(100_000, 50), 50_000);
        assert_eq!(token_share(10, 25), 2);
        assert_eq!(token_share(3, 1), 1, "never none");
        assert_eq!(token_share(usize::MAX, 100), usize::MAX / 100);
        assert_eq!(within_share(1, 2, "sessions"), Ok(()));
        let at = Refused::TokenShare {
            what: "sessions",
            share: 2,
        };
        assert_eq!(within_share(2, 2, "sessions"), Err(at));
        let mut owners = Owners::default();
        for _ in 0..3 {
            owners.count(Some("sha256:a"), Held::Sessions, true);
        }
        owners.count(Some("sha256:b"), Held::Sessions, true);
        owners.count(None, Held::Sessions, true);
        owners.count(Some("sha256:a"), Held::Sessions, false);
        assert_eq!(owners.held("sha256:a", Held::Sessions), 2);
        assert_eq!(owners.held("sha256:b", Held::Sessions), 1);
        assert_eq!(owners.held("sha256:a", Held::Channels), 0);
        owners.count(Some("sha256:b"), Held::Sessions, false);
        assert_eq!(owners.held("sha256:b", Held::Sessions), 0);
    }

    /// An empty `clientCorrelator` is none; any other, whitespace too, is kept as it is.
    #[test]
    fn an_empty_correlator_is_none() {
        let cases = [
            (None, None),
            (Some(""), None),
            (Some(" "), Some(" ")),
            (Some("c-1"), Some("c-1")),
        ];
        for (given, kept) in cases {
            assert_eq!(
                correlator(given.map(str::to_owned)).as_deref(),
                kept,
                "{given:?}"
            );
        }
    }

    /// Who sees a session: its participants, except an invitee whose invitation timed out or
    /// was cancelled (so accepting after a timeout, or ending a session one is not in, is the
    /// 404 of a session that does not exist); nobody once it ended.
    #[test]
    fn who_sees_a_session() {
        let s = session(
            true,
            &[
                (B, Invited, pending(1)),
                (C, Disconnected, Invitation::Declined),
                (D, Disconnected, Invitation::TimedOut),
                ("tel:+5", Disconnected, Invitation::Cancelled),
                ("tel:+6", Disconnected, Invitation::Accepted),
            ],
        );
        let cases = [
            (A, true, "the originator"),
            (B, true, "a pending invitee"),
            (C, true, "an invitee that declined a group invitation"),
            (D, false, "an invitee whose invitation timed out"),
            ("tel:+5", false, "an invitee whose invitation was cancelled"),
            ("tel:+6", true, "a participant that left"),
            (STRANGER, false, "a stranger"),
        ];
        for (who, sees, case) in cases {
            assert_eq!(visible_to(&s, who), sees, "{case}");
        }
        let mut ended = s.clone();
        ended.ended = true;
        assert!(!visible_to(&ended, A), "an ended session is gone");
    }
}
