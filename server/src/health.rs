//! Health endpoints for load balancers and orchestrators: `/healthz` (the process answers) and
//! `/readyz` (it can serve: the store thread answers and the data directory accepts writes).
//!
//! Both are operational, not part of the OMA API: unauthenticated (a load balancer has no
//! token), not in the published OpenAPI document (which is the API contract clients are
//! generated from), known to the request gate like the document paths (so `HEAD` works and
//! other methods get its `405`).
//!
//! Start-up restore needs no flag of its own: the listener is bound only after the state was
//! restored from the store ([`crate::server::start`]), so a server that answers has restored.

use crate::handlers::ChatServer;
use crate::store::Store;
use dropshot::{Body, HttpError, RequestContext, endpoint};
use http::{Response, StatusCode, header};
use std::time::{Duration, Instant};

/// The health paths, for the request gate: both `GET` (and so `HEAD`).
pub const PATHS: [&str; 2] = ["/healthz", "/readyz"];

/// How long `/readyz` waits for the store thread's answer before calling it not ready: a
/// store thread stuck that long behind commits is not serving requests in any useful time.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A probe's result is reused for this long, so that the unauthenticated `/readyz` costs at
/// most one small write a second however often it is called.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Readiness state: the store, and the last probe's time and result.
pub struct Health {
    store: Store,
    /// Held across a probe, so that one probe runs at a time and callers arriving meanwhile
    /// get its result.
    last: tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>,
}

impl Health {
    /// Readiness over `store`.
    pub fn new(store: Store) -> Health {
        Health {
            store,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// `Ok` when the store thread answered a probe (a write to the data directory, done on
    /// the store thread between commits, see [`crate::store::Backend::probe`]) within
    /// [`PROBE_TIMEOUT`]; else why not, for the log (the client gets a short text).
    pub async fn ready(&self) -> Result<(), String> {
        if self.store.has_failed() {
            return Err("the store failed; the server is stopping".to_owned());
        }
        if self.store.is_down() {
            return Err("the database is unreachable; reconnecting".to_owned());
        }
        if !self.store.holds_lease() {
            return Err(format!(
                "the database has not confirmed this server's session for {} s",
                crate::store::lease::LEASE.as_secs()
            ));
        }
        let mut last = self.last.lock().await;
        if let Some((at, result)) = last.as_ref()
            && at.elapsed() < PROBE_INTERVAL
        {
            return result.clone();
        }
        let answer = self.store.read(|backend| backend.probe());
        let result = match tokio::time::timeout(PROBE_TIMEOUT, answer).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(e.to_string()),
            Ok(Err(_)) => Err("the store has stopped".to_owned()),
            Err(_) => Err(format!(
                "the store did not answer within {} s",
                PROBE_TIMEOUT.as_secs()
            )),
        };
        if let Err(e) = &result {
            // Once per probe, not per request: a polling load balancer does not flood the log.
            tracing::warn!(reason = %e, "not ready");
        }
        *last = Some((Instant::now(), result.clone()));
        result
    }
}

/// A short plain-text answer nobody caches.
fn text(status: StatusCode, body: &'static str) -> Result<Response<Body>, HttpError> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from(body))
        .map_err(|e| HttpError::for_internal_error(e.to_string()))
}

/// Liveness: `200 ok` whenever the process answers HTTP at all, with this process's
/// instance id (`x-netapi-chat-instance`), by which a cluster's leader tells that its
/// cluster URL reaches it (`cluster::check_own_url`).
#[endpoint { method = GET, path = "/healthz", unpublished = true }]
pub async fn healthz(_rqctx: RequestContext<ChatServer>) -> Result<Response<Body>, HttpError> {
    let mut answer = text(StatusCode::OK, "ok\n")?;
    answer.headers_mut().insert(
        crate::cluster::INSTANCE,
        http::HeaderValue::from_static(crate::cluster::instance_id()),
    );
    Ok(answer)
}

/// Readiness: `200 ready`, or `503` with a short reason (the details go to the log, not to an
/// unauthenticated client).
#[endpoint { method = GET, path = "/readyz", unpublished = true }]
pub async fn readyz(rqctx: RequestContext<ChatServer>) -> Result<Response<Body>, HttpError> {
    match rqctx.context().health.ready().await {
        Ok(()) => text(StatusCode::OK, "ready\n"),
        Err(_) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the store is not answering or not writable\n",
        ),
    }
}
