mod support;

// Content negotiation, black-box: the real server binary over real HTTP.
//
// Request bodies: JSON (`application/json`, `*+json`) or XML (`application/xml`, `text/xml`,
// `*+xml`), anything else 415. Responses: the format `Accept` asks for (q-values and wildcards
// honoured, JSON when absent, 406 when neither fits), `Vary: Accept` on every answer, and every
// error an OMA `requestError` in the negotiated format (XML ones validated against the XSD).

use netapi_chat_api::{ChatSessionInformation, ChatSessionList, ChatSubscription};
use netapi_chat_runtime::Format;
use std::time::{Duration, Instant};
use support::{Answer, Listener, Server, docs, send};

const ALICE: &str = "tel:+15551230001";
const CAROL: &str = "sip:carol@example.com";
/// The user the subscription checks run as (so that session events of the other users never
/// reach its dummy callback).
const DAVE: &str = "tel:+15551230009";

const SESSION_JSON: &str =
    r#"{"chatSessionInformation":{"participant":[{"address":"sip:bob@example.com"}]}}"#;
const SESSION_XML: &str = r#"<chat:chatSessionInformation xmlns:chat="urn:oma:xml:rest:netapi:chat:1"><participant><address>sip:bob@example.com</address></participant></chat:chatSessionInformation>"#;
const SUBSCRIPTION_JSON: &str =
    r#"{"chatSubscription":{"callbackReference":{"notifyURL":"http://127.0.0.1:10/notify"}}}"#;
const SUBSCRIPTION_XML: &str = r#"<chat:chatSubscription xmlns:chat="urn:oma:xml:rest:netapi:chat:1"><callbackReference><notifyURL>http://127.0.0.1:10/notify</notifyURL></callbackReference></chat:chatSubscription>"#;

/// The two ways an error is asked for in these tests: no `Accept` (→ JSON, or see
/// [`answered`]) and `Accept: application/xml` (→ XML).
const ASKS: [(Option<&str>, Format); 2] =
    [(None, Format::Json), (Some("application/xml"), Format::Xml)];

/// The format an ask of [`ASKS`] is answered in when the request's body is `content_type`:
/// with no `Accept`, an XML body is answered in XML (the spec's "no preference" decision).
fn answered(accept: Option<&str>, format: Format, content_type: Option<&str>) -> Format {
    match (accept, content_type) {
        (None, Some(ct)) if ct.contains("xml") => Format::Xml,
        _ => format,
    }
}

fn sessions(server: &Server, user: &str) -> String {
    server.urls().chat_sessions(user)
}

fn subscriptions(server: &Server, user: &str) -> String {
    server.urls().subscriptions(user)
}

/// Headers: the optional `Content-Type` then the optional `Accept`.
fn headers<'a>(content_type: Option<&'a str>, accept: Option<&'a str>) -> Vec<(&'a str, &'a str)> {
    let mut h = Vec::new();
    if let Some(ct) = content_type {
        h.push(("content-type", ct));
    }
    if let Some(a) = accept {
        h.push(("accept", a));
    }
    h
}

/// POSTs `body` with the given `Content-Type` / `Accept`.
async fn post(url: &str, content_type: Option<&str>, accept: Option<&str>, body: &str) -> Answer {
    send("POST", url, &headers(content_type, accept), Some(body)).await
}

/// GETs `url` with the given `Accept`.
async fn get(url: &str, accept: Option<&str>) -> Answer {
    send("GET", url, &headers(None, accept), None).await
}

/// Asserts that the answer says it varies with `Accept`.
#[track_caller]
fn assert_vary(a: &Answer) {
    let varies = a
        .headers
        .get_all(http::header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("accept") || t.trim() == "*");
    assert!(
        varies,
        "no `Vary: Accept` on a {} answer: {:?}",
        a.status, a.headers
    );
}

/// Asserts the answer is a body in `format` labelled with its own type, or its `text/` type
/// when `text` (`text/xml; charset=utf-8`), with `Vary: Accept`.
#[track_caller]
fn assert_labelled(a: &Answer, status: u16, format: Format, text: bool) {
    let label = match (format, text) {
        (_, false) => format.content_type(),
        (Format::Json, true) => "text/json; charset=utf-8",
        (Format::Xml, true) => "text/xml; charset=utf-8",
    };
    assert_eq!(a.status, status, "status; body: {}", a.body);
    assert_eq!(a.content_type(), label, "body: {}", a.body);
    assert_vary(a);
}

/// Asserts the answer is a body in `format`, with `Vary: Accept`.
#[track_caller]
fn assert_format(a: &Answer, status: u16, format: Format) {
    assert_eq!(a.status, status, "status; body: {}", a.body);
    assert!(
        a.content_type().starts_with(format.media_type()),
        "Content-Type {:?}, wanted {}; body: {}",
        a.content_type(),
        format.media_type(),
        a.body
    );
    assert_vary(a);
}

/// Asserts an OMA error (status, id, format, XSD-valid when XML, `Vary: Accept`) and returns
/// its text with the variables filled in, for checks on what it tells the client.
#[track_caller]
fn assert_error(a: &Answer, status: u16, message_id: &str, format: Format) -> String {
    let e = a.assert_error(status, message_id, format);
    assert_vary(a);
    docs::rendered(&e)
}

/// How many sessions `user` sees.
async fn session_count(server: &Server, user: &str) -> usize {
    let a = get(&sessions(server, user), None).await;
    assert_format(&a, 200, Format::Json);
    a.decode::<ChatSessionList>().chat_session_information.len()
}

/// Creates a session (JSON) and returns its URL.
async fn create_session(server: &Server, user: &str) -> String {
    let a = post(
        &sessions(server, user),
        Some("application/json"),
        None,
        SESSION_JSON,
    )
    .await;
    assert_format(&a, 201, Format::Json);
    a.header("location").to_owned()
}

#[tokio::test]
async fn request_content_types() {
    // Every accepted body invites bob again (issue 11 item 9 caps one inviter's unanswered
    // invitations to one invitee).
    let server = Server::start(&[("NETAPI_CHAT_MAX_PENDING_INVITATIONS_PER_INVITEE", "1000")]);
    let url = sessions(&server, ALICE);
    support::xsd_validate(SESSION_XML);
    support::xsd_validate(SUBSCRIPTION_XML);

    // Accepted: JSON and XML and their structured-syntax suffixes, parameters allowed.
    let accepted = [
        ("application/json", SESSION_JSON),
        ("application/json; charset=utf-8", SESSION_JSON),
        ("application/vnd.oma+json", SESSION_JSON),
        ("APPLICATION/JSON", SESSION_JSON),
        ("application/xml", SESSION_XML),
        ("application/xml; charset=UTF-8", SESSION_XML),
        ("text/xml", SESSION_XML),
        ("application/vnd.oma+xml", SESSION_XML),
    ];
    // No Accept: answered in the body's format (the spec's "no preference" decision).
    for (content_type, body) in accepted {
        let a = post(&url, Some(content_type), None, body).await;
        assert_eq!(a.status, 201, "Content-Type {content_type}: {}", a.body);
        let format = if body == SESSION_XML {
            Format::Xml
        } else {
            Format::Json
        };
        assert_format(&a, 201, format);
        let created: ChatSessionInformation = a.decode();
        assert_eq!(
            created.resource_url.as_deref(),
            Some(a.header("location")),
            "Content-Type {content_type}"
        );
        assert!(
            created
                .participant
                .iter()
                .any(|p| p.address == "sip:bob@example.com"),
            "Content-Type {content_type}: {}",
            a.body
        );
    }
    assert_eq!(session_count(&server, ALICE).await, accepted.len());

    // Subscriptions too, answered in the format asked for.
    let subs = subscriptions(&server, DAVE);
    for (content_type, body, accept, format) in [
        ("application/json", SUBSCRIPTION_JSON, None, Format::Json),
        (
            "application/vnd.oma+json",
            SUBSCRIPTION_JSON,
            Some("application/xml"),
            Format::Xml,
        ),
        (
            "application/xml",
            SUBSCRIPTION_XML,
            Some("application/json"),
            Format::Json,
        ),
        ("text/xml", SUBSCRIPTION_XML, None, Format::Xml),
        ("text/xml", SUBSCRIPTION_XML, Some("*/*"), Format::Xml),
        // What older JSON stacks send, as `text/xml` is for XML.
        (
            "text/json",
            SUBSCRIPTION_JSON,
            Some("text/json"),
            Format::Json,
        ),
        (
            "application/json",
            SUBSCRIPTION_JSON,
            Some("*/*"),
            Format::Json,
        ),
        (
            "application/vnd.oma+xml",
            SUBSCRIPTION_XML,
            Some("application/xml"),
            Format::Xml,
        ),
    ] {
        let a = post(&subs, Some(content_type), accept, body).await;
        assert_labelled(&a, 201, format, accept == Some("text/json"));
        let created: ChatSubscription = a.decode();
        assert_eq!(
            created.callback_reference.notify_url,
            "http://127.0.0.1:10/notify"
        );
        assert_eq!(created.resource_url.as_deref(), Some(a.header("location")));
    }

    // Refused with 415 POL0011, in the negotiated format; nothing is created.
    let refused: [(Option<&str>, &str); 7] = [
        (Some("text/plain"), SESSION_JSON),
        // A charset named twice: not read as either (it was the last, Latin-1 here, which a
        // proxy checking the first reads as another text).
        (
            Some("application/xml; charset=utf-8; charset=latin1"),
            SESSION_XML,
        ),
        (Some("application/x-www-form-urlencoded"), SESSION_JSON),
        (None, SESSION_JSON),
        (Some("application/*"), SESSION_JSON),
        (Some("application/json; charset=windows-1252"), SESSION_JSON),
        (Some("multipart/form-data; boundary=x"), SESSION_XML),
    ];
    for (content_type, body) in refused {
        for (accept, format) in ASKS {
            let a = post(&url, content_type, accept, body).await;
            let text = assert_error(&a, 415, "POL0011", format);
            if let Some(ct) = content_type {
                assert!(text.contains(ct), "415 text should quote {ct:?}: {text}");
            } else {
                assert!(text.contains("Content-Type"), "{text}");
            }
        }
    }
    let a = post(&subs, Some("text/plain"), Some("application/xml"), "x").await;
    assert_error(&a, 415, "POL0011", Format::Xml);
    // Two Content-Type fields, in either order: neither is read (a proxy in front may have
    // checked the other one), whichever the body is.
    for (first, second, body) in [
        ("application/json", "application/xml", SESSION_JSON),
        ("application/xml", "application/json", SESSION_JSON),
        ("application/xml", "application/xml", SESSION_XML),
    ] {
        let twice = [
            ("content-type", first),
            ("content-type", second),
            ("accept", "application/json"),
        ];
        let a = send("POST", &url, &twice, Some(body)).await;
        let text = assert_error(&a, 415, "POL0011", Format::Json);
        assert!(text.contains(first) && text.contains(second), "{text}");
    }
    assert_eq!(session_count(&server, ALICE).await, accepted.len());
    let a = get(&subs, None).await;
    assert_format(&a, 200, Format::Json);
    assert_eq!(
        a.decode::<netapi_chat_api::ChatSubscriptionList>()
            .chat_subscription
            .len(),
        8
    );
    // An error about an XML body, with no preference, is XML too.
    let a = post(&url, Some("application/xml"), None, "<chat:oops").await;
    assert_error(&a, 400, "SVC0002", Format::Xml);
    let a = post(&url, Some("application/xml"), Some("*/*"), "<chat:oops").await;
    assert_error(&a, 400, "SVC0002", Format::Xml);
}

#[tokio::test]
async fn accept_negotiation() {
    let server = Server::default_for_tests();
    let url = sessions(&server, ALICE);
    let session = create_session(&server, ALICE).await;

    // Each Accept, the format it gets, and whether the answer says the format's `text/` type.
    let cases: [(Option<&str>, Format); 20] = [
        (None, Format::Json),
        (Some(""), Format::Json),
        (Some("application/json"), Format::Json),
        (Some("application/xml"), Format::Xml),
        (Some("APPLICATION/XML"), Format::Xml),
        (Some("text/xml"), Format::Xml),
        (Some("application/json;q=0.5, application/xml"), Format::Xml),
        (
            Some("application/xml;q=0.4, application/json;q=0.9"),
            Format::Json,
        ),
        (Some("application/json;q=0, */*"), Format::Xml),
        (Some("text/*"), Format::Xml),
        (Some("*/*"), Format::Json),
        (Some("application/*"), Format::Json),
        (Some("text/html, application/xml;q=0.1"), Format::Xml),
        (Some("application/vnd.oma+xml"), Format::Xml),
        // Equal weights: the more specific range wins, then the one listed first.
        (Some("application/xml, */*"), Format::Xml),
        (Some("application/xml, application/*"), Format::Xml),
        (Some("application/xml, application/json"), Format::Xml),
        (Some("application/json, application/xml"), Format::Json),
        (Some("text/*, application/json"), Format::Json),
        // Spring's RestTemplate with JAXB registered first.
        (
            Some(
                "application/xml, text/xml, application/json, application/*+xml, \
                 application/*+json",
            ),
            Format::Xml,
        ),
    ];
    for (accept, format) in cases {
        // Only these weigh `text/xml` above `application/xml` (see the labelling test).
        let text = matches!(accept, Some("text/xml" | "text/*"));
        let a = get(&url, accept).await;
        assert_eq!(a.status, 200, "Accept {accept:?}: {}", a.body);
        assert_labelled(&a, 200, format, text);
        let list: ChatSessionList = a.decode();
        assert_eq!(list.chat_session_information.len(), 1, "Accept {accept:?}");

        let a = get(&session, accept).await;
        assert_labelled(&a, 200, format, text);
        let s: ChatSessionInformation = a.decode();
        assert_eq!(s.resource_url.as_deref(), Some(session.as_str()));
    }

    // Two Accept header lines count as one list.
    let a = send(
        "GET",
        &url,
        &[("accept", "text/html"), ("accept", "application/xml")],
        None,
    )
    .await;
    assert_format(&a, 200, Format::Xml);

    // Nothing acceptable: 406, as a JSON requestError (the request has no body).
    for accept in [
        "text/html",
        "*/*;q=0",
        "application/json;q=0, application/xml;q=0",
        "image/png, text/plain",
    ] {
        let a = get(&url, Some(accept)).await;
        let text = assert_error(&a, 406, "SVC0002", Format::Json);
        assert!(
            text.contains(accept),
            "406 text should quote {accept:?}: {text}"
        );
        assert!(text.contains("application/json") && text.contains("application/xml"));
        let a = get(&session, Some(accept)).await;
        assert_error(&a, 406, "SVC0002", Format::Json);
    }
}

#[tokio::test]
async fn not_acceptable_performs_nothing() {
    let server = Server::default_for_tests();
    let url = sessions(&server, ALICE);
    let session = create_session(&server, ALICE).await;
    assert_eq!(session_count(&server, ALICE).await, 1);

    // A create that could not be answered is not made, whatever the body format; the 406 is
    // in the body's format.
    for (accept, content_type, body, format) in [
        ("text/html", "application/json", SESSION_JSON, Format::Json),
        ("*/*;q=0", "application/xml", SESSION_XML, Format::Xml),
    ] {
        let a = post(&url, Some(content_type), Some(accept), body).await;
        assert_error(&a, 406, "SVC0002", format);
        assert_eq!(a.header("location"), "", "no Location on a 406");
    }
    assert_eq!(session_count(&server, ALICE).await, 1);

    // Nor a subscription.
    let subs = subscriptions(&server, DAVE);
    let a = post(
        &subs,
        Some("application/json"),
        Some("text/html"),
        SUBSCRIPTION_JSON,
    )
    .await;
    assert_error(&a, 406, "SVC0002", Format::Json);
    let a = get(&subs, None).await;
    assert_format(&a, 200, Format::Json);
    assert!(
        a.decode::<netapi_chat_api::ChatSubscriptionList>()
            .chat_subscription
            .is_empty()
    );

    // A delete that could not be answered does not end the session.
    let a = send("DELETE", &session, &[("accept", "text/html")], None).await;
    assert_error(&a, 406, "SVC0002", Format::Json);
    let a = get(&session, None).await;
    assert_format(&a, 200, Format::Json);
    assert_eq!(a.decode::<ChatSessionInformation>().ended, Some(false));

    // The same delete, acceptable: 204, with Vary too.
    let a = send("DELETE", &session, &[("accept", "application/xml")], None).await;
    assert_eq!(a.status, 204, "{}", a.body);
    assert!(a.body.is_empty());
    assert_vary(&a);
    // Deleted means gone (issue 11 item 4; it used to answer 200 with ended=true).
    let a = get(&session, Some("application/xml")).await;
    assert_error(&a, 404, "SVC2008", Format::Xml);
}

#[tokio::test]
async fn errors_in_negotiated_format() {
    let server = Server::default_for_tests();
    let url = sessions(&server, ALICE);
    let ns = "urn:oma:xml:rest:netapi:chat:1";

    // 400: bodies that do not decode, whichever format they are in and the error is asked in.
    let bad_bodies: Vec<(&str, String, &str)> = vec![
        (
            "application/json",
            r#"{"chatSessionInformation":"#.to_owned(),
            "JSON",
        ),
        ("application/json", "not json at all".to_owned(), "JSON"),
        (
            "application/json",
            r#"{"chatSessionInformation":{}}"#.to_owned(),
            "participant",
        ),
        (
            "application/json",
            r#"{"chatMessage":{"text":"hi"}}"#.to_owned(),
            "chatSessionInformation",
        ),
        (
            "application/xml",
            format!(r#"<chat:chatSessionInformation xmlns:chat="{ns}"><participant>"#),
            "malformed XML",
        ),
        ("application/xml", "<<<".to_owned(), "XML"),
        (
            "application/xml",
            format!(r#"<chat:chatMessage xmlns:chat="{ns}"><text>x</text></chat:chatMessage>"#),
            "wrong root element",
        ),
        (
            "application/xml",
            r#"<chat:chatSessionInformation xmlns:chat="urn:oma:xml:rest:netapi:wrong:1"><participant><address>sip:bob@example.com</address></participant></chat:chatSessionInformation>"#.to_owned(),
            "wrong root element",
        ),
        (
            "application/xml",
            "<chatSessionInformation><participant><address>sip:bob@example.com</address></participant></chatSessionInformation>".to_owned(),
            "wrong root element",
        ),
        (
            "text/xml",
            format!(r#"<chat:chatSessionInformation xmlns:chat="{ns}"></chat:chatSessionInformation>"#),
            "participant",
        ),
    ];
    for (content_type, body, hint) in &bad_bodies {
        for (accept, format) in ASKS {
            let a = post(&url, Some(content_type), accept, body).await;
            let format = answered(accept, format, Some(content_type));
            let text = assert_error(&a, 400, "SVC0002", format);
            assert!(
                text.contains(hint),
                "400 for {content_type} {body:?} should mention {hint:?}: {text}"
            );
        }
    }
    assert_eq!(session_count(&server, ALICE).await, 0);

    // 400: an invalid user in the path, or an invalid participant address.
    for (accept, format) in ASKS {
        let a = post(
            &sessions(&server, "alice"),
            Some("application/json"),
            accept,
            SESSION_JSON,
        )
        .await;
        assert_error(&a, 400, "SVC0004", format);
        let a = post(
            &url,
            Some("application/json"),
            accept,
            r#"{"chatSessionInformation":{"participant":[{"address":"bob"}]}}"#,
        )
        .await;
        assert_error(&a, 400, "SVC0004", format);
    }

    // 404: a session that does not exist (and one that exists for someone else).
    let session = create_session(&server, ALICE).await;
    let id = session.rsplit('/').next().expect("session id");
    for (accept, format) in ASKS {
        let a = get(&format!("{url}/sess-nope"), accept).await;
        let text = assert_error(&a, 404, "SVC2008", format);
        assert!(text.contains("sess-nope"), "{text}");
        let a = get(&format!("{}/{id}", sessions(&server, CAROL)), accept).await;
        assert_error(&a, 404, "SVC2008", format);
        let a = send(
            "DELETE",
            &format!("{url}/sess-nope"),
            &headers(None, accept),
            None,
        )
        .await;
        assert_error(&a, 404, "SVC2008", format);
    }

    // 405 on collections and on a session: `Allow` lists the methods that really work (HEAD
    // wherever GET is).
    let subs = subscriptions(&server, DAVE);
    for (target, allow) in [
        (url.clone(), "GET, HEAD, POST"),
        (subs.clone(), "GET, HEAD, POST"),
        (session.clone(), "GET, HEAD, DELETE"),
    ] {
        let refused: &[&str] = if allow == "GET, HEAD, POST" {
            &["PUT", "PATCH", "DELETE"]
        } else {
            &["PUT", "PATCH", "POST"]
        };
        for method in refused {
            for (accept, format) in ASKS {
                let a = send(
                    method,
                    &target,
                    &headers(Some("application/json"), accept),
                    Some(SESSION_JSON),
                )
                .await;
                let text = assert_error(&a, 405, "SVC0002", format);
                assert_eq!(a.header("allow"), allow, "{method} {target}");
                assert!(text.contains(method) && text.contains(allow), "{text}");
            }
        }
        let listed: Vec<&str> = allow.split(',').map(str::trim).collect();
        for method in listed {
            if method == "DELETE" {
                continue; // checked below, last, since it ends the session
            }
            let body = if target == subs {
                SUBSCRIPTION_JSON
            } else {
                SESSION_JSON
            };
            let a = send(
                method,
                &target,
                &[("content-type", "application/json")],
                Some(body),
            )
            .await;
            assert!(
                a.status < 400,
                "{method} {target} is in Allow but answers {}: {}",
                a.status,
                a.body
            );
        }
    }
    let a = send("DELETE", &session, &[], None).await;
    assert_eq!(a.status, 204, "DELETE is in Allow: {}", a.body);

    // 406 (JSON for a request without a body) and 415, side by side with the rest.
    let a = get(&url, Some("text/html")).await;
    assert_error(&a, 406, "SVC0002", Format::Json);
    for (accept, format) in ASKS {
        let a = post(&url, Some("text/plain"), accept, SESSION_JSON).await;
        assert_error(&a, 415, "POL0011", format);
    }
}

#[tokio::test]
async fn body_cap_is_413() {
    let server = Server::start(&[("NETAPI_CHAT_MAX_BODY_BYTES", "2048")]);
    let url = sessions(&server, ALICE);
    let subject = "x".repeat(4096);
    let big_json = format!(
        r#"{{"chatSessionInformation":{{"subject":"{subject}","participant":[{{"address":"sip:bob@example.com"}}]}}}}"#
    );
    let big_xml = format!(
        r#"<chat:chatSessionInformation xmlns:chat="urn:oma:xml:rest:netapi:chat:1"><subject>{subject}</subject><participant><address>sip:bob@example.com</address></participant></chat:chatSessionInformation>"#
    );
    for (content_type, body) in [
        ("application/json", &big_json),
        ("application/xml", &big_xml),
    ] {
        for (accept, format) in ASKS {
            let a = post(&url, Some(content_type), accept, body).await;
            let format = answered(accept, format, Some(content_type));
            let text = assert_error(&a, 413, "POL2004", format);
            assert!(
                text.contains("2048"),
                "413 text should give the limit: {text}"
            );
        }
    }
    assert_eq!(session_count(&server, ALICE).await, 0);

    // Under the cap, the same request works.
    let small = big_json.replace(&subject, "small");
    let a = post(
        &url,
        Some("application/json"),
        Some("application/xml"),
        &small,
    )
    .await;
    assert_format(&a, 201, Format::Xml);
    assert_eq!(
        a.decode::<ChatSessionInformation>().subject.as_deref(),
        Some("small")
    );
}

#[tokio::test]
async fn doctype_and_entities_refused() {
    let server = Server::default_for_tests();
    let url = sessions(&server, ALICE);
    // An external DTD or entity the server would have to fetch, if it fetched anything.
    let trap = Listener::start().await;

    let mut laughs =
        String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n<!ENTITY lol \"lol\">\n");
    let mut prev = "lol".to_owned();
    for i in 1..=9 {
        let name = format!("lol{i}");
        laughs.push_str(&format!(
            "<!ENTITY {name} \"{}\">\n",
            format!("&{prev};").repeat(10)
        ));
        prev = name;
    }
    laughs.push_str(&format!(
        "]>\n<chat:chatSessionInformation xmlns:chat=\"urn:oma:xml:rest:netapi:chat:1\"><subject>&{prev};</subject><participant><address>sip:bob@example.com</address></participant></chat:chatSessionInformation>"
    ));
    let body_with = |doctype: &str, subject: &str| {
        format!(
            r#"<?xml version="1.0"?>{doctype}<chat:chatSessionInformation xmlns:chat="urn:oma:xml:rest:netapi:chat:1"><subject>{subject}</subject><participant><address>sip:bob@example.com</address></participant></chat:chatSessionInformation>"#
        )
    };
    let doctypes = [
        laughs,
        body_with(
            r#"<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>"#,
            "&xxe;",
        ),
        body_with(
            &format!(r#"<!DOCTYPE x [<!ENTITY xxe SYSTEM "{}">]>"#, trap.url),
            "&xxe;",
        ),
        body_with(&format!(r#"<!DOCTYPE x SYSTEM "{}">"#, trap.url), "hello"),
        body_with(
            &format!(r#"<!DOCTYPE x [<!ENTITY % p SYSTEM "{}"> %p;]>"#, trap.url),
            "hello",
        ),
        body_with("<!DOCTYPE chatSessionInformation>", "harmless"),
    ];
    for body in &doctypes {
        for content_type in ["application/xml", "text/xml"] {
            for (accept, format) in ASKS {
                let started = Instant::now();
                let a = post(&url, Some(content_type), accept, body).await;
                let took = started.elapsed();
                let format = answered(accept, format, Some(content_type));
                let text = assert_error(&a, 400, "SVC0002", format);
                assert!(
                    text.contains("DOCTYPE"),
                    "the refusal should name the DOCTYPE: {text}"
                );
                assert!(
                    !a.body.contains("root:"),
                    "file contents leaked: {}",
                    a.body
                );
                assert!(took < Duration::from_secs(2), "took {took:?}");
            }
        }
    }

    // Entities that are not predefined are refused without any DOCTYPE too.
    for subject in ["&foo;", "a &xxe; b", "&lol9;"] {
        for (accept, format) in ASKS {
            let a = post(
                &url,
                Some("application/xml"),
                accept,
                &body_with("", subject),
            )
            .await;
            let format = answered(accept, format, Some("application/xml"));
            let text = assert_error(&a, 400, "SVC0002", format);
            let name = subject
                .split('&')
                .nth(1)
                .and_then(|s| s.split(';').next())
                .expect("entity name");
            assert!(
                text.contains(&format!("&{name};")),
                "the refusal should name &{name};: {text}"
            );
        }
    }
    assert_eq!(session_count(&server, ALICE).await, 0);
    trap.assert_count_stays(0, Duration::from_millis(200)).await;

    // The predefined entities and character references are fine.
    let a = post(
        &url,
        Some("application/xml"),
        Some("application/xml"),
        &body_with("", "a&amp;b &lt;&gt;&quot;&apos; &#233;&#x263A;"),
    )
    .await;
    assert_format(&a, 201, Format::Xml);
    assert_eq!(
        a.decode::<ChatSessionInformation>().subject.as_deref(),
        Some("a&b <>\"' é☺")
    );
}

#[tokio::test]
async fn percent_encoded_user_ids() {
    let server = Server::default_for_tests();
    for (encoded, address, sent_as) in [
        (
            "tel%3A%2B15551230001",
            "tel:+15551230001",
            "tel%3A%2B15551230001",
        ),
        (
            "sip%3Aalice%40example.com",
            "sip:alice@example.com",
            "sip%3Aalice%40example.com",
        ),
        // Lower-case hex digits name the same user; the server answers in its own form.
        (
            "sip%3Aerin%40example.com",
            "sip:erin@example.com",
            "sip%3aerin%40example.com",
        ),
    ] {
        let collection = format!("{}/v1/chat/{encoded}/chatSessions", server.base);
        let sent_to = format!("{}/v1/chat/{sent_as}/chatSessions", server.base);
        for (content_type, body, accept, format) in [
            ("application/json", SESSION_JSON, None, Format::Json),
            (
                "application/xml",
                SESSION_XML,
                Some("application/xml"),
                Format::Xml,
            ),
        ] {
            let a = post(&sent_to, Some(content_type), accept, body).await;
            assert_format(&a, 201, format);
            let location = a.header("location").to_owned();
            let prefix = format!("{collection}/");
            assert!(
                location.starts_with(&prefix),
                "Location {location} should start with {prefix}"
            );
            let created: ChatSessionInformation = a.decode();
            assert_eq!(created.resource_url.as_deref(), Some(location.as_str()));
            assert_eq!(created.originator_address.as_deref(), Some(address));
            let me = created
                .participant
                .iter()
                .find(|p| p.address == address)
                .expect("the originator is a participant");
            assert_eq!(
                me.resource_url.as_deref(),
                Some(format!("{location}/participants/{encoded}").as_str())
            );
            let bob = created
                .participant
                .iter()
                .find(|p| p.address == "sip:bob@example.com")
                .expect("bob is a participant");
            assert_eq!(
                bob.resource_url.as_deref(),
                Some(format!("{location}/participants/sip%3Abob%40example.com").as_str())
            );

            // The URL handed out works.
            let a = get(&location, accept).await;
            assert_format(&a, 200, format);
            let a = get(&format!("{location}/participants/{encoded}"), accept).await;
            assert_format(&a, 200, format);
        }
        let a = get(&collection, None).await;
        assert_format(&a, 200, Format::Json);
        let list: ChatSessionList = a.decode();
        assert_eq!(list.chat_session_information.len(), 2, "{encoded}");
        assert_eq!(list.resource_url, collection);

        // Subscriptions too.
        let subs = format!("{}/v1/chat/{sent_as}/subscriptions", server.base);
        let a = post(&subs, Some("application/json"), None, SUBSCRIPTION_JSON).await;
        assert_format(&a, 201, Format::Json);
        let location = a.header("location").to_owned();
        let prefix = format!("{}/v1/chat/{encoded}/subscriptions/", server.base);
        assert!(location.starts_with(&prefix), "{location}");
        assert_eq!(
            a.decode::<ChatSubscription>().resource_url.as_deref(),
            Some(location.as_str())
        );
        let a = send("DELETE", &location, &[], None).await;
        assert_eq!(a.status, 204, "{}", a.body);
        assert_vary(&a);
    }
}

/// An answer is labelled with a type the client listed: `text/xml` (`text/json`) when its
/// `Accept` weighs that above the format's own type, else the format's own type; on a list,
/// a read, a create and on errors alike, whoever writes them (a handler, the request gate).
#[tokio::test]
async fn answers_are_labelled_with_a_type_the_client_listed() {
    let server = Server::default_for_tests();
    let url = sessions(&server, ALICE);
    let session = create_session(&server, ALICE).await;
    let unrouted = format!("{}/v1/chat/nothing-here", server.base);
    for (i, (accept, label)) in [
        ("text/xml", "text/xml; charset=utf-8"),
        ("text/*", "text/xml; charset=utf-8"),
        ("application/xml;q=0.5, text/xml", "text/xml; charset=utf-8"),
        (
            "text/xml, application/json;q=0.5",
            "text/xml; charset=utf-8",
        ),
        (
            "text/xml, application/xml",
            "application/xml; charset=utf-8",
        ),
        ("text/xml, */*", "application/xml; charset=utf-8"),
        // A strict client that refuses application/xml and takes text/xml.
        ("text/xml, application/xml;q=0", "text/xml; charset=utf-8"),
        ("application/soap+xml", "application/xml; charset=utf-8"),
        ("text/json", "text/json; charset=utf-8"),
        ("application/json", "application/json; charset=utf-8"),
    ]
    .into_iter()
    .enumerate()
    {
        let format = if label.contains("xml") {
            Format::Xml
        } else {
            Format::Json
        };
        let list = get(&url, Some(accept)).await;
        let read = get(&session, Some(accept)).await;
        // Another invitee each time: a few unanswered invitations to one are the limit.
        let invite = SESSION_JSON.replace("bob@", &format!("bob{i}@"));
        let created = post(&url, Some("application/json"), Some(accept), &invite).await;
        let missing = get(&format!("{url}/no-such-session"), Some(accept)).await;
        let unauthorized = send(
            "GET",
            &url,
            &[("accept", accept), ("authorization", "")],
            None,
        )
        .await;
        let gate = get(&unrouted, Some(accept)).await;
        for (what, a, status) in [
            ("list", &list, 200),
            ("read", &read, 200),
            ("create", &created, 201),
            ("404", &missing, 404),
            ("401", &unauthorized, 401),
            ("gate's 404", &gate, 404),
        ] {
            assert_eq!(a.status, status, "{what}, Accept {accept:?}: {}", a.body);
            assert_eq!(
                a.content_type(),
                label,
                "{what}, Accept {accept:?}: {}",
                a.body
            );
            assert_vary(a);
        }
        let _: ChatSessionList = list.decode();
        let _: ChatSessionInformation = read.decode();
        for (a, id) in [(&missing, "SVC2008"), (&unauthorized, "SVC2003")] {
            let e: netapi_chat_api::RequestError = a.decode();
            let told = e.service_exception.map(|x| x.message_id);
            assert_eq!(told.as_deref(), Some(id), "{format:?}: {}", a.body);
        }
    }
}

#[tokio::test]
async fn openapi_document_is_published() {
    let server = Server::default_for_tests();
    let a = get(&format!("{}/openapi.json", server.base), None).await;
    assert_eq!(a.status, 200);
    assert!(
        a.content_type().starts_with("application/json"),
        "{}",
        a.content_type()
    );
    let mut served: serde_json::Value = serde_json::from_str(&a.body).expect("JSON");
    let mut published: serde_json::Value =
        serde_json::from_str(netapi_chat_api::OPENAPI_JSON).expect("published JSON");
    // The checked-in document, but for `servers`: this server, where a client generated from
    // the served document sends its requests (not the checked-in 127.0.0.1:8080).
    assert_eq!(
        served["servers"],
        serde_json::json!([{ "url": server.base, "description": "this server" }])
    );
    served["servers"] = serde_json::Value::Null;
    published["servers"] = serde_json::Value::Null;
    assert_eq!(served, published);
    assert!(
        served["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3."))
    );
    let create = &served["paths"]["/v1/chat/{userId}/chatSessions"]["post"];
    assert!(create["requestBody"]["content"]["application/xml"].is_object());
    assert!(create["requestBody"]["content"]["application/json"].is_object());
    assert!(create["responses"]["201"]["content"]["application/xml"].is_object());
    let root = &served["components"]["schemas"]["ChatMessageRoot"];
    assert!(root["properties"]["chatMessage"].is_object(), "{root}");
}

/// Paths no route matches, and path bytes that are not UTF-8, are answered before the API
/// runs, and still as an OMA `requestError` in the negotiated format, with `Vary: Accept`: a
/// 404 `SVC2008` naming the path, a 400 `SVC0002`. Never a 5xx, never dropshot's own JSON
/// (an XSD name that is not one of the two was answered so: an outside review).
#[tokio::test]
async fn paths_without_a_route_get_oma_errors() {
    let server = Server::default_for_tests();
    for (accept, format) in ASKS {
        for path in [
            server.url(ALICE, "/nothingHere"),
            format!(
                "{}/chat/V1/{}/subscriptions",
                server.base, "tel%3A%2B15551230001"
            ),
            format!("{}/nowhere", server.base),
            // Under a route, with nothing there (the XSDs are two files).
            format!("{}/xsd/nowhere.xsd", server.base),
        ] {
            let a = get(&path, accept).await;
            let text = assert_error(&a, 404, "SVC2008", format);
            assert!(
                text.contains("nothingHere")
                    || text.contains("/chat/V1/")
                    || text.contains("/nowhere"),
                "{text}"
            );
            assert_vary(&a);
        }
        let a = get(&format!("{}/v1/chat/%FF/chatSessions", server.base), accept).await;
        assert_error(&a, 400, "SVC0002", format);
        assert_vary(&a);
    }
}

/// A request with no body at all where a document is required is `400 SVC0002` saying the body
/// is missing (it was `415`, about a Content-Type the client had no body to label); a body
/// without a Content-Type stays `415`.
#[tokio::test]
async fn a_missing_body_is_400_and_an_unlabelled_one_415() {
    let server = Server::default_for_tests();
    let url = subscriptions(&server, "tel:+15551230001");
    for accept in ["application/json", "application/xml"] {
        let a = send("POST", &url, &[("accept", accept)], None).await;
        let format = if accept.ends_with("json") {
            Format::Json
        } else {
            Format::Xml
        };
        let text = assert_error(&a, 400, "SVC0002", format);
        assert!(text.contains("request body is required"), "{text}");
        let a = send("POST", &url, &[("accept", accept)], Some("{}")).await;
        assert_error(&a, 415, "POL0011", format);
    }
}

/// A body in the charset its `Content-Type` names: Apache HttpClient's
/// `ContentType.APPLICATION_XML` is `application/xml; charset=ISO-8859-1`, so a Java client
/// sends Latin-1 bytes under it (and JSON, `application/json; charset=ISO-8859-1`). They are
/// read as such, and for XML the header wins over the document's declaration (RFC 7303): a
/// UTF-8 body declared `ISO-8859-1` but sent as `charset=utf-8` reads as UTF-8, not `Ã©`.
#[tokio::test]
async fn a_body_is_read_in_the_charset_its_content_type_names() {
    let server = Server::default_for_tests();
    let urls = server.urls();
    let client = reqwest::Client::new();
    let post = async |content_type: &str, body: Vec<u8>| {
        let r = client
            .post(urls.chat_sessions(ALICE))
            .bearer_auth(support::APP_TOKEN)
            .header("content-type", content_type)
            .header("accept", "application/json")
            .body(body)
            .send()
            .await
            .expect("sent");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        (status, text)
    };
    let latin1 = |s: &str| -> Vec<u8> {
        s.chars()
            .map(|c| u8::try_from(u32::from(c)).expect("Latin-1"))
            .collect()
    };
    let xml = |decl: &str, subject: &str| {
        format!(
            "<?xml version=\"1.0\" encoding=\"{decl}\"?><chat:chatSessionInformation \
             xmlns:chat=\"urn:oma:xml:rest:netapi:chat:1\"><subject>{subject}</subject>\
             <participant><address>sip:bob@example.com</address></participant>\
             </chat:chatSessionInformation>"
        )
    };
    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend_from_slice(
        r#"{"chatSessionInformation":{"subject":"café","participant":[{"address":"sip:bob@example.com"}]}}"#
            .as_bytes(),
    );
    let cases: [(&str, Vec<u8>); 5] = [
        // A UTF-8 byte order mark says UTF-8, whatever the header says.
        ("application/json; charset=ISO-8859-1", bom),
        (
            "application/xml; charset=ISO-8859-1",
            latin1(&xml("UTF-8", "café")),
        ),
        (
            "application/xml; charset=ISO-8859-1",
            latin1(&xml("ISO-8859-1", "café")),
        ),
        (
            "application/xml; charset=utf-8",
            xml("ISO-8859-1", "café").into_bytes(),
        ),
        (
            "application/json; charset=ISO-8859-1",
            latin1(
                r#"{"chatSessionInformation":{"subject":"café","participant":[{"address":"sip:bob@example.com"}]}}"#,
            ),
        ),
    ];
    for (content_type, body) in cases {
        let (status, text) = post(content_type, body).await;
        assert_eq!(status, 201, "{content_type}: {text}");
        let s: ChatSessionInformation =
            netapi_chat_runtime::wire::decode(Format::Json, text.as_bytes(), &Default::default())
                .expect("a session");
        assert_eq!(s.subject.as_deref(), Some("café"), "{content_type}");
    }
    // US-ASCII must be ASCII.
    let (status, text) = post(
        "application/json; charset=us-ascii",
        latin1(r#"{"chatSessionInformation":{"subject":"café","participant":[{"address":"sip:bob@example.com"}]}}"#),
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("SVC0002") && text.contains("US-ASCII"),
        "{text}"
    );
}

/// `body` gzip-compressed, in one stored (uncompressed) deflate block: a valid gzip stream
/// (RFC 1952) without a compression library.
fn gzip_stored(body: &[u8]) -> Vec<u8> {
    let crc = body.iter().fold(!0u32, |crc, byte| {
        (0..8).fold(crc ^ u32::from(*byte), |c, _| {
            (c >> 1) ^ (0xEDB8_8320 & (c & 1).wrapping_neg())
        })
    }) ^ !0u32;
    let len = u16::try_from(body.len()).expect("one stored block");
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff, 0x01];
    out.extend(len.to_le_bytes());
    out.extend((!len).to_le_bytes());
    out.extend(body);
    out.extend(crc.to_le_bytes());
    out.extend(u32::try_from(body.len()).expect("small").to_le_bytes());
    out
}

/// Asserts that the subscriptions at `url` (a user's list) are none: a refused create made
/// nothing.
async fn assert_no_subscription(url: &str) {
    let a = get(url, None).await;
    assert!(
        a.decode::<netapi_chat_api::ChatSubscriptionList>()
            .chat_subscription
            .is_empty(),
        "nothing made: {}",
        a.body
    );
}

/// A body with a transfer coding besides `chunked` is `501 SVC0002` (RFC 9112 §6.1), in the
/// negotiated format, the connection closed, nothing made. Before, hyper read the chunked
/// framing and the server took the rest as a plain body: `gzip, chunked` around a plain
/// document was served (an outside review).
#[tokio::test]
async fn a_transfer_coding_besides_chunked_is_501() {
    let server = Server::default_for_tests();
    let url = subscriptions(&server, DAVE);
    let path = url.trim_start_matches(&server.base).to_owned();
    for (accept, format) in [
        ("application/json", Format::Json),
        ("application/xml", Format::Xml),
    ] {
        let body = SUBSCRIPTION_JSON;
        let chunked = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
        let mut conn = support::KeptAlive::connect(&server.base);
        let (head, text) = conn
            .request(
                "POST",
                &path,
                "HTTP/1.1",
                &[
                    "Content-Type: application/json",
                    "Transfer-Encoding: gzip, chunked",
                    &format!("Accept: {accept}"),
                ],
                &chunked,
            )
            .expect("an answer");
        assert!(head.starts_with("http/1.1 501"), "{head}");
        let a = Answer {
            status: 501,
            headers: http::HeaderMap::from_iter(head.lines().filter_map(|l| {
                let (k, v) = l.split_once(':')?;
                Some((
                    http::HeaderName::from_bytes(k.trim().as_bytes()).ok()?,
                    http::HeaderValue::from_str(v.trim()).ok()?,
                ))
            })),
            body: text,
        };
        let text = assert_error(&a, 501, "SVC0002", format);
        assert!(text.contains("gzip, chunked"), "{text}");
        assert!(
            conn.closed_by_server(),
            "the unread body ends the connection"
        );
    }
    assert_no_subscription(&url).await;
}

/// A body with a `Content-Encoding` other than identity is `415 POL0011` with
/// `Accept-Encoding: identity` (RFC 9110 §15.5.16), in the negotiated format, and nothing is
/// made: a gzip body used to get a misleading `400 "not valid UTF-8"`, and an unknown coding
/// was read as if there were none. `identity` (any case) is the body as sent.
#[tokio::test]
async fn a_content_coding_other_than_identity_is_415() {
    let server = Server::default_for_tests();
    let url = subscriptions(&server, DAVE);
    let client = reqwest::Client::new();
    let post = async |content_type: &str, coding: &str, accept: Option<&str>, body: Vec<u8>| {
        let mut request = client
            .post(&url)
            .bearer_auth(support::APP_TOKEN)
            .header("content-type", content_type)
            .header("content-encoding", coding)
            .body(body);
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        let r = request.send().await.expect("sent");
        Answer {
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            body: r.text().await.unwrap_or_default(),
        }
    };
    let xml = SUBSCRIPTION_XML.as_bytes().to_vec();
    let json = SUBSCRIPTION_JSON.as_bytes().to_vec();
    for (content_type, coding, accept, body, format) in [
        (
            "application/xml",
            "gzip",
            None,
            gzip_stored(&xml),
            Format::Xml,
        ),
        (
            "application/json",
            "gzip",
            Some("application/xml"),
            gzip_stored(&json),
            Format::Xml,
        ),
        (
            "application/json",
            "GZIP",
            None,
            gzip_stored(&json),
            Format::Json,
        ),
        ("application/xml", "br", None, xml.clone(), Format::Xml),
        (
            "application/xml",
            "x-unknown-coding",
            None,
            xml.clone(),
            Format::Xml,
        ),
        (
            "application/json",
            "identity, gzip",
            None,
            json.clone(),
            Format::Json,
        ),
    ] {
        let a = post(content_type, coding, accept, body).await;
        let text = assert_error(&a, 415, "POL0011", format);
        assert!(
            text.contains(&format!("Content-Encoding `{coding}`")),
            "{coding}: {text}"
        );
        assert_eq!(a.header("accept-encoding"), "identity", "{coding}");
    }
    assert_no_subscription(&url).await;

    // identity is the body as sent.
    for (content_type, coding, body) in [
        ("application/xml", "identity", xml.clone()),
        ("application/json", "Identity", json.clone()),
    ] {
        let a = post(content_type, coding, None, body).await;
        assert_eq!(a.status, 201, "{coding}: {}", a.body);
    }
}

/// When nothing in `Accept` is JSON or XML, the `406` is written in the request body's format
/// (an XML-only client reads why it failed), else JSON; so is an error the gate answers first
/// (no route) to such a request. It used to be JSON always.
#[tokio::test]
async fn a_406_is_in_the_request_body_s_format() {
    let server = Server::default_for_tests();
    let subs = subscriptions(&server, DAVE);
    for (content_type, body, format) in [
        (Some("application/xml"), SUBSCRIPTION_XML, Format::Xml),
        (
            Some("text/xml; charset=utf-8"),
            SUBSCRIPTION_XML,
            Format::Xml,
        ),
        (Some("application/json"), SUBSCRIPTION_JSON, Format::Json),
        // A body in neither format: JSON.
        (Some("text/plain"), SUBSCRIPTION_XML, Format::Json),
    ] {
        for accept in [
            "text/html",
            "application/xml;q=0, application/json;q=0",
            "*/*;q=0",
        ] {
            let a = post(&subs, content_type, Some(accept), body).await;
            let text = assert_error(&a, 406, "SVC0002", format);
            assert!(text.contains(accept), "{content_type:?} {accept}: {text}");
        }
    }
    // A GET has no body: JSON.
    let a = get(&subs, Some("text/html")).await;
    assert_error(&a, 406, "SVC0002", Format::Json);
    let a = get(&subs, None).await;
    assert!(
        a.decode::<netapi_chat_api::ChatSubscriptionList>()
            .chat_subscription
            .is_empty(),
        "nothing made: {}",
        a.body
    );
    // No route for the path: the gate's 404, in the same format.
    let a = post(
        &format!("{}/nowhere", server.base),
        Some("application/xml"),
        Some("text/html"),
        SUBSCRIPTION_XML,
    )
    .await;
    assert_error(&a, 404, "SVC2008", Format::Xml);
}
