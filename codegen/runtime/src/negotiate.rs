//! The dropshot side of content negotiation: extractors that never fail and a response type
//! that renders success and error alike in the negotiated format.
//!
//! dropshot renders extractor failures and handler errors as its own JSON. OMA wants every
//! error as a `requestError` in the client's format, so the extractors here keep a failure as
//! a value ([`Negotiated`], [`Body`], [`Captured`]) and the generated handler folds it into a
//! [`Reply`] / [`NoContent`], which always goes out through dropshot's success path.

use crate::error::ApiError;
use crate::media::{self, Format};
use crate::wire::{self, Document, ErrorDocument};
use crate::xml::XmlLimits;
use dropshot::{
    ApiEndpointBodyContentType, ApiEndpointResponse, Body as DropshotBody, ExclusiveExtractor,
    ExtensionMode, ExtractorMetadata, HttpError, HttpResponse, HttpResponseCreated,
    HttpResponseDeleted, HttpResponseOk, RequestContext, ServerContext, SharedExtractor, TypedBody,
    UntypedBody,
};
use http::{HeaderValue, StatusCode, header};
use std::marker::PhantomData;

/// What an `HttpResponse` produces (dropshot does not export its alias).
type HttpHandlerResult = Result<http::Response<DropshotBody>, HttpError>;

/// The response format the client accepts, or why none fits (→ 406, rendered in JSON).
#[derive(Debug)]
pub struct Negotiated(pub Result<Format, media::NotAcceptable>);

impl Negotiated {
    /// The format to answer in: the accepted one, else JSON (used for the 406 itself).
    pub fn format(&self) -> Format {
        self.0.as_ref().copied().unwrap_or(Format::Json)
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
        let accept = rqctx
            .request
            .headers()
            .get_all(header::ACCEPT)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>();
        let joined = (!accept.is_empty()).then(|| accept.join(","));
        Ok(Negotiated(media::response_format(joined.as_deref())))
    }

    fn metadata(_: ApiEndpointBodyContentType) -> ExtractorMetadata {
        ExtractorMetadata {
            extension_mode: ExtensionMode::None,
            parameters: Vec::new(),
        }
    }
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

/// A request body in JSON or XML, decoded to the document type `T`, or the OMA error saying
/// why it could not be (415 wrong Content-Type, 413 too large, 400 malformed).
#[derive(Debug)]
pub struct Body<T>(pub Result<T, ApiError>);

#[async_trait::async_trait]
impl<T: Document> ExclusiveExtractor for Body<T> {
    async fn from_request<C: ServerContext>(
        rqctx: &RequestContext<C>,
        request: http::Request<DropshotBody>,
    ) -> Result<Self, HttpError> {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let format = match media::body_format(content_type.as_deref()) {
            Ok(f) => f,
            Err(e) => return Ok(Body(Err(ApiError::unsupported_media_type(e.to_string())))),
        };
        let bytes = match UntypedBody::from_request(rqctx, request).await {
            Ok(b) => b,
            Err(e) if e.external_message.contains("exceeded maximum size") => {
                return Ok(Body(Err(ApiError::payload_too_large(
                    rqctx.request_body_max_bytes(),
                ))));
            }
            Err(e) => return Ok(Body(Err(ApiError::invalid_input(e.external_message)))),
        };
        Ok(Body(wire::decode::<T>(
            format,
            bytes.as_bytes(),
            &xml_limits(),
        )))
    }

    fn metadata(content_type: ApiEndpointBodyContentType) -> ExtractorMetadata {
        <TypedBody<T::Json> as ExclusiveExtractor>::metadata(content_type)
    }
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

/// A response with a body: `T` with status `STATUS` (200 or 201), or an `E` error document,
/// in the negotiated format.
pub struct Reply<T, E, const STATUS: u16> {
    format: Format,
    outcome: Result<(T, Option<String>), ApiError>,
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

    /// The generated handler already turned an unacceptable `Accept` into the outcome (before
    /// running anything); only the format is taken here.
    fn build(accept: &Negotiated, outcome: Result<(T, Option<String>), ApiError>) -> Self {
        Reply {
            format: accept.format(),
            outcome,
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
                    &[],
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
