//! The stored format is a contract: a data directory written by an earlier format opens with
//! the current binary, everything in it is there and works; one written by a newer format is
//! refused with a clear message.
//!
//! `fixtures/format-v1/netapi-chat.sqlite3` was written by the real server at the last commit
//! of format version 1 (95dd6bb, before the stored records got types of their own), through
//! [`write_format_v1_fixture`]. `fixtures/format-v3/netapi-chat.sqlite3` by the same scenario
//! (texts included) run on the build of the last commit of format version 3 (46045ad, before
//! messages got their sending time for retention), with `NETAPI_CHAT_TEST_BIN` naming that
//! build. Their callbacks all point at [`FIXTURE_LISTENER`], which nobody listened on while
//! they were written, so their notifications are still in the outbox.

mod support;

use netapi_chat_api::*;
use netapi_chat_runtime::Format;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::docs::{self, last_segment};
use support::{Listener, Received, Server, chat, send_doc, send_empty, within};

const A: &str = "tel:+15551230001";
const B: &str = "sip:bob@example.com";
const C: &str = "sip:alice@example.com";
const D: &str = "tel:+15551230002";

/// Where the fixture's callbacks point: a loopback address and a port below Linux's ephemeral
/// range, so that no other test's listener can be on it by chance.
const FIXTURE_LISTENER: &str = "127.0.0.77:29517";

const DB_FILE: &str = "netapi-chat.sqlite3";

fn fixture(version: u32) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
        "server/tests/fixtures/format-v{version}/netapi-chat.sqlite3"
    ))
}

/// A fresh data directory (with the test token file) holding a copy of a fixture; removed
/// when dropped.
fn fixture_data_dir(version: u32) -> support::TempDir {
    let dir = support::temp_data_dir();
    std::fs::copy(fixture(version), dir.join(DB_FILE)).expect("copy the fixture");
    dir
}

fn v1_data_dir() -> support::TempDir {
    fixture_data_dir(1)
}

/// The fixtures' messages were sent when they were written: a long retention (30 years, under
/// the 10⁹ s every duration stays below) keeps them
/// readable whenever the test runs (retention itself is tested in tests/retention.rs, and
/// below on a migrated directory).
const KEEP_FIXTURE_MESSAGES: (&str, &str) = ("NETAPI_CHAT_RETENTION", "30y");

async fn subscribe(srv: &Server, user: &str, format: NotificationFormat) {
    let mut doc = docs::subscription(&format!("http://{FIXTURE_LISTENER}/notify"));
    doc.callback_reference.callback_data = Some(user.to_owned());
    doc.callback_reference.notification_format = Some(format);
    doc.client_correlator = Some(format!("v1-{user}"));
    chat::subscribe_with(srv, user, &doc, Format::Json).await;
}

async fn start_session(srv: &Server, subject: &str, invitee: &str) -> String {
    let doc = ChatSessionInformation {
        participant: vec![ParticipantInformation {
            name: Some(format!("{invitee} (v1)")),
            ..docs::participant(invitee)
        }],
        originator_name: Some("Originator v1".to_owned()),
        t_participant_address: None,
        t_participant_name: None,
        client_correlator: Some(format!("v1-{subject}")),
        ..docs::session(subject, &[])
    };
    chat::start_session(srv, A, &doc).await
}

async fn accept(srv: &Server, who: &str, sid: &str) {
    chat::accept(srv, who, sid).await;
}

async fn send_message(srv: &Server, who: &str, sid: &str, text: &str) -> String {
    let m = ChatMessage {
        report_request: vec![MessageStatus::Delivered, MessageStatus::Displayed],
        ..docs::message(text)
    };
    chat::send_message(srv, who, sid, &m).await
}

/// Writes the v1 fixture to `$NETAPI_CHAT_FIXTURE_OUT`. Only meaningful at the commit whose
/// format it records (see the module doc); kept to show how the fixture was made.
///
/// Two runs on one data directory, each ended by SIGKILL: the first (invitations wait ten
/// years) leaves four subscriptions, a 1-1 session with an accepted invitation, a message the
/// recipient confirmed `Delivered`, a reply, and a pending invitation; the second (invitations
/// wait 30 s) one more pending invitation, whose deadline has passed by the time a test opens
/// the fixture. No callback ever answers, so every notification is still in the outbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes the fixture; run at the commit whose format it records"]
async fn write_format_v1_fixture() {
    let out = PathBuf::from(
        std::env::var_os("NETAPI_CHAT_FIXTURE_OUT").expect("set NETAPI_CHAT_FIXTURE_OUT"),
    );
    let dir = support::temp_data_dir();
    let retry = ("NETAPI_CHAT_RETRY_SCHEDULE", "0,24h");
    let srv = Server::start_in(
        &dir,
        &[retry, ("NETAPI_CHAT_INVITATION_TIMEOUT_SECS", "315360000")],
        None,
    );
    subscribe(&srv, A, NotificationFormat::Json).await;
    subscribe(&srv, B, NotificationFormat::Xml).await;
    subscribe(&srv, C, NotificationFormat::Json).await;
    subscribe(&srv, D, NotificationFormat::Json).await;
    let s1 = start_session(&srv, "v1 one-to-one", B).await;
    accept(&srv, B, &s1).await;
    let m1 = send_message(&srv, A, &s1, "hello from v1").await;
    let st = MessageDeliveryStatus {
        status: MessageStatus::Delivered,
    };
    let url = srv.urls().message_status(B, &s1, &m1);
    assert_eq!(send_doc("POST", &url, Format::Json, &st).await.status, 204);
    send_message(&srv, B, &s1, "reply from v1").await;
    start_session(&srv, "v1 pending", C).await;
    srv.kill();
    let srv = Server::start_in(
        &dir,
        &[retry, ("NETAPI_CHAT_INVITATION_TIMEOUT_SECS", "30")],
        None,
    );
    start_session(&srv, "v1 timing out", D).await;
    srv.kill();
    // One self-contained file: the WAL copied into the database.
    let db = rusqlite::Connection::open(dir.join(DB_FILE)).expect("open");
    db.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .expect("checkpoint");
    drop(db);
    std::fs::create_dir_all(out.parent().expect("a file path")).expect("fixture dir");
    std::fs::copy(dir.join(DB_FILE), &out).expect("write fixture");
}

/// `callbackData` of a received notification (every fixture subscription echoes its user).
fn callback_data(r: &Received) -> String {
    match r.format() {
        Format::Json => {
            let v: serde_json::Value = serde_json::from_str(&r.body).expect("JSON");
            v[r.kind()]["callbackData"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        }
        Format::Xml => {
            let e = netapi_chat_runtime::xml::parse_document(
                r.body.as_bytes(),
                &netapi_chat_runtime::xml::XmlLimits::default(),
            )
            .expect("XML");
            e.children
                .iter()
                .find(|c| c.name == "callbackData")
                .map(|c| c.text.clone())
                .unwrap_or_default()
        }
    }
}

/// Waits (up to 10 s) for a notification to `user` of `kind` that `matches`.
async fn wait_for(
    l: &Listener,
    user: &str,
    kind: &str,
    matches: impl Fn(&Received) -> bool,
) -> Received {
    within(
        Duration::from_secs(10),
        Duration::from_millis(50),
        async || {
            if let Some(r) = l
                .all()
                .into_iter()
                .find(|r| r.kind() == kind && callback_data(r) == user && matches(r))
            {
                return Ok(r);
            }
            Err(format!("no matching {kind} for {user}: {:#?}", l.all()))
        },
    )
    .await
}

async fn get<T: netapi_chat_runtime::wire::Document>(url: &str) -> T {
    let a = send_empty("GET", url, Format::Json).await;
    assert_eq!(a.status, 200, "GET {url}: {}", a.body);
    a.decode::<T>()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_data_dir_written_by_format_v1_opens_and_works() {
    opens_and_works(1).await;
}

/// The version-3 fixture migrates to the current format too, and its messages got the time
/// they were sent: a short retention then purges them like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_data_dir_written_by_format_v3_opens_and_works() {
    let dir = opens_and_works(3).await;
    let db = rusqlite::Connection::open(dir.join(DB_FILE)).expect("open");
    let times: Vec<(String, i64)> = db
        .prepare("SELECT value, sent_ms FROM messages ORDER BY sent_ms")
        .and_then(|mut q| {
            q.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get(1)?)))?
                .map(|r| r.map(|(v, t)| (String::from_utf8_lossy(&v).into_owned(), t)))
                .collect()
        })
        .expect("messages");
    // Every session the restart found got the time of its last change (format 9), written
    // at that first start: its idle time counts from there across later restarts.
    let sessions: Vec<String> = db
        .prepare("SELECT value FROM records WHERE kind = 'session'")
        .and_then(|mut q| {
            q.query_map([], |r| r.get::<_, Vec<u8>>(0))?
                .map(|r| r.map(|v| String::from_utf8_lossy(&v).into_owned()))
                .collect()
        })
        .expect("sessions");
    assert!(!sessions.is_empty());
    for value in &sessions {
        let v: serde_json::Value = serde_json::from_str(value).expect("JSON");
        assert!(v["changed_ms"].as_i64().is_some_and(|t| t > 0), "{value}");
    }
    drop(db);
    // The fixture's two messages got the time their `date_time` names; the two sent after
    // the upgrade (one of them ad hoc) their own (taken just after their `date_time`, which
    // has whole seconds).
    assert_eq!(times.len(), 4, "{times:?}");
    for (i, (value, sent_ms)) in times.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_str(value).expect("JSON");
        let date = v["date_time"].as_str().expect("date_time");
        let date_ms = humantime::parse_rfc3339(date)
            .expect("RFC 3339")
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis() as i64;
        if i < 2 {
            assert_eq!(*sent_ms, date_ms, "{value}");
        } else {
            assert!(
                (0..2000).contains(&(sent_ms - date_ms)),
                "{sent_ms}: {value}"
            );
        }
    }
    let srv = Server::start_in(
        &dir,
        &[
            ("NETAPI_CHAT_RETENTION", "1s"),
            ("NETAPI_CHAT_PURGE_INTERVAL_MS", "100"),
        ],
        None,
    );
    let sessions: ChatSessionList = get(&srv.urls().chat_sessions(A)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    for s in &sessions.chat_session_information {
        let sid = last_segment(s.resource_url.as_deref().unwrap_or_default());
        loop {
            let l: ChatMessageList = get(&srv.urls().messages(A, &sid)).await;
            if l.chat_message.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "migrated messages are never purged"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    drop(srv);
}

/// Taken by the test listening on [`FIXTURE_LISTENER`].
static FIXTURE_LISTENER_TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Opens a copy of the fixture of format `version` and checks that everything in it is there
/// and works; returns the data directory (killed server, current format), removed when
/// dropped.
async fn opens_and_works(version: u32) -> support::TempDir {
    // The fixtures share one callback address: one test at a time listens there, once the
    // previous one's listener has let go of it.
    let _turn = FIXTURE_LISTENER_TURN.lock().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpListener::bind(FIXTURE_LISTENER).is_err() {
        assert!(Instant::now() < deadline, "{FIXTURE_LISTENER} stays taken");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let listener = Listener::start_on(FIXTURE_LISTENER).await;
    let dir = fixture_data_dir(version);
    let srv = Server::start_in(&dir, &[KEEP_FIXTURE_MESSAGES], None);

    // What the fixture's outbox held arrives, in each subscription's format.
    let r = wait_for(&listener, B, "sessionInvitationNotification", |_| true).await;
    assert_eq!(r.format(), Format::Xml);
    let inv = r.decode::<SessionInvitationNotification>();
    assert_eq!(inv.subject.as_deref(), Some("v1 one-to-one"));
    assert_eq!(inv.originator_address, A);
    assert_eq!(inv.originator_name.as_deref(), Some("Originator v1"));
    let s1 = inv.session_id;
    let r = wait_for(&listener, B, "messageNotification", |_| true).await;
    let m = r.decode::<MessageNotification>();
    assert_eq!(
        m.chat_message.as_ref().expect("a message").text,
        "hello from v1"
    );
    assert_eq!(m.sender_address, A);
    let m1 = m
        .message_id
        .expect("a message's notification has its messageId");
    let r = wait_for(&listener, A, "messageDeliveryNotification", |_| true).await;
    let d = r.decode::<MessageDeliveryNotification>();
    assert_eq!(
        (
            d.status,
            d.message_id.as_str(),
            d.recipient_address.as_deref()
        ),
        (MessageStatus::Delivered, m1.as_str(), Some(B))
    );
    let r = wait_for(&listener, A, "messageNotification", |_| true).await;
    assert_eq!(
        r.decode::<MessageNotification>()
            .chat_message
            .expect("a message")
            .text,
        "reply from v1"
    );
    let r = wait_for(&listener, C, "sessionInvitationNotification", |_| true).await;
    let s2 = r.decode::<SessionInvitationNotification>().session_id;
    let r = wait_for(&listener, D, "sessionInvitationNotification", |_| true).await;
    let s3 = r.decode::<SessionInvitationNotification>().session_id;

    // The invitation whose deadline passed while the server was down times out at start-up.
    for who in [A, D] {
        let r = wait_for(&listener, who, "chatEventNotification", |r| {
            r.decode::<ChatEventNotification>().event_type == EventType::Timeout
        })
        .await;
        assert_eq!(r.decode::<ChatEventNotification>().session_id, s3);
    }
    let a = send_empty("GET", &srv.urls().session(D, &s3), Format::Json).await;
    assert_eq!(a.status, 404, "{}", a.body);

    // Subscriptions, sessions, participants and messages read back as they were written.
    let subs: ChatSubscriptionList = get(&srv.urls().subscriptions(B)).await;
    assert_eq!(subs.chat_subscription.len(), 1);
    let cb = &subs.chat_subscription[0].callback_reference;
    assert_eq!(cb.notification_format, Some(NotificationFormat::Xml));
    assert_eq!(cb.callback_data.as_deref(), Some(B));
    assert_eq!(
        subs.chat_subscription[0].client_correlator.as_deref(),
        Some("v1-sip:bob@example.com")
    );
    let info: ChatSessionInformation = get(&srv.urls().session(A, &s1)).await;
    assert_eq!(info.subject.as_deref(), Some("v1 one-to-one"));
    let parts: ParticipantList = get(&srv.urls().participants(A, &s1)).await;
    let b = parts
        .participant
        .iter()
        .find(|p| p.address == B)
        .expect("B takes part");
    assert_eq!(b.status, Some(ParticipantStatus::Connected));
    assert_eq!(b.name.as_deref(), Some("sip:bob@example.com (v1)"));
    let list: ChatMessageList = get(&srv.urls().messages(A, &s1)).await;
    let texts: Vec<&str> = list.chat_message.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["hello from v1", "reply from v1"]);
    let st: MessageDeliveryStatus = get(&srv.urls().message_status(A, &s1, &m1)).await;
    assert_eq!(st.status, MessageStatus::Delivered);

    // The session goes on: a new message reaches B (in XML), B's report reaches A.
    let m3 = send_message(&srv, A, &s1, "after the upgrade").await;
    wait_for(&listener, B, "messageNotification", |r| {
        r.decode::<MessageNotification>()
            .chat_message
            .is_some_and(|m| m.text == "after the upgrade")
    })
    .await;
    let url = srv.urls().message_status(B, &s1, &m3);
    let displayed = MessageDeliveryStatus {
        status: MessageStatus::Displayed,
    };
    assert_eq!(
        send_doc("POST", &url, Format::Json, &displayed)
            .await
            .status,
        204
    );
    wait_for(&listener, A, "messageDeliveryNotification", |r| {
        let d = r.decode::<MessageDeliveryNotification>();
        d.message_id == m3 && d.status == MessageStatus::Displayed
    })
    .await;

    // The invitation pending in the fixture can still be answered.
    accept(&srv, C, &s2).await;
    wait_for(&listener, A, "participantStatusNotification", |r| {
        let n = r.decode::<ParticipantStatusNotification>();
        n.session_id == s2
            && n.participant
                .iter()
                .any(|p| p.address == C && p.status == Some(ParticipantStatus::Connected))
    })
    .await;

    // A session an older format stored is no OMA 2012 ad hoc chat (format 8 reads it as
    // confirmed): A's ad hoc message to B opens a session of its own beside s1.
    let adhoc = docs::message("ad hoc after the upgrade");
    let url = srv.urls().one_to_one_messages(A, B, "adhoc");
    let sent = send_doc("POST", &url, Format::Json, &adhoc).await;
    assert_eq!(sent.status, 201, "{}", sent.body);
    let r = wait_for(&listener, B, "messageNotification", |r| {
        r.decode::<MessageNotification>()
            .chat_message
            .is_some_and(|m| m.text == "ad hoc after the upgrade")
    })
    .await;
    assert_ne!(r.decode::<MessageNotification>().session_id, s1);

    // Every notification kept its own stable id.
    let ids: std::collections::BTreeSet<String> =
        listener.all().iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids.len(), listener.all().len(), "{:#?}", listener.all());

    // The data directory now carries the current format version.
    srv.kill();
    let db = rusqlite::Connection::open(dir.join(DB_FILE)).expect("open");
    let version: u32 = db
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("user_version");
    assert_eq!(version, netapi_chat::store::format::CURRENT);
    drop(db);
    dir
}

#[test]
fn a_data_dir_from_a_newer_format_refuses_to_start() {
    let dir = v1_data_dir();
    let db = rusqlite::Connection::open(dir.join(DB_FILE)).expect("open");
    db.pragma_update(None, "user_version", 99)
        .expect("stamp 99");
    drop(db);
    let before = std::fs::read(dir.join(DB_FILE)).expect("read");
    let (status, stderr) = support::run_to_exit(&dir, &[]);
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("format version 99") && stderr.contains("newer"),
        "the refusal should name the version and say it is newer: {stderr}"
    );
    // Refused before anything was written.
    assert_eq!(std::fs::read(dir.join(DB_FILE)).expect("read"), before);
}

/// A damaged page of the `messages` table (bit rot, a bad sector; storage review F2) is told
/// for what it is: the messages it held answer `503` saying the storage is damaged and to
/// come back much later (`Retry-After: 300`, not the 2 s of a passing failure, which invited
/// endless retries), every other message is still served, the log says once what to do, and
/// `netapi_chat_store_damaged` reads 1 for the operator's alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_page_of_messages_is_told_apart_and_the_rest_is_served() {
    const METRICS: &str = "stored-format-metrics-0123456789";
    let srv = Server::start(&[]);
    let sid = start_session(&srv, "damaged", B).await;
    accept(&srv, B, &sid).await;
    let mut ids = Vec::new();
    for i in 0..200 {
        ids.push(send_message(&srv, A, &sid, &format!("message {i} {}", "x".repeat(300))).await);
    }
    let dir = srv.terminate();
    // One leaf page of the table, in the middle, overwritten (an invalid page type).
    let db = rusqlite::Connection::open(dir.join(DB_FILE)).expect("open");
    let leaves: Vec<i64> = db
        .prepare("SELECT pageno FROM dbstat WHERE name = 'messages' AND pagetype = 'leaf' ORDER BY pageno")
        .expect("dbstat")
        .query_map([], |r| r.get(0))
        .expect("leaf pages")
        .collect::<Result<_, _>>()
        .expect("leaf pages");
    let size: i64 = db
        .pragma_query_value(None, "page_size", |r| r.get(0))
        .expect("page size");
    drop(db);
    assert!(
        leaves.len() > 4,
        "the messages span several pages: {leaves:?}"
    );
    let page = leaves[leaves.len() / 2];
    let mut bytes = std::fs::read(dir.join(DB_FILE)).expect("read");
    let at = usize::try_from((page - 1) * size).expect("offset");
    let len = usize::try_from(size).expect("size");
    bytes[at..at + len].fill(0xff);
    std::fs::write(dir.join(DB_FILE), bytes).expect("write");

    let log = dir.join("damaged.log");
    let srv = Server::launch(
        support::Launch {
            data_dir: dir.clone(),
            env: &[("NETAPI_CHAT_METRICS_TOKEN", METRICS)],
            stderr: support::Stderr::File(log.clone()),
            ..support::Launch::default()
        },
        Some(support::TempDir::adopt(dir)),
    );
    let (mut served, mut damaged) = (0, 0);
    for mid in &ids {
        let a = send_empty("GET", &srv.urls().message(A, &sid, mid), Format::Json).await;
        match a.status {
            200 => served += 1,
            503 => {
                a.assert_error(503, "SVC2001", Format::Json);
                assert!(a.body.contains("damaged"), "{}", a.body);
                assert_eq!(a.header("retry-after"), "300");
                damaged += 1;
            }
            other => panic!("message {mid}: {other} {}", a.body),
        }
    }
    assert!(damaged > 0, "no message was on the damaged page");
    assert!(served > 150, "only {served} of 200 served");
    let metrics = support::send(
        "GET",
        &format!("{}/metrics", srv.base),
        &[("authorization", &format!("Bearer {METRICS}"))],
        None,
    )
    .await;
    assert!(
        metrics.body.contains("netapi_chat_store_damaged 1"),
        "{}",
        metrics.body
    );
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        said.matches("stop the server and repair it").count(),
        1,
        "told once: {said}"
    );
}
