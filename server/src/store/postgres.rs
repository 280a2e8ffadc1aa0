//! The PostgreSQL backend, selected by `NETAPI_CHAT_DATABASE_URL=postgres://…`: the same three
//! tables as [`super::sqlite`] (`records`, `messages`, `outbox`), the same stored record JSON
//! (same [`format`] version numbers), on a database server instead of a file.
//!
//! One connection, owned by the store thread, through the blocking `postgres` client (the
//! store thread is synchronous; see "PostgreSQL client: measured" in ARCHITECTURE.md for the
//! comparison with tokio-postgres pipelined). A batch group is one transaction; PostgreSQL's
//! default `synchronous_commit = on` means a 2xx is on the database server's disk (WAL flushed).
//!
//! **One instance per database** until multi-instance support lands (issue 14 items 2, 3, 5):
//! the core still trusts its memory for every decision, so two servers on one database would
//! overwrite each other. The store connection holds a session-level advisory lock
//! ([`INSTANCE_LOCK`]) for as long as it lives; a second server pointed at the same database
//! refuses to start, naming the reason.
//!
//! **Losing the database** (issue 14 item 4): a commit that fails because the connection is
//! gone (or the server is shutting down, out of resources, or cancelled the statement) marks
//! the backend unavailable ([`Backend::unavailable`]) instead of being fatal; the store thread
//! then keeps the batches and retries them through [`Backend::reconnect`] (see
//! `store::Outage`). Any other error (a constraint or data error: a bug) stays fail-stop.
//!
//! Portability (CockroachDB, YugabyteDB): plain tables, B-tree and partial indexes,
//! `INSERT … ON CONFLICT … DO UPDATE`, a window function for trimming dead letters. What
//! differs is listed in ARCHITECTURE.md ("PostgreSQL backend").

use super::{
    Backend, Batch, DeadLetterRow, Kind, Migrated, OutboxEntry, Progress, Purged, Snapshot,
    StoreError, StoredCounts, expired_head, format, now_ms,
};
use postgres::{Client, NoTls, Statement};
use std::str::FromStr as _;
use std::time::Duration;

/// The advisory lock key that marks a database as in use by one netapi-chat server: the bytes
/// `netapich` as a big-endian integer (advisory locks are per database, so a constant names
/// "this database's netapi-chat" on any server).
pub const INSTANCE_LOCK: i64 = i64::from_be_bytes(*b"netapich");

/// How long connecting may take before it counts as a failure (when the URL sets no
/// `connect_timeout` of its own).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest time one statement of the store may run on the database server
/// (`statement_timeout`) once started: a statement stuck behind someone else's lock fails
/// (and is retried like a lost connection) instead of holding every request.
const STATEMENT_TIMEOUT_MS: u32 = 10_000;

/// TCP keepalive idle time and `tcp_user_timeout`: an unreachable database server (cable cut,
/// no RST) is noticed within about this long, instead of a read that never returns.
const TCP_DEAD_AFTER: Duration = Duration::from_secs(10);

/// The schema of each stored format version, in order: a new format version adds an entry
/// (its DDL; value rewrites go through [`format::steps`] like SQLite's). Version 5 is the
/// first PostgreSQL knew, so it is the baseline an empty database is created at. Text columns
/// compare bytewise (`COLLATE "C"`, as SQLite does): retention's walk goes by session order.
const SCHEMA: &[(u32, &str)] = &[(
    5,
    r#"CREATE TABLE records (
         kind TEXT COLLATE "C" NOT NULL, key TEXT COLLATE "C" NOT NULL, value BYTEA NOT NULL,
         PRIMARY KEY (kind, key));
       CREATE TABLE outbox (
         id BIGINT PRIMARY KEY, subscription TEXT COLLATE "C" NOT NULL,
         body BYTEA NOT NULL, created_ms BIGINT NOT NULL,
         attempts BIGINT NOT NULL DEFAULT 0, next_attempt_ms BIGINT NOT NULL DEFAULT 0,
         failing_since_ms BIGINT, dead_ms BIGINT);
       CREATE INDEX outbox_by_subscription ON outbox (subscription, id);
       CREATE TABLE messages (
         session TEXT COLLATE "C" NOT NULL, seq BIGINT NOT NULL, id TEXT COLLATE "C" NOT NULL,
         sender TEXT COLLATE "C" NOT NULL, correlator BYTEA, value BYTEA NOT NULL,
         sent_ms BIGINT NOT NULL,
         PRIMARY KEY (session, seq));
       CREATE UNIQUE INDEX messages_by_id ON messages (session, id);
       CREATE INDEX messages_by_correlator ON messages (session, sender, correlator)
         WHERE correlator IS NOT NULL;"#,
)];

/// The store's statements, prepared once per connection.
struct Statements {
    put: Statement,
    del: Statement,
    put_message: Statement,
    update_message: Statement,
    del_messages: Statement,
    add: Statement,
    del_outbox: Statement,
    progress: Statement,
    bury: Statement,
    trim: Statement,
    revive: Statement,
    forget: Statement,
    page: Statement,
    by_id: Statement,
    by_correlator: Statement,
    next_session_from: Statement,
    next_session_after: Statement,
    head: Statement,
    delete_head: Statement,
    dead_letters: Statement,
}

impl Statements {
    fn prepare(c: &mut Client) -> Result<Statements, postgres::Error> {
        Ok(Statements {
            put: c.prepare(
                "INSERT INTO records (kind, key, value) VALUES ($1, $2, $3)
                 ON CONFLICT (kind, key) DO UPDATE SET value = EXCLUDED.value",
            )?,
            del: c.prepare("DELETE FROM records WHERE kind = $1 AND key = $2")?,
            put_message: c.prepare(
                "INSERT INTO messages (session, seq, id, sender, correlator, value, sent_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (session, seq) DO UPDATE SET id = EXCLUDED.id,
                     sender = EXCLUDED.sender, correlator = EXCLUDED.correlator,
                     value = EXCLUDED.value, sent_ms = EXCLUDED.sent_ms",
            )?,
            // A new state of a stored message: its time stays; a purged one stays purged.
            update_message: c
                .prepare("UPDATE messages SET value = $3 WHERE session = $1 AND seq = $2")?,
            del_messages: c.prepare("DELETE FROM messages WHERE session = $1")?,
            add: c.prepare(
                "INSERT INTO outbox (id, subscription, body, created_ms, attempts,
                     next_attempt_ms, failing_since_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (id) DO UPDATE SET subscription = EXCLUDED.subscription,
                     body = EXCLUDED.body, created_ms = EXCLUDED.created_ms,
                     attempts = EXCLUDED.attempts, next_attempt_ms = EXCLUDED.next_attempt_ms,
                     failing_since_ms = EXCLUDED.failing_since_ms, dead_ms = NULL",
            )?,
            del_outbox: c.prepare("DELETE FROM outbox WHERE subscription = $1")?,
            progress: c.prepare(
                "UPDATE outbox SET attempts = $2, next_attempt_ms = $3, failing_since_ms = $4
                 WHERE id = $1 AND dead_ms IS NULL",
            )?,
            bury: c.prepare("UPDATE outbox SET dead_ms = $2 WHERE id = $1")?,
            trim: c.prepare(
                "DELETE FROM outbox WHERE id IN (
                     SELECT id FROM (
                         SELECT id, ROW_NUMBER() OVER w AS n,
                             SUM(octet_length(body)) OVER w AS bytes
                         FROM outbox WHERE subscription = $1 AND dead_ms IS NOT NULL
                         WINDOW w AS (ORDER BY id DESC)) AS kept
                     WHERE n > $2 OR bytes > $3)",
            )?,
            revive: c.prepare(
                "UPDATE outbox SET dead_ms = NULL, attempts = 0, next_attempt_ms = 0,
                     failing_since_ms = NULL, created_ms = $3
                 WHERE id = $1 AND subscription = $2 AND dead_ms IS NOT NULL",
            )?,
            forget: c.prepare("DELETE FROM outbox WHERE id = $1")?,
            page: c.prepare(
                "SELECT seq, value FROM messages WHERE session = $1 AND seq > $2
                 ORDER BY seq LIMIT $3",
            )?,
            by_id: c.prepare("SELECT value FROM messages WHERE session = $1 AND id = $2")?,
            by_correlator: c.prepare(
                "SELECT id FROM messages WHERE session = $1 AND sender = $2 AND correlator = $3
                 ORDER BY seq LIMIT 1",
            )?,
            next_session_from: c.prepare(
                "SELECT session FROM messages WHERE session >= $1 ORDER BY session LIMIT 1",
            )?,
            next_session_after: c.prepare(
                "SELECT session FROM messages WHERE session > $1 ORDER BY session LIMIT 1",
            )?,
            head: c.prepare(
                "SELECT seq, sent_ms FROM messages WHERE session = $1 ORDER BY seq LIMIT $2",
            )?,
            delete_head: c.prepare("DELETE FROM messages WHERE session = $1 AND seq <= $2")?,
            dead_letters: c.prepare(
                "SELECT id, body, created_ms, dead_ms, attempts FROM outbox
                 WHERE subscription = $1 AND id > $2 AND dead_ms IS NOT NULL
                     AND created_ms >= $3
                 ORDER BY id LIMIT $4",
            )?,
        })
    }
}

/// A live connection and its prepared statements.
struct Conn {
    client: Client,
    st: Statements,
}

/// The PostgreSQL backend (see the module documentation).
pub struct Postgres {
    config: postgres::Config,
    /// Where it is, for messages (the URL without its password).
    place: String,
    /// `None` while the database is unreachable (after a lost connection, until
    /// [`Backend::reconnect`] succeeds).
    conn: Option<Conn>,
    /// Set when the last failure was the database being unreachable (retry later), not a
    /// fault of the data or of this program (stop).
    lost: bool,
    migrated: Option<Migrated>,
}

/// A failure inside the backend: PostgreSQL's (classified by [`transient`]) or ours.
enum Fail {
    Pg(postgres::Error),
    Ours(StoreError),
}

impl From<postgres::Error> for Fail {
    fn from(e: postgres::Error) -> Fail {
        Fail::Pg(e)
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Fail {
        Fail::Ours(e)
    }
}

/// Whether an error means "the database cannot be reached or cannot serve right now" (the
/// connection is gone, SQLSTATE class 08 connection exception, 53 insufficient resources, 57
/// operator intervention: shutdown, restart, a cancelled statement; 58 system error; 40001 and
/// 40P01, a serialization failure or deadlock): the batch is kept and retried once the
/// database is back. Anything else is a fault of the data or of this program.
pub fn transient(closed: bool, sqlstate: Option<&str>, database_error: bool) -> bool {
    if closed {
        return true;
    }
    match sqlstate {
        Some(c) => {
            ["08", "53", "57", "58"].iter().any(|p| c.starts_with(p))
                || c == "40001"
                || c == "40P01"
        }
        // No SQLSTATE and not a database's answer: an I/O error or a timeout on the socket.
        None => !database_error,
    }
}

/// The URL without its password, for messages and logs.
fn place_of(config: &postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            postgres::config::Host::Tcp(name) => name.clone(),
            postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "PostgreSQL database `{}` at {}:{port}",
        config.get_dbname().unwrap_or("(default)"),
        hosts.join(",")
    )
}

impl Postgres {
    /// Connects to the database at `url`, takes the instance lock (a second server on the same
    /// database refuses to start here) and brings the schema to [`format::CURRENT`]: an empty
    /// database is created at it, an older one migrated (in one transaction), a newer one
    /// refused before anything is written.
    pub fn open(url: &str) -> Result<Postgres, StoreError> {
        let mut config = postgres::Config::from_str(url)
            .map_err(|e| StoreError(format!("NETAPI_CHAT_DATABASE_URL does not read: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("netapi-chat");
        }
        config
            .keepalives(true)
            .keepalives_idle(TCP_DEAD_AFTER)
            .tcp_user_timeout(TCP_DEAD_AFTER);
        let place = place_of(&config);
        let mut pg = Postgres {
            config,
            place,
            conn: None,
            lost: false,
            migrated: None,
        };
        let mut client = pg.connect()?;
        pg.migrated = migrate(&mut client, &pg.place)?;
        pg.ready(client)?;
        Ok(pg)
    }

    /// A new connection holding the instance lock (not yet with its statements).
    fn connect(&mut self) -> Result<Client, StoreError> {
        let mut client = self.config.connect(NoTls).map_err(|e| {
            self.lost = true;
            StoreError(format!("connecting to the {}: {e}", self.place))
        })?;
        let locked: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&INSTANCE_LOCK])
            .and_then(|r| r.try_get(0))
            .map_err(|e| self.fail(Fail::Pg(e)))?;
        if !locked {
            self.lost = false;
            return Err(StoreError(format!(
                "the {} is in use by another netapi-chat server (it holds advisory lock {INSTANCE_LOCK}): \
                 one instance per database until multi-instance support lands",
                self.place
            )));
        }
        Ok(client)
    }

    /// Sets the session up for the store's work and prepares its statements.
    fn ready(&mut self, mut client: Client) -> Result<(), StoreError> {
        let prepared = client
            .batch_execute(&format!("SET statement_timeout = {STATEMENT_TIMEOUT_MS}"))
            .and_then(|()| Statements::prepare(&mut client));
        match prepared {
            Ok(st) => {
                self.conn = Some(Conn { client, st });
                self.lost = false;
                Ok(())
            }
            Err(e) => Err(self.fail(Fail::Pg(e))),
        }
    }

    /// Turns a failure into the store's error, noting whether it was the database being
    /// unreachable (then the connection is dropped: the next use reconnects).
    fn fail(&mut self, f: Fail) -> StoreError {
        match f {
            Fail::Ours(e) => {
                self.lost = false;
                e
            }
            Fail::Pg(e) => {
                self.lost = transient(
                    e.is_closed(),
                    e.code().map(|c| c.code()),
                    e.as_db_error().is_some(),
                );
                if self.lost {
                    self.conn = None;
                }
                StoreError(format!("{}: {e}", self.place))
            }
        }
    }

    /// The live connection, or the error of an unreachable database.
    fn conn(&mut self) -> Result<&mut Conn, Fail> {
        match self.conn.as_mut() {
            Some(c) => Ok(c),
            None => {
                self.lost = true;
                Err(Fail::Ours(StoreError(format!(
                    "the {} is unreachable",
                    self.place
                ))))
            }
        }
    }

    /// Runs `f` on the live connection; a failure is classified ([`Postgres::fail`]).
    fn with<T>(&mut self, f: impl FnOnce(&mut Conn) -> Result<T, Fail>) -> Result<T, StoreError> {
        let result = match self.conn() {
            Ok(c) => f(c),
            Err(e) => {
                return Err(match e {
                    Fail::Ours(e) => e,
                    Fail::Pg(e) => self.fail(Fail::Pg(e)),
                });
            }
        };
        result.map_err(|e| self.fail(e))
    }
}

/// The stored format version of the database (`None`: a new one), refusing a newer one.
fn stored_version(tx: &mut postgres::Transaction<'_>) -> Result<Option<u32>, postgres::Error> {
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version INTEGER NOT NULL, migrated_ms BIGINT NOT NULL)",
    )?;
    let v: Option<i32> = tx
        .query_one("SELECT MAX(version) FROM schema_version", &[])?
        .try_get(0)?;
    Ok(v.map(i32::unsigned_abs))
}

/// Brings the schema to [`format::CURRENT`] in one transaction (run under the instance lock,
/// so two servers starting at once cannot both migrate): each [`SCHEMA`] entry past the stored
/// version, recorded in `schema_version`. `None` for a database already current or new.
fn migrate(client: &mut Client, place: &str) -> Result<Option<Migrated>, StoreError> {
    let failed = |e: postgres::Error| StoreError(format!("preparing the {place}: {e}"));
    let mut tx = client.transaction().map_err(failed)?;
    let stored = stored_version(&mut tx).map_err(failed)?;
    if let Some(v) = stored {
        format::check(v, place).map_err(StoreError)?;
    }
    let from = stored.unwrap_or(0);
    for (version, ddl) in SCHEMA.iter().filter(|(v, _)| *v > from) {
        tx.batch_execute(ddl).map_err(|e| {
            StoreError(format!(
                "{place}: creating the schema of stored format version {version}: {e}"
            ))
        })?;
        let v = i32::try_from(*version).unwrap_or(i32::MAX);
        tx.execute(
            "INSERT INTO schema_version (version, migrated_ms) VALUES ($1, $2)",
            &[&v, &now_ms()],
        )
        .map_err(failed)?;
    }
    tx.commit().map_err(failed)?;
    // A stored version older than the first one PostgreSQL knew cannot exist; a new database is
    // created at the current version: neither is a migration to report.
    Ok(match stored {
        Some(v) if v < format::CURRENT => Some(Migrated {
            from: v,
            to: format::CURRENT,
            records: 0,
            outbox: 0,
        }),
        _ => None,
    })
}

/// An outbox id or seq as PostgreSQL stores it (`BIGINT`).
fn big(n: u64, what: &str) -> Result<i64, Fail> {
    i64::try_from(n).map_err(|_| Fail::Ours(StoreError(format!("{what} {n} out of range"))))
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Backend for Postgres {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        let migrated = self.migrated.take();
        self.with(|c| {
            let mut snapshot = Snapshot {
                migrated,
                ..Snapshot::default()
            };
            for r in c.client.query(
                "SELECT kind, key, value FROM records ORDER BY kind, key",
                &[],
            )? {
                let name: String = r.try_get(0)?;
                let kind = super::sqlite::kind_of(&name).ok_or_else(|| {
                    StoreError(format!("unknown record kind `{name}` in the store"))
                })?;
                snapshot.records.push((kind, r.try_get(1)?, r.try_get(2)?));
            }
            for r in c.client.query(
                "SELECT id, subscription, body, created_ms, attempts, next_attempt_ms,
                     failing_since_ms
                 FROM outbox WHERE dead_ms IS NULL ORDER BY id",
                &[],
            )? {
                snapshot.outbox.push(OutboxEntry {
                    id: r.try_get::<_, i64>(0)?.unsigned_abs(),
                    subscription: r.try_get(1)?,
                    body: r.try_get(2)?,
                    created_ms: r.try_get(3)?,
                    progress: Progress {
                        attempts: u32::try_from(r.try_get::<_, i64>(4)?).unwrap_or(u32::MAX),
                        next_attempt_ms: r.try_get(5)?,
                        failing_since_ms: r.try_get(6)?,
                    },
                });
            }
            Ok(snapshot)
        })
    }

    fn commit(&mut self, batches: &[&Batch]) -> Result<(), StoreError> {
        self.with(|c| {
            let st = &c.st;
            let mut tx = c.client.transaction()?;
            for b in batches {
                for (kind, key, value) in &b.puts {
                    if *kind == Kind::Message {
                        return Err(Fail::Ours(StoreError(format!(
                            "message `{key}` written as a record; messages go in Batch::messages"
                        ))));
                    }
                    tx.execute(&st.put, &[&kind.name(), key, value])?;
                }
                for m in &b.messages {
                    let seq = big(m.seq, "message seq")?;
                    match m.sent_ms {
                        Some(at) => tx.execute(
                            &st.put_message,
                            &[
                                &m.session,
                                &seq,
                                &m.id,
                                &m.sender,
                                &m.correlator.as_deref().map(str::as_bytes),
                                &m.value,
                                &at,
                            ],
                        )?,
                        None => tx.execute(&st.update_message, &[&m.session, &seq, &m.value])?,
                    };
                }
                for (kind, key) in &b.deletes {
                    tx.execute(&st.del, &[&kind.name(), key])?;
                    if *kind == Kind::Session {
                        tx.execute(&st.del_messages, &[key])?;
                    }
                    if *kind == Kind::Subscription {
                        tx.execute(&st.del_outbox, &[key])?;
                    }
                }
                for e in &b.outbox {
                    let p = &e.progress;
                    tx.execute(
                        &st.add,
                        &[
                            &big(e.id, "notification id")?,
                            &e.subscription,
                            &e.body,
                            &e.created_ms,
                            &i64::from(p.attempts),
                            &p.next_attempt_ms,
                            &p.failing_since_ms,
                        ],
                    )?;
                }
                for id in &b.forget {
                    tx.execute(&st.forget, &[&big(*id, "notification id")?])?;
                }
                for (id, p) in &b.progress {
                    tx.execute(
                        &st.progress,
                        &[
                            &big(*id, "notification id")?,
                            &i64::from(p.attempts),
                            &p.next_attempt_ms,
                            &p.failing_since_ms,
                        ],
                    )?;
                }
                for d in &b.bury {
                    let now = now_ms();
                    for id in &d.ids {
                        tx.execute(&st.bury, &[&big(*id, "notification id")?, &now])?;
                    }
                    tx.execute(
                        &st.trim,
                        &[&d.subscription, &count(d.keep_count), &count(d.keep_bytes)],
                    )?;
                }
                for r in &b.revive {
                    for id in &r.ids {
                        tx.execute(
                            &st.revive,
                            &[
                                &big(*id, "notification id")?,
                                &r.subscription,
                                &r.created_ms,
                            ],
                        )?;
                    }
                }
            }
            tx.commit()?;
            Ok(())
        })
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
        self.with(|c| {
            c.client
                .query(&c.st.page, &[&session, &after, &count(limit)])?
                .into_iter()
                .map(|r| Ok((r.try_get::<_, i64>(0)?.unsigned_abs(), r.try_get(1)?)))
                .collect()
        })
    }

    fn message(&mut self, session: &str, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.with(
            |c| match c.client.query_opt(&c.st.by_id, &[&session, &id])? {
                Some(r) => Ok(Some(r.try_get(0)?)),
                None => Ok(None),
            },
        )
    }

    fn message_by_correlator(
        &mut self,
        session: &str,
        sender: &str,
        correlator: &str,
    ) -> Result<Option<String>, StoreError> {
        self.with(|c| {
            let row = c.client.query_opt(
                &c.st.by_correlator,
                &[&session, &sender, &correlator.as_bytes()],
            )?;
            match row {
                Some(r) => Ok(Some(r.try_get(0)?)),
                None => Ok(None),
            }
        })
    }

    fn dead_letters(
        &mut self,
        subscription: &str,
        after: Option<u64>,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<DeadLetterRow>, StoreError> {
        // A cursor past what an id can be (client input) is past every dead letter.
        let after = match after.map(i64::try_from) {
            None => -1,
            Some(Ok(a)) => a,
            Some(Err(_)) => return Ok(Vec::new()),
        };
        self.with(|c| {
            c.client
                .query(
                    &c.st.dead_letters,
                    &[&subscription, &after, &since_ms, &count(limit)],
                )?
                .into_iter()
                .map(|r| {
                    Ok(DeadLetterRow {
                        id: r.try_get::<_, i64>(0)?.unsigned_abs(),
                        body: r.try_get(1)?,
                        created_ms: r.try_get(2)?,
                        dead_ms: r.try_get(3)?,
                        attempts: u32::try_from(r.try_get::<_, i64>(4)?).unwrap_or(u32::MAX),
                    })
                })
                .collect()
        })
    }

    /// The connection answers, and the database takes writes (not a standby in recovery).
    fn probe(&mut self) -> Result<(), StoreError> {
        let place = self.place.clone();
        self.with(|c| {
            let standby: bool = c
                .client
                .query_one("SELECT pg_is_in_recovery()", &[])?
                .try_get(0)?;
            if standby {
                return Err(Fail::Ours(StoreError(format!(
                    "the {place} is a standby in recovery: it takes no writes"
                ))));
            }
            Ok(())
        })
    }

    fn outbox_len(&mut self) -> Result<Option<u64>, StoreError> {
        self.with(|c| {
            let n: i64 = c
                .client
                .query_one("SELECT COUNT(*) FROM outbox WHERE dead_ms IS NULL", &[])?
                .try_get(0)?;
            Ok(Some(n.unsigned_abs()))
        })
    }

    fn backup_unsupported(&self) -> Option<&'static str> {
        Some(
            "the server stores its data in PostgreSQL (NETAPI_CHAT_DATABASE_URL): back it up with \
             pg_dump (or the database's own backups); `netapi-chat backup` copies SQLite data \
             directories only",
        )
    }

    fn counts(&mut self, most: usize) -> Result<StoredCounts, StoreError> {
        self.with(|c| {
            let one = |c: &mut Conn, sql: &str| -> Result<u64, Fail> {
                let n: i64 = c.client.query_one(sql, &[])?.try_get(0)?;
                Ok(n.unsigned_abs())
            };
            let messages = one(c, "SELECT COUNT(*) FROM messages")?;
            let undelivered = one(c, "SELECT COUNT(*) FROM outbox WHERE dead_ms IS NULL")?;
            let undelivered_by_subscription = c
                .client
                .query(
                    "SELECT subscription, COUNT(*) AS n FROM outbox WHERE dead_ms IS NULL
                     GROUP BY subscription ORDER BY n DESC, subscription LIMIT $1",
                    &[&count(most)],
                )?
                .into_iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get::<_, i64>(1)?.unsigned_abs())))
                .collect::<Result<Vec<_>, Fail>>()?;
            Ok(StoredCounts {
                messages,
                undelivered,
                undelivered_by_subscription,
            })
        })
    }

    fn purge_messages(
        &mut self,
        before_ms: i64,
        from: &str,
        budget: usize,
    ) -> Result<Purged, StoreError> {
        // A visit takes one unit: two leave room to delete, so every job makes progress.
        let budget = budget.max(2);
        self.with(|c| {
            let st = &c.st;
            let mut tx = c.client.transaction()?;
            let mut done = Purged {
                deleted: 0,
                next: Some(from.to_owned()),
            };
            let mut work = 0usize;
            while let Some(from) = done.next.take() {
                if work >= budget {
                    done.next = Some(from);
                    break;
                }
                // `after_session` marks "just after" with a NUL, which PostgreSQL text cannot
                // hold (and no session id contains): it becomes a strict comparison.
                let row = match from.strip_suffix('\u{0}') {
                    Some(s) => tx.query_opt(&st.next_session_after, &[&s])?,
                    None => tx.query_opt(&st.next_session_from, &[&from])?,
                };
                // The walk is past the last session: the round is over.
                let Some(row) = row else { break };
                let session: String = row.try_get(0)?;
                work += 1;
                // One more row than may be deleted: tells whether the head goes on.
                let room = budget.saturating_sub(work);
                let rows = tx
                    .query(&st.head, &[&session, &count(room + 1)])?
                    .into_iter()
                    .map(|r| Ok((r.try_get::<_, i64>(0)?, r.try_get::<_, i64>(1)?)))
                    .collect::<Result<Vec<_>, Fail>>()?;
                let times: Vec<i64> = rows.iter().map(|(_, t)| *t).collect();
                let whole = expired_head(&times, before_ms);
                let expired = whole.min(room);
                if let Some((last, _)) = expired.checked_sub(1).and_then(|i| rows.get(i)) {
                    tx.execute(&st.delete_head, &[&session, last])?;
                }
                work += expired;
                done.deleted += expired;
                // A head cut short by the budget: the next job starts on this session again.
                done.next = Some(if whole > room {
                    session
                } else {
                    super::after_session(&session)
                });
            }
            tx.commit()?;
            Ok(done)
        })
    }

    fn unavailable(&self) -> bool {
        self.lost
    }

    /// A new connection, the instance lock taken again (refused, and then fatal, if another
    /// server took the database meanwhile: this one's memory no longer describes it), the
    /// statements prepared again.
    fn reconnect(&mut self) -> Result<(), StoreError> {
        self.conn = None;
        let client = self.connect()?;
        self.ready(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MessageRow, after_session};

    #[test]
    fn lost_connections_and_server_shutdowns_are_transient_data_errors_are_not() {
        let cases = [
            (true, None, false, true, "the connection is closed"),
            (false, None, false, true, "an I/O error or timeout"),
            (false, Some("08006"), true, true, "connection failure"),
            (
                false,
                Some("57P01"),
                true,
                true,
                "admin shutdown (pg_ctl stop -m fast)",
            ),
            (
                false,
                Some("57P03"),
                true,
                true,
                "the database is starting up",
            ),
            (false, Some("57014"), true, true, "statement timeout"),
            (false, Some("53100"), true, true, "disk full"),
            (false, Some("40001"), true, true, "serialization failure"),
            (false, Some("23505"), true, false, "unique violation: a bug"),
            (false, Some("22021"), true, false, "bad bytes: a bug"),
            (false, Some("42P01"), true, false, "missing table"),
        ];
        for (closed, code, db, expected, case) in cases {
            assert_eq!(transient(closed, code, db), expected, "{case}");
        }
    }

    /// The PostgreSQL the tests run against: `cargo xtask test` starts a throwaway cluster,
    /// sets it and runs the tests named `pg_…` (ignored otherwise, since they need it).
    fn admin_url() -> String {
        std::env::var("NETAPI_CHAT_TEST_DATABASE_URL")
            .expect("NETAPI_CHAT_TEST_DATABASE_URL: run through `cargo xtask test`")
    }

    /// A fresh database on the test cluster; its URL (same server and user).
    fn fresh_database(admin: &str, name: &str) -> String {
        let db = format!("unit_{name}_{}", uuid::Uuid::new_v4().simple());
        let mut c = postgres::Client::connect(admin, NoTls).unwrap();
        c.batch_execute(&format!("CREATE DATABASE {db}")).unwrap();
        let (base, query) = admin.split_once('?').unwrap_or((admin, ""));
        let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
        if query.is_empty() {
            format!("{base}/{db}")
        } else {
            format!("{base}/{db}?{query}")
        }
    }

    fn row(session: &str, seq: u64, correlator: Option<&str>) -> MessageRow {
        MessageRow {
            session: session.into(),
            seq,
            id: format!("msg-{seq}"),
            sender: "a".into(),
            correlator: correlator.map(Into::into),
            value: format!("{{\"seq\":{seq}}}").into_bytes(),
            sent_ms: Some(i64::try_from(seq).unwrap()),
        }
    }

    /// From an empty database: the schema is created at the current format version, recorded
    /// in `schema_version`; what is committed reads back after reopening, through every lookup
    /// the core uses; a second server on the same database is refused while the first holds
    /// it, and admitted once it is gone; a database of a newer version is refused.
    #[test]
    #[ignore = "needs PostgreSQL: `cargo xtask test` runs it"]
    fn pg_an_empty_database_gets_the_schema_and_keeps_what_is_committed() {
        let admin = admin_url();
        let url = fresh_database(&admin, "schema");
        let mut db = Postgres::open(&url).unwrap();
        assert_eq!(db.load().unwrap().migrated, None);
        let second = Postgres::open(&url).err().unwrap().to_string();
        assert!(
            second.contains("in use by another netapi-chat server")
                && second.contains("one instance per database"),
            "{second}"
        );
        let outbox = |id: u64| OutboxEntry {
            id,
            subscription: "sub-1".into(),
            body: vec![b'n'; 10],
            created_ms: 5,
            progress: Progress::default(),
        };
        db.commit(&[
            &Batch {
                puts: vec![
                    (Kind::Session, "s1".into(), b"{\"s\":1}".to_vec()),
                    (Kind::Meta, "counters".into(), b"{}".to_vec()),
                ],
                messages: vec![row("s1", 1, Some("c\u{0}1")), row("s1", 2, None)],
                outbox: (1..=4).map(outbox).collect(),
                ..Batch::default()
            },
            &Batch {
                forget: vec![1],
                progress: vec![(
                    2,
                    Progress {
                        attempts: 3,
                        next_attempt_ms: 9,
                        failing_since_ms: Some(7),
                    },
                )],
                bury: vec![super::super::Bury {
                    subscription: "sub-1".into(),
                    ids: vec![3, 4],
                    keep_count: 1,
                    keep_bytes: 1000,
                }],
                ..Batch::default()
            },
        ])
        .unwrap();
        drop(db);
        let mut db = Postgres::open(&url).unwrap();
        let snap = db.load().unwrap();
        assert_eq!(
            snap.records
                .iter()
                .map(|r| (r.0, r.1.as_str()))
                .collect::<Vec<_>>(),
            [(Kind::Meta, "counters"), (Kind::Session, "s1")]
        );
        assert_eq!(snap.outbox.len(), 1);
        assert_eq!(snap.outbox[0].id, 2);
        assert_eq!(snap.outbox[0].progress.attempts, 3);
        assert_eq!(snap.outbox[0].progress.failing_since_ms, Some(7));
        // The newer dead letter is kept (the cap is one).
        let dead = db.dead_letters("sub-1", None, 0, 10).unwrap();
        assert_eq!(dead.iter().map(|d| d.id).collect::<Vec<_>>(), [4]);
        assert_eq!(db.outbox_len().unwrap(), Some(1));
        assert_eq!(
            db.messages_after("s1", Some(1), 10).unwrap(),
            [(2, b"{\"seq\":2}".to_vec())]
        );
        assert_eq!(
            db.message("s1", "msg-1").unwrap(),
            Some(b"{\"seq\":1}".to_vec())
        );
        assert_eq!(
            db.message_by_correlator("s1", "a", "c\u{0}1").unwrap(),
            Some("msg-1".to_owned())
        );
        // Revived: undelivered again with its id.
        db.commit(&[&Batch {
            revive: vec![super::super::Revive {
                subscription: "sub-1".into(),
                ids: vec![4],
                created_ms: 50,
            }],
            ..Batch::default()
        }])
        .unwrap();
        assert_eq!(db.outbox_len().unwrap(), Some(2));
        let c = db.counts(5).unwrap();
        assert_eq!((c.messages, c.undelivered), (2, 2));
        // Purge: the walk across sessions with the "just after" marker.
        db.commit(&[&Batch {
            messages: vec![row("s2", 3, None), row("s3", 30, None)],
            ..Batch::default()
        }])
        .unwrap();
        let p = db.purge_messages(4, "", 100).unwrap();
        assert_eq!(
            p,
            Purged {
                deleted: 3,
                next: None
            }
        );
        assert_eq!(db.messages_after("s3", None, 10).unwrap().len(), 1);
        // From just after s1 (s1 and s2 are empty now): s3's message goes, the round ends;
        // with a budget of two, the round stops after the visit and deletion.
        db.commit(&[&Batch {
            messages: vec![row("s1", 40, None)],
            ..Batch::default()
        }])
        .unwrap();
        let p = db.purge_messages(100, &after_session("s1"), 2).unwrap();
        assert_eq!(
            p,
            Purged {
                deleted: 1,
                next: Some(after_session("s3"))
            }
        );
        assert_eq!(
            db.purge_messages(100, &after_session("s3"), 2)
                .unwrap()
                .next,
            None
        );
        assert_eq!(db.messages_after("s1", None, 10).unwrap().len(), 1);
        drop(db);
        // A newer version is refused before anything is written.
        let mut c = postgres::Client::connect(&url, NoTls).unwrap();
        c.execute(
            "INSERT INTO schema_version (version, migrated_ms) VALUES (99, 0)",
            &[],
        )
        .unwrap();
        let e = Postgres::open(&url).err().unwrap().to_string();
        assert!(e.contains("version 99") && e.contains("newer"), "{e}");
    }

    /// A message-send batch as the core builds it (the shape `store_throughput` and the
    /// engines bench use): the counters record, a ~400-byte message, two ~1 KiB outbox entries.
    fn send_batch(i: u64) -> Batch {
        Batch {
            puts: vec![(Kind::Meta, "counters".into(), vec![b'c'; 60])],
            messages: vec![MessageRow {
                session: "ses-bench".into(),
                seq: i,
                id: format!("msg-{i}"),
                sender: "tel:+15551230001".into(),
                correlator: None,
                value: vec![b'm'; 400],
                sent_ms: Some(1),
            }],
            outbox: (0..2)
                .map(|k| OutboxEntry {
                    id: 2 * i + k,
                    subscription: format!("sub-{k}"),
                    body: vec![b'n'; 1024],
                    created_ms: 1,
                    progress: Progress::default(),
                })
                .collect(),
            ..Batch::default()
        }
    }

    /// Runs `f` `n` times; (per second, p50, p99) of its durations.
    fn timed(n: u64, mut f: impl FnMut(u64)) -> (f64, Duration, Duration) {
        let mut lat = Vec::new();
        let all = std::time::Instant::now();
        for i in 0..n {
            let t = std::time::Instant::now();
            f(i);
            lat.push(t.elapsed());
        }
        let per_s = n as f64 / all.elapsed().as_secs_f64();
        lat.sort();
        let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
        (per_s, pct(0.5), pct(0.99))
    }

    fn show(what: &str, unit: &str, (per_s, p50, p99): (f64, Duration, Duration)) {
        println!(
            "| {what} | {per_s:.0} {unit}/s | {:.3} | {:.3} |",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        );
    }

    /// `clients` threads × 1000 (1 client: 2000) send batches through a store thread over
    /// `backend`; (batches/s, p50, p99 of one submit-and-wait).
    fn through_store(backend: Box<dyn Backend>, clients: u64) -> (f64, Duration, Duration) {
        let rounds = if clients == 1 { 2000 } else { 1000 };
        let (store, _) = crate::store::Store::start(backend).unwrap();
        let all = std::time::Instant::now();
        let workers: Vec<_> = (0..clients)
            .map(|c| {
                let store = store.clone();
                std::thread::spawn(move || {
                    (0..rounds)
                        .map(|r| {
                            let t = std::time::Instant::now();
                            let rx = store.submit(send_batch(c * 1_000_000 + r), None);
                            rx.blocking_recv().unwrap().unwrap();
                            t.elapsed()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut lat: Vec<Duration> = workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        let per_s = lat.len() as f64 / all.elapsed().as_secs_f64();
        store.close();
        lat.sort();
        let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
        (per_s, pct(0.5), pct(0.99))
    }

    /// The client comparison of ARCHITECTURE.md ("PostgreSQL client: measured"): the shipped
    /// backend (blocking `postgres`, one round trip per statement) against tokio-postgres
    /// driven by a current-thread runtime on the same thread with every statement of a commit
    /// pipelined (sent before the first answer is read), on the same database server, same
    /// workload: single send batches, groups of 64, one message by id, a page of 50.
    /// `NETAPI_CHAT_TEST_DATABASE_URL=postgres://… cargo test --release --lib -- --ignored
    /// --nocapture pg_client_bench`.
    #[test]
    #[ignore = "a measurement; needs PostgreSQL"]
    fn pg_client_bench() {
        use futures_util::future::try_join_all;
        use tokio_postgres::types::ToSql;
        let admin = admin_url();
        let (singles, groups) = (2000u64, 100u64);
        println!("| client, operation | rate | p50 ms | p99 ms |\n|---|--:|--:|--:|");
        // The shipped backend.
        let url = fresh_database(&admin, "bench_blocking");
        let mut db = Postgres::open(&url).unwrap();
        show(
            "blocking, 1-batch commit",
            "commits",
            timed(singles, |i| db.commit(&[&send_batch(i)]).unwrap()),
        );
        show("blocking, 64-batch group commit", "batches", {
            let (r, p50, p99) = timed(groups, |g| {
                let bs: Vec<Batch> = (0..64).map(|k| send_batch(10_000 + g * 64 + k)).collect();
                db.commit(&bs.iter().collect::<Vec<_>>()).unwrap();
            });
            (r * 64.0, p50, p99)
        });
        show(
            "blocking, message by id",
            "reads",
            timed(singles, |i| {
                assert!(
                    db.message("ses-bench", &format!("msg-{i}"))
                        .unwrap()
                        .is_some()
                );
            }),
        );
        show(
            "blocking, page of 50",
            "pages",
            timed(singles / 4, |i| {
                assert_eq!(
                    db.messages_after("ses-bench", Some(i), 50).unwrap().len(),
                    50
                );
            }),
        );
        drop(db);
        // The server's path: the store thread with group commit, `clients` threads each
        // submitting a send batch and waiting for it; SQLite (default settings) for reference.
        for clients in [1u64, 16] {
            let url = fresh_database(&admin, "bench_store");
            let pg = Postgres::open(&url).unwrap();
            show(
                &format!("store thread, PostgreSQL, {clients} clients"),
                "batches",
                through_store(Box::new(pg), clients),
            );
            let dir = std::env::temp_dir().join(format!(
                "netapi-chat-pgbench-{}",
                uuid::Uuid::new_v4().simple()
            ));
            let lite = crate::store::sqlite::Sqlite::open(&dir, crate::store::sqlite::Sync::Normal)
                .unwrap();
            show(
                &format!("store thread, SQLite (NORMAL), {clients} clients"),
                "batches",
                through_store(Box::new(lite), clients),
            );
            let _ = std::fs::remove_dir_all(&dir);
        }
        // tokio-postgres, pipelined, on the same schema.
        let url = fresh_database(&admin, "bench_pipelined");
        drop(Postgres::open(&url).unwrap());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (mut client, connection) = rt
            .block_on(tokio_postgres::connect(&url, tokio_postgres::NoTls))
            .unwrap();
        rt.spawn(connection);
        let (put, put_message, add, by_id, page) = rt.block_on(async {
            (
                client.prepare("INSERT INTO records (kind, key, value) VALUES ($1, $2, $3) ON CONFLICT (kind, key) DO UPDATE SET value = EXCLUDED.value").await.unwrap(),
                client.prepare("INSERT INTO messages (session, seq, id, sender, correlator, value, sent_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (session, seq) DO UPDATE SET value = EXCLUDED.value").await.unwrap(),
                client.prepare("INSERT INTO outbox (id, subscription, body, created_ms, attempts, next_attempt_ms, failing_since_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO UPDATE SET body = EXCLUDED.body").await.unwrap(),
                client.prepare("SELECT value FROM messages WHERE session = $1 AND id = $2").await.unwrap(),
                client.prepare("SELECT seq, value FROM messages WHERE session = $1 AND seq > $2 ORDER BY seq LIMIT $3").await.unwrap(),
            )
        });
        let mut commit = |batches: &[Batch]| {
            // The parameters of every statement, owned for as long as the pipeline runs.
            struct Row {
                seq: i64,
                ids: Vec<i64>,
            }
            let rows: Vec<Row> = batches
                .iter()
                .map(|b| Row {
                    seq: b.messages[0].seq as i64,
                    ids: b.outbox.iter().map(|e| e.id as i64).collect(),
                })
                .collect();
            let (zero, none): (i64, Option<i64>) = (0, None);
            let no_correlator: Option<&[u8]> = None;
            rt.block_on(async {
                let tx = client.transaction().await.unwrap();
                let mut calls: Vec<(&tokio_postgres::Statement, Vec<&(dyn ToSql + Sync)>)> =
                    Vec::new();
                for (b, r) in batches.iter().zip(&rows) {
                    let (kind, key, value) = &b.puts[0];
                    let _ = kind;
                    calls.push((&put, vec![&"meta", key, value]));
                    let m = &b.messages[0];
                    calls.push((
                        &put_message,
                        vec![
                            &m.session,
                            &r.seq,
                            &m.id,
                            &m.sender,
                            &no_correlator,
                            &m.value,
                            &r.seq,
                        ],
                    ));
                    for (e, id) in b.outbox.iter().zip(&r.ids) {
                        calls.push((
                            &add,
                            vec![
                                id,
                                &e.subscription,
                                &e.body,
                                &e.created_ms,
                                &zero,
                                &zero,
                                &none,
                            ],
                        ));
                    }
                }
                try_join_all(calls.iter().map(|(st, p)| tx.execute(*st, p)))
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            });
        };
        show(
            "pipelined, 1-batch commit",
            "commits",
            timed(singles, |i| commit(&[send_batch(i)])),
        );
        show("pipelined, 64-batch group commit", "batches", {
            let (r, p50, p99) = timed(groups, |g| {
                let bs: Vec<Batch> = (0..64).map(|k| send_batch(10_000 + g * 64 + k)).collect();
                commit(&bs);
            });
            (r * 64.0, p50, p99)
        });
        show(
            "pipelined, message by id",
            "reads",
            timed(singles, |i| {
                let id = format!("msg-{i}");
                let row = rt
                    .block_on(client.query_opt(&by_id, &[&"ses-bench", &id]))
                    .unwrap();
                assert!(row.is_some());
            }),
        );
        show(
            "pipelined, page of 50",
            "pages",
            timed(singles / 4, |i| {
                let after = i as i64;
                let rows = rt
                    .block_on(client.query(&page, &[&"ses-bench", &after, &50i64]))
                    .unwrap();
                assert_eq!(rows.len(), 50);
            }),
        );
    }
}
