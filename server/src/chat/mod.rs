//! The chat core: the state machine of subscriptions, sessions, participants and messages, and
//! the notifications each change causes.
//!
//! Every changing operation takes the lock once, checks the rules, changes the in-memory state
//! and describes the change as a store [`Batch`]: the records it wrote and the notifications it
//! causes (the transactional outbox). The batch is handed to the store *under the lock*, so
//! commit order is state order; the caller is answered only once the batch is durable, and the
//! notifications reach the delivery queues right after their commit, in commit order. Reads
//! of sessions, participants and subscriptions are served from memory; messages live only in
//! the store and are read through the store thread without holding the lock (see the
//! messages section below), so memory does not grow with messages sent.

pub mod page;
pub mod quota;
pub mod records;
mod secrets;
pub mod state;
pub mod views;

use crate::callback_guard::{CallbackPolicy, NOT_ALLOWED, check_url, resolve_checked};
use crate::logsafe::Escaped;
use crate::notify::{Deliverer, Delivery, Notification, Queue, RetryPolicy, Target};
use crate::signing::Signer;
use crate::store::{
    Backend, Batch, Kind, MessageRow, OutboxEntry, Progress, Snapshot, Store, StoreError, now_ms,
};
use crate::urls::Urls;
use netapi_chat_api::{
    ChatMessage, ChatMessageList, ChatSessionInformation, ChatSessionList, ChatSubscription,
    ChatSubscriptionList, Created, EventType, Link, MessageStatus, NotificationFormat,
    ParticipantInformation, ParticipantList, ParticipantSessionStatus, ParticipantStatus,
    ResourceReference, ServiceException, SubscriptionCancellationNotification, SubscriptionStatus,
};
use netapi_chat_runtime::{ApiError, Format};
use page::PageRequest;
use slog::{Logger, error, info};
use state::{
    Invitation, Message, Participant, Session, State, Subscription, SubscriptionRecord, status_rank,
};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
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
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            participants_per_session: 100,
            text_chars: 4096,
            subscriptions_per_user: 20,
            sessions_per_user: 1000,
            invitations: quota::InvitationLimits::default(),
        }
    }
}

fn too_many(what: &str, limit: usize) -> ApiError {
    let mut e = ApiError::policy(
        "POL2008",
        "Too many resources requested: %1 (at most %2)",
        what,
    );
    e.variables.push(limit.to_string());
    e
}

/// Notifications produced by one operation: (user address, notification).
type Outbox = Vec<(String, Notification)>;

/// Settings of the core.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How long an invitation waits for an answer.
    pub invitation_timeout: Duration,
    /// How notifications are delivered.
    pub retry: RetryPolicy,
    /// Which callback addresses may be reached.
    pub callbacks: CallbackPolicy,
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
}

/// The chat system: all state, and what runs on it.
pub struct Chat {
    state: Mutex<State>,
    urls: Urls,
    settings: Settings,
    store: Store,
    deliverer: Deliverer,
    log: Logger,
    /// Locks that order read-modify-write steps on a session's messages (a confirmation; a
    /// send with a `clientCorrelator`), which read from the store and so cannot hold the
    /// state lock. Striped by session id: memory stays fixed whatever the number of sessions,
    /// and two sessions sharing a stripe only wait for each other's short read.
    message_locks: Box<[tokio::sync::Mutex<()>]>,
}

/// Stripes of [`Chat::message_locks`].
const MESSAGE_LOCKS: usize = 64;

fn missing(what: &str) -> ApiError {
    ApiError::not_found(what)
}

/// One change being prepared under the lock: the batch to commit and, for after the commit,
/// the notifications to hand to delivery queues.
#[derive(Default)]
struct Change {
    batch: Batch,
    deliveries: Vec<(Queue, Delivery)>,
}

impl Change {
    /// Writes a record, already in its stored form (see [`records`]).
    fn put(&mut self, kind: Kind, key: String, bytes: Vec<u8>) {
        self.batch.puts.push((kind, key, bytes));
    }

    fn put_session(&mut self, s: &Session) {
        self.put(Kind::Session, s.id.clone(), records::encode_session(s));
    }

    fn put_message(&mut self, sid: &str, m: &Message) {
        self.batch.messages.push(MessageRow {
            session: sid.to_owned(),
            seq: m.seq,
            id: m.id.clone(),
            sender: m.sender.clone(),
            correlator: m.client_correlator.clone(),
            value: records::encode_message(m),
        });
    }
}

/// Waits until a submitted change is durable; a failed store answers `503 SVC2001`.
async fn durable(rx: oneshot::Receiver<Result<(), String>>) -> Result<(), ApiError> {
    match rx.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) | Err(_) => Err(storage_failed()),
    }
}

/// `503 SVC2001` for a read the store could not answer (the server keeps running: nothing was
/// changed). The storage error itself is logged, not shown to clients.
pub fn read_failed() -> ApiError {
    ApiError::service(
        http::StatusCode::SERVICE_UNAVAILABLE,
        "SVC2001",
        "No server resources available to process the request: %1",
        "the server could not read its storage; retry later",
    )
}

/// `503 SVC2001` (OMA "no server resources"): the server's storage failed, the change was not
/// stored, and the server is stopping (fail-stop; a restart reloads a consistent state). The
/// storage error itself (paths, errno) is for the operator's log, not for clients.
pub fn storage_failed() -> ApiError {
    ApiError::service(
        http::StatusCode::SERVICE_UNAVAILABLE,
        "SVC2001",
        "No server resources available to process the request: %1",
        "the server's storage failed and it is stopping; the request was not carried out, retry once the server is back",
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
        log: Logger,
    ) -> Result<Arc<Chat>, String> {
        let chat = Arc::new_cyclic(|weak: &Weak<Chat>| {
            let gone = weak.clone();
            let deliverer = Deliverer {
                callbacks: settings.callbacks,
                signer: settings.signer.clone(),
                policy: settings.retry.clone(),
                store: store.clone(),
                on_disable: Arc::new(move |id: &str, reason: &str| {
                    if let Some(chat) = gone.upgrade() {
                        chat.disable_subscription(id, reason);
                    }
                }),
                log: log.clone(),
            };
            Chat {
                state: Mutex::new(State::default()),
                urls,
                settings,
                store,
                deliverer,
                log,
                message_locks: (0..MESSAGE_LOCKS)
                    .map(|_| tokio::sync::Mutex::new(()))
                    .collect(),
            }
        });
        chat.restore(snapshot)?;
        Ok(chat)
    }

    /// Rebuilds the state from the stored records (see [`records`]). A record that does not
    /// read as its stored type stops the start with an error naming it: guessing would serve
    /// wrong data, and skipping would lose it at the next write.
    fn restore(self: &Arc<Self>, snapshot: Snapshot) -> Result<(), String> {
        let bad = |kind: Kind, key: &str, e: String| {
            format!("stored {} `{key}` is unreadable: {e}", kind.name())
        };
        if let Some(m) = &snapshot.migrated {
            info!(self.log, "stored format migrated"; "from_version" => m.from, "to_version" => m.to, "records_rewritten" => m.records, "notifications_rewritten" => m.outbox);
        }
        let mut state = self.lock();
        let mut subs: Vec<SubscriptionRecord> = Vec::new();
        let mut sessions: Vec<Session> = Vec::new();
        for (kind, key, value) in snapshot.records {
            match kind {
                Kind::Meta => {
                    state.counters =
                        records::decode_counters(&value).map_err(|e| bad(kind, &key, e))?
                }
                Kind::Subscription => {
                    subs.push(records::decode_subscription(&value).map_err(|e| bad(kind, &key, e))?)
                }
                Kind::Session => {
                    sessions.push(records::decode_session(&value).map_err(|e| bad(kind, &key, e))?)
                }
                // Messages stay in the store and are read on demand; a backend never hands
                // them over at start-up.
                Kind::Message => {
                    return Err(bad(
                        kind,
                        &key,
                        "messages are not loaded at start-up".to_owned(),
                    ));
                }
            }
        }
        sessions.sort_by_key(|s| s.seq);
        // Earlier versions kept ended sessions readable; they are gone now: their records
        // (and messages) are deleted once, here, instead of being loaded.
        let (ended, sessions): (Vec<Session>, Vec<Session>) =
            sessions.into_iter().partition(|s| s.ended);
        if !ended.is_empty() {
            let mut change = Change::default();
            for s in &ended {
                change.batch.deletes.push((Kind::Session, s.id.clone()));
            }
            self.store.submit_detached(change.batch);
        }
        for s in sessions {
            for p in &s.participants {
                state
                    .user_sessions
                    .entry(p.address.clone())
                    .or_default()
                    .push(s.id.clone());
            }
            state.sessions.insert(s.id.clone(), s);
        }
        subs.sort_by_key(|s| s.seq);
        for rec in subs {
            self.attach_subscription(&mut state, rec);
        }
        let mut resumed = 0usize;
        for e in snapshot.outbox {
            let Some(sub) = state.subscriptions.get(&e.subscription) else {
                continue;
            };
            let notification = records::decode_notification(&e.body)
                .map_err(|err| format!("stored notification {} is unreadable: {err}", e.id))?;
            sub.queue.push(Delivery {
                id: e.id,
                notification,
                created_ms: e.created_ms,
                bytes: e.body.len(),
                progress: e.progress,
            });
            resumed += 1;
        }
        // Timers: what was pending before the restart fires as if the server had stayed up.
        let mut invitations = Vec::new();
        for s in state.sessions.values() {
            for p in &s.participants {
                if let Invitation::Pending { seq, deadline_ms } = p.invitation {
                    invitations.push((s.id.clone(), p.address.clone(), seq, deadline_ms));
                }
            }
        }
        let expiries: Vec<(String, i64)> = state
            .subscriptions
            .values()
            .filter_map(|s| s.rec.expires_at_ms.map(|t| (s.rec.id.clone(), t)))
            .collect();
        let counts = (state.sessions.len(), state.subscriptions.len());
        drop(state);
        for (sid, address, seq, deadline) in invitations {
            self.invitation_timer(sid, address, seq, deadline);
        }
        for (id, at) in expiries {
            self.expiry_timer(id, at);
        }
        info!(self.log, "state restored"; "sessions" => counts.0, "subscriptions" => counts.1, "pending_notifications" => resumed);
        Ok(())
    }

    /// `503` once the store has failed: the process is stopping and memory may hold changes
    /// the disk does not, so nothing is served from it any more (see `store::fail_stop`).
    pub fn check_store(&self) -> Result<(), ApiError> {
        if self.store.has_failed() {
            Err(storage_failed())
        } else {
            Ok(())
        }
    }

    /// The URL builder.
    pub fn urls(&self) -> &Urls {
        &self.urls
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-made change that matters more
        // than refusing all further service; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds the notifications of `outbox` to the change: one outbox entry per subscription of
    /// each user, with a fresh id and the subscription's `callbackData`.
    fn notify(&self, state: &mut State, change: &mut Change, outbox: Outbox) {
        let created_ms = now_ms();
        for (user, n) in outbox {
            let Some(ids) = state.user_subscriptions.get(&user) else {
                continue;
            };
            for id in ids {
                // A disabled subscription gets nothing new (see `disable_subscription`).
                let Some(sub) = state
                    .subscriptions
                    .get(id)
                    .filter(|s| s.rec.disabled.is_none())
                else {
                    continue;
                };
                let mut n = n.clone();
                n.set_callback_data(sub.rec.callback.callback_data.clone());
                state.counters.next_notification += 1;
                let nid = state.counters.next_notification;
                let body = records::encode_notification(&n);
                let delivery = Delivery {
                    created_ms,
                    ..Delivery::new(nid, n, body.len())
                };
                change.batch.outbox.push(OutboxEntry {
                    id: nid,
                    subscription: id.clone(),
                    body,
                    created_ms,
                    progress: Progress::default(),
                });
                change.deliveries.push((sub.queue.clone(), delivery));
            }
        }
    }

    /// Hands the change to the store (call under the lock); its notifications go to their
    /// queues right after the commit.
    fn submit(&self, state: &State, mut change: Change) -> oneshot::Receiver<Result<(), String>> {
        change.put(
            Kind::Meta,
            "counters".to_owned(),
            records::encode_counters(&state.counters),
        );
        let deliveries = std::mem::take(&mut change.deliveries);
        let hook: Option<Box<dyn FnOnce() + Send>> = (!deliveries.is_empty()).then(|| {
            Box::new(move || {
                for (queue, d) in deliveries {
                    queue.push(d);
                }
            }) as Box<dyn FnOnce() + Send>
        });
        self.store.submit(change.batch, hook)
    }

    // ------------------------------------------------------------------ subscriptions

    fn subscription_view(&self, rec: &SubscriptionRecord) -> ChatSubscription {
        ChatSubscription {
            callback_reference: rec.callback.clone(),
            duration: Some(rec.duration),
            client_correlator: rec.client_correlator.clone(),
            resource_url: Some(self.urls.subscription(&rec.user, &rec.id)),
            subscription_status: Some(if rec.disabled.is_some() {
                SubscriptionStatus::Disabled
            } else {
                SubscriptionStatus::Active
            }),
            status_reason: rec.disabled.as_ref().map(|d| d.reason.clone()),
            // Shown once, by the create that made it (see `create_subscription`).
            signing_secret: None,
        }
    }

    fn attach_subscription(&self, state: &mut State, rec: SubscriptionRecord) {
        let format = match rec.callback.notification_format {
            Some(NotificationFormat::Xml) => Format::Xml,
            _ => Format::Json,
        };
        let queue = Queue::start(
            Target {
                notify_url: rec.callback.notify_url.clone(),
                format,
                subscription: rec.id.clone(),
            },
            self.deliverer.clone(),
        );
        if rec.disabled.is_some() {
            queue.disable();
        }
        queue.set_keys(secrets::keys(&rec.secrets));
        state
            .user_subscriptions
            .entry(rec.user.clone())
            .or_default()
            .push(rec.id.clone());
        state
            .subscriptions
            .insert(rec.id.clone(), Subscription { rec, queue });
    }

    /// Seed 7.1.1: subscribe.
    pub async fn create_subscription(
        self: &Arc<Self>,
        user: &str,
        body: ChatSubscription,
    ) -> Result<Created<ChatSubscription>, ApiError> {
        // xs:anyURI collapses whitespace at the ends (pretty-printed XML); anywhere else a
        // control character or whitespace is refused by check_url (log forging, issue 11).
        let notify_url = body
            .callback_reference
            .notify_url
            .trim_matches([' ', '\t', '\r', '\n'])
            .to_owned();
        // Callbacks are not a way in: http(s) only, and only to addresses the policy allows,
        // checked here after DNS resolution and again at every delivery. The client hears
        // GuardError's Display (no resolved address: no DNS oracle); the operator's log, the
        // detail, escaped.
        let bad = |client: &dyn std::fmt::Display, detail: &dyn std::fmt::Display| {
            info!(self.log, "notifyURL refused"; "user" => %Escaped(user),
                "url" => %Escaped(&notify_url), "why" => %Escaped(&detail.to_string()));
            ApiError::invalid_input(format!("callbackReference.notifyURL: {client}"))
        };
        let parsed =
            check_url(&notify_url, &self.settings.callbacks).map_err(|e| bad(&e, &e.detail()))?;
        tokio::time::timeout(
            Duration::from_secs(5),
            resolve_checked(&parsed, &self.settings.callbacks),
        )
        .await
        .map_err(|_| bad(&NOT_ALLOWED, &"resolving the host timed out"))?
        .map_err(|e| bad(&e, &e.detail()))?;
        let own_secret = secrets::for_new_subscription(
            body.signing_secret.as_deref(),
            self.settings.own_secrets,
        )?;
        let duration = body.duration.unwrap_or(0).min(MAX_SUBSCRIPTION_SECS);
        if duration < 0 {
            return Err(ApiError::invalid_input(format!(
                "duration {duration} must be 0 (no expiry) or a number of seconds"
            )));
        }
        let (view, expiry, rx) = {
            let mut state = self.lock();
            if let Some(c) = &body.client_correlator
                && let Some(existing) = state
                    .subscriptions
                    .values()
                    .find(|s| s.rec.user == user && s.rec.client_correlator.as_deref() == Some(c))
            {
                let view = self.subscription_view(&existing.rec);
                let location = view.resource_url.clone().unwrap_or_default();
                return Ok(Created {
                    location,
                    body: view,
                });
            }
            let limit = self.settings.limits.subscriptions_per_user;
            if state.user_subscriptions.get(user).map_or(0, Vec::len) >= limit {
                return Err(too_many("subscriptions of this user", limit));
            }
            let (id, seq) = state.new_id("sub");
            let mut callback = body.callback_reference;
            callback.notify_url = notify_url;
            callback.notification_format = Some(
                callback
                    .notification_format
                    .unwrap_or(NotificationFormat::Json),
            );
            let expires_at_ms = (duration > 0).then(|| now_ms() + duration * 1000);
            let rec = SubscriptionRecord {
                id: id.clone(),
                user: user.to_owned(),
                callback,
                duration,
                expires_at_ms,
                client_correlator: body.client_correlator,
                seq,
                disabled: None,
                secrets: own_secret
                    .iter()
                    .map(|s| state::SigningSecret {
                        secret: s.clone(),
                        until_ms: None,
                    })
                    .collect(),
            };
            let mut view = self.subscription_view(&rec);
            view.signing_secret = own_secret;
            let mut change = Change::default();
            change.put(
                Kind::Subscription,
                id.clone(),
                records::encode_subscription(&rec),
            );
            self.attach_subscription(&mut state, rec);
            (
                view,
                expires_at_ms.map(|t| (id, t)),
                self.submit(&state, change),
            )
        };
        durable(rx).await?;
        if let Some((id, at)) = expiry {
            self.expiry_timer(id, at);
        }
        info!(self.log, "subscription created"; "user" => %Escaped(user),
            "url" => %Escaped(&view.callback_reference.notify_url));
        let location = view.resource_url.clone().unwrap_or_default();
        Ok(Created {
            location,
            body: view,
        })
    }

    fn expiry_timer(self: &Arc<Self>, id: String, at_ms: i64) {
        let chat = Arc::downgrade(self);
        let wait = Duration::from_millis(u64::try_from(at_ms - now_ms()).unwrap_or(0));
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            if let Some(chat) = chat.upgrade() {
                chat.expire_subscription(&id);
            }
        });
    }

    /// A subscription's `duration` ran out: it is removed, and its callback gets a
    /// `subscriptionCancellationNotification` (and nothing else any more).
    fn expire_subscription(&self, id: &str) {
        let mut state = self.lock();
        let Some(sub) = remove_subscription(&mut state, id) else {
            return;
        };
        sub.queue.expire();
        let notification = Notification::from(SubscriptionCancellationNotification {
            reason: Some(ServiceException {
                message_id: "SVC0001".to_owned(),
                text: "A service error occurred: %1".to_owned(),
                variables: vec![format!(
                    "subscription expired after its duration of {} s",
                    sub.rec.duration
                )],
            }),
            callback_data: sub.rec.callback.callback_data.clone(),
            link: vec![Link {
                rel: "ChatSubscription".to_owned(),
                href: self.urls.subscription(&sub.rec.user, &sub.rec.id),
            }],
        });
        state.counters.next_notification += 1;
        let nid = state.counters.next_notification;
        let mut change = Change::default();
        change
            .batch
            .deletes
            .push((Kind::Subscription, id.to_owned()));
        // The cancellation goes out from memory only: the subscription's record (and so its
        // outbox) is gone once this commits.
        // Not in the outbox: no bytes counted against the backlog.
        change
            .deliveries
            .push((sub.queue.clone(), Delivery::new(nid, notification, 0)));
        // Nobody waits: a timer (or the delivery task) made this change.
        drop(self.submit(&state, change));
    }

    /// Delivery disabled the subscription (`410 Gone`, failing past the give-up age, backlog
    /// full; see `notify`): it stays, reads as `Disabled` with `reason`, and gets no new
    /// notifications; its queue buries what it holds as dead letters.
    fn disable_subscription(&self, id: &str, reason: &str) {
        let mut state = self.lock();
        let Some(sub) = state.subscriptions.get_mut(id) else {
            return;
        };
        if sub.rec.disabled.is_some() {
            return;
        }
        sub.rec.disabled = Some(state::Disabled {
            reason: reason.to_owned(),
            at_ms: now_ms(),
        });
        sub.queue.disable();
        let mut change = Change::default();
        change.put(
            Kind::Subscription,
            id.to_owned(),
            records::encode_subscription(&sub.rec),
        );
        // Nobody waits: the delivery task made this change.
        drop(self.submit(&state, change));
    }

    /// One page of the user's subscriptions, in creation order. The user's id list is in
    /// creation order and holds at most `max_subscriptions` entries, so skipping to the cursor
    /// walks it.
    pub fn list_subscriptions(&self, user: &str, req: PageRequest) -> ChatSubscriptionList {
        let state = self.lock();
        let entries = state
            .user_subscriptions
            .get(user)
            .into_iter()
            .flatten()
            .filter_map(|id| state.subscriptions.get(id))
            .map(|s| (s.rec.seq, s));
        let p = page::page(entries, req);
        let resource_url = self.urls.subscriptions(user);
        ChatSubscriptionList {
            chat_subscription: p
                .items
                .into_iter()
                .map(|s| self.subscription_view(&s.rec))
                .collect(),
            link: page::next_links(&resource_url, req, p.next),
            resource_url,
        }
    }

    /// One subscription of the user.
    pub fn get_subscription(&self, user: &str, id: &str) -> Result<ChatSubscription, ApiError> {
        let state = self.lock();
        match state.subscriptions.get(id) {
            Some(s) if s.rec.user == user => Ok(self.subscription_view(&s.rec)),
            _ => Err(missing(&self.urls.subscription(user, id))),
        }
    }

    /// Seed 7.1.1: unsubscribe. Nothing more is delivered to the callback.
    pub async fn delete_subscription(&self, user: &str, id: &str) -> Result<(), ApiError> {
        let rx = {
            let mut state = self.lock();
            match state.subscriptions.get(id) {
                Some(s) if s.rec.user == user => {}
                _ => return Err(missing(&self.urls.subscription(user, id))),
            }
            if let Some(sub) = remove_subscription(&mut state, id) {
                sub.queue.cancel();
            }
            let mut change = Change::default();
            change
                .batch
                .deletes
                .push((Kind::Subscription, id.to_owned()));
            self.submit(&state, change)
        };
        durable(rx).await
    }

    // ------------------------------------------------------------------ sessions

    fn visible<'a>(
        &self,
        state: &'a State,
        user: &str,
        sid: &str,
    ) -> Result<&'a Session, ApiError> {
        match state.sessions.get(sid) {
            Some(s) if !s.ended && s.participant(user).is_some_and(Participant::sees_session) => {
                Ok(s)
            }
            _ => Err(missing(&self.urls.session(user, sid))),
        }
    }

    fn visible_mut<'a>(
        &self,
        state: &'a mut State,
        user: &str,
        sid: &str,
    ) -> Result<&'a mut Session, ApiError> {
        match state.sessions.get_mut(sid) {
            Some(s) if !s.ended && s.participant(user).is_some_and(Participant::sees_session) => {
                Ok(s)
            }
            _ => Err(missing(&self.urls.session(user, sid))),
        }
    }

    /// A new pending invitation and its deadline (Unix ms).
    fn invitation(&self) -> (Invitation, i64) {
        let timeout =
            i64::try_from(self.settings.invitation_timeout.as_millis()).unwrap_or(i64::MAX / 2);
        let deadline_ms = now_ms().saturating_add(timeout);
        (
            Invitation::Pending {
                seq: next_invitation_seq(),
                deadline_ms,
            },
            deadline_ms,
        )
    }

    /// The inviter's quotas (see [`quota`]): refuses when `inviter` may not send invitations to
    /// `to` now, and otherwise counts them against its rate. Call under the lock, after every
    /// other check of the request, right before the invitations are made.
    fn spend_invitations(
        &self,
        state: &mut State,
        inviter: &str,
        to: &[&str],
    ) -> Result<(), ApiError> {
        let now = std::time::Instant::now();
        let (sent_recently, wait) = state.invitations_sent.recent(inviter, now);
        let sent = state.pending_sent(inviter);
        let out = quota::Outstanding {
            pending: sent.values().sum(),
            pending_to_one: to
                .iter()
                .map(|a| sent.get(a).copied().unwrap_or(0))
                .max()
                .unwrap_or(0),
            sent_recently,
        };
        match quota::decide(out, to.len(), self.settings.limits.invitations) {
            Ok(()) => {
                state.invitations_sent.record(inviter, to.len(), now);
                Ok(())
            }
            Err(quota::Refusal::Pending { limit }) => {
                Err(too_many("unanswered invitations you sent", limit))
            }
            Err(quota::Refusal::PendingToOne { limit }) => Err(too_many(
                "unanswered invitations you sent to one invitee",
                limit,
            )),
            Err(quota::Refusal::Rate { limit }) => Err(invitation_rate(limit, wait)),
        }
    }

    /// Seed 7.1.2 / 7.1.4: start a 1-1 or group chat; invites every listed participant.
    pub async fn create_session(
        self: &Arc<Self>,
        user: &str,
        body: ChatSessionInformation,
    ) -> Result<Created<ChatSessionInformation>, ApiError> {
        let mut invitees: Vec<ParticipantInformation> = Vec::new();
        let mut originator_name = body.originator_name.clone();
        for p in body.participant {
            if p.address == user {
                originator_name = originator_name.or(p.name);
                continue;
            }
            if invitees.iter().any(|q| q.address == p.address) {
                return Err(ApiError::policy(
                    "POL0013",
                    "Addresses duplication: %1 is listed more than once",
                    p.address,
                ));
            }
            invitees.push(p);
        }
        if invitees.is_empty() {
            return Err(ApiError::invalid_input(
                "participant: list at least one participant other than the originator",
            ));
        }
        if invitees.len() + 1 > self.settings.limits.participants_per_session {
            return Err(too_many_participants(
                self.settings.limits.participants_per_session,
            ));
        }
        let (id, view, timers, rx) = {
            let mut state = self.lock();
            if let Some(c) = &body.client_correlator
                && let Some(s) = state
                    .sessions
                    .values()
                    .find(|s| s.originator == user && s.client_correlator.as_deref() == Some(c))
            {
                let view = views::session(&self.urls, user, s);
                return Ok(Created {
                    location: self.urls.session(user, &s.id),
                    body: view,
                });
            }
            let limits = self.settings.limits;
            if state.open_sessions(user) >= limits.sessions_per_user {
                return Err(too_many(
                    "open sessions of this user",
                    limits.sessions_per_user,
                ));
            }
            let to: Vec<&str> = invitees.iter().map(|p| p.address.as_str()).collect();
            self.spend_invitations(&mut state, user, &to)?;
            let (id, seq) = state.new_id("sess");
            let mut participants = vec![Participant {
                address: user.to_owned(),
                name: originator_name.clone(),
                is_originator: true,
                status: ParticipantStatus::Connected,
                invitation: Invitation::None,
                invited_by: user.to_owned(),
            }];
            let mut timers = Vec::new();
            for p in invitees {
                let (invitation, deadline) = self.invitation();
                if let Invitation::Pending { seq, .. } = invitation {
                    timers.push((p.address.clone(), seq, deadline));
                }
                participants.push(Participant {
                    address: p.address,
                    name: p.name,
                    is_originator: false,
                    status: ParticipantStatus::Invited,
                    invitation,
                    invited_by: user.to_owned(),
                });
            }
            let session = Session {
                id: id.clone(),
                seq,
                subject: body.subject,
                originator: user.to_owned(),
                originator_name,
                client_correlator: body.client_correlator,
                group: participants.len() > 2,
                participants,
                ended: false,
            };
            let outbox: Outbox = session
                .participants
                .iter()
                .skip(1)
                .map(|p| {
                    (
                        p.address.clone(),
                        views::invitation(&self.urls, &p.address, &session),
                    )
                })
                .collect();
            for p in &session.participants {
                state
                    .user_sessions
                    .entry(p.address.clone())
                    .or_default()
                    .push(id.clone());
            }
            let view = views::session(&self.urls, user, &session);
            let mut change = Change::default();
            change.put_session(&session);
            state.sessions.insert(id.clone(), session);
            self.notify(&mut state, &mut change, outbox);
            (id, view, timers, self.submit(&state, change))
        };
        durable(rx).await?;
        for (address, seq, deadline) in timers {
            self.invitation_timer(id.clone(), address, seq, deadline);
        }
        Ok(Created {
            location: self.urls.session(user, &id),
            body: view,
        })
    }

    fn invitation_timer(
        self: &Arc<Self>,
        sid: String,
        address: String,
        seq: u64,
        deadline_ms: i64,
    ) {
        let chat = Arc::downgrade(self);
        let wait = Duration::from_millis(u64::try_from(deadline_ms - now_ms()).unwrap_or(0));
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            if let Some(chat) = chat.upgrade() {
                chat.invitation_timed_out(&sid, &address, seq);
            }
        });
    }

    /// Seed 7.1.7 c: nobody answered the invitation in time. The invitee's status becomes
    /// `Disconnected`, the session disappears for it, the inviter and the invitee get a
    /// `Timeout` event and the other connected participants a status notification. A 1-1
    /// session whose only invitation timed out ends.
    fn invitation_timed_out(&self, sid: &str, address: &str, seq: u64) {
        let mut state = self.lock();
        let urls = &self.urls;
        let Some(s) = state.sessions.get_mut(sid) else {
            return;
        };
        let Some(p) = s.participant_mut(address) else {
            return;
        };
        if !matches!(p.invitation, Invitation::Pending { seq: current, .. } if current == seq) {
            return;
        }
        p.invitation = Invitation::TimedOut;
        p.status = ParticipantStatus::Disconnected;
        let inviter = p.invited_by.clone();
        let text = format!("the invitation of {address} was not answered in time");
        let mut outbox = vec![
            (
                inviter.clone(),
                views::event(urls, &inviter, s, EventType::Timeout, text.clone()),
            ),
            (
                address.to_owned(),
                views::event(urls, address, s, EventType::Timeout, text),
            ),
        ];
        outbox.extend(invitation_gone(
            urls,
            s,
            address,
            &inviter,
            "the only invitation timed out",
        ));
        let mut change = Change::default();
        put_or_release(&mut state, &mut change, sid);
        self.notify(&mut state, &mut change, outbox);
        // Nobody waits: a timer (or the delivery task) made this change.
        drop(self.submit(&state, change));
    }

    /// One page of the sessions the user takes part in, in the sessions' creation order.
    ///
    /// The user's id list is in the order the user joined, not the order the sessions were
    /// created (an invitation into an older session is appended), so the page is picked from
    /// references sorted by `seq`; only the page's sessions are turned into views. The list is
    /// bounded by the per-user session and invitation limits (ended sessions leave it).
    pub fn list_sessions(&self, user: &str, req: PageRequest) -> ChatSessionList {
        let state = self.lock();
        let mut sessions: Vec<&Session> = state
            .user_sessions
            .get(user)
            .into_iter()
            .flatten()
            .filter_map(|id| state.sessions.get(id))
            .filter(|s| req.after.is_none_or(|after| s.seq > after))
            .filter(|s| s.participant(user).is_some_and(Participant::sees_session))
            .collect();
        sessions.sort_unstable_by_key(|s| s.seq);
        let p = page::page(sessions.into_iter().map(|s| (s.seq, s)), req);
        let resource_url = self.urls.sessions(user);
        ChatSessionList {
            chat_session_information: p
                .items
                .into_iter()
                .map(|s| views::session(&self.urls, user, s))
                .collect(),
            link: page::next_links(&resource_url, req, p.next),
            resource_url,
        }
    }

    /// One session the user takes part in.
    pub fn get_session(&self, user: &str, sid: &str) -> Result<ChatSessionInformation, ApiError> {
        let state = self.lock();
        let s = self.visible(&state, user, sid)?;
        Ok(views::session(&self.urls, user, s))
    }

    /// Seed 7.1.5: the originator ends the session for everyone. Every participant still in
    /// it is told, the originator included (the seed's figure notifies the ending application
    /// too), and the session is gone at once for all of them (404 on it and every
    /// sub-resource): "delete the resource", as the seed says.
    pub async fn end_session(&self, user: &str, sid: &str) -> Result<(), ApiError> {
        let rx = {
            let mut state = self.lock();
            let urls = &self.urls;
            let s = self.visible_mut(&mut state, user, sid)?;
            if s.originator != user {
                return Err(ApiError::forbidden(
                    "only the originator can end a session; leave it by POSTing status Disconnected to your participant status",
                ));
            }
            s.ended = true;
            let outbox = end_for_all(urls, s, "the originator ended the session", None);
            let mut change = Change::default();
            put_or_release(&mut state, &mut change, sid);
            self.notify(&mut state, &mut change, outbox);
            self.submit(&state, change)
        };
        durable(rx).await
    }

    /// One page of the session's participants: the originator first, then in invitation
    /// order. A participant's position is its place in the session (1 for the originator);
    /// participants are never removed from a session, so a position always names the same one.
    pub fn list_participants(
        &self,
        user: &str,
        sid: &str,
        req: PageRequest,
    ) -> Result<ParticipantList, ApiError> {
        let state = self.lock();
        let s = self.visible(&state, user, sid)?;
        let entries = (1u64..).zip(&s.participants);
        let p = page::page(entries, req);
        let resource_url = self.urls.participants(user, sid);
        Ok(ParticipantList {
            participant: p
                .items
                .into_iter()
                .map(|p| views::participant(&self.urls, user, s, p))
                .collect(),
            link: page::next_links(&resource_url, req, p.next),
            resource_url: Some(resource_url),
        })
    }

    /// Seed 7.1.3: invite more participants (a 1-1 session becomes a group session).
    pub async fn add_participants(
        self: &Arc<Self>,
        user: &str,
        sid: &str,
        body: ParticipantList,
    ) -> Result<Created<ParticipantList>, ApiError> {
        let (list, timers, rx) = {
            let mut state = self.lock();
            let urls = &self.urls;
            // Every check reads first (so that a stranger gets the same 404 as for a missing
            // session, before any limit can tell it something), then the session changes.
            let limits = self.settings.limits;
            {
                let s = self.visible(&state, user, sid)?;
                if s.participant(user).map(|p| p.status) != Some(ParticipantStatus::Connected) {
                    return Err(ApiError::forbidden(
                        "only a connected participant can invite others; accept or re-join first",
                    ));
                }
                for (i, p) in body.participant.iter().enumerate() {
                    if s.participant(&p.address).is_some()
                        || body.participant[..i].iter().any(|q| q.address == p.address)
                    {
                        return Err(ApiError::conflict(format!(
                            "{} is already a participant of session {sid}",
                            p.address
                        )));
                    }
                }
                if s.participants.len() + body.participant.len() > limits.participants_per_session {
                    return Err(too_many_participants(limits.participants_per_session));
                }
            }
            let to: Vec<&str> = body
                .participant
                .iter()
                .map(|p| p.address.as_str())
                .collect();
            self.spend_invitations(&mut state, user, &to)?;
            let s = self.visible_mut(&mut state, user, sid)?;
            let new = body.participant;
            let mut timers = Vec::new();
            for p in new {
                let (invitation, deadline) = self.invitation();
                if let Invitation::Pending { seq, .. } = invitation {
                    timers.push((p.address.clone(), seq, deadline));
                }
                s.participants.push(Participant {
                    address: p.address,
                    name: p.name,
                    is_originator: false,
                    status: ParticipantStatus::Invited,
                    invitation,
                    invited_by: user.to_owned(),
                });
            }
            s.group = true;
            let mut outbox: Outbox = timers
                .iter()
                .map(|(a, _, _)| (a.clone(), views::invitation(urls, a, s)))
                .collect();
            // The connected participants other than the inviter learn who was invited.
            let invited: Vec<&Participant> = timers
                .iter()
                .filter_map(|(a, _, _)| s.participant(a))
                .collect();
            for other in s.connected_others(user) {
                outbox.push((
                    other.clone(),
                    views::participant_status(urls, &other, s, &invited),
                ));
            }
            let list = ParticipantList {
                participant: s
                    .participants
                    .iter()
                    .map(|p| views::participant(urls, user, s, p))
                    .collect(),
                resource_url: Some(urls.participants(user, sid)),
                // The answer to an invitation lists the whole session, which the participant
                // limit bounds; it is not a page of the list operation.
                link: Vec::new(),
            };
            let mut change = Change::default();
            change.put_session(s);
            for (a, _, _) in &timers {
                state
                    .user_sessions
                    .entry(a.clone())
                    .or_default()
                    .push(sid.to_owned());
            }
            self.notify(&mut state, &mut change, outbox);
            (list, timers, self.submit(&state, change))
        };
        durable(rx).await?;
        for (address, seq, deadline) in timers {
            self.invitation_timer(sid.to_owned(), address, seq, deadline);
        }
        Ok(Created {
            location: self.urls.participants(user, sid),
            body: list,
        })
    }

    /// One participant.
    pub fn get_participant(
        &self,
        user: &str,
        sid: &str,
        pid: &str,
    ) -> Result<ParticipantInformation, ApiError> {
        let state = self.lock();
        let s = self.visible(&state, user, sid)?;
        let p = s
            .participant(pid)
            .ok_or_else(|| missing(&self.urls.participant(user, sid, pid)))?;
        Ok(views::participant(&self.urls, user, s, p))
    }

    /// Seed 7.1.6: the inviter withdraws an unanswered invitation.
    pub async fn cancel_invitation(
        &self,
        user: &str,
        sid: &str,
        pid: &str,
    ) -> Result<(), ApiError> {
        let rx = {
            let mut state = self.lock();
            let urls = &self.urls;
            let s = self.visible_mut(&mut state, user, sid)?;
            let p = s
                .participant(pid)
                .ok_or_else(|| missing(&urls.participant(user, sid, pid)))?;
            if !p.invitation.is_pending() {
                return Err(ApiError::conflict(format!(
                    "the invitation of {pid} is not pending any more; only an unanswered invitation can be cancelled"
                )));
            }
            if p.invited_by != user {
                return Err(ApiError::forbidden(format!(
                    "only {}, who invited {pid}, can cancel the invitation",
                    p.invited_by
                )));
            }
            if let Some(p) = s.participant_mut(pid) {
                p.invitation = Invitation::Cancelled;
                p.status = ParticipantStatus::Disconnected;
            }
            let mut outbox = vec![(
                pid.to_owned(),
                views::event(
                    urls,
                    pid,
                    s,
                    EventType::SessionCancelled,
                    format!("{user} withdrew the invitation"),
                ),
            )];
            outbox.extend(invitation_gone(
                urls,
                s,
                pid,
                user,
                "the only invitation was cancelled",
            ));
            let mut change = Change::default();
            put_or_release(&mut state, &mut change, sid);
            self.notify(&mut state, &mut change, outbox);
            self.submit(&state, change)
        };
        durable(rx).await
    }

    /// A participant's status.
    pub fn get_participant_status(
        &self,
        user: &str,
        sid: &str,
        pid: &str,
    ) -> Result<ParticipantSessionStatus, ApiError> {
        let state = self.lock();
        let s = self.visible(&state, user, sid)?;
        let p = s
            .participant(pid)
            .ok_or_else(|| missing(&self.urls.participant_status(user, sid, pid)))?;
        Ok(ParticipantSessionStatus { status: p.status })
    }

    /// Seed 7.1.7 (accept / decline) and 7.1.8 (leave / re-join): the participant sets its
    /// own status.
    pub async fn update_participant_status(
        &self,
        user: &str,
        sid: &str,
        pid: &str,
        wanted: ParticipantStatus,
    ) -> Result<ParticipantSessionStatus, ApiError> {
        let rx = {
            let mut state = self.lock();
            let connected_now = state.open_sessions(user);
            let urls = &self.urls;
            let s = self.visible_mut(&mut state, user, sid)?;
            let p = s
                .participant(pid)
                .ok_or_else(|| missing(&urls.participant_status(user, sid, pid)))?;
            if pid != user {
                return Err(ApiError::forbidden(format!(
                    "{user} can only change its own status, not that of {pid}"
                )));
            }
            let (next_invitation, event) = match (wanted, p.invitation, p.status) {
                (ParticipantStatus::Invited, ..) => {
                    return Err(ApiError::invalid_input(
                        "status: Invited is set by the server; send Connected or Disconnected",
                    ));
                }
                (s2, _, current) if s2 == current => {
                    return Err(ApiError::conflict(format!("{pid} is already {current}")));
                }
                (ParticipantStatus::Connected, Invitation::Pending { .. }, _) => {
                    (Invitation::Accepted, Some(EventType::Accepted))
                }
                (ParticipantStatus::Disconnected, Invitation::Pending { .. }, _) => {
                    (Invitation::Declined, Some(EventType::Declined))
                }
                (ParticipantStatus::Connected, Invitation::Declined, _) => {
                    return Err(ApiError::conflict(format!(
                        "{pid} declined the invitation to session {sid}; ask to be invited again"
                    )));
                }
                (_, inv, _) => (inv, None),
            };
            let is_decline = event == Some(EventType::Declined);
            // Accepting or re-joining makes one more open session for this user (it is not
            // connected here yet: that was refused above).
            let limit = self.settings.limits.sessions_per_user;
            if wanted == ParticipantStatus::Connected && connected_now >= limit {
                return Err(too_many("open sessions of this user", limit));
            }
            if let Some(p) = s.participant_mut(pid) {
                p.status = wanted;
                p.invitation = next_invitation;
            }
            let mut outbox = Outbox::new();
            if let Some(p) = s.participant(pid) {
                let mut told = s.connected_others(pid);
                if event.is_some() && !told.contains(&p.invited_by) && p.invited_by != pid {
                    told.push(p.invited_by.clone());
                }
                for other in told {
                    outbox.push((
                        other.clone(),
                        views::participant_status(urls, &other, s, &[p]),
                    ));
                }
            }
            if is_decline && !s.group {
                s.ended = true;
                outbox.extend(end_for_all(
                    urls,
                    s,
                    "the invitation was declined",
                    Some(pid),
                ));
            }
            let mut change = Change::default();
            put_or_release(&mut state, &mut change, sid);
            self.notify(&mut state, &mut change, outbox);
            self.submit(&state, change)
        };
        durable(rx).await?;
        Ok(ParticipantSessionStatus { status: wanted })
    }

    // ------------------------------------------------------------------ messages
    //
    // Messages live in the store, not in memory (issue 12): memory does not grow with
    // messages sent. A read checks the session under the state lock (it is in memory), lets
    // go of the lock, then reads the message(s) through the store thread, so that nobody
    // waits for another user's read. The store queue is FIFO, so a read sees every change
    // submitted before it: a message is readable as soon as its send was answered.

    /// Runs a read on the store thread. Never called with the state lock held.
    async fn read<T, F>(&self, read: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn Backend) -> Result<T, StoreError> + Send + 'static,
    {
        match self.store.read(read).await {
            Ok(Ok(t)) => Ok(t),
            Ok(Err(e)) => {
                error!(self.log, "reading the store failed"; "error" => e);
                Err(read_failed())
            }
            // The store stopped (fail-stop after a failed commit, or shutdown).
            Err(_) => Err(storage_failed()),
        }
    }

    /// Message `mid` of session `sid`, from the store.
    async fn stored_message(&self, sid: &str, mid: &str) -> Result<Option<Message>, ApiError> {
        let (sid, mid) = (sid.to_owned(), mid.to_owned());
        self.read(move |b| {
            b.message(&sid, &mid)?
                .map(|v| decode_stored_message(&sid, &mid, &v))
                .transpose()
        })
        .await
    }

    /// The lock that orders the read-modify-write steps on the messages of `sid` (see
    /// [`Chat::message_locks`]).
    fn message_lock(&self, sid: &str) -> &tokio::sync::Mutex<()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        sid.hash(&mut h);
        let i = usize::try_from(h.finish() % MESSAGE_LOCKS as u64).unwrap_or(0);
        &self.message_locks[i]
    }

    /// Seed 7.1.9: send a message to the other connected participants.
    pub async fn send_message(
        &self,
        user: &str,
        sid: &str,
        body: ChatMessage,
    ) -> Result<Created<ResourceReference>, ApiError> {
        let limit = self.settings.limits.text_chars;
        let chars = body.text.chars().count();
        if chars > limit {
            return Err(ApiError::invalid_input(format!(
                "text: {chars} characters, at most {limit} are allowed"
            )));
        }
        // A resend with the same clientCorrelator answers the first message. The lookup and
        // the send it may lead to hold the session's message lock, so two concurrent sends
        // with one correlator cannot both miss and both create a message.
        let _ordered = match &body.client_correlator {
            Some(_) => Some(self.message_lock(sid).lock().await),
            None => None,
        };
        let replay = match &body.client_correlator {
            Some(c) => {
                self.visible(&self.lock(), user, sid)?;
                let (s, u, c) = (sid.to_owned(), user.to_owned(), c.clone());
                self.read(move |b| b.message_by_correlator(&s, &u, &c))
                    .await?
            }
            None => None,
        };
        let (url, rx) = {
            let mut state = self.lock();
            let (id, seq) = state.new_id("msg");
            let urls = &self.urls;
            let s = self.visible_mut(&mut state, user, sid)?;
            if let Some(mid) = replay {
                let url = urls.message(user, sid, &mid);
                return Ok(Created {
                    location: url.clone(),
                    body: ResourceReference { resource_url: url },
                });
            }
            let me = s.participant(user).map(|p| (p.status, p.name.clone()));
            match me {
                Some((ParticipantStatus::Connected, _)) => {}
                Some((ParticipantStatus::Invited, _)) => {
                    return Err(ApiError::policy(
                        "POL1012",
                        "Messages during session setup are not supported: %1",
                        "accept the invitation (status Connected) before sending",
                    ));
                }
                _ => {
                    return Err(ApiError::conflict(format!(
                        "{user} has left session {sid}; re-join (status Connected) to send"
                    )));
                }
            }
            let recipients = s.connected_others(user);
            if recipients.is_empty() {
                return Err(ApiError::policy(
                    "POL1012",
                    "Messages during session setup are not supported: %1",
                    "no other participant has joined the session yet",
                ));
            }
            let sender_name = me.and_then(|(_, n)| n);
            let message = Message {
                id: id.clone(),
                seq,
                sender: user.to_owned(),
                text: body.text,
                date_time: crate::time::now_rfc3339(),
                report_delivered: body.success_report == Some(true)
                    || body.report_request.contains(&MessageStatus::Delivered),
                report_displayed: body.report_request.contains(&MessageStatus::Displayed),
                client_correlator: body.client_correlator,
                recipients: recipients
                    .iter()
                    .map(|r| (r.clone(), MessageStatus::Sent))
                    .collect(),
            };
            let outbox: Outbox = recipients
                .iter()
                .map(|r| {
                    (
                        r.clone(),
                        views::message_notification(urls, r, s, &message, sender_name.clone()),
                    )
                })
                .collect();
            let mut change = Change::default();
            change.put_message(sid, &message);
            self.notify(&mut state, &mut change, outbox);
            (urls.message(user, sid, &id), self.submit(&state, change))
        };
        durable(rx).await?;
        Ok(Created {
            location: url.clone(),
            body: ResourceReference { resource_url: url },
        })
    }

    /// Message `mid` as `user` may read it: in a session the user sees, sent or received by
    /// the user; 404 otherwise.
    async fn readable(&self, user: &str, sid: &str, mid: &str) -> Result<Message, ApiError> {
        self.visible(&self.lock(), user, sid)?;
        self.stored_message(sid, mid)
            .await?
            .filter(|m| m.sender == user || m.recipients.iter().any(|(r, _)| r == user))
            .ok_or_else(|| missing(&self.urls.message(user, sid, mid)))
    }

    /// One page of the messages the user sent or received in the session, oldest first.
    /// The store walks the session's messages in `seq` order from the cursor (an index range,
    /// not the whole session), on the store thread, until it has the page's messages that the
    /// user may read plus one, to know whether more follow; only those become views.
    pub async fn list_messages(
        &self,
        user: &str,
        sid: &str,
        req: PageRequest,
    ) -> Result<ChatMessageList, ApiError> {
        self.visible(&self.lock(), user, sid)?;
        let (s, u) = (sid.to_owned(), user.to_owned());
        let found = self
            .read(move |b| readable_page(b, &s, &u, req.after, req.limit.saturating_add(1)))
            .await?;
        let p = page::page(found.into_iter().map(|m| (m.seq, m)), req);
        let resource_url = self.urls.messages(user, sid);
        Ok(ChatMessageList {
            chat_message: p
                .items
                .iter()
                .map(|m| views::message(&self.urls, user, sid, m))
                .collect(),
            link: page::next_links(&resource_url, req, p.next),
            resource_url,
        })
    }

    /// One message.
    pub async fn get_message(
        &self,
        user: &str,
        sid: &str,
        mid: &str,
    ) -> Result<ChatMessage, ApiError> {
        let m = self.readable(user, sid, mid).await?;
        Ok(views::message(&self.urls, user, sid, &m))
    }

    /// A message's delivery status as the user sees it.
    pub async fn get_message_status(
        &self,
        user: &str,
        sid: &str,
        mid: &str,
    ) -> Result<MessageStatus, ApiError> {
        let m = self.readable(user, sid, mid).await?;
        views::delivery_status(user, &m)
            .ok_or_else(|| missing(&self.urls.message_status(user, sid, mid)))
    }

    /// Seed 7.1.10: a recipient confirms delivery (or display) of a message.
    ///
    /// Read, decide, write: the message is read from the store, [`confirm`] decides, and the
    /// new state is submitted, all under the session's message lock, so that two recipients
    /// confirming at once cannot overwrite each other's status (the second reads what the
    /// first submitted: the store queue is FIFO). A lock and not an update job on the store
    /// thread because the change also needs the core's state (the sender's subscriptions, the
    /// notification counter), which must be taken under the state lock to keep commit order
    /// state order.
    pub async fn confirm_delivery(
        &self,
        user: &str,
        sid: &str,
        mid: &str,
        status: MessageStatus,
    ) -> Result<(), ApiError> {
        if !matches!(status, MessageStatus::Delivered | MessageStatus::Displayed) {
            return Err(ApiError::invalid_input(format!(
                "status: {status} is set by the server; confirm Delivered or Displayed"
            )));
        }
        let urls = &self.urls;
        let rx = {
            let _ordered = self.message_lock(sid).lock().await;
            self.visible(&self.lock(), user, sid)?;
            let m = self
                .stored_message(sid, mid)
                .await?
                .ok_or_else(|| missing(&urls.message(user, sid, mid)))?;
            let confirmed = confirm(&m, user, status).map_err(|refused| match refused {
                Refused::NotFound => missing(&urls.message(user, sid, mid)),
                Refused::Sender => ApiError::forbidden(
                    "only a recipient can confirm delivery; the sender reads the status with GET",
                ),
                Refused::Already(was) => {
                    ApiError::conflict(format!("message {mid} is already {was} for {user}"))
                }
            })?;
            let mut state = self.lock();
            // The session may have ended while the message was read.
            self.visible(&state, user, sid)?;
            let m = &confirmed.message;
            let outbox: Outbox = confirmed
                .reports
                .into_iter()
                .map(|st| (m.sender.clone(), views::delivery(urls, sid, m, user, st)))
                .collect();
            let mut change = Change::default();
            change.put_message(sid, m);
            self.notify(&mut state, &mut change, outbox);
            self.submit(&state, change)
        };
        durable(rx).await
    }
}

/// Reads a stored message; an unreadable one is a storage error naming it.
fn decode_stored_message(sid: &str, mid: &str, value: &[u8]) -> Result<Message, StoreError> {
    records::decode_message(value)
        .map_err(|e| StoreError(format!("stored message `{sid}/{mid}` is unreadable: {e}")))
}

/// Rows the page walk reads from the store at a time.
const PAGE_CHUNK: usize = 128;

/// Up to `want` messages of `sid` after `after` that `user` sent or received, in seq order
/// (runs on the store thread). Walks the session's index from the cursor in chunks, so the
/// cost follows the page, plus the messages skipped because the user was not a recipient
/// (those before it joined).
fn readable_page(
    b: &mut dyn Backend,
    sid: &str,
    user: &str,
    after: Option<u64>,
    want: usize,
) -> Result<Vec<Message>, StoreError> {
    let mut found = Vec::new();
    let mut cursor = after;
    loop {
        let chunk = b.messages_after(sid, cursor, PAGE_CHUNK.max(want))?;
        let full = chunk.len() >= PAGE_CHUNK.max(want);
        for (seq, value) in chunk {
            cursor = Some(seq);
            let m = decode_stored_message(sid, &format!("seq {seq}"), &value)?;
            if m.sender == user || m.recipients.iter().any(|(r, _)| r == user) {
                found.push(m);
                if found.len() >= want {
                    return Ok(found);
                }
            }
        }
        if !full {
            return Ok(found);
        }
    }
}

/// Why a confirmation is refused (see [`confirm`]).
#[derive(Debug, PartialEq, Eq)]
enum Refused {
    /// The user neither sent nor received the message.
    NotFound,
    /// The sender cannot confirm its own message.
    Sender,
    /// The user's status is already this one or further along.
    Already(MessageStatus),
}

/// A confirmation accepted: the message's new state, and the delivery reports the sender
/// asked for that it triggers.
#[derive(Debug)]
struct Confirmed {
    message: Message,
    reports: Vec<MessageStatus>,
}

/// Seed 7.1.10, the rule: `user` confirms `status` for message `m`. Only a recipient may
/// confirm; a status only moves forward; the sender is told `Displayed` when it asked for it,
/// and otherwise `Delivered` when it asked for that and this is the first confirmation from
/// this recipient. Changes only this recipient's entry.
fn confirm(m: &Message, user: &str, status: MessageStatus) -> Result<Confirmed, Refused> {
    if m.sender == user {
        return Err(Refused::Sender);
    }
    let mut message = m.clone();
    let Some(entry) = message.recipients.iter_mut().find(|(r, _)| r == user) else {
        return Err(Refused::NotFound);
    };
    if status_rank(status) <= status_rank(entry.1) {
        return Err(Refused::Already(entry.1));
    }
    let was = entry.1;
    entry.1 = status;
    let mut reports = Vec::new();
    if status == MessageStatus::Displayed && message.report_displayed {
        reports.push(MessageStatus::Displayed);
    } else if message.report_delivered && was == MessageStatus::Sent {
        reports.push(MessageStatus::Delivered);
    }
    Ok(Confirmed { message, reports })
}

/// A number no other invitation has: tells a timer whether its invitation is still the
/// participant's current one.
fn next_invitation_seq() -> u64 {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    // Start from the clock so numbers stay unique across restarts too.
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(|| u64::try_from(now_ms()).unwrap_or(0) << 16);
    base + SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// `429 POL2005` with `Retry-After`: the inviter sent its invitations of the minute.
fn invitation_rate(limit: usize, wait: Duration) -> ApiError {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let secs = secs.max(1);
    let mut e = ApiError::policy(
        "POL2005",
        "Maximum number of requests exceeded: %1 invitations a minute; retry after %2 s",
        limit.to_string(),
    );
    e.variables.push(secs.to_string());
    e.status = http::StatusCode::TOO_MANY_REQUESTS;
    if let Ok(v) = http::HeaderValue::from_str(&secs.to_string()) {
        e.headers.push((http::header::RETRY_AFTER, v));
    }
    e
}

fn too_many_participants(limit: usize) -> ApiError {
    ApiError::policy(
        "POL1017",
        "Too many participants: at most %1 per session",
        limit.to_string(),
    )
}

/// Records the session's new state in the change, or, once it has ended, releases it: an
/// ended session is gone (404 for everyone, on it and on every sub-resource), so its memory,
/// its index entries and its stored record and messages go in the same change. Notifications
/// about it must already be in the outbox being built (they are self-contained documents).
fn put_or_release(state: &mut State, change: &mut Change, sid: &str) {
    match state.sessions.get(sid) {
        Some(s) if s.ended => {
            release_session(state, sid);
            change.batch.deletes.push((Kind::Session, sid.to_owned()));
        }
        Some(s) => change.put_session(s),
        None => {}
    }
}

/// Forgets a session in memory: the session, its messages and its entries in the per-user
/// index (a user left with no session loses its entry too, so memory follows live sessions).
fn release_session(state: &mut State, sid: &str) {
    let Some(s) = state.sessions.remove(sid) else {
        return;
    };
    for p in &s.participants {
        if let Some(ids) = state.user_sessions.get_mut(&p.address) {
            ids.retain(|i| i != sid);
            if ids.is_empty() {
                state.user_sessions.remove(&p.address);
            }
        }
    }
}

fn remove_subscription(state: &mut State, id: &str) -> Option<Subscription> {
    let sub = state.subscriptions.remove(id)?;
    if let Some(ids) = state.user_subscriptions.get_mut(&sub.rec.user) {
        ids.retain(|i| i != id);
        if ids.is_empty() {
            state.user_subscriptions.remove(&sub.rec.user);
        }
    }
    Some(sub)
}

/// An invitation that ended unanswered (timed out or cancelled): the connected participants
/// other than the inviter (who is told otherwise) see the invitee `Disconnected`, and a 1-1
/// session, whose only invitation this was, ends.
fn invitation_gone(
    urls: &Urls,
    s: &mut Session,
    invitee: &str,
    inviter: &str,
    why: &str,
) -> Outbox {
    let mut outbox = Outbox::new();
    if let Some(p) = s.participant(invitee) {
        for other in s
            .connected_others(invitee)
            .into_iter()
            .filter(|o| o != inviter)
        {
            outbox.push((
                other.clone(),
                views::participant_status(urls, &other, s, &[p]),
            ));
        }
    }
    if !s.group && !s.ended {
        s.ended = true;
        outbox.extend(end_for_all(urls, s, why, Some(inviter)));
    }
    outbox
}

/// Ends a session for everyone still in it except `by` (who is told otherwise, when it is
/// given): connected participants get `SessionEnded`, pending invitees `SessionCancelled`;
/// every status becomes `Disconnected`.
fn end_for_all(urls: &Urls, s: &mut Session, why: &str, by: Option<&str>) -> Outbox {
    let mut outbox = Outbox::new();
    let sid = s.id.clone();
    let mut tell = Vec::new();
    for p in s.participants.iter_mut() {
        let event = match (p.status, p.invitation) {
            (_, Invitation::Pending { .. }) => Some(EventType::SessionCancelled),
            (ParticipantStatus::Connected, _) => Some(EventType::SessionEnded),
            _ => None,
        };
        if p.invitation.is_pending() {
            p.invitation = Invitation::Cancelled;
        }
        p.status = ParticipantStatus::Disconnected;
        if let Some(e) = event
            && by != Some(p.address.as_str())
        {
            tell.push((p.address.clone(), e));
        }
    }
    for (address, e) in tell {
        outbox.push((
            address.clone(),
            views::event(urls, &address, s, e, format!("session {sid}: {why}")),
        ));
    }
    outbox
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(report_delivered: bool, report_displayed: bool) -> Message {
        Message {
            id: "msg-1".into(),
            seq: 1,
            sender: "tel:+1".into(),
            text: "hi".into(),
            date_time: "2026-12-03T00:00:00Z".into(),
            report_delivered,
            report_displayed,
            client_correlator: None,
            recipients: vec![
                ("tel:+2".into(), MessageStatus::Sent),
                ("tel:+3".into(), MessageStatus::Sent),
            ],
        }
    }

    fn status(m: &Message, who: &str) -> MessageStatus {
        m.recipients
            .iter()
            .find(|(r, _)| r == who)
            .map(|(_, s)| *s)
            .unwrap()
    }

    /// Only the confirming recipient's entry changes; the sender gets the reports it asked for.
    #[test]
    fn a_confirmation_changes_only_its_recipient() {
        let m = message(true, true);
        let c = confirm(&m, "tel:+2", MessageStatus::Delivered).unwrap();
        assert_eq!(status(&c.message, "tel:+2"), MessageStatus::Delivered);
        assert_eq!(status(&c.message, "tel:+3"), MessageStatus::Sent);
        assert_eq!(c.reports, [MessageStatus::Delivered]);
        // The next confirmation starts from the state the first one left (what the message
        // lock guarantees): both survive.
        let c2 = confirm(&c.message, "tel:+3", MessageStatus::Displayed).unwrap();
        assert_eq!(status(&c2.message, "tel:+2"), MessageStatus::Delivered);
        assert_eq!(status(&c2.message, "tel:+3"), MessageStatus::Displayed);
        assert_eq!(c2.reports, [MessageStatus::Displayed]);
        // Displayed after Delivered reports Displayed only when asked; Delivered is not repeated.
        let c3 = confirm(&c.message, "tel:+2", MessageStatus::Displayed).unwrap();
        assert_eq!(c3.reports, [MessageStatus::Displayed]);
        let quiet = confirm(&message(true, false), "tel:+2", MessageStatus::Delivered).unwrap();
        let later = confirm(&quiet.message, "tel:+2", MessageStatus::Displayed).unwrap();
        assert_eq!(later.reports, []);
        // Displayed straight from Sent, with only Delivered asked for: Delivered is reported.
        let skip = confirm(&message(true, false), "tel:+2", MessageStatus::Displayed).unwrap();
        assert_eq!(skip.reports, [MessageStatus::Delivered]);
        assert_eq!(
            confirm(&message(false, false), "tel:+2", MessageStatus::Displayed)
                .unwrap()
                .reports,
            []
        );
    }

    #[test]
    fn a_confirmation_is_refused_for_the_sender_strangers_and_backwards() {
        let m = message(true, true);
        assert_eq!(
            confirm(&m, "tel:+1", MessageStatus::Delivered).unwrap_err(),
            Refused::Sender
        );
        assert_eq!(
            confirm(&m, "tel:+9", MessageStatus::Delivered).unwrap_err(),
            Refused::NotFound
        );
        let shown = confirm(&m, "tel:+2", MessageStatus::Displayed)
            .unwrap()
            .message;
        for again in [MessageStatus::Delivered, MessageStatus::Displayed] {
            assert_eq!(
                confirm(&shown, "tel:+2", again).unwrap_err(),
                Refused::Already(MessageStatus::Displayed)
            );
        }
    }
}
