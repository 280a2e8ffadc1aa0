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

/// How wide a doc comment's text may be: a `///` line four spaces in (a trait method, a field,
/// an impl item) then ends by column 100, the width the hand-written code keeps.
pub const DOC_WIDTH: usize = 92;

/// `#[doc = "…"]` attributes, one per line, which prettyplease prints as `/// …` comments (a
/// space after `///`, as people write them), the text wrapped by [`wrap_doc`].
pub fn doc_attrs(text: &str) -> TokenStream {
    let wrapped = wrap_doc(text.trim_end(), DOC_WIDTH);
    let lines = wrapped.lines().map(|l| {
        if l.is_empty() {
            String::new()
        } else {
            format!(" {l}")
        }
    });
    quote!(#(#[doc = #lines])*)
}

/// Whether a doc line starts a block of its own: a Markdown list item or heading, or a bold
/// lead-in such as `**Decision:**` (the spec starts each decision on a line of its own).
fn starts_block(line: &str) -> bool {
    let t = line.trim_start();
    t.starts_with("- ")
        || t.starts_with("* ")
        || t.starts_with('#')
        || t.starts_with("**")
        || t.split_once(". ")
            .is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
}

/// Wraps doc text at `width` characters the way a person would: the author's line breaks are
/// kept, and only a block (a paragraph or a list item, see [`starts_block`]) that has a line
/// longer than `width` is refilled, its list item continuation lines indented under the text.
/// Code fences are left as they are; a word longer than `width` stays whole on its line.
pub fn wrap_doc(text: &str, width: usize) -> String {
    let mut blocks: Vec<Vec<&str>> = Vec::new();
    let mut in_fence = false;
    let mut out = String::with_capacity(text.len() + text.len() / 32);
    let flush = |blocks: &mut Vec<Vec<&str>>, out: &mut String| {
        for block in blocks.drain(..) {
            if block.iter().all(|l| l.chars().count() <= width) {
                for l in block {
                    out.push_str(l);
                    out.push('\n');
                }
                continue;
            }
            let first = block[0];
            let lead = first.len() - first.trim_start().len();
            let marker = first.trim_start();
            let hang = if marker.starts_with("- ") || marker.starts_with("* ") {
                lead + 2
            } else {
                match marker.split_once(". ") {
                    Some((n, _)) if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) => {
                        lead + n.len() + 2
                    }
                    _ => lead,
                }
            };
            let mut line = " ".repeat(lead);
            let mut line_len = lead;
            let mut empty = true;
            for word in block.iter().flat_map(|l| l.split_whitespace()) {
                let w = word.chars().count();
                if !empty && line_len + 1 + w > width {
                    out.push_str(&line);
                    out.push('\n');
                    line = " ".repeat(hang);
                    line_len = hang;
                    empty = true;
                }
                if !empty {
                    line.push(' ');
                    line_len += 1;
                }
                line.push_str(word);
                line_len += w;
                empty = false;
            }
            out.push_str(&line);
            out.push('\n');
        }
    };
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            flush(&mut blocks, &mut out);
            in_fence = !in_fence;
            out.push_str(line);
            out.push('\n');
        } else if in_fence {
            out.push_str(line);
            out.push('\n');
        } else if line.trim().is_empty() {
            flush(&mut blocks, &mut out);
            out.push('\n');
        } else if starts_block(line) || blocks.is_empty() {
            blocks.push(vec![line]);
        } else if let Some(b) = blocks.last_mut() {
            b.push(line);
        }
    }
    flush(&mut blocks, &mut out);
    out.truncate(out.trim_end_matches('\n').len());
    out
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

    #[test]
    fn wrap_keeps_short_lines_and_refills_long_blocks() {
        assert_eq!(wrap_doc("one\ntwo\n\nthree", 10), "one\ntwo\n\nthree");
        assert_eq!(
            wrap_doc("aaa bbb ccc\nddd\n\n**Decision:** x", 8),
            "aaa bbb\nccc ddd\n\n**Decision:**\nx"
        );
        // A list item's continuation hangs under its text; the next item starts a block.
        assert_eq!(
            wrap_doc("- aaa bbb ccc\n- d", 8),
            "- aaa\n  bbb\n  ccc\n- d"
        );
        // Code fences are kept as written; an overlong word stays whole.
        assert_eq!(
            wrap_doc("```\nlong code line\n```\nabcdefghijkl x", 8),
            "```\nlong code line\n```\nabcdefghijkl\nx"
        );
    }
}
