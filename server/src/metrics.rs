//! Prometheus metrics, served at `/metrics` on the API port to whoever presents the metrics
//! token (`NETAPI_CHAT_METRICS_TOKEN`; without it there is no `/metrics` at all, and API
//! tokens never open it).
//!
//! Recording goes through the `metrics` facade (one call where the thing happens, named by the
//! functions below so that every name and label lives here); the Prometheus exporter of the
//! same project aggregates and renders them. When metrics are off no recorder is installed and
//! each call is a no-op. Labels take values from small fixed sets only (path templates, not
//! paths; known methods; status codes), so the number of series is bounded whatever clients
//! send. Histograms have fixed buckets (bounded memory), drained by an upkeep task.
//!
//! Counts kept elsewhere for other reasons (notifications delivered and given up, sessions and
//! subscriptions in memory) are read when scraped, not counted twice.

use crate::handlers::ChatServer;
use dropshot::{Body, HttpError, RequestContext, endpoint};
use http::{Response, StatusCode, header};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

/// The path of the metrics endpoint (`GET`, so `HEAD` too; only when metrics are on).
pub const PATH: &str = "/metrics";

/// HTTP requests answered, by `method`, `route` (path template) and `status`.
pub const HTTP_REQUESTS: &str = "netapi_chat_http_requests_total";
/// Time to answer an HTTP request, by `method` and `route`.
pub const HTTP_DURATION: &str = "netapi_chat_http_request_duration_seconds";
/// Duration of one store commit (one transaction, a group of batches).
pub const STORE_COMMIT_DURATION: &str = "netapi_chat_store_commit_duration_seconds";
/// Batches committed together in one transaction (group commit).
pub const STORE_COMMIT_GROUP: &str = "netapi_chat_store_commit_group_size";
/// 1 once a read met damaged database pages (`Store::is_damaged`): an alert, since the log
/// line that says so is written once.
pub const STORE_DAMAGED: &str = "netapi_chat_store_damaged";
/// Notifications handed to a subscription's delivery queue (new ones and, after a restart,
/// the undelivered ones resumed).
pub const NOTIFICATIONS_QUEUED: &str = "netapi_chat_notifications_queued_total";
/// Delivery attempts, by `outcome` (`delivered`, `gone`: 410, `failed`: to be retried or given
/// up).
pub const NOTIFICATION_ATTEMPTS: &str = "netapi_chat_notification_attempts_total";
/// Time of one delivery attempt (the callback POST).
pub const NOTIFICATION_ATTEMPT_DURATION: &str = "netapi_chat_notification_attempt_duration_seconds";
/// Notifications delivered since start.
pub const NOTIFICATIONS_DELIVERED: &str = "netapi_chat_notifications_delivered_total";
/// Notifications that became dead letters: given up after every attempt of the retry
/// schedule failed, or held by a subscription that delivery disabled.
pub const NOTIFICATIONS_GIVEN_UP: &str = "netapi_chat_notifications_given_up_total";
/// Notifications dropped undelivered and kept nowhere: their subscription deleted or expired,
/// their channel deleted, an `isComposing` lapsed. With the two above and what is held, they
/// account for every one queued.
pub const NOTIFICATIONS_DISCARDED: &str = "netapi_chat_notifications_discarded_total";
/// Subscriptions disabled by delivery since start (`410`, an undeliverable `notifyURL`,
/// failing for the give-up age, backlog full): their backlog became dead letters.
pub const SUBSCRIPTIONS_DISABLED: &str = "netapi_chat_subscriptions_disabled_total";
/// Requests refused `429` by a rate limit, by `limit` (`requests`, `auth_failures`,
/// `invitations`).
pub const RATE_LIMITED: &str = "netapi_chat_rate_limited_total";
/// Notifications in the durable outbox: waiting for their first attempt or for a retry (and
/// those an OMA 2012 subscription was delivered whose `Delivered` is being recorded: their row
/// goes with the record, `chat::delivered`).
pub const NOTIFICATIONS_UNDELIVERED: &str = "netapi_chat_notifications_undelivered";
/// Open chat sessions held in memory.
pub const SESSIONS: &str = "netapi_chat_sessions";
/// Notification subscriptions held in memory.
pub const SUBSCRIPTIONS: &str = "netapi_chat_subscriptions";
/// `1` on an instance that serves (a lone server, a cluster's leader), `0` on a cluster's
/// standby (its own `/metrics`, `cluster::standby_metrics`) and on one that cannot serve now
/// (`Store::serving`: its database unreachable, or its lease lapsed), so that a leader cut
/// off from the database does not count as a second leader next to the one that took over.
pub const CLUSTER_LEADING: &str = "netapi_chat_cluster_leading";
/// Standbys carrying this leader's callback attempts now (`notify::relay`).
pub const CLUSTER_CARRIERS: &str = "netapi_chat_cluster_carriers";
/// Callback attempts standbys carried for this leader and said how they went.
pub const NOTIFICATIONS_CARRIED: &str = "netapi_chat_notification_attempts_carried_total";
/// Callback attempts a standby was lost with, before it said how they went: made again here.
pub const NOTIFICATIONS_TAKEN_BACK: &str = "netapi_chat_notification_attempts_taken_back_total";
/// Callback attempts a standby made for the leader.
pub const STANDBY_CARRIED: &str = "netapi_chat_standby_attempts_made_total";
/// Requests a standby took to forward to the leader.
pub const STANDBY_FORWARDED: &str = "netapi_chat_standby_requests_total";
/// Requests a standby answered `503` itself.
pub const STANDBY_REFUSED: &str = "netapi_chat_standby_unavailable_total";

/// A standby's `/metrics` text (Prometheus text format): it leads nothing, and its two
/// counters. A standby has no recorder of its own; these three lines are all it knows.
pub fn standby_text(forwarded: u64, refused: u64, carried: u64) -> String {
    format!(
        "# HELP {CLUSTER_LEADING} 1 when this instance serves (leads), 0 on a standby or while its database is unreachable or unconfirmed\n\
         # TYPE {CLUSTER_LEADING} gauge\n\
         {CLUSTER_LEADING} 0\n\
         # HELP {STANDBY_FORWARDED} Requests this standby took to forward to the leader\n\
         # TYPE {STANDBY_FORWARDED} counter\n\
         {STANDBY_FORWARDED} {forwarded}\n\
         # HELP {STANDBY_REFUSED} Requests this standby answered 503 itself (no leader reached in time)\n\
         # TYPE {STANDBY_REFUSED} counter\n\
         {STANDBY_REFUSED} {refused}\n\
         # HELP {STANDBY_CARRIED} Callback attempts this standby made for the leader\n\
         # TYPE {STANDBY_CARRIED} counter\n\
         {STANDBY_CARRIED} {carried}\n"
    )
}

/// Bytes of stored bodies held in every subscription's delivery backlog (a notification
/// channel's until acknowledged), against `NETAPI_CHAT_DELIVERY_BUDGET_BYTES`.
pub const NOTIFICATIONS_HELD_BYTES: &str = "netapi_chat_notifications_held_bytes";
/// Best-effort indications (`isComposing`) held in every subscription's delivery queue: at
/// most `notify::MAX_TRANSIENT_HELD` per subscription.
pub const NOTIFICATIONS_TRANSIENT_HELD: &str = "netapi_chat_notifications_transient_held";
/// Best-effort indications (`isComposing`) dropped instead of queued: their subscription's
/// callback was failing or its queue held `notify::MAX_TRANSIENT_HELD` notifications.
pub const NOTIFICATIONS_TRANSIENT_DROPPED: &str =
    "netapi_chat_notifications_transient_dropped_total";
/// Age of the oldest notification a callback has not taken yet, in seconds (0 when none
/// waits): a delivery that fell behind, or stopped (a receiver down, a stuck task), shows here
/// long before a backlog is full.
pub const NOTIFICATIONS_OLDEST_AGE: &str = "netapi_chat_notifications_oldest_age_seconds";
/// Tasks alive in the process's runtime: timers, deliveries, connections. Bounded by live
/// data; a count that grows with history is a leak an operator can see.
pub const RUNTIME_TASKS: &str = "netapi_chat_runtime_tasks";

/// Buckets of the latency histograms, in seconds: 0.5 ms to 10 s.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Buckets of the commit group size (at most `store::MAX_GROUP`, 512).
const GROUP_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// How often histogram samples are folded into their buckets when nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder (once; later calls return the same handle) and starts
/// its upkeep task. Needs a tokio runtime.
pub fn install() -> Result<&'static PrometheusHandle, String> {
    if let Some(h) = HANDLE.get() {
        return Ok(h);
    }
    let bad = |e: metrics_exporter_prometheus::BuildError| format!("metrics: {e}");
    let handle = PrometheusBuilder::new()
        .set_buckets(&LATENCY_BUCKETS)
        .map_err(bad)?
        .set_buckets_for_metric(Matcher::Full(STORE_COMMIT_GROUP.to_owned()), &GROUP_BUCKETS)
        .map_err(bad)?
        .install_recorder()
        .map_err(bad)?;
    let handle = HANDLE.get_or_init(|| handle);
    describe();
    tokio::spawn(async {
        let mut tick = tokio::time::interval(UPKEEP_EVERY);
        loop {
            tick.tick().await;
            if let Some(h) = HANDLE.get() {
                h.run_upkeep();
            }
        }
    });
    Ok(handle)
}

/// The `# HELP` lines.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by method, route and status"
    );
    describe_histogram!(
        HTTP_DURATION,
        metrics::Unit::Seconds,
        "Time to answer an HTTP request"
    );
    describe_histogram!(
        STORE_COMMIT_DURATION,
        metrics::Unit::Seconds,
        "Duration of one store commit (group of batches)"
    );
    describe_histogram!(
        STORE_COMMIT_GROUP,
        "Batches committed together in one transaction"
    );
    describe_counter!(
        NOTIFICATIONS_QUEUED,
        "Notifications handed to delivery (new, or resumed at start)"
    );
    describe_counter!(
        NOTIFICATION_ATTEMPTS,
        "Notification delivery attempts, by outcome"
    );
    describe_histogram!(
        NOTIFICATION_ATTEMPT_DURATION,
        metrics::Unit::Seconds,
        "Time of one delivery attempt"
    );
    describe_counter!(NOTIFICATIONS_DELIVERED, "Notifications delivered");
    describe_counter!(
        NOTIFICATIONS_GIVEN_UP,
        "Notifications made dead letters (every attempt failed, or their subscription disabled)"
    );
    describe_counter!(
        NOTIFICATIONS_DISCARDED,
        "Notifications dropped undelivered with no dead letter (subscription or channel deleted or expired, isComposing lapsed)"
    );
    describe_counter!(
        RATE_LIMITED,
        "Requests refused 429 by a rate limit, by limit"
    );
    describe_gauge!(SESSIONS, "Chat sessions held");
    describe_gauge!(
        NOTIFICATIONS_UNDELIVERED,
        "Notifications in the outbox, not yet delivered or given up"
    );
    describe_gauge!(SUBSCRIPTIONS, "Notification subscriptions held");
    describe_gauge!(
        STORE_DAMAGED,
        "1 once a read met damaged database pages (the file needs repair), else 0"
    );
    describe_gauge!(
        CLUSTER_LEADING,
        "1 when this instance serves (leads), 0 on a standby or while its database is unreachable or unconfirmed"
    );
    describe_gauge!(
        NOTIFICATIONS_HELD_BYTES,
        "Bytes of notifications held for delivery, against the delivery budget"
    );
    describe_gauge!(
        NOTIFICATIONS_TRANSIENT_HELD,
        "isComposing indications held for delivery (at most 16 per subscription)"
    );
    describe_counter!(
        NOTIFICATIONS_TRANSIENT_DROPPED,
        "isComposing indications dropped instead of queued (callback failing or queue not short)"
    );
    describe_gauge!(
        NOTIFICATIONS_OLDEST_AGE,
        "Age in seconds of the oldest notification a callback has not taken yet (0: none)"
    );
    describe_gauge!(
        CLUSTER_CARRIERS,
        "Standbys carrying this leader's callback attempts now"
    );
    describe_counter!(
        NOTIFICATIONS_CARRIED,
        "Callback attempts standbys carried for this leader"
    );
    describe_counter!(
        NOTIFICATIONS_TAKEN_BACK,
        "Callback attempts a standby was lost with, made again by this instance"
    );
    describe_gauge!(
        RUNTIME_TASKS,
        "Tasks alive in the runtime (timers, deliveries, connections)"
    );
}

/// The `method` label: a method of HTTP, or `other` (a client may send any token).
fn method_label(method: &http::Method) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
    ];
    KNOWN
        .into_iter()
        .find(|m| *m == method.as_str())
        .unwrap_or("other")
}

/// Records an answered request under its route (`None`: a path the server does not know).
pub fn request(method: &http::Method, route: Option<&str>, status: u16, took: Duration) {
    let method = method_label(method);
    let route = route.unwrap_or("other").to_owned();
    metrics::counter!(HTTP_REQUESTS, "method" => method, "route" => route.clone(), "status" => status.to_string())
        .increment(1);
    metrics::histogram!(HTTP_DURATION, "method" => method, "route" => route)
        .record(took.as_secs_f64());
}

/// Records one store commit of `group` batches.
pub fn store_commit(group: usize, took: Duration) {
    metrics::histogram!(STORE_COMMIT_DURATION).record(took.as_secs_f64());
    metrics::histogram!(STORE_COMMIT_GROUP).record(group as f64);
}

/// Records a notification handed to a delivery queue.
pub fn notification_queued() {
    metrics::counter!(NOTIFICATIONS_QUEUED).increment(1);
}

/// Records a delivery attempt: `delivered`, `gone` or `failed`.
pub fn notification_attempt(outcome: &'static str, took: Duration) {
    metrics::counter!(NOTIFICATION_ATTEMPTS, "outcome" => outcome).increment(1);
    metrics::histogram!(NOTIFICATION_ATTEMPT_DURATION).record(took.as_secs_f64());
}

/// Records a `429` from a rate limit: `requests`, `auth_failures`, `invitations` or
/// `is_composing`.
pub fn rate_limited(limit: &'static str) {
    metrics::counter!(RATE_LIMITED, "limit" => limit).increment(1);
}

/// How long a scrape waits for the store's outbox count before leaving the gauge as it was.
const OUTBOX_COUNT_TIMEOUT: Duration = Duration::from_secs(2);

/// Sets the values read at scrape time, then renders everything.
async fn render(server: &ChatServer, handle: &PrometheusHandle) -> String {
    let serving = server.chat.store().serving();
    // Not asked of a database that is away or silent: the scrape would only wait it out.
    if serving {
        let count = server.chat.store().read(|backend| backend.outbox_len());
        if let Ok(Ok(Ok(Some(n)))) = tokio::time::timeout(OUTBOX_COUNT_TIMEOUT, count).await {
            metrics::gauge!(NOTIFICATIONS_UNDELIVERED).set(n as f64);
        }
    }
    metrics::counter!(NOTIFICATIONS_DELIVERED).absolute(crate::notify::delivered_count());
    metrics::counter!(NOTIFICATIONS_GIVEN_UP).absolute(crate::notify::dropped_count());
    metrics::counter!(NOTIFICATIONS_DISCARDED).absolute(crate::notify::discarded_count());
    metrics::counter!(SUBSCRIPTIONS_DISABLED).absolute(crate::notify::disabled_count());
    let (sessions, subscriptions) = server.chat.sizes();
    metrics::gauge!(SESSIONS).set(sessions as f64);
    metrics::gauge!(SUBSCRIPTIONS).set(subscriptions as f64);
    metrics::gauge!(NOTIFICATIONS_HELD_BYTES).set(server.chat.held_bytes() as f64);
    metrics::gauge!(NOTIFICATIONS_TRANSIENT_HELD).set(server.chat.held_transient() as f64);
    metrics::counter!(NOTIFICATIONS_TRANSIENT_DROPPED)
        .absolute(crate::notify::transient_dropped_count());
    let oldest_age_ms = server
        .chat
        .oldest_undelivered_ms()
        .map_or(0, |at| crate::store::now_ms().saturating_sub(at).max(0));
    metrics::gauge!(NOTIFICATIONS_OLDEST_AGE).set(oldest_age_ms as f64 / 1000.0);
    metrics::gauge!(CLUSTER_LEADING).set(if serving { 1.0 } else { 0.0 });
    let damaged = server.chat.store().is_damaged();
    metrics::gauge!(STORE_DAMAGED).set(if damaged { 1.0 } else { 0.0 });
    metrics::gauge!(CLUSTER_CARRIERS).set(server.chat.carriers() as f64);
    metrics::counter!(NOTIFICATIONS_CARRIED).absolute(crate::notify::relay::carried_count());
    metrics::counter!(NOTIFICATIONS_TAKEN_BACK).absolute(crate::notify::relay::taken_back_count());
    let tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    metrics::gauge!(RUNTIME_TASKS).set(tasks as f64);
    handle.run_upkeep();
    handle.render()
}

/// The Prometheus text format's media type, for a `/metrics` answer (a leader's or a
/// standby's, `cluster::standby_metrics`).
pub const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// What a `/metrics` request without the metrics token is told to present.
pub const CHALLENGE: &str = "Bearer realm=\"netapi-chat metrics\"";
/// The body of that `401`.
pub const TOKEN_REQUIRED: &str = "the metrics token is required\n";

/// Whether `headers` carry one `Authorization` field, `Bearer <token>` as the API reads it
/// (`auth::bearer_token`: the scheme in any case), the token compared in constant time. Two
/// fields are refused, as on the API: before, only the first was read, so an operator
/// endpoint and the API disagreed on a request carrying two.
pub fn authorized(headers: &http::HeaderMap, token: &str) -> bool {
    let mut fields = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(only), None) = (fields.next(), fields.next()) else {
        return false;
    };
    let Ok(given) = crate::auth::bearer_token(only.to_str().ok()) else {
        return false;
    };
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

/// The metrics in the Prometheus text format, to a caller with the metrics token; `401`
/// otherwise (API tokens do not open it).
#[endpoint { method = GET, path = "/metrics", unpublished = true }]
pub async fn metrics_endpoint(
    rqctx: RequestContext<ChatServer>,
) -> Result<Response<Body>, HttpError> {
    let server = rqctx.context();
    let (Some(token), Some(handle)) = (server.metrics_token.as_deref(), HANDLE.get()) else {
        return Err(HttpError::for_not_found(None, "no metrics".to_owned()));
    };
    let builder = Response::builder().header(header::CACHE_CONTROL, "no-store");
    let admitted = server.auth_failures.operator_token(
        rqctx.request.remote_addr().ip(),
        rqctx.request.headers(),
        token,
    );
    let response = match admitted {
        Ok(ok) => ok,
        Err(too_many) => return Ok(plain_refusal(&too_many)),
    };
    let response = if response {
        builder
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, TEXT_FORMAT)
            .body(Body::from(render(server, handle).await))
    } else {
        builder
            .status(StatusCode::UNAUTHORIZED)
            .header(header::WWW_AUTHENTICATE, CHALLENGE)
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Body::from(TOKEN_REQUIRED))
    };
    response.map_err(|e| HttpError::for_internal_error(e.to_string()))
}

/// An OMA refusal (the authentication-failure limit's `429`) as a plain-text answer with its
/// headers (`Retry-After`), for the operator endpoints, which do not speak the API's formats.
pub fn plain_refusal(e: &netapi_chat_runtime::ApiError) -> Response<Body> {
    let mut response = Response::new(Body::from(format!("{}\n", e.rendered())));
    *response.status_mut() = e.status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    for (name, value) in &e.headers {
        headers.insert(name.clone(), value.clone());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only one `Authorization` field carrying the metrics token opens it; the scheme is read
    /// in any case, as on the API.
    #[test]
    fn only_the_metrics_token_opens_it() {
        let h = |values: &[&str]| {
            let mut headers = http::HeaderMap::new();
            for v in values {
                headers.append(header::AUTHORIZATION, v.parse().unwrap());
            }
            headers
        };
        assert!(authorized(&h(&["Bearer s3cret"]), "s3cret"));
        assert!(authorized(&h(&["bearer s3cret"]), "s3cret"));
        assert!(!authorized(&h(&["Bearer s3cre"]), "s3cret"));
        assert!(!authorized(&h(&["Bearer s3cret2"]), "s3cret"));
        assert!(!authorized(&h(&["Basic s3cret"]), "s3cret"));
        assert!(!authorized(&h(&["s3cret"]), "s3cret"));
        assert!(!authorized(&h(&[]), "s3cret"));
        assert!(!authorized(
            &h(&["Bearer s3cret", "Bearer s3cret"]),
            "s3cret"
        ));
        assert!(!authorized(
            &h(&["Bearer s3cret", "Bearer other"]),
            "s3cret"
        ));
    }

    #[test]
    fn method_labels_are_a_fixed_set() {
        let m = |s: &str| http::Method::from_bytes(s.as_bytes()).unwrap();
        assert_eq!(method_label(&m("GET")), "GET");
        assert_eq!(method_label(&m("M-SEARCH")), "other");
        assert_eq!(method_label(&m("get")), "other");
    }
}
