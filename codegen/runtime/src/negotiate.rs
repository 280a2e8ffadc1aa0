//! The dropshot side of content negotiation: extractors that never fail and a response type
//! that renders success and error alike in the negotiated format.
//!
//! dropshot renders extractor failures and handler errors as its own JSON. OMA wants every
//! error as a `requestError` in the client's format, so the extractors here keep a failure as
//! a value ([`Negotiated`], [`Body`], [`Captured`]) and the generated handler folds it into a
//! [`Reply`] / [`NoContent`], which always goes out through dropshot's success path. The body is
//! the exception: [`Body`] only keeps it, and the handler reads it after authorization.

use crate::error::ApiError;
use crate::media::{self, Format};
use crate::wire::{self, Document, ErrorDocument, RequestBody};
use crate::xml::XmlLimits;
use dropshot::{
    ApiEndpointBodyContentType, ApiEndpointResponse, Body as DropshotBody, ExclusiveExtractor,
    ExtensionMode, ExtractorMetadata, HttpError, HttpResponse, HttpResponseCreated,
    HttpResponseDeleted, HttpResponseOk, RequestContext, ServerContext, SharedExtractor, TypedBody,
};
use http::{HeaderValue, StatusCode, header};
use std::marker::PhantomData;

/// What an `HttpResponse` produces (dropshot does not export its alias).
type HttpHandlerResult = Result<http::Response<DropshotBody>, HttpError>;

/// The response format the client accepts, or why none fits (→ 406, rendered in the request
/// body's format, else JSON).
#[derive(Debug)]
pub struct Negotiated(pub Result<Format, media::NotAcceptable>);

impl Negotiated {
    /// The format to answer in: the accepted one, else the one the 406 itself is written in
    /// ([`media::NotAcceptable::answer_in`]).
    pub fn format(&self) -> Format {
        match &self.0 {
            Ok(format) => *format,
            Err(e) => e.answer_in,
        }
    }

    /// The 406 error if nothing acceptable exists.
    pub fn check(&self) -> Result<(), ApiError> {
        match &self.0 {
            Ok(_) => Ok(()),
            Err(e) => Err(ApiError::not_acceptable(e.to_string())),
        }
    }
}

#[async_trait::async_trait]
impl SharedExtractor for Negotiated {
    async fn from_request<C: ServerContext>(rqctx: &RequestContext<C>) -> Result<Self, HttpError> {
        let headers = rqctx.request.headers();
        Ok(Negotiated(media::response_format(
            accept_of(headers).as_deref(),
            body_format_of(headers),
        )))
    }

    fn metadata(_: ApiEndpointBodyContentType) -> ExtractorMetadata {
        ExtractorMetadata {
            extension_mode: ExtensionMode::None,
            parameters: Vec::new(),
        }
    }
}

/// The request's `Accept` as one list: several fields are joined with `,` (RFC 9110 5.3);
/// `None` without one.
pub fn accept_of(headers: &http::HeaderMap) -> Option<String> {
    joined(headers, header::ACCEPT, ",")
}

/// The request's `Accept` ([`accept_of`]) when it names a `text/` type, else `None`: only
/// then can an answer's label differ from its format's own type ([`label_answer`]), so the
/// response hook reads (and allocates) nothing for the others, nearly every request.
pub fn accept_naming_text(headers: &http::HeaderMap) -> Option<String> {
    let names_text = headers.get_all(header::ACCEPT).iter().any(|v| {
        v.as_bytes()
            .windows(5)
            .any(|w| w.eq_ignore_ascii_case(b"text/"))
    });
    names_text.then(|| accept_of(headers)).flatten()
}

/// The fields `name` of `headers` as one value, joined with `separator`; `None` without one.
fn joined(headers: &http::HeaderMap, name: header::HeaderName, separator: &str) -> Option<String> {
    let values: Vec<String> = headers
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    (!values.is_empty()).then(|| values.join(separator))
}

/// Labels an answer (its headers `answer`) to a request whose `Accept` is `accept` (as
/// [`accept_of`] reads it) with the type [`media::answer_content_type`] picks: an answer in
/// one of the two formats says `text/xml` (`text/json`) when `Accept` weighs that above the
/// format's own type. Other answers are left as they are.
///
/// Exists as one step applied to every answer as it goes out (the server's response hook, a
/// standby's own answers), so that no writer of a body (handlers, the request gate, errors)
/// has to carry the label.
pub fn label_answer(accept: Option<&str>, answer: &mut http::HeaderMap) {
    let format = match answer.get(header::CONTENT_TYPE).map(HeaderValue::as_bytes) {
        Some(t) if t == Format::Json.content_type().as_bytes() => Format::Json,
        Some(t) if t == Format::Xml.content_type().as_bytes() => Format::Xml,
        _ => return,
    };
    let label = media::answer_content_type(accept, format);
    if label != format.content_type() {
        answer.insert(header::CONTENT_TYPE, HeaderValue::from_static(label));
    }
}

/// The format of a request's body as its `Content-Type` names it, if JSON or XML: where
/// `Accept` has no preference, the answer follows it ([`media::response_format`]).
pub fn body_format_of(headers: &http::HeaderMap) -> Option<Format> {
    media::body_format(Some(&content_type_of(headers)?)).ok()
}

/// The request's `Content-Type` as one value: several fields are joined with `, ` (RFC 9110
/// 5.3), which is no media type, so a request naming two is refused (`415`) instead of being
/// read as its first one while a proxy in front checked its last.
fn content_type_of(headers: &http::HeaderMap) -> Option<String> {
    joined(headers, header::CONTENT_TYPE, ", ")
}

/// The request's `Authorization` header as sent (several are joined with `,`, which no bearer
/// token contains, so they are refused as one malformed credential). Checking it is the
/// service's business (`ChatService::authorize`); this extractor never fails.
#[derive(Debug)]
pub struct Credentials(pub Option<String>);

#[async_trait::async_trait]
impl SharedExtractor for Credentials {
    async fn from_request<C: ServerContext>(rqctx: &RequestContext<C>) -> Result<Self, HttpError> {
        let values: Vec<String> = rqctx
            .request
            .headers()
            .get_all(header::AUTHORIZATION)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        Ok(Credentials((!values.is_empty()).then(|| values.join(","))))
    }

    fn metadata(_: ApiEndpointBodyContentType) -> ExtractorMetadata {
        ExtractorMetadata {
            extension_mode: ExtensionMode::None,
            parameters: Vec::new(),
        }
    }
}

tokio::task_local! {
    /// The credentials of the request whose operation runs in this task ([`Credentials::scope`]).
    static REQUEST_CREDENTIALS: Option<String>;
}

impl Credentials {
    /// Runs `operation` (the service's method, after `authorize` accepted these credentials)
    /// with them at hand ([`request_credentials`]): an operation that waits (a long poll, up
    /// to an hour) checks them again before it answers, since a token revoked meanwhile must
    /// not be handed what arrived after its revocation.
    pub async fn scope<F: std::future::Future>(self, operation: F) -> F::Output {
        REQUEST_CREDENTIALS.scope(self.0, operation).await
    }
}

/// The `Authorization` of the request being served by this task, inside
/// [`Credentials::scope`] (every operation of the generated API runs there); `None` outside
/// it or when the request had none.
pub fn request_credentials() -> Option<String> {
    REQUEST_CREDENTIALS.try_with(Clone::clone).ok().flatten()
}

/// A request body in JSON or XML, not read yet: the generated handler calls
/// [`Body::read`] only after the request is authenticated, so that an unauthenticated client
/// cannot make the server wait for, buffer or parse a body. Reading it refuses a
/// Content-Encoding other than identity (415 with `Accept-Encoding: identity`), a wrong
/// Content-Type (415), an announced or actual size over the limit (413, before reading for an
/// announced one), a body that does not arrive within the body timeout (408) and a malformed
/// document (400), each as an OMA error.
#[derive(Debug)]
pub struct Body<T> {
    content_type: Option<String>,
    /// `Content-Encoding` as sent (several joined with `,`, as one list; `None`: absent).
    content_encoding: Option<String>,
    /// `Content-Length` as sent (`None`: absent, e.g. chunked).
    content_length: Option<String>,
    /// Whether the request says a body follows (a non-zero length, or chunked).
    announced: bool,
    /// The body, until [`Body::read`] takes it.
    body: Option<DropshotBody>,
    /// The body size limit in bytes (dropshot's `request_body_max_bytes`).
    cap: usize,
    _doc: PhantomData<fn() -> T>,
}

#[async_trait::async_trait]
impl<T: RequestBody> ExclusiveExtractor for Body<T> {
    async fn from_request<C: ServerContext>(
        rqctx: &RequestContext<C>,
        request: http::Request<DropshotBody>,
    ) -> Result<Self, HttpError> {
        let header = |name| {
            request
                .headers()
                .get(name)
                .map(|v: &HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        let content_type = content_type_of(request.headers());
        let content_length = header(header::CONTENT_LENGTH);
        let codings: Vec<String> = request
            .headers()
            .get_all(header::CONTENT_ENCODING)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        let content_encoding = (!codings.is_empty()).then(|| codings.join(","));
        // A length of zero however written (`0`, `00`) announces nothing.
        let announced = request.headers().contains_key(header::TRANSFER_ENCODING)
            || content_length
                .as_deref()
                .is_some_and(|l| l.trim().parse::<u64>().map_or(true, |n| n > 0));
        Ok(Body {
            content_type,
            content_encoding,
            content_length,
            announced,
            body: Some(request.into_body()),
            cap: rqctx.request_body_max_bytes(),
            _doc: PhantomData,
        })
    }

    fn metadata(content_type: ApiEndpointBodyContentType) -> ExtractorMetadata {
        <TypedBody<T::Json> as ExclusiveExtractor>::metadata(content_type)
    }
}

impl<T: RequestBody> Body<T> {
    /// Reads and decodes the body, within the process's body timeout ([`set_body_timeout`]).
    pub async fn read(&mut self) -> Result<T, ApiError> {
        // No body at all (nothing announced, no Content-Type): what is missing is the document,
        // not a media type.
        if !self.announced && self.content_type.is_none() {
            return Err(ApiError::invalid_input(
                "a request body is required (application/json or application/xml)",
            ));
        }
        self.coding()?;
        let format = self.format()?;
        if let Some(length) = &self.content_length {
            // hyper has already refused a Content-Length that is not a number.
            let announced = length.trim().parse::<u64>().unwrap_or(u64::MAX);
            if announced > u64::try_from(self.cap).unwrap_or(u64::MAX) {
                return Err(ApiError::payload_too_large(self.cap));
            }
        }
        let bytes = self.bytes().await?;
        if bytes.is_empty() && self.content_length.is_none() {
            return Err(ApiError::invalid_input("the request body is empty"));
        }
        self.decode(format, &bytes)
    }

    /// The body of an operation whose body may be left out: `None` when the request sends
    /// none (no length or a zero one, or an empty chunked body), whatever its `Content-Type`
    /// and `Content-Encoding` (the media type and coding of nothing do not matter); otherwise
    /// as [`Body::read`].
    pub async fn read_optional(&mut self) -> Result<Option<T>, ApiError> {
        if !self.announced {
            self.body = None;
            return Ok(None);
        }
        if self.content_length.is_some() {
            return self.read().await.map(Some);
        }
        // Chunked: it may turn out empty, so it is read before its coding and media type are
        // looked at.
        let bytes = self.bytes().await?;
        if bytes.is_empty() {
            return Ok(None);
        }
        self.coding()?;
        let format = self.format()?;
        self.decode(format, &bytes).map(Some)
    }

    /// Whether the body is sent as it is (`415` with `Accept-Encoding: identity` for any
    /// content coding): checked before its media type, since a coded body's bytes are not
    /// yet in any media type at all.
    fn coding(&self) -> Result<(), ApiError> {
        media::body_coding(self.content_encoding.as_deref())
            .map_err(|e| ApiError::unsupported_content_coding(e.to_string()))
    }

    /// The body's format, from its `Content-Type` (`415` for any other).
    fn format(&self) -> Result<Format, ApiError> {
        media::body_format(self.content_type.as_deref())
            .map_err(|e| ApiError::unsupported_media_type(e.to_string()))
    }

    /// The body's bytes, within the body timeout and the size cap; taken once.
    async fn bytes(&mut self) -> Result<Vec<u8>, ApiError> {
        let body = self
            .body
            .take()
            .ok_or_else(|| ApiError::internal("the request body was read twice"))?;
        let timeout = body_timeout();
        tokio::time::timeout(timeout, collect(body, self.cap))
            .await
            .map_err(|_| ApiError::request_timeout(timeout.as_millis()))?
    }

    /// The bytes decoded as `format`, in the charset the `Content-Type` names.
    fn decode(&self, format: Format, bytes: &[u8]) -> Result<T, ApiError> {
        let charset = media::body_charset(self.content_type.as_deref());
        T::decode(format, charset, bytes, &xml_limits())
    }

    /// `outcome`, except that an error answered while the body is still unread (refused
    /// before [`Body::read`], e.g. by authorization, or by `read` itself before or while
    /// reading) closes the connection: it is not drained for a client that was refused.
    pub fn finish<X>(&self, outcome: Result<X, ApiError>) -> Result<X, ApiError> {
        match outcome {
            Err(e) if self.announced && self.body.is_some() => Err(e.closing()),
            other => other,
        }
    }
}

/// The body's bytes, refusing (413, connection closed) as soon as they pass `cap` instead of
/// reading the rest.
async fn collect(mut body: DropshotBody, cap: usize) -> Result<Vec<u8>, ApiError> {
    use http_body_util::BodyExt;
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::invalid_input(format!("error reading the request body: {e}")).closing()
        })?;
        if let Ok(data) = frame.into_data() {
            if out.len().saturating_add(data.len()) > cap {
                return Err(ApiError::payload_too_large(cap).closing());
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

/// Process-wide XML limits, set once at server start ([`set_xml_limits`]).
static LIMITS: std::sync::OnceLock<XmlLimits> = std::sync::OnceLock::new();

/// Sets the XML limits for this process (the first call wins; defaults apply until then).
pub fn set_xml_limits(limits: XmlLimits) {
    let _ = LIMITS.set(limits);
}

fn xml_limits() -> XmlLimits {
    LIMITS.get().cloned().unwrap_or_default()
}

/// How long a request body may take to arrive, set once at server start
/// ([`set_body_timeout`]); a client that trickles a body would otherwise hold a connection
/// (and its buffer) open indefinitely.
static BODY_TIMEOUT: std::sync::OnceLock<std::time::Duration> = std::sync::OnceLock::new();

/// The default body timeout: 10 s.
pub const DEFAULT_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Sets the body timeout for this process (the first call wins; 10 s until then).
pub fn set_body_timeout(timeout: std::time::Duration) {
    let _ = BODY_TIMEOUT.set(timeout);
}

fn body_timeout() -> std::time::Duration {
    BODY_TIMEOUT.get().copied().unwrap_or(DEFAULT_BODY_TIMEOUT)
}

/// A shared extractor whose failure (e.g. a path parameter that does not parse) is kept as an
/// OMA error instead of becoming dropshot's JSON error.
#[derive(Debug)]
pub struct Captured<E>(pub Result<E, ApiError>);

#[async_trait::async_trait]
impl<E: SharedExtractor + 'static> SharedExtractor for Captured<E> {
    async fn from_request<C: ServerContext>(rqctx: &RequestContext<C>) -> Result<Self, HttpError> {
        Ok(Captured(
            E::from_request(rqctx)
                .await
                .map_err(|e| ApiError::invalid_input(e.external_message)),
        ))
    }

    fn metadata(content_type: ApiEndpointBodyContentType) -> ExtractorMetadata {
        E::metadata(content_type)
    }
}

/// A created resource: its URL (sent as `Location`) and its representation.
#[derive(Debug, Clone)]
pub struct Created<T> {
    /// Absolute URL of the new resource.
    pub location: String,
    /// The body of the 201 answer.
    pub body: T,
}

/// A body and the response headers the spec declares for it (e.g. `Link`), as the generated
/// `…Headers` struct `H` of the operation: the service says what the headers mean, the glue
/// writes them.
#[derive(Debug, Clone)]
pub struct Headed<T, H> {
    /// The body of the answer.
    pub body: T,
    /// The operation's declared response headers.
    pub headers: H,
}

/// The response headers of one operation, generated from the spec: each present one as
/// (name, value).
pub trait ResponseHeaders {
    /// The headers to send; a value that is not a valid header value is left out.
    fn pairs(&self) -> Vec<(&'static str, String)>;
}

/// A response with a body: `T` with status `STATUS` (200 or 201), or an `E` error document,
/// in the negotiated format.
pub struct Reply<T, E, const STATUS: u16> {
    format: Format,
    outcome: Result<(T, Option<String>), ApiError>,
    /// Declared response headers to add to a success.
    headers: Vec<(http::HeaderName, HeaderValue)>,
    _error: PhantomData<fn() -> E>,
}

impl<T: Document, E: ErrorDocument, const STATUS: u16> Reply<T, E, STATUS> {
    /// A 200 answer (or the error).
    pub fn ok(accept: &Negotiated, outcome: Result<T, ApiError>) -> Self {
        Self::build(accept, outcome.map(|t| (t, None)))
    }

    /// A 201 answer with `Location` (or the error).
    pub fn created(accept: &Negotiated, outcome: Result<Created<T>, ApiError>) -> Self {
        Self::build(accept, outcome.map(|c| (c.body, Some(c.location))))
    }

    /// A 200 answer with the operation's declared headers (or the error).
    pub fn headed<H: ResponseHeaders>(
        accept: &Negotiated,
        outcome: Result<Headed<T, H>, ApiError>,
    ) -> Self {
        let headers = match &outcome {
            Ok(h) => h
                .headers
                .pairs()
                .into_iter()
                .filter_map(|(name, value)| {
                    Some((
                        http::HeaderName::from_bytes(name.as_bytes()).ok()?,
                        HeaderValue::from_str(&value).ok()?,
                    ))
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        let mut reply = Self::build(accept, outcome.map(|h| (h.body, None)));
        reply.headers = headers;
        reply
    }

    /// The generated handler already turned an unacceptable `Accept` into the outcome (before
    /// running anything); only the format is taken here.
    fn build(accept: &Negotiated, outcome: Result<(T, Option<String>), ApiError>) -> Self {
        Reply {
            format: accept.format(),
            outcome,
            headers: Vec::new(),
            _error: PhantomData,
        }
    }
}

impl<T: Document, E: ErrorDocument, const STATUS: u16> HttpResponse for Reply<T, E, STATUS> {
    fn to_result(self) -> HttpHandlerResult {
        match self.outcome {
            Ok((value, location)) => {
                let status = StatusCode::from_u16(STATUS).unwrap_or(StatusCode::OK);
                respond(
                    status,
                    self.format,
                    wire::encode(self.format, &value),
                    location.as_deref(),
                    &self.headers,
                )
            }
            Err(e) => error_response::<E>(self.format, &e),
        }
    }

    fn response_metadata() -> ApiEndpointResponse {
        if STATUS == 201 {
            HttpResponseCreated::<T::Json>::response_metadata()
        } else {
            HttpResponseOk::<T::Json>::response_metadata()
        }
    }

    fn status_code(&self) -> StatusCode {
        match &self.outcome {
            Ok(_) => StatusCode::from_u16(STATUS).unwrap_or(StatusCode::OK),
            Err(e) => e.status,
        }
    }
}

/// A 204 answer, or an `E` error document in the negotiated format.
pub struct NoContent<E> {
    format: Format,
    outcome: Result<(), ApiError>,
    _error: PhantomData<fn() -> E>,
}

impl<E: ErrorDocument> NoContent<E> {
    /// Folds the handler's outcome into the answer.
    pub fn new(accept: &Negotiated, outcome: Result<(), ApiError>) -> Self {
        NoContent {
            format: accept.format(),
            outcome,
            _error: PhantomData,
        }
    }
}

impl<E: ErrorDocument> HttpResponse for NoContent<E> {
    fn to_result(self) -> HttpHandlerResult {
        match self.outcome {
            Ok(()) => {
                let mut r = http::Response::new(DropshotBody::empty());
                *r.status_mut() = StatusCode::NO_CONTENT;
                r.headers_mut()
                    .insert(header::VARY, HeaderValue::from_static("Accept"));
                Ok(r)
            }
            Err(e) => error_response::<E>(self.format, &e),
        }
    }

    fn response_metadata() -> ApiEndpointResponse {
        HttpResponseDeleted::response_metadata()
    }

    fn status_code(&self) -> StatusCode {
        match &self.outcome {
            Ok(()) => StatusCode::NO_CONTENT,
            Err(e) => e.status,
        }
    }
}

/// Renders an error as an `E` document in `format`.
pub fn error_response<E: ErrorDocument>(format: Format, error: &ApiError) -> HttpHandlerResult {
    let body = wire::encode(format, &E::from_error(error));
    respond(error.status, format, body, None, &error.headers)
}

fn respond(
    status: StatusCode,
    format: Format,
    body: Vec<u8>,
    location: Option<&str>,
    extra: &[(http::HeaderName, HeaderValue)],
) -> HttpHandlerResult {
    let mut r = http::Response::new(DropshotBody::from(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    h.insert(header::VARY, HeaderValue::from_static("Accept"));
    if let Some(loc) = location.and_then(|l| HeaderValue::from_str(l).ok()) {
        h.insert(header::LOCATION, loc);
    }
    for (k, v) in extra {
        h.append(k.clone(), v.clone());
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only an answer in one of the two formats, with the type it was written with, is
    /// relabelled; and only when `Accept` weighs the `text/` type higher.
    #[test]
    fn an_answer_is_labelled_as_accept_weighs_it() {
        let label = |accept: Option<&str>, written: &'static str| {
            let mut h = http::HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(written));
            label_answer(accept, &mut h);
            h[header::CONTENT_TYPE]
                .to_str()
                .unwrap_or_default()
                .to_owned()
        };
        let xml = Format::Xml.content_type();
        assert_eq!(label(Some("text/xml"), xml), "text/xml; charset=utf-8");
        assert_eq!(label(Some("text/xml, application/xml"), xml), xml);
        assert_eq!(label(None, xml), xml);
        assert_eq!(
            label(Some("text/json"), Format::Json.content_type()),
            "text/json; charset=utf-8"
        );
        // Not written by the API's writers: left as it is.
        assert_eq!(
            label(Some("text/xml"), "application/xml"),
            "application/xml"
        );
        assert_eq!(
            label(Some("text/*"), "text/plain; charset=utf-8"),
            "text/plain; charset=utf-8"
        );
        let mut none = http::HeaderMap::new();
        label_answer(Some("text/xml"), &mut none);
        assert!(none.is_empty());
        // Read only when it names a `text/` type.
        let accept = |v: &'static str| {
            let mut h = http::HeaderMap::new();
            h.append(header::ACCEPT, HeaderValue::from_static("application/json"));
            h.append(header::ACCEPT, HeaderValue::from_static(v));
            accept_naming_text(&h)
        };
        assert_eq!(
            accept("TEXT/xml").as_deref(),
            Some("application/json,TEXT/xml")
        );
        assert_eq!(accept("*/*"), None);
    }
}
