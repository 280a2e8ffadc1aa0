//! Test support shared by the black-box suites, written once:
//!
//! - [`server`]: the real binary on a free port with its own data directory; [`Launch`] is
//!   the one place a server is started, and [`Backend`] the one place its store backend is
//!   chosen; [`TempDir`] (from [`temp_data_dir`], [`temp_dir`]) removes a test's directory when
//!   its owner drops it, so no run leaves `netapi-chat-test-*` directories behind;
//! - [`listener`]: real callback listeners with test controls;
//! - [`notification`]: what every notification carries ([`notification::Notified`]);
//! - [`http`]: raw HTTP ([`send`], [`send_doc`], [`send_empty`]) and its [`Answer`], XSD
//!   validation with xmllint;
//! - [`face`]: the two-format client ([`Face`]: JSON through the progenitor client, XML over
//!   raw HTTP; [`Via`]: callbacks or notification channels);
//! - [`channel`]: a notification channel's poll loop or socket relayed into a listener;
//! - [`docs`]: the request documents suites send, and readers of what comes back;
//! - [`chat`]: the set-up steps (subscribe, start and accept a session, send a message);
//! - [`doc_types`]: the one list of the spec's document types;
//! - [`tmpfs`]: a small tmpfs, for a full or read-only disk;
//! - [`wait`]: waiting (bounded) for what the server does in the background.
//!
//! Switches (environment, all optional): `NETAPI_CHAT_TEST_LOGS=1` shows the servers' logs;
//! `NETAPI_CHAT_TEST_BACKEND` picks the store backend every test server runs on (`sqlite`, the
//! default, or `postgres`, the default when `NETAPI_CHAT_TEST_DATABASE_URL` names a test
//! PostgreSQL server, as in `cargo xtask test`'s PostgreSQL pass); `NETAPI_CHAT_TEST_BIN` runs another build of the server
//! (used to write stored-format fixtures).

// Each suite is its own crate and uses a part of this module; the rest is not dead code.
#![allow(dead_code, unused_imports, unused_macros)]

pub mod channel;
pub mod chat;
pub mod doc_types;
pub mod docs;
pub mod face;
pub mod http;
pub mod listener;
pub mod notification;
pub mod server;
pub mod tmpfs;
pub mod wait;

pub use face::{Face, Resp, Via, Wire};
pub use http::{
    Answer, KeptAlive, answers_what_is_queued_at_a_stop, host_name_addresses, metric, post_raw,
    send, send_as_a_proxy, send_authorized, send_doc, send_doc_as, send_empty, xsd_validate,
};
pub use listener::{Listener, Received};
pub use server::{
    APP_TOKEN, Backend, Launch, Ran, Server, Spawned, Stderr, TempDir, USERS_WITH_TOKENS, enc,
    http_client, pg_ctl, postgres_database_for, run_command, run_to_exit, start_under_umask,
    temp_data_dir, temp_dir, token_file, user_token,
};
pub use tmpfs::Tmpfs;
pub use wait::{within, within_20s};
