//! Restart time against stored history (issue 12 item 3: "answering requests within 1 s of
//! start with 10 million stored messages").
//!
//! `cargo bench --bench restart` (or `RESTART_BENCH_MESSAGES=10000000 cargo bench --bench
//! restart`) prints a markdown table. The run:
//!
//! 1. starts the release server on a fresh data directory and opens `SESSIONS` 1-1 sessions
//!    through the API (each accepted, one real message sent in each), then kills it (SIGKILL);
//! 2. times a restart on that directory (the "no history" row);
//! 3. adds stored messages straight through the server's own store backend (`Sqlite`, the
//!    format the server writes, so no schema is written down twice), spread over the open
//!    sessions, each a copy of the real message stored in step 1 under its own id and seq, in
//!    transactions of 50,000 rows, up to each of the row counts in `RESTART_BENCH_STEPS`;
//! 4. after each step, kills nothing (the server is stopped while rows are added), restarts the
//!    server on the directory and times spawn → "listening" line, spawn → first 2xx
//!    (`GET …/subscriptions`) and spawn → first page of messages of a session holding
//!    a share of the history (a read of the big table), plus the RSS right after.
//!
//! Copies share their text, so the data directory is a little smaller than real history of the
//! same count (the index sizes, which are what a restart could depend on, are the same).
//! Rows added by the bench have seqs above the server's counters: the bench reads pages, it
//! sends nothing after adding them.

#[path = "../tests/support/mod.rs"]
mod support;

use netapi_chat::store::sqlite::{Sqlite, Sync};
use netapi_chat::store::{Backend, Batch, MessageRow};
use std::time::{Duration, Instant};
use support::{Server, enc, send, temp_data_dir};

/// Open sessions holding the history.
const SESSIONS: usize = 20;
/// Rows per transaction while adding history.
const CHUNK: u64 = 50_000;

fn json(body: serde_json::Value) -> String {
    body.to_string()
}

fn user(i: usize) -> String {
    format!("tel:+1555{i:07}")
}

/// Opens `SESSIONS` accepted 1-1 sessions with one message each; returns their ids and the
/// (session, sender) of each.
async fn open_sessions(s: &Server) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for i in 0..SESSIONS {
        let (a, b) = (user(2 * i), user(2 * i + 1));
        let r = send(
            "POST",
            &s.url(&a, "/chatSessions"),
            &[("content-type", "application/json")],
            Some(&json(serde_json::json!({"chatSessionInformation": {
                "subject": "restart bench",
                "participant": [{"address": b}],
            }}))),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.body);
        let sid = r
            .header("location")
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_owned();
        let r = send(
            "POST",
            &s.url(
                &b,
                &format!("/chatSessions/{sid}/participants/{}/status", enc(&b)),
            ),
            &[("content-type", "application/json")],
            Some(r#"{"participantSessionStatus":{"status":"Connected"}}"#),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let r = send(
            "POST",
            &s.url(&a, &format!("/chatSessions/{sid}/messages")),
            &[("content-type", "application/json")],
            Some(r#"{"chatMessage":{"text":"a message of about the length of a short chat line, 120 characters, as the long run sends them."}}"#),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.body);
        out.push((sid, a));
    }
    out
}

/// Resident set size of a process, in MiB.
fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn dir_mib(dir: &std::path::Path) -> f64 {
    let bytes: u64 = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    bytes as f64 / (1024.0 * 1024.0)
}

/// One restart: (listening, first 2xx, first message page, RSS after).
async fn restart(
    dir: &std::path::Path,
    probe: &(String, String),
) -> (Duration, Duration, Duration, f64) {
    let t0 = Instant::now();
    let s = Server::start_in(dir, &[], None);
    let listening = t0.elapsed();
    let subs = s.url(&probe.1, "/subscriptions");
    let first = loop {
        let r = send("GET", &subs, &[("accept", "application/json")], None).await;
        if r.status == 200 {
            break t0.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let page = send(
        "GET",
        &s.url(&probe.1, &format!("/chatSessions/{}/messages", probe.0)),
        &[("accept", "application/json")],
        None,
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.body);
    let paged = t0.elapsed();
    let rss = rss_mib(s.pid());
    s.kill();
    (listening, first, paged, rss)
}

fn main() {
    let total: u64 = std::env::var("RESTART_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let steps: Vec<u64> = std::env::var("RESTART_BENCH_STEPS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![total / 10, total])
        .into_iter()
        .filter(|n| *n <= total)
        .collect();
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let dir = temp_data_dir();
    let sessions = {
        let s = Server::start_in(&dir, &[], None);
        let out = rt.block_on(open_sessions(&s));
        s.kill();
        out
    };
    println!(
        "| stored messages | data directory MiB | start → listening | start → first 2xx | start → first message page | RSS after start MiB |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    let report = |n: u64, r: (Duration, Duration, Duration, f64)| {
        println!(
            "| {n} | {:.0} | {:.0} ms | **{:.0} ms** | {:.0} ms | {:.1} |",
            dir_mib(&dir),
            r.0.as_secs_f64() * 1e3,
            r.1.as_secs_f64() * 1e3,
            r.2.as_secs_f64() * 1e3,
            r.3
        );
    };
    report(SESSIONS as u64, rt.block_on(restart(&dir, &sessions[0])));

    // The template: the real message of each session, as the server stored it.
    let mut backend = Sqlite::open(&dir, Sync::Normal).expect("open store");
    backend.load().expect("load");
    let templates: Vec<Vec<u8>> = sessions
        .iter()
        .map(|(sid, _)| {
            backend
                .messages_after(sid, None, 1)
                .expect("read")
                .into_iter()
                .next()
                .expect("a stored message")
                .1
        })
        .collect();
    drop(backend);

    let now = netapi_chat::store::now_ms();
    let mut stored = SESSIONS as u64;
    let base_seq = 1_000_000_000_000u64;
    for step in steps {
        let mut backend = Sqlite::open(&dir, Sync::Normal).expect("open store");
        let fill = Instant::now();
        let added = step.saturating_sub(stored);
        while stored < step {
            let n = CHUNK.min(step - stored);
            let mut batch = Batch::default();
            for k in stored..stored + n {
                let i = usize::try_from(k % SESSIONS as u64).unwrap_or(0);
                let (sid, sender) = &sessions[i];
                batch.messages.push(MessageRow {
                    session: sid.clone(),
                    seq: base_seq + k,
                    id: format!("bench-{k}"),
                    sender: sender.clone(),
                    correlator: None,
                    value: templates[i].clone(),
                    // Now: a restart right after must not purge them (30 days by default).
                    sent_ms: Some(now),
                });
            }
            backend.commit(&[&batch]).expect("commit");
            stored += n;
        }
        drop(backend);
        eprintln!(
            "restart bench: added {added} rows in {:.1} s",
            fill.elapsed().as_secs_f64()
        );
        report(stored, rt.block_on(restart(&dir, &sessions[0])));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
