//! Retention (issue 12 item 4): messages older than `NETAPI_CHAT_RETENTION` are purged in the
//! background and then answer exactly like messages that never existed, in JSON and XML; what
//! was sent later stays, and the session goes on. A purge running alongside sends loses no
//! answered message younger than the retention. A retention that does not parse stops the
//! start with a message naming the variable.
//!
//! No assertion here is about time: the tests wait (with a generous deadline) for what the
//! purge must eventually do, and only claim a message must still be there when the test's own
//! clock (the server's clock: same machine) proves it is younger than the retention.

mod support;

use netapi_chat_api::{ChatMessage, ChatMessageList, MessageDeliveryStatus, MessageStatus};
use netapi_chat_runtime::Format;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::docs::{self, last_segment};
use support::{Server, chat, send_doc, send_empty};

const ALICE: &str = "sip:alice@example.com";
const BOB: &str = "sip:bob@example.com";
const FORMATS: [Format; 2] = [Format::Json, Format::Xml];

/// How long the tests wait for the purge to do what it must (it runs every 100 ms here).
const PATIENCE: Duration = Duration::from_secs(60);

/// Unix milliseconds by the clock the server's retention uses.
fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_millis(),
    )
    .expect("ms fit")
}

fn message_doc(text: &str) -> ChatMessage {
    ChatMessage {
        report_request: vec![MessageStatus::Delivered],
        ..docs::message(text)
    }
}

/// A session from `from` to `to`, accepted by `to`; its id.
async fn connected_session(s: &Server, from: &str, to: &str) -> String {
    chat::connected_session(s, from, &docs::session("retention", &[to])).await
}

/// Sends a message; its id and the time just before the request left (its sending time, as
/// the server records it, is at or after this).
async fn send(s: &Server, from: &str, sid: &str, text: &str) -> (String, i64) {
    let t0 = now_ms();
    (
        chat::send_message(s, from, sid, &message_doc(text)).await,
        t0,
    )
}

/// Every message id `user` can list in `sid`, following `next` links.
async fn listed(s: &Server, user: &str, sid: &str, format: Format) -> Vec<String> {
    let mut ids = Vec::new();
    let mut url = Some(format!("{}?maxEntries=1000", s.urls().messages(user, sid)));
    while let Some(u) = url {
        let a = send_empty("GET", &u, format).await;
        assert_eq!(a.status, 200, "GET {u}: {}", a.body);
        let l: ChatMessageList = a.decode();
        ids.extend(
            l.chat_message
                .iter()
                .filter_map(|m| m.resource_url.as_deref().map(last_segment)),
        );
        url = l
            .link
            .iter()
            .find(|l| l.rel == "next")
            .map(|l| l.href.clone());
    }
    ids
}

/// The answer to a message (or its status) that does not exist, as `user` sees it: `404`
/// `SVC2008`, in the asked format. Returns the exception's variables minus the URL, which
/// names the resource and so differs between two messages.
fn assert_absent(a: &support::Answer, format: Format) {
    let e = a.assert_error(404, "SVC2008", format);
    let ex = e.service_exception.expect("a service exception");
    assert_eq!(ex.text, "Resource %1 does not exist");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_past_retention_answer_like_messages_that_never_existed() {
    let retention = Duration::from_secs(3);
    let s = Server::start(&[
        ("NETAPI_CHAT_RETENTION", "3s"),
        ("NETAPI_CHAT_PURGE_INTERVAL_MS", "100"),
    ]);
    let sid = connected_session(&s, ALICE, BOB).await;
    let (m1, _) = send(&s, ALICE, &sid, "first, to be purged").await;
    let (m2, _) = send(&s, BOB, &sid, "second, to be purged").await;
    // A cursor taken after m1 (a page of one), to follow once m1 is gone.
    let a = send_empty(
        "GET",
        &format!("{}?maxEntries=1", s.urls().messages(ALICE, &sid)),
        Format::Json,
    )
    .await;
    let page: ChatMessageList = a.decode();
    let next_after_m1 = page
        .link
        .iter()
        .find(|l| l.rel == "next")
        .map(|l| l.href.clone())
        .expect("a next page");

    // The purge takes them (and their delivery statuses) once they are older than 3 s.
    let deadline = Instant::now() + PATIENCE;
    loop {
        if listed(&s, ALICE, &sid, Format::Json).await.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "messages past retention stay");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Each answers, for both participants and in both formats, like a message that never
    // existed: on the message, its status, and a confirmation.
    for f in FORMATS {
        for user in [ALICE, BOB] {
            for mid in [m1.as_str(), m2.as_str(), "msg-999999-never"] {
                let base = format!("/chatSessions/{sid}/messages/{mid}");
                assert_absent(&send_empty("GET", &s.url(user, &base), f).await, f);
                let status = s.url(user, &format!("{base}/status"));
                assert_absent(&send_empty("GET", &status, f).await, f);
            }
            assert!(listed(&s, user, &sid, f).await.is_empty(), "{f:?} {user}");
        }
        let confirm = s.urls().message_status(BOB, &sid, &m1);
        let st = MessageDeliveryStatus {
            status: MessageStatus::Delivered,
        };
        assert_absent(&send_doc("POST", &confirm, f, &st).await, f);
    }
    // The cursor taken before the purge still works: an empty last page.
    let a = send_empty("GET", &next_after_m1, Format::Json).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let page: ChatMessageList = a.decode();
    assert!(
        page.chat_message.is_empty() && page.link.is_empty(),
        "{page:?}"
    );

    // The session goes on: a message sent now is there for both, in both formats, and can
    // be confirmed, for as long as it is younger than the retention. A slow machine may let
    // one grow older before it is read back: then another is tried.
    let mut checked = 0;
    for attempt in 0..5 {
        let (m, t0) = send(&s, ALICE, &sid, &format!("later {attempt}")).await;
        let mut seen = true;
        for f in FORMATS {
            for user in [ALICE, BOB] {
                let url = s.urls().message(user, &sid, &m);
                let got = send_empty("GET", &url, f).await;
                let ids = listed(&s, user, &sid, f).await;
                seen &= got.status == 200 && ids.contains(&m);
            }
        }
        let url = s.urls().message_status(BOB, &sid, &m);
        let st = MessageDeliveryStatus {
            status: MessageStatus::Displayed,
        };
        seen &= send_doc("POST", &url, Format::Json, &st).await.status == 204;
        let young = now_ms() - t0 < i64::try_from(retention.as_millis()).expect("ms");
        if young {
            assert!(
                seen,
                "message {m}, younger than the retention, was not all there"
            );
            checked += 1;
            break;
        }
    }
    assert_eq!(
        checked, 1,
        "no message could be read back within the retention"
    );
    // And it goes in its turn.
    let deadline = Instant::now() + PATIENCE;
    while !listed(&s, BOB, &sid, Format::Xml).await.is_empty() {
        assert!(Instant::now() < deadline, "the later message stays");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let info = send_empty("GET", &s.urls().session(BOB, &sid), Format::Xml).await;
    assert_eq!(
        info.status, 200,
        "the session outlives its messages: {}",
        info.body
    );
}

/// Senders keep sending while the purge runs every 50 ms with a 1 s retention; a checker
/// keeps listing the session. Every message whose send was answered before a listing started
/// and whose sending time is within the retention of the listing's end must be in it; the run
/// goes on until purges were seen taking older messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_purge_alongside_sends_loses_no_message_younger_than_the_retention() {
    let retention_ms = 1000;
    let s = Arc::new(Server::start(&[
        ("NETAPI_CHAT_RETENTION", "1s"),
        ("NETAPI_CHAT_PURGE_INTERVAL_MS", "50"),
    ]));
    let sid = connected_session(&s, ALICE, BOB).await;
    let answered: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let senders: Vec<_> = (0..4)
        .map(|k| {
            let (s, sid, answered, stop) = (
                Arc::clone(&s),
                sid.clone(),
                Arc::clone(&answered),
                Arc::clone(&stop),
            );
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let from = if k % 2 == 0 { ALICE } else { BOB };
                    let sent = send(&s, from, &sid, &format!("{k}-{i}")).await;
                    answered.lock().expect("lock").push(sent);
                    i += 1;
                }
            })
        })
        .collect();
    let deadline = Instant::now() + PATIENCE;
    let (mut checks, mut purged_seen) = (0usize, 0usize);
    while purged_seen == 0 || checks < 20 {
        assert!(
            Instant::now() < deadline,
            "no purge seen in {checks} listings"
        );
        let before: Vec<(String, i64)> = answered.lock().expect("lock").clone();
        let format = FORMATS[checks % 2];
        let ids: HashSet<String> = listed(&s, ALICE, &sid, format).await.into_iter().collect();
        let end = now_ms();
        for (id, t0) in &before {
            if ids.contains(id) {
                continue;
            }
            // Purged: only allowed if it may be older than the retention.
            assert!(
                *t0 < end - retention_ms,
                "message {id} sent at {t0} is missing from a listing that ended at {end}, \
                 though younger than the retention ({format:?})"
            );
            purged_seen += 1;
        }
        checks += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for t in senders {
        t.await.expect("sender");
    }
    let sent = answered.lock().expect("lock").len();
    assert!(
        sent > 0 && purged_seen > 0,
        "{sent} sent, {purged_seen} purged"
    );
}

/// Runs the binary with `env` and returns its exit status and standard error (it should
/// refuse to start).
fn run_to_exit(env: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    support::run_to_exit(&support::temp_data_dir(), env)
}

#[test]
fn a_retention_that_does_not_parse_stops_the_start() {
    for (var, value) in [
        ("NETAPI_CHAT_RETENTION", "a month"),
        ("NETAPI_CHAT_RETENTION", "30"),
        ("NETAPI_CHAT_RETENTION", "0s"),
        ("NETAPI_CHAT_PURGE_INTERVAL_MS", "0"),
        ("NETAPI_CHAT_PURGE_INTERVAL_MS", "10s"),
    ] {
        let (status, stderr) = run_to_exit(&[(var, value)]);
        assert!(!status.success(), "{var}={value}: {stderr}");
        assert!(
            stderr.contains(var) && stderr.contains(value),
            "{var}={value}: the refusal should name the setting and its value: {stderr}"
        );
    }
}

/// Dead letters are kept for the retention period, then purged like messages (issue 13: replay
/// stays possible for that long, and the outbox does not keep what nobody will ever replay). A
/// notification given up at once (a one-try schedule, its receiver down) is listed, in JSON and
/// XML, while it is younger than the retention, and is gone from the list after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_kept_for_the_retention_then_purged() {
    let s = Server::start(&[
        ("NETAPI_CHAT_RETENTION", "3s"),
        ("NETAPI_CHAT_PURGE_INTERVAL_MS", "100"),
        ("NETAPI_CHAT_RETRY_SCHEDULE", "0"),
    ]);
    let listener = support::Listener::start().await;
    listener.set_down(true);
    let sub = chat::subscribe(&s, BOB, &listener, Format::Json).await;
    let sub_id = last_segment(sub.resource_url.as_deref().expect("resourceURL"));
    let list_url = s.urls().dead_letters(BOB, &sub_id);
    chat::start_session(&s, ALICE, &docs::session("retained", &[BOB])).await;
    let start = Instant::now();
    let count = |format: Format| {
        let url = list_url.clone();
        async move {
            let a = send_empty("GET", &url, format).await;
            // The subscription was disabled as its notification was buried: once disabled for
            // the retention too, it is deleted, dead letters and all.
            if a.status == 404 && start.elapsed() >= Duration::from_secs(3) {
                return 0;
            }
            assert_eq!(a.status, 200, "{}", a.body);
            if format == Format::Xml {
                support::xsd_validate(&a.body);
            }
            a.decode::<netapi_chat_api::DeadLetterList>()
                .dead_letter
                .len()
        }
    };
    // Buried: listed while younger than the retention (the test's clock proves it).
    let started = Instant::now();
    while count(Format::Json).await == 0 {
        assert!(started.elapsed() < PATIENCE, "never buried");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let buried = Instant::now();
    for format in FORMATS {
        let n = count(format).await;
        if buried.elapsed() < Duration::from_secs(3) {
            assert_eq!(
                n, 1,
                "{format:?}: a dead letter younger than the retention is listed"
            );
        }
    }
    // Past the retention: purged.
    while count(Format::Json).await != 0 {
        assert!(
            buried.elapsed() < PATIENCE,
            "the dead letter was never purged"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(count(Format::Xml).await, 0);
}
