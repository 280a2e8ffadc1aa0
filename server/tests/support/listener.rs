//! A real HTTP callback receiver for the tests: it records every notification the server
//! POSTs and has test controls (answer another status, go down, list what it refused).
//!
//! Kept in the test support (with those controls) rather than shared with `cargo xtask
//! listen` and the bench; its recording half is what a shared listener module would hold,
//! and [`Listener`] can wrap that module later without changing a suite.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use netapi_chat_runtime::Format;
use netapi_chat_runtime::wire::Document;
use netapi_chat_runtime::xml::XmlLimits;
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

/// A real HTTP callback receiver on a free loopback port: records every POST, answers 204 (or
/// what [`Listener::set_status`] says).
pub struct Listener {
    /// Its notifyURL.
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
    arrived: Arc<Notify>,
    status: Arc<Mutex<u16>>,
    down: Arc<std::sync::atomic::AtomicBool>,
    refused: Arc<Mutex<Vec<String>>>,
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
        let received = Arc::new(Mutex::new(Vec::new()));
        let arrived = Arc::new(Notify::new());
        let status = Arc::new(Mutex::new(204u16));
        let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let refused = Arc::new(Mutex::new(Vec::new()));
        let (r, a, st) = (received.clone(), arrived.clone(), status.clone());
        let (dn, rf) = (down.clone(), refused.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = socket.accept().await else {
                    break;
                };
                if dn.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(stream); // down: the connection is closed at once
                    continue;
                }
                let (r, a, st) = (r.clone(), a.clone(), st.clone());
                let (dn, rf) = (dn.clone(), rf.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (r, a, st) = (r.clone(), a.clone(), st.clone());
                        let (dn, rf) = (dn.clone(), rf.clone());
                        async move {
                            let ct = req
                                .headers()
                                .get(http::header::CONTENT_TYPE)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned();
                            let header = |name: &str| {
                                req.headers()
                                    .get(name)
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or_default()
                                    .to_owned()
                            };
                            let id = header("webhook-id");
                            let timestamp = header("webhook-timestamp");
                            let signature = header("webhook-signature");
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            if dn.load(std::sync::atomic::Ordering::SeqCst) {
                                rf.lock().unwrap().push(id);
                                // Down: fail the request without an HTTP answer.
                                return Err(std::io::Error::other("listener is down"));
                            }
                            let code = *st.lock().unwrap();
                            if !(200..300).contains(&code) {
                                rf.lock().unwrap().push(id.clone());
                            }
                            if (200..300).contains(&code) {
                                r.lock().unwrap().push(Received {
                                    content_type: ct,
                                    id,
                                    timestamp,
                                    signature,
                                    body: String::from_utf8_lossy(&body).into_owned(),
                                });
                                a.notify_waiters();
                            }
                            let mut resp = hyper::Response::new(Full::new(Bytes::new()));
                            *resp.status_mut() = http::StatusCode::from_u16(code).unwrap();
                            Ok::<_, std::io::Error>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Listener {
            url,
            received,
            arrived,
            status,
            down,
            refused,
            task,
        }
    }

    /// Takes the listener down (connections are closed without an answer) or back up.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
    }

    /// `webhook-id`s of the notifications refused (down, or a non-2xx answer), in order.
    pub fn refused_ids(&self) -> Vec<String> {
        self.refused.lock().unwrap().clone()
    }

    /// Makes the listener answer `code` (a non-2xx answer is not recorded).
    pub fn set_status(&self, code: u16) {
        *self.status.lock().unwrap() = code;
    }

    /// Waits (up to 10 s) until at least `n` notifications arrived; returns all of them.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let notified = self.arrived.notified();
            {
                let got = self.received.lock().unwrap();
                if got.len() >= n {
                    return got.clone();
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let got = self.received.lock().unwrap();
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
        self.received.lock().unwrap().clone()
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
