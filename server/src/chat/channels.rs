//! Notification channels (issue 15; OMA RESTful Network API for Notification Channel, the
//! seed's optional Notification Server): create, list, read, delete, the lifetime, and the
//! long poll that hands an application its notifications.
//!
//! Owns `State::channels`, `State::user_channels` and `State::channel_callbacks`. A channel's
//! notifications come from the subscriptions whose `notifyURL` is its `callbackURL`: they are
//! attached to the channel's mailbox instead of an HTTP callback (see
//! `Chat::attach_subscription` and `notify::channel`), so they go through the same durable
//! outbox and leave it only when the application has acknowledged them (a poll, its `ack`, a
//! socket's acknowledgement: `notify::channel`).
//!
//! Decisions (the spec says each one too): a channel whose lifetime ends, or that is deleted,
//! goes with the subscriptions that deliver into it (a notification has nowhere to go any
//! more; OMA's gateways cancelled them too); the lifetime is not stored per poll (that would be
//! a write per poll): a restart starts every channel's lifetime again.
//!
//! Rules (plain functions, tested below): [`supported`], [`granted_lifetime`],
//! [`max_notifications`], [`granted_wait`], [`may_create`], [`webhook_ids`].

use super::page::{self, PageRequest};
use super::records;
use super::refused::Refused;
use super::state::{Channel, ChannelRecord, State};
use super::views::with_notification;
use super::{Change, Chat, durable, missing};
use crate::notify::channel::{Ack, Mailbox, Polled, Taken};
use crate::notify::webhook_id;
use crate::store::{Kind, now_ms};
use netapi_chat_api::{
    ChannelData, ChannelNotification, ChannelType, Created, Headed, Notification,
    NotificationChannel, NotificationChannelLifetime, NotificationChannelList, NotificationList,
    PollNotificationsHeaders,
};
use netapi_chat_runtime::ApiError;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The channel types this server serves.
pub const SUPPORTED: &[ChannelType] = &[ChannelType::LongPolling, ChannelType::WebSockets];
/// Lifetime granted when the client asks for none (or 0), seconds.
pub const DEFAULT_LIFETIME_SECS: i64 = 3600;
/// Longest lifetime granted, seconds.
pub const MAX_LIFETIME_SECS: i64 = 86_400;
/// `maxNotifications` when absent.
pub const DEFAULT_MAX_NOTIFICATIONS: usize = 20;
/// Largest `maxNotifications` (one poll's answer stays small).
pub const MAX_NOTIFICATIONS: usize = 100;

/// Whether a channel of type `t` can be made (`403 POL1023` naming the supported ones).
pub(super) fn supported(t: ChannelType) -> Result<(), Refused> {
    if SUPPORTED.contains(&t) {
        Ok(())
    } else {
        Err(Refused::UnsupportedChannelType(t.as_str().to_owned()))
    }
}

/// The lifetime granted for a requested one: 0 or none is the default, at most the maximum
/// (OMA lets the server change it); below 0 is refused.
pub(super) fn granted_lifetime(requested: Option<i64>) -> Result<i64, Refused> {
    match requested {
        None | Some(0) => Ok(DEFAULT_LIFETIME_SECS),
        Some(s) if s < 0 => Err(Refused::Invalid(format!("channelLifetime: {s} is below 0"))),
        Some(s) => Ok(s.min(MAX_LIFETIME_SECS)),
    }
}

/// `maxNotifications`, as granted: absent or 0 is the default, more than
/// [`MAX_NOTIFICATIONS`] is that (as a lifetime or a wait is shortened: the channel's clients
/// of the GSMA gateways ask for 1000, and the answer shows what was granted); below 0 is
/// refused.
pub(super) fn max_notifications(requested: Option<i64>) -> Result<usize, Refused> {
    match requested {
        None | Some(0) => Ok(DEFAULT_MAX_NOTIFICATIONS),
        Some(n) => usize::try_from(n)
            .map(|n| n.min(MAX_NOTIFICATIONS))
            .map_err(|_| Refused::Invalid(format!("channelData.maxNotifications: {n} is below 0"))),
    }
}

/// The wait of a poll, in whole seconds: the server's own wait (rounded up) when the client
/// asks for none (or 0), the client's when shorter; below 0 is refused.
pub(super) fn granted_wait(requested: Option<i64>, server: Duration) -> Result<i64, Refused> {
    let server_secs =
        i64::try_from(server.as_secs() + u64::from(server.subsec_nanos() > 0)).unwrap_or(i64::MAX);
    match requested {
        None | Some(0) => Ok(server_secs),
        Some(s) if s < 0 => Err(Refused::Invalid(format!(
            "channelData.maxWaitTime: {s} is below 0"
        ))),
        Some(s) => Ok(s.min(server_secs)),
    }
}

/// What a channel's `callbackURL` adds to its resource URL (the spec's `channel` URL, built
/// by the generated `Urls::channel`). Not a route: a subscription names it, nothing is
/// POSTed to it.
pub const CALLBACK_SUFFIX: &str = "/callback";
/// What a WebSockets channel's socket adds to its resource URL (`channel_socket::PATH` is the
/// spec's channel path with it, tested there).
pub const SOCKET_SUFFIX: &str = "/websocket";

/// The `callbackURL` of the channel whose resource URL is `channel`.
pub fn callback_url(channel: &str) -> String {
    format!("{channel}{CALLBACK_SUFFIX}")
}

/// The key a channel's `callbackURL` is found by (`State::channel_callbacks`): the URL with
/// the spellings RFC 3986 §6.2.2 makes equal brought to one (scheme and host case, the
/// default port, percent-encoding: every path segment decoded, so `%3A`, `%3a` and `:` are
/// one), so that a client that writes the URL its own way (an unencoded `tel:+…`, lower-case
/// hex) still reaches its channel instead of an HTTP POST to the server itself. `None` for
/// what does not parse as an absolute `http(s)` URL.
pub(crate) fn callback_key(url: &str) -> Option<String> {
    let uri = http::Uri::from_str(url.trim()).ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let authority = uri.authority()?;
    if authority.as_str().contains('@') {
        return None;
    }
    let host = authority.host().to_ascii_lowercase();
    let port = authority.port_u16().unwrap_or(default_port);
    let path: Vec<String> = uri
        .path()
        .split('/')
        .map(|seg| {
            percent_encoding::percent_decode_str(seg)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    Some(format!("{scheme}://{host}:{port}{}{query}", path.join("/")))
}

/// Whether `url` (as [`callback_key`] reads it) lies under this server's notification
/// channels, whose base URL is `base`: a `notifyURL` there that names no channel of its user
/// would only ever be POSTed to the server itself, so it is refused.
pub(crate) fn under_channels(base: &str, url: &str) -> bool {
    match (callback_key(base), callback_key(url)) {
        (Some(base), Some(url)) => url
            .strip_prefix(base.trim_end_matches('/'))
            .is_some_and(|rest| rest.starts_with("/notificationchannel/")),
        _ => false,
    }
}

/// The `ws://` (`wss://`) URL of a WebSockets channel, from its resource URL.
pub fn socket_url(channel: &str) -> String {
    let url = if let Some(rest) = channel.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = channel.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        channel.to_owned()
    };
    format!("{url}{SOCKET_SUFFIX}")
}

/// Reads a poll's `ack`: absent is OMA 2012's implicit acknowledgement, empty is "nothing
/// processed yet", else a `webhookId` (`msg_<n>`); anything else is `400 SVC0002`.
pub fn parse_ack(ack: Option<&str>) -> Result<Ack, ApiError> {
    let Some(text) = ack else {
        return Ok(Ack::Previous);
    };
    if text.is_empty() {
        return Ok(Ack::Through(None));
    }
    text.strip_prefix("msg_")
        .and_then(|n| page::parse_cursor(n).ok())
        .map(|id| Ack::Through(Some(id)))
        .ok_or_else(|| {
            ApiError::invalid_input(format!(
                "`ack` {text:?} is not a webhookId (msg_42) nor empty"
            ))
        })
}

/// When a lifetime of `lifetime_secs` that starts at `now_ms` ends (Unix ms; saturating, so
/// no lifetime overflows).
pub(super) fn expiry(now_ms: i64, lifetime_secs: i64) -> i64 {
    now_ms.saturating_add(lifetime_secs.saturating_mul(1000))
}

impl Channel {
    /// Starts the channel's lifetime again at `now_ms` (a poll, an open socket, a refresh).
    fn restart_lifetime(&self, now_ms: i64) {
        self.expires_at_ms
            .store(expiry(now_ms, self.rec.lifetime_secs), Ordering::Relaxed);
    }
}

/// What a channel create asks for, as granted: what a `clientCorrelator` replay must ask
/// again ([`same_channel`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Asked<'a> {
    pub websocket: bool,
    pub application_tag: Option<&'a str>,
    pub lifetime_secs: i64,
    pub max_notifications: usize,
    pub max_wait_secs: i64,
}

/// The rule on a `clientCorrelator` replay, as for every other create: the same request
/// (type, `applicationTag`, granted lifetime, `maxNotifications`, wait) answers the channel
/// made with that correlator; another is `409 SVC0005` rather than a channel of another kind
/// (a `LongPolling` one has no WebSocket URL) answered as if it had been made.
pub(super) fn same_channel(existing: &ChannelRecord, asked: &Asked<'_>) -> Result<(), Refused> {
    let kept = Asked {
        websocket: existing.websocket,
        application_tag: existing.application_tag.as_deref(),
        lifetime_secs: existing.lifetime_secs,
        max_notifications: existing.max_notifications,
        max_wait_secs: existing.max_wait_secs,
    };
    if kept == *asked {
        Ok(())
    } else {
        Err(Refused::reused(existing.client_correlator.as_deref()))
    }
}

/// A user holding `held` channels may create one more while under `limit` (`403 POL2008`).
pub(super) fn may_create(held: usize, limit: usize) -> Result<(), Refused> {
    if held < limit {
        Ok(())
    } else {
        Err(Refused::TooMany {
            what: "notification channels",
            limit,
        })
    }
}

/// A notification as a poll answers it: under its own name (its id goes in `Webhook-Ids`).
pub(crate) fn entry(n: Notification) -> ChannelNotification {
    with_notification!(ChannelNotification {}, n)
}

/// The `notificationList` of what a poll or an OMA socket took, in the order taken: the one
/// place its body is built, so a long poll's answer and an OMA socket's frame
/// (`channel_socket`, encoded by the same `wire::encode` the answer goes through) cannot
/// differ.
pub(crate) fn notification_list(taken: Vec<Taken>) -> NotificationList {
    NotificationList {
        items: taken.into_iter().map(|t| entry(t.notification)).collect(),
    }
}

/// A poll's `Webhook-Ids` header: the answered notifications' stable ids in list order,
/// `, `-separated (RFC 9110 list syntax); none for an empty answer.
pub(crate) fn webhook_ids(ids: impl IntoIterator<Item = u64>) -> Option<String> {
    let ids: Vec<String> = ids.into_iter().map(webhook_id).collect();
    (!ids.is_empty()).then(|| ids.join(", "))
}

impl Chat {
    fn channel_view(&self, rec: &ChannelRecord) -> NotificationChannel {
        let (channel_type, channel_url) = if rec.websocket {
            (
                ChannelType::WebSockets,
                socket_url(&self.urls.channel(&rec.user, &rec.id)),
            )
        } else {
            (
                ChannelType::LongPolling,
                self.urls.notifications(&rec.user, &rec.id),
            )
        };
        NotificationChannel {
            client_correlator: rec.client_correlator.clone(),
            application_tag: rec.application_tag.clone(),
            channel_type,
            channel_data: Some(ChannelData {
                channel_url: Some(channel_url),
                max_notifications: i64::try_from(rec.max_notifications).ok(),
                max_wait_time: Some(rec.max_wait_secs),
            }),
            channel_lifetime: Some(rec.lifetime_secs),
            callback_url: Some(rec.callback_url.clone()),
            resource_url: Some(self.urls.channel(&rec.user, &rec.id)),
        }
    }

    /// Puts a channel in memory (new, or restored at start-up) with a full lifetime ahead.
    pub(super) fn attach_channel(&self, state: &mut State, rec: ChannelRecord) {
        state
            .owners
            .count(rec.owner.as_deref(), super::Held::Channels, true);
        state
            .user_channels
            .entry(rec.user.clone())
            .or_default()
            .push(rec.id.clone());
        if let Some(key) = callback_key(&rec.callback_url) {
            state.channel_callbacks.insert(key, rec.id.clone());
        }
        let expires_at_ms = expiry(now_ms(), rec.lifetime_secs);
        state.channels.insert(
            rec.id.clone(),
            Channel {
                rec,
                mailbox: Mailbox::new(
                    self.deliverer.forgetter.clone(),
                    self.deliverer.signer.clone(),
                ),
                expires_at_ms: expires_at_ms.into(),
                timer: Arc::new(tokio::sync::Notify::new()),
            },
        );
    }

    /// The channel `id` if it is `user`'s, else the `404` of a channel that does not exist.
    fn own_channel<'a>(
        &self,
        state: &'a State,
        user: &str,
        id: &str,
    ) -> Result<&'a Channel, ApiError> {
        match state.channels.get(id) {
            Some(c) if c.rec.user == user => Ok(c),
            _ => Err(missing(&self.urls.channel(user, id))),
        }
    }

    /// [`Chat::own_channel`], to change its record (under the write lock).
    fn own_channel_mut<'a>(
        &self,
        state: &'a mut State,
        user: &str,
        id: &str,
    ) -> Result<&'a mut Channel, ApiError> {
        match state.channels.get_mut(id) {
            Some(c) if c.rec.user == user => Ok(c),
            _ => Err(missing(&self.urls.channel(user, id))),
        }
    }

    /// Removes a channel and the subscriptions that deliver into it (call under the lock): the
    /// change deletes their records (and so their outbox rows); a waiting poll answers 404.
    fn remove_channel(&self, state: &mut State, change: &mut Change, id: &str) {
        let Some(ch) = state.channels.remove(id) else {
            return;
        };
        state
            .owners
            .count(ch.rec.owner.as_deref(), super::Held::Channels, false);
        // Its expiry task wakes, finds it gone and ends now, not at the end of a lifetime
        // that may be a day away (deleted channels' tasks would otherwise pile up).
        ch.timer.notify_one();
        if let Some(ids) = state.user_channels.get_mut(&ch.rec.user) {
            ids.retain(|i| i != id);
            if ids.is_empty() {
                state.user_channels.remove(&ch.rec.user);
            }
        }
        let key = callback_key(&ch.rec.callback_url);
        if let Some(key) = &key {
            state.channel_callbacks.remove(key);
        }
        // Every subscription the channel feeds, however its notifyURL spells the callbackURL
        // (as `callback_key` attached it): compared as written, one that wrote `%3a` or an
        // unencoded `sip:` outlived its channel, `Active`, its notifications dropped into
        // the closed mailbox, and after a restart POSTed to the server's own URL (the
        // channels review of 2026-12-07).
        let feeding: Vec<String> = state
            .user_subscriptions
            .get(&ch.rec.user)
            .into_iter()
            .flatten()
            .filter(|s| {
                state.subscriptions.get(*s).is_some_and(|s| {
                    key.is_some() && callback_key(&s.rec.callback.notify_url) == key
                })
            })
            .cloned()
            .collect();
        for sid in feeding {
            if let Some(sub) = super::subscriptions::remove_subscription(state, &sid) {
                sub.queue.cancel();
            }
            change.batch.deletes.push((Kind::Subscription, sid));
        }
        change.batch.deletes.push((Kind::Channel, id.to_owned()));
        ch.mailbox.close();
    }

    /// Creates a notification channel (`LongPolling`). `owner` is the token asking
    /// (`Principal::token_id`), whose share of the server-wide cap the channel counts against.
    pub async fn create_notification_channel(
        self: &Arc<Self>,
        user: &str,
        owner: &str,
        mut body: NotificationChannel,
    ) -> Result<Created<NotificationChannel>, ApiError> {
        body.client_correlator = super::correlator(body.client_correlator);
        let refused = |r: Refused| r.into_api(String::new);
        supported(body.channel_type).map_err(refused)?;
        let data = body.channel_data.unwrap_or_default();
        let lifetime_secs = granted_lifetime(body.channel_lifetime).map_err(refused)?;
        let max = max_notifications(data.max_notifications).map_err(refused)?;
        let wait = granted_wait(data.max_wait_time, self.settings.limits.channel_poll_wait)
            .map_err(refused)?;
        let (view, id, rx) = {
            let mut state = self.write_state();
            let mine = state
                .user_channels
                .get(user)
                .into_iter()
                .flatten()
                .filter_map(|id| state.channels.get(id));
            if let Some(c) = &body.client_correlator
                && let Some(existing) = mine
                    .map(|c| &c.rec)
                    .find(|r| r.client_correlator.as_ref() == Some(c))
            {
                let asked = Asked {
                    websocket: body.channel_type == ChannelType::WebSockets,
                    application_tag: body.application_tag.as_deref(),
                    lifetime_secs,
                    max_notifications: max,
                    max_wait_secs: wait,
                };
                same_channel(existing, &asked).map_err(refused)?;
                let view = self.channel_view(existing);
                return Ok(Created {
                    location: view.resource_url.clone().unwrap_or_default(),
                    body: view,
                });
            }
            let held = state.user_channels.get(user).map_or(0, Vec::len);
            may_create(held, self.settings.limits.channels_per_user)
                .and_then(|()| {
                    self.settings
                        .limits
                        .in_all
                        .room_for(&state, super::Held::Channels, owner)
                })
                .map_err(refused)?;
            let (id, seq) = state.new_id("chan");
            let rec = ChannelRecord {
                callback_url: callback_url(&self.urls.channel(user, &id)),
                id: id.clone(),
                user: user.to_owned(),
                seq,
                client_correlator: body.client_correlator,
                application_tag: body.application_tag,
                lifetime_secs,
                max_notifications: max,
                max_wait_secs: wait,
                websocket: body.channel_type == ChannelType::WebSockets,
                owner: Some(owner.to_owned()),
            };
            let view = self.channel_view(&rec);
            let mut change = Change::default();
            change.put(Kind::Channel, id.clone(), records::encode_channel(&rec));
            self.attach_channel(&mut state, rec);
            (view, id, self.submit(&mut state, change))
        };
        durable(rx).await?;
        self.channel_timer(id);
        Ok(Created {
            location: view.resource_url.clone().unwrap_or_default(),
            body: view,
        })
    }

    /// One page of the user's channels, in creation order (at most the per-user limit of
    /// them, so skipping to the cursor walks a short list).
    pub fn list_notification_channels(
        &self,
        user: &str,
        req: PageRequest,
    ) -> NotificationChannelList {
        let state = self.read_state();
        let entries = state
            .user_channels
            .get(user)
            .into_iter()
            .flatten()
            .filter_map(|id| state.channels.get(id))
            .map(|c| (c.rec.seq, c));
        let p = page::page(entries, req);
        let resource_url = self.urls.channels(user);
        NotificationChannelList {
            notification_channel: p
                .items
                .into_iter()
                .map(|c| self.channel_view(&c.rec))
                .collect(),
            link: page::next_links(&resource_url, req, p.next),
            resource_url,
        }
    }

    /// One channel of the user.
    pub fn get_notification_channel(
        &self,
        user: &str,
        id: &str,
    ) -> Result<NotificationChannel, ApiError> {
        let state = self.read_state();
        let c = self.own_channel(&state, user, id)?;
        Ok(self.channel_view(&c.rec))
    }

    /// Deletes a channel with the subscriptions that deliver into it; a waiting poll answers
    /// 404.
    pub async fn delete_notification_channel(&self, user: &str, id: &str) -> Result<(), ApiError> {
        let rx = {
            let mut state = self.write_state();
            self.own_channel(&state, user, id)?;
            let mut change = Change::default();
            self.remove_channel(&mut state, &mut change, id);
            self.submit(&mut state, change)
        };
        durable(rx).await
    }

    /// The channel's granted lifetime.
    pub fn get_channel_lifetime(
        &self,
        user: &str,
        id: &str,
    ) -> Result<NotificationChannelLifetime, ApiError> {
        let state = self.read_state();
        let c = self.own_channel(&state, user, id)?;
        Ok(NotificationChannelLifetime {
            channel_lifetime: c.rec.lifetime_secs,
        })
    }

    /// Starts the channel's lifetime again with the one asked for (granted as on create).
    pub async fn refresh_channel_lifetime(
        &self,
        user: &str,
        id: &str,
        body: NotificationChannelLifetime,
    ) -> Result<NotificationChannelLifetime, ApiError> {
        let granted =
            granted_lifetime(Some(body.channel_lifetime)).map_err(|r| r.into_api(String::new))?;
        let rx = {
            let mut state = self.write_state();
            let c = self.own_channel_mut(&mut state, user, id)?;
            c.rec.lifetime_secs = granted;
            c.restart_lifetime(now_ms());
            // A shorter lifetime ends before the timer's wake-up: it looks again now.
            c.timer.notify_one();
            let mut change = Change::default();
            change.put(
                Kind::Channel,
                id.to_owned(),
                records::encode_channel(&c.rec),
            );
            self.submit(&mut state, change)
        };
        durable(rx).await?;
        Ok(NotificationChannelLifetime {
            channel_lifetime: granted,
        })
    }

    /// The long poll (the channel's `channelURL`): acknowledges what `ack` covers of what the
    /// previous poll got (all of it without `ack`, OMA 2012), then answers the notifications waiting, at most the channel's `maxNotifications`, as
    /// soon as there are any, or an empty list when its wait runs out. Each poll starts the
    /// channel's lifetime again. A poll whose client disconnects while it waits ends without
    /// taking anything (`dropshot::client_gone`), so the next poll gets what arrived.
    ///
    /// `grant` checks the poll's credentials again, each time the poll wakes and before it
    /// takes anything: the request was authorized when it came, but a poll waits up to an hour,
    /// and a token revoked meanwhile must not be handed what arrived after (before, it was:
    /// the owner's next poll then acknowledged notifications it never saw).
    pub async fn poll_notifications(
        &self,
        user: &str,
        id: &str,
        ack: Ack,
        grant: &(dyn Fn() -> Result<(), ApiError> + Send + Sync),
    ) -> Result<Headed<NotificationList, PollNotificationsHeaders>, ApiError> {
        let (mailbox, max, wait) = {
            let state = self.read_state();
            let c = self.own_channel(&state, user, id)?;
            if c.rec.websocket {
                return Err(ApiError::forbidden(
                    "this is a WebSockets channel: connect to its channelURL instead of polling",
                ));
            }
            c.restart_lifetime(now_ms());
            let wait = Duration::from_secs(u64::try_from(c.rec.max_wait_secs).unwrap_or(0))
                .min(self.settings.limits.channel_poll_wait);
            (Arc::clone(&c.mailbox), c.rec.max_notifications, wait)
        };
        // A poll whose client has gone away stops waiting before it takes anything (what it
        // would take would be answered to nobody, and the next poll would acknowledge it).
        // `biased`: the disconnect is looked at first, so a poll woken by a notification after
        // its client went takes nothing.
        tracing::debug!(channel = id, "long poll waiting");
        let granted = || grant().is_ok();
        let polled = tokio::select! {
            biased;
            () = dropshot::client_gone() => {
                tracing::debug!(channel = id, "long poll ended: its client has gone, nothing taken");
                Polled::Notifications(Vec::new())
            }
            polled = mailbox.poll(ack, max, wait, &granted) => polled,
        };
        if let Some(c) = self.read_state().channels.get(id) {
            c.restart_lifetime(now_ms());
        }
        // Nothing to hand, and the store cannot be confirmed now (a database that went away
        // while the poll waited): the outage's `503`, as any request gets, not an empty answer
        // the client would take for "nothing happened" (what was handed is answered: it was
        // committed before it reached the mailbox).
        if matches!(&polled, Polled::Notifications(list) if list.is_empty()) {
            self.check_store()?;
        }
        match polled {
            Polled::Notifications(list) => Ok(Headed {
                headers: PollNotificationsHeaders {
                    webhook_ids: webhook_ids(list.iter().map(|t| t.id)),
                },
                body: notification_list(list),
            }),
            Polled::Closed => Err(missing(&self.urls.channel(user, id))),
            Polled::Superseded => Err(Refused::PollSuperseded.into_api(String::new)),
            Polled::Revoked => Err(grant().err().unwrap_or_else(|| {
                ApiError::forbidden("the credentials no longer grant this channel")
            })),
        }
    }

    /// A WebSockets channel of `user` about to get a socket: its mailbox, the wait of one
    /// round (the channel's `maxWaitTime`) and its `maxNotifications` (the most an OMA
    /// socket's frame carries, as for a poll's answer); `404` for a channel that is not the
    /// user's, `403` for a long-poll channel.
    pub fn channel_socket(
        &self,
        user: &str,
        id: &str,
    ) -> Result<(Arc<Mailbox>, Duration, usize), ApiError> {
        let state = self.read_state();
        let c = self.own_channel(&state, user, id)?;
        if !c.rec.websocket {
            return Err(ApiError::forbidden(
                "this is a LongPolling channel: POST to its channelURL instead",
            ));
        }
        c.restart_lifetime(now_ms());
        let wait = Duration::from_secs(u64::try_from(c.rec.max_wait_secs).unwrap_or(0))
            .min(self.settings.limits.channel_poll_wait);
        Ok((Arc::clone(&c.mailbox), wait, c.rec.max_notifications))
    }

    /// An open socket keeps its channel alive: its lifetime starts again.
    pub fn touch_channel(&self, id: &str) {
        if let Some(c) = self.read_state().channels.get(id) {
            c.restart_lifetime(now_ms());
        }
    }

    /// Watches a channel's lifetime: when it ends (no poll waiting), the channel goes with its
    /// subscriptions. Holds only a `Weak<Chat>`; ends when the channel is gone.
    pub(super) fn channel_timer(self: &Arc<Self>, id: String) {
        let chat = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let (at, bell) = {
                    let Some(chat) = chat.upgrade() else { return };
                    let state = chat.read_state();
                    match state.channels.get(&id) {
                        Some(c) => (
                            c.expires_at_ms.load(Ordering::Relaxed),
                            Arc::clone(&c.timer),
                        ),
                        None => return,
                    }
                };
                let wait = u64::try_from(at.saturating_sub(now_ms())).unwrap_or(0);
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(wait)) => {}
                    // The lifetime was set anew (a refresh rings after it changed the expiry,
                    // and a ring before this wait is kept): look at the new end.
                    () = bell.notified() => continue,
                }
                let Some(chat) = chat.upgrade() else { return };
                if chat.expire_channel(&id) {
                    return;
                }
            }
        });
    }

    /// The channel's lifetime may have ended: if so (and no poll waits on it) it is removed;
    /// answers whether it is gone.
    fn expire_channel(&self, id: &str) -> bool {
        let mut state = self.write_state();
        let Some(c) = state.channels.get(id) else {
            return true;
        };
        let now = now_ms();
        if c.mailbox.polling() {
            c.expires_at_ms
                .fetch_max(expiry(now, c.rec.lifetime_secs), Ordering::Relaxed);
        }
        if c.expires_at_ms.load(Ordering::Relaxed) > now {
            return false;
        }
        let mut change = Change::default();
        self.remove_channel(&mut state, &mut change, id);
        tracing::info!(channel = id, "notification channel expired");
        // Nobody waits: the timer made this change.
        drop(self.submit(&mut state, change));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replayed_correlator_must_ask_for_the_same_channel() {
        let existing = ChannelRecord {
            id: "chan-1".into(),
            user: "tel:+1".into(),
            seq: 1,
            client_correlator: Some("cc7".into()),
            application_tag: Some("app".into()),
            lifetime_secs: 3600,
            max_notifications: 20,
            max_wait_secs: 25,
            callback_url: "http://h/x/callback".into(),
            websocket: false,
            owner: None,
        };
        let same = Asked {
            websocket: false,
            application_tag: Some("app"),
            lifetime_secs: 3600,
            max_notifications: 20,
            max_wait_secs: 25,
        };
        assert_eq!(same_channel(&existing, &same), Ok(()));
        for other in [
            Asked {
                websocket: true,
                ..same.clone()
            },
            Asked {
                application_tag: None,
                ..same.clone()
            },
            Asked {
                lifetime_secs: 60,
                ..same.clone()
            },
            Asked {
                max_notifications: 100,
                ..same.clone()
            },
            Asked {
                max_wait_secs: 5,
                ..same.clone()
            },
        ] {
            assert_eq!(
                same_channel(&existing, &other),
                Err(Refused::DuplicateCorrelator("cc7".into())),
                "{other:?}"
            );
        }
    }

    #[test]
    fn a_socket_url_follows_the_scheme() {
        assert_eq!(
            socket_url("http://h:1/notificationchannel/v1/u/channels/c"),
            "ws://h:1/notificationchannel/v1/u/channels/c/websocket"
        );
        assert_eq!(socket_url("https://h/x"), "wss://h/x/websocket");
        assert_eq!(callback_url("http://h/x"), "http://h/x/callback");
    }

    #[test]
    fn an_ack_is_absent_empty_or_a_webhook_id() {
        assert_eq!(parse_ack(None).unwrap(), Ack::Previous);
        assert_eq!(parse_ack(Some("")).unwrap(), Ack::Through(None));
        assert_eq!(parse_ack(Some("msg_42")).unwrap(), Ack::Through(Some(42)));
        for bad in ["42", "msg_", "msg_x", "msg_-1", "evt_1"] {
            let e = parse_ack(Some(bad)).unwrap_err();
            assert_eq!(e.status.as_u16(), 400, "{bad}");
        }
    }

    /// The spellings of one URL RFC 3986 makes equal find the same channel; another
    /// channel, path, port or host does not.
    #[test]
    fn a_callback_url_is_found_however_it_is_spelled() {
        let given = "http://127.0.0.1:8080/notificationchannel/v1/tel%3A%2B15551230009/channels/ch-7/callback";
        let key = callback_key(given);
        assert!(key.is_some());
        for same in [
            "http://127.0.0.1:8080/notificationchannel/v1/tel%3a%2b15551230009/channels/ch-7/callback",
            "http://127.0.0.1:8080/notificationchannel/v1/tel:+15551230009/channels/ch-7/callback",
            "HTTP://127.0.0.1:8080/notificationchannel/v1/tel:%2B15551230009/channels/ch-7/callback",
            " http://127.0.0.1:8080/notificationchannel/v1/tel:+15551230009/channels/ch-7/callback",
        ] {
            assert_eq!(callback_key(same), key, "{same}");
        }
        assert_eq!(
            callback_key("http://Example.COM/x"),
            callback_key("http://example.com:80/x")
        );
        for other in [
            "http://127.0.0.1:8080/notificationchannel/v1/tel%3A%2B15551230009/channels/ch-8/callback",
            "http://127.0.0.1:8081/notificationchannel/v1/tel%3A%2B15551230009/channels/ch-7/callback",
            "https://127.0.0.1:8080/notificationchannel/v1/tel%3A%2B15551230009/channels/ch-7/callback",
            "http://127.0.0.2:8080/notificationchannel/v1/tel%3A%2B15551230009/channels/ch-7/callback",
        ] {
            assert_ne!(callback_key(other), key, "{other}");
        }
        assert_eq!(callback_key("ftp://h/x"), None);
        assert_eq!(callback_key("http://u:p@h/x"), None);
        assert_eq!(callback_key("/relative"), None);
        let base = "http://127.0.0.1:8080";
        assert!(under_channels(base, given));
        assert!(under_channels(
            base,
            "http://127.0.0.1:8080/notificationchannel/v1/x/channels/nope/callback"
        ));
        assert!(!under_channels(
            base,
            "http://127.0.0.1:9001/notificationchannel/v1/x"
        ));
        assert!(!under_channels(base, "http://127.0.0.1:8080/v1/chat/x"));
    }

    #[test]
    fn the_ids_header_lists_the_answer_in_order_and_is_absent_when_empty() {
        assert_eq!(webhook_ids([7]).as_deref(), Some("msg_7"));
        assert_eq!(
            webhook_ids([7, 9, 12]).as_deref(),
            Some("msg_7, msg_9, msg_12")
        );
        assert_eq!(webhook_ids([]), None);
    }

    #[test]
    fn long_polling_and_websockets_are_served() {
        assert_eq!(supported(ChannelType::LongPolling), Ok(()));
        assert_eq!(supported(ChannelType::WebSockets), Ok(()));
        for t in [ChannelType::OmaPush, ChannelType::NativeChannel] {
            assert_eq!(
                supported(t),
                Err(Refused::UnsupportedChannelType(t.as_str().to_owned()))
            );
        }
    }

    #[test]
    fn a_lifetime_is_granted_within_a_day() {
        let cases = [
            (None, Ok(3600)),
            (Some(0), Ok(3600)),
            (Some(60), Ok(60)),
            (Some(86_400), Ok(86_400)),
            (Some(1_000_000), Ok(86_400)),
        ];
        for (asked, granted) in cases {
            assert_eq!(granted_lifetime(asked), granted, "{asked:?}");
        }
        assert!(granted_lifetime(Some(-1)).is_err());
    }

    #[test]
    fn max_notifications_is_granted_at_most_the_cap() {
        assert_eq!(max_notifications(None), Ok(20));
        assert_eq!(max_notifications(Some(0)), Ok(20));
        assert_eq!(max_notifications(Some(1)), Ok(1));
        assert_eq!(max_notifications(Some(100)), Ok(100));
        assert_eq!(max_notifications(Some(101)), Ok(100));
        assert_eq!(max_notifications(Some(1000)), Ok(100));
        for bad in [-1, -3, i64::MIN] {
            assert!(max_notifications(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_wait_is_at_most_the_servers() {
        let server = Duration::from_secs(25);
        assert_eq!(granted_wait(None, server), Ok(25));
        assert_eq!(granted_wait(Some(0), server), Ok(25));
        assert_eq!(granted_wait(Some(2), server), Ok(2));
        assert_eq!(granted_wait(Some(600), server), Ok(25));
        assert_eq!(granted_wait(None, Duration::from_millis(1500)), Ok(2));
        assert!(granted_wait(Some(-1), server).is_err());
    }

    #[test]
    fn a_lifetime_ends_its_seconds_after_it_starts() {
        assert_eq!(expiry(1_000, 60), 61_000);
        assert_eq!(expiry(1_000, 0), 1_000);
        assert_eq!(expiry(i64::MAX - 5, 86_400), i64::MAX, "saturates");
    }

    #[test]
    fn channels_per_user_are_limited() {
        assert_eq!(may_create(9, 10), Ok(()));
        assert_eq!(
            may_create(10, 10),
            Err(Refused::TooMany {
                what: "notification channels",
                limit: 10
            })
        );
    }
}
