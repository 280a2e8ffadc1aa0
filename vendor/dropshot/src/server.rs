// Copyright 2026 Oxide Computer Company

//! Generic server-wide state and facilities

use super::ProbeRegistration;
use super::api_description::ApiDescription;
use super::body::Body;
use super::compression::add_vary_header;
use super::compression::apply_gzip_compression;
use super::compression::is_compressible_content_type;
use super::compression::should_compress_response;
use super::config::{CompressionConfig, ConfigDropshot, ConfigTls};
#[cfg(feature = "usdt-probes")]
use super::dtrace::probes;
use super::handler::HandlerError;
use super::handler::RequestContext;
use super::http_util::HEADER_REQUEST_ID;
use super::router::HttpRouter;
use super::versioning::VersionPolicy;

use debug_ignore::DebugIgnore;
use futures::future::{
    BoxFuture, FusedFuture, FutureExt, Shared,
};
use futures::lock::Mutex;
use futures::stream::StreamExt;
use hyper::Request;
use hyper::Response;
use hyper::service::Service;
use rustls;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::PrivatePkcs8KeyDer;
use rustls::pki_types::pem::PemObject;
use scopeguard::{ScopeGuard, guard};
use std::convert::TryFrom;
use std::future::Future;
use std::mem;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::panic;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::ReadBuf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use uuid::Uuid;
use waitgroup::WaitGroup;

use crate::RequestInfo;
use crate::connection_limits::{self, ConnState, ConnectionLimits, Tracker};
use crate::config::HandlerTaskMode;
use slog::Logger;
use thiserror::Error;

// TODO Remove when we can remove `HttpServerStarter`
type GenericError = Box<dyn std::error::Error + Send + Sync>;

/// Endpoint-accessible context associated with a server.
///
/// Automatically implemented for all Send + Sync types.
pub trait ServerContext: Send + Sync + 'static {}

impl<T: 'static> ServerContext for T where T: Send + Sync {}

/// Stores shared state used by the Dropshot server.
#[derive(Debug)]
pub struct DropshotState<C: ServerContext> {
    /// caller-specific state
    pub private: C,
    /// static server configuration parameters
    pub config: ServerConfig,
    /// request router
    pub router: HttpRouter<C>,
    /// server-wide log handle
    pub log: Logger,
    /// bound local address for the server.
    pub local_addr: SocketAddr,
    /// Identifies how to accept TLS connections
    pub(crate) tls_acceptor: Option<Arc<Mutex<TlsAcceptor>>>,
    /// Worker for the handler_waitgroup associated with this server, allowing
    /// graceful shutdown to wait for all handlers to complete.
    pub(crate) handler_waitgroup_worker: DebugIgnore<waitgroup::Worker>,
    /// specifies how incoming requests are mapped to handlers based on versions
    pub(crate) version_policy: VersionPolicy,
    /// run on every request before routing (see [`ServerBuilder::request_gate`])
    pub(crate) request_gate: DebugIgnore<Option<RequestGate>>,
    /// told about every answered request (see [`ServerBuilder::request_observer`])
    pub(crate) request_observer: DebugIgnore<Option<RequestObserver>>,
    /// take a valid incoming `x-request-id` and put the request id on every
    /// response (see [`ServerBuilder::request_ids`])
    pub(crate) request_ids: bool,
    /// makes each request's span (see [`ServerBuilder::request_span`])
    pub(crate) request_span: DebugIgnore<Option<RequestSpan>>,
    /// adds headers to each response (see [`ServerBuilder::response_headers`])
    pub(crate) response_headers: DebugIgnore<Option<ResponseHeaders>>,
}

/// A hook told about every request once it is answered: its method and path
/// (as received), the response status (499 when the client went away before
/// the answer) and the time taken. For metrics; it must be quick.
pub type RequestObserver = Arc<
    dyn Fn(&http::Method, &str, u16, std::time::Duration) + Send + Sync,
>;

/// A hook that makes each request's tracing span, given its method, path (as
/// received) and request id: the request's handling (its handler's task, its
/// log records and the [`RequestObserver`] call included) runs inside it, so
/// that the observer can record the status on `Span::current()`.
pub type RequestSpan = Arc<
    dyn Fn(&http::Method, &str, &str) -> tracing::Span + Send + Sync,
>;

/// A hook that looks at each request as it arrives (before the request gate)
/// and may return what to add to its response's headers once it is answered,
/// whatever answers it (a handler, an error, the gate). For headers that
/// depend on the request but not on the handler, e.g. CORS; `None` leaves the
/// response as it is.
pub type ResponseHeaders = Arc<
    dyn Fn(
            &Request<hyper::body::Incoming>,
        ) -> Option<Box<dyn FnOnce(&mut http::HeaderMap) + Send>>
        + Send
        + Sync,
>;

/// A hook run on every request before routing and before its body is read:
/// it may rewrite the request (e.g. its method) or answer it by returning a
/// response (which then gets the request id header like any other).
pub type RequestGate = Arc<
    dyn Fn(&mut Request<hyper::body::Incoming>) -> Option<Response<Body>>
        + Send
        + Sync,
>;

/// The client's address as a trusted proxy in front of the server gives it: a
/// [`RequestGate`] that has checked the proxy puts it in the request's
/// extensions, and the request is then handled (and `RequestInfo::remote_addr`
/// answers) as if it came from there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub std::net::SocketAddr);

/// The address of the connection a request came on (PATCHES.md item 16), in
/// the request's extensions when the [`RequestGate`] runs: what a gate that
/// trusts proxies by address decides on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerAddr(pub std::net::SocketAddr);

impl<C: ServerContext> DropshotState<C> {
    pub fn using_tls(&self) -> bool {
        self.tls_acceptor.is_some()
    }
}

/// Stores static configuration associated with the server
/// TODO-cleanup merge with ConfigDropshot
#[derive(Debug)]
pub struct ServerConfig {
    /// maximum allowed size of a request body
    pub default_request_body_max_bytes: usize,
    /// maximum size of any page of results
    pub page_max_nitems: NonZeroU32,
    /// default size for a page of results
    pub page_default_nitems: NonZeroU32,
    /// Default behavior for HTTP handler functions with respect to clients
    /// disconnecting early.
    pub default_handler_task_mode: HandlerTaskMode,
    /// A list of header names to include as extra properties in the log
    /// messages emitted by the per-request logger.  Each header will, if
    /// present, be included in the output with a "hdr_"-prefixed property name
    /// in lower case that has all hyphens replaced with underscores; e.g.,
    /// "X-Forwarded-For" will be included as "hdr_x_forwarded_for".  No attempt
    /// is made to deal with headers that appear multiple times in a single
    /// request.
    pub log_headers: Vec<String>,
    /// Configuration for response compression.
    pub compression: CompressionConfig,
}

/// See [`ServerBuilder`] instead.
// It would be nice to remove this structure altogether once we've got
// confidence that no consumers actually need to distinguish between the
// configuration and start steps.
pub struct HttpServerStarter<C: ServerContext> {
    app_state: Arc<DropshotState<C>>,
    local_addr: SocketAddr,
    handler_waitgroup: WaitGroup,
    http_acceptor: HttpAcceptor,
    tls_acceptor: Option<Arc<Mutex<TlsAcceptor>>>,
    tracker: Arc<Tracker>,
}

impl<C: ServerContext> HttpServerStarter<C> {
    /// Make an `HttpServerStarter` to start an `HttpServer`
    ///
    /// This function exists for backwards compatibility.  You should use
    /// [`ServerBuilder`] instead.
    pub fn new(
        config: &ConfigDropshot,
        api: ApiDescription<C>,
        private: C,
        log: &Logger,
    ) -> Result<HttpServerStarter<C>, GenericError> {
        HttpServerStarter::new_with_tls(config, api, private, log, None)
    }

    /// Make an `HttpServerStarter` to start an `HttpServer`
    ///
    /// This function exists for backwards compatibility.  You should use
    /// [`ServerBuilder`] instead.
    pub fn new_with_tls(
        config: &ConfigDropshot,
        api: ApiDescription<C>,
        private: C,
        log: &Logger,
        tls: Option<ConfigTls>,
    ) -> Result<HttpServerStarter<C>, GenericError> {
        ServerBuilder::new(api, private, log.clone())
            .config(config.clone())
            .tls(tls)
            .build_starter()
            .map_err(|e| Box::new(e) as GenericError)
    }

    fn new_internal(
        config: &ConfigDropshot,
        api: ApiDescription<C>,
        private: C,
        log: &Logger,
        tls: Option<ConfigTls>,
        version_policy: VersionPolicy,
        limits: ConnectionLimits,
        request_gate: Option<RequestGate>,
        request_observer: Option<RequestObserver>,
        request_ids: bool,
        request_span: Option<RequestSpan>,
        response_headers: Option<ResponseHeaders>,
        listener: Option<std::net::TcpListener>,
    ) -> Result<HttpServerStarter<C>, BuildError> {
        let tcp = {
            let std_listener = match listener {
                Some(listener) => listener,
                None => std::net::TcpListener::bind(&config.bind_address)
                    .map_err(|e| {
                        BuildError::bind_error(e, config.bind_address)
                    })?,
            };
            std_listener.set_nonblocking(true).map_err(|e| {
                BuildError::generic_system(e, "setting non-blocking")
            })?;
            // We use `from_std` instead of just calling `bind` here directly
            // to avoid invoking an async function.
            TcpListener::from_std(std_listener).map_err(|e| {
                BuildError::generic_system(e, "creating TCP listener")
            })?
        };

        let local_addr = tcp.local_addr().map_err(|e| {
            BuildError::generic_system(e, "getting local TCP address")
        })?;

        let log = log.new(o!("local_addr" => local_addr));

        let server_config = ServerConfig {
            // We start aggressively to ensure test coverage.
            default_request_body_max_bytes: config
                .default_request_body_max_bytes,
            page_max_nitems: NonZeroU32::new(10000).unwrap(),
            page_default_nitems: NonZeroU32::new(100).unwrap(),
            default_handler_task_mode: config.default_handler_task_mode,
            log_headers: config.log_headers.clone(),
            compression: config.compression,
        };

        let tls_acceptor = tls
            .as_ref()
            .map(|tls| {
                Ok(Arc::new(Mutex::new(TlsAcceptor::from(Arc::new(
                    rustls::ServerConfig::try_from(tls)?,
                )))))
            })
            .transpose()?;
        let handler_waitgroup = WaitGroup::new();

        let router = api.into_router();
        if let VersionPolicy::Unversioned = version_policy {
            if router.has_versioned_routes() {
                return Err(BuildError::UnversionedServerHasVersionedRoutes);
            }
        }

        let app_state = Arc::new(DropshotState {
            private,
            config: server_config,
            router,
            log: log.clone(),
            local_addr,
            tls_acceptor: tls_acceptor.clone(),
            handler_waitgroup_worker: DebugIgnore(handler_waitgroup.worker()),
            version_policy,
            request_gate: DebugIgnore(request_gate),
            request_observer: DebugIgnore(request_observer),
            request_ids,
            request_span: DebugIgnore(request_span),
            response_headers: DebugIgnore(response_headers),
        });

        for (path, method, endpoint) in app_state.router.endpoints(None) {
            debug!(&log, "registered endpoint";
                "method" => &method,
                "path" => &path,
                "versions" => &endpoint.versions,
            );
        }

        let tracker = Tracker::new(limits);
        let http_acceptor = HttpAcceptor {
            tcp,
            log: log.clone(),
            tracker: Arc::clone(&tracker),
            error_logged: std::sync::Mutex::new(None),
        };

        Ok(HttpServerStarter {
            app_state,
            local_addr,
            handler_waitgroup,
            http_acceptor,
            tls_acceptor,
            tracker,
        })
    }

    pub fn start(self) -> HttpServer<C> {
        let HttpServerStarter {
            app_state,
            local_addr,
            handler_waitgroup,
            tls_acceptor,
            http_acceptor,
            tracker,
        } = self;

        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let make_service = ServerConnectionHandler::new(Arc::clone(&app_state));
        let log = &app_state.log;
        let log_close = log.clone();
        let join_handle = tokio::spawn(async move {
            use hyper_util::rt::{TokioExecutor, TokioTimer};
            use hyper_util::server::conn::auto;

            let mut builder = auto::Builder::new(TokioExecutor::new());
            // http/1 settings
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(tracker.limits.header_read_timeout);
            if let Some(max) = tracker.limits.read_buffer_bytes {
                builder.http1().max_buf_size(max.max(8192));
            }
            if !tracker.limits.http2 {
                // The auto builder detects an HTTP/2 preface even when told HTTP/1 only if
                // connections are served with upgrades: refuse every stream instead.
                builder.http2().max_concurrent_streams(0);
            }
            // http/2 settings
            builder.http2().timer(TokioTimer::new());

            // Every connection is tracked (for the connection limits) and
            // watches `closing`: when the close signal is triggered, every
            // connection starts a graceful shutdown.
            let (closing_tx, closing) = tokio::sync::watch::channel(false);

            // The following code looks superficially similar between the HTTP
            // and HTTPS paths.  However, the concrete types of various objects
            // are different and so it's not easy to actually share the code.
            let log = log_close;
            // One accepted connection (plain or TLS), served until it closes:
            // registered with the connection limits, watched, and shut down
            // gracefully once `closing` says so.
            let serve = |sock, remote_addr| {
                serve_connection(
                    sock,
                    remote_addr,
                    &tracker,
                    &make_service,
                    &builder,
                    &closing,
                )
            };
            let serve_tls = |sock: TlsConn| {
                let remote_addr = sock.remote_addr();
                serve_connection(
                    sock,
                    remote_addr,
                    &tracker,
                    &make_service,
                    &builder,
                    &closing,
                )
            };
            // What a TLS server still negotiates at the close (item 25).
            let mut finishing = None;
            match tls_acceptor {
                Some(tls_acceptor) => {
                    let mut https_acceptor = HttpsAcceptor::new(
                        log.clone(),
                        tls_acceptor,
                        http_acceptor,
                        tracker.limits.max_connections.unwrap_or(1024),
                    );
                    loop {
                        tokio::select! {
                            sock = https_acceptor.accept() => {
                                // PATCHES.md item 15: a negotiated connection
                                // counts against the cap like a plain one.
                                tracker.make_room().await;
                                serve_tls(sock);
                            },

                            _ = &mut rx => {
                                info!(log, "beginning graceful shutdown");
                                // The backlog and the handshakes under way
                                // are finished, not reset (PATCHES.md item
                                // 25), as for plain HTTP (items 22, 23).
                                finishing = Some(
                                    https_acceptor
                                        .close(|| tracker.has_room())
                                        .await,
                                );
                                break;
                            }
                        }
                    }
                }
                None => loop {
                    // At the connection cap, room is made when a client
                    // arrives (PATCHES.md item 15: before, it was made ahead
                    // of the next client, so the cap held one connection
                    // fewer and a cap of 1 shed each new connection before
                    // its request); when nothing is idle, that client waits
                    // here and the next ones in the listen backlog.
                    tokio::select! {
                        (sock, remote_addr) = async {
                            let accepted = http_acceptor.accept().await;
                            tracker.make_room().await;
                            accepted
                        } => serve(sock, remote_addr),

                        _ = &mut rx => {
                            info!(log, "beginning graceful shutdown");
                            // The clients already in the listen backlog (their
                            // handshake done, their request likely sent) are
                            // served (PATCHES.md item 22), as many as the cap
                            // has room for without shedding: closing the
                            // listener resets them. Asked of the kernel, not
                            // of the reactor, which may not have reported the
                            // latest yet (item 23). Then stop listening: new
                            // connections are refused instead of waiting in
                            // the backlog.
                            connection_limits::take_backlog(
                                http_acceptor.tcp,
                                || tracker.has_room(),
                                serve,
                            );
                            break;
                        }
                    }
                },
            };

            // Every connection shuts down gracefully: idle ones close now,
            // requests in flight are answered first. A TLS client negotiated
            // after this is served the same way (its connection sees
            // `closing` already set), and counted before the wait below.
            let _ = closing_tx.send(true);
            if let Some(finishing) = finishing {
                finishing.for_each(|sock| {
                    serve_tls(sock);
                    futures::future::ready(())
                })
                .await;
            }
            // Bound this from outside (e.g. `tokio::time::timeout` around
            // `HttpServer::close`).
            tracker.wait_all_closed().await
        });

        info!(log, "listening");

        let join_handle = async move {
            // After the server shuts down, we also want to wait for any
            // detached handler futures to complete.
            () = join_handle
                .await
                .map_err(|e| format!("server stopped: {e}"))?;
            () = handler_waitgroup.wait().await;
            Ok(())
        };

        #[cfg(feature = "usdt-probes")]
        let probe_registration = match usdt::register_probes() {
            Ok(_) => {
                debug!(&log, "successfully registered DTrace USDT probes");
                ProbeRegistration::Succeeded
            }
            Err(e) => {
                let msg = e.to_string();
                error!(&log, "failed to register DTrace USDT probes: {}", msg);
                ProbeRegistration::Failed(msg)
            }
        };
        #[cfg(not(feature = "usdt-probes"))]
        let probe_registration = {
            debug!(&log, "DTrace USDT probes compiled out, not registering");
            ProbeRegistration::Disabled
        };

        HttpServer {
            probe_registration,
            app_state,
            local_addr,
            closer: CloseHandle { close_channel: Some(tx) },
            join_future: join_handle.boxed().shared(),
        }
    }
}

/// Serves one accepted connection (plain or TLS) until it closes: registered
/// with the connection limits (`tracker`), its socket watched, served by hyper
/// with upgrades, and shut down gracefully once `closing` says so (PATCHES.md
/// items 2, 17, 22). One function for the four ways a connection arrives
/// (accepted, or found at a close; plain or TLS).
fn serve_connection<C, S>(
    sock: S,
    remote_addr: SocketAddr,
    tracker: &Arc<Tracker>,
    make_service: &ServerConnectionHandler<C>,
    builder: &hyper_util::server::conn::auto::Builder<
        hyper_util::rt::TokioExecutor,
    >,
    closing: &tokio::sync::watch::Receiver<bool>,
) where
    C: ServerContext,
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = tracker.register();
    let handler = make_service
        .make_http_request_handler(remote_addr, Arc::clone(&conn.state));
    let watched = conn.watch(sock);
    let fut = builder.serve_connection_with_upgrades(
        hyper_util::rt::TokioIo::new(watched),
        handler,
    );
    tokio::spawn(connection_limits::drive(
        fut.into_owned(),
        |c| c.graceful_shutdown(),
        conn,
        closing.clone(),
    ));
}

/// Accepts TCP connections like a `TcpListener`, but ignores transient errors
/// rather than propagating them to the caller
struct HttpAcceptor {
    tcp: TcpListener,
    log: slog::Logger,
    tracker: Arc<Tracker>,
    /// when an accept error was last logged (they are logged every 10 s at
    /// most: under a flood at the descriptor limit every accept may fail)
    error_logged: std::sync::Mutex<Option<std::time::Instant>>,
}

impl HttpAcceptor {
    async fn accept(&self) -> (TcpStream, SocketAddr) {
        loop {
            match self.tcp.accept().await {
                Ok((socket, addr)) => return (socket, addr),
                Err(e) => match e.kind() {
                    // These are errors on the individual socket that we
                    // tried to accept, and so can be ignored.
                    std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::ConnectionReset => (),

                    // This could EMFILE implying resource exhaustion: close
                    // the connection idle the longest, or wait for one to
                    // close, then try again (logged every 10 s at most).
                    _ => {
                        {
                            let mut logged = self
                                .error_logged
                                .lock()
                                .unwrap_or_else(|e| e.into_inner());
                            if logged.map_or(true, |t| {
                                t.elapsed()
                                    >= std::time::Duration::from_secs(10)
                            }) {
                                warn!(self.log, "accept error: shedding idle connections or waiting for one to close (logged every 10 s at most)"; "error" => e);
                                *logged = Some(std::time::Instant::now());
                            }
                        }
                        self.tracker.shed_oldest_idle();
                        self.tracker
                            .wait_for_close(std::time::Duration::from_secs(1))
                            .await;
                    }
                },
            }
        }
    }
}

/// Wrapper for TlsStream<TcpStream> that also carries the remote SocketAddr
#[derive(Debug)]
struct TlsConn {
    stream: TlsStream<TcpStream>,
    remote_addr: SocketAddr,
}

impl TlsConn {
    fn new(stream: TlsStream<TcpStream>, remote_addr: SocketAddr) -> TlsConn {
        TlsConn { stream, remote_addr }
    }

    fn remote_addr(&self) -> SocketAddr {
        self.remote_addr
    }
}

/// Forward AsyncRead to the underlying stream
impl tokio::io::AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        ctx: &mut core::task::Context,
        buf: &mut ReadBuf,
    ) -> Poll<std::io::Result<()>> {
        let pinned = Pin::new(&mut self.stream);
        pinned.poll_read(ctx, buf)
    }
}

/// Forward AsyncWrite to the underlying stream
impl tokio::io::AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        ctx: &mut core::task::Context,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let pinned = Pin::new(&mut self.stream);
        pinned.poll_write(ctx, data)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        ctx: &mut core::task::Context,
    ) -> Poll<std::io::Result<()>> {
        let pinned = Pin::new(&mut self.stream);
        pinned.poll_flush(ctx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        ctx: &mut core::task::Context,
    ) -> Poll<std::io::Result<()>> {
        let pinned = Pin::new(&mut self.stream);
        pinned.poll_shutdown(ctx)
    }
}

/// This is our bridge between tokio-rustls and hyper. It produces fully
/// negotiated TLS connections from a TCP listen socket, negotiating several
/// at once while new connections are accepted.
///
/// PATCHES.md item 25: a struct instead of upstream's generator, so that a
/// close can take it apart: the listen backlog joins the handshakes under
/// way and those finish (`HttpsAcceptor::close`) instead of being reset.
struct HttpsAcceptor {
    log: slog::Logger,
    tls_acceptor: Arc<Mutex<TlsAcceptor>>,
    http_acceptor: HttpAcceptor,
    max_handshakes: usize,
    negotiations: futures::stream::FuturesUnordered<Negotiation>,
    // PATCHES.md item 18: failed handshakes are logged once per
    // `TLS_FAILURES_LOGGED_EVERY` at most, with how many failed.
    failures_unlogged: u64,
    failure_logged_at: Option<std::time::Instant>,
}

/// One TLS handshake under way: the negotiated connection, or why it failed
/// and with whom.
type Negotiation =
    BoxFuture<'static, Result<TlsConn, (std::io::Error, SocketAddr)>>;

/// The handshake of `socket`, dropped (its socket closed) when it does not
/// finish within `TLS_HANDSHAKE_TIMEOUT` (PATCHES.md item 9).
fn negotiation(
    acceptor: &TlsAcceptor,
    socket: TcpStream,
    addr: SocketAddr,
) -> Negotiation {
    let accepting = acceptor.accept(socket);
    async move {
        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, accepting).await {
            Ok(r) => r.map(|s| TlsConn::new(s, addr)).map_err(|e| (e, addr)),
            Err(_) => Err((
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "TLS handshake timed out",
                ),
                addr,
            )),
        }
    }
    .boxed()
}

impl HttpsAcceptor {
    pub fn new(
        log: slog::Logger,
        tls_acceptor: Arc<Mutex<TlsAcceptor>>,
        http_acceptor: HttpAcceptor,
        max_handshakes: usize,
    ) -> HttpsAcceptor {
        HttpsAcceptor {
            log,
            tls_acceptor,
            http_acceptor,
            max_handshakes: max_handshakes.max(1),
            negotiations: futures::stream::FuturesUnordered::new(),
            failures_unlogged: 0,
            failure_logged_at: None,
        }
    }

    /// The next negotiated connection.
    async fn accept(&mut self) -> TlsConn {
        loop {
            tokio::select! {
                Some(negotiated) = self.negotiations.next(), if
                        !self.negotiations.is_empty() => {
                    match negotiated {
                        Ok(conn) => return conn,
                        Err((e, addr)) => self.failed(&e, addr),
                    }
                },
                // PATCHES.md item 15: at most `max_handshakes` under way; the
                // next clients wait in the listen backlog.
                (socket, addr) = self.http_acceptor.accept(),
                        if self.negotiations.len() < self.max_handshakes => {
                    let acceptor = self.tls_acceptor.lock().await;
                    self.negotiations.push(negotiation(&acceptor, socket, addr));
                },
            }
        }
    }

    /// A failed handshake: logged, not forwarded (yielding an error would
    /// end the server). These may be a fatal TLS alert, a client gone during
    /// the negotiation, a scanner or a load balancer's TCP check (PATCHES.md
    /// item 18: one line per interval), logged with the client's address so
    /// that an operator can tell a scanner from a client with a real problem
    /// (item 15).
    fn failed(&mut self, e: &std::io::Error, addr: SocketAddr) {
        self.failures_unlogged += 1;
        let due = self
            .failure_logged_at
            .map_or(true, |t| t.elapsed() >= TLS_FAILURES_LOGGED_EVERY);
        if due {
            warn!(self.log, "tls accept err: {}", e;
                "remote_addr" => %addr,
                "failed_handshakes" => self.failures_unlogged,
                "logged_every_secs" => TLS_FAILURES_LOGGED_EVERY.as_secs());
            self.failures_unlogged = 0;
            self.failure_logged_at = Some(std::time::Instant::now());
        }
    }

    /// At a close (PATCHES.md item 25): the clients in the listen backlog
    /// (asked of the kernel, item 23) join the handshakes under way, up to
    /// `max_handshakes`; the listener is closed (new clients are refused);
    /// and the stream returned finishes the handshakes, yielding the
    /// connections to serve, for `FIRST_REQUEST_WITHIN` (1 s) at most: what a
    /// plain connection gets for its first request at a close (item 22), so a
    /// socket that never sends its hello holds the stop no longer than one
    /// that never sends its request (before, each kept its whole handshake
    /// timeout: one idle socket held the stop for the grace). Before item 25,
    /// the close dropped both: every client that had connected but not
    /// finished its handshake was reset, where a plain-HTTP client was
    /// answered (item 22).
    async fn close(
        mut self,
        has_room: impl Fn() -> bool,
    ) -> futures::stream::BoxStream<'static, TlsConn> {
        let acceptor = self.tls_acceptor.lock().await.clone();
        let max = self.max_handshakes;
        let negotiations =
            std::cell::RefCell::new(std::mem::take(&mut self.negotiations));
        connection_limits::take_backlog(
            self.http_acceptor.tcp,
            || negotiations.borrow().len() < max && has_room(),
            |socket, addr| {
                negotiations
                    .borrow_mut()
                    .push(negotiation(&acceptor, socket, addr));
            },
        );
        let negotiations = negotiations.into_inner();
        let log = self.log;
        negotiations
            .take_until(tokio::time::sleep(
                connection_limits::FIRST_REQUEST_WITHIN,
            ))
            .filter_map(move |negotiated| {
                let conn = match negotiated {
                    Ok(conn) => Some(conn),
                    Err((e, addr)) => {
                        info!(log, "tls accept err at close: {}", e;
                            "remote_addr" => %addr);
                        None
                    }
                };
                futures::future::ready(conn)
            })
            .boxed()
    }
}

/// A request's target as the request log shows it (PATCHES.md item 28): the value of an
/// `access_token` query parameter (RFC 6750 §2.3, a credential some clients send there) is
/// replaced by `REDACTED`, so that a token sent that way is not written to the log in
/// clear. Everything else is as received.
pub fn logged_uri(uri: &http::Uri) -> String {
    let Some(query) = uri.query() else {
        return uri.to_string();
    };
    let secret = |pair: &str| {
        pair.split('=')
            .next()
            .is_some_and(|name| name.eq_ignore_ascii_case("access_token"))
    };
    if !query.split('&').any(secret) {
        return uri.to_string();
    }
    let redacted: Vec<String> = query
        .split('&')
        .map(|pair| match secret(pair) {
            true => format!("{}=REDACTED", pair.split('=').next().unwrap_or_default()),
            false => pair.to_owned(),
        })
        .collect();
    let mut shown = uri.to_string();
    if let Some(at) = shown.find('?') {
        shown.truncate(at + 1);
        shown.push_str(&redacted.join("&"));
    }
    shown
}

/// At most one warning per this interval for failed TLS handshakes (PATCHES.md
/// item 18), counting those not logged since the last one.
const TLS_FAILURES_LOGGED_EVERY: std::time::Duration =
    std::time::Duration::from_secs(10);

/// How long a client gets to finish its TLS handshake (PATCHES.md item 9):
/// connections count against the connection limits only once negotiated, so
/// a handshake that never finishes would otherwise hold its socket forever.
pub const TLS_HANDSHAKE_TIMEOUT: std::time::Duration =
    std::time::Duration::from_secs(10);

/// Create a TLS configuration from the Dropshot config structure.
impl TryFrom<&ConfigTls> for rustls::ServerConfig {
    type Error = BuildError;

    fn try_from(config: &ConfigTls) -> Result<Self, Self::Error> {
        let (mut cert_reader, mut key_reader): (
            Box<dyn std::io::BufRead>,
            Box<dyn std::io::BufRead>,
        ) = match config {
            ConfigTls::Dynamic(raw) => {
                return Ok(raw.clone());
            }
            ConfigTls::AsBytes { certs, key } => (
                Box::new(std::io::BufReader::new(certs.as_slice())),
                Box::new(std::io::BufReader::new(key.as_slice())),
            ),
            ConfigTls::AsFile { cert_file, key_file } => {
                let certfile = Box::new(std::io::BufReader::new(
                    std::fs::File::open(cert_file).map_err(|e| {
                        BuildError::generic_system(
                            e,
                            format!("opening {}", cert_file.display()),
                        )
                    })?,
                ));
                let keyfile = Box::new(std::io::BufReader::new(
                    std::fs::File::open(key_file).map_err(|e| {
                        BuildError::generic_system(
                            e,
                            format!("opening {}", key_file.display()),
                        )
                    })?,
                ));
                (certfile, keyfile)
            }
        };

        let certs = CertificateDer::pem_reader_iter(&mut cert_reader)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| BuildError::PemError {
                context: "loading TLS certificates".to_string(),
                error: err,
            })?;
        let keys = PrivatePkcs8KeyDer::pem_reader_iter(&mut key_reader)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| BuildError::PemError {
                context: "loading TLS private key".to_string(),
                error: err,
            })?;
        let mut keys_iter = keys.into_iter();
        let (Some(private_key), None) = (keys_iter.next(), keys_iter.next())
        else {
            return Err(BuildError::NotOnePrivateKey);
        };

        let mut cfg = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, private_key.into())
            .expect("bad certificate/key");
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(cfg)
    }
}

type SharedBoxFuture<T> = Shared<Pin<Box<dyn Future<Output = T> + Send>>>;

/// Future returned by [`HttpServer::wait_for_shutdown()`].
pub struct ShutdownWaitFuture(SharedBoxFuture<Result<(), String>>);

impl Future for ShutdownWaitFuture {
    type Output = Result<(), String>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.get_mut().0).poll(cx)
    }
}

impl FusedFuture for ShutdownWaitFuture {
    fn is_terminated(&self) -> bool {
        self.0.is_terminated()
    }
}

/// A running Dropshot HTTP server.
///
/// The generic traits represent the following:
/// - C: Caller-supplied server context
pub struct HttpServer<C: ServerContext> {
    probe_registration: ProbeRegistration,
    app_state: Arc<DropshotState<C>>,
    local_addr: SocketAddr,
    closer: CloseHandle,
    join_future: SharedBoxFuture<Result<(), String>>,
}

// Handle used to trigger the shutdown of an [HttpServer].
struct CloseHandle {
    close_channel: Option<tokio::sync::oneshot::Sender<()>>,
}

impl<C: ServerContext> HttpServer<C> {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn app_private(&self) -> &C {
        &self.app_state.private
    }

    pub fn using_tls(&self) -> bool {
        self.app_state.using_tls()
    }

    /// Update TLS certificates for a running HTTPS server.
    pub async fn refresh_tls(&self, config: &ConfigTls) -> Result<(), String> {
        let acceptor = &self
            .app_state
            .tls_acceptor
            .as_ref()
            .ok_or_else(|| "Not configured for TLS".to_string())?;

        *acceptor.lock().await = TlsAcceptor::from(Arc::new(
            rustls::ServerConfig::try_from(config).unwrap(),
        ));
        Ok(())
    }

    /// Return the result of registering the server's DTrace USDT probes.
    ///
    /// See [`ProbeRegistration`] for details.
    pub fn probe_registration(&self) -> &ProbeRegistration {
        &self.probe_registration
    }

    /// Returns a future which completes when the server has shut down.
    ///
    /// This function does not cause the server to shut down. It just waits for
    /// the shutdown to happen.
    ///
    /// To trigger a shutdown, Call [HttpServer::close] (which also awaits
    /// shutdown).
    pub fn wait_for_shutdown(&self) -> ShutdownWaitFuture {
        ShutdownWaitFuture(self.join_future.clone())
    }

    /// Signals the currently running server to stop and waits for it to exit.
    pub async fn close(mut self) -> Result<(), String> {
        self.closer
            .close_channel
            .take()
            .expect("cannot close twice")
            .send(())
            .expect("failed to send close signal");

        // We _must_ explicitly drop our app state before awaiting join_future.
        // If we are running handlers in `Detached` mode, our `app_state` has a
        // `waitgroup::Worker` that they all clone, and `join_future` will await
        // all of them being dropped. That means we must drop our "primary"
        // clone of it, too!
        mem::drop(self.app_state);

        self.join_future.await
    }
}

// For graceful termination, the `close()` function is preferred, as it can
// report errors and wait for termination to complete.  However, we impl
// `Drop` to attempt to shut down the server to handle less clean shutdowns
// (e.g., from failing tests).
impl Drop for CloseHandle {
    fn drop(&mut self) {
        if let Some(c) = self.close_channel.take() {
            // The other side of this channel is owned by a separate tokio task
            // that's running the hyper server.  We do not expect that to be
            // cancelled.  But it can happen if the executor itself is shutting
            // down and that task happens to get cleaned up before this one.
            let _ = c.send(());
        }
    }
}

impl<C: ServerContext> Future for HttpServer<C> {
    type Output = Result<(), String>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let server = Pin::into_inner(self);
        let join_future = Pin::new(&mut server.join_future);
        join_future.poll(cx)
    }
}

impl<C: ServerContext> FusedFuture for HttpServer<C> {
    fn is_terminated(&self) -> bool {
        self.join_future.is_terminated()
    }
}

/// Initial entry point for handling a new request to the HTTP server.  This is
/// invoked by Hyper when a new request is received.  This function returns a
/// Result that either represents a valid HTTP response or an error (which will
/// also get turned into an HTTP response).
async fn http_request_handle_wrap<C: ServerContext>(
    server: Arc<DropshotState<C>>,
    remote_addr: SocketAddr,
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, GenericError> {
    // This extra level of indirection makes error handling much more
    // straightforward, since the request handling code can simply return early
    // with an error and we'll treat it like an error from any of the endpoints
    // themselves.
    let start_time = std::time::Instant::now();
    let request_ids = server.request_ids;
    let request_id = request_ids
        .then(|| incoming_request_id(request.headers()))
        .flatten()
        .unwrap_or_else(generate_request_id);
    // The request's span (patch 12): everything below, the handler's task and
    // the observer included, runs inside it; none without a hook.
    let span = match server.request_span.0.as_ref() {
        Some(make) => make(request.method(), request.uri().path(), &request_id),
        None => tracing::Span::none(),
    };
    tracing::Instrument::instrument(
        http_request_handle_wrap_in_span(
            server,
            remote_addr,
            request,
            request_id,
            start_time,
        ),
        span,
    )
    .await
}

/// The rest of [`http_request_handle_wrap`], inside the request's span.
async fn http_request_handle_wrap_in_span<C: ServerContext>(
    server: Arc<DropshotState<C>>,
    remote_addr: SocketAddr,
    request: Request<hyper::body::Incoming>,
    request_id: String,
    start_time: std::time::Instant,
) -> Result<Response<Body>, GenericError> {
    let request_ids = server.request_ids;
    // What the response gets added to its headers (patch 13), decided before
    // the request is consumed (or rewritten by the gate).
    let finish_headers =
        server.response_headers.0.as_ref().and_then(|hook| hook(&request));
    // PATCHES.md item 26: the request's version, for a closing answer.
    let version = request.version();
    // What the request observer is told, taken before the request is consumed.
    let observed = server
        .request_observer
        .0
        .clone()
        .map(|o| (o, request.method().clone(), request.uri().path().to_owned()));

    // PATCHES.md item 29: the gate runs before the request's logger is made,
    // so that every line of the request names the client the gate found (a
    // trusted proxy's or a standby's) beside the connection's peer; the
    // method and target logged are the client's, read before the gate may
    // rewrite them (`HEAD` served as `GET`, an alias path).
    let method = request.method().as_str().to_string();
    let uri = logged_uri(request.uri());
    let mut request = request;
    request.extensions_mut().insert(PeerAddr(remote_addr));
    let gated =
        server.request_gate.as_ref().and_then(|gate| gate(&mut request));
    let client_addr = request
        .extensions()
        .get::<ClientAddr>()
        .map(|c| c.0)
        .filter(|c| *c != remote_addr);

    let mut request_log = server.log.new(o!(
        "remote_addr" => remote_addr,
        "req_id" => request_id.clone(),
        "method" => method,
        "uri" => uri,
    ));
    if let Some(client) = client_addr {
        // A proxy's `X-Forwarded-For` names an address without a port (0).
        let client = match client.port() {
            0 => client.ip().to_string(),
            _ => client.to_string(),
        };
        request_log = request_log.new(o!("client_addr" => client));
    }
    // If we have been asked to include any headers from the request in the
    // log messages, do so here:
    for name in server.config.log_headers.iter() {
        let v = request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok().map(str::to_string));

        if let Some(v) = v {
            // This is unfortunate in at least two ways: first, we would like to
            // just construct _one_ key value map, but OwnedKV is opaque and can
            // only be constructed with the o!() macro, so the only way to layer
            // on a dynamic set of additional properties is by creating a chain
            // of child loggers to add each one; second, we would like to be
            // able to include all header values under a single map-valued
            // "header" property, but slog only allows us a single-level
            // property hierarchy.  Alas!
            //
            // We also replace the hyphens with underscores to make it easier to
            // refer to the generated properties in dynamic languages used for
            // filtering like rhai.
            let k = format!("hdr_{}", name.to_lowercase().replace('-', "_"));
            request_log = request_log.new(o!(k => v));
        }
    }

    trace!(request_log, "incoming request");
    #[cfg(feature = "usdt-probes")]
    probes::request__start!(|| {
        let uri = request.uri();
        crate::dtrace::RequestInfo {
            id: request_id.clone(),
            local_addr: server.local_addr,
            remote_addr,
            method: request.method().to_string(),
            path: uri.path().to_string(),
            query: uri.query().map(|x| x.to_string()),
        }
    });

    // Copy local address to report later during the finish probe, as the
    // server is passed by value to the request handler function.
    #[cfg(feature = "usdt-probes")]
    let local_addr = server.local_addr;

    // In the case the client disconnects early, the scopeguard allows us
    // to perform extra housekeeping before this task is dropped.
    let observed_on_disconnect = observed.clone();
    // Tells a detached handler that its client has gone (`crate::client_gone`), first.
    let client_gone = crate::client_gone::ClientGone::new();
    let gone_on_disconnect = Arc::clone(&client_gone);
    let on_disconnect = guard((), |_| {
        gone_on_disconnect.set();
        let latency_us = start_time.elapsed().as_micros();
        if let Some((observer, method, path)) = &observed_on_disconnect {
            observer(method, path, 499, start_time.elapsed());
        }

        // PATCHES.md item 21: `info`, not `warn` (a client closing its connection is routine).
        info!(request_log, "request handling cancelled (client disconnected)";
            "latency_us" => latency_us,
        );

        #[cfg(feature = "usdt-probes")]
        probes::request__done!(|| {
            crate::dtrace::ResponseInfo {
                id: request_id.clone(),
                local_addr,
                remote_addr,
                // 499 is a non-standard code popularized by nginx to mean "client disconnected".
                status_code: 499,
                message: String::from(
                    "client disconnected before response returned",
                ),
            }
        });
    });

    let maybe_response = http_request_handle(
        server,
        request,
        gated,
        &request_id,
        request_log.new(o!()),
        remote_addr,
        client_gone,
    )
    .await;

    // If `http_request_handle` completed, it means the request wasn't
    // cancelled and we can safely "defuse" the scopeguard.
    let _ = ScopeGuard::into_inner(on_disconnect);

    let latency_us = start_time.elapsed().as_micros();
    let response = match maybe_response {
        Err(error) => {
            {
                let status = error.status_code();
                let message_external = error.external_message();
                let message_internal = error.internal_message();

                #[cfg(feature = "usdt-probes")]
                probes::request__done!(|| {
                    crate::dtrace::ResponseInfo {
                        id: request_id.clone(),
                        local_addr,
                        remote_addr,
                        status_code: status.as_u16(),
                        message: message_external
                            .cloned()
                            .unwrap_or_else(|| message_internal.clone()),
                    }
                });

                // TODO-debug: add request and response headers here
                info!(request_log, "request completed";
                    "response_code" => status.as_u16(),
                    "latency_us" => latency_us,
                    "error_message_internal" => message_internal,
                    "error_message_external" => message_external,
                );
            };
            error.into_response(&request_id)
        }

        Ok(response) => {
            // TODO-debug: add request and response headers here
            info!(request_log, "request completed";
                "response_code" => response.status().as_u16(),
                "latency_us" => latency_us,
            );

            #[cfg(feature = "usdt-probes")]
            probes::request__done!(|| {
                crate::dtrace::ResponseInfo {
                    id: request_id.parse().unwrap(),
                    local_addr,
                    remote_addr,
                    status_code: response.status().as_u16(),
                    message: "".to_string(),
                }
            });

            response
        }
    };
    if let Some((observer, method, path)) = &observed {
        observer(method, path, response.status().as_u16(), start_time.elapsed());
    }
    let mut response = response;
    if request_ids
        && !response.headers().contains_key(HEADER_REQUEST_ID)
    {
        if let Ok(value) = http::HeaderValue::from_str(&request_id) {
            response.headers_mut().insert(HEADER_REQUEST_ID, value);
        }
    }
    if let Some(finish) = finish_headers {
        finish(response.headers_mut());
    }
    closing_for(&mut response, version);

    Ok(response)
}

/// PATCHES.md item 26: an answer that says `Connection: close` to an HTTP/1.0
/// client is made an HTTP/1.0 answer, so that hyper closes the connection
/// instead of adding `Connection: keep-alive` beside the `close` (it adds one
/// to an HTTP/1.1 answer whenever an HTTP/1.0 client asked for keep-alive,
/// whatever the answer says, and a client that reads only `keep-alive` then
/// writes into a closed connection).
pub fn closing_for<B>(response: &mut Response<B>, client: http::Version) {
    let closes = response
        .headers()
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("close"));
    if client == http::Version::HTTP_10 && closes {
        *response.version_mut() = http::Version::HTTP_10;
    }
}

#[allow(clippy::result_large_err)]
async fn http_request_handle<C: ServerContext>(
    server: Arc<DropshotState<C>>,
    request: Request<hyper::body::Incoming>,
    gated: Option<Response<Body>>,
    request_id: &str,
    request_log: Logger,
    remote_addr: std::net::SocketAddr,
    client_gone: Arc<crate::client_gone::ClientGone>,
) -> Result<Response<Body>, HandlerError> {
    // TODO-hardening: is it correct to (and do we correctly) read the entire
    // request body even if we decide it's too large and are going to send a 400
    // response?
    // TODO-hardening: add a request read timeout as well so that we don't allow
    // this to take forever.
    // TODO-correctness: Do we need to dump the body on errors?
    // The gate ran in `http_request_handle_wrap_in_span` (PATCHES.md item 29).
    if let Some(mut response) = gated {
        response.headers_mut().insert(
            HEADER_REQUEST_ID,
            http::header::HeaderValue::from_str(request_id).unwrap(),
        );
        return Ok(response);
    }
    let remote_addr = request
        .extensions()
        .get::<ClientAddr>()
        .map_or(remote_addr, |c| c.0);
    let request = request.map(crate::Body::wrap);
    let method = request.method().clone();
    let uri = request.uri();
    let found_version =
        server.version_policy.request_version(&request, &request_log)?;
    let lookup_result = server.router.lookup_route(
        &method,
        uri.path().into(),
        found_version.as_ref(),
    )?;
    let rqctx = RequestContext {
        server: Arc::clone(&server),
        request: RequestInfo::new(&request, remote_addr),
        endpoint: lookup_result.endpoint,
        request_id: request_id.to_string(),
        log: request_log.clone(),
    };
    let request_headers = rqctx.request.headers().clone();
    let handler = lookup_result.handler;

    let mut response = match server.config.default_handler_task_mode {
        HandlerTaskMode::CancelOnDisconnect => {
            // For CancelOnDisconnect, we run the request handler directly: if
            // the client disconnects, we will be cancelled, and therefore this
            // future will too.
            handler.handle_request(rqctx, request).await?
        }
        HandlerTaskMode::Detached => {
            // Spawn the handler so if we're cancelled, the handler still runs
            // to completion.
            let (tx, rx) = oneshot::channel();
            let request_log = request_log.clone();
            let worker = server.handler_waitgroup_worker.clone();
            // In the request's span (patch 12), when there is one.
            let handler_task = tokio::spawn(tracing::Instrument::in_current_span(async move {
                let request_log = rqctx.log.clone();
                let result = client_gone
                    .scope(handler.handle_request(rqctx, request))
                    .await;

                // If this send fails, our spawning task has been cancelled in
                // the `rx.await` below; log such a result.
                if let Err(result) = tx.send(result) {
                    match result {
                        Ok(r) => info!(
                            request_log, "request completed after handler was already cancelled";
                            "response_code" => r.status().as_u16(),
                        ),
                        Err(error) => {
                            info!(request_log, "request completed after handler was already cancelled";
                                "response_code" => error.status_code().as_u16(),
                                "error_message_internal" => error.internal_message(),
                                "error_message_external" => error.external_message(),
                            );
                        }
                    }
                }

                // Drop our waitgroup worker, allowing graceful shutdown to
                // complete (if it's waiting on us).
                mem::drop(worker);
            }));

            // The only way we can fail to receive on `rx` is if `tx` is
            // dropped before a result is sent, which can only happen if
            // `handle_request` panics. We will propagate such a panic here,
            // just as we would have in `CancelOnDisconnect` mode above (where
            // we call the handler directly).
            match rx.await {
                Ok(result) => result?,
                Err(_) => {
                    error!(request_log, "handler panicked; propagating panic");

                    // To get the panic, we now need to await `handler_task`; we
                    // know it is complete _and_ it failed, because it has
                    // dropped `tx` without sending us a result, which is only
                    // possible if it panicked.
                    let task_err = handler_task.await.expect_err(
                        "task failed to send result but didn't panic",
                    );
                    panic::resume_unwind(task_err.into_panic());
                }
            }
        }
    };

    if matches!(server.config.compression, CompressionConfig::Gzip)
        && is_compressible_content_type(response.headers())
    {
        // Add Vary: Accept-Encoding header for all compressible content
        // types. This needs to be there even if the response ends up not being
        // compressed because it tells caches (like browsers and CDNs) that the
        // response content depends on the value of the Accept-Encoding header.
        // Without this, a cache might mistakenly serve a compressed response to
        // a client that cannot decompress it, or serve an uncompressed response
        // to a client that could have benefited from compression.
        add_vary_header(response.headers_mut());

        if should_compress_response(
            &method,
            &request_headers,
            response.status(),
            response.headers(),
            response.extensions(),
        ) {
            response = apply_gzip_compression(response);
        }
    }

    response.headers_mut().insert(
        HEADER_REQUEST_ID,
        http::header::HeaderValue::from_str(&request_id).unwrap(),
    );
    Ok(response)
}

// This function should probably be parametrized by some name of the service
// that is expected to be unique within an organization.  That way, it would be
// possible to determine from a given request id which service it was from.
// TODO should we encode more information here?  Service?  Instance?  Time up to
// the hour?
fn generate_request_id() -> String {
    format!("{}", Uuid::new_v4())
}

/// Longest incoming request id taken (see [`incoming_request_id`]).
pub const MAX_INCOMING_REQUEST_ID: usize = 64;

/// The client's `x-request-id`, when there is exactly one and it is sane: 1
/// to [`MAX_INCOMING_REQUEST_ID`] characters of `A-Z a-z 0-9 - _ . :` (so it
/// is safe in a header, a log line and a shell). Anything else is ignored and
/// a fresh id is generated.
pub fn incoming_request_id(headers: &http::HeaderMap) -> Option<String> {
    let mut values = headers.get_all(HEADER_REQUEST_ID).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let text = value.to_str().ok()?;
    let sane = !text.is_empty()
        && text.len() <= MAX_INCOMING_REQUEST_ID
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    sane.then(|| text.to_owned())
}

/// ServerConnectionHandler is a Hyper Service implementation that forwards
/// incoming connections to `http_connection_handle()`, providing the server
/// state object as an additional argument.  We could use `make_service_fn` here
/// using a closure to capture the state object, but the resulting code is a bit
/// simpler without it.
pub struct ServerConnectionHandler<C: ServerContext> {
    /// backend state that will be made available to the connection handler
    server: Arc<DropshotState<C>>,
}

impl<C: ServerContext> ServerConnectionHandler<C> {
    /// Create an ServerConnectionHandler with the given state object that
    /// will be made available to the handler.
    fn new(server: Arc<DropshotState<C>>) -> Self {
        ServerConnectionHandler { server }
    }

    /// Initial entry point for handling a new connection to the HTTP server.
    /// This is invoked by Hyper when a new connection is accepted.  This function
    /// must return a Hyper Service object that will handle requests for this
    /// connection.
    fn make_http_request_handler(
        &self,
        remote_addr: SocketAddr,
        conn: Arc<ConnState>,
    ) -> ServerRequestHandler<C> {
        info!(self.server.log, "accepted connection"; "remote_addr" => %remote_addr);
        ServerRequestHandler { server: self.server.clone(), remote_addr, conn }
    }
}

/// ServerRequestHandler is a Hyper Service implementation that forwards
/// incoming requests to `http_request_handle_wrap()`, including as an argument
/// the backend server state object.  We could use `service_fn` here using a
/// closure to capture the server state object, but the resulting code is a bit
/// simpler without all that.
pub struct ServerRequestHandler<C: ServerContext> {
    /// backend state that will be made available to the request handler
    server: Arc<DropshotState<C>>,
    remote_addr: SocketAddr,
    /// the connection, for counting requests in flight on it
    conn: Arc<ConnState>,
}

impl<C: ServerContext> Service<Request<hyper::body::Incoming>>
    for ServerRequestHandler<C>
{
    type Response = Response<Body>;
    type Error = GenericError;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn call(&self, req: Request<hyper::body::Incoming>) -> Self::Future {
        // The connection is not idle (not to be shed) while this runs.
        let in_flight = self.conn.begin_request();
        let bodied = !hyper::body::Body::is_end_stream(req.body());
        let conn = Arc::clone(&self.conn);
        let fut = http_request_handle_wrap(
            Arc::clone(&self.server),
            self.remote_addr,
            req,
        );
        Box::pin(async move {
            let response = fut.await;
            // PATCHES.md item 30: a refused request may have left its body unread.
            conn.answered(bodied, response.as_ref().ok().map(|r| r.status()));
            drop(in_flight);
            response
        })
    }
}

/// Errors encountered while configuring a Dropshot server
#[derive(Debug, Error)]
pub enum BuildError {
    #[error("failed to bind to {address}")]
    BindError {
        address: SocketAddr,
        #[source]
        error: std::io::Error,
    },
    #[error("expected exactly one TLS private key")]
    NotOnePrivateKey,
    #[error("{context}")]
    PemError {
        context: String,
        #[source]
        error: rustls::pki_types::pem::Error,
    },
    #[error("{context}")]
    SystemError {
        context: String,
        #[source]
        error: std::io::Error,
    },
    #[error("unversioned servers cannot have endpoints with specific versions")]
    UnversionedServerHasVersionedRoutes,
}

impl BuildError {
    /// Generate an error for failure to bind to `address`
    fn bind_error(error: std::io::Error, address: SocketAddr) -> BuildError {
        BuildError::BindError { address, error }
    }

    /// Generate an error for any kind of `std::io::Error`
    ///
    /// `context` describes more about what we were trying to do that generated
    /// the error.
    fn generic_system<S: Into<String>>(
        error: std::io::Error,
        context: S,
    ) -> BuildError {
        BuildError::SystemError { context: context.into(), error }
    }
}

/// Start configuring a Dropshot server
#[derive(Debug)]
pub struct ServerBuilder<C: ServerContext> {
    // required caller-provided values
    private: C,
    log: Logger,
    api: DebugIgnore<ApiDescription<C>>,

    // optional caller-provided values
    config: ConfigDropshot,
    version_policy: VersionPolicy,
    tls: Option<ConfigTls>,
    connection_limits: ConnectionLimits,
    request_gate: DebugIgnore<Option<RequestGate>>,
    request_observer: DebugIgnore<Option<RequestObserver>>,
    request_ids: bool,
    request_span: DebugIgnore<Option<RequestSpan>>,
    response_headers: DebugIgnore<Option<ResponseHeaders>>,
    listener: Option<std::net::TcpListener>,
}

impl<C: ServerContext> ServerBuilder<C> {
    /// Start configuring a new Dropshot server
    ///
    /// * `api`: the API to be hosted on this server
    /// * `private`: your private data that will be made available in
    ///   `RequestContext`
    /// * `log`: a slog logger for all server events
    pub fn new(
        api: ApiDescription<C>,
        private: C,
        log: Logger,
    ) -> ServerBuilder<C> {
        ServerBuilder {
            private,
            log,
            api: DebugIgnore(api),
            config: Default::default(),
            version_policy: VersionPolicy::Unversioned,
            tls: Default::default(),
            connection_limits: Default::default(),
            request_gate: DebugIgnore(None),
            request_observer: DebugIgnore(None),
            request_ids: false,
            request_span: DebugIgnore(None),
            response_headers: DebugIgnore(None),
            listener: None,
        }
    }

    /// Serve on `listener`, already bound (PATCHES.md item 24), instead of
    /// binding the configuration's `bind_address`: connections waiting in its
    /// backlog are served, and no client is refused while the address changes
    /// hands (a process that listened on it for another purpose hands it
    /// over).
    pub fn listener(mut self, listener: std::net::TcpListener) -> Self {
        self.listener = Some(listener);
        self
    }

    /// Specify limits on open connections (see [`ConnectionLimits`]; the
    /// default has none but hyper's header read timeout)
    pub fn connection_limits(mut self, limits: ConnectionLimits) -> Self {
        self.connection_limits = limits;
        self
    }

    /// Specify a hook run on every request before routing and before the body
    /// is read (see [`RequestGate`])
    pub fn request_gate(mut self, gate: RequestGate) -> Self {
        self.request_gate = DebugIgnore(Some(gate));
        self
    }

    /// Specify a hook told about every answered request (see
    /// [`RequestObserver`])
    pub fn request_observer(mut self, observer: RequestObserver) -> Self {
        self.request_observer = DebugIgnore(Some(observer));
        self
    }

    /// Take the client's `x-request-id` as the request id when it is sane
    /// (see [`incoming_request_id`]; otherwise one is generated, as by
    /// default), and put `x-request-id` on every response, not only on
    /// errors. Off by default (upstream behaviour).
    pub fn request_ids(mut self, on: bool) -> Self {
        self.request_ids = on;
        self
    }

    /// Run each request inside the tracing span `make` returns for it (see
    /// [`RequestSpan`]); none by default.
    pub fn request_span(mut self, make: RequestSpan) -> Self {
        self.request_span = DebugIgnore(Some(make));
        self
    }

    /// Add headers to each response as `hook` decides from its request (see
    /// [`ResponseHeaders`]); none by default.
    pub fn response_headers(mut self, hook: ResponseHeaders) -> Self {
        self.response_headers = DebugIgnore(Some(hook));
        self
    }

    /// Specify the server configuration
    pub fn config(mut self, config: ConfigDropshot) -> Self {
        self.config = config;
        self
    }

    /// Specify the TLS configuration, if any
    ///
    /// `None` (the default) means no TLS.  The server will listen for plain
    /// HTTP.
    pub fn tls(mut self, tls: Option<ConfigTls>) -> Self {
        self.tls = tls;
        self
    }

    /// Specifies whether and how this server determines the API version to use
    /// for incoming requests
    ///
    /// All the interfaces related to [`VersionPolicy`] are considered
    /// experimental and may change in an upcoming release.
    pub fn version_policy(mut self, version_policy: VersionPolicy) -> Self {
        self.version_policy = version_policy;
        self
    }

    /// Start the server
    ///
    /// # Errors
    ///
    /// See [`ServerBuilder::build_starter()`].
    pub fn start(self) -> Result<HttpServer<C>, BuildError> {
        Ok(self.build_starter()?.start())
    }

    /// Build an `HttpServerStarter` that can be used to start the server
    ///
    /// Most consumers probably want to use `start()` instead.
    ///
    /// # Errors
    ///
    /// This fails if:
    ///
    /// * We could not bind to the requested IP address and TCP port
    /// * The provided `tls` configuration was not valid
    /// * The `version_policy` is `VersionPolicy::Unversioned` and `api` (the
    ///   `ApiDescription`) contains any endpoints that are version-restricted
    ///   (i.e., have "versions" set to anything other than
    ///   `ApiEndpointVersions::All)`.  Versioned routes are not supported with
    ///   unversioned servers.
    pub fn build_starter(self) -> Result<HttpServerStarter<C>, BuildError> {
        HttpServerStarter::new_internal(
            &self.config,
            self.api.0,
            self.private,
            &self.log,
            self.tls,
            self.version_policy,
            self.connection_limits,
            self.request_gate.0,
            self.request_observer.0,
            self.request_ids,
            self.request_span.0,
            self.response_headers.0,
            self.listener,
        )
    }
}

#[cfg(test)]
mod test {
    use super::*;
    // Referring to the current crate as "dropshot::" instead of "crate::"
    // helps the endpoint macro with module lookup.
    use crate as dropshot;
    use dropshot::ConfigLogging;
    use dropshot::ConfigLoggingLevel;
    use dropshot::HttpError;
    use dropshot::HttpResponseOk;
    use dropshot::RequestContext;
    use dropshot::endpoint;
    use dropshot::test_util::ClientTestContext;
    use dropshot::test_util::LogContext;
    use http::StatusCode;
    use hyper::Method;

    use futures::future::FusedFuture;

    #[endpoint {
        method = GET,
        path = "/handler",
    }]
    async fn handler(
        _rqctx: RequestContext<i32>,
    ) -> Result<HttpResponseOk<u64>, HttpError> {
        Ok(HttpResponseOk(3))
    }

    struct TestConfig {
        log_context: LogContext,
    }

    impl TestConfig {
        fn log(&self) -> &slog::Logger {
            &self.log_context.log
        }
    }

    fn create_test_server() -> (HttpServer<i32>, TestConfig) {
        let config_dropshot = ConfigDropshot::default();

        let mut api = ApiDescription::new();
        api.register(handler).unwrap();

        let config_logging =
            ConfigLogging::StderrTerminal { level: ConfigLoggingLevel::Warn };
        let log_context = LogContext::new("test server", &config_logging);
        let log = &log_context.log;

        let server = HttpServerStarter::new(&config_dropshot, api, 0, log)
            .unwrap()
            .start();

        (server, TestConfig { log_context })
    }

    async fn single_client_request(addr: SocketAddr, log: &slog::Logger) {
        let client_log = log.new(o!("http_client" => "dropshot test suite"));
        let client_testctx = ClientTestContext::new(addr, client_log);
        tokio::task::spawn(async move {
            let response = client_testctx
                .make_request(
                    Method::GET,
                    "/handler",
                    None as Option<()>,
                    StatusCode::OK,
                )
                .await;

            assert!(response.is_ok());
        })
        .await
        .expect("client request failed");
    }

    #[tokio::test]
    async fn test_server_run_then_close() {
        let (mut server, config) = create_test_server();
        let client = single_client_request(server.local_addr(), config.log());

        futures::select! {
            _ = client.fuse() => {},
            r = server => panic!("Server unexpectedly terminated: {:?}", r),
        }

        assert!(!server.is_terminated());
        assert!(server.close().await.is_ok());
    }

    #[tokio::test]
    async fn test_drop_server_without_close_okay() {
        let (server, _) = create_test_server();
        std::mem::drop(server);
    }

    #[tokio::test]
    async fn test_http_acceptor_happy_path() {
        const TOTAL: usize = 100;
        let tcp =
            tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = tcp.local_addr().expect("local_addr");
        let acceptor =
            HttpAcceptor {
                log: slog::Logger::root(slog::Discard, o!()),
                tcp,
                tracker: Tracker::new(Default::default()),
                error_logged: std::sync::Mutex::new(None),
            };

        let t1 = tokio::spawn(async move {
            for _ in 0..TOTAL {
                let _ = acceptor.accept().await;
            }
        });

        let t2 = tokio::spawn(async move {
            for _ in 0..TOTAL {
                tokio::net::TcpStream::connect(&addr).await.expect("connect");
            }
        });

        t1.await.expect("task 1");
        t2.await.expect("task 2");
    }
}
