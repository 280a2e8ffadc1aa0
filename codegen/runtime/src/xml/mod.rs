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
//!
//! The module is split at its seams, each with a narrow surface inside the crate:
//!
//! * `parse`: the bounded streaming parser ([`parse_document`], [`XmlLimits`]);
//! * `dom`: the [`Element`] tree it builds and the decoding helpers generated code calls;
//! * `traits`: [`XmlLeaf`], [`LeafText`], [`XmlType`], [`XmlRoot`] and the leaf impls of
//!   the primitive types;
//! * `write`: the escaping [`XmlWriter`] and [`to_document`];
//! * `error`: [`XmlError`] and [`quote_input`], shared by all of them.
//!
//! Everything generated code names is re-exported here, so its paths are
//! `netapi_chat_runtime::xml::…` whatever file an item lives in.

mod dom;
mod error;
mod parse;
mod traits;
mod write;

/// The XML Schema instance namespace, bound to `xsi` where an element names its concrete
/// type (`xsi:type`).
pub const XSI_NAMESPACE: &str = "http://www.w3.org/2001/XMLSchema-instance";

pub use dom::Element;
pub use error::{XmlError, quote_input};
pub use parse::{XmlLimits, parse_document, parse_document_in};
pub use traits::{LeafText, XmlLeaf, XmlRoot, XmlType};
pub use write::{XmlWriter, to_document};

/// Whether `c` is a character allowed in an XML 1.0 document (the parser refuses the
/// others, the writer replaces them).
pub(crate) fn is_xml_char(c: char) -> bool {
    // Surrogates cannot occur in a Rust `char`.
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Parses an untrusted document and decodes it as `T`.
///
/// Checks that the root element is `{T::NAMESPACE}T::NAME` (any prefix or a
/// default namespace is accepted) before decoding.
pub fn from_document<T: XmlRoot>(input: &[u8], limits: &XmlLimits) -> Result<T, XmlError> {
    from_document_in(input, None, limits)
}

/// [`from_document`] for a body whose `Content-Type` named `charset` (see
/// [`parse_document_in`]).
pub fn from_document_in<T: XmlRoot>(
    input: &[u8],
    charset: Option<crate::media::Charset>,
    limits: &XmlLimits,
) -> Result<T, XmlError> {
    let root = parse_document_in(input, charset, limits)?;
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
    // A request's document is the value asked for; there is no absent one to stand for.
    if root.nil {
        return Err(XmlError::Decode(format!(
            "the root element `{}` cannot be nil (xsi:nil)",
            T::NAME
        )));
    }
    root.read_complex()
}

#[cfg(test)]
mod tests;
