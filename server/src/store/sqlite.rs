//! The embedded default backend: one SQLite file in WAL mode.
//!
//! Three tables: `records` (kind, key → JSON value: what start-up loads), `messages` (indexed by
//! (session, seq), (session, id) and (session, sender, correlator); read on demand, never at
//! start-up) and `outbox` (undelivered notifications with their delivery state, and dead
//! letters: rows with `dead_ms` set, bounded per subscription, never loaded). With
//! `synchronous=NORMAL` (the default here) a commit is on disk in the WAL before the client is
//! answered, so it survives a crash of the process (SIGKILL); `FULL` also survives a power cut
//! at the cost of an fsync per group commit (`NETAPI_CHAT_SYNC=full`).

use super::now_ms;
use super::{Backend, Batch, Kind, Migrated, OutboxEntry, Progress, Snapshot, StoreError, format};
use rusqlite::{Connection, OpenFlags, params};
use std::ffi::c_int;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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
}

fn err(e: rusqlite::Error) -> StoreError {
    StoreError(e.to_string())
}

fn kind_of(name: &str) -> Option<Kind> {
    match name {
        "subscription" => Some(Kind::Subscription),
        "session" => Some(Kind::Session),
        "message" => Some(Kind::Message),
        "meta" => Some(Kind::Meta),
        _ => None,
    }
}

impl Sqlite {
    /// Opens (creating if needed) `dir/netapi-chat.sqlite3`, private to the server's user,
    /// and proves it writable before anything is served.
    ///
    /// The database is held in `locking_mode=EXCLUSIVE`, set before WAL mode is first used:
    /// SQLite then keeps the WAL index in heap memory instead of a memory-mapped `-shm` file
    /// (<https://sqlite.org/wal.html#noshm>), so a storage fault is an error the store thread
    /// sees and turns into a clean stop, never a SIGBUS from a mapped page that can no longer
    /// be written. The exclusive lock, taken by the write probe and held until the process
    /// ends, also keeps a second server (or any other writer) off the same data directory.
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
        // SQLite creates the -wal with the database's mode: create the database 0600 first,
        // and tighten files an earlier version left readable by others.
        crate::data_dir::create_private(&path).map_err(StoreError)?;
        for f in [&path, &wal, &std::path::PathBuf::from(shm)] {
            crate::data_dir::tighten(f).map_err(StoreError)?;
        }
        let mut conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StoreError(format!("opening {}: {e}", path.display())))?;
        // Before WAL mode is used for the first time (see above).
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
            .map_err(err)?;
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
        // Checkpoints (copying the WAL back into the database, with fsyncs) run when the store
        // thread is idle (see `idle`), not in the middle of a commit, unless a load that never
        // leaves it idle lets the WAL grow past `FORCE_CHECKPOINT_FRAMES` (see `commit`). The
        // hook replaces SQLite's automatic checkpoint and tells how many frames the WAL holds.
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
        Ok(Sqlite {
            conn,
            wal,
            frames,
            migrated,
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
        let mut after = (String::new(), String::new());
        loop {
            let rows = read
                .query_map(params![after.0, after.1, MIGRATION_PAGE], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                    ))
                })
                .map_err(err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(err)?;
            let Some(last) = rows.last() else { break };
            after = (last.0.clone(), last.1.clone());
            for (name, key, value) in &rows {
                let kind = kind_of(name).ok_or_else(|| {
                    failed(format!("record `{key}`"), format!("unknown kind `{name}`"))
                })?;
                match (step.record)(kind, value) {
                    Ok(Some(new)) => {
                        write.execute(params![name, key, new]).map_err(err)?;
                        done.records += 1;
                    }
                    Ok(None) => {}
                    Err(e) => return Err(failed(format!("stored {name} `{key}`"), e)),
                }
            }
        }
        let mut read = conn
            .prepare("SELECT id, body FROM outbox WHERE id > ?1 ORDER BY id LIMIT ?2")
            .map_err(err)?;
        let mut write = conn
            .prepare("UPDATE outbox SET body = ?2 WHERE id = ?1")
            .map_err(err)?;
        let mut after = i64::MIN;
        loop {
            let rows = read
                .query_map(params![after, MIGRATION_PAGE], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
                })
                .map_err(err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(err)?;
            let Some(last) = rows.last() else { break };
            after = last.0;
            for (id, body) in &rows {
                match (step.outbox)(body) {
                    Ok(Some(new)) => {
                        write.execute(params![id, new]).map_err(err)?;
                        done.outbox += 1;
                    }
                    Ok(None) => {}
                    Err(e) => return Err(failed(format!("stored notification {id}"), e)),
                }
            }
        }
    }
    if from < format::MESSAGES_TABLE {
        done.records += move_messages(conn, place)?;
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
            "INSERT INTO messages (session, seq, id, sender, correlator, value)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(err)?;
    let mut after = String::new();
    let mut moved = 0u64;
    loop {
        let rows = read
            .query_map(params![after, MIGRATION_PAGE], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        let Some(last) = rows.last() else { break };
        after = last.0.clone();
        for (key, value) in &rows {
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
        }
    }
    conn.execute("DELETE FROM records WHERE kind = 'message'", [])
        .map_err(err)?;
    Ok(moved)
}

impl Sqlite {
    /// Nothing else uses the database (exclusive mode), so a passive checkpoint copies the
    /// whole WAL and the next commit starts it over. A failed one (e.g. a full disk) is tried
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

/// WAL frames after which the next idle moment of the store thread checkpoints (SQLite's own
/// automatic checkpoint default: 1000 pages, about 4 MiB).
const CHECKPOINT_FRAMES: u64 = 1000;

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
            let kind = kind_of(&kind)
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

    fn idle(&mut self) {
        if self.frames.load(Ordering::Relaxed) >= CHECKPOINT_FRAMES {
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
                    "INSERT OR REPLACE INTO messages (session, seq, id, sender, correlator, value)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
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
                    put_message
                        .execute(params![
                            m.session,
                            seq_param(m.seq)?,
                            m.id,
                            m.sender,
                            m.correlator,
                            m.value
                        ])
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
        let after = match after.map(i64::try_from) {
            None => -1,
            Some(Ok(a)) => a,
            Some(Err(_)) => return Ok(Vec::new()),
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

/// Keeps a subscription's newest dead letters within `?2` rows and `?3` bytes of bodies and
/// deletes the older ones (walks that subscription's outbox rows by the index).
const TRIM_DEAD_SQL: &str = "DELETE FROM outbox WHERE id IN (
     SELECT id FROM (
         SELECT id, ROW_NUMBER() OVER w AS n, SUM(length(body)) OVER w AS bytes
         FROM outbox WHERE subscription = ?1 AND dead_ms IS NOT NULL
         WINDOW w AS (ORDER BY id DESC))
     WHERE n > ?2 OR bytes > ?3)";

/// An outbox id as SQLite stores it (a signed 64-bit integer).
fn outbox_id(id: u64) -> Result<i64, StoreError> {
    i64::try_from(id).map_err(|_| StoreError("notification id overflow".to_owned()))
}

/// A seq as SQLite stores it (a signed 64-bit integer).
fn seq_param(seq: u64) -> Result<i64, StoreError> {
    i64::try_from(seq).map_err(|_| StoreError(format!("message seq {seq} out of range")))
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    #[test]
    fn an_older_version_is_migrated_on_open_once() {
        let dir = v1_dir(
            "v1",
            r#"{"id":"m1","seq":7,"sender":"tel:+2","client_correlator":"c","recipients":[["tel:+1","Sent"]]}"#,
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
            r#"{"id":"m1","seq":7,"sender":"tel:+2","client_correlator":"c","recipients":[{"address":"tel:+1","status":"Sent"}]}"#
        );
        assert_eq!(db.messages_after("s1", Some(6), 5).unwrap()[0].0, 7);
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
        let value =
            r#"{"id":"m1","seq":3,"sender":"tel:+2","client_correlator":null,"recipients":[]}"#;
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
