//! User addresses: the `tel:`, `sip:` and `acr:` URIs that name chat users, and how they appear
//! in URLs.

use netapi_chat_runtime::ApiError;
/// Percent-encodes an address (or any id) for use as one path segment (`tel:+1555` →
/// `tel%3A%2B1555`): the runtime's rule, the one the generated URL builders apply.
pub use netapi_chat_runtime::url::encode_segment;

/// The one spelling of an address that the server stores, compares and answers with: scheme in
/// lower case; for `tel:`, visual separators (`-.()`, RFC 3966) removed; for `sip:`/`sips:`,
/// the host in lower case (RFC 3261; the user part is case-sensitive and kept); an `acr:`
/// reference as given (it is opaque).
pub fn canonical(address: &str) -> Result<String, ApiError> {
    validate(address)?;
    let (scheme, rest) = address
        .split_once(':')
        .ok_or_else(|| ApiError::invalid_address(address))?;
    let scheme = scheme.to_ascii_lowercase();
    Ok(match scheme.as_str() {
        "tel" => format!(
            "tel:{}",
            rest.chars()
                .filter(|c| !"-.()".contains(*c))
                .collect::<String>()
        ),
        _ => match rest.rsplit_once('@') {
            Some((user, host)) => format!("{scheme}:{user}@{}", host.to_ascii_lowercase()),
            None => format!("{scheme}:{rest}"),
        },
    })
}

/// An address as a URL path names it: a bare global number (`+15551230001`, `+1-555-…`) is
/// that number's `tel:` URI, as the GSMA OneAPI gateways' clients put the served user in the
/// path (`/chat/0.1/%2B15551230001/subscriptions`, OMA: "accept unencoded input too"); any other
/// segment is the address it spells. Bodies carry URIs, so only paths are read this way.
pub fn from_path(segment: &str) -> std::borrow::Cow<'_, str> {
    if segment.starts_with('+') && is_valid(&format!("tel:{segment}")) {
        std::borrow::Cow::Owned(format!("tel:{segment}"))
    } else {
        std::borrow::Cow::Borrowed(segment)
    }
}

/// The canonical form ([`canonical`]) of an address as a URL path names it ([`from_path`]):
/// the one reading of a path's user or peer.
pub fn canonical_in_path(segment: &str) -> Result<String, ApiError> {
    canonical(&from_path(segment))
}

/// Checks that `address` is a user address this server serves: `tel:` with a global number
/// (`tel:+` and 3–15 digits, visual separators `-.()` allowed), `sip:`/`sips:` with
/// `user@host`, or an anonymous customer reference `acr:` + unreserved characters (OMA; not
/// `acr:auth`, the keyword for the token's own user).
pub fn validate(address: &str) -> Result<(), ApiError> {
    if is_valid(address) {
        Ok(())
    } else {
        Err(ApiError::invalid_address(address))
    }
}

fn is_valid(address: &str) -> bool {
    if address.len() > 256 {
        return false;
    }
    let lower = address.to_ascii_lowercase();
    if let Some(number) = lower.strip_prefix("tel:") {
        let Some(digits) = number.strip_prefix('+') else {
            return false;
        };
        let count = digits.chars().filter(char::is_ascii_digit).count();
        return (3..=15).contains(&count)
            && digits
                .chars()
                .all(|c| c.is_ascii_digit() || "-.()".contains(c))
            && digits.starts_with(|c: char| c.is_ascii_digit());
    }
    // An anonymous customer reference (OMA `acr:`): an opaque token of unreserved characters,
    // compared as given; `acr:auth` is OMA's keyword for the token's own user, never an address.
    if let Some(reference) = lower.strip_prefix("acr:") {
        return !reference.is_empty()
            && reference != "auth"
            && address[4..]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._~".contains(c));
    }
    let rest = lower
        .strip_prefix("sips:")
        .or_else(|| lower.strip_prefix("sip:"));
    if let Some(rest) = rest {
        let Some((user, host)) = rest.split_once('@') else {
            return false;
        };
        let user_ok = !user.is_empty()
            && user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.!~*'()&=+$,;?/%".contains(c));
        let host_ok = !host.is_empty()
            && host.len() <= 253
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
            && !host.starts_with('.')
            && !host.ends_with('.');
        return user_ok && host_ok;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_tel_and_sip() {
        for ok in [
            "tel:+15551230001",
            "tel:+1-555-123-0001",
            "sip:alice@example.com",
            "sips:bob@10.0.0.1:5061",
            "SIP:Carol@Example.COM",
            "acr:pseudonym123",
            "ACR:Ab-9_x.~",
        ] {
            assert!(is_valid(ok), "{ok}");
        }
        for bad in [
            "",
            "alice",
            "tel:5551230001",
            "tel:+",
            "tel:+12",
            "tel:+1234567890123456",
            "sip:@example.com",
            "sip:alice",
            "mailto:a@b.c",
            "sip:alice@",
            "tel:+1555 123",
            "acr:",
            "acr:auth",
            "acr:a b",
            "acr:a@b",
            "acr:a/b",
        ] {
            assert!(!is_valid(bad), "{bad}");
        }
    }

    #[test]
    fn a_bare_global_number_in_a_path_is_its_tel_uri() {
        assert_eq!(from_path("+15551230001"), "tel:+15551230001");
        assert_eq!(from_path("+1-555-123-0001"), "tel:+1-555-123-0001");
        for as_is in [
            "tel:+15551230001",
            "sip:a@b.c",
            "+12",
            "+1555x",
            "15551230001",
            "acr:auth",
        ] {
            assert_eq!(from_path(as_is), as_is);
        }
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(
            canonical("tel:+1-555-123-0001").unwrap(),
            "tel:+15551230001"
        );
        assert_eq!(
            canonical("TEL:+1(555)123.0001").unwrap(),
            "tel:+15551230001"
        );
        assert_eq!(
            canonical("SIP:Bob@EXAMPLE.com").unwrap(),
            "sip:Bob@example.com"
        );
        assert_eq!(canonical("sips:a@B.org").unwrap(), "sips:a@b.org");
        assert_eq!(canonical("ACR:PseudoNym").unwrap(), "acr:PseudoNym");
        assert!(canonical("bogus").is_err());
    }

    #[test]
    fn encodes_reserved_characters() {
        assert_eq!(encode_segment("tel:+15551230001"), "tel%3A%2B15551230001");
        assert_eq!(
            encode_segment("sip:alice@example.com"),
            "sip%3Aalice%40example.com"
        );
    }
}
