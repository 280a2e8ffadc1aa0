//! The embedded default backend: one SQLite file in WAL mode.
//!
//! Two tables: `records` (kind, key → JSON value) and `outbox` (undelivered notifications). With
//! `synchronous=NORMAL` (the default here) a commit is on disk in the WAL before the client is
//! answered, so it survives a crash of the process (SIGKILL); `FULL` also survives a power cut
//! at the cost of an fsync per group commit (`NETAPI_CHAT_SYNC=full`).

use super::{Backend, Batch, Kind, OutboxEntry, Snapshot, StoreError};
use rusqlite::{Connection, params};
use std::path::Path;

/// How hard a commit syncs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sync {
    /// WAL written before the answer; survives process crashes.
    Normal,
    /// WAL fsynced before the answer; survives power loss too.
    Full,
}

/// SQLite in WAL mode.
pub struct Sqlite {
    conn: Connection,
    /// The write-ahead log file, watched for size.
    wal: std::path::PathBuf,
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
    /// Opens (creating if needed) `dir/netapi-chat.sqlite3`.
    pub fn open(dir: &Path, sync: Sync) -> Result<Sqlite, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError(format!("creating data directory {}: {e}", dir.display())))?;
        let path = dir.join("netapi-chat.sqlite3");
        let conn = Connection::open(&path)
            .map_err(|e| StoreError(format!("opening {}: {e}", path.display())))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(
            None,
            "synchronous",
            if sync == Sync::Full { "FULL" } else { "NORMAL" },
        )
        .map_err(err)?;
        // Checkpoints (copying the WAL back into the database, with fsyncs) run on a thread of
        // their own, so the committing thread never stalls on one; see `checkpointer`.
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(err)?;
        // While the checkpointer truncates the WAL (rarely, see below) a commit waits instead of
        // failing; the WAL file is cut back to this size whenever it is reset.
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(err)?;
        conn.pragma_update(None, "journal_size_limit", WAL_LIMIT as i64)
            .map_err(err)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS records (
                 kind TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
                 PRIMARY KEY (kind, key)) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS outbox (
                 id INTEGER PRIMARY KEY, subscription TEXT NOT NULL,
                 body BLOB NOT NULL, created_ms INTEGER NOT NULL);",
        )
        .map_err(err)?;
        checkpointer(path.clone())?;
        let mut wal = path.into_os_string();
        wal.push("-wal");
        Ok(Sqlite {
            conn,
            wal: wal.into(),
        })
    }
}

/// Size past which the WAL is truncated at the next idle moment of the store thread. A
/// truncation stalls commits for tens of milliseconds on this class of disk (measured: at
/// 64 MiB it put the message-send p99 at 20-40 ms), so it is kept rare: it bounds disk use and
/// start-up replay, it is not routine.
const WAL_LIMIT: u64 = 512 * 1024 * 1024;

/// Runs passive checkpoints every 200 ms on a connection of its own: they never block the
/// writer. Under a steady stream of commits a passive checkpoint never quite catches up, so the
/// WAL file is not reused and grows; [`Sqlite::idle`] truncates it when the store thread has
/// nothing to commit (then there is little left to copy, the passive rounds did it).
fn checkpointer(path: std::path::PathBuf) -> Result<(), StoreError> {
    let conn = Connection::open(&path)
        .map_err(|e| StoreError(format!("opening {}: {e}", path.display())))?;
    std::thread::Builder::new()
        .name("netapi-chat-checkpoint".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(std::time::Duration::from_millis(200));
                // A failed checkpoint is retried on the next round; the WAL stays valid.
                let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
            }
        })
        .map(|_| ())
        .map_err(|e| StoreError(format!("cannot start the checkpoint thread: {e}")))
}

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
        tx.commit().map_err(err)
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
