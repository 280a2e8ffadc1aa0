//! The socket of a `WebSockets` notification channel (issue 15): `GET` its `channelURL`
//! (`ws://…/notificationchannel/v1/{userId}/channels/{channelId}/websocket`) with the usual
//! `Authorization` header and the WebSocket handshake.
//!
//! Not an operation of the published OpenAPI document: OpenAPI 3.0 cannot describe a
//! WebSocket, and the generated client could not use one; the spec describes the protocol on
//! `createNotificationChannel`. The handshake is checked like any request (credentials, the
//! user the token may act for, the channel being the user's own and a `WebSockets` one)
//! before the upgrade, so a refusal is an ordinary `401`, `403` or `404`.
//!
//! The protocol is the long poll's, one notification at a time: the server takes the next
//! notification from the channel's mailbox and sends it as one text frame (a
//! `notificationList` with one entry, JSON unless the handshake's `Accept` asks for XML); the
//! client answers with the entry's `webhookId` as a text frame, and only that acknowledges it
//! (the next take forgets it from the outbox). A socket that closes with a frame
//! unacknowledged puts it back ([`Mailbox::release`]), so the next socket sends it again with
//! the same id. A deleted or expired channel closes the socket (1001); a newer socket or poll
//! on the channel ends an older one (1008, as OMA's `SVC1012`).

use crate::chat::Chat;
use crate::handlers::ChatServer;
use crate::notify::channel::{Ack, Mailbox, Polled};
use crate::notify::webhook_id;
use dropshot::{
    ClientErrorStatusCode, HttpError, Path, RequestContext, WebsocketConnection,
    WebsocketEndpointResult, WebsocketUpgrade, endpoint,
};
use futures_util::{SinkExt, StreamExt};
use netapi_chat_api::{ChatService, Notification, NotificationList};
use netapi_chat_runtime::{ApiError, Format};
use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};

/// The socket's path template (registered unpublished; the gate allows `GET` on it).
pub const PATH: &str = "/notificationchannel/v1/{userId}/channels/{channelId}/websocket";

/// The socket's path parameters.
#[derive(Deserialize, JsonSchema)]
pub struct SocketPath {
    #[serde(rename = "userId")]
    user_id: String,
    #[serde(rename = "channelId")]
    channel_id: String,
}

/// An OMA refusal as a plain HTTP error (the handshake has no negotiated body format).
fn refused(e: ApiError) -> HttpError {
    let text = e.rendered();
    match ClientErrorStatusCode::from_u16(e.status.as_u16()) {
        Ok(status) => HttpError::for_client_error(Some(e.message_id.to_owned()), status, text),
        Err(_) => HttpError::for_unavail(Some(e.message_id.to_owned()), text),
    }
}

/// The format of the frames: the handshake's `Accept` negotiated like every request's (q-values
/// honoured, JSON when absent), or the `406` it would get.
pub fn frame_format(accept: Option<&str>) -> Result<Format, ApiError> {
    netapi_chat_runtime::media::response_format(accept)
        .map_err(|e| ApiError::not_acceptable(e.to_string()))
}

/// Largest frame or message a client may send on a channel's socket (an acknowledgement is one
/// `webhookId`, a few dozen bytes); a larger one ends the socket.
const MAX_CLIENT_MESSAGE: usize = 1024;

/// The socket of a `WebSockets` channel.
#[endpoint { method = GET, path = "/notificationchannel/v1/{userId}/channels/{channelId}/websocket", unpublished = true }]
pub async fn channel_socket(
    rqctx: RequestContext<ChatServer>,
    path: Path<SocketPath>,
    upgrade: WebsocketUpgrade,
) -> WebsocketEndpointResult {
    let server = rqctx.context();
    let p = path.into_inner();
    let headers = rqctx.request.headers();
    let authorization = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let user = server
        .authorize(authorization, &p.user_id, rqctx.request.remote_addr())
        .map_err(refused)?;
    let format = frame_format(
        headers
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok()),
    )
    .map_err(refused)?;
    let (mailbox, wait) = server
        .chat
        .channel_socket(&user, &p.channel_id)
        .map_err(refused)?;
    let chat = Arc::clone(&server.chat);
    let id = p.channel_id;
    upgrade.handle(move |conn| async move {
        serve(conn, chat, id, mailbox, wait, format).await;
        Ok(())
    })
}

/// How long a socket waits for an acknowledgement before it looks whether its channel is
/// still there.
const ACK_CHECK: Duration = Duration::from_secs(1);

/// One socket: a frame per notification, each waiting for its acknowledgement.
async fn serve(
    conn: WebsocketConnection,
    chat: Arc<Chat>,
    id: String,
    mailbox: Arc<Mailbox>,
    wait: Duration,
    format: Format,
) {
    // A client only ever sends `webhookId`s: frames and messages are bounded far below
    // tungstenite's defaults (16 MiB / 64 MiB), so one socket cannot make the server hold more.
    let limits = WebSocketConfig::default()
        .max_message_size(Some(MAX_CLIENT_MESSAGE))
        .max_frame_size(Some(MAX_CLIENT_MESSAGE));
    let ws = WebSocketStream::from_raw_socket(conn.into_inner(), Role::Server, Some(limits)).await;
    let (mut tx, mut rx) = ws.split();
    // What an earlier socket was sent and did not acknowledge comes first, again.
    mailbox.release();
    let close = |code: CloseCode, why: &'static str| {
        Message::Close(Some(CloseFrame {
            code,
            reason: why.into(),
        }))
    };
    loop {
        if crate::notify::channel::ending() {
            let _ = tx
                .send(close(CloseCode::Away, "the server is stopping"))
                .await;
            return;
        }
        chat.touch_channel(&id);
        let polled = tokio::select! {
            p = mailbox.poll(Ack::Previous, 1, wait) => p,
            m = rx.next() => match m {
                // A stray frame (nothing is waiting for an acknowledgement): ignored.
                Some(Ok(Message::Text(_) | Message::Binary(_) | Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                _ => return,
            },
        };
        let (nid, n) = match polled {
            Polled::Notifications(mut list) => match list.pop() {
                Some(one) => one,
                None => continue,
            },
            Polled::Closed => {
                let _ = tx
                    .send(close(CloseCode::Away, "the channel was deleted"))
                    .await;
                return;
            }
            Polled::Superseded => {
                let _ = tx
                    .send(close(
                        CloseCode::Policy,
                        "a newer socket or poll took over the channel",
                    ))
                    .await;
                return;
            }
        };
        let frame = frame(nid, n, format);
        if tx.send(Message::Text(frame.into())).await.is_err() {
            mailbox.release();
            return;
        }
        let want = webhook_id(nid);
        let mine = mailbox.generation();
        loop {
            let m = tokio::select! {
                m = rx.next() => m,
                () = tokio::time::sleep(ACK_CHECK) => {
                    if mailbox.is_closed() {
                        let _ = tx.send(close(CloseCode::Away, "the channel was deleted")).await;
                        return;
                    }
                    if mailbox.generation() != mine {
                        // Taken over: the newer socket or poll has what this one was sent.
                        let _ = tx.send(close(CloseCode::Policy, "a newer socket or poll took over the channel")).await;
                        return;
                    }
                    chat.touch_channel(&id);
                    continue;
                }
            };
            match m {
                Some(Ok(Message::Text(t))) if t.trim() == want => break,
                Some(Ok(
                    Message::Text(_)
                    | Message::Binary(_)
                    | Message::Ping(_)
                    | Message::Pong(_)
                    | Message::Frame(_),
                )) => continue,
                _ => {
                    // Closed without the acknowledgement: sent again next time.
                    mailbox.release();
                    return;
                }
            }
        }
    }
}

/// A frame: the one notification as a `notificationList` with one entry.
fn frame(id: u64, n: Notification, format: Format) -> String {
    let list = NotificationList {
        notification: vec![crate::chat::channels::entry(id, n)],
    };
    String::from_utf8_lossy(&netapi_chat_runtime::wire::encode(format, &list)).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The handshake's `Accept` is negotiated like a request's: q-values count, and one that
    /// names nothing servable is a 406, not JSON frames.
    #[test]
    fn frames_follow_the_negotiated_format() {
        assert_eq!(frame_format(None).unwrap(), Format::Json);
        assert_eq!(frame_format(Some("application/xml")).unwrap(), Format::Xml);
        let json = frame_format(Some("application/json, application/xml;q=0")).unwrap();
        assert_eq!(json, Format::Json);
        let refused = frame_format(Some("text/html")).unwrap_err();
        assert_eq!(refused.status.as_u16(), 406);
    }
}
