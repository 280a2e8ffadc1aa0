//! Several instances on one PostgreSQL database (issue 14 items 2, 3, 5): two real servers
//! started with `NETAPI_CHAT_CLUSTER_URL=auto` on one database. The first leads; the second
//! is a standby that forwards every request to it. Any request may go to either: a flow whose
//! steps alternate between them works in JSON and XML with every notification at a real
//! listener; the same `clientCorrelator` sent to both at once makes one message; killing the
//! leader (SIGKILL) mid-burst while the callback is down hands the database to the standby,
//! which serves every message answered 2xx before and delivers every notification; the
//! database stopped and started under both leaves a cluster that answers again; a leader whose
//! database link goes silent while the standby takes over answers `503`, not its stale
//! memory, once its lease lapses. With TLS on the instances, a client talks HTTPS to a
//! standby that forwards over TLS (WebSocket included), refuses to forward to a leader it does
//! not trust (telling the client why), and takes over serving HTTPS; an instance whose
//! certificate does not name its own cluster-URL host refuses to start (that test needs no
//! database and runs in every pass).
//!
//! Needs the PostgreSQL pass of `cargo xtask test` (`NETAPI_CHAT_TEST_DATABASE_URL`,
//! `NETAPI_CHAT_TEST_PG_CTL`), which runs these one at a time (one stops the database):
//! ignored otherwise.

mod support;

use netapi_chat_api::{ChannelType, MessageNotification, MessageStatus, ParticipantStatus};
use netapi_chat_runtime::Format;
use netapi_chat_runtime::wire;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::channel::Relay;
use support::{Face, Listener, Server, TempDir, docs, pg_ctl};

const ALICE: &str = "sip:alice@example.com";
const BOB: &str = "sip:bob@example.com";

/// The longest the tests wait for the cluster to answer again after losing its leader or its
/// database: a bound for the test (the design's figure is seconds), not a speed claim.
const PATIENCE: Duration = Duration::from_secs(45);

/// A retry schedule long enough (~40 s in all) that a notification whose callback is down
/// while the leader changes is still being retried when the callback comes back.
const LONG_SCHEDULE: &str =
    "0,200ms,500ms,1s,2s,2s,2s,2s,2s,2s,2s,2s,2s,2s,2s,2s,2s,2s,2s,2s,2s,2s";

/// Two instances on one database: the first started leads, the second stands by.
struct Pair {
    leader: Server,
    standby: Server,
    database: String,
    /// Their data directories (and any certificates): declared after the servers, so removed
    /// once both processes are gone, however the test ends.
    _dirs: Vec<TempDir>,
}

fn cluster_env<'a>(database: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("NETAPI_CHAT_DATABASE_URL", database),
        ("NETAPI_CHAT_CLUSTER_URL", "auto"),
    ];
    env.extend_from_slice(extra);
    env
}

impl Pair {
    /// Where the leader's log goes.
    fn leader_log(&self) -> std::path::PathBuf {
        self._dirs[0].join("leader.log")
    }

    /// Where the standby's log goes.
    fn standby_log(&self) -> std::path::PathBuf {
        self._dirs[1].join("standby.log")
    }
}

/// Two instances with the same settings `extra`.
fn pair(extra: &[(&str, &str)]) -> Pair {
    pair_with(extra, extra)
}

/// Two instances: the leader with `leader_extra`, the standby with `standby_extra`.
fn pair_with(leader_extra: &[(&str, &str)], standby_extra: &[(&str, &str)]) -> Pair {
    let leader_dir = support::temp_data_dir();
    let database = support::postgres_database_for(&leader_dir)
        .expect("NETAPI_CHAT_TEST_DATABASE_URL: run through `cargo xtask test`");
    // Each instance's log, for the tests that read what it tells the operator.
    let launch = |dir: &std::path::Path, extra: &[(&str, &str)], log: &str| {
        Server::launch(
            support::Launch {
                data_dir: dir.to_path_buf(),
                env: &cluster_env(&database, extra),
                stderr: support::Stderr::File(dir.join(log)),
                ..support::Launch::default()
            },
            None,
        )
    };
    let leader = launch(&leader_dir, leader_extra, "leader.log");
    let standby_dir = support::temp_data_dir();
    let standby = launch(&standby_dir, standby_extra, "standby.log");
    Pair {
        leader,
        standby,
        database,
        _dirs: vec![leader_dir, standby_dir],
    }
}

/// POSTs `doc` (JSON) to `url` until it is answered `201`: a `503` (no instance leads for a
/// moment) or a connection closed or refused (the standby that takes over closes its
/// connections once, as any restarting server does) is retried with the same body, hence the
/// same `clientCorrelator`, as a client would; anything else fails the test. How long it took,
/// and the `Location`.
async fn post_until_created<T: wire::Document>(url: &str, doc: &T) -> (Duration, String) {
    let started = Instant::now();
    let body = String::from_utf8(wire::encode(Format::Json, doc)).expect("utf-8");
    let client = support::http_client(support::APP_TOKEN);
    loop {
        let answer = client
            .post(url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
        let status = match answer {
            Ok(a) if a.status() == 201 => {
                let location = a
                    .headers()
                    .get("location")
                    .and_then(|v| v.to_str().ok())
                    .expect("Location on 201")
                    .to_owned();
                return (started.elapsed(), location);
            }
            Ok(a) => a.status().as_u16().to_string(),
            Err(e) => e.to_string(),
        };
        assert!(
            status == "503" || !status.starts_with(char::is_numeric),
            "only 503 or a closed connection while the lead changes: {status}"
        );
        assert!(
            started.elapsed() < PATIENCE,
            "the cluster still answers {status} after {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts a session `subject` from alice through `server` (whichever instance leads decides),
/// retried as [`post_until_created`] does; how long that took.
async fn changes_again(server: &Server, subject: &str) -> Duration {
    let mut doc = docs::session(subject, &[BOB]);
    doc.client_correlator = Some(subject.to_owned());
    post_until_created(&server.urls().chat_sessions(ALICE), &doc)
        .await
        .0
}

/// Sends `signal` (e.g. `-STOP`) to `server`'s process.
fn signal(server: &Server, signal: &str) {
    let pid = server.pid().to_string();
    let status = std::process::Command::new("kill")
        .args([signal, &pid])
        .status();
    assert!(status.is_ok_and(|s| s.success()), "kill {signal} {pid}");
}

/// Sends SIGTERM to `server` and asserts it exits `0` within `secs` (a graceful stop).
fn stops_with_sigterm(server: &mut Server, secs: u64) {
    signal(server, "-TERM");
    let status = tokio::task::block_in_place(|| server.wait_exit(secs));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

/// The name of the database `url` names.
fn database_name(url: &str) -> String {
    url.rsplit('/')
        .next()
        .and_then(|n| n.split('?').next())
        .expect("database name")
        .to_owned()
}

/// Ends the database session that holds `database`'s instance lock (as a network cut that the
/// database noticed would), from the test cluster's admin connection.
fn end_the_leaders_session(database: &str) {
    let admin = std::env::var("NETAPI_CHAT_TEST_DATABASE_URL").expect("test database");
    let name = database_name(database);
    std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&admin, postgres::NoTls).expect("admin connection");
        let ended = c
            .query(
                "SELECT pg_terminate_backend(l.pid) FROM pg_locks l JOIN pg_database d ON d.oid = l.database \
                 WHERE l.locktype = 'advisory' AND l.granted AND d.datname = $1",
                &[&name],
            )
            .expect("end the leader's session");
        assert_eq!(ended.len(), 1, "one session holds the lock");
    })
    .join()
    .expect("end the leader's session");
}

/// A session of the test's own on `database` that waits for the instance lock (the bytes
/// `netapich` as one big-endian key, what every instance takes) and holds it until the
/// returned sender is dropped or sent to: queued behind the leader's session, it gets the
/// lock the moment that session ends, before any standby's next try, so nobody takes over.
fn hold_the_instance_lock_next(database: &str) -> std::sync::mpsc::Sender<()> {
    let url = database.to_owned();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (queued, is_queued) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("a session");
        let _ = queued.send(());
        c.execute(
            "SELECT pg_advisory_lock($1)",
            &[&i64::from_be_bytes(*b"netapich")],
        )
        .expect("the instance lock");
        let _ = released.recv();
    });
    is_queued.recv().expect("connected");
    // The `SELECT` is on its way; give it the moment to queue behind the leader's lock.
    std::thread::sleep(Duration::from_millis(200));
    release
}

/// The URL the leader row of `database` names, if there is one.
fn leader_url(database: &str) -> Option<String> {
    let url = database.to_owned();
    std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).ok()?;
        c.query_opt("SELECT url FROM netapi_chat_leader", &[])
            .ok()
            .flatten()
            .map(|row| row.get::<_, String>(0))
    })
    .join()
    .ok()
    .flatten()
}

/// The cluster key the leader of `database` wrote in its leader row (what its standbys prove
/// forwarded requests with).
fn cluster_key_of(database: &str) -> String {
    let url = database.to_owned();
    std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("connection");
        c.query_one("SELECT key FROM netapi_chat_leader", &[])
            .expect("the leader row")
            .get::<_, String>(0)
    })
    .join()
    .expect("read the cluster key")
}

/// Every step of a chat alternates between the instances, in JSON and in XML: subscribe,
/// start, accept, send, confirm, read, end. The standby's answers are the leader's (same
/// status, same resources), and every notification arrives at the listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn a_chat_whose_steps_alternate_between_instances_works_in_both_formats() {
    let p = pair(&[]);
    for format in [Format::Json, Format::Xml] {
        let listener = Listener::start().await;
        let (a, b) = (
            Face::for_format(format, &p.leader),
            Face::for_format(format, &p.standby),
        );
        let doc = docs::subscription_to(&listener.url, BOB, format);
        b.create_subscription(BOB, &doc).await.created();
        let doc = docs::subscription_to(&listener.url, ALICE, format);
        a.create_subscription(ALICE, &doc).await.created();
        // Bob is invited through the standby, accepts through the leader.
        let sid = accepted_chat(&b, &a, "two instances").await;
        let (location, _) = b
            .send_message(ALICE, &sid, &docs::message("via the standby"))
            .await
            .created();
        let mid = docs::last_segment(&location);
        a.confirm(BOB, &sid, &mid, MessageStatus::Delivered)
            .await
            .no_content();
        let read = b.get_delivery(ALICE, &sid, &mid).await.ok(200);
        assert_eq!(read.status, MessageStatus::Delivered, "{format:?}");
        let session = b.get_session(BOB, &sid).await.ok(200);
        assert_eq!(session.subject.as_deref(), Some("two instances"));
        a.end_session(ALICE, &sid).await.no_content();
        // The invitation to bob, bob's Connected to alice, the message to bob, the session's
        // end to bob: whoever answered each step.
        let got = listener.wait_for(5).await;
        let kinds: BTreeSet<String> = got.iter().map(|r| r.kind()).collect();
        assert!(
            kinds.contains("sessionInvitationNotification")
                && kinds.contains("participantStatusNotification")
                && kinds.contains("messageNotification")
                && kinds.contains("chatEventNotification"),
            "{format:?}: {kinds:?}"
        );
        assert!(got.iter().all(|r| r.format() == format), "{format:?}");
    }
}

/// A callback receiver that can hold requests unanswered: while `hold` is set, a request is
/// read and its connection left open without an answer (until its sender goes); otherwise it
/// is answered `204`. Records each request's `webhook-id`, in order, with whether it was held.
struct Holder {
    url: String,
    hold: Arc<std::sync::atomic::AtomicBool>,
    /// While set, requests that are not held are answered after this many milliseconds.
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
    seen: Arc<Mutex<Vec<(String, bool)>>>,
}

impl Holder {
    async fn start() -> Holder {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/cb", listener.local_addr().expect("addr"));
        let hold = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let delay_ms = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (h, d, s) = (Arc::clone(&hold), Arc::clone(&delay_ms), Arc::clone(&seen));
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let parts = (Arc::clone(&h), Arc::clone(&d), Arc::clone(&s));
                tokio::spawn(Holder::serve(conn, parts));
            }
        });
        Holder {
            url,
            hold,
            delay_ms,
            seen,
        }
    }

    /// A receiver that Bob's notifications go to (a JSON subscription made through `face`).
    async fn subscribed(face: &Face<'_>) -> Holder {
        let receiver = Holder::start().await;
        let doc = docs::subscription_to(&receiver.url, BOB, Format::Json);
        face.create_subscription(BOB, &doc).await.created();
        receiver
    }

    /// Holds what arrives from now on, has Alice invite Bob to a session `subject` through
    /// `face`, and waits for that invitation's attempt to be held: its `webhook-id`.
    async fn held_invitation(&self, face: &Face<'_>, subject: &str) -> String {
        self.set_hold(true);
        face.create_session(ALICE, &docs::session(subject, &[BOB]))
            .await
            .created();
        self.held_one().await
    }

    #[allow(clippy::type_complexity)]
    async fn serve(
        mut conn: tokio::net::TcpStream,
        (hold, delay_ms, seen): (
            Arc<std::sync::atomic::AtomicBool>,
            Arc<std::sync::atomic::AtomicU64>,
            Arc<Mutex<Vec<(String, bool)>>>,
        ),
    ) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let head_end = loop {
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
                match conn.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
            let field = |name: &str| {
                head.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_owned())
            };
            let length: usize = field("content-length:").map_or(0, |v| v.parse().unwrap_or(0));
            while buf.len() < head_end + length {
                match conn.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            buf.drain(..head_end + length);
            let held = hold.load(std::sync::atomic::Ordering::SeqCst);
            let id = field("webhook-id:").unwrap_or_default();
            seen.lock().expect("seen").push((id, held));
            if held {
                // Never answered: the connection stays open until its sender is gone.
                let _ = conn.read(&mut chunk).await;
                return;
            }
            let delay = delay_ms.load(std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(delay)).await;
            if conn
                .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                .await
                .is_err()
            {
                return;
            }
        }
    }

    fn seen(&self) -> Vec<(String, bool)> {
        self.seen.lock().expect("seen").clone()
    }

    /// Holds (`true`) or answers (`false`) the requests that arrive from now on.
    fn set_hold(&self, hold: bool) {
        self.hold.store(hold, std::sync::atomic::Ordering::SeqCst);
    }

    /// Answers the requests it does not hold after `ms` milliseconds from now on.
    fn set_delay_ms(&self, ms: u64) {
        self.delay_ms.store(ms, std::sync::atomic::Ordering::SeqCst);
    }

    /// Waits until the last request it got is one it holds: its `webhook-id`.
    async fn held_one(&self) -> String {
        self.until("a held request", |s| {
            s.last().is_some_and(|(_, held)| *held)
        })
        .await;
        self.seen().last().map(|(id, _)| id.clone()).expect("held")
    }

    /// Waits until notification `id` arrives again and is answered.
    async fn answered_again(&self, id: &str) {
        self.until("the held notification made again", |s| {
            s.iter().any(|(seen, held)| seen == id && !held)
        })
        .await;
    }

    /// Waits (within [`PATIENCE`]) until `done` holds for what was seen.
    async fn until(&self, what: &str, done: impl Fn(&[(String, bool)]) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !done(&self.seen()) {
            assert!(Instant::now() < deadline, "{what}: {:?}", self.seen());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A chat Alice starts with Bob through `starts` and Bob accepts through `accepts`: its id.
async fn accepted_chat(starts: &Face<'_>, accepts: &Face<'_>, subject: &str) -> String {
    let (location, _) = starts
        .create_session(ALICE, &docs::session(subject, &[BOB]))
        .await
        .created();
    let sid = docs::last_segment(&location);
    accepts
        .set_status(BOB, &sid, BOB, ParticipantStatus::Connected)
        .await
        .ok(200);
    sid
}

/// Waits (within [`PATIENCE`]) until `server`'s metric `name` reads `want`.
async fn metric_reads(server: &Server, token: &str, name: &str, want: f64) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let got = support::metric(&server.base, token, name).await;
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{name} = {got}, not {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Issue 14 item 3, delivery across instances: the standby makes the leader's callback
/// attempts (its own connection to the receiver; the leader's metrics count them carried, the
/// standby's made), in order, and an attempt the standby had under way when it was killed is
/// made again by the leader at once, with the same `webhook-id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn a_standby_makes_the_leaders_callback_attempts_and_one_it_dies_with_is_made_again() {
    const TOKEN: &str = "cluster-metrics-token-0123456789abcdef";
    let p = pair(&[("NETAPI_CHAT_METRICS_TOKEN", TOKEN)]);
    metric_reads(&p.leader, TOKEN, "netapi_chat_cluster_carriers", 1.0).await;
    // A client cannot become a carrier (it would be sent everyone's notifications): not
    // directly at the leader without the key, nor through the standby, which holds the key.
    for base in [&p.leader.base, &p.standby.base] {
        let a = support::send(
            "GET",
            &format!("{base}/.netapi-chat/cluster/deliveries"),
            &[
                ("connection", "upgrade"),
                ("upgrade", "netapi-chat-deliveries/1"),
            ],
            None,
        )
        .await;
        assert_eq!(a.status, 404, "{base}: {}", a.body);
    }
    assert_eq!(
        support::metric(&p.leader.base, TOKEN, "netapi_chat_cluster_carriers").await,
        1.0
    );
    let receiver = Holder::start().await;
    let (a, b) = (
        Face::for_format(Format::Json, &p.leader),
        Face::for_format(Format::Xml, &p.standby),
    );
    let doc = docs::subscription_to(&receiver.url, BOB, Format::Json);
    a.create_subscription(BOB, &doc).await.created();
    let sid = accepted_chat(&b, &a, "carried").await;
    for i in 0..5 {
        b.send_message(ALICE, &sid, &docs::message(&format!("carried {i}")))
            .await
            .created();
    }
    // The invitation and the five messages.
    receiver.until("six notifications", |s| s.len() >= 6).await;
    let carried = support::metric(
        &p.leader.base,
        TOKEN,
        "netapi_chat_notification_attempts_carried_total",
    )
    .await;
    let made = support::metric(
        &p.standby.base,
        TOKEN,
        "netapi_chat_standby_attempts_made_total",
    )
    .await;
    assert!(
        carried >= 6.0 && made >= 6.0,
        "carried {carried}, made {made}"
    );
    let ids: Vec<String> = receiver.seen().into_iter().map(|(id, _)| id).collect();
    let mut sorted = ids.clone();
    sorted.sort_by_key(|id| id.trim_start_matches("msg_").parse::<u64>().unwrap_or(0));
    assert_eq!(ids, sorted, "in the order they were made");

    // An attempt under way on the standby (the receiver holds it) when the standby dies.
    receiver.set_hold(true);
    b.send_message(ALICE, &sid, &docs::message("held"))
        .await
        .created();
    let held = receiver.held_one().await;
    receiver.set_hold(false);
    signal(&p.standby, "-KILL");
    let killed = Instant::now();
    receiver.answered_again(&held).await;
    eprintln!(
        "the attempt the standby died with arrived again {:?} after the kill",
        killed.elapsed()
    );
    let taken_back = support::metric(
        &p.leader.base,
        TOKEN,
        "netapi_chat_notification_attempts_taken_back_total",
    )
    .await;
    assert!(taken_back >= 1.0, "{taken_back}");
    metric_reads(&p.leader, TOKEN, "netapi_chat_cluster_carriers", 0.0).await;
    // And the leader makes the next ones itself.
    let before = receiver.seen().len();
    a.send_message(ALICE, &sid, &docs::message("after"))
        .await
        .created();
    receiver
        .until("the next notification", |s| s.len() > before)
        .await;
}

/// A standby frozen (SIGSTOP: its connection to the leader open, nothing on it) with an
/// attempt under way: the leader hears nothing for `relay::SILENT_FOR` (5 s), drops it and makes
/// the attempt itself; once the standby runs again it dials back and carries again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn a_frozen_standby_gives_its_attempts_back_and_carries_again_once_it_runs() {
    const TOKEN: &str = "cluster-metrics-token-0123456789abcdef";
    let p = pair(&[("NETAPI_CHAT_METRICS_TOKEN", TOKEN)]);
    metric_reads(&p.leader, TOKEN, "netapi_chat_cluster_carriers", 1.0).await;
    let a = Face::for_format(Format::Json, &p.leader);
    let receiver = Holder::subscribed(&a).await;
    let held = receiver.held_invitation(&a, "frozen").await;
    receiver.set_hold(false);
    signal(&p.standby, "-STOP");
    let frozen = Instant::now();
    receiver.answered_again(&held).await;
    eprintln!(
        "the attempt the frozen standby held arrived again {:?} after the freeze",
        frozen.elapsed()
    );
    assert_eq!(
        support::metric(&p.leader.base, TOKEN, "netapi_chat_cluster_carriers").await,
        0.0
    );
    signal(&p.standby, "-CONT");
    metric_reads(&p.leader, TOKEN, "netapi_chat_cluster_carriers", 1.0).await;
}

/// A standby stopped with SIGTERM (a rolling restart) while a slow receiver has one of its
/// attempts: it stops taking attempts, waits for that one's answer, tells the leader, and
/// exits; the leader makes nothing again (the receiver sees the notification once) and makes
/// the next ones itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn a_standby_stopped_with_sigterm_answers_its_attempts_before_it_goes() {
    const TOKEN: &str = "cluster-metrics-token-0123456789abcdef";
    let mut p = pair(&[
        ("NETAPI_CHAT_METRICS_TOKEN", TOKEN),
        ("NETAPI_CHAT_LOG_LEVEL", "info"),
    ]);
    metric_reads(&p.leader, TOKEN, "netapi_chat_cluster_carriers", 1.0).await;
    let a = Face::for_format(Format::Json, &p.leader);
    let receiver = Holder::subscribed(&a).await;
    receiver.set_delay_ms(1_500);
    let (location, _) = a
        .create_session(ALICE, &docs::session("rolling", &[BOB]))
        .await
        .created();
    let sid = docs::last_segment(&location);
    receiver
        .until("the slow invitation", |s| !s.is_empty())
        .await;
    signal(&p.standby, "-TERM");
    let status = tokio::task::block_in_place(|| p.standby.wait_exit(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "the standby exits 0 within the grace: {status:?}"
    );
    receiver.set_delay_ms(0);
    a.set_status(BOB, &sid, BOB, ParticipantStatus::Connected)
        .await
        .ok(200);
    a.send_message(ALICE, &sid, &docs::message("after the standby"))
        .await
        .created();
    // The invitation once, then the message (bob's own status goes to alice, who has no
    // subscription).
    receiver.until("the message", |s| s.len() >= 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ids: Vec<String> = receiver.seen().into_iter().map(|(id, _)| id).collect();
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(ids.len(), unique.len(), "nothing sent twice: {ids:?}");
    let taken_back = support::metric(
        &p.leader.base,
        TOKEN,
        "netapi_chat_notification_attempts_taken_back_total",
    )
    .await;
    assert_eq!(taken_back, 0.0);
    assert_eq!(
        support::metric(&p.leader.base, TOKEN, "netapi_chat_cluster_carriers").await,
        0.0
    );
    // The operator is told of a rolling restart, not warned of a lost standby.
    let log = std::fs::read_to_string(p.leader_log()).unwrap_or_default();
    assert!(
        log.contains("a standby that is stopping answered its attempts")
            && !log.contains("a standby stopped carrying callback attempts"),
        "{log}"
    );
}

/// A leader stopped with SIGTERM while a standby carries its attempts: the standby's
/// connection is closed once the attempts it holds are answered, so the leader's drain is not
/// held for the whole grace (before: "grace period … over, requests still in flight
/// dropped" after every stop of a leader with a standby), and the standby takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn a_leader_stopped_with_sigterm_is_not_held_by_the_standby_carrying_for_it() {
    const TOKEN: &str = "cluster-metrics-token-0123456789abcdef";
    let mut p = pair(&[
        ("NETAPI_CHAT_METRICS_TOKEN", TOKEN),
        ("NETAPI_CHAT_SHUTDOWN_GRACE_SECS", "20"),
    ]);
    metric_reads(&p.leader, TOKEN, "netapi_chat_cluster_carriers", 1.0).await;
    stops_with_sigterm(&mut p.leader, 30);
    let said = p.leader.stdout();
    assert!(
        said.contains("requests in flight answered"),
        "the drain waited out its grace: {said}"
    );
    // The standby leads and serves.
    changes_again(&p.standby, "after the leader stopped").await;
}

/// A leader stopped with SIGTERM hands the lead over: once it has answered its last request it
/// records so in the leader row, and the standby takes over without waiting out the lease it
/// must wait after a leader that died or was cut off (which might still be answering from
/// memory). Clients of the standby meet `503`s for the stop and the start, not for the wait.
/// How long the takeover took is printed (a measurement, not a bound).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn a_leader_stopped_with_sigterm_hands_the_lead_over_without_the_lease_wait() {
    let mut p = pair(&[("NETAPI_CHAT_LOG_LEVEL", "info")]);
    changes_again(&p.standby, "before the stop").await;
    let stopped = Instant::now();
    signal(&p.leader, "-TERM");
    let took = changes_again(&p.standby, "after the hand-over").await;
    eprintln!(
        "the standby answered 2xx {:?} after the leader's SIGTERM ({took:?} of retrying)",
        stopped.elapsed()
    );
    let status = tokio::task::block_in_place(|| p.leader.wait_exit(30));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let log = std::fs::read_to_string(p.standby_log()).unwrap_or_default();
    assert!(
        log.contains("the leader handed the lead over"),
        "the standby waited out the lease of a leader that had handed over: {log}"
    );
}

/// A rolling restart seen by the standby's clients: none of their connections is cut, none
/// is refused, and every request is answered `2xx`, writes (creates with a body, repeated
/// with their `clientCorrelator`) as reads. A connection kept alive to the standby
/// across its taking the lead gets its next answer (forwarded to the server the standby now
/// runs) with `Connection: close`, then is closed. Clients sending all along wait while
/// nobody leads (the standby holds what the stopping leader refused, and sends a `GET` the
/// leader cut again) instead of getting `503`. Before, the standby's proxy was aborted and
/// its socket closed until the server bound it again (connections cut, new ones refused),
/// and each request in between was answered `503` (24 per round in `cargo xtask bench
/// --rolling`); until the issue-14 re-run review, a write the standby sent as the leader's
/// drain closed its pooled connection idle, or that the leader's closed listener refused,
/// was still answered `503` (1-2 per restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn clients_of_a_standby_keep_their_connections_as_it_takes_the_lead() {
    let mut p = pair(&[]);
    changes_again(&p.standby, "before the restart").await;
    let url = p.standby.urls().subscriptions(BOB);
    let path = url.trim_start_matches(&p.standby.base).to_owned();
    let base = p.standby.base.clone();
    let (kept_path, kept_base) = (path.clone(), base.clone());
    let mut kept = tokio::task::spawn_blocking(move || {
        let mut kept = support::KeptAlive::connect(&kept_base);
        let (head, _) = kept.get(&kept_path).expect("answered");
        assert!(head.starts_with("http/1.1 200"), "{head}");
        kept
    })
    .await
    .expect("kept");
    // Clients sending all along, over a pool of kept-alive connections and new ones; two of
    // them write.
    let sending = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut clients = Vec::new();
    let sessions = p.standby.urls().chat_sessions(ALICE);
    for (n, (fresh, write)) in [(false, false), (false, true), (true, false), (false, true)]
        .into_iter()
        .enumerate()
    {
        let (url, sessions, sending) = (url.clone(), sessions.clone(), Arc::clone(&sending));
        let create = netapi_chat_api::ChatSessionInformation {
            client_correlator: Some(format!("rolling-{n}")),
            ..docs::session("the rolling restart", &[BOB])
        };
        let create = wire::encode(Format::Json, &create);
        clients.push(tokio::spawn(async move {
            let pooled = reqwest::Client::new();
            let (mut answers, mut errors) = (BTreeSet::new(), Vec::new());
            while sending.load(std::sync::atomic::Ordering::Relaxed) {
                let client = if fresh {
                    reqwest::Client::new()
                } else {
                    pooled.clone()
                };
                let request = match write {
                    false => client.get(&url),
                    true => client
                        .post(&sessions)
                        .header("content-type", "application/json")
                        .body(create.clone()),
                };
                match request.bearer_auth(support::APP_TOKEN).send().await {
                    Ok(a) => {
                        answers.insert(a.status().as_u16());
                    }
                    Err(e) => errors.push(format!("{e:?}")),
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (answers, errors)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stops_with_sigterm(&mut p.leader, 30);
    // Until the standby's socket is served by its own server (which has no standby health).
    let leads = Instant::now();
    loop {
        let a = reqwest::get(format!("{base}/healthz"))
            .await
            .expect("a new connection to the standby is accepted throughout");
        let status = a.status();
        if status == 200 && !a.text().await.unwrap_or_default().contains("standby") {
            break;
        }
        assert!(
            leads.elapsed() < PATIENCE,
            "the standby never took the lead"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    sending.store(false, std::sync::atomic::Ordering::Relaxed);
    for client in clients {
        let (answers, errors) = client.await.expect("client");
        assert!(errors.is_empty(), "connections cut or refused: {errors:?}");
        assert!(
            answers.iter().all(|s| (200..300).contains(s)),
            "every request answered 2xx: {answers:?}"
        );
    }
    let (head, body) = tokio::task::spawn_blocking(move || {
        let answer = kept
            .get(&path)
            .expect("the kept connection is answered, not cut");
        assert!(kept.closed_by_server(), "and closed after its answer");
        answer
    })
    .await
    .expect("kept");
    assert!(head.starts_with("http/1.1 200"), "{head}{body}");
    assert!(head.contains("connection: close"), "{head}");
}

/// Requests at a standby whose leader was killed wait for the next leader (this standby, once
/// it has waited out the killed leader's lease) instead of being answered `503`: a `GET` the
/// dead leader refused goes again, and a create sent after it (with a body) waits before it
/// is sent. Before, both were `503` (the client had to retry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn requests_at_a_standby_wait_for_the_next_leader_when_the_leader_is_killed() {
    let mut p = pair(&[]);
    changes_again(&p.standby, "before the kill").await;
    signal(&p.leader, "-KILL");
    let status = tokio::task::block_in_place(|| p.leader.wait_exit(10));
    assert!(status.is_some(), "killed");
    let url = p.standby.urls().subscriptions(BOB);
    let read = tokio::spawn(async move { support::send("GET", &url, &[], None).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let a = Face::for_format(Format::Xml, &p.standby);
    let sent = Instant::now();
    a.create_session(ALICE, &docs::session("after the kill", &[BOB]))
        .await
        .created();
    eprintln!("the create waited {:?} for the next leader", sent.elapsed());
    let read = read.await.expect("read");
    assert_eq!(read.status, 200, "{}", read.body);
}

/// A create at a standby whose leader, stopped with SIGTERM, has closed its listener but not
/// yet handed the lead over (its drain waits for a request still under way: here an upload
/// sent slowly to it) is refused at connect, held, and sent again with its body once this
/// standby leads: `201`, not the `503` of before (the issue-14 re-run review: one `503` per
/// standby at every rolling restart under writes, as its first `POST` after the close).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn a_create_the_stopping_leader_refused_goes_to_the_next_leader_with_its_body() {
    use std::io::Write as _;
    let mut p = pair(&[]);
    changes_again(&p.standby, "before the stop").await;
    let leader_addr = p.leader.base.trim_start_matches("http://").to_owned();
    // An upload to the leader, its body half sent: its request is under way.
    let body = String::from_utf8(wire::encode(
        Format::Json,
        &docs::session("the slow upload", &[BOB]),
    ))
    .expect("utf-8");
    let path = p.leader.urls().chat_sessions(ALICE);
    let path = path.trim_start_matches(&p.leader.base).to_owned();
    let mut slow = std::net::TcpStream::connect(&leader_addr).expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {leader_addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        support::APP_TOKEN,
        body.len()
    );
    slow.write_all(head.as_bytes()).expect("head");
    let (first, rest) = body.split_at(body.len() / 2);
    slow.write_all(first.as_bytes()).expect("half the body");
    tokio::time::sleep(Duration::from_millis(200)).await;
    signal(&p.leader, "-TERM");
    // Its listener closes; the upload holds its drain, so it still leads.
    let closed = Instant::now();
    while std::net::TcpStream::connect(&leader_addr).is_ok() {
        assert!(
            closed.elapsed() < PATIENCE,
            "the leader's listener never closed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let standby = p.standby.urls();
    let create = tokio::spawn(async move {
        let body = wire::encode(Format::Xml, &docs::session("held", &[BOB]));
        support::send(
            "POST",
            &standby.chat_sessions(ALICE),
            &[
                ("content-type", "application/xml"),
                ("accept", "application/xml"),
            ],
            Some(&String::from_utf8(body).expect("utf-8")),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !create.is_finished(),
        "the create waits for the next leader"
    );
    slow.write_all(rest.as_bytes())
        .expect("the rest of the body");
    let created = create.await.expect("create");
    assert_eq!(created.status, 201, "{}", created.body);
    let session: netapi_chat_api::ChatSessionInformation = created.decode();
    assert_eq!(session.subject.as_deref(), Some("held"));
    let status = tokio::task::block_in_place(|| p.leader.wait_exit(15));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

/// How many established TCP connections process `pid` holds to port `port` on this machine
/// (its sockets, `/proc/<pid>/fd`, found in `/proc/net/tcp`).
fn connections_to(pid: u32, port: u16) -> usize {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            f.len() > 9
                && f[3] == "01"
                && f[2].rsplit(':').next() == Some(&format!("{port:04X}"))
                && inodes.contains(f[9])
        })
        .count()
}

/// Waits until the log at `path` holds `line`.
async fn logged(path: &std::path::Path, line: &str) {
    let since = Instant::now();
    while !std::fs::read_to_string(path)
        .unwrap_or_default()
        .contains(line)
    {
        assert!(since.elapsed() < PATIENCE, "never logged {line:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Three instances, the leader stopped with SIGTERM while one standby is frozen, so that the
/// leader, having said `Leaving`, waits its second for that standby's answer with its
/// listener still open. A create the other standby gets after it answered `Leaving` is not
/// written to the stopping leader, whose listener closes as soon as the wait ends: it waits
/// for the next leader and is answered by it, `201`. Before, it went to the stopping leader on
/// a connection of its own, and one in 5–10 rolling restarts such a write was cut with its
/// body sent (queued by the kernel on the listener as its close took the backlog): `503`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn a_create_after_the_leader_said_leaving_waits_for_the_next_leader() {
    let info = [("NETAPI_CHAT_LOG_LEVEL", "info")];
    let mut p = pair(&info);
    let third_dir = support::temp_data_dir();
    let third = Server::launch(
        support::Launch {
            data_dir: third_dir.to_path_buf(),
            env: &cluster_env(&p.database, &info),
            stderr: support::Stderr::File(third_dir.join("third.log")),
            ..support::Launch::default()
        },
        None,
    );
    changes_again(&p.standby, "before the stop").await;
    changes_again(&third, "before the stop, third").await;
    let carrying = "carrying callback attempts for the leader";
    logged(&p.standby_log(), carrying).await;
    logged(&third_dir.join("third.log"), carrying).await;
    signal(&third, "-STOP");
    signal(&p.leader, "-TERM");
    // The standby answered the leader's `Leaving`, and the leader closed their connection.
    logged(&p.standby_log(), "no longer carrying callback attempts").await;
    let leader_addr = p.leader.base.trim_start_matches("http://").to_owned();
    // And it let go of its pooled connections to the stopping leader, itself, at once: one
    // its client had opened and never used held the leader's drain for the second a
    // connection gets to send its first request (the lead changed 1 s late in 2 of 15
    // rolling restarts). Before, they stayed until the leader closed them.
    let port: u16 = leader_addr
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let since = Instant::now();
    while connections_to(p.standby.pid(), port) > 0 && since.elapsed() < Duration::from_millis(300)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        connections_to(p.standby.pid(), port),
        0,
        "the standby still holds connections to the stopping leader"
    );
    assert!(
        std::net::TcpStream::connect(&leader_addr).is_ok(),
        "the leader still waits for the frozen standby, its listener open: the standby \
         closed them"
    );
    let mut doc = docs::session("after leaving", &[BOB]);
    doc.client_correlator = Some("after leaving".to_owned());
    let created = support::send(
        "POST",
        &p.standby.urls().chat_sessions(ALICE),
        &[
            ("content-type", "application/json"),
            ("accept", "application/json"),
        ],
        Some(&String::from_utf8(wire::encode(Format::Json, &doc)).expect("utf-8")),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert!(
        std::net::TcpStream::connect(&leader_addr).is_err(),
        "answered by the next leader, after the stopping one closed its listener"
    );
    signal(&third, "-CONT");
    let status = tokio::task::block_in_place(|| p.leader.wait_exit(15));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let read = support::send(
        "GET",
        &p.standby
            .urls()
            .session(ALICE, &docs::last_segment(created.header("location"))),
        &[("accept", "application/json")],
        None,
    )
    .await;
    assert_eq!(read.status, 200, "{}", read.body);
}

/// A body with a transfer coding besides `chunked` is refused at a standby as at the leader
/// (`501 SVC0002`, connection closed), and reaches nothing: the hop's `Transfer-Encoding`
/// stays behind, so forwarded, it was read still coded by the leader (the code review).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn a_standby_refuses_a_transfer_coding_as_the_leader_does() {
    let p = pair(&[]);
    changes_again(&p.standby, "before").await;
    let path = p.standby.urls().subscriptions(ALICE);
    let path = path.trim_start_matches(&p.standby.base).to_owned();
    let doc = r#"{"chatSubscription":{"callbackReference":{"notifyURL":"http://127.0.0.1:10/"}}}"#;
    let chunked = format!("{:x}\r\n{doc}\r\n0\r\n\r\n", doc.len());
    let mut client = support::KeptAlive::connect(&p.standby.base);
    let (head, body) = tokio::task::block_in_place(|| {
        client.request(
            "POST",
            &path,
            "HTTP/1.1",
            &[
                "Content-Type: application/json",
                "Transfer-Encoding: gzip, chunked",
            ],
            &chunked,
        )
    })
    .expect("an answer");
    assert!(head.starts_with("http/1.1 501"), "{head}{body}");
    assert!(
        body.contains("SVC0002") && body.contains("gzip, chunked"),
        "{body}"
    );
    let list = support::send("GET", &p.standby.urls().subscriptions(ALICE), &[], None).await;
    assert!(
        !list.body.contains("127.0.0.1:10"),
        "nothing made: {}",
        list.body
    );
}

/// A request the leader refuses before it reads the body (`401` without credentials, `413` for
/// an announced length over the limit) reaches its client through a standby as the leader's
/// answer, in both formats: the leader reads and throws away what the standby still forwards
/// after its answer (a lingering close). Before, the leader's socket was reset under the
/// standby's forward, which then answered `503` "the instance that leads cannot be reached"
/// (the load-balancer review: 1 or 2 of 15 such requests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn a_refusal_before_the_body_reaches_the_client_through_a_standby() {
    // Off: this client fails authentication more often than the limit allows.
    let p = pair(&[("NETAPI_CHAT_AUTH_FAILURE_LIMIT", "0")]);
    changes_again(&p.standby, "before").await;
    let url = p.standby.urls().subscriptions(ALICE);
    let path = url.trim_start_matches(&p.standby.base).to_owned();
    let host = p.standby.base.trim_start_matches("http://").to_owned();
    let body = vec![b' '; 1 << 20];
    for f in [Format::Json, Format::Xml] {
        for (auth, status, id) in [
            ("", "401", "SVC2003"),
            (support::APP_TOKEN, "413", "POL2004"),
        ] {
            for round in 0..12 {
                let credentials = match auth {
                    "" => String::new(),
                    token => format!("authorization: Bearer {token}\r\n"),
                };
                let head = format!(
                    "POST {path} HTTP/1.1\r\nhost: {host}\r\n{credentials}content-type: {}\r\n\
                     accept: {}\r\ncontent-length: {}\r\n\r\n",
                    f.media_type(),
                    f.media_type(),
                    body.len()
                );
                let (_, read) =
                    support::send_as_a_proxy(&host, &head, &body, Duration::from_millis(1)).await;
                let got = read.unwrap_or_default();
                let text = String::from_utf8_lossy(&got);
                assert!(
                    text.starts_with(&format!("HTTP/1.1 {status}")) && text.contains(id),
                    "{f:?} round {round}: {text}"
                );
            }
        }
    }
}

/// A standby stopped with SIGTERM still forwards, at once, the first request of a client that
/// connected just before: the leader answering the standby's own `Leaving` is no stop of the
/// leader's, and nothing waits for a next one. Before, the standby took that answer for the
/// leader's stop and held the request for its whole 3 s hold (the code review).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn a_stopping_standby_forwards_its_last_requests_at_once() {
    let mut p = pair(&[("NETAPI_CHAT_LOG_LEVEL", "info")]);
    changes_again(&p.standby, "before the stop").await;
    logged(
        &p.standby_log(),
        "carrying callback attempts for the leader",
    )
    .await;
    let mut client = support::KeptAlive::connect(&p.standby.base);
    signal(&p.standby, "-TERM");
    // The standby said `Leaving` and the leader answered it in kind.
    logged(&p.standby_log(), "no longer carrying callback attempts").await;
    let path = p.standby.urls().chat_sessions(ALICE);
    let path = path.trim_start_matches(&p.standby.base).to_owned();
    let sent = Instant::now();
    let (head, body) =
        tokio::task::block_in_place(|| client.get(&path)).expect("the request is answered");
    let took = sent.elapsed();
    assert!(head.starts_with("http/1.1 200"), "{head}{body}");
    assert!(
        took < Duration::from_secs(2),
        "held {took:?}, as if for the next leader"
    );
    let status = tokio::task::block_in_place(|| p.standby.wait_exit(15));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

/// Three instances, the leader killed: the requests each standby holds meanwhile are answered
/// `200` once one of them leads, by whichever standby holds them. Before, the standby that did
/// not win released its held requests to the winner as soon as the table named it, while the
/// winner still waited out the lease and answered them `503` (the takeover review, F2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn held_requests_at_either_standby_are_answered_after_the_leader_is_killed() {
    let mut p = pair(&[]);
    let third_dir = support::temp_data_dir();
    let third = Server::start_in(&third_dir, &cluster_env(&p.database, &[]), None);
    changes_again(&p.standby, "before the kill").await;
    changes_again(&third, "before the kill, third").await;
    signal(&p.leader, "-KILL");
    let status = tokio::task::block_in_place(|| p.leader.wait_exit(10));
    assert!(status.is_some(), "killed");
    let reads: Vec<_> = [&p.standby, &third]
        .into_iter()
        .map(|s| {
            let url = s.urls().subscriptions(BOB);
            tokio::spawn(async move { support::send("GET", &url, &[], None).await })
        })
        .collect();
    for read in reads {
        let read = read.await.expect("read");
        assert_eq!(read.status, 200, "{}", read.body);
    }
}

/// A `503` a standby makes itself to a request with a body says `Connection: close`: the body
/// may be unread, and the connection is then closed (before, without saying so: the client's
/// next request on it was reset; the takeover review, F3). Here the leader's cluster URL names
/// a port nobody listens on, so the standby's forwards are refused, it holds the create for
/// the next leader (3 s), and none comes. A request without a body keeps its connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn a_503_of_a_standby_to_a_request_with_a_body_says_the_connection_closes() {
    let p = pair_with(&[("NETAPI_CHAT_CLUSTER_URL", "http://127.0.0.1:1")], &[]);
    let url = p.standby.urls().chat_sessions(ALICE);
    let body = String::from_utf8(wire::encode(
        Format::Json,
        &docs::session("refused", &[BOB]),
    ))
    .expect("utf-8");
    let created = support::send(
        "POST",
        &url,
        &[("content-type", "application/json")],
        Some(&body),
    )
    .await;
    assert_eq!(created.status, 503, "{}", created.body);
    let connection = created
        .headers
        .get("connection")
        .and_then(|v| v.to_str().ok());
    assert_eq!(connection, Some("close"), "{:?}", created.headers);
    // An HTTP/1.0 client that asked to keep the connection is told `close` and nothing else,
    // in an HTTP/1.0 answer, and the connection closes (the takeover review's F6: hyper added
    // `keep-alive` beside the `close`).
    let path = url
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|at| rest[at..].to_owned()))
        .expect("a path");
    let mut old = support::KeptAlive::connect(&p.standby.base);
    let (head, _) = tokio::task::block_in_place(|| {
        old.request(
            "POST",
            &path,
            "HTTP/1.0",
            &["Connection: keep-alive", "Content-Type: application/json"],
            &body,
        )
    })
    .expect("an answer");
    assert!(head.starts_with("http/1.0 503"), "{head}");
    assert!(head.contains("connection: close\r\n"), "{head}");
    assert!(!head.contains("keep-alive"), "{head}");
    assert!(
        tokio::task::block_in_place(|| old.closed_by_server()),
        "{head}"
    );
    let read = support::send("GET", &p.standby.urls().subscriptions(BOB), &[], None).await;
    assert_eq!(read.status, 503, "{}", read.body);
    assert!(
        read.headers.get("connection").is_none(),
        "{:?}",
        read.headers
    );
}

/// A whole cluster stopped at once (SIGTERM to every instance, as a scale-down or `systemctl
/// stop` of every unit does): the standby that takes the lead as the leader hands over, and
/// gets its own SIGTERM while its server starts, stops too, exit `0`. Before, that signal was
/// lost when the start completed in the same moment, and the instance went on leading (an
/// outside review: 5 of 15 such stops). The signal is sent as the standby says it leads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn a_standby_stopped_as_it_takes_the_lead_stops() {
    let mut p = pair(&[("NETAPI_CHAT_LOG_LEVEL", "info")]);
    changes_again(&p.standby, "before the stop").await;
    signal(&p.leader, "-TERM");
    let log = p.standby_log();
    let leads = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("this instance leads now")
    {
        assert!(
            leads.elapsed() < PATIENCE,
            "the standby never took the lead"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    stops_with_sigterm(&mut p.standby, 15);
    let status = tokio::task::block_in_place(|| p.leader.wait_exit(15));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

/// A leader stopped with SIGTERM while a callback attempt waits on a slow receiver winds its
/// delivery down first, still serving: a client of the cluster is answered through the
/// standby meanwhile, and once the attempt is answered the leader hands the lead over. The
/// notification arrives once. Before, the listener closed at the signal and every client of
/// the cluster got `503` for as long as the slowest receiver took (the hand-over review: 45
/// `503`s over 4.7 s with a receiver answering after 5 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn a_stopping_leader_serves_while_a_slow_receiver_answers_then_hands_over() {
    let mut p = pair(&[("NETAPI_CHAT_LOG_LEVEL", "info")]);
    let a = Face::for_format(Format::Json, &p.standby);
    let receiver = Holder::subscribed(&a).await;
    receiver.set_delay_ms(3_000);
    a.create_session(ALICE, &docs::session("slow receiver", &[BOB]))
        .await
        .created();
    receiver
        .until("the slow invitation", |s| !s.is_empty())
        .await;
    signal(&p.leader, "-TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The attempt still waits on the receiver: the leader serves on.
    a.list_subscriptions(BOB).await.ok(200);
    let status = tokio::task::block_in_place(|| p.leader.wait_exit(30));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    changes_again(&p.standby, "after the slow receiver").await;
    let log = std::fs::read_to_string(p.standby_log()).unwrap_or_default();
    assert!(
        log.contains("the leader handed the lead over"),
        "the standby waited out the lease: {log}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ids: Vec<String> = receiver.seen().into_iter().map(|(id, _)| id).collect();
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(ids.len(), unique.len(), "nothing sent twice: {ids:?}");
}

/// A leader stopped with SIGTERM while its standby waits on a receiver that never answers:
/// once half the grace has passed, the standby is let go (its connection closed, the attempt
/// aborted there and not made again by the stopping leader), the leader's drain is not held
/// by that connection, and it hands the lead over. The successor sends the notification
/// again, same `webhook-id` (at least once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn a_stopping_leader_lets_go_of_a_standby_stuck_on_a_receiver_and_hands_over() {
    let mut p = pair(&[
        ("NETAPI_CHAT_LOG_LEVEL", "info"),
        ("NETAPI_CHAT_SHUTDOWN_GRACE_SECS", "2"),
    ]);
    let a = Face::for_format(Format::Json, &p.standby);
    let receiver = Holder::subscribed(&a).await;
    let held = receiver.held_invitation(&a, "stuck receiver").await;
    stops_with_sigterm(&mut p.leader, 30);
    let said = p.leader.stdout();
    assert!(
        said.contains("requests in flight answered"),
        "the standby's connection held the drain: {said}"
    );
    receiver.set_hold(false);
    changes_again(&p.standby, "after the stuck receiver").await;
    let log = std::fs::read_to_string(p.standby_log()).unwrap_or_default();
    assert!(
        log.contains("the leader handed the lead over"),
        "the standby waited out the lease: {log}"
    );
    // The successor sends it again, same webhook-id.
    receiver
        .until("the notification again", |s| {
            s.iter().filter(|(id, _)| *id == held).count() >= 2
        })
        .await;
}

/// An attempt the leader drops while a standby holds it (the subscription deleted while the
/// attempt waits there for a connection to a slow receiver) is cancelled on the standby: the
/// receiver never gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn an_attempt_the_leader_drops_is_not_sent_by_the_standby() {
    const TOKEN: &str = "cluster-metrics-token-0123456789abcdef";
    let p = pair(&[
        ("NETAPI_CHAT_METRICS_TOKEN", TOKEN),
        ("NETAPI_CHAT_DELIVERY_CONNECTIONS_PER_ENDPOINT", "1"),
    ]);
    metric_reads(&p.leader, TOKEN, "netapi_chat_cluster_carriers", 1.0).await;
    let receiver = Holder::start().await;
    receiver.set_delay_ms(2_000);
    let a = Face::for_format(Format::Json, &p.leader);
    // One subscription of bob's has an attempt at the slow receiver; with one connection per
    // endpoint, a second subscription's attempt then waits on the standby for it.
    let doc = docs::subscription_to(&receiver.url, BOB, Format::Json);
    a.create_subscription(BOB, &doc).await.created();
    a.create_session(ALICE, &docs::session("first", &[BOB]))
        .await
        .created();
    receiver.until("the first attempt", |s| !s.is_empty()).await;
    let (second, _) = a.create_subscription(BOB, &doc).await.created();
    a.create_session(ALICE, &docs::session("second", &[BOB]))
        .await
        .created();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let deleted = support::send(
        "DELETE",
        &second,
        &[("authorization", &format!("Bearer {}", support::APP_TOKEN))],
        None,
    )
    .await;
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    // The first subscription's two invitations arrive; the deleted one's would have taken
    // the connection between them.
    receiver
        .until("the second invitation", |s| s.len() >= 2)
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(receiver.seen().len(), 2, "{:?}", receiver.seen());
}

/// `NETAPI_CHAT_CLUSTER_DELIVERY=leader`: no standby carries anything; the leader delivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn with_delivery_left_to_the_leader_no_standby_carries_attempts() {
    const TOKEN: &str = "cluster-metrics-token-0123456789abcdef";
    let p = pair(&[
        ("NETAPI_CHAT_METRICS_TOKEN", TOKEN),
        ("NETAPI_CHAT_CLUSTER_DELIVERY", "leader"),
    ]);
    let b = Face::for_format(Format::Json, &p.standby);
    let receiver = Holder::subscribed(&b).await;
    b.create_session(ALICE, &docs::session("not carried", &[BOB]))
        .await
        .created();
    receiver.until("the invitation", |s| !s.is_empty()).await;
    // Given the standby time to dial, had it been going to.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let carriers = support::metric(&p.leader.base, TOKEN, "netapi_chat_cluster_carriers").await;
    let made = support::metric(
        &p.standby.base,
        TOKEN,
        "netapi_chat_standby_attempts_made_total",
    )
    .await;
    assert_eq!((carriers, made), (0.0, 0.0));
}

/// The same create sent to both instances at once (a client retrying through the load
/// balancer): one message, both answers naming it; decided once, by the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn one_client_correlator_sent_to_both_instances_at_once_makes_one_message() {
    let p = pair(&[]);
    let (a, b) = (
        Face::for_format(Format::Json, &p.leader),
        Face::for_format(Format::Xml, &p.standby),
    );
    let sid = accepted_chat(&a, &a, "race").await;
    for round in 0..10 {
        let mut doc = docs::message(&format!("once {round}"));
        doc.client_correlator = Some(format!("corr-{round}"));
        let (x, y) = tokio::join!(
            a.send_message(ALICE, &sid, &doc),
            b.send_message(ALICE, &sid, &doc)
        );
        let (x, y) = (x.created().0, y.created().0);
        assert_eq!(
            docs::last_segment(&x),
            docs::last_segment(&y),
            "round {round}: both answers name one message"
        );
    }
    let list = b.list_messages(BOB, &sid).await.ok(200);
    assert_eq!(list.chat_message.len(), 10, "{list:?}");
}

/// SIGKILL the leader mid-burst while the callback is down: the standby takes the database
/// over, every message answered 2xx (through either instance, before or after) is readable
/// through it, and every message's notification reaches the callback once it is back, with
/// the same `webhook-id` whoever sent it (duplicates counted, none lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn killing_the_leader_mid_burst_loses_nothing_answered_2xx() {
    let p = pair(&[("NETAPI_CHAT_RETRY_SCHEDULE", LONG_SCHEDULE)]);
    let listener = Listener::start().await;
    let a = Face::for_format(Format::Xml, &p.leader);
    let b = Face::for_format(Format::Json, &p.standby);
    let doc = docs::subscription_to(&listener.url, BOB, Format::Xml);
    a.create_subscription(BOB, &doc).await.created();
    let sid = accepted_chat(&a, &a, "burst").await;
    listener.wait_for(1).await; // the invitation
    listener.set_down(true);
    let mut sent = BTreeSet::new();
    let mut killed = false;
    let mut took_over = None;
    for i in 0..40 {
        if i == 15 {
            // Mid-burst, with notifications waiting for the callback.
            let pid = p.leader.pid().to_string();
            let status = std::process::Command::new("kill")
                .args(["-KILL", &pid])
                .status();
            assert!(status.is_ok_and(|s| s.success()), "kill -KILL {pid}");
            killed = true;
        }
        let mut doc = docs::message(&format!("burst {i}"));
        doc.client_correlator = Some(format!("burst-{i}"));
        // Alternating instances until the kill, then through the standby (the leader's own
        // answers stop with it); retried as a client would while no one leads.
        let to = if i % 2 == 0 || killed {
            &p.standby
        } else {
            &p.leader
        };
        let (took, location) = post_until_created(&to.urls().messages(ALICE, &sid), &doc).await;
        sent.insert(docs::last_segment(&location));
        if i == 15 {
            took_over = Some(took);
        }
    }
    eprintln!("the standby answered 2xx again {took_over:?} after the leader was killed");
    // A killed leader handed nothing over: the standby waited out its lease (it cannot tell
    // a dead leader from one cut off that still answers).
    let log = std::fs::read_to_string(p.standby_log()).unwrap_or_default();
    assert!(
        log.contains("after waiting out its lease"),
        "the standby took over a killed leader without the lease wait: {log}"
    );
    // Everything answered 2xx is there, read through the survivor.
    let list = b.list_messages(BOB, &sid).await.ok(200);
    let stored: BTreeSet<String> = list
        .chat_message
        .iter()
        .filter_map(|m| m.resource_url.as_deref().map(docs::last_segment))
        .collect();
    assert!(
        sent.is_subset(&stored),
        "lost: {:?}",
        sent.difference(&stored)
    );
    // The callback comes back: every message's notification arrives (the new leader resends
    // what the old one had not delivered, under the same webhook-id).
    listener.set_down(false);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let got = listener.all();
        let delivered: BTreeSet<String> = got
            .iter()
            .filter(|r| r.kind() == "messageNotification")
            .filter_map(|r| r.decode::<MessageNotification>().message_id)
            .collect();
        if sent.is_subset(&delivered) {
            let ids: Vec<&str> = got.iter().map(|r| r.id.as_str()).collect();
            let unique: BTreeSet<&str> = ids.iter().copied().collect();
            eprintln!(
                "{} notifications received, {} duplicates (same webhook-id)",
                ids.len(),
                ids.len() - unique.len()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not delivered: {:?}",
            sent.difference(&delivered)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The database stopped and started under both instances: each keeps running, and once the
/// database is back the cluster answers again through both, with what was stored before;
/// the leader leads again (the standby gives it a head start to reconnect: taking the lock
/// first, it turned a database restart into a failover, the cluster review: 3 of 4 restarts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn the_database_restarted_under_both_instances_leaves_a_cluster_that_answers() {
    let p = pair(&[]);
    let a = Face::for_format(Format::Json, &p.leader);
    let (location, _) = a
        .create_session(ALICE, &docs::session("before", &[BOB]))
        .await
        .created();
    let sid = docs::last_segment(&location);
    pg_ctl(&["stop", "-m", "fast", "-w"]);
    // Long enough for the leader's tries to reconnect to space out (the review's was 10 s).
    tokio::time::sleep(Duration::from_secs(6)).await;
    pg_ctl(&["start", "-w"]);
    // Each instance takes a change again (a write is what a cut-off leader cannot do without
    // the lock), retried while it answers 503, and then reads what was stored before.
    for (n, s) in [&p.leader, &p.standby].into_iter().enumerate() {
        let took = changes_again(s, &format!("after {n}")).await;
        eprintln!("instance {n} took a change again {took:?} after the database was back");
    }
    assert_eq!(
        leader_url(&p.database),
        Some(format!("http://{}", p.leader.addr())),
        "the lead moved to the standby"
    );
    for s in [&p.leader, &p.standby] {
        let face = Face::for_format(Format::Xml, s);
        let session = face.get_session(BOB, &sid).await.ok(200);
        assert_eq!(session.subject.as_deref(), Some("before"));
        let list = face.list_sessions(ALICE).await.ok(200);
        assert_eq!(list.chat_session_information.len(), 3, "{list:?}");
    }
}

/// A leader frozen (SIGSTOP, a paused VM) keeps its TCP connection to the database alive
/// (its kernel answers the keepalives) but sends nothing: the database ends its idle session
/// after 10 s, and the lock with it, and the standby takes over (then waits out the lease);
/// continued, the old leader finds its session gone, writes nothing (the fence) and stands
/// by, forwarding to the new leader. Before, nobody took over for as long as it stayed
/// frozen (the cluster review: no takeover in 25 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn a_frozen_leader_is_replaced_and_continued_stands_by() {
    let p = pair(&[]);
    changes_again(&p.leader, "before").await;
    signal(&p.leader, "-STOP");
    let frozen = Instant::now();
    let own = format!("http://{}", p.standby.addr());
    while leader_url(&p.database).as_deref() != Some(own.as_str()) {
        assert!(
            frozen.elapsed() < PATIENCE,
            "the standby never took over from the frozen leader"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took_over = frozen.elapsed();
    let served = changes_again(&p.standby, "while the old leader is frozen").await;
    eprintln!(
        "the standby took the lead {took_over:?} after the leader froze, and served a change \
         {served:?} later"
    );
    signal(&p.leader, "-CONT");
    // Continued: it stands by and forwards, and what it holds in memory changes nothing.
    changes_again(&p.leader, "through the old leader").await;
    for s in [&p.leader, &p.standby] {
        let list = Face::for_format(Format::Json, s)
            .list_sessions(ALICE)
            .await
            .ok(200);
        assert_eq!(list.chat_session_information.len(), 3, "{list:?}");
    }
    assert_eq!(leader_url(&p.database), Some(own), "the lead stayed");
}

/// A standby whose database session ends as it takes the lead (between taking the lock and
/// reading the state: its lease wait), as when the database restarts just after a leader's
/// death, stands by again and leads once the database answers, serving what was stored.
/// Before, it exited ("could not open the store"), and with it the cluster's last instance
/// (the PostgreSQL operator review: 4 of 4 restarts within 2 s of the leader's death).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn a_standby_whose_database_goes_away_as_it_takes_the_lead_stands_by_and_leads() {
    let mut p = pair(&[]);
    let a = Face::for_format(Format::Json, &p.leader);
    let (location, _) = a
        .create_session(ALICE, &docs::session("before", &[BOB]))
        .await
        .created();
    let sid = docs::last_segment(&location);
    signal(&p.leader, "-KILL");
    // The standby takes the lock within a look (1 s), writes the leader row naming itself,
    // and then waits out the lease (2 s) before it reads its state: its session is ended in
    // that wait (or, on a slow machine, in the few ms between the row and the wait, the
    // other path of the same rule: the open is then tried again).
    let own = format!("http://{}", p.standby.addr());
    let since = Instant::now();
    while leader_url(&p.database).as_deref() != Some(own.as_str()) {
        assert!(
            since.elapsed() < PATIENCE,
            "the standby never took the lead"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    end_the_leaders_session(&p.database);
    let took = changes_again(&p.standby, "after").await;
    eprintln!("the standby took a change {took:?} after its session was ended");
    assert!(p.standby.wait_exit(0).is_none(), "the standby exited");
    let log = std::fs::read_to_string(p.standby_log()).unwrap_or_default();
    assert!(
        log.contains("the database went away as this instance took the lead")
            || log.contains("cannot reach the database"),
        "{log}"
    );
    let face = Face::for_format(Format::Xml, &p.standby);
    let session = face.get_session(BOB, &sid).await.ok(200);
    assert_eq!(session.subject.as_deref(), Some("before"));
}

/// The fence: a leader frozen (SIGSTOP) while its database session is ended, so that the
/// standby takes the database over and serves changes; continued, the old leader must not
/// write from its stale memory: it notices within a heartbeat, finds the lock taken, answers
/// 503 and starts over in place as a standby, after which requests to it are forwarded to the
/// new leader. Every change is stored once, none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn a_leader_cut_off_while_another_took_over_never_writes_again_and_stands_by() {
    let p = pair(&[]);
    changes_again(&p.leader, "first").await;
    signal(&p.leader, "-STOP");
    end_the_leaders_session(&p.database);
    let took = changes_again(&p.standby, "while the old leader is frozen").await;
    eprintln!("the standby led {took:?} after the leader's session ended");
    signal(&p.leader, "-CONT");
    // What the old leader answers while it finds out and starts over: a 503 always comes with
    // `Retry-After` and never says its storage failed (the lead moved; nothing failed). Until
    // its first heartbeat after the freeze, its lease has lapsed (the database's 503); then it
    // knows another instance leads.
    let until = Instant::now() + Duration::from_secs(10);
    let (mut refused, mut told_why) = (0, 0);
    while !p.leader.stdout().contains("standby") && Instant::now() < until {
        let url = p.leader.urls().subscriptions(ALICE);
        let Ok(a) = support::http_client(support::APP_TOKEN)
            .get(&url)
            .send()
            .await
        else {
            continue;
        };
        if a.status() == 503 {
            refused += 1;
            let retry = a.headers().get("retry-after").cloned();
            let body = a.text().await.unwrap_or_default();
            if body.contains("another instance leads") {
                told_why += 1;
                assert_eq!(
                    retry.as_ref().map(|v| v.as_bytes()),
                    Some(&b"1"[..]),
                    "{body}"
                );
            } else {
                assert!(body.contains("database is unreachable"), "{body}");
                assert_eq!(
                    retry.as_ref().map(|v| v.as_bytes()),
                    Some(&b"2"[..]),
                    "{body}"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "the old leader answered {refused} requests 503 while it started over, {told_why} \
         saying another instance leads"
    );
    assert!(
        told_why > 0,
        "the old leader was seen refusing while it started over"
    );
    let took = changes_again(&p.leader, "through the old leader").await;
    eprintln!("the old leader forwarded a change {took:?} after it was continued");
    for s in [&p.leader, &p.standby] {
        let face = Face::for_format(Format::Json, s);
        let list = face.list_sessions(ALICE).await.ok(200);
        let subjects: BTreeSet<String> = list
            .chat_session_information
            .iter()
            .filter_map(|i| i.subject.clone())
            .collect();
        assert_eq!(
            subjects,
            BTreeSet::from([
                "first".to_owned(),
                "while the old leader is frozen".to_owned(),
                "through the old leader".to_owned()
            ]),
        );
    }
    let log = p.leader.stdout();
    assert!(
        log.contains("standby"),
        "the old leader stands by now: {log}"
    );
}

/// A leader frozen (SIGSTOP) that nobody replaces (here the test's own session takes the
/// instance lock when the database ends the frozen leader's; the takeover is
/// `a_frozen_leader_is_replaced_and_continued_stands_by`): the standby does not hang: a
/// request it forwarded to it is answered `503 SVC2001` with `Retry-After: 1` once the
/// leader has not started its answer within 20 s (the leader answers everything within
/// 15 s, database outage included). Continued, the cluster serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn a_frozen_leader_gets_the_standbys_clients_a_503_not_a_hang() {
    const TOKEN: &str = "cluster-metrics-token-0123456789abcdef";
    let p = pair(&[("NETAPI_CHAT_METRICS_TOKEN", TOKEN)]);
    changes_again(&p.leader, "before").await;
    let lock = hold_the_instance_lock_next(&p.database);
    signal(&p.leader, "-STOP");
    let started = Instant::now();
    // Meanwhile a load balancer's readiness probe at the standby: not ready, within its
    // probe's few seconds (before, it waited the 20 s too, so the probe timed out instead).
    let ready_url = format!("{}/readyz", p.standby.base);
    let probe = tokio::spawn(async move {
        let a = support::send_empty("GET", &ready_url, Format::Json).await;
        (a, started.elapsed())
    });
    let a = tokio::time::timeout(
        Duration::from_secs(40),
        support::send_empty("GET", &p.standby.urls().subscriptions(ALICE), Format::Json),
    )
    .await
    .expect("answered, not left hanging");
    let took = started.elapsed();
    signal(&p.leader, "-CONT");
    let (ready, ready_took) = probe.await.expect("the probe");
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert!(
        ready_took < Duration::from_secs(6),
        "not ready within the probe's bound: {ready_took:?}"
    );
    assert_eq!(a.status, 503, "{}", a.body);
    assert_eq!(a.header("retry-after"), "1");
    assert!(
        a.body.contains("SVC2001")
            && a.body.contains("did not answer in time")
            && a.body.contains("may still carry the request out"),
        "{}",
        a.body
    );
    assert!(
        took >= Duration::from_secs(19),
        "waited for the leader: {took:?}"
    );
    // The standby tells its operator too (before, nothing a standby logged reached the log).
    let log = std::fs::read_to_string(p.standby_log()).unwrap_or_default();
    assert!(
        log.contains("forwarding to the leader at") && log.contains("WARN"),
        "the standby's log: {log}"
    );
    // And counts it where an operator alerts (the tests that find it unchanged rest on this).
    let refused = "netapi_chat_standby_unavailable_total";
    assert!(support::metric(&p.standby.base, TOKEN, refused).await >= 1.0);
    drop(lock);
    changes_again(&p.standby, "after").await;
}

/// A TCP link to the test database that the test can cut as a network partition does: once
/// blackholed, nothing is forwarded either way and nothing is closed (no FIN, no RST: the
/// kernel still acknowledges what arrives), and new connections are accepted and held as
/// well; healed, the held connections are dropped (their ends see them close) and new ones
/// are forwarded again.
struct Link {
    port: u16,
    cut: tokio::sync::watch::Sender<bool>,
}

impl Link {
    /// A link to the test database's TCP listener (the port of
    /// `NETAPI_CHAT_TEST_DATABASE_TLS_URL`; a plain connection is accepted there too).
    async fn to_the_database() -> Link {
        Link::to_the_database_on(0).await
    }

    /// [`Link::to_the_database`] listening on `port` of 127.0.0.1 (`0`: any free one).
    async fn to_the_database_on(port: u16) -> Link {
        let tls = std::env::var("NETAPI_CHAT_TEST_DATABASE_TLS_URL").expect("test database");
        let database_port: u16 = tls
            .split('@')
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .and_then(|host_port| host_port.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .expect("the test database's TCP port");
        let upstream = std::net::SocketAddr::from(([127, 0, 0, 1], database_port));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the link");
        let port = listener.local_addr().expect("the link's address").port();
        let (cut, watch) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            while let Ok((mut near, _)) = listener.accept().await {
                let mut watch = watch.clone();
                tokio::spawn(async move {
                    let blackholed = *watch.borrow();
                    if !blackholed {
                        let Ok(mut far) = tokio::net::TcpStream::connect(upstream).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut near, &mut far) => return,
                            _ = watch.wait_for(|cut| *cut) => {}
                        }
                        let _ = watch.wait_for(|cut| !*cut).await;
                        drop(far);
                    } else {
                        let _ = watch.wait_for(|cut| !*cut).await;
                    }
                    drop(near);
                });
            }
        });
        Link { port, cut }
    }

    /// `database` (a URL of the test cluster), reached through this link.
    fn url_of(&self, database: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{}?sslmode=disable",
            self.port,
            database_name(database)
        )
    }

    fn blackhole(&self) {
        self.cut.send_replace(true);
    }

    fn heal(&self) {
        self.cut.send_replace(false);
    }
}

/// A free port of 127.0.0.1 where nothing listens yet (connections refused), and the URL of
/// `database` reached there: a database not there yet, until a [`Link::to_the_database_on`]
/// that port opens.
fn not_there_yet(database: &str) -> (u16, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!(
        "postgres://postgres@127.0.0.1:{port}/{}?sslmode=disable",
        database_name(database)
    );
    (port, url)
}

/// An instance of a cluster started while its database cannot be reached answers at once
/// (issue 14 item 4: never a hang): `/healthz` `200`, `/readyz` `503`, and an API request
/// `503 SVC2001` with `Retry-After` in the asked format; its log says why, once however long
/// the outage lasts. Once the database can be reached it leads and serves. Before, it held
/// its port unanswered for as long as the database was away (a client waited in the listen
/// backlog, a liveness probe failed, and it never said where it listens).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn an_instance_started_while_its_database_is_away_answers_503_until_it_leads() {
    let dir = support::temp_data_dir();
    let database = support::postgres_database_for(&dir)
        .expect("NETAPI_CHAT_TEST_DATABASE_URL: run through `cargo xtask test`");
    let (port, url) = not_there_yet(&database);
    let log = dir.join("instance.log");
    let instance = Server::launch(
        support::Launch {
            data_dir: dir.to_path_buf(),
            env: &cluster_env(&url, &[("NETAPI_CHAT_LOG_LEVEL", "info")]),
            stderr: support::Stderr::File(log.clone()),
            ..support::Launch::default()
        },
        None,
    );
    let healthz = support::send("GET", &format!("{}/healthz", instance.base), &[], None).await;
    assert_eq!(healthz.status, 200, "{}", healthz.body);
    let readyz = support::send("GET", &format!("{}/readyz", instance.base), &[], None).await;
    assert_eq!(readyz.status, 503, "{}", readyz.body);
    for format in [Format::Json, Format::Xml] {
        let a = support::send_doc(
            "POST",
            &instance.urls().chat_sessions(ALICE),
            format,
            &docs::session("while away", &[BOB]),
        )
        .await;
        a.assert_error(503, "SVC2001", format);
        assert!(
            a.header("retry-after").parse::<u64>().is_ok_and(|s| s >= 1),
            "Retry-After: {:?}",
            a.header("retry-after")
        );
    }
    // Several looks at the database later, the outage is still said once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        said.matches("cannot reach the database").count(),
        1,
        "said once: {said}"
    );
    let _link = Link::to_the_database_on(port).await;
    changes_again(&instance, "once the database is back").await;
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        said.contains("the database can be reached again"),
        "and says when it can: {said}"
    );
}

/// The first instance of a new cluster, started while its database cannot be reached and
/// before any token file exists: it does not refuse to start for want of the file (it stands
/// by answering `503`), and once the database is back it leads and writes the token file, as
/// any first start does; the token it wrote is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn a_new_clusters_first_instance_started_while_its_database_is_away_writes_its_token_file() {
    let dir = support::temp_data_dir();
    let database = support::postgres_database_for(&dir)
        .expect("NETAPI_CHAT_TEST_DATABASE_URL: run through `cargo xtask test`");
    std::fs::remove_file(dir.join("tokens")).expect("no token file yet");
    let (port, url) = not_there_yet(&database);
    let instance = Server::launch(
        support::Launch {
            data_dir: dir.to_path_buf(),
            env: &cluster_env(&url, &[]),
            ..support::Launch::default()
        },
        None,
    );
    let healthz = support::send("GET", &format!("{}/healthz", instance.base), &[], None).await;
    assert_eq!(healthz.status, 200, "{}", healthz.body);
    let _link = Link::to_the_database_on(port).await;
    let tokens = dir.join("tokens");
    let until = Instant::now() + PATIENCE;
    let token = loop {
        let text = std::fs::read_to_string(&tokens).unwrap_or_default();
        if let Some(token) = text
            .lines()
            .find(|l| !l.starts_with('#') && !l.trim().is_empty())
            .and_then(|l| l.split_whitespace().next())
        {
            break token.to_owned();
        }
        assert!(Instant::now() < until, "no token file written");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let client = support::http_client(&token);
    let until = Instant::now() + PATIENCE;
    loop {
        let a = client
            .get(instance.urls().subscriptions(ALICE))
            .send()
            .await
            .map(|a| a.status().as_u16());
        if matches!(a, Ok(200)) {
            break;
        }
        assert!(
            Instant::now() < until,
            "the written token is not accepted: {a:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A standby started a moment before the token file it needs exists (instances of a new
/// cluster deployed together: the first writes the file once it leads) waits for it, then
/// stands by and forwards. Before, it refused to start at once (the upgrade review).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn a_standby_started_before_its_token_file_exists_waits_for_it() {
    let leader_dir = support::temp_data_dir();
    let database = support::postgres_database_for(&leader_dir)
        .expect("NETAPI_CHAT_TEST_DATABASE_URL: run through `cargo xtask test`");
    let leader = Server::start_in(&leader_dir, &cluster_env(&database, &[]), None);
    changes_again(&leader, "before the standby").await;
    let standby_dir = support::temp_data_dir();
    let tokens = standby_dir.join("tokens");
    let kept = std::fs::read(&tokens).expect("the token file");
    std::fs::remove_file(&tokens).expect("remove it");
    let appears = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        std::fs::write(&tokens, kept).expect("the token file appears");
    });
    let standby = Server::start_in(&standby_dir, &cluster_env(&database, &[]), None);
    appears.join().expect("the writer");
    changes_again(&standby, "through the standby").await;
}

/// A standby started without its token file while its database could not be reached (so
/// it could not tell whether it would lead a new cluster) is refused once the database says
/// another instance leads, as one started with the database there is: not left standing by
/// until the cluster needs it to lead, when it could not (the diff review).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn a_standby_without_its_token_file_is_refused_once_its_database_answers() {
    let leader_dir = support::temp_data_dir();
    let database = support::postgres_database_for(&leader_dir)
        .expect("NETAPI_CHAT_TEST_DATABASE_URL: run through `cargo xtask test`");
    let leader = Server::start_in(&leader_dir, &cluster_env(&database, &[]), None);
    changes_again(&leader, "a cluster that leads").await;
    let standby_dir = support::temp_data_dir();
    std::fs::remove_file(standby_dir.join("tokens")).expect("no token file");
    let (port, url) = not_there_yet(&database);
    let log = standby_dir.join("standby.log");
    let mut standby = Server::launch(
        support::Launch {
            data_dir: standby_dir.to_path_buf(),
            env: &cluster_env(&url, &[]),
            stderr: support::Stderr::File(log.clone()),
            ..support::Launch::default()
        },
        None,
    );
    let _link = Link::to_the_database_on(port).await;
    let exit = standby
        .wait_exit(40)
        .expect("refused, not left standing by");
    assert!(!exit.success(), "{exit:?}");
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(said.contains("the token file"), "{said}");
}

/// One answer of the old leader while it is cut off: when (since the cut), to what, and what.
#[derive(Debug)]
struct Seen {
    at: Duration,
    what: &'static str,
    status: u16,
    retry_after: bool,
    body: String,
}

/// GETs `url` with the application token; `None` when no answer came (a closed connection).
async fn get_answer(client: &reqwest::Client, url: &str) -> Option<(u16, bool, String)> {
    let a = client
        .get(url)
        .header("accept", "application/json")
        .send()
        .await
        .ok()?;
    let status = a.status().as_u16();
    let retry_after = a.headers().contains_key("retry-after");
    Some((status, retry_after, a.text().await.unwrap_or_default()))
}

/// The split of the cluster-chaos review: the leader's database link goes silent (nothing
/// arrives, nothing closes), the database ends its session and the standby takes over. The
/// old leader must not answer from its memory, which no longer describes the database: within
/// its lease (`store::LEASE`, 2 s, and a second of slack for a loaded machine) every request
/// to it gets `503 SVC2001` with `Retry-After` (not `200 "ended": false` for a session the new
/// leader ended, nor `404` for one it created), its `/readyz` is `503` and its `/metrics` says
/// it does not lead; and nothing it answers after the new leader's first change is anything
/// but `503`. Healed, it starts over as a standby and forwards. Before, it answered from
/// memory for ~12 s, until its database wait ran out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn a_leader_whose_database_link_goes_silent_answers_503_not_its_stale_memory() {
    const TOKEN: &str = "cluster-metrics-token-0123456789abcdef";
    const LEASE_AND_SLACK: Duration = Duration::from_secs(3);
    const WATCHED: Duration = Duration::from_secs(9);
    let link = Link::to_the_database().await;
    let leader_dir = support::temp_data_dir();
    let database = support::postgres_database_for(&leader_dir)
        .expect("NETAPI_CHAT_TEST_DATABASE_URL: run through `cargo xtask test`");
    let metrics = ("NETAPI_CHAT_METRICS_TOKEN", TOKEN);
    let via_link = link.url_of(&database);
    // Its log at the default level, which must say why it refuses.
    let leader_log = leader_dir.join("leader.log");
    let leader = Server::launch(
        support::Launch {
            data_dir: leader_dir.to_path_buf(),
            env: &cluster_env(&via_link, &[metrics]),
            stderr: support::Stderr::File(leader_log.clone()),
            ..support::Launch::default()
        },
        None,
    );
    let standby_dir = support::temp_data_dir();
    let standby = Server::start_in(&standby_dir, &cluster_env(&database, &[metrics]), None);
    let old = Face::for_format(Format::Json, &leader);
    let (location, _) = old
        .create_session(ALICE, &docs::session("before the cut", &[BOB]))
        .await
        .created();
    let s1 = docs::last_segment(&location);
    old.set_status(BOB, &s1, BOB, ParticipantStatus::Connected)
        .await
        .ok(200);
    let leading = "netapi_chat_cluster_leading";
    assert_eq!(support::metric(&leader.base, TOKEN, leading).await, 1.0);

    let cut = Instant::now();
    link.blackhole();
    end_the_leaders_session(&database);
    // Through the standby, which takes over: the session ends (204), a new one starts.
    let (s1_at_standby, sessions_at_standby) = {
        let new = Face::for_format(Format::Json, &standby);
        (new.session_url(ALICE, &s1), new.sessions_url(ALICE))
    };
    let made: Arc<Mutex<(Option<Duration>, Option<String>)>> = Arc::default();
    let told = Arc::clone(&made);
    let changes = tokio::spawn(async move {
        let client = support::http_client(support::APP_TOKEN);
        loop {
            match client.delete(&s1_at_standby).send().await {
                Ok(a) if a.status() == 204 => break,
                Ok(a) => assert_eq!(a.status(), 503, "ending the session: {a:?}"),
                Err(_) => {}
            }
            assert!(cut.elapsed() < PATIENCE, "the session never ended");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        told.lock().unwrap().0 = Some(cut.elapsed());
        let mut doc = docs::session("after the cut", &[BOB]);
        doc.client_correlator = Some("after the cut".to_owned());
        let (_, location) = post_until_created(&sessions_at_standby, &doc).await;
        told.lock().unwrap().1 = Some(docs::last_segment(&location));
    });
    // Meanwhile the old leader is asked, as a load balancer that still sends it requests
    // would, every 50 ms; its /metrics and /readyz on the side (a scrape may wait).
    let asking = {
        let made = Arc::clone(&made);
        let s1_at_old = old.session_url(BOB, &s1);
        // Session ids are URL-safe: S2's URL is S1's with the other id.
        let (s1_id, s1_url) = (s1.clone(), s1_at_old.clone());
        let s2_at_old = move |sid: &str| s1_url.replace(&s1_id, sid);
        tokio::spawn(async move {
            let client = support::http_client(support::APP_TOKEN);
            let mut seen: Vec<Seen> = Vec::new();
            while cut.elapsed() < WATCHED {
                let mut asked = vec![("S1, which the new leader ends", s1_at_old.clone())];
                if let Some(sid) = made.lock().unwrap().1.clone() {
                    asked.push(("S2, which the new leader made", s2_at_old(&sid)));
                }
                for (what, url) in asked {
                    if let Some((status, retry_after, body)) = get_answer(&client, &url).await {
                        seen.push(Seen {
                            at: cut.elapsed(),
                            what,
                            status,
                            retry_after,
                            body,
                        });
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            seen
        })
    };
    let (mut not_leading_at, mut not_ready_at) = (None, None);
    let ready = format!("{}/readyz", leader.base);
    while cut.elapsed() < WATCHED && (not_leading_at.is_none() || not_ready_at.is_none()) {
        if not_leading_at.is_none() && support::metric(&leader.base, TOKEN, leading).await == 0.0 {
            not_leading_at = Some(cut.elapsed());
        }
        let status = support::send_empty("GET", &ready, Format::Json)
            .await
            .status;
        if not_ready_at.is_none() && status == 503 {
            not_ready_at = Some(cut.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = asking.await.expect("the old leader asked");
    let client = support::http_client(support::APP_TOKEN);
    changes.await.expect("the changes through the new leader");
    let (ended_at, s2) = made.lock().unwrap().clone();
    let (ended_at, s2) = (ended_at.expect("ended"), s2.expect("made"));
    let answered = |s: &Seen| s.status != 503;
    let first_refused = seen.iter().find(|s| !answered(s)).map(|s| s.at);
    let last_answered = seen.iter().rev().find(|s| answered(s)).map(|s| s.at);
    eprintln!(
        "after the cut: the new leader ended S1 at {ended_at:?}; the old leader first answered \
         503 at {first_refused:?}, last answered from memory at {last_answered:?}, said it does \
         not lead at {not_leading_at:?}, not ready at {not_ready_at:?}"
    );
    let stale: Vec<&Seen> = seen
        .iter()
        .filter(|s| answered(s) && (s.at >= LEASE_AND_SLACK || s.at >= ended_at))
        .collect();
    assert!(
        stale.is_empty(),
        "the old leader answered from its memory past its lease or after the new leader's \
         change: {stale:#?}"
    );
    assert!(
        seen.iter().any(|s| s.at >= LEASE_AND_SLACK),
        "the old leader was asked past its lease: {seen:#?}"
    );
    for s in seen.iter().filter(|s| !answered(s)) {
        assert!(
            s.retry_after && s.body.contains("SVC2001"),
            "{}: {s:#?}",
            s.what
        );
    }
    assert!(
        not_leading_at.is_some_and(|at| at < LEASE_AND_SLACK),
        "netapi_chat_cluster_leading still 1: {not_leading_at:?}"
    );
    assert!(
        not_ready_at.is_some_and(|at| at < LEASE_AND_SLACK),
        "/readyz still 200: {not_ready_at:?}"
    );
    let log = std::fs::read_to_string(&leader_log).unwrap_or_default();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("has not answered for 2 s")),
        "the old leader's log says why it refuses: {log}"
    );
    // Healed: the old leader finds another one leading, starts over as a standby and
    // forwards; S2 reads through it as through the new leader.
    link.heal();
    let s2_at_old = old.session_url(BOB, &s2);
    let until = Instant::now() + PATIENCE;
    loop {
        if let Some((200, _, _)) = get_answer(&client, &s2_at_old).await {
            break;
        }
        assert!(Instant::now() < until, "the old leader never forwarded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let gone = get_answer(&client, &old.session_url(BOB, &s1)).await;
    let at_new = get_answer(
        &client,
        &Face::for_format(Format::Json, &standby).session_url(BOB, &s1),
    )
    .await;
    assert_eq!(
        gone.map(|g| g.0),
        at_new.map(|n| n.0),
        "S1 reads alike through both"
    );
}

/// A leader cut off from the database while another took over, and back after that one died:
/// the lock is free again, but the other one changed the database, so the old leader must not
/// go on from its memory (it answered 404 for every session the other one made, and would
/// have written its kept changes over the other one's). It finds the leader row another's,
/// starts over, and leads from the database: what the other one made reads through it. Its
/// binary's file is removed after it started (an upgrade in place): it starts over all the
/// same (before, its exec of the path failed and it exited).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn a_leader_back_after_another_led_and_died_leads_from_the_database() {
    let link = Link::to_the_database().await;
    let leader_dir = support::temp_data_dir();
    let database = support::postgres_database_for(&leader_dir)
        .expect("NETAPI_CHAT_TEST_DATABASE_URL: run through `cargo xtask test`");
    let bin_dir = support::temp_data_dir();
    let copy = bin_dir.join("netapi-chat-copy");
    let run_copy = format!(
        "cp \"$0\" '{}' && exec '{}' \"$@\"",
        copy.display(),
        copy.display()
    );
    let leader = Server::launch(
        support::Launch {
            data_dir: leader_dir.to_path_buf(),
            env: &cluster_env(&link.url_of(&database), &[]),
            run_under: &["sh", "-c", &run_copy],
            ..support::Launch::default()
        },
        None,
    );
    std::fs::remove_file(&copy).expect("remove the running binary's file");
    let standby_dir = support::temp_data_dir();
    let standby = Server::start_in(&standby_dir, &cluster_env(&database, &[]), None);
    let old = Face::for_format(Format::Json, &leader);
    old.create_session(ALICE, &docs::session("before the cut", &[BOB]))
        .await
        .created();

    link.blackhole();
    end_the_leaders_session(&database);
    let mut doc = docs::session("while the old leader was away", &[BOB]);
    doc.client_correlator = Some("while away".to_owned());
    let at_standby = Face::for_format(Format::Json, &standby).sessions_url(ALICE);
    let (_, location) = post_until_created(&at_standby, &doc).await;
    let made = docs::last_segment(&location);
    drop(support::TempDir::adopt(standby.kill()));
    link.heal();

    let client = support::http_client(support::APP_TOKEN);
    let url = old.session_url(ALICE, &made);
    let until = Instant::now() + PATIENCE;
    loop {
        match get_answer(&client, &url).await {
            Some((200, _, _)) => break,
            got => assert!(
                Instant::now() < until,
                "the session the other leader made never read through the old one: {got:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(standby_dir);
}

/// A standby stopped with SIGTERM (a rolling restart) while it forwards a request: the
/// request is answered (before, the connection was reset, though the leader had carried the
/// request out, so a client retried a change it had made), then the standby exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn a_standby_stopped_with_sigterm_answers_what_it_forwards() {
    let mut p = pair(&[]);
    let face = Face::for_format(Format::Json, &p.leader);
    // A long poll that waits 3 s: forwarded, and under way when the standby is told to stop.
    let request = docs::channel(ChannelType::LongPolling, Some(5), Some(3));
    let (_, ch) = face.create_channel(BOB, &request).await.created();
    let channel_url = ch
        .channel_data
        .and_then(|d| d.channel_url)
        .expect("a channelURL");
    let through_standby = channel_url.replace(&p.leader.addr(), &p.standby.addr());
    assert_ne!(through_standby, channel_url);
    let poll = tokio::spawn(async move {
        support::send(
            "POST",
            &through_standby,
            &[("accept", "application/json")],
            None,
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    signal(&p.standby, "-TERM");
    let answered = poll.await.expect("answered, not reset");
    assert_eq!(answered.status, 200, "{}", answered.body);
    let exited = p.standby.wait_exit(10);
    assert!(
        exited.is_some_and(|s| s.success()),
        "the standby exits once it answered: {exited:?}"
    );
}

/// Clients that connected to a standby and sent their request just before its SIGTERM (a
/// rolling restart), in its listen backlog or accepted with the request unread, get the
/// leader's answer through it, not a reset connection (ops review O10: 2-4 per stop under
/// load). The standby is frozen while they connect, so that all of them are there when it
/// stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn requests_queued_at_a_standby_when_sigterm_arrives_are_answered() {
    let mut p = pair(&[]);
    changes_again(&p.standby, "the standby forwards").await;
    let url = p.standby.urls().subscriptions(BOB);
    support::answers_what_is_queued_at_a_stop(&mut p.standby, &url).await;
}

/// Each instance's `/metrics` is its own: the leader's series with
/// `netapi_chat_cluster_leading 1`, a standby's `0` with what it forwarded. Before, a standby
/// forwarded `/metrics`, so a job scraping every instance counted the leader's series once
/// per instance and could not tell which one leads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn each_instance_answers_its_own_metrics() {
    const TOKEN: &str = "cluster-metrics-token-0123456789abcdef";
    let p = pair(&[("NETAPI_CHAT_METRICS_TOKEN", TOKEN)]);
    changes_again(&p.standby, "through the standby").await;
    let leading = "netapi_chat_cluster_leading";
    assert_eq!(support::metric(&p.leader.base, TOKEN, leading).await, 1.0);
    assert_eq!(support::metric(&p.standby.base, TOKEN, leading).await, 0.0);
    let forwarded =
        support::metric(&p.standby.base, TOKEN, "netapi_chat_standby_requests_total").await;
    assert!(forwarded >= 1.0, "{forwarded}");
    // The standby's own series only: not the leader's.
    let a = support::send(
        "GET",
        &format!("{}/metrics", p.standby.base),
        &[("authorization", &format!("Bearer {TOKEN}"))],
        None,
    )
    .await;
    assert!(
        !a.body.contains("netapi_chat_http_requests_total"),
        "{}",
        a.body
    );
    // An API token does not open it.
    let refused = support::send("GET", &format!("{}/metrics", p.standby.base), &[], None).await;
    assert_eq!(refused.status, 401, "{}", refused.body);
}

/// A leader whose `NETAPI_CHAT_CLUSTER_URL` does not reach it (a copy-paste slip, a port
/// nobody listens on) makes every standby answer `503` for as long as it leads; it says so in
/// its log, at `error`, naming the URL. A leader whose URL is right says nothing of the kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn a_leader_whose_cluster_url_does_not_reach_it_says_so() {
    let check = async |cluster_url: &str| {
        let dir = support::temp_data_dir();
        let database = support::postgres_database_for(&dir)
            .expect("NETAPI_CHAT_TEST_DATABASE_URL: run through `cargo xtask test`");
        let env = cluster_env(&database, &[("NETAPI_CHAT_CLUSTER_URL", cluster_url)]);
        let server = support::Launch {
            data_dir: dir.to_path_buf(),
            env: &env,
            stderr: support::Stderr::Collect,
            ..support::Launch::default()
        }
        .spawn();
        assert!(server.base.is_some(), "listening: {}", server.stderr());
        // The check runs at once when it leads; 5 s is ample.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !server.stderr().contains("does not reach it") && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = server.stderr();
        (log.contains("does not reach it"), log)
    };
    let (said, log) = check("http://127.0.0.1:10").await;
    assert!(
        said && log.contains("ERRO") && log.contains("http://127.0.0.1:10"),
        "{log}"
    );
    let (said, log) = check("auto").await;
    assert!(
        !said && !log.contains("reaches another"),
        "a right URL is not reported: {log}"
    );
}

/// A WebSockets notification channel whose socket is opened through the standby: the
/// handshake is forwarded to the leader and the upgraded connection relayed both ways, so the
/// notifications of a chat started through the leader arrive over it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn a_websocket_channel_opened_through_the_standby_gets_its_notifications() {
    let p = pair(&[]);
    let (a, b) = (
        Face::for_format(Format::Json, &p.leader),
        Face::for_format(Format::Json, &p.standby),
    );
    let listener = Listener::start().await;
    let (callback, channel_url) = b.channel(BOB, ChannelType::WebSockets).await;
    // The channel's URL names the leader (the public URL); the socket goes to the standby.
    let through_standby = channel_url.replace(&p.leader.addr(), &p.standby.addr());
    assert_ne!(through_standby, channel_url);
    let _relay = Relay::start_socket(through_standby, Format::Json, listener.url.clone());
    let doc = docs::subscription_to(&callback, BOB, Format::Json);
    b.create_subscription(BOB, &doc).await.created();
    a.create_session(ALICE, &docs::session("over a socket", &[BOB]))
        .await
        .created();
    let got = listener.wait_for(1).await;
    assert_eq!(
        got[0].kind(),
        "sessionInvitationNotification",
        "{:?}",
        got[0].body
    );
}

// --- TLS between instances: every instance serves HTTPS, standbys forward over TLS.

/// A self-signed certificate for 127.0.0.1 (an IP SAN: `auto` makes the cluster URL
/// `https://127.0.0.1:port`, and that address is what a standby verifies) and localhost,
/// written as PEM into `dir`: (certificate path, key path, certificate DER).
fn certificate(dir: &std::path::Path, name: &str) -> (String, String, Vec<u8>) {
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("self-signed certificate");
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert, made.cert.pem()).expect("write certificate");
    std::fs::write(&key, made.signing_key.serialize_pem()).expect("write key");
    (
        cert.display().to_string(),
        key.display().to_string(),
        made.cert.der().to_vec(),
    )
}

/// How the standby of a [`tls_pair`] is set up (the leader always serves HTTPS).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Standby {
    /// Serves HTTPS with the leader's certificate and trusts it
    /// (`NETAPI_CHAT_CLUSTER_CA_FILE`, given to the leader too).
    Trusting,
    /// Serves HTTPS with the leader's certificate but trusts Mozilla's roots only, which hold
    /// no self-signed certificate.
    Untrusting,
    /// Serves plain HTTP and trusts the leader's certificate: a mixed cluster.
    Plain,
}

/// Two instances on one database whose leader serves HTTPS with a self-signed certificate
/// for 127.0.0.1 (`auto` cluster URLs, hence `https://127.0.0.1:port`, which is what a
/// standby verifies), the standby set up as [`Standby`] says.
struct TlsPair {
    p: Pair,
    /// The certificate (DER): what a test's client trusts.
    der: Vec<u8>,
    /// The settings the standby got besides the cluster's, for another instance like it.
    standby_env: Vec<(&'static str, String)>,
}

/// Owned settings as [`cluster_env`] takes them.
fn settings<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Starts a [`TlsPair`]; the certificate's directory goes with the pair's directories.
fn tls_pair(standby: Standby) -> TlsPair {
    let certs = support::temp_dir();
    let (cert, key, der) = certificate(&certs, "instance");
    let serving = vec![
        ("NETAPI_CHAT_TLS_CERT", cert.clone()),
        ("NETAPI_CHAT_TLS_KEY", key),
    ];
    let trusting = ("NETAPI_CHAT_CLUSTER_CA_FILE", cert);
    let (leader_env, mut standby_env) = match standby {
        Standby::Trusting => {
            let mut both = serving;
            both.push(trusting);
            (both.clone(), both)
        }
        Standby::Untrusting => (serving.clone(), serving),
        Standby::Plain => (serving, vec![trusting]),
    };
    // The standby says when it carries the leader's attempts (over the same TLS).
    standby_env.push(("NETAPI_CHAT_LOG_LEVEL", "info".to_owned()));
    let mut p = pair_with(&settings(&leader_env), &settings(&standby_env));
    p._dirs.push(certs);
    TlsPair {
        p,
        der,
        standby_env,
    }
}

/// A client TLS connection to `server` trusting exactly `root` (DER), verified for 127.0.0.1.
async fn tls_to(
    server: &Server,
    root: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    try_tls_to(server, root).await.expect("a TLS connection")
}

/// [`tls_to`], or why not (a server restarting in between closes or refuses connections).
async fn try_tls_to(
    server: &Server,
    root: &[u8],
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(root.to_vec()))
        .expect("trust the certificate");
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(server.addr())
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("a name");
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))
}

/// An answer over HTTPS: status, `Location`, `Retry-After`, body.
struct Answer {
    status: u16,
    location: Option<String>,
    retry_after: Option<String>,
    body: String,
}

/// One JSON request over a fresh TLS connection to `server` (trusting `root`), authenticated
/// with the application token.
async fn https(
    server: &Server,
    root: &[u8],
    method: &str,
    url: &str,
    body: Option<Vec<u8>>,
) -> Answer {
    try_https(server, root, method, url, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

/// [`https`], or why no answer came.
async fn try_https(
    server: &Server,
    root: &[u8],
    method: &str,
    url: &str,
    body: Option<Vec<u8>>,
) -> Result<Answer, String> {
    use http_body_util::BodyExt as _;
    let stream = try_tls_to(server, root).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP over TLS: {e}"))?;
    tokio::spawn(conn);
    let path = url
        .strip_prefix(&server.base)
        .unwrap_or_else(|| panic!("{url} is not on {}", server.base));
    let mut request = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, server.addr())
        .header(
            http::header::AUTHORIZATION,
            format!("Bearer {}", support::APP_TOKEN),
        )
        .header(http::header::ACCEPT, Format::Json.media_type());
    if body.is_some() {
        request = request.header(http::header::CONTENT_TYPE, Format::Json.media_type());
    }
    let request = request
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.unwrap_or_default(),
        )))
        .expect("a request");
    let answer = sender
        .send_request(request)
        .await
        .map_err(|e| format!("no answer: {e}"))?;
    let status = answer.status().as_u16();
    let header = |name| {
        answer
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (location, retry_after) = (
        header(http::header::LOCATION),
        header(http::header::RETRY_AFTER),
    );
    let body = answer
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("the body: {e}"))?
        .to_bytes();
    Ok(Answer {
        status,
        location,
        retry_after,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// HTTPS end to end: both instances serve TLS with one certificate (`auto` cluster URLs,
/// hence `https://`), the standby trusting it through `NETAPI_CHAT_CLUSTER_CA_FILE`. A client
/// talking HTTPS to the standby only subscribes, starts a session and reads it back; each
/// request is forwarded to the leader over TLS (the notification comes from the leader, the
/// `Location` names it), and a WebSocket channel socket opened over TLS to the standby is
/// relayed over TLS to the leader and carries the next invitation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn over_https_a_standby_serves_tls_and_forwards_to_the_leader_over_tls() {
    use futures_util::StreamExt as _;
    let TlsPair { p, der, .. } = tls_pair(Standby::Trusting);
    assert!(p.leader.base.starts_with("https://"), "{}", p.leader.base);
    assert!(
        p.standby.base.starts_with("https://"),
        "the standby serves HTTPS: {}",
        p.standby.base
    );
    let (standby, leader) = (p.standby.urls(), p.leader.urls());
    let listener = Listener::start().await;

    let doc = wire::encode(
        Format::Json,
        &docs::subscription_to(&listener.url, BOB, Format::Json),
    );
    let a = https(
        &p.standby,
        &der,
        "POST",
        &standby.subscriptions(BOB),
        Some(doc),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let location = a.location.unwrap_or_default();
    assert!(
        location.starts_with(&p.leader.base),
        "made by the leader: {location}"
    );

    let doc = wire::encode(Format::Json, &docs::session("over TLS twice", &[BOB]));
    let a = https(
        &p.standby,
        &der,
        "POST",
        &standby.chat_sessions(ALICE),
        Some(doc),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let sid = docs::last_segment(&a.location.unwrap_or_default());
    let got = listener.wait_for(1).await;
    assert_eq!(got[0].kind(), "sessionInvitationNotification");
    // The standby carries the leader's callback attempts over its TLS connection to it.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let log = std::fs::read_to_string(p.standby_log()).unwrap_or_default();
        if log.contains("carrying callback attempts for the leader") {
            break;
        }
        assert!(Instant::now() < deadline, "{log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let a = https(&p.standby, &der, "GET", &standby.session(BOB, &sid), None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body.contains("over TLS twice"), "{}", a.body);

    // A WebSocket channel: created through the standby, its socket opened over TLS to it.
    let doc = wire::encode(
        Format::Json,
        &docs::channel(ChannelType::WebSockets, Some(5), Some(1)),
    );
    let a = https(&p.standby, &der, "POST", &standby.channels(BOB), Some(doc)).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let channel: netapi_chat_api::NotificationChannel =
        wire::decode(Format::Json, a.body.as_bytes(), &Default::default()).expect("a channel");
    let (callback, channel_url) = (
        channel.callback_url.expect("a callbackURL"),
        channel
            .channel_data
            .and_then(|d| d.channel_url)
            .expect("a channelURL"),
    );
    let through_standby = channel_url.replace(&p.leader.addr(), &p.standby.addr());
    assert_ne!(through_standby, channel_url);
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            through_standby.as_str(),
        )
        .expect("a WebSocket URL");
    request.headers_mut().insert(
        http::header::AUTHORIZATION,
        format!("Bearer {}", support::APP_TOKEN)
            .parse()
            .expect("a header"),
    );
    let (mut socket, _) = tokio_tungstenite::client_async(request, tls_to(&p.standby, &der).await)
        .await
        .expect("WebSocket handshake through the standby");
    let doc = wire::encode(
        Format::Json,
        &docs::subscription_to(&callback, BOB, Format::Json),
    );
    let a = https(
        &p.leader,
        &der,
        "POST",
        &leader.subscriptions(BOB),
        Some(doc),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let doc = wire::encode(Format::Json, &docs::session("over the socket", &[BOB]));
    let a = https(
        &p.leader,
        &der,
        "POST",
        &leader.chat_sessions(ALICE),
        Some(doc),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let frame = tokio::time::timeout(PATIENCE, async {
        loop {
            match socket.next().await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => break t,
                Some(Ok(_)) => continue,
                other => panic!("the socket ended: {other:?}"),
            }
        }
    })
    .await
    .expect("a frame over the socket");
    assert!(
        frame.contains("sessionInvitationNotification") && frame.contains("over the socket"),
        "{frame}"
    );
}

/// A standby that does not trust the leader's certificate (no `NETAPI_CHAT_CLUSTER_CA_FILE`:
/// a self-signed certificate is in no public root set) sends it nothing: the client gets
/// `503 SVC2001` with `Retry-After` in the OMA error format, its text saying that the
/// leader's certificate is not trusted, and the leader, asked directly, has no session, so
/// the request never reached it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn a_standby_sends_nothing_to_a_leader_whose_certificate_it_does_not_trust() {
    let TlsPair { p, der, .. } = tls_pair(Standby::Untrusting);
    let doc = wire::encode(Format::Json, &docs::session("never forwarded", &[BOB]));
    let a = https(
        &p.standby,
        &der,
        "POST",
        &p.standby.urls().chat_sessions(ALICE),
        Some(doc),
    )
    .await;
    assert_eq!(a.status, 503, "{}", a.body);
    assert_eq!(a.retry_after.as_deref(), Some("1"));
    let error: netapi_chat_api::RequestError =
        wire::decode(Format::Json, a.body.as_bytes(), &Default::default())
            .unwrap_or_else(|e| panic!("an OMA requestError: {e}: {}", a.body));
    let exception = error.service_exception.expect("a serviceException");
    assert_eq!(exception.message_id, "SVC2001", "{}", a.body);
    // The reason, for the app developer and the operator: the leader is up, but its
    // certificate is not trusted here.
    assert_eq!(
        exception.variables,
        vec!["the leading instance's TLS certificate is not trusted by this instance".to_owned()],
        "{}",
        a.body
    );
    let a = https(
        &p.leader,
        &der,
        "GET",
        &p.leader.urls().chat_sessions(ALICE),
        None,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(!a.body.contains("never forwarded"), "{}", a.body);
}

/// A page of an allowed origin reads a standby's answers as it reads the leader's: a
/// forwarded answer carries the leader's CORS headers (once), a preflight is answered
/// through the standby, and the standby's own `503` (here: a request that carries the cluster
/// key, which a standby never forwards) carries them too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn a_standby_answers_pages_of_allowed_origins_like_the_leader() {
    const PAGE: &str = "https://app.example.com";
    let p = pair(&[("NETAPI_CHAT_CORS_ORIGINS", PAGE)]);
    let subs = p.standby.urls().subscriptions(ALICE);
    let forwarded = support::send("GET", &subs, &[("origin", PAGE)], None).await;
    assert_eq!(forwarded.status, 200, "{}", forwarded.body);
    let origins: Vec<_> = forwarded
        .headers
        .get_all("access-control-allow-origin")
        .iter()
        .collect();
    assert_eq!(origins, [PAGE], "{:?}", forwarded.headers);
    let vary = forwarded.header("vary");
    assert_eq!(vary.matches("Origin").count(), 1, "{vary}");
    let preflight = support::send(
        "OPTIONS",
        &subs,
        &[
            ("authorization", ""),
            ("origin", PAGE),
            ("access-control-request-method", "POST"),
        ],
        None,
    )
    .await;
    assert_eq!(preflight.status, 204, "{}", preflight.body);
    assert_eq!(
        preflight.header("access-control-allow-methods"),
        "GET, HEAD, POST"
    );
    // The key itself (a client's guess is dropped and forwarded): a standby never forwards a
    // request that carries it, and answers `503` itself.
    let key = cluster_key_of(&p.database);
    let own = support::send(
        "GET",
        &subs,
        &[
            ("origin", PAGE),
            ("x-netapi-chat-cluster-key", key.as_str()),
        ],
        None,
    )
    .await;
    assert_eq!(own.status, 503, "{}", own.body);
    assert_eq!(own.header("access-control-allow-origin"), PAGE);
    assert!(
        own.header("access-control-expose-headers")
            .contains("Retry-After"),
        "{:?}",
        own.headers
    );
}

/// A mixed cluster: the leader serves HTTPS (`auto`: an `https://` URL in the leader row), the
/// standby plain HTTP. The standby forwards in the scheme the leader row says: a plain client
/// request to it is forwarded over TLS (the leader's port speaks nothing else) and answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn a_plain_http_standby_forwards_to_an_https_leader_over_tls() {
    let TlsPair { p, .. } = tls_pair(Standby::Plain);
    assert!(p.leader.base.starts_with("https://"), "{}", p.leader.base);
    assert!(p.standby.base.starts_with("http://"), "{}", p.standby.base);
    let answer = support::http_client(support::APP_TOKEN)
        .post(p.standby.urls().chat_sessions(ALICE))
        .header(http::header::ACCEPT, Format::Json.media_type())
        .header(http::header::CONTENT_TYPE, Format::Json.media_type())
        .body(wire::encode(
            Format::Json,
            &docs::session("from http to https", &[BOB]),
        ))
        .send()
        .await
        .expect("an answer from the standby");
    assert_eq!(answer.status(), 201);
    let location = answer.headers()[http::header::LOCATION]
        .to_str()
        .expect("a Location")
        .to_owned();
    assert!(
        location.starts_with(&p.leader.base),
        "made by the leader: {location}"
    );
}

/// Losing an HTTPS leader: SIGKILL it, and the standby takes the database over and serves
/// HTTPS on the same address with the same certificate (a client that trusts it goes on
/// unchanged); a create retried with its `clientCorrelator` through it until `201` is then
/// readable, and the new leader's own cluster URL is `https://` (a standby started after the
/// takeover forwards to it over TLS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn an_https_standby_takes_over_from_a_killed_leader_and_serves_https() {
    let TlsPair {
        p,
        der,
        standby_env,
    } = tls_pair(Standby::Trusting);
    signal(&p.leader, "-KILL");
    let mut doc = docs::session("after the takeover", &[BOB]);
    doc.client_correlator = Some("takeover-over-tls".to_owned());
    let body = wire::encode(Format::Json, &doc);
    let url = p.standby.urls().chat_sessions(ALICE);
    let started = std::time::Instant::now();
    let location = loop {
        match try_https(&p.standby, &der, "POST", &url, Some(body.clone())).await {
            Ok(a) if a.status == 201 => break a.location.unwrap_or_default(),
            Ok(a) if a.status == 503 => {}
            Ok(a) => panic!("{}: {}", a.status, a.body),
            // The standby closes its connections once as it starts serving.
            Err(_) => {}
        }
        assert!(
            started.elapsed() < PATIENCE,
            "no takeover within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        location.starts_with(&p.standby.base),
        "the former standby leads: {location}"
    );
    let a = https(&p.standby, &der, "GET", &location, None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    // A new standby finds the new leader's https:// URL in the leader row and forwards over TLS.
    let third_dir = support::temp_data_dir();
    let third = Server::start_in(
        &third_dir,
        &cluster_env(&p.database, &settings(&standby_env)),
        None,
    );
    let url = location.replace(&p.standby.base, &third.base);
    let a = https(&third, &der, "GET", &url, None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body.contains("after the takeover"), "{}", a.body);
}

/// An instance whose certificate does not name the host of its own cluster URL would be
/// refused by every standby once it leads (`503` to every client): it refuses to start
/// instead, naming the host, the names the certificate carries and the setting to change,
/// whether the URL is `auto` (an IP address: `https://` + the bound address) or given (a DNS
/// name); `auto` on a wildcard address has no host to check, and is refused asking for an
/// explicit URL. Refused before the database is used, so this runs without PostgreSQL.
#[test]
fn an_instance_whose_certificate_does_not_name_its_cluster_host_refuses_to_start() {
    let dir = support::temp_data_dir();
    let made = rcgen::generate_simple_self_signed(vec!["chat-1.internal".into()])
        .expect("self-signed certificate");
    let (cert, key) = (dir.join("chat-1.crt"), dir.join("chat-1.key"));
    std::fs::write(&cert, made.cert.pem()).expect("write certificate");
    std::fs::write(&key, made.signing_key.serialize_pem()).expect("write key");
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let refused = |url: &str, bind: &str| {
        let (status, stderr) = support::run_to_exit(
            &dir,
            &[
                (
                    "NETAPI_CHAT_DATABASE_URL",
                    "postgres://netapi@127.0.0.1:10/unused",
                ),
                ("NETAPI_CHAT_CLUSTER_URL", url),
                ("NETAPI_CHAT_BIND", bind),
                ("NETAPI_CHAT_TLS_CERT", &cert),
                ("NETAPI_CHAT_TLS_KEY", &key),
            ],
        );
        assert!(!status.success(), "{url} on {bind}: {stderr}");
        stderr
    };
    for (url, host) in [
        ("auto", "127.0.0.1"),
        ("https://chat-2.internal:8443", "chat-2.internal"),
    ] {
        let stderr = refused(url, "127.0.0.1:0");
        for part in [
            format!("NETAPI_CHAT_TLS_CERT: {cert}: "),
            format!("does not name {host}, the host of this instance's cluster URL"),
            "; it names chat-1.internal. ".to_owned(),
            "set NETAPI_CHAT_CLUSTER_URL".to_owned(),
        ] {
            assert!(stderr.contains(&part), "{url}: {part:?} in {stderr}");
        }
    }
    let stderr = refused("auto", "0.0.0.0:0");
    assert!(
        stderr.contains("NETAPI_CHAT_CLUSTER_URL=auto needs NETAPI_CHAT_BIND to name one address")
            && stderr
                .contains("https://host:port, its host a name this instance's certificate carries"),
        "{stderr}"
    );
}

/// A standby applies the leader's connection limits, by the same code: idle connections are
/// shed at its cap for a client with a request, and closed after the idle timeout. Before, it
/// had no idle timeout and closed every new connection at its cap, so connections that sent
/// nothing (costing their client nothing) took it out of service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn a_standby_sheds_and_times_out_idle_connections_as_the_leader_does() {
    use tokio::io::AsyncReadExt;
    let limits = [
        ("NETAPI_CHAT_MAX_CONNECTIONS", "10"),
        ("NETAPI_CHAT_IDLE_TIMEOUT_SECS", "2"),
    ];
    let p = pair_with(&[], &limits);
    let mut idle = Vec::new();
    for _ in 0..30 {
        idle.push(
            tokio::net::TcpStream::connect(p.standby.addr())
                .await
                .expect("connect"),
        );
    }
    let url = p.standby.urls().subscriptions(ALICE);
    let a = tokio::time::timeout(
        Duration::from_secs(10),
        support::send_empty("GET", &url, Format::Json),
    )
    .await
    .expect("answered while idle connections fill the standby's cap");
    assert_eq!(a.status, 200, "{}", a.body);
    // Every idle connection is gone within the idle timeout and a bit.
    for (i, c) in idle.iter_mut().enumerate() {
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(8), c.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "idle connection {i} still open: {read:?}"
        );
    }
}

/// A standby's own `/metrics` counts wrong tokens against the per-address failure limit, as
/// the leader's does: guessing the metrics token through a standby is no cheaper.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn a_standbys_metrics_token_is_under_the_failure_limit() {
    const TOKEN: &str = "cluster-metrics-token-0123456789abcdef";
    let p = pair(&[
        ("NETAPI_CHAT_METRICS_TOKEN", TOKEN),
        ("NETAPI_CHAT_AUTH_FAILURE_LIMIT", "3"),
    ]);
    let url = format!("{}/metrics", p.standby.base);
    for _ in 0..3 {
        let a = support::send("GET", &url, &[("authorization", "Bearer guessed")], None).await;
        assert_eq!(a.status, 401, "{}", a.body);
    }
    let a = support::send(
        "GET",
        &url,
        &[("authorization", &format!("Bearer {TOKEN}"))],
        None,
    )
    .await;
    assert_eq!(a.status, 429, "{}", a.body);
    assert!(!a.header("retry-after").is_empty(), "{:?}", a.headers);
}

/// One raw HTTP/1.1 exchange with `addr` from the local address `from` (any when `None`): what
/// came back until the server closed the connection (or 10 s passed). For what a client
/// library does not send (a target `*`, a broken chunked body) or where a test needs a given
/// client address.
async fn raw_exchange(addr: &str, from: Option<&str>, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    if let Some(from) = from {
        socket
            .bind(format!("{from}:0").parse().expect("address"))
            .expect("bind the client address");
    }
    let mut stream = socket
        .connect(addr.parse().expect("address"))
        .await
        .expect("connect");
    stream.write_all(request).await.expect("send");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of a raw answer (0: none).
fn raw_status(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A target that names no path (`*`, any method) reaching a standby is answered there as the
/// leader answers it (`404 SVC2008`), not forwarded: glued to the leader's URL it read as
/// port 80 of the leader's host, where the request went with the cluster key (and the answer
/// came back), or the client got a `503` and the operator a warning that the leader fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn a_target_without_a_path_is_answered_by_the_standby_as_by_the_leader() {
    const TOKEN: &str = "cluster-metrics-token-0123456789abcdef";
    let p = pair(&[("NETAPI_CHAT_METRICS_TOKEN", TOKEN)]);
    changes_again(&p.standby, "through the standby").await;
    let refused = "netapi_chat_standby_unavailable_total";
    let before = support::metric(&p.standby.base, TOKEN, refused).await;
    for request in [
        "OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "GET * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "CONNECT evil.example:80 HTTP/1.1\r\nHost: evil.example:80\r\nConnection: close\r\n\r\n",
    ] {
        let leader = raw_exchange(&p.leader.addr(), None, request.as_bytes()).await;
        let standby = raw_exchange(&p.standby.addr(), None, request.as_bytes()).await;
        assert_eq!(raw_status(&leader), 404, "leader, {request:?}: {leader}");
        assert_eq!(raw_status(&standby), 404, "standby, {request:?}: {standby}");
        assert!(standby.contains("SVC2008"), "{standby}");
        let body = |a: &str| a.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
        assert_eq!(body(&standby), body(&leader), "{request:?}");
    }
    // An absolute-form target is served on its path, as the leader serves it, whatever host
    // it names.
    let absolute =
        "GET http://evil.example:81/readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let answer = raw_exchange(&p.standby.addr(), None, absolute.as_bytes()).await;
    assert_eq!(raw_status(&answer), 200, "{answer}");
    assert_eq!(
        support::metric(&p.standby.base, TOKEN, refused).await,
        before
    );
    let log = std::fs::read_to_string(p.standby_log()).unwrap_or_default();
    assert!(!log.contains("forwarding to the leader at"), "{log}");
}

/// A client's own mistakes reaching a standby get the leader's answer to them, not the
/// standby's "the leader cannot be reached" `503` (which a client retries for ever), and are
/// neither counted as refusals nor logged as the leader failing: a chunked body that does not
/// read and a body cut short of its `Content-Length` are `400 SVC0002` (the connection
/// closed); a client's `x-netapi-chat-cluster-key` is dropped, as the leader drops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn a_standby_answers_a_clients_mistakes_as_the_leader_does_not_with_503() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const TOKEN: &str = "cluster-metrics-token-0123456789abcdef";
    let p = pair(&[("NETAPI_CHAT_METRICS_TOKEN", TOKEN)]);
    changes_again(&p.standby, "through the standby").await;
    let refused = "netapi_chat_standby_unavailable_total";
    let before = support::metric(&p.standby.base, TOKEN, refused).await;
    let path = format!("/v1/chat/{}/subscriptions", support::enc(ALICE));
    let token = support::user_token(ALICE);
    let head = |framing: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\n{framing}\r\n"
        )
    };
    let bad_chunk = format!(
        "{}zz\r\n{{}}\r\n0\r\n\r\n",
        head("Transfer-Encoding: chunked\r\n")
    );
    for (instance, addr) in [("leader", p.leader.addr()), ("standby", p.standby.addr())] {
        let a = raw_exchange(&addr, None, bad_chunk.as_bytes()).await;
        assert_eq!(raw_status(&a), 400, "{instance}, bad chunk: {a}");
        assert!(a.contains("SVC0002"), "{instance}: {a}");
        // RFC 9112 §3.2: one Host, and one at all in HTTP/1.1 (the standby replaces the
        // client's when it forwards, so it checks it itself).
        for (request, status) in [
            ("GET /healthz HTTP/1.1\r\n\r\n", 400),
            ("GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            ("GET /healthz HTTP/1.1\r\nHost: a, b\r\n\r\n", 400),
            ("GET /healthz HTTP/1.0\r\n\r\n", 200),
        ] {
            let a = raw_exchange(&addr, None, request.as_bytes()).await;
            assert_eq!(raw_status(&a), status, "{instance}, {request:?}: {a}");
        }
        // An HTTP/1.0 client asking to keep its connection: both of its pipelined requests
        // (forwarded to the leader by a standby) are answered on it, as the leader answers
        // them. The standby forwarded HTTP/1.0 as such, and the answer closed the connection.
        let a = raw_exchange(
            &addr,
            None,
            b"GET /openapi.json HTTP/1.0\r\nConnection: keep-alive\r\n\r\n\
              GET /openapi.json HTTP/1.0\r\n\r\n",
        )
        .await;
        assert_eq!(a.matches("HTTP/1.0 200 OK").count(), 2, "{instance}");
        // A body shorter than its Content-Length: the client stops sending.
        let socket = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        let (mut read, mut write) = socket.into_split();
        write
            .write_all(format!("{}{{\"a\":", head("Content-Length: 50\r\n")).as_bytes())
            .await
            .expect("send");
        write.shutdown().await.expect("half-close");
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), read.read_to_end(&mut out)).await;
        let a = String::from_utf8_lossy(&out);
        assert_eq!(raw_status(&a), 400, "{instance}, short body: {a}");
    }
    let a = support::send(
        "GET",
        &format!("{}{path}", p.standby.base),
        &[
            ("authorization", &format!("Bearer {token}")),
            ("x-netapi-chat-cluster-key", "a client's guess"),
        ],
        None,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        support::metric(&p.standby.base, TOKEN, refused).await,
        before
    );
    let log = std::fs::read_to_string(p.standby_log()).unwrap_or_default();
    assert!(!log.contains("forwarding to the leader at"), "{log}");
}

/// What a standby answers itself is answered as the leader answers it: `/healthz` and
/// `/metrics` take `GET` and `HEAD` only (`405` with `Allow`, was `200` for any method), its
/// `/healthz` is not to be cached, and every answer carries an `x-request-id` (the client's
/// when sane, as the leader takes it). A field the client's `Connection` names is this hop's
/// and is not forwarded (RFC 9110 §7.6.1; it was), but the request's id is the standby's to
/// send on: named there too, it is still the id of both the standby's answers and the
/// leader's (the leader made another). The HTTP review of 2026-12-07.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn a_standby_answers_methods_and_request_ids_of_its_own_as_the_leader_does() {
    const TOKEN: &str = "cluster-metrics-token-0123456789abcdef";
    let p = pair(&[
        ("NETAPI_CHAT_METRICS_TOKEN", TOKEN),
        ("NETAPI_CHAT_CORS_ORIGINS", "https://app.example"),
    ]);
    changes_again(&p.standby, "through the standby").await;
    let header = |a: &str, name: &str| {
        let head = a.split("\r\n\r\n").next().unwrap_or_default().to_owned();
        head.split("\r\n")
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
    };
    for (instance, addr) in [("leader", p.leader.addr()), ("standby", p.standby.addr())] {
        for path in ["/healthz", "/metrics"] {
            let request = format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let a = raw_exchange(&addr, None, request.as_bytes()).await;
            assert_eq!(raw_status(&a), 405, "{instance}, POST {path}: {a}");
            assert_eq!(header(&a, "allow").as_deref(), Some("GET, HEAD"), "{a}");
            assert!(a.contains("SVC0002"), "{instance}: {a}");
            assert!(header(&a, "x-request-id").is_some(), "{instance}: {a}");
        }
        let a = raw_exchange(
            &addr,
            None,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(raw_status(&a), 200, "{instance}: {a}");
        assert_eq!(header(&a, "cache-control").as_deref(), Some("no-store"));
        assert!(header(&a, "x-request-id").is_some(), "{instance}: {a}");
        let a = raw_exchange(
            &addr,
            None,
            b"OPTIONS * HTTP/1.1\r\nHost: x\r\nx-request-id: mine-1\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(raw_status(&a), 404, "{instance}: {a}");
        assert_eq!(header(&a, "x-request-id").as_deref(), Some("mine-1"), "{a}");
        // A browser's preflight of the health probe (was `405` at a standby).
        let a = raw_exchange(
            &addr,
            None,
            b"OPTIONS /healthz HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\n\
              Access-Control-Request-Method: GET\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(raw_status(&a), 204, "{instance}: {a}");
    }
    // Metrics off: `/metrics` is an unknown path at either (the standby said `404` in plain
    // text to a `GET`, `405` to a `POST`).
    let q = pair(&[]);
    changes_again(&q.standby, "through the standby").await;
    for (instance, addr) in [("leader", q.leader.addr()), ("standby", q.standby.addr())] {
        for method in ["GET", "POST"] {
            let request = format!(
                "{method} /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\
                 Connection: close\r\n\r\n"
            );
            let a = raw_exchange(&addr, None, request.as_bytes()).await;
            assert_eq!(raw_status(&a), 404, "{instance}, {method} /metrics: {a}");
            assert!(a.contains("SVC2008"), "{instance}, {method}: {a}");
        }
    }
    // Forwarded: the client's id is the leader's, also when the client's `Connection` names
    // the field (the standby sends the id it took as its own).
    let request = |connection: &str| {
        format!(
            "GET /readyz HTTP/1.1\r\nHost: x\r\nx-request-id: chosen-123\r\n\
             Connection: close{connection}\r\n\r\n"
        )
    };
    let a = raw_exchange(&p.standby.addr(), None, request("").as_bytes()).await;
    assert_eq!(raw_status(&a), 200, "{a}");
    assert_eq!(header(&a, "x-request-id").as_deref(), Some("chosen-123"));
    let a = raw_exchange(
        &p.standby.addr(),
        None,
        request(", x-request-id").as_bytes(),
    )
    .await;
    assert_eq!(raw_status(&a), 200, "{a}");
    assert_eq!(header(&a, "x-request-id").as_deref(), Some("chosen-123"));
}

/// Through a standby whose own address is a trusted proxy (every instance has the same
/// settings, and a trusted network often covers them), the leader counts a request against
/// the address the standby proved with the cluster key, not against one the client wrote
/// into `X-Forwarded-For`: a client cannot rotate its address past the failure limit, nor
/// lock out another address; a client behind a trusted proxy is still counted as itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn through_a_standby_a_client_cannot_choose_its_address() {
    let p = pair(&[
        ("NETAPI_CHAT_TRUSTED_PROXIES", "127.0.0.1"),
        ("NETAPI_CHAT_AUTH_FAILURE_LIMIT", "3"),
        ("NETAPI_CHAT_LOG_LEVEL", "info"),
    ]);
    changes_again(&p.standby, "through the standby").await;
    let path = format!("/v1/chat/{}/subscriptions", support::enc(ALICE));
    let get = |token: &str, forwarded_for: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             X-Forwarded-For: {forwarded_for}\r\nConnection: close\r\n\r\n"
        )
    };
    // From 127.0.0.5 (no trusted proxy), wrong tokens naming a victim, then another address.
    let mut statuses = Vec::new();
    for named in [
        "203.0.113.77",
        "203.0.113.77",
        "203.0.113.77",
        "198.51.100.1",
    ] {
        let a = raw_exchange(
            &p.standby.addr(),
            Some("127.0.0.5"),
            get("wrong", named).as_bytes(),
        )
        .await;
        statuses.push(raw_status(&a));
    }
    assert_eq!(statuses, [401, 401, 401, 429], "counted against 127.0.0.5");
    // The victim, behind the trusted proxy 127.0.0.1, is not locked out.
    let right = support::user_token(ALICE);
    let a = raw_exchange(
        &p.standby.addr(),
        Some("127.0.0.1"),
        get(&right, "203.0.113.77").as_bytes(),
    )
    .await;
    assert_eq!(raw_status(&a), 200, "{a}");
    // Behind the trusted proxy, the client is counted as the address the proxy names.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let a = raw_exchange(
            &p.standby.addr(),
            Some("127.0.0.1"),
            get("wrong", "198.51.100.50").as_bytes(),
        )
        .await;
        statuses.push(raw_status(&a));
    }
    assert_eq!(
        statuses,
        [401, 401, 401, 429],
        "counted against 198.51.100.50"
    );
    let a = raw_exchange(
        &p.standby.addr(),
        Some("127.0.0.1"),
        get(&right, "198.51.100.51").as_bytes(),
    )
    .await;
    assert_eq!(raw_status(&a), 200, "{a}");
    // And the leader's request log names that client, not only the standby that forwarded.
    let log = std::fs::read_to_string(p.leader_log()).unwrap_or_default();
    assert!(
        log.lines().any(|l| l.contains("request completed")
            && l.split_whitespace()
                .any(|w| w == "client_addr=198.51.100.51")),
        "{log}"
    );
}

/// With a short `NETAPI_CHAT_IDLE_TIMEOUT_SECS` (same on every instance), requests through a
/// standby spaced about the idle timeout apart all succeed: the standby kept its idle
/// connections to the leader for a fixed 30 s, reused one just as the leader closed it, and
/// answered a healthy cluster's request `503` ("the instance that leads cannot be reached").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn requests_spaced_across_the_idle_timeout_reach_the_leader_through_a_standby() {
    const IDLE_MS: u64 = 500;
    let p = pair(&[("NETAPI_CHAT_IDLE_TIMEOUT_SECS", "0.5")]);
    changes_again(&p.standby, "through the standby").await;
    let url = p.standby.urls().subscriptions(ALICE);
    let mut failed = Vec::new();
    // Each request leaves the standby a pooled connection, then the next comes after a pause
    // swept across the moment the leader closes it (its clock starts a little earlier), in
    // steps finer than the race's window (about 1 ms here; without the fix some of these
    // failed in every run).
    for step in 0..120u64 {
        let pause = Duration::from_millis(IDLE_MS - 50) + Duration::from_micros(step * 500);
        tokio::time::sleep(pause).await;
        // A fresh client connection each time: only the standby's pool is under test.
        let a = support::send_empty("GET", &url, Format::Json).await;
        if a.status != 200 {
            failed.push((pause, a.status, a.body));
        }
    }
    assert!(failed.is_empty(), "{} failed: {failed:?}", failed.len());
    let log = std::fs::read_to_string(p.standby_log()).unwrap_or_default();
    assert!(!log.contains("forwarding to the leader at"), "{log}");
}

/// An answer after which the leader closes its connection (`431` for a head over
/// `NETAPI_CHAT_MAX_HEADER_BYTES`) closes the client's connection to a standby too, as the
/// leader's own client connection is closed: the standby dropped the leader's `Connection:
/// close` (hop-by-hop) and kept serving a connection whose request the leader refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn a_standby_closes_the_clients_connection_when_the_leader_closes_after_its_answer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let p = pair(&[]);
    changes_again(&p.standby, "through the standby").await;
    let path = format!("/v1/chat/{}/subscriptions", support::enc(ALICE));
    let token = support::user_token(ALICE);
    // Over the default 16 KiB head, still within what the standby's own buffer reads; no
    // `Connection: close` from the client: the connection would stay open (idle timeout 60 s).
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nX-Big: {}\r\n\r\n",
        "a".repeat(17 * 1024)
    );
    for (instance, addr) in [("leader", p.leader.addr()), ("standby", p.standby.addr())] {
        let mut stream = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut out = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
        let a = String::from_utf8_lossy(&out);
        assert_eq!(raw_status(&a), 431, "{instance}: {a}");
        assert!(
            a.to_ascii_lowercase().contains("connection: close"),
            "{instance}: {a}"
        );
        assert!(
            matches!(closed, Ok(Ok(_)) | Ok(Err(_))),
            "{instance}: the connection stayed open after {a}"
        );
    }
}

/// A request through a standby asking for `100 Continue` with a `Content-Length` over
/// `NETAPI_CHAT_MAX_BODY_BYTES` gets the leader's `413 POL2004` at once, no `100` first: the
/// standby sent `100` before the leader had looked at anything, and the client uploaded into
/// a connection that then broke instead of reading the refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test PostgreSQL: `cargo xtask test` runs it"]
async fn a_standby_refuses_an_oversized_upload_before_100_continue() {
    let p = pair(&[]);
    changes_again(&p.standby, "through the standby").await;
    let path = format!("/v1/chat/{}/subscriptions", support::enc(ALICE));
    let token = support::user_token(ALICE);
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 9999999\r\nExpect: 100-continue\r\n\r\n"
    );
    for (instance, addr) in [("leader", p.leader.addr()), ("standby", p.standby.addr())] {
        let started = Instant::now();
        let a = raw_exchange(&addr, None, request.as_bytes()).await;
        assert_eq!(raw_status(&a), 413, "{instance}: {a}");
        assert!(a.contains("POL2004"), "{instance}: {a}");
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{instance}: the connection stayed open after {a}"
        );
    }
}
