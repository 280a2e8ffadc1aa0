//! Raw HTTP against the server: any method, headers and body, and the answer as it came
//! (status, headers, text), decoded and XSD-validated on request.

use netapi_chat_runtime::Format;
use netapi_chat_runtime::wire::{self, Document};
use netapi_chat_runtime::xml::XmlLimits;
use std::path::PathBuf;
use std::process::Command;

use super::APP_TOKEN;

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
        decode_body(format_of(self.content_type()), &self.body, "answer")
    }

    /// The id a `201 Created` names: asserts the 201 and a `Location`, and returns the
    /// `Location`'s last segment.
    #[track_caller]
    pub fn created_id(&self) -> String {
        assert_eq!(self.status, 201, "expected 201; body: {}", self.body);
        let location = self.header("location");
        assert!(!location.is_empty(), "no Location; body: {}", self.body);
        super::docs::last_segment(location)
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
        assert!(
            self.content_type().starts_with(format.media_type()),
            "error Content-Type {} (wanted {})",
            self.content_type(),
            format.media_type()
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

/// POSTs a body written by hand, as `f` (its Content-Type), asking for `accept` back.
pub async fn post_raw(url: &str, f: Format, accept: Format, body: &str) -> Answer {
    send(
        "POST",
        url,
        &[
            ("content-type", f.media_type()),
            ("accept", accept.media_type()),
        ],
        Some(body),
    )
    .await
}

/// Sends a document in `format`, asking for `format` back.
pub async fn send_doc<T: Document>(method: &str, url: &str, format: Format, doc: &T) -> Answer {
    send_doc_as(APP_TOKEN, method, url, format, doc).await
}

/// [`send_doc`] with bearer token `token` instead of [`APP_TOKEN`].
pub async fn send_doc_as<T: Document>(
    token: &str,
    method: &str,
    url: &str,
    format: Format,
    doc: &T,
) -> Answer {
    let body = String::from_utf8(wire::encode(format, doc)).expect("utf-8");
    if format == Format::Xml {
        xsd_validate(&body);
    }
    send(
        method,
        url,
        &[
            ("authorization", &format!("Bearer {token}")),
            ("content-type", format.media_type()),
            ("accept", format.media_type()),
        ],
        Some(&body),
    )
    .await
}

/// Sends a body-less request with this `Authorization` value (`""`: none), asking for
/// `format`.
pub async fn send_authorized(
    method: &str,
    url: &str,
    authorization: &str,
    format: Format,
) -> Answer {
    send(
        method,
        url,
        &[
            ("authorization", authorization),
            ("accept", format.media_type()),
        ],
        None,
    )
    .await
}

/// Sends a body-less request asking for `format`.
pub async fn send_empty(method: &str, url: &str, format: Format) -> Answer {
    send(method, url, &[("accept", format.media_type())], None).await
}

/// The format a Content-Type names: XML for any `…xml…` type, JSON otherwise.
pub fn format_of(content_type: &str) -> Format {
    if content_type.contains("xml") {
        Format::Xml
    } else {
        Format::Json
    }
}

/// Decodes `body` as `T` in `format`, validating XML against the XSD first; a failure panics
/// naming `what` was decoded (an answer, a notification) and the body.
pub fn decode_body<T: Document>(format: Format, body: &str, what: &str) -> T {
    if format == Format::Xml {
        xsd_validate(body);
    }
    wire::decode::<T>(format, body.as_bytes(), &XmlLimits::default())
        .unwrap_or_else(|e| panic!("{what} does not decode as {}: {e}\n{body}", T::NAME))
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Validates an XML document against the generated XSD of its root's namespace with
/// `xmllint --schema`; panics with xmllint's message when it is not valid.
pub fn xsd_validate(doc: &str) {
    let root = netapi_chat_runtime::xml::parse_document(doc.as_bytes(), &XmlLimits::default())
        .unwrap_or_else(|e| panic!("not well-formed XML ({e}): {doc}"));
    let ns = root.namespace.as_deref().unwrap_or_default().to_owned();
    let (_, file, _) = netapi_chat_api::XSDS
        .iter()
        .find(|(n, _, _)| *n == ns)
        .unwrap_or_else(|| panic!("no XSD for namespace {ns:?}"));
    let xsd = workspace().join("generated/xsd").join(file);
    // The document on standard input: no file left behind by a test that is killed.
    let mut child = Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(&xsd)
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect(
            "xmllint is needed for XSD validation (Debian: libxml2-utils; .ci/run installs it)",
        );
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("xmllint's stdin");
        stdin
            .write_all(doc.as_bytes())
            .expect("the document to xmllint");
    }
    let out = child.wait_with_output().expect("xmllint ran");
    assert!(
        out.status.success(),
        "XML not valid against {}:\n{}\n{doc}",
        xsd.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// This machine's host name and the addresses it resolves to (in /etc/hosts here: loopback),
/// for the tests of a notifyURL whose name resolves to a refused address.
pub async fn host_name_addresses() -> (String, Vec<std::net::SocketAddr>) {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let resolved = tokio::net::lookup_host((host.as_str(), 80))
        .await
        .map(|a| a.collect())
        .unwrap_or_default();
    (host, resolved)
}

/// The unlabelled metric `name` on `base`'s `/metrics`, opened with `metrics_token` (0 while
/// nothing was counted, as Prometheus has it).
pub async fn metric(base: &str, metrics_token: &str, name: &str) -> f64 {
    let a = send(
        "GET",
        &format!("{base}/metrics"),
        &[("authorization", &format!("Bearer {metrics_token}"))],
        None,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    a.body
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// What `n` clients get whose connections were made, and whose requests (`GET path`, with the
/// test token, `Connection: close`) were sent, while the server (`base`, process `pid`) was
/// frozen, and which it then finds when it stops: each connection's answer up to its end, or
/// the error that ended it. The process is frozen (SIGSTOP) so that every connection waits
/// in its listen backlog or unread in its socket, then sent SIGTERM and continued (SIGCONT):
/// a graceful stop must answer them, not reset them. Blocking.
fn queued_at_a_stop(base: &str, pid: u32, path: &str, n: usize) -> Vec<Result<String, String>> {
    use std::io::{Read as _, Write as _};
    let addr = base.trim_start_matches("http://").to_owned();
    let kill = |signal: &str| {
        let sent = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status();
        assert!(sent.is_ok_and(|s| s.success()), "kill {signal} {pid}");
    };
    kill("-STOP");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {APP_TOKEN}\r\nConnection: close\r\n\r\n"
    );
    let streams: Vec<std::net::TcpStream> = (0..n)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(&addr).expect("connect (backlog)");
            s.write_all(request.as_bytes()).expect("send");
            s.set_read_timeout(Some(std::time::Duration::from_secs(15)))
                .expect("timeout");
            s
        })
        .collect();
    kill("-TERM");
    kill("-CONT");
    streams
        .into_iter()
        .map(|mut s| {
            let mut answer = Vec::new();
            match s.read_to_end(&mut answer) {
                Ok(_) if !answer.is_empty() => Ok(String::from_utf8_lossy(&answer).into_owned()),
                Ok(_) => Err("closed without an answer".to_owned()),
                Err(e) => Err(e.to_string()),
            }
        })
        .collect()
}

/// Asserts that `server`, stopped with SIGTERM while twelve clients' `GET url` waited for it
/// ([`queued_at_a_stop`]), answers each of them `200` and then exits `0`.
pub async fn answers_what_is_queued_at_a_stop(server: &mut super::Server, url: &str) {
    const CLIENTS: usize = 12;
    let path = url.trim_start_matches(&server.base).to_owned();
    let (base, pid) = (server.base.clone(), server.pid());
    let answers = tokio::task::spawn_blocking(move || queued_at_a_stop(&base, pid, &path, CLIENTS))
        .await
        .expect("clients");
    let cut: Vec<_> = answers.iter().filter(|a| a.is_err()).collect();
    assert!(cut.is_empty(), "{} of {CLIENTS} cut: {cut:?}", cut.len());
    for a in answers.iter().flatten() {
        assert!(a.starts_with("HTTP/1.1 200"), "{a}");
    }
    let status = tokio::task::block_in_place(|| server.wait_exit(10));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

/// One HTTP/1.1 connection kept alive, written and read by hand (blocking): what the server
/// does to it (closes it, resets it) is seen, where a pooling client would quietly connect
/// again.
pub struct KeptAlive {
    stream: std::net::TcpStream,
    host: String,
}

impl KeptAlive {
    /// Connects to `base` (`http://host:port`).
    pub fn connect(base: &str) -> KeptAlive {
        let host = base.trim_start_matches("http://").to_owned();
        let stream = std::net::TcpStream::connect(&host).expect("connect");
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .expect("timeout");
        KeptAlive { stream, host }
    }

    /// `GET path` with the test token on this connection: the answer's head (status line and
    /// fields, lower-cased names) and body, or what ended the connection instead.
    pub fn get(&mut self, path: &str) -> Result<(String, String), String> {
        self.request("GET", path, "HTTP/1.1", &[], "")
    }

    /// `method path` in `version` with the test token, `fields` (`name: value` lines) and
    /// `body` (a `Content-Length` is added when it is not empty and `fields` name no
    /// `Transfer-Encoding`; with one, `body` is sent as given) on this connection: as
    /// [`KeptAlive::get`].
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        version: &str,
        fields: &[&str],
        body: &str,
    ) -> Result<(String, String), String> {
        use std::io::{Read as _, Write as _};
        let mut request = format!(
            "{method} {path} {version}\r\nHost: {}\r\nAuthorization: Bearer {APP_TOKEN}\r\n",
            self.host
        );
        for field in fields {
            request.push_str(field);
            request.push_str("\r\n");
        }
        let framed = fields
            .iter()
            .any(|f| f.to_ascii_lowercase().starts_with("transfer-encoding:"));
        if !body.is_empty() && !framed {
            request.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        request.push_str("\r\n");
        request.push_str(body);
        self.stream
            .write_all(request.as_bytes())
            .map_err(|e| e.to_string())?;
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(at) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(format!("closed after {} bytes", got.len())),
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(e.to_string()),
            }
        };
        let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| format!("no content-length: {head}"))?;
        while got.len() < head_end + length {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err("closed within the body".to_owned()),
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(e.to_string()),
            }
        }
        let body = String::from_utf8_lossy(&got[head_end..]).into_owned();
        Ok((head, body))
    }

    /// Whether the server has closed this connection (reads its end within 5 s).
    pub fn closed_by_server(&mut self) -> bool {
        use std::io::Read as _;
        let _ = self
            .stream
            .set_read_timeout(Some(std::time::Duration::from_secs(5)));
        matches!(self.stream.read(&mut [0u8; 1]), Ok(0))
    }
}

/// Sends a request as a proxy forwards one: `head` (the whole head, blank line included) to
/// `addr`, then `body` a piece of 32 KiB at a time, `pause` apart, as it would come from the
/// proxy's own client, and only then reads the answer, to the end (10 s at most). What
/// writing ended with (the first failure stops it) and what reading did.
pub async fn send_as_a_proxy(
    addr: &str,
    head: &str,
    body: &[u8],
    pause: std::time::Duration,
) -> (std::io::Result<()>, std::io::Result<Vec<u8>>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut sent = conn.write_all(head.as_bytes()).await;
    for piece in body.chunks(32 * 1024) {
        if sent.is_err() {
            break;
        }
        sent = conn.write_all(piece).await;
        tokio::time::sleep(pause).await;
    }
    let mut got = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        conn.read_to_end(&mut got),
    )
    .await
    .expect("the server closes");
    (sent, read.map(|_| got))
}
