//! Fixtures for the rules' unit tests: a session written as one line per participant, and an
//! outbox read back as one line per notification (`"tel:+2 <- invitation sess-1"`), so that
//! each test states its case and the notifications it expects as a table.

use super::Outbox;
use super::state::{Invitation, Participant, Session, SubscriptionRecord};
use crate::urls::Urls;
use netapi_chat_api::{CallbackReference, Notification, ParticipantStatus};

/// The originator of every fixture session.
pub(super) const A: &str = "tel:+1";
pub(super) const B: &str = "tel:+2";
pub(super) const C: &str = "tel:+3";
pub(super) const D: &str = "tel:+4";
/// Takes part in nothing.
pub(super) const STRANGER: &str = "tel:+9";

pub(super) use ParticipantStatus::{Connected, Disconnected, Invited};

/// URLs under a fixed base.
pub(super) fn urls() -> Urls {
    Urls::new("http://chat.test")
}

/// A pending invitation numbered `seq`.
pub(super) fn pending(seq: u64) -> Invitation {
    Invitation::Pending {
        seq,
        deadline_ms: 1_000,
    }
}

/// Session `sess-1`, originated by [`A`] (connected), with `others` as (address, status,
/// invitation), all invited by [`A`]; a group session when `group`.
pub(super) fn session(group: bool, others: &[(&str, ParticipantStatus, Invitation)]) -> Session {
    let mut participants = vec![Participant {
        address: A.to_owned(),
        name: Some("Alice".to_owned()),
        is_originator: true,
        status: Connected,
        invitation: Invitation::None,
        invited_by: A.to_owned(),
    }];
    participants.extend(
        others
            .iter()
            .map(|(address, status, invitation)| Participant {
                address: (*address).to_owned(),
                name: None,
                is_originator: false,
                status: *status,
                invitation: *invitation,
                invited_by: A.to_owned(),
            }),
    );
    Session {
        id: "sess-1".to_owned(),
        seq: 1,
        subject: Some("fixture".to_owned()),
        originator: A.to_owned(),
        originator_name: Some("Alice".to_owned()),
        client_correlator: None,
        participants,
        group,
        adhoc: false,
        ended: false,
        changed_ms: None,
        owner: None,
    }
}

/// Subscription `id` of `user`, created `seq`-th, with no expiry and no `callbackData`.
pub(super) fn subscription(id: &str, user: &str, seq: u64) -> SubscriptionRecord {
    SubscriptionRecord {
        id: id.to_owned(),
        user: user.to_owned(),
        callback: CallbackReference {
            notify_url: "http://cb.test/n".to_owned(),
            callback_data: None,
            notification_format: None,
        },
        duration: 0,
        expires_at_ms: None,
        client_correlator: None,
        seq,
        disabled: None,
        secrets: Vec::new(),
        face: super::state::Face::Seed,
        expired_until_ms: None,
        owner: None,
    }
}

/// `address`'s (status, invitation) in `s`.
pub(super) fn state_of(s: &Session, address: &str) -> (ParticipantStatus, Invitation) {
    let p = s
        .participant(address)
        .unwrap_or_else(|| panic!("{address} is not in the session"));
    (p.status, p.invitation)
}

/// One line per notification: who is told, and what (its kind and what it says).
pub(super) fn told(outbox: &Outbox) -> Vec<String> {
    outbox
        .iter()
        .map(|(to, n)| {
            let what = match n {
                Notification::SessionInvitationNotification(n) => {
                    format!("invitation {}", n.session_id)
                }
                Notification::ParticipantStatusNotification(n) => {
                    let changed: Vec<String> = n
                        .participant
                        .iter()
                        .map(|p| {
                            let status = p.status.map(|s| format!("{s:?}")).unwrap_or_default();
                            format!("{}={status}", p.address)
                        })
                        .collect();
                    format!("status {}", changed.join(","))
                }
                Notification::ChatEventNotification(n) => format!("{:?}", n.event_type),
                Notification::MessageNotification(n) => {
                    let what = n.message_id.as_deref().unwrap_or("isComposing");
                    format!("message {what} from {}", n.sender_address)
                }
                Notification::MessageDeliveryNotification(n) => {
                    format!("report {:?} {}", n.status, n.message_id)
                }
                Notification::SubscriptionCancellationNotification(_) => "cancellation".to_owned(),
                Notification::ChatSessionInvitationNotification(n) => {
                    format!("1-1 invitation {}", n.session_id)
                }
                Notification::GroupSessionInvitationNotification(n) => {
                    format!("group invitation {}", n.session_id)
                }
                Notification::MessageStatusNotification(n) => {
                    format!("status report {:?} {}", n.status, n.message_id)
                }
            };
            format!("{to} <- {what}")
        })
        .collect()
}

/// Message `id` from `sender`, sent first, with `recipients` as (address, status).
pub(super) fn message(
    id: &str,
    sender: &str,
    recipients: &[(&str, netapi_chat_api::MessageStatus)],
) -> super::state::Message {
    super::state::Message {
        id: id.to_owned(),
        seq: 1,
        sender: sender.to_owned(),
        text: "hi".to_owned(),
        date_time: "2026-12-03T14:51:54Z".to_owned(),
        report_delivered: true,
        report_displayed: true,
        client_correlator: None,
        recipients: recipients
            .iter()
            .map(|(a, s)| ((*a).to_owned(), *s))
            .collect(),
    }
}
