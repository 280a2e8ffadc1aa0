//! Hardening of the wire (issue 11, items 2, 6 and 7): what a hostile client sends before the
//! chat rules ever see a request. Black-box, against the real binary, in JSON and in XML:
//!
//! - item 2: a body is one document: a second top-level key (JSON) or a second root / junk
//!   after the root (XML) is refused with 400 on every operation that takes a body, and nothing
//!   changes;
//! - item 6: every client-given string has a `maxLength` (the spec's), enforced on both faces
//!   with 400 SVC0002 naming the field and the limit;
//! - item 7: the body is read only after authentication, within a time limit, and not at all
//!   when its announced length is over the limit; failed authentication is rate-limited per
//!   client address.

mod support;

use netapi_chat_api::{
    ChatMessageList, ChatSessionList, ChatSubscriptionList, ParticipantList, ParticipantStatus,
};
use netapi_chat_runtime::Format;
use std::time::{Duration, Instant};
use support::{Answer, Server, docs, post_raw, send, send_authorized, send_empty};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const FORMATS: [Format; 2] = [Format::Json, Format::Xml];
const CHAT: &str = r#"xmlns:chat="urn:oma:xml:rest:netapi:chat:1""#;
const ALICE: &str = "sip:alice@example.com";
const BOB: &str = "sip:bob@example.com";

// ------------------------------------------------------------------------------ helpers

/// Asserts a 400 SVC0002 `requestError` in `f` and returns its rendered text.
#[track_caller]
fn assert_invalid(a: &Answer, what: &str, f: Format) -> String {
    assert_eq!(a.status, 400, "{what}: status; body: {}", a.body);
    docs::rendered(&a.assert_error(400, "SVC0002", f))
}

fn subscription_json(notify: &str, data: &str) -> String {
    format!(
        r#"{{"chatSubscription":{{"callbackReference":{{"notifyURL":"{notify}","callbackData":"{data}"}}}}}}"#
    )
}

fn subscription_xml(notify: &str, data: &str) -> String {
    format!(
        "<chat:chatSubscription {CHAT}><callbackReference><notifyURL>{notify}</notifyURL>\
         <callbackData>{data}</callbackData></callbackReference></chat:chatSubscription>"
    )
}

/// A 1-1 session of `ALICE` with `BOB`, who accepted it (hand-written JSON, so that no
/// generated type stands between the test and the wire); its id.
async fn connected_session(srv: &Server) -> String {
    let sid = post_raw(
        &srv.urls().chat_sessions(ALICE),
        Format::Json,
        Format::Json,
        &format!(r#"{{"chatSessionInformation":{{"participant":[{{"address":"{BOB}"}}]}}}}"#),
    )
    .await
    .created_id();
    let accepted = post_raw(
        &srv.urls().participant_status(BOB, &sid, BOB),
        Format::Json,
        Format::Json,
        r#"{"participantSessionStatus":{"status":"Connected"}}"#,
    )
    .await;
    assert_eq!(accepted.status, 200, "{}", accepted.body);
    sid
}

// ------------------------------------------------------------------------------ item 2

/// One document per body, on every operation that takes one: `{"a":{…},"b":{…}}` is not an
/// `a` document, and neither is `<a/><b/>` or `<a/>junk`. Refused with 400 SVC0002 naming the
/// stray part; nothing is created or changed.
#[tokio::test]
async fn a_body_is_exactly_one_document_on_every_operation() {
    let srv = Server::default_for_tests();
    // A session with one message, so that every body-taking operation has a target.
    let sid = connected_session(&srv).await;
    let mid = post_raw(
        &srv.urls().messages(ALICE, &sid),
        Format::Json,
        Format::Json,
        r#"{"chatMessage":{"text":"hi"}}"#,
    )
    .await
    .created_id();
    let stray_json = r#""chatMessage":{"text":"smuggled"}"#;
    let stray_xml = format!("<chat:chatMessage {CHAT}><text>smuggled</text></chat:chatMessage>");
    // (URL, root name, JSON inner object, XML children)
    let urls = srv.urls();
    let ops: Vec<(String, &str, String, String)> = vec![
        (
            urls.subscriptions(ALICE),
            "chatSubscription",
            r#"{"callbackReference":{"notifyURL":"http://127.0.0.1:10/"}}"#.to_owned(),
            "<callbackReference><notifyURL>http://127.0.0.1:10/</notifyURL></callbackReference>"
                .to_owned(),
        ),
        (
            urls.chat_sessions(ALICE),
            "chatSessionInformation",
            format!(r#"{{"participant":[{{"address":"{BOB}"}}]}}"#),
            format!("<participant><address>{BOB}</address></participant>"),
        ),
        (
            urls.participants(ALICE, &sid),
            "participantList",
            r#"{"participant":[{"address":"sip:carol@example.com"}]}"#.to_owned(),
            "<participant><address>sip:carol@example.com</address></participant>".to_owned(),
        ),
        (
            urls.participant_status(BOB, &sid, BOB),
            "participantSessionStatus",
            r#"{"status":"Disconnected"}"#.to_owned(),
            "<status>Disconnected</status>".to_owned(),
        ),
        (
            urls.messages(ALICE, &sid),
            "chatMessage",
            r#"{"text":"again"}"#.to_owned(),
            "<text>again</text>".to_owned(),
        ),
        (
            urls.message_status(BOB, &sid, &mid),
            "messageDeliveryStatus",
            r#"{"status":"Delivered"}"#.to_owned(),
            "<status>Delivered</status>".to_owned(),
        ),
    ];
    for (url, root, json, xml) in &ops {
        let what = format!("POST {url}");
        // JSON: the document plus a second key (twice: after and before the root).
        let stray = if root == &"chatMessage" {
            // A second `chatMessage` key would be a duplicate, not a stray document.
            r#""chatSubscription":{"callbackReference":{"notifyURL":"http://127.0.0.1:10/"}}"#
        } else {
            stray_json
        };
        let stray_name = if root == &"chatMessage" {
            "chatSubscription"
        } else {
            "chatMessage"
        };
        for body in [
            format!(r#"{{"{root}":{json},{stray}}}"#),
            format!(r#"{{{stray},"{root}":{json}}}"#),
        ] {
            let text = assert_invalid(
                &post_raw(url, Format::Json, Format::Json, &body).await,
                &what,
                Format::Json,
            );
            assert!(
                text.contains(stray_name),
                "{what}: the error names the stray key: {text}"
            );
        }
        // XML: a second root element, and text after the root.
        let doc = format!("<chat:{root} {CHAT}>{xml}</chat:{root}>");
        let text = assert_invalid(
            &post_raw(url, Format::Xml, Format::Xml, &format!("{doc}{stray_xml}")).await,
            &what,
            Format::Xml,
        );
        assert!(text.contains("root"), "{what}: {text}");
        let text = assert_invalid(
            &post_raw(url, Format::Xml, Format::Xml, &format!("{doc}junk")).await,
            &what,
            Format::Xml,
        );
        assert!(text.contains("junk"), "{what}: {text}");
    }
    // Nothing changed: no subscription, one session, one message, bob still connected, no carol.
    let list = |url: String| async move { send_empty("GET", &url, Format::Json).await };
    let subs: ChatSubscriptionList = list(urls.subscriptions(ALICE)).await.decode();
    assert!(subs.chat_subscription.is_empty(), "{subs:?}");
    let sessions: ChatSessionList = list(urls.chat_sessions(ALICE)).await.decode();
    assert_eq!(sessions.chat_session_information.len(), 1, "{sessions:?}");
    let messages: ChatMessageList = list(urls.messages(ALICE, &sid)).await.decode();
    assert_eq!(messages.chat_message.len(), 1, "{messages:?}");
    let people: ParticipantList = list(urls.participants(ALICE, &sid)).await.decode();
    assert_eq!(people.participant.len(), 2, "{people:?}");
    assert!(
        people
            .participant
            .iter()
            .all(|p| p.status == Some(ParticipantStatus::Connected)),
        "{people:?}"
    );
}

// ------------------------------------------------------------------------------ item 6

/// A string over its limit, as one (JSON body, XML body) pair.
struct Case {
    what: &'static str,
    /// The collection the body is POSTed to.
    url: fn(&netapi_chat_api::Urls) -> String,
    field: &'static str,
    limit: usize,
    body: fn(Format, &str) -> String,
}

fn session_body(f: Format, subject: &str, name: &str, correlator: &str) -> String {
    match f {
        Format::Json => format!(
            r#"{{"chatSessionInformation":{{"subject":"{subject}","clientCorrelator":"{correlator}","participant":[{{"address":"{BOB}","name":"{name}"}}]}}}}"#
        ),
        Format::Xml => format!(
            "<chat:chatSessionInformation {CHAT}><subject>{subject}</subject><participant>\
             <address>{BOB}</address><name>{name}</name></participant>\
             <clientCorrelator>{correlator}</clientCorrelator></chat:chatSessionInformation>"
        ),
    }
}

const CASES: &[Case] = &[
    Case {
        what: "callbackData",
        url: |u| u.subscriptions(ALICE),
        field: "callbackData",
        limit: 1024,
        body: |f, s| match f {
            Format::Json => subscription_json("http://127.0.0.1:10/", s),
            Format::Xml => subscription_xml("http://127.0.0.1:10/", s),
        },
    },
    Case {
        what: "notifyURL",
        url: |u| u.subscriptions(ALICE),
        field: "notifyURL",
        limit: 2048,
        body: |f, s| {
            let url = format!("http://127.0.0.1:10/{}", &s[19.min(s.len())..]);
            match f {
                Format::Json => subscription_json(&url, "d"),
                Format::Xml => subscription_xml(&url, "d"),
            }
        },
    },
    Case {
        what: "subject",
        url: |u| u.chat_sessions(ALICE),
        field: "subject",
        limit: 1024,
        body: |f, s| session_body(f, s, "Bob", "c"),
    },
    Case {
        what: "participant display name",
        url: |u| u.chat_sessions(ALICE),
        field: "name",
        limit: 256,
        body: |f, s| session_body(f, "hi", s, "c"),
    },
    Case {
        what: "session clientCorrelator",
        url: |u| u.chat_sessions(ALICE),
        field: "clientCorrelator",
        limit: 256,
        body: |f, s| session_body(f, "hi", "Bob", s),
    },
    Case {
        what: "participant address",
        url: |u| u.chat_sessions(ALICE),
        field: "address",
        limit: 256,
        body: |f, s| {
            let addr = format!("sip:{}@example.com", &s[16.min(s.len())..]);
            match f {
                Format::Json => format!(
                    r#"{{"chatSessionInformation":{{"participant":[{{"address":"{addr}"}}]}}}}"#
                ),
                Format::Xml => format!(
                    "<chat:chatSessionInformation {CHAT}><participant><address>{addr}</address>\
                     </participant></chat:chatSessionInformation>"
                ),
            }
        },
    },
];

/// Every client-given string has a limit (the spec's `maxLength`): at the limit the request is
/// accepted, one character over it gets 400 SVC0002 naming the field and the limit, in JSON and
/// XML, and nothing is stored. Characters are counted, not bytes (`é` is one).
#[tokio::test]
async fn every_client_string_has_a_limit_on_both_faces() {
    let srv = Server::default_for_tests();
    for f in FORMATS {
        for c in CASES {
            let url = (c.url)(&srv.urls());
            let what = format!("{} ({f:?})", c.what);
            let before = send_empty("GET", &url, Format::Json).await;
            let over = "é".repeat(c.limit + 1);
            let over = if c.field == "address" || c.field == "notifyURL" {
                "x".repeat(c.limit + 1)
            } else {
                over
            };
            let text = assert_invalid(&post_raw(&url, f, f, &(c.body)(f, &over)).await, &what, f);
            assert!(
                text.contains(&format!("`{}`", c.field)) && text.contains(&c.limit.to_string()),
                "{what}: the error names the field and its limit: {text}"
            );
            let after = send_empty("GET", &url, Format::Json).await;
            assert_eq!(before.body, after.body, "{what}: nothing stored");
        }
    }
    // At the limit: accepted (callbackData and subject, in characters).
    let data = "é".repeat(1024);
    let a = post_raw(
        &srv.urls().subscriptions(ALICE),
        Format::Json,
        Format::Json,
        &subscription_json("http://127.0.0.1:10/", &data),
    )
    .await;
    a.created_id();
    let a = post_raw(
        &srv.urls().chat_sessions(ALICE),
        Format::Xml,
        Format::Xml,
        &session_body(Format::Xml, &"s".repeat(1024), &"n".repeat(256), "c"),
    )
    .await;
    a.created_id();
}

/// HTTP/1.1 only, as TLS's ALPN offers: an HTTP/2 client with prior knowledge (h2c) on the
/// plain port is told it may open no stream (`SETTINGS_MAX_CONCURRENT_STREAMS` 0), since the
/// head bound and the header timeout are HTTP/1 settings and an HTTP/2 connection would
/// escape them.
#[tokio::test]
async fn an_http2_client_may_open_no_stream() {
    let srv = Server::default_for_tests();
    let mut conn = TcpStream::connect(srv.addr()).await.expect("connect");
    // The client preface and an empty SETTINGS frame (RFC 9113 §3.4, §6.5).
    conn.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .expect("preface");
    let mut head = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut head))
        .await
        .expect("the server's first frame within 5 s")
        .expect("a frame");
    assert_eq!(head[3], 4, "a SETTINGS frame first: {head:?}");
    let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
    let mut payload = vec![0u8; len];
    conn.read_exact(&mut payload).await.expect("its payload");
    let settings: Vec<(u16, u32)> = payload
        .chunks_exact(6)
        .map(|c| {
            (
                u16::from_be_bytes([c[0], c[1]]),
                u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
            )
        })
        .collect();
    assert!(
        settings.contains(&(3, 0)),
        "MAX_CONCURRENT_STREAMS 0 announced: {settings:?}"
    );
}

/// Both faces take the same strings: a character XML cannot carry (a control character but
/// tab, line feed and carriage return; U+FFFE, U+FFFF), which the XML face cannot even parse,
/// is refused in JSON too (400 SVC0002 naming the field and the character), so an XML reader
/// or subscriber never gets a replacement character where the sender wrote something else.
#[tokio::test]
async fn a_character_xml_cannot_carry_is_refused_on_the_json_face_too() {
    let srv = Server::default_for_tests();
    let url = srv.urls().chat_sessions(ALICE);
    for (subject, named) in [
        (r"bell\u0007", "U+0007"),
        (r"nul\u0000", "U+0000"),
        (r"\uFFFE", "U+FFFE"),
    ] {
        let before = send_empty("GET", &url, Format::Json).await;
        let a = post_raw(
            &url,
            Format::Json,
            Format::Json,
            &session_body(Format::Json, subject, "n", "c"),
        )
        .await;
        let text = assert_invalid(&a, subject, Format::Json);
        assert!(text.contains("`subject`") && text.contains(named), "{text}");
        assert_eq!(
            before.body,
            send_empty("GET", &url, Format::Json).await.body,
            "nothing stored"
        );
    }
    let xml = post_raw(
        &url,
        Format::Xml,
        Format::Xml,
        &session_body(Format::Xml, "bell&#7;", "n", "c"),
    )
    .await;
    assert_invalid(&xml, "the XML face", Format::Xml);
    // Tab, line feed and carriage return are text like any other.
    let ok = post_raw(
        &url,
        Format::Json,
        Format::Json,
        &session_body(Format::Json, r"a\tb\nc\rd", "n", "c2"),
    )
    .await;
    ok.created_id();
    // A message's `text` too, though its length is a setting rather than a `maxLength`
    // (before, it alone let them through: JSON readers got a NUL, XML readers U+FFFD).
    let sid = connected_session(&srv).await;
    let messages = srv.urls().messages(ALICE, &sid);
    for (text, named) in [
        (r"a\u0000b", "U+0000"),
        (r"\u001f", "U+001F"),
        (r"\uFFFF", "U+FFFF"),
    ] {
        let a = post_raw(
            &messages,
            Format::Json,
            Format::Json,
            &format!(r#"{{"chatMessage":{{"text":"{text}"}}}}"#),
        )
        .await;
        let why = assert_invalid(&a, text, Format::Json);
        assert!(why.contains("`text`") && why.contains(named), "{why}");
    }
    let listed = send_empty("GET", &messages, Format::Json).await;
    assert!(
        listed.body.contains(r#""chatMessage":[]"#),
        "nothing sent: {}",
        listed.body
    );
    let tab = post_raw(
        &messages,
        Format::Json,
        Format::Json,
        r#"{"chatMessage":{"text":"a\tb"}}"#,
    )
    .await;
    assert_eq!(tab.status, 201, "{}", tab.body);
}

/// The limits are published: the OpenAPI document carries `maxLength`, the XSD the
/// `xsd:maxLength` facet, and the JSON wrappers allow no second key.
#[tokio::test]
async fn the_limits_are_published() {
    let srv = Server::default_for_tests();
    let doc = send_empty("GET", &format!("{}/openapi.json", srv.base), Format::Json).await;
    let v: serde_json::Value = serde_json::from_str(&doc.body).expect("OpenAPI JSON");
    let s = &v["components"]["schemas"];
    assert_eq!(
        s["CallbackReference"]["properties"]["callbackData"]["maxLength"],
        1024
    );
    assert_eq!(
        s["ChatSessionInformation"]["properties"]["subject"]["maxLength"],
        1024
    );
    assert_eq!(s["ChatSubscriptionRoot"]["additionalProperties"], false);
    let xsd = send_empty(
        "GET",
        &format!("{}/xsd/rest_netapi_common-v1_0.xsd", srv.base),
        Format::Xml,
    )
    .await;
    assert!(
        xsd.body.contains(r#"<xsd:maxLength value="1024"/>"#),
        "{}",
        xsd.body
    );
}

// ------------------------------------------------------------------------------ item 7

/// What a raw connection saw: the answer (if any), how long it took, and whether the server
/// closed the connection after it.
struct Raw {
    answer: Option<Answer>,
    elapsed: Duration,
    closed: bool,
}

/// Opens a TCP connection to the server, writes `head` (request line and headers, without the
/// blank line) and then `body_bytes`, and reads for up to `wait`. Never sends more than that,
/// as a slow or hostile client would.
async fn raw_request(srv: &Server, head: &str, body_bytes: &[u8], wait: Duration) -> Raw {
    let mut conn = TcpStream::connect(srv.addr()).await.expect("connect");
    let start = Instant::now();
    conn.write_all(format!("{head}\r\nhost: test\r\n\r\n").as_bytes())
        .await
        .expect("write head");
    conn.write_all(body_bytes).await.expect("write body");
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let mut closed = false;
    let deadline = start + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    Raw {
        answer: parse_answer(&got),
        elapsed: start.elapsed(),
        closed,
    }
}

/// Parses one HTTP/1.1 response (status line, headers, `content-length` body).
fn parse_answer(bytes: &[u8]) -> Option<Answer> {
    let text = String::from_utf8_lossy(bytes);
    let (head, rest) = text.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let mut headers = http::HeaderMap::new();
    for line in lines {
        let (k, v) = line.split_once(':')?;
        headers.append(
            http::HeaderName::from_bytes(k.trim().as_bytes()).ok()?,
            http::HeaderValue::from_str(v.trim()).ok()?,
        );
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(rest.len());
    Some(Answer {
        status,
        headers,
        body: rest.get(..len).unwrap_or(rest).to_owned(),
    })
}

fn post_head(srv: &Server, token: &str, f: Format, length: u64) -> String {
    let url = srv.urls().subscriptions(ALICE);
    let path = url.trim_start_matches(&srv.base);
    format!(
        "POST {path} HTTP/1.1\r\nauthorization: Bearer {token}\r\ncontent-type: {}\r\n\
         accept: {}\r\ncontent-length: {length}",
        f.media_type(),
        f.media_type()
    )
}

/// RFC 9112 §3.2: an HTTP/1.1 request without `Host`, any request with two, or one whose
/// `Host` is not `host[:port]`, is `400 SVC0002` (in the negotiated format) and the
/// connection closes; HTTP/1.0 may omit it.
#[tokio::test]
async fn a_request_needs_one_host_header() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let srv = Server::start(&[]);
    for (request, status) in [
        ("GET /healthz HTTP/1.1\r\n\r\n", 400),
        (
            "GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\nAccept: application/xml\r\n\r\n",
            400,
        ),
        // Two fields joined the way some proxies join them: not a host.
        (
            "GET /healthz HTTP/1.1\r\nHost: a, b\r\nAccept: application/xml\r\n\r\n",
            400,
        ),
        ("GET /healthz HTTP/1.1\r\nHost: user@a\r\n\r\n", 400),
        ("GET /healthz HTTP/1.0\r\n\r\n", 200),
        (
            "GET /healthz HTTP/1.1\r\nHost: [::1]:80\r\nConnection: close\r\n\r\n",
            200,
        ),
        // An IPv6 zone id, as Node.js and Python's urllib send it (RFC 6874 asks servers to
        // take it).
        (
            "GET /healthz HTTP/1.1\r\nHost: [fe80::1%eth0]:80\r\nConnection: close\r\n\r\n",
            200,
        ),
        (
            "GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            200,
        ),
        // An HTTP/1.0 client that asked to keep the connection is told `close` and nothing
        // else (two outside reviews: hyper added `keep-alive` beside the `close`).
        (
            "GET /healthz HTTP/1.0\r\nHost: a\r\nHost: b\r\nConnection: keep-alive\r\n\r\n",
            400,
        ),
    ] {
        let mut conn = TcpStream::connect(srv.addr()).await.expect("connect");
        conn.write_all(request.as_bytes()).await.expect("write");
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut got)).await;
        assert!(read.is_ok(), "the connection closes: {request:?}");
        let a = parse_answer(&got).expect("an answer");
        assert_eq!(a.status, status, "{request:?}: {}", a.body);
        if status == 400 {
            let connection: Vec<_> = a.headers.get_all("connection").iter().collect();
            assert_eq!(connection, ["close"], "{request:?}");
            let f = if request.contains("xml") {
                Format::Xml
            } else {
                Format::Json
            };
            let text = docs::rendered(&a.assert_error(400, "SVC0002", f));
            assert!(text.contains("Host"), "{text}");
        }
    }
}

/// The first byte of a valid body in `f`.
fn first_byte(f: Format) -> &'static [u8] {
    match f {
        Format::Json => b"{",
        Format::Xml => b"<",
    }
}

/// A client that sends the headers and one byte of its body is answered 408 (an OMA
/// `requestError` in its format) once the body timeout has passed, and its connection is
/// closed: it cannot hold the connection open.
#[tokio::test]
async fn a_body_that_does_not_arrive_gets_408_and_the_connection_is_closed() {
    let srv = Server::start(&[("NETAPI_CHAT_BODY_TIMEOUT_MS", "1000")]);
    for f in FORMATS {
        let raw = raw_request(
            &srv,
            &post_head(&srv, support::APP_TOKEN, f, 200),
            first_byte(f),
            Duration::from_secs(6),
        )
        .await;
        let a = raw
            .answer
            .expect("an answer before the connection is given up");
        let text = docs::rendered(&a.assert_error(408, "SVC0001", f));
        assert!(text.contains("1000 ms"), "{text}");
        assert!(raw.closed, "{f:?}: the connection is closed after the 408");
        assert!(
            raw.elapsed >= Duration::from_millis(900) && raw.elapsed < Duration::from_secs(5),
            "{f:?}: answered after {:?} (timeout 1 s)",
            raw.elapsed
        );
    }
    // Nothing was created.
    let subs: ChatSubscriptionList =
        send_empty("GET", &srv.urls().subscriptions(ALICE), Format::Json)
            .await
            .decode();
    assert!(subs.chat_subscription.is_empty());
}

/// Authentication comes before the body: a bad token with a large, slow body is answered 401 at
/// once (the server does not wait for the body, whose timeout here is the default 10 s), and a
/// `Content-Length` over the limit is refused with 413 before a byte of the body is read; both
/// close the connection.
#[tokio::test]
async fn credentials_and_announced_length_are_checked_before_the_body_is_read() {
    let srv = Server::default_for_tests();
    for f in FORMATS {
        let raw = raw_request(
            &srv,
            &post_head(&srv, "not-a-token-of-this-server", f, 60_000),
            first_byte(f),
            Duration::from_secs(3),
        )
        .await;
        let a = raw.answer.expect("401 without waiting for the body");
        a.assert_error(401, "SVC2003", f);
        assert!(raw.closed, "{f:?}: the unread body is not drained");
        assert!(raw.elapsed < Duration::from_secs(2), "{:?}", raw.elapsed);

        let raw = raw_request(
            &srv,
            &post_head(&srv, support::APP_TOKEN, f, 10_000_000),
            first_byte(f),
            Duration::from_secs(3),
        )
        .await;
        let a = raw.answer.expect("413 without waiting for the body");
        let text = docs::rendered(&a.assert_error(413, "POL2004", f));
        assert!(text.contains("65536"), "{text}");
        assert!(raw.closed, "{f:?}: the connection is closed after the 413");
        assert!(raw.elapsed < Duration::from_secs(2), "{:?}", raw.elapsed);
    }
}

/// The gate answers an unknown path (`404`), a method the path does not allow (`405`) or an
/// unreadable path (`400`) before any body is read; to a request with a body it says
/// `Connection: close`, and closes, so a client (or a standby's pool) does not write its next
/// request into a connection that throws it away. Before, the answer claimed the connection
/// stayed open: with `Expect: 100-continue` (nothing of the body sent) the next request on it
/// was never answered, and through a standby other clients' creates got `503` (the HTTP
/// review of 2026-12-07). A request without a body keeps its connection.
#[tokio::test]
async fn the_gates_refusal_of_a_request_with_a_body_closes_and_says_so() {
    let srv = Server::default_for_tests();
    let session = srv.urls().session(ALICE, "nosuch");
    let session = session.trim_start_matches(&srv.base);
    for f in FORMATS {
        for (target, status, id) in [
            ("POST /nope".to_owned(), 404, "SVC2008"),
            ("POST /a/../b".to_owned(), 400, "SVC0002"),
            (format!("PUT {session}"), 405, "SVC0002"),
        ] {
            let head = format!(
                "{target} HTTP/1.1\r\ncontent-type: {}\r\ncontent-length: 2\r\n\
                 expect: 100-continue",
                f.media_type()
            );
            let raw = raw_request(&srv, &head, b"", Duration::from_secs(3)).await;
            let a = raw.answer.expect("an answer");
            a.assert_error(status, id, f);
            assert_eq!(
                a.headers.get("connection").map(|v| v.as_bytes()),
                Some(&b"close"[..]),
                "{f:?} {target}: {:?}",
                a.headers
            );
            assert!(raw.closed, "{f:?} {target}: the connection is closed");
        }
    }
    let raw = raw_request(&srv, "GET /nope HTTP/1.1", b"", Duration::from_millis(500)).await;
    raw.answer
        .expect("an answer")
        .assert_error(404, "SVC2008", Format::Json);
    assert!(!raw.closed, "a refusal without a body keeps the connection");
}

/// A request refused before its body is read (`401`, `413`) is still answered to a client that
/// writes its whole body before it reads, as a proxy does (nginx, haproxy, a standby): the
/// server reads what follows the answer and throws it away before it closes (a lingering
/// close). Before, it closed with the body unread, the socket was reset, and the client's
/// writes failed and its answer was lost (an outside review: nginx answered `502` and marked
/// every instance failed, a standby answered `503`).
#[tokio::test]
async fn a_client_that_sends_its_whole_body_before_reading_gets_the_early_answer() {
    let srv = Server::default_for_tests();
    let body = vec![b' '; 1 << 20];
    for f in FORMATS {
        for (token, status, id) in [
            ("not-a-token-of-this-server", 401, "SVC2003"),
            (support::APP_TOKEN, 413, "POL2004"),
        ] {
            let head = post_head(&srv, token, f, body.len() as u64);
            let head = format!("{head}\r\nhost: test\r\n\r\n");
            for round in 0..3 {
                let (sent, read) =
                    support::send_as_a_proxy(&srv.addr(), &head, &body, Duration::from_millis(2))
                        .await;
                let read = read.map_err(|e| format!("{f:?} {status} round {round}: read {e}"));
                assert!(
                    sent.is_ok(),
                    "{f:?} {status} round {round}: written {sent:?}"
                );
                let a = parse_answer(&read.expect("read")).expect("an answer");
                a.assert_error(status, id, f);
            }
        }
    }
}

/// Lingering has no small pool a client could fill for everyone: while 120 connections keep
/// trickling bodies after their `401`s (each lingering its 2 s, then coming back), another
/// client's refused request is still answered, not reset. Before, 64 lingering sockets at
/// most were shared by all (an outside review: 300 such connections through haproxy brought
/// nginx's `502`s back for everyone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_trickling_after_their_refusals_do_not_take_lingering_from_others() {
    // Off: every request here fails authentication, from one address.
    let srv = Server::start(&[("NETAPI_CHAT_AUTH_FAILURE_LIMIT", "0")]);
    let f = Format::Json;
    let head = format!(
        "{}\r\nhost: test\r\n\r\n",
        post_head(&srv, "not-a-token-of-this-server", f, 1 << 20)
    );
    let until = Instant::now() + Duration::from_secs(6);
    let mut trickling = Vec::new();
    for _ in 0..120 {
        let (addr, head) = (srv.addr(), head.clone());
        trickling.push(tokio::spawn(async move {
            while Instant::now() < until {
                let Ok(mut conn) = TcpStream::connect(&addr).await else {
                    continue;
                };
                if conn.write_all(head.as_bytes()).await.is_err() {
                    continue;
                }
                while Instant::now() < until && conn.write_all(&[b' '; 512]).await.is_ok() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let body = vec![b' '; 1 << 20];
    for round in 0..5 {
        let (sent, read) =
            support::send_as_a_proxy(&srv.addr(), &head, &body, Duration::from_millis(2)).await;
        assert!(sent.is_ok(), "round {round}: written {sent:?}");
        let got = read.unwrap_or_else(|e| panic!("round {round}: read {e}"));
        parse_answer(&got)
            .expect("an answer")
            .assert_error(401, "SVC2003", f);
    }
    for t in trickling {
        let _ = t.await;
    }
}

/// A request head is bounded before anyone is authenticated: one over
/// `NETAPI_CHAT_MAX_HEADER_BYTES` (16 KiB by default) is answered `431` (an OMA error naming
/// the limit) and its connection closed, and no connection is buffered past twice the limit
/// (hyper's ~400 KiB before), so what clients can make the server hold is connections × that
/// bound. One within it is served as usual.
#[tokio::test]
async fn a_request_head_over_its_bound_is_431_one_within_is_served() {
    let srv = Server::default_for_tests();
    let url = srv.urls().subscriptions(ALICE);
    let path = url
        .split_once("//")
        .and_then(|(_, r)| r.find('/').map(|i| r[i..].to_owned()));
    let path = path.expect("a path");
    let head = |pad: usize| {
        format!(
            "GET {path} HTTP/1.1\r\nauthorization: Bearer {}\r\nx-pad: {}",
            support::APP_TOKEN,
            "a".repeat(pad)
        )
    };
    let within = raw_request(&srv, &head(12 * 1024), b"", Duration::from_secs(2)).await;
    assert_eq!(within.answer.map(|a| a.status), Some(200));

    // Just over: the OMA error (the gate counts the head hyper parsed).
    let over = raw_request(&srv, &head(17 * 1024), b"", Duration::from_secs(3)).await;
    let a = over.answer.expect("an answer");
    let text = docs::rendered(&a.assert_error(431, "SVC0002", Format::Json));
    assert!(text.contains("16384"), "{text}");
    assert!(over.closed, "the connection is closed after the 431");
    // Far over (past twice the limit): hyper stops buffering and answers 431 itself.
    let far = raw_request(&srv, &head(200 * 1024), b"", Duration::from_secs(3)).await;
    assert_eq!(far.answer.map(|a| a.status), Some(431));
    assert!(far.closed);

    let lower = Server::start(&[("NETAPI_CHAT_MAX_HEADER_BYTES", "9000")]);
    let url = lower.urls().subscriptions(ALICE);
    let path = url
        .split_once("//")
        .and_then(|(_, r)| r.find('/').map(|i| r[i..].to_owned()));
    let head = format!(
        "GET {} HTTP/1.1\r\nauthorization: Bearer {}\r\nx-pad: {}",
        path.expect("a path"),
        support::APP_TOKEN,
        "a".repeat(12 * 1024)
    );
    let over = raw_request(&lower, &head, b"", Duration::from_secs(3)).await;
    assert_eq!(
        over.answer.map(|a| a.status),
        Some(431),
        "the setting is used"
    );
}

/// Failed authentication is limited per client address: after the configured number of
/// failures the address gets 429 POL2005 with `Retry-After`, even with a valid token (its
/// credentials are no longer checked), in the client's format.
#[tokio::test]
async fn failed_authentication_is_rate_limited_per_address() {
    let srv = Server::start(&[
        ("NETAPI_CHAT_AUTH_FAILURE_LIMIT", "4"),
        ("NETAPI_CHAT_AUTH_FAILURE_WINDOW_SECS", "60"),
    ]);
    let url = srv.urls().chat_sessions(ALICE);
    let bad = [("authorization", "Bearer guessed-token-number-0001")];
    // Before any failure the valid token works.
    assert_eq!(send_empty("GET", &url, Format::Json).await.status, 200);
    for i in 0..4 {
        let f = FORMATS[i % 2];
        let a = send("GET", &url, &[bad[0], ("accept", f.media_type())], None).await;
        a.assert_error(401, "SVC2003", f);
    }
    for f in FORMATS {
        for auth in [bad[0].1, &format!("Bearer {}", support::APP_TOKEN)] {
            let a = send_authorized("GET", &url, auth, f).await;
            let text = docs::rendered(&a.assert_error(429, "POL2005", f));
            assert!(text.contains("failed authentication"), "{text}");
            let retry: u64 = a
                .header("retry-after")
                .parse()
                .expect("Retry-After seconds");
            assert!((1..=60).contains(&retry), "Retry-After {retry}");
        }
    }
}

/// The operator tokens are no cheaper to guess than an API token: wrong `/metrics` and
/// `/admin/…` tokens count against the same per-address failure limit (before, an outside
/// review guessed about 9,800 admin tokens a second without a `429`), and past it those
/// endpoints answer `429` with `Retry-After` too, even to the right token, as the API does.
#[tokio::test]
async fn guessing_the_admin_or_metrics_token_counts_against_the_failure_limit() {
    const ADMIN: &str = "admin-token-0123456789abcdefghij";
    const METRICS: &str = "metrics-token-0123456789abcdefgh";
    let srv = Server::logged(&[
        ("NETAPI_CHAT_AUTH_FAILURE_LIMIT", "4"),
        ("NETAPI_CHAT_AUTH_FAILURE_WINDOW_SECS", "60"),
        ("NETAPI_CHAT_ADMIN_TOKEN", ADMIN),
        ("NETAPI_CHAT_METRICS_TOKEN", METRICS),
    ]);
    let (summary, metrics) = (
        format!("{}/admin/summary", srv.base),
        format!("{}/metrics", srv.base),
    );
    let guess = [("authorization", "Bearer guessed-operator-token-01")];
    for url in [&summary, &metrics, &summary, &metrics] {
        assert_eq!(send("GET", url, &guess, None).await.status, 401, "{url}");
    }
    for (url, right) in [(&summary, ADMIN), (&metrics, METRICS)] {
        let a = send(
            "GET",
            url,
            &[("authorization", &format!("Bearer {right}"))],
            None,
        )
        .await;
        assert_eq!(a.status, 429, "{url}: {}", a.body);
        assert!(a.body.contains("failed authentication"), "{}", a.body);
        let retry: u64 = a.header("retry-after").parse().expect("Retry-After");
        assert!((1..=60).contains(&retry), "Retry-After {retry}");
    }
    // One budget: the API refuses that address too.
    let api = send_empty("GET", &srv.urls().chat_sessions(ALICE), Format::Json).await;
    api.assert_error(429, "POL2005", Format::Json);
    // And the operator's log says why, once (before, only a metric did).
    let log = srv.log_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("authentication failure limit reached"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].contains("127.0.0.1"), "{}", lines[0]);
}

/// Behind a trusted proxy (`NETAPI_CHAT_TRUSTED_PROXIES`), the failure limit counts the
/// clients the proxy names in `X-Forwarded-For`, not the proxy: one client guessing tokens is
/// refused, another behind the same proxy is served. From an address that is not trusted the
/// header is ignored, so a client cannot pose as another.
#[tokio::test]
async fn behind_a_trusted_proxy_the_failure_limit_counts_each_client() {
    let limited = |extra: &'static [(&'static str, &'static str)]| {
        let mut env = vec![
            ("NETAPI_CHAT_AUTH_FAILURE_LIMIT", "3"),
            ("NETAPI_CHAT_AUTH_FAILURE_WINDOW_SECS", "60"),
        ];
        env.extend_from_slice(extra);
        Server::start(&env)
    };
    let good = format!("Bearer {}", support::APP_TOKEN);
    let bad = "Bearer guessed-token-number-0001";
    let get = async |srv: &Server, auth: &str, client: &str| {
        send(
            "GET",
            &srv.urls().chat_sessions(ALICE),
            &[("authorization", auth), ("x-forwarded-for", client)],
            None,
        )
        .await
        .status
    };
    // The tests reach the server from 127.0.0.1: trusted here.
    let srv = limited(&[("NETAPI_CHAT_TRUSTED_PROXIES", "127.0.0.1, ::1")]);
    for _ in 0..3 {
        assert_eq!(get(&srv, bad, "198.51.100.1").await, 401);
    }
    assert_eq!(
        get(&srv, &good, "198.51.100.1").await,
        429,
        "the guesser is limited"
    );
    assert_eq!(
        get(&srv, &good, "198.51.100.2").await,
        200,
        "its neighbour is not"
    );
    assert_eq!(
        get(&srv, &good, "198.51.100.2, 198.51.100.1").await,
        429,
        "the rightmost address is the one the proxy saw"
    );
    // Proxies that write the port (Azure's gateways) or leave empty elements: each client
    // is still its own, and a client's garbage left of its proxy's entry does not make its
    // guesses the proxy's (before, any entry that did not read charged the proxy, locking
    // out everyone behind it).
    for _ in 0..3 {
        assert_eq!(get(&srv, bad, "garbage, 198.51.100.3:5678").await, 401);
    }
    assert_eq!(get(&srv, &good, "198.51.100.3:9999").await, 429);
    assert_eq!(get(&srv, &good, "[2001:db8::9]:443, ").await, 200);
    assert_eq!(get(&srv, &good, "198.51.100.4:4321").await, 200);

    // Not trusted: the header counts for nothing, every request is the connection's.
    let srv = limited(&[]);
    for _ in 0..3 {
        assert_eq!(get(&srv, bad, "198.51.100.1").await, 401);
    }
    assert_eq!(get(&srv, &good, "198.51.100.2").await, 429);
}

/// The request log names the client a trusted proxy gives (`client_addr`) beside the
/// connection's peer (`remote_addr`), so an operator behind a load balancer can tell clients
/// apart in the log as the failure limit does; an untrusted peer's header is not believed
/// there either. Before, every line named only the proxy (an operator review; a standby
/// forwarding for its clients went the same way).
#[tokio::test]
async fn the_request_log_names_the_client_a_trusted_proxy_gives() {
    let get = async |srv: &Server, id: &str| {
        let auth = format!("Bearer {}", support::APP_TOKEN);
        let answer = send(
            "GET",
            &srv.urls().chat_sessions(ALICE),
            &[
                ("authorization", &auth),
                ("x-forwarded-for", "198.51.100.7"),
                ("x-request-id", id),
            ],
            None,
        )
        .await;
        assert_eq!(answer.status, 200);
        let log = srv.log_text();
        log.lines()
            .find(|l| l.contains("request completed") && l.contains(id))
            .unwrap_or_else(|| panic!("no request line for {id}: {log}"))
            .to_owned()
    };
    let srv = Server::logged(&[("NETAPI_CHAT_TRUSTED_PROXIES", "127.0.0.1, ::1")]);
    let line = get(&srv, "behind-a-proxy").await;
    let field = |line: &str, want: &str| line.split_whitespace().any(|w| w == want);
    // The address alone: a proxy names no port.
    assert!(field(&line, "client_addr=198.51.100.7"), "{line}");
    assert!(line.contains("remote_addr=127.0.0.1"), "{line}");
    // The method and target logged are the client's, not what the gate made of them (a
    // `HEAD` is served as a `GET`).
    let auth = format!("Bearer {}", support::APP_TOKEN);
    let head = send(
        "HEAD",
        &srv.urls().chat_sessions(ALICE),
        &[("authorization", &auth), ("x-request-id", "a-head")],
        None,
    )
    .await;
    assert_eq!(head.status, 200);
    let log = srv.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("request completed") && l.contains("a-head"))
        .unwrap_or_else(|| panic!("no request line for the HEAD: {log}"));
    assert!(field(line, "method=HEAD"), "{line}");
    let srv = Server::logged(&[]);
    let line = get(&srv, "no-proxy-trusted").await;
    assert!(!line.contains("client_addr"), "{line}");
    assert!(!line.contains("198.51.100.7"), "{line}");
}

/// XML bodies in the encodings XML 1.0 makes every processor read (UTF-16 with its byte order
/// mark) or that declare ISO-8859-1, and a `utf-16` declaration on UTF-8 bytes (.NET's
/// `XmlSerializer` over a `StringWriter`), are read as the message they hold; an encoding
/// outside those is refused 400, naming it. A JSON body may start with a byte order mark.
#[tokio::test]
async fn xml_in_utf16_latin1_or_declared_utf16_is_read() {
    let srv = Server::default_for_tests();
    let sid = support::chat::connected_session(&srv, ALICE, &docs::session("enc", &[BOB])).await;
    let url = srv.urls().messages(ALICE, &sid);
    let doc = |enc: &str, text: &str| {
        format!(
            r#"<?xml version="1.0" encoding="{enc}"?><chat:chatMessage xmlns:chat="urn:oma:xml:rest:netapi:chat:1"><text>{text}</text></chat:chatMessage>"#
        )
    };
    let utf16 = doc("UTF-16", "café 16");
    let le: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain(utf16.encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    let mut latin1: Vec<u8> = doc("ISO-8859-1", "caf").into_bytes();
    let at = latin1.len() - "</text></chat:chatMessage>".len();
    latin1.insert(at, 0xE9); // é in ISO-8859-1
    let bodies = [
        (le, "café 16"),
        (latin1, "café"),
        (doc("utf-16", "declared").into_bytes(), "declared"),
    ];
    let http = reqwest::Client::new();
    let post = |body: Vec<u8>| {
        http.post(&url)
            .bearer_auth(support::APP_TOKEN)
            .header("content-type", "application/xml")
            .header("accept", "application/json")
            .body(body)
            .send()
    };
    for (body, text) in bodies {
        let a = post(body).await.expect("send");
        let status = a.status().as_u16();
        let location = a
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert_eq!(
            status,
            201,
            "{text}: {}",
            a.text().await.unwrap_or_default()
        );
        let m: netapi_chat_api::ChatMessage =
            send_empty("GET", &location, Format::Json).await.decode();
        assert_eq!(m.text, text);
    }
    // A JSON body may start with a byte order mark too (RFC 8259 §8.1).
    let bom = http
        .post(&url)
        .bearer_auth(support::APP_TOKEN)
        .header("content-type", "application/json")
        .body(b"\xEF\xBB\xBF{\"chatMessage\":{\"text\":\"bom\"}}".to_vec())
        .send()
        .await
        .expect("send");
    assert_eq!(bom.status().as_u16(), 201);
    let a = post(doc("Shift_JIS", "x").into_bytes())
        .await
        .expect("send");
    assert_eq!(a.status().as_u16(), 400);
    assert!(a.text().await.unwrap_or_default().contains("Shift_JIS"));
}

/// A UTF-16 XML body labelled so (`charset=utf-16`, `utf-16le`, `utf-16be`, any case), as RFC
/// 7303 asks senders to, is read: with a byte order mark, and without one (.NET's
/// `StringContent(xml, Encoding.Unicode, "application/xml")` sends little-endian unmarked
/// under `utf-16`). JSON must be UTF-8 (RFC 8259): a JSON body labelled UTF-16 is `415`
/// saying so, and UTF-8 bytes labelled UTF-16 are `400` naming the label.
#[tokio::test]
async fn xml_labelled_utf16_is_read_and_json_so_labelled_is_415() {
    let srv = Server::default_for_tests();
    let sid = support::chat::connected_session(&srv, ALICE, &docs::session("u16", &[BOB])).await;
    let url = srv.urls().messages(ALICE, &sid);
    let doc = |decl: &str, text: &str| {
        format!(
            r#"{decl}<chat:chatMessage xmlns:chat="urn:oma:xml:rest:netapi:chat:1"><text>{text}</text></chat:chatMessage>"#
        )
    };
    let decl = r#"<?xml version="1.0" encoding="utf-16"?>"#;
    let le = |d: String| -> Vec<u8> { d.encode_utf16().flat_map(u16::to_le_bytes).collect() };
    let be = |d: String| -> Vec<u8> { d.encode_utf16().flat_map(u16::to_be_bytes).collect() };
    let marked =
        |bom: [u8; 2], bytes: Vec<u8>| -> Vec<u8> { bom.into_iter().chain(bytes).collect() };
    let cases: [(&str, Vec<u8>, &str); 6] = [
        (
            "application/xml; charset=utf-16",
            marked([0xFF, 0xFE], le(doc(decl, "marked le"))),
            "marked le",
        ),
        (
            "application/xml; charset=UTF-16",
            marked([0xFE, 0xFF], be(doc(decl, "marked be"))),
            "marked be",
        ),
        (
            "application/xml; charset=utf-16",
            le(doc(decl, "unmarked le, as .NET sends it")),
            "unmarked le, as .NET sends it",
        ),
        (
            "application/xml; charset=utf-16",
            be(doc("", "unmarked be, RFC 2781")),
            "unmarked be, RFC 2781",
        ),
        (
            "text/xml; charset=\"UTF-16LE\"",
            le(doc(decl, "labelled le é")),
            "labelled le é",
        ),
        (
            "application/xml;charset=utf-16be",
            be(doc(decl, "labelled be 𝄞")),
            "labelled be 𝄞",
        ),
    ];
    let http = reqwest::Client::new();
    let post = |content_type: &str, body: Vec<u8>| {
        http.post(&url)
            .bearer_auth(support::APP_TOKEN)
            .header("content-type", content_type)
            .header("accept", "application/xml")
            .body(body)
            .send()
    };
    for (content_type, body, text) in cases {
        let a = post(content_type, body).await.expect("send");
        let status = a.status().as_u16();
        let location = a
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert_eq!(
            status,
            201,
            "{content_type} {text}: {}",
            a.text().await.unwrap_or_default()
        );
        let m: netapi_chat_api::ChatMessage =
            send_empty("GET", &location, Format::Json).await.decode();
        assert_eq!(m.text, text, "{content_type}");
    }

    // UTF-8 bytes under a UTF-16 label: 400, naming the label, not a parse error in CJK.
    let a = post(
        "application/xml; charset=utf-16le",
        doc("", "utf-8 really").into_bytes(),
    )
    .await
    .expect("send");
    assert_eq!(a.status().as_u16(), 400);
    let text = a.text().await.unwrap_or_default();
    assert!(
        text.contains("SVC0002") && text.contains("utf-16le"),
        "{text}"
    );

    // JSON is UTF-8: labelled UTF-16, it is refused before it is read, saying why.
    let json: Vec<u8> =
        r#"{"chatMessage":{"text":"json"}}"#.encode_utf16().flat_map(u16::to_le_bytes).collect();
    for content_type in [
        "application/json; charset=utf-16",
        "application/json; charset=UTF-16LE",
        "application/vnd.oma+json; charset=utf-16be",
    ] {
        let a = post(content_type, json.clone()).await.expect("send");
        let answer = Answer {
            status: a.status().as_u16(),
            headers: a.headers().clone(),
            body: a.text().await.unwrap_or_default(),
        };
        let e = answer.assert_error(415, "POL0011", Format::Xml);
        let text = docs::rendered(&e);
        assert!(
            text.contains(content_type) && text.contains("JSON bodies must be UTF-8"),
            "{text}"
        );
    }
    let a = send_empty("GET", &url, Format::Json).await;
    let list: ChatMessageList = a.decode();
    assert_eq!(
        list.chat_message.len(),
        6,
        "only the XML bodies made messages"
    );
}

/// Markup inside a text field (`<text>a<b>bold</b>c</text>`, often a client that forgot to
/// escape user text) is refused with 400 SVC0002 naming both elements: reading only its text
/// would send `ac` on a 2xx. Nothing is sent; the escaped form goes through as written.
#[tokio::test]
async fn markup_inside_a_text_field_is_refused_not_dropped() {
    let srv = Server::default_for_tests();
    let sid = connected_session(&srv).await;
    let messages = srv.urls().messages(ALICE, &sid);
    let send_xml = async |text: &str| {
        post_raw(
            &messages,
            Format::Xml,
            Format::Xml,
            &format!("<chat:chatMessage {CHAT}><text>{text}</text></chat:chatMessage>"),
        )
        .await
    };
    let refused = send_xml("a<b>bold</b>c").await;
    let why = assert_invalid(&refused, "markup in text", Format::Xml);
    assert!(why.contains("`text`") && why.contains("`b`"), "{why}");
    let list = send(
        "GET",
        &srv.urls().messages(ALICE, &sid),
        &[("accept", "application/json")],
        None,
    )
    .await;
    let list: ChatMessageList = list.decode();
    assert!(list.chat_message.is_empty(), "{:?}", list.chat_message);
    let sent = send_xml("a&lt;b&gt;bold&lt;/b&gt;c").await;
    assert_eq!(sent.status, 201, "{}", sent.body);
}
