//! Durable state and at-least-once delivery, against the real binary: a SIGKILL in the middle
//! of a message burst, a callback that is down for a while, a restart with an invitation
//! pending, `clientCorrelator` replays in both formats, and `410 Gone` (the subscription is
//! disabled).

mod support;

use netapi_chat_api::*;
use netapi_chat_runtime::Format;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use support::docs::{self, last_segment};
use support::{Listener, Server, chat, send_doc, send_empty, within};

const A: &str = "tel:+15551230001";
const B: &str = "sip:bob@example.com";
const C: &str = "tel:+15551230003";

async fn subscribe(
    srv: &Server,
    user: &str,
    l: &Listener,
    format: Format,
    correlator: Option<&str>,
) -> ChatSubscription {
    let doc = ChatSubscription {
        client_correlator: correlator.map(str::to_owned),
        ..docs::subscription_to(&l.url, user, format)
    };
    chat::subscribe_with(srv, user, &doc, format).await
}

fn session_doc(invitees: &[&str], correlator: Option<&str>) -> ChatSessionInformation {
    ChatSessionInformation {
        client_correlator: correlator.map(str::to_owned),
        ..docs::session("durable", invitees)
    }
}

/// A session started by `A` with every invitee connected; returns its id.
async fn connected_session(srv: &Server, invitees: &[&str]) -> String {
    chat::connected_session(srv, A, &session_doc(invitees, None)).await
}

fn message(text: &str, correlator: Option<&str>) -> ChatMessage {
    ChatMessage {
        client_correlator: correlator.map(str::to_owned),
        ..docs::message(text)
    }
}

/// Message notifications received: (webhook-id, messageId).
fn message_notifications(l: &Listener) -> Vec<(String, String)> {
    l.all()
        .iter()
        .filter(|r| r.kind() == "messageNotification")
        .map(|r| {
            let id = r.decode::<MessageNotification>().message_id;
            (
                r.id.clone(),
                id.expect("a message's notification has its messageId"),
            )
        })
        .collect()
}

/// Waits (up to 10 s) for the first notification of `kind` at `l`.
/// Waits (within 20 s) until the resource at `url` is gone: its GET is `404`.
async fn until_gone(url: &str) {
    within(
        Duration::from_secs(20),
        Duration::from_millis(50),
        async || match send_empty("GET", url, Format::Json).await.status {
            404 => Ok(()),
            s => Err(format!("{url} still answers {s}")),
        },
    )
    .await;
}

async fn first_of_kind(l: &Listener, kind: &str) -> support::Received {
    within(
        Duration::from_secs(10),
        Duration::from_millis(50),
        async || {
            if let Some(r) = l.all().into_iter().find(|r| r.kind() == kind) {
                return Ok(r);
            }
            Err(format!("no {kind} at {}: {:#?}", l.url, l.all()))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_a_burst_loses_nothing_committed() {
    let env = [(
        "NETAPI_CHAT_RETRY_SCHEDULE",
        "0,100ms,200ms,500ms,1s,2s,2s,2s",
    )];
    let srv = Server::start(&env);
    let listeners = [
        Listener::start().await,
        Listener::start().await,
        Listener::start().await,
    ];
    let users = [A, B, C];
    for (u, l) in users.iter().zip(&listeners) {
        subscribe(&srv, u, l, Format::Json, None).await;
    }
    let sid = connected_session(&srv, &[B, C]).await;

    // Three senders, 400 messages each; the server is killed once 500 have been answered.
    let answered = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let url = srv.urls().messages(user, &sid);
        let answered = answered.clone();
        let user = user.to_string();
        tasks.push(tokio::spawn(async move {
            let client = support::http_client(support::APP_TOKEN);
            let mut ok = Vec::new();
            let mut in_doubt = Vec::new();
            for n in 0..400 {
                let text = format!("{i}-{n}");
                let body =
                    serde_json::to_string(&ChatMessageRoot::from(message(&text, None))).unwrap();
                let sent = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().as_u16() == 201 => {
                        let loc = r
                            .headers()
                            .get("location")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        ok.push((user.clone(), text, last_segment(&loc)));
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) => panic!("unexpected status {} for {text}", r.status()),
                    Err(_) => {
                        in_doubt.push(text);
                        break;
                    }
                }
            }
            (ok, in_doubt)
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while answered.load(Ordering::SeqCst) < 500 {
        assert!(
            Instant::now() < deadline,
            "the burst stalled before 500 answers"
        );
        assert!(
            !tasks.iter().all(|t| t.is_finished()),
            "every sender stopped before 500 answers"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let dir = srv.kill();
    let mut ok = Vec::new();
    let mut in_doubt = Vec::new();
    for t in tasks {
        let (o, d) = t.await.unwrap();
        ok.extend(o);
        in_doubt.extend(d);
    }
    assert!(
        ok.len() >= 500 && ok.len() < 1200,
        "the kill landed mid-burst: {} answered",
        ok.len()
    );

    let srv = Server::restart(dir, &env);
    // Every message that got a 201 is stored and readable by its sender.
    for (user, text, mid) in &ok {
        let a = send_empty("GET", &srv.urls().message(user, &sid, mid), Format::Json).await;
        assert_eq!(
            a.status, 200,
            "message {text} ({mid}) was answered 201 but is gone: {}",
            a.body
        );
        assert_eq!(&a.decode::<ChatMessage>().text, text);
    }
    // The list is paged (issue 12 item 4): walk it by its next links.
    let mut stored: BTreeSet<String> = BTreeSet::new();
    let mut url = Some(srv.urls().messages(A, &sid));
    while let Some(u) = url {
        let list: ChatMessageList = send_empty("GET", &u, Format::Json).await.decode();
        stored.extend(
            list.chat_message
                .iter()
                .map(|m| last_segment(m.resource_url.as_deref().unwrap_or_default())),
        );
        url = list
            .link
            .iter()
            .find(|l| l.rel == "next")
            .map(|l| l.href.clone());
    }
    assert!(
        stored.len() >= ok.len() && stored.len() <= ok.len() + in_doubt.len(),
        "stored {} answered {} in doubt {}",
        stored.len(),
        ok.len(),
        in_doubt.len()
    );

    // Every stored message reaches both other participants at least once, under one id each.
    let expected = 2 * stored.len();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let distinct: BTreeSet<String> = listeners
            .iter()
            .flat_map(message_notifications)
            .map(|(id, _)| id)
            .collect();
        if distinct.len() >= expected || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut ids_per_delivery: BTreeMap<(usize, String), BTreeSet<String>> = BTreeMap::new();
    let mut distinct = BTreeSet::new();
    for (i, l) in listeners.iter().enumerate() {
        for (id, mid) in message_notifications(l) {
            assert!(
                stored.contains(&mid),
                "notification {id} for message {mid}, which was never committed"
            );
            ids_per_delivery
                .entry((i, mid))
                .or_default()
                .insert(id.clone());
            distinct.insert(id);
        }
    }
    assert_eq!(
        distinct.len(),
        expected,
        "distinct notification ids = 2 × stored messages"
    );
    assert_eq!(
        ids_per_delivery.len(),
        expected,
        "each (recipient, message) pair notified"
    );
    assert!(
        ids_per_delivery.values().all(|ids| ids.len() == 1),
        "a redelivery keeps its id"
    );
}

#[tokio::test]
async fn a_callback_that_was_down_gets_everything_in_order_with_the_same_ids() {
    let srv = Server::start(&[(
        "NETAPI_CHAT_RETRY_SCHEDULE",
        "0,200ms,400ms,800ms,1s,1s,1s,1s,1s,1s",
    )]);
    let (la, lb) = (Listener::start().await, Listener::start().await);
    subscribe(&srv, A, &la, Format::Json, None).await;
    subscribe(&srv, B, &lb, Format::Xml, None).await;
    let sid = connected_session(&srv, &[B]).await;
    let _invitation = lb.wait_for(1).await;

    lb.set_down(true);
    let url = srv.urls().messages(A, &sid);
    for n in 0..5 {
        assert_eq!(
            send_doc("POST", &url, Format::Json, &message(&format!("m{n}"), None))
                .await
                .status,
            201
        );
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let refused = lb.refused_ids();
    assert!(
        !refused.is_empty(),
        "deliveries were attempted while the callback was down"
    );
    lb.set_down(false);

    let got = lb.wait_for(6).await;
    let messages: Vec<(String, String)> = got[1..].iter().map(|r| r.id_and_text()).collect();
    let texts: Vec<&str> = messages.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(
        texts,
        ["m0", "m1", "m2", "m3", "m4"],
        "in the order they were sent"
    );
    let delivered: BTreeSet<&String> = messages.iter().map(|(id, _)| id).collect();
    assert_eq!(delivered.len(), 5);
    for id in &refused {
        assert!(
            delivered.contains(id),
            "refused attempt {id} was later delivered under the same id"
        );
    }
    lb.assert_count_stays(6, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_pending_invitation_times_out_on_schedule_across_a_restart() {
    let env = [("NETAPI_CHAT_INVITATION_TIMEOUT_SECS", "2")];
    let srv = Server::start(&env);
    let (la, lb) = (Listener::start().await, Listener::start().await);
    subscribe(&srv, A, &la, Format::Json, None).await;
    subscribe(&srv, B, &lb, Format::Json, None).await;
    let created = Instant::now();
    let sid = chat::start_session(&srv, A, &session_doc(&[B], None)).await;
    lb.wait_for(1).await;

    let dir = srv.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let srv = Server::restart(dir, &env);

    let n = la.nth(1).await;
    let elapsed = created.elapsed();
    let event: ChatEventNotification = n.decode();
    assert_eq!(event.event_type, EventType::Timeout);
    assert_eq!(event.session_id, sid);
    assert!(
        elapsed >= Duration::from_millis(1900),
        "timed out too early: {elapsed:?}"
    );
    // B's invitation may come twice (delivered before the kill, but not yet forgotten: at
    // least once); the Timeout event follows it.
    let n: ChatEventNotification = first_of_kind(&lb, "chatEventNotification").await.decode();
    assert_eq!(n.event_type, EventType::Timeout);
    let gone = send_empty("GET", &srv.urls().session(B, &sid), Format::Json).await;
    assert_eq!(
        gone.status, 404,
        "the session is invalid for the invitee after the timeout"
    );
}

/// Deadlines that passed while the server was down fire at the restart in the order they fell
/// due, as if it had stayed up: an invitation's timeout due before a subscription's expiry
/// reaches that subscription, then its cancellation notice comes (they raced: the expiry ran
/// first, and the subscription never got the `Timeout`: the timers review of 2026-12-07).
#[tokio::test]
async fn deadlines_passed_while_down_fire_in_the_order_they_fell_due() {
    let env = [("NETAPI_CHAT_INVITATION_TIMEOUT_SECS", "2")];
    let srv = Server::start(&env);
    let (lasting, expiring) = (Listener::start().await, Listener::start().await);
    subscribe(&srv, C, &lasting, Format::Json, None).await;
    let doc = ChatSubscription {
        duration: Some(4),
        ..docs::subscription_to(&expiring.url, C, Format::Xml)
    };
    chat::subscribe_with(&srv, C, &doc, Format::Xml).await;
    let sid = chat::start_session(&srv, A, &session_doc(&[C], None)).await;
    expiring.wait_for(1).await;
    let dir = srv.kill();
    // Both deadlines pass while the server is down (the timeout at 2 s, the expiry at 4 s).
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let _srv = Server::restart(dir, &env);
    first_of_kind(&expiring, "subscriptionCancellationNotification").await;
    let kinds: Vec<String> = expiring
        .all()
        .iter()
        .map(|r| r.kind().to_owned())
        .filter(|k| k != "sessionInvitationNotification")
        .collect();
    assert_eq!(
        kinds,
        [
            "chatEventNotification",
            "subscriptionCancellationNotification"
        ],
        "{:#?}",
        expiring.all()
    );
    let timeout: ChatEventNotification = first_of_kind(&expiring, "chatEventNotification")
        .await
        .decode();
    assert_eq!(timeout.event_type, EventType::Timeout);
    assert_eq!(timeout.session_id, sid);
    let told: ChatEventNotification = first_of_kind(&lasting, "chatEventNotification")
        .await
        .decode();
    assert_eq!(told.event_type, EventType::Timeout);
}

async fn correlator_replays(format: Format) {
    let srv = Server::default_for_tests();
    let (la, lb) = (Listener::start().await, Listener::start().await);
    let first = subscribe(&srv, A, &la, format, Some("sub-1")).await;
    let again = subscribe(&srv, A, &la, format, Some("sub-1")).await;
    let (s1, s2) = (first, again);
    assert_eq!(
        s1.resource_url, s2.resource_url,
        "[{format:?}] same subscription"
    );
    let list: ChatSubscriptionList = send_empty("GET", &srv.urls().subscriptions(A), format)
        .await
        .decode();
    assert_eq!(list.chat_subscription.len(), 1);
    // The same correlator with another callback is a conflict (409 SVC0005, naming it), not
    // the first subscription answered as if the new callback had been registered.
    let other = ChatSubscription {
        client_correlator: Some("sub-1".to_owned()),
        ..docs::subscription_to(&lb.url, A, format)
    };
    let a = send_doc("POST", &srv.urls().subscriptions(A), format, &other).await;
    let e = a.assert_error(409, "SVC0005", format);
    assert_eq!(
        e.service_exception.map(|x| x.variables),
        Some(vec!["sub-1".to_owned()])
    );
    let kept: ChatSubscription = send_empty("GET", s1.resource_url.as_deref().unwrap(), format)
        .await
        .decode();
    assert_eq!(
        kept.callback_reference.notify_url, la.url,
        "[{format:?}] unchanged"
    );
    // The same request giving a signing key: one the subscription was made with answers it,
    // another one is a conflict (its receiver would refuse what the first key signs).
    let keyed = |secret: &str, correlator: &str| ChatSubscription {
        client_correlator: Some(correlator.to_owned()),
        signing_secret: Some(secret.to_owned()),
        ..docs::subscription_to(&la.url, A, format)
    };
    const KEY: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const OTHER_KEY: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    let subs = srv.urls().subscriptions(A);
    let made = send_doc("POST", &subs, format, &keyed(KEY, "sub-keyed")).await;
    assert_eq!(made.status, 201, "{}", made.body);
    let again = send_doc("POST", &subs, format, &keyed(KEY, "sub-keyed")).await;
    assert_eq!(again.status, 201, "{}", again.body);
    assert_eq!(again.header("location"), made.header("location"));
    let other = send_doc("POST", &subs, format, &keyed(OTHER_KEY, "sub-keyed")).await;
    other.assert_error(409, "SVC0005", format);
    subscribe(&srv, B, &lb, format, None).await;

    let url = srv.urls().chat_sessions(A);
    let one = send_doc("POST", &url, format, &session_doc(&[B], Some("sess-1"))).await;
    let two = send_doc("POST", &url, format, &session_doc(&[B], Some("sess-1"))).await;
    assert_eq!((one.status, two.status), (201, 201));
    assert_eq!(
        one.header("location"),
        two.header("location"),
        "[{format:?}] same session"
    );
    let sid = last_segment(one.header("location"));
    // The same correlator with other invitees is a conflict, not the first session.
    let other = send_doc("POST", &url, format, &session_doc(&[C], Some("sess-1"))).await;
    other.assert_error(409, "SVC0005", format);
    // A group's invitees are a list of people: a resend naming them in another order (a
    // client that rebuilt its list from a set) answers the group it started.
    // (Two users nobody listens for: B's listener is read below.)
    let (y, z) = ("tel:+15550009001", "sip:zed@example.com");
    let group = send_doc("POST", &url, format, &session_doc(&[y, z], Some("grp-1"))).await;
    let again = send_doc("POST", &url, format, &session_doc(&[z, y], Some("grp-1"))).await;
    assert_eq!((group.status, again.status), (201, 201), "{}", again.body);
    assert_eq!(group.header("location"), again.header("location"));
    let group_url = group.header("location").to_owned();
    assert_eq!(send_empty("DELETE", &group_url, format).await.status, 204);
    let sessions: ChatSessionList = send_empty("GET", &srv.urls().chat_sessions(A), format)
        .await
        .decode();
    assert_eq!(sessions.chat_session_information.len(), 1);
    lb.wait_for(1).await;
    let status_url = srv.urls().participant_status(B, &sid, B);
    let st = ParticipantSessionStatus {
        status: ParticipantStatus::Connected,
    };
    assert_eq!(send_doc("POST", &status_url, format, &st).await.status, 200);

    let murl = srv.urls().messages(A, &sid);
    let m1 = send_doc("POST", &murl, format, &message("once", Some("msg-1"))).await;
    let m2 = send_doc("POST", &murl, format, &message("once", Some("msg-1"))).await;
    assert_eq!((m1.status, m2.status), (201, 201));
    assert_eq!(
        m1.header("location"),
        m2.header("location"),
        "[{format:?}] same message"
    );
    // The same correlator with another text is a conflict: the client is not told that
    // a message it never sent was sent.
    let m3 = send_doc("POST", &murl, format, &message("twice", Some("msg-1"))).await;
    let e = m3.assert_error(409, "SVC0005", format);
    assert_eq!(
        e.service_exception.map(|x| x.variables),
        Some(vec!["msg-1".to_owned()])
    );
    let msgs: ChatMessageList = send_empty("GET", &murl, format).await.decode();
    assert_eq!(msgs.chat_message.len(), 1);
    assert_eq!(msgs.chat_message[0].text, "once");
    // B got one invitation and one message, nothing twice.
    let got = lb.wait_for(2).await;
    assert_eq!(got[1].kind(), "messageNotification");
    lb.assert_count_stays(2, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn client_correlator_replays_return_the_original_json() {
    correlator_replays(Format::Json).await;
}

#[tokio::test]
async fn client_correlator_replays_return_the_original_xml() {
    correlator_replays(Format::Xml).await;
}

#[tokio::test]
async fn a_callback_answering_410_disables_its_subscription() {
    gone_for_good(410, "the callback answered 410 Gone").await;
}

/// OMA: "treat 404 as permanent" (reference §1.5): a callback that is not there any more is
/// not retried for a day.
#[tokio::test]
async fn a_callback_answering_404_disables_its_subscription() {
    gone_for_good(404, "the callback answered 404 Not Found").await;
}

/// A callback answering `status` disables its subscription at the first attempt, which says
/// `reason`; nothing more is tried, and its owner can still delete it.
async fn gone_for_good(status: u16, reason: &str) {
    let srv = Server::default_for_tests();
    let (la, lb) = (Listener::start().await, Listener::start().await);
    subscribe(&srv, A, &la, Format::Json, None).await;
    let sub = subscribe(&srv, B, &lb, Format::Json, None).await;
    assert_eq!(sub.subscription_status, Some(SubscriptionStatus::Active));
    lb.set_status(status);
    chat::start_session(&srv, A, &session_doc(&[B], None)).await;
    let url = sub.resource_url.unwrap_or_default();
    // The subscription stays, disabled, in both formats.
    let got = within(
        Duration::from_secs(5),
        Duration::from_millis(50),
        async || {
            let got: ChatSubscription = send_empty("GET", &url, Format::Json).await.decode();
            if got.subscription_status == Some(SubscriptionStatus::Disabled) {
                return Ok(got);
            }
            Err(format!("not disabled after {status}: {got:?}"))
        },
    )
    .await;
    assert_eq!(got.status_reason.as_deref(), Some(reason));
    chat::assert_disabled_in_xml(&url).await;
    // Nothing more is tried: a second session's invitation is not sent to it.
    lb.set_status(204);
    let a = send_doc(
        "POST",
        &srv.url(A, "/chatSessions"),
        Format::Json,
        &session_doc(&[B], None),
    )
    .await;
    assert_eq!(a.status, 201);
    lb.assert_count_stays(0, Duration::from_millis(300)).await;
    assert_eq!(
        lb.refused_ids().len(),
        1,
        "one attempt, then the subscription is disabled"
    );
    // Its owner can still delete it.
    assert_eq!(send_empty("DELETE", &url, Format::Json).await.status, 204);
    assert_eq!(send_empty("GET", &url, Format::Json).await.status, 404);
}

/// A subscription delivery disabled is deleted once it has been disabled for the retention
/// period (here 2 s; its dead letters are purged after as long): it answers `404` and leaves
/// the listing, while the user's active subscription stays. Before, it stayed until its owner
/// deleted it, holding a place under `NETAPI_CHAT_MAX_SUBSCRIPTIONS` for ever once its
/// application was gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_disabled_for_the_retention_period_is_deleted() {
    let srv = Server::start(&[
        ("NETAPI_CHAT_RETENTION", "2s"),
        ("NETAPI_CHAT_PURGE_INTERVAL_MS", "100"),
    ]);
    let (la, lb, lb2) = (
        Listener::start().await,
        Listener::start().await,
        Listener::start().await,
    );
    subscribe(&srv, A, &la, Format::Json, None).await;
    let gone = subscribe(&srv, B, &lb, Format::Xml, None).await;
    let kept = subscribe(&srv, B, &lb2, Format::Json, None).await;
    lb.set_status(410);
    chat::start_session(&srv, A, &session_doc(&[B], None)).await;
    let (gone_url, kept_url) = (
        gone.resource_url.unwrap_or_default(),
        kept.resource_url.unwrap_or_default(),
    );
    within(
        Duration::from_secs(5),
        Duration::from_millis(50),
        async || {
            let got: ChatSubscription = send_empty("GET", &gone_url, Format::Json).await.decode();
            match got.subscription_status {
                Some(SubscriptionStatus::Disabled) => Ok(()),
                _ => Err(format!("not disabled: {got:?}")),
            }
        },
    )
    .await;
    let disabled_at = Instant::now();
    until_gone(&gone_url).await;
    assert!(
        disabled_at.elapsed() >= Duration::from_millis(1500),
        "deleted {:?} after it was disabled",
        disabled_at.elapsed()
    );
    let list = send_empty("GET", &srv.urls().subscriptions(B), Format::Json).await;
    assert_eq!(list.status, 200);
    assert!(!list.body.contains(&gone_url), "{}", list.body);
    assert!(list.body.contains(&kept_url), "{}", list.body);
    let kept: ChatSubscription = send_empty("GET", &kept_url, Format::Json).await.decode();
    assert_eq!(kept.subscription_status, Some(SubscriptionStatus::Active));
}

#[tokio::test]
async fn an_expired_subscription_is_told_once_and_then_receives_nothing() {
    let srv = Server::default_for_tests();
    let (la, lb) = (Listener::start().await, Listener::start().await);
    subscribe(&srv, A, &la, Format::Json, None).await;
    let mut doc = ChatSubscription {
        callback_reference: CallbackReference {
            notify_url: lb.url.clone(),
            callback_data: Some("short-lived".into()),
            notification_format: Some(NotificationFormat::Xml),
        },
        duration: Some(1),
        client_correlator: None,
        resource_url: None,
        subscription_status: None,
        status_reason: None,
        signing_secret: None,
    };
    let a = send_doc("POST", &srv.urls().subscriptions(B), Format::Xml, &doc).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let granted: ChatSubscription = a.decode();
    assert_eq!(
        granted.duration,
        Some(1),
        "the granted duration is returned"
    );
    doc.resource_url = granted.resource_url.clone();

    let n = first_of_kind(&lb, "subscriptionCancellationNotification").await;
    let cancelled: SubscriptionCancellationNotification = n.decode();
    assert_eq!(cancelled.callback_data.as_deref(), Some("short-lived"));
    assert_eq!(
        cancelled.link[0].href,
        granted.resource_url.clone().unwrap_or_default()
    );
    let gone = send_empty(
        "GET",
        &granted.resource_url.unwrap_or_default(),
        Format::Json,
    )
    .await;
    assert_eq!(gone.status, 404, "an expired subscription is deleted");

    // Nothing more reaches the expired callback.
    let s = send_doc(
        "POST",
        &srv.urls().chat_sessions(A),
        Format::Json,
        &session_doc(&[B], None),
    )
    .await;
    assert_eq!(s.status, 201);
    lb.assert_count_stays(1, Duration::from_millis(500)).await;
}

/// A subscription that expired while its callback was down keeps what it had not delivered,
/// and its cancellation notice, across a SIGKILL within the minute they are tried for: the
/// restarted server delivers them once the callback is back, in order (XML, as subscribed),
/// the notice last; and an expired subscription is still nobody's (`404`). Before, they were
/// held in memory only (the record and its outbox rows were deleted at the expiry), and any
/// restart within that minute lost them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_subscriptions_last_notifications_survive_a_crash() {
    // Quick retries, so the callback is tried again soon after the restart.
    let retries = [
        ("NETAPI_CHAT_RETRY_SCHEDULE", "0,100ms,1h,1h"),
        ("NETAPI_CHAT_DELIVERY_MAX_BACKOFF", "300ms"),
    ];
    let srv = Server::start(&retries);
    let lb = Listener::start().await;
    let doc = ChatSubscription {
        duration: Some(2),
        ..docs::subscription_to(&lb.url, B, Format::Xml)
    };
    let sub = chat::subscribe_with(&srv, B, &doc, Format::Xml).await;
    let url = sub.resource_url.unwrap_or_default();
    let sid = connected_session(&srv, &[B]).await;
    lb.wait_for(1).await;
    lb.set_down(true);
    for n in 0..3 {
        chat::send_message(&srv, A, &sid, &message(&format!("m{n}"), None)).await;
    }
    until_gone(&url).await;
    let dir = srv.kill();
    let before = lb.all().len();
    lb.set_down(false);
    let srv = Server::restart(dir, &retries);
    let got = within(
        Duration::from_secs(20),
        Duration::from_millis(50),
        async || {
            let all = lb.all();
            match all.last() {
                Some(r) if r.kind() == "subscriptionCancellationNotification" => Ok(all),
                _ => Err(format!(
                    "no cancellation last yet: {:?}",
                    all.iter().map(|r| r.kind()).collect::<Vec<_>>()
                )),
            }
        },
    )
    .await;
    let after: Vec<&support::Received> = got[before..].iter().collect();
    assert!(after.iter().all(|r| r.format() == Format::Xml));
    let texts: Vec<String> = after
        .iter()
        .filter(|r| r.kind() == "messageNotification")
        .map(|r| r.id_and_text().1)
        .collect();
    assert_eq!(
        texts,
        ["m0", "m1", "m2"],
        "what it had not delivered, in order"
    );
    let notice: SubscriptionCancellationNotification = after[after.len() - 1].decode();
    assert_eq!(notice.link[0].href, url, "made before the crash");
    let id = last_segment(&url);
    let now_at = srv.urls().subscription(B, &id);
    assert_eq!(
        send_empty("GET", &now_at, Format::Json).await.status,
        404,
        "still nobody's subscription after the restart"
    );
    let list = send_empty("GET", &srv.urls().subscriptions(B), Format::Json).await;
    assert!(!list.body.contains(&id), "{}", list.body);
}

/// Sends made side by side, in several sessions at once and several at once in each session,
/// reach the store and the callback in one order per session: a recipient is told of a
/// session's messages in the order it lists them, and every message is listed and told once;
/// and its subscription's `webhook-id`s increase in the order they arrive, across sessions
/// (what catching up on dead letters `since` an id relies on).
/// (A send takes the state's read lock, so sends of unrelated sessions go side by side; its
/// session's order lock keeps the sequence number and the hand-over to the store together,
/// and notification ids are given at hand-over.)
#[tokio::test]
async fn sends_side_by_side_keep_each_sessions_order_in_listing_and_notifications() {
    const SESSIONS: usize = 4;
    const EACH: usize = 30;
    let srv = Server::default_for_tests();
    let lb = Listener::start().await;
    subscribe(&srv, B, &lb, Format::Json, None).await;
    let mut sids = Vec::new();
    for _ in 0..SESSIONS {
        sids.push(connected_session(&srv, &[B]).await);
    }
    let mut sends = tokio::task::JoinSet::new();
    for (s, sid) in sids.iter().enumerate() {
        for n in 0..EACH {
            let url = srv.urls().messages(A, sid);
            sends.spawn(async move {
                let text = format!("s{s}-{n}");
                let a = send_doc("POST", &url, Format::Json, &message(&text, None)).await;
                assert_eq!(a.status, 201, "{text}: {}", a.body);
            });
        }
    }
    while let Some(done) = sends.join_next().await {
        done.expect("a send task");
    }

    let told: Vec<String> = within(
        Duration::from_secs(10),
        Duration::from_millis(50),
        async || {
            let texts: Vec<String> = lb
                .all()
                .iter()
                .filter(|r| r.kind() == "messageNotification")
                .map(|r| r.id_and_text().1)
                .collect();
            if texts.len() >= SESSIONS * EACH {
                Ok(texts)
            } else {
                Err(format!("{} of {} told", texts.len(), SESSIONS * EACH))
            }
        },
    )
    .await;
    let ids: Vec<u64> = lb
        .all()
        .iter()
        .map(|r| {
            r.id.strip_prefix("msg_")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("a webhook-id msg_<n>: {}", r.id))
        })
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "webhook-ids increase in the order they arrive: {ids:?}"
    );
    for (s, sid) in sids.iter().enumerate() {
        let prefix = format!("s{s}-");
        let url = format!("{}?maxEntries={EACH}", srv.urls().messages(B, sid));
        let a = send_empty("GET", &url, Format::Json).await;
        assert_eq!(a.status, 200, "{}", a.body);
        let listed: Vec<String> = a
            .decode::<ChatMessageList>()
            .chat_message
            .into_iter()
            .map(|m| m.text)
            .collect();
        assert_eq!(listed.len(), EACH, "session {s}: every message listed");
        let told_here: Vec<&String> = told.iter().filter(|t| t.starts_with(&prefix)).collect();
        assert_eq!(
            told_here,
            listed.iter().collect::<Vec<_>>(),
            "session {s}: told once each, in the order listed"
        );
    }
}

/// A subscription due to expire while its server stops gracefully (SIGTERM: a rolling
/// restart, a deploy) is not expired by the stopping server, whose deliveries end before it
/// exits (the cancellation notice, kept in memory only, was lost with it: the issue 14
/// acceptance check lost it in 4 of 5 rolling restarts under load); the restarted server
/// expires it and the `subscriptionCancellationNotification` arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_expiring_during_a_graceful_stop_is_told_after_the_restart() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let srv = Server::default_for_tests();
    let lb = Listener::start().await;
    // The receiver is away: a notice made while stopping cannot go out before the stop.
    lb.set_down(true);
    let doc = ChatSubscription {
        duration: Some(2),
        ..docs::subscription_to(&lb.url, B, Format::Json)
    };
    chat::subscribe_with(&srv, B, &doc, Format::Json).await;
    // A request whose body comes late holds the drain open past the expiry.
    let body = String::from_utf8(netapi_chat_runtime::wire::encode(
        Format::Json,
        &docs::subscription_to(&lb.url, A, Format::Json),
    ))
    .expect("utf-8");
    let url: http::Uri = srv.urls().subscriptions(A).parse().expect("URL");
    let mut slow = tokio::net::TcpStream::connect(srv.addr())
        .await
        .expect("connect");
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        url.path(),
        srv.addr(),
        support::APP_TOKEN,
        body.len()
    );
    slow.write_all(head.as_bytes()).await.expect("head");
    slow.write_all(&body.as_bytes()[..1]).await.expect("a byte");
    let rest = body.as_bytes()[1..].to_vec();
    let finisher = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        slow.write_all(&rest).await.expect("the rest");
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut answer)).await;
        String::from_utf8_lossy(&answer).into_owned()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dir = tokio::task::block_in_place(|| srv.terminate());
    let answer = finisher.await.expect("finished");
    assert!(answer.starts_with("HTTP/1.1 201"), "drained: {answer}");
    lb.set_down(false);
    let _srv = Server::restart(dir, &[]);
    let n = first_of_kind(&lb, "subscriptionCancellationNotification").await;
    let _: SubscriptionCancellationNotification = n.decode();
}

/// The `SessionEnded` events `l` received for session `sid`.
fn ended(l: &Listener, sid: &str) -> usize {
    l.all()
        .iter()
        .filter(|r| r.kind() == "chatEventNotification")
        .map(|r| r.decode::<ChatEventNotification>())
        .filter(|e| e.event_type == EventType::SessionEnded && e.session_id == sid)
        .count()
}

/// Whether session `sid` still answers `GET` for `user`.
async fn held(srv: &Server, user: &str, sid: &str) -> bool {
    let a = send_empty("GET", &srv.urls().session(user, sid), Format::Json).await;
    assert!(matches!(a.status, 200 | 404), "{}: {}", a.status, a.body);
    a.status == 200
}

/// A session nobody uses ends after `NETAPI_CHAT_SESSION_IDLE_SECS` (here 2 s): messages keep
/// it open past that, and once they stop both participants are told `SessionEnded` (A in
/// JSON, B in XML) and it is gone (`404`). Before, a session whose originator stayed
/// connected never ended, holding its place under the server-wide cap for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_nobody_uses_ends_after_the_idle_time() {
    let srv = Server::start(&[("NETAPI_CHAT_SESSION_IDLE_SECS", "2")]);
    let (la, lb) = (Listener::start().await, Listener::start().await);
    subscribe(&srv, A, &la, Format::Json, None).await;
    subscribe(&srv, B, &lb, Format::Xml, None).await;
    let sid = connected_session(&srv, &[B]).await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        chat::send_message(&srv, A, &sid, &message("still here", None)).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(held(&srv, B, &sid).await, "messages keep it open past 2 s");
    assert_eq!((ended(&la, &sid), ended(&lb, &sid)), (0, 0));
    within(
        Duration::from_secs(20),
        Duration::from_millis(100),
        async || match (ended(&la, &sid), ended(&lb, &sid)) {
            (1, 1) => Ok(()),
            told => Err(format!("SessionEnded told (A, B): {told:?}")),
        },
    )
    .await;
    assert!(!held(&srv, A, &sid).await && !held(&srv, B, &sid).await);
}

/// A session's idle time counts across a restart from its last change, stored with it, and
/// from its last message when that is later (a message does not rewrite the session): with
/// `NETAPI_CHAT_SESSION_IDLE_SECS` 10, session S1 (changed last at its set-up) ends soon
/// after a restart 6.5 s later, while S2 (a message at 6 s) is still open then, and ends
/// later. Counted from the restart, S1 would stay 10 s more; from its last change only, S2
/// would end with S1 and lose a chat that was in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_idle_time_counts_across_a_restart() {
    let env = [("NETAPI_CHAT_SESSION_IDLE_SECS", "10")];
    let srv = Server::start(&env);
    let la = Listener::start().await;
    subscribe(&srv, A, &la, Format::Json, None).await;
    let t0 = Instant::now();
    let s1 = connected_session(&srv, &[B]).await;
    let s2 = connected_session(&srv, &[C]).await;
    tokio::time::sleep(Duration::from_secs(6).saturating_sub(t0.elapsed())).await;
    chat::send_message(&srv, A, &s2, &message("in use", None)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let dir = srv.kill();
    let srv = Server::restart(dir, &env);
    let budget = Duration::from_secs(15).saturating_sub(t0.elapsed());
    within(budget, Duration::from_millis(100), async || {
        if held(&srv, A, &s1).await {
            return Err(format!("S1 still open {:?} after its set-up", t0.elapsed()));
        }
        Ok(())
    })
    .await;
    assert!(
        held(&srv, A, &s2).await,
        "S2 carried a message at 6 s: open until 16 s ({:?})",
        t0.elapsed()
    );
    within(
        Duration::from_secs(20),
        Duration::from_millis(100),
        async || match ended(&la, &s2) {
            0 => Err("S2 never ended".to_owned()),
            _ => Ok(()),
        },
    )
    .await;
    assert!(
        t0.elapsed() >= Duration::from_secs(16),
        "{:?}",
        t0.elapsed()
    );
}
