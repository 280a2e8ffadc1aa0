//! Why a document was refused, in words meant for the client.

use std::borrow::Cow;
use std::fmt;

/// Why an XML document was rejected.
///
/// The `Display` text is meant to be sent back to API clients (in OMA error
/// bodies), so every message says what was wrong and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XmlError {
    /// The document is not well-formed XML (malformed markup, not UTF-8,
    /// unbalanced tags, trailing content, no root element, ...).
    Syntax(String),
    /// The document contains a DOCTYPE declaration, which is never accepted
    /// (it is the vector for entity expansion and external entity attacks).
    Doctype,
    /// The document references an entity other than the five predefined ones
    /// or a numeric character reference; holds the entity name.
    Entity(String),
    /// The document exceeds one of the [`XmlLimits`]; says which one.
    LimitExceeded(String),
    /// The root element is not the one the operation expects.
    WrongRoot {
        /// Expected root as `{namespace}localName`.
        expected: String,
        /// Actual root as `{namespace}localName` (or `localName` when unqualified).
        found: String,
    },
    /// The document is well-formed but does not match the expected type.
    Decode(String),
}

impl fmt::Display for XmlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syntax(msg) => write!(f, "malformed XML: {msg}"),
            Self::Doctype => f.write_str("DOCTYPE declarations are not accepted"),
            Self::Entity(name) => write!(
                f,
                "entity reference `&{name};` is not allowed; only &amp; &lt; &gt; &quot; &apos; \
                 and numeric character references are accepted"
            ),
            Self::LimitExceeded(msg) => write!(f, "XML document too large: {msg}"),
            Self::WrongRoot { expected, found } => {
                write!(
                    f,
                    "wrong root element: expected `{expected}`, found `{found}`"
                )
            }
            Self::Decode(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for XmlError {}

/// Shortens client-supplied text for inclusion in an error message.
///
/// Exists so that error messages echoing input (e.g. "`Bogus` is not one of
/// ...") stay short even when the offending value is huge. Values longer than
/// 64 characters are cut and end with `…`.
pub fn quote_input(s: &str) -> Cow<'_, str> {
    const MAX_CHARS: usize = 64;
    match s.char_indices().nth(MAX_CHARS) {
        None => Cow::Borrowed(s),
        Some((cut, _)) => Cow::Owned(format!("{}…", &s[..cut])),
    }
}
