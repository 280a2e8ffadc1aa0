//! A real HTTP callback receiver for the tests: it records every notification the server
//! POSTs and has test controls (answer another status, go down, list what it refused).
//!
//! Three layers, so that the test [`Listener`] can later wrap the server library's listener
//! module (the one `cargo xtask listen` and the bench will share) without a suite changing:
//! `serve` (accept HTTP/1 and hand each request over), `Delivery` (one POST's webhook headers
//! and body) and `State` (the recording plus the test controls, deciding each answer). Only
//! the test controls are test-only.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use netapi_chat_runtime::Format;
use netapi_chat_runtime::wire::Document;
use netapi_chat_runtime::xml::XmlLimits;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

use super::http::{decode_body, format_of};

/// One notification as a callback listener received it.
#[derive(Clone, Debug)]
pub struct Received {
    pub content_type: String,
    /// The `webhook-id` header: the notification's stable id.
    pub id: String,
    /// The `webhook-timestamp` header.
    pub timestamp: String,
    /// The `webhook-signature` header.
    pub signature: String,
    pub body: String,
}

impl Received {
    /// JSON or XML, by Content-Type.
    pub fn format(&self) -> Format {
        format_of(&self.content_type)
    }

    /// The root element name (XML) or single key (JSON).
    pub fn kind(&self) -> String {
        match self.format() {
            Format::Json => {
                let v: serde_json::Value =
                    serde_json::from_str(&self.body).expect("notification is JSON");
                let obj = v.as_object().expect("notification is a JSON object");
                assert_eq!(
                    obj.len(),
                    1,
                    "a JSON notification has exactly one root key: {}",
                    self.body
                );
                obj.keys().next().cloned().unwrap_or_default()
            }
            Format::Xml => {
                let e = netapi_chat_runtime::xml::parse_document(
                    self.body.as_bytes(),
                    &XmlLimits::default(),
                )
                .expect("notification is XML");
                e.name
            }
        }
    }

    /// Decodes the body as `T`, validating XML against the XSD first.
    pub fn decode<T: Document>(&self) -> T {
        decode_body(self.format(), &self.body, "notification")
    }
}

/// One POST as it arrived, before the listener decides what to answer.
struct Delivery {
    content_type: String,
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    id: String,
    timestamp: String,
    signature: String,
    body: String,
}

impl Delivery {
    /// Reads the headers a notification carries and its whole body.
    async fn read(req: hyper::Request<hyper::body::Incoming>) -> Delivery {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let content_type = header(http::header::CONTENT_TYPE.as_str());
        let (id, timestamp, signature) = (
            header("webhook-id"),
            header("webhook-timestamp"),
            header("webhook-signature"),
        );
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Delivery {
            content_type,
            id,
            timestamp,
            signature,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }
}

/// What a listener keeps and how it answers: the recording (what a shared listener module
/// would hold too) and the test controls (answer status, down, what was refused).
#[derive(Default)]
struct State {
    received: Mutex<Vec<Received>>,
    arrived: Notify,
    /// The status to answer; 204 until [`Listener::set_status`].
    status: Mutex<Option<u16>>,
    down: AtomicBool,
    refused: Mutex<Vec<String>>,
}

impl State {
    fn status(&self) -> u16 {
        self.status.lock().unwrap().unwrap_or(204)
    }

    fn is_down(&self) -> bool {
        self.down.load(Ordering::SeqCst)
    }

    /// Records `d` (a 2xx answer) or its refusal, and says what to answer: a status, or an
    /// error that fails the request without an HTTP answer (down).
    fn answer(&self, d: Delivery) -> Result<u16, std::io::Error> {
        if self.is_down() {
            self.refused.lock().unwrap().push(d.id);
            return Err(std::io::Error::other("listener is down"));
        }
        let code = self.status();
        if (200..300).contains(&code) {
            self.received.lock().unwrap().push(Received {
                content_type: d.content_type,
                id: d.id,
                timestamp: d.timestamp,
                signature: d.signature,
                body: d.body,
            });
            self.arrived.notify_waiters();
        } else {
            self.refused.lock().unwrap().push(d.id);
        }
        Ok(code)
    }
}

/// Serves HTTP/1 on `socket`, each request answered by `state` (a down listener closes new
/// connections at once).
async fn serve(socket: tokio::net::TcpListener, state: Arc<State>) {
    while let Ok((stream, _)) = socket.accept().await {
        if state.is_down() {
            drop(stream);
            continue;
        }
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let state = Arc::clone(&state);
                async move {
                    let code = state.answer(Delivery::read(req).await)?;
                    let mut resp = hyper::Response::new(Full::new(Bytes::new()));
                    *resp.status_mut() =
                        http::StatusCode::from_u16(code).expect("a status the test chose");
                    Ok::<_, std::io::Error>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// A real HTTP callback receiver on a free loopback port: records every POST, answers 204 (or
/// what [`Listener::set_status`] says).
pub struct Listener {
    /// Its notifyURL.
    pub url: String,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Listener {
    /// Starts a listener.
    pub async fn start() -> Listener {
        Listener::start_on("127.0.0.1:0").await
    }

    /// Starts a listener on a given address (e.g. the notifyURL a stored fixture holds).
    pub async fn start_on(addr: &str) -> Listener {
        let socket = tokio::net::TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("bind listener on {addr}: {e}"));
        let url = format!("http://{}/notify", socket.local_addr().expect("addr"));
        let state = Arc::new(State::default());
        let task = tokio::spawn(serve(socket, Arc::clone(&state)));
        Listener { url, state, task }
    }

    /// Takes the listener down (connections are closed without an answer) or back up.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// `webhook-id`s of the notifications refused (down, or a non-2xx answer), in order.
    pub fn refused_ids(&self) -> Vec<String> {
        self.state.refused.lock().unwrap().clone()
    }

    /// Makes the listener answer `code` (a non-2xx answer is not recorded).
    pub fn set_status(&self, code: u16) {
        *self.state.status.lock().unwrap() = Some(code);
    }

    /// Waits (up to 10 s) until at least `n` notifications arrived; returns all of them.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let notified = self.state.arrived.notified();
            {
                let got = self.state.received.lock().unwrap();
                if got.len() >= n {
                    return got.clone();
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let got = self.state.received.lock().unwrap();
                panic!(
                    "expected {n} notifications at {}, got {}: {:#?}",
                    self.url,
                    got.len(),
                    *got
                );
            }
        }
    }

    /// Waits for the `n`-th notification (1-based) and returns it.
    pub async fn nth(&self, n: usize) -> Received {
        self.wait_for(n).await[n - 1].clone()
    }

    /// Everything received so far.
    pub fn all(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Asserts that nothing more than `n` notifications arrives within `wait`.
    pub async fn assert_count_stays(&self, n: usize, wait: Duration) {
        tokio::time::sleep(wait).await;
        let got = self.all();
        assert_eq!(
            got.len(),
            n,
            "unexpected notifications at {}: {got:#?}",
            self.url
        );
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}
