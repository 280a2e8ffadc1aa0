//! OMA 2012: `Delivered` is the server's to tell. A message that reaches an application through
//! a subscription made on the OMA 2012 face (its callback answered `2xx`, or a channel's client
//! acknowledged it) is recorded `Delivered` for that recipient, as a report would record it, and
//! its sender is told if it asked for that report. The seed face leaves confirming to its
//! clients (seed 7.1.10), so its subscriptions tell nothing here.
//!
//! **Invariant:** delivery never waits for this. The hook a subscription's queue calls
//! ([`Chat::delivered_hook`]) only puts a [`Receipt`] into a bounded channel; one task
//! ([`record`]) takes out what waits, after [`GATHERED_FOR`] so that a moment's receipts are
//! committed together, groups it by session ([`grouped`]) and records each
//! group in one change (one read of its messages, one commit, every recipient of a group
//! message at once: [`Chat::record_delivered_in`]), at most [`RECORDED_AT_ONCE`] groups at a
//! time. A channel full ([`RECEIPTS_WAITING`]: delivery outruns the store) drops the receipt
//! and says so in the log once per run of drops: that recipient's `Delivered` then waits for
//! its client's own report, as before this module.
//!
//! What is not recorded: a receipt for an `isComposing` or for the subject told as a first
//! message (no stored message), a message of a session that ended or that the recipient no
//! longer sees, one already `Delivered` or further. A notification's outbox row is forgotten
//! with its record, in the same commit (or once nothing is to be recorded): a receipt still
//! waiting at a crash, or past a graceful stop's wait ([`Chat::receipts_recorded`]), leaves
//! its notification to be sent again after the restart, and recorded then; one dropped
//! because the channel is full is forgotten as any delivered notification. An ad hoc chat's
//! notifications name it `adhoc`; the receipt finds the pair's open ad hoc chat, so a message
//! delivered after its chat closed (its callback failing longer than the ad hoc idle time) is
//! not recorded either.

use super::Chat;
use super::oma2012::{ADHOC, subject_message_id};
use crate::notify::{Delivery, Notification, OnDelivered};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

/// Receipts waiting to be recorded, at most: a burst of deliveries beyond it (the store slower
/// than the callbacks) drops the rest (module docs).
/// Each holds four short strings (two addresses of at most 256 characters, two ids), so the
/// channel holds a few MiB at most.
pub(super) const RECEIPTS_WAITING: usize = 16_384;

/// Groups of receipts recorded side by side, at most: each is one read and one commit.
const RECORDED_AT_ONCE: usize = 64;

/// Receipts taken from the channel at once, to be grouped: a bound on one group's read.
const TAKEN_TOGETHER: usize = 256;

/// How long receipts gather after the first of them before they are taken. At steady rates
/// they arrive one by one, each of another session: taken at once, each was a change and a
/// commit of its own (about one more commit per delivered message); gathered, the groups of
/// one moment are each read and submitted side by side, so that their changes reach the store
/// thread together and it commits what waits for it as one group. The cost is this much more
/// delay before a sender hears `Delivered`.
const GATHERED_FOR: std::time::Duration = std::time::Duration::from_millis(20);

/// A message that reached recipient `user`'s application, as its notification named it.
#[derive(Debug)]
pub(super) struct Receipt {
    /// The notification's outbox id: its row is forgotten with the record (or after it fails).
    id: u64,
    user: String,
    /// The sender: the other side of a one-to-one chat (an ad hoc one is found by the pair).
    sender: String,
    /// As the notification says it (`adhoc` for an ad hoc chat).
    session_id: String,
    message_id: String,
}

/// What a message notification to `user` (outbox id `id`) says was delivered; `None` for
/// anything else (an `isComposing`, another notification).
fn receipt(id: u64, user: &str, n: &Notification) -> Option<Receipt> {
    let Notification::MessageNotification(n) = n else {
        return None;
    };
    n.chat_message.as_ref()?;
    Some(Receipt {
        id,
        user: user.to_owned(),
        sender: n.sender_address.clone(),
        session_id: n.session_id.clone(),
        message_id: n.message_id.clone()?,
    })
}

impl Chat {
    /// The hook of a subscription of `user` made on the OMA 2012 face: what it delivers is
    /// recorded `Delivered` (module docs). Called under delivery's own locks: it only sends.
    pub(super) fn delivered_hook(&self, user: &str) -> OnDelivered {
        let tx = self.receipts.clone();
        let dropping = Arc::clone(&self.receipts_dropping);
        let pending = Arc::clone(&self.receipts_pending);
        let user = user.to_owned();
        Arc::new(move |d: &Delivery| {
            let Some(r) = receipt(d.id, &user, &d.notification) else {
                return false;
            };
            // Counted before it can be taken, so that the count never reads 0 while one is
            // on its way (`Chat::receipts_recorded`).
            pending.fetch_add(1, Ordering::SeqCst);
            match tx.try_send(r) {
                // Said again only once the queue has room for a burst, not at each slot the
                // recording frees while delivery still outruns it.
                Ok(()) => {
                    if tx.capacity() >= RECEIPTS_WAITING / 2
                        && dropping.swap(false, Ordering::Relaxed)
                    {
                        tracing::info!("delivery receipts are recorded again");
                    }
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    pending.fetch_sub(1, Ordering::SeqCst);
                    if !dropping.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            waiting = RECEIPTS_WAITING,
                            "delivery receipts outrun the store: some messages delivered to \
                             OMA 2012 applications are not recorded Delivered (their \
                             clients' own reports still are)"
                        );
                    }
                    false
                }
                // The recording task is gone (its chat with it).
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    pending.fetch_sub(1, Ordering::SeqCst);
                    false
                }
            }
        })
    }

    /// The session receipt `r` is about: its own, or for `adhoc` the open ad hoc chat of its
    /// recipient and sender; `None` when there is none.
    fn session_of(&self, r: &Receipt) -> Option<String> {
        if r.session_id != ADHOC {
            return Some(r.session_id.clone());
        }
        self.adhoc(&r.user, &r.sender, String::new).ok()
    }

    /// Records the receipts `delivered` ((recipient, message id), in delivery order) of
    /// session `sid` in one change ([`Chat::record_delivered_in`]). Whatever refuses them (the
    /// session gone) is only logged at debug: the application was never waiting.
    /// Their outbox rows (`ids`) are forgotten in the same change, or, when nothing is
    /// recorded, by delivery's grouped forget.
    async fn record_delivered(&self, sid: String, delivered: Vec<(String, String)>, ids: Vec<u64>) {
        let subject = subject_message_id(&sid);
        let delivered: Vec<(String, String)> = delivered
            .into_iter()
            .filter(|(_, mid)| *mid != subject)
            .collect();
        let recorded = if delivered.is_empty() {
            Ok(false)
        } else {
            self.record_delivered_in(&sid, delivered, ids.clone()).await
        };
        match recorded {
            Ok(true) => {}
            Ok(false) => self.deliverer.forgetter.forget(&ids),
            Err(e) => {
                self.deliverer.forgetter.forget(&ids);
                tracing::debug!(
                    session = sid,
                    error = ?e,
                    "delivered messages are not recorded Delivered"
                );
            }
        }
    }
}

impl Chat {
    /// For a graceful stop, once nothing can deliver any more (callback attempts stopped,
    /// every connection closed, so no channel acknowledges either), before the store closes:
    /// waits until every receipt taken is recorded (`receipts_pending` back to 0: waiting,
    /// grouped or being recorded), until `deadline` at most. What is still waiting then keeps
    /// its outbox row: sent again after the restart, and recorded then.
    pub async fn receipts_recorded(&self, deadline: Instant) {
        while self.receipts_pending.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// The semaphore bounding the groups recorded at once, for [`Chat::open`].
    pub(super) fn recording_limit() -> Arc<Semaphore> {
        Arc::new(Semaphore::new(RECORDED_AT_ONCE))
    }
}

/// `n` receipts counted in `Chat::receipts_pending`, taken off when dropped: however their
/// recording ends (a panic included), a graceful stop does not wait for them in vain.
struct Counted(Arc<std::sync::atomic::AtomicUsize>, usize);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::SeqCst);
    }
}

/// Receipts of one session: (recipient, message id) pairs in delivery order, and their
/// notifications' outbox ids.
type Group = (String, Vec<(String, String)>, Vec<u64>);

/// `receipts`, each with its session, by session ([`Group`]), and the outbox ids of those
/// without one (`None`: nothing to record them in).
fn grouped(receipts: Vec<(Option<String>, Receipt)>) -> (Vec<Group>, Vec<u64>) {
    let mut groups: Vec<Group> = Vec::new();
    let mut unplaced = Vec::new();
    for (sid, r) in receipts {
        let Some(sid) = sid else {
            unplaced.push(r.id);
            continue;
        };
        let pair = (r.user, r.message_id);
        match groups.iter_mut().find(|(s, _, _)| *s == sid) {
            Some((_, pairs, ids)) => {
                pairs.push(pair);
                ids.push(r.id);
            }
            None => groups.push((sid, vec![pair], vec![r.id])),
        }
    }
    (groups, unplaced)
}

/// The task that records receipts from `rx` for `chat`, until the chat is gone or every hook
/// with it: what waits is taken together (at most [`TAKEN_TOGETHER`], [`GATHERED_FOR`] after
/// the first), grouped by session
/// ([`grouped`]), and each group recorded in one change, at most [`RECORDED_AT_ONCE`] groups
/// at a time.
pub(super) async fn record(chat: Weak<Chat>, mut rx: mpsc::Receiver<Receipt>) {
    let mut taken = Vec::with_capacity(TAKEN_TOGETHER);
    while rx.recv_many(&mut taken, TAKEN_TOGETHER).await > 0 {
        if taken.len() < TAKEN_TOGETHER {
            tokio::time::sleep(GATHERED_FOR).await;
            while taken.len() < TAKEN_TOGETHER {
                let Ok(r) = rx.try_recv() else { break };
                taken.push(r);
            }
        }
        let Some(chat) = chat.upgrade() else {
            return;
        };
        let found = taken.drain(..).map(|r| (chat.session_of(&r), r)).collect();
        let (groups, unplaced) = grouped(found);
        chat.deliverer.forgetter.forget(&unplaced);
        chat.receipts_pending
            .fetch_sub(unplaced.len(), Ordering::SeqCst);
        for (sid, delivered, ids) in groups {
            // Never closed: the permit always comes.
            let Ok(permit) = Arc::clone(&chat.recording).acquire_owned().await else {
                return;
            };
            let chat = Arc::clone(&chat);
            let counted = Counted(Arc::clone(&chat.receipts_pending), ids.len());
            tokio::spawn(async move {
                chat.record_delivered(sid, delivered, ids).await;
                drop((counted, permit));
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netapi_chat_api::{ChatMessage, IsComposing, MessageNotification};

    fn message(chat_message: bool) -> Notification {
        Notification::MessageNotification(MessageNotification {
            sender_address: "tel:+1".into(),
            sender_name: None,
            chat_message: chat_message.then(|| {
                serde_json::from_str::<ChatMessage>(r#"{"text":"hi"}"#).expect("a chatMessage")
            }),
            is_composing: (!chat_message).then(IsComposing::default),
            date_time: None,
            session_id: ADHOC.into(),
            message_id: chat_message.then(|| "m1".into()),
            link: Vec::new(),
            callback_data: None,
        })
    }

    #[test]
    fn only_a_message_makes_a_receipt() {
        let r = receipt(7, "tel:+2", &message(true)).expect("a message");
        assert_eq!(
            (
                r.user.as_str(),
                r.sender.as_str(),
                r.session_id.as_str(),
                r.message_id.as_str()
            ),
            ("tel:+2", "tel:+1", ADHOC, "m1")
        );
        assert_eq!(r.id, 7);
        assert!(
            receipt(7, "tel:+2", &message(false)).is_none(),
            "isComposing"
        );
    }

    #[test]
    fn receipts_are_grouped_by_session_in_their_order() {
        let r = |id: u64, user: &str, mid: &str| Receipt {
            id,
            user: user.into(),
            sender: "tel:+1".into(),
            session_id: ADHOC.into(),
            message_id: mid.into(),
        };
        let s = |sid: &str| Some(sid.to_owned());
        let (groups, unplaced) = grouped(vec![
            (s("s1"), r(1, "tel:+2", "m1")),
            (s("s1"), r(2, "tel:+3", "m1")),
            (None, r(3, "tel:+4", "m9")),
            (s("s2"), r(4, "tel:+2", "m3")),
            (s("s1"), r(5, "tel:+2", "m2")),
        ]);
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(u, m)| ((*u).to_owned(), (*m).to_owned()))
                .collect()
        };
        assert_eq!(
            groups,
            [
                (
                    "s1".to_owned(),
                    pairs(&[("tel:+2", "m1"), ("tel:+3", "m1"), ("tel:+2", "m2")]),
                    vec![1, 2, 5]
                ),
                ("s2".to_owned(), pairs(&[("tel:+2", "m3")]), vec![4]),
            ]
        );
        assert_eq!(unplaced, [3]);
    }
}
