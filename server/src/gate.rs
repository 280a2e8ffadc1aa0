//! The request gate: HTTP method semantics dropshot's router does not give, applied to every
//! request before routing (the vendored dropshot's `ServerBuilder::request_gate`, see
//! `vendor/dropshot/PATCHES.md`).
//!
//! - `HEAD` wherever `GET` is allowed (RFC 9110 §9.3.2 requires it): the request is routed as
//!   the `GET`; hyper knows the connection's request method and sends the `GET`'s status and
//!   headers (`Content-Length` included, as RFC 9110 §8.6 allows) without the body.
//! - Any other method on a known path that the path does not allow (PUT, PATCH, TRACE,
//!   CONNECT, unknown tokens…) gets `405` with the exact `Allow` and an OMA `requestError` in
//!   the negotiated format. This is the only place a 405 comes from: the routes are exactly
//!   the spec's operations (plus the documents and the health endpoints,
//!   [`crate::server::unpublished_get_paths`]), so dropshot's router-level 405 (dropshot
//!   JSON, its `Allow` listing the registered methods) is never reached on a known path.
//!
//! - The GSMA OneAPI gateways' `apiVersion` `0.1` for the OMA 2012 tree: `/chat/0.1/…` is
//!   routed as `/chat/v1/…` ([`alias`]; the query kept). The answers and notifications name the
//!   canonical `/chat/v1/…` (the server has one public URL per resource), which such a client
//!   follows like any link; the published OpenAPI lists `v1` only.
//!
//! - A CORS preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) when
//!   `NETAPI_CHAT_CORS_ORIGINS` is set: answered by [`crate::cors::Cors::preflight`] with the
//!   path's methods (its `Allow`). Any other `OPTIONS` gets the 405, whose `Allow` tells what
//!   an `OPTIONS` answer would.
//!
//! Which path allows which methods is read once, at start, from the published OpenAPI document,
//! so it cannot drift from the routes. The gate knows every route the server registers, so a
//! path it does not know is one dropshot's router would answer with its own JSON 404 (or 400
//! for a path that is not UTF-8): the gate answers it instead as an OMA `requestError`
//! ([`unrouted`]), in the negotiated format.

use dropshot::RequestGate;
use http::{Method, Request, Response};
use netapi_chat_api::RequestError;
use netapi_chat_runtime::error::ApiError;
use netapi_chat_runtime::media;
use netapi_chat_runtime::negotiate::error_response;
use percent_encoding::percent_decode_str;
use std::sync::Arc;

/// The OMA trees the GSMA OneAPI gateways served under `apiVersion` `0.1` (reference:
/// "`apiVersion` is `v1` in OMA text; \[S\]/\[G\] used `0.1`"): the chat API and the notification
/// channel its clients open first, each with the `v1` prefix it is routed as.
const GSMA_PREFIXES: [(&str, &str); 2] = [
    ("/chat/0.1/", "/chat/v1/"),
    ("/notificationchannel/0.1/", "/notificationchannel/v1/"),
];

/// The path a `…/0.1/…` one of the GSMA gateways' trees is routed as (`/chat/v1/…`,
/// `/notificationchannel/v1/…`); `None` for any other path.
pub fn alias(path: &str) -> Option<String> {
    GSMA_PREFIXES
        .iter()
        .find_map(|(gsma, v1)| path.strip_prefix(gsma).map(|rest| format!("{v1}{rest}")))
}

/// Rewrites a request for `/chat/0.1/…` to `/chat/v1/…` ([`alias`]), its query kept; any other
/// request (or one whose rewritten URI would not parse) is left as it is.
fn route_alias<B>(request: &mut Request<B>) {
    let Some(path) = alias(request.uri().path()) else {
        return;
    };
    let target = match request.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let mut parts = request.uri().clone().into_parts();
    let Ok(pq) = target.parse() else { return };
    parts.path_and_query = Some(pq);
    if let Ok(uri) = http::Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
}

/// The format the gate (and a standby, for what it answers itself) answers a request with
/// `headers` in, negotiated like every answer (several `Accept` fields read as one list);
/// an `Accept` nothing fits gets the format a 406 would be in, the body's else JSON (the path or the
/// method is the first problem, so the answer is that error, not a 406).
pub(crate) fn answer_format(headers: &http::HeaderMap) -> media::Format {
    let accept = netapi_chat_runtime::negotiate::accept_of(headers);
    let body = netapi_chat_runtime::negotiate::body_format_of(headers);
    media::response_format(accept.as_deref(), body).unwrap_or_else(|e| e.answer_in)
}

/// The gate's answer to `request` with `error`: the OMA error in the format negotiated from
/// its headers ([`answer_format`]), saying `Connection: close` when the request carries a body
/// ([`body_announced`]): the gate answers before any body is read, and a connection left with
/// a body unread is closed once answered (hyper drains only what it already buffered), so a
/// client or a standby that kept it for its next request would have that request thrown away
/// (the HTTP review of 2026-12-07: a standby's pooled connection then gave other clients'
/// creates `503`), as RFC 9110 §10.1.1 asks a server answering early to say.
fn refusal<B>(request: &Request<B>, error: &ApiError) -> Option<Response<dropshot::Body>> {
    let error = before_the_body(request.headers(), error.clone());
    error_response::<RequestError>(answer_format(request.headers()), &error).ok()
}

/// `error` as answered to a request with `headers` before its body is read (by the gate, or by
/// a standby itself): with `Connection: close` when the request announces a body
/// ([`body_announced`]), as [`refusal`] says why.
pub(crate) fn before_the_body(headers: &http::HeaderMap, error: ApiError) -> ApiError {
    match body_announced(headers) {
        true => error.closing(),
        false => error,
    }
}

/// Whether a request with `headers` carries a body (RFC 9112 §6.3): a `Transfer-Encoding`, or
/// a `Content-Length` other than zero (one that does not read as a number counts: hyper
/// refuses such a request before the gate, and the rule should not depend on that).
fn body_announced(headers: &http::HeaderMap) -> bool {
    headers.contains_key(http::header::TRANSFER_ENCODING)
        || headers
            .get_all(http::header::CONTENT_LENGTH)
            .iter()
            .any(|v| v.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()) != Some(0))
}

/// Longest piece of a path an error repeats.
const QUOTED_PATH: usize = 256;

/// Why `path` matches no route: `400 SVC0002` when no route could ever match it (a segment
/// that is not UTF-8 once percent-decoded, or a dot-segment, which dropshot's router refuses),
/// else `404 SVC2008` naming the path (its first [`QUOTED_PATH`] bytes).
pub fn unrouted(path: &str) -> ApiError {
    let unreadable = path
        .split('/')
        .filter(|s| !s.is_empty())
        .any(|s| s == "." || s == ".." || percent_decode_str(s).decode_utf8().is_err());
    if unreadable {
        return ApiError::invalid_input(
            "the path: a segment is `.` or `..`, or not UTF-8 once percent-decoded",
        );
    }
    let end = path
        .char_indices()
        .map(|(i, c)| i + c.len_utf8())
        .take_while(|end| *end <= QUOTED_PATH)
        .last()
        .unwrap_or(0);
    ApiError::not_found(&path[..end])
}

/// Whether `m` may be a handshake's method (a `HEAD` is refused later, as no handshake).
fn method_is_get_or_head(m: &Method) -> bool {
    m == Method::GET || m == Method::HEAD
}

/// Why a request to a socket path is no WebSocket handshake this server speaks (RFC 6455
/// §4.2.1–4.2.2): without `Upgrade: websocket`, `426` asking for it; with a
/// `Sec-WebSocket-Version` other than 13, `426` naming 13; without one `Sec-WebSocket-Key`
/// of 16 bytes, `400 SVC0002`. `None`: a handshake (the rest is checked by the upgrade).
pub fn socket_refusal(headers: &http::HeaderMap) -> Option<ApiError> {
    let has = |name: http::header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    let (header, value, why) = if !has(http::header::UPGRADE, "websocket") {
        (
            http::header::UPGRADE,
            "websocket",
            "this path takes a WebSocket handshake (Upgrade: websocket)",
        )
    } else if !has(http::header::SEC_WEBSOCKET_VERSION, "13") {
        (
            http::header::SEC_WEBSOCKET_VERSION,
            "13",
            "Sec-WebSocket-Version: this server speaks 13",
        )
    } else if !is_websocket_key(headers) {
        // A handshake, but not one the upgrade can answer: the client's mistake, in OMA's
        // form (the upgrade's own refusal is dropshot's JSON).
        return Some(ApiError::invalid_input(
            "Sec-WebSocket-Key: one field, the base64 of 16 bytes (RFC 6455 section 4.2.1)",
        ));
    } else {
        return None;
    };
    let mut error = ApiError::invalid_input(why).with_status(http::StatusCode::UPGRADE_REQUIRED);
    error
        .headers
        .push((header, http::HeaderValue::from_static(value)));
    Some(error)
}

/// Whether `headers` carry one `Sec-WebSocket-Key` whose value is the base64 of 16 bytes, as
/// a handshake must (RFC 6455 §4.2.1).
fn is_websocket_key(headers: &http::HeaderMap) -> bool {
    use base64::Engine as _;
    let mut keys = headers.get_all(http::header::SEC_WEBSOCKET_KEY).iter();
    match (keys.next(), keys.next()) {
        (Some(key), None) => base64::engine::general_purpose::STANDARD
            .decode(key.as_bytes())
            .is_ok_and(|k| k.len() == 16),
        _ => false,
    }
}

/// One segment of a path template.
#[derive(Clone, Debug, PartialEq)]
enum Segment {
    Literal(String),
    Variable,
}

/// A path template and the methods it allows.
#[derive(Clone, Debug)]
struct Route {
    /// As written (`/v1/chat/{userId}/subscriptions`): the `route` label of request metrics.
    template: String,
    segments: Vec<Segment>,
    methods: Vec<Method>,
    /// The `Allow` value: the methods in a fixed order, with `HEAD` after `GET`.
    allow: String,
}

/// Which methods each known path template allows (and the CORS policy that answers
/// preflights of those paths, when there is one).
#[derive(Clone, Debug, Default)]
pub struct Methods {
    routes: Vec<Route>,
    cors: Option<Arc<crate::cors::Cors>>,
    /// Templates that take only a WebSocket handshake ([`Methods::add_socket`]).
    sockets: Vec<String>,
    /// Most bytes of a request head ([`Methods::with_head_limit`]).
    head_limit: Option<usize>,
}

/// The bytes of a request's head as HTTP/1.1 sends it: request line and header lines, with
/// their separators. The rule of `NETAPI_CHAT_MAX_HEADER_BYTES` (a plain function, tested).
pub fn head_bytes<B>(request: &Request<B>) -> usize {
    let target = request
        .uri()
        .path_and_query()
        .map_or(1, |p| p.as_str().len());
    // "METHOD target HTTP/1.1\r\n" … "\r\n"
    let line = request.method().as_str().len() + 1 + target + 1 + 8 + 2;
    let headers: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + 2 + value.len() + 2)
        .sum();
    line + headers + 2
}

/// The order methods are listed in `Allow`.
const ORDER: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE",
];

impl Methods {
    /// Reads the `paths` of an OpenAPI document (its operations' methods; `HEAD` is added
    /// wherever `GET` is).
    pub fn from_openapi(document: &str) -> Result<Methods, String> {
        let doc: serde_json::Value =
            serde_json::from_str(document).map_err(|e| format!("OpenAPI document: {e}"))?;
        let paths = doc
            .get("paths")
            .and_then(|p| p.as_object())
            .ok_or("OpenAPI document without paths")?;
        let mut methods = Methods::default();
        for (template, item) in paths {
            let verbs = item
                .as_object()
                .map(|o| {
                    o.keys()
                        .filter(|k| ORDER.iter().any(|m| m.eq_ignore_ascii_case(k)))
                        .map(|k| k.to_ascii_uppercase())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            methods.add(
                template,
                &verbs.iter().map(String::as_str).collect::<Vec<_>>(),
            );
        }
        Ok(methods)
    }

    /// Adds a path template (`/a/{b}/c`) allowing `verbs` (plus `HEAD` when `GET` is one).
    pub fn add(&mut self, template: &str, verbs: &[&str]) {
        let segments = template
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| {
                if s.starts_with('{') && s.ends_with('}') {
                    Segment::Variable
                } else {
                    Segment::Literal(s.to_owned())
                }
            })
            .collect();
        let listed: Vec<&str> = ORDER
            .iter()
            .copied()
            .filter(|m| verbs.contains(m) || (*m == "HEAD" && verbs.contains(&"GET")))
            .collect();
        self.routes.push(Route {
            template: template.to_owned(),
            segments,
            methods: listed
                .iter()
                .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
                .collect(),
            allow: listed.join(", "),
        });
    }

    /// The route a request path matches, split and decoded the way dropshot's router does
    /// (empty segments ignored, percent-decoded); `None` for an unknown path, or one dropshot
    /// refuses anyway (dot-segments, bad UTF-8).
    fn lookup(&self, path: &str) -> Option<&Route> {
        let mut segments = Vec::new();
        for s in path.split('/').filter(|s| !s.is_empty()) {
            if s == "." || s == ".." {
                return None;
            }
            segments.push(percent_decode_str(s).decode_utf8().ok()?);
        }
        self.routes.iter().find(|r| {
            r.segments.len() == segments.len()
                && r.segments.iter().zip(&segments).all(|(t, s)| match t {
                    Segment::Literal(l) => l == s,
                    Segment::Variable => true,
                })
        })
    }

    /// Adds a path template that takes only a WebSocket handshake (a `GET`): a request there
    /// that is no handshake the server speaks gets an OMA error here, before dropshot's
    /// upgrade extractor would refuse it in its own JSON ([`socket_refusal`]).
    pub fn add_socket(&mut self, template: &str) {
        self.add(template, &["GET"]);
        self.sockets.push(template.to_owned());
    }

    /// Refuse request heads over `limit` bytes ([`head_bytes`]) with an OMA `431`. hyper's
    /// read buffer (bounded by the same setting) keeps a connection from holding much more
    /// before the head is parsed; this makes the limit exact and the answer an OMA error.
    pub fn with_head_limit(mut self, limit: usize) -> Methods {
        self.head_limit = Some(limit);
        self
    }

    /// Answer CORS preflights with `cors` (see [`crate::cors`]).
    pub fn with_cors(mut self, cors: Arc<crate::cors::Cors>) -> Methods {
        self.cors = Some(cors);
        self
    }

    /// The template of the known path `path` matches (`None` for an unknown one).
    pub fn template(&self, path: &str) -> Option<&str> {
        match alias(path) {
            Some(p) => self.lookup(&p),
            None => self.lookup(path),
        }
        .map(|r| r.template.as_str())
    }

    /// What the gate does with a request: `Some` answer, or `None` to route it (after turning a
    /// `HEAD` into a `GET`, and `/chat/0.1/…` into `/chat/v1/…`).
    pub fn check<B>(&self, request: &mut Request<B>) -> Option<Response<dropshot::Body>> {
        if let Some(limit) = self.head_limit {
            let size = head_bytes(request);
            if size > limit {
                let error = ApiError::header_fields_too_large(size, limit);
                return refusal(request, &error);
            }
        }
        if let Some(codings) = unknown_transfer_coding(request.headers()) {
            return refusal(request, &ApiError::unsupported_transfer_coding(&codings));
        }
        route_alias(request);
        let Some(route) = self.lookup(request.uri().path()) else {
            // The gate knows every route the server registers, so this is dropshot's
            // router-level 404 / 400, answered as the OMA error it is instead.
            let error = unrouted(request.uri().path());
            return refusal(request, &error);
        };
        if let Some(answer) = self.cors.as_ref().and_then(|cors| {
            cors.preflight(request, &route.allow, answer_format(request.headers()))
        }) {
            return Some(answer);
        }
        if method_is_get_or_head(request.method())
            && self.sockets.contains(&route.template)
            && let Some(error) = socket_refusal(request.headers())
        {
            return refusal(request, &error);
        }
        let method = request.method().clone();
        if !route.methods.contains(&method) {
            let error = ApiError::method_not_allowed(method.as_str(), &route.allow);
            return refusal(request, &error);
        }
        if method == Method::HEAD {
            if request.headers().contains_key(http::header::UPGRADE) {
                // Routed as a GET it would switch protocols (a WebSocket handshake is a GET,
                // RFC 6455 §4.1), and a HEAD answer has no connection to hand over.
                let error = ApiError::invalid_input("a HEAD request cannot upgrade the connection");
                return refusal(request, &error);
            }
            *request.method_mut() = Method::GET;
        }
        None
    }

    /// The gate to hand to dropshot: [`host_refused`] first, then [`Methods::check`].
    pub fn into_gate(self) -> RequestGate {
        let methods = Arc::new(self);
        Arc::new(move |request| host_refused(request).or_else(|| methods.check(request)))
    }
}

/// The request's `Transfer-Encoding` (its fields joined) when it names a coding other than
/// `chunked`: hyper reads the chunked framing and hands the rest over undone, so a body sent
/// `gzip, chunked` was read as if it were plain (served, or refused as a document that does
/// not parse); such a request is refused instead ([`ApiError::unsupported_transfer_coding`]).
pub fn unknown_transfer_coding(headers: &http::HeaderMap) -> Option<String> {
    let fields: Vec<String> = headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    let joined = fields.join(", ");
    joined
        .split(',')
        .map(|c| c.split(';').next().unwrap_or("").trim())
        .any(|c| !c.is_empty() && !c.eq_ignore_ascii_case("chunked"))
        .then_some(joined)
}

/// What is wrong with a request's `Host` fields, if anything (RFC 9112 §3.2: a server MUST
/// answer `400` to an HTTP/1.1 request without one, to any request with more than one, and to
/// one whose value is not `host[:port]`, empty allowed). Our links never come from `Host`
/// (they come from `NETAPI_CHAT_PUBLIC_URL`), but a request that proxies in front may read two
/// ways (`Host: a, b` is how some join two fields; `a,b` without the space is a valid name
/// and served) is refused rather than served.
pub fn host_fault(version: http::Version, headers: &http::HeaderMap) -> Option<&'static str> {
    let mut fields = headers.get_all(http::header::HOST).iter();
    match (fields.next(), fields.next()) {
        (None, _) if version == http::Version::HTTP_11 => {
            Some("an HTTP/1.1 request must carry a Host header (RFC 9112 section 3.2)")
        }
        (None, _) => None,
        (Some(_), Some(_)) => {
            Some("a request must carry one Host header, not several (RFC 9112 section 3.2)")
        }
        (Some(value), None) if !is_host(value.as_bytes()) => Some(
            "the Host header must be a host name or address, with an optional port \
             (RFC 9110 section 7.2)",
        ),
        (Some(_), None) => None,
    }
}

/// Whether `value` is a `Host` field value: `uri-host [ ":" port ]`, or empty (RFC 9110 §7.2,
/// RFC 3986 §3.2.2): a bracketed IPv6 address (with a zone id, raw or `%25`-encoded, as some
/// clients send it: RFC 6874 asks servers to take it) or IPvFuture literal, or a name of
/// unreserved, sub-delimiter and well-formed percent-encoded characters; no user information,
/// no spaces, no list with spaces.
fn is_host(value: &[u8]) -> bool {
    let (host_ok, port) = match value.strip_prefix(b"[") {
        Some(rest) => match rest.iter().position(|&c| c == b']') {
            Some(end) => (is_ip_literal(&rest[..end]), &rest[end + 1..]),
            None => return false,
        },
        None => {
            let (host, port) = match value.iter().rposition(|&c| c == b':') {
                Some(colon) => (&value[..colon], &value[colon..]),
                None => (value, &b""[..]),
            };
            (is_reg_name(host), port)
        }
    };
    let port_ok = match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    };
    host_ok && port_ok
}

/// RFC 3986 `reg-name` (an IPv4 address is one too): unreserved and sub-delimiter
/// characters, and `%` followed by two hex digits.
fn is_reg_name(name: &[u8]) -> bool {
    let mut i = 0;
    while let Some(&c) = name.get(i) {
        if c == b'%' {
            match name.get(i + 1..i + 3) {
                Some(hex) if hex.iter().all(u8::is_ascii_hexdigit) => i += 3,
                _ => return false,
            }
        } else if c.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&c) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// What stands between the brackets of an RFC 3986 `IP-literal`: an IPv6 address, with a
/// zone id after `%` (RFC 6874's `%25`, or the raw `%` Node.js and Python's urllib send), or
/// an `IPvFuture` (`v`, hex digits, `.`, then unreserved, sub-delimiters or `:`).
fn is_ip_literal(literal: &[u8]) -> bool {
    if let Some(future) = literal
        .strip_prefix(b"v")
        .or_else(|| literal.strip_prefix(b"V"))
    {
        let Some(dot) = future.iter().position(|&c| c == b'.') else {
            return false;
        };
        let (version, rest) = (&future[..dot], &future[dot + 1..]);
        return !version.is_empty()
            && version.iter().all(u8::is_ascii_hexdigit)
            && !rest.is_empty()
            && rest
                .iter()
                .all(|&c| c.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:".contains(&c));
    }
    let (address, zone) = match literal.iter().position(|&c| c == b'%') {
        Some(p) => (&literal[..p], Some(&literal[p + 1..])),
        None => (literal, None),
    };
    // `1*( unreserved / pct-encoded )`; the `25` of `%25` is two unreserved characters.
    let zone_ok = zone.is_none_or(|z| {
        !z.is_empty() && is_reg_name(z) && z.iter().all(|&c| !b"!$&'()*+,;=".contains(&c))
    });
    std::str::from_utf8(address).is_ok_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok()) && zone_ok
}

/// `400 SVC0002` for a request with a [`host_fault`], with `Connection: close`: what the gate
/// answers ([`host_refused`]) and a standby too (`cluster::forward`, which replaces the
/// client's `Host` when it forwards, so checks it first).
pub fn host_error(version: http::Version, headers: &http::HeaderMap) -> Option<ApiError> {
    host_fault(version, headers).map(|why| ApiError::invalid_input(why).closing())
}

/// The gate's answer to a request with a [`host_fault`].
pub fn host_refused<B>(request: &Request<B>) -> Option<Response<dropshot::Body>> {
    let error = host_error(request.version(), request.headers())?;
    refusal(request, &error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_chunked_is_a_transfer_coding_read() {
        let te = |values: &[&str]| {
            let mut h = http::HeaderMap::new();
            for v in values {
                h.append(
                    http::header::TRANSFER_ENCODING,
                    http::HeaderValue::from_str(v).expect("value"),
                );
            }
            unknown_transfer_coding(&h)
        };
        assert_eq!(te(&[]), None);
        assert_eq!(te(&["chunked"]), None);
        assert_eq!(te(&["Chunked "]), None);
        assert_eq!(te(&["gzip, chunked"]).as_deref(), Some("gzip, chunked"));
        assert_eq!(te(&["gzip", "chunked"]).as_deref(), Some("gzip, chunked"));
        assert_eq!(te(&["x;q=1, chunked"]).as_deref(), Some("x;q=1, chunked"));
    }

    /// A body is announced by `Transfer-Encoding` or a `Content-Length` other than 0; a
    /// refusal of such a request says `Connection: close`, one of a request without a body
    /// keeps the connection.
    #[test]
    fn a_refusal_closes_the_connection_of_a_request_with_a_body() {
        let headers = |pairs: &[(&str, &str)]| {
            let mut h = http::HeaderMap::new();
            for (k, v) in pairs {
                h.append(
                    http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                    http::HeaderValue::from_str(v).expect("value"),
                );
            }
            h
        };
        assert!(!body_announced(&headers(&[])));
        assert!(!body_announced(&headers(&[("content-length", "0")])));
        assert!(body_announced(&headers(&[("content-length", "2")])));
        assert!(body_announced(&headers(&[("content-length", "x")])));
        assert!(body_announced(&headers(&[(
            "transfer-encoding",
            "chunked"
        )])));

        let m = methods();
        let closes = |method: &str, path: &str, pairs: &[(&str, &str)]| {
            let mut r = Request::builder()
                .method(Method::from_bytes(method.as_bytes()).expect("method"))
                .uri(path)
                .body(())
                .expect("request");
            *r.headers_mut() = headers(pairs);
            let answer = m.check(&mut r).expect("refused");
            answer.headers().get(http::header::CONNECTION).cloned()
        };
        let close = Some(http::HeaderValue::from_static("close"));
        let length = [("content-length", "2")];
        assert_eq!(closes("POST", "/nope", &length), close);
        assert_eq!(closes("POST", "/a/../b", &length), close);
        assert_eq!(closes("PUT", "/healthz", &length), close);
        assert_eq!(closes("GET", "/nope", &[]), None);
        assert_eq!(
            closes("DELETE", "/healthz", &[("content-length", "0")]),
            None
        );
    }

    fn methods() -> Methods {
        Methods::from_openapi(netapi_chat_api::OPENAPI_JSON).expect("published OpenAPI")
    }

    fn check(m: &Methods, method: &str, path: &str) -> (Option<u16>, String, Option<String>) {
        let mut r = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).expect("method"))
            .uri(path)
            .body(())
            .expect("request");
        let answer = m.check(&mut r);
        (
            answer.as_ref().map(|a| a.status().as_u16()),
            r.method().to_string(),
            answer.and_then(|a| {
                a.headers()
                    .get(http::header::ALLOW)
                    .and_then(|v| v.to_str().ok().map(str::to_owned))
            }),
        )
    }

    /// One `Host` on every request, and one at all on an HTTP/1.1 request (HTTP/1.0 may omit
    /// it).
    #[test]
    fn a_request_carries_one_host() {
        use http::{HeaderMap, HeaderValue, Version};
        let mut one = HeaderMap::new();
        one.insert(http::header::HOST, HeaderValue::from_static("a"));
        let mut two = one.clone();
        two.append(http::header::HOST, HeaderValue::from_static("b"));
        let none = HeaderMap::new();
        assert_eq!(host_fault(Version::HTTP_11, &one), None);
        assert_eq!(host_fault(Version::HTTP_10, &none), None);
        assert!(host_fault(Version::HTTP_11, &none).is_some());
        assert!(host_fault(Version::HTTP_11, &two).is_some());
        assert!(host_fault(Version::HTTP_10, &two).is_some());
        for good in [
            "",
            "chat.example",
            "chat.example:8080",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:443",
            "a,b",
            "[fe80::1%eth0]:8080",
            "[fe80::1%25eth0]",
            "[v1.fe80::a+en1]",
            "CHAT.Example.",
            "xn--bcher-kva.example",
            "chat.example:",
            "a%20b",
        ] {
            let mut h = HeaderMap::new();
            h.insert(http::header::HOST, HeaderValue::from_static(good));
            assert_eq!(host_fault(Version::HTTP_11, &h), None, "{good:?}");
        }
        for bad in [
            "a, b",
            "user@chat.example",
            "chat.example:80x",
            "chat.example/x",
            "[::1",
            "[::1]x",
            "[]",
            "a b",
            "[::::::::]",
            "[vvv]",
            "[fe80::1%]",
            "a%zz",
            "[127.0.0.1]",
        ] {
            let mut h = HeaderMap::new();
            h.insert(http::header::HOST, HeaderValue::from_static(bad));
            assert!(host_fault(Version::HTTP_11, &h).is_some(), "{bad:?}");
        }
    }

    /// The GSMA gateways' `apiVersion` `0.1` reaches the OMA 2012 tree (the same routes, the
    /// same methods, the query kept); nothing else is rewritten.
    #[test]
    fn the_gsma_api_version_is_routed_as_v1() {
        let m = methods();
        let mut r = Request::builder()
            .method(Method::POST)
            .uri("/chat/0.1/tel%3A%2B1/oneToOne/tel%3A%2B2/adhoc/messages?x=1")
            .body(())
            .expect("request");
        assert!(m.check(&mut r).is_none());
        assert_eq!(
            r.uri().to_string(),
            "/chat/v1/tel%3A%2B1/oneToOne/tel%3A%2B2/adhoc/messages?x=1"
        );
        assert_eq!(
            check(&m, "DELETE", "/chat/0.1/tel%3A%2B1/group").0,
            Some(405)
        );
        assert_eq!(
            m.template("/chat/0.1/tel%3A%2B1/subscriptions"),
            m.template("/chat/v1/tel%3A%2B1/subscriptions")
        );
        assert!(m.template("/chat/v1/tel%3A%2B1/subscriptions").is_some());
        assert_eq!(
            alias("/notificationchannel/0.1/tel%3A%2B1/channels").as_deref(),
            Some("/notificationchannel/v1/tel%3A%2B1/channels")
        );
        for other in [
            "/chat/0.2/u/subscriptions",
            "/v1/chat/0.1/x",
            "/chat/0.1",
            "/notificationchannel/0.1",
        ] {
            assert_eq!(alias(other), None, "{other}");
        }
    }

    #[test]
    fn head_becomes_get_and_wrong_methods_get_405() {
        let m = methods();
        let subs = "/v1/chat/tel%3A%2B1/subscriptions";
        assert_eq!(check(&m, "HEAD", subs), (None, "GET".into(), None));
        assert_eq!(check(&m, "GET", subs), (None, "GET".into(), None));
        assert_eq!(check(&m, "POST", subs), (None, "POST".into(), None));
        for bad in [
            "PUT", "PATCH", "DELETE", "TRACE", "CONNECT", "OPTIONS", "FOO",
        ] {
            assert_eq!(
                check(&m, bad, subs),
                (Some(405), bad.into(), Some("GET, HEAD, POST".into())),
                "{bad}"
            );
        }
        let msg = "/v1/chat/u/chatSessions/s/messages/m";
        assert_eq!(
            check(&m, "POST", msg),
            (Some(405), "POST".into(), Some("GET, HEAD".into()))
        );
        // A path no route matches: the OMA 404, whatever the method; one no route could ever
        // match (a dot-segment, bytes that are not UTF-8): the OMA 400.
        assert_eq!(
            check(&m, "TRACE", "/nowhere"),
            (Some(404), "TRACE".into(), None)
        );
        assert_eq!(
            check(&m, "GET", "/v1/chat/u/nothing"),
            (Some(404), "GET".into(), None)
        );
        for unreadable in ["/v1/chat/u/../subscriptions", "/v1/chat/%FF/chatSessions"] {
            assert_eq!(
                check(&m, "GET", unreadable),
                (Some(400), "GET".into(), None),
                "{unreadable}"
            );
        }
    }

    /// A socket path takes a WebSocket handshake of version 13 only; anything else is a 426
    /// saying what to send.
    #[test]
    fn a_socket_path_takes_only_a_version_13_handshake() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = http::HeaderMap::new();
            for (k, v) in pairs {
                h.append(*k, http::HeaderValue::from_static(v));
            }
            h
        };
        let named = |e: ApiError| {
            assert_eq!(e.status.as_u16(), 426);
            e.headers
                .iter()
                .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("?")))
                .collect::<Vec<_>>()
        };
        let none = socket_refusal(&headers(&[])).expect("no handshake");
        assert_eq!(named(none), ["upgrade: websocket"]);
        let old = socket_refusal(&headers(&[
            ("upgrade", "WebSocket"),
            ("sec-websocket-version", "8"),
        ]))
        .expect("version 8");
        assert_eq!(named(old), ["sec-websocket-version: 13"]);
        assert!(
            socket_refusal(&headers(&[
                ("upgrade", "h2c, websocket"),
                ("sec-websocket-version", "13"),
                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ]))
            .is_none()
        );
        for key in [None, Some("not base64!"), Some("c2hvcnQ=")] {
            let mut h = headers(&[("upgrade", "websocket"), ("sec-websocket-version", "13")]);
            if let Some(k) = key {
                h.append("sec-websocket-key", http::HeaderValue::from_static(k));
            }
            let e = socket_refusal(&h).expect("no key of 16 bytes");
            assert_eq!(e.status.as_u16(), 400, "{key:?}");
        }
    }

    /// What a path without a route is answered with: the OMA error, naming at most the
    /// path's first bytes.
    #[test]
    fn an_unrouted_path_is_an_oma_error() {
        let e = unrouted("/chat/V1/u/foo");
        assert_eq!((e.status.as_u16(), e.message_id), (404, "SVC2008"));
        assert!(e.rendered().contains("/chat/V1/u/foo"), "{}", e.rendered());
        let long = format!("/{}", "a".repeat(5000));
        assert!(unrouted(&long).rendered().len() < 600);
        assert_eq!(unrouted("/x/%C3%28").status.as_u16(), 400);
    }

    /// Every known path answers every method its OpenAPI item does not list (the methods of
    /// HTTP and other tokens) with the gate's OMA 405, `Allow` naming exactly the listed ones
    /// (+ `HEAD`); the listed ones are routed. So dropshot's own 405 is never reached there.
    #[test]
    fn every_method_not_in_the_openapi_gets_the_gates_405() {
        let doc: serde_json::Value =
            serde_json::from_str(netapi_chat_api::OPENAPI_JSON).expect("published OpenAPI");
        let mut items: Vec<(String, Vec<String>)> = doc["paths"]
            .as_object()
            .expect("paths")
            .iter()
            .map(|(template, item)| {
                let verbs = item
                    .as_object()
                    .expect("path item")
                    .keys()
                    .filter(|k| *k != "parameters")
                    .map(|k| k.to_ascii_uppercase())
                    .collect();
                (template.clone(), verbs)
            })
            .collect();
        assert!(items.len() >= 10, "{items:?}");
        let mut m = methods();
        for doc_path in crate::server::unpublished_get_paths() {
            m.add(doc_path, &["GET"]);
            items.push((doc_path.to_owned(), vec!["GET".to_owned()]));
        }
        let tried = [
            "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT", "FOO",
            "get", "M-SEARCH",
        ];
        let mut answered = 0;
        for (template, verbs) in &items {
            let allow = ORDER
                .iter()
                .filter(|o| {
                    verbs.iter().any(|v| v == *o)
                        || (**o == "HEAD" && verbs.iter().any(|v| v == "GET"))
                })
                .copied()
                .collect::<Vec<_>>()
                .join(", ");
            // Filled in plainly, percent-encoded, and with extra slashes (dropshot ignores
            // empty segments).
            let plain = template
                .split('/')
                .map(|s| if s.starts_with('{') { "x" } else { s })
                .collect::<Vec<_>>()
                .join("/");
            let encoded = template
                .split('/')
                .map(|s| if s.starts_with('{') { "tel%3A%2B1" } else { s })
                .collect::<Vec<_>>()
                .join("/");
            let slashes = format!("/{}/", plain.replace('/', "//"));
            for path in [plain, encoded, slashes] {
                for method in tried {
                    let listed = verbs.iter().any(|v| v == method)
                        || (method == "HEAD" && verbs.iter().any(|v| v == "GET"));
                    let got = check(&m, method, &path);
                    if listed {
                        let routed = if method == "HEAD" { "GET" } else { method };
                        assert_eq!(got, (None, routed.into(), None), "{method} {path}");
                    } else {
                        assert_eq!(
                            got,
                            (Some(405), method.into(), Some(allow.clone())),
                            "{method} {path}"
                        );
                        answered += 1;
                    }
                }
            }
        }
        assert!(answered >= 12 * 3 * 8, "only {answered} refusals checked");
    }

    /// The gate's 405 is rendered in the negotiated format (JSON when nothing fits); its body
    /// (an OMA `requestError`) is checked black-box in `tests/hardening_edge.rs`.
    /// The head is counted as HTTP/1.1 writes it; one byte over the limit is refused with
    /// an OMA 431 that closes the connection, one at the limit is routed.
    #[test]
    fn a_request_head_is_counted_as_sent_and_refused_past_its_limit() {
        let request = |pad: &str| {
            Request::builder()
                .method("GET")
                .uri("/v1/chat/tel%3A%2B1/subscriptions?maxEntries=5")
                .header("x-pad", pad)
                .body(())
                .unwrap()
        };
        let sent =
            "GET /v1/chat/tel%3A%2B1/subscriptions?maxEntries=5 HTTP/1.1\r\nx-pad: ab\r\n\r\n";
        assert_eq!(head_bytes(&request("ab")), sent.len());
        let limit = sent.len();
        let m = methods().with_head_limit(limit);
        assert!(
            m.check(&mut request("ab")).is_none(),
            "at the limit: routed"
        );
        let refused = m.check(&mut request("abc")).expect("over the limit");
        assert_eq!(refused.status(), 431);
        assert_eq!(
            refused
                .headers()
                .get(http::header::CONNECTION)
                .map(|v| v.as_bytes()),
            Some(&b"close"[..])
        );
    }

    #[test]
    fn the_405_is_an_oma_request_error_in_the_negotiated_format() {
        let m = methods();
        for (accept, media) in [
            (None, "application/json"),
            (Some("application/json"), "application/json"),
            (Some("application/xml"), "application/xml"),
            (Some("image/png"), "application/json"),
        ] {
            let mut b = Request::builder()
                .method("PUT")
                .uri("/v1/chat/u/chatSessions/s");
            if let Some(a) = accept {
                b = b.header(http::header::ACCEPT, a);
            }
            let mut r = b.body(()).expect("request");
            let answer = m.check(&mut r).expect("answered");
            assert_eq!(answer.status().as_u16(), 405);
            let content_type = answer
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            assert!(
                content_type.starts_with(media),
                "{accept:?}: {content_type}"
            );
        }
    }
}
