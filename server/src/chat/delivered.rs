//! OMA 2012: `Delivered` is the server's to tell. A message that reaches an application through
//! a subscription made on the OMA 2012 face (its callback answered `2xx`, or a channel's client
//! acknowledged it) is recorded `Delivered` for that recipient, as a report would record it, and
//! its sender is told if it asked for that report. The seed face leaves confirming to its
//! clients (seed 7.1.10), so its subscriptions tell nothing here.
//!
//! **Invariant:** delivery never waits for this. The hook a subscription's queue calls
//! ([`Chat::delivered_hook`]) only puts a [`Receipt`] into a bounded channel; one task
//! ([`record`]) takes them out and records each beside the others, at most
//! [`RECORDED_AT_ONCE`] at a time. A channel full ([`RECEIPTS_WAITING`]: delivery outruns the
//! store) drops the receipt and says so in the log once per run of drops: that recipient's
//! `Delivered` then waits for its client's own report, as before this module.
//!
//! What is not recorded: a receipt for an `isComposing` or for the subject told as a first
//! message (no stored message), a message whose session the recipient no longer sees (ended,
//! left), one already `Delivered` or further, and, after a restart, a notification delivered
//! again (the same message: nothing new). An ad hoc chat's notifications name it `adhoc`; the
//! receipt finds the pair's open ad hoc chat, so a message delivered after that chat closed is
//! not recorded either.

use super::Chat;
use super::messages::Repeat;
use super::oma2012::{ADHOC, subject_message_id};
use crate::notify::{Notification, OnDelivered};
use netapi_chat_api::MessageStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use tokio::sync::{Semaphore, mpsc};

/// Receipts waiting to be recorded, at most: a burst of deliveries beyond it (the store slower
/// than the callbacks) drops the rest (module docs).
pub(super) const RECEIPTS_WAITING: usize = 4096;

/// Receipts recorded side by side, at most: each is a message read and a commit.
const RECORDED_AT_ONCE: usize = 64;

/// A message that reached recipient `user`'s application, as its notification named it.
#[derive(Debug)]
pub(super) struct Receipt {
    user: String,
    /// The sender: the other side of a one-to-one chat (an ad hoc one is found by the pair).
    sender: String,
    /// As the notification says it (`adhoc` for an ad hoc chat).
    session_id: String,
    message_id: String,
}

/// What a message notification to `user` says was delivered; `None` for anything else (an
/// `isComposing`, another notification).
fn receipt(user: &str, n: &Notification) -> Option<Receipt> {
    let Notification::MessageNotification(n) = n else {
        return None;
    };
    n.chat_message.as_ref()?;
    Some(Receipt {
        user: user.to_owned(),
        sender: n.sender_address.clone(),
        session_id: n.session_id.clone(),
        message_id: n.message_id.clone()?,
    })
}

/// Set while receipts are being dropped (the channel full), so that a run of drops is said
/// once.
static DROPPING: AtomicBool = AtomicBool::new(false);

impl Chat {
    /// The hook of a subscription of `user` made on the OMA 2012 face: what it delivers is
    /// recorded `Delivered` (module docs). Called under delivery's own locks: it only sends.
    pub(super) fn delivered_hook(&self, user: &str) -> OnDelivered {
        let tx = self.receipts.clone();
        let user = user.to_owned();
        Arc::new(move |n: &Notification| {
            let Some(r) = receipt(&user, n) else {
                return;
            };
            match tx.try_send(r) {
                Ok(()) => {
                    if DROPPING.swap(false, Ordering::Relaxed) {
                        tracing::info!("delivery receipts are recorded again");
                    }
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    if !DROPPING.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            waiting = RECEIPTS_WAITING,
                            "delivery receipts outrun the store: some messages delivered to \
                             OMA 2012 applications are not recorded Delivered (their \
                             clients' own reports still are)"
                        );
                    }
                }
                // The server is stopping.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        })
    }

    /// Records receipt `r`: the recipient's status becomes `Delivered` unless it is already
    /// that or further, and the sender is told if it asked. Whatever refuses it (the session
    /// gone, the message unknown) is only logged at debug: the application was never waiting.
    async fn record_delivered(&self, r: Receipt) {
        let sid = if r.session_id == ADHOC {
            let state = self.read_state();
            match super::oma2012::adhoc_with(state.sessions_of(&r.user), &r.user, &r.sender) {
                Some(s) => s.id.clone(),
                None => return,
            }
        } else {
            r.session_id
        };
        if r.message_id == subject_message_id(&sid) {
            return;
        }
        let confirmed = self
            .confirm_waiting(
                &r.user,
                &sid,
                &r.message_id,
                MessageStatus::Delivered,
                Repeat::Taken,
            )
            .await;
        if let Err(e) = confirmed {
            tracing::debug!(
                session = sid,
                message = r.message_id,
                error = ?e,
                "a delivered message is not recorded Delivered"
            );
        }
    }
}

/// The task that records receipts from `rx` for `chat`, until the chat is gone or every hook
/// with it.
pub(super) async fn record(chat: Weak<Chat>, mut rx: mpsc::Receiver<Receipt>) {
    let at_once = Arc::new(Semaphore::new(RECORDED_AT_ONCE));
    while let Some(r) = rx.recv().await {
        let Ok(permit) = Arc::clone(&at_once).acquire_owned().await else {
            return;
        };
        let Some(chat) = chat.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            chat.record_delivered(r).await;
            drop(permit);
        });
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
        let r = receipt("tel:+2", &message(true)).expect("a message");
        assert_eq!(
            (
                r.user.as_str(),
                r.sender.as_str(),
                r.session_id.as_str(),
                r.message_id.as_str()
            ),
            ("tel:+2", "tel:+1", ADHOC, "m1")
        );
        assert!(receipt("tel:+2", &message(false)).is_none(), "isComposing");
    }
}
