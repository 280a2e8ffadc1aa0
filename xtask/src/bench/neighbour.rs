//! `cargo xtask bench --neighbour [--before BIN] [--smoke]`: what one heavy user costs every
//! other user's message sends (issue 12 item 2: "unrelated users never wait for each other").
//!
//! Each server (this build and, with `--before`, another build, e.g. the commit before the
//! change) gets the message-send workload of the full bench plus one *heavy* user: it started
//! [`Settings::heavy_sessions`] sessions of [`Settings::heavy_participants`] participants each
//! (pending invitations: nobody accepts), so each page of its session list is a large document
//! built from the core's state. During a step *with neighbour*, one connection fetches that
//! list back to back while the workload sends at a fixed rate; a step *quiet* runs the workload
//! alone. Steps go to (server, neighbour on/off) in turn, round after round, in rotating order,
//! so whatever else the machine does weighs on all of them alike. The table gives the medians
//! over the rounds of the send latency (from the intended send time) and of the neighbour's
//! lists a second. Writes `target/bench/neighbour.md` and prints it.

use super::chat::{Format, Plan, Workload, chat_target, path, post_json, user};
use super::http::{Conn, request};
use super::load::{Options, StepResult, Target, run_step};
use super::median;
use super::proc::{self, AUTHORIZATION, NetapiChat, start_netapi_chat, start_netapi_chat_bin};
use anyhow::{Result, bail};
use http::Method;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What the phase does.
pub struct Settings {
    /// Rates, msg/s.
    pub rates: Vec<u32>,
    /// Length of each step.
    pub step: Duration,
    /// Rounds over every (rate, server, neighbour on/off).
    pub rounds: usize,
    /// Load generator settings.
    pub opts: Options,
    /// The workload.
    pub plan: Plan,
    /// Message text length.
    pub text_len: usize,
    /// Sessions the heavy user started.
    pub heavy_sessions: usize,
    /// Participants of each (the heavy user included).
    pub heavy_participants: usize,
}

/// Limits raised so that the heavy user can set its sessions up (its invitations stay
/// pending for the whole run).
const HEAVY_ENV: [(&str, &str); 5] = [
    ("NETAPI_CHAT_MAX_PENDING_INVITATIONS", "1000000"),
    ("NETAPI_CHAT_MAX_PENDING_INVITATIONS_PER_INVITEE", "100000"),
    ("NETAPI_CHAT_INVITATION_RATE", "0"),
    ("NETAPI_CHAT_INVITATION_TIMEOUT_SECS", "86400"),
    ("NETAPI_CHAT_MAX_PARTICIPANTS", "1000"),
];

/// The heavy user: far from the workload's users.
fn heavy_user() -> String {
    user(9_000_000)
}

/// One server measured.
struct Server {
    name: String,
    chat: NetapiChat,
    _workload: Workload,
    target: Target,
    pool: Vec<Conn>,
}

/// Per (server, neighbour on/off) and rate: the steps, with the neighbour's lists a second.
type Steps = Vec<Vec<Vec<(StepResult, Option<f64>)>>>;

async fn server(root: &Path, s: &Settings, name: &str, bin: Option<&Path>) -> Result<Server> {
    let label = format!("neighbour-{name}");
    let chat = match bin {
        Some(b) => start_netapi_chat_bin(root, b, &label, &HEAVY_ENV)?,
        None => start_netapi_chat(root, &label, &HEAVY_ENV)?,
    };
    let (workload, target) = chat_target(
        chat.server.addr,
        &s.plan,
        Format::Json,
        s.text_len,
        chat.server.pid(),
        &[],
    )
    .await?;
    let mut conn = Conn::new(chat.server.addr);
    let heavy = heavy_user();
    let invitees: Vec<String> = (1..s.heavy_participants)
        .map(|i| format!(r#"{{"address":"{}"}}"#, user(9_000_000 + i)))
        .collect();
    let body = format!(
        r#"{{"chatSessionInformation":{{"subject":"heavy","participant":[{}]}}}}"#,
        invitees.join(",")
    );
    for _ in 0..s.heavy_sessions {
        post_json(&mut conn, &path(&heavy, "/chatSessions"), body.clone()).await?;
    }
    Ok(Server {
        name: name.to_owned(),
        chat,
        _workload: workload,
        target,
        pool: Vec::new(),
    })
}

/// Fetches the heavy user's session list back to back until `stop`; counts the answers.
fn neighbour(
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<Result<()>> {
    tokio::spawn(async move {
        let mut conn = Conn::new(addr);
        let list = path(&heavy_user(), "/chatSessions");
        while !stop.load(Ordering::Relaxed) {
            let req = request(
                Method::GET,
                &list,
                &[
                    ("accept", "application/json"),
                    ("authorization", AUTHORIZATION),
                ],
                String::new(),
            )?;
            let r = conn.send(req, Duration::from_secs(10)).await?;
            if !r.ok() {
                bail!("GET {list}: status {}", r.status);
            }
            done.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    })
}

/// Runs the phase and returns its report (markdown).
pub async fn run(
    root: &Path,
    s: &Settings,
    before: Option<PathBuf>,
    command: &str,
) -> Result<String> {
    let load_before = proc::loadavg();
    let started = Instant::now();
    let mut servers = Vec::new();
    if let Some(b) = &before {
        servers.push(server(root, s, "before", Some(b)).await?);
    }
    servers.push(server(root, s, "after", None).await?);
    super::warm_up(
        servers.iter_mut().map(|x| (&x.target, &mut x.pool)),
        &s.opts,
        300,
        s.rates[0],
    )
    .await?;
    // Side k: server k / 2, with the neighbour when k is odd.
    let sides = servers.len() * 2;
    let mut steps: Steps = vec![vec![Vec::new(); s.rates.len()]; sides];
    for (round, r, k, step) in super::rotation(sides, s.rounds, s.rates.len(), 300) {
        let (srv, busy) = (&mut servers[k / 2], k % 2 == 1);
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let task = busy.then(|| neighbour(srv.target.addr, Arc::clone(&stop), Arc::clone(&done)));
        let t0 = Instant::now();
        let res = run_step(
            &srv.target,
            &mut srv.pool,
            &s.opts,
            step,
            s.rates[r],
            s.step,
        )
        .await?;
        stop.store(true, Ordering::Relaxed);
        let lists = match task {
            Some(t) => {
                let n = done.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64();
                t.await??;
                Some(n)
            }
            None => None,
        };
        println!(
            "  neighbour {} {} round {}: {}{}",
            srv.name,
            if busy { "with neighbour" } else { "quiet" },
            round + 1,
            super::report::step_line(&res),
            lists
                .map(|n| format!(", {n:.1} lists/s"))
                .unwrap_or_default()
        );
        steps[k][r].push((res, lists));
    }
    for srv in servers.iter_mut() {
        if !srv.chat.server.running() {
            bail!(
                "netapi-chat ({}) exited during the neighbour phase",
                srv.name
            );
        }
    }
    let load_after = proc::loadavg();
    let m = proc::Machine::read();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Run {} · `{}` · {:.0} s · machine: `nproc` {} · {} · {}; load average (1/5/15 min) before: {} · after: {}\n",
        super::now_utc(),
        command,
        started.elapsed().as_secs_f64(),
        m.cores,
        m.memory,
        m.cpu,
        load_before,
        load_after
    );
    let _ = writeln!(
        md,
        "Workload: {} users in {} sessions, JSON; the neighbour: one user with {} sessions of {} participants fetching its session list back to back on one connection; {} rounds of {:.0} s steps per rate, server and neighbour on/off, in rotating order; medians over the rounds.\n",
        s.plan.users(),
        s.plan.sessions().len(),
        s.heavy_sessions,
        s.heavy_participants,
        s.rounds,
        s.step.as_secs_f64()
    );
    let _ = writeln!(
        md,
        "| server | neighbour | msg/s | achieved msg/s | POST p50 / p99 / p99.9 ms | neighbour lists/s |\n|---|---|---:|---:|---:|---:|"
    );
    let ms = |v: Vec<f64>| {
        median(v)
            .map(|x| format!("{:.2}", x / 1e6))
            .unwrap_or_else(|| "–".into())
    };
    for (k, per_rate) in steps.iter().enumerate() {
        let name = &servers[k / 2].name;
        for (r, rate) in s.rates.iter().enumerate() {
            let runs = &per_rate[r];
            let achieved = median(runs.iter().map(|(x, _)| x.achieved).collect());
            let lists = median(runs.iter().filter_map(|(_, n)| *n).collect());
            let _ = writeln!(
                md,
                "| {name} | {} | {rate} | {} | {} / {} / {} | {} |",
                if k % 2 == 1 { "on" } else { "off" },
                achieved
                    .map(|a| format!("{a:.0}"))
                    .unwrap_or_else(|| "–".into()),
                ms(runs.iter().map(|(x, _)| x.post.p50 as f64).collect()),
                ms(runs.iter().map(|(x, _)| x.post.p99 as f64).collect()),
                ms(runs.iter().map(|(x, _)| x.post.p999 as f64).collect()),
                lists
                    .map(|n| format!("{n:.1}"))
                    .unwrap_or_else(|| "–".into()),
            );
        }
    }
    let path = proc::target_dir(root).join("bench/neighbour.md");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, &md)?;
    println!("bench: wrote {}\n\n{md}", path.display());
    Ok(md)
}
