//! Notification channels seen from an application (issue 15): a [`Relay`] runs a channel's
//! poll loop (long polling) or socket (WebSockets) and POSTs every notification it gets, as
//! the document a callback would have received, to a [`Listener`](super::Listener), so a
//! flow reads a user's notifications the same way whichever way (`Via`) they came.

use netapi_chat_api::{ChannelNotification, NotificationList};
use netapi_chat_runtime::Format;
use netapi_chat_runtime::wire;
use netapi_chat_runtime::xml::XmlLimits;

use super::{APP_TOKEN, Answer, send_empty, xsd_validate};

/// A poll loop (or socket) on a user's notification channel, relaying to the user's listener.
/// Stops when dropped (with the user), or when the channel is gone.
pub struct Relay(tokio::task::JoinHandle<()>);

impl Drop for Relay {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Relay {
    /// Long-polls `channel_url` in `format` (each poll acknowledging the previous answer) and
    /// POSTs every notification a poll answers to `listener_url`.
    pub fn start(channel_url: String, format: Format, listener_url: String) -> Relay {
        Relay(tokio::spawn(async move {
            let http = reqwest::Client::new();
            loop {
                let a = send_empty("POST", &channel_url, format).await;
                if a.status == 404 {
                    return;
                }
                assert_eq!(a.status, 200, "poll of {channel_url}: {}", a.body);
                for (id, e) in answered(&a) {
                    relay(&http, &listener_url, format, &id, entry_body(e, format)).await;
                }
            }
        }))
    }

    /// A socket on a WebSockets channel: each frame (one notification signed like a callback,
    /// its body XML validated against the XSD) is handed to the listener, then acknowledged by
    /// sending its `webhook-id` back.
    pub fn start_socket(channel_url: String, format: Format, listener_url: String) -> Relay {
        Relay(tokio::spawn(async move {
            use futures_util::{SinkExt, StreamExt};
            use tokio_tungstenite::tungstenite::Message;
            use tokio_tungstenite::tungstenite::client::IntoClientRequest;
            let mut request = channel_url.as_str().into_client_request().expect("ws URL");
            let h = request.headers_mut();
            h.insert(
                http::header::AUTHORIZATION,
                format!("Bearer {APP_TOKEN}").parse().unwrap(),
            );
            h.insert(http::header::ACCEPT, format.media_type().parse().unwrap());
            let host = request.uri().authority().expect("host").to_string();
            let tcp = tokio::net::TcpStream::connect(host).await.expect("connect");
            let (mut ws, _) = tokio_tungstenite::client_async(request, tcp)
                .await
                .expect("WebSocket handshake");
            let http = reqwest::Client::new();
            while let Some(Ok(m)) = ws.next().await {
                let Message::Text(t) = m else { continue };
                let f = Frame::parse(&t);
                if format == Format::Xml {
                    xsd_validate(&f.body);
                }
                let id = f.header("webhook-id").to_owned();
                relay(&http, &listener_url, format, &id, f.body.into_bytes()).await;
                ws.send(Message::Text(id.into()))
                    .await
                    .expect("acknowledge");
            }
        }))
    }
}

/// A frame of a channel's socket: the Standard Webhooks header lines, a blank line, the body
/// a callback would carry.
#[derive(Debug)]
pub struct Frame {
    /// `(name, value)` of each header line, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

impl Frame {
    /// Splits a frame's text (panics on a frame that is not header lines, a blank line, a body).
    pub fn parse(text: &str) -> Frame {
        let (head, body) = text
            .split_once("\n\n")
            .unwrap_or_else(|| panic!("a frame is headers, a blank line, a body: {text}"));
        let headers = head
            .lines()
            .map(|l| {
                let (n, v) = l
                    .split_once(':')
                    .unwrap_or_else(|| panic!("a header line: {l}"));
                (n.to_owned(), v.trim().to_owned())
            })
            .collect();
        Frame {
            headers,
            body: body.to_owned(),
        }
    }

    /// The value of header `name` (panics without it).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {name} in {self:?}"))
    }

    /// Whether the signature verifies with `secret` now (Standard Webhooks, 5 min tolerance).
    pub fn verifies(&self, secret: &str) -> bool {
        use netapi_chat::signing::{Signer, WebhookHeaders};
        let headers = WebhookHeaders {
            id: self.header("webhook-id"),
            timestamp: self.header("webhook-timestamp"),
            signature: self.header("webhook-signature"),
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
        Signer::from_secret(secret)
            .expect("a whsec_ secret")
            .verify(&headers, self.body.as_bytes(), now, 300)
            .is_ok()
    }
}

/// A poll's answer as (stable id, notification) pairs, in order: the body's
/// `notificationList` (XML validated against the XSD) beside its `Webhook-Ids` header, which
/// must name exactly one id per notification.
pub fn answered(a: &Answer) -> Vec<(String, ChannelNotification)> {
    let list: NotificationList = a.decode();
    let ids = webhook_ids(a);
    assert_eq!(
        ids.len(),
        list.items.len(),
        "one Webhook-Ids entry per notification: {ids:?}, {}",
        a.body
    );
    ids.into_iter().zip(list.items).collect()
}

/// The ids of a poll's `Webhook-Ids` header, in order (none when it is absent).
pub fn webhook_ids(a: &Answer) -> Vec<String> {
    let all: Vec<&str> = a
        .headers
        .get_all("webhook-ids")
        .iter()
        .map(|v| v.to_str().expect("an ASCII header"))
        .collect();
    assert!(all.len() <= 1, "one Webhook-Ids header: {all:?}");
    all.first()
        .map(|v| v.split(',').map(|id| id.trim().to_owned()).collect())
        .unwrap_or_default()
}

/// POSTs one notification to the listener, with its `webhook-id`.
async fn relay(
    http: &reqwest::Client,
    listener_url: &str,
    format: Format,
    id: &str,
    body: Vec<u8>,
) {
    http.post(listener_url)
        .header(http::header::CONTENT_TYPE, format.media_type())
        .header("webhook-id", id)
        .body(body)
        .send()
        .await
        .expect("relay to the listener");
}

/// The notification of a list entry, as the document a callback would have received.
pub fn entry_body(e: ChannelNotification, format: Format) -> Vec<u8> {
    match e {
        ChannelNotification {
            session_invitation_notification: Some(n),
            ..
        } => wire::encode(format, &n),
        ChannelNotification {
            participant_status_notification: Some(n),
            ..
        } => wire::encode(format, &n),
        ChannelNotification {
            chat_event_notification: Some(n),
            ..
        } => wire::encode(format, &n),
        ChannelNotification {
            message_notification: Some(n),
            ..
        } => wire::encode(format, &n),
        ChannelNotification {
            message_delivery_notification: Some(n),
            ..
        } => wire::encode(format, &n),
        ChannelNotification {
            subscription_cancellation_notification: Some(n),
            ..
        } => wire::encode(format, &n),
        other => panic!("an entry without a notification: {other:?}"),
    }
}
