//! Test support shared by the black-box suites: the real server binary on a free port, real
//! callback listeners, a raw-HTTP client for the XML face, and XSD validation with xmllint.

#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use netapi_chat_api::Urls;
use netapi_chat_runtime::Format;
use netapi_chat_runtime::wire::{self, Document};
use netapi_chat_runtime::xml::XmlLimits;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Percent-encodes an address for a path segment (same rule as the server's).
pub fn enc(s: &str) -> String {
    netapi_chat::address::encode_segment(s)
}

/// The real `netapi-chat` binary, started on a free loopback port with its own data
/// directory; killed on drop (the directory is removed unless it was given by the test).
pub struct Server {
    /// e.g. `http://127.0.0.1:41234`
    pub base: String,
    /// The data directory.
    pub data_dir: PathBuf,
    owns_dir: bool,
    child: Child,
}

/// The application token every helper sends unless told otherwise: it may act for any user
/// (`*` in the token file the harness writes).
pub const APP_TOKEN: &str = "test-application-token-0123456789";

/// Users with a token of their own (for tests of who may act for whom).
pub const USERS_WITH_TOKENS: &[&str] = &[
    "tel:+15551230001",
    "tel:+15551230002",
    "sip:alice@example.com",
    "sip:bob@example.com",
    "sip:mallory@example.com",
];

/// The token of one of [`USERS_WITH_TOKENS`] (it may act for that user only).
pub fn user_token(user: &str) -> String {
    let hex: String = user.bytes().map(|b| format!("{b:02x}")).collect();
    format!("user-{hex}")
}

/// A fresh data directory under the system temp dir, holding the test token file.
pub fn temp_data_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "netapi-chat-test-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).expect("create data dir");
    let mut tokens = format!("{APP_TOKEN} *\n");
    for u in USERS_WITH_TOKENS {
        tokens.push_str(&format!("{} {u}\n", user_token(u)));
    }
    std::fs::write(dir.join("tokens"), tokens).expect("write token file");
    dir
}

/// A reqwest client that sends `Authorization: Bearer <token>` on every request.
pub fn http_client(token: &str) -> reqwest::Client {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        http::HeaderValue::from_str(&format!("Bearer {token}")).expect("token header"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("client")
}

impl Server {
    /// Starts the server with extra `NETAPI_CHAT_*` settings, on a fresh data directory.
    pub fn start(env: &[(&str, &str)]) -> Server {
        let mut s = Server::start_in(&temp_data_dir(), env, None);
        s.owns_dir = true;
        s
    }

    /// Starts the server on `data_dir` (e.g. again after a kill), optionally on a given address.
    pub fn start_in(
        data_dir: &std::path::Path,
        env: &[(&str, &str)],
        bind: Option<&str>,
    ) -> Server {
        Server::start_in_with_args(data_dir, env, bind, &[])
    }

    /// Starts the server with command-line arguments (e.g. `--config FILE`) and extra
    /// settings, on a fresh data directory.
    pub fn start_with_args(args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut s = Server::start_in_with_args(&temp_data_dir(), env, None, args);
        s.owns_dir = true;
        s
    }

    fn start_in_with_args(
        data_dir: &std::path::Path,
        env: &[(&str, &str)],
        bind: Option<&str>,
        args: &[&str],
    ) -> Server {
        // NETAPI_CHAT_TEST_BIN runs another build instead (e.g. an older one, to write a
        // stored-format fixture: see tests/stored_format.rs).
        let mut cmd = Command::new(
            std::env::var_os("NETAPI_CHAT_TEST_BIN")
                .unwrap_or_else(|| env!("CARGO_BIN_EXE_netapi-chat").into()),
        );
        cmd.args(args)
            .env("NETAPI_CHAT_BIND", bind.unwrap_or("127.0.0.1:0"))
            .env("NETAPI_CHAT_DATA_DIR", data_dir)
            .env("NETAPI_CHAT_CALLBACK_ALLOW_LOOPBACK", "1")
            // One token drives many users here; the rate limit has tests of its own.
            .env("NETAPI_CHAT_RATE_LIMIT", "0")
            .env("NETAPI_CHAT_RETRY_SCHEDULE", "0,50ms,100ms,200ms,400ms")
            .stdout(Stdio::piped())
            // NETAPI_CHAT_TEST_LOGS=1 shows the servers' logs (they are quiet otherwise).
            .stderr(if std::env::var_os("NETAPI_CHAT_TEST_LOGS").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            });
        if let Some(url) = postgres_database_for(data_dir) {
            cmd.env("NETAPI_CHAT_DATABASE_URL", url);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start netapi-chat");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        let mut reader = BufReader::new(stdout);
        reader.read_line(&mut line).expect("read startup line");
        // Keep reading (and dropping) the rest, so the server never writes into a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        let base = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in startup line {line:?}"))
            .to_owned();
        Server {
            base,
            data_dir: data_dir.to_path_buf(),
            owns_dir: false,
            child,
        }
    }

    /// Starts the server with defaults suited to tests.
    pub fn default_for_tests() -> Server {
        Server::start(&[])
    }

    /// Kills the process with SIGKILL (no clean shutdown) and keeps the data directory.
    pub fn kill(mut self) -> PathBuf {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.owns_dir = false;
        self.data_dir.clone()
    }

    /// The process id (benches read its RSS from `/proc`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The `host:port` it listens on.
    pub fn addr(&self) -> String {
        self.base.trim_start_matches("http://").to_owned()
    }

    /// The URLs of this server's resources: the builders generated from the spec's paths
    /// (`netapi_chat_api::Urls`), the same ones the server writes its `resourceURL`s with.
    pub fn urls(&self) -> Urls {
        Urls::new(&self.base)
    }

    /// `{base}/v1/chat/{user}` + `rest`, for a URL the spec has no path for (a typo, a
    /// trailing slash, a raw segment a test wants as it is); every path of the spec is built
    /// by [`Server::urls`].
    pub fn url(&self, user: &str, rest: &str) -> String {
        format!("{}/v1/chat/{}{rest}", self.base, enc(user))
    }

    /// The progenitor client for this server, authenticated with [`APP_TOKEN`].
    pub fn client(&self) -> netapi_chat_client::Client {
        netapi_chat_client::Client::new_with_client(&self.base, http_client(APP_TOKEN))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.owns_dir {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

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
        if self.content_type.contains("xml") {
            Format::Xml
        } else {
            Format::Json
        }
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
        if self.format() == Format::Xml {
            xsd_validate(&self.body);
        }
        wire::decode::<T>(self.format(), self.body.as_bytes(), &XmlLimits::default())
            .unwrap_or_else(|e| {
                panic!(
                    "notification does not decode as {}: {e}\n{}",
                    T::NAME,
                    self.body
                )
            })
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

/// A raw HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Answer {
    /// The Content-Type, or "".
    pub fn content_type(&self) -> &str {
        self.headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// A header's value, or "".
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// Decodes the body as `T` in the format its Content-Type says (XML validated first).
    pub fn decode<T: Document>(&self) -> T {
        let format = if self.content_type().contains("xml") {
            Format::Xml
        } else {
            Format::Json
        };
        if format == Format::Xml {
            xsd_validate(&self.body);
        }
        wire::decode::<T>(format, self.body.as_bytes(), &XmlLimits::default())
            .unwrap_or_else(|e| panic!("answer does not decode as {}: {e}\n{}", T::NAME, self.body))
    }

    /// Asserts an OMA error: status, exception id, and that the body is a valid `requestError`
    /// in `format`.
    pub fn assert_error(
        &self,
        status: u16,
        message_id: &str,
        format: Format,
    ) -> netapi_chat_api::RequestError {
        assert_eq!(self.status, status, "status; body: {}", self.body);
        let want = if format == Format::Xml {
            "application/xml"
        } else {
            "application/json"
        };
        assert!(
            self.content_type().starts_with(want),
            "error Content-Type {} (wanted {want})",
            self.content_type()
        );
        let e: netapi_chat_api::RequestError = self.decode();
        let ex = e
            .service_exception
            .as_ref()
            .or(e.policy_exception.as_ref())
            .expect("an exception");
        assert_eq!(
            ex.message_id, message_id,
            "exception id; body: {}",
            self.body
        );
        assert!(!ex.text.is_empty());
        e
    }
}

/// Sends a raw request; `body` is sent with `content_type` when given. Unless `headers` has
/// an `authorization` entry, `Authorization: Bearer APP_TOKEN` is added; an `authorization`
/// entry with an empty value sends none.
pub async fn send(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&str>) -> Answer {
    let client = reqwest::Client::new();
    let mut req = client.request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url);
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
    {
        req = req.bearer_auth(APP_TOKEN);
    }
    for (k, v) in headers {
        if k.eq_ignore_ascii_case("authorization") && v.is_empty() {
            continue;
        }
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.body(b.to_owned());
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.text().await.unwrap_or_default();
    Answer {
        status,
        headers,
        body,
    }
}

/// Sends a document in `format`, asking for `format` back.
pub async fn send_doc<T: Document>(method: &str, url: &str, format: Format, doc: &T) -> Answer {
    let body = String::from_utf8(wire::encode(format, doc)).expect("utf-8");
    if format == Format::Xml {
        xsd_validate(&body);
    }
    send(
        method,
        url,
        &[
            ("content-type", format.media_type()),
            ("accept", format.media_type()),
        ],
        Some(&body),
    )
    .await
}

/// Sends a body-less request asking for `format`.
pub async fn send_empty(method: &str, url: &str, format: Format) -> Answer {
    send(method, url, &[("accept", format.media_type())], None).await
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Validates an XML document against the generated XSD of its root's namespace with
/// `xmllint --schema`; panics with xmllint's message when it is not valid.
pub fn xsd_validate(doc: &str) {
    let root = netapi_chat_runtime::xml::parse_document(doc.as_bytes(), &XmlLimits::default())
        .unwrap_or_else(|e| panic!("not well-formed XML ({e}): {doc}"));
    let ns = root.namespace.clone().unwrap_or_default();
    let (_, file, _) = netapi_chat_api::XSDS
        .iter()
        .find(|(n, _, _)| *n == ns)
        .unwrap_or_else(|| panic!("no XSD for namespace {ns:?}"));
    let xsd = workspace().join("generated/xsd").join(file);
    let tmp =
        std::env::temp_dir().join(format!("netapi-chat-{}.xml", uuid::Uuid::new_v4().simple()));
    std::fs::write(&tmp, doc).expect("write temp xml");
    let out = Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(&xsd)
        .arg(&tmp)
        .output()
        .expect(
            "xmllint is needed for XSD validation (Debian: libxml2-utils; .ci/run installs it)",
        );
    let _ = std::fs::remove_file(&tmp);
    assert!(
        out.status.success(),
        "XML not valid against {}:\n{}\n{doc}",
        xsd.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The backend matrix (PostgreSQL hook): when `NETAPI_CHAT_TEST_DATABASE_URL` names a
/// PostgreSQL server (`cargo xtask test` starts a throwaway one for its PostgreSQL pass), each
/// data directory gets a database of its own on it, created on first use and named after the
/// directory, so a server restarted on the same directory (after a kill) finds its data again;
/// its URL is what the server is started with. `None` (SQLite in the data directory) otherwise.
pub fn postgres_database_for(data_dir: &std::path::Path) -> Option<String> {
    let admin = std::env::var("NETAPI_CHAT_TEST_DATABASE_URL").ok()?;
    let name: String = data_dir
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let name = format!("t_{}", &name[name.len().saturating_sub(60)..]);
    // On a thread of its own: the blocking client runs a runtime, and tests call this from
    // inside tokio's.
    let (url, db) = (admin.clone(), name.clone());
    std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("test PostgreSQL");
        let exists = client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&db])
            .expect("look for the test database")
            .is_some();
        if !exists {
            client
                .batch_execute(&format!("CREATE DATABASE {db}"))
                .expect("create the test database");
        }
    })
    .join()
    .expect("create the test database");
    // The same server and credentials, another database.
    let (base, query) = admin.split_once('?').unwrap_or((admin.as_str(), ""));
    let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
    Some(if query.is_empty() {
        format!("{base}/{name}")
    } else {
        format!("{base}/{name}?{query}")
    })
}
