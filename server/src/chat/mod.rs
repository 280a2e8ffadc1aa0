//! The chat core: the state machine of subscriptions, sessions, participants and messages, and
//! the notifications each change causes.
//!
//! Every operation takes the lock once, checks the rules, changes the state, queues the
//! notifications it implies on the subscribers' delivery queues (still under the lock, so
//! notification order follows state order), and returns the caller's view. No I/O happens
//! under the lock: queues are in-memory channels drained by the delivery tasks of
//! [`crate::notify`].

pub mod state;
pub mod views;

use crate::notify::{Notification, Queue, RetryPolicy, Target};
use crate::urls::Urls;
use netapi_chat_api::{
    ChatMessage, ChatMessageList, ChatSessionInformation, ChatSessionList, ChatSubscription,
    ChatSubscriptionList, Created, EventType, Link, MessageStatus, NotificationFormat,
    ParticipantInformation, ParticipantList, ParticipantSessionStatus, ParticipantStatus,
    ResourceReference, ServiceException, SubscriptionCancellationNotification,
};
use netapi_chat_runtime::{ApiError, Format};
use slog::{Logger, info};
use state::{Invitation, Message, Participant, Session, State, Subscription, status_rank};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Longest subscription `duration` granted (one year); longer requests get this.
pub const MAX_SUBSCRIPTION_SECS: i64 = 365 * 24 * 3600;

/// Most participants a session may have, the originator included (`POL1017` above).
pub const MAX_PARTICIPANTS: usize = 100;

/// Notifications produced by one operation: (user address, notification).
type Outbox = Vec<(String, Notification)>;

/// Settings of the core.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How long an invitation waits for an answer.
    pub invitation_timeout: Duration,
    /// How notifications are delivered.
    pub retry: RetryPolicy,
}

/// The chat system: all state, and what runs on it.
pub struct Chat {
    state: Mutex<State>,
    urls: Urls,
    settings: Settings,
    client: reqwest::Client,
    log: Logger,
}

fn missing(what: &str) -> ApiError {
    ApiError::not_found(what)
}

impl Chat {
    /// A chat system with no users yet.
    pub fn new(urls: Urls, settings: Settings, log: Logger) -> Arc<Chat> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Arc::new(Chat {
            state: Mutex::new(State::default()),
            urls,
            settings,
            client,
            log,
        })
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

    /// Queues each notification on every subscription of its user.
    fn dispatch(&self, state: &State, outbox: Outbox) {
        for (user, n) in outbox {
            let Some(ids) = state.user_subscriptions.get(&user) else {
                continue;
            };
            for id in ids {
                if let Some(sub) = state.subscriptions.get(id) {
                    let mut n = n.clone();
                    n.set_callback_data(sub.callback.callback_data.clone());
                    sub.queue.push(n);
                }
            }
        }
    }

    // ------------------------------------------------------------------ subscriptions

    fn subscription_view(&self, sub: &Subscription) -> ChatSubscription {
        ChatSubscription {
            callback_reference: sub.callback.clone(),
            duration: Some(sub.duration),
            client_correlator: sub.client_correlator.clone(),
            resource_url: Some(self.urls.subscription(&sub.user, &sub.id)),
        }
    }

    /// Seed 7.1.1: subscribe.
    pub fn create_subscription(
        self: &Arc<Self>,
        user: &str,
        body: ChatSubscription,
    ) -> Result<Created<ChatSubscription>, ApiError> {
        let notify_url = body.callback_reference.notify_url.trim().to_owned();
        let parsed = reqwest::Url::parse(&notify_url).map_err(|e| {
            ApiError::invalid_input(format!("callbackReference.notifyURL `{notify_url}`: {e}"))
        })?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(ApiError::invalid_input(format!(
                "callbackReference.notifyURL `{notify_url}` must be an absolute http or https URL"
            )));
        }
        let duration = body.duration.unwrap_or(0).min(MAX_SUBSCRIPTION_SECS);
        if duration < 0 {
            return Err(ApiError::invalid_input(format!(
                "duration {duration} must be 0 (no expiry) or a number of seconds"
            )));
        }
        let mut state = self.lock();
        if let Some(c) = &body.client_correlator
            && let Some(existing) = state
                .subscriptions
                .values()
                .find(|s| s.user == user && s.client_correlator.as_deref() == Some(c))
        {
            let view = self.subscription_view(existing);
            let location = view.resource_url.clone().unwrap_or_default();
            return Ok(Created {
                location,
                body: view,
            });
        }
        let id = state.new_id("sub");
        let format = match body.callback_reference.notification_format {
            Some(NotificationFormat::Xml) => Format::Xml,
            _ => Format::Json,
        };
        let mut callback = body.callback_reference;
        callback.notify_url = notify_url.clone();
        callback.notification_format = Some(
            callback
                .notification_format
                .unwrap_or(NotificationFormat::Json),
        );
        let queue = Queue::start(
            Target {
                notify_url,
                format,
                subscription: id.clone(),
            },
            self.client.clone(),
            self.settings.retry.clone(),
            self.log.clone(),
        );
        let expires_at =
            (duration > 0).then(|| Instant::now() + Duration::from_secs(duration.unsigned_abs()));
        let sub = Subscription {
            id: id.clone(),
            user: user.to_owned(),
            callback,
            duration,
            expires_at,
            client_correlator: body.client_correlator,
            queue,
        };
        let view = self.subscription_view(&sub);
        state.subscriptions.insert(id.clone(), sub);
        state
            .user_subscriptions
            .entry(user.to_owned())
            .or_default()
            .push(id.clone());
        drop(state);
        if duration > 0 {
            let chat = Arc::clone(self);
            let secs = duration.unsigned_abs();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(secs)).await;
                chat.expire_subscription(&id);
            });
        }
        info!(self.log, "subscription created"; "user" => user, "url" => &view.callback_reference.notify_url);
        let location = view.resource_url.clone().unwrap_or_default();
        Ok(Created {
            location,
            body: view,
        })
    }

    /// A subscription's `duration` ran out: tell its callback, then remove it.
    fn expire_subscription(&self, id: &str) {
        let mut state = self.lock();
        let Some(sub) = remove_subscription(&mut state, id) else {
            return;
        };
        sub.queue.push(Notification::Cancelled(
            SubscriptionCancellationNotification {
                reason: Some(ServiceException {
                    message_id: "SVC0001".to_owned(),
                    text: "A service error occurred: %1".to_owned(),
                    variables: vec![format!(
                        "subscription expired after its duration of {} s",
                        sub.duration
                    )],
                }),
                callback_data: sub.callback.callback_data.clone(),
                link: vec![Link {
                    rel: "ChatSubscription".to_owned(),
                    href: self.urls.subscription(&sub.user, &sub.id),
                }],
            },
        ));
        // Dropping the queue lets the cancellation notification go out, then ends the task.
    }

    /// The user's subscriptions.
    pub fn list_subscriptions(&self, user: &str) -> ChatSubscriptionList {
        let state = self.lock();
        let subs = state
            .user_subscriptions
            .get(user)
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| state.subscriptions.get(id))
                    .map(|s| self.subscription_view(s))
                    .collect()
            })
            .unwrap_or_default();
        ChatSubscriptionList {
            chat_subscription: subs,
            resource_url: self.urls.subscriptions(user),
        }
    }

    /// One subscription of the user.
    pub fn get_subscription(&self, user: &str, id: &str) -> Result<ChatSubscription, ApiError> {
        let state = self.lock();
        match state.subscriptions.get(id) {
            Some(s) if s.user == user => Ok(self.subscription_view(s)),
            _ => Err(missing(&self.urls.subscription(user, id))),
        }
    }

    /// Seed 7.1.1: unsubscribe. Nothing more is delivered to the callback.
    pub fn delete_subscription(&self, user: &str, id: &str) -> Result<(), ApiError> {
        let mut state = self.lock();
        match state.subscriptions.get(id) {
            Some(s) if s.user == user => {}
            _ => return Err(missing(&self.urls.subscription(user, id))),
        }
        if let Some(sub) = remove_subscription(&mut state, id) {
            sub.queue.cancel();
        }
        Ok(())
    }

    // ------------------------------------------------------------------ sessions

    fn visible<'a>(
        &self,
        state: &'a State,
        user: &str,
        sid: &str,
    ) -> Result<&'a Session, ApiError> {
        match state.sessions.get(sid) {
            Some(s) if s.participant(user).is_some_and(Participant::sees_session) => Ok(s),
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
            Some(s) if s.participant(user).is_some_and(Participant::sees_session) => Ok(s),
            _ => Err(missing(&self.urls.session(user, sid))),
        }
    }

    /// Seed 7.1.2 / 7.1.4: start a 1-1 or group chat; invites every listed participant.
    pub fn create_session(
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
        if invitees.len() + 1 > MAX_PARTICIPANTS {
            return Err(too_many_participants());
        }
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
        let id = state.new_id("sess");
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
            let seq = next_invitation_seq();
            timers.push((p.address.clone(), seq));
            participants.push(Participant {
                address: p.address,
                name: p.name,
                is_originator: false,
                status: ParticipantStatus::Invited,
                invitation: Invitation::Pending { seq },
                invited_by: user.to_owned(),
            });
        }
        let session = Session {
            id: id.clone(),
            subject: body.subject,
            originator: user.to_owned(),
            originator_name,
            client_correlator: body.client_correlator,
            group: participants.len() > 2,
            participants,
            messages: Vec::new(),
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
        state.sessions.insert(id.clone(), session);
        self.dispatch(&state, outbox);
        drop(state);
        self.start_invitation_timers(&id, timers);
        Ok(Created {
            location: self.urls.session(user, &id),
            body: view,
        })
    }

    fn start_invitation_timers(self: &Arc<Self>, sid: &str, timers: Vec<(String, u64)>) {
        for (address, seq) in timers {
            let chat = Arc::clone(self);
            let sid = sid.to_owned();
            let after = self.settings.invitation_timeout;
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                chat.invitation_timed_out(&sid, &address, seq);
            });
        }
    }

    /// Seed 7.1.7 c: nobody answered the invitation in time. The invitee's status becomes
    /// `Disconnected`, the session disappears for it, and the inviter (and the invitee) get a
    /// `Timeout` event. A 1-1 session whose only invitation timed out ends.
    fn invitation_timed_out(&self, sid: &str, address: &str, seq: u64) {
        let mut state = self.lock();
        let Some(s) = state.sessions.get_mut(sid) else {
            return;
        };
        let Some(p) = s.participant_mut(address) else {
            return;
        };
        if p.invitation != (Invitation::Pending { seq }) {
            return;
        }
        p.invitation = Invitation::TimedOut;
        p.status = ParticipantStatus::Disconnected;
        let inviter = p.invited_by.clone();
        let text = format!("the invitation of {address} was not answered in time");
        let mut outbox = vec![
            (
                inviter.clone(),
                views::event(&self.urls, &inviter, s, EventType::Timeout, text.clone()),
            ),
            (
                address.to_owned(),
                views::event(&self.urls, address, s, EventType::Timeout, text),
            ),
        ];
        if let Some(p) = s.participant(address) {
            for other in s
                .connected_others(address)
                .into_iter()
                .filter(|o| *o != inviter)
            {
                outbox.push((
                    other.clone(),
                    views::participant_status(&self.urls, &other, s, &[p]),
                ));
            }
        }
        if !s.group && !s.ended {
            s.ended = true;
            outbox.extend(end_for_all(
                &self.urls,
                s,
                "the only invitation timed out",
                &inviter,
            ));
        }
        self.dispatch(&state, outbox);
    }

    /// The sessions the user takes part in.
    pub fn list_sessions(&self, user: &str) -> ChatSessionList {
        let state = self.lock();
        let sessions = state
            .user_sessions
            .get(user)
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| state.sessions.get(id))
                    .filter(|s| s.participant(user).is_some_and(Participant::sees_session))
                    .map(|s| views::session(&self.urls, user, s))
                    .collect()
            })
            .unwrap_or_default();
        ChatSessionList {
            chat_session_information: sessions,
            resource_url: self.urls.sessions(user),
        }
    }

    /// One session the user takes part in.
    pub fn get_session(&self, user: &str, sid: &str) -> Result<ChatSessionInformation, ApiError> {
        let state = self.lock();
        let s = self.visible(&state, user, sid)?;
        Ok(views::session(&self.urls, user, s))
    }

    /// Seed 7.1.5: the originator ends the session for everyone.
    pub fn end_session(&self, user: &str, sid: &str) -> Result<(), ApiError> {
        let mut state = self.lock();
        let urls = &self.urls;
        let s = self.visible_mut(&mut state, user, sid)?;
        if s.originator != user {
            return Err(ApiError::forbidden(
                "only the originator can end a session; leave it by POSTing status Disconnected to your participant status",
            ));
        }
        if s.ended {
            return Err(ApiError::conflict(format!(
                "session {sid} has already ended"
            )));
        }
        s.ended = true;
        let outbox = end_for_all(urls, s, "the originator ended the session", user);
        self.dispatch(&state, outbox);
        Ok(())
    }

    /// The session's participants.
    pub fn list_participants(&self, user: &str, sid: &str) -> Result<ParticipantList, ApiError> {
        let state = self.lock();
        let s = self.visible(&state, user, sid)?;
        Ok(ParticipantList {
            participant: s
                .participants
                .iter()
                .map(|p| views::participant(&self.urls, user, s, p))
                .collect(),
            resource_url: Some(self.urls.participants(user, sid)),
        })
    }

    /// Seed 7.1.3: invite more participants (a 1-1 session becomes a group session).
    pub fn add_participants(
        self: &Arc<Self>,
        user: &str,
        sid: &str,
        body: ParticipantList,
    ) -> Result<Created<ParticipantList>, ApiError> {
        let mut state = self.lock();
        let urls = &self.urls;
        let s = self.visible_mut(&mut state, user, sid)?;
        if s.ended {
            return Err(ApiError::conflict(format!(
                "session {sid} has ended; start a new one"
            )));
        }
        if s.participant(user).map(|p| p.status) != Some(ParticipantStatus::Connected) {
            return Err(ApiError::forbidden(
                "only a connected participant can invite others; accept or re-join first",
            ));
        }
        let mut new: Vec<ParticipantInformation> = Vec::new();
        for p in body.participant {
            if s.participant(&p.address).is_some() || new.iter().any(|q| q.address == p.address) {
                return Err(ApiError::conflict(format!(
                    "{} is already a participant of session {sid}",
                    p.address
                )));
            }
            new.push(p);
        }
        if s.participants.len() + new.len() > MAX_PARTICIPANTS {
            return Err(too_many_participants());
        }
        let mut timers = Vec::new();
        for p in new {
            let seq = next_invitation_seq();
            timers.push((p.address.clone(), seq));
            s.participants.push(Participant {
                address: p.address,
                name: p.name,
                is_originator: false,
                status: ParticipantStatus::Invited,
                invitation: Invitation::Pending { seq },
                invited_by: user.to_owned(),
            });
        }
        s.group = true;
        let mut outbox: Outbox = timers
            .iter()
            .map(|(a, _)| (a.clone(), views::invitation(urls, a, s)))
            .collect();
        // The connected participants other than the inviter learn who was invited.
        let invited: Vec<&Participant> = timers
            .iter()
            .filter_map(|(a, _)| s.participant(a))
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
        };
        let new_addresses: Vec<String> = timers.iter().map(|(a, _)| a.clone()).collect();
        for a in new_addresses {
            state
                .user_sessions
                .entry(a)
                .or_default()
                .push(sid.to_owned());
        }
        self.dispatch(&state, outbox);
        drop(state);
        self.start_invitation_timers(sid, timers);
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
    pub fn cancel_invitation(&self, user: &str, sid: &str, pid: &str) -> Result<(), ApiError> {
        let mut state = self.lock();
        let urls = &self.urls;
        let s = self.visible_mut(&mut state, user, sid)?;
        let p = s
            .participant(pid)
            .ok_or_else(|| missing(&urls.participant(user, sid, pid)))?;
        if !matches!(p.invitation, Invitation::Pending { .. }) {
            return Err(ApiError::conflict(format!(
                "the invitation of {pid} is not pending any more; only an unanswered invitation can be cancelled"
            )));
        }
        if p.invited_by != user {
            return Err(ApiError::forbidden(format!(
                "only {} , who invited {pid}, can cancel the invitation",
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
        if let Some(p) = s.participant(pid) {
            // The other connected participants: not the invitee, and not the inviter, who
            // has its answer already (as everywhere, the actor is not notified of its act).
            for other in s.connected_others(pid).into_iter().filter(|o| o != user) {
                outbox.push((
                    other.clone(),
                    views::participant_status(urls, &other, s, &[p]),
                ));
            }
        }
        if !s.group && !s.ended {
            s.ended = true;
            outbox.extend(end_for_all(
                urls,
                s,
                "the only invitation was cancelled",
                user,
            ));
        }
        self.dispatch(&state, outbox);
        Ok(())
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
    pub fn update_participant_status(
        &self,
        user: &str,
        sid: &str,
        pid: &str,
        wanted: ParticipantStatus,
    ) -> Result<ParticipantSessionStatus, ApiError> {
        let mut state = self.lock();
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
        if s.ended {
            return Err(ApiError::conflict(format!("session {sid} has ended")));
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
            outbox.extend(end_for_all(urls, s, "the invitation was declined", pid));
        }
        self.dispatch(&state, outbox);
        Ok(ParticipantSessionStatus { status: wanted })
    }

    // ------------------------------------------------------------------ messages

    /// Seed 7.1.9: send a message to the other connected participants.
    pub fn send_message(
        &self,
        user: &str,
        sid: &str,
        body: ChatMessage,
    ) -> Result<Created<ResourceReference>, ApiError> {
        let mut state = self.lock();
        let urls = &self.urls;
        let s = self.visible_mut(&mut state, user, sid)?;
        if let Some(c) = &body.client_correlator
            && let Some(m) = s
                .messages
                .iter()
                .find(|m| m.sender == user && m.client_correlator.as_deref() == Some(c))
        {
            let url = urls.message(user, sid, &m.id);
            return Ok(Created {
                location: url.clone(),
                body: ResourceReference { resource_url: url },
            });
        }
        if s.ended {
            return Err(ApiError::conflict(format!(
                "session {sid} has ended; messages can no longer be sent"
            )));
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
        let id = format!("msg-{}", uuid::Uuid::new_v4().simple());
        let message = Message {
            id: id.clone(),
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
        s.messages.push(message);
        self.dispatch(&state, outbox);
        let url = urls.message(user, sid, &id);
        Ok(Created {
            location: url.clone(),
            body: ResourceReference { resource_url: url },
        })
    }

    fn readable<'a>(&self, s: &'a Session, user: &str, mid: &str) -> Result<&'a Message, ApiError> {
        s.messages
            .iter()
            .find(|m| {
                m.id == mid && (m.sender == user || m.recipients.iter().any(|(r, _)| r == user))
            })
            .ok_or_else(|| missing(&self.urls.message(user, &s.id, mid)))
    }

    /// The messages the user sent or received in the session, oldest first.
    pub fn list_messages(&self, user: &str, sid: &str) -> Result<ChatMessageList, ApiError> {
        let state = self.lock();
        let s = self.visible(&state, user, sid)?;
        Ok(ChatMessageList {
            chat_message: s
                .messages
                .iter()
                .filter(|m| m.sender == user || m.recipients.iter().any(|(r, _)| r == user))
                .map(|m| views::message(&self.urls, user, s, m))
                .collect(),
            resource_url: self.urls.messages(user, sid),
        })
    }

    /// One message.
    pub fn get_message(&self, user: &str, sid: &str, mid: &str) -> Result<ChatMessage, ApiError> {
        let state = self.lock();
        let s = self.visible(&state, user, sid)?;
        let m = self.readable(s, user, mid)?;
        Ok(views::message(&self.urls, user, s, m))
    }

    /// A message's delivery status as the user sees it.
    pub fn get_message_status(
        &self,
        user: &str,
        sid: &str,
        mid: &str,
    ) -> Result<MessageStatus, ApiError> {
        let state = self.lock();
        let s = self.visible(&state, user, sid)?;
        let m = self.readable(s, user, mid)?;
        views::delivery_status(user, m)
            .ok_or_else(|| missing(&self.urls.message_status(user, sid, mid)))
    }

    /// Seed 7.1.10: a recipient confirms delivery (or display) of a message.
    pub fn confirm_delivery(
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
        let mut state = self.lock();
        let urls = &self.urls;
        let s = self.visible_mut(&mut state, user, sid)?;
        let sid_owned = s.id.clone();
        let idx = s
            .messages
            .iter()
            .position(|m| {
                m.id == mid && (m.sender == user || m.recipients.iter().any(|(r, _)| r == user))
            })
            .ok_or_else(|| missing(&urls.message(user, &sid_owned, mid)))?;
        let m = &mut s.messages[idx];
        if m.sender == user {
            return Err(ApiError::forbidden(
                "only a recipient can confirm delivery; the sender reads the status with GET",
            ));
        }
        let Some(entry) = m.recipients.iter_mut().find(|(r, _)| r == user) else {
            return Err(missing(&urls.message(user, &sid_owned, mid)));
        };
        if status_rank(status) <= status_rank(entry.1) {
            return Err(ApiError::conflict(format!(
                "message {mid} is already {} for {user}",
                entry.1
            )));
        }
        let was = entry.1;
        entry.1 = status;
        let mut reports = Vec::new();
        if status == MessageStatus::Displayed && m.report_displayed {
            reports.push(MessageStatus::Displayed);
        } else if m.report_delivered && was == MessageStatus::Sent {
            reports.push(MessageStatus::Delivered);
        }
        let m = &s.messages[idx];
        let outbox: Outbox = reports
            .into_iter()
            .map(|st| (m.sender.clone(), views::delivery(urls, s, m, user, st)))
            .collect();
        self.dispatch(&state, outbox);
        Ok(())
    }
}

/// A number no other invitation has: tells a timer whether its invitation is still the
/// participant's current one.
fn next_invitation_seq() -> u64 {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn too_many_participants() -> ApiError {
    ApiError::policy(
        "POL1017",
        "Too many participants: at most %1 per session",
        MAX_PARTICIPANTS.to_string(),
    )
}

fn remove_subscription(state: &mut State, id: &str) -> Option<Subscription> {
    let sub = state.subscriptions.remove(id)?;
    if let Some(ids) = state.user_subscriptions.get_mut(&sub.user) {
        ids.retain(|i| i != id);
        if ids.is_empty() {
            state.user_subscriptions.remove(&sub.user);
        }
    }
    Some(sub)
}

/// Ends a session for everyone still in it except `by`: connected participants get
/// `SessionEnded`, pending invitees `SessionCancelled`; every status becomes `Disconnected`.
fn end_for_all(urls: &Urls, s: &mut Session, why: &str, by: &str) -> Outbox {
    let mut outbox = Outbox::new();
    let sid = s.id.clone();
    let mut tell = Vec::new();
    for p in s.participants.iter_mut() {
        let event = match (p.status, p.invitation) {
            (_, Invitation::Pending { .. }) => Some(EventType::SessionCancelled),
            (ParticipantStatus::Connected, _) => Some(EventType::SessionEnded),
            _ => None,
        };
        if let Invitation::Pending { .. } = p.invitation {
            p.invitation = Invitation::Cancelled;
        }
        p.status = ParticipantStatus::Disconnected;
        if let Some(e) = event
            && p.address != by
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
