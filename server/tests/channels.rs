//! Notification channels (issue 15), black-box against the real binary, in JSON and XML: the
//! channel resources, long polling (an empty list when the wait runs out, `maxNotifications`,
//! acknowledgement by the next poll, a newer poll ending a waiting one), a deleted channel
//! ending an open poll, notifications waiting in a channel across a SIGKILL, two users'
//! channels isolated, unsupported types, limits and expiry. The seed flows through channels
//! are in `flows.rs` (`…_channel_json` / `…_channel_xml`).
//!
//! Every server here runs with `NETAPI_CHAT_CALLBACK_ALLOW_LOOPBACK=0`: a channel's
//! callbackURL (on the server's own loopback address) must work without it.

mod support;

use netapi_chat_api::{
    ChannelNotification, ChannelType, ChatSubscription, ConnAck, NotificationChannel,
    NotificationChannelLifetime, NotificationChannelList, NotificationList,
};
use netapi_chat_runtime::Format;
use netapi_chat_runtime::xml::XmlLimits;
use std::time::Duration;
use support::channel::answered;
use support::{Answer, Server, chat, docs, send, send_doc, send_empty, user_token};

const A: &str = "tel:+15551230001";
const B: &str = "sip:bob@example.com";
const M: &str = "sip:mallory@example.com";

const FORMATS: [Format; 2] = [Format::Json, Format::Xml];

/// A server whose callbacks may not reach loopback (the default outside tests).
fn server(extra: &[(&str, &str)]) -> Server {
    let mut env = vec![("NETAPI_CHAT_CALLBACK_ALLOW_LOOPBACK", "0")];
    env.extend_from_slice(extra);
    Server::start(&env)
}

/// Creates a long-poll channel for `user`; returns it as answered.
async fn create_channel(
    s: &Server,
    user: &str,
    f: Format,
    max_notifications: Option<i64>,
    max_wait: Option<i64>,
) -> NotificationChannel {
    let a = send_doc(
        "POST",
        &s.urls().channels(user),
        f,
        &docs::channel(ChannelType::LongPolling, max_notifications, max_wait),
    )
    .await;
    assert_eq!(a.status, 201, "create channel: {}", a.body);
    let ch: NotificationChannel = a.decode();
    assert_eq!(a.header("location"), ch.resource_url.as_deref().unwrap());
    ch
}

fn channel_url(ch: &NotificationChannel) -> String {
    ch.channel_data
        .as_ref()
        .and_then(|d| d.channel_url.clone())
        .expect("channelURL")
}

/// Subscribes `user` to chat notifications with the channel's callbackURL; returns the
/// subscription's URL.
async fn subscribe(s: &Server, user: &str, ch: &NotificationChannel, data: &str) -> String {
    let mut doc = docs::subscription(ch.callback_url.as_deref().expect("callbackURL"));
    doc.callback_reference.callback_data = Some(data.to_owned());
    let sub = chat::subscribe_with(s, user, &doc, Format::Json).await;
    sub.resource_url.expect("resourceURL")
}

/// Removes `token` from the server's token file, and waits until the server has read the
/// change (it looks every 250 ms).
async fn revoke(s: &Server, token: &str) {
    let revoked: String = support::token_file()
        .lines()
        .filter(|l| !l.starts_with(&format!("{token} ")))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(s.data_dir.join("tokens"), revoked).expect("token file");
    tokio::time::sleep(Duration::from_millis(1500)).await;
}

/// `from` invites `to` to a 1-1 chat (so `to` gets a sessionInvitationNotification); returns
/// the session id.
async fn invite(s: &Server, from: &str, to: &str, subject: &str) -> String {
    chat::start_session(s, from, &docs::session(subject, &[to])).await
}

async fn poll(url: &str, f: Format) -> Answer {
    send_empty("POST", url, f).await
}

/// Polls and decodes the answer as (id, notification) pairs: the `notificationList` (XML
/// validated against the XSD) with its `Webhook-Ids`.
async fn poll_list(url: &str, f: Format) -> Vec<(String, ChannelNotification)> {
    let a = poll(url, f).await;
    assert_eq!(a.status, 200, "poll: {}", a.body);
    assert!(
        a.content_type().starts_with(f.media_type()),
        "{}",
        a.content_type()
    );
    answered(&a)
}

/// The subjects of the invitations in a poll's answer, with their ids.
fn invitations(list: &[(String, ChannelNotification)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(id, e)| {
            let n = e
                .session_invitation_notification
                .as_ref()
                .unwrap_or_else(|| panic!("an invitation: {e:?}"));
            (id.clone(), n.subject.clone().unwrap_or_default())
        })
        .collect()
}

#[tokio::test]
async fn a_channel_is_created_read_listed_refreshed_and_deleted() {
    let s = server(&[]);
    for f in FORMATS {
        let ch = create_channel(&s, A, f, None, None).await;
        let url = ch.resource_url.clone().unwrap();
        let id = url.rsplit('/').next().unwrap().to_owned();
        assert_eq!(url, s.urls().channel(A, &id));
        assert_eq!(ch.channel_type, ChannelType::LongPolling);
        assert_eq!(ch.application_tag.as_deref(), Some("test-app"));
        assert_eq!(ch.channel_lifetime, Some(3600), "the default lifetime");
        let data = ch.channel_data.clone().unwrap();
        assert_eq!(data.channel_url, Some(s.urls().notifications(A, &id)));
        assert_eq!(data.max_notifications, Some(20));
        assert_eq!(data.max_wait_time, Some(25), "the server's wait");
        assert!(ch.callback_url.as_deref().unwrap().starts_with(&url));
        // The GSMA gateways' clients ask for 1000 notifications a poll: granted the cap, as
        // the answer shows.
        let many = create_channel(&s, "tel:+15551230077", f, Some(1000), None).await;
        assert_eq!(
            many.channel_data.and_then(|d| d.max_notifications),
            Some(100)
        );

        let read = send_empty("GET", &url, f).await;
        let got: NotificationChannel = read.decode();
        assert_eq!(got, ch);
        // OMA's channelData is abstract: an XSD-bound client needs its concrete xsi:type (and
        // the answer stays valid against the published XSD, which decode checked).
        if f == Format::Xml {
            let typed = r#"<channelData xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="nc:LongPollingData">"#;
            assert!(read.body.contains(typed), "{}", read.body);
        } else {
            assert!(!read.body.contains("LongPollingData"), "{}", read.body);
        }
        let list: NotificationChannelList =
            send_empty("GET", &s.urls().channels(A), f).await.decode();
        assert_eq!(list.notification_channel.last(), Some(&ch));
        assert_eq!(list.resource_url, s.urls().channels(A));

        let life_url = s.urls().channel_lifetime(A, &id);
        let life: NotificationChannelLifetime = send_empty("GET", &life_url, f).await.decode();
        assert_eq!(life.channel_lifetime, 3600);
        for (asked, granted) in [(120, 120), (10_000_000, 86_400)] {
            let a = send_doc(
                "PUT",
                &life_url,
                f,
                &NotificationChannelLifetime {
                    channel_lifetime: asked,
                },
            )
            .await;
            assert_eq!(a.status, 200, "{}", a.body);
            let life: NotificationChannelLifetime = a.decode();
            assert_eq!(life.channel_lifetime, granted);
            let read: NotificationChannelLifetime = send_empty("GET", &life_url, f).await.decode();
            assert_eq!(read.channel_lifetime, granted);
        }

        let a = send_empty("DELETE", &url, f).await;
        assert_eq!(a.status, 204, "{}", a.body);
        for (method, u) in [
            ("GET", &url),
            ("DELETE", &url),
            ("GET", &life_url),
            ("POST", &channel_url(&ch)),
        ] {
            send_empty(method, u, f)
                .await
                .assert_error(404, "SVC2008", f);
        }
    }
    // A repeated create with the same clientCorrelator answers the same channel.
    let mut req = docs::channel(ChannelType::LongPolling, None, None);
    req.client_correlator = Some("once".to_owned());
    let first: NotificationChannel = send_doc("POST", &s.urls().channels(B), Format::Json, &req)
        .await
        .decode();
    let again: NotificationChannel = send_doc("POST", &s.urls().channels(B), Format::Json, &req)
        .await
        .decode();
    assert_eq!(first, again);
    // With another request (a WebSocket now), a conflict naming the correlator, in either
    // format, and nothing made: not the LongPolling channel answered as if it were one.
    let mut other = docs::channel(ChannelType::WebSockets, None, None);
    other.client_correlator = Some("once".to_owned());
    for f in FORMATS {
        let a = send_doc("POST", &s.urls().channels(B), f, &other).await;
        let e = a.assert_error(409, "SVC0005", f);
        assert_eq!(
            e.service_exception.map(|x| x.variables),
            Some(vec!["once".to_owned()])
        );
    }
    let list: NotificationChannelList = send_empty("GET", &s.urls().channels(B), Format::Json)
        .await
        .decode();
    assert_eq!(list.notification_channel, vec![first]);
}

/// OMA 2012: a message reaches an application through a channel when its client acknowledges
/// it (with its next poll), not when a poll hands it: only then does a subscription made on the
/// OMA 2012 face record it `Delivered`, which its sender reads. A subscription on the seed face
/// leaves confirming to its client (seed 7.1.10).
#[tokio::test]
async fn a_message_acknowledged_through_a_channel_is_delivered_on_the_2012_face() {
    use netapi_chat_api::{CallbackReference, ChatNotificationSubscription, MessageStatus};
    let s = server(&[]);
    for f in FORMATS {
        let face = support::Face::for_format(f, &s);
        let ch = create_channel(&s, B, f, None, Some(1)).await;
        let url = channel_url(&ch);
        let sub = ChatNotificationSubscription {
            callback_reference: CallbackReference {
                notify_url: ch.callback_url.clone().expect("callbackURL"),
                callback_data: None,
                notification_format: Some(docs::notification_format(f)),
            },
            client_correlator: None,
            confirmed_chat_supported: Some(true),
            adhoc_chat_supported: Some(true),
            duration: None,
            resource_url: None,
            signing_secret: None,
        };
        face.create_notification_subscription(B, &sub)
            .await
            .created();
        let sid = chat::connected_session(&s, A, &docs::session("s", &[B])).await;
        let mid = chat::send_message(&s, A, &sid, &docs::message("Ping")).await;
        let status = async || {
            face.get_one_to_one_mstatus(A, B, &sid, &mid)
                .await
                .ok(200)
                .status
        };
        // Handed until it is: the invitation, its subject, the message.
        let mut handed = 0;
        while handed < 3 {
            handed += poll_list(&url, f).await.len();
        }
        assert_eq!(
            status().await,
            MessageStatus::Sent,
            "handed, not acknowledged"
        );
        assert!(poll_list(&url, f).await.is_empty());
        support::within_20s(Duration::from_millis(20), async || match status().await {
            MessageStatus::Delivered => Ok(()),
            other => Err(format!("{other:?}")),
        })
        .await;

        // The seed face: nothing recorded.
        let seed = create_channel(&s, M, f, None, Some(1)).await;
        subscribe(&s, M, &seed, "seed-app").await;
        let sid = chat::connected_session(&s, A, &docs::session("s", &[M])).await;
        let mid = chat::send_message(&s, A, &sid, &docs::message("Ping")).await;
        let url = channel_url(&seed);
        while !poll_list(&url, f).await.iter().any(|(_, n)| {
            n.message_notification
                .as_ref()
                .is_some_and(|m| m.message_id.as_deref() == Some(mid.as_str()))
        }) {}
        assert!(poll_list(&url, f).await.is_empty());
        tokio::time::sleep(Duration::from_millis(200)).await;
        let status = face.get_one_to_one_mstatus(A, M, &sid, &mid).await;
        assert_eq!(status.ok(200).status, MessageStatus::Sent);
    }
}

#[tokio::test]
async fn a_poll_answers_an_empty_list_when_its_wait_runs_out() {
    let s = server(&[]);
    for f in FORMATS {
        let ch = create_channel(&s, A, f, None, Some(1)).await;
        subscribe(&s, A, &ch, "alice").await;
        let a = poll(&channel_url(&ch), f).await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert!(answered(&a).is_empty(), "{}", a.body);
        assert!(a.headers.get("webhook-ids").is_none(), "{:?}", a.headers);
        // OMA's empty list: an empty array in JSON, an empty element in XML.
        match f {
            Format::Json => assert_eq!(a.body, r#"{"notificationList":[]}"#),
            Format::Xml => assert_eq!(
                a.body,
                concat!(
                    r#"<?xml version="1.0" encoding="UTF-8"?>"#,
                    r#"<nc:notificationList xmlns:nc="urn:oma:xml:rest:netapi:notificationchannel:1">"#,
                    "</nc:notificationList>"
                )
            ),
        }
    }
}

#[tokio::test]
async fn notifications_come_in_order_at_most_max_a_poll_and_leave_once_acknowledged() {
    let s = server(&[("NETAPI_CHAT_MAX_PENDING_INVITATIONS_PER_INVITEE", "100")]);
    for f in FORMATS {
        let ch = create_channel(&s, B, f, Some(2), Some(1)).await;
        let url = channel_url(&ch);
        subscribe(&s, B, &ch, "bob-app").await;
        for subject in ["one", "two", "three"] {
            invite(&s, A, B, subject).await;
        }
        let first = poll_list(&url, f).await;
        let got = invitations(&first);
        assert_eq!(
            got.iter().map(|g| g.1.as_str()).collect::<Vec<_>>(),
            ["one", "two"],
            "at most maxNotifications, oldest first"
        );
        let n = first[0].1.session_invitation_notification.as_ref().unwrap();
        assert_eq!(n.callback_data.as_deref(), Some("bob-app"));
        assert!(!n.link.is_empty());
        let second = invitations(&poll_list(&url, f).await);
        assert_eq!(
            second.iter().map(|g| g.1.as_str()).collect::<Vec<_>>(),
            ["three"]
        );
        let ids: std::collections::BTreeSet<&String> =
            got.iter().chain(&second).map(|g| &g.0).collect();
        assert_eq!(ids.len(), 3, "distinct ids: {ids:?}");
        assert!(
            poll_list(&url, f).await.is_empty(),
            "acknowledged notifications are not answered again"
        );
        send_empty("DELETE", ch.resource_url.as_deref().unwrap(), f).await;
    }
}

/// B subscribed at channel `ch`, in a session with A, who sends `n` messages of the longest
/// text (4,096 characters of 4 bytes each), numbered; waits until they can all have reached
/// the channel, so that one answer could take them all. The texts, in order.
async fn longest_messages_waiting(s: &Server, ch: &NotificationChannel, n: usize) -> Vec<String> {
    subscribe(s, B, ch, "bob-app").await;
    let sid = chat::connected_session(s, A, &docs::session("big", &[B])).await;
    let texts: Vec<String> = (0..n)
        .map(|i| format!("{i:02}{}", "\u{1D11E}".repeat(4_094)))
        .collect();
    for t in &texts {
        chat::send_message(s, A, &sid, &docs::message(t)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    texts
}

/// A poll answers at most 512 KiB of notifications (as stored; the first always comes),
/// whatever the channel's `maxNotifications`: 40 messages of 16 KiB of text come in polls of
/// at most 32, all of them, in order.
#[tokio::test]
async fn a_poll_answer_is_bounded_in_bytes_too() {
    let s = server(&[]);
    let f = Format::Json;
    let ch = create_channel(&s, B, f, Some(100), Some(1)).await;
    let url = channel_url(&ch);
    let texts = longest_messages_waiting(&s, &ch, 40).await;
    let mut got = Vec::new();
    loop {
        let list = poll_list(&url, f).await;
        if list.is_empty() {
            break;
        }
        let messages: Vec<String> = list
            .into_iter()
            .filter_map(|(_, e)| e.message_notification.and_then(|n| n.chat_message))
            .map(|m| m.text)
            .collect();
        assert!(
            messages.len() <= 32,
            "{} messages of 16 KiB in one answer",
            messages.len()
        );
        got.extend(messages);
    }
    assert_eq!(got, texts, "every message, once, in order");
}

/// An OMA socket's frame carries at most 64 KiB of notifications (as stored; the first always
/// comes), whatever the channel's `maxNotifications`: 12 messages of 16 KiB of text waiting
/// when the socket opens come in frames of at most 4, all of them, in order. (A socket keeps
/// the room of its largest frame for as long as it is open; frames of a poll's 512 KiB left
/// up to a MiB behind each socket.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oma_socket_frame_is_bounded_in_bytes() {
    let s = server(&[]);
    let a = send_doc(
        "POST",
        &s.urls().channels(B),
        Format::Json,
        &docs::channel(ChannelType::WebSockets, Some(100), Some(1)),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let ch: NotificationChannel = a.decode();
    let texts = longest_messages_waiting(&s, &ch, 12).await;
    let (mut ws, _) = connect_oma(&channel_url(&ch), Format::Json)
        .await
        .expect("the OMA handshake");
    let mut got = Vec::new();
    while got.len() < texts.len() {
        let messages: Vec<String> = oma_frame(&mut ws, Format::Json)
            .await
            .into_iter()
            .filter_map(|e| e.message_notification.and_then(|n| n.chat_message))
            .map(|m| m.text)
            .collect();
        assert!(
            messages.len() <= 4,
            "{} messages of 16 KiB in one frame",
            messages.len()
        );
        got.extend(messages);
    }
    assert_eq!(got, texts, "every message, once, in order");
}

/// An OMA Notification Channel client reads a poll's answer unchanged: in JSON
/// `notificationList` is an array of single-key objects named after each notification; in XML
/// each notification is its own root element in the chat namespace, straight under
/// `nc:notificationList` (XSD-valid); the stable ids are the `Webhook-Ids` header, in order.
#[tokio::test]
async fn a_poll_answers_omas_notification_list_with_the_ids_in_a_header() {
    let s = server(&[("NETAPI_CHAT_MAX_PENDING_INVITATIONS_PER_INVITEE", "100")]);
    for f in FORMATS {
        let ch = create_channel(&s, B, f, None, Some(1)).await;
        subscribe(&s, B, &ch, "bob-app").await;
        for subject in ["one", "two"] {
            invite(&s, A, B, subject).await;
        }
        // An invitation reaches the channel a moment after its 201 (delivery hands it over
        // after the commit): poll without acknowledging (`ack=`) until both are there.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let a = loop {
            let a = poll(&format!("{}?ack=", channel_url(&ch)), f).await;
            assert_eq!(a.status, 200, "{}", a.body);
            if support::channel::webhook_ids(&a).len() >= 2 || std::time::Instant::now() > deadline
            {
                break a;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let ids = support::channel::webhook_ids(&a);
        assert_eq!(ids.len(), 2, "{:?}", a.headers);
        assert!(ids.iter().all(|id| id.starts_with("msg_")), "{ids:?}");
        match f {
            Format::Json => {
                let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
                let list = v["notificationList"].as_array().expect("an array");
                assert_eq!(list.len(), 2, "{}", a.body);
                for (n, subject) in list.iter().zip(["one", "two"]) {
                    let keys: Vec<&String> = n.as_object().expect("an object").keys().collect();
                    assert_eq!(keys, ["sessionInvitationNotification"], "{}", a.body);
                    assert_eq!(n["sessionInvitationNotification"]["subject"], subject);
                }
            }
            Format::Xml => {
                let open = concat!(
                    r#"<nc:notificationList xmlns:nc="urn:oma:xml:rest:netapi:notificationchannel:1">"#,
                    r#"<chat:sessionInvitationNotification xmlns:chat="urn:oma:xml:rest:netapi:chat:1">"#
                );
                assert!(a.body.contains(open), "{}", a.body);
                assert_eq!(
                    a.body
                        .matches("<chat:sessionInvitationNotification ")
                        .count(),
                    2,
                    "{}",
                    a.body
                );
                assert!(!a.body.contains("webhookId"), "{}", a.body);
            }
        }
        // The same answer through the test client: XSD-valid, one id per notification.
        let again = invitations(&poll_list(&format!("{}?ack=", channel_url(&ch)), f).await);
        assert_eq!(
            again,
            [
                (ids[0].clone(), "one".to_owned()),
                (ids[1].clone(), "two".to_owned())
            ],
            "not acknowledged (ack= names none): the same ids again"
        );
        send_empty("DELETE", ch.resource_url.as_deref().unwrap(), f).await;
    }
}

/// A client that writes the channel's callbackURL its own way (lower-case hex, the address
/// unencoded: the same URL by RFC 3986) still reaches its channel (it was taken for an
/// outside callback, POSTed to the server itself and lost), and goes with it; a URL under the
/// server's channels that names no channel of the user is refused at once.
#[tokio::test]
async fn a_callback_url_spelled_another_way_still_reaches_the_channel() {
    let s = server(&[("NETAPI_CHAT_MAX_PENDING_INVITATIONS_PER_INVITEE", "100")]);
    let given_by_server = |ch: &NotificationChannel| ch.callback_url.clone().unwrap();
    let respellings: [fn(&str) -> String; 2] = [
        |u| u.replace("%3A", "%3a").replace("%2B", "%2b"),
        |u| u.replace("%3A", ":").replace("%2B", "+"),
    ];
    for (f, respell) in FORMATS.into_iter().zip(respellings) {
        let ch = create_channel(&s, B, f, None, Some(1)).await;
        let url = respell(&given_by_server(&ch));
        assert_ne!(url, given_by_server(&ch));
        let doc = docs::subscription_to(&url, "bob-app", f);
        let sub = chat::subscribe_with(&s, B, &doc, Format::Json).await;
        invite(&s, A, B, "respelled").await;
        let got = invitations(&poll_list(&channel_url(&ch), f).await);
        assert_eq!(got.len(), 1, "{url}: {got:?}");
        assert_eq!(got[0].1, "respelled");
        send_empty("DELETE", ch.resource_url.as_deref().unwrap(), f).await;
        // It goes with its channel, as one spelling the URL as given does (it stayed,
        // `Active`, its notifications dropped into the closed mailbox).
        let gone = send_empty("GET", sub.resource_url.as_deref().unwrap(), f).await;
        assert_eq!(gone.status, 404, "{url}: {}", gone.body);
    }
    let ch = create_channel(&s, B, Format::Json, None, Some(1)).await;
    let none = given_by_server(&ch).replace("/channels/", "/channels/no-such-");
    for f in FORMATS {
        let a = send_doc(
            "POST",
            &s.urls().subscriptions(B),
            f,
            &docs::subscription(&none),
        )
        .await;
        let e = a.assert_error(400, "SVC0002", f);
        assert!(
            docs::rendered(&e).contains("names no notification channel"),
            "{}",
            a.body
        );
    }
}

/// The explicit acknowledgement: an answer the client did not process (lost on the way: the
/// client polls again naming the last `webhookId` it processed, which is not in that answer)
/// comes again, same ids, same order; a partly processed answer comes again from the first
/// unprocessed one; acknowledged ones are gone, across a kill too; a malformed `ack` is 400.
#[tokio::test]
async fn an_answer_not_acknowledged_comes_again_with_the_same_ids() {
    let s = server(&[("NETAPI_CHAT_MAX_PENDING_INVITATIONS_PER_INVITEE", "100")]);
    let dir = s.data_dir.clone();
    let mut kept = Vec::new();
    // One user per format, so that one round's invitations do not reach the other's channel.
    for (f, user) in FORMATS.into_iter().zip([B, "sip:carol@example.com"]) {
        let ch = create_channel(&s, user, f, Some(3), Some(1)).await;
        let url = channel_url(&ch);
        let with_ack = |id: &str| format!("{url}?ack={id}");
        subscribe(&s, user, &ch, "app").await;
        for subject in ["one", "two", "three", "four"] {
            invite(&s, A, user, subject).await;
        }
        // The first answer is "lost": the client processed nothing yet (`ack=` empty).
        let lost = invitations(&poll_list(&with_ack(""), f).await);
        let subjects = |l: &[(String, String)]| l.iter().map(|g| g.1.clone()).collect::<Vec<_>>();
        assert_eq!(subjects(&lost), ["one", "two", "three"]);
        let again = invitations(&poll_list(&with_ack(""), f).await);
        assert_eq!(again, lost, "the same notifications, same ids, in order");
        // The client processed "one" only: the rest comes again, then what follows.
        let rest = invitations(&poll_list(&with_ack(&lost[0].0), f).await);
        assert_eq!(subjects(&rest), ["two", "three", "four"]);
        assert_eq!(rest[..2], lost[1..]);
        // An ack of an id already acknowledged (nothing of the last answer read): all again.
        let lost_again = invitations(&poll_list(&with_ack(&lost[0].0), f).await);
        assert_eq!(lost_again, rest);
        // Processed through "three": only "four" is left, and after its ack, nothing.
        let four = invitations(&poll_list(&with_ack(&rest[1].0), f).await);
        assert_eq!(four, rest[2..]);
        let none = poll_list(&with_ack(&four[0].0), f).await;
        assert!(none.is_empty(), "{none:?}");
        // A malformed ack is refused and changes nothing.
        poll(&with_ack("three"), f)
            .await
            .assert_error(400, "SVC0002", f);
        // One handed out and not acknowledged is kept across a kill.
        invite(&s, A, user, format!("kept {}", f.media_type()).as_str()).await;
        let handed = invitations(&poll_list(&with_ack(&four[0].0), f).await);
        assert_eq!(handed.len(), 1);
        kept.push((url.clone(), handed[0].clone(), four[0].0.clone(), f));
    }
    s.kill();
    let s = Server::start_in(&dir, &[("NETAPI_CHAT_CALLBACK_ALLOW_LOOPBACK", "0")], None);
    for (url, handed, before, f) in kept {
        let url = url_on(&s, &url);
        let again = invitations(&poll_list(&format!("{url}?ack={before}"), f).await);
        assert_eq!(
            again,
            std::slice::from_ref(&handed),
            "kept across the kill, same id"
        );
        let after = poll_list(&format!("{url}?ack={}", handed.0), f).await;
        assert!(after.is_empty(), "{after:?}");
    }
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The loss window a long poll had: a poll whose client gave up (closed its connection) kept
/// waiting, took the next notification and answered it to nobody, and the next poll then
/// acknowledged it. Now a poll stops waiting when its client goes, before it takes anything:
/// the next poll gets the notification.
#[tokio::test]
async fn a_poll_whose_client_went_away_takes_nothing() {
    use tokio::io::AsyncWriteExt;
    const WAITING: &str = "long poll waiting";
    const GONE: &str = "request handling cancelled (client disconnected)";
    let s = Server::logged(&[
        ("NETAPI_CHAT_CALLBACK_ALLOW_LOOPBACK", "0"),
        ("NETAPI_CHAT_LOG_LEVEL", "debug"),
    ]);
    let count = |line: &str| s.log_text().matches(line).count();
    // Waits until the server's log holds `line` more than `before` times.
    let logged = async |line: &str, before: usize| {
        for _ in 0..500 {
            if count(line) > before {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the server never logged {line:?}: {}", s.log_text());
    };
    for f in FORMATS {
        // A wait long enough that, without the fix, the abandoned poll is still waiting when
        // the notification comes.
        let ch = create_channel(&s, B, f, None, Some(20)).await;
        let url = channel_url(&ch);
        subscribe(&s, B, &ch, "bob-app").await;

        // A client opens a poll and goes away while it waits.
        let path = url.strip_prefix(&s.base).expect("channelURL on the server");
        let mut tcp = tokio::net::TcpStream::connect(s.addr()).await.unwrap();
        let request = format!(
            "POST {path} HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\n\
             accept: {}\r\ncontent-length: 0\r\n\r\n",
            s.addr(),
            support::APP_TOKEN,
            f.media_type()
        );
        let (waiting, gone) = (count(WAITING), count(GONE));
        tcp.write_all(request.as_bytes()).await.unwrap();
        tcp.flush().await.unwrap();
        // The server's log says when the poll waits, and when it has seen the client go.
        logged(WAITING, waiting).await;
        drop(tcp);
        logged(GONE, gone).await;

        // Then a notification, then a new poll: it gets the notification.
        invite(&s, A, B, "after the client left").await;
        let got = invitations(&poll_list(&url, f).await);
        assert_eq!(
            got.iter().map(|g| g.1.as_str()).collect::<Vec<_>>(),
            ["after the client left"],
            "the abandoned poll took nothing"
        );
        send_empty("DELETE", ch.resource_url.as_deref().unwrap(), f).await;
    }
}

#[tokio::test]
async fn deleting_a_channel_ends_an_open_poll_with_404() {
    // The server's wait is long: only the deletion can end this poll before the client's own
    // timeout (30 s), which would fail the test.
    let s = server(&[("NETAPI_CHAT_CHANNEL_POLL_WAIT", "120s")]);
    for f in FORMATS {
        let ch = create_channel(&s, A, f, None, None).await;
        let sub = subscribe(&s, A, &ch, "alice").await;
        let url = channel_url(&ch);
        let open = spawn_poll(url, Some(f));
        // Let the poll reach the server and wait (ordering only: a poll arriving after the
        // deletion gets the same 404, so this cannot make the test pass wrongly).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let a = send_empty("DELETE", ch.resource_url.as_deref().unwrap(), f).await;
        assert_eq!(a.status, 204, "{}", a.body);
        let (status, ct, body) = open.await.unwrap();
        let answer = Answer {
            status,
            headers: {
                let mut h = http::HeaderMap::new();
                h.insert("content-type", ct.parse().unwrap());
                h
            },
            body,
        };
        answer.assert_error(404, "SVC2008", f);
        // The subscriptions delivering into it went with it.
        send_empty("GET", &sub, f)
            .await
            .assert_error(404, "SVC2008", f);
    }
}

#[tokio::test]
async fn a_newer_poll_ends_a_waiting_one_with_409() {
    let s = server(&[("NETAPI_CHAT_CHANNEL_POLL_WAIT", "120s")]);
    let ch = create_channel(&s, A, Format::Json, None, None).await;
    let url = channel_url(&ch);
    let u = url.clone();
    let first = tokio::spawn(async move { poll(&u, Format::Xml).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = tokio::spawn({
        let url = url.clone();
        async move { poll(&url, Format::Json).await }
    });
    first
        .await
        .unwrap()
        .assert_error(409, "SVC1012", Format::Xml);
    send_empty("DELETE", ch.resource_url.as_deref().unwrap(), Format::Json).await;
    second
        .await
        .unwrap()
        .assert_error(404, "SVC2008", Format::Json);
}

#[tokio::test]
async fn notifications_waiting_in_a_channel_survive_a_kill() {
    let s = server(&[]);
    let dir = s.data_dir.clone();
    let ch = create_channel(&s, B, Format::Json, None, Some(1)).await;
    let url = channel_url(&ch);
    subscribe(&s, B, &ch, "bob-app").await;
    invite(&s, A, B, "before the poll").await;
    let handed = invitations(&poll_list(&url, Format::Json).await);
    assert_eq!(handed.len(), 1);
    // Handed out but not acknowledged, and one never handed out.
    invite(&s, A, B, "never polled").await;
    let dir_kept = s.kill();
    assert_eq!(dir_kept, dir);

    let s = Server::start_in(&dir, &[("NETAPI_CHAT_CALLBACK_ALLOW_LOOPBACK", "0")], None);
    let again = invitations(&poll_list(&url_on(&s, &url), Format::Xml).await);
    assert_eq!(again.len(), 2, "{again:?}");
    assert_eq!(
        again[0], handed[0],
        "the same notification, with the same id"
    );
    assert_eq!(again[1].1, "never polled");
    // Acknowledged by this poll: gone, after another restart too.
    assert!(poll_list(&url_on(&s, &url), Format::Json).await.is_empty());
    s.kill();
    let s = Server::start_in(&dir, &[("NETAPI_CHAT_CALLBACK_ALLOW_LOOPBACK", "0")], None);
    assert!(poll_list(&url_on(&s, &url), Format::Json).await.is_empty());
    // The channel still works after the restarts.
    invite(&s, A, B, "after").await;
    let after = invitations(&poll_list(&url_on(&s, &url), Format::Json).await);
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].1, "after");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A URL of an earlier run moved to server `s` (a restart binds another port).
fn url_on(s: &Server, url: &str) -> String {
    let path = url.splitn(4, '/').nth(3).unwrap_or_default();
    format!("{}/{path}", s.base)
}

#[tokio::test]
async fn two_users_channels_are_isolated() {
    let s = server(&[]);
    let ch = create_channel(&s, A, Format::Json, None, Some(1)).await;
    let id = ch
        .resource_url
        .as_deref()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let mine = create_channel(&s, M, Format::Json, None, Some(1)).await;
    let mallory = [("authorization", format!("Bearer {}", user_token(M)))];
    let as_m = |method: &'static str, url: String, f: Format| {
        let h = mallory.clone();
        async move {
            send(
                method,
                &url,
                &[(h[0].0, h[0].1.as_str()), ("accept", f.media_type())],
                None,
            )
            .await
        }
    };
    for f in FORMATS {
        // Under her own user id, A's channel does not exist for Mallory.
        for (method, url) in [
            ("GET", s.urls().channel(M, &id)),
            ("DELETE", s.urls().channel(M, &id)),
            ("GET", s.urls().channel_lifetime(M, &id)),
            ("POST", s.urls().notifications(M, &id)),
        ] {
            as_m(method, url, f).await.assert_error(404, "SVC2008", f);
        }
        // Under A's user id, her token may not act.
        for (method, url) in [
            ("GET", s.urls().channel(A, &id)),
            ("POST", s.urls().notifications(A, &id)),
            ("GET", s.urls().channels(A)),
        ] {
            as_m(method, url, f).await.assert_error(403, "POL0001", f);
        }
        // Her list shows her channel only.
        let list: NotificationChannelList = as_m("GET", s.urls().channels(M), f).await.decode();
        assert_eq!(list.notification_channel, vec![mine.clone()]);
    }
    // She cannot subscribe with A's callbackURL (answered as any host that is not allowed).
    let body = docs::encode(
        Format::Json,
        &docs::subscription(ch.callback_url.as_deref().unwrap()),
    );
    let a = send(
        "POST",
        &s.urls().subscriptions(M),
        &[
            ("authorization", mallory[0].1.as_str()),
            ("content-type", "application/json"),
        ],
        Some(&body),
    )
    .await;
    a.assert_error(400, "SVC0002", Format::Json);
    assert!(
        a.body.contains("not an allowed callback host"),
        "{}",
        a.body
    );
    // A's notifications reach A's channel only.
    subscribe(&s, A, &ch, "alice").await;
    subscribe(&s, M, &mine, "mallory").await;
    invite(&s, B, A, "for alice").await;
    let got = invitations(&poll_list(&channel_url(&ch), Format::Json).await);
    assert_eq!(got.len(), 1);
    let hers = as_m("POST", channel_url(&mine), Format::Json).await;
    assert_eq!(hers.status, 200);
    assert!(answered(&hers).is_empty(), "{}", hers.body);
}

#[tokio::test]
async fn an_unsupported_channel_type_is_refused_with_pol1023() {
    let s = server(&[]);
    for f in FORMATS {
        for t in [ChannelType::OmaPush, ChannelType::NativeChannel] {
            let a = send_doc(
                "POST",
                &s.urls().channels(A),
                f,
                &docs::channel(t, None, None),
            )
            .await;
            let e = a.assert_error(403, "POL1023", f);
            let ex = e.policy_exception.expect("a policyException");
            assert_eq!(
                ex.variables,
                vec![t.as_str().to_owned(), "LongPolling,WebSockets".into()]
            );
        }
    }
    let list: NotificationChannelList = send_empty("GET", &s.urls().channels(A), Format::Json)
        .await
        .decode();
    assert!(list.notification_channel.is_empty());
}

#[tokio::test]
async fn channel_values_and_counts_are_bounded() {
    let s = server(&[("NETAPI_CHAT_MAX_CHANNELS_PER_USER", "2")]);
    for f in FORMATS {
        // Text where the schema has child elements is refused, not ignored (schemathesis
        // found `<channelData>5.06e-65</channelData>` accepted as an empty channelData).
        if f == Format::Xml {
            let body = "<nc:notificationChannel xmlns:nc=\"urn:oma:xml:rest:netapi:notificationchannel:1\">\
                <channelType>LongPolling</channelType><channelData>5.06e-65</channelData>\
                </nc:notificationChannel>";
            let a = send(
                "POST",
                &s.urls().channels(A),
                &[
                    ("content-type", "application/xml"),
                    ("accept", "application/xml"),
                ],
                Some(body),
            )
            .await;
            a.assert_error(400, "SVC0002", f);
        }
        // Below 0 is refused (0 is the default, more than 100 is granted as 100).
        for bad in [-1, -1000] {
            let a = send_doc(
                "POST",
                &s.urls().channels(A),
                f,
                &docs::channel(ChannelType::LongPolling, Some(bad), None),
            )
            .await;
            a.assert_error(400, "SVC0002", f);
        }
        let a = send_doc(
            "POST",
            &s.urls().channels(A),
            f,
            &docs::channel(ChannelType::LongPolling, None, Some(600)),
        )
        .await;
        assert_eq!(a.status, 201, "{}", a.body);
        let ch: NotificationChannel = a.decode();
        assert_eq!(
            ch.channel_data.unwrap().max_wait_time,
            Some(25),
            "a longer wait than the server's is shortened"
        );
    }
    let a = send_doc(
        "POST",
        &s.urls().channels(A),
        Format::Json,
        &docs::channel(ChannelType::LongPolling, None, None),
    )
    .await;
    a.assert_error(403, "POL2008", Format::Json);
}

#[tokio::test]
async fn a_channel_whose_lifetime_ends_goes_with_its_subscriptions() {
    let s = server(&[]);
    let mut req = docs::channel(ChannelType::LongPolling, None, Some(1));
    req.channel_lifetime = Some(1);
    let a = send_doc("POST", &s.urls().channels(A), Format::Json, &req).await;
    let ch: NotificationChannel = a.decode();
    assert_eq!(ch.channel_lifetime, Some(1));
    let sub = subscribe(&s, A, &ch, "alice").await;
    let url = ch.resource_url.clone().unwrap();
    // Wait (bounded) for the expiry; nothing polls, so nothing keeps it alive.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let a = send_empty("GET", &url, Format::Json).await;
        if a.status == 404 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the channel did not expire"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    send_empty("GET", &sub, Format::Json)
        .await
        .assert_error(404, "SVC2008", Format::Json);
}

/// A refresh that shortens the lifetime moves the expiry: a channel created for an hour and
/// refreshed to 1 s goes within the test's bound (the timer used to sleep the whole hour).
#[tokio::test]
async fn a_refresh_that_shortens_the_lifetime_ends_it_sooner() {
    let s = server(&[]);
    for f in FORMATS {
        let ch = create_channel(&s, A, f, None, Some(1)).await;
        assert_eq!(ch.channel_lifetime, Some(3600));
        let url = ch.resource_url.clone().unwrap();
        let id = url.rsplit('/').next().unwrap().to_owned();
        let a = send_doc(
            "PUT",
            &s.urls().channel_lifetime(A, &id),
            f,
            &NotificationChannelLifetime {
                channel_lifetime: 1,
            },
        )
        .await;
        assert_eq!(a.status, 200, "{}", a.body);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if send_empty("GET", &url, f).await.status == 404 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the shortened lifetime did not end"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test]
async fn a_channel_that_is_not_polled_is_bounded_by_the_backlog_cap() {
    let s = server(&[("NETAPI_CHAT_DELIVERY_BACKLOG", "2")]);
    let ch = create_channel(&s, B, Format::Json, None, Some(1)).await;
    let sub = subscribe(&s, B, &ch, "bob-app").await;
    for subject in ["one", "two", "three", "four"] {
        invite(&s, A, B, subject).await;
    }
    // Past the cap the subscription is disabled, as for a callback that does not keep up.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got: ChatSubscription = send_empty("GET", &sub, Format::Json).await.decode();
        if got.subscription_status == Some(netapi_chat_api::SubscriptionStatus::Disabled) {
            assert!(got.status_reason.unwrap_or_default().contains("backlog"));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not disabled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // What the channel held went with the subscription, as a callback's backlog does: a poll
    // answers none of it (it held it in memory for the channel's lifetime before), and it is
    // kept as dead letters with the one that came past the cap, the newest within the cap (2
    // here: the oldest goes, as for a callback); nothing is queued for it after that.
    assert!(poll_list(&channel_url(&ch), Format::Json).await.is_empty());
    let id = sub.rsplit('/').next().unwrap();
    support::within_20s(Duration::from_millis(50), async || {
        let dead: netapi_chat_api::DeadLetterList =
            send_empty("GET", &s.urls().dead_letters(B, id), Format::Json)
                .await
                .decode();
        let subjects: Vec<&str> = dead
            .dead_letter
            .iter()
            .filter_map(|d| {
                d.session_invitation_notification
                    .as_ref()?
                    .subject
                    .as_deref()
            })
            .collect();
        if subjects == ["two", "three"] {
            Ok(())
        } else {
            Err(format!("dead letters: {subjects:?}"))
        }
    })
    .await;
}

/// Opens a long poll on the channel at `url` in the background, as the application
/// (`Accept: accept` when given), for the tests that end it from outside (a deletion, a
/// shutdown); its answer's (status, Content-Type, body). The client's 30 s timeout fails the
/// test should nothing end the poll.
fn spawn_poll(
    url: String,
    accept: Option<Format>,
) -> tokio::task::JoinHandle<(u16, String, String)> {
    spawn_poll_as(url, accept, support::APP_TOKEN.to_owned())
}

/// [`spawn_poll`] with `token`.
fn spawn_poll_as(
    url: String,
    accept: Option<Format>,
    token: String,
) -> tokio::task::JoinHandle<(u16, String, String)> {
    tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let mut request = client.post(&url).bearer_auth(token);
        if let Some(f) = accept {
            request = request.header("accept", f.media_type());
        }
        let r = request.send().await.expect("the poll is answered");
        let status = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (status, ct, r.text().await.unwrap_or_default())
    })
}

// ------------------------------------------------------------------------------ WebSockets

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Opens a channel's socket with `token`, asking for frames in `f`; the HTTP status of a
/// refused handshake otherwise.
async fn connect(url: &str, token: &str, f: Format) -> Result<Socket, u16> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().expect("ws URL");
    let h = request.headers_mut();
    if !token.is_empty() {
        h.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
    }
    h.insert(http::header::ACCEPT, f.media_type().parse().unwrap());
    handshake(request).await.map(|(ws, _)| ws)
}

/// Sends a prepared handshake: the socket and the subprotocol the server selected, or the HTTP
/// status of a refused handshake.
async fn handshake(request: http::Request<()>) -> Result<(Socket, Option<String>), u16> {
    let host = request.uri().authority().expect("host").to_string();
    let tcp = tokio::net::TcpStream::connect(host).await.expect("connect");
    match tokio_tungstenite::client_async(request, tcp).await {
        Ok((ws, answer)) => {
            let selected = answer
                .headers()
                .get(http::header::SEC_WEBSOCKET_PROTOCOL)
                .map(|v| v.to_str().unwrap().to_owned());
            Ok((ws, selected))
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("handshake: {e}"),
    }
}

/// The next frame, parsed (its body, XML, validated against the XSD).
async fn next_frame(ws: &mut Socket, f: Format) -> support::channel::Frame {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame within 10 s")
            .expect("the socket is open")
            .expect("a frame");
        let Message::Text(t) = m else { continue };
        let frame = support::channel::Frame::parse(&t);
        if f == Format::Xml {
            support::xsd_validate(&frame.body);
        }
        return frame;
    }
}

/// The next frame: (webhookId, invitation subject).
async fn frame(ws: &mut Socket, f: Format) -> (String, String) {
    let frame = next_frame(ws, f).await;
    let n: netapi_chat_api::SessionInvitationNotification = netapi_chat_runtime::wire::decode(
        f,
        frame.body.as_bytes(),
        &netapi_chat_runtime::xml::XmlLimits::default(),
    )
    .unwrap_or_else(|e| panic!("an invitation: {e:?}: {}", frame.body));
    (
        frame.header("webhook-id").to_owned(),
        n.subject.unwrap_or_default(),
    )
}

/// Reads `ws` up to its close (within 30 s, else fails saying `what` was expected): the close
/// frame's code, `None` when the socket ended without one.
async fn close_code(ws: &mut Socket, what: &str) -> Option<u16> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(c))) => return c.map(|c| u16::from(c.code)),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .expect(what)
}

async fn ack(ws: &mut Socket, id: &str) {
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::Text(id.into()))
        .await
        .expect("acknowledge");
}

async fn create_socket_channel(s: &Server, user: &str) -> NotificationChannel {
    let a = send_doc(
        "POST",
        &s.urls().channels(user),
        Format::Json,
        &docs::channel(ChannelType::WebSockets, None, Some(1)),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let ch: NotificationChannel = a.decode();
    assert_eq!(ch.channel_type, ChannelType::WebSockets);
    assert!(channel_url(&ch).starts_with("ws://"), "{ch:?}");
    ch
}

#[tokio::test]
async fn a_frame_comes_again_until_acknowledged_across_sockets_and_a_kill() {
    let s = server(&[]);
    let dir = s.data_dir.clone();
    let ch = create_socket_channel(&s, B).await;
    subscribe(&s, B, &ch, "bob-app").await;
    invite(&s, A, B, "one").await;
    for f in FORMATS {
        // Not acknowledged: the next socket gets it again, with the same id.
        let mut ws = connect(&channel_url(&ch), support::APP_TOKEN, f)
            .await
            .unwrap();
        let first = frame(&mut ws, f).await;
        assert_eq!(first.1, "one");
        drop(ws);
        let mut ws = connect(&channel_url(&ch), support::APP_TOKEN, f)
            .await
            .unwrap();
        assert_eq!(frame(&mut ws, f).await, first);
    }
    invite(&s, A, B, "two").await;
    let url = channel_url(&ch);
    s.kill();
    let s = Server::start_in(&dir, &[("NETAPI_CHAT_CALLBACK_ALLOW_LOOPBACK", "0")], None);
    let url = format!(
        "ws://{}/{}",
        s.base.trim_start_matches("http://"),
        url.splitn(4, '/').nth(3).unwrap()
    );
    let mut ws = connect(&url, support::APP_TOKEN, Format::Json)
        .await
        .unwrap();
    let one = frame(&mut ws, Format::Json).await;
    assert_eq!(one.1, "one");
    ack(&mut ws, &one.0).await;
    let two = frame(&mut ws, Format::Json).await;
    assert_eq!(two.1, "two");
    ack(&mut ws, &two.0).await;
    invite(&s, A, B, "three").await;
    let three = frame(&mut ws, Format::Json).await;
    assert_eq!(three.1, "three");
    assert!(one.0 != two.0 && two.0 != three.0);
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn socket_handshakes_are_checked_like_requests() {
    let s = server(&[]);
    let ch = create_socket_channel(&s, A).await;
    let url = channel_url(&ch);
    let id = ch
        .resource_url
        .as_deref()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let mallory = user_token(M);
    assert_eq!(connect(&url, "", Format::Json).await.err(), Some(401));
    assert_eq!(connect(&url, &mallory, Format::Json).await.err(), Some(403));
    let under_m = url.replace(&support::enc(A), &support::enc(M));
    assert_ne!(under_m, url);
    assert_eq!(
        connect(&under_m, &mallory, Format::Json).await.err(),
        Some(404),
        "another user's channel is a channel that does not exist"
    );
    // A long-poll channel has no socket; a WebSockets channel is not polled.
    let polled = create_channel(&s, A, Format::Json, None, Some(1)).await;
    let lp_socket = format!(
        "{}/websocket",
        polled
            .resource_url
            .as_deref()
            .unwrap()
            .replacen("http://", "ws://", 1)
    );
    assert_eq!(
        connect(&lp_socket, support::APP_TOKEN, Format::Json)
            .await
            .err(),
        Some(403)
    );
    poll(&s.urls().notifications(A, &id), Format::Xml)
        .await
        .assert_error(403, "POL0001", Format::Xml);
    // A refused handshake is the OMA requestError any refused request gets, in the format its
    // Accept asks for, the 401 with its Bearer challenge.
    let handshake = |authorization: String, f: Format| {
        let url = url.replacen("ws://", "http://", 1);
        async move {
            send(
                "GET",
                &url,
                &[
                    ("authorization", authorization.as_str()),
                    ("upgrade", "websocket"),
                    ("connection", "Upgrade"),
                    ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
                    ("sec-websocket-version", "13"),
                    ("accept", f.media_type()),
                ],
                None,
            )
            .await
        }
    };
    for f in FORMATS {
        let a = handshake(String::new(), f).await;
        a.assert_error(401, "SVC2003", f);
        assert!(
            a.header("www-authenticate").starts_with("Bearer"),
            "{:?}",
            a.headers
        );
    }
    handshake(format!("Bearer {mallory}"), Format::Xml)
        .await
        .assert_error(403, "POL0001", Format::Xml);
    // Two `Authorization` fields, the first one good: one malformed credential, as for every
    // other request (a proxy in front may have checked the other one).
    let twice = [
        ("authorization", format!("Bearer {}", support::APP_TOKEN)),
        (
            "authorization",
            "Bearer someone-elses-token-0001".to_owned(),
        ),
    ];
    for f in FORMATS {
        let url = url.replacen("ws://", "http://", 1);
        let mut headers: Vec<(&str, &str)> = twice.iter().map(|(k, v)| (*k, v.as_str())).collect();
        headers.extend([
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", "13"),
            ("accept", f.media_type()),
        ]);
        let socket = send("GET", &url, &headers, None).await;
        socket.assert_error(401, "SVC2003", f);
        let mut headers: Vec<(&str, &str)> = twice.iter().map(|(k, v)| (*k, v.as_str())).collect();
        headers.push(("accept", f.media_type()));
        let rest = send("GET", &s.urls().channels(A), &headers, None).await;
        rest.assert_error(401, "SVC2003", f);
    }
    // Only version 13 (RFC 6455 §4.2.2: 426 naming it), and only a GET upgrades.
    let http_url = url.replacen("ws://", "http://", 1);
    let upgrade = |version: &'static str| {
        [
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", version),
        ]
    };
    let old = send("GET", &http_url, &upgrade("8"), None).await;
    old.assert_error(426, "SVC0002", Format::Json);
    assert_eq!(old.header("sec-websocket-version"), "13");
    let head = send("HEAD", &http_url, &upgrade("13"), None).await;
    assert_eq!(head.status, 400, "{:?}", head.headers);
    // A plain GET of the socket is no handshake: 426 asking for one, in the Accept's format.
    let plain = send("GET", &http_url, &[("accept", "application/xml")], None).await;
    plain.assert_error(426, "SVC0002", Format::Xml);
    assert_eq!(plain.header("upgrade"), "websocket");
    // A handshake without its key (or with one that is not 16 bytes): the client's mistake,
    // an OMA error in the Accept's format (before, dropshot's own JSON, whatever the Accept).
    for key in [None, Some("c2hvcnQ=")] {
        let mut h = vec![
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-version", "13"),
            ("accept", "application/xml"),
        ];
        if let Some(k) = key {
            h.push(("sec-websocket-key", k));
        }
        send("GET", &http_url, &h, None)
            .await
            .assert_error(400, "SVC0002", Format::Xml);
    }
}

/// Opens a channel's socket as a browser does: no `Authorization` (a browser cannot set one),
/// the token in the subprotocol list, no `Accept` unless `f` is XML; the subprotocol the
/// server selected, or the HTTP status of a refused handshake.
async fn connect_browser(
    url: &str,
    protocols: &[&str],
    f: Format,
) -> Result<(Socket, Option<String>), u16> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().expect("ws URL");
    let h = request.headers_mut();
    h.insert(
        http::header::SEC_WEBSOCKET_PROTOCOL,
        protocols.join(", ").parse().unwrap(),
    );
    if f == Format::Xml {
        h.insert(http::header::ACCEPT, f.media_type().parse().unwrap());
    }
    handshake(request).await
}

const PROTOCOL: &str = "netapi-chat.notificationchannel.v1";

/// The subprotocol entry carrying `token` (base64url, no padding).
fn bearer(token: &str) -> String {
    use base64::Engine;
    format!(
        "base64url.bearer.authorization.netapi-chat.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token)
    )
}

/// A browser's socket: the token travels in the subprotocol list and is checked like a header
/// (401 without a good one, 403 for a token that may not act for the path's user, 404 for
/// another user's channel), the server selects the plain subprotocol (never echoes the token),
/// and never logs it; each frame is signed like a callback and verifies with the subscription's
/// own secret, in JSON and XML.
#[tokio::test]
async fn a_browser_opens_a_socket_with_its_token_in_the_subprotocols_and_frames_verify() {
    let s = Server::logged(&[("NETAPI_CHAT_CALLBACK_ALLOW_LOOPBACK", "0")]);
    let ch = create_socket_channel(&s, A).await;
    let url = channel_url(&ch);
    let doc = docs::subscription(ch.callback_url.as_deref().expect("callbackURL"));
    let sub = chat::subscribe_with(&s, A, &doc, Format::Json).await;
    let secret = sub.signing_secret.expect("the subscription's own secret");
    let token = bearer(support::APP_TOKEN);

    // Refused handshakes: plain HTTP statuses, before any upgrade.
    let mallory = user_token(M);
    let under_m = url.replace(&support::enc(A), &support::enc(M));
    for (u, protocols, status) in [
        (&url, vec![PROTOCOL.to_owned()], 401),
        (&url, vec![PROTOCOL.to_owned(), bearer("not a token")], 401),
        (&url, vec![token.clone()], 400),
        (&url, vec![PROTOCOL.to_owned(), bearer(&mallory)], 403),
        (&under_m, vec![PROTOCOL.to_owned(), bearer(&mallory)], 404),
    ] {
        let offered: Vec<&str> = protocols.iter().map(String::as_str).collect();
        let got = connect_browser(u, &offered, Format::Json).await.err();
        assert_eq!(got, Some(status), "{u} {protocols:?}");
    }

    let mut seen = Vec::new();
    for (f, subject) in [(Format::Json, "json"), (Format::Xml, "xml")] {
        let (mut ws, selected) = connect_browser(&url, &[PROTOCOL, &token], f)
            .await
            .expect("the browser's handshake");
        assert_eq!(selected.as_deref(), Some(PROTOCOL));
        invite(&s, B, A, subject).await;
        // The previous socket's acknowledgement may still be on its way when this one takes
        // over: a duplicate is dropped by its id, as a client does.
        let got = loop {
            let got = next_frame(&mut ws, f).await;
            let id = got.header("webhook-id").to_owned();
            if !seen.contains(&id) {
                seen.push(id);
                break got;
            }
            ack(&mut ws, &id).await;
        };
        assert!(
            got.verifies(&secret),
            "signed with the subscription's secret: {got:?}"
        );
        let (_, other_secret) = netapi_chat::signing::Signer::generate();
        assert!(
            !got.verifies(&other_secret),
            "another secret does not verify it"
        );
        let n: netapi_chat_api::SessionInvitationNotification = netapi_chat_runtime::wire::decode(
            f,
            got.body.as_bytes(),
            &netapi_chat_runtime::xml::XmlLimits::default(),
        )
        .expect("the callback's body");
        assert_eq!(n.subject.as_deref(), Some(subject));
        ack(&mut ws, got.header("webhook-id")).await;
        drop(ws);
    }
    let log = s.log_text();
    assert!(
        !log.contains(support::APP_TOKEN) && !log.contains(&token),
        "the token is logged"
    );
}

/// A second socket takes the channel over: the first is closed with 1008, and what it was sent
/// and not acknowledged comes on the second with the same id; once acknowledged there it does
/// not come again.
#[tokio::test]
async fn a_second_socket_takes_the_channel_over() {
    let s = server(&[]);
    let ch = create_socket_channel(&s, A).await;
    subscribe(&s, A, &ch, "app").await;
    invite(&s, B, A, "x").await;
    let url = channel_url(&ch);
    let mut first = connect(&url, support::APP_TOKEN, Format::Json)
        .await
        .unwrap();
    let x = frame(&mut first, Format::Json).await;
    let mut second = connect(&url, support::APP_TOKEN, Format::Json)
        .await
        .unwrap();
    assert_eq!(
        frame(&mut second, Format::Json).await,
        x,
        "sent again, same id"
    );
    let closed = close_code(&mut first, "the first socket is closed").await;
    assert_eq!(closed, Some(1008));
    ack(&mut second, &x.0).await;
    invite(&s, B, A, "y").await;
    assert_eq!(frame(&mut second, Format::Json).await.1, "y");
    drop(second);
    let mut third = connect(&url, support::APP_TOKEN, Format::Json)
        .await
        .unwrap();
    assert_eq!(
        frame(&mut third, Format::Json).await.1,
        "y",
        "y was not acknowledged"
    );
}

/// Subprotocol offers split over several `Sec-WebSocket-Protocol` fields are one list (RFC
/// 6455 §11.3.4), as in one field: the OMA name offered after another in a second field is
/// selected, and a browser's bearer entry in a field of its own authenticates. Before, only
/// the first field was read (an OMA client got our signed frames; the bearer entry was `401`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subprotocols_offered_in_several_fields_are_one_list() {
    use base64::Engine as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let s = server(&[]);
    let ch = create_socket_channel(&s, A).await;
    let url: http::Uri = channel_url(&ch).parse().expect("URL");
    let bearer = format!(
        "base64url.bearer.authorization.netapi-chat.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(support::APP_TOKEN)
    );
    for (fields, selected) in [
        (
            vec![
                format!("Authorization: Bearer {}", support::APP_TOKEN),
                "Sec-WebSocket-Protocol: foo".to_owned(),
                format!("Sec-WebSocket-Protocol: {OMA_PROTOCOL}"),
            ],
            OMA_PROTOCOL,
        ),
        (
            vec![
                "Sec-WebSocket-Protocol: netapi-chat.notificationchannel.v1".to_owned(),
                format!("Sec-WebSocket-Protocol: {bearer}"),
            ],
            "netapi-chat.notificationchannel.v1",
        ),
    ] {
        let host = url.authority().expect("host").to_string();
        let mut conn = tokio::net::TcpStream::connect(&host)
            .await
            .expect("connect");
        let head = format!(
            "GET {} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{}\r\n\r\n",
            url.path(),
            fields.join("\r\n")
        );
        conn.write_all(head.as_bytes()).await.expect("write");
        let mut got = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut got))
            .await
            .expect("an answer")
            .expect("read");
        let answer = String::from_utf8_lossy(&got[..n]).to_lowercase();
        assert!(answer.starts_with("http/1.1 101"), "{fields:?}: {answer}");
        assert!(
            answer.contains(&format!(
                "sec-websocket-protocol: {}",
                selected.to_lowercase()
            )),
            "{fields:?}: {answer}"
        );
    }
}

/// A client that closes its socket (Close 1000) is answered with a close frame (RFC 6455
/// §5.5.1), on both subprotocols, so its close is clean: before, the server dropped the
/// connection, and every close a client began read as abnormal (1006, `wasClean` false).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_the_client_begins_is_answered_with_a_close_frame() {
    use futures_util::SinkExt as _;
    use tokio_tungstenite::tungstenite::protocol::{CloseFrame, frame::coding::CloseCode};
    let s = server(&[]);
    let ch = create_socket_channel(&s, A).await;
    let url = channel_url(&ch);
    // One after the other: a second socket would take the channel over (1008).
    for name in ["ours", "OMA"] {
        let mut ws = match name {
            "ours" => connect(&url, support::APP_TOKEN, Format::Json)
                .await
                .expect("a socket"),
            _ => {
                connect_oma(&url, Format::Json)
                    .await
                    .expect("an OMA socket")
                    .0
            }
        };
        ws.send(tokio_tungstenite::tungstenite::Message::Close(Some(
            CloseFrame {
                code: CloseCode::Normal,
                reason: "bye".into(),
            },
        )))
        .await
        .expect("close sent");
        let closed = close_code(&mut ws, "the server's close frame").await;
        assert_eq!(closed, Some(1000), "{name}");
    }
}

/// An open socket counts against `NETAPI_CHAT_MAX_CONNECTIONS` until it closes, like any
/// connection that is not idle, and sockets have half the cap at most. With a cap of four:
/// two sockets fill their share (a third handshake is `503 SVC2001` with `Retry-After`, the
/// sockets never shed), two long polls in flight fill the rest, and a new client waits (as
/// it does when every connection has a request in flight) until a socket closes. Before, a
/// socket left the count at its upgrade, so the cap bounded neither the sockets nor the
/// descriptors they hold (a token acting for many users opens ten per user); with no share,
/// sockets could hold every place and leave HTTP clients waiting for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_sockets_count_against_the_connection_cap_within_their_share() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = server(&[("NETAPI_CHAT_MAX_CONNECTIONS", "4")]);
    // Each wait with a token of its own: a token holds a quarter of the cap at most (one of
    // four; see `one_token_holds_at_most_a_quarter_of_the_connection_cap_in_waits`).
    let mut sockets = Vec::new();
    for user in [A, B] {
        let ch = create_socket_channel(&s, user).await;
        sockets.push(
            connect(&channel_url(&ch), &user_token(user), Format::Json)
                .await
                .expect("socket"),
        );
    }
    let third = create_socket_channel(&s, M).await;
    match connect(&channel_url(&third), &user_token(M), Format::Json).await {
        Err(status) => assert_eq!(status, 503, "past the sockets' share"),
        Ok(_) => panic!("a third socket past the share of a cap of four"),
    }
    let mut polls = Vec::new();
    for (user, token) in [
        (M, user_token(M)),
        ("sip:alice@example.com", support::APP_TOKEN.to_owned()),
    ] {
        let ch = create_channel(&s, user, Format::Json, None, Some(20)).await;
        polls.push(spawn_poll_as(channel_url(&ch), None, token));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut probe = tokio::net::TcpStream::connect(s.addr()).await.expect("tcp");
    probe
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let early =
        tokio::time::timeout(Duration::from_millis(1500), probe.read_to_end(&mut answer)).await;
    assert!(
        early.is_err(),
        "served while two sockets and two polls hold the cap of four: {:?}",
        String::from_utf8_lossy(&answer)
    );
    drop(sockets.pop());
    tokio::time::timeout(Duration::from_secs(5), probe.read_to_end(&mut answer))
        .await
        .expect("served once a socket closed")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    for p in polls {
        p.abort();
    }
}

/// One token holds at most a quarter of `NETAPI_CHAT_MAX_CONNECTIONS` in long polls waiting
/// and sockets open (two of eight here): a poll is never idle, so without a share one token
/// acting for many users held every place and other tenants' requests waited for a poll to
/// end (20 s in the amplification review). Past its share a poll or a handshake is `429
/// POL2005` with `Retry-After`, in the negotiated format; another token still polls; a place
/// is given back when its poll answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_holds_at_most_a_quarter_of_the_connection_cap_in_waits() {
    let s = server(&[("NETAPI_CHAT_MAX_CONNECTIONS", "8")]);
    let mut polls = Vec::new();
    for user in [A, B] {
        let ch = create_channel(&s, user, Format::Json, None, Some(2)).await;
        polls.push(spawn_poll(channel_url(&ch), None));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mallory = create_channel(&s, M, Format::Json, None, Some(1)).await;
    for f in FORMATS {
        let a = poll(&channel_url(&mallory), f).await;
        a.assert_error(429, "POL2005", f);
        assert!(!a.header("retry-after").is_empty(), "{}", a.body);
    }
    let socket = create_socket_channel(&s, M).await;
    match connect(&channel_url(&socket), support::APP_TOKEN, Format::Json).await {
        Err(status) => assert_eq!(status, 429, "a socket counts in the token's share"),
        Ok(_) => panic!("a third wait of one token past its share of two"),
    }
    // Mallory's own token has a share of its own.
    let auth = format!("Bearer {}", user_token(M));
    let a = send(
        "POST",
        &channel_url(&mallory),
        &[("authorization", auth.as_str())],
        None,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    // Once the two polls answered, the token polls again.
    for p in polls {
        assert_eq!(p.await.expect("poll").0, 200);
    }
    assert_eq!(poll(&channel_url(&mallory), Format::Json).await.status, 200);
}

/// A long poll through the published client waits its channel's whole `maxWaitTime` and is
/// answered an empty list: progenitor's default timeout of 15 s cut every poll that waited
/// longer (the server's own default wait is 25 s; an outside review of the client). 16 s here.
#[tokio::test]
async fn the_published_client_waits_a_long_poll_out() {
    let s = server(&[]);
    let ch = create_channel(&s, A, Format::Json, None, Some(16)).await;
    let url = ch.resource_url.unwrap_or_default();
    let id = url.rsplit('/').next().unwrap_or_default();
    let started = std::time::Instant::now();
    let answer = s
        .client()
        .poll_notifications(A, id, None)
        .await
        .expect("the poll is answered, not cut by the client");
    assert!(answer.into_inner().notification_list.is_empty());
    assert!(
        started.elapsed() >= Duration::from_secs(15),
        "it waited: {:?}",
        started.elapsed()
    );
}

/// The token's share counts channels being read, not connections: at its share (two of a cap
/// of eight), a newer socket on a channel the token reads takes it over (the older is closed
/// 1008) and a newer poll on a channel it polls ends the older (`409 SVC1012`) and waits in
/// its place, where both were refused `429` until the older connection ended (a client whose
/// socket went half-dead behind a NAT waited for the keep-alive to close it: the channels
/// review). A channel the token does not read yet is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_at_its_share_still_takes_its_own_channel_over() {
    let s = server(&[("NETAPI_CHAT_MAX_CONNECTIONS", "8")]);
    let sockets = create_socket_channel(&s, A).await;
    let mut first = connect(&channel_url(&sockets), support::APP_TOKEN, Format::Json)
        .await
        .expect("socket");
    let polled = create_channel(&s, B, Format::Json, None, Some(20)).await;
    let mut older = spawn_poll(channel_url(&polled), None);
    // A third channel is refused once the poll waits (on a loaded machine it may take a
    // while to get there: until then the third socket is taken, and closed again; a poll
    // arriving while that early socket is open is itself refused `429`, and polls again).
    let third = create_socket_channel(&s, M).await;
    support::within_20s(Duration::from_millis(100), async || {
        if older.is_finished() {
            older = spawn_poll(channel_url(&polled), None);
            return Err("the older poll came while an early third socket was open".to_owned());
        }
        match connect(&channel_url(&third), support::APP_TOKEN, Format::Json).await {
            Err(429) => Ok(()),
            // The sockets' own share (half the cap), while a third socket taken too early
            // is still closing.
            Err(503) => Err("the server's sockets are full for a moment".to_owned()),
            Err(status) => panic!("a third channel past the share of two: {status}"),
            Ok(mut early) => {
                let _ = early.close(None).await;
                Err("the older poll does not wait yet".to_owned())
            }
        }
    })
    .await;
    let _second = connect(&channel_url(&sockets), support::APP_TOKEN, Format::Json)
        .await
        .expect("the token takes its own channel's socket over at its share");
    assert_eq!(
        close_code(&mut first, "the older socket is closed").await,
        Some(1008)
    );
    // The newer poll got past the share (the older is superseded only by a poll that did).
    let newer = spawn_poll(channel_url(&polled), Some(Format::Xml));
    let (status, _, body) = older.await.expect("older poll");
    assert_eq!(status, 409, "the older poll is superseded: {body}");
    assert!(body.contains("SVC1012"), "{body}");
    newer.abort();
}

/// A client that vanished without closing its socket (modelled by one that reads nothing, so
/// it answers no Ping) loses it: after a quiet round (the channel's 1 s `maxWaitTime`) the
/// server pings, and with nothing back within 5 s it closes the socket (1002), on either
/// binding. A client that reads (and so answers Pings) keeps its socket as long.
#[tokio::test]
async fn a_socket_whose_client_answers_no_ping_is_closed() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let s = server(&[]);
    let ch = create_socket_channel(&s, A).await;
    let url = channel_url(&ch);
    // Reading: Pings come and are answered, and the socket stays open past the Pong wait.
    let mut alive = connect(&url, support::APP_TOKEN, Format::Json)
        .await
        .unwrap();
    let mut pings = 0;
    let until = tokio::time::Instant::now() + Duration::from_secs(8);
    while let Ok(m) = tokio::time::timeout_at(until, alive.next()).await {
        match m {
            Some(Ok(Message::Ping(_))) => pings += 1,
            other => panic!("a socket that answers its Pings stays open: {other:?}"),
        }
    }
    assert!(pings >= 2, "{pings} Pings in 8 quiet seconds");
    drop(alive);
    for oma in [false, true] {
        let mut silent = if oma {
            connect_oma(&url, Format::Json).await.unwrap().0
        } else {
            connect(&url, support::APP_TOKEN, Format::Json)
                .await
                .unwrap()
        };
        // Reads nothing (answers nothing) for longer than a round plus the Pong wait.
        tokio::time::sleep(Duration::from_secs(8)).await;
        let closed = close_code(&mut silent, "the silent socket is closed").await;
        assert_eq!(closed, Some(1002), "OMA binding: {oma}");
    }
}

/// A socket whose token is revoked is closed (1008) within about a second although nothing
/// is sent to it and its client keeps talking (a Ping every 200 ms): before, the credentials
/// were looked at only after a wait for the mailbox, which every client frame started again,
/// so such a socket stayed open (and kept its channel alive) for as long as it talked.
#[tokio::test]
async fn a_revoked_token_ends_its_socket_while_its_client_talks() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let s = server(&[]);
    let ch = create_socket_channel(&s, B).await;
    let token = support::user_token(B);
    let mut ws = connect(&channel_url(&ch), &token, Format::Json)
        .await
        .unwrap();
    revoke(&s, &token).await;
    let revoked = std::time::Instant::now();
    let closed = loop {
        assert!(
            revoked.elapsed() < Duration::from_secs(10),
            "still open 10 s after the revocation"
        );
        if let Err(e) = ws.send(Message::Ping(Vec::new().into())).await {
            // Closed meanwhile: its close frame may still be there to read.
            break close_code(&mut ws, &format!("closed ({e}), its close frame")).await;
        }
        match tokio::time::timeout(Duration::from_millis(200), ws.next()).await {
            Ok(Some(Ok(Message::Close(c)))) => break c.map(|c| u16::from(c.code)),
            Ok(Some(Ok(_))) | Err(_) => continue,
            Ok(other) => panic!("the socket ended without a close frame: {other:?}"),
        }
    };
    assert_eq!(closed, Some(1008));
}

/// A socket streams only while its credentials hold: once its token is revoked (the token file
/// edited under the running server), the next notification is not sent on it; the socket is
/// closed (1008) and the notification waits for a socket whose credentials hold.
#[tokio::test]
async fn a_revoked_token_ends_its_socket_before_the_next_frame() {
    let s = server(&[]);
    let ch = create_socket_channel(&s, B).await;
    subscribe(&s, B, &ch, "bob-app").await;
    let url = channel_url(&ch);
    let token = support::user_token(B);
    let mut ws = connect(&url, &token, Format::Json).await.unwrap();
    invite(&s, A, B, "before").await;
    let before = frame(&mut ws, Format::Json).await;
    assert_eq!(before.1, "before");
    ack(&mut ws, &before.0).await;
    revoke(&s, &token).await;
    invite(&s, A, B, "after").await;
    assert_eq!(
        close_code(&mut ws, "the revoked token's socket is closed").await,
        Some(1008)
    );
    let mut app = connect(&url, support::APP_TOKEN, Format::Json)
        .await
        .unwrap();
    assert_eq!(frame(&mut app, Format::Json).await.1, "after", "not lost");
}

/// A `connCheck` may write the store (a new lifetime), so an OMA client's frames count against
/// its token's request rate like requests: past it, the socket is closed (1008).
#[tokio::test]
async fn conn_checks_count_against_the_tokens_request_rate() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let s = server(&[("NETAPI_CHAT_RATE_LIMIT", "50")]);
    let ch = create_socket_channel(&s, A).await;
    let (mut ws, _) = connect_oma(&channel_url(&ch), Format::Json)
        .await
        .expect("handshake");
    let mut acks = 0;
    let mut closed = None;
    for _ in 0..200 {
        if ws
            .send(Message::Text(
                r#"{"connCheck":{"newChannelLifetime":600}}"#.into(),
            ))
            .await
            .is_err()
        {
            break;
        }
    }
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
        match m {
            Ok(Message::Text(_)) => acks += 1,
            Ok(Message::Close(c)) => {
                closed = c.map(|c| u16::from(c.code));
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    assert_eq!(closed, Some(1008), "after {acks} connAcks");
    assert!(acks < 200, "{acks} connAcks: none refused");
}

/// Stray frames on the project's own binding (text that acknowledges nothing, binary) count
/// against the token's request rate as the OMA binding's `connCheck`s do: a flood of them is
/// closed (1008) instead of keeping a core busy (the channels review of 2026-12-07).
#[tokio::test]
async fn stray_frames_count_against_the_tokens_request_rate() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let s = server(&[("NETAPI_CHAT_RATE_LIMIT", "50")]);
    let ch = create_socket_channel(&s, B).await;
    let mut ws = connect(&channel_url(&ch), &support::user_token(B), Format::Json)
        .await
        .unwrap();
    for n in 0..400 {
        let m = if n % 2 == 0 {
            Message::Text("msg_0".into())
        } else {
            Message::Binary(vec![0u8; 8].into())
        };
        if ws.send(m).await.is_err() {
            break;
        }
    }
    let mut closed = None;
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
        match m {
            Ok(Message::Close(c)) => {
                closed = c.map(|c| u16::from(c.code));
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    assert_eq!(closed, Some(1008));
}

/// A client frame over 1 KiB (a connCheck or an acknowledgement is a few dozen bytes) ends the
/// socket with 1009, on either binding, instead of a dropped connection.
#[tokio::test]
async fn a_frame_over_the_limit_closes_the_socket_with_1009() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let s = server(&[]);
    let ch = create_socket_channel(&s, A).await;
    let url = channel_url(&ch);
    let padded = format!(
        r#"{{"connCheck":{{"newChannelLifetime":600}}{}}}"#,
        " ".repeat(1100)
    );
    for oma in [false, true] {
        let mut ws = if oma {
            connect_oma(&url, Format::Json).await.unwrap().0
        } else {
            connect(&url, support::APP_TOKEN, Format::Json)
                .await
                .unwrap()
        };
        ws.send(Message::Text(padded.clone().into()))
            .await
            .expect("send");
        assert_eq!(
            close_code(&mut ws, "the socket is closed").await,
            Some(1009),
            "OMA binding: {oma}"
        );
    }
}

#[tokio::test]
async fn deleting_a_channel_closes_its_socket() {
    let s = server(&[]);
    let ch = create_socket_channel(&s, A).await;
    let mut ws = connect(&channel_url(&ch), support::APP_TOKEN, Format::Json)
        .await
        .unwrap();
    let a = send_empty("DELETE", ch.resource_url.as_deref().unwrap(), Format::Json).await;
    assert_eq!(a.status, 204);
    let closed = close_code(&mut ws, "the socket is closed").await;
    assert_eq!(closed, Some(1001));
}

// ------------------------------------------------------------------ WebSockets, OMA clients

const OMA_PROTOCOL: &str = "notificationchannel-netapi-rest.openmobilealliance.org";

/// Opens a channel's socket as a client written against OMA's WebSockets binding does: the
/// `Authorization` header, only OMA's subprotocol offered, `Accept` naming `f`; the socket
/// and the subprotocol the server selected, or the HTTP status of a refused handshake.
async fn connect_oma(url: &str, f: Format) -> Result<(Socket, Option<String>), u16> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().expect("ws URL");
    let h = request.headers_mut();
    h.insert(
        http::header::AUTHORIZATION,
        format!("Bearer {}", support::APP_TOKEN).parse().unwrap(),
    );
    h.insert(
        http::header::SEC_WEBSOCKET_PROTOCOL,
        OMA_PROTOCOL.parse().unwrap(),
    );
    h.insert(http::header::ACCEPT, f.media_type().parse().unwrap());
    handshake(request).await
}

/// The next text frame of an OMA socket (within 10 s), as sent. Stops reading right after
/// it, so the Ping that follows the frame is not read and no Pong goes back until the socket
/// is read again (tungstenite answers a Ping when it reads it).
async fn oma_text(ws: &mut Socket) -> String {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame within 10 s")
            .expect("the socket is open")
            .expect("a frame");
        match m {
            Message::Text(t) => return t.to_string(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("a text frame, not {other:?}"),
        }
    }
}

/// The next frame of an OMA socket read as a long poll's answer: a `notificationList`
/// (XML valid against the XSD), never empty, and exactly the text the long poll's encoder
/// writes for it.
async fn oma_frame(ws: &mut Socket, f: Format) -> Vec<ChannelNotification> {
    let text = oma_text(ws).await;
    if f == Format::Xml {
        support::xsd_validate(&text);
    }
    let list: NotificationList =
        netapi_chat_runtime::wire::decode(f, text.as_bytes(), &XmlLimits::default())
            .unwrap_or_else(|e| panic!("a notificationList: {e:?}: {text}"));
    assert!(!list.items.is_empty(), "an empty list is not sent: {text}");
    assert_eq!(
        String::from_utf8(netapi_chat_runtime::wire::encode(f, &list)).unwrap(),
        text,
        "the frame is the long poll's body"
    );
    list.items
}

/// The invitation subjects of an OMA socket's frames, read until `n` have come; the frames'
/// sizes too.
async fn oma_subjects(ws: &mut Socket, f: Format, n: usize) -> (Vec<String>, Vec<usize>) {
    let (mut subjects, mut sizes) = (Vec::new(), Vec::new());
    while subjects.len() < n {
        let items = oma_frame(ws, f).await;
        sizes.push(items.len());
        for e in items {
            let n = e
                .session_invitation_notification
                .clone()
                .unwrap_or_else(|| panic!("an invitation: {e:?}"));
            subjects.push(n.subject.unwrap_or_default());
        }
    }
    (subjects, sizes)
}

/// Reads an OMA socket on for `d`, expecting no text frame: the Ping that followed the last
/// frame is read and its Pong goes back (tungstenite writes it on the read after the Ping),
/// so the server acknowledges that frame.
async fn read_on(ws: &mut Socket, d: Duration) {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let until = tokio::time::Instant::now() + d;
    while let Ok(m) = tokio::time::timeout_at(until, ws.next()).await {
        match m {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("nothing more was expected: {other:?}"),
        }
    }
}

/// A client written against OMA's WebSockets binding works unchanged: offering only OMA's
/// subprotocol gets it selected (also for a browser, whose token entry may stand beside it),
/// offering ours too gets ours; a chat message to the channel's user arrives as a
/// `notificationList` frame holding its `messageNotification`, exactly as a long poll would
/// answer it, in JSON and in XML.
#[tokio::test]
async fn an_oma_client_gets_its_subprotocol_and_notification_lists() {
    let s = server(&[]);
    let ch = create_socket_channel(&s, A).await;
    subscribe(&s, A, &ch, "oma-app").await;
    let url = channel_url(&ch);

    let (_both, selected) = connect_browser(
        &url,
        &[OMA_PROTOCOL, PROTOCOL, &bearer(support::APP_TOKEN)],
        Format::Json,
    )
    .await
    .expect("handshake");
    assert_eq!(
        selected.as_deref(),
        Some(PROTOCOL),
        "ours, when both are offered"
    );
    let (_browser, selected) = connect_browser(
        &url,
        &[OMA_PROTOCOL, &bearer(support::APP_TOKEN)],
        Format::Json,
    )
    .await
    .expect("an OMA browser's handshake");
    assert_eq!(selected.as_deref(), Some(OMA_PROTOCOL));
    drop((_both, _browser));

    let sid = chat::connected_session(&s, B, &docs::session("oma", &[A])).await;
    for f in FORMATS {
        let (mut ws, selected) = connect_oma(&url, f).await.expect("the OMA handshake");
        assert_eq!(selected.as_deref(), Some(OMA_PROTOCOL));
        let text = format!("hello in {f:?}");
        chat::send_message(&s, B, &sid, &docs::message(&text)).await;
        // What came before comes first (the invitation, on the first socket; on the second,
        // the first socket's frames, closed before they settled, come again); then this one.
        let got = loop {
            let items = oma_frame(&mut ws, f).await;
            if let Some(n) = items.into_iter().find_map(|e| {
                e.message_notification.filter(|n| {
                    n.chat_message.as_ref().map(|m| m.text.as_str()) == Some(text.as_str())
                })
            }) {
                break n;
            }
        };
        assert_eq!(got.sender_address, B);
        assert_eq!(
            got.chat_message.map(|m| m.text).as_deref(),
            Some(text.as_str())
        );
        // Read on, so the Pong of the frame's Ping goes back, then hand the channel on.
        read_on(&mut ws, Duration::from_millis(300)).await;
        drop(ws);
    }
}

/// A `connCheck` (in the socket's format) starts the lifetime again with its
/// `newChannelLifetime`, granted as a refresh grants it, and is answered with a `connAck`
/// naming it; the channel shows it. A frame that is not a `connCheck` closes the socket with
/// 1007.
#[tokio::test]
async fn an_oma_conn_check_is_answered_with_a_conn_ack_and_refreshes_the_lifetime() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let s = server(&[]);
    let ch = create_socket_channel(&s, A).await;
    let url = channel_url(&ch);
    let resource = ch.resource_url.clone().unwrap();
    assert_eq!(ch.channel_lifetime, Some(3600));
    for (f, check, granted) in [
        (
            Format::Json,
            r#"{"connCheck":{"checkInterval":30,"newChannelLifetime":1000000}}"#,
            86_400,
        ),
        (
            Format::Xml,
            r#"<?xml version="1.0" encoding="UTF-8"?><nc:connCheck xmlns:nc="urn:oma:xml:rest:netapi:notificationchannel:1"><checkInterval>30</checkInterval><newChannelLifetime>120</newChannelLifetime></nc:connCheck>"#,
            120,
        ),
        // Without newChannelLifetime: the lifetime granted so far, started again.
        (Format::Json, r#"{"connCheck":{}}"#, 120),
    ] {
        let (mut ws, _) = connect_oma(&url, f).await.expect("handshake");
        ws.send(Message::Text(check.into()))
            .await
            .expect("connCheck");
        let text = oma_text(&mut ws).await;
        if f == Format::Xml {
            support::xsd_validate(&text);
        }
        let ack: ConnAck =
            netapi_chat_runtime::wire::decode(f, text.as_bytes(), &XmlLimits::default())
                .unwrap_or_else(|e| panic!("a connAck: {e:?}: {text}"));
        assert_eq!(ack.channel_lifetime, granted, "{check}");
        let read: NotificationChannel = send_empty("GET", &resource, f).await.decode();
        assert_eq!(read.channel_lifetime, Some(granted), "{check}");
        drop(ws);
    }
    let (mut ws, _) = connect_oma(&url, Format::Json).await.expect("handshake");
    ws.send(Message::Text("hello".into())).await.expect("send");
    assert_eq!(
        close_code(&mut ws, "closed on a stray frame").await,
        Some(1007)
    );
}

/// Takeover holds for OMA sockets: a newer one closes the older with 1008, and what the older
/// was sent (its Pong not come back) comes on the newer one.
#[tokio::test]
async fn a_newer_oma_socket_takes_the_channel_over() {
    let s = server(&[]);
    let ch = create_socket_channel(&s, A).await;
    subscribe(&s, A, &ch, "app").await;
    let url = channel_url(&ch);
    let (mut first, _) = connect_oma(&url, Format::Json).await.expect("handshake");
    invite(&s, B, A, "x").await;
    assert_eq!(oma_subjects(&mut first, Format::Json, 1).await.0, ["x"]);
    let (mut second, selected) = connect_oma(&url, Format::Json).await.expect("handshake");
    assert_eq!(selected.as_deref(), Some(OMA_PROTOCOL));
    // The newer socket first: reading the older one would send the Pong of its frame.
    assert_eq!(
        oma_subjects(&mut second, Format::Json, 1).await.0,
        ["x"],
        "sent again on the newer socket"
    );
    // The older one, waiting for its Pong, looks at its channel each second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        close_code(&mut first, "the older socket is closed").await,
        Some(1008)
    );
    // An idle socket (its frame's Pong back) is taken over too; x, its Pong back for less
    // than the settle time, comes again on the newer socket before y.
    read_on(&mut second, Duration::from_millis(300)).await;
    let (mut third, _) = connect_oma(&url, Format::Json).await.expect("handshake");
    assert_eq!(
        close_code(&mut second, "the idle socket is closed").await,
        Some(1008)
    );
    invite(&s, B, A, "y").await;
    assert_eq!(
        oma_subjects(&mut third, Format::Json, 2).await.0,
        ["x", "y"]
    );
}

/// Nothing is lost with an OMA socket that closes before the Pong of its frame: the frame's
/// notifications come first on the next socket, with what arrived meanwhile, several to a
/// frame. Nor with one closed within the settle time (5 s) after a Pong: a client's WebSocket
/// stack answers the Ping of a frame its application may not have read yet (a library reading
/// ahead, a browser), so those frames come again too. Once settled, they do not.
#[tokio::test]
async fn an_oma_socket_closed_before_its_frames_settled_loses_nothing() {
    // Five invitations a format from one inviter to one invitee.
    let s = server(&[("NETAPI_CHAT_MAX_PENDING_INVITATIONS_PER_INVITEE", "20")]);
    for f in FORMATS {
        // A channel of its own per format: nothing left over from the other.
        let ch = create_socket_channel(&s, A).await;
        subscribe(&s, A, &ch, "app").await;
        let url = channel_url(&ch);
        let (mut ws, _) = connect_oma(&url, f).await.expect("handshake");
        invite(&s, B, A, "one").await;
        assert_eq!(oma_subjects(&mut ws, f, 1).await.0, ["one"]);
        // Gone without reading the Ping after the frame: no Pong was sent.
        drop(ws);
        invite(&s, B, A, "two").await;
        invite(&s, B, A, "three").await;
        // Time for the feed to put both in the mailbox, so they share the first frame.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (mut ws, _) = connect_oma(&url, f).await.expect("handshake");
        let (subjects, sizes) = oma_subjects(&mut ws, f, 3).await;
        assert_eq!(subjects, ["one", "two", "three"]);
        assert_eq!(sizes, [3], "one frame, up to maxNotifications");
        // Reading on sends the Pong; the next frame comes only after it was received.
        invite(&s, B, A, "four").await;
        assert_eq!(oma_subjects(&mut ws, f, 1).await.0, ["four"]);
        // Closed at once, as an application that read one frame and closed, its stack having
        // answered the Ping of the first: both frames come again.
        drop(ws);
        let (mut ws, _) = connect_oma(&url, f).await.expect("handshake");
        assert_eq!(
            oma_subjects(&mut ws, f, 4).await.0,
            ["one", "two", "three", "four"],
            "frames closed within the settle time of their Pong come again"
        );
        // Kept open past the settle time, they leave the outbox: only what is new comes next.
        read_on(&mut ws, Duration::from_secs(6)).await;
        drop(ws);
        let (mut ws, _) = connect_oma(&url, f).await.expect("handshake");
        invite(&s, B, A, "five").await;
        assert_eq!(
            oma_subjects(&mut ws, f, 1).await.0,
            ["five"],
            "settled frames do not come again"
        );
    }
}

#[tokio::test]
async fn the_channel_list_is_paged_like_every_list() {
    let s = server(&[]);
    let mut made = Vec::new();
    for _ in 0..3 {
        made.push(create_channel(&s, A, Format::Json, None, Some(1)).await);
    }
    for f in FORMATS {
        let first = send_empty("GET", &format!("{}?maxEntries=2", s.urls().channels(A)), f).await;
        assert_eq!(first.status, 200, "{}", first.body);
        let page: NotificationChannelList = first.decode();
        assert_eq!(page.notification_channel, made[..2].to_vec());
        let next = page
            .link
            .iter()
            .find(|l| l.rel == "next")
            .expect("a next link")
            .href
            .clone();
        assert_eq!(first.header("link"), format!("<{next}>; rel=\"next\""));
        let last = send_empty("GET", &next, f).await;
        let page: NotificationChannelList = last.decode();
        assert_eq!(page.notification_channel, made[2..].to_vec());
        assert!(page.link.is_empty() && last.header("link").is_empty());
    }
    send_empty(
        "GET",
        &format!("{}?maxEntries=0", s.urls().channels(A)),
        Format::Json,
    )
    .await
    .assert_error(400, "SVC0002", Format::Json);
}

#[tokio::test]
async fn a_graceful_stop_answers_an_open_poll_at_once() {
    // The poll would wait 120 s and the drain allows 60 s: only an answer at the stop itself
    // comes within the client's 30 s.
    let s = server(&[
        ("NETAPI_CHAT_CHANNEL_POLL_WAIT", "120s"),
        ("NETAPI_CHAT_SHUTDOWN_GRACE_SECS", "60"),
    ]);
    let ch = create_channel(&s, A, Format::Json, None, None).await;
    let url = channel_url(&ch);
    let open = spawn_poll(url, None);
    // Ordering only (a poll arriving during the stop is answered at once too).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &s.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let (code, _, body) = open.await.unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(body, r#"{"notificationList":[]}"#);
}

/// A graceful stop closes a socket that waits for a frame's acknowledgement (1001) and the
/// process exits well inside its grace period: an open socket counts against the connection
/// cap until it closes, so the drain waits for it, and one waiting for an acknowledgement
/// checked only whether its channel ended, holding the stop for the whole grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_closes_a_socket_waiting_for_an_acknowledgement() {
    let mut s = server(&[("NETAPI_CHAT_SHUTDOWN_GRACE_SECS", "60")]);
    let ch = create_socket_channel(&s, A).await;
    subscribe(&s, A, &ch, "app").await;
    invite(&s, B, A, "x").await;
    let mut ws = connect(&channel_url(&ch), support::APP_TOKEN, Format::Json)
        .await
        .unwrap();
    frame(&mut ws, Format::Json).await;
    // Reading on, so Pings are answered and the socket stays alive; not acknowledging.
    let reader = tokio::spawn(async move { close_code(&mut ws, "closed at the stop").await });
    let started = std::time::Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &s.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exited = tokio::task::spawn_blocking(move || s.wait_exit(20))
        .await
        .unwrap();
    assert!(exited.is_some_and(|e| e.success()), "{exited:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(reader.await.unwrap(), Some(1001));
}

/// A deleted channel leaves nothing running: its expiry task ends with it, not at the end of
/// its lifetime (an hour by default, a day at most). Before, each create-and-delete left a
/// sleeping task behind, so memory grew with the channels' history; `/metrics` shows the
/// runtime's tasks to an operator.
#[tokio::test]
async fn a_deleted_channel_leaves_no_task_behind() {
    let s = server(&[("NETAPI_CHAT_METRICS_TOKEN", METRICS_TOKEN)]);
    let tasks = async || support::metric(&s.base, METRICS_TOKEN, "netapi_chat_runtime_tasks").await;
    let before = tasks().await;
    // A gauge `/metrics` did not show would read 0 here, and every comparison below pass.
    assert!(before > 0.0, "netapi_chat_runtime_tasks is on /metrics");
    for _ in 0..60 {
        let ch = create_channel(&s, A, Format::Json, None, None).await;
        let url = ch.resource_url.expect("resourceURL");
        assert_eq!(send("DELETE", &url, &[], None).await.status, 204);
    }
    // Connections of the requests above may take a moment to close.
    let mut after = tasks().await;
    for _ in 0..50 {
        if after < before + 20.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = tasks().await;
    }
    assert!(
        after < before + 20.0,
        "{before} tasks before 60 channels were made and deleted, {after} after"
    );
}

/// Opens `/metrics` on the servers that set it (`NETAPI_CHAT_METRICS_TOKEN`).
const METRICS_TOKEN: &str = "channels-metrics-token-0123456789abcdef";

/// `netapi_chat_notifications_held_bytes` of `s` (started with [`METRICS_TOKEN`]).
async fn held_bytes(s: &Server) -> f64 {
    support::metric(
        &s.base,
        METRICS_TOKEN,
        "netapi_chat_notifications_held_bytes",
    )
    .await
}

/// What a channel holds when it goes (deleted, or expired, with notifications nobody polled)
/// leaves the server's delivery totals with it: `netapi_chat_notifications_held_bytes` comes
/// back to 0. Before, those bytes stayed counted for good, and enough of them pushed the
/// total past the delivery budget, so that healthy subscriptions were disabled.
#[tokio::test]
async fn what_a_deleted_channel_held_leaves_the_delivery_totals() {
    let s = server(&[("NETAPI_CHAT_METRICS_TOKEN", METRICS_TOKEN)]);
    let held = async || held_bytes(&s).await;
    let ch = create_channel(&s, B, Format::Json, None, None).await;
    subscribe(&s, B, &ch, "held").await;
    for n in 0..3 {
        invite(&s, A, B, &format!("unpolled {n}")).await;
    }
    let before = held().await;
    assert!(before > 0.0, "the channel holds its invitations: {before}");
    let url = ch.resource_url.expect("resourceURL");
    assert_eq!(send("DELETE", &url, &[], None).await.status, 204);
    assert_eq!(held().await, 0.0, "{before} bytes held before the delete");
}

/// What a subscription left in a channel nobody polls leaves the delivery totals when the
/// subscription is deleted, the channel staying: `netapi_chat_notifications_held_bytes`
/// comes back to 0 (within 20 s: the subscription's feed lets go of it as it ends), and the
/// channel still gets the next subscription's notifications, not the deleted one's. Before,
/// those bytes stayed until a poll passed over them, which never came: a client deleting and
/// making again a subscription of a channel it never polls pinned the whole delivery budget,
/// and every other backlog over its shrunken share was disabled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_deleted_subscription_left_in_a_channel_leaves_the_delivery_totals() {
    let s = server(&[("NETAPI_CHAT_METRICS_TOKEN", METRICS_TOKEN)]);
    let held = async || held_bytes(&s).await;
    let ch = create_channel(&s, B, Format::Json, None, None).await;
    let sub = subscribe(&s, B, &ch, "first").await;
    for n in 0..3 {
        invite(&s, A, B, &format!("unpolled {n}")).await;
    }
    let before = held().await;
    assert!(before > 0.0, "the channel holds its invitations: {before}");
    assert_eq!(send("DELETE", &sub, &[], None).await.status, 204);
    support::within_20s(Duration::from_millis(50), async || {
        let now = held().await;
        if now == 0.0 {
            return Ok(());
        }
        Err(format!(
            "{now} bytes still held ({before} before the delete)"
        ))
    })
    .await;
    subscribe(&s, B, &ch, "second").await;
    invite(&s, A, B, "after").await;
    let got = poll_list(&channel_url(&ch), Format::Json).await;
    assert_eq!(
        invitations(&got)
            .iter()
            .map(|(_, s)| s.as_str())
            .collect::<Vec<_>>(),
        ["after"],
        "only the live subscription's"
    );
}

/// A long poll waits (here up to 20 s) with credentials checked when it came: a token revoked
/// meanwhile is not handed what arrives after the revocation (the poll answers `401` and takes
/// nothing), and the owner's next poll gets it. Before, the revoked holder got it, and the
/// owner's next poll acknowledged it unseen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_whose_token_is_revoked_meanwhile_takes_nothing() {
    let s = server(&[]);
    let ch = create_channel(&s, B, Format::Json, None, Some(20)).await;
    subscribe(&s, B, &ch, "bob-app").await;
    let url = channel_url(&ch);
    let token = support::user_token(B);
    let waiting = {
        let (url, auth) = (url.clone(), format!("Bearer {token}"));
        tokio::spawn(
            async move { support::send_authorized("POST", &url, &auth, Format::Json).await },
        )
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    revoke(&s, &token).await;
    invite(&s, A, B, "after").await;
    let a = waiting.await.expect("the revoked poll");
    assert_eq!(a.status, 401, "{}", a.body);
    assert!(!a.body.contains("after"), "{}", a.body);
    let got = poll_list(&url, Format::Json).await;
    assert_eq!(
        invitations(&got)
            .iter()
            .map(|(_, s)| s.as_str())
            .collect::<Vec<_>>(),
        ["after"],
        "the owner gets it"
    );
}
