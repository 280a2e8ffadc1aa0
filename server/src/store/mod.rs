//! Durable state: the narrow interface the chat core writes through, and the thread that runs a
//! backend with group commit.
//!
//! The core keeps its working set in memory and describes every change as a [`Batch`]: the
//! records it wrote (subscriptions, sessions, messages, as opaque JSON), the records it deleted,
//! and the notifications the change causes (the transactional outbox). What those bytes look
//! like is a versioned contract (see [`format`]). A batch is committed in
//! one transaction; only then is the client answered and are the notifications handed to
//! delivery, in commit order. Batches that arrive while a commit is running are committed
//! together (group commit), so the cost of a sync is shared by every request waiting on it.
//!
//! [`Backend`] is the whole interface a storage engine implements; [`sqlite::Sqlite`] is the
//! embedded default, [`postgres::Postgres`] the shared engine (`NETAPI_CHAT_DATABASE_URL`; one
//! writer per database, other instances stand by: `crate::cluster`). [`open`] picks one from the configuration.
//!
//! A backend whose database can be unreachable for a while ([`Backend::unavailable`]) does not
//! stop the server on a failed commit: the store keeps the batches and commits them once it
//! has reconnected (see [`Store::is_down`] and `recover`).

pub mod format;
pub mod lease;
mod pg_tls;
pub mod postgres;
pub mod sqlite;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use tokio::sync::oneshot;

/// What kind of record a key names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A chat notification subscription.
    Subscription,
    /// A session with its participants (messages are separate records).
    Session,
    /// One message. Since stored format 3 messages are not records: they are written through
    /// [`Batch::messages`] and read back on demand ([`Store::read`]), never at start-up; the
    /// kind stays for the migration steps of older formats, which stored them as records keyed
    /// `sessionId/messageId`.
    Message,
    /// Counters and other server-wide values.
    Meta,
    /// A notification channel (since stored format 6).
    Channel,
}

impl Kind {
    /// The table / key space name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Subscription => "subscription",
            Kind::Session => "session",
            Kind::Message => "message",
            Kind::Meta => "meta",
            Kind::Channel => "channel",
        }
    }

    /// The kind whose [`Kind::name`] is `name` (every backend reads stored kinds with it).
    pub fn from_name(name: &str) -> Option<Kind> {
        [
            Kind::Subscription,
            Kind::Session,
            Kind::Message,
            Kind::Meta,
            Kind::Channel,
        ]
        .into_iter()
        .find(|k| k.name() == name)
    }
}

/// A notification waiting for delivery: committed with its cause, deleted once delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Stable id, sent as `webhook-id`; increasing in creation order.
    pub id: u64,
    /// The subscription it goes to.
    pub subscription: String,
    /// The notification, as JSON (see `crate::notify::Notification`).
    pub body: Vec<u8>,
    /// Creation time, Unix milliseconds (its give-up age counts from here).
    pub created_ms: i64,
    /// How far its delivery got (attempts, next attempt, the endpoint's failure streak):
    /// stored so that a restart resumes the schedule instead of starting it over.
    pub progress: Progress,
}

/// The delivery state of one undelivered notification, kept in its outbox row (see
/// `crate::notify`): written after each failed attempt of the notification at the head of
/// its subscription's queue, read back at start-up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due, Unix milliseconds (0: at once).
    pub next_attempt_ms: i64,
    /// Since when the subscription's callback has been failing (Unix ms), carried from one
    /// head of the queue to the next; `None` while it is healthy.
    pub failing_since_ms: Option<i64>,
}

/// Notifications of one subscription that will not be delivered (given up, or their
/// subscription was disabled): they become dead letters, kept for inspection and later replay,
/// at most `keep_count` of them and `keep_bytes` of bodies per subscription (the oldest go
/// first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bury {
    /// The subscription.
    pub subscription: String,
    /// Outbox ids that become dead letters.
    pub ids: Vec<u64>,
    /// Most dead letters the subscription keeps.
    pub keep_count: usize,
    /// Most bytes of dead-letter bodies the subscription keeps.
    pub keep_bytes: usize,
}

/// Dead letters of one subscription that go back into its delivery queue (a redelivery, see
/// `chat::deadletters`): each becomes an undelivered outbox entry again, with its id (so its
/// `webhook-id`) and body, a fresh schedule (no attempt made, due at once, no failure run) and
/// `created_ms` as its new creation time (its give-up age counts from the redelivery).
/// An id that is not a dead letter of the subscription (any more) is left alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revive {
    /// The subscription.
    pub subscription: String,
    /// Outbox ids of its dead letters.
    pub ids: Vec<u64>,
    /// Their new creation time, Unix milliseconds.
    pub created_ms: i64,
}

/// One dead letter as read back ([`Backend::dead_letters`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetterRow {
    /// Its outbox id (its `webhook-id` is `msg_<id>`).
    pub id: u64,
    /// The notification, as JSON (see `crate::notify::Notification`).
    pub body: Vec<u8>,
    /// When it was created (or last redelivered), Unix milliseconds.
    pub created_ms: i64,
    /// When it became a dead letter, Unix milliseconds.
    pub dead_ms: i64,
    /// Delivery attempts made before it was given up.
    pub attempts: u32,
}

/// A message as written: the columns it is found by, and its stored record (JSON).
///
/// Messages are the one thing that grows with use, so they are not part of the start-up
/// snapshot and the core does not hold them: the backend indexes them by the columns here
/// and answers the lookups of [`Backend`] (`messages_after`, `message`, `message_by_correlator`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageRow {
    /// The session it belongs to.
    pub session: String,
    /// Its position in creation order (unique per session; pages are walked by it).
    pub seq: u64,
    /// Its id (unique per session).
    pub id: String,
    /// Who sent it (with `correlator`, what a replayed send is recognised by).
    pub sender: String,
    /// The sender's `clientCorrelator`, if any.
    pub correlator: Option<String>,
    /// The stored record (`chat::records`).
    pub value: Vec<u8>,
    /// When it was sent (Unix milliseconds), for a new message: what retention goes by
    /// (`crate::retention`). `None` for a new state of a message already stored (a delivery
    /// confirmation): only its record changes, its time stays, and a message purged in the
    /// meantime stays purged instead of coming back.
    pub sent_ms: Option<i64>,
}

/// One atomic change.
#[derive(Debug, Default)]
pub struct Batch {
    /// Records written (kind, key, JSON value); never [`Kind::Message`] (see `messages`).
    pub puts: Vec<(Kind, String, Vec<u8>)>,
    /// Messages written (new ones, or a new state of one already stored, same session and seq;
    /// see [`MessageRow::sent_ms`]).
    pub messages: Vec<MessageRow>,
    /// Records deleted (kind, key); deleting a session deletes its messages, deleting a
    /// subscription its undelivered notifications and dead letters.
    pub deletes: Vec<(Kind, String)>,
    /// Notifications to add to the outbox.
    pub outbox: Vec<OutboxEntry>,
    /// Outbox entries to drop (delivered, or their subscription is gone).
    pub forget: Vec<u64>,
    /// New delivery progress of outbox entries (after a failed attempt).
    pub progress: Vec<(u64, Progress)>,
    /// Outbox entries that become dead letters.
    pub bury: Vec<Bury>,
    /// Dead letters that become undelivered outbox entries again (a redelivery).
    pub revive: Vec<Revive>,
}

impl Batch {
    /// True when committing it would change nothing.
    pub fn is_empty(&self) -> bool {
        self.puts.is_empty()
            && self.messages.is_empty()
            && self.deletes.is_empty()
            && self.outbox.is_empty()
            && self.forget.is_empty()
            && self.progress.is_empty()
            && self.bury.is_empty()
            && self.revive.is_empty()
    }
}

/// What a purge job did ([`Backend::purge_messages`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Purged {
    /// Messages deleted.
    pub deleted: usize,
    /// Where the next job of the round starts (a session id, inclusive), or `None` when the
    /// walk reached the last session: the round is over.
    pub next: Option<String>,
}

/// The retention rule over the head of one session: how many of its oldest messages, given
/// their sending times in seq order, were sent before `before_ms`. The leading run only: a
/// session's messages are in sending order, and should the clock have stepped back, an
/// older-stamped message after a younger one waits for it rather than being hunted for.
pub fn expired_head(sent_ms: &[i64], before_ms: i64) -> usize {
    sent_ms.iter().take_while(|t| **t < before_ms).count()
}

/// The smallest session id greater than `session` (in the byte order SQLite compares text
/// in): where a purge walk goes on after it.
pub fn after_session(session: &str) -> String {
    format!("{session}\u{0}")
}

/// A page's cursor (`after`, client input) as the backends' SQL compares it: `Some(-1)` for
/// no cursor (before every row: no seq or outbox id is negative), `None` for one past what an `i64`
/// can hold, which is past every row: the page is empty. Shared so that both backends read a
/// cursor by one rule.
pub fn cursor(after: Option<u64>) -> Option<i64> {
    match after.map(i64::try_from) {
        None => Some(-1),
        Some(Ok(a)) => Some(a),
        Some(Err(_)) => None,
    }
}

/// The bookkeeping of one purge job ([`Backend::purge_messages`]), shared by the backends so
/// that they differ only in how they query: the budget (a session visited or a message deleted
/// is one unit), where the walk stands, what the job deleted and where the next one starts.
/// A backend loops `while let Some(from) = walk.next_start()`: finds the first session at or
/// after `from` (none: the round is over), calls [`PurgeWalk::visit`] for how many of its
/// oldest messages to read, then [`PurgeWalk::head`] with them, and deletes through the seq
/// that returns.
pub struct PurgeWalk {
    budget: usize,
    work: usize,
    room: usize,
    done: Purged,
}

impl PurgeWalk {
    /// A job from session `from` (inclusive; `""` for the first) with `budget` units. A visit
    /// takes one unit: at least two leave room to delete, so every job makes progress.
    pub fn new(from: &str, budget: usize) -> Self {
        PurgeWalk {
            budget: budget.max(2),
            work: 0,
            room: 0,
            done: Purged {
                deleted: 0,
                next: Some(from.to_owned()),
            },
        }
    }

    /// Where to look for the next session (inclusive; [`after_session`] marks "just after"),
    /// or `None` when the budget is spent: the job is over and the next one starts there. A
    /// backend that finds no session at or after the start stops: the walk's place stays
    /// empty, so [`PurgeWalk::done`] says the round is over.
    pub fn next_start(&mut self) -> Option<String> {
        let from = self.done.next.take()?;
        if self.work >= self.budget {
            self.done.next = Some(from);
            return None;
        }
        Some(from)
    }

    /// A session was found: counts its visit and says how many of its oldest messages to read
    /// (one more than may be deleted: that one tells whether the head goes on).
    pub fn visit(&mut self) -> usize {
        self.work += 1;
        self.room = self.budget.saturating_sub(self.work);
        self.room + 1
    }

    /// The visited `session`'s oldest messages as `(seq, sent_ms)` in seq order: counts what
    /// expired before `before_ms` ([`expired_head`]) within the budget, sets where the walk goes
    /// on (this session again when the budget cut its head short, else the next one), and
    /// returns the seq through which to delete, if any.
    pub fn head(&mut self, session: &str, rows: &[(i64, i64)], before_ms: i64) -> Option<i64> {
        let times: Vec<i64> = rows.iter().map(|(_, t)| *t).collect();
        let whole = expired_head(&times, before_ms);
        let expired = whole.min(self.room);
        self.work += expired;
        self.done.deleted += expired;
        self.done.next = Some(if whole > self.room {
            session.to_owned()
        } else {
            after_session(session)
        });
        expired
            .checked_sub(1)
            .and_then(|i| rows.get(i))
            .map(|(seq, _)| *seq)
    }

    /// What the job did.
    pub fn done(self) -> Purged {
        self.done
    }
}

/// Everything the core keeps in memory, as read at start-up (messages stay in the store).
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Every record, by kind, in key order (no messages).
    pub records: Vec<(Kind, String, Vec<u8>)>,
    /// Undelivered notifications, in id order (not the dead letters).
    pub outbox: Vec<OutboxEntry>,
    /// Set when opening brought the data up from an older stored format (see [`format`]), so
    /// that start-up logs it once.
    pub migrated: Option<Migrated>,
}

/// A migration done when the store was opened: from which [`format`] version to which, and
/// how much it rewrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Migrated {
    /// The version the data directory had.
    pub from: u32,
    /// The version it has now ([`format::CURRENT`]).
    pub to: u32,
    /// Records rewritten.
    pub records: u64,
    /// Outbox entries rewritten.
    pub outbox: u64,
}

/// A storage failure. The server stops on one (fail-stop): its memory would otherwise hold
/// changes the disk does not, and a restart reloads a consistent state.
#[derive(Debug)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "storage error: {}", self.0)
    }
}

impl std::error::Error for StoreError {}

/// How a [`StoreError`] of damaged database pages begins ([`StoreError::damage`]).
const DAMAGED: &str = "the database file is damaged";

impl StoreError {
    /// A read or write that met damaged pages (SQLite's `SQLITE_CORRUPT`, `SQLITE_NOTADB`:
    /// bit rot, a bad sector, a file edited under the server). Unlike an outage it does not
    /// mend by waiting: the operator must repair the file (README, *A damaged database*).
    pub fn damage(detail: impl std::fmt::Display) -> StoreError {
        StoreError(format!("{DAMAGED} ({detail})"))
    }

    /// Whether this is [`StoreError::damage`].
    pub fn is_damage(&self) -> bool {
        self.0.starts_with(DAMAGED)
    }
}

/// A storage engine. Called from one thread only.
pub trait Backend: Send + 'static {
    /// Reads everything but messages (at start-up).
    fn load(&mut self) -> Result<Snapshot, StoreError>;
    /// Applies several batches in one durable transaction.
    fn commit(&mut self, batches: &[&Batch]) -> Result<(), StoreError>;
    /// Up to `limit` messages of `session` with a seq greater than `after` (all when `None`),
    /// in seq order, as (seq, stored record). Indexed: the cost follows `limit`, not the
    /// session's length.
    fn messages_after(
        &mut self,
        session: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;
    /// The stored record of message `id` of `session`.
    fn message(&mut self, session: &str, id: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// When the last message of `session` was stored (its `sent_ms`), if it has one: an ad
    /// hoc chat's idle clock after a restart (`chat::restore`). Indexed by (session, seq).
    fn last_message_ms(&mut self, session: &str) -> Result<Option<i64>, StoreError>;
    /// The id of the message `sender` sent in `session` with this `clientCorrelator` (the
    /// first one, if a data directory of an older version holds several).
    fn message_by_correlator(
        &mut self,
        session: &str,
        sender: &str,
        correlator: &str,
    ) -> Result<Option<String>, StoreError>;
    /// Up to `limit` dead letters of `subscription` with an id greater than `after` (all when
    /// `None`) and created at or after `since_ms`, in id order (their creation order).
    /// Indexed by (subscription, id): the cost follows `limit` and the subscription's own
    /// outbox rows, which the backlog cap bounds. The default keeps none (an engine without
    /// dead letters, e.g. the benches' redb backend).
    fn dead_letters(
        &mut self,
        subscription: &str,
        after: Option<u64>,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<DeadLetterRow>, StoreError> {
        let _ = (subscription, after, since_ms, limit);
        Ok(Vec::new())
    }
    /// Proves the store can still take a commit, for readiness (`/readyz`): run on the store
    /// thread between commits, so an answer also says the thread is not stuck. Must change
    /// no stored data. The default has nothing to check.
    fn probe(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Notifications in the outbox (not yet delivered, given up or forgotten), for the
    /// metrics; `None` when the engine cannot tell cheaply.
    fn outbox_len(&mut self) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }
    /// Writes a consistent copy of the whole database to `file` (which must not exist), for
    /// `netapi-chat backup`: run through [`Store::read`], so it holds every batch
    /// queued before it and commits wait while it runs (its cost follows the database's size).
    /// Given up with an error once it has run for `within`, so that commits never wait longer
    /// than that for it (`file` is then incomplete: the caller removes it). `file` is in the
    /// data directory (`crate::admin_api`), on the database's own disk: a slow or hung
    /// destination is written to afterwards, off the store thread.
    fn backup_into(
        &mut self,
        file: &std::path::Path,
        within: std::time::Duration,
    ) -> Result<(), StoreError> {
        let _ = (file, within);
        Err(StoreError(
            "this storage engine cannot make a backup".to_owned(),
        ))
    }
    /// What is stored beyond the in-memory state, for `netapi-chat summary`: the number of
    /// messages, of undelivered notifications and of dead letters, and the `most` subscriptions with the most
    /// undelivered notifications (a `COUNT` over each table: the cost follows their sizes).
    fn counts(&mut self, most: usize) -> Result<StoredCounts, StoreError> {
        let _ = most;
        Err(StoreError(
            "this storage engine cannot count what it stores".to_owned(),
        ))
    }
    /// One job of a retention round (see `crate::retention`), in one short transaction of its
    /// own: walks the sessions that have messages, in session order from `from` (inclusive;
    /// `""` for the first), and deletes each one's messages sent before `before_ms` (Unix
    /// milliseconds) from its oldest on, up to its first younger one ([`expired_head`]: a
    /// session's messages are in sending order). Stops after `budget` units of work (a session
    /// visited or a message deleted is one), so the cost follows `budget`, not the number of
    /// messages stored; no index by time is needed (none is kept: it would cost every send).
    fn purge_messages(
        &mut self,
        before_ms: i64,
        from: &str,
        budget: usize,
    ) -> Result<Purged, StoreError>;
    /// Deletes at most `budget` dead letters buried before `before_ms` (Unix milliseconds),
    /// the oldest first (retention, issue 13: dead letters are kept for the retention period,
    /// then go like the messages do); how many it deleted. The outbox is bounded (backlog
    /// caps, dead letters trimmed per subscription), so the scan without an index by burial
    /// time is bounded too.
    fn purge_dead_letters(&mut self, before_ms: i64, budget: usize) -> Result<usize, StoreError>;
    /// Called once, by a cluster's leader stopping cleanly, after its last answer and its last
    /// commit, just before its connection closes: records that the lead is handed over, so
    /// the next leader need not wait out this one's lease (nothing answers from this one's
    /// memory any more). The default has no lead to hand over.
    fn hand_over(&mut self) {}
    /// Whether the leader before this server handed the lead over ([`Backend::hand_over`]):
    /// then this one serves at once instead of waiting out that leader's lease.
    fn lead_handed_over(&self) -> bool {
        false
    }
    /// Called when no batch is waiting: a moment for housekeeping that would otherwise delay a
    /// commit (e.g. truncating a write-ahead log).
    fn idle(&mut self) {}
    /// Called once the [`Backend::lease`] is [`HEARTBEAT`] old, while no work comes or between
    /// two groups of work (without a lease: every [`HEARTBEAT`] while no work comes): a round
    /// trip that confirms the lease, bounded well below it (a heartbeat must not hold the store thread
    /// for a database's whole wait). A database that went away, or a cluster's leader that
    /// lost its lock with its session, is noticed now ([`Backend::unavailable`] then says so)
    /// rather than at the next write; one that is merely silent lets the lease lapse, so that
    /// a leader serving reads from memory stops within [`lease::LEASE`]. The failure, if
    /// any: what the log says the outage began with.
    fn heartbeat(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
    /// The lease this backend's server answers under ([`lease`]), confirmed by every round
    /// trip the database answers; `None` (SQLite: no link to lose, nobody else writes the
    /// file): always served.
    fn lease(&self) -> Option<Arc<lease::Lease>> {
        None
    }
    /// Whether housekeeping is due now, so that [`Backend::idle`] should run in the next gap
    /// between commits, even a short one, rather than wait for a quiet moment that a steady
    /// load never leaves (then the work piles up and is done all at once, in one long stall).
    fn housekeeping_due(&self) -> bool {
        false
    }
    /// After a failed commit or read: whether the failure was the database being unreachable
    /// for now (a database server restarting or cut off), so that the store keeps the batches
    /// and commits them after [`Backend::reconnect`] instead of stopping the process. `false`
    /// (the default, SQLite): every failure is fatal (fail-stop).
    fn unavailable(&self) -> bool {
        false
    }
    /// Tries to reach the database again after [`Backend::unavailable`]; `Ok` once it takes
    /// commits. A failure with `unavailable()` still true is tried again later; any other is
    /// fatal (e.g. another server took the database meanwhile).
    fn reconnect(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Whether another server took the database while this one was away (a cluster's
    /// leader that was cut off): the store must not write again, and the process starts
    /// over as a standby (`crate::cluster::start_over`).
    fn taken_over(&self) -> bool {
        false
    }
    /// Whether the last failure was the connection to the database ending (restarted, the
    /// session ended, the link lost), not a statement refused, cancelled or slow: what makes
    /// a failed read of the state at start worth opening the store again for
    /// ([`NotStarted::Away`]). `false` (the default, SQLite): never.
    fn went_away(&self) -> bool {
        false
    }
    /// The key a cluster's standbys prove forwarded requests with, once this server leads one
    /// (`None` alone, and on SQLite).
    fn cluster_key(&self) -> Option<String> {
        None
    }
    /// Why `netapi-chat backup` cannot copy this engine's data (the admin endpoint answers it
    /// instead of trying), or `None` when [`Backend::backup_into`] works.
    fn backup_unsupported(&self) -> Option<&'static str> {
        None
    }
}

/// The backend the configuration asks for: PostgreSQL when `NETAPI_CHAT_DATABASE_URL` is set
/// (the data directory still holds the token file), else SQLite in the data directory. A
/// PostgreSQL database that cannot be reached yet is waited for ([`open_unless_led`]).
pub async fn open(config: &crate::config::Config) -> Result<Box<dyn Backend>, StoreError> {
    match open_unless_led(config, None).await? {
        Some(backend) => Ok(backend),
        None => Err(StoreError(
            "the database is held by another netapi-chat server".to_owned(),
        )),
    }
}

/// The first pause between two attempts to reach a database at start ([`open_unless_led`]);
/// it doubles up to [`START_RETRY_AT_MOST`].
const START_RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(500);

/// The longest pause between two attempts to reach a database at start: a database back
/// from an outage is found within this (plus a connection attempt), and the log gets one
/// line per attempt at most this often.
pub const START_RETRY_AT_MOST: std::time::Duration = std::time::Duration::from_secs(5);

/// [`open`]'s wait: `None` while another instance holds the database.
///
/// A PostgreSQL database that cannot be reached (refused, silent, starting up, out of
/// connections) is tried again until it can, every [`START_RETRY_AT_MOST`] at most, with a
/// warning each time saying so: the lone server does not listen meanwhile (a load balancer's
/// health check keeps it out), and a stop signal ends the wait. (An instance of a cluster
/// listens from its start, so it tries once at a time instead, [`open_once_unless_led`],
/// and answers `503` between its tries.) Exiting instead would leave
/// the wait to a supervisor, whose restart limits (systemd's default: 5 starts in 10 s) give
/// up on an outage longer than a few seconds, and every instance of a cluster would do so at
/// once. What cannot get better by waiting (a URL that does not read, a certificate that does
/// not verify, a refused login, the database held by a server outside the cluster, a newer
/// stored format) still stops the start with its message.
pub async fn open_unless_led(
    config: &crate::config::Config,
    seat: Option<postgres::Seat>,
) -> Result<Option<Box<dyn Backend>>, StoreError> {
    let mut pause = START_RETRY_FIRST;
    loop {
        match open_once_unless_led(config, seat.clone()).await? {
            Attempt::Opened(backend) => return Ok(Some(backend)),
            Attempt::Busy => return Ok(None),
            Attempt::Unreachable(e) => {
                tracing::warn!(
                    "cannot reach the database yet ({e}); not listening until it can, \
                     trying again in {} ms",
                    pause.as_millis()
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(START_RETRY_AT_MOST);
            }
        }
    }
}

/// What one attempt to open the store found: [`postgres::Opening`] for either engine.
pub enum Attempt {
    /// Opened: this instance leads (or is alone).
    Opened(Box<dyn Backend>),
    /// Another instance of the cluster holds the database.
    Busy,
    /// The database cannot be reached yet (worth trying again), and why.
    Unreachable(StoreError),
}

/// One attempt of [`open_unless_led`], for an instance of a cluster that answers its clients
/// meanwhile (`crate::cluster`: `503` while it cannot reach the database, instead of a port
/// that accepts and answers nothing). A lone server waits in [`open_unless_led`] without
/// listening, so a load balancer sends its clients elsewhere.
pub async fn open_once_unless_led(
    config: &crate::config::Config,
    seat: Option<postgres::Seat>,
) -> Result<Attempt, StoreError> {
    let c = config.clone();
    tokio::task::spawn_blocking(move || open_once(&c, seat))
        .await
        .map_err(|e| StoreError(format!("opening the store: {e}")))?
}

/// One attempt of [`open_unless_led`], on a blocking thread.
fn open_once(
    config: &crate::config::Config,
    seat: Option<postgres::Seat>,
) -> Result<Attempt, StoreError> {
    match &config.database_url {
        Some(url) => {
            crate::data_dir::create(&config.data_dir).map_err(StoreError)?;
            // The backend drives its client with a small runtime of its own, which must not be
            // started (or dropped) on a thread of tokio's: connect on a plain thread.
            let url = url.clone();
            let tls = std::sync::Arc::new(
                crate::tls::database_client_config(config.database_ca_file.as_deref())
                    .map_err(StoreError)?,
            );
            let opened = std::thread::spawn(move || postgres::Postgres::open(&url, seat, tls))
                .join()
                .map_err(|_| StoreError("opening the PostgreSQL backend panicked".to_owned()))?;
            let _ = ANSWER_WITHIN.set(POSTGRES_ANSWER_WITHIN);
            Ok(match opened? {
                postgres::Opening::Opened(pg) => Attempt::Opened(pg),
                postgres::Opening::Busy => Attempt::Busy,
                postgres::Opening::Unreachable(e) => Attempt::Unreachable(e),
            })
        }
        None => {
            let mut backend = sqlite::Sqlite::open(&config.data_dir, config.sync)?;
            backend.set_cache_mb(config.cache_mb)?;
            Ok(Attempt::Opened(Box::new(backend)))
        }
    }
}

/// Why a batch or a read handed to the store thread was not carried out, as the request that
/// waits for it must tell its client: each case is answered differently (the core's `durable`
/// and `Chat::read`), so it is a kind, never a text to compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotDone {
    /// The database is unreachable: a batch was not confirmed (it is kept and committed once
    /// the database is back, but the request cannot wait for that); a read could not be done.
    /// Answered `503` with `Retry-After`.
    Unconfirmed,
    /// A read met damaged pages ([`StoreError::damage`]): waiting does not mend it.
    Damaged(String),
    /// Anything else, with what failed (for the log, not for clients): a failed commit stops
    /// the server, a failed read only its request.
    Failed(String),
}

/// For the log and the operator's tools, never for clients (the core answers by kind).
impl std::fmt::Display for NotDone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotDone::Unconfirmed => f.write_str("the database is unreachable: not confirmed"),
            NotDone::Damaged(e) | NotDone::Failed(e) => write!(f, "storage error: {e}"),
        }
    }
}

/// How long a request waits for its commit or read on a database that can be away before it
/// is answered `503` (not confirmed) anyway: a database server that stops answering without
/// closing the connection (a stopped process, a silent network) cannot hold requests longer.
/// `None` (SQLite): requests wait for the store, which either answers or stops the process.
static ANSWER_WITHIN: std::sync::OnceLock<std::time::Duration> = std::sync::OnceLock::new();

/// The wait of [`ANSWER_WITHIN`] for a PostgreSQL store: longer than its `statement_timeout`
/// (10 s), so a slow but working database still confirms.
pub const POSTGRES_ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(15);

/// How long a request may wait for the store before it is answered `503` (see
/// [`ANSWER_WITHIN`]); `None`: as long as it takes.
pub fn answer_within() -> Option<std::time::Duration> {
    ANSWER_WITHIN.get().copied()
}

/// Most batches kept while the database is unreachable (new requests are refused meanwhile,
/// so these are the requests in flight when it went, timers and delivery bookkeeping); past
/// it the server stops as after any storage failure, so memory stays bounded.
const MAX_HELD: usize = 100_000;

/// First and longest wait between two reconnection attempts.
const RECONNECT_FIRST: std::time::Duration = std::time::Duration::from_millis(100);
const RECONNECT_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// Counts of what is stored, for `netapi-chat summary` ([`Backend::counts`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoredCounts {
    /// Messages stored (all sessions).
    pub messages: u64,
    /// Notifications in the outbox (not yet delivered, nor given up).
    pub undelivered: u64,
    /// Subscriptions with undelivered notifications and how many, most first, at most the
    /// number asked for (the list is bounded whatever the backlog).
    pub undelivered_by_subscription: Vec<(String, u64)>,
    /// Dead letters (all subscriptions): what delivery gave up on or a disabled subscription
    /// held, kept for its redelivery; not waiting for delivery, so not in `undelivered`.
    pub dead_letters: u64,
}

/// A read run on the store thread (it has the only connection), between commits.
type Read = Box<dyn FnOnce(&mut dyn Backend) + Send>;

/// Work for the store thread, done in the order it was queued: a read sees every batch queued
/// before it (and so every change whose request was already answered).
enum Work {
    /// Boxed: a batch is a dozen vectors, a read one pointer, and the channel's slots take the
    /// larger size (one allocation per batch is nothing next to its commit).
    Commit(Box<Job>),
    Read(Read),
}

/// A batch, a hook run right after its commit (in commit order), and who to tell.
struct Job {
    batch: Batch,
    after_commit: Option<Box<dyn FnOnce() + Send>>,
    done: Option<oneshot::Sender<Result<(), NotDone>>>,
}

/// The handle the core commits through; cheap to clone.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::Sender<Work>,
    /// Set once a commit failed: the process is stopping (see [`fail_stop`]).
    failed: Arc<AtomicBool>,
    /// Set while the database is unreachable (see [`Store::is_down`]).
    down: Arc<AtomicBool>,
    /// The backend's lease, if it has one (see [`Store::holds_lease`]).
    lease: Option<Arc<lease::Lease>>,
    /// Set while the log says the lease lapsed (see [`Store::holds_lease`]).
    lapse_logged: Arc<AtomicBool>,
    /// Set once a read met damaged pages (see [`Store::is_damaged`]).
    damaged: Arc<AtomicBool>,
    closing: Arc<Closing>,
}

/// What [`Store::close`] needs: a flag the store thread checks when it runs out of work, and
/// the thread to wait for.
struct Closing {
    requested: AtomicBool,
    /// Set with `requested` by [`Store::close_handing_over`].
    hand_over: AtomicBool,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Most batches one transaction takes.
const MAX_GROUP: usize = 512;

/// How long the store thread must have had nothing to commit before [`Backend::idle`] runs.
const QUIET: std::time::Duration = std::time::Duration::from_millis(5);

/// How old a lease may get before the store checks that its database is still there
/// ([`Backend::heartbeat`]; a store without a lease checks this often while idle): a quarter
/// of [`lease::LEASE`], so that a heartbeat has the rest (1.5 s) to be answered before the
/// lease lapses.
const HEARTBEAT: std::time::Duration = std::time::Duration::from_millis(500);

/// How long until the next heartbeat, given how long ago the lease was last confirmed
/// (`None`: never): once the lease is [`HEARTBEAT`] old, whatever confirmed it last (so a
/// long commit or a slow start is followed by one at once, not [`HEARTBEAT`] later). Zero is
/// due now, also between two groups of work: a steady stream of work that never leaves the
/// store idle, and does not confirm the lease itself (reads answered without the database),
/// must not let it lapse.
fn next_heartbeat_in(unconfirmed_for: Option<std::time::Duration>) -> std::time::Duration {
    unconfirmed_for.map_or(std::time::Duration::ZERO, |age| {
        HEARTBEAT.saturating_sub(age)
    })
}

/// [`next_heartbeat_in`] for `lease`, now; a store without one beats every [`HEARTBEAT`] (a
/// backend's heartbeat may still notice a database gone).
fn heartbeat_in(lease: Option<&lease::Lease>) -> std::time::Duration {
    lease.map_or(HEARTBEAT, |l| {
        next_heartbeat_in(l.unconfirmed_for(std::time::Instant::now()))
    })
}

/// Why [`Store::start`] did not start.
#[derive(Debug)]
pub enum NotStarted {
    /// The database went away while the state was read (restarted, the session ended, the
    /// link lost: [`Backend::went_away`]): opening it again is worth it, and the instance
    /// lock (a PostgreSQL session's) went with the session.
    Away(StoreError),
    /// Anything else: the start stops with it.
    Failed(StoreError),
}

impl std::fmt::Display for NotStarted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotStarted::Away(e) | NotStarted::Failed(e) => e.fmt(f),
        }
    }
}

impl Store {
    /// Starts the store thread over a backend, after reading its snapshot. The snapshot is
    /// read on the store thread too: every use of the backend happens there (a blocking
    /// client, e.g. PostgreSQL's, must not run on one of tokio's threads).
    pub fn start(backend: Box<dyn Backend>) -> Result<(Store, Snapshot), NotStarted> {
        let (loaded, snapshot) = mpsc::channel::<Result<Snapshot, NotStarted>>();
        let (tx, rx) = mpsc::channel::<Work>();
        let failed = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&failed);
        let down = Arc::new(AtomicBool::new(false));
        let lapse_logged = Arc::new(AtomicBool::new(false));
        let outage = Outage {
            down: Arc::clone(&down),
            lapse_logged: Arc::clone(&lapse_logged),
            held: Vec::new(),
        };
        let closing = Arc::new(Closing {
            requested: AtomicBool::new(false),
            hand_over: AtomicBool::new(false),
            thread: Mutex::new(None),
        });
        let stop = Arc::clone(&closing);
        let lease = backend.lease();
        let beat = lease.clone();
        let thread = std::thread::Builder::new()
            .name("netapi-chat-store".to_owned())
            .spawn(move || {
                let mut backend = backend;
                let snapshot = backend.load().map_err(|e| {
                    if backend.went_away() {
                        NotStarted::Away(e)
                    } else {
                        NotStarted::Failed(e)
                    }
                });
                if snapshot.is_err() {
                    // Closed (its session and lock with it) before the start hears of it, so
                    // that opening again is not refused by this server's own last session.
                    drop(backend);
                    let _ = loaded.send(snapshot);
                    return;
                }
                let _ = loaded.send(snapshot);
                let (failed, down) = (Arc::clone(&flag), Arc::clone(&outage.down));
                run(&mut *backend, rx, flag, outage, beat, &stop.requested);
                // Only a clean stop hands over: everything committed, nothing held back by an
                // outage, the thread not stopped by a failure.
                if stop.hand_over.load(Ordering::SeqCst)
                    && !failed.load(Ordering::SeqCst)
                    && !down.load(Ordering::SeqCst)
                {
                    backend.hand_over();
                }
            })
            .map_err(|e| {
                NotStarted::Failed(StoreError(format!("cannot start the store thread: {e}")))
            })?;
        let snapshot = snapshot.recv().map_err(|_| {
            NotStarted::Failed(StoreError(
                "the store thread stopped while loading".to_owned(),
            ))
        })??;
        *closing.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread);
        Ok((
            Store {
                tx,
                failed,
                down,
                lease,
                lapse_logged,
                damaged: Arc::new(AtomicBool::new(false)),
                closing,
            },
            snapshot,
        ))
    }

    /// True once a commit failed: the process is about to stop, and memory may hold changes
    /// the disk does not, so nothing should be served from it any more.
    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// True once a read met damaged database pages ([`StoreError::damage`]), for the
    /// metrics (`netapi_chat_store_damaged`): it stays set until the server restarts, since
    /// nothing but a repair of the file mends it.
    pub fn is_damaged(&self) -> bool {
        self.damaged.load(Ordering::SeqCst)
    }

    /// True while the database is unreachable (a shared engine only, see
    /// [`Backend::unavailable`]): batches already applied in memory are kept and committed
    /// once it is back, and nothing new should be accepted meanwhile (the core answers `503`
    /// with `Retry-After`, `/readyz` says not ready).
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::SeqCst)
    }

    /// Whether the database confirmed this server's session within [`lease::LEASE`] (always,
    /// for a backend without a lease): past it the server answers nothing from its memory,
    /// which may no longer describe the database (another instance may lead it now), and
    /// says it is not ready.
    ///
    /// The first caller to find it lapsed logs so (a warning), and the first to find it
    /// holding again: the `503`s answered meanwhile have a cause in the log, seconds before a
    /// silence long enough to count as an outage is logged (the store thread, which notices
    /// that, may be held in a wait on the database until then).
    pub fn holds_lease(&self) -> bool {
        let holds = self
            .lease
            .as_ref()
            .is_none_or(|l| l.holds_at(std::time::Instant::now()));
        if holds == self.lapse_logged.load(Ordering::Relaxed)
            && holds == self.lapse_logged.swap(!holds, Ordering::SeqCst)
        {
            if holds {
                tracing::warn!("the database answers again; serving");
            } else {
                tracing::warn!(
                    "the database has not answered for {} s; answering 503 until it does",
                    lease::LEASE.as_secs()
                );
            }
        }
        holds
    }

    /// Whether this server serves requests now: its store has not failed, its database is
    /// reachable and its lease holds (`/metrics`' `netapi_chat_cluster_leading`).
    pub fn serving(&self) -> bool {
        !self.has_failed() && !self.is_down() && self.holds_lease()
    }

    /// Commits every batch queued so far, then stops the store thread and closes the database
    /// (the backend is dropped: SQLite checkpoints its WAL when the last connection closes);
    /// returns once that is done. For a clean stop: call it after the last request that could
    /// wait for a commit was answered. A batch submitted later is refused ("the store has
    /// stopped"), as after a crash it would simply not exist. Blocking.
    pub fn close(&self) {
        self.closing.requested.store(true, Ordering::SeqCst);
        self.close_thread();
    }

    /// [`Store::close`], and then, if everything was committed, a cluster's leader records
    /// that it hands the lead over ([`Backend::hand_over`]), so the next leader serves at once
    /// instead of waiting out this one's lease. Call it only once this server can answer
    /// nothing more (every connection closed): the next leader's answers may follow at once.
    /// Blocking.
    pub fn close_handing_over(&self) {
        self.closing.hand_over.store(true, Ordering::SeqCst);
        self.closing.requested.store(true, Ordering::SeqCst);
        self.close_thread();
    }

    /// Wakes the store thread to see the close asked for, and joins it.
    fn close_thread(&self) {
        // Wakes the thread if it is waiting for work.
        self.submit_detached(Batch::default());
        let thread = self
            .closing
            .thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }

    /// Queues a batch; `after_commit` runs on the store thread right after it is durable, in
    /// commit order (used to hand notifications to delivery). The returned receiver tells the
    /// waiting request when the batch is durable.
    ///
    /// Call this while still holding the lock under which the batch was built (the chat
    /// core's write lock, or its read lock and the session's order lock), so that commit order
    /// is the state's order (per session, for changes made side by side).
    pub fn submit(
        &self,
        batch: Batch,
        after_commit: Option<Box<dyn FnOnce() + Send>>,
    ) -> oneshot::Receiver<Result<(), NotDone>> {
        let (done, rx) = oneshot::channel();
        let job = Job {
            batch,
            after_commit,
            done: Some(done),
        };
        if let Err(mpsc::SendError(Work::Commit(job))) = self.tx.send(Work::Commit(Box::new(job)))
            && let Some(d) = job.done
        {
            let _ = d.send(Err(NotDone::Failed("the store has stopped".to_owned())));
        }
        rx
    }

    /// Queues a batch nobody waits for (e.g. forgetting delivered notifications).
    pub fn submit_detached(&self, batch: Batch) {
        let _ = self.tx.send(Work::Commit(Box::new(Job {
            batch,
            after_commit: None,
            done: None,
        })));
    }

    /// Runs `read` on the store thread, after every batch queued before it is committed, and
    /// hands back its result. The store thread owns the only connection that reads and writes
    /// (the other one only checkpoints), so reads queue with the commits; they are point lookups and
    /// short index walks, done between two group commits. Retention's purge batches take the
    /// same way ([`Backend::purge_messages`], bounded like a read: see `crate::retention`). The receiver gets an error when the
    /// store has stopped or the read failed (the text is for the log, not for clients).
    ///
    /// Never await it while holding the core's state lock: other users would wait on this
    /// user's read.
    pub fn read<T, F>(&self, read: F) -> oneshot::Receiver<Result<T, NotDone>>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn Backend) -> Result<T, StoreError> + Send + 'static,
    {
        let (done, rx) = oneshot::channel();
        let damaged = Arc::clone(&self.damaged);
        let work: Read = Box::new(move |backend: &mut dyn Backend| {
            let result = read(backend).map_err(|e| {
                if backend.unavailable() {
                    NotDone::Unconfirmed
                } else if e.is_damage() {
                    found_damage(&damaged, &e);
                    NotDone::Damaged(e.0)
                } else {
                    NotDone::Failed(e.0)
                }
            });
            let _ = done.send(result);
        });
        // When the store has stopped, `done` is dropped with the work: the receiver sees it.
        let _ = self.tx.send(Work::Read(work));
        rx
    }
}

/// Notes that a read met damaged pages ([`Store::is_damaged`]), and tells the operator once
/// what to do: the server keeps serving what it can read (a damaged page holds a few
/// messages; refusing everything would turn them into an outage), each request that needs a
/// damaged page is answered `503`.
fn found_damage(damaged: &AtomicBool, e: &StoreError) {
    if !damaged.swap(true, Ordering::SeqCst) {
        tracing::error!(
            error = e.0.as_str(),
            "the database file is damaged: requests that need the damaged pages answer 503 \
             until it is repaired; stop the server and repair it (README, A damaged database)"
        );
    }
}

/// The store thread's view of an unreachable database: the flag the core reads
/// ([`Store::is_down`]) and the batches kept until they can be committed, in commit order
/// (their requests were answered [`NotDone::Unconfirmed`]; their hooks run once they are committed).
struct Outage {
    down: Arc<AtomicBool>,
    /// [`Store::holds_lease`]'s note: cleared when the outage ends, which says it.
    lapse_logged: Arc<AtomicBool>,
    held: Vec<Job>,
}

fn run(
    backend: &mut dyn Backend,
    rx: mpsc::Receiver<Work>,
    failed: Arc<AtomicBool>,
    mut outage: Outage,
    lease: Option<Arc<lease::Lease>>,
    stop: &AtomicBool,
) {
    loop {
        if outage.down.load(Ordering::SeqCst)
            && !recover(&mut *backend, &rx, &failed, &mut outage, stop)
        {
            break;
        }
        let first = match rx.try_recv() {
            Ok(work) => work,
            Err(mpsc::TryRecvError::Disconnected) => break,
            // Asked to close and nothing is left to commit.
            Err(mpsc::TryRecvError::Empty) if stop.load(Ordering::SeqCst) => break,
            Err(mpsc::TryRecvError::Empty) => {
                // Housekeeping that is due (e.g. a WAL of ~4 MiB to checkpoint) runs in this
                // gap, however short: a steady stream never leaves a quiet moment, and work
                // left to pile up is paid all at once, in one long stall (issue 12 item 5).
                if backend.housekeeping_due() {
                    backend.idle();
                }
                match rx.recv_timeout(QUIET) {
                    Ok(work) => work,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    // The rest of the housekeeping (e.g. truncating a WAL grown past its
                    // limit) only once nothing has come for a moment.
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        backend.idle();
                        let mut waited = None;
                        while waited.is_none() {
                            match rx.recv_timeout(heartbeat_in(lease.as_deref())) {
                                Ok(work) => waited = Some(work),
                                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                                Err(mpsc::RecvTimeoutError::Timeout) => {
                                    let beat = backend.heartbeat();
                                    if backend.unavailable() {
                                        go_down(&outage, "a heartbeat", beat.err().as_ref());
                                        break;
                                    }
                                }
                            }
                        }
                        match waited {
                            Some(work) => work,
                            None if outage.down.load(Ordering::SeqCst) => continue,
                            None => break,
                        }
                    }
                }
            }
        };
        let mut queued = vec![first];
        while queued.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(w) => queued.push(w),
                Err(_) => break,
            }
        }
        // In queue order: the batches before a read are committed (as one group) before it
        // runs, so it sees them. Once the database is unreachable, the rest of the queue is
        // kept (commits) or refused (reads) in order.
        let mut jobs = Vec::new();
        for work in queued {
            if outage.down.load(Ordering::SeqCst) {
                hold(work, &mut outage, &rx, &failed);
                continue;
            }
            match work {
                Work::Commit(job) => jobs.push(*job),
                Work::Read(read) => {
                    commit_group(
                        &mut *backend,
                        std::mem::take(&mut jobs),
                        &rx,
                        &failed,
                        &mut outage,
                    );
                    if outage.down.load(Ordering::SeqCst) {
                        // Dropped: its receiver sees the store unavailable.
                        drop(read);
                        continue;
                    }
                    read(&mut *backend);
                    // A read that found the database gone starts the reconnection too, so a
                    // server that only reads (or only answers /readyz) also comes back.
                    if backend.unavailable() {
                        go_down(&outage, "a read", None);
                    }
                }
            }
        }
        commit_group(&mut *backend, jobs, &rx, &failed, &mut outage);
        if !outage.down.load(Ordering::SeqCst)
            && lease.is_some()
            && heartbeat_in(lease.as_deref()).is_zero()
        {
            let beat = backend.heartbeat();
            if backend.unavailable() {
                go_down(&outage, "a heartbeat", beat.err().as_ref());
            }
        }
    }
}

/// Marks the database unreachable (once per outage in the log), with the error that showed it
/// when there is one (a read-only database is told apart from one out of reach only by it).
fn go_down(outage: &Outage, what: &str, cause: Option<&StoreError>) {
    const SAYS: &str = "the database is unreachable or refuses writes; answering 503 and reconnecting, changes in flight are kept and committed once it is back";
    if !outage.down.swap(true, Ordering::SeqCst) {
        match cause {
            Some(e) => tracing::warn!(failed = what, error = e.0.as_str(), "{SAYS}"),
            None => tracing::warn!(failed = what, "{SAYS}"),
        }
    }
}

/// Work that arrives while the database is unreachable: a batch is kept (it is already in the
/// core's memory) and its request told [`NotDone::Unconfirmed`]; a read is refused (dropped).
fn hold(work: Work, outage: &mut Outage, rx: &mpsc::Receiver<Work>, failed: &AtomicBool) {
    match work {
        Work::Commit(mut job) => {
            if let Some(done) = job.done.take() {
                let _ = done.send(Err(NotDone::Unconfirmed));
            }
            outage.held.push(*job);
            if outage.held.len() > MAX_HELD {
                let held = std::mem::take(&mut outage.held);
                let e = StoreError(format!(
                    "the database stayed unreachable while {MAX_HELD} changes waited for it"
                ));
                fail_stop(&e, held, rx, failed, Then::Exit);
            }
        }
        Work::Read(read) => drop(read),
    }
}

/// Reconnects (waiting 100 ms, then twice as long each time up to 2 s, refusing or keeping the
/// work that arrives meanwhile) and commits the kept batches ([`commit_kept`]: in order, in
/// bounded groups), then runs their
/// hooks in order (their notifications go to delivery). Each kept batch is committed exactly
/// as it was submitted and before anything newer, and every batch is idempotent when applied
/// twice in a row (upserts and deletes of whole rows by key; a bury sets the time again), so
/// a commit whose acknowledgement was lost with the connection is simply applied again.
/// `false` when the store should stop: asked to close while the database is still away (the
/// kept changes were never confirmed to anyone, so nothing answered 2xx is lost).
/// Commits the kept batches in order, at most [`MAX_GROUP`] per transaction (a long outage can
/// keep up to `MAX_HELD`: as one transaction that backlog could outlast every timeout and be
/// retried for ever), running each group's hooks once it is committed and dropping it from
/// `held`; how many were committed. On a failure the groups before stay committed and the rest
/// stay kept, in order, for the next attempt.
fn commit_kept(backend: &mut dyn Backend, held: &mut Vec<Job>) -> Result<usize, StoreError> {
    let mut committed = 0;
    while !held.is_empty() {
        let n = held.len().min(MAX_GROUP);
        let batches: Vec<&Batch> = held[..n]
            .iter()
            .map(|j| &j.batch)
            .filter(|b| !b.is_empty())
            .collect();
        if !batches.is_empty() {
            let started = std::time::Instant::now();
            backend.commit(&batches)?;
            crate::metrics::store_commit(batches.len(), started.elapsed());
        }
        for job in held.drain(..n) {
            if let Some(hook) = job.after_commit {
                hook();
            }
        }
        committed += n;
    }
    Ok(committed)
}

fn recover(
    backend: &mut dyn Backend,
    rx: &mpsc::Receiver<Work>,
    failed: &AtomicBool,
    outage: &mut Outage,
    stop: &AtomicBool,
) -> bool {
    let mut wait = RECONNECT_FIRST;
    // What the last failed attempt said, logged when it changes (not at every attempt): an
    // outage's first line may not say why (a closed connection), the reconnection's does (a
    // database that answers but refuses writes).
    let mut said: Option<String> = None;
    loop {
        let attempt = backend
            .reconnect()
            .and_then(|()| commit_kept(backend, &mut outage.held));
        match attempt {
            Ok(committed) => {
                // At the outage's level: an operator who saw it start (a warning) at the
                // default level sees it end too.
                tracing::warn!(
                    committed,
                    "the database is back; the kept changes are committed"
                );
                outage.lapse_logged.store(false, Ordering::SeqCst);
                outage.down.store(false, Ordering::SeqCst);
                return true;
            }
            Err(e) if backend.unavailable() => {
                if said.as_deref() != Some(e.0.as_str()) {
                    tracing::warn!(
                        error = e.0.as_str(),
                        "the database cannot be used yet; retrying"
                    );
                    said = Some(e.0);
                }
            }
            Err(e) => {
                let held = std::mem::take(&mut outage.held);
                let then = if backend.taken_over() {
                    Then::StartOver
                } else {
                    Then::Exit
                };
                fail_stop(&e, held, rx, failed, then);
            }
        }
        if stop.load(Ordering::SeqCst) {
            tracing::warn!(
                not_stored = outage.held.len(),
                "stopping while the database is unreachable: the changes that were answered 503 (not confirmed) are not stored"
            );
            return false;
        }
        let until = std::time::Instant::now() + wait;
        while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(work) => hold(work, outage, rx, failed),
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                // Every handle is gone: one more attempt, then the loop above ends.
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(left);
                    break;
                }
            }
        }
        wait = (wait * 2).min(RECONNECT_MAX);
    }
}

/// Commits `jobs` in one transaction, then runs their hooks and wakes their requests, in
/// order. A database that became unreachable keeps them ([`Outage`]); any other failed commit
/// stops the process ([`fail_stop`]).
fn commit_group(
    backend: &mut dyn Backend,
    jobs: Vec<Job>,
    rx: &mpsc::Receiver<Work>,
    failed: &AtomicBool,
    outage: &mut Outage,
) {
    if jobs.is_empty() {
        return;
    }
    let batches: Vec<&Batch> = jobs
        .iter()
        .map(|j| &j.batch)
        .filter(|b| !b.is_empty())
        .collect();
    let result = if batches.is_empty() {
        Ok(())
    } else {
        let started = std::time::Instant::now();
        let result = backend.commit(&batches);
        crate::metrics::store_commit(batches.len(), started.elapsed());
        result
    };
    match result {
        Ok(()) => {
            for job in jobs {
                if let Some(hook) = job.after_commit {
                    hook();
                }
                if let Some(done) = job.done {
                    let _ = done.send(Ok(()));
                }
            }
        }
        Err(e) if backend.unavailable() => {
            go_down(outage, "a commit", Some(&e));
            for job in jobs {
                hold(Work::Commit(Box::new(job)), outage, rx, failed);
            }
        }
        Err(e) => fail_stop(&e, jobs, rx, failed, Then::Exit),
    }
}

/// How long the store keeps answering after a failure, so that the requests told about it
/// get their answers written before the process exits.
const FAIL_STOP_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// Exit status after a storage failure (`EX_IOERR`).
pub const EXIT_STORAGE_FAILED: i32 = 74;

/// Set once this process's store found that another instance leads the database (a
/// cluster's deposed leader, [`Then::StartOver`]): what is refused meanwhile is told so
/// (`chat::storage_failed`), not that storage failed. Process-wide: the process starts over.
static TAKEN_OVER: AtomicBool = AtomicBool::new(false);

/// Whether another instance leads the database now and this process is about to start over
/// as a standby.
pub fn taken_over() -> bool {
    TAKEN_OVER.load(Ordering::SeqCst)
}

/// What the process does once a fail-stop has answered everyone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Then {
    /// Exit with [`EXIT_STORAGE_FAILED`]; a supervisor's restart reloads a consistent state.
    Exit,
    /// Start over in place as a cluster's standby (another instance leads the database now):
    /// `crate::cluster::start_over`, which exits as above if it cannot.
    StartOver,
}

/// Fail-stop after a failed commit: memory now holds changes the disk does not, so the
/// process must stop and a restart reload a consistent state. Before it does, every request
/// waiting on the store, and every one that arrives during [`FAIL_STOP_GRACE`], is told (the
/// core answers them `503`), instead of having its connection reset by the exit.
fn fail_stop(
    e: &StoreError,
    jobs: Vec<Job>,
    rx: &mpsc::Receiver<Work>,
    failed: &AtomicBool,
    then: Then,
) -> ! {
    if then == Then::StartOver {
        TAKEN_OVER.store(true, Ordering::SeqCst);
        tracing::warn!(
            "another instance leads the database now: answering the waiting requests 503 and \
             starting over as a standby"
        );
    } else {
        eprintln!(
            "netapi-chat: {e}; answering waiting requests 503 and stopping so that a restart reloads a consistent state"
        );
    }
    failed.store(true, Ordering::SeqCst);
    let refuse = |job: Job| {
        if let Some(done) = job.done {
            let _ = done.send(Err(NotDone::Failed(e.0.clone())));
        }
    };
    // A read is refused by dropping it (its receiver sees the store gone).
    let refuse_work = |work: Work| match work {
        Work::Commit(job) => {
            let waits = job.done.is_some();
            refuse(*job);
            usize::from(waits)
        }
        Work::Read(_) => 1,
    };
    let mut refused = 0usize;
    for job in jobs {
        refused += usize::from(job.done.is_some());
        refuse(job);
    }
    let deadline = std::time::Instant::now() + FAIL_STOP_GRACE;
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(work) => refused += refuse_work(work),
            Err(_) => break,
        }
    }
    // Whatever is still queued (`recv_timeout` returned early because every sender is gone).
    while let Ok(work) = rx.try_recv() {
        refused += refuse_work(work);
    }
    // The answers handed out still need time to be written, even if the channel closed early.
    if let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        std::thread::sleep(left);
    }
    if then == Then::StartOver {
        tracing::warn!(refused, "waiting requests answered 503");
        crate::cluster::start_over("another instance leads the database now");
    }
    eprintln!(
        "netapi-chat: stopped after a storage failure ({refused} waiting requests answered 503); exit status {EXIT_STORAGE_FAILED}"
    );
    std::process::exit(EXIT_STORAGE_FAILED);
}

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_checks_its_database_once_the_lease_is_a_heartbeat_old() {
        let ms = std::time::Duration::from_millis;
        let cases = [
            (None, ms(0), "never confirmed: at once"),
            (Some(ms(0)), HEARTBEAT, "just confirmed"),
            (Some(ms(499)), ms(1), "younger than a heartbeat"),
            (Some(HEARTBEAT), ms(0), "a heartbeat old: at once"),
            (Some(lease::LEASE), ms(0), "lapsed: at once"),
        ];
        for (age, expected, case) in cases {
            assert_eq!(next_heartbeat_in(age), expected, "{case}");
        }
        assert_eq!(heartbeat_in(None), HEARTBEAT, "no lease (SQLite)");
    }

    #[test]
    fn the_expired_head_is_the_leading_run_sent_before_the_cutoff() {
        assert_eq!(expired_head(&[], 10), 0);
        assert_eq!(expired_head(&[1, 2, 9], 10), 3);
        assert_eq!(expired_head(&[1, 2, 10, 11], 10), 2);
        assert_eq!(expired_head(&[10, 1, 2], 10), 0);
        // A clock step back: the older-stamped message after a younger one waits for it.
        assert_eq!(expired_head(&[1, 12, 3], 10), 1);
    }

    #[test]
    fn the_walk_goes_on_just_after_a_session() {
        let next = after_session("sess-1");
        assert!(next.as_str() > "sess-1");
        assert!(next.as_str() < "sess-1 ");
        assert!(next.as_str() < "sess-10");
        assert!(next.as_str() < "sess-2");
    }

    /// The lookups and purges of a test backend that stores no messages: nothing is found,
    /// nothing is purged. A macro because trait methods cannot be shared by a function, and the
    /// `Backend` trait keeps no defaults so that a real backend cannot forget one.
    macro_rules! empty_lookups {
        () => {
            fn message(&mut self, _: &str, _: &str) -> Result<Option<Vec<u8>>, StoreError> {
                Ok(None)
            }
            fn last_message_ms(&mut self, _: &str) -> Result<Option<i64>, StoreError> {
                Ok(None)
            }
            fn message_by_correlator(
                &mut self,
                _: &str,
                _: &str,
                _: &str,
            ) -> Result<Option<String>, StoreError> {
                Ok(None)
            }
            fn purge_messages(&mut self, _: i64, _: &str, _: usize) -> Result<Purged, StoreError> {
                Ok(Purged {
                    deleted: 0,
                    next: None,
                })
            }
            fn purge_dead_letters(&mut self, _: i64, _: usize) -> Result<usize, StoreError> {
                Ok(0)
            }
        };
    }

    /// A backend whose database goes away on demand: while `away` is set, every commit, read
    /// and reconnection fails as unreachable; it records what was committed, in order.
    struct Flaky {
        away: Arc<AtomicBool>,
        lost: bool,
        committed: Arc<Mutex<Vec<String>>>,
    }

    impl Backend for Flaky {
        fn load(&mut self) -> Result<Snapshot, StoreError> {
            Ok(Snapshot::default())
        }
        fn commit(&mut self, batches: &[&Batch]) -> Result<(), StoreError> {
            self.lost = self.away.load(Ordering::SeqCst);
            if self.lost {
                return Err(StoreError("gone".into()));
            }
            let mut c = self.committed.lock().unwrap();
            c.extend(
                batches
                    .iter()
                    .flat_map(|b| b.deletes.iter().map(|d| d.1.clone())),
            );
            Ok(())
        }
        fn messages_after(
            &mut self,
            _: &str,
            _: Option<u64>,
            _: usize,
        ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
            self.lost = self.away.load(Ordering::SeqCst);
            if self.lost {
                return Err(StoreError("gone".into()));
            }
            Ok(Vec::new())
        }
        empty_lookups!();
        fn unavailable(&self) -> bool {
            self.lost
        }
        fn reconnect(&mut self) -> Result<(), StoreError> {
            self.lost = self.away.load(Ordering::SeqCst);
            if self.lost {
                Err(StoreError("still gone".into()))
            } else {
                Ok(())
            }
        }
    }

    /// A batch that names itself (as a deleted record's key), for checking commit order.
    fn named(name: &str) -> Batch {
        Batch {
            deletes: vec![(Kind::Meta, name.to_owned())],
            ..Batch::default()
        }
    }

    /// The database goes away: the waiting request is told "not confirmed", the store is down,
    /// later batches are kept (and told the same), reads are refused; once it is back, the
    /// kept batches are committed in submission order before anything newer, their hooks run
    /// in that order, and the store is up again. Nothing is lost, nothing reordered.
    #[test]
    fn an_unreachable_database_keeps_the_batches_and_commits_them_in_order_once_back() {
        let away = Arc::new(AtomicBool::new(false));
        let committed = Arc::new(Mutex::new(Vec::new()));
        let flaky = Flaky {
            away: Arc::clone(&away),
            lost: false,
            committed: Arc::clone(&committed),
        };
        let (store, _) = Store::start(Box::new(flaky)).unwrap();
        let hooks = Arc::new(Mutex::new(Vec::new()));
        let hook = |name: &'static str| -> Option<Box<dyn FnOnce() + Send>> {
            let hooks = Arc::clone(&hooks);
            Some(Box::new(move || hooks.lock().unwrap().push(name)))
        };
        let wait = |rx: oneshot::Receiver<Result<(), NotDone>>| rx.blocking_recv().unwrap();
        assert_eq!(wait(store.submit(named("a"), hook("a"))), Ok(()));
        away.store(true, Ordering::SeqCst);
        assert_eq!(
            wait(store.submit(named("b"), hook("b"))),
            Err(NotDone::Unconfirmed)
        );
        assert!(store.is_down() && !store.has_failed());
        assert_eq!(
            wait(store.submit(named("c"), hook("c"))),
            Err(NotDone::Unconfirmed)
        );
        store.submit_detached(named("d"));
        let read = store.read(|b| b.messages_after("s", None, 1));
        assert!(
            read.blocking_recv().is_err(),
            "a read is refused while down"
        );
        assert_eq!(*committed.lock().unwrap(), ["a"]);
        away.store(false, Ordering::SeqCst);
        // The store thread reconnects by itself (its next attempt is at most 2 s away).
        let up = |store: &Store| {
            let since = std::time::Instant::now();
            while store.is_down() {
                assert!(since.elapsed().as_secs() < 30, "the store stayed down");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        };
        up(&store);
        assert_eq!(wait(store.submit(named("e"), hook("e"))), Ok(()));
        assert_eq!(*committed.lock().unwrap(), ["a", "b", "c", "d", "e"]);
        assert_eq!(*hooks.lock().unwrap(), ["a", "b", "c", "e"]);
        // A read that finds the database gone starts an outage too, and it ends by itself.
        away.store(true, Ordering::SeqCst);
        let read = store.read(|b| b.messages_after("s", None, 1));
        assert_eq!(read.blocking_recv().unwrap(), Err(NotDone::Unconfirmed));
        away.store(false, Ordering::SeqCst);
        up(&store);
        assert_eq!(wait(store.submit(named("f"), None)), Ok(()));
        assert_eq!(
            committed.lock().unwrap().last().map(String::as_str),
            Some("f")
        );
        store.close();
    }

    /// A backend that records the size of each commit and fails the `fail_on`-th (1-based) as
    /// an unreachable database.
    struct Groups {
        sizes: Vec<usize>,
        fail_on: Option<usize>,
    }

    impl Backend for Groups {
        fn load(&mut self) -> Result<Snapshot, StoreError> {
            Ok(Snapshot::default())
        }
        fn commit(&mut self, batches: &[&Batch]) -> Result<(), StoreError> {
            if self.fail_on == Some(self.sizes.len() + 1) {
                self.fail_on = None;
                return Err(StoreError("gone".into()));
            }
            self.sizes.push(batches.len());
            Ok(())
        }
        fn messages_after(
            &mut self,
            _: &str,
            _: Option<u64>,
            _: usize,
        ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
            Ok(Vec::new())
        }
        empty_lookups!();
    }

    /// A long outage's backlog is committed in groups of at most `MAX_GROUP` (one transaction
    /// each), in order, each group's hooks run once it is committed; a failure keeps the rest,
    /// in order, for the next attempt, the committed groups gone from it.
    #[test]
    fn kept_batches_are_committed_in_bounded_groups_in_order() {
        let ran = Arc::new(Mutex::new(Vec::new()));
        let mut held: Vec<Job> = (0..1300)
            .map(|i| {
                let ran = Arc::clone(&ran);
                Job {
                    batch: named(&i.to_string()),
                    after_commit: Some(Box::new(move || ran.lock().unwrap().push(i))),
                    done: None,
                }
            })
            .collect();
        let mut backend = Groups {
            sizes: Vec::new(),
            fail_on: Some(2),
        };
        assert!(commit_kept(&mut backend, &mut held).is_err());
        assert_eq!(backend.sizes, [MAX_GROUP]);
        assert_eq!(
            held.len(),
            1300 - MAX_GROUP,
            "the committed group left the queue"
        );
        assert_eq!(*ran.lock().unwrap(), (0..MAX_GROUP).collect::<Vec<_>>());
        assert_eq!(
            commit_kept(&mut backend, &mut held).unwrap(),
            1300 - MAX_GROUP
        );
        assert_eq!(backend.sizes, [MAX_GROUP, MAX_GROUP, 1300 - 2 * MAX_GROUP]);
        assert!(held.is_empty());
        assert_eq!(*ran.lock().unwrap(), (0..1300).collect::<Vec<_>>());
    }

    /// A message-send batch as the core builds it (the shape `store_throughput`, the
    /// PostgreSQL backend's tests and measurements use): the counters record, a ~400-byte
    /// message `msg-{i}` in session `ses-bench`, two ~1 KiB outbox entries.
    pub(super) fn send_batch(i: u64) -> Batch {
        Batch {
            puts: vec![(Kind::Meta, "counters".into(), vec![b'c'; 60])],
            messages: vec![MessageRow {
                session: "ses-bench".into(),
                seq: i,
                id: format!("msg-{i}"),
                sender: "tel:+15551230001".into(),
                correlator: None,
                value: vec![b'm'; 400],
                sent_ms: Some(1),
            }],
            outbox: (0..2)
                .map(|k| OutboxEntry {
                    id: 2 * i + k,
                    subscription: format!("sub-{k}"),
                    body: vec![b'n'; 1024],
                    created_ms: 1,
                    progress: Progress::default(),
                })
                .collect(),
            ..Batch::default()
        }
    }

    /// The store as the server drives it (store thread, group commit, `idle()` when nothing
    /// waits) over the SQLite backend: `clients` threads each submit a batch and wait for it,
    /// `rounds` times. For before/after comparisons of the backend's settings:
    /// `cargo test --lib -- --ignored --nocapture store_throughput` (compare runs of one build
    /// mode on one machine).
    #[test]
    #[ignore]
    fn store_throughput() {
        for (clients, rounds) in [(1u64, 5000u64), (16, 1000)] {
            let dir = std::env::temp_dir()
                .join(format!("netapi-chat-tput-{}-{clients}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let backend = sqlite::Sqlite::open(&dir, sqlite::Sync::Normal).unwrap();
            let (store, _) = Store::start(Box::new(backend)).unwrap();
            let start = std::time::Instant::now();
            let workers: Vec<_> = (0..clients)
                .map(|c| {
                    let store = store.clone();
                    std::thread::spawn(move || {
                        let mut lat = Vec::new();
                        for r in 0..rounds {
                            let t = std::time::Instant::now();
                            let rx = store.submit(send_batch(c * 1_000_000 + r), None);
                            rx.blocking_recv().unwrap().unwrap();
                            lat.push(t.elapsed());
                        }
                        lat
                    })
                })
                .collect();
            let mut lat: Vec<_> = workers
                .into_iter()
                .flat_map(|w| w.join().unwrap())
                .collect();
            let over = lat.iter().filter(|d| d.as_millis() >= 20).count();
            let secs = start.elapsed().as_secs_f64();
            lat.sort();
            let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
            println!(
                "{clients} clients: {:.0} batches/s, latency p50 {:?} p99 {:?} max {:?}, {over} over 20 ms",
                (clients * rounds) as f64 / secs,
                pct(0.5),
                pct(0.99),
                lat[lat.len() - 1]
            );
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
