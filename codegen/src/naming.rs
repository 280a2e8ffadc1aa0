//! Spec names → Rust names, and spec descriptions → doc comments.

use proc_macro2::{Ident, Span, TokenStream};
use quote::quote;

/// `resourceURL` → `resource_url`, `isOriginator` → `is_originator`, `userId` → `user_id`.
pub fn snake(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev_lower =
                i > 0 && (chars[i - 1].is_ascii_lowercase() || chars[i - 1].is_ascii_digit());
            let acronym_end = i > 0
                && chars[i - 1].is_ascii_uppercase()
                && chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            if prev_lower || acronym_end {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else if c == '-' || c == '.' {
            out.push('_');
        } else {
            out.push(c);
        }
    }
    out
}

/// `createChatSession` → `CreateChatSession`; `XML` → `Xml`.
pub fn pascal(name: &str) -> String {
    snake(name)
        .split('_')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut cs = p.chars();
            match cs.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + cs.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

/// A value identifier, escaping keywords.
pub fn ident(name: &str) -> Ident {
    const KEYWORDS: &[&str] = &[
        "type", "ref", "match", "mod", "fn", "self", "struct", "enum", "use", "where",
    ];
    if KEYWORDS.contains(&name) {
        Ident::new_raw(name, Span::call_site())
    } else {
        Ident::new(name, Span::call_site())
    }
}

/// A type identifier (schema names are already PascalCase).
pub fn type_ident(name: &str) -> Ident {
    Ident::new(name, Span::call_site())
}

/// An enum variant for a wire value.
pub fn variant_ident(value: &str) -> Ident {
    Ident::new(&pascal(value), Span::call_site())
}

/// `#[doc = "…"]` attributes, one per line, which prettyplease prints as `///` comments.
pub fn doc_attrs(text: &str) -> TokenStream {
    let lines = text.trim_end().lines().map(|l| {
        if l.is_empty() {
            String::new()
        } else {
            format!(" {l}")
        }
    });
    quote!(#(#[doc = #lines])*)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_handles_acronyms() {
        assert_eq!(snake("resourceURL"), "resource_url");
        assert_eq!(snake("notifyURL"), "notify_url");
        assert_eq!(snake("isOriginator"), "is_originator");
        assert_eq!(snake("tParticipantAddress"), "t_participant_address");
        assert_eq!(snake("XML"), "xml");
        assert_eq!(snake("userId"), "user_id");
        assert_eq!(pascal("XML"), "Xml");
        assert_eq!(pascal("SessionCancelled"), "SessionCancelled");
        assert_eq!(pascal("createChatSession"), "CreateChatSession");
    }
}
