//! Seed 7.1.2 / 7.1.4 (start a 1-1 or group chat), 7.1.3 (extend to a group), 7.1.5 (end) and
//! 7.1.6 (cancel an invitation): the flows that create a session, add invitees to it or take
//! them or the session away, with the invitation quotas they spend.
//!
//! Owns `State::sessions` and `State::user_sessions` together with [`super::put_or_release`]:
//! a session is in both maps while it has not ended and in neither once it has.

use super::page::{self, PageRequest};
use super::participants::invitation_gone;
use super::quota;
use super::state::{Invitation, Participant, Session, State};
use super::timers::next_invitation_seq;
use super::views;
use super::{Change, Chat, Outbox, durable, missing, put_or_release, too_many};
use crate::store::now_ms;
use crate::urls::Urls;
use netapi_chat_api::{
    ChatSessionInformation, ChatSessionList, Created, EventType, ParticipantInformation,
    ParticipantList, ParticipantStatus,
};
use netapi_chat_runtime::ApiError;
use std::sync::Arc;
use std::time::Duration;

impl Chat {
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

/// Ends a session for everyone still in it except `by` (who is told otherwise, when it is
/// given): connected participants get `SessionEnded`, pending invitees `SessionCancelled`;
/// every status becomes `Disconnected`.
pub(super) fn end_for_all(urls: &Urls, s: &mut Session, why: &str, by: Option<&str>) -> Outbox {
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
