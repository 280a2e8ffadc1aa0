//! The traits generated types implement to speak OMA XML, and the leaf impls of the
//! primitive types the schemas use.

use std::borrow::Cow;

use super::{Element, XmlError, XmlWriter, quote_input};

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
