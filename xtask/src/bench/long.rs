//! The long run (issue 12): does the server's state stay bounded? One open-loop step of many
//! messages at a steady rate on the real release server (fresh data directory, real callback
//! listeners), while sessions are opened, accepted and ended alongside; every few seconds a
//! sampler reads the server's RSS, the data directory and WAL sizes, and the POST latencies
//! and rate of the window just gone. Then the server is killed (SIGKILL) and started again on
//! the same directory, to time a restart with that history.
//!
//! Growth is what this phase is for: a reader should see from the chart whether a line is
//! flat or climbs, so every sample is kept (CSV) and drawn ([`super::chart`]).

use super::chat::{Format, Plan, chat_target, open_session, path, user};
use super::http::{Conn, request};
use super::load::{Options, Percentiles, StepResult, Tap, run_step};
use super::proc::{self, AUTHORIZATION, NetapiChat, dir_bytes, file_bytes, rss_kib, wal_path};
use anyhow::{Context, Result, bail};
use http::Method;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the long run does.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Messages sent in all (one open-loop step).
    pub messages: u64,
    /// Their rate, messages per second.
    pub rate: u32,
    /// Sessions opened, accepted and ended during the run, spread evenly over it.
    pub sessions_cycled: u64,
    /// Time between samples.
    pub sample: Duration,
    /// Who chats (users with subscriptions and listeners, sessions that stay open).
    pub plan: Plan,
    /// Characters of text per message.
    pub text_len: usize,
    /// Connections of the message sender.
    pub connections: usize,
    /// Connections of the session cycler.
    pub cycle_connections: usize,
}

impl Settings {
    /// The figures: a million messages at 2,000/s (about 8½ minutes), 100,000
    /// sessions cycled, a sample every 5 s.
    pub fn full(plan: Plan) -> Settings {
        Settings {
            messages: 1_000_000,
            rate: 2000,
            sessions_cycled: 100_000,
            sample: Duration::from_secs(5),
            plan,
            text_len: 120,
            connections: 32,
            cycle_connections: 4,
        }
    }

    /// A few seconds, for CI: the harness runs end to end, the figures mean nothing.
    pub fn smoke(plan: Plan) -> Settings {
        Settings {
            messages: 5000,
            rate: 1000,
            sessions_cycled: 500,
            sample: Duration::from_secs(1),
            plan,
            text_len: 120,
            connections: 8,
            cycle_connections: 2,
        }
    }

    /// How long the messages take to send at the rate.
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.messages as f64 / f64::from(self.rate.max(1)))
    }
}

/// One sample: the state at time `t` and what the window since the previous sample saw.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// Seconds since sending started.
    pub t: f64,
    /// Seconds the window lasted (0 for the first sample: no window).
    pub window_secs: f64,
    /// Messages answered 2xx so far (stored).
    pub messages: u64,
    /// Sessions opened, accepted and ended so far.
    pub sessions: u64,
    /// Server `VmRSS`, KiB.
    pub rss_kib: u64,
    /// Bytes of every file in the data directory (database, WAL, shared memory, tokens).
    pub data_bytes: u64,
    /// Bytes of the WAL file.
    pub wal_bytes: u64,
    /// The largest WAL size seen in the window (polled several times a second: the WAL can
    /// grow and be reset within one window, which samples alone would alias).
    pub wal_peak_bytes: u64,
    /// WAL resets seen in the window (its size fell by half or more between two polls).
    pub wal_resets: u64,
    /// POST latencies of the window's 2xx answers.
    pub window: Percentiles,
    /// The window's slowest 2xx answer, ns.
    pub max_ns: u64,
    /// 2xx answers per second over the window.
    pub rate: f64,
    /// Sessions cycled per second over the window.
    pub session_rate: f64,
    /// Failed sends in the window.
    pub errors: u64,
    /// Failed session cycles in the window.
    pub cycle_errors: u64,
    /// Server CPU over the window, % of one core.
    pub server_cpu_pct: f64,
    /// The machine's 1-minute load average.
    pub load1: f64,
}

const CSV_HEADER: &str = "t_s,messages,sessions_cycled,rss_kib,data_dir_bytes,wal_bytes,wal_peak_bytes,wal_resets,p50_ms,p99_ms,p999_ms,max_ms,answers,rate_per_s,sessions_per_s,errors,cycle_errors,server_cpu_pct,load1";

impl Sample {
    fn csv(&self) -> String {
        let ms = |ns: u64| ns as f64 / 1e6;
        format!(
            "{:.1},{},{},{},{},{},{},{},{:.3},{:.3},{:.3},{:.3},{},{:.1},{:.1},{},{},{:.0},{:.2}",
            self.t,
            self.messages,
            self.sessions,
            self.rss_kib,
            self.data_bytes,
            self.wal_bytes,
            self.wal_peak_bytes,
            self.wal_resets,
            ms(self.window.p50),
            ms(self.window.p99),
            ms(self.window.p999),
            ms(self.max_ns),
            self.window.n,
            self.rate,
            self.session_rate,
            self.errors,
            self.cycle_errors,
            self.server_cpu_pct,
            self.load1
        )
    }
}

/// The restart after the run.
#[derive(Clone, Debug, Default)]
pub struct Restart {
    /// Messages stored when the server was killed.
    pub messages: u64,
    /// Sessions ended by then.
    pub sessions_ended: u64,
    /// Sessions still open (the workload's).
    pub sessions_open: usize,
    /// Data directory then, bytes.
    pub data_bytes: u64,
    /// WAL then, bytes.
    pub wal_bytes: u64,
    /// RSS just before the kill, KiB.
    pub rss_before_kib: u64,
    /// Seconds from spawning the process to its start-up line (it listens).
    pub to_listen: f64,
    /// Seconds from spawning the process to its first 2xx answer (GET …/subscriptions).
    pub to_answer: f64,
    /// RSS right after that first answer, KiB.
    pub rss_after_kib: u64,
}

/// What the long run measured.
#[derive(Clone, Debug)]
pub struct LongResult {
    /// The settings it ran with.
    pub messages: u64,
    /// Target rate.
    pub rate: u32,
    /// Sessions it meant to cycle.
    pub sessions_planned: u64,
    /// Seconds between samples.
    pub sample_secs: f64,
    /// Milliseconds between polls of the WAL's size.
    pub wal_poll_ms: u128,
    /// Workload description.
    pub plan: String,
    /// Message text length.
    pub text_len: usize,
    /// Connections of the message sender.
    pub connections: usize,
    /// Every sample, the first taken just before sending started.
    pub samples: Vec<Sample>,
    /// The whole run as one step: overall POST and notification percentiles, errors.
    pub overall: StepResult,
    /// Sessions cycled.
    pub cycled: u64,
    /// Failed cycles.
    pub cycle_errors: u64,
    /// The first failure of a cycle.
    pub first_cycle_error: Option<String>,
    /// The restart (`Err`: why it failed).
    pub restart: Result<Restart, String>,
    /// Wall-clock seconds of sending (until the last answer and the cycler were done).
    pub secs: f64,
}

/// Counts of the session cycler, read by the sampler while it runs.
#[derive(Default)]
struct Cycles {
    done: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

/// Cycled sessions take their two users from a pool of this many pairs: the sessions (ended
/// ones included) are what accumulates, not the users.
const CYCLE_USERS: u64 = 1000;

async fn delete(conn: &mut Conn, p: &str) -> Result<()> {
    let req = request(
        Method::DELETE,
        p,
        &[
            ("accept", "application/json"),
            ("authorization", AUTHORIZATION),
        ],
        "",
    )?;
    let r = conn.send(req, Duration::from_secs(10)).await?;
    if !r.ok() {
        bail!("DELETE {p}: status {}: {}", r.status, r.text());
    }
    Ok(())
}

/// Cycle `i`: a 1-1 session opened, accepted and ended by its originator (users without
/// subscriptions, so no notifications: the cost measured is the session's state).
async fn cycle(conn: &mut Conn, i: u64) -> Result<()> {
    let k = i % CYCLE_USERS;
    let (a, b) = (format!("tel:+1888{k:07}"), format!("tel:+1889{k:07}"));
    let sid = open_session(conn, &[a.clone(), b]).await?;
    delete(conn, &path(&a, &format!("/chatSessions/{sid}"))).await
}

/// Runs `count` cycles, cycle `i` due at `start + i * interval` (late ones run at once), on
/// `connections` connections.
async fn cycle_sessions(
    addr: std::net::SocketAddr,
    count: u64,
    start: Instant,
    interval: Duration,
    connections: usize,
    stats: Arc<Cycles>,
) {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..connections.max(1) {
        let (next, stats) = (Arc::clone(&next), Arc::clone(&stats));
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(addr);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let due = start + interval.mul_f64(i as f64);
                tokio::time::sleep_until(due.into()).await;
                match cycle(&mut conn, i).await {
                    Ok(()) => {
                        stats.done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        stats.errors.fetch_add(1, Ordering::Relaxed);
                        let mut first = stats
                            .first_error
                            .lock()
                            .unwrap_or_else(|poisoned| poisoned.into_inner());
                        first.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
        }));
    }
    for t in tasks {
        // A panicked cycler task loses its remaining cycles; the count shows it.
        let _ = t.await;
    }
}

/// Reads the server and the windows every `every`, appending to `csv` as it goes (so a run
/// that dies halfway still leaves its samples), until `stop` fires; then one last sample.
struct Sampler {
    pid: u32,
    data_dir: PathBuf,
    tap: Arc<Tap>,
    cycles: Arc<Cycles>,
    csv: std::io::BufWriter<std::fs::File>,
    start: Instant,
    last: Instant,
    last_cpu: Option<f64>,
    last_sessions: u64,
    last_cycle_errors: u64,
    messages: u64,
    samples: Vec<Sample>,
    braked: bool,
    wal_last: u64,
    wal_peak: u64,
    wal_resets: u64,
}

impl Sampler {
    fn new(
        pid: u32,
        data_dir: PathBuf,
        tap: Arc<Tap>,
        cycles: Arc<Cycles>,
        csv_path: &Path,
    ) -> Result<Sampler> {
        if let Some(dir) = csv_path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let file = std::fs::File::create(csv_path)
            .with_context(|| format!("creating {}", csv_path.display()))?;
        let mut csv = std::io::BufWriter::new(file);
        writeln!(csv, "{CSV_HEADER}").with_context(|| format!("writing {}", csv_path.display()))?;
        let now = Instant::now();
        Ok(Sampler {
            pid,
            data_dir,
            tap,
            cycles,
            csv,
            start: now,
            last: now,
            last_cpu: proc::cpu_secs(Some(pid)),
            last_sessions: 0,
            last_cycle_errors: 0,
            messages: 0,
            samples: Vec::new(),
            braked: false,
            wal_last: 0,
            wal_peak: 0,
            wal_resets: 0,
        })
    }

    /// Reads the WAL size between samples: its peak and its resets.
    fn poll_wal(&mut self) -> u64 {
        let now = file_bytes(&wal_path(&self.data_dir));
        if now < self.wal_last / 2 {
            self.wal_resets += 1;
        }
        self.wal_last = now;
        self.wal_peak = self.wal_peak.max(now);
        now
    }

    fn sample(&mut self) -> Result<()> {
        let now = Instant::now();
        let secs = now.saturating_duration_since(self.last).as_secs_f64();
        let mut w = self.tap.take();
        self.messages += w.ok;
        let max_ns = w.latencies.iter().copied().max().unwrap_or(0);
        let cpu = proc::cpu_secs(Some(self.pid));
        let sessions = self.cycles.done.load(Ordering::Relaxed);
        let cycle_errors = self.cycles.errors.load(Ordering::Relaxed);
        let per_sec = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        let s = Sample {
            t: now.saturating_duration_since(self.start).as_secs_f64(),
            window_secs: if self.samples.is_empty() { 0.0 } else { secs },
            messages: self.messages,
            sessions,
            rss_kib: rss_kib(self.pid)?,
            data_bytes: dir_bytes(&self.data_dir),
            wal_bytes: self.poll_wal(),
            wal_peak_bytes: std::mem::take(&mut self.wal_peak),
            wal_resets: std::mem::take(&mut self.wal_resets),
            window: Percentiles::of(&mut w.latencies),
            max_ns,
            rate: per_sec(w.ok),
            session_rate: per_sec(sessions - self.last_sessions),
            errors: w.errors,
            cycle_errors: cycle_errors - self.last_cycle_errors,
            server_cpu_pct: match (self.last_cpu, cpu) {
                (Some(a), Some(b)) if secs > 0.0 => (b - a) * 100.0 / secs,
                _ => 0.0,
            },
            load1: proc::loadavg()
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0),
        };
        self.brake_on_full_disk();
        writeln!(self.csv, "{}", s.csv()).context("writing the long-run CSV")?;
        self.csv.flush().context("writing the long-run CSV")?;
        println!(
            "  long: {:>6.0} s  {:>8} msgs  {:>6} sessions  RSS {:>7.1} MiB  data {:>7.1} MiB  WAL {:>6.1} MiB (peak {:>6.1})  p50/p99/p99.9 {:.2}/{:.2}/{:.2} ms  {:>6.0}/s  errors {}  load {:.2}",
            s.t,
            s.messages,
            s.sessions,
            s.rss_kib as f64 / 1024.0,
            mib(s.data_bytes),
            mib(s.wal_bytes),
            mib(s.wal_peak_bytes),
            s.window.p50 as f64 / 1e6,
            s.window.p99 as f64 / 1e6,
            s.window.p999 as f64 / 1e6,
            s.rate,
            s.errors + s.cycle_errors,
            s.load1
        );
        self.last = now;
        self.last_cpu = cpu;
        self.last_sessions = sessions;
        self.last_cycle_errors = cycle_errors;
        self.samples.push(s);
        Ok(())
    }
}

/// Free space under which the run is cut short: the WAL may grow by tens of KiB per message,
/// and a benchmark must not fill the disk of a machine other people work on.
const MIN_FREE_BYTES: u64 = 4 << 30;

/// Bytes free on the file system of `dir` (`df`; `None` when it cannot tell).
fn free_bytes(dir: &Path) -> Option<u64> {
    let out = std::process::Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(dir)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)?
        .trim()
        .parse()
        .ok()
}

impl Sampler {
    /// Kills the server (SIGKILL, by its pid: a process this harness started) when the disk is
    /// nearly full; the sends then fail fast, the step ends and the report shows the errors.
    fn brake_on_full_disk(&mut self) {
        if self.braked {
            return;
        }
        if let Some(free) = free_bytes(&self.data_dir)
            && free < MIN_FREE_BYTES
        {
            println!(
                "bench: long run: only {:.1} GiB left on the disk of {}; killing the server to stop the run",
                free as f64 / f64::from(1 << 30),
                self.data_dir.display()
            );
            self.braked = true;
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &self.pid.to_string()])
                .status();
        }
    }
}

/// Bytes as MiB.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Runs the long phase on a fresh server, writing every sample to `csv_path`.
pub async fn run(root: &Path, s: &Settings, csv_path: &Path) -> Result<LongResult> {
    let mut chat = proc::start_netapi_chat(root, "long", &[])?;
    let (workload, mut target) = chat_target(
        chat.server.addr,
        &s.plan,
        Format::Json,
        s.text_len,
        chat.server.pid(),
        &[],
        None,
    )
    .await?;
    let tap = Arc::new(Tap::default());
    target.tap = Some(Arc::clone(&tap));
    let opts = Options {
        connections: s.connections,
        drain: Duration::from_secs(5),
        request_timeout: Duration::from_secs(5),
        min_step: s.duration(),
        max_step: s.duration(),
        min_messages: 0,
        warmup: Duration::ZERO,
    };
    println!(
        "bench: long run: {} messages at {}/s (~{:.0} s), {} sessions cycled, a sample every {:.0} s → {}",
        s.messages,
        s.rate,
        s.duration().as_secs_f64(),
        s.sessions_cycled,
        s.sample.as_secs_f64(),
        csv_path.display()
    );

    let cycles = Arc::new(Cycles::default());
    let mut sampler = Sampler::new(
        chat.server.pid(),
        chat.data_dir.clone(),
        Arc::clone(&tap),
        Arc::clone(&cycles),
        csv_path,
    )?;
    sampler.sample()?;
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let every = s.sample;
    // The WAL is polled between samples: a stat is cheap, and its resets are quicker than a
    // window.
    let poll = (every / 10).clamp(Duration::from_millis(10), Duration::from_millis(250));
    let sampling = tokio::spawn(async move {
        let mut next = Instant::now() + every;
        loop {
            let last = tokio::select! {
                _ = tokio::time::sleep(poll) => false,
                _ = &mut stop_rx => true,
            };
            sampler.poll_wal();
            if last || Instant::now() >= next {
                sampler.sample()?;
                next += every;
            }
            if last {
                return Ok::<_, anyhow::Error>(sampler.samples);
            }
        }
    });

    let t0 = Instant::now();
    let interval = s
        .duration()
        .div_f64(s.sessions_cycled.max(1) as f64)
        .max(Duration::from_micros(1));
    let cycler = tokio::spawn(cycle_sessions(
        chat.server.addr,
        s.sessions_cycled,
        t0,
        interval,
        s.cycle_connections,
        Arc::clone(&cycles),
    ));
    let mut pool = Vec::new();
    let overall = run_step(&target, &mut pool, &opts, 1, s.rate, s.duration()).await;
    let cycled = cycler.await;
    let secs = t0.elapsed().as_secs_f64();
    // The sampler's end is independent of how the sending went: stop it first, then report.
    let _ = stop_tx.send(());
    let samples = sampling.await.context("the sampler task failed")??;
    let overall = overall?;
    cycled.context("the session cycler failed")?;
    drop(pool);
    if !chat.server.running() {
        bail!("netapi-chat exited during the long run");
    }

    let restart = restart(root, &mut chat, &overall, &cycles, s.plan.session_count())
        .await
        .map_err(|e| format!("{e:#}"));
    drop(workload);
    let first_cycle_error = cycles
        .first_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    Ok(LongResult {
        messages: s.messages,
        rate: s.rate,
        sessions_planned: s.sessions_cycled,
        sample_secs: s.sample.as_secs_f64(),
        wal_poll_ms: poll.as_millis(),
        plan: s.plan.describe(),
        text_len: s.text_len,
        connections: s.connections,
        samples,
        overall,
        cycled: cycles.done.load(Ordering::Relaxed),
        cycle_errors: cycles.errors.load(Ordering::Relaxed),
        first_cycle_error,
        restart,
        secs,
    })
}

/// Kills the server with SIGKILL and starts it again on the same data directory; times it
/// until it listens and until it first answers 2xx.
async fn restart(
    root: &Path,
    chat: &mut NetapiChat,
    overall: &StepResult,
    cycles: &Cycles,
    sessions_open: usize,
) -> Result<Restart> {
    let mut r = Restart {
        messages: overall.ok,
        sessions_ended: cycles.done.load(Ordering::Relaxed),
        sessions_open,
        rss_before_kib: rss_kib(chat.server.pid())?,
        ..Restart::default()
    };
    chat.server.kill()?;
    r.data_bytes = dir_bytes(&chat.data_dir);
    r.wal_bytes = file_bytes(&wal_path(&chat.data_dir));
    println!(
        "bench: long run: killed (SIGKILL) with {} stored messages, {} ended sessions, data {:.1} MiB (WAL {:.1} MiB); restarting",
        r.messages,
        r.sessions_ended,
        mib(r.data_bytes),
        mib(r.wal_bytes)
    );
    let limit = Duration::from_secs(600);
    let t0 = Instant::now();
    chat.server = proc::spawn_netapi_chat(root, &chat.data_dir, &[], limit)?;
    r.to_listen = t0.elapsed().as_secs_f64();
    let mut conn = Conn::new(chat.server.addr);
    let probe = path(&user(0), "/subscriptions");
    loop {
        let req = request(
            Method::GET,
            &probe,
            &[
                ("accept", "application/json"),
                ("authorization", AUTHORIZATION),
            ],
            "",
        )?;
        if let Ok(reply) = conn.send(req, Duration::from_secs(5)).await
            && reply.ok()
        {
            break;
        }
        if t0.elapsed() > limit || !chat.server.running() {
            bail!("the restarted server did not answer GET {probe} with 2xx within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    r.to_answer = t0.elapsed().as_secs_f64();
    r.rss_after_kib = rss_kib(chat.server.pid())?;
    println!(
        "bench: long run: restart listened after {:.2} s, answered after {:.2} s; RSS {:.1} MiB (was {:.1} MiB)",
        r.to_listen,
        r.to_answer,
        r.rss_after_kib as f64 / 1024.0,
        r.rss_before_kib as f64 / 1024.0
    );
    Ok(r)
}
