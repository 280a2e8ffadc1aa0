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
//! embedded default. A shared engine (PostgreSQL) for several server instances would be a
//! second implementation of the same trait.

pub mod format;
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
    /// Set once a commit failed: the process is stopping (see [`fail_stop`]).
    failed: Arc<AtomicBool>,
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

/// How long the store thread must have had nothing to commit before [`Backend::idle`] runs.
const QUIET: std::time::Duration = std::time::Duration::from_millis(5);

impl Store {
    /// Starts the store thread over a backend, after reading its snapshot.
    pub fn start(mut backend: Box<dyn Backend>) -> Result<(Store, Snapshot), StoreError> {
        let snapshot = backend.load()?;
        let (tx, rx) = mpsc::channel::<Job>();
        let failed = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&failed);
        let closing = Arc::new(Closing {
            requested: AtomicBool::new(false),
            thread: Mutex::new(None),
        });
        let stop = Arc::clone(&closing);
        let thread = std::thread::Builder::new()
            .name("netapi-chat-store".to_owned())
            .spawn(move || run(backend, rx, flag, &stop.requested))
            .map_err(|e| StoreError(format!("cannot start the store thread: {e}")))?;
        *closing.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread);
        Ok((
            Store {
                tx,
                failed,
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

fn run(
    mut backend: Box<dyn Backend>,
    rx: mpsc::Receiver<Job>,
    failed: Arc<AtomicBool>,
    stop: &AtomicBool,
) {
    loop {
        let first = match rx.try_recv() {
            Ok(job) => job,
            Err(mpsc::TryRecvError::Disconnected) => break,
            // Asked to close and nothing is left to commit.
            Err(mpsc::TryRecvError::Empty) if stop.load(Ordering::SeqCst) => break,
            Err(mpsc::TryRecvError::Empty) => match rx.recv_timeout(QUIET) {
                Ok(job) => job,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                // Housekeeping only once nothing has come for a moment, not in the gaps
                // between the commits of a busy stream.
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    backend.idle();
                    match rx.recv() {
                        Ok(job) => job,
                        Err(_) => break,
                    }
                }
            },
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
            Err(e) => fail_stop(&e, jobs, &rx, &failed),
        }
    }
}

/// How long the store keeps answering after a failure, so that the requests told about it
/// get their answers written before the process exits.
const FAIL_STOP_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// Exit status after a storage failure (`EX_IOERR`).
pub const EXIT_STORAGE_FAILED: i32 = 74;

/// Fail-stop after a failed commit: memory now holds changes the disk does not, so the
/// process must stop and a restart reload a consistent state. Before it does, every request
/// waiting on the store, and every one that arrives during [`FAIL_STOP_GRACE`], is told (the
/// core answers them `503`), instead of having its connection reset by the exit.
fn fail_stop(e: &StoreError, jobs: Vec<Job>, rx: &mpsc::Receiver<Job>, failed: &AtomicBool) -> ! {
    failed.store(true, Ordering::SeqCst);
    eprintln!(
        "netapi-chat: {e}; answering waiting requests 503 and stopping so that a restart reloads a consistent state"
    );
    let refuse = |job: Job| {
        if let Some(done) = job.done {
            let _ = done.send(Err(e.to_string()));
        }
    };
    let mut refused = 0usize;
    for job in jobs {
        refused += usize::from(job.done.is_some());
        refuse(job);
    }
    let deadline = std::time::Instant::now() + FAIL_STOP_GRACE;
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(job) => {
                refused += usize::from(job.done.is_some());
                refuse(job);
            }
            Err(_) => break,
        }
    }
    // Whatever is still queued (`recv_timeout` returned early because every sender is gone).
    while let Ok(job) = rx.try_recv() {
        refused += usize::from(job.done.is_some());
        refuse(job);
    }
    // The answers handed out still need time to be written, even if the channel closed early.
    if let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        std::thread::sleep(left);
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

    /// A message-send batch as the core builds it: a ~400-byte message record, the counters,
    /// two ~1 KiB outbox entries.
    fn send_batch(i: u64) -> Batch {
        Batch {
            puts: vec![
                (
                    Kind::Message,
                    format!("ses-1-x/msg-{i}-0123456789abcdef"),
                    vec![b'm'; 400],
                ),
                (Kind::Meta, "counters".into(), b"{}".to_vec()),
            ],
            outbox: (0..2)
                .map(|k| OutboxEntry {
                    id: 2 * i + k,
                    subscription: format!("sub-{k}"),
                    body: vec![b'n'; 1024],
                    created_ms: 1,
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
