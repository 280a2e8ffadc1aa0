//! Authentication: who is calling, and for which users the caller may act.
//!
//! Every chat request carries `Authorization: Bearer <token>`. [`authenticate`] takes that
//! header and a [`TokenVerifier`] and returns the [`Principal`] (the users the token may act
//! for), or an [`AuthError`] that becomes `401` with `WWW-Authenticate` (RFC 6750) and an OMA
//! `requestError`. [`resolve_user`] then checks the `{userId}` of the path: the token's own
//! user, or `acr:auth` (OMA's keyword for "the authenticated user"); any other user is a
//! [`UserError::NotPermitted`], `403 POL0001`.
//!
//! Two token sources implement [`TokenVerifier`], chosen by configuration:
//! - [`TokenFile`]: the embedded default, a file of opaque tokens (`TOKEN user1 [user2 …]`),
//!   written with random tokens at first start ([`TokenFile::load_or_generate`]) so that the
//!   first command of the README gives a working server with no identity provider; the
//!   server uses it through [`WatchedTokenFile`], which reloads it when it changes, and
//!   [`token_admin`] holds the edits of `netapi-chat tokens add|list|revoke`;
//! - [`JwtVerifier`]: production, OAuth 2.0 access tokens as JWTs (RS256/ES256) verified
//!   against a JWKS, checking `exp`/`nbf`/`aud`/`iss`, a user claim and a chat scope.

pub mod jwt;
pub mod token_admin;
pub mod token_file;
pub mod watched;

pub use jwt::{JwtConfig, JwtVerifier};
pub use token_file::TokenFile;
pub use watched::WatchedTokenFile;

use crate::address;
use netapi_chat_runtime::ApiError;
use sha2::{Digest, Sha256};
use std::fmt;

/// The realm named in every `WWW-Authenticate` challenge.
pub const REALM: &str = "netapi-chat";

/// OMA's keyword for "the authenticated user", accepted wherever a `{userId}` is expected.
pub const ACR_AUTH: &str = "acr:auth";

/// In a token file, the user that stands for every user: the token of a trusted application
/// (a gateway acting for all its subscribers) may act for any address.
pub const ANY_USER: &str = "*";

/// Longest bearer token accepted (bytes); longer ones are refused before any parsing.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// An authenticated caller: the users its token may act for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// Canonical addresses (see [`address::canonical`]) this token may act for; the first one
    /// is what `acr:auth` stands for.
    pub users: Vec<String>,
    /// Who the token was issued to: the JWT `sub`, or the first user for a token-file token.
    pub subject: String,
    /// A stable, non-secret id of the token (`sha256:` and the first 8 bytes of the SHA-256 of
    /// the token, in hex), for rate limiting and logs; never the token itself. For a JWT, the
    /// id of its subject ([`subject_id`]): every token issued to one subject shares the
    /// per-token limits, since a client can fetch as many as it likes.
    pub token_id: String,
}

impl Principal {
    /// Whether this token may act for `user`: one of its users (compared in canonical form, so
    /// `tel:+1-555-0100` matches `tel:+15550100`), or `acr:auth` when it names any user.
    pub fn may_act_for(&self, user: &str) -> bool {
        if is_acr_auth(user) {
            return !self.users.is_empty();
        }
        let Ok(wanted) = address::canonical(user) else {
            return false;
        };
        if self.users.iter().any(|u| u == ANY_USER) {
            return true;
        }
        self.users
            .iter()
            .any(|u| *u == wanted || address::canonical(u).is_ok_and(|c| c == wanted))
    }

    /// The user `acr:auth` stands for: the token's first user.
    pub fn primary_user(&self) -> Option<&str> {
        self.users
            .iter()
            .map(String::as_str)
            .find(|u| *u != ANY_USER)
    }
}

/// A source of tokens: checks one bearer token and says whom it authenticates.
pub trait TokenVerifier: Send + Sync {
    /// Verifies `bearer` (the token alone, without the `Bearer ` prefix).
    fn verify(&self, bearer: &str) -> Result<Principal, AuthError>;

    /// The [`Principal::token_id`] of `bearer`, which a request of this one has just verified,
    /// without verifying it again (what the notifications a request caused are charged to,
    /// under the chat core's locks): cheap, and never a verification.
    fn token_id_of(&self, bearer: &str) -> String {
        token_id(bearer)
    }
}

/// Why a request is not authenticated. Each becomes `401` (or `403` for a missing scope, as
/// RFC 6750 asks) with a `WWW-Authenticate` challenge; see [`AuthError::to_api_error`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization` header (or an empty one).
    Missing,
    /// An `Authorization` header that is not `Bearer <token>`; the text says what is wrong.
    Malformed(String),
    /// A well-formed bearer token that does not authenticate anyone.
    Invalid(InvalidToken),
}

/// Why a bearer token was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InvalidToken {
    /// `exp` is in the past (beyond the configured leeway).
    Expired,
    /// `nbf` is in the future (beyond the configured leeway).
    NotYetValid,
    /// The signature does not verify with the key the token names.
    BadSignature,
    /// `aud` does not contain the configured audience (carried here, so a client knows what to
    /// ask its authorization server for).
    WrongAudience(String),
    /// `iss` is not the configured issuer (carried here).
    WrongIssuer(String),
    /// A token-file token that is not in the file.
    UnknownToken,
    /// The token lacks the scope this API requires (carried here).
    MissingScope(String),
    /// The token's `kid` (or, without one, its algorithm) matches no configured key.
    UnknownKey,
    /// The token's `alg` is not one this server accepts (RS256, ES256).
    UnsupportedAlgorithm(String),
    /// The token is not a well-formed JWT (three base64url parts, JSON header and claims).
    NotAJwt,
    /// The header lists `crit` extensions, none of which this server implements (RFC 7515).
    UnsupportedCritical,
    /// A claim this server requires is absent.
    MissingClaim(String),
    /// A claim is present but unusable; the text says which and why.
    BadClaim(String),
    /// The token could not be verified for another reason.
    Unverifiable,
}

impl fmt::Display for InvalidToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidToken::Expired => f.write_str("it has expired (exp); obtain a new access token"),
            InvalidToken::NotYetValid => {
                f.write_str("it is not valid yet (nbf is in the future); check the clock")
            }
            InvalidToken::BadSignature => {
                f.write_str("its signature does not verify with the configured keys")
            }
            InvalidToken::WrongAudience(aud) => {
                write!(f, "its audience (aud) does not include {aud}")
            }
            InvalidToken::WrongIssuer(iss) => write!(f, "its issuer (iss) is not {iss}"),
            InvalidToken::UnknownToken => f.write_str("it is not a token this server issued"),
            InvalidToken::MissingScope(scope) => {
                write!(f, "it lacks the scope {scope} that this API requires")
            }
            InvalidToken::UnknownKey => {
                f.write_str("its key id (kid) matches none of the configured signing keys")
            }
            InvalidToken::UnsupportedAlgorithm(alg) => {
                write!(
                    f,
                    "its algorithm {alg} is not accepted (use RS256 or ES256)"
                )
            }
            InvalidToken::NotAJwt => f.write_str("it is not a well-formed JWT"),
            InvalidToken::UnsupportedCritical => f.write_str(
                "its header lists critical extensions (crit) this server does not support",
            ),
            InvalidToken::MissingClaim(claim) => write!(f, "it has no {claim} claim"),
            InvalidToken::BadClaim(why) => f.write_str(why),
            InvalidToken::Unverifiable => f.write_str("it could not be verified"),
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Missing => f.write_str("Authorization: Bearer <token> is required"),
            AuthError::Malformed(why) => {
                write!(f, "the Authorization header is not Bearer <token>: {why}")
            }
            AuthError::Invalid(why) => write!(f, "the access token is not valid: {why}"),
        }
    }
}

impl std::error::Error for AuthError {}

impl AuthError {
    /// The HTTP status: `403` for a token without the required scope (RFC 6750
    /// `insufficient_scope`), `401` for everything else.
    pub fn status(&self) -> http::StatusCode {
        match self {
            AuthError::Invalid(InvalidToken::MissingScope(_)) => http::StatusCode::FORBIDDEN,
            _ => http::StatusCode::UNAUTHORIZED,
        }
    }

    /// The `WWW-Authenticate` value (RFC 6750 §3): `Bearer realm="netapi-chat"` alone when no
    /// credentials were sent; otherwise with `error` (`invalid_request` for a malformed header,
    /// `insufficient_scope` plus `scope` for a missing scope, `invalid_token` for the rest) and
    /// `error_description`, reduced to the characters RFC 6750 allows in a quoted value.
    pub fn www_authenticate(&self) -> String {
        let error = match self {
            AuthError::Missing => return format!("Bearer realm=\"{REALM}\""),
            AuthError::Malformed(_) => "invalid_request",
            AuthError::Invalid(InvalidToken::MissingScope(_)) => "insufficient_scope",
            AuthError::Invalid(_) => "invalid_token",
        };
        let mut value = format!(
            "Bearer realm=\"{REALM}\", error=\"{error}\", error_description=\"{}\"",
            quoted_value(&self.to_string())
        );
        if let AuthError::Invalid(InvalidToken::MissingScope(scope)) = self {
            value.push_str(&format!(", scope=\"{}\"", quoted_value(scope)));
        }
        value
    }

    /// The OMA error to answer with, and the `WWW-Authenticate` header: for a `401` (no, a
    /// malformed or an invalid token) OMA Common's `serviceException` `SVC2003` ("Invalid
    /// access token: %1", `%1` = this error's text), the code an OMA client tells a token to
    /// renew by; for a token without the scope (`403`), the `policyException` `POL0001`.
    pub fn to_api_error(&self) -> ApiError {
        let mut error = match self.status() {
            http::StatusCode::UNAUTHORIZED => ApiError::invalid_access_token(self.to_string()),
            status => ApiError::forbidden(self.to_string()).with_status(status),
        };
        if let Ok(value) = http::HeaderValue::from_str(&self.www_authenticate()) {
            error.headers.push((http::header::WWW_AUTHENTICATE, value));
        }
        error
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        error.to_api_error()
    }
}

/// Why an authenticated caller may not use a `{userId}` of the path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserError {
    /// The token may not act for this user: `403 POL0001` ("policy exception": the user exists
    /// or not, the answer is the same).
    NotPermitted(String),
    /// `acr:auth` was used but the token names no user: `403 POL0001`.
    NoUser,
    /// The path user is not a `tel:`/`sip:` address: `400 SVC0004`.
    InvalidAddress(String),
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserError::NotPermitted(user) => {
                write!(f, "the access token may not act for user {user}")
            }
            UserError::NoUser => f.write_str(
                "the access token names no user (it may act for any), so acr:auth cannot \
                     be resolved: name the user in the path (with `netapi-chat client`, \
                     `--user ADDRESS`)",
            ),
            UserError::InvalidAddress(user) => write!(f, "{user} is not a tel: or sip: address"),
        }
    }
}

impl std::error::Error for UserError {}

impl UserError {
    /// The OMA error: `403 POL0001` for [`NotPermitted`](Self::NotPermitted) and
    /// [`NoUser`](Self::NoUser), `400 SVC0004` for [`InvalidAddress`](Self::InvalidAddress).
    pub fn to_api_error(&self) -> ApiError {
        match self {
            UserError::InvalidAddress(user) => ApiError::invalid_address(user.clone()),
            _ => ApiError::forbidden(self.to_string()),
        }
    }
}

impl From<UserError> for ApiError {
    fn from(error: UserError) -> Self {
        error.to_api_error()
    }
}

/// Authenticates a request from its `Authorization` header (pass `None` when absent; when a
/// request carries several `Authorization` headers, refuse it before calling this).
pub fn authenticate(
    verifier: &dyn TokenVerifier,
    authorization_header: Option<&str>,
) -> Result<Principal, AuthError> {
    verifier.verify(bearer_token(authorization_header)?)
}

/// The token of an `Authorization: Bearer <token>` header: scheme compared without regard to
/// case, token checked against RFC 6750's `b64token` syntax and [`MAX_TOKEN_LEN`]. Other
/// schemes (`Basic`, …) are [`AuthError::Malformed`].
pub fn bearer_token(authorization_header: Option<&str>) -> Result<&str, AuthError> {
    let header = authorization_header.map(str::trim).unwrap_or_default();
    if header.is_empty() {
        return Err(AuthError::Missing);
    }
    let (scheme, rest) = header.split_once([' ', '\t']).unwrap_or((header, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed(
            "only the Bearer scheme is accepted".to_owned(),
        ));
    }
    let token = rest.trim_matches([' ', '\t']);
    if token.is_empty() {
        return Err(AuthError::Malformed("no token after Bearer".to_owned()));
    }
    if token.contains(',') {
        // Several `Authorization` fields reach here joined with commas (`Credentials`), and a
        // token has none: tell the client what it sent, not that its token is malformed.
        return Err(AuthError::Malformed(
            "send one Authorization header with one Bearer token".to_owned(),
        ));
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::Malformed(format!(
            "the token is longer than {MAX_TOKEN_LEN} bytes"
        )));
    }
    if !is_b64token(token) {
        return Err(AuthError::Malformed(
            "the token must be one word of letters, digits and -._~+/ (then = padding)".to_owned(),
        ));
    }
    Ok(token)
}

/// Whether `authorization` still grants acting for `user` (a user the request was already
/// authorized for, `path_user` as the path named it): what a long-lived request checks again
/// while it runs (a WebSocket channel before each frame, a long poll before it takes
/// anything), since a token may be revoked, or a JWT expire, meanwhile.
pub fn still_grants(
    verifier: &dyn TokenVerifier,
    authorization: Option<&str>,
    path_user: &str,
    user: &str,
) -> Result<(), ApiError> {
    let principal = authenticate(verifier, authorization)?;
    if resolve_user(&principal, path_user)? == user {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "the credentials no longer grant this user",
        ))
    }
}

/// Resolves the `{userId}` of a path for `principal`: `acr:auth` becomes the token's first
/// user; an address the token may act for becomes its canonical form (the spelling the chat
/// core stores). Anything else is a [`UserError`].
pub fn resolve_user(principal: &Principal, path_user: &str) -> Result<String, UserError> {
    if is_acr_auth(path_user) {
        return principal
            .primary_user()
            .map(|u| address::canonical(u).unwrap_or_else(|_| u.to_owned()))
            .ok_or(UserError::NoUser);
    }
    let canonical = address::canonical_in_path(path_user)
        .map_err(|_| UserError::InvalidAddress(path_user.to_owned()))?;
    if principal.may_act_for(&canonical) {
        Ok(canonical)
    } else {
        Err(UserError::NotPermitted(path_user.to_owned()))
    }
}

/// Whether `user` is OMA's `acr:auth` (the scheme is case-insensitive, so the whole is).
pub(crate) fn is_acr_auth(user: &str) -> bool {
    user.eq_ignore_ascii_case(ACR_AUTH)
}

/// RFC 6750 §2.1 `b64token`: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
pub(crate) fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

/// SHA-256 of a token.
pub(crate) fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The [`Principal::token_id`] of a token.
pub(crate) fn token_id(token: &str) -> String {
    format!("sha256:{}", short_hex(&digest(token)))
}

/// The first 8 bytes of `digest`, in hex: what a [`Principal::token_id`] shows of a hash.
fn short_hex(digest: &[u8; 32]) -> String {
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The [`Principal::token_id`] of the JWTs issued to `subject` (`sub:` and 8 bytes of a
/// SHA-256, in hex): one bucket for all of them (ops review O6: four tokens of one `sub` had
/// four times the rate and held every waiting place).
pub(crate) fn subject_id(subject: &str) -> String {
    format!(
        "sub:{}",
        short_hex(&digest(&format!("jwt subject\0{subject}")))
    )
}

/// `s` reduced to RFC 6750's quoted-value characters (`%x20-21 / %x23-5B / %x5D-7E`) and at
/// most 200 of them.
fn quoted_value(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '"' => '\'',
            '\\' => '/',
            ' '..='~' => c,
            _ => '?',
        })
        .take(200)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;

    impl TokenVerifier for Fixed {
        fn verify(&self, bearer: &str) -> Result<Principal, AuthError> {
            if bearer == "good-token" {
                Ok(alice_and_bob())
            } else {
                Err(AuthError::Invalid(InvalidToken::UnknownToken))
            }
        }
    }

    fn alice_and_bob() -> Principal {
        Principal {
            users: vec!["tel:+15550100".to_owned(), "sip:bob@example.com".to_owned()],
            subject: "tel:+15550100".to_owned(),
            token_id: token_id("good-token"),
        }
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for header in [
            "Bearer good-token",
            "bearer good-token",
            "BEARER good-token",
            "  Bearer   good-token  ",
            "Bearer\tgood-token",
        ] {
            let p = authenticate(&Fixed, Some(header)).expect(header);
            assert_eq!(p.subject, "tel:+15550100");
        }
    }

    #[test]
    fn missing_header_is_missing() {
        assert_eq!(authenticate(&Fixed, None), Err(AuthError::Missing));
        assert_eq!(authenticate(&Fixed, Some("")), Err(AuthError::Missing));
        assert_eq!(authenticate(&Fixed, Some("   ")), Err(AuthError::Missing));
    }

    #[test]
    fn other_schemes_and_bad_tokens_are_malformed() {
        for header in [
            "Basic dXNlcjpwYXNz",
            "Token good-token",
            "Bearer",
            "Bearer   ",
            "Bearergood-token",
            "Bearer good token",
            "Bearer good\"token",
            "Bearer ====",
            "Bearer tøken",
            "good-token",
        ] {
            assert!(
                matches!(
                    authenticate(&Fixed, Some(header)),
                    Err(AuthError::Malformed(_))
                ),
                "{header}"
            );
        }
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_LEN + 1));
        assert!(matches!(
            authenticate(&Fixed, Some(&long)),
            Err(AuthError::Malformed(_))
        ));
        // Two `Authorization` fields, joined: told as such.
        assert_eq!(
            authenticate(&Fixed, Some("Bearer good-token,Bearer good-token")),
            Err(AuthError::Malformed(
                "send one Authorization header with one Bearer token".to_owned()
            ))
        );
    }

    #[test]
    fn b64token_allows_padding_and_symbols() {
        assert!(is_b64token("abc-._~+/=="));
        assert!(!is_b64token("=abc"));
        assert!(!is_b64token("a=b"));
    }

    #[test]
    fn unknown_token_is_invalid() {
        assert_eq!(
            authenticate(&Fixed, Some("Bearer other-token")),
            Err(AuthError::Invalid(InvalidToken::UnknownToken))
        );
    }

    #[test]
    fn www_authenticate_follows_rfc6750() {
        assert_eq!(
            AuthError::Missing.www_authenticate(),
            "Bearer realm=\"netapi-chat\""
        );
        assert_eq!(
            AuthError::Invalid(InvalidToken::Expired).www_authenticate(),
            "Bearer realm=\"netapi-chat\", error=\"invalid_token\", error_description=\"the \
             access token is not valid: it has expired (exp); obtain a new access token\""
        );
        let malformed = AuthError::Malformed("x".to_owned()).www_authenticate();
        assert!(
            malformed.contains("error=\"invalid_request\""),
            "{malformed}"
        );
        let scope = AuthError::Invalid(InvalidToken::MissingScope("chat".to_owned()));
        assert_eq!(scope.status(), http::StatusCode::FORBIDDEN);
        let value = scope.www_authenticate();
        assert!(value.contains("error=\"insufficient_scope\""), "{value}");
        assert!(value.ends_with(", scope=\"chat\""), "{value}");
    }

    #[test]
    fn www_authenticate_is_a_valid_header_even_for_hostile_text() {
        let e = AuthError::Invalid(InvalidToken::BadClaim(
            "claim \"x\\\" is \u{7}bad\r\nInjected: yes ✓".to_owned(),
        ));
        let value = e.www_authenticate();
        assert!(http::HeaderValue::from_str(&value).is_ok(), "{value}");
        let description = value
            .split_once("error_description=\"")
            .map(|(_, d)| d.trim_end_matches('"'))
            .unwrap_or_default();
        assert!(!description.contains(['"', '\\', '\r', '\n']), "{value}");
    }

    #[test]
    fn auth_errors_become_oma_errors_with_a_challenge() {
        let e: ApiError = AuthError::Missing.into();
        assert_eq!(e.status, http::StatusCode::UNAUTHORIZED);
        assert_eq!(
            (e.kind, e.message_id),
            (
                netapi_chat_runtime::error::ExceptionKind::Service,
                "SVC2003"
            )
        );
        assert_eq!(e.variables, ["Authorization: Bearer <token> is required"]);
        let challenge = e
            .headers
            .iter()
            .find(|(name, _)| name == http::header::WWW_AUTHENTICATE)
            .map(|(_, v)| v.to_str().unwrap_or_default().to_owned());
        assert_eq!(challenge.as_deref(), Some("Bearer realm=\"netapi-chat\""));
        let e: ApiError = AuthError::Invalid(InvalidToken::MissingScope("chat".into())).into();
        assert_eq!(e.status, http::StatusCode::FORBIDDEN);
        assert_eq!(e.message_id, "POL0001");
    }

    #[test]
    fn acr_auth_is_the_first_user() {
        let p = alice_and_bob();
        assert_eq!(resolve_user(&p, "acr:auth").as_deref(), Ok("tel:+15550100"));
        assert_eq!(resolve_user(&p, "ACR:Auth").as_deref(), Ok("tel:+15550100"));
        assert!(p.may_act_for("acr:auth"));
    }

    #[test]
    fn own_users_resolve_to_their_canonical_form() {
        let p = alice_and_bob();
        assert_eq!(
            resolve_user(&p, "tel:+1-555-0100").as_deref(),
            Ok("tel:+15550100")
        );
        assert_eq!(
            resolve_user(&p, "SIP:bob@EXAMPLE.com").as_deref(),
            Ok("sip:bob@example.com")
        );
    }

    #[test]
    fn another_user_is_not_permitted() {
        let p = alice_and_bob();
        let e = resolve_user(&p, "tel:+15550199").unwrap_err();
        assert_eq!(e, UserError::NotPermitted("tel:+15550199".to_owned()));
        let api = e.to_api_error();
        assert_eq!(api.status, http::StatusCode::FORBIDDEN);
        assert_eq!(api.message_id, "POL0001");
        // The user part of a sip: address is case-sensitive.
        assert!(matches!(
            resolve_user(&p, "sip:BOB@example.com"),
            Err(UserError::NotPermitted(_))
        ));
        assert!(!p.may_act_for("tel:+15550199"));
    }

    #[test]
    fn invalid_path_user_is_a_400() {
        let p = alice_and_bob();
        let e = resolve_user(&p, "bob").unwrap_err();
        assert_eq!(e, UserError::InvalidAddress("bob".to_owned()));
        assert_eq!(e.to_api_error().status, http::StatusCode::BAD_REQUEST);
        assert!(!p.may_act_for("bob"));
    }

    #[test]
    fn acr_auth_without_users_is_refused() {
        let p = Principal {
            users: Vec::new(),
            subject: "nobody".to_owned(),
            token_id: token_id("x"),
        };
        assert_eq!(resolve_user(&p, "acr:auth"), Err(UserError::NoUser));
        assert!(!p.may_act_for("acr:auth"));
    }

    #[test]
    fn token_id_is_stable_and_not_the_token() {
        assert_eq!(token_id("abc"), token_id("abc"));
        assert_ne!(token_id("abc"), token_id("abd"));
        assert!(token_id("abc").starts_with("sha256:"));
        assert_eq!(token_id("abc").len(), "sha256:".len() + 16);
        assert!(!token_id("abcdefabcdef").contains("abcdefabcdef"));
    }
}
