//! The request documents the suites send, built once: the smallest valid document of each
//! kind, which a test varies with struct update syntax
//! (`ChatMessage { client_correlator: Some(c), ..docs::message("hi") }`), plus the small
//! readers of what comes back (ids from URLs, an error's rendered text).

use netapi_chat_api::{
    CallbackReference, ChannelData, ChannelType, ChatMessage, ChatSessionInformation,
    ChatSubscription, MessageDeliveryStatus, MessageStatus, NotificationChannel,
    NotificationFormat, ParticipantInformation, ParticipantList, ParticipantSessionStatus,
    ParticipantStatus, RequestError,
};
use netapi_chat_runtime::Format;
use netapi_chat_runtime::wire::{self, Document};

/// A participant with only its address (what a client sends to invite).
pub fn participant(address: &str) -> ParticipantInformation {
    ParticipantInformation {
        address: address.to_owned(),
        name: None,
        is_originator: None,
        status: None,
        client_correlator: None,
        resource_url: None,
    }
}

/// A session request: `subject`, inviting `invitees` in order.
pub fn session(subject: &str, invitees: &[&str]) -> ChatSessionInformation {
    ChatSessionInformation {
        subject: Some(subject.to_owned()),
        participant: invitees.iter().map(|a| participant(a)).collect(),
        ..Default::default()
    }
}

/// A request to invite `addresses` into a session.
pub fn participants(addresses: &[&str]) -> ParticipantList {
    ParticipantList {
        participant: addresses.iter().map(|a| participant(a)).collect(),
        resource_url: None,
        link: Vec::new(),
    }
}

/// An `isComposing` saying `active`, with this `refresh` (seconds) and nothing else.
pub fn typing(refresh: i64) -> netapi_chat_api::IsComposing {
    netapi_chat_api::IsComposing {
        state: Some("active".to_owned()),
        status: None,
        last_active: None,
        content_type: None,
        refresh: Some(refresh),
    }
}

/// A message with this text and nothing else.
pub fn message(text: &str) -> ChatMessage {
    ChatMessage {
        text: text.to_owned(),
        success_report: None,
        report_request: Vec::new(),
        client_correlator: None,
        sender_address: None,
        date_time: None,
        resource_url: None,
    }
}

/// A subscription with this notifyURL and nothing else.
pub fn subscription(notify_url: &str) -> ChatSubscription {
    ChatSubscription {
        callback_reference: CallbackReference {
            notify_url: notify_url.to_owned(),
            callback_data: None,
            notification_format: None,
        },
        duration: None,
        client_correlator: None,
        resource_url: None,
        subscription_status: None,
        status_reason: None,
        signing_secret: None,
    }
}

/// A subscription to `notify_url` carrying `callback_data`, asking for notifications in
/// `format`.
pub fn subscription_to(notify_url: &str, callback_data: &str, format: Format) -> ChatSubscription {
    let mut doc = subscription(notify_url);
    doc.callback_reference.callback_data = Some(callback_data.to_owned());
    doc.callback_reference.notification_format = Some(notification_format(format));
    doc
}

/// A notification channel request of `channel_type` (applicationTag `test-app`), with these
/// `maxNotifications` and `maxWaitTime` (none: the server's defaults).
pub fn channel(
    channel_type: ChannelType,
    max_notifications: Option<i64>,
    max_wait: Option<i64>,
) -> NotificationChannel {
    NotificationChannel {
        client_correlator: None,
        application_tag: Some("test-app".to_owned()),
        channel_type,
        channel_data: Some(ChannelData {
            channel_url: None,
            max_notifications,
            max_wait_time: max_wait,
        }),
        channel_lifetime: None,
        callback_url: None,
        resource_url: None,
    }
}

/// The `notificationFormat` that asks for notifications in `format`.
pub fn notification_format(format: Format) -> NotificationFormat {
    match format {
        Format::Json => NotificationFormat::Json,
        Format::Xml => NotificationFormat::Xml,
    }
}

/// A participant's status change (accept: `Connected`).
pub fn status(status: ParticipantStatus) -> ParticipantSessionStatus {
    ParticipantSessionStatus { status }
}

/// A delivery confirmation.
pub fn delivery(status: MessageStatus) -> MessageDeliveryStatus {
    MessageDeliveryStatus { status }
}

/// A document as `f` writes it (for a body a test sends or alters by hand).
pub fn encode<T: Document>(f: Format, doc: &T) -> String {
    String::from_utf8(wire::encode(f, doc)).expect("utf-8")
}

/// The `clientCorrelator` a document given to [`blank_correlators`] carries, for it to
/// replace.
pub const CORRELATOR_MARK: &str = "blank-correlator-mark";

/// `doc`, whose `clientCorrelator` is [`CORRELATOR_MARK`], as `f` writes it with that
/// correlator written each way a client says "none" in `f`: `""` and `null` in JSON, an empty
/// element and one marked `xsi:nil` in XML.
pub fn blank_correlators<T: Document>(f: Format, doc: &T) -> Vec<String> {
    let body = encode(f, doc);
    let (given, blanks): (String, &[&str]) = match f {
        Format::Json => (
            format!(r#""clientCorrelator":"{CORRELATOR_MARK}""#),
            &[r#""clientCorrelator":"""#, r#""clientCorrelator":null"#],
        ),
        Format::Xml => (
            format!("<clientCorrelator>{CORRELATOR_MARK}</clientCorrelator>"),
            &[
                "<clientCorrelator/>",
                r#"<clientCorrelator xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:nil="true"/>"#,
            ],
        ),
    };
    assert!(body.contains(&given), "no correlator to replace in {body}");
    blanks.iter().map(|b| body.replace(&given, b)).collect()
}

/// The exception's text with its `%n` placeholders filled.
pub fn rendered(e: &RequestError) -> String {
    let ex = e
        .service_exception
        .as_ref()
        .or(e.policy_exception.as_ref())
        .expect("an exception");
    let mut out = ex.text.clone();
    for (i, v) in ex.variables.iter().enumerate().rev() {
        out = out.replace(&format!("%{}", i + 1), v);
    }
    out
}

/// The last path segment of a resource URL or `Location`, percent-decoded (ids are plain; a
/// participant's is its address).
pub fn last_segment(url: &str) -> String {
    let seg = url.rsplit('/').next().unwrap_or_default();
    percent_encoding::percent_decode_str(seg)
        .decode_utf8()
        .expect("utf-8")
        .into_owned()
}
