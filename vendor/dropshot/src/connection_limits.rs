// Copyright 2026 netapi-chat authors; Apache-2.0, as the rest of dropshot.
//
// Not part of upstream dropshot 0.18.0: see PATCHES.md at the crate root.

//! Connection limits for the accept loop: a cap on open connections that sheds
//! the connection idle the longest when reached, an idle timeout for keep-alive
//! connections (hyper 1 has none for HTTP/1), and waiting for a connection to
//! close instead of retrying `accept` every 100 ms when the process is out of
//! file descriptors.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};

/// Limits on the connections a server keeps open.
///
/// The default keeps upstream behaviour: no cap, no idle timeout and hyper's
/// 30 s header read timeout.
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    /// Most connections open at once. When reached, the connection that has
    /// been idle (no request in flight) the longest is closed to make room;
    /// when none is idle, new connections wait in the listen backlog until
    /// one closes.
    pub max_connections: Option<usize>,
    /// A connection with no request in flight for this long is closed
    /// (including a connection that never sent a request).
    pub idle_timeout: Option<Duration>,
    /// Time a client has to send a complete request head once it has started
    /// one (HTTP/1; hyper's `header_read_timeout`). `None` disables it.
    pub header_read_timeout: Option<Duration>,
    /// Most bytes of a connection's read buffer (HTTP/1; hyper's `max_buf_size`, at least
    /// 8192): a request head that does not fit is answered `431` by hyper and the connection
    /// closed. `None` keeps hyper's default (about 400 KiB).
    pub read_buffer_bytes: Option<usize>,
    /// Whether HTTP/2 streams are served (on a TLS port only if ALPN offers `h2`; on a plain
    /// port through prior knowledge, h2c). `false` announces `SETTINGS_MAX_CONCURRENT_STREAMS`
    /// 0: every stream an HTTP/2 client opens is refused, so nothing HTTP/1's limits do not
    /// cover (header timeout, read buffer) is served. Default `true`, as upstream.
    pub http2: bool,
    /// A connection whose writes have been blocked this long (the client does not read what
    /// it asked for) is closed at once, its answer cut. Slow readers that keep reading are not
    /// affected: each write that goes through starts the time again. `None` (default, as
    /// upstream): never.
    pub write_stall_timeout: Option<Duration>,
}

/// How long a connection asked to shut down (shed, idle too long, server closing) with no
/// request in flight and no bytes moving may take to close before it is dropped: hyper
/// closes an idle HTTP/1 connection at once, but an HTTP/2 one sends GOAWAY and waits for its
/// client, which may never answer, and an answer to a client that does not read is never
/// written (upstream waited for ever, and shed connections piled up past the cap). An answer
/// still being written to a client that reads goes on: its writes move bytes.
const SHUTDOWN_IDLE_WITHIN: Duration = Duration::from_secs(2);

/// How long a connection that has not begun its first request when the server closes is
/// still read, so that the request it was opened for is answered (hyper's HTTP/1 graceful
/// shutdown closes a connection with no request under way at once, also one whose request
/// is in the socket unread: its client saw a reset, not an answer; hyper#2730, #3808). A
/// client that connected sends its request within a round trip; one that sends nothing
/// holds the close this long at most.
pub const FIRST_REQUEST_WITHIN: Duration = Duration::from_secs(1);

/// How long a closed connection is still read, its bytes thrown away, before its socket is
/// closed ([`linger`]): a lingering close (RFC 9112 §9.6). A request refused before its body
/// was read (`401`, `413`, `429`) is answered and the connection closed while its client (or
/// the proxy in front: nginx, haproxy, a standby) is still sending the body; closed with
/// unread bytes, the socket is reset, and the reset reaches the client before or instead of
/// the answer: nginx answered its client `502` and marked the instance failed, haproxy cut
/// the connection without an answer, a standby answered `503` (an outside review).
/// Read this long at most, the client's FIN (after it read the answer) ends it sooner.
pub const LINGER_FOR: Duration = Duration::from_secs(2);

/// Most bytes a lingering close reads ([`LINGER_FOR`]); a body still coming past this is cut
/// by a reset as before.
pub const LINGER_BYTES: usize = 16 << 20;

/// Most connections lingering at once per server without `max_connections`; with it, they
/// linger while less than half the cap is taken ([`linger`]).
pub const LINGERING_WITHOUT_A_CAP: usize = 1024;

/// How long a client at the cap waits for the connection shed for it to close before another
/// is shed ([`Tracker::make_room`]).
const SHED_PACE: Duration = Duration::from_millis(100);

/// Most connections being shed at once: each keeps counting against the cap until it has
/// closed, so the next client waits for one of these rather than shedding every idle
/// connection for itself.
const SHEDDING_AT_ONCE: usize = 16;

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: None,
            idle_timeout: None,
            header_read_timeout: Some(Duration::from_secs(30)),
            read_buffer_bytes: None,
            http2: true,
            write_stall_timeout: None,
        }
    }
}

/// One open connection, as the tracker sees it.
#[derive(Debug)]
pub struct ConnState {
    in_flight: AtomicUsize,
    idle_since: Mutex<Instant>,
    shed: AtomicBool,
    wake: Notify,
    /// When the connection was registered: the origin of the two times below, which are
    /// atomics (milliseconds since then) because [`Watched`] sets them on every read and
    /// write.
    born: Instant,
    /// Since when the connection's writes have been blocked (the socket's send buffer full),
    /// as milliseconds since `born` plus one; 0 while they are not.
    write_blocked_ms: AtomicU64,
    /// Rung when writes become blocked, so [`drive`] starts the stall timer.
    blocked: Notify,
    /// When bytes last moved on the socket, either way, as milliseconds since `born`.
    last_io_ms: AtomicU64,
    /// When a write last went through, as milliseconds since `born`: what keeps a shed
    /// connection open ([`drive`]), where reads do not.
    last_write_ms: AtomicU64,
    /// Set when its first request began ([`ConnState::begin_request`]): a connection
    /// without one when the server closes gets [`FIRST_REQUEST_WITHIN`] for it.
    begun: AtomicBool,
    /// HTTP is over on it ([`drive`] returned) while its socket is still open: a WebSocket
    /// (or other upgrade) took it over. It still counts against the cap (its
    /// [`Watched`] holds the registration) but is never picked for shedding: nothing would
    /// act on the request to go.
    http_over: AtomicBool,
    /// Its last answer may have left the request's body unread ([`ConnState::answered`]):
    /// only then does its socket close lingering ([`linger`]).
    body_may_be_unread: AtomicBool,
}

impl ConnState {
    /// Records how the connection's last request ended: whether it `had_body` and the
    /// `status` it was answered with (`None`: it failed without an answer). The rule is here,
    /// once, for every caller: a request refused with a body (an error status, or none) may
    /// have left that body unread (a handler that succeeds has read its body, an early
    /// refusal such as `401` or `413` has not). Only a socket whose last answer may have left
    /// a body unread closes lingering: one closed idle (its idle timeout, a server's stop)
    /// closes at once, as before, so that a request written into it as it closes is reset
    /// (its client knows it was not read and may send it again) rather than read and thrown
    /// away (a standby then had to answer `503`: it might have been carried out).
    pub fn answered(&self, had_body: bool, status: Option<http::StatusCode>) {
        let refused =
            status.map_or(true, |s| s.is_client_error() || s.is_server_error());
        self.body_may_be_unread.store(had_body && refused, Ordering::SeqCst);
    }

    /// Marks a request as in flight until the returned guard is dropped.
    pub fn begin_request(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        if !self.begun.load(Ordering::Relaxed) {
            self.begun.store(true, Ordering::Relaxed);
        }
        RequestGuard(Arc::clone(self))
    }

    /// Marks the connection busy (not idle, so neither shed nor timed out) while its TLS
    /// handshake runs, until the guard is dropped; unlike [`ConnState::begin_request`] it is
    /// not its first request, which a close still waits for ([`FIRST_REQUEST_WITHIN`]).
    pub fn begin_handshake(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        RequestGuard(Arc::clone(self))
    }

    /// Milliseconds since `born`.
    fn now_ms(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Since when writes have been blocked, if they are.
    fn write_blocked(&self) -> Option<Instant> {
        match self.write_blocked_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(self.born + Duration::from_millis(ms - 1)),
        }
    }

    /// When bytes last moved on the socket.
    fn last_io(&self) -> Instant {
        self.born + Duration::from_millis(self.last_io_ms.load(Ordering::Relaxed))
    }

    /// Bytes moved on the socket.
    fn moved(&self) {
        self.last_io_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// When a write last went through.
    fn last_write(&self) -> Instant {
        self.born + Duration::from_millis(self.last_write_ms.load(Ordering::Relaxed))
    }

    /// A write went through, or was refused by a full send buffer.
    fn wrote(&self, through: bool) {
        if through {
            // The common case, a write that goes through on a connection whose writes were
            // not blocked: one load.
            if self.write_blocked_ms.load(Ordering::Relaxed) != 0 {
                self.write_blocked_ms.store(0, Ordering::Relaxed);
            }
        } else if self
            .write_blocked_ms
            .compare_exchange(0, self.now_ms().saturating_add(1), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.blocked.notify_one();
        }
    }

    /// When the connection became idle, or `None` while a request is in
    /// flight.
    fn idle_since(&self) -> Option<Instant> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        Some(*self.idle_since.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Keeps a request counted as in flight on its connection.
pub struct RequestGuard(Arc<ConnState>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        *self.0.idle_since.lock().unwrap_or_else(|e| e.into_inner()) =
            Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Every open connection of a server.
#[derive(Debug)]
pub struct Tracker {
    conns: Mutex<(u64, HashMap<u64, Arc<ConnState>>)>,
    /// Open connections, those being shed included until they have closed
    /// (changed under the `conns` lock), so that the check before each accept
    /// is not a scan and the cap bounds open sockets.
    active: AtomicUsize,
    /// Connections asked to close to make room that have not closed yet.
    shedding: AtomicUsize,
    /// Closed connections still read before their sockets close ([`linger`]).
    lingering: AtomicUsize,
    /// Signalled (one permit) each time a connection closes.
    closed: Notify,
    pub(crate) limits: ConnectionLimits,
}

impl ConnGuard {
    /// The limits of the tracker this connection counts in.
    pub fn tracker_limits(&self) -> &ConnectionLimits {
        &self.registration.tracker.limits
    }

    /// HTTP is over on the connection: its socket is closed, or an upgrade
    /// took it over and holds the connection's place from now on. Such a
    /// socket is never shed, and stops counting as being shed if it was
    /// picked in the moment between its handshake's answer and the upgrade
    /// (else it would hold one of the [`SHEDDING_AT_ONCE`] places for as long
    /// as it lives).
    fn http_over(&self) {
        let tracker = &self.registration.tracker;
        let _g = tracker.lock();
        self.state.http_over.store(true, Ordering::SeqCst);
        if self.state.shed.swap(false, Ordering::SeqCst) {
            tracker.shedding.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// The connection's socket, watched for the write-stall timeout and
    /// holding the connection's place in the tracker: the connection counts
    /// against the cap until both this guard ([`drive`] returned) and the
    /// socket are gone, so a socket taken over by an upgrade (a WebSocket)
    /// counts until it closes.
    ///
    /// When the socket is dropped (the connection is over), it is closed by [`linger`].
    pub fn watch<S>(&self, io: S) -> Watched<S>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        Watched {
            io: Some(io),
            state: Arc::clone(&self.state),
            _open: Arc::clone(&self.registration),
            close: linger::<S>,
        }
    }
}

/// Keeps a connection counted by the tracker, as long as its guard or its
/// socket ([`Watched`]) lives.
struct Registration {
    tracker: Arc<Tracker>,
    id: u64,
    state: Arc<ConnState>,
}

/// A connection's place in the tracker while it is served
/// ([`Tracker::register`]); its socket holds the place too
/// ([`ConnGuard::watch`]).
pub struct ConnGuard {
    registration: Arc<Registration>,
    pub state: Arc<ConnState>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        {
            let mut g = self.tracker.lock();
            g.1.remove(&self.id);
            self.tracker.active.fetch_sub(1, Ordering::SeqCst);
            if self.state.shed.load(Ordering::SeqCst) {
                self.tracker.shedding.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.tracker.closed.notify_one();
    }
}

impl Tracker {
    pub fn new(limits: ConnectionLimits) -> Arc<Tracker> {
        Arc::new(Tracker {
            conns: Mutex::new((0, HashMap::new())),
            active: AtomicUsize::new(0),
            shedding: AtomicUsize::new(0),
            lingering: AtomicUsize::new(0),
            closed: Notify::new(),
            limits,
        })
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, (u64, HashMap<u64, Arc<ConnState>>)> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a newly accepted connection.
    pub fn register(self: &Arc<Self>) -> ConnGuard {
        let state = Arc::new(ConnState {
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            shed: AtomicBool::new(false),
            wake: Notify::new(),
            born: Instant::now(),
            write_blocked_ms: AtomicU64::new(0),
            blocked: Notify::new(),
            last_io_ms: AtomicU64::new(0),
            last_write_ms: AtomicU64::new(0),
            begun: AtomicBool::new(false),
            http_over: AtomicBool::new(false),
            body_may_be_unread: AtomicBool::new(false),
        });
        let mut g = self.lock();
        g.0 += 1;
        let id = g.0;
        g.1.insert(id, Arc::clone(&state));
        self.active.fetch_add(1, Ordering::SeqCst);
        let registration = Arc::new(Registration {
            tracker: Arc::clone(self),
            id,
            state: Arc::clone(&state),
        });
        ConnGuard { registration, state }
    }

    /// Whether one more connection fits under `max_connections` without shedding one.
    pub fn has_room(&self) -> bool {
        self.limits.max_connections.map_or(true, |max| self.active() < max)
    }

    /// Open connections, those being shed included.
    fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    /// Asks the connection idle the longest to close; false when none is
    /// idle.
    pub(crate) fn shed_oldest_idle(&self) -> bool {
        let g = self.lock();
        let oldest = g
            .1
            .values()
            .filter(|c| !c.shed.load(Ordering::SeqCst))
            .filter(|c| !c.http_over.load(Ordering::SeqCst))
            .filter_map(|c| c.idle_since().map(|t| (t, c)))
            .min_by_key(|(t, _)| *t);
        match oldest {
            Some((_, c)) => {
                c.shed.store(true, Ordering::SeqCst);
                self.shedding.fetch_add(1, Ordering::SeqCst);
                c.wake.notify_one();
                true
            }
            None => false,
        }
    }

    /// Waits for a connection to close, at most `limit`.
    pub(crate) async fn wait_for_close(&self, limit: Duration) {
        let _ = tokio::time::timeout(limit, self.closed.notified()).await;
    }

    /// Returns once there is room for one more connection under
    /// `max_connections`, shedding idle connections to make it.
    pub async fn make_room(&self) {
        let Some(max) = self.limits.max_connections else { return };
        while self.active() >= max {
            // A shed connection counts until it has closed: an idle HTTP/1
            // one closes at once, so one client sheds one connection; one that
            // lingers (an HTTP/2 client that ignores GOAWAY, a client that does
            // not read, within `SHUTDOWN_IDLE_WITHIN`) is given `SHED_PACE`
            // before another is shed, and at most `SHEDDING_AT_ONCE` are being
            // shed at a time (one client shed every idle connection otherwise).
            let shedding = self.shedding.load(Ordering::SeqCst);
            if shedding < SHEDDING_AT_ONCE && self.shed_oldest_idle() {
                self.wait_for_close(SHED_PACE).await;
            } else {
                self.wait_for_close(Duration::from_secs(1)).await;
            }
        }
    }

    /// Waits until every connection has closed.
    pub(crate) async fn wait_all_closed(&self) {
        while !self.lock().1.is_empty() {
            self.wait_for_close(Duration::from_millis(100)).await;
        }
    }
}

/// Drives one connection to its end: asks it to shut down gracefully (hyper
/// closes an idle connection at once and lets a request in flight finish) when
/// it is shed, idle for longer than the idle timeout, or the server closes; and
/// drops it at once when its writes have been blocked for the write stall
/// timeout. Once asked to shut down, a connection with no request in flight is
/// dropped if it has not closed within [`SHUTDOWN_IDLE_WITHIN`].
pub async fn drive<F>(
    conn: F,
    graceful_shutdown: impl Fn(Pin<&mut F>),
    guard: ConnGuard,
    mut closing: watch::Receiver<bool>,
) where
    F: Future,
{
    let idle_timeout = guard.tracker_limits().idle_timeout;
    let stall = guard.tracker_limits().write_stall_timeout;
    let state = Arc::clone(&guard.state);
    let mut conn = std::pin::pin!(conn);
    let mut closing_open = true;
    loop {
        if *closing.borrow() {
            break;
        }
        let deadline = idle_timeout.map(|t| match state.idle_since() {
            Some(since) => since + t,
            None => Instant::now() + t,
        });
        let stalled_at = stall.and_then(|t| state.write_blocked().map(|b| b + t));
        tokio::select! {
            _ = conn.as_mut() => {
                // Served to its end: closed, or taken over by an upgrade,
                // whose socket still holds the connection's place.
                guard.http_over();
                return;
            }
            _ = state.wake.notified() => break,
            // Writes became blocked: look again, with the stall timer running.
            _ = state.blocked.notified() => {}
            _ = sleep_until(stalled_at) => {
                if stalled(&state, stall) {
                    return;
                }
            }
            r = closing.changed(), if closing_open => {
                // The sender is gone only when the server task ended.
                if r.is_err() {
                    closing_open = false;
                }
            }
            _ = sleep_until(deadline) => {
                if let (Some(t), Some(since)) = (idle_timeout, state.idle_since()) {
                    if since.elapsed() >= t {
                        break;
                    }
                }
            }
        }
    }
    // Closing a connection that has not begun a request: its request, likely on its way or
    // already in the socket, is read first (no longer than `FIRST_REQUEST_WITHIN`, or the
    // header read timeout), and then the shutdown lets it finish.
    if *closing.borrow() && !state.begun.load(Ordering::Relaxed) {
        let within = guard
            .tracker_limits()
            .header_read_timeout
            .map_or(FIRST_REQUEST_WITHIN, |t| t.min(FIRST_REQUEST_WITHIN));
        let until = Instant::now() + within;
        while !state.begun.load(Ordering::Relaxed) && Instant::now() < until {
            tokio::select! {
                _ = conn.as_mut() => {
                    guard.http_over();
                    return;
                }
                _ = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
        }
    }
    graceful_shutdown(conn.as_mut());
    let asked = Instant::now();
    loop {
        let stalled_at = stall.and_then(|t| state.write_blocked().map(|b| b + t));
        // Counted from the request to shut down at the earliest, so that what it queued (a
        // GOAWAY) is written first. A connection shed for a new client at the cap, with no
        // request in flight, is kept by its writes only (an answer still going out): bytes
        // it reads, a request head trickled in and never finished, do not keep it, or a
        // client sending its head a byte at a time held its place against every new client
        // until the header read timeout (PATCHES.md item 27; an outside review: a new
        // client waited 15 s at a cap of 50 held by 200 such connections). A head finished
        // meanwhile is a request in flight, answered as any.
        let shed = state.shed.load(Ordering::SeqCst);
        let quiet_since = || match shed {
            true => state.last_write().max(asked),
            false => state.last_io().max(asked),
        };
        let idle_until = state
            .idle_since()
            .map(|_| quiet_since() + SHUTDOWN_IDLE_WITHIN);
        tokio::select! {
            _ = conn.as_mut() => {
                guard.http_over();
                break;
            }
            _ = state.blocked.notified() => {}
            _ = sleep_until(stalled_at) => {
                if stalled(&state, stall) {
                    break;
                }
            }
            _ = sleep_until(idle_until) => {
                // Blocked writes are an answer still going out (the handler has
                // returned, so the tracker calls it idle): after an idle
                // timeout or at the server's close the write-stall timeout
                // decides, so a slow reader is not cut; a connection shed for
                // a new client at the cap goes once nothing moves.
                if state.idle_since().is_some()
                    && (shed || state.write_blocked().is_none())
                    && quiet_since().elapsed() >= SHUTDOWN_IDLE_WITHIN
                {
                    break;
                }
            }
            // A request in flight finishing makes the connection idle: look again.
            _ = tokio::time::sleep(SHUTDOWN_IDLE_WITHIN) => {}
        }
    }
    drop(guard);
}

/// Sleeps until `at`, or for ever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Whether the connection's writes have been blocked for `stall` or longer.
fn stalled(state: &ConnState, stall: Option<Duration>) -> bool {
    matches!((stall, state.write_blocked()), (Some(t), Some(b)) if b.elapsed() >= t)
}

/// A connection's socket, telling its [`ConnState`] whether its writes go
/// through ([`ConnectionLimits::write_stall_timeout`]).
pub struct Watched<S> {
    /// `None` only once dropped.
    io: Option<S>,
    state: Arc<ConnState>,
    /// The connection's place in the tracker ([`ConnGuard::watch`]).
    _open: Arc<Registration>,
    /// How the socket is closed when dropped ([`linger`], for the type it was made with).
    close: fn(S, &Arc<Tracker>),
}

impl<S> Watched<S> {
    /// The socket; an error once dropped (never: only `Drop` takes it).
    fn io(self: Pin<&mut Self>) -> std::io::Result<Pin<&mut S>>
    where
        S: Unpin,
    {
        match self.get_mut().io.as_mut() {
            Some(io) => Ok(Pin::new(io)),
            None => Err(std::io::Error::from(std::io::ErrorKind::NotConnected)),
        }
    }
}

impl<S> Drop for Watched<S> {
    fn drop(&mut self) {
        if let Some(io) = self.io.take()
            && self.state.body_may_be_unread.load(Ordering::SeqCst)
        {
            (self.close)(io, &self._open.tracker);
        }
    }
}

/// Closes a connection's socket the lingering way ([`LINGER_FOR`]): its write side is shut
/// down (the client reads the end of the answer), and what the client still sends is read
/// and thrown away until it closes its side, [`LINGER_BYTES`] were read or [`LINGER_FOR`]
/// passed; only then is the socket closed. A lingering socket still counts against
/// `max_connections` (the cap bounds open sockets), but not as a connection a server's close
/// waits for. Closed at once instead when half the cap is taken (a flood keeps its
/// behaviour: no socket outlives its connection; without a cap, when
/// [`LINGERING_WITHOUT_A_CAP`] already linger), or when there is no runtime to run on.
/// The bound is the cap's, not a small number of its own: a small one was a shared pool an
/// anonymous client filled by trickling bodies after their `401`s (300 connections through
/// haproxy), and every other client's refusal was reset again (an outside review).
fn linger<S>(mut io: S, tracker: &Arc<Tracker>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    // Counted before it is known to fit, so that two closing at once cannot both pass.
    let place = Lingering::new(tracker);
    let fits = match tracker.limits.max_connections {
        Some(max) => tracker.active() <= max / 2,
        None => tracker.lingering.load(Ordering::SeqCst) <= LINGERING_WITHOUT_A_CAP,
    };
    if !fits {
        return;
    }
    runtime.spawn(async move {
        let _ = tokio::time::timeout(LINGER_FOR, async {
            let _ = io.shutdown().await;
            // Small: up to half the cap may linger, each with its own.
            let mut buf = [0u8; 2048];
            let mut read = 0usize;
            while read < LINGER_BYTES {
                match io.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => read += n,
                }
            }
        })
        .await;
        drop(io);
        drop(place);
    });
}

/// A lingering socket's place: counted in the tracker's open sockets (`active`) and its
/// lingering ones until dropped, which also wakes a client waiting for room.
struct Lingering(Arc<Tracker>);

impl Lingering {
    fn new(tracker: &Arc<Tracker>) -> Lingering {
        tracker.active.fetch_add(1, Ordering::SeqCst);
        tracker.lingering.fetch_add(1, Ordering::SeqCst);
        Lingering(Arc::clone(tracker))
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        self.0.lingering.fetch_sub(1, Ordering::SeqCst);
        self.0.active.fetch_sub(1, Ordering::SeqCst);
        self.0.closed.notify_one();
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = match self.as_mut().io() {
            Ok(io) => io.poll_read(cx, buf),
            Err(e) => std::task::Poll::Ready(Err(e)),
        };
        if matches!(r, std::task::Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.moved();
        }
        r
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = match self.as_mut().io() {
            Ok(io) => io.poll_write(cx, buf),
            Err(e) => std::task::Poll::Ready(Err(e)),
        };
        watch_write(&self.state, &r);
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = match self.as_mut().io() {
            Ok(io) => io.poll_write_vectored(cx, bufs),
            Err(e) => std::task::Poll::Ready(Err(e)),
        };
        watch_write(&self.state, &r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(|io| io.is_write_vectored())
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let r = match self.as_mut().io() {
            Ok(io) => io.poll_flush(cx),
            Err(e) => std::task::Poll::Ready(Err(e)),
        };
        match &r {
            std::task::Poll::Pending => self.state.wrote(false),
            std::task::Poll::Ready(Ok(())) => self.state.wrote(true),
            std::task::Poll::Ready(Err(_)) => {}
        }
        r
    }

    fn poll_shutdown(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.io() {
            Ok(io) => io.poll_shutdown(cx),
            Err(e) => std::task::Poll::Ready(Err(e)),
        }
    }
}

/// A write's outcome, for the stall timer: blocked (pending) or through.
fn watch_write(state: &ConnState, r: &std::task::Poll<std::io::Result<usize>>) {
    match r {
        std::task::Poll::Pending => state.wrote(false),
        std::task::Poll::Ready(Ok(n)) if *n > 0 => {
            state.wrote(true);
            state.moved();
            state.last_write_ms.store(state.now_ms(), Ordering::Relaxed);
        }
        std::task::Poll::Ready(_) => {}
    }
}

/// Takes the connections waiting in `listener`'s backlog at a graceful close
/// (PATCHES.md item 23), one at a time while `room()`, handing each to `serve`,
/// then drops the listener (which resets whatever is left: new clients are
/// refused from then on). It asks the kernel directly (the listener is taken
/// out of the reactor): a `now_or_never(accept())` sees only the connections
/// the reactor has already reported, and resets those that arrived since its
/// last turn.
pub fn take_backlog(
    listener: tokio::net::TcpListener,
    mut room: impl FnMut() -> bool,
    mut serve: impl FnMut(tokio::net::TcpStream, std::net::SocketAddr),
) {
    // Still non-blocking once out of the reactor: an empty backlog is `WouldBlock`.
    let Ok(listener) = listener.into_std() else { return };
    while room() {
        let Ok((stream, peer)) = listener.accept() else { break };
        if stream.set_nonblocking(true).is_err() {
            continue;
        }
        if let Ok(stream) = tokio::net::TcpStream::from_std(stream) {
            serve(stream, peer);
        }
    }
}

