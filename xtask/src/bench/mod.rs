//! `cargo xtask bench [--smoke] [--no-peer] [--long]`: the benchmark harness of issues 6 and 12.
//!
//! It builds the server and this harness in release mode, then, on this machine and in one run:
//!
//! 1. **baseline** ([`baseline`]): a bare hyper server answering 201 to a chat-message-sized JSON
//!    POST — the machine's ceiling for one POST;
//! 2. **message send** ([`chat`], [`load`]): N users in M sessions (1-1 and group), each user
//!    with its own callback listener ([`listen`]), messages sent open-loop at fixed rates, in JSON
//!    and in XML; POST and POST → notification latencies from the intended send time;
//! 3. **scale** ([`scale`]): server RSS idle, with 10,000 and 100,000 open sessions, per stored
//!    message; send latency with many sessions vs few;
//! 4. **peer** ([`peer`]): Synapse from PyPI with the same workload (or "unavailable: reason");
//! 5. **ratios** ([`report`]), written to the results section of `BENCHMARKS.md`.
//!
//! `--smoke` runs everything but the peer on a tiny setting (well under a minute once built) so
//! the harness never rots, and writes `target/bench/BENCHMARKS.smoke.md` instead; `--peer` adds
//! the peer to a smoke run, `--no-peer` leaves it out of a full one. Benchmarks are not tests:
//! nothing here asserts a timing.
//!
//! `--postgres` runs only the one-instance comparison of issue 14 ([`backends`]): SQLite and
//! PostgreSQL (a throwaway cluster) in alternating steps at a few rates, into
//! `target/bench/BENCHMARKS.postgres.md`.
//!
//! `--long` runs only the long run of issue 12 ([`long`], [`chart`]): a million messages at a
//! steady rate with sessions opened and ended alongside, sampling RSS, disk and latency over
//! time, then a restart after SIGKILL; it rewrites its own section of `BENCHMARKS.md` and
//! `BENCHMARKS-long.svg`. The smoke run includes a few-second long run (into `target/bench/`),
//! a one-step delivery-cost phase (baseline and this build), a one-second neighbour phase and
//! a one-round rolling restart.
//!
//! `--delivery [--before BIN]` runs only the delivery-cost phase of issue 13 item 5
//! ([`delivery`]): server CPU and store commits per message, baseline vs this build vs `BIN`
//! (another build of the server), in alternating steps; it writes `target/bench/delivery.md`.
//! With `--oma2012` the users subscribe through the OMA 2012 face, whose deliveries the
//! server records `Delivered`.
//!
//! `--neighbour [--before BIN]` runs only the neighbour phase of issue 12 item 2
//! ([`neighbour`]): message sends with and without one heavy user listing its large sessions
//! back to back, this build vs `BIN`; it writes `target/bench/neighbour.md`.
//!
//! `--channels` runs only the channel phase of issue 15 ([`channels`]): POST → notification
//! received over a callback, a long-poll channel and a WebSocket channel; it writes
//! `target/bench/channels.md`. The smoke run includes a 1-second one.
//! `--dead-receivers` runs only the dead-receivers phase of issue 13 ([`dead`]): healthy
//! receivers' POST → notification latency on a server without extra receivers, on one with 10
//! extra healthy ones (the control) and on servers with 10 refused, 500-answering or
//! blackholing ones in the mix, in alternating steps; it rewrites its own section of
//! `BENCHMARKS.md`. The smoke run includes a one-step version.
//!
//! `--rolling [--before BIN]` runs only the rolling-restart phase of issue 14 ([`rolling`]):
//! a cluster's leader stopped with SIGTERM under load through its standby, this build vs
//! `BIN`: the answers other than `200` and the longest time without one; it writes
//! `target/bench/rolling.md`.

mod backends;
mod baseline;
mod channels;
mod chart;
mod chat;
mod compare;
mod cost;
mod dead;
mod delivery;
mod http;
mod listen;
mod load;
mod long;
mod neighbour;
mod peer;
mod proc;
mod report;
mod rolling;
mod scale;
mod tls_front;

use anyhow::{Context, Result, bail};
use chat::{Format, Plan};
use load::{Options, Series, Target, run_series};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Set on the release harness this command re-executes, so it does not build again.
const BUILT_ENV: &str = "NETAPI_CHAT_BENCH_BUILT";

const USAGE: &str = "usage: cargo xtask bench [--smoke] [--no-peer | --peer]\n       cargo xtask bench --long [--smoke] [--messages N] [--rate MSG_PER_S] [--sessions-cycled N] [--sample-secs S]\n       cargo xtask bench --delivery [--smoke] [--oma2012] [--before NETAPI_CHAT_BINARY]\n       cargo xtask bench --neighbour [--smoke] [--before NETAPI_CHAT_BINARY]\n       cargo xtask bench --channels [--smoke]\n       cargo xtask bench --dead-receivers [--smoke]\n       cargo xtask bench --postgres [--smoke] [--https-receivers]
       cargo xtask bench --rolling [--smoke] [--before NETAPI_CHAT_BINARY] [--rounds N]";

/// The long run's settings given on the command line (the rest come from its defaults).
#[derive(Default)]
struct LongArgs {
    messages: Option<u64>,
    rate: Option<u32>,
    sessions_cycled: Option<u64>,
    sample_secs: Option<f64>,
}

impl LongArgs {
    fn any(&self) -> bool {
        self.messages.is_some()
            || self.rate.is_some()
            || self.sessions_cycled.is_some()
            || self.sample_secs.is_some()
    }

    fn apply(&self, s: &mut long::Settings) -> Result<()> {
        if let Some(m) = self.messages {
            s.messages = m;
        }
        if let Some(r) = self.rate {
            s.rate = r;
        }
        if let Some(n) = self.sessions_cycled {
            s.sessions_cycled = n;
        }
        if let Some(t) = self.sample_secs {
            s.sample = Duration::try_from_secs_f64(t)
                .ok()
                .filter(|d| !d.is_zero())
                .with_context(|| format!("--sample-secs {t}: not a positive duration"))?;
        }
        if s.messages == 0 || s.rate == 0 {
            bail!("--messages and --rate must be positive");
        }
        Ok(())
    }
}

/// The value after `flag`, parsed.
fn value<T: std::str::FromStr>(it: &mut std::slice::Iter<'_, &str>, flag: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    let v = it
        .next()
        .with_context(|| format!("{flag} needs a value; {USAGE}"))?;
    v.replace(['_', ','], "")
        .parse()
        .map_err(|e| anyhow::anyhow!("{flag} {v}: {e}"))
}

/// Everything a run does, by size.
struct Settings {
    smoke: bool,
    peer: bool,
    rates: Vec<u32>,
    opts: Options,
    plan: Plan,
    scale: scale::Settings,
    cost: cost::Settings,
    text_len: usize,
    peer_budget: Duration,
}

impl Settings {
    fn full() -> Settings {
        Settings {
            smoke: false,
            peer: true,
            rates: vec![
                50, 100, 250, 500, 1000, 2000, 3000, 4000, 5000, 6000, 8000, 10000, 12500, 15000,
                20000, 25000, 30000, 40000, 50000,
            ],
            opts: Options {
                connections: 32,
                drain: Duration::from_secs(5),
                request_timeout: Duration::from_secs(5),
                min_step: Duration::from_secs(5),
                max_step: Duration::from_secs(20),
                min_messages: 2000,
                warmup: Duration::from_secs(2),
            },
            plan: Plan {
                one_to_one: 16,
                groups: 4,
                group_size: 4,
                oma2012: false,
            },
            scale: scale::Settings {
                points: vec![10_000, 100_000],
                plan: Plan {
                    one_to_one: 8,
                    groups: 2,
                    group_size: 4,
                    oma2012: false,
                },
                rate: 2000,
                step: Duration::from_secs(5),
                messages: 50_000,
                connections: 16,
            },
            cost: cost::Settings {
                rate: 2000,
                step: Duration::from_secs(5),
                rounds: 3,
            },
            text_len: 120,
            peer_budget: Duration::from_secs(25 * 60),
        }
    }

    fn smoke() -> Settings {
        let plan = Plan {
            one_to_one: 1,
            groups: 1,
            group_size: 3,
            oma2012: false,
        };
        Settings {
            smoke: true,
            peer: false,
            rates: vec![100, 400],
            opts: Options {
                connections: 8,
                drain: Duration::from_secs(2),
                request_timeout: Duration::from_secs(5),
                min_step: Duration::from_secs(1),
                max_step: Duration::from_secs(1),
                min_messages: 0,
                warmup: Duration::from_millis(300),
            },
            plan,
            scale: scale::Settings {
                points: vec![500, 2000],
                plan,
                rate: 200,
                step: Duration::from_secs(1),
                messages: 2000,
                connections: 4,
            },
            cost: cost::Settings {
                rate: 200,
                step: Duration::from_secs(1),
                rounds: 1,
            },
            text_len: 120,
            peer_budget: Duration::from_secs(60),
        }
    }

    fn describe(&self) -> Vec<String> {
        let o = &self.opts;
        let bytes = |f: Format| {
            f.chat_message(&listen::message_text(1, 1, self.text_len))
                .len()
        };
        vec![
            format!(
                "message text: {} characters (`bench#STEP#SEQ#` then padding), so a JSON `chatMessage` body of {} bytes and an XML one of {} bytes; the baseline gets the JSON body, the peer `{{\"msgtype\":\"m.text\",\"body\":…}}` with the same text",
                self.text_len,
                bytes(Format::Json),
                bytes(Format::Xml)
            ),
            format!(
                "open loop: message `seq` is due at `start + seq / rate`; a scheduler thread releases it, {} keep-alive HTTP/1.1 connections (hyper) take it; latencies are measured from the due time, so queueing in the generator counts",
                o.connections
            ),
            format!(
                "rate steps (msg/s): {}; each step lasts max({} s, {} messages) capped at {} s, after a {:.1} s warm-up; a series stops after a step below 90 % of its rate, with > 1 % errors, or POST p99 > 1 s; when even the first rate is not held, the rate is halved (down to 5/s) until a step holds",
                self.rates
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                o.min_step.as_secs_f64(),
                o.min_messages,
                o.max_step.as_secs_f64(),
                o.warmup.as_secs_f64()
            ),
            "message `seq` goes to session `seq mod M`, sent by its members in turn; each other member's listener gets one notification, matched to the send by the sequence number in the text".to_owned(),
            format!(
                "\"held\": ≥ 95 % of the target rate answered 2xx, no errors, every expected notification received within {} s of the last answer",
                o.drain.as_secs_f64()
            ),
            "server CPU: utime + stime of the server process (`/proc/PID/stat`) over the step, per 2xx answer; generator CPU: the same for the harness process (senders and listeners); % of one core".to_owned(),
            "netapi-chat runs with its default settings in a fresh data directory under `target/bench/`, its log (stderr) sent to /dev/null; for servers that authenticate, the harness also gives it a token file whose token acts for every user and sends that token on every request. Synapse logs at WARNING to a file, with presence off and rate limits lifted".to_owned(),
            "set-up calls (subscriptions, sessions, accepts) are JSON in both runs; the XML run sends messages in XML, asks for XML answers and subscribes with `notificationFormat: XML`".to_owned(),
        ]
    }
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// Builds the server in release as an operator does (`cargo build --release -p netapi-chat`),
/// then, with `with_xtask`, the harness in a build of its own. One `cargo build` naming both
/// packages unifies their dependencies' features into one set of artifacts, and the server
/// binary it made was another binary: measured in one run against the same commit built on
/// its own, 5-16 % more server CPU per message (BENCHMARKS "The lingering close"). A
/// `--before` binary is then comparable when built the operator's way too (`cargo build
/// --release -p netapi-chat` at its commit).
fn build(root: &Path, with_xtask: bool) -> Result<()> {
    let mut builds = vec![["-p", "netapi-chat", "--bin", "netapi-chat"]];
    if with_xtask {
        builds.push(["-p", "xtask", "--bin", "xtask"]);
    }
    for args in builds {
        let mut cmd = Command::new(cargo());
        cmd.current_dir(root)
            .args(["build", "--release"])
            .args(args);
        println!("bench: {cmd:?}");
        let status = cmd.status().context("running cargo build --release")?;
        if !status.success() {
            bail!("cargo build --release failed");
        }
    }
    Ok(())
}

fn git_state(root: &Path) -> String {
    let out = |args: &[&str]| {
        Command::new("git")
            .current_dir(root)
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim_end().to_owned())
            .unwrap_or_default()
    };
    let head = out(&["describe", "--always", "--dirty"]);
    let mut dirty: Vec<String> = out(&["status", "--porcelain"])
        .lines()
        .filter_map(|l| l.get(3..))
        .map(|p| p.split('/').next().unwrap_or(p).to_owned())
        .collect();
    dirty.sort();
    dirty.dedup();
    if dirty.is_empty() {
        format!("git {head}")
    } else {
        format!("git {head}; uncommitted changes in: {}", dirty.join(", "))
    }
}

fn now_utc() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// `cargo xtask bench …`.
pub fn main(root: &Path, args: &[&str]) -> Result<()> {
    let mut smoke = false;
    let mut peer = None;
    let mut long = false;
    let mut postgres = false;
    let mut https_receivers = false;
    let mut long_args = LongArgs::default();
    let (mut delivery, mut before) = (false, None::<PathBuf>);
    let mut oma2012 = false;
    let mut neighbour = false;
    let mut channels_only = false;
    let mut dead_receivers = false;
    let mut rolling = false;
    let mut rounds = None::<usize>;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--serve-baseline" if args.len() == 1 => return baseline::serve(),
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(());
            }
            "--smoke" => smoke = true,
            "--no-peer" => peer = Some(false),
            "--peer" => peer = Some(true),
            "--long" => long = true,
            "--delivery" => delivery = true,
            "--oma2012" => oma2012 = true,
            "--neighbour" => neighbour = true,
            "--dead-receivers" => dead_receivers = true,
            "--rolling" => rolling = true,
            "--rounds" => rounds = Some(value(&mut it, a)?),
            "--before" => {
                before =
                    Some(PathBuf::from(it.next().with_context(|| {
                        format!("--before needs a path; {USAGE}")
                    })?));
            }
            "--postgres" => postgres = true,
            "--https-receivers" => https_receivers = true,
            "--channels" => channels_only = true,
            "--messages" => long_args.messages = Some(value(&mut it, a)?),
            "--rate" => long_args.rate = Some(value(&mut it, a)?),
            "--sessions-cycled" => long_args.sessions_cycled = Some(value(&mut it, a)?),
            "--sample-secs" => long_args.sample_secs = Some(value(&mut it, a)?),
            other => bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    if https_receivers && !postgres {
        bail!("--https-receivers goes with --postgres; {USAGE}");
    }
    if channels_only && (delivery || long || postgres || peer.is_some()) {
        bail!("--channels goes alone (with --smoke); {USAGE}");
    }
    if neighbour && (delivery || channels_only || long || postgres || peer.is_some()) {
        bail!("--neighbour goes alone (with --smoke and --before); {USAGE}");
    }
    if rolling
        && (delivery
            || neighbour
            || channels_only
            || dead_receivers
            || long
            || postgres
            || peer.is_some())
    {
        bail!("--rolling goes alone (with --smoke and --before); {USAGE}");
    }
    if (delivery && (long || peer.is_some()))
        || (before.is_some() && !delivery && !neighbour && !rolling)
    {
        bail!(
            "--delivery goes alone (with --smoke), and --before with --delivery, --neighbour or --rolling; {USAGE}"
        );
    }
    if oma2012 && !delivery {
        bail!("--oma2012 goes with --delivery; {USAGE}");
    }
    if rounds.is_some() && !rolling {
        bail!("--rounds goes with --rolling; {USAGE}");
    }
    if dead_receivers && (delivery || long || postgres || peer.is_some()) {
        bail!("--dead-receivers goes alone (with --smoke); {USAGE}");
    }
    if !long && long_args.any() {
        bail!("--messages, --rate, --sessions-cycled and --sample-secs go with --long; {USAGE}");
    }
    if long && peer.is_some() {
        bail!("--peer and --no-peer do not go with --long; {USAGE}");
    }
    if cfg!(debug_assertions) {
        // The load generator must not be a debug build: build both in release and hand over.
        build(root, true)?;
        let exe = proc::target_dir(root).join("release/xtask");
        let status = Command::new(&exe)
            .arg("bench")
            .args(args)
            .env(BUILT_ENV, "1")
            .current_dir(root)
            .status()
            .with_context(|| format!("running {}", exe.display()))?;
        if !status.success() {
            bail!("the benchmark failed");
        }
        return Ok(());
    }
    if std::env::var_os(BUILT_ENV).is_none() {
        build(root, false)?;
    }
    if channels_only {
        let command = format!("cargo xtask bench {}", args.join(" "));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let result = rt.block_on(channels::run(
            root,
            &channel_settings(smoke),
            smoke,
            &command,
        ));
        rt.shutdown_timeout(Duration::from_secs(2));
        return result.map(|_| ());
    }
    if rolling {
        let command = format!("cargo xtask bench {}", args.join(" "));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let result = rt.block_on(rolling::run(root, before, smoke, rounds, &command));
        rt.shutdown_timeout(Duration::from_secs(2));
        return result.map(|_| ());
    }
    if neighbour {
        let ns = neighbour_settings(smoke);
        let command = format!("cargo xtask bench {}", args.join(" "));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let result = rt.block_on(neighbour::run(root, &ns, before, &command));
        rt.shutdown_timeout(Duration::from_secs(2));
        return result.map(|_| ());
    }
    if delivery {
        let mut ds = delivery_settings(smoke);
        ds.plan.oma2012 = oma2012;
        let command = format!("cargo xtask bench {}", args.join(" "));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let result = rt.block_on(delivery::run(root, &ds, before, &command));
        rt.shutdown_timeout(Duration::from_secs(2));
        return result.map(|_| ());
    }
    if dead_receivers {
        let command = format!("cargo xtask bench {}", args.join(" "));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let result = rt.block_on(dead_phase(root, smoke, &command));
        rt.shutdown_timeout(Duration::from_secs(2));
        return result;
    }
    if postgres {
        let s = if smoke {
            Settings::smoke()
        } else {
            Settings::full()
        };
        let b = backends::Settings {
            rates: if smoke {
                vec![200]
            } else if https_receivers {
                // A connection and a TLS handshake per notification: this machine's two cores
                // are saturated long before 1,000 msg/s.
                vec![100, 250, 500]
            } else {
                vec![500, 1000, 2000, 4000]
            },
            step: if smoke {
                Duration::from_secs(1)
            } else {
                Duration::from_secs(5)
            },
            rounds: if smoke { 1 } else { 2 },
            https_receivers,
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let section = rt.block_on(backends::run(root, &s.plan, &b, &s.opts, s.text_len, smoke));
        rt.shutdown_timeout(Duration::from_secs(2));
        let section = section?;
        let path = proc::target_dir(root).join(if https_receivers {
            "bench/BENCHMARKS.postgres-https.md"
        } else {
            "bench/BENCHMARKS.postgres.md"
        });
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, &section).with_context(|| format!("writing {}", path.display()))?;
        println!("\n{section}\nbench: results in {}", path.display());
        return Ok(());
    }
    if long {
        let plan = if smoke {
            Settings::smoke().plan
        } else {
            Settings::full().plan
        };
        let mut ls = if smoke {
            long::Settings::smoke(plan)
        } else {
            long::Settings::full(plan)
        };
        long_args.apply(&mut ls)?;
        let command = format!("cargo xtask bench {}", args.join(" "));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let result = rt.block_on(long_phase(root, &ls, smoke, &command));
        rt.shutdown_timeout(Duration::from_secs(2));
        return result;
    }
    let mut settings = if smoke {
        Settings::smoke()
    } else {
        Settings::full()
    };
    settings.peer = peer.unwrap_or(settings.peer);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(run(root, &settings));

    let section = report.markdown();
    let path = results_file(root, smoke);
    write_section(&path, report::START, report::END, &section)?;
    println!("\n{section}");
    println!(
        "bench: finished in {:.0} s; results in {}",
        report.secs,
        path.display()
    );
    // The smoke run also runs a tiny phase of each other kind, so that no harness can rot;
    // their sections go into the same smoke file, never into the committed BENCHMARKS.md.
    // Each says whether it failed (and why, on the output).
    fn failed_smoke<T>(what: &str, r: Result<T>) -> bool {
        r.map_err(|e| println!("bench: the {what} (smoke) failed: {e:#}"))
            .is_err()
    }
    const SMOKE: &str = "cargo xtask bench --smoke";
    // A tiny long run.
    let long_smoke = smoke && {
        let ls = long::Settings::smoke(settings.plan);
        failed_smoke("long run", rt.block_on(long_phase(root, &ls, true, SMOKE)))
    };
    // A tiny delivery-cost phase (baseline and this build).
    let delivery_smoke = smoke
        && failed_smoke(
            "delivery phase",
            rt.block_on(delivery::run(root, &delivery_settings(true), None, SMOKE)),
        );
    // A tiny channel phase.
    let channels_smoke = smoke
        && failed_smoke(
            "channel phase",
            rt.block_on(channels::run(root, &channel_settings(true), true, SMOKE)),
        );
    // A tiny neighbour phase (this build only).
    let neighbour_smoke = smoke
        && failed_smoke(
            "neighbour phase",
            rt.block_on(neighbour::run(root, &neighbour_settings(true), None, SMOKE)),
        );
    // A tiny dead-receivers phase.
    let dead_smoke = smoke
        && failed_smoke(
            "dead-receivers phase",
            rt.block_on(dead_phase(root, true, SMOKE)),
        );
    // A tiny rolling restart (this build only, one round, on a throwaway PostgreSQL).
    let rolling_smoke = smoke
        && failed_smoke(
            "rolling-restart phase",
            rt.block_on(rolling::run(root, None, true, None, SMOKE)),
        );
    rt.shutdown_timeout(Duration::from_secs(2));
    let failed: Vec<&str> = [
        ("baseline", report.baseline.is_err()),
        ("message send (JSON)", report.json.is_err()),
        ("message send (XML)", report.xml.is_err()),
        ("XML vs JSON cost", report.cost.is_err()),
        ("scale", report.scale.is_err()),
        ("long run (smoke)", long_smoke),
        ("delivery cost (smoke)", delivery_smoke),
        ("channels (smoke)", channels_smoke),
        ("dead receivers (smoke)", dead_smoke),
        ("rolling restart (smoke)", rolling_smoke),
        ("neighbour (smoke)", neighbour_smoke),
    ]
    .into_iter()
    .filter_map(|(n, f)| f.then_some(n))
    .collect();
    if !failed.is_empty() {
        bail!("phases failed: {}", failed.join(", "));
    }
    Ok(())
}

/// The channel phase's settings (`--channels`; tiny with `--smoke`): a rate far below what
/// the server takes, so the figures are the path's latency, not a queue's.
fn channel_settings(smoke: bool) -> channels::Settings {
    channels::Settings {
        messages: if smoke { 40 } else { 3000 },
        rate: if smoke { 40 } else { 100 },
        text_len: 120,
        max_wait_secs: 5,
    }
}

/// The neighbour phase's settings (`--neighbour`; tiny with `--smoke`).
fn neighbour_settings(smoke: bool) -> neighbour::Settings {
    let (heavy_sessions, heavy_participants) = if smoke { (3, 5) } else { (200, 200) };
    neighbour::Settings {
        steps: compare::Steps::new(smoke, &[1000, 2000], Duration::from_secs(10), 3),
        heavy_sessions,
        heavy_participants,
    }
}

/// The delivery-cost phase's settings (`--delivery`; tiny with `--smoke`).
fn delivery_settings(smoke: bool) -> compare::Steps {
    compare::Steps::new(smoke, &[500, 2000, 5000], Duration::from_secs(10), 3)
}

/// One step of each side at `rate` before anything counts (step number `step`), so that
/// connections and caches are up: the warm-up of the phases that compare servers.
async fn warm_up<'a>(
    sides: impl IntoIterator<Item = (&'a Target, &'a mut Vec<http::Conn>)>,
    opts: &Options,
    step: u32,
    rate: u32,
) -> Result<()> {
    for (target, pool) in sides {
        load::run_step(target, pool, opts, step, rate, opts.warmup).await?;
    }
    Ok(())
}

/// The order in which the phases that compare servers (delivery, dead receivers) run their
/// steps: `rounds` rounds, each running every rate on every side, the side order rotated by
/// one each round so that no side always runs first or right after the same other. Each
/// entry is (round, rate index, side index, step number), the step numbers following
/// `after` (the warm-up's). One rule for both phases, so that their tables compare alike.
fn rotation(
    sides: usize,
    rounds: usize,
    rates: usize,
    after: u32,
) -> Vec<(usize, usize, usize, u32)> {
    let mut order = Vec::with_capacity(sides * rounds * rates);
    let mut step = after;
    for round in 0..rounds {
        for r in 0..rates {
            for k in 0..sides {
                step += 1;
                order.push((round, r, (k + round) % sides, step));
            }
        }
    }
    order
}

/// The median of `v`, `None` when it is empty: the figure the phases that alternate their
/// sides (cost, delivery, dead receivers) report per side, so that one noisy step does not move it.
fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The sum of the lines of netapi-chat's `/metrics` at `addr` (read with `token`) that start
/// with `prefix`: one line, or one per label set; 0 when there is none (a counter appears
/// with its first count). `None`: no answer, or not a 200. A plain blocking request, so that
/// reading a figure between steps needs no client of its own.
fn metric(addr: std::net::SocketAddr, token: &str, prefix: &str) -> Option<f64> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    if !text.starts_with("HTTP/1.1 200") {
        return None;
    }
    Some(
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .fold(0.0, |a, b| a + b),
    )
}

/// The results file a phase writes its section into: `BENCHMARKS.md` at the root, or, when
/// `smoke`, `target/bench/BENCHMARKS.smoke.md` (a smoke run never touches the committed one).
fn results_file(root: &Path, smoke: bool) -> PathBuf {
    if smoke {
        proc::target_dir(root).join("bench/BENCHMARKS.smoke.md")
    } else {
        root.join("BENCHMARKS.md")
    }
}

/// Replaces the section between the marker lines `start` and `end` of the results file `md`
/// with `section` (appended with its markers when the file has none; the file is created
/// when missing). One writer for every phase, so that none can lose the others' sections:
/// a file that exists but cannot be read is an error, never overwritten.
fn write_section(md: &Path, start: &str, end: &str, section: &str) -> Result<()> {
    if let Some(dir) = md.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let doc = match std::fs::read_to_string(md) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            "# Benchmarks\n\nGenerated by `cargo xtask bench`; see xtask/src/bench/.\n".to_owned()
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", md.display())),
    };
    std::fs::write(md, report::splice_between(&doc, start, end, section))
        .with_context(|| format!("writing {}", md.display()))
}

/// The dead-receivers phase's settings (`--dead-receivers`; tiny with `--smoke`).
fn dead_settings(smoke: bool) -> dead::Settings {
    dead::Settings {
        steps: compare::Steps::new(smoke, &[500, 2000], Duration::from_secs(8), 5),
        dead: if smoke { 2 } else { 10 },
    }
}

/// Runs the dead-receivers phase and splices its section into `BENCHMARKS.md` (or, when
/// `smoke`, into `target/bench/BENCHMARKS.smoke.md`).
async fn dead_phase(root: &Path, smoke: bool, command: &str) -> Result<()> {
    let section = dead::run(root, &dead_settings(smoke), command).await?;
    let md = results_file(root, smoke);
    write_section(&md, dead::START, dead::END, &section)?;
    println!("bench: dead receivers written to {}", md.display());
    Ok(())
}

async fn run(root: &Path, s: &Settings) -> report::Report {
    let t0 = Instant::now();
    let machine = proc::Machine::read();
    let load_before = proc::loadavg();
    println!(
        "bench: {} cores, {}, {}; load average {load_before}",
        machine.cores, machine.memory, machine.cpu
    );
    let err = |e: anyhow::Error| format!("{e:#}");

    println!("bench: baseline (bare hyper)");
    let baseline = baseline_series(s).await.map_err(err);
    println!("bench: netapi-chat, JSON");
    let json = chat_series(root, s, Format::Json).await.map_err(err);
    println!("bench: netapi-chat, XML");
    let xml = chat_series(root, s, Format::Xml).await.map_err(err);
    println!("bench: XML cost vs JSON cost (alternating steps)");
    let cost = cost::run(root, &s.plan, &s.cost, &s.opts, s.text_len)
        .await
        .map_err(err);
    println!("bench: scale");
    let scale = scale_phase(root, s).await.map_err(err);
    let peer = if s.peer {
        println!("bench: peer (Synapse)");
        Ok(peer::run(root, &s.plan, &s.opts, &s.rates, s.text_len, s.peer_budget).await)
    } else if s.smoke {
        Err("skipped in the smoke run (`--peer` adds it; installing and starting Synapse takes longer than the rest of the smoke run)".to_owned())
    } else {
        Err("skipped (--no-peer)".to_owned())
    };

    report::Report {
        smoke: s.smoke,
        machine,
        load_before,
        load_after: proc::loadavg(),
        started: now_utc(),
        secs: t0.elapsed().as_secs_f64(),
        git: git_state(root),
        plan: s.plan,
        settings: s.describe(),
        baseline,
        json,
        xml,
        cost,
        cost_settings: s.cost.clone(),
        scale,
        peer,
    }
}

async fn baseline_series(s: &Settings) -> Result<Series> {
    let server = baseline::start()?;
    let target = Target {
        addr: server.addr,
        make: baseline::make_request(s.text_len),
        collector: None,
        server_pid: Some(server.pid()),
        tap: None,
    };
    run_series("baseline", &target, &s.opts, &s.rates, None).await
}

async fn chat_series(root: &Path, s: &Settings, format: Format) -> Result<Series> {
    let label = match format {
        Format::Json => "json",
        Format::Xml => "xml",
    };
    let mut chat = proc::start_netapi_chat(root, label, &[])?;
    let server = &mut chat.server;
    let (workload, target) = chat::chat_target(
        server.addr,
        &s.plan,
        format,
        s.text_len,
        server.pid(),
        &[],
        None,
    )
    .await?;
    let name = match format {
        Format::Json => "netapi-chat JSON",
        Format::Xml => "netapi-chat XML",
    };
    let series = run_series(name, &target, &s.opts, &s.rates, None).await;
    if !server.running() {
        bail!("netapi-chat exited during the series");
    }
    drop(workload);
    series
}

async fn scale_phase(root: &Path, s: &Settings) -> Result<scale::ScaleResult> {
    // Invitation timers must not fire during the phase (they would end unaccepted sessions
    // and add work that is not message sending); one hour outlasts it.
    let mut chat = proc::start_netapi_chat(
        root,
        "scale",
        &[("NETAPI_CHAT_INVITATION_TIMEOUT_SECS", "3600")],
    )?;
    let result = scale::run(&chat, &s.scale, &s.opts, s.text_len).await;
    if !chat.server.running() {
        bail!("netapi-chat exited during the scale phase");
    }
    result
}

/// Runs the long phase and writes its CSV, chart and section: into `target/bench/` only when
/// `smoke`, else the chart next to BENCHMARKS.md and the section into it.
async fn long_phase(root: &Path, ls: &long::Settings, smoke: bool, command: &str) -> Result<()> {
    let bench = proc::target_dir(root).join("bench");
    let md = results_file(root, smoke);
    let (csv, chart_name) = if smoke {
        (bench.join("long.smoke.csv"), "BENCHMARKS-long.smoke.svg")
    } else {
        (bench.join("long.csv"), "BENCHMARKS-long.svg")
    };
    let svg = md
        .parent()
        .map(|d| d.join(chart_name))
        .unwrap_or_else(|| PathBuf::from(chart_name));
    let machine = proc::Machine::read();
    let load_before = proc::loadavg();
    let started = now_utc();
    let git = git_state(root);
    let r = long::run(root, ls, &csv).await?;
    let meta = report::LongMeta {
        started: started.clone(),
        git: git.clone(),
        machine,
        load_before,
        load_after: proc::loadavg(),
        chart: chart_name.to_owned(),
        csv: csv.strip_prefix(root).unwrap_or(&csv).display().to_string(),
        command: command.to_owned(),
    };
    // The title keeps the commit and leaves the list of uncommitted paths to the section.
    let commit = git.split(';').next().unwrap_or(&git);
    let title = format!(
        "netapi-chat long run: {} messages at {}/s, {} sessions opened and ended · {started} · {commit}",
        ls.messages, ls.rate, ls.sessions_cycled
    );
    chart::draw(&r, &title, &svg)?;
    let section = report::long_markdown(&r, &meta);
    write_section(&md, report::LONG_START, report::LONG_END, &section)?;
    println!("\n{section}");
    println!(
        "bench: long run written to {}, {} and {}",
        md.display(),
        svg.display(),
        csv.display()
    );
    if let Err(e) = &r.restart {
        bail!("the restart after the long run failed: {e}");
    }
    Ok(())
}

#[cfg(test)]
mod rotation_tests {
    /// Each round starts one side later, every rate runs on every side in each round, and the
    /// step numbers follow the warm-up's.
    #[test]
    fn each_round_starts_one_side_later() {
        assert_eq!(
            super::rotation(3, 2, 2, 10),
            [
                (0, 0, 0, 11),
                (0, 0, 1, 12),
                (0, 0, 2, 13),
                (0, 1, 0, 14),
                (0, 1, 1, 15),
                (0, 1, 2, 16),
                (1, 0, 1, 17),
                (1, 0, 2, 18),
                (1, 0, 0, 19),
                (1, 1, 1, 20),
                (1, 1, 2, 21),
                (1, 1, 0, 22),
            ]
        );
    }
}
