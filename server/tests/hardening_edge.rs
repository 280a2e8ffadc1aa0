//! Hardening at the edge (issue 11, items 5, 8 and 16), against the real binary:
//!
//! - HEAD answers wherever GET does (same status and headers, no body); any other method not
//!   allowed on a known path (PUT, TRACE, CONNECT, unknown tokens) gets 405 with the exact
//!   `Allow` and an OMA `requestError` in the negotiated format.
//! - Connections: at `NETAPI_CHAT_MAX_CONNECTIONS` the oldest idle connections are shed and a
//!   real request is still served promptly, also when the process is at its open-files limit;
//!   idle keep-alive connections and slow request heads are closed after their timeouts.
//! - SIGTERM under load: exit code 0, one line, every request answered in full or refused, and
//!   every message answered 2xx is there after a restart.

mod support;

use netapi_chat_api::Urls;

use std::process::Command;
use std::time::{Duration, Instant};
use support::{APP_TOKEN, Launch, Server, enc, send, temp_data_dir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ALICE: &str = "sip:alice@example.com";
const BOB: &str = "sip:bob@example.com";
const ACCEPTS: [(&str, &str); 2] = [
    ("application/json", "application/json"),
    ("application/xml", "application/xml"),
];

/// One raw HTTP/1.1 exchange on a fresh connection (`Connection: close`): the status line and
/// headers as text, and the bytes after them (all of them, up to the server's close).
async fn raw(addr: &str, method: &str, path: &str, accept: &str) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\naccept: {accept}\r\nauthorization: Bearer {APP_TOKEN}\r\nconnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut all))
        .await
        .expect("answer within 10 s")
        .expect("read");
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    let head = String::from_utf8_lossy(&all[..end]).into_owned();
    (head, all[end + 4..].to_vec())
}

/// The status and the headers of a raw head, without those that differ per answer.
fn comparable(head: &str) -> (String, Vec<String>) {
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default().to_owned();
    let mut headers: Vec<String> = lines
        .map(str::to_ascii_lowercase)
        .filter(|l| !l.starts_with("date:") && !l.starts_with("x-request-id:"))
        .collect();
    headers.sort();
    (status, headers)
}

/// The path part of a `Location`.
fn location_id(a: &support::Answer) -> String {
    a.header("location")
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// A subscription, a session between alice and bob (bob connected) and one message: the ids
/// every GET path of the API needs.
async fn fixtures(server: &Server) -> [(&'static str, String); 9] {
    let json = [("content-type", "application/json")];
    let sub = send(
        "POST",
        &server.urls().subscriptions(ALICE),
        &json,
        Some(r#"{"chatSubscription":{"callbackReference":{"notifyURL":"http://127.0.0.1:10/"}}}"#),
    )
    .await;
    assert_eq!(sub.status, 201, "{}", sub.body);
    let sid = session(&server.base).await;
    let msg = send(
        "POST",
        &server.urls().messages(ALICE, &sid),
        &json,
        Some(r#"{"chatMessage":{"text":"hi"}}"#),
    )
    .await;
    assert_eq!(msg.status, 201, "{}", msg.body);
    // The OMA 2012 face's `group/` shows group sessions only: one with bob and carol, bob
    // connected, and a message in it.
    let gid = session_with(&server.base, r#"{"address":"sip:carol@example.com"}"#).await;
    let group_msg = send(
        "POST",
        &server.urls().messages(ALICE, &gid),
        &json,
        Some(r#"{"chatMessage":{"text":"hi all"}}"#),
    )
    .await;
    assert_eq!(group_msg.status, 201, "{}", group_msg.body);
    let channel = send(
        "POST",
        &server.urls().channels(ALICE),
        &json,
        Some(r#"{"notificationChannel":{"channelType":"LongPolling"}}"#),
    )
    .await;
    assert_eq!(channel.status, 201, "{}", channel.body);
    [
        ("userId", enc(ALICE)),
        ("subscriptionId", location_id(&sub)),
        ("sessionId", sid),
        ("participantId", enc(BOB)),
        ("messageId", location_id(&msg)),
        // The OMA 2012 face: the peer of the 1-1 session; the group session and its message
        // (`get_paths` uses them under `/group/`).
        ("otherUserId", enc(BOB)),
        ("groupSessionId", gid),
        ("groupMessageId", location_id(&group_msg)),
        ("channelId", location_id(&channel)),
    ]
}

/// The URL builders generated from the spec's paths, for the server at `base`.
fn urls(base: &str) -> Urls {
    Urls::new(base)
}

/// A session alice started and bob joined (on the server at `base`); its id.
async fn session(base: &str) -> String {
    session_with(base, "").await
}

/// A session alice started with bob and the `more` participants (JSON objects after bob's,
/// each with its leading comma left out), bob joined; its id.
async fn session_with(base: &str, more: &str) -> String {
    let json = [("content-type", "application/json")];
    let more = if more.is_empty() {
        String::new()
    } else {
        format!(",{more}")
    };
    let body = format!(
        r#"{{"chatSessionInformation":{{"subject":"edge","participant":[{{"address":"sip:bob@example.com"}}{more}]}}}}"#
    );
    let s = send("POST", &urls(base).chat_sessions(ALICE), &json, Some(&body)).await;
    assert_eq!(s.status, 201, "{}", s.body);
    let sid = location_id(&s);
    let joined = send(
        "POST",
        &urls(base).participant_status(BOB, &sid, BOB),
        &json,
        Some(r#"{"participantSessionStatus":{"status":"Connected"}}"#),
    )
    .await;
    assert!(joined.status < 300, "{}: {}", joined.status, joined.body);
    sid
}

/// Every GET path of the published OpenAPI (plus the documents), filled with real ids.
fn get_paths(ids: &[(&str, String)]) -> Vec<String> {
    let doc: serde_json::Value =
        serde_json::from_str(netapi_chat_api::OPENAPI_JSON).expect("published OpenAPI");
    let mut paths: Vec<String> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .filter(|(_, item)| item.get("get").is_some())
        .map(|(template, _)| {
            // Under the OMA 2012 face's `group/`, the group session and its message.
            let template = if template.contains("/group/") {
                template
                    .replace("{sessionId}", "{groupSessionId}")
                    .replace("{messageId}", "{groupMessageId}")
            } else {
                template.clone()
            };
            ids.iter().fold(template, |p, (name, value)| {
                p.replace(&format!("{{{name}}}"), value)
            })
        })
        .collect();
    assert!(paths.len() >= 10, "{paths:?}");
    assert!(!paths.iter().any(|p| p.contains('{')), "{paths:?}");
    paths.push("/openapi.json".to_owned());
    paths.push("/xsd/rest_netapi_chat-v1_0.xsd".to_owned());
    paths
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_answers_like_get_without_a_body() {
    // The fixtures' subscription calls back to nothing: a retry schedule of an hour keeps it
    // from being disabled (and hidden from the OMA 2012 face) while a slow machine reads the
    // paths (the test's default schedule gives up within a second).
    let server = Server::start(&[("NETAPI_CHAT_RETRY_SCHEDULE", "0,1h")]);
    let ids = fixtures(&server).await;
    let addr = server.addr();
    for path in get_paths(&ids) {
        for (accept, _) in ACCEPTS {
            let (get_head, get_body) = raw(&addr, "GET", &path, accept).await;
            let (head_head, head_body) = raw(&addr, "HEAD", &path, accept).await;
            let (status, headers) = comparable(&get_head);
            assert!(status.contains(" 200 "), "GET {path}: {get_head}");
            assert!(!get_body.is_empty(), "GET {path} has a body");
            assert_eq!(
                comparable(&head_head),
                (status, headers),
                "HEAD {path} ({accept}) answers like GET"
            );
            assert!(
                head_head
                    .to_ascii_lowercase()
                    .contains(&format!("content-length: {}", get_body.len())),
                "HEAD {path} keeps the GET's Content-Length: {head_head}"
            );
            assert!(head_body.is_empty(), "HEAD {path} sent a body");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_not_allowed_get_405_with_the_exact_allow() {
    let server = Server::default_for_tests();
    let ids = fixtures(&server).await;
    let addr = server.addr();
    let session = format!("/v1/chat/{}/chatSessions/{}", ids[0].1, ids[2].1);
    let message = format!("{session}/messages/{}", ids[4].1);
    let cases = [
        (
            format!("/v1/chat/{}/subscriptions", ids[0].1),
            "GET, HEAD, POST",
        ),
        (session, "GET, HEAD, DELETE"),
        (message, "GET, HEAD"),
    ];
    for (path, allow) in &cases {
        for method in ["TRACE", "CONNECT", "FOO", "PUT", "PATCH", "OPTIONS"] {
            for (accept, media) in ACCEPTS {
                let (head, body) = raw(&addr, method, path, accept).await;
                assert_gates_405(method, path, allow, media, &head);
                let text = String::from_utf8_lossy(&body);
                assert!(
                    text.contains("requestError")
                        && text.contains("SVC0002")
                        && text.contains(method),
                    "{method} {path} ({accept}): {text}"
                );
                if media == "application/xml" {
                    support::xsd_validate(&text);
                }
            }
        }
    }
}

/// A page of an origin `NETAPI_CHAT_CORS_ORIGINS` lists can call the API from a browser: its
/// preflight is answered with the path's methods, and every answer to it (a 201 in JSON or XML,
/// a 401) carries `Access-Control-Allow-Origin`, the headers it may read and `Vary: Origin`
/// beside `Vary: Accept`. Another origin's preflight is a 403 and its answers carry nothing;
/// without the setting a preflight is the gate's 405; a bad setting refuses the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_of_listed_origins_may_call_the_api_from_a_browser() {
    const PAGE: &str = "https://app.example.com";
    let server = Server::start(&[(
        "NETAPI_CHAT_CORS_ORIGINS",
        "https://App.Example.com/, http://localhost:3000",
    )]);
    let subs = server.urls().subscriptions(ALICE);
    let preflight = |origin: &'static str| {
        let subs = subs.clone();
        async move {
            send(
                "OPTIONS",
                &subs,
                &[
                    ("authorization", ""),
                    ("origin", origin),
                    ("access-control-request-method", "POST"),
                    (
                        "access-control-request-headers",
                        "authorization, content-type",
                    ),
                ],
                None,
            )
            .await
        }
    };
    let ok = preflight(PAGE).await;
    assert_eq!(ok.status, 204, "{}", ok.body);
    assert_eq!(ok.header("access-control-allow-origin"), PAGE);
    assert_eq!(ok.header("access-control-allow-methods"), "GET, HEAD, POST");
    let allowed = ok
        .header("access-control-allow-headers")
        .to_ascii_lowercase();
    assert!(
        allowed.contains("authorization") && allowed.contains("content-type"),
        "{allowed}"
    );
    assert_eq!(ok.header("access-control-max-age"), "600");
    assert!(ok.header("vary").contains("Origin"), "{:?}", ok.headers);

    let refused = preflight("https://evil.example").await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body.contains("POL0001"), "{}", refused.body);
    assert_eq!(refused.header("access-control-allow-origin"), "");

    for (media, body) in [
        (
            "application/json",
            r#"{"chatSubscription":{"callbackReference":{"notifyURL":"http://127.0.0.1:10/"}}}"#,
        ),
        (
            "application/xml",
            r#"<chat:chatSubscription xmlns:chat="urn:oma:xml:rest:netapi:chat:1"><callbackReference><notifyURL>http://127.0.0.1:10/</notifyURL></callbackReference></chat:chatSubscription>"#,
        ),
    ] {
        let created = send(
            "POST",
            &subs,
            &[("origin", PAGE), ("content-type", media), ("accept", media)],
            Some(body),
        )
        .await;
        assert_eq!(created.status, 201, "{media}: {}", created.body);
        assert_eq!(created.header("access-control-allow-origin"), PAGE);
        let exposed = created
            .header("access-control-expose-headers")
            .to_ascii_lowercase();
        for h in [
            "location",
            "retry-after",
            "www-authenticate",
            "x-request-id",
            "link",
        ] {
            assert!(exposed.contains(h), "{h}: {exposed}");
        }
        let vary = created.header("vary");
        assert!(vary.contains("Accept") && vary.contains("Origin"), "{vary}");
    }
    // An error answer is readable too, so the page learns why.
    let unauthenticated = send(
        "GET",
        &subs,
        &[("authorization", ""), ("origin", "http://localhost:3000")],
        None,
    )
    .await;
    assert_eq!(unauthenticated.status, 401);
    assert_eq!(
        unauthenticated.header("access-control-allow-origin"),
        "http://localhost:3000"
    );
    // A request from an origin not listed is answered (the browser keeps it from the page).
    let other = send("GET", &subs, &[("origin", "https://evil.example")], None).await;
    assert_eq!(other.status, 200);
    assert_eq!(other.header("access-control-allow-origin"), "");
    assert_eq!(other.header("access-control-expose-headers"), "");
    // With a list, every answer varies by origin (a cache must not hand it to a listed page),
    // also one to a request without Origin, and a document's.
    assert!(
        other.header("vary").contains("Origin"),
        "{:?}",
        other.headers
    );
    let no_origin = send("GET", &subs, &[], None).await;
    assert_eq!(no_origin.header("vary"), "Accept, Origin");
    let doc = send("GET", &format!("{}/openapi.json", server.base), &[], None).await;
    assert_eq!((doc.status, doc.header("vary")), (200, "Origin"));
    assert!(
        refused.header("vary").contains("Origin"),
        "{:?}",
        refused.headers
    );
    // An OPTIONS that is no preflight is still the gate's 405.
    let plain = send("OPTIONS", &subs, &[("origin", PAGE)], None).await;
    assert_eq!(plain.status, 405);

    // Without the setting: no preflight answer, no CORS headers.
    let plain_server = Server::default_for_tests();
    let subs = plain_server.urls().subscriptions(ALICE);
    let p = send(
        "OPTIONS",
        &subs,
        &[("origin", PAGE), ("access-control-request-method", "POST")],
        None,
    )
    .await;
    assert_eq!(p.status, 405);
    let g = send("GET", &subs, &[("origin", PAGE)], None).await;
    assert_eq!(
        (g.status, g.header("access-control-allow-origin")),
        (200, "")
    );

    for bad in [
        "https://app.example.com/path",
        "*, https://app.example.com",
        "",
    ] {
        let dir = temp_data_dir();
        let (status, stderr) = support::run_to_exit(&dir, &[("NETAPI_CHAT_CORS_ORIGINS", bad)]);
        assert!(!status.success(), "{bad:?}");
        assert!(
            stderr.contains("NETAPI_CHAT_CORS_ORIGINS"),
            "{bad:?}: {stderr}"
        );
    }
}

/// The gate is the only source of 405s: on every path of the published OpenAPI (and the
/// documents), every method the path does not list gets the OMA 405 with the exact `Allow`,
/// never dropshot's router-level JSON 405, and no listed method is answered 405.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_not_in_the_openapi_gets_the_gates_405() {
    let server = Server::default_for_tests();
    let addr = server.addr();
    let doc: serde_json::Value =
        serde_json::from_str(netapi_chat_api::OPENAPI_JSON).expect("published OpenAPI");
    let mut items: Vec<(String, Vec<String>)> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .map(|(template, item)| {
            let verbs = item
                .as_object()
                .expect("path item")
                .keys()
                .filter(|k| *k != "parameters")
                .map(|k| k.to_ascii_uppercase())
                .collect();
            (template.clone(), verbs)
        })
        .collect();
    assert!(items.len() >= 10, "{items:?}");
    items.push(("/openapi.json".to_owned(), vec!["GET".to_owned()]));
    items.push(("/xsd/{file}".to_owned(), vec!["GET".to_owned()]));
    let order = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE",
    ];
    // Ids nobody created: the listed methods fail further on (404, 400…), nothing changes.
    let fill = |template: &str| {
        template
            .split('/')
            .map(|s| match s {
                "{userId}" | "{participantId}" => enc("sip:zed@example.com"),
                "{file}" => "rest_netapi_chat-v1_0.xsd".to_owned(),
                s if s.starts_with('{') => "nope".to_owned(),
                s => s.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("/")
    };
    for (template, verbs) in &items {
        let listed = |m: &str| {
            verbs.iter().any(|v| v == m) || (m == "HEAD" && verbs.iter().any(|v| v == "GET"))
        };
        let allow = order
            .iter()
            .copied()
            .filter(|m| listed(m))
            .collect::<Vec<_>>()
            .join(", ");
        let path = fill(template);
        for method in [
            "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT", "FOO",
        ] {
            for (accept, media) in ACCEPTS {
                let (head, body) = raw(&addr, method, &path, accept).await;
                if listed(method) {
                    assert!(
                        !head.starts_with("HTTP/1.1 405 "),
                        "{method} {path}: {head}"
                    );
                    continue;
                }
                assert_gates_405(method, &path, &allow, media, &head);
                // A HEAD answer has no body (a POST-only path's HEAD is a 405 too).
                if method == "HEAD" {
                    continue;
                }
                let text = String::from_utf8_lossy(&body);
                assert!(
                    text.contains("requestError") && text.contains("SVC0002"),
                    "{method} {path} ({accept}): {text}"
                );
            }
        }
    }
}

/// The head of `method path`'s answer is the gate's OMA 405: status 405, `Allow` exactly
/// `allow`, in the asked `media`. One check for the tests of fixed cases and of every path of
/// the OpenAPI.
fn assert_gates_405(method: &str, path: &str, allow: &str, media: &str, head: &str) {
    let head_lc = head.to_ascii_lowercase();
    assert!(head.starts_with("HTTP/1.1 405 "), "{method} {path}: {head}");
    assert!(
        head_lc.contains(&format!("\r\nallow: {}\r\n", allow.to_ascii_lowercase())),
        "{method} {path}: Allow {allow} in {head}"
    );
    assert!(
        head_lc.contains(&format!("content-type: {media}")),
        "{method} {path}: {head}"
    );
}

/// Opens `n` connections that never send anything.
async fn idle_connections(addr: &str, n: usize) -> Vec<TcpStream> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(TcpStream::connect(addr).await.expect("connect"));
    }
    conns
}

/// Whether the server closed a connection that never sent anything (EOF or reset), waiting at
/// most `wait` for it to happen.
async fn closed_by_server(conn: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(wait, conn.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) | Err(_) => false,
    }
}

/// A GET that must be answered, and how long it took.
async fn timed_get(server: &Server) -> Duration {
    let started = Instant::now();
    let a = tokio::time::timeout(
        Duration::from_secs(10),
        send("GET", &server.urls().subscriptions(ALICE), &[], None),
    )
    .await
    .expect("a real request is answered while idle connections flood the server");
    assert_eq!(a.status, 200, "{}", a.body);
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_the_oldest_idle_connections_are_shed() {
    let server = Server::start(&[("NETAPI_CHAT_MAX_CONNECTIONS", "50")]);
    let mut conns = idle_connections(&server.addr(), 200).await;
    let took = timed_get(&server).await;
    assert!(took < Duration::from_secs(2), "served in {took:?}");
    let mut closed = Vec::new();
    for c in conns.iter_mut() {
        closed.push(closed_by_server(c, Duration::from_millis(20)).await);
    }
    let n = closed.iter().filter(|c| **c).count();
    assert!(n >= 150, "only {n} of 200 idle connections were shed");
    assert!(
        closed[..100].iter().all(|c| *c),
        "the oldest go first: {closed:?}"
    );
}

/// A cap held by connections that send their request head a byte at a time and never finish
/// it (slowloris) still serves a new client, well before the header read timeout (30 s
/// here): a shed connection is kept by what it writes, not by what it reads. Before, each
/// was kept until that timeout, and a new client waited for it (an outside review: 15 s at a
/// cap of 50 held by 200 such connections, the timeout 10 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cap_held_by_heads_sent_a_byte_at_a_time_still_serves_a_new_client() {
    let server = Server::start(&[
        ("NETAPI_CHAT_MAX_CONNECTIONS", "20"),
        ("NETAPI_CHAT_HEADER_READ_TIMEOUT_SECS", "30"),
    ]);
    let mut conns = idle_connections(&server.addr(), 40).await;
    for c in conns.iter_mut() {
        let _ = c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
    }
    let trickling = tokio::spawn(async move {
        loop {
            for c in conns.iter_mut() {
                let _ = c.write_all(b"X").await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Answered within `timed_get`'s 10 s, a third of the header read timeout.
    timed_get(&server).await;
    trickling.abort();
}

/// Starts the server under a hard open-files limit of 256 (with `env`), floods it with 400
/// idle connections (opened at once, each given 2 s), and returns how long a real request
/// then took to be answered.
async fn served_under_flood_at_the_open_files_limit(env: &[(&str, &str)]) -> Duration {
    let dir = temp_data_dir();
    let server = Launch {
        data_dir: dir.to_path_buf(),
        env,
        run_under: &["prlimit", "--nofile=256:256"],
        ..Launch::default()
    }
    .spawn();
    let base = server
        .base
        .clone()
        .expect("address (prlimit, from util-linux, runs the server)");
    let addr = base.trim_start_matches("http://").to_owned();
    let mut opening = tokio::task::JoinSet::new();
    for _ in 0..400 {
        let addr = addr.clone();
        opening.spawn(async move {
            tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await
        });
    }
    let mut flood = Vec::new();
    while let Some(c) = opening.join_next().await {
        if let Ok(Ok(Ok(c))) = c {
            flood.push(c);
        }
    }
    let started = Instant::now();
    let a = tokio::time::timeout(
        Duration::from_secs(10),
        send("GET", &urls(&base).subscriptions(ALICE), &[], None),
    )
    .await;
    let took = started.elapsed();
    drop(server);
    let a = a.unwrap_or_else(|_| {
        panic!(
            "not answered within 10 s at the open-files limit ({} flood connections open)",
            flood.len()
        )
    });
    assert_eq!(a.status, 200, "{}", a.body);
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_open_files_limit_a_real_request_is_still_served() {
    // The default cap (3/4 of the limit): the flood meets the cap before EMFILE.
    let took = served_under_flood_at_the_open_files_limit(&[]).await;
    assert!(
        took < Duration::from_secs(2),
        "default cap: served in {took:?}"
    );
    // A cap above the limit: accept fails with EMFILE, and an idle connection is shed.
    let took =
        served_under_flood_at_the_open_files_limit(&[("NETAPI_CHAT_MAX_CONNECTIONS", "100000")])
            .await;
    assert!(
        took < Duration::from_secs(2),
        "at EMFILE: served in {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_connections_are_closed_after_their_timeouts() {
    let server = Server::start(&[
        ("NETAPI_CHAT_IDLE_TIMEOUT_SECS", "0.5"),
        ("NETAPI_CHAT_HEADER_READ_TIMEOUT_SECS", "0.5"),
    ]);
    let addr = server.addr();
    // A keep-alive connection, idle after one answered request.
    let mut kept = TcpStream::connect(&addr).await.expect("connect");
    let req = format!(
        "GET /openapi.json HTTP/1.1\r\nhost: {addr}\r\n\r\nGET /openapi.json HTTP/1.1\r\nhost: {addr}\r\n\r\n"
    );
    kept.write_all(req.as_bytes()).await.expect("write");
    // A connection that never sends anything, and one stuck in the middle of its head.
    let mut silent = TcpStream::connect(&addr).await.expect("connect");
    let mut slow = TcpStream::connect(&addr).await.expect("connect");
    slow.write_all(b"GET /openapi.json HTTP/1.1\r\nhost: x\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    // Both answers arrive, then the idle connection is closed.
    let mut all = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), kept.read_to_end(&mut all)).await;
    assert!(
        read.is_ok(),
        "idle keep-alive connection still open after 5 s"
    );
    let text = String::from_utf8_lossy(&all);
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "both answered");
    assert!(closed_by_server(&mut silent, Duration::from_secs(3)).await);
    assert!(closed_by_server(&mut slow, Duration::from_secs(3)).await);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed after {:?}",
        started.elapsed()
    );
}

/// How a request without an answer failed: refused at connect, or the connection closed or
/// reset before an answer.
fn error_kind(e: &reqwest::Error) -> String {
    if e.is_connect() {
        "refused".to_owned()
    } else {
        let mut source: Option<&dyn std::error::Error> = Some(e);
        let mut last = String::new();
        while let Some(s) = source {
            last = s.to_string();
            source = s.source();
        }
        format!("no answer: {last}")
    }
}

/// What happened to one message sent during the shutdown.
enum Outcome {
    /// 2xx, with the text sent.
    Created(String),
    /// Answered in full with another status.
    Refused(u16),
    /// No answer: refused or reset at the socket (the text sent, the error).
    NotSent(String, String),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_requests_in_flight_and_exits_cleanly() {
    let dir = temp_data_dir();
    let mut server = Launch {
        data_dir: dir.to_path_buf(),
        env: &[("NETAPI_CHAT_SHUTDOWN_GRACE_SECS", "5")],
        ..Launch::default()
    }
    .spawn();
    let base = server.base.clone().expect("address");
    let sid = session(&base).await;
    let messages = urls(&base).messages(ALICE, &sid);

    // Four senders, each on fresh connections, until the server is gone.
    let mut senders = Vec::new();
    for s in 0..4 {
        let url = messages.clone();
        senders.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .expect("client");
            let mut outcomes = Vec::new();
            for i in 0.. {
                let text = format!("m-{s}-{i}");
                let r = client
                    .post(&url)
                    .bearer_auth(APP_TOKEN)
                    .header("content-type", "application/json")
                    .body(format!(r#"{{"chatMessage":{{"text":"{text}"}}}}"#))
                    .send()
                    .await;
                let outcome = match r {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        match r.text().await {
                            Ok(_) if status < 300 => Outcome::Created(text),
                            Ok(_) => Outcome::Refused(status),
                            Err(e) => panic!("{text}: answer cut short: {e:?}"),
                        }
                    }
                    Err(e) => Outcome::NotSent(text, error_kind(&e)),
                };
                let stop = matches!(outcome, Outcome::NotSent(..));
                outcomes.push(outcome);
                if stop {
                    break;
                }
            }
            outcomes
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let pid = server.child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = server
        .wait_exit(8)
        .expect("still running 8 s after SIGTERM");
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    let rest = server.stdout();
    let lines: Vec<&str> = rest
        .lines()
        .filter(|l| l.starts_with("netapi-chat: SIGTERM"))
        .collect();
    assert_eq!(lines.len(), 1, "one line on stop: {rest}");
    assert!(lines[0].contains("store closed"), "{rest}");

    let (mut created, mut unanswered) = (Vec::new(), Vec::new());
    for s in senders {
        for o in s.await.expect("sender") {
            match o {
                Outcome::Created(text) => created.push(text),
                Outcome::Refused(status) => panic!("refused with {status} while stopping"),
                Outcome::NotSent(text, kind) => unanswered.push((text, kind)),
            }
        }
    }
    eprintln!(
        "{} messages answered 2xx, then unanswered: {unanswered:?}; stop line: {}",
        created.len(),
        lines[0]
    );
    assert!(created.len() > 4, "load was running: {}", created.len());

    // Every message answered 2xx is there after a restart.
    let again = Server::start_in(&dir, &[], None);
    // The list is paged (issue 12 item 4): walk it by its `Link: <…>; rel="next"` headers.
    let mut stored = String::new();
    let mut next = Some(again.urls().messages(ALICE, &sid));
    while let Some(url) = next {
        let page = send("GET", &url, &[], None).await;
        assert_eq!(page.status, 200, "{}", page.body);
        stored.push_str(&page.body);
        next = page
            .header("link")
            .split(',')
            .find(|l| l.contains("rel=\"next\""))
            .and_then(|l| Some(l.split_once('<')?.1.split_once('>')?.0.to_owned()));
    }
    let list = support::Answer {
        status: 200,
        headers: http::HeaderMap::new(),
        body: stored,
    };
    let missing: Vec<&String> = created
        .iter()
        .filter(|t| !list.body.contains(&format!("\"{t}\"")))
        .collect();
    assert!(missing.is_empty(), "answered 2xx but lost: {missing:?}");
    let committed: Vec<&(String, String)> = unanswered
        .iter()
        .filter(|(t, _)| list.body.contains(&format!("\"{t}\"")))
        .collect();
    assert!(
        committed.is_empty(),
        "committed but not answered: {committed:?}"
    );
    drop(again);
}

/// A cap of one connection serves each new client in turn: room is made when a client
/// arrives (the idle one before it is closed), never ahead of it, so the new connection is
/// not shed before its request (before: every request got an empty reply).
#[tokio::test]
async fn a_cap_of_one_serves_each_new_client() {
    let server = Server::start(&[("NETAPI_CHAT_MAX_CONNECTIONS", "1")]);
    for i in 0..4 {
        let a = tokio::time::timeout(
            Duration::from_secs(10),
            send("GET", &server.urls().subscriptions(ALICE), &[], None),
        )
        .await
        .unwrap_or_else(|_| panic!("request {i} answered within 10 s"));
        assert_eq!(a.status, 200, "request {i}: {}", a.body);
    }
}

/// The server's open file descriptors.
fn open_fds(server: &Server) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Reads until the server closes the connection (EOF or reset), at most `wait`; whether it did.
async fn read_until_closed(conn: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = vec![0u8; 64 * 1024];
    tokio::time::timeout(wait, async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// Connections that do not end when asked to: an HTTP/2 client that sends its preface and
/// falls silent (asked to go with GOAWAY, it never answers), and an HTTP/1 client that
/// pipelines requests for large answers and never reads them. Without a token. They count
/// against the connection cap until they have closed, so the server's open files stay within
/// it, and they are closed soon after they are shed or idle. Before, a shed one left the
/// count at once and was waited for for ever: 20,000 such connections took the process to
/// its open-files limit and every client got nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_close_by_themselves_are_bounded_and_closed() {
    let server = Server::start(&[
        ("NETAPI_CHAT_MAX_CONNECTIONS", "20"),
        ("NETAPI_CHAT_IDLE_TIMEOUT_SECS", "1"),
    ]);
    let addr = server.addr();
    let before = open_fds(&server);
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
    let pipelined = format!("GET /openapi.json HTTP/1.1\r\nhost: {addr}\r\n\r\n").repeat(30);
    let mut conns = Vec::new();
    for i in 0..40 {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let mut c = socket
            .connect(addr.parse().expect("address"))
            .await
            .expect("connect");
        if i % 2 == 0 {
            c.write_all(preface).await.expect("preface");
        } else {
            c.write_all(pipelined.as_bytes()).await.expect("pipeline");
        }
        conns.push(c);
    }
    let mut most = 0;
    for _ in 0..20 {
        most = most.max(open_fds(&server));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The cap, plus the one accepted and waiting for room, plus what the server may open
    // meanwhile besides client connections (the store's files, a resolver socket).
    assert!(
        most <= before + 23,
        "open files {most} with {before} before and a cap of 20"
    );
    let took = timed_get(&server).await;
    assert!(took < Duration::from_secs(8), "served in {took:?}");
    for (i, c) in conns.iter_mut().enumerate() {
        assert!(
            read_until_closed(c, Duration::from_secs(15)).await,
            "connection {i} still open"
        );
    }
    assert!(open_fds(&server) <= before + 1, "all closed");
}

/// A client that asks for large answers and does not read them: once its connection's writes
/// have been blocked for `NETAPI_CHAT_WRITE_STALL_SECS` (1 s here), the connection is closed,
/// long before the idle timeout (60 s) would, since it is writing, not idle; a client that
/// reads slowly but steadily gets its whole answer. Before, a non-reading client held the
/// answers' memory and the socket's send buffer for as long as it liked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_its_answers_is_cut_off_one_that_reads_slowly_is_not() {
    let server = Server::start(&[("NETAPI_CHAT_WRITE_STALL_SECS", "1")]);
    let addr = server.addr();
    let request = format!("GET /openapi.json HTTP/1.1\r\nhost: {addr}\r\n\r\n");
    let connect = async || {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        socket
            .connect(addr.parse().expect("address"))
            .await
            .expect("connect")
    };
    let mut stuck = connect().await;
    stuck
        .write_all(request.repeat(20).as_bytes())
        .await
        .expect("pipeline");
    let mut slow = connect().await;
    slow.write_all(
        format!("GET /openapi.json HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .expect("request");
    // The slow reader takes 4 KiB every 200 ms (a blocked write never lasts 1 s).
    let slow_reader = tokio::spawn(async move {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match slow.read(&mut buf).await {
                Ok(0) | Err(_) => return all,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    tokio::time::sleep(Duration::from_secs(4)).await;
    // The stuck one was closed: what it reads now ends (at most what the buffers held).
    assert!(
        read_until_closed(&mut stuck, Duration::from_secs(5)).await,
        "the client that does not read is still connected"
    );
    let all = tokio::time::timeout(Duration::from_secs(60), slow_reader)
        .await
        .expect("the slow reader finished")
        .expect("its task");
    let text = String::from_utf8_lossy(&all);
    let length: usize = text
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .expect("a content-length");
    let head = text.find("\r\n\r\n").expect("a head") + 4;
    assert!(length > 100_000, "a large answer: {length}");
    assert_eq!(
        all.len() - head,
        length,
        "the slow reader got its whole answer"
    );
}

/// At the cap, a new client makes room by shedding one idle connection, not every idle one
/// (a shed connection counts until it has closed; before the pace between sheds, one client
/// shed all ten here, and their clients all reconnected).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_new_client_at_the_cap_sheds_one_idle_connection() {
    let server = Server::start(&[("NETAPI_CHAT_MAX_CONNECTIONS", "10")]);
    let mut conns = idle_connections(&server.addr(), 10).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    timed_get(&server).await;
    let mut closed = 0;
    for c in conns.iter_mut() {
        if closed_by_server(c, Duration::from_millis(50)).await {
            closed += 1;
        }
    }
    // The GET's connection may be kept alive (it is the eleventh), so one more may go.
    assert!(
        (1..=2).contains(&closed),
        "{closed} of 10 idle connections shed"
    );
}
