//! Signed notifications: [Standard Webhooks](https://www.standardwebhooks.com) signatures
//! (issue 7, point 2).
//!
//! Every notification POST carries three headers:
//!
//! - `webhook-id`: the message's unique id (the same on every retry of one notification, so a
//!   receiver can drop duplicates);
//! - `webhook-timestamp`: seconds since the Unix epoch when the attempt was signed;
//! - `webhook-signature`: `v1,` followed by the base64 of
//!   HMAC-SHA256(key, `"{id}.{timestamp}.{body}"`), the body being the exact bytes sent.
//!   A receiver accepts any one of several space-separated signatures (key rotation).
//!
//! The key is a per-application secret from configuration, written `whsec_<base64>` like the
//! secrets of other Standard Webhooks senders; [`Signer::generate`] makes a new one.
//! [`Signer::verify`] is the receiver's side (used by [`crate::listen`]; a receiver written in
//! another language uses any Standard Webhooks library with the same secret).

use base64::Engine;
use base64::alphabet;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use std::fmt;

type HmacSha256 = Hmac<Sha256>;
/// One SHA-256 block (64 bytes): HMAC's native key size.
type Block = hmac::digest::Key<HmacSha256>;
const _: () = assert!(GENERATED_KEY_LEN <= 64);

/// Name of the header carrying the message id.
pub const HEADER_ID: &str = "webhook-id";
/// Name of the header carrying the signing time (Unix seconds).
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// Name of the header carrying the signature(s).
pub const HEADER_SIGNATURE: &str = "webhook-signature";
/// The prefix of a Standard Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Shortest key accepted, in bytes (the Standard Webhooks spec asks for 24 to 64).
pub const MIN_KEY_LEN: usize = 24;
/// Length of keys made by [`Signer::generate`], in bytes.
pub const GENERATED_KEY_LEN: usize = 32;
/// The tolerance the Standard Webhooks reference libraries use for `webhook-timestamp`, in
/// seconds (both into the past and into the future).
pub const DEFAULT_TOLERANCE_SECS: i64 = 5 * 60;

/// Standard base64, padding optional when decoding (secrets are often pasted without it).
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Signs (and verifies) notifications with one application's secret.
///
/// `Debug` does not show the key.
#[derive(Clone)]
pub struct Signer {
    /// HMAC-SHA256 already keyed with the secret; cloned for each signature.
    mac: HmacSha256,
}

/// The three headers for one message signed with each of `signers`, as `(name, value)`
/// pairs: `webhook-id`, `webhook-timestamp`, and `webhook-signature` holding one signature per
/// signer, space-separated (Standard Webhooks), so that during a key rotation a receiver
/// verifies with the old secret or the new one. No signer: the signature value is empty (the
/// sender leaves that header out). The one place the header names and values are put
/// together, for the server and for anyone signing like it.
pub fn headers<'a>(
    signers: impl IntoIterator<Item = &'a Signer>,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> [(&'static str, String); 3] {
    let signatures: Vec<String> = signers
        .into_iter()
        .map(|s| s.sign(id, timestamp, body))
        .collect();
    [
        (HEADER_ID, id.to_owned()),
        (HEADER_TIMESTAMP, timestamp.to_string()),
        (HEADER_SIGNATURE, signatures.join(" ")),
    ]
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Signer { key: <redacted> }")
    }
}

/// The three Standard Webhooks header values of a received request, as text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WebhookHeaders<'a> {
    /// `webhook-id`.
    pub id: &'a str,
    /// `webhook-timestamp` (Unix seconds, as sent).
    pub timestamp: &'a str,
    /// `webhook-signature`: one or more space-separated `v1,<base64>` entries.
    pub signature: &'a str,
}

impl<'a> WebhookHeaders<'a> {
    /// Takes the three headers from an HTTP header map (as a receiver gets them).
    pub fn from_header_map(map: &'a http::HeaderMap) -> Result<WebhookHeaders<'a>, SigningError> {
        let get = |name: &'static str| {
            map.get(name)
                .ok_or(SigningError::MissingHeader(name))?
                .to_str()
                .map_err(|_| SigningError::MissingHeader(name))
        };
        Ok(WebhookHeaders {
            id: get(HEADER_ID)?,
            timestamp: get(HEADER_TIMESTAMP)?,
            signature: get(HEADER_SIGNATURE)?,
        })
    }
}

/// Why a secret was not accepted or a signature did not verify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SigningError {
    /// The secret is not base64 (after an optional `whsec_` prefix).
    SecretNotBase64,
    /// The secret decodes to fewer than [`MIN_KEY_LEN`] bytes.
    SecretTooShort {
        /// Its length in bytes.
        len: usize,
    },
    /// A header is missing (or not visible ASCII).
    MissingHeader(&'static str),
    /// `webhook-timestamp` is not an integer.
    BadTimestamp,
    /// `webhook-timestamp` is older than the tolerance allows.
    TimestampTooOld,
    /// `webhook-timestamp` is further in the future than the tolerance allows.
    TimestampTooNew,
    /// `webhook-signature` holds no `v1,` entry.
    NoSignature,
    /// No `v1` signature matches the message.
    SignatureMismatch,
}

impl fmt::Display for SigningError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SigningError::SecretNotBase64 => write!(
                f,
                "webhook secret must be {SECRET_PREFIX}<base64> or plain base64"
            ),
            SigningError::SecretTooShort { len } => write!(
                f,
                "webhook secret is {len} bytes long; at least {MIN_KEY_LEN} are required"
            ),
            SigningError::MissingHeader(name) => write!(f, "header {name} is missing or invalid"),
            SigningError::BadTimestamp => {
                write!(f, "{HEADER_TIMESTAMP} is not an integer number of seconds")
            }
            SigningError::TimestampTooOld => write!(f, "{HEADER_TIMESTAMP} is too old"),
            SigningError::TimestampTooNew => {
                write!(f, "{HEADER_TIMESTAMP} is too far in the future")
            }
            SigningError::NoSignature => write!(f, "{HEADER_SIGNATURE} has no v1 signature"),
            SigningError::SignatureMismatch => write!(f, "no {HEADER_SIGNATURE} entry matches"),
        }
    }
}

impl std::error::Error for SigningError {}

impl Signer {
    /// A signer for a secret written `whsec_<base64>` or as plain base64 (surrounding
    /// whitespace ignored, `=` padding optional). The key must be at least [`MIN_KEY_LEN`]
    /// bytes.
    pub fn from_secret(secret: &str) -> Result<Signer, SigningError> {
        let secret = secret.trim();
        let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
        let key = LENIENT_BASE64
            .decode(encoded)
            .map_err(|_| SigningError::SecretNotBase64)?;
        if key.len() < MIN_KEY_LEN {
            return Err(SigningError::SecretTooShort { len: key.len() });
        }
        Signer::from_key(&key)
    }

    /// A new random secret ([`GENERATED_KEY_LEN`] bytes from the thread-local CSPRNG) and its
    /// signer; the string (`whsec_…`) is what goes into configuration and to the receiver.
    pub fn generate() -> (Signer, String) {
        let mut key = [0u8; GENERATED_KEY_LEN];
        rand::rng().fill_bytes(&mut key);
        let secret = format!("{SECRET_PREFIX}{}", STANDARD.encode(key));
        // HMAC zero-pads a key shorter than the hash's block to the block size, so keying
        // with the padded block is the same MAC as `new_from_slice(&key)` (the round-trip
        // test checks this) and cannot fail.
        let mut block = Block::default();
        for (b, k) in block.iter_mut().zip(key) {
            *b = k;
        }
        let mac = <HmacSha256 as KeyInit>::new(&block);
        (Signer { mac }, secret)
    }

    fn from_key(key: &[u8]) -> Result<Signer, SigningError> {
        let mac = <HmacSha256 as KeyInit>::new_from_slice(key)
            .map_err(|_| SigningError::SecretTooShort { len: key.len() })?;
        Ok(Signer { mac })
    }

    /// The `webhook-signature` value for one message: `v1,<base64 HMAC-SHA256>` over
    /// `"{id}.{timestamp}.{body}"`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = self.keyed(id, timestamp, body).finalize().into_bytes();
        format!("v1,{}", STANDARD.encode(tag))
    }

    /// The three headers for one message, as `(name, value)` pairs: `webhook-id`,
    /// `webhook-timestamp`, `webhook-signature`. `id` must be unique per notification and
    /// kept across its retries; `timestamp` is the Unix time of this attempt. One signer's
    /// case of [`headers`].
    pub fn headers(&self, id: &str, timestamp: i64, body: &[u8]) -> [(&'static str, String); 3] {
        headers([self], id, timestamp, body)
    }

    /// Verifies a received message: the timestamp must be within `tolerance_secs` of `now`
    /// (Unix seconds; both directions, see [`DEFAULT_TOLERANCE_SECS`]) and at least one `v1`
    /// entry of the signature header must match `body` (compared in constant time). Entries
    /// of other versions are ignored.
    pub fn verify(
        &self,
        headers: &WebhookHeaders<'_>,
        body: &[u8],
        now: i64,
        tolerance_secs: i64,
    ) -> Result<(), SigningError> {
        let timestamp: i64 = headers
            .timestamp
            .trim()
            .parse()
            .map_err(|_| SigningError::BadTimestamp)?;
        if now.saturating_sub(timestamp) > tolerance_secs {
            return Err(SigningError::TimestampTooOld);
        }
        if timestamp.saturating_sub(now) > tolerance_secs {
            return Err(SigningError::TimestampTooNew);
        }
        let mut any_v1 = false;
        for entry in headers.signature.split_whitespace() {
            let Some(("v1", encoded)) = entry.split_once(',') else {
                continue;
            };
            any_v1 = true;
            let Ok(tag) = STANDARD.decode(encoded) else {
                continue;
            };
            if self
                .keyed(headers.id, timestamp, body)
                .verify_slice(&tag)
                .is_ok()
            {
                return Ok(());
            }
        }
        Err(if any_v1 {
            SigningError::SignatureMismatch
        } else {
            SigningError::NoSignature
        })
    }

    fn keyed(&self, id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The Standard Webhooks test vector (the reference libraries' tests).
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn signer() -> Signer {
        Signer::from_secret(SECRET).expect("test vector secret")
    }

    fn received<'a>(signature: &'a str, timestamp: &'a str) -> WebhookHeaders<'a> {
        WebhookHeaders {
            id: MSG_ID,
            timestamp,
            signature,
        }
    }

    /// Several signers (a rotation window): one signature each in one header, and a receiver
    /// with any one of the secrets verifies; a third secret does not. No signer: an empty
    /// signature. One signer: what `Signer::headers` gives.
    #[test]
    fn headers_carry_one_signature_per_signer() {
        let (old, _) = Signer::generate();
        let (new, _) = Signer::generate();
        let (other, _) = Signer::generate();
        let both = headers([&old, &new], MSG_ID, TIMESTAMP, BODY);
        assert_eq!(both[0], (HEADER_ID, MSG_ID.to_owned()));
        assert_eq!(both[1], (HEADER_TIMESTAMP, TIMESTAMP.to_string()));
        assert_eq!(both[2].0, HEADER_SIGNATURE);
        assert_eq!(both[2].1.split(' ').count(), 2);
        let got = received(&both[2].1, &both[1].1);
        assert_eq!(old.verify(&got, BODY, TIMESTAMP, 300), Ok(()));
        assert_eq!(new.verify(&got, BODY, TIMESTAMP, 300), Ok(()));
        assert_eq!(
            other.verify(&got, BODY, TIMESTAMP, 300),
            Err(SigningError::SignatureMismatch)
        );
        assert_eq!(
            headers(std::iter::empty(), MSG_ID, TIMESTAMP, BODY)[2].1,
            ""
        );
        assert_eq!(
            headers([&signer()], MSG_ID, TIMESTAMP, BODY),
            signer().headers(MSG_ID, TIMESTAMP, BODY)
        );
    }

    #[test]
    fn official_test_vector() {
        let signer = signer();
        assert_eq!(signer.sign(MSG_ID, TIMESTAMP, BODY), SIGNATURE);
        let headers = signer.headers(MSG_ID, TIMESTAMP, BODY);
        assert_eq!(
            headers,
            [
                ("webhook-id", MSG_ID.to_owned()),
                ("webhook-timestamp", "1614265330".to_owned()),
                ("webhook-signature", SIGNATURE.to_owned()),
            ]
        );
        let ts = TIMESTAMP.to_string();
        assert_eq!(
            signer.verify(
                &received(SIGNATURE, &ts),
                BODY,
                TIMESTAMP,
                DEFAULT_TOLERANCE_SECS
            ),
            Ok(())
        );
    }

    #[test]
    fn plain_base64_secret_is_the_same_key() {
        let plain = Signer::from_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("plain base64");
        assert_eq!(plain.sign(MSG_ID, TIMESTAMP, BODY), SIGNATURE);
        let padded = Signer::from_secret(" whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n")
            .expect("whitespace trimmed");
        assert_eq!(padded.sign(MSG_ID, TIMESTAMP, BODY), SIGNATURE);
    }

    #[test]
    fn bad_secrets_refused() {
        assert_eq!(
            Signer::from_secret("whsec_not base64!").err(),
            Some(SigningError::SecretNotBase64)
        );
        assert_eq!(
            Signer::from_secret("whsec_c2hvcnQ=").err(),
            Some(SigningError::SecretTooShort { len: 5 })
        );
        assert_eq!(
            Signer::from_secret("").err(),
            Some(SigningError::SecretTooShort { len: 0 })
        );
    }

    #[test]
    fn tampered_body_fails() {
        let ts = TIMESTAMP.to_string();
        assert_eq!(
            signer().verify(
                &received(SIGNATURE, &ts),
                br#"{"test": 2432232315}"#,
                TIMESTAMP,
                DEFAULT_TOLERANCE_SECS
            ),
            Err(SigningError::SignatureMismatch)
        );
    }

    #[test]
    fn tampered_id_or_timestamp_fails() {
        let s = signer();
        let ts = TIMESTAMP.to_string();
        let other_id = WebhookHeaders {
            id: "msg_other",
            timestamp: &ts,
            signature: SIGNATURE,
        };
        assert_eq!(
            s.verify(&other_id, BODY, TIMESTAMP, DEFAULT_TOLERANCE_SECS),
            Err(SigningError::SignatureMismatch)
        );
        let ts1 = (TIMESTAMP + 1).to_string();
        assert_eq!(
            s.verify(
                &received(SIGNATURE, &ts1),
                BODY,
                TIMESTAMP,
                DEFAULT_TOLERANCE_SECS
            ),
            Err(SigningError::SignatureMismatch)
        );
    }

    #[test]
    fn wrong_key_fails() {
        let (other, secret) = Signer::generate();
        assert!(secret.starts_with("whsec_"));
        let ts = TIMESTAMP.to_string();
        assert_eq!(
            other.verify(
                &received(SIGNATURE, &ts),
                BODY,
                TIMESTAMP,
                DEFAULT_TOLERANCE_SECS
            ),
            Err(SigningError::SignatureMismatch)
        );
    }

    #[test]
    fn old_and_future_timestamps_fail() {
        let s = signer();
        let ts = TIMESTAMP.to_string();
        let h = received(SIGNATURE, &ts);
        let tol = DEFAULT_TOLERANCE_SECS;
        assert_eq!(s.verify(&h, BODY, TIMESTAMP + tol, tol), Ok(()));
        assert_eq!(
            s.verify(&h, BODY, TIMESTAMP + tol + 1, tol),
            Err(SigningError::TimestampTooOld)
        );
        assert_eq!(s.verify(&h, BODY, TIMESTAMP - tol, tol), Ok(()));
        assert_eq!(
            s.verify(&h, BODY, TIMESTAMP - tol - 1, tol),
            Err(SigningError::TimestampTooNew)
        );
        // Extreme values neither overflow nor pass.
        assert_eq!(
            s.verify(&h, BODY, i64::MAX, tol),
            Err(SigningError::TimestampTooOld)
        );
        let min = i64::MIN.to_string();
        assert_eq!(
            s.verify(&received(SIGNATURE, &min), BODY, i64::MAX, tol),
            Err(SigningError::TimestampTooOld)
        );
        assert_eq!(
            s.verify(&received(SIGNATURE, "soon"), BODY, TIMESTAMP, tol),
            Err(SigningError::BadTimestamp)
        );
    }

    #[test]
    fn several_signatures_any_v1_match_wins() {
        let s = signer();
        let ts = TIMESTAMP.to_string();
        let list = format!("v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v1a,abc {SIGNATURE}");
        assert_eq!(
            s.verify(
                &received(&list, &ts),
                BODY,
                TIMESTAMP,
                DEFAULT_TOLERANCE_SECS
            ),
            Ok(())
        );
        // The right tag under another version label does not count.
        let relabelled = SIGNATURE.replacen("v1,", "v2,", 1);
        assert_eq!(
            s.verify(
                &received(&relabelled, &ts),
                BODY,
                TIMESTAMP,
                DEFAULT_TOLERANCE_SECS
            ),
            Err(SigningError::NoSignature)
        );
        assert_eq!(
            s.verify(
                &received("v1,!!notbase64!!", &ts),
                BODY,
                TIMESTAMP,
                DEFAULT_TOLERANCE_SECS
            ),
            Err(SigningError::SignatureMismatch)
        );
    }

    #[test]
    fn generated_secret_round_trips() {
        let (signer, secret) = Signer::generate();
        let again = Signer::from_secret(&secret).expect("generated secret parses");
        let sig = signer.sign("msg_1", 1_700_000_000, b"<x/>");
        assert_eq!(again.sign("msg_1", 1_700_000_000, b"<x/>"), sig);
        let (_, other) = Signer::generate();
        assert_ne!(secret, other);
        assert!(!format!("{signer:?}").contains(&secret[6..]));
    }

    #[test]
    fn headers_from_an_http_header_map() {
        let s = signer();
        let mut map = http::HeaderMap::new();
        for (name, value) in s.headers(MSG_ID, TIMESTAMP, BODY) {
            map.insert(name, value.parse().expect("header value"));
        }
        let h = WebhookHeaders::from_header_map(&map).expect("all three headers");
        assert_eq!(
            s.verify(&h, BODY, TIMESTAMP + 10, DEFAULT_TOLERANCE_SECS),
            Ok(())
        );
        map.remove(HEADER_SIGNATURE);
        assert_eq!(
            WebhookHeaders::from_header_map(&map).err(),
            Some(SigningError::MissingHeader("webhook-signature"))
        );
    }
}
