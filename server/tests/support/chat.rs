//! The set-up steps most suites take before what they test: subscribe a user to a listener,
//! start a session, have the invitees accept, send a message. Each sends JSON over raw HTTP
//! as [`APP_TOKEN`](super::APP_TOKEN) (subscriptions: in the format asked) and asserts the
//! step's success status, so a broken step fails where it broke.

use netapi_chat_api::{ChatMessage, ChatSessionInformation, ChatSubscription, ParticipantStatus};
use netapi_chat_runtime::Format;

use super::docs::{self, last_segment};
use super::{Answer, Listener, Server, send_doc, send_empty, xsd_validate};

/// Subscribes `user` with `doc`, sent in `format`; asserts `201` and returns the answer.
pub async fn subscribe_with(
    srv: &Server,
    user: &str,
    doc: &ChatSubscription,
    format: Format,
) -> Answer {
    let a = send_doc("POST", &srv.urls().subscriptions(user), format, doc).await;
    assert_eq!(a.status, 201, "subscribe {user}: {}", a.body);
    a
}

/// Subscribes `user` to `listener` (callbackData: the user's address), notifications and
/// the request in `format`; asserts `201` and returns the answer.
pub async fn subscribe(srv: &Server, user: &str, listener: &Listener, format: Format) -> Answer {
    let doc = docs::subscription_to(&listener.url, user, format);
    subscribe_with(srv, user, &doc, format).await
}

/// Starts the session `doc` as `from`; asserts `201` and returns its id.
pub async fn start_session(srv: &Server, from: &str, doc: &ChatSessionInformation) -> String {
    let a = send_doc("POST", &srv.urls().chat_sessions(from), Format::Json, doc).await;
    assert_eq!(a.status, 201, "start a session as {from}: {}", a.body);
    last_segment(a.header("location"))
}

/// `who` accepts its invitation into `sid`; asserts `200`.
pub async fn accept(srv: &Server, who: &str, sid: &str) {
    let url = srv.urls().participant_status(who, sid, who);
    let a = send_doc(
        "POST",
        &url,
        Format::Json,
        &docs::status(ParticipantStatus::Connected),
    )
    .await;
    assert_eq!(a.status, 200, "{who} accepts: {}", a.body);
}

/// Starts the session `doc` as `from` and has every invitee accept, in order; its id.
pub async fn connected_session(srv: &Server, from: &str, doc: &ChatSessionInformation) -> String {
    let sid = start_session(srv, from, doc).await;
    for p in &doc.participant {
        accept(srv, &p.address, &sid).await;
    }
    sid
}

/// Sends `doc` into `sid` as `from`; asserts `201` and returns the message id.
pub async fn send_message(srv: &Server, from: &str, sid: &str, doc: &ChatMessage) -> String {
    let a = send_doc("POST", &srv.urls().messages(from, sid), Format::Json, doc).await;
    assert_eq!(a.status, 201, "{from} sends: {}", a.body);
    last_segment(a.header("location"))
}

/// Asserts that the subscription at `url`, read in XML, is `Disabled` in a document valid
/// against the XSD.
pub async fn assert_disabled_in_xml(url: &str) {
    let xml = send_empty("GET", url, Format::Xml).await;
    assert!(
        xml.body
            .contains("<subscriptionStatus>Disabled</subscriptionStatus>"),
        "{}",
        xml.body
    );
    xsd_validate(&xml.body);
}
