//! The error table: every refusal the API makes, in both wire formats.
//!
//! Each test starts one real server and runs its cases twice, once in JSON and once in XML
//! (request body, `Accept` and the asserted `requestError` all in that format; XML errors are
//! validated against the XSD). Every case asserts the exact status and exception id, so a 500
//! fails it; where it is cheap, the state is read back afterwards to show the refused request
//! changed nothing.

mod support;

use netapi_chat_api::{
    ChatMessage, ChatSessionInformation, ChatSubscription, MessageDeliveryStatus, MessageStatus,
    ParticipantList, ParticipantSessionStatus, ParticipantStatus, RequestError,
};
use netapi_chat_runtime::Format;
use support::docs::{self, last_segment};
use support::{Answer, Face, Server, enc, send, send_doc, send_empty};

const ALICE: &str = "tel:+15551230001";
const BOB: &str = "sip:bob@example.com";
const CAROL: &str = "tel:+15551230003";
const MALLORY: &str = "tel:+15559990666";
const DAVE: &str = "sip:dave@example.org";
const SUBJECT: &str = "secret-subject-7f3a";
const SECRET_TEXT: &str = "secret-text-91c2";

const CHAT: &str = "urn:oma:xml:rest:netapi:chat:1";

const FORMATS: [Format; 2] = [Format::Json, Format::Xml];

/// One server, one format.
struct Ctx<'a> {
    srv: &'a Server,
    f: Format,
}

fn session_doc(participants: &[&str]) -> ChatSessionInformation {
    docs::session(SUBJECT, participants)
}

fn message_doc(text: &str) -> ChatMessage {
    ChatMessage {
        success_report: Some(true),
        ..docs::message(text)
    }
}

impl Ctx<'_> {
    fn urls(&self) -> netapi_chat_api::Urls {
        self.srv.urls()
    }

    fn url(&self, user: &str, rest: &str) -> String {
        self.srv.url(user, rest)
    }

    fn session_url(&self, user: &str, sid: &str, rest: &str) -> String {
        self.url(user, &format!("/chatSessions/{sid}{rest}"))
    }

    async fn get(&self, url: &str) -> Answer {
        send_empty("GET", url, self.f).await
    }

    async fn delete(&self, url: &str) -> Answer {
        send_empty("DELETE", url, self.f).await
    }

    /// Sends a raw body (already in this context's format).
    async fn raw(&self, method: &str, url: &str, body: &str) -> Answer {
        let mt = self.f.media_type();
        send(
            method,
            url,
            &[("content-type", mt), ("accept", mt)],
            Some(body),
        )
        .await
    }

    /// Asserts the refusal: never a 500, then the exact status and exception id (and a valid
    /// `requestError` in this format).
    fn refused(&self, what: &str, a: &Answer, status: u16, id: &str) -> RequestError {
        let f = self.f;
        assert_ne!(
            a.status, 500,
            "[{f:?}] {what}: server error; body: {}",
            a.body
        );
        assert_eq!(a.status, status, "[{f:?}] {what}: status; body: {}", a.body);
        assert!(
            a.body.contains(id),
            "[{f:?}] {what}: expected {id}; body: {}",
            a.body
        );
        a.assert_error(status, id, f)
    }

    fn ok(&self, what: &str, a: &Answer, status: u16) {
        assert_eq!(
            a.status, status,
            "[{:?}] {what}: status; body: {}",
            self.f, a.body
        );
    }

    /// The two-format client in this context's format.
    fn face(&self) -> Face<'_> {
        Face::for_format(self.f, self.srv)
    }

    /// `originator` starts a session with `invitees`; returns its id.
    async fn create(&self, originator: &str, invitees: &[&str]) -> String {
        let (_, s) = self
            .face()
            .create_session(originator, &session_doc(invitees))
            .await
            .created();
        last_segment(&s.resource_url.expect("resourceURL"))
    }

    async fn set_status(
        &self,
        user: &str,
        sid: &str,
        pid: &str,
        status: ParticipantStatus,
    ) -> Answer {
        let url = self.urls().participant_status(user, sid, pid);
        send_doc("POST", &url, self.f, &ParticipantSessionStatus { status }).await
    }

    async fn accept(&self, user: &str, sid: &str) {
        self.face()
            .set_status(user, sid, user, ParticipantStatus::Connected)
            .await
            .ok(200);
    }

    async fn post_message(&self, user: &str, sid: &str, text: &str) -> Answer {
        send_doc(
            "POST",
            &self.urls().messages(user, sid),
            self.f,
            &message_doc(text),
        )
        .await
    }

    /// `user` sends a message; returns its id.
    async fn message(&self, user: &str, sid: &str, text: &str) -> String {
        let (_, r) = self
            .face()
            .send_message(user, sid, &message_doc(text))
            .await
            .created();
        last_segment(&r.resource_url)
    }

    async fn confirm(&self, user: &str, sid: &str, mid: &str, status: MessageStatus) -> Answer {
        let url = self.urls().message_status(user, sid, mid);
        send_doc("POST", &url, self.f, &MessageDeliveryStatus { status }).await
    }

    /// A session with `alice` and `bob` both connected.
    async fn connected_pair(&self) -> String {
        let sid = self.create(ALICE, &[BOB]).await;
        self.accept(BOB, &sid).await;
        sid
    }

    // ------------------------------------------------------------------ state read back

    async fn session(&self, user: &str, sid: &str) -> ChatSessionInformation {
        self.face().get_session(user, sid).await.ok(200)
    }

    /// What the refusals of a status or invitation case must have left as it was: Alice's
    /// list of `sid`'s participants is `before`, and Carol's invitation is still pending.
    async fn assert_carol_still_invited(
        &self,
        sid: &str,
        before: &[(String, Option<ParticipantStatus>)],
    ) {
        assert_eq!(self.participants(ALICE, sid).await, before);
        assert_eq!(
            self.session(CAROL, sid).await.status,
            Some(ParticipantStatus::Invited)
        );
    }

    async fn participants(
        &self,
        user: &str,
        sid: &str,
    ) -> Vec<(String, Option<ParticipantStatus>)> {
        let l = self.face().list_participants(user, sid).await.ok(200);
        l.participant
            .into_iter()
            .map(|p| (p.address, p.status))
            .collect()
    }

    async fn messages(&self, user: &str, sid: &str) -> Vec<String> {
        let l = self.face().list_messages(user, sid).await.ok(200);
        l.chat_message.into_iter().map(|m| m.text).collect()
    }

    async fn session_count(&self, user: &str) -> usize {
        let l = self.face().list_sessions(user).await.ok(200);
        l.chat_session_information.len()
    }

    async fn subscription_count(&self, user: &str) -> usize {
        let l = self.face().list_subscriptions(user).await.ok(200);
        l.chat_subscription.len()
    }

    async fn message_status(&self, user: &str, sid: &str, mid: &str) -> MessageStatus {
        self.face()
            .get_delivery(user, sid, mid)
            .await
            .ok(200)
            .status
    }
}

/// Runs `cases` on one fresh server, in JSON and then in XML.
macro_rules! in_both_formats {
    ($($name:ident => $cases:ident;)*) => {$(
        #[tokio::test]
        async fn $name() {
            let srv = Server::default_for_tests();
            for f in FORMATS {
                eprintln!("--- {} in {f:?}", stringify!($name));
                $cases(&Ctx { srv: &srv, f }).await;
            }
        }
    )*};
}

in_both_formats! {
    outsider_sees_nothing => outsider_cases;
    unknown_ids => unknown_id_cases;
    bad_addresses => bad_address_cases;
    message_refusals => message_cases;
    status_refusals => status_cases;
    delivery_refusals => delivery_cases;
    end_refusals => end_cases;
    cancel_refusals => cancel_cases;
    invite_refusals => invite_cases;
    create_refusals => create_cases;
    malformed_bodies => malformed_cases;
}

/// A user acts only on sessions it takes part in: for anyone else a session is 404, with
/// exactly the answer a nonexistent session id gets, and nothing about the session in it.
async fn outsider_cases(c: &Ctx<'_>) {
    let sid = c.connected_pair().await;
    let mid = c.message(ALICE, &sid, SECRET_TEXT).await;
    // A cancelled invitee is an outsider too (seed 7.1.6: the session is gone for it).
    let group = c.create(ALICE, &[BOB, CAROL]).await;
    let a = c.delete(&c.urls().participant(ALICE, &group, CAROL)).await;
    c.ok("cancel carol's invitation", &a, 204);

    let fake = "sess-0-00000000000000000000000000000000";
    let before_participants = c.participants(ALICE, &sid).await;
    let before_messages = c.messages(ALICE, &sid).await;

    for (outsider, sid) in [(MALLORY, sid.as_str()), (CAROL, group.as_str())] {
        let msg = message_doc("intrusion");
        let accept = ParticipantSessionStatus {
            status: ParticipantStatus::Connected,
        };
        let confirm = MessageDeliveryStatus {
            status: MessageStatus::Delivered,
        };
        let invite = ParticipantList {
            participant: vec![docs::participant(DAVE)],
            resource_url: None,
            link: Vec::new(),
        };
        // (label, method, path under the session, body)
        let reqs: Vec<(&str, &str, String, Option<String>)> = vec![
            ("GET session", "GET", String::new(), None),
            ("DELETE session", "DELETE", String::new(), None),
            ("GET participants", "GET", "/participants".into(), None),
            (
                "GET participant",
                "GET",
                format!("/participants/{}", enc(ALICE)),
                None,
            ),
            (
                "DELETE participant",
                "DELETE",
                format!("/participants/{}", enc(BOB)),
                None,
            ),
            (
                "POST own status",
                "POST",
                format!("/participants/{}/status", enc(outsider)),
                Some(docs::encode(c.f, &accept)),
            ),
            (
                "POST participants",
                "POST",
                "/participants".into(),
                Some(docs::encode(c.f, &invite)),
            ),
            ("GET messages", "GET", "/messages".into(), None),
            (
                "POST message",
                "POST",
                "/messages".into(),
                Some(docs::encode(c.f, &msg)),
            ),
            ("GET message", "GET", format!("/messages/{mid}"), None),
            (
                "GET message status",
                "GET",
                format!("/messages/{mid}/status"),
                None,
            ),
            (
                "POST confirm",
                "POST",
                format!("/messages/{mid}/status"),
                Some(docs::encode(c.f, &confirm)),
            ),
        ];
        for (what, method, rest, body) in reqs {
            let what = format!("{outsider} {what}");
            let call = |s: &str| {
                let url = c.session_url(outsider, s, &rest);
                let body = body.clone();
                async move {
                    match body {
                        Some(b) => c.raw(method, &url, &b).await,
                        None => send_empty(method, &url, c.f).await,
                    }
                }
            };
            let real = call(sid).await;
            let none = call(fake).await;
            let e_real = c.refused(&what, &real, 404, "SVC2008");
            let e_none = c.refused(&format!("{what} (nonexistent)"), &none, 404, "SVC2008");
            assert_eq!(
                real.body.replace(sid, "SID"),
                none.body.replace(fake, "SID"),
                "[{:?}] {what}: answer differs from a nonexistent session's",
                c.f
            );
            assert_eq!(real.content_type(), none.content_type());
            assert_eq!(
                docs::rendered(&e_real).replace(sid, "SID"),
                docs::rendered(&e_none).replace(fake, "SID")
            );
            for secret in [ALICE, BOB, SUBJECT, SECRET_TEXT, &enc(ALICE), &enc(BOB)] {
                assert!(
                    !real.body.contains(secret),
                    "[{:?}] {what}: leaks {secret}: {}",
                    c.f,
                    real.body
                );
            }
        }
    }

    // Nothing changed for the participants.
    assert_eq!(c.participants(ALICE, &sid).await, before_participants);
    assert_eq!(c.messages(ALICE, &sid).await, before_messages);
    assert_eq!(c.messages(BOB, &sid).await, before_messages);
    assert_eq!(c.session(ALICE, &sid).await.ended, Some(false));
    assert_eq!(c.session(ALICE, &group).await.ended, Some(false));
}

/// Unknown session, participant, message and subscription ids are 404 `SVC2008`.
async fn unknown_id_cases(c: &Ctx<'_>) {
    let sid = c.connected_pair().await;
    let mid = c.message(ALICE, &sid, "hello").await;
    let nobody = enc("tel:+15550000000");

    for (what, url) in [
        ("session", c.urls().session(ALICE, "sess-nope")),
        (
            "session participants",
            c.urls().participants(ALICE, "sess-nope"),
        ),
        ("session messages", c.urls().messages(ALICE, "sess-nope")),
        (
            "participant",
            c.session_url(ALICE, &sid, &format!("/participants/{nobody}")),
        ),
        (
            "participant status",
            c.session_url(ALICE, &sid, &format!("/participants/{nobody}/status")),
        ),
        ("message", c.urls().message(ALICE, &sid, "msg-nope")),
        (
            "message status",
            c.urls().message_status(ALICE, &sid, "msg-nope"),
        ),
        ("subscription", c.urls().subscription(ALICE, "sub-nope")),
    ] {
        c.refused(
            &format!("GET unknown {what}"),
            &c.get(&url).await,
            404,
            "SVC2008",
        );
    }
    for (what, url) in [
        ("session", c.urls().session(ALICE, "sess-nope")),
        (
            "participant",
            c.session_url(ALICE, &sid, &format!("/participants/{nobody}")),
        ),
        ("subscription", c.urls().subscription(ALICE, "sub-nope")),
    ] {
        c.refused(
            &format!("DELETE unknown {what}"),
            &c.delete(&url).await,
            404,
            "SVC2008",
        );
    }
    let a = c
        .set_status(
            ALICE,
            &sid,
            "tel:+15550000000",
            ParticipantStatus::Connected,
        )
        .await;
    c.refused("POST status of unknown participant", &a, 404, "SVC2008");
    let a = c.post_message(ALICE, "sess-nope", "x").await;
    c.refused("POST message to unknown session", &a, 404, "SVC2008");
    let a = c
        .confirm(BOB, &sid, "msg-nope", MessageStatus::Delivered)
        .await;
    c.refused("confirm unknown message", &a, 404, "SVC2008");

    // Another user's subscription is unknown too.
    let sub = send_doc(
        "POST",
        &c.urls().subscriptions(DAVE),
        c.f,
        &docs::subscription("http://127.0.0.1:10/notify"),
    )
    .await;
    c.ok("create subscription", &sub, 201);
    let sub_id = last_segment(&sub.decode::<ChatSubscription>().resource_url.unwrap());
    let url = c.urls().subscription(MALLORY, &sub_id);
    c.refused(
        "GET another user's subscription",
        &c.get(&url).await,
        404,
        "SVC2008",
    );
    c.refused(
        "DELETE another user's subscription",
        &c.delete(&url).await,
        404,
        "SVC2008",
    );
    let a = c.get(&c.urls().subscription(DAVE, &sub_id)).await;
    c.ok("subscription survives", &a, 200);
    let a = c.delete(&c.urls().subscription(DAVE, &sub_id)).await;
    c.ok("delete own subscription", &a, 204);

    // Nothing changed.
    assert_eq!(c.messages(BOB, &sid).await, vec!["hello".to_owned()]);
    assert_eq!(c.message_status(BOB, &sid, &mid).await, MessageStatus::Sent);
}

/// Addresses that are not a `tel:` (global number) or `sip:` URI are 400 `SVC0004`.
async fn bad_address_cases(c: &Ctx<'_>) {
    for user in ["bogus", "tel:5551"] {
        let a = c.get(&c.urls().chat_sessions(user)).await;
        let e = c.refused(&format!("GET sessions of {user}"), &a, 400, "SVC0004");
        assert!(docs::rendered(&e).contains(user), "{}", docs::rendered(&e));
        let a = c.get(&c.urls().subscriptions(user)).await;
        c.refused(&format!("GET subscriptions of {user}"), &a, 400, "SVC0004");
        let a = send_doc(
            "POST",
            &c.urls().chat_sessions(user),
            c.f,
            &session_doc(&[BOB]),
        )
        .await;
        c.refused(&format!("create session as {user}"), &a, 400, "SVC0004");
    }

    let (before, bob_before) = (c.session_count(ALICE).await, c.session_count(BOB).await);
    let a = send_doc(
        "POST",
        &c.urls().chat_sessions(ALICE),
        c.f,
        &session_doc(&[BOB, "mailto:x@y"]),
    )
    .await;
    let e = c.refused("create session with mailto participant", &a, 400, "SVC0004");
    assert!(
        docs::rendered(&e).contains("mailto:x@y"),
        "{}",
        docs::rendered(&e)
    );
    let a = send_doc(
        "POST",
        &c.urls().chat_sessions(ALICE),
        c.f,
        &session_doc(&["tel:5551"]),
    )
    .await;
    c.refused("create session with tel: without +", &a, 400, "SVC0004");
    assert_eq!(
        c.session_count(ALICE).await,
        before,
        "a refused create made a session"
    );
    assert_eq!(
        c.session_count(BOB).await,
        bob_before,
        "a refused create invited bob"
    );
}

/// Sending a message: ended session 404 (gone, issue 11 item 4; was 409), not yet accepted
/// 403 `POL1012`, nobody else joined 403 `POL1012`, everyone else left 409 `SVC0001`.
async fn message_cases(c: &Ctx<'_>) {
    // Ended session.
    let sid = c.connected_pair().await;
    c.message(ALICE, &sid, "before the end").await;
    let a = c.delete(&c.urls().session(ALICE, &sid)).await;
    c.ok("end session", &a, 204);
    for user in [ALICE, BOB] {
        let a = c.post_message(user, &sid, "after the end").await;
        c.refused(
            &format!("{user} sends to an ended session"),
            &a,
            404,
            "SVC2008",
        );
    }
    // (The ended session's messages are gone with it: see end_cases.)

    // An invitee who has not accepted.
    let group = c.create(ALICE, &[BOB, CAROL]).await;
    c.accept(BOB, &group).await;
    let a = c.post_message(CAROL, &group, "too early").await;
    c.refused(
        "message from an invitee who has not accepted",
        &a,
        403,
        "POL1012",
    );
    assert!(c.messages(ALICE, &group).await.is_empty());
    assert!(c.messages(BOB, &group).await.is_empty());
    assert_eq!(
        c.session(CAROL, &group).await.status,
        Some(ParticipantStatus::Invited)
    );

    // Nobody else has joined yet.
    let lonely = c.create(ALICE, &[BOB]).await;
    let a = c.post_message(ALICE, &lonely, "anyone?").await;
    c.refused("message before anyone joined", &a, 403, "POL1012");
    assert!(c.messages(ALICE, &lonely).await.is_empty());
    // The refusal did not spoil the session: once bob joins, the message goes.
    c.accept(BOB, &lonely).await;
    c.message(ALICE, &lonely, "now").await;
    // A key that resembles no name is another client's extension: ignored, the message sent.
    if c.f == Format::Json {
        let b = r#"{"chatMessage":{"text":"and","vendorExtension":{"successreport":1}}}"#;
        let a = c.raw("POST", &c.urls().messages(ALICE, &lonely), b).await;
        c.ok("a message with an extension", &a, 201);
    }
    // Once bob left, the session is past its setup: 409, not POL1012 "during setup".
    let a = c
        .set_status(BOB, &lonely, BOB, ParticipantStatus::Disconnected)
        .await;
    c.ok("bob leaves", &a, 200);
    let a = c.post_message(ALICE, &lonely, "still there?").await;
    let e = c.refused("message after everyone else left", &a, 409, "SVC0001");
    assert!(
        docs::rendered(&e).contains("has left"),
        "{}",
        docs::rendered(&e)
    );
    let sent = if c.f == Format::Json { 2 } else { 1 };
    assert_eq!(c.messages(ALICE, &lonely).await.len(), sent);
}

/// Participant status: accepting twice 409, `Invited` 400 `SVC0002`, someone else's 403.
async fn status_cases(c: &Ctx<'_>) {
    let sid = c.create(ALICE, &[BOB, CAROL]).await;
    c.accept(BOB, &sid).await;
    let before = c.participants(ALICE, &sid).await;

    let a = c
        .set_status(BOB, &sid, BOB, ParticipantStatus::Connected)
        .await;
    c.refused("accept twice", &a, 409, "SVC0001");

    for user in [BOB, CAROL] {
        let a = c
            .set_status(user, &sid, user, ParticipantStatus::Invited)
            .await;
        let e = c.refused(&format!("{user} sets status Invited"), &a, 400, "SVC0002");
        assert!(e.service_exception.is_some());
    }

    let a = c
        .set_status(ALICE, &sid, CAROL, ParticipantStatus::Connected)
        .await;
    c.refused("originator accepts for carol", &a, 403, "POL0001");
    let a = c
        .set_status(BOB, &sid, ALICE, ParticipantStatus::Disconnected)
        .await;
    c.refused("bob disconnects alice", &a, 403, "POL0001");

    c.assert_carol_still_invited(&sid, &before).await;
}

/// Delivery confirmations: by the sender 403, twice 409, `Sent` 400, by a non-recipient 404.
async fn delivery_cases(c: &Ctx<'_>) {
    let sid = c.create(ALICE, &[BOB, CAROL]).await;
    c.accept(BOB, &sid).await;
    // Carol joins after the message: she is not one of its recipients.
    let mid = c.message(ALICE, &sid, "for bob").await;
    c.accept(CAROL, &sid).await;

    let a = c.confirm(ALICE, &sid, &mid, MessageStatus::Delivered).await;
    let e = c.refused("sender confirms its own message", &a, 403, "POL0001");
    assert!(e.policy_exception.is_some());
    assert_eq!(
        c.message_status(ALICE, &sid, &mid).await,
        MessageStatus::Sent
    );

    for status in [MessageStatus::Sent, MessageStatus::Failed] {
        let a = c.confirm(BOB, &sid, &mid, status).await;
        c.refused(&format!("confirm {status}"), &a, 400, "SVC0002");
    }
    assert_eq!(c.message_status(BOB, &sid, &mid).await, MessageStatus::Sent);

    let a = c.confirm(BOB, &sid, &mid, MessageStatus::Delivered).await;
    c.ok("confirm Delivered", &a, 204);
    let a = c.confirm(BOB, &sid, &mid, MessageStatus::Delivered).await;
    c.refused("confirm Delivered twice", &a, 409, "SVC0001");
    assert_eq!(
        c.message_status(BOB, &sid, &mid).await,
        MessageStatus::Delivered
    );
    let a = c.confirm(BOB, &sid, &mid, MessageStatus::Displayed).await;
    c.ok("confirm Displayed", &a, 204);
    let a = c.confirm(BOB, &sid, &mid, MessageStatus::Delivered).await;
    c.refused("confirm Delivered after Displayed", &a, 409, "SVC0001");
    assert_eq!(
        c.message_status(BOB, &sid, &mid).await,
        MessageStatus::Displayed
    );

    let a = c.confirm(CAROL, &sid, &mid, MessageStatus::Delivered).await;
    c.refused("a non-recipient confirms", &a, 404, "SVC2008");
    assert!(c.messages(CAROL, &sid).await.is_empty());
    assert_eq!(
        c.message_status(ALICE, &sid, &mid).await,
        MessageStatus::Displayed
    );
}

/// Ending a session: only the originator (403), only once (then it is gone: 404, issue 11
/// item 4; was 409 and the session stayed readable).
async fn end_cases(c: &Ctx<'_>) {
    let sid = c.create(ALICE, &[BOB, CAROL]).await;
    c.accept(BOB, &sid).await;
    for user in [BOB, CAROL] {
        let a = c.delete(&c.urls().session(user, &sid)).await;
        c.refused(&format!("{user} ends alice's session"), &a, 403, "POL0001");
    }
    assert_eq!(c.session(ALICE, &sid).await.ended, Some(false));
    c.message(BOB, &sid, "still open").await;

    let a = c.delete(&c.urls().session(ALICE, &sid)).await;
    c.ok("end session", &a, 204);
    let a = c.delete(&c.urls().session(ALICE, &sid)).await;
    c.refused("end twice", &a, 404, "SVC2008");
    let a = send_empty("GET", &c.urls().session(ALICE, &sid), c.f).await;
    c.refused("read an ended session", &a, 404, "SVC2008");
    let a = send_empty("GET", &c.urls().messages(ALICE, &sid), c.f).await;
    c.refused("read an ended session's messages", &a, 404, "SVC2008");
}

/// Cancelling an invitation: already answered 409, not the inviter 403.
async fn cancel_cases(c: &Ctx<'_>) {
    let sid = c.create(ALICE, &[BOB, CAROL]).await;
    c.accept(BOB, &sid).await;
    let before = c.participants(ALICE, &sid).await;

    let a = c.delete(&c.urls().participant(ALICE, &sid, BOB)).await;
    c.refused("cancel an accepted invitation", &a, 409, "SVC0001");
    let a = c.delete(&c.urls().participant(BOB, &sid, CAROL)).await;
    c.refused(
        "cancel by someone who is not the inviter",
        &a,
        403,
        "POL0001",
    );

    // A declined invitation is answered too.
    let d = c.create(ALICE, &[BOB, CAROL]).await;
    let a = c
        .set_status(CAROL, &d, CAROL, ParticipantStatus::Disconnected)
        .await;
    c.ok("carol declines", &a, 200);
    let a = c.delete(&c.urls().participant(ALICE, &d, CAROL)).await;
    c.refused("cancel a declined invitation", &a, 409, "SVC0001");

    c.assert_carol_still_invited(&sid, &before).await;
}

/// Inviting more participants: already in the session or an ended session 409, listed twice
/// 403 `POL0013`, by an invitee who has not accepted 403, too many 403 `POL1017`, a bad address 400 `SVC0004`.
async fn invite_cases(c: &Ctx<'_>) {
    let invite = |addresses: &[&str]| ParticipantList {
        participant: addresses.iter().map(|a| docs::participant(a)).collect(),
        resource_url: None,
        link: Vec::new(),
    };
    let sid = c.create(ALICE, &[BOB, CAROL]).await;
    c.accept(BOB, &sid).await;
    let url = c.urls().participants(ALICE, &sid);
    let before = c.participants(ALICE, &sid).await;

    for who in [BOB, CAROL, ALICE] {
        let a = send_doc("POST", &url, c.f, &invite(&[DAVE, who])).await;
        c.refused(&format!("invite {who}, already in"), &a, 409, "SVC0001");
    }
    // Listed twice is the body's fault, refused as a start's is (403 POL0013 naming it),
    // not a conflict with the session (nobody of the two is in it).
    let a = send_doc("POST", &url, c.f, &invite(&[DAVE, DAVE])).await;
    let e = c.refused("invite the same new participant twice", &a, 403, "POL0013");
    let p = e.policy_exception.expect("a policyException");
    assert_eq!(p.variables, [DAVE], "[{:?}] the address listed twice", c.f);
    let a = send_doc("POST", &url, c.f, &invite(&[DAVE, "mailto:x@y"])).await;
    c.refused("invite mailto:", &a, 400, "SVC0004");
    let carol_url = c.urls().participants(CAROL, &sid);
    let a = send_doc("POST", &carol_url, c.f, &invite(&[DAVE])).await;
    c.refused(
        "invite by an invitee who has not accepted",
        &a,
        403,
        "POL0001",
    );
    // 3 in the session + 98 = 101.
    let many: Vec<String> = (0..98).map(|i| format!("tel:+1555800{i:04}")).collect();
    let many_refs: Vec<&str> = many.iter().map(String::as_str).collect();
    let a = send_doc("POST", &url, c.f, &invite(&many_refs)).await;
    c.refused("invite up to 101 participants", &a, 403, "POL1017");
    assert_eq!(c.participants(ALICE, &sid).await, before);
    assert_eq!(
        c.session_count(DAVE).await,
        0,
        "a refused invitation reached dave"
    );

    let a = c.delete(&c.urls().session(ALICE, &sid)).await;
    c.ok("end session", &a, 204);
    let a = send_doc("POST", &url, c.f, &invite(&[DAVE])).await;
    c.refused("invite into an ended session", &a, 404, "SVC2008");
    assert_eq!(
        c.session_count(DAVE).await,
        0,
        "a refused invitation reached dave"
    );
}

/// Creating a session: duplicate 403 `POL0013`, only the originator 400, too many 403 `POL1017`.
async fn create_cases(c: &Ctx<'_>) {
    let before = c.session_count(ALICE).await;

    let a = send_doc(
        "POST",
        &c.urls().chat_sessions(ALICE),
        c.f,
        &session_doc(&[BOB, CAROL, BOB]),
    )
    .await;
    let e = c.refused("duplicate participant", &a, 403, "POL0013");
    assert!(docs::rendered(&e).contains(BOB), "{}", docs::rendered(&e));

    let a = send_doc(
        "POST",
        &c.urls().chat_sessions(ALICE),
        c.f,
        &session_doc(&[ALICE]),
    )
    .await;
    c.refused("only the originator", &a, 400, "SVC0002");
    let empty = match c.f {
        Format::Json => r#"{"chatSessionInformation":{"subject":"x","participant":[]}}"#.to_owned(),
        Format::Xml => format!(
            r#"<chat:chatSessionInformation xmlns:chat="{CHAT}"><subject>x</subject></chat:chatSessionInformation>"#
        ),
    };
    let a = c.raw("POST", &c.urls().chat_sessions(ALICE), &empty).await;
    c.refused("no participant at all", &a, 400, "SVC0002");

    // OMA 2012's flat one-to-one fields contradicting this face's request: another
    // originator, an invitee outside the list (before: a 201 without them, silently).
    let mut other_originator = session_doc(&[BOB]);
    other_originator.originator_address = Some(CAROL.to_owned());
    let mut other_invitee = session_doc(&[BOB]);
    other_invitee.t_participant_address = Some(CAROL.to_owned());
    for (what, doc, field) in [
        (
            "another originatorAddress",
            &other_originator,
            "originatorAddress",
        ),
        (
            "a tParticipantAddress outside the list",
            &other_invitee,
            "tParticipantAddress",
        ),
    ] {
        let a = send_doc("POST", &c.urls().chat_sessions(ALICE), c.f, doc).await;
        let e = c.refused(what, &a, 400, "SVC0002");
        assert!(docs::rendered(&e).contains(field), "{}", docs::rendered(&e));
    }
    assert_eq!(c.session_count(CAROL).await, 0, "carol was never invited");
    // The same addresses in another form are no contradiction (compared in canonical form).
    let mut same = session_doc(&[CAROL]);
    same.originator_address = Some("tel:+1-555-123-0001".to_owned());
    same.t_participant_address = Some("tel:+1-555-123-0003".to_owned());
    let a = send_doc("POST", &c.urls().chat_sessions(ALICE), c.f, &same).await;
    c.ok("the originator and invitee in another form", &a, 201);
    let sid = docs::last_segment(a.header("location"));
    let a = c.delete(&c.urls().session(ALICE, &sid)).await;
    c.ok("end it", &a, 204);

    let many: Vec<String> = (0..100).map(|i| format!("tel:+1555700{i:04}")).collect();
    let many_refs: Vec<&str> = many.iter().map(String::as_str).collect();
    let a = send_doc(
        "POST",
        &c.urls().chat_sessions(ALICE),
        c.f,
        &session_doc(&many_refs),
    )
    .await;
    let e = c.refused("101 participants", &a, 403, "POL1017");
    assert!(docs::rendered(&e).contains("100"), "{}", docs::rendered(&e));

    assert_eq!(
        c.session_count(ALICE).await,
        before,
        "a refused create made a session"
    );
    assert_eq!(
        c.session_count(BOB).await,
        0,
        "a refused create invited bob"
    );
    assert_eq!(
        c.session_count(&many[99]).await,
        0,
        "a refused create invited someone"
    );

    // The boundary: 99 invitees and the originator make 100, which is allowed.
    c.create(ALICE, &many_refs[..99]).await;
}

/// Bodies that do not decode: missing required fields, bad notifyURL, unknown enum values.
async fn malformed_cases(c: &Ctx<'_>) {
    let xml = |root: &str, inner: &str| {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><chat:{root} xmlns:chat="{CHAT}">{inner}</chat:{root}>"#
        )
    };
    let body = |json: &str, root: &str, inner: &str| match c.f {
        Format::Json => json.to_owned(),
        Format::Xml => xml(root, inner),
    };

    let sid = c.connected_pair().await;
    c.message(ALICE, &sid, "hello").await;
    let mid = c.message(ALICE, &sid, "second").await;
    let before_messages = c.messages(BOB, &sid).await;
    let before_subs = c.subscription_count(DAVE).await;

    // chatMessage without text.
    let b = body(
        r#"{"chatMessage":{"successReport":true}}"#,
        "chatMessage",
        "<successReport>true</successReport>",
    );
    let a = c.raw("POST", &c.urls().messages(ALICE, &sid), &b).await;
    let e = c.refused("chatMessage without text", &a, 400, "SVC0002");
    assert!(
        docs::rendered(&e).contains("text"),
        "{}",
        docs::rendered(&e)
    );
    assert_eq!(c.messages(BOB, &sid).await, before_messages);

    // chatSubscription without callbackReference.
    let b = body(
        r#"{"chatSubscription":{"duration":60}}"#,
        "chatSubscription",
        "<duration>60</duration>",
    );
    let a = c.raw("POST", &c.urls().subscriptions(DAVE), &b).await;
    let e = c.refused(
        "chatSubscription without callbackReference",
        &a,
        400,
        "SVC0002",
    );
    assert!(
        docs::rendered(&e).contains("callbackReference"),
        "{}",
        docs::rendered(&e)
    );

    // notifyURL that is not an absolute http(s) URL.
    for url in ["ftp://x", "not a url", "/relative/path"] {
        let a = send_doc(
            "POST",
            &c.urls().subscriptions(DAVE),
            c.f,
            &docs::subscription(url),
        )
        .await;
        let e = c.refused(&format!("notifyURL {url:?}"), &a, 400, "SVC0002");
        assert!(
            docs::rendered(&e).contains("notifyURL"),
            "{}",
            docs::rendered(&e)
        );
    }
    let mut negative = docs::subscription("http://127.0.0.1:10/notify");
    negative.duration = Some(-5);
    let b = docs::encode(c.f, &negative);
    let a = c.raw("POST", &c.urls().subscriptions(DAVE), &b).await;
    c.refused("negative duration", &a, 400, "SVC0002");

    // Bodies that are not a document at all, or the wrong document.
    let garbage = body(
        r#"{"chatMessage":{"text":"x""#,
        "chatMessage",
        "<text>x</tex>",
    );
    let wrong_root = body(
        r#"{"chatSubscription":{"text":"x"}}"#,
        "chatSubscription",
        "<text>x</text>",
    );
    for (what, b) in [
        ("truncated body", garbage.as_str()),
        ("wrong root", wrong_root.as_str()),
        ("empty body", ""),
    ] {
        let a = c.raw("POST", &c.urls().messages(ALICE, &sid), b).await;
        c.refused(what, &a, 400, "SVC0002");
    }
    assert_eq!(
        c.subscription_count(DAVE).await,
        before_subs,
        "a refused subscribe subscribed"
    );

    // Unknown enum values: the answer names the allowed ones.
    let b = body(
        r#"{"participantSessionStatus":{"status":"Bogus"}}"#,
        "participantSessionStatus",
        "<status>Bogus</status>",
    );
    let url = c.urls().participant_status(BOB, &sid, BOB);
    let a = c.raw("POST", &url, &b).await;
    let e = c.refused("participant status Bogus", &a, 400, "SVC0002");
    let text = docs::rendered(&e);
    for v in ["Bogus", "Invited", "Connected", "Disconnected"] {
        assert!(
            text.contains(v),
            "[{:?}] enum error does not mention {v}: {text}",
            c.f
        );
    }

    let b = body(
        r#"{"messageDeliveryStatus":{"status":"Bogus"}}"#,
        "messageDeliveryStatus",
        "<status>Bogus</status>",
    );
    let url = c.urls().message_status(BOB, &sid, &mid);
    let a = c.raw("POST", &url, &b).await;
    let e = c.refused("message status Bogus", &a, 400, "SVC0002");
    let text = docs::rendered(&e);
    for v in ["Bogus", "Sent", "Delivered", "Displayed", "Failed"] {
        assert!(
            text.contains(v),
            "[{:?}] enum error does not mention {v}: {text}",
            c.f
        );
    }

    // JSON: a field name misspelt in case, `_` or `-` is told, with the name it misspells
    // (ignored, the report was never asked for; the format never chosen).
    if c.f == Format::Json {
        for (what, url, b, key, name) in [
            (
                "successreport",
                c.urls().messages(ALICE, &sid),
                r#"{"chatMessage":{"text":"x","successreport":true}}"#,
                "chatMessage.successreport",
                "successReport",
            ),
            (
                "notificationformat",
                c.urls().subscriptions(DAVE),
                r#"{"chatSubscription":{"callbackReference":{"notifyURL":"http://127.0.0.1:10/n"},"notificationformat":"XML"}}"#,
                "chatSubscription.notificationformat",
                "notificationFormat",
            ),
            (
                "Address in a list's item",
                c.urls().chat_sessions(ALICE),
                r#"{"chatSessionInformation":{"participant":[{"Address":"sip:bob@example.com"}]}}"#,
                "chatSessionInformation.participant[0].Address",
                "address",
            ),
            (
                "notify_url",
                c.urls().subscriptions(DAVE),
                r#"{"chatSubscription":{"callbackReference":{"notify_url":"http://127.0.0.1:10/n"}}}"#,
                "chatSubscription.callbackReference.notify_url",
                "notifyURL",
            ),
        ] {
            let a = c.raw("POST", &url, b).await;
            let text = docs::rendered(&c.refused(what, &a, 400, "SVC0002"));
            assert!(
                text.contains(&format!("at {key})")) && text.contains(&format!("`{name}`?")),
                "{what}: {text}"
            );
        }
        // Several participants sent as one `participantInformation`: told so, and what to
        // send instead.
        let b = format!(r#"{{"participantInformation":[{{"address":"{CAROL}"}}]}}"#);
        let a = c.raw("POST", &c.urls().participants(ALICE, &sid), &b).await;
        let text = docs::rendered(&c.refused("a list of participants", &a, 400, "SVC0002"));
        assert!(
            text.contains("`participantInformation` is one object, not a list")
                && text.contains("send one `participantList`"),
            "{text}"
        );
    }

    let b = body(
        r#"{"chatMessage":{"text":"x","reportRequest":["Bogus"]}}"#,
        "chatMessage",
        "<text>x</text><reportRequest>Bogus</reportRequest>",
    );
    let a = c.raw("POST", &c.urls().messages(ALICE, &sid), &b).await;
    c.refused("reportRequest Bogus", &a, 400, "SVC0002");

    // Nothing changed.
    assert_eq!(
        c.participants(ALICE, &sid).await,
        vec![
            (ALICE.to_owned(), Some(ParticipantStatus::Connected)),
            (BOB.to_owned(), Some(ParticipantStatus::Connected)),
        ]
    );
    assert_eq!(c.messages(BOB, &sid).await, before_messages);
    assert_eq!(c.message_status(BOB, &sid, &mid).await, MessageStatus::Sent);
}

// ---------------------------------------------------------------------- known bugs

/// A `duration` the server cannot represent as a deadline must still get an OMA answer: a
/// 400 `SVC0002`, or a 201 with the (shorter) duration granted.
#[tokio::test]
async fn huge_duration_is_answered() {
    let srv = Server::default_for_tests();
    for f in FORMATS {
        let c = Ctx { srv: &srv, f };
        let before = c.subscription_count(DAVE).await;
        let mut doc = docs::subscription("http://127.0.0.1:10/notify");
        doc.duration = Some(i64::MAX);
        let sent = support::http_client(support::APP_TOKEN)
            .post(c.urls().subscriptions(DAVE))
            .header("content-type", f.media_type())
            .header("accept", f.media_type())
            .body(docs::encode(f, &doc))
            .send()
            .await;
        let resp = sent.unwrap_or_else(|e| panic!("[{f:?}] duration i64::MAX: no answer: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.text().await.unwrap();
        let a = Answer {
            status,
            headers,
            body,
        };
        if a.status == 201 {
            let granted = a.decode::<ChatSubscription>().duration.unwrap_or(0);
            assert!(
                granted > 0,
                "[{f:?}] granted {granted}, which means no expiry"
            );
            assert_eq!(c.subscription_count(DAVE).await, before + 1);
        } else {
            c.refused("duration i64::MAX", &a, 400, "SVC0002");
            assert_eq!(c.subscription_count(DAVE).await, before);
        }
    }
}

/// `tel:+1-555-123-0003` and `tel:+15551230003` are one number (RFC 3966: visual separators
/// do not count), and `SIP:bob@EXAMPLE.com` is `sip:bob@example.com` (RFC 3261: scheme and
/// host compare case-insensitively); listing both spellings lists one invitee twice.
#[tokio::test]
async fn one_user_in_two_spellings_is_a_duplicate() {
    let srv = Server::default_for_tests();
    for f in FORMATS {
        let c = Ctx { srv: &srv, f };
        let sessions = c.urls().chat_sessions(ALICE);
        for pair in [[CAROL, "tel:+1-555-123-0003"], [BOB, "SIP:bob@EXAMPLE.com"]] {
            let a = send_doc("POST", &sessions, f, &session_doc(&pair)).await;
            c.refused(&format!("create with {pair:?}"), &a, 403, "POL0013");
        }
        // The originator may be listed; in another spelling it is still the originator.
        let a = send_doc(
            "POST",
            &sessions,
            f,
            &session_doc(&[BOB, "tel:+1-555-123-0001"]),
        )
        .await;
        c.ok("create listing the originator in another spelling", &a, 201);
        let s: ChatSessionInformation = a.decode();
        assert_eq!(s.participant.len(), 2, "[{f:?}] {:#?}", s.participant);
    }
}

/// A path that matches no route never reaches the API, and is still answered as an OMA
/// error: `404 SVC2008` in the negotiated format, never a 5xx, never the router's own JSON.
#[tokio::test]
async fn unrouted_path_is_an_oma_404() {
    let srv = Server::default_for_tests();
    for f in FORMATS {
        let c = Ctx { srv: &srv, f };
        for url in [
            c.url(ALICE, "/nope"),
            c.session_url(ALICE, "sess-nope", "/bogus"),
            format!("{}/v2/chat", srv.base),
        ] {
            let a = c.get(&url).await;
            a.assert_error(404, "SVC2008", f);
        }
    }
}
