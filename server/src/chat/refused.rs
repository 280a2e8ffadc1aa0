//! Why a rule says no, and the OMA error each reason becomes.
//!
//! The rules (plain functions in each flow's module) answer a [`Refused`]: a reason a unit
//! test can compare, free of HTTP. The flow's entry point turns it into the [`ApiError`] the
//! client sees with [`Refused::into_api`], the one place that holds the core's error texts, so
//! a reason always reads the same whichever flow refused it.

use super::quota;
use netapi_chat_api::{MessageStatus, ParticipantStatus};
use netapi_chat_runtime::ApiError;
use std::time::Duration;

/// Why a request is refused by a rule of the chat core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// The resource does not exist for this user (a stranger, an invitation that timed out or
    /// was cancelled, a message the user neither sent nor received): `404`, the same answer as
    /// for one that never existed. The entry point knows which URL to name.
    NotFound,
    /// A request's `field` contradicts its URL or the face it came to (an OMA 2012
    /// one-to-one create naming someone else than the URL, or carrying the seed's
    /// `participant` list; a seed start naming another originator): `400 SVC0002`; `why`
    /// says what it must be.
    Contradicts { field: &'static str, why: String },
    /// A start or an extension lists `address` twice (`403 POL0013`).
    Duplicate(String),
    /// A create reuses `clientCorrelator` with a different request (`409 SVC0005`).
    DuplicateCorrelator(String),
    /// A start request lists nobody but the originator (`400 SVC0002`).
    NoInvitee,
    /// A session would have more than `limit` participants (`403 POL1017`).
    TooManyParticipants(usize),
    /// A per-user limit (`403 POL2008`): `what` would exceed `limit`.
    TooMany { what: &'static str, limit: usize },
    /// The inviter's invitation quotas (see [`quota`]); `wait` is how long until the rate
    /// allows one more (`429 POL2005` with `Retry-After`).
    Quota(quota::Refusal, Duration),
    /// Only the originator ends a session (`403`).
    NotOriginator,
    /// Only a connected participant invites others (`403`).
    NotConnected,
    /// A sender indicated `isComposing` again within `composing::GAP` (`429 POL2005`).
    ComposingRate,
    /// `address` is already a participant of session `sid` (`409`).
    AlreadyParticipant { address: String, sid: String },
    /// The invitation of `pid` was answered (or ended) already (`409`).
    NotPending { pid: String },
    /// Only `inviter`, who sent it, cancels the invitation of `pid` (`403`).
    NotInviter { inviter: String, pid: String },
    /// `user` tried to set the status of `pid` (`403`).
    NotOwnStatus { user: String, pid: String },
    /// A client asked for `Invited`, which only the server sets (`400`).
    InvitedIsServerSet,
    /// `pid` is already `current` (`409`).
    AlreadyStatus {
        pid: String,
        current: ParticipantStatus,
    },
    /// `pid` declined and tries to join (`409`).
    Declined { pid: String, sid: String },
    /// A message text of `chars` characters, more than `limit` (`400`).
    TextTooLong { chars: usize, limit: usize },
    /// A message text that is empty or only white space (`400`).
    TextBlank,
    /// The server holds `limit` resources of kind `what` in all (`503`, [`super::room_for`]).
    ServerFull { what: &'static str, limit: usize },
    /// The token holds its share of the server-wide cap on `what` (`403 POL2008`,
    /// [`super::within_share`]).
    TokenShare { what: &'static str, share: usize },
    /// The sender has not accepted its invitation yet (`403 POL1012`).
    NotYetAccepted,
    /// The sender `user` left session `sid` (`409`).
    HasLeft { user: String, sid: String },
    /// Nobody else is connected to receive the message while the session is being set up
    /// (`403 POL1012`).
    NobodyJoined,
    /// Every other participant who had joined session `sid` left it, and nobody is still
    /// invited (`409`): no longer the session's setup.
    EveryoneLeft { sid: String },
    /// A client confirmed `Sent` or `Failed`, which only the server sets (`400`).
    ServerSetStatus(MessageStatus),
    /// The sender tried to confirm its own message (`403`).
    Sender,
    /// `user`'s status of message `mid` is already `was` or further along (`409`).
    MessageAlready {
        mid: String,
        user: String,
        was: MessageStatus,
    },
    /// A subscription `duration` below zero (`400`).
    BadDuration(i64),
    /// A notification channel type this server does not serve (`403 POL1023`).
    UnsupportedChannelType(String),
    /// A value of a notification channel outside its range; the text says which (`400`).
    Invalid(String),
    /// A newer poll of the channel took over a waiting one (`409 SVC1012`).
    PollSuperseded,
}

impl Refused {
    /// A create that names a `clientCorrelator` already used (`correlator`, the first
    /// resource's) for another request: `409 SVC0005`, one construction for every create.
    pub fn reused(correlator: Option<&str>) -> Refused {
        Refused::DuplicateCorrelator(correlator.unwrap_or_default().to_owned())
    }

    /// The error the client sees; `not_found` names the resource a [`Refused::NotFound`] is
    /// about (the entry point knows which one it was asked for).
    pub(super) fn into_api(self, not_found: impl FnOnce() -> String) -> ApiError {
        match self {
            Refused::NotFound => ApiError::not_found(not_found()),
            Refused::DuplicateCorrelator(correlator) => ApiError::service(
                http::StatusCode::CONFLICT,
                "SVC0005",
                "Duplicate correlator %1: it was used with a different request",
                correlator,
            ),
            Refused::Duplicate(address) => ApiError::policy(
                "POL0013",
                "Addresses duplication: %1 is listed more than once",
                address,
            ),
            Refused::Contradicts { field, why } => {
                ApiError::invalid_input(format!("{field}: {why}"))
            }
            Refused::NoInvitee => ApiError::invalid_input(
                "participant: list at least one participant other than the originator",
            ),
            Refused::TooManyParticipants(limit) => ApiError::policy(
                "POL1017",
                "Too many participants: at most %1 per session",
                limit.to_string(),
            ),
            Refused::TooMany { what, limit } => too_many(what, limit),
            Refused::Quota(quota::Refusal::Pending { limit }, _) => {
                too_many("unanswered invitations you sent", limit)
            }
            Refused::Quota(quota::Refusal::PendingToOne { limit }, _) => {
                too_many("unanswered invitations you sent to one invitee", limit)
            }
            Refused::Quota(quota::Refusal::Rate { limit }, wait) => invitation_rate(limit, wait),
            Refused::Quota(quota::Refusal::WaitingForOne { limit }, _) => too_many(
                "unanswered invitations waiting for one invitee, from everyone",
                limit,
            ),
            Refused::NotOriginator => ApiError::forbidden(
                "only the originator can end a session; a participant leaves it instead (seed face: status Disconnected on its participant status; OMA 2012 face: DELETE on its own participant)",
            ),
            Refused::ComposingRate => composing_rate(),
            Refused::NotConnected => ApiError::forbidden(
                "only a connected participant can invite others; accept or re-join first",
            ),
            Refused::AlreadyParticipant { address, sid } => ApiError::conflict(format!(
                "{address} is already a participant of session {sid}"
            )),
            Refused::NotPending { pid } => ApiError::conflict(format!(
                "the invitation of {pid} is not pending any more; only an unanswered invitation can be cancelled"
            )),
            Refused::NotInviter { inviter, pid } => ApiError::forbidden(format!(
                "only {inviter}, who invited {pid}, can cancel the invitation"
            )),
            Refused::NotOwnStatus { user, pid } => ApiError::forbidden(format!(
                "{user} can only change its own status, not that of {pid}"
            )),
            Refused::InvitedIsServerSet => ApiError::invalid_input(
                "status: Invited is set by the server; send Connected or Disconnected",
            ),
            Refused::AlreadyStatus { pid, current } => {
                ApiError::conflict(format!("{pid} is already {current}"))
            }
            Refused::Declined { pid, sid } => ApiError::conflict(format!(
                "{pid} declined the invitation to session {sid}; ask to be invited again"
            )),
            Refused::TextTooLong { chars, limit } => ApiError::invalid_input(format!(
                "text: {chars} characters, at most {limit} are allowed"
            )),
            Refused::TokenShare { what, share } => too_many(
                &format!(
                    "{what} made with this token (its share of the server's, \
                     NETAPI_CHAT_TOKEN_SHARE_PERCENT)"
                ),
                share,
            ),
            Refused::ServerFull { what, limit } => super::no_resources(
                &format!(
                    "this server holds as many {what} as it may ({limit}); \
                     try again once some have ended"
                ),
                60,
            ),
            Refused::TextBlank => {
                ApiError::invalid_input("text: empty or only white space; a message needs text")
            }
            Refused::NotYetAccepted => ApiError::policy(
                "POL1012",
                "Messages during session setup are not supported: %1",
                "accept the invitation (status Connected) before sending",
            ),
            Refused::HasLeft { user, sid } => ApiError::conflict(format!(
                "{user} has left session {sid}; re-join (status Connected) to send"
            )),
            Refused::NobodyJoined => ApiError::policy(
                "POL1012",
                "Messages during session setup are not supported: %1",
                "no other participant has joined the session yet",
            ),
            Refused::EveryoneLeft { sid } => ApiError::conflict(format!(
                "every other participant has left session {sid}; a message needs someone connected to receive it"
            )),
            Refused::ServerSetStatus(status) => ApiError::invalid_input(format!(
                "status: {status} is set by the server; confirm Delivered or Displayed"
            )),
            Refused::Sender => ApiError::forbidden(
                "only a recipient can confirm delivery; the sender reads the status with GET",
            ),
            Refused::MessageAlready { mid, user, was } => {
                ApiError::conflict(format!("message {mid} is already {was} for {user}"))
            }
            Refused::BadDuration(duration) => ApiError::invalid_input(format!(
                "duration {duration} must be 0 (no expiry) or a number of seconds"
            )),
            Refused::UnsupportedChannelType(asked) => {
                let mut e = ApiError::policy(
                    "POL1023",
                    "Notification channel type %1 is not supported; supported: %2",
                    asked,
                );
                e.variables.push(
                    super::channels::SUPPORTED
                        .iter()
                        .map(|t| t.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                );
                e
            }
            Refused::Invalid(detail) => ApiError::invalid_input(detail),
            Refused::PollSuperseded => ApiError::service(
                http::StatusCode::CONFLICT,
                "SVC1012",
                "Simultaneous channel requests are not supported: %1",
                "a newer poll of this channel took over",
            ),
        }
    }
}

/// `403 POL2008`: a per-user limit.
pub(super) fn too_many(what: &str, limit: usize) -> ApiError {
    let mut e = ApiError::policy(
        "POL2008",
        "Too many resources requested: %1 (at most %2)",
        what,
    );
    e.variables.push(limit.to_string());
    e
}

/// `429 POL2005` with `Retry-After: 1`: the sender indicated `isComposing` less than
/// `composing::GAP` ago.
fn composing_rate() -> ApiError {
    let mut e = ApiError::policy(
        "POL2005",
        "Maximum number of requests exceeded: %1",
        "one isComposing a second per sender (and the idle that ends it); retry after 1 s",
    );
    crate::metrics::rate_limited("is_composing");
    e.status = http::StatusCode::TOO_MANY_REQUESTS;
    e.headers.push((
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("1"),
    ));
    e
}

/// `429 POL2005` with `Retry-After`: the inviter sent its invitations of the minute.
fn invitation_rate(limit: usize, wait: Duration) -> ApiError {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let secs = secs.max(1);
    let mut e = ApiError::policy(
        "POL2005",
        "Maximum number of requests exceeded: %1 invitations a minute; retry after %2 s",
        limit.to_string(),
    );
    e.variables.push(secs.to_string());
    crate::metrics::rate_limited("invitations");
    e.status = http::StatusCode::TOO_MANY_REQUESTS;
    if let Ok(v) = http::HeaderValue::from_str(&secs.to_string()) {
        e.headers.push((http::header::RETRY_AFTER, v));
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    /// Each reason keeps the status and OMA exception id clients already rely on.
    #[test]
    fn each_reason_becomes_its_oma_error() {
        let rate =
            |ms| Refused::Quota(quota::Refusal::Rate { limit: 5 }, Duration::from_millis(ms));
        let cases = [
            (Refused::NotFound, StatusCode::NOT_FOUND),
            (Refused::Duplicate("tel:+2".into()), StatusCode::FORBIDDEN),
            (Refused::NoInvitee, StatusCode::BAD_REQUEST),
            (Refused::TooManyParticipants(3), StatusCode::FORBIDDEN),
            (Refused::NotOriginator, StatusCode::FORBIDDEN),
            (
                Refused::AlreadyStatus {
                    pid: "tel:+2".into(),
                    current: ParticipantStatus::Connected,
                },
                StatusCode::CONFLICT,
            ),
            (Refused::NotYetAccepted, StatusCode::FORBIDDEN),
            (Refused::NobodyJoined, StatusCode::FORBIDDEN),
            (
                Refused::EveryoneLeft { sid: "s".into() },
                StatusCode::CONFLICT,
            ),
            (rate(0), StatusCode::TOO_MANY_REQUESTS),
        ];
        for (why, status) in cases {
            assert_eq!(
                why.clone().into_api(|| "u".into()).status,
                status,
                "{why:?}"
            );
        }
        assert_eq!(
            Refused::Duplicate("x".into())
                .into_api(String::new)
                .message_id,
            "POL0013"
        );
        assert_eq!(
            Refused::TooManyParticipants(3)
                .into_api(String::new)
                .message_id,
            "POL1017"
        );
        let e = Refused::Quota(quota::Refusal::Pending { limit: 4 }, Duration::ZERO)
            .into_api(String::new);
        assert_eq!(
            (e.message_id, e.variables.as_slice()),
            (
                "POL2008",
                &["unanswered invitations you sent".to_owned(), "4".to_owned()][..]
            )
        );
        let nf = Refused::NotFound.into_api(|| "http://x/sess-1".into());
        assert_eq!(nf.variables, ["http://x/sess-1"]);
    }

    /// `Retry-After` is whole seconds, rounded up, at least 1.
    #[test]
    fn the_invitation_rate_says_when_to_retry() {
        for (ms, secs) in [
            (0, "1"),
            (200, "1"),
            (1_000, "1"),
            (1_200, "2"),
            (59_001, "60"),
        ] {
            let e = Refused::Quota(quota::Refusal::Rate { limit: 5 }, Duration::from_millis(ms))
                .into_api(String::new);
            let retry = e
                .headers
                .iter()
                .find(|(h, _)| h == http::header::RETRY_AFTER)
                .map(|(_, v)| v.to_str().unwrap_or_default().to_owned());
            assert_eq!(retry.as_deref(), Some(secs), "{ms} ms");
            assert_eq!(e.variables, ["5", secs]);
        }
    }
}
