//! The URLs of the resource tree (seed: `/{apiVersion}/chat/{userId}/…`), as a given user sees
//! them. Every `resourceURL`, `Location` and notification `link` is built here.

use crate::address::encode_segment as enc;

/// Builds absolute resource URLs from the server's public base URL.
#[derive(Clone, Debug)]
pub struct Urls {
    base: String,
}

impl Urls {
    /// `base` is e.g. `http://127.0.0.1:8080` (no trailing slash).
    pub fn new(base: impl Into<String>) -> Self {
        Urls {
            base: base.into().trim_end_matches('/').to_owned(),
        }
    }

    /// `{base}/v1/chat/{userId}`.
    pub fn user(&self, user: &str) -> String {
        format!("{}/v1/chat/{}", self.base, enc(user))
    }

    /// The user's subscriptions collection.
    pub fn subscriptions(&self, user: &str) -> String {
        format!("{}/subscriptions", self.user(user))
    }

    /// One subscription.
    pub fn subscription(&self, user: &str, id: &str) -> String {
        format!("{}/{}", self.subscriptions(user), enc(id))
    }

    /// The user's sessions collection.
    pub fn sessions(&self, user: &str) -> String {
        format!("{}/chatSessions", self.user(user))
    }

    /// One session, as `user` reaches it.
    pub fn session(&self, user: &str, session: &str) -> String {
        format!("{}/{}", self.sessions(user), enc(session))
    }

    /// A session's participants collection.
    pub fn participants(&self, user: &str, session: &str) -> String {
        format!("{}/participants", self.session(user, session))
    }

    /// One participant.
    pub fn participant(&self, user: &str, session: &str, participant: &str) -> String {
        format!("{}/{}", self.participants(user, session), enc(participant))
    }

    /// A participant's status (POST here to accept, decline, leave, re-join).
    pub fn participant_status(&self, user: &str, session: &str, participant: &str) -> String {
        format!("{}/status", self.participant(user, session, participant))
    }

    /// A session's messages collection.
    pub fn messages(&self, user: &str, session: &str) -> String {
        format!("{}/messages", self.session(user, session))
    }

    /// One message.
    pub fn message(&self, user: &str, session: &str, message: &str) -> String {
        format!("{}/{}", self.messages(user, session), enc(message))
    }

    /// A message's delivery status (POST here to confirm delivery).
    pub fn message_status(&self, user: &str, session: &str, message: &str) -> String {
        format!("{}/status", self.message(user, session, message))
    }
}
