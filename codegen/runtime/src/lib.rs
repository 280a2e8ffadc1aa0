//! The hand-written half of the chat API crate: what the code generated from `spec/` calls.
//!
//! - [`media`]: which wire format a request body is in and which one the client accepts;
//! - [`xml`]: a bounded, DOCTYPE-refusing XML reader and an escaping writer, plus the traits the
//!   generated types implement to speak OMA XML;
//! - [`json`]: lenient readers for the JSON shapes OMA servers and clients use in practice;
//! - [`wire`]: one document type, both formats: encode and decode by [`media::Format`];
//! - [`date_time`]: RFC 3339 date-times, the spec's `format: date-time` fields;
//! - [`error`]: [`ApiError`], the OMA `requestError` every failure becomes;
//! - [`url`]: the percent-encoding of path segments the generated URL builders use;
//! - [`negotiate`]: the dropshot extractors and response type that apply all of the above, so
//!   that a handler sees typed values in and returns typed values out.
//!
//! Nothing here knows the chat API's types: those are generated into `netapi-chat-api`.

pub mod date_time;
pub mod error;
pub mod json;
pub mod media;
pub mod negotiate;
pub mod url;
pub mod wire;
pub mod xml;

pub use error::{ApiError, ExceptionKind};
pub use media::Format;
