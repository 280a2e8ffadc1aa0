//! Server configuration, read from the environment (every setting has a documented default, so
//! `cargo run --release` needs none).

use crate::callback_guard::CallbackPolicy;
use crate::chat::Limits;
use crate::chat::quota::InvitationLimits;
use crate::notify::rules::parse_duration;
use crate::notify::{BacklogLimit, RetryPolicy};
use crate::store::sqlite::Sync;
use netapi_chat_runtime::xml::XmlLimits;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything an operator can set.
#[derive(Clone, Debug)]
pub struct Config {
    /// `NETAPI_CHAT_BIND`: address to listen on. Default `127.0.0.1:8080`.
    pub bind: SocketAddr,
    /// `NETAPI_CHAT_PUBLIC_URL`: base URL clients reach the server at, used in `resourceURL`,
    /// `Location` and notification links. Default `http://` + the bound address.
    pub public_url: Option<String>,
    /// `NETAPI_CHAT_INVITATION_TIMEOUT_SECS`: how long an invitation waits for an answer before
    /// it times out. Default 120 s.
    pub invitation_timeout: Duration,
    /// `NETAPI_CHAT_MAX_BODY_BYTES`: largest request body accepted (413 above). Default 64 KiB.
    pub max_body_bytes: usize,
    /// `NETAPI_CHAT_RETRY_SCHEDULE`: delays before each attempt while a callback fails,
    /// e.g. `0,5s,5m,30m,2h,5h,10h,10h` (the default, about 27 h); past its end the last delay
    /// repeats, every gap capped at `delivery_max_backoff`.
    pub retry_schedule: Vec<Duration>,
    /// `NETAPI_CHAT_DELIVERY_MAX_BACKOFF`: longest gap between two attempts of a failing
    /// callback (a receiver's `Retry-After` excepted), so that one that recovers is noticed
    /// within it. Default `5m` (units ms, s, m, h; a bare number is seconds).
    pub delivery_max_backoff: Duration,
    /// `NETAPI_CHAT_DELIVERY_GIVE_UP_AFTER`: age at which a notification that still fails
    /// becomes a dead letter, and how long a callback may fail without a break before its
    /// subscription is disabled. Default (`None`): the retry schedule's total.
    pub delivery_give_up_after: Option<Duration>,
    /// `NETAPI_CHAT_DELIVERY_BACKLOG` (default 10000) notifications and
    /// `NETAPI_CHAT_DELIVERY_BACKLOG_BYTES` (default 16 MiB) of stored bodies: the most one
    /// subscription may have undelivered before it is disabled; also the most dead letters it
    /// keeps.
    pub delivery_backlog: BacklogLimit,
    /// `NETAPI_CHAT_NOTIFY_TIMEOUT_MS`: per-attempt timeout of a callback POST. Default 10 s.
    pub notify_timeout: Duration,
    /// `NETAPI_CHAT_DATA_DIR`: where the durable state lives. Default `./netapi-chat-data`.
    pub data_dir: PathBuf,
    /// `NETAPI_CHAT_SYNC`: `normal` (default; a commit survives a crash of the process) or
    /// `full` (it also survives a power cut; an fsync per group commit).
    pub sync: Sync,
    /// How requests are authenticated.
    pub auth: AuthConfig,
    /// `NETAPI_CHAT_CALLBACK_ALLOW_LOOPBACK=1` / `NETAPI_CHAT_CALLBACK_ALLOW_PRIVATE=1`: let
    /// callbacks reach loopback (local development, tests) or private-network addresses. Both
    /// off by default: such `notifyURL`s are refused at subscription time and at delivery.
    pub callbacks: CallbackPolicy,
    /// Limits (each `NETAPI_CHAT_MAX_*` / `NETAPI_CHAT_XML_MAX_*` variable; see the README).
    /// Invitation quotas are the inviter's own: `NETAPI_CHAT_MAX_PENDING_INVITATIONS`
    /// (unanswered invitations it sent, default 1000), `…_PER_INVITEE` (to one invitee,
    /// default 5) and `NETAPI_CHAT_INVITATION_RATE` (sent a minute, default 300; 0 = off).
    pub limits: Limits,
    /// XML parsing limits: `NETAPI_CHAT_XML_MAX_DEPTH` (default 32), `…_ELEMENTS` (10000),
    /// `…_ATTRIBUTES` (per element, 32), `…_TEXT_BYTES` (65536).
    pub xml: XmlLimits,
    /// `NETAPI_CHAT_RATE_LIMIT`: requests a second per access token (default 200; 0 = none),
    /// with bursts of `NETAPI_CHAT_RATE_BURST` (default: the rate).
    pub rate: (f64, f64),
    /// `NETAPI_CHAT_BODY_TIMEOUT_MS`: how long a request body may take to arrive once the
    /// request is authenticated (default 10 s); a slower one gets 408 and the connection is
    /// closed, so that trickled bodies cannot hold connections open.
    pub body_timeout: Duration,
    /// `NETAPI_CHAT_AUTH_FAILURE_LIMIT` failed authentications per client address (default 20;
    /// 0 = no limit) within `NETAPI_CHAT_AUTH_FAILURE_WINDOW_SECS` (default 60); past it the
    /// address gets 429 with `Retry-After` until the window ends, without its credentials being
    /// checked.
    pub auth_failures: (u32, Duration),
    /// `NETAPI_CHAT_LOG_LEVEL`: `warn` (default: problems only, e.g. failing callbacks),
    /// `info` (also one line per request), `debug`, `error`.
    pub log_level: dropshot::ConfigLoggingLevel,
    /// `NETAPI_CHAT_WEBHOOK_SECRET`: opt-in to one server-wide `whsec_…` secret that signs the
    /// notifications of every subscription whose client sent no secret of its own. Unset (the
    /// default): each new subscription gets a secret of its own; the server-wide secret is
    /// then only the one an earlier version generated into `<data dir>/webhook-secret`, for the
    /// subscriptions it made.
    pub webhook_secret: Option<String>,
    /// `NETAPI_CHAT_WEBHOOK_ROTATION_WINDOW`: how long a subscription's replaced secret keeps
    /// signing after `rotateSubscriptionSecret`. Default `24h`.
    pub rotation_window: Duration,
    /// Connection limits and shutdown (`NETAPI_CHAT_MAX_CONNECTIONS`, …; see [`Connections`]).
    pub connections: Connections,
}

/// Connection limits and graceful shutdown: what keeps a flood of connections, slow or idle
/// clients from exhausting file descriptors, and a stop from dropping requests.
#[derive(Clone, Copy, Debug)]
pub struct Connections {
    /// `NETAPI_CHAT_MAX_CONNECTIONS`: most client connections open at once; at the cap the
    /// connection idle the longest is closed to make room. Default (`None`): three quarters of
    /// the open-files limit (raised to its hard limit at start), leaving the rest for the
    /// store, callbacks and the listener, and at most [`DEFAULT_MAX_CONNECTIONS`].
    pub max: Option<usize>,
    /// `NETAPI_CHAT_IDLE_TIMEOUT_SECS`: a keep-alive connection with no request in flight is
    /// closed after this long. Default 60 s.
    pub idle_timeout: Duration,
    /// `NETAPI_CHAT_HEADER_READ_TIMEOUT_SECS`: time a client has to send a whole request head
    /// once it has started one (slow-header clients). Default 10 s.
    pub header_read_timeout: Duration,
    /// `NETAPI_CHAT_SHUTDOWN_GRACE_SECS`: on SIGTERM/SIGINT, how long requests in flight get to
    /// be answered before the process stops anyway. Default 10 s.
    pub shutdown_grace: Duration,
}

/// The default connection cap when the open-files limit allows more: hard limits of 500k+ are
/// common (systemd), and every open connection holds hyper's buffers; an operator who wants
/// more sets `NETAPI_CHAT_MAX_CONNECTIONS`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

impl Default for Connections {
    fn default() -> Self {
        Connections {
            max: None,
            idle_timeout: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Where access tokens come from.
#[derive(Clone, Debug)]
pub enum AuthConfig {
    /// `NETAPI_CHAT_TOKEN_FILE` (default `<data dir>/tokens`): a token file; when it does not
    /// exist one is generated at first start with one application token for every user (`*`),
    /// printed once.
    TokenFile(Option<PathBuf>),
    /// `NETAPI_CHAT_JWKS_FILE` set: OAuth 2.0 JWT access tokens (RS256/ES256) verified against
    /// that JWKS, with `NETAPI_CHAT_JWT_ISSUER`, `NETAPI_CHAT_JWT_AUDIENCE` (both required),
    /// `NETAPI_CHAT_JWT_USER_CLAIM` (default `sub`) and `NETAPI_CHAT_JWT_SCOPE` (default `chat`).
    Jwt {
        /// The JWKS file.
        jwks: PathBuf,
        /// Expected `iss`.
        issuer: String,
        /// Expected `aud`.
        audience: String,
        /// Claim naming the user(s).
        user_claim: String,
        /// Scope required.
        scope: String,
    },
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            invitation_timeout: Duration::from_secs(120),
            max_body_bytes: 64 * 1024,
            retry_schedule: RetryPolicy::default().schedule,
            delivery_max_backoff: RetryPolicy::default().max_backoff,
            delivery_give_up_after: None,
            delivery_backlog: BacklogLimit::default(),
            notify_timeout: Duration::from_secs(10),
            data_dir: PathBuf::from("netapi-chat-data"),
            sync: Sync::Normal,
            auth: AuthConfig::TokenFile(None),
            callbacks: CallbackPolicy::default(),
            webhook_secret: None,
            rotation_window: Duration::from_secs(24 * 3600),
            limits: Limits::default(),
            xml: XmlLimits::default(),
            rate: (200.0, 200.0),
            body_timeout: netapi_chat_runtime::negotiate::DEFAULT_BODY_TIMEOUT,
            auth_failures: (20, Duration::from_secs(60)),
            log_level: dropshot::ConfigLoggingLevel::Warn,
            connections: Connections::default(),
        }
    }
}

/// A setting that is present but does not parse.
#[derive(Debug)]
pub struct ConfigError {
    /// The variable's name.
    pub variable: &'static str,
    /// Its value.
    pub value: String,
    /// What was expected.
    pub expected: &'static str,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}={:?} is not valid: expected {}",
            self.variable, self.value, self.expected
        )
    }
}

impl std::error::Error for ConfigError {}

fn var<T: std::str::FromStr>(
    name: &'static str,
    expected: &'static str,
) -> Result<Option<T>, ConfigError> {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().map(Some).map_err(|_| ConfigError {
            variable: name,
            value: v,
            expected,
        }),
        Err(_) => Ok(None),
    }
}

/// A duration setting such as `5m`, `90s`, `1.5h`, `250ms` (a bare number is seconds).
fn duration_var(name: &'static str) -> Result<Option<Duration>, ConfigError> {
    match std::env::var(name) {
        Ok(v) => parse_duration(&v).map(Some).ok_or(ConfigError {
            variable: name,
            value: v,
            expected: "a duration such as 5m, 90s, 1.5h or 250ms",
        }),
        Err(_) => Ok(None),
    }
}

impl Config {
    /// The delivery policy these settings describe.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            schedule: self.retry_schedule.clone(),
            timeout: self.notify_timeout,
            max_backoff: self.delivery_max_backoff,
            give_up_after: self
                .delivery_give_up_after
                .unwrap_or_else(|| self.retry_schedule.iter().sum()),
            backlog: self.delivery_backlog,
        }
    }

    /// Reads the `NETAPI_CHAT_*` variables over the defaults.
    pub fn from_env() -> Result<Config, ConfigError> {
        let d = Config::default();
        Ok(Config {
            bind: var("NETAPI_CHAT_BIND", "an address such as 127.0.0.1:8080")?.unwrap_or(d.bind),
            public_url: std::env::var("NETAPI_CHAT_PUBLIC_URL")
                .ok()
                .map(|u| u.trim_end_matches('/').to_owned()),
            invitation_timeout: var::<f64>(
                "NETAPI_CHAT_INVITATION_TIMEOUT_SECS",
                "seconds, e.g. 120 or 0.5",
            )?
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(Duration::from_secs_f64)
            .unwrap_or(d.invitation_timeout),
            max_body_bytes: var("NETAPI_CHAT_MAX_BODY_BYTES", "a byte count")?
                .unwrap_or(d.max_body_bytes),
            retry_schedule: match std::env::var("NETAPI_CHAT_RETRY_SCHEDULE") {
                Ok(v) => RetryPolicy::parse_schedule(&v).ok_or(ConfigError {
                    variable: "NETAPI_CHAT_RETRY_SCHEDULE",
                    value: v,
                    expected: "comma-separated delays such as 0,5s,5m,2h",
                })?,
                Err(_) => d.retry_schedule,
            },
            delivery_max_backoff: duration_var("NETAPI_CHAT_DELIVERY_MAX_BACKOFF")?
                .unwrap_or(d.delivery_max_backoff),
            delivery_give_up_after: duration_var("NETAPI_CHAT_DELIVERY_GIVE_UP_AFTER")?,
            delivery_backlog: BacklogLimit {
                count: var("NETAPI_CHAT_DELIVERY_BACKLOG", "a number of notifications")?
                    .unwrap_or(d.delivery_backlog.count),
                bytes: var("NETAPI_CHAT_DELIVERY_BACKLOG_BYTES", "a byte count")?
                    .unwrap_or(d.delivery_backlog.bytes),
            },
            notify_timeout: var("NETAPI_CHAT_NOTIFY_TIMEOUT_MS", "milliseconds")?
                .map(Duration::from_millis)
                .unwrap_or(d.notify_timeout),
            data_dir: std::env::var_os("NETAPI_CHAT_DATA_DIR")
                .map(PathBuf::from)
                .unwrap_or(d.data_dir),
            auth: auth_from_env()?,
            callbacks: CallbackPolicy {
                allow_loopback: flag("NETAPI_CHAT_CALLBACK_ALLOW_LOOPBACK")?,
                allow_private: flag("NETAPI_CHAT_CALLBACK_ALLOW_PRIVATE")?,
            },
            webhook_secret: std::env::var("NETAPI_CHAT_WEBHOOK_SECRET").ok(),
            rotation_window: duration_var("NETAPI_CHAT_WEBHOOK_ROTATION_WINDOW")?
                .unwrap_or(d.rotation_window),
            connections: Connections {
                max: var::<usize>("NETAPI_CHAT_MAX_CONNECTIONS", "a count of at least 1")?
                    .map(|n| n.max(1))
                    .or(d.connections.max),
                idle_timeout: seconds("NETAPI_CHAT_IDLE_TIMEOUT_SECS")?
                    .unwrap_or(d.connections.idle_timeout),
                header_read_timeout: seconds("NETAPI_CHAT_HEADER_READ_TIMEOUT_SECS")?
                    .unwrap_or(d.connections.header_read_timeout),
                shutdown_grace: seconds("NETAPI_CHAT_SHUTDOWN_GRACE_SECS")?
                    .unwrap_or(d.connections.shutdown_grace),
            },
            log_level: match std::env::var("NETAPI_CHAT_LOG_LEVEL")
                .as_deref()
                .map(str::trim)
            {
                Err(_) | Ok("warn") => dropshot::ConfigLoggingLevel::Warn,
                Ok("info") => dropshot::ConfigLoggingLevel::Info,
                Ok("debug") => dropshot::ConfigLoggingLevel::Debug,
                Ok("error") => dropshot::ConfigLoggingLevel::Error,
                Ok(other) => {
                    return Err(ConfigError {
                        variable: "NETAPI_CHAT_LOG_LEVEL",
                        value: other.to_owned(),
                        expected: "error, warn, info or debug",
                    });
                }
            },
            limits: Limits {
                participants_per_session: var("NETAPI_CHAT_MAX_PARTICIPANTS", "a count")?
                    .unwrap_or(d.limits.participants_per_session),
                text_chars: var("NETAPI_CHAT_MAX_TEXT_CHARS", "a count")?
                    .unwrap_or(d.limits.text_chars),
                subscriptions_per_user: var("NETAPI_CHAT_MAX_SUBSCRIPTIONS_PER_USER", "a count")?
                    .unwrap_or(d.limits.subscriptions_per_user),
                sessions_per_user: var("NETAPI_CHAT_MAX_SESSIONS_PER_USER", "a count")?
                    .unwrap_or(d.limits.sessions_per_user),
                invitations: InvitationLimits {
                    per_inviter: var("NETAPI_CHAT_MAX_PENDING_INVITATIONS", "a count")?
                        .unwrap_or(d.limits.invitations.per_inviter),
                    per_pair: var("NETAPI_CHAT_MAX_PENDING_INVITATIONS_PER_INVITEE", "a count")?
                        .unwrap_or(d.limits.invitations.per_pair),
                    per_minute: var("NETAPI_CHAT_INVITATION_RATE", "invitations a minute")?
                        .unwrap_or(d.limits.invitations.per_minute),
                },
            },
            xml: XmlLimits {
                max_depth: var("NETAPI_CHAT_XML_MAX_DEPTH", "a count")?.unwrap_or(d.xml.max_depth),
                max_elements: var("NETAPI_CHAT_XML_MAX_ELEMENTS", "a count")?
                    .unwrap_or(d.xml.max_elements),
                max_attributes_per_element: var("NETAPI_CHAT_XML_MAX_ATTRIBUTES", "a count")?
                    .unwrap_or(d.xml.max_attributes_per_element),
                max_text_bytes: var("NETAPI_CHAT_XML_MAX_TEXT_BYTES", "a byte count")?
                    .unwrap_or(d.xml.max_text_bytes),
            },
            rate: {
                let rate: f64 =
                    var("NETAPI_CHAT_RATE_LIMIT", "requests a second")?.unwrap_or(d.rate.0);
                let burst: f64 = var("NETAPI_CHAT_RATE_BURST", "a count")?.unwrap_or(rate);
                (rate, burst)
            },
            body_timeout: var("NETAPI_CHAT_BODY_TIMEOUT_MS", "milliseconds")?
                .filter(|ms: &u64| *ms > 0)
                .map(Duration::from_millis)
                .unwrap_or(d.body_timeout),
            auth_failures: (
                var("NETAPI_CHAT_AUTH_FAILURE_LIMIT", "a count")?.unwrap_or(d.auth_failures.0),
                var("NETAPI_CHAT_AUTH_FAILURE_WINDOW_SECS", "seconds")?
                    .map(Duration::from_secs)
                    .unwrap_or(d.auth_failures.1),
            ),
            sync: match std::env::var("NETAPI_CHAT_SYNC").as_deref().map(str::trim) {
                Err(_) | Ok("normal") => Sync::Normal,
                Ok("full") => Sync::Full,
                Ok(other) => {
                    return Err(ConfigError {
                        variable: "NETAPI_CHAT_SYNC",
                        value: other.to_owned(),
                        expected: "normal or full",
                    });
                }
            },
        })
    }
}

fn auth_from_env() -> Result<AuthConfig, ConfigError> {
    let Some(jwks) = std::env::var_os("NETAPI_CHAT_JWKS_FILE") else {
        return Ok(AuthConfig::TokenFile(
            std::env::var_os("NETAPI_CHAT_TOKEN_FILE").map(PathBuf::from),
        ));
    };
    let required = |name: &'static str| {
        std::env::var(name).map_err(|_| ConfigError {
            variable: name,
            value: String::new(),
            expected: "a value (required with NETAPI_CHAT_JWKS_FILE)",
        })
    };
    Ok(AuthConfig::Jwt {
        jwks: PathBuf::from(jwks),
        issuer: required("NETAPI_CHAT_JWT_ISSUER")?,
        audience: required("NETAPI_CHAT_JWT_AUDIENCE")?,
        user_claim: std::env::var("NETAPI_CHAT_JWT_USER_CLAIM")
            .unwrap_or_else(|_| "sub".to_owned()),
        scope: std::env::var("NETAPI_CHAT_JWT_SCOPE").unwrap_or_else(|_| "chat".to_owned()),
    })
}

/// A positive duration in seconds (fractions allowed).
fn seconds(name: &'static str) -> Result<Option<Duration>, ConfigError> {
    match var::<f64>(name, "seconds, e.g. 10 or 0.5")? {
        None => Ok(None),
        Some(s) if s.is_finite() && s > 0.0 && s < 1e9 => Ok(Some(Duration::from_secs_f64(s))),
        Some(s) => Err(ConfigError {
            variable: name,
            value: s.to_string(),
            expected: "a positive number of seconds",
        }),
    }
}

fn flag(name: &'static str) -> Result<bool, ConfigError> {
    match std::env::var(name).as_deref().map(str::trim) {
        Err(_) | Ok("") | Ok("0") | Ok("false") | Ok("no") => Ok(false),
        Ok("1") | Ok("true") | Ok("yes") => Ok(true),
        Ok(other) => Err(ConfigError {
            variable: name,
            value: other.to_owned(),
            expected: "1 or 0",
        }),
    }
}
