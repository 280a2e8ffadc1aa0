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
    let a = post_json(&server.urls().subscriptions(user), &body, Format::Json).await;
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
    post_json(&server.urls().chat_sessions(from), &body, Format::Json).await
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
    let url = server.urls().participant_status(user, sid, user);
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
        &server.urls().messages(ALICE, &sid),
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
        let a = send_empty("DELETE", &server.urls().session(ALICE, &sid), format).await;
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
        let a = send_empty("DELETE", &server.urls().session(ALICE, &sid), format).await;
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
        let a = send_empty("GET", &server.urls().chat_sessions(BOB), Format::Json).await;
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
        let url = server.urls().chat_sessions(MALLORY);
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
            let a = post_json(&server.urls().chat_sessions(inviter), &body, format).await;
            if a.status != 201 {
                stopped = Some((round, a));
                break;
            }
            let sid = session_id(&a);
            let a = send_empty(
                "DELETE",
                &server.urls().participant(inviter, &sid, BOB),
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

// ---------------------------------------------------------------- items 13, 14, 15: the real
// binary, started under a umask to see its exit status and stderr.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use support::{Tmpfs, start_under_umask};

fn fresh_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "netapi-chat-hardening-{name}-{}",
        uuid::Uuid::new_v4().simple()
    ))
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The test token file (the harness's tokens), written into `dir`.
fn write_tokens(dir: &Path) {
    std::fs::write(dir.join("tokens"), format!("{} *\n", support::APP_TOKEN))
        .expect("write tokens");
}

// ---------------------------------------------------------------- item 13

/// First start under umask 022: the data directory is 0700, the generated webhook secret and
/// token file, the database and its WAL are 0600, and there is no `-shm` at all (item 14).
#[tokio::test]
async fn first_start_under_umask_022_keeps_the_data_private() {
    let parent = fresh_dir("modes");
    std::fs::create_dir_all(&parent).unwrap();
    std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = parent.join("data");
    let server = start_under_umask(&dir, &[], "022");
    assert!(server.base.is_some(), "not started: {}", server.stderr());
    // A write, so that the WAL holds something.
    let tokens = std::fs::read_to_string(dir.join("tokens")).expect("generated token file");
    let token = tokens
        .lines()
        .find(|l| !l.starts_with('#') && !l.trim().is_empty())
        .and_then(|l| l.split_whitespace().next())
        .expect("a token")
        .to_owned();
    let a = send(
        "POST",
        &server.urls().chat_sessions(ALICE),
        &[
            ("authorization", &format!("Bearer {token}")),
            ("content-type", "application/json"),
        ],
        Some(&format!(
            r#"{{"chatSessionInformation":{{"participant":[{{"address":"{BOB}"}}]}}}}"#
        )),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(mode(&dir), 0o700, "data directory");
    // No server-wide webhook secret is made: each subscription has its own.
    assert!(!dir.join("webhook-secret").exists());
    for f in ["tokens", "netapi-chat.sqlite3", "netapi-chat.sqlite3-wal"] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    assert!(
        !dir.join("netapi-chat.sqlite3-shm").exists(),
        "no -shm file is created (the WAL index is not memory-mapped)"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&parent);
}

/// An existing data directory and token file that other users can read are warned about on
/// stderr (the server does not change what the operator set up), and files the server owns
/// that an earlier version left 0644 are tightened to 0600.
#[tokio::test]
async fn open_directory_and_token_file_are_warned_about() {
    let dir = fresh_dir("warn");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    write_tokens(&dir);
    std::fs::set_permissions(dir.join("tokens"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let secret = dir.join("webhook-secret");
    std::fs::write(&secret, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let server = start_under_umask(&dir, &[], "022");
    assert!(server.base.is_some(), "not started: {}", server.stderr());
    std::thread::sleep(Duration::from_millis(200));
    let err = server.stderr();
    assert!(
        err.contains("token file") && err.contains("0644"),
        "no warning about the token file: {err}"
    );
    assert!(
        err.contains("data directory") && err.contains("0755"),
        "no warning about the data directory: {err}"
    );
    assert_eq!(mode(&secret), 0o600, "webhook secret tightened");
    assert_eq!(
        mode(&dir.join("tokens")),
        0o644,
        "the token file is left alone"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------- item 14

/// A data directory that cannot be written at start (a read-only file system: root is not
/// stopped by file modes) refuses to start: non-zero exit, a message naming the directory,
/// never a listening line.
#[tokio::test]
async fn unwritable_data_directory_refuses_to_start() {
    let Some(fs) = Tmpfs::mount("8m") else {
        return;
    };
    write_tokens(&fs.0);
    // A first run creates the database, as an earlier start would have.
    let mut first = start_under_umask(&fs.0, &[], "022");
    assert!(first.base.is_some(), "first start: {}", first.stderr());
    let _ = first.child.kill();
    let _ = first.wait_exit(10);
    drop(first);
    fs.remount_read_only();
    let mut server = start_under_umask(&fs.0, &[], "022");
    let listening = server.base.clone();
    let status = server.wait_exit(20);
    let err = server.stderr();
    assert!(
        listening.is_none(),
        "it listens on a read-only data directory ({listening:?}); stderr: {err}"
    );
    let status = status.expect("it exits");
    assert!(!status.success(), "exit status {status:?}");
    assert!(
        err.contains("not writable") && err.contains(&fs.0.display().to_string()),
        "the message names the problem and the directory: {err}"
    );
}

/// One data directory, one server: a second one on the same directory refuses to start with
/// a message (the database is held in exclusive locking mode).
#[tokio::test]
async fn second_server_on_one_data_directory_refuses_to_start() {
    let dir = support::temp_data_dir();
    let first = start_under_umask(&dir, &[], "077");
    assert!(first.base.is_some(), "first: {}", first.stderr());
    let mut second = start_under_umask(&dir, &[], "077");
    let listening = second.base.clone();
    let status = second.wait_exit(20);
    let err = second.stderr();
    assert!(listening.is_none(), "a second server listens: {err}");
    assert!(!status.expect("it exits").success());
    assert!(err.contains("in use by another process"), "{err}");
    drop(first);
}

// ---------------------------------------------------------------- item 15

/// The disk fills up under a running server: the request whose change cannot be stored gets
/// `503 SVC2001` with an OMA body and `Retry-After` (not a reset connection), then the process
/// stops with a
/// message and a non-zero status (no signal).
#[tokio::test]
async fn full_disk_answers_503_then_stops() {
    let Some(fs) = Tmpfs::mount("2m") else {
        return;
    };
    write_tokens(&fs.0);
    let mut server = start_under_umask(&fs.0, &[], "077");
    assert!(server.base.is_some(), "start: {}", server.stderr());
    // Fill the file system.
    {
        let mut filler = std::fs::File::create(fs.0.join("filler")).expect("filler");
        let chunk = vec![0u8; 16 * 1024];
        while filler.write_all(&chunk).is_ok() {}
        let _ = filler.sync_all();
        while filler.write_all(&[0u8; 512]).is_ok() {}
    }
    let mut answer = None;
    for i in 0..50 {
        let body = format!(
            r#"{{"chatSessionInformation":{{"subject":"{}","participant":[{{"address":"{BOB}"}}]}}}}"#,
            "x".repeat(900 + i)
        );
        let a = send(
            "POST",
            &server.urls().chat_sessions(ALICE),
            &[
                ("content-type", "application/json"),
                ("accept", "application/xml"),
            ],
            Some(&body),
        )
        .await;
        if a.status != 201 {
            answer = Some(a);
            break;
        }
    }
    let a = answer.expect("a write fails on the full disk");
    a.assert_error(503, "SVC2001", Format::Xml);
    // When to try again: the server restarts (once there is room) within seconds.
    assert_eq!(a.header("retry-after"), "5", "{:?}", a.headers);
    let status = server.wait_exit(10).expect("the process stops");
    assert!(!status.success(), "exit status {status:?}");
    assert!(
        std::os::unix::process::ExitStatusExt::signal(&status).is_none(),
        "stopped by a signal: {status:?}"
    );
    let err = server.stderr();
    assert!(
        err.contains("storage") && err.contains("503"),
        "the message says what happened: {err}"
    );
}

/// An anonymous customer reference (OMA `acr:`) is a user address like `tel:` and `sip:`:
/// such a user subscribes, chats with a `tel:` user, and is named as given in what the other
/// side receives, in both formats; `acr:auth` stays the keyword: it names the caller, so a
/// start that lists only it invites nobody (400 SVC0002), never a user named `acr:auth`.
#[tokio::test]
async fn an_acr_user_chats_like_any_other() {
    use netapi_chat_api::{MessageNotification, SessionInvitationNotification};
    let srv = support::Server::default_for_tests();
    let acr = "acr:Pseudonym-123";
    let tel = "tel:+15551230077";
    for f in [Format::Json, Format::Xml] {
        let (la, lt) = (
            support::Listener::start().await,
            support::Listener::start().await,
        );
        support::chat::subscribe(&srv, acr, &la, f).await;
        support::chat::subscribe(&srv, tel, &lt, f).await;
        let sid =
            support::chat::connected_session(&srv, acr, &support::docs::session("acr", &[tel]))
                .await;
        let got = lt.wait_for(1).await;
        let inv: SessionInvitationNotification = got[0].decode();
        assert_eq!(inv.originator_address, acr, "{f:?}");
        let url = srv.urls().messages(acr, &sid);
        let a = support::send_doc("POST", &url, f, &support::docs::message("hello")).await;
        assert_eq!(a.status, 201, "{}", a.body);
        let got = lt.wait_for(2).await;
        let m: MessageNotification = got[1].decode();
        assert_eq!(m.sender_address, acr, "{f:?}");
    }
    let a = support::send_doc(
        "POST",
        &srv.urls().chat_sessions(tel),
        Format::Json,
        &support::docs::session("keyword", &["acr:auth"]),
    )
    .await;
    let e = a.assert_error(400, "SVC0002", Format::Json);
    let text = support::docs::rendered(&e);
    assert!(text.contains("other than the originator"), "{text}");
}
