mod support;

// The seed flows (OMA-ARC-REST-NetAPI-2011-0093, sections 7.1.1-7.1.10), black-box: the real
// server binary, two to four users each with its own callback listener and subscription, and
// every notification that arrives checked (kind, fields, callbackData, links, order).
//
// Each flow is written once against a `Face` and runs twice: JSON through the generated
// progenitor client (subscriptions asking for JSON notifications), and XML over raw HTTP
// (subscriptions asking for XML notifications; every XML body sent or received, notifications
// included, is validated against the generated XSD by the support helpers).
//
// Each flow runs again with every user's notifications coming through a notification channel
// instead of a callback (issue 15), long polling (`…_channel_*`) and WebSockets (`…_socket_*`):
// the user's application creates a channel, subscribes with the channel's callbackURL, and a
// relay (`support::channel`) hands every notification it gets (decoded from the
// `notificationList`, XML validated against the XSD) to the user's listener, so the very same
// checks apply to what came through the channel.

use netapi_chat_api::{
    ChannelType, ChatEventNotification, ChatMessage, ChatSessionInformation, ChatSubscription,
    EventType, Link, MessageDeliveryNotification, MessageNotification, MessageStatus,
    ParticipantInformation, ParticipantList, ParticipantSessionStatus, ParticipantStatus,
    ParticipantStatusNotification, SessionInvitationNotification,
};
use std::cell::Cell;
use std::time::Duration;
use support::channel::Relay;
use support::docs::{self, last_segment};
use support::notification::Notified;
use support::{Face, Listener, Received, Server, Via, Wire};

use ParticipantStatus::{Connected, Disconnected, Invited};

/// The users the flows play (both address kinds, so percent-encoding of `:`, `+` and `@` is
/// exercised everywhere).
const A: &str = "tel:+15551230001";
const B: &str = "sip:bob@example.com";
const C: &str = "tel:+15551230003";
const D: &str = "sip:dave@example.org";

/// How long "nothing more arrives" is watched.
const QUIET: Duration = Duration::from_millis(300);

impl Face<'_> {
    // --- composite steps

    /// Starts a listener and subscribes `addr` to it (notifications in this face's format),
    /// checking the 201 answer (seed 7.1.1 step 1).
    async fn user(&self, addr: &'static str, callback_data: &str) -> User {
        let listener = Listener::start().await;
        let (notify_url, relay) = match self.via {
            Via::Callback => (listener.url.clone(), None),
            Via::Channel => {
                let (callback, channel_url) = self.channel(addr, ChannelType::LongPolling).await;
                let relay = Relay::start(channel_url, self.fmt(), listener.url.clone());
                (callback, Some(relay))
            }
            Via::Socket => {
                let (callback, channel_url) = self.channel(addr, ChannelType::WebSockets).await;
                assert!(channel_url.starts_with("ws://"), "{channel_url}");
                let relay = Relay::start_socket(channel_url, self.fmt(), listener.url.clone());
                (callback, Some(relay))
            }
        };
        let request = docs::subscription_to(&notify_url, callback_data, self.fmt());
        let (location, mut sub) = self.create_subscription(addr, &request).await.created();
        // Its own signing secret is in the create's answer only; what is read later has none.
        assert!(
            sub.signing_secret
                .take()
                .is_some_and(|s| s.starts_with("whsec_")),
            "a signing secret of its own"
        );
        let id = last_segment(&location);
        assert_eq!(
            location,
            self.sub_url(addr, &id),
            "Location names the new subscription"
        );
        assert_eq!(
            sub.resource_url.as_deref(),
            Some(location.as_str()),
            "resourceURL = Location"
        );
        assert_eq!(
            sub.callback_reference, request.callback_reference,
            "callbackReference echoed"
        );
        assert_eq!(
            sub.duration,
            Some(0),
            "no duration asked: 0 (no expiry) granted"
        );
        User {
            addr,
            callback_data: callback_data.to_owned(),
            wire: self.wire,
            sub_id: id,
            sub,
            listener,
            _relay: relay,
            seen: Cell::new(0),
        }
    }

    /// Starts a session from `originator` inviting `invitees` (in order) and has each accept in
    /// turn, checking every notification this causes. Returns the session id.
    async fn connected_session(
        &self,
        originator: &User,
        invitees: &[&User],
        subject: &str,
    ) -> String {
        let body = session_request(
            Some(subject),
            &invitees.iter().map(|u| (u.addr, None)).collect::<Vec<_>>(),
        );
        let (location, _) = self.create_session(originator.addr, &body).await.created();
        let sid = last_segment(&location);
        for u in invitees {
            let inv: SessionInvitationNotification = u.next().await;
            assert_eq!(inv.session_id, sid);
        }
        let mut connected = vec![originator];
        for u in invitees {
            assert_eq!(
                self.set_status(u.addr, &sid, u.addr, Connected)
                    .await
                    .ok(200)
                    .status,
                Connected
            );
            for c in &connected {
                let n: ParticipantStatusNotification = c.next().await;
                self.check_status_notification(&n, c.addr, &sid, &[(u.addr, Connected)]);
            }
            connected.push(u);
        }
        sid
    }

    /// Sends a message and checks that each of `recipients` gets it; returns the message id.
    async fn send_and_receive(
        &self,
        sender: &User,
        sid: &str,
        body: &ChatMessage,
        recipients: &[&User],
    ) -> String {
        let (location, r) = self.send_message(sender.addr, sid, body).await.created();
        let mid = last_segment(&location);
        assert_eq!(location, self.message_url(sender.addr, sid, &mid));
        assert_eq!(r.resource_url, location, "resourceURL = Location");
        // Every recipient sees the reports the sender asked for: it is who makes them.
        let asked: Vec<MessageStatus> = [
            (
                body.success_report == Some(true)
                    || body.report_request.contains(&MessageStatus::Delivered),
                MessageStatus::Delivered,
            ),
            (
                body.report_request.contains(&MessageStatus::Displayed),
                MessageStatus::Displayed,
            ),
        ]
        .into_iter()
        .filter_map(|(on, st)| on.then_some(st))
        .collect();
        for u in recipients {
            let n: MessageNotification = u.next().await;
            self.check_message_notification(&n, u.addr, sid, &mid, sender.addr, &body.text);
            assert_eq!(
                n.chat_message.as_ref().map(|m| m.report_request.clone()),
                Some(asked.clone()),
                "{}: the reports asked, in the notification",
                u.addr
            );
            let read = self.get_message(u.addr, sid, &mid).await.ok(200);
            assert_eq!(read.report_request, asked, "{}: and in the message", u.addr);
        }
        mid
    }

    // --- checks of notifications and bodies

    /// Every participant, as `viewer` sees it: address, originator flag, status, resourceURL.
    #[track_caller]
    fn check_participants(
        &self,
        list: &[ParticipantInformation],
        viewer: &str,
        sid: &str,
        want: &[(&str, ParticipantStatus)],
    ) {
        let got: Vec<(&str, ParticipantStatus)> = list
            .iter()
            .map(|p| (p.address.as_str(), p.status.expect("participant status")))
            .collect();
        assert_eq!(
            got, want,
            "participants (originator first) as {viewer} sees them"
        );
        for (i, p) in list.iter().enumerate() {
            assert_eq!(
                p.is_originator,
                Some(i == 0),
                "isOriginator of {}",
                p.address
            );
            assert_eq!(
                p.resource_url.as_deref(),
                Some(self.participant_url(viewer, sid, &p.address).as_str()),
                "resourceURL of {} under {viewer}",
                p.address
            );
        }
    }

    #[track_caller]
    fn check_status_notification(
        &self,
        n: &ParticipantStatusNotification,
        to: &str,
        sid: &str,
        want: &[(&str, ParticipantStatus)],
    ) {
        assert_eq!(n.session_id, sid);
        let got: Vec<(&str, ParticipantStatus)> = n
            .participant
            .iter()
            .map(|p| (p.address.as_str(), p.status.expect("status in the entry")))
            .collect();
        assert_eq!(got, want, "participantStatusNotification to {to}");
        for p in &n.participant {
            assert_eq!(p.yourown, Some(p.address == to), "yourown of {}", p.address);
            assert_links(
                &p.link,
                &[
                    (
                        "ParticipantInformation",
                        self.participant_url(to, sid, &p.address),
                    ),
                    (
                        "ParticipantSessionStatus",
                        self.pstatus_url(to, sid, &p.address),
                    ),
                ],
            );
        }
        assert_links(
            &n.link,
            &[("ChatSessionInformation", self.session_url(to, sid))],
        );
    }

    #[track_caller]
    fn check_event(&self, n: &ChatEventNotification, to: &str, sid: &str, event: EventType) {
        assert_eq!(n.event_type, event, "eventType to {to}: {n:?}");
        assert_eq!(n.session_id, sid);
        assert!(
            n.event_description
                .as_deref()
                .is_some_and(|d| !d.is_empty()),
            "eventDescription"
        );
        assert_links(
            &n.link,
            &[("ChatSessionInformation", self.session_url(to, sid))],
        );
    }

    #[track_caller]
    fn check_invitation(
        &self,
        n: &SessionInvitationNotification,
        to: &str,
        sid: &str,
        originator: &str,
        subject: Option<&str>,
        participants: &[(&str, ParticipantStatus)],
    ) {
        assert_eq!(n.session_id, sid);
        assert_eq!(n.originator_address, originator);
        assert_eq!(n.subject.as_deref(), subject);
        self.check_participants(&n.participant, to, sid, participants);
        assert_links(
            &n.link,
            &[
                ("ChatSessionInformation", self.session_url(to, sid)),
                ("ParticipantSessionStatus", self.pstatus_url(to, sid, to)),
            ],
        );
    }

    #[track_caller]
    fn check_message_notification(
        &self,
        n: &MessageNotification,
        to: &str,
        sid: &str,
        mid: &str,
        sender: &str,
        text: &str,
    ) {
        assert_eq!(n.sender_address, sender);
        assert_eq!(n.session_id, sid);
        assert_eq!(n.message_id.as_deref(), Some(mid));
        let m = n
            .chat_message
            .as_ref()
            .expect("a message, not an isComposing");
        assert_eq!(m.text, text);
        assert_eq!(m.sender_address.as_deref(), Some(sender));
        assert_eq!(
            m.resource_url.as_deref(),
            Some(self.message_url(to, sid, mid).as_str()),
            "the message under the recipient"
        );
        let when = n.date_time.as_deref().expect("dateTime");
        assert_eq!(m.date_time.as_deref(), Some(when));
        assert!(
            when.ends_with('Z') && when.contains('T'),
            "RFC 3339 UTC: {when}"
        );
        // The reports asked are shown to the recipient (who makes them): the seed's
        // `successReport` (the OMA 2012 profile folds it into `reportRequest`) agrees with them.
        assert!(
            m.success_report
                .is_none_or(|asked| asked == m.report_request.contains(&MessageStatus::Delivered)),
            "successReport and reportRequest agree: {m:?}"
        );
        assert_links(
            &n.link,
            &[
                ("ChatMessage", self.message_url(to, sid, mid)),
                ("MessageStatusReport", self.mstatus_url(to, sid, mid)),
            ],
        );
    }

    #[track_caller]
    fn check_delivery(
        &self,
        n: &MessageDeliveryNotification,
        sender: &str,
        sid: &str,
        mid: &str,
        recipient: &str,
        status: MessageStatus,
    ) {
        assert_eq!(n.status, status);
        assert_eq!(n.recipient_address.as_deref(), Some(recipient));
        assert_eq!(n.message_id, mid);
        assert_eq!(n.session_id, sid);
        assert_links(
            &n.link,
            &[
                ("ChatMessage", self.message_url(sender, sid, mid)),
                ("MessageStatusReport", self.mstatus_url(sender, sid, mid)),
            ],
        );
    }
}

// ------------------------------------------------------------------------------------ users

/// A chat user: its address, its callback listener and its subscription. Notifications are
/// read in arrival order with [`User::next`].
struct User {
    addr: &'static str,
    callback_data: String,
    wire: Wire,
    sub_id: String,
    sub: ChatSubscription,
    listener: Listener,
    /// The relay of the user's notification channel, when it has one.
    _relay: Option<Relay>,
    /// Notifications read so far.
    seen: Cell<usize>,
}

impl User {
    /// The next notification, which must be a `T` in the subscription's format carrying its
    /// callbackData, at least one link to what it concerns, and last a link to the
    /// subscription, taken off (the tests compare the links of what it concerns).
    async fn next<T: Notified>(&self) -> T {
        let n = self.seen.get() + 1;
        let got: Received = self.listener.nth(n).await;
        self.seen.set(n);
        let want_type = self.wire.format().media_type();
        assert!(
            got.content_type.starts_with(want_type),
            "notification {n} to {} is {} (subscribed for {want_type})",
            self.addr,
            got.content_type
        );
        assert_eq!(
            got.kind(),
            T::NAME,
            "notification {n} to {}: {}",
            self.addr,
            got.body
        );
        let mut doc: T = got.decode();
        assert_eq!(
            doc.callback_data(),
            Some(self.callback_data.as_str()),
            "callbackData to {}",
            self.addr
        );
        let url = self
            .sub
            .resource_url
            .as_deref()
            .expect("the subscription's URL");
        doc.subscription_link("ChatSubscription", url, &got.body);
        doc
    }
}

/// Asserts that no user gets more notifications than it has read (one short wait for all).
async fn quiet(users: &[&User]) {
    for (i, u) in users.iter().enumerate() {
        let wait = if i == 0 { QUIET } else { Duration::ZERO };
        u.listener.assert_count_stays(u.seen.get(), wait).await;
    }
}

// ------------------------------------------------------------------------------------ helpers

#[track_caller]
fn assert_links(links: &[Link], want: &[(&str, String)]) {
    let mut got: Vec<(&str, &str)> = links
        .iter()
        .map(|l| (l.rel.as_str(), l.href.as_str()))
        .collect();
    let mut want: Vec<(&str, &str)> = want.iter().map(|(r, h)| (*r, h.as_str())).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "links");
}

fn participant(address: &str, name: Option<&str>) -> ParticipantInformation {
    ParticipantInformation {
        name: name.map(str::to_owned),
        ..docs::participant(address)
    }
}

fn session_request(
    subject: Option<&str>,
    participants: &[(&str, Option<&str>)],
) -> ChatSessionInformation {
    ChatSessionInformation {
        subject: subject.map(str::to_owned),
        participant: participants
            .iter()
            .map(|(a, n)| participant(a, *n))
            .collect(),
        ..Default::default()
    }
}

fn text(t: &str) -> ChatMessage {
    docs::message(t)
}

// ------------------------------------------------------------------------------------ flows

/// Seed 7.1.1: subscribe (201, Location, resourceURL), list, read, unsubscribe (204); once
/// deleted, a subscription gets nothing, while another one of the same user still does.
async fn flow_7_1_1(f: &Face<'_>) {
    let a1 = f.user(A, "alice-phone").await;
    let a2 = f.user(A, "alice-tablet").await;
    let b = f.user(B, "bob").await;

    let list = f.list_subscriptions(A).await.ok(200);
    assert_eq!(list.resource_url, f.subs_url(A));
    assert_eq!(
        list.chat_subscription,
        vec![a1.sub.clone(), a2.sub.clone()],
        "A's subscriptions, in order"
    );
    let list = f.list_subscriptions(B).await.ok(200);
    assert_eq!(
        list.chat_subscription,
        vec![b.sub.clone()],
        "only B's own subscription"
    );
    assert_eq!(f.get_subscription(A, &a1.sub_id).await.ok(200), a1.sub);
    assert_eq!(f.get_subscription(A, &a2.sub_id).await.ok(200), a2.sub);
    f.get_subscription(B, &a1.sub_id).await.fails(404, None);

    // An event for A reaches both of its subscriptions, each with its own callbackData.
    b_invites_a(f, "first", &[&a1, &a2]).await;

    // Unsubscribe the first: 204, then it is gone.
    f.delete_subscription(A, &a1.sub_id).await.no_content();
    f.get_subscription(A, &a1.sub_id).await.fails(404, None);
    f.delete_subscription(A, &a1.sub_id).await.fails(404, None);
    let list = f.list_subscriptions(A).await.ok(200);
    assert_eq!(list.chat_subscription, vec![a2.sub.clone()]);

    // A second event: the remaining subscription gets it, the deleted one nothing.
    b_invites_a(f, "second", &[&a2]).await;

    // Unsubscribing the last one leaves an empty list; events then go nowhere.
    f.delete_subscription(A, &a2.sub_id).await.no_content();
    let list = f.list_subscriptions(A).await.ok(200);
    assert!(list.chat_subscription.is_empty(), "{list:?}");
    f.create_session(B, &session_request(None, &[(A, None)]))
        .await
        .created();
    quiet(&[&a1, &a2, &b]).await;
}

/// Flow 7.1.1's event: B starts a session with A about `subject`, and each of `subscriptions`
/// (A's) gets the invitation, checked (its own callbackData included).
async fn b_invites_a(f: &Face<'_>, subject: &str, subscriptions: &[&User]) {
    let (loc, _) = f
        .create_session(B, &session_request(Some(subject), &[(A, None)]))
        .await
        .created();
    let sid = last_segment(&loc);
    for a in subscriptions {
        let n: SessionInvitationNotification = a.next().await;
        f.check_invitation(
            &n,
            A,
            &sid,
            B,
            Some(subject),
            &[(B, Connected), (A, Invited)],
        );
    }
}

/// Seed 7.1.2: A starts a 1-1 chat with B; B is invited (with links to the session and to its
/// own status), accepts, and A is told B is Connected.
async fn flow_7_1_2(f: &Face<'_>) {
    let a = f.user(A, "cb-alice").await;
    let b = f.user(B, "cb-bob").await;

    let (location, s) = f
        .create_session(A, &session_request(Some("Lunch?"), &[(B, Some("Bob"))]))
        .await
        .created();
    let sid = last_segment(&location);
    assert_eq!(
        location,
        f.session_url(A, &sid),
        "Location names the session under A"
    );
    assert_eq!(s.resource_url.as_deref(), Some(location.as_str()));
    assert_eq!(s.originator_address.as_deref(), Some(A));
    assert_eq!(s.subject.as_deref(), Some("Lunch?"));
    assert_eq!(s.status, Some(Connected), "the originator is connected");
    assert_eq!(s.ended, Some(false));
    f.check_participants(&s.participant, A, &sid, &[(A, Connected), (B, Invited)]);
    assert_eq!(s.participant[1].name.as_deref(), Some("Bob"));

    let inv: SessionInvitationNotification = b.next().await;
    f.check_invitation(
        &inv,
        B,
        &sid,
        A,
        Some("Lunch?"),
        &[(A, Connected), (B, Invited)],
    );
    assert_eq!(inv.participant[1].name.as_deref(), Some("Bob"));

    // B reads the session it was invited to, under its own userId.
    let bs = f.get_session(B, &sid).await.ok(200);
    assert_eq!(
        bs.resource_url.as_deref(),
        Some(f.session_url(B, &sid).as_str())
    );
    assert_eq!(bs.status, Some(Invited));
    assert_eq!(bs.originator_address.as_deref(), Some(A));
    let sessions = f.list_sessions(B).await.ok(200);
    assert_eq!(sessions.resource_url, f.sessions_url(B));
    assert_eq!(sessions.chat_session_information, vec![bs]);

    // B accepts; A is told.
    let st = f.set_status(B, &sid, B, Connected).await.ok(200);
    assert_eq!(st.status, Connected);
    let n: ParticipantStatusNotification = a.next().await;
    f.check_status_notification(&n, A, &sid, &[(B, Connected)]);

    let s = f.get_session(A, &sid).await.ok(200);
    f.check_participants(&s.participant, A, &sid, &[(A, Connected), (B, Connected)]);
    assert_eq!(f.get_status(A, &sid, B).await.ok(200).status, Connected);
    quiet(&[&a, &b]).await;
}

/// Seed 7.1.3 as its figure draws it: the POST carries one `participantInformation` (not a
/// list); the answer is the participants added as a `participantList` (201 + Location), the
/// invitee gets its invitation and B learns who was invited, as with a list.
async fn flow_7_1_3_one(f: &Face<'_>) {
    let a = f.user(A, "a").await;
    let b = f.user(B, "b").await;
    let c = f.user(C, "c").await;
    let sid = f.connected_session(&a, &[&b], "one to one").await;

    let url = f.participants_url(A, &sid);
    let answer = support::send_doc("POST", &url, f.fmt(), &participant(C, Some("Carol"))).await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    assert_eq!(answer.header("location"), url);
    let list: ParticipantList = answer.decode();
    let all3 = [(A, Connected), (B, Connected), (C, Invited)];
    f.check_participants(&list.participant, A, &sid, &all3);
    let inv: SessionInvitationNotification = c.next().await;
    f.check_invitation(&inv, C, &sid, A, Some("one to one"), &all3);
    let n: ParticipantStatusNotification = b.next().await;
    f.check_status_notification(&n, B, &sid, &[(C, Invited)]);
    quiet(&[&a, &b, &c]).await;
}

/// Seed 7.1.3: a connected 1-1 chat (A, B) is extended with C and D in one POST; the answer is
/// the whole participant list; C and D are invited, B learns who was invited, and everyone
/// connected learns C accepted and D declined.
async fn flow_7_1_3(f: &Face<'_>) {
    let a = f.user(A, "a").await;
    let b = f.user(B, "b").await;
    let c = f.user(C, "c").await;
    let d = f.user(D, "d").await;
    let sid = f.connected_session(&a, &[&b], "one to one").await;

    let body = ParticipantList {
        participant: vec![participant(C, Some("Carol")), participant(D, None)],
        resource_url: None,
        link: Vec::new(),
    };
    let (location, list) = f.add_participants(A, &sid, &body).await.created();
    assert_eq!(location, f.participants_url(A, &sid));
    assert_eq!(list.resource_url.as_deref(), Some(location.as_str()));
    let all4 = [(A, Connected), (B, Connected), (C, Invited), (D, Invited)];
    f.check_participants(&list.participant, A, &sid, &all4);
    assert_eq!(list.participant[2].name.as_deref(), Some("Carol"));

    for u in [&c, &d] {
        let inv: SessionInvitationNotification = u.next().await;
        f.check_invitation(&inv, u.addr, &sid, A, Some("one to one"), &all4);
    }
    let n: ParticipantStatusNotification = b.next().await;
    f.check_status_notification(&n, B, &sid, &[(C, Invited), (D, Invited)]);

    // C accepts: A (the inviter) and B are told.
    assert_eq!(
        f.set_status(C, &sid, C, Connected).await.ok(200).status,
        Connected
    );
    for u in [&a, &b] {
        let n: ParticipantStatusNotification = u.next().await;
        f.check_status_notification(&n, u.addr, &sid, &[(C, Connected)]);
    }
    // D declines: A, B and C are told; the group session goes on.
    assert_eq!(
        f.set_status(D, &sid, D, Disconnected).await.ok(200).status,
        Disconnected
    );
    for u in [&a, &b, &c] {
        let n: ParticipantStatusNotification = u.next().await;
        f.check_status_notification(&n, u.addr, &sid, &[(D, Disconnected)]);
    }

    let list = f.list_participants(B, &sid).await.ok(200);
    assert_eq!(
        list.resource_url.as_deref(),
        Some(f.participants_url(B, &sid).as_str())
    );
    f.check_participants(
        &list.participant,
        B,
        &sid,
        &[
            (A, Connected),
            (B, Connected),
            (C, Connected),
            (D, Disconnected),
        ],
    );
    let s = f.get_session(A, &sid).await.ok(200);
    assert_eq!(s.ended, Some(false));
    let carol = f.get_participant(A, &sid, C).await.ok(200);
    assert_eq!(carol.name.as_deref(), Some("Carol"));
    assert_eq!(
        carol.resource_url.as_deref(),
        Some(f.participant_url(A, &sid, C).as_str())
    );
    quiet(&[&a, &b, &c, &d]).await;
}

/// Seed 7.1.4 (with 7.1.7 c): A starts a group chat with B, C and D (listing itself too); B
/// accepts, C declines, D does not answer and its invitation times out (server started with a
/// 1 s invitation timeout): A gets a `Timeout` event and D's status, and the session is gone
/// for D.
async fn flow_7_1_4(f: &Face<'_>) {
    let a = f.user(A, "a").await;
    let b = f.user(B, "b").await;
    let c = f.user(C, "c").await;
    let d = f.user(D, "d").await;

    let body = session_request(
        Some("team"),
        &[(A, Some("Alice")), (B, None), (C, None), (D, None)],
    );
    let (location, s) = f.create_session(A, &body).await.created();
    let sid = last_segment(&location);
    let all4 = [(A, Connected), (B, Invited), (C, Invited), (D, Invited)];
    f.check_participants(&s.participant, A, &sid, &all4);
    assert_eq!(
        s.originator_name.as_deref(),
        Some("Alice"),
        "the originator listed itself with a name"
    );
    assert_eq!(s.participant[0].name.as_deref(), Some("Alice"));
    for u in [&b, &c, &d] {
        let inv: SessionInvitationNotification = u.next().await;
        f.check_invitation(&inv, u.addr, &sid, A, Some("team"), &all4);
        assert_eq!(inv.originator_name.as_deref(), Some("Alice"));
    }
    assert_eq!(
        f.get_session(D, &sid).await.ok(200).status,
        Some(Invited),
        "D sees the session while invited"
    );

    // B accepts: A is told.
    assert_eq!(
        f.set_status(B, &sid, B, Connected).await.ok(200).status,
        Connected
    );
    let n: ParticipantStatusNotification = a.next().await;
    f.check_status_notification(&n, A, &sid, &[(B, Connected)]);
    // C declines: A and B are told; a group session goes on.
    assert_eq!(
        f.set_status(C, &sid, C, Disconnected).await.ok(200).status,
        Disconnected
    );
    for u in [&a, &b] {
        let n: ParticipantStatusNotification = u.next().await;
        f.check_status_notification(&n, u.addr, &sid, &[(C, Disconnected)]);
    }

    // D ignores the invitation: after the timeout A (and D) get a Timeout event, and A, whose
    // group goes on, D's new status too (a roster kept from status notifications stays right).
    let n: ChatEventNotification = a.next().await;
    f.check_event(&n, A, &sid, EventType::Timeout);
    assert!(
        n.event_description
            .as_deref()
            .unwrap_or_default()
            .contains(D),
        "which invitation: {n:?}"
    );
    let n: ParticipantStatusNotification = a.next().await;
    f.check_status_notification(&n, A, &sid, &[(D, Disconnected)]);
    let n: ChatEventNotification = d.next().await;
    f.check_event(&n, D, &sid, EventType::Timeout);
    // The other connected participant (B) sees D disconnected, as for a cancelled invitation.
    let n: ParticipantStatusNotification = b.next().await;
    f.check_status_notification(&n, B, &sid, &[(D, Disconnected)]);

    // The session is invalid for D now, and D is Disconnected for the others.
    f.get_session(D, &sid).await.fails(404, None);
    let sessions = f.list_sessions(D).await.ok(200);
    assert!(sessions.chat_session_information.is_empty(), "{sessions:?}");
    let s = f.get_session(A, &sid).await.ok(200);
    assert_eq!(s.ended, Some(false));
    f.check_participants(
        &s.participant,
        A,
        &sid,
        &[
            (A, Connected),
            (B, Connected),
            (C, Disconnected),
            (D, Disconnected),
        ],
    );
    quiet(&[&a, &b, &c, &d]).await;
}

/// Seed 7.1.5: the originator ends a session (204); every participant still in it, the
/// originator's own application included, gets `SessionEnded` (an unanswered invitee
/// `SessionCancelled`); afterwards the session is gone for everyone (404 SVC2008, issue 11
/// item 4: it used to stay readable and answer 409).
async fn flow_7_1_5(f: &Face<'_>) {
    let a = f.user(A, "a").await;
    let b = f.user(B, "b").await;
    let c = f.user(C, "c").await;
    let d = f.user(D, "d").await;

    // 1-1, as in the seed's figure.
    let sid = f.connected_session(&a, &[&b], "short").await;
    f.send_and_receive(&a, &sid, &text("gotta go"), &[&b]).await;
    f.end_session(B, &sid).await.fails(403, Some("POL0001"));
    f.end_session(A, &sid).await.no_content();
    let n: ChatEventNotification = b.next().await;
    f.check_event(&n, B, &sid, EventType::SessionEnded);
    let n: ChatEventNotification = a.next().await;
    f.check_event(&n, A, &sid, EventType::SessionEnded);
    f.send_message(A, &sid, &text("still there?"))
        .await
        .fails(404, Some("SVC2008"));
    f.send_message(B, &sid, &text("still there?"))
        .await
        .fails(404, Some("SVC2008"));
    f.end_session(A, &sid).await.fails(404, Some("SVC2008"));
    f.set_status(B, &sid, B, Connected)
        .await
        .fails(404, Some("SVC2008"));
    f.get_session(B, &sid).await.fails(404, Some("SVC2008"));
    f.get_session(A, &sid).await.fails(404, Some("SVC2008"));
    f.list_messages(B, &sid).await.fails(404, Some("SVC2008"));

    // Group: B and C connected, D still invited.
    let body = session_request(Some("group"), &[(B, None), (C, None), (D, None)]);
    let (location, _) = f.create_session(A, &body).await.created();
    let sid = last_segment(&location);
    for u in [&b, &c, &d] {
        let _: SessionInvitationNotification = u.next().await;
    }
    f.set_status(B, &sid, B, Connected).await.ok(200);
    let n: ParticipantStatusNotification = a.next().await;
    f.check_status_notification(&n, A, &sid, &[(B, Connected)]);
    f.set_status(C, &sid, C, Connected).await.ok(200);
    for u in [&a, &b] {
        let n: ParticipantStatusNotification = u.next().await;
        f.check_status_notification(&n, u.addr, &sid, &[(C, Connected)]);
    }
    f.end_session(C, &sid).await.fails(403, Some("POL0001"));
    f.end_session(A, &sid).await.no_content();
    for u in [&a, &b, &c] {
        let n: ChatEventNotification = u.next().await;
        f.check_event(&n, u.addr, &sid, EventType::SessionEnded);
    }
    let n: ChatEventNotification = d.next().await;
    f.check_event(&n, D, &sid, EventType::SessionCancelled);
    f.send_message(A, &sid, &text("anyone?"))
        .await
        .fails(404, Some("SVC2008"));
    f.send_message(C, &sid, &text("anyone?"))
        .await
        .fails(404, Some("SVC2008"));
    for u in [A, B, C, D] {
        f.get_session(u, &sid).await.fails(404, Some("SVC2008"));
    }
    quiet(&[&a, &b, &c, &d]).await;

    // An originator that left may still end its group: everyone is told, itself included.
    let sid = f.connected_session(&a, &[&b, &c], "left").await;
    f.set_status(A, &sid, A, Disconnected).await.ok(200);
    for u in [&b, &c] {
        let n: ParticipantStatusNotification = u.next().await;
        f.check_status_notification(&n, u.addr, &sid, &[(A, Disconnected)]);
    }
    quiet(&[&a]).await;
    f.end_session(A, &sid).await.no_content();
    for u in [&a, &b, &c] {
        let n: ChatEventNotification = u.next().await;
        f.check_event(&n, u.addr, &sid, EventType::SessionEnded);
    }
    quiet(&[&a, &b, &c, &d]).await;
}

/// Seed 7.1.6 (decided): the inviter withdraws an unanswered invitation by deleting the
/// invitee's participant resource (204); the invitee gets `SessionCancelled`, the other
/// connected participants, the canceller included, see it Disconnected; a 1-1 session whose
/// invitation is withdrawn ends, and its originator is told `SessionEnded`.
async fn flow_7_1_6(f: &Face<'_>) {
    let a = f.user(A, "a").await;
    let b = f.user(B, "b").await;
    let c = f.user(C, "c").await;
    let d = f.user(D, "d").await;

    let body = session_request(None, &[(B, None), (C, None), (D, None)]);
    let (location, _) = f.create_session(A, &body).await.created();
    let sid = last_segment(&location);
    for u in [&b, &c, &d] {
        let _: SessionInvitationNotification = u.next().await;
    }
    f.set_status(B, &sid, B, Connected).await.ok(200);
    let n: ParticipantStatusNotification = a.next().await;
    f.check_status_notification(&n, A, &sid, &[(B, Connected)]);

    f.cancel_invitation(B, &sid, D)
        .await
        .fails(403, Some("POL0001"));
    f.cancel_invitation(A, &sid, C).await.no_content();
    let n: ChatEventNotification = c.next().await;
    f.check_event(&n, C, &sid, EventType::SessionCancelled);
    let n: ParticipantStatusNotification = b.next().await;
    f.check_status_notification(&n, B, &sid, &[(C, Disconnected)]);
    // The canceller's own applications see it too (another device of the same user).
    let n: ParticipantStatusNotification = a.next().await;
    f.check_status_notification(&n, A, &sid, &[(C, Disconnected)]);

    f.cancel_invitation(A, &sid, C)
        .await
        .fails(409, Some("SVC0001"));
    f.cancel_invitation(A, &sid, B)
        .await
        .fails(409, Some("SVC0001"));
    f.get_session(C, &sid).await.fails(404, None);
    f.set_status(C, &sid, C, Connected).await.fails(404, None);
    let s = f.get_session(A, &sid).await.ok(200);
    assert_eq!(s.ended, Some(false), "a group session goes on");
    f.check_participants(
        &s.participant,
        A,
        &sid,
        &[
            (A, Connected),
            (B, Connected),
            (C, Disconnected),
            (D, Invited),
        ],
    );

    // 1-1: withdrawing the only invitation ends the session.
    let (location, _) = f
        .create_session(A, &session_request(None, &[(B, None)]))
        .await
        .created();
    let one = last_segment(&location);
    let _: SessionInvitationNotification = b.next().await;
    f.cancel_invitation(A, &one, B).await.no_content();
    let n: ChatEventNotification = b.next().await;
    f.check_event(&n, B, &one, EventType::SessionCancelled);
    // The originator's applications learn that it ended, as on a DELETE.
    let n: ChatEventNotification = a.next().await;
    f.check_event(&n, A, &one, EventType::SessionEnded);
    // An ended session is gone (issue 11 item 4; it used to stay readable to the inviter).
    f.get_session(A, &one).await.fails(404, Some("SVC2008"));
    f.get_session(B, &one).await.fails(404, None);
    quiet(&[&a, &b, &c, &d]).await;
}

/// Seed 7.1.7: an invitee accepts (status Connected) or declines (Disconnected) by POSTing
/// its own participant status; 200 with the status; the inviter is told; a declined 1-1
/// session ends.
async fn flow_7_1_7(f: &Face<'_>) {
    let a = f.user(A, "a").await;
    let b = f.user(B, "b").await;
    let c = f.user(C, "c").await;

    // a) accept.
    let (location, _) = f
        .create_session(A, &session_request(None, &[(B, None)]))
        .await
        .created();
    let sid = last_segment(&location);
    let inv: SessionInvitationNotification = b.next().await;
    let status_link = inv
        .link
        .iter()
        .find(|l| l.rel == "ParticipantSessionStatus")
        .expect("status link");
    assert_eq!(
        status_link.href,
        f.pstatus_url(B, &sid, B),
        "the invitee answers at its own status"
    );
    assert_eq!(f.get_status(B, &sid, B).await.ok(200).status, Invited);
    f.set_status(B, &sid, B, Invited)
        .await
        .fails(400, Some("SVC0002"));
    f.set_status(A, &sid, B, Connected)
        .await
        .fails(403, Some("POL0001"));
    let st = f.set_status(B, &sid, B, Connected).await.ok(200);
    assert_eq!(st, ParticipantSessionStatus { status: Connected });
    let n: ParticipantStatusNotification = a.next().await;
    f.check_status_notification(&n, A, &sid, &[(B, Connected)]);
    f.set_status(B, &sid, B, Connected)
        .await
        .fails(409, Some("SVC0001"));
    assert_eq!(f.get_status(A, &sid, B).await.ok(200).status, Connected);
    assert_eq!(f.get_session(B, &sid).await.ok(200).status, Some(Connected));

    // b) decline: the inviter is told, and a declined 1-1 session ends.
    let (location, _) = f
        .create_session(A, &session_request(Some("no?"), &[(C, None)]))
        .await
        .created();
    let sid = last_segment(&location);
    let _: SessionInvitationNotification = c.next().await;
    let st = f.set_status(C, &sid, C, Disconnected).await.ok(200);
    assert_eq!(
        st,
        ParticipantSessionStatus {
            status: Disconnected
        }
    );
    let n: ParticipantStatusNotification = a.next().await;
    f.check_status_notification(&n, A, &sid, &[(C, Disconnected)]);
    let n: ChatEventNotification = a.next().await;
    f.check_event(&n, A, &sid, EventType::SessionEnded);
    // An ended session is gone (issue 11 item 4; it used to stay readable and answer 409).
    f.get_session(C, &sid).await.fails(404, Some("SVC2008"));
    f.set_status(C, &sid, C, Connected)
        .await
        .fails(404, Some("SVC2008"));
    // (c, the invitation that times out, is flow 7.1.4.)
    quiet(&[&a, &b, &c]).await;
}

/// Seed 7.1.7 (b) then 7.1.3: an invitee who declined a group chat is not in it any more, so
/// it can be invited again (it was 409 "already a participant", although the server tells a
/// late accept to "ask to be invited again"): a new invitation reaches it, the others learn
/// it is invited, and this time it accepts.
async fn flow_7_1_7_invited_again(f: &Face<'_>) {
    let a = f.user(A, "a").await;
    let b = f.user(B, "b").await;
    let c = f.user(C, "c").await;
    let sid = f.connected_session(&a, &[&b], "one to one").await;
    let invite_c = ParticipantList {
        participant: vec![participant(C, None)],
        resource_url: None,
        link: Vec::new(),
    };
    f.add_participants(A, &sid, &invite_c).await.created();
    let _: SessionInvitationNotification = c.next().await;
    let _: ParticipantStatusNotification = b.next().await;
    f.set_status(C, &sid, C, Disconnected).await.ok(200);
    for u in [&a, &b] {
        let n: ParticipantStatusNotification = u.next().await;
        f.check_status_notification(&n, u.addr, &sid, &[(C, Disconnected)]);
    }
    f.set_status(C, &sid, C, Connected)
        .await
        .fails(409, Some("SVC0001"));

    let (_, list) = f.add_participants(A, &sid, &invite_c).await.created();
    let all3 = [(A, Connected), (B, Connected), (C, Invited)];
    f.check_participants(&list.participant, A, &sid, &all3);
    let inv: SessionInvitationNotification = c.next().await;
    f.check_invitation(&inv, C, &sid, A, Some("one to one"), &all3);
    let n: ParticipantStatusNotification = b.next().await;
    f.check_status_notification(&n, B, &sid, &[(C, Invited)]);
    assert_eq!(
        f.set_status(C, &sid, C, Connected).await.ok(200).status,
        Connected
    );
    for u in [&a, &b] {
        let n: ParticipantStatusNotification = u.next().await;
        f.check_status_notification(&n, u.addr, &sid, &[(C, Connected)]);
    }
    quiet(&[&a, &b, &c]).await;
}

/// Seed 7.1.8: a participant leaves (Disconnected) and re-joins (Connected); the others get
/// `participantStatusNotification`s Disconnected then Connected; while away it gets no
/// messages and cannot send.
async fn flow_7_1_8(f: &Face<'_>) {
    let a = f.user(A, "a").await;
    let b = f.user(B, "b").await;
    let c = f.user(C, "c").await;
    let sid = f.connected_session(&a, &[&b, &c], "stay or go").await;

    let st = f.set_status(B, &sid, B, Disconnected).await.ok(200);
    assert_eq!(
        st,
        ParticipantSessionStatus {
            status: Disconnected
        }
    );
    for u in [&a, &c] {
        let n: ParticipantStatusNotification = u.next().await;
        f.check_status_notification(&n, u.addr, &sid, &[(B, Disconnected)]);
    }
    assert_eq!(f.get_status(B, &sid, B).await.ok(200).status, Disconnected);
    f.set_status(B, &sid, B, Disconnected)
        .await
        .fails(409, Some("SVC0001"));
    f.send_message(B, &sid, &text("I am away"))
        .await
        .fails(409, Some("SVC0001"));
    let away = f
        .send_and_receive(&c, &sid, &text("while B is away"), &[&a])
        .await;
    f.get_message(B, &sid, &away).await.fails(404, None);

    let st = f.set_status(B, &sid, B, Connected).await.ok(200);
    assert_eq!(st, ParticipantSessionStatus { status: Connected });
    for u in [&a, &c] {
        let n: ParticipantStatusNotification = u.next().await;
        f.check_status_notification(&n, u.addr, &sid, &[(B, Connected)]);
    }
    f.send_and_receive(&b, &sid, &text("back"), &[&a, &c]).await;
    let s = f.get_session(C, &sid).await.ok(200);
    f.check_participants(
        &s.participant,
        C,
        &sid,
        &[(A, Connected), (B, Connected), (C, Connected)],
    );

    // Everyone leaves: the session nobody is in any more ends with the last to go, and each
    // who could have re-joined is told; it is gone for everyone (it used to stay open, counted
    // against nobody's session limit, for ever).
    f.set_status(C, &sid, C, Disconnected).await.ok(200);
    for u in [&a, &b] {
        let n: ParticipantStatusNotification = u.next().await;
        f.check_status_notification(&n, u.addr, &sid, &[(C, Disconnected)]);
    }
    f.set_status(A, &sid, A, Disconnected).await.ok(200);
    let n: ParticipantStatusNotification = b.next().await;
    f.check_status_notification(&n, B, &sid, &[(A, Disconnected)]);
    // B is alone: everyone who had joined left, the originator included (it was `403
    // POL1012`, "during session setup", when the originator was among those who left).
    f.send_message(B, &sid, &text("anyone?"))
        .await
        .fails(409, Some("SVC0001"));
    f.set_status(B, &sid, B, Disconnected).await.ok(200);
    for u in [&a, &b, &c] {
        let n: ChatEventNotification = u.next().await;
        f.check_event(&n, u.addr, &sid, EventType::SessionEnded);
    }
    f.get_session(A, &sid).await.fails(404, Some("SVC2008"));
    f.set_status(A, &sid, A, Connected)
        .await
        .fails(404, Some("SVC2008"));
    quiet(&[&a, &b, &c]).await;
}

/// Seed 7.1.9: sending a message with successReport=true: 201 with Location/resourceURL; every
/// other connected participant gets a `messageNotification` (text, sender, links); the
/// message reads back; no messages before anyone joined (403 POL1012).
async fn flow_7_1_9(f: &Face<'_>) {
    let a = f.user(A, "a").await;
    let b = f.user(B, "b").await;
    let c = f.user(C, "c").await;

    let body = session_request(
        Some("news"),
        &[(A, Some("Alice")), (B, Some("Bob")), (C, None)],
    );
    let (location, _) = f.create_session(A, &body).await.created();
    let sid = last_segment(&location);
    for u in [&b, &c] {
        let _: SessionInvitationNotification = u.next().await;
    }
    f.send_message(A, &sid, &text("too early"))
        .await
        .fails(403, Some("POL1012"));
    f.send_message(B, &sid, &text("not joined"))
        .await
        .fails(403, Some("POL1012"));
    f.set_status(B, &sid, B, Connected).await.ok(200);
    let n: ParticipantStatusNotification = a.next().await;
    f.check_status_notification(&n, A, &sid, &[(B, Connected)]);
    f.set_status(C, &sid, C, Connected).await.ok(200);
    for u in [&a, &b] {
        let n: ParticipantStatusNotification = u.next().await;
        f.check_status_notification(&n, u.addr, &sid, &[(C, Connected)]);
    }

    let msg = ChatMessage {
        success_report: Some(true),
        client_correlator: Some("m-1".to_owned()),
        ..text("Hello, group")
    };
    let (location, r) = f.send_message(A, &sid, &msg).await.created();
    let mid = last_segment(&location);
    assert_eq!(location, f.message_url(A, &sid, &mid));
    assert_eq!(r.resource_url, location);
    let mut when = String::new();
    for u in [&b, &c] {
        let n: MessageNotification = u.next().await;
        f.check_message_notification(&n, u.addr, &sid, &mid, A, "Hello, group");
        assert_eq!(n.sender_name.as_deref(), Some("Alice"));
        when = n.date_time.clone().unwrap_or_default();
    }
    // A retried create with the same clientCorrelator is the same message, sent once.
    let (again, _) = f.send_message(A, &sid, &msg).await.created();
    assert_eq!(again, location);

    let m = f.get_message(A, &sid, &mid).await.ok(200);
    assert_eq!(m.text, "Hello, group");
    assert_eq!(m.sender_address.as_deref(), Some(A));
    assert_eq!(m.success_report, Some(true));
    assert_eq!(m.client_correlator.as_deref(), Some("m-1"));
    assert_eq!(m.resource_url.as_deref(), Some(location.as_str()));
    assert_eq!(m.date_time.as_deref(), Some(when.as_str()));
    let m = f.get_message(B, &sid, &mid).await.ok(200);
    assert_eq!(m.text, "Hello, group");
    assert_eq!(
        m.resource_url.as_deref(),
        Some(f.message_url(B, &sid, &mid).as_str())
    );

    // B answers, without a report: A and C get it, with B's name.
    let reply = f
        .send_and_receive(&b, &sid, &text("Hi Alice"), &[&a, &c])
        .await;
    let list = f.list_messages(C, &sid).await.ok(200);
    assert_eq!(list.resource_url, f.messages_url(C, &sid));
    let got: Vec<(&str, &str)> = list
        .chat_message
        .iter()
        .map(|m| {
            (
                m.text.as_str(),
                m.resource_url.as_deref().unwrap_or_default(),
            )
        })
        .collect();
    let (m1, m2) = (f.message_url(C, &sid, &mid), f.message_url(C, &sid, &reply));
    assert_eq!(
        got,
        vec![("Hello, group", m1.as_str()), ("Hi Alice", m2.as_str())],
        "oldest first"
    );
    quiet(&[&a, &b, &c]).await;
}

/// Seed 7.1.10: recipients confirm delivery (POST messageDeliveryStatus Delivered → 204); the
/// sender, who asked for a success report, gets a `messageDeliveryNotification` per recipient;
/// the status reads back; nothing is reported for a message that asked for no report.
async fn flow_7_1_10(f: &Face<'_>) {
    let a = f.user(A, "a").await;
    let b = f.user(B, "b").await;
    let c = f.user(C, "c").await;
    let sid = f.connected_session(&a, &[&b, &c], "receipts").await;

    let report = ChatMessage {
        success_report: Some(true),
        ..text("did you get this?")
    };
    let mid = f.send_and_receive(&a, &sid, &report, &[&b, &c]).await;
    assert_eq!(
        f.get_delivery(A, &sid, &mid).await.ok(200).status,
        MessageStatus::Sent
    );
    assert_eq!(
        f.get_delivery(B, &sid, &mid).await.ok(200).status,
        MessageStatus::Sent
    );

    f.confirm(B, &sid, &mid, MessageStatus::Delivered)
        .await
        .no_content();
    let n: MessageDeliveryNotification = a.next().await;
    f.check_delivery(&n, A, &sid, &mid, B, MessageStatus::Delivered);
    assert_eq!(
        f.get_delivery(B, &sid, &mid).await.ok(200).status,
        MessageStatus::Delivered
    );
    assert_eq!(
        f.get_delivery(A, &sid, &mid).await.ok(200).status,
        MessageStatus::Sent,
        "the sender reads Sent until every recipient confirmed"
    );
    f.confirm(B, &sid, &mid, MessageStatus::Delivered)
        .await
        .fails(409, Some("SVC0001"));
    f.confirm(A, &sid, &mid, MessageStatus::Delivered)
        .await
        .fails(403, Some("POL0001"));
    f.confirm(C, &sid, &mid, MessageStatus::Sent)
        .await
        .fails(400, Some("SVC0002"));

    f.confirm(C, &sid, &mid, MessageStatus::Delivered)
        .await
        .no_content();
    let n: MessageDeliveryNotification = a.next().await;
    f.check_delivery(&n, A, &sid, &mid, C, MessageStatus::Delivered);
    assert_eq!(
        f.get_delivery(A, &sid, &mid).await.ok(200).status,
        MessageStatus::Delivered
    );

    // Displayed was not asked for: recorded, not reported; Delivered after it is refused.
    f.confirm(B, &sid, &mid, MessageStatus::Displayed)
        .await
        .no_content();
    assert_eq!(
        f.get_delivery(B, &sid, &mid).await.ok(200).status,
        MessageStatus::Displayed
    );
    f.confirm(B, &sid, &mid, MessageStatus::Delivered)
        .await
        .fails(409, Some("SVC0001"));

    // No report asked: confirmations are recorded, the sender is told nothing.
    let plain = f
        .send_and_receive(&a, &sid, &text("no receipt needed"), &[&b, &c])
        .await;
    f.confirm(B, &sid, &plain, MessageStatus::Delivered)
        .await
        .no_content();
    assert_eq!(
        f.get_delivery(B, &sid, &plain).await.ok(200).status,
        MessageStatus::Delivered
    );

    // reportRequest (OMA 2012) asking for Displayed: reported when it is displayed.
    let displayed = ChatMessage {
        report_request: vec![MessageStatus::Displayed],
        ..text("read me")
    };
    let shown = f.send_and_receive(&a, &sid, &displayed, &[&b, &c]).await;
    f.confirm(C, &sid, &shown, MessageStatus::Displayed)
        .await
        .no_content();
    let n: MessageDeliveryNotification = a.next().await;
    f.check_delivery(&n, A, &sid, &shown, C, MessageStatus::Displayed);

    // Both asked for, and the recipient reports Displayed straight away (as GSMA clients
    // do): the sender is told Delivered, then Displayed.
    let both = ChatMessage {
        report_request: vec![MessageStatus::Delivered, MessageStatus::Displayed],
        ..text("both reports")
    };
    let read = f.send_and_receive(&a, &sid, &both, &[&b, &c]).await;
    f.confirm(B, &sid, &read, MessageStatus::Displayed)
        .await
        .no_content();
    for st in [MessageStatus::Delivered, MessageStatus::Displayed] {
        let n: MessageDeliveryNotification = a.next().await;
        f.check_delivery(&n, A, &sid, &read, B, st);
    }
    quiet(&[&a, &b, &c]).await;
}

// ------------------------------------------------------------------------------------ tests

/// The server's settings for most flows: its defaults.
const DEFAULTS: &[(&str, &str)] = &[];
/// Flow 7.1.4's: invitations time out after 1 s.
const TIMEOUT_1S: &[(&str, &str)] = &[("NETAPI_CHAT_INVITATION_TIMEOUT_SECS", "1")];

/// Runs `flow` on a fresh server started with `env`, through the face of `wire`, every user's
/// notifications coming `via` a callback, a long-poll or a WebSockets notification channel.
async fn run<F>(via: Via, wire: Wire, env: &[(&str, &str)], flow: F)
where
    F: for<'a> AsyncFnOnce(&'a Face<'a>),
{
    let server = Server::start(env);
    let face = match via {
        Via::Callback => Face::new(wire, &server),
        Via::Channel => Face::via_channel(wire, &server, false),
        Via::Socket => Face::via_channel(wire, &server, true),
    };
    flow(&face).await;
}

/// One `#[tokio::test]` per line, `name: via, wire, flow, server settings;`: each flow in each
/// face and each way notifications come. A macro because tests are items, which a function
/// cannot declare; the names are the tests' own (`cargo test --test flows <name>`).
macro_rules! flow_tests {
    ($($name:ident: $via:ident, $wire:ident, $flow:ident, $env:ident;)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                run(Via::$via, Wire::$wire, $env, $flow).await;
            }
        )*
    };
}

flow_tests! {
    // through callbacks
    flow_7_1_1_subscribe_json: Callback, Json, flow_7_1_1, DEFAULTS;
    flow_7_1_1_subscribe_xml: Callback, Xml, flow_7_1_1, DEFAULTS;
    flow_7_1_2_start_one_to_one_json: Callback, Json, flow_7_1_2, DEFAULTS;
    flow_7_1_2_start_one_to_one_xml: Callback, Xml, flow_7_1_2, DEFAULTS;
    flow_7_1_3_extend_to_group_json: Callback, Json, flow_7_1_3, DEFAULTS;
    flow_7_1_3_extend_to_group_xml: Callback, Xml, flow_7_1_3, DEFAULTS;
    flow_7_1_3_extend_with_one_participant_json: Callback, Json, flow_7_1_3_one, DEFAULTS;
    flow_7_1_3_extend_with_one_participant_xml: Callback, Xml, flow_7_1_3_one, DEFAULTS;
    flow_7_1_7_declined_then_invited_again_json: Callback, Json, flow_7_1_7_invited_again, DEFAULTS;
    flow_7_1_7_declined_then_invited_again_xml: Callback, Xml, flow_7_1_7_invited_again, DEFAULTS;
    flow_7_1_4_group_chat_with_timeout_json: Callback, Json, flow_7_1_4, TIMEOUT_1S;
    flow_7_1_4_group_chat_with_timeout_xml: Callback, Xml, flow_7_1_4, TIMEOUT_1S;
    flow_7_1_5_end_session_json: Callback, Json, flow_7_1_5, DEFAULTS;
    flow_7_1_5_end_session_xml: Callback, Xml, flow_7_1_5, DEFAULTS;
    flow_7_1_6_cancel_invitation_json: Callback, Json, flow_7_1_6, DEFAULTS;
    flow_7_1_6_cancel_invitation_xml: Callback, Xml, flow_7_1_6, DEFAULTS;
    flow_7_1_7_accept_decline_json: Callback, Json, flow_7_1_7, DEFAULTS;
    flow_7_1_7_accept_decline_xml: Callback, Xml, flow_7_1_7, DEFAULTS;
    flow_7_1_8_leave_rejoin_json: Callback, Json, flow_7_1_8, DEFAULTS;
    flow_7_1_8_leave_rejoin_xml: Callback, Xml, flow_7_1_8, DEFAULTS;
    flow_7_1_9_send_message_json: Callback, Json, flow_7_1_9, DEFAULTS;
    flow_7_1_9_send_message_xml: Callback, Xml, flow_7_1_9, DEFAULTS;
    flow_7_1_10_confirm_delivery_json: Callback, Json, flow_7_1_10, DEFAULTS;
    flow_7_1_10_confirm_delivery_xml: Callback, Xml, flow_7_1_10, DEFAULTS;
    // through long-poll notification channels
    flow_7_1_1_subscribe_channel_json: Channel, Json, flow_7_1_1, DEFAULTS;
    flow_7_1_1_subscribe_channel_xml: Channel, Xml, flow_7_1_1, DEFAULTS;
    flow_7_1_2_start_one_to_one_channel_json: Channel, Json, flow_7_1_2, DEFAULTS;
    flow_7_1_2_start_one_to_one_channel_xml: Channel, Xml, flow_7_1_2, DEFAULTS;
    flow_7_1_3_extend_to_group_channel_json: Channel, Json, flow_7_1_3, DEFAULTS;
    flow_7_1_3_extend_to_group_channel_xml: Channel, Xml, flow_7_1_3, DEFAULTS;
    flow_7_1_3_extend_with_one_participant_channel_json: Channel, Json, flow_7_1_3_one, DEFAULTS;
    flow_7_1_3_extend_with_one_participant_channel_xml: Channel, Xml, flow_7_1_3_one, DEFAULTS;
    flow_7_1_7_declined_then_invited_again_channel_json: Channel, Json, flow_7_1_7_invited_again, DEFAULTS;
    flow_7_1_7_declined_then_invited_again_channel_xml: Channel, Xml, flow_7_1_7_invited_again, DEFAULTS;
    flow_7_1_5_end_session_channel_json: Channel, Json, flow_7_1_5, DEFAULTS;
    flow_7_1_5_end_session_channel_xml: Channel, Xml, flow_7_1_5, DEFAULTS;
    flow_7_1_6_cancel_invitation_channel_json: Channel, Json, flow_7_1_6, DEFAULTS;
    flow_7_1_6_cancel_invitation_channel_xml: Channel, Xml, flow_7_1_6, DEFAULTS;
    flow_7_1_7_accept_decline_channel_json: Channel, Json, flow_7_1_7, DEFAULTS;
    flow_7_1_7_accept_decline_channel_xml: Channel, Xml, flow_7_1_7, DEFAULTS;
    flow_7_1_8_leave_rejoin_channel_json: Channel, Json, flow_7_1_8, DEFAULTS;
    flow_7_1_8_leave_rejoin_channel_xml: Channel, Xml, flow_7_1_8, DEFAULTS;
    flow_7_1_9_send_message_channel_json: Channel, Json, flow_7_1_9, DEFAULTS;
    flow_7_1_9_send_message_channel_xml: Channel, Xml, flow_7_1_9, DEFAULTS;
    flow_7_1_10_confirm_delivery_channel_json: Channel, Json, flow_7_1_10, DEFAULTS;
    flow_7_1_10_confirm_delivery_channel_xml: Channel, Xml, flow_7_1_10, DEFAULTS;
    flow_7_1_4_group_chat_with_timeout_channel_json: Channel, Json, flow_7_1_4, TIMEOUT_1S;
    flow_7_1_4_group_chat_with_timeout_channel_xml: Channel, Xml, flow_7_1_4, TIMEOUT_1S;
    // through WebSockets notification channels
    flow_7_1_1_subscribe_socket_json: Socket, Json, flow_7_1_1, DEFAULTS;
    flow_7_1_1_subscribe_socket_xml: Socket, Xml, flow_7_1_1, DEFAULTS;
    flow_7_1_2_start_one_to_one_socket_json: Socket, Json, flow_7_1_2, DEFAULTS;
    flow_7_1_2_start_one_to_one_socket_xml: Socket, Xml, flow_7_1_2, DEFAULTS;
    flow_7_1_3_extend_to_group_socket_json: Socket, Json, flow_7_1_3, DEFAULTS;
    flow_7_1_3_extend_to_group_socket_xml: Socket, Xml, flow_7_1_3, DEFAULTS;
    flow_7_1_3_extend_with_one_participant_socket_json: Socket, Json, flow_7_1_3_one, DEFAULTS;
    flow_7_1_3_extend_with_one_participant_socket_xml: Socket, Xml, flow_7_1_3_one, DEFAULTS;
    flow_7_1_7_declined_then_invited_again_socket_json: Socket, Json, flow_7_1_7_invited_again, DEFAULTS;
    flow_7_1_7_declined_then_invited_again_socket_xml: Socket, Xml, flow_7_1_7_invited_again, DEFAULTS;
    flow_7_1_5_end_session_socket_json: Socket, Json, flow_7_1_5, DEFAULTS;
    flow_7_1_5_end_session_socket_xml: Socket, Xml, flow_7_1_5, DEFAULTS;
    flow_7_1_6_cancel_invitation_socket_json: Socket, Json, flow_7_1_6, DEFAULTS;
    flow_7_1_6_cancel_invitation_socket_xml: Socket, Xml, flow_7_1_6, DEFAULTS;
    flow_7_1_7_accept_decline_socket_json: Socket, Json, flow_7_1_7, DEFAULTS;
    flow_7_1_7_accept_decline_socket_xml: Socket, Xml, flow_7_1_7, DEFAULTS;
    flow_7_1_8_leave_rejoin_socket_json: Socket, Json, flow_7_1_8, DEFAULTS;
    flow_7_1_8_leave_rejoin_socket_xml: Socket, Xml, flow_7_1_8, DEFAULTS;
    flow_7_1_9_send_message_socket_json: Socket, Json, flow_7_1_9, DEFAULTS;
    flow_7_1_9_send_message_socket_xml: Socket, Xml, flow_7_1_9, DEFAULTS;
    flow_7_1_10_confirm_delivery_socket_json: Socket, Json, flow_7_1_10, DEFAULTS;
    flow_7_1_10_confirm_delivery_socket_xml: Socket, Xml, flow_7_1_10, DEFAULTS;
    flow_7_1_4_group_chat_with_timeout_socket_json: Socket, Json, flow_7_1_4, TIMEOUT_1S;
    flow_7_1_4_group_chat_with_timeout_socket_xml: Socket, Xml, flow_7_1_4, TIMEOUT_1S;
}

/// A `clientCorrelator` that is empty (JSON `""`, `<clientCorrelator/>`) or nil (JSON `null`,
/// `xsi:nil`) names no request, on each create of the seed face (subscription, session,
/// message, notification channel): every such create makes a new resource, however many came
/// before, and none reads back with a correlator. (An empty one was kept as the correlator
/// `""`: the next create with one answered the first resource, or was `409 SVC0005`.)
#[tokio::test]
async fn a_blank_client_correlator_is_none() {
    use netapi_chat_runtime::Format;
    use support::chat::each_creates_anew;
    use support::docs::{CORRELATOR_MARK, blank_correlators};
    let srv = Server::default_for_tests();
    let urls = srv.urls();
    let listener = Listener::start().await;
    let mark = || Some(CORRELATOR_MARK.to_owned());
    let sid = support::chat::connected_session(&srv, A, &docs::session("talk", &[B])).await;
    for (f, invitee) in [(Format::Json, C), (Format::Xml, D)] {
        let subscription = ChatSubscription {
            client_correlator: mark(),
            ..docs::subscription(&listener.url)
        };
        let bodies = blank_correlators(f, &subscription);
        each_creates_anew(f, &urls.subscriptions(A), &bodies).await;

        let session = ChatSessionInformation {
            client_correlator: mark(),
            ..docs::session("again", &[invitee])
        };
        let bodies = blank_correlators(f, &session);
        each_creates_anew(f, &urls.chat_sessions(A), &bodies).await;

        let message = ChatMessage {
            client_correlator: mark(),
            ..docs::message("once more")
        };
        let bodies = blank_correlators(f, &message);
        each_creates_anew(f, &urls.messages(A, &sid), &bodies).await;

        let channel = netapi_chat_api::NotificationChannel {
            client_correlator: mark(),
            ..docs::channel(ChannelType::LongPolling, None, None)
        };
        let bodies = blank_correlators(f, &channel);
        each_creates_anew(f, &urls.channels(A), &bodies).await;
    }
}
