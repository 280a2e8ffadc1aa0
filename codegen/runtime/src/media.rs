//! Content negotiation between the API's two wire formats, JSON and XML.
//!
//! These are pure functions over header values so that the dropshot extractors (which own the
//! HTTP plumbing) and their tests agree on one set of rules. Header values are client-controlled:
//! nothing here panics, allocates in proportion to attacker-chosen counts, or rejects a request
//! merely because an *irrelevant* part of a header is malformed.
//!
//! # Request bodies: [`body_format`]
//!
//! * The media type's `type/subtype` is compared case-insensitively; surrounding whitespace is
//!   ignored.
//! * JSON: `application/json`, `text/json` and any concrete `type/name+json` (e.g.
//!   `application/merge-patch+json`). XML: `application/xml`, `text/xml` and any concrete
//!   `type/name+xml` (e.g. `application/soap+xml`). Wildcards (`*`) are not media types and are
//!   refused, as is anything else, a missing header and an empty one.
//! * Parameters are ignored except `charset` ([`body_charset`]): `utf-8` (or `utf8`),
//!   `us-ascii` and `iso-8859-1` (or `iso_8859-1`, `latin1`; what Apache HttpClient's
//!   `ContentType.APPLICATION_XML` sends), compared case-insensitively and possibly quoted, are
//!   decoded as named; so are `utf-16`, `utf-16le` and `utf-16be` for XML only (every XML
//!   processor reads UTF-16, RFC 7303 asks senders to label it; JSON is UTF-8, RFC 8259 §8.1).
//!   Any other charset, and UTF-16 on JSON, is refused rather than misread. For XML an HTTP
//!   charset overrides the document's own declaration (RFC 7303 §3.2; a byte order mark still
//!   comes first). A `charset` whose value is not a valid token or quoted-string is ignored,
//!   like any other parameter that does not parse; one named twice is refused (RFC 6838 §4.3:
//!   which one a proxy in front read is a guess).
//!
//! # Request content codings: [`body_coding`]
//!
//! A body is read as sent: no `Content-Encoding`, or only `identity` (case-insensitively, in
//! a list with empty elements skipped), is accepted; any other coding (`gzip`, `br`, a name
//! we do not know) is refused (HTTP 415 with `Accept-Encoding: identity`, RFC 9110 §15.5.16)
//! rather than read as if it were not there, which made a compressed body a misleading
//! "not valid UTF-8" and let an unknown coding through as identity.
//!
//! # Responses: [`response_format`]
//!
//! The `Accept` header (RFC 9110 §12.5.1) is a comma-separated list of media ranges, each with
//! optional parameters and an optional weight `q` (`0` to `1`, at most three decimals).
//!
//! * A format is served as two types: its own (`application/json`, `application/xml`) and
//!   its `text/` type (`text/json`, `text/xml`). Each type's weight is the `q` of the most
//!   specific range that matches it: the type itself, then `type/*` (`application/*` for
//!   the own types; `text/*` for `text/xml` only, `text/json` being no registered type),
//!   then `*/*` (for the own types only: a client that refuses `application/json` and takes
//!   `*/*` is not answered JSON as `text/json`). The format's weight is the higher of its two
//!   types' (at equal `q`, the more specific range's, then the one listed first); a type
//!   named with `q=0` is refused, the other may still serve the format
//!   (`application/xml;q=0, text/xml` is XML, labelled `text/xml`).
//! * Only when a header names neither type of a format (not even through a wildcard) does
//!   another concrete type it stands for grant it (any `…+json` for JSON, any `…+xml` for
//!   XML: `application/soap+xml` alone is XML), answered with the own type's label.
//!
//!   Parameters other than `q` do not change what a range matches or how specific it is. When
//!   several ranges of the same specificity match a type, the highest `q` among them counts,
//!   and the first of those listed is the range that *grants* it.
//! * The format with the highest weight above zero wins: `q` dominates, so
//!   `application/json;q=0.8, application/*;q=0.9` is XML although JSON is named.
//! * At equal weights, the format granted by the more specific range wins, a concrete type
//!   (own, `text/` or another, alike: a client that lists `text/xml` first asks for XML
//!   first) over
//!   `type/*` over `*/*`:
//!   `application/xml, */*` and `application/xml, application/*` are XML, as in Spring,
//!   JAX-RS and ASP.NET, and as RFC 9110 ranks `*/*` lowest. At equal weights and
//!   specificity, the format whose granting range is listed first wins: `application/xml,
//!   application/json` is XML (Spring's `RestTemplate` with JAXB first sends `application/xml,
//!   text/xml, application/json, …`).
//! * Only a true tie, both formats granted by the same range (`*/*`, `application/*`), goes to
//!   the request body's format when the request has a JSON or XML body, else to JSON: a client
//!   that sends XML and expresses no preference reads XML. No header, or one that is empty or
//!   only whitespace, is a true tie too.
//! * If valid ranges were given but none matches either format with `q > 0`, the result is
//!   [`NotAcceptable`] (HTTP 406). The 406 itself (and any other error answered to such a
//!   request) is written in [`NotAcceptable::answer_in`]: the request body's format when it
//!   has a JSON or XML body, else JSON. Neither fits, so the server picks the one the client
//!   showed it writes, and an XML-only client can read why it failed.
//! * Garbage is skipped, one range at a time: a range that is not `type/subtype`, `type/*` or
//!   `*/*` made of RFC 9110 tokens, or whose *first* `q` parameter is not a valid qvalue
//!   (`q=2`, `q=0.0001`, `q=abc`, a bare `q`), is ignored as if it had not been sent. This never
//!   grants a format the client validly refused with `q=0`; it only drops information the client
//!   did not manage to express. If nothing valid remains, the header is treated as absent (the
//!   body's format, else JSON), as most servers do, rather than failing a request over an
//!   unreadable preference.
//!
//! # The answer's label: [`answer_content_type`]
//!
//! An answer in a format is labelled with that format's own type (`application/json`,
//! `application/xml`), unless `Accept` weighs the format's `text/` type (`text/xml`,
//! `text/json`) above its own (as weighed above): then the answer says that type, so that a
//! client that lists only `text/xml` (or `text/*`, or `application/xml;q=0.5, text/xml`)
//! reads a type it listed. A format granted only through another concrete type
//! (`application/soap+xml`) keeps its own type: the body is not that type.

use std::fmt;

/// The two wire formats of the API.
///
/// Every resource can be read and written in both; handlers serialize with whichever format
/// negotiation picked, so this is the single vocabulary for "which one".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// JSON, served as `application/json`.
    Json,
    /// XML, served as `application/xml`.
    Xml,
}

impl Format {
    /// The bare media type, without parameters.
    ///
    /// Exists for places that name a format to a client (error messages, OpenAPI content maps)
    /// where a `charset` parameter would be noise.
    #[must_use]
    pub fn media_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Xml => "application/xml",
        }
    }

    /// The `Content-Type` header value for a response body in this format.
    ///
    /// Exists so every response states its encoding explicitly: the server always writes UTF-8.
    #[must_use]
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json; charset=utf-8",
            Format::Xml => "application/xml; charset=utf-8",
        }
    }
}

/// Why a request body's `Content-Type` was refused (→ HTTP 415 Unsupported Media Type).
///
/// Exists so extractors can turn a refusal into an OMA error whose text, from [`fmt::Display`],
/// tells the client developer what to send instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsupportedMediaType {
    /// The `Content-Type` header as received, or `None` when the request had none.
    pub received: Option<String>,
}

impl fmt::Display for UnsupportedMediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(received) = self.received.as_deref() else {
            return f.write_str(
                "a request body needs a Content-Type header: application/json or application/xml",
            );
        };
        if trim_ows(received).is_empty() {
            return f.write_str(
                "the Content-Type header is empty; send application/json or application/xml",
            );
        }
        match classify_content_type(received) {
            ContentTypeVerdict::BadCharset(format) => write!(
                f,
                "Content-Type `{}` is not supported: {} bodies must be {}; send `{}` or leave \
                 the charset out",
                Excerpt(received),
                match format {
                    Format::Json => "JSON",
                    Format::Xml => "XML",
                },
                match format {
                    Format::Json => "UTF-8 (RFC 8259), US-ASCII or ISO-8859-1",
                    Format::Xml => "UTF-8, UTF-16, US-ASCII or ISO-8859-1",
                },
                format.content_type(),
            ),
            ContentTypeVerdict::TwoCharsets => write!(
                f,
                "Content-Type `{}` names its charset more than once; send one",
                Excerpt(received),
            ),
            ContentTypeVerdict::Accepted(_) | ContentTypeVerdict::Unsupported => write!(
                f,
                "Content-Type `{}` is not supported; send application/json or application/xml",
                Excerpt(received),
            ),
        }
    }
}

impl std::error::Error for UnsupportedMediaType {}

/// Why a request body's `Content-Encoding` was refused (→ HTTP 415 with
/// `Accept-Encoding: identity`).
///
/// Exists so the extractor can tell the client, from [`fmt::Display`], that the body must be
/// sent uncompressed, instead of failing later on bytes it cannot read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsupportedContentCoding {
    /// The `Content-Encoding` header as received (several joined with `,`).
    pub received: String,
}

impl fmt::Display for UnsupportedContentCoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Content-Encoding `{}` is not supported; send the body uncompressed, without \
             Content-Encoding (or `identity`)",
            Excerpt(&self.received),
        )
    }
}

impl std::error::Error for UnsupportedContentCoding {}

/// Whether a request body with this `Content-Encoding` (`None`: no header) can be read.
///
/// Exists so every body-reading extractor refuses the same codings with the same 415 text;
/// the exact rule is in the [module documentation](self).
///
/// # Errors
///
/// [`UnsupportedContentCoding`] when the header names any coding but `identity`.
pub fn body_coding(content_encoding: Option<&str>) -> Result<(), UnsupportedContentCoding> {
    let Some(value) = content_encoding else {
        return Ok(());
    };
    let identity = value
        .split(',')
        .map(trim_ows)
        .filter(|coding| !coding.is_empty())
        .all(|coding| coding.eq_ignore_ascii_case("identity"));
    if identity {
        Ok(())
    } else {
        Err(UnsupportedContentCoding {
            received: value.to_owned(),
        })
    }
}

/// Why no representation fits the `Accept` header (→ HTTP 406 Not Acceptable).
///
/// Exists so extractors can turn a failed negotiation into an OMA error whose text, from
/// [`fmt::Display`], tells the client developer which media types the API can answer with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotAcceptable {
    /// The `Accept` header as received (complete; [`fmt::Display`] shortens long values).
    pub accept: String,
    /// The format to answer in anyway (the 406, or an error found before it): the request
    /// body's, else JSON.
    pub answer_in: Format,
}

impl fmt::Display for NotAcceptable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "none of the media types in Accept `{}` is available; \
             this API answers application/json or application/xml",
            Excerpt(&self.accept),
        )
    }
}

impl std::error::Error for NotAcceptable {}

/// Decides how to parse a request body from its `Content-Type` header value.
///
/// Exists so every body-reading extractor refuses the same media types with the same 415 text;
/// the exact rules are in the [module documentation](self).
///
/// # Errors
///
/// [`UnsupportedMediaType`] when the header is missing, empty, names neither JSON nor XML, or
/// declares a charset other than UTF-8, US-ASCII or ISO-8859-1 (or, for XML, UTF-16).
pub fn body_format(content_type: Option<&str>) -> Result<Format, UnsupportedMediaType> {
    let refuse = || UnsupportedMediaType {
        received: content_type.map(str::to_owned),
    };
    let Some(value) = content_type else {
        return Err(refuse());
    };
    match classify_content_type(value) {
        ContentTypeVerdict::Accepted(format) => Ok(format),
        ContentTypeVerdict::BadCharset(_)
        | ContentTypeVerdict::TwoCharsets
        | ContentTypeVerdict::Unsupported => Err(refuse()),
    }
}

/// Picks the response format from the `Accept` header value and, where `Accept` expresses no
/// preference between the two, the format of the request's body (`body`: what [`body_format`]
/// made of its `Content-Type`, `None` without a body or with an unsupported one).
///
/// Exists so every endpoint negotiates identically (including error responses, which must also
/// come back in a format the client reads); the exact rules are in the
/// [module documentation](self).
///
/// # Errors
///
/// [`NotAcceptable`] when the header holds at least one valid media range but none of them
/// accepts JSON or XML with a weight above zero.
pub fn response_format(
    accept: Option<&str>,
    body: Option<Format>,
) -> Result<Format, NotAcceptable> {
    let tie = body.unwrap_or(Format::Json);
    let Some(header) = accept else {
        return Ok(tie);
    };
    let Some([json, xml]) = weigh(header) else {
        // Nothing valid in the header: no preference at all.
        return Ok(tie);
    };
    let (json, xml) = match (json.grant(), xml.grant()) {
        (Some(json), Some(xml)) => (json, xml),
        (Some(_), None) => return Ok(Format::Json),
        (None, Some(_)) => return Ok(Format::Xml),
        (None, None) => {
            return Err(NotAcceptable {
                accept: header.to_owned(),
                answer_in: tie,
            });
        }
    };
    // Higher q, then the more specific granting range, then the range listed first; the
    // same range granting both (`*/*`, `application/*`) leaves it to the body.
    let preference = json
        .q
        .cmp(&xml.q)
        .then(json.specificity.rank().cmp(&xml.specificity.rank()))
        .then(xml.position.cmp(&json.position));
    Ok(match preference {
        std::cmp::Ordering::Greater => Format::Json,
        std::cmp::Ordering::Less => Format::Xml,
        std::cmp::Ordering::Equal => tie,
    })
}

/// The `Content-Type` of an answer in `format` to a request whose `Accept` is `accept`
/// (several fields joined with `,`): the format's own type, or its `text/` type when `Accept`
/// weighs that higher; the rule is in the [module documentation](self).
///
/// Exists because negotiation grants XML through `text/xml` and `text/*`, and an answer
/// labelled `application/xml` is then a type a strict client did not list.
#[must_use]
pub(crate) fn answer_content_type(accept: Option<&str>, format: Format) -> &'static str {
    let weights = accept.and_then(weigh).map(|[json, xml]| match format {
        Format::Json => json,
        Format::Xml => xml,
    });
    match (weights.map(|w| w.label()), format) {
        (Some(Label::Text), Format::Json) => "text/json; charset=utf-8",
        (Some(Label::Text), Format::Xml) => "text/xml; charset=utf-8",
        _ => format.content_type(),
    }
}

// ---------------------------------------------------------------------------------------------
// Content-Type

/// The character encoding a request body's `Content-Type` names, among those it may be in
/// (see the [module documentation](self)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Charset {
    /// `utf-8`, `utf8`.
    Utf8,
    /// `us-ascii`: UTF-8 with no byte above 0x7F.
    Ascii,
    /// `iso-8859-1`, `iso_8859-1`, `latin1`: each byte the code point of its value.
    Latin1,
    /// `utf-16`, XML only: the byte order from the byte order mark, else from the first
    /// character (RFC 2781 says big-endian, but .NET labels its little-endian output so).
    Utf16,
    /// `utf-16le`, XML only.
    Utf16Le,
    /// `utf-16be`, XML only.
    Utf16Be,
}

impl Charset {
    /// The charset a `charset` parameter's value names, if one we decode.
    fn named(value: &str) -> Option<Charset> {
        let is = |names: &[&str]| names.iter().any(|n| value.eq_ignore_ascii_case(n));
        if is(&["utf-8", "utf8"]) {
            Some(Charset::Utf8)
        } else if is(&["us-ascii"]) {
            Some(Charset::Ascii)
        } else if is(&["iso-8859-1", "iso_8859-1", "latin1"]) {
            Some(Charset::Latin1)
        } else if is(&["utf-16"]) {
            Some(Charset::Utf16)
        } else if is(&["utf-16le"]) {
            Some(Charset::Utf16Le)
        } else if is(&["utf-16be"]) {
            Some(Charset::Utf16Be)
        } else {
            None
        }
    }

    /// Whether a body in `format` may be in this charset: JSON is UTF-8 (RFC 8259 §8.1; its
    /// single-byte subsets are read too, as clients label them), XML may also be UTF-16,
    /// which every XML processor reads (XML 1.0 §4.3.3).
    fn fits(self, format: Format) -> bool {
        match self {
            Charset::Utf8 | Charset::Ascii | Charset::Latin1 => true,
            Charset::Utf16 | Charset::Utf16Le | Charset::Utf16Be => format == Format::Xml,
        }
    }
}

/// The `charset` a request's `Content-Type` names, `None` without one.
/// Call it on a value [`body_format`] accepted: an unsupported charset is `None` here, and a
/// UTF-16 one is named whatever the format ([`body_format`] refuses it for JSON).
pub fn body_charset(content_type: Option<&str>) -> Option<Charset> {
    let mut pieces = split_unquoted(content_type?, b';');
    pieces.next();
    pieces
        .filter_map(|piece| {
            let (name, value) = split_parameter(piece);
            if !name.eq_ignore_ascii_case("charset") {
                return None;
            }
            Charset::named(&value.and_then(parameter_value)?)
        })
        .last()
}

/// Outcome of looking at a `Content-Type` value; shared by [`body_format`] and the 415 message.
enum ContentTypeVerdict {
    Accepted(Format),
    /// The media type is JSON or XML, but the declared charset is not one we decode in it.
    BadCharset(Format),
    /// The `charset` parameter is given more than once.
    TwoCharsets,
    Unsupported,
}

fn classify_content_type(value: &str) -> ContentTypeVerdict {
    // A comma outside quotes is no media type: several `Content-Type` fields joined, or one
    // field listing two. Which one to read is a guess a proxy in front may make otherwise.
    if split_unquoted(value, b',').nth(1).is_some() {
        return ContentTypeVerdict::Unsupported;
    }
    let mut pieces = split_unquoted(value, b';');
    let essence = pieces.next().map(trim_ows).unwrap_or("");
    let Some((ty, sub)) = parse_type_subtype(essence) else {
        return ContentTypeVerdict::Unsupported;
    };
    if ty == "*" || sub == "*" {
        return ContentTypeVerdict::Unsupported;
    }
    let format = if is_json_type(ty, sub) {
        Format::Json
    } else if is_xml_type(ty, sub) {
        Format::Xml
    } else {
        return ContentTypeVerdict::Unsupported;
    };
    let mut charsets = 0;
    for piece in pieces {
        let (name, value) = split_parameter(piece);
        if !name.eq_ignore_ascii_case("charset") {
            continue;
        }
        // Named twice is an error (RFC 6838 §4.3), even twice the same: which one to read is a
        // guess, and a proxy in front that checked the other read another text.
        charsets += 1;
        if charsets > 1 {
            return ContentTypeVerdict::TwoCharsets;
        }
        // A charset value that does not parse is ignored, like any other malformed parameter.
        let Some(charset) = value.and_then(parameter_value) else {
            continue;
        };
        if !Charset::named(&charset).is_some_and(|c| c.fits(format)) {
            return ContentTypeVerdict::BadCharset(format);
        }
    }
    ContentTypeVerdict::Accepted(format)
}

/// `application/json`, `text/json` (never registered, but what older stacks still send, as
/// `text/xml` is for XML) or a concrete `type/name+json`.
fn is_json_type(ty: &str, sub: &str) -> bool {
    ((ty.eq_ignore_ascii_case("application") || ty.eq_ignore_ascii_case("text"))
        && sub.eq_ignore_ascii_case("json"))
        || has_suffix(sub, "+json")
}

/// `application/xml`, `text/xml` or a concrete `type/name+xml`.
fn is_xml_type(ty: &str, sub: &str) -> bool {
    ((ty.eq_ignore_ascii_case("application") || ty.eq_ignore_ascii_case("text"))
        && sub.eq_ignore_ascii_case("xml"))
        || has_suffix(sub, "+xml")
}

/// Whether `sub` ends with `suffix` (ASCII case-insensitively) after a non-empty name.
fn has_suffix(sub: &str, suffix: &str) -> bool {
    let (sub, suffix) = (sub.as_bytes(), suffix.as_bytes());
    sub.len() > suffix.len()
        && sub
            .get(sub.len() - suffix.len()..)
            .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
}

// ---------------------------------------------------------------------------------------------
// Accept

/// How specifically a media range names a format; higher wins. `None` in [`Weight`] = no match.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Specificity {
    /// `*/*`
    Any,
    /// `type/*`
    AnySubtype,
    /// A concrete type other than the format's own: its `text/` type, or one it stands for
    /// (`…+json`).
    Alias,
    /// The format's own media type.
    Exact,
}

impl Specificity {
    /// How specifically a client named a format, to choose between two formats at equal
    /// weights: any concrete type (the format's own or an alias) ranks above `type/*`, above
    /// `*/*`. (Within one format, [`Specificity`]'s own order picks the range that grants
    /// it: `application/xml` over `text/xml`.)
    fn rank(self) -> u8 {
        match self {
            Specificity::Any => 0,
            Specificity::AnySubtype => 1,
            Specificity::Alias | Specificity::Exact => 2,
        }
    }
}

/// A usable media range from an `Accept` header.
struct MediaRange<'a> {
    ty: &'a str,
    sub: &'a str,
    /// Weight in thousandths, `0..=1000`.
    q: u16,
}

impl MediaRange<'_> {
    /// How specifically this range names the type `label` of `format` (RFC 9110 §12.5.1: the
    /// type itself, then `type/*`, then `*/*`), `None` when it does not match it. The own
    /// type (`application/xml`) is matched by `*/*`, `application/*` and itself; the `text/`
    /// type by itself and, for XML, `text/*` (`text/json` is no registered type: `text/*`
    /// does not stand for it), not by `*/*`, so that a client refusing the own type
    /// (`application/json;q=0, */*`) is not answered the same document as `text/json`.
    fn names(&self, format: Format, label: Label) -> Option<Specificity> {
        let (ty, sub) = (self.ty, self.sub);
        match label {
            Label::Own if ty == "*" => Some(Specificity::Any),
            Label::Own if ty.eq_ignore_ascii_case("application") => {
                if sub == "*" {
                    Some(Specificity::AnySubtype)
                } else {
                    sub.eq_ignore_ascii_case(format_subtype(format))
                        .then_some(Specificity::Exact)
                }
            }
            Label::Text if ty.eq_ignore_ascii_case("text") => {
                if sub == "*" {
                    (format == Format::Xml).then_some(Specificity::AnySubtype)
                } else {
                    sub.eq_ignore_ascii_case(format_subtype(format))
                        .then_some(Specificity::Alias)
                }
            }
            Label::Own | Label::Text => None,
        }
    }

    /// Whether this range is another concrete type the format stands for (`…+json`,
    /// `…+xml`; not `application/json` or `text/json`, which [`MediaRange::names`] matches).
    fn is_alias_of(&self, format: Format) -> bool {
        let (ty, sub) = (self.ty, self.sub);
        if ty == "*" || sub == "*" || sub.eq_ignore_ascii_case(format_subtype(format)) {
            return false;
        }
        match format {
            Format::Json => is_json_type(ty, sub),
            Format::Xml => is_xml_type(ty, sub),
        }
    }
}

/// The two types an answer in a format may be labelled with: the format's own
/// (`application/xml`) or its `text/` type (`text/xml`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Label {
    Own,
    Text,
}

/// What an `Accept` header grants one format: through its own type, its `text/` type, and
/// another concrete type it stands for (`…+xml`).
#[derive(Default)]
struct FormatWeights {
    own: Weight,
    text: Weight,
    alias: Weight,
}

impl FormatWeights {
    /// The grant that makes the format acceptable, if any: the better of its own type's and
    /// its `text/` type's (higher `q`, then more specific, then listed first); only when the
    /// header names neither (not even with `q=0`, a refusal) another concrete type it stands
    /// for (`application/soap+xml`: the answer is labelled with the own type, which the
    /// client did not refuse).
    fn grant(&self) -> Option<Grant> {
        if self.own.best.is_none() && self.text.best.is_none() {
            return self.alias.grant();
        }
        [self.own.grant(), self.text.grant()]
            .into_iter()
            .flatten()
            .max_by(|a, b| {
                a.q.cmp(&b.q)
                    .then(a.specificity.rank().cmp(&b.specificity.rank()))
                    .then(b.position.cmp(&a.position))
            })
    }

    /// The type to label an answer in this format with: `text/` when it weighs more than
    /// the own type (unnamed or refused: 0), else the own type.
    fn label(&self) -> Label {
        let q = |w: &Weight| w.grant().map_or(0, |g| g.q);
        if q(&self.text) > q(&self.own) {
            Label::Text
        } else {
            Label::Own
        }
    }
}

/// The weights an `Accept` header gives JSON and XML, `None` when it holds no valid range
/// (treated as absent).
fn weigh(header: &str) -> Option<[FormatWeights; 2]> {
    let mut weights = [FormatWeights::default(), FormatWeights::default()];
    let mut any_valid = false;
    for (position, element) in split_unquoted(header, b',').enumerate() {
        let Some(range) = parse_media_range(element) else {
            continue;
        };
        any_valid = true;
        for (format, w) in [Format::Json, Format::Xml].into_iter().zip(&mut weights) {
            w.own
                .offer(range.names(format, Label::Own), range.q, position);
            w.text
                .offer(range.names(format, Label::Text), range.q, position);
            let alias = range.is_alias_of(format).then_some(Specificity::Alias);
            w.alias.offer(alias, range.q, position);
        }
    }
    any_valid.then_some(weights)
}

fn format_subtype(format: Format) -> &'static str {
    match format {
        Format::Json => "json",
        Format::Xml => "xml",
    }
}

/// The range that grants one format its weight: the most specific range matching it; among
/// equally specific ones the highest `q`, and among those the one listed first.
#[derive(Clone, Copy)]
struct Grant {
    specificity: Specificity,
    /// Weight in thousandths, `0..=1000`.
    q: u16,
    /// Where the range is in the `Accept` list (0 = first).
    position: usize,
}

/// The grant of one format so far (`None`: no range matched it yet).
#[derive(Default)]
struct Weight {
    best: Option<Grant>,
}

impl Weight {
    fn offer(&mut self, specificity: Option<Specificity>, q: u16, position: usize) {
        let Some(specificity) = specificity else {
            return;
        };
        let better = match self.best {
            None => true,
            Some(seen) => {
                specificity > seen.specificity || (specificity == seen.specificity && q > seen.q)
            }
        };
        if better {
            self.best = Some(Grant {
                specificity,
                q,
                position,
            });
        }
    }

    /// The grant, if it makes the format acceptable (`q > 0`).
    fn grant(&self) -> Option<Grant> {
        self.best.filter(|g| g.q > 0)
    }
}

/// Parses one element of an `Accept` list; `None` means "skip it" (empty or garbage).
fn parse_media_range(element: &str) -> Option<MediaRange<'_>> {
    let mut pieces = split_unquoted(element, b';');
    let (ty, sub) = parse_type_subtype(trim_ows(pieces.next()?))?;
    if ty == "*" && sub != "*" {
        return None;
    }
    let mut q = 1000;
    for piece in pieces {
        let (name, value) = split_parameter(piece);
        if name.eq_ignore_ascii_case("q") {
            // Only the first `q` is the weight; a malformed one discards the whole range.
            q = parse_qvalue(value?)?;
            break;
        }
    }
    Some(MediaRange { ty, sub, q })
}

/// Parses an RFC 9110 qvalue (`0`, `0.5`, `1.000`, …) into thousandths.
fn parse_qvalue(value: &str) -> Option<u16> {
    let (int, frac) = match value.split_once('.') {
        Some((int, frac)) => (int, frac),
        None => (value, ""),
    };
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_thousandths = frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u16, |acc, digit| acc * 10 + u16::from(digit - b'0'));
    match int {
        "0" => Some(frac_thousandths),
        "1" if frac_thousandths == 0 => Some(1000),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Shared lexing (RFC 9110 §5.6)

/// Splits `type/subtype` made of tokens; `None` if it is anything else.
fn parse_type_subtype(essence: &str) -> Option<(&str, &str)> {
    let (ty, sub) = essence.split_once('/')?;
    (is_token(ty) && is_token(sub)).then_some((ty, sub))
}

/// Splits a parameter into its name and, if there is an `=`, its value, both trimmed
/// (whitespace around `=` is tolerated so `q = 0` still means "not acceptable").
fn split_parameter(piece: &str) -> (&str, Option<&str>) {
    match piece.split_once('=') {
        Some((name, value)) => (trim_ows(name), Some(trim_ows(value))),
        None => (trim_ows(piece), None),
    }
}

/// A parameter value as a token or the contents of a quoted-string; `None` if it is neither.
fn parameter_value(raw: &str) -> Option<String> {
    let Some(quoted) = raw.strip_prefix('"') else {
        return is_token(raw).then(|| raw.to_owned());
    };
    let mut out = String::new();
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return chars.as_str().is_empty().then_some(out),
            '\\' => match chars.next() {
                Some(escaped) if escaped == '\t' || !escaped.is_control() => out.push(escaped),
                _ => return None,
            },
            c if c == '\t' || !c.is_control() => out.push(c),
            _ => return None,
        }
    }
    None // no closing quote
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

/// Trims optional whitespace (space and horizontal tab), as HTTP defines it.
fn trim_ows(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

/// Splits `s` on the ASCII byte `separator` wherever it is outside a quoted-string.
fn split_unquoted(s: &str, separator: u8) -> SplitUnquoted<'_> {
    SplitUnquoted {
        rest: Some(s),
        separator,
    }
}

struct SplitUnquoted<'a> {
    rest: Option<&'a str>,
    separator: u8,
}

impl<'a> Iterator for SplitUnquoted<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let s = self.rest?;
        let (mut quoted, mut escaped) = (false, false);
        for (i, b) in s.bytes().enumerate() {
            if quoted {
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    quoted = false;
                }
            } else if b == b'"' {
                quoted = true;
            } else if b == self.separator {
                // `separator` is ASCII, so `i` and `i + 1` are char boundaries.
                let (head, tail) = s.split_at_checked(i)?;
                self.rest = tail.get(1..);
                return Some(head);
            }
        }
        self.rest = None;
        Some(s)
    }
}

// ---------------------------------------------------------------------------------------------
// Echoing client input in messages

/// A client-supplied header value made safe to quote in an error body: trimmed, at most
/// [`Excerpt::MAX_CHARS`] characters, control characters replaced (XML 1.0 cannot carry them).
struct Excerpt<'a>(&'a str);

impl Excerpt<'_> {
    const MAX_CHARS: usize = 100;
}

impl fmt::Display for Excerpt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut chars = trim_ows(self.0).chars();
        for c in chars.by_ref().take(Self::MAX_CHARS) {
            let c = if c.is_control() { '\u{FFFD}' } else { c };
            fmt::Write::write_char(f, c)?;
        }
        if chars.next().is_some() {
            f.write_str("…")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn negotiate(accept: &str) -> Result<Format, NotAcceptable> {
        response_format(Some(accept), None)
    }

    #[test]
    fn format_names() {
        assert_eq!(Format::Json.media_type(), "application/json");
        assert_eq!(Format::Xml.media_type(), "application/xml");
        assert_eq!(
            Format::Json.content_type(),
            "application/json; charset=utf-8"
        );
        assert_eq!(Format::Xml.content_type(), "application/xml; charset=utf-8");
    }

    #[test]
    fn accept_required_examples() {
        use Format::{Json, Xml};
        assert_eq!(response_format(None, None), Ok(Json));
        let cases = [
            ("application/xml", Xml),
            ("text/xml", Xml),
            ("text/json", Json),
            ("text/json, application/xml;q=0.5", Json),
            ("application/json;q=0.5, application/xml", Xml),
            ("application/json;q=0, */*", Xml),
            ("application/*", Json),
            ("*/*;q=0.8, application/xml;q=0.9", Xml),
            ("text/*", Xml),
            ("application/problem+json", Json),
            ("application/vnd.x+xml", Xml),
            ("APPLICATION/XML", Xml),
            ("application/json;q=0.5,application/xml;q=0.5", Json),
        ];
        for (accept, expected) in cases {
            assert_eq!(negotiate(accept), Ok(expected), "Accept: {accept}");
        }
        for accept in [
            "text/html",
            "application/xml;q=0, application/json;q=0",
            "*/*;q=0",
        ] {
            assert_eq!(
                negotiate(accept),
                Err(NotAcceptable {
                    accept: accept.to_owned(),
                    answer_in: Json,
                }),
                "Accept: {accept}"
            );
        }
    }

    /// Nothing acceptable: the 406 is written in the request body's format, else JSON.
    #[test]
    fn a_406_is_answered_in_the_body_s_format() {
        use Format::{Json, Xml};
        for accept in ["text/html", "application/xml;q=0", "*/*;q=0"] {
            for (body, answer_in) in [(Some(Xml), Xml), (Some(Json), Json), (None, Json)] {
                assert_eq!(
                    response_format(Some(accept), body),
                    Err(NotAcceptable {
                        accept: accept.to_owned(),
                        answer_in,
                    }),
                    "Accept: {accept}, body {body:?}"
                );
            }
        }
    }

    #[test]
    fn accept_absent_or_blank_means_json() {
        for accept in ["", "   ", "\t", " \t "] {
            assert_eq!(negotiate(accept), Ok(Format::Json), "Accept: {accept:?}");
        }
    }

    #[test]
    fn no_preference_answers_in_the_body_s_format() {
        use Format::{Json, Xml};
        for accept in [
            None,
            Some(""),
            Some("*/*"),
            Some("application/*"),
            Some("garbage"),
        ] {
            assert_eq!(response_format(accept, Some(Xml)), Ok(Xml), "{accept:?}");
            assert_eq!(response_format(accept, Some(Json)), Ok(Json), "{accept:?}");
        }
        // Both formats granted by one range at equal weight, however many others are listed.
        for accept in [
            "*/*;q=0.5, text/html",
            "application/*, */*;q=0.1",
            "application/*, text/*",
        ] {
            assert_eq!(
                response_format(Some(accept), Some(Xml)),
                Ok(Xml),
                "{accept}"
            );
            assert_eq!(
                response_format(Some(accept), Some(Json)),
                Ok(Json),
                "{accept}"
            );
        }
        // Equal weights from two ranges are no tie: the client's order decides, not the body.
        assert_eq!(
            response_format(
                Some("application/json;q=0.5,application/xml;q=0.5"),
                Some(Xml)
            ),
            Ok(Json)
        );
        // A preference wins over the body's format; a refusal stays a refusal.
        assert_eq!(
            response_format(Some("application/json"), Some(Xml)),
            Ok(Json)
        );
        assert_eq!(
            response_format(Some("*/*;q=0.5, application/json"), Some(Xml)),
            Ok(Json)
        );
        assert_eq!(
            response_format(Some("application/xml"), Some(Json)),
            Ok(Xml)
        );
        assert!(response_format(Some("text/html"), Some(Xml)).is_err());
    }

    #[test]
    fn accept_specificity() {
        use Format::{Json, Xml};
        let cases = [
            // Exact beats type/* beats */*.
            ("application/*;q=0, application/xml", Xml),
            ("application/xml;q=0, application/*", Json),
            ("*/*, application/json;q=0", Xml),
            ("application/*;q=0.1, */*;q=1", Json), // both formats get 0.1 → tie → JSON
            ("text/*;q=0.9, application/*;q=0.5", Xml),
            // The format's own type beats an alias of it.
            (
                "text/xml;q=0.2, application/xml;q=0.9, application/json;q=0.5",
                Xml,
            ),
            (
                "application/problem+json;q=0.9, application/json;q=0.1, application/xml;q=0.5",
                Xml,
            ),
            // Among equally specific ranges the highest q counts.
            (
                "application/vnd.a+json;q=0.2, application/vnd.b+json;q=0.7, text/xml;q=0.5",
                Json,
            ),
            (
                "application/json;q=0.1, application/json;q=0.9, application/xml;q=0.5",
                Json,
            ),
            // q dominates specificity and order: a named type loses to a wildcard weighted higher.
            ("application/xml;q=0.9, */*;q=0.8", Xml),
            ("*/*;q=0.8, application/xml;q=0.9", Xml),
            ("application/json;q=0.8, application/*;q=0.9", Xml),
            ("text/xml;q=0.5, */*", Json),
            // Parameters other than q neither match nor rank.
            (
                "application/json;charset=latin1;q=0.4, application/xml;profile=x;q=0.6",
                Xml,
            ),
        ];
        for (accept, expected) in cases {
            assert_eq!(negotiate(accept), Ok(expected), "Accept: {accept}");
        }
        // XML may be served as text/xml, which the client accepts where it refused
        // application/xml (the answer says text/xml); another concrete type the format stands
        // for does not undo a refusal of its own type, which such an answer is labelled with.
        assert_eq!(negotiate("application/xml;q=0, text/xml"), Ok(Xml));
        assert_eq!(negotiate("text/xml, application/xml;q=0"), Ok(Xml));
        assert_eq!(
            negotiate("application/xml;q=0.5, text/xml, application/json;q=0.8"),
            Ok(Xml)
        );
        assert!(negotiate("application/json;q=0, application/problem+json").is_err());
        assert!(negotiate("*/*;q=0, application/soap+xml").is_err());
        // `*/*` does not stand for text/json: refusing application/json refuses JSON.
        assert_eq!(negotiate("application/json;q=0, */*"), Ok(Xml));
    }

    /// Equal weights: the more specific granting range wins (a concrete type > `type/*` >
    /// `*/*`), then the range listed first; only one range granting both is a tie (→ the
    /// body, else JSON).
    #[test]
    fn accept_equal_weights() {
        use Format::{Json, Xml};
        let cases = [
            // A named format beats a wildcard that grants the other one as much.
            ("application/xml, */*", Xml),
            ("*/*, application/xml", Xml),
            ("application/xml, application/*", Xml),
            ("application/*, application/xml", Xml),
            ("text/xml, */*", Xml),
            ("application/json;q=0.5, */*;q=0.5", Json),
            ("text/*, application/json", Json),
            // Concrete types, the format's own or an alias, rank alike: the first listed.
            ("text/xml, application/json", Xml),
            ("application/json, text/xml", Json),
            ("application/problem+json, application/xml", Json),
            ("application/xml, application/problem+json", Xml),
            // type/* beats */*: text/* grants XML, */* JSON.
            ("*/*, text/*", Xml),
            // Equally specific: the first listed wins.
            ("application/xml, application/json", Xml),
            ("application/json, application/xml", Json),
            ("application/xml;q=0.5, application/json;q=0.5", Xml),
            ("text/xml, text/json", Xml),
            ("application/vnd.a+json, text/xml", Json),
            ("text/*, application/*", Xml),
            // The grant among equally specific ranges is the highest q, then the first listed.
            (
                "application/json;q=0.2, application/xml;q=0.5, application/json;q=0.5",
                Xml,
            ),
            ("application/json, application/xml, application/json", Json),
            // Spring's RestTemplate with JAXB registered before Jackson, and the reverse.
            (
                "application/xml, text/xml, application/json, application/*+xml, \
                 application/*+json",
                Xml,
            ),
            (
                "application/json, application/*+json, application/xml, text/xml, \
                 application/*+xml",
                Json,
            ),
            // One range granting both at the same weight: a tie, JSON without a body.
            ("*/*", Json),
            ("application/*", Json),
            ("application/*, text/*", Json),
            ("*/*, application/*", Json),
            ("application/*;q=0.1, */*;q=1", Json),
        ];
        for (accept, expected) in cases {
            assert_eq!(negotiate(accept), Ok(expected), "Accept: {accept}");
        }
        assert_eq!(
            response_format(Some("application/*, text/*"), Some(Format::Xml)),
            Ok(Xml)
        );
        assert_eq!(
            response_format(Some("application/json, */*"), Some(Format::Xml)),
            Ok(Json)
        );
    }

    #[test]
    fn accept_unrelated_ranges_do_not_match() {
        for accept in [
            "image/*",
            "text/plain, text/html;q=0.9",
            "application/jsonx",
            "application/+json",
            "application/octet-stream",
        ] {
            assert!(negotiate(accept).is_err(), "Accept: {accept}");
        }
        assert_eq!(negotiate("image/png, text/xml;q=0.1"), Ok(Format::Xml));
    }

    #[test]
    fn accept_qvalues() {
        use Format::{Json, Xml};
        let cases = [
            ("application/json;q=0.001, application/xml;q=0", Json),
            ("application/json;q=0.999, application/xml;q=1.000", Xml),
            ("application/json;q=0.9, application/xml;q=1.", Xml),
            ("application/json;Q=0.1, application/xml;q=0.2", Xml),
            (
                "application/json ; q = 0.1 , application/xml ; q = 0.2",
                Xml,
            ),
            (
                "application/json;level=1;q=0.3, application/xml;q=0.2",
                Json,
            ),
        ];
        for (accept, expected) in cases {
            assert_eq!(negotiate(accept), Ok(expected), "Accept: {accept}");
        }
        assert!(negotiate("application/json;q=0.000").is_err());
        assert!(negotiate("application/json; q = 0").is_err());
        assert_eq!(parse_qvalue("0"), Some(0));
        assert_eq!(parse_qvalue("0.5"), Some(500));
        assert_eq!(parse_qvalue("0.05"), Some(50));
        assert_eq!(parse_qvalue("1"), Some(1000));
        for bad in [
            "", ".5", "1.001", "2", "0.0001", "-0", "+1", "0,5", "abc", "01", "0x1", "0.5e1",
        ] {
            assert_eq!(parse_qvalue(bad), None, "qvalue {bad:?}");
        }
    }

    #[test]
    fn accept_malformed_q_skips_only_that_range() {
        use Format::{Json, Xml};
        let cases = [
            ("application/json;q=2, application/xml;q=0.1", Xml),
            ("application/json;q=abc, application/xml;q=0.1", Xml),
            ("application/json;q, application/xml;q=0.1", Xml),
            ("application/json;q=\"0.5\", application/xml;q=0.1", Xml),
            // A valid q=0 is not undone by a malformed range.
            (
                "application/xml;q=0, application/xml;q=zz, application/json",
                Json,
            ),
            // Only malformed ranges: treated as absent.
            ("application/xml;q=5", Json),
            // Only the first q is the weight.
            ("application/xml;q=0.9;q=0, application/json;q=0.5", Xml),
        ];
        for (accept, expected) in cases {
            assert_eq!(negotiate(accept), Ok(expected), "Accept: {accept}");
        }
        assert!(negotiate("application/xml;q=0, application/json;q=bogus").is_err());
    }

    /// The label is a type the client listed: `text/xml` when it weighs that above
    /// `application/xml`, else the format's own type.
    #[test]
    fn answer_label_is_a_type_the_client_listed() {
        let xml = "application/xml; charset=utf-8";
        let text_xml = "text/xml; charset=utf-8";
        for (accept, label) in [
            (None, xml),
            (Some("text/xml"), text_xml),
            (Some("TEXT/XML;q=0.9"), text_xml),
            (Some("text/*"), text_xml),
            (Some("application/xml;q=0.5, text/xml"), text_xml),
            (Some("text/xml, */*;q=0"), text_xml),
            (Some("text/xml, application/json;q=0.5"), text_xml),
            (Some("*/*;q=0.5, text/xml"), text_xml),
            // Equal weights, or the own type weighed higher: the own type.
            (Some("text/xml, application/xml"), xml),
            (Some("text/xml;q=0.5, application/xml"), xml),
            (Some("text/xml, */*"), xml),
            (Some("*/*"), xml),
            (Some("application/*"), xml),
            // Another alias only: the body is not that type.
            (Some("application/soap+xml"), xml),
            (Some("text/xml;q=0.5, application/soap+xml"), text_xml),
            (Some("application/xml;q=0, text/xml"), text_xml),
            // The most specific range decides, not the highest q.
            (Some("text/xml;q=0.1, text/*, application/xml;q=0.5"), xml),
            (Some("text/xml;q=0, text/*, */*;q=0.1"), xml),
            (Some("garbage"), xml),
        ] {
            assert_eq!(
                answer_content_type(accept, Format::Xml),
                label,
                "{accept:?}"
            );
        }
        assert_eq!(
            answer_content_type(Some("text/json"), Format::Json),
            "text/json; charset=utf-8"
        );
        assert_eq!(
            answer_content_type(Some("text/*, application/json"), Format::Json),
            "application/json; charset=utf-8"
        );
        // `text/*` stands for XML only, and `*/*` for no `text/` type.
        assert_eq!(
            answer_content_type(
                Some("text/xml;q=0, text/*, application/json;q=0.5"),
                Format::Json
            ),
            "application/json; charset=utf-8"
        );
        assert_eq!(
            answer_content_type(Some("application/xml;q=0, */*"), Format::Xml),
            "application/xml; charset=utf-8"
        );
    }

    #[test]
    fn accept_garbage_is_skipped() {
        use Format::{Json, Xml};
        let lenient = [
            ";;;,",
            ",,,",
            "application",
            "/",
            "application/",
            "/json",
            "*/json",
            "*",
            "=;=,=",
            "\"",
            "\"application/xml\"",
            "application /xml",
            "appl\u{00e9}cation/xml",
            "ｱﾌﾟﾘ/xml, 🦀/*",
            "\u{0}\u{7f}\r\n",
            "application/xml\r\n",
        ];
        for accept in lenient {
            assert_eq!(negotiate(accept), Ok(Json), "Accept: {accept:?}");
        }
        let cases = [
            ("garbage, application/xml", Xml),
            (";;;, text/xml, application", Xml),
            ("application/xml;foo=\"a, b; c\", */*;q=0.1", Xml),
            ("application/json;foo=\"unterminated, application/xml", Json),
            (
                "application/xml;foo=\"esc\\\"aped, still\", application/json;q=0.5",
                Xml,
            ),
            (" \tapplication/xml\t ", Xml),
            ("application/xml;;;", Xml),
            ("application/xml; garbage", Xml),
        ];
        for (accept, expected) in cases {
            assert_eq!(negotiate(accept), Ok(expected), "Accept: {accept:?}");
        }
    }

    #[test]
    fn accept_very_long_headers() {
        let mut long = "text/html;q=0.5, ".repeat(50_000);
        long.push_str("application/xml;q=0.4");
        assert_eq!(negotiate(&long), Ok(Format::Xml));

        let garbage = ";\"\\,".repeat(50_000);
        assert_eq!(negotiate(&garbage), Ok(Format::Json));

        let huge_token = "a".repeat(1_000_000);
        assert_eq!(negotiate(&huge_token), Ok(Format::Json));
        let err = negotiate(&format!("{huge_token}/{huge_token}")).unwrap_err();
        assert!(err.to_string().len() < 400, "message is shortened");
        assert_eq!(err.accept.len(), 2_000_001, "field keeps the full header");
    }

    #[test]
    fn not_acceptable_message() {
        let err = negotiate("text/html").unwrap_err();
        assert_eq!(
            err.to_string(),
            "none of the media types in Accept `text/html` is available; \
             this API answers application/json or application/xml"
        );
        let err = negotiate("text/html, \u{1}x").unwrap_err();
        assert!(err.to_string().contains("`text/html, \u{FFFD}x`"));
        let long = format!("text/html, {}", "é".repeat(500));
        let shown = negotiate(&long).unwrap_err().to_string();
        assert!(shown.contains('…'));
        assert!(!shown.contains(&"é".repeat(100)));
    }

    #[test]
    fn body_required_examples() {
        use Format::{Json, Xml};
        let cases = [
            ("application/json; charset=utf-8", Json),
            ("application/xml", Xml),
            ("text/xml", Xml),
            ("application/soap+xml", Xml),
        ];
        for (content_type, expected) in cases {
            assert_eq!(
                body_format(Some(content_type)),
                Ok(expected),
                "{content_type}"
            );
        }
        for content_type in [
            Some("text/plain"),
            None,
            Some(""),
            Some("application/x-www-form-urlencoded"),
        ] {
            assert_eq!(
                body_format(content_type),
                Err(UnsupportedMediaType {
                    received: content_type.map(str::to_owned)
                }),
                "{content_type:?}"
            );
        }
    }

    #[test]
    fn body_accepted_variants() {
        use Format::{Json, Xml};
        let cases = [
            ("application/json", Json),
            ("APPLICATION/JSON", Json),
            ("Application/Json;Charset=UTF-8", Json),
            ("  application/json  ", Json),
            ("application/json;charset=\"utf-8\"", Json),
            ("application/json; charset=us-ascii", Json),
            ("application/json; charset=utf8", Json),
            ("application/json;", Json),
            ("application/json; garbage; =; foo=\"a;b\"", Json),
            ("application/json; charset=", Json), // malformed charset: ignored
            ("application/merge-patch+json", Json),
            ("application/vnd.oma.chat+JSON", Json),
            ("text/foo+json", Json),
            ("text/json", Json),
            ("TEXT/XML; charset=UTF-8", Xml),
            ("application/xml; charset=utf-16", Xml),
            ("application/xml; charset=UTF-16LE", Xml),
            ("text/xml;charset=\"Utf-16be\"", Xml),
            ("application/soap+xml; charset=utf-16", Xml),
            ("application/atom+xml", Xml),
            ("image/svg+xml", Xml),
        ];
        for (content_type, expected) in cases {
            assert_eq!(
                body_format(Some(content_type)),
                Ok(expected),
                "{content_type}"
            );
        }
    }

    #[test]
    fn body_refused_variants() {
        for content_type in [
            "   ",
            "application",
            "application/",
            "/json",
            "*/*",
            "application/*",
            "*/foo+json",
            "text/plain; charset=utf-8",
            "application/jsonx",
            "application/+json",
            "application/+xml",
            "application/json, application/xml",
            "application/json x",
            "application /json",
            "\"application/json\"",
            "application/jsön",
            "multipart/form-data; boundary=x",
            "application/octet-stream",
            "application/json; charset=\"UTF-16\"",
            "application/json; charset=utf-16le",
            "application/merge-patch+json; charset=UTF-16BE",
            "application/xml; charset=utf-32",
            "application/xml; charset=utf16",
            "application/xml; charset=windows-1252",
            "application/json; charset=utf-8; charset=utf-16",
            "application/xml; charset=utf-8; charset=latin1",
            "application/json; charset=utf-8; CHARSET=utf-8",
            "\u{0}",
            // Two media types (two header fields, joined): never read as either one.
            "application/json, application/xml",
            "application/json, application/json",
            "application/json; charset=utf-8, application/xml",
            "application/xml,",
        ] {
            assert!(
                body_format(Some(content_type)).is_err(),
                "{content_type:?} should be refused"
            );
        }
    }

    /// The charsets a body may be in, as `Content-Type` names them (Apache HttpClient's
    /// `ContentType.APPLICATION_XML` is `application/xml; charset=ISO-8859-1`).
    #[test]
    fn the_charset_a_body_is_in() {
        use Charset::*;
        for (content_type, charset) in [
            ("application/xml; charset=ISO-8859-1", Some(Latin1)),
            ("application/json;charset=\"latin1\"", Some(Latin1)),
            ("text/xml; charset=iso_8859-1", Some(Latin1)),
            ("application/xml; charset=UTF-8", Some(Utf8)),
            ("application/json; charset=us-ascii", Some(Ascii)),
            ("application/xml; charset=utf-16", Some(Utf16)),
            ("application/xml; charset=\"UTF-16LE\"", Some(Utf16Le)),
            ("text/xml; charset=utf-16be", Some(Utf16Be)),
            ("application/xml", None),
            ("application/xml; profile=x", None),
            ("application/xml; profile=\"a,b\"", None),
        ] {
            assert!(body_format(Some(content_type)).is_ok(), "{content_type}");
            assert_eq!(body_charset(Some(content_type)), charset, "{content_type}");
        }
        assert_eq!(body_charset(None), None);
    }

    #[test]
    fn unsupported_media_type_messages() {
        let message = |ct: Option<&str>| body_format(ct).unwrap_err().to_string();
        assert_eq!(
            message(Some("text/plain")),
            "Content-Type `text/plain` is not supported; send application/json or application/xml"
        );
        assert_eq!(
            message(None),
            "a request body needs a Content-Type header: application/json or application/xml"
        );
        assert_eq!(
            message(Some(" ")),
            "the Content-Type header is empty; send application/json or application/xml"
        );
        assert_eq!(
            message(Some("application/xml; charset=windows-1252")),
            "Content-Type `application/xml; charset=windows-1252` is not supported: XML \
             bodies must be UTF-8, UTF-16, US-ASCII or ISO-8859-1; send \
             `application/xml; charset=utf-8` or leave the charset out"
        );
        assert_eq!(
            message(Some("application/json; charset=utf-16")),
            "Content-Type `application/json; charset=utf-16` is not supported: JSON \
             bodies must be UTF-8 (RFC 8259), US-ASCII or ISO-8859-1; send \
             `application/json; charset=utf-8` or leave the charset out"
        );
        assert_eq!(
            message(Some("application/xml; charset=utf-8; charset=latin1")),
            "Content-Type `application/xml; charset=utf-8; charset=latin1` names its charset \
             more than once; send one"
        );
        let long = message(Some(&"x".repeat(10_000)));
        assert!(long.len() < 300 && long.contains('…'));
    }

    #[test]
    fn content_codings() {
        for accepted in [
            None,
            Some(""),
            Some(" "),
            Some("identity"),
            Some("IDENTITY"),
            Some(" identity ,, Identity"),
        ] {
            assert_eq!(body_coding(accepted), Ok(()), "{accepted:?}");
        }
        for refused in [
            "gzip",
            "x-gzip",
            "br",
            "deflate",
            "compress",
            "zstd",
            "x-unknown-coding",
            "identity, gzip",
            "gzip, identity",
            "identity;q=1",
            "identityx",
            "\u{1}",
        ] {
            assert_eq!(
                body_coding(Some(refused)),
                Err(UnsupportedContentCoding {
                    received: refused.to_owned()
                }),
                "{refused:?}"
            );
        }
        assert_eq!(
            body_coding(Some("gzip")).unwrap_err().to_string(),
            "Content-Encoding `gzip` is not supported; send the body uncompressed, without \
             Content-Encoding (or `identity`)"
        );
        let long = body_coding(Some(&"x".repeat(10_000)))
            .unwrap_err()
            .to_string();
        assert!(long.len() < 300 && long.contains('…'));
    }

    #[test]
    fn split_unquoted_respects_quotes() {
        let parts: Vec<_> = split_unquoted("a,\"b,c\",d\\,e,\"f\\\",g\",", b',').collect();
        assert_eq!(parts, ["a", "\"b,c\"", "d\\", "e", "\"f\\\",g\"", ""]);
        let parts: Vec<_> = split_unquoted("", b',').collect();
        assert_eq!(parts, [""]);
        let parts: Vec<_> = split_unquoted("é,ü", b',').collect();
        assert_eq!(parts, ["é", "ü"]);
    }

    #[test]
    fn parameter_values() {
        assert_eq!(parameter_value("utf-8").as_deref(), Some("utf-8"));
        assert_eq!(parameter_value("\"utf-8\"").as_deref(), Some("utf-8"));
        assert_eq!(parameter_value("\"a\\\"b\"").as_deref(), Some("a\"b"));
        assert_eq!(parameter_value("\"\"").as_deref(), Some(""));
        for bad in ["", "\"", "\"abc", "\"a\"b", "\"a\\\"", "a b", "\"\u{1}\""] {
            assert_eq!(parameter_value(bad), None, "{bad:?}");
        }
    }
}
