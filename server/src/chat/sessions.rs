//! Seed 7.1.2 / 7.1.4 (start a 1-1 or group chat), 7.1.3 (extend to a group), 7.1.5 (end) and
//! 7.1.6 (cancel an invitation): the flows that create a session, add invitees to it or take
//! them or the session away, with the invitation quotas they spend.
//!
//! Its flows change sessions only through `Chat::apply`, which puts a session in with
//! `State::put_session` and, once it has ended, takes it out with `State::take_session`
//! ([`super::put_or_release`]): a session is in the state's maps (and counted in its tally)
//! while it has not ended and in none once it has.
//!
//! Rules (plain functions, tested below): [`invitees`] and [`may_start`] check a start,
//! [`start`] makes the session, [`extend`], [`end`] and [`cancel`] decide the other flows.

use super::page::{self, PageRequest};
use super::participants::invitation_gone;
use super::quota;
use super::refused::Refused;
use super::state::{Invitation, Participant, Session, State};
use super::timers::next_invitation_seq;
use super::views;
use super::{Chat, Decision, Outbox, durable};
use crate::store::now_ms;
use crate::urls::Urls;
use netapi_chat_api::{
    ChatSessionInformation, ChatSessionList, Created, EventType, ParticipantInformation,
    ParticipantList, ParticipantStatus,
};
use netapi_chat_runtime::ApiError;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

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

    /// The verdict of the inviter's quotas (see [`quota`]) on sending invitations to `to` now.
    /// Reads only; the invitations count against the rate once the flow's rule accepted
    /// them ([`Chat::spend_invitations`]).
    fn invitation_quota(
        &self,
        state: &mut State,
        inviter: &str,
        to: &[&str],
        now: Instant,
    ) -> Result<(), Refused> {
        let (sent_recently, wait) = state.invitations_sent.recent(inviter, now);
        let sent = state.pending_sent(inviter);
        let out = quota::Outstanding {
            pending: sent.map_or(0, |per_invitee| per_invitee.values().sum()),
            pending_to_one: to
                .iter()
                .map(|a| {
                    sent.and_then(|per_invitee| per_invitee.get(*a))
                        .copied()
                        .unwrap_or(0)
                })
                .max()
                .unwrap_or(0),
            sent_recently,
            waiting_for_one: to
                .iter()
                .map(|a| state.pending_received(a))
                .max()
                .unwrap_or(0),
        };
        quota::decide(out, to.len(), self.settings.limits.invitations)
            .map_err(|r| Refused::Quota(r, wait))
    }

    /// Counts `n` invitations just accepted against the inviter's rate.
    fn spend_invitations(&self, state: &mut State, inviter: &str, n: usize, now: Instant) {
        state.invitations_sent.record(inviter, n, now);
    }

    /// Seed 7.1.2 / 7.1.4: start a 1-1 or group chat; invites every listed participant.
    /// `owner` is the token asking (`Principal::token_id`), whose share of the server-wide
    /// cap the session counts against.
    pub async fn create_session(
        self: &Arc<Self>,
        user: &str,
        owner: &str,
        body: ChatSessionInformation,
    ) -> Result<Created<ChatSessionInformation>, ApiError> {
        seed_form(user, &body).map_err(|r| r.into_api(String::new))?;
        self.start_session(
            user,
            owner,
            body,
            false,
            |_| true,
            |urls, user, s| (urls.session(user, &s.id), views::session(urls, user, s)),
        )
        .await
    }

    /// The one start of a session, whichever face asked: `body` in the seed's form, `group`
    /// true for a group chat even with one invitee, `fits` whether a session is one the face
    /// shows where it answers (a replayed correlator's session of another kind is `409
    /// SVC0005`, never a `Location` that is `404`), `shown` the face's view of the new (or
    /// replayed) session and its URL, so each face answers in its own shape while the rules,
    /// limits and notifications stay one; `owner` the token asking.
    pub(super) async fn start_session<V>(
        self: &Arc<Self>,
        user: &str,
        owner: &str,
        mut body: ChatSessionInformation,
        group: bool,
        fits: impl Fn(&Session) -> bool,
        shown: impl Fn(&Urls, &str, &Session) -> (String, V),
    ) -> Result<Created<V>, ApiError> {
        body.client_correlator = super::correlator(body.client_correlator);
        let limits = self.settings.limits;
        let (originator_name, invitees) = invitees(
            user,
            body.originator_name,
            body.participant,
            limits.participants_per_session,
            group,
        )
        .map_err(|r| r.into_api(String::new))?;
        let (id, view, timers, rx) = {
            let mut state = self.write_state();
            if let Some(c) = &body.client_correlator
                && let Some(s) = state.started_with(user, c)
            {
                same_start(s, body.subject.as_deref(), &invitees)
                    .and_then(|()| fitting(s, &fits))
                    .map_err(|r| r.into_api(String::new))?;
                let (location, body) = shown(&self.urls, user, s);
                return Ok(Created { location, body });
            }
            let now = Instant::now();
            let to: Vec<&str> = invitees.iter().map(|p| p.address.as_str()).collect();
            let quota = self.invitation_quota(&mut state, user, &to, now);
            may_start(state.open_sessions(user), limits.sessions_per_user, quota)
                .and_then(|()| limits.in_all.room_for(&state, super::Held::Sessions, owner))
                .map_err(|r| r.into_api(String::new))?;
            self.spend_invitations(&mut state, user, to.len(), now);
            let (id, seq) = state.new_id("sess");
            let invited = self.invite(invitees);
            let timers = pending_timers(&invited);
            let d = start(
                &self.urls,
                user,
                Start {
                    id: id.clone(),
                    seq,
                    subject: body.subject,
                    originator_name,
                    client_correlator: body.client_correlator,
                    group,
                    owner: owner.to_owned(),
                },
                invited,
            );
            let view = shown(&self.urls, user, &d.session);
            (id, view, timers, self.apply(&mut state, d))
        };
        durable(rx).await?;
        for (address, seq, deadline) in timers {
            self.invitation_timer(id.clone(), address, seq, deadline);
        }
        let (location, body) = view;
        Ok(Created { location, body })
    }

    /// Each invitee with a fresh pending invitation.
    fn invite(
        &self,
        invitees: Vec<ParticipantInformation>,
    ) -> Vec<(ParticipantInformation, Invitation)> {
        invitees
            .into_iter()
            .map(|p| (p, self.invitation().0))
            .collect()
    }

    /// One page of the sessions the user takes part in, in the sessions' creation order.
    ///
    /// The user's index is ordered by `seq` ([`State::sessions_of_after`]), so a page is the
    /// range after its cursor, read up to one past the page, and only the page's sessions are
    /// turned into views. The index holds every session not ended that names the user, also
    /// as declined, left, timed out or cancelled (ended sessions leave it), which the page
    /// passes over: bounded by the server-wide session cap (`NETAPI_CHAT_MAX_SESSIONS`), not
    /// by the user's own limits. (Before, each page walked and sorted the whole index.)
    pub fn list_sessions(&self, user: &str, req: PageRequest) -> ChatSessionList {
        let state = self.read_state();
        let sessions = state
            .sessions_of_after(user, req.after)
            .filter(|s| s.participant(user).is_some_and(Participant::sees_session));
        let p = page::within(
            page::page(sessions.map(|s| (s.seq, s)), req),
            page::PAGE_BYTES,
            |s| listed_bytes(s, user),
            |s| s.seq,
        );
        let resource_url = self.urls.chat_sessions(user);
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
        let state = self.read_state();
        let s = self.visible(&state, user, sid)?;
        Ok(views::session(&self.urls, user, s))
    }

    /// Seed 7.1.5: the originator ends the session for everyone. Every participant still in
    /// it is told, the originator included (the seed's figure notifies the ending application
    /// too), and the session is gone at once for all of them (404 on it and every
    /// sub-resource): "delete the resource", as the seed says. The rule is `end`.
    pub async fn delete_session(&self, user: &str, sid: &str) -> Result<(), ApiError> {
        let rx = {
            let mut state = self.write_state();
            let s = self.visible(&state, user, sid)?;
            let d = end(&self.urls, s, user).map_err(|r| r.into_api(String::new))?;
            self.apply(&mut state, d)
        };
        durable(rx).await
    }

    /// Seed 7.1.3: invite more participants (a 1-1 session becomes a group session). The
    /// rule is `extend`.
    pub async fn add_participants(
        self: &Arc<Self>,
        user: &str,
        sid: &str,
        body: ParticipantList,
    ) -> Result<Created<ParticipantList>, ApiError> {
        let urls = &self.urls;
        let (list, timers, rx) = {
            let mut state = self.write_state();
            let now = Instant::now();
            let to: Vec<&str> = body
                .participant
                .iter()
                .map(|p| p.address.as_str())
                .collect();
            // A list longer than a session holds is refused by the rule whatever the session
            // (an address twice, or too many): the quotas, which read every listed address's
            // sessions under this lock, are not worked out for it.
            let limit = self.settings.limits.participants_per_session;
            let quota = if to.len() <= limit {
                self.invitation_quota(&mut state, user, &to, now)
            } else {
                Ok(())
            };
            let n = to.len();
            let s = self.visible(&state, user, sid)?;
            let invited = self.invite(body.participant);
            let timers = pending_timers(&invited);
            let d = extend(urls, s, user, invited, limit, quota)
                .map_err(|r| r.into_api(String::new))?;
            self.spend_invitations(&mut state, user, n, now);
            let s = &d.session;
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
            (list, timers, self.apply(&mut state, d))
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

    /// Seed 7.1.6: the inviter withdraws an unanswered invitation. The rule is `cancel`.
    pub async fn cancel_invitation(
        &self,
        user: &str,
        sid: &str,
        pid: &str,
    ) -> Result<(), ApiError> {
        let rx = {
            let mut state = self.write_state();
            let s = self.visible(&state, user, sid)?;
            let d = cancel(&self.urls, s, user, pid)
                .map_err(|r| r.into_api(|| self.urls.participant(user, sid, pid)))?;
            self.apply(&mut state, d)
        };
        durable(rx).await
    }
}

/// The timers the pending invitations need: (invitee, invitation seq, deadline).
fn pending_timers(invited: &[(ParticipantInformation, Invitation)]) -> Vec<(String, u64, i64)> {
    invited
        .iter()
        .filter_map(|(p, i)| match *i {
            Invitation::Pending { seq, deadline_ms } => Some((p.address.clone(), seq, deadline_ms)),
            _ => None,
        })
        .collect()
}

/// Seed 7.1.2 / 7.1.4, the rule on what a seed start request carries of OMA 2012's flat
/// one-to-one form (the two share one structure): `originatorAddress`, when given, must be
/// the URL's `userId`, and `tParticipantAddress` one of the `participant`s (this face invites
/// those). Silently dropped before, so a client that meant another originator or invitee
/// got a `201` for a session without them (the XML review); the OMA 2012 face refuses the
/// same contradictions ([`super::oma2012::request`]).
fn seed_form(user: &str, body: &ChatSessionInformation) -> Result<(), Refused> {
    originator_is(user, body.originator_address.as_deref())?;
    if let Some(t) = body.t_participant_address.as_deref()
        && !body.participant.iter().any(|p| p.address == t)
    {
        return Err(Refused::Contradicts {
            field: "tParticipantAddress",
            why: "on this face the invitees are `participant`: name it there (or start an \
                  OMA 2012 one-to-one chat at …/oneToOne/{otherUserId})"
                .to_owned(),
        });
    }
    Ok(())
}

/// The rule on a start request's `originatorAddress`, on either face: when given, it is the
/// URL's `userId` (the user the application acts for starts the chat).
pub(super) fn originator_is(user: &str, originator: Option<&str>) -> Result<(), Refused> {
    match originator {
        Some(o) if o != user => Err(Refused::Contradicts {
            field: "originatorAddress",
            why: format!("must be the userId of the URL, {user}"),
        }),
        _ => Ok(()),
    }
}

/// Seed 7.1.2 / 7.1.4, the rule on a start request's list: the originator's name
/// (`originatorName`, or the name of its own entry in the list, which is not an invitee) and
/// the invitees. An address listed twice, more participants than `limit` (the originator
/// counts), or a list with nobody else unless `alone` (an OMA 2012 group, which OMA lets
/// start with no participant and grow by adding them) are refused.
fn invitees(
    user: &str,
    originator_name: Option<String>,
    listed: Vec<ParticipantInformation>,
    limit: usize,
    alone: bool,
) -> Result<(Option<String>, Vec<ParticipantInformation>), Refused> {
    let mut originator_name = originator_name;
    let mut invitees: Vec<ParticipantInformation> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    for p in listed {
        if p.address == user {
            originator_name = originator_name.or(p.name);
            continue;
        }
        if !seen.insert(p.address.clone()) {
            return Err(Refused::Duplicate(p.address));
        }
        invitees.push(p);
    }
    if invitees.is_empty() && !alone {
        return Err(Refused::NoInvitee);
    }
    if invitees.len() + 1 > limit {
        return Err(Refused::TooManyParticipants(limit));
    }
    Ok((originator_name, invitees))
}

/// Seed 7.1.2 / 7.1.4, the rule on a resend's content: the same `subject` and the same
/// invitees, in any order (a list of people, which a client may rebuild from a set when it
/// retries), answer the session; another request with the correlator is
/// refused (`409 SVC0005`, reference §3.4) rather than answered with a session that is not
/// the one asked for. A 1-1 session's one invitee must be the resend's only one; a group's
/// first invitees must be the resend's (an extension only adds after them, and how many the
/// start listed is not kept, so a resend listing the first few of a group's start answers it).
fn same_start(
    first: &Session,
    subject: Option<&str>,
    invitees: &[ParticipantInformation],
) -> Result<(), Refused> {
    let invited = first
        .participants
        .iter()
        .skip(1)
        .map(|p| p.address.as_str());
    let mut invited: Vec<&str> = if first.group {
        invited.take(invitees.len()).collect()
    } else {
        invited.collect()
    };
    let mut asked: Vec<&str> = invitees.iter().map(|p| p.address.as_str()).collect();
    invited.sort_unstable();
    asked.sort_unstable();
    let same_invitees = invited == asked;
    if first.subject.as_deref() == subject && same_invitees {
        Ok(())
    } else {
        Err(Refused::reused(first.client_correlator.as_deref()))
    }
}

/// A replayed session is answered only where the face asking shows it (`fits`): a
/// correlator first used for a one-to-one chat, then for a group (or another peer), is
/// another request (`409 SVC0005`).
fn fitting(first: &Session, fits: impl Fn(&Session) -> bool) -> Result<(), Refused> {
    if fits(first) {
        Ok(())
    } else {
        Err(Refused::reused(first.client_correlator.as_deref()))
    }
}

/// Seed 7.1.2 / 7.1.4, the rule on the originator: a user connected to `open_sessions`
/// sessions may start one more below `limit`, and then only within its invitation quotas
/// (their verdict, `quota`).
fn may_start(
    open_sessions: usize,
    limit: usize,
    quota: Result<(), Refused>,
) -> Result<(), Refused> {
    if open_sessions >= limit {
        return Err(Refused::TooMany {
            what: "open sessions of this user",
            limit,
        });
    }
    quota
}

/// What a new session is made of, besides its participants.
struct Start {
    id: String,
    seq: u64,
    subject: Option<String>,
    originator_name: Option<String>,
    client_correlator: Option<String>,
    /// Asked for as a group chat (the OMA 2012 face's `group/`), whatever the invitees' count.
    group: bool,
    /// The token that starts it ([`super::state::Owners`]).
    owner: String,
}

/// Seed 7.1.2 / 7.1.4, the new session: the originator `Connected`, each invitee `Invited`
/// with its invitation, a group session when more than one was invited (or a group was asked
/// for); each invitee is sent its invitation, and the creator of a group asked for as one
/// (OMA 2012) a `chatEventNotification` `Successful`, then the roster as a
/// `participantStatusNotification`.
fn start(
    urls: &Urls,
    user: &str,
    new: Start,
    invited: Vec<(ParticipantInformation, Invitation)>,
) -> Decision {
    let new_group = new.group;
    let mut participants = vec![Participant {
        address: user.to_owned(),
        name: new.originator_name.clone(),
        is_originator: true,
        status: ParticipantStatus::Connected,
        invitation: Invitation::None,
        invited_by: user.to_owned(),
    }];
    participants.extend(
        invited
            .into_iter()
            .map(|(p, invitation)| invitee(p, invitation, user)),
    );
    let session = Session {
        id: new.id,
        seq: new.seq,
        subject: new.subject,
        originator: user.to_owned(),
        originator_name: new.originator_name,
        client_correlator: new.client_correlator,
        group: new.group || participants.len() > 2,
        participants,
        adhoc: false,
        ended: false,
        changed_ms: None,
        owner: Some(new.owner),
    };
    let mut outbox: Vec<_> = session
        .participants
        .iter()
        .skip(1)
        .map(|p| {
            (
                p.address.clone(),
                views::invitation(urls, &p.address, &session),
            )
        })
        .collect();
    // A group made on the OMA 2012 face (`new.group`): its creator is told it is set up, as
    // the GSMA gateways did, whose clients wait for that `Successful` before they go on.
    if new_group {
        outbox.push((
            user.to_owned(),
            views::event(
                urls,
                user,
                &session,
                EventType::Successful,
                "group chat session set up".to_owned(),
            ),
        ));
        // ... and then the roster it set up (itself `Connected`, each invitee `Invited`): the
        // GSMA gateways' `participantStatusNotification` after `Successful`.
        let everyone: Vec<&Participant> = session.participants.iter().collect();
        outbox.push((
            user.to_owned(),
            views::participant_status(urls, user, &session, &everyone),
        ));
    }
    Decision { session, outbox }
}

/// A participant newly invited by `by` with `invitation` (a start's invitees, an extension's
/// newcomers): one construction, so the two cannot disagree on an invitee's state.
fn invitee(p: ParticipantInformation, invitation: Invitation, by: &str) -> Participant {
    Participant {
        address: p.address,
        name: p.name,
        is_originator: false,
        status: ParticipantStatus::Invited,
        invitation,
        invited_by: by.to_owned(),
    }
}

/// Whether `p`, already listed in a session, may be invited to it again: someone who is not
/// in it any more (declined, did not answer in time, had the invitation withdrawn, or left),
/// except its originator (who rejoins by itself). An invited or connected participant is
/// already in it (`409`).
fn invitable_again(p: &Participant) -> bool {
    p.status == ParticipantStatus::Disconnected && !p.is_originator
}

/// Seed 7.1.3, the rule: `user` invites `invited` into `s` (which it sees). Only a connected
/// participant invites; nobody listed twice (`POL0013`, as a start) nor already in the session
/// (someone who left it, declined or missed an invitation is invited again, [`invitable_again`]); at most `limit`
/// participants; then the inviter's quotas (`quota`). The session becomes a group session
/// (an ad hoc one an ordinary one);
/// each invitee gets its invitation and the other connected participants learn who was
/// invited.
fn extend(
    urls: &Urls,
    s: &Session,
    user: &str,
    invited: Vec<(ParticipantInformation, Invitation)>,
    limit: usize,
    quota: Result<(), Refused>,
) -> Result<Decision, Refused> {
    if s.participant(user).map(|p| p.status) != Some(ParticipantStatus::Connected) {
        return Err(Refused::NotConnected);
    }
    // A body that lists someone twice is refused as a start's is (`POL0013`), before the
    // session is looked at: the duplicate is the request's fault, not a conflict with it.
    let mut seen: HashSet<&str> = HashSet::new();
    for (p, _) in &invited {
        if !seen.insert(p.address.as_str()) {
            return Err(Refused::Duplicate(p.address.clone()));
        }
    }
    for (p, _) in &invited {
        if s.participant(&p.address)
            .is_some_and(|q| !invitable_again(q))
        {
            return Err(Refused::AlreadyParticipant {
                address: p.address.clone(),
                sid: s.id.clone(),
            });
        }
    }
    // Someone invited again keeps their place in the list: only newcomers count.
    let newcomers = invited
        .iter()
        .filter(|(p, _)| s.participant(&p.address).is_none())
        .count();
    if s.participants.len() + newcomers > limit {
        return Err(Refused::TooManyParticipants(limit));
    }
    quota?;
    let mut s = s.clone();
    let new: Vec<String> = invited.iter().map(|(p, _)| p.address.clone()).collect();
    for (p, invitation) in invited {
        match s.participants.iter_mut().find(|q| q.address == p.address) {
            // Invited again: a new invitation (its own timer number), by this inviter.
            Some(q) => {
                q.name = p.name.or(q.name.take());
                q.status = ParticipantStatus::Invited;
                q.invitation = invitation;
                q.invited_by = user.to_owned();
            }
            None => s.participants.push(invitee(p, invitation, user)),
        }
    }
    s.group = true;
    // An OMA 2012 ad hoc chat extended (on the seed face) becomes an ordinary group chat: no
    // longer the pair's ad hoc chat, under `group/`, ended when idle as any other session
    // (`NETAPI_CHAT_SESSION_IDLE_SECS`, not the ad hoc chat's idle time).
    s.adhoc = false;
    let mut outbox: Outbox = new
        .iter()
        .map(|a| (a.clone(), views::invitation(urls, a, &s)))
        .collect();
    // The connected participants other than the inviter learn who was invited.
    let told: Vec<&Participant> = new.iter().filter_map(|a| s.participant(a)).collect();
    for other in s.connected_others(user) {
        outbox.push((
            other.clone(),
            views::participant_status(urls, &other, &s, &told),
        ));
    }
    Ok(Decision { session: s, outbox })
}

/// Seed 7.1.5, the rule: only the originator ends a session; everyone still in it or who
/// could re-join it is told ([`end_for_all`]), the originator too, also after it left.
pub(super) fn end(urls: &Urls, s: &Session, user: &str) -> Result<Decision, Refused> {
    if s.originator != user {
        return Err(Refused::NotOriginator);
    }
    let mut s = s.clone();
    s.ended = true;
    let outbox = end_for_all(urls, &mut s, "the originator ended the session", None);
    Ok(Decision { session: s, outbox })
}

/// Seed 7.1.6, the rule: `user` withdraws the invitation of `pid`. Only a pending invitation,
/// and only by whoever sent it. The invitee is told `SessionCancelled` and no longer sees the
/// session; the connected participants, the canceller included, see it `Disconnected`; a 1-1
/// session, whose only invitation this was, ends (its originator told `SessionEnded`).
fn cancel(urls: &Urls, s: &Session, user: &str, pid: &str) -> Result<Decision, Refused> {
    let p = s.participant(pid).ok_or(Refused::NotFound)?;
    // The originator was never invited: nothing to cancel, whoever asks.
    if p.is_originator {
        return Err(Refused::NotPending {
            pid: pid.to_owned(),
        });
    }
    // Whose it is first: to anyone but the inviter the answer is the same whatever the
    // invitation's state (`403`, for good), not a `409` that reads as "try again later"
    // (the outside review of 2026-12-07).
    if p.invited_by != user {
        return Err(Refused::NotInviter {
            inviter: p.invited_by.clone(),
            pid: pid.to_owned(),
        });
    }
    if !p.invitation.is_pending() {
        return Err(Refused::NotPending {
            pid: pid.to_owned(),
        });
    }
    let mut s = s.clone();
    if let Some(p) = s.participant_mut(pid) {
        p.invitation = Invitation::Cancelled;
        p.status = ParticipantStatus::Disconnected;
    }
    let mut outbox = vec![(
        pid.to_owned(),
        views::event(
            urls,
            pid,
            &s,
            EventType::SessionCancelled,
            format!("{user} withdrew the invitation"),
        ),
    )];
    // The canceller's own applications are told too (another device of the same user kept
    // showing the invitee `Invited`, or a 1-1 session that had ended): in a group, the
    // invitee's new status, as every other connected participant sees it; a 1-1 session,
    // which ends, `SessionEnded`, as when its originator deletes it.
    if s.group
        && let Some(p) = s.participant(pid)
        && s.participant(user)
            .is_some_and(|c| c.status == ParticipantStatus::Connected)
    {
        outbox.push((
            user.to_owned(),
            views::participant_status(urls, user, &s, &[p]),
        ));
    }
    let why = "the only invitation was cancelled";
    outbox.extend(invitation_gone(urls, &mut s, pid, user, why));
    if !s.group {
        let text = format!("session {}: {why}", s.id);
        outbox.push((
            user.to_owned(),
            views::event(urls, user, &s, EventType::SessionEnded, text),
        ));
    }
    Ok(Decision { session: s, outbox })
}

/// Whether nobody is in `s` any more: no participant `Connected`, no invitation pending (see
/// [`end_if_deserted`]).
pub(super) fn deserted(s: &Session) -> bool {
    !s.participants
        .iter()
        .any(|p| p.status == ParticipantStatus::Connected || p.invitation.is_pending())
}

/// The rule for a session nobody is in any more: with no participant `Connected` and no
/// invitation pending, it ends, and those who could have re-joined it (the originator, and
/// invitees who had accepted, all `Disconnected` now) are told `SessionEnded`. Before, such a
/// session stayed open for ever (a group whose originator left and whose invitees declined
/// or let their invitations time out): it counted against nobody's
/// `NETAPI_CHAT_MAX_SESSIONS_PER_USER` (only connected participants count), so one user
/// could keep any number of them in memory and on disk, beyond retention. Applied to every
/// decision ([`Chat::apply`]), so every way of leaving (leave, decline, time-out, cancel, on
/// either face) is covered. Nothing for a session already ended.
pub(super) fn end_if_deserted(urls: &Urls, s: &mut Session) -> Outbox {
    if s.ended || !deserted(s) {
        return Outbox::new();
    }
    s.ended = true;
    let why = format!("session {}: nobody is in it any more", s.id);
    let could_rejoin: Vec<String> = s
        .participants
        .iter()
        .filter(|p| p.has_joined())
        .map(|p| p.address.clone())
        .collect();
    could_rejoin
        .into_iter()
        .map(|a| {
            let n = views::event(urls, &a, s, EventType::SessionEnded, why.clone());
            (a, n)
        })
        .collect()
}

/// The rule on a session's idle time: `s` was last active (a message, a decision) at
/// `active_ms`; from `active_ms + idle_ms` on (`now_ms`) the server ends it for all
/// ([`end_for_all`]: whoever joined it told `SessionEnded` with `why`, pending invitees
/// `SessionCancelled`). Before that: `Err` with when to look again. An OMA 2012 ad hoc chat
/// with `NETAPI_CHAT_ADHOC_IDLE_SECS` (a later send opens a new one), any other session with
/// `NETAPI_CHAT_SESSION_IDLE_SECS` (`Chat::idle_sweeper`).
pub(super) fn idle(
    urls: &Urls,
    s: &Session,
    active_ms: i64,
    idle_ms: i64,
    now_ms: i64,
    why: &str,
) -> Result<Decision, i64> {
    let due = active_ms.saturating_add(idle_ms);
    if now_ms < due {
        return Err(due);
    }
    let mut s = s.clone();
    s.ended = true;
    let outbox = end_for_all(urls, &mut s, why, None);
    Ok(Decision { session: s, outbox })
}

/// Ends a session for everyone in it or who could re-join it, except `by` (who is told
/// otherwise, when it is given): whoever joined it (the originator, invitees who accepted),
/// connected or left, gets `SessionEnded`, as when the last one leaves
/// ([`end_if_deserted`]); pending invitees `SessionCancelled`; every status becomes
/// `Disconnected`. Before, one that had left (the originator included, which the spec
/// promises the notice) was told nothing, and learnt of the end only by a `404` on re-joining
/// (the timers review and the diff review of 2026-12-07).
pub(super) fn end_for_all(urls: &Urls, s: &mut Session, why: &str, by: Option<&str>) -> Outbox {
    let mut outbox = Outbox::new();
    let sid = s.id.clone();
    let mut tell = Vec::new();
    for p in s.participants.iter_mut() {
        let event = match (p.status, p.invitation) {
            (_, Invitation::Pending { .. }) => Some(EventType::SessionCancelled),
            (ParticipantStatus::Connected, _) => Some(EventType::SessionEnded),
            _ if p.has_joined() => Some(EventType::SessionEnded),
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

/// About what session `s` weighs in `viewer`'s list answer (`page::within`): its subject
/// and, per participant, its entry as XML writes it (its name, its address, and in its
/// `resourceURL` the viewer's and its own address percent-encoded, up to three bytes for one,
/// beside the session id, and about 250 bytes of elements and URL). A page of sessions is
/// bounded by what their rosters make, not only by their count: about 12 sessions of 100
/// participants with short addresses, some 6,000 elements, which a client's XML parser with
/// the usual 10,000-element cap (ours among them) still reads.
fn listed_bytes(s: &Session, viewer: &str) -> usize {
    let roster: usize = s
        .participants
        .iter()
        .map(|p| {
            4 * p.address.len()
                + 3 * viewer.len()
                + p.name.as_ref().map_or(0, String::len)
                + s.id.len()
                + 250
        })
        .sum();
    s.subject.as_ref().map_or(0, String::len) + roster
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;

    #[test]
    fn a_seed_start_refuses_another_originator_and_an_invitee_outside_its_list() {
        let body = |o: Option<&str>, t: Option<&str>| ChatSessionInformation {
            originator_address: o.map(str::to_owned),
            t_participant_address: t.map(str::to_owned),
            participant: vec![listed(B, None)],
            ..Default::default()
        };
        let field = |r: Result<(), Refused>| match r {
            Err(Refused::Contradicts { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert!(seed_form(A, &body(None, None)).is_ok());
        assert!(seed_form(A, &body(Some(A), Some(B))).is_ok());
        assert_eq!(
            field(seed_form(A, &body(Some(C), None))),
            "originatorAddress"
        );
        assert_eq!(
            field(seed_form(A, &body(None, Some(C)))),
            "tParticipantAddress"
        );
    }

    /// A session ends once nobody is connected to it and no invitation is pending; those who
    /// could have re-joined (the originator, an invitee who had accepted) are told. One that
    /// someone is still in, or still invited to, stays.
    #[test]
    fn a_session_nobody_is_in_any_more_ends() {
        use ParticipantStatus::{Connected, Disconnected, Invited};
        let left = |mut s: Session| {
            if let Some(a) = s.participant_mut(A) {
                a.status = Disconnected;
            }
            s
        };
        let cases = [
            (
                "the originator left, the invitees declined and timed out",
                left(session(
                    true,
                    &[
                        (B, Disconnected, Invitation::Declined),
                        (C, Disconnected, Invitation::TimedOut),
                    ],
                )),
                true,
                vec![format!("{A} <- SessionEnded")],
            ),
            (
                "everyone left a 1-1",
                left(session(false, &[(B, Disconnected, Invitation::Accepted)])),
                true,
                vec![
                    format!("{A} <- SessionEnded"),
                    format!("{B} <- SessionEnded"),
                ],
            ),
            (
                "an invitation is still pending",
                left(session(true, &[(B, Invited, pending(1))])),
                false,
                vec![],
            ),
            (
                "someone is still connected",
                left(session(true, &[(B, Connected, Invitation::Accepted)])),
                false,
                vec![],
            ),
        ];
        for (what, mut s, ends, want) in cases {
            let outbox = end_if_deserted(&urls(), &mut s);
            assert_eq!((s.ended, told(&outbox)), (ends, want), "{what}");
        }
    }

    fn listed(address: &str, name: Option<&str>) -> ParticipantInformation {
        ParticipantInformation {
            address: address.to_owned(),
            name: name.map(str::to_owned),
            is_originator: None,
            status: None,
            client_correlator: None,
            resource_url: None,
        }
    }

    fn invited(addresses: &[&str]) -> Vec<(ParticipantInformation, Invitation)> {
        (1..)
            .zip(addresses)
            .map(|(seq, a)| (listed(a, None), pending(seq)))
            .collect()
    }

    fn rate() -> Refused {
        Refused::Quota(
            quota::Refusal::Rate { limit: 10 },
            std::time::Duration::ZERO,
        )
    }

    #[test]
    fn a_start_request_names_the_originator_and_each_invitee_once() {
        let (name, who) = invitees(
            A,
            None,
            vec![listed(A, Some("Alice")), listed(B, None)],
            10,
            false,
        )
        .unwrap();
        assert_eq!(
            name.as_deref(),
            Some("Alice"),
            "the originator's own entry names it"
        );
        assert_eq!(who, [listed(B, None)], "and is not an invitee");
        let (name, _) = invitees(
            A,
            Some("Al".into()),
            vec![listed(A, Some("Alice")), listed(B, None)],
            10,
            false,
        )
        .unwrap();
        assert_eq!(name.as_deref(), Some("Al"), "originatorName wins");

        let refused = [
            (
                vec![listed(B, None), listed(B, None)],
                10,
                Refused::Duplicate(B.into()),
            ),
            (vec![], 10, Refused::NoInvitee),
            (vec![listed(A, None)], 10, Refused::NoInvitee),
            (
                vec![listed(B, None), listed(C, None), listed(D, None)],
                3,
                Refused::TooManyParticipants(3),
            ),
        ];
        for (list, limit, why) in refused {
            assert_eq!(invitees(A, None, list, limit, false).unwrap_err(), why);
        }
        assert!(invitees(A, None, vec![listed(B, None), listed(C, None)], 3, false).is_ok());
        // An OMA 2012 group may start with nobody but its originator.
        assert!(invitees(A, None, vec![], 3, true).unwrap().1.is_empty());
        assert!(invitees(A, None, vec![listed(A, None)], 3, true).is_ok());
    }

    /// A resend answers the session only when it asks the same: the same subject and the
    /// same invitees in the same order, whatever was added by an extension since; anything
    /// else is `409 SVC0005`.
    #[test]
    fn a_correlators_resend_must_ask_what_the_first_start_asked() {
        let mut first = session(true, &[(B, Invited, pending(1)), (C, Invited, pending(2))]);
        first.subject = Some("lunch".into());
        first.client_correlator = Some("c-1".into());
        let asked = |who: &[&str]| -> Vec<ParticipantInformation> {
            who.iter()
                .map(|a| serde_json::from_value(serde_json::json!({ "address": a })).unwrap())
                .collect()
        };
        let dup = Err(Refused::DuplicateCorrelator("c-1".into()));
        let mut one = session(false, &[(B, Invited, pending(1))]);
        one.client_correlator = Some("c-1".into());
        one.subject = None;
        assert_eq!(same_start(&one, None, &asked(&[B])), Ok(()));
        assert_eq!(same_start(&one, None, &asked(&[C])), dup);
        assert_eq!(same_start(&one, None, &asked(&[B, C])), dup);
        assert_eq!(same_start(&first, Some("lunch"), &asked(&[B, C])), Ok(()));
        assert_eq!(same_start(&first, Some("dinner"), &asked(&[B, C])), dup);
        assert_eq!(same_start(&first, None, &asked(&[B, C])), dup);
        assert_eq!(same_start(&first, Some("lunch"), &asked(&[C, B])), Ok(()));
        assert_eq!(same_start(&first, Some("lunch"), &asked(&[C])), dup);
        assert_eq!(
            same_start(&first, Some("lunch"), &asked(&[B])),
            Ok(()),
            "fewer invitees than the group's: not told from a group extended since"
        );
        assert_eq!(same_start(&first, Some("lunch"), &asked(&[B, C, D])), dup);
        first.participants.push(first.participants[1].clone());
        first.participants[3].address = D.to_owned();
        assert_eq!(
            same_start(&first, Some("lunch"), &asked(&[B, C])),
            Ok(()),
            "an extension since does not change what the start asked"
        );
    }

    /// A resend answers the session the user started with that correlator
    /// (`State::started_with`), not one it was invited into with the same correlator, nor one
    /// started with another, nor one released.
    #[test]
    fn a_resend_answers_the_session_started_with_its_correlator() {
        let mut mine = session(false, &[(B, Invited, pending(1))]);
        mine.client_correlator = Some("c-1".into());
        let mut theirs = session(false, &[(A, Invited, pending(2))]);
        theirs.id = "sess-2".into();
        theirs.originator = B.into();
        theirs.client_correlator = Some("c-2".into());
        let mut state = State::default();
        state.put_session(theirs);
        state.put_session(mine.clone());
        // Put in again (an answer, an extension): still found, still once.
        state.put_session(mine);
        let found = |state: &State, user, c| state.started_with(user, c).map(|s| s.id.clone());
        assert_eq!(found(&state, A, "c-1").as_deref(), Some("sess-1"));
        assert_eq!(found(&state, A, "c-2"), None, "B's correlator, B's session");
        assert_eq!(found(&state, B, "c-2").as_deref(), Some("sess-2"));
        assert_eq!(found(&state, B, "c-1"), None);
        assert_eq!(found(&state, A, "c-3"), None);
        // Released, it answers no resend (which starts a session anew).
        state.take_session("sess-1");
        assert_eq!(found(&state, A, "c-1"), None);
        assert_eq!(found(&state, B, "c-2").as_deref(), Some("sess-2"));
    }

    #[test]
    fn starting_needs_room_for_one_more_session_then_the_quota() {
        let too_many = Refused::TooMany {
            what: "open sessions of this user",
            limit: 2,
        };
        let cases = [
            (1, Ok(()), Ok(())),
            (2, Ok(()), Err(too_many.clone())),
            (1, Err(rate()), Err(rate())),
            (2, Err(rate()), Err(too_many)),
        ];
        for (open, quota, expected) in cases {
            assert_eq!(may_start(open, 2, quota), expected, "{open} open");
        }
    }

    fn new(id: &str) -> Start {
        Start {
            id: id.into(),
            seq: 7,
            subject: Some("hello".into()),
            originator_name: Some("Alice".into()),
            client_correlator: None,
            group: false,
            owner: "sha256:0".to_owned(),
        }
    }

    /// OMA 2012's `group/`: a group chat asked for as one stays one with a single invitee,
    /// and its creator is told `Successful` after the invitations, then the roster (the GSMA
    /// gateways' order).
    #[test]
    fn a_start_asked_as_a_group_is_a_group_with_one_invitee() {
        let asked = Start {
            group: true,
            ..new("sess-8")
        };
        let d = start(&urls(), A, asked, invited(&[B]));
        assert!(d.session.group);
        assert_eq!(
            told(&d.outbox),
            [
                format!("{B} <- invitation sess-8"),
                format!("{A} <- Successful"),
                format!("{A} <- status {A}=Connected,{B}=Invited"),
            ]
        );
    }

    #[test]
    fn a_start_invites_each_invitee_and_more_than_one_makes_a_group() {
        let one = start(&urls(), A, new("sess-9"), invited(&[B]));
        assert!(!one.session.group);
        assert_eq!(one.session.originator, A);
        assert_eq!(state_of(&one.session, A), (Connected, Invitation::None));
        assert_eq!(state_of(&one.session, B), (Invited, pending(1)));
        assert_eq!(told(&one.outbox), [format!("{B} <- invitation sess-9")]);

        let group = start(&urls(), A, new("sess-9"), invited(&[B, C]));
        assert!(group.session.group);
        assert_eq!(
            told(&group.outbox),
            [
                format!("{B} <- invitation sess-9"),
                format!("{C} <- invitation sess-9")
            ]
        );
    }

    /// Seed 7.1.3: inviting a third participant makes a 1-1 session a group session; the
    /// invitee is invited and the other connected participant learns about it.
    #[test]
    fn extending_a_one_to_one_session_makes_a_group() {
        let s = session(false, &[(B, Connected, Invitation::Accepted)]);
        let d = extend(&urls(), &s, A, invited(&[C]), 10, Ok(())).unwrap();
        assert!(d.session.group);
        assert_eq!(state_of(&d.session, C), (Invited, pending(1)));
        assert_eq!(
            d.session.participant(C).map(|p| p.invited_by.as_str()),
            Some(A)
        );
        assert_eq!(
            told(&d.outbox),
            [
                format!("{C} <- invitation sess-1"),
                format!("{B} <- status {C}=Invited")
            ]
        );
        assert!(
            !s.group,
            "the rule reads the session, it does not change it"
        );
        // An ad hoc chat extended is an ordinary group chat.
        let adhoc = Session { adhoc: true, ..s };
        let d = extend(&urls(), &adhoc, A, invited(&[C]), 10, Ok(())).unwrap();
        assert!(d.session.group && !d.session.adhoc);
    }

    /// Someone who declined, missed the invitation, had it withdrawn or left is invited again
    /// in place (a new invitation, the same position, not counted against the limit again);
    /// the originator, and anyone invited or connected, is already in the session.
    #[test]
    fn whoever_is_not_in_the_session_any_more_is_invited_again() {
        let ways_out = [
            Invitation::Declined,
            Invitation::TimedOut,
            Invitation::Cancelled,
            Invitation::Accepted, // then left
        ];
        for way in ways_out {
            let s = session(
                true,
                &[(B, Connected, Invitation::Accepted), (C, Disconnected, way)],
            );
            let d = extend(&urls(), &s, A, invited(&[C]), 3, Ok(()))
                .unwrap_or_else(|e| panic!("{way:?}: {e:?}"));
            assert_eq!(d.session.participants.len(), 3, "{way:?}: in place");
            assert_eq!(state_of(&d.session, C), (Invited, pending(1)), "{way:?}");
            assert_eq!(
                told(&d.outbox),
                [
                    format!("{C} <- invitation sess-1"),
                    format!("{B} <- status {C}=Invited")
                ],
                "{way:?}"
            );
        }
        let left = session(true, &[(B, Connected, Invitation::Accepted)]);
        let mut gone = left.clone();
        if let Some(a) = gone.participants.iter_mut().find(|p| p.address == A) {
            a.status = Disconnected;
        }
        assert_eq!(
            extend(&urls(), &gone, B, invited(&[A]), 10, Ok(())).map(|_| ()),
            Err(Refused::AlreadyParticipant {
                address: A.into(),
                sid: "sess-1".into()
            }),
            "the originator rejoins by itself"
        );
    }

    #[test]
    fn an_extension_is_refused_in_this_order() {
        let s = session(false, &[(B, Invited, pending(1))]);
        let already = |a: &str| Refused::AlreadyParticipant {
            address: a.into(),
            sid: "sess-1".into(),
        };
        let cases = [
            (B, vec![C], 10, Ok(()), Refused::NotConnected),
            (STRANGER, vec![C], 10, Ok(()), Refused::NotConnected),
            (A, vec![B], 10, Ok(()), already(B)),
            (A, vec![C, C], 10, Ok(()), Refused::Duplicate(C.into())),
            (A, vec![B, B], 10, Ok(()), Refused::Duplicate(B.into())),
            (A, vec![C], 2, Ok(()), Refused::TooManyParticipants(2)),
            (A, vec![C, C], 2, Err(rate()), Refused::Duplicate(C.into())),
            (A, vec![C], 10, Err(rate()), rate()),
        ];
        for (by, to, limit, quota, why) in cases {
            let d = extend(&urls(), &s, by, invited(&to), limit, quota);
            assert_eq!(d.map(|_| ()).unwrap_err(), why, "{by} invites {to:?}");
        }
    }

    /// Seed 7.1.5: the originator ends the session; whoever is still in it is told (the
    /// originator too); pending invitations become cancelled.
    #[test]
    fn the_originator_ends_a_session_for_everyone() {
        let s = session(
            true,
            &[
                (B, Connected, Invitation::Accepted),
                (C, Invited, pending(1)),
                (D, Disconnected, Invitation::Declined),
            ],
        );
        let d = end(&urls(), &s, A).unwrap();
        assert!(d.session.ended);
        assert_eq!(
            told(&d.outbox),
            [
                format!("{A} <- SessionEnded"),
                format!("{B} <- SessionEnded"),
                format!("{C} <- SessionCancelled"),
            ]
        );
        assert_eq!(
            state_of(&d.session, C),
            (Disconnected, Invitation::Cancelled)
        );
        assert!(
            d.session
                .participants
                .iter()
                .all(|p| p.status == Disconnected)
        );
        for who in [B, C, STRANGER] {
            assert_eq!(end(&urls(), &s, who).unwrap_err(), Refused::NotOriginator);
        }
        // An originator and an invitee that left (and could re-join) are told too.
        let mut gone = s.clone();
        for p in gone
            .participants
            .iter_mut()
            .filter(|p| [A, B].contains(&p.address.as_str()))
        {
            p.status = Disconnected;
        }
        let d = end(&urls(), &gone, A).unwrap();
        assert_eq!(
            told(&d.outbox),
            [
                format!("{A} <- SessionEnded"),
                format!("{B} <- SessionEnded"),
                format!("{C} <- SessionCancelled"),
            ]
        );
    }

    /// Seed 7.1.6: the inviter withdraws a pending invitation; a 1-1 session ends with it.
    /// The canceller is told too (before, its other devices never learnt of it).
    #[test]
    fn cancelling_an_invitation() {
        let group = session(
            true,
            &[
                (B, Connected, Invitation::Accepted),
                (C, Invited, pending(1)),
            ],
        );
        let d = cancel(&urls(), &group, A, C).unwrap();
        assert!(!d.session.ended);
        assert_eq!(
            state_of(&d.session, C),
            (Disconnected, Invitation::Cancelled)
        );
        assert_eq!(
            told(&d.outbox),
            [
                format!("{C} <- SessionCancelled"),
                format!("{A} <- status {C}=Disconnected"),
                format!("{B} <- status {C}=Disconnected")
            ],
            "every connected participant, the canceller's own applications included"
        );

        let one = session(false, &[(B, Invited, pending(1))]);
        let d = cancel(&urls(), &one, A, B).unwrap();
        assert!(
            d.session.ended,
            "a 1-1 session ends with its only invitation"
        );
        assert_eq!(
            told(&d.outbox),
            [
                format!("{B} <- SessionCancelled"),
                format!("{A} <- SessionEnded")
            ],
            "the originator's applications learn that the session ended, as on a DELETE"
        );
    }

    #[test]
    fn only_the_inviter_cancels_and_only_an_unanswered_invitation() {
        let s = session(
            true,
            &[
                (B, Connected, Invitation::Accepted),
                (C, Invited, pending(1)),
                (D, Disconnected, Invitation::Declined),
            ],
        );
        let not_pending = |p: &str| Refused::NotPending { pid: p.into() };
        let not_inviter = |p: &str| Refused::NotInviter {
            inviter: A.into(),
            pid: p.into(),
        };
        let cases = [
            (A, B, not_pending(B)),
            (A, D, not_pending(D)),
            (A, A, not_pending(A)),
            (B, C, not_inviter(C)),
            // Not the inviter: refused as such, whatever the invitation's state.
            (B, D, not_inviter(D)),
            (C, A, not_pending(A)),
            (A, STRANGER, Refused::NotFound),
        ];
        for (by, pid, why) in cases {
            assert_eq!(
                cancel(&urls(), &s, by, pid).unwrap_err(),
                why,
                "{by} cancels {pid}"
            );
        }
    }
}
