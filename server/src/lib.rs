//! netapi-chat: an OMA RESTful Network API for Chat server.
//!
//! - [`handlers`]: one handler body per operation (find a flow by its seed section title);
//! - [`chat`]: the chat core, the state machine behind the handlers;
//! - [`notify`]: delivery of notifications to subscribers' callbacks;
//! - [`retention`]: the background purge of messages past `NETAPI_CHAT_RETENTION`;
//! - [`server`]: routing (generated API + published documents) and start-up;
//! - [`health`]: `/healthz` and `/readyz` for load balancers; [`metrics`]: Prometheus `/metrics`;
//! - [`config`], [`address`], [`urls`], [`time`], [`logsafe`]: the small pieces they share.

pub mod address;
pub mod admin;
pub mod admin_api;
pub mod auth;
pub mod callback_guard;
pub mod channel_socket;
pub mod chat;
pub mod config;
pub mod data_dir;
pub mod gate;
pub mod handlers;
pub mod health;
pub mod logsafe;
pub mod metrics;
pub mod notify;
pub mod rate;
pub mod retention;
pub mod server;
pub mod signing;
pub mod store;
pub mod time;
pub mod urls;
