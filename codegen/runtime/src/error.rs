//! [`ApiError`]: every failure the API reports, as the OMA exception it becomes on the wire.
//!
//! OMA errors carry an exception id (`SVC…` service exceptions, `POL…` policy exceptions), a
//! text with `%1`… placeholders and the variables filling them. The generated `requestError`
//! type renders an [`ApiError`] in JSON or XML (see [`crate::wire::ErrorDocument`]).

use http::StatusCode;
use std::fmt;

/// Whether an exception is a service exception (the request cannot be served as sent) or a
/// policy exception (a rule of the server refuses it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExceptionKind {
    /// `serviceException`, ids `SVCnnnn`.
    Service,
    /// `policyException`, ids `POLnnnn`.
    Policy,
}

/// A failure to report to the client: HTTP status plus the OMA exception.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status of the answer.
    pub status: StatusCode,
    /// Service or policy exception.
    pub kind: ExceptionKind,
    /// OMA exception id, e.g. `SVC0002`.
    pub message_id: &'static str,
    /// Text with `%1`, `%2`… placeholders.
    pub text: String,
    /// Values of the placeholders.
    pub variables: Vec<String>,
    /// Extra response headers (e.g. `Allow` on a 405).
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

/// Longest variable echoed back to a client (a 60 KB bad value must not become a 60 KB error).
const MAX_VARIABLE_CHARS: usize = 300;

/// A variable as it can be echoed: at most [`MAX_VARIABLE_CHARS`], and every character XML
/// cannot carry (a control character quoted from a malformed body, say) written as its
/// escape `\u{e}`, so that the error itself is a valid document in both formats, which a
/// client's decoder (and our own rule for strings, `wire::check_chars`) accepts.
fn clipped(v: String) -> String {
    let v = match v.char_indices().nth(MAX_VARIABLE_CHARS) {
        Some((cut, _)) => format!("{}…", &v[..cut]),
        None => v,
    };
    if v.chars().all(crate::wire::xml_char) {
        return v;
    }
    v.chars()
        .map(|c| {
            if crate::wire::xml_char(c) {
                c.to_string()
            } else {
                c.escape_unicode().to_string()
            }
        })
        .collect()
}

impl ApiError {
    /// A service exception with one `%1` variable.
    pub fn service(
        status: StatusCode,
        message_id: &'static str,
        text: &str,
        variable: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            kind: ExceptionKind::Service,
            message_id,
            text: text.to_owned(),
            variables: vec![clipped(variable.into())],
            headers: Vec::new(),
        }
    }

    /// A policy exception (403) with one `%1` variable.
    pub fn policy(message_id: &'static str, text: &str, variable: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::FORBIDDEN,
            kind: ExceptionKind::Policy,
            message_id,
            text: text.to_owned(),
            variables: vec![clipped(variable.into())],
            headers: Vec::new(),
        }
    }

    /// 400 `SVC0002`: a value in the request is not valid; `detail` says which and why.
    pub fn invalid_input(detail: impl Into<String>) -> Self {
        Self::service(
            StatusCode::BAD_REQUEST,
            "SVC0002",
            "Invalid input value for message part %1",
            detail,
        )
    }

    /// 400 `SVC0004`: an address is not a valid `tel:` or `sip:` URI.
    pub fn invalid_address(address: impl Into<String>) -> Self {
        Self::service(
            StatusCode::BAD_REQUEST,
            "SVC0004",
            "No valid addresses provided in message part %1 (expected a tel:, sip: or acr: URI)",
            address,
        )
    }

    /// 404 `SVC2008` "unknown resource": `what` names the resource as the requesting user
    /// addressed it (no leak of whether it exists for someone else).
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::service(
            StatusCode::NOT_FOUND,
            "SVC2008",
            "Resource %1 does not exist",
            what,
        )
    }

    /// 409 `SVC0001`: the resource's current state does not allow the request.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::service(
            StatusCode::CONFLICT,
            "SVC0001",
            "A service error occurred: %1",
            detail,
        )
    }

    /// 401 `SVC2003` (OMA Common: invalid access token): no, a malformed or an invalid token;
    /// `detail` says which. The caller adds its `WWW-Authenticate` challenge.
    pub fn invalid_access_token(detail: impl Into<String>) -> Self {
        Self::service(
            StatusCode::UNAUTHORIZED,
            "SVC2003",
            "Invalid access token: %1",
            detail,
        )
    }

    /// 403 `POL0001`: a policy refuses the request.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::policy("POL0001", "A policy error occurred: %1", detail)
    }

    /// 406: neither JSON nor XML is acceptable.
    pub fn not_acceptable(detail: impl Into<String>) -> Self {
        Self::service(
            StatusCode::NOT_ACCEPTABLE,
            "SVC0002",
            "Invalid input value for message part %1",
            detail,
        )
    }

    /// 415: the body is neither JSON nor XML.
    pub fn unsupported_media_type(detail: impl Into<String>) -> Self {
        Self::policy("POL0011", "Media type not supported: %1", detail)
            .with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE)
    }

    /// 415 with `Accept-Encoding: identity`: the body has a content coding (e.g. gzip) the
    /// server does not undo; the header says what it takes instead (RFC 9110 §15.5.16).
    pub fn unsupported_content_coding(detail: impl Into<String>) -> Self {
        let mut e = Self::unsupported_media_type(detail);
        e.headers.push((
            http::header::ACCEPT_ENCODING,
            http::HeaderValue::from_static("identity"),
        ));
        e
    }

    /// 501 `SVC0002`: the body has a transfer coding besides `chunked` (`codings`, as sent),
    /// which the server does not undo (RFC 9112 §6.1: a server SHOULD answer `501` to a
    /// transfer coding it does not understand). Closes the connection: the body is not read.
    pub fn unsupported_transfer_coding(codings: &str) -> Self {
        Self::service(
            StatusCode::NOT_IMPLEMENTED,
            "SVC0002",
            "Invalid input value for message part %1",
            format!("Transfer-Encoding `{codings}`: only `chunked` is read"),
        )
        .closing()
    }

    /// 413: the body is larger than the configured cap.
    pub fn payload_too_large(limit: usize) -> Self {
        Self::policy(
            "POL2004",
            "Request body too large: the limit is %1 bytes",
            limit.to_string(),
        )
        .with_status(StatusCode::PAYLOAD_TOO_LARGE)
    }

    /// 431 `SVC0002`: the request head (request line and headers) is `size` bytes, more than
    /// `limit`. Closes the connection, as hyper does for a head too large to buffer.
    pub fn header_fields_too_large(size: usize, limit: usize) -> Self {
        Self::service(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "SVC0002",
            "Invalid input value for message part %1",
            format!("the request line and headers are {size} bytes; the limit is {limit}"),
        )
        .closing()
    }

    /// 408 `SVC0001`: the request body did not arrive within `timeout_ms`. Carries
    /// `Connection: close`: the rest of a slow body is never read, so the connection cannot be
    /// reused and is closed instead of being held open by a client that trickles bytes.
    pub fn request_timeout(timeout_ms: u128) -> Self {
        Self::service(
            StatusCode::REQUEST_TIMEOUT,
            "SVC0001",
            "A service error occurred: %1",
            format!("the request body did not arrive within {timeout_ms} ms"),
        )
        .closing()
    }

    /// The same error, answered with `Connection: close`: for refusals made while (part of) the
    /// request body is still unread, so that the connection is not kept for a next request that
    /// would start in the middle of this one's body.
    pub fn closing(mut self) -> Self {
        if !self
            .headers
            .iter()
            .any(|(k, _)| k == http::header::CONNECTION)
        {
            self.headers.push((
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            ));
        }
        self
    }

    /// 405 with `Allow`: the resource exists but not with this method.
    pub fn method_not_allowed(method: &str, allow: &str) -> Self {
        let mut e = Self::service(
            StatusCode::METHOD_NOT_ALLOWED,
            "SVC0002",
            "Method %1 is not allowed on this resource; allowed: %2",
            method,
        );
        e.variables.push(allow.to_owned());
        if let Ok(v) = http::HeaderValue::from_str(allow) {
            e.headers.push((http::header::ALLOW, v));
        }
        e
    }

    /// 500 `SVC0001` for a fault of the server itself (never for something a client sent).
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::service(
            StatusCode::INTERNAL_SERVER_ERROR,
            "SVC0001",
            "A service error occurred: %1",
            detail,
        )
    }

    /// The same error with another HTTP status.
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// The text with its placeholders filled, for logs and messages.
    pub fn rendered(&self) -> String {
        fill_variables(&self.text, &self.variables)
    }
}

/// An OMA exception text with its `%1`, `%2`, … placeholders replaced by `variables`: how the
/// server renders its own errors and how a client shows a received `requestError`.
pub fn fill_variables(text: &str, variables: &[String]) -> String {
    let mut out = text.to_owned();
    // Highest index first so that `%1` does not eat the start of `%10`.
    for (i, v) in variables.iter().enumerate().rev() {
        out = out.replace(&format!("%{}", i + 1), v);
    }
    out
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.message_id,
            self.rendered()
        )
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    /// A refused content coding is the 415 of a refused media type, saying what the server
    /// takes instead (RFC 9110 §15.5.16).
    #[test]
    fn an_unsupported_coding_names_identity() {
        let e = ApiError::unsupported_content_coding("Content-Encoding `gzip`");
        assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(e.message_id, "POL0011");
        assert_eq!(
            e.headers,
            [(
                http::header::ACCEPT_ENCODING,
                http::HeaderValue::from_static("identity")
            )]
        );
        assert!(ApiError::unsupported_media_type("x").headers.is_empty());
    }

    #[test]
    fn rendered_fills_placeholders_in_order() {
        let e = ApiError::method_not_allowed("PUT", "GET, POST");
        assert_eq!(
            e.rendered(),
            "Method PUT is not allowed on this resource; allowed: GET, POST"
        );
        assert_eq!(e.headers.len(), 1);
    }

    /// A variable quoting a character XML cannot carry shows its escape instead, so the error
    /// is a document both formats can carry; what XML carries is kept as it is.
    #[test]
    fn an_echoed_control_character_is_escaped() {
        let e = ApiError::invalid_input("text `\u{e}` before the root, tab\tand é");
        assert_eq!(e.variables, ["text `\\u{e}` before the root, tab\tand é"]);
        assert!(e.variables[0].chars().all(crate::wire::xml_char));
    }
}
