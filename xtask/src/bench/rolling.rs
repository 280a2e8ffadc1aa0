//! `cargo xtask bench --rolling [--before BIN] [--smoke] [--rounds N]`: what a rolling restart of a
//! cluster's leader costs its clients (issue 14), before and after a change, in one run.
//!
//! For each build (netapi-chat as built now and, with `--before`, another build), round after
//! round, the order alternating: two instances on a fresh database of one throwaway
//! PostgreSQL cluster ([`crate::pg::Cluster`]), the first leading, the second standing by.
//! Clients send requests to the standby only, as a load balancer that has taken the stopping
//! instance out of rotation would, on [`CLIENTS`] kept-alive connections, each request as soon
//! as the last was answered (a `503` or a failed connection is retried after
//! [`RETRY_AFTER_FAILURE`], as a client honouring a short `Retry-After` would): half of them
//! read (`GET …/subscriptions`), half write (`POST …/chatSessions` with a body, the same
//! `clientCorrelator` each time, so every one after the first is answered the session it
//! started: a write the leader carries out on every request); the leader is stopped with
//! SIGTERM [`BEFORE_STOP`] into the load, which goes on [`AFTER_STOP`]. Per round: the
//! answers other than `2xx` (`503`s, failed connections), those of them to writes, and the
//! longest time no client got a `2xx`; and, as a check on the standby's forwarding path, the
//! `2xx`s per second its clients got in the second half of the load before the stop (the
//! leader serving). The table gives each figure's median and range over the rounds.
//! Writes `target/bench/rolling.md` and prints it; BENCHMARKS.md quotes it by hand.

use super::compare::write_report;
use super::http::{Conn, encode, request};
use super::proc::{AUTHORIZATION, LOG, start_netapi_chat_bin, target_dir};
use anyhow::{Result, bail};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Concurrent clients of the standby.
const CLIENTS: usize = 4;
/// Load before the leader is stopped (its second half measures the forwarding rate).
const BEFORE_STOP: Duration = Duration::from_secs(2);
/// Load after the leader is stopped: the standby takes over well within it.
const AFTER_STOP: Duration = Duration::from_secs(5);
/// How long a client waits after an answer other than `200` before it asks again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_millis(20);
/// Longest wait for one answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// What one restart cost the clients.
struct Restart {
    /// Answers other than `2xx`.
    failed: usize,
    /// Of them, answers to writes (requests with a body).
    writes: usize,
    /// Of them, failed connections (no HTTP answer).
    unanswered: usize,
    /// The longest time no client got a `2xx`, from the signal on.
    gap: Duration,
    /// `2xx`s per second in the second half of the load before the signal.
    forwarded: f64,
    /// What the answers other than `2xx` said (status and the start of the body, or the
    /// connection's error), each once: why, for the round's line.
    why: Vec<String>,
}

/// One answer a client got: when, its status (`None`: no HTTP answer), and whether it was
/// to a write; for one other than `2xx`, what it said ([`Restart::why`]).
type Seen = (Instant, Option<u16>, bool, Option<String>);

/// Whether an answer is a success.
fn ok(status: Option<u16>) -> bool {
    status.is_some_and(|s| (200..300).contains(&s))
}

/// Client `n`: asks until `until` (an even `n` reads, an odd one writes); every answer.
async fn client(addr: std::net::SocketAddr, n: usize, until: Instant) -> Vec<Seen> {
    let mut conn = Conn::new(addr);
    let write = n % 2 == 1;
    let (method, path, body) = match write {
        false => (
            http::Method::GET,
            format!(
                "/v1/chat/{}/subscriptions",
                encode("sip:rolling@example.com")
            ),
            String::new(),
        ),
        true => (
            http::Method::POST,
            format!(
                "/v1/chat/{}/chatSessions",
                encode("sip:rolling@example.com")
            ),
            format!(
                r#"{{"chatSessionInformation":{{"subject":"rolling","participant":[{{"address":"sip:peer-{n}@example.com"}}],"clientCorrelator":"rolling-{n}"}}}}"#
            ),
        ),
    };
    let headers = [
        ("authorization", AUTHORIZATION),
        ("content-type", "application/json"),
    ];
    let headers = if write { &headers[..] } else { &headers[..1] };
    let mut seen = Vec::new();
    while Instant::now() < until {
        let (answer, said) = match request(
            method.clone(),
            &path,
            headers,
            bytes::Bytes::from(body.clone()),
        ) {
            Ok(req) => match conn.send(req, ANSWER_WITHIN).await {
                Ok(r) => {
                    let said = (!ok(Some(r.status))).then(|| {
                        let text = String::from_utf8_lossy(&r.body);
                        format!(
                            "{} {}",
                            r.status,
                            text.chars().take(200).collect::<String>()
                        )
                    });
                    (Some(r.status), said)
                }
                Err(e) => (None, Some(format!("no answer: {e:#}"))),
            },
            Err(e) => (None, Some(format!("no request: {e:#}"))),
        };
        seen.push((Instant::now(), answer, write, said));
        if !ok(answer) {
            tokio::time::sleep(RETRY_AFTER_FAILURE).await;
        }
    }
    seen
}

/// One round with `bin` on database `url`: the restart's cost.
async fn round(root: &Path, bin: &Path, label: &str, url: &str) -> Result<Restart> {
    let env = [
        ("NETAPI_CHAT_DATABASE_URL", url),
        ("NETAPI_CHAT_CLUSTER_URL", "auto"),
    ];
    let mut leader = start_netapi_chat_bin(root, bin, &format!("rolling-{label}-a"), &env)?;
    let standby = start_netapi_chat_bin(root, bin, &format!("rolling-{label}-b"), &env)?;
    let addr = standby.server.addr;
    let steady = Instant::now() + BEFORE_STOP / 2;
    let end = Instant::now() + BEFORE_STOP + AFTER_STOP;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| tokio::spawn(client(addr, n, end)))
        .collect();
    tokio::time::sleep(BEFORE_STOP).await;
    let signal = Instant::now();
    let pid = leader.server.pid().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()?;
    if !sent.success() {
        bail!("kill -TERM {pid}");
    }
    let mut answers = Vec::new();
    for c in clients {
        answers.extend(c.await?);
    }
    if leader.server.running() {
        bail!("the leader ({label}) did not stop within {AFTER_STOP:?} of SIGTERM");
    }
    answers.sort_by_key(|(at, _, _, _)| *at);
    let forwarded = answers
        .iter()
        .filter(|(at, a, _, _)| *at >= steady && *at < signal && ok(*a))
        .count() as f64
        / signal.duration_since(steady).as_secs_f64();
    let after: Vec<_> = answers
        .iter()
        .filter(|(at, _, _, _)| *at >= signal)
        .collect();
    let failed = after.iter().filter(|(_, a, _, _)| !ok(*a)).count();
    let writes = after.iter().filter(|(_, a, w, _)| *w && !ok(*a)).count();
    let unanswered = after.iter().filter(|(_, a, _, _)| a.is_none()).count();
    let mut why: Vec<String> = Vec::new();
    for said in after.iter().filter_map(|(_, _, _, s)| s.as_ref()) {
        if !why.contains(said) {
            why.push(said.clone());
        }
    }
    // What the standby logged about its forwards failing: the cause behind a `503`.
    if failed > 0 {
        let log = std::fs::read_to_string(standby.data_dir.join(LOG)).unwrap_or_default();
        why.extend(
            log.lines()
                .filter(|l| l.contains("forwarding to the leader"))
                .take(3)
                .map(|l| format!("standby: {l}")),
        );
    }
    let mut last_ok = signal;
    let mut gap = Duration::ZERO;
    for (at, a, _, _) in &after {
        if ok(*a) {
            gap = gap.max(at.duration_since(last_ok));
            last_ok = *at;
        }
    }
    if last_ok == signal && !after.is_empty() {
        bail!("the standby ({label}) never answered 2xx after the leader's SIGTERM");
    }
    Ok(Restart {
        failed,
        writes,
        unanswered,
        gap,
        forwarded,
        why,
    })
}

/// `median (min–max)` of `xs`.
fn spread(mut xs: Vec<f64>, decimals: usize) -> String {
    xs.sort_by(f64::total_cmp);
    match (xs.first(), xs.last()) {
        (Some(lo), Some(hi)) => format!(
            "{:.*} ({lo:.decimals$}–{hi:.decimals$})",
            decimals,
            xs[xs.len() / 2]
        ),
        _ => "–".to_owned(),
    }
}

/// Runs the phase and returns its report (markdown).
pub async fn run(
    root: &Path,
    before: Option<PathBuf>,
    smoke: bool,
    rounds: Option<usize>,
    command: &str,
) -> Result<String> {
    let cluster = crate::pg::Cluster::start_with(!smoke)?;
    let mut builds = vec![("now", target_dir(root).join("release/netapi-chat"))];
    if let Some(b) = before {
        builds.push(("before", b));
    }
    let rounds = rounds.unwrap_or(if smoke { 1 } else { 5 });
    let mut results: Vec<Vec<Restart>> = builds.iter().map(|_| Vec::new()).collect();
    for r in 0..rounds {
        for k in 0..builds.len() {
            // Alternating which build goes first, so that neither always meets a cold machine.
            let i = (k + r) % builds.len();
            let (name, bin) = &builds[i];
            let url = cluster.database(&format!("netapi_chat_rolling_{name}_{r}"))?;
            let done = round(root, bin, name, &url).await?;
            println!(
                "  {name:<7} round {r}: {} answers other than 2xx ({} to writes, {} without an answer), longest without a 2xx {:.0} ms; {:.0} 2xx/s before the stop",
                done.failed,
                done.writes,
                done.unanswered,
                done.gap.as_secs_f64() * 1e3,
                done.forwarded
            );
            for said in &done.why {
                println!("    said: {said}");
            }
            results[i].push(done);
        }
    }
    let mut md = format!(
        "`{command}`: two instances on one PostgreSQL, {CLIENTS} clients of the standby; the \
         leader stopped with SIGTERM; per build, median (min–max) over {rounds} round(s).\n\n\
         | build | answers other than 2xx | of them to writes | of them without an answer | longest without a 2xx, ms | 2xx/s through the standby before the stop |\n\
         |---|--:|--:|--:|--:|--:|\n"
    );
    for ((name, _), runs) in builds.iter().zip(&results) {
        let _ = writeln!(
            md,
            "| {name} | {} | {} | {} | {} | {} |",
            spread(runs.iter().map(|r| r.failed as f64).collect(), 0),
            spread(runs.iter().map(|r| r.writes as f64).collect(), 0),
            spread(runs.iter().map(|r| r.unanswered as f64).collect(), 0),
            spread(runs.iter().map(|r| r.gap.as_secs_f64() * 1e3).collect(), 0),
            spread(runs.iter().map(|r| r.forwarded).collect(), 0),
        );
    }
    write_report(root, "rolling.md", &md)?;
    Ok(md)
}
