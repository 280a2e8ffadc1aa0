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

use super::chat::{path, post_json, user};
use super::compare::{ChatSide, Run, Steps, cell, write_report};
use super::http::{Conn, request};
use super::load::{StepResult, run_step};
use super::median;
use super::proc::AUTHORIZATION;
use anyhow::{Result, bail};
use http::Method;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What the phase does.
pub struct Settings {
    /// Rates, step length, rounds (over every rate, server and neighbour on/off), workload.
    pub steps: Steps,
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
    side: ChatSide,
}

/// Per (server, neighbour on/off) and rate: the steps, with the neighbour's lists a second.
type PerSide = Vec<Vec<Vec<(StepResult, Option<f64>)>>>;

async fn server(root: &Path, s: &Settings, name: &str, bin: Option<&Path>) -> Result<Server> {
    let side = ChatSide::start(
        root,
        &s.steps,
        &format!("neighbour-{name}"),
        bin,
        &HEAVY_ENV,
        &[],
    )
    .await?;
    let mut conn = Conn::new(side.target.addr);
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
        side,
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
    let run = Run::start(root);
    let st = &s.steps;
    let mut servers = Vec::new();
    if let Some(b) = &before {
        servers.push(server(root, s, "before", Some(b)).await?);
    }
    servers.push(server(root, s, "after", None).await?);
    super::warm_up(
        servers
            .iter_mut()
            .map(|x| (&x.side.target, &mut x.side.pool)),
        &st.opts,
        300,
        st.rates[0],
    )
    .await?;
    // Side k: server k / 2, with the neighbour when k is odd.
    let sides = servers.len() * 2;
    let mut steps: PerSide = vec![vec![Vec::new(); st.rates.len()]; sides];
    for (round, r, k, step) in super::rotation(sides, st.rounds, st.rates.len(), 300) {
        let (srv, busy) = (&mut servers[k / 2], k % 2 == 1);
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let task =
            busy.then(|| neighbour(srv.side.target.addr, Arc::clone(&stop), Arc::clone(&done)));
        let t0 = Instant::now();
        let res = run_step(
            &srv.side.target,
            &mut srv.side.pool,
            &st.opts,
            step,
            st.rates[r],
            st.step,
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
        srv.side.check_running(&srv.name, "neighbour")?;
    }
    let mut md = run.header(command);
    let _ = writeln!(
        md,
        "Workload: {} users in {} sessions, JSON; the neighbour: one user with {} sessions of {} participants fetching its session list back to back on one connection; {} rounds of {:.0} s steps per rate, server and neighbour on/off, in rotating order; medians over the rounds.\n",
        st.plan.users(),
        st.plan.sessions().len(),
        s.heavy_sessions,
        s.heavy_participants,
        st.rounds,
        st.step.as_secs_f64()
    );
    let _ = writeln!(
        md,
        "| server | neighbour | msg/s | achieved msg/s | POST p50 / p99 / p99.9 ms | neighbour lists/s |\n|---|---|---:|---:|---:|---:|"
    );
    let ms = |v: Vec<f64>| cell(median(v).map(|x| x / 1e6), 2);
    for (k, per_rate) in steps.iter().enumerate() {
        let name = &servers[k / 2].name;
        for (r, rate) in st.rates.iter().enumerate() {
            let runs = &per_rate[r];
            let achieved = median(runs.iter().map(|(x, _)| x.achieved).collect());
            let lists = median(runs.iter().filter_map(|(_, n)| *n).collect());
            let _ = writeln!(
                md,
                "| {name} | {} | {rate} | {} | {} / {} / {} | {} |",
                if k % 2 == 1 { "on" } else { "off" },
                cell(achieved, 0),
                ms(runs.iter().map(|(x, _)| x.post.p50 as f64).collect()),
                ms(runs.iter().map(|(x, _)| x.post.p99 as f64).collect()),
                ms(runs.iter().map(|(x, _)| x.post.p999 as f64).collect()),
                cell(lists, 1),
            );
        }
    }
    write_report(root, "neighbour.md", &md)?;
    Ok(md)
}
