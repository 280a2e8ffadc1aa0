//! Seed 7.1.1: subscriptions (subscribe, list, read, unsubscribe), their expiry, and their
//! delivery disabled when a callback answers `410` or `404`.
//!
//! Owns `State::subscriptions` and `State::user_subscriptions`, and each subscription's delivery
//! [`Queue`]: a subscription exists in memory exactly as long as its queue runs, so attaching and
//! removing go through [`Chat::attach_subscription`] and [`remove_subscription`] only.
//!
//! Rules (plain functions, tested below): [`granted_duration`], [`may_subscribe`],
//! [`expiry_notice`].

use super::page::{self, PageRequest};
use super::records;
use super::refused::Refused;
use super::secrets;
use super::state::{self, Face, State, Subscription, SubscriptionRecord};
use super::{Change, Chat, MAX_SUBSCRIPTION_SECS, durable, missing};
use crate::callback_guard::{NOT_ALLOWED, check_url, resolve_checked};
use crate::logsafe::{Callback, Escaped};
use crate::notify::{Delivery, Notification, Queue, Target};
use crate::store::{Kind, OutboxEntry, Progress, now_ms};

/// How long an expired subscription's backlog and then its
/// `subscriptionCancellationNotification` are tried: a minute, then dropped. They go to a
/// callback for a subscription that is gone, so they are not worth the give-up age's retries
/// (a day), for which each expired subscription's queue, task and record would stay. Its
/// record and outbox rows stay for that minute at most ([`SubscriptionRecord::expired_until_ms`]),
/// so a restart or a takeover within it still delivers them; they go sooner once its callback
/// task has returned ([`Chat::expired_record_timer`]).
pub(super) const EXPIRY_NOTICE_WITHIN_MS: i64 = 60_000;

use crate::urls::Urls;
use netapi_chat_api::{
    CallbackReference, ChatSubscription, ChatSubscriptionList, Created, Link, NotificationFormat,
    ServiceException, SubscriptionCancellationNotification, SubscriptionStatus,
};
use netapi_chat_runtime::{ApiError, Format};
use std::sync::Arc;
use std::time::Duration;

impl Chat {
    /// The subscription as its owner reads it (the face's document, its link, its state).
    pub(super) fn subscription_view(&self, rec: &SubscriptionRecord) -> ChatSubscription {
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

    /// Puts a subscription (made, or restored) into the working state with its running
    /// delivery queue: into its channel's mailbox when its callback is a channel's, disabled
    /// when its record says so. The caller arms its expiry (`expiry_timer`).
    pub(super) fn attach_subscription(&self, state: &mut State, rec: SubscriptionRecord) {
        let queue = self.start_queue(state, &rec);
        state
            .owners
            .count(rec.owner.as_deref(), super::Held::Subscriptions, true);
        state
            .user_subscriptions
            .entry(rec.user.clone())
            .or_default()
            .push(rec.id.clone());
        // The caller starts the expiry task of a subscription that expires (`expiry_timer`).
        state.subscriptions.insert(
            rec.id.clone(),
            Subscription {
                rec,
                queue,
                timer: None,
            },
        );
    }

    /// Starts the delivery queue of subscription `rec` (made, restored, or restored expired):
    /// into its channel's mailbox when its callback is a channel's, disabled when its record
    /// says so, telling the OMA 2012 face's delivery reports, signing with its own secrets.
    pub(super) fn start_queue(&self, state: &State, rec: &SubscriptionRecord) -> Queue {
        let format = match rec.callback.notification_format {
            Some(NotificationFormat::Xml) => Format::Xml,
            _ => Format::Json,
        };
        let target = Target {
            notify_url: rec.callback.notify_url.clone(),
            format,
            subscription: rec.id.clone(),
        };
        // A channel's callbackURL: its notifications wait in the channel (see `channels`).
        let channel = fed_channel(state, &rec.callback.notify_url).map(|c| Arc::clone(&c.mailbox));
        let queue = match channel {
            Some(mailbox) => Queue::start_channel(target, self.deliverer.clone(), mailbox),
            None => Queue::start(target, self.deliverer.clone()),
        };
        if rec.disabled.is_some() {
            queue.disable();
        }
        if rec.face == Face::Oma2012 {
            queue.on_delivered(self.delivered_hook(&rec.user));
        }
        queue.set_keys(secrets::keys(&rec.secrets));
        queue
    }

    /// Seed 7.1.1: subscribe. `owner` is the token asking (`Principal::token_id`), whose
    /// share of the server-wide cap the subscription counts against.
    pub async fn create_subscription(
        self: &Arc<Self>,
        user: &str,
        owner: &str,
        body: ChatSubscription,
    ) -> Result<Created<ChatSubscription>, ApiError> {
        let (rec, own_secret) = self.subscribe(user, owner, body, Face::Seed).await?;
        let mut view = self.subscription_view(&rec);
        view.signing_secret = own_secret;
        let location = view.resource_url.clone().unwrap_or_default();
        Ok(Created {
            location,
            body: view,
        })
    }

    /// Seed 7.1.1 through either face: the subscription made (or the one a resend with its
    /// `clientCorrelator` names) and, when the server made the subscription's own signing
    /// secret just now, that secret (shown once, by the seed face).
    pub(super) async fn subscribe(
        self: &Arc<Self>,
        user: &str,
        owner: &str,
        mut body: ChatSubscription,
        face: Face,
    ) -> Result<(SubscriptionRecord, Option<String>), ApiError> {
        body.client_correlator = super::correlator(body.client_correlator);
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
            tracing::info!(user = %Escaped(user), url = %Callback(&notify_url), why = %Escaped(&detail.to_string()), "notifyURL refused");
            ApiError::invalid_input(format!("callbackReference.notifyURL: {client}"))
        };
        // A notification channel's callbackURL is recognised before the callback policy: its
        // notifications are not POSTed anywhere (see `channels`). Only the channel's own user
        // may use it; anyone else gets the answer of a host that is not allowed.
        let via_channel = {
            let state = self.read_state();
            match channel_of(&state, &notify_url) {
                Some(owner) if owner == user => true,
                Some(_) => {
                    return Err(bad(
                        &NOT_ALLOWED,
                        &"the callbackURL of another user's notification channel",
                    ));
                }
                // Under this server's channels but no channel's: it would only ever be
                // POSTed to the server itself, and every notification lost.
                None if super::channels::under_channels(self.urls.base(), &notify_url) => {
                    return Err(bad(
                        &"names no notification channel of yours (use a channel's callbackURL as it was given)",
                        &"under the server's own notification channels, no channel's",
                    ));
                }
                None => false,
            }
        };
        if !via_channel {
            let parsed = check_url(&notify_url, &self.settings.callbacks)
                .map_err(|e| bad(&e, &e.detail()))?;
            // What delivery would make of it (e.g. an `https` host no certificate can name):
            // refused now rather than disabled at its first notification (issue 13).
            crate::notify::endpoints::Endpoint::parse(&notify_url)
                .map_err(|why| bad(&format!("cannot be delivered to: {why}"), &why))?;
            tokio::time::timeout(
                Duration::from_secs(5),
                resolve_checked(&parsed, &self.settings.callbacks),
            )
            .await
            .map_err(|_| bad(&NOT_ALLOWED, &"resolving the host timed out"))?
            .map_err(|e| bad(&e, &e.detail()))?;
        }
        let own_secret = secrets::for_new_subscription(
            body.signing_secret.as_deref(),
            self.settings.own_secrets,
        )?;
        let duration = granted_duration(body.duration).map_err(|r| r.into_api(String::new))?;
        let (view, expiry, rx) = {
            let mut state = self.write_state();
            let replay = body.client_correlator.as_ref().and_then(|c| {
                let mine = state
                    .subscriptions_of(user)
                    .map(|s| &s.rec)
                    // A resend is one through the same face: a correlator the other face used
                    // names a subscription of another profile, not this one. A disabled one
                    // is gone on the 2012 face (`oma2012::shown`): its correlator subscribes
                    // anew there.
                    .filter(|r| r.face == face && (face != Face::Oma2012 || r.disabled.is_none()));
                replayed(mine, user, c)
            });
            if let Some(existing) = replay {
                same_request(
                    existing,
                    &notify_url,
                    &body.callback_reference,
                    duration,
                    body.signing_secret.as_deref().map(str::trim),
                )
                .map_err(|r| r.into_api(String::new))?;
                return Ok((existing.clone(), None));
            }
            if via_channel && channel_of(&state, &notify_url).is_none() {
                return Err(bad(
                    &NOT_ALLOWED,
                    &"the notification channel was deleted meanwhile",
                ));
            }
            let mut change = Change::default();
            let limit = self.settings.limits.subscriptions_per_user;
            let held = state.user_subscriptions.get(user).map_or(0, Vec::len);
            // A disabled subscription gives up its place to a new one: the oldest goes, with
            // its dead letters, so a client whose callback failed can always subscribe again
            // (on the 2012 face it cannot even see the disabled ones to delete them). The
            // limits weigh the create as if it were gone, and it goes only once they accept:
            // removed first, a create refused by a cap or a share left it gone from memory
            // but stored, back after a restart (the diff review).
            let replaced = (held >= limit)
                .then(|| oldest_disabled(state.subscriptions_of(user).map(|s| &s.rec)))
                .flatten()
                .and_then(|old| state.subscriptions.get(old))
                .map(|s| (s.rec.id.clone(), s.rec.owner.clone()));
            may_subscribe(held - usize::from(replaced.is_some()), limit)
                .and_then(|()| {
                    self.settings.limits.in_all.room_for_freeing(
                        &state,
                        (super::Held::Subscriptions, owner),
                        replaced.as_ref().map(|(_, freed)| freed.as_deref()),
                    )
                })
                .map_err(|r| r.into_api(String::new))?;
            if let Some((old, _)) = replaced {
                if let Some(sub) = remove_subscription(&mut state, &old) {
                    sub.queue.cancel();
                }
                change.batch.deletes.push((Kind::Subscription, old));
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
                face,
                expired_until_ms: None,
                owner: Some(owner.to_owned()),
            };
            let made = rec.clone();
            change.put(
                Kind::Subscription,
                id.clone(),
                records::encode_subscription(&rec),
            );
            self.attach_subscription(&mut state, rec);
            (
                made,
                expires_at_ms.map(|t| (id, t)),
                self.submit(&mut state, change),
            )
        };
        durable(rx).await?;
        if let Some((id, at)) = expiry {
            self.expiry_timer(id, at);
        }
        tracing::info!(user = %Escaped(user), url = %Callback(&view.callback.notify_url), "subscription created");
        Ok((view, own_secret))
    }

    /// The expiry task of subscription `id` woke: when the subscription's expiry has come it
    /// expires ([`Chat::expire_subscription`]) and the task ends (`None`); when it is still
    /// ahead (the wall clock behind the task's timer) the task sleeps on until then (`Some`);
    /// without an expiry, or without the subscription, the task ends.
    pub(super) fn expiry_due(self: &Arc<Self>, id: &str) -> Option<i64> {
        if self.is_stopping() {
            // Stopping: left to the next leader or the restart (`Chat::stopping`).
            return None;
        }
        let mut state = self.write_state();
        let sub = state.subscriptions.get_mut(id)?;
        match sub.rec.expires_at_ms {
            Some(at) if at > now_ms() => Some(at),
            Some(_) => {
                self.expire_subscription(&mut state, id);
                None
            }
            None => None,
        }
    }

    /// A subscription's `duration` ran out: it is removed and gets nothing new; what it
    /// still holds (committed while it was live) and then a
    /// `subscriptionCancellationNotification` are tried for a minute
    /// ([`EXPIRY_NOTICE_WITHIN_MS`]) and dropped after that. Its record stays, marked expired
    /// (nobody's subscription any more), with its outbox rows and the notice's: a restart or a
    /// takeover meanwhile delivers them (`restore`); then the record goes, and its rows with
    /// it, once its callback task has returned (the notice delivered, or what was left
    /// dropped) or at the minute's end, whichever comes first; a channel's, at the minute's end
    /// ([`Chat::expired_record_timer`]). One delivery disabled goes at once.
    fn expire_subscription(self: &Arc<Self>, state: &mut State, id: &str) {
        let Some(mut sub) = remove_subscription(state, id) else {
            return;
        };
        let until = now_ms().saturating_add(EXPIRY_NOTICE_WITHIN_MS);
        sub.queue.expire(until);
        let notification = expiry_notice(&self.urls, &sub.rec);
        // One delivery disabled delivers nothing any more (its queue buries what it gets):
        // kept a minute, it would only hold its dead letters longer and make its notice a
        // dead letter in place of an older one (the diff review). It goes now, as before.
        let kept = sub.rec.disabled.is_none();
        let mut change = Change::default();
        if kept {
            sub.rec.expired_until_ms = Some(until);
            change.put(
                Kind::Subscription,
                id.to_owned(),
                records::encode_subscription(&sub.rec),
            );
        } else {
            change
                .batch
                .deletes
                .push((Kind::Subscription, id.to_owned()));
        }
        // Stored, but no bytes counted against the backlog: the queue keeps an expired
        // subscription's notice when its leftovers give way to a full budget, and dropping it
        // would free nothing. Tried for `EXPIRY_NOTICE_WITHIN_MS` only: a callback that does
        // not take it then is not retried for the give-up age
        // (`NETAPI_CHAT_DELIVERY_GIVE_UP_AFTER`, about 27 h by default) for a subscription that
        // is gone, which kept each expired subscription's queue in memory that long.
        let ended = sub.queue.ended();
        let mut notice = Delivery::new(0, notification, 0);
        notice.deadline_ms = Some(until);
        let entry = kept.then(|| OutboxEntry {
            id: 0,
            subscription: id.to_owned(),
            body: records::encode_notification(&notice.notification),
            created_ms: notice.created_ms,
            progress: Progress::default(),
        });
        change.new_notification(sub.queue.clone(), notice, entry);
        // Nobody waits: a timer (or the delivery task) made this change.
        drop(self.submit(state, change));
        if kept {
            self.expired_record_timer(id.to_owned(), until, ended);
        }
    }

    /// Delivery disabled the subscription (`410 Gone`, failing past the give-up age, backlog
    /// full; see `notify`): it stays, reads as `Disabled` with `reason`, and gets no new
    /// notifications; its queue buries what it holds as dead letters.
    pub(super) fn disable_subscription(&self, id: &str, reason: &str) {
        let mut state = self.write_state();
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
        drop(self.submit(&mut state, change));
    }

    /// One page of the user's subscriptions, in creation order. The user's id list is in
    /// creation order and holds at most `subscriptions_per_user` entries, so skipping to the cursor
    /// walks it.
    pub fn list_subscriptions(&self, user: &str, req: PageRequest) -> ChatSubscriptionList {
        let state = self.read_state();
        let entries = state.subscriptions_of(user).map(|s| (s.rec.seq, s));
        let p = page::page(entries, req);
        let resource_url = self.urls.subscriptions(user);
        ChatSubscriptionList {
            chat_subscription: p
                .items
                .into_iter()
                .map(|s| self.subscription_view(&s.rec))
                .collect(),
            chat_notification_subscription: Vec::new(),
            link: page::next_links(&resource_url, req, p.next),
            resource_url,
        }
    }

    /// One subscription of the user.
    pub fn get_subscription(&self, user: &str, id: &str) -> Result<ChatSubscription, ApiError> {
        let state = self.read_state();
        match state.subscriptions.get(id) {
            Some(s) if s.rec.user == user => Ok(self.subscription_view(&s.rec)),
            _ => Err(missing(&self.urls.subscription(user, id))),
        }
    }

    /// Seed 7.1.1: unsubscribe. Nothing more is delivered to the callback.
    pub async fn delete_subscription(&self, user: &str, id: &str) -> Result<(), ApiError> {
        let rx = {
            let mut state = self.write_state();
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
            self.submit(&mut state, change)
        };
        durable(rx).await
    }
}

/// The notification channel whose `callbackURL` is `url` (however spelt, by
/// `channels::callback_key`), if it is one: the one lookup of what feeds a channel.
fn fed_channel<'a>(state: &'a State, url: &str) -> Option<&'a state::Channel> {
    super::channels::callback_key(url)
        .and_then(|key| state.channel_callbacks.get(&key))
        .and_then(|id| state.channels.get(id))
}

/// The owner of the notification channel whose `callbackURL` is `url`, if it is one.
fn channel_of<'a>(state: &'a State, url: &str) -> Option<&'a str> {
    fed_channel(state, url).map(|c| c.rec.user.as_str())
}

impl Chat {
    /// Whether `url` names one of this server's notification channels that is not there
    /// (deleted, or expired): a subscription to it has nowhere to deliver (a start deletes
    /// one an earlier version left, or an expired one whose channel went in its minute).
    pub(super) fn names_a_gone_channel(&self, state: &State, url: &str) -> bool {
        super::channels::under_channels(self.urls.base(), url) && fed_channel(state, url).is_none()
    }

    /// Deletes the records of subscriptions `ids` that are not in the working state (expired,
    /// or not loaded at a start), and so their outbox rows, in one change nobody waits for.
    pub(super) fn delete_subscriptions(&self, ids: impl IntoIterator<Item = String>) {
        self.store.submit_detached(crate::store::Batch {
            deletes: ids.into_iter().map(|id| (Kind::Subscription, id)).collect(),
            ..crate::store::Batch::default()
        });
    }
}

/// Takes subscription `id` out of the working state (and its user's index), stopping its
/// expiry task; the caller decides what becomes of its queue and its record.
pub(super) fn remove_subscription(state: &mut State, id: &str) -> Option<Subscription> {
    let sub = state.subscriptions.remove(id)?;
    state
        .owners
        .count(sub.rec.owner.as_deref(), super::Held::Subscriptions, false);
    // Its expiry task has nothing left to do (when it is the caller, it is about to end).
    if let Some(t) = &sub.timer {
        t.abort();
    }
    state::unindex(&mut state.user_subscriptions, &sub.rec.user, id);
    Some(sub)
}

/// The id of the oldest subscription delivery disabled among `mine` (in creation order), if
/// any: the one that gives up its place when its user is at the subscription limit.
fn oldest_disabled<'a>(mine: impl IntoIterator<Item = &'a SubscriptionRecord>) -> Option<&'a str> {
    mine.into_iter()
        .filter(|r| r.disabled.is_some())
        .min_by_key(|r| r.seq)
        .map(|r| r.id.as_str())
}

/// Seed 7.1.1, the rule on a resend: a subscribe request carrying the `clientCorrelator` of
/// one of `user`'s subscriptions (among `mine`) answers that subscription instead of making
/// another.
fn replayed<'a>(
    mine: impl IntoIterator<Item = &'a SubscriptionRecord>,
    user: &str,
    correlator: &str,
) -> Option<&'a SubscriptionRecord> {
    mine.into_iter()
        .find(|s| s.user == user && s.client_correlator.as_deref() == Some(correlator))
}

/// Seed 7.1.1, the rule on a `clientCorrelator` replay: the same correlator with the same
/// request (callback, data, format, granted duration, and a `signingSecret` the replay gives,
/// `secret`, trimmed: one the subscription signs with) answers the first subscription; with a
/// different one it is refused (`409 SVC0005`, reference §3.4) rather than answered with a
/// subscription that delivers somewhere else, or signs with another key, than the client now
/// asks (its receiver would then refuse every notification).
fn same_request(
    existing: &SubscriptionRecord,
    notify_url: &str,
    asked: &CallbackReference,
    duration: i64,
    secret: Option<&str>,
) -> Result<(), Refused> {
    let format = |f: Option<NotificationFormat>| f.unwrap_or(NotificationFormat::Json);
    let kept = &existing.callback;
    let same = kept.notify_url == notify_url
        && kept.callback_data == asked.callback_data
        && format(kept.notification_format) == format(asked.notification_format)
        && existing.duration == duration
        && secret.is_none_or(|s| existing.secrets.iter().any(|k| k.secret == s));
    if same {
        Ok(())
    } else {
        Err(Refused::reused(existing.client_correlator.as_deref()))
    }
}

/// Seed 7.1.1, the rule on `duration`: absent or 0 is no expiry, a longer one than
/// [`MAX_SUBSCRIPTION_SECS`] gets that, a negative one is refused.
pub(super) fn granted_duration(requested: Option<i64>) -> Result<i64, Refused> {
    let duration = requested.unwrap_or(0).min(MAX_SUBSCRIPTION_SECS);
    if duration < 0 {
        return Err(Refused::BadDuration(duration));
    }
    Ok(duration)
}

/// Seed 7.1.1, the rule on the subscriber: a user holding `held` subscriptions may add one
/// below `limit`.
fn may_subscribe(held: usize, limit: usize) -> Result<(), Refused> {
    if held >= limit {
        return Err(Refused::TooMany {
            what: "subscriptions of this user",
            limit,
        });
    }
    Ok(())
}

/// What the callback of subscription `rec` is told when its `duration` ran out: a
/// `subscriptionCancellationNotification` with the reason, its `callbackData` and a link to the
/// subscription on the face it was made through (the last notification it gets).
fn expiry_notice(urls: &Urls, rec: &SubscriptionRecord) -> Notification {
    Notification::from(SubscriptionCancellationNotification {
        reason: Some(ServiceException {
            message_id: "SVC0001".to_owned(),
            text: "A service error occurred: %1".to_owned(),
            variables: vec![format!(
                "subscription expired after its duration of {} s",
                rec.duration
            )],
        }),
        callback_data: rec.callback.callback_data.clone(),
        link: vec![link(urls, rec)],
    })
}

/// The link to subscription `rec` on the face it was made through: what its expiry notice
/// names, and what ends every notification sent for it (`fanout`; OMA: the server SHOULD
/// link the subscription).
pub(super) fn link(urls: &Urls, rec: &SubscriptionRecord) -> Link {
    match rec.face {
        Face::Seed => Link {
            rel: "ChatSubscription".to_owned(),
            href: urls.subscription(&rec.user, &rec.id),
        },
        Face::Oma2012 => Link {
            rel: "ChatNotificationSubscription".to_owned(),
            href: urls.oma2012_subscription(&rec.user, &rec.id),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::{subscription, urls};
    use super::*;

    fn record(id: &str, user: &str, correlator: Option<&str>) -> SubscriptionRecord {
        SubscriptionRecord {
            client_correlator: correlator.map(str::to_owned),
            ..subscription(id, user, 1)
        }
    }

    /// A correlator replayed with the same request answers the first subscription; with
    /// another callback, data, format or duration it is 409 SVC0005.
    #[test]
    fn a_replayed_correlator_must_carry_the_same_request() {
        let mut existing = record("sub-1", "tel:+1", Some("c1"));
        existing.callback.notify_url = "http://a/".into();
        existing.duration = 60;
        let asked = |url: &str, data: Option<&str>, xml: bool| CallbackReference {
            notify_url: url.into(),
            callback_data: data.map(str::to_owned),
            notification_format: xml.then_some(NotificationFormat::Xml),
        };
        existing.secrets = vec![state::SigningSecret {
            secret: "whsec_kept".into(),
            until_ms: None,
        }];
        let same = |secret| {
            same_request(
                &existing,
                "http://a/",
                &asked("http://a/", None, false),
                60,
                secret,
            )
        };
        assert_eq!(same(None), Ok(()));
        assert_eq!(same(Some("whsec_kept")), Ok(()));
        assert_eq!(
            same(Some("whsec_other")),
            Err(Refused::DuplicateCorrelator("c1".into())),
            "a replay asking for another signing key"
        );
        let conflict = Err(Refused::DuplicateCorrelator("c1".into()));
        for (url, data, xml, duration) in [
            ("http://b/", None, false, 60),
            ("http://a/", Some("x"), false, 60),
            ("http://a/", None, true, 60),
            ("http://a/", None, false, 0),
        ] {
            assert_eq!(
                same_request(&existing, url, &asked(url, data, xml), duration, None),
                conflict,
                "{url} {data:?} {xml} {duration}"
            );
        }
    }

    #[test]
    fn a_resend_answers_the_subscription_made_with_its_correlator() {
        let subs = [
            record("sub-1", "tel:+1", None),
            record("sub-2", "tel:+1", Some("c-1")),
            record("sub-3", "tel:+2", Some("c-2")),
        ];
        let found = |user, c| replayed(&subs, user, c).map(|s| s.id.as_str());
        assert_eq!(found("tel:+1", "c-1"), Some("sub-2"));
        assert_eq!(found("tel:+1", "c-2"), None, "another user's correlator");
        assert_eq!(found("tel:+2", "c-2"), Some("sub-3"));
        assert_eq!(found("tel:+2", "c-1"), None);
    }

    #[test]
    fn a_duration_is_granted_up_to_a_year() {
        let cases = [
            (None, Ok(0)),
            (Some(0), Ok(0)),
            (Some(60), Ok(60)),
            (Some(MAX_SUBSCRIPTION_SECS + 1), Ok(MAX_SUBSCRIPTION_SECS)),
            (Some(i64::MAX), Ok(MAX_SUBSCRIPTION_SECS)),
            (Some(-1), Err(Refused::BadDuration(-1))),
        ];
        for (asked, granted) in cases {
            assert_eq!(granted_duration(asked), granted, "{asked:?}");
        }
    }

    #[test]
    fn a_user_holds_at_most_the_limit_of_subscriptions() {
        assert_eq!(may_subscribe(0, 2), Ok(()));
        assert_eq!(may_subscribe(1, 2), Ok(()));
        let full = Err(Refused::TooMany {
            what: "subscriptions of this user",
            limit: 2,
        });
        assert_eq!(may_subscribe(2, 2), full);
        assert_eq!(
            may_subscribe(0, 0),
            Err(Refused::TooMany {
                what: "subscriptions of this user",
                limit: 0,
            })
        );
    }

    /// An expired subscription's last notification says why, echoes its `callbackData` and
    /// links to it.
    #[test]
    fn an_expired_subscription_is_told_why() {
        let mut rec = subscription("sub-3", "tel:+1", 3);
        rec.callback.callback_data = Some("mine".into());
        rec.duration = 60;
        rec.expires_at_ms = Some(60_000);
        let Notification::SubscriptionCancellationNotification(n) = expiry_notice(&urls(), &rec)
        else {
            panic!("not a cancellation");
        };
        let reason = n.reason.expect("a reason");
        assert_eq!(reason.message_id, "SVC0001");
        assert_eq!(
            reason.variables,
            ["subscription expired after its duration of 60 s"]
        );
        assert_eq!(n.callback_data.as_deref(), Some("mine"));
        assert_eq!(n.link.len(), 1);
        assert_eq!(n.link[0].rel, "ChatSubscription");
        assert_eq!(n.link[0].href, urls().subscription("tel:+1", "sub-3"));
        // One made on the OMA 2012 face links to itself there.
        rec.face = Face::Oma2012;
        let Notification::SubscriptionCancellationNotification(n) = expiry_notice(&urls(), &rec)
        else {
            panic!("not a cancellation");
        };
        assert_eq!(n.link[0].rel, "ChatNotificationSubscription");
        assert_eq!(
            n.link[0].href,
            "http://chat.test/chat/v1/tel%3A%2B1/subscriptions/sub-3"
        );
    }
}
