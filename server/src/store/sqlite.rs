//! The embedded default backend: one SQLite file in WAL mode.
//!
//! Two tables: `records` (kind, key → JSON value) and `outbox` (undelivered notifications). With
//! `synchronous=NORMAL` (the default here) a commit is on disk in the WAL before the client is
//! answered, so it survives a crash of the process (SIGKILL); `FULL` also survives a power cut
//! at the cost of an fsync per group commit (`NETAPI_CHAT_SYNC=full`).

use super::now_ms;
use super::{Backend, Batch, Kind, OutboxEntry, Snapshot, StoreError};
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
        // The write probe: a read-only file, directory or file system, or another process
        // holding the database, stops the start here with a message, not at the first request.
        conn.execute_batch(
            "BEGIN IMMEDIATE;
             CREATE TABLE IF NOT EXISTS records (
                 kind TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
                 PRIMARY KEY (kind, key)) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS outbox (
                 id INTEGER PRIMARY KEY, subscription TEXT NOT NULL,
                 body BLOB NOT NULL, created_ms INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS started (at_ms INTEGER NOT NULL);
             DELETE FROM started;",
        )
        .map_err(|e| first_write_failed(&path, e))?;
        let probe = conn
            .execute("INSERT INTO started (at_ms) VALUES (?1)", params![now_ms()])
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
        Ok(Sqlite { conn, wal, frames })
    }
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
        let mut snapshot = Snapshot::default();
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
            .prepare("SELECT id, subscription, body, created_ms FROM outbox ORDER BY id")
            .map_err(err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(OutboxEntry {
                    id: r.get::<_, i64>(0)?.unsigned_abs(),
                    subscription: r.get(1)?,
                    body: r.get(2)?,
                    created_ms: r.get(3)?,
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
            let mut del_messages = tx
                .prepare_cached(
                    "DELETE FROM records WHERE kind = 'message' AND key >= ?1 AND key < ?2",
                )
                .map_err(err)?;
            let mut add = tx
                .prepare_cached("INSERT OR REPLACE INTO outbox (id, subscription, body, created_ms) VALUES (?1, ?2, ?3, ?4)")
                .map_err(err)?;
            let mut forget = tx
                .prepare_cached("DELETE FROM outbox WHERE id = ?1")
                .map_err(err)?;
            for b in batches {
                for (kind, key, value) in &b.puts {
                    put.execute(params![kind.name(), key, value]).map_err(err)?;
                }
                for (kind, key) in &b.deletes {
                    del.execute(params![kind.name(), key]).map_err(err)?;
                    if *kind == Kind::Session {
                        del_messages
                            .execute(params![format!("{key}/"), format!("{key}0")])
                            .map_err(err)?;
                    }
                }
                for e in &b.outbox {
                    let id = i64::try_from(e.id)
                        .map_err(|_| StoreError("notification id overflow".to_owned()))?;
                    add.execute(params![id, e.subscription, e.body, e.created_ms])
                        .map_err(err)?;
                }
                for id in &b.forget {
                    let id = i64::try_from(*id)
                        .map_err(|_| StoreError("notification id overflow".to_owned()))?;
                    forget.execute(params![id]).map_err(err)?;
                }
            }
        }
        tx.commit().map_err(err)?;
        if self.frames.load(Ordering::Relaxed) >= FORCE_CHECKPOINT_FRAMES {
            self.checkpoint();
        }
        Ok(())
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
                puts: vec![
                    (Kind::Session, "s1".into(), b"{}".to_vec()),
                    (Kind::Message, "s1/m1".into(), b"{\"t\":1}".to_vec()),
                    (Kind::Message, "s2/m1".into(), b"{}".to_vec()),
                ],
                outbox: vec![
                    OutboxEntry {
                        id: 1,
                        subscription: "a".into(),
                        body: b"x".to_vec(),
                        created_ms: 5,
                    },
                    OutboxEntry {
                        id: 2,
                        subscription: "a".into(),
                        body: b"y".to_vec(),
                        created_ms: 6,
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
        assert_eq!(
            snap.records,
            vec![(Kind::Message, "s2/m1".to_owned(), b"{}".to_vec())]
        );
        assert_eq!(
            snap.outbox.iter().map(|e| e.id).collect::<Vec<_>>(),
            vec![2]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
