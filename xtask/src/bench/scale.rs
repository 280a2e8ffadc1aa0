//! Scale: resident memory of netapi-chat idle, with many open sessions, and per stored
//! message; and the message-send latency of a small workload with few sessions vs with many.

use super::chat::{Format, Plan, chat_target, open_session, path, post_json};
use super::http::Conn;
use super::listen::message_text;
use super::load::{Options, StepResult, run_step};
use super::proc::{NetapiChat, Server, dir_bytes, rss_kib};
use anyhow::Result;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// What the scale phase does.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Open-session counts at which memory is read (increasing); latency is measured again at
    /// the last.
    pub points: Vec<usize>,
    /// The small workload whose latency is measured (its sessions are the "few sessions").
    pub plan: Plan,
    /// Rate of the latency steps.
    pub rate: u32,
    /// Length of each latency step.
    pub step: Duration,
    /// Messages stored for the per-message figure.
    pub messages: usize,
    /// Connections used to create sessions and store messages (closed loop).
    pub connections: usize,
}

/// RSS after opening a number of sessions.
#[derive(Clone, Debug)]
pub struct Point {
    /// Open sessions (created and accepted) beyond the small workload's.
    pub sessions: usize,
    /// Server RSS, KiB.
    pub rss_kib: u64,
    /// Size of the data directory, bytes.
    pub disk_bytes: u64,
    /// Seconds it took to get here from the previous point.
    pub secs: f64,
}

/// What the scale phase measured.
#[derive(Clone, Debug, Default)]
pub struct ScaleResult {
    /// RSS right after start-up, KiB.
    pub idle_kib: u64,
    /// RSS with the small workload set up (and its first step run), KiB.
    pub before_bulk_kib: u64,
    /// Data directory size then, bytes.
    pub before_bulk_disk: u64,
    /// RSS at each point.
    pub points: Vec<Point>,
    /// Sessions of the small workload.
    pub few_sessions: usize,
    /// Users of the small workload.
    pub few_users: usize,
    /// Characters of text per message.
    pub text_len: usize,
    /// The latency step with only the small workload's sessions.
    pub few: StepResult,
    /// The same step with the last point's sessions open too.
    pub many: StepResult,
    /// Messages stored for the per-message figure.
    pub messages: usize,
    /// RSS before storing them, KiB.
    pub rss_before_messages: u64,
    /// RSS after, KiB.
    pub rss_after_messages: u64,
    /// Data directory size before storing them, bytes.
    pub disk_before_messages: u64,
    /// And after.
    pub disk_after_messages: u64,
    /// Failed API calls while opening sessions or storing messages.
    pub bulk_errors: u64,
    /// The first such failure.
    pub first_error: Option<String>,
}

fn bulk_originator(i: usize) -> String {
    format!("tel:+1666{i:07}")
}

fn bulk_invitee(i: usize) -> String {
    format!("tel:+1777{i:07}")
}

/// Runs `work(conn, i)` for every `i` in `range` on `connections` concurrent connections;
/// returns the successes (with their index) and the failures.
async fn closed_loop<F, Fut, T>(
    server: &Server,
    connections: usize,
    range: std::ops::Range<usize>,
    work: F,
) -> (Vec<(usize, T)>, u64, Option<String>)
where
    F: Fn(Conn, usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = (Conn, Result<T>)> + Send,
    T: Send + 'static,
{
    let next = Arc::new(AtomicUsize::new(range.start));
    let end = range.end;
    let mut tasks = Vec::new();
    for _ in 0..connections.max(1) {
        let next = Arc::clone(&next);
        let work = work.clone();
        let mut conn = Conn::new(server.addr);
        tasks.push(tokio::spawn(async move {
            let mut done = Vec::new();
            let mut errors = 0u64;
            let mut first = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    break;
                }
                let (c, r) = work(conn, i).await;
                conn = c;
                match r {
                    Ok(v) => done.push((i, v)),
                    Err(e) => {
                        errors += 1;
                        first.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            (done, errors, first)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    let mut first = None;
    for t in tasks {
        match t.await {
            Ok((d, e, f)) => {
                all.extend(d);
                errors += e;
                if first.is_none() {
                    first = f;
                }
            }
            Err(e) => {
                errors += 1;
                first.get_or_insert_with(|| format!("worker failed: {e}"));
            }
        }
    }
    (all, errors, first)
}

/// Runs the scale phase on a fresh server.
pub async fn run(
    chat: &NetapiChat,
    settings: &Settings,
    opts: &Options,
    text_len: usize,
) -> Result<ScaleResult> {
    let server = &chat.server;
    let disk = || dir_bytes(&chat.data_dir);
    let pid = server.pid();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut out = ScaleResult {
        idle_kib: rss_kib(pid)?,
        few_sessions: settings.plan.session_count(),
        few_users: settings.plan.users(),
        text_len,
        messages: settings.messages,
        ..ScaleResult::default()
    };

    let (_workload, target) = chat_target(
        server.addr,
        &settings.plan,
        Format::Json,
        text_len,
        pid,
        &[],
        None,
    )
    .await?;
    let mut pool = Vec::new();
    run_step(&target, &mut pool, opts, 100, settings.rate, opts.warmup).await?;
    out.few = run_step(&target, &mut pool, opts, 101, settings.rate, settings.step).await?;
    println!(
        "  scale: {} sessions: {}",
        out.few_sessions,
        super::report::step_line(&out.few)
    );
    out.before_bulk_kib = rss_kib(pid)?;
    out.before_bulk_disk = disk();

    let mut sids: Vec<String> = Vec::new();
    let mut opened = 0usize;
    for &point in &settings.points {
        let t0 = Instant::now();
        let (mut done, errors, first) = closed_loop(
            server,
            settings.connections,
            opened..point,
            |mut conn, i| async move {
                let r = open_session(&mut conn, &[bulk_originator(i), bulk_invitee(i)]).await;
                (conn, r)
            },
        )
        .await;
        done.sort_by_key(|(i, _)| *i);
        sids.extend(done.into_iter().map(|(_, s)| s));
        out.bulk_errors += errors;
        if out.first_error.is_none() {
            out.first_error = first;
        }
        opened = point;
        let p = Point {
            sessions: point,
            rss_kib: rss_kib(pid)?,
            disk_bytes: disk(),
            secs: t0.elapsed().as_secs_f64(),
        };
        println!(
            "  scale: {} open sessions: RSS {} KiB, data {} bytes ({:.1} s)",
            p.sessions, p.rss_kib, p.disk_bytes, p.secs
        );
        out.points.push(p);
    }

    run_step(&target, &mut pool, opts, 102, settings.rate, opts.warmup).await?;
    out.many = run_step(&target, &mut pool, opts, 103, settings.rate, settings.step).await?;
    println!(
        "  scale: {} + {} sessions: {}",
        out.few_sessions,
        opened,
        super::report::step_line(&out.many)
    );

    // Messages in the bulk sessions, whose users have no subscriptions: stored, not notified.
    let sids = Arc::new(sids);
    out.rss_before_messages = rss_kib(pid)?;
    out.disk_before_messages = disk();
    if !sids.is_empty() {
        let (_, errors, first) = closed_loop(
            server,
            settings.connections,
            0..settings.messages,
            move |mut conn, i| {
                let sids = Arc::clone(&sids);
                async move {
                    let k = i % sids.len();
                    let p = path(
                        &bulk_originator(k),
                        &format!("/chatSessions/{}/messages", sids[k]),
                    );
                    let body = Format::Json.chat_message(&message_text(9999, i as u64, text_len));
                    let r = post_json(&mut conn, &p, body).await.map(|_| ());
                    (conn, r)
                }
            },
        )
        .await;
        out.bulk_errors += errors;
        if out.first_error.is_none() {
            out.first_error = first;
        }
    }
    out.rss_after_messages = rss_kib(pid)?;
    out.disk_after_messages = disk();
    println!(
        "  scale: {} stored messages: RSS {} → {} KiB",
        out.messages, out.rss_before_messages, out.rss_after_messages
    );
    Ok(out)
}
