//! Requests from web pages of other origins (CORS, the Fetch standard): off unless
//! `NETAPI_CHAT_CORS_ORIGINS` names the origins whose pages may call the API.
//!
//! A browser sends a page's cross-origin request with an `Origin` header and lets the page read
//! the answer only when it carries `Access-Control-Allow-Origin` for that origin; a request it
//! does not consider simple (any with `Authorization`, or a JSON or XML body: all of ours) is
//! preceded by a *preflight*, an `OPTIONS` with `Access-Control-Request-Method`, that must be
//! answered with the methods and headers allowed. With the setting:
//!
//! - the preflight is answered by the request gate ([`Cors::preflight`]): `204`, the path's
//!   methods (exactly its `Allow`), the request headers a client of this API sends
//!   ([`ALLOWED_HEADERS`]) and a cache time ([`MAX_AGE_SECS`]); from an origin not listed,
//!   `403 POL0001` naming the setting; an `OPTIONS` without `Access-Control-Request-Method`
//!   stays the gate's `405`;
//! - every answer to an allowed origin, errors and the gate's own answers included, carries
//!   `Access-Control-Allow-Origin` and `Access-Control-Expose-Headers` (the response headers
//!   of the published OpenAPI, [`exposed_headers`], and `x-request-id`), and `Vary: Origin`
//!   when the answer depends on the origin ([`Cors::finish`], through dropshot's response
//!   hook, `vendor/dropshot/PATCHES.md` item 13).
//!
//! Deliberately absent: `Access-Control-Allow-Credentials`. The API authenticates with bearer
//! tokens a page sends itself, never cookies, so a page gains nothing from the browser's
//! ambient credentials and `*` is safe to offer. The WebSocket of a notification channel is
//! not subject to CORS (browsers do not preflight it); its token travels in the subprotocol
//! list ([`crate::channel_socket`]).

use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use netapi_chat_api::RequestError;
use netapi_chat_runtime::error::ApiError;
use netapi_chat_runtime::media::Format;
use netapi_chat_runtime::negotiate::error_response;
use std::sync::Arc;

/// The request headers a preflight allows: what a client of this API sends beyond the
/// CORS-safelisted ones: its token, the body's media type (`application/json` and
/// `application/xml` are not safelisted), `Accept` (safelisted only for short values), and a
/// request id of its own (the server takes it as the request's id).
pub const ALLOWED_HEADERS: &str = "Authorization, Content-Type, Accept, X-Request-Id";

/// How long a browser may keep a preflight's answer (seconds; Chromium caps it at 7200).
pub const MAX_AGE_SECS: u32 = 600;

/// The origins whose pages may call the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origins {
    /// `*`: any page (the answer does not depend on the origin).
    Any,
    /// These origins exactly, each `scheme://host[:port]` as browsers send it.
    Listed(Vec<String>),
}

/// Reads `NETAPI_CHAT_CORS_ORIGINS`: `*`, or origins separated by commas or spaces
/// (`https://app.example.com, http://localhost:3000`), each an `http` or `https` URL with
/// nothing after the authority but an optional `/`, written as browsers write an `Origin`
/// (host lowercased, default port left out). An empty value is an error: leave the setting
/// unset to turn CORS off.
pub fn parse_origins(value: &str) -> Result<Origins, String> {
    let entries: Vec<&str> = value
        .split([',', ' ', '\t'])
        .filter(|e| !e.is_empty())
        .collect();
    match entries.as_slice() {
        [] => return Err("no origin given (leave it unset to turn CORS off)".to_owned()),
        ["*"] => return Ok(Origins::Any),
        _ => {}
    }
    let mut origins = Vec::with_capacity(entries.len());
    for entry in entries {
        if entry == "*" {
            return Err("`*` stands alone: it allows every origin".to_owned());
        }
        let url = reqwest::Url::parse(entry).map_err(|e| format!("{entry:?}: {e}"))?;
        let plain = matches!(url.scheme(), "http" | "https")
            && url.username().is_empty()
            && url.password().is_none()
            && url.path() == "/"
            && url.query().is_none()
            && url.fragment().is_none()
            && !entry.ends_with('?')
            && !entry.ends_with('#');
        if !plain {
            return Err(format!(
                "{entry:?}: an origin is `http://` or `https://` and a host (and port), nothing more"
            ));
        }
        let origin = url.origin().ascii_serialization();
        if !origins.contains(&origin) {
            origins.push(origin);
        }
    }
    Ok(Origins::Listed(origins))
}

/// The response headers an OpenAPI document declares on any of its operations' answers
/// (`Location`, `Link`, `Retry-After`…), sorted: what a page must be allowed to read.
pub fn exposed_headers(document: &str) -> Result<Vec<String>, String> {
    let doc: serde_json::Value =
        serde_json::from_str(document).map_err(|e| format!("OpenAPI document: {e}"))?;
    let mut names = std::collections::BTreeSet::new();
    let shared = &doc["components"]["responses"];
    let paths = doc["paths"]
        .as_object()
        .ok_or("OpenAPI document without paths")?;
    for item in paths.values().filter_map(|i| i.as_object()) {
        for op in item.values() {
            let Some(responses) = op.get("responses").and_then(|r| r.as_object()) else {
                continue;
            };
            for response in responses.values() {
                let response = match response.get("$ref").and_then(|r| r.as_str()) {
                    Some(r) => r
                        .rsplit('/')
                        .next()
                        .map_or(&serde_json::Value::Null, |name| &shared[name]),
                    None => response,
                };
                if let Some(headers) = response.get("headers").and_then(|h| h.as_object()) {
                    names.extend(headers.keys().cloned());
                }
            }
        }
    }
    Ok(names.into_iter().collect())
}

/// The policy `NETAPI_CHAT_CORS_ORIGINS` asks for (`None`: CORS off), exposing the response
/// headers of the published OpenAPI: what the server and a cluster standby both apply.
pub fn policy(origins: Option<&Origins>) -> Result<Option<Arc<Cors>>, String> {
    let Some(origins) = origins else {
        return Ok(None);
    };
    let exposed = exposed_headers(netapi_chat_api::OPENAPI_JSON)?;
    Ok(Some(Arc::new(Cors::new(origins.clone(), &exposed)?)))
}

/// The CORS policy of a running server.
#[derive(Debug)]
pub struct Cors {
    origins: Origins,
    /// `Access-Control-Expose-Headers`.
    expose: HeaderValue,
}

impl Cors {
    /// The policy for `origins`, exposing `exposed` response headers and `x-request-id`.
    pub fn new(origins: Origins, exposed: &[String]) -> Result<Cors, String> {
        let mut list = exposed.join(", ");
        if !exposed
            .iter()
            .any(|h| h.eq_ignore_ascii_case("x-request-id"))
        {
            list.push_str(if list.is_empty() { "" } else { ", " });
            list.push_str("X-Request-Id");
        }
        let expose = HeaderValue::from_str(&list).map_err(|e| format!("{list:?}: {e}"))?;
        Ok(Cors { origins, expose })
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin`, `None` when that
    /// origin is not allowed.
    pub fn allow_origin(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        match &self.origins {
            Origins::Any => Some(HeaderValue::from_static("*")),
            Origins::Listed(list) => {
                let origin = origin.to_str().ok()?;
                list.iter()
                    .any(|o| o == origin)
                    .then(|| HeaderValue::from_str(origin).ok())
                    .flatten()
            }
        }
    }

    /// Whether answers differ by origin (a list), so caches must key them by `Origin`.
    fn varies(&self) -> bool {
        matches!(self.origins, Origins::Listed(_))
    }

    /// The answer to a preflight (an `OPTIONS` with `Origin` and
    /// `Access-Control-Request-Method`) for a path allowing `allow`; `None` when the request
    /// is not one (then it is an ordinary `OPTIONS`). `format` is the error's format.
    pub fn preflight<B>(
        &self,
        request: &Request<B>,
        allow: &str,
        format: Format,
    ) -> Option<Response<dropshot::Body>> {
        if request.method() != Method::OPTIONS
            || !request
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        {
            return None;
        }
        let origin = request.headers().get(header::ORIGIN)?;
        let Some(allowed) = self.allow_origin(origin) else {
            let shown: String = String::from_utf8_lossy(origin.as_bytes())
                .chars()
                .take(256)
                .collect();
            let error = ApiError::forbidden(format!(
                "the origin {shown:?} is not one NETAPI_CHAT_CORS_ORIGINS allows"
            ));
            return error_response::<RequestError>(format, &error).ok();
        };
        let mut answer = Response::new(dropshot::Body::empty());
        *answer.status_mut() = StatusCode::NO_CONTENT;
        let h = answer.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        if let Ok(methods) = HeaderValue::from_str(allow) {
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, methods);
        }
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOWED_HEADERS),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from(MAX_AGE_SECS),
        );
        add_vary(
            h,
            if self.varies() {
                "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
            } else {
                "Access-Control-Request-Method, Access-Control-Request-Headers"
            },
        );
        Some(answer)
    }

    /// What to add to the answer of `request`: for an allowed `Origin`, the allowed origin and
    /// the readable headers (a request without `Origin`, or from an origin not allowed, gets
    /// neither: the browser then keeps the answer from the page); and with a list, `Vary:
    /// Origin` on every answer, those without the headers included, so that a cache never
    /// hands a page the answer made for another origin or for none (the Fetch standard's
    /// "CORS protocol and HTTP caches"). For dropshot's response hook; `None`: nothing to add.
    pub fn finish(
        &self,
        request_headers: &HeaderMap,
    ) -> Option<impl FnOnce(&mut HeaderMap) + Send + use<>> {
        let allowed = request_headers
            .get(header::ORIGIN)
            .and_then(|o| self.allow_origin(o));
        let varies = self.varies();
        if allowed.is_none() && !varies {
            return None;
        }
        let expose = self.expose.clone();
        Some(move |h: &mut HeaderMap| {
            if let Some(allowed) = allowed {
                h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
                h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose);
            }
            if varies {
                add_vary(h, "Origin");
            }
        })
    }

    /// The hook to hand to dropshot ([`dropshot::ResponseHeaders`]).
    pub fn into_hook(self: Arc<Self>) -> dropshot::ResponseHeaders {
        Arc::new(move |request| {
            self.finish(request.headers())
                .map(|f| Box::new(f) as Box<dyn FnOnce(&mut HeaderMap) + Send>)
        })
    }
}

/// Adds the field names of `names` (comma-separated) to `Vary`, keeping the ones there
/// (`Vary: Accept` from negotiation) and not repeating any.
fn add_vary(h: &mut HeaderMap, names: &str) {
    let mut listed: Vec<String> = h
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .collect();
    for name in names.split(',').map(str::trim) {
        if !listed.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            listed.push(name.to_owned());
        }
    }
    if let Ok(v) = HeaderValue::from_str(&listed.join(", ")) {
        h.insert(header::VARY, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(v: &str) -> Cors {
        let origins = parse_origins(v).expect("origins");
        let exposed = exposed_headers(netapi_chat_api::OPENAPI_JSON).expect("exposed");
        Cors::new(origins, &exposed).expect("policy")
    }

    /// Origins are read as browsers send them; anything that is not one is refused by name.
    #[test]
    fn the_setting_is_origins_or_a_lone_star() {
        assert_eq!(parse_origins(" * "), Ok(Origins::Any));
        assert_eq!(
            parse_origins("https://App.Example.com/, http://localhost:3000 http://x:80").ok(),
            Some(Origins::Listed(vec![
                "https://app.example.com".into(),
                "http://localhost:3000".into(),
                "http://x".into(),
            ]))
        );
        for bad in [
            "",
            " , ",
            "*, https://a.example",
            "https://a.example/app",
            "https://a.example?x",
            "https://user@a.example",
            "ftp://a.example",
            "a.example",
            "null",
        ] {
            assert!(parse_origins(bad).is_err(), "{bad:?}");
        }
    }

    /// What a page may read is every response header the spec declares, plus the request id.
    #[test]
    fn the_exposed_headers_come_from_the_published_openapi() {
        let exposed = exposed_headers(netapi_chat_api::OPENAPI_JSON).expect("exposed");
        for h in [
            "Location",
            "Link",
            "Retry-After",
            "WWW-Authenticate",
            "Webhook-Ids",
        ] {
            assert!(exposed.iter().any(|e| e == h), "{h}: {exposed:?}");
        }
        let cors = listed("*");
        assert!(
            cors.expose
                .to_str()
                .expect("ascii")
                .ends_with("X-Request-Id")
        );
    }

    fn request(method: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder()
            .method(method)
            .uri("/v1/chat/u/subscriptions");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).expect("request")
    }

    fn header(r: &Response<dropshot::Body>, name: header::HeaderName) -> Option<String> {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    /// A preflight from a listed origin gets the path's methods; from another, 403; an
    /// OPTIONS that is no preflight is left to the gate.
    #[test]
    fn a_preflight_is_answered_for_listed_origins_only() {
        let cors = listed("https://app.example.com");
        let ok = cors
            .preflight(
                &request(
                    "OPTIONS",
                    &[
                        ("origin", "https://app.example.com"),
                        ("access-control-request-method", "POST"),
                        (
                            "access-control-request-headers",
                            "authorization, content-type",
                        ),
                    ],
                ),
                "GET, HEAD, POST",
                Format::Json,
            )
            .expect("answered");
        assert_eq!(ok.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            header(&ok, header::ACCESS_CONTROL_ALLOW_ORIGIN).as_deref(),
            Some("https://app.example.com")
        );
        assert_eq!(
            header(&ok, header::ACCESS_CONTROL_ALLOW_METHODS).as_deref(),
            Some("GET, HEAD, POST")
        );
        assert_eq!(
            header(&ok, header::ACCESS_CONTROL_ALLOW_HEADERS).as_deref(),
            Some(ALLOWED_HEADERS)
        );
        assert!(header(&ok, header::VARY).is_some_and(|v| v.starts_with("Origin")));
        let refused = cors
            .preflight(
                &request(
                    "OPTIONS",
                    &[
                        ("origin", "https://evil.example"),
                        ("access-control-request-method", "POST"),
                    ],
                ),
                "GET, HEAD, POST",
                Format::Json,
            )
            .expect("answered");
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert_eq!(header(&refused, header::ACCESS_CONTROL_ALLOW_ORIGIN), None);
        for not_preflight in [
            request("OPTIONS", &[("origin", "https://app.example.com")]),
            request(
                "POST",
                &[
                    ("origin", "https://app.example.com"),
                    ("access-control-request-method", "POST"),
                ],
            ),
            request("OPTIONS", &[("access-control-request-method", "POST")]),
        ] {
            assert!(
                cors.preflight(&not_preflight, "GET", Format::Json)
                    .is_none()
            );
        }
    }

    /// An answer to an allowed origin says so (keeping `Vary: Accept`); others get nothing.
    #[test]
    fn answers_to_allowed_origins_are_readable() {
        let cors = listed("https://app.example.com");
        let mut h = HeaderMap::new();
        h.insert(header::VARY, HeaderValue::from_static("Accept"));
        let from = |o: &str| {
            let mut r = HeaderMap::new();
            r.insert(header::ORIGIN, HeaderValue::from_str(o).expect("value"));
            r
        };
        (cors
            .finish(&from("https://app.example.com"))
            .expect("allowed"))(&mut h);
        assert_eq!(
            h[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example.com"
        );
        assert_eq!(h[header::VARY], "Accept, Origin");
        assert!(
            h[header::ACCESS_CONTROL_EXPOSE_HEADERS]
                .to_str()
                .expect("ascii")
                .contains("Location")
        );
        // Another origin, or none: nothing to read, but the answer still varies by origin.
        for request in [from("https://app.example.com:8443"), HeaderMap::new()] {
            let mut h = HeaderMap::new();
            h.insert(header::VARY, HeaderValue::from_static("Accept"));
            (cors.finish(&request).expect("a list varies"))(&mut h);
            assert!(h.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
            assert!(h.get(header::ACCESS_CONTROL_EXPOSE_HEADERS).is_none());
            assert_eq!(h[header::VARY], "Accept, Origin");
        }
        let any = listed("*");
        let mut h = HeaderMap::new();
        (any.finish(&from("null")).expect("any"))(&mut h);
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(h.get(header::VARY).is_none());
        assert!(any.finish(&HeaderMap::new()).is_none(), "`*` does not vary");
    }
}
