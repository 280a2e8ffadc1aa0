//! The open-loop load generator: sends at a fixed rate whatever the server does (so stalls show
//! in the tail), measures each POST from its *intended* send time, and collects the receipt
//! latencies of the notifications the sends cause.
//!
//! A scheduler thread releases job `seq` at `start + seq / rate` into a queue; a bounded pool
//! of keep-alive connections (one task each) takes jobs from it. When every connection is busy
//! the jobs wait in the queue and their wait counts as latency.

use super::http::{Body, Conn};
use super::listen::{Collector, intended};
use super::proc;
use anyhow::Result;
use http::Request;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, mpsc};

/// Builds the request for message `seq` of step `step`, and says how many message
/// notifications it should cause.
pub type MakeRequest = Arc<dyn Fn(u32, u64) -> Result<(Request<Body>, u32)> + Send + Sync>;

/// What a series of steps is sent to.
#[derive(Clone)]
pub struct Target {
    /// Where requests go.
    pub addr: SocketAddr,
    /// The request of each message.
    pub make: MakeRequest,
    /// Where notifications are collected; `None` when the target sends none (baseline).
    pub collector: Option<Arc<Collector>>,
    /// The server process, for its CPU time.
    pub server_pid: Option<u32>,
    /// Where each answer is also reported as it happens, for a sampler that reads a long step
    /// while it runs (the long run); `None` for ordinary steps.
    pub tap: Option<Arc<Tap>>,
}

/// What a [`Tap`] gathered since it was last read.
#[derive(Debug, Default)]
pub struct Window {
    /// POST latencies (from the intended send time) of the 2xx answers, ns.
    pub latencies: Vec<u64>,
    /// 2xx answers.
    pub ok: u64,
    /// Failures (non-2xx, connection error, timeout, or not sent past the step's deadline).
    pub errors: u64,
}

/// A live view of a running step: a step's own figures exist only once it ends, which for a
/// run of a million messages is too late to see memory or latency move over time.
#[derive(Debug, Default)]
pub struct Tap {
    window: std::sync::Mutex<Window>,
}

impl Tap {
    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ok(&self, ns: u64) {
        let mut w = self.lock();
        w.latencies.push(ns);
        w.ok += 1;
    }

    fn error(&self) {
        self.lock().errors += 1;
    }

    /// Takes what was gathered since the last call.
    pub fn take(&self) -> Window {
        std::mem::take(&mut *self.lock())
    }
}

/// How steps are run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Concurrent connections of the load generator (the bound on requests in flight).
    pub connections: usize,
    /// How long to wait after the last answer for notifications still on their way.
    pub drain: Duration,
    /// Timeout of one request.
    pub request_timeout: Duration,
    /// Shortest step.
    pub min_step: Duration,
    /// Longest step.
    pub max_step: Duration,
    /// Messages a step should have at least (low rates run longer, up to `max_step`).
    pub min_messages: u64,
    /// Warm-up before the first step (not reported).
    pub warmup: Duration,
}

impl Options {
    /// Duration of a step at `rate`.
    pub fn step_duration(&self, rate: u32) -> Duration {
        let want = Duration::from_secs_f64(self.min_messages as f64 / f64::from(rate.max(1)));
        want.clamp(self.min_step, self.max_step)
    }
}

/// Latency percentiles, in nanoseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Percentiles {
    /// Samples.
    pub n: usize,
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
}

impl Percentiles {
    /// Percentiles of `samples` (sorted here).
    pub fn of(samples: &mut [u64]) -> Percentiles {
        samples.sort_unstable();
        let n = samples.len();
        let at = |q: f64| -> u64 {
            if n == 0 {
                return 0;
            }
            let i = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
            samples[i]
        };
        Percentiles {
            n,
            p50: at(0.50),
            p99: at(0.99),
            p999: at(0.999),
        }
    }
}

/// What one rate step measured.
#[derive(Clone, Debug, Default)]
pub struct StepResult {
    /// Target rate, messages per second.
    pub rate: u32,
    /// Messages planned.
    pub planned: u64,
    /// Answered 2xx.
    pub ok: u64,
    /// Failed (non-2xx, connection error or timeout).
    pub errors: u64,
    /// Not sent: the step overran its deadline.
    pub skipped: u64,
    /// 2xx answers per second, from the step's start to the last answer.
    pub achieved: f64,
    /// POST latency from the intended send time.
    pub post: Percentiles,
    /// Notification receipt latency from the intended send time (`None`: not applicable).
    pub notify: Option<Percentiles>,
    /// Notifications the successful sends should have caused.
    pub notify_expected: u64,
    /// Receipts of another step (late beyond the drain wait).
    pub stray: u64,
    /// Server CPU time per successful message, microseconds.
    pub server_cpu_us: Option<f64>,
    /// Server CPU use over the step, % of one core.
    pub server_cpu_pct: Option<f64>,
    /// Load generator (this process: senders and listeners) CPU use, % of one core.
    pub gen_cpu_pct: Option<f64>,
    /// The first error seen, if any.
    pub first_error: Option<String>,
}

impl StepResult {
    /// Notifications received (matched to this step's sends).
    pub fn notify_received(&self) -> u64 {
        self.notify.map(|p| p.n as u64).unwrap_or(0)
    }

    /// Whether the step kept up: ≥ 95 % of the target rate answered, no errors, nothing
    /// skipped, and every expected notification received.
    pub fn held(&self) -> bool {
        self.achieved >= 0.95 * f64::from(self.rate)
            && self.errors == 0
            && self.skipped == 0
            && self.notify_received() >= self.notify_expected
    }

    /// Whether going higher is pointless: far below the target rate, many errors, or
    /// latencies beyond a second.
    pub fn saturated(&self) -> bool {
        self.achieved < 0.9 * f64::from(self.rate)
            || (self.errors + self.skipped) * 100 > self.planned
            || self.post.p99 > 1_000_000_000
    }
}

/// A series: steps of increasing rate against one target.
#[derive(Clone, Debug, Default)]
pub struct Series {
    /// Steps run, in order.
    pub steps: Vec<StepResult>,
    /// Why the series ended before its last rate, if it did.
    pub stopped: Option<String>,
}

impl Series {
    /// The highest target rate held with POST p99 below `p99_ns`.
    pub fn max_rate_post(&self, p99_ns: u64) -> Option<u32> {
        self.steps
            .iter()
            .filter(|s| s.held() && s.post.p99 < p99_ns)
            .map(|s| s.rate)
            .max()
    }

    /// The highest target rate held, whatever the latency.
    pub fn max_rate_held(&self) -> Option<u32> {
        self.steps.iter().filter(|s| s.held()).map(|s| s.rate).max()
    }

    /// The highest target rate held with notification p99 below `p99_ns`.
    pub fn max_rate_notify(&self, p99_ns: u64) -> Option<u32> {
        self.steps
            .iter()
            .filter(|s| s.held() && s.notify.is_some_and(|n| n.p99 < p99_ns))
            .map(|s| s.rate)
            .max()
    }

    /// The step at `rate`, if run.
    pub fn at(&self, rate: u32) -> Option<&StepResult> {
        self.steps.iter().find(|s| s.rate == rate)
    }
}

struct Job {
    seq: u64,
    intended: Instant,
}

#[derive(Default)]
struct WorkerOut {
    latencies: Vec<u64>,
    ok: u64,
    errors: u64,
    skipped: u64,
    expected: u64,
    last_done: Option<Instant>,
    first_error: Option<String>,
}

async fn worker(
    mut conn: Conn,
    jobs: Arc<Mutex<mpsc::UnboundedReceiver<Job>>>,
    make: super::load::MakeRequest,
    step: u32,
    deadline: Instant,
    timeout: Duration,
    tap: Option<Arc<Tap>>,
) -> (Conn, WorkerOut) {
    let mut out = WorkerOut::default();
    loop {
        let job = { jobs.lock().await.recv().await };
        // The queue closes after the scheduler released the step's last job.
        let Some(job) = job else { break };
        if Instant::now() > deadline {
            out.skipped += 1;
            if let Some(t) = &tap {
                t.error();
            }
            continue;
        }
        let (req, expect) = match make(step, job.seq) {
            Ok(r) => r,
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert_with(|| format!("{e:#}"));
                if let Some(t) = &tap {
                    t.error();
                }
                continue;
            }
        };
        let result = conn.send(req, timeout).await;
        let now = Instant::now();
        match result {
            Ok(r) if r.ok() => {
                let ns = now.saturating_duration_since(job.intended).as_nanos();
                let ns = u64::try_from(ns).unwrap_or(u64::MAX);
                out.latencies.push(ns);
                if let Some(t) = &tap {
                    t.ok(ns);
                }
                out.ok += 1;
                out.expected += u64::from(expect);
                out.last_done = Some(now);
            }
            Ok(r) => {
                out.errors += 1;
                if let Some(t) = &tap {
                    t.error();
                }
                out.first_error.get_or_insert_with(|| {
                    let mut t = r.text();
                    t.truncate(300);
                    format!("status {}: {t}", r.status)
                });
            }
            Err(e) => {
                out.errors += 1;
                if let Some(t) = &tap {
                    t.error();
                }
                out.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    (conn, out)
}

/// Runs one step at `rate` for `duration` with the connections of `pool` (returned to it).
pub async fn run_step(
    target: &Target,
    pool: &mut Vec<Conn>,
    opts: &Options,
    step: u32,
    rate: u32,
    duration: Duration,
) -> Result<StepResult> {
    let rate = rate.max(1);
    let planned = ((f64::from(rate) * duration.as_secs_f64()).round() as u64).max(1);
    let interval_ns = 1e9 / f64::from(rate);
    while pool.len() < opts.connections {
        pool.push(Conn::new(target.addr));
    }
    let start = Instant::now() + Duration::from_millis(20);
    let deadline = start + duration + Duration::from_secs(10);
    if let Some(c) = &target.collector {
        c.begin(step, start, interval_ns);
    }
    let server_cpu0 = target.server_pid.and_then(|p| proc::cpu_secs(Some(p)));
    let gen_cpu0 = proc::cpu_secs(None);

    let (tx, rx) = mpsc::unbounded_channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    let mut workers = Vec::new();
    for conn in pool.drain(..) {
        workers.push(tokio::spawn(worker(
            conn,
            Arc::clone(&rx),
            Arc::clone(&target.make),
            step,
            deadline,
            opts.request_timeout,
            target.tap.clone(),
        )));
    }
    // The scheduler: an OS thread, so release times are not rounded to tokio's 1 ms timer.
    let scheduler = std::thread::spawn(move || {
        for seq in 0..planned {
            let t = intended(start, seq, interval_ns);
            let now = Instant::now();
            if t > now {
                std::thread::sleep(t - now);
            }
            if tx.send(Job { seq, intended: t }).is_err() {
                break;
            }
        }
    });

    let mut result = StepResult {
        rate,
        planned,
        ..StepResult::default()
    };
    let mut latencies = Vec::with_capacity(planned as usize);
    let mut last_done = start;
    for w in workers {
        let (conn, out) = w.await?;
        pool.push(conn);
        latencies.extend(out.latencies);
        result.ok += out.ok;
        result.errors += out.errors;
        result.skipped += out.skipped;
        result.notify_expected += out.expected;
        if let Some(t) = out.last_done {
            last_done = last_done.max(t);
        }
        if result.first_error.is_none() {
            result.first_error = out.first_error;
        }
    }
    tokio::task::spawn_blocking(move || scheduler.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the scheduler thread panicked"))?;

    if let Some(c) = &target.collector {
        let until = Instant::now() + opts.drain;
        while (c.count() as u64) < result.notify_expected && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let (mut samples, stray) = c.take();
        result.notify = Some(Percentiles::of(&mut samples));
        result.stray = stray;
    }
    let wall = Instant::now()
        .saturating_duration_since(start)
        .as_secs_f64();
    let active = last_done.saturating_duration_since(start).as_secs_f64();
    result.achieved = if active > 0.0 {
        result.ok as f64 / active
    } else {
        0.0
    };
    result.post = Percentiles::of(&mut latencies);
    if let (Some(a), Some(b)) = (
        server_cpu0,
        target.server_pid.and_then(|p| proc::cpu_secs(Some(p))),
    ) {
        if result.ok > 0 {
            result.server_cpu_us = Some((b - a) * 1e6 / result.ok as f64);
        }
        if wall > 0.0 {
            result.server_cpu_pct = Some((b - a) * 100.0 / wall);
        }
    }
    if let (Some(a), Some(b)) = (gen_cpu0, proc::cpu_secs(None))
        && wall > 0.0
    {
        result.gen_cpu_pct = Some((b - a) * 100.0 / wall);
    }
    Ok(result)
}

/// Lowest rate the downward probe tries.
const PROBE_FLOOR: u32 = 5;

/// Runs a warm-up, then one step per rate until a step saturates (or `budget` runs out). When
/// even the first rate is not held, the rate is halved (down to [`PROBE_FLOOR`]) until a step
/// holds, so that a slow target still gets a sustained rate to compare at.
pub async fn run_series(
    name: &str,
    target: &Target,
    opts: &Options,
    rates: &[u32],
    budget: Option<Instant>,
) -> Result<Series> {
    let mut pool = Vec::new();
    let mut series = Series::default();
    if let Some(&first) = rates.first()
        && !opts.warmup.is_zero()
    {
        run_step(target, &mut pool, opts, 0, first, opts.warmup).await?;
    }
    let mut step = 0u32;
    for &rate in rates {
        if budget.is_some_and(|b| Instant::now() > b) {
            series.stopped = Some(format!("time budget used up before the {rate}/s step"));
            break;
        }
        step += 1;
        let r = run_step(
            target,
            &mut pool,
            opts,
            step,
            rate,
            opts.step_duration(rate),
        )
        .await?;
        println!("  {name}: {}", super::report::step_line(&r));
        let (saturated, held) = (r.saturated(), r.held());
        series.steps.push(r);
        if step == 1 && !held {
            let mut low = rate / 2;
            while low >= PROBE_FLOOR && budget.is_none_or(|b| Instant::now() < b) {
                // Let the backlog of the step before drain away first.
                tokio::time::sleep(opts.drain).await;
                step += 1;
                let r =
                    run_step(target, &mut pool, opts, step, low, opts.step_duration(low)).await?;
                println!("  {name} (probing down): {}", super::report::step_line(&r));
                let held = r.held();
                series.steps.push(r);
                if held {
                    break;
                }
                low /= 2;
            }
        }
        if saturated {
            series.stopped = Some(format!(
                "stopped after the {rate}/s step: below 90 % of the target rate, >1 % errors, or POST p99 > 1 s"
            ));
            break;
        }
    }
    series.steps.sort_by_key(|s| s.rate);
    Ok(series)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_ranks() {
        let mut v: Vec<u64> = (1..=1000).rev().collect();
        let p = Percentiles::of(&mut v);
        assert_eq!((p.n, p.p50, p.p99, p.p999), (1000, 500, 990, 999));
        assert_eq!(Percentiles::of(&mut []).n, 0);
    }
}
