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
//!
//! Delivery across instances (`NETAPI_CHAT_CLUSTER_DELIVERY`): the standby makes the leader's
//! callback attempts, so the PostgreSQL side's rows are a leader whose attempts a standby
//! makes (the standby's CPU beside it). A fourth side is a leader on a second database of the
//! same PostgreSQL set to `leader` (it makes every attempt itself, as a lone server does):
//! the two rows at one rate are what a second machine takes off the leader. (Each user of the
//! first database is subscribed once per side sending there, so twice; the fourth side's
//! users are subscribed twice too, so both leaders deliver as many notifications per message,
//! twice the SQLite side's.)

use super::chat::{Format, Plan, Workload, chat_target};
use super::load::{Options, StepResult, Target, run_step};
use super::proc::{NetapiChat, cpu_secs, start_netapi_chat};
use super::tls_front::TlsFront;
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
    /// `--https-receivers`: every callback listener behind a TLS front that closes each
    /// connection after its answer ([`super::tls_front`]), so each attempt opens a connection
    /// and makes a TLS handshake, as to a sporadic receiver.
    pub https_receivers: bool,
}

struct Side {
    name: &'static str,
    /// The instance the workload goes to.
    chat: NetapiChat,
    /// The standby whose CPU is reported beside the deciding instance's: the one the workload
    /// goes through (forwarding to the PostgreSQL side's leader, whose CPU is then the side's
    /// netapi-chat CPU), or the one making a leader's callback attempts.
    standby: Option<u32>,
    _workload: Workload,
    /// A second set of the workload's subscriptions, whose notifications nobody waits for:
    /// on a leader alone, the same notifications per message as on the leader two sides'
    /// workloads share (each user subscribed once per side).
    _shadow: Option<Workload>,
    target: Target,
    pool: Vec<super::http::Conn>,
}

async fn side(
    root: &Path,
    plan: &Plan,
    name: &'static str,
    env: &[(&str, &str)],
    (text_len, front): (usize, Option<&TlsFront>),
) -> Result<Side> {
    let chat = start_netapi_chat(root, &format!("backend-{name}"), env)?;
    let pid = chat.server.pid();
    side_through(plan, name, chat, pid, (text_len, front)).await
}

/// A side whose workload goes to `chat`; the netapi-chat CPU per message reported is
/// `decider`'s (`chat` itself, or the leader a standby forwards to).
async fn side_through(
    plan: &Plan,
    name: &'static str,
    chat: NetapiChat,
    decider: u32,
    (text_len, front): (usize, Option<&TlsFront>),
) -> Result<Side> {
    let addr = chat.server.addr;
    let standby = (decider != chat.server.pid()).then(|| chat.server.pid());
    let (workload, target) =
        chat_target(addr, plan, Format::Json, text_len, decider, &[], front).await?;
    Ok(Side {
        name,
        chat,
        standby,
        _workload: workload,
        _shadow: None,
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
    let front = match settings.https_receivers {
        true => Some(TlsFront::new(
            &super::proc::target_dir(root).join("bench/tls-front"),
        )?),
        false => None,
    };
    let front = front.as_ref();
    let ca = front.map(|f| f.ca_file.display().to_string());
    // With HTTPS receivers every instance trusts their certificate.
    let trust: Vec<(&str, &str)> = ca
        .iter()
        .map(|ca| ("NETAPI_CHAT_CALLBACK_CA_FILE", ca.as_str()))
        .collect();
    let on_postgres: Vec<(&str, &str)> = [
        ("NETAPI_CHAT_DATABASE_URL", url.as_str()),
        ("NETAPI_CHAT_CLUSTER_URL", "auto"),
    ]
    .into_iter()
    .chain(trust.iter().copied())
    .collect();
    let text_len = (text_len, front);
    let mut leader = side(
        root,
        plan,
        "PostgreSQL, a standby makes the attempts",
        &on_postgres,
        text_len,
    )
    .await?;
    let leader_pid = leader.chat.server.pid();
    // A second instance on the same database: it stands by, forwards to the leader and makes
    // the leader's callback attempts.
    let standby = start_netapi_chat(root, "backend-standby", &on_postgres)?;
    leader.standby = Some(standby.server.pid());
    // A leader alone on a second database, making its attempts itself.
    let second = cluster.database("netapi_chat_bench_second")?;
    let on_second: Vec<(&str, &str)> = [
        ("NETAPI_CHAT_DATABASE_URL", second.as_str()),
        ("NETAPI_CHAT_CLUSTER_URL", "auto"),
        ("NETAPI_CHAT_CLUSTER_DELIVERY", "leader"),
    ]
    .into_iter()
    .chain(trust.iter().copied())
    .collect();
    let mut alone = side(
        root,
        plan,
        "PostgreSQL, attempts on the leader",
        &on_second,
        text_len,
    )
    .await?;
    // The two sides on the first database subscribe every user twice (once each): so does
    // this one, or its leader would deliver half as many notifications per message.
    let (shadow, _) = chat_target(
        alone.chat.server.addr,
        plan,
        Format::Json,
        text_len.0,
        alone.chat.server.pid(),
        &[],
        front,
    )
    .await?;
    alone._shadow = Some(shadow);
    let mut sides = [
        side(root, plan, "SQLite", &trust, text_len).await?,
        alone,
        leader,
        side_through(
            plan,
            "PostgreSQL via a standby (it makes the attempts)",
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
                let standby_pid = s.standby;
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
                    "  {:<48} {}, database CPU {} µs/msg, standby CPU {} µs/msg",
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
