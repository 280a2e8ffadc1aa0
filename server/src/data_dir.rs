//! The data directory's files and their permissions (issue 11 items 13 and 14).
//!
//! The directory holds the signing key of every notification (`webhook-secret`), usually the
//! access tokens (`tokens`) and every message (`netapi-chat.sqlite3` and its `-wal`), so no
//! other local user may read any of it, whatever the umask: the directory is created `0700`
//! and each file `0600`. An existing directory that others can enter is not changed (the
//! operator may have chosen that, e.g. for a backup group) but warned about on stderr; files
//! the server owns by name (the database, its WAL, the webhook secret) are tightened to `0600`
//! with a warning, and a token file readable by others is warned about (it may be managed
//! elsewhere). Before the store opens, the directory is proved writable, so that a read-only
//! directory stops the start with a clear message instead of failing on the first write.

use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

/// Mode of the data directory when the server creates it.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file the server creates in it.
pub const FILE_MODE: u32 = 0o600;

/// The file a backup's `VACUUM INTO` writes in the data directory, on the database's own
/// disk, before the copy to the backup's destination (`crate::admin_api`): the store thread is
/// held only for a copy at the database's own speed. Removed once the copy has it open; one
/// left by a crash is removed at the next start or backup. The copy in the backup's directory
/// has this name too until it is complete (renamed to the database's name last), so a backup
/// cut short is told apart from a data directory and refused at start.
pub const BACKUP_PART: &str = "backup-in-progress.sqlite3";

/// Whether stderr lines are JSON objects (`NETAPI_CHAT_LOG_FORMAT=json`), for [`warn`].
static JSON_LINES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes [`warn`] write JSON lines like the logger's (`msg`, `level`, `ts`, `name`), so that
/// stderr stays one JSON object per line; set once at start-up, before the first warning.
pub fn set_json_lines(on: bool) {
    JSON_LINES.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// One warning line as [`warn`] writes it.
pub fn warning_line(text: &str, json: bool, now: std::time::SystemTime) -> String {
    if json {
        serde_json::json!({
            "msg": text,
            "level": "WARN",
            "ts": humantime::format_rfc3339_micros(now).to_string(),
            "name": "netapi-chat",
        })
        .to_string()
    } else {
        format!("netapi-chat: warning: {text}")
    }
}

/// Says something to the operator on stderr (start-up only; the log is not set up yet for all
/// callers, and these lines must be seen whatever the log level).
pub(crate) fn warn(text: &str) {
    let json = JSON_LINES.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("{}", warning_line(text, json, std::time::SystemTime::now()));
}

/// True when group or others have any access in `mode`.
pub fn open_to_others(mode: u32) -> bool {
    mode & 0o077 != 0
}

/// Creates `dir` (and missing parents) with mode `0700`; warns when it already existed and
/// group or others may access it.
pub fn create(dir: &Path) -> Result<(), String> {
    create_dir(dir, true)
}

/// Creates the directory of a file the configuration names outside the data directory (the
/// token file's) when missing, with mode `0700`; an existing one is taken as it is, without
/// the data directory's warning: it is not the data directory (a Kubernetes secret mount is
/// `0755`), and the file's own mode is what is checked.
pub fn create_for_file(dir: &Path) -> Result<(), String> {
    create_dir(dir, false)
}

fn create_dir(dir: &Path, warn_if_open: bool) -> Result<(), String> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {
            let mode = m.permissions().mode() & 0o777;
            if warn_if_open && open_to_others(mode) {
                warn(&format!(
                    "data directory {} has mode {mode:04o}: other local users may see its files; `chmod 700` it",
                    dir.display()
                ));
            }
            Ok(())
        }
        Ok(_) => Err(format!("{} exists and is not a directory", dir.display())),
        Err(_) => DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(|e| format!("creating data directory {}: {e}", dir.display())),
    }
}

/// Writes a new secret file with mode `0600` (never more, whatever the umask); fails if the
/// file exists.
pub fn write_secret(path: &Path, contents: &str) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()
}

/// Makes a file the server owns `0600` when group or others have access (files written by
/// earlier versions under a permissive umask); missing files are left alone.
pub fn tighten(path: &Path) -> Result<(), String> {
    let Ok(m) = std::fs::metadata(path) else {
        return Ok(());
    };
    let mode = m.permissions().mode() & 0o777;
    if open_to_others(mode) {
        std::fs::set_permissions(path, Permissions::from_mode(FILE_MODE))
            .map_err(|e| format!("restricting {} to mode 0600: {e}", path.display()))?;
        warn(&format!(
            "{} had mode {mode:04o}; it is now 0600",
            path.display()
        ));
    }
    Ok(())
}

/// Creates the file empty with mode `0600` when it does not exist (so that SQLite, which
/// gives its `-wal` the mode of the database, never creates them world-readable).
pub fn create_private(path: &Path) -> Result<(), String> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!("creating {}: {e}", path.display())),
    }
}

/// Warns when a token file may be read by other local users (anyone who reads it can act
/// for every user it lists).
pub fn warn_if_readable_by_others(path: &Path) {
    if let Ok(m) = std::fs::metadata(path) {
        let mode = m.permissions().mode() & 0o777;
        if open_to_others(mode) {
            warn(&format!(
                "token file {} has mode {mode:04o}: other local users can read the access tokens; `chmod 600` it",
                path.display()
            ));
        }
    }
}

/// Proves that files can be created, written, synced and removed in `dir`: a read-only or
/// full directory (or file system) fails here, at start, with a message naming it.
pub fn check_writable(dir: &Path) -> Result<(), String> {
    let probe = dir.join(format!(".netapi-chat-probe-{}", std::process::id()));
    let fail = |e: std::io::Error| {
        format!(
            "data directory {} is not writable ({e}); the server needs to write there",
            dir.display()
        )
    };
    let written = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(&probe)
        .and_then(|mut f| {
            f.write_all(b"netapi-chat writability probe\n")?;
            f.sync_all()
        });
    let removed = std::fs::remove_file(&probe);
    written.map_err(fail)?;
    removed.map_err(fail)
}

#[cfg(test)]
mod tests {
    #[test]
    fn warnings_are_text_or_one_json_object() {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1);
        assert_eq!(
            warning_line("mode 0755", false, at),
            "netapi-chat: warning: mode 0755"
        );
        let line = warning_line("a \"quoted\"\nline", true, at);
        assert!(!line.contains('\n'), "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(v["msg"], "a \"quoted\"\nline");
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["ts"], "1970-01-01T00:00:01.000000Z");
    }

    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!(
            "netapi-chat-datadir-{name}-{}",
            uuid::Uuid::new_v4().simple()
        ))
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn group_or_other_bits_are_open() {
        assert!(!open_to_others(0o700));
        assert!(!open_to_others(0o600));
        assert!(open_to_others(0o755));
        assert!(open_to_others(0o640));
        assert!(open_to_others(0o701));
    }

    #[test]
    fn created_private_whatever_the_umask() {
        let dir = temp("create").join("nested");
        create(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let secret = dir.join("secret");
        write_secret(&secret, "x").unwrap();
        assert_eq!(mode(&secret), 0o600);
        assert!(write_secret(&secret, "y").is_err(), "never overwrites");
        let db = dir.join("db");
        create_private(&db).unwrap();
        create_private(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
        check_writable(&dir).unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2, "probe removed");
        let _ = std::fs::remove_dir_all(dir.parent().unwrap());
    }

    #[test]
    fn tightens_owned_files() {
        let dir = temp("tighten");
        create(&dir).unwrap();
        let f = dir.join("f");
        std::fs::write(&f, "x").unwrap();
        std::fs::set_permissions(&f, Permissions::from_mode(0o644)).unwrap();
        tighten(&f).unwrap();
        assert_eq!(mode(&f), 0o600);
        tighten(&dir.join("missing")).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_missing_directory_is_not_writable() {
        let dir = temp("missing");
        assert!(check_writable(&dir).unwrap_err().contains("not writable"));
    }
}
