//! Storage engine benchmark (issue 5): the SQLite WAL backend the server ships against a minimal
//! redb backend written here, through the same `Backend` trait, on the same machine in the same
//! run.
//!
//! `cargo bench --bench store_engines` prints a markdown table. For each engine and durability
//! setting it measures, each on a fresh data directory under `target/store-bench-*/` (removed
//! afterwards):
//!
//! - single-batch commits: 2,000 commits of one message-send batch (a ~400-byte message record,
//!   the `counters` meta record the core rewrites on every change, and two ~1 KiB outbox
//!   entries): commits/s and p50/p99 commit latency;
//! - group commits: 200 commits of 64 such batches each: batches/s and p50 commit latency;
//! - forgetting delivered notifications: 200 commits of 64 one-id `forget` batches (what
//!   delivery submits, grouped by the store thread): rows/s;
//! - start-up: 20,000 batches (all outbox rows still undelivered, the worst case) written in
//!   groups of 64, closed, reopened: `load()` time, open time and the size of the data directory.
//!
//! Set `STORE_BENCH_ONLY=<label substring>` to run only some rows.

use netapi_chat::store::sqlite::{Sqlite, Sync};
use netapi_chat::store::{
    Backend, Batch, Kind, MessageRow, OutboxEntry, Progress, Purged, Snapshot, StoreError,
};
use redb::{Database, Durability, ReadableTable, TableDefinition};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

// ------------------------------------------------------------------------------ redb backend

/// (kind, key) → JSON value.
const RECORDS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("records");
/// id → (subscription, body, created_ms).
const OUTBOX: TableDefinition<u64, (&str, &[u8], i64)> = TableDefinition::new("outbox");

/// A minimal redb backend with the same two tables and semantics as `Sqlite`.
struct Redb {
    db: Database,
    durability: Durability,
}

fn rerr(e: impl std::fmt::Display) -> StoreError {
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

impl Redb {
    fn open(dir: &Path, durability: Durability) -> Result<Redb, StoreError> {
        std::fs::create_dir_all(dir).map_err(rerr)?;
        let db = Database::create(dir.join("netapi-chat.redb")).map_err(rerr)?;
        let tx = db.begin_write().map_err(rerr)?;
        {
            tx.open_table(RECORDS).map_err(rerr)?;
            tx.open_table(OUTBOX).map_err(rerr)?;
        }
        tx.commit().map_err(rerr)?;
        Ok(Redb { db, durability })
    }
}

impl Drop for Redb {
    /// `Durability::None` commits reach the file only with a later durable commit; a backend
    /// using it must make one on clean shutdown (a crash loses everything since the last one).
    fn drop(&mut self) {
        if matches!(self.durability, Durability::None)
            && let Ok(tx) = self.db.begin_write()
        {
            let _ = tx.commit();
        }
    }
}

impl Backend for Redb {
    // The bench measures commits and start-up; the message lookups the server makes are
    // measured on the shipped backend only.
    fn messages_after(
        &mut self,
        _: &str,
        _: Option<u64>,
        _: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        Err(StoreError("not measured in this bench".into()))
    }

    fn message(&mut self, _: &str, _: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Err(StoreError("not measured in this bench".into()))
    }

    fn last_message_ms(&mut self, _: &str) -> Result<Option<i64>, StoreError> {
        Err(StoreError("not measured in this bench".into()))
    }

    fn purge_messages(&mut self, _: i64, _: &str, _: usize) -> Result<Purged, StoreError> {
        Err(StoreError("not measured in this bench".into()))
    }

    fn purge_dead_letters(&mut self, _: i64, _: usize) -> Result<usize, StoreError> {
        Err(StoreError("not measured in this bench".into()))
    }

    fn message_by_correlator(
        &mut self,
        _: &str,
        _: &str,
        _: &str,
    ) -> Result<Option<String>, StoreError> {
        Err(StoreError("not measured in this bench".into()))
    }

    fn load(&mut self) -> Result<Snapshot, StoreError> {
        let mut snapshot = Snapshot::default();
        let tx = self.db.begin_read().map_err(rerr)?;
        let records = tx.open_table(RECORDS).map_err(rerr)?;
        for row in records.iter().map_err(rerr)? {
            let (k, v) = row.map_err(rerr)?;
            let (kind, key) = k.value();
            // Messages are read on demand, not at start-up (as in the SQLite backend).
            if kind == "message" {
                continue;
            }
            let kind = kind_of(kind)
                .ok_or_else(|| StoreError(format!("unknown record kind `{kind}` in the store")))?;
            snapshot
                .records
                .push((kind, key.to_owned(), v.value().to_vec()));
        }
        let outbox = tx.open_table(OUTBOX).map_err(rerr)?;
        for row in outbox.iter().map_err(rerr)? {
            let (k, v) = row.map_err(rerr)?;
            let (subscription, body, created_ms) = v.value();
            snapshot.outbox.push(OutboxEntry {
                id: k.value(),
                subscription: subscription.to_owned(),
                body: body.to_vec(),
                created_ms,
                progress: Progress::default(),
            });
        }
        Ok(snapshot)
    }

    fn commit(&mut self, batches: &[&Batch]) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write().map_err(rerr)?;
        tx.set_durability(self.durability);
        {
            let mut records = tx.open_table(RECORDS).map_err(rerr)?;
            let mut outbox = tx.open_table(OUTBOX).map_err(rerr)?;
            for b in batches {
                for (kind, key, value) in &b.puts {
                    records
                        .insert((kind.name(), key.as_str()), value.as_slice())
                        .map_err(rerr)?;
                }
                for m in &b.messages {
                    let key = format!("{}/{}", m.session, m.id);
                    records
                        .insert(("message", key.as_str()), m.value.as_slice())
                        .map_err(rerr)?;
                }
                for (kind, key) in &b.deletes {
                    records.remove((kind.name(), key.as_str())).map_err(rerr)?;
                    if *kind == Kind::Session {
                        let (lo, hi) = (format!("{key}/"), format!("{key}0"));
                        records
                            .retain_in(
                                ("message", lo.as_str())..("message", hi.as_str()),
                                |_, _| false,
                            )
                            .map_err(rerr)?;
                    }
                }
                for e in &b.outbox {
                    outbox
                        .insert(
                            e.id,
                            (e.subscription.as_str(), e.body.as_slice(), e.created_ms),
                        )
                        .map_err(rerr)?;
                }
                for id in &b.forget {
                    outbox.remove(*id).map_err(rerr)?;
                }
            }
        }
        tx.commit().map_err(rerr)
    }
}

// ------------------------------------------------------------------------------ workload

/// Deterministic pseudo-random numbers (splitmix64), for uuid-like keys.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn hex32(&mut self) -> String {
        format!("{:016x}{:016x}", self.next(), self.next())
    }
}

/// Makes message-send batches shaped like the core's: keys `ses-N-<uuid>/msg-N-<uuid>` (the
/// server's id format), one message record, the counters record, two notifications.
struct Workload {
    rng: Rng,
    sessions: Vec<String>,
    subscriptions: Vec<String>,
    next_message: u64,
    next_notification: u64,
}

impl Workload {
    fn new() -> Workload {
        let mut rng = Rng(0x5EED);
        let sessions = (1..=50)
            .map(|i| format!("ses-{i}-{}", rng.hex32()))
            .collect();
        let subscriptions = (1..=30)
            .map(|i| format!("sub-{i}-{}", rng.hex32()))
            .collect();
        Workload {
            rng,
            sessions,
            subscriptions,
            next_message: 0,
            next_notification: 0,
        }
    }

    fn pad(len: usize, prefix: &str) -> String {
        let mut s = prefix.to_owned();
        while s.len() < len - 2 {
            s.push('x');
        }
        s.push_str("\"}");
        s
    }

    fn message_send(&mut self) -> Batch {
        self.next_message += 1;
        let n = self.rng.next() as usize;
        let session = &self.sessions[n % self.sessions.len()];
        let mid = format!("msg-{}-{}", self.next_message, self.rng.hex32());
        let message = Self::pad(
            400,
            &format!(
                "{{\"id\":\"{mid}\",\"sender\":\"tel:+15550100001\",\"status\":\"Sent\",\
                 \"contentType\":\"text/plain\",\"dateTime\":\"2026-01-01T00:00:00Z\",\
                 \"text\":\""
            ),
        );
        let counters = format!(
            "{{\"next_notification\":{},\"next_id\":{}}}",
            self.next_notification + 2,
            self.next_message
        );
        let mut outbox = Vec::with_capacity(2);
        for k in 0..2 {
            self.next_notification += 1;
            let sub = &self.subscriptions[(n / 64 + k) % self.subscriptions.len()];
            outbox.push(OutboxEntry {
                id: self.next_notification,
                subscription: sub.clone(),
                body: Self::pad(
                    1024,
                    &format!(
                        "{{\"chatEventNotification\":{{\"sessionId\":\"{session}\",\
                         \"messageId\":\"{mid}\",\"callbackData\":\"cb\",\"link\":\""
                    ),
                )
                .into_bytes(),
                created_ms: 1_767_225_600_000 + self.next_notification as i64,
                progress: Progress::default(),
            });
        }
        Batch {
            puts: vec![(Kind::Meta, "counters".to_owned(), counters.into_bytes())],
            messages: vec![MessageRow {
                session: session.clone(),
                seq: self.next_message,
                id: mid,
                sender: "tel:+15550100001".to_owned(),
                correlator: None,
                value: message.into_bytes(),
                sent_ms: Some(1_767_225_600_000 + self.next_message as i64),
            }],
            outbox,
            ..Batch::default()
        }
    }
}

// ------------------------------------------------------------------------------ engines

#[derive(Clone, Copy)]
enum Engine {
    Sqlite(Sync),
    Redb(Durability),
}

struct Config {
    label: &'static str,
    survives: &'static str,
    engine: Engine,
}

const CONFIGS: &[Config] = &[
    Config {
        label: "SQLite WAL, synchronous=NORMAL (default)",
        survives: "process crash",
        engine: Engine::Sqlite(Sync::Normal),
    },
    Config {
        label: "SQLite WAL, synchronous=FULL",
        survives: "process crash + power loss",
        engine: Engine::Sqlite(Sync::Full),
    },
    Config {
        label: "redb 2, Durability::Immediate",
        survives: "process crash + power loss",
        engine: Engine::Redb(Durability::Immediate),
    },
    Config {
        label: "redb 2, Durability::Eventual",
        survives: "process crash + power loss (on Linux an fsync like Immediate)",
        engine: Engine::Redb(Durability::Eventual),
    },
    Config {
        label: "redb 2, Durability::None",
        survives: "**not crash-safe**: nothing since the last durable commit survives even a process crash",
        engine: Engine::Redb(Durability::None),
    },
];

fn open(engine: Engine, dir: &Path) -> Box<dyn Backend> {
    match engine {
        Engine::Sqlite(sync) => Box::new(Sqlite::open(dir, sync).expect("open sqlite")),
        Engine::Redb(d) => Box::new(Redb::open(dir, d).expect("open redb")),
    }
}

fn bench_dir(label: &str, phase: &str) -> PathBuf {
    let slug: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join(format!("store-bench-{}-{slug}-{phase}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Times each call; returns (total, sorted per-call latencies).
fn timed_commits(db: &mut dyn Backend, groups: &[Vec<Batch>]) -> (Duration, Vec<Duration>) {
    let mut lat = Vec::with_capacity(groups.len());
    let start = Instant::now();
    for g in groups {
        let refs: Vec<&Batch> = g.iter().collect();
        let t = Instant::now();
        db.commit(&refs).expect("commit");
        lat.push(t.elapsed());
    }
    let total = start.elapsed();
    lat.sort();
    (total, lat)
}

struct Row {
    single_per_s: f64,
    single_p50: Duration,
    single_p99: Duration,
    group_batches_per_s: f64,
    group_p50: Duration,
    forget_rows_per_s: f64,
    open: Duration,
    load: Duration,
    size: u64,
}

const SINGLE_COMMITS: usize = 2_000;
const GROUP: usize = 64;
const GROUP_COMMITS: usize = 200;
const FORGET_COMMITS: usize = 200;
const LOAD_BATCHES: usize = 20_000;

fn run(config: &Config) -> Row {
    // Phases 1–3 on one data directory: single commits, group commits, forgetting.
    let dir = bench_dir(config.label, "commit");
    let mut db = open(config.engine, &dir);
    let mut w = Workload::new();

    let singles: Vec<Vec<Batch>> = (0..SINGLE_COMMITS)
        .map(|_| vec![w.message_send()])
        .collect();
    let (total, lat) = timed_commits(db.as_mut(), &singles);
    let single_per_s = SINGLE_COMMITS as f64 / total.as_secs_f64();
    let (single_p50, single_p99) = (percentile(&lat, 0.50), percentile(&lat, 0.99));

    let groups: Vec<Vec<Batch>> = (0..GROUP_COMMITS)
        .map(|_| (0..GROUP).map(|_| w.message_send()).collect())
        .collect();
    let (total, lat) = timed_commits(db.as_mut(), &groups);
    let group_batches_per_s = (GROUP_COMMITS * GROUP) as f64 / total.as_secs_f64();
    let group_p50 = percentile(&lat, 0.50);

    let mut id = 0u64;
    let forgets: Vec<Vec<Batch>> = (0..FORGET_COMMITS)
        .map(|_| {
            (0..GROUP)
                .map(|_| {
                    id += 1;
                    Batch {
                        forget: vec![id],
                        ..Batch::default()
                    }
                })
                .collect()
        })
        .collect();
    let (total, _) = timed_commits(db.as_mut(), &forgets);
    let forget_rows_per_s = (FORGET_COMMITS * GROUP) as f64 / total.as_secs_f64();

    let snap = db.load().expect("load");
    let written = (SINGLE_COMMITS + GROUP_COMMITS * GROUP) as u64;
    assert_eq!(snap.records.len() as u64, written + 1, "{}", config.label);
    assert_eq!(
        snap.outbox.len() as u64,
        2 * written - (FORGET_COMMITS * GROUP) as u64,
        "{}",
        config.label
    );
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);

    // Phase 4: start-up after 20,000 batches.
    let dir = bench_dir(config.label, "load");
    let mut db = open(config.engine, &dir);
    let mut w = Workload::new();
    let mut left = LOAD_BATCHES;
    while left > 0 {
        let g: Vec<Batch> = (0..left.min(GROUP)).map(|_| w.message_send()).collect();
        left -= g.len();
        let refs: Vec<&Batch> = g.iter().collect();
        db.commit(&refs).expect("commit");
    }
    drop(db);
    let size = dir_size(&dir);
    let t = Instant::now();
    let mut db = open(config.engine, &dir);
    let open_time = t.elapsed();
    let t = Instant::now();
    let snap = db.load().expect("load");
    let load = t.elapsed();
    assert_eq!(snap.records.len(), LOAD_BATCHES + 1, "{}", config.label);
    assert_eq!(snap.outbox.len(), 2 * LOAD_BATCHES, "{}", config.label);
    drop(snap);
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);

    Row {
        single_per_s,
        single_p50,
        single_p99,
        group_batches_per_s,
        group_p50,
        forget_rows_per_s,
        open: open_time,
        load,
        size,
    }
}

/// Both backends must agree on the semantics the core relies on (cascading session delete,
/// forget, overwrite, order) before their speed is worth comparing.
fn check_same_semantics() {
    let mut snaps = Vec::new();
    for engine in [
        Engine::Sqlite(Sync::Normal),
        Engine::Redb(Durability::Immediate),
    ] {
        let dir = bench_dir("semantics", if snaps.is_empty() { "a" } else { "b" });
        {
            let mut db = open(engine, &dir);
            let entry = |id: u64| OutboxEntry {
                id,
                subscription: "a".into(),
                body: vec![b'x'; id as usize],
                created_ms: id as i64,
                progress: Progress::default(),
            };
            let b1 = Batch {
                puts: vec![
                    (Kind::Session, "s1".into(), b"{}".to_vec()),
                    (Kind::Session, "s10".into(), b"{}".to_vec()),
                    (Kind::Meta, "counters".into(), b"1".to_vec()),
                ],
                messages: ["s1", "s10", "s2"]
                    .iter()
                    .map(|s| MessageRow {
                        session: (*s).into(),
                        seq: 1,
                        id: "m1".into(),
                        sender: "a".into(),
                        correlator: None,
                        value: b"{}".to_vec(),
                        sent_ms: Some(1),
                    })
                    .collect(),
                outbox: vec![entry(1), entry(2), entry(3)],
                ..Batch::default()
            };
            let b2 = Batch {
                puts: vec![(Kind::Meta, "counters".into(), b"2".to_vec())],
                deletes: vec![(Kind::Session, "s1".into())],
                forget: vec![1],
                ..Batch::default()
            };
            db.commit(&[&b1]).unwrap();
            db.commit(&[&b2, &Batch::default()]).unwrap();
        }
        snaps.push(open(engine, &dir).load().unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }
    let (a, b) = (&snaps[0], &snaps[1]);
    assert_eq!(a.records, b.records);
    assert_eq!(a.outbox, b.outbox);
    assert_eq!(
        a.records.iter().map(|r| r.1.as_str()).collect::<Vec<_>>(),
        ["s10", "counters"]
    );
    assert_eq!(a.outbox.iter().map(|e| e.id).collect::<Vec<_>>(), [2, 3]);
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is understood.
    check_same_semantics();
    let only = std::env::var("STORE_BENCH_ONLY").ok();
    println!(
        "\nstore_engines: {SINGLE_COMMITS} single commits, {GROUP_COMMITS}×{GROUP} group \
         commits, {FORGET_COMMITS}×{GROUP} forgets, start-up after {LOAD_BATCHES} batches\n"
    );
    println!(
        "| engine, durability | survives | 1-batch commits/s | p50 ms | p99 ms \
         | 64-batch groups: batches/s | group p50 ms | forget rows/s (64/commit) \
         | load() ms (open ms) | size MiB |"
    );
    println!("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|");
    for config in CONFIGS {
        if let Some(o) = &only
            && !config.label.contains(o.as_str())
        {
            continue;
        }
        let r = run(config);
        println!(
            "| {} | {} | {:.0} | {:.3} | {:.3} | {:.0} | {:.2} | {:.0} | {:.0} ({:.1}) | {:.1} |",
            config.label,
            config.survives,
            r.single_per_s,
            ms(r.single_p50),
            ms(r.single_p99),
            r.group_batches_per_s,
            ms(r.group_p50),
            r.forget_rows_per_s,
            ms(r.load),
            ms(r.open),
            r.size as f64 / (1024.0 * 1024.0),
        );
    }
}
