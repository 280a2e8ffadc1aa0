//! Delivery of notifications to subscribers' callbacks over HTTP: at least once, in order.
//!
//! Each subscription has its own queue and delivery task, so a slow or failing callback never
//! delays another one, and the notifications of one callback arrive in the order they were
//! created: only the head of the queue is ever tried (one request in flight per subscription; see
//! [`rules`] for why not more). Every notification is in the store's outbox from the moment
//! its cause was committed until it is delivered or buried, and carries a stable id
//! (`webhook-id`) across retries and restarts so that receivers can de-duplicate. Every POST
//! is signed (Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature`), and
//! goes only to addresses the callback policy allows, checked after DNS resolution (the
//! connection is pinned to the checked addresses; redirects are not followed). Subscriptions
//! with the same callback endpoint share kept-alive HTTP/1.1 connections
//! ([`endpoints`]), and delivered notifications are forgotten in groups ([`forget`]): a
//! delivery costs no store commit of its own. A subscription whose `notifyURL` is a
//! notification channel's `callbackURL` is fed into the channel instead ([`channel`]), with
//! the same outbox, order, state and backlog rules, and forgotten through the same grouped
//! forgets once the application acknowledges it.
//!
//! Backoff is per endpoint ([`rules`]): while a callback fails, its head is retried on the
//! schedule with gaps capped at [`RetryPolicy::max_backoff`]; the first 2xx drains the backlog
//! at full speed. 2xx is success, anything else (3xx included: redirects are not followed) a
//! failure; `429` and `503` honour `Retry-After`. After each failed attempt the head's attempt
//! count, next attempt time and the endpoint's failure run are written to its outbox row, so
//! a restart resumes where it was. A notification still failing at its give-up age becomes a
//! dead letter; `410 Gone` or `404 Not Found` ([`permanent`]), a `notifyURL` that cannot be delivered to at all (it does not
//! make an endpoint: no retry would change that), an endpoint failing for longer than that
//! age, or a backlog past [`BacklogLimit`] disables the subscription (it stays readable, with
//! its status) and keeps its backlog as dead letters. What is given up or disabled is logged and counted
//! ([`dropped_count`], [`disabled_count`]).

pub mod channel;
pub mod endpoints;
pub mod forget;
pub mod relay;
pub mod rules;

use crate::callback_guard::CallbackPolicy;
use crate::logsafe::{Callback, Escaped};
use crate::signing::{Signer, headers};
use crate::store::{Batch, Bury, Progress, Store, now_ms};
use endpoints::{Endpoint, Endpoints, Failure};
pub use forget::Forgetter;
pub use netapi_chat_api::Notification;
use netapi_chat_runtime::Format;
pub use rules::{BacklogLimit, RetryPolicy};
use rules::{Next, after_failure, backlog_full, gives_way_after, over_budget, retry_delay};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};

static DROPPED: AtomicU64 = AtomicU64::new(0);
static DELIVERED: AtomicU64 = AtomicU64::new(0);
static DISCARDED: AtomicU64 = AtomicU64::new(0);
static DISABLED: AtomicU64 = AtomicU64::new(0);

/// Notifications that became dead letters since the process started: given up after the
/// whole retry schedule, or held by a subscription that delivery disabled.
pub fn dropped_count() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Notifications that left delivery undelivered and kept nowhere since the process started:
/// their subscription was deleted or expired (its last minute up), their channel deleted, or
/// (an `isComposing`) they lapsed. Without it the totals did not add up: `queued` was more
/// than `delivered` + `given up` with nothing left undelivered (the one-hour soak).
pub fn discarded_count() -> u64 {
    DISCARDED.load(Ordering::Relaxed)
}

/// How a notification left its subscription's backlog ([`Shared::done`]): each one queued
/// leaves once, counted under one of these, so that an operator's ledger balances: queued =
/// delivered + given up + discarded + what is still held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Left {
    /// Its receiver took it (a `2xx`, or a channel's client acknowledged it).
    Delivered,
    /// It became a dead letter (given up, or its subscription disabled).
    DeadLetter,
    /// Dropped, kept nowhere: its subscription or channel is gone, or it lapsed.
    Discarded,
}

/// Subscriptions disabled by delivery (410, failing past the give-up age, backlog full) since
/// the process started.
pub fn disabled_count() -> u64 {
    DISABLED.load(Ordering::Relaxed)
}

/// Notifications delivered (2xx) since the process started.
pub fn delivered_count() -> u64 {
    DELIVERED.load(Ordering::Relaxed)
}

/// The `webhook-id` a notification is sent with (Standard Webhooks), from its outbox id: the
/// same at every attempt, across restarts and in a redelivery.
pub fn webhook_id(id: u64) -> String {
    format!("msg_{id}")
}

/// One server's delivery run: whether it is stopping, and the attempts under way. Owned by its
/// [`Deliverer`] (not process-wide), so that two servers in one process (tests) stop apart.
#[derive(Debug, Default)]
pub struct Run {
    /// Set when the server stops: no delivery attempt starts any more.
    stopping: AtomicBool,
    /// Delivery attempts between their start and the forgetting of their notification.
    attempting: AtomicUsize,
}

/// Counts one attempt (and the forget after it) in [`Run::attempting`] while alive.
struct Attempting<'a>(&'a Run);

impl<'a> Attempting<'a> {
    fn enter(run: &'a Run) -> Attempting<'a> {
        run.attempting.fetch_add(1, Ordering::SeqCst);
        Attempting(run)
    }
}

impl Drop for Attempting<'_> {
    fn drop(&mut self) {
        self.0.attempting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How often a delivery task paused by an unreachable database looks whether it is back.
pub(crate) const PAUSED_LOOK: Duration = Duration::from_millis(250);

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

/// The budget of lines a second of every subscription's delivery warnings together.
static DELIVERY_LINES: rules::LineBudget = rules::LineBudget::new(rules::DELIVERY_LINES_PER_SECOND);

/// What a subscription's queue carries: a boxed [`Delivery`]. tokio's unbounded channel
/// allocates its slots in blocks of 32, the first when it is made, so an unboxed `Delivery`
/// (about 512 bytes) made every subscription's empty queue hold 16 KiB (the soak review of
/// 2026-12-07: about 19 KiB per idle subscription, with the attempt's future); boxed, its
/// slots take 256 bytes.
pub(crate) type Queued = Box<Delivery>;

/// A notification with its stable id and delivery state.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// Outbox id; sent as `webhook-id: msg_<id>`.
    pub id: u64,
    /// The notification, `callbackData` already set.
    pub notification: Notification,
    /// When it was created (Unix ms): its give-up age counts from here.
    pub created_ms: i64,
    /// Size of its stored body, counted against the backlog's byte cap.
    pub bytes: usize,
    /// Attempts made, next attempt, the endpoint's failure run (from its outbox row).
    pub progress: Progress,
    /// Until when it is worth delivering (Unix ms; an `isComposing`, which is not in the
    /// outbox): past it, the queue drops it instead of trying. `None`: no such limit.
    pub deadline_ms: Option<i64>,
    /// A best-effort indication (`isComposing`: never stored, nothing resends it): a queue
    /// takes it only while it is short and its callback is not failing, and holds at most
    /// [`MAX_TRANSIENT_HELD`] of them ([`Queue::push`]); past that it is dropped at once.
    /// Such indications are outside the backlog's byte cap and the budget (they count 0
    /// bytes), so without this bound they piled up behind a failing head without limit.
    pub best_effort: bool,
}

impl Delivery {
    /// A new notification (no attempt made yet) created now.
    pub fn new(id: u64, notification: Notification, bytes: usize) -> Delivery {
        Delivery {
            id,
            notification,
            created_ms: now_ms(),
            bytes,
            progress: Progress::default(),
            deadline_ms: None,
            best_effort: false,
        }
    }
}

/// Most best-effort indications ([`Delivery::best_effort`]) one subscription's queue holds,
/// and the backlog past which it takes none: an indication behind this many notifications
/// would mostly lapse before its turn (or tell of typing long over), and the bound keeps what
/// they hold in memory at subscriptions × this (about 1 KiB each), whatever the senders do.
pub const MAX_TRANSIENT_HELD: usize = 16;

static TRANSIENT_DROPPED: AtomicU64 = AtomicU64::new(0);

/// Best-effort indications (`isComposing`) not queued since the process started, because
/// their subscription's callback was failing or its queue already held
/// [`MAX_TRANSIENT_HELD`] notifications.
pub fn transient_dropped_count() -> u64 {
    TRANSIENT_DROPPED.load(Ordering::Relaxed)
}

const LIVE: u8 = 0;
const EXPIRED: u8 = 1;
const CANCELLED: u8 = 2;
const DISABLED_STATE: u8 = 3;

/// Whether what a subscription in `state` still holds is dropped at `now_ms` instead of
/// delivered: everything of a cancelled (deleted) subscription at once; of an expired one,
/// what is left past `expired_until_ms`. An expired subscription's backlog was committed while
/// it was live, so it still goes out, then its cancellation notice (queued last), for a
/// bounded time ([`Queue::expire`]): dropping it at expiry lost every change the callback had
/// not taken yet, with nothing telling the application. The one rule of the callback task and
/// of a channel's feed and mailbox.
fn skipped(state: u8, expired_until_ms: i64, now_ms: i64) -> bool {
    state == CANCELLED || (state == EXPIRED && now_ms > expired_until_ms)
}

/// Why delivery disabled a subscription (shown as its status reason, and logged).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DisableReason {
    /// The callback answered a status that says it is gone for good ([`permanent`]).
    Gone(http::StatusCode),
    /// The callback URL cannot be delivered to at all (it does not parse as a callback
    /// endpoint: e.g. an `https` host no certificate can name); why. No retry can change that,
    /// so it is permanent, like `410`.
    Undeliverable(String),
    /// The callback failed without a break for the give-up age.
    Failing,
    /// The backlog reached its cap.
    BacklogFull,
    /// The server-wide budget was full and this backlog held more than its share
    /// ([`rules::over_budget`]).
    OverBudget,
}

impl DisableReason {
    /// The text shown to the subscription's owner and logged.
    pub fn text(&self, policy: &RetryPolicy) -> String {
        match self {
            DisableReason::Gone(status) => format!("the callback answered {status}"),
            DisableReason::Undeliverable(why) => {
                format!("the callback URL cannot be delivered to: {why}")
            }
            DisableReason::Failing => format!(
                "the callback failed without a break for {} s (the give-up age)",
                policy.give_up_after.as_secs_f64()
            ),
            DisableReason::BacklogFull => format!(
                "the backlog of undelivered notifications passed its cap ({} notifications or {} bytes)",
                policy.backlog.count, policy.backlog.bytes
            ),
            DisableReason::OverBudget => format!(
                "the server's budget for undelivered notifications ({} bytes) was full and this \
                 subscription's backlog held more than its share",
                policy.budget_bytes
            ),
        }
    }
}

/// What delivery calls to disable a subscription: (subscription id, reason text).
pub type OnDisable = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// What a subscription's delivery calls with each notification that reached its application
/// (its callback answered `2xx`, or a channel's client acknowledged it): set by the chat core
/// on the subscriptions whose face makes a message's `Delivered` the server's to tell
/// ([`Queue::on_delivered`]); not called for what is dropped, given up or buried. It answers
/// whether it takes the delivery's outbox row over: `true`, and the row is forgotten with what
/// the hook records (in one commit, so a crash before it sends the notification again and the
/// hook hears of it again); `false`, and delivery forgets it as any other.
pub type OnDelivered = Arc<dyn Fn(&Delivery) -> bool + Send + Sync>;

/// What the delivery task needs besides its queue.
#[derive(Clone)]
pub struct Deliverer {
    /// Which callback addresses may be reached (checked again at every delivery, after DNS).
    pub callbacks: CallbackPolicy,
    /// The server-wide secret: signs the notifications of subscriptions without a secret of
    /// their own (Standard Webhooks headers). `None` when there is none (then such
    /// notifications go unsigned, which only a data directory of an earlier version whose
    /// `webhook-secret` file was removed can lead to).
    pub signer: Option<Arc<Signer>>,
    /// Attempt schedule, give-up age, backlog cap.
    pub policy: RetryPolicy,
    /// Where failed attempts' progress and dead letters are written.
    pub store: Store,
    /// Where delivered (and unwanted) notifications are forgotten, in groups.
    pub forgetter: Forgetter,
    /// Kept-alive connections per callback endpoint, shared by every subscription.
    pub endpoints: Endpoints,
    /// The standbys of a cluster that carry attempts for this leader ([`relay`]): `None` on a
    /// lone server (and with `NETAPI_CHAT_CLUSTER_DELIVERY=leader`), and then every attempt is
    /// made here without looking for one.
    pub relays: Option<relay::Relays>,
    /// Called with the subscription id and the reason text when delivery disables it.
    pub on_disable: OnDisable,
    /// This server's run: stopping, attempts under way (see [`Deliverer::stop`]).
    pub run: Arc<Run>,
    /// What every subscription's backlog holds together, against the policy's budget.
    pub totals: Arc<Totals>,
}

/// What the backlogs of every subscription of one server hold together (their notifications
/// are held decoded, in memory, until delivered or buried): bytes of stored bodies, and how
/// many backlogs hold any. Read against [`RetryPolicy::budget_bytes`] by [`over_budget`].
#[derive(Debug, Default)]
pub struct Totals {
    bytes: AtomicUsize,
    holding: AtomicUsize,
    /// Best-effort indications held in every backlog (each at most [`MAX_TRANSIENT_HELD`]).
    transient: AtomicUsize,
    /// Rung by a push that leaves the total past the budget. A backlog is weighed when a
    /// notification of its own arrives; this bell weighs the others too, so that the largest
    /// gives way even when nothing more comes for it (an unread channel, a dead callback
    /// between two notifications). Without it, such a backlog kept its bytes while each newer
    /// one filled up to its shrinking share on top, and the total stayed past the budget.
    /// Only backlogs that may give way listen ([`rules::gives_way_after`]), so a push past the
    /// budget wakes those, not every subscription.
    over: Notify,
    /// When [`Totals::over`] was last rung, as ms on [`ring_clock`] (0: never): past the
    /// budget it rings at the push that crosses it and then at most every [`RING_GAP`], not at
    /// every push (a total that none can bring back, e.g. thousands of single notifications
    /// in flight, woke every listening backlog at each push of a fan-out).
    rung_ms: AtomicU64,
}

/// The least time between two rings of [`Totals::over`] while the total stays past the budget.
const RING_GAP: Duration = Duration::from_millis(50);

/// Milliseconds since the first call (monotonic), plus one so that 0 means "never".
fn ring_clock() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(std::time::Instant::now);
    u64::try_from(start.elapsed().as_millis())
        .unwrap_or(u64::MAX)
        .saturating_add(1)
}

impl Totals {
    /// Bytes of stored bodies held in every backlog.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::SeqCst)
    }

    /// Best-effort indications (`isComposing`) held in every backlog.
    pub fn transient(&self) -> usize {
        self.transient.load(Ordering::SeqCst)
    }
}

impl Deliverer {
    /// Stops delivery at a clean point, for a graceful stop: no attempt starts any more (what
    /// is not delivered stays in the outbox for the next start), and attempts under way get
    /// until `deadline` to finish and the forgetter to submit what it holds before the store
    /// is closed (one cut short is delivered again after the restart, same `webhook-id`).
    pub async fn stop(&self, deadline: tokio::time::Instant) {
        self.run.stopping.store(true, Ordering::SeqCst);
        self.forgetter.stop();
        while (self.run.attempting.load(Ordering::SeqCst) > 0 || self.forgetter.pending() > 0)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// What the queue's two ends share: the subscription's delivery state, the size of its
/// backlog, and a bell that wakes the task out of a backoff wait.
#[derive(Debug, Default)]
struct Shared {
    state: AtomicU8,
    /// Once expired: until when (Unix ms) what is left is still delivered ([`Queue::expire`]).
    expired_until_ms: AtomicI64,
    /// Set once an expired subscription's drop of what it still held is logged
    /// ([`tell_expired_dropped`]): one line per subscription, not one per notification.
    drop_told: AtomicBool,
    /// When the notification the callback task works on was made (Unix ms; the queue is in
    /// order, so it is the oldest one held), 0 while nothing is held: how far behind this
    /// subscription's delivery is ([`Queue::oldest_ms`]).
    oldest_ms: AtomicI64,
    count: AtomicUsize,
    bytes: AtomicUsize,
    /// Best-effort indications held (counted in `count` too), at most [`MAX_TRANSIENT_HELD`].
    transient: AtomicUsize,
    /// Since when the callback task is in a failure run (its head failed and waits for a
    /// retry; Unix ms, 0: not failing): best-effort indications are not queued then
    /// ([`Shared::admit_transient`]), and a backlog of one gives way to the budget once the
    /// run is [`rules::FAILING_GRACE`] old ([`Shared::may_give_way`]).
    failing_since_ms: AtomicI64,
    /// A channel subscription's ([`Queue::start_channel`]): there is no attempt to fail, so
    /// its "failing" is its client taking nothing ([`Shared::unserved_since_ms`]).
    channel: bool,
    /// For a channel subscription, since when its client has taken nothing of its backlog
    /// (Unix ms): set when it starts holding and whenever one of its notifications is
    /// acknowledged while others stay (not when one is dropped: a peer's lapsing
    /// indications would keep an unread channel exempt), 0 while it holds nothing. A
    /// backlog of one whose client has not acknowledged it for [`rules::FAILING_GRACE`]
    /// gives way to the budget as a failing receiver's does: before, a channel nobody polls
    /// held one notification per subscription past any budget.
    unserved_since_ms: AtomicI64,
    wake: Notify,
    /// The subscription's own signing keys, each with the time it stops signing (Unix ms;
    /// `None`: current); empty: the server-wide secret signs.
    keys: std::sync::Mutex<Vec<(Arc<Signer>, Option<i64>)>>,
    /// The server's totals, which this backlog counts into.
    totals: Arc<Totals>,
    /// The server-wide budget ([`RetryPolicy::budget_bytes`]): a push past it rings
    /// [`Totals::over`].
    budget: usize,
    /// Told of each notification that reached the application ([`Queue::on_delivered`]).
    on_delivered: Told,
    /// Set, and `ended_bell` rung, once the delivery task has returned ([`Ended`]).
    ended: AtomicBool,
    ended_bell: Notify,
}

/// Whether a queue's delivery task has returned, without keeping the queue open (a
/// [`Queue`] is a sender: held, its task would wait for more). An expired subscription's task
/// returns once it has delivered its cancellation notice or dropped what it held, after which
/// its record has nothing left to keep (`Chat::expired_record_timer`). Only the callback task
/// ([`Queue::start`]) tells it: a notification channel's feed (`channel::start_channel`) hands
/// what it takes to a mailbox, where it waits for the client's acknowledgement, so a channel's
/// expired subscription keeps its record for the whole minute.
#[derive(Debug)]
pub struct Ended(Arc<Shared>);

impl Ended {
    /// Resolves once the task has returned (at once if it has).
    pub async fn wait(&self) {
        loop {
            let bell = self.0.ended_bell.notified();
            tokio::pin!(bell);
            bell.as_mut().enable();
            if self.0.ended.load(Ordering::SeqCst) {
                return;
            }
            bell.await;
        }
    }
}

/// A [`Shared`]'s [`OnDelivered`], set at most once.
#[derive(Default)]
struct Told(std::sync::OnceLock<OnDelivered>);

impl std::fmt::Debug for Told {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "Told(set)"
        } else {
            "Told(unset)"
        })
    }
}

impl Shared {
    /// A live queue's state, counting into the totals of `d`.
    fn new(d: &Deliverer) -> Shared {
        Shared {
            totals: Arc::clone(&d.totals),
            budget: d.policy.budget_bytes,
            ..Shared::default()
        }
    }

    /// A notification joined the backlog. Past the budget, every backlog that may give way
    /// is told to weigh itself ([`Totals::over`]).
    fn held(&self, d: &Delivery) {
        if self.count.fetch_add(1, Ordering::SeqCst) == 0 {
            self.totals.holding.fetch_add(1, Ordering::SeqCst);
            if self.channel {
                self.unserved_since_ms.store(now_ms(), Ordering::SeqCst);
            }
        }
        self.bytes.fetch_add(d.bytes, Ordering::SeqCst);
        let before = self.totals.bytes.fetch_add(d.bytes, Ordering::SeqCst);
        let total = before + d.bytes;
        if total > self.budget {
            let now = ring_clock();
            let last = self.totals.rung_ms.load(Ordering::SeqCst);
            let due = before <= self.budget
                || last == 0
                || now.saturating_sub(last) >= RING_GAP.as_millis() as u64;
            if due
                && self
                    .totals
                    .rung_ms
                    .compare_exchange(last, now, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                self.totals.over.notify_waiters();
            }
        }
    }

    /// Resolves when a push takes the server's total past the budget ([`Totals::over`]),
    /// if this backlog is live (or an expired one's leftovers) and may give way now; when a
    /// backlog of one whose receiver fails comes to the end of its grace (its task then
    /// weighs it, and listens for the ring from then on); never otherwise (a push to it, or a
    /// change of its state, wakes its task anyway, which then asks again).
    async fn budget_passed(&self) {
        let state = self.state.load(Ordering::SeqCst);
        match self.gives_way_after() {
            _ if state != LIVE && state != EXPIRED => std::future::pending::<()>().await,
            Some(Duration::ZERO) => self.totals.over.notified().await,
            Some(grace_left) => tokio::time::sleep(grace_left).await,
            None => std::future::pending::<()>().await,
        }
    }

    /// Whether a best-effort indication may join this backlog, counting it if so: not while
    /// the callback is failing, nor once the backlog holds [`MAX_TRANSIENT_HELD`]
    /// notifications, nor past [`MAX_TRANSIENT_HELD`] indications (checked and counted in
    /// one step, so concurrent pushes cannot pass it). Released by [`Shared::done`].
    fn admit_transient(&self) -> bool {
        if self.failing_since_ms.load(Ordering::SeqCst) != 0
            || self.count.load(Ordering::SeqCst) >= MAX_TRANSIENT_HELD
        {
            return false;
        }
        let admitted = self
            .transient
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < MAX_TRANSIENT_HELD).then_some(n + 1)
            })
            .is_ok();
        if admitted {
            self.totals.transient.fetch_add(1, Ordering::SeqCst);
        }
        admitted
    }

    /// Notification `d` reached the application: told to the [`Queue::on_delivered`] hook.
    /// Whether the hook took its outbox row over ([`OnDelivered`]); else the caller forgets
    /// it. Its caller takes it off the backlog too ([`Shared::done`]).
    fn delivered(&self, d: &Delivery) -> bool {
        self.on_delivered.0.get().is_some_and(|tell| tell(d))
    }

    /// A notification left the backlog, as `left` says (counted there, and only there).
    fn done(&self, d: &Delivery, left: Left) {
        match left {
            Left::Delivered => &DELIVERED,
            Left::DeadLetter => &DROPPED,
            Left::Discarded => &DISCARDED,
        }
        .fetch_add(1, Ordering::Relaxed);
        if d.best_effort {
            self.transient.fetch_sub(1, Ordering::SeqCst);
            self.totals.transient.fetch_sub(1, Ordering::SeqCst);
        }
        if self.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.totals.holding.fetch_sub(1, Ordering::SeqCst);
            self.oldest_ms.store(0, Ordering::SeqCst);
            self.unserved_since_ms.store(0, Ordering::SeqCst);
            // A push between the count's step and this store started the clock already:
            // cleared, that backlog of one never gave way.
            if self.channel && self.count.load(Ordering::SeqCst) > 0 {
                let _ = self.unserved_since_ms.compare_exchange(
                    0,
                    now_ms(),
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                );
            }
        } else if self.channel && left == Left::Delivered {
            // Only an acknowledgement is the client taking it: a dropped indication is not.
            self.unserved_since_ms.store(now_ms(), Ordering::SeqCst);
        }
        self.bytes.fetch_sub(d.bytes, Ordering::SeqCst);
        self.totals.bytes.fetch_sub(d.bytes, Ordering::SeqCst);
    }

    /// Why this live backlog must give way, if it must: past its own cap, or holding more than
    /// its share of a full server-wide budget. A backlog of one notification to a receiver
    /// that keeps up (the one in flight) never gives way to the budget: what such backlogs
    /// hold is one notification per subscription, live data ([`rules::gives_way_after`]).
    fn too_full(&self, policy: &RetryPolicy) -> Option<DisableReason> {
        let (count, bytes) = (
            self.count.load(Ordering::SeqCst),
            self.bytes.load(Ordering::SeqCst),
        );
        if backlog_full(policy.backlog, count, bytes) {
            return Some(DisableReason::BacklogFull);
        }
        let total = self.totals.bytes.load(Ordering::SeqCst);
        let holding = self.totals.holding.load(Ordering::SeqCst);
        (self.may_give_way() && over_budget(policy.budget_bytes, total, holding, bytes))
            .then_some(DisableReason::OverBudget)
    }

    /// Whether an expired subscription's leftovers must give way: they hold more than their
    /// share of a full budget, as [`Shared::too_full`] weighs a live backlog. Its own cap does
    /// not apply: the cancellation notice pushed after the expiry may take a backlog held at
    /// its cap one past it, which is no reason to drop anything.
    fn expired_over_budget(&self, policy: &RetryPolicy) -> bool {
        let bytes = self.bytes.load(Ordering::SeqCst);
        let total = self.totals.bytes.load(Ordering::SeqCst);
        let holding = self.totals.holding.load(Ordering::SeqCst);
        self.may_give_way() && over_budget(policy.budget_bytes, total, holding, bytes)
    }

    /// Whether this backlog may give way to the budget now ([`rules::gives_way_after`]).
    fn may_give_way(&self) -> bool {
        self.gives_way_after() == Some(Duration::ZERO)
    }

    /// When this backlog may give way to the budget as it stands ([`rules::gives_way_after`]):
    /// a callback's is failing since its failure run began, a channel subscription's since its
    /// client last took one of it ([`Shared::unserved_since_ms`]).
    fn gives_way_after(&self) -> Option<Duration> {
        let since = if self.channel {
            &self.unserved_since_ms
        } else {
            &self.failing_since_ms
        }
        .load(Ordering::SeqCst);
        let failing_for = (since != 0).then(|| {
            Duration::from_millis(u64::try_from(now_ms().saturating_sub(since)).unwrap_or(0))
        });
        gives_way_after(self.count.load(Ordering::SeqCst), failing_for)
    }

    /// The keys that sign an attempt made at `now_ms` (the subscription's own, still valid).
    fn keys_at(&self, now_ms: i64) -> Vec<Arc<Signer>> {
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, until)| until.is_none_or(|u| now_ms < u))
            .map(|(k, _)| Arc::clone(k))
            .collect()
    }

    /// Whether [`skipped`] drops what this backlog holds at `now_ms`.
    fn skips(&self, now_ms: i64) -> bool {
        skipped(
            self.state.load(Ordering::SeqCst),
            self.expired_until_ms.load(Ordering::SeqCst),
            now_ms,
        )
    }

    /// Moves from LIVE to `to` (a cancelled or disabled queue stays so).
    fn leave_live(&self, to: u8) -> bool {
        self.state
            .compare_exchange(LIVE, to, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }
}

/// The sending end of one subscription's delivery queue; cheap to clone.
#[derive(Clone, Debug)]
pub struct Queue {
    tx: mpsc::UnboundedSender<Queued>,
    shared: Arc<Shared>,
}

impl Queue {
    /// Starts the delivery task of one subscription.
    pub fn start(target: Target, deliverer: Deliverer) -> Queue {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::new(&deliverer));
        let task = Arc::clone(&shared);
        tokio::spawn(async move {
            deliver(target, rx, Arc::clone(&task), deliverer).await;
            task.ended.store(true, Ordering::SeqCst);
            task.ended_bell.notify_waiters();
        });
        Queue { tx, shared }
    }

    /// Tells when the delivery task has returned ([`Ended`]).
    pub fn ended(&self) -> Ended {
        Ended(Arc::clone(&self.shared))
    }

    /// Queues a notification (delivered after the ones queued before). The queue is bounded
    /// by the subscription's backlog cap: past it the task disables the subscription and
    /// buries what is queued.
    ///
    /// A best-effort indication ([`Delivery::best_effort`]) is dropped instead, counted, when
    /// the queue may not take it ([`Shared::admit_transient`]): what such indications hold is
    /// at most [`MAX_TRANSIENT_HELD`] per subscription.
    pub fn push(&self, d: Delivery) {
        if d.best_effort && !self.shared.admit_transient() {
            TRANSIENT_DROPPED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        crate::metrics::notification_queued();
        self.shared.held(&d);
        // The task only ends once every sender is dropped (or the server stops): one that
        // ended takes nothing, which leaves the backlog and the totals at once.
        if let Err(mpsc::error::SendError(d)) = self.tx.send(Box::new(d)) {
            self.shared.done(&d, Left::Discarded);
        }
        self.shared.wake.notify_one();
    }

    /// Stops delivery now (unsubscribed): nothing queued or in retry is sent any more.
    pub fn cancel(&self) {
        self.shared.state.store(CANCELLED, Ordering::SeqCst);
        self.shared.wake.notify_one();
    }

    /// The subscription expired: what it holds (committed while it was live) and then its
    /// cancellation notice, pushed after this, are still delivered until `until_ms`; what is
    /// left then is dropped (the subscription's record and outbox rows go then: nothing would
    /// ever read a dead letter of it). A restart within that time calls this on the queue it
    /// starts for the expired subscription, then pushes what its outbox still holds.
    pub fn expire(&self, until_ms: i64) {
        self.shared
            .expired_until_ms
            .store(until_ms, Ordering::SeqCst);
        self.shared.leave_live(EXPIRED);
        self.shared.wake.notify_one();
    }

    /// What the backlog holds now: notifications, and bytes of their stored bodies.
    pub fn holding(&self) -> (usize, usize) {
        (
            self.shared.count.load(Ordering::SeqCst),
            self.shared.bytes.load(Ordering::SeqCst),
        )
    }

    /// When the oldest notification this subscription's callback has not taken yet was made
    /// (Unix ms), if it holds any: for the age of the oldest undelivered notification on
    /// `/metrics`, which shows a delivery that fell behind or stopped.
    pub fn oldest_ms(&self) -> Option<i64> {
        let at = self.shared.oldest_ms.load(Ordering::SeqCst);
        (at > 0 && self.shared.count.load(Ordering::SeqCst) > 0).then_some(at)
    }

    /// Sets the subscription's own signing keys, each with the time it stops signing (Unix ms;
    /// `None`: current); none: the server-wide secret signs. Applies from the next attempt.
    pub fn set_keys(&self, keys: Vec<(Arc<Signer>, Option<i64>)>) {
        *self.shared.keys.lock().unwrap_or_else(|e| e.into_inner()) = keys;
    }

    /// Calls `tell` with each notification that reaches the application from now on (its
    /// callback answered `2xx`, or a channel's client acknowledged it). Set once; a second call
    /// changes nothing.
    pub fn on_delivered(&self, tell: OnDelivered) {
        let _ = self.shared.on_delivered.0.set(tell);
    }

    /// The subscription is disabled (e.g. restored so): whatever is queued becomes a dead
    /// letter instead of being delivered.
    pub fn disable(&self) {
        self.shared.leave_live(DISABLED_STATE);
        self.shared.wake.notify_one();
    }

    /// The subscription is enabled again (a redelivery): what is pushed from now on is
    /// delivered, starting with a healthy endpoint (the failure run that disabled it is over).
    /// A cancelled or expired queue stays so.
    pub fn enable(&self) {
        let _ = self.shared.state.compare_exchange(
            DISABLED_STATE,
            LIVE,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        self.shared.wake.notify_one();
    }
}

/// Whether a callback's answer says it is gone for good, so that retrying is pointless and
/// the subscription is disabled at once: `410 Gone`, and `404 Not Found` (OMA: "treat 404 as
/// permanent and 503 as temporary", reference §1.5). Everything else is retried.
pub fn permanent(status: http::StatusCode) -> bool {
    matches!(status, http::StatusCode::GONE | http::StatusCode::NOT_FOUND)
}

enum Outcome {
    Delivered,
    Gone(http::StatusCode),
    Retry(Option<Duration>),
    /// Not made: its standby was let go while the delivery stops (`Relays::let_go`). It
    /// stays in the outbox as it was, for whoever leads next.
    Abandoned,
}

/// One attempt to deliver `body` (notification `id`); `failures`: the failed attempts of the
/// endpoint's current failure run before this one (0: it was healthy), for the log.
async fn attempt(
    target: &Target,
    d: &Deliverer,
    keys: &[Arc<Signer>],
    ep: &Endpoint,
    (id, failures): (u64, u32),
    body: &bytes::Bytes,
) -> Outcome {
    let timestamp = crate::store::now_ms() / 1000;
    let mut map = http::HeaderMap::new();
    map.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(target.format.content_type()),
    );
    // The subscription's own keys (more than one during a rotation window), else the
    // server-wide secret, if any.
    let keys = if keys.is_empty() {
        d.signer.as_slice()
    } else {
        keys
    };
    for (name, value) in headers(keys.iter().map(|k| &**k), &webhook_id(id), timestamp, body) {
        // Ids, digits and base64: always valid header values; an empty signature (no key) is
        // left out.
        if let Ok(v) = http::HeaderValue::try_from(value)
            && !v.is_empty()
        {
            map.insert(name, v);
        }
    }
    if keys.is_empty() {
        tracing::warn!(
            subscription = &target.subscription,
            id = id,
            "no secret to sign the notification with: sent unsigned"
        );
    }
    let started = std::time::Instant::now();
    // Carried by a standby when one is connected ([`relay`]); made here when none is, or when
    // the one that took it was lost before it said how it went.
    let carried = match d.relays.as_ref().and_then(|r| r.pick(&ep.origin)) {
        Some(carrier) => {
            carrier
                .post(ep, d.callbacks, &map, body, d.policy.timeout)
                .await
        }
        None => None,
    };
    let result = match carried {
        Some(result) => result,
        // Lost with a standby let go at a stop: not made here, nor recorded as a failure.
        None if d.run.stopping.load(Ordering::SeqCst) && d.relays.is_some() => {
            return Outcome::Abandoned;
        }
        None => {
            d.endpoints
                .post(ep, &d.callbacks, map, body.clone(), d.policy.timeout)
                .await
        }
    };
    // A failure run is logged on its 1st, 2nd, 4th, 8th… attempt, not on each, within the
    // delivery warnings' budget of lines a second (`suppressed`: lines not written before).
    let log = rules::worth_logging(failures)
        .then(|| DELIVERY_LINES.take(now_ms()))
        .flatten();
    let outcome = match result {
        Ok(a) if a.status.is_success() => Outcome::Delivered,
        Ok(a) if permanent(a.status) => Outcome::Gone(a.status),
        Ok(a) => {
            let retry_after = matches!(a.status.as_u16(), 429 | 503)
                .then(|| {
                    a.retry_after
                        .as_ref()
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| retry_after(v, std::time::SystemTime::now()))
                })
                .flatten();
            if let Some(suppressed) = log {
                tracing::warn!(
                    subscription = &target.subscription,
                    id = id,
                    status = a.status.as_u16(),
                    failures = failures.saturating_add(1),
                    suppressed,
                    "callback refused notification"
                );
            }
            Outcome::Retry(retry_after)
        }
        Err(Failure::Refused(e)) => {
            if let Some(suppressed) = log {
                tracing::warn!(subscription = &target.subscription, id = id, error = %Escaped(&e), failures = failures.saturating_add(1), suppressed, "callback refused by the callback policy or unresolvable");
            }
            Outcome::Retry(None)
        }
        Err(Failure::Unreachable(e)) => {
            if let Some(suppressed) = log {
                tracing::warn!(subscription = &target.subscription, id = id, error = %Escaped(&e), failures = failures.saturating_add(1), suppressed, "callback unreachable");
            }
            Outcome::Retry(None)
        }
    };
    let label = match outcome {
        Outcome::Delivered => "delivered",
        Outcome::Gone(_) => "gone",
        Outcome::Retry(_) => "failed",
        Outcome::Abandoned => return outcome,
    };
    crate::metrics::notification_attempt(label, started.elapsed());
    outcome
}

/// A callback's `Retry-After` (RFC 9110 §10.2.3) read at `now`: delay-seconds, or an HTTP date
/// (how long until then; a date already past is no wait), at most a day. Anything else is
/// honoured as "later": 60 s. (A date used to be read as 60 s whatever it said: a receiver
/// asking for 5 s waited a minute, one asking for two hours was retried after one.)
pub(crate) fn retry_after(text: &str, now: std::time::SystemTime) -> Option<Duration> {
    const LATER: Duration = Duration::from_secs(60);
    const AT_MOST: Duration = Duration::from_secs(86_400);
    let text = text.trim();
    let wait = match text.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => match httpdate::parse_http_date(text) {
            Ok(at) => at.duration_since(now).unwrap_or(Duration::ZERO),
            Err(_) => LATER,
        },
    };
    Some(wait.min(AT_MOST))
}

/// The jitter factor of one retry gap: 1.0–1.2, so that endpoints that failed together do not
/// retry together (see [`retry_delay`]).
fn jitter() -> f64 {
    rand::random_range(1.0..1.2)
}

/// The times a delivery task scheduled itself (a retry, the next probe), in wall-clock Unix
/// ms as stored (a restart resumes them), each with the monotonic instant it stood for when
/// it was scheduled. A wait for one of them is measured on the monotonic clock: a wall clock
/// stepped back an hour (NTP, a VM restored) held every failing callback's next attempt an
/// hour, and one stepped back and then set right still held it for the sleep already begun.
/// A time this task did not schedule (read back after a restart, a deadline) is waited for
/// by the wall clock. At most [`Scheduled::KEPT`] entries.
#[derive(Debug, Default)]
struct Scheduled(Vec<(i64, tokio::time::Instant)>);

impl Scheduled {
    const KEPT: usize = 4;

    /// `at_ms` was just scheduled, at wall time `now_ms`.
    fn note(&mut self, at_ms: i64, now_ms: i64) {
        let after = Duration::from_millis(at_ms.saturating_sub(now_ms).max(0).unsigned_abs());
        self.0.retain(|(t, _)| *t != at_ms);
        if self.0.len() >= Self::KEPT {
            self.0.remove(0);
        }
        self.0.push((at_ms, tokio::time::Instant::now() + after));
    }

    /// How long until `due_ms` (wall time now `now_ms`): by the monotonic clock when this task
    /// scheduled that time, else by the wall clock.
    fn wait(&self, due_ms: i64, now_ms: i64) -> Duration {
        match self.0.iter().find(|(t, _)| *t == due_ms) {
            Some((_, at)) => at.saturating_duration_since(tokio::time::Instant::now()),
            None => Duration::from_millis(due_ms.saturating_sub(now_ms).max(0).unsigned_abs()),
        }
    }
}

/// The encoded body of a queue's head, kept while it is the head so that its retries send the
/// bytes encoded for its first attempt instead of encoding the notification again each time.
/// Bounded: one body per subscription (its head's), dropped when the head is done.
#[derive(Debug, Default)]
struct HeadBody(Option<(u64, bytes::Bytes)>);

impl HeadBody {
    /// The body of notification `id`: the kept one if it is `id`'s, else `encode()`d and kept.
    fn get(&mut self, id: u64, encode: impl FnOnce() -> Vec<u8>) -> bytes::Bytes {
        match &self.0 {
            Some((kept, body)) if *kept == id => body.clone(),
            _ => {
                let body = bytes::Bytes::from(encode());
                self.0 = Some((id, body.clone()));
                body
            }
        }
    }

    /// The head is done (delivered, given up, buried or dropped): its body goes.
    fn clear(&mut self) {
        self.0 = None;
    }
}

/// One subscription's delivery task: see the module documentation and [`rules`].
async fn deliver(
    target: Target,
    mut rx: mpsc::UnboundedReceiver<Queued>,
    shared: Arc<Shared>,
    d: Deliverer,
) {
    let endpoint = Endpoint::parse(&target.notify_url);
    // The head of the queue, when it has been taken from the channel and is not done yet.
    let mut head: Option<Delivery> = None;
    let mut body = HeadBody::default();
    // The endpoint's current run of failures: since when, how many, and when the next try
    // is due (so that a given-up head's successor waits for the next probe).
    let mut failing_since: Option<i64> = None;
    let mut failures: u32 = 0;
    let mut probe_at: i64 = 0;
    let mut scheduled = Scheduled::default();
    loop {
        if head.is_none() {
            // The last head is done: its encoded body is not needed any more.
            body.clear();
        }
        // No best-effort indication joins a queue whose head is failing (it would wait
        // behind retries and lapse there).
        shared
            .failing_since_ms
            .store(failing_since.unwrap_or(0), Ordering::SeqCst);
        let item = match head.take() {
            Some(h) => h,
            None => match rx.recv().await {
                Some(i) => *i,
                None => return,
            },
        };
        let state = shared.state.load(Ordering::SeqCst);
        let is_cancellation = matches!(
            item.notification,
            Notification::SubscriptionCancellationNotification(_)
        );
        if state == DISABLED_STATE {
            // The failure run ends with the subscription: should it be enabled again (a
            // redelivery), its endpoint starts healthy, probed at once.
            (failing_since, failures, probe_at) = (None, 0, 0);
        }
        let Some(mut item) = settle(state, item, &mut rx, &target, &d, &shared) else {
            continue;
        };
        shared.oldest_ms.store(item.created_ms, Ordering::SeqCst);
        if state == EXPIRED {
            // Tried until the expired subscription's time is up, then dropped (`lapsed`).
            let until = shared.expired_until_ms.load(Ordering::SeqCst);
            item.deadline_ms = Some(item.deadline_ms.map_or(until, |t| t.min(until)));
        }
        let count = shared.count.load(Ordering::SeqCst);
        if state == LIVE
            && let Some(why) = shared.too_full(&d.policy)
        {
            disable(&target, &d, &shared, why, count);
            head = Some(item);
            continue;
        }
        if state == EXPIRED && shared.expired_over_budget(&d.policy) {
            head = shed_expired_over_budget(item, &mut rx, &target, &d, &shared);
            continue;
        }
        let ep = match &endpoint {
            Ok(ep) => ep,
            // No retry can make the URL deliverable: permanent, like 410.
            Err(why) if state == LIVE => {
                let why = DisableReason::Undeliverable(why.clone());
                disable(&target, &d, &shared, why, count);
                head = Some(item);
                continue;
            }
            // Expired, and its URL cannot be delivered to: nothing it holds can be sent, and
            // all of it leaves (what is still queued too: left in the queue, it stayed counted
            // against the budget for good; the diff review of this change).
            Err(_) => {
                tell_all_expired_dropped(&target, &shared, "its notifyURL cannot be delivered to");
                forget_all(item, &mut rx, &d, &shared);
                return;
            }
        };
        // After a restart the failure run is read back from the head's row (and said at once:
        // a backlog of one whose receiver was failing gives way to the budget from now, not
        // from its next attempt, minutes or a day away).
        if failing_since.is_none() {
            failing_since = item.progress.failing_since_ms;
            failures = item.progress.attempts;
            shared
                .failing_since_ms
                .store(failing_since.unwrap_or(0), Ordering::SeqCst);
        }
        let due = rules::due(item.progress.next_attempt_ms, probe_at, item.deadline_ms);
        let wait = scheduled.wait(due, now_ms());
        if !wait.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                // Something changed (a push past the cap, a cancellation): look again.
                () = shared.wake.notified() => {
                    head = Some(item);
                    continue;
                }
                // Another push took the total past the budget: weigh this backlog again.
                () = shared.budget_passed() => {
                    head = Some(item);
                    continue;
                }
            }
        }
        if d.run.stopping.load(Ordering::SeqCst) {
            // Still in the outbox, with its progress: resumed after the restart.
            return;
        }
        if !d.store.serving() {
            // The database is away (or this instance's lease lapsed): delivery pauses (issue
            // 14 item 4). What went out now could not be forgotten in the store, and whoever
            // leads once it is back sent it again: every notification delivered during a 4 s
            // restart of PostgreSQL arrived twice when the lead moved (acceptance check).
            while !d.store.serving() && !d.run.stopping.load(Ordering::SeqCst) {
                tokio::time::sleep(PAUSED_LOOK).await;
            }
            head = Some(item);
            continue;
        }
        // Past its deadline (a lapsed isComposing, or the expired subscription's minute):
        // dropped, never delivered late.
        let now = now_ms();
        if channel::lapsed(item.deadline_ms, now) {
            if shared.skips(now) {
                tell_all_expired_dropped(&target, &shared, EXPIRY_MINUTE_UP);
            }
            d.forgetter.forget(&[item.id]);
            shared.done(&item, Left::Discarded);
            continue;
        }
        let _attempting = Attempting::enter(&d.run);
        if shared.state.load(Ordering::SeqCst) == CANCELLED {
            head = Some(item);
            continue;
        }
        let bytes = body.get(item.id, || item.notification.encode(target.format));
        let keys = shared.keys_at(now_ms());
        // While the attempt waits on the receiver (up to the notify timeout), every push wakes
        // this task: a backlog that passed its cap or its share of the server's budget
        // meanwhile is disabled at once, the attempt dropped (its notification stays in the
        // outbox and is buried with the rest), instead of growing for the attempt's length
        // (a hanging receiver let memory pass the budget by the push rate × 10 s).
        // Boxed: an attempt (a connection, TLS, the HTTP exchange) is a large future, and
        // inlined it made every subscription's idle task as large (about 19 KB each while
        // waiting for its first notification: the soak review of 2026-12-07); boxed, it costs
        // its size only while it runs.
        let attempting = Box::pin(attempt(&target, &d, &keys, ep, (item.id, failures), &bytes));
        let outcome = match unless_too_full(attempting, &shared, &d.policy).await {
            Ok(outcome) => outcome,
            // Deleted while its attempt waited (for a connection under the caps, or on the
            // receiver): nothing is sent any more; the head is dropped with the rest.
            Err(Interrupted::Cancelled) => {
                head = Some(item);
                continue;
            }
            Err(Interrupted::TooFull(why)) => {
                disable(
                    &target,
                    &d,
                    &shared,
                    why,
                    shared.count.load(Ordering::SeqCst),
                );
                head = Some(item);
                continue;
            }
            Err(Interrupted::ExpiredOverBudget) => {
                head = shed_expired_over_budget(item, &mut rx, &target, &d, &shared);
                continue;
            }
        };
        match outcome {
            // Still in the outbox, with its progress: whoever leads next makes it.
            Outcome::Abandoned => return,
            Outcome::Delivered => {
                tracing::debug!(
                    kind = item.notification.kind(),
                    subscription = &target.subscription,
                    id = item.id,
                    attempt = item.progress.attempts + 1,
                    "notification delivered"
                );
                if !shared.delivered(&item) {
                    d.forgetter.forget(&[item.id]);
                }
                shared.done(&item, Left::Delivered);
                if failures > 0 {
                    tracing::info!(
                        subscription = &target.subscription,
                        failures = failures,
                        "callback answers again"
                    );
                }
                // Healthy again: the rest of the backlog goes at full speed.
                (failing_since, failures, probe_at) = (None, 0, 0);
                if is_cancellation && shared.state.load(Ordering::SeqCst) == EXPIRED {
                    return;
                }
            }
            // An expired subscription cannot be disabled: what it still holds goes.
            Outcome::Gone(_) if shared.state.load(Ordering::SeqCst) == EXPIRED => {
                tell_all_expired_dropped(
                    &target,
                    &shared,
                    "its callback says it is gone (410 or 404)",
                );
                forget_all(item, &mut rx, &d, &shared);
                return;
            }
            Outcome::Gone(status) => {
                // Tried once more: the dead letter it becomes counts this attempt too.
                item.progress.attempts = item.progress.attempts.saturating_add(1);
                disable(&target, &d, &shared, DisableReason::Gone(status), count);
                head = Some(item);
            }
            Outcome::Retry(hint) => {
                let now = now_ms();
                let since = *failing_since.get_or_insert(now);
                failures = failures
                    .saturating_add(1)
                    .max(item.progress.attempts.saturating_add(1));
                item.progress.attempts = item.progress.attempts.saturating_add(1);
                let delay = retry_delay(&d.policy, failures, jitter(), hint);
                match after_failure(&d.policy, item.created_ms, since, now, delay) {
                    Next::RetryAt(at) => {
                        scheduled.note(at, now);
                        item.progress.next_attempt_ms = at;
                        item.progress.failing_since_ms = Some(since);
                        d.store.submit_detached(Batch {
                            progress: vec![(item.id, item.progress)],
                            ..Batch::default()
                        });
                        head = Some(item);
                    }
                    Next::GiveUp => {
                        let total = dropped_count() + 1;
                        if let Some(suppressed) = DELIVERY_LINES.take(now) {
                            tracing::warn!(kind = item.notification.kind(), subscription = &target.subscription, url = %Callback(&target.notify_url), id = item.id, attempts = item.progress.attempts, dropped_total = total, suppressed, "notification given up at its give-up age: kept as a dead letter");
                        }
                        probe_at = now
                            .saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
                        scheduled.note(probe_at, now);
                        bury(&target, &d, &shared, vec![item]);
                        if is_cancellation && shared.state.load(Ordering::SeqCst) == EXPIRED {
                            return;
                        }
                    }
                    Next::Disable if shared.state.load(Ordering::SeqCst) == EXPIRED => {
                        tell_all_expired_dropped(
                            &target,
                            &shared,
                            "its callback has failed without a break for the give-up age",
                        );
                        forget_all(item, &mut rx, &d, &shared);
                        return;
                    }
                    Next::Disable => {
                        disable(&target, &d, &shared, DisableReason::Failing, count);
                        head = Some(item);
                    }
                }
            }
        }
    }
}

/// The first rules a subscription's feed applies to its next notification, in a callback
/// task ([`deliver`]) and a notification channel's feed (`channel::feed`) alike: one that its
/// subscription's state skips ([`skipped`]) is forgotten; while the subscription is disabled,
/// it and everything queued behind it are buried in one batch. `None` when it was settled so;
/// else the notification, to be delivered.
fn settle(
    state: u8,
    item: Delivery,
    rx: &mut mpsc::UnboundedReceiver<Queued>,
    target: &Target,
    d: &Deliverer,
    shared: &Shared,
) -> Option<Delivery> {
    if shared.skips(now_ms()) {
        tell_all_expired_dropped(target, shared, EXPIRY_MINUTE_UP);
        d.forgetter.forget(&[item.id]);
        shared.done(&item, Left::Discarded);
        return None;
    }
    if state == DISABLED_STATE {
        let mut dead = vec![item];
        while let Ok(i) = rx.try_recv() {
            dead.push(*i);
        }
        bury(target, d, shared, dead);
        return None;
    }
    Some(item)
}

/// `attempting`'s outcome, unless the live backlog must give way ([`Shared::too_full`])
/// while it waits: every push rings the task's bell, as does any push past the server's
/// budget ([`Shared::budget_passed`]), and each ring looks again. `Err` says why; the attempt
/// is then dropped.
async fn unless_too_full(
    attempting: impl std::future::Future<Output = Outcome>,
    shared: &Shared,
    policy: &RetryPolicy,
) -> Result<Outcome, Interrupted> {
    tokio::pin!(attempting);
    loop {
        tokio::select! {
            outcome = &mut attempting => return Ok(outcome),
            () = shared.wake.notified() => {}
            () = shared.budget_passed() => {}
        }
        let state = shared.state.load(Ordering::SeqCst);
        if state == CANCELLED {
            return Err(Interrupted::Cancelled);
        }
        if state == LIVE
            && let Some(why) = shared.too_full(policy)
        {
            return Err(Interrupted::TooFull(why));
        }
        if state == EXPIRED && shared.expired_over_budget(policy) {
            return Err(Interrupted::ExpiredOverBudget);
        }
    }
}

/// Why an attempt was dropped before it ended ([`unless_too_full`]).
enum Interrupted {
    /// The backlog passed its cap or its share of the budget: the subscription is disabled.
    TooFull(DisableReason),
    /// The subscription was deleted: nothing is sent any more (an attempt waiting minutes for
    /// a connection under the caps would otherwise still go out).
    Cancelled,
    /// An expired subscription's leftovers hold more than their share of a full budget:
    /// dropped ([`shed_expired_over_budget`]).
    ExpiredOverBudget,
}

/// An expired subscription's leftovers (`item` and what is queued behind it) hold more than
/// their share of a full delivery budget ([`Shared::expired_over_budget`]): they cannot be
/// disabled, so they give way first, dropped now instead of at the end of their minute (an
/// outside review saw them hold the budget 40 % past its limit for that minute while every
/// new live subscription was disabled to make room). The subscription's cancellation notice
/// is kept (it holds no bytes: dropping it frees nothing), and comes back as the new head;
/// the task goes on, so a notice pushed later is still taken.
fn shed_expired_over_budget(
    item: Delivery,
    rx: &mut mpsc::UnboundedReceiver<Queued>,
    target: &Target,
    d: &Deliverer,
    shared: &Shared,
) -> Option<Delivery> {
    let mut all = vec![item];
    while let Ok(i) = rx.try_recv() {
        all.push(*i);
    }
    let (kept, mut dropped) = keep_cancellation_notices(all);
    let mut kept = kept.into_iter();
    let head = kept.next();
    // One notice per subscription; another would only be sent twice (and, dropped here
    // without `Shared::done`, stay counted in the totals).
    dropped.extend(kept);
    drop_expired(target, d, shared, dropped);
    head
}

/// Splits an expired subscription's leftovers into its cancellation notice(s), kept, and the
/// rest.
fn keep_cancellation_notices(all: Vec<Delivery>) -> (Vec<Delivery>, Vec<Delivery>) {
    all.into_iter().partition(|i| {
        matches!(
            i.notification,
            Notification::SubscriptionCancellationNotification(_)
        )
    })
}

/// Drops `dropped`, an expired subscription's leftovers over the budget: said once (with the
/// others of [`tell_expired_dropped`]), forgotten, and let go of in the totals.
fn drop_expired(target: &Target, d: &Deliverer, shared: &Shared, dropped: Vec<Delivery>) {
    if dropped.is_empty() {
        return;
    }
    tell_expired_dropped(
        target,
        shared,
        dropped.len(),
        "they held more than their share of the full delivery budget",
    );
    d.forgetter
        .forget(&dropped.iter().map(|i| i.id).collect::<Vec<_>>());
    for i in &dropped {
        shared.done(i, Left::Discarded);
    }
}

/// Makes notifications dead letters (kept within the backlog cap per subscription).
fn bury(target: &Target, d: &Deliverer, shared: &Shared, dead: Vec<Delivery>) {
    for item in &dead {
        shared.done(item, Left::DeadLetter);
    }
    d.store.submit_detached(Batch {
        // Each one's attempts as they stand (the last attempt before it was given up, or the
        // one a 404 / 410 answered, was not written yet): a dead letter says how often it was
        // tried, `0` only for one queued behind the head.
        progress: dead
            .iter()
            .filter(|i| i.progress.attempts > 0)
            .map(|i| (i.id, i.progress))
            .collect(),
        bury: vec![Bury {
            subscription: target.subscription.clone(),
            ids: dead.iter().map(|i| i.id).collect(),
            keep_count: d.policy.backlog.count,
            keep_bytes: d.policy.backlog.bytes,
        }],
        ..Batch::default()
    });
}

/// Why an expired subscription's last notifications are dropped when its time is up.
const EXPIRY_MINUTE_UP: &str = "its callback did not take them within a minute of the expiry";

/// An expired subscription's notifications are dropped undelivered (`why`): said once per
/// subscription, at `warn`, with how many. They leave the outbox with the expired
/// subscription's record (once its task returns, or at the end of its minute) and go to no
/// dead letters (the subscription is gone): before, nothing said they were lost (the
/// notification review).
fn tell_expired_dropped(target: &Target, shared: &Shared, dropped: usize, why: &str) {
    if shared.state.load(Ordering::SeqCst) == EXPIRED
        && !shared.drop_told.swap(true, Ordering::SeqCst)
    {
        tracing::warn!(
            subscription = &target.subscription,
            url = %Callback(&target.notify_url),
            dropped,
            why,
            "an expired subscription's last notifications are dropped undelivered"
        );
    }
}

/// [`tell_expired_dropped`] for everything the expired subscription still holds (its time is
/// up, or its callback says it is gone).
fn tell_all_expired_dropped(target: &Target, shared: &Shared, why: &str) {
    tell_expired_dropped(target, shared, shared.count.load(Ordering::SeqCst), why);
}

/// Drops `item` and everything still queued behind it (an expired subscription whose callback
/// says it is gone: before, each was retried at once, in a loop, until the expiry's minute
/// was up).
fn forget_all(
    item: Delivery,
    rx: &mut mpsc::UnboundedReceiver<Queued>,
    d: &Deliverer,
    shared: &Shared,
) {
    let mut all = vec![item];
    while let Ok(i) = rx.try_recv() {
        all.push(*i);
    }
    d.forgetter
        .forget(&all.iter().map(|i| i.id).collect::<Vec<_>>());
    for i in &all {
        shared.done(i, Left::Discarded);
    }
}

/// Disables the subscription: logged, counted, and the core marks it (its status says so and
/// it gets no new notifications); the task then buries what is queued.
fn disable(target: &Target, d: &Deliverer, shared: &Shared, why: DisableReason, backlog: usize) {
    if !shared.leave_live(DISABLED_STATE) {
        return;
    }
    let reason = why.text(&d.policy);
    let total = DISABLED.fetch_add(1, Ordering::Relaxed) + 1;
    if let Some(suppressed) = DELIVERY_LINES.take(now_ms()) {
        tracing::warn!(subscription = &target.subscription, url = %Callback(&target.notify_url), reason = %reason, backlog = backlog, disabled_total = total, suppressed, "subscription disabled by delivery: its backlog is kept as dead letters");
    }
    (d.on_disable)(&target.subscription, &reason);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Retry-After` in seconds or as an HTTP date, at most a day; what does not parse is 60 s.
    #[test]
    fn retry_after_is_seconds_or_a_date() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_764_900_000);
        let date = |after: u64| httpdate::fmt_http_date(now + Duration::from_secs(after));
        let s = |secs| Some(Duration::from_secs(secs));
        assert_eq!(retry_after("6", now), s(6));
        assert_eq!(retry_after(" 0 ", now), s(0));
        assert_eq!(retry_after(&date(5), now), s(5));
        assert_eq!(retry_after(&date(7_200), now), s(7_200));
        assert_eq!(retry_after(&date(200_000), now), s(86_400));
        assert_eq!(retry_after("99999999", now), s(86_400));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(retry_after(&past, now), s(0));
        assert_eq!(retry_after("soon", now), s(60));
        assert_eq!(retry_after("-1", now), s(60));
    }

    /// A time the task scheduled is waited for by the monotonic clock, whatever the wall clock
    /// says now (stepped back an hour: still 200 ms); another one by the wall clock.
    #[tokio::test]
    async fn a_scheduled_retry_is_waited_for_by_the_monotonic_clock() {
        let mut s = Scheduled::default();
        let now = 10_000_000;
        s.note(now + 200, now);
        let hour = 3_600_000;
        let left = s.wait(now + 200, now - hour);
        assert!(left <= Duration::from_millis(200) && left > Duration::from_millis(150));
        assert!(s.wait(now + 200, now + hour) > Duration::from_millis(150));
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(s.wait(now + 200, now - hour) <= Duration::from_millis(50));
        // Not scheduled here (read back after a restart): the wall clock.
        assert_eq!(s.wait(now + 500, now), Duration::from_millis(500));
        assert_eq!(s.wait(now - 5, now), Duration::ZERO);
        // Bounded: the oldest goes.
        for i in 1..=10 {
            s.note(now + i, now);
        }
        assert_eq!(s.0.len(), Scheduled::KEPT);
    }

    /// 410 and 404 end a subscription at once (OMA: 404 is permanent); every other failure,
    /// 503 and 429 included, is retried on the schedule.
    #[test]
    fn gone_and_not_found_are_permanent_the_rest_is_retried() {
        use http::StatusCode;
        for s in [StatusCode::GONE, StatusCode::NOT_FOUND] {
            assert!(permanent(s), "{s}");
        }
        for s in [400, 401, 403, 408, 429, 500, 502, 503, 301, 302] {
            let s = StatusCode::from_u16(s).unwrap();
            assert!(!permanent(s), "{s}");
        }
        assert_eq!(
            DisableReason::Gone(StatusCode::NOT_FOUND).text(&RetryPolicy::default()),
            "the callback answered 404 Not Found"
        );
    }

    /// A head's retries reuse the bytes of its first encoding; the next head is encoded anew,
    /// and a cleared one (done) is not kept.
    #[test]
    fn a_heads_body_is_encoded_once_while_it_is_the_head() {
        let mut kept = HeadBody::default();
        let encoded = std::cell::Cell::new(0);
        let encode = |text: &str| {
            encoded.set(encoded.get() + 1);
            text.as_bytes().to_vec()
        };
        assert_eq!(kept.get(7, || encode("seven")), "seven");
        assert_eq!(kept.get(7, || encode("other")), "seven", "a retry");
        assert_eq!(encoded.get(), 1);
        assert_eq!(kept.get(8, || encode("eight")), "eight", "the next head");
        assert_eq!(encoded.get(), 2);
        kept.clear();
        assert!(kept.0.is_none(), "nothing kept once the head is done");
        assert_eq!(kept.get(8, || encode("eight")), "eight");
        assert_eq!(encoded.get(), 3);
    }

    /// Best-effort indications: at most `MAX_TRANSIENT_HELD` held per queue, none while its
    /// callback fails or once its backlog holds that many notifications; one leaving makes
    /// room again, and the server's total follows.
    #[test]
    fn best_effort_indications_are_capped_per_queue() {
        let shared = Shared::default();
        let indication = Delivery {
            best_effort: true,
            ..Delivery::new(
                1,
                Notification::SubscriptionCancellationNotification(Default::default()),
                0,
            )
        };
        for _ in 0..MAX_TRANSIENT_HELD {
            assert!(shared.admit_transient());
            shared.held(&indication);
        }
        assert!(!shared.admit_transient(), "past the cap");
        assert_eq!(shared.totals.transient(), MAX_TRANSIENT_HELD);
        shared.done(&indication, Left::Discarded);
        assert!(shared.admit_transient(), "room again");
        let stored = Delivery {
            best_effort: false,
            ..indication.clone()
        };
        let behind = Shared::default();
        for _ in 0..MAX_TRANSIENT_HELD {
            behind.held(&stored);
        }
        assert!(!behind.admit_transient(), "the backlog is not short");
        let fresh = Shared::default();
        fresh.failing_since_ms.store(now_ms(), Ordering::SeqCst);
        assert!(!fresh.admit_transient(), "the callback is failing");
        fresh.failing_since_ms.store(0, Ordering::SeqCst);
        assert!(fresh.admit_transient());
        fresh.held(&indication);
        fresh.done(&indication, Left::Discarded);
        assert_eq!(fresh.totals.transient(), 0);
        assert_eq!(fresh.transient.load(Ordering::SeqCst), 0);
    }

    /// A channel subscription's clock (how long its client has taken nothing) starts when it
    /// starts holding, is not restarted by a notification dropped (a peer's lapsed
    /// indication), is by one acknowledged while others stay, and stops when it holds
    /// nothing; a callback's backlog has none (its failure run is its clock).
    #[test]
    fn a_channel_backlogs_clock_follows_what_its_client_takes() {
        let d = Delivery::new(
            1,
            Notification::SubscriptionCancellationNotification(Default::default()),
            0,
        );
        let since = |s: &Shared| s.unserved_since_ms.load(Ordering::SeqCst);
        let shared = Shared {
            channel: true,
            ..Shared::default()
        };
        shared.held(&d);
        shared.held(&d);
        assert!(since(&shared) > 0, "started");
        shared.unserved_since_ms.store(1, Ordering::SeqCst);
        shared.done(&d, Left::Discarded);
        assert_eq!(since(&shared), 1, "a drop is not the client taking it");
        shared.held(&d);
        shared.done(&d, Left::Delivered);
        assert!(since(&shared) > 1, "an acknowledgement restarts it");
        shared.done(&d, Left::Delivered);
        assert_eq!(since(&shared), 0, "nothing held");
        let callback = Shared::default();
        callback.held(&d);
        assert_eq!(since(&callback), 0);
    }

    /// An undeliverable URL is shown with why, like the other reasons.
    #[test]
    fn an_undeliverable_url_is_a_reason_that_says_why() {
        let policy = RetryPolicy::default();
        let why = DisableReason::Undeliverable("bad-.example is not a name".into());
        assert_eq!(
            why.text(&policy),
            "the callback URL cannot be delivered to: bad-.example is not a name"
        );
    }
}
