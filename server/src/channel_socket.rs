//! The socket of a `WebSockets` notification channel (issue 15): `GET` its `channelURL`
//! (`ws://…/notificationchannel/v1/{userId}/channels/{channelId}/websocket`) with the
//! WebSocket handshake and the usual `Authorization` header, or, from a browser (which cannot
//! set headers on a WebSocket), the token in the subprotocol list (see [`credentials`]).
//!
//! Not an operation of the published OpenAPI document: OpenAPI 3.0 cannot describe a
//! WebSocket, and the generated client could not use one; the spec describes the protocol on
//! `createNotificationChannel`. The handshake is checked like any request (credentials, the
//! user the token may act for, the channel being the user's own and a `WebSockets` one)
//! before the upgrade, so a refusal is the `401`, `403` or `404` any request gets (an OMA
//! `requestError` in the format the handshake's `Accept` asks for, [`refused`]).
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
//! with the same id. A deleted or expired channel closes the socket (1001); a newer socket on
//! the channel ends an older one (1008, as OMA's `SVC1012` ends an older poll; a WebSockets
//! channel is never polled: `403`).
//!
//! That is the binding of our own subprotocol ([`PROTOCOL`], also spoken when none is offered).
//! A client written against OMA Notification Channel 1.0's WebSockets binding offers
//! [`OMA_PROTOCOL`] instead and gets that binding ([`Binding::Oma`], [`serve_oma`]): each
//! frame is a `notificationList` exactly as a long poll answers it, acknowledged by the Pong of
//! the Ping sent right after it once the socket stayed open [`SETTLE`] after that Pong, and its
//! `connCheck` frames are answered with `connAck`.

use crate::chat::Chat;
use crate::chat::channels::notification_list;
use crate::handlers::ChatServer;
use crate::notify::channel::{Mailbox, Polled, Taken};
use crate::notify::webhook_id;
use crate::signing::{HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP};
use base64::Engine;
use dropshot::{
    HttpError, HttpResponse, Path, RequestContext, WebsocketConnection, WebsocketUpgrade, endpoint,
};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use netapi_chat_api::{ChatService, ConnAck, ConnCheck, NotificationChannelLifetime};
use netapi_chat_runtime::xml::XmlLimits;
use netapi_chat_runtime::{ApiError, Format, wire};
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

/// A refused handshake: the OMA `requestError` every refused request gets, in the format the
/// handshake's `Accept` asks for (JSON when it asks for neither), with the error's headers
/// (`WWW-Authenticate` on a `401`).
fn refused(format: Format, e: &ApiError) -> Result<http::Response<dropshot::Body>, HttpError> {
    netapi_chat_runtime::negotiate::error_response::<netapi_chat_api::RequestError>(format, e)
}

/// The format of the frames: the handshake's `Accept` negotiated like every request's (q-values
/// honoured, JSON when absent: a handshake has no body), or the `406` it would get.
pub fn frame_format(accept: Option<&str>) -> Result<Format, ApiError> {
    netapi_chat_runtime::media::response_format(accept, None)
        .map_err(|e| ApiError::not_acceptable(e.to_string()))
}

/// Our own subprotocol, selected whenever it is offered: a client that offers a token in the
/// subprotocol list offers this name (or [`OMA_PROTOCOL`]) too (a browser fails a handshake
/// whose answer selects no subprotocol, and the token's own entry must not be echoed back).
pub const PROTOCOL: &str = "netapi-chat.notificationchannel.v1";
/// OMA Notification Channel 1.0's WebSockets subprotocol: selected when offered without
/// [`PROTOCOL`], so that a client written against OMA works unchanged ([`Binding::Oma`]).
pub const OMA_PROTOCOL: &str = "notificationchannel-netapi-rest.openmobilealliance.org";
/// The subprotocol entry that carries a bearer token: this prefix, then the token in base64url
/// without padding (the Kubernetes `base64url.bearer.authorization.k8s.io.<token>` scheme).
pub const BEARER_PROTOCOL_PREFIX: &str = "base64url.bearer.authorization.netapi-chat.";

/// What a socket speaks, chosen by the subprotocol the handshake selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binding {
    /// Ours ([`PROTOCOL`], or no subprotocol at all): one signed notification a frame, each
    /// acknowledged by its `webhook-id`.
    Signed,
    /// OMA's ([`OMA_PROTOCOL`]): `notificationList` frames, acknowledged by the WebSocket's
    /// own Ping/Pong; `connCheck` answered with `connAck`.
    Oma,
}

/// Who a handshake says it is: the `Authorization` value to check, the subprotocol the answer
/// selects, and the binding the socket then speaks.
#[derive(Debug, PartialEq, Eq)]
pub struct Handshake {
    /// `Bearer <token>` (from the header, or built from the subprotocol entry).
    pub authorization: Option<String>,
    /// The subprotocol to select ([`PROTOCOL`] or [`OMA_PROTOCOL`], only ever one offered).
    pub protocol: Option<&'static str>,
    /// [`Binding::Oma`] exactly when [`OMA_PROTOCOL`] is selected.
    pub binding: Binding,
}

/// The credentials of a handshake: the `Authorization` header when there is one (the token in
/// the subprotocol list is then ignored), else the bearer entry of `Sec-WebSocket-Protocol`
/// (for browsers). [`PROTOCOL`] is selected whenever the client offered it (it has
/// acknowledgements, so it wins when both are offered); else [`OMA_PROTOCOL`] when offered,
/// and the socket speaks OMA's binding. A bearer entry that does not decode, or that comes
/// with neither name offered, is `400` (the text never quotes the entry: it is a credential).
pub fn credentials(
    authorization: Option<&str>,
    protocols: Option<&str>,
) -> Result<Handshake, ApiError> {
    let offered: Vec<&str> = protocols
        .into_iter()
        .flat_map(|p| p.split(','))
        .map(str::trim)
        .collect();
    let protocol = [PROTOCOL, OMA_PROTOCOL]
        .into_iter()
        .find(|p| offered.contains(p));
    let binding = if protocol == Some(OMA_PROTOCOL) {
        Binding::Oma
    } else {
        Binding::Signed
    };
    let bearer = offered
        .iter()
        .find_map(|p| p.strip_prefix(BEARER_PROTOCOL_PREFIX));
    if let Some(header) = authorization {
        return Ok(Handshake {
            authorization: Some(header.to_owned()),
            protocol,
            binding,
        });
    }
    let Some(encoded) = bearer else {
        return Ok(Handshake {
            authorization: None,
            protocol,
            binding,
        });
    };
    if protocol.is_none() {
        return Err(ApiError::invalid_input(format!(
            "Sec-WebSocket-Protocol: a bearer token entry needs {PROTOCOL:?} or {OMA_PROTOCOL:?} offered beside it"
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
        binding,
    })
}

/// Largest frame or message a client may send on a channel's socket (an acknowledgement is one
/// `webhookId`, a few dozen bytes; an OMA `connCheck` in XML about 200); a larger one ends the
/// socket.
const MAX_CLIENT_MESSAGE: usize = 1024;

/// How much a socket reads at a time: a few of its client's largest frames.
const READ_BUFFER_BYTES: usize = 4 * MAX_CLIENT_MESSAGE;

/// Open sockets against their share of `NETAPI_CHAT_MAX_CONNECTIONS`: a socket counts against
/// the cap until it closes and is never shed (it is not idle in HTTP's sense), so without a
/// share of their own sockets could take every place (one token may act for any number of
/// users, ten sockets each) and every new HTTP client, health checks included, would wait
/// for one to close. Past the share a handshake is answered `503` with `Retry-After` (long
/// polling still works), leaving the other half of the cap to HTTP.
#[derive(Debug)]
pub struct Sockets {
    open: std::sync::atomic::AtomicUsize,
    max: usize,
}

/// A socket's place among [`Sockets`], given back when the socket's task ends.
struct SocketSlot(Arc<Sockets>);

impl Drop for SocketSlot {
    fn drop(&mut self) {
        self.0
            .open
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Sockets {
    /// Half of `max_connections` (at least one).
    pub fn share_of(max_connections: usize) -> Sockets {
        Sockets {
            open: std::sync::atomic::AtomicUsize::new(0),
            max: (max_connections / 2).max(1),
        }
    }

    /// A place for one more socket, if the share has one.
    fn take(self: &Arc<Self>) -> Option<SocketSlot> {
        use std::sync::atomic::Ordering::SeqCst;
        self.open
            .fetch_update(SeqCst, SeqCst, |n| (n < self.max).then_some(n + 1))
            .ok()
            .map(|_| SocketSlot(Arc::clone(self)))
    }
}

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
    // List headers sent as several fields are one list (RFC 9110 §5.3; RFC 6455 §11.3.4 for
    // the subprotocols): a client that splits its offers is answered as one that does not.
    // Several `Authorization` fields join into one malformed credential, refused as every
    // operation refuses it (`negotiate::Credentials`, whose joining this is: bytes that are
    // no text are kept as replacement characters, so such a field is a bad credential too,
    // not an absent one), never read as the first of them.
    let authorization: Vec<String> = headers
        .get_all(http::header::AUTHORIZATION)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    let authorization = (!authorization.is_empty()).then(|| authorization.join(","));
    let list = |name: http::header::HeaderName| {
        let fields: Option<Vec<&str>> = headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().ok())
            .collect();
        fields.filter(|f| !f.is_empty()).map(|f| f.join(", "))
    };
    let format = frame_format(list(http::header::ACCEPT).as_deref());
    let answer = *format.as_ref().unwrap_or(&Format::Json);
    let hs = match credentials(
        authorization.as_deref(),
        list(http::header::SEC_WEBSOCKET_PROTOCOL).as_deref(),
    ) {
        Ok(hs) => hs,
        Err(e) => return refused(answer, &e),
    };
    let user = match server.authorize(
        hs.authorization.as_deref(),
        &p.user_id,
        rqctx.request.remote_addr(),
    ) {
        Ok(user) => user,
        Err(e) => return refused(answer, &e),
    };
    let format = match format {
        Ok(f) => f,
        Err(e) => return refused(answer, &e),
    };
    // The token's share first: a refused handshake must not move the channel's lifetime,
    // which finding the channel for a socket does.
    let waiting = match server.wait_slot(hs.authorization.as_deref(), &p.channel_id) {
        Ok(w) => w,
        Err(e) => return refused(answer, &e),
    };
    let (mailbox, wait, max) = match server.chat.channel_socket(&user, &p.channel_id) {
        Ok(found) => found,
        Err(e) => return refused(answer, &e),
    };
    let Some(slot) = server.sockets.take() else {
        let e = crate::chat::no_resources(
            "too many notification sockets are open on this server; retry later, or poll a channel",
            5,
        );
        return refused(answer, &e);
    };
    let chat = Arc::clone(&server.chat);
    let grant = Grant {
        verifier: Arc::clone(&server.verifier),
        rate: Arc::clone(&server.rate),
        authorization: hs.authorization.clone(),
        path_user: p.user_id.clone(),
    };
    let id = p.channel_id;
    let binding = hs.binding;
    let switching = upgrade.handle(move |conn| async move {
        // Held for as long as the socket is served.
        let _slot = (slot, waiting);
        let channel = SocketChannel {
            chat,
            user,
            id,
            mailbox,
            wait,
            format,
            grant,
        };
        let (mut tx, mut rx) = open(conn).await;
        match binding {
            Binding::Signed => serve(&mut tx, &mut rx, channel).await,
            Binding::Oma => serve_oma(&mut tx, &mut rx, channel, max).await,
        }
        answer_close(&mut tx).await;
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

/// The least time a client has to answer a keep-alive Ping ([`Liveness`]).
const MIN_PONG_WAIT: Duration = Duration::from_secs(5);

/// The payload of a keep-alive Ping (a frame's Ping names the frame: [`ping_payload`]).
const KEEPALIVE: &[u8] = b"keepalive";

/// Whether a socket's client is still there. An open socket keeps its channel alive, so a
/// client that vanished without closing (a phone gone out of coverage, a NAT that dropped the
/// mapping: no FIN ever comes) would keep its channel, and the subscriptions on it, for as
/// long as the server runs. So a socket that heard nothing from its client for `quiet` (the
/// channel's poll wait: the same round a long poll has) sends a Ping, which every WebSocket
/// client answers by itself (RFC 6455 §5.5.2); when nothing at all comes back within
/// `max(quiet, MIN_PONG_WAIT)`, the socket is closed (1002) and the channel's lifetime runs
/// again as without a socket. Any frame from the client counts as hearing from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Liveness {
    quiet: Duration,
    last_heard: tokio::time::Instant,
    pinged_at: Option<tokio::time::Instant>,
}

/// What a socket must do now for its client's liveness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Due {
    /// Nothing yet.
    Nothing,
    /// Send a keep-alive Ping.
    Ping,
    /// The client did not answer the Ping: close the socket.
    Dead,
}

impl Liveness {
    /// A socket that just heard from its client (the handshake) at `now`.
    fn new(quiet: Duration, now: tokio::time::Instant) -> Liveness {
        Liveness {
            quiet: quiet.max(Duration::from_secs(1)),
            last_heard: now,
            pinged_at: None,
        }
    }

    /// The client sent a frame at `now`.
    fn heard(&mut self, now: tokio::time::Instant) {
        self.last_heard = now;
        self.pinged_at = None;
    }

    /// A keep-alive Ping went out at `now`.
    fn pinged(&mut self, now: tokio::time::Instant) {
        self.pinged_at = Some(now);
    }

    /// When [`Liveness::due`] next changes.
    fn next_check(&self) -> tokio::time::Instant {
        match self.pinged_at {
            Some(at) => at + self.quiet.max(MIN_PONG_WAIT),
            None => self.last_heard + self.quiet,
        }
    }

    /// What is due at `now`.
    fn due(&self, now: tokio::time::Instant) -> Due {
        match self.pinged_at {
            _ if now < self.next_check() => Due::Nothing,
            Some(_) => Due::Dead,
            None => Due::Ping,
        }
    }
}

/// Sends a keep-alive Ping or tells that the client is gone, as `live` says is due now; `Err`
/// when the socket must end (the client did not answer, or the Ping could not be sent; the
/// close frame, when one can be sent, is sent).
async fn keep_alive(tx: &mut Tx, live: &mut Liveness) -> Result<(), ()> {
    let now = tokio::time::Instant::now();
    match live.due(now) {
        Due::Nothing => Ok(()),
        Due::Ping => {
            live.pinged(now);
            tx.send(Message::Ping(KEEPALIVE.to_vec().into()))
                .await
                .map_err(|_| ())
        }
        Due::Dead => {
            let _ = tx
                .send(close((
                    CloseCode::Protocol,
                    "no Pong answered the keep-alive Ping",
                )))
                .await;
            Err(())
        }
    }
}

/// What a socket serves: the channel (its user, id, mailbox), the wait of one round, and the
/// frames' format.
struct SocketChannel {
    chat: Arc<Chat>,
    user: String,
    id: String,
    mailbox: Arc<Mailbox>,
    wait: Duration,
    format: Format,
    grant: Grant,
}

/// What a socket was opened with, looked at again while it is open. A request is authorized
/// once, but a socket streams a user's notifications for as long as it lives: so before each
/// frame and at each quiet round it checks that its handshake's credentials still grant the
/// channel's user (a token revoked from the token file, or a JWT past its `exp`, ends the
/// socket: 1008), and a client frame that changes something (a `connCheck`) or acknowledges
/// nothing (a stray text or binary frame on our binding) counts against the token's request
/// rate like a request (past it: 1008), since each one may write the store or costs a parse.
struct Grant {
    verifier: Arc<dyn crate::auth::TokenVerifier>,
    rate: Arc<crate::rate::RateLimiter>,
    authorization: Option<String>,
    path_user: String,
}

/// Why a socket's grant no longer holds.
const REVOKED: End = (
    CloseCode::Policy,
    "the credentials no longer grant this channel",
);
/// Why a client's frames end its socket.
const TOO_FAST: End = (
    CloseCode::Policy,
    "frames faster than the token's request rate",
);

impl Grant {
    /// Whether the credentials still grant `user` (the user the socket was opened for).
    fn holds(&self, user: &str) -> bool {
        crate::auth::still_grants(
            self.verifier.as_ref(),
            self.authorization.as_deref(),
            &self.path_user,
            user,
        )
        .is_ok()
    }

    /// A client frame that changes something or acknowledges nothing, counted against the
    /// token's request rate:
    /// `Err` with the close reason when the socket must end.
    fn frame(&self) -> Result<(), End> {
        let principal =
            crate::auth::authenticate(self.verifier.as_ref(), self.authorization.as_deref())
                .map_err(|_| REVOKED)?;
        self.rate.check(&principal.token_id).map_err(|_| TOO_FAST)
    }
}

/// The sending half of a channel's socket.
type Tx = SplitSink<WebSocketStream<dropshot::WebsocketConnectionRaw>, Message>;
/// The receiving half of a channel's socket.
type Rx = SplitStream<WebSocketStream<dropshot::WebsocketConnectionRaw>>;

/// The upgraded connection as a WebSocket, split. A client only ever sends `webhookId`s or
/// `connCheck`s: frames and messages are bounded far below tungstenite's defaults (16 MiB /
/// 64 MiB), so one socket cannot make the server hold more; and its read buffer is
/// [`READ_BUFFER_BYTES`], not tungstenite's 128 KiB, which was allocated and zero-filled at
/// the first read of every socket (640 MiB for the 5,000 sockets a default connection cap
/// allows).
async fn open(conn: WebsocketConnection) -> (Tx, Rx) {
    let limits = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(Some(MAX_CLIENT_MESSAGE))
        .max_frame_size(Some(MAX_CLIENT_MESSAGE));
    let ws = WebSocketStream::from_raw_socket(conn.into_inner(), Role::Server, Some(limits)).await;
    ws.split()
}

/// Whether reading failed because the client's frame or message was over
/// [`MAX_CLIENT_MESSAGE`]: the socket is then closed with 1009 (RFC 6455 §7.4.1), not dropped.
fn too_big(e: &tokio_tungstenite::tungstenite::Error) -> bool {
    matches!(e, tokio_tungstenite::tungstenite::Error::Capacity(_))
}

/// How long a socket closed because of what its client sent reads on for the client's own
/// close frame ([`close_draining`]).
const CLOSE_DRAIN: Duration = Duration::from_secs(2);

/// Ends a socket whose client may still be writing to it (the server refused one of its
/// frames): sends the close frame, then reads and drops what the client sends until its close
/// frame, the end of the connection, or [`CLOSE_DRAIN`], as RFC 6455 §7.1.1 has the closing
/// side do. Dropping the connection with the client's frames unread would reset it, and a
/// reset may discard the close frame (and the answers before it) before the client reads
/// them, so the client would never learn why.
async fn close_draining(tx: &mut Tx, rx: &mut Rx, end: End) {
    let _ = tx.send(close(end)).await;
    let _ = tokio::time::timeout(CLOSE_DRAIN, async {
        while let Some(Ok(m)) = rx.next().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// How long a socket that ends waits to write its last frames ([`answer_close`]).
const CLOSE_REPLY: Duration = Duration::from_secs(1);

/// The end of every socket: a client's close frame is answered with one (RFC 6455 §5.5.1;
/// tungstenite queues the reply when it reads the client's and writes it on the next flush,
/// which a socket dropped at once never had, so every close a client began read as abnormal,
/// 1006); a close the server sent is flushed; on a connection already gone this fails at once.
async fn answer_close(tx: &mut Tx) {
    let _ = tokio::time::timeout(CLOSE_REPLY, tx.close()).await;
}

/// A close frame with `code` and the reason `why` (short: a close reason is at most 123
/// bytes).
fn close((code, why): End) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: why.into(),
    }))
}

/// Why the server ends a socket: the close code and the reason sent with it.
type End = (CloseCode, &'static str);
/// The server is shutting down (SIGTERM).
const STOPPING: End = (CloseCode::Away, "the server is stopping");
/// The channel was deleted, or its lifetime ended.
const DELETED: End = (CloseCode::Away, "the channel was deleted");
/// A newer socket took the channel over (as OMA's `SVC1012` ends an older poll).
const TAKEN_OVER: End = (CloseCode::Policy, "a newer socket took over the channel");
/// A client frame or message over [`MAX_CLIENT_MESSAGE`].
const TOO_BIG: End = (CloseCode::Size, "a frame or message over 1 KiB");

/// How the mailbox ends a socket of generation `me`, when it does: the channel is gone, or a
/// newer socket took it over (it has what this one was handed).
fn mailbox_end(mailbox: &Mailbox, me: u64) -> Option<End> {
    if mailbox.is_closed() {
        Some(DELETED)
    } else if mailbox.generation() != me {
        Some(TAKEN_OVER)
    } else {
        None
    }
}

/// How often a socket's credentials are looked at between waits for its mailbox (they are
/// also looked at after each wait): a second, so a revoked token or an expired JWT ends a
/// socket within about a second whatever its client sends.
const GRANT_LOOK: std::time::Duration = std::time::Duration::from_secs(1);

/// A look due at most every `period`: the rule of [`GRANT_LOOK`].
#[derive(Debug)]
struct Every {
    period: std::time::Duration,
    next: tokio::time::Instant,
}

impl Every {
    /// Due first at `now`.
    fn new(period: std::time::Duration, now: tokio::time::Instant) -> Every {
        Every { period, next: now }
    }

    /// Whether the look is due at `now`; if so, the next one is a period later.
    fn due(&mut self, now: tokio::time::Instant) -> bool {
        if now < self.next {
            return false;
        }
        self.next = now + self.period;
        true
    }
}

/// One socket: a frame per notification, each waiting for its acknowledgement.
async fn serve(tx: &mut Tx, rx: &mut Rx, channel: SocketChannel) {
    let SocketChannel {
        chat,
        id,
        mailbox,
        wait,
        format,
        user,
        grant,
    } = channel;
    let mut live = Liveness::new(wait, tokio::time::Instant::now());
    let mut looked = Every::new(GRANT_LOOK, tokio::time::Instant::now());
    // The channel is this socket's from now on, in one step: what an earlier socket was sent
    // and did not acknowledge comes first, again, and that socket ends.
    let me = mailbox.take_over();
    loop {
        if crate::notify::channel::ending() {
            let _ = tx.send(close(STOPPING)).await;
            return;
        }
        // The credentials at every turn (a frame, a keep-alive round, a wait run out), not
        // only after a wait for the mailbox: every client frame starts that wait again, so a
        // socket whose token was revoked (or whose JWT expired) stayed open, and kept its
        // channel alive, for as long as its client sent anything (the channels review of
        // 2026-12-07: 40 s and more with Pings). At most every `GRANT_LOOK` here (a flood of
        // stray frames would verify a JWT each); the check after a wait stays.
        if looked.due(tokio::time::Instant::now()) && !grant.holds(&user) {
            mailbox.release(me);
            let _ = tx.send(close(REVOKED)).await;
            return;
        }
        chat.touch_channel(&id);
        // While the store does not serve (its database unreachable, or the lease lapsed), no
        // notification is sent, as no callback attempt is made (`notify::attempt`): an
        // acknowledgement could not be recorded, and a leader that loses the lead meanwhile
        // would have its successor send it again. The socket stays open and kept alive.
        let serving = chat.store().serving();
        let polled = tokio::select! {
            p = mailbox.next(me, 1, wait), if serving => p,
            () = tokio::time::sleep(crate::notify::PAUSED_LOOK), if !serving => continue,
            m = rx.next() => match m {
                // A stray text or binary frame (nothing is waiting for an acknowledgement):
                // ignored, but counted against the token's request rate as the OMA binding's
                // `connCheck`s are (a flood of them kept a core busy: the channels review).
                Some(Ok(Message::Text(_) | Message::Binary(_))) => {
                    live.heard(tokio::time::Instant::now());
                    if let Err(end) = grant.frame() {
                        let _ = tx.send(close(end)).await;
                        return;
                    }
                    continue;
                }
                // The client is there.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {
                    live.heard(tokio::time::Instant::now());
                    continue;
                }
                Some(Err(e)) if too_big(&e) => {
                    let _ = tx.send(close(TOO_BIG)).await;
                    return;
                }
                _ => return,
            },
            () = tokio::time::sleep_until(live.next_check()) => {
                if keep_alive(tx, &mut live).await.is_err() {
                    return;
                }
                continue;
            }
        };
        if !grant.holds(&user) {
            // Whatever was just taken goes back for a socket that may have it.
            mailbox.release(me);
            let _ = tx.send(close(REVOKED)).await;
            return;
        }
        let taken = match polled {
            Polled::Notifications(mut list) => match list.pop() {
                Some(one) => one,
                None => continue,
            },
            Polled::Closed => {
                let _ = tx.send(close(DELETED)).await;
                return;
            }
            Polled::Superseded => {
                let _ = tx.send(close(TAKEN_OVER)).await;
                return;
            }
            // Not asked of a socket's mailbox (its grant is checked above).
            Polled::Revoked => {
                mailbox.release(me);
                let _ = tx.send(close(REVOKED)).await;
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
                    if let Some(end) = mailbox_end(&mailbox, me) {
                        let _ = tx.send(close(end)).await;
                        return;
                    }
                    // The server is stopping: the frame goes back (sent again, same id, after
                    // the restart) and the socket closes, within a second. An open socket
                    // counts against the connection cap until it closes, so the stop's drain
                    // waits for it: one waiting here for an acknowledgement held the drain
                    // for the whole grace period.
                    if crate::notify::channel::ending() {
                        mailbox.release(me);
                        let _ = tx.send(close(STOPPING)).await;
                        return;
                    }
                    if keep_alive(tx, &mut live).await.is_err() {
                        // Gone without the acknowledgement: sent again next time.
                        mailbox.release(me);
                        return;
                    }
                    chat.touch_channel(&id);
                    continue;
                }
            };
            if let Some(Ok(_)) = &m {
                live.heard(tokio::time::Instant::now());
            }
            match m {
                Some(Ok(Message::Text(t))) if t.trim() == want => {
                    mailbox.acknowledge_id(taken.id);
                    break;
                }
                // Not the acknowledgement: counted as above.
                Some(Ok(Message::Text(_) | Message::Binary(_))) => {
                    if let Err(end) = grant.frame() {
                        mailbox.release(me);
                        let _ = tx.send(close(end)).await;
                        return;
                    }
                    continue;
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Err(e)) if too_big(&e) => {
                    mailbox.release(me);
                    let _ = tx.send(close(TOO_BIG)).await;
                    return;
                }
                _ => {
                    // Closed without the acknowledgement: sent again next time.
                    mailbox.release(me);
                    return;
                }
            }
        }
    }
}

/// How long an OMA frame's notifications stay handed after its Pong came back before they
/// leave the outbox, the socket still open. The Pong shows the client's WebSocket stack has
/// the frame, not that the application read it: libraries and browsers answer a Ping for
/// frames still queued unread, and drop those when the application closes. A socket that
/// closes (or breaks, or is taken over) within this of a frame's Pong puts the frame back,
/// and the next socket sends it again, same notifications (at least once).
const SETTLE: Duration = Duration::from_secs(5);

/// Frames of an OMA socket whose Pong came back, oldest first: when each is settled and its
/// notifications' outbox ids.
type Settling = std::collections::VecDeque<(tokio::time::Instant, Vec<u64>)>;

/// Acknowledges the frames settled by `now` ([`SETTLE`]).
fn settle(mailbox: &Mailbox, settling: &mut Settling, now: tokio::time::Instant) {
    while settling.front().is_some_and(|(at, _)| *at <= now) {
        if let Some((_, ids)) = settling.pop_front() {
            mailbox.acknowledge_ids(&ids);
        }
    }
}

/// Resolves at `at`, never without one.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Puts back what a socket was handed and did not acknowledge, however the socket ends
/// ([`Mailbox::release`]: nothing once a newer socket took over).
struct Releasing<'a>(&'a Mailbox, u64);

impl Drop for Releasing<'_> {
    fn drop(&mut self) {
        self.0.release(self.1);
    }
}

/// How long an OMA socket waits for the Pong of the Ping sent after a frame (a WebSocket
/// client answers a Ping by itself, RFC 6455 §5.5.2): past it the connection counts as dead,
/// the frame's notifications wait for the next socket, and this one is closed (1002).
const PONG_WAIT: Duration = Duration::from_secs(30);

/// What an OMA socket does with one thing its client sent.
#[derive(Debug, PartialEq)]
enum FromClient {
    /// A `connCheck`: answer this `connAck` frame.
    Answer(String),
    /// Nothing to do (a Ping, which tungstenite answers itself; a Pong that acknowledges
    /// nothing; a raw frame).
    Ignore,
    /// End the socket with this close frame (a frame it cannot take).
    Close(End),
    /// The client closed the socket, or the connection broke.
    Gone,
}

/// A client's text frame read as a `connCheck`: the XML document when it starts with `<`,
/// else JSON (either form, whatever the socket's format; the generated type and the same
/// decoder as a request body's, with the default XML limits: the frame is at most
/// [`MAX_CLIENT_MESSAGE`] bytes anyway). In JSON an empty `connCheck` may also be `null` or
/// `""`: OMA's instance-based mapping writes an empty element so (reference §5.3 A), as the
/// XML `<nc:connCheck/>` is.
pub fn read_conn_check(text: &str) -> Result<ConnCheck, ApiError> {
    let format = if text.trim_start().starts_with('<') {
        Format::Xml
    } else {
        Format::Json
    };
    if format == Format::Json
        && let Ok(serde_json::Value::Object(root)) = serde_json::from_str(text)
        && root.len() == 1
        && root
            .get("connCheck")
            .is_some_and(|v| v.is_null() || v.as_str() == Some(""))
    {
        return Ok(ConnCheck::default());
    }
    wire::decode::<ConnCheck>(format, text.as_bytes(), &XmlLimits::default())
}

/// Serves an OMA client's message: a `connCheck` starts the channel's lifetime again (with
/// its `newChannelLifetime`, granted and stored as `refreshChannelLifetime` does) and is
/// answered with the `connAck` of the lifetime granted, in the socket's format; any other
/// text frame is closed with 1007, a binary one with 1003 (decision: an OMA client sends
/// nothing else, so a stray frame is a client bug better reported than hidden).
async fn from_oma_client(
    channel: &SocketChannel,
    m: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
) -> FromClient {
    let text = match m {
        Some(Ok(Message::Text(t))) => t,
        Some(Ok(Message::Binary(_))) => {
            return FromClient::Close((CloseCode::Unsupported, "only text frames are read"));
        }
        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {
            return FromClient::Ignore;
        }
        Some(Err(e)) if too_big(&e) => {
            return FromClient::Close(TOO_BIG);
        }
        Some(Ok(Message::Close(_)) | Err(_)) | None => return FromClient::Gone,
    };
    let check = match read_conn_check(&text) {
        Ok(c) => c,
        Err(e) => {
            // The decoder's text may quote the frame: escaped (client-controlled text).
            let why = e.rendered();
            tracing::debug!(
                channel = %channel.id,
                error = %crate::logsafe::Escaped(&why),
                "OMA socket: not a connCheck, closed"
            );
            return FromClient::Close((CloseCode::Invalid, "not a connCheck"));
        }
    };
    if let Err(why) = channel.grant.frame() {
        return FromClient::Close(why);
    }
    let granted = match check.new_channel_lifetime {
        Some(asked) => channel
            .chat
            .refresh_channel_lifetime(
                &channel.user,
                &channel.id,
                NotificationChannelLifetime {
                    channel_lifetime: asked,
                },
            )
            .await
            .map(|l| l.channel_lifetime),
        None => {
            channel.chat.touch_channel(&channel.id);
            channel
                .chat
                .get_channel_lifetime(&channel.user, &channel.id)
                .map(|l| l.channel_lifetime)
        }
    };
    match granted {
        Ok(channel_lifetime) => {
            let ack = wire::encode(channel.format, &ConnAck { channel_lifetime });
            FromClient::Answer(String::from_utf8_lossy(&ack).into_owned())
        }
        Err(e) if e.status.as_u16() == 400 => {
            FromClient::Close((CloseCode::Invalid, "newChannelLifetime is below 0"))
        }
        Err(e) if e.status.as_u16() == 404 => FromClient::Close(DELETED),
        Err(_) => FromClient::Close(STOPPING),
    }
}

/// What an OMA socket waits on: its mailbox, or its client.
enum Event {
    Polled(Polled),
    Client(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
}

/// One OMA socket (OMA Notification Channel 1.0, WebSockets binding): each frame is a
/// `notificationList` of up to `max` notifications, built and encoded exactly as a long
/// poll's answer, never empty. OMA has no acknowledgement, so the WebSocket's own is used: a
/// Ping follows each frame, and the next frame is sent once its Pong came back (the client's
/// WebSocket stack has the frame); the frame's notifications leave the outbox [`SETTLE`]
/// after that Pong, the socket still open. Until then every way out puts them back
/// ([`Releasing`]; a newer socket's take-over does so too), so a socket torn down before its
/// frame arrived, or closed by an application that had not read it yet, loses nothing: the
/// next socket sends them again (at least once). Takeover and deletion close it as our own
/// binding does.
async fn serve_oma(tx: &mut Tx, rx: &mut Rx, channel: SocketChannel, max: usize) {
    let SocketChannel {
        chat,
        id,
        mailbox,
        wait,
        format,
        ..
    } = &channel;
    let me = mailbox.take_over();
    let _releasing = Releasing(mailbox, me);
    let mut settling = Settling::new();
    let mut live = Liveness::new(*wait, tokio::time::Instant::now());
    let mut looked = Every::new(GRANT_LOOK, tokio::time::Instant::now());
    loop {
        settle(mailbox, &mut settling, tokio::time::Instant::now());
        if crate::notify::channel::ending() {
            let _ = tx.send(close(STOPPING)).await;
            return;
        }
        // At every turn, as in `serve` (a client's `connCheck`s restarted the wait after
        // which alone the credentials were checked), at most every `GRANT_LOOK`.
        if looked.due(tokio::time::Instant::now()) && !channel.grant.holds(&channel.user) {
            let _ = tx.send(close(REVOKED)).await;
            return;
        }
        chat.touch_channel(id);
        let settled_at = settling.front().map(|(at, _)| *at);
        // Paused while the store does not serve, as in `serve`.
        let serving = chat.store().serving();
        let event = tokio::select! {
            p = mailbox.next(me, max, *wait), if serving => Event::Polled(p),
            () = tokio::time::sleep(crate::notify::PAUSED_LOOK), if !serving => continue,
            m = rx.next() => Event::Client(m),
            () = tokio::time::sleep_until(live.next_check()) => {
                if keep_alive(tx, &mut live).await.is_err() {
                    return;
                }
                continue;
            }
            () = sleep_until_some(settled_at) => continue,
        };
        if let Event::Client(Some(Ok(_))) = &event {
            live.heard(tokio::time::Instant::now());
        }
        if matches!(event, Event::Polled(_)) && !channel.grant.holds(&channel.user) {
            // Whatever was just taken goes back (`Releasing`) for a socket that may have it.
            let _ = tx.send(close(REVOKED)).await;
            return;
        }
        let taken = match event {
            Event::Client(m) => match from_oma_client(&channel, m).await {
                FromClient::Answer(ack) => {
                    if tx.send(Message::Text(ack.into())).await.is_err() {
                        return;
                    }
                    continue;
                }
                FromClient::Ignore => continue,
                FromClient::Close(end) => {
                    close_draining(tx, rx, end).await;
                    return;
                }
                FromClient::Gone => return,
            },
            // The wait ran out: nothing is sent (an empty list would tell the client nothing).
            Event::Polled(Polled::Notifications(list)) if list.is_empty() => continue,
            Event::Polled(Polled::Notifications(list)) => list,
            Event::Polled(Polled::Closed) => {
                let _ = tx.send(close(DELETED)).await;
                return;
            }
            Event::Polled(Polled::Superseded) => {
                let _ = tx.send(close(TAKEN_OVER)).await;
                return;
            }
            // Not asked of a socket's mailbox (its grant is checked above).
            Event::Polled(Polled::Revoked) => {
                let _ = tx.send(close(REVOKED)).await;
                return;
            }
        };
        let ids: Vec<u64> = taken.iter().map(|t| t.id).collect();
        let body = wire::encode(*format, &notification_list(taken));
        // The Ping names this socket and the frame's last notification, so a Pong of an
        // earlier frame (or one the client sent unasked) acknowledges nothing here.
        let token = ping_payload(me, &ids);
        let sent = async {
            tx.feed(Message::Text(
                String::from_utf8_lossy(&body).into_owned().into(),
            ))
            .await?;
            tx.send(Message::Ping(token.clone().into())).await
        };
        if sent.await.is_err() {
            return;
        }
        let deadline = tokio::time::Instant::now() + PONG_WAIT;
        loop {
            let m = tokio::select! {
                m = rx.next() => m,
                () = tokio::time::sleep(ACK_CHECK) => {
                    settle(mailbox, &mut settling, tokio::time::Instant::now());
                    let end = mailbox_end(mailbox, me).or_else(|| {
                        if crate::notify::channel::ending() {
                            Some(STOPPING)
                        } else if tokio::time::Instant::now() >= deadline {
                            Some((CloseCode::Protocol, "no Pong answered the Ping"))
                        } else {
                            None
                        }
                    });
                    if let Some(end) = end {
                        let _ = tx.send(close(end)).await;
                        return;
                    }
                    chat.touch_channel(id);
                    continue;
                }
            };
            if let Some(Ok(_)) = &m {
                live.heard(tokio::time::Instant::now());
            }
            if let Some(Ok(Message::Pong(p))) = &m
                && p.as_ref() == token.as_slice()
            {
                settling.push_back((tokio::time::Instant::now() + SETTLE, ids));
                break;
            }
            match from_oma_client(&channel, m).await {
                FromClient::Answer(ack) => {
                    if tx.send(Message::Text(ack.into())).await.is_err() {
                        return;
                    }
                }
                FromClient::Ignore => {}
                FromClient::Close(end) => {
                    close_draining(tx, rx, end).await;
                    return;
                }
                FromClient::Gone => {
                    // Closed before the Pong: sent again on the next socket.
                    return;
                }
            }
        }
    }
}

/// The payload of the Ping that follows an OMA frame: the socket's generation and the outbox
/// id of the frame's last notification (unique per frame of a channel; at most a few dozen
/// bytes, a Ping may carry 125).
fn ping_payload(me: u64, ids: &[u64]) -> Vec<u8> {
    let last = ids.last().copied().unwrap_or_default();
    format!("{me}.{}", webhook_id(last)).into_bytes()
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

    /// The credentials' look is due at once, then at most once a period.
    #[test]
    fn a_look_is_due_at_most_once_a_period() {
        let t0 = tokio::time::Instant::now();
        let s = std::time::Duration::from_secs(1);
        let mut every = Every::new(s, t0);
        assert!(every.due(t0));
        assert!(!every.due(t0 + s / 2));
        assert!(every.due(t0 + s));
        assert!(!every.due(t0 + s + s / 2));
        assert!(every.due(t0 + 5 * s));
    }

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

    /// OMA's subprotocol alone selects it and OMA's binding; with ours beside it ours wins
    /// (it has acknowledgements); a browser's bearer entry may stand beside either name; with
    /// no name offered the socket speaks ours, selecting nothing, as before.
    #[test]
    fn omas_subprotocol_selects_omas_binding_unless_ours_is_offered_too() {
        let entry = format!("{BEARER_PROTOCOL_PREFIX}{}", B64.encode("tok"));
        let oma = credentials(Some("Bearer h"), Some(OMA_PROTOCOL)).unwrap();
        assert_eq!(
            (oma.protocol, oma.binding),
            (Some(OMA_PROTOCOL), Binding::Oma)
        );
        for both in [
            format!("{OMA_PROTOCOL}, {PROTOCOL}"),
            format!("{PROTOCOL}, {OMA_PROTOCOL}"),
        ] {
            let hs = credentials(Some("Bearer h"), Some(&both)).unwrap();
            assert_eq!((hs.protocol, hs.binding), (Some(PROTOCOL), Binding::Signed));
        }
        let browser = credentials(None, Some(&format!("{OMA_PROTOCOL}, {entry}"))).unwrap();
        assert_eq!(browser.authorization.as_deref(), Some("Bearer tok"));
        assert_eq!(
            (browser.protocol, browser.binding),
            (Some(OMA_PROTOCOL), Binding::Oma)
        );
        let none = credentials(Some("Bearer h"), None).unwrap();
        assert_eq!((none.protocol, none.binding), (None, Binding::Signed));
        let other = credentials(Some("Bearer h"), Some("chat")).unwrap();
        assert_eq!((other.protocol, other.binding), (None, Binding::Signed));
    }

    /// A `connCheck` is read in JSON or in XML (OMA's namespace), both fields optional, as
    /// OMA's JSON mappings write numbers; anything else is refused, not guessed at.
    #[test]
    fn a_conn_check_is_read_in_either_form() {
        let full =
            read_conn_check(r#"{"connCheck":{"checkInterval":30,"newChannelLifetime":"600"}}"#)
                .unwrap();
        assert_eq!(
            (full.check_interval, full.new_channel_lifetime),
            (Some(30), Some(600))
        );
        for empty in [
            r#" {"connCheck":{}}"#,
            r#"{"connCheck":null}"#,
            r#"{"connCheck":""}"#,
        ] {
            assert_eq!(
                read_conn_check(empty).unwrap(),
                ConnCheck::default(),
                "{empty}"
            );
        }
        let xml = read_conn_check(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<nc:connCheck xmlns:nc="urn:oma:xml:rest:netapi:notificationchannel:1"><newChannelLifetime>90</newChannelLifetime></nc:connCheck>"#,
        )
        .unwrap();
        assert_eq!(xml.new_channel_lifetime, Some(90));
        for bad in [
            "",
            "msg_7",
            r#"{"connAck":{"channelLifetime":1}}"#,
            r#"{"connAck":null}"#,
            r#"{"connCheck":null,"other":1}"#,
            r#"{"connCheck":"x"}"#,
            r#"{"connCheck":{"newChannelLifetime":"soon"}}"#,
            r#"<connCheck xmlns="urn:oma:xml:rest:netapi:chat:1"/>"#,
            "<nc:connCheck",
        ] {
            assert!(read_conn_check(bad).is_err(), "{bad}");
        }
    }

    /// A connAck is the generated `ConnAck` in the socket's format.
    #[test]
    fn a_conn_ack_is_omas_document() {
        let ack = ConnAck {
            channel_lifetime: 600,
        };
        assert_eq!(
            wire::encode(Format::Json, &ack),
            br#"{"connAck":{"channelLifetime":600}}"#
        );
        let xml = String::from_utf8(wire::encode(Format::Xml, &ack)).unwrap();
        assert!(
            xml.contains("connAck")
                && xml.contains("urn:oma:xml:rest:netapi:notificationchannel:1"),
            "{xml}"
        );
        assert!(
            xml.contains("<channelLifetime>600</channelLifetime>"),
            "{xml}"
        );
    }

    /// A quiet client is pinged after one round; one that answers nothing within the wait
    /// (at least [`MIN_PONG_WAIT`]) is dead; any frame from it starts over.
    #[test]
    fn a_quiet_client_is_pinged_and_a_silent_one_let_go() {
        let t0 = tokio::time::Instant::now();
        let s = Duration::from_secs;
        let mut live = Liveness::new(s(25), t0);
        assert_eq!(live.due(t0 + s(24)), Due::Nothing);
        assert_eq!(live.due(t0 + s(25)), Due::Ping);
        live.pinged(t0 + s(25));
        assert_eq!(live.next_check(), t0 + s(50));
        assert_eq!(live.due(t0 + s(49)), Due::Nothing);
        assert_eq!(live.due(t0 + s(50)), Due::Dead);
        live.heard(t0 + s(40));
        assert_eq!(live.due(t0 + s(50)), Due::Nothing);
        assert_eq!(live.due(t0 + s(65)), Due::Ping);
        // A short round (a channel's small maxWaitTime) still leaves the client 5 s to answer,
        // and a zero one pings at most once a second.
        let mut short = Liveness::new(s(1), t0);
        assert_eq!(short.due(t0 + s(1)), Due::Ping);
        short.pinged(t0 + s(1));
        assert_eq!(short.due(t0 + s(5)), Due::Nothing);
        assert_eq!(short.due(t0 + s(6)), Due::Dead);
        assert_eq!(Liveness::new(s(0), t0).next_check(), t0 + s(1));
    }

    /// A Ping's payload names the socket and the frame's last notification: two frames, or two
    /// sockets, never share one; it fits a control frame (125 bytes).
    #[test]
    fn a_ping_names_its_socket_and_frame() {
        assert_eq!(ping_payload(3, &[7, 9]), b"3.msg_9");
        assert_ne!(ping_payload(3, &[7]), ping_payload(4, &[7]));
        assert_ne!(ping_payload(3, &[7]), ping_payload(3, &[8]));
        assert!(ping_payload(u64::MAX, &[u64::MAX]).len() <= 125);
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
