//! `cargo xtask bench --delivery [--oma2012] [--before BIN] [--smoke]`: what delivering
//! notifications costs the server (issue 13 item 5), before and after a change, in one run;
//! with `--oma2012`, to subscriptions of the OMA 2012 face (each delivered message then
//! recorded `Delivered` by the server).
//!
//! Three servers with the message-send workload of the full bench (each user's real callback
//! listener, JSON): the bare-hyper baseline, netapi-chat as built now, and, with `--before`,
//! another build of netapi-chat (e.g. the commit before the change, built into a file of its
//! own). Steps at fixed rates go to them in turn, round after round (the order rotates each
//! round), so that whatever else the machine does weighs on all of them alike. Per step: the
//! server's CPU seconds per message (utime + stime from `/proc`, which include the delivery of
//! the notifications each message causes), the store commits per message (from `/metrics`),
//! and the POST → notification p99. The table gives each figure's median over the rounds.
//! Writes `target/bench/delivery.md` and prints it; BENCHMARKS.md quotes it by hand.

use super::baseline;
use super::compare::{ChatSide, Run, Steps, cell, write_report};
use super::load::{StepResult, Target, run_step};
use super::median;
use super::proc;
use anyhow::Result;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The token that opens `/metrics` on the servers of this phase.
const METRICS_TOKEN: &str = "bench-delivery-metrics-token-0123456789";

/// One of the servers measured: the baseline, or a netapi-chat build.
struct Side {
    name: String,
    chat: Option<ChatSide>,
    baseline: Option<proc::Server>,
    target: Target,
    pool: Vec<super::http::Conn>,
    /// Per rate: the steps, with the commits they made.
    steps: Vec<Vec<(StepResult, Option<f64>)>>,
}

/// The number of store commits so far, from `/metrics` (the commit group size's `_count`).
fn commits(addr: std::net::SocketAddr) -> Option<f64> {
    super::metric(
        addr,
        METRICS_TOKEN,
        "netapi_chat_store_commit_group_size_count",
    )
}

async fn chat_side(root: &Path, s: &Steps, name: &str, bin: Option<&Path>) -> Result<Side> {
    let env = [("NETAPI_CHAT_METRICS_TOKEN", METRICS_TOKEN)];
    let side = ChatSide::start(root, s, &format!("delivery-{name}"), bin, &env, &[]).await?;
    Ok(Side {
        name: name.to_owned(),
        target: side.target.clone(),
        chat: Some(side),
        baseline: None,
        pool: Vec::new(),
        steps: vec![Vec::new(); s.rates.len()],
    })
}

/// Runs the phase and returns its report (markdown).
pub async fn run(root: &Path, s: &Steps, before: Option<PathBuf>, command: &str) -> Result<String> {
    let run = Run::start(root);
    let base = baseline::start()?;
    let mut sides = vec![Side {
        name: "baseline".to_owned(),
        chat: None,
        target: Target {
            addr: base.addr,
            make: baseline::make_request(s.text_len),
            collector: None,
            server_pid: Some(base.pid()),
            tap: None,
        },
        baseline: Some(base),
        pool: Vec::new(),
        steps: vec![Vec::new(); s.rates.len()],
    }];
    if let Some(b) = &before {
        sides.push(chat_side(root, s, "before", Some(b)).await?);
    }
    sides.push(chat_side(root, s, "after", None).await?);
    super::warm_up(
        sides.iter_mut().map(|s| (&s.target, &mut s.pool)),
        &s.opts,
        300,
        s.rates[0],
    )
    .await?;
    for (round, r, i, step) in super::rotation(sides.len(), s.rounds, s.rates.len(), 300) {
        let side = &mut sides[i];
        let c0 = commits(side.target.addr);
        let res = run_step(
            &side.target,
            &mut side.pool,
            &s.opts,
            step,
            s.rates[r],
            s.step,
        )
        .await?;
        let c1 = commits(side.target.addr);
        let per_msg = match (c0, c1) {
            (Some(a), Some(b)) if res.ok > 0 => Some((b - a) / res.ok as f64),
            _ => None,
        };
        println!(
            "  delivery {} round {}: {}{}",
            side.name,
            round + 1,
            super::report::step_line(&res),
            per_msg
                .map(|c| format!(", {c:.2} commits/msg"))
                .unwrap_or_default()
        );
        side.steps[r].push((res, per_msg));
    }
    for side in sides.iter_mut() {
        if let Some(c) = side.chat.as_mut() {
            c.check_running(&side.name, "delivery")?;
        }
        if let Some(b) = side.baseline.as_mut() {
            let _ = b.kill();
        }
    }
    let mut md = run.header(command);
    let _ = writeln!(
        md,
        "Workload: {} users in {} sessions, JSON, each user's own callback listener{}; {} rounds of {:.0} s steps per rate and server, in rotating order; medians over the rounds.\n",
        s.plan.users(),
        s.plan.sessions().len(),
        if s.plan.oma2012 {
            " (subscribed through the OMA 2012 face)"
        } else {
            ""
        },
        s.rounds,
        s.step.as_secs_f64()
    );
    let chats: Vec<&Side> = sides.iter().filter(|x| x.chat.is_some()).collect();
    let mut head = "| msg/s | baseline µs/msg |".to_owned();
    let mut rule = "|---:|---:|".to_owned();
    for c in &chats {
        let _ = write!(
            head,
            " {0} µs/msg (× baseline) | {0} commits/msg | {0} notification p99 ms |",
            c.name
        );
        rule.push_str("---:|---:|---:|");
    }
    let _ = writeln!(md, "{head}\n{rule}");
    for (r, rate) in s.rates.iter().enumerate() {
        let cpu = |side: &Side| {
            median(
                side.steps[r]
                    .iter()
                    .filter_map(|(x, _)| x.server_cpu_us)
                    .collect(),
            )
        };
        let base = cpu(&sides[0]);
        let mut line = format!("| {rate} | {} |", cell(base, 1));
        for c in &chats {
            let us = cpu(c);
            let commits = median(c.steps[r].iter().filter_map(|(_, k)| *k).collect());
            let p99 = median(
                c.steps[r]
                    .iter()
                    .filter_map(|(x, _)| x.notify.map(|p| p.p99 as f64 / 1e6))
                    .collect(),
            );
            let _ = write!(
                line,
                " {} | {} | {} |",
                match (us, base) {
                    (Some(u), Some(b)) if b > 0.0 => format!("{u:.1} ({:.1}×)", u / b),
                    (Some(u), _) => format!("{u:.1}"),
                    _ => "–".into(),
                },
                cell(commits, 2),
                cell(p99, 2),
            );
        }
        let _ = writeln!(md, "{line}");
    }
    write_report(root, "delivery.md", &md)?;
    Ok(md)
}
