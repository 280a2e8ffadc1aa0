//! The production token source: OAuth 2.0 access tokens as JWTs, verified against the public
//! keys of a JWKS (RFC 7517).
//!
//! Accepted: `RS256` with RSA keys of 2048 to 4096 bits and `ES256` with P-256 keys; never
//! `none`, never HMAC (a JWKS is public, so a shared secret in it would let anyone mint
//! tokens), never keys named by the token itself (`jku`, `jwk`, `x5u` are ignored). Checked:
//! the signature, `exp` (required), `nbf` (when present), `iss` and `aud` (required, equal to
//! the configured values), the scope, and the claim naming the user(s).
//!
//! Keys come from JWKS text ([`JwtVerifier::from_jwks_json`]) or a file
//! ([`JwtVerifier::from_jwks_file`]); fetching and refreshing a JWKS from a URL is a later step
//! that only needs to call `from_jwks_json` again with the fetched document.

use super::{AuthError, InvalidToken, MAX_TOKEN_LEN, Principal, TokenVerifier, token_id};
use crate::address;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Mutex;

/// Smallest RSA modulus accepted, in bits.
const MIN_RSA_BITS: usize = 2048;

/// Largest RSA modulus the RustCrypto backend verifies with, in bits.
const MAX_RSA_BITS: usize = 4096;

/// What a token must say to be accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwtConfig {
    /// Required `iss`, e.g. `https://login.example.com/`.
    pub issuer: String,
    /// Required member of `aud`, e.g. `https://chat.example.com`.
    pub audience: String,
    /// The claim naming the user(s) the token may act for: one `tel:`/`sip:` address as a
    /// string, or an array of them. Default `sub`, which RFC 7519 makes a single string, so an
    /// array only works in a custom claim (e.g. `chat_users`); an array `sub` is refused.
    pub user_claim: String,
    /// A scope the token must carry, in `scope` (space-separated string, RFC 8693/9068) or `scp`
    /// (array, or space-separated string). `None` checks no scope. Default `Some("chat")`.
    pub required_scope: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds. Default 60.
    pub leeway_secs: u64,
}

impl JwtConfig {
    /// A configuration for `issuer` and `audience` with the defaults: users in `sub`, scope
    /// `chat` required, 60 s leeway.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        JwtConfig {
            issuer: issuer.into(),
            audience: audience.into(),
            user_claim: "sub".to_owned(),
            required_scope: Some("chat".to_owned()),
            leeway_secs: 60,
        }
    }
}

/// Why a JWKS or a [`JwtConfig`] cannot be used.
#[derive(Debug)]
pub enum JwtConfigError {
    /// The JWKS file could not be read.
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The text is not a JWKS (`{"keys": [...]}`).
    NotAJwks(String),
    /// A key that looks usable (RS256/ES256 signature key) is broken; the text names it.
    BadKey(String),
    /// Two usable keys share a `kid`.
    DuplicateKid(String),
    /// No key in the JWKS can verify RS256 or ES256 tokens; the text lists why each was skipped.
    NoUsableKeys(String),
    /// A configuration value is empty or malformed; the text says which.
    BadConfig(String),
}

impl fmt::Display for JwtConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwtConfigError::Io { path, source } => {
                write!(f, "JWKS file {}: {source}", path.display())
            }
            JwtConfigError::NotAJwks(why) => write!(f, "not a JWKS: {why}"),
            JwtConfigError::BadKey(why) => write!(f, "JWKS: {why}"),
            JwtConfigError::DuplicateKid(kid) => {
                write!(f, "JWKS: two usable keys have kid {kid:?}")
            }
            JwtConfigError::NoUsableKeys(why) => write!(
                f,
                "JWKS has no RS256 (RSA >= {MIN_RSA_BITS} bits) or ES256 (P-256) signature key{why}"
            ),
            JwtConfigError::BadConfig(why) => write!(f, "JWT configuration: {why}"),
        }
    }
}

impl std::error::Error for JwtConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            JwtConfigError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// One verification key.
struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// Verifies JWT access tokens against the keys of a JWKS.
pub struct JwtVerifier {
    keys: Vec<Key>,
    config: JwtConfig,
    skipped: Vec<String>,
    /// Tokens this verifier accepted recently ([`Verified`]).
    verified: Verified,
}

/// Most tokens [`Verified`] holds (about 200 bytes each with their principal, at most
/// [`VERIFIED_ENTRY_BYTES`]: under 5 MiB).
pub const VERIFIED_CAP: usize = 4096;

/// Most bytes a principal [`Verified`] keeps may hold (its addresses, each with its `String`,
/// and its ids): a token whose user claim lists more (a few dozen addresses) is verified again
/// each time instead. A token of an 8 KiB header could list some 700, 35 KiB as held: cached
/// 4,096 times, 140 MiB.
pub const VERIFIED_ENTRY_BYTES: usize = 1024;

/// Tokens a verifier accepted recently, so that a token presented again (each request of an
/// application, each frame and quiet round of its socket) costs a SHA-256 and a map lookup
/// instead of a signature verification (BENCHMARKS.md "JWT verification"). Keyed by the
/// token's SHA-256 (the token itself is never kept); each entry holds the principal that
/// verification concluded and the claims that make the token lapse (`exp`, `nbf`), checked
/// again at every hit by the rule jsonwebtoken applies ([`in_force`]), so a cached token
/// expires at the same second as an uncached one.
///
/// Only acceptances are kept: a refused token is verified (and refused) again each time,
/// as before. Nothing else can change the verdict: the keys, the issuer, the audience, the
/// scope and the user claim are fixed for the verifier's life (read at start; other keys
/// mean another verifier, with an empty cache), and a token's bytes fix its claims.
///
/// Bounded by [`VERIFIED_CAP`]: when full, the lapsed entries go first, then an arbitrary
/// one, so a client presenting ever new tokens (each must be validly signed to get in)
/// churns the cache but never grows it.
#[derive(Default)]
struct Verified(Mutex<HashMap<[u8; 32], Accepted>>);

/// What verifying one token concluded.
#[derive(Clone)]
struct Accepted {
    principal: Principal,
    /// `exp`, seconds since the epoch (required: verification refuses a token without it).
    exp: u64,
    /// `nbf`, when the token has one.
    nbf: Option<u64>,
}

impl Verified {
    /// The cached verdict on the token with SHA-256 `key` at `now` (seconds), if it was
    /// accepted before: the principal while it is in force, else why not (and the entry goes).
    fn get(
        &self,
        key: &[u8; 32],
        now: u64,
        leeway: u64,
    ) -> Option<Result<Principal, InvalidToken>> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let hit = map.get(key)?;
        match in_force(hit.exp, hit.nbf, now, leeway) {
            Ok(()) => Some(Ok(hit.principal.clone())),
            Err(why) => {
                map.remove(key);
                Some(Err(why))
            }
        }
    }

    /// The token id of the accepted token with SHA-256 `key`, in force or not.
    fn peek(&self, key: &[u8; 32]) -> Option<String> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key).map(|a| a.principal.token_id.clone())
    }

    /// Keeps an accepted token, making room as [`Verified`] says; not one whose principal is
    /// over [`VERIFIED_ENTRY_BYTES`].
    fn put(&self, key: [u8; 32], accepted: Accepted, now: u64, leeway: u64) {
        let p = &accepted.principal;
        let string = std::mem::size_of::<String>();
        let held = p.users.iter().map(|u| string + u.len()).sum::<usize>()
            + p.subject.len()
            + p.token_id.len();
        if held > VERIFIED_ENTRY_BYTES {
            return;
        }
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= VERIFIED_CAP && !map.contains_key(&key) {
            map.retain(|_, a| in_force(a.exp, a.nbf, now, leeway).is_ok());
            if map.len() >= VERIFIED_CAP
                && let Some(any) = map.keys().next().copied()
            {
                map.remove(&any);
            }
        }
        map.insert(key, accepted);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Whether a token with `exp` and `nbf` is in force at `now` with `leeway` (all seconds): the
/// rule jsonwebtoken's validation applies (`exp < now - leeway` has expired, `nbf > now +
/// leeway` is not valid yet), applied again to a cached verdict ([`Verified`]).
fn in_force(exp: u64, nbf: Option<u64>, now: u64, leeway: u64) -> Result<(), InvalidToken> {
    if exp < now.saturating_sub(leeway) {
        return Err(InvalidToken::Expired);
    }
    if nbf.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
        return Err(InvalidToken::NotYetValid);
    }
    Ok(())
}

/// A numeric date claim as jsonwebtoken reads it: an unsigned integer, or a finite
/// non-negative number rounded.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Option<u64> {
    let v = claims.get(name)?;
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0 && *f < u64::MAX as f64)
            .map(|f| f.round() as u64)
    })
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<String> = self
            .keys
            .iter()
            .map(|k| format!("{:?} {:?}", k.alg, k.kid))
            .collect();
        f.debug_struct("JwtVerifier")
            .field("keys", &keys)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// Reads a JWKS file; see [`from_jwks_json`](Self::from_jwks_json).
    pub fn from_jwks_file(
        path: impl AsRef<Path>,
        config: JwtConfig,
    ) -> Result<JwtVerifier, JwtConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| JwtConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        JwtVerifier::from_jwks_json(&text, config)
    }

    /// Builds a verifier from JWKS text and `config`. Keys that cannot verify RS256/ES256
    /// signatures (encryption keys, symmetric keys, other curves or algorithms, RSA below 2048
    /// bits, unparseable entries) are skipped and listed by
    /// [`skipped_keys`](Self::skipped_keys); a usable-looking key that is broken, two usable
    /// keys with one `kid`, or no usable key at all is an error.
    pub fn from_jwks_json(jwks: &str, config: JwtConfig) -> Result<JwtVerifier, JwtConfigError> {
        check_config(&config)?;
        let document: Value =
            serde_json::from_str(jwks).map_err(|e| JwtConfigError::NotAJwks(e.to_string()))?;
        let entries = document
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| JwtConfigError::NotAJwks("no \"keys\" array".to_owned()))?;
        let mut keys: Vec<Key> = Vec::new();
        let mut skipped = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            let name = match entry.get("kid").and_then(Value::as_str) {
                Some(kid) => format!("key {index} (kid {kid:?})"),
                None => format!("key {index}"),
            };
            let jwk: Jwk = match serde_json::from_value(entry.clone()) {
                Ok(jwk) => jwk,
                Err(e) => {
                    skipped.push(format!("{name}: not a JWK we understand ({e})"));
                    continue;
                }
            };
            match usable_algorithm(&jwk) {
                Ok(alg) => {
                    let key = DecodingKey::from_jwk(&jwk)
                        .map_err(|e| JwtConfigError::BadKey(format!("{name}: {e}")))?;
                    probe(&jwk, &key, alg)
                        .map_err(|e| JwtConfigError::BadKey(format!("{name}: {e}")))?;
                    let kid = jwk.common.key_id.clone();
                    if let Some(kid) = &kid
                        && keys.iter().any(|k| k.kid.as_ref() == Some(kid))
                    {
                        return Err(JwtConfigError::DuplicateKid(kid.clone()));
                    }
                    keys.push(Key { kid, alg, key });
                }
                Err(why) => skipped.push(format!("{name}: {why}")),
            }
        }
        if keys.is_empty() {
            let why = if skipped.is_empty() {
                String::new()
            } else {
                format!(" ({})", skipped.join("; "))
            };
            return Err(JwtConfigError::NoUsableKeys(why));
        }
        Ok(JwtVerifier {
            keys,
            config,
            skipped,
            verified: Verified::default(),
        })
    }

    /// Keys of the JWKS that were not loaded, each with the reason (for a start-up log).
    pub fn skipped_keys(&self) -> &[String] {
        &self.skipped
    }

    /// Number of keys loaded.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// The key a token with header `alg`/`kid` names: by `kid` (which must also have `alg`);
    /// without a `kid`, the only key for `alg`.
    fn key_for(&self, alg: Algorithm, kid: Option<&str>) -> Option<&Key> {
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid) && k.alg == alg),
            None => {
                let mut candidates = self.keys.iter().filter(|k| k.alg == alg);
                let first = candidates.next()?;
                candidates.next().is_none().then_some(first)
            }
        }
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut validation = Validation::new(alg);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.leeway = self.config.leeway_secs;
        validation
    }
}

impl TokenVerifier for JwtVerifier {
    /// A token accepted before is answered from [`Verified`]; any other is verified.
    fn verify(&self, bearer: &str) -> Result<Principal, AuthError> {
        if bearer.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Invalid(InvalidToken::NotAJwt));
        }
        let key = super::digest(bearer);
        let (now, leeway) = (
            jsonwebtoken::get_current_timestamp(),
            self.config.leeway_secs,
        );
        if let Some(verdict) = self.verified.get(&key, now, leeway) {
            return verdict.map_err(AuthError::Invalid);
        }
        let accepted = self.verify_signed(bearer)?;
        let principal = accepted.principal.clone();
        self.verified.put(key, accepted, now, leeway);
        Ok(principal)
    }

    /// The subject's id, from [`Verified`] (where the request's verification left it); a
    /// token no longer there (evicted since) is charged under its own digest.
    fn token_id_of(&self, bearer: &str) -> String {
        self.verified
            .peek(&super::digest(bearer))
            .unwrap_or_else(|| token_id(bearer))
    }
}

impl JwtVerifier {
    /// Verifies `bearer` (at most [`MAX_TOKEN_LEN`] bytes) in full: the header, the signature,
    /// the registered claims, the scope and the user claim.
    fn verify_signed(&self, bearer: &str) -> Result<Accepted, AuthError> {
        let invalid = |why| Err(AuthError::Invalid(why));
        let Ok(header) = jsonwebtoken::decode_header(bearer) else {
            return invalid(InvalidToken::NotAJwt);
        };
        if header.crit.is_some() {
            return invalid(InvalidToken::UnsupportedCritical);
        }
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return invalid(InvalidToken::UnsupportedAlgorithm(format!(
                "{:?}",
                header.alg
            )));
        }
        let Some(key) = self.key_for(header.alg, header.kid.as_deref()) else {
            return invalid(InvalidToken::UnknownKey);
        };
        let claims = match jsonwebtoken::decode::<Map<String, Value>>(
            bearer,
            &key.key,
            &self.validation(key.alg),
        ) {
            Ok(data) => data.claims,
            Err(e) => {
                // The header was read above, so these kinds come from the claims, after the
                // signature verified: often a registered claim of the wrong JSON type (an array
                // `sub` breaks jsonwebtoken's parser, an object `iss` reads as missing). Say
                // which, rather than "not a JWT" or "no iss claim".
                let after_signature = matches!(
                    e.kind(),
                    ErrorKind::Json(_)
                        | ErrorKind::MissingRequiredClaim(_)
                        | ErrorKind::InvalidClaimFormat(_)
                );
                let signed = after_signature.then(|| signed_claims(bearer)).flatten();
                let wrong_type = signed
                    .as_ref()
                    .and_then(|claims| registered_claim_types(claims).err());
                // A date claim that is there but no date jsonwebtoken reads (`1e30`, `-5`)
                // was told as missing ("it has no exp claim": the channels review).
                let out_of_range = match (e.kind(), &signed) {
                    (ErrorKind::MissingRequiredClaim(c), Some(claims))
                        if claims.contains_key(c) =>
                    {
                        Some(out_of_range(c))
                    }
                    _ => None,
                };
                return invalid(
                    wrong_type
                        .or(out_of_range)
                        .unwrap_or_else(|| self.reason(e.kind())),
                );
            }
        };
        registered_claim_types(&claims).map_err(AuthError::Invalid)?;

        if let Some(scope) = &self.config.required_scope
            && !has_scope(&claims, scope)
        {
            return invalid(InvalidToken::MissingScope(scope.clone()));
        }
        let users = self.users(&claims).map_err(AuthError::Invalid)?;
        let subject = match claims.get("sub").and_then(Value::as_str) {
            Some(sub) => sub.to_owned(),
            None => users.first().cloned().unwrap_or_default(),
        };
        // Validation required `exp`: there, but maybe no date this reads (out of range).
        let Some(exp) = numeric_date(&claims, "exp") else {
            return invalid(match claims.contains_key("exp") {
                true => out_of_range("exp"),
                false => InvalidToken::MissingClaim("exp".to_owned()),
            });
        };
        Ok(Accepted {
            principal: Principal {
                users,
                token_id: super::subject_id(&subject),
                subject,
            },
            exp,
            nbf: numeric_date(&claims, "nbf"),
        })
    }
}

/// A date claim (`exp`, `nbf`) that is there but no date: not a whole number of seconds
/// since 1970 in range.
fn out_of_range(claim: &str) -> InvalidToken {
    InvalidToken::BadClaim(format!(
        "its {claim} claim is out of range (seconds since 1970, a whole number)"
    ))
}

impl JwtVerifier {
    /// What a jsonwebtoken error means for the client.
    fn reason(&self, kind: &ErrorKind) -> InvalidToken {
        match kind {
            ErrorKind::InvalidSignature => InvalidToken::BadSignature,
            ErrorKind::ExpiredSignature => InvalidToken::Expired,
            ErrorKind::ImmatureSignature => InvalidToken::NotYetValid,
            ErrorKind::InvalidAudience => InvalidToken::WrongAudience(self.config.audience.clone()),
            ErrorKind::InvalidIssuer => InvalidToken::WrongIssuer(self.config.issuer.clone()),
            ErrorKind::MissingRequiredClaim(claim) => InvalidToken::MissingClaim(claim.clone()),
            ErrorKind::InvalidClaimFormat(claim) => {
                InvalidToken::BadClaim(format!("its {claim} claim has the wrong type"))
            }
            ErrorKind::InvalidToken
            | ErrorKind::Base64(_)
            | ErrorKind::Json(_)
            | ErrorKind::Utf8(_) => InvalidToken::NotAJwt,
            _ => InvalidToken::Unverifiable,
        }
    }

    /// The canonical addresses named by the user claim.
    fn users(&self, claims: &Map<String, Value>) -> Result<Vec<String>, InvalidToken> {
        let claim = &self.config.user_claim;
        let bad = |why: &str| InvalidToken::BadClaim(format!("its {claim} claim {why}"));
        let values: Vec<&str> = match claims.get(claim) {
            None | Some(Value::Null) => return Err(InvalidToken::MissingClaim(claim.clone())),
            Some(Value::String(user)) => vec![user.as_str()],
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .ok_or_else(|| bad("holds a value that is not a string"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(bad("is neither an address nor an array of addresses")),
        };
        let mut users: Vec<String> = Vec::with_capacity(values.len());
        for value in values {
            let canonical = address::canonical(value)
                .map_err(|_| bad("holds a value that is not a tel: or sip: address"))?;
            if !users.contains(&canonical) {
                users.push(canonical);
            }
        }
        if users.is_empty() {
            return Err(bad("names no user"));
        }
        Ok(users)
    }
}

/// RFC 7519 §4.1: `iss`, `sub` and `jti` are each one string (a StringOrURI, or a string),
/// never an array. jsonwebtoken accepts an array `iss` when it holds the configured issuer, and
/// fails on an array `sub` as unparseable JSON; this rule is checked on every token instead,
/// with a message that says what is wrong. (`aud` may be an array; `exp`/`nbf` are checked by
/// jsonwebtoken.) A token that acts for several users lists them in a custom claim chosen with
/// `NETAPI_CHAT_JWT_USER_CLAIM` (see [`JwtConfig::user_claim`]).
fn registered_claim_types(claims: &Map<String, Value>) -> Result<(), InvalidToken> {
    for name in ["iss", "sub", "jti"] {
        match claims.get(name) {
            None | Some(Value::String(_)) => {}
            Some(Value::Array(_)) if name == "sub" => {
                return Err(InvalidToken::BadClaim(
                    "its sub claim is an array; RFC 7519 makes sub one string (a single user); \
                     to name several users, use a custom claim set by \
                     NETAPI_CHAT_JWT_USER_CLAIM, which may hold an array"
                        .to_owned(),
                ));
            }
            Some(_) => {
                return Err(InvalidToken::BadClaim(format!(
                    "its {name} claim is not a string (RFC 7519 makes {name} one string)"
                )));
            }
        }
    }
    Ok(())
}

/// The claims of a token whose signature jsonwebtoken has already verified, read as a JSON
/// object; `None` when the payload is not base64url JSON object text. Only for explaining a
/// claims error after verification: never a way to read an unverified token.
fn signed_claims(token: &str) -> Option<Map<String, Value>> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Whether `scope` is among the token's scopes: `scope` or `scp`, each a space-separated
/// string or an array of strings.
fn has_scope(claims: &Map<String, Value>, scope: &str) -> bool {
    ["scope", "scp"].iter().any(|name| match claims.get(*name) {
        Some(Value::String(s)) => s.split_ascii_whitespace().any(|t| t == scope),
        Some(Value::Array(items)) => items.iter().any(|v| v.as_str() == Some(scope)),
        _ => false,
    })
}

/// The algorithm a JWK verifies, or why it is skipped.
fn usable_algorithm(jwk: &Jwk) -> Result<Algorithm, String> {
    match &jwk.common.public_key_use {
        None | Some(PublicKeyUse::Signature) => {}
        Some(_) => return Err("not a signature key (use)".to_owned()),
    }
    if let Some(ops) = &jwk.common.key_operations
        && !ops.iter().any(|op| matches!(op, KeyOperations::Verify))
    {
        return Err("not a verification key (key_ops)".to_owned());
    }
    let declared = jwk.common.key_algorithm;
    match &jwk.algorithm {
        AlgorithmParameters::RSA(params) => {
            if !matches!(declared, None | Some(KeyAlgorithm::RS256)) {
                return Err(format!("RSA key for {declared:?}, only RS256 is accepted"));
            }
            let bits = modulus_bits(&params.n)?;
            if bits < MIN_RSA_BITS {
                return Err(format!(
                    "RSA key of {bits} bits (at least {MIN_RSA_BITS} needed)"
                ));
            }
            Ok(Algorithm::RS256)
        }
        AlgorithmParameters::EllipticCurve(params) => {
            if params.curve != EllipticCurve::P256 {
                return Err(format!(
                    "EC key on {:?}, only P-256 is accepted",
                    params.curve
                ));
            }
            if !matches!(declared, None | Some(KeyAlgorithm::ES256)) {
                return Err(format!("EC key for {declared:?}, only ES256 is accepted"));
            }
            Ok(Algorithm::ES256)
        }
        AlgorithmParameters::OctetKey(_) => {
            Err("symmetric key (oct): HMAC tokens are never accepted".to_owned())
        }
        AlgorithmParameters::OctetKeyPair(_) => Err("OKP key: EdDSA is not accepted".to_owned()),
        _ => Err("unsupported key type".to_owned()),
    }
}

/// The big-endian bytes of a base64url RSA component (`n` or `e`), leading zeros removed.
fn rsa_component<'a>(name: &str, value: &str, buffer: &'a mut Vec<u8>) -> Result<&'a [u8], String> {
    *buffer = URL_SAFE_NO_PAD
        .decode(value.trim_end_matches('='))
        .map_err(|_| format!("RSA {name} is not base64url"))?;
    match buffer.iter().position(|b| *b != 0) {
        Some(start) => Ok(&buffer[start..]),
        None => Err(format!("RSA {name} is zero")),
    }
}

/// Size in bits of a base64url RSA modulus.
fn modulus_bits(n: &str) -> Result<usize, String> {
    let mut buffer = Vec::new();
    let n = rsa_component("modulus n", n, &mut buffer)?;
    let leading = n.first().map_or(0, |b| b.leading_zeros() as usize);
    Ok(n.len() * 8 - leading)
}

/// Makes sure the crypto backend can use `key`, so that a broken key fails at start-up rather
/// than turning every token into "bad signature". RSA components are checked here (the backend
/// only parses them while verifying, and reports a broken key as a failed verification): an
/// odd modulus of at most 4096 bits and an odd exponent from 3 to 2^33-1 smaller than it. Other
/// keys are parsed by verifying a dummy signature, which must say "no", not fail.
fn probe(jwk: &Jwk, key: &DecodingKey, alg: Algorithm) -> Result<(), String> {
    if let AlgorithmParameters::RSA(params) = &jwk.algorithm {
        let bits = modulus_bits(&params.n)?;
        if bits > MAX_RSA_BITS {
            return Err(format!(
                "RSA key of {bits} bits (at most {MAX_RSA_BITS} supported)"
            ));
        }
        let (mut n_buffer, mut e_buffer) = (Vec::new(), Vec::new());
        let n = rsa_component("modulus n", &params.n, &mut n_buffer)?;
        let e = rsa_component("exponent e", &params.e, &mut e_buffer)?;
        let exponent = match e.len() {
            0..=8 => e.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)),
            _ => u64::MAX,
        };
        if n.last().is_none_or(|b| b % 2 == 0) {
            return Err("RSA modulus n is even".to_owned());
        }
        if !(3..=(1u64 << 33) - 1).contains(&exponent) || exponent % 2 == 0 {
            return Err("RSA exponent e must be odd, from 3 to 2^33-1".to_owned());
        }
        return Ok(());
    }
    jsonwebtoken::crypto::verify("AA", b"probe", key, alg)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Checks the configuration values.
fn check_config(config: &JwtConfig) -> Result<(), JwtConfigError> {
    let bad = |what: &str| Err(JwtConfigError::BadConfig(what.to_owned()));
    if config.issuer.trim().is_empty() {
        return bad("the issuer is empty");
    }
    if config.audience.trim().is_empty() {
        return bad("the audience is empty");
    }
    if config.user_claim.trim().is_empty() {
        return bad("the user claim is empty");
    }
    if let Some(scope) = &config.required_scope
        && (scope.is_empty() || scope.contains(char::is_whitespace))
    {
        return bad("the required scope must be one non-empty word");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The keys below were generated once with OpenSSL 3 for these tests only:
    //! `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048` (then
    //! `openssl rsa -traditional -outform DER`: PKCS#1) and
    //! `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256` (then
    //! `openssl pkcs8 -topk8 -nocrypt -outform DER`: PKCS#8), base64 below; the JWKS holds the
    //! public halves of `RSA_1` and `EC_1` (`EC_2` is an outsider's key).

    use super::super::{ACR_AUTH, authenticate, resolve_user};
    use super::*;
    use base64::engine::general_purpose::STANDARD;
    use jsonwebtoken::{EncodingKey, Header, encode, get_current_timestamp};
    use serde_json::json;

    const RSA_1_PKCS1: &str = "
MIIEpAIBAAKCAQEAxYwB9gY63EErCCNBkJQx0xp+9NuM/ZhO1/yDkBcrvdtsCjWxXWj+f8eGk3o+
jCpwNv01DIsLLw/JofhYw2bz6yVZhlw2pbpaQRWyAtHtCRUS5M7l0M0acWiunFJJGAAYYY2mgqpk
9y/CZKoVVrW7mmjxwJ5AP6/iHuj4m0FRVu0KsLZvpfVdeiK2FWnpGHuR59z/LBuLrGIx9w9dbnzv
f1tG/v0fGHPe6M74nleDsd2KGFGBndS4sveUq81mfNzETXPJQjbE1IsncwFPvLt/UeE1FhHrtymI
0gUuSPgqrNtf2L8AahuGjH9+b8/BKPoBvR3I3ztiRj8yoehe4GaSlQIDAQABAoIBAAKrIsjJ3HhC
D2N25VBD8n/IPfzKxCk6hZ4hlKurL+NdGCTzu95Vlgld1+iKYFdZzR8cd6jXSbT1d8eqMZVVkx7J
5/GKjQ+SDQHGoxthN26hQvXu3PpxzR5bWhPn7u9oNFnSt5ir+pO/FmmU17wXsTk1v7P7HP0RiU3+
caePPZrB+XPMnolOluXD66gPEwyLT/9002KYUu38T/LRq/PhclICg69FJpp0IV3MKDmr6DhLbjLr
KHxVTXqrbDo0/OOGGYD4N46jre6mMVSncopTwmCNleXr4cuTZovEPHcA26KWDufLTymV1F95J10h
sJsenyZfTPnfVNJ8cW5rKFQWkGUCgYEA7uWq0OymCwZb+Vx8DrjiFP0jWsbfOEh7ksidI+hgwG0r
7evc39Mhr8/qM4LuxwQDdUGTtNS5ssAu188MkrlP/3wQFPJkMn4xOGQlqqVL6aFoxDhzOHxUAd3k
wnpvU1p4mL3UvxoaH5EOLP03KoyJd0WzgRVPL9QwlYmzzdaPudcCgYEA07CA4rNduLd0M37XjjmS
eUQMOdvBpcwjso8uS0BjA6VWuO+F0xHNLO28+0Xro7XtBifFiDE6Obfc2CbNO+IU4Nj9Gjl85Nzn
eAE1BoZuwuqa2Igr0MIcLISxb57knPy23giimCLQdi3v0O5tyLv55wDZI6ItBMSPRyBhNqm9wXMC
gYEAiqvyPZhAwgGM/fB7aqhTQ8+06AqspCUe5hNhc+h90PUOHOteqOYLldxgnEoShJ+Fyliofr1E
lcgM6OSc7cZ381t2klIpa03pEEzBuI5+xD0XbV8/MrioovTEx0b+vCm1+yOmDM///fbbfa32idJO
MVfaXMGb162aDhOCtacogr0CgYAAqK/+BKjqBkgqUN7C5pL6JagUFgcISRZjW+a8/TpRrJYUhUpZ
WdjVpvfLoHAXVl2ig0UuI1kXDOd3FMfWw+Fkwcgn6L3myHk/+mD74DdADBLnUaUxRSlpShBzVH9J
rc+z6Tr4VkNn2sTAVb2pvkwM2AfVAJA7T5FSm1syHF0m2QKBgQCxpPHSpHEwqO39SqANUNZ+/HUg
SGxcdp+1FTabGFiRSu5wBKKnHagw2oUjnoVxM0OBXa81YVTN6kn0kQthamNqp3VaZ9xvB6cw+IcB
HBQSZZ2H8rq6c3haergVCpWGuP0ky0doxftTOlQ09y/XPwd2+DnwQQIQoIcaAr24TNRWSw==";

    const RSA_1_N: &str = "xYwB9gY63EErCCNBkJQx0xp-9NuM_ZhO1_yDkBcrvdtsCjWxXWj-f8eGk3o-jCpwNv01DIsLLw_JofhYw2bz6yVZhlw2pbpaQRWyAtHtCRUS5M7l0M0acWiunFJJGAAYYY2mgqpk9y_CZKoVVrW7mmjxwJ5AP6_iHuj4m0FRVu0KsLZvpfVdeiK2FWnpGHuR59z_LBuLrGIx9w9dbnzvf1tG_v0fGHPe6M74nleDsd2KGFGBndS4sveUq81mfNzETXPJQjbE1IsncwFPvLt_UeE1FhHrtymI0gUuSPgqrNtf2L8AahuGjH9-b8_BKPoBvR3I3ztiRj8yoehe4GaSlQ";

    const EC_1_PKCS8: &str = "
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgJLFtJVKXciaWxjV253yX3hlDHkHy
ZnA0B70KRosAY3WhRANCAARl84/BgWoWGP1bmOWD0X4R/6T1DoohaVNLMet6BAKtH+1TJX411YzE
YqgRilNMtsXFAopCj+JnGy122QW5SjBF";
    const EC_1_X: &str = "ZfOPwYFqFhj9W5jlg9F-Ef-k9Q6KIWlTSzHregQCrR8";
    const EC_1_Y: &str = "7VMlfjXVjMRiqBGKU0y2xcUCikKP4mcbLXbZBblKMEU";

    const EC_2_PKCS8: &str = "
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgkD86LAmN9qAkjbYdQk+tIcgr28yq
HYBniopt8ur7z4ShRANCAAQ/KIrCQ6GZE0kQVpQFfdIiVlkRSGoZcZdKaVGqvl+Pz/By5m30rWPf
Auq45p/ZZnRRb5fjoWS1brdMyTXbuwiB";
    const EC_2_X: &str = "PyiKwkOhmRNJEFaUBX3SIlZZEUhqGXGXSmlRqr5fj88";
    const EC_2_Y: &str = "8HLmbfStY98C6rjmn9lmdFFvl-OhZLVut0zJNdu7CIE";

    const ISS: &str = "https://login.example.com/";
    const AUD: &str = "https://chat.example.com";
    const ALICE: &str = "tel:+15550100";
    const BOB: &str = "sip:bob@example.com";

    fn der(base64_text: &str) -> Vec<u8> {
        let compact: String = base64_text.split_whitespace().collect();
        STANDARD.decode(compact).expect("test key base64")
    }

    fn rsa_1() -> EncodingKey {
        EncodingKey::from_rsa_der(&der(RSA_1_PKCS1))
    }

    fn ec_1() -> EncodingKey {
        EncodingKey::from_ec_der(&der(EC_1_PKCS8))
    }

    fn ec_2() -> EncodingKey {
        EncodingKey::from_ec_der(&der(EC_2_PKCS8))
    }

    fn rsa_jwk(kid: &str) -> Value {
        json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": RSA_1_N, "e": "AQAB"})
    }

    fn ec_jwk(kid: &str, x: &str, y: &str) -> Value {
        json!({"kty": "EC", "kid": kid, "use": "sig", "crv": "P-256", "x": x, "y": y})
    }

    fn jwks() -> String {
        json!({"keys": [
            // Skipped: an encryption key, a symmetric key and an algorithm we do not take.
            {"kty": "RSA", "kid": "enc-1", "use": "enc", "alg": "RSA-OAEP", "n": RSA_1_N, "e": "AQAB"},
            {"kty": "oct", "kid": "hmac-1", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "ps-1", "alg": "PS256", "n": RSA_1_N, "e": "AQAB"},
            rsa_jwk("rsa-1"),
            ec_jwk("ec-1", EC_1_X, EC_1_Y),
        ]})
        .to_string()
    }

    fn verifier() -> JwtVerifier {
        JwtVerifier::from_jwks_json(&jwks(), JwtConfig::new(ISS, AUD)).expect("test JWKS loads")
    }

    fn now() -> i64 {
        i64::try_from(get_current_timestamp()).expect("time fits")
    }

    /// Valid claims for Alice: issuer, audience, scope, an hour to live.
    fn claims() -> Value {
        json!({
            "iss": ISS,
            "aud": AUD,
            "sub": ALICE,
            "scope": "openid chat",
            "iat": now(),
            "exp": now() + 3600,
        })
    }

    fn with(mut claims: Value, key: &str, value: Value) -> Value {
        claims[key] = value;
        claims
    }

    fn without(mut claims: Value, key: &str) -> Value {
        if let Some(map) = claims.as_object_mut() {
            map.remove(key);
        }
        claims
    }

    fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        encode(&header, claims, key).expect("test token signs")
    }

    fn rs256(claims: &Value) -> String {
        sign(Algorithm::RS256, Some("rsa-1"), &rsa_1(), claims)
    }

    fn invalid(token: &str) -> InvalidToken {
        match verifier().verify(token) {
            Err(AuthError::Invalid(why)) => why,
            other => panic!("expected an invalid token, got {other:?}"),
        }
    }

    #[test]
    fn loads_usable_keys_and_skips_the_rest() {
        let v = verifier();
        assert_eq!(v.key_count(), 2);
        let skipped = v.skipped_keys().join("\n");
        assert_eq!(v.skipped_keys().len(), 3, "{skipped}");
        assert!(
            skipped.contains("enc-1") && skipped.contains("use"),
            "{skipped}"
        );
        assert!(
            skipped.contains("hmac-1") && skipped.contains("HMAC"),
            "{skipped}"
        );
        assert!(
            skipped.contains("ps-1") && skipped.contains("RS256"),
            "{skipped}"
        );
    }

    #[test]
    fn rs256_token_verifies() {
        let token = rs256(&claims());
        let p = verifier().verify(&token).expect("valid RS256 token");
        assert_eq!(p.users, [ALICE]);
        assert_eq!(p.subject, ALICE);
        // One id per subject, whichever token of it (ops review O6), and not the token's.
        assert_eq!(p.token_id, crate::auth::subject_id(ALICE));
        assert_ne!(p.token_id, token_id(&token));
        let mut other = claims();
        other["jti"] = serde_json::json!("another-token-of-alice");
        let again = rs256(&other);
        assert_ne!(again, token);
        let v = verifier();
        assert_eq!(v.verify(&again).expect("valid").token_id, p.token_id);
        assert_eq!(v.token_id_of(&again), p.token_id, "from the cache");
        assert_eq!(v.token_id_of("never-seen"), token_id("never-seen"));
        assert_eq!(resolve_user(&p, ACR_AUTH).as_deref(), Ok(ALICE));
    }

    #[test]
    fn es256_token_verifies_with_an_array_user_claim_and_scp() {
        let config = JwtConfig {
            user_claim: "chat_users".to_owned(),
            ..JwtConfig::new(ISS, AUD)
        };
        let v = JwtVerifier::from_jwks_json(&jwks(), config).expect("jwks");
        let claims = json!({
            "iss": ISS,
            "aud": ["https://other.example.com", AUD],
            "sub": "user-7f3a",
            "chat_users": ["tel:+1-555-0100", BOB, ALICE],
            "scp": ["profile", "chat"],
            "exp": now() + 600,
            "nbf": now() - 10,
        });
        let token = sign(Algorithm::ES256, Some("ec-1"), &ec_1(), &claims);
        let p = authenticate(&v, Some(&format!("Bearer {token}"))).expect("valid ES256 token");
        assert_eq!(p.users, [ALICE, BOB]);
        assert_eq!(p.subject, "user-7f3a");
        assert_eq!(resolve_user(&p, ACR_AUTH).as_deref(), Ok(ALICE));
        assert_eq!(resolve_user(&p, BOB).as_deref(), Ok(BOB));
        assert!(resolve_user(&p, "tel:+15550199").is_err());
    }

    #[test]
    fn expired_token_is_refused() {
        let token = rs256(&with(claims(), "exp", json!(now() - 3600)));
        assert_eq!(invalid(&token), InvalidToken::Expired);
    }

    #[test]
    fn leeway_tolerates_small_clock_skew() {
        let token = rs256(&with(claims(), "exp", json!(now() - 30)));
        assert!(verifier().verify(&token).is_ok());
        let strict = JwtConfig {
            leeway_secs: 0,
            ..JwtConfig::new(ISS, AUD)
        };
        let v = JwtVerifier::from_jwks_json(&jwks(), strict).expect("jwks");
        assert_eq!(
            v.verify(&token),
            Err(AuthError::Invalid(InvalidToken::Expired))
        );
    }

    #[test]
    fn token_not_yet_valid_is_refused() {
        let token = rs256(&with(claims(), "nbf", json!(now() + 3600)));
        assert_eq!(invalid(&token), InvalidToken::NotYetValid);
    }

    #[test]
    fn wrong_audience_is_refused() {
        let token = rs256(&with(claims(), "aud", json!("https://other.example.com")));
        assert_eq!(invalid(&token), InvalidToken::WrongAudience(AUD.to_owned()));
        let token = rs256(&without(claims(), "aud"));
        assert_eq!(
            invalid(&token),
            InvalidToken::MissingClaim("aud".to_owned())
        );
    }

    #[test]
    fn wrong_issuer_is_refused() {
        let token = rs256(&with(claims(), "iss", json!("https://evil.example.com/")));
        assert_eq!(invalid(&token), InvalidToken::WrongIssuer(ISS.to_owned()));
        let token = rs256(&without(claims(), "iss"));
        assert_eq!(
            invalid(&token),
            InvalidToken::MissingClaim("iss".to_owned())
        );
    }

    #[test]
    fn token_without_exp_is_refused() {
        let token = rs256(&without(claims(), "exp"));
        assert_eq!(
            invalid(&token),
            InvalidToken::MissingClaim("exp".to_owned())
        );
    }

    /// An `exp` that is there but no date (a huge float, a negative number) is told as out of
    /// range, not as missing.
    #[test]
    fn an_exp_out_of_range_is_told_as_such() {
        for exp in [json!(1e30), json!(-5), json!(1.5e300)] {
            let token = rs256(&with(claims(), "exp", exp.clone()));
            match invalid(&token) {
                InvalidToken::BadClaim(why) => {
                    assert!(why.contains("exp claim is out of range"), "{exp}: {why}");
                }
                other => panic!("{exp}: {other:?}"),
            }
        }
    }

    #[test]
    fn signature_by_another_key_is_refused() {
        // An outsider signs with their own P-256 key but names ours.
        let token = sign(Algorithm::ES256, Some("ec-1"), &ec_2(), &claims());
        assert_eq!(invalid(&token), InvalidToken::BadSignature);
    }

    #[test]
    fn tampered_claims_are_refused() {
        let token = rs256(&claims());
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let forged =
            URL_SAFE_NO_PAD.encode(with(claims(), "sub", json!(BOB)).to_string().as_bytes());
        let tampered = format!("{}.{forged}.{}", parts[0], parts[2]);
        assert_eq!(invalid(&tampered), InvalidToken::BadSignature);
    }

    #[test]
    fn missing_scope_is_refused_with_insufficient_scope() {
        let token = rs256(&with(claims(), "scope", json!("openid profile")));
        let e = verifier().verify(&token).unwrap_err();
        assert_eq!(
            e,
            AuthError::Invalid(InvalidToken::MissingScope("chat".to_owned()))
        );
        assert_eq!(e.status(), http::StatusCode::FORBIDDEN);
        assert!(
            e.www_authenticate()
                .contains("error=\"insufficient_scope\"")
        );
        // A scope that merely contains the word does not count.
        let token = rs256(&with(claims(), "scope", json!("chatty")));
        assert!(matches!(invalid(&token), InvalidToken::MissingScope(_)));
        // No scope required: accepted.
        let config = JwtConfig {
            required_scope: None,
            ..JwtConfig::new(ISS, AUD)
        };
        let v = JwtVerifier::from_jwks_json(&jwks(), config).expect("jwks");
        let token = rs256(&without(claims(), "scope"));
        assert!(v.verify(&token).is_ok());
    }

    #[test]
    fn scp_as_a_string_counts() {
        let token = rs256(&with(without(claims(), "scope"), "scp", json!("read chat")));
        assert!(verifier().verify(&token).is_ok());
    }

    #[test]
    fn user_claim_must_name_addresses() {
        let token = rs256(&without(claims(), "sub"));
        assert_eq!(
            invalid(&token),
            InvalidToken::MissingClaim("sub".to_owned())
        );
        let token = rs256(&with(claims(), "sub", json!("user-7f3a")));
        assert!(matches!(invalid(&token), InvalidToken::BadClaim(_)));
        let token = rs256(&with(claims(), "sub", json!(42)));
        assert!(matches!(invalid(&token), InvalidToken::BadClaim(_)));
        let config = JwtConfig {
            user_claim: "chat_users".to_owned(),
            ..JwtConfig::new(ISS, AUD)
        };
        let v = JwtVerifier::from_jwks_json(&jwks(), config).expect("jwks");
        for users in [json!([]), json!([ALICE, 7]), json!([ALICE, "bob"])] {
            let token = rs256(&with(claims(), "chat_users", users.clone()));
            assert!(
                matches!(
                    v.verify(&token),
                    Err(AuthError::Invalid(InvalidToken::BadClaim(_)))
                ),
                "{users}"
            );
        }
    }

    #[test]
    fn iss_as_an_array_is_refused_even_when_it_holds_the_issuer() {
        for iss in [
            json!([ISS]),
            json!([ISS, "https://evil.example.com/"]),
            json!({"a": ISS}),
        ] {
            let token = rs256(&with(claims(), "iss", iss.clone()));
            assert_eq!(
                invalid(&token),
                InvalidToken::BadClaim(
                    "its iss claim is not a string (RFC 7519 makes iss one string)".to_owned()
                ),
                "{iss}"
            );
        }
        let token = rs256(&with(claims(), "jti", json!(["a", "b"])));
        assert!(matches!(invalid(&token), InvalidToken::BadClaim(why) if why.contains("jti")));
    }

    #[test]
    fn sub_as_an_array_is_refused_with_a_pointer_to_the_user_claim() {
        for sub in [json!([ALICE]), json!([ALICE, BOB]), json!({"user": ALICE})] {
            let token = rs256(&with(claims(), "sub", sub.clone()));
            let why = invalid(&token);
            assert!(
                matches!(&why, InvalidToken::BadClaim(text) if text.contains("sub")),
                "{sub}: {why:?}"
            );
        }
        let token = rs256(&with(claims(), "sub", json!([ALICE, BOB])));
        assert!(matches!(invalid(&token), InvalidToken::BadClaim(text)
                if text.contains("NETAPI_CHAT_JWT_USER_CLAIM")),);
        // Also when the users are in a custom claim: sub keeps its RFC 7519 type.
        let config = JwtConfig {
            user_claim: "chat_users".to_owned(),
            ..JwtConfig::new(ISS, AUD)
        };
        let v = JwtVerifier::from_jwks_json(&jwks(), config).expect("jwks");
        let token = rs256(&with(
            with(claims(), "chat_users", json!([ALICE, BOB])),
            "sub",
            json!([ALICE]),
        ));
        assert!(matches!(
            v.verify(&token),
            Err(AuthError::Invalid(InvalidToken::BadClaim(_)))
        ));
        let token = rs256(&with(claims(), "chat_users", json!([ALICE, BOB])));
        assert_eq!(
            v.verify(&token).map(|p| p.users),
            Ok(vec![ALICE.to_owned(), BOB.to_owned()])
        );
    }

    #[test]
    fn a_claims_error_is_only_explained_after_the_signature_verified() {
        // Signed by an outsider: the array sub must not be reported, the signature is.
        let token = sign(
            Algorithm::ES256,
            Some("ec-1"),
            &ec_2(),
            &with(claims(), "sub", json!([ALICE])),
        );
        assert_eq!(invalid(&token), InvalidToken::BadSignature);
    }

    #[test]
    fn registered_claim_types_rule() {
        let map = |v: Value| v.as_object().cloned().unwrap_or_default();
        assert_eq!(registered_claim_types(&map(claims())), Ok(()));
        assert_eq!(registered_claim_types(&map(json!({}))), Ok(()));
        assert_eq!(
            registered_claim_types(&map(json!({"aud": ["a", "b"], "jti": "x"}))),
            Ok(())
        );
        for bad in [
            json!({"iss": ["x"]}),
            json!({"iss": 1}),
            json!({"iss": null}),
            json!({"sub": ["tel:+1"]}),
            json!({"sub": true}),
            json!({"jti": 7}),
        ] {
            assert!(
                matches!(
                    registered_claim_types(&map(bad.clone())),
                    Err(InvalidToken::BadClaim(_))
                ),
                "{bad}"
            );
        }
        assert_eq!(signed_claims("a.b"), None);
        assert_eq!(
            signed_claims(&format!("x.{}.y", URL_SAFE_NO_PAD.encode(b"{\"sub\":[1]}"))),
            Some(map(json!({"sub": [1]})))
        );
    }

    #[test]
    fn unknown_kid_is_refused() {
        let token = sign(Algorithm::RS256, Some("rsa-9"), &rsa_1(), &claims());
        assert_eq!(invalid(&token), InvalidToken::UnknownKey);
        // A kid of the other algorithm's key does not count either.
        let token = sign(Algorithm::RS256, Some("ec-1"), &rsa_1(), &claims());
        assert_eq!(invalid(&token), InvalidToken::UnknownKey);
    }

    #[test]
    fn token_without_kid_uses_the_only_key_for_its_algorithm() {
        let token = sign(Algorithm::RS256, None, &rsa_1(), &claims());
        assert!(verifier().verify(&token).is_ok());
        let two_ec = json!({"keys": [
            ec_jwk("ec-1", EC_1_X, EC_1_Y),
            ec_jwk("ec-2", EC_2_X, EC_2_Y),
        ]})
        .to_string();
        let v = JwtVerifier::from_jwks_json(&two_ec, JwtConfig::new(ISS, AUD)).expect("jwks");
        let token = sign(Algorithm::ES256, None, &ec_1(), &claims());
        assert_eq!(
            v.verify(&token),
            Err(AuthError::Invalid(InvalidToken::UnknownKey))
        );
        let token = sign(Algorithm::ES256, Some("ec-2"), &ec_2(), &claims());
        assert!(v.verify(&token).is_ok());
    }

    #[test]
    fn hmac_and_none_tokens_are_refused() {
        // Alg confusion: an HS256 token "signed" with public key material.
        let key = EncodingKey::from_secret(RSA_1_N.as_bytes());
        let token = sign(Algorithm::HS256, Some("rsa-1"), &key, &claims());
        assert_eq!(
            invalid(&token),
            InvalidToken::UnsupportedAlgorithm("HS256".to_owned())
        );
        let key = EncodingKey::from_secret(b"c2VjcmV0");
        let token = sign(Algorithm::HS256, Some("hmac-1"), &key, &claims());
        assert!(matches!(
            invalid(&token),
            InvalidToken::UnsupportedAlgorithm(_)
        ));
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims().to_string().as_bytes());
        assert_eq!(
            invalid(&format!("{header}.{payload}.")),
            InvalidToken::NotAJwt
        );
    }

    #[test]
    fn critical_header_extensions_are_refused() {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("rsa-1".to_owned());
        header.crit = Some(vec!["exp".to_owned()]);
        let token = encode(&header, &claims(), &rsa_1()).expect("signs");
        assert_eq!(invalid(&token), InvalidToken::UnsupportedCritical);
    }

    #[test]
    fn garbage_is_not_a_jwt() {
        for token in ["abc", "a.b.c", "a.b", "....", "eyJ.eyJ.sig"] {
            assert_eq!(invalid(token), InvalidToken::NotAJwt, "{token}");
        }
        assert!(matches!(
            authenticate(&verifier(), Some("Bearer not-a-jwt")),
            Err(AuthError::Invalid(InvalidToken::NotAJwt))
        ));
    }

    #[test]
    fn bad_jwks_are_configuration_errors() {
        let config = || JwtConfig::new(ISS, AUD);
        assert!(matches!(
            JwtVerifier::from_jwks_json("not json", config()),
            Err(JwtConfigError::NotAJwks(_))
        ));
        assert!(matches!(
            JwtVerifier::from_jwks_json("{\"kty\":\"RSA\"}", config()),
            Err(JwtConfigError::NotAJwks(_))
        ));
        assert!(matches!(
            JwtVerifier::from_jwks_json("{\"keys\":[]}", config()),
            Err(JwtConfigError::NoUsableKeys(_))
        ));
        let only_hmac = json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}).to_string();
        assert!(matches!(
            JwtVerifier::from_jwks_json(&only_hmac, config()),
            Err(JwtConfigError::NoUsableKeys(_))
        ));
        // A 1024-bit modulus (high bit set) is too small.
        let small_n = URL_SAFE_NO_PAD.encode([0xc5u8; 128]);
        let small = json!({"keys": [{"kty": "RSA", "n": small_n, "e": "AQAB"}]}).to_string();
        let e = JwtVerifier::from_jwks_json(&small, config()).unwrap_err();
        assert!(e.to_string().contains("1024 bits"), "{e}");
        let twice = json!({"keys": [rsa_jwk("k"), ec_jwk("k", EC_1_X, EC_1_Y)]}).to_string();
        assert!(matches!(
            JwtVerifier::from_jwks_json(&twice, config()),
            Err(JwtConfigError::DuplicateKid(_))
        ));
        // A broken RSA key (exponent 1) fails at load time, not on the first request.
        let bad_rsa = json!({"keys": [{"kty": "RSA", "kid": "r", "n": RSA_1_N, "e": "AQ"}]});
        assert!(matches!(
            JwtVerifier::from_jwks_json(&bad_rsa.to_string(), config()),
            Err(JwtConfigError::BadKey(_))
        ));
        let bad_rsa = json!({"keys": [{"kty": "RSA", "n": RSA_1_N, "e": "AAE"}]});
        assert!(matches!(
            JwtVerifier::from_jwks_json(&bad_rsa.to_string(), config()),
            Err(JwtConfigError::BadKey(_))
        ));
        let even_n = URL_SAFE_NO_PAD.encode([0xc4u8; 256]);
        let even = json!({"keys": [{"kty": "RSA", "n": even_n, "e": "AQAB"}]});
        assert!(matches!(
            JwtVerifier::from_jwks_json(&even.to_string(), config()),
            Err(JwtConfigError::BadKey(_))
        ));
        let huge_n = URL_SAFE_NO_PAD.encode([0xc5u8; 1024]);
        let huge = json!({"keys": [{"kty": "RSA", "n": huge_n, "e": "AQAB"}]});
        let e = JwtVerifier::from_jwks_json(&huge.to_string(), config()).unwrap_err();
        assert!(e.to_string().contains("at most 4096"), "{e}");
        // So does an EC point that is not on the curve.
        let off_curve = json!({"keys": [ec_jwk("bad", EC_1_X, EC_2_Y)]}).to_string();
        assert!(matches!(
            JwtVerifier::from_jwks_json(&off_curve, config()),
            Err(JwtConfigError::BadKey(_))
        ));
    }

    #[test]
    fn bad_configuration_is_refused() {
        for config in [
            JwtConfig::new("", AUD),
            JwtConfig::new(ISS, " "),
            JwtConfig {
                user_claim: String::new(),
                ..JwtConfig::new(ISS, AUD)
            },
            JwtConfig {
                required_scope: Some("chat write".to_owned()),
                ..JwtConfig::new(ISS, AUD)
            },
        ] {
            assert!(
                matches!(
                    JwtVerifier::from_jwks_json(&jwks(), config.clone()),
                    Err(JwtConfigError::BadConfig(_))
                ),
                "{config:?}"
            );
        }
    }

    #[test]
    fn modulus_bits_counts_significant_bits() {
        assert_eq!(modulus_bits(RSA_1_N), Ok(2048));
        assert_eq!(modulus_bits(&URL_SAFE_NO_PAD.encode([0, 0, 1])), Ok(1));
        assert!(modulus_bits(&URL_SAFE_NO_PAD.encode([0, 0])).is_err());
    }

    /// The rule a cached verdict is checked by again, at its edges: `exp` is in force up to
    /// `now - leeway` (equal included), `nbf` from `now + leeway`.
    #[test]
    fn a_cached_verdict_lapses_by_jsonwebtokens_rule() {
        let (now, leeway) = (1_000_000, 60);
        let cases = [
            (now - 60, None, Ok(())),
            (now - 61, None, Err(InvalidToken::Expired)),
            (now + 3600, Some(now + 60), Ok(())),
            (now + 3600, Some(now + 61), Err(InvalidToken::NotYetValid)),
            (0, None, Err(InvalidToken::Expired)),
        ];
        for (exp, nbf, want) in cases {
            assert_eq!(
                in_force(exp, nbf, now, leeway),
                want,
                "exp {exp} nbf {nbf:?}"
            );
        }
        assert_eq!(
            in_force(0, None, 10, 60),
            Ok(()),
            "no underflow near the epoch"
        );
    }

    /// A token accepted once is answered from the cache with the same principal, expires there
    /// at its `exp` (and leaves it), and a refused token is never kept.
    #[test]
    fn accepted_tokens_are_kept_until_they_lapse_refused_ones_never() {
        let v = verifier();
        let token = rs256(&claims());
        let first = v.verify(&token).expect("valid");
        assert_eq!(v.verified.len(), 1);
        assert_eq!(v.verify(&token).expect("valid again"), first);
        assert_eq!(v.verified.len(), 1, "one entry per token");

        let key = super::super::digest(&token);
        let exp = u64::try_from(now() + 3600).expect("positive");
        let later = exp + JwtConfig::new(ISS, AUD).leeway_secs + 1;
        assert_eq!(
            v.verified.get(&key, later, 60),
            Some(Err(InvalidToken::Expired))
        );
        assert_eq!(v.verified.len(), 0, "a lapsed entry goes");

        let forged = format!("{}x", rs256(&claims()));
        assert!(v.verify(&forged).is_err());
        let expired = rs256(&with(claims(), "exp", json!(now() - 3600)));
        assert_eq!(
            v.verify(&expired),
            Err(AuthError::Invalid(InvalidToken::Expired))
        );
        assert_eq!(v.verified.len(), 0, "refusals are not kept");
    }

    /// The cache never holds more than its cap; when full, lapsed entries make room first;
    /// an entry over its byte bound is not kept.
    #[test]
    fn the_cache_is_bounded_and_drops_lapsed_entries_first() {
        let cache = Verified::default();
        let principal = Principal {
            users: vec![ALICE.to_owned()],
            subject: ALICE.to_owned(),
            token_id: "sha256:0".to_owned(),
        };
        let (now, leeway) = (1_000_000, 60);
        let entry = |exp| Accepted {
            principal: principal.clone(),
            exp,
            nbf: None,
        };
        let key = |i: usize| {
            let mut k = [0u8; 32];
            k[..8].copy_from_slice(&(i as u64).to_le_bytes());
            k
        };
        for i in 0..VERIFIED_CAP + 100 {
            cache.put(key(i), entry(now + 3600), now, leeway);
        }
        assert_eq!(cache.len(), VERIFIED_CAP);

        let lapsed = Verified::default();
        for i in 0..VERIFIED_CAP {
            let exp = if i % 2 == 0 { now - 3600 } else { now + 3600 };
            lapsed.put(key(i), entry(exp), now, leeway);
        }
        lapsed.put(key(VERIFIED_CAP), entry(now + 3600), now, leeway);
        assert_eq!(
            lapsed.len(),
            VERIFIED_CAP / 2 + 1,
            "the lapsed half made room"
        );
        assert!(matches!(lapsed.get(&key(1), now, leeway), Some(Ok(_))));

        // A principal listing many users is not kept (verified each time instead).
        let many = Verified::default();
        let users: Vec<String> = (0..80).map(|i| format!("tel:+1555000{i:04}")).collect();
        let big = Accepted {
            principal: Principal {
                users,
                ..principal.clone()
            },
            exp: now + 3600,
            nbf: None,
        };
        many.put(key(0), big, now, leeway);
        many.put(key(1), entry(now + 3600), now, leeway);
        assert_eq!(many.len(), 1);
        assert!(many.get(&key(0), now, leeway).is_none());
    }

    /// BENCHMARKS.md "JWT verification": the cost of verifying an RS256 and an ES256 token in
    /// full against answering one accepted before from the cache, in one run.
    /// `cargo test --release --lib -- --ignored --nocapture jwt_verify_bench`.
    #[test]
    #[ignore = "a measurement"]
    fn jwt_verify_bench() {
        let v = verifier();
        let es = sign(Algorithm::ES256, Some("ec-1"), &ec_1(), &claims());
        let rs = rs256(&claims());
        let time = |f: &dyn Fn()| {
            let rounds = 2000;
            let t = std::time::Instant::now();
            for _ in 0..rounds {
                f();
            }
            t.elapsed().as_secs_f64() * 1e6 / f64::from(rounds)
        };
        println!("| token | verified in full µs | from the cache µs | ratio |");
        println!("|---|---:|---:|---:|");
        for (name, token) in [("RS256 (2048-bit)", &rs), ("ES256 (P-256)", &es)] {
            let full = time(&|| {
                v.verify_signed(token).expect("valid");
            });
            v.verify(token).expect("valid");
            let cached = time(&|| {
                v.verify(token).expect("valid");
            });
            println!(
                "| {name} | {full:.1} | {cached:.2} | {:.0}× |",
                full / cached
            );
        }
    }
}
