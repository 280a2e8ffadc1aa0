//! How a value goes into a URL path: the one percent-encoding rule of the API, used by the
//! generated URL builders (`netapi_chat_api::urls`) and so by every `resourceURL`, `Location`
//! and notification `link` the server writes; and the request line ([`OperationRequest`]) the
//! generated request builders (`netapi_chat_api::requests`) answer, query included.

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

/// The HTTP method type of [`OperationRequest`], re-exported so the generated request
/// builders name a method without a dependency of their own on `http`.
pub use http::Method;

/// One operation's request line, as the generated request builders make it from the spec:
/// its method and its absolute URL (path parameters and query already encoded). The body, if
/// the operation takes one, stays with the caller, who encodes it in its own format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperationRequest {
    /// The operation's HTTP method.
    pub method: Method,
    /// The URL to send it to.
    pub url: String,
}

/// `url` with a query string of the `pairs` that have a value, in their order, each name and
/// value percent-encoded by the segment rule ([`encode_segment`]), so a value can neither end
/// its pair early (`&`, `=`) nor the query (`#`); `url` unchanged when no pair has a value.
pub fn with_query(mut url: String, pairs: &[(&str, Option<String>)]) -> String {
    let mut separator = '?';
    for (name, value) in pairs {
        if let Some(value) = value {
            url.push(separator);
            url.push_str(&encode_segment(name));
            url.push('=');
            url.push_str(&encode_segment(value));
            separator = '&';
        }
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_holds_the_given_pairs_encoded() {
        let url = "http://h/v1/x".to_owned();
        assert_eq!(with_query(url.clone(), &[("a", None)]), url);
        assert_eq!(
            with_query(
                url,
                &[
                    ("maxEntries", Some("5".into())),
                    ("cursor", None),
                    ("since", Some("2026-12-03T17:00:00+01:00 &#=".into())),
                ]
            ),
            "http://h/v1/x?maxEntries=5&since=2026-12-03T17%3A00%3A00%2B01%3A00%20%26%23%3D"
        );
    }

    #[test]
    fn keeps_unreserved_and_encodes_the_rest() {
        assert_eq!(encode_segment("tel:+15551230001"), "tel%3A%2B15551230001");
        assert_eq!(encode_segment("a-b.c_d~e"), "a-b.c_d~e");
        assert_eq!(encode_segment("a/b?c#d e"), "a%2Fb%3Fc%23d%20e");
        assert_eq!(encode_segment("é"), "%C3%A9");
    }
}
