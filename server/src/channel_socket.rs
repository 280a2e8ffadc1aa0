//! The socket of a `WebSockets` notification channel (issue 15): `GET` its `channelURL`
//! (`ws://…/notificationchannel/v1/{userId}/channels/{channelId}/websocket`) with the
//! WebSocket handshake and the usual `Authorization` header, or, from a browser (which cannot
//! set headers on a WebSocket), the token in the subprotocol list (see [`credentials`]).
//!
//! Not an operation of the published OpenAPI document: OpenAPI 3.0 cannot describe a
//! WebSocket, and the generated client could not use one; the spec describes the protocol on
//! `createNotificationChannel`. The handshake is checked like any request (credentials, the
//! user the token may act for, the channel being the user's own and a `WebSockets` one)
//! before the upgrade, so a refusal is an ordinary `401`, `403` or `404`.
//!
//! The protocol is the long poll's, one notification at a time: the server takes the next
//! notification from the channel's mailbox and sends it as one text frame, signed like a
//! callback ([`frame`]: the Standard Webhooks header lines, a blank line, the body a callback
//! would carry, JSON unless the handshake's `Accept` asks for XML); the client answers with the
//! `webhook-id` as a text frame, and only that acknowledges it (it leaves the outbox at once,
//! [`Mailbox::acknowledge_id`]). A socket takes its channel over in one step
//! ([`Mailbox::take_over`]: what an earlier socket was sent and not acknowledged comes first
//! again, and that socket ends); a socket that closes with a frame unacknowledged puts it back
//! ([`Mailbox::release`], unless a newer socket took over), so the next socket sends it again
//! with the same id. A deleted or expired channel closes the socket (1001); a newer socket or poll
//! on the channel ends an older one (1008, as OMA's `SVC1012`).

use crate::chat::Chat;
use crate::handlers::ChatServer;
use crate::notify::channel::{Mailbox, Polled, Taken};
use crate::notify::webhook_id;
use crate::signing::{HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP};
use base64::Engine;
use dropshot::{
    ClientErrorStatusCode, HttpError, HttpResponse, Path, RequestContext, WebsocketConnection,
    WebsocketUpgrade, endpoint,
};
use futures_util::{SinkExt, StreamExt};
use netapi_chat_api::ChatService;
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
/// honoured, JSON when absent: a handshake has no body), or the `406` it would get.
pub fn frame_format(accept: Option<&str>) -> Result<Format, ApiError> {
    netapi_chat_runtime::media::response_format(accept, None)
        .map_err(|e| ApiError::not_acceptable(e.to_string()))
}

/// The subprotocol the server selects: a client that offers a token in the subprotocol list
/// offers this name too (a browser fails a handshake whose answer selects no subprotocol, and
/// the token's own entry must not be echoed back).
pub const PROTOCOL: &str = "netapi-chat.notificationchannel.v1";
/// The subprotocol entry that carries a bearer token: this prefix, then the token in base64url
/// without padding (the Kubernetes `base64url.bearer.authorization.k8s.io.<token>` scheme).
pub const BEARER_PROTOCOL_PREFIX: &str = "base64url.bearer.authorization.netapi-chat.";

/// Who a handshake says it is: the `Authorization` value to check, and the subprotocol the
/// answer selects.
#[derive(Debug, PartialEq, Eq)]
pub struct Handshake {
    /// `Bearer <token>` (from the header, or built from the subprotocol entry).
    pub authorization: Option<String>,
    /// The subprotocol to select (only ever [`PROTOCOL`]).
    pub protocol: Option<&'static str>,
}

/// The credentials of a handshake: the `Authorization` header when there is one (the token in
/// the subprotocol list is then ignored), else the bearer entry of `Sec-WebSocket-Protocol`
/// (for browsers). [`PROTOCOL`] is selected whenever the client offered it. A bearer entry
/// that does not decode, or that comes without [`PROTOCOL`] offered, is `400` (the text never
/// quotes the entry: it is a credential).
pub fn credentials(
    authorization: Option<&str>,
    protocols: Option<&str>,
) -> Result<Handshake, ApiError> {
    let offered: Vec<&str> = protocols
        .into_iter()
        .flat_map(|p| p.split(','))
        .map(str::trim)
        .collect();
    let protocol = offered.contains(&PROTOCOL).then_some(PROTOCOL);
    let bearer = offered
        .iter()
        .find_map(|p| p.strip_prefix(BEARER_PROTOCOL_PREFIX));
    if let Some(header) = authorization {
        return Ok(Handshake {
            authorization: Some(header.to_owned()),
            protocol,
        });
    }
    let Some(encoded) = bearer else {
        return Ok(Handshake {
            authorization: None,
            protocol,
        });
    };
    if protocol.is_none() {
        return Err(ApiError::invalid_input(format!(
            "Sec-WebSocket-Protocol: a bearer token entry needs {PROTOCOL:?} offered beside it"
        )));
    }
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded.trim_end_matches('='))
        .ok()
        .and_then(|t| String::from_utf8(t).ok())
        .filter(|t| !t.is_empty() && !t.chars().any(char::is_control))
        .ok_or_else(|| {
            ApiError::invalid_input(format!(
                "Sec-WebSocket-Protocol: the entry after {BEARER_PROTOCOL_PREFIX:?} is not a base64url token"
            ))
        })?;
    Ok(Handshake {
        authorization: Some(format!("Bearer {token}")),
        protocol,
    })
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
) -> Result<http::Response<dropshot::Body>, HttpError> {
    let server = rqctx.context();
    let p = path.into_inner();
    let headers = rqctx.request.headers();
    let text = |name: http::header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let hs = credentials(
        text(http::header::AUTHORIZATION),
        text(http::header::SEC_WEBSOCKET_PROTOCOL),
    )
    .map_err(refused)?;
    let user = server
        .authorize(
            hs.authorization.as_deref(),
            &p.user_id,
            rqctx.request.remote_addr(),
        )
        .map_err(refused)?;
    let format = frame_format(
        headers
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok()),
    )
    .map_err(refused)?;
    let (mailbox, wait, _max) = server
        .chat
        .channel_socket(&user, &p.channel_id)
        .map_err(refused)?;
    let chat = Arc::clone(&server.chat);
    let id = p.channel_id;
    let switching = upgrade.handle(move |conn| async move {
        serve(conn, chat, id, mailbox, wait, format).await;
        Ok(())
    })?;
    let mut response = switching.to_result()?;
    if let Some(p) = hs.protocol {
        response.headers_mut().insert(
            http::header::SEC_WEBSOCKET_PROTOCOL,
            http::HeaderValue::from_static(p),
        );
    }
    Ok(response)
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
    // The channel is this socket's from now on, in one step: what an earlier socket was sent
    // and did not acknowledge comes first, again, and that socket ends.
    let me = mailbox.take_over();
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
            p = mailbox.next(me, 1, wait) => p,
            m = rx.next() => match m {
                // A stray frame (nothing is waiting for an acknowledgement): ignored.
                Some(Ok(Message::Text(_) | Message::Binary(_) | Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                _ => return,
            },
        };
        let taken = match polled {
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
        let want = webhook_id(taken.id);
        let frame = frame(&taken, format, crate::store::now_ms() / 1000);
        if tx.send(Message::Text(frame.into())).await.is_err() {
            mailbox.release(me);
            return;
        }
        loop {
            let m = tokio::select! {
                m = rx.next() => m,
                () = tokio::time::sleep(ACK_CHECK) => {
                    if mailbox.is_closed() {
                        let _ = tx.send(close(CloseCode::Away, "the channel was deleted")).await;
                        return;
                    }
                    if mailbox.generation() != me {
                        // Taken over: the newer socket or poll has what this one was sent.
                        let _ = tx.send(close(CloseCode::Policy, "a newer socket or poll took over the channel")).await;
                        return;
                    }
                    chat.touch_channel(&id);
                    continue;
                }
            };
            match m {
                Some(Ok(Message::Text(t))) if t.trim() == want => {
                    mailbox.acknowledge_id(taken.id);
                    break;
                }
                Some(Ok(
                    Message::Text(_)
                    | Message::Binary(_)
                    | Message::Ping(_)
                    | Message::Pong(_)
                    | Message::Frame(_),
                )) => continue,
                _ => {
                    // Closed without the acknowledgement: sent again next time.
                    mailbox.release(me);
                    return;
                }
            }
        }
    }
}

/// A frame: the notification signed like a callback, as the text of its request: the three
/// Standard Webhooks header lines (`webhook-id`, `webhook-timestamp` signed at `timestamp`
/// (Unix seconds), `webhook-signature`: one `v1,` signature per key, none without a key), each
/// `name: value` and LF-ended, a blank line, then the body a callback would carry in `format`.
/// A client verifies it with any Standard Webhooks library and its subscription's secret.
pub fn frame(t: &Taken, format: Format, timestamp: i64) -> String {
    let id = webhook_id(t.id);
    let body = t.notification.encode(format);
    let signatures: Vec<String> = t
        .keys
        .iter()
        .map(|k| k.sign(&id, timestamp, &body))
        .collect();
    format!(
        "{HEADER_ID}: {id}\n{HEADER_TIMESTAMP}: {timestamp}\n{HEADER_SIGNATURE}: {}\n\n{}",
        signatures.join(" "),
        String::from_utf8_lossy(&body)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The socket's route is the spec's channel path (the one `Urls::channel` builds) plus
    /// `SOCKET_SUFFIX`, the same suffix `socket_url` adds: the endpoint's literal cannot drift.
    #[test]
    fn the_socket_path_is_the_channel_path_and_the_suffix() {
        let spec: serde_json::Value =
            serde_json::from_str(netapi_chat_api::OPENAPI_JSON).expect("the published OpenAPI");
        let channel = spec["paths"]
            .as_object()
            .expect("paths")
            .iter()
            .find(|(_, item)| item["get"]["operationId"] == "getNotificationChannel")
            .map(|(path, _)| path.clone())
            .expect("getNotificationChannel");
        assert_eq!(
            PATH,
            format!("{channel}{}", crate::chat::channels::SOCKET_SUFFIX)
        );
        let endpoint: dropshot::ApiEndpoint<ChatServer> = channel_socket.into();
        assert_eq!(endpoint.path, PATH);
    }

    /// The handshake's `Accept` is negotiated like a request's: q-values count, and one that
    /// names nothing servable is a 406, not JSON frames.
    const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

    /// The header wins; a browser's token comes from the subprotocol list, decoded; the
    /// selected subprotocol is only ever the plain name, and only when offered.
    #[test]
    fn a_handshake_names_its_token_in_the_header_or_the_subprotocols() {
        let entry = format!("{BEARER_PROTOCOL_PREFIX}{}", B64.encode("tok.en/+x"));
        let both = format!("{PROTOCOL}, {entry}");
        let browser = credentials(None, Some(&both)).unwrap();
        assert_eq!(browser.authorization.as_deref(), Some("Bearer tok.en/+x"));
        assert_eq!(browser.protocol, Some(PROTOCOL));
        let header = credentials(Some("Bearer h"), Some(&both)).unwrap();
        assert_eq!(header.authorization.as_deref(), Some("Bearer h"));
        assert_eq!(header.protocol, Some(PROTOCOL));
        let plain = credentials(Some("Bearer h"), None).unwrap();
        assert_eq!(plain.protocol, None);
        let none = credentials(None, Some("chat, other")).unwrap();
        assert_eq!((none.authorization, none.protocol), (None, None));
        // A token entry without the plain name offered, or one that does not decode: 400,
        // and the text does not repeat the entry.
        for bad in [
            entry.clone(),
            format!("{PROTOCOL}, {BEARER_PROTOCOL_PREFIX}not*base64"),
            format!("{PROTOCOL}, {BEARER_PROTOCOL_PREFIX}"),
            format!("{PROTOCOL}, {BEARER_PROTOCOL_PREFIX}{}", B64.encode("a\nb")),
        ] {
            let e = credentials(None, Some(&bad)).unwrap_err();
            assert_eq!(e.status.as_u16(), 400, "{bad}");
            let tail = bad.rsplit('.').next().unwrap();
            assert!(tail.is_empty() || !e.rendered().contains(tail), "{bad}");
        }
    }

    /// A frame is the callback's request as text: its three Standard Webhooks headers, a blank
    /// line, the callback's body; the signature verifies with the subscription's secret, one
    /// per key during a rotation, none without a key.
    #[test]
    fn a_frame_is_signed_like_a_callback() {
        use crate::signing::{Signer, WebhookHeaders};
        use netapi_chat_api::{Notification, SubscriptionCancellationNotification};
        let (old, old_secret) = Signer::generate();
        let (new, new_secret) = Signer::generate();
        let n = Notification::SubscriptionCancellationNotification(
            SubscriptionCancellationNotification {
                callback_data: Some("app".to_owned()),
                reason: None,
                link: Vec::new(),
            },
        );
        for format in [Format::Json, Format::Xml] {
            let t = Taken {
                id: 7,
                notification: n.clone(),
                keys: vec![Arc::new(old.clone()), Arc::new(new.clone())],
            };
            let text = frame(&t, format, 1_700_000_000);
            let (head, body) = text.split_once("\n\n").expect("a blank line");
            assert_eq!(body.as_bytes(), &n.encode(format)[..]);
            let lines: Vec<(&str, &str)> = head
                .lines()
                .map(|l| l.split_once(": ").expect("name: value"))
                .collect();
            assert_eq!(lines[0], ("webhook-id", "msg_7"));
            assert_eq!(lines[1], ("webhook-timestamp", "1700000000"));
            let headers = WebhookHeaders {
                id: lines[0].1,
                timestamp: lines[1].1,
                signature: lines[2].1,
            };
            for secret in [&old_secret, &new_secret] {
                let verifier = Signer::from_secret(secret).unwrap();
                verifier
                    .verify(&headers, body.as_bytes(), 1_700_000_010, 300)
                    .expect("verifies");
            }
            let unsigned = frame(
                &Taken {
                    keys: Vec::new(),
                    ..t
                },
                format,
                1,
            );
            assert!(unsigned.contains("webhook-signature: \n\n"), "{unsigned}");
        }
    }

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
