//! `cargo xtask bench --dead-receivers [--smoke]`: healthy receivers' POST → notification
//! latency with dead receivers in the mix (issue 13, the bench bullet of its tests).
//!
//! Five netapi-chat servers in one run, each with the message-send workload of the full bench
//! (every user with its own healthy callback listener, JSON): one with nothing else ("none");
//! one with [`Settings::dead`] more users in the group sessions whose receivers are healthy but
//! not measured ("healthy", the control: the same extra notifications to store and send, none
//! of them failing); and three with as many users whose `notifyURL` is dead, one kind per
//! server:
//!
//! - **refused**: a loopback port nothing listens on (the connection is refused at once);
//! - **500**: a listener that answers every notification `500`;
//! - **blackhole**: a listener that accepts connections and never answers (each attempt waits
//!   for the server's attempt timeout).
//!
//! Dead users never send, so the four servers get the same messages and their healthy
//! listeners the same notifications; only the dead receivers' share differs. Steps at fixed
//! rates go to the servers in turn, round after round, the order rotating each round, so that
//! whatever else the machine does weighs on all of them alike. Per server and rate: the
//! medians over the rounds of the healthy receivers' notification p50 / p99 / p99.9 (from the
//! message's intended send time), POST p99, server CPU per message, and at the end the
//! server's durable backlog and failed attempts (from `/metrics`), which show the dead
//! receivers were dead. Nothing is asserted: benchmarks are not tests.

use super::compare::{ChatSide, Run, Steps, cell, write_report};
use super::load::{StepResult, run_step};
use super::median;
use anyhow::Result;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::Path;

/// The token that opens `/metrics` on the servers of this phase.
const METRICS_TOKEN: &str = "bench-dead-receivers-metrics-token-0123456789";

/// Most connections a blackhole holds open (older ones are closed: the server then sees a
/// closed connection instead of a timeout, once it has more than this many attempts waiting,
/// which the one-attempt-per-subscription rule keeps far off).
const BLACKHOLE_HOLDS: usize = 256;

/// The longest gap between two attempts of a failing callback on every server of the phase
/// (`NETAPI_CHAT_DELIVERY_MAX_BACKOFF`): the dead receivers are probed every 1–1.2 s rather
/// than every 5 minutes (the default), so the phase is the harsher case.
const MAX_BACKOFF: &str = "1s";

/// The phase's own section of BENCHMARKS.md starts after this line.
pub const START: &str = "<!-- bench:dead:start (written by `cargo xtask bench --dead-receivers`; edits here are overwritten) -->";
/// And ends before this one.
pub const END: &str = "<!-- bench:dead:end -->";

/// What the phase does.
pub struct Settings {
    /// Rates, step length, rounds (over every rate and server), the healthy workload.
    pub steps: Steps,
    /// Dead receivers per server (but the first).
    pub dead: usize,
}

/// How the extra receivers of one server are dead (or not, for the control).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// None: the healthy workload alone.
    None,
    /// Extra receivers that answer 204 at once (not measured): the control.
    Healthy,
    /// Connection refused.
    Refused,
    /// Answers 500.
    Failing,
    /// Accepts, never answers.
    Blackhole,
}

impl Kind {
    const ALL: [Kind; 5] = [
        Kind::None,
        Kind::Healthy,
        Kind::Refused,
        Kind::Failing,
        Kind::Blackhole,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::None => "none",
            Kind::Healthy => "healthy",
            Kind::Refused => "refused",
            Kind::Failing => "500",
            Kind::Blackhole => "blackhole",
        }
    }
}

/// What keeps one server's dead receivers dead for the phase (stopped on drop).
#[derive(Default)]
struct Keep {
    _listeners: Vec<netapi_chat_webhooks::listen::Listener>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Keep {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// `n` dead `notifyURL`s of `kind`, each its own endpoint.
async fn dead_receivers(kind: Kind, n: usize) -> Result<(Vec<String>, Keep)> {
    match kind {
        Kind::None => Ok((Vec::new(), Keep::default())),
        Kind::Refused => {
            // A port bound and let go: nothing listens on it for the phase (the kernel hands
            // out ephemeral ports in turn, so it is not given to another socket soon).
            let mut urls = Vec::new();
            for _ in 0..n {
                let port = std::net::TcpListener::bind("127.0.0.1:0")?
                    .local_addr()?
                    .port();
                urls.push(format!("http://127.0.0.1:{port}/"));
            }
            Ok((urls, Keep::default()))
        }
        Kind::Healthy | Kind::Failing => {
            use netapi_chat_webhooks::listen::{Listener, Options};
            let mut urls = Vec::new();
            let mut keep = Vec::new();
            for _ in 0..n {
                let l = Listener::start(
                    "127.0.0.1:0",
                    Options {
                        keep: 0,
                        ..Options::default()
                    },
                )
                .await?;
                if kind == Kind::Failing {
                    l.set_status(500);
                }
                urls.push(l.url());
                keep.push(l);
            }
            Ok((
                urls,
                Keep {
                    _listeners: keep,
                    tasks: Vec::new(),
                },
            ))
        }
        Kind::Blackhole => {
            let mut urls = Vec::new();
            let mut tasks = Vec::new();
            for _ in 0..n {
                let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                urls.push(format!("http://{}/", socket.local_addr()?));
                tasks.push(tokio::spawn(async move {
                    let mut held = VecDeque::new();
                    while let Ok((stream, _)) = socket.accept().await {
                        if held.len() == BLACKHOLE_HOLDS {
                            held.pop_front();
                        }
                        held.push_back(stream);
                    }
                }));
            }
            Ok((
                urls,
                Keep {
                    _listeners: Vec::new(),
                    tasks,
                },
            ))
        }
    }
}

/// One server measured.
struct Side {
    kind: Kind,
    side: ChatSide,
    _dead: Keep,
    /// Per rate: the steps.
    steps: Vec<Vec<StepResult>>,
}

/// The sum of the `/metrics` lines starting with `prefix` ([`super::metric`]).
fn metric(addr: std::net::SocketAddr, prefix: &str) -> Option<f64> {
    super::metric(addr, METRICS_TOKEN, prefix)
}

async fn side(root: &Path, s: &Settings, kind: Kind) -> Result<Side> {
    let env = [
        ("NETAPI_CHAT_METRICS_TOKEN", METRICS_TOKEN),
        ("NETAPI_CHAT_DELIVERY_MAX_BACKOFF", MAX_BACKOFF),
    ];
    let n = if kind == Kind::None { 0 } else { s.dead };
    let (urls, dead) = dead_receivers(kind, n).await?;
    let label = format!("dead-{}", kind.name());
    let side = ChatSide::start(root, &s.steps, &label, None, &env, &urls).await?;
    Ok(Side {
        kind,
        side,
        _dead: dead,
        steps: vec![Vec::new(); s.steps.rates.len()],
    })
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// Runs the phase and returns its section (markdown); also writes it to
/// `target/bench/dead-receivers.md`.
pub async fn run(root: &Path, s: &Settings, command: &str) -> Result<String> {
    let run = Run::start(root);
    let st = &s.steps;
    let mut sides = Vec::new();
    for kind in Kind::ALL {
        sides.push(side(root, s, kind).await?);
    }
    // A warm-up step each, so that connections and caches are up before anything counts.
    super::warm_up(
        sides.iter_mut().map(|s| (&s.side.target, &mut s.side.pool)),
        &st.opts,
        500,
        st.rates[0],
    )
    .await?;
    for (round, r, i, step) in super::rotation(sides.len(), st.rounds, st.rates.len(), 500) {
        let side = &mut sides[i];
        let res = run_step(
            &side.side.target,
            &mut side.side.pool,
            &st.opts,
            step,
            st.rates[r],
            st.step,
        )
        .await?;
        println!(
            "  dead receivers: {} round {}: {}",
            side.kind.name(),
            round + 1,
            super::report::step_line(&res)
        );
        side.steps[r].push(res);
    }
    let mut ends = Vec::new();
    for side in sides.iter_mut() {
        let name = format!("{} dead receivers", side.kind.name());
        side.side.check_running(&name, "dead-receivers")?;
        let addr = side.side.target.addr;
        ends.push((
            metric(addr, "netapi_chat_notifications_undelivered"),
            metric(
                addr,
                "netapi_chat_notification_attempts_total{outcome=\"failed\"",
            ),
        ));
    }
    let mut md = run.header(command);
    let _ = writeln!(
        md,
        "Workload: {}, JSON, each user with its own healthy callback listener; on four of the five servers {} more users (each its own endpoint) sit in the group sessions and receive but never send: with receivers that answer 204 and are not measured (the control: the same extra notifications to store and send), or with a dead `notifyURL`. Every server gets the same messages and the measured listeners the same notifications. Every server: default settings but `NETAPI_CHAT_DELIVERY_MAX_BACKOFF={MAX_BACKOFF}` (dead receivers probed every 1–1.2 s) and metrics on. {} rounds of {:.0} s steps per rate and server, in rotating order; each figure is the median over the rounds. Notification latency is the healthy listeners' only, from each message's intended send time.\n",
        st.plan.describe(),
        s.dead,
        st.rounds,
        st.step.as_secs_f64()
    );
    let _ = writeln!(
        md,
        "| msg/s | extra receivers | achieved msg/s | healthy notification p50 / p99 / p99.9 ms | p99 vs none / vs control | p99 of each round ms | notifications received / expected | POST p99 ms | server CPU µs/msg |\n|---:|---|---:|---|---:|---|---:|---:|---:|"
    );
    for (r, rate) in st.rates.iter().enumerate() {
        let med = |side: &Side, f: &dyn Fn(&StepResult) -> Option<f64>| {
            median(side.steps[r].iter().filter_map(f).collect())
        };
        let p99 = |x: &StepResult| x.notify.map(|p| ms(p.p99));
        let none_p99 = med(&sides[0], &p99);
        let control_p99 = med(&sides[1], &p99);
        for side in &sides {
            let received: u64 = side.steps[r].iter().map(StepResult::notify_received).sum();
            let expected: u64 = side.steps[r].iter().map(|x| x.notify_expected).sum();
            let this_p99 = med(side, &p99);
            let times = |base: Option<f64>| match (this_p99, base) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
                _ => "–".into(),
            };
            let ratio = match side.kind {
                Kind::None => "–".to_owned(),
                Kind::Healthy => format!("{} / –", times(none_p99)),
                _ => format!("{} / {}", times(none_p99), times(control_p99)),
            };
            let rounds: Vec<String> = side.steps[r].iter().map(|x| cell(p99(x), 1)).collect();
            let _ = writeln!(
                md,
                "| {rate} | {} | {} | {} / {} / {} | {ratio} | {} | {received} / {expected} | {} | {} |",
                match side.kind {
                    Kind::None => "none".to_owned(),
                    Kind::Healthy => format!("{} × healthy (control)", s.dead),
                    k => format!("{} × {}", s.dead, k.name()),
                },
                cell(med(side, &|x| Some(x.achieved)), 0),
                cell(med(side, &|x| x.notify.map(|p| ms(p.p50))), 2),
                cell(this_p99, 2),
                cell(med(side, &|x| x.notify.map(|p| ms(p.p999))), 2),
                rounds.join(", "),
                cell(med(side, &|x| Some(ms(x.post.p99))), 2),
                cell(med(side, &|x| x.server_cpu_us), 1),
            );
        }
    }
    let _ = writeln!(
        md,
        "\nAt the end of the run (from `/metrics`), per server: the durable backlog (`netapi_chat_notifications_undelivered`) and the failed attempts (`netapi_chat_notification_attempts_total{{outcome=\"failed\"}}`), which show the dead receivers were dead and their notifications queued:\n"
    );
    for (side, (backlog, failed)) in sides.iter().zip(&ends) {
        let _ = writeln!(
            md,
            "- {}: backlog {}, failed attempts {}",
            side.kind.name(),
            cell(*backlog, 0),
            cell(*failed, 0)
        );
    }
    write_report(root, "dead-receivers.md", &md)?;
    Ok(md)
}
