//! Delivery of notifications to subscribers' callbacks over HTTP.
//!
//! Each subscription has its own delivery task and queue, so a slow or failing callback never
//! delays another one, and notifications to one callback arrive in the order they were made.
//! A failed POST is retried with exponential backoff; what is finally given up is logged and
//! counted ([`dropped_count`]). Durable delivery is a later step (see issue 5).

use netapi_chat_api::{
    ChatEventNotification, MessageDeliveryNotification, MessageNotification,
    ParticipantStatusNotification, SessionInvitationNotification,
    SubscriptionCancellationNotification,
};
use netapi_chat_runtime::{Format, wire};
use slog::{Logger, debug, warn};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

/// One notification, of any of the kinds the spec's callback lists.
#[derive(Clone, Debug)]
pub enum Notification {
    /// Seed `SessionInvitationNotification`.
    Invitation(SessionInvitationNotification),
    /// Seed `ParticipantStatusNotification`.
    ParticipantStatus(ParticipantStatusNotification),
    /// Seed `ChatEventNotification`.
    Event(ChatEventNotification),
    /// Seed `MessageNotification`.
    Message(MessageNotification),
    /// Seed `MessageDeliveryNotification`.
    Delivery(MessageDeliveryNotification),
    /// The subscription itself ended (expiry).
    Cancelled(SubscriptionCancellationNotification),
}

impl Notification {
    /// Sets the subscription's `callbackData` on the notification.
    pub fn set_callback_data(&mut self, data: Option<String>) {
        match self {
            Notification::Invitation(n) => n.callback_data = data,
            Notification::ParticipantStatus(n) => n.callback_data = data,
            Notification::Event(n) => n.callback_data = data,
            Notification::Message(n) => n.callback_data = data,
            Notification::Delivery(n) => n.callback_data = data,
            Notification::Cancelled(n) => n.callback_data = data,
        }
    }

    /// The body to POST, in `format`.
    pub fn encode(&self, format: Format) -> Vec<u8> {
        match self {
            Notification::Invitation(n) => wire::encode(format, n),
            Notification::ParticipantStatus(n) => wire::encode(format, n),
            Notification::Event(n) => wire::encode(format, n),
            Notification::Message(n) => wire::encode(format, n),
            Notification::Delivery(n) => wire::encode(format, n),
            Notification::Cancelled(n) => wire::encode(format, n),
        }
    }

    /// The root element name, for logs.
    pub fn kind(&self) -> &'static str {
        use netapi_chat_runtime::xml::XmlRoot;
        match self {
            Notification::Invitation(_) => SessionInvitationNotification::NAME,
            Notification::ParticipantStatus(_) => ParticipantStatusNotification::NAME,
            Notification::Event(_) => ChatEventNotification::NAME,
            Notification::Message(_) => MessageNotification::NAME,
            Notification::Delivery(_) => MessageDeliveryNotification::NAME,
            Notification::Cancelled(_) => SubscriptionCancellationNotification::NAME,
        }
    }
}

/// How deliveries are attempted.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts per notification, at least 1.
    pub attempts: u32,
    /// Delay before the first retry; doubled for each further one.
    pub backoff: Duration,
    /// Timeout of one attempt.
    pub timeout: Duration,
}

static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Notifications given up after every attempt failed, since the process started.
pub fn dropped_count() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Where one subscription's notifications go.
#[derive(Clone, Debug)]
pub struct Target {
    /// The callback URL.
    pub notify_url: String,
    /// Body format.
    pub format: Format,
    /// Subscription id, for logs.
    pub subscription: String,
}

/// The sending end of one subscription's delivery queue. Dropping it lets the queue drain;
/// [`Queue::cancel`] stops delivery at once.
#[derive(Debug)]
pub struct Queue {
    tx: mpsc::UnboundedSender<Notification>,
    cancelled: Arc<AtomicBool>,
}

impl Queue {
    /// Starts the delivery task of one subscription.
    pub fn start(
        target: Target,
        client: reqwest::Client,
        policy: RetryPolicy,
        log: Logger,
    ) -> Queue {
        let (tx, rx) = mpsc::unbounded_channel();
        let cancelled = Arc::new(AtomicBool::new(false));
        tokio::spawn(deliver(
            target,
            rx,
            Arc::clone(&cancelled),
            client,
            policy,
            log,
        ));
        Queue { tx, cancelled }
    }

    /// Queues a notification (in order after the ones queued before).
    pub fn push(&self, n: Notification) {
        // The task only ends after `cancel` or when this sender is dropped.
        let _ = self.tx.send(n);
    }

    /// Stops delivery now: nothing queued or in retry is sent any more.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }
}

async fn deliver(
    target: Target,
    mut rx: mpsc::UnboundedReceiver<Notification>,
    cancelled: Arc<AtomicBool>,
    client: reqwest::Client,
    policy: RetryPolicy,
    log: Logger,
) {
    let content_type = target.format.content_type();
    'queue: while let Some(n) = rx.recv().await {
        let body = bytes::Bytes::from(n.encode(target.format));
        let mut delay = policy.backoff;
        for attempt in 1..=policy.attempts {
            if cancelled.load(Ordering::SeqCst) {
                break 'queue;
            }
            let result = client
                .post(&target.notify_url)
                .header(http::header::CONTENT_TYPE, content_type)
                .timeout(policy.timeout)
                .body(body.clone())
                .send()
                .await;
            match result {
                Ok(r) if r.status().is_success() => {
                    debug!(log, "notification delivered"; "kind" => n.kind(), "subscription" => &target.subscription);
                    continue 'queue;
                }
                Ok(r) => warn!(log, "callback refused notification";
                    "kind" => n.kind(), "subscription" => &target.subscription, "status" => r.status().as_u16(), "attempt" => attempt),
                Err(e) => warn!(log, "callback unreachable";
                    "kind" => n.kind(), "subscription" => &target.subscription, "error" => e.to_string(), "attempt" => attempt),
            }
            if attempt < policy.attempts {
                tokio::time::sleep(delay).await;
                delay = delay.saturating_mul(2);
            }
        }
        let total = DROPPED.fetch_add(1, Ordering::Relaxed) + 1;
        warn!(log, "notification dropped after every attempt failed";
            "kind" => n.kind(), "subscription" => &target.subscription, "url" => &target.notify_url, "dropped_total" => total);
    }
}
