//! One instance on PostgreSQL vs SQLite (`cargo xtask bench --postgres [--smoke]`, issue 14):
//! two netapi-chat servers with the same workload, one on SQLite in its data directory and one
//! on a throwaway PostgreSQL cluster on this machine ([`crate::pg::Cluster`], over its unix
//! socket, default durability: `fsync` on except in the smoke run), measured in alternating
//! steps at a few fixed rates (as the XML cost phase does), so that whatever else the machine
//! does weighs on both alike. Reported per step: POST p50/p99, netapi-chat's CPU per message,
//! and the database server's CPU per message (the cluster's processes: on SQLite that work is
//! inside netapi-chat). Written to `target/bench/BENCHMARKS.postgres.md`; nothing is asserted.
//!
//! Two instances on one database (issue 14): the PostgreSQL server runs as a cluster's leader
//! (`NETAPI_CHAT_CLUSTER_URL=auto`) and a second instance stands by on the same database; a
//! third side sends its workload to the standby, which forwards every request to the leader.
//! Its rows give the leader's CPU per message and the standby's beside it (the cost a second
//! machine would carry per request), at the same rates, alternating with the others.

use super::chat::{Format, Plan, Workload, chat_target};
use super::load::{Options, StepResult, Target, run_step};
use super::proc::{NetapiChat, cpu_secs, start_netapi_chat};
use anyhow::{Result, bail};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

/// What the phase does.
pub struct Settings {
    /// Fixed rates, msg/s.
    pub rates: Vec<u32>,
    /// Length of each step.
    pub step: Duration,
    /// Steps per backend and rate.
    pub rounds: usize,
}

struct Side {
    name: &'static str,
    /// The instance the workload goes to.
    chat: NetapiChat,
    /// Whether `chat` is a standby (forwarding to the PostgreSQL side's leader, whose CPU is
    /// then the side's netapi-chat CPU).
    standby: bool,
    _workload: Workload,
    target: Target,
    pool: Vec<super::http::Conn>,
}

async fn side(
    root: &Path,
    plan: &Plan,
    name: &'static str,
    env: &[(&str, &str)],
    text_len: usize,
) -> Result<Side> {
    let chat = start_netapi_chat(root, &format!("backend-{name}"), env)?;
    let pid = chat.server.pid();
    side_through(plan, name, chat, pid, text_len).await
}

/// A side whose workload goes to `chat`; the netapi-chat CPU per message reported is
/// `decider`'s (`chat` itself, or the leader a standby forwards to).
async fn side_through(
    plan: &Plan,
    name: &'static str,
    chat: NetapiChat,
    decider: u32,
    text_len: usize,
) -> Result<Side> {
    let addr = chat.server.addr;
    let standby = decider != chat.server.pid();
    let (workload, target) = chat_target(addr, plan, Format::Json, text_len, decider, &[]).await?;
    Ok(Side {
        name,
        chat,
        standby,
        _workload: workload,
        target,
        pool: Vec::new(),
    })
}

/// CPU seconds used so far by the database cluster: its postmaster and every process it
/// started (connection backends, WAL writer, checkpointer, …).
fn cluster_cpu(postmaster: u32) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            *pid == postmaster
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|s| {
                        let rest = &s[s.rfind(')')? + 2..];
                        rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                    })
                    == Some(postmaster)
        })
        .filter_map(|pid| cpu_secs(Some(pid)))
        .sum()
}

/// Runs the phase; the Markdown section.
pub async fn run(
    root: &Path,
    plan: &Plan,
    settings: &Settings,
    opts: &Options,
    text_len: usize,
    smoke: bool,
) -> Result<String> {
    let cluster = crate::pg::Cluster::start_with(!smoke)?;
    let postmaster = cluster
        .postmaster_pid()
        .ok_or_else(|| anyhow::anyhow!("no postmaster.pid in the test cluster"))?;
    let url = cluster.url.clone();
    let on_postgres = [
        ("NETAPI_CHAT_DATABASE_URL", url.as_str()),
        ("NETAPI_CHAT_CLUSTER_URL", "auto"),
    ];
    let leader = side(root, plan, "PostgreSQL", &on_postgres, text_len).await?;
    let leader_pid = leader.chat.server.pid();
    // A second instance on the same database: it stands by and forwards to the leader.
    let standby = start_netapi_chat(root, "backend-standby", &on_postgres)?;
    let mut sides = [
        side(root, plan, "SQLite", &[], text_len).await?,
        leader,
        side_through(
            plan,
            "PostgreSQL via a standby",
            standby,
            leader_pid,
            text_len,
        )
        .await?,
    ];
    for s in sides.iter_mut() {
        run_step(&s.target, &mut s.pool, opts, 300, 200, opts.warmup).await?;
    }
    let mut rows: Vec<(&'static str, StepResult, Option<f64>, Option<f64>)> = Vec::new();
    let mut step = 300u32;
    for &rate in &settings.rates {
        for _ in 0..settings.rounds {
            for s in sides.iter_mut() {
                step += 1;
                let db_before = cluster_cpu(postmaster);
                let standby_pid = s.standby.then(|| s.chat.server.pid());
                // (`cpu_secs(None)` is this process's: only a standby side has a figure.)
                let standby_before = standby_pid.and_then(|p| cpu_secs(Some(p)));
                let r = run_step(&s.target, &mut s.pool, opts, step, rate, settings.step).await?;
                let db_secs = cluster_cpu(postmaster) - db_before;
                let per_msg = |secs: f64| (r.ok > 0).then(|| secs * 1e6 / r.ok as f64);
                let db_us = per_msg(db_secs);
                let standby_us = standby_pid
                    .and_then(|p| cpu_secs(Some(p)))
                    .zip(standby_before)
                    .and_then(|(after, before)| per_msg(after - before));
                println!(
                    "  {:<26} {}, database CPU {} µs/msg, standby CPU {} µs/msg",
                    s.name,
                    super::report::step_line(&r),
                    db_us.map_or("-".to_owned(), |u| format!("{u:.1}")),
                    standby_us.map_or("-".to_owned(), |u| format!("{u:.1}"))
                );
                rows.push((s.name, r, db_us, standby_us));
            }
        }
    }
    for s in sides.iter_mut() {
        if !s.chat.server.running() {
            bail!("netapi-chat ({}) exited during the backends phase", s.name);
        }
    }
    let mut md = String::from(
        "| rate msg/s | backend | achieved/s | POST p50 ms | POST p99 ms | errors | netapi-chat CPU µs/msg (the deciding instance) | standby CPU µs/msg | database CPU µs/msg |\n|--:|---|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    let ms = |ns: u64| ns as f64 / 1e6;
    for (name, r, db, standby) in &rows {
        let _ = writeln!(
            md,
            "| {} | {name} | {:.0} | {:.2} | {:.2} | {} | {} | {} | {} |",
            r.rate,
            r.achieved,
            ms(r.post.p50),
            ms(r.post.p99),
            r.errors + r.skipped,
            r.server_cpu_us
                .map_or("-".to_owned(), |u| format!("{u:.1}")),
            standby.map_or("-".to_owned(), |u| format!("{u:.1}")),
            if *name == "SQLite" {
                "(in netapi-chat)".to_owned()
            } else {
                db.map_or("-".to_owned(), |u| format!("{u:.1}"))
            },
        );
    }
    Ok(md)
}
