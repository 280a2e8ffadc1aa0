//! The OMA 2012 face (issue 16, `/chat/v1/{userId}/…`): the one-to-one "confirmed" chat
//! (`oneToOne/`) and the group chat (`group/`), over the same sessions and messages as the
//! seed face: the entry points here are thin adapters. Each checks what only this face has
//! (`oneToOne/{otherUserId}` must be the other participant of a 1-1 session; `group/` holds
//! group sessions only), turns the 2012 document into the seed's or back, and hands over to
//! the seed's entry point, whose rules, limits, durability and notifications apply
//! unchanged. Only closing differs in substance: OMA 2012 lets either participant of a 1-1
//! chat close it, where the seed lets only the originator end a session ([`close`]).
//!
//! Rules (plain functions, tested below): [`peer`] says whether a session is one-to-one and
//! with whom, [`request`] reads the 2012 create body, [`session`] and [`group_view`] are the
//! 2012 views, [`close`] decides a 1-1 DELETE, [`withdraws`] a group participant's DELETE,
//! [`profile`] what a subscriber of this face is told (with [`one_to_one_event`]), [`refresh`]
//! a subscription's PUT.
//!
//! The 2012 subscriptions are the seed's (one set per user, `Chat::subscribe`) stored with the
//! face they were made through (`Face`), which decides the profile fan-out renders their
//! notifications in.

use super::page::{self, PageRequest};
use super::participants::set_status;
use super::records;
use super::refused::Refused;
use super::sessions::{end, end_for_all, idle};
use super::state::{Face, Invitation, Participant, Session, State, SubscriptionRecord};
use super::subscriptions::granted_duration;
use super::views;
use super::{Change, Chat, Decision, durable, missing};
use crate::notify::Notification;
use crate::store::{Kind, now_ms};
use crate::urls::Urls;
use netapi_chat_api::{
    ChatEventNotification, ChatMessage, ChatNotificationSubscription, ChatSessionInformation,
    ChatSessionInvitationNotification, ChatSubscription, ChatSubscriptionList, Created, EventType,
    GroupChatSessionInformation, GroupSessionInvitationNotification, IsComposing, Link,
    MessageNotification, MessageStatus, MessageStatusNotification, MessageStatusReport,
    ParticipantInformation, ParticipantList, ParticipantSessionStatus, ParticipantStatus,
    ParticipantStatusEntry, ResourceReference,
};
use netapi_chat_runtime::ApiError;
use std::sync::Arc;

/// The other participant of `s` as `user` sees it, when `s` is a one-to-one session (two
/// participants, never extended to a group); `None` for a group session, which the OMA 2012
/// face shows under `group/`, never under `oneToOne/`.
pub(super) fn peer<'a>(s: &'a Session, user: &str) -> Option<&'a str> {
    if s.group || s.participants.len() != 2 {
        return None;
    }
    s.participants
        .iter()
        .map(|p| p.address.as_str())
        .find(|a| *a != user)
}

/// The OMA 2012 create body (flat: `tParticipantAddress`, no `participant` list) read into the
/// seed's form with `other` as the one invitee. Every address is canonical (the handler made
/// it so). A chat with oneself (`other` is `user`, named by the URL: the seed's "no other
/// participant" would name a `participant` list this body does not have), a `participant`
/// list, a `tParticipantAddress` other than `other` or an `originatorAddress` other than
/// `user` is refused.
pub(super) fn request(
    user: &str,
    other: &str,
    body: ChatSessionInformation,
) -> Result<ChatSessionInformation, Refused> {
    if other == user {
        return Err(Refused::Contradicts {
            field: "otherUserId",
            why: "a one-to-one chat is with another user than the userId".to_owned(),
        });
    }
    if !body.participant.is_empty() {
        return Err(Refused::Contradicts {
            field: "participant",
            why: "not part of a oneToOne chatSessionInformation; the invitee is \
                  tParticipantAddress, the otherUserId of the URL"
                .to_owned(),
        });
    }
    if body
        .t_participant_address
        .as_deref()
        .is_some_and(|t| t != other)
    {
        return Err(Refused::Contradicts {
            field: "tParticipantAddress",
            why: format!("must be the otherUserId of the URL, {other}"),
        });
    }
    super::sessions::originator_is(user, body.originator_address.as_deref())?;
    Ok(ChatSessionInformation {
        subject: body.subject,
        participant: vec![ParticipantInformation {
            address: other.to_owned(),
            name: body.t_participant_name,
            is_originator: None,
            status: None,
            client_correlator: None,
            resource_url: None,
        }],
        originator_address: None,
        originator_name: body.originator_name,
        t_participant_address: None,
        t_participant_name: None,
        status: None,
        ended: None,
        client_correlator: body.client_correlator,
        resource_url: None,
    })
}

/// The `subject` a session shows on the OMA 2012 face: its own, or empty for one started
/// without (on the seed face, a group without one, an ad hoc chat). OMA 2012 makes `subject`
/// mandatory in `chatSessionInformation` and `groupChatSessionInformation`, so a client
/// generated from OMA's schema refuses an answer without the element.
fn shown_subject(s: &Session) -> String {
    s.subject.clone().unwrap_or_default()
}

/// A one-to-one session as `viewer` (whose peer is `other`) sees it on the OMA 2012 face:
/// flat, `status` the session's ([`one_to_one_status`]), `resourceURL` under `oneToOne/`.
pub(super) fn session(
    urls: &Urls,
    viewer: &str,
    other: &str,
    s: &Session,
) -> ChatSessionInformation {
    let invitee = s.participants.iter().find(|p| !p.is_originator);
    ChatSessionInformation {
        subject: Some(shown_subject(s)),
        participant: Vec::new(),
        originator_address: Some(s.originator.clone()),
        originator_name: s.originator_name.clone(),
        t_participant_address: invitee.map(|p| p.address.clone()),
        t_participant_name: invitee.and_then(|p| p.name.clone()),
        status: Some(one_to_one_status(s)),
        ended: None,
        client_correlator: if viewer == s.originator {
            s.client_correlator.clone()
        } else {
            None
        },
        resource_url: Some(urls.one_to_one_session(viewer, other, shown_id(s))),
    }
}

/// The rule of a one-to-one session's `status` on the OMA 2012 face, the same for both: the
/// invitee's (`Invited`, then `Connected`), except `Disconnected` while either has left on the
/// seed face (the session carries no message then: a send is `409 SVC0001` until the re-join).
/// Before, it was the invitee's alone, so a session whose originator had left read
/// `Connected` to both while their messages were refused (the outside review of 2026-12-07).
pub(super) fn one_to_one_status(s: &Session) -> ParticipantStatus {
    if s.participants
        .iter()
        .any(|p| p.status == ParticipantStatus::Disconnected)
    {
        return ParticipantStatus::Disconnected;
    }
    s.participants
        .iter()
        .find(|p| !p.is_originator)
        .map_or(ParticipantStatus::Invited, |p| p.status)
}

/// OMA 2012, the rule on a DELETE of a one-to-one session by `user`: the originator ends it
/// (the seed's [`end`]); an invitee who has not answered declines (the seed's
/// [`set_status`] with `Disconnected`, which ends a 1-1 session); the peer otherwise closes it
/// for both, everyone still in it told as when the originator ends it.
pub(super) fn close(
    urls: &Urls,
    s: &Session,
    user: &str,
    open_sessions: usize,
    limit: usize,
) -> Result<Decision, Refused> {
    let p = s.participant(user).ok_or(Refused::NotFound)?;
    if user == s.originator {
        return end(urls, s, user);
    }
    if p.invitation.is_pending() {
        return set_status(
            urls,
            s,
            user,
            user,
            ParticipantStatus::Disconnected,
            open_sessions,
            limit,
        );
    }
    let mut s = s.clone();
    s.ended = true;
    let outbox = end_for_all(urls, &mut s, &format!("{user} closed the session"), None);
    Ok(Decision { session: s, outbox })
}

/// A group session as `viewer` sees it on the OMA 2012 face: every participant (the
/// originator first, `isOriginator=true`) with its status, URLs under `group/`.
pub(super) fn group_view(urls: &Urls, viewer: &str, s: &Session) -> GroupChatSessionInformation {
    GroupChatSessionInformation {
        subject: Some(shown_subject(s)),
        participant: s
            .participants
            .iter()
            .map(|p| group_participant(urls, viewer, s, p))
            .collect(),
        client_correlator: if viewer == s.originator {
            s.client_correlator.clone()
        } else {
            None
        },
        resource_url: Some(urls.group_session(viewer, &s.id)),
    }
}

/// A participant of group session `s` as `viewer` sees it on the OMA 2012 face: the seed's
/// view with its `resourceURL` under `group/`.
pub(super) fn group_participant(
    urls: &Urls,
    viewer: &str,
    s: &Session,
    p: &Participant,
) -> ParticipantInformation {
    ParticipantInformation {
        resource_url: Some(urls.group_participant(viewer, &s.id, &p.address)),
        ..views::participant(urls, viewer, s, p)
    }
}

/// OMA 2012, the rule on a DELETE of group participant `pid` by `user`: one's own participant
/// leaves or declines (`false`); someone else's withdraws the invitation `user` sent (`true`).
pub(super) fn withdraws(user: &str, pid: &str) -> bool {
    user != pid
}

/// OMA 2012 (a decision, as the GSMA gateways), the rule on an accept's body: a `PUT` of
/// one's status that has no body is `Connected`, on each URL that accepts (a one-to-one
/// session, its `…/status`, a group participant's `…/status`), since their clients accept
/// that way; a body says what it says.
pub(crate) fn asked_status(body: Option<ParticipantSessionStatus>) -> ParticipantStatus {
    body.map_or(ParticipantStatus::Connected, |b| b.status)
}

/// The reserved `sessionId` of OMA 2012's ad hoc one-to-one chats
/// (`oneToOne/{otherUserId}/adhoc/messages[/{messageId}/status]`): the server's own ids are
/// `sess-…`, never this, so the routes of confirmed chats read it.
pub const ADHOC: &str = "adhoc";

/// How many times a message or `isComposing` sent to [`ADHOC`] looks for the pair's ad hoc
/// chat and goes into it, when the chat it found open was closed before the send reached it
/// (the peer's `DELETE`, or the idle end, in between): as after that close, the send then
/// opens a new chat ([`Chat::adhoc_send`]) rather than answer `404` for a collection that
/// always exists (an outside review's race: 6 in 400 first messages lost that way). Bounded,
/// so a peer closing in a loop cannot hold a request.
const ADHOC_TRIES: u32 = 3;

/// What a send to `adhoc` found ([`Chat::adhoc_send`]).
enum AdHoc<R> {
    /// The pair's chat, open already: the send goes into it as into any session.
    Open(String),
    /// A chat this send opened, with what its first step (the send itself) gave.
    Opened(R),
}

/// Whether a send into an ad hoc chat just opened or found, which failed with `error`, opens
/// the chat again and tries once more: the chat is gone (closed in between: `404`) and
/// `tries` (counted here) is under [`ADHOC_TRIES`].
fn again_into_adhoc(error: &ApiError, tries: &mut u32) -> bool {
    let again = error.status == http::StatusCode::NOT_FOUND && *tries < ADHOC_TRIES;
    *tries += 1;
    again
}

/// OMA 2012, the rule finding the ad hoc chat of `user` with `other` among `mine` (the ad
/// hoc sessions `user` takes part in, `State::adhoc_sessions_of`): the open ad hoc session of
/// the pair in which both are still connected. One a participant left on the seed face (its
/// `Disconnected`) is not used again: the next send opens another and the idle time ends the
/// old one.
pub(super) fn adhoc_with<'a>(
    mine: impl IntoIterator<Item = &'a Session>,
    user: &str,
    other: &str,
) -> Option<&'a Session> {
    mine.into_iter().find(|s| {
        s.adhoc
            && !s.ended
            && peer(s, user) == Some(other)
            && s.participants
                .iter()
                .all(|p| p.status == ParticipantStatus::Connected)
    })
}

/// OMA 2012, the rule opening an ad hoc chat of `user` with `other` (who have none,
/// [`adhoc_with`]): session `id` with both connected at once and nobody invited (OMA 2012
/// sends no invitation for an ad hoc chat), counted against `user`'s open sessions
/// (`open_sessions` of `limit`; the peer's count does not grow, so nobody fills another's
/// limit by writing to it). The sender is told `chatEventNotification` `Accepted` (the GSMA
/// gateway's answer to a first ad hoc send). A chat with oneself is refused.
pub(super) fn open_adhoc(
    urls: &Urls,
    user: &str,
    other: &str,
    (id, seq): (String, u64),
    open_sessions: usize,
    limit: usize,
) -> Result<Decision, Refused> {
    if user == other {
        return Err(Refused::Contradicts {
            field: "otherUserId",
            why: "an ad hoc chat is with another user than the userId".to_owned(),
        });
    }
    if open_sessions >= limit {
        return Err(Refused::TooMany {
            what: "open sessions of this user",
            limit,
        });
    }
    let connected = |address: &str, is_originator| Participant {
        address: address.to_owned(),
        name: None,
        is_originator,
        status: ParticipantStatus::Connected,
        invitation: Invitation::None,
        invited_by: user.to_owned(),
    };
    let session = Session {
        id,
        seq,
        subject: None,
        originator: user.to_owned(),
        originator_name: None,
        client_correlator: None,
        participants: vec![connected(user, true), connected(other, false)],
        group: false,
        adhoc: true,
        ended: false,
        changed_ms: None,
        owner: None,
    };
    let outbox = vec![(
        user.to_owned(),
        views::event(
            urls,
            user,
            &session,
            EventType::Accepted,
            format!("ad hoc chat with {other} set up"),
        ),
    )];
    Ok(Decision { session, outbox })
}

/// Where session `s` lives on the OMA 2012 face for `to`: under `oneToOne/{peer}` or under
/// `group/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tree<'a> {
    OneToOne(&'a str),
    Group,
}

fn tree<'a>(s: &'a Session, to: &str) -> Tree<'a> {
    match peer(s, to) {
        Some(p) => Tree::OneToOne(p),
        None => Tree::Group,
    }
}

/// The `sessionId` of `s` on the OMA 2012 face: the reserved [`ADHOC`] for an ad hoc session
/// (the server manages it; OMA 2012 clients never see its id), its id otherwise.
pub(super) fn shown_id(s: &Session) -> &str {
    if s.adhoc { ADHOC } else { &s.id }
}

fn link(rel: &str, href: String) -> Link {
    Link {
        rel: rel.to_owned(),
        href,
    }
}

/// The session link of OMA 2012: `ChatSessionInformation` under `oneToOne/`,
/// `GroupChatSessionInformation` under `group/`.
fn session_link(urls: &Urls, to: &str, s: &Session) -> Link {
    match tree(s, to) {
        Tree::OneToOne(p) => link(
            "ChatSessionInformation",
            urls.one_to_one_session(to, p, shown_id(s)),
        ),
        Tree::Group => link("GroupChatSessionInformation", urls.group_session(to, &s.id)),
    }
}

/// A message's status under the OMA 2012 tree, as `to` reaches it.
fn message_status_link(urls: &Urls, to: &str, s: &Session, mid: &str) -> Link {
    let href = match tree(s, to) {
        Tree::OneToOne(p) => urls.one_to_one_message_status(to, p, shown_id(s), mid),
        Tree::Group => urls.group_message_status(to, &s.id, mid),
    };
    link("MessageStatusReport", href)
}

/// A message under the OMA 2012 tree, as `to` reaches it.
fn message_url(urls: &Urls, to: &str, s: &Session, mid: &str) -> String {
    match tree(s, to) {
        Tree::OneToOne(p) => urls.one_to_one_message(to, p, shown_id(s), mid),
        Tree::Group => urls.group_message(to, &s.id, mid),
    }
}

/// OMA 2012, the rule on a group's `participantStatusNotification`: the whole roster (OMA
/// 2012 tells the participant list, not only who changed), the changed entries first (as told)
/// and then everyone else in the session's order, `yourown` true on the entry of `to` and
/// false on the others.
pub(super) fn roster(
    changed: Vec<ParticipantStatusEntry>,
    to: &str,
    s: &Session,
) -> Vec<ParticipantStatusEntry> {
    let mut all = changed;
    for p in &s.participants {
        if !all.iter().any(|e| e.address == p.address) {
            all.push(ParticipantStatusEntry {
                address: p.address.clone(),
                name: p.name.clone(),
                status: Some(p.status),
                yourown: None,
                link: Vec::new(),
            });
        }
    }
    for e in &mut all {
        e.yourown = Some(e.address == to);
    }
    all
}

/// The session a notification is about, if any.
pub(super) fn session_of(n: &Notification) -> Option<&str> {
    match n {
        Notification::SessionInvitationNotification(n) => Some(&n.session_id),
        Notification::ParticipantStatusNotification(n) => Some(&n.session_id),
        Notification::ChatEventNotification(n) => Some(&n.session_id),
        Notification::MessageNotification(n) => Some(&n.session_id),
        Notification::MessageDeliveryNotification(n) => Some(&n.session_id),
        Notification::ChatSessionInvitationNotification(n) => Some(&n.session_id),
        Notification::GroupSessionInvitationNotification(n) => Some(&n.session_id),
        Notification::SubscriptionCancellationNotification(_)
        | Notification::MessageStatusNotification(_) => None,
    }
}

/// OMA 2012, the event a one-to-one peer's new status is told as (OMA 2012 has no participant
/// resources under `oneToOne/`): an accept or a re-join is `Accepted` (the originator's too,
/// which was never invited: a peer told its `Connected` only ever hears it re-join), a
/// decline `Declined`; anything else (a seed-face leave) stays a
/// `participantStatusNotification`.
pub(super) fn one_to_one_event(p: &Participant) -> Option<EventType> {
    match (p.status, p.invitation) {
        (ParticipantStatus::Connected, _) if p.has_joined() => Some(EventType::Accepted),
        (ParticipantStatus::Disconnected, Invitation::Declined) => Some(EventType::Declined),
        _ => None,
    }
}

/// OMA 2012, the rule on what a subscriber of this face is told (issue 16): notification `n`
/// for `to`, about session `s` as it is now (`None`: about no session, or one already gone
/// from memory, told as it is), in the OMA 2012 profile. The facts are the seed's; the names
/// and links are OMA 2012's:
/// - an invitation is `chatSessionInvitationNotification` (one-to-one) or
///   `groupSessionInvitationNotification`, linking the resources that accept and decline it;
/// - a delivery report is `messageStatusNotification` (the recipient, which OMA 2012 has no
///   field for, in `description` when nothing else is), linking the message (`ChatMessage`,
///   which OMA 2012 requires) and its status (`MessageStatusReport`);
/// - a one-to-one peer's accept / decline is `chatEventNotification` ([`one_to_one_event`]);
/// - every other notification keeps its name, with its links (and a message's `resourceURL`)
///   under `oneToOne/` or `group/`;
/// - about an ad hoc session, `sessionId` and the links say [`ADHOC`] ([`shown_id`]).
pub(super) fn profile(urls: &Urls, to: &str, s: Option<&Session>, n: Notification) -> Notification {
    let Some(s) = s else { return n };
    let t = tree(s, to);
    match n {
        Notification::SessionInvitationNotification(n) => match t {
            Tree::OneToOne(p) => Notification::from(ChatSessionInvitationNotification {
                subject: n.subject.unwrap_or_default(),
                originator_address: n.originator_address,
                originator_name: n.originator_name,
                t_participant_address: Some(to.to_owned()),
                t_participant_name: s.participant(to).and_then(|me| me.name.clone()),
                session_id: n.session_id,
                callback_data: n.callback_data,
                link: vec![
                    link(
                        "ChatSessionInformation",
                        urls.one_to_one_session(to, p, &s.id),
                    ),
                    link(
                        "ParticipantSessionStatus",
                        urls.one_to_one_session_status(to, p, &s.id),
                    ),
                ],
            }),
            Tree::Group => Notification::from(GroupSessionInvitationNotification {
                subject: n.subject.unwrap_or_default(),
                participant: s
                    .participants
                    .iter()
                    .map(|p| group_participant(urls, to, s, p))
                    .collect(),
                session_id: n.session_id,
                callback_data: n.callback_data,
                link: vec![
                    link(
                        "ParticipantInformation",
                        urls.group_participant(to, &s.id, to),
                    ),
                    link(
                        "ParticipantInformationStatus",
                        urls.group_participant_status(to, &s.id, to),
                    ),
                    link("GroupChatSessionInformation", urls.group_session(to, &s.id)),
                ],
            }),
        },
        Notification::ParticipantStatusNotification(mut n) => {
            n.session_id = shown_id(s).to_owned();
            if let Tree::OneToOne(p) = t
                && let [entry] = n.participant.as_slice()
                && entry.address == p
                && let Some(event) = s.participant(p).and_then(one_to_one_event)
            {
                return Notification::from(ChatEventNotification {
                    event_type: event,
                    event_description: Some(format!("{p}: {event:?}")),
                    session_id: n.session_id,
                    callback_data: n.callback_data,
                    link: vec![session_link(urls, to, s)],
                });
            }
            if t == Tree::Group {
                n.participant = roster(n.participant, to, s);
            }
            for e in &mut n.participant {
                e.link = match t {
                    Tree::OneToOne(_) => vec![session_link(urls, to, s)],
                    Tree::Group => vec![
                        link(
                            "ParticipantInformation",
                            urls.group_participant(to, &s.id, &e.address),
                        ),
                        link(
                            "ParticipantInformationStatus",
                            urls.group_participant_status(to, &s.id, &e.address),
                        ),
                    ],
                };
            }
            n.link = vec![session_link(urls, to, s)];
            Notification::from(n)
        }
        Notification::ChatEventNotification(mut n) => {
            n.session_id = shown_id(s).to_owned();
            n.link = vec![session_link(urls, to, s)];
            if s.adhoc {
                // The text names the session as its `sessionId` does (it named the real id
                // the ad hoc chat has on the seed face: the notifications review).
                n.event_description = n.event_description.map(|d| d.replace(&s.id, ADHOC));
            }
            Notification::from(n)
        }
        Notification::MessageNotification(mut n) => {
            n.session_id = shown_id(s).to_owned();
            n.link = match (&mut n.chat_message, &n.message_id) {
                (Some(m), Some(mid)) => {
                    oma2012_chat_message(m);
                    m.resource_url = Some(message_url(urls, to, s, mid));
                    vec![message_status_link(urls, to, s, mid)]
                }
                // An isComposing: the session it is about.
                _ => vec![session_link(urls, to, s)],
            };
            Notification::from(n)
        }
        Notification::MessageDeliveryNotification(n) => {
            Notification::from(MessageStatusNotification {
                status: n.status,
                error_code: n.error_code,
                description: n
                    .description
                    .or_else(|| n.recipient_address.map(|r| format!("reported by {r}"))),
                link: vec![
                    link("ChatMessage", message_url(urls, to, s, &n.message_id)),
                    message_status_link(urls, to, s, &n.message_id),
                ],
                message_id: n.message_id,
                callback_data: n.callback_data,
            })
        }
        other => other,
    }
}

/// A `chatMessage` as OMA 2012 defines it: `text`, `reportRequest`, `resourceURL`, in that
/// order, so that a client bound to OMA's XSD reads it. The seed's `successReport` becomes a
/// `Delivered` in `reportRequest`; the extensions go (who sent it and when are the
/// notification's own `senderAddress` and `dateTime`; the sender's `clientCorrelator` is the
/// sender's). The seed face keeps them all.
pub(super) fn oma2012_chat_message(m: &mut ChatMessage) {
    if m.success_report.take() == Some(true)
        && !m.report_request.contains(&MessageStatus::Delivered)
    {
        m.report_request.insert(0, MessageStatus::Delivered);
    }
    m.client_correlator = None;
    m.sender_address = None;
    m.date_time = None;
}

/// OMA 2012, what a subscriber of this face is told for seed notification `n` to `to` about
/// session `s`: its [`profile`], and after a one-to-one invitation a `messageNotification`
/// carrying the `subject` ([`subject_message`]).
pub(super) fn rendered(
    urls: &Urls,
    to: &str,
    s: Option<&Session>,
    n: Notification,
) -> Vec<Notification> {
    let n = profile(urls, to, s, n);
    let subject = subject_message(urls, to, s, &n);
    std::iter::once(n).chain(subject).collect()
}

/// The `messageId` the subject of session `sid` is told with ([`subject_message`]): one per
/// session, naming no stored message.
pub(super) fn subject_message_id(sid: &str) -> String {
    format!("subject-{sid}")
}

/// OMA 2012 as its gateways behaved (reference §2.4, "event order seen on the wire"): the
/// `subject` of a one-to-one invitation `n` (in this face's profile) also reaches the invitee
/// as a first `messageNotification` from the originator. It is no stored message (the seed's
/// sessions have none before the invitee accepts): its `messageId` is
/// [`subject_message_id`], its links the `MessageStatusReport` OMA requires on every
/// messageNotification (first, as where it is the only one) and the session's (a report there is taken and changes nothing, see
/// [`Chat::update_one_to_one_message_status`]). `None` for anything else or an empty subject.
/// A subscriber of the seed face keeps the seed's invitation alone.
pub(super) fn subject_message(
    urls: &Urls,
    to: &str,
    s: Option<&Session>,
    n: &Notification,
) -> Option<Notification> {
    let (Notification::ChatSessionInvitationNotification(inv), Some(s)) = (n, s) else {
        return None;
    };
    if inv.subject.is_empty() {
        return None;
    }
    let mid = subject_message_id(&inv.session_id);
    Some(Notification::from(MessageNotification {
        sender_address: inv.originator_address.clone(),
        sender_name: inv.originator_name.clone(),
        chat_message: Some(ChatMessage {
            text: inv.subject.clone(),
            resource_url: Some(message_url(urls, to, s, &mid)),
            ..subject_chat_message()
        }),
        is_composing: None,
        // Told as the invitation is made (fan-out renders it then): when the subject was
        // "sent". Every other messageNotification has one, and GSMA clients read it.
        date_time: Some(crate::time::now_rfc3339()),
        session_id: inv.session_id.clone(),
        // OMA's XSD requires a `messageId` on every messageNotification; the subject is no
        // stored message, so its id names none (one per session: `subject-{sessionId}`).
        message_id: Some(mid.clone()),
        callback_data: None,
        // The status first, as on every other messageNotification (where it is the only
        // link): the GSMA gateways sent it alone, and their clients take `link[0]` as the URL
        // to report to (with the session first, their report went to the session: `400`).
        link: vec![
            message_status_link(urls, to, s, &mid),
            session_link(urls, to, s),
        ],
    }))
}

/// The subject told as a first message, as a `ChatMessage` without its text: no reports
/// asked, no correlator (it is no message a client sent).
fn subject_chat_message() -> ChatMessage {
    ChatMessage {
        text: String::new(),
        success_report: None,
        report_request: Vec::new(),
        client_correlator: None,
        sender_address: None,
        date_time: None,
        resource_url: None,
    }
}

/// A subscription as the OMA 2012 face shows it: what it grants (confirmed and ad hoc chats,
/// whatever was asked: the sender of a chat picks its mode here, see [`open_adhoc`]; the
/// granted `duration`) and its URL under `/chat/v1/`.
pub(super) fn subscription(urls: &Urls, rec: &SubscriptionRecord) -> ChatNotificationSubscription {
    ChatNotificationSubscription {
        callback_reference: rec.callback.clone(),
        client_correlator: rec.client_correlator.clone(),
        confirmed_chat_supported: Some(true),
        adhoc_chat_supported: Some(true),
        duration: Some(rec.duration),
        resource_url: Some(urls.oma2012_subscription(&rec.user, &rec.id)),
        signing_secret: None,
    }
}

/// Whether the OMA 2012 face shows a subscription: not once delivery disabled it. OMA 2012
/// has no status for a subscription, and one the server ends is gone: a client reading it
/// (or refreshing it) is told `404` and subscribes anew, instead of reading a subscription
/// that looks alive and gets nothing. The seed face still shows it `Disabled`, and `DELETE`
/// on either face removes it.
fn shown(rec: &SubscriptionRecord) -> bool {
    rec.disabled.is_none()
}

/// OMA 2012 (a decision: OMA 2012 defines no update), the rule on a refresh: PUT of the whole
/// subscription grants `duration` again from `now_ms` and replaces `callbackData`; where
/// notifications go (`notifyURL`, `notificationFormat`) and the `clientCorrelator` cannot
/// change (subscribe anew instead). `notify_url` is the body's, whitespace at its ends trimmed.
pub(super) fn refresh(
    rec: &SubscriptionRecord,
    body: ChatNotificationSubscription,
    notify_url: &str,
    granted: i64,
    now_ms: i64,
) -> Result<SubscriptionRecord, Refused> {
    let fixed = |field: &str| {
        Refused::Invalid(format!(
            "{field}: cannot change on a subscription; subscribe anew for another"
        ))
    };
    if notify_url != rec.callback.notify_url {
        return Err(fixed("callbackReference.notifyURL"));
    }
    if body
        .callback_reference
        .notification_format
        .is_some_and(|f| Some(f) != rec.callback.notification_format)
    {
        return Err(fixed("callbackReference.notificationFormat"));
    }
    // An empty correlator is none (`super::correlator`): a refresh that leaves it empty
    // changes nothing.
    if super::correlator(body.client_correlator)
        .is_some_and(|c| Some(&c) != rec.client_correlator.as_ref())
    {
        return Err(fixed("clientCorrelator"));
    }
    let mut next = rec.clone();
    next.callback.callback_data = body.callback_reference.callback_data;
    next.duration = granted;
    next.expires_at_ms = (granted > 0).then(|| now_ms + granted * 1000);
    Ok(next)
}

/// A `404` from a seed entry point names the seed's URL; on this face it names `url`, the
/// resource the client asked for (the same answer as for one that never existed).
fn named(e: ApiError, url: impl FnOnce() -> String) -> ApiError {
    if e.status == http::StatusCode::NOT_FOUND {
        missing(&url())
    } else {
        e
    }
}

impl Chat {
    /// OMA 2012: subscribe (the seed's [`Chat::subscribe`]); the subscription's notifications
    /// are told in the OMA 2012 profile ([`profile`]).
    pub async fn create_notification_subscription(
        self: &Arc<Self>,
        user: &str,
        owner: &str,
        body: ChatNotificationSubscription,
    ) -> Result<Created<ChatNotificationSubscription>, ApiError> {
        let seed = ChatSubscription {
            callback_reference: body.callback_reference,
            duration: body.duration,
            client_correlator: body.client_correlator,
            resource_url: None,
            subscription_status: None,
            status_reason: None,
            signing_secret: body.signing_secret,
        };
        let (rec, own_secret) = self.subscribe(user, owner, seed, Face::Oma2012).await?;
        let mut view = subscription(&self.urls, &rec);
        // Shown once, as on the seed face: the secret the client sent or the one made for it.
        view.signing_secret = own_secret;
        Ok(Created {
            location: view.resource_url.clone().unwrap_or_default(),
            body: view,
        })
    }

    /// OMA 2012: one page of the user's subscriptions (every face's), as this face shows them.
    pub fn list_notification_subscriptions(
        &self,
        user: &str,
        req: PageRequest,
    ) -> ChatSubscriptionList {
        let state = self.read_state();
        let entries = state
            .subscriptions_of(user)
            .filter(|s| shown(&s.rec))
            .map(|s| (s.rec.seq, s));
        let p = page::page(entries, req);
        let resource_url = self.urls.oma2012_subscriptions(user);
        ChatSubscriptionList {
            chat_subscription: Vec::new(),
            chat_notification_subscription: p
                .items
                .into_iter()
                .map(|s| subscription(&self.urls, &s.rec))
                .collect(),
            link: page::next_links(&resource_url, req, p.next),
            resource_url,
        }
    }

    /// OMA 2012: one subscription of the user.
    pub fn get_notification_subscription(
        &self,
        user: &str,
        id: &str,
    ) -> Result<ChatNotificationSubscription, ApiError> {
        let state = self.read_state();
        match state.subscriptions.get(id) {
            Some(s) if s.rec.user == user && shown(&s.rec) => Ok(subscription(&self.urls, &s.rec)),
            _ => Err(missing(&self.urls.oma2012_subscription(user, id))),
        }
    }

    /// OMA 2012: refresh a subscription with PUT; the rule is [`refresh`]. Its expiry task is
    /// replaced by one for the new expiry, or ended when it has none.
    pub async fn update_notification_subscription(
        self: &Arc<Self>,
        user: &str,
        id: &str,
        body: ChatNotificationSubscription,
    ) -> Result<ChatNotificationSubscription, ApiError> {
        let notify_url = body
            .callback_reference
            .notify_url
            .trim_matches([' ', '\t', '\r', '\n'])
            .to_owned();
        let granted = granted_duration(body.duration).map_err(|r| r.into_api(String::new))?;
        let (view, start_timer, rx) = {
            let mut state = self.write_state();
            let sub = match state.subscriptions.get_mut(id) {
                Some(s) if s.rec.user == user && shown(&s.rec) => s,
                _ => return Err(missing(&self.urls.oma2012_subscription(user, id))),
            };
            let next = refresh(&sub.rec, body, &notify_url, granted, now_ms())
                .map_err(|r| r.into_api(String::new))?;
            let start_timer = next.expires_at_ms;
            if start_timer.is_none()
                && let Some(t) = sub.timer.take()
            {
                t.abort();
            }
            let mut change = Change::default();
            change.put(
                Kind::Subscription,
                id.to_owned(),
                records::encode_subscription(&next),
            );
            let view = subscription(&self.urls, &next);
            sub.rec = next;
            (view, start_timer, self.submit(&mut state, change))
        };
        durable(rx).await?;
        if let Some(at) = start_timer {
            self.expiry_timer(id.to_owned(), at);
        }
        Ok(view)
    }

    /// OMA 2012: unsubscribe (the seed's [`Chat::delete_subscription`]).
    pub async fn delete_notification_subscription(
        &self,
        user: &str,
        id: &str,
    ) -> Result<(), ApiError> {
        self.delete_subscription(user, id)
            .await
            .map_err(|e| named(e, || self.urls.oma2012_subscription(user, id)))
    }
}

impl Chat {
    /// Whether an ad hoc message may be sent to `recipient` now, or an ad hoc chat opened with
    /// it (which tells it `SessionEnded` when closed): each of its subscriptions' backlogs
    /// under half its cap ([`crate::notify::rules::unsolicited_may_add`]); else `403 POL2008`
    /// to the sender, until the recipient's callback takes what waits.
    fn may_send_unsolicited(&self, state: &State, recipient: &str) -> Result<(), Refused> {
        let limit = self.settings.retry.backlog;
        let full = state.subscriptions_of(recipient).any(|s| {
            let (count, bytes) = s.queue.holding();
            !crate::notify::rules::unsolicited_may_add(limit, count, bytes)
        });
        match full {
            false => Ok(()),
            true => Err(Refused::TooMany {
                what: "notifications waiting undelivered for the recipient, which an ad hoc \
                       message may add to (retry once the recipient has taken them)",
                limit: limit.count / 2,
            }),
        }
    }

    /// The id of the ad hoc session of `user` with `other` ([`adhoc_with`]), else the `404`
    /// of `url`: what a read or a status report at `…/adhoc` names, and the session of a
    /// delivery receipt that says `adhoc` (`delivered`).
    pub(super) fn adhoc(
        &self,
        user: &str,
        other: &str,
        url: impl FnOnce() -> String,
    ) -> Result<String, ApiError> {
        let state = self.read_state();
        adhoc_with(state.adhoc_sessions_of(user), user, other)
            .map(|s| s.id.clone())
            .ok_or_else(|| missing(&url()))
    }

    /// A send to `adhoc` (a message, an `isComposing`) from `user` to `other`: the pair's ad
    /// hoc chat when one is open (marked active now; the caller sends into it as into any), or
    /// one opened ([`open_adhoc`]) with `first` (the send, under the same write lock) in the
    /// same step, so that nothing (the peer's `DELETE`, the idle end) can close the chat
    /// between its opening and what opened it. Before, the open was committed on its own and
    /// a `DELETE` landing in between left the send `404`, or, sent again, a second chat
    /// beside the empty first (the race reviews). What comes through an ad hoc chat is
    /// unsolicited, and so is opening one (closing it tells the peer `SessionEnded`: an
    /// open-and-close loop must not fill its backlog either): checked here, once
    /// ([`Chat::may_send_unsolicited`]). `may_open` weighs what would open a chat before it
    /// is opened: `first` runs once the chat is open, and a refusal there cannot close it.
    async fn adhoc_send<R>(
        self: &Arc<Self>,
        (user, owner): (&str, &str),
        other: &str,
        may_open: impl FnOnce(&State) -> Result<(), Refused>,
        first: impl FnOnce(&mut State, &str) -> Result<(R, super::Committed), ApiError>,
    ) -> Result<AdHoc<R>, ApiError> {
        let (sid, opened, sent) = {
            let mut state = self.write_state();
            self.may_send_unsolicited(&state, other)
                .map_err(|r| r.into_api(String::new))?;
            let mine = state.adhoc_sessions_of(user);
            if let Some(s) = adhoc_with(mine, user, other) {
                let sid = s.id.clone();
                if let Some(clock) = state.active.get(&sid) {
                    clock
                        .at
                        .fetch_max(now_ms(), std::sync::atomic::Ordering::Relaxed);
                }
                return Ok(AdHoc::Open(sid));
            }
            may_open(&state)
                .and_then(|()| {
                    self.settings
                        .limits
                        .in_all
                        .room_for(&state, super::Held::Sessions, owner)
                })
                .map_err(|r| r.into_api(String::new))?;
            let new = state.new_id("sess");
            let sid = new.0.clone();
            let mut d = open_adhoc(
                &self.urls,
                user,
                other,
                new,
                state.open_sessions(user),
                self.settings.limits.sessions_per_user,
            )
            .map_err(|r| r.into_api(String::new))?;
            // The token that opened it holds it ([`super::state::Owners`]).
            d.session.owner = Some(owner.to_owned());
            // Active from now on (`State::active`, set by the session's entry).
            let opened = self.apply(&mut state, d);
            let sent = first(&mut state, &sid);
            (sid, opened, sent)
        };
        // The chat is open (in memory, and committed or to be) whatever became of `first` or
        // of the wait for the commit: its idle timer runs.
        self.adhoc_timer(sid);
        durable(opened).await?;
        let (r, sent) = sent?;
        durable(sent).await?;
        Ok(AdHoc::Opened(r))
    }

    /// A send to `adhoc` (a message, an `isComposing`) from `user` to `other`: opening the
    /// pair's chat with it (`may_open`, `first`: [`Chat::adhoc_send`]), or into the chat open
    /// already as into any session (`into`). A chat found open and closed before the send
    /// reached it (`404`) is opened again, at most [`ADHOC_TRIES`] times in all.
    async fn to_adhoc<R, F>(
        self: &Arc<Self>,
        (user, owner): (&str, &str),
        other: &str,
        may_open: impl Fn(&State) -> Result<(), Refused>,
        first: impl Fn(&mut State, &str) -> Result<(R, super::Committed), ApiError>,
        into: impl Fn(String) -> F,
    ) -> Result<R, ApiError>
    where
        F: std::future::Future<Output = Result<R, ApiError>>,
    {
        let mut tries = 1;
        loop {
            let real = match self
                .adhoc_send((user, owner), other, &may_open, &first)
                .await?
            {
                AdHoc::Opened(r) => return Ok(r),
                AdHoc::Open(real) => real,
            };
            match into(real).await {
                Err(e) if again_into_adhoc(&e, &mut tries) => continue,
                sent => return sent,
            }
        }
    }

    /// Starts the idle timer of ad hoc session `sid` (one per session: started when it is
    /// opened or restored): it wakes when the session may have become idle and ends it then
    /// ([`idle`]), or sleeps on to its new due time.
    pub(super) fn adhoc_timer(self: &Arc<Self>, sid: String) {
        let chat = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(c) = chat.upgrade() else { return };
                let Some(due) = c.adhoc_idle(&sid) else {
                    return;
                };
                drop(c);
                let wait = u64::try_from(due - now_ms()).unwrap_or(0);
                tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
            }
        });
    }

    /// [`Chat::adhoc_timer`] for a session restored at `restored_ms`, whose idle clock
    /// (`State::active`) starts at its last stored change (`Session::changed_ms`), or at the
    /// restart when its record has none (format 8 and older): moved to its last stored
    /// message first, later than the change (a message does not rewrite the session), or
    /// back from the restart when nothing touched the clock meanwhile (a message since wins).
    /// Before, every restart started the idle time again, so restarts more frequent than it
    /// (rolling upgrades, failovers) kept an ad hoc chat open for ever (the upgrade review). A
    /// read that fails leaves the clock as restored.
    pub(super) fn adhoc_timer_restored(self: &Arc<Self>, sid: String, restored_ms: i64) {
        let chat = Arc::clone(self);
        tokio::spawn(async move {
            let s = sid.clone();
            // `sent_ms` 0: written by a migration from a format without it (no ad hoc chat).
            if let Ok(Some(last)) = chat.read(move |b| b.last_message_ms(&s)).await
                && (1..restored_ms).contains(&last)
            {
                let state = chat.read_state();
                if let Some(clock) = state.active.get(&sid) {
                    let relaxed = std::sync::atomic::Ordering::Relaxed;
                    let _ = clock
                        .at
                        .compare_exchange(restored_ms, last, relaxed, relaxed);
                    clock.at.fetch_max(last, relaxed);
                }
            }
            chat.adhoc_timer(sid);
        });
    }

    /// Ends ad hoc session `sid` if it is idle ([`idle`]); `Some(when to look again)` while
    /// it is not, `None` once it is gone.
    fn adhoc_idle(&self, sid: &str) -> Option<i64> {
        let mut state = self.write_state();
        let active = state
            .active
            .get(sid)?
            .at
            .load(std::sync::atomic::Ordering::Relaxed);
        let idle_ms = i64::try_from(self.settings.adhoc_idle.as_millis()).unwrap_or(i64::MAX);
        // Gone, or no longer ad hoc (extended to a group, the idle sweeper's now): nothing
        // left to watch.
        let s = state.sessions.get(sid).filter(|s| s.adhoc)?;
        match idle(
            &self.urls,
            s,
            active,
            idle_ms,
            now_ms(),
            "the ad hoc chat was idle",
        ) {
            Err(due) => Some(due),
            Ok(d) => {
                // Nobody waits: the timer made this change.
                drop(self.apply(&mut state, d));
                None
            }
        }
    }
}

impl Chat {
    /// Session `sid` if it is a one-to-one session `user` sees with `other` as its peer, or
    /// for [`ADHOC`] the pair's open ad hoc session (what the ad hoc notifications link: read,
    /// closed or answered there like a confirmed one; never opened by this lookup); the `404`
    /// of a session that never existed otherwise (a group session included).
    fn one_to_one<'a>(
        &self,
        state: &'a State,
        user: &str,
        other: &str,
        sid: &str,
    ) -> Result<&'a Session, ApiError> {
        if sid == ADHOC {
            let mine = state.adhoc_sessions_of(user);
            return adhoc_with(mine, user, other)
                .ok_or_else(|| missing(&self.urls.one_to_one_session(user, other, ADHOC)));
        }
        // The 404 names the URL the client used, under this tree.
        let s = self
            .visible(state, user, sid)
            .map_err(|e| named(e, || self.urls.one_to_one_session(user, other, sid)))?;
        match peer(s, user) {
            Some(p) if p == other => Ok(s),
            _ => Err(missing(&self.urls.one_to_one_session(user, other, sid))),
        }
    }

    /// The session a message status URL under `oneToOne/{other}/{sid}` names: `sid` itself
    /// when it is a one-to-one session with `other`, the pair's ad hoc session for [`ADHOC`]
    /// (never opened by a read or a report); the `404` of the status URL otherwise.
    async fn resolve(
        self: &Arc<Self>,
        user: &str,
        other: &str,
        sid: &str,
        mid: &str,
    ) -> Result<String, ApiError> {
        if sid == ADHOC {
            let url = || self.urls.one_to_one_message_status(user, other, ADHOC, mid);
            return self.adhoc(user, other, url);
        }
        self.one_to_one(&self.read_state(), user, other, sid)?;
        Ok(sid.to_owned())
    }

    /// OMA 2012: start a confirmed one-to-one chat with `other` (canonical): the seed's start
    /// ([`Chat::start_session`]) with one invitee, answered in the 2012 shape.
    pub async fn create_one_to_one_session(
        self: &Arc<Self>,
        user: &str,
        owner: &str,
        other: &str,
        body: ChatSessionInformation,
    ) -> Result<Created<ChatSessionInformation>, ApiError> {
        let body = request(user, other, body).map_err(|r| r.into_api(String::new))?;
        self.start_session(
            user,
            owner,
            body,
            false,
            |s| peer(s, user) == Some(other),
            |urls, user, s| {
                (
                    urls.one_to_one_session(user, other, &s.id),
                    session(urls, user, other, s),
                )
            },
        )
        .await
    }

    /// OMA 2012: read a one-to-one session.
    pub fn get_one_to_one_session(
        &self,
        user: &str,
        other: &str,
        sid: &str,
    ) -> Result<ChatSessionInformation, ApiError> {
        let state = self.read_state();
        let s = self.one_to_one(&state, user, other, sid)?;
        Ok(session(&self.urls, user, other, s))
    }

    /// OMA 2012: close a one-to-one session, or decline its invitation. The rule is [`close`].
    pub async fn delete_one_to_one_session(
        &self,
        user: &str,
        other: &str,
        sid: &str,
    ) -> Result<(), ApiError> {
        let rx = {
            let mut state = self.write_state();
            let open = state.open_sessions(user);
            let s = self.one_to_one(&state, user, other, sid)?;
            let d = close(
                &self.urls,
                s,
                user,
                open,
                self.settings.limits.sessions_per_user,
            )
            .map_err(|r| r.into_api(|| self.urls.one_to_one_session(user, other, sid)))?;
            self.apply(&mut state, d)
        };
        durable(rx).await
    }

    /// OMA 2012 §6.2: the same change of one's own status, PUT at the session's link
    /// ([`Chat::update_one_to_one_session_status`]).
    pub async fn update_one_to_one_session(
        &self,
        user: &str,
        other: &str,
        sid: &str,
        status: ParticipantStatus,
    ) -> Result<(), ApiError> {
        self.update_one_to_one_session_status(user, other, sid, status)
            .await
    }

    /// OMA 2012: accept (`Connected`): the seed's [`Chat::update_participant_status`] on the
    /// user's own status; or decline / close (`Disconnected`), as DELETE does. The peer cannot change
    /// between the check and the update: a 1-1 session only gains participants by becoming a
    /// group, and then the seed's rules still hold for the user's own status.
    pub async fn update_one_to_one_session_status(
        &self,
        user: &str,
        other: &str,
        sid: &str,
        wanted: ParticipantStatus,
    ) -> Result<(), ApiError> {
        // `Disconnected` is the DELETE's [`close`]: a decline while invited, else the end of
        // the chat for both (a one-to-one chat does not outlive one side leaving it; OMA 2012
        // tells the peer `SessionEnded`, where the seed's leave would keep it half open).
        if wanted == ParticipantStatus::Disconnected {
            return self.delete_one_to_one_session(user, other, sid).await;
        }
        self.one_to_one(&self.read_state(), user, other, sid)?;
        self.update_participant_status(user, sid, user, wanted)
            .await
            .map(|_| ())
            .map_err(|e| named(e, || self.urls.one_to_one_session(user, other, sid)))
    }

    /// OMA 2012: send a message in a one-to-one session: the seed's send
    /// ([`Chat::post_message`]); the answer points at the message's status under `oneToOne/`.
    /// `owner` is the token asking: an ad hoc chat this send opens counts against its share
    /// of the server-wide cap on sessions (read only for a send to `adhoc`).
    pub async fn send_one_to_one_message(
        self: &Arc<Self>,
        user: &str,
        owner: &str,
        other: &str,
        sid: &str,
        body: ChatMessage,
    ) -> Result<Created<ResourceReference>, ApiError> {
        if sid == ADHOC {
            let url = || self.urls.one_to_one_messages(user, other, ADHOC);
            let status = |urls: &Urls, user: &str, _: &str, mid: &str| {
                urls.one_to_one_message_status(user, other, ADHOC, mid)
            };
            let body = self.prepared_message(body).map_err(|e| named(e, url))?;
            let first = |state: &mut State, real: &str| {
                self.send_under(state, user, real, body.clone(), status)
                    .map(|(location, sent)| (views::created(location), sent))
            };
            let into = |real: String| {
                let body = body.clone();
                async move { self.post_message(user, &real, body, status).await }
            };
            return self
                .to_adhoc((user, owner), other, |_| Ok(()), first, into)
                .await
                .map_err(|e| named(e, url));
        }
        self.one_to_one(&self.read_state(), user, other, sid)?;
        self.post_message(user, sid, body, |urls, user, sid, mid| {
            urls.one_to_one_message_status(user, other, sid, mid)
        })
        .await
        .map_err(|e| named(e, || self.urls.one_to_one_session(user, other, sid)))
    }

    /// OMA 2012: `isComposing` POSTed to a one-to-one session's messages
    /// ([`Chat::indicate_composing`]); the answer names the collection.
    /// `owner`: as for [`Chat::send_one_to_one_message`].
    pub async fn one_to_one_composing(
        self: &Arc<Self>,
        user: &str,
        owner: &str,
        other: &str,
        sid: &str,
        body: IsComposing,
    ) -> Result<Created<ResourceReference>, ApiError> {
        if sid == ADHOC {
            let url = || self.urls.one_to_one_messages(user, other, ADHOC);
            let ind = super::composing::indication(body).map_err(|r| r.into_api(String::new))?;
            // Refused by the rate, it opens no chat (`compose_under` weighs it in one).
            let rate = |state: &State| {
                let now = std::time::Instant::now();
                if state.composing.admits_in_new_session(user, now) {
                    Ok(())
                } else {
                    Err(Refused::ComposingRate)
                }
            };
            let first = |state: &mut State, real: &str| {
                self.compose_under(state, user, real, &ind)
                    .map(|sent| ((), sent))
            };
            let into = |real: String| {
                let ind = &ind;
                async move {
                    let sent = self.compose_under(&mut self.write_state(), user, &real, ind)?;
                    durable(sent).await
                }
            };
            self.to_adhoc((user, owner), other, rate, first, into)
                .await
                .map_err(|e| named(e, url))?;
        } else {
            self.one_to_one(&self.read_state(), user, other, sid)?;
            self.indicate_composing(user, sid, body)
                .await
                .map_err(|e| named(e, || self.urls.one_to_one_session(user, other, sid)))?;
        }
        let url = self.urls.one_to_one_messages(user, other, sid);
        Ok(views::created(url))
    }

    /// OMA 2012: one message of a one-to-one chat (the seed's [`Chat::get_message`]), its
    /// `resourceURL` under this tree: what a `messageStatusNotification`'s `ChatMessage` link
    /// names.
    pub async fn get_one_to_one_message(
        self: &Arc<Self>,
        user: &str,
        other: &str,
        sid: &str,
        mid: &str,
    ) -> Result<ChatMessage, ApiError> {
        let url = || self.urls.one_to_one_message(user, other, sid, mid);
        let real = self
            .resolve(user, other, sid, mid)
            .await
            .map_err(|e| named(e, url))?;
        if let Some(subject) = self.subject_told(user, other, &real, mid) {
            // The subject told as a first message: the message its notification carried, in
            // this face's elements only ([`oma2012_chat_message`]: who sent it is the
            // notification's `senderAddress`).
            return Ok(ChatMessage {
                text: subject,
                resource_url: Some(url()),
                ..subject_chat_message()
            });
        }
        let mut m = self
            .get_message(user, &real, mid)
            .await
            .map_err(|e| named(e, url))?;
        oma2012_chat_message(&mut m);
        m.resource_url = Some(url());
        Ok(m)
    }

    /// OMA 2012: a message's status as a `messageStatusReport` (the seed's
    /// [`Chat::get_message_delivery_status`]).
    pub async fn get_one_to_one_message_status(
        self: &Arc<Self>,
        user: &str,
        other: &str,
        sid: &str,
        mid: &str,
    ) -> Result<MessageStatusReport, ApiError> {
        let real = self.resolve(user, other, sid, mid).await?;
        if self.subject_told(user, other, &real, mid).is_some() {
            // No report on it is kept (see `update_one_to_one_message_status`): it was
            // delivered, as the notification that carried it.
            return Ok(MessageStatusReport {
                status: MessageStatus::Delivered,
            });
        }
        let status = self
            .get_message_delivery_status(user, &real, mid)
            .await
            .map_err(|e| {
                named(e, || {
                    self.urls.one_to_one_message_status(user, other, sid, mid)
                })
            })?;
        Ok(MessageStatusReport { status })
    }

    /// The subject of one-to-one session `sid` when `mid` names it told as a first message
    /// ([`subject_message_id`]) and the session has one: what reads of that message answer
    /// instead of a `404` (the notification links them).
    fn subject_told(&self, user: &str, other: &str, sid: &str, mid: &str) -> Option<String> {
        if mid != subject_message_id(sid) {
            return None;
        }
        let state = self.read_state();
        let s = self.one_to_one(&state, user, other, sid).ok()?;
        s.subject.clone().filter(|t| !t.is_empty())
    }

    /// OMA 2012: the recipient reports `Delivered` or `Displayed` (the seed's
    /// [`Chat::confirm_message_delivery`]). A report on the subject told as a first message
    /// ([`subject_message_id`]) is taken (204) and changes nothing: it is no stored message.
    pub async fn update_one_to_one_message_status(
        self: &Arc<Self>,
        user: &str,
        other: &str,
        sid: &str,
        mid: &str,
        status: MessageStatus,
    ) -> Result<(), ApiError> {
        let real = self.resolve(user, other, sid, mid).await?;
        if mid == subject_message_id(&real) {
            // The subject told as a first message (GSMA clients report Displayed on every
            // messageNotification): taken, nothing to record or forward.
            return Ok(());
        }
        self.report_message_status(user, &real, mid, status)
            .await
            .map_err(|e| {
                named(e, || {
                    self.urls.one_to_one_message_status(user, other, sid, mid)
                })
            })
    }
}

impl Chat {
    /// Session `sid` if it is a group session `user` sees; the `404` of a session that never
    /// existed otherwise (a one-to-one session included).
    fn group<'a>(&self, state: &'a State, user: &str, sid: &str) -> Result<&'a Session, ApiError> {
        // The 404 names the URL the client used, under this tree.
        let s = self
            .visible(state, user, sid)
            .map_err(|e| named(e, || self.urls.group_session(user, sid)))?;
        if s.group {
            Ok(s)
        } else {
            Err(missing(&self.urls.group_session(user, sid)))
        }
    }

    /// OMA 2012: start a group chat: the seed's start ([`Chat::start_session`]), a group
    /// however many invitees; the answer is a `resourceReference` under `group/`.
    pub async fn create_group_session(
        self: &Arc<Self>,
        user: &str,
        owner: &str,
        body: GroupChatSessionInformation,
    ) -> Result<Created<ResourceReference>, ApiError> {
        let seed = ChatSessionInformation {
            subject: body.subject,
            participant: body.participant,
            client_correlator: body.client_correlator,
            ..ChatSessionInformation::default()
        };
        self.start_session(
            user,
            owner,
            seed,
            true,
            |s| s.group,
            |urls, user, s| {
                let url = urls.group_session(user, &s.id);
                (url.clone(), ResourceReference { resource_url: url })
            },
        )
        .await
    }

    /// OMA 2012: read a group session.
    pub fn get_group_session(
        &self,
        user: &str,
        sid: &str,
    ) -> Result<GroupChatSessionInformation, ApiError> {
        let state = self.read_state();
        let s = self.group(&state, user, sid)?;
        Ok(group_view(&self.urls, user, s))
    }

    /// OMA 2012: end a group session for everyone: the seed's [`end`] (only the originator;
    /// `403` for anyone else, who leaves instead).
    pub async fn delete_group_session(&self, user: &str, sid: &str) -> Result<(), ApiError> {
        self.group(&self.read_state(), user, sid)?;
        self.delete_session(user, sid)
            .await
            .map_err(|e| named(e, || self.urls.group_session(user, sid)))
    }

    /// OMA 2012: one page of a group session's participants (the seed's
    /// [`Chat::list_participants`] order and paging), URLs under `group/`.
    pub fn list_group_participants(
        &self,
        user: &str,
        sid: &str,
        req: PageRequest,
    ) -> Result<ParticipantList, ApiError> {
        let state = self.read_state();
        let s = self.group(&state, user, sid)?;
        let p = page::page((1u64..).zip(&s.participants), req);
        let resource_url = self.urls.group_participants(user, sid);
        Ok(ParticipantList {
            participant: p
                .items
                .into_iter()
                .map(|p| group_participant(&self.urls, user, s, p))
                .collect(),
            link: page::next_links(&resource_url, req, p.next),
            resource_url: Some(resource_url),
        })
    }

    /// OMA 2012: one participant of a group session.
    pub fn get_group_participant(
        &self,
        user: &str,
        sid: &str,
        pid: &str,
    ) -> Result<ParticipantInformation, ApiError> {
        let state = self.read_state();
        let s = self.group(&state, user, sid)?;
        let p = s
            .participant(pid)
            .ok_or_else(|| missing(&self.urls.group_participant(user, sid, pid)))?;
        Ok(group_participant(&self.urls, user, s, p))
    }

    /// OMA 2012: invite one participant (the seed's [`Chat::add_participants`] with a list of
    /// one); the answer names the new participant under `group/`.
    pub async fn add_group_participant(
        self: &Arc<Self>,
        user: &str,
        sid: &str,
        body: ParticipantInformation,
    ) -> Result<Created<ResourceReference>, ApiError> {
        self.group(&self.read_state(), user, sid)?;
        let address = body.address.clone();
        let list = ParticipantList {
            participant: vec![body],
            resource_url: None,
            link: Vec::new(),
        };
        self.add_participants(user, sid, list)
            .await
            .map_err(|e| named(e, || self.urls.group_session(user, sid)))?;
        let url = self.urls.group_participant(user, sid, &address);
        Ok(views::created(url))
    }

    /// OMA 2012: invite a `participantList` (the seed's [`Chat::add_participants`] as it is);
    /// the answer names the session's participants under `group/`.
    pub async fn add_group_participants(
        self: &Arc<Self>,
        user: &str,
        sid: &str,
        list: ParticipantList,
    ) -> Result<Created<ResourceReference>, ApiError> {
        self.group(&self.read_state(), user, sid)?;
        self.add_participants(user, sid, list)
            .await
            .map_err(|e| named(e, || self.urls.group_session(user, sid)))?;
        let url = self.urls.group_participants(user, sid);
        Ok(views::created(url))
    }

    /// OMA 2012: leave or decline (one's own participant), or withdraw an invitation (someone
    /// else's): the seed's [`Chat::update_participant_status`] or [`Chat::cancel_invitation`],
    /// as [`withdraws`] says.
    pub async fn delete_group_participant(
        &self,
        user: &str,
        sid: &str,
        pid: &str,
    ) -> Result<(), ApiError> {
        self.group(&self.read_state(), user, sid)?;
        let done = if withdraws(user, pid) {
            self.cancel_invitation(user, sid, pid).await
        } else {
            self.update_participant_status(user, sid, pid, ParticipantStatus::Disconnected)
                .await
                .map(|_| ())
        };
        done.map_err(|e| named(e, || self.urls.group_participant(user, sid, pid)))
    }

    /// OMA 2012: accept (or leave, re-join) with PUT: the seed's
    /// [`Chat::update_participant_status`].
    pub async fn update_group_participant_status(
        &self,
        user: &str,
        sid: &str,
        pid: &str,
        wanted: ParticipantStatus,
    ) -> Result<(), ApiError> {
        self.group(&self.read_state(), user, sid)?;
        self.update_participant_status(user, sid, pid, wanted)
            .await
            .map(|_| ())
            .map_err(|e| named(e, || self.urls.group_participant_status(user, sid, pid)))
    }

    /// OMA 2012: send a message in a group session ([`Chat::post_message`]); the answer names
    /// the message's status under `group/`.
    pub async fn send_group_message(
        &self,
        user: &str,
        sid: &str,
        body: ChatMessage,
    ) -> Result<Created<ResourceReference>, ApiError> {
        self.group(&self.read_state(), user, sid)?;
        self.post_message(user, sid, body, Urls::group_message_status)
            .await
            .map_err(|e| named(e, || self.urls.group_session(user, sid)))
    }

    /// OMA 2012: `isComposing` POSTed to a group session's messages
    /// ([`Chat::indicate_composing`]); the answer names the collection.
    pub async fn group_composing(
        &self,
        user: &str,
        sid: &str,
        body: IsComposing,
    ) -> Result<Created<ResourceReference>, ApiError> {
        self.group(&self.read_state(), user, sid)?;
        self.indicate_composing(user, sid, body)
            .await
            .map_err(|e| named(e, || self.urls.group_session(user, sid)))?;
        let url = self.urls.group_messages(user, sid);
        Ok(views::created(url))
    }

    /// OMA 2012: one message of a group chat (the seed's [`Chat::get_message`]), its
    /// `resourceURL` under this tree.
    pub async fn get_group_message(
        &self,
        user: &str,
        sid: &str,
        mid: &str,
    ) -> Result<ChatMessage, ApiError> {
        let url = || self.urls.group_message(user, sid, mid);
        self.group(&self.read_state(), user, sid)?;
        let mut m = self
            .get_message(user, sid, mid)
            .await
            .map_err(|e| named(e, url))?;
        oma2012_chat_message(&mut m);
        m.resource_url = Some(url());
        Ok(m)
    }

    /// OMA 2012: a group message's status (the seed's
    /// [`Chat::get_message_delivery_status`]).
    pub async fn get_group_message_status(
        &self,
        user: &str,
        sid: &str,
        mid: &str,
    ) -> Result<MessageStatusReport, ApiError> {
        self.group(&self.read_state(), user, sid)?;
        let status = self
            .get_message_delivery_status(user, sid, mid)
            .await
            .map_err(|e| named(e, || self.urls.group_message_status(user, sid, mid)))?;
        Ok(MessageStatusReport { status })
    }

    /// OMA 2012: a recipient reports a group message (the seed's
    /// [`Chat::confirm_message_delivery`]).
    pub async fn update_group_message_status(
        &self,
        user: &str,
        sid: &str,
        mid: &str,
        status: MessageStatus,
    ) -> Result<(), ApiError> {
        self.group(&self.read_state(), user, sid)?;
        self.report_message_status(user, sid, mid, status)
            .await
            .map_err(|e| named(e, || self.urls.group_message_status(user, sid, mid)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;
    use netapi_chat_api::EventType;

    /// A one-to-one session reads `Invited`, then `Connected`, and `Disconnected` to both
    /// while either has left, the originator included.
    #[test]
    fn a_one_to_one_reads_disconnected_while_either_has_left() {
        let status = |invitee, originator| {
            let mut s = session_fixture(false, &[(B, invitee, Invitation::None)]);
            s.participants[0].status = originator;
            one_to_one_status(&s)
        };
        assert_eq!(status(Invited, Connected), Invited);
        assert_eq!(status(Connected, Connected), Connected);
        assert_eq!(status(Disconnected, Connected), Disconnected);
        assert_eq!(status(Connected, Disconnected), Disconnected);
    }

    fn body(t: Option<&str>, o: Option<&str>) -> ChatSessionInformation {
        ChatSessionInformation {
            subject: Some("hi".to_owned()),
            participant: Vec::new(),
            originator_address: o.map(str::to_owned),
            originator_name: None,
            t_participant_address: t.map(str::to_owned),
            t_participant_name: Some("Bob".to_owned()),
            status: None,
            ended: None,
            client_correlator: None,
            resource_url: None,
        }
    }

    #[test]
    fn only_a_two_party_session_has_a_peer() {
        let one = session_fixture(false, &[(B, Invited, pending(1))]);
        assert_eq!(peer(&one, A), Some(B));
        assert_eq!(peer(&one, B), Some(A));
        let group = session_fixture(true, &[(B, Invited, pending(1)), (C, Invited, pending(2))]);
        assert_eq!(peer(&group, A), None);
    }

    #[test]
    fn the_2012_body_becomes_the_seed_form_with_one_invitee() {
        let seed = request(A, B, body(Some(B), Some(A))).expect("accepted");
        assert_eq!(seed.participant.len(), 1);
        assert_eq!(seed.participant[0].address, B);
        assert_eq!(seed.participant[0].name.as_deref(), Some("Bob"));
        assert_eq!(seed.subject.as_deref(), Some("hi"));
        assert!(request(A, B, body(None, None)).is_ok());
        let field = |b| match request(A, B, b) {
            Err(Refused::Contradicts { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(body(Some(C), None)), "tParticipantAddress");
        assert_eq!(field(body(None, Some(C))), "originatorAddress");
        assert!(matches!(
            request(A, A, body(None, None)),
            Err(Refused::Contradicts {
                field: "otherUserId",
                ..
            })
        ));
        let mut listed = body(None, None);
        listed.participant = request(A, C, body(None, None)).expect("ok").participant;
        assert_eq!(field(listed), "participant");
    }

    #[test]
    fn the_2012_view_is_flat_and_shows_the_invitees_status() {
        let s = session_fixture(false, &[(B, Invited, pending(1))]);
        let v = super::session(&urls(), B, A, &s);
        assert!(v.participant.is_empty());
        assert_eq!(v.originator_address.as_deref(), Some(A));
        assert_eq!(v.t_participant_address.as_deref(), Some(B));
        assert_eq!(v.status, Some(Invited));
        assert_eq!(
            v.resource_url.as_deref(),
            Some("http://chat.test/chat/v1/tel%3A%2B2/oneToOne/tel%3A%2B1/sess-1")
        );
    }

    #[test]
    fn a_send_into_an_adhoc_chat_closed_meanwhile_opens_it_again_a_bounded_number_of_times() {
        let gone = ApiError::not_found("/chat/v1/a/oneToOne/b/adhoc");
        let mut tries = 1;
        let again: Vec<bool> = (0..4)
            .map(|_| again_into_adhoc(&gone, &mut tries))
            .collect();
        assert_eq!(
            again,
            [true, true, false, false],
            "{ADHOC_TRIES} tries in all"
        );
        // Any other refusal is the answer at once.
        let refused = ApiError::forbidden("too many");
        assert!(!again_into_adhoc(&refused, &mut 1));
    }

    #[test]
    fn either_side_closes_and_an_unanswered_invitee_declines() {
        let u = urls();
        // The originator ends it: the invitee is told the invitation is cancelled.
        let s = session_fixture(false, &[(B, Invited, pending(1))]);
        let d = close(&u, &s, A, 0, 10).expect("closed");
        assert!(d.session.ended);
        assert_eq!(
            told(&d.outbox),
            [
                format!("{A} <- SessionEnded"),
                format!("{B} <- SessionCancelled")
            ]
        );
        // The invitee declines: the session ends and the originator hears of it.
        let d = close(&u, &s, B, 0, 10).expect("declined");
        assert_eq!(state_of(&d.session, B).0, Disconnected);
        assert!(!told(&d.outbox).is_empty());
        // The peer who accepted closes (the seed face would say 403): both are told it ended.
        let s = session_fixture(false, &[(B, Connected, Invitation::Accepted)]);
        let d = close(&u, &s, B, 1, 10).expect("closed by the peer");
        assert!(d.session.ended);
        let mut t = told(&d.outbox);
        t.sort();
        assert_eq!(
            t,
            [
                format!("{A} <- {:?}", EventType::SessionEnded),
                format!("{B} <- {:?}", EventType::SessionEnded)
            ]
        );
        assert!(matches!(
            close(&u, &s, STRANGER, 0, 10),
            Err(Refused::NotFound)
        ));
    }

    #[test]
    fn the_group_view_lists_everyone_under_group() {
        let s = session_fixture(
            true,
            &[
                (B, Connected, Invitation::Accepted),
                (C, Invited, pending(2)),
            ],
        );
        let v = group_view(&urls(), B, &s);
        let who: Vec<_> = v
            .participant
            .iter()
            .map(|p| (p.address.as_str(), p.status, p.is_originator))
            .collect();
        assert_eq!(
            who,
            [
                (A, Some(Connected), Some(true)),
                (B, Some(Connected), Some(false)),
                (C, Some(Invited), Some(false))
            ]
        );
        assert_eq!(
            v.participant[2].resource_url.as_deref(),
            Some("http://chat.test/chat/v1/tel%3A%2B2/group/sess-1/participants/tel%3A%2B3")
        );
        assert!(withdraws(A, C));
        assert!(!withdraws(B, B));
    }

    /// No body is an accept; a body is its status, whichever.
    #[test]
    fn an_accept_without_a_body_is_connected() {
        assert_eq!(asked_status(None), Connected);
        for status in [Connected, Disconnected, Invited] {
            assert_eq!(
                asked_status(Some(ParticipantSessionStatus { status })),
                status
            );
        }
    }

    /// The OMA 2012 profile of each seed notification: names and links of this face, facts
    /// unchanged; a one-to-one peer's accept and decline become events.
    #[test]
    fn the_2012_profile_renames_and_relinks() {
        let u = urls();
        let rels = |l: &[Link]| -> Vec<(String, String)> {
            l.iter().map(|l| (l.rel.clone(), l.href.clone())).collect()
        };
        let base = "http://chat.test/chat/v1/tel%3A%2B2";
        // A one-to-one invitation.
        let one = session_fixture(false, &[(B, Invited, pending(1))]);
        let n = profile(&u, B, Some(&one), views::invitation(&u, B, &one));
        let Notification::ChatSessionInvitationNotification(n) = n else {
            panic!("{n:?}")
        };
        assert_eq!(
            (n.subject.as_str(), n.originator_address.as_str()),
            ("fixture", A)
        );
        assert_eq!(n.t_participant_address.as_deref(), Some(B));
        assert_eq!(
            rels(&n.link),
            [
                (
                    "ChatSessionInformation".to_owned(),
                    format!("{base}/oneToOne/tel%3A%2B1/sess-1")
                ),
                (
                    "ParticipantSessionStatus".to_owned(),
                    format!("{base}/oneToOne/tel%3A%2B1/sess-1/status")
                )
            ]
        );
        // A group invitation lists everyone and links the invitee's own participant.
        let group = session_fixture(true, &[(B, Invited, pending(1)), (C, Invited, pending(2))]);
        let n = profile(&u, B, Some(&group), views::invitation(&u, B, &group));
        let Notification::GroupSessionInvitationNotification(n) = n else {
            panic!("{n:?}")
        };
        assert_eq!(n.participant.len(), 3);
        assert_eq!(n.participant[0].is_originator, Some(true));
        let got: Vec<_> = rels(&n.link).into_iter().map(|(r, _)| r).collect();
        assert_eq!(
            got,
            [
                "ParticipantInformation",
                "ParticipantInformationStatus",
                "GroupChatSessionInformation"
            ]
        );
        assert_eq!(
            n.link[0].href,
            format!("{base}/group/sess-1/participants/tel%3A%2B2")
        );
        // The peer accepted: the originator hears `Accepted`, linked under oneToOne/.
        let accepted = session_fixture(false, &[(B, Connected, Invitation::Accepted)]);
        let b = accepted.participant(B).expect("B");
        let n = views::participant_status(&u, A, &accepted, &[b]);
        let Notification::ChatEventNotification(e) = profile(&u, A, Some(&accepted), n) else {
            panic!("not an event")
        };
        assert_eq!(e.event_type, EventType::Accepted);
        assert_eq!(
            e.link[0].href,
            "http://chat.test/chat/v1/tel%3A%2B1/oneToOne/tel%3A%2B2/sess-1"
        );
        // A group member's change stays a participantStatusNotification, links under group/.
        let g = session_fixture(
            true,
            &[
                (B, Connected, Invitation::Accepted),
                (C, Invited, pending(2)),
            ],
        );
        let n = views::participant_status(&u, C, &g, &[g.participant(B).expect("B")]);
        let Notification::ParticipantStatusNotification(n) = profile(&u, C, Some(&g), n) else {
            panic!("renamed")
        };
        assert_eq!(n.participant[0].link[1].rel, "ParticipantInformationStatus");
        assert_eq!(n.link[0].rel, "GroupChatSessionInformation");
        // A delivery report is a messageStatusNotification linking the sender's message and its
        // status URL.
        let m = super::super::testkit::message("msg-1", A, &[(B, MessageStatus::Sent)]);
        let n = views::delivery(&u, "sess-1", &m, B, MessageStatus::Displayed);
        let Notification::MessageStatusNotification(n) = profile(&u, A, Some(&one), n) else {
            panic!("not renamed")
        };
        assert_eq!(n.status, MessageStatus::Displayed);
        assert_eq!(n.description.as_deref(), Some("reported by tel:+2"));
        assert_eq!(
            rels(&n.link),
            [
                (
                    "ChatMessage".to_owned(),
                    "http://chat.test/chat/v1/tel%3A%2B1/oneToOne/tel%3A%2B2/sess-1/messages/msg-1"
                        .to_owned()
                ),
                (
                    "MessageStatusReport".to_owned(),
                    "http://chat.test/chat/v1/tel%3A%2B1/oneToOne/tel%3A%2B2/sess-1/messages/msg-1/status"
                        .to_owned()
                )
            ]
        );
        // A message: the same name, itself and its status under the tree, no seed URL left.
        let n = views::message_notification(&u, B, &one, &m, None);
        let Notification::MessageNotification(n) = profile(&u, B, Some(&one), n) else {
            panic!("renamed")
        };
        assert_eq!(
            n.chat_message.expect("a message").resource_url.as_deref(),
            Some("http://chat.test/chat/v1/tel%3A%2B2/oneToOne/tel%3A%2B1/sess-1/messages/msg-1")
        );
        assert_eq!(n.link.len(), 1);
        assert!(n.link[0].href.starts_with(&format!("{base}/oneToOne/")));
        // Without its session a notification is told as it is.
        let n = views::event(&u, A, &one, EventType::SessionEnded, String::new());
        assert_eq!(profile(&u, A, None, n.clone()), n);
    }

    #[test]
    fn a_refresh_regrants_the_duration_and_keeps_where_notifications_go() {
        let mut rec = super::super::testkit::subscription("sub-1", A, 1);
        rec.callback.notification_format = Some(netapi_chat_api::NotificationFormat::Json);
        rec.client_correlator = Some("c".into());
        let body = |url: &str| ChatNotificationSubscription {
            callback_reference: netapi_chat_api::CallbackReference {
                notify_url: url.to_owned(),
                callback_data: Some("new".into()),
                notification_format: None,
            },
            client_correlator: None,
            confirmed_chat_supported: None,
            adhoc_chat_supported: None,
            duration: Some(60),
            resource_url: None,
            signing_secret: None,
        };
        let url = rec.callback.notify_url.clone();
        let next = refresh(&rec, body(&url), &url, 60, 1_000).expect("refreshed");
        assert_eq!((next.duration, next.expires_at_ms), (60, Some(61_000)));
        assert_eq!(next.callback.callback_data.as_deref(), Some("new"));
        let forever = refresh(&rec, body(&url), &url, 0, 1_000).expect("refreshed");
        assert_eq!(forever.expires_at_ms, None);
        let refused = |b, u: &str| match refresh(&rec, b, u, 60, 0) {
            Err(Refused::Invalid(t)) => t,
            other => panic!("{other:?}"),
        };
        assert!(
            refused(body("http://elsewhere.test/"), "http://elsewhere.test/")
                .starts_with("callbackReference.notifyURL")
        );
        let mut xml = body(&url);
        xml.callback_reference.notification_format = Some(netapi_chat_api::NotificationFormat::Xml);
        assert!(refused(xml, &url).starts_with("callbackReference.notificationFormat"));
        let mut other = body(&url);
        other.client_correlator = Some("d".into());
        assert!(refused(other, &url).starts_with("clientCorrelator"));
        let mut same = body(&url);
        same.client_correlator = Some("c".into());
        assert!(refresh(&rec, same, &url, 60, 0).is_ok());
        // An empty one is none: it leaves the correlator as it is, with one or without.
        let mut empty = body(&url);
        empty.client_correlator = Some(String::new());
        assert!(refresh(&rec, empty.clone(), &url, 60, 0).is_ok());
        rec.client_correlator = None;
        assert!(refresh(&rec, empty, &url, 60, 0).is_ok());
    }

    /// OMA 2012 as its gateways behaved: a one-to-one invitation is followed by its subject as
    /// a message (no messageId, the session linked); a group invitation, another notification
    /// or an empty subject is told alone.
    #[test]
    fn a_group_status_is_told_with_the_whole_roster_and_yourown() {
        let g = session_fixture(
            true,
            &[
                (B, Connected, Invitation::Accepted),
                (C, Invited, pending(1)),
            ],
        );
        let changed = vec![ParticipantStatusEntry {
            address: B.to_owned(),
            name: None,
            status: Some(Connected),
            yourown: Some(false),
            link: Vec::new(),
        }];
        let all: Vec<_> = roster(changed, C, &g)
            .into_iter()
            .map(|e| (e.address, e.status, e.yourown))
            .collect();
        assert_eq!(
            all,
            [
                (B.to_owned(), Some(Connected), Some(false)),
                (A.to_owned(), Some(Connected), Some(false)),
                (C.to_owned(), Some(Invited), Some(true))
            ]
        );
    }

    /// The 2012 face's chatMessage holds OMA's three elements; a seed successReport is a
    /// Delivered in reportRequest (once).
    #[test]
    fn a_2012_chat_message_holds_omas_elements_only() {
        let mut m = ChatMessage {
            text: "hi".into(),
            success_report: Some(true),
            report_request: vec![MessageStatus::Displayed],
            client_correlator: Some("c".into()),
            sender_address: Some(A.into()),
            date_time: Some("2026-12-04T00:00:00Z".into()),
            resource_url: None,
        };
        oma2012_chat_message(&mut m);
        assert_eq!(
            (
                m.success_report,
                m.client_correlator.as_deref(),
                m.sender_address.as_deref(),
                m.date_time.as_deref()
            ),
            (None, None, None, None)
        );
        assert_eq!(
            m.report_request,
            [MessageStatus::Delivered, MessageStatus::Displayed]
        );
        let mut both = ChatMessage {
            success_report: Some(true),
            report_request: vec![MessageStatus::Delivered],
            ..m.clone()
        };
        oma2012_chat_message(&mut both);
        assert_eq!(both.report_request, [MessageStatus::Delivered]);
    }

    #[test]
    fn the_subject_of_a_one_to_one_invitation_is_also_a_first_message() {
        let u = urls();
        let one = session_fixture(false, &[(B, Invited, pending(1))]);
        let told = rendered(&u, B, Some(&one), views::invitation(&u, B, &one));
        let [
            Notification::ChatSessionInvitationNotification(_),
            Notification::MessageNotification(m),
        ] = told.as_slice()
        else {
            panic!("{told:?}")
        };
        assert_eq!(
            (
                m.sender_address.as_str(),
                m.session_id.as_str(),
                m.message_id.as_deref()
            ),
            (A, "sess-1", Some("subject-sess-1"))
        );
        assert_eq!(
            m.chat_message.as_ref().map(|c| c.text.as_str()),
            Some("fixture")
        );
        assert_eq!(m.link[0].rel, "MessageStatusReport");
        assert_eq!(m.link[1].rel, "ChatSessionInformation");
        assert_eq!(
            m.link[0].href,
            u.one_to_one_message_status(B, A, "sess-1", "subject-sess-1")
        );
        let group = session_fixture(true, &[(B, Invited, pending(1)), (C, Invited, pending(2))]);
        assert_eq!(
            rendered(&u, B, Some(&group), views::invitation(&u, B, &group)).len(),
            1
        );
        let mut quiet = one.clone();
        quiet.subject = None;
        assert_eq!(
            rendered(&u, B, Some(&quiet), views::invitation(&u, B, &quiet)).len(),
            1
        );
        let ended = views::event(&u, A, &one, EventType::SessionEnded, String::new());
        assert_eq!(rendered(&u, A, Some(&one), ended).len(), 1);
    }

    /// An ad hoc session of A (opener) with B, as [`open_adhoc`] makes it.
    fn adhoc_fixture(id: &str) -> Session {
        open_adhoc(&urls(), A, B, (id.to_owned(), 1), 0, 10)
            .expect("opened")
            .session
    }

    #[test]
    fn an_adhoc_chat_opens_connected_without_invitation_and_tells_the_sender_accepted() {
        let u = urls();
        let d = open_adhoc(&u, A, B, ("sess-9".to_owned(), 9), 0, 10).expect("opened");
        assert!(d.session.adhoc && !d.session.group && !d.session.ended);
        for who in [A, B] {
            assert_eq!(state_of(&d.session, who), (Connected, Invitation::None));
        }
        assert_eq!(d.session.originator, A);
        // Only the sender is told, and only `Accepted`: no invitation reaches the peer.
        assert_eq!(
            told(&d.outbox),
            [format!("{A} <- {:?}", EventType::Accepted)]
        );
        // Its 2012 profile says `adhoc`, linked under `…/adhoc`.
        let Notification::ChatEventNotification(e) =
            profile(&u, A, Some(&d.session), d.outbox[0].1.clone())
        else {
            panic!("not an event")
        };
        assert_eq!(e.session_id, ADHOC);
        assert_eq!(
            e.link[0].href,
            "http://chat.test/chat/v1/tel%3A%2B1/oneToOne/tel%3A%2B2/adhoc"
        );
        // With oneself: refused; at the opener's session limit: refused.
        assert!(matches!(
            open_adhoc(&u, A, A, ("sess-9".to_owned(), 9), 0, 10),
            Err(Refused::Contradicts {
                field: "otherUserId",
                ..
            })
        ));
        assert!(matches!(
            open_adhoc(&u, A, B, ("sess-9".to_owned(), 9), 10, 10),
            Err(Refused::TooMany { limit: 10, .. })
        ));
    }

    #[test]
    fn the_pairs_adhoc_chat_is_found_from_either_side_while_both_are_in_it() {
        let adhoc = adhoc_fixture("sess-2");
        let confirmed = session_fixture(false, &[(B, Connected, Invitation::Accepted)]);
        let all = [confirmed.clone(), adhoc.clone()];
        assert_eq!(
            adhoc_with(&all, A, B).map(|s| s.id.as_str()),
            Some("sess-2")
        );
        assert_eq!(
            adhoc_with(&all, B, A).map(|s| s.id.as_str()),
            Some("sess-2")
        );
        assert!(adhoc_with(&all, A, C).is_none());
        assert!(adhoc_with([&confirmed], A, B).is_none());
        let mut ended = adhoc.clone();
        ended.ended = true;
        assert!(adhoc_with([&ended], A, B).is_none());
        let mut left = adhoc.clone();
        left.participants[1].status = Disconnected;
        assert!(adhoc_with([&left], A, B).is_none());
        // It counts against the opener's open sessions only.
        let mut state = State::default();
        state.put_session(adhoc.clone());
        assert_eq!((state.open_sessions(A), state.open_sessions(B)), (1, 0));
    }

    #[test]
    fn an_idle_adhoc_chat_ends_for_both() {
        let u = urls();
        let s = adhoc_fixture("sess-3");
        assert!(matches!(
            idle(&u, &s, 1_000, 500, 1_499, "idle"),
            Err(1_500)
        ));
        let d = idle(&u, &s, 1_000, 500, 1_500, "idle").expect("ended");
        assert!(d.session.ended);
        let mut t = told(&d.outbox);
        t.sort();
        assert_eq!(
            t,
            [
                format!("{A} <- {:?}", EventType::SessionEnded),
                format!("{B} <- {:?}", EventType::SessionEnded)
            ]
        );
        // A message in it is told with `sessionId` adhoc and its status under `…/adhoc/`.
        let m = super::super::testkit::message("msg-1", A, &[(B, MessageStatus::Sent)]);
        let n = views::message_notification(&u, B, &s, &m, None);
        let Notification::MessageNotification(n) = profile(&u, B, Some(&s), n) else {
            panic!("renamed")
        };
        assert_eq!(n.session_id, ADHOC);
        assert_eq!(
            n.link[0].href,
            "http://chat.test/chat/v1/tel%3A%2B2/oneToOne/tel%3A%2B1/adhoc/messages/msg-1/status"
        );
    }

    use super::super::state::Invitation;
    use super::super::testkit::session as session_fixture;
}
