//! The escaping writer: every document the server sends is built here.

use super::{LeafText, XmlRoot, XmlType, is_xml_char};

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

    /// Writes a document root as an element in its own namespace:
    /// `<prefix:name xmlns:prefix="namespace">…</prefix:name>`, its children unqualified. A
    /// whole document is one; so is each notification of a `notificationList`, which OMA
    /// writes in the notification's own namespace.
    pub fn root_element<T: XmlRoot>(&mut self, value: &T) {
        self.start_root(T::PREFIX, T::NAME, T::NAMESPACE);
        value.write_attributes(self);
        self.close_start();
        value.write_children(self);
        self.buf.push_str("</");
        self.push_qualified(T::PREFIX, T::NAME);
        self.buf.push('>');
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
    w.root_element(value);
    w.finish()
}
