//! The parsed tree and the decoding helpers generated `XmlType::read` impls call.

use super::{XmlError, XmlLeaf, XmlType};

/// A parsed element: namespace-resolved name, attributes (xmlns declarations
/// excluded), child elements in order, and concatenated text (text + CDATA,
/// unescaped, not trimmed).
///
/// This is the intermediate tree that generated `XmlType::read` impls decode;
/// it keeps only what the Chat API XML binding needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Element {
    /// Namespace URI of the element, `None` when the name is unqualified and
    /// no default namespace is in scope. Shared by every element of the document in that
    /// namespace (one copy per namespace name, however many elements).
    pub namespace: Option<std::sync::Arc<str>>,
    /// Local name (without prefix).
    pub name: String,
    /// Attributes as (local name, unescaped value), in document order.
    pub attributes: Vec<(String, String)>,
    /// Whether the element is nil (`xsi:nil="true"` or `"1"`): it has no value, as JSON's
    /// `null`. The decoding helpers read a nil optional element, or a nil list item, as
    /// absent, and refuse a nil required one.
    pub nil: bool,
    /// Child elements in document order.
    pub children: Vec<Element>,
    /// All direct text and CDATA content, unescaped and concatenated.
    pub text: String,
}

impl Element {
    /// Child elements with the given local name, in document order, among
    /// [`Element::own_children`].
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.own_children().filter(move |c| c.name == name)
    }

    /// The children that belong to this element's type: unqualified (the Chat schemas'
    /// children are), or in this element's own namespace (a client that qualifies every
    /// element, or declares a default namespace). A child in any other namespace is an
    /// extension (another vocabulary's `<o:text>` is not our `text`): ignored, as an
    /// unknown element is. Before, children were matched by local name alone, so a vendor
    /// element named like a field was read as it (or refused as that field twice).
    fn own_children(&self) -> impl Iterator<Item = &Element> {
        self.children
            .iter()
            .filter(move |c| c.namespace.is_none() || c.namespace == self.namespace)
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
        let mut matches = self.own_children().filter(|c| c.name == name);
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

    /// The single child called `name`, which must be there with a value (not nil).
    fn required<'a>(&'a self, name: &str) -> Result<&'a Element, XmlError> {
        match self.single_child(name)? {
            None => Err(self.missing_element(name)),
            Some(child) if child.nil => Err(XmlError::Decode(format!(
                "element `{name}` in `{}` is required and cannot be nil (xsi:nil)",
                self.name
            ))),
            Some(child) => Ok(child),
        }
    }

    /// The single child called `name` when it has a value: a nil one is absent, as JSON's
    /// `null` is, rather than read as its empty text (an optional string would become `""`,
    /// which is a value, e.g. a `clientCorrelator`).
    fn optional<'a>(&'a self, name: &str) -> Result<Option<&'a Element>, XmlError> {
        match self.single_child(name)? {
            Some(child) => self.valued(child),
            None => Ok(None),
        }
    }

    /// `child`, or `None` when it is nil. A nil element holding content contradicts itself
    /// (XML Schema Part 1 §3.3.4) and is refused rather than either half of it ignored;
    /// whitespace (a pretty printer's) is not content.
    fn valued<'a>(&self, child: &'a Element) -> Result<Option<&'a Element>, XmlError> {
        if !child.nil {
            return Ok(Some(child));
        }
        let blank = child
            .text
            .chars()
            .all(|c| matches!(c, ' ' | '\t' | '\r' | '\n'));
        if child.children.is_empty() && blank {
            Ok(None)
        } else {
            Err(XmlError::Decode(format!(
                "element `{}` in `{}` is nil (xsi:nil) but has content",
                child.name, self.name
            )))
        }
    }

    /// The children called `name` that have a value: a nil item of a list is no item.
    fn valued_children<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = Result<&'a Element, XmlError>> + 'a {
        self.children_named(name)
            .filter_map(|child| self.valued(child).transpose())
    }

    /// Decodes the text of a leaf child, adding context to the error. A leaf is simple-typed
    /// in the Chat schemas, so an element inside it (`<text>a<b>bold</b>c</text>`, often
    /// unescaped markup in user text) is refused: reading its text alone would store and
    /// deliver `ac`, another text than the client sent, on a 2xx.
    fn decode_leaf<T: XmlLeaf>(&self, child: &Element) -> Result<T, XmlError> {
        if let Some(inner) = child.children.first() {
            return Err(XmlError::Decode(format!(
                "element `{}` in `{}` holds an element (`{}`) where the schema has text; \
                 escape `<` as `&lt;` and `&` as `&amp;`",
                child.name, self.name, inner.name
            )));
        }
        T::from_xml_text(&child.text).map_err(|msg| {
            XmlError::Decode(format!(
                "element `{}` in `{}`: {msg}",
                child.name, self.name
            ))
        })
    }

    /// Decodes a leaf child that must appear exactly once.
    pub fn required_leaf<T: XmlLeaf>(&self, name: &str) -> Result<T, XmlError> {
        self.decode_leaf(self.required(name)?)
    }

    /// Decodes a leaf child that may appear at most once.
    pub fn optional_leaf<T: XmlLeaf>(&self, name: &str) -> Result<Option<T>, XmlError> {
        self.optional(name)?
            .map(|child| self.decode_leaf(child))
            .transpose()
    }

    /// Decodes every leaf child called `name` (an XSD `maxOccurs > 1` element).
    pub fn leaf_list<T: XmlLeaf>(&self, name: &str) -> Result<Vec<T>, XmlError> {
        self.valued_children(name)
            .map(|child| self.decode_leaf(child?))
            .collect()
    }

    /// Decodes this element as the complex type `T`. A complex type of the Chat schemas has
    /// element content only, so text in it (`<channelData>42</channelData>`, where the schema
    /// wants child elements) is refused rather than ignored; whitespace between children is
    /// not text.
    pub fn read_complex<T: XmlType>(&self) -> Result<T, XmlError> {
        if !self.text.trim().is_empty() {
            return Err(XmlError::Decode(format!(
                "element `{}` holds text where the schema has child elements",
                self.name
            )));
        }
        T::read(self)
    }

    /// Decodes a complex child that must appear exactly once.
    pub fn required_child<T: XmlType>(&self, name: &str) -> Result<T, XmlError> {
        self.required(name)?.read_complex()
    }

    /// Decodes a complex child that may appear at most once.
    pub fn optional_child<T: XmlType>(&self, name: &str) -> Result<Option<T>, XmlError> {
        self.optional(name)?.map(Element::read_complex).transpose()
    }

    /// Decodes every complex child called `name`.
    pub fn child_list<T: XmlType>(&self, name: &str) -> Result<Vec<T>, XmlError> {
        self.valued_children(name)
            .map(|child| child?.read_complex())
            .collect()
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
