//! Driving netapi-chat: users with subscriptions and callback listeners, 1-1 and group
//! sessions created and accepted through the API, and the message-send request of each step.

use super::http::{Conn, Reply, encode, request};
use super::listen::{Collector, Listener, message_text};
use super::load::{MakeRequest, Target};
use super::proc::AUTHORIZATION;
use anyhow::{Context, Result, bail};
use http::Method;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Body format of a run: message sends, their answers, and the notifications.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `application/json`.
    Json,
    /// `application/xml`.
    Xml,
}

impl Format {
    /// The media type.
    pub fn media_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Xml => "application/xml",
        }
    }

    /// The `notificationFormat` value.
    fn notification_format(self) -> &'static str {
        match self {
            Format::Json => "JSON",
            Format::Xml => "XML",
        }
    }

    /// A `chatMessage` document with `text`.
    pub fn chat_message(self, text: &str) -> String {
        match self {
            Format::Json => format!(r#"{{"chatMessage":{{"text":"{text}"}}}}"#),
            Format::Xml => format!(
                r#"<chat:chatMessage xmlns:chat="urn:oma:xml:rest:netapi:chat:1"><text>{text}</text></chat:chatMessage>"#
            ),
        }
    }
}

/// Who chats with whom: `one_to_one` sessions of two users and `groups` sessions of
/// `group_size` users, every user in exactly one session.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// 1-1 sessions.
    pub one_to_one: usize,
    /// Group sessions.
    pub groups: usize,
    /// Users per group session.
    pub group_size: usize,
    /// Every user subscribes through the OMA 2012 face (`chatNotificationSubscription`), so
    /// that what reaches its listener is recorded `Delivered` by the server (`--oma2012`);
    /// else through the seed face. Messages are sent on the seed face either way.
    pub oma2012: bool,
}

impl Plan {
    /// Members (user indices) of each session.
    pub fn sessions(&self) -> Vec<Vec<usize>> {
        let mut next = 0;
        let mut take = |n: usize| {
            let v: Vec<usize> = (next..next + n).collect();
            next += n;
            v
        };
        let mut out: Vec<Vec<usize>> = (0..self.one_to_one).map(|_| take(2)).collect();
        out.extend((0..self.groups).map(|_| take(self.group_size)));
        out
    }

    /// Users in all.
    pub fn users(&self) -> usize {
        self.one_to_one * 2 + self.groups * self.group_size
    }

    /// Sessions in all.
    pub fn session_count(&self) -> usize {
        self.one_to_one + self.groups
    }

    /// e.g. "48 users in 20 sessions (16 1-1, 4 groups of 4)".
    pub fn describe(&self) -> String {
        format!(
            "{} users in {} sessions ({} 1-1, {} groups of {})",
            self.users(),
            self.session_count(),
            self.one_to_one,
            self.groups,
            self.group_size
        )
    }
}

/// The address of benchmark user `i`.
pub fn user(i: usize) -> String {
    format!("tel:+1555{i:07}")
}

/// `/v1/chat/{user}` + `rest`.
pub fn path(user: &str, rest: &str) -> String {
    format!("/v1/chat/{}{rest}", encode(user))
}

const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// POSTs a JSON body; fails unless the answer is 2xx.
pub async fn post_json(conn: &mut Conn, path: &str, body: String) -> Result<Reply> {
    let req = request(
        Method::POST,
        path,
        &[
            ("content-type", "application/json"),
            ("accept", "application/json"),
            ("authorization", AUTHORIZATION),
        ],
        body,
    )?;
    let r = conn.send(req, SETUP_TIMEOUT).await?;
    if !r.ok() {
        bail!("POST {path}: status {}: {}", r.status, r.text());
    }
    Ok(r)
}

/// The session id at the end of a `Location`.
pub fn session_id(r: &Reply) -> Result<String> {
    let loc = r.header("location");
    loc.rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .with_context(|| format!("no session id in Location {loc:?}"))
}

/// Creates a session of the first member with the others, and has each of them accept.
pub async fn open_session(conn: &mut Conn, members: &[String]) -> Result<String> {
    let Some((originator, invitees)) = members.split_first() else {
        bail!("a session needs members");
    };
    let participants: Vec<String> = invitees
        .iter()
        .map(|a| format!(r#"{{"address":"{a}"}}"#))
        .collect();
    let body = format!(
        r#"{{"chatSessionInformation":{{"subject":"bench","participant":[{}]}}}}"#,
        participants.join(",")
    );
    let r = post_json(conn, &path(originator, "/chatSessions"), body).await?;
    let sid = session_id(&r)?;
    for m in invitees {
        let rest = format!("/chatSessions/{sid}/participants/{}/status", encode(m));
        post_json(
            conn,
            &path(m, &rest),
            r#"{"participantSessionStatus":{"status":"Connected"}}"#.to_owned(),
        )
        .await?;
    }
    Ok(sid)
}

/// A running workload: users subscribed with their own listeners, sessions accepted.
pub struct Workload {
    /// Per session: the message path of each member with a listener, as sender.
    routes: Vec<Vec<String>>,
    /// Per session: the members with a listener (each message notifies all but its sender).
    notified: Vec<u32>,
    /// The listeners (stopped when the workload is dropped).
    _listeners: Vec<Listener>,
}

/// The set-up of every phase that sends chat messages: a [`Workload`] on the server at `addr`
/// (every user of `plan` subscribed with a listener, every session open, plus the `extra`
/// users: [`Workload::setup_fronted`]) and the [`Target`] that sends its messages in
/// `format` with `text_len` characters, collects their notifications and measures the CPU of
/// `server_pid` (the server itself, or the leader a standby forwards to). The workload keeps
/// the listeners: hold it as long as the target runs. With `front`, the listeners are
/// reached through it (HTTPS, a connection per notification).
pub async fn chat_target(
    addr: SocketAddr,
    plan: &Plan,
    format: Format,
    text_len: usize,
    server_pid: u32,
    extra: &[String],
    front: Option<&super::tls_front::TlsFront>,
) -> Result<(Workload, Target)> {
    let collector = Arc::new(Collector::default());
    let workload = Workload::setup_fronted(addr, plan, format, &collector, extra, front).await?;
    let target = Target {
        addr,
        make: workload.make_request(format, text_len),
        collector: Some(collector),
        server_pid: Some(server_pid),
        tap: None,
    };
    Ok((workload, target))
}

impl Workload {
    /// Subscribes every user of `plan` (notifications in `format` to its own listener), then
    /// opens every session; plus one more user per URL of `extra`, subscribed with that
    /// `notifyURL` (a receiver the harness does not collect from, e.g. a dead one) and added
    /// to the group sessions in turn (1-1 sessions stay 1-1), where it accepts like the
    /// others. Extra users never send: the messages and the notifications the collector
    /// expects are those of `plan` alone, so a run with extras and one without send the same.
    /// Each user's listener is reached through `front` (HTTPS, see [`super::tls_front`]) when
    /// given.
    pub async fn setup_fronted(
        addr: SocketAddr,
        plan: &Plan,
        format: Format,
        collector: &Arc<Collector>,
        extra: &[String],
        front: Option<&super::tls_front::TlsFront>,
    ) -> Result<Workload> {
        let mut conn = Conn::new(addr);
        let mut listeners = Vec::new();
        let subscribe = |i: usize, url: &str| {
            let root = if plan.oma2012 {
                "chatNotificationSubscription"
            } else {
                "chatSubscription"
            };
            format!(
                r#"{{"{root}":{{"callbackReference":{{"notifyURL":"{url}","callbackData":"bench-{i}","notificationFormat":"{}"}}}}}}"#,
                format.notification_format()
            )
        };
        let subscriptions = |i: usize| {
            if plan.oma2012 {
                format!("/chat/v1/{}/subscriptions", encode(&user(i)))
            } else {
                path(&user(i), "/subscriptions")
            }
        };
        for i in 0..plan.users() {
            let l = Listener::start(Arc::clone(collector)).await?;
            let url = match front {
                Some(f) => f.front(&l.url).await?,
                None => l.url.clone(),
            };
            post_json(&mut conn, &subscriptions(i), subscribe(i, &url)).await?;
            listeners.push(l);
        }
        let sessions = plan.sessions();
        let groups: Vec<usize> = (0..sessions.len())
            .filter(|&s| sessions[s].len() > 2)
            .collect();
        if !extra.is_empty() && groups.is_empty() {
            bail!("extra receivers go into group sessions, and the plan has none");
        }
        let mut extras: Vec<Vec<String>> = vec![Vec::new(); sessions.len()];
        for (k, url) in extra.iter().enumerate() {
            let i = plan.users() + k;
            post_json(
                &mut conn,
                &path(&user(i), "/subscriptions"),
                subscribe(i, url),
            )
            .await?;
            extras[groups[k % groups.len()]].push(user(i));
        }
        let mut routes = Vec::new();
        let mut notified = Vec::new();
        for (members, more) in sessions.iter().zip(extras) {
            let addrs: Vec<String> = members.iter().map(|&i| user(i)).collect();
            let all: Vec<String> = addrs.iter().cloned().chain(more).collect();
            let sid = open_session(&mut conn, &all).await?;
            routes.push(
                addrs
                    .iter()
                    .map(|a| path(a, &format!("/chatSessions/{sid}/messages")))
                    .collect(),
            );
            notified.push(u32::try_from(addrs.len()).unwrap_or(u32::MAX));
        }
        Ok(Workload {
            routes,
            notified,
            _listeners: listeners,
        })
    }

    /// Message `seq` goes to session `seq % M`, sent by its members in turn; every other
    /// member is connected and gets a notification.
    pub fn make_request(&self, format: Format, text_len: usize) -> MakeRequest {
        let routes = self.routes.clone();
        let notified = self.notified.clone();
        Arc::new(move |step, seq| {
            let m = routes.len().max(1) as u64;
            let members = routes
                .get((seq % m) as usize)
                .context("workload has no sessions")?;
            let listening = notified.get((seq % m) as usize).copied().unwrap_or(0);
            let sender = ((seq / m) % members.len().max(1) as u64) as usize;
            let body = format.chat_message(&message_text(step, seq, text_len));
            let req = request(
                Method::POST,
                &members[sender],
                &[
                    ("content-type", format.media_type()),
                    ("accept", format.media_type()),
                    ("authorization", AUTHORIZATION),
                ],
                body,
            )?;
            Ok((req, listening.saturating_sub(1)))
        })
    }
}
