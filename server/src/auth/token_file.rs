//! The embedded token source: a file of opaque bearer tokens, each naming the user(s) it may
//! act for.
//!
//! ```text
//! # comment
//! TOKEN  user1 [user2 …]   # trailing comment
//! ```
//!
//! Tokens are RFC 6750 `b64token`s of at least [`MIN_TOKEN_LEN`] characters; users are `tel:`
//! or `sip:` addresses, stored in canonical form. Only SHA-256 digests of the tokens are kept
//! in memory, and a lookup compares the digest of the presented token with every entry without
//! stopping early, so neither the tokens nor the timing of a lookup reveal anything useful.

use super::ANY_USER;
use super::{AuthError, InvalidToken, Principal, TokenVerifier, digest, is_b64token, token_id};
use crate::address;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Shortest token accepted in a token file (characters), so that a placeholder like `secret`
/// cannot end up guarding a server.
pub const MIN_TOKEN_LEN: usize = 16;

/// Whether `token` is as strong as an access token must be: a `b64token` of at least
/// [`MIN_TOKEN_LEN`] characters. The admin and metrics tokens (`NETAPI_CHAT_ADMIN_TOKEN`,
/// `…_METRICS_TOKEN`) are held to it too: the admin token opens a copy of the whole store,
/// the token file included, and a short one falls to guessing within the failure limit.
pub fn is_strong_token(token: &str) -> bool {
    is_b64token(token) && token.len() >= MIN_TOKEN_LEN
}

/// Random bytes in a generated token (encoded as 43 base64url characters).
const GENERATED_TOKEN_BYTES: usize = 32;

/// Tokens loaded from a token file.
pub struct TokenFile {
    entries: Vec<Entry>,
}

/// One line of the file.
struct Entry {
    digest: [u8; 32],
    users: Vec<String>,
}

impl fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenFile")
            .field("tokens", &self.entries.len())
            .finish_non_exhaustive()
    }
}

/// Why a token file cannot be used. No variant ever contains a token.
#[derive(Debug)]
pub enum TokenFileError {
    /// The file could not be read or written.
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A line does not follow `TOKEN user1 [user2 …]`.
    Syntax {
        /// The file, when the text came from one.
        path: Option<PathBuf>,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The file holds no token, so nobody could use the server.
    NoTokens {
        /// The file, when the text came from one.
        path: Option<PathBuf>,
    },
    /// [`TokenFile::generate_default`] was given no users, or a user that is not an address.
    BadUsers(String),
    /// [`TokenFile::generate_default`] will not overwrite an existing file.
    Exists(PathBuf),
}

impl fmt::Display for TokenFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = |path: &Option<PathBuf>| match path {
            Some(p) => format!("token file {}", p.display()),
            None => "token file".to_owned(),
        };
        match self {
            TokenFileError::Io { path, source } => {
                write!(f, "token file {}: {source}", path.display())
            }
            TokenFileError::Syntax { path, line, reason } => {
                write!(f, "{}, line {line}: {reason}", file(path))
            }
            TokenFileError::NoTokens { path } => write!(
                f,
                "{} holds no token (expected lines of TOKEN user1 [user2 ...])",
                file(path)
            ),
            TokenFileError::BadUsers(why) => write!(f, "cannot generate a token file: {why}"),
            TokenFileError::Exists(path) => write!(
                f,
                "token file {} already exists; not overwriting it",
                path.display()
            ),
        }
    }
}

impl std::error::Error for TokenFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TokenFileError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl TokenFile {
    /// Reads and parses the token file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<TokenFile, TokenFileError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Io {
            path: path.to_owned(),
            source,
        })?;
        TokenFile::parse(&text).map_err(|e| match e {
            TokenFileError::Syntax { line, reason, .. } => TokenFileError::Syntax {
                path: Some(path.to_owned()),
                line,
                reason,
            },
            TokenFileError::NoTokens { .. } => TokenFileError::NoTokens {
                path: Some(path.to_owned()),
            },
            other => other,
        })
    }

    /// Parses token-file text: one `TOKEN user1 [user2 …]` per line, `#` starting a comment
    /// (tokens and addresses cannot contain `#`), blank lines ignored. A token repeated on two
    /// lines, a token shorter than [`MIN_TOKEN_LEN`], a line without users or a user that is
    /// not a `tel:`/`sip:` address is an error naming the line (never the token).
    pub fn parse(text: &str) -> Result<TokenFile, TokenFileError> {
        let lines = parse_lines(text)?;
        if lines.is_empty() {
            return Err(TokenFileError::NoTokens { path: None });
        }
        Ok(TokenFile {
            entries: lines
                .into_iter()
                .map(|l| Entry {
                    digest: l.digest,
                    users: l.users,
                })
                .collect(),
        })
    }

    /// Writes a new token file at `path` with one random token (32 bytes from the thread's
    /// CSPRNG, base64url) for each of `users`, readable by its owner only (on Unix), and returns
    /// a printable summary naming the file and each user's `Authorization` header. Refuses to
    /// overwrite an existing file ([`TokenFileError::Exists`]).
    pub fn generate_default(
        path: impl AsRef<Path>,
        users: &[&str],
    ) -> Result<String, TokenFileError> {
        let path = path.as_ref();
        if users.is_empty() {
            return Err(TokenFileError::BadUsers("no users given".to_owned()));
        }
        let mut lines = Vec::with_capacity(users.len());
        for user in users {
            let canonical = if *user == ANY_USER {
                ANY_USER.to_owned()
            } else {
                address::canonical(user).map_err(|_| {
                    TokenFileError::BadUsers(format!("{user} is not a tel: or sip: address"))
                })?
            };
            lines.push((generate_token(), canonical));
        }
        let mut text = String::from(
            "# netapi-chat token file: one access token per line, then the user address(es) it\n\
             # may act for:   TOKEN user1 [user2 ...]   ('#' starts a comment; the user *\n\
             # stands for every user: a trusted application's token).\n\
             # Generated at first start. Keep it secret: anyone with a token acts as its users.\n",
        );
        for (token, user) in &lines {
            text.push_str(&format!("{token} {user}\n"));
        }
        write_new_file(path, &text)?;
        let width = lines.iter().map(|(_, u)| u.len()).max().unwrap_or(0);
        let mut summary = format!(
            "netapi-chat: created token file {} (each token acts for the users beside it, `*` for \
             every user; keep it secret).\n\
             Send one of these headers with every request:\n",
            path.display()
        );
        for (token, user) in &lines {
            summary.push_str(&format!(
                "  {user:<width$}  Authorization: Bearer {token}\n"
            ));
        }
        Ok(summary)
    }

    /// Loads the token file at `path`, or, when there is none, generates one for `users` with
    /// [`generate_default`](Self::generate_default) and returns its summary alongside.
    pub fn load_or_generate(
        path: impl AsRef<Path>,
        users: &[&str],
    ) -> Result<(TokenFile, Option<String>), TokenFileError> {
        let path = path.as_ref();
        if path.exists() {
            return Ok((TokenFile::load(path)?, None));
        }
        let summary = TokenFile::generate_default(path, users)?;
        Ok((TokenFile::load(path)?, Some(summary)))
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

impl TokenVerifier for TokenFile {
    fn verify(&self, bearer: &str) -> Result<Principal, AuthError> {
        let wanted = digest(bearer);
        let mut found: Option<&Entry> = None;
        for entry in &self.entries {
            if digests_equal(&entry.digest, &wanted) {
                found = Some(entry);
            }
        }
        let entry = found.ok_or(AuthError::Invalid(InvalidToken::UnknownToken))?;
        Ok(Principal {
            subject: entry.users.first().cloned().unwrap_or_default(),
            users: entry.users.clone(),
            token_id: token_id(bearer),
        })
    }
}

/// One token line of a token file, as [`parse_lines`] read it.
pub(crate) struct TokenLine<'a> {
    /// 1-based line number.
    pub line: usize,
    /// The token as written.
    pub token: &'a str,
    /// SHA-256 of the token.
    pub digest: [u8; 32],
    /// Its users, canonical, without repeats (`*` kept as is).
    pub users: Vec<String>,
}

/// The token lines of token-file text, checked as [`TokenFile::parse`] documents (an empty
/// list when the text holds comments only): the one reading of the format, shared by the
/// server and the `tokens` commands that edit the file ([`super::token_admin`]).
pub(crate) fn parse_lines(text: &str) -> Result<Vec<TokenLine<'_>>, TokenFileError> {
    let mut entries: Vec<TokenLine<'_>> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let syntax = |reason: String| TokenFileError::Syntax {
            path: None,
            line,
            reason,
        };
        let content = raw.split_once('#').map_or(raw, |(before, _)| before);
        let mut words = content.split_whitespace();
        let Some(token) = words.next() else {
            continue;
        };
        if !is_b64token(token) {
            return Err(syntax(
                "the token must be letters, digits and -._~+/ (then = padding)".to_owned(),
            ));
        }
        if token.len() < MIN_TOKEN_LEN {
            return Err(syntax(format!(
                "the token is shorter than {MIN_TOKEN_LEN} characters"
            )));
        }
        let users = parse_users(words).map_err(syntax)?;
        let digest = digest(token);
        if let Some(first) = entries.iter().find(|e| e.digest == digest) {
            return Err(syntax(format!(
                "the token of line {} is repeated",
                first.line
            )));
        }
        entries.push(TokenLine {
            line,
            token,
            digest,
            users,
        });
    }
    Ok(entries)
}

/// The users of a token line: canonical `tel:`/`sip:` addresses or `*`, repeats dropped, at
/// least one; the error says which word is wrong.
pub(crate) fn parse_users<'a>(
    words: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<String>, String> {
    let mut users: Vec<String> = Vec::new();
    for user in words {
        if user == ANY_USER {
            if !users.iter().any(|u| u == ANY_USER) {
                users.push(ANY_USER.to_owned());
            }
            continue;
        }
        let canonical = address::canonical(user)
            .map_err(|_| format!("{user} is not a tel: or sip: address (or * for any user)"))?;
        if !users.contains(&canonical) {
            users.push(canonical);
        }
    }
    if users.is_empty() {
        return Err("the token names no user (expected TOKEN user1 [user2 ...])".to_owned());
    }
    Ok(users)
}

/// Compares two digests without an early exit.
fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

/// A fresh random token: 32 bytes from the thread-local CSPRNG, base64url without padding.
pub(crate) fn generate_token() -> String {
    let mut bytes = [0u8; GENERATED_TOKEN_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Creates `path` (and its parent directories) with `text`, failing if it exists; owner-only
/// permissions on Unix.
fn write_new_file(path: &Path, text: &str) -> Result<(), TokenFileError> {
    let io = |source| TokenFileError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            TokenFileError::Exists(path.to_owned())
        } else {
            io(source)
        }
    })?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::super::{UserError, authenticate, resolve_user};
    use super::*;

    const ALICE: &str = "alice-token-0123456789";
    const BOB: &str = "bob-token-0123456789ab";
    const SHARED: &str = "shared-token-abcdefghij";

    fn sample() -> TokenFile {
        TokenFile::parse(&format!(
            "# netapi-chat tokens\n\
             \n\
             {ALICE} tel:+1-555-0100   # Alice\n\
             \t{BOB}\tsip:bob@EXAMPLE.com\n\
             {SHARED} tel:+15550100 sip:bob@example.com tel:+15550100\n\
             # {BOB}x tel:+15550199\n"
        ))
        .expect("sample parses")
    }

    fn syntax_line(text: &str) -> (usize, String) {
        match TokenFile::parse(text) {
            Err(TokenFileError::Syntax { line, reason, .. }) => (line, reason),
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    fn temp_path(name: &str) -> PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        std::env::temp_dir()
            .join(format!(
                "netapi-chat-auth-{}-{nanos}-{n}",
                std::process::id()
            ))
            .join(name)
    }

    #[test]
    fn parses_tokens_users_and_comments() {
        let file = sample();
        assert_eq!(file.len(), 3);
        let alice = file.verify(ALICE).expect("alice");
        assert_eq!(alice.users, ["tel:+15550100"]);
        assert_eq!(alice.subject, "tel:+15550100");
        assert_eq!(alice.token_id, token_id(ALICE));
        let bob = file.verify(BOB).expect("bob");
        assert_eq!(bob.users, ["sip:bob@example.com"]);
        let shared = file.verify(SHARED).expect("shared");
        assert_eq!(shared.users, ["tel:+15550100", "sip:bob@example.com"]);
    }

    #[test]
    fn unknown_and_near_tokens_are_refused() {
        let file = sample();
        for token in [
            "nobody-token-0123456789",
            &ALICE[..ALICE.len() - 1],
            &format!("{ALICE}x"),
            &format!("{BOB}x"), // only in a comment
            "tel:+15550100",
        ] {
            assert_eq!(
                file.verify(token),
                Err(AuthError::Invalid(InvalidToken::UnknownToken)),
                "{token}"
            );
        }
    }

    #[test]
    fn works_through_authenticate_and_resolve_user() {
        let file = sample();
        let verifier: &dyn TokenVerifier = &file;
        let alice = authenticate(verifier, Some(&format!("Bearer {ALICE}"))).expect("alice");
        assert_eq!(
            resolve_user(&alice, "acr:auth").as_deref(),
            Ok("tel:+15550100")
        );
        assert_eq!(
            resolve_user(&alice, "tel:+15550100").as_deref(),
            Ok("tel:+15550100")
        );
        assert_eq!(
            resolve_user(&alice, "sip:bob@example.com"),
            Err(UserError::NotPermitted("sip:bob@example.com".to_owned()))
        );
        let bob = authenticate(verifier, Some(&format!("bearer {BOB}"))).expect("bob");
        assert_eq!(
            resolve_user(&bob, "acr:auth").as_deref(),
            Ok("sip:bob@example.com")
        );
        assert!(matches!(
            resolve_user(&bob, "tel:+15550100"),
            Err(UserError::NotPermitted(_))
        ));
        let shared = authenticate(verifier, Some(&format!("Bearer {SHARED}"))).expect("shared");
        assert_eq!(
            resolve_user(&shared, "acr:auth").as_deref(),
            Ok("tel:+15550100")
        );
        assert!(shared.may_act_for("sip:bob@example.com"));
        assert_eq!(
            authenticate(verifier, Some("Bearer nobody-token-0123456789")),
            Err(AuthError::Invalid(InvalidToken::UnknownToken))
        );
    }

    #[test]
    fn syntax_errors_name_the_line_not_the_token() {
        let (line, reason) = syntax_line(&format!("# ok\n{ALICE}\n"));
        assert_eq!(line, 2);
        assert!(reason.contains("no user"), "{reason}");
        assert!(!reason.contains(ALICE));

        let (line, reason) = syntax_line(&format!("{ALICE} bob\n"));
        assert_eq!(line, 1);
        assert!(
            reason.contains("bob is not a tel: or sip: address"),
            "{reason}"
        );

        let (line, reason) = syntax_line("short-token tel:+15550100\n");
        assert_eq!(line, 1);
        assert!(reason.contains("shorter than 16"), "{reason}");

        let (line, _) = syntax_line("\n\"quoted-token-0123456\" tel:+15550100\n");
        assert_eq!(line, 2);

        let (line, reason) = syntax_line(&format!(
            "{ALICE} tel:+15550100\n{BOB} sip:bob@example.com\n{ALICE} tel:+15550199\n"
        ));
        assert_eq!(line, 3);
        assert!(reason.contains("line 1"), "{reason}");
        assert!(!reason.contains(ALICE));
    }

    #[test]
    fn a_file_without_tokens_is_an_error() {
        assert!(matches!(
            TokenFile::parse("# nothing here\n\n   \n"),
            Err(TokenFileError::NoTokens { .. })
        ));
        assert!(matches!(
            TokenFile::parse(""),
            Err(TokenFileError::NoTokens { .. })
        ));
    }

    #[test]
    fn debug_does_not_show_tokens_or_digests() {
        let shown = format!("{:?}", sample());
        assert_eq!(shown, "TokenFile { tokens: 3, .. }");
    }

    #[test]
    fn generated_file_loads_and_its_tokens_work() {
        let path = temp_path("tokens.txt");
        let summary =
            TokenFile::generate_default(&path, &["tel:+1-555-0100", "sip:bob@example.com"])
                .expect("generate");
        assert!(summary.contains(&path.display().to_string()), "{summary}");
        let file = TokenFile::load(&path).expect("load");
        assert_eq!(file.len(), 2);
        let tokens: Vec<(String, String)> = summary
            .lines()
            .filter_map(|l| l.split_once("Authorization: Bearer "))
            .map(|(user, token)| (user.trim().to_owned(), token.to_owned()))
            .collect();
        assert_eq!(tokens.len(), 2, "{summary}");
        assert_eq!(tokens[0].0, "tel:+15550100");
        assert_eq!(tokens[1].0, "sip:bob@example.com");
        for (user, token) in &tokens {
            assert_eq!(token.len(), 43, "{token}");
            let p = authenticate(&file, Some(&format!("Bearer {token}"))).expect("token works");
            assert_eq!(p.users, std::slice::from_ref(user));
        }
        assert_ne!(tokens[0].1, tokens[1].1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path)
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Never overwritten.
        assert!(matches!(
            TokenFile::generate_default(&path, &["tel:+15550100"]),
            Err(TokenFileError::Exists(_))
        ));
        let _ = std::fs::remove_dir_all(path.parent().unwrap_or(&path));
    }

    #[test]
    fn load_or_generate_generates_once() {
        let path = temp_path("tokens.txt");
        let (first, summary) =
            TokenFile::load_or_generate(&path, &["tel:+15550100"]).expect("first start");
        assert_eq!(first.len(), 1);
        assert!(summary.is_some());
        let (second, summary) =
            TokenFile::load_or_generate(&path, &["tel:+15550100"]).expect("second start");
        assert_eq!(second.len(), 1);
        assert!(summary.is_none());
        let _ = std::fs::remove_dir_all(path.parent().unwrap_or(&path));
    }

    #[test]
    fn generate_refuses_bad_users() {
        let path = temp_path("tokens.txt");
        assert!(matches!(
            TokenFile::generate_default(&path, &[]),
            Err(TokenFileError::BadUsers(_))
        ));
        assert!(matches!(
            TokenFile::generate_default(&path, &["alice"]),
            Err(TokenFileError::BadUsers(_))
        ));
        assert!(!path.exists());
    }

    #[test]
    fn load_reports_the_path() {
        let path = temp_path("missing.txt");
        let e = TokenFile::load(&path).unwrap_err();
        assert!(matches!(e, TokenFileError::Io { .. }));
        assert!(e.to_string().contains("missing.txt"), "{e}");
    }

    #[test]
    fn digest_comparison() {
        let a = digest("a");
        let mut b = a;
        assert!(digests_equal(&a, &b));
        b[31] ^= 1;
        assert!(!digests_equal(&a, &b));
    }
}
