//! One document type, two formats: how a generated root type is encoded to and decoded from
//! OMA JSON (`{"rootName": {...}}`) and OMA XML (namespaced root element).

use crate::error::ApiError;
use crate::media::{Charset, Format};
use crate::xml::{self, XmlError, XmlLimits, XmlRoot};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use std::borrow::Cow;

/// The rules of a schema that serde's derive cannot check (a list's minimum length, exactly
/// one member of a choice), checked after a JSON body is read. Generated for every structure.
pub trait Validate {
    /// `Err` says which rule is broken, for a 400 the client can act on.
    fn validate(&self) -> Result<(), String>;
}

/// The rules of a client-given string field. Called by the generated [`Validate`] impls.
///
/// - Its `maxLength`, in characters (Unicode scalar values, as JSON Schema and
///   `xsd:maxLength` count them): every client-given string is bounded, because stored
///   strings are copied into notifications (`callbackData` into every one of a
///   subscription's) and a body-sized string would be multiplied many times over on disk and
///   in memory.
/// - Only characters XML 1.0 can carry ([`xml_char`]): what a JSON client sends is read back
///   and notified in XML too, and the XML face refuses the others when it parses them, so
///   both faces take the same strings and an XML reader gets what was sent.
pub fn check_string(field: &str, value: &str, max: u64) -> Result<(), String> {
    // Counting stops one past the limit: a value within it is counted once. A refused one is
    // counted whole, for its message (the body cap bounds it).
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    let count = value.chars().take(limit.saturating_add(1)).count();
    if count > limit {
        return Err(format!(
            "`{field}` is longer than {max} characters (its limit; {} given)",
            value.chars().count()
        ));
    }
    check_chars(field, value)
}

/// The character rule of [`check_string`] alone, for a string whose length is bounded
/// elsewhere (a message's `text`, by a setting): only characters XML 1.0 can carry.
pub fn check_chars(field: &str, value: &str) -> Result<(), String> {
    if let Some(c) = value.chars().find(|c| !xml_char(*c)) {
        return Err(format!(
            "`{field}` holds U+{:04X}, a character XML cannot carry (control characters other \
             than tab, line feed and carriage return, U+FFFE and U+FFFF)",
            u32::from(c)
        ));
    }
    Ok(())
}

/// Whether XML 1.0 can carry `c` (its `Char` production, §2.2): tab, line feed, carriage
/// return, U+0020–U+D7FF, U+E000–U+FFFD and U+10000 up (a Rust `char` is never a surrogate).
pub fn xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// A type that is a whole request or response document (a schema with an XML root name).
///
/// Generated for every root schema of the spec. `Json` is its JSON wrapper, the derived
/// `…Root` schema, which exists so that dropshot and progenitor see the wrapped shape.
pub trait Document: XmlRoot + Validate + Serialize + Send + Sync + 'static {
    /// The one-key JSON wrapper object.
    type Json: Serialize + DeserializeOwned + JsonSchema + Send + Sync + 'static;
    /// Every key the document's JSON body can hold (its root name and each property of the
    /// structures it reaches), sorted: what a misspelt key is told against ([`read_json`]).
    /// Listed by the codegen from the spec; a generated test checks them against `Json`'s
    /// schema ([`schema_names`]).
    const JSON_NAMES: &'static [&'static str];
    /// Whether the document's JSON form is itself a list (`{"notificationList": [...]}`),
    /// so that a list sent for a one-object document is told as such ([`is_list_of`]).
    const IS_LIST: bool;
    /// Takes the document out of its JSON wrapper.
    fn from_json(wrapper: Self::Json) -> Self;
}

/// The document errors are reported in (OMA `requestError`); generated from the spec.
pub trait ErrorDocument: Document {
    /// Renders an [`ApiError`] as this document.
    fn from_error(error: &ApiError) -> Self;
}

/// Serializes `{name: value}` without building a wrapper value.
struct Wrapped<'a, T>(&'static str, &'a T);

impl<T: Serialize> Serialize for Wrapped<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry(self.0, self.1)?;
        map.end()
    }
}

/// Encodes a document in the given format.
pub fn encode<T: Document>(format: Format, value: &T) -> Vec<u8> {
    match format {
        // Serializing plain generated structs into a Vec cannot fail (no maps with non-string
        // keys, no I/O); an empty body would be the visible symptom if it ever did.
        Format::Json => serde_json::to_vec(&Wrapped(T::NAME, value)).unwrap_or_default(),
        Format::Xml => xml::to_document(value).into_bytes(),
    }
}

/// Decodes a document in the given format; every failure is a 400 the client can act on.
pub fn decode<T: Document>(format: Format, body: &[u8], limits: &XmlLimits) -> Result<T, ApiError> {
    decode_in(format, None, body, limits)
}

/// [`decode`] for a body whose `Content-Type` named `charset` ([`media::body_charset`]): JSON
/// in ISO-8859-1 is read as such, US-ASCII must be ASCII, UTF-16 is refused, and XML is read
/// in it whatever its declaration says (RFC 7303 §3.2).
pub fn decode_in<T: Document>(
    format: Format,
    charset: Option<Charset>,
    body: &[u8],
    limits: &XmlLimits,
) -> Result<T, ApiError> {
    match format {
        Format::Json => {
            let text = json_utf8(body, charset)
                .map_err(|e| ApiError::invalid_input(format!("JSON body ({}): {e}", T::NAME)))?;
            let (read, misnamed) = read_json::<T::Json>(json_text(&text), T::JSON_NAMES);
            let value = match (read, misnamed) {
                (Ok(value), None) => T::from_json(value),
                (Ok(_), Some(misnamed)) => {
                    return Err(ApiError::invalid_input(format!(
                        "JSON body ({}): {misnamed}",
                        T::NAME
                    )));
                }
                (Err(_), _) if !T::IS_LIST && is_list_of(json_text(&text), T::NAME) => {
                    return Err(ApiError::invalid_input(format!(
                        "JSON body ({0}): `{0}` is one object, not a list",
                        T::NAME
                    )));
                }
                (Err(e), misnamed) => {
                    let hint = misnamed.map(|m| format!("; {m}")).unwrap_or_default();
                    return Err(ApiError::invalid_input(format!(
                        "JSON body ({}): {}{hint}",
                        T::NAME,
                        in_client_terms(e.to_string())
                    )));
                }
            };
            value
                .validate()
                .map_err(|e| ApiError::invalid_input(format!("JSON body ({}): {e}", T::NAME)))?;
            Ok(value)
        }
        Format::Xml => {
            let value = xml::from_document_in::<T>(body, charset, limits)
                .map_err(|e| xml_error(T::NAME, e))?;
            // The reader checked structure; the value rules (e.g. `maxLength`) are the same
            // code as for JSON, so both faces refuse the same documents.
            value
                .validate()
                .map_err(|e| ApiError::invalid_input(format!("XML body ({}): {e}", T::NAME)))?;
            Ok(value)
        }
    }
}

/// Reads a JSON document as `J`, and the first key it ignored that is one of its `names`
/// misspelt ([`Misnamed`]).
///
/// Unknown keys are ignored (a newer client's or a vendor's fields, as unknown XML
/// elements are), but a key that differs from a name the document has only in case, `_` or `-`
/// (`successreport`, `notify_url`) is a client's mistake that would otherwise pass silently: a
/// delivery report never asked for, a format never chosen (the app developer review of
/// 2026-12-07). The names are looked up only when a key was ignored.
fn read_json<J: DeserializeOwned>(
    body: &[u8],
    names: &[&str],
) -> (Result<J, serde_json::Error>, Option<Misnamed>) {
    let mut misnamed = None;
    let mut looked = 0usize;
    let mut de = serde_json::Deserializer::from_slice(body);
    let read = serde_ignored::deserialize(&mut de, |path| {
        // A few keys are enough to find a mistake; a body of thousands of junk keys costs
        // no more than that.
        if misnamed.is_some() || looked >= LOOK_AT_MOST {
            return;
        }
        looked += 1;
        let serde_ignored::Path::Map { key, .. } = &path else {
            return;
        };
        if let Some(name) = misspelt(names, key) {
            misnamed = Some(Misnamed {
                path: path_text(&path),
                name: name.to_owned(),
            });
        }
    })
    .and_then(|value| de.end().map(|()| value));
    (read, misnamed)
}

/// How many ignored keys of one body are looked up as possible misspellings.
const LOOK_AT_MOST: usize = 16;

/// The name of `names` that `key` misspells: one it is not but equals once both are folded
/// (lower case, without `_` and `-`). Compared char by char, nothing allocated: a document
/// has tens of names and a body has [`LOOK_AT_MOST`] keys looked up; a key more than twice
/// as long as the longest name is none of them (and is not read through).
fn misspelt<'n>(names: &[&'n str], key: &str) -> Option<&'n str> {
    fn folded(name: &str) -> impl Iterator<Item = char> + '_ {
        name.chars()
            .filter(|c| !matches!(c, '_' | '-'))
            .flat_map(char::to_lowercase)
    }
    let longest = names.iter().map(|n| n.len()).max().unwrap_or(0);
    if key.len() > 2 * longest {
        return None;
    }
    names
        .iter()
        .copied()
        .find(|name| *name != key && folded(name).eq(folded(key)))
}

/// The property names anywhere in `J`'s JSON schema, sorted: what the generated check holds
/// each document's [`Document::JSON_NAMES`] to (the spec's names against the derived serde
/// and schemars attributes). Not used while serving.
#[doc(hidden)]
pub fn schema_names<J: JsonSchema>() -> Vec<String> {
    fn walk(value: &serde_json::Value, names: &mut std::collections::BTreeSet<String>) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::Object(properties)) = map.get("properties") {
                    names.extend(properties.keys().cloned());
                }
                for v in map.values() {
                    walk(v, names);
                }
            }
            serde_json::Value::Array(items) => {
                for v in items {
                    walk(v, names);
                }
            }
            _ => {}
        }
    }
    let schema = serde_json::to_value(schemars::schema_for!(J)).unwrap_or_default();
    let mut names = std::collections::BTreeSet::new();
    walk(&schema, &mut names);
    names.into_iter().collect()
}

/// Whether a JSON body is `{"<name>": [...]}`: a list, sent where the document is one object
/// (a client sending several participants as `participantInformation`), which serde reports
/// from inside the list, in words that do not say so. Read only when a body was refused.
fn is_list_of(body: &[u8], name: &str) -> bool {
    serde_json::from_slice::<std::collections::BTreeMap<String, serde_json::Value>>(body).is_ok_and(
        |wrapper| wrapper.len() == 1 && wrapper.get(name).is_some_and(serde_json::Value::is_array),
    )
}

/// Where a key is in a JSON body, as a client reads it: names joined by `.`, a list's item by
/// its index (`participant[1].address`).
fn path_text(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", path_text(parent)),
        Path::Map { parent, key } => match path_text(parent) {
            p if p.is_empty() => key.clone(),
            p => format!("{p}.{key}"),
        },
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => path_text(parent),
    }
}

/// A key of a JSON body that is not a name of the document but differs from one only in
/// case, `_` or `-`.
struct Misnamed {
    /// Where it is (`chatMessage.successreport`).
    path: String,
    /// The name it misspells (`successReport`).
    name: String,
}

impl std::fmt::Display for Misnamed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = self.path.rsplit(['.', ']']).next().unwrap_or(&self.path);
        write!(
            f,
            "`{key}` (at {}) is not a field; did you mean `{}`? (names are matched exactly)",
            self.path, self.name
        )
    }
}

/// serde's message with the Rust type it expected ("expected struct ChatSubscriptionRoot")
/// said in JSON's terms ("expected an object"): a client knows the document, not our types.
fn in_client_terms(text: String) -> String {
    const STRUCT: &str = "expected struct ";
    let Some(at) = text.find(STRUCT) else {
        return text;
    };
    let rest = &text[at + STRUCT.len()..];
    let name_ends = rest
        .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .unwrap_or(rest.len());
    format!("{}expected an object{}", &text[..at], &rest[name_ends..])
}

/// A JSON body as UTF-8: as sent, unless its `Content-Type` named ISO-8859-1 (each byte the
/// code point of its value) or US-ASCII (which must hold no byte above 0x7F), and refused
/// if it named UTF-16; a UTF-8 byte order mark says UTF-8 whatever the header says.
fn json_utf8(body: &[u8], charset: Option<Charset>) -> Result<Cow<'_, [u8]>, &'static str> {
    if body.starts_with(b"\xEF\xBB\xBF") {
        // A UTF-8 byte order mark says UTF-8, whatever the header says.
        return Ok(Cow::Borrowed(body));
    }
    match charset {
        Some(Charset::Latin1) => Ok(Cow::Owned(
            body.iter()
                .map(|b| char::from(*b))
                .collect::<String>()
                .into_bytes(),
        )),
        Some(Charset::Ascii) if !body.is_ascii() => {
            Err("the body is declared US-ASCII but holds bytes above 0x7F")
        }
        // `media::body_format` refuses these for JSON (415) before a body is read; a caller
        // that decodes directly gets a refusal too, rather than UTF-16 read as UTF-8.
        Some(Charset::Utf16 | Charset::Utf16Le | Charset::Utf16Be) => {
            Err("JSON must be UTF-8 (RFC 8259), not UTF-16")
        }
        Some(Charset::Utf8 | Charset::Ascii) | None => Ok(Cow::Borrowed(body)),
    }
}

/// A JSON body without the UTF-8 byte order mark some clients put first (RFC 8259 §8.1
/// lets a parser ignore it; the XML reader skips it too).
fn json_text(body: &[u8]) -> &[u8] {
    body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body)
}

fn xml_error(root: &str, e: XmlError) -> ApiError {
    ApiError::invalid_input(format!("XML body ({root}): {e}"))
}

/// A request body as the generated endpoints read it: one document type, or a choice of two
/// ([`OneOf`], a `oneOf` of two roots in the spec, e.g. OMA 2012's `participantInformation`
/// or `participantList` POSTed to the same collection).
pub trait RequestBody: Sized + Send + Sync + 'static {
    /// The JSON form dropshot describes (a document's wrapper, or the choice of wrappers).
    type Json: JsonSchema + DeserializeOwned + Send + Sync + 'static;
    /// Decodes and validates a body in `format` and the `charset` its `Content-Type` named;
    /// every failure is a 400 the client can act on.
    fn decode(
        format: Format,
        charset: Option<Charset>,
        body: &[u8],
        limits: &XmlLimits,
    ) -> Result<Self, ApiError>;
}

impl<T: Document> RequestBody for T {
    type Json = T::Json;

    fn decode(
        format: Format,
        charset: Option<Charset>,
        body: &[u8],
        limits: &XmlLimits,
    ) -> Result<Self, ApiError> {
        decode_in::<T>(format, charset, body, limits)
    }
}

/// One of two documents, told apart by the root element's name (the JSON wrapper's one key).
#[derive(Clone, Debug, PartialEq)]
pub enum OneOf<A, B> {
    /// A document of the first root.
    A(A),
    /// A document of the second root.
    B(B),
}

/// The JSON form of [`OneOf`]: either wrapper (each has exactly one, distinct key).
#[derive(Clone, Debug, serde::Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum OneOfJson<A, B> {
    /// The first root's wrapper.
    A(A),
    /// The second root's wrapper.
    B(B),
}

impl<A: Document, B: Document> RequestBody for OneOf<A, B> {
    type Json = OneOfJson<A::Json, B::Json>;

    fn decode(
        format: Format,
        charset: Option<Charset>,
        body: &[u8],
        limits: &XmlLimits,
    ) -> Result<Self, ApiError> {
        // A list of `A`s is refused with the other document named, which may be what the
        // client meant (`participantList` for several `participantInformation`s).
        let decode_a = || {
            decode_in::<A>(format, charset, body, limits)
                .map(OneOf::A)
                .map_err(|mut e| {
                    let list = format == Format::Json
                        && !A::IS_LIST
                        && json_utf8(body, charset)
                            .is_ok_and(|t| is_list_of(json_text(&t), A::NAME));
                    if list && let Some(v) = e.variables.first_mut() {
                        v.push_str(&format!("; to send several, send one `{}`", B::NAME));
                    }
                    e
                })
        };
        match root_name(format, charset, body, limits, [A::NAME, B::NAME]) {
            Some(n) if n == A::NAME => decode_a(),
            Some(n) if n == B::NAME => decode_in::<B>(format, charset, body, limits).map(OneOf::B),
            Some(n) => Err(ApiError::invalid_input(format!(
                "{} body: the document must be `{}` or `{}`, not `{}`",
                match format {
                    Format::Json => "JSON",
                    Format::Xml => "XML",
                },
                A::NAME,
                B::NAME,
                xml::quote_input(&n)
            ))),
            // Not a document at all: the first root's decoder says what is wrong with it.
            None => decode_a(),
        }
    }
}

/// The name of a body's root element (XML) or of its wrapper's key (JSON: an object of one
/// key, or of several of which exactly one is one of the `roots`, so that the root's own
/// decoder names the stray keys); `None` when the body is not that much of a document.
fn root_name(
    format: Format,
    charset: Option<Charset>,
    body: &[u8],
    limits: &XmlLimits,
    roots: [&str; 2],
) -> Option<String> {
    match format {
        Format::Json => {
            let text = json_utf8(body, charset).ok()?;
            let keys: std::collections::BTreeMap<String, serde::de::IgnoredAny> =
                serde_json::from_slice(json_text(&text)).ok()?;
            if keys.len() == 1 {
                return keys.into_keys().next();
            }
            let mut known = keys.into_keys().filter(|k| roots.contains(&k.as_str()));
            match (known.next(), known.next()) {
                (Some(k), None) => Some(k),
                _ => None,
            }
        }
        Format::Xml => xml::parse_document_in(body, charset, limits)
            .ok()
            .map(|r| r.name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, JsonSchema)]
    struct Inner {
        #[serde(rename = "notifyURL")]
        _notify_url: String,
    }

    #[derive(serde::Deserialize, JsonSchema)]
    struct Outer {
        #[serde(rename = "successReport", default)]
        success_report: Option<bool>,
        #[serde(rename = "callbackReference")]
        _callback_reference: Option<Inner>,
        #[serde(default, deserialize_with = "crate::json::one_or_many")]
        participant: Vec<Item>,
    }

    #[derive(serde::Deserialize, JsonSchema)]
    struct Item {
        #[serde(rename = "clientCorrelator", default)]
        _client_correlator: Option<String>,
    }

    /// `Outer`'s names, as the codegen lists a document's.
    const OUTER_NAMES: &[&str] = &[
        "callbackReference",
        "clientCorrelator",
        "notifyURL",
        "participant",
        "successReport",
    ];

    /// The schema walk the generated check uses finds every property, nested and in a
    /// list's items.
    #[test]
    fn schema_names_are_every_property() {
        assert_eq!(schema_names::<Outer>(), OUTER_NAMES);
    }

    /// A key that is a name of the document but for case, `_` or `-` is told, with where it
    /// is and the name; an unknown key is ignored; a failed read gets the hint too.
    #[test]
    fn a_misspelt_name_is_told_an_unknown_one_ignored() {
        let (read, misnamed) = read_json::<Outer>(br#"{"successreport":true}"#, OUTER_NAMES);
        assert_eq!(read.ok().and_then(|o| o.success_report), None);
        let told = misnamed.expect("told").to_string();
        assert_eq!(
            told,
            "`successreport` (at successreport) is not a field; did you mean `successReport`? \
             (names are matched exactly)"
        );
        let (read, misnamed) = read_json::<Outer>(
            br#"{"successReport":true,"vendorExtension":{"a":1}}"#,
            OUTER_NAMES,
        );
        assert_eq!(read.ok().and_then(|o| o.success_report), Some(true));
        assert!(misnamed.is_none());
        let (read, misnamed) = read_json::<Outer>(
            br#"{"callbackReference":{"notify_url":"http://x"}}"#,
            OUTER_NAMES,
        );
        assert!(read.is_err(), "notifyURL is missing");
        let told = misnamed.expect("told").to_string();
        assert!(
            told.contains("at callbackReference.notify_url") && told.contains("`notifyURL`"),
            "{told}"
        );
        // Trailing garbage is still refused.
        assert!(read_json::<Outer>(br#"{} x"#, OUTER_NAMES).0.is_err());
        // Inside a list's items too, and a single item standing for the list.
        for (body, items) in [
            (&br#"{"participant":[{},{"clientcorrelator":"x"}]}"#[..], 2),
            (&br#"{"participant":{"client_correlator":"x"}}"#[..], 1),
        ] {
            let (read, misnamed) = read_json::<Outer>(body, OUTER_NAMES);
            assert_eq!(read.map(|o| o.participant.len()).ok(), Some(items));
            let told = misnamed.expect("told").to_string();
            assert!(told.contains("did you mean `clientCorrelator`?"), "{told}");
        }
        let (_, misnamed) = read_json::<Outer>(
            br#"{"participant":[{},{"clientcorrelator":"x"}]}"#,
            OUTER_NAMES,
        );
        assert!(
            misnamed
                .expect("told")
                .to_string()
                .contains("(at participant[1].clientcorrelator)")
        );
        // Only the first few ignored keys are looked up, and a key far longer than any name
        // is none of them.
        let mut junk: String = (0..100).map(|i| format!("\"k{i}\":1,")).collect();
        junk.push_str(r#""successreport":true"#);
        assert!(
            read_json::<Outer>(format!("{{{junk}}}").as_bytes(), OUTER_NAMES)
                .1
                .is_none()
        );
        let long = format!(r#"{{"success{}Report":true}}"#, "-".repeat(100));
        assert!(read_json::<Outer>(long.as_bytes(), OUTER_NAMES).1.is_none());
        assert!(
            read_json::<Outer>(br#"{"success-report":true}"#, OUTER_NAMES)
                .1
                .is_some()
        );
    }

    /// A list under the document's name is told (the caller asks only for a document that
    /// is one object, `Document::IS_LIST`); one object, or other keys beside, is not.
    #[test]
    fn a_list_for_one_object_is_told() {
        assert!(is_list_of(
            br#"{"participantInformation":[{}]}"#,
            "participantInformation"
        ));
        assert!(!is_list_of(
            br#"{"participantInformation":{}}"#,
            "participantInformation"
        ));
        assert!(!is_list_of(
            br#"{"participantInformation":[{}],"x":1}"#,
            "participantInformation"
        ));
    }

    /// serde's Rust type names become JSON's terms; other messages are left as they are.
    #[test]
    fn errors_name_json_shapes_not_rust_types() {
        assert_eq!(
            in_client_terms(
                "invalid type: sequence, expected struct ChatSubscriptionRoot at line 1 column 1"
                    .to_owned()
            ),
            "invalid type: sequence, expected an object at line 1 column 1"
        );
        assert_eq!(
            in_client_terms("missing field `text`".to_owned()),
            "missing field `text`"
        );
    }

    /// A string is refused past its length in characters, or holding a character XML cannot
    /// carry (named by its code point); tab, line feed, carriage return and everything from
    /// U+0020 up but U+FFFE and U+FFFF pass.
    #[test]
    fn a_string_is_bounded_and_xml_can_carry_it() {
        assert!(check_string("text", "héllo\t\n\r 😀 \u{FFFD}", 20).is_ok());
        let long = check_string("text", "abcd", 3).unwrap_err();
        assert!(long.contains("longer than 3"), "{long}");
        for (bad, named) in [
            ("bell\u{7}", "U+0007"),
            ("nul\u{0}", "U+0000"),
            ("\u{1F}", "U+001F"),
            ("\u{FFFE}", "U+FFFE"),
            ("\u{FFFF}", "U+FFFF"),
        ] {
            let e = check_string("subject", bad, 100).unwrap_err();
            assert!(e.contains("`subject`") && e.contains(named), "{e}");
        }
        assert!(xml_char('\u{10000}') && xml_char('\u{E000}') && !xml_char('\u{8}'));
    }
}
