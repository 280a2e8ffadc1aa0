//! netapi-chat: an OMA RESTful Network API for Chat server.
//!
//! - [`handlers`]: one handler body per operation (find a flow by its seed section title);
//! - `chat`: the chat core, the state machine behind the handlers; `channel_socket`: the
//!   WebSockets notification channel endpoint (upgrade and frames);
//! - [`notify`]: delivery of notifications to subscribers' callbacks;
//! - `retention`: the background purge of messages past `NETAPI_CHAT_RETENTION`;
//! - [`server`]: routing (generated API + published documents) and start-up; [`logging`]: logs
//!   and request spans (`tracing`, dropshot's slog bridged, OpenTelemetry export);
//! - `health`: `/healthz` and `/readyz` for load balancers; `metrics`: Prometheus `/metrics`;
//! - [`client`]: `netapi-chat client …`, the API from a terminal (generated client + `Urls`);
//! - [`config`], [`address`], `urls`, `time`, [`logsafe`]: the small pieces they share.
//!
//! *API boundary.* The `pub` modules are what something outside this crate uses: the binary
//! (`main.rs`: [`config`], [`server`], [`logging`], [`admin`], [`client`], [`handlers`], [`store`],
//! [`notify`], [`cluster`]), the benches ([`store`]) and the black-box tests ([`address`], [`config`], [`signing`],
//! [`store`]); the rest is `pub(crate)`, so what it exposes can change without reaching them.

pub mod address;
pub mod admin;
pub(crate) mod admin_api;
pub(crate) mod auth;
pub(crate) mod callback_guard;
pub(crate) mod channel_socket;
pub(crate) mod chat;
pub mod client;
pub mod cluster;
pub mod config;
pub(crate) mod cors;
pub(crate) mod data_dir;
pub(crate) mod gate;
pub mod handlers;
pub(crate) mod health;
pub mod logging;
pub(crate) mod logsafe;
pub(crate) mod metrics;
pub mod notify;
pub(crate) mod proxies;
pub(crate) mod rate;
pub(crate) mod reach;
pub(crate) mod retention;
pub mod server;
/// Standard Webhooks signatures: in `netapi-chat-webhooks`, shared with receivers.
pub use netapi_chat_webhooks::signing;
pub mod store;
pub(crate) mod time;
pub(crate) mod tls;
pub(crate) mod urls;
