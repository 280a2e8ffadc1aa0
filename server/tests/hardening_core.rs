//! Issue 11 (hardening), the chat-core and storage items, against the real binary with real
//! callback listeners:
//!
//! - item 3: the application that ends a session is notified (`SessionEnded`) too;
//! - item 4: a deleted (ended) session is gone: 404 on it and on every sub-resource;
//! - item 9: invitation quotas are per inviter and per (inviter, invitee) pair, errors name
//!   no other user's counts, and cancel/re-invite loops hit a per-inviter rate;
//! - item 13: file modes of the data directory under umask 022;
//! - item 14: an unwritable data directory refuses to start; no `-shm` is mapped;
//! - item 15: a storage failure answers the waiting request 503 before the process stops.

mod support;

use netapi_chat_api::{ChatEventNotification, EventType};
use netapi_chat_runtime::Format;
use std::time::Duration;
use support::{Answer, Listener, Server, send, send_empty};

const ALICE: &str = "tel:+15551230001";
const BOB: &str = "sip:bob@example.com";

/// A JSON request with an `Accept` of `format`.
async fn post_json(url: &str, body: &str, format: Format) -> Answer {
    send(
        "POST",
        url,
        &[
            ("content-type", "application/json"),
            ("accept", format.media_type()),
        ],
        Some(body),
    )
    .await
}

/// Subscribes `user` with a callback to `listener`, notifications in `format`.
async fn subscribe(server: &Server, user: &str, listener: &Listener, format: Format) {
    let nf = if format == Format::Xml { "XML" } else { "JSON" };
    let body = format!(
        r#"{{"chatSubscription":{{"callbackReference":{{"notifyURL":"{}","notificationFormat":"{nf}"}}}}}}"#,
        listener.url
    );
    let a = post_json(&server.url(user, "/subscriptions"), &body, Format::Json).await;
    assert_eq!(a.status, 201, "subscribe {user}: {}", a.body);
}

/// Starts a session of `from` inviting `to`; answers its id.
async fn create_session(server: &Server, from: &str, to: &[&str]) -> Answer {
    let participants: Vec<String> = to
        .iter()
        .map(|a| format!(r#"{{"address":"{a}"}}"#))
        .collect();
    let body = format!(
        r#"{{"chatSessionInformation":{{"participant":[{}]}}}}"#,
        participants.join(",")
    );
    post_json(&server.url(from, "/chatSessions"), &body, Format::Json).await
}

fn session_id(a: &Answer) -> String {
    assert_eq!(a.status, 201, "create session: {}", a.body);
    a.header("location")
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned()
}

async fn set_status(server: &Server, user: &str, sid: &str, status: &str) -> Answer {
    let url = server.url(
        user,
        &format!(
            "/chatSessions/{sid}/participants/{}/status",
            support::enc(user)
        ),
    );
    post_json(
        &url,
        &format!(r#"{{"participantSessionStatus":{{"status":"{status}"}}}}"#),
        Format::Json,
    )
    .await
}

/// A connected 1-1 session of alice and bob, with one message from alice; answers (session
/// id, message id).
async fn connected_pair(server: &Server) -> (String, String) {
    let sid = session_id(&create_session(server, ALICE, &[BOB]).await);
    let a = set_status(server, BOB, &sid, "Connected").await;
    assert_eq!(a.status, 200, "accept: {}", a.body);
    let a = post_json(
        &server.url(ALICE, &format!("/chatSessions/{sid}/messages")),
        r#"{"chatMessage":{"text":"hello"}}"#,
        Format::Json,
    )
    .await;
    assert_eq!(a.status, 201, "send: {}", a.body);
    let mid = a
        .header("location")
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    (sid, mid)
}

/// Finds the `chatEventNotification` about `sid` among what `listener` received.
async fn event_for(listener: &Listener, sid: &str, format: Format) -> ChatEventNotification {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        for r in listener.all() {
            if r.kind() == "chatEventNotification" {
                assert_eq!(r.format(), format, "notification format");
                let n: ChatEventNotification = r.decode();
                if n.session_id == sid {
                    return n;
                }
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no chatEventNotification for {sid} at {}: {:#?}",
            listener.url,
            listener.all()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------- item 3

/// Seed 7.1.5, figure 6: the application that ends a session gets `SessionEnded` too, in the
/// format its subscription asked for (JSON and XML subscribers), as does the other side.
#[tokio::test]
async fn ending_application_is_notified_json_and_xml() {
    for format in [Format::Json, Format::Xml] {
        let server = Server::default_for_tests();
        let alice = Listener::start().await;
        let bob = Listener::start().await;
        subscribe(&server, ALICE, &alice, format).await;
        subscribe(&server, BOB, &bob, format).await;
        let (sid, _) = connected_pair(&server).await;
        let a = send_empty(
            "DELETE",
            &server.url(ALICE, &format!("/chatSessions/{sid}")),
            format,
        )
        .await;
        assert_eq!(a.status, 204, "end: {}", a.body);
        let n = event_for(&bob, &sid, format).await;
        assert_eq!(n.event_type, EventType::SessionEnded);
        let n = event_for(&alice, &sid, format).await;
        assert_eq!(
            n.event_type,
            EventType::SessionEnded,
            "[{format:?}] the ending application is told the session ended"
        );
    }
}

// ---------------------------------------------------------------- item 4

/// After a successful DELETE the session is gone for both participants: the session, a
/// second DELETE and every sub-resource answer 404 `SVC2008` (JSON and XML answers).
#[tokio::test]
async fn deleted_session_is_gone_everywhere() {
    let server = Server::default_for_tests();
    for format in [Format::Json, Format::Xml] {
        let (sid, mid) = connected_pair(&server).await;
        let a = send_empty(
            "DELETE",
            &server.url(ALICE, &format!("/chatSessions/{sid}")),
            format,
        )
        .await;
        assert_eq!(a.status, 204, "end: {}", a.body);
        for user in [ALICE, BOB] {
            let s = format!("/chatSessions/{sid}");
            let p = format!("{s}/participants/{}", support::enc(BOB));
            let m = format!("{s}/messages/{mid}");
            for (method, rest) in [
                ("GET", s.clone()),
                ("DELETE", s.clone()),
                ("GET", format!("{s}/participants")),
                ("GET", p.clone()),
                ("GET", format!("{p}/status")),
                ("DELETE", p.clone()),
                ("GET", format!("{s}/messages")),
                ("GET", m.clone()),
                ("GET", format!("{m}/status")),
            ] {
                let a = send_empty(method, &server.url(user, &rest), format).await;
                assert_eq!(
                    a.status, 404,
                    "[{format:?}] {user} {method} {rest} after DELETE: {}",
                    a.body
                );
                a.assert_error(404, "SVC2008", format);
            }
            let a = post_json(
                &server.url(user, &format!("{s}/messages")),
                r#"{"chatMessage":{"text":"anyone?"}}"#,
                format,
            )
            .await;
            a.assert_error(404, "SVC2008", format);
        }
        let a = set_status(&server, BOB, &sid, "Connected").await;
        assert_eq!(a.status, 404, "re-join after DELETE: {}", a.body);
        // The session is not listed any more either.
        let a = send_empty("GET", &server.url(BOB, "/chatSessions"), Format::Json).await;
        assert!(!a.body.contains(&sid), "still listed: {}", a.body);
    }
}

// ---------------------------------------------------------------- item 9

const MALLORY: &str = "sip:mallory@example.com";
const CAROL: &str = "sip:carol@example.com";

/// One user cannot block everyone's invitations to a victim: mallory fills her own quota of
/// invitations to bob, and carol can still invite bob. Mallory's refusal names neither bob
/// nor how many invitations bob has waiting.
#[tokio::test]
async fn one_inviter_cannot_block_invitations_to_a_victim() {
    let server = Server::start(&[
        ("NETAPI_CHAT_MAX_PENDING_INVITATIONS", "5"),
        ("NETAPI_CHAT_MAX_PENDING_INVITATIONS_PER_INVITEE", "2"),
    ]);
    for format in [Format::Json, Format::Xml] {
        let victim = if format == Format::Json {
            BOB
        } else {
            "tel:+15551230002"
        };
        let mut refused = None;
        for _ in 0..10 {
            let a = create_session(&server, MALLORY, &[victim]).await;
            if a.status != 201 {
                refused = Some(a);
                break;
            }
        }
        let a = refused.expect("mallory is stopped by a quota");
        // The refusal, in the negotiated format, says nothing about the victim.
        let url = server.url(MALLORY, "/chatSessions");
        let again = send(
            "POST",
            &url,
            &[
                ("content-type", "application/json"),
                ("accept", format.media_type()),
            ],
            Some(&format!(
                r#"{{"chatSessionInformation":{{"participant":[{{"address":"{victim}"}}]}}}}"#
            )),
        )
        .await;
        let e = again.assert_error(403, "POL2008", format);
        let ex = e.policy_exception.expect("a policy exception");
        let rendered = format!("{} {:?}", ex.text, ex.variables);
        assert!(
            !rendered.contains(victim) && !rendered.contains("waiting for"),
            "the refusal tells mallory about {victim}: {rendered} (first refusal: {})",
            a.body
        );
        // Carol's invitation to the same victim goes through.
        let a = create_session(&server, CAROL, &[victim]).await;
        assert_eq!(
            a.status, 201,
            "[{format:?}] carol is blocked by mallory's invitations: {}",
            a.body
        );
    }
}

/// Cancel-and-re-invite cycles spend the inviter's invitation rate: withdrawing an
/// invitation frees its pending slot but not the rate, so the loop ends in 429 `POL2005`
/// with `Retry-After`, in JSON and XML.
#[tokio::test]
async fn cancel_and_reinvite_loop_hits_the_rate() {
    let server = Server::start(&[("NETAPI_CHAT_INVITATION_RATE", "6")]);
    for (format, inviter) in [(Format::Json, MALLORY), (Format::Xml, "tel:+15551230002")] {
        let mut stopped = None;
        for round in 0..20 {
            let body = format!(
                r#"{{"chatSessionInformation":{{"participant":[{{"address":"{BOB}"}}]}}}}"#
            );
            let a = post_json(&server.url(inviter, "/chatSessions"), &body, format).await;
            if a.status != 201 {
                stopped = Some((round, a));
                break;
            }
            let sid = session_id(&a);
            let a = send_empty(
                "DELETE",
                &server.url(
                    inviter,
                    &format!("/chatSessions/{sid}/participants/{}", support::enc(BOB)),
                ),
                format,
            )
            .await;
            assert_eq!(a.status, 204, "cancel: {}", a.body);
        }
        let (round, a) = stopped.expect("the loop is stopped by the invitation rate");
        assert_eq!(
            round, 6,
            "[{format:?}] stopped after the 6 invitations of the minute"
        );
        a.assert_error(429, "POL2005", format);
        let retry: u64 = a.header("retry-after").parse().unwrap_or(0);
        assert!(
            (1..=60).contains(&retry),
            "Retry-After {:?}",
            a.header("retry-after")
        );
    }
}
