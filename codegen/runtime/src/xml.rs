//! Safe XML reading and writing for the generated Chat API types.
//!
//! XML request bodies are untrusted input, so parsing is done by a small,
//! strict streaming parser built on `quick_xml::reader::NsReader` that:
//!
//! * accepts UTF-8 only,
//! * refuses any DOCTYPE (no DTDs, hence no entity expansion attacks),
//! * accepts only the five predefined entities and numeric character
//!   references,
//! * enforces [`XmlLimits`] while streaming, so hostile documents are rejected
//!   before they cost much memory or time.
//!
//! The parsed [`Element`] tree is then decoded by generated code through the
//! [`XmlType`] / [`XmlLeaf`] traits and the `Element` helper methods, which
//! produce error messages meant to be returned to API clients verbatim.
//! Documents are produced with [`XmlWriter`], which always escapes text and
//! attribute values and never emits characters that are illegal in XML 1.0.

use std::borrow::Cow;
use std::fmt;

use quick_xml::XmlVersion;
use quick_xml::escape::EscapeError;
use quick_xml::events::attributes::AttrError;
use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

/// Limits applied while parsing (all counted over the whole document).
///
/// They exist so that a hostile or broken client cannot make the server spend
/// unbounded memory or CPU on one request body. Total memory use is in any case
/// proportional to the input size, which the HTTP layer bounds.
#[derive(Clone, Debug)]
pub struct XmlLimits {
    /// Maximum element nesting depth; the root element is at depth 1.
    pub max_depth: usize,
    /// Maximum number of elements in the whole document.
    pub max_elements: usize,
    /// Maximum number of attributes (namespace declarations included) on one element.
    pub max_attributes_per_element: usize,
    /// Maximum size in bytes (after unescaping) of the text of one element and
    /// of one attribute value.
    pub max_text_bytes: usize,
}

impl Default for XmlLimits {
    /// Limits generous for any Chat API document yet small enough to be safe.
    fn default() -> Self {
        Self {
            max_depth: 32,
            max_elements: 10_000,
            max_attributes_per_element: 32,
            max_text_bytes: 65_536,
        }
    }
}

/// A parsed element: namespace-resolved name, attributes (xmlns declarations
/// excluded), child elements in order, and concatenated text (text + CDATA,
/// unescaped, not trimmed).
///
/// This is the intermediate tree that generated `XmlType::read` impls decode;
/// it keeps only what the Chat API XML binding needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Element {
    /// Namespace URI of the element, `None` when the name is unqualified and
    /// no default namespace is in scope.
    pub namespace: Option<String>,
    /// Local name (without prefix).
    pub name: String,
    /// Attributes as (local name, unescaped value), in document order.
    pub attributes: Vec<(String, String)>,
    /// Child elements in document order.
    pub children: Vec<Element>,
    /// All direct text and CDATA content, unescaped and concatenated.
    pub text: String,
}

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

/// Whether `c` is a character allowed in an XML 1.0 document.
fn is_xml_char(c: char) -> bool {
    // Surrogates cannot occur in a Rust `char`.
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Resolves the five entities predefined by XML.
fn predefined_entity(name: &str) -> Option<&'static str> {
    match name {
        "lt" => Some("<"),
        "gt" => Some(">"),
        "amp" => Some("&"),
        "quot" => Some("\""),
        "apos" => Some("'"),
        _ => None,
    }
}

/// The UTF-8 byte order mark, accepted and skipped at the start of input.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Parses an untrusted XML document into an [`Element`] tree.
///
/// This is the only entry point for XML input: it enforces `limits`, refuses
/// DOCTYPE and non-predefined entities, resolves namespaces and checks
/// well-formedness (exactly one root, balanced tags, no stray content).
pub fn parse_document(input: &[u8], limits: &XmlLimits) -> Result<Element, XmlError> {
    let (offset, body) = match input.strip_prefix(UTF8_BOM) {
        Some(rest) => (UTF8_BOM.len(), rest),
        None => (0, input),
    };
    let text = std::str::from_utf8(body).map_err(|e| {
        XmlError::Syntax(format!(
            "document is not valid UTF-8 (invalid byte sequence at byte {}); only UTF-8 is accepted",
            e.valid_up_to() + offset
        ))
    })?;
    let mut reader = NsReader::from_str(text);
    let config = reader.config_mut();
    config.check_end_names = true;
    config.check_comments = true;
    config.allow_dangling_amp = false;
    config.allow_unmatched_ends = false;
    config.expand_empty_elements = false;
    config.trim_text(false);
    Parser {
        reader,
        limits,
        offset,
        stack: Vec::new(),
        root: None,
        elements: 0,
    }
    .run()
}

/// Streaming state of [`parse_document`].
struct Parser<'i, 'l> {
    /// Namespace-resolving event source over the (UTF-8 checked) input.
    reader: NsReader<&'i [u8]>,
    /// Limits to enforce.
    limits: &'l XmlLimits,
    /// Bytes stripped before the reader's input (BOM), for error positions.
    offset: usize,
    /// Open elements, innermost last.
    stack: Vec<Element>,
    /// The completed root element.
    root: Option<Element>,
    /// Elements seen so far.
    elements: usize,
}

impl<'i> Parser<'i, '_> {
    /// Consumes all events and returns the root element.
    fn run(mut self) -> Result<Element, XmlError> {
        let mut first = true;
        loop {
            let event = match self.reader.read_event() {
                Ok(event) => event,
                Err(err) => return Err(self.reader_error(err)),
            };
            match event {
                Event::Decl(decl) => {
                    if !first {
                        return Err(XmlError::Syntax(
                            "the XML declaration must be at the very start of the document"
                                .to_owned(),
                        ));
                    }
                    if let Some(Ok(encoding)) = decl.encoding()
                        && !encoding.eq_ignore_ascii_case("UTF-8")
                    {
                        return Err(XmlError::Syntax(format!(
                            "the document declares encoding `{}`; only UTF-8 is accepted",
                            quote_input(&encoding)
                        )));
                    }
                }
                // Refused before anything inside or after it is interpreted.
                Event::DocType(_) => return Err(XmlError::Doctype),
                Event::Comment(_) | Event::PI(_) => {}
                Event::Start(start) => {
                    let element = self.open(&start)?;
                    self.stack.push(element);
                }
                Event::Empty(start) => {
                    let element = self.open(&start)?;
                    self.close(element)?;
                }
                Event::End(end) => match self.stack.pop() {
                    Some(element) => self.close(element)?,
                    None => {
                        return Err(XmlError::Syntax(format!(
                            "closing tag `</{}>` has no matching opening tag",
                            quote_input(end.name().as_ref())
                        )));
                    }
                },
                Event::Text(text) => self.text(&text.xml10_content())?,
                Event::CData(cdata) => {
                    if self.stack.is_empty() {
                        return Err(XmlError::Syntax(
                            "CDATA section outside the root element".to_owned(),
                        ));
                    }
                    self.text(&cdata.xml10_content())?;
                }
                Event::GeneralRef(reference) => {
                    let c = resolve_reference(&reference)?;
                    if self.stack.is_empty() {
                        return Err(XmlError::Syntax(
                            "character or entity reference outside the root element".to_owned(),
                        ));
                    }
                    self.text(c.encode_utf8(&mut [0u8; 4]))?;
                }
                Event::Eof => break,
            }
            first = false;
        }
        if let Some(open) = self.stack.last() {
            return Err(XmlError::Syntax(format!(
                "unexpected end of document: element `{}` is not closed",
                open.name
            )));
        }
        self.root
            .ok_or_else(|| XmlError::Syntax("the document has no root element".to_owned()))
    }

    /// Converts a quick-xml error into an [`XmlError`] with its byte position.
    fn reader_error(&self, err: quick_xml::Error) -> XmlError {
        match err {
            quick_xml::Error::Escape(EscapeError::UnrecognizedEntity(_, name)) => {
                XmlError::Entity(quote_input(&name).into_owned())
            }
            other => {
                let position = usize::try_from(self.reader.error_position())
                    .unwrap_or(usize::MAX)
                    .saturating_add(self.offset);
                XmlError::Syntax(format!("{other} (at byte {position})"))
            }
        }
    }

    /// Builds an element from a start tag, enforcing depth, count and attribute limits.
    fn open(&mut self, start: &BytesStart<'i>) -> Result<Element, XmlError> {
        let limits = self.limits;
        let depth = self.stack.len() + 1;
        if depth > limits.max_depth {
            return Err(XmlError::LimitExceeded(format!(
                "elements are nested deeper than the maximum depth of {}",
                limits.max_depth
            )));
        }
        self.elements += 1;
        if self.elements > limits.max_elements {
            return Err(XmlError::LimitExceeded(format!(
                "the document has more than the maximum of {} elements",
                limits.max_elements
            )));
        }
        let qname = start.name();
        if self.stack.is_empty() && self.root.is_some() {
            return Err(XmlError::Syntax(format!(
                "element `{}` after the root element; a document must have exactly one root element",
                quote_input(qname.as_ref())
            )));
        }

        let resolver = self.reader.resolver();
        let (namespace, local) = resolver.resolve_element(qname);
        let namespace = match namespace {
            ResolveResult::Bound(ns) => Some(ns.into_inner().to_owned()),
            ResolveResult::Unbound => None,
            ResolveResult::Unknown(prefix) => {
                return Err(XmlError::Syntax(format!(
                    "element `{}` uses the undeclared namespace prefix `{}`",
                    quote_input(qname.as_ref()),
                    quote_input(&prefix)
                )));
            }
        };
        let name = local.into_inner().to_owned();

        let mut attributes = Vec::new();
        let mut seen: Vec<(Option<&str>, &str)> = Vec::new();
        for (count, attribute) in start.attributes().enumerate() {
            if count >= limits.max_attributes_per_element {
                return Err(XmlError::LimitExceeded(format!(
                    "element `{name}` has more than the maximum of {} attributes",
                    limits.max_attributes_per_element
                )));
            }
            let attribute = attribute.map_err(|err| match err {
                AttrError::Duplicated(..) => {
                    XmlError::Syntax(format!("element `{name}` has a duplicated attribute"))
                }
                other => XmlError::Syntax(format!("in the start tag of element `{name}`: {other}")),
            })?;
            let key = attribute.key;
            if key.as_namespace_binding().is_some() {
                continue;
            }
            let (attr_ns, attr_local) = resolver.resolve_attribute(key);
            let attr_ns = match attr_ns {
                ResolveResult::Bound(ns) => Some(ns.into_inner()),
                ResolveResult::Unbound => None,
                ResolveResult::Unknown(prefix) => {
                    return Err(XmlError::Syntax(format!(
                        "attribute `{}` of element `{name}` uses the undeclared namespace prefix `{}`",
                        quote_input(key.as_ref()),
                        quote_input(&prefix)
                    )));
                }
            };
            let attr_local = attr_local.into_inner();
            if seen.contains(&(attr_ns, attr_local)) {
                return Err(XmlError::Syntax(format!(
                    "element `{name}` has a duplicated attribute `{}`",
                    quote_input(key.as_ref())
                )));
            }
            seen.push((attr_ns, attr_local));

            let value = attribute
                .normalized_value_with(XmlVersion::Implicit1_0, 1, predefined_entity)
                .map_err(|err| match err {
                    quick_xml::Error::Escape(EscapeError::UnrecognizedEntity(_, entity)) => {
                        XmlError::Entity(quote_input(&entity).into_owned())
                    }
                    other => XmlError::Syntax(format!(
                        "attribute `{}` of element `{name}`: {other}",
                        quote_input(key.as_ref())
                    )),
                })?;
            if value.len() > limits.max_text_bytes {
                return Err(XmlError::LimitExceeded(format!(
                    "attribute `{}` of element `{name}` is longer than the maximum of {} bytes",
                    quote_input(key.as_ref()),
                    limits.max_text_bytes
                )));
            }
            if let Some(c) = value.chars().find(|c| !is_xml_char(*c)) {
                return Err(XmlError::Syntax(format!(
                    "attribute `{}` of element `{name}` contains the character U+{:04X}, which is not allowed in XML 1.0",
                    quote_input(key.as_ref()),
                    u32::from(c)
                )));
            }
            attributes.push((attr_local.to_owned(), value.into_owned()));
        }

        Ok(Element {
            namespace,
            name,
            attributes,
            children: Vec::new(),
            text: String::new(),
        })
    }

    /// Attaches a completed element to its parent, or makes it the root.
    fn close(&mut self, element: Element) -> Result<(), XmlError> {
        match self.stack.last_mut() {
            Some(parent) => parent.children.push(element),
            None if self.root.is_some() => {
                return Err(XmlError::Syntax(
                    "a document must have exactly one root element".to_owned(),
                ));
            }
            None => self.root = Some(element),
        }
        Ok(())
    }

    /// Appends character data to the current element (or checks it is
    /// whitespace when outside the root).
    fn text(&mut self, s: &str) -> Result<(), XmlError> {
        let max = self.limits.max_text_bytes;
        let Some(current) = self.stack.last_mut() else {
            if s.chars().all(|c| matches!(c, ' ' | '\t' | '\n' | '\r')) {
                return Ok(());
            }
            let what = if self.root.is_some() {
                "after"
            } else {
                "before"
            };
            return Err(XmlError::Syntax(format!(
                "text `{}` {what} the root element",
                quote_input(s.trim())
            )));
        };
        if current.text.len().saturating_add(s.len()) > max {
            return Err(XmlError::LimitExceeded(format!(
                "the text of element `{}` is longer than the maximum of {max} bytes",
                current.name
            )));
        }
        if let Some(c) = s.chars().find(|c| !is_xml_char(*c)) {
            return Err(XmlError::Syntax(format!(
                "element `{}` contains the character U+{:04X}, which is not allowed in XML 1.0",
                current.name,
                u32::from(c)
            )));
        }
        current.text.push_str(s);
        Ok(())
    }
}

/// Resolves a reference in text: predefined entity or character reference.
fn resolve_reference(reference: &BytesRef<'_>) -> Result<char, XmlError> {
    let name: &str = reference;
    if reference.is_char_ref() {
        return match reference.resolve_char_ref() {
            Ok(Some(c)) if is_xml_char(c) => Ok(c),
            _ => Err(XmlError::Syntax(format!(
                "character reference `&{};` is not a valid reference to a character allowed in XML 1.0",
                quote_input(name)
            ))),
        };
    }
    match predefined_entity(name).and_then(|s| s.chars().next()) {
        Some(c) => Ok(c),
        None => Err(XmlError::Entity(quote_input(name).into_owned())),
    }
}

impl Element {
    /// Child elements with the given local name, in document order.
    ///
    /// Matching is by local name only (the Chat schemas use unqualified
    /// children), so clients may qualify children or not.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// Value of the attribute with the given local name, if present.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The single child called `name`, or an error if it appears more than once.
    fn single_child<'a>(&'a self, name: &str) -> Result<Option<&'a Element>, XmlError> {
        let mut matches = self.children.iter().filter(|c| c.name == name);
        let first = matches.next();
        if first.is_some() && matches.next().is_some() {
            return Err(XmlError::Decode(format!(
                "element `{name}` appears more than once in `{}`",
                self.name
            )));
        }
        Ok(first)
    }

    /// Error for a required child element that is absent.
    fn missing_element(&self, name: &str) -> XmlError {
        XmlError::Decode(format!("missing element `{name}` in `{}`", self.name))
    }

    /// Decodes the text of a leaf child, adding context to the error.
    fn decode_leaf<T: XmlLeaf>(&self, child: &Element) -> Result<T, XmlError> {
        T::from_xml_text(&child.text).map_err(|msg| {
            XmlError::Decode(format!(
                "element `{}` in `{}`: {msg}",
                child.name, self.name
            ))
        })
    }

    /// Decodes a leaf child that must appear exactly once.
    pub fn required_leaf<T: XmlLeaf>(&self, name: &str) -> Result<T, XmlError> {
        match self.single_child(name)? {
            Some(child) => self.decode_leaf(child),
            None => Err(self.missing_element(name)),
        }
    }

    /// Decodes a leaf child that may appear at most once.
    pub fn optional_leaf<T: XmlLeaf>(&self, name: &str) -> Result<Option<T>, XmlError> {
        self.single_child(name)?
            .map(|child| self.decode_leaf(child))
            .transpose()
    }

    /// Decodes every leaf child called `name` (an XSD `maxOccurs > 1` element).
    pub fn leaf_list<T: XmlLeaf>(&self, name: &str) -> Result<Vec<T>, XmlError> {
        self.children_named(name)
            .map(|child| self.decode_leaf(child))
            .collect()
    }

    /// Decodes a complex child that must appear exactly once.
    pub fn required_child<T: XmlType>(&self, name: &str) -> Result<T, XmlError> {
        match self.single_child(name)? {
            Some(child) => T::read(child),
            None => Err(self.missing_element(name)),
        }
    }

    /// Decodes a complex child that may appear at most once.
    pub fn optional_child<T: XmlType>(&self, name: &str) -> Result<Option<T>, XmlError> {
        self.single_child(name)?.map(T::read).transpose()
    }

    /// Decodes every complex child called `name`.
    pub fn child_list<T: XmlType>(&self, name: &str) -> Result<Vec<T>, XmlError> {
        self.children_named(name).map(T::read).collect()
    }

    /// Decodes an attribute that must be present.
    pub fn required_attribute<T: XmlLeaf>(&self, name: &str) -> Result<T, XmlError> {
        match self.optional_attribute(name)? {
            Some(value) => Ok(value),
            None => Err(XmlError::Decode(format!(
                "missing attribute `{name}` on `{}`",
                self.name
            ))),
        }
    }

    /// Decodes an attribute that may be absent.
    pub fn optional_attribute<T: XmlLeaf>(&self, name: &str) -> Result<Option<T>, XmlError> {
        self.attribute(name)
            .map(|value| {
                T::from_xml_text(value).map_err(|msg| {
                    XmlError::Decode(format!("attribute `{name}` on `{}`: {msg}", self.name))
                })
            })
            .transpose()
    }
}

/// A scalar that is the text content of an element (or an attribute value).
///
/// Generated code implements it for string enums; this module implements it
/// for the primitive types used by the Chat API schemas. `from_xml_text`
/// returns a message without context; the `Element` helpers add which element
/// or attribute it concerns.
pub trait XmlLeaf: Sized {
    /// Text to write for this value (escaping is done by the writer).
    fn to_xml_text(&self) -> Cow<'_, str>;
    /// Parses the element text or attribute value; errors describe the value.
    fn from_xml_text(s: &str) -> Result<Self, String>;
}

/// Anything whose text can be written as a leaf: every [`XmlLeaf`] plus `str`.
///
/// Exists so that [`XmlWriter::leaf`] accepts both `&self.field` and string
/// literals without an allocation.
pub trait LeafText {
    /// The text to write (unescaped).
    fn leaf_text(&self) -> Cow<'_, str>;
}

impl<T: XmlLeaf> LeafText for T {
    fn leaf_text(&self) -> Cow<'_, str> {
        self.to_xml_text()
    }
}

impl LeafText for str {
    fn leaf_text(&self) -> Cow<'_, str> {
        Cow::Borrowed(self)
    }
}

impl XmlLeaf for String {
    fn to_xml_text(&self) -> Cow<'_, str> {
        Cow::Borrowed(self)
    }

    fn from_xml_text(s: &str) -> Result<Self, String> {
        Ok(s.to_owned())
    }
}

impl XmlLeaf for bool {
    fn to_xml_text(&self) -> Cow<'_, str> {
        Cow::Borrowed(if *self { "true" } else { "false" })
    }

    fn from_xml_text(s: &str) -> Result<Self, String> {
        match s.trim() {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            other => Err(format!(
                "`{}` is not a boolean (expected true, false, 1 or 0)",
                quote_input(other)
            )),
        }
    }
}

/// Implements [`XmlLeaf`] for integer types (trimmed, decimal).
macro_rules! integer_leaf {
    ($($t:ty),*) => {$(
        impl XmlLeaf for $t {
            fn to_xml_text(&self) -> Cow<'_, str> {
                Cow::Owned(self.to_string())
            }

            fn from_xml_text(s: &str) -> Result<Self, String> {
                let t = s.trim();
                t.parse::<$t>().map_err(|_| {
                    format!(
                        "`{}` is not an integer between {} and {}",
                        quote_input(t),
                        <$t>::MIN,
                        <$t>::MAX
                    )
                })
            }
        }
    )*};
}

integer_leaf!(i32, i64, u32, u64);

/// Implements [`XmlLeaf`] for floating-point types (XSD lexical forms).
macro_rules! float_leaf {
    ($($t:ty),*) => {$(
        impl XmlLeaf for $t {
            /// Writes the XSD lexical form (`INF`, `-INF`, `NaN` for non-finite values).
            fn to_xml_text(&self) -> Cow<'_, str> {
                if self.is_nan() {
                    Cow::Borrowed("NaN")
                } else if self.is_infinite() {
                    Cow::Borrowed(if *self > 0.0 { "INF" } else { "-INF" })
                } else {
                    Cow::Owned(self.to_string())
                }
            }

            /// Accepts the XSD `double`/`float` lexical forms.
            fn from_xml_text(s: &str) -> Result<Self, String> {
                let t = s.trim();
                match t {
                    "INF" | "+INF" => return Ok(<$t>::INFINITY),
                    "-INF" => return Ok(<$t>::NEG_INFINITY),
                    "NaN" => return Ok(<$t>::NAN),
                    _ => {}
                }
                let plausible = !t.is_empty()
                    && t.bytes()
                        .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'));
                plausible
                    .then(|| t.parse::<$t>().ok())
                    .flatten()
                    .ok_or_else(|| format!("`{}` is not a number", quote_input(t)))
            }
        }
    )*};
}

float_leaf!(f32, f64);

/// A complex type (XSD complexType): attributes then children in XSD sequence order.
///
/// Generated code implements it for every object type of the API so that
/// values can be written with [`XmlWriter`] and read from an [`Element`].
pub trait XmlType: Sized {
    /// Writes the attributes of this value (the start tag is still open).
    fn write_attributes(&self, _w: &mut XmlWriter) {}
    /// Writes the child elements (and/or text) of this value.
    fn write_children(&self, w: &mut XmlWriter);
    /// Decodes a value from its element; errors should be [`XmlError::Decode`]. The generated
    /// impls read the structure and then call the type's `Validate::validate` (list minimums,
    /// `x-oma-choice`, `maxLength`): one copy of the rules, the same for both faces.
    fn read(e: &Element) -> Result<Self, XmlError>;
}

/// A type that is a document root: namespace-qualified name.
///
/// Used by [`to_document`] / [`from_document`] to write and check the root element.
pub trait XmlRoot: XmlType {
    /// Local name of the root element.
    const NAME: &'static str;
    /// Namespace URI of the root element.
    const NAMESPACE: &'static str;
    /// Prefix used when writing the root element (empty for a default namespace).
    const PREFIX: &'static str;
}

/// Builds an XML document into a String, escaping text and attribute values.
///
/// Exists so generated code never concatenates XML by hand: every value goes
/// through escaping and characters illegal in XML 1.0 are replaced by U+FFFD.
/// Element and attribute names are written as given; they come from the spec,
/// never from input.
#[derive(Debug, Default)]
pub struct XmlWriter {
    /// The document built so far.
    buf: String,
}

impl XmlWriter {
    /// Creates a writer with an empty buffer (no XML declaration).
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates a writer whose buffer can hold `n` bytes without reallocating.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            buf: String::with_capacity(n),
        }
    }

    /// Writes `<?xml version="1.0" encoding="UTF-8"?>`.
    pub fn declaration(&mut self) {
        self.buf
            .push_str(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    }

    /// Writes `<prefix:name xmlns:prefix="namespace"`, leaving the start tag
    /// open for attributes. An empty prefix declares a default namespace.
    pub fn start_root(&mut self, prefix: &str, name: &str, namespace: &str) {
        self.buf.push('<');
        self.push_qualified(prefix, name);
        if prefix.is_empty() {
            self.buf.push_str(" xmlns");
        } else {
            self.buf.push_str(" xmlns:");
            self.buf.push_str(prefix);
        }
        self.buf.push_str("=\"");
        escape_into(&mut self.buf, namespace, true);
        self.buf.push('"');
    }

    /// Writes `<name`, leaving the start tag open for attributes.
    pub fn start(&mut self, name: &str) {
        self.buf.push('<');
        self.buf.push_str(name);
    }

    /// Writes ` name="value"` with the value escaped.
    pub fn attribute(&mut self, name: &str, value: &str) {
        self.buf.push(' ');
        self.buf.push_str(name);
        self.buf.push_str("=\"");
        escape_into(&mut self.buf, value, true);
        self.buf.push('"');
    }

    /// Writes an attribute whose value is a leaf type (e.g. an enum or number).
    pub fn attribute_leaf<T: LeafText + ?Sized>(&mut self, name: &str, value: &T) {
        self.attribute(name, &value.leaf_text());
    }

    /// Closes the open start tag with `>`.
    pub fn close_start(&mut self) {
        self.buf.push('>');
    }

    /// Writes escaped character data.
    pub fn text(&mut self, s: &str) {
        escape_into(&mut self.buf, s, false);
    }

    /// Writes `</name>`.
    pub fn end(&mut self, name: &str) {
        self.buf.push_str("</");
        self.buf.push_str(name);
        self.buf.push('>');
    }

    /// Writes `<name>text</name>` for a leaf value (or a `str`).
    pub fn leaf<T: LeafText + ?Sized>(&mut self, name: &str, value: &T) {
        self.start(name);
        self.close_start();
        self.text(&value.leaf_text());
        self.end(name);
    }

    /// Writes a complex value as element `name`: attributes, then children.
    pub fn element<T: XmlType>(&mut self, name: &str, value: &T) {
        self.start(name);
        value.write_attributes(self);
        self.close_start();
        value.write_children(self);
        self.end(name);
    }

    /// Returns the document built so far.
    pub fn finish(self) -> String {
        self.buf
    }

    /// Writes `prefix:name`, or `name` alone when the prefix is empty.
    fn push_qualified(&mut self, prefix: &str, name: &str) {
        if !prefix.is_empty() {
            self.buf.push_str(prefix);
            self.buf.push(':');
        }
        self.buf.push_str(name);
    }
}

/// Appends `s` escaped for text content or (when `attribute`) for a
/// double-quoted attribute value; characters illegal in XML 1.0 become U+FFFD.
fn escape_into(out: &mut String, s: &str, attribute: bool) {
    out.reserve(s.len());
    let mut last = 0;
    for (i, c) in s.char_indices() {
        let replacement = match c {
            '&' => "&amp;",
            '<' => "&lt;",
            '>' => "&gt;",
            '"' if attribute => "&quot;",
            // Escaped so that they survive EOL and attribute-value normalization.
            '\r' => "&#13;",
            '\n' if attribute => "&#10;",
            '\t' if attribute => "&#9;",
            c if !is_xml_char(c) => "\u{FFFD}",
            _ => continue,
        };
        out.push_str(&s[last..i]);
        out.push_str(replacement);
        last = i + c.len_utf8();
    }
    out.push_str(&s[last..]);
}

/// Serializes a root value as a complete UTF-8 XML document.
///
/// Writes the declaration, the root with `T::PREFIX` bound to `T::NAMESPACE`,
/// its attributes and children; children are unqualified.
pub fn to_document<T: XmlRoot>(value: &T) -> String {
    let mut w = XmlWriter::with_capacity(512);
    w.declaration();
    w.start_root(T::PREFIX, T::NAME, T::NAMESPACE);
    value.write_attributes(&mut w);
    w.close_start();
    value.write_children(&mut w);
    w.buf.push_str("</");
    w.push_qualified(T::PREFIX, T::NAME);
    w.buf.push('>');
    w.finish()
}

/// Parses an untrusted document and decodes it as `T`.
///
/// Checks that the root element is `{T::NAMESPACE}T::NAME` (any prefix or a
/// default namespace is accepted) before decoding.
pub fn from_document<T: XmlRoot>(input: &[u8], limits: &XmlLimits) -> Result<T, XmlError> {
    let root = parse_document(input, limits)?;
    if root.namespace.as_deref() != Some(T::NAMESPACE) || root.name != T::NAME {
        let found = match &root.namespace {
            Some(ns) => format!("{{{}}}{}", quote_input(ns), quote_input(&root.name)),
            None => quote_input(&root.name).into_owned(),
        };
        return Err(XmlError::WrongRoot {
            expected: format!("{{{}}}{}", T::NAMESPACE, T::NAME),
            found,
        });
    }
    T::read(&root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    const NS: &str = "urn:oma:xml:rest:netapi:chat:1";

    #[derive(Debug, Clone, PartialEq)]
    struct Link {
        rel: String,
        href: String,
    }

    impl XmlType for Link {
        fn write_attributes(&self, w: &mut XmlWriter) {
            w.attribute("rel", &self.rel);
            w.attribute("href", &self.href);
        }

        fn write_children(&self, _w: &mut XmlWriter) {}

        fn read(e: &Element) -> Result<Self, XmlError> {
            Ok(Self {
                rel: e.required_attribute("rel")?,
                href: e.required_attribute("href")?,
            })
        }
    }

    #[derive(Debug, Clone, PartialEq)]
    struct Msg {
        text: String,
        report: Vec<String>,
        link: Option<Link>,
        n: Option<u32>,
    }

    impl XmlType for Msg {
        fn write_children(&self, w: &mut XmlWriter) {
            w.leaf("text", &self.text);
            for r in &self.report {
                w.leaf("reportRequest", r);
            }
            if let Some(link) = &self.link {
                w.element("link", link);
            }
            if let Some(n) = &self.n {
                w.leaf("n", n);
            }
        }

        fn read(e: &Element) -> Result<Self, XmlError> {
            Ok(Self {
                text: e.required_leaf("text")?,
                report: e.leaf_list("reportRequest")?,
                link: e.optional_child("link")?,
                n: e.optional_leaf("n")?,
            })
        }
    }

    impl XmlRoot for Msg {
        const NAME: &'static str = "chatMessage";
        const NAMESPACE: &'static str = NS;
        const PREFIX: &'static str = "chat";
    }

    fn limits() -> XmlLimits {
        XmlLimits::default()
    }

    fn read(doc: &str) -> Result<Msg, XmlError> {
        from_document::<Msg>(doc.as_bytes(), &limits())
    }

    fn decode_msg(err: XmlError) -> String {
        match err {
            XmlError::Decode(m) => m,
            other => panic!("expected Decode, got {other:?}"),
        }
    }

    #[test]
    fn round_trip_with_escaping() {
        let msg = Msg {
            text: "a & b < c > d \" e ' f\u{1}g\r\nh\tü".to_owned(),
            report: vec!["Sent".to_owned(), "Displayed".to_owned()],
            link: Some(Link {
                rel: "x\"y'&<>\n\tz".to_owned(),
                href: "http://h/p?a=1&b=2".to_owned(),
            }),
            n: Some(42),
        };
        let doc = to_document(&msg);
        assert!(doc.starts_with(r#"<?xml version="1.0" encoding="UTF-8"?><chat:chatMessage xmlns:chat="urn:oma:xml:rest:netapi:chat:1">"#));
        assert!(doc.ends_with("</chat:chatMessage>"));
        assert!(!doc.contains('\u{1}'));
        let back = read(&doc).expect("round trip");
        let mut expected = msg.clone();
        expected.text = "a & b < c > d \" e ' f\u{FFFD}g\r\nh\tü".to_owned();
        assert_eq!(back, expected);

        let empty = Msg {
            text: String::new(),
            report: vec![],
            link: None,
            n: None,
        };
        assert_eq!(read(&to_document(&empty)).expect("empty"), empty);
    }

    #[test]
    fn writer_leaf_accepts_str_and_numbers() {
        let mut w = XmlWriter::new();
        w.leaf("a", "x<y");
        w.leaf("b", &true);
        w.leaf("c", &-1.5f64);
        w.leaf("d", &f64::INFINITY);
        w.attribute_leaf("e", &7u64);
        assert_eq!(
            w.finish(),
            "<a>x&lt;y</a><b>true</b><c>-1.5</c><d>INF</d> e=\"7\""
        );
    }

    #[test]
    fn wrong_root() {
        let err = read(r#"<chat:chatMessage xmlns:chat="urn:other"><text/></chat:chatMessage>"#)
            .unwrap_err();
        assert_eq!(
            err,
            XmlError::WrongRoot {
                expected: format!("{{{NS}}}chatMessage"),
                found: "{urn:other}chatMessage".to_owned()
            }
        );
        let err = read(&format!(r#"<c:other xmlns:c="{NS}"/>"#)).unwrap_err();
        assert!(
            matches!(err, XmlError::WrongRoot { ref found, .. } if *found == format!("{{{NS}}}other"))
        );
        let err = read("<chatMessage><text/></chatMessage>").unwrap_err();
        assert!(matches!(err, XmlError::WrongRoot { ref found, .. } if found == "chatMessage"));
        assert!(err.to_string().contains("urn:oma:xml:rest:netapi:chat:1"));
    }

    #[test]
    fn doctype_refused() {
        let err = read(&format!(
            r#"<?xml version="1.0"?><!DOCTYPE chatMessage><chatMessage xmlns="{NS}"><text>x</text></chatMessage>"#
        ))
        .unwrap_err();
        assert_eq!(err, XmlError::Doctype);
        assert_eq!(err.to_string(), "DOCTYPE declarations are not accepted");
    }

    #[test]
    fn billion_laughs_refused_quickly() {
        let mut doc =
            String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n<!ENTITY lol \"lol\">\n");
        for i in 1..10 {
            doc.push_str(&format!(
                "<!ENTITY lol{i} \"{}\">\n",
                format!("&lol{};", i - 1)
                    .repeat(10)
                    .replace("&lol0;", "&lol;")
            ));
        }
        doc.push_str("]>\n<lolz>&lol9;</lolz>");
        let start = Instant::now();
        assert_eq!(read(&doc).unwrap_err(), XmlError::Doctype);
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn undefined_entity_refused() {
        let err = read(&format!(
            r#"<chatMessage xmlns="{NS}"><text>a &foo; b</text></chatMessage>"#
        ))
        .unwrap_err();
        assert_eq!(err, XmlError::Entity("foo".to_owned()));
        assert!(err.to_string().contains("`&foo;`"));
        let err = read(&format!(
            r#"<chatMessage xmlns="{NS}" a="&bar;"><text/></chatMessage>"#
        ))
        .unwrap_err();
        assert_eq!(err, XmlError::Entity("bar".to_owned()));
    }

    #[test]
    fn predefined_and_char_refs_resolved() {
        let msg = read(&format!(
            r#"<chatMessage xmlns="{NS}"><text>&amp;&lt;&gt;&quot;&apos;&#65;&#x42;<![CDATA[<&>]]></text></chatMessage>"#
        ))
        .expect("valid");
        assert_eq!(msg.text, "&<>\"'AB<&>");
        let err = read(&format!(
            r#"<chatMessage xmlns="{NS}"><text>&#1;</text></chatMessage>"#
        ))
        .unwrap_err();
        assert!(matches!(err, XmlError::Syntax(_)), "{err:?}");
    }

    #[test]
    fn deep_nesting_refused_fast() {
        let doc = format!("{}{}", "<a>".repeat(10_000), "</a>".repeat(10_000));
        let start = Instant::now();
        let err = parse_document(doc.as_bytes(), &limits()).unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(1));
        assert_eq!(
            err,
            XmlError::LimitExceeded(
                "elements are nested deeper than the maximum depth of 32".to_owned()
            )
        );
    }

    #[test]
    fn too_many_elements() {
        let doc = format!("<r>{}</r>", "<a/>".repeat(10_000));
        let err = parse_document(doc.as_bytes(), &limits()).unwrap_err();
        assert!(
            matches!(err, XmlError::LimitExceeded(ref m) if m.contains("10000")),
            "{err:?}"
        );
        let small = XmlLimits {
            max_elements: 3,
            ..limits()
        };
        assert!(parse_document(b"<r><a/><b/></r>", &small).is_ok());
        assert!(matches!(
            parse_document(b"<r><a/><b/><c/></r>", &small),
            Err(XmlError::LimitExceeded(_))
        ));
    }

    #[test]
    fn too_many_attributes() {
        let attrs: String = (0..33).map(|i| format!(" a{i}=\"v\"")).collect();
        let doc = format!("<r{attrs}/>");
        assert!(matches!(
            parse_document(doc.as_bytes(), &limits()),
            Err(XmlError::LimitExceeded(_))
        ));
    }

    #[test]
    fn huge_attribute_and_text_refused() {
        let doc = format!(r#"<r a="{}"/>"#, "x".repeat(1 << 20));
        let err = parse_document(doc.as_bytes(), &limits()).unwrap_err();
        assert!(
            matches!(err, XmlError::LimitExceeded(ref m) if m.contains("65536")),
            "{err:?}"
        );
        let doc = format!("<r>{}</r>", "x".repeat(65_537));
        assert!(matches!(
            parse_document(doc.as_bytes(), &limits()),
            Err(XmlError::LimitExceeded(_))
        ));
        let doc = format!("<r>{}</r>", "x".repeat(65_536));
        assert!(parse_document(doc.as_bytes(), &limits()).is_ok());
    }

    #[test]
    fn missing_and_duplicated_required_element() {
        let err = read(&format!(
            r#"<chatMessage xmlns="{NS}"><n>1</n></chatMessage>"#
        ))
        .unwrap_err();
        assert_eq!(decode_msg(err), "missing element `text` in `chatMessage`");
        let err = read(&format!(
            r#"<chatMessage xmlns="{NS}"><text>a</text><text>b</text></chatMessage>"#
        ))
        .unwrap_err();
        assert_eq!(
            decode_msg(err),
            "element `text` appears more than once in `chatMessage`"
        );
        let err = read(&format!(
            r#"<chatMessage xmlns="{NS}"><text>a</text><link rel="r"/></chatMessage>"#
        ))
        .unwrap_err();
        assert_eq!(decode_msg(err), "missing attribute `href` on `link`");
    }

    #[test]
    fn bad_scalars() {
        let err = read(&format!(
            r#"<chatMessage xmlns="{NS}"><text>a</text><n>-3</n></chatMessage>"#
        ))
        .unwrap_err();
        assert_eq!(
            decode_msg(err),
            "element `n` in `chatMessage`: `-3` is not an integer between 0 and 4294967295"
        );
        let msg = read(&format!(
            r#"<chatMessage xmlns="{NS}"><text>a</text><n> 7 </n></chatMessage>"#
        ))
        .expect("trimmed");
        assert_eq!(msg.n, Some(7));
        assert_eq!(bool::from_xml_text(" 1 "), Ok(true));
        assert_eq!(bool::from_xml_text("false"), Ok(false));
        assert_eq!(
            bool::from_xml_text("yes"),
            Err("`yes` is not a boolean (expected true, false, 1 or 0)".to_owned())
        );
        assert!(u32::from_xml_text("4294967296").is_err());
        assert!(f64::from_xml_text("inf").is_err());
        assert_eq!(f64::from_xml_text("-INF"), Ok(f64::NEG_INFINITY));
        assert_eq!(f64::from_xml_text("1.5e3"), Ok(1500.0));
        let long = "9".repeat(1000);
        let err = i32::from_xml_text(&long).unwrap_err();
        assert!(err.len() < 200, "{err}");
    }

    #[test]
    fn namespace_forms_accepted() {
        let default_ns = read(&format!(
            r#"<chatMessage xmlns="{NS}"><text>a</text></chatMessage>"#
        ))
        .expect("default namespace");
        let prefixed = read(&format!(
            r#"<x:chatMessage xmlns:x="{NS}"><text>a</text><unknown><deep/></unknown></x:chatMessage>"#
        ))
        .expect("other prefix");
        assert_eq!(default_ns, prefixed);
        let root = parse_document(
            format!(r#"<x:m xmlns:x="{NS}" xmlns:y="urn:y" y:a="1" b="2"><c/><y:d/></x:m>"#)
                .as_bytes(),
            &limits(),
        )
        .expect("parse");
        assert_eq!(root.namespace.as_deref(), Some(NS));
        assert_eq!(
            root.attributes,
            vec![
                ("a".to_owned(), "1".to_owned()),
                ("b".to_owned(), "2".to_owned())
            ]
        );
        assert_eq!(root.children[0].namespace, None);
        assert_eq!(root.children[1].namespace.as_deref(), Some("urn:y"));
        assert!(matches!(
            parse_document(b"<p:a/>", &limits()),
            Err(XmlError::Syntax(_))
        ));
        assert!(matches!(
            parse_document(
                br#"<a xmlns:p="urn:p" xmlns:q="urn:p" p:x="1" q:x="2"/>"#,
                &limits()
            ),
            Err(XmlError::Syntax(_))
        ));
        assert!(matches!(
            parse_document(br#"<a x="1" x="2"/>"#, &limits()),
            Err(XmlError::Syntax(_))
        ));
    }

    #[test]
    fn malformed_documents() {
        let syntax = |doc: &[u8]| {
            let result = parse_document(doc, &limits());
            assert!(
                matches!(result, Err(XmlError::Syntax(_))),
                "{doc:?}: {result:?}"
            );
        };
        syntax(b"<a/>garbage");
        syntax(b"<a/><b/>");
        syntax(b"<a></a></b>");
        syntax(b"<a><b></a>");
        syntax(b"<a>");
        syntax(b"");
        syntax(b"  <!-- only a comment -->  ");
        syntax(b"text<a/>");
        syntax(b"<a>\xff\xfe</a>");
        syntax(b"<a>&</a>");
        syntax(br#"<?xml version="1.0" encoding="ISO-8859-1"?><a/>"#);
        syntax(b"<a>\x01</a>");
        assert!(
            parse_document(
                b"\xEF\xBB\xBF<?xml version=\"1.0\"?>\n<!--c--><a/>\n<?pi x?>\n",
                &limits()
            )
            .is_ok()
        );
        let err = parse_document(b"<a>\xff</a>", &limits()).unwrap_err();
        assert!(err.to_string().contains("UTF-8"), "{err}");
    }

    #[test]
    fn text_is_concatenated_and_untrimmed() {
        let root = parse_document(b"<a> x <!--c--><b/>y&amp;<![CDATA[z]]>\r\n</a>", &limits())
            .expect("parse");
        assert_eq!(root.text, " x y&z\n");
        assert_eq!(root.children.len(), 1);
    }

    #[test]
    fn quote_input_truncates() {
        assert_eq!(quote_input("abc"), "abc");
        let long = "é".repeat(100);
        let q = quote_input(&long);
        assert_eq!(q.chars().count(), 65);
        assert!(q.ends_with('…'));
    }
}
