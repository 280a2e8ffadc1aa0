//! The `netapi-chat tokens …` commands: add, list and revoke tokens of a token file while the
//! server runs.
//!
//! The edits are plain functions on the file's text ([`add`], [`revoke`], [`list`]): lines
//! they do not concern (comments, other tokens) are kept as written. [`edit`] applies one to
//! the file on disk under an exclusive lock (`<file>.lock`, so that two admins' edits cannot
//! overwrite each other and bring a revoked token back) and replaces the file atomically: a
//! temporary file in the same directory, mode `0600`, written and synced, then renamed over the
//! old one. A running server never sees half a file; it notices the new one within
//! [`super::watched::CHECK_INTERVAL`] (see [`super::watched::WatchedTokenFile`]).
//!
//! Tokens are never printed back: a listing shows each token's fingerprint ([`token_id`]:
//! `sha256:` and 16 hex digits), the one [`Principal::token_id`](super::Principal) logs use,
//! and revocation accepts either the token or its fingerprint.

use super::token_file::{MIN_TOKEN_LEN, TokenFileError, generate_token, parse_lines, parse_users};
use super::{digest, is_b64token, token_id};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

/// The header of a token file the `tokens add` command creates.
const NEW_FILE_HEADER: &str = "# netapi-chat token file: one access token per line, then the user address(es) it\n\
# may act for:   TOKEN user1 [user2 ...]   ('#' starts a comment; the user * stands\n\
# for every user). Edit with `netapi-chat tokens add|list|revoke`; keep it secret.\n";

/// One token of a listing: never the token itself.
#[derive(Debug, PartialEq, Eq)]
pub struct Listed {
    /// The token's fingerprint, `sha256:` and 16 hex digits.
    pub fingerprint: String,
    /// Its users, canonical (`*` for any user).
    pub users: Vec<String>,
    /// 1-based line number in the file.
    pub line: usize,
}

/// The tokens of token-file text, in file order.
pub fn list(text: &str) -> Result<Vec<Listed>, TokenFileError> {
    Ok(parse_lines(text)?
        .into_iter()
        .map(|l| Listed {
            fingerprint: token_id(l.token),
            users: l.users,
            line: l.line,
        })
        .collect())
}

/// `text` (the current file, `None` when there is none yet) with `TOKEN user…` appended. The
/// token must be a `b64token` of at least [`MIN_TOKEN_LEN`] characters not already in the
/// file, the users `tel:`/`sip:` addresses or `*`. Returns the new text and the token's
/// fingerprint.
pub fn add(text: Option<&str>, token: &str, users: &[String]) -> Result<(String, String), String> {
    if !is_b64token(token) {
        return Err(
            "the token must be letters, digits and -._~+/ (then = padding), in one word".to_owned(),
        );
    }
    if token.len() < MIN_TOKEN_LEN {
        return Err(format!(
            "the token is shorter than {MIN_TOKEN_LEN} characters"
        ));
    }
    let users = parse_users(users.iter().map(String::as_str))?;
    let mut new = match text {
        Some(text) => {
            let wanted = digest(token);
            let existing = parse_lines(text).map_err(|e| e.to_string())?;
            if let Some(line) = existing.iter().find(|l| l.digest == wanted) {
                return Err(format!(
                    "this token is already in the file (line {}, {}); revoke it first to change its users",
                    line.line,
                    token_id(token)
                ));
            }
            text.to_owned()
        }
        None => NEW_FILE_HEADER.to_owned(),
    };
    if !new.is_empty() && !new.ends_with('\n') {
        new.push('\n');
    }
    new.push_str(token);
    for user in &users {
        new.push(' ');
        new.push_str(user);
    }
    new.push('\n');
    Ok((new, token_id(token)))
}

/// `text` without the line of `which`: the token itself, or its fingerprint (`sha256:` and
/// the 16 hex digits [`list`] shows). Refuses to remove the last token (a file without tokens
/// does not load, so the server would keep the old one). Returns the new text and what was
/// removed.
pub fn revoke(text: &str, which: &str) -> Result<(String, Listed), String> {
    let lines = parse_lines(text).map_err(|e| e.to_string())?;
    let which = which.trim();
    let found = match which.strip_prefix("sha256:") {
        Some(hex) => {
            let wanted = format!("sha256:{}", hex.to_ascii_lowercase());
            lines.iter().find(|l| token_id(l.token) == wanted)
        }
        None => {
            let wanted = digest(which);
            lines.iter().find(|l| l.digest == wanted)
        }
    };
    let Some(found) = found else {
        return Err(
            "no such token in the file (give the token or its sha256:… fingerprint from `tokens list`)"
                .to_owned(),
        );
    };
    if lines.len() == 1 {
        return Err(
            "this is the file's last token: add another one first (a token file without tokens does not load)"
                .to_owned(),
        );
    }
    let removed = Listed {
        fingerprint: token_id(found.token),
        users: found.users.clone(),
        line: found.line,
    };
    let mut new = String::with_capacity(text.len());
    for (index, raw) in text.split_inclusive('\n').enumerate() {
        if index + 1 != found.line {
            new.push_str(raw);
        }
    }
    Ok((new, removed))
}

/// A fresh random token (32 bytes of the thread's CSPRNG, base64url), for `tokens add
/// --generate`.
pub fn fresh_token() -> String {
    generate_token()
}

/// Applies `change` to the token file at `path` (`None` to `change` when there is no file
/// yet) under the edit lock, and writes the result atomically with mode `0600`. Returns what
/// `change` returned besides the text.
pub fn edit<T>(
    path: &Path,
    change: impl FnOnce(Option<&str>) -> Result<(String, T), String>,
) -> Result<T, String> {
    let shown = path.display();
    if let Some(dir) = parent(path) {
        crate::data_dir::create(dir)?;
    }
    let lock_path = sibling(path, ".lock");
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(crate::data_dir::FILE_MODE)
        .open(&lock_path)
        .map_err(|e| format!("{}: {e}", lock_path.display()))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| format!("locking {}: {e}", lock_path.display()))?;
    let current = match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("{shown}: {e}")),
    };
    let (text, result) = change(current.as_deref())?;
    replace(path, &text).map_err(|e| format!("writing {shown}: {e}"))?;
    // Dropping the file releases the lock.
    drop(lock);
    Ok(result)
}

/// Reads the token file at `path`.
pub fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Replaces `path` with `text` atomically: a temporary sibling (mode `0600`, never more),
/// synced, renamed over `path`, then the directory synced so the rename survives a crash.
fn replace(path: &Path, text: &str) -> std::io::Result<()> {
    let temp = sibling(path, &format!(".tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&temp);
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(crate::data_dir::FILE_MODE)
            .open(&temp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
        return written;
    }
    if let Some(dir) = parent(path) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// `path` with `suffix` appended to its file name.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The directory of `path`, when it names one.
fn parent(path: &Path) -> Option<&Path> {
    path.parent().filter(|d| !d.as_os_str().is_empty())
}

#[cfg(test)]
mod tests {
    use super::super::TokenFile;
    use super::super::TokenVerifier as _;
    use super::*;

    const A: &str = "alice-token-0123456789";
    const B: &str = "bob-token-0123456789ab";

    fn users(u: &[&str]) -> Vec<String> {
        u.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn add_appends_a_line_that_loads_and_keeps_the_rest() {
        let start = format!("# mine\n{A} tel:+15550100 # Alice\n");
        let (text, fp) = add(Some(&start), B, &users(&["sip:Bob@EXAMPLE.com", "*"])).expect("add");
        assert_eq!(fp, token_id(B));
        assert!(text.starts_with(&start), "{text}");
        let file = TokenFile::parse(&text).expect("loads");
        assert_eq!(
            file.verify(B).expect("bob").users,
            ["sip:Bob@example.com", "*"]
        );
        assert!(file.verify(A).is_ok());
        // A file without a final newline gets one before the new line.
        let (text, _) = add(Some(&format!("{A} tel:+15550100")), B, &users(&["*"])).expect("add");
        assert_eq!(text, format!("{A} tel:+15550100\n{B} *\n"));
    }

    #[test]
    fn add_creates_a_file_with_a_header() {
        let (text, _) = add(None, A, &users(&["tel:+1-555-0100"])).expect("add");
        assert!(text.starts_with('#'));
        assert!(text.ends_with(&format!("{A} tel:+15550100\n")), "{text}");
    }

    #[test]
    fn add_refuses_bad_tokens_users_and_repeats() {
        let start = format!("{A} tel:+15550100\n");
        for (token, u, why) in [
            ("short-token", vec!["*"], "shorter than 16"),
            ("has space token 0123", vec!["*"], "one word"),
            (B, vec![], "no user"),
            (B, vec!["bob"], "bob is not a tel: or sip: address"),
            (A, vec!["*"], "already in the file (line 1"),
        ] {
            let e = add(Some(&start), token, &users(&u)).expect_err(token);
            assert!(e.contains(why), "{token}: {e}");
            assert!(!e.contains(A) && !e.contains(B), "no token in errors: {e}");
        }
        // A broken file is not edited.
        assert!(add(Some("oops tel:+15550100\n"), B, &users(&["*"])).is_err());
    }

    #[test]
    fn list_shows_fingerprints_and_users_never_tokens() {
        let text = format!("# c\n{A} tel:+1-555-0100\n\n{B} * sip:bob@example.com\n");
        let listed = list(&text).expect("list");
        assert_eq!(
            listed,
            [
                Listed {
                    fingerprint: token_id(A),
                    users: users(&["tel:+15550100"]),
                    line: 2
                },
                Listed {
                    fingerprint: token_id(B),
                    users: users(&["*", "sip:bob@example.com"]),
                    line: 4
                },
            ]
        );
        assert!(!format!("{listed:?}").contains(A));
    }

    #[test]
    fn revoke_by_token_or_fingerprint_removes_that_line_only() {
        let text = format!("# c\n{A} tel:+15550100 # Alice\n{B} *\n# end\n");
        let (by_token, removed) = revoke(&text, A).expect("by token");
        assert_eq!(by_token, format!("# c\n{B} *\n# end\n"));
        assert_eq!(removed.fingerprint, token_id(A));
        let fp = token_id(B)
            .to_ascii_uppercase()
            .replace("SHA256:", "sha256:");
        let (by_fp, removed) = revoke(&text, &fp).expect("by fingerprint");
        assert_eq!(by_fp, format!("# c\n{A} tel:+15550100 # Alice\n# end\n"));
        assert_eq!(removed.users, ["*"]);
        let file = TokenFile::parse(&by_fp).expect("loads");
        assert!(file.verify(B).is_err());
        assert!(file.verify(A).is_ok());
    }

    #[test]
    fn revoke_refuses_unknown_tokens_and_the_last_one() {
        let text = format!("{A} tel:+15550100\n{B} *\n");
        for which in [
            "nobody-token-0123456789",
            "sha256:0000000000000000",
            "sha256:",
        ] {
            let e = revoke(&text, which).expect_err(which);
            assert!(e.contains("no such token"), "{e}");
        }
        let e = revoke(&format!("{A} *\n"), A).expect_err("last");
        assert!(e.contains("last token"), "{e}");
    }

    #[test]
    fn edit_replaces_the_file_atomically_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!(
            "netapi-chat-token-admin-{}-{}",
            std::process::id(),
            token_id(&format!("{:?}", std::time::SystemTime::now()))
        ));
        let path = dir.join("tokens");
        edit(&path, |t| add(t, A, &users(&["*"]))).expect("create");
        // Made readable by others meanwhile: the edit puts it back to 0600.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        edit(&path, |t| add(t, B, &users(&["tel:+15550100"]))).expect("add");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = read(&path).expect("read");
        assert_eq!(list(&text).expect("list").len(), 2);
        // A refused change leaves the file as it was.
        assert!(
            edit(&path, |t| revoke(
                t.unwrap_or_default(),
                "nobody-token-0123456789"
            ))
            .is_err()
        );
        assert_eq!(read(&path).expect("read"), text);
        // No temporary file is left behind.
        let names: Vec<String> = std::fs::read_dir(&dir)
            .expect("dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().all(|n| n == "tokens" || n == "tokens.lock"),
            "{names:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
