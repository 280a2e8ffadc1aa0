//! Kept-alive HTTP/1.1 connections per callback endpoint, shared by every subscription that
//! delivers there (issue 13 item 5): a delivery takes an idle connection of its endpoint or
//! opens one, and gives it back once the answer is read, instead of a client (and a pool) per
//! subscription rebuilt every minute. The POST is written with hyper's connection API directly:
//! the profile put about a quarter of the server's CPU in the general-purpose client's work
//! per request (URL to URI conversion, pool bookkeeping, middleware layers).
//!
//! An endpoint is a URL's origin (scheme, host, port). Its connections are opened only to the
//! addresses [`resolve_checked`] returned for the host and the callback policy allowed: **every
//! connection a delivery opens or reuses goes to an address that was checked** (no second DNS
//! lookup, so no rebinding; no proxy; redirects are answers like any other, not followed).
//! The addresses are checked again after [`PIN_FOR`] and before the next attempt after a
//! failed one: the same answer keeps the idle connections; a different one drops them (and
//! connections in use are not taken back); a refused or unresolvable one drops the endpoint.
//!
//! Bounds: at most [`MAX_ENDPOINTS`] endpoints (the least recently used goes first, with its
//! connections), each keeping at most [`MAX_IDLE_PER_ENDPOINT`] idle connections; an idle one
//! older than [`IDLE_FOR`] is closed instead of used. Connections in use are bounded by the
//! delivery tasks (one attempt in flight per subscription). An answer's body is read (to keep
//! the connection) up to [`MAX_ANSWER_BYTES`]; a longer one closes the connection.
//!
//! `http` and `https`: an `https` connection is TLS (rustls) over the same pinned TCP
//! connection, the certificate checked against the URL's host name (SNI) and the roots of
//! `crate::tls::callback_client_config` (Mozilla's, plus `NETAPI_CHAT_CALLBACK_CA_FILE`); a
//! certificate that does not verify fails the attempt like an unreachable receiver. HTTP/1.1
//! only (ALPN offers `http/1.1`): one request in flight per subscription leaves nothing for
//! HTTP/2's multiplexing to win, and HTTP/2 by prior knowledge would fail every delivery to the
//! many receivers that only speak HTTP/1.1.

use crate::callback_guard::{CallbackPolicy, resolve_checked};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// How long a checked DNS answer is used before the host is resolved and checked again.
pub const PIN_FOR: Duration = Duration::from_secs(60);

/// Most endpoints with connections at once; past it the least recently used one is dropped.
pub const MAX_ENDPOINTS: usize = 512;

/// Most idle kept-alive connections per endpoint (so at most 1,024 idle sockets in all).
pub const MAX_IDLE_PER_ENDPOINT: usize = 2;

/// An idle connection older than this is closed rather than used (receivers close theirs
/// after 5–75 s; using one they are closing would fail the attempt).
pub const IDLE_FOR: Duration = Duration::from_secs(4);

/// Most bytes of an answer's body read to keep its connection; past it the connection is
/// closed (receivers answer notifications with empty or tiny bodies).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// A URL's origin: what connections are shared by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    /// The origin of `url`, if it has a host and a port.
    pub fn of(url: &reqwest::Url) -> Option<Origin> {
        Some(Origin {
            scheme: url.scheme().to_owned(),
            host: url.host_str()?.to_owned(),
            port: url.port_or_known_default()?,
        })
    }
}

/// A callback URL made ready for requests once per delivery task.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// The URL, for the callback policy.
    pub url: reqwest::Url,
    /// Its origin.
    pub origin: Origin,
    /// The request target (path and query).
    target: http::Uri,
    /// The `Host` header.
    host: http::HeaderValue,
    /// For `https`: the name its certificate must hold (SNI); `None` for `http`.
    tls_name: Option<rustls::pki_types::ServerName<'static>>,
}

impl Endpoint {
    /// The endpoint of a callback URL, or why it cannot be delivered to.
    pub fn parse(notify_url: &str) -> Result<Endpoint, String> {
        let url = reqwest::Url::parse(notify_url).map_err(|e| e.to_string())?;
        let tls_name = match url.scheme() {
            "http" => None,
            "https" => Some(tls_name(&url)?),
            other => {
                return Err(format!(
                    "{other} callbacks are not supported (http or https)"
                ));
            }
        };
        let origin = Origin::of(&url).ok_or_else(|| "the callback URL has no host".to_owned())?;
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let target = path.parse::<http::Uri>().map_err(|e| e.to_string())?;
        let host = match url.port() {
            Some(p) => format!("{}:{p}", origin.host),
            None => origin.host.clone(),
        };
        let host = http::HeaderValue::from_str(&host).map_err(|e| e.to_string())?;
        Ok(Endpoint {
            url,
            origin,
            target,
            host,
            tls_name,
        })
    }
}

/// The name an `https` URL's certificate must hold: its DNS name, or its IP address.
fn tls_name(url: &reqwest::Url) -> Result<rustls::pki_types::ServerName<'static>, String> {
    use rustls::pki_types::ServerName;
    let host = url
        .host_str()
        .ok_or_else(|| "the callback URL has no host".to_owned())?;
    // An IPv6 literal is written in brackets in a URL, not in a certificate.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => Ok(ServerName::IpAddress(ip.into())),
        Err(_) => ServerName::try_from(host.to_owned())
            .map_err(|e| format!("{host} is not a name a certificate can hold: {e}")),
    }
}

/// Why a POST got no answer (the text is for the operator's log).
#[derive(Debug)]
pub enum Failure {
    /// The host is refused by the callback policy, or does not resolve.
    Refused(String),
    /// No connection, or no (whole) answer in time.
    Unreachable(String),
}

/// What a callback answered: its status and `Retry-After`.
#[derive(Debug)]
pub struct Answer {
    /// The status.
    pub status: http::StatusCode,
    /// Its `Retry-After` header, if any.
    pub retry_after: Option<http::HeaderValue>,
}

type Sender = SendRequest<Full<Bytes>>;

struct Entry {
    addrs: Vec<SocketAddr>,
    checked_at: Instant,
    /// Set after a failed attempt: check the addresses again before the next one.
    stale: bool,
    used: Instant,
    /// Bumped when the addresses change: connections of an earlier one are not taken back.
    generation: u64,
    idle: Vec<(Sender, Instant)>,
}

/// The connections, by endpoint; cheap to clone.
#[derive(Clone)]
pub struct Endpoints {
    map: Arc<Mutex<HashMap<Origin, Entry>>>,
    /// What `https` connections trust.
    tls: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoints").finish_non_exhaustive()
    }
}

/// Whether addresses checked at `checked_at` (and `stale` or not) may still be used at `now`.
pub fn usable(checked_at: Instant, stale: bool, now: Instant) -> bool {
    !stale && now.saturating_duration_since(checked_at) < PIN_FOR
}

/// A connection in use, and where it goes back.
struct Conn {
    sender: Sender,
    generation: u64,
    reused: bool,
}

impl Endpoints {
    /// No connections yet; `https` ones made with `tls`.
    pub fn new(tls: Arc<rustls::ClientConfig>) -> Endpoints {
        Endpoints {
            map: Arc::default(),
            tls: tokio_rustls::TlsConnector::from(tls),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Origin, Entry>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// POSTs `body` with `headers` to the endpoint over a kept-alive connection (or a new
    /// one), within `timeout`. The error is for the operator's log.
    pub async fn post(
        &self,
        ep: &Endpoint,
        policy: &CallbackPolicy,
        headers: http::HeaderMap,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Answer, Failure> {
        let exchange = async {
            let conn = self.checkout(ep, policy).await?;
            match self.exchange(ep, conn, headers.clone(), body.clone()).await {
                // A kept-alive connection the receiver closed meanwhile: once more on a new
                // one (the receiver may see it twice, with the same `webhook-id`).
                Err((e, true)) => {
                    let conn = self.connect(ep, policy).await?;
                    self.exchange(ep, conn, headers, body)
                        .await
                        .map_err(|(again, _)| {
                            Failure::Unreachable(format!("{e}; on a new connection: {again}"))
                        })
                }
                other => other.map_err(|(e, _)| Failure::Unreachable(e)),
            }
        };
        tokio::time::timeout(timeout, exchange).await.map_err(|_| {
            Failure::Unreachable(format!("no answer within {} ms", timeout.as_millis()))
        })?
    }

    /// One request and its answer on `conn`; the connection goes back to the pool when the
    /// answer was read whole. On error: whether the connection was a reused one.
    async fn exchange(
        &self,
        ep: &Endpoint,
        mut conn: Conn,
        headers: http::HeaderMap,
        body: Bytes,
    ) -> Result<Answer, (String, bool)> {
        let mut request = http::Request::new(Full::new(body));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = ep.target.clone();
        *request.headers_mut() = headers;
        request
            .headers_mut()
            .insert(http::header::HOST, ep.host.clone());
        let response = match conn.sender.send_request(request).await {
            Ok(r) => r,
            Err(e) => return Err((e.to_string(), conn.reused)),
        };
        let status = response.status();
        let retry_after = response.headers().get(http::header::RETRY_AFTER).cloned();
        // Read to the end (bounded) so the connection can carry the next request.
        let whole = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .is_ok();
        if whole {
            self.checkin(&ep.origin, conn);
        }
        Ok(Answer {
            status,
            retry_after,
        })
    }

    /// An idle connection to the endpoint while its addresses are fresh, else a new one.
    async fn checkout(&self, ep: &Endpoint, policy: &CallbackPolicy) -> Result<Conn, Failure> {
        let now = Instant::now();
        let mut idle = Vec::new();
        let mut generation = 0;
        if let Some(e) = self.lock().get_mut(&ep.origin)
            && usable(e.checked_at, e.stale, now)
        {
            e.used = now;
            generation = e.generation;
            idle = std::mem::take(&mut e.idle);
        }
        // Newest first; the rest go back.
        let mut found = None;
        while let Some((mut sender, since)) = idle.pop() {
            if now.saturating_duration_since(since) < IDLE_FOR
                && !sender.is_closed()
                && sender.ready().await.is_ok()
            {
                found = Some(sender);
                break;
            }
        }
        if !idle.is_empty()
            && let Some(e) = self.lock().get_mut(&ep.origin)
            && e.generation == generation
        {
            // Older than the check-ins made while this one looked: in front of them, and the
            // oldest go past the bound.
            idle.append(&mut e.idle);
            let excess = idle.len().saturating_sub(MAX_IDLE_PER_ENDPOINT);
            idle.drain(..excess);
            e.idle = idle;
        }
        match found {
            Some(sender) => Ok(Conn {
                sender,
                generation,
                reused: true,
            }),
            None => self.connect(ep, policy).await,
        }
    }

    /// A new connection to one of the endpoint's checked addresses (checked again first when
    /// they are not fresh).
    async fn connect(&self, ep: &Endpoint, policy: &CallbackPolicy) -> Result<Conn, Failure> {
        let (addrs, generation) = self.addresses(ep, policy).await.map_err(Failure::Refused)?;
        let mut last = String::from("no address");
        for addr in addrs {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(tcp) => {
                    let _ = tcp.set_nodelay(true);
                    let sender = match &ep.tls_name {
                        None => http1(tcp).await?,
                        Some(name) => {
                            let tls =
                                self.tls.connect(name.clone(), tcp).await.map_err(|e| {
                                    Failure::Unreachable(format!("{addr}: TLS: {e}"))
                                })?;
                            http1(tls).await?
                        }
                    };
                    return Ok(Conn {
                        sender,
                        generation,
                        reused: false,
                    });
                }
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        Err(Failure::Unreachable(last))
    }

    /// The endpoint's checked addresses and their generation: the ones in force while fresh,
    /// else resolved and checked again.
    async fn addresses(
        &self,
        ep: &Endpoint,
        policy: &CallbackPolicy,
    ) -> Result<(Vec<SocketAddr>, u64), String> {
        let now = Instant::now();
        if let Some(e) = self.lock().get_mut(&ep.origin)
            && usable(e.checked_at, e.stale, now)
        {
            e.used = now;
            return Ok((e.addrs.clone(), e.generation));
        }
        let checked =
            tokio::time::timeout(Duration::from_secs(5), resolve_checked(&ep.url, policy))
                .await
                .map_err(|_| "resolving the callback host timed out".to_owned())
                .and_then(|r| r.map_err(|e| e.detail().to_string()));
        let mut addrs = match checked {
            Ok(a) => a,
            Err(e) => {
                // Nothing goes to the old addresses any more.
                self.lock().remove(&ep.origin);
                return Err(e);
            }
        };
        addrs.sort();
        let now = Instant::now();
        let mut map = self.lock();
        if let Some(e) = map.get_mut(&ep.origin) {
            if e.addrs != addrs {
                e.addrs = addrs.clone();
                e.generation += 1;
                e.idle.clear();
            }
            (e.checked_at, e.stale, e.used) = (now, false, now);
            return Ok((addrs, e.generation));
        }
        if map.len() >= MAX_ENDPOINTS {
            let oldest = map
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(o, _)| o.clone());
            if let Some(o) = oldest {
                map.remove(&o);
            }
        }
        map.insert(
            ep.origin.clone(),
            Entry {
                addrs: addrs.clone(),
                checked_at: now,
                stale: false,
                used: now,
                generation: 0,
                idle: Vec::new(),
            },
        );
        Ok((addrs, 0))
    }

    /// Gives a connection back after a whole answer, if its endpoint still has the addresses
    /// it was opened to and room for it.
    fn checkin(&self, origin: &Origin, conn: Conn) {
        if conn.sender.is_closed() {
            return;
        }
        let mut map = self.lock();
        if let Some(e) = map.get_mut(origin)
            && e.generation == conn.generation
            && e.idle.len() < MAX_IDLE_PER_ENDPOINT
        {
            e.idle.push((conn.sender, Instant::now()));
        }
    }

    /// An attempt at `origin` failed: its host is resolved and checked again before the next
    /// attempt (the same answer keeps the connections).
    pub fn failed(&self, origin: &Origin) {
        if let Some(e) = self.lock().get_mut(origin) {
            e.stale = true;
        }
    }
}

/// An HTTP/1.1 connection over `io`, its driver spawned (it ends when the receiver closes or
/// the sender is dropped).
async fn http1<T>(io: T) -> Result<Sender, Failure>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| Failure::Unreachable(e.to_string()))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checked_answer_is_used_for_a_minute_unless_an_attempt_failed() {
        let t = Instant::now();
        assert!(usable(t, false, t));
        assert!(usable(t, false, t + PIN_FOR - Duration::from_millis(1)));
        assert!(!usable(t, false, t + PIN_FOR));
        assert!(!usable(t, true, t));
    }

    #[test]
    fn endpoints_are_origins() {
        let a = reqwest::Url::parse("http://example.com/a").unwrap();
        let b = reqwest::Url::parse("http://example.com:80/b?x=1").unwrap();
        let c = reqwest::Url::parse("http://example.com:8080/a").unwrap();
        let d = reqwest::Url::parse("https://example.com/a").unwrap();
        assert_eq!(Origin::of(&a), Origin::of(&b));
        assert_ne!(Origin::of(&a), Origin::of(&c));
        assert_ne!(Origin::of(&a), Origin::of(&d));
    }

    #[test]
    fn an_endpoint_carries_its_request_target_and_host_header() {
        let e = Endpoint::parse("http://example.com:8080/hooks/chat?app=1").unwrap();
        assert_eq!(e.target, "/hooks/chat?app=1");
        assert_eq!(e.host, "example.com:8080");
        let e = Endpoint::parse("http://[2001:db8::1]/").unwrap();
        assert_eq!(e.target, "/");
        assert_eq!(e.host, "[2001:db8::1]");
        let e = Endpoint::parse("http://example.com").unwrap();
        assert_eq!(e.target, "/");
        assert_eq!(e.host, "example.com");
        let e = Endpoint::parse("https://example.com:8443/cb").unwrap();
        assert_eq!(e.host, "example.com:8443");
        assert!(e.tls_name.is_some());
        assert!(
            Endpoint::parse("http://example.com/")
                .unwrap()
                .tls_name
                .is_none()
        );
        assert!(
            Endpoint::parse("https://[2001:db8::1]/")
                .unwrap()
                .tls_name
                .is_some()
        );
        assert!(Endpoint::parse("ftp://example.com/").is_err());
        assert!(Endpoint::parse("not a url").is_err());
    }
}
