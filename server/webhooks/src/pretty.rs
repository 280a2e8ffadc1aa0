//! Documents as a person reads them: what `netapi-chat client` prints as an answer and the
//! listener prints as a notification. Only whitespace between elements changes (pretty JSON
//! keeps the key order; pretty XML keeps every text and attribute as it was), so a printed
//! document still decodes to the same value.

use netapi_chat_runtime::Format;
use quick_xml::events::Event;

/// Indentation of nested elements and keys.
const INDENT: usize = 2;

/// `body` in `format`, indented; as it was when it does not parse.
pub fn document(format: Format, body: &str) -> String {
    match format {
        Format::Json => json(body),
        Format::Xml => xml(body),
    }
    .unwrap_or_else(|| body.to_owned())
}

/// JSON, pretty-printed in its own key order.
fn json(body: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    serde_json::to_string_pretty(&value).ok()
}

/// XML, one element a line, indented. Each piece is copied from `body` as it was (read by
/// its position, so entities, quotes and prefixes stay as sent); whitespace between elements
/// is replaced, any text inside a leaf element kept exactly.
fn xml(body: &str) -> Option<String> {
    let mut reader = quick_xml::Reader::from_str(body);
    let mut out = String::with_capacity(body.len() + body.len() / 4);
    let mut depth = 0usize;
    // Text read since the last tag, and whether the open element has no child element yet.
    let mut pending = String::new();
    let mut leaf = false;
    let newline = |out: &mut String, depth: usize| {
        if !out.is_empty() {
            out.push('\n');
        }
        out.extend(std::iter::repeat_n(' ', depth * INDENT));
    };
    loop {
        let from = usize::try_from(reader.buffer_position()).ok()?;
        let event = reader.read_event().ok()?;
        let to = usize::try_from(reader.buffer_position()).ok()?;
        let raw = body.get(from..to)?;
        match event {
            Event::Eof => break,
            Event::Start(_) => {
                if !pending.trim().is_empty() {
                    out.push_str(&pending);
                }
                newline(&mut out, depth);
                out.push_str(raw);
                depth += 1;
                leaf = true;
            }
            Event::End(_) => {
                depth = depth.checked_sub(1)?;
                if leaf {
                    out.push_str(&pending);
                } else {
                    newline(&mut out, depth);
                }
                out.push_str(raw);
                leaf = false;
            }
            Event::Text(_) | Event::GeneralRef(_) | Event::CData(_) => {
                pending.push_str(raw);
                continue;
            }
            _ => {
                newline(&mut out, depth);
                out.push_str(raw);
                leaf = false;
            }
        }
        pending.clear();
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_is_indented_and_its_text_kept() {
        let sent = r#"<?xml version="1.0" encoding="UTF-8"?><chat:chatMessage xmlns:chat="urn:oma:xml:rest:netapi:chat:1"><text>  12:30? &amp; </text><link rel="a" href="b"></link></chat:chatMessage>"#;
        assert_eq!(
            document(Format::Xml, sent),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<chat:chatMessage xmlns:chat=\"urn:oma:xml:rest:netapi:chat:1\">\n  <text>  12:30? &amp; </text>\n  <link rel=\"a\" href=\"b\"></link>\n</chat:chatMessage>"
        );
    }

    #[test]
    fn json_keeps_its_key_order_and_what_does_not_parse_is_kept() {
        assert_eq!(
            document(Format::Json, r#"{"b":1,"a":[]}"#),
            "{\n  \"b\": 1,\n  \"a\": []\n}"
        );
        assert_eq!(document(Format::Json, "{nope"), "{nope");
        assert_eq!(document(Format::Xml, "<a><b></a>"), "<a><b></a>");
    }
}
