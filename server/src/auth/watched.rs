//! The token file as the server uses it: reloaded when it changes, so that `netapi-chat tokens
//! add|revoke` (or any other edit) takes effect without a restart.
//!
//! Policy: on a request, when the last look is older than [`CHECK_INTERVAL`], one request
//! (never more than one at a time; the others go on with the tokens in force) `stat`s the file
//! and, when its identity (device, inode), size or modification time changed, reads it again.
//! So an added token works, and a revoked one is refused, at most [`CHECK_INTERVAL`] after the
//! file was replaced, and an idle server does no work at all. A file that no longer loads
//! (missing, unreadable, a syntax error, no token) does not lock everybody out: the tokens in
//! force stay, and a warning names the problem once per change of the file.

use super::{AuthError, Principal, TokenFile, TokenVerifier};
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Longest time between a change of the token file and the server using it (at the next
/// request after it): a `stat` per this interval at most, which costs nothing measurable.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// What identifies one version of the file: a replacement by rename changes the inode, an
/// edit in place the size or the modification time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl Stamp {
    /// The version `meta` (a `stat` of the file) describes.
    pub(crate) fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }
}

/// When the file was last looked at, and the version seen then (`None`: it could not be
/// `stat`ed).
struct Look {
    at: Instant,
    seen: Option<Stamp>,
}

/// A [`TokenFile`] kept in step with the file on disk (see the module documentation).
pub struct WatchedTokenFile {
    path: PathBuf,
    interval: Duration,
    current: RwLock<Arc<TokenFile>>,
    look: Mutex<Look>,
}

impl std::fmt::Debug for WatchedTokenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchedTokenFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Whether a look is due: the rule of the module documentation, alone.
pub fn look_due(last: Instant, now: Instant, interval: Duration) -> bool {
    now.saturating_duration_since(last) >= interval
}

impl WatchedTokenFile {
    /// Watches `path`, whose content is `loaded` (just read by the caller), looking again at
    /// most every `interval`.
    pub fn new(path: PathBuf, loaded: TokenFile, interval: Duration) -> Self {
        let seen = std::fs::metadata(&path).ok().map(|m| Stamp::of(&m));
        WatchedTokenFile {
            path,
            interval,
            current: RwLock::new(Arc::new(loaded)),
            look: Mutex::new(Look {
                at: Instant::now(),
                seen,
            }),
        }
    }

    /// Reloads the file when a look is due and shows a change; never blocks on another
    /// request doing the same.
    fn refresh(&self) {
        let mut look = match self.look.try_lock() {
            Ok(look) => look,
            // Another request is looking: use the tokens in force.
            Err(std::sync::TryLockError::WouldBlock) => return,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        };
        let now = Instant::now();
        if !look_due(look.at, now, self.interval) {
            return;
        }
        look.at = now;
        let seen = std::fs::metadata(&self.path).ok().map(|m| Stamp::of(&m));
        if seen == look.seen {
            return;
        }
        // Recorded before reading: a change during the read is seen at the next look.
        look.seen = seen;
        match TokenFile::load(&self.path) {
            Ok(file) => {
                let tokens = file.len();
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(file);
                tracing::info!(path = %self.path.display(), tokens, "token file reloaded");
            }
            Err(e) => {
                tracing::warn!(error = %e, "token file changed but does not load; the tokens in force stay");
            }
        }
    }
}

impl TokenVerifier for WatchedTokenFile {
    fn verify(&self, bearer: &str) -> Result<Principal, AuthError> {
        self.refresh();
        let file = Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()));
        file.verify(bearer)
    }
}

#[cfg(test)]
mod tests {
    use super::super::token_admin;
    use super::*;

    const A: &str = "alice-token-0123456789";
    const B: &str = "bob-token-0123456789ab";

    #[test]
    fn a_look_is_due_once_the_interval_has_passed() {
        let t0 = Instant::now();
        let i = Duration::from_millis(250);
        assert!(!look_due(t0, t0, i));
        assert!(!look_due(t0, t0 + Duration::from_millis(249), i));
        assert!(look_due(t0, t0 + i, i));
        // A clock that seems to go back is not a reason to look.
        assert!(!look_due(t0 + i, t0, i));
        assert!(look_due(t0, t0, Duration::ZERO));
    }

    #[test]
    fn added_and_revoked_tokens_take_effect_and_a_broken_file_changes_nothing() {
        let dir = std::env::temp_dir().join(format!(
            "netapi-chat-watched-{}-{}",
            std::process::id(),
            super::super::token_id(&format!("{:?}", Instant::now()))
        ));
        let path = dir.join("tokens");
        let users = |u: &str| vec![u.to_owned()];
        token_admin::edit(&path, |t| token_admin::add(t, A, &users("*"))).expect("create");
        let loaded = TokenFile::load(&path).expect("load");
        let watched = WatchedTokenFile::new(path.clone(), loaded, Duration::ZERO);
        assert!(watched.verify(A).is_ok());
        assert!(watched.verify(B).is_err());

        token_admin::edit(&path, |t| token_admin::add(t, B, &users("tel:+15550100"))).expect("add");
        assert_eq!(watched.verify(B).expect("added").users, ["tel:+15550100"]);

        token_admin::edit(&path, |t| token_admin::revoke(t.unwrap_or_default(), A))
            .expect("revoke");
        assert!(watched.verify(A).is_err());
        assert!(watched.verify(B).is_ok());

        // Broken by hand, then removed: B stays valid.
        std::fs::write(&path, "oops\n").expect("break");
        assert!(watched.verify(B).is_ok());
        std::fs::remove_file(&path).expect("remove");
        assert!(watched.verify(B).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
