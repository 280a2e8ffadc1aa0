//! State → API documents, as one user sees them (URLs are under that user's `userId`), and the
//! notifications each change sends.

use super::state::{Message, Participant, Session, status_rank};
use crate::notify::Notification;
use crate::urls::Urls;
use netapi_chat_api::{
    ChatEventNotification, ChatMessage, ChatSessionInformation, EventType, Link,
    MessageDeliveryNotification, MessageNotification, MessageStatus, ParticipantInformation,
    ParticipantStatusEntry, ParticipantStatusNotification, SessionInvitationNotification,
};

fn link(rel: &str, href: String) -> Link {
    Link {
        rel: rel.to_owned(),
        href,
    }
}

/// The answer to a create whose body only names what was made: `201`, `Location` and a
/// `resourceReference` both `url` (OMA 2012's sends, invitations and indications).
pub fn created(
    url: String,
) -> netapi_chat_runtime::negotiate::Created<netapi_chat_api::ResourceReference> {
    netapi_chat_runtime::negotiate::Created {
        location: url.clone(),
        body: netapi_chat_api::ResourceReference { resource_url: url },
    }
}

/// The seed's link to session `sid` as `to` reaches it.
pub fn session_link(urls: &Urls, to: &str, sid: &str) -> Link {
    link("ChatSessionInformation", urls.session(to, sid))
}

/// A participant as `viewer` sees it.
pub fn participant(
    urls: &Urls,
    viewer: &str,
    session: &Session,
    p: &Participant,
) -> ParticipantInformation {
    ParticipantInformation {
        address: p.address.clone(),
        name: p.name.clone(),
        is_originator: Some(p.is_originator),
        status: Some(p.status),
        client_correlator: None,
        resource_url: Some(urls.participant(viewer, &session.id, &p.address)),
    }
}

/// A session as `viewer` sees it.
pub fn session(urls: &Urls, viewer: &str, s: &Session) -> ChatSessionInformation {
    ChatSessionInformation {
        subject: s.subject.clone(),
        participant: s
            .participants
            .iter()
            .map(|p| participant(urls, viewer, s, p))
            .collect(),
        originator_address: Some(s.originator.clone()),
        originator_name: s.originator_name.clone(),
        t_participant_address: None,
        t_participant_name: None,
        status: s.participant(viewer).map(|p| p.status),
        ended: Some(s.ended),
        client_correlator: if viewer == s.originator {
            s.client_correlator.clone()
        } else {
            None
        },
        resource_url: Some(urls.session(viewer, &s.id)),
    }
}

/// A message as `viewer` sees it. The reports the sender asked for (`successReport`,
/// `reportRequest`) are shown to every viewer: a recipient is who acts on them (OMA: the list
/// of statuses the sender wants reported), so a client that reports only what is asked sees
/// what is. The `clientCorrelator` is the sender's own id, shown to the sender alone.
pub fn message(urls: &Urls, viewer: &str, sid: &str, m: &Message) -> ChatMessage {
    let mut report_request = Vec::new();
    if m.report_delivered {
        report_request.push(MessageStatus::Delivered);
    }
    if m.report_displayed {
        report_request.push(MessageStatus::Displayed);
    }
    let sender_view = viewer == m.sender;
    ChatMessage {
        text: m.text.clone(),
        success_report: Some(m.report_delivered),
        report_request,
        client_correlator: if sender_view {
            m.client_correlator.clone()
        } else {
            None
        },
        sender_address: Some(m.sender.clone()),
        date_time: Some(m.date_time.clone()),
        resource_url: Some(urls.message(viewer, sid, &m.id)),
    }
}

/// The delivery status `viewer` reads: the sender the least status all recipients reached, a
/// recipient its own.
pub fn delivery_status(viewer: &str, m: &Message) -> Option<MessageStatus> {
    if viewer == m.sender {
        m.recipients
            .iter()
            .map(|(_, s)| *s)
            .min_by_key(|s| status_rank(*s))
            .or(Some(MessageStatus::Sent))
    } else {
        m.recipients
            .iter()
            .find(|(a, _)| a == viewer)
            .map(|(_, s)| *s)
    }
}

/// The invitation an invitee receives.
pub fn invitation(urls: &Urls, invitee: &str, s: &Session) -> Notification {
    Notification::from(SessionInvitationNotification {
        subject: s.subject.clone(),
        originator_address: s.originator.clone(),
        originator_name: s.originator_name.clone(),
        participant: s
            .participants
            .iter()
            .map(|p| participant(urls, invitee, s, p))
            .collect(),
        session_id: s.id.clone(),
        callback_data: None,
        link: vec![
            link("ChatSessionInformation", urls.session(invitee, &s.id)),
            link(
                "ParticipantSessionStatus",
                urls.participant_status(invitee, &s.id, invitee),
            ),
        ],
    })
}

/// The status of `changed` participants, told to `to`.
pub fn participant_status(
    urls: &Urls,
    to: &str,
    s: &Session,
    changed: &[&Participant],
) -> Notification {
    Notification::from(ParticipantStatusNotification {
        participant: changed
            .iter()
            .map(|p| ParticipantStatusEntry {
                address: p.address.clone(),
                name: p.name.clone(),
                status: Some(p.status),
                yourown: Some(p.address == to),
                link: vec![
                    link(
                        "ParticipantInformation",
                        urls.participant(to, &s.id, &p.address),
                    ),
                    link(
                        "ParticipantSessionStatus",
                        urls.participant_status(to, &s.id, &p.address),
                    ),
                ],
            })
            .collect(),
        session_id: s.id.clone(),
        callback_data: None,
        link: vec![link("ChatSessionInformation", urls.session(to, &s.id))],
    })
}

/// A session event told to `to`.
pub fn event(
    urls: &Urls,
    to: &str,
    s: &Session,
    event: EventType,
    description: String,
) -> Notification {
    Notification::from(ChatEventNotification {
        event_type: event,
        event_description: Some(description),
        session_id: s.id.clone(),
        callback_data: None,
        link: vec![link("ChatSessionInformation", urls.session(to, &s.id))],
    })
}

/// A message for recipient `to`.
pub fn message_notification(
    urls: &Urls,
    to: &str,
    s: &Session,
    m: &Message,
    sender_name: Option<String>,
) -> Notification {
    Notification::from(MessageNotification {
        sender_address: m.sender.clone(),
        sender_name,
        chat_message: Some(message(urls, to, &s.id, m)),
        is_composing: None,
        date_time: Some(m.date_time.clone()),
        session_id: s.id.clone(),
        message_id: Some(m.id.clone()),
        callback_data: None,
        link: vec![
            link("ChatMessage", urls.message(to, &s.id, &m.id)),
            link("MessageStatusReport", urls.message_status(to, &s.id, &m.id)),
        ],
    })
}

/// A delivery report for the sender.
pub fn delivery(
    urls: &Urls,
    sid: &str,
    m: &Message,
    recipient: &str,
    status: MessageStatus,
) -> Notification {
    Notification::from(MessageDeliveryNotification {
        status,
        recipient_address: Some(recipient.to_owned()),
        error_code: None,
        description: None,
        message_id: m.id.clone(),
        session_id: sid.to_owned(),
        callback_data: None,
        link: vec![
            link("ChatMessage", urls.message(&m.sender, sid, &m.id)),
            link(
                "MessageStatusReport",
                urls.message_status(&m.sender, sid, &m.id),
            ),
        ],
    })
}

/// A document carrying one notification in the element named after its kind (a channel poll's
/// entry, a dead letter: the generated types have one optional field per kind, the choice of
/// `Notification`): `$ty { given fields }` with `$n` placed in its field and the others `None`.
/// Written once here so that a new kind of notification is added in one place.
macro_rules! with_notification {
    ($ty:ident { $($field:ident: $value:expr),* $(,)? }, $n:expr) => {{
        let mut e = $ty {
            $($field: $value,)*
            session_invitation_notification: None,
            participant_status_notification: None,
            chat_event_notification: None,
            message_notification: None,
            message_delivery_notification: None,
            subscription_cancellation_notification: None,
            chat_session_invitation_notification: None,
            group_session_invitation_notification: None,
            message_status_notification: None,
        };
        match $n {
            netapi_chat_api::Notification::SessionInvitationNotification(n) => {
                e.session_invitation_notification = Some(n);
            }
            netapi_chat_api::Notification::ParticipantStatusNotification(n) => {
                e.participant_status_notification = Some(n);
            }
            netapi_chat_api::Notification::ChatEventNotification(n) => e.chat_event_notification = Some(n),
            netapi_chat_api::Notification::MessageNotification(n) => e.message_notification = Some(n),
            netapi_chat_api::Notification::MessageDeliveryNotification(n) => {
                e.message_delivery_notification = Some(n);
            }
            netapi_chat_api::Notification::SubscriptionCancellationNotification(n) => {
                e.subscription_cancellation_notification = Some(n);
            }
            netapi_chat_api::Notification::ChatSessionInvitationNotification(n) => {
                e.chat_session_invitation_notification = Some(n);
            }
            netapi_chat_api::Notification::GroupSessionInvitationNotification(n) => {
                e.group_session_invitation_notification = Some(n);
            }
            netapi_chat_api::Notification::MessageStatusNotification(n) => {
                e.message_status_notification = Some(n);
            }
        }
        e
    }};
}
pub(crate) use with_notification;
