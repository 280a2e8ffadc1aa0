//! The callback receiver: a real HTTP/1.1 server that takes chat notifications POSTed to it.
//!
//! Each request is read (body at most [`Options::max_body`] bytes, else `413`), its Standard
//! Webhooks signature verified when secrets were given (a signature that does not verify gets
//! `401`: a real receiver must refuse a forged notification, and the server then retries it),
//! and answered with the status set by [`Listener::set_status`] (`204` by default). Every
//! request becomes a [`Received`]: handed to [`Options::on_receive`] at once (printing, the
//! benchmark's latency collector) and, when [`Options::keep`] allows, kept for
//! [`Listener::wait_for`] / [`Listener::received`] (tests).
//!
//! Users: `netapi-chat client listen` and `cargo xtask listen` ([`serve_printing`]), the
//! benchmark (`xtask/src/bench/listen.rs`, `on_receive` only) and the black-box tests.
//!
//! Bounds: one body at most `max_body` bytes in memory per connection; at most `keep`
//! notifications kept (the oldest are dropped first, and counted in [`Listener::dropped`]);
//! refused `webhook-id`s at most `keep` too.

use crate::signing::{DEFAULT_TOLERANCE_SECS, Signer, SigningError, WebhookHeaders};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use netapi_chat_runtime::Format;
use netapi_chat_runtime::wire::{self, Document};
use netapi_chat_runtime::xml::XmlLimits;
use std::collections::VecDeque;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

/// Largest notification body read by default: the server's own notifications are far smaller
/// (a message's text is bounded by the spec's `maxLength`); anything larger is refused `413`.
pub const DEFAULT_MAX_BODY: usize = 1 << 20;

/// Notifications kept for inspection by default ([`Options::keep`]): plenty for a test, and a
/// bound for a listener left running.
pub const DEFAULT_KEEP: usize = 10_000;

/// Called with every notification as it arrives.
pub type OnReceive = Arc<dyn Fn(&Received) + Send + Sync>;

/// How a listener behaves.
#[derive(Clone)]
pub struct Options {
    /// Secrets to verify signatures with (any one may match, as during a rotation); empty:
    /// signatures are not checked ([`Verification::NotChecked`]).
    pub secrets: Vec<Signer>,
    /// Accepted distance of `webhook-timestamp` from now, in seconds (both directions).
    pub tolerance_secs: i64,
    /// Most notifications kept for [`Listener::received`]; 0 keeps none (a printing listener,
    /// the benchmark).
    pub keep: usize,
    /// Largest body read, in bytes.
    pub max_body: usize,
    /// Called with every notification (accepted or refused), on the connection's task.
    pub on_receive: Option<OnReceive>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            secrets: Vec::new(),
            tolerance_secs: DEFAULT_TOLERANCE_SECS,
            keep: DEFAULT_KEEP,
            max_body: DEFAULT_MAX_BODY,
            on_receive: None,
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("secrets", &self.secrets.len())
            .field("tolerance_secs", &self.tolerance_secs)
            .field("keep", &self.keep)
            .field("max_body", &self.max_body)
            .finish_non_exhaustive()
    }
}

/// What the signature check said about one notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verification {
    /// The listener has no secret: nothing was checked.
    NotChecked,
    /// One of the listener's secrets verifies the signature.
    Verified,
    /// None does (or a header is missing); the notification was answered `401`.
    Failed(SigningError),
}

impl std::fmt::Display for Verification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verification::NotChecked => f.write_str("signature not checked"),
            Verification::Verified => f.write_str("signature verified"),
            Verification::Failed(e) => write!(f, "SIGNATURE REFUSED ({e})"),
        }
    }
}

/// One notification as the listener received it.
#[derive(Clone, Debug)]
pub struct Received {
    /// `POST`, normally.
    pub method: String,
    /// The request target (path and query), e.g. `/`.
    pub target: String,
    /// The `Content-Type` header (empty when absent).
    pub content_type: String,
    /// The `webhook-id` header: the notification's stable id (empty when absent).
    pub id: String,
    /// The `webhook-timestamp` header.
    pub timestamp: String,
    /// The `webhook-signature` header.
    pub signature: String,
    /// The body (the server sends UTF-8; anything else is replaced lossily here, after the
    /// signature was checked on the exact bytes).
    pub body: String,
    /// The signature check.
    pub verification: Verification,
    /// The status the listener answered.
    pub status: u16,
    /// When the body had been read.
    pub at: Instant,
}

impl Received {
    /// JSON or XML, by Content-Type (`None`: neither).
    pub fn format(&self) -> Option<Format> {
        netapi_chat_runtime::media::body_format(Some(&self.content_type)).ok()
    }

    /// Whether the listener answered 2xx (a refused one will be sent again).
    pub fn accepted(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The notification's name: the XML root element or the JSON object's one key
    /// (`messageNotification`, …); `None` when the body is not a document of that shape.
    pub fn kind(&self) -> Option<String> {
        match self.format()? {
            Format::Json => {
                let value: serde_json::Value = serde_json::from_str(&self.body).ok()?;
                let object = value.as_object()?;
                match object.len() {
                    1 => object.keys().next().cloned(),
                    _ => None,
                }
            }
            Format::Xml => {
                netapi_chat_runtime::xml::parse_document(self.body.as_bytes(), &xml_limits())
                    .ok()
                    .map(|root| root.name)
            }
        }
    }

    /// Decodes the body as the document `T`, in the format its Content-Type names.
    pub fn decode<T: Document>(&self) -> Result<T, String> {
        let format = self
            .format()
            .ok_or_else(|| format!("Content-Type `{}` is not JSON or XML", self.content_type))?;
        wire::decode::<T>(format, self.body.as_bytes(), &xml_limits())
            .map_err(|e| format!("not a {}: {}", T::NAME, e.rendered()))
    }

    /// The body for a person: indented ([`crate::pretty`]); as sent when it is neither JSON
    /// nor XML.
    pub fn pretty_body(&self) -> String {
        match self.format() {
            Some(format) => crate::pretty::document(format, &self.body),
            None => self.body.clone(),
        }
    }

    /// What the printing listener writes for it: a line `--- METHOD TARGET HTTP/1.1
    /// (content type) webhook-id ID: verification`, then the body. Scripts (the README
    /// walkthrough's check) read one delivery as the text from one `--- ` line to the next.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "--- {} {} HTTP/1.1 ({}) webhook-id {}: {}",
            self.method,
            self.target,
            self.content_type,
            if self.id.is_empty() { "-" } else { &self.id },
            self.verification
        );
        if !self.accepted() {
            out.push_str(&format!(", answered {}", self.status));
        }
        out.push('\n');
        out.push_str(self.pretty_body().trim_end());
        out
    }
}

/// The XML limits a listener decodes with (the runtime's defaults).
fn xml_limits() -> XmlLimits {
    XmlLimits::default()
}

/// State shared by the listener handle and its connection tasks.
struct Shared {
    options: Options,
    status: AtomicU16,
    down: AtomicBool,
    kept: Mutex<VecDeque<Received>>,
    refused: Mutex<VecDeque<String>>,
    dropped: AtomicU64,
    arrived: Notify,
}

/// Poisoning cannot leave these lists inconsistent (each change is one push or pop).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Pushes onto a list of at most `cap` entries, dropping the oldest; false if one was dropped.
fn push_bounded<T>(list: &mut VecDeque<T>, item: T, cap: usize) -> bool {
    if cap == 0 {
        return false;
    }
    let mut kept_all = true;
    while list.len() >= cap {
        list.pop_front();
        kept_all = false;
    }
    list.push_back(item);
    kept_all
}

/// Seconds since the Unix epoch now (a clock before 1970 reads as 0).
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The signature check of one request: any of `secrets` verifying is enough.
pub fn verify(
    secrets: &[Signer],
    headers: &http::HeaderMap,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Verification {
    if secrets.is_empty() {
        return Verification::NotChecked;
    }
    let received = match WebhookHeaders::from_header_map(headers) {
        Ok(h) => h,
        Err(e) => return Verification::Failed(e),
    };
    let mut last = SigningError::SignatureMismatch;
    for signer in secrets {
        match signer.verify(&received, body, now, tolerance_secs) {
            Ok(()) => return Verification::Verified,
            Err(e) => last = e,
        }
    }
    Verification::Failed(last)
}

/// A running callback listener on a local address. Stopped (its connections too) on drop.
pub struct Listener {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Listener {
    /// Binds `addr` (port 0: a free port) and starts serving; needs a tokio runtime.
    pub async fn start(addr: &str, options: Options) -> std::io::Result<Listener> {
        let socket = tokio::net::TcpListener::bind(addr).await?;
        let addr = socket.local_addr()?;
        let shared = Arc::new(Shared {
            options,
            status: AtomicU16::new(204),
            down: AtomicBool::new(false),
            kept: Mutex::new(VecDeque::new()),
            refused: Mutex::new(VecDeque::new()),
            dropped: AtomicU64::new(0),
            arrived: Notify::new(),
        });
        let task = tokio::spawn(accept_loop(socket, Arc::clone(&shared)));
        Ok(Listener { addr, shared, task })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A `notifyURL` for it: `http://ADDR/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Answers `code` from now on (a non-2xx answer makes the server retry). A notification
    /// whose signature does not verify is answered `401` whatever this says.
    pub fn set_status(&self, code: u16) {
        self.shared.status.store(code, Ordering::SeqCst);
    }

    /// Takes the listener down (connections and requests are closed without an answer) or
    /// back up.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// The accepted notifications kept so far (at most [`Options::keep`], oldest first).
    pub fn received(&self) -> Vec<Received> {
        lock(&self.shared.kept).iter().cloned().collect()
    }

    /// `webhook-id`s of the notifications refused (a non-2xx answer, a signature that does
    /// not verify, or closed while down), in arrival order.
    pub fn refused_ids(&self) -> Vec<String> {
        lock(&self.shared.refused).iter().cloned().collect()
    }

    /// How many accepted notifications were not kept (past [`Options::keep`]).
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` accepted notifications are kept, at most `timeout`: `Ok` with
    /// all of them, or `Err` with what had arrived.
    pub async fn wait_for(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<Received>, Vec<Received>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.arrived.notified();
            tokio::pin!(notified);
            // Registered before looking, so an arrival between the look and the wait counts.
            notified.as_mut().enable();
            // Counted under the lock; copied only once there are enough.
            if lock(&self.shared.kept).len() >= n {
                return Ok(self.received());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(self.received());
            }
        }
    }
}

/// Accepts connections until aborted; each connection is served on a task of `connections`,
/// so aborting this task (dropping the set) closes them all.
async fn accept_loop(socket: tokio::net::TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = socket.accept().await else {
            // Out of file descriptors or similar: try again shortly instead of spinning.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        while connections.try_join_next().is_some() {}
        if shared.down.load(Ordering::SeqCst) {
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        connections.spawn(async move {
            let svc = service_fn(move |req| handle(Arc::clone(&shared), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// One request: read, verify, record, answer.
async fn handle(
    shared: Arc<Shared>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, std::io::Error> {
    let (parts, body) = req.into_parts();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let options = &shared.options;
    let (body, too_large) = match Limited::new(body, options.max_body).collect().await {
        Ok(collected) => (collected.to_bytes(), false),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => (Bytes::new(), true),
        Err(e) => return Err(std::io::Error::other(e.to_string())),
    };
    let at = Instant::now();
    let verification = verify(
        &options.secrets,
        &parts.headers,
        &body,
        unix_now(),
        options.tolerance_secs,
    );
    let down = shared.down.load(Ordering::SeqCst);
    let status = if too_large {
        413
    } else if matches!(verification, Verification::Failed(_)) {
        401
    } else {
        shared.status.load(Ordering::SeqCst)
    };
    let received = Received {
        method: parts.method.to_string(),
        target: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".to_owned()),
        content_type: header(http::header::CONTENT_TYPE.as_str()),
        id: header(crate::signing::HEADER_ID),
        timestamp: header(crate::signing::HEADER_TIMESTAMP),
        signature: header(crate::signing::HEADER_SIGNATURE),
        body: String::from_utf8_lossy(&body).into_owned(),
        verification,
        status,
        at,
    };
    if let Some(on_receive) = &options.on_receive {
        on_receive(&received);
    }
    if down || !received.accepted() {
        push_bounded(
            &mut lock(&shared.refused),
            received.id.clone(),
            options.keep,
        );
    } else if !push_bounded(&mut lock(&shared.kept), received, options.keep) {
        shared.dropped.fetch_add(1, Ordering::SeqCst);
    }
    shared.arrived.notify_waiters();
    if down {
        // Down: fail the request without an HTTP answer.
        return Err(std::io::Error::other("listener is down"));
    }
    let mut answer = hyper::Response::new(Full::new(Bytes::new()));
    *answer.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    Ok(answer)
}

/// An [`OnReceive`] that writes [`Received::describe`] to stdout, one delivery after the
/// other (stdout locked per delivery; a closed stdout is ignored).
pub fn printer() -> OnReceive {
    Arc::new(|received: &Received| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", received.describe());
        let _ = out.flush();
    })
}

/// The printing listener of `netapi-chat client listen` and `cargo xtask listen`: binds
/// `addr`, prints `listening for notifications on http://ADDR/ (…)` and then every
/// notification, and runs until the process is stopped.
pub async fn serve_printing(addr: &str, secrets: Vec<Signer>) -> std::io::Result<()> {
    let checking = if secrets.is_empty() {
        "signatures not checked".to_owned()
    } else {
        format!("verifying signatures with {} secret(s)", secrets.len())
    };
    let listener = Listener::start(
        addr,
        Options {
            secrets,
            keep: 0,
            on_receive: Some(printer()),
            ..Options::default()
        },
    )
    .await?;
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "listening for notifications on {} ({checking}; Ctrl-C to stop)",
            listener.url()
        );
        let _ = out.flush();
    }
    std::future::pending::<()>().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(content_type: &str, body: &str) -> Received {
        Received {
            method: "POST".to_owned(),
            target: "/".to_owned(),
            content_type: content_type.to_owned(),
            id: "msg_1".to_owned(),
            timestamp: "1".to_owned(),
            signature: String::new(),
            body: body.to_owned(),
            verification: Verification::NotChecked,
            status: 204,
            at: Instant::now(),
        }
    }

    #[test]
    fn a_notification_is_named_by_its_root_in_either_format() {
        let json = received(
            "application/json; charset=utf-8",
            r#"{"chatEventNotification":{"eventType":"SessionEnded"}}"#,
        );
        assert_eq!(json.kind().as_deref(), Some("chatEventNotification"));
        let xml = received(
            "application/xml",
            r#"<chat:messageNotification xmlns:chat="urn:oma:xml:rest:netapi:chat:1"/>"#,
        );
        assert_eq!(xml.kind().as_deref(), Some("messageNotification"));
        assert_eq!(received("text/plain", "x").kind(), None);
        assert_eq!(
            received("application/json", r#"{"a":1,"b":2}"#).kind(),
            None
        );
    }

    #[test]
    fn the_description_starts_with_one_line_scripts_can_split_on() {
        let mut r = received("application/json", r#"{"a":{"b":1}}"#);
        r.verification = Verification::Verified;
        assert_eq!(
            r.describe(),
            "--- POST / HTTP/1.1 (application/json) webhook-id msg_1: signature verified\n{\n  \"a\": {\n    \"b\": 1\n  }\n}"
        );
        r.verification = Verification::Failed(SigningError::SignatureMismatch);
        r.status = 401;
        let first = r.describe().lines().next().map(str::to_owned);
        assert_eq!(
            first.as_deref(),
            Some(
                "--- POST / HTTP/1.1 (application/json) webhook-id msg_1: SIGNATURE REFUSED (no webhook-signature entry matches), answered 401"
            )
        );
    }

    #[test]
    fn kept_lists_drop_their_oldest_past_the_cap() {
        let mut list = VecDeque::new();
        assert!(push_bounded(&mut list, 1, 2));
        assert!(push_bounded(&mut list, 2, 2));
        assert!(!push_bounded(&mut list, 3, 2));
        assert_eq!(list, [2, 3]);
        assert!(!push_bounded(&mut list, 4, 0));
        assert_eq!(list, [2, 3]);
    }

    #[test]
    fn any_secret_verifies_and_none_given_checks_nothing() {
        let (signer, _) = Signer::generate();
        let (other, _) = Signer::generate();
        let body = b"{}";
        let mut headers = http::HeaderMap::new();
        for (name, value) in signer.headers("msg_9", 1_000, body) {
            headers.insert(name, value.parse().expect("header value"));
        }
        assert_eq!(
            verify(&[], &headers, body, 1_000, 300),
            Verification::NotChecked
        );
        assert_eq!(
            verify(&[other.clone(), signer], &headers, body, 1_000, 300),
            Verification::Verified
        );
        assert_eq!(
            verify(&[other], &headers, body, 1_000, 300),
            Verification::Failed(SigningError::SignatureMismatch)
        );
        assert_eq!(
            verify(
                &[Signer::generate().0],
                &http::HeaderMap::new(),
                body,
                1_000,
                300
            ),
            Verification::Failed(SigningError::MissingHeader("webhook-id"))
        );
    }

    /// POSTs `body` with `headers` over a fresh connection; the answer's status.
    async fn post(addr: SocketAddr, headers: &[(&str, String)], body: &str) -> u16 {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut request = format!(
            "POST /cb?x=1 HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
            body.len()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(body);
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("read");
        answer
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn a_signed_notification_is_kept_and_a_forged_one_refused() {
        let (signer, _) = Signer::generate();
        let listener = Listener::start(
            "127.0.0.1:0",
            Options {
                secrets: vec![signer.clone()],
                ..Options::default()
            },
        )
        .await
        .expect("listener");
        let body = r#"{"chatEventNotification":{"eventType":"SessionEnded","sessionId":"s1"}}"#;
        let signed = signer.headers("msg_1", unix_now(), body.as_bytes());
        let headers: Vec<(&str, String)> = signed.to_vec();
        assert_eq!(post(listener.addr(), &headers, body).await, 204);
        let (forger, _) = Signer::generate();
        let forged = forger
            .headers("msg_2", unix_now(), body.as_bytes())
            .to_vec();
        assert_eq!(post(listener.addr(), &forged, body).await, 401);
        listener.set_status(503);
        assert_eq!(post(listener.addr(), &headers, body).await, 503);
        let got = listener
            .wait_for(1, Duration::from_secs(10))
            .await
            .expect("one kept");
        assert_eq!(got.len(), 1, "{got:#?}");
        assert_eq!(got[0].id, "msg_1");
        assert_eq!(got[0].target, "/cb?x=1");
        assert_eq!(got[0].verification, Verification::Verified);
        assert_eq!(got[0].kind().as_deref(), Some("chatEventNotification"));
        assert_eq!(listener.refused_ids(), ["msg_2", "msg_1"]);
    }
}
