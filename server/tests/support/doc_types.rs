//! The one list of the spec's document types (its root schemas: those with an `xml.name`),
//! for the tests that run something over every one of them (round trip, fuzzing). Both check
//! the list against the published OpenAPI, so a new document type in the spec fails them
//! until it is added here.

use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::OnceLock;

/// The published OpenAPI document (`/openapi.json`), parsed once.
pub fn published() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        serde_json::from_str(netapi_chat_api::OPENAPI_JSON).expect("published OpenAPI")
    })
}

/// The spec's document types: the schemas of the published OpenAPI with an `xml.name` (what
/// [`for_each_document_type`] must list).
pub fn root_schemas() -> BTreeSet<&'static str> {
    published()["components"]["schemas"]
        .as_object()
        .expect("schemas")
        .iter()
        .filter(|(_, s)| s["xml"]["name"].is_string())
        .map(|(n, _)| n.as_str())
        .collect()
}

/// The strings of the list `schema[key]` (`required`, `x-oma-choice`); none when absent.
pub fn names<'a>(schema: &'a Value, key: &str) -> Vec<&'a str> {
    schema[key]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// Invokes `$then!` with every document type of the spec, as a comma-separated list of type
/// names (in scope where `$then!` expands: `use netapi_chat_api::*`).
macro_rules! for_each_document_type {
    ($then:ident) => {
        $then![
            ResourceReference,
            RequestError,
            ChatSubscription,
            ChatSubscriptionList,
            ParticipantInformation,
            ParticipantList,
            ChatSessionInformation,
            ChatSessionList,
            ParticipantSessionStatus,
            ChatMessage,
            ChatMessageList,
            MessageDeliveryStatus,
            SessionInvitationNotification,
            ParticipantStatusNotification,
            ChatEventNotification,
            MessageNotification,
            MessageDeliveryNotification,
            SubscriptionCancellationNotification,
            SubscriptionSecret,
            DeadLetterList,
            MessageStatusReport,
            GroupChatSessionInformation,
            ChatNotificationSubscription,
            IsComposing,
            ChatSessionInvitationNotification,
            GroupSessionInvitationNotification,
            MessageStatusNotification,
            NotificationChannel,
            NotificationChannelList,
            NotificationChannelLifetime,
            NotificationList,
            ConnCheck,
            ConnAck,
        ];
    };
}

pub(crate) use for_each_document_type;
