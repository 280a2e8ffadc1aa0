//! XML cost vs JSON cost: two netapi-chat servers (one per format, each with the same workload)
//! measured in alternating steps at one fixed rate, so that whatever else the machine is doing
//! weighs on both alike. The cost is the server's CPU time per message.

use super::chat::{Format, Plan, Workload, chat_target};
use super::load::{Options, StepResult, Target, run_step};
use super::proc::{NetapiChat, start_netapi_chat};
use anyhow::{Result, bail};
use std::path::Path;
use std::time::Duration;

/// What the cost phase does.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The fixed rate, msg/s.
    pub rate: u32,
    /// Length of each step.
    pub step: Duration,
    /// JSON, XML rounds.
    pub rounds: usize,
}

/// The alternating steps, per format.
#[derive(Clone, Debug, Default)]
pub struct CostResult {
    /// The JSON steps, in order.
    pub json: Vec<StepResult>,
    /// The XML steps, in order.
    pub xml: Vec<StepResult>,
}

/// Median of the server CPU µs/msg of `steps`.
pub fn median_cpu(steps: &[StepResult]) -> Option<f64> {
    super::median(steps.iter().filter_map(|s| s.server_cpu_us).collect())
}

struct Side {
    chat: NetapiChat,
    _workload: Workload,
    target: Target,
    pool: Vec<super::http::Conn>,
}

async fn side(root: &Path, plan: &Plan, format: Format, text_len: usize) -> Result<Side> {
    let label = match format {
        Format::Json => "cost-json",
        Format::Xml => "cost-xml",
    };
    let chat = start_netapi_chat(root, label, &[])?;
    let (workload, target) = chat_target(
        chat.server.addr,
        plan,
        format,
        text_len,
        chat.server.pid(),
        &[],
        None,
    )
    .await?;
    Ok(Side {
        chat,
        _workload: workload,
        target,
        pool: Vec::new(),
    })
}

/// Runs the alternating steps.
pub async fn run(
    root: &Path,
    plan: &Plan,
    settings: &Settings,
    opts: &Options,
    text_len: usize,
) -> Result<CostResult> {
    let mut sides = [
        side(root, plan, Format::Json, text_len).await?,
        side(root, plan, Format::Xml, text_len).await?,
    ];
    for s in sides.iter_mut() {
        run_step(
            &s.target,
            &mut s.pool,
            opts,
            200,
            settings.rate,
            opts.warmup,
        )
        .await?;
    }
    let mut out = CostResult::default();
    let mut step = 200u32;
    for _ in 0..settings.rounds {
        for (i, s) in sides.iter_mut().enumerate() {
            step += 1;
            let r = run_step(
                &s.target,
                &mut s.pool,
                opts,
                step,
                settings.rate,
                settings.step,
            )
            .await?;
            let name = if i == 0 { "JSON" } else { "XML" };
            println!("  cost {name}: {}", super::report::step_line(&r));
            if i == 0 {
                out.json.push(r);
            } else {
                out.xml.push(r);
            }
        }
    }
    for s in sides.iter_mut() {
        if !s.chat.server.running() {
            bail!("netapi-chat exited during the cost phase");
        }
    }
    Ok(out)
}
