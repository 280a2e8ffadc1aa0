mod support;

// The OMA 2012 face (issue 16), black-box: the confirmed one-to-one chat of OMA REST NetAPI Chat
// V1_0-20120509-C under `/chat/v1/{userId}/oneToOne/{otherUserId}/{sessionId}`, as its clients
// (the GSMA OneAPI gateway tests, reference §1.2) use it: create with the flat
// `chatSessionInformation`, accept with PUT on `…/status` (204), send (201 + a
// `resourceReference` to the message's status), report with PUT of `messageStatusReport` (204),
// close by either side with DELETE (204). Every flow runs in JSON (the generated client) and in
// XML (raw HTTP; every body sent, answered and notified is validated against the generated
// XSD), with notifications at real listeners. The faces share one core: sessions cross.

use netapi_chat_api::{
    ChatEventNotification, ChatMessage, ChatNotificationSubscription, ChatSessionInformation,
    ChatSessionInvitationNotification, EventType, GroupChatSessionInformation,
    GroupSessionInvitationNotification, MessageDeliveryNotification, MessageNotification,
    MessageStatus, MessageStatusNotification, MessageStatusReport, ParticipantInformation,
    ParticipantStatus, ParticipantStatusNotification, SessionInvitationNotification,
    SubscriptionCancellationNotification,
};
use netapi_chat_runtime::Format;
use std::cell::Cell;
use support::docs::{self, last_segment};
use support::notification::Notified;
use support::{Face, Listener, Server, Wire, enc, send, send_doc, send_empty, xsd_validate};

use ParticipantStatus::{Connected, Invited};

/// The two `#[tokio::test]`s of a scenario that takes the face: `(scenario, json_test,
/// xml_test)` runs it once in JSON and once in XML. A macro because tests are items, which a
/// function cannot declare; the names are the tests' own (`cargo test --test oma2012 <name>`).
macro_rules! in_json_and_xml {
    ($scenario:ident, $json:ident, $xml:ident) => {
        #[tokio::test]
        async fn $json() {
            $scenario(Wire::Json).await;
        }

        #[tokio::test]
        async fn $xml() {
            $scenario(Wire::Xml).await;
        }
    };
}

const A: &str = "tel:+15551230001";
const B: &str = "sip:bob@example.com";
const C: &str = "tel:+15551230003";

/// A user with a seed-face subscription (the 2012 subscription resource is a later slice) at a
/// listener of its own, notifications in the face's format.
struct User {
    addr: &'static str,
    format: Format,
    listener: Listener,
    /// The link that ends each of its notifications: its subscription's `rel` and URL.
    subscription: (&'static str, String),
    seen: Cell<usize>,
}

impl User {
    async fn new(face: &Face<'_>, addr: &'static str) -> User {
        let listener = Listener::start().await;
        let sub = support::chat::subscribe(face.server, addr, &listener, face.fmt()).await;
        User {
            addr,
            format: face.fmt(),
            listener,
            subscription: (
                "ChatSubscription",
                sub.resource_url.expect("the subscription's URL"),
            ),
            seen: Cell::new(0),
        }
    }

    /// A user subscribed through the OMA 2012 face (`chatNotificationSubscription`): its
    /// notifications come in the OMA 2012 profile.
    async fn new_2012(face: &Face<'_>, addr: &'static str) -> User {
        let listener = Listener::start().await;
        let (location, _) = face
            .create_notification_subscription(
                addr,
                &subscription_2012(&listener.url, addr, face.fmt(), None),
            )
            .await
            .created();
        User {
            addr,
            format: face.fmt(),
            listener,
            subscription: ("ChatNotificationSubscription", location),
            seen: Cell::new(0),
        }
    }

    /// The next notification: a `T` in the subscription's format (XML validated by the XSD),
    /// its last link, to the subscription, taken off.
    async fn next<T: Notified>(&self) -> T {
        let n = self.seen.get() + 1;
        let got = self.listener.nth(n).await;
        self.seen.set(n);
        assert!(
            got.content_type.starts_with(self.format.media_type()),
            "notification {n} to {}: {}",
            self.addr,
            got.content_type
        );
        assert_eq!(
            got.kind(),
            T::NAME,
            "notification {n} to {}: {}",
            self.addr,
            got.body
        );
        self.told(&got)
    }

    /// The next `T`, past notifications of other kinds (what happened in between is not the
    /// test's subject).
    async fn until<T: Notified>(&self) -> T {
        loop {
            let n = self.seen.get() + 1;
            let got = self.listener.nth(n).await;
            self.seen.set(n);
            if got.kind() == T::NAME {
                return self.told(&got);
            }
        }
    }

    /// `got` decoded, the link to this user's subscription that ends it taken off.
    fn told<T: Notified>(&self, got: &support::Received) -> T {
        let mut doc: T = got.decode();
        let (rel, url) = &self.subscription;
        doc.subscription_link(rel, url, &got.body);
        doc
    }
}

/// An OMA 2012 `chatNotificationSubscription` to `url` (callbackData `data`, notifications in
/// `format`) as the GSMA gateway's clients sent it (`adhocChatSupported` asked for).
fn subscription_2012(
    url: &str,
    data: &str,
    format: Format,
    duration: Option<i64>,
) -> ChatNotificationSubscription {
    ChatNotificationSubscription {
        callback_reference: netapi_chat_api::CallbackReference {
            notify_url: url.to_owned(),
            callback_data: Some(data.to_owned()),
            notification_format: Some(docs::notification_format(format)),
        },
        client_correlator: None,
        confirmed_chat_supported: Some(true),
        adhoc_chat_supported: Some(true),
        duration,
        resource_url: None,
        signing_secret: None,
    }
}

/// The (rel, href) pairs of a notification's links.
fn links(l: &[netapi_chat_api::Link]) -> Vec<(&str, &str)> {
    l.iter()
        .map(|l| (l.rel.as_str(), l.href.as_str()))
        .collect()
}

/// The OMA 2012 create body: flat, one invitee, as the GSMA gateway's clients sent it.
fn one_to_one_request(from: &str, to: &str, subject: &str) -> ChatSessionInformation {
    ChatSessionInformation {
        subject: Some(subject.to_owned()),
        originator_address: Some(from.to_owned()),
        t_participant_address: Some(to.to_owned()),
        t_participant_name: Some("Bob".to_owned()),
        ..Default::default()
    }
}

/// The whole confirmed 1-1 flow on the 2012 face, with the issue's failures now succeeding:
/// a single invitee without a `participant` list is accepted (was 400 "missing field"), PUT on
/// the status accepts (was 405), the peer's DELETE closes (was 403).
async fn confirmed_chat(wire: Wire) {
    let srv = Server::default_for_tests();
    let face = Face::new(wire, &srv);
    let (a, b) = (User::new(&face, A).await, User::new(&face, B).await);

    // Create: 201, Location = resourceURL under oneToOne/, the flat 2012 shape, `Invited`.
    let (location, s) = face
        .create_one_to_one(A, B, &one_to_one_request(A, B, "Lunch?"))
        .await
        .created();
    let sid = last_segment(&location);
    assert_eq!(location, face.one_to_one_url(A, B, &sid));
    assert_eq!(s.resource_url.as_deref(), Some(location.as_str()));
    assert!(s.participant.is_empty(), "no participant list: {s:?}");
    assert_eq!(s.originator_address.as_deref(), Some(A));
    assert_eq!(s.t_participant_address.as_deref(), Some(B));
    assert_eq!(s.t_participant_name.as_deref(), Some("Bob"));
    assert_eq!(s.subject.as_deref(), Some("Lunch?"));
    assert_eq!(s.status, Some(Invited));

    // The invitee is invited (seed notification names until the 2012 subscriptions exist).
    let inv: SessionInvitationNotification = b.next().await;
    assert_eq!(inv.session_id, sid);
    assert_eq!(inv.originator_address, A);

    // The invitee reads it under its own userId, the originator as otherUserId.
    let seen = face.get_one_to_one(B, A, &sid).await.ok(200);
    assert_eq!(seen.status, Some(Invited));
    assert_eq!(seen.resource_url, Some(face.one_to_one_url(B, A, &sid)));

    // Accept with PUT (OMA 2012): 204; the originator is told.
    face.put_one_to_one_status(B, A, &sid, Connected)
        .await
        .no_content();
    let st: ParticipantStatusNotification = a.next().await;
    assert_eq!(st.session_id, sid);
    assert_eq!(st.participant[0].address, B);
    assert_eq!(st.participant[0].status, Some(Connected));
    assert_eq!(
        face.get_one_to_one(A, B, &sid).await.ok(200).status,
        Some(Connected)
    );

    // Send: 201 + resourceReference to the message's status under oneToOne/.
    let msg = docs::message("Noon at the usual place");
    let msg = netapi_chat_api::ChatMessage {
        report_request: vec![MessageStatus::Delivered, MessageStatus::Displayed],
        ..msg
    };
    let (loc, r) = face.send_one_to_one(A, B, &sid, &msg).await.created();
    let mid = loc
        .rsplit('/')
        .nth(1)
        .expect("…/messages/{messageId}/status")
        .to_owned();
    assert_eq!(loc, face.one_to_one_mstatus_url(A, B, &sid, &mid));
    assert_eq!(r.resource_url, loc);
    let m: MessageNotification = b.next().await;
    assert_eq!(
        (m.message_id.as_deref(), m.session_id.as_str()),
        (Some(mid.as_str()), sid.as_str())
    );
    assert_eq!(
        m.chat_message.as_ref().expect("a message").text,
        "Noon at the usual place"
    );

    // The sender reads `Sent`; the recipient reports Delivered, then Displayed, with PUT.
    assert_eq!(
        face.get_one_to_one_mstatus(A, B, &sid, &mid)
            .await
            .ok(200)
            .status,
        MessageStatus::Sent
    );
    for status in [MessageStatus::Delivered, MessageStatus::Displayed] {
        face.put_one_to_one_mstatus(B, A, &sid, &mid, status)
            .await
            .no_content();
        let d: MessageDeliveryNotification = a.next().await;
        assert_eq!((d.status, d.message_id.as_str()), (status, mid.as_str()));
        assert_eq!(
            face.get_one_to_one_mstatus(A, B, &sid, &mid)
                .await
                .ok(200)
                .status,
            status
        );
    }

    // The peer closes with DELETE (the seed face says 403 to it): 204; both are told.
    face.delete_one_to_one(B, A, &sid).await.no_content();
    for u in [&a, &b] {
        let e: ChatEventNotification = u.next().await;
        assert_eq!(
            (e.event_type, e.session_id.as_str()),
            (EventType::SessionEnded, sid.as_str())
        );
    }
    face.get_one_to_one(A, B, &sid)
        .await
        .fails(404, Some("SVC2008"));
    face.get_session(A, &sid).await.fails(404, Some("SVC2008"));
}

/// OMA 2012: the PUT of `Disconnected` on one's own status is the DELETE: a decline while
/// invited, and once accepted the end of the chat for both (the peer hears `SessionEnded`,
/// the session is gone), where the seed's leave would have kept it half open.
async fn disconnected_closes_a_one_to_one(wire: Wire) {
    let srv = Server::default_for_tests();
    let face = Face::new(wire, &srv);
    let (a, b) = (
        User::new_2012(&face, A).await,
        User::new_2012(&face, B).await,
    );
    let req = one_to_one_request(A, B, "Brief");
    let sid = last_segment(&face.create_one_to_one(A, B, &req).await.created().0);
    let _: ChatSessionInvitationNotification = b.next().await;
    let _: MessageNotification = b.next().await;
    face.put_one_to_one_status(B, A, &sid, Connected)
        .await
        .no_content();
    let ev: ChatEventNotification = a.next().await;
    assert_eq!(ev.event_type, EventType::Accepted);
    face.put_one_to_one_status(B, A, &sid, ParticipantStatus::Disconnected)
        .await
        .no_content();
    let ev: ChatEventNotification = a.next().await;
    assert_eq!(
        (ev.event_type, ev.session_id.as_str()),
        (EventType::SessionEnded, sid.as_str())
    );
    face.get_one_to_one(A, B, &sid)
        .await
        .fails(404, Some("SVC2008"));
}

in_json_and_xml!(
    disconnected_closes_a_one_to_one,
    disconnected_closes_a_one_to_one_in_json,
    disconnected_closes_a_one_to_one_in_xml
);

in_json_and_xml!(
    confirmed_chat,
    confirmed_one_to_one_chat_in_json,
    confirmed_one_to_one_chat_in_xml
);

/// The invitee declines with DELETE (OMA 2012), and the originator cancels with DELETE.
async fn decline_and_cancel(wire: Wire) {
    let srv = Server::default_for_tests();
    let face = Face::new(wire, &srv);
    let (a, b) = (User::new(&face, A).await, User::new(&face, B).await);
    let req = one_to_one_request(A, B, "Decline me");
    let sid = last_segment(&face.create_one_to_one(A, B, &req).await.created().0);
    let _: SessionInvitationNotification = b.next().await;
    face.delete_one_to_one(B, A, &sid).await.no_content();
    let st: ParticipantStatusNotification = a.next().await;
    assert_eq!(
        st.participant[0].status,
        Some(ParticipantStatus::Disconnected)
    );
    face.get_one_to_one(A, B, &sid)
        .await
        .fails(404, Some("SVC2008"));

    let sid = last_segment(&face.create_one_to_one(A, B, &req).await.created().0);
    let _: SessionInvitationNotification = b.next().await;
    face.delete_one_to_one(A, B, &sid).await.no_content();
    let e: ChatEventNotification = b.next().await;
    assert_eq!(e.event_type, EventType::SessionCancelled);
    face.get_one_to_one(B, A, &sid)
        .await
        .fails(404, Some("SVC2008"));
}

in_json_and_xml!(
    decline_and_cancel,
    decline_and_cancel_with_delete_in_json,
    decline_and_cancel_with_delete_in_xml
);

/// One session, two faces: started on either, answered and used from the other.
async fn sessions_cross_faces(wire: Wire) {
    let srv = Server::default_for_tests();
    let face = Face::new(wire, &srv);
    let b = User::new(&face, B).await;

    // Started on the seed face, accepted and used on the 2012 face.
    let seed_req = docs::session("seed first", &[B]);
    let sid = last_segment(&face.create_session(A, &seed_req).await.created().0);
    let _: SessionInvitationNotification = b.next().await;
    assert_eq!(
        face.get_one_to_one(B, A, &sid).await.ok(200).status,
        Some(Invited)
    );
    face.put_one_to_one_status(B, A, &sid, Connected)
        .await
        .no_content();
    assert_eq!(
        face.get_session(A, &sid).await.ok(200).participant[1].status,
        Some(Connected)
    );
    let loc = face
        .send_one_to_one(B, A, &sid, &docs::message("from 2012"))
        .await
        .created()
        .0;
    let mid = loc.rsplit('/').nth(1).expect("message id").to_owned();
    // The seed face reads the message the 2012 face sent, and confirms it.
    assert_eq!(
        face.get_message(A, &sid, &mid).await.ok(200).text,
        "from 2012"
    );
    face.confirm(A, &sid, &mid, MessageStatus::Delivered)
        .await
        .no_content();
    assert_eq!(
        face.get_one_to_one_mstatus(B, A, &sid, &mid)
            .await
            .ok(200)
            .status,
        MessageStatus::Delivered
    );
    // Where the faces part: the peer's DELETE is 403 on the seed face, 204 on the 2012 face.
    face.end_session(B, &sid).await.fails(403, Some("POL0001"));
    face.delete_one_to_one(B, A, &sid).await.no_content();

    // Started on the 2012 face, accepted and used on the seed face.
    let req = one_to_one_request(A, B, "2012 first");
    let sid = last_segment(&face.create_one_to_one(A, B, &req).await.created().0);
    let seed_view = face.get_session(B, &sid).await.ok(200);
    assert_eq!(seed_view.participant.len(), 2, "the seed face lists both");
    face.set_status(B, &sid, B, Connected).await.ok(200);
    let loc = face
        .send_message(A, &sid, &docs::message("from the seed"))
        .await
        .created()
        .0;
    let mid = last_segment(&loc);
    face.put_one_to_one_mstatus(B, A, &sid, &mid, MessageStatus::Displayed)
        .await
        .no_content();
    assert_eq!(
        face.get_delivery(A, &sid, &mid).await.ok(200).status,
        MessageStatus::Displayed
    );

    // A group session is no one-to-one session: 404 under oneToOne/ for every member.
    let group = docs::session("group", &[B, C]);
    let gid = last_segment(&face.create_session(A, &group).await.created().0);
    face.get_one_to_one(A, B, &gid)
        .await
        .fails(404, Some("SVC2008"));
    face.get_one_to_one(B, A, &gid)
        .await
        .fails(404, Some("SVC2008"));
    // ... nor is a session under a peer it does not have.
    face.get_one_to_one(A, C, &sid)
        .await
        .fails(404, Some("SVC2008"));
}

in_json_and_xml!(
    sessions_cross_faces,
    sessions_cross_faces_in_json,
    sessions_cross_faces_in_xml
);

/// Bad input on the 2012 face gets the OMA error, never a 5xx.
async fn refusals(wire: Wire) {
    let srv = Server::default_for_tests();
    let face = Face::new(wire, &srv);
    // The invitee in the body is another user than the URL's.
    let wrong = one_to_one_request(A, C, "x");
    face.create_one_to_one(A, B, &wrong)
        .await
        .fails(400, Some("SVC0002"));
    // The originator is another user than the URL's.
    let wrong = one_to_one_request(C, B, "x");
    face.create_one_to_one(A, B, &wrong)
        .await
        .fails(400, Some("SVC0002"));
    // The seed's list is not the 2012 form.
    let listed = ChatSessionInformation {
        participant: vec![docs::participant(B)],
        ..one_to_one_request(A, B, "x")
    };
    face.create_one_to_one(A, B, &listed)
        .await
        .fails(400, Some("SVC0002"));
    // otherUserId is no address; a chat with oneself.
    face.create_one_to_one(A, "mailto:bob", &one_to_one_request(A, B, "x"))
        .await
        .fails(400, Some("SVC0004"));
    let selfish = ChatSessionInformation {
        t_participant_address: None,
        ..one_to_one_request(A, A, "x")
    };
    face.create_one_to_one(A, A, &selfish)
        .await
        .fails(400, Some("SVC0002"));
    // The seed face still wants its list: the 2012 form there is refused, clearly.
    face.create_session(A, &one_to_one_request(A, B, "x"))
        .await
        .fails(400, Some("SVC0002"));

    let sid = last_segment(
        &face
            .create_one_to_one(A, B, &one_to_one_request(A, B, "ok"))
            .await
            .created()
            .0,
    );
    // Messages before the peer accepted: the seed's POL1012.
    face.send_one_to_one(A, B, &sid, &docs::message("early"))
        .await
        .fails(403, Some("POL1012"));
    // `Invited` is the server's; accepting twice is a conflict.
    face.put_one_to_one_status(B, A, &sid, Invited)
        .await
        .fails(400, Some("SVC0002"));
    face.put_one_to_one_status(B, A, &sid, Connected)
        .await
        .no_content();
    face.put_one_to_one_status(B, A, &sid, Connected)
        .await
        .fails(409, Some("SVC0001"));
    // Unknown session, message; a stranger.
    face.get_one_to_one(A, B, "sess-none")
        .await
        .fails(404, Some("SVC2008"));
    face.get_one_to_one(C, A, &sid)
        .await
        .fails(404, Some("SVC2008"));
    // A 404 names the resource as this face's client asked for it.
    let missing = face.get_one_to_one_mstatus(A, B, &sid, "msg-none").await;
    let text = docs::rendered(missing.error.as_ref().expect("a requestError"));
    assert!(
        text.contains(&face.one_to_one_mstatus_url(A, B, &sid, "msg-none")),
        "{text}"
    );
    missing.fails(404, Some("SVC2008"));
    // The sender cannot report its own message.
    let loc = face
        .send_one_to_one(A, B, &sid, &docs::message("mine"))
        .await
        .created()
        .0;
    let mid = loc.rsplit('/').nth(1).expect("message id").to_owned();
    face.put_one_to_one_mstatus(A, B, &sid, &mid, MessageStatus::Displayed)
        .await
        .fails(403, Some("POL0001"));

    // A clientCorrelator names one request: resent as it was, it answers the first session;
    // used for another peer, or for a group, it is 409 SVC0005, never a 201 whose Location
    // is another kind of session (a 404 under this URL) and nobody invited.
    let with_b = ChatSessionInformation {
        client_correlator: Some("corr-1".to_owned()),
        ..one_to_one_request(A, B, "c")
    };
    let first = face.create_one_to_one(A, B, &with_b).await.created().0;
    assert_eq!(
        face.create_one_to_one(A, B, &with_b).await.created().0,
        first
    );
    let with_c = ChatSessionInformation {
        client_correlator: Some("corr-1".to_owned()),
        ..one_to_one_request(A, C, "c")
    };
    face.create_one_to_one(A, C, &with_c)
        .await
        .fails(409, Some("SVC0005"));
    let as_group = GroupChatSessionInformation {
        subject: Some("c".to_owned()),
        participant: vec![docs::participant(B)],
        client_correlator: Some("corr-1".to_owned()),
        ..GroupChatSessionInformation::default()
    };
    face.create_group(A, &as_group)
        .await
        .fails(409, Some("SVC0005"));
}

in_json_and_xml!(refusals, refusals_in_json, refusals_in_xml);

/// A JSON number or boolean where the schema has a string is read as its text (clients that
/// build JSON with a generic XML-to-JSON converter type `12345`; the mirror of OMA's strings
/// for numbers): the subscription is made and answers the values as strings. An object there
/// is still refused.
#[tokio::test]
async fn a_number_in_a_string_field_is_read_as_its_text() {
    let srv = Server::default_for_tests();
    let url = srv.urls().oma2012_subscriptions(A);
    let json = [("content-type", "application/json")];
    let body = r#"{"chatNotificationSubscription":{"callbackReference":{"notifyURL":"http://127.0.0.1:10/","callbackData":4711},"clientCorrelator":12345}}"#;
    let a = send("POST", &url, &json, Some(body)).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let sub: ChatNotificationSubscription = a.decode();
    assert_eq!(sub.client_correlator.as_deref(), Some("12345"));
    assert_eq!(
        sub.callback_reference.callback_data.as_deref(),
        Some("4711")
    );
    let bad = r#"{"chatNotificationSubscription":{"callbackReference":{"notifyURL":"http://127.0.0.1:10/"},"clientCorrelator":{"x":1}}}"#;
    send("POST", &url, &json, Some(bad))
        .await
        .assert_error(400, "SVC0002", Format::Json);
}

/// A 404 on this tree names the URL the client used, under `/chat/v1/` (it named the seed
/// face's session URL for a group or one-to-one session that does not exist).
#[tokio::test]
async fn a_missing_session_is_named_as_the_client_asked_for_it() {
    let srv = Server::default_for_tests();
    let urls = srv.urls();
    let cases = [
        (
            urls.group_session(A, "nosuch"),
            urls.group_session(A, "nosuch"),
        ),
        (
            urls.group_message_status(A, "nosuch", "m"),
            urls.group_session(A, "nosuch"),
        ),
        (
            urls.one_to_one_message_status(A, B, "nosuch", "m"),
            urls.one_to_one_session(A, B, "nosuch"),
        ),
    ];
    for f in [Format::Json, Format::Xml] {
        for (url, named) in &cases {
            let e = send_empty("GET", url, f)
                .await
                .assert_error(404, "SVC2008", f);
            let v = e.service_exception.expect("a serviceException").variables;
            assert_eq!(v, std::slice::from_ref(named), "{url}");
        }
    }
}

/// The documents as an OMA 2012 client writes them by hand (reference §1.2 and the GSMA
/// gateway tests), JSON and XML, each XML one valid against the published XSD: the server
/// takes them as they are. Also the verbs: a method the resource does not have is 405 with
/// its `Allow`.
#[tokio::test]
async fn hand_written_2012_documents_and_verbs() {
    let srv = Server::default_for_tests();
    let urls = srv.urls();
    let create_xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <chat:chatSessionInformation xmlns:chat=\"urn:oma:xml:rest:netapi:chat:1\">\
         <subject>Hello</subject><originatorAddress>{A}</originatorAddress>\
         <tParticipantAddress>{B}</tParticipantAddress></chat:chatSessionInformation>"
    );
    let create_json = format!(
        r#"{{"chatSessionInformation":{{"subject":"Hello","originatorAddress":"{A}","tParticipantAddress":"{B}"}}}}"#
    );
    let accept_xml = "<chat:participantSessionStatus xmlns:chat=\"urn:oma:xml:rest:netapi:chat:1\">\
                      <status>Connected</status></chat:participantSessionStatus>";
    let accept_json = r#"{"participantSessionStatus":{"status":"Connected"}}"#;
    let send_xml = "<chat:chatMessage xmlns:chat=\"urn:oma:xml:rest:netapi:chat:1\">\
                    <text>hi</text><reportRequest>Displayed</reportRequest></chat:chatMessage>";
    let send_json = r#"{"chatMessage":{"text":"hi","reportRequest":["Displayed"]}}"#;
    let report_xml = "<chat:messageStatusReport xmlns:chat=\"urn:oma:xml:rest:netapi:chat:1\">\
                      <status>Displayed</status></chat:messageStatusReport>";
    let report_json = r#"{"messageStatusReport":{"status":"Displayed"}}"#;
    for doc in [&create_xml, accept_xml, send_xml, report_xml] {
        xsd_validate(doc);
    }
    let cases = [
        (
            Format::Json,
            create_json.as_str(),
            accept_json,
            send_json,
            report_json,
        ),
        (
            Format::Xml,
            create_xml.as_str(),
            accept_xml,
            send_xml,
            report_xml,
        ),
    ];
    for (f, create, accept, message, report) in cases {
        let ct = f.media_type();
        let h = [("content-type", ct), ("accept", ct)];
        let url = urls.one_to_one_other_user(A, B);
        let created = send("POST", &url, &h, Some(create)).await;
        let sid = created.created_id();
        let s: ChatSessionInformation = created.decode();
        assert_eq!(s.status, Some(Invited));
        let put = send(
            "PUT",
            &urls.one_to_one_session_status(B, A, &sid),
            &h,
            Some(accept),
        )
        .await;
        assert_eq!(put.status, 204, "{}", put.body);
        let sent = send(
            "POST",
            &urls.one_to_one_messages(A, B, &sid),
            &h,
            Some(message),
        )
        .await;
        assert_eq!(sent.status, 201, "{}", sent.body);
        let location = sent.header("location").to_owned();
        let mid = location.rsplit('/').nth(1).expect("message id").to_owned();
        assert_eq!(location, urls.one_to_one_message_status(A, B, &sid, &mid));
        // The recipient reports under its own userId.
        let status_url = urls.one_to_one_message_status(B, A, &sid, &mid);
        let reported = send("PUT", &status_url, &h, Some(report)).await;
        assert_eq!(reported.status, 204, "{}", reported.body);
        // Unencoded addresses in the path are read too (the gateways accepted them).
        let raw = format!("{}/chat/v1/{A}/oneToOne/{}/{sid}", urls.base(), enc(B));
        let got = send("GET", &raw, &[("accept", ct)], None).await;
        assert_eq!(got.status, 200, "{}", got.body);
        // Verbs OMA 2012 does not define on these resources: 405 + Allow.
        let wrong = send("GET", &url, &[("accept", ct)], None).await;
        wrong.assert_error(405, "SVC0002", f);
        assert_eq!(wrong.header("allow"), "POST");
        let wrong = send(
            "POST",
            &urls.one_to_one_session(A, B, &sid),
            &h,
            Some(create),
        )
        .await;
        assert_eq!(wrong.status, 405);
        assert_eq!(wrong.header("allow"), "GET, HEAD, PUT, DELETE");
        let closed = send(
            "DELETE",
            &urls.one_to_one_session(B, A, &sid),
            &[("accept", ct)],
            None,
        )
        .await;
        assert_eq!(closed.status, 204, "{}", closed.body);
    }
}

/// The group chat on the 2012 face: create (one invitee is still a group), accept with PUT, add
/// one `participantInformation` (the issue's first failure: the seed face wants a
/// `participantList`), send and report, decline and leave with DELETE of one's own participant,
/// withdraw someone else's invitation with DELETE of theirs.
async fn group_chat(wire: Wire) {
    let srv = Server::default_for_tests();
    let face = Face::new(wire, &srv);
    let urls = srv.urls();
    let (a, b, c) = (
        User::new(&face, A).await,
        User::new(&face, B).await,
        User::new(&face, C).await,
    );
    let req = GroupChatSessionInformation {
        subject: Some("Team".to_owned()),
        participant: vec![
            ParticipantInformation {
                is_originator: Some(true),
                ..docs::participant(A)
            },
            docs::participant(B),
        ],
        client_correlator: None,
        resource_url: None,
    };
    let (loc, r) = face.create_group(A, &req).await.created();
    let sid = last_segment(&loc);
    assert_eq!(loc, urls.group_session(A, &sid));
    assert_eq!(r.resource_url, loc);
    let _: SessionInvitationNotification = b.next().await;
    // The creator is told the group is set up (the GSMA gateways' `Successful`).
    let ok: ChatEventNotification = a.next().await;
    assert_eq!(
        (ok.event_type, ok.session_id.as_str()),
        (EventType::Successful, sid.as_str())
    );
    // ... then the roster it set up, itself marked as its own.
    let roster: ParticipantStatusNotification = a.next().await;
    let who: Vec<_> = roster
        .participant
        .iter()
        .map(|p| (p.address.as_str(), p.status, p.yourown))
        .collect();
    assert_eq!(
        who,
        [
            (A, Some(Connected), Some(true)),
            (B, Some(Invited), Some(false))
        ]
    );
    assert_eq!(roster.session_id, sid);
    let g = face.get_group(B, &sid).await.ok(200);
    assert_eq!(g.resource_url, Some(urls.group_session(B, &sid)));
    let who: Vec<_> = g
        .participant
        .iter()
        .map(|p| (p.address.as_str(), p.status, p.is_originator))
        .collect();
    assert_eq!(
        who,
        [
            (A, Some(Connected), Some(true)),
            (B, Some(Invited), Some(false))
        ]
    );
    // A group with one invitee is not a one-to-one chat.
    face.get_one_to_one(A, B, &sid)
        .await
        .fails(404, Some("SVC2008"));

    face.put_group_status(B, &sid, B, Connected)
        .await
        .no_content();
    let st: ParticipantStatusNotification = a.next().await;
    assert_eq!(st.participant[0].status, Some(Connected));

    // One participantInformation invites one more.
    let (loc, r) = face
        .add_group_participant(A, &sid, &docs::participant(C))
        .await
        .created();
    assert_eq!(loc, urls.group_participant(A, &sid, C));
    assert_eq!(r.resource_url, loc);
    let _: SessionInvitationNotification = c.next().await;
    // The other member is told of the invitation (the inviter knows); the invitee declines
    // with DELETE of its own participant, and both are told.
    let st: ParticipantStatusNotification = b.next().await;
    assert_eq!(
        (st.participant[0].address.as_str(), st.participant[0].status),
        (C, Some(Invited))
    );
    face.delete_group_participant(C, &sid, C).await.no_content();
    for u in [&a, &b] {
        let st: ParticipantStatusNotification = u.next().await;
        assert_eq!(st.participant[0].address, C);
        assert_eq!(
            st.participant[0].status,
            Some(ParticipantStatus::Disconnected)
        );
    }

    // Send and report Displayed.
    let msg = netapi_chat_api::ChatMessage {
        report_request: vec![MessageStatus::Displayed],
        ..docs::message("stand-up in 5")
    };
    let (loc, _) = face.send_group(A, &sid, &msg).await.created();
    let mid = loc.rsplit('/').nth(1).expect("message id").to_owned();
    assert_eq!(loc, urls.group_message_status(A, &sid, &mid));
    let m: MessageNotification = b.next().await;
    assert_eq!(m.message_id.as_deref(), Some(mid.as_str()));
    face.put_group_mstatus(B, &sid, &mid, MessageStatus::Displayed)
        .await
        .no_content();
    let d: MessageDeliveryNotification = a.next().await;
    assert_eq!(d.status, MessageStatus::Displayed);
    assert_eq!(
        face.get_group_mstatus(A, &sid, &mid).await.ok(200).status,
        MessageStatus::Displayed
    );
    // The message itself under group/ (what a 2012 messageStatusNotification links), for
    // every participant; C, who declined, gets the 404 of a message that never existed.
    for who in [A, B] {
        let url = urls.group_message(who, &sid, &mid);
        let got = send_empty("GET", &url, face.fmt()).await;
        assert_eq!(got.status, 200, "{}", got.body);
        let read: ChatMessage = got.decode();
        assert_eq!(
            (read.text.as_str(), read.resource_url.as_deref()),
            ("stand-up in 5", Some(url.as_str()))
        );
    }
    let declined = send_empty("GET", &urls.group_message(C, &sid, &mid), face.fmt()).await;
    assert_eq!(declined.status, 404, "{}", declined.body);

    // Someone else's participant: the inviter withdraws an unanswered invitation.
    const D: &str = "sip:dave@example.org";
    face.add_group_participant(A, &sid, &docs::participant(D))
        .await
        .created();
    face.delete_group_participant(B, &sid, D)
        .await
        .fails(403, Some("POL0001"));
    face.delete_group_participant(A, &sid, D).await.no_content();
    // The canceller's own applications see the invitee go, as the other members do.
    let st: ParticipantStatusNotification = a.next().await;
    assert_eq!(st.participant[0].address, D);
    assert_eq!(
        st.participant[0].status,
        Some(ParticipantStatus::Disconnected)
    );
    let g = face.get_group(A, &sid).await.ok(200);
    let dave = g
        .participant
        .iter()
        .find(|p| p.address == D)
        .expect("listed");
    assert_eq!(dave.status, Some(ParticipantStatus::Disconnected));

    // The member leaves with DELETE of its own participant; the originator is told.
    face.delete_group_participant(B, &sid, B).await.no_content();
    let st: ParticipantStatusNotification = a.next().await;
    assert_eq!(st.participant[0].address, B);
    assert_eq!(
        st.participant[0].status,
        Some(ParticipantStatus::Disconnected)
    );

    // Participant reads: the list (originator first, then in invitation order) and one
    // participant, every resourceURL under group/ for the reader.
    let list = face.list_group_participants(C, &sid).await.ok(200);
    assert_eq!(list.resource_url, Some(urls.group_participants(C, &sid)));
    let who: Vec<_> = list
        .participant
        .iter()
        .map(|p| (p.address.as_str(), p.status))
        .collect();
    use ParticipantStatus::Disconnected;
    assert_eq!(
        who,
        [
            (A, Some(Connected)),
            (B, Some(Disconnected)),
            (C, Some(Disconnected)),
            (D, Some(Disconnected))
        ]
    );
    assert_eq!(
        list.participant[1].resource_url,
        Some(urls.group_participant(C, &sid, B))
    );
    let one = face.get_group_participant(A, &sid, B).await.ok(200);
    assert_eq!(one.status, Some(Disconnected));
    assert_eq!(one.resource_url, Some(urls.group_participant(A, &sid, B)));
    face.get_group_participant(A, &sid, "tel:+15559999999")
        .await
        .fails(404, Some("SVC2008"));
    face.list_group_participants("tel:+15559999999", &sid)
        .await
        .fails(404, Some("SVC2008"));

    // Only the originator terminates the group; then it is gone for everyone.
    face.delete_group(B, &sid).await.fails(403, Some("POL0001"));
    face.put_group_status(B, &sid, B, Connected)
        .await
        .no_content();
    let _: ParticipantStatusNotification = a.next().await;
    face.delete_group(A, &sid).await.no_content();
    let end: ChatEventNotification = b.until().await;
    assert_eq!(
        (end.event_type, end.session_id.as_str()),
        (EventType::SessionEnded, sid.as_str())
    );
    let _: ChatEventNotification = a.until().await;
    face.get_group(A, &sid).await.fails(404, Some("SVC2008"));
    face.list_group_participants(B, &sid)
        .await
        .fails(404, Some("SVC2008"));

    // A seed group session is under group/ too; a one-to-one session is not.
    let gid = last_segment(
        &face
            .create_session(A, &docs::session("seed group", &[B, C]))
            .await
            .created()
            .0,
    );
    assert_eq!(face.get_group(C, &gid).await.ok(200).participant.len(), 3);
    let one = last_segment(
        &face
            .create_one_to_one(A, B, &one_to_one_request(A, B, "1-1"))
            .await
            .created()
            .0,
    );
    face.get_group(A, &one).await.fails(404, Some("SVC2008"));
}

in_json_and_xml!(group_chat, group_chat_in_json, group_chat_in_xml);

/// The issue's first failure, as an OMA 2012 client sends it by hand: one
/// `participantInformation` POSTed to a group's participants, in JSON and in XML (valid against
/// the published XSD), is `201`.
#[tokio::test]
async fn a_single_participant_information_is_accepted() {
    let srv = Server::default_for_tests();
    let urls = srv.urls();
    let face = Face::new(Wire::Json, &srv);
    let req = GroupChatSessionInformation {
        participant: vec![docs::participant(B)],
        ..GroupChatSessionInformation::default()
    };
    let sid = last_segment(&face.create_group(A, &req).await.created().0);
    let xml = format!(
        "<chat:participantInformation xmlns:chat=\"urn:oma:xml:rest:netapi:chat:1\">\
         <address>{C}</address></chat:participantInformation>"
    );
    xsd_validate(&xml);
    let json = r#"{"participantInformation":{"address":"sip:dave@example.org"}}"#;
    for (f, body) in [(Format::Xml, xml.as_str()), (Format::Json, json)] {
        let ct = f.media_type();
        let h = [("content-type", ct), ("accept", ct)];
        let added = send("POST", &urls.group_participants(A, &sid), &h, Some(body)).await;
        assert_eq!(added.status, 201, "{}", added.body);
        let r: netapi_chat_api::ResourceReference = added.decode();
        assert_eq!(r.resource_url, added.header("location"));
    }
    assert_eq!(face.get_group(A, &sid).await.ok(200).participant.len(), 4);
}

/// The other form OMA 2012 allows on a group's participants: a `participantList` of several,
/// in JSON (the generated client's choice type) and XML; all of it is invited or, when one is
/// in the session already, nothing (409); a root that is neither is a 400 naming both.
async fn participant_list_form(wire: Wire) {
    let srv = Server::default_for_tests();
    let face = Face::new(wire, &srv);
    let urls = srv.urls();
    let c = User::new_2012(&face, C).await;
    let req = GroupChatSessionInformation {
        participant: vec![docs::participant(B)],
        ..GroupChatSessionInformation::default()
    };
    let sid = last_segment(&face.create_group(A, &req).await.created().0);
    const D: &str = "sip:dave@example.org";
    let list = |who: &[&str]| netapi_chat_api::ParticipantList {
        participant: who.iter().map(|a| docs::participant(a)).collect(),
        resource_url: None,
        link: Vec::new(),
    };
    let (loc, r) = face
        .add_group_participant(A, &sid, &list(&[C, D]))
        .await
        .created();
    assert_eq!(loc, urls.group_participants(A, &sid));
    assert_eq!(r.resource_url, loc);
    let inv: GroupSessionInvitationNotification = c.next().await;
    assert_eq!(inv.participant.len(), 4);
    let who: Vec<_> = face
        .list_group_participants(A, &sid)
        .await
        .ok(200)
        .participant
        .into_iter()
        .map(|p| (p.address, p.status))
        .collect();
    assert_eq!(
        who,
        [
            (A.to_owned(), Some(Connected)),
            (B.to_owned(), Some(Invited)),
            (C.to_owned(), Some(Invited)),
            (D.to_owned(), Some(Invited))
        ]
    );
    // One already in it: nothing is added.
    face.add_group_participant(A, &sid, &list(&["tel:+15551230009", B]))
        .await
        .fails(409, Some("SVC0001"));
    assert_eq!(
        face.list_group_participants(A, &sid)
            .await
            .ok(200)
            .participant
            .len(),
        4
    );
    // Neither root: 400, naming both.
    let f = face.fmt();
    let wrong = send_doc(
        "POST",
        &urls.group_participants(A, &sid),
        f,
        &docs::status(Connected),
    )
    .await;
    wrong.assert_error(400, "SVC0002", f);
    assert!(
        wrong.body.contains("participantInformation") && wrong.body.contains("participantList"),
        "{}",
        wrong.body
    );
}

in_json_and_xml!(
    participant_list_form,
    participant_list_form_in_json,
    participant_list_form_in_xml
);

/// The 2012 subscription resource, as an OMA 2012 client uses it: create (201, `Location`,
/// the flags and duration the server grants), a resend with its `clientCorrelator`, read,
/// list (on both faces, each in its own form), refresh with PUT (the new `callbackData` in
/// the next notification; a `duration` set by a refresh expires it, and the cancellation links
/// to it under this tree), refusals, DELETE.
async fn subscription_resource(wire: Wire) {
    let srv = Server::default_for_tests();
    let face = Face::new(wire, &srv);
    let urls = srv.urls();
    let listener = Listener::start().await;
    let f = face.fmt();
    let mut doc = subscription_2012(&listener.url, A, f, Some(3600));
    doc.client_correlator = Some("c-1".to_owned());
    let (loc, sub) = face
        .create_notification_subscription(A, &doc)
        .await
        .created();
    let id = last_segment(&loc);
    assert_eq!(loc, urls.oma2012_subscription(A, &id));
    assert_eq!(sub.resource_url.as_deref(), Some(loc.as_str()));
    // Confirmed and ad hoc chats granted; the duration as granted.
    assert_eq!(
        (
            sub.confirmed_chat_supported,
            sub.adhoc_chat_supported,
            sub.duration
        ),
        (Some(true), Some(true), Some(3600))
    );
    assert_eq!(sub.callback_reference.notify_url, listener.url);
    // The secret made for it, shown in this answer only.
    let mut sub = sub;
    assert!(
        sub.signing_secret
            .take()
            .is_some_and(|s| s.starts_with("whsec_"))
    );
    // A resend with its clientCorrelator is the same subscription.
    let (again, resent) = face
        .create_notification_subscription(A, &doc)
        .await
        .created();
    assert_eq!(again, loc);
    assert_eq!(resent, sub, "no secret shown again");
    assert_eq!(
        face.get_notification_subscription(A, &id).await.ok(200),
        sub
    );
    // The same correlator on the seed face is another subscription (another profile).
    let mut seed_doc = docs::subscription_to(&listener.url, A, f);
    seed_doc.client_correlator = Some("c-1".to_owned());
    let (seed_loc, _) = face.create_subscription(A, &seed_doc).await.created();
    assert_ne!(last_segment(&seed_loc), id);
    face.delete_subscription(A, &last_segment(&seed_loc))
        .await
        .no_content();
    // Both faces list it, each in its own form.
    let list = face.list_notification_subscriptions(A).await.ok(200);
    assert_eq!(list.resource_url, urls.oma2012_subscriptions(A));
    assert!(list.chat_subscription.is_empty());
    assert_eq!(
        list.chat_notification_subscription,
        std::slice::from_ref(&sub)
    );
    let seed = face.list_subscriptions(A).await.ok(200);
    assert!(seed.chat_notification_subscription.is_empty());
    assert_eq!(
        seed.chat_subscription[0].resource_url,
        Some(urls.subscription(A, &id))
    );

    // Refresh: no expiry, new callbackData, which the next notification carries.
    let mut refreshed = doc.clone();
    refreshed.duration = None;
    refreshed.callback_reference.callback_data = Some("refreshed".to_owned());
    let now = face
        .put_notification_subscription(A, &id, &refreshed)
        .await
        .ok(200);
    assert_eq!(now.duration, Some(0));
    assert_eq!(
        now.callback_reference.callback_data.as_deref(),
        Some("refreshed")
    );
    face.create_one_to_one(B, A, &one_to_one_request(B, A, "hello"))
        .await
        .created();
    let got = listener.nth(1).await;
    assert_eq!(
        got.kind(),
        "chatSessionInvitationNotification",
        "{}",
        got.body
    );
    let inv: ChatSessionInvitationNotification = got.decode();
    assert_eq!(inv.callback_data.as_deref(), Some("refreshed"));
    // (2: the subject as a first message, see `profiles_follow_the_face`.)

    // Where notifications go is not refreshed: 400, the subscription unchanged.
    let mut moved = refreshed.clone();
    moved.callback_reference.notify_url = "http://127.0.0.1:10/elsewhere".to_owned();
    face.put_notification_subscription(A, &id, &moved)
        .await
        .fails(400, Some("SVC0002"));
    let mut other = refreshed.clone();
    other.client_correlator = Some("c-2".to_owned());
    face.put_notification_subscription(A, &id, &other)
        .await
        .fails(400, Some("SVC0002"));
    face.put_notification_subscription(A, "sub-0-nope", &refreshed)
        .await
        .fails(404, None);
    face.put_notification_subscription(B, &id, &refreshed)
        .await
        .fails(404, None);
    assert_eq!(
        face.get_notification_subscription(A, &id)
            .await
            .ok(200)
            .callback_reference
            .callback_data
            .as_deref(),
        Some("refreshed")
    );

    // A refresh that sets a duration arms its expiry: the callback is told, linked here.
    let mut short = refreshed.clone();
    short.duration = Some(1);
    face.put_notification_subscription(A, &id, &short)
        .await
        .ok(200);
    let got = listener.nth(3).await;
    assert_eq!(
        got.kind(),
        "subscriptionCancellationNotification",
        "{}",
        got.body
    );
    let gone: SubscriptionCancellationNotification = got.decode();
    assert_eq!(
        links(&gone.link),
        [("ChatNotificationSubscription", loc.as_str())]
    );
    face.get_notification_subscription(A, &id)
        .await
        .fails(404, None);

    // DELETE: 204, then gone on both faces.
    let (loc, _) = face
        .create_notification_subscription(A, &subscription_2012(&listener.url, A, f, None))
        .await
        .created();
    let id = last_segment(&loc);
    face.delete_notification_subscription(A, &id)
        .await
        .no_content();
    face.get_notification_subscription(A, &id)
        .await
        .fails(404, None);
    face.get_subscription(A, &id).await.fails(404, None);
    face.delete_notification_subscription(A, &id)
        .await
        .fails(404, None);
}

in_json_and_xml!(
    subscription_resource,
    subscription_resource_in_json,
    subscription_resource_in_xml
);

/// Which profile a subscriber gets follows the face it subscribed through: each user holds a
/// subscription on each face, and every change reaches both, with the seed's names and links
/// at one and OMA 2012's at the other. The session is started on the seed face, and the OMA
/// 2012 links are what the client follows to accept and to report.
async fn profiles_follow_the_face(wire: Wire) {
    let srv = Server::default_for_tests();
    let face = Face::new(wire, &srv);
    let urls = srv.urls();
    let f = face.fmt();
    let (a, a12) = (User::new(&face, A).await, User::new_2012(&face, A).await);
    let (b, b12) = (User::new(&face, B).await, User::new_2012(&face, B).await);

    // A one-to-one invitation.
    let sid = last_segment(
        &face
            .create_session(A, &docs::session("Lunch?", &[B]))
            .await
            .created()
            .0,
    );
    let seed: SessionInvitationNotification = b.next().await;
    assert_eq!(seed.link[0].href, urls.session(B, &sid));
    let inv: ChatSessionInvitationNotification = b12.next().await;
    assert_eq!(
        (inv.subject.as_str(), inv.originator_address.as_str()),
        ("Lunch?", A)
    );
    assert_eq!(inv.t_participant_address.as_deref(), Some(B));
    assert_eq!(inv.callback_data.as_deref(), Some(B));
    let session_url = urls.one_to_one_session(B, A, &sid);
    let status_url = urls.one_to_one_session_status(B, A, &sid);
    assert_eq!(
        links(&inv.link),
        [
            ("ChatSessionInformation", session_url.as_str()),
            ("ParticipantSessionStatus", status_url.as_str())
        ]
    );
    // As the GSMA gateway did, the subject reaches the 2012 invitee as a first message too
    // (no stored message: a messageId that names none, as OMA 2012's XSD requires one; linked
    // to the session and to a status a report can be PUT to). The seed subscriber keeps the
    // seed's invitation alone (its next notification is A's message below).
    let first: MessageNotification = b12.next().await;
    let subject_id = format!("subject-{sid}");
    assert_eq!(
        (
            first.sender_address.as_str(),
            first.session_id.as_str(),
            first.message_id.as_deref()
        ),
        (A, sid.as_str(), Some(subject_id.as_str()))
    );
    let message_url = urls.one_to_one_message(B, A, &sid, &subject_id);
    assert_eq!(
        first
            .chat_message
            .map(|m| (m.text, m.resource_url))
            .expect("its chatMessage"),
        ("Lunch?".to_owned(), Some(message_url.clone()))
    );
    // Told with its time, as every messageNotification is (GSMA clients read it).
    assert!(first.date_time.is_some(), "{:?}", first.date_time);
    let subject_status = urls.one_to_one_message_status(B, A, &sid, &subject_id);
    assert_eq!(
        links(&first.link),
        [
            ("MessageStatusReport", subject_status.as_str()),
            ("ChatSessionInformation", session_url.as_str())
        ]
    );
    // A GSMA client reports Displayed on every message it shows: taken, and nobody is told
    // (A's next notifications below are about the accept and the real message).
    let shown = MessageStatusReport {
        status: MessageStatus::Displayed,
    };
    // It reports to `link[0]`, as GSMA clients do.
    let put = send_doc("PUT", &first.link[0].href, f, &shown).await;
    assert_eq!(put.status, 204, "{}", put.body);
    // The links a notification gives are readable: the status (it was delivered, as the
    // notification that carried it; no report is kept) and the message itself.
    let status: MessageStatusReport = send_empty("GET", &first.link[0].href, f).await.decode();
    assert_eq!(status.status, MessageStatus::Delivered);
    let told: ChatMessage = send_empty("GET", &message_url, f).await.decode();
    // This face's chatMessage elements only (OMA 2012's XSD): its sender was the notification's.
    assert_eq!(
        (
            told.text.as_str(),
            told.sender_address.as_deref(),
            told.resource_url.as_deref()
        ),
        ("Lunch?", None, Some(message_url.as_str()))
    );
    // B accepts by following the link: the seed subscriber hears the participant's status,
    // the 2012 one the event OMA 2012 names.
    let put = send_doc("PUT", &inv.link[1].href, f, &docs::status(Connected)).await;
    assert_eq!(put.status, 204, "{}", put.body);
    let st: ParticipantStatusNotification = a.next().await;
    assert_eq!(st.participant[0].status, Some(Connected));
    let ev: ChatEventNotification = a12.next().await;
    assert_eq!(ev.event_type, EventType::Accepted);
    assert_eq!(
        links(&ev.link),
        [(
            "ChatSessionInformation",
            urls.one_to_one_session(A, B, &sid).as_str()
        )]
    );

    // A message, and its Displayed report sent to the link the 2012 notification gives.
    let msg = netapi_chat_api::ChatMessage {
        report_request: vec![MessageStatus::Displayed],
        ..docs::message("Noon?")
    };
    let mid = last_segment(&face.send_message(A, &sid, &msg).await.created().0);
    let m: MessageNotification = b.next().await;
    assert_eq!(
        m.chat_message.as_ref().expect("a message").resource_url,
        Some(urls.message(B, &sid, &mid))
    );
    let m12: MessageNotification = b12.next().await;
    assert_eq!(
        (
            m12.message_id.as_deref(),
            m12.chat_message.as_ref().map(|c| c.text.as_str())
        ),
        (Some(mid.as_str()), Some("Noon?"))
    );
    // Under this tree, the message is a resource (OMA 2012's `ChatMessage` link names it):
    // readable there by its recipient, in the face's format.
    let message_url = urls.one_to_one_message(B, A, &sid, &mid);
    assert_eq!(
        m12.chat_message.as_ref().expect("a message").resource_url,
        Some(message_url.clone())
    );
    let got = send_empty("GET", &message_url, f).await;
    assert_eq!(got.status, 200, "{}", got.body);
    let read: ChatMessage = got.decode();
    assert_eq!(
        (read.text.as_str(), read.resource_url.as_deref()),
        ("Noon?", Some(message_url.as_str()))
    );
    // OMA 2012's chatMessage is text, reportRequest, resourceURL: nothing of the seed's in
    // between, in the notification or the read (a client bound to OMA's XSD reads both).
    for (what, m) in [
        ("read", &read),
        ("notified", m12.chat_message.as_ref().unwrap()),
    ] {
        assert_eq!(
            (
                m.success_report,
                m.sender_address.as_deref(),
                m.date_time.as_deref(),
                m.client_correlator.as_deref()
            ),
            (None, None, None, None),
            "{what}: {m:?}"
        );
    }
    assert!(!got.body.contains("successReport"), "{}", got.body);
    let report_url = urls.one_to_one_message_status(B, A, &sid, &mid);
    assert_eq!(
        links(&m12.link),
        [("MessageStatusReport", report_url.as_str())]
    );
    let report = MessageStatusReport {
        status: MessageStatus::Displayed,
    };
    let put = send_doc("PUT", &m12.link[0].href, f, &report).await;
    assert_eq!(put.status, 204, "{}", put.body);
    let d: MessageDeliveryNotification = a.next().await;
    assert_eq!(d.status, MessageStatus::Displayed);
    let d12: MessageStatusNotification = a12.next().await;
    assert_eq!(
        (d12.status, d12.message_id.as_str()),
        (MessageStatus::Displayed, mid.as_str())
    );
    assert_eq!(
        d12.description.as_deref(),
        Some(format!("reported by {B}").as_str())
    );
    assert_eq!(
        links(&d12.link),
        [
            (
                "ChatMessage",
                urls.one_to_one_message(A, B, &sid, &mid).as_str()
            ),
            (
                "MessageStatusReport",
                urls.one_to_one_message_status(A, B, &sid, &mid).as_str()
            )
        ]
    );

    // The session ends: the same event in both profiles, each linking its own tree.
    face.end_session(A, &sid).await.no_content();
    let _: ChatEventNotification = a.next().await;
    let mine: ChatEventNotification = a12.next().await;
    assert_eq!(
        links(&mine.link),
        [(
            "ChatSessionInformation",
            urls.one_to_one_session(A, B, &sid).as_str()
        )]
    );
    let e: ChatEventNotification = b.next().await;
    assert_eq!(e.link[0].href, urls.session(B, &sid));
    let e12: ChatEventNotification = b12.next().await;
    assert_eq!(e12.event_type, EventType::SessionEnded);
    assert_eq!(
        links(&e12.link),
        [("ChatSessionInformation", session_url.as_str())]
    );

    // A group invitation: the whole participant list, and the links to accept or decline.
    let req = GroupChatSessionInformation {
        subject: Some("Team".to_owned()),
        participant: vec![docs::participant(B)],
        client_correlator: None,
        resource_url: None,
    };
    let gid = last_segment(&face.create_group(A, &req).await.created().0);
    let _: SessionInvitationNotification = b.next().await;
    // Its creator hears `Successful` in each profile, linked under each face's tree.
    let ok: ChatEventNotification = a.next().await;
    assert_eq!(ok.event_type, EventType::Successful);
    let ok12: ChatEventNotification = a12.next().await;
    assert_eq!(
        (ok12.event_type, links(&ok12.link)),
        (
            EventType::Successful,
            vec![(
                "GroupChatSessionInformation",
                urls.group_session(A, &gid).as_str()
            )]
        )
    );
    // ... and the roster, in each profile; the 2012 one links the group's tree.
    let _: ParticipantStatusNotification = a.next().await;
    let roster12: ParticipantStatusNotification = a12.next().await;
    assert_eq!(
        links(&roster12.link),
        [(
            "GroupChatSessionInformation",
            urls.group_session(A, &gid).as_str()
        )]
    );
    let g: GroupSessionInvitationNotification = b12.next().await;
    assert_eq!(
        (g.subject.as_str(), g.session_id.as_str()),
        ("Team", gid.as_str())
    );
    let who: Vec<_> = g
        .participant
        .iter()
        .map(|p| (p.address.as_str(), p.is_originator))
        .collect();
    assert_eq!(who, [(A, Some(true)), (B, Some(false))]);
    let mine = urls.group_participant(B, &gid, B);
    let mine_status = urls.group_participant_status(B, &gid, B);
    let group_url = urls.group_session(B, &gid);
    assert_eq!(
        links(&g.link),
        [
            ("ParticipantInformation", mine.as_str()),
            ("ParticipantInformationStatus", mine_status.as_str()),
            ("GroupChatSessionInformation", group_url.as_str())
        ]
    );
    let put = send_doc("PUT", &g.link[1].href, f, &docs::status(Connected)).await;
    assert_eq!(put.status, 204, "{}", put.body);
    let _: ParticipantStatusNotification = a.next().await;
    let st: ParticipantStatusNotification = a12.next().await;
    // OMA 2012 tells the whole roster, who changed first, `yourown` on the reader's entry.
    let roster: Vec<_> = st
        .participant
        .iter()
        .map(|e| (e.address.as_str(), e.status, e.yourown))
        .collect();
    assert_eq!(
        roster,
        [
            (B, Some(Connected), Some(false)),
            (A, Some(Connected), Some(true))
        ]
    );
    assert_eq!(
        links(&st.participant[0].link),
        [
            (
                "ParticipantInformation",
                urls.group_participant(A, &gid, B).as_str()
            ),
            (
                "ParticipantInformationStatus",
                urls.group_participant_status(A, &gid, B).as_str()
            )
        ]
    );
    assert_eq!(
        links(&st.link),
        [(
            "GroupChatSessionInformation",
            urls.group_session(A, &gid).as_str()
        )]
    );
}

in_json_and_xml!(
    profiles_follow_the_face,
    profiles_follow_the_face_in_json,
    profiles_follow_the_face_in_xml
);

/// The profile is stored with the subscription: after a restart (SIGKILL, no clean stop) a
/// subscriber of the 2012 face is still told in the OMA 2012 profile, and its subscription
/// still reads on that face.
#[tokio::test]
async fn the_profile_survives_a_restart() {
    let srv = Server::default_for_tests();
    let listener = Listener::start().await;
    let face = Face::new(Wire::Json, &srv);
    let (loc, _) = face
        .create_notification_subscription(
            A,
            &subscription_2012(&listener.url, A, Format::Xml, None),
        )
        .await
        .created();
    let id = last_segment(&loc);
    let dir = srv.kill();
    let srv = Server::restart(dir, &[]);
    let face = Face::new(Wire::Json, &srv);
    let sub = face.get_notification_subscription(A, &id).await.ok(200);
    assert_eq!(sub.callback_reference.notify_url, listener.url);
    let sid = last_segment(
        &face
            .create_one_to_one(B, A, &one_to_one_request(B, A, "still there?"))
            .await
            .created()
            .0,
    );
    let got = listener.nth(1).await;
    assert_eq!(
        got.kind(),
        "chatSessionInvitationNotification",
        "{}",
        got.body
    );
    let inv: ChatSessionInvitationNotification = got.decode();
    assert_eq!(inv.session_id, sid);
    assert_eq!(inv.link[0].href, srv.urls().one_to_one_session(A, B, &sid));
}

/// `isComposing` on both faces (OMA 2012 §2.3): POSTed to the 2012 messages collection (201,
/// the collection named) or to the seed face's `isComposing` (204), it reaches the other
/// connected participant as a `messageNotification` carrying `isComposing` (no `chatMessage`,
/// no `messageId`), in each subscriber's profile, and is stored nowhere: the session's message
/// history stays empty. An invitee who has not accepted may not, nor anyone with nobody else
/// connected (as for a message); a state other than `active`/`idle` is a 400.
async fn is_composing(wire: Wire) {
    let srv = Server::default_for_tests();
    let face = Face::new(wire, &srv);
    let urls = srv.urls();
    let (a, b) = (User::new(&face, A).await, User::new_2012(&face, B).await);
    let (loc, _) = face
        .create_one_to_one(A, B, &one_to_one_request(A, B, "Lunch?"))
        .await
        .created();
    let sid = last_segment(&loc);
    let _: ChatSessionInvitationNotification = b.next().await;
    let _subject: MessageNotification = b.next().await;
    face.put_one_to_one_status(B, A, &sid, Connected)
        .await
        .no_content();
    let _: ParticipantStatusNotification = a.next().await;

    // A is typing (the 2012 face): 201, the collection named; B hears it in the 2012 profile.
    let typing = netapi_chat_api::IsComposing {
        state: Some("active".to_owned()),
        status: None,
        last_active: None,
        content_type: Some("text/plain".to_owned()),
        refresh: Some(30),
    };
    let (loc, r) = face.send_one_to_one(A, B, &sid, &typing).await.created();
    assert_eq!(loc, urls.one_to_one_messages(A, B, &sid));
    assert_eq!(r.resource_url, loc);
    let n: MessageNotification = b.next().await;
    assert_eq!(
        (n.sender_address.as_str(), n.session_id.as_str()),
        (A, sid.as_str())
    );
    // No message, but a messageId all the same (OMA 2012's XSD requires one), naming none.
    assert_eq!(n.chat_message, None);
    let indication_id = n.message_id.clone().expect("a messageId");
    assert!(indication_id.starts_with("composing-"), "{indication_id}");
    assert_eq!(n.is_composing, Some(typing.clone()));
    assert_eq!(
        links(&n.link),
        [(
            "ChatSessionInformation",
            urls.one_to_one_session(B, A, &sid).as_str()
        )]
    );

    // Typing again within the second is refused (one indication a second per sender), but
    // the idle that ends it is not: B must not see A typing until the refresh runs out.
    face.send_one_to_one(A, B, &sid, &typing)
        .await
        .fails(429, Some("POL2005"));
    let stopped = netapi_chat_api::IsComposing {
        state: Some("idle".to_owned()),
        status: None,
        ..typing.clone()
    };
    face.send_one_to_one(A, B, &sid, &stopped).await.created();
    let n: MessageNotification = b.next().await;
    assert_eq!(n.is_composing, Some(stopped));

    // B stops (the seed face's resource): 204; A hears it in the seed profile, with the
    // default refresh filled in.
    let idle = netapi_chat_api::IsComposing {
        state: Some("IDLE".to_owned()),
        status: None,
        last_active: Some("2026-12-03T12:00:00Z".to_owned()),
        content_type: None,
        refresh: None,
    };
    // A `lastActive` that is no date-time is refused (OMA types it `xsd:dateTime`, the spec
    // `format: date-time`: neither the typed client nor the XSD can say it, so it is sent as
    // a client bound to neither would).
    let f = face.fmt();
    let url = urls.is_composing(B, &sid);
    let raw = |last_active: &str| {
        docs::encode(
            f,
            &netapi_chat_api::IsComposing {
                last_active: Some(last_active.to_owned()),
                ..idle.clone()
            },
        )
    };
    let media = [("content-type", f.media_type()), ("accept", f.media_type())];
    send("POST", &url, &media, Some(&raw("yesterday")))
        .await
        .assert_error(400, "SVC0002", f);
    // RFC 3339 allows `t`, `z` and a space where typed and XSD-bound readers do not: A hears
    // it in the spelling they all read, the time unchanged.
    let odd = send("POST", &url, &media, Some(&raw("2026-12-03 12:00:00.5z"))).await;
    assert_eq!(odd.status, 204, "{}", odd.body);
    let n: MessageNotification = a.next().await;
    let got = n.is_composing.expect("an isComposing");
    assert_eq!(
        (
            got.state.as_deref(),
            got.refresh,
            got.last_active.as_deref()
        ),
        (Some("idle"), Some(60), Some("2026-12-03T12:00:00.5Z"))
    );
    assert_eq!(
        links(&n.link),
        [("ChatSessionInformation", urls.session(A, &sid).as_str())]
    );

    // Stored nowhere: no message in the session's history.
    assert!(
        face.list_messages(A, &sid)
            .await
            .ok(200)
            .chat_message
            .is_empty()
    );

    // Refusals.
    let bad = netapi_chat_api::IsComposing {
        state: Some("typing".to_owned()),
        status: None,
        ..typing.clone()
    };
    face.indicate_composing(A, &sid, &bad)
        .await
        .fails(400, Some("SVC0002"));
    // The GSMA spelling `status` is read as `state` (a bad one is named as such), and a body
    // with both, or neither, is refused before anything is told (in JSON: the XML face's
    // harness validates what it sends against the XSD, where the choice is the schema's).
    let gsma = netapi_chat_api::IsComposing {
        state: None,
        status: Some("typing".to_owned()),
        ..typing.clone()
    };
    face.indicate_composing(A, &sid, &gsma)
        .await
        .fails(400, Some("SVC0002"));
    let broken: &[(Option<&str>, Option<&str>)] = match wire {
        Wire::Json => &[(Some("active"), Some("active")), (None, None)],
        _ => &[],
    };
    for &(state, status) in broken {
        let body = netapi_chat_api::IsComposing {
            state: state.map(str::to_owned),
            status: status.map(str::to_owned),
            ..typing.clone()
        };
        face.indicate_composing(A, &sid, &body)
            .await
            .fails(400, Some("SVC0002"));
    }
    let pending = last_segment(
        &face
            .create_one_to_one(A, C, &one_to_one_request(A, C, "hi"))
            .await
            .created()
            .0,
    );
    face.send_one_to_one(C, A, &pending, &typing)
        .await
        .fails(403, Some("POL1012"));
    // Nobody else connected, as for a message: the session being set up (C invited) is
    // `POL1012` for its originator too; once B has left, `409 SVC0001` on both faces (before,
    // each was taken and told nobody).
    face.send_one_to_one(A, C, &pending, &typing)
        .await
        .fails(403, Some("POL1012"));
    face.set_status(B, &sid, B, ParticipantStatus::Disconnected)
        .await
        .ok(200);
    face.send_one_to_one(A, B, &sid, &typing)
        .await
        .fails(409, Some("SVC0001"));
    face.indicate_composing(A, &sid, &typing)
        .await
        .fails(409, Some("SVC0001"));
    face.indicate_composing("tel:+15559999999", &sid, &typing)
        .await
        .fails(404, None);
}

in_json_and_xml!(is_composing, is_composing_in_json, is_composing_in_xml);

/// An `isComposing` is not delivered past its `refresh`: while B's callback fails, A's
/// indication (refresh 1 s) waits at the head of B's queue; once that second has passed (the
/// test sleeps past it: a precondition, not a measurement) the queue drops it, and what B
/// receives when its callback recovers is A's next message, not the stale indication.
#[tokio::test]
async fn a_lapsed_is_composing_is_dropped_not_delivered_late() {
    let srv = Server::start(&[
        ("NETAPI_CHAT_RETRY_SCHEDULE", "0,100ms,1h"),
        ("NETAPI_CHAT_DELIVERY_MAX_BACKOFF", "200ms"),
    ]);
    let face = Face::new(Wire::Json, &srv);
    let b = User::new(&face, B).await;
    let sid = support::chat::connected_session(&srv, A, &docs::session("s", &[B])).await;
    let _: SessionInvitationNotification = b.next().await;
    b.listener.set_status(503);
    let typing = docs::typing(1);
    face.indicate_composing(A, &sid, &typing).await.no_content();
    support::within_20s(std::time::Duration::from_millis(20), async || {
        match b.listener.refused_ids().is_empty() {
            true => Err("the isComposing not attempted yet".to_owned()),
            false => Ok(()),
        }
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    support::chat::send_message(&srv, A, &sid, &docs::message("after the pause")).await;
    b.listener.set_status(204);
    let m: MessageNotification = b.next().await;
    assert_eq!(
        m.chat_message.map(|c| c.text).as_deref(),
        Some("after the pause"),
        "the lapsed isComposing was dropped"
    );
    assert_eq!(m.is_composing, None);
}

/// An isComposing that waited in a notification channel past its `refresh` is not handed to the
/// next poll (as a callback does not send it late): the poll gets the message sent after it,
/// and no isComposing. One polled within its `refresh` is handed (without that, a channel
/// dropping every isComposing passed this test: an outside review).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapsed_is_composing_is_not_handed_from_a_channel() {
    let srv = Server::default_for_tests();
    let face = Face::new(Wire::Json, &srv);
    let (callback, channel_url) = face
        .channel(B, netapi_chat_api::ChannelType::LongPolling)
        .await;
    let doc = docs::subscription_to(&callback, B, Format::Json);
    face.create_subscription(B, &doc).await.created();
    let sid = support::chat::connected_session(&srv, A, &docs::session("s", &[B])).await;
    let poll = |url: String| async move {
        let a = support::send_empty("POST", &url, Format::Json).await;
        assert_eq!(a.status, 200, "poll: {}", a.body);
        support::channel::answered(&a)
    };
    // The invitation (and the session's own notices) taken, acknowledged by the next poll.
    assert!(!poll(channel_url.clone()).await.is_empty());
    let typing = docs::typing;
    // Polled in time: handed.
    face.indicate_composing(A, &sid, &typing(30))
        .await
        .no_content();
    let list = poll(channel_url.clone()).await;
    assert!(
        list.iter().any(|(_, n)| n
            .message_notification
            .as_ref()
            .and_then(|m| m.is_composing.as_ref())
            .is_some_and(|c| c.state.as_deref() == Some("active"))),
        "an isComposing within its refresh is handed: {list:?}"
    );
    // Lapsed: not (a second later: one isComposing a second per sender).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    face.indicate_composing(A, &sid, &typing(1))
        .await
        .no_content();
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    support::chat::send_message(&srv, A, &sid, &docs::message("after the pause")).await;
    let list = poll(channel_url).await;
    let messages: Vec<&MessageNotification> = list
        .iter()
        .filter_map(|(_, n)| n.message_notification.as_ref())
        .collect();
    assert!(
        messages.iter().all(|m| m.is_composing.is_none()),
        "a lapsed isComposing was handed: {list:?}"
    );
    assert_eq!(
        messages
            .iter()
            .filter_map(|m| m.chat_message.as_ref().map(|c| c.text.as_str()))
            .collect::<Vec<_>>(),
        ["after the pause"]
    );
}

/// The session id OMA 2012 reserves for ad hoc chats.
const ADHOC: &str = "adhoc";

/// OMA 2012 ad hoc one-to-one chat (reference §1.3), as the GSMA gateway's clients used it: A
/// POSTs a `chatMessage` to `oneToOne/{B}/adhoc/messages` with no session set up (201 + a
/// `resourceReference` to the message's status under `…/adhoc/`); A is told
/// `chatEventNotification` `Accepted` with `sessionId` `adhoc`; B gets the message with no
/// invitation first (`sessionId` `adhoc` for its 2012 subscription, the real id for its seed
/// one); B reports `Delivered` and `Displayed` with PUT on `…/adhoc/messages/{id}/status`,
/// A reads the status there; B answers on its own `oneToOne/{A}/adhoc/messages` (the same
/// session: no second `Accepted`); `isComposing` goes to the ad hoc collection too; the seed
/// face reaches the same session by its id.
async fn adhoc_chat(wire: Wire) {
    let srv = Server::default_for_tests();
    let face = Face::new(wire, &srv);
    let urls = srv.urls();
    let f = face.fmt();
    let a12 = User::new_2012(&face, A).await;
    let (b, b12) = (User::new(&face, B).await, User::new_2012(&face, B).await);

    // The subscription grants ad hoc chats.
    let listener = Listener::start().await;
    let (_, granted) = face
        .create_notification_subscription(C, &subscription_2012(&listener.url, C, f, None))
        .await
        .created();
    assert_eq!(
        (
            granted.adhoc_chat_supported,
            granted.confirmed_chat_supported
        ),
        (Some(true), Some(true))
    );

    // A writes to B: no session, no invitation.
    let msg = netapi_chat_api::ChatMessage {
        report_request: vec![MessageStatus::Delivered, MessageStatus::Displayed],
        ..docs::message("Hi Bob")
    };
    let (loc, r) = face.send_one_to_one(A, B, ADHOC, &msg).await.created();
    assert_eq!(r.resource_url, loc);
    let mid = loc.rsplit('/').nth(1).expect("message id").to_owned();
    assert_eq!(loc, urls.one_to_one_message_status(A, B, ADHOC, &mid));
    let ev: ChatEventNotification = a12.next().await;
    assert_eq!(
        (ev.event_type, ev.session_id.as_str()),
        (EventType::Accepted, ADHOC)
    );
    assert_eq!(
        links(&ev.link),
        [(
            "ChatSessionInformation",
            urls.one_to_one_session(A, B, ADHOC).as_str()
        )]
    );
    // B's seed subscription names the session the server opened; its 2012 one says `adhoc`.
    let seed: MessageNotification = b.next().await;
    let sid = seed.session_id.clone();
    assert!(sid.starts_with("sess-"), "{sid}");
    assert_eq!(seed.message_id.as_deref(), Some(mid.as_str()));
    let m: MessageNotification = b12.next().await;
    assert_eq!(
        (
            m.session_id.as_str(),
            m.message_id.as_deref(),
            m.sender_address.as_str()
        ),
        (ADHOC, Some(mid.as_str()), A)
    );
    assert_eq!(m.chat_message.expect("a message").text, "Hi Bob");
    let report_url = urls.one_to_one_message_status(B, A, ADHOC, &mid);
    assert_eq!(
        links(&m.link),
        [("MessageStatusReport", report_url.as_str())]
    );

    // B reports Delivered by the link, then Displayed; A hears both, linked under adhoc/.
    let report = MessageStatusReport {
        status: MessageStatus::Delivered,
    };
    let put = send_doc("PUT", &m.link[0].href, f, &report).await;
    assert_eq!(put.status, 204, "{}", put.body);
    let d: MessageStatusNotification = a12.next().await;
    assert_eq!(
        (d.status, d.message_id.as_str()),
        (MessageStatus::Delivered, mid.as_str())
    );
    assert_eq!(
        links(&d.link),
        [
            (
                "ChatMessage",
                urls.one_to_one_message(A, B, ADHOC, &mid).as_str()
            ),
            (
                "MessageStatusReport",
                urls.one_to_one_message_status(A, B, ADHOC, &mid).as_str()
            )
        ]
    );
    // The sender reads its message by that link (the ad hoc session found, as for a status).
    let got = send_empty("GET", &d.link[0].href, f).await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(
        got.decode::<ChatMessage>().resource_url.as_deref(),
        Some(d.link[0].href.as_str())
    );
    face.put_one_to_one_mstatus(B, A, ADHOC, &mid, MessageStatus::Displayed)
        .await
        .no_content();
    let d: MessageStatusNotification = a12.next().await;
    assert_eq!(d.status, MessageStatus::Displayed);
    let st = face.get_one_to_one_mstatus(A, B, ADHOC, &mid).await.ok(200);
    assert_eq!(st.status, MessageStatus::Displayed);
    let st = face.get_one_to_one_mstatus(B, A, ADHOC, &mid).await.ok(200);
    assert_eq!(st.status, MessageStatus::Displayed);

    // B answers on its own ad hoc collection: the same session, A told no second Accepted.
    let (loc, _) = face
        .send_one_to_one(B, A, ADHOC, &docs::message("Hi Alice"))
        .await
        .created();
    let reply = loc.rsplit('/').nth(1).expect("message id").to_owned();
    let m: MessageNotification = a12.next().await;
    assert_eq!(
        (m.session_id.as_str(), m.message_id.as_deref()),
        (ADHOC, Some(reply.as_str()))
    );
    let texts: Vec<String> = face
        .list_messages(A, &sid)
        .await
        .ok(200)
        .chat_message
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(texts, ["Hi Bob", "Hi Alice"]);

    // isComposing on the ad hoc collection: 201 naming it; B hears it with `sessionId` adhoc.
    let typing = netapi_chat_api::IsComposing {
        state: Some("active".to_owned()),
        status: None,
        last_active: None,
        content_type: Some("text/plain".to_owned()),
        refresh: Some(30),
    };
    let (loc, _) = face.send_one_to_one(A, B, ADHOC, &typing).await.created();
    assert_eq!(loc, urls.one_to_one_messages(A, B, ADHOC));
    let n: MessageNotification = b12.until().await;
    assert_eq!(n.session_id, ADHOC);
    assert_eq!(
        n.is_composing.and_then(|c| c.state),
        Some("active".to_owned())
    );

    // The seed face reaches the same session by its id; A's 2012 subscription says adhoc.
    face.send_message(B, &sid, &docs::message("from the seed face"))
        .await
        .created();
    let m: MessageNotification = a12.next().await;
    assert_eq!(m.session_id, ADHOC);
    assert_eq!(
        m.chat_message.map(|c| c.text).as_deref(),
        Some("from the seed face")
    );

    // The session link the ad hoc notifications carry resolves: the pair's open ad hoc
    // session, under `…/adhoc`.
    let open = face.get_one_to_one(A, B, ADHOC).await.ok(200);
    assert_eq!(
        (open.resource_url, open.status),
        (
            Some(urls.one_to_one_session(A, B, ADHOC)),
            Some(ParticipantStatus::Connected)
        )
    );
    // OMA 2012 makes `subject` mandatory: an ad hoc chat, which has none, shows it empty.
    assert_eq!(open.subject.as_deref(), Some(""));

    // Refusals: an ad hoc chat with oneself, or with what is no user address (it would open
    // a chat with nobody: 400 SVC0004, as for a create); a status of a pair with no ad hoc
    // chat (404 naming the URL asked for, never opening one), and its session.
    face.send_one_to_one(A, A, ADHOC, &docs::message("me"))
        .await
        .fails(400, Some("SVC0002"));
    for nobody in ["bob", "tel:abc", " "] {
        face.send_one_to_one(A, nobody, ADHOC, &docs::message("lost?"))
            .await
            .fails(400, Some("SVC0004"));
    }
    let missing = face.get_one_to_one_mstatus(A, C, ADHOC, &mid).await;
    let text = docs::rendered(missing.error.as_ref().expect("a requestError"));
    assert!(
        text.contains(&face.one_to_one_mstatus_url(A, C, ADHOC, &mid)),
        "{text}"
    );
    missing.fails(404, Some("SVC2008"));
    face.put_one_to_one_mstatus(C, A, ADHOC, &mid, MessageStatus::Displayed)
        .await
        .fails(404, Some("SVC2008"));
    face.get_one_to_one(A, C, ADHOC)
        .await
        .fails(404, Some("SVC2008"));
    // Nothing was opened for A and C: the pair's first message is the one that does.
    face.send_one_to_one(A, C, ADHOC, &docs::message("Hi Carol"))
        .await
        .created();
    let ev: ChatEventNotification = a12.next().await;
    assert_eq!(
        (ev.event_type, ev.session_id.as_str()),
        (EventType::Accepted, ADHOC)
    );
}

in_json_and_xml!(adhoc_chat, adhoc_chat_in_json, adhoc_chat_in_xml);

/// The server tears an ad hoc chat down once it carried no message for
/// `NETAPI_CHAT_ADHOC_IDLE_SECS`: both are told `SessionEnded` (`sessionId` adhoc on the 2012
/// face), its statuses are gone, and the next message opens a new session (`Accepted` again).
async fn adhoc_idle(wire: Wire) {
    let srv = Server::start(&[("NETAPI_CHAT_ADHOC_IDLE_SECS", "0.3")]);
    let face = Face::new(wire, &srv);
    let (a12, b12) = (
        User::new_2012(&face, A).await,
        User::new_2012(&face, B).await,
    );
    let loc = face
        .send_one_to_one(A, B, ADHOC, &docs::message("brief"))
        .await
        .created()
        .0;
    let mid = loc.rsplit('/').nth(1).expect("message id").to_owned();
    let _: ChatEventNotification = a12.next().await;
    let _: MessageNotification = b12.next().await;
    for u in [&a12, &b12] {
        let e: ChatEventNotification = u.next().await;
        assert_eq!(
            (e.event_type, e.session_id.as_str()),
            (EventType::SessionEnded, ADHOC)
        );
        // Its text names the session as `sessionId` does, not by the id it has elsewhere.
        let text = e.event_description.unwrap_or_default();
        assert!(text.contains(ADHOC) && !text.contains("sess-"), "{text}");
    }
    face.get_one_to_one_mstatus(A, B, ADHOC, &mid)
        .await
        .fails(404, Some("SVC2008"));
    face.send_one_to_one(B, A, ADHOC, &docs::message("again"))
        .await
        .created();
    let e: ChatEventNotification = b12.next().await;
    assert_eq!(e.event_type, EventType::Accepted);
    let m: MessageNotification = a12.next().await;
    assert_eq!(m.session_id, ADHOC);
}

in_json_and_xml!(adhoc_idle, adhoc_idle_in_json, adhoc_idle_in_xml);

/// Ad hoc messages (nobody agreed to receive them) cannot get their recipient's subscription
/// disabled while its callback is down: they fill at most half its backlog cap, then the
/// sender is refused `403 POL2008` and the subscription stays; once the callback has taken
/// what waited, the sender may write again. Before, 320 ad hoc messages against a cap of 300
/// disabled it (an outside review), and its OMA client, seeing `404`, subscribed again into
/// the same flood.
async fn adhoc_flood(wire: Wire) {
    let srv = Server::start(&[
        ("NETAPI_CHAT_DELIVERY_BACKLOG", "20"),
        // Tried again every 200 ms at most, so the callback back is noticed at once.
        ("NETAPI_CHAT_RETRY_SCHEDULE", "0,100ms,1h"),
        ("NETAPI_CHAT_DELIVERY_MAX_BACKOFF", "200ms"),
    ]);
    let face = Face::new(wire, &srv);
    let listener = Listener::start().await;
    let (location, _) = face
        .create_notification_subscription(B, &subscription_2012(&listener.url, B, face.fmt(), None))
        .await
        .created();
    let sub_id = location.rsplit('/').next().expect("id").to_owned();
    listener.set_down(true);
    let mut sent = 0;
    let refused = loop {
        let a = face
            .send_one_to_one(A, B, ADHOC, &docs::message(&format!("m{sent}")))
            .await;
        if a.status != 201 {
            break a;
        }
        sent += 1;
        assert!(sent <= 20, "never refused");
    };
    refused.fails(403, Some("POL2008"));
    assert_eq!(sent, 10, "half the cap of 20");
    // Nor may another sender open an ad hoc chat with B meanwhile (an isComposing opens one,
    // and closing it tells B `SessionEnded`: an open-and-close loop filled the backlog too).
    let typing = docs::typing(30);
    face.send_one_to_one(C, B, ADHOC, &typing)
        .await
        .fails(403, Some("POL2008"));
    // Nor does one through A's open ad hoc chat add to it.
    face.send_one_to_one(A, B, ADHOC, &typing)
        .await
        .fails(403, Some("POL2008"));
    face.get_notification_subscription(B, &sub_id).await.ok(200);
    // The callback back: it gets the ten, and the sender may write again.
    listener.set_down(false);
    listener.wait_for(10).await;
    support::within_20s(std::time::Duration::from_millis(50), async || {
        let a = face
            .send_one_to_one(A, B, ADHOC, &docs::message("after"))
            .await;
        match a.status {
            201 => Ok(()),
            s => Err(format!("{s}: {:?}", a.error)),
        }
    })
    .await;
    face.get_notification_subscription(B, &sub_id).await.ok(200);
}

in_json_and_xml!(adhoc_flood, adhoc_flood_in_json, adhoc_flood_in_xml);

/// A one-to-one participant who leaves on the seed face and re-joins: its OMA 2012 peer is
/// told the leave as a `participantStatusNotification` (`Disconnected`) and the re-join as
/// `chatEventNotification` `Accepted` (README "OMA 2012 face"), the originator's as the
/// invitee's. Before, the originator's re-join came as a second `participantStatusNotification`
/// (`Connected`): it was never invited, so nothing said "accepted" (the notifications review).
/// While either has left, the session reads `Disconnected` to both on the 2012 face (its
/// messages are refused then); before, it read `Connected` when the originator had left.
async fn a_seed_leave_and_rejoin_is_told_to_the_2012_peer(wire: Wire) {
    let srv = Server::default_for_tests();
    let face = Face::new(wire, &srv);
    let (a12, b12) = (
        User::new_2012(&face, A).await,
        User::new_2012(&face, B).await,
    );
    let sid = support::chat::connected_session(&srv, A, &docs::session("s", &[B])).await;
    let _: ChatEventNotification = a12.until().await;
    let _: MessageNotification = b12.until().await;
    for (leaver, peer) in [(A, &b12), (B, &a12)] {
        face.set_status(leaver, &sid, leaver, ParticipantStatus::Disconnected)
            .await
            .ok(200);
        let st: ParticipantStatusNotification = peer.next().await;
        assert_eq!(
            (st.participant[0].address.as_str(), st.participant[0].status),
            (leaver, Some(ParticipantStatus::Disconnected))
        );
        let reads = async |expected| {
            for (viewer, other) in [(A, B), (B, A)] {
                let seen = face.get_one_to_one(viewer, other, &sid).await.ok(200);
                assert_eq!(
                    seen.status,
                    Some(expected),
                    "{viewer} reads the session, {leaver} having left or come back"
                );
            }
        };
        reads(ParticipantStatus::Disconnected).await;
        face.set_status(leaver, &sid, leaver, Connected)
            .await
            .ok(200);
        let back: ChatEventNotification = peer.next().await;
        assert_eq!(back.event_type, EventType::Accepted, "{leaver} re-joined");
        reads(Connected).await;
    }
}

in_json_and_xml!(
    a_seed_leave_and_rejoin_is_told_to_the_2012_peer,
    a_seed_leave_and_rejoin_is_told_to_the_2012_peer_in_json,
    a_seed_leave_and_rejoin_is_told_to_the_2012_peer_in_xml
);

/// OMA 2012: `Delivered` is the server's. A message that reaches the recipient's application
/// through its OMA 2012 subscription is recorded `Delivered` without any report: its sender,
/// which asked, is told and reads it, in a confirmed chat and in an ad hoc one. The recipient's
/// own `Delivered` after that, and any report repeated, are taken (`204`) and change nothing;
/// `Displayed` still moves on. A recipient subscribed on the seed face confirms for itself
/// (seed 7.1.10): nothing is recorded for it. Before, a 2012 recipient that never reported
/// left its sender without `Delivered`, and a report repeated was `409`.
async fn delivered_is_the_servers(wire: Wire) {
    use MessageStatus::{Delivered, Displayed, Sent};
    let srv = Server::default_for_tests();
    let face = Face::new(wire, &srv);
    let (a, b) = (
        User::new_2012(&face, A).await,
        User::new_2012(&face, B).await,
    );
    let sid = support::chat::connected_session(&srv, A, &docs::session("s", &[B])).await;
    let _: MessageNotification = b.until().await;
    let asking = ChatMessage {
        report_request: vec![Delivered, Displayed],
        ..docs::message("Ping")
    };
    for session in [sid.as_str(), ADHOC] {
        let (loc, _) = face.send_one_to_one(A, B, session, &asking).await.created();
        let mid = loc.rsplit('/').nth(1).expect("message id").to_owned();
        let m: MessageNotification = b.until().await;
        assert_eq!(m.message_id.as_deref(), Some(mid.as_str()));
        // Told without B reporting anything.
        let d: MessageStatusNotification = a.until().await;
        assert_eq!(
            (d.status, d.message_id.as_str()),
            (Delivered, mid.as_str()),
            "in {session}"
        );
        let status = face.get_one_to_one_mstatus(A, B, session, &mid).await;
        assert_eq!(status.ok(200).status, Delivered);
        // B's own Delivered, twice: taken, nothing told.
        let told = a.listener.all().len();
        for _ in 0..2 {
            face.put_one_to_one_mstatus(B, A, session, &mid, Delivered)
                .await
                .no_content();
        }
        // Displayed moves on and is told once; repeated, or Delivered after it: taken.
        face.put_one_to_one_mstatus(B, A, session, &mid, Displayed)
            .await
            .no_content();
        let d: MessageStatusNotification = a.next().await;
        assert_eq!((d.status, d.message_id.as_str()), (Displayed, mid.as_str()));
        for again in [Displayed, Delivered] {
            face.put_one_to_one_mstatus(B, A, session, &mid, again)
                .await
                .no_content();
        }
        a.listener
            .assert_count_stays(told + 1, std::time::Duration::from_millis(300))
            .await;
    }

    // A group message: every 2012 recipient's delivery is recorded (in one change when they
    // come together), and the sender is told once per recipient.
    const D: &str = "tel:+15551230004";
    let d = User::new_2012(&face, D).await;
    let group = support::chat::connected_session(&srv, A, &docs::session("g", &[B, D])).await;
    let (loc, _) = face.send_group(A, &group, &asking).await.created();
    let mid = loc.rsplit('/').nth(1).expect("message id").to_owned();
    for u in [&b, &d] {
        let m: MessageNotification = u.until().await;
        assert_eq!(m.message_id.as_deref(), Some(mid.as_str()));
    }
    let mut told = Vec::new();
    for _ in 0..2 {
        let n: MessageStatusNotification = a.until().await;
        assert_eq!((n.status, n.message_id.as_str()), (Delivered, mid.as_str()));
        told.push(n.description.unwrap_or_default());
    }
    told.sort();
    assert_eq!(
        told,
        [format!("reported by {B}"), format!("reported by {D}")]
    );
    let status = face.get_group_mstatus(A, &group, &mid).await;
    assert_eq!(status.ok(200).status, Delivered);

    // A recipient on the seed face confirms for itself: its sender reads Sent until then.
    let c = User::new(&face, C).await;
    let sid = support::chat::connected_session(&srv, A, &docs::session("s", &[C])).await;
    let (loc, _) = face.send_one_to_one(A, C, &sid, &asking).await.created();
    let mid = loc.rsplit('/').nth(1).expect("message id").to_owned();
    let m: MessageNotification = c.until().await;
    assert_eq!(m.message_id.as_deref(), Some(mid.as_str()));
    let told = a.listener.all().len();
    a.listener
        .assert_count_stays(told, std::time::Duration::from_millis(300))
        .await;
    let status = face.get_one_to_one_mstatus(A, C, &sid, &mid).await;
    assert_eq!(status.ok(200).status, Sent);
}

in_json_and_xml!(
    delivered_is_the_servers,
    delivered_is_the_servers_in_json,
    delivered_is_the_servers_in_xml
);

/// What was delivered before a graceful stop is recorded `Delivered`: the receipts still
/// waiting when the signal comes are recorded before the store closes, and a notification's
/// outbox row is forgotten only with its record (one left over is sent again after the
/// restart, and recorded then). Before, those waiting were dropped with the process: an
/// outside review saw 750 of 2,000 stay `Sent` for good after a SIGTERM 0.3 s after a burst
/// to a group of 20.
#[tokio::test]
async fn receipts_waiting_at_a_graceful_stop_are_recorded() {
    const MEMBERS: [&str; 8] = [
        "tel:+15551231001",
        "tel:+15551231002",
        "tel:+15551231003",
        "tel:+15551231004",
        "tel:+15551231005",
        "tel:+15551231006",
        "tel:+15551231007",
        "tel:+15551231008",
    ];
    const MESSAGES: usize = 40;
    let srv = Server::default_for_tests();
    let face = Face::new(Wire::Json, &srv);
    let mut members = Vec::new();
    for m in MEMBERS {
        members.push(User::new_2012(&face, m).await);
    }
    let group = support::chat::connected_session(&srv, A, &docs::session("g", &MEMBERS)).await;
    let mut mids = Vec::new();
    for i in 0..MESSAGES {
        let (loc, _) = face
            .send_group(A, &group, &docs::message(&format!("m{i}")))
            .await
            .created();
        mids.push(loc.rsplit('/').nth(1).expect("message id").to_owned());
    }
    // Every member's callback has taken every message: then the signal.
    for u in &members {
        support::within_20s(std::time::Duration::from_millis(5), async || {
            let got = u.listener.all();
            let n = got
                .iter()
                .filter(|r| r.kind() == "messageNotification")
                .count();
            if n >= MESSAGES {
                Ok(())
            } else {
                Err(format!("{n} messages at {}", u.addr))
            }
        })
        .await;
    }
    let srv = Server::restart(srv.terminate(), &[]);
    let face = Face::new(Wire::Json, &srv);
    for mid in &mids {
        support::within_20s(std::time::Duration::from_millis(20), async || {
            match face.get_group_mstatus(A, &group, mid).await.ok(200).status {
                MessageStatus::Delivered => Ok(()),
                other => Err(format!("{mid}: {other:?}")),
            }
        })
        .await;
    }
}

/// An `isComposing` that would open an ad hoc chat and is refused by the rate (one a second
/// per sender, across sessions: `429 POL2005`) opens nothing. Before, the chat was opened
/// first and the rate weighed inside it: the sender got the `429`, and the pair had an open
/// chat nobody had written in, ended only when idle (its peer told `SessionEnded` for it).
async fn a_rate_refused_is_composing_opens_no_adhoc_chat(wire: Wire) {
    let srv = Server::default_for_tests();
    let face = Face::new(wire, &srv);
    let typing = docs::typing(30);
    face.send_one_to_one(A, B, ADHOC, &typing).await.created();
    face.send_one_to_one(A, C, ADHOC, &typing)
        .await
        .fails(429, Some("POL2005"));
    face.get_one_to_one(A, C, ADHOC)
        .await
        .fails(404, Some("SVC2008"));
    face.get_one_to_one(C, A, ADHOC)
        .await
        .fails(404, Some("SVC2008"));
    // The chat the first one opened is there, and once the gap has passed the second opens.
    face.get_one_to_one(A, B, ADHOC).await.ok(200);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    face.send_one_to_one(A, C, ADHOC, &typing).await.created();
    face.get_one_to_one(C, A, ADHOC).await.ok(200);
}

in_json_and_xml!(
    a_rate_refused_is_composing_opens_no_adhoc_chat,
    a_rate_refused_is_composing_opens_no_adhoc_chat_in_json,
    a_rate_refused_is_composing_opens_no_adhoc_chat_in_xml
);

/// The first ad hoc message of a pair racing the peer's `DELETE` of their ad hoc chat: the
/// outcome is one of the two orders, whichever lands first. Either the `DELETE` came first
/// (`404`: no chat yet) and the message opened one, where it is (its status reads `200`), or
/// the message opened the chat and the `DELETE` closed it (`204`), the message with it (its
/// status `404`). Never a send answered `404` for the `adhoc` collection (which always
/// exists; the message lost), nor a `DELETE` answered `204` for a chat the message was not
/// in (an empty chat opened and closed, the message in a second one). The first happened
/// when the open was committed before the message (6 in 400 rounds, an outside review), the
/// second when a retry of the send then opened a new chat (47 in 150, the next review). Many
/// pairs at once, so that some race.
async fn first_adhoc_message_racing_the_peers_close(wire: Wire) {
    let srv = Server::default_for_tests();
    let face = Face::new(wire, &srv);
    let rounds: Vec<_> = (0..100)
        .map(|n| {
            let (a, b) = (format!("tel:+1555{n:06}"), format!("tel:+1666{n:06}"));
            let face = &face;
            async move {
                let message = docs::message("first");
                let (sent, closed) = tokio::join!(
                    face.send_one_to_one(&a, &b, ADHOC, &message),
                    face.delete_one_to_one(&b, &a, ADHOC),
                );
                if sent.status != 201 {
                    return Err(format!("the send: {} {:?}", sent.status, sent.error));
                }
                let location = sent.location.clone().unwrap_or_default();
                let mid = location
                    .trim_end_matches("/status")
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                let status = face
                    .get_one_to_one_mstatus(&a, &b, ADHOC, &mid)
                    .await
                    .status;
                match (closed.status, status) {
                    (404, 200) | (204, 404) => Ok(closed.status),
                    other => Err(format!("(DELETE, GET status) {other:?}: no order gives it")),
                }
            }
        })
        .collect();
    let outcomes = futures_util::future::join_all(rounds).await;
    let wrong: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert!(wrong.is_empty(), "{} of 100 rounds: {wrong:?}", wrong.len());
}

in_json_and_xml!(
    first_adhoc_message_racing_the_peers_close,
    first_adhoc_message_racing_the_peers_close_in_json,
    first_adhoc_message_racing_the_peers_close_in_xml
);

/// An ad hoc session is stored as one (format 8): after a restart (SIGKILL) the pair's next
/// message goes into the same session (both messages in its history: a session not read back
/// as ad hoc would not be found, and a new one would be opened) and is still told with
/// `sessionId` adhoc. (The `Accepted` may be told twice: delivery is at least once, and the
/// kill may come before its delivery was recorded.)
#[tokio::test]
async fn an_adhoc_chat_survives_a_restart() {
    let srv = Server::default_for_tests();
    let face = Face::new(Wire::Json, &srv);
    let mut a12 = User::new_2012(&face, A).await;
    face.send_one_to_one(A, B, ADHOC, &docs::message("before"))
        .await
        .created();
    let _: ChatEventNotification = a12.next().await;
    let sessions = face.list_sessions(A).await.ok(200).chat_session_information;
    let sid = last_segment(sessions[0].resource_url.as_deref().expect("a resourceURL"));
    let dir = srv.kill();
    let srv = Server::restart(dir, &[]);
    let face = Face::new(Wire::Json, &srv);
    // Restarted on another port: its links name that one.
    a12.subscription.1 = srv
        .urls()
        .oma2012_subscription(A, &last_segment(&a12.subscription.1));
    face.send_one_to_one(B, A, ADHOC, &docs::message("after"))
        .await
        .created();
    let m: MessageNotification = a12.until().await;
    assert_eq!(m.session_id, ADHOC);
    let texts: Vec<String> = face
        .list_messages(A, &sid)
        .await
        .ok(200)
        .chat_message
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(texts, ["before", "after"]);
}

/// An ad hoc chat's idle time counts from its last message across a restart, not from the
/// restart: ended `NETAPI_CHAT_ADHOC_IDLE_SECS` after its message though the server was
/// restarted halfway. Before, every restart started the idle time again (the chat below
/// ended 8 s after the restart, 12 s after its message), so restarts more frequent than the
/// idle time kept a chat open for ever (the upgrade review). The bound allows 3 s of slack
/// for a loaded machine and still tells the two apart.
#[tokio::test]
async fn an_adhoc_chats_idle_time_counts_from_its_last_message_across_a_restart() {
    const IDLE: (&str, &str) = ("NETAPI_CHAT_ADHOC_IDLE_SECS", "8");
    let srv = Server::start(&[IDLE]);
    let face = Face::new(Wire::Json, &srv);
    let sent = std::time::Instant::now();
    face.send_one_to_one(A, B, ADHOC, &docs::message("once"))
        .await
        .created();
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let srv = Server::restart(srv.kill(), &[IDLE]);
    let face = Face::new(Wire::Json, &srv);
    face.get_one_to_one(A, B, ADHOC).await.ok(200);
    loop {
        let status = face.get_one_to_one(A, B, ADHOC).await.status;
        if status == 404 {
            break;
        }
        assert!(
            sent.elapsed() < std::time::Duration::from_secs(11),
            "still open {:?} after its only message ({status})",
            sent.elapsed()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The GSMA OneAPI gateways' `apiVersion` `0.1` (reference: "[S]/[G] used `0.1`"): a client
/// written against them reaches the OMA 2012 tree under `/chat/0.1/…` unchanged (ad hoc send,
/// status read and report, subscriptions); the answers name the canonical `/chat/v1/…`. Such
/// a client puts its served user in the path as a bare number (`/chat/0.1/%2B1555…/`, the
/// gateways' own links did too), which names that number's `tel:` user.
async fn gsma_api_version(wire: Wire) {
    let srv = Server::default_for_tests();
    let face = Face::new(wire, &srv);
    let urls = srv.urls();
    let f = face.fmt();
    let gsma = |url: String| {
        url.replacen("/chat/v1/", "/chat/0.1/", 1).replacen(
            "/chat/0.1/tel%3A%2B",
            "/chat/0.1/%2B",
            1,
        )
    };
    assert!(gsma(urls.oma2012_subscriptions(A)).contains("/chat/0.1/%2B1555"));
    let b12 = User::new_2012(&face, B).await;

    // A subscribes and sends ad hoc under 0.1.
    let listener = Listener::start().await;
    let sub = send_doc(
        "POST",
        &gsma(urls.oma2012_subscriptions(A)),
        f,
        &subscription_2012(&listener.url, A, f, None),
    )
    .await;
    assert_eq!(sub.status, 201, "{}", sub.body);
    let created: ChatNotificationSubscription = sub.decode();
    let sub_url = created.resource_url.expect("a resourceURL");
    assert!(sub_url.contains("/chat/v1/"), "{sub_url}");
    let sent = send_doc(
        "POST",
        &gsma(urls.one_to_one_messages(A, B, ADHOC)),
        f,
        &docs::message("from a 0.1 client"),
    )
    .await;
    assert_eq!(sent.status, 201, "{}", sent.body);
    let r: netapi_chat_api::ResourceReference = sent.decode();
    let mid = r
        .resource_url
        .rsplit('/')
        .nth(1)
        .expect("message id")
        .to_owned();
    assert_eq!(
        r.resource_url,
        urls.one_to_one_message_status(A, B, ADHOC, &mid)
    );
    let m: MessageNotification = b12.next().await;
    assert_eq!(m.message_id.as_deref(), Some(mid.as_str()));

    // B reports Displayed under 0.1; A reads the status there.
    let put = send_doc(
        "PUT",
        &gsma(urls.one_to_one_message_status(B, A, ADHOC, &mid)),
        f,
        &MessageStatusReport {
            status: MessageStatus::Displayed,
        },
    )
    .await;
    assert_eq!(put.status, 204, "{}", put.body);
    let got = send_empty(
        "GET",
        &gsma(urls.one_to_one_message_status(A, B, ADHOC, &mid)),
        f,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(
        got.decode::<MessageStatusReport>().status,
        MessageStatus::Displayed
    );

    // The subscription lists and goes under 0.1 too; a verb the path has not is the 405.
    let list = send_empty("GET", &gsma(urls.oma2012_subscriptions(A)), f).await;
    assert_eq!(list.status, 200, "{}", list.body);
    let del = send_empty("DELETE", &gsma(sub_url), f).await;
    assert_eq!(del.status, 204, "{}", del.body);
    let wrong = send_empty("DELETE", &gsma(urls.oma2012_subscriptions(A)), f).await;
    assert_eq!(wrong.status, 405, "{}", wrong.body);
}

in_json_and_xml!(
    gsma_api_version,
    gsma_api_version_in_json,
    gsma_api_version_in_xml
);

/// OMA 2012 §6.2: the invitee accepts with a PUT of `participantSessionStatus` on the
/// invitation's `ChatSessionInformation` link itself (the operation list and the GSMA
/// gateways use `…/status`, which the other tests use); the originator hears `Accepted`, and
/// the session reads `Connected` there.
async fn accept_at_the_session_link(wire: Wire) {
    let srv = Server::default_for_tests();
    let face = Face::new(wire, &srv);
    let f = face.fmt();
    let (a, b) = (
        User::new_2012(&face, A).await,
        User::new_2012(&face, B).await,
    );
    let (loc, _) = face
        .create_one_to_one(A, B, &one_to_one_request(A, B, "Lunch?"))
        .await
        .created();
    let sid = last_segment(&loc);
    let inv: ChatSessionInvitationNotification = b.next().await;
    let session_link = inv
        .link
        .iter()
        .find(|l| l.rel == "ChatSessionInformation")
        .expect("a ChatSessionInformation link")
        .href
        .clone();
    assert_eq!(session_link, srv.urls().one_to_one_session(B, A, &sid));
    let accept = netapi_chat_api::ParticipantSessionStatus { status: Connected };
    let put = send_doc("PUT", &session_link, f, &accept).await;
    assert_eq!(put.status, 204, "{}", put.body);
    let ev: ChatEventNotification = a.next().await;
    assert_eq!(
        (ev.event_type, ev.session_id.as_str()),
        (EventType::Accepted, sid.as_str())
    );
    let read = face.get_one_to_one(B, A, &sid).await.ok(200);
    assert_eq!(read.status, Some(Connected));
    // Again: the status it has already (409, as at `…/status`).
    let again = send_doc("PUT", &session_link, f, &accept).await;
    assert_eq!(again.status, 409, "{}", again.body);
}

in_json_and_xml!(
    accept_at_the_session_link,
    accept_at_the_session_link_in_json,
    accept_at_the_session_link_in_xml
);

/// `acr:auth`, OMA's name for the token's own user, stands for it wherever an address is
/// given, not only in `{userId}`: as the originator of a one-to-one or group start, and as a
/// participant id in a path.
#[tokio::test]
async fn acr_auth_names_the_caller_in_bodies_and_participant_ids() {
    let srv = Server::default_for_tests();
    let urls = srv.urls();
    let f = Format::Json;
    let own = ChatSessionInformation {
        originator_address: Some("acr:auth".to_owned()),
        ..one_to_one_request(A, B, "hi")
    };
    let one = send_doc("POST", &urls.one_to_one_other_user(A, B), f, &own).await;
    assert_eq!(one.status, 201, "{}", one.body);
    let group = GroupChatSessionInformation {
        subject: Some("team".to_owned()),
        participant: vec![
            ParticipantInformation {
                is_originator: Some(true),
                ..docs::participant("acr:auth")
            },
            docs::participant(C),
        ],
        ..GroupChatSessionInformation::default()
    };
    let made = send_doc("POST", &urls.group_group(A), f, &group).await;
    assert_eq!(made.status, 201, "{}", made.body);
    let sid = last_segment(made.header("location"));
    let me = send_empty("GET", &urls.participant(A, &sid, "acr:auth"), f).await;
    assert_eq!(me.status, 200, "{}", me.body);
    let p: ParticipantInformation = me.decode();
    assert_eq!(p.address, A);
}

/// The GSMA test suites' clients accept an invitation with a `PUT` that has no body at all:
/// that is an accept, whatever the `Content-Type` of the nothing, on each URL that accepts:
/// a one-to-one session's `…/status`, the session's own link (OMA 2012 §6.2, "the same body,
/// rules and answers"), and a group participant's `…/status`. The originator hears of it,
/// and the invitee reads `Connected`; again, it is `409 SVC0001`, as a `Connected` body is.
#[tokio::test]
async fn an_empty_put_accepts_on_every_accept_url() {
    let srv = Server::default_for_tests();
    let urls = srv.urls();
    for (f, content_type) in [(Format::Json, None), (Format::Xml, Some("application/xml"))] {
        let face = Face::new(
            match f {
                Format::Json => Wire::Json,
                Format::Xml => Wire::Xml,
            },
            &srv,
        );
        let a = User::new_2012(&face, A).await;
        let mut h = vec![("accept", f.media_type())];
        h.extend(content_type.map(|ct| ("content-type", ct)));
        // A one-to-one accept URL of (user, other user, session).
        type Url = fn(&netapi_chat_api::Urls, &str, &str, &str) -> String;
        let one_to_one: [(&str, Url); 2] = [
            ("…/status", netapi_chat_api::Urls::one_to_one_session_status),
            (
                "the session's link",
                netapi_chat_api::Urls::one_to_one_session,
            ),
        ];
        for (what, url) in one_to_one {
            let (loc, _) = face
                .create_one_to_one(A, B, &one_to_one_request(A, B, "Lunch?"))
                .await
                .created();
            let sid = last_segment(&loc);
            let put = send("PUT", &url(&urls, B, A, &sid), &h, None).await;
            assert_eq!(put.status, 204, "{what} in {f:?}: {}", put.body);
            let ev: ChatEventNotification = a.next().await;
            assert_eq!(
                (ev.event_type, ev.session_id.as_str()),
                (EventType::Accepted, sid.as_str()),
                "{what} in {f:?}"
            );
            let read = face.get_one_to_one(B, A, &sid).await.ok(200);
            assert_eq!(read.status, Some(Connected), "{what} in {f:?}");
            // Again: it is connected already.
            let again = send("PUT", &url(&urls, B, A, &sid), &h, None).await;
            again.assert_error(409, "SVC0001", f);
        }

        // A group invitation, accepted the same way.
        let req = GroupChatSessionInformation {
            subject: Some("Team".to_owned()),
            participant: vec![docs::participant(B)],
            client_correlator: None,
            resource_url: None,
        };
        let gid = last_segment(&face.create_group(A, &req).await.created().0);
        // The creator's `Successful` and roster first.
        let _: ParticipantStatusNotification = a.until().await;
        let put = send("PUT", &urls.group_participant_status(B, &gid, B), &h, None).await;
        assert_eq!(put.status, 204, "group in {f:?}: {}", put.body);
        let st: ParticipantStatusNotification = a.next().await;
        assert_eq!(
            (
                st.session_id.as_str(),
                st.participant[0].address.as_str(),
                st.participant[0].status
            ),
            (gid.as_str(), B, Some(Connected)),
            "group in {f:?}"
        );
        let me = face.get_group_participant(B, &gid, B).await.ok(200);
        assert_eq!(me.status, Some(Connected), "group in {f:?}");
        let again = send("PUT", &urls.group_participant_status(B, &gid, B), &h, None).await;
        again.assert_error(409, "SVC0001", f);
        // No body is one's own accept, not a way to change another's status.
        let theirs = send("PUT", &urls.group_participant_status(B, &gid, A), &h, None).await;
        theirs.assert_error(403, "POL0001", f);
    }

    // Raw: an empty chunked body without a Content-Type, and a length written `00`, are no
    // body either.
    for (n, framing) in [
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "Content-Length: 00\r\n\r\n",
    ]
    .into_iter()
    .enumerate()
    {
        let face = Face::new(Wire::Json, &srv);
        let b = format!("tel:+1555123009{n}");
        let (loc, _) = face
            .create_one_to_one(A, &b, &one_to_one_request(A, &b, "Raw?"))
            .await
            .created();
        let sid = last_segment(&loc);
        let url = urls.one_to_one_session_status(&b, A, &sid);
        let path = url.trim_start_matches(&srv.base);
        let addr = srv.base.trim_start_matches("http://");
        let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let head = format!(
            "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
             Connection: close\r\n{framing}",
            support::APP_TOKEN
        );
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        tcp.write_all(head.as_bytes()).await.expect("write");
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).await.expect("read");
        assert!(answer.starts_with("HTTP/1.1 204"), "{framing:?}: {answer}");
    }
}

/// OMA 2012 allows a group with no `participant` (0..*): "create the group, then add
/// people". It starts with its originator alone (`201`, `Connected`), and the first member
/// added is invited into it as into any group. Before, `400 SVC0002`.
#[tokio::test]
async fn a_group_starts_empty_and_grows() {
    let srv = Server::default_for_tests();
    for wire in [Wire::Json, Wire::Xml] {
        let face = Face::new(wire, &srv);
        let b = User::new_2012(&face, B).await;
        let req = GroupChatSessionInformation {
            subject: Some("Later".to_owned()),
            ..Default::default()
        };
        let (loc, _) = face.create_group(A, &req).await.created();
        let sid = last_segment(&loc);
        let g = face.get_group(A, &sid).await.ok(200);
        let roster: Vec<(String, Option<ParticipantStatus>)> = g
            .participant
            .iter()
            .map(|p| (p.address.clone(), p.status))
            .collect();
        assert_eq!(roster, [(A.to_owned(), Some(Connected))], "{wire:?}");
        face.add_group_participant(A, &sid, &docs::participant(B))
            .await
            .created();
        let inv: GroupSessionInvitationNotification = b.next().await;
        assert_eq!(inv.session_id, sid, "{wire:?}");
    }
}

/// OMA 2012 §6.2 read literally: the invitee GETs the session at the invitation's
/// `ChatSessionInformation` link, sets its `status` and PUTs the document back there.
/// `Connected` accepts (the originator is told, the session reads `Connected`), `Disconnected`
/// declines (the 1-1 session is gone). Before, that body was `400 SVC0002` (only a
/// `participantSessionStatus` was taken there), so such a client could accept nothing.
#[tokio::test]
async fn putting_the_session_back_with_a_status_answers_the_invitation() {
    let srv = Server::default_for_tests();
    let urls = srv.urls();
    for (f, wire) in [(Format::Json, Wire::Json), (Format::Xml, Wire::Xml)] {
        let face = Face::new(wire, &srv);
        let a = User::new_2012(&face, A).await;
        for (asked, accepted) in [(Connected, true), (ParticipantStatus::Disconnected, false)] {
            let (loc, _) = face
                .create_one_to_one(A, B, &one_to_one_request(A, B, "Lunch?"))
                .await
                .created();
            let sid = last_segment(&loc);
            let mut doc = face.get_one_to_one(B, A, &sid).await.ok(200);
            assert_eq!(doc.status, Some(ParticipantStatus::Invited));
            doc.status = Some(asked);
            let put = send_doc("PUT", &urls.one_to_one_session(B, A, &sid), f, &doc).await;
            assert_eq!(put.status, 204, "{asked:?} in {f:?}: {}", put.body);
            let ev: ChatEventNotification = a.next().await;
            let told = if accepted {
                EventType::Accepted
            } else {
                EventType::Declined
            };
            assert_eq!(
                (ev.event_type, ev.session_id.as_str()),
                (told, sid.as_str())
            );
            if accepted {
                let read = face.get_one_to_one(B, A, &sid).await.ok(200);
                assert_eq!(read.status, Some(Connected), "{f:?}");
            } else {
                face.get_one_to_one(B, A, &sid).await.fails(404, None);
                // A declined 1-1 session ends (the originator is told that too).
                let _: ChatEventNotification = a.next().await;
            }
        }
    }
}

/// A subscription that delivery disabled (its callback answered `410 Gone`) is gone on the
/// OMA 2012 face, which has no status for one: `404` to a read and to a refresh, not listed,
/// so a client subscribes anew instead of reading one that looks alive and gets nothing. The
/// seed face still shows it `Disabled`; a DELETE on the 2012 face removes it.
#[tokio::test]
async fn a_subscription_the_server_disabled_is_gone_on_the_2012_face() {
    // One subscription per user: the disabled one must give up its place.
    let srv = Server::start(&[("NETAPI_CHAT_MAX_SUBSCRIPTIONS_PER_USER", "1")]);
    let face = Face::new(Wire::Xml, &srv);
    let listener = support::Listener::start().await;
    listener.set_status(410);
    let mut doc = subscription_2012(&listener.url, "gone", Format::Xml, None);
    doc.client_correlator = Some("gsma-1".to_owned());
    let (loc, _) = face
        .create_notification_subscription(A, &doc)
        .await
        .created();
    let id = last_segment(&loc);
    face.create_one_to_one(B, A, &one_to_one_request(B, A, "Hello?"))
        .await
        .created();
    // Disabled at its first notification's 410.
    let seed = support::within_20s(std::time::Duration::from_millis(50), async || {
        let s = face.get_subscription(A, &id).await.ok(200);
        match s.subscription_status {
            Some(netapi_chat_api::SubscriptionStatus::Disabled) => Ok(s),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(seed.status_reason.unwrap_or_default().contains("410"));
    face.get_notification_subscription(A, &id)
        .await
        .fails(404, Some("SVC2008"));
    face.put_notification_subscription(A, &id, &doc)
        .await
        .fails(404, Some("SVC2008"));
    let list = face.list_notification_subscriptions(A).await.ok(200);
    assert!(list.chat_notification_subscription.is_empty(), "{list:?}");
    // Subscribing anew, with the same clientCorrelator, at the limit of one: a new
    // subscription (not a replay of the hidden one), which takes the disabled one's place.
    let working = support::Listener::start().await;
    doc.callback_reference.notify_url = working.url.clone();
    let (again, _) = face
        .create_notification_subscription(A, &doc)
        .await
        .created();
    let new_id = last_segment(&again);
    assert_ne!(new_id, id);
    face.get_subscription(A, &id)
        .await
        .fails(404, Some("SVC2008"));
    face.get_notification_subscription(A, &new_id).await.ok(200);
    face.create_one_to_one(B, A, &one_to_one_request(B, A, "Again?"))
        .await
        .created();
    working.wait_for(1).await;
    face.delete_notification_subscription(A, &new_id)
        .await
        .no_content();
}

/// A disabled subscription still reads on the seed face until it is deleted, and a DELETE on
/// the 2012 face removes it.
#[tokio::test]
async fn a_disabled_subscription_is_deleted_through_the_2012_face() {
    let srv = Server::default_for_tests();
    let face = Face::new(Wire::Json, &srv);
    let listener = support::Listener::start().await;
    listener.set_status(410);
    let doc = subscription_2012(&listener.url, "gone", Format::Json, None);
    let (loc, _) = face
        .create_notification_subscription(A, &doc)
        .await
        .created();
    let id = last_segment(&loc);
    face.create_one_to_one(B, A, &one_to_one_request(B, A, "Hello?"))
        .await
        .created();
    support::within_20s(std::time::Duration::from_millis(50), async || {
        let s = face.get_subscription(A, &id).await.ok(200);
        match s.subscription_status {
            Some(netapi_chat_api::SubscriptionStatus::Disabled) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    face.delete_notification_subscription(A, &id)
        .await
        .no_content();
    face.get_subscription(A, &id)
        .await
        .fails(404, Some("SVC2008"));
}

/// A client whose numbers are doubles (Jackson for a `Double`, Python's `float`, .NET's
/// `double`) writes a whole number as `3600.0` or `3.6e3`: it is that integer (before, `400`
/// "expected an integer"); a fraction is still refused.
#[tokio::test]
async fn a_whole_number_written_as_a_double_is_taken() {
    let srv = Server::default_for_tests();
    let url = srv.urls().oma2012_subscriptions(A);
    let body = |duration: &str| {
        format!(
            r#"{{"chatNotificationSubscription":{{"callbackReference":{{"notifyURL":"http://127.0.0.1:10/cb"}},"duration":{duration}}}}}"#
        )
    };
    for duration in ["3600.0", "3.6e3", r#""3600.0""#] {
        let a = send(
            "POST",
            &url,
            &[
                ("content-type", "application/json"),
                ("accept", "application/json"),
            ],
            Some(&body(duration)),
        )
        .await;
        assert_eq!(a.status, 201, "{duration}: {}", a.body);
        assert!(
            a.body.contains(r#""duration":3600"#),
            "{duration}: {}",
            a.body
        );
    }
    let a = send(
        "POST",
        &url,
        &[
            ("content-type", "application/json"),
            ("accept", "application/json"),
        ],
        Some(&body("3600.5")),
    )
    .await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.body.contains("`3600.5` is not an integer"), "{}", a.body);
}

/// An OMA 2012 client reads its subscriptions first, at start-up, before it has any: the
/// empty list carries `"chatNotificationSubscription": []` (before, the key was left out and
/// `…chatNotificationSubscription.length` threw), and a listed one is in that array.
#[tokio::test]
async fn an_empty_2012_subscription_list_has_its_array() {
    let srv = Server::default_for_tests();
    let url = srv.urls().oma2012_subscriptions(A);
    let empty = send_empty("GET", &url, Format::Json).await;
    assert_eq!(empty.status, 200, "{}", empty.body);
    let v: serde_json::Value = serde_json::from_str(&empty.body).expect("JSON");
    assert_eq!(
        v["chatSubscriptionList"]["chatNotificationSubscription"],
        serde_json::json!([]),
        "{}",
        empty.body
    );
    let sub = subscription_2012("http://127.0.0.1:10/cb", "d", Format::Json, None);
    let made = send_doc("POST", &url, Format::Json, &sub).await;
    assert_eq!(made.status, 201, "{}", made.body);
    let one: serde_json::Value =
        serde_json::from_str(&send_empty("GET", &url, Format::Json).await.body).expect("JSON");
    let list = &one["chatSubscriptionList"];
    assert_eq!(
        list["chatNotificationSubscription"]
            .as_array()
            .map(Vec::len),
        Some(1),
        "{list}"
    );
    assert!(
        list.get("chatSubscription").is_none(),
        "no seed member: {list}"
    );
}

/// A `clientCorrelator` that is empty (JSON `""`, `<clientCorrelator/>`) or nil (JSON `null`,
/// `xsi:nil`) names no request on this face either: every one-to-one or group start, message
/// (in either) and subscription made with one is new, however many came before, and none
/// reads back with a correlator; a refresh with one leaves the subscription's as it was
/// (before, `""` was a correlator: the next such create answered the first resource or was
/// `409 SVC0005`, and a refresh was `400`, "cannot change").
#[tokio::test]
async fn a_blank_client_correlator_is_none() {
    use support::chat::each_creates_anew;
    use support::docs::{CORRELATOR_MARK, blank_correlators};
    let srv = Server::default_for_tests();
    let urls = srv.urls();
    let listener = Listener::start().await;
    let mark = || Some(CORRELATOR_MARK.to_owned());
    let face = Face::new(Wire::Json, &srv);
    let one = last_segment(
        &face
            .create_one_to_one(A, B, &one_to_one_request(A, B, "talk"))
            .await
            .created()
            .0,
    );
    face.put_one_to_one_status(B, A, &one, Connected)
        .await
        .no_content();
    let group = GroupChatSessionInformation {
        subject: Some("team".to_owned()),
        participant: vec![docs::participant(C)],
        ..GroupChatSessionInformation::default()
    };
    let gid = last_segment(&face.create_group(A, &group).await.created().0);
    face.put_group_status(C, &gid, C, Connected)
        .await
        .no_content();
    for (f, peer, member) in [
        (Format::Json, "tel:+15551230101", "tel:+15551230102"),
        (Format::Xml, "tel:+15551230201", "tel:+15551230202"),
    ] {
        let mut subscription = subscription_2012(&listener.url, A, f, None);
        subscription.client_correlator = mark();
        let bodies = blank_correlators(f, &subscription);
        each_creates_anew(f, &urls.oma2012_subscriptions(A), &bodies).await;
        // A refresh of a subscription made without one: nothing changes.
        let plain = subscription_2012(&listener.url, A, f, None);
        let id = last_segment(
            &Face::for_format(f, &srv)
                .create_notification_subscription(A, &plain)
                .await
                .created()
                .0,
        );
        for body in &bodies {
            let h = [("content-type", f.media_type()), ("accept", f.media_type())];
            let put = send("PUT", &urls.oma2012_subscription(A, &id), &h, Some(body)).await;
            assert_eq!(put.status, 200, "{body}: {}", put.body);
            assert!(!put.body.contains("clientCorrelator"), "{}", put.body);
        }

        let start = ChatSessionInformation {
            client_correlator: mark(),
            ..one_to_one_request(A, peer, "again")
        };
        let bodies = blank_correlators(f, &start);
        each_creates_anew(f, &urls.one_to_one_other_user(A, peer), &bodies).await;
        let start = GroupChatSessionInformation {
            client_correlator: mark(),
            ..GroupChatSessionInformation {
                participant: vec![docs::participant(member)],
                ..group.clone()
            }
        };
        let bodies = blank_correlators(f, &start);
        each_creates_anew(f, &urls.group_group(A), &bodies).await;

        let message = ChatMessage {
            client_correlator: mark(),
            ..docs::message("once more")
        };
        let bodies = blank_correlators(f, &message);
        each_creates_anew(f, &urls.one_to_one_messages(A, B, &one), &bodies).await;
        each_creates_anew(f, &urls.group_messages(A, &gid), &bodies).await;
    }
}
