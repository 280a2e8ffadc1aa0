//! The set-up steps most suites take before what they test: subscribe a user to a listener,
//! start a session, have the invitees accept, send a message. Each goes through the
//! two-format client ([`Face`]: JSON unless a format is given) as
//! [`APP_TOKEN`](super::APP_TOKEN) and asserts the step's success (status, `Location`, a body
//! in the asked format), so a broken step fails where it broke.

use netapi_chat_api::{ChatMessage, ChatSessionInformation, ChatSubscription, ParticipantStatus};
use netapi_chat_runtime::Format;

use super::docs::{self, last_segment};
use super::{Face, Listener, Server, send_empty, xsd_validate};

/// Subscribes `user` with `doc`, through the face of `format`; asserts `201` and returns the
/// subscription as created.
pub async fn subscribe_with(
    srv: &Server,
    user: &str,
    doc: &ChatSubscription,
    format: Format,
) -> ChatSubscription {
    let face = Face::for_format(format, srv);
    face.create_subscription(user, doc).await.created().1
}

/// Subscribes `user` to `listener` (callbackData: the user's address), notifications and
/// the request in `format`; asserts `201` and returns the subscription as created.
pub async fn subscribe(
    srv: &Server,
    user: &str,
    listener: &Listener,
    format: Format,
) -> ChatSubscription {
    let doc = docs::subscription_to(&listener.url, user, format);
    subscribe_with(srv, user, &doc, format).await
}

/// Starts the session `doc` as `from`; asserts `201` and returns its id.
pub async fn start_session(srv: &Server, from: &str, doc: &ChatSessionInformation) -> String {
    let face = Face::for_format(Format::Json, srv);
    last_segment(&face.create_session(from, doc).await.created().0)
}

/// `who` accepts its invitation into `sid`; asserts `200`.
pub async fn accept(srv: &Server, who: &str, sid: &str) {
    let face = Face::for_format(Format::Json, srv);
    let status = face
        .set_status(who, sid, who, ParticipantStatus::Connected)
        .await
        .ok(200);
    assert_eq!(status, docs::status(ParticipantStatus::Connected));
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
    let face = Face::for_format(Format::Json, srv);
    last_segment(&face.send_message(from, sid, doc).await.created().0)
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

/// POSTs each of `bodies` (in `f`, asking for `f`) to `url`, each twice: every one must make a
/// resource of its own (`201`, a `Location` no earlier one had), whose read (GET of the
/// `Location`) holds no `clientCorrelator`. For creates whose correlator says "none" (see
/// [`docs::blank_correlators`]): a correlator would make the second of two alike answer the
/// first, and another one conflict.
pub async fn each_creates_anew(f: Format, url: &str, bodies: &[String]) {
    let mut made: Vec<String> = Vec::new();
    for body in bodies.iter().chain(bodies) {
        let answer = super::post_raw(url, f, f, body).await;
        assert_eq!(answer.status, 201, "{body}: {}", answer.body);
        let location = answer.header("location").to_owned();
        assert!(
            !made.contains(&location),
            "{body}: answered {location} again"
        );
        let read = send_empty("GET", &location, f).await;
        assert_eq!(read.status, 200, "{location}: {}", read.body);
        assert!(
            !read.body.contains("clientCorrelator"),
            "{body}: read back as {}",
            read.body
        );
        made.push(location);
    }
}
