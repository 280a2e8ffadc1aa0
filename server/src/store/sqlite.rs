//! The embedded default backend: one SQLite file in WAL mode.
//!
//! Three tables: `records` (kind, key → JSON value: what start-up loads), `messages` (indexed by
//! (session, seq), (session, id) and (session, sender, correlator); read on demand, never at
//! start-up; purged by retention, each session from its oldest) and `outbox` (undelivered
//! notifications with their delivery state, and dead letters: rows with `dead_ms` set,
//! bounded per subscription, never loaded). With
//! `synchronous=NORMAL` (the default here) a commit is on disk in the WAL before the client is
//! answered, so it survives a crash of the process (SIGKILL); `FULL` also survives a power cut
//! at the cost of an fsync per group commit (`NETAPI_CHAT_SYNC=full`).

use super::now_ms;
use super::{
    Backend, Batch, DeadLetterRow, Kind, Migrated, OutboxEntry, Progress, PurgeWalk, Purged,
    Snapshot, StoreError, format,
};
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params, params_from_iter};
use std::ffi::c_int;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// How hard a commit syncs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sync {
    /// WAL written before the answer; survives process crashes.
    Normal,
    /// WAL fsynced before the answer; survives power loss too.
    Full,
}

/// SQLite in WAL mode, exclusive to this process.
pub struct Sqlite {
    conn: Connection,
    /// The write-ahead log file, watched for size.
    wal: std::path::PathBuf,
    /// Frames in the WAL since it was last started over (set by the WAL hook on each commit).
    frames: Arc<AtomicU64>,
    /// The migration `open` did, handed to the core with the snapshot (to be logged once).
    migrated: Option<Migrated>,
    /// Copies the WAL back into the database from a connection of its own (see
    /// [`Checkpointer`]); stopped when the store is dropped.
    _checkpointer: Checkpointer,
}

/// Opens the database through SQLite's `unix-excl` VFS: the process holds an exclusive lock on
/// the file, so a second server (or any other process) cannot use the data directory, and the
/// WAL index lives in heap memory shared by this process's connections instead of a
/// memory-mapped `-shm` file (<https://sqlite.org/vfs.html#standard_unix_vfses>): a storage
/// fault is an error the store thread sees and turns into a clean stop, never a SIGBUS from a
/// mapped page that can no longer be written (issue 11). Unlike `locking_mode=EXCLUSIVE`, a
/// second connection of the same process can checkpoint while the store thread commits.
fn open_excl(path: &Path) -> Result<Connection, StoreError> {
    Connection::open_with_flags_and_vfs(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        "unix-excl",
    )
    .map_err(|e| StoreError(format!("opening {}: {e}", path.display())))
}

/// A thread with a connection of its own that runs a passive checkpoint every
/// [`CHECKPOINT_INTERVAL`]: the copying and its fsyncs happen beside the store thread, never
/// in front of a commit (issue 12 item 5). A passive checkpoint never blocks the writer; the
/// writer starts the WAL over once a checkpoint has copied all of it.
struct Checkpointer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How often the checkpointer copies the WAL into the database.
const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

impl Checkpointer {
    fn start(conn: Connection) -> Result<Checkpointer, StoreError> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("netapi-chat-checkpoint".to_owned())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    std::thread::sleep(CHECKPOINT_INTERVAL);
                    // A failed or busy checkpoint is tried again next round; the WAL stays
                    // valid, and commits report storage errors themselves.
                    let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                }
            })
            .map_err(|e| StoreError(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Checkpointer {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// SQLite's error as the store's: damaged pages ([`StoreError::damage`]) told apart.
fn err(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
    match e.sqlite_error_code() {
        Some(DatabaseCorrupt | NotADatabase) => StoreError::damage(e),
        _ => StoreError(e.to_string()),
    }
}

impl Sqlite {
    /// Sets the page cache's budget (`NETAPI_CHAT_CACHE_MB`): the only cache of stored data
    /// the server keeps, since messages live only in the store. SQLite evicts past it.
    pub fn set_cache_mb(&mut self, mb: u32) -> Result<(), StoreError> {
        let kib = i64::from(mb) * 1024;
        self.conn
            .pragma_update(None, "cache_size", -kib)
            .map_err(err)
    }

    /// Opens (creating if needed) `dir/netapi-chat.sqlite3`, private to the server's user,
    /// and proves it writable before anything is served.
    ///
    /// The database is opened through the `unix-excl` VFS ([`open_excl`]): SQLite keeps the WAL
    /// index in heap memory instead of a memory-mapped `-shm` file, so a storage fault is an
    /// error the store thread sees and turns into a clean stop, never a SIGBUS from a mapped
    /// page that can no longer be written; the process's exclusive lock keeps a second server
    /// (or any other process) off the same data directory. A second connection of this
    /// process, the [`Checkpointer`]'s, copies the WAL into the database beside the store
    /// thread.
    ///
    /// The stored format version is `PRAGMA user_version` (see [`format`]): a newer one than
    /// this binary knows stops the start before anything is written; an older one is migrated
    /// inside the write probe's transaction, so the data directory is either all old or all
    /// new; a new database is stamped with the current version.
    pub fn open(dir: &Path, sync: Sync) -> Result<Sqlite, StoreError> {
        crate::data_dir::create(dir).map_err(StoreError)?;
        crate::data_dir::check_writable(dir).map_err(StoreError)?;
        let path = dir.join("netapi-chat.sqlite3");
        let mut wal = path.clone().into_os_string();
        wal.push("-wal");
        let wal: std::path::PathBuf = wal.into();
        let mut shm = path.clone().into_os_string();
        shm.push("-shm");
        missing_database(dir, &path, &wal)?;
        // SQLite creates the -wal with the database's mode: create the database 0600 first,
        // and tighten files an earlier version left readable by others.
        crate::data_dir::create_private(&path).map_err(StoreError)?;
        // A backup's copy cut short by a crash: not data, only space.
        let _ = std::fs::remove_file(dir.join(crate::data_dir::BACKUP_PART));
        for f in [&path, &wal, &std::path::PathBuf::from(shm)] {
            crate::data_dir::tighten(f).map_err(StoreError)?;
        }
        let mut conn = open_excl(&path)?;
        // Another process holding the lock answers at once: nothing else should be waited for.
        conn.busy_timeout(std::time::Duration::from_millis(500))
            .map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| first_write_failed(&path, e))?;
        conn.pragma_update(
            None,
            "synchronous",
            if sync == Sync::Full { "FULL" } else { "NORMAL" },
        )
        .map_err(err)?;
        // Checkpoints (copying the WAL back into the database, with fsyncs) run on the
        // checkpointer's connection; the store thread finishes one in a gap between commits
        // only past `GAP_CHECKPOINT_FRAMES` (see `idle`), and inside a commit only past
        // `FORCE_CHECKPOINT_FRAMES` (see `commit`). The hook replaces SQLite's automatic
        // checkpoint and tells how many frames the WAL holds.
        let frames = Arc::new(AtomicU64::new(0));
        let seen = Arc::clone(&frames);
        conn.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, pages: c_int| {
            seen.store(u64::try_from(pages).unwrap_or(0), Ordering::Relaxed);
            Ok(())
        }))
        .map_err(err)?;
        // The WAL file is cut back to this size whenever it is reset.
        conn.pragma_update(None, "journal_size_limit", WAL_LIMIT as i64)
            .map_err(err)?;
        let place = path.display().to_string();
        let (version, has_data) =
            stored_version(&conn).map_err(|e| match e.sqlite_error_code() {
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                    first_write_failed(&path, e)
                }
                _ => StoreError(format!("reading the stored format version of {place}: {e}")),
            })?;
        // A stamp is believed even without the tables this version knows (a newer format may
        // have others); no stamp means version 1 if there is data, and a new database if not.
        let version = match (version, has_data) {
            (0, true) => format::UNVERSIONED,
            (0, false) => format::CURRENT,
            (stamped, _) => stamped,
        };
        format::check(version, &place).map_err(StoreError)?;
        // The write probe: a read-only file, directory or file system, or another process
        // holding the database, stops the start here with a message, not at the first request.
        conn.execute_batch(
            "BEGIN IMMEDIATE;
             CREATE TABLE IF NOT EXISTS records (
                 kind TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
                 PRIMARY KEY (kind, key)) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS outbox (
                 id INTEGER PRIMARY KEY, subscription TEXT NOT NULL,
                 body BLOB NOT NULL, created_ms INTEGER NOT NULL,
                 attempts INTEGER NOT NULL DEFAULT 0,
                 next_attempt_ms INTEGER NOT NULL DEFAULT 0,
                 failing_since_ms INTEGER, dead_ms INTEGER);
             CREATE INDEX IF NOT EXISTS outbox_by_subscription ON outbox (subscription, id);
             CREATE TABLE IF NOT EXISTS messages (
                 session TEXT NOT NULL, seq INTEGER NOT NULL, id TEXT NOT NULL,
                 sender TEXT NOT NULL, correlator TEXT, value BLOB NOT NULL,
                 sent_ms INTEGER NOT NULL,
                 PRIMARY KEY (session, seq)) WITHOUT ROWID;
             CREATE UNIQUE INDEX IF NOT EXISTS messages_by_id ON messages (session, id);
             CREATE INDEX IF NOT EXISTS messages_by_correlator
                 ON messages (session, sender, correlator) WHERE correlator IS NOT NULL;
             CREATE TABLE IF NOT EXISTS started (at_ms INTEGER NOT NULL);
             DELETE FROM started;",
        )
        .map_err(|e| first_write_failed(&path, e))?;
        let migrated = match migrate(&conn, version, &place) {
            Ok(m) => m,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        };
        let probe = conn
            .execute("INSERT INTO started (at_ms) VALUES (?1)", params![now_ms()])
            .and_then(|_| conn.pragma_update(None, "user_version", format::CURRENT))
            .and_then(|_| conn.execute_batch("COMMIT"));
        if let Err(e) = probe {
            return Err(first_write_failed(&path, e));
        }
        if conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(true) {
            return Err(StoreError(format!(
                "{} can only be opened read-only; the server needs to write there",
                path.display()
            )));
        }
        let checkpointer = Checkpointer::start(open_excl(&path)?)?;
        Ok(Sqlite {
            conn,
            wal,
            frames,
            migrated,
            _checkpointer: checkpointer,
        })
    }
}

/// The stored format version (`user_version`, 0 when never set) and whether the database holds
/// data at all (a new one gets the current version; data without a version is version 1's).
fn stored_version(conn: &Connection) -> Result<(u32, bool), rusqlite::Error> {
    let version: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let has_data: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'records')",
        [],
        |r| r.get(0),
    )?;
    Ok((version, has_data))
}

/// Rows one migration query reads at a time, so that memory stays bounded on a large store.
const MIGRATION_PAGE: i64 = 1000;

/// Hands `each` every row of `read`, [`MIGRATION_PAGE`] rows at a time. `read` is
/// keyset-paged: it answers rows in key order, and its parameters are the key its page starts
/// after, then the page size; `start` is a key below every stored one, `row` reads a row and
/// `key_of` tells its key. Every migration walk goes through here, so that each reads its
/// table the same bounded way; the first error, `read`'s or `each`'s, ends the walk.
fn each_row<R>(
    read: &mut rusqlite::Statement<'_>,
    start: Vec<Value>,
    row: impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<R>,
    key_of: impl Fn(&R) -> Vec<Value>,
    mut each: impl FnMut(&R) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut after = start;
    loop {
        let page = after.iter().chain([&Value::Integer(MIGRATION_PAGE)]);
        let rows = read
            .query_map(params_from_iter(page), &row)
            .map_err(err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        let Some(last) = rows.last() else { break };
        after = key_of(last);
        for r in &rows {
            each(r)?;
        }
    }
    Ok(())
}

/// Runs the steps from `from` to [`format::CURRENT`] over every record and outbox entry, inside
/// the caller's transaction; `None` when there was nothing to do. A record a step cannot read
/// stops the start with an error naming it (the transaction is rolled back, the data directory
/// stays as it was).
fn migrate(conn: &Connection, from: u32, place: &str) -> Result<Option<Migrated>, StoreError> {
    if from >= format::CURRENT {
        return Ok(None);
    }
    let mut done = Migrated {
        from,
        to: format::CURRENT,
        records: 0,
        outbox: 0,
    };
    for step in format::steps(from) {
        let failed = |what: String, e: String| {
            StoreError(format!(
                "{place}: migrating the stored format from version {} to {} ({}): {what}: {e}",
                step.from,
                step.from + 1,
                step.what
            ))
        };
        let mut read = conn
            .prepare(
                "SELECT kind, key, value FROM records WHERE (kind, key) > (?1, ?2)
                 ORDER BY kind, key LIMIT ?3",
            )
            .map_err(err)?;
        let mut write = conn
            .prepare("UPDATE records SET value = ?3 WHERE kind = ?1 AND key = ?2")
            .map_err(err)?;
        each_row(
            &mut read,
            vec![String::new().into(), String::new().into()],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            },
            |(name, key, _)| vec![name.clone().into(), key.clone().into()],
            |(name, key, value)| {
                let kind = Kind::from_name(name).ok_or_else(|| {
                    failed(format!("record `{key}`"), format!("unknown kind `{name}`"))
                })?;
                match (step.record)(kind, value) {
                    Ok(Some(new)) => {
                        write.execute(params![name, key, new]).map_err(err)?;
                        done.records += 1;
                        Ok(())
                    }
                    Ok(None) => Ok(()),
                    Err(e) => Err(failed(format!("stored {name} `{key}`"), e)),
                }
            },
        )?;
        let mut read = conn
            .prepare("SELECT id, body FROM outbox WHERE id > ?1 ORDER BY id LIMIT ?2")
            .map_err(err)?;
        let mut write = conn
            .prepare("UPDATE outbox SET body = ?2 WHERE id = ?1")
            .map_err(err)?;
        each_row(
            &mut read,
            vec![i64::MIN.into()],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)),
            |(id, _)| vec![(*id).into()],
            |(id, body)| match (step.outbox)(body) {
                Ok(Some(new)) => {
                    write.execute(params![id, new]).map_err(err)?;
                    done.outbox += 1;
                    Ok(())
                }
                Ok(None) => Ok(()),
                Err(e) => Err(failed(format!("stored notification {id}"), e)),
            },
        )?;
    }
    if from < format::MESSAGES_TABLE {
        done.records += move_messages(conn, place)?;
    }
    if from < format::MESSAGE_TIMES {
        stamp_message_times(conn, place)?;
    }
    if from < format::DELIVERY_COLUMNS {
        done.outbox += add_delivery_columns(conn)?;
    }
    Ok(Some(done))
}

/// The layout part of the step to version [`format::DELIVERY_COLUMNS`]: the outbox rows gain
/// their delivery state (no attempt made yet, due at once, endpoint not known to fail, not a
/// dead letter), which is what an older version's restart made of them anyway. Runs inside the
/// caller's transaction; answers how many rows it touched.
fn add_delivery_columns(conn: &Connection) -> Result<u64, StoreError> {
    conn.execute_batch(
        "ALTER TABLE outbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE outbox ADD COLUMN next_attempt_ms INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE outbox ADD COLUMN failing_since_ms INTEGER;
         ALTER TABLE outbox ADD COLUMN dead_ms INTEGER;",
    )
    .map_err(err)?;
    conn.query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get::<_, i64>(0))
        .map(i64::unsigned_abs)
        .map_err(err)
}

/// The layout part of the step to version [`format::MESSAGES_TABLE`]: every message record
/// (key `sessionId/messageId`, already in the current record shape by the earlier steps) moves
/// to the `messages` table, its index columns read from the record. Runs inside the caller's
/// transaction; a record it cannot read stops the start with its name.
fn move_messages(conn: &Connection, place: &str) -> Result<u64, StoreError> {
    let failed = |key: &str, e: String| {
        StoreError(format!(
            "{place}: migrating the stored format to version {}: stored message `{key}`: {e}",
            format::MESSAGES_TABLE
        ))
    };
    let mut read = conn
        .prepare(
            "SELECT key, value FROM records WHERE kind = 'message' AND key > ?1
             ORDER BY key LIMIT ?2",
        )
        .map_err(err)?;
    let mut write = conn
        .prepare(
            "INSERT INTO messages (session, seq, id, sender, correlator, value, sent_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0)",
        )
        .map_err(err)?;
    let mut moved = 0u64;
    each_row(
        &mut read,
        vec![String::new().into()],
        |r| Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?)),
        |(key, _)| vec![key.clone().into()],
        |(key, value)| {
            let row = format::message_row(key, value).map_err(|e| failed(key, e))?;
            let seq = i64::try_from(row.seq).map_err(|_| failed(key, "seq out of range".into()))?;
            write
                .execute(params![
                    row.session,
                    seq,
                    row.id,
                    row.sender,
                    row.correlator,
                    row.value
                ])
                .map_err(|e| failed(key, e.to_string()))?;
            moved += 1;
            Ok(())
        },
    )?;
    conn.execute("DELETE FROM records WHERE kind = 'message'", [])
        .map_err(err)?;
    Ok(moved)
}

/// The layout part of the step to version [`format::MESSAGE_TIMES`]: the `messages` table gets
/// its `sent_ms` column (a version-3 table has none; one created by this version's schema
/// already has it, holding 0 for the rows [`move_messages`] just moved), and every row gets
/// the time read from its record ([`format::message_time`]). Runs inside the caller's
/// transaction, a page of rows at a time; a record it cannot read stops the start with its
/// name.
fn stamp_message_times(conn: &Connection, place: &str) -> Result<(), StoreError> {
    let has_column: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM pragma_table_info('messages') WHERE name = 'sent_ms')",
            [],
            |r| r.get(0),
        )
        .map_err(err)?;
    if !has_column {
        conn.execute_batch("ALTER TABLE messages ADD COLUMN sent_ms INTEGER NOT NULL DEFAULT 0")
            .map_err(err)?;
    }
    let failed = |session: &str, seq: i64, e: String| {
        StoreError(format!(
            "{place}: migrating the stored format to version {}: stored message seq {seq} of session `{session}`: {e}",
            format::MESSAGE_TIMES
        ))
    };
    let mut read = conn
        .prepare(
            "SELECT session, seq, value FROM messages WHERE (session, seq) > (?1, ?2)
             ORDER BY session, seq LIMIT ?3",
        )
        .map_err(err)?;
    let mut write = conn
        .prepare("UPDATE messages SET sent_ms = ?3 WHERE session = ?1 AND seq = ?2")
        .map_err(err)?;
    each_row(
        &mut read,
        vec![String::new().into(), i64::MIN.into()],
        |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Vec<u8>>(2)?,
            ))
        },
        |(session, seq, _)| vec![session.clone().into(), (*seq).into()],
        |(session, seq, value)| {
            let at = format::message_time(value).map_err(|e| failed(session, *seq, e))?;
            write.execute(params![session, seq, at]).map_err(err)?;
            Ok(())
        },
    )
}

impl Sqlite {
    /// The checkpointer has copied most of the WAL by then, so this copies what is left and
    /// the next commit starts the WAL over. A failed one (e.g. a full disk) is tried
    /// again later: the WAL stays valid, and commits report their own errors.
    fn checkpoint(&mut self) {
        if self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            .is_ok()
        {
            self.frames.store(0, Ordering::Relaxed);
        }
    }
}

/// The message for a failed first write: names the file, and the likely causes.
fn first_write_failed(path: &Path, e: rusqlite::Error) -> StoreError {
    let busy = matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    );
    if busy {
        StoreError(format!(
            "{} is in use by another process (one server per data directory): {e}",
            path.display()
        ))
    } else {
        StoreError(format!("{} is not writable: {e}", path.display()))
    }
}

/// Size past which the WAL is truncated at the next idle moment of the store thread. A
/// truncation stalls commits for tens of milliseconds on this class of disk (measured: at
/// 64 MiB it put the message-send p99 at 20-40 ms), so it is kept rare: it bounds disk use and
/// start-up replay, it is not routine.
const WAL_LIMIT: u64 = 512 * 1024 * 1024;

/// WAL frames after which the store thread checkpoints in the next gap between commits: the
/// checkpointer copies the WAL all the time, but under a stream of commits it may never catch
/// up with the last frames, and the WAL is only started over once all of it was copied. By
/// then it has copied almost everything, so what is left for the store thread is short.
const GAP_CHECKPOINT_FRAMES: u64 = 4096;

/// The start-up check of a data directory whose database is missing or empty (review F1: a
/// volume that did not mount, a bad restore). SQLite would start a new, empty database there
/// without a word, deleting a `-wal` left beside the missing file, the only copy of the
/// changes it holds: a `-wal` with content stops the start instead, naming it. Without one, a
/// directory that shows it was used (a token file the server generated at a first start, a
/// `webhook-secret`, a `-shm`) still starts, with a warning that says what was found. A fresh
/// directory (nothing there, or only a token file written by hand) starts as before. A
/// directory holding a backup's part file ([`crate::data_dir::BACKUP_PART`]) and no database
/// is a backup cut short (review F6): refused, not started empty with a new token.
fn missing_database(dir: &Path, path: &Path, wal: &Path) -> Result<(), StoreError> {
    let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).ok();
    if len(path).is_some_and(|l| l > 0) {
        return Ok(());
    }
    let what = if len(path).is_some() {
        "is empty"
    } else {
        "is missing"
    };
    let part = dir.join(crate::data_dir::BACKUP_PART);
    if part.exists() {
        return Err(StoreError(format!(
            "{} holds {} but no database: it is a backup that did not complete (the server \
             or its destination failed during the copy), not a data directory; take the backup \
             again",
            dir.display(),
            part.display()
        )));
    }
    if let Some(changes) = len(wal).filter(|l| *l > 0) {
        return Err(StoreError(format!(
            "the database {} {what}, but its write-ahead log {} holds {changes} bytes of \
             changes: starting would delete them. If the data directory is on a volume that did \
             not mount, or was restored without its database, put the database back beside the \
             log; to start with an empty store instead, move the log (and any `-shm`) out of {}",
            path.display(),
            wal.display(),
            dir.display()
        )));
    }
    let mut shm = path.as_os_str().to_owned();
    shm.push("-shm");
    let generated = std::fs::read_to_string(dir.join("tokens"))
        .is_ok_and(|t| t.contains("# Generated at first start."));
    let signs: Vec<&str> = [
        (generated, "a token file generated at a first start"),
        (dir.join("webhook-secret").exists(), "a webhook-secret"),
        (Path::new(&shm).exists(), "a -shm file"),
    ]
    .into_iter()
    .filter_map(|(found, sign)| found.then_some(sign))
    .collect();
    if !signs.is_empty() {
        crate::data_dir::warn(&format!(
            "the database {} {what}, but data directory {} was used before (it holds {}): \
             starting with a new, empty store. If it should hold data (a volume that did not \
             mount, a restore without its database), stop the server and put the database back",
            path.display(),
            dir.display(),
            signs.join(", ")
        ));
    }
    Ok(())
}

/// How many SQLite virtual-machine steps `VACUUM INTO` runs between two looks at its time
/// limit ([`Backend::backup_into`]): a look is a clock read, so this keeps their cost small
/// while the limit is still kept to well under a millisecond.
const BACKUP_CHECK_EVERY: c_int = 1000;

/// WAL frames after which a commit checkpoints right away: only reached when the store thread
/// is never idle for long enough to checkpoint (16384 pages, 64 MiB: measured, 4096 put the
/// p99 of 16 busy clients at 20 ms; at 16384 one commit in ~3000 waits ~60 ms).
const FORCE_CHECKPOINT_FRAMES: u64 = 16 * 1024;

impl Backend for Sqlite {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        let mut snapshot = Snapshot {
            migrated: self.migrated.take(),
            ..Snapshot::default()
        };
        let mut stmt = self
            .conn
            .prepare("SELECT kind, key, value FROM records ORDER BY kind, key")
            .map_err(err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            })
            .map_err(err)?;
        for row in rows {
            let (kind, key, value) = row.map_err(err)?;
            let kind = Kind::from_name(&kind)
                .ok_or_else(|| StoreError(format!("unknown record kind `{kind}` in the store")))?;
            snapshot.records.push((kind, key, value));
        }
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, subscription, body, created_ms, attempts, next_attempt_ms,
                     failing_since_ms
                 FROM outbox WHERE dead_ms IS NULL ORDER BY id",
            )
            .map_err(err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(OutboxEntry {
                    id: r.get::<_, i64>(0)?.unsigned_abs(),
                    subscription: r.get(1)?,
                    body: r.get(2)?,
                    created_ms: r.get(3)?,
                    progress: Progress {
                        attempts: u32::try_from(r.get::<_, i64>(4)?).unwrap_or(u32::MAX),
                        next_attempt_ms: r.get(5)?,
                        failing_since_ms: r.get(6)?,
                    },
                })
            })
            .map_err(err)?;
        for row in rows {
            snapshot.outbox.push(row.map_err(err)?);
        }
        Ok(snapshot)
    }

    /// The database answers a query on the held connection, and its directory takes a small
    /// synced write (the start-up writability check): a full, read-only or failing file
    /// system shows here before a commit fails on it. Nothing stored is touched.
    fn probe(&mut self) -> Result<(), StoreError> {
        self.conn
            .query_row("PRAGMA user_version", [], |_| Ok(()))
            .map_err(err)?;
        match self.wal.parent() {
            Some(dir) => crate::data_dir::check_writable(dir).map_err(StoreError),
            None => Ok(()),
        }
    }

    /// A `COUNT(*)` over the outbox, between two group commits: its cost follows the backlog
    /// (measured: 80-140 ms for a million 1 KiB rows on the loaded 2-core dev machine, so a
    /// scrape delays commits that long at that backlog; nothing at a normal one).
    fn outbox_len(&mut self) -> Result<Option<u64>, StoreError> {
        // Dead letters are kept for replay, not waiting for delivery.
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM outbox WHERE dead_ms IS NULL",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| Some(u64::try_from(n).unwrap_or(0)))
            .map_err(err)
    }

    /// `VACUUM INTO` on the store thread's connection (no other process can open the
    /// database: `unix-excl`), so the
    /// copy is of one committed state; into a new file created `0600` first (SQLite would
    /// create it with the umask's mode, and would write over a small existing file). A
    /// progress handler interrupts it once it has run for `within` (commits wait for it).
    fn backup_into(&mut self, file: &Path, within: std::time::Duration) -> Result<(), StoreError> {
        let name = file
            .to_str()
            .ok_or_else(|| StoreError(format!("{} is not UTF-8", file.display())))?;
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(crate::data_dir::FILE_MODE)
                .open(file)
                .map_err(|e| StoreError(format!("creating {}: {e}", file.display())))?;
        }
        let deadline = std::time::Instant::now() + within;
        let late = Arc::new(AtomicBool::new(false));
        let seen = Arc::clone(&late);
        self.conn
            .progress_handler(
                BACKUP_CHECK_EVERY,
                Some(move || {
                    let over = std::time::Instant::now() >= deadline;
                    seen.store(over, Ordering::Relaxed);
                    over
                }),
            )
            .map_err(err)?;
        let copied = self.conn.execute("VACUUM INTO ?1", [name]);
        // Only this statement is timed: a commit after it must never be interrupted.
        self.conn
            .progress_handler(0, None::<fn() -> bool>)
            .map_err(err)?;
        match copied {
            Ok(_) => Ok(()),
            Err(_) if late.load(Ordering::Relaxed) => Err(StoreError(format!(
                "copying the database took longer than {} s (commits wait while it runs), so it was stopped; \
                 for a database this large, stop the server and copy its data directory instead",
                within.as_secs()
            ))),
            Err(e) => Err(StoreError(format!(
                "backing up into {}: {e}",
                file.display()
            ))),
        }
    }

    fn counts(&mut self, most: usize) -> Result<super::StoredCounts, StoreError> {
        let count = |sql: &str| {
            self.conn
                .query_row(sql, [], |r| r.get::<_, i64>(0))
                .map(|n| u64::try_from(n).unwrap_or(0))
                .map_err(err)
        };
        let messages = count("SELECT COUNT(*) FROM messages")?;
        // Dead letters (kept for replay) are not waiting for delivery.
        let undelivered = count("SELECT COUNT(*) FROM outbox WHERE dead_ms IS NULL")?;
        let dead_letters = count("SELECT COUNT(*) FROM outbox WHERE dead_ms IS NOT NULL")?;
        let mut by = self
            .conn
            .prepare(
                "SELECT subscription, COUNT(*) AS n FROM outbox WHERE dead_ms IS NULL
                 GROUP BY subscription
                 ORDER BY n DESC, subscription LIMIT ?1",
            )
            .map_err(err)?;
        let limit = i64::try_from(most).unwrap_or(i64::MAX);
        let undelivered_by_subscription = by
            .query_map([limit], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                ))
            })
            .map_err(err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        Ok(super::StoredCounts {
            messages,
            undelivered,
            undelivered_by_subscription,
            dead_letters,
        })
    }

    fn housekeeping_due(&self) -> bool {
        self.frames.load(Ordering::Relaxed) >= GAP_CHECKPOINT_FRAMES
    }

    fn idle(&mut self) {
        if self.frames.load(Ordering::Relaxed) >= GAP_CHECKPOINT_FRAMES {
            self.checkpoint();
        }
        if std::fs::metadata(&self.wal).is_ok_and(|m| m.len() > WAL_LIMIT) {
            // Best effort: a busy or failed truncation is tried again at the next idle moment.
            let _ = self
                .conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        }
    }

    fn commit(&mut self, batches: &[&Batch]) -> Result<(), StoreError> {
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut put = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO records (kind, key, value) VALUES (?1, ?2, ?3)",
                )
                .map_err(err)?;
            let mut del = tx
                .prepare_cached("DELETE FROM records WHERE kind = ?1 AND key = ?2")
                .map_err(err)?;
            let mut put_message = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO messages
                         (session, seq, id, sender, correlator, value, sent_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(err)?;
            // A new state of a stored message: its time stays; a purged one stays purged.
            let mut update_message = tx
                .prepare_cached("UPDATE messages SET value = ?3 WHERE session = ?1 AND seq = ?2")
                .map_err(err)?;
            let mut del_messages = tx
                .prepare_cached("DELETE FROM messages WHERE session = ?1")
                .map_err(err)?;
            let mut add = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO outbox (id, subscription, body, created_ms, attempts,
                         next_attempt_ms, failing_since_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(err)?;
            let mut del_outbox = tx
                .prepare_cached("DELETE FROM outbox WHERE subscription = ?1")
                .map_err(err)?;
            let mut progress = tx
                .prepare_cached(
                    "UPDATE outbox SET attempts = ?2, next_attempt_ms = ?3, failing_since_ms = ?4
                     WHERE id = ?1 AND dead_ms IS NULL",
                )
                .map_err(err)?;
            let mut bury = tx
                .prepare_cached("UPDATE outbox SET dead_ms = ?2 WHERE id = ?1")
                .map_err(err)?;
            let mut trim = tx.prepare_cached(TRIM_DEAD_SQL).map_err(err)?;
            let mut revive = tx.prepare_cached(REVIVE_SQL).map_err(err)?;
            let mut forget = tx
                .prepare_cached("DELETE FROM outbox WHERE id = ?1")
                .map_err(err)?;
            for b in batches {
                for (kind, key, value) in &b.puts {
                    if *kind == Kind::Message {
                        return Err(StoreError(format!(
                            "message `{key}` written as a record; messages go in Batch::messages"
                        )));
                    }
                    put.execute(params![kind.name(), key, value]).map_err(err)?;
                }
                for m in &b.messages {
                    match m.sent_ms {
                        Some(at) => put_message.execute(params![
                            m.session,
                            seq_param(m.seq)?,
                            m.id,
                            m.sender,
                            m.correlator,
                            m.value,
                            at
                        ]),
                        None => {
                            update_message.execute(params![m.session, seq_param(m.seq)?, m.value])
                        }
                    }
                    .map_err(err)?;
                }
                for (kind, key) in &b.deletes {
                    del.execute(params![kind.name(), key]).map_err(err)?;
                    if *kind == Kind::Session {
                        del_messages.execute(params![key]).map_err(err)?;
                    }
                    if *kind == Kind::Subscription {
                        del_outbox.execute(params![key]).map_err(err)?;
                    }
                }
                for e in &b.outbox {
                    let p = &e.progress;
                    add.execute(params![
                        outbox_id(e.id)?,
                        e.subscription,
                        e.body,
                        e.created_ms,
                        p.attempts,
                        p.next_attempt_ms,
                        p.failing_since_ms
                    ])
                    .map_err(err)?;
                }
                for id in &b.forget {
                    forget.execute(params![outbox_id(*id)?]).map_err(err)?;
                }
                for (id, p) in &b.progress {
                    progress
                        .execute(params![
                            outbox_id(*id)?,
                            p.attempts,
                            p.next_attempt_ms,
                            p.failing_since_ms
                        ])
                        .map_err(err)?;
                }
                for d in &b.bury {
                    let now = now_ms();
                    for id in &d.ids {
                        bury.execute(params![outbox_id(*id)?, now]).map_err(err)?;
                    }
                    trim.execute(params![
                        d.subscription,
                        i64::try_from(d.keep_count).unwrap_or(i64::MAX),
                        i64::try_from(d.keep_bytes).unwrap_or(i64::MAX)
                    ])
                    .map_err(err)?;
                }
                for r in &b.revive {
                    for id in &r.ids {
                        revive
                            .execute(params![outbox_id(*id)?, r.subscription, r.created_ms])
                            .map_err(err)?;
                    }
                }
            }
        }
        tx.commit().map_err(err)?;
        if self.frames.load(Ordering::Relaxed) >= FORCE_CHECKPOINT_FRAMES {
            self.checkpoint();
        }
        Ok(())
    }

    fn messages_after(
        &mut self,
        session: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        // A cursor past what a seq can be (client input) is past every message.
        let Some(after) = super::cursor(after) else {
            return Ok(Vec::new());
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut stmt = self.conn.prepare_cached(PAGE_SQL).map_err(err)?;
        let rows = stmt
            .query_map(params![session, after, limit], |r| {
                Ok((r.get::<_, i64>(0)?.unsigned_abs(), r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(err)
    }

    fn last_message_ms(&mut self, session: &str) -> Result<Option<i64>, StoreError> {
        self.conn
            .prepare_cached(LAST_SQL)
            .map_err(err)?
            .query_row(params![session], |r| r.get::<_, i64>(0))
            .optional()
            .map_err(err)
    }

    fn purge_dead_letters(&mut self, before_ms: i64, budget: usize) -> Result<usize, StoreError> {
        let n = self
            .conn
            .prepare_cached(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox
                   WHERE dead_ms IS NOT NULL AND dead_ms < ?1 ORDER BY dead_ms, id LIMIT ?2)",
            )
            .and_then(|mut st| {
                st.execute(rusqlite::params![
                    before_ms,
                    i64::try_from(budget).unwrap_or(i64::MAX)
                ])
            })
            .map_err(err)?;
        Ok(n)
    }

    fn purge_messages(
        &mut self,
        before_ms: i64,
        from: &str,
        budget: usize,
    ) -> Result<Purged, StoreError> {
        let mut walk = PurgeWalk::new(from, budget);
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut next_session = tx.prepare_cached(NEXT_SESSION_SQL).map_err(err)?;
            let mut head = tx.prepare_cached(HEAD_SQL).map_err(err)?;
            let mut delete = tx.prepare_cached(DELETE_HEAD_SQL).map_err(err)?;
            while let Some(from) = walk.next_start() {
                let session: Option<String> = next_session
                    .query_row(params![from], |r| r.get(0))
                    .optional()
                    .map_err(err)?;
                // The walk is past the last session: the round is over.
                let Some(session) = session else { break };
                let read = walk.visit();
                let rows = head
                    .query_map(
                        params![session, i64::try_from(read).unwrap_or(i64::MAX)],
                        |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
                    )
                    .map_err(err)?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(err)?;
                if let Some(last) = walk.head(&session, &rows, before_ms) {
                    delete.execute(params![session, last]).map_err(err)?;
                }
            }
        }
        tx.commit().map_err(err)?;
        if self.frames.load(Ordering::Relaxed) >= FORCE_CHECKPOINT_FRAMES {
            self.checkpoint();
        }
        Ok(walk.done())
    }

    fn dead_letters(
        &mut self,
        subscription: &str,
        after: Option<u64>,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<DeadLetterRow>, StoreError> {
        // A cursor past what an id can be (client input) is past every dead letter.
        let Some(after) = super::cursor(after) else {
            return Ok(Vec::new());
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut stmt = self.conn.prepare_cached(DEAD_LETTERS_SQL).map_err(err)?;
        let rows = stmt
            .query_map(params![subscription, after, since_ms, limit], |r| {
                Ok(DeadLetterRow {
                    id: r.get::<_, i64>(0)?.unsigned_abs(),
                    body: r.get(1)?,
                    created_ms: r.get(2)?,
                    dead_ms: r.get(3)?,
                    attempts: u32::try_from(r.get::<_, i64>(4)?).unwrap_or(u32::MAX),
                })
            })
            .map_err(err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(err)
    }

    fn message(&mut self, session: &str, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut stmt = self.conn.prepare_cached(BY_ID_SQL).map_err(err)?;
        let mut rows = stmt.query(params![session, id]).map_err(err)?;
        match rows.next().map_err(err)? {
            Some(r) => Ok(Some(r.get(0).map_err(err)?)),
            None => Ok(None),
        }
    }

    fn message_by_correlator(
        &mut self,
        session: &str,
        sender: &str,
        correlator: &str,
    ) -> Result<Option<String>, StoreError> {
        let mut stmt = self.conn.prepare_cached(BY_CORRELATOR_SQL).map_err(err)?;
        let mut rows = stmt
            .query(params![session, sender, correlator])
            .map_err(err)?;
        match rows.next().map_err(err)? {
            Some(r) => Ok(Some(r.get(0).map_err(err)?)),
            None => Ok(None),
        }
    }
}

/// A page of a session's messages: a range of the primary key (session, seq).
const PAGE_SQL: &str =
    "SELECT seq, value FROM messages WHERE session = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3";

/// One message by id. The index is named: without statistics the planner would otherwise
/// walk the session's primary-key range.
const BY_ID_SQL: &str =
    "SELECT value FROM messages INDEXED BY messages_by_id WHERE session = ?1 AND id = ?2";

/// A replayed send: the first message with this sender and correlator (the index holds the
/// seq after its columns, so `ORDER BY seq` needs no sort).
const BY_CORRELATOR_SQL: &str = "SELECT id FROM messages INDEXED BY messages_by_correlator
     WHERE session = ?1 AND sender = ?2 AND correlator = ?3 ORDER BY seq LIMIT 1";

/// Retention's walk over the sessions that have messages: the first at or after a session id
/// (a seek in the primary key).
const NEXT_SESSION_SQL: &str =
    "SELECT session FROM messages WHERE session >= ?1 ORDER BY session LIMIT 1";

/// The time of a session's last message ([`Backend::last_message_ms`]): the primary key's
/// (session, seq) order, read backwards.
const LAST_SQL: &str = "SELECT sent_ms FROM messages WHERE session = ?1 ORDER BY seq DESC LIMIT 1";

/// The oldest messages of a session, with their sending times (a primary-key range).
const HEAD_SQL: &str = "SELECT seq, sent_ms FROM messages WHERE session = ?1 ORDER BY seq LIMIT ?2";

/// A session's expired head: its messages up to a seq (a primary-key range).
const DELETE_HEAD_SQL: &str = "DELETE FROM messages WHERE session = ?1 AND seq <= ?2";

/// Keeps a subscription's newest dead letters within `?2` rows and `?3` bytes of bodies and
/// deletes the older ones (walks that subscription's outbox rows by the index).
const TRIM_DEAD_SQL: &str = "DELETE FROM outbox WHERE id IN (
     SELECT id FROM (
         SELECT id, ROW_NUMBER() OVER w AS n, SUM(length(body)) OVER w AS bytes
         FROM outbox WHERE subscription = ?1 AND dead_ms IS NOT NULL
         WINDOW w AS (ORDER BY id DESC))
     WHERE n > ?2 OR bytes > ?3)";

/// A page of a subscription's dead letters: a range of the index (subscription, id).
const DEAD_LETTERS_SQL: &str = "SELECT id, body, created_ms, dead_ms, attempts FROM outbox
     INDEXED BY outbox_by_subscription
     WHERE subscription = ?1 AND id > ?2 AND dead_ms IS NOT NULL AND created_ms >= ?3
     ORDER BY id LIMIT ?4";

/// A dead letter of the subscription becomes an undelivered notification again, with a fresh
/// schedule and a new creation time (see [`super::Revive`]).
const REVIVE_SQL: &str = "UPDATE outbox SET dead_ms = NULL, attempts = 0, next_attempt_ms = 0,
         failing_since_ms = NULL, created_ms = ?3
     WHERE id = ?1 AND subscription = ?2 AND dead_ms IS NOT NULL";

/// An outbox id as SQLite stores it (a signed 64-bit integer).
fn outbox_id(id: u64) -> Result<i64, StoreError> {
    i64::try_from(id).map_err(|_| StoreError("notification id overflow".to_owned()))
}

/// A seq as SQLite stores it (a signed 64-bit integer).
fn seq_param(seq: u64) -> Result<i64, StoreError> {
    i64::try_from(seq).map_err(|_| StoreError(format!("message seq {seq} out of range")))
}

/// A whole retention round (every job until the walk ends), for tests: messages deleted.
#[cfg(test)]
fn purge_all(db: &mut Sqlite, before_ms: i64, budget: usize) -> usize {
    let mut from = String::new();
    let mut deleted = 0;
    loop {
        let p = db.purge_messages(before_ms, &from, budget).unwrap();
        deleted += p.deleted;
        match p.next {
            Some(next) => from = next,
            None => return deleted,
        }
    }
}

/// The row of a message, for tests.
#[cfg(test)]
fn row(session: &str, seq: u64, sender: &str, correlator: Option<&str>) -> super::MessageRow {
    super::MessageRow {
        session: session.into(),
        seq,
        id: format!("msg-{seq}"),
        sender: sender.into(),
        correlator: correlator.map(Into::into),
        value: format!("{{\"seq\":{seq}}}").into_bytes(),
        sent_ms: Some(i64::try_from(seq).unwrap_or(0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::after_session;

    #[test]
    fn commits_survive_reopening() {
        let dir = std::env::temp_dir().join(format!("netapi-chat-sqlite-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let mut db = Sqlite::open(&dir, Sync::Normal).unwrap();
            let b = Batch {
                puts: vec![(Kind::Session, "s1".into(), b"{}".to_vec())],
                messages: vec![row("s1", 1, "a", None), row("s2", 2, "a", None)],
                outbox: vec![
                    OutboxEntry {
                        id: 1,
                        subscription: "a".into(),
                        body: b"x".to_vec(),
                        created_ms: 5,
                        progress: Progress::default(),
                    },
                    OutboxEntry {
                        id: 2,
                        subscription: "a".into(),
                        body: b"y".to_vec(),
                        created_ms: 6,
                        progress: Progress::default(),
                    },
                ],
                ..Batch::default()
            };
            db.commit(&[&b]).unwrap();
            let b2 = Batch {
                deletes: vec![(Kind::Session, "s1".into())],
                forget: vec![1],
                ..Batch::default()
            };
            db.commit(&[&b2]).unwrap();
        }
        let mut db = Sqlite::open(&dir, Sync::Normal).unwrap();
        let snap = db.load().unwrap();
        // Messages are not part of the snapshot; the ended session's went with it.
        assert_eq!(snap.records, vec![]);
        assert_eq!(db.messages_after("s1", None, 10).unwrap(), vec![]);
        assert_eq!(
            db.messages_after("s2", None, 10).unwrap(),
            vec![(2, b"{\"seq\":2}".to_vec())]
        );
        assert_eq!(
            snap.outbox.iter().map(|e| e.id).collect::<Vec<_>>(),
            vec![2]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "netapi-chat-sqlite-{name}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn user_version(dir: &Path) -> u32 {
        Connection::open(dir.join("netapi-chat.sqlite3"))
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap()
    }

    /// A v1 data directory (no version stamp): a session and a message as version 1 wrote them.
    fn v1_dir(name: &str, message: &str) -> std::path::PathBuf {
        let dir = temp_dir(name);
        let db = Connection::open(dir.join("netapi-chat.sqlite3")).unwrap();
        db.execute_batch(
            "CREATE TABLE records (kind TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
                 PRIMARY KEY (kind, key)) WITHOUT ROWID;
             CREATE TABLE outbox (id INTEGER PRIMARY KEY, subscription TEXT NOT NULL,
                 body BLOB NOT NULL, created_ms INTEGER NOT NULL);
             INSERT INTO records VALUES ('session', 's1', CAST('{\"id\":\"s1\"}' AS BLOB));
             INSERT INTO outbox
                 VALUES (1, 'sub', CAST('{\"ChatEventNotification\":{}}' AS BLOB), 5);",
        )
        .unwrap();
        db.execute(
            "INSERT INTO records VALUES ('message', 's1/m1', ?1)",
            params![message.as_bytes()],
        )
        .unwrap();
        dir
    }

    #[test]
    fn a_new_database_gets_the_current_version() {
        let dir = temp_dir("new");
        let mut db = Sqlite::open(&dir, Sync::Normal).unwrap();
        assert_eq!(db.load().unwrap().migrated, None);
        drop(db);
        assert_eq!(user_version(&dir), format::CURRENT);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Opening an unversioned (v1) directory runs steps 1 → 2 → 3 → 4 and stamps the version,
    /// once: the message is rewritten, then moved to the messages table; the outbox row gains
    /// its delivery state.
    /// A migration walk reads every row once, in key order, across pages (here 2,345 rows
    /// under a two-column key: three pages).
    #[test]
    fn each_row_walks_every_row_once_across_pages() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (a TEXT, b INTEGER, PRIMARY KEY (a, b))")
            .unwrap();
        let mut want = Vec::new();
        for i in 0..2345_i64 {
            let a = format!("k{}", i % 3);
            conn.execute("INSERT INTO t VALUES (?1, ?2)", params![a, i])
                .unwrap();
            want.push((a, i));
        }
        want.sort();
        let mut read = conn
            .prepare("SELECT a, b FROM t WHERE (a, b) > (?1, ?2) ORDER BY a, b LIMIT ?3")
            .unwrap();
        let mut got = Vec::new();
        each_row(
            &mut read,
            vec![String::new().into(), i64::MIN.into()],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
            |(a, b)| vec![a.clone().into(), (*b).into()],
            |r| {
                got.push(r.clone());
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn an_older_version_is_migrated_on_open_once() {
        let dir = v1_dir(
            "v1",
            r#"{"id":"m1","seq":7,"sender":"tel:+2","date_time":"2026-12-03T14:51:54Z","client_correlator":"c","recipients":[["tel:+1","Sent"]]}"#,
        );
        let mut db = Sqlite::open(&dir, Sync::Normal).unwrap();
        let snap = db.load().unwrap();
        assert_eq!(
            snap.migrated,
            Some(Migrated {
                from: 1,
                to: format::CURRENT,
                records: 2,
                outbox: 1
            })
        );
        assert!(snap.records.iter().all(|r| r.0 != Kind::Message));
        let message = db.message("s1", "m1").unwrap().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&message),
            r#"{"id":"m1","seq":7,"sender":"tel:+2","date_time":"2026-12-03T14:51:54Z","client_correlator":"c","recipients":[{"address":"tel:+1","status":"Sent"}]}"#
        );
        assert_eq!(db.messages_after("s1", Some(6), 5).unwrap()[0].0, 7);
        // Its sending time came from its `date_time`: a purge just after it keeps it, one
        // just before takes it.
        assert_eq!(purge_all(&mut db, 1_796_309_514_000, 10), 0);
        assert!(db.message("s1", "m1").unwrap().is_some());
        assert_eq!(
            db.message_by_correlator("s1", "tel:+2", "c").unwrap(),
            Some("m1".to_owned())
        );
        // The rest is untouched.
        assert_eq!(snap.records[0].2, b"{\"id\":\"s1\"}");
        assert_eq!(snap.outbox[0].body, b"{\"ChatEventNotification\":{}}");
        drop(db);
        assert_eq!(user_version(&dir), format::CURRENT);
        let mut db = Sqlite::open(&dir, Sync::Normal).unwrap();
        assert_eq!(db.load().unwrap().migrated, None, "migrated only once");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A record the migration cannot read stops the open with its name, and nothing changes.
    #[test]
    fn a_failed_migration_names_the_record_and_changes_nothing() {
        let dir = v1_dir("bad", r#"{"id":"m1","recipients":[["tel:+1"]]}"#);
        let before = std::fs::read(dir.join("netapi-chat.sqlite3")).unwrap();
        let e = Sqlite::open(&dir, Sync::Normal).err().unwrap().to_string();
        assert!(
            e.contains("message `s1/m1`") && e.contains("version 1 to 2"),
            "{e}"
        );
        assert_eq!(user_version(&dir), 0);
        let db = Connection::open(dir.join("netapi-chat.sqlite3")).unwrap();
        let value: Vec<u8> = db
            .query_row(
                "SELECT value FROM records WHERE kind = 'message'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(value, br#"{"id":"m1","recipients":[["tel:+1"]]}"#);
        drop(db);
        assert_eq!(
            std::fs::read(dir.join("netapi-chat.sqlite3"))
                .unwrap()
                .len(),
            before.len()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A v2 directory: the message moves to its table with its columns, value unchanged.
    #[test]
    fn version_2_messages_move_to_their_table() {
        let dir = v1_dir("v2", "{}");
        let value = r#"{"id":"m1","seq":3,"sender":"tel:+2","date_time":"1970-01-01T00:00:02Z","client_correlator":null,"recipients":[]}"#;
        {
            let db = Connection::open(dir.join("netapi-chat.sqlite3")).unwrap();
            db.execute(
                "UPDATE records SET value = ?1 WHERE kind = 'message'",
                params![value.as_bytes()],
            )
            .unwrap();
            db.pragma_update(None, "user_version", 2).unwrap();
        }
        let mut db = Sqlite::open(&dir, Sync::Normal).unwrap();
        let snap = db.load().unwrap();
        assert_eq!(snap.migrated.map(|m| (m.from, m.records)), Some((2, 1)));
        assert_eq!(
            db.messages_after("s1", None, 5).unwrap(),
            vec![(3, value.as_bytes().to_vec())]
        );
        assert_eq!(db.message_by_correlator("s1", "tel:+2", "").unwrap(), None);
        assert_eq!(
            db.last_message_ms("s1").unwrap(),
            Some(2000),
            "from its date_time"
        );
        assert_eq!(db.last_message_ms("s2").unwrap(), None);
        assert_eq!(purge_all(&mut db, 2000, 10), 0);
        assert_eq!(purge_all(&mut db, 2001, 10), 1);
        drop(db);
        assert_eq!(user_version(&dir), format::CURRENT);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A v3 directory: its outbox rows gain their delivery state (nothing tried yet, due at
    /// once, not dead) and are loaded as before; from then on progress and dead letters are
    /// stored, dead letters are not loaded, and deleting the subscription deletes them.
    #[test]
    fn version_3_outbox_rows_gain_their_delivery_state() {
        let dir = v1_dir("v3", "{}");
        {
            let db = Connection::open(dir.join("netapi-chat.sqlite3")).unwrap();
            db.execute("DELETE FROM records WHERE kind = 'message'", [])
                .unwrap();
            db.execute(
                "INSERT INTO outbox VALUES (2, 'sub', CAST('{}' AS BLOB), 6)",
                [],
            )
            .unwrap();
            db.pragma_update(None, "user_version", 3).unwrap();
        }
        let mut db = Sqlite::open(&dir, Sync::Normal).unwrap();
        let snap = db.load().unwrap();
        assert_eq!(snap.migrated.map(|m| (m.from, m.outbox)), Some((3, 2)));
        assert_eq!(
            snap.outbox
                .iter()
                .map(|e| (e.id, e.created_ms, e.progress))
                .collect::<Vec<_>>(),
            vec![(1, 5, Progress::default()), (2, 6, Progress::default())]
        );
        let p = Progress {
            attempts: 3,
            next_attempt_ms: 99,
            failing_since_ms: Some(4),
        };
        db.commit(&[&Batch {
            progress: vec![(1, p)],
            bury: vec![super::super::Bury {
                subscription: "sub".into(),
                ids: vec![2],
                keep_count: 10,
                keep_bytes: 1000,
            }],
            ..Batch::default()
        }])
        .unwrap();
        drop(db);
        assert_eq!(user_version(&dir), format::CURRENT);
        let mut db = Sqlite::open(&dir, Sync::Normal).unwrap();
        let snap = db.load().unwrap();
        assert_eq!(snap.migrated, None);
        assert_eq!(
            snap.outbox
                .iter()
                .map(|e| (e.id, e.progress))
                .collect::<Vec<_>>(),
            vec![(1, p)],
            "progress survives, the dead letter is not loaded"
        );
        let dead = |db: &Sqlite| -> i64 {
            db.conn
                .query_row(
                    "SELECT COUNT(*) FROM outbox WHERE dead_ms IS NOT NULL",
                    [],
                    |r| r.get(0),
                )
                .unwrap()
        };
        assert_eq!(dead(&db), 1);
        db.commit(&[&Batch {
            deletes: vec![(Kind::Subscription, "sub".into())],
            ..Batch::default()
        }])
        .unwrap();
        let rows: i64 = db
            .conn
            .query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            rows, 0,
            "a deleted subscription takes its outbox and dead letters"
        );
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Dead letters are kept within the count and byte figures per subscription, newest first.
    #[test]
    fn dead_letters_are_bounded_per_subscription() {
        let dir = temp_dir("dead");
        let mut db = Sqlite::open(&dir, Sync::Normal).unwrap();
        let entry = |id: u64, sub: &str, len: usize| OutboxEntry {
            id,
            subscription: sub.into(),
            body: vec![b'x'; len],
            created_ms: 1,
            progress: Progress::default(),
        };
        db.commit(&[&Batch {
            outbox: (1..=10)
                .map(|i| entry(i, "a", 10))
                .chain((11..=12).map(|i| entry(i, "b", 10)))
                .collect(),
            ..Batch::default()
        }])
        .unwrap();
        let bury = |ids: Vec<u64>, sub: &str, keep_count, keep_bytes| Batch {
            bury: vec![super::super::Bury {
                subscription: sub.into(),
                ids,
                keep_count,
                keep_bytes,
            }],
            ..Batch::default()
        };
        let dead = |db: &Sqlite, sub: &str| -> Vec<i64> {
            let mut st = db
                .conn
                .prepare("SELECT id FROM outbox WHERE subscription = ?1 AND dead_ms IS NOT NULL ORDER BY id")
                .unwrap();
            st.query_map(params![sub], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        db.commit(&[&bury(vec![1, 2, 3, 4, 5], "a", 3, 1000)])
            .unwrap();
        assert_eq!(dead(&db, "a"), [3, 4, 5], "at most 3");
        db.commit(&[&bury(vec![6, 7, 8], "a", 10, 25)]).unwrap();
        assert_eq!(dead(&db, "a"), [7, 8], "at most 25 bytes");
        db.commit(&[&bury(vec![11, 12], "b", 1, 1000)]).unwrap();
        assert_eq!(dead(&db, "b"), [12]);
        assert_eq!(dead(&db, "a"), [7, 8], "per subscription");
        assert_eq!(
            db.load().unwrap().outbox.len(),
            2,
            "9 and 10 are still live"
        );
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Dead letters are read a page at a time per subscription (after an id, from a time), and
    /// a redelivery turns them back into undelivered entries with their ids, a fresh schedule
    /// and a new creation time; ids that are not (or no longer) its dead letters are left alone.
    #[test]
    fn dead_letters_are_listed_and_revived() {
        let dir = temp_dir("revive");
        let mut db = Sqlite::open(&dir, Sync::Normal).unwrap();
        let entry = |id: u64, sub: &str| OutboxEntry {
            id,
            subscription: sub.into(),
            body: format!("{{\"n\":{id}}}").into_bytes(),
            created_ms: i64::try_from(id).unwrap() * 100,
            progress: Progress {
                attempts: 2,
                next_attempt_ms: 9,
                failing_since_ms: Some(5),
            },
        };
        db.commit(&[&Batch {
            outbox: (1..=6)
                .map(|i| entry(i, "a"))
                .chain([entry(7, "b")])
                .collect(),
            bury: vec![
                super::super::Bury {
                    subscription: "a".into(),
                    ids: vec![1, 2, 3, 4, 5],
                    keep_count: 10,
                    keep_bytes: 1000,
                },
                super::super::Bury {
                    subscription: "b".into(),
                    ids: vec![7],
                    keep_count: 10,
                    keep_bytes: 1000,
                },
            ],
            ..Batch::default()
        }])
        .unwrap();
        let ids = |rows: Vec<DeadLetterRow>| rows.iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(
            ids(db.dead_letters("a", None, i64::MIN, 100).unwrap()),
            [1, 2, 3, 4, 5]
        );
        assert_eq!(
            ids(db.dead_letters("a", Some(2), i64::MIN, 2).unwrap()),
            [3, 4]
        );
        assert_eq!(
            ids(db.dead_letters("a", None, 300, 100).unwrap()),
            [3, 4, 5]
        );
        assert_eq!(
            ids(db.dead_letters("a", Some(u64::MAX), i64::MIN, 9).unwrap()),
            [] as [u64; 0]
        );
        let row = &db.dead_letters("b", None, i64::MIN, 1).unwrap()[0];
        assert_eq!((row.id, row.created_ms, row.attempts), (7, 700, 2));
        assert_eq!(row.body, b"{\"n\":7}");
        assert!(row.dead_ms > 0);
        // 6 is live, 7 is b's: neither is touched.
        db.commit(&[&Batch {
            revive: vec![super::super::Revive {
                subscription: "a".into(),
                ids: vec![2, 3, 6, 7],
                created_ms: 4242,
            }],
            ..Batch::default()
        }])
        .unwrap();
        assert_eq!(
            ids(db.dead_letters("a", None, i64::MIN, 100).unwrap()),
            [1, 4, 5]
        );
        assert_eq!(ids(db.dead_letters("b", None, i64::MIN, 100).unwrap()), [7]);
        let live = db.load().unwrap().outbox;
        let fresh = Progress::default();
        assert_eq!(
            live.iter()
                .map(|e| (e.id, e.created_ms, e.progress))
                .collect::<Vec<_>>(),
            [
                (2, 4242, fresh),
                (3, 4242, fresh),
                (6, 600, entry(6, "a").progress)
            ]
        );
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The message lookups: pages walk seq order from the cursor, bounded by the limit, per
    /// session; a cursor at or past the end is an empty page; lookups by id and correlator.
    #[test]
    fn message_queries() {
        let dir = temp_dir("queries");
        let mut db = Sqlite::open(&dir, Sync::Normal).unwrap();
        // Seqs 2, 9, 10, 100 (numeric order, not text order) in s1; one in s10 and s2.
        let b = Batch {
            messages: vec![
                row("s1", 10, "a", Some("c1")),
                row("s1", 2, "a", None),
                row("s1", 100, "b", Some("c1")),
                row("s1", 9, "a", Some("c2")),
                row("s10", 5, "a", Some("c1")),
                row("s2", 3, "a", Some("c1")),
            ],
            ..Batch::default()
        };
        db.commit(&[&b]).unwrap();
        let seqs = |v: Vec<(u64, Vec<u8>)>| v.into_iter().map(|(s, _)| s).collect::<Vec<_>>();
        assert_eq!(
            seqs(db.messages_after("s1", None, 10).unwrap()),
            [2, 9, 10, 100]
        );
        assert_eq!(seqs(db.messages_after("s1", None, 2).unwrap()), [2, 9]);
        assert_eq!(
            seqs(db.messages_after("s1", Some(9), 2).unwrap()),
            [10, 100]
        );
        assert_eq!(seqs(db.messages_after("s1", Some(10), 2).unwrap()), [100]);
        assert_eq!(
            seqs(db.messages_after("s1", Some(100), 2).unwrap()),
            [0u64; 0]
        );
        assert_eq!(
            seqs(db.messages_after("s1", Some(u64::MAX), 2).unwrap()),
            [0u64; 0]
        );
        assert_eq!(seqs(db.messages_after("nope", None, 2).unwrap()), [0u64; 0]);
        assert_eq!(
            db.message("s1", "msg-9").unwrap(),
            Some(b"{\"seq\":9}".to_vec())
        );
        assert_eq!(db.message("s2", "msg-9").unwrap(), None);
        let by = |db: &mut Sqlite, s: &str, who: &str, c: &str| {
            db.message_by_correlator(s, who, c).unwrap()
        };
        assert_eq!(by(&mut db, "s1", "a", "c1").as_deref(), Some("msg-10"));
        assert_eq!(by(&mut db, "s1", "b", "c1").as_deref(), Some("msg-100"));
        assert_eq!(by(&mut db, "s1", "a", "c2").as_deref(), Some("msg-9"));
        assert_eq!(by(&mut db, "s1", "b", "c2"), None);
        assert_eq!(by(&mut db, "s10", "a", "c1").as_deref(), Some("msg-5"));
        // A new state of a message replaces it (same session and seq).
        let mut updated = row("s1", 9, "a", Some("c2"));
        updated.value = b"new".to_vec();
        db.commit(&[&Batch {
            messages: vec![updated],
            ..Batch::default()
        }])
        .unwrap();
        assert_eq!(db.message("s1", "msg-9").unwrap(), Some(b"new".to_vec()));
        assert_eq!(db.messages_after("s1", None, 10).unwrap().len(), 4);
        // A message can never be written as a record.
        let wrong = Batch {
            puts: vec![(Kind::Message, "s1/m".into(), b"{}".to_vec())],
            ..Batch::default()
        };
        assert!(db.commit(&[&wrong]).is_err());
        // The page query walks the primary key, the others their indexes.
        let plan = |sql: &str| -> String {
            let mut stmt = db
                .conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap();
            let args = rusqlite::params_from_iter(std::iter::repeat_n("1", stmt.parameter_count()));
            let rows = stmt.query_map(args, |r| r.get::<_, String>(3)).unwrap();
            rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
        };
        for (sql, uses) in [
            (PAGE_SQL, "PRIMARY KEY (session=? AND seq>?)"),
            (BY_ID_SQL, "messages_by_id (session=? AND id=?)"),
            (
                BY_CORRELATOR_SQL,
                "messages_by_correlator (session=? AND sender=? AND correlator=?)",
            ),
        ] {
            let p = plan(sql);
            assert!(p.contains(uses) && !p.contains("TEMP B-TREE"), "{p}");
        }
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A version-3 directory (messages table without a time): each row gets the time of its
    /// `date_time` and the index, values unchanged; one it cannot read stops the open.
    #[test]
    fn version_3_messages_get_their_time() {
        let v3 = |name: &str, date: &str| {
            let dir = temp_dir(name);
            let db = Connection::open(dir.join("netapi-chat.sqlite3")).unwrap();
            db.execute_batch(
                "CREATE TABLE records (kind TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
                     PRIMARY KEY (kind, key)) WITHOUT ROWID;
                 CREATE TABLE outbox (id INTEGER PRIMARY KEY, subscription TEXT NOT NULL,
                     body BLOB NOT NULL, created_ms INTEGER NOT NULL);
                 CREATE TABLE messages (
                     session TEXT NOT NULL, seq INTEGER NOT NULL, id TEXT NOT NULL,
                     sender TEXT NOT NULL, correlator TEXT, value BLOB NOT NULL,
                     PRIMARY KEY (session, seq)) WITHOUT ROWID;
                 CREATE UNIQUE INDEX messages_by_id ON messages (session, id);
                 PRAGMA user_version = 3;",
            )
            .unwrap();
            for (seq, d) in [(1, "1970-01-01T00:00:05Z"), (2, date)] {
                db.execute(
                    "INSERT INTO messages VALUES ('s1', ?1, ?2, 'a', NULL, ?3)",
                    params![
                        seq,
                        format!("m{seq}"),
                        format!("{{\"date_time\":\"{d}\"}}").into_bytes()
                    ],
                )
                .unwrap();
            }
            dir
        };
        let dir = v3("v3", "1970-01-01T00:00:09Z");
        let mut db = Sqlite::open(&dir, Sync::Normal).unwrap();
        assert_eq!(db.load().unwrap().migrated.map(|m| m.from), Some(3));
        assert_eq!(
            db.message("s1", "m2").unwrap(),
            Some(br#"{"date_time":"1970-01-01T00:00:09Z"}"#.to_vec())
        );
        assert_eq!(purge_all(&mut db, 9000, 10), 1);
        assert_eq!(db.message("s1", "m1").unwrap(), None);
        assert!(db.message("s1", "m2").unwrap().is_some());
        drop(db);
        assert_eq!(user_version(&dir), format::CURRENT);
        let _ = std::fs::remove_dir_all(&dir);

        let dir = v3("v3-bad", "last week");
        let e = Sqlite::open(&dir, Sync::Normal).err().unwrap().to_string();
        assert!(
            e.contains("seq 2 of session `s1`") && e.contains("version 4"),
            "{e}"
        );
        assert_eq!(user_version(&dir), 3);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A purge job walks the sessions in order and takes each one's messages sent before the
    /// cutoff, from its oldest, within its budget (a visit or a deletion is one unit), and says
    /// where the next job goes on; what it took is gone from every lookup; a later new state
    /// of a purged message (a confirmation that read it just before) does not bring it back.
    #[test]
    fn purge_jobs_walk_the_sessions_within_their_budget() {
        let dir = temp_dir("purge");
        let mut db = Sqlite::open(&dir, Sync::Normal).unwrap();
        // Sent at seq ms: s1 has 1..=5 and 20, s2 has 6..=8, s3 has 30.
        let mut messages: Vec<_> = (1..=5).map(|i| row("s1", i, "a", Some("c"))).collect();
        messages.extend((6..=8).map(|i| row("s2", i, "a", None)));
        messages.push(row("s1", 20, "a", None));
        messages.push(row("s3", 30, "a", None));
        db.commit(&[&Batch {
            messages,
            ..Batch::default()
        }])
        .unwrap();
        let seqs = |db: &mut Sqlite, s: &str| {
            db.messages_after(s, None, 100)
                .unwrap()
                .into_iter()
                .map(|(q, _)| q)
                .collect::<Vec<_>>()
        };
        let job = |db: &mut Sqlite, from: &str, budget: usize| {
            let p = db.purge_messages(8, from, budget).unwrap();
            (p.deleted, p.next)
        };
        // Nothing sent before 1 ms: one job visits the three sessions and ends the round.
        assert_eq!(db.purge_messages(1, "", 100).unwrap().next, None);
        assert_eq!(purge_all(&mut db, 1, 100), 0);
        // Budget 3: visit s1, delete two; s1 goes on.
        assert_eq!(job(&mut db, "", 3), (2, Some("s1".to_owned())));
        assert_eq!(seqs(&mut db, "s1"), [3, 4, 5, 20]);
        // Visit s1, delete 3, 4, 5, stop at 20; the next job starts after s1.
        let (deleted, next) = job(&mut db, "s1", 4);
        assert_eq!(deleted, 3);
        assert_eq!(next.as_deref(), Some(after_session("s1").as_str()));
        assert_eq!(seqs(&mut db, "s1"), [20]);
        // Visit s2, delete 6, 7 (8 is not before 8 ms), visit s3: nothing; the round is over.
        assert_eq!(job(&mut db, &next.unwrap(), 10), (2, None));
        assert_eq!(seqs(&mut db, "s2"), [8]);
        assert_eq!(seqs(&mut db, "s3"), [30]);
        assert_eq!(db.message("s1", "msg-5").unwrap(), None);
        assert_eq!(db.message_by_correlator("s1", "a", "c").unwrap(), None);
        // A budget of nothing still does a visit and a deletion: every job makes progress.
        let p = db.purge_messages(9, &after_session("s1"), 0).unwrap();
        assert_eq!(p.deleted, 1);
        assert_eq!(p.next, Some(after_session("s2")));
        assert_eq!(seqs(&mut db, "s2"), [0u64; 0]);
        // A confirmation's new state of a purged message stays purged; of a kept one, lands.
        let mut late = row("s1", 3, "a", Some("c"));
        late.sent_ms = None;
        let mut kept = row("s1", 20, "a", None);
        kept.sent_ms = None;
        kept.value = b"confirmed".to_vec();
        db.commit(&[&Batch {
            messages: vec![late, kept],
            ..Batch::default()
        }])
        .unwrap();
        assert_eq!(seqs(&mut db, "s1"), [20]);
        assert_eq!(
            db.message("s1", "msg-20").unwrap(),
            Some(b"confirmed".to_vec())
        );
        // The confirmation kept its time: it goes when its time comes.
        assert_eq!(purge_all(&mut db, 21, 2), 1);
        assert_eq!(purge_all(&mut db, 31, 2), 1);
        assert_eq!(
            db.purge_messages(1000, "", 5).unwrap(),
            Purged {
                deleted: 0,
                next: None
            }
        );
        // Each step is a primary-key seek or range: no index by time, no table scan.
        let plan = |sql: &str| -> String {
            let mut stmt = db
                .conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap();
            let args = rusqlite::params_from_iter(std::iter::repeat_n("1", stmt.parameter_count()));
            let rows = stmt.query_map(args, |r| r.get::<_, String>(3)).unwrap();
            rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
        };
        for (sql, uses) in [
            // The primary key or the id index: both lead with the session.
            (NEXT_SESSION_SQL, "(session>?)"),
            (HEAD_SQL, "PRIMARY KEY (session=?)"),
            (DELETE_HEAD_SQL, "PRIMARY KEY (session=? AND seq<?)"),
        ] {
            let p = plan(sql);
            assert!(
                p.contains("SEARCH") && p.contains(uses) && !p.contains("TEMP B-TREE"),
                "{sql}: {p}"
            );
        }
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A size the cost measurements below take from the environment (`BACKUP_ROWS`,
    /// `PURGE_ROWS`, `PURGE_STEP`), or `default` when unset or not a number.
    fn env_rows(name: &str, default: u64) -> u64 {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    /// Stores `rows` messages of 300 bytes sent round-robin in 1000 sessions (as on a busy
    /// server: the oldest message of every session is on a page of its own), sent at time
    /// `i` ms for the `i`-th, in commits of 10,000: the table the cost measurements below run on.
    fn fill_round_robin(db: &mut Sqlite, rows: u64) {
        for chunk in 0..rows.div_ceil(10_000) {
            let messages = (chunk * 10_000..((chunk + 1) * 10_000).min(rows))
                .map(|i| super::super::MessageRow {
                    session: format!("sess-{}-0123456789abcdef", i % 1000),
                    seq: i,
                    id: format!("msg-{i}-0123456789abcdef"),
                    sender: "tel:+15551230001".into(),
                    correlator: None,
                    value: vec![b'm'; 300],
                    sent_ms: Some(i64::try_from(i).unwrap()),
                })
                .collect();
            db.commit(&[&Batch {
                messages,
                ..Batch::default()
            }])
            .unwrap();
        }
    }

    /// How long `netapi-chat backup` (`VACUUM INTO`) and `summary` (`counts`) hold the store
    /// thread, i.e. delay commits, on `BACKUP_ROWS` (default 1M) stored messages of 300 bytes
    /// in 1000 sessions, with 10,000 notifications in the outbox of 100 subscriptions. For
    /// the issue-17 report:
    /// `[BACKUP_ROWS=…] cargo test --release --lib -- --ignored --nocapture backup_cost`.
    #[test]
    #[ignore]
    fn backup_cost() {
        let rows: u64 = env_rows("BACKUP_ROWS", 1_000_000);
        backup_cost_with(rows, "backup-cost");
    }

    fn backup_cost_with(rows: u64, name: &str) {
        let dir = temp_dir(name);
        let mut db = Sqlite::open(&dir, Sync::Normal).unwrap();
        fill_round_robin(&mut db, rows);
        for i in 0..10_000 {
            db.conn
                .execute(
                    "INSERT INTO outbox (subscription, body, created_ms) VALUES (?1, ?2, 0)",
                    params![format!("sub-{}", i % 100), vec![b'n'; 500]],
                )
                .unwrap();
        }
        db.checkpoint();
        let size = std::fs::metadata(dir.join("netapi-chat.sqlite3"))
            .unwrap()
            .len();
        let t = std::time::Instant::now();
        let counts = db.counts(100).unwrap();
        println!("counts of {rows} messages: {:?}", t.elapsed());
        assert_eq!(counts.messages, rows);
        assert_eq!(counts.undelivered, 10_000);
        assert_eq!(counts.undelivered_by_subscription.len(), 100);
        let into = dir.join("backup.sqlite3");
        let t = std::time::Instant::now();
        db.backup_into(&into, std::time::Duration::from_secs(600))
            .unwrap();
        let took = t.elapsed();
        println!(
            "VACUUM INTO of {} MiB: {took:?} ({:.0} MiB/s)",
            size >> 20,
            (size as f64 / 1_048_576.0) / took.as_secs_f64()
        );
        drop(db);
        // The copy is a database of its own with everything in it, private to the owner.
        let copy: i64 = Connection::open(&into)
            .unwrap()
            .query_row("SELECT COUNT(*) FROM messages", [], |r| r.get(0))
            .unwrap();
        assert_eq!(u64::try_from(copy).unwrap(), rows);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&into).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Never over an existing backup.
        std::fs::write(dir.join("taken.sqlite3"), "x").unwrap();
        let mut db = Sqlite::open(&dir, Sync::Normal).unwrap();
        assert!(
            db.backup_into(
                &dir.join("taken.sqlite3"),
                std::time::Duration::from_secs(600)
            )
            .is_err()
        );
        // Past its time limit it is stopped with a message saying so, and the store goes on.
        let late = dir.join("late.sqlite3");
        let e = db
            .backup_into(&late, std::time::Duration::ZERO)
            .unwrap_err();
        assert!(e.0.contains("took longer than 0 s"), "{e}");
        db.probe().unwrap();
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// [`backup_cost`]'s checks on a small database, in every test run.
    #[test]
    fn backup_and_counts_hold_everything_stored() {
        backup_cost_with(2_500, "backup-small");
    }

    /// How long one purge job holds the store thread on a large table: `PURGE_ROWS` (default
    /// 1M) messages sent round-robin in 1000 sessions (as on a busy server: the oldest message
    /// of every session is on a page of its own), then purged by jobs sized as `crate::retention` sizes them
    /// (`retention::next_batch`), with the idle-time checkpoint between jobs as on the server.
    /// For the issue-12 report:
    /// `[PURGE_STEP=50000] cargo test --release --lib -- --ignored --nocapture purge_batch_cost`.
    #[test]
    #[ignore]
    fn purge_batch_cost() {
        use crate::retention::{FIRST_BATCH, next_batch};
        let rows: u64 = env_rows("PURGE_ROWS", 1_000_000);
        let dir = temp_dir("purge-cost");
        let mut db = Sqlite::open(&dir, Sync::Normal).unwrap();
        let fill = std::time::Instant::now();
        fill_round_robin(&mut db, rows);
        db.checkpoint();
        println!("{rows} rows written in {:?}", fill.elapsed());
        // PURGE_STEP: rows each round finds expired (steady state: a round every 10 s at
        // 5,000 messages/s finds 50,000); by default one round finds them all (a backlog).
        let step: u64 = env_rows("PURGE_STEP", rows).max(1);
        let (mut times, mut sizes) = (Vec::new(), Vec::new());
        let mut batch = FIRST_BATCH;
        let all = std::time::Instant::now();
        let mut deleted = 0;
        let mut cutoff = 0;
        while cutoff < rows {
            cutoff = (cutoff + step).min(rows);
            let mut from = String::new();
            loop {
                let t = std::time::Instant::now();
                let p = db
                    .purge_messages(i64::try_from(cutoff).unwrap(), &from, batch)
                    .unwrap();
                let took = t.elapsed();
                deleted += p.deleted;
                times.push(took);
                sizes.push(batch);
                batch = next_batch(batch, took);
                // Between jobs the server's store thread is idle: it checkpoints there.
                db.idle();
                match p.next {
                    Some(next) => from = next,
                    None => break,
                }
            }
        }
        assert_eq!(deleted as u64, rows);
        let total = all.elapsed();
        let jobs = times.len();
        sizes.sort();
        times.sort();
        let pct = |p: f64| times[((jobs as f64 * p) as usize).min(jobs - 1)];
        println!(
            "{jobs} jobs in rounds of {step} rows (budget p50 {} min {} max {}): job p50 {:?} \
             p99 {:?} p99.9 {:?} max {:?}; {rows} rows purged in {total:?} with checkpoints \
             ({:.0} rows/s without pauses)",
            sizes[jobs / 2],
            sizes[0],
            sizes[jobs - 1],
            pct(0.5),
            pct(0.99),
            pct(0.999),
            times[jobs - 1],
            rows as f64 / total.as_secs_f64()
        );
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The checkpointer copies committed pages into the database file by itself, beside the
    /// store thread (which never checkpoints below `GAP_CHECKPOINT_FRAMES`), and no `-shm`
    /// file is ever made (the WAL index is in heap memory: no SIGBUS, issue 11).
    #[test]
    fn the_checkpointer_copies_the_wal_into_the_database_beside_the_store_thread() {
        let dir = temp_dir("checkpointer");
        let mut db = Sqlite::open(&dir, Sync::Normal).unwrap();
        let file = dir.join("netapi-chat.sqlite3");
        let before = std::fs::metadata(&file).unwrap().len();
        // ~1 MiB of messages: far below the store thread's own threshold.
        let batch = Batch {
            messages: (1..=1000)
                .map(|i| super::super::MessageRow {
                    value: vec![b'x'; 1024],
                    ..row("s1", i, "tel:+1", None)
                })
                .collect(),
            ..Batch::default()
        };
        db.commit(&[&batch]).unwrap();
        assert!(
            !db.housekeeping_due(),
            "the store thread has nothing to do yet"
        );
        let grown = (0..100).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(20));
            std::fs::metadata(&file).unwrap().len() > before + 512 * 1024
        });
        assert!(
            grown,
            "the database file did not grow: nothing was checkpointed"
        );
        let mut shm = file.clone().into_os_string();
        shm.push("-shm");
        assert!(
            !std::path::PathBuf::from(shm).exists(),
            "a -shm file was made"
        );
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `NETAPI_CHAT_CACHE_MB` reaches SQLite as a budget in KiB (a negative `cache_size`).
    #[test]
    fn the_cache_budget_is_set_in_kib() {
        let dir = temp_dir("cache");
        let mut db = Sqlite::open(&dir, Sync::Normal).unwrap();
        db.set_cache_mb(3).unwrap();
        let kib: i64 = db
            .conn
            .query_row("PRAGMA cache_size", [], |r| r.get(0))
            .unwrap();
        assert_eq!(kib, -3 * 1024);
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A directory from a newer binary is refused before anything is written to it.
    #[test]
    fn a_newer_version_is_refused() {
        let dir = temp_dir("future");
        drop(Sqlite::open(&dir, Sync::Normal).unwrap());
        Connection::open(dir.join("netapi-chat.sqlite3"))
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let e = Sqlite::open(&dir, Sync::Normal).err().unwrap().to_string();
        assert!(e.contains("version 99") && e.contains("newer"), "{e}");
        assert_eq!(user_version(&dir), 99);
        let _ = std::fs::remove_dir_all(&dir);
        // Even when it holds none of the tables this version knows.
        let dir = temp_dir("future-empty");
        Connection::open(dir.join("netapi-chat.sqlite3"))
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let e = Sqlite::open(&dir, Sync::Normal).err().unwrap().to_string();
        assert!(e.contains("version 99"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
