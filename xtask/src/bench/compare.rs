//! What the phases that compare servers in one run share (`--delivery`, `--neighbour`,
//! `--dead-receivers`): their step settings, starting a netapi-chat side with its workload
//! (this build or another one), the first lines of their report, its cells, and writing it.
//! Each phase keeps only what it measures and how it lays its table out.

use super::chat::{Format, Plan, Workload, chat_target};
use super::load::{Options, Target};
use super::proc::{self, NetapiChat, start_netapi_chat, start_netapi_chat_bin};
use super::{Settings, http::Conn};
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::time::{Duration, Instant};

/// The steps of a comparison phase: which rates, how long each step, how many rounds over
/// every (rate, side), and the message-send workload of the full bench.
pub struct Steps {
    /// Rates, msg/s.
    pub rates: Vec<u32>,
    /// Length of each step.
    pub step: Duration,
    /// Rounds over every (rate, side).
    pub rounds: usize,
    /// Load generator settings.
    pub opts: Options,
    /// The workload.
    pub plan: Plan,
    /// Message text length.
    pub text_len: usize,
}

impl Steps {
    /// `rates`, `step` and `rounds` on the full bench's workload; with `smoke`, one round of
    /// one 1 s step at 200 msg/s on the smoke workload instead (keeps the phase from rotting).
    pub fn new(smoke: bool, rates: &[u32], step: Duration, rounds: usize) -> Steps {
        let (s, rates, step, rounds) = if smoke {
            (Settings::smoke(), vec![200], Duration::from_secs(1), 1)
        } else {
            (Settings::full(), rates.to_vec(), step, rounds)
        };
        Steps {
            rates,
            step,
            rounds,
            opts: s.opts,
            plan: s.plan,
            text_len: s.text_len,
        }
    }
}

/// A netapi-chat server of a comparison, its workload set up (JSON, each user's own callback
/// listener, plus `extra` notify URLs in the group sessions) and the target the steps send to.
pub struct ChatSide {
    /// The server (its data directory `target/bench/data-<label>`).
    pub chat: NetapiChat,
    /// The users and their listeners (kept for the phase).
    pub _workload: Workload,
    /// Where the steps send.
    pub target: Target,
    /// The connections the steps reuse.
    pub pool: Vec<Conn>,
}

impl ChatSide {
    /// Starts `bin` (or this build's release binary) labelled `label` with `env` and sets
    /// the workload up on it.
    pub async fn start(
        root: &Path,
        steps: &Steps,
        label: &str,
        bin: Option<&Path>,
        env: &[(&str, &str)],
        extra: &[String],
    ) -> Result<ChatSide> {
        let chat = match bin {
            Some(b) => start_netapi_chat_bin(root, b, label, env)?,
            None => start_netapi_chat(root, label, env)?,
        };
        let (workload, target) = chat_target(
            chat.server.addr,
            &steps.plan,
            Format::Json,
            steps.text_len,
            chat.server.pid(),
            extra,
            None,
        )
        .await?;
        Ok(ChatSide {
            chat,
            _workload: workload,
            target,
            pool: Vec::new(),
        })
    }

    /// An error naming the side and the phase when its server exited during the phase.
    pub fn check_running(&mut self, name: &str, phase: &str) -> Result<()> {
        if !self.chat.server.running() {
            bail!("netapi-chat ({name}) exited during the {phase} phase");
        }
        Ok(())
    }
}

/// A phase's run as its report's first line tells it: when, which command, the commit, how
/// long, the machine and its load before and after.
pub struct Run {
    started_at: String,
    started: Instant,
    load_before: String,
    git: String,
}

impl Run {
    /// Notes the start (time, load, the commit and whether the tree was dirty).
    pub fn start(root: &Path) -> Run {
        Run {
            started_at: super::now_utc(),
            started: Instant::now(),
            load_before: proc::loadavg(),
            git: super::git_state(root),
        }
    }

    /// The report's first line (a paragraph), read at the end of the phase.
    pub fn header(&self, command: &str) -> String {
        let m = proc::Machine::read();
        format!(
            "Run {} · `{command}` · {:.0} s · `{}` · machine: `nproc` {} · {} · {}; load average (1/5/15 min) before: {} · after: {}\n",
            self.started_at,
            self.started.elapsed().as_secs_f64(),
            self.git,
            m.cores,
            m.memory,
            m.cpu,
            self.load_before,
            proc::loadavg()
        )
    }
}

/// A table cell: `v` with `digits` decimals, or `–` when there is no figure (no round gave
/// one).
pub fn cell(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "–".into())
}

/// Writes a phase's report to `target/bench/<file>` and prints it.
pub fn write_report(root: &Path, file: &str, md: &str) -> Result<()> {
    let path = proc::target_dir(root).join("bench").join(file);
    std::fs::create_dir_all(path.parent().context("bench dir")?)?;
    std::fs::write(&path, md).with_context(|| format!("writing {}", path.display()))?;
    println!("bench: wrote {}\n\n{md}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_figure_is_a_dash() {
        assert_eq!(cell(Some(1.234), 2), "1.23");
        assert_eq!(cell(Some(1500.4), 0), "1500");
        assert_eq!(cell(None, 1), "–");
    }
}
