//! Delivery of notifications to subscribers' callbacks over HTTP: at least once, in order.
//!
//! Each subscription has its own queue and delivery task, so a slow or failing callback never
//! delays another one, and the notifications of one callback arrive in the order they were
//! created (a failing head-of-line notification is retried before the next one is tried).
//! Every notification is in the store's outbox from the moment its cause was committed until
//! it is delivered or given up, and carries a stable id (`webhook-id`) across retries and
//! restarts so that receivers can de-duplicate. Every POST is signed (Standard Webhooks:
//! `webhook-id`, `webhook-timestamp`, `webhook-signature`), and goes only to addresses the
//! callback policy allows, checked after DNS resolution at each delivery (the connection is
//! pinned to the checked addresses; redirects are not followed).
//!
//! Attempts follow [`RetryPolicy::schedule`] with ±20 % jitter; 2xx is success, anything else
//! (3xx included: redirects are not followed) a failure; `410 Gone` disables the subscription;
//! `429` and `503` honour `Retry-After`. What is finally given up is logged and counted
//! ([`dropped_count`]).

use crate::callback_guard::{CallbackPolicy, resolve_checked};
use crate::logsafe::Escaped;
use crate::signing::Signer;
use crate::store::{Batch, Store};
pub use netapi_chat_api::Notification;
use netapi_chat_runtime::Format;
use slog::{Logger, debug, warn};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

/// When deliveries are attempted.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Delay before each attempt (the first is usually 0); its length is the number of
    /// attempts. The default spans about 27 hours, like Svix's.
    pub schedule: Vec<Duration>,
    /// Timeout of one attempt.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        let s = Duration::from_secs;
        RetryPolicy {
            schedule: vec![
                s(0),
                s(5),
                s(300),
                s(1800),
                s(7200),
                s(18_000),
                s(36_000),
                s(36_000),
            ],
            timeout: s(10),
        }
    }
}

impl RetryPolicy {
    /// Parses a schedule such as `0,5s,5m,30m,2h` (units ms, s, m, h; a bare number is seconds).
    pub fn parse_schedule(text: &str) -> Option<Vec<Duration>> {
        text.split(',')
            .map(|p| {
                let p = p.trim();
                let (num, unit) =
                    p.split_at(p.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(p.len()));
                let n: f64 = num
                    .trim()
                    .parse()
                    .ok()
                    .filter(|n: &f64| n.is_finite() && *n >= 0.0)?;
                let secs = match unit {
                    "ms" => n / 1000.0,
                    "" | "s" => n,
                    "m" => n * 60.0,
                    "h" => n * 3600.0,
                    _ => return None,
                };
                Some(Duration::from_secs_f64(secs))
            })
            .collect::<Option<Vec<_>>>()
            .filter(|v| !v.is_empty())
    }
}

static DROPPED: AtomicU64 = AtomicU64::new(0);
static DELIVERED: AtomicU64 = AtomicU64::new(0);

/// Notifications given up after every attempt failed, since the process started.
pub fn dropped_count() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Notifications delivered (2xx) since the process started.
pub fn delivered_count() -> u64 {
    DELIVERED.load(Ordering::Relaxed)
}

/// Set when the process stops: no delivery attempt starts any more.
static STOPPING: AtomicBool = AtomicBool::new(false);
/// Delivery attempts between their start and the forgetting of their notification.
static ATTEMPTING: AtomicUsize = AtomicUsize::new(0);

/// Counts one attempt (and the forget after it) in [`ATTEMPTING`] while alive.
struct Attempting;

impl Attempting {
    fn enter() -> Attempting {
        ATTEMPTING.fetch_add(1, Ordering::SeqCst);
        Attempting
    }
}

impl Drop for Attempting {
    fn drop(&mut self) {
        ATTEMPTING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Stops delivery at a clean point, for a graceful stop: no attempt starts any more (what is
/// not delivered stays in the outbox for the next start), and attempts under way get until
/// `deadline` to finish and submit their forget batch before the store is closed (one cut
/// short is delivered again after the restart, with the same `webhook-id`).
pub async fn stop_deliveries(deadline: tokio::time::Instant) {
    STOPPING.store(true, Ordering::SeqCst);
    while ATTEMPTING.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Where one subscription's notifications go.
#[derive(Clone, Debug)]
pub struct Target {
    /// The callback URL.
    pub notify_url: String,
    /// Body format.
    pub format: Format,
    /// Subscription id.
    pub subscription: String,
}

/// A notification with its stable id.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// Outbox id; sent as `webhook-id: msg_<id>`.
    pub id: u64,
    /// The notification, `callbackData` already set.
    pub notification: Notification,
}

const LIVE: u8 = 0;
const EXPIRED: u8 = 1;
const CANCELLED: u8 = 2;

/// What the delivery task needs besides its queue.
#[derive(Clone)]
pub struct Deliverer {
    /// Which callback addresses may be reached (checked again at every delivery, after DNS).
    pub callbacks: CallbackPolicy,
    /// Signs every notification (Standard Webhooks headers).
    pub signer: Arc<Signer>,
    /// Attempt schedule.
    pub policy: RetryPolicy,
    /// Where delivered and given-up notifications are forgotten.
    pub store: Store,
    /// Called with the subscription id when its callback answers `410 Gone`.
    pub on_gone: Arc<dyn Fn(&str) + Send + Sync>,
    /// Logger.
    pub log: Logger,
}

/// The sending end of one subscription's delivery queue; cheap to clone.
#[derive(Clone, Debug)]
pub struct Queue {
    tx: mpsc::UnboundedSender<Delivery>,
    state: Arc<AtomicU8>,
}

impl Queue {
    /// Starts the delivery task of one subscription.
    pub fn start(target: Target, deliverer: Deliverer) -> Queue {
        let (tx, rx) = mpsc::unbounded_channel();
        let state = Arc::new(AtomicU8::new(LIVE));
        tokio::spawn(deliver(target, rx, Arc::clone(&state), deliverer));
        Queue { tx, state }
    }

    /// Queues a notification (delivered after the ones queued before).
    pub fn push(&self, d: Delivery) {
        crate::metrics::notification_queued();
        // The task only ends once every sender is dropped.
        let _ = self.tx.send(d);
    }

    /// Stops delivery now (unsubscribed): nothing queued or in retry is sent any more.
    pub fn cancel(&self) {
        self.state.store(CANCELLED, Ordering::SeqCst);
    }

    /// The subscription expired: only its cancellation notification is still delivered.
    pub fn expire(&self) {
        self.state.store(EXPIRED, Ordering::SeqCst);
    }
}

enum Outcome {
    Delivered,
    Gone,
    Retry(Option<Duration>),
}

/// An HTTP client that can only reach the callback's checked addresses: the host is pinned to
/// what [`resolve_checked`] returned (no second DNS lookup, so no rebinding), no proxy, no
/// redirects.
async fn pinned_client(target: &Target, d: &Deliverer) -> Result<reqwest::Client, String> {
    let url = reqwest::Url::parse(&target.notify_url).map_err(|e| e.to_string())?;
    let addrs = tokio::time::timeout(Duration::from_secs(5), resolve_checked(&url, &d.callbacks))
        .await
        .map_err(|_| "resolving the callback host timed out".to_owned())?
        .map_err(|e| e.detail().to_string())?;
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(d.policy.timeout);
    if let Some(host) = url.host_str() {
        builder = builder.resolve_to_addrs(host, &addrs);
    }
    builder.build().map_err(|e| e.to_string())
}

/// How long a pinned client (and so a DNS answer) is reused while deliveries succeed.
const PIN_FOR: Duration = Duration::from_secs(60);

async fn attempt(
    target: &Target,
    d: &Deliverer,
    client: &mut Option<(reqwest::Client, tokio::time::Instant)>,
    id: u64,
    body: &bytes::Bytes,
) -> Outcome {
    let fresh = client
        .as_ref()
        .is_some_and(|(_, at)| at.elapsed() < PIN_FOR);
    if !fresh {
        match pinned_client(target, d).await {
            Ok(c) => *client = Some((c, tokio::time::Instant::now())),
            Err(e) => {
                warn!(d.log, "callback refused by the callback policy or unresolvable";
                    "subscription" => &target.subscription, "id" => id, "error" => %Escaped(&e));
                *client = None;
                return Outcome::Retry(None);
            }
        }
    }
    let Some((http, _)) = client.as_ref() else {
        return Outcome::Retry(None);
    };
    let msg_id = format!("msg_{id}");
    let timestamp = crate::store::now_ms() / 1000;
    let mut request = http
        .post(&target.notify_url)
        .header(http::header::CONTENT_TYPE, target.format.content_type());
    for (name, value) in d.signer.headers(&msg_id, timestamp, body) {
        request = request.header(name, value);
    }
    let started = std::time::Instant::now();
    let result = request.body(body.clone()).send().await;
    let outcome = match result {
        Ok(r) if r.status().is_success() => Outcome::Delivered,
        Ok(r) if r.status() == http::StatusCode::GONE => Outcome::Gone,
        Ok(r) => {
            let status = r.status();
            let retry_after = matches!(status.as_u16(), 429 | 503)
                .then(|| {
                    r.headers()
                        .get(http::header::RETRY_AFTER)
                        .and_then(retry_after)
                })
                .flatten();
            warn!(d.log, "callback refused notification";
                "subscription" => &target.subscription, "id" => id, "status" => status.as_u16());
            Outcome::Retry(retry_after)
        }
        Err(e) => {
            warn!(d.log, "callback unreachable"; "subscription" => &target.subscription, "id" => id, "error" => %Escaped(&e.to_string()));
            Outcome::Retry(None)
        }
    };
    let label = match outcome {
        Outcome::Delivered => "delivered",
        Outcome::Gone => "gone",
        Outcome::Retry(_) => "failed",
    };
    crate::metrics::notification_attempt(label, started.elapsed());
    if matches!(outcome, Outcome::Retry(_)) {
        // Look the host up again before the next attempt.
        *client = None;
    }
    outcome
}

/// `Retry-After` as seconds (an HTTP date is honoured as "later", 60 s), at most a day.
fn retry_after(v: &http::HeaderValue) -> Option<Duration> {
    let text = v.to_str().ok()?.trim();
    let secs = text.parse::<u64>().unwrap_or(60);
    Some(Duration::from_secs(secs.min(86_400)))
}

fn jittered(d: Duration) -> Duration {
    if d.is_zero() {
        return d;
    }
    let factor = rand::random_range(0.8..1.2);
    d.mul_f64(factor)
}

async fn deliver(
    target: Target,
    mut rx: mpsc::UnboundedReceiver<Delivery>,
    state: Arc<AtomicU8>,
    d: Deliverer,
) {
    let mut client = None;
    while let Some(item) = rx.recv().await {
        let forget = |id: u64| {
            d.store.submit_detached(Batch {
                forget: vec![id],
                ..Batch::default()
            })
        };
        let now = state.load(Ordering::SeqCst);
        let is_cancellation = matches!(
            item.notification,
            Notification::SubscriptionCancellationNotification(_)
        );
        if now == CANCELLED || (now == EXPIRED && !is_cancellation) {
            forget(item.id);
            continue;
        }
        let body = bytes::Bytes::from(item.notification.encode(target.format));
        let mut delivered = false;
        let mut wait_hint = None;
        let mut attempting = None;
        for (n, delay) in d.policy.schedule.iter().enumerate() {
            let wait = wait_hint.take().unwrap_or_else(|| jittered(*delay));
            if !wait.is_zero() {
                attempting = None;
                tokio::time::sleep(wait).await;
            }
            if STOPPING.load(Ordering::SeqCst) {
                // Still in the outbox: delivered after the restart.
                return;
            }
            attempting.get_or_insert_with(Attempting::enter);
            if state.load(Ordering::SeqCst) == CANCELLED {
                break;
            }
            match attempt(&target, &d, &mut client, item.id, &body).await {
                Outcome::Delivered => {
                    debug!(d.log, "notification delivered"; "kind" => item.notification.kind(),
                        "subscription" => &target.subscription, "id" => item.id, "attempt" => n + 1);
                    delivered = true;
                    break;
                }
                Outcome::Gone => {
                    warn!(d.log, "callback answered 410 Gone: disabling the subscription";
                        "subscription" => &target.subscription);
                    state.store(CANCELLED, Ordering::SeqCst);
                    (d.on_gone)(&target.subscription);
                    break;
                }
                Outcome::Retry(hint) => wait_hint = hint,
            }
        }
        if delivered {
            DELIVERED.fetch_add(1, Ordering::Relaxed);
        } else if state.load(Ordering::SeqCst) != CANCELLED {
            let total = DROPPED.fetch_add(1, Ordering::Relaxed) + 1;
            warn!(d.log, "notification given up after every attempt failed";
                "kind" => item.notification.kind(), "subscription" => &target.subscription,
                "url" => %Escaped(&target.notify_url), "id" => item.id, "dropped_total" => total);
        }
        forget(item.id);
        drop(attempting);
        if is_cancellation && state.load(Ordering::SeqCst) == EXPIRED {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_parse() {
        let s = RetryPolicy::parse_schedule("0, 50ms, 2s, 1.5m, 2h").unwrap();
        assert_eq!(
            s,
            vec![
                Duration::ZERO,
                Duration::from_millis(50),
                Duration::from_secs(2),
                Duration::from_secs(90),
                Duration::from_secs(7200)
            ]
        );
        assert!(RetryPolicy::parse_schedule("").is_none());
        assert!(RetryPolicy::parse_schedule("5x").is_none());
        assert!(RetryPolicy::parse_schedule("-1").is_none());
        let total: Duration = RetryPolicy::default().schedule.iter().sum();
        assert!(
            total >= Duration::from_secs(24 * 3600),
            "default schedule spans a day: {total:?}"
        );
    }
}
