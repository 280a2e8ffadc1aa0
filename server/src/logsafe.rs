//! Client-controlled text in log lines, escaped (issue 11, item 10: log forging).
//!
//! The operator's log is a terminal stream (`crate::logging`'s text lines). A value a client
//! chose (a `notifyURL`, a user address, an error text quoting either) that holds CR/LF would
//! end the log line and start a forged one; other control characters (ANSI escapes) or Unicode
//! bidi controls would rewrite what the operator's terminal shows. Every such value goes
//! through [`Escaped`] (zero-allocation, with `tracing`'s `%`) before it reaches a log
//! macro. (The text lines escape control characters again, as a second guard;
//! bidi controls are this module's alone.)

use std::fmt;

/// Whether `c` must be escaped in a log value: control characters (C0, DEL, C1, so CR, LF,
/// ESC), the Unicode line/paragraph separators, the bidi and zero-width format characters that
/// reorder or hide text, and the backslash itself, so that an escaped value cannot be confused
/// with one that contained the escape sequence literally.
pub fn needs_escape(c: char) -> bool {
    c == '\\'
        || c.is_control()
        || matches!(
            c,
            '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
                | '\u{FEFF}'
        )
}

/// Displays its text with every character of [`needs_escape`] written as a Rust escape (`\r`,
/// `\n`, `\t`, `\\`, `\u{1b}`, …), without allocating: for `tracing`'s `%` form,
/// `url = %Escaped(&url)`.
#[derive(Clone, Copy, Debug)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write as _;
        for c in self.0.chars() {
            if needs_escape(c) {
                for e in c.escape_default() {
                    f.write_char(e)?;
                }
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// A callback URL as the log shows it: scheme, host, port and path, escaped ([`Escaped`]),
/// never its user information (`user:password@`) nor its query or fragment, which receivers
/// use to carry credentials (`?api_key=…`); a query or fragment is shown as `?…` / `#…`, so
/// the operator sees that there was one. For `tracing`'s `%` form: `url = %Callback(&url)`.
#[derive(Clone, Copy, Debug)]
pub struct Callback<'a>(pub &'a str);

impl fmt::Display for Callback<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = self.0;
        let (scheme, rest) = match url.split_once("://") {
            Some((scheme, rest)) => (Some(scheme), rest),
            None => (None, url),
        };
        let cut = rest.find(['?', '#']).unwrap_or(rest.len());
        let (before, after) = rest.split_at(cut);
        let authority_end = before.find('/').unwrap_or(before.len());
        let (authority, path) = before.split_at(authority_end);
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        if let Some(scheme) = scheme {
            write!(f, "{}://", Escaped(scheme))?;
        }
        write!(f, "{}{}", Escaped(host), Escaped(path))?;
        match after.chars().next() {
            Some('?') => f.write_str("?…"),
            Some('#') => f.write_str("#…"),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A callback URL is logged without credentials: no user information, no query or
    /// fragment (shown as present), the rest escaped.
    #[test]
    fn a_callback_url_is_logged_without_its_credentials() {
        let shown = |u: &str| Callback(u).to_string();
        assert_eq!(
            shown("https://user:pw@hooks.example.com:8443/chat/in?api_key=SECRET#x"),
            "https://hooks.example.com:8443/chat/in?…"
        );
        assert_eq!(shown("http://127.0.0.1:9/n#tok"), "http://127.0.0.1:9/n#…");
        assert_eq!(shown("http://a.example/p@q"), "http://a.example/p@q");
        assert_eq!(
            shown("http://x.example/\r\nforged"),
            "http://x.example/\\r\\nforged"
        );
        assert_eq!(shown("not a url"), "not a url");
    }

    /// The rule as a value: borrowed unchanged when nothing needs escaping.
    /// `text` with every character of [`needs_escape`] written as a Rust escape (`\r`, `\n`, `\t`,
    /// `\\`, `\u{1b}`, …); borrowed unchanged when there is none (the usual case).
    fn escape(text: &str) -> std::borrow::Cow<'_, str> {
        if !text.chars().any(needs_escape) {
            return std::borrow::Cow::Borrowed(text);
        }
        std::borrow::Cow::Owned(Escaped(text).to_string())
    }

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        for text in [
            "",
            "http://example.com/cb?x=1",
            "sip:bob@example.com",
            "é ü 中文",
        ] {
            assert!(
                matches!(escape(text), std::borrow::Cow::Borrowed(t) if t == text),
                "{text}"
            );
        }
    }

    #[test]
    fn line_breaks_and_controls_are_escaped() {
        assert_eq!(
            escape("http://a.example/\r\nDec 03 WARN forged"),
            "http://a.example/\\r\\nDec 03 WARN forged"
        );
        assert_eq!(escape("a\tb\u{0}c\u{7f}"), "a\\tb\\u{0}c\\u{7f}");
        assert_eq!(escape("\u{1b}[31mred"), "\\u{1b}[31mred");
        assert_eq!(escape("next\u{85}line"), "next\\u{85}line");
        assert_eq!(escape("a\u{2028}b\u{2029}c"), "a\\u{2028}b\\u{2029}c");
    }

    #[test]
    fn bidi_and_invisible_characters_are_escaped() {
        assert_eq!(escape("x\u{202e}gpj.exe"), "x\\u{202e}gpj.exe");
        assert_eq!(
            escape("a\u{2066}b\u{200b}c\u{feff}"),
            "a\\u{2066}b\\u{200b}c\\u{feff}"
        );
    }

    #[test]
    fn backslash_is_escaped_so_escapes_cannot_be_faked() {
        assert_eq!(escape("a\\r\\nb"), "a\\\\r\\\\nb");
        assert_ne!(escape("a\\nb"), escape("a\nb"));
    }

    #[test]
    fn escaped_output_has_no_character_that_needs_escaping() {
        let nasty: String = (0u32..0x300)
            .chain(0x2000..0x2070)
            .chain([0xfeff])
            .filter_map(char::from_u32)
            .collect();
        let out = escape(&nasty);
        assert!(!out.chars().any(|c| needs_escape(c) && c != '\\'), "{out}");
        assert_eq!(Escaped(&nasty).to_string(), out);
    }
}
