//! Durable state: the narrow interface the chat core writes through, and the thread that runs a
//! backend with group commit.
//!
//! The core keeps its working set in memory and describes every change as a [`Batch`]: the
//! records it wrote (subscriptions, sessions, messages, as opaque JSON), the records it deleted,
//! and the notifications the change causes (the transactional outbox). A batch is committed in
//! one transaction; only then is the client answered and are the notifications handed to
//! delivery, in commit order. Batches that arrive while a commit is running are committed
//! together (group commit), so the cost of a sync is shared by every request waiting on it.
//!
//! [`Backend`] is the whole interface a storage engine implements; [`sqlite::Sqlite`] is the
//! embedded default. A shared engine (PostgreSQL) for several server instances would be a
//! second implementation of the same trait.

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
    /// One message; its key is `sessionId/messageId`.
    Message,
    /// Counters and other server-wide values.
    Meta,
}

impl Kind {
    /// The table / key space name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Subscription => "subscription",
            Kind::Session => "session",
            Kind::Message => "message",
            Kind::Meta => "meta",
        }
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
    /// Creation time, Unix milliseconds.
    pub created_ms: i64,
}

/// One atomic change.
#[derive(Debug, Default)]
pub struct Batch {
    /// Records written (kind, key, JSON value).
    pub puts: Vec<(Kind, String, Vec<u8>)>,
    /// Records deleted (kind, key); deleting a session deletes its messages, deleting a
    /// subscription its undelivered notifications.
    pub deletes: Vec<(Kind, String)>,
    /// Notifications to add to the outbox.
    pub outbox: Vec<OutboxEntry>,
    /// Outbox entries to drop (delivered, or their subscription is gone).
    pub forget: Vec<u64>,
}

impl Batch {
    /// True when committing it would change nothing.
    pub fn is_empty(&self) -> bool {
        self.puts.is_empty()
            && self.deletes.is_empty()
            && self.outbox.is_empty()
            && self.forget.is_empty()
    }
}

/// Everything stored, as read at start-up.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Every record, by kind, in key order.
    pub records: Vec<(Kind, String, Vec<u8>)>,
    /// Undelivered notifications, in id order.
    pub outbox: Vec<OutboxEntry>,
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

/// A storage engine. Called from one thread only.
pub trait Backend: Send + 'static {
    /// Reads everything (at start-up).
    fn load(&mut self) -> Result<Snapshot, StoreError>;
    /// Applies several batches in one durable transaction.
    fn commit(&mut self, batches: &[&Batch]) -> Result<(), StoreError>;
    /// Called when no batch is waiting: a moment for housekeeping that would otherwise delay a
    /// commit (e.g. truncating a write-ahead log).
    fn idle(&mut self) {}
}

/// Work for the store thread: a batch, a hook run right after its commit (in commit order), and
/// who to tell.
struct Job {
    batch: Batch,
    after_commit: Option<Box<dyn FnOnce() + Send>>,
    done: Option<oneshot::Sender<Result<(), String>>>,
}

/// The handle the core commits through; cheap to clone.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::Sender<Job>,
    closing: Arc<Closing>,
}

/// What [`Store::close`] needs: a flag the store thread checks when it runs out of work, and
/// the thread to wait for.
struct Closing {
    requested: AtomicBool,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Most batches one transaction takes.
const MAX_GROUP: usize = 512;

impl Store {
    /// Starts the store thread over a backend, after reading its snapshot.
    pub fn start(mut backend: Box<dyn Backend>) -> Result<(Store, Snapshot), StoreError> {
        let snapshot = backend.load()?;
        let (tx, rx) = mpsc::channel::<Job>();
        let closing = Arc::new(Closing {
            requested: AtomicBool::new(false),
            thread: Mutex::new(None),
        });
        let stop = Arc::clone(&closing);
        let thread = std::thread::Builder::new()
            .name("netapi-chat-store".to_owned())
            .spawn(move || run(backend, rx, &stop.requested))
            .map_err(|e| StoreError(format!("cannot start the store thread: {e}")))?;
        *closing.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread);
        Ok((Store { tx, closing }, snapshot))
    }

    /// Commits every batch queued so far, then stops the store thread and closes the database
    /// (the backend is dropped: SQLite checkpoints its WAL when the last connection closes);
    /// returns once that is done. For a clean stop: call it after the last request that could
    /// wait for a commit was answered. A batch submitted later is refused ("the store has
    /// stopped"), as after a crash it would simply not exist. Blocking.
    pub fn close(&self) {
        self.closing.requested.store(true, Ordering::SeqCst);
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
    /// Call this while still holding the lock under which the batch was built, so that commit
    /// order is state order.
    pub fn submit(
        &self,
        batch: Batch,
        after_commit: Option<Box<dyn FnOnce() + Send>>,
    ) -> oneshot::Receiver<Result<(), String>> {
        let (done, rx) = oneshot::channel();
        let job = Job {
            batch,
            after_commit,
            done: Some(done),
        };
        if let Err(mpsc::SendError(job)) = self.tx.send(job)
            && let Some(d) = job.done
        {
            let _ = d.send(Err("the store has stopped".to_owned()));
        }
        rx
    }

    /// Queues a batch nobody waits for (e.g. forgetting delivered notifications).
    pub fn submit_detached(&self, batch: Batch) {
        let _ = self.tx.send(Job {
            batch,
            after_commit: None,
            done: None,
        });
    }
}

fn run(mut backend: Box<dyn Backend>, rx: mpsc::Receiver<Job>, stop: &AtomicBool) {
    loop {
        let first = match rx.try_recv() {
            Ok(job) => job,
            Err(mpsc::TryRecvError::Disconnected) => break,
            // Asked to close and nothing is left to commit.
            Err(mpsc::TryRecvError::Empty) if stop.load(Ordering::SeqCst) => break,
            Err(mpsc::TryRecvError::Empty) => {
                backend.idle();
                match rx.recv() {
                    Ok(job) => job,
                    Err(_) => break,
                }
            }
        };
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let batches: Vec<&Batch> = jobs
            .iter()
            .map(|j| &j.batch)
            .filter(|b| !b.is_empty())
            .collect();
        let result = if batches.is_empty() {
            Ok(())
        } else {
            backend.commit(&batches)
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
            Err(e) => {
                // Fail-stop: memory now holds changes the disk does not.
                eprintln!(
                    "netapi-chat: {e}; stopping so that a restart reloads a consistent state"
                );
                for job in jobs {
                    if let Some(done) = job.done {
                        let _ = done.send(Err(e.to_string()));
                    }
                }
                std::process::exit(70);
            }
        }
    }
}

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
