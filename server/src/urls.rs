//! The URLs of the resource tree (seed: `/{apiVersion}/chat/{userId}/…`), as a given user sees
//! them. Every `resourceURL`, `Location` and notification `link` is built by [`Urls`], which is
//! generated from the spec's paths (`generated/api/src/urls.rs`, one method per path template),
//! so a resource's URL is written down only in the spec.

pub use netapi_chat_api::urls::Urls;
