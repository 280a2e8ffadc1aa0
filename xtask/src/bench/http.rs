//! A small keep-alive HTTP/1.1 client: one hyper connection to one loopback address, opened on
//! first use and again after an error. The load generator holds a bounded pool of these.

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::Duration;

/// A request body as the client sends it.
pub type Body = Full<Bytes>;

/// One answer, read whole.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// Response body.
    pub body: Bytes,
}

impl Reply {
    /// Whether the status is 2xx.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// A header as text, or "".
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The body as (lossy) text, for error messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "answer is not JSON (status {}): {}",
                self.status,
                self.text()
            )
        })
    }
}

/// One HTTP/1.1 connection with keep-alive, to one address.
pub struct Conn {
    addr: SocketAddr,
    host: HeaderValue,
    sender: Option<SendRequest<Body>>,
}

impl Conn {
    /// A connection to `addr`, opened on first use.
    pub fn new(addr: SocketAddr) -> Conn {
        let host = HeaderValue::from_str(&addr.to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("127.0.0.1"));
        Conn {
            addr,
            host,
            sender: None,
        }
    }

    async fn ready(&mut self) -> Result<&mut SendRequest<Body>> {
        if self.sender.as_ref().is_none_or(SendRequest::is_closed) {
            let stream = tokio::net::TcpStream::connect(self.addr)
                .await
                .with_context(|| format!("connecting to {}", self.addr))?;
            stream.set_nodelay(true)?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .context("HTTP handshake")?;
            // The connection task ends when the sender is dropped or the peer closes.
            tokio::spawn(conn);
            self.sender = Some(sender);
        }
        let sender = self
            .sender
            .as_mut()
            .ok_or_else(|| anyhow!("no connection"))?;
        sender.ready().await.context("connection not ready")?;
        Ok(sender)
    }

    /// Sends `req` and reads the whole answer, giving up after `timeout`. After any error the
    /// connection is dropped and the next call opens a new one.
    pub async fn send(&mut self, mut req: Request<Body>, timeout: Duration) -> Result<Reply> {
        req.headers_mut()
            .entry(header::HOST)
            .or_insert_with(|| self.host.clone());
        let attempt = async {
            let sender = self.ready().await?;
            let resp = sender.send_request(req).await.context("sending request")?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.context("reading answer")?.to_bytes();
            Ok::<_, anyhow::Error>(Reply {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                self.sender = None;
                Err(e)
            }
            Err(_) => {
                self.sender = None;
                Err(anyhow!("no answer within {timeout:?}"))
            }
        }
    }
}

/// Builds a request; `headers` are (name, value) pairs.
pub fn request(
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<Request<Body>> {
    let mut b = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(body.into()))
        .with_context(|| format!("building request for {path}"))
}

/// Percent-encodes everything but RFC 3986 unreserved characters (for path segments and query
/// values).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Parses the `http://ADDR` that a start-up line names.
pub fn addr_in_line(line: &str) -> Result<SocketAddr> {
    let url = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http://"))
        .ok_or_else(|| anyhow!("no http:// address in start-up line {line:?}"))?;
    let hostport = url.split('/').next().unwrap_or(url);
    hostport
        .parse()
        .with_context(|| format!("bad address {hostport:?} in start-up line {line:?}"))
}
