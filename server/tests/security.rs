//! Who may act for whom, and callbacks that must not become a way in: authentication (401 /
//! 403 / `acr:auth`), two users with two tokens probing each other's resources, refused
//! callback addresses (each class, a DNS name resolving to loopback, a redirect), and signed
//! notifications a receiver verifies.

mod support;

use netapi_chat::signing::{Signer, WebhookHeaders};
use netapi_chat_api::*;
use netapi_chat_runtime::Format;
use std::time::Duration;
use support::{
    APP_TOKEN, Listener, Server, chat, docs, enc, send, send_authorized, send_doc, user_token,
};

const ALICE: &str = "sip:alice@example.com";
const BOB: &str = "sip:bob@example.com";
const MALLORY: &str = "sip:mallory@example.com";
const FORMATS: [Format; 2] = [Format::Json, Format::Xml];

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Sends `doc` (or nothing) as `token`'s holder, in `format`.
async fn as_user<T: netapi_chat_runtime::wire::Document>(
    token: &str,
    method: &str,
    url: &str,
    format: Format,
    doc: Option<&T>,
) -> support::Answer {
    let auth = bearer(token);
    let body =
        doc.map(|d| String::from_utf8(netapi_chat_runtime::wire::encode(format, d)).unwrap());
    let mut headers = vec![
        ("authorization", auth.as_str()),
        ("accept", format.media_type()),
    ];
    if body.is_some() {
        headers.push(("content-type", format.media_type()));
    }
    send(method, url, &headers, body.as_deref()).await
}

fn session_with(invitee: &str) -> ChatSessionInformation {
    docs::session("secret plans", &[invitee])
}

#[tokio::test]
async fn requests_without_valid_credentials_get_401_with_a_challenge() {
    let srv = Server::default_for_tests();
    for f in FORMATS {
        let url = srv.urls().chat_sessions(ALICE);
        for auth in [
            "",
            "Bearer",
            "Basic YWxpY2U6c2VjcmV0",
            "Bearer not-a-known-token-at-all",
            "Bearer a b",
        ] {
            let a = send_authorized("GET", &url, auth, f).await;
            let e = a.assert_error(401, "SVC2003", f);
            assert!(
                a.header("www-authenticate")
                    .starts_with("Bearer realm=\"netapi-chat\""),
                "{auth:?}: {:?}",
                a.headers
            );
            // OMA Common's "invalid access token", a serviceException.
            assert!(e.service_exception.is_some());
        }
        // Nothing is created without credentials.
        let a = send(
            "POST",
            &url,
            &[("authorization", ""), ("content-type", f.media_type())],
            Some(
                &String::from_utf8(netapi_chat_runtime::wire::encode(f, &session_with(BOB)))
                    .unwrap(),
            ),
        )
        .await;
        assert_eq!(a.status, 401);
    }
    let list: ChatSessionList = as_user::<ChatMessage>(
        APP_TOKEN,
        "GET",
        &srv.urls().chat_sessions(ALICE),
        Format::Json,
        None,
    )
    .await
    .decode();
    assert!(
        list.chat_session_information.is_empty(),
        "the refused creates made nothing"
    );
}

#[tokio::test]
async fn a_token_acts_only_for_its_own_users_and_acr_auth_is_its_user() {
    let srv = Server::default_for_tests();
    let alice = user_token(ALICE);
    for f in FORMATS {
        // Alice's token on Bob's path: 403, whatever the resource.
        for url in [
            srv.urls().chat_sessions(BOB),
            srv.urls().subscriptions(BOB),
            srv.urls().messages(BOB, "x"),
        ] {
            as_user::<ChatMessage>(&alice, "GET", &url, f, None)
                .await
                .assert_error(403, "POL0001", f);
        }
        // acr:auth is Alice.
        let a = as_user(
            &alice,
            "POST",
            &srv.urls().chat_sessions("acr:auth"),
            f,
            Some(&session_with(BOB)),
        )
        .await;
        assert_eq!(a.status, 201, "{}", a.body);
        let s: ChatSessionInformation = a.decode();
        assert_eq!(s.originator_address.as_deref(), Some(ALICE));
        assert!(
            a.header("location").contains(&enc(ALICE)),
            "resource URLs name the real user"
        );
        // The application token (*) has no user of its own for acr:auth.
        as_user::<ChatMessage>(
            APP_TOKEN,
            "GET",
            &srv.urls().chat_sessions("acr:auth"),
            f,
            None,
        )
        .await
        .assert_error(403, "POL0001", f);
    }
}

#[tokio::test]
async fn two_users_with_two_tokens_cannot_reach_each_others_resources() {
    let srv = Server::default_for_tests();
    let (alice, mallory) = (user_token(ALICE), user_token(MALLORY));
    let l = Listener::start().await;
    for f in FORMATS {
        // Alice: a subscription, a session with Bob (accepted), a message.
        let sub: ChatSubscription = as_user(
            &alice,
            "POST",
            &srv.urls().subscriptions(ALICE),
            f,
            Some(&docs::subscription(&l.url)),
        )
        .await
        .decode();
        let sub_id = sub
            .resource_url
            .unwrap_or_default()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let a = as_user(
            &alice,
            "POST",
            &srv.urls().chat_sessions(ALICE),
            f,
            Some(&session_with(BOB)),
        )
        .await;
        let sid = a
            .header("location")
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let bob = user_token(BOB);
        let st = ParticipantSessionStatus {
            status: ParticipantStatus::Connected,
        };
        let status_url = srv.urls().participant_status(BOB, &sid, BOB);
        assert_eq!(
            as_user(&bob, "POST", &status_url, f, Some(&st))
                .await
                .status,
            200
        );
        let msg = ChatMessage {
            text: "for Bob only".into(),
            success_report: None,
            report_request: vec![],
            client_correlator: None,
            sender_address: None,
            date_time: None,
            resource_url: None,
        };
        let m = as_user(
            &alice,
            "POST",
            &srv.urls().messages(ALICE, &sid),
            f,
            Some(&msg),
        )
        .await;
        let mid = m
            .header("location")
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();

        // Mallory, with her own valid token, knows every id.
        let urls = srv.urls();
        let ids: [&dyn Fn(&str) -> String; 8] = [
            &|user| urls.subscription(user, &sub_id),
            &|user| urls.session(user, &sid),
            &|user| urls.participants(user, &sid),
            &|user| urls.participant(user, &sid, ALICE),
            &|user| urls.participant_status(user, &sid, ALICE),
            &|user| urls.messages(user, &sid),
            &|user| urls.message(user, &sid, &mid),
            &|user| urls.message_status(user, &sid, &mid),
        ];
        for url in ids {
            // Through her own path: 404, like an id that does not exist.
            let a = as_user::<ChatMessage>(&mallory, "GET", &url(MALLORY), f, None).await;
            a.assert_error(404, "SVC2008", f);
            assert!(
                !a.body.contains("secret plans")
                    && !a.body.contains("for Bob only")
                    && !a.body.contains("alice"),
                "{}",
                a.body
            );
            // Through Alice's path: 403.
            as_user::<ChatMessage>(&mallory, "GET", &url(ALICE), f, None)
                .await
                .assert_error(403, "POL0001", f);
        }
        // Changes are refused the same way, and change nothing.
        for url in [
            srv.urls().subscription(MALLORY, &sub_id),
            srv.urls().session(MALLORY, &sid),
        ] {
            as_user::<ChatMessage>(&mallory, "DELETE", &url, f, None)
                .await
                .assert_error(404, "SVC2008", f);
        }
        as_user(
            &mallory,
            "POST",
            &srv.urls().messages(MALLORY, &sid),
            f,
            Some(&msg),
        )
        .await
        .assert_error(404, "SVC2008", f);
        as_user::<ChatMessage>(
            &alice,
            "GET",
            &srv.urls().subscription(ALICE, &sub_id),
            f,
            None,
        )
        .await
        .decode::<ChatSubscription>();
        let s: ChatSessionInformation =
            as_user::<ChatMessage>(&alice, "GET", &srv.urls().session(ALICE, &sid), f, None)
                .await
                .decode();
        assert_eq!(s.ended, Some(false));
    }
}

/// Subscribes ALICE to `url` in `f`, which must be refused `400 SVC0002`: the refusal's
/// variables, as one text.
async fn refused_subscription(srv: &Server, f: Format, url: &str) -> String {
    let a = send_doc(
        "POST",
        &srv.urls().subscriptions(ALICE),
        f,
        &docs::subscription(url),
    )
    .await;
    let e = a.assert_error(400, "SVC0002", f);
    e.service_exception
        .map(|x| x.variables.join(" "))
        .unwrap_or_default()
}

/// A public host's port of a service that is not HTTP (the Fetch standard's bad ports), or
/// port 0, is no callback target: a notification's lines are client text, which a line-based
/// service (SMTP, IRC) would read as commands from this server. Refused with loopback allowed
/// too (the harness's setting), and nothing is created.
#[tokio::test]
async fn callback_ports_of_other_services_are_refused() {
    let srv = Server::start(&[]);
    for f in FORMATS {
        for url in [
            "http://1.1.1.1:25/notify",
            "http://1.1.1.1:0/notify",
            "https://1.1.1.1:22/notify",
            "http://127.0.0.1:6667/notify",
            "http://[2606:4700::1111]:587/notify",
        ] {
            let text = refused_subscription(&srv, f, url).await;
            assert!(text.contains("notifyURL port"), "{url}: {text}");
        }
    }
    let list = support::send(
        "GET",
        &srv.urls().subscriptions(ALICE),
        &[("accept", "application/json")],
        None,
    )
    .await;
    assert_eq!(list.status, 200, "{}", list.body);
    assert!(!list.body.contains("notifyURL"), "{}", list.body);
    // An HTTP port is taken, on a public host as on loopback.
    for url in ["http://1.1.1.1:8080/notify", "http://127.0.0.1:10/notify"] {
        let a = send_doc(
            "POST",
            &srv.urls().subscriptions(ALICE),
            Format::Json,
            &docs::subscription(url),
        )
        .await;
        assert_eq!(a.status, 201, "{url}: {}", a.body);
    }
}

#[tokio::test]
async fn callback_addresses_that_lead_inside_are_refused() {
    // Loopback is refused here (the harness allows it elsewhere).
    let srv = Server::start(&[("NETAPI_CHAT_CALLBACK_ALLOW_LOOPBACK", "0")]);
    for f in FORMATS {
        for url in [
            "http://127.0.0.1:10/notify",
            "http://[::1]:10/notify",
            "http://localhost:10/notify",
            "http://10.0.0.5/notify",
            "http://192.168.1.1/notify",
            "http://172.16.0.1/notify",
            "http://169.254.169.254/latest/meta-data/",
            "http://[fe80::1]/notify",
            "http://224.0.0.1/notify",
            "http://0.0.0.0/notify",
            "http://[::ffff:127.0.0.1]/notify",
            "http://2130706433/notify",
            "ftp://example.com/notify",
            "file:///etc/passwd",
            "http://user:pass@example.com/notify",
        ] {
            let text = refused_subscription(&srv, f, url).await;
            assert!(text.contains("notifyURL"), "{url}: {text}");
        }
    }
    // A DNS name (not `localhost`) that resolves to loopback: this machine's host name, which
    // /etc/hosts maps to 127.0.0.1 here.
    let (host, resolved) = support::host_name_addresses().await;
    assert!(
        !host.is_empty() && !resolved.is_empty() && resolved.iter().all(|a| a.ip().is_loopback()),
        "this test needs the host name {host:?} to resolve to loopback (it does in /etc/hosts here): {resolved:?}"
    );
    let a = send_doc(
        "POST",
        &srv.urls().subscriptions(ALICE),
        Format::Json,
        &docs::subscription(&format!("http://{host}:10/n")),
    )
    .await;
    let e = a.assert_error(400, "SVC0002", Format::Json);
    let text = e
        .service_exception
        .map(|x| x.variables.join(" "))
        .unwrap_or_default();
    // Refused like the literal, and without naming the address (no DNS oracle, issue 11).
    assert!(text.contains("not an allowed callback host"), "{text}");
    assert!(!text.contains("127.0.0.1"), "{text}");
}

/// A callback that answers `307` with a `Location` (here another listener's URL: an internal
/// address an attacker would name) is a failed attempt, and the redirect is never followed.
/// (Before an outside review, the `307` carried no `Location`, so a client that followed
/// redirects passed too.)
#[tokio::test]
async fn redirects_from_a_callback_are_not_followed() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let srv = Server::start(&[("NETAPI_CHAT_RETRY_SCHEDULE", "0,50ms")]);
    let (target, inviter) = (Listener::start().await, Listener::start().await);
    // Bob's callback: reads each request whole and answers 307 to the target.
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let redirecting = format!("http://{}/notify", socket.local_addr().expect("addr"));
    let answer = format!(
        "HTTP/1.1 307 Temporary Redirect\r\nLocation: {}\r\nContent-Length: 0\r\n\
         Connection: close\r\n\r\n",
        target.url
    );
    let attempts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = attempts.clone();
    let receiver = tokio::spawn(async move {
        while let Ok((mut stream, _)) = socket.accept().await {
            let mut request = Vec::new();
            let mut buf = [0u8; 16 * 1024];
            // The head, then its Content-Length of body.
            let whole = loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break false,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
                let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length: usize = text[..end]
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if request.len() >= end + 4 + length {
                        break true;
                    }
                }
            };
            if whole {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = stream.write_all(answer.as_bytes()).await;
            }
        }
    });
    let json = Format::Json;
    chat::subscribe_with(&srv, BOB, &docs::subscription(&redirecting), json).await;
    chat::subscribe_with(&srv, ALICE, &docs::subscription(&inviter.url), json).await;
    chat::start_session(&srv, ALICE, &session_with(BOB)).await;
    let made = || attempts.load(std::sync::atomic::Ordering::SeqCst);
    support::within_20s(Duration::from_millis(20), async || match made() {
        2 => Ok(()),
        n => Err(format!("{n} attempts")),
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    receiver.abort();
    assert_eq!(
        made(),
        2,
        "two attempts, each a failure (the schedule has two)"
    );
    assert!(target.all().is_empty(), "the redirect was followed");
}

/// The operator's opt-in: one server-wide secret (`NETAPI_CHAT_WEBHOOK_SECRET`) signs the
/// notifications of every subscription whose client sent none.
#[tokio::test]
async fn every_notification_is_signed_and_a_receiver_can_verify_it() {
    let (signer, secret) = Signer::generate();
    let srv = Server::start(&[("NETAPI_CHAT_WEBHOOK_SECRET", secret.as_str())]);
    let (la, lb) = (Listener::start().await, Listener::start().await);
    send_doc(
        "POST",
        &srv.urls().subscriptions(ALICE),
        Format::Json,
        &docs::subscription(&la.url),
    )
    .await;
    let mut xml_sub = docs::subscription(&lb.url);
    xml_sub.callback_reference.notification_format = Some(NotificationFormat::Xml);
    send_doc(
        "POST",
        &srv.urls().subscriptions(BOB),
        Format::Json,
        &xml_sub,
    )
    .await;
    chat::connected_session(&srv, ALICE, &session_with(BOB)).await;
    let got: Vec<support::Received> = [la.wait_for(1).await, lb.wait_for(1).await].concat();
    let now = netapi_chat::store::now_ms() / 1000;
    for r in &got {
        let h = WebhookHeaders {
            id: &r.id,
            timestamp: &r.timestamp,
            signature: &r.signature,
        };
        signer
            .verify(&h, r.body.as_bytes(), now, 300)
            .unwrap_or_else(|e| panic!("{} does not verify: {e}", r.kind()));
        // A tampered body does not.
        let tampered = r.body.replacen("sip", "sop", 1);
        assert!(
            signer.verify(&h, tampered.as_bytes(), now, 300).is_err(),
            "tampered {} verified",
            r.kind()
        );
        // Nor does another secret.
        let (other, _) = Signer::generate();
        assert!(other.verify(&h, r.body.as_bytes(), now, 300).is_err());
    }
}

/// The published OpenAPI declares, on both faces' callbacks, the headers every notification
/// carries, so that a receiver generated from the document reads them: each declared header
/// arrives, in the declared form, and nothing the server sends for verification is undeclared.
#[tokio::test]
async fn the_published_callbacks_declare_the_headers_every_notification_carries() {
    let doc: serde_json::Value =
        serde_json::from_str(netapi_chat_api::OPENAPI_JSON).expect("published OpenAPI");
    let mut callbacks = Vec::new();
    for item in doc["paths"].as_object().expect("paths").values() {
        if let Some(cbs) = item["post"]["callbacks"].as_object() {
            for cb in cbs.values().filter_map(|c| c.as_object()) {
                callbacks.extend(cb.values().map(|expr| expr["post"].clone()));
            }
        }
    }
    assert_eq!(
        callbacks.len(),
        2,
        "the seed face's and the OMA 2012 face's"
    );
    let declared = |post: &serde_json::Value| -> Vec<(String, String)> {
        post["parameters"]
            .as_array()
            .expect("callback parameters")
            .iter()
            .map(|p| {
                let name = p["$ref"].as_str().expect("a shared parameter");
                let p = doc
                    .pointer(name.trim_start_matches('#'))
                    .expect("it resolves");
                assert_eq!(p["in"], "header");
                assert_eq!(p["required"], true);
                let pattern = p["schema"]["pattern"].as_str().unwrap_or("").to_owned();
                (p["name"].as_str().expect("a name").to_owned(), pattern)
            })
            .collect()
    };
    let seed = declared(&callbacks[0]);
    assert_eq!(seed, declared(&callbacks[1]));
    let names: Vec<&str> = seed.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["webhook-id", "webhook-timestamp", "webhook-signature"]
    );

    let srv = Server::default_for_tests();
    let listener = Listener::start().await;
    send_doc(
        "POST",
        &srv.urls().subscriptions(ALICE),
        Format::Json,
        &docs::subscription(&listener.url),
    )
    .await;
    session_with_notifications(&srv).await;
    let r = &listener.wait_for(1).await[0];
    // The declared patterns, by hand (no regex engine in the tests): `^msg_[0-9]+$` and
    // `^[0-9]+$`.
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    assert_eq!(seed[0].1, "^msg_[0-9]+$");
    assert!(r.id.strip_prefix("msg_").is_some_and(digits), "{}", r.id);
    assert_eq!(seed[1].1, "^[0-9]+$");
    assert!(digits(&r.timestamp), "{}", r.timestamp);
    assert!(r.signature.starts_with("v1,"), "{}", r.signature);
}

/// Verifies a received notification with `secret` (at `now`, 5 minutes' tolerance).
fn verifies(r: &support::Received, secret: &str) -> bool {
    let h = WebhookHeaders {
        id: &r.id,
        timestamp: &r.timestamp,
        signature: &r.signature,
    };
    let now = netapi_chat::store::now_ms() / 1000;
    Signer::from_secret(secret)
        .expect("a secret")
        .verify(&h, r.body.as_bytes(), now, 300)
        .is_ok()
}

/// Starts a session from ALICE with BOB; both get a notification (an invitation for BOB, and
/// BOB's acceptance for ALICE).
async fn session_with_notifications(srv: &Server) {
    chat::connected_session(srv, ALICE, &session_with(BOB)).await;
}

/// Issue 13 item 4: without a server-wide secret each subscription signs with its own, made by
/// the server (shown once, in the create's answer) or sent by the client; each application
/// verifies its own notifications and not the other's.
#[tokio::test]
async fn each_application_verifies_only_its_own_notifications() {
    let srv = Server::default_for_tests();
    let (la, lb) = (Listener::start().await, Listener::start().await);
    let a = send_doc(
        "POST",
        &srv.url(ALICE, "/subscriptions"),
        Format::Json,
        &docs::subscription(&la.url),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let alice: ChatSubscription = a.decode();
    let alice_secret = alice
        .signing_secret
        .clone()
        .expect("a secret in the answer");
    assert!(alice_secret.starts_with("whsec_"));
    // Never shown again.
    let read = support::send_empty(
        "GET",
        &alice.resource_url.clone().unwrap_or_default(),
        Format::Json,
    )
    .await;
    assert!(!read.body.contains("whsec_"), "{}", read.body);
    // Bob's application brings its own, in XML.
    let (_, bob_secret) = Signer::generate();
    let mut doc = docs::subscription(&lb.url);
    doc.signing_secret = Some(bob_secret.clone());
    doc.callback_reference.notification_format = Some(NotificationFormat::Xml);
    let b = send_doc("POST", &srv.url(BOB, "/subscriptions"), Format::Xml, &doc).await;
    assert_eq!(b.status, 201, "{}", b.body);
    let bob: ChatSubscription = b.decode();
    assert_eq!(bob.signing_secret.as_deref(), Some(bob_secret.as_str()));
    // A secret that is not one is refused.
    let mut bad = docs::subscription(&lb.url);
    bad.signing_secret = Some("whsec_dG9vIHNob3J0".into());
    let e = send_doc("POST", &srv.url(BOB, "/subscriptions"), Format::Json, &bad).await;
    e.assert_error(400, "SVC0002", Format::Json);

    session_with_notifications(&srv).await;
    let (ra, rb) = (la.wait_for(1).await, lb.wait_for(1).await);
    assert!(
        verifies(&ra[0], &alice_secret),
        "alice's with alice's secret"
    );
    assert!(!verifies(&ra[0], &bob_secret), "alice's with bob's secret");
    assert!(verifies(&rb[0], &bob_secret), "bob's with bob's secret");
    assert!(
        !verifies(&rb[0], &alice_secret),
        "bob's with alice's secret"
    );
}

/// The same on the OMA 2012 face: a `chatNotificationSubscription` may bring its own
/// `signingSecret` (it was accepted and ignored, so a receiver checking with the secret it
/// sent refused every notification, and the subscription ended disabled), and one without
/// gets the secret made for it in the create's answer (it was never shown), once.
#[tokio::test]
async fn an_oma_2012_subscription_brings_or_is_given_its_secret() {
    let srv = Server::default_for_tests();
    let (la, lb) = (Listener::start().await, Listener::start().await);
    let (_, alice_secret) = Signer::generate();
    let subscribe = |user: &'static str, url: String, secret: Option<String>, f: Format| {
        let srv = &srv;
        async move {
            let doc = ChatNotificationSubscription {
                callback_reference: CallbackReference {
                    notify_url: url,
                    callback_data: None,
                    notification_format: None,
                },
                client_correlator: None,
                confirmed_chat_supported: None,
                adhoc_chat_supported: None,
                duration: None,
                resource_url: None,
                signing_secret: secret,
            };
            let a = send_doc("POST", &srv.urls().oma2012_subscriptions(user), f, &doc).await;
            assert_eq!(a.status, 201, "{}", a.body);
            a.decode::<ChatNotificationSubscription>()
        }
    };
    let alice = subscribe(
        ALICE,
        la.url.clone(),
        Some(alice_secret.clone()),
        Format::Xml,
    )
    .await;
    assert_eq!(alice.signing_secret.as_deref(), Some(alice_secret.as_str()));
    let bob = subscribe(BOB, lb.url.clone(), None, Format::Json).await;
    let bob_secret = bob.signing_secret.clone().expect("the secret made for it");
    assert!(bob_secret.starts_with("whsec_"), "{bob_secret}");
    let read = support::send_empty(
        "GET",
        &bob.resource_url.clone().unwrap_or_default(),
        Format::Json,
    )
    .await;
    assert!(!read.body.contains("whsec_"), "shown once: {}", read.body);

    session_with_notifications(&srv).await;
    let (ra, rb) = (la.wait_for(1).await, lb.wait_for(1).await);
    assert!(
        verifies(&ra[0], &alice_secret),
        "alice's with the secret she sent"
    );
    assert!(
        verifies(&rb[0], &bob_secret),
        "bob's with the secret he was given"
    );
    assert!(
        !verifies(&rb[0], &alice_secret),
        "bob's with alice's secret"
    );
}

/// A rotated secret: the answer echoes the new one and gives the end of the window; during it every
/// notification verifies with the old secret and with the new one; after it, only with the
/// new one. Another user cannot rotate it (404), and a bad secret is refused (400).
#[tokio::test]
async fn a_rotated_secret_verifies_with_both_during_the_window() {
    let srv = Server::start(&[("NETAPI_CHAT_WEBHOOK_ROTATION_WINDOW", "1500ms")]);
    let (la, lb) = (Listener::start().await, Listener::start().await);
    let a = send_doc(
        "POST",
        &srv.url(ALICE, "/subscriptions"),
        Format::Json,
        &docs::subscription(&la.url),
    )
    .await;
    let alice: ChatSubscription = a.decode();
    let old = alice.signing_secret.clone().expect("a secret");
    let b = send_doc(
        "POST",
        &srv.url(BOB, "/subscriptions"),
        Format::Json,
        &docs::subscription(&lb.url),
    )
    .await;
    assert_eq!(b.status, 201);
    let sub_id = alice
        .resource_url
        .clone()
        .unwrap_or_default()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let rotate_url = srv.url(ALICE, &format!("/subscriptions/{sub_id}/secret"));
    let (_, new) = Signer::generate();
    let ask = SubscriptionSecret {
        signing_secret: new.clone(),
        previous_secret_expires: None,
    };
    // Not Bob's to rotate, and a bad secret is refused.
    let other = srv.url(BOB, &format!("/subscriptions/{sub_id}/secret"));
    assert_eq!(
        send_doc("POST", &other, Format::Json, &ask).await.status,
        404
    );
    let bad = SubscriptionSecret {
        signing_secret: "nope".into(),
        previous_secret_expires: None,
    };
    send_doc("POST", &rotate_url, Format::Xml, &bad)
        .await
        .assert_error(400, "SVC0002", Format::Xml);

    let r = send_doc("POST", &rotate_url, Format::Xml, &ask).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let rotated: SubscriptionSecret = r.decode();
    assert_eq!(rotated.signing_secret, new, "the new secret is echoed");
    assert_ne!(new, old);
    assert!(rotated.previous_secret_expires.is_some());

    session_with_notifications(&srv).await;
    let got = la.wait_for(1).await;
    assert!(verifies(&got[0], &old), "old secret during the window");
    assert!(verifies(&got[0], &new), "new secret during the window");
    assert_eq!(
        got[0].signature.split(' ').count(),
        2,
        "{}",
        got[0].signature
    );

    // After the window only the new one signs.
    tokio::time::sleep(Duration::from_millis(1700)).await;
    session_with_notifications(&srv).await;
    let got = la.wait_for(2).await;
    assert!(verifies(&got[1], &new), "new secret after the window");
    assert!(!verifies(&got[1], &old), "old secret after the window");

    // Again, in JSON: the window is told again.
    let (_, next) = Signer::generate();
    let ask = SubscriptionSecret {
        signing_secret: next.clone(),
        previous_secret_expires: None,
    };
    let r = send_doc("POST", &rotate_url, Format::Json, &ask).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let rotated: SubscriptionSecret = r.decode();
    assert_eq!(rotated.signing_secret, next);
    assert!(rotated.previous_secret_expires.is_some());
}
