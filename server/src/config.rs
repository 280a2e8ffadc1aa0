//! Server configuration: the environment over an optional TOML file over the defaults (every
//! setting has one, so `cargo run --release` needs none).
//!
//! Each setting is described once, in [`SETTINGS`] (environment variable, file key, default,
//! meaning): `netapi-chat --help`, `netapi-chat check-config` and the README's settings table
//! are made from it (a unit test keeps the README in step), and a file key or variable not in
//! it is refused by name.
//!
//! To add a setting: one line in [`SETTINGS`], a field in [`Config`] (with its typed default in
//! `Config::default`), and its reading in `Config::read` (checks across settings: in
//! [`Config::from_sources`]) with the [`Sources`] helpers
//! (`s.var("NETAPI_CHAT_X", "what is expected")?`, `s.number` for a number within a range,
//! `s.flag`, `s.seconds`, `s.duration_in`, `s.text`): a value out of range is refused naming the
//! setting, never replaced by the default (`check-config` would show it as in force), and the
//! reason for a range goes in the field's documentation and its text in [`SETTINGS`]; then
//! `UPDATE_EXPECT=1 cargo test -p netapi-chat --lib config` rewrites the README table. The unit
//! tests check that every listed setting is read, that nothing unlisted is, and that the listed
//! defaults are the typed ones.

use crate::callback_guard::CallbackPolicy;
use crate::chat::Limits;
use crate::chat::quota::InvitationLimits;
use crate::notify::rules::parse_duration;
use crate::notify::{BacklogLimit, RetryPolicy};
use crate::retention::Retention;
use crate::store::sqlite::Sync;
use netapi_chat_runtime::xml::XmlLimits;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything an operator can set.
#[derive(Clone, Debug)]
pub struct Config {
    /// `NETAPI_CHAT_BIND`: address to listen on. Default `127.0.0.1:8080`.
    pub bind: SocketAddr,
    /// `NETAPI_CHAT_PUBLIC_URL`: base URL clients reach the server at, used in `resourceURL`,
    /// `Location` and notification links. Default `http://` + the bound address. An absolute
    /// `http://` or `https://` URL with a host ([`is_base_url`]), its trailing `/` dropped; a
    /// path is allowed (a proxy that serves the API under a prefix). Anything else is refused:
    /// every link is this followed by a path, so `notaurl` or `ftp://x` broke them all, and
    /// user info, a query or a fragment would be copied into each. Blank: the default, which
    /// with a bind address of every address names that address ([`Config::warnings`]).
    pub public_url: Option<String>,
    /// `NETAPI_CHAT_INVITATION_TIMEOUT_SECS`: how long an invitation waits for an answer before
    /// it times out. Default 120 s. A positive number of seconds below 10⁹ (fractions allowed):
    /// 0 or less would time every invitation out as it is sent, and anything else (`nan`,
    /// `inf`) is refused rather than replaced by the default, which `check-config` would not
    /// show.
    pub invitation_timeout: Duration,
    /// `NETAPI_CHAT_ADHOC_IDLE_SECS`: how long an OMA 2012 ad hoc chat stays open without a
    /// message before the server ends it. Default 600 s. A positive number of seconds below
    /// 10⁹, as `invitation_timeout` and for the same reasons (0 would end every ad hoc chat as
    /// it opens).
    pub adhoc_idle: Duration,
    /// `NETAPI_CHAT_SESSION_IDLE_SECS`: how long any other session stays open without a
    /// message or a change of its participants before the server ends it. Default 7 days. A
    /// positive number of seconds below 10⁹ (the largest keeps sessions for some 31 years).
    pub session_idle: Duration,
    /// `NETAPI_CHAT_MAX_BODY_BYTES`: largest request body accepted (413 above). Default 64 KiB;
    /// at least [`MIN_BODY_BYTES`], which holds the smallest document of every request (the
    /// largest of them, a subscription in XML with its declaration, namespace and a short
    /// `notifyURL`, is about 250 bytes): below it some requests could not be made at all, and
    /// at 0 every write was answered 413.
    pub max_body_bytes: usize,
    /// `NETAPI_CHAT_RETRY_SCHEDULE`: delays before each attempt while a callback fails,
    /// e.g. `0,5s,5m,30m,2h,5h,10h,10h` (the default, about 27 h); past its end the last delay
    /// repeats, every gap capped at `delivery_max_backoff`. Its last delay must be above 0
    /// while failing callbacks are retried at all (a give-up age above 0): repeated, 0 would
    /// retry a failing receiver in a tight loop until the give-up age. `0` alone (one try, given
    /// up at once: its total, the default give-up age, is 0) stays allowed.
    pub retry_schedule: Vec<Duration>,
    /// `NETAPI_CHAT_DELIVERY_MAX_BACKOFF`: longest gap between two attempts of a failing
    /// callback (a receiver's `Retry-After` excepted), so that one that recovers is noticed
    /// within it. Default `5m` (units ms, s, m, h; a bare number is seconds). At least 1 ms:
    /// a cap of 0 would make every retry immediate, a tight loop against a failing receiver.
    pub delivery_max_backoff: Duration,
    /// `NETAPI_CHAT_DELIVERY_GIVE_UP_AFTER`: age at which a notification that still fails
    /// becomes a dead letter, and how long a callback may fail without a break before its
    /// subscription is disabled. Default (`None`): the retry schedule's total. 0 is allowed
    /// (one try, then the subscription is disabled), but not above 0 with the one-try schedule
    /// `0`, whose repeated 0 delay would retry in a tight loop until that age.
    pub delivery_give_up_after: Option<Duration>,
    /// `NETAPI_CHAT_DELIVERY_BACKLOG` (default 10000) notifications and
    /// `NETAPI_CHAT_DELIVERY_BACKLOG_BYTES` (default 16 MiB) of stored bodies: the most one
    /// subscription may have undelivered before it is disabled; also the most dead letters it
    /// keeps. A notification counts from its commit until it is delivered, so a cap must hold
    /// at least one, else every subscription is disabled by its first notification even with a
    /// healthy receiver (as 0 did): at least 1 notification and [`MIN_BACKLOG_BYTES`].
    pub delivery_backlog: BacklogLimit,
    /// `NETAPI_CHAT_DELIVERY_BUDGET_BYTES` (default 256 MiB) of stored bodies: what every
    /// subscription's backlog may hold together (held decoded in memory until delivered, or in
    /// a notification channel until acknowledged);
    /// past it the backlogs over their share are disabled (`notify::rules::over_budget`). At
    /// least [`MIN_BACKLOG_BYTES`], for the same reason as a backlog's own cap.
    pub delivery_budget_bytes: usize,
    /// `NETAPI_CHAT_NOTIFY_TIMEOUT_MS`: per-attempt timeout of a callback POST. Default 10 s;
    /// at least 1 ms, like every timeout (0 would fail every attempt before it is sent).
    pub notify_timeout: Duration,
    /// `NETAPI_CHAT_DELIVERY_CONNECTIONS_PER_ENDPOINT` (default
    /// [`crate::notify::endpoints::DEFAULT_PER_ENDPOINT`]): most connections deliveries hold
    /// open (in use or idle) to one callback endpoint; deliveries past it wait for one. Without
    /// it one message to a large group opened a connection per subscription at once (~2,000
    /// to one receiver). 1 to [`crate::notify::endpoints::MAX_CAP`].
    pub delivery_connections_per_endpoint: usize,
    /// `NETAPI_CHAT_DELIVERY_CONNECTIONS`: most connections deliveries hold open in all.
    /// Default (`None`): an eighth of the open-files limit less [`RESERVED_FILES`], at most
    /// [`crate::notify::endpoints::DEFAULT_MAX_TOTAL`] ([`file_shares`]), so that deliveries
    /// never take the file descriptors of the listener's `NETAPI_CHAT_MAX_CONNECTIONS`. 1 to
    /// [`crate::notify::endpoints::MAX_CAP`].
    pub delivery_connections: Option<usize>,
    /// `NETAPI_CHAT_DATA_DIR`: where the durable state lives. Default `./netapi-chat-data`.
    pub data_dir: PathBuf,
    /// `NETAPI_CHAT_DATABASE_URL`: `postgres://…` stores everything in that PostgreSQL
    /// database instead of SQLite in the data directory (which then holds only the token file
    /// and webhook secret). Unset (the default): SQLite. Several servers share one only with `NETAPI_CHAT_CLUSTER_URL` (`crate::cluster`).
    /// Another scheme is refused showing only the scheme ([`scheme_only`]): the rest may hold
    /// the database password.
    pub database_url: Option<String>,
    /// `NETAPI_CHAT_CLUSTER_URL`: the URL at which the other instances on the same PostgreSQL
    /// database reach this one (`http://host:port`, `https://host:port` when it serves HTTPS,
    /// or `auto` for `http://` or, with TLS, `https://` + the bound address). Set: this instance is one of several (`crate::cluster`): it leads (serves
    /// from its memory, delivers, fires timers) while it holds the database, and forwards
    /// every request to the instance that does otherwise. Unset (the default): one server
    /// per database.
    pub cluster_url: Option<crate::cluster::ClusterUrl>,
    /// `NETAPI_CHAT_CLUSTER_DELIVERY`: `standbys` (the default) lets a cluster's standbys carry
    /// the leader's callback attempts (`notify::relay`); `leader` keeps every attempt on the
    /// leader. Read by both sides: a standby set to `leader` does not offer, a leader set to
    /// `leader` does not accept.
    pub standbys_deliver: bool,
    /// `NETAPI_CHAT_SYNC`: `normal` (default; a commit survives a crash of the process) or
    /// `full` (it also survives a power cut; an fsync per group commit).
    pub sync: Sync,
    /// `NETAPI_CHAT_CACHE_MB`: the budget of the store's page cache, the one cache of stored
    /// data in memory (messages are read through it). Default 8.
    pub cache_mb: u32,
    /// How requests are authenticated.
    pub auth: AuthConfig,
    /// `NETAPI_CHAT_CALLBACK_ALLOW_LOOPBACK=1` / `NETAPI_CHAT_CALLBACK_ALLOW_PRIVATE=1`: let
    /// callbacks reach loopback (local development, tests) or private-network addresses. Both
    /// off by default: such `notifyURL`s are refused at subscription time and at delivery.
    pub callbacks: CallbackPolicy,
    /// Limits (each `NETAPI_CHAT_MAX_*` / `NETAPI_CHAT_XML_MAX_*` variable; see the README).
    /// Invitation quotas: the inviter's own `NETAPI_CHAT_MAX_PENDING_INVITATIONS` (unanswered
    /// invitations it sent, default 1000), `…_PER_INVITEE` (to one invitee, default 5) and
    /// `NETAPI_CHAT_INVITATION_RATE` (sent a minute, default 300; 0 = off); and the invitee's
    /// `…_RECEIVED` (waiting for one user from every inviter, default 100).
    ///
    /// Ranges (a value outside is refused): `NETAPI_CHAT_MAX_PARTICIPANTS` at least 2, since
    /// the originator counts and a session needs one other participant (0 or 1 refused every
    /// session); `NETAPI_CHAT_MAX_TEXT_CHARS` at least 1 (0 refused every message);
    /// `NETAPI_CHAT_CHANNEL_POLL_WAIT` from [`MIN_CHANNEL_POLL_WAIT`] to
    /// [`MAX_CHANNEL_POLL_WAIT`]. The per-user
    /// quotas at least 1, each because 0 would stop the service for everyone:
    /// `NETAPI_CHAT_MAX_SUBSCRIPTIONS_PER_USER` (every notification, of an invitation or a
    /// message, reaches a user through a subscription), `NETAPI_CHAT_MAX_SESSIONS_PER_USER` (no
    /// one could start, accept or join a chat), `NETAPI_CHAT_MAX_PENDING_INVITATIONS` and
    /// `…_PER_INVITEE` (no one could invite, so no session could start). Not
    /// `NETAPI_CHAT_MAX_CHANNELS_PER_USER`: 0 is a service, notifications by callback only.
    pub limits: Limits,
    /// XML parsing limits: `NETAPI_CHAT_XML_MAX_DEPTH` (default 32), `…_ELEMENTS` (10000),
    /// `…_ATTRIBUTES` (per element, 32), `…_TEXT_BYTES` (65536). Each has a minimum (see
    /// [`MIN_XML_LIMITS`]) under which some request documents could not be sent in XML at all
    /// (at 0, none could).
    pub xml: XmlLimits,
    /// `NETAPI_CHAT_RATE_LIMIT`: requests a second per access token (default 200; 0 = none),
    /// with bursts of `NETAPI_CHAT_RATE_BURST` (default: the rate, at least 1). The rate is 0 or
    /// from [`MIN_RATE`] up, finite: a negative one turned the limit off unsaid, `nan` refused
    /// every request 429, and below [`MIN_RATE`] a token could not finish one chat flow while
    /// `Retry-After` ran to years. The burst is at least 1, finite: a bucket that never holds a
    /// whole request would refuse every one (the limiter used to raise it to 1 silently).
    pub rate: (f64, f64),
    /// `NETAPI_CHAT_BODY_TIMEOUT_MS`: how long a request body may take to arrive once the
    /// request is authenticated (default 10 s); a slower one gets 408 and the connection is
    /// closed, so that trickled bodies cannot hold connections open. At least 1 ms, like every
    /// timeout: 0 would answer every body 408 (it was silently replaced by the default, which
    /// `check-config` did not show).
    pub body_timeout: Duration,
    /// `NETAPI_CHAT_AUTH_FAILURE_LIMIT` failed authentications per client address (default 20;
    /// 0 = no limit) within `NETAPI_CHAT_AUTH_FAILURE_WINDOW_SECS` (default 60); past it the
    /// address gets 429 with `Retry-After` until the window ends, without its credentials being
    /// checked. The window is 1 s to a day ([`MAX_AUTH_FAILURE_WINDOW`]): 0 was silently made
    /// 1 s; a longer one would lock out an address (often a NAT or proxy many clients share)
    /// for longer than an operator would notice, and one near 2⁶⁴ s overflowed the clock (a
    /// panic at the first failure).
    pub auth_failures: (u32, Duration),
    /// `NETAPI_CHAT_LOG_LEVEL`: `warn` (default: problems only, e.g. failing callbacks),
    /// `info` (also one line per request), `debug`, `error`.
    pub log_level: dropshot::ConfigLoggingLevel,
    /// `NETAPI_CHAT_LOG_FORMAT`: `text` (default) or `json` (one JSON object per line).
    pub log_format: LogFormat,
    /// `NETAPI_CHAT_OTLP_ENDPOINT`: the OpenTelemetry collector (`http://host:port`) the request
    /// spans are exported to (`crate::logging`); none by default. Needs the `otel` feature.
    pub otlp_endpoint: Option<String>,
    /// `NETAPI_CHAT_WEBHOOK_SECRET`: opt-in to one server-wide `whsec_…` secret that signs the
    /// notifications of every subscription whose client sent no secret of its own. Unset (the
    /// default): each new subscription gets a secret of its own; the server-wide secret is
    /// then only the one an earlier version generated into `<data dir>/webhook-secret`, for the
    /// subscriptions it made.
    pub webhook_secret: Option<String>,
    /// `NETAPI_CHAT_WEBHOOK_ROTATION_WINDOW`: how long a subscription's replaced secret keeps
    /// signing after `rotateSubscriptionSecret`. Default `24h`. 0 is allowed: the replaced
    /// secret stops signing at once (a receiver that takes the new one first).
    pub rotation_window: Duration,
    /// Connection limits and shutdown (`NETAPI_CHAT_MAX_CONNECTIONS`, …; see [`Connections`]).
    pub connections: Connections,
    /// `NETAPI_CHAT_METRICS_TOKEN`: the bearer token that opens `/metrics`; unset (the
    /// default): no metrics are recorded and there is no `/metrics`.
    pub metrics_token: Option<String>,
    /// `NETAPI_CHAT_CORS_ORIGINS`: the origins whose web pages may call the API (`*`, or a
    /// list); unset (the default): no CORS headers, `OPTIONS` is `405`. See [`crate::cors`].
    pub cors_origins: Option<crate::cors::Origins>,
    /// `NETAPI_CHAT_TRUSTED_PROXIES`: the addresses or networks of the proxies in front of the
    /// server (a load balancer, a TLS terminator), whose `X-Forwarded-For` names the client;
    /// empty (the default): every connection is its own client. See [`crate::proxies`].
    pub trusted_proxies: Vec<crate::proxies::Net>,
    /// `NETAPI_CHAT_ADMIN_TOKEN`: the bearer token that opens the admin endpoints (see
    /// [`crate::admin_api`]), which `netapi-chat backup` and `summary` call; unset (the
    /// default): there are none.
    pub admin_token: Option<String>,
    /// `NETAPI_CHAT_RETENTION`: how long a message is kept after it was sent, as a duration
    /// such as `30d` (the default), `12h` or `90s`; older ones are purged in the background
    /// and answer like messages that never existed. `NETAPI_CHAT_PURGE_INTERVAL_MS`: time
    /// between purge rounds (default 10 000). See [`crate::retention`].
    pub retention: Retention,
    /// `NETAPI_CHAT_TLS_CERT` and `NETAPI_CHAT_TLS_KEY`: PEM files of the certificate chain and
    /// its key; both set, the server speaks HTTPS only (see [`crate::tls`]). Default (`None`):
    /// plain HTTP.
    pub tls: Option<crate::tls::TlsFiles>,
    /// `NETAPI_CHAT_CALLBACK_CA_FILE`: PEM root certificates trusted for `https` notifyURLs
    /// besides Mozilla's (a receiver behind a private CA). Default (`None`): Mozilla's only.
    pub callback_ca_file: Option<PathBuf>,
    /// `NETAPI_CHAT_DATABASE_CA_FILE`: PEM root certificates trusted for the PostgreSQL
    /// server's certificate besides Mozilla's (with `sslmode=require` in the database URL).
    pub database_ca_file: Option<PathBuf>,
    /// `NETAPI_CHAT_CLUSTER_CA_FILE`: PEM root certificates trusted for an `https://` leader's
    /// certificate besides Mozilla's, when this instance stands by and forwards to it: the
    /// instances of a cluster usually carry certificates of the operator's private CA.
    /// Default (`None`): Mozilla's only.
    pub cluster_ca_file: Option<PathBuf>,
}

impl Config {
    /// What is valid but likely not meant, one sentence each: logged as warnings when the
    /// server starts and printed by `check-config`. Bound to every address (`0.0.0.0`, `::`)
    /// without `NETAPI_CHAT_PUBLIC_URL`, the links the server writes default to that address,
    /// which no client on another machine can follow; the usual container setting, so it is
    /// said rather than refused (the links are as documented).
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.bind.ip().is_unspecified() && self.public_url.is_none() {
            let scheme = if self.tls.is_some() { "https" } else { "http" };
            warnings.push(format!(
                "NETAPI_CHAT_BIND is {bind}, every address, and NETAPI_CHAT_PUBLIC_URL is not \
                 set: every Location, resourceURL and notification link will name {ip} \
                 ({scheme}://{bind}/…), which clients on other machines cannot follow; set \
                 NETAPI_CHAT_PUBLIC_URL to the URL clients reach the server at, e.g. \
                 https://chat.example.com",
                bind = self.bind,
                ip = self.bind.ip(),
            ));
        }
        warnings
    }

    /// The token file in use: `NETAPI_CHAT_TOKEN_FILE`, else `<data dir>/tokens`; `None` when
    /// tokens are JWTs (they come from an identity provider, not from a file).
    pub fn token_file(&self) -> Option<PathBuf> {
        match &self.auth {
            AuthConfig::TokenFile(path) => {
                Some(path.clone().unwrap_or_else(|| self.data_dir.join("tokens")))
            }
            AuthConfig::Jwt { .. } => None,
        }
    }
}

/// How log lines are written on stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Readable lines (dropshot's terminal format).
    #[default]
    Text,
    /// One JSON object per line (`msg`, `level`, `ts` and every key of the line, e.g. `req_id`).
    Json,
}

/// Connection limits and graceful shutdown: what keeps a flood of connections, slow or idle
/// clients from exhausting file descriptors, and a stop from dropping requests.
#[derive(Clone, Copy, Debug)]
pub struct Connections {
    /// `NETAPI_CHAT_MAX_CONNECTIONS`: most client connections open at once, WebSockets
    /// included until they close; at the cap the connection idle the longest is closed to
    /// make room. Default (`None`): [`file_shares`] of the open-files limit (raised to its
    /// hard limit at start): three quarters of what is left once [`RESERVED_FILES`] are kept
    /// for the server's own files, half that on a standby, at most
    /// [`DEFAULT_MAX_CONNECTIONS`]. Given: 1 to
    /// [`MAX_CONNECTIONS_LIMIT`]; 0 is refused (it was silently made 1, although the message
    /// for a value that does not parse already said "at least 1"), and the upper bound keeps
    /// a standby's connection semaphore (at most 2⁶¹ permits) from panicking.
    pub max: Option<usize>,
    /// `NETAPI_CHAT_IDLE_TIMEOUT_SECS`: a keep-alive connection with no request in flight is
    /// closed after this long. Default 60 s.
    pub idle_timeout: Duration,
    /// `NETAPI_CHAT_HEADER_READ_TIMEOUT_SECS`: time a client has to send a whole request head
    /// once it has started one (slow-header clients). Default 10 s.
    pub header_read_timeout: Duration,
    /// `NETAPI_CHAT_WRITE_STALL_SECS`: a connection whose writes have been blocked this long
    /// (its client does not read the answer it asked for) is closed, its answer cut, so that
    /// neither the answer's memory nor the socket's send buffer is held for a client that
    /// does not read. Each write that goes through starts it again: slow readers are not
    /// affected. Default 30 s.
    pub write_stall: Duration,
    /// `NETAPI_CHAT_MAX_HEADER_BYTES`: most bytes of a request head (request line and
    /// headers; HTTP/1): a larger one is answered `431` and its connection closed. It also
    /// sizes what a connection may make the server buffer before it is authenticated
    /// ([`read_buffer_bytes`]: twice this), so memory is bounded by connections × that, not by
    /// what clients send (hyper's own default is about 400 KiB). Default 16 KiB, which holds
    /// the largest token accepted (8 KiB) with room for the rest of the head; at least 8 KiB
    /// (hyper's smallest read buffer), where a token near the largest no longer fits.
    pub max_header_bytes: usize,
    /// `NETAPI_CHAT_SHUTDOWN_GRACE_SECS`: on SIGTERM/SIGINT, how long requests in flight get to
    /// be answered before the process stops anyway. Default 10 s.
    pub shutdown_grace: Duration,
}

/// The default connection cap when the open-files limit allows more: hard limits of 500k+ are
/// common (systemd), and every open connection holds hyper's buffers; an operator who wants
/// more sets `NETAPI_CHAT_MAX_CONNECTIONS`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// Descriptors the connection caps' defaults leave to the server's own files, at most half the
/// open-files limit: the store (SQLite's database, WAL and shared memory, or the PostgreSQL
/// pool), a backup's files, the log, the listener, name lookups. It idles at about 14; with
/// only a share of the limit left (a quarter at 48) a full listener left it none, and a
/// backup or a callback connection failed with `EMFILE` (storage review F3).
pub const RESERVED_FILES: u64 = 64;

/// What the admin and metrics tokens must be (`auth::token_file::is_strong_token`).
const STRONG_TOKEN: &str = "a token of at least 16 characters, letters, digits and -._~+/ (then = padding), as API tokens are";
// The text above names the length: it is `MIN_TOKEN_LEN`.
const _: () = assert!(crate::auth::token_file::MIN_TOKEN_LEN == 16);

/// The connection caps the server derives from its open-files limit when the settings leave
/// them unset ([`file_shares`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileShares {
    /// `NETAPI_CHAT_MAX_CONNECTIONS`'s default.
    pub clients: usize,
    /// `NETAPI_CHAT_DELIVERY_CONNECTIONS`'s default.
    pub deliveries: usize,
}

/// `open_files` shared out: [`RESERVED_FILES`] first (at most half of it), then ¾ of the rest
/// to client connections (at most [`DEFAULT_MAX_CONNECTIONS`]) and ⅛ to deliveries (at most
/// [`crate::notify::endpoints::DEFAULT_MAX_TOTAL`]), each at least 1. On a standby
/// (`forwarding`) clients get half their share: each request it forwards holds a connection
/// to the leader as well as the client's.
pub fn file_shares(open_files: u64, forwarding: bool) -> FileShares {
    let usable = open_files - RESERVED_FILES.min(open_files / 2);
    let clients = usable / 4 * 3 / if forwarding { 2 } else { 1 };
    let share = |n: u64, most: usize| usize::try_from(n).unwrap_or(usize::MAX).clamp(1, most);
    FileShares {
        clients: share(clients, DEFAULT_MAX_CONNECTIONS),
        deliveries: share(usable / 8, crate::notify::endpoints::DEFAULT_MAX_TOTAL),
    }
}

/// The largest `NETAPI_CHAT_MAX_CONNECTIONS`: no machine holds a billion connections, and more
/// than a standby's connection semaphore takes (2⁶¹) would panic.
pub const MAX_CONNECTIONS_LIMIT: usize = 1_000_000_000;

/// The smallest `NETAPI_CHAT_RATE_LIMIT` other than 0 (off): one request in 1000 s.
pub const MIN_RATE: f64 = 0.001;

/// The longest `NETAPI_CHAT_AUTH_FAILURE_WINDOW_SECS`: a day.
pub const MAX_AUTH_FAILURE_WINDOW: Duration = Duration::from_secs(86_400);

/// The smallest `NETAPI_CHAT_MAX_HEADER_BYTES`: hyper's smallest read buffer (it refuses less).
pub const MIN_HEADER_BYTES: usize = 8192;

/// The smallest `NETAPI_CHAT_MAX_BODY_BYTES`: the smallest document of every request fits
/// (the largest of them, an XML subscription with its XML declaration, namespace declaration
/// and a short `notifyURL`, is about 250 bytes), so that no kind of request is made impossible.
pub const MIN_BODY_BYTES: usize = 256;

/// The smallest `NETAPI_CHAT_DELIVERY_BACKLOG_BYTES`: room for a few notifications of ordinary
/// messages (a message notification is its text and an envelope of several hundred bytes), so
/// that the byte cap does not disable a subscription with a healthy receiver on its first
/// notification, as 0 did. A cap is still best kept well above 4 × `NETAPI_CHAT_MAX_TEXT_CHARS`
/// (the default is 16 MiB): one notification larger than the cap disables its subscription
/// on its own. Not more: a small cap is how a deployment (and a test) bounds what a dead
/// receiver costs.
pub const MIN_BACKLOG_BYTES: usize = 4096;

/// The smallest XML limits, each what the smallest document of every request needs, so that no
/// request is made impossible in XML: depth 3 and 3 elements (the deepest and largest of them:
/// a session's root, one `participant` and its `address`; a subscription's root,
/// `callbackReference` and `notifyURL`), 1 attribute (the root's namespace declaration, which
/// counts), 64 bytes of text (an ordinary address such as `sip:alice@example.com` or
/// `tel:+` and 15 digits, or a short `notifyURL`).
pub const MIN_XML_LIMITS: XmlLimits = XmlLimits {
    max_depth: 3,
    max_elements: 3,
    max_attributes_per_element: 1,
    max_text_bytes: 64,
};

/// The shortest `NETAPI_CHAT_CHANNEL_POLL_WAIT`: a channel's wait is granted to its clients in
/// whole seconds (`maxWaitTime`), and a shorter one (0 was silently replaced by the default)
/// would have every long poll answer at once, its client polling in a tight loop.
pub const MIN_CHANNEL_POLL_WAIT: Duration = Duration::from_secs(1);

/// The longest `NETAPI_CHAT_CHANNEL_POLL_WAIT`: a channel's default lifetime, which a poll
/// restarts; a longer wait would outlast the channel it waits on (and one near 2⁶³ s
/// overflowed the clock when the poll began: a panic).
pub const MAX_CHANNEL_POLL_WAIT: Duration =
    Duration::from_secs(crate::chat::channels::DEFAULT_LIFETIME_SECS.unsigned_abs());

/// Every duration setting is less than this, 10⁹ s (about 31 years): longer means "never" in
/// practice, and every deadline and jittered retry gap computed from it then stays within the
/// clock's range (a retry delay near 2⁶⁴ s made the jitter overflow: a panic in delivery).
pub const MAX_DURATION: Duration = Duration::from_secs(1_000_000_000);

/// hyper's read buffer for a head limit of `max_header_bytes`: twice it, so that a head just
/// over the limit is still parsed and reaches the request gate, which refuses it with an OMA
/// `431` naming the limit (`gate::head_bytes`); a head too large even for the buffer gets
/// hyper's own bare `431`. What one connection can make the server hold before its request
/// is authenticated is this buffer.
pub fn read_buffer_bytes(max_header_bytes: usize) -> usize {
    max_header_bytes.max(MIN_HEADER_BYTES).saturating_mul(2)
}

impl Default for Connections {
    fn default() -> Self {
        Connections {
            max: None,
            idle_timeout: Duration::from_secs(60),
            write_stall: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
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
            adhoc_idle: Duration::from_secs(600),
            session_idle: Duration::from_secs(7 * 24 * 3600),
            max_body_bytes: 64 * 1024,
            retry_schedule: RetryPolicy::default().schedule,
            delivery_max_backoff: RetryPolicy::default().max_backoff,
            delivery_give_up_after: None,
            delivery_backlog: BacklogLimit::default(),
            delivery_budget_bytes: crate::notify::rules::DEFAULT_BUDGET_BYTES,
            notify_timeout: Duration::from_secs(10),
            delivery_connections_per_endpoint: crate::notify::endpoints::DEFAULT_PER_ENDPOINT,
            delivery_connections: None,
            data_dir: PathBuf::from("netapi-chat-data"),
            database_url: None,
            cluster_url: None,
            standbys_deliver: true,
            sync: Sync::Normal,
            cache_mb: 8,
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
            log_format: LogFormat::Text,
            otlp_endpoint: None,
            connections: Connections::default(),
            metrics_token: None,
            cors_origins: None,
            trusted_proxies: Vec::new(),
            admin_token: None,
            retention: Retention::default(),
            tls: None,
            callback_ca_file: None,
            database_ca_file: None,
            cluster_ca_file: None,
        }
    }
}

/// Whether `url` can be the base of the links the server writes (`NETAPI_CHAT_PUBLIC_URL`):
/// an absolute `http://` or `https://` URL with a host and, if it gives one, a port from 1 to
/// 65535; a path is allowed, user info (`user:password@`), a query and a fragment are not.
pub fn is_base_url(url: &str) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return false;
    };
    let Some(authority) = uri.authority() else {
        return false;
    };
    // The port as written: after the last `:` that is not inside an IPv6 address's brackets.
    let port = authority
        .as_str()
        .rsplit_once(':')
        .map(|(_, p)| p)
        .filter(|p| !p.contains(']'));
    matches!(uri.scheme_str(), Some("http" | "https"))
        && !authority.host().is_empty()
        && !authority.as_str().contains('@')
        && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p != 0))
        && uri.query().is_none()
        // `http::Uri` drops a fragment without a word.
        && !url.contains('#')
}

/// What a `NETAPI_CHAT_DATABASE_URL` that does not parse should be, naming what is wrong in
/// it when tokio-postgres' parser says (`cause`: "invalid value for option `sslmode`",
/// "unknown option `sslrootcert`"; an option's name, never a value), and what to use instead
/// of libpq's TLS options this server does not read. The URL itself is never shown (it holds
/// the password). Before, one generic text for every mistake, and the README's "not read"
/// read as "ignored" (the operator review of 2026-12-07).
fn database_url_expected(cause: Option<&str>) -> String {
    const BASE: &str = "a postgres:// URL that reads: user:password@host:port/database with a \
                        numeric port, parameters such as sslmode=require (disable, prefer or \
                        require)";
    // The option's name, between backquotes, kept to what a name is made of.
    let option = cause
        .and_then(|c| c.split('`').nth(1))
        .map(|o| {
            o.chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(40)
                .collect::<String>()
        })
        .filter(|o| !o.is_empty());
    let Some(option) = option else {
        return BASE.to_owned();
    };
    let unknown = cause.is_some_and(|c| c.starts_with("unknown option"));
    match (option.as_str(), unknown) {
        ("sslmode", false) => format!(
            "{BASE}; libpq's sslmode=verify-ca and verify-full are not read here: use \
             sslmode=require, which verifies the server's certificate, with \
             NETAPI_CHAT_DATABASE_CA_FILE for its CA"
        ),
        ("sslrootcert", true) => format!(
            "{BASE}; sslrootcert is not read here: give the CA file as \
             NETAPI_CHAT_DATABASE_CA_FILE"
        ),
        (o, true) => format!("{BASE}; it names option `{o}`, which is not read here"),
        (o, false) => format!("{BASE}; the value of option `{o}` is not valid"),
    }
}

/// What a message may show of a secret URL that is refused: its scheme (`mysql://<redacted>`),
/// so that the operator sees what is wrong, and never the rest, which may hold a password;
/// `<redacted>` alone when it does not start with a scheme and `://`.
pub fn scheme_only(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, _))
            if scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) =>
        {
            format!("{scheme}://<redacted>")
        }
        _ => "<redacted>".to_owned(),
    }
}

/// What `check-config` shows of a database URL: all of it but the password, in the user part
/// (`postgres://chat:<redacted>@db/chat`) or as a `password` parameter (its name read as
/// tokio-postgres reads it, percent-decoded), so that an operator sees which host, port,
/// database, user and options the start will use. A URL this cannot take apart as
/// tokio-postgres does (no `://`, an `@` after the authority: a password holding a `/` the
/// operator did not percent-encode) is shown as its scheme only ([`scheme_only`]).
pub fn password_redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return scheme_only(url);
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if tail.contains('@') {
        return scheme_only(url);
    }
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:<redacted>@{hosts}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _))
                        if percent_encoding::percent_decode_str(key)
                            .decode_utf8_lossy()
                            .eq_ignore_ascii_case("password") =>
                    {
                        format!("{key}=<redacted>")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", pairs.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// The prefix of every setting's environment variable; the file key is the rest, lowercased.
pub const ENV_PREFIX: &str = "NETAPI_CHAT_";

/// Variables named like a setting (`NETAPI_CHAT_…`) that are not settings: the configuration
/// file's own (`NETAPI_CHAT_CONFIG`), the command-line client's ([`crate::client::ENV_VARIABLES`])
/// and, by prefix, the test and bench harnesses' (`NETAPI_CHAT_TEST_…`, `NETAPI_CHAT_BENCH_…`).
/// One list, read by the start-up warning and by the README test.
pub fn not_a_setting(name: &str) -> bool {
    const HARNESS_PREFIXES: [&str; 2] = ["NETAPI_CHAT_TEST_", "NETAPI_CHAT_BENCH_"];
    name == "NETAPI_CHAT_CONFIG"
        || crate::client::ENV_VARIABLES.contains(&name)
        || HARNESS_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The variables in `names` that are named like a setting (`NETAPI_CHAT_…`) but are none
/// ([`not_a_setting`] excepted), each with the setting it most likely meant when one is close:
/// a misspelt setting (`NETAPI_CHAT_SYNCH`) was silently ignored, its default kept, while the
/// same typo in the configuration file is refused.
pub fn unknown_variables(names: impl IntoIterator<Item = std::ffi::OsString>) -> Vec<String> {
    let mut unknown: Vec<String> = names
        .into_iter()
        .filter_map(|n| n.into_string().ok())
        .filter(|n| n.starts_with(ENV_PREFIX) && !not_a_setting(n))
        .filter(|n| !SETTINGS.iter().any(|s| s.env == n.as_str()))
        .map(
            |n| match nearest(&n, SETTINGS.iter().map(|s| s.env.to_owned())) {
                Some(s) => format!("{n} (did you mean {s}?)"),
                None => n,
            },
        )
        .collect();
    unknown.sort();
    unknown
}

/// An empty TLS path (it read as `NETAPI_CHAT_TLS_CERT: : cannot be read`): refused as empty,
/// not taken as unset, since plain HTTP where TLS was meant would be a quiet downgrade.
fn empty_path(s: &Sources, variable: &'static str) -> ConfigError {
    s.invalid(
        variable,
        "",
        "the path of a PEM file (it is empty; leave both TLS settings unset to serve plain \
         HTTP)",
    )
}

/// The one of `names` that `name` most likely misspells (within 3 edits), if any: for a
/// misspelt environment variable and a misspelt key of the configuration file alike.
fn nearest(name: &str, names: impl Iterator<Item = String>) -> Option<String> {
    names
        .map(|n| (edit_distance(name, &n), n))
        .min()
        .filter(|(d, _)| *d <= 3)
        .map(|(_, n)| n)
}

/// Levenshtein distance between `a` and `b`, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// One operator setting, as `--help`, `check-config` and the README describe it.
#[derive(Clone, Copy, Debug)]
pub struct Setting {
    /// Its environment variable (`NETAPI_CHAT_…`); the file key is derived ([`Setting::key`]).
    pub env: &'static str,
    /// The default, written as a value would be; `None` when unset by default.
    pub default: Option<&'static str>,
    /// When `default` is `None`: what happens when it is not set.
    pub unset: &'static str,
    /// What it does (Markdown: the README table shows it as is).
    pub doc: &'static str,
    /// How `check-config` shows its value.
    pub shown: Shown,
}

/// How `check-config` shows a setting's value: a token or a signing secret never, a database
/// URL without its password (the rest says which database the start will use).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shown {
    /// As given.
    Plain,
    /// `<redacted>`.
    Redacted,
    /// All but the password ([`password_redacted`]).
    WithoutPassword,
}

impl Setting {
    /// A setting with a default value.
    const fn new(env: &'static str, default: &'static str, doc: &'static str) -> Setting {
        Setting {
            env,
            default: Some(default),
            unset: "",
            doc,
            shown: Shown::Plain,
        }
    }

    /// A setting unset by default; `unset` says what happens then.
    const fn unset(env: &'static str, unset: &'static str, doc: &'static str) -> Setting {
        Setting {
            env,
            default: None,
            unset,
            doc,
            shown: Shown::Plain,
        }
    }

    /// The same, never printed.
    const fn secret(self) -> Setting {
        Setting {
            shown: Shown::Redacted,
            ..self
        }
    }

    /// The same, printed without the password it may hold.
    const fn password_redacted(self) -> Setting {
        Setting {
            shown: Shown::WithoutPassword,
            ..self
        }
    }

    /// Its key in the configuration file: the variable without [`ENV_PREFIX`], lowercased
    /// (`NETAPI_CHAT_MAX_BODY_BYTES` → `max_body_bytes`).
    pub fn key(&self) -> String {
        self.env
            .strip_prefix(ENV_PREFIX)
            .unwrap_or(self.env)
            .to_ascii_lowercase()
    }

    /// The default as a sentence fragment (the value, or what happens when unset).
    pub fn default_text(&self) -> String {
        match self.default {
            Some(v) => format!("`{v}`"),
            None => self.unset.to_owned(),
        }
    }
}

/// Every setting, in the order `--help`, `check-config` and the README list them. One line
/// each: adding a setting starts here (see the module documentation).
#[rustfmt::skip]
pub const SETTINGS: &[Setting] = &[
    Setting::new("NETAPI_CHAT_BIND", "127.0.0.1:8080", "listen address (`127.0.0.1:0` picks a free port)"),
    Setting::unset("NETAPI_CHAT_PUBLIC_URL", "`http://` (`https://` with TLS) + the bound address", "base of every `resourceURL`, `Location` and notification link: an absolute `http://` or `https://` URL, e.g. `https://chat.example.com` (a path prefix allowed; no user info, query or fragment). Set it when `bind` is every address (`0.0.0.0`, `::`): the default link would name that address, which the start and `check-config` warn about"),
    Setting::unset("NETAPI_CHAT_TLS_CERT", "plain HTTP", "PEM file with the certificate chain (the server's first) to serve HTTPS with (TLS 1.2/1.3, rustls); needs `tls_key`"),
    Setting::unset("NETAPI_CHAT_TLS_KEY", "plain HTTP", "PEM file with the private key of `tls_cert` (PKCS #8, PKCS #1 or SEC1); needs `tls_cert`"),
    Setting::new("NETAPI_CHAT_DATA_DIR", "netapi-chat-data", "where subscriptions, sessions, messages and undelivered notifications are kept (SQLite, WAL); relative to the working directory. Its size: the live data and retained history, plus a write-ahead log that a burst of writes may leave at up to 512 MiB (cut back to that at the next quiet moment, and reused rather than grown)"),
    Setting::new("NETAPI_CHAT_RETENTION", "30d", "how long a message (with its delivery status) is kept after it was sent, e.g. `30d`, `12h`, `90s`, `1h 30m` (above `0`); older ones are purged in the background and answer 404 like messages that never existed (sessions are kept until they end, or end idle after `session_idle_secs`); dead letters are kept as long after they were given up, then purged too, and a subscription disabled that long is deleted: the data directory is bounded by live data plus this much history, of which each sender may fill at most twice `sent_bytes_budget` with messages; dead letters are outside that budget (a message to a group is one notification per subscription of each recipient): at most `delivery_backlog_bytes` per subscription, so at most `max_subscriptions` times that in all"),
    Setting::new("NETAPI_CHAT_PURGE_INTERVAL_MS", "10000", "time between purge rounds (at least `1`); a round walks the sessions in short jobs (about 2 ms each, 5 ms apart) between commits, so requests do not wait behind it"),
    Setting::unset("NETAPI_CHAT_CLUSTER_URL", "one server per database", "several instances on one PostgreSQL database (needs `NETAPI_CHAT_DATABASE_URL`): the URL at which the other instances reach this one, `http://host:port`, or `https://host:port` when it serves HTTPS (`tls_cert`; then it must), or `auto` for `http://` (with `tls_cert`: `https://`) + the bound address. One instance leads (holds the database; serves, delivers, fires timers); the others forward every request to it (over TLS to an `https://` leader, its certificate verified for the URL's host: a DNS name, or an IP address in an IP SAN) and take over within seconds when it is gone. A standby serves HTTPS with the same certificate when `tls_cert` is set; that certificate must name the URL's host (an IP address as an IP SAN: with `auto`, the bound address), else the start is refused"),
    Setting::new("NETAPI_CHAT_CLUSTER_DELIVERY", "standbys", "who makes a cluster's callback attempts: `standbys` (each standby keeps a connection to the leader and makes the attempts the leader hands it, spread by callback host; the leader still decides order, signatures, retries and disabling, and makes the attempts itself while no standby is connected or when one is lost, again at once, same `webhook-id`) or `leader` (every attempt on the leader, as on a lone server). A standby needs the same callback settings (`callback_allow_loopback`, `callback_allow_private`, `callback_ca_file`, `delivery_connections*`) as the leader: it applies its own"),
    Setting::unset("NETAPI_CHAT_CLUSTER_CA_FILE", "Mozilla's roots only", "PEM file of certificates trusted for an `https://` leader's certificate besides Mozilla's roots (webpki-roots): the private CA the cluster's instances have their certificates from, or the one certificate they all serve (trusted as itself, self-signed with `CA:TRUE` as `openssl req -x509` makes it included); used by a standby forwarding to the leader"),
    Setting::unset("NETAPI_CHAT_DATABASE_CA_FILE", "Mozilla's roots only", "PEM file of root certificates trusted for the PostgreSQL server's certificate besides Mozilla's (webpki-roots), e.g. a managed database's CA bundle; used with `sslmode=require`"),
    Setting::unset("NETAPI_CHAT_DATABASE_URL", "SQLite in the data directory", "`postgres://user:password@host:port/database` (or `?host=/socket/dir`): store everything in that PostgreSQL database instead (created or upgraded at start; the data directory then holds only tokens). `?sslmode=require`: TLS, the server's certificate verified for its host (stricter than libpq's `require`); any other `sslmode` (default `prefer`): no TLS. A second server on the same database refuses to start unless both set `NETAPI_CHAT_CLUSTER_URL`").password_redacted(),
    Setting::new("NETAPI_CHAT_SYNC", "normal", "`normal`: a 2xx means the change is in the WAL (survives a crash of the process); `full`: also fsynced (survives a power cut)"),
    Setting::new("NETAPI_CHAT_CACHE_MB", "8", "memory budget of the store's page cache (SQLite `cache_size`) in MiB, `1` to `65536`. It is the one cache of stored data: messages, which live only in the store, are read through it; RSS is about 25 MiB at start, plus this, plus live sessions, subscriptions and their delivery tasks and connections (a 30-minute churn of 112,000 users, about 950 subscriptions and 66 sessions live at a time, read 67–77 MB, and kept that after the load: freed memory is reused, and returned at a restart), plus what waits for delivery: up to about twice `delivery_budget_bytes` (the budget counts the stored bodies; each is also held decoded, measured 1.7× with the budget full: 627 MiB of RSS for the 256 MiB default)"),
    Setting::new("NETAPI_CHAT_LOG_FORMAT", "text", "`text` (one readable line per event on stderr) or `json` (one JSON object per line, for log collectors); each request's lines carry its `req_id`, also sent back as `x-request-id`"),
    Setting::new("NETAPI_CHAT_LOG_LEVEL", "warn", "`error`, `warn` (problems only, e.g. failing callbacks), `info` (also a line per request and one per connection accepted, about 8 % CPU under load) or `debug`"),
    Setting::unset("NETAPI_CHAT_OTLP_ENDPOINT", "no traces exported", "OpenTelemetry collector to export one span per request to (request id, method, route, status), over OTLP/HTTP with protobuf, e.g. `http://127.0.0.1:4318` (spans are POSTed to its `/v1/traces`; plain `http://`: run the collector's agent next to the server); needs a binary built with `--features otel` (start and `check-config` refuse the setting otherwise)"),
    Setting::unset("NETAPI_CHAT_TOKEN_FILE", "`<data dir>/tokens`", "token file: one token per line and the users it may act for, or `*` (generated with one `*` token at first start when missing)"),
    Setting::unset("NETAPI_CHAT_JWKS_FILE", "the token file is used", "when set, OAuth 2.0 JWT access tokens (RS256/ES256) verified against this JWKS are used instead of the token file"),
    Setting::unset("NETAPI_CHAT_JWT_ISSUER", "required with `jwks_file`", "the `iss` a JWT must have"),
    Setting::unset("NETAPI_CHAT_JWT_AUDIENCE", "required with `jwks_file`", "the `aud` a JWT must have"),
    Setting::new("NETAPI_CHAT_JWT_USER_CLAIM", "sub", "the JWT claim naming the users it acts for (one address, or an array in a custom claim)"),
    Setting::new("NETAPI_CHAT_JWT_SCOPE", "chat", "the scope a JWT must carry"),
    Setting::unset("NETAPI_CHAT_WEBHOOK_SECRET", "each subscription has its own secret", "opt-in: one `whsec_…` secret signing every subscription whose client sent none (Standard Webhooks; see Verifying notifications)").secret(),
    Setting::new("NETAPI_CHAT_WEBHOOK_ROTATION_WINDOW", "24h", "after a secret rotation, how long the previous secret keeps signing too (`0`: not at all)"),
    Setting::unset("NETAPI_CHAT_CALLBACK_CA_FILE", "Mozilla's roots only", "PEM file of certificates trusted for `https` notifyURLs besides Mozilla's roots (webpki-roots): a private CA's, or a receiver's own self-signed certificate (`CA:TRUE` as `openssl req -x509` makes it included), its host name still verified"),
    Setting::new("NETAPI_CHAT_CALLBACK_ALLOW_LOOPBACK", "0", "`1` or `true`: callbacks may reach loopback addresses (local development only)"),
    Setting::new("NETAPI_CHAT_CALLBACK_ALLOW_PRIVATE", "0", "`1` or `true`: callbacks may reach private-network addresses"),
    Setting::new("NETAPI_CHAT_RETRY_SCHEDULE", "0,5s,5m,30m,2h,5h,10h,10h", "delays between the attempts while a callback fails (units `ms`, `s`, `m`, `h`; the last repeats, so it must be above `0` unless nothing is retried: a give-up age of `0`, as with the one-try schedule `0`; +0–20 % jitter), about 27 h in all; each gap capped by `delivery_max_backoff`"),
    Setting::new("NETAPI_CHAT_DELIVERY_MAX_BACKOFF", "5m", "longest gap between two attempts of a failing callback (before jitter; a receiver's `Retry-After` excepted), at least `1ms`: a receiver that recovers is noticed within it"),
    Setting::unset("NETAPI_CHAT_DELIVERY_GIVE_UP_AFTER", "the retry schedule's total (about 27 h)", "a notification still failing at this age (counted from its creation, not its first attempt: one queued behind others while its callback fails may reach it after one attempt, so keep it well above what a backlog takes to drain) becomes a dead letter; a callback failing without a break for this long (or that will have by its next try, when a notification reaches its age) has its subscription disabled. `0`: no retry at all (the first failure makes a dead letter and disables the subscription), with any schedule; a schedule whose last delay is `0` (the one-try schedule `0`) takes only `0`"),
    Setting::new("NETAPI_CHAT_DELIVERY_BACKLOG", "10000", "most undelivered notifications one subscription may have (at least `1`); past it the subscription is disabled. Also the most dead letters kept per subscription"),
    Setting::new("NETAPI_CHAT_DELIVERY_BACKLOG_BYTES", "16777216", "most bytes of stored notification bodies one subscription may have undelivered (and as dead letters), at least `4096`; past it the subscription is disabled (a single notification over it too: keep it well above 4 × `max_text_chars`)"),
    Setting::new("NETAPI_CHAT_DELIVERY_BUDGET_BYTES", "268435456", "most bytes of stored notification bodies every subscription's backlog may hold together (held in memory until delivered, in a notification channel until acknowledged), at least `4096`; past it each subscription holding more than its share (this budget / the subscriptions with a backlog) is disabled, its backlog (what its channel held included) kept as dead letters"),
    Setting::new("NETAPI_CHAT_NOTIFY_TIMEOUT_MS", "10000", "timeout of one callback POST (at least `1`)"),
    Setting::new("NETAPI_CHAT_DELIVERY_CONNECTIONS_PER_ENDPOINT", "32", "most connections deliveries hold open (in use or idle) to one callback endpoint (scheme, host, port), `1` to `1000000`; a delivery past it waits for one (not counted in its attempt's timeout), and the idle ones are kept for reuse up to this many"),
    Setting::unset("NETAPI_CHAT_DELIVERY_CONNECTIONS", "⅛ of the open-files limit less 64, at most `4096`", "most connections deliveries hold open (in use or idle) to every callback endpoint together, `1` to `1000000`; a delivery past it closes the idle connection unused the longest or waits for one (while any waits, a connection an answer gives back is closed rather than kept for its endpoint, so the longest waiter gets the next one, whichever endpoint it is for), so deliveries never take the file descriptors `max_connections` leaves to clients, nor the 64 (at most half the limit) kept for the server's own files"),
    Setting::new("NETAPI_CHAT_INVITATION_TIMEOUT_SECS", "120", "an unanswered invitation times out after this (above `0`, fractions allowed)"),
    Setting::new("NETAPI_CHAT_ADHOC_IDLE_SECS", "600", "an OMA 2012 ad hoc chat without a message for this long is ended by the server (above `0`, fractions allowed; the next message opens a new one)"),
    Setting::new("NETAPI_CHAT_SESSION_IDLE_SECS", "604800", "any other session without a message or a change of its participants (a start, an invitation, an answer, a time-out, a leave, a re-join) for this long is ended by the server, everyone who joined it told `SessionEnded` (above `0`, fractions allowed; 7 days by default; not while an invitation waits for an answer), so that sessions nobody uses do not hold their places for ever"),
    Setting::new("NETAPI_CHAT_MAX_BODY_BYTES", "65536", "larger request bodies get `413`; at least `256`, which holds the smallest document of every request"),
    Setting::new("NETAPI_CHAT_BODY_TIMEOUT_MS", "10000", "a request body that has not fully arrived by then gets `408` and the connection is closed (at least `1`)"),
    Setting::new("NETAPI_CHAT_MAX_TEXT_CHARS", "4096", "longest message text, in characters (at least `1`)"),
    Setting::new("NETAPI_CHAT_MAX_PARTICIPANTS", "100", "participants per session, the originator included (at least `2`); everyone the session has listed counts, those who declined, left, were cancelled or timed out too (they stay in its roster as `Disconnected`)"),
    Setting::new("NETAPI_CHAT_MAX_SUBSCRIPTIONS_PER_USER", "20", "notification subscriptions per user (at least `1`: every notification goes through one)"),
    Setting::new("NETAPI_CHAT_MAX_SESSIONS_PER_USER", "1000", "open sessions a user is connected to (at least `1`)"),
    Setting::new("NETAPI_CHAT_SENT_BYTES_BUDGET", "1073741824", "bytes of messages one sender may have the server keep: each message costs its text's bytes and its recipients' addresses, plus 256 and 32 a recipient, and a sender's budget frees up evenly over `retention` (a leaky bucket: at most twice this stored per sender, whatever it sends; 1 GiB over 30 days lets a user burst 1 GiB, then about 36 MB a day); past it a message is `403 POL2008` and stores nothing (`0` = off). Counted in the deciding instance's memory: a restart or a takeover starts every sender's count again"),
    Setting::new("NETAPI_CHAT_MAX_CHANNELS_PER_USER", "10", "notification channels per user (`403 POL2008` past it; `0` = no channels, notifications by callback only)"),
    Setting::new("NETAPI_CHAT_MAX_SESSIONS", "100000", "open sessions the server holds in all, whoever started them (at least `1`; `503 SVC2001` past it): bounds memory however many users the tokens act for (about 2 KiB a one-to-one session, roughly 250 bytes more a further participant: a session of 100 about 25 KiB)"),
    Setting::new("NETAPI_CHAT_MAX_SUBSCRIPTIONS", "100000", "subscriptions the server holds in all (at least `1`; `503 SVC2001` past it): bounds memory however many users the tokens act for (about 6.5 KiB each)"),
    Setting::new("NETAPI_CHAT_MAX_CHANNELS", "10000", "notification channels the server holds in all (`503 SVC2001` past it; `0` = none)"),
    Setting::new("NETAPI_CHAT_TOKEN_SHARE_PERCENT", "100", "`1` to `100`: the percentage of each of `NETAPI_CHAT_MAX_SESSIONS`, `…_SUBSCRIPTIONS` and `…_CHANNELS` that what one token made may hold (`403 POL2008` past it); below `100`, one application cannot take a cap whole and lock the others out (see *Several applications on one server*); `100` = first come, first served"),
    Setting::new("NETAPI_CHAT_CHANNEL_POLL_WAIT", "25s", "longest a long poll of a notification channel waits for a notification before it answers an empty list (a channel's `maxWaitTime` may only shorten it), `1s` to `1h` (a channel's default lifetime); clients should wait longer than this for an answer"),
    Setting::new("NETAPI_CHAT_MAX_PENDING_INVITATIONS", "1000", "unanswered invitations one inviter has sent (at least `1`: a session starts with an invitation)"),
    Setting::new("NETAPI_CHAT_MAX_PENDING_INVITATIONS_PER_INVITEE", "5", "unanswered invitations from one inviter to one invitee (at least `1`)"),
    Setting::new("NETAPI_CHAT_MAX_PENDING_INVITATIONS_RECEIVED", "100", "unanswered invitations one invitee may have waiting, from every inviter together (at least `1`)"),
    Setting::new("NETAPI_CHAT_INVITATION_RATE", "300", "invitations a minute per inviter, counted when sent (`0` = off)"),
    Setting::new("NETAPI_CHAT_XML_MAX_DEPTH", "32", "deepest XML element nesting, the root at depth 1 (at least `3`, the deepest request document)"),
    Setting::new("NETAPI_CHAT_XML_MAX_ELEMENTS", "10000", "most XML elements in a body (at least `3`, what a session with one participant needs)"),
    Setting::new("NETAPI_CHAT_XML_MAX_ATTRIBUTES", "32", "most attributes on one XML element, namespace declarations included (at least `1`, the root's namespace)"),
    Setting::new("NETAPI_CHAT_XML_MAX_TEXT_BYTES", "65536", "longest XML text node or attribute value, in bytes (at least `64`, an ordinary address or short URL)"),
    Setting::new("NETAPI_CHAT_RATE_LIMIT", "200", "requests a second per access token (under JWT, per subject: every token of one `sub` together), a request counting one more per 10 notifications it causes past the first 10 (`0` = off; otherwise at least `0.001`)"),
    Setting::unset("NETAPI_CHAT_RATE_BURST", "the rate, at least `1`", "burst size of the per-token request rate (at least `1`)"),
    Setting::new("NETAPI_CHAT_AUTH_FAILURE_LIMIT", "20", "failed authentications per client address (IPv6: per /64) within the window before it gets `429` (`0` = off)"),
    Setting::new("NETAPI_CHAT_AUTH_FAILURE_WINDOW_SECS", "60", "the window of `auth_failure_limit`, `1` to `86400` (a day)"),
    Setting::unset("NETAPI_CHAT_MAX_CONNECTIONS", "¾ of the open-files limit less 64, at most `10000`; half that on a standby", "client connections open at once (`1` to `1000000000`), notification-channel WebSockets included until they close (at most half of them: past that a WebSocket handshake is `503`); one access token holds at most a quarter of them in long polls waiting and WebSockets open, counted per channel read (past that a poll or a handshake on another channel is `429 POL2005` with `Retry-After`: a waiting poll is never idle, so nothing else would keep one token from holding every place; a newer poll or socket on a channel the token reads takes it over without a place of its own); at the cap the connection idle the longest is closed to make room (one still sending a request head, even a byte at a time, is idle: it goes once the server has written nothing to it for 2 s), and with none idle a new client waits for one to close (the soft open-files limit is raised to the hard one at start; 64 descriptors, at most half of it, are kept for the server's own files first, and a standby takes half the rest's share, as each request it forwards also holds a connection to the leader)"),
    Setting::new("NETAPI_CHAT_IDLE_TIMEOUT_SECS", "60", "a keep-alive connection with no request in flight is closed after this (above `0`, fractions allowed)"),
    Setting::new("NETAPI_CHAT_HEADER_READ_TIMEOUT_SECS", "10", "time to send a whole request head once started (slow-header clients; above `0`, fractions allowed)"),
    Setting::new("NETAPI_CHAT_WRITE_STALL_SECS", "30", "a connection whose client has not read for this long while an answer waits to be written is closed, the answer cut (each write that goes through starts it again, so slow readers are not affected; above `0`, fractions allowed)"),
    Setting::new("NETAPI_CHAT_MAX_HEADER_BYTES", "16384", "largest request head (request line and headers, HTTP/1), at least `8192`: a larger one gets `431` and its connection is closed; below the default, a token near the largest accepted (8 KiB) may not fit"),
    Setting::unset("NETAPI_CHAT_CORS_ORIGINS", "no CORS: pages of other origins cannot read answers", "origins whose web pages may call the API from a browser, e.g. `https://app.example.com, http://localhost:3000`, or `*` for any: preflights (`OPTIONS`) are answered and every answer to such a page carries `Access-Control-Allow-Origin` (no credentials mode: tokens, not cookies)"),
    Setting::unset("NETAPI_CHAT_TRUSTED_PROXIES", "none: each connection is its own client", "addresses or networks of the proxies in front of the server (e.g. `10.0.0.0/8, 127.0.0.1`): a request whose connection comes from one is counted as coming from the rightmost `X-Forwarded-For` address that is not a trusted proxy (an entry may carry a port, `203.0.113.7:51234` or `[2001:db8::9]:443`; an entry that reads as no address before that one keeps the proxy's own; the authentication-failure limit is per client address); from anyone else the header is ignored. In a cluster the standby that takes a request applies this rule to its own connection and names the client to the leader, which takes that address as final (a client cannot pose as another address by reaching a standby directly, even when the standbys' addresses are in this list)"),
    Setting::unset("NETAPI_CHAT_ADMIN_TOKEN", "no admin endpoints", "bearer token (at least 16 characters: letters, digits and `-._~+/`, as API tokens) that opens `/admin/backup` and `/admin/summary` on the API port, what `netapi-chat backup` and `summary` use (API tokens do not)").secret(),
    Setting::unset("NETAPI_CHAT_METRICS_TOKEN", "no `/metrics` endpoint", "bearer token (at least 16 characters: letters, digits and `-._~+/`, as API tokens) that opens the Prometheus metrics at `/metrics` on the API port (API tokens do not)").secret(),
    Setting::new("NETAPI_CHAT_SHUTDOWN_GRACE_SECS", "10", "on SIGTERM/SIGINT: callback attempts under way get up to half of this to finish while requests are still served (none starts; each answer from the signal on says `Connection: close`, so a client sends its next request on a new connection, elsewhere once this one refuses it), then new connections are refused and requests in flight (and those sent on connections already made, over TLS too: the first request of each, and a TLS handshake under way, get up to 1 s to arrive) get the rest of it (above `0`, fractions allowed) to be answered, then the store is closed (at least 2 s given to it) and the process exits 0; SIGHUP is logged and ignored (the token file and the TLS certificate are re-read when they change)"),
];

/// The setting with this environment variable.
pub fn setting(env: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.env == env)
}

/// Where a value in force came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The setting's default.
    Default,
    /// The configuration file.
    File,
    /// Its environment variable.
    Env,
}

/// What is wrong with a configuration.
#[derive(Debug)]
pub enum ConfigError {
    /// A value that does not parse.
    Invalid {
        /// The setting's environment variable.
        variable: &'static str,
        /// The value given.
        value: String,
        /// What was expected (a fixed text, or one naming what is wrong in the value).
        expected: std::borrow::Cow<'static, str>,
        /// The file it was given in, if it came from the file.
        file: Option<PathBuf>,
    },
    /// A setting that must be set when another one is.
    Missing {
        /// The missing setting's variable.
        variable: &'static str,
        /// The variable of the setting that needs it.
        needed_by: &'static str,
    },
    /// The configuration file cannot be read, is not TOML, or holds something that is not a
    /// setting.
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

/// `NETAPI_CHAT_X` (`x`), as messages name a setting.
fn both_names(variable: &str) -> String {
    match setting(variable) {
        Some(s) => format!("{variable} (`{}` in a configuration file)", s.key()),
        None => variable.to_owned(),
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::Invalid {
                variable,
                value,
                expected,
                file: None,
            } => write!(f, "{variable}={value:?} is not valid: expected {expected}"),
            ConfigError::Invalid {
                variable,
                value,
                expected,
                file: Some(path),
            } => write!(
                f,
                "{}: {} = {value:?} is not valid: expected {expected}",
                path.display(),
                setting(variable).map_or_else(|| (*variable).to_owned(), Setting::key),
            ),
            ConfigError::Missing {
                variable,
                needed_by,
            } => write!(
                f,
                "{} must be set when {} is",
                both_names(variable),
                both_names(needed_by)
            ),
            ConfigError::File { path, problem } => write!(f, "{}: {problem}", path.display()),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The raw values in force (environment over file over nothing), before they are parsed into
/// a [`Config`]; also what `check-config` prints.
#[derive(Debug, Default)]
pub struct Sources {
    /// The configuration file, if one was given.
    file: Option<PathBuf>,
    /// Value and origin of every setting given, by environment variable.
    given: BTreeMap<&'static str, (String, Origin)>,
    /// The variables looked up so far (the unit tests check that reading a configuration
    /// looks up exactly the settings of [`SETTINGS`]).
    looked_up: RefCell<BTreeSet<String>>,
}

/// How the messages of a start or of `check-config` name the settings ([`Sources::names`]).
/// Most checks past parsing (a certificate that does not load, a webhook secret too short, a
/// JWKS file that does not read) name the setting by its environment variable, which an
/// operator who set it in the configuration file never wrote (ops review O7); their text is
/// passed through [`SettingNames::say`] before it is printed.
#[derive(Clone, Debug, Default)]
pub struct SettingNames {
    /// Each variable given in the file, and how to name it instead.
    from_file: Vec<(&'static str, String)>,
}

impl SettingNames {
    /// `text` with every whole-word mention of a variable given in the file replaced by that
    /// setting's key and the file (`NETAPI_CHAT_TLS_CERT: …` becomes
    /// `` `tls_cert` (in /etc/chat.toml): … ``); variables from the environment stay as they are.
    pub fn say(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (variable, instead) in &self.from_file {
            out = replace_word(&out, variable, instead);
        }
        out
    }
}

/// `text` with each occurrence of `word` that is not part of a longer variable name (no
/// letter, digit or `_` right after it, none right before) replaced by `with`.
fn replace_word(text: &str, word: &str, with: &str) -> String {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(word) {
        let (before, after) = (&rest[..at], &rest[at + word.len()..]);
        let whole = !before.ends_with(is_name) && !after.starts_with(is_name);
        out.push_str(before);
        out.push_str(if whole { with } else { word });
        rest = after;
    }
    out.push_str(rest);
    out
}

/// A TOML value of the file as the text an environment variable would hold (arrays are
/// joined with commas, for lists such as `retry_schedule`); `None` for tables and dates.
fn toml_text(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(x) => Some(x.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        toml::Value::Array(items) => items
            .iter()
            .map(|v| match v {
                toml::Value::Array(_) | toml::Value::Table(_) => None,
                v => toml_text(v),
            })
            .collect::<Option<Vec<_>>>()
            .map(|v| v.join(",")),
        toml::Value::Datetime(_) | toml::Value::Table(_) => None,
    }
}

impl Sources {
    /// Reads `file` (a TOML table of settings, keys as in [`Setting::key`]), then the
    /// environment through `env` over it. A file key that is not a setting is refused by
    /// name, as is a value that is not a string, number, boolean or list of them.
    pub fn gather(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<OsString>,
    ) -> Result<Sources, ConfigError> {
        let mut sources = Sources {
            file: file.map(Path::to_path_buf),
            ..Sources::default()
        };
        if let Some(path) = file {
            let problem = |problem: String| ConfigError::File {
                path: path.to_path_buf(),
                problem,
            };
            let text = std::fs::read_to_string(path)
                .map_err(|e| problem(format!("cannot read the configuration file: {e}")))?;
            let table: toml::Table = text
                .parse()
                .map_err(|e: toml::de::Error| problem(format!("not valid TOML: {e}")))?;
            for (key, value) in &table {
                let Some(s) = SETTINGS.iter().find(|s| s.key() == *key) else {
                    let nearest = nearest(key, SETTINGS.iter().map(Setting::key));
                    let hint = match SETTINGS.iter().find(|s| s.env == key.as_str()) {
                        Some(s) => format!(" (write it as `{}`)", s.key()),
                        // As for a misspelt environment variable (`unknown_variables`).
                        None => match nearest {
                            Some(k) => format!(" (did you mean `{k}`?)"),
                            None => " (`netapi-chat --help` lists the settings)".to_owned(),
                        },
                    };
                    return Err(problem(format!("unknown setting `{key}`{hint}")));
                };
                let text = toml_text(value).ok_or_else(|| {
                    problem(format!(
                        "`{key}` must be a string, number, boolean or list of them"
                    ))
                })?;
                sources.given.insert(s.env, (text, Origin::File));
            }
        }
        for s in SETTINGS {
            if let Some(value) = env(s.env) {
                let value = value.into_string().map_err(|v| ConfigError::Invalid {
                    variable: s.env,
                    value: v.to_string_lossy().into_owned(),
                    expected: "UTF-8 text".into(),
                    file: None,
                })?;
                sources.given.insert(s.env, (value, Origin::Env));
            }
        }
        Ok(sources)
    }

    /// The process environment over `file`.
    pub fn from_process(file: Option<&Path>) -> Result<Sources, ConfigError> {
        Sources::gather(file, |name| std::env::var_os(name))
    }

    /// The configuration file, if any.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// How messages should name the settings: each one given in the file by its key there.
    pub fn names(&self) -> SettingNames {
        SettingNames {
            from_file: match &self.file {
                Some(file) => self
                    .given
                    .iter()
                    .filter(|(_, (_, origin))| *origin == Origin::File)
                    .filter_map(|(variable, _)| {
                        setting(variable)
                            .map(|s| (*variable, format!("`{}` (in {})", s.key(), file.display())))
                    })
                    .collect(),
                None => Vec::new(),
            },
        }
    }

    /// The value given for `variable` and where, or `None` when it was not given.
    pub fn given(&self, variable: &str) -> Option<(&str, Origin)> {
        self.given.get(variable).map(|(v, o)| (v.as_str(), *o))
    }

    /// The raw text of `variable`, if given (recorded as looked up).
    pub fn text(&self, variable: &'static str) -> Option<&str> {
        self.looked_up.borrow_mut().insert(variable.to_owned());
        self.given.get(variable).map(|(v, _)| v.as_str())
    }

    /// The error for `value` of `variable`, naming the file when it came from there.
    pub fn invalid(
        &self,
        variable: &'static str,
        value: &str,
        expected: impl Into<std::borrow::Cow<'static, str>>,
    ) -> ConfigError {
        let from_file = matches!(self.given.get(variable), Some((_, Origin::File)));
        ConfigError::Invalid {
            variable,
            value: value.to_owned(),
            expected: expected.into(),
            file: self.file.clone().filter(|_| from_file),
        }
    }

    /// An operator's bearer token (`NETAPI_CHAT_ADMIN_TOKEN`, `…_METRICS_TOKEN`), if given:
    /// as strong as an API token must be (`auth::token_file::is_strong_token`); a weak one
    /// is refused without repeating it (it is a secret).
    fn operator_token(&self, variable: &'static str) -> Result<Option<String>, ConfigError> {
        match self.text(variable).map(str::trim) {
            None => Ok(None),
            Some(t) if crate::auth::token_file::is_strong_token(t) => Ok(Some(t.to_owned())),
            // Nothing to hide in an empty one: shown as it is, so the mistake reads as one.
            Some("") => Err(self.invalid(variable, "", STRONG_TOKEN)),
            Some(_) => Err(self.invalid(variable, "(hidden)", STRONG_TOKEN)),
        }
    }

    /// `variable` parsed as `T` (surrounding blanks ignored), if given.
    pub fn var<T: std::str::FromStr>(
        &self,
        variable: &'static str,
        expected: &'static str,
    ) -> Result<Option<T>, ConfigError> {
        match self.text(variable) {
            Some(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| self.invalid(variable, v, expected)),
            None => Ok(None),
        }
    }

    /// `variable` parsed as a number within `range` (surrounding blanks ignored), if given: a
    /// value that does not parse, or parses to one outside the range (`NaN` included), is
    /// refused as given, with `expected`, which says the range (e.g. "a count of at least 1").
    pub fn number<T: std::str::FromStr + PartialOrd>(
        &self,
        variable: &'static str,
        range: impl std::ops::RangeBounds<T>,
        expected: &'static str,
    ) -> Result<Option<T>, ConfigError> {
        match self.var::<T>(variable, expected)? {
            Some(n) if !range.contains(&n) => {
                Err(self.invalid(variable, self.text(variable).unwrap_or_default(), expected))
            }
            n => Ok(n),
        }
    }

    /// A positive duration in seconds (fractions allowed), less than [`MAX_DURATION`], if
    /// given.
    pub fn seconds(&self, variable: &'static str) -> Result<Option<Duration>, ConfigError> {
        match self.var::<f64>(variable, "seconds, e.g. 10 or 0.5")? {
            None => Ok(None),
            Some(s) if s.is_finite() && s > 0.0 && s < MAX_DURATION.as_secs_f64() => {
                Ok(Some(Duration::from_secs_f64(s)))
            }
            Some(_) => Err(self.invalid(
                variable,
                self.text(variable).unwrap_or_default(),
                "a positive number of seconds, less than 1000000000",
            )),
        }
    }

    /// A whole number of milliseconds, at least 1 (0 would make every timeout or round
    /// immediate) and less than [`MAX_DURATION`], if given.
    pub fn millis(&self, variable: &'static str) -> Result<Option<Duration>, ConfigError> {
        let below = u64::try_from(MAX_DURATION.as_millis()).unwrap_or(u64::MAX);
        Ok(self
            .number::<u64>(
                variable,
                1..below,
                "milliseconds, at least 1 and less than 1000000000000",
            )?
            .map(Duration::from_millis))
    }

    /// A duration such as `5m`, `90s`, `1.5h`, `250ms` (a bare number is seconds), less than
    /// [`MAX_DURATION`], if given.
    pub fn duration(&self, variable: &'static str) -> Result<Option<Duration>, ConfigError> {
        match self.text(variable) {
            Some(v) => parse_duration(v)
                .filter(|d| *d < MAX_DURATION)
                .map(Some)
                .ok_or_else(|| {
                    self.invalid(
                        variable,
                        v,
                        "a duration such as 5m, 90s, 1.5h or 250ms, less than 1000000000s",
                    )
                }),
            None => Ok(None),
        }
    }

    /// A duration as [`Sources::duration`] reads it, within `range`, if given; one outside is
    /// refused as given, with `expected` (which says the range).
    pub fn duration_in(
        &self,
        variable: &'static str,
        range: impl std::ops::RangeBounds<Duration>,
        expected: &'static str,
    ) -> Result<Option<Duration>, ConfigError> {
        match self.duration(variable)? {
            Some(d) if !range.contains(&d) => {
                Err(self.invalid(variable, self.text(variable).unwrap_or_default(), expected))
            }
            d => Ok(d),
        }
    }

    /// A switch: `true` or `1` on, `false` or `0` off (a TOML boolean reads as `true` or
    /// `false`); off when not given or blank. Nothing else, as the README says: `yes` was
    /// taken for on while `on` was refused, and `no` silently left a switch off, though the
    /// message said only 1 or 0 were expected.
    pub fn flag(&self, variable: &'static str) -> Result<bool, ConfigError> {
        let Some(given) = self.text(variable) else {
            return Ok(false);
        };
        // Blank is not given, as for every other setting (Compose writes `VAR=` for a
        // `${VAR}` that is unset): refusing it broke such deployments at an upgrade.
        match given.trim() {
            "" | "0" | "false" => Ok(false),
            "1" | "true" => Ok(true),
            _ => Err(self.invalid(variable, given, "true, false, 1 or 0")),
        }
    }

    /// The settings looked up so far (for the unit tests).
    #[cfg(test)]
    fn looked_up(&self) -> BTreeSet<String> {
        self.looked_up.borrow().clone()
    }

    /// The effective configuration as a TOML file, one line per setting with where its value
    /// comes from; secrets redacted, unset settings commented out with what that means for
    /// `config` (the configuration these sources make): an unset give-up age is the total of
    /// the retry schedule in force, which the table's "about 27 h" gives only for the default
    /// schedule.
    pub fn render(&self, config: &Config) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "# netapi-chat {}: effective configuration ({})\n",
            env!("CARGO_PKG_VERSION"),
            match &self.file {
                Some(p) => format!("file {}, environment over it", p.display()),
                None => "no configuration file; environment over the defaults".to_owned(),
            }
        ));
        for s in SETTINGS {
            let key = s.key();
            match (self.given(s.env), s.default) {
                (Some((value, origin)), _) => {
                    let shown = match s.shown {
                        // Nothing to hide (an empty database URL is SQLite, not a secret).
                        _ if value.trim().is_empty() => toml_value(value),
                        Shown::Plain => toml_value(value),
                        Shown::Redacted => toml::Value::String("<redacted>".to_owned()),
                        Shown::WithoutPassword => toml::Value::String(password_redacted(value)),
                    };
                    let from = match origin {
                        Origin::Env => s.env.to_owned(),
                        Origin::File => "file".to_owned(),
                        Origin::Default => "default".to_owned(),
                    };
                    out.push_str(&format!("{key} = {shown}  # {from}\n"));
                }
                (None, Some(default)) => {
                    out.push_str(&format!("{key} = {}  # default\n", toml_value(default)));
                }
                (None, None) if s.env == "NETAPI_CHAT_DELIVERY_GIVE_UP_AFTER" => {
                    out.push_str(&format!(
                        "# {key}: not set (the retry schedule's total: {})\n",
                        humantime::format_duration(config.retry_policy().give_up_after)
                    ));
                }
                (None, None) => {
                    out.push_str(&format!("# {key}: not set ({})\n", s.unset));
                }
            }
        }
        out
    }
}

/// How a raw value is written back as TOML: a number or boolean as itself, anything else as a
/// string (so that the output of `check-config` reads back as the same configuration).
fn toml_value(raw: &str) -> toml::Value {
    if let Ok(i) = raw.parse::<i64>() {
        toml::Value::Integer(i)
    } else if let Some(x) = raw.parse::<f64>().ok().filter(|x| x.is_finite()) {
        toml::Value::Float(x)
    } else if let Ok(b) = raw.parse::<bool>() {
        toml::Value::Boolean(b)
    } else {
        toml::Value::String(raw.to_owned())
    }
}

/// The settings as a Markdown table (the README's, between its `settings-table` markers).
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| file key | environment variable | default | meaning |\n|---|---|---|---|\n",
    );
    for s in SETTINGS {
        out.push_str(&format!(
            "| `{}` | `{}` | {} | {} |\n",
            s.key(),
            s.env,
            s.default_text(),
            s.doc
        ));
    }
    out
}

/// The settings as plain text for `--help`.
pub fn help_text() -> String {
    let mut out = String::from(
        "Settings (file key, environment variable: meaning; default). The environment overrides \
         the file, the file the defaults:\n",
    );
    for s in SETTINGS {
        out.push_str(&format!(
            "\n  {}, {}\n      {}; default {}\n",
            s.key(),
            s.env,
            s.doc,
            s.default_text()
        ));
    }
    out
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
            budget_bytes: self.delivery_budget_bytes,
        }
    }

    /// Reads the `NETAPI_CHAT_*` variables over the defaults (no configuration file).
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_sources(&Sources::from_process(None)?)
    }

    /// The configuration from raw values (see [`Sources`]); unset settings keep their
    /// defaults.
    pub fn from_sources(s: &Sources) -> Result<Config, ConfigError> {
        let c = Config::read(s)?;
        c.check_retries(s)?;
        Ok(c)
    }

    /// Refuses a retry schedule that would retry a failing callback in a tight loop: while
    /// notifications are retried at all (a give-up age above 0), the delay that repeats, the
    /// schedule's last, must be above 0. With the one-try schedule `0`, a give-up age above 0
    /// is what is refused.
    fn check_retries(&self, s: &Sources) -> Result<(), ConfigError> {
        let give_up = self.retry_policy().give_up_after;
        let last = self.retry_schedule.last().copied().unwrap_or_default();
        if give_up.is_zero() || !last.is_zero() {
            return Ok(());
        }
        Err(match self.retry_schedule.as_slice() {
            [_] => s.invalid(
                "NETAPI_CHAT_DELIVERY_GIVE_UP_AFTER",
                s.text("NETAPI_CHAT_DELIVERY_GIVE_UP_AFTER")
                    .unwrap_or_default(),
                "0 with the one-try retry schedule 0 (any other age would retry a failing \
                 callback at once, in a loop, until that age)",
            ),
            _ => s.invalid(
                "NETAPI_CHAT_RETRY_SCHEDULE",
                s.text("NETAPI_CHAT_RETRY_SCHEDULE").unwrap_or_default(),
                "comma-separated delays whose last, repeated while a callback fails, is above 0, \
                 such as 0,5s,5m,2h",
            ),
        })
    }

    /// Every setting read and checked on its own (see [`Config::from_sources`]).
    fn read(s: &Sources) -> Result<Config, ConfigError> {
        let d = Config::default();
        Ok(Config {
            bind: s
                .var("NETAPI_CHAT_BIND", "an address such as 127.0.0.1:8080")?
                .unwrap_or(d.bind),
            public_url: match s.text("NETAPI_CHAT_PUBLIC_URL").map(str::trim) {
                None | Some("") => None,
                Some(url) if is_base_url(url) => Some(url.trim_end_matches('/').to_owned()),
                Some(url) => {
                    return Err(s.invalid(
                        "NETAPI_CHAT_PUBLIC_URL",
                        url,
                        "an absolute http:// or https:// URL such as https://chat.example.com \
                         (a path allowed; no user info, query or fragment)",
                    ));
                }
            },
            invitation_timeout: s
                .seconds("NETAPI_CHAT_INVITATION_TIMEOUT_SECS")?
                .unwrap_or(d.invitation_timeout),
            adhoc_idle: s
                .seconds("NETAPI_CHAT_ADHOC_IDLE_SECS")?
                .unwrap_or(d.adhoc_idle),
            session_idle: s
                .seconds("NETAPI_CHAT_SESSION_IDLE_SECS")?
                .unwrap_or(d.session_idle),
            max_body_bytes: s
                .number(
                    "NETAPI_CHAT_MAX_BODY_BYTES",
                    MIN_BODY_BYTES..,
                    "a byte count of at least 256",
                )?
                .unwrap_or(d.max_body_bytes),
            retry_schedule: match s.text("NETAPI_CHAT_RETRY_SCHEDULE") {
                Some(v) => RetryPolicy::parse_schedule(v)
                    .filter(|delays| delays.iter().all(|d| *d < MAX_DURATION))
                    .ok_or_else(|| {
                        s.invalid(
                            "NETAPI_CHAT_RETRY_SCHEDULE",
                            v,
                            "comma-separated delays such as 0,5s,5m,2h, each less than 1000000000s",
                        )
                    })?,
                None => d.retry_schedule,
            },
            delivery_max_backoff: s
                .duration_in(
                    "NETAPI_CHAT_DELIVERY_MAX_BACKOFF",
                    Duration::from_millis(1)..,
                    "a duration of at least 1ms, such as 5m",
                )?
                .unwrap_or(d.delivery_max_backoff),
            delivery_give_up_after: s.duration("NETAPI_CHAT_DELIVERY_GIVE_UP_AFTER")?,
            delivery_backlog: BacklogLimit {
                count: s
                    .number(
                        "NETAPI_CHAT_DELIVERY_BACKLOG",
                        1..,
                        "a number of notifications, at least 1",
                    )?
                    .unwrap_or(d.delivery_backlog.count),
                bytes: s
                    .number(
                        "NETAPI_CHAT_DELIVERY_BACKLOG_BYTES",
                        MIN_BACKLOG_BYTES..,
                        "a byte count of at least 4096",
                    )?
                    .unwrap_or(d.delivery_backlog.bytes),
            },
            delivery_budget_bytes: s
                .number(
                    "NETAPI_CHAT_DELIVERY_BUDGET_BYTES",
                    MIN_BACKLOG_BYTES..,
                    "a byte count of at least 4096",
                )?
                .unwrap_or(d.delivery_budget_bytes),
            notify_timeout: s
                .millis("NETAPI_CHAT_NOTIFY_TIMEOUT_MS")?
                .unwrap_or(d.notify_timeout),
            delivery_connections_per_endpoint: s
                .number(
                    "NETAPI_CHAT_DELIVERY_CONNECTIONS_PER_ENDPOINT",
                    1..=crate::notify::endpoints::MAX_CAP,
                    "a count from 1 to 1000000",
                )?
                .unwrap_or(d.delivery_connections_per_endpoint),
            delivery_connections: s
                .number(
                    "NETAPI_CHAT_DELIVERY_CONNECTIONS",
                    1..=crate::notify::endpoints::MAX_CAP,
                    "a count from 1 to 1000000",
                )?
                .or(d.delivery_connections),
            database_url: match s.text("NETAPI_CHAT_DATABASE_URL").map(str::trim) {
                None | Some("") => None,
                // Read as the store reads it at start, so that `check-config` refuses what the
                // start would (a port that is no number, an unknown `sslmode`): it passed both.
                Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
                    match <tokio_postgres::Config as std::str::FromStr>::from_str(u) {
                        Ok(_) => Some(u.to_owned()),
                        Err(e) => {
                            let cause = std::error::Error::source(&e).map(ToString::to_string);
                            return Err(s.invalid(
                                "NETAPI_CHAT_DATABASE_URL",
                                &scheme_only(u),
                                database_url_expected(cause.as_deref()),
                            ));
                        }
                    }
                }
                Some(other) => {
                    return Err(s.invalid(
                        "NETAPI_CHAT_DATABASE_URL",
                        &scheme_only(other),
                        "a postgres:// or postgresql:// URL",
                    ));
                }
            },
            cluster_url: match s.text("NETAPI_CHAT_CLUSTER_URL").map(str::trim) {
                None | Some("") => None,
                Some(u) => Some(crate::cluster::ClusterUrl::parse(u).ok_or_else(|| {
                    s.invalid(
                        "NETAPI_CHAT_CLUSTER_URL",
                        u,
                        "auto, or an http:// or https://host:port URL without a path",
                    )
                })?),
            },
            data_dir: s
                .text("NETAPI_CHAT_DATA_DIR")
                .map(PathBuf::from)
                .unwrap_or(d.data_dir),
            auth: auth_from(s)?,
            callbacks: CallbackPolicy {
                allow_loopback: s.flag("NETAPI_CHAT_CALLBACK_ALLOW_LOOPBACK")?,
                allow_private: s.flag("NETAPI_CHAT_CALLBACK_ALLOW_PRIVATE")?,
            },
            webhook_secret: s.text("NETAPI_CHAT_WEBHOOK_SECRET").map(str::to_owned),
            metrics_token: s.operator_token("NETAPI_CHAT_METRICS_TOKEN")?,
            cors_origins: match s.text("NETAPI_CHAT_CORS_ORIGINS") {
                None => None,
                Some(v) => Some(crate::cors::parse_origins(v).map_err(|_| {
                    s.invalid(
                        "NETAPI_CHAT_CORS_ORIGINS",
                        v,
                        "`*`, or origins (`http://` or `https://`, a host and port, nothing more) \
                         separated by commas, e.g. https://app.example.com",
                    )
                })?),
            },
            trusted_proxies: match s.text("NETAPI_CHAT_TRUSTED_PROXIES") {
                None => Vec::new(),
                Some(v) => crate::proxies::parse_list(v).map_err(|_| {
                    s.invalid(
                        "NETAPI_CHAT_TRUSTED_PROXIES",
                        v,
                        "IP addresses or networks (`10.0.0.0/8`, `::1`) separated by commas",
                    )
                })?,
            },
            rotation_window: s
                .duration("NETAPI_CHAT_WEBHOOK_ROTATION_WINDOW")?
                .unwrap_or(d.rotation_window),
            admin_token: s.operator_token("NETAPI_CHAT_ADMIN_TOKEN")?,
            connections: Connections {
                max: s
                    .number(
                        "NETAPI_CHAT_MAX_CONNECTIONS",
                        1..=MAX_CONNECTIONS_LIMIT,
                        "a count from 1 to 1000000000",
                    )?
                    .or(d.connections.max),
                idle_timeout: s
                    .seconds("NETAPI_CHAT_IDLE_TIMEOUT_SECS")?
                    .unwrap_or(d.connections.idle_timeout),
                header_read_timeout: s
                    .seconds("NETAPI_CHAT_HEADER_READ_TIMEOUT_SECS")?
                    .unwrap_or(d.connections.header_read_timeout),
                write_stall: s
                    .seconds("NETAPI_CHAT_WRITE_STALL_SECS")?
                    .unwrap_or(d.connections.write_stall),
                max_header_bytes: s
                    .number(
                        "NETAPI_CHAT_MAX_HEADER_BYTES",
                        MIN_HEADER_BYTES..,
                        "a byte count of at least 8192",
                    )?
                    .unwrap_or(d.connections.max_header_bytes),
                shutdown_grace: s
                    .seconds("NETAPI_CHAT_SHUTDOWN_GRACE_SECS")?
                    .unwrap_or(d.connections.shutdown_grace),
            },
            tls: match (
                s.text("NETAPI_CHAT_TLS_CERT").map(str::trim),
                s.text("NETAPI_CHAT_TLS_KEY").map(str::trim),
            ) {
                (None, None) => None,
                (Some(""), _) => return Err(empty_path(s, "NETAPI_CHAT_TLS_CERT")),
                (_, Some("")) => return Err(empty_path(s, "NETAPI_CHAT_TLS_KEY")),
                (Some(cert), Some(key)) => Some(crate::tls::TlsFiles {
                    cert: PathBuf::from(cert),
                    key: PathBuf::from(key),
                }),
                (Some(_), None) => {
                    return Err(ConfigError::Missing {
                        variable: "NETAPI_CHAT_TLS_KEY",
                        needed_by: "NETAPI_CHAT_TLS_CERT",
                    });
                }
                (None, Some(_)) => {
                    return Err(ConfigError::Missing {
                        variable: "NETAPI_CHAT_TLS_CERT",
                        needed_by: "NETAPI_CHAT_TLS_KEY",
                    });
                }
            },
            callback_ca_file: s
                .text("NETAPI_CHAT_CALLBACK_CA_FILE")
                .map(str::trim)
                .filter(|f| !f.is_empty())
                .map(PathBuf::from),
            database_ca_file: s
                .text("NETAPI_CHAT_DATABASE_CA_FILE")
                .map(str::trim)
                .filter(|f| !f.is_empty())
                .map(PathBuf::from),
            cluster_ca_file: s
                .text("NETAPI_CHAT_CLUSTER_CA_FILE")
                .map(str::trim)
                .filter(|f| !f.is_empty())
                .map(PathBuf::from),
            log_format: match s.text("NETAPI_CHAT_LOG_FORMAT").map(str::trim) {
                None | Some("text") => LogFormat::Text,
                Some("json") => LogFormat::Json,
                Some(other) => {
                    return Err(s.invalid("NETAPI_CHAT_LOG_FORMAT", other, "text or json"));
                }
            },
            otlp_endpoint: match s.text("NETAPI_CHAT_OTLP_ENDPOINT").map(str::trim) {
                None | Some("") => None,
                Some(url) => {
                    let uri = url.parse::<http::Uri>().ok();
                    if !uri.is_some_and(|u| {
                        u.scheme_str() == Some("http")
                            && u.authority().is_some()
                            && u.query().is_none()
                    }) {
                        return Err(s.invalid(
                            "NETAPI_CHAT_OTLP_ENDPOINT",
                            url,
                            "an http:// URL such as http://127.0.0.1:4318",
                        ));
                    }
                    Some(url.trim_end_matches('/').to_owned())
                }
            },
            log_level: match s.text("NETAPI_CHAT_LOG_LEVEL").map(str::trim) {
                None | Some("warn") => dropshot::ConfigLoggingLevel::Warn,
                Some("info") => dropshot::ConfigLoggingLevel::Info,
                Some("debug") => dropshot::ConfigLoggingLevel::Debug,
                Some("error") => dropshot::ConfigLoggingLevel::Error,
                Some(other) => {
                    return Err(s.invalid(
                        "NETAPI_CHAT_LOG_LEVEL",
                        other,
                        "error, warn, info or debug",
                    ));
                }
            },
            limits: Limits {
                participants_per_session: s
                    .number("NETAPI_CHAT_MAX_PARTICIPANTS", 2.., "a count of at least 2")?
                    .unwrap_or(d.limits.participants_per_session),
                text_chars: s
                    .number("NETAPI_CHAT_MAX_TEXT_CHARS", 1.., "a count of at least 1")?
                    .unwrap_or(d.limits.text_chars),
                subscriptions_per_user: s
                    .number(
                        "NETAPI_CHAT_MAX_SUBSCRIPTIONS_PER_USER",
                        1..,
                        "a count of at least 1",
                    )?
                    .unwrap_or(d.limits.subscriptions_per_user),
                sessions_per_user: s
                    .number(
                        "NETAPI_CHAT_MAX_SESSIONS_PER_USER",
                        1..,
                        "a count of at least 1",
                    )?
                    .unwrap_or(d.limits.sessions_per_user),
                channels_per_user: s
                    .var("NETAPI_CHAT_MAX_CHANNELS_PER_USER", "a count")?
                    .unwrap_or(d.limits.channels_per_user),
                in_all: crate::chat::InAll {
                    sessions: s
                        .number("NETAPI_CHAT_MAX_SESSIONS", 1.., "a count of at least 1")?
                        .unwrap_or(d.limits.in_all.sessions),
                    subscriptions: s
                        .number(
                            "NETAPI_CHAT_MAX_SUBSCRIPTIONS",
                            1..,
                            "a count of at least 1",
                        )?
                        .unwrap_or(d.limits.in_all.subscriptions),
                    channels: s
                        .var("NETAPI_CHAT_MAX_CHANNELS", "a count")?
                        .unwrap_or(d.limits.in_all.channels),
                    token_share_percent: s
                        .number(
                            "NETAPI_CHAT_TOKEN_SHARE_PERCENT",
                            1..=100,
                            "a percentage from 1 to 100",
                        )?
                        .unwrap_or(d.limits.in_all.token_share_percent),
                },
                // Drained over the retention period: set where both are known (`server`).
                sent_bytes: (
                    s.var("NETAPI_CHAT_SENT_BYTES_BUDGET", "a count of bytes")?
                        .unwrap_or(d.limits.sent_bytes.0),
                    d.limits.sent_bytes.1,
                ),
                channel_poll_wait: s
                    .duration_in(
                        "NETAPI_CHAT_CHANNEL_POLL_WAIT",
                        MIN_CHANNEL_POLL_WAIT..=MAX_CHANNEL_POLL_WAIT,
                        "a duration from 1s to 1h, such as 25s",
                    )?
                    .unwrap_or(d.limits.channel_poll_wait),
                invitations: InvitationLimits {
                    per_inviter: s
                        .number(
                            "NETAPI_CHAT_MAX_PENDING_INVITATIONS",
                            1..,
                            "a count of at least 1",
                        )?
                        .unwrap_or(d.limits.invitations.per_inviter),
                    to_one_invitee: s
                        .number(
                            "NETAPI_CHAT_MAX_PENDING_INVITATIONS_PER_INVITEE",
                            1..,
                            "a count of at least 1",
                        )?
                        .unwrap_or(d.limits.invitations.to_one_invitee),
                    received: s
                        .number(
                            "NETAPI_CHAT_MAX_PENDING_INVITATIONS_RECEIVED",
                            1..,
                            "a count of at least 1",
                        )?
                        .unwrap_or(d.limits.invitations.received),
                    per_minute: s
                        .var("NETAPI_CHAT_INVITATION_RATE", "invitations a minute")?
                        .unwrap_or(d.limits.invitations.per_minute),
                },
            },
            xml: XmlLimits {
                max_depth: s
                    .number(
                        "NETAPI_CHAT_XML_MAX_DEPTH",
                        MIN_XML_LIMITS.max_depth..,
                        "a count of at least 3",
                    )?
                    .unwrap_or(d.xml.max_depth),
                max_elements: s
                    .number(
                        "NETAPI_CHAT_XML_MAX_ELEMENTS",
                        MIN_XML_LIMITS.max_elements..,
                        "a count of at least 3",
                    )?
                    .unwrap_or(d.xml.max_elements),
                max_attributes_per_element: s
                    .number(
                        "NETAPI_CHAT_XML_MAX_ATTRIBUTES",
                        MIN_XML_LIMITS.max_attributes_per_element..,
                        "a count of at least 1",
                    )?
                    .unwrap_or(d.xml.max_attributes_per_element),
                max_text_bytes: s
                    .number(
                        "NETAPI_CHAT_XML_MAX_TEXT_BYTES",
                        MIN_XML_LIMITS.max_text_bytes..,
                        "a byte count of at least 64",
                    )?
                    .unwrap_or(d.xml.max_text_bytes),
            },
            rate: {
                const RATE: &str = "requests a second: 0 (no limit), or at least 0.001";
                let rate = match s.number("NETAPI_CHAT_RATE_LIMIT", 0.0..=f64::MAX, RATE)? {
                    Some(r) if r > 0.0 && r < MIN_RATE => {
                        let given = s.text("NETAPI_CHAT_RATE_LIMIT").unwrap_or_default();
                        return Err(s.invalid("NETAPI_CHAT_RATE_LIMIT", given, RATE));
                    }
                    Some(r) => r,
                    None => d.rate.0,
                };
                let burst = s
                    .number(
                        "NETAPI_CHAT_RATE_BURST",
                        1.0..=f64::MAX,
                        "a count of at least 1",
                    )?
                    .unwrap_or(rate.max(1.0));
                (rate, burst)
            },
            body_timeout: s
                .millis("NETAPI_CHAT_BODY_TIMEOUT_MS")?
                .unwrap_or(d.body_timeout),
            auth_failures: (
                s.var("NETAPI_CHAT_AUTH_FAILURE_LIMIT", "a count")?
                    .unwrap_or(d.auth_failures.0),
                s.number(
                    "NETAPI_CHAT_AUTH_FAILURE_WINDOW_SECS",
                    1..=MAX_AUTH_FAILURE_WINDOW.as_secs(),
                    "seconds, 1 to 86400",
                )?
                .map(Duration::from_secs)
                .unwrap_or(d.auth_failures.1),
            ),
            retention: Retention {
                keep: match s.text("NETAPI_CHAT_RETENTION") {
                    Some(v) => crate::retention::parse_retention(v).map_err(|_| {
                        s.invalid(
                            "NETAPI_CHAT_RETENTION",
                            v,
                            "a positive duration such as 30d, 12h or 90s, less than 1000000000s",
                        )
                    })?,
                    None => d.retention.keep,
                },
                interval: s
                    .millis("NETAPI_CHAT_PURGE_INTERVAL_MS")?
                    .unwrap_or(d.retention.interval),
            },
            standbys_deliver: match s.text("NETAPI_CHAT_CLUSTER_DELIVERY").map(str::trim) {
                None | Some("standbys") => true,
                Some("leader") => false,
                Some(other) => {
                    return Err(s.invalid(
                        "NETAPI_CHAT_CLUSTER_DELIVERY",
                        other,
                        "standbys or leader",
                    ));
                }
            },
            sync: match s.text("NETAPI_CHAT_SYNC").map(str::trim) {
                None | Some("normal") => Sync::Normal,
                Some("full") => Sync::Full,
                Some(other) => {
                    return Err(s.invalid("NETAPI_CHAT_SYNC", other, "normal or full"));
                }
            },
            cache_mb: s
                .number("NETAPI_CHAT_CACHE_MB", 1..=65536, "MiB, 1 to 65536")?
                .unwrap_or(d.cache_mb),
        })
    }
}

/// Token file or JWT. Every authentication setting is looked up whichever is in force, so
/// that a configuration is checked the same way in both cases.
fn auth_from(s: &Sources) -> Result<AuthConfig, ConfigError> {
    let token_file = s.text("NETAPI_CHAT_TOKEN_FILE").map(PathBuf::from);
    let jwks = s.text("NETAPI_CHAT_JWKS_FILE").map(PathBuf::from);
    let issuer = s.text("NETAPI_CHAT_JWT_ISSUER");
    let audience = s.text("NETAPI_CHAT_JWT_AUDIENCE");
    let user_claim = s.text("NETAPI_CHAT_JWT_USER_CLAIM").unwrap_or("sub");
    let scope = s.text("NETAPI_CHAT_JWT_SCOPE").unwrap_or("chat");
    let Some(jwks) = jwks else {
        return Ok(AuthConfig::TokenFile(token_file));
    };
    let required = |value: Option<&str>, variable: &'static str| {
        value.map(str::to_owned).ok_or(ConfigError::Missing {
            variable,
            needed_by: "NETAPI_CHAT_JWKS_FILE",
        })
    };
    Ok(AuthConfig::Jwt {
        jwks,
        issuer: required(issuer, "NETAPI_CHAT_JWT_ISSUER")?,
        audience: required(audience, "NETAPI_CHAT_JWT_AUDIENCE")?,
        user_claim: user_claim.to_owned(),
        scope: scope.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database URL that does not parse is told with what is wrong in it (an option's name,
    /// never a value) and, for libpq's TLS options, what to use instead.
    #[test]
    fn a_bad_database_url_is_told_what_is_wrong_in_it() {
        let told = |url: &str| {
            let e =
                <tokio_postgres::Config as std::str::FromStr>::from_str(url).expect_err("refused");
            let cause = std::error::Error::source(&e).map(ToString::to_string);
            database_url_expected(cause.as_deref())
        };
        let verify = told("postgres://u:secret@h:5432/d?sslmode=verify-full");
        assert!(
            verify.contains("verify-full") && verify.contains("NETAPI_CHAT_DATABASE_CA_FILE"),
            "{verify}"
        );
        let root = told("postgres://u:secret@h:5432/d?sslrootcert=/ca.pem");
        assert!(
            root.contains("sslrootcert is not read")
                && root.contains("NETAPI_CHAT_DATABASE_CA_FILE"),
            "{root}"
        );
        let other = told("postgres://u:secret@h:5432/d?frobnicate=1");
        assert!(other.contains("option `frobnicate`"), "{other}");
        let port = told("postgres://u:secret@h:port/d");
        assert!(port.contains("`port`"), "{port}");
        for t in [verify, root, other, port] {
            assert!(!t.contains("secret") && !t.contains("/ca.pem"), "{t}");
        }
    }

    /// The admin and metrics tokens are held to the access tokens' rule (ops review O2: a
    /// one-character admin token was taken), and the refusal does not repeat the secret.
    #[test]
    fn admin_and_metrics_tokens_must_be_strong() {
        for name in ["NETAPI_CHAT_ADMIN_TOKEN", "NETAPI_CHAT_METRICS_TOKEN"] {
            for weak in [
                "x",
                "1 2",
                "short-token-012",
                "an admin token with spaces",
                "ｘｘｘｘｘｘｘｘｘｘｘｘｘｘｘｘｘ",
            ] {
                let e = config(None, &[(name, weak)]).unwrap_err().to_string();
                assert!(e.contains(name) && e.contains("at least 16"), "{e}");
                assert!(
                    weak.len() < 4 || !e.contains(weak),
                    "the secret is not repeated: {e}"
                );
            }
            let strong = "admin-token-0123456789abcdef";
            assert!(config(None, &[(name, strong)]).is_ok(), "{name}");
        }
    }

    /// The caps' defaults leave the server its own descriptors at any open-files limit (the
    /// storage review's 48 included), halve a standby's clients, and stop at their ceilings.
    #[test]
    fn the_open_files_limit_is_shared_with_a_reserve_first() {
        for (limit, clients, deliveries) in [
            (48, 18, 3),
            (256, 144, 24),
            (1024, 720, 120),
            (1_048_576, DEFAULT_MAX_CONNECTIONS, 4096),
        ] {
            let s = file_shares(limit, false);
            assert_eq!((s.clients, s.deliveries), (clients, deliveries), "{limit}");
            let used = (s.clients + s.deliveries) as u64;
            assert!(used + RESERVED_FILES.min(limit / 2) <= limit, "{limit}");
        }
        assert_eq!(file_shares(1024, true).clients, 360);
        assert_eq!(file_shares(1024, true).deliveries, 120);
        assert_eq!(
            file_shares(0, false),
            FileShares {
                clients: 1,
                deliveries: 1
            }
        );
        assert_eq!(
            file_shares(3, true),
            FileShares {
                clients: 1,
                deliveries: 1
            }
        );
    }

    /// A variable named like a setting that is none is reported, with the setting it most
    /// likely meant; settings, the client's variables, the test harness's and unrelated
    /// variables are not.
    #[test]
    fn misspelt_settings_are_reported_with_the_nearest_one() {
        let names = [
            "NETAPI_CHAT_SYNCH",
            "NETAPI_CHAT_RETENTON",
            "NETAPI_CHAT_SYNC",
            "NETAPI_CHAT_TOKEN",
            "NETAPI_CHAT_CONFIG",
            "NETAPI_CHAT_TEST_DATABASE_URL",
            "NETAPI_CHAT_SOMETHING_ELSE_ENTIRELY",
            "PATH",
        ]
        .map(std::ffi::OsString::from);
        assert_eq!(
            unknown_variables(names),
            [
                "NETAPI_CHAT_RETENTON (did you mean NETAPI_CHAT_RETENTION?)",
                "NETAPI_CHAT_SOMETHING_ELSE_ENTIRELY",
                "NETAPI_CHAT_SYNCH (did you mean NETAPI_CHAT_SYNC?)",
            ]
        );
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    /// Sources from a map standing for the environment, over `file`.
    fn sources(file: Option<&Path>, env: &[(&str, &str)]) -> Result<Sources, ConfigError> {
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Sources::gather(file, move |name| env.get(name).map(OsString::from))
    }

    fn config(file: Option<&Path>, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_sources(&sources(file, env)?)
    }

    /// A configuration file holding `text`, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(text: &str) -> TempFile {
            let path = std::env::temp_dir().join(format!(
                "netapi-chat-config-{}.toml",
                uuid::Uuid::new_v4().simple()
            ));
            std::fs::write(&path, text).unwrap();
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn keys_and_variables_are_unique_and_prefixed() {
        let mut keys = BTreeSet::new();
        for s in SETTINGS {
            assert!(s.env.starts_with(ENV_PREFIX), "{}", s.env);
            assert!(keys.insert(s.key()), "duplicate {}", s.env);
            assert!(!s.doc.is_empty(), "{} has no description", s.env);
            assert!(
                !format!("{}{}", s.doc, s.unset).contains('|'),
                "{}: a `|` would break the README table",
                s.env
            );
            assert!(
                s.default.is_some() == s.unset.is_empty(),
                "{}: either a default or what unset means",
                s.env
            );
        }
    }

    /// The defaults the table shows are the ones in force: nothing given, or every default
    /// given explicitly, is `Config::default()`.
    #[test]
    fn listed_defaults_are_the_typed_defaults() {
        let want = format!("{:?}", Config::default());
        assert_eq!(format!("{:?}", config(None, &[]).unwrap()), want);
        let explicit: Vec<(&str, &str)> = SETTINGS
            .iter()
            .filter_map(|s| s.default.map(|d| (s.env, d)))
            .collect();
        assert_eq!(format!("{:?}", config(None, &explicit).unwrap()), want);
    }

    /// Reading a configuration looks up every listed setting, and nothing that is not listed
    /// (a setting read in `from_sources` but missing from the table would be unknown to the
    /// file, `--help` and `check-config`).
    #[test]
    fn every_listed_setting_is_read_and_nothing_else() {
        let s = sources(None, &[]).unwrap();
        Config::from_sources(&s).unwrap();
        let listed: BTreeSet<String> = SETTINGS.iter().map(|s| s.env.to_owned()).collect();
        assert_eq!(s.looked_up(), listed);
    }

    /// Every `NETAPI_CHAT_…` variable the README names is a setting (or one of the few
    /// variables that are not settings), so a new variable cannot be documented without
    /// being in the table.
    #[test]
    fn messages_name_a_setting_from_the_file_by_its_key_there() {
        let dir = std::env::temp_dir().join(format!("netapi-chat-names-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "tls_cert = \"/x/cert.pem\"\n").unwrap();
        let s = Sources::gather(Some(&file), |name| {
            (name == "NETAPI_CHAT_TLS_KEY").then(|| OsString::from("/x/key.pem"))
        })
        .unwrap();
        let names = s.names();
        assert_eq!(
            names.say("NETAPI_CHAT_TLS_CERT: /x/cert.pem: no certificate; NETAPI_CHAT_TLS_KEY: …"),
            format!(
                "`tls_cert` (in {}): /x/cert.pem: no certificate; NETAPI_CHAT_TLS_KEY: …",
                file.display()
            ),
            "from the file: its key; from the environment: its variable"
        );
        assert_eq!(
            names.say("NETAPI_CHAT_TLS_CERT_X NETAPI_CHAT_TLS_CERTS"),
            "NETAPI_CHAT_TLS_CERT_X NETAPI_CHAT_TLS_CERTS",
            "only the whole name"
        );
        assert_eq!(
            Sources::default().names().say("NETAPI_CHAT_TLS_CERT"),
            "NETAPI_CHAT_TLS_CERT"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn every_variable_the_readme_names_is_a_setting() {
        let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"));
        let mut rest = readme;
        while let Some(at) = rest.find(ENV_PREFIX) {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            let name = name.trim_end_matches('_');
            assert!(
                setting(name).is_some() || not_a_setting(name),
                "README names {name}, which is not in config::SETTINGS"
            );
        }
    }

    /// The README's settings table is [`markdown_table`]; `UPDATE_EXPECT=1` rewrites it.
    #[test]
    fn readme_settings_table_is_generated_from_the_settings() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
        let readme = std::fs::read_to_string(&path).unwrap();
        let (begin, end) = ("<!-- settings-table:begin", "<!-- settings-table:end -->");
        let start = readme
            .find(begin)
            .expect("README has a settings-table:begin marker");
        let start = start + readme[start..].find('\n').expect("marker line") + 1;
        let stop = readme
            .find(end)
            .expect("README has a settings-table:end marker");
        let want = markdown_table();
        if readme[start..stop] != want {
            if std::env::var_os("UPDATE_EXPECT").is_some() {
                let updated = format!("{}{want}{}", &readme[..start], &readme[stop..]);
                std::fs::write(&path, updated).unwrap();
            } else {
                panic!(
                    "README.md's settings table is not config::SETTINGS; rewrite it with \
                     `UPDATE_EXPECT=1 cargo test -p netapi-chat --lib config`"
                );
            }
        }
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let f = TempFile::new(
            "max_body_bytes = 1000\nbind = \"127.0.0.1:9000\"\nsync = \"full\"\n\
             retry_schedule = [\"0\", \"1s\", \"2m\"]\ncallback_allow_private = true\n",
        );
        let c = config(Some(&f.0), &[("NETAPI_CHAT_MAX_BODY_BYTES", "2000")]).unwrap();
        assert_eq!(c.max_body_bytes, 2000, "environment over file");
        assert_eq!(
            c.bind,
            "127.0.0.1:9000".parse().unwrap(),
            "file over default"
        );
        assert_eq!(c.sync, Sync::Full);
        assert!(c.callbacks.allow_private);
        assert_eq!(
            c.retry_schedule,
            [0, 1, 120].map(Duration::from_secs).to_vec(),
            "a list is a comma-separated value"
        );
        assert_eq!(c.max_body_bytes, 2000);
        let s = sources(Some(&f.0), &[("NETAPI_CHAT_MAX_BODY_BYTES", "2000")]).unwrap();
        assert_eq!(
            s.given("NETAPI_CHAT_MAX_BODY_BYTES"),
            Some(("2000", Origin::Env))
        );
        assert_eq!(
            s.given("NETAPI_CHAT_BIND"),
            Some(("127.0.0.1:9000", Origin::File))
        );
    }

    #[test]
    fn an_unknown_key_is_refused_by_name() {
        let f = TempFile::new("max_body_bytes = 10\nmax_bodybytes = 10\n");
        let e = config(Some(&f.0), &[]).unwrap_err().to_string();
        assert!(e.contains("unknown setting `max_bodybytes`"), "{e}");
        assert!(e.contains("did you mean `max_body_bytes`?"), "{e}");
        assert!(e.contains(&f.0.display().to_string()), "{e}");
        let f = TempFile::new("frobnicate = 1\n");
        let e = config(Some(&f.0), &[]).unwrap_err().to_string();
        assert!(e.contains("`netapi-chat --help` lists the settings"), "{e}");
        let f = TempFile::new("NETAPI_CHAT_SYNC = \"full\"\n");
        let e = config(Some(&f.0), &[]).unwrap_err().to_string();
        assert!(e.contains("write it as `sync`"), "{e}");
        let f = TempFile::new("[limits]\nmax_body_bytes = 10\n");
        let e = config(Some(&f.0), &[]).unwrap_err().to_string();
        assert!(e.contains("unknown setting `limits`"), "{e}");
        let f = TempFile::new("max_body_bytes = { a = 1 }\n");
        let e = config(Some(&f.0), &[]).unwrap_err().to_string();
        assert!(
            e.contains("`max_body_bytes` must be a string, number"),
            "{e}"
        );
    }

    #[test]
    fn invalid_values_name_the_setting_and_where_it_was_given() {
        let f = TempFile::new("max_body_bytes = \"lots\"\n");
        let e = config(Some(&f.0), &[]).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{}: max_body_bytes = \"lots\" is not valid: expected a byte count of at least 256",
                f.0.display()
            )
        );
        let e = config(Some(&f.0), &[("NETAPI_CHAT_MAX_BODY_BYTES", "-1")])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "NETAPI_CHAT_MAX_BODY_BYTES=\"-1\" is not valid: expected a byte count of at least 256"
        );
        let e = config(None, &[("NETAPI_CHAT_JWKS_FILE", "/k.json")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("NETAPI_CHAT_JWT_ISSUER (`jwt_issuer`") && e.contains("must be set when"),
            "{e}"
        );
        let f = TempFile::new("max_body_bytes = 1\nmax_body_bytes = 2\n");
        let e = config(Some(&f.0), &[]).unwrap_err().to_string();
        assert!(e.contains("not valid TOML"), "{e}");
        let e = config(Some(Path::new("/nonexistent/netapi-chat.toml")), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read the configuration file"), "{e}");
    }

    /// Out-of-range values, each refused naming its setting and the value as given (the
    /// message of [`Sources::invalid`]), and the boundary value, accepted and in force: `(setting,
    /// refused values, boundary value)`.
    const RANGES: &[(&str, &[&str], &str)] = &[
        (
            "NETAPI_CHAT_INVITATION_TIMEOUT_SECS",
            &["-1", "0", "nan", "inf", "1e9", "soon"],
            "0.001",
        ),
        (
            "NETAPI_CHAT_ADHOC_IDLE_SECS",
            &["0", "-5", "inf", "NaN"],
            "0.001",
        ),
        (
            "NETAPI_CHAT_SESSION_IDLE_SECS",
            &["0", "-5", "inf", "NaN"],
            "0.001",
        ),
        (
            "NETAPI_CHAT_BODY_TIMEOUT_MS",
            &["0", "-1", "1.5", "1000000000000"],
            "1",
        ),
        (
            "NETAPI_CHAT_CHANNEL_POLL_WAIT",
            &["0", "999ms", "0.5s", "-1s", "61m", "1e15h"],
            "1s",
        ),
        ("NETAPI_CHAT_CHANNEL_POLL_WAIT", &[], "1h"),
        (
            "NETAPI_CHAT_IDLE_TIMEOUT_SECS",
            &["0", "-1", "nan"],
            "0.001",
        ),
        (
            "NETAPI_CHAT_HEADER_READ_TIMEOUT_SECS",
            &["0", "-1", "inf"],
            "0.001",
        ),
        ("NETAPI_CHAT_WRITE_STALL_SECS", &["0", "-0.5"], "0.001"),
        ("NETAPI_CHAT_SHUTDOWN_GRACE_SECS", &["0", "nan"], "0.001"),
        (
            "NETAPI_CHAT_PURGE_INTERVAL_MS",
            &["0", "1000000000000"],
            "1",
        ),
        ("NETAPI_CHAT_PURGE_INTERVAL_MS", &[], "999999999999"),
        (
            "NETAPI_CHAT_RETENTION",
            &["0s", "30", "1000000000s", "1000000000000000000s", "300000y"],
            "999999999s",
        ),
        (
            "NETAPI_CHAT_CALLBACK_ALLOW_LOOPBACK",
            &["yes", "no", "on", "off", "2", "TRUE"],
            "1",
        ),
        ("NETAPI_CHAT_CALLBACK_ALLOW_PRIVATE", &["yes", "on"], "true"),
        ("NETAPI_CHAT_CACHE_MB", &["0", "65537"], "65536"),
        ("NETAPI_CHAT_MAX_HEADER_BYTES", &["100", "8191"], "8192"),
        ("NETAPI_CHAT_MAX_BODY_BYTES", &["0", "255", "-1"], "256"),
        ("NETAPI_CHAT_MAX_PARTICIPANTS", &["0", "1"], "2"),
        ("NETAPI_CHAT_MAX_TEXT_CHARS", &["0"], "1"),
        ("NETAPI_CHAT_XML_MAX_DEPTH", &["0", "2"], "3"),
        ("NETAPI_CHAT_XML_MAX_ELEMENTS", &["0", "2"], "3"),
        ("NETAPI_CHAT_XML_MAX_ATTRIBUTES", &["0"], "1"),
        ("NETAPI_CHAT_XML_MAX_TEXT_BYTES", &["0", "63"], "64"),
        ("NETAPI_CHAT_MAX_SUBSCRIPTIONS_PER_USER", &["0", "-1"], "1"),
        ("NETAPI_CHAT_MAX_SESSIONS_PER_USER", &["0"], "1"),
        ("NETAPI_CHAT_MAX_SESSIONS", &["0"], "1"),
        ("NETAPI_CHAT_MAX_SUBSCRIPTIONS", &["0"], "1"),
        ("NETAPI_CHAT_MAX_PENDING_INVITATIONS", &["0"], "1"),
        (
            "NETAPI_CHAT_MAX_PENDING_INVITATIONS_PER_INVITEE",
            &["0"],
            "1",
        ),
        ("NETAPI_CHAT_MAX_PENDING_INVITATIONS_RECEIVED", &["0"], "1"),
        ("NETAPI_CHAT_TOKEN_SHARE_PERCENT", &["0", "101", "50%"], "1"),
        // 0 means off (or none) and stays allowed.
        ("NETAPI_CHAT_MAX_CHANNELS_PER_USER", &["-1"], "0"),
        ("NETAPI_CHAT_SENT_BYTES_BUDGET", &["-1"], "0"),
        ("NETAPI_CHAT_INVITATION_RATE", &["-1"], "0"),
        ("NETAPI_CHAT_AUTH_FAILURE_LIMIT", &["-1"], "0"),
        ("NETAPI_CHAT_DELIVERY_BACKLOG", &["0"], "1"),
        ("NETAPI_CHAT_DELIVERY_BACKLOG_BYTES", &["0", "4095"], "4096"),
        ("NETAPI_CHAT_DELIVERY_BUDGET_BYTES", &["0", "4095"], "4096"),
        (
            "NETAPI_CHAT_NOTIFY_TIMEOUT_MS",
            &["0", "1000000000000"],
            "1",
        ),
        (
            "NETAPI_CHAT_DELIVERY_MAX_BACKOFF",
            &["0", "0.5ms", "0s", "1e9s", "5e15h"],
            "1ms",
        ),
        (
            "NETAPI_CHAT_DELIVERY_GIVE_UP_AFTER",
            &["1e9", "-1s", "soon"],
            "999999999s",
        ),
        ("NETAPI_CHAT_WEBHOOK_ROTATION_WINDOW", &["1e9s", "-1s"], "0"),
        (
            "NETAPI_CHAT_MAX_CONNECTIONS",
            &["0", "-1", "1000000001"],
            "1",
        ),
        ("NETAPI_CHAT_MAX_CONNECTIONS", &[], "1000000000"),
        (
            "NETAPI_CHAT_DELIVERY_CONNECTIONS_PER_ENDPOINT",
            &["0", "-1", "1000001"],
            "1",
        ),
        (
            "NETAPI_CHAT_DELIVERY_CONNECTIONS_PER_ENDPOINT",
            &[],
            "1000000",
        ),
        (
            "NETAPI_CHAT_DELIVERY_CONNECTIONS",
            &["0", "-1", "1000001"],
            "1",
        ),
        ("NETAPI_CHAT_DELIVERY_CONNECTIONS", &[], "1000000"),
        (
            "NETAPI_CHAT_RATE_LIMIT",
            &["-1", "nan", "inf", "-inf", "0.0009", "1e-300"],
            "0.001",
        ),
        ("NETAPI_CHAT_RATE_LIMIT", &[], "0"),
        (
            "NETAPI_CHAT_RATE_BURST",
            &["0", "0.5", "-1", "nan", "inf"],
            "1",
        ),
        (
            "NETAPI_CHAT_AUTH_FAILURE_WINDOW_SECS",
            &["0", "86401", "18446744073709551615"],
            "1",
        ),
        ("NETAPI_CHAT_AUTH_FAILURE_WINDOW_SECS", &[], "86400"),
        (
            "NETAPI_CHAT_RETRY_SCHEDULE",
            &["0,5s,0", "5s,0", "", "0,,5s", "0,1e9"],
            "0,1ms",
        ),
    ];

    /// What the settings table (each setting's text) says of the range of every setting in
    /// [`RANGES`]: the README promises that the table gives each range. `""`: nothing beyond
    /// the bound of every duration (less than 10⁹ s), which the README states once.
    const STATED: &[(&str, &str)] = &[
        ("NETAPI_CHAT_INVITATION_TIMEOUT_SECS", "above `0`"),
        ("NETAPI_CHAT_ADHOC_IDLE_SECS", "above `0`"),
        ("NETAPI_CHAT_SESSION_IDLE_SECS", "above `0`"),
        ("NETAPI_CHAT_BODY_TIMEOUT_MS", "at least `1`"),
        ("NETAPI_CHAT_CHANNEL_POLL_WAIT", "`1s` to `1h`"),
        ("NETAPI_CHAT_IDLE_TIMEOUT_SECS", "above `0`"),
        ("NETAPI_CHAT_HEADER_READ_TIMEOUT_SECS", "above `0`"),
        ("NETAPI_CHAT_WRITE_STALL_SECS", "above `0`"),
        ("NETAPI_CHAT_SHUTDOWN_GRACE_SECS", "above `0`"),
        ("NETAPI_CHAT_PURGE_INTERVAL_MS", "at least `1`"),
        ("NETAPI_CHAT_RETENTION", "above `0`"),
        ("NETAPI_CHAT_CALLBACK_ALLOW_LOOPBACK", "`1` or `true`"),
        ("NETAPI_CHAT_CALLBACK_ALLOW_PRIVATE", "`1` or `true`"),
        ("NETAPI_CHAT_CACHE_MB", "`1` to `65536`"),
        ("NETAPI_CHAT_MAX_HEADER_BYTES", "at least `8192`"),
        ("NETAPI_CHAT_MAX_BODY_BYTES", "at least `256`"),
        ("NETAPI_CHAT_MAX_PARTICIPANTS", "at least `2`"),
        ("NETAPI_CHAT_MAX_TEXT_CHARS", "at least `1`"),
        ("NETAPI_CHAT_XML_MAX_DEPTH", "at least `3`"),
        ("NETAPI_CHAT_XML_MAX_ELEMENTS", "at least `3`"),
        ("NETAPI_CHAT_XML_MAX_ATTRIBUTES", "at least `1`"),
        ("NETAPI_CHAT_XML_MAX_TEXT_BYTES", "at least `64`"),
        ("NETAPI_CHAT_MAX_SUBSCRIPTIONS_PER_USER", "at least `1`"),
        ("NETAPI_CHAT_MAX_SESSIONS_PER_USER", "at least `1`"),
        ("NETAPI_CHAT_MAX_SESSIONS", "at least `1`"),
        ("NETAPI_CHAT_MAX_SUBSCRIPTIONS", "at least `1`"),
        ("NETAPI_CHAT_MAX_PENDING_INVITATIONS", "at least `1`"),
        (
            "NETAPI_CHAT_MAX_PENDING_INVITATIONS_PER_INVITEE",
            "at least `1`",
        ),
        (
            "NETAPI_CHAT_MAX_PENDING_INVITATIONS_RECEIVED",
            "at least `1`",
        ),
        ("NETAPI_CHAT_MAX_CHANNELS_PER_USER", "`0` = no channels"),
        ("NETAPI_CHAT_TOKEN_SHARE_PERCENT", "`1` to `100`"),
        ("NETAPI_CHAT_SENT_BYTES_BUDGET", "`0` = off"),
        ("NETAPI_CHAT_INVITATION_RATE", "`0` = off"),
        ("NETAPI_CHAT_AUTH_FAILURE_LIMIT", "`0` = off"),
        ("NETAPI_CHAT_DELIVERY_BACKLOG", "at least `1`"),
        ("NETAPI_CHAT_DELIVERY_BACKLOG_BYTES", "at least `4096`"),
        ("NETAPI_CHAT_DELIVERY_BUDGET_BYTES", "at least `4096`"),
        ("NETAPI_CHAT_NOTIFY_TIMEOUT_MS", "at least `1`"),
        ("NETAPI_CHAT_DELIVERY_MAX_BACKOFF", "at least `1ms`"),
        ("NETAPI_CHAT_DELIVERY_GIVE_UP_AFTER", ""),
        ("NETAPI_CHAT_WEBHOOK_ROTATION_WINDOW", ""),
        ("NETAPI_CHAT_MAX_CONNECTIONS", "`1` to `1000000000`"),
        (
            "NETAPI_CHAT_DELIVERY_CONNECTIONS_PER_ENDPOINT",
            "`1` to `1000000`",
        ),
        ("NETAPI_CHAT_DELIVERY_CONNECTIONS", "`1` to `1000000`"),
        ("NETAPI_CHAT_RATE_LIMIT", "at least `0.001`"),
        ("NETAPI_CHAT_RATE_BURST", "at least `1`"),
        ("NETAPI_CHAT_AUTH_FAILURE_WINDOW_SECS", "`1` to `86400`"),
        ("NETAPI_CHAT_RETRY_SCHEDULE", "must be above `0`"),
    ];

    /// Every range the reading enforces ([`RANGES`]) is in the settings table: seven were
    /// not (the connection timeouts, the shutdown grace, the purge interval, the cache size,
    /// the connection cap's upper bound), though the README says the table gives each one.
    #[test]
    fn every_enforced_range_is_stated_in_the_table() {
        for (variable, _, _) in RANGES {
            let stated = STATED
                .iter()
                .find(|(v, _)| v == variable)
                .map(|(_, stated)| *stated)
                .unwrap_or_else(|| panic!("{variable} is in RANGES but not in STATED"));
            let s = setting(variable).unwrap_or_else(|| panic!("{variable} is no setting"));
            assert!(
                s.doc.contains(stated) || s.unset.contains(stated),
                "the table does not give the range of {variable} ({stated:?}): {}",
                s.doc
            );
        }
    }

    /// Every duration setting refuses 10⁹ s, written in its own unit, and takes just under it
    /// when nothing tighter applies: the README says every duration is less than 10⁹ s, and
    /// `NETAPI_CHAT_RETENTION` took `1000000000000000000s` and `300000y`, the millisecond
    /// settings any `u64`. `(setting, 10⁹ s, just under or "" when a tighter bound applies)`.
    const A_BILLION_SECONDS: &[(&str, &str, &str)] = &[
        ("NETAPI_CHAT_RETENTION", "1000000000s", "999999999s"),
        (
            "NETAPI_CHAT_PURGE_INTERVAL_MS",
            "1000000000000",
            "999999999999",
        ),
        (
            "NETAPI_CHAT_NOTIFY_TIMEOUT_MS",
            "1000000000000",
            "999999999999",
        ),
        (
            "NETAPI_CHAT_BODY_TIMEOUT_MS",
            "1000000000000",
            "999999999999",
        ),
        (
            "NETAPI_CHAT_INVITATION_TIMEOUT_SECS",
            "1000000000",
            "999999999",
        ),
        ("NETAPI_CHAT_ADHOC_IDLE_SECS", "1000000000", "999999999"),
        ("NETAPI_CHAT_SESSION_IDLE_SECS", "1000000000", "999999999"),
        ("NETAPI_CHAT_IDLE_TIMEOUT_SECS", "1000000000", "999999999"),
        (
            "NETAPI_CHAT_HEADER_READ_TIMEOUT_SECS",
            "1000000000",
            "999999999",
        ),
        ("NETAPI_CHAT_WRITE_STALL_SECS", "1000000000", "999999999"),
        ("NETAPI_CHAT_SHUTDOWN_GRACE_SECS", "1000000000", "999999999"),
        ("NETAPI_CHAT_AUTH_FAILURE_WINDOW_SECS", "1000000000", ""),
        (
            "NETAPI_CHAT_RETRY_SCHEDULE",
            "0,1000000000s",
            "0,999999999s",
        ),
        (
            "NETAPI_CHAT_DELIVERY_MAX_BACKOFF",
            "1000000000s",
            "999999999s",
        ),
        (
            "NETAPI_CHAT_DELIVERY_GIVE_UP_AFTER",
            "1000000000s",
            "999999999s",
        ),
        (
            "NETAPI_CHAT_WEBHOOK_ROTATION_WINDOW",
            "1000000000s",
            "999999999s",
        ),
        ("NETAPI_CHAT_CHANNEL_POLL_WAIT", "1000000000s", ""),
    ];

    #[test]
    fn every_duration_is_less_than_a_billion_seconds() {
        for s in SETTINGS {
            let timed = s.env.ends_with("_SECS") || s.env.ends_with("_MS");
            assert!(
                !timed || A_BILLION_SECONDS.iter().any(|(v, _, _)| *v == s.env),
                "{} is a duration missing from A_BILLION_SECONDS",
                s.env
            );
        }
        for (variable, refused, under) in A_BILLION_SECONDS {
            let e = config(None, &[(variable, refused)])
                .map(|_| "accepted".to_owned())
                .unwrap_or_else(|e| e.to_string());
            assert!(
                e.starts_with(&format!("{variable}={refused:?} is not valid: expected "))
                    && e.contains("1000000000"),
                "{variable}={refused}: {e}"
            );
            if !under.is_empty() {
                config(None, &[(variable, under)])
                    .unwrap_or_else(|e| panic!("{variable}={under} is refused: {e}"));
            }
        }
    }

    /// A switch takes `true`, `false`, `1` or `0` (the file's booleans read as `true` and
    /// `false`; a blank value is not given); anything else is refused naming the setting and
    /// the accepted forms.
    #[test]
    fn switches_take_true_false_1_or_0_and_nothing_else() {
        let loopback = |v: &str| {
            config(None, &[("NETAPI_CHAT_CALLBACK_ALLOW_LOOPBACK", v)])
                .map(|c| c.callbacks.allow_loopback)
                .map_err(|e| e.to_string())
        };
        for (given, on) in [
            ("1", true),
            ("true", true),
            (" 0 ", false),
            ("false", false),
            ("", false),
            (" ", false),
        ] {
            assert_eq!(loopback(given), Ok(on), "{given:?}");
        }
        assert!(!config(None, &[]).unwrap().callbacks.allow_loopback);
        for refused in ["yes", "no", "on", "off"] {
            assert_eq!(
                loopback(refused),
                Err(format!(
                    "NETAPI_CHAT_CALLBACK_ALLOW_LOOPBACK={refused:?} is not valid: expected \
                     true, false, 1 or 0"
                )),
            );
        }
        let f = TempFile::new("callback_allow_loopback = false\ncallback_allow_private = 1\n");
        let c = config(Some(&f.0), &[]).unwrap();
        assert!(!c.callbacks.allow_loopback && c.callbacks.allow_private);
        let f = TempFile::new("callback_allow_private = \"yes\"\n");
        let e = config(Some(&f.0), &[]).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{}: callback_allow_private = \"yes\" is not valid: expected true, false, 1 or 0",
                f.0.display()
            )
        );
    }

    /// The retry schedule and give-up age together: the delay that repeats may be 0 only when
    /// nothing is retried (a give-up age of 0).
    #[test]
    fn a_retry_loop_without_a_pause_is_refused() {
        let retries = |schedule: &str, give_up: Option<&str>| {
            let mut env = vec![("NETAPI_CHAT_RETRY_SCHEDULE", schedule)];
            env.extend(give_up.map(|g| ("NETAPI_CHAT_DELIVERY_GIVE_UP_AFTER", g)));
            config(None, &env).map(|c| c.retry_policy().give_up_after)
        };
        // One try: given up (and the subscription disabled) at the first failure.
        assert_eq!(retries("0", None).unwrap(), Duration::ZERO);
        assert_eq!(retries("0", Some("0")).unwrap(), Duration::ZERO);
        assert_eq!(retries("0,0", Some("0s")).unwrap(), Duration::ZERO);
        // Retried: the last delay repeats, so it must be above 0.
        assert_eq!(retries("0,1h", None).unwrap(), Duration::from_secs(3600));
        assert_eq!(
            retries("0,50ms", Some("1.5s")).unwrap(),
            Duration::from_millis(1500)
        );
        let e = retries("0", Some("1h")).unwrap_err().to_string();
        assert!(
            e.starts_with("NETAPI_CHAT_DELIVERY_GIVE_UP_AFTER=\"1h\" is not valid: expected 0"),
            "{e}"
        );
        let e = retries("0,0", Some("1h")).unwrap_err().to_string();
        assert!(
            e.starts_with("NETAPI_CHAT_RETRY_SCHEDULE=\"0,0\" is not valid: expected"),
            "{e}"
        );
    }

    #[test]
    fn out_of_range_values_are_refused_naming_the_setting() {
        let default = format!("{:?}", Config::default());
        for (variable, refused, boundary) in RANGES {
            for value in *refused {
                let e = config(None, &[(variable, value)])
                    .map(|_| "accepted".to_owned())
                    .unwrap_or_else(|e| e.to_string());
                assert!(
                    e.starts_with(&format!("{variable}={value:?} is not valid: expected ")),
                    "{variable}={value}: {e}"
                );
            }
            let c = config(None, &[(variable, boundary)])
                .unwrap_or_else(|e| panic!("{variable}={boundary} is refused: {e}"));
            assert_ne!(
                format!("{c:?}"),
                default,
                "{variable}={boundary} is not in force"
            );
        }
        // From the file: the file and the key are named.
        let f = TempFile::new("invitation_timeout_secs = -1\n");
        let e = config(Some(&f.0), &[]).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{}: invitation_timeout_secs = \"-1\" is not valid: expected a positive number \
                 of seconds, less than 1000000000",
                f.0.display()
            )
        );
    }

    /// Bound to every address without a public URL, the links would name that address: a
    /// warning says so (and what to set); a specific address or a public URL: none.
    #[test]
    fn every_address_without_a_public_url_is_warned_about() {
        let warnings = |env: &[(&str, &str)]| config(None, env).unwrap().warnings();
        for (bind, link) in [
            ("0.0.0.0:8080", "will name 0.0.0.0 (http://0.0.0.0:8080/…)"),
            ("[::]:9000", "will name :: (http://[::]:9000/…)"),
        ] {
            let w = warnings(&[("NETAPI_CHAT_BIND", bind)]);
            assert_eq!(w.len(), 1, "{bind}: {w:?}");
            assert!(
                w[0].starts_with(&format!("NETAPI_CHAT_BIND is {bind}, every address, and "))
                    && w[0].contains(link)
                    && w[0].contains("set NETAPI_CHAT_PUBLIC_URL to the URL clients reach"),
                "{bind}: {w:?}"
            );
        }
        for quiet in [
            &[("NETAPI_CHAT_BIND", "127.0.0.1:8080")][..],
            &[("NETAPI_CHAT_BIND", "10.0.0.5:8080")],
            &[],
            &[
                ("NETAPI_CHAT_BIND", "0.0.0.0:8080"),
                ("NETAPI_CHAT_PUBLIC_URL", "https://chat.example.com"),
            ],
        ] {
            assert_eq!(warnings(quiet), Vec::<String>::new(), "{quiet:?}");
        }
    }

    /// The public URL is an absolute `http(s)://` base (its trailing `/` dropped, a path
    /// kept); anything links cannot be built on is refused naming the setting.
    #[test]
    fn the_public_url_is_an_http_or_https_base_url() {
        let public = |v: &str| config(None, &[("NETAPI_CHAT_PUBLIC_URL", v)]);
        for (given, in_force) in [
            ("https://chat.example.com", Some("https://chat.example.com")),
            (
                "https://chat.example.com/",
                Some("https://chat.example.com"),
            ),
            (
                " http://10.0.0.5:8080/chat/ ",
                Some("http://10.0.0.5:8080/chat"),
            ),
            ("http://[::1]:8080", Some("http://[::1]:8080")),
            ("http://[::1]", Some("http://[::1]")),
            ("https://h:65535", Some("https://h:65535")),
            ("", None),
            (" ", None),
        ] {
            let c = public(given).unwrap_or_else(|e| panic!("{given:?}: {e}"));
            assert_eq!(c.public_url.as_deref(), in_force, "{given:?}");
        }
        for bad in [
            "notaurl",
            "ftp://x",
            "chat.example.com:443",
            "/v1",
            "http://",
            "https://:8080",
            "http://user:pw@chat.example.com",
            "http://h/?q=1",
            "http://h/#top",
            "http://h:0",
            "http://h:65536",
            "http://h:",
            "http://h h",
        ] {
            let e = public(bad).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!(
                    "NETAPI_CHAT_PUBLIC_URL={:?} is not valid",
                    bad.trim()
                )) && e.contains("an absolute http:// or https:// URL"),
                "{bad}: {e}"
            );
        }
    }

    /// A database URL of another scheme is refused showing its scheme, never the rest (the
    /// password); the file's, naming the file.
    #[test]
    fn a_refused_database_url_shows_its_scheme_only() {
        for (given, shown) in [
            ("mysql://x", "mysql://<redacted>"),
            (
                "mysql://chat:s3cret@db.example.com/chat",
                "mysql://<redacted>",
            ),
            (
                "postgres+tls://chat:s3cret@db/chat",
                "postgres+tls://<redacted>",
            ),
            ("chat:s3cret@db.example.com/chat", "<redacted>"),
            ("postgres:chat:s3cret@db/chat", "<redacted>"),
            ("s3cret@x://db", "<redacted>"),
        ] {
            let e = config(None, &[("NETAPI_CHAT_DATABASE_URL", given)])
                .unwrap_err()
                .to_string();
            assert_eq!(
                e,
                format!(
                    "NETAPI_CHAT_DATABASE_URL={shown:?} is not valid: expected a postgres:// or \
                     postgresql:// URL"
                ),
                "{given}"
            );
        }
        // A postgres:// URL the store could not read is refused here too (the start refused
        // it after `check-config` passed it: an outside review), its secret not shown.
        for given in [
            "postgres://u:s3cret@127.0.0.1:notaport/db",
            "postgres://u:s3cret@db/chat?sslmode=bogus",
        ] {
            let e = config(None, &[("NETAPI_CHAT_DATABASE_URL", given)])
                .unwrap_err()
                .to_string();
            assert!(e.contains("that reads") && !e.contains("s3cret"), "{e}");
        }
        let f = TempFile::new("database_url = \"mysql://chat:s3cret@db/chat\"\n");
        let e = config(Some(&f.0), &[]).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "{}: database_url = \"mysql://<redacted>\" is not valid",
                f.0.display()
            )) && !e.contains("s3cret"),
            "{e}"
        );
        let c = config(None, &[("NETAPI_CHAT_DATABASE_URL", "postgres://u:p@h/db")]).unwrap();
        assert_eq!(c.database_url.as_deref(), Some("postgres://u:p@h/db"));
    }

    /// The OTLP endpoint is a plain `http://` base URL (its trailing `/` dropped: the exporter
    /// appends `/v1/traces`); anything else is refused naming the setting.
    #[test]
    fn the_otlp_endpoint_is_an_http_base_url() {
        let endpoint = |v: &str| config(None, &[("NETAPI_CHAT_OTLP_ENDPOINT", v)]);
        assert_eq!(config(None, &[]).unwrap().otlp_endpoint, None);
        assert_eq!(
            endpoint("http://127.0.0.1:4318/")
                .unwrap()
                .otlp_endpoint
                .as_deref(),
            Some("http://127.0.0.1:4318")
        );
        assert_eq!(endpoint(" ").unwrap().otlp_endpoint, None);
        for bad in [
            "https://collector:4318",
            "collector:4318",
            "http://",
            "http://h/?q=1",
        ] {
            let e = endpoint(bad).unwrap_err().to_string();
            assert!(
                e.starts_with("NETAPI_CHAT_OTLP_ENDPOINT=") && e.contains("an http:// URL"),
                "{bad}: {e}"
            );
        }
    }

    /// What `check-config` prints is a configuration file that reads back as the same
    /// configuration; secrets are redacted.
    #[test]
    fn the_rendered_configuration_reads_back_and_hides_secrets() {
        let env = [
            ("NETAPI_CHAT_MAX_BODY_BYTES", "2000"),
            ("NETAPI_CHAT_RATE_LIMIT", "2.5"),
            ("NETAPI_CHAT_PUBLIC_URL", "https://chat.example.com"),
            ("NETAPI_CHAT_CALLBACK_ALLOW_LOOPBACK", "true"),
        ];
        let s = sources(None, &env).unwrap();
        let text = s.render(&Config::from_sources(&s).unwrap());
        assert!(
            text.contains("max_body_bytes = 2000  # NETAPI_CHAT_MAX_BODY_BYTES"),
            "{text}"
        );
        assert!(
            text.contains("bind = \"127.0.0.1:8080\"  # default"),
            "{text}"
        );
        assert!(text.contains("# webhook_secret: not set"), "{text}");
        let f = TempFile::new(&text);
        let back = config(Some(&f.0), &[]).unwrap();
        assert_eq!(
            format!("{back:?}"),
            format!("{:?}", Config::from_sources(&s).unwrap())
        );
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let s = sources(None, &[("NETAPI_CHAT_WEBHOOK_SECRET", secret)]).unwrap();
        let text = s.render(&Config::from_sources(&s).unwrap());
        assert!(!text.contains("MfKQ9r8"), "{text}");
        assert!(text.contains("webhook_secret = \"<redacted>\""), "{text}");
    }

    /// `check-config` shows which database the start uses, never its password: in the user
    /// part or as a `password` parameter, however its name is spelt; a URL it cannot take
    /// apart as tokio-postgres does is shown as its scheme only (it showed nothing but
    /// `<redacted>`: an outside review).
    #[test]
    fn a_database_url_is_shown_without_its_password() {
        for (given, shown) in [
            ("postgres://db/chat", "postgres://db/chat"),
            (
                "postgres://chat@db:5433/chat",
                "postgres://chat@db:5433/chat",
            ),
            (
                "postgres://chat:s3cret@db:5433/chat?sslmode=require",
                "postgres://chat:<redacted>@db:5433/chat?sslmode=require",
            ),
            (
                "postgresql://chat:s3:cr%40et@h1,h2/chat",
                "postgresql://chat:<redacted>@h1,h2/chat",
            ),
            (
                "postgres:///chat?host=/run/pg&password=s3cret&user=chat",
                "postgres:///chat?host=/run/pg&password=<redacted>&user=chat",
            ),
            (
                "postgres://h/chat?Pass%77ord=s3cret",
                "postgres://h/chat?Pass%77ord=<redacted>",
            ),
            (
                "postgres://chat:s3cret@h?password=x",
                "postgres://chat:<redacted>@h?password=<redacted>",
            ),
            ("postgres://chat:12/s3cret@h/chat", "postgres://<redacted>"),
        ] {
            assert_eq!(password_redacted(given), shown, "{given}");
        }
        let s = sources(
            None,
            &[("NETAPI_CHAT_DATABASE_URL", "postgres://chat:s3cret@db/chat")],
        )
        .unwrap();
        let text = s.render(&Config::from_sources(&s).unwrap());
        assert!(
            text.contains(
                "database_url = \"postgres://chat:<redacted>@db/chat\"  # NETAPI_CHAT_DATABASE_URL"
            ),
            "{text}"
        );
        assert!(!text.contains("s3cret"), "{text}");
        // Empty, it is SQLite's, and shown as the empty value it is (it showed `<redacted>`,
        // as if a URL were set: the docs review).
        let s = sources(None, &[("NETAPI_CHAT_DATABASE_URL", "")]).unwrap();
        let text = s.render(&Config::from_sources(&s).unwrap());
        assert!(
            text.contains("database_url = \"\"  # NETAPI_CHAT_DATABASE_URL"),
            "{text}"
        );
    }

    /// An unset give-up age is shown as the total of the retry schedule in force: it said
    /// "about 27 h", the default schedule's, whatever the schedule.
    #[test]
    fn the_rendered_give_up_age_is_the_schedule_in_force() {
        let rendered = |env: &[(&str, &str)]| {
            let s = sources(None, env).unwrap();
            s.render(&Config::from_sources(&s).unwrap())
        };
        let line = |text: &str| {
            text.lines()
                .find(|l| l.starts_with("# delivery_give_up_after: "))
                .map(str::to_owned)
                .unwrap_or_else(|| panic!("no give-up line in {text}"))
        };
        assert_eq!(
            line(&rendered(&[("NETAPI_CHAT_RETRY_SCHEDULE", "0,5s")])),
            "# delivery_give_up_after: not set (the retry schedule's total: 5s)"
        );
        assert_eq!(
            line(&rendered(&[("NETAPI_CHAT_RETRY_SCHEDULE", "0")])),
            "# delivery_give_up_after: not set (the retry schedule's total: 0s)"
        );
        assert_eq!(
            line(&rendered(&[])),
            "# delivery_give_up_after: not set (the retry schedule's total: 1day 3h 35m 5s)"
        );
        // Given, it is shown as given.
        let text = rendered(&[("NETAPI_CHAT_DELIVERY_GIVE_UP_AFTER", "2h")]);
        assert!(
            text.contains("delivery_give_up_after = \"2h\"  # NETAPI_CHAT_DELIVERY_GIVE_UP_AFTER"),
            "{text}"
        );
    }

    #[test]
    fn help_and_table_list_every_setting() {
        let help = help_text();
        let table = markdown_table();
        for s in SETTINGS {
            assert!(help.contains(s.env) && help.contains(&s.key()), "{}", s.env);
            assert!(table.contains(&format!("| `{}` | `{}` |", s.key(), s.env)));
        }
    }
}
