//! The stored records: what the store holds for each subscription, session, message, the
//! counters and each undelivered notification, in stored format version
//! [`crate::store::format::CURRENT`].
//!
//! These types exist so that the disk format is the server's decision, not a side effect of the
//! spec: the chat core's types hold generated API types (`CallbackReference`,
//! `ParticipantStatus`, `MessageStatus`, …) and the outbox holds generated notifications, whose
//! serde form changes whenever the spec does. Every field and variant here has an explicit
//! serde name, and the conversions to and from the core's and the generated types are
//! exhaustive matches, so a spec edit that adds, renames or removes something fails to compile
//! here instead of silently changing what is written. Changing anything in this file changes
//! the stored format: bump [`crate::store::format::CURRENT`] and add a migration step there.
//!
//! Outbox entries: a notification is stored as the structured notification (not the wire
//! bytes), because it is rendered in the subscription's format when it is delivered; its shape
//! mirrors the generated notifications with explicit names ([`StoredNotification`]). It is
//! already in its subscriber's profile (seed or OMA 2012, chosen at fan-out), so a restart
//! delivers exactly what was stored.
//!
//! Reading never guesses: a record that does not match its type is an error naming it, and the
//! server refuses to start on it.

use super::state::{
    ChannelRecord, Counters, Disabled, Face, Invitation, Message, Participant, Session,
    SigningSecret, SubscriptionRecord,
};
use crate::notify::Notification;
use netapi_chat_api as api;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// JSON of a stored record. The record types hold only strings, numbers, booleans, options and
/// vectors (no maps with non-string keys), so serializing them cannot fail.
fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    serde_json::to_vec(record).unwrap_or_default()
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

/// The stored form of a subscription.
pub fn encode_subscription(rec: &SubscriptionRecord) -> Vec<u8> {
    encode(&StoredSubscription::from(rec))
}

/// A stored subscription, read back.
pub fn decode_subscription(bytes: &[u8]) -> Result<SubscriptionRecord, String> {
    decode::<StoredSubscription>(bytes).map(SubscriptionRecord::from)
}

/// The stored form of a notification channel (stored format 6).
pub fn encode_channel(rec: &ChannelRecord) -> Vec<u8> {
    encode(&StoredChannel::from(rec))
}

/// A stored notification channel, read back.
pub fn decode_channel(bytes: &[u8]) -> Result<ChannelRecord, String> {
    decode::<StoredChannel>(bytes).map(ChannelRecord::from)
}

/// A notification channel as stored (format 6). Its expiry is not stored: a restart starts
/// every channel's lifetime again (see `chat::channels`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct StoredChannel {
    #[serde(rename = "id")]
    id: String,
    #[serde(rename = "user")]
    user: String,
    #[serde(rename = "seq")]
    seq: u64,
    #[serde(rename = "client_correlator")]
    client_correlator: Option<String>,
    #[serde(rename = "application_tag")]
    application_tag: Option<String>,
    #[serde(rename = "lifetime_secs")]
    lifetime_secs: i64,
    #[serde(rename = "max_notifications")]
    max_notifications: usize,
    #[serde(rename = "max_wait_secs")]
    max_wait_secs: i64,
    #[serde(rename = "callback_url")]
    callback_url: String,
    /// A `WebSockets` channel; absent for `LongPolling`.
    #[serde(
        rename = "websocket",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    websocket: bool,
    /// Format 11: the token that made it (`Principal::token_id`, counted against its share of
    /// the server-wide cap); absent (every record earlier versions wrote): nobody's.
    #[serde(rename = "owner", default, skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
}

impl From<&ChannelRecord> for StoredChannel {
    fn from(r: &ChannelRecord) -> Self {
        let ChannelRecord {
            id,
            user,
            seq,
            client_correlator,
            application_tag,
            lifetime_secs,
            max_notifications,
            max_wait_secs,
            callback_url,
            websocket,
            owner,
        } = r.clone();
        StoredChannel {
            id,
            user,
            seq,
            client_correlator,
            application_tag,
            lifetime_secs,
            max_notifications,
            max_wait_secs,
            callback_url,
            websocket,
            owner,
        }
    }
}

impl From<StoredChannel> for ChannelRecord {
    fn from(r: StoredChannel) -> Self {
        let StoredChannel {
            id,
            user,
            seq,
            client_correlator,
            application_tag,
            lifetime_secs,
            max_notifications,
            max_wait_secs,
            callback_url,
            websocket,
            owner,
        } = r;
        ChannelRecord {
            id,
            user,
            seq,
            client_correlator,
            application_tag,
            lifetime_secs,
            max_notifications,
            max_wait_secs,
            callback_url,
            websocket,
            owner,
        }
    }
}

/// The stored form of a session (without its messages, which are records of their own).
pub fn encode_session(s: &Session) -> Vec<u8> {
    encode(&StoredSession::from(s))
}

/// A stored session, read back (its messages are added by the caller).
pub fn decode_session(bytes: &[u8]) -> Result<Session, String> {
    decode::<StoredSession>(bytes).map(Session::from)
}

/// The stored form of a message.
pub fn encode_message(m: &Message) -> Vec<u8> {
    encode(&StoredMessage::from(m))
}

/// A stored message, read back.
pub fn decode_message(bytes: &[u8]) -> Result<Message, String> {
    decode::<StoredMessage>(bytes).map(Message::from)
}

/// The stored form of the counters.
pub fn encode_counters(c: &Counters) -> Vec<u8> {
    encode(&StoredCounters::from(*c))
}

/// The stored counters, read back.
pub fn decode_counters(bytes: &[u8]) -> Result<Counters, String> {
    decode::<StoredCounters>(bytes).map(Counters::from)
}

/// The stored form of an outbox notification.
pub fn encode_notification(n: &Notification) -> Vec<u8> {
    encode(&StoredNotification::from(n))
}

/// A stored notification, read back.
pub fn decode_notification(bytes: &[u8]) -> Result<Notification, String> {
    decode::<StoredNotification>(bytes).map(Notification::from)
}

// ------------------------------------------------------------------ counters

/// Meta record `counters`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct StoredCounters {
    #[serde(rename = "next_id")]
    next_id: u64,
    #[serde(rename = "next_notification")]
    next_notification: u64,
}

impl From<Counters> for StoredCounters {
    fn from(c: Counters) -> Self {
        StoredCounters {
            next_id: c.next_id,
            next_notification: c.next_notification,
        }
    }
}

impl From<StoredCounters> for Counters {
    fn from(c: StoredCounters) -> Self {
        Counters {
            next_id: c.next_id,
            next_notification: c.next_notification,
        }
    }
}

// ------------------------------------------------------------------ enums

/// A participant's status in a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum StoredParticipantStatus {
    #[serde(rename = "Invited")]
    Invited,
    #[serde(rename = "Connected")]
    Connected,
    #[serde(rename = "Disconnected")]
    Disconnected,
}

impl From<api::ParticipantStatus> for StoredParticipantStatus {
    fn from(s: api::ParticipantStatus) -> Self {
        match s {
            api::ParticipantStatus::Invited => StoredParticipantStatus::Invited,
            api::ParticipantStatus::Connected => StoredParticipantStatus::Connected,
            api::ParticipantStatus::Disconnected => StoredParticipantStatus::Disconnected,
        }
    }
}

impl From<StoredParticipantStatus> for api::ParticipantStatus {
    fn from(s: StoredParticipantStatus) -> Self {
        match s {
            StoredParticipantStatus::Invited => api::ParticipantStatus::Invited,
            StoredParticipantStatus::Connected => api::ParticipantStatus::Connected,
            StoredParticipantStatus::Disconnected => api::ParticipantStatus::Disconnected,
        }
    }
}

/// A message's delivery status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum StoredMessageStatus {
    #[serde(rename = "Sent")]
    Sent,
    #[serde(rename = "Delivered")]
    Delivered,
    #[serde(rename = "Displayed")]
    Displayed,
    #[serde(rename = "Failed")]
    Failed,
}

impl From<api::MessageStatus> for StoredMessageStatus {
    fn from(s: api::MessageStatus) -> Self {
        match s {
            api::MessageStatus::Sent => StoredMessageStatus::Sent,
            api::MessageStatus::Delivered => StoredMessageStatus::Delivered,
            api::MessageStatus::Displayed => StoredMessageStatus::Displayed,
            api::MessageStatus::Failed => StoredMessageStatus::Failed,
        }
    }
}

impl From<StoredMessageStatus> for api::MessageStatus {
    fn from(s: StoredMessageStatus) -> Self {
        match s {
            StoredMessageStatus::Sent => api::MessageStatus::Sent,
            StoredMessageStatus::Delivered => api::MessageStatus::Delivered,
            StoredMessageStatus::Displayed => api::MessageStatus::Displayed,
            StoredMessageStatus::Failed => api::MessageStatus::Failed,
        }
    }
}

/// The body format a subscription asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum StoredNotificationFormat {
    #[serde(rename = "XML")]
    Xml,
    #[serde(rename = "JSON")]
    Json,
}

impl From<api::NotificationFormat> for StoredNotificationFormat {
    fn from(f: api::NotificationFormat) -> Self {
        match f {
            api::NotificationFormat::Xml => StoredNotificationFormat::Xml,
            api::NotificationFormat::Json => StoredNotificationFormat::Json,
        }
    }
}

impl From<StoredNotificationFormat> for api::NotificationFormat {
    fn from(f: StoredNotificationFormat) -> Self {
        match f {
            StoredNotificationFormat::Xml => api::NotificationFormat::Xml,
            StoredNotificationFormat::Json => api::NotificationFormat::Json,
        }
    }
}

/// A chat event's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum StoredEventType {
    #[serde(rename = "SessionCancelled")]
    SessionCancelled,
    #[serde(rename = "SessionEnded")]
    SessionEnded,
    #[serde(rename = "Declined")]
    Declined,
    #[serde(rename = "Accepted")]
    Accepted,
    #[serde(rename = "Timeout")]
    Timeout,
    #[serde(rename = "Unreachable")]
    Unreachable,
    #[serde(rename = "Successful")]
    Successful,
}

impl From<api::EventType> for StoredEventType {
    fn from(e: api::EventType) -> Self {
        match e {
            api::EventType::SessionCancelled => StoredEventType::SessionCancelled,
            api::EventType::SessionEnded => StoredEventType::SessionEnded,
            api::EventType::Declined => StoredEventType::Declined,
            api::EventType::Accepted => StoredEventType::Accepted,
            api::EventType::Timeout => StoredEventType::Timeout,
            api::EventType::Unreachable => StoredEventType::Unreachable,
            api::EventType::Successful => StoredEventType::Successful,
        }
    }
}

impl From<StoredEventType> for api::EventType {
    fn from(e: StoredEventType) -> Self {
        match e {
            StoredEventType::SessionCancelled => api::EventType::SessionCancelled,
            StoredEventType::SessionEnded => api::EventType::SessionEnded,
            StoredEventType::Declined => api::EventType::Declined,
            StoredEventType::Accepted => api::EventType::Accepted,
            StoredEventType::Timeout => api::EventType::Timeout,
            StoredEventType::Unreachable => api::EventType::Unreachable,
            StoredEventType::Successful => api::EventType::Successful,
        }
    }
}

// ------------------------------------------------------------------ subscriptions

/// Record kind `subscription`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct StoredSubscription {
    #[serde(rename = "id")]
    id: String,
    #[serde(rename = "user")]
    user: String,
    #[serde(rename = "callback")]
    callback: StoredCallback,
    #[serde(rename = "duration")]
    duration: i64,
    #[serde(rename = "expires_at_ms")]
    expires_at_ms: Option<i64>,
    #[serde(rename = "client_correlator")]
    client_correlator: Option<String>,
    #[serde(rename = "seq")]
    seq: u64,
    /// Since format 4; absent while the subscription is active.
    #[serde(rename = "disabled", default, skip_serializing_if = "Option::is_none")]
    disabled: Option<StoredDisabled>,
    /// Since format 4; absent when signed with the server-wide secret.
    #[serde(rename = "secrets", default, skip_serializing_if = "Vec::is_empty")]
    secrets: Vec<StoredSecret>,
    /// Since format 7; absent for the seed face (so every earlier record reads as one).
    #[serde(rename = "face", default, skip_serializing_if = "StoredFace::is_seed")]
    face: StoredFace,
    /// Since format 10; absent while the subscription has not expired.
    #[serde(
        rename = "expired_until_ms",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    expired_until_ms: Option<i64>,
    /// Format 11: the token that made it (`Principal::token_id`, counted against its share of
    /// the server-wide cap); absent (every record earlier versions wrote): nobody's.
    #[serde(rename = "owner", default, skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
}

/// The face a subscription was made through (format 7): the profile of its notifications.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
enum StoredFace {
    #[default]
    #[serde(rename = "seed")]
    Seed,
    #[serde(rename = "oma2012")]
    Oma2012,
}

impl StoredFace {
    fn is_seed(&self) -> bool {
        *self == StoredFace::Seed
    }
}

impl From<Face> for StoredFace {
    fn from(f: Face) -> Self {
        match f {
            Face::Seed => StoredFace::Seed,
            Face::Oma2012 => StoredFace::Oma2012,
        }
    }
}

impl From<StoredFace> for Face {
    fn from(f: StoredFace) -> Self {
        match f {
            StoredFace::Seed => Face::Seed,
            StoredFace::Oma2012 => Face::Oma2012,
        }
    }
}

/// One of a subscription's signing secrets (format 4).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct StoredSecret {
    #[serde(rename = "secret")]
    secret: String,
    #[serde(rename = "until_ms", default, skip_serializing_if = "Option::is_none")]
    until_ms: Option<i64>,
}

/// Why and when delivery disabled a subscription (format 4).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct StoredDisabled {
    #[serde(rename = "reason")]
    reason: String,
    #[serde(rename = "at_ms")]
    at_ms: i64,
}

/// Where a subscription's notifications go (its `callbackReference`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct StoredCallback {
    #[serde(rename = "notifyURL")]
    notify_url: String,
    #[serde(
        rename = "callbackData",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    callback_data: Option<String>,
    #[serde(
        rename = "notificationFormat",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    notification_format: Option<StoredNotificationFormat>,
}

impl From<&SubscriptionRecord> for StoredSubscription {
    fn from(r: &SubscriptionRecord) -> Self {
        StoredSubscription {
            id: r.id.clone(),
            user: r.user.clone(),
            callback: StoredCallback {
                notify_url: r.callback.notify_url.clone(),
                callback_data: r.callback.callback_data.clone(),
                notification_format: r.callback.notification_format.map(Into::into),
            },
            duration: r.duration,
            expires_at_ms: r.expires_at_ms,
            client_correlator: r.client_correlator.clone(),
            seq: r.seq,
            disabled: r.disabled.as_ref().map(|d| StoredDisabled {
                reason: d.reason.clone(),
                at_ms: d.at_ms,
            }),
            secrets: r
                .secrets
                .iter()
                .map(|k| StoredSecret {
                    secret: k.secret.clone(),
                    until_ms: k.until_ms,
                })
                .collect(),
            face: r.face.into(),
            expired_until_ms: r.expired_until_ms,
            owner: r.owner.clone(),
        }
    }
}

impl From<StoredSubscription> for SubscriptionRecord {
    fn from(r: StoredSubscription) -> Self {
        SubscriptionRecord {
            id: r.id,
            user: r.user,
            callback: api::CallbackReference {
                notify_url: r.callback.notify_url,
                callback_data: r.callback.callback_data,
                notification_format: r.callback.notification_format.map(Into::into),
            },
            duration: r.duration,
            expires_at_ms: r.expires_at_ms,
            client_correlator: r.client_correlator,
            seq: r.seq,
            disabled: r.disabled.map(|d| Disabled {
                reason: d.reason,
                at_ms: d.at_ms,
            }),
            secrets: r
                .secrets
                .into_iter()
                .map(|k| SigningSecret {
                    secret: k.secret,
                    until_ms: k.until_ms,
                })
                .collect(),
            face: r.face.into(),
            expired_until_ms: r.expired_until_ms,
            owner: r.owner,
        }
    }
}

// ------------------------------------------------------------------ sessions

/// Where an invitation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum StoredInvitation {
    #[serde(rename = "None")]
    None,
    #[serde(rename = "Pending")]
    Pending {
        #[serde(rename = "seq")]
        seq: u64,
        #[serde(rename = "deadline_ms")]
        deadline_ms: i64,
    },
    #[serde(rename = "Accepted")]
    Accepted,
    #[serde(rename = "Declined")]
    Declined,
    #[serde(rename = "TimedOut")]
    TimedOut,
    #[serde(rename = "Cancelled")]
    Cancelled,
}

impl From<Invitation> for StoredInvitation {
    fn from(i: Invitation) -> Self {
        match i {
            Invitation::None => StoredInvitation::None,
            Invitation::Pending { seq, deadline_ms } => {
                StoredInvitation::Pending { seq, deadline_ms }
            }
            Invitation::Accepted => StoredInvitation::Accepted,
            Invitation::Declined => StoredInvitation::Declined,
            Invitation::TimedOut => StoredInvitation::TimedOut,
            Invitation::Cancelled => StoredInvitation::Cancelled,
        }
    }
}

impl From<StoredInvitation> for Invitation {
    fn from(i: StoredInvitation) -> Self {
        match i {
            StoredInvitation::None => Invitation::None,
            StoredInvitation::Pending { seq, deadline_ms } => {
                Invitation::Pending { seq, deadline_ms }
            }
            StoredInvitation::Accepted => Invitation::Accepted,
            StoredInvitation::Declined => Invitation::Declined,
            StoredInvitation::TimedOut => Invitation::TimedOut,
            StoredInvitation::Cancelled => Invitation::Cancelled,
        }
    }
}

/// A participant, inside its session's record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct StoredParticipant {
    #[serde(rename = "address")]
    address: String,
    #[serde(rename = "name")]
    name: Option<String>,
    #[serde(rename = "is_originator")]
    is_originator: bool,
    #[serde(rename = "status")]
    status: StoredParticipantStatus,
    #[serde(rename = "invitation")]
    invitation: StoredInvitation,
    #[serde(rename = "invited_by")]
    invited_by: String,
}

/// Record kind `session` (its messages are records of their own, keyed `sessionId/messageId`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct StoredSession {
    #[serde(rename = "id")]
    id: String,
    #[serde(rename = "seq")]
    seq: u64,
    #[serde(rename = "subject")]
    subject: Option<String>,
    #[serde(rename = "originator")]
    originator: String,
    #[serde(rename = "originator_name")]
    originator_name: Option<String>,
    #[serde(rename = "client_correlator")]
    client_correlator: Option<String>,
    #[serde(rename = "participants")]
    participants: Vec<StoredParticipant>,
    #[serde(rename = "group")]
    group: bool,
    /// Format 8: an OMA 2012 ad hoc session; absent (every session earlier versions wrote):
    /// not one.
    #[serde(rename = "adhoc", default, skip_serializing_if = "std::ops::Not::not")]
    adhoc: bool,
    #[serde(rename = "ended")]
    ended: bool,
    /// Format 9: when the last decision changed it, Unix ms; absent (every session earlier
    /// versions wrote): not known.
    #[serde(
        rename = "changed_ms",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    changed_ms: Option<i64>,
    /// Format 11: the token that made it (`Principal::token_id`, counted against its share of
    /// the server-wide cap); absent (every record earlier versions wrote): nobody's.
    #[serde(rename = "owner", default, skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
}

impl From<&Session> for StoredSession {
    fn from(s: &Session) -> Self {
        StoredSession {
            id: s.id.clone(),
            seq: s.seq,
            subject: s.subject.clone(),
            originator: s.originator.clone(),
            originator_name: s.originator_name.clone(),
            client_correlator: s.client_correlator.clone(),
            participants: s
                .participants
                .iter()
                .map(|p| StoredParticipant {
                    address: p.address.clone(),
                    name: p.name.clone(),
                    is_originator: p.is_originator,
                    status: p.status.into(),
                    invitation: p.invitation.into(),
                    invited_by: p.invited_by.clone(),
                })
                .collect(),
            group: s.group,
            adhoc: s.adhoc,
            ended: s.ended,
            changed_ms: s.changed_ms,
            owner: s.owner.clone(),
        }
    }
}

impl From<StoredSession> for Session {
    fn from(s: StoredSession) -> Self {
        Session {
            id: s.id,
            seq: s.seq,
            subject: s.subject,
            originator: s.originator,
            originator_name: s.originator_name,
            client_correlator: s.client_correlator,
            participants: s
                .participants
                .into_iter()
                .map(|p| Participant {
                    address: p.address,
                    name: p.name,
                    is_originator: p.is_originator,
                    status: p.status.into(),
                    invitation: p.invitation.into(),
                    invited_by: p.invited_by,
                })
                .collect(),
            group: s.group,
            adhoc: s.adhoc,
            ended: s.ended,
            changed_ms: s.changed_ms,
            owner: s.owner,
        }
    }
}

// ------------------------------------------------------------------ messages

/// One recipient of a message and the status it confirmed (version 1 stored this as an
/// unnamed `[address, status]` pair).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct StoredRecipient {
    #[serde(rename = "address")]
    address: String,
    #[serde(rename = "status")]
    status: StoredMessageStatus,
}

/// Record kind `message`, keyed `sessionId/messageId`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct StoredMessage {
    #[serde(rename = "id")]
    id: String,
    #[serde(rename = "seq")]
    seq: u64,
    #[serde(rename = "sender")]
    sender: String,
    #[serde(rename = "text")]
    text: String,
    #[serde(rename = "date_time")]
    date_time: String,
    #[serde(rename = "report_delivered")]
    report_delivered: bool,
    #[serde(rename = "report_displayed")]
    report_displayed: bool,
    #[serde(rename = "client_correlator")]
    client_correlator: Option<String>,
    #[serde(rename = "recipients")]
    recipients: Vec<StoredRecipient>,
}

impl From<&Message> for StoredMessage {
    fn from(m: &Message) -> Self {
        StoredMessage {
            id: m.id.clone(),
            seq: m.seq,
            sender: m.sender.clone(),
            text: m.text.clone(),
            date_time: m.date_time.clone(),
            report_delivered: m.report_delivered,
            report_displayed: m.report_displayed,
            client_correlator: m.client_correlator.clone(),
            recipients: m
                .recipients
                .iter()
                .map(|(address, status)| StoredRecipient {
                    address: address.clone(),
                    status: (*status).into(),
                })
                .collect(),
        }
    }
}

impl From<StoredMessage> for Message {
    fn from(m: StoredMessage) -> Self {
        Message {
            id: m.id,
            seq: m.seq,
            sender: m.sender,
            text: m.text,
            date_time: m.date_time,
            report_delivered: m.report_delivered,
            report_displayed: m.report_displayed,
            client_correlator: m.client_correlator,
            recipients: m
                .recipients
                .into_iter()
                .map(|r| (r.address, r.status.into()))
                .collect(),
        }
    }
}

// ------------------------------------------------------------------ notifications
//
// Mirrors of the generated notification documents, field for field with the same JSON names
// (that is what version 1 stored, as the serde form of the generated types). Optional fields
// are left out when empty, as they were.

/// A link in a notification.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct StoredLink {
    #[serde(rename = "rel")]
    rel: String,
    #[serde(rename = "href")]
    href: String,
}

impl From<&api::Link> for StoredLink {
    fn from(l: &api::Link) -> Self {
        StoredLink {
            rel: l.rel.clone(),
            href: l.href.clone(),
        }
    }
}

impl From<StoredLink> for api::Link {
    fn from(l: StoredLink) -> Self {
        api::Link {
            rel: l.rel,
            href: l.href,
        }
    }
}

/// A participant as an invitation lists it, in stored form: one conversion for the seed's
/// `sessionInvitationNotification` and OMA 2012's `groupSessionInvitationNotification`.
fn stored_participant(p: &api::ParticipantInformation) -> StoredParticipantInformation {
    StoredParticipantInformation {
        address: p.address.clone(),
        name: p.name.clone(),
        is_originator: p.is_originator,
        status: p.status.map(Into::into),
        client_correlator: p.client_correlator.clone(),
        resource_url: p.resource_url.clone(),
    }
}

/// [`stored_participant`] read back.
fn api_participant(p: StoredParticipantInformation) -> api::ParticipantInformation {
    api::ParticipantInformation {
        address: p.address,
        name: p.name,
        is_originator: p.is_originator,
        status: p.status.map(Into::into),
        client_correlator: p.client_correlator,
        resource_url: p.resource_url,
    }
}

/// A notification's links in stored form (every notification has them).
fn links(l: &[api::Link]) -> Vec<StoredLink> {
    l.iter().map(StoredLink::from).collect()
}

/// [`links`] read back.
fn api_links(l: Vec<StoredLink>) -> Vec<api::Link> {
    l.into_iter().map(api::Link::from).collect()
}

/// The reason a subscription was cancelled.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct StoredServiceException {
    #[serde(rename = "messageId")]
    message_id: String,
    #[serde(rename = "text")]
    text: String,
    #[serde(rename = "variables", default, skip_serializing_if = "Vec::is_empty")]
    variables: Vec<String>,
}

/// A participant as an invitation lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct StoredParticipantInformation {
    #[serde(rename = "address")]
    address: String,
    #[serde(rename = "name", default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(
        rename = "isOriginator",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    is_originator: Option<bool>,
    #[serde(rename = "status", default, skip_serializing_if = "Option::is_none")]
    status: Option<StoredParticipantStatus>,
    #[serde(
        rename = "clientCorrelator",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    client_correlator: Option<String>,
    #[serde(
        rename = "resourceURL",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    resource_url: Option<String>,
}

/// A participant as a status notification lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct StoredParticipantStatusEntry {
    #[serde(rename = "address")]
    address: String,
    #[serde(rename = "name", default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(rename = "status", default, skip_serializing_if = "Option::is_none")]
    status: Option<StoredParticipantStatus>,
    #[serde(rename = "yourown", default, skip_serializing_if = "Option::is_none")]
    yourown: Option<bool>,
    #[serde(rename = "link")]
    link: Vec<StoredLink>,
}

/// An `isComposing` inside a message notification (format 7).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct StoredIsComposing {
    #[serde(rename = "state")]
    state: String,
    #[serde(
        rename = "lastActive",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    last_active: Option<String>,
    #[serde(
        rename = "contentType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    content_type: Option<String>,
    #[serde(rename = "refresh", default, skip_serializing_if = "Option::is_none")]
    refresh: Option<i64>,
}

/// The message inside a message notification.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct StoredChatMessage {
    #[serde(rename = "text")]
    text: String,
    #[serde(
        rename = "successReport",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    success_report: Option<bool>,
    #[serde(
        rename = "reportRequest",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    report_request: Vec<StoredMessageStatus>,
    #[serde(
        rename = "clientCorrelator",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    client_correlator: Option<String>,
    #[serde(
        rename = "senderAddress",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    sender_address: Option<String>,
    #[serde(rename = "dateTime", default, skip_serializing_if = "Option::is_none")]
    date_time: Option<String>,
    #[serde(
        rename = "resourceURL",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    resource_url: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct StoredSessionInvitation {
    #[serde(rename = "subject", default, skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    #[serde(rename = "originatorAddress")]
    originator_address: String,
    #[serde(
        rename = "originatorName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    originator_name: Option<String>,
    #[serde(rename = "participant", default, skip_serializing_if = "Vec::is_empty")]
    participant: Vec<StoredParticipantInformation>,
    #[serde(rename = "sessionId")]
    session_id: String,
    #[serde(
        rename = "callbackData",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    callback_data: Option<String>,
    #[serde(rename = "link")]
    link: Vec<StoredLink>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct StoredParticipantStatusNotification {
    #[serde(rename = "participant")]
    participant: Vec<StoredParticipantStatusEntry>,
    #[serde(rename = "sessionId")]
    session_id: String,
    #[serde(
        rename = "callbackData",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    callback_data: Option<String>,
    #[serde(rename = "link")]
    link: Vec<StoredLink>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct StoredChatEvent {
    #[serde(rename = "eventType")]
    event_type: StoredEventType,
    #[serde(
        rename = "eventDescription",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    event_description: Option<String>,
    #[serde(rename = "sessionId")]
    session_id: String,
    #[serde(
        rename = "callbackData",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    callback_data: Option<String>,
    #[serde(rename = "link")]
    link: Vec<StoredLink>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct StoredMessageNotification {
    #[serde(rename = "senderAddress")]
    sender_address: String,
    #[serde(
        rename = "senderName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    sender_name: Option<String>,
    /// Always present up to format 6; absent (format 7) in an `isComposing` notification.
    #[serde(
        rename = "chatMessage",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    chat_message: Option<StoredChatMessage>,
    /// Format 7: an `isComposing` notification (never stored by this binary, which does not
    /// persist them; representable so that the conversion is total).
    #[serde(
        rename = "isComposing",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    is_composing: Option<StoredIsComposing>,
    #[serde(rename = "dateTime", default, skip_serializing_if = "Option::is_none")]
    date_time: Option<String>,
    #[serde(rename = "sessionId")]
    session_id: String,
    /// Always present up to format 6; absent (format 7) in an `isComposing` notification.
    #[serde(rename = "messageId", default, skip_serializing_if = "Option::is_none")]
    message_id: Option<String>,
    #[serde(
        rename = "callbackData",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    callback_data: Option<String>,
    #[serde(rename = "link")]
    link: Vec<StoredLink>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct StoredMessageDelivery {
    #[serde(rename = "status")]
    status: StoredMessageStatus,
    #[serde(
        rename = "recipientAddress",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    recipient_address: Option<String>,
    #[serde(rename = "errorCode", default, skip_serializing_if = "Option::is_none")]
    error_code: Option<String>,
    #[serde(
        rename = "description",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    description: Option<String>,
    #[serde(rename = "messageId")]
    message_id: String,
    #[serde(rename = "sessionId")]
    session_id: String,
    #[serde(
        rename = "callbackData",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    callback_data: Option<String>,
    #[serde(rename = "link")]
    link: Vec<StoredLink>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct StoredSubscriptionCancellation {
    #[serde(rename = "reason", default, skip_serializing_if = "Option::is_none")]
    reason: Option<StoredServiceException>,
    #[serde(
        rename = "callbackData",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    callback_data: Option<String>,
    #[serde(rename = "link")]
    link: Vec<StoredLink>,
}

/// OMA 2012 `chatSessionInvitationNotification` (format 7).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct StoredChatSessionInvitation {
    #[serde(rename = "subject")]
    subject: String,
    #[serde(rename = "originatorAddress")]
    originator_address: String,
    #[serde(
        rename = "originatorName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    originator_name: Option<String>,
    #[serde(
        rename = "tParticipantAddress",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    t_participant_address: Option<String>,
    #[serde(
        rename = "tParticipantName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    t_participant_name: Option<String>,
    #[serde(rename = "sessionId")]
    session_id: String,
    #[serde(
        rename = "callbackData",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    callback_data: Option<String>,
    #[serde(rename = "link")]
    link: Vec<StoredLink>,
}

/// OMA 2012 `groupSessionInvitationNotification` (format 7).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct StoredGroupSessionInvitation {
    #[serde(rename = "subject")]
    subject: String,
    #[serde(rename = "participant", default, skip_serializing_if = "Vec::is_empty")]
    participant: Vec<StoredParticipantInformation>,
    #[serde(rename = "sessionId")]
    session_id: String,
    #[serde(
        rename = "callbackData",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    callback_data: Option<String>,
    #[serde(rename = "link")]
    link: Vec<StoredLink>,
}

/// OMA 2012 `messageStatusNotification` (format 7).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct StoredMessageStatusNotification {
    #[serde(rename = "status")]
    status: StoredMessageStatus,
    #[serde(rename = "errorCode", default, skip_serializing_if = "Option::is_none")]
    error_code: Option<String>,
    #[serde(
        rename = "description",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    description: Option<String>,
    #[serde(rename = "messageId")]
    message_id: String,
    #[serde(
        rename = "callbackData",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    callback_data: Option<String>,
    #[serde(rename = "link")]
    link: Vec<StoredLink>,
}

/// An outbox entry's body: one notification, tagged with its kind. Only built to be written
/// or read at once, so its variants' sizes do not matter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)]
enum StoredNotification {
    #[serde(rename = "SessionInvitationNotification")]
    SessionInvitation(StoredSessionInvitation),
    #[serde(rename = "ParticipantStatusNotification")]
    ParticipantStatus(StoredParticipantStatusNotification),
    #[serde(rename = "ChatEventNotification")]
    ChatEvent(StoredChatEvent),
    #[serde(rename = "MessageNotification")]
    Message(StoredMessageNotification),
    #[serde(rename = "MessageDeliveryNotification")]
    MessageDelivery(StoredMessageDelivery),
    #[serde(rename = "SubscriptionCancellationNotification")]
    SubscriptionCancellation(StoredSubscriptionCancellation),
    #[serde(rename = "ChatSessionInvitationNotification")]
    ChatSessionInvitation(StoredChatSessionInvitation),
    #[serde(rename = "GroupSessionInvitationNotification")]
    GroupSessionInvitation(StoredGroupSessionInvitation),
    #[serde(rename = "MessageStatusNotification")]
    MessageStatus(StoredMessageStatusNotification),
}

impl From<&Notification> for StoredNotification {
    fn from(n: &Notification) -> Self {
        use StoredNotification as S;
        match n {
            Notification::SessionInvitationNotification(n) => {
                S::SessionInvitation(StoredSessionInvitation {
                    subject: n.subject.clone(),
                    originator_address: n.originator_address.clone(),
                    originator_name: n.originator_name.clone(),
                    participant: n.participant.iter().map(stored_participant).collect(),
                    session_id: n.session_id.clone(),
                    callback_data: n.callback_data.clone(),
                    link: links(&n.link),
                })
            }
            Notification::ChatSessionInvitationNotification(n) => {
                S::ChatSessionInvitation(StoredChatSessionInvitation {
                    subject: n.subject.clone(),
                    originator_address: n.originator_address.clone(),
                    originator_name: n.originator_name.clone(),
                    t_participant_address: n.t_participant_address.clone(),
                    t_participant_name: n.t_participant_name.clone(),
                    session_id: n.session_id.clone(),
                    callback_data: n.callback_data.clone(),
                    link: links(&n.link),
                })
            }
            Notification::GroupSessionInvitationNotification(n) => {
                S::GroupSessionInvitation(StoredGroupSessionInvitation {
                    subject: n.subject.clone(),
                    participant: n.participant.iter().map(stored_participant).collect(),
                    session_id: n.session_id.clone(),
                    callback_data: n.callback_data.clone(),
                    link: links(&n.link),
                })
            }
            Notification::MessageStatusNotification(n) => {
                S::MessageStatus(StoredMessageStatusNotification {
                    status: n.status.into(),
                    error_code: n.error_code.clone(),
                    description: n.description.clone(),
                    message_id: n.message_id.clone(),
                    callback_data: n.callback_data.clone(),
                    link: links(&n.link),
                })
            }
            Notification::ParticipantStatusNotification(n) => {
                S::ParticipantStatus(StoredParticipantStatusNotification {
                    participant: n
                        .participant
                        .iter()
                        .map(|p| StoredParticipantStatusEntry {
                            address: p.address.clone(),
                            name: p.name.clone(),
                            status: p.status.map(Into::into),
                            yourown: p.yourown,
                            link: links(&p.link),
                        })
                        .collect(),
                    session_id: n.session_id.clone(),
                    callback_data: n.callback_data.clone(),
                    link: links(&n.link),
                })
            }
            Notification::ChatEventNotification(n) => S::ChatEvent(StoredChatEvent {
                event_type: n.event_type.into(),
                event_description: n.event_description.clone(),
                session_id: n.session_id.clone(),
                callback_data: n.callback_data.clone(),
                link: links(&n.link),
            }),
            Notification::MessageNotification(n) => S::Message(StoredMessageNotification {
                sender_address: n.sender_address.clone(),
                sender_name: n.sender_name.clone(),
                chat_message: n.chat_message.as_ref().map(|m| StoredChatMessage {
                    text: m.text.clone(),
                    success_report: m.success_report,
                    report_request: m.report_request.iter().map(|s| (*s).into()).collect(),
                    client_correlator: m.client_correlator.clone(),
                    sender_address: m.sender_address.clone(),
                    date_time: m.date_time.clone(),
                    resource_url: m.resource_url.clone(),
                }),
                is_composing: n.is_composing.as_ref().map(|c| StoredIsComposing {
                    // Told indications carry `state` (`composing::indication`); the GSMA
                    // spelling is only read, so the stored form is unchanged.
                    state: c
                        .state
                        .clone()
                        .or_else(|| c.status.clone())
                        .unwrap_or_default(),
                    last_active: c.last_active.clone(),
                    content_type: c.content_type.clone(),
                    refresh: c.refresh,
                }),
                date_time: n.date_time.clone(),
                session_id: n.session_id.clone(),
                message_id: n.message_id.clone(),
                callback_data: n.callback_data.clone(),
                link: links(&n.link),
            }),
            Notification::MessageDeliveryNotification(n) => {
                S::MessageDelivery(StoredMessageDelivery {
                    status: n.status.into(),
                    recipient_address: n.recipient_address.clone(),
                    error_code: n.error_code.clone(),
                    description: n.description.clone(),
                    message_id: n.message_id.clone(),
                    session_id: n.session_id.clone(),
                    callback_data: n.callback_data.clone(),
                    link: links(&n.link),
                })
            }
            Notification::SubscriptionCancellationNotification(n) => {
                S::SubscriptionCancellation(StoredSubscriptionCancellation {
                    reason: n.reason.as_ref().map(|r| StoredServiceException {
                        message_id: r.message_id.clone(),
                        text: r.text.clone(),
                        variables: r.variables.clone(),
                    }),
                    callback_data: n.callback_data.clone(),
                    link: links(&n.link),
                })
            }
        }
    }
}

impl From<StoredNotification> for Notification {
    fn from(n: StoredNotification) -> Self {
        use StoredNotification as S;
        match n {
            S::SessionInvitation(n) => {
                Notification::SessionInvitationNotification(api::SessionInvitationNotification {
                    subject: n.subject,
                    originator_address: n.originator_address,
                    originator_name: n.originator_name,
                    participant: n.participant.into_iter().map(api_participant).collect(),
                    session_id: n.session_id,
                    callback_data: n.callback_data,
                    link: api_links(n.link),
                })
            }
            S::ChatSessionInvitation(n) => Notification::ChatSessionInvitationNotification(
                api::ChatSessionInvitationNotification {
                    subject: n.subject,
                    originator_address: n.originator_address,
                    originator_name: n.originator_name,
                    t_participant_address: n.t_participant_address,
                    t_participant_name: n.t_participant_name,
                    session_id: n.session_id,
                    callback_data: n.callback_data,
                    link: api_links(n.link),
                },
            ),
            S::GroupSessionInvitation(n) => Notification::GroupSessionInvitationNotification(
                api::GroupSessionInvitationNotification {
                    subject: n.subject,
                    participant: n.participant.into_iter().map(api_participant).collect(),
                    session_id: n.session_id,
                    callback_data: n.callback_data,
                    link: api_links(n.link),
                },
            ),
            S::MessageStatus(n) => {
                Notification::MessageStatusNotification(api::MessageStatusNotification {
                    status: n.status.into(),
                    error_code: n.error_code,
                    description: n.description,
                    message_id: n.message_id,
                    callback_data: n.callback_data,
                    link: api_links(n.link),
                })
            }
            S::ParticipantStatus(n) => {
                Notification::ParticipantStatusNotification(api::ParticipantStatusNotification {
                    participant: n
                        .participant
                        .into_iter()
                        .map(|p| api::ParticipantStatusEntry {
                            address: p.address,
                            name: p.name,
                            status: p.status.map(Into::into),
                            yourown: p.yourown,
                            link: api_links(p.link),
                        })
                        .collect(),
                    session_id: n.session_id,
                    callback_data: n.callback_data,
                    link: api_links(n.link),
                })
            }
            S::ChatEvent(n) => Notification::ChatEventNotification(api::ChatEventNotification {
                event_type: n.event_type.into(),
                event_description: n.event_description,
                session_id: n.session_id,
                callback_data: n.callback_data,
                link: api_links(n.link),
            }),
            S::Message(n) => Notification::MessageNotification(api::MessageNotification {
                sender_address: n.sender_address,
                sender_name: n.sender_name,
                chat_message: n.chat_message.map(|m| api::ChatMessage {
                    text: m.text,
                    success_report: m.success_report,
                    report_request: m.report_request.into_iter().map(Into::into).collect(),
                    client_correlator: m.client_correlator,
                    sender_address: m.sender_address,
                    date_time: m.date_time,
                    resource_url: m.resource_url,
                }),
                is_composing: n.is_composing.map(|c| api::IsComposing {
                    state: Some(c.state),
                    status: None,
                    last_active: c.last_active,
                    content_type: c.content_type,
                    refresh: c.refresh,
                }),
                date_time: n.date_time,
                session_id: n.session_id,
                message_id: n.message_id,
                callback_data: n.callback_data,
                link: api_links(n.link),
            }),
            S::MessageDelivery(n) => {
                Notification::MessageDeliveryNotification(api::MessageDeliveryNotification {
                    status: n.status.into(),
                    recipient_address: n.recipient_address,
                    error_code: n.error_code,
                    description: n.description,
                    message_id: n.message_id,
                    session_id: n.session_id,
                    callback_data: n.callback_data,
                    link: api_links(n.link),
                })
            }
            S::SubscriptionCancellation(n) => Notification::SubscriptionCancellationNotification(
                api::SubscriptionCancellationNotification {
                    reason: n.reason.map(|r| api::ServiceException {
                        message_id: r.message_id,
                        text: r.text,
                        variables: r.variables,
                    }),
                    callback_data: n.callback_data,
                    link: api_links(n.link),
                },
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Kind, format};

    /// Every record and outbox entry of the v1 fixture (written by the server at 95dd6bb), as
    /// stored: (kind, key, value) and (id, body).
    #[allow(clippy::type_complexity)]
    fn v1_fixture() -> (Vec<(String, String, Vec<u8>)>, Vec<(i64, Vec<u8>)>) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("server/tests/fixtures/format-v1/netapi-chat.sqlite3");
        // `immutable`: read in place, without creating `-wal`/`-shm` files by the fixture.
        let db = rusqlite::Connection::open_with_flags(
            format!("file:{}?immutable=1", path.display()),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
        )
        .unwrap();
        let version: u32 = db
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, 0, "version 1 wrote no version");
        let mut stmt = db
            .prepare("SELECT kind, key, value FROM records ORDER BY kind, key")
            .unwrap();
        let records = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let mut stmt = db
            .prepare("SELECT id, body FROM outbox ORDER BY id")
            .unwrap();
        let outbox = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        (records, outbox)
    }

    fn kind(name: &str) -> Kind {
        match name {
            "subscription" => Kind::Subscription,
            "session" => Kind::Session,
            "message" => Kind::Message,
            "meta" => Kind::Meta,
            other => panic!("unknown kind {other}"),
        }
    }

    /// What version 1 wrote, brought up by the migration steps, reads as today's records and
    /// is written back byte for byte: the stored types describe exactly that format, and a
    /// renamed field or variant here fails this test.
    #[test]
    fn v1_fixture_migrates_and_round_trips_byte_for_byte() {
        let (records, outbox) = v1_fixture();
        let mut seen = std::collections::BTreeSet::new();
        for (name, key, value) in records {
            let kind = kind(&name);
            let mut value = value;
            for step in format::steps(format::UNVERSIONED) {
                if let Some(new) = (step.record)(kind, &value).unwrap() {
                    value = new;
                }
            }
            let again = match kind {
                Kind::Subscription => encode_subscription(&decode_subscription(&value).unwrap()),
                Kind::Session => encode_session(&decode_session(&value).unwrap()),
                Kind::Message => encode_message(&decode_message(&value).unwrap()),
                Kind::Meta => encode_counters(&decode_counters(&value).unwrap()),
                Kind::Channel => encode_channel(&decode_channel(&value).unwrap()),
            };
            assert_eq!(
                String::from_utf8(again).unwrap(),
                String::from_utf8(value).unwrap(),
                "{name} {key}"
            );
            seen.insert(name);
        }
        assert_eq!(seen.len(), 4, "the fixture holds every kind: {seen:?}");
        assert!(!outbox.is_empty());
        for (id, body) in outbox {
            let n = decode_notification(&body).unwrap();
            assert_eq!(
                String::from_utf8(encode_notification(&n)).unwrap(),
                String::from_utf8(body).unwrap(),
                "notification {id}"
            );
        }
    }

    /// The core's types survive the stored form, every invitation state and status included.
    #[test]
    fn core_records_round_trip() {
        let statuses = [
            api::ParticipantStatus::Invited,
            api::ParticipantStatus::Connected,
            api::ParticipantStatus::Disconnected,
        ];
        let invitations = [
            Invitation::None,
            Invitation::Pending {
                seq: 7,
                deadline_ms: 1_800_000_000_000,
            },
            Invitation::Accepted,
            Invitation::Declined,
            Invitation::TimedOut,
            Invitation::Cancelled,
        ];
        let participants: Vec<Participant> = invitations
            .iter()
            .enumerate()
            .map(|(i, inv)| Participant {
                address: format!("tel:+1555000{i}"),
                name: (i % 2 == 0).then(|| format!("P{i}")),
                is_originator: i == 0,
                status: statuses[i % 3],
                invitation: *inv,
                invited_by: "tel:+15550000".to_owned(),
            })
            .collect();
        let s = Session {
            id: "sess-1-x".into(),
            seq: 1,
            subject: None,
            originator: "tel:+15550000".into(),
            originator_name: Some("O".into()),
            client_correlator: Some("c".into()),
            participants,
            group: true,
            adhoc: true,
            ended: false,
            changed_ms: Some(1_764_900_000_123),
            owner: Some("sha256:0123456789abcdef".to_owned()),
        };
        let back = decode_session(&encode_session(&s)).unwrap();
        assert_eq!(encode_session(&back), encode_session(&s));
        assert!(back.adhoc);
        assert_eq!(back.changed_ms, s.changed_ms);
        // Format 8 and older wrote none: read as unknown.
        let older = String::from_utf8(encode_session(&s))
            .unwrap()
            .replace(",\"changed_ms\":1764900000123", "");
        assert_eq!(decode_session(older.as_bytes()).unwrap().changed_ms, None);
        // Format 10 and older named no owner: nobody's.
        assert_eq!(back.owner, s.owner);
        let older = String::from_utf8(encode_session(&s))
            .unwrap()
            .replace(",\"owner\":\"sha256:0123456789abcdef\"", "");
        assert_eq!(decode_session(older.as_bytes()).unwrap().owner, None);
        for (a, b) in back.participants.iter().zip(&s.participants) {
            assert_eq!((a.invitation, a.status), (b.invitation, b.status));
        }
        let m = Message {
            id: "msg-2-x".into(),
            seq: 2,
            sender: "tel:+15550000".into(),
            text: "hi".into(),
            date_time: "2026-12-03T00:00:00Z".into(),
            report_delivered: true,
            report_displayed: false,
            client_correlator: None,
            recipients: [
                api::MessageStatus::Sent,
                api::MessageStatus::Delivered,
                api::MessageStatus::Displayed,
                api::MessageStatus::Failed,
            ]
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("tel:+1555111{i}"), *s))
            .collect(),
        };
        let back = decode_message(&encode_message(&m)).unwrap();
        assert_eq!(back.recipients, m.recipients);
        let sub = SubscriptionRecord {
            id: "sub-3-x".into(),
            user: "tel:+15550000".into(),
            callback: api::CallbackReference {
                notify_url: "http://example.com/n".into(),
                callback_data: None,
                notification_format: None,
            },
            duration: 0,
            expires_at_ms: Some(5),
            client_correlator: None,
            seq: 3,
            disabled: None,
            secrets: vec![],
            face: Face::Seed,
            expired_until_ms: None,
            owner: None,
        };
        let bytes = encode_subscription(&sub);
        assert!(!String::from_utf8_lossy(&bytes).contains("callbackData"));
        // An active subscription is stored exactly as format 3 wrote it.
        assert!(!String::from_utf8_lossy(&bytes).contains("disabled"));
        assert_eq!(
            encode_subscription(&decode_subscription(&bytes).unwrap()),
            bytes
        );
        let off = SubscriptionRecord {
            disabled: Some(Disabled {
                reason: "the callback answered 410 Gone".into(),
                at_ms: 7,
            }),
            secrets: vec![
                SigningSecret {
                    secret: "whsec_new".into(),
                    until_ms: None,
                },
                SigningSecret {
                    secret: "whsec_old".into(),
                    until_ms: Some(9),
                },
            ],
            ..sub.clone()
        };
        let bytes = encode_subscription(&off);
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.contains(r#""disabled":{"reason":"the callback answered 410 Gone","at_ms":7}"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#""secrets":[{"secret":"whsec_new"},{"secret":"whsec_old","until_ms":9}]"#
            ),
            "{text}"
        );
        let back = decode_subscription(&bytes).unwrap();
        assert_eq!((back.disabled, back.secrets), (off.disabled, off.secrets));
        let n = Notification::SubscriptionCancellationNotification(
            api::SubscriptionCancellationNotification {
                reason: Some(api::ServiceException {
                    message_id: "SVC0001".into(),
                    text: "t %1".into(),
                    variables: vec!["v".into()],
                }),
                callback_data: Some("d".into()),
                link: vec![],
            },
        );
        assert_eq!(decode_notification(&encode_notification(&n)).unwrap(), n);
    }

    /// The OMA 2012 profile's notifications (format 7) read back as written, and a
    /// subscription's face is stored only when it is not the seed's (so a seed subscription's
    /// record is what format 6 wrote, and every format-6 record reads as the seed face).
    #[test]
    fn oma2012_notifications_and_faces_round_trip() {
        let link = || {
            vec![api::Link {
                rel: "ChatSessionInformation".into(),
                href: "http://h/chat/v1/u/oneToOne/o/s".into(),
            }]
        };
        let all = [
            Notification::ChatSessionInvitationNotification(
                api::ChatSessionInvitationNotification {
                    subject: "hi".into(),
                    originator_address: "tel:+1".into(),
                    originator_name: Some("A".into()),
                    t_participant_address: Some("tel:+2".into()),
                    t_participant_name: None,
                    session_id: "s".into(),
                    callback_data: Some("d".into()),
                    link: link(),
                },
            ),
            Notification::GroupSessionInvitationNotification(
                api::GroupSessionInvitationNotification {
                    subject: String::new(),
                    participant: vec![api::ParticipantInformation {
                        address: "tel:+1".into(),
                        name: None,
                        is_originator: Some(true),
                        status: Some(api::ParticipantStatus::Connected),
                        client_correlator: None,
                        resource_url: Some("http://h/p".into()),
                    }],
                    session_id: "s".into(),
                    callback_data: None,
                    link: link(),
                },
            ),
            Notification::MessageStatusNotification(api::MessageStatusNotification {
                status: api::MessageStatus::Displayed,
                error_code: None,
                description: Some("x".into()),
                message_id: "m".into(),
                callback_data: None,
                link: link(),
            }),
        ];
        for n in all {
            assert_eq!(decode_notification(&encode_notification(&n)).unwrap(), n);
        }
        let seed = super::super::testkit::subscription("sub-1", "tel:+1", 1);
        let bytes = encode_subscription(&seed);
        assert!(!String::from_utf8_lossy(&bytes).contains("face"));
        assert_eq!(decode_subscription(&bytes).unwrap().face, Face::Seed);
        let oma = SubscriptionRecord {
            face: Face::Oma2012,
            ..seed
        };
        let bytes = encode_subscription(&oma);
        assert!(String::from_utf8_lossy(&bytes).contains(r#""face":"oma2012""#));
        assert_eq!(decode_subscription(&bytes).unwrap().face, Face::Oma2012);
        // Format 10: an expired subscription's record says until when its last notifications
        // go; a live one's says nothing (as every earlier record).
        assert!(!String::from_utf8_lossy(&bytes).contains("expired_until_ms"));
        let expired = SubscriptionRecord {
            expired_until_ms: Some(42),
            ..oma
        };
        let bytes = encode_subscription(&expired);
        assert!(String::from_utf8_lossy(&bytes).contains(r#""expired_until_ms":42"#));
        assert_eq!(
            decode_subscription(&bytes).unwrap().expired_until_ms,
            Some(42)
        );
    }

    /// A record that does not match its stored type is an error, not a default.
    #[test]
    fn unreadable_records_are_errors() {
        assert!(decode_session(b"{}").is_err());
        assert!(decode_counters(b"{\"next_id\":1}").is_err());
        let bad_status = br#"{"id":"m","seq":1,"sender":"a","text":"t","date_time":"d","report_delivered":true,"report_displayed":true,"client_correlator":null,"recipients":[{"address":"b","status":"delivered"}]}"#;
        assert!(decode_message(bad_status).is_err());
        assert!(decode_notification(b"{\"NoSuchNotification\":{}}").is_err());
    }
}
