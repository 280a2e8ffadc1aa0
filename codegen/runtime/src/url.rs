//! How a value goes into a URL path: the one percent-encoding rule of the API, used by the
//! generated URL builders (`netapi_chat_api::urls`) and so by every `resourceURL`, `Location`
//! and notification `link` the server writes.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Characters left as they are when a value goes into a path segment: RFC 3986 unreserved.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes an address (or any id) for use as one path segment: `tel:+1555` →
/// `tel%3A%2B1555`, as OMA asks for `resourceURL` and `link` values. Everything but RFC 3986
/// unreserved characters is encoded, so `/`, `?` and `#` can never end a segment early.
pub fn encode_segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_unreserved_and_encodes_the_rest() {
        assert_eq!(encode_segment("tel:+15551230001"), "tel%3A%2B15551230001");
        assert_eq!(encode_segment("a-b.c_d~e"), "a-b.c_d~e");
        assert_eq!(encode_segment("a/b?c#d e"), "a%2Fb%3Fc%23d%20e");
        assert_eq!(encode_segment("é"), "%C3%A9");
    }
}
