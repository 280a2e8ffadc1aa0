//! `cargo xtask bench --channels [--smoke]`: POST → notification received over a notification
//! channel (issue 15), long poll and WebSocket, beside the same figure over a callback.
//!
//! One server per way, fresh, so that the ways do not share a backlog: a 1-1 session of two
//! users, the receiver's notifications coming (1) to a callback listener (the project's one
//! listener, as the message-send series), (2) through a `LongPolling` channel drained by a poll
//! loop that acknowledges explicitly (`?ack=`), or (3) through a `WebSockets` channel whose
//! client acknowledges each frame. The sender POSTs messages open-loop at a fixed rate (one
//! connection, each send at its intended time); each receipt's latency counts from the
//! intended send time (the collector of [`super::listen`], matched by the marker in the
//! message text). Per way: p50, p99, the receipts and the messages sent. Writes
//! `target/bench/channels.md` (`channels.smoke.md` with `--smoke`) and prints it;
//! BENCHMARKS.md quotes it by hand. Nothing here asserts a timing.

use super::chat::{Format, open_session, path, post_json, user};
use super::http::{Conn, encode, request};
use super::listen::{Collector, Listener, MARKER, message_text};
use super::load::Percentiles;
use super::proc::{self, AUTHORIZATION, start_netapi_chat};
use anyhow::{Context, Result, bail};
use http::Method;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the phase does.
pub struct Settings {
    /// Messages sent per way.
    pub messages: u64,
    /// Send rate, msg/s.
    pub rate: u32,
    /// Message text length.
    pub text_len: usize,
    /// The channels' `maxWaitTime` (s): a poll answers at the latest after it.
    pub max_wait_secs: u32,
}

/// How the receiver's notifications come.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Way {
    Callback,
    LongPoll,
    WebSocket,
}

impl Way {
    fn name(self) -> &'static str {
        match self {
            Way::Callback => "callback (HTTP POST to the listener)",
            Way::LongPoll => "long-poll channel (`?ack=`)",
            Way::WebSocket => "WebSocket channel",
        }
    }
}

/// One way's figures.
struct Measured {
    way: Way,
    sent: u64,
    latency: Percentiles,
    stray: u64,
}

/// Hands every notification of a poll answer or frame to the collector: one record per
/// marker (an answer may hold several notifications).
fn record_all(collector: &Collector, body: &[u8], at: Instant) {
    let mut from = 0;
    while let Some(i) = body[from..].windows(MARKER.len()).position(|w| w == MARKER) {
        collector.record(&body[from + i..], at);
        from += i + MARKER.len();
    }
}

/// The ids of a poll answer, in order: its `Webhook-Ids` header, `, `-separated.
fn webhook_ids(header: Option<&str>) -> Vec<String> {
    header
        .into_iter()
        .flat_map(|h| h.split(','))
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Creates a channel of `user`; answers (channelURL, callbackURL).
async fn channel(
    conn: &mut Conn,
    user: &str,
    kind: &str,
    max_wait: u32,
) -> Result<(String, String)> {
    let body = format!(
        r#"{{"notificationChannel":{{"channelType":"{kind}","channelData":{{"maxWaitTime":{max_wait}}}}}}}"#
    );
    let r = post_json(
        conn,
        &format!("/notificationchannel/v1/{}/channels", encode(user)),
        body,
    )
    .await?;
    let v = r.json()?;
    let ch = &v["notificationChannel"];
    let url = ch["channelData"]["channelURL"]
        .as_str()
        .context("no channelURL")?;
    let callback = ch["callbackURL"].as_str().context("no callbackURL")?;
    Ok((url.to_owned(), callback.to_owned()))
}

/// The path of an absolute URL on the server.
fn path_of(url: &str) -> String {
    url.splitn(4, '/')
        .nth(3)
        .map_or_else(|| "/".to_owned(), |p| format!("/{p}"))
}

/// A poll loop: each answer's notifications to the collector, each poll acknowledging the last
/// one processed. Ends when the channel is gone or the task is aborted.
async fn poll_loop(addr: SocketAddr, url: String, collector: Arc<Collector>, max_wait: u32) {
    let mut conn = Conn::new(addr);
    let base = path_of(&url);
    let mut last = String::new();
    loop {
        let Ok(req) = request(
            Method::POST,
            &format!("{base}?ack={last}"),
            &[
                ("accept", "application/json"),
                ("authorization", AUTHORIZATION),
            ],
            String::new(),
        ) else {
            return;
        };
        let Ok(r) = conn
            .send(req, Duration::from_secs(u64::from(max_wait) + 10))
            .await
        else {
            continue;
        };
        if r.status == 404 {
            return;
        }
        record_all(&collector, &r.body, Instant::now());
        let ids = r.headers.get("webhook-ids").and_then(|v| v.to_str().ok());
        if let Some(id) = webhook_ids(ids).pop() {
            last = id;
        }
    }
}

/// A socket: each frame's notification to the collector, then its acknowledgement.
async fn socket_loop(url: String, collector: Arc<Collector>) -> Result<()> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.as_str().into_client_request()?;
    req.headers_mut()
        .insert(http::header::AUTHORIZATION, AUTHORIZATION.parse()?);
    let host = req.uri().authority().context("no host")?.to_string();
    let tcp = tokio::net::TcpStream::connect(host).await?;
    tcp.set_nodelay(true)?;
    let (mut ws, _) = tokio_tungstenite::client_async(req, tcp).await?;
    while let Some(m) = ws.next().await {
        let Message::Text(t) = m? else { continue };
        let at = Instant::now();
        record_all(&collector, t.as_bytes(), at);
        let id = t
            .lines()
            .find_map(|l| l.strip_prefix("webhook-id: "))
            .context("a frame without webhook-id")?
            .to_owned();
        ws.send(Message::Text(id.into())).await?;
    }
    Ok(())
}

/// One way on a fresh server: setup, the sends, the receipts.
async fn measure(root: &Path, s: &Settings, way: Way) -> Result<Measured> {
    let label = format!("channels-{way:?}").to_lowercase();
    let mut chat = start_netapi_chat(root, &label, &[])?;
    let addr = chat.server.addr;
    let collector = Arc::new(Collector::default());
    let mut conn = Conn::new(addr);
    let (sender, receiver) = (user(0), user(1));
    let mut _listener = None;
    let mut task = None;
    let notify_url = match way {
        Way::Callback => {
            let l = Listener::start(Arc::clone(&collector)).await?;
            let url = l.url.clone();
            _listener = Some(l);
            url
        }
        Way::LongPoll => {
            let (url, callback) =
                channel(&mut conn, &receiver, "LongPolling", s.max_wait_secs).await?;
            let c = Arc::clone(&collector);
            let wait = s.max_wait_secs;
            task = Some(tokio::spawn(async move {
                poll_loop(addr, url, c, wait).await;
            }));
            callback
        }
        Way::WebSocket => {
            let (url, callback) =
                channel(&mut conn, &receiver, "WebSockets", s.max_wait_secs).await?;
            let c = Arc::clone(&collector);
            task = Some(tokio::spawn(async move {
                if let Err(e) = socket_loop(url, c).await {
                    println!("bench: channel socket ended: {e:#}");
                }
            }));
            callback
        }
    };
    let body = format!(
        r#"{{"chatSubscription":{{"callbackReference":{{"notifyURL":"{notify_url}","callbackData":"bench"}}}}}}"#
    );
    post_json(&mut conn, &path(&receiver, "/subscriptions"), body).await?;
    let sid = open_session(&mut conn, &[sender.clone(), receiver.clone()]).await?;
    let messages = path(&sender, &format!("/chatSessions/{sid}/messages"));
    // Let the invitation and its acceptance's notifications through before the clock starts.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let interval_ns = 1e9 / f64::from(s.rate.max(1));
    let start = Instant::now() + Duration::from_millis(50);
    collector.begin(1, start, interval_ns);
    let mut sent = 0;
    for seq in 0..s.messages {
        tokio::time::sleep_until(super::listen::intended(start, seq, interval_ns).into()).await;
        let req = request(
            Method::POST,
            &messages,
            &[
                ("content-type", "application/json"),
                ("accept", "application/json"),
                ("authorization", AUTHORIZATION),
            ],
            Format::Json.chat_message(&message_text(1, seq, s.text_len)),
        )?;
        if conn.send(req, Duration::from_secs(10)).await?.ok() {
            sent += 1;
        }
    }
    // Every receipt, or up to 10 s more.
    let deadline = Instant::now() + Duration::from_secs(10);
    while (collector.count() as u64) < sent && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if let Some(t) = task {
        t.abort();
    }
    let (mut samples, stray) = collector.take();
    if !chat.server.running() {
        bail!("netapi-chat exited during the {way:?} run");
    }
    drop(chat);
    Ok(Measured {
        way,
        sent,
        latency: Percentiles::of(&mut samples),
        stray,
    })
}

fn ms(ns: u64) -> String {
    format!("{:.2}", ns as f64 / 1e6)
}

/// Runs the three ways and writes the table; `command` is how it was run.
pub async fn run(root: &Path, s: &Settings, smoke: bool, command: &str) -> Result<String> {
    let mut rows = Vec::new();
    for way in [Way::Callback, Way::LongPoll, Way::WebSocket] {
        println!("bench: channels, {}", way.name());
        rows.push(measure(root, s, way).await?);
    }
    let machine = proc::Machine::read();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "### POST → notification received: callback vs notification channels\n\n\
         `{command}`: {} messages at {} msg/s per way, JSON, one 1-1 session, a fresh server \
         per way; latency from each message's intended send time to its receipt by the \
         application ({} cores, {}).\n",
        s.messages, s.rate, machine.cores, machine.cpu
    );
    let _ = writeln!(md, "| way | sent | received | p50 ms | p99 ms |");
    let _ = writeln!(md, "|---|---:|---:|---:|---:|");
    for r in &rows {
        let _ = writeln!(
            md,
            "| {} | {} | {}{} | {} | {} |",
            r.way.name(),
            r.sent,
            r.latency.n,
            if r.stray > 0 {
                format!(" (+{} stray)", r.stray)
            } else {
                String::new()
            },
            ms(r.latency.p50),
            ms(r.latency.p99)
        );
    }
    let file = if smoke {
        "channels.smoke.md"
    } else {
        "channels.md"
    };
    let out = proc::target_dir(root).join("bench").join(file);
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, &md).with_context(|| format!("writing {}", out.display()))?;
    println!("{md}\nbench: written to {}", out.display());
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_notification_of_an_answer_is_recorded() {
        let c = Collector::default();
        let start = Instant::now();
        c.begin(1, start, 1e6);
        let body = format!(
            r#"{{"notificationList":[{{"messageNotification":{{"chatMessage":{{"text":"{}"}}}}}},{{"messageNotification":{{"chatMessage":{{"text":"{}"}}}}}}]}}"#,
            message_text(1, 0, 20),
            message_text(1, 1, 20)
        );
        record_all(&c, body.as_bytes(), start + Duration::from_millis(5));
        assert_eq!(c.count(), 2);
        assert_eq!(webhook_ids(Some("msg_1, msg_2")), ["msg_1", "msg_2"]);
        assert_eq!(webhook_ids(Some("msg_3")), ["msg_3"]);
        assert!(webhook_ids(None).is_empty());
        assert_eq!(path_of("http://127.0.0.1:9/a/b?c"), "/a/b?c");
    }
}
