//! The bounded streaming parser: untrusted bytes in, an [`Element`] tree out.

use crate::media::Charset;
use quick_xml::XmlVersion;
use quick_xml::escape::EscapeError;
use quick_xml::events::attributes::AttrError;
use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::name::{PrefixDeclaration, ResolveResult};
use quick_xml::reader::NsReader;

use std::collections::HashSet;
use std::sync::Arc;

use super::{Element, XSI_NAMESPACE, XmlError, XmlLeaf, is_xml_char, quote_input};

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
    /// of one attribute value (a namespace declaration's is held to 2 KiB, whatever this
    /// says: see `MAX_NAMESPACE_BYTES`).
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

/// The encodings a document may be in, and may declare: UTF-8; UTF-16 with its byte order
/// mark (XML 1.0 §4.3.3 makes both mandatory for every processor), or without one when the
/// HTTP `Content-Type` labels it UTF-16; and ISO-8859-1 and US-ASCII when declared. A
/// `UTF-16` declaration on UTF-8 bytes without a byte order mark or label is read as the
/// UTF-8 it is (.NET's `XmlSerializer` over a `StringWriter` declares `utf-16` whatever it is
/// sent as). Anything else is refused, naming the encoding.
const ENCODINGS: [&str; 6] = [
    "UTF-8",
    "UTF-16",
    "UTF-16LE",
    "UTF-16BE",
    "ISO-8859-1",
    "US-ASCII",
];

/// The document as text: UTF-16 told by its byte order mark; else in the charset the HTTP
/// `Content-Type` named (`http`, which overrides the declaration, RFC 7303 §3.2; for UTF-16
/// without a byte order mark see [`unmarked_utf16_order`]); else UTF-8 (its byte order mark
/// skipped) or the single-byte encoding its declaration names (ISO-8859-1, US-ASCII); and how
/// many bytes were skipped before the text (for error positions in UTF-8 input).
fn decode_text(
    input: &[u8],
    http: Option<Charset>,
) -> Result<(std::borrow::Cow<'_, str>, usize), XmlError> {
    let utf16 = |units: &[u8], order: Utf16Order| {
        if !units.len().is_multiple_of(2) {
            return Err(XmlError::Syntax(
                "the UTF-16 document has an odd number of bytes".to_owned(),
            ));
        }
        let from = match order {
            Utf16Order::Little => u16::from_le_bytes,
            Utf16Order::Big => u16::from_be_bytes,
        };
        let units: Vec<u16> = units.chunks_exact(2).map(|c| from([c[0], c[1]])).collect();
        String::from_utf16(&units).map_err(|_| {
            XmlError::Syntax("the UTF-16 document holds an unpaired surrogate".to_owned())
        })
    };
    if let Some(rest) = input.strip_prefix(b"\xFF\xFE") {
        return Ok((utf16(rest, Utf16Order::Little)?.into(), 0));
    }
    if let Some(rest) = input.strip_prefix(b"\xFE\xFF") {
        return Ok((utf16(rest, Utf16Order::Big)?.into(), 0));
    }
    let (offset, body, bom) = match input.strip_prefix(UTF8_BOM) {
        Some(rest) => (UTF8_BOM.len(), rest, true),
        None => (0, input, false),
    };
    // A byte order mark comes first (it says UTF-8 whatever a header or the declaration
    // says), then the HTTP charset, then the declaration.
    let declared = match (bom, http) {
        (true, _) | (false, Some(Charset::Utf8)) => None,
        (false, Some(Charset::Latin1)) => Some("ISO-8859-1".to_owned()),
        (false, Some(Charset::Ascii)) => Some("US-ASCII".to_owned()),
        (false, Some(label @ (Charset::Utf16 | Charset::Utf16Le | Charset::Utf16Be))) => {
            let order = unmarked_utf16_order(body, label)?;
            return Ok((utf16(body, order)?.into(), 0));
        }
        (false, None) => declared_encoding(body).map(str::to_ascii_uppercase),
    };
    match declared.as_deref() {
        Some("ISO-8859-1" | "LATIN1" | "ISO_8859-1") => {
            // Each byte is the code point of the same value.
            Ok((
                body.iter()
                    .map(|b| char::from(*b))
                    .collect::<String>()
                    .into(),
                offset,
            ))
        }
        Some("US-ASCII" | "ASCII") if !body.is_ascii() => Err(XmlError::Syntax(
            "the document is declared US-ASCII but holds bytes above 0x7F".to_owned(),
        )),
        _ => {
            let text = std::str::from_utf8(body).map_err(|e| {
                XmlError::Syntax(if http.is_some() || bom {
                    format!(
                        "document is not valid UTF-8 (invalid byte sequence at byte {}), as its \
                         {} says it is",
                        e.valid_up_to() + offset,
                        if bom {
                            "byte order mark"
                        } else {
                            "Content-Type charset"
                        }
                    )
                } else {
                    format!(
                        "document is not valid UTF-8 (invalid byte sequence at byte {}); UTF-8, \
                         UTF-16 with a byte order mark, or a declared ISO-8859-1 are accepted",
                        e.valid_up_to() + offset
                    )
                })
            })?;
            Ok((text.into(), offset))
        }
    }
}

/// A byte order of UTF-16.
#[derive(Clone, Copy)]
enum Utf16Order {
    Little,
    Big,
}

/// The byte order of a UTF-16 document without a byte order mark, labelled `label`
/// (`utf-16le`, `utf-16be` or `utf-16`). A plain `utf-16` is big-endian by RFC 2781 §4.3,
/// but .NET's `Encoding.Unicode` sends little-endian without a mark under that label, so the
/// first character decides, as XML 1.0 Appendix F reads an unmarked document: a document
/// starts with `<` or white space, ASCII, so one of its two bytes is zero (`3C 00` is
/// little-endian, `00 3C` big-endian); neither is big-endian, as RFC 2781 says. A labelled
/// order is taken as labelled. A document whose first character is not `<` or white space in
/// the order taken is refused here, naming the label, rather than read as CJK text that the
/// parser would then find no markup in (the usual cause: UTF-8 bytes labelled UTF-16).
fn unmarked_utf16_order(body: &[u8], label: Charset) -> Result<Utf16Order, XmlError> {
    let (order, name) = match (label, body) {
        (Charset::Utf16Le, _) => (Utf16Order::Little, "utf-16le"),
        (Charset::Utf16Be, _) => (Utf16Order::Big, "utf-16be"),
        (_, [first, 0, ..]) if *first != 0 => (Utf16Order::Little, "utf-16"),
        _ => (Utf16Order::Big, "utf-16"),
    };
    let first = match (order, body) {
        (_, []) => return Ok(order),
        (Utf16Order::Little, [low, high, ..]) | (Utf16Order::Big, [high, low, ..]) => {
            (*high == 0).then_some(*low)
        }
        // One byte: the odd length is refused when the text is decoded.
        (_, [_]) => return Ok(order),
    };
    if matches!(first, Some(b'<' | b' ' | b'\t' | b'\r' | b'\n')) {
        return Ok(order);
    }
    Err(XmlError::Syntax(format!(
        "the document does not start with `<` in UTF-16, as its Content-Type charset `{name}` \
         says it is"
    )))
}

/// The `encoding` of an XML declaration at the very start of `body`, read as ASCII (every
/// encoding sniffed here writes its declaration in ASCII); `None` without one.
fn declared_encoding(body: &[u8]) -> Option<&str> {
    let decl = body.strip_prefix(b"<?xml")?;
    let end = decl.windows(2).position(|w| w == b"?>")?;
    let decl = std::str::from_utf8(&decl[..end]).ok()?;
    let at = decl.find("encoding")?;
    let rest = decl[at + "encoding".len()..]
        .trim_start()
        .strip_prefix('=')?
        .trim_start();
    let quote = rest.chars().next().filter(|q| *q == '"' || *q == '\'')?;
    let value = &rest[1..];
    value.find(quote).map(|close| &value[..close])
}

/// Parses an untrusted XML document into an [`Element`] tree.
///
/// This is the only entry point for XML input: it enforces `limits`, refuses
/// DOCTYPE and non-predefined entities, resolves namespaces and checks
/// well-formedness (exactly one root, balanced tags, no stray content).
pub fn parse_document(input: &[u8], limits: &XmlLimits) -> Result<Element, XmlError> {
    parse_document_in(input, None, limits)
}

/// [`parse_document`] for a body whose `Content-Type` named `charset`: the document is read
/// in it, whatever its declaration says (RFC 7303 §3.2).
pub fn parse_document_in(
    input: &[u8],
    charset: Option<Charset>,
    limits: &XmlLimits,
) -> Result<Element, XmlError> {
    let (text, offset) = decode_text(input, charset)?;
    let mut reader = NsReader::from_str(&text);
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
        charset,
        stack: Vec::new(),
        root: None,
        elements: 0,
        namespaces: HashSet::new(),
    }
    .run()
}

/// The one copy of namespace name `ns` held in `namespaces`, which a document's elements
/// share (made at its first use). A lookup hashes the name once: at most
/// [`MAX_NAMESPACE_BYTES`] for each element.
fn shared(namespaces: &mut HashSet<Arc<str>>, ns: &str) -> Arc<str> {
    if let Some(held) = namespaces.get(ns) {
        return Arc::clone(held);
    }
    let held: Arc<str> = Arc::from(ns);
    namespaces.insert(Arc::clone(&held));
    held
}

/// The longest namespace name a document may declare, in bytes. Ours are about 40; a URI
/// of 2 KiB is past anything a vocabulary uses. Without a bound of its own a name could be
/// as long as any attribute value (64 KiB), and each element in it costs a lookup of the
/// name ([`shared`]).
const MAX_NAMESPACE_BYTES: usize = 2048;

/// Streaming state of [`parse_document`].
struct Parser<'i, 'l> {
    /// Namespace-resolving event source over the (UTF-8 checked) input.
    reader: NsReader<&'i [u8]>,
    /// Limits to enforce.
    limits: &'l XmlLimits,
    /// Bytes stripped before the reader's input (BOM), for error positions.
    offset: usize,
    /// The charset the HTTP `Content-Type` named: the declaration's encoding is then ignored.
    charset: Option<Charset>,
    /// Open elements, innermost last.
    stack: Vec<Element>,
    /// The completed root element.
    root: Option<Element>,
    /// Elements seen so far.
    elements: usize,
    /// Each namespace name the elements are in, held once: every element of a namespace
    /// shares its one copy. (Each element had its own, so a 32 KiB namespace name over
    /// 8,000 empty children made 268 MB of one 64 KiB body.)
    namespaces: HashSet<Arc<str>>,
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
                    // The text was decoded by what the byte order mark or the declaration
                    // said ([`decode_text`]); a declaration of another encoding is refused.
                    if let Some(Ok(encoding)) = decl.encoding()
                        && self.charset.is_none()
                        && !ENCODINGS.iter().any(|e| encoding.eq_ignore_ascii_case(e))
                        && !["LATIN1", "ISO_8859-1", "ASCII"]
                            .iter()
                            .any(|e| encoding.eq_ignore_ascii_case(e))
                    {
                        return Err(XmlError::Syntax(format!(
                            "the document declares encoding `{}`; accepted: {}",
                            quote_input(&encoding),
                            ENCODINGS.join(", ")
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
            // quick-xml's own text names its API ("raise the limit with …"): say it in the
            // client's terms, as the other limits are.
            quick_xml::Error::Namespace(quick_xml::name::NamespaceError::TooManyBindings(n)) => {
                XmlError::LimitExceeded(format!(
                    "more than {n} namespace declarations are in scope at once"
                ))
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
            ResolveResult::Bound(ns) => Some(shared(&mut self.namespaces, ns.into_inner())),
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
        let mut nil = false;
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
            // Well-formedness quick-xml leaves to the application (the XML review found both
            // accepted, where libxml2 refuses them): a `<` in an attribute value (XML 1.0
            // §3.1, AttValue), and a prefix bound to the empty name (Namespaces in XML 1.0
            // §3: only the default namespace may be undeclared).
            if attribute.value.contains('<') {
                return Err(XmlError::Syntax(format!(
                    "attribute `{}` of element `{name}` holds a `<`, which must be written `&lt;`",
                    quote_input(key.as_ref())
                )));
            }
            if let Some(binding) = key.as_namespace_binding() {
                if attribute.value.len() > MAX_NAMESPACE_BYTES {
                    return Err(XmlError::LimitExceeded(format!(
                        "the namespace name declared by `{}` on element `{name}` is longer \
                         than the maximum of {MAX_NAMESPACE_BYTES} bytes",
                        quote_input(key.as_ref()),
                    )));
                }
                if matches!(binding, PrefixDeclaration::Named(_)) && attribute.value.is_empty() {
                    return Err(XmlError::Syntax(format!(
                        "`{}` on element `{name}` binds a prefix to no namespace, which only \
                         the default namespace may be",
                        quote_input(key.as_ref())
                    )));
                }
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
            // `xsi:nil` says the element has no value (XML Schema Part 1 §2.6.2), which the
            // decoding helpers need apart from the other attributes (see `Element::nil`).
            if attr_ns == Some(XSI_NAMESPACE) && attr_local == "nil" {
                nil = bool::from_xml_text(&value).map_err(|msg| {
                    XmlError::Decode(format!("attribute `xsi:nil` of element `{name}`: {msg}"))
                })?;
            }
            attributes.push((attr_local.to_owned(), value.into_owned()));
        }

        Ok(Element {
            namespace,
            name,
            attributes,
            nil,
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
