//! Paged lists (issue 12 item 4): no list operation answers an unbounded body.
//!
//! Every list of the spec (subscriptions, chatSessions, participants, messages) is walked with
//! its `next` links, in JSON and XML, and must yield every entry exactly once in creation
//! order; the default page size bounds a long list; the `Link` header and the body's `link`
//! agree; `maxEntries` out of bounds and a cursor the server did not make are `400 SVC0002`; a
//! cursor taken after an entry that is gone since still works; the progenitor client pages.

mod support;

use netapi_chat_api::{
    ChatMessageList, ChatSessionList, ChatSubscription, ChatSubscriptionList, Link, ParticipantList,
};
use netapi_chat_runtime::Format;
use netapi_chat_runtime::wire::Document;
use support::docs::{self, last_segment};
use support::{Answer, Server, chat, send_doc, send_empty};

const FORMATS: [Format; 2] = [Format::Json, Format::Xml];
const ALICE: &str = "sip:alice@example.com";
const BOB: &str = "sip:bob@example.com";

fn subscription_doc(n: usize) -> ChatSubscription {
    // Loopback is allowed by the harness; nothing is delivered in these tests.
    let mut doc = docs::subscription("http://127.0.0.1:10/notify");
    doc.callback_reference.callback_data = Some(format!("sub-{n}"));
    doc
}

/// Starts a session from `from` to `to` and has `to` accept it; returns the session id.
async fn connected_session(s: &Server, from: &str, to: &str) -> String {
    chat::connected_session(s, from, &docs::session("paging", &[to])).await
}

async fn send_messages(s: &Server, from: &str, sid: &str, texts: &[String]) {
    for t in texts {
        chat::send_message(s, from, sid, &docs::message(t)).await;
    }
}

/// One page as read from the wire: its entries (by a key), the body's next link, the header.
struct Read<K> {
    keys: Vec<K>,
    next: Option<String>,
    header: String,
}

impl<K> Read<K> {
    /// The page answer `a` carries: `keys` of the entries its body lists, the body's `links`
    /// checked against the `Link` header ([`next_of`]), the header itself. Every walk reads
    /// its pages through here, so each makes the same check.
    fn new(a: &Answer, links: &[Link], keys: impl IntoIterator<Item = K>) -> Self {
        Read {
            keys: keys.into_iter().collect(),
            next: next_of(a, links),
            header: a.header("link").to_owned(),
        }
    }
}

/// The body's `next` href, checking that the `Link` header says the same thing.
fn next_of(a: &Answer, links: &[Link]) -> Option<String> {
    let next: Vec<&Link> = links.iter().filter(|l| l.rel == "next").collect();
    assert!(next.len() <= 1, "one next link at most: {links:?}");
    let href = next.first().map(|l| l.href.clone());
    match &href {
        Some(h) => assert_eq!(a.header("link"), format!("<{h}>; rel=\"next\"")),
        None => assert!(
            a.headers.get("link").is_none(),
            "a last page has no Link header"
        ),
    }
    href
}

/// Walks a list from `first_url` following `next` links; returns every page.
async fn walk<T: Document, K>(
    first_url: &str,
    format: Format,
    read: impl Fn(&Answer, T) -> Read<K>,
) -> Vec<Read<K>> {
    let mut pages = Vec::new();
    let mut url = Some(first_url.to_owned());
    while let Some(u) = url {
        let a = send_empty("GET", &u, format).await;
        assert_eq!(a.status, 200, "GET {u}: {}", a.body);
        let page = read(&a, a.decode::<T>());
        url = page.next.clone();
        pages.push(page);
        assert!(pages.len() < 1000, "the walk does not end");
    }
    pages
}

fn flat<K: Clone>(pages: &[Read<K>]) -> Vec<K> {
    pages.iter().flat_map(|p| p.keys.clone()).collect()
}

#[tokio::test]
async fn messages_walked_page_by_page_come_once_each_in_order_and_the_default_page_is_bounded() {
    let s = Server::default_for_tests();
    let sid = connected_session(&s, ALICE, BOB).await;
    // 230 messages: the default page (100) needs three pages.
    let texts: Vec<String> = (0..230).map(|i| format!("m{i:03}")).collect();
    send_messages(&s, ALICE, &sid, &texts).await;

    for f in FORMATS {
        for user in [ALICE, BOB] {
            // No paging parameter: what an OMA client sends.
            let url = s.urls().messages(user, &sid);
            let pages = walk(&url, f, |a, l: ChatMessageList| {
                Read::new(a, &l.link, l.chat_message.iter().map(|m| m.text.clone()))
            })
            .await;
            let sizes: Vec<usize> = pages.iter().map(|p| p.keys.len()).collect();
            assert_eq!(sizes, [100, 100, 30], "{f:?} {user}");
            assert_eq!(
                flat(&pages),
                texts,
                "{f:?} {user}: every message once, in order"
            );
            assert!(pages[0].header.contains("maxEntries=100"));
            assert!(pages[2].header.is_empty());

            // A page size of the client's choice, kept in the next links.
            let pages = walk(
                &format!("{url}?maxEntries=7"),
                f,
                |a, l: ChatMessageList| {
                    Read::new(a, &l.link, l.chat_message.iter().map(|m| m.text.clone()))
                },
            )
            .await;
            assert_eq!(pages.len(), 33);
            assert!(pages.iter().all(|p| p.keys.len() <= 7));
            assert!(pages[0].header.contains("maxEntries=7"));
            assert_eq!(flat(&pages), texts, "{f:?} {user}");
        }
    }
}

/// A participant invited after a long stretch of messages it may not read (1,100 here, more
/// than a page's walk passes: 1,024 rows beyond the page) gets short pages, even an empty one,
/// that link on from where the walk stopped, so that no request reads the whole stretch on
/// the store thread; following them still yields exactly its messages, once each, in order.
#[tokio::test]
async fn a_late_participant_pages_past_what_it_cannot_read_a_bounded_walk_at_a_time() {
    use futures_util::StreamExt as _;
    const CAROL: &str = "tel:+15550001234";
    let s = Server::default_for_tests();
    let sid = connected_session(&s, ALICE, BOB).await;
    let before: Vec<String> = (0..1_100).map(|i| format!("before {i:04}")).collect();
    futures_util::stream::iter(before.iter())
        .map(|t| {
            let (s, sid) = (&s, &sid);
            async move { chat::send_message(s, ALICE, sid, &docs::message(t)).await }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let a = send_doc(
        "POST",
        &s.urls().participants(ALICE, &sid),
        Format::Json,
        &docs::participants(&[CAROL]),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    chat::accept(&s, CAROL, &sid).await;
    let after: Vec<String> = (0..3).map(|i| format!("after {i}")).collect();
    send_messages(&s, ALICE, &sid, &after).await;

    for f in FORMATS {
        let url = format!("{}?maxEntries=2", s.urls().messages(CAROL, &sid));
        let pages = walk(&url, f, |a, l: ChatMessageList| {
            Read::new(a, &l.link, l.chat_message.iter().map(|m| m.text.clone()))
        })
        .await;
        assert_eq!(
            flat(&pages),
            after,
            "{f:?}: Carol's messages, once each, in order"
        );
        assert!(
            pages.len() >= 3 && pages[0].keys.is_empty() && pages[0].next.is_some(),
            "{f:?}: the first walk stops in the stretch Carol cannot read, an empty page \
             linking on: {:?}",
            pages.iter().map(|p| p.keys.len()).collect::<Vec<_>>()
        );
    }
    // Those who could read the stretch page through it as before.
    let pages = walk(
        &format!("{}?maxEntries=1000", s.urls().messages(BOB, &sid)),
        Format::Json,
        |a, l: ChatMessageList| {
            Read::new(a, &l.link, l.chat_message.iter().map(|m| m.text.clone()))
        },
    )
    .await;
    assert_eq!(flat(&pages).len(), 1_103);
    assert_eq!(pages[0].keys.len(), 1_000);
}

/// A server whose session from ALICE to BOB holds 150 messages of about 4 KB; the session and
/// the texts, in order.
async fn long_messages() -> (Server, String, Vec<String>) {
    let s = Server::default_for_tests();
    let sid = connected_session(&s, ALICE, BOB).await;
    let long = "x".repeat(4000);
    let texts: Vec<String> = (0..150).map(|i| format!("{i:03}{long}")).collect();
    send_messages(&s, ALICE, &sid, &texts).await;
    (s, sid, texts)
}

#[tokio::test]
async fn long_messages_are_answered_one_bounded_page_at_a_time() {
    let (s, sid, _) = long_messages().await;
    let url = s.urls().messages(BOB, &sid);
    for f in FORMATS {
        let a = send_empty("GET", &url, f).await;
        assert_eq!(a.status, 200);
        let l: ChatMessageList = a.decode();
        assert_eq!(l.chat_message.len(), 100);
        // 100 messages of ~4 KB and their envelopes, not the 150 the session holds.
        assert!(
            a.body.len() < 100 * (4003 + 1024),
            "{f:?}: {} bytes",
            a.body.len()
        );
        assert!(next_of(&a, &l.link).is_some());
    }
}

/// A page is bounded in bytes as well as in entries: with `maxEntries=1000`, long messages end
/// the page once they reach 512 KiB as stored (before, 1,000 messages of 4,096 characters made
/// one answer of about 20 MB, held while its client read it), and its next link goes on where
/// it stopped: the walk still gets every message once, in order.
#[tokio::test]
async fn a_page_of_long_messages_ends_at_its_byte_budget() {
    let (s, sid, texts) = long_messages().await;
    let url = format!("{}?maxEntries=1000", s.urls().messages(BOB, &sid));
    for f in FORMATS {
        let pages = walk(&url, f, |a, l: ChatMessageList| {
            Read::new(a, &l.link, l.chat_message.iter().map(|m| m.text.clone()))
        })
        .await;
        let first = pages[0].keys.len();
        // 512 KiB of messages as stored (each its 4,003 bytes of text and, here, about 260
        // of ids, times and its recipient): about the 123rd passes it and is the last one;
        // by text alone it would be the 131st.
        assert!((110..=131).contains(&first), "{f:?}: {first}");
        assert!(pages[0].next.is_some());
        assert_eq!(flat(&pages), texts, "{f:?}: each once, in order");
    }
}

#[tokio::test]
async fn subscriptions_sessions_and_participants_are_paged_too() {
    // Bob gets six invitations from alice, one more than the default allows.
    let s = Server::start(&[("NETAPI_CHAT_MAX_PENDING_INVITATIONS_PER_INVITEE", "10")]);
    // 7 subscriptions.
    let mut subs = Vec::new();
    for n in 0..7 {
        let a = send_doc(
            "POST",
            &s.urls().subscriptions(ALICE),
            Format::Json,
            &subscription_doc(n),
        )
        .await;
        assert_eq!(a.status, 201, "{}", a.body);
        subs.push(a.header("location").to_owned());
    }
    // 7 sessions alice started (bob is invited to each), the last a group of 6 invitees.
    let invitees: Vec<String> = (0..6)
        .map(|i| format!("sip:guest{i}@example.com"))
        .collect();
    let mut sessions = Vec::new();
    for n in 0..7 {
        let who: Vec<&str> = if n == 6 {
            invitees.iter().map(String::as_str).collect()
        } else {
            vec![BOB]
        };
        let a = send_doc(
            "POST",
            &s.urls().chat_sessions(ALICE),
            Format::Json,
            &docs::session(&format!("s{n}"), &who),
        )
        .await;
        assert_eq!(a.status, 201, "{}", a.body);
        sessions.push(a.header("location").to_owned());
    }
    let group = last_segment(&sessions[6]);

    for f in FORMATS {
        let pages = walk(
            &format!("{}?maxEntries=3", s.urls().subscriptions(ALICE)),
            f,
            |a, l: ChatSubscriptionList| {
                Read::new(
                    a,
                    &l.link,
                    l.chat_subscription
                        .iter()
                        .map(|c| c.resource_url.clone().unwrap_or_default()),
                )
            },
        )
        .await;
        assert_eq!(pages.len(), 3);
        assert_eq!(flat(&pages), subs, "{f:?} subscriptions");

        let pages = walk(
            &format!("{}?maxEntries=3", s.urls().chat_sessions(ALICE)),
            f,
            |a, l: ChatSessionList| {
                Read::new(
                    a,
                    &l.link,
                    l.chat_session_information
                        .iter()
                        .map(|c| c.resource_url.clone().unwrap_or_default()),
                )
            },
        )
        .await;
        assert_eq!(pages.len(), 3);
        assert_eq!(flat(&pages), sessions, "{f:?} sessions");

        let pages = walk(
            &format!("{}?maxEntries=2", s.urls().participants(ALICE, &group)),
            f,
            |a, l: ParticipantList| {
                Read::new(a, &l.link, l.participant.iter().map(|p| p.address.clone()))
            },
        )
        .await;
        let mut everyone = vec![ALICE.to_owned()];
        everyone.extend(invitees.iter().cloned());
        assert_eq!(pages.len(), 4);
        assert_eq!(flat(&pages), everyone, "{f:?} participants");
    }

    // A short list fits on one page, which has no next link (an OMA client sees OMA's body).
    let a = send_empty("GET", &s.urls().chat_sessions(BOB), Format::Json).await;
    let l: ChatSessionList = a.decode();
    assert_eq!(l.chat_session_information.len(), 6);
    assert!(l.link.is_empty() && a.headers.get("link").is_none());
    assert!(
        !a.body.contains("\"link\""),
        "no link key on a last page: {}",
        a.body
    );
}

#[tokio::test]
async fn a_cursor_stays_valid_when_its_entry_is_gone() {
    let s = Server::default_for_tests();
    let mut subs = Vec::new();
    for n in 0..5 {
        let a = send_doc(
            "POST",
            &s.urls().subscriptions(ALICE),
            Format::Json,
            &subscription_doc(n),
        )
        .await;
        subs.push(a.header("location").to_owned());
    }
    let a = send_empty(
        "GET",
        &format!("{}?maxEntries=2", s.urls().subscriptions(ALICE)),
        Format::Json,
    )
    .await;
    let l: ChatSubscriptionList = a.decode();
    let next = next_of(&a, &l.link).expect("a next page");
    // The last entry of the first page, which the cursor was taken after, is deleted.
    assert_eq!(
        send_empty("DELETE", &subs[1], Format::Json).await.status,
        204
    );
    let a = send_empty("GET", &next, Format::Json).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let l: ChatSubscriptionList = a.decode();
    let got: Vec<String> = l
        .chat_subscription
        .iter()
        .map(|c| c.resource_url.clone().unwrap_or_default())
        .collect();
    assert_eq!(got, subs[2..4]);
}

#[tokio::test]
async fn page_sizes_out_of_bounds_and_foreign_cursors_are_refused() {
    let s = Server::default_for_tests();
    let sid = connected_session(&s, ALICE, BOB).await;
    let lists = [
        s.urls().subscriptions(ALICE),
        s.urls().chat_sessions(ALICE),
        s.urls().participants(ALICE, &sid),
        s.urls().messages(ALICE, &sid),
    ];
    let long = "9".repeat(65);
    for f in FORMATS {
        for list in &lists {
            for q in [
                "maxEntries=1001",
                "maxEntries=0",
                "maxEntries=-5",
                "maxEntries=ten",
                "cursor=abc",
                "cursor=-1",
                "cursor=01",
                "cursor=99999999999999999999",
                &format!("cursor={long}"),
            ] {
                let a = send_empty("GET", &format!("{list}?{q}"), f).await;
                a.assert_error(400, "SVC0002", f);
            }
            for q in [
                "maxEntries=1000",
                "maxEntries=1",
                "cursor=0",
                "cursor=123456789",
            ] {
                let a = send_empty("GET", &format!("{list}?{q}"), f).await;
                assert_eq!(a.status, 200, "{list}?{q}: {}", a.body);
            }
        }
    }
    // Another user's session is still 404 whatever the paging parameters.
    let a = send_empty(
        "GET",
        &format!(
            "{}?maxEntries=5",
            s.urls().messages("sip:mallory@example.com", &sid)
        ),
        Format::Json,
    )
    .await;
    a.assert_error(404, "SVC2008", Format::Json);
}

#[tokio::test]
async fn the_progenitor_client_pages() {
    let s = Server::default_for_tests();
    let sid = connected_session(&s, ALICE, BOB).await;
    let texts: Vec<String> = (0..25).map(|i| format!("c{i:02}")).collect();
    send_messages(&s, ALICE, &sid, &texts).await;
    let client = s.client();
    let size = std::num::NonZeroU64::new(10);
    let mut seen = Vec::new();
    let mut cursor: Option<netapi_chat_client::types::ListMessagesCursor> = None;
    let mut pages = 0;
    loop {
        let r = client
            .list_messages(BOB, &sid, cursor.as_ref(), size)
            .await
            .expect("list_messages");
        let header = r
            .headers()
            .get("link")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let list = r.into_inner().chat_message_list;
        seen.extend(list.chat_message.iter().map(|m| m.text.clone()));
        pages += 1;
        let Some(next) = list.link.iter().find(|l| l.rel == "next") else {
            assert!(header.is_none());
            break;
        };
        assert_eq!(header, Some(format!("<{}>; rel=\"next\"", next.href)));
        let value = next
            .href
            .split(['?', '&'])
            .find_map(|kv| kv.strip_prefix("cursor="))
            .expect("a cursor in the next link");
        cursor = Some(value.parse().expect("a cursor the client accepts"));
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, texts);
}

/// Sessions are listed in their creation order, also for a user invited into an older session
/// after joining a newer one (its join order differs), and paging follows that order.
#[tokio::test]
async fn sessions_come_in_creation_order_not_join_order() {
    let s = Server::default_for_tests();
    let carol = "sip:carol@example.com";
    let older = connected_session(&s, ALICE, carol).await;
    let newer = connected_session(&s, ALICE, BOB).await;
    // Bob is invited into the older session after he joined the newer one.
    let a = send_doc(
        "POST",
        &s.urls().participants(ALICE, &older),
        Format::Json,
        &docs::participants(&[BOB]),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    for f in FORMATS {
        for size in ["", "?maxEntries=1"] {
            let pages = walk(
                &s.url(BOB, &format!("/chatSessions{size}")),
                f,
                |a, l: ChatSessionList| {
                    Read::new(
                        a,
                        &l.link,
                        l.chat_session_information
                            .iter()
                            .map(|c| last_segment(c.resource_url.as_deref().unwrap_or_default())),
                    )
                },
            )
            .await;
            assert_eq!(flat(&pages), [older.clone(), newer.clone()], "{f:?} {size}");
        }
    }
}

/// A page of sessions is bounded in bytes too: each lists its roster, so with
/// `maxEntries=1000` 30 sessions of 100 participants end the first page once their rosters
/// reach the page budget (before, 1,000 such sessions made one 24 MB JSON answer, 30 MB of
/// XML, for a 140-byte GET), and the walk still gets every session once, in order.
#[tokio::test]
async fn a_page_of_large_sessions_ends_at_its_byte_budget() {
    let s = Server::start(&[
        ("NETAPI_CHAT_INVITATION_RATE", "0"),
        ("NETAPI_CHAT_MAX_PENDING_INVITATIONS", "5000"),
        ("NETAPI_CHAT_MAX_PENDING_INVITATIONS_PER_INVITEE", "30"),
    ]);
    let invitees: Vec<String> = (0..99)
        .map(|i| format!("sip:invitee-{i:02}@example.com"))
        .collect();
    let invitees: Vec<&str> = invitees.iter().map(String::as_str).collect();
    let mut made = Vec::new();
    for n in 0..30 {
        let a = send_doc(
            "POST",
            &s.urls().chat_sessions(ALICE),
            Format::Json,
            &docs::session(&format!("large {n}"), &invitees),
        )
        .await;
        assert_eq!(a.status, 201, "{}", a.body);
        made.push(a.created_id());
    }
    let url = format!("{}?maxEntries=1000", s.urls().chat_sessions(ALICE));
    for f in FORMATS {
        let first = send_empty("GET", &url, f).await;
        assert!(
            first.body.len() < 2 * 1024 * 1024,
            "{f:?}: one page is {} bytes",
            first.body.len()
        );
        let pages = walk(&url, f, |a, l: ChatSessionList| {
            Read::new(
                a,
                &l.link,
                l.chat_session_information
                    .iter()
                    .map(|c| last_segment(c.resource_url.as_deref().unwrap_or_default())),
            )
        })
        .await;
        assert!(pages.len() >= 2, "{f:?}: the rosters end the first page");
        assert!(pages[0].keys.len() < 30);
        assert_eq!(flat(&pages), made, "{f:?}: each once, in order");
    }
}

/// Structure-aware JSON (reference §5.3 B): a list resource with no entries is
/// `"child": []`, never a missing key, so a client that iterates `chatMessageList.chatMessage`
/// does not fail on an empty one (`x-empty-array`). Other empty lists stay out: the faces
/// share types, and an OMA 2012 session does not show the seed's `participant` list.
#[tokio::test]
async fn an_empty_list_is_an_empty_array_in_json() {
    let s = Server::default_for_tests();
    let sid = connected_session(&s, ALICE, BOB).await;
    let urls = s.urls();
    let cases = [
        (
            urls.channels(ALICE),
            "notificationChannelList",
            "notificationChannel",
        ),
        (urls.messages(ALICE, &sid), "chatMessageList", "chatMessage"),
        (
            urls.chat_sessions("tel:+15550009999"),
            "chatSessionList",
            "chatSessionInformation",
        ),
    ];
    for (url, root, list) in cases {
        let a = send_empty("GET", &url, Format::Json).await;
        assert_eq!(a.status, 200, "{url}: {}", a.body);
        let doc: serde_json::Value = serde_json::from_str(&a.body).expect("JSON");
        assert_eq!(doc[root][list], serde_json::json!([]), "{url}: {}", a.body);
    }
    let one_to_one = format!(
        "{}/chat/v1/{}/oneToOne/{}/{sid}",
        s.base,
        support::enc(ALICE),
        support::enc(BOB)
    );
    let a = send_empty("GET", &one_to_one, Format::Json).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(!a.body.contains("\"participant\""), "{}", a.body);
}
