//! Forgetting delivered notifications in groups: one store batch for every notification
//! delivered within [`FORGET_DELAY`], instead of one batch (and, at any rate below the store's
//! group-commit rate, one commit) per notification (issue 13 item 5).
//!
//! Delivery tasks hand the ids they are done with to one [`Forgetter`]; it submits them as a
//! single `forget` batch when the oldest has waited [`FORGET_DELAY`], or at once when
//! [`MAX_PENDING`] are waiting (the bound on what it holds) or the process is stopping. The
//! batch goes through the store's group commit like any other, so under load it shares a
//! commit with the sends that caused the next notifications.
//!
//! **Crash safety.** A notification is delivered before its outbox row is deleted, as it
//! always was; the delay only widens the window. After a crash, the rows delivered in the last
//! [`FORGET_DELAY`] (plus the commit under way) are still in the outbox and are sent again,
//! with the same `webhook-id` (at least once, as promised: receivers de-duplicate on it).
//! Batches are submitted in the order their ids were handed over and the store commits in
//! submission order, so what is resent is, per subscription, the tail of what was delivered.
//! A graceful stop ([`Forgetter::stop`]) submits the pending ids at once, and every id handed
//! over after it, before the store closes, so nothing is resent after one. (A delivered
//! notification whose subscription's hook took its row over, `super::OnDelivered`, is not
//! handed here: it goes with what the hook records.)

use crate::store::{Batch, Store};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Longest an id waits before its batch is submitted: the window of notifications resent
/// after a crash. 50 ms groups every delivery of a 20 msg/s stream (and more above) into one
/// batch, while a crash resends at most the deliveries of the last 50 ms.
pub const FORGET_DELAY: Duration = Duration::from_millis(50);

/// Most ids held at once: reaching it submits them at once (a batch of 4,096 deletes is a few
/// ms of the store thread, and the holding costs 8 bytes an id).
pub const MAX_PENDING: usize = 4096;

/// Collects delivered (or otherwise finished) outbox ids and forgets them in groups; cheap to
/// clone (one per server, shared by its delivery tasks; what it holds is its own, so two
/// servers in one process do not count each other's ids).
#[derive(Clone)]
pub struct Forgetter {
    inner: Arc<Inner>,
}

struct Inner {
    /// Ids handed over and not yet submitted (at most [`MAX_PENDING`]).
    pending: Mutex<Vec<u64>>,
    bell: Notify,
    store: Store,
    /// Set by [`Forgetter::stop`]: ids are submitted as they come.
    stopping: AtomicBool,
}

impl std::fmt::Debug for Forgetter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forgetter").finish_non_exhaustive()
    }
}

impl Forgetter {
    /// A forgetter over `store`, with the task that submits its batches (needs a tokio runtime).
    pub fn start(store: Store) -> Forgetter {
        let inner = Arc::new(Inner {
            pending: Mutex::new(Vec::new()),
            bell: Notify::new(),
            store,
            stopping: AtomicBool::new(false),
        });
        let task = Arc::clone(&inner);
        tokio::spawn(async move {
            loop {
                // A permit is kept when the bell rings while the task is not waiting: no lost
                // wake-up.
                task.bell.notified().await;
                tokio::time::sleep(FORGET_DELAY).await;
                task.flush();
            }
        });
        Forgetter { inner }
    }

    /// Hands over ids whose notifications are done: their outbox rows go in the next batch.
    pub fn forget(&self, ids: &[u64]) {
        if ids.is_empty() {
            return;
        }
        let mut pending = self.inner.lock();
        let first = pending.is_empty();
        pending.extend_from_slice(ids);
        if pending.len() >= MAX_PENDING || self.inner.stopping.load(Ordering::SeqCst) {
            self.inner.submit(&mut pending);
        } else if first {
            drop(pending);
            self.inner.bell.notify_one();
        }
    }

    /// Ids handed over and not yet submitted to the store (a graceful stop waits for 0).
    pub fn pending(&self) -> usize {
        self.inner.lock().len()
    }

    /// For a graceful stop: submits what is held now, and from now on every id as it comes.
    pub fn stop(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        self.inner.flush();
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u64>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Submits what is pending, if anything.
    fn flush(&self) {
        let mut pending = self.lock();
        self.submit(&mut pending);
    }

    /// Submits `pending` as one batch and empties it. Called under the lock, so batches reach
    /// the store in the order their ids were handed over.
    fn submit(&self, pending: &mut Vec<u64>) {
        if pending.is_empty() {
            return;
        }
        let ids = std::mem::take(pending);
        self.store.submit_detached(Batch {
            forget: ids,
            ..Batch::default()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::{Sqlite, Sync};
    use crate::store::{OutboxEntry, Progress};

    async fn outbox_len(store: &Store) -> u64 {
        store
            .read(|b| b.outbox_len())
            .await
            .expect("store answers")
            .expect("read")
            .expect("SQLite counts its outbox")
    }

    /// Ids wait for the delay and then go in one batch; reaching the bound submits them at
    /// once. Real store (SQLite in a temporary directory); no timing is asserted: the test
    /// waits (up to 10 s) for the held ids to be submitted.
    #[tokio::test]
    async fn ids_go_in_one_batch_after_the_delay_or_at_once_at_the_bound() {
        let dir = std::env::temp_dir().join(format!(
            "netapi-chat-forget-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let (store, _) = Store::start(Box::new(Sqlite::open(&dir, Sync::Normal).unwrap())).unwrap();
        let outbox = (1..=5000)
            .map(|id| OutboxEntry {
                id,
                subscription: "sub-1".into(),
                body: b"{}".to_vec(),
                created_ms: 1,
                progress: Progress::default(),
            })
            .collect();
        store
            .submit(
                Batch {
                    outbox,
                    ..Batch::default()
                },
                None,
            )
            .await
            .unwrap()
            .unwrap();
        let forgetter = Forgetter::start(store.clone());

        forgetter.forget(&[1, 2, 3]);
        assert_eq!(forgetter.pending(), 3, "held until the delay is over");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while forgetter.pending() > 0 {
            assert!(tokio::time::Instant::now() < deadline, "never submitted");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(outbox_len(&store).await, 4997);

        let many: Vec<u64> = (4..4 + MAX_PENDING as u64).collect();
        forgetter.forget(&many);
        assert_eq!(forgetter.pending(), 0, "submitted at once at the bound");
        assert_eq!(outbox_len(&store).await, 4997 - MAX_PENDING as u64);

        store.close();
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Two forgetters (two servers in one process) each count only the ids handed to them, and
    /// a stop submits what one holds at once, and every id after it as it comes.
    #[tokio::test]
    async fn each_forgetter_holds_its_own_ids_and_a_stop_submits_them() {
        let dirs: Vec<_> = (0..2)
            .map(|_| {
                std::env::temp_dir().join(format!(
                    "netapi-chat-forget-{}",
                    uuid::Uuid::new_v4().simple()
                ))
            })
            .collect();
        let mut stores = Vec::new();
        for dir in &dirs {
            let (store, _) =
                Store::start(Box::new(Sqlite::open(dir, Sync::Normal).unwrap())).unwrap();
            stores.push(store);
        }
        let (one, two) = (
            Forgetter::start(stores[0].clone()),
            Forgetter::start(stores[1].clone()),
        );
        one.forget(&[1, 2]);
        two.forget(&[3]);
        assert_eq!((one.pending(), two.pending()), (2, 1));
        one.stop();
        assert_eq!(
            (one.pending(), two.pending()),
            (0, 1),
            "only the one stopped"
        );
        one.forget(&[4]);
        assert_eq!(one.pending(), 0, "submitted as it comes once stopping");
        for (store, dir) in stores.iter().zip(&dirs) {
            store.close();
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
