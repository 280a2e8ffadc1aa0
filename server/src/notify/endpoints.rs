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
//! connections); an idle connection older than [`IDLE_FOR`] is closed instead of used. **Open
//! connections (in use or idle) are at most [`Caps::per_endpoint`] per endpoint and
//! [`Caps::total`] in all**: each connection holds a permit of its endpoint's semaphore and
//! one of the total's from its opening until its socket is closed (the permits live in the
//! connection's driver task). A delivery takes an idle connection of its endpoint, else
//! permits to open one, else waits for either (outside its attempt's timeout: waiting is not
//! failing); at the total cap it closes the idle connection unused the longest, whatever its
//! endpoint, so idle connections never starve another endpoint. The idle pool keeps up to
//! `per_endpoint` connections per endpoint, so a burst's connections are reused by the next
//! one. Before these caps every subscription's attempt opened its own connection: one message
//! to a group of 100 users with 20 subscriptions each opened ~2,000 connections to one
//! receiver at once, exhausted the process's file descriptors and made the listener shed
//! client connections (outside review A3). An answer's status is its outcome; its body is
//! read (to keep the connection) up to [`MAX_ANSWER_BYTES`] and for [`ANSWER_BODY_WITHIN`]
//! after the head; a longer or slower one closes the connection.
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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// How long a checked DNS answer is used before the host is resolved and checked again.
pub const PIN_FOR: Duration = Duration::from_secs(60);

/// Most endpoints with connections at once; past it the least recently used one is dropped.
pub const MAX_ENDPOINTS: usize = 512;

/// The default of `NETAPI_CHAT_DELIVERY_CONNECTIONS_PER_ENDPOINT`: most connections open to
/// one callback endpoint at once. One request in flight per connection: 32 keep a receiver
/// answering in 1 ms at ~30,000 notifications a second, and no receiver is made to hold more.
pub const DEFAULT_PER_ENDPOINT: usize = 32;

/// The most `NETAPI_CHAT_DELIVERY_CONNECTIONS` derives from the open-files limit (an operator
/// who wants more sets it).
pub const DEFAULT_MAX_TOTAL: usize = 4096;

/// The most either cap may be set to: no process holds more sockets, and a tokio semaphore
/// takes at most 2⁶¹ permits.
pub const MAX_CAP: usize = 1_000_000;

/// Caps on the connections deliveries hold open, in use or idle (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    /// `NETAPI_CHAT_DELIVERY_CONNECTIONS_PER_ENDPOINT`: per endpoint (scheme, host, port);
    /// also the most idle ones an endpoint keeps.
    pub per_endpoint: usize,
    /// `NETAPI_CHAT_DELIVERY_CONNECTIONS`: over every endpoint.
    pub total: usize,
}

impl Default for Caps {
    fn default() -> Caps {
        Caps {
            per_endpoint: DEFAULT_PER_ENDPOINT,
            total: crate::config::file_shares(1024, false).deliveries,
        }
    }
}

/// What an open connection holds until its socket is closed: its share of both caps.
struct Permits {
    _endpoint: OwnedSemaphorePermit,
    _total: OwnedSemaphorePermit,
}

/// One endpoint's share of the connections: its semaphore and the bell a connection given
/// back rings for a delivery waiting for one.
struct Slots {
    sem: Arc<Semaphore>,
    returned: Notify,
    /// This endpoint's deliveries among [`Endpoints::waiting_for_total`].
    waiting_for_total: AtomicUsize,
}

/// How a delivery may talk to its endpoint: over an idle connection, or over a new one that
/// the permits allow.
enum Slot {
    Idle(Conn),
    Fresh(Permits),
}

/// An idle connection older than this is closed rather than used (receivers close theirs
/// after 5–75 s; using one they are closing would fail the attempt).
pub const IDLE_FOR: Duration = Duration::from_secs(4);

/// Most bytes of an answer's body read to keep its connection; past it the connection is
/// closed (receivers answer notifications with empty or tiny bodies).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Longest an answer's body is read after its head, to keep its connection
/// ([`Endpoints::keep`]): a receiver's answer body is a few bytes, sent with its head.
pub const ANSWER_BODY_WITHIN: Duration = Duration::from_secs(1);

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
        // A subscription stored before the port rule: no retry makes its port HTTP.
        if let Some(port) = url
            .port()
            .filter(|&p| crate::callback_guard::is_bad_port(p))
        {
            return Err(format!(
                "port {port} is not an HTTP port (Fetch's bad ports)"
            ));
        }
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
    /// The connection caps in force.
    caps: Caps,
    /// Permits of [`Caps::total`], one per open connection.
    total: Arc<Semaphore>,
    /// Rung when a connection goes idle: a delivery waiting for the total cap may then close
    /// the idle connection unused the longest.
    idle_bell: Arc<Notify>,
    /// Deliveries waiting for a permit of [`Caps::total`]: while any waits, a connection an
    /// answer gives back is closed instead of kept for its endpoint ([`Endpoints::checkin`]).
    waiting_for_total: Arc<AtomicUsize>,
    /// Each endpoint's share, kept apart from [`Entry`] (which goes with a DNS change or the
    /// least-recently-used rule while its connections may still be open); an endpoint's is
    /// dropped once nothing holds or waits for its permits ([`Endpoints::slots_of`]).
    slots: Arc<Mutex<HashMap<Origin, Arc<Slots>>>>,
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

/// Whether deliveries of other endpoints wait for the total cap: `all` wait, `own` of them
/// for the endpoint a connection is given back to ([`Endpoints::checkin`] closes it then).
fn others_wait(all: usize, own: usize) -> bool {
    all > own
}

/// Counts one delivery waiting for a permit of the total cap while it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn on(count: &'a AtomicUsize) -> Waiting<'a> {
        count.fetch_add(1, Ordering::SeqCst);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A connection in use, and where it goes back.
struct Conn {
    sender: Sender,
    generation: u64,
    reused: bool,
}

impl Endpoints {
    /// No connections yet; `https` ones made with `tls`, at most `caps` open.
    pub fn new(tls: Arc<rustls::ClientConfig>, caps: Caps) -> Endpoints {
        let caps = Caps {
            per_endpoint: caps.per_endpoint.clamp(1, MAX_CAP),
            total: caps.total.clamp(1, MAX_CAP),
        };
        Endpoints {
            map: Arc::default(),
            tls: tokio_rustls::TlsConnector::from(tls),
            caps,
            total: Arc::new(Semaphore::new(caps.total)),
            idle_bell: Arc::default(),
            waiting_for_total: Arc::default(),
            slots: Arc::default(),
        }
    }

    /// The share of `origin`'s connections. Endpoints whose permits nobody holds or waits for
    /// are forgotten once there are more than twice [`MAX_ENDPOINTS`], so the map is bounded
    /// by the endpoints with connections or deliveries under way.
    fn slots_of(&self, origin: &Origin) -> Arc<Slots> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = slots.get(origin) {
            return Arc::clone(s);
        }
        if slots.len() >= 2 * MAX_ENDPOINTS {
            slots.retain(|_, s| Arc::strong_count(s) > 1 || Arc::strong_count(&s.sem) > 1);
        }
        let s = Arc::new(Slots {
            sem: Arc::new(Semaphore::new(self.caps.per_endpoint)),
            returned: Notify::new(),
            waiting_for_total: AtomicUsize::new(0),
        });
        slots.insert(origin.clone(), Arc::clone(&s));
        s
    }

    /// An idle connection of the endpoint, or permits for a new one, waiting for either while
    /// the endpoint (or every endpoint together) has as many open as its cap. The addresses
    /// are checked first when they are not fresh (the same answer keeps the idle ones).
    async fn slot(&self, ep: &Endpoint, policy: &CallbackPolicy) -> Result<Slot, Failure> {
        self.addresses(ep, policy).await.map_err(Failure::Refused)?;
        let slots = self.slots_of(&ep.origin);
        loop {
            let returned = slots.returned.notified();
            tokio::pin!(returned);
            returned.as_mut().enable();
            if let Some(conn) = self.take_idle(ep).await {
                return Ok(Slot::Idle(conn));
            }
            let endpoint = match Arc::clone(&slots.sem).try_acquire_owned() {
                Ok(p) => p,
                Err(_) => tokio::select! {
                    p = Arc::clone(&slots.sem).acquire_owned() => p.map_err(closed)?,
                    () = returned => continue,
                },
            };
            let total = self.total_permit(&slots).await?;
            return Ok(Slot::Fresh(Permits {
                _endpoint: endpoint,
                _total: total,
            }));
        }
    }

    /// A permit of the total cap; at the cap, the idle connection unused the longest is
    /// closed to make room (its permit comes back when its driver ends), else this waits for
    /// a connection to close or go idle.
    async fn total_permit(&self, slots: &Slots) -> Result<OwnedSemaphorePermit, Failure> {
        loop {
            let idle = self.idle_bell.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if let Ok(p) = Arc::clone(&self.total).try_acquire_owned() {
                return Ok(p);
            }
            self.close_oldest_idle();
            let _waiting = (
                Waiting::on(&self.waiting_for_total),
                Waiting::on(&slots.waiting_for_total),
            );
            tokio::select! {
                p = Arc::clone(&self.total).acquire_owned() => return p.map_err(closed),
                () = idle => {}
            }
        }
    }

    /// Closes the idle connection unused the longest, of any endpoint (dropping its sender
    /// ends its driver, which gives its permits back).
    fn close_oldest_idle(&self) {
        let mut map = self.lock();
        let oldest = map
            .iter()
            .filter_map(|(o, e)| e.idle.first().map(|(_, since)| (*since, o.clone())))
            .min_by_key(|(since, _)| *since)
            .map(|(_, o)| o);
        if let Some(e) = oldest.and_then(|o| map.get_mut(&o))
            && !e.idle.is_empty()
        {
            e.idle.remove(0);
        }
    }

    /// The newest idle connection of the endpoint that is still good, if any; the stale or
    /// closed ones met on the way are closed.
    async fn take_idle(&self, ep: &Endpoint) -> Option<Conn> {
        loop {
            let now = Instant::now();
            let (mut sender, since, generation) = {
                let mut map = self.lock();
                let e = map.get_mut(&ep.origin)?;
                let (sender, since) = e.idle.pop()?;
                e.used = now;
                (sender, since, e.generation)
            };
            if now.saturating_duration_since(since) < IDLE_FOR
                && !sender.is_closed()
                && sender.ready().await.is_ok()
            {
                return Some(Conn {
                    sender,
                    generation,
                    reused: true,
                });
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Origin, Entry>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// POSTs `body` with `headers` to the endpoint over a kept-alive connection (or a new
    /// one), within `timeout`; on failure the endpoint is marked [`Endpoints::failed`]. The
    /// error is for the operator's log.
    pub async fn post(
        &self,
        ep: &Endpoint,
        policy: &CallbackPolicy,
        headers: http::HeaderMap,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Answer, Failure> {
        // Waiting for a connection is not part of the attempt: a burst to one endpoint queues
        // here instead of failing its attempts.
        let slot = self.slot(ep, policy).await?;
        let exchange = async {
            let conn = match slot {
                Slot::Idle(conn) => conn,
                Slot::Fresh(permits) => self.connect(ep, policy, permits).await?,
            };
            match self.exchange(ep, conn, headers.clone(), body.clone()).await {
                // A kept-alive connection the receiver closed meanwhile: once more on a new
                // one (the receiver may see it twice, with the same `webhook-id`).
                Err((e, true)) => {
                    let conn = match self.slot(ep, policy).await? {
                        Slot::Idle(conn) => conn,
                        Slot::Fresh(permits) => self.connect(ep, policy, permits).await?,
                    };
                    self.exchange(ep, conn, headers, body)
                        .await
                        .map_err(|(again, _)| {
                            Failure::Unreachable(format!("{e}; on a new connection: {again}"))
                        })
                }
                other => other.map_err(|(e, _)| Failure::Unreachable(e)),
            }
        };
        let result = match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok((answer, conn, rest))) => {
                // The status is the outcome, now; a body still to come is read on a task of
                // its own (the connection it holds is within the caps), so a receiver that
                // trickles it delays neither this subscription's next attempt nor the
                // outcome (an attempt aborted meanwhile would have lost a 2xx: the code
                // review). An empty body, the common answer, is not worth a task.
                match hyper::body::Body::is_end_stream(&rest) {
                    true => self.checkin(&ep.origin, conn),
                    false => {
                        let pool = self.clone();
                        let origin = ep.origin.clone();
                        tokio::spawn(async move { pool.keep(&origin, conn, rest).await });
                    }
                }
                Ok(answer)
            }
            Ok(Err(failure)) => Err(failure),
            Err(_) => Err(Failure::Unreachable(format!(
                "no answer within {} ms",
                timeout.as_millis()
            ))),
        };
        // Only a failure to reach the endpoint puts its addresses in doubt (looked up again
        // before the next attempt); an HTTP answer, even a 500, came over a good connection,
        // and the endpoint's other subscriptions keep its kept-alive connections.
        if result.is_err() {
            self.failed(&ep.origin);
        }
        result
    }

    /// One request and its answer's head on `conn`, with the connection and the answer's body
    /// still to read ([`Endpoints::keep`]). On error: whether the connection was a reused one.
    async fn exchange(
        &self,
        ep: &Endpoint,
        mut conn: Conn,
        headers: http::HeaderMap,
        body: Bytes,
    ) -> Result<(Answer, Conn, hyper::body::Incoming), (String, bool)> {
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
        Ok((
            Answer {
                status,
                retry_after,
            },
            conn,
            response.into_body(),
        ))
    }

    /// Reads the rest of an answer, `rest` (at most [`MAX_ANSWER_BYTES`], within
    /// [`ANSWER_BODY_WITHIN`]), so that `conn` can carry the next request: back to the pool
    /// when read whole, else closed. The status was the answer: a receiver that trickles its
    /// body or never ends it costs its connection, not the delivery. (Read inside the
    /// attempt's timeout, such a `2xx` was a failure and retried: the notification review.)
    async fn keep(&self, origin: &Origin, conn: Conn, rest: hyper::body::Incoming) {
        let read = Limited::new(rest, MAX_ANSWER_BYTES).collect();
        if let Ok(Ok(_)) = tokio::time::timeout(ANSWER_BODY_WITHIN, read).await {
            self.checkin(origin, conn);
        }
    }

    /// A new connection to one of the endpoint's checked addresses (checked again first when
    /// they are not fresh).
    /// `permits` go with the connection, given back when it closes.
    async fn connect(
        &self,
        ep: &Endpoint,
        policy: &CallbackPolicy,
        permits: Permits,
    ) -> Result<Conn, Failure> {
        let (addrs, generation) = self.addresses(ep, policy).await.map_err(Failure::Refused)?;
        let mut last = String::from("no address");
        for addr in addrs {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(tcp) => {
                    let _ = tcp.set_nodelay(true);
                    let sender = match &ep.tls_name {
                        None => http1(tcp, permits).await?,
                        Some(name) => {
                            let tls =
                                self.tls.connect(name.clone(), tcp).await.map_err(|e| {
                                    Failure::Unreachable(format!("{addr}: TLS: {e}"))
                                })?;
                            http1(tls, permits).await?
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
    /// A delivery waiting for this endpoint's connections, else one waiting for the total
    /// cap, is told.
    ///
    /// While deliveries of other endpoints wait for the total cap, the connection is closed
    /// instead: kept, the endpoint's next attempt took it back at once, so endpoints whose
    /// receivers are slow held every connection of the cap between them while other
    /// endpoints' deliveries waited for one to close (the noisy-neighbour review of
    /// 2026-12-07: another application's notifications 12–41 s late behind receivers
    /// answering after 9 s). Closed, its permit goes to the longest waiter (the semaphore
    /// serves in order), and the endpoint's next attempt queues behind it. When only this
    /// endpoint's own deliveries wait, it is kept (they take it back: closing it would only
    /// cost a new connection, and a TLS handshake, per notification at the cap).
    fn checkin(&self, origin: &Origin, conn: Conn) {
        if conn.sender.is_closed() {
            return;
        }
        let slots = self
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(origin)
            .cloned();
        let own = slots
            .as_ref()
            .map_or(0, |s| s.waiting_for_total.load(Ordering::SeqCst));
        if others_wait(self.waiting_for_total.load(Ordering::SeqCst), own) {
            return;
        }
        {
            let mut map = self.lock();
            if let Some(e) = map.get_mut(origin)
                && e.generation == conn.generation
                && e.idle.len() < self.caps.per_endpoint
            {
                e.idle.push((conn.sender, Instant::now()));
            }
        }
        if let Some(s) = slots {
            s.returned.notify_one();
        }
        // One waiter: each closes an idle connection to make room, so waking every one let a
        // single connection going idle close as many good ones.
        self.idle_bell.notify_one();
    }

    /// An attempt at `origin` failed: its host is resolved and checked again before the next
    /// attempt (the same answer keeps the connections).
    fn failed(&self, origin: &Origin) {
        if let Some(e) = self.lock().get_mut(origin) {
            e.stale = true;
        }
    }
}

/// An HTTP/1.1 connection over `io`, its driver spawned (it ends when the receiver closes or
/// the sender is dropped); the driver holds `permits` until then, so they count the socket
/// for as long as it is open.
async fn http1<T>(io: T, permits: Permits) -> Result<Sender, Failure>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| Failure::Unreachable(e.to_string()))?;
    tokio::spawn(async move {
        let _ = connection.await;
        drop(permits);
    });
    Ok(sender)
}

/// A semaphore was closed (never: they live as long as the endpoints).
fn closed(_: tokio::sync::AcquireError) -> Failure {
    Failure::Unreachable("delivery connections are closed".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection given back at the total cap is closed for another endpoint's waiting
    /// delivery, kept when only its own endpoint's wait (or none).
    #[test]
    fn a_connection_is_closed_only_for_another_endpoints_waiter() {
        assert!(!others_wait(0, 0));
        assert!(!others_wait(3, 3));
        assert!(others_wait(1, 0));
        assert!(others_wait(4, 3));
    }

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
        // A port no retry makes HTTP (a subscription stored before the rule): undeliverable.
        assert!(Endpoint::parse("http://example.com:25/cb").is_err());
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
