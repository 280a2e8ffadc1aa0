//! netapi-chat-webhooks: both ends of a chat notification, outside the server.
//!
//! - [`signing`]: Standard Webhooks signatures (`whsec_` secrets, sign and verify). The server
//!   signs with it (`netapi_chat::signing` re-exports it); receivers verify with it.
//! - [`listen`]: the one callback receiver of the project, a real HTTP server that verifies
//!   signatures, decodes each notification by its Content-Type and hands it on. It is
//!   `netapi-chat client listen`, `cargo xtask listen`, the benchmark's listeners and the
//!   black-box tests' listener (issue 18 item 1: one listener, not four copies).
//! - [`pretty`]: documents indented for people (the listener's and the client's output).
//!
//! A crate of its own, not a module of the server package, because `xtask` uses it: `xtask`
//! must build while `spec/` and `generated/` disagree (that is when `cargo xtask codegen` is
//! run), and the server package refuses to build then (its `build.rs`). So this crate depends
//! on nothing generated: only on `netapi-chat-runtime`, which is hand-written.

pub mod listen;
pub mod pretty;
pub mod signing;
