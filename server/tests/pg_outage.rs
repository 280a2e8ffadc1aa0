//! On PostgreSQL: one server per database unless both are of a cluster (a second one refuses to
//! start, naming the reason; `cluster.rs` runs several),
//! and losing the database (issue 14 item 4): the database is stopped under a running server
//! (`pg_ctl stop -m fast`) and started again. Meanwhile requests get `503` with an OMA
//! `requestError` (`SVC2001`, in the asked format) and `Retry-After`, `/readyz` says not
//! ready, and the server keeps running; once the database is back the server reconnects by
//! itself, and every message answered 2xx before is still there, as is the one whose send was
//! answered 503 ("not confirmed": kept and stored once the database returned); a send refused
//! while it was away, retried with its `clientCorrelator`, is made once.
//!
//! Needs the PostgreSQL pass of `cargo xtask test` (`NETAPI_CHAT_TEST_DATABASE_URL` and
//! `NETAPI_CHAT_TEST_PG_CTL`, the test cluster's `pg_ctl`), which runs these one at a time and
//! after every other suite (one stops the cluster): ignored otherwise.

mod support;

use netapi_chat_api::{
    ChatMessage, ChatMessageList, ChatSessionInformation, ParticipantInformation,
    ParticipantSessionStatus, ParticipantStatus,
};
use netapi_chat_runtime::Format;
use std::time::{Duration, Instant};
use support::{Server, pg_ctl, send, send_doc, send_empty};

const ALICE: &str = "sip:alice@example.com";
const BOB: &str = "sip:bob@example.com";

/// Longest wait for the server to be ready again after the database is back (it retries every
/// 2 s at most): a bound for the test, not a claim about speed.
const PATIENCE: Duration = Duration::from_secs(60);

fn last_segment(location: &str) -> String {
    location.rsplit('/').next().unwrap_or_default().to_owned()
}

/// The database a test database URL names (its last path segment, without the query).
fn database_name(url: &str) -> String {
    url.rsplit('/')
        .next()
        .and_then(|n| n.split('?').next())
        .expect("database name")
        .to_owned()
}

fn message(text: &str, correlator: Option<&str>) -> ChatMessage {
    ChatMessage {
        text: text.to_owned(),
        success_report: None,
        report_request: vec![],
        client_correlator: correlator.map(str::to_owned),
        sender_address: None,
        date_time: None,
        resource_url: None,
    }
}

/// A session from alice to bob, accepted; its id.
async fn connected_session(s: &Server) -> String {
    let doc = ChatSessionInformation {
        subject: Some("outage".to_owned()),
        participant: vec![ParticipantInformation {
            address: BOB.to_owned(),
            name: None,
            is_originator: None,
            status: None,
            client_correlator: None,
            resource_url: None,
        }],
        ..Default::default()
    };
    let a = send_doc("POST", &s.urls().chat_sessions(ALICE), Format::Json, &doc).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let sid = last_segment(a.header("location"));
    let st = ParticipantSessionStatus {
        status: ParticipantStatus::Connected,
    };
    let url = s.urls().participant_status(BOB, &sid, BOB);
    let a = send_doc("POST", &url, Format::Json, &st).await;
    assert_eq!(a.status, 200, "{}", a.body);
    sid
}

/// Three messages from alice in `sid` ("queued 0" to "queued 2"), each answered `201`.
async fn send_queued(s: &Server, sid: &str) {
    for i in 0..3 {
        let a = send_doc(
            "POST",
            &s.urls().messages(ALICE, sid),
            Format::Json,
            &message(&format!("queued {i}"), None),
        )
        .await;
        assert_eq!(a.status, 201, "{}", a.body);
    }
}

/// Waits (within [`PATIENCE`]) until `s`'s `/readyz` answers `status`; else fails with `why`.
async fn readyz_becomes(s: &Server, status: u16, why: &str) {
    let ready = format!("{}/readyz", s.urls().base());
    let since = Instant::now();
    while send("GET", &ready, &[], None).await.status != status {
        assert!(since.elapsed() < PATIENCE, "{why}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every message of the session as bob lists them: (id, text).
async fn listed(s: &Server, sid: &str) -> Vec<(String, String)> {
    let url = format!("{}?maxEntries=1000", s.urls().messages(BOB, sid));
    let a = send_empty("GET", &url, Format::Json).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let l: ChatMessageList = a.decode();
    l.chat_message
        .iter()
        .map(|m| {
            (
                m.resource_url
                    .as_deref()
                    .map(last_segment)
                    .unwrap_or_default(),
                m.text.clone(),
            )
        })
        .collect()
}

/// A 503 while the database is away: OMA `SVC2001` in the asked format, with `Retry-After`.
fn assert_unavailable(a: &support::Answer, format: Format) {
    a.assert_error(503, "SVC2001", format);
    let retry: u64 = a
        .header("retry-after")
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After in whole seconds: {:?}", a.headers));
    assert!(retry >= 1, "Retry-After {retry}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL to itself: `cargo xtask test` runs it"]
async fn the_database_stopped_and_started_under_a_running_server_loses_nothing_answered() {
    assert!(
        std::env::var_os("NETAPI_CHAT_TEST_DATABASE_URL").is_some(),
        "NETAPI_CHAT_TEST_DATABASE_URL: run through `cargo xtask test`"
    );
    // No purge round reads the database during the test: the first request after the loss is
    // the first to find it gone. The log at the default level, which the outage's start and
    // end must both reach.
    let s = Server::logged(&[
        ("NETAPI_CHAT_LOG_LEVEL", "warn"),
        ("NETAPI_CHAT_PURGE_INTERVAL_MS", "3600000"),
    ]);
    let sid = connected_session(&s).await;
    let mut sent = Vec::new();
    for i in 0..5 {
        let text = format!("before {i}");
        let a = send_doc(
            "POST",
            &s.urls().messages(ALICE, &sid),
            Format::Json,
            &message(&text, None),
        )
        .await;
        assert_eq!(a.status, 201, "{}", a.body);
        sent.push((last_segment(a.header("location")), text));
    }
    let ready = format!("{}/readyz", s.urls().base());
    assert_eq!(send("GET", &ready, &[], None).await.status, 200);

    let t = Instant::now();
    pg_ctl(&["stop", "-m", "fast", "-w"]);
    eprintln!("stopped after {:?}", t.elapsed());

    // The first change after the loss (nothing read the database since): applied in memory,
    // its commit failed, so it is not confirmed (503) but kept for later.
    let send_url = s.urls().messages(ALICE, &sid);
    let a = send_doc("POST", &send_url, Format::Json, &message("during", None)).await;
    assert_unavailable(&a, Format::Json);
    eprintln!("first 503 after {:?}", t.elapsed());
    // From then on every request is refused the same way before it changes anything, in
    // either format, reads included, and the server says it is not ready; it does not stop.
    let retried = message("retried", Some("outage-1"));
    let a = send_doc("POST", &send_url, Format::Xml, &retried).await;
    assert_unavailable(&a, Format::Xml);
    let a = send_empty("GET", &s.urls().messages(BOB, &sid), Format::Json).await;
    assert_unavailable(&a, Format::Json);
    assert_eq!(send("GET", &ready, &[], None).await.status, 503);

    pg_ctl(&["start", "-w"]);
    eprintln!("started after {:?}", t.elapsed());

    readyz_becomes(
        &s,
        200,
        "the server did not come back after the database did",
    )
    .await;
    eprintln!("ready after {:?}", t.elapsed());
    // Everything answered 2xx is there, and the kept change too, once. Unless the store's
    // heartbeat (a round trip every second, for the lease) found the database gone before
    // that send came: then it was refused before it changed anything, and is not there. Both
    // are a `503` that confirmed nothing; which one a run sees is timing.
    let got = listed(&s, &sid).await;
    assert_eq!(&got[..5], &sent[..], "{got:?}");
    match got.len() {
        6 => {
            assert_eq!(got[5].1, "during");
            sent.push(got[5].clone());
        }
        5 => eprintln!("the heartbeat found the database gone first: nothing was kept"),
        n => panic!("{n} messages: {got:?}"),
    }
    // The refused send, retried with its clientCorrelator, is made now, and only once.
    let a = send_doc("POST", &send_url, Format::Json, &retried).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let id = last_segment(a.header("location"));
    let again = send_doc("POST", &send_url, Format::Json, &retried).await;
    assert!(again.status == 200 || again.status == 201, "{}", again.body);
    assert_eq!(last_segment(again.header("location")), id);
    sent.push((id, "retried".to_owned()));
    assert_eq!(listed(&s, &sid).await, sent);
    // Once each, both at `warn`: before, the end was at `info`, so at the default level an
    // operator saw outages start and never end.
    let log = s.log_text();
    for said in ["the database is unreachable", "the database is back"] {
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(said)).collect();
        assert!(
            lines.len() == 1 && lines[0].contains("WARN"),
            "{said}: {lines:?}\n{log}"
        );
    }
}

/// While the database is unreachable, delivery pauses (issue 14 item 4): a callback that
/// comes back meanwhile gets nothing until the database is back, then everything, once each.
/// Before, the server went on delivering from memory what it could not mark delivered in the
/// store, and when the lead moved to another instance with the database's return, all of it
/// was sent again (every notification of a 4 s restart arrived twice: acceptance check).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL to itself: `cargo xtask test` runs it"]
async fn delivery_pauses_while_the_database_is_unreachable() {
    let s = Server::start(&[
        ("NETAPI_CHAT_RETRY_SCHEDULE", "0,300ms"),
        ("NETAPI_CHAT_DELIVERY_GIVE_UP_AFTER", "1h"),
        ("NETAPI_CHAT_PURGE_INTERVAL_MS", "3600000"),
    ]);
    let bob = support::Listener::start().await;
    bob.set_status(503);
    support::chat::subscribe_with(
        &s,
        BOB,
        &support::docs::subscription_to(&bob.url, BOB, Format::Json),
        Format::Json,
    )
    .await;
    let sid = connected_session(&s).await;
    send_queued(&s, &sid).await;
    // Refused so far: the receiver is away.
    let since = Instant::now();
    while bob.refused_ids().is_empty() {
        assert!(
            since.elapsed() < PATIENCE,
            "no attempt reached the receiver"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pg_ctl(&["stop", "-m", "fast", "-w"]);
    readyz_becomes(&s, 503, "the server did not notice the outage").await;
    bob.set_status(200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = bob.all().len();
    pg_ctl(&["start", "-w"]);
    assert_eq!(
        during,
        0,
        "delivered while the database was away: {:#?}",
        bob.all()
    );
    // Back: the invitation and the three messages, once each.
    let got = bob.wait_for(4).await;
    let ids: std::collections::BTreeSet<String> = got.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids.len(), got.len(), "once each: {got:#?}");
}

/// A long poll already waiting when the database goes away ends its wait with the outage's
/// `503` (in the asked format), as every request does while the server cannot confirm what it
/// holds, not with an empty `200`. Before, it answered `200` with an empty list at the end of
/// its wait, however long the database had been away (the database-loss review: 17 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL to itself: `cargo xtask test` runs it"]
async fn a_long_poll_waiting_when_the_database_goes_away_ends_with_503() {
    let s = Server::start(&[("NETAPI_CHAT_PURGE_INTERVAL_MS", "3600000")]);
    for format in [Format::Json, Format::Xml] {
        let a = send_doc(
            "POST",
            &s.urls().channels(ALICE),
            Format::Json,
            &support::docs::channel(netapi_chat_api::ChannelType::LongPolling, None, Some(4)),
        )
        .await;
        assert_eq!(a.status, 201, "{}", a.body);
        let channel: netapi_chat_api::NotificationChannel = a.decode();
        let url = channel
            .channel_data
            .and_then(|d| d.channel_url)
            .expect("channelURL");
        let poll = tokio::spawn(async move { send_empty("POST", &url, format).await });
        tokio::time::sleep(Duration::from_millis(500)).await;
        pg_ctl(&["stop", "-m", "fast", "-w"]);
        let a = poll.await.expect("the poll");
        pg_ctl(&["start", "-w"]);
        assert_unavailable(&a, format);
        readyz_becomes(&s, 200, "the server did not come back").await;
    }
}

/// A notification channel's WebSocket sends nothing while the database is unreachable, as
/// callback attempts pause: its acknowledgement could not be recorded, and a leader that loses
/// the lead meanwhile would have its successor send it again. The socket stays open and, once
/// the database is back, the next notification comes on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL to itself: `cargo xtask test` runs it"]
async fn a_channel_socket_pauses_while_the_database_is_unreachable() {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let s = Server::start(&[("NETAPI_CHAT_PURGE_INTERVAL_MS", "3600000")]);
    let face = support::Face::for_format(Format::Json, &s);
    let (callback, channel_url) = face
        .channel(BOB, netapi_chat_api::ChannelType::WebSockets)
        .await;
    support::chat::subscribe_with(
        &s,
        BOB,
        &support::docs::subscription_to(&callback, BOB, Format::Json),
        Format::Json,
    )
    .await;
    let sid = connected_session(&s).await;
    send_queued(&s, &sid).await;
    let mut request = channel_url.as_str().into_client_request().expect("ws URL");
    request.headers_mut().insert(
        http::header::AUTHORIZATION,
        format!("Bearer {}", support::APP_TOKEN).parse().unwrap(),
    );
    let host = request.uri().authority().expect("host").to_string();
    let tcp = tokio::net::TcpStream::connect(host).await.expect("connect");
    let (mut ws, _) = tokio_tungstenite::client_async(request, tcp)
        .await
        .expect("WebSocket handshake");
    // The next notification's frame within `within`, skipping pings; `None`: none came.
    async fn next_frame(
        ws: &mut (
                 impl futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
                 + Unpin
             ),
        within: Duration,
    ) -> Option<String> {
        tokio::time::timeout(within, async {
            while let Some(m) = ws.next().await {
                if let Message::Text(t) = m.expect("socket") {
                    return t.to_string();
                }
            }
            panic!("the socket closed");
        })
        .await
        .ok()
    }
    let first = next_frame(&mut ws, PATIENCE).await.expect("a first frame");
    let id = support::channel::Frame::parse(&first)
        .header("webhook-id")
        .to_owned();
    pg_ctl(&["stop", "-m", "fast", "-w"]);
    readyz_becomes(&s, 503, "the server did not notice the outage").await;
    ws.send(Message::Text(id.into()))
        .await
        .expect("acknowledge");
    let during = next_frame(&mut ws, Duration::from_secs(2)).await;
    pg_ctl(&["start", "-w"]);
    assert!(
        during.is_none(),
        "sent while the database was away: {during:?}"
    );
    assert!(
        next_frame(&mut ws, PATIENCE).await.is_some(),
        "nothing more once the database was back"
    );
}

/// Without `NETAPI_CHAT_CLUSTER_URL`, one server per database: a second server pointed at a
/// database a running server uses refuses to start, saying why (and how to run several); once the first has stopped,
/// a server starts on it and finds what the first stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn a_second_server_on_the_same_database_refuses_to_start() {
    let first = Server::default_for_tests();
    let sid = connected_session(&first).await;
    let url = support::postgres_database_for(&first.data_dir)
        .expect("NETAPI_CHAT_TEST_DATABASE_URL: run through `cargo xtask test`");
    let other_dir = support::temp_data_dir();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_netapi-chat"))
        .env("NETAPI_CHAT_BIND", "127.0.0.1:0")
        .env("NETAPI_CHAT_DATA_DIR", other_dir.path())
        .env("NETAPI_CHAT_DATABASE_URL", &url)
        .output()
        .expect("run a second netapi-chat");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the second server started: {stderr}");
    assert!(
        stderr.contains("is in use by another netapi-chat server")
            && stderr.contains("set NETAPI_CHAT_CLUSTER_URL on every server"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("postgres://"),
        "the URL (and a password) is not printed: {stderr}"
    );
    // The first stops; a server on the other data directory now takes the database over.
    let _first_dir = support::TempDir::adopt(first.kill());
    let second = Server::start_in(&other_dir, &[("NETAPI_CHAT_DATABASE_URL", &url)], None);
    let url = format!("{}?maxEntries=10", second.urls().messages(BOB, &sid));
    let a = send_empty("GET", &url, Format::Json).await;
    assert_eq!(a.status, 200, "the session is there: {}", a.body);
}

/// TLS to the database (`sslmode=require` in `NETAPI_CHAT_DATABASE_URL`): the server refuses
/// to start on a database whose certificate it cannot verify (the test cluster's is
/// self-signed), naming the certificate; trusting it with `NETAPI_CHAT_DATABASE_CA_FILE`, the
/// server starts, works, and its connection is encrypted (as the database itself reports in
/// `pg_stat_ssl`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn a_database_over_tls_is_used_only_with_a_certificate_that_verifies() {
    let tls_url = std::env::var("NETAPI_CHAT_TEST_DATABASE_TLS_URL")
        .expect("NETAPI_CHAT_TEST_DATABASE_TLS_URL: run through `cargo xtask test`");
    let ca = std::env::var("NETAPI_CHAT_TEST_DATABASE_CA").expect("NETAPI_CHAT_TEST_DATABASE_CA");
    let dir = support::temp_data_dir();
    let db = database_name(&support::postgres_database_for(&dir).expect("the test database"));
    let url = tls_url.replace("/postgres?", &format!("/{db}?"));
    let (status, stderr) = support::run_to_exit(&dir, &[("NETAPI_CHAT_DATABASE_URL", &url)]);
    assert!(
        !status.success(),
        "started on a certificate it cannot verify"
    );
    assert!(stderr.contains("certificate"), "{stderr}");
    let s = Server::start_in(
        &dir,
        &[
            ("NETAPI_CHAT_DATABASE_URL", &url),
            ("NETAPI_CHAT_DATABASE_CA_FILE", &ca),
        ],
        None,
    );
    let sid = connected_session(&s).await;
    let a = send_empty("GET", &s.urls().session(BOB, &sid), Format::Json).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let admin = std::env::var("NETAPI_CHAT_TEST_DATABASE_URL").expect("test database");
    let encrypted = std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&admin, postgres::NoTls).expect("admin connection");
        c.query_one(
            "SELECT count(*), bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.datname = $1 AND a.application_name = 'netapi-chat'",
            &[&db],
        )
        .map(|r| (r.get::<_, i64>(0), r.get::<_, Option<bool>>(1)))
        .expect("ask the database")
    })
    .join()
    .expect("ask the database");
    assert_eq!(encrypted, (1, Some(true)), "the store's connection is TLS");
}

/// A server started while its database cannot be reached waits for it instead of exiting (a
/// supervisor's restart limit, systemd's 5 starts in 10 s, would give up on an outage of more
/// than a few seconds): its log says so, it does not listen meanwhile, and once the database
/// can be reached it starts and serves. Here the database's address is a port where nothing
/// listens at first; a forwarder to the test PostgreSQL opens there once the log has said it
/// waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn a_server_started_while_its_database_is_unreachable_waits_for_it() {
    let tls_url = std::env::var("NETAPI_CHAT_TEST_DATABASE_TLS_URL")
        .expect("NETAPI_CHAT_TEST_DATABASE_TLS_URL: run through `cargo xtask test`");
    // postgres://postgres@127.0.0.1:PORT/postgres?sslmode=require
    let pg_port: u16 = tls_url
        .split_once("127.0.0.1:")
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .expect("the test cluster's TCP port");
    let dir = support::temp_data_dir();
    let db = database_name(&support::postgres_database_for(&dir).expect("the test database"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/{db}");
    let log = dir.join("stderr.log");
    // Where the server is to listen, so that the test can see it does not meanwhile.
    let serve_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let bind = format!("127.0.0.1:{serve_port}");

    // Opens the forwarder once the log says the server waits (or after 30 s, so that the test
    // fails on the assertion below instead of hanging); says whether it saw the line, and
    // whether the server's port refused connections then.
    let watched = log.clone();
    let forwarder = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut saw = false;
        while Instant::now() < deadline {
            let text = std::fs::read_to_string(&watched).unwrap_or_default();
            if text.contains("cannot reach the database yet")
                && text.contains("not listening until it can")
            {
                saw = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let refused = std::net::TcpStream::connect(("127.0.0.1", serve_port)).is_err();
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("forwarder");
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(db) = std::net::TcpStream::connect(("127.0.0.1", pg_port)) else {
                    continue;
                };
                let (mut c2, mut d2) = match (client.try_clone(), db.try_clone()) {
                    (Ok(c), Ok(d)) => (c, d),
                    _ => continue,
                };
                let (mut c1, mut d1) = (client, db);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c1, &mut d1);
                    let _ = d1.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut d2, &mut c2);
                    let _ = c2.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        (saw, refused)
    });

    let started = Instant::now();
    let server = Server::launch(
        support::Launch {
            data_dir: dir.to_path_buf(),
            env: &[("NETAPI_CHAT_DATABASE_URL", &url)],
            bind: Some(&bind),
            stderr: support::Stderr::File(log.clone()),
            ..support::Launch::default()
        },
        None,
    );
    let (saw, refused) = forwarder.join().expect("the forwarder thread");
    assert!(
        saw,
        "the log said the server waits for its database: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(refused, "it did not listen while it waited");
    assert!(started.elapsed() > Duration::from_millis(400));
    let sid = connected_session(&server).await;
    let a = send_empty("GET", &server.urls().session(ALICE, &sid), Format::Json).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let ready = send_empty("GET", &format!("{}/readyz", server.base), Format::Json).await;
    assert_eq!(ready.status, 200, "{}", ready.body);
}

/// Runs `sql` on the test PostgreSQL as its superuser (on a thread of its own: the blocking
/// client runs a runtime, and the tests run inside tokio's).
fn as_admin(sql: String) {
    let admin = std::env::var("NETAPI_CHAT_TEST_DATABASE_URL")
        .expect("NETAPI_CHAT_TEST_DATABASE_URL: run through `cargo xtask test`");
    std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&admin, postgres::NoTls).expect("admin connection");
        c.batch_execute(&sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    })
    .join()
    .expect("the admin thread");
}

/// A database that turns read-only (a primary demoted to a standby behind the same address
/// after a failover, a managed database put read-only at its storage quota; here
/// `default_transaction_read_only` and the server's session ended) is waited for like an
/// unreachable one: requests get `503` with `Retry-After`, the log names the cause, and once
/// it takes writes again the server serves with everything answered 2xx still there. A server
/// *started* on it waits too, its log naming the cause, and starts once it takes writes.
/// Before, the first commit stopped the server (exit 74), and a restart exited 1 with a bare
/// `db error`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn a_database_that_turns_read_only_is_waited_for_like_an_unreachable_one() {
    let s = Server::logged(&[
        ("NETAPI_CHAT_LOG_LEVEL", "warn"),
        ("NETAPI_CHAT_PURGE_INTERVAL_MS", "3600000"),
    ]);
    let db = database_name(
        &support::postgres_database_for(&s.data_dir)
            .expect("NETAPI_CHAT_TEST_DATABASE_URL: run through `cargo xtask test`"),
    );
    let sid = connected_session(&s).await;
    let send_url = s.urls().messages(ALICE, &sid);
    let mut sent = Vec::new();
    for i in 0..3 {
        let text = format!("before {i}");
        let a = send_doc("POST", &send_url, Format::Json, &message(&text, None)).await;
        assert_eq!(a.status, 201, "{}", a.body);
        sent.push((last_segment(a.header("location")), text));
    }
    let read_only = |on: bool| set_read_only(&db, on);
    read_only(true);
    let a = send_doc("POST", &send_url, Format::Json, &message("during", None)).await;
    assert_unavailable(&a, Format::Json);
    let ready = format!("{}/readyz", s.urls().base());
    let mut s = s;
    assert_eq!(s.wait_exit(3), None, "the server stopped: {}", s.log_text());
    assert_eq!(send("GET", &ready, &[], None).await.status, 503);
    let a = send_empty("GET", &s.urls().messages(BOB, &sid), Format::Json).await;
    assert_unavailable(&a, Format::Json);
    let log = s.log_text();
    assert!(
        log.contains("read-only transaction") || log.contains("refuses writes: it is read-only"),
        "the log names the cause: {log}"
    );

    read_only(false);
    readyz_becomes(&s, 200, &format!("not back: {}", s.log_text())).await;
    let got = listed(&s, &sid).await;
    assert_eq!(&got[..3], &sent[..], "{got:?}");
    let a = send_doc("POST", &send_url, Format::Json, &message("after", None)).await;
    assert_eq!(a.status, 201, "{}", a.body);

    // Started while it is read-only: waits, saying why, and starts once it takes writes.
    let dir = s.terminate();
    let _dir = support::TempDir::adopt(dir.clone());
    read_only(true);
    let log = dir.join("restart.log");
    let (watched, name) = (log.clone(), db.clone());
    let writable = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let text = std::fs::read_to_string(&watched).unwrap_or_default();
            if text.contains("refuses writes: it is read-only") {
                set_read_only(&name, false);
                return text;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        set_read_only(&name, false);
        std::fs::read_to_string(&watched).unwrap_or_default()
    });
    let again = Server::launch(
        support::Launch {
            data_dir: dir.clone(),
            stderr: support::Stderr::File(log.clone()),
            ..support::Launch::default()
        },
        None,
    );
    let said = writable.join().expect("the watching thread");
    assert!(
        said.contains("cannot reach the database yet")
            && said.contains("refuses writes: it is read-only"),
        "{said}"
    );
    let got = listed(&again, &sid).await;
    assert_eq!(&got[..3], &sent[..], "{got:?}");
    assert_eq!(
        got.last().map(|(_, t)| t.as_str()),
        Some("after"),
        "{got:?}"
    );
}

/// Makes the test database `db` read-only for new sessions and ends the server's (`on`), or
/// lets it take writes again.
fn set_read_only(db: &str, on: bool) {
    as_admin(if on {
        format!(
            "ALTER DATABASE {db} SET default_transaction_read_only = on;
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity
               WHERE datname = '{db}' AND application_name = 'netapi-chat'"
        )
    } else {
        format!("ALTER DATABASE {db} RESET default_transaction_read_only")
    })
}
