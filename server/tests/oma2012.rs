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
    ChatEventNotification, ChatSessionInformation, EventType, GroupChatSessionInformation,
    MessageDeliveryNotification, MessageNotification, MessageStatus, ParticipantInformation,
    ParticipantStatus, ParticipantStatusNotification, SessionInvitationNotification,
};
use netapi_chat_runtime::Format;
use netapi_chat_runtime::wire::Document;
use std::cell::Cell;
use support::docs::{self, last_segment};
use support::{Face, Listener, Server, Wire, enc, send, xsd_validate};

use ParticipantStatus::{Connected, Invited};

const A: &str = "tel:+15551230001";
const B: &str = "sip:bob@example.com";
const C: &str = "tel:+15551230003";

/// A user with a seed-face subscription (the 2012 subscription resource is a later slice) at a
/// listener of its own, notifications in the face's format.
struct User {
    addr: &'static str,
    format: Format,
    listener: Listener,
    seen: Cell<usize>,
}

impl User {
    async fn new(face: &Face<'_>, addr: &'static str) -> User {
        let listener = Listener::start().await;
        support::chat::subscribe(face.server, addr, &listener, face.fmt()).await;
        User {
            addr,
            format: face.fmt(),
            listener,
            seen: Cell::new(0),
        }
    }

    /// The next notification: a `T` in the subscription's format (XML validated by the XSD).
    async fn next<T: Document>(&self) -> T {
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
        got.decode()
    }

    /// The next `T`, past notifications of other kinds (what happened in between is not the
    /// test's subject).
    async fn until<T: Document>(&self) -> T {
        loop {
            let n = self.seen.get() + 1;
            let got = self.listener.nth(n).await;
            self.seen.set(n);
            if got.kind() == T::NAME {
                return got.decode();
            }
        }
    }
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
        (m.message_id.as_str(), m.session_id.as_str()),
        (mid.as_str(), sid.as_str())
    );
    assert_eq!(m.chat_message.text, "Noon at the usual place");

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

#[tokio::test]
async fn confirmed_one_to_one_chat_in_json() {
    confirmed_chat(Wire::Json).await;
}

#[tokio::test]
async fn confirmed_one_to_one_chat_in_xml() {
    confirmed_chat(Wire::Xml).await;
}

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

#[tokio::test]
async fn decline_and_cancel_with_delete_in_json() {
    decline_and_cancel(Wire::Json).await;
}

#[tokio::test]
async fn decline_and_cancel_with_delete_in_xml() {
    decline_and_cancel(Wire::Xml).await;
}

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

#[tokio::test]
async fn sessions_cross_faces_in_json() {
    sessions_cross_faces(Wire::Json).await;
}

#[tokio::test]
async fn sessions_cross_faces_in_xml() {
    sessions_cross_faces(Wire::Xml).await;
}

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
}

#[tokio::test]
async fn refusals_in_json() {
    refusals(Wire::Json).await;
}

#[tokio::test]
async fn refusals_in_xml() {
    refusals(Wire::Xml).await;
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
        assert_eq!(wrong.header("allow"), "GET, HEAD, DELETE");
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
    assert_eq!(m.message_id, mid);
    face.put_group_mstatus(B, &sid, &mid, MessageStatus::Displayed)
        .await
        .no_content();
    let d: MessageDeliveryNotification = a.next().await;
    assert_eq!(d.status, MessageStatus::Displayed);
    assert_eq!(
        face.get_group_mstatus(A, &sid, &mid).await.ok(200).status,
        MessageStatus::Displayed
    );

    // Someone else's participant: the inviter withdraws an unanswered invitation.
    const D: &str = "sip:dave@example.org";
    face.add_group_participant(A, &sid, &docs::participant(D))
        .await
        .created();
    face.delete_group_participant(B, &sid, D)
        .await
        .fails(403, Some("POL0001"));
    face.delete_group_participant(A, &sid, D).await.no_content();
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

#[tokio::test]
async fn group_chat_in_json() {
    group_chat(Wire::Json).await;
}

#[tokio::test]
async fn group_chat_in_xml() {
    group_chat(Wire::Xml).await;
}

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
