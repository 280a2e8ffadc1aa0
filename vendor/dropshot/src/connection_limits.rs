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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: None,
            idle_timeout: None,
            header_read_timeout: Some(Duration::from_secs(30)),
            read_buffer_bytes: None,
            http2: true,
        }
    }
}

/// One open connection, as the tracker sees it.
#[derive(Debug)]
pub(crate) struct ConnState {
    in_flight: AtomicUsize,
    idle_since: Mutex<Instant>,
    shed: AtomicBool,
    wake: Notify,
}

impl ConnState {
    /// Marks a request as in flight until the returned guard is dropped.
    pub(crate) fn begin_request(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        RequestGuard(Arc::clone(self))
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
pub(crate) struct RequestGuard(Arc<ConnState>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        *self.0.idle_since.lock().unwrap_or_else(|e| e.into_inner()) =
            Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Every open connection of a server.
#[derive(Debug)]
pub(crate) struct Tracker {
    conns: Mutex<(u64, HashMap<u64, Arc<ConnState>>)>,
    /// Open connections not being shed (changed under the `conns` lock), so
    /// that the check before each accept is not a scan.
    active: AtomicUsize,
    /// Signalled (one permit) each time a connection closes.
    closed: Notify,
    pub(crate) limits: ConnectionLimits,
}

/// Removes its connection from the tracker when dropped (the connection
/// task ended).
pub(crate) struct ConnGuard {
    tracker: Arc<Tracker>,
    id: u64,
    pub(crate) state: Arc<ConnState>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        {
            let mut g = self.tracker.lock();
            g.1.remove(&self.id);
            if !self.state.shed.load(Ordering::SeqCst) {
                self.tracker.active.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.tracker.closed.notify_one();
    }
}

impl Tracker {
    pub(crate) fn new(limits: ConnectionLimits) -> Arc<Tracker> {
        Arc::new(Tracker {
            conns: Mutex::new((0, HashMap::new())),
            active: AtomicUsize::new(0),
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
    pub(crate) fn register(self: &Arc<Self>) -> ConnGuard {
        let state = Arc::new(ConnState {
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            shed: AtomicBool::new(false),
            wake: Notify::new(),
        });
        let mut g = self.lock();
        g.0 += 1;
        let id = g.0;
        g.1.insert(id, Arc::clone(&state));
        self.active.fetch_add(1, Ordering::SeqCst);
        ConnGuard { tracker: Arc::clone(self), id, state }
    }

    /// Open connections not already being shed.
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
            .filter_map(|c| c.idle_since().map(|t| (t, c)))
            .min_by_key(|(t, _)| *t);
        match oldest {
            Some((_, c)) => {
                c.shed.store(true, Ordering::SeqCst);
                self.active.fetch_sub(1, Ordering::SeqCst);
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
    pub(crate) async fn make_room(&self) {
        let Some(max) = self.limits.max_connections else { return };
        while self.active() >= max {
            if !self.shed_oldest_idle() {
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
/// it is shed, idle for longer than the idle timeout, or the server closes.
pub(crate) async fn drive<F>(
    conn: F,
    graceful_shutdown: impl Fn(Pin<&mut F>),
    guard: ConnGuard,
    mut closing: watch::Receiver<bool>,
) where
    F: Future,
{
    let idle_timeout = guard.tracker.limits.idle_timeout;
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
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = state.wake.notified() => break,
            r = closing.changed(), if closing_open => {
                // The sender is gone only when the server task ended.
                if r.is_err() {
                    closing_open = false;
                }
            }
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            } => {
                if let (Some(t), Some(since)) = (idle_timeout, state.idle_since()) {
                    if since.elapsed() >= t {
                        break;
                    }
                }
            }
        }
    }
    graceful_shutdown(conn.as_mut());
    conn.await;
    drop(guard);
}
