//! The report: the results section of BENCHMARKS.md (machine, commands, tables, ratios,
//! targets), rewritten by every full run between two marker lines.

use super::chat::Plan;
use super::cost::{CostResult, Settings as CostSettings, median_cpu};
use super::load::{Percentiles, Series, StepResult};
use super::long::{LongResult, Sample};
use super::peer::Outcome;
use super::proc::Machine;
use super::scale::ScaleResult;
use std::fmt::Write as _;

/// The line before the generated section.
pub const START: &str =
    "<!-- bench:results:start (written by `cargo xtask bench`; edits here are overwritten) -->";
/// The line after it.
pub const END: &str = "<!-- bench:results:end -->";

/// 5 ms, the latency bound of the issue's targets, in ns.
pub const P99_BOUND_NS: u64 = 5_000_000;

/// Everything one run found.
pub struct Report {
    /// `--smoke`.
    pub smoke: bool,
    /// The machine.
    pub machine: Machine,
    /// `/proc/loadavg` before the run.
    pub load_before: String,
    /// `/proc/loadavg` after the run.
    pub load_after: String,
    /// When it started (`date -u`).
    pub started: String,
    /// How long it took, seconds (build excluded).
    pub secs: f64,
    /// `git describe --always --dirty` and what was uncommitted.
    pub git: String,
    /// The workload of the message-send phases.
    pub plan: Plan,
    /// Description of the load generator's settings.
    pub settings: Vec<String>,
    /// Bare-hyper baseline.
    pub baseline: Result<Series, String>,
    /// netapi-chat, JSON.
    pub json: Result<Series, String>,
    /// netapi-chat, XML.
    pub xml: Result<Series, String>,
    /// XML vs JSON cost phase.
    pub cost: Result<CostResult, String>,
    /// Its settings.
    pub cost_settings: CostSettings,
    /// Scale phase.
    pub scale: Result<ScaleResult, String>,
    /// The peer (`Err`: skipped, and why).
    pub peer: Result<Outcome, String>,
}

fn ms(ns: u64) -> String {
    let v = ns as f64 / 1e6;
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "–".to_owned())
}

fn lat(p: &Percentiles) -> String {
    if p.n == 0 {
        "– / – / –".to_owned()
    } else {
        format!("{} / {} / {}", ms(p.p50), ms(p.p99), ms(p.p999))
    }
}

/// One line of progress for a step.
pub fn step_line(s: &StepResult) -> String {
    let mut l = format!(
        "{:>6}/s → {:>8.1}/s, POST p50/p99/p99.9 {} ms",
        s.rate,
        s.achieved,
        lat(&s.post)
    );
    if let Some(n) = &s.notify {
        let _ = write!(l, ", notify {} ms ({}/{})", lat(n), n.n, s.notify_expected);
    }
    let _ = write!(
        l,
        ", errors {}, server CPU {} µs/msg {}%, generator {}%",
        s.errors + s.skipped,
        opt(s.server_cpu_us, 1),
        opt(s.server_cpu_pct, 0),
        opt(s.gen_cpu_pct, 0)
    );
    if let Some(e) = &s.first_error {
        let _ = write!(l, " [first error: {e}]");
    }
    l
}

fn rate(r: Option<u32>) -> String {
    r.map(|r| format!("{r}/s"))
        .unwrap_or_else(|| "none".to_owned())
}

fn series_table(out: &mut String, title: &str, series: &Result<Series, String>) {
    let _ = writeln!(out, "#### {title}\n");
    let s = match series {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(out, "Failed: {e}\n");
            return;
        }
    };
    let has_notify = s.steps.iter().any(|x| x.notify.is_some());
    if has_notify {
        out.push_str("| target msg/s | achieved msg/s | POST p50 / p99 / p99.9 ms | notification p50 / p99 / p99.9 ms | notifications received / expected | errors | server CPU µs/msg | server CPU % | generator CPU % | held |\n|---:|---:|---|---|---:|---:|---:|---:|---:|:-:|\n");
    } else {
        out.push_str("| target msg/s | achieved msg/s | POST p50 / p99 / p99.9 ms | errors | server CPU µs/msg | server CPU % | generator CPU % | held |\n|---:|---:|---|---:|---:|---:|---:|:-:|\n");
    }
    for x in &s.steps {
        let held = if x.held() { "yes" } else { "no" };
        let errors = x.errors + x.skipped;
        if has_notify {
            let n = x.notify.unwrap_or_default();
            let _ = writeln!(
                out,
                "| {} | {:.0} | {} | {} | {} / {} | {} | {} | {} | {} | {} |",
                x.rate,
                x.achieved,
                lat(&x.post),
                lat(&n),
                n.n,
                x.notify_expected,
                errors,
                opt(x.server_cpu_us, 1),
                opt(x.server_cpu_pct, 0),
                opt(x.gen_cpu_pct, 0),
                held
            );
        } else {
            let _ = writeln!(
                out,
                "| {} | {:.0} | {} | {} | {} | {} | {} | {} |",
                x.rate,
                x.achieved,
                lat(&x.post),
                errors,
                opt(x.server_cpu_us, 1),
                opt(x.server_cpu_pct, 0),
                opt(x.gen_cpu_pct, 0),
                held
            );
        }
    }
    let _ = writeln!(
        out,
        "\nHighest rate held with POST p99 < 5 ms: **{}**{}; at any latency: {}.",
        rate(s.max_rate_post(P99_BOUND_NS)),
        if has_notify {
            format!(
                "; with notification p99 < 5 ms: **{}**",
                rate(s.max_rate_notify(P99_BOUND_NS))
            )
        } else {
            String::new()
        },
        rate(s.max_rate_held())
    );
    if let Some(e) = s.steps.iter().find_map(|x| x.first_error.as_ref()) {
        let _ = writeln!(out, "First error: `{e}`.");
    }
    if let Some(stop) = &s.stopped {
        let _ = writeln!(out, "Series {stop}.");
    }
    out.push('\n');
}

/// Whether the series' highest held rate is its top step (so the ceiling lies above it).
fn capped(s: &Series, max: Option<u32>) -> bool {
    s.stopped.is_none() && max.is_some() && max == s.steps.last().map(|x| x.rate)
}

/// Σ CPU / Σ messages over the rates both series held.
fn cpu_per_msg_common(a: &Series, b: &Series) -> Option<(f64, f64, Vec<u32>)> {
    let (mut ca, mut na, mut cb, mut nb, mut rates) = (0.0, 0.0, 0.0, 0.0, Vec::new());
    for x in a.steps.iter().filter(|x| x.held()) {
        let Some(y) = b.at(x.rate).filter(|y| y.held()) else {
            continue;
        };
        let (Some(cx), Some(cy)) = (x.server_cpu_us, y.server_cpu_us) else {
            continue;
        };
        ca += cx * x.ok as f64;
        na += x.ok as f64;
        cb += cy * y.ok as f64;
        nb += y.ok as f64;
        rates.push(x.rate);
    }
    (na > 0.0 && nb > 0.0).then(|| (ca / na, cb / nb, rates))
}

fn per(delta_bytes: i64, count: usize) -> String {
    if count == 0 {
        return "–".to_owned();
    }
    format!("{:.0}", delta_bytes as f64 / count as f64)
}

fn kib_bytes_per(delta_kib: i64, count: usize) -> String {
    if count == 0 {
        return "–".to_owned();
    }
    format!("{:.0}", delta_kib as f64 * 1024.0 / count as f64)
}

impl Report {
    /// The markdown of the results section (without the marker lines).
    pub fn markdown(&self) -> String {
        let mut o = String::new();
        let m = &self.machine;
        let _ = writeln!(
            o,
            "## Results{}\n",
            if self.smoke {
                " (smoke run: tiny settings, not figures to quote)"
            } else {
                ""
            }
        );
        let _ = writeln!(
            o,
            "Run {} · {:.0} s (build excluded) · `{}`\n",
            self.started, self.secs, self.git
        );
        let _ = writeln!(o, "### Machine\n");
        let _ = writeln!(
            o,
            "- `nproc`: {} · memory: {} · CPU: {}\n- {} · {}\n- load average (1/5/15 min) before the run: {} · after: {}\n- **The load generator, the callback listeners and the server under test share these {} cores**: every figure below includes their competition for CPU.\n",
            m.cores, m.memory, m.cpu, m.kernel, m.rustc, self.load_before, self.load_after, m.cores
        );
        let _ = writeln!(o, "### Commands\n");
        o.push_str("```sh\ncargo xtask bench           # full run; rewrites this section\ncargo xtask bench --smoke   # tiny setting for CI; writes target/bench/BENCHMARKS.smoke.md\ncargo xtask bench --no-peer # full run without the peer\ncargo xtask bench --smoke --peer # smoke run with the peer\n```\n\n");
        let _ = writeln!(o, "### Settings\n");
        let _ = writeln!(o, "- message-send workload: {}", self.plan.describe());
        for s in &self.settings {
            let _ = writeln!(o, "- {s}");
        }
        o.push('\n');

        let _ = writeln!(o, "### Message send\n");
        series_table(
            &mut o,
            "Baseline: bare hyper, read + parse the JSON body, answer 201",
            &self.baseline,
        );
        series_table(&mut o, "netapi-chat, JSON", &self.json);
        series_table(
            &mut o,
            "netapi-chat, XML (XML bodies, answers and notifications)",
            &self.xml,
        );
        match &self.peer {
            Ok(Outcome::Ran(p)) => {
                series_table(
                    &mut o,
                    &format!(
                        "Peer: {} — PUT …/send/m.room.message, delivery seen by /sync long-poll",
                        p.name
                    ),
                    &Ok(p.series.clone()),
                );
                let _ = writeln!(
                    o,
                    "Peer notes: RSS after the series {} KiB; /sync timelines cut short (`limited`): {}; failed /sync calls: {}; install took {:.0} s (0 = already installed).\n",
                    p.rss_kib
                        .map(|r| r.to_string())
                        .unwrap_or_else(|| "?".into()),
                    p.limited,
                    p.sync_errors,
                    p.install_secs
                );
            }
            Ok(Outcome::Unavailable(why)) => {
                let _ = writeln!(o, "#### Peer\n\nPeer: **unavailable: {why}**\n");
            }
            Err(why) => {
                let _ = writeln!(o, "#### Peer\n\nPeer: {why}\n");
            }
        }

        self.scale_section(&mut o);
        self.ratios(&mut o);
        o
    }

    fn scale_section(&self, o: &mut String) {
        let _ = writeln!(o, "### Scale (netapi-chat, JSON)\n");
        let s = match &self.scale {
            Ok(s) => s,
            Err(e) => {
                let _ = writeln!(o, "Failed: {e}\n");
                return;
            }
        };
        o.push_str("| state | server RSS KiB | RSS bytes per session / message | data directory bytes | disk bytes per session / message | time to open |\n|---|---:|---:|---:|---:|---:|\n");
        let _ = writeln!(
            o,
            "| idle (just started) | {} | – | – | – | – |",
            s.idle_kib
        );
        let _ = writeln!(
            o,
            "| {} workload sessions ({} subscribed users with listeners), after a latency step | {} | – | {} | – | – |",
            s.few_sessions, s.few_users, s.before_bulk_kib, s.before_bulk_disk
        );
        for p in &s.points {
            let delta = p.rss_kib as i64 - s.before_bulk_kib as i64;
            let _ = writeln!(
                o,
                "| + {} open sessions (created and accepted through the API) | {} | {} | {} | {} | {:.1} s |",
                p.sessions,
                p.rss_kib,
                kib_bytes_per(delta, p.sessions),
                p.disk_bytes,
                per(p.disk_bytes as i64 - s.before_bulk_disk as i64, p.sessions),
                p.secs
            );
        }
        let delta_msgs = s.rss_after_messages as i64 - s.rss_before_messages as i64;
        let _ = writeln!(
            o,
            "| + {} stored messages ({} characters of text each) | {} | {} | {} | {} | – |",
            s.messages,
            s.text_len,
            s.rss_after_messages,
            kib_bytes_per(delta_msgs, s.messages),
            s.disk_after_messages,
            per(
                s.disk_after_messages as i64 - s.disk_before_messages as i64,
                s.messages
            )
        );
        o.push_str("\nBytes per session are (RSS or data directory at the point − before the bulk sessions) ÷ sessions; each bulk session has its own two users (no subscriptions). RSS includes the allocator's and SQLite's caches; the data directory includes the SQLite WAL, so both move in steps.\n");
        if s.bulk_errors > 0 {
            let _ = writeln!(
                o,
                "\n{} API calls failed while opening sessions or storing messages; first: `{}`",
                s.bulk_errors,
                s.first_error.as_deref().unwrap_or("?")
            );
        }
        let many = s.points.last().map(|p| p.sessions).unwrap_or(0);
        let _ = writeln!(
            o,
            "\nMessage-send latency at the same fixed rate, with {} sessions vs with {} + {many}:\n",
            s.few_sessions, s.few_sessions
        );
        o.push_str("| open sessions | target msg/s | achieved msg/s | POST p50 / p99 / p99.9 ms | notification p50 / p99 / p99.9 ms | server CPU µs/msg |\n|---:|---:|---:|---|---|---:|\n");
        for (label, x) in [
            (s.few_sessions.to_string(), &s.few),
            (format!("{} + {many}", s.few_sessions), &s.many),
        ] {
            let _ = writeln!(
                o,
                "| {label} | {} | {:.0} | {} | {} | {} |",
                x.rate,
                x.achieved,
                lat(&x.post),
                lat(&x.notify.unwrap_or_default()),
                opt(x.server_cpu_us, 1)
            );
        }
        o.push('\n');
    }

    fn ratios(&self, o: &mut String) {
        let _ = writeln!(o, "### Ratios\n");
        let b = P99_BOUND_NS;
        let mut targets: Vec<(String, String, String)> = Vec::new();

        // 1. message-send max rate / baseline max rate.
        match (&self.json, &self.baseline) {
            (Ok(j), Ok(base)) => {
                let (rj, rb) = (j.max_rate_post(b), base.max_rate_post(b));
                let text = match (rj, rb) {
                    (Some(x), Some(y)) => {
                        let note = match (capped(j, rj), capped(base, rb)) {
                            (false, false) => String::new(),
                            (true, false) => {
                                " (netapi-chat held the top step: a lower bound)".into()
                            }
                            (false, true) => {
                                " (the baseline held the top step: an upper bound)".into()
                            }
                            (true, true) => " (both held the top step: not a ceiling ratio)".into(),
                        };
                        targets.push((
                            "message-send max rate ≥ 50 % of the bare-hyper baseline".into(),
                            format!("{:.0} %", 100.0 * f64::from(x) / f64::from(y)),
                            if 2 * x >= y { "met" } else { "not met" }.into(),
                        ));
                        format!(
                            "{x}/s ÷ {y}/s = **{:.2}**{note}",
                            f64::from(x) / f64::from(y)
                        )
                    }
                    _ => format!("n/a (netapi-chat: {}, baseline: {})", rate(rj), rate(rb)),
                };
                let _ = writeln!(
                    o,
                    "- **message-send max rate / baseline max rate** (highest rate held with POST p99 < 5 ms, JSON): {text}"
                );
                if let (Some(x), Some(y)) = (j.max_rate_held(), base.max_rate_held()) {
                    let _ = writeln!(
                        o,
                        "- highest rate held at any latency, netapi-chat JSON / baseline: {x}/s ÷ {y}/s = {:.2}{}",
                        f64::from(x) / f64::from(y),
                        if capped(base, Some(y)) {
                            " (the baseline held its top step)"
                        } else {
                            ""
                        }
                    );
                }
                if let Some((cj, cb, rates)) = cpu_per_msg_common(j, base) {
                    let _ = writeln!(
                        o,
                        "- server CPU per message, netapi-chat JSON / baseline (steps both held: {}): {cj:.1} µs ÷ {cb:.1} µs = **{:.1}×**",
                        join_rates(&rates),
                        cj / cb
                    );
                }
            }
            _ => {
                let _ = writeln!(
                    o,
                    "- message-send max rate / baseline max rate: n/a (a series failed)"
                );
            }
        }

        // POST → notification p99 at 5,000 msg/s.
        if let Ok(j) = &self.json {
            let v = match j.at(5000) {
                Some(x) => {
                    let n = x.notify.unwrap_or_default();
                    let ok = x.held() && n.p99 <= b;
                    targets.push((
                        "POST → notification p99 ≤ 5 ms at 5,000 msg/s".into(),
                        format!(
                            "{} ms{}",
                            ms(n.p99),
                            if x.held() { "" } else { " (step not held)" }
                        ),
                        if ok { "met" } else { "not met" }.into(),
                    ));
                    format!("{} ms (achieved {:.0}/s)", ms(n.p99), x.achieved)
                }
                None => "not reached (the series stopped below 5,000/s)".to_owned(),
            };
            if j.at(5000).is_none() {
                targets.push((
                    "POST → notification p99 ≤ 5 ms at 5,000 msg/s".into(),
                    "step not reached".into(),
                    "not met".into(),
                ));
            }
            let _ = writeln!(o, "- POST → notification p99 at 5,000 msg/s (JSON): {v}");
        }

        // 2. netapi-chat / peer at equal p99.
        match (&self.json, &self.peer) {
            (Ok(j), Ok(Outcome::Ran(p))) => {
                let ps = &p.series;
                let best = ps.steps.iter().filter(|s| s.held()).max_by_key(|s| s.rate);
                let text = match best {
                    Some(pb) => {
                        // Compare at 5 ms if the peer made it; else at the peer's own p99.
                        let bound = if pb.post.p99 < b { b } else { pb.post.p99 };
                        let peer_rate = ps
                            .steps
                            .iter()
                            .filter(|s| s.held() && s.post.p99 <= bound)
                            .map(|s| s.rate)
                            .max()
                            .unwrap_or(pb.rate);
                        let ours = j
                            .steps
                            .iter()
                            .filter(|s| s.held() && s.post.p99 <= bound)
                            .map(|s| s.rate)
                            .max();
                        match ours {
                            Some(r) => {
                                let ratio = f64::from(r) / f64::from(peer_rate);
                                targets.push((
                                    "≥ 10 × the peer's sustained rate at the same p99".into(),
                                    format!(
                                        "{ratio:.1}×{}",
                                        if capped(j, Some(r)) {
                                            " (lower bound)"
                                        } else {
                                            ""
                                        }
                                    ),
                                    if ratio >= 10.0 {
                                        "met (rate; durability: see notes)"
                                    } else {
                                        "not met"
                                    }
                                    .into(),
                                ));
                                format!(
                                    "at POST p99 ≤ {} ms: netapi-chat {r}/s ÷ {} {peer_rate}/s = **{ratio:.1}×**{}",
                                    ms(bound),
                                    p.name,
                                    if capped(j, Some(r)) {
                                        " (netapi-chat held its top step: a lower bound)"
                                    } else {
                                        ""
                                    }
                                )
                            }
                            None => format!(
                                "n/a: netapi-chat held no step with POST p99 ≤ {} ms",
                                ms(bound)
                            ),
                        }
                    }
                    None => {
                        let first = ps.steps.first();
                        format!(
                            "n/a: the peer held no step (lowest step {})",
                            first.map(step_line).unwrap_or_else(|| "not run".into())
                        )
                    }
                };
                let _ = writeln!(o, "- **netapi-chat / peer at equal p99**: {text}");
                if let Some(x) = ps.steps.iter().filter(|s| s.held()).max_by_key(|s| s.rate)
                    && let Some(y) = j.at(x.rate)
                {
                    let _ = writeln!(
                        o,
                        "- at the peer's highest held rate ({}/s): POST p99 {} ms (peer) vs {} ms (netapi-chat); notification p99 {} ms vs {} ms; server CPU {} vs {} µs/msg",
                        x.rate,
                        ms(x.post.p99),
                        ms(y.post.p99),
                        ms(x.notify.unwrap_or_default().p99),
                        ms(y.notify.unwrap_or_default().p99),
                        opt(x.server_cpu_us, 0),
                        opt(y.server_cpu_us, 1)
                    );
                }
            }
            (_, Ok(Outcome::Unavailable(why))) => {
                let _ = writeln!(
                    o,
                    "- netapi-chat / peer at equal p99: n/a (peer unavailable: {why})"
                );
            }
            (_, Err(why)) => {
                let _ = writeln!(o, "- netapi-chat / peer at equal p99: n/a ({why})");
            }
            _ => {
                let _ = writeln!(
                    o,
                    "- netapi-chat / peer at equal p99: n/a (a series failed)"
                );
            }
        }

        // 3. XML cost / JSON cost.
        match &self.cost {
            Ok(c) => match (median_cpu(&c.xml), median_cpu(&c.json)) {
                (Some(cx), Some(cj)) if cj > 0.0 => {
                    let r = cx / cj;
                    targets.push((
                        "XML ≤ 1.3 × the CPU cost of JSON".into(),
                        format!("{r:.2}×"),
                        if r <= 1.3 { "met" } else { "not met" }.into(),
                    ));
                    let _ = writeln!(
                        o,
                        "- **XML cost / JSON cost** (server CPU per message, median of {} alternating JSON/XML steps of {:.0} s at {}/s, one server per format): {cx:.1} µs ÷ {cj:.1} µs = **{r:.2}×**",
                        c.json.len().min(c.xml.len()),
                        self.cost_settings.step.as_secs_f64(),
                        self.cost_settings.rate
                    );
                    let each = |v: &[StepResult]| {
                        v.iter()
                            .map(|s| {
                                format!("{} (p99 {} ms)", opt(s.server_cpu_us, 1), ms(s.post.p99))
                            })
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    let _ = writeln!(
                        o,
                        "  - JSON steps, µs/msg: {}; XML steps: {}",
                        each(&c.json),
                        each(&c.xml)
                    );
                }
                _ => {
                    let _ = writeln!(o, "- XML cost / JSON cost: n/a (no CPU figures)");
                }
            },
            Err(e) => {
                let _ = writeln!(
                    o,
                    "- XML cost / JSON cost: n/a (the cost phase failed: {e})"
                );
            }
        }
        if let (Ok(j), Ok(x)) = (&self.json, &self.xml)
            && let (Some(rx), Some(rj)) = (x.max_rate_post(b), j.max_rate_post(b))
        {
            let _ = writeln!(
                o,
                "- highest rate held with POST p99 < 5 ms, XML / JSON: {rx}/s ÷ {rj}/s = {:.2}",
                f64::from(rx) / f64::from(rj)
            );
        }

        if let Ok(s) = &self.scale
            && let Some(last) = s.points.last()
        {
            let per = (last.rss_kib as f64 - s.before_bulk_kib as f64) * 1024.0
                / last.sessions.max(1) as f64;
            targets.push((
                "≤ 2 KiB resident memory per idle session".into(),
                format!("{per:.0} bytes ({} sessions)", last.sessions),
                if per <= 2048.0 { "met" } else { "not met" }.into(),
            ));
            let (f, m) = (s.few.post.p99, s.many.post.p99);
            let growth = if f > 0 { m as f64 / f as f64 } else { 0.0 };
            targets.push((
                format!(
                    "no latency growth from {} to {} sessions (POST p99; within 25 % counted as none)",
                    s.few_sessions,
                    s.few_sessions + last.sessions
                ),
                format!("{} → {} ms ({growth:.2}×)", ms(f), ms(m)),
                if growth <= 1.25 { "met" } else { "not met" }.into(),
            ));
        }

        let _ = writeln!(o, "\n### Targets of issue 6\n");
        o.push_str("| target | measured | status |\n|---|---|---|\n");
        for (t, v, s) in &targets {
            let _ = writeln!(o, "| {t} | {v} | {s} |");
        }
        o.push_str("\nDurability is not measured here. netapi-chat ran with its default settings (its SQLite store in a fresh data directory under `target/bench/`, default `NETAPI_CHAT_SYNC`); Synapse persists each event to SQLite before answering.\n");
    }
}

fn join_rates(r: &[u32]) -> String {
    r.iter()
        .map(|x| format!("{x}/s"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Replaces what lies between the marker lines `start` and `end` of `doc` with `section`;
/// appends the markers and the section when `doc` has none.
pub fn splice_between(doc: &str, start: &str, end: &str, section: &str) -> String {
    let body = format!("{start}\n\n{}\n{end}\n", section.trim_end());
    match (doc.find(start), doc.find(end)) {
        (Some(a), Some(b)) if b > a => {
            let after = &doc[b + end.len()..];
            format!("{}{body}{}", &doc[..a], after.trim_start_matches('\n'))
        }
        _ => {
            let mut d = doc.trim_end().to_owned();
            if !d.is_empty() {
                d.push_str("\n\n");
            }
            d.push_str(&body);
            d
        }
    }
}

/// The line before the long run's generated section.
pub const LONG_START: &str =
    "<!-- bench:long:start (written by `cargo xtask bench --long`; edits here are overwritten) -->";
/// The line after it.
pub const LONG_END: &str = "<!-- bench:long:end -->";

/// What the long run's section says besides the measurements.
pub struct LongMeta {
    /// When it started (`date -u`).
    pub started: String,
    /// `git describe` and what was uncommitted.
    pub git: String,
    /// The machine.
    pub machine: Machine,
    /// `/proc/loadavg` before the run.
    pub load_before: String,
    /// And after (the restart included).
    pub load_after: String,
    /// The chart's file name, relative to the markdown file.
    pub chart: String,
    /// The CSV's path, as shown to the reader.
    pub csv: String,
    /// The command that made it.
    pub command: String,
}

fn mib_s(bytes: f64) -> String {
    format!("{:.1}", bytes / (1024.0 * 1024.0))
}

/// Bytes per message between two samples (`–` when no message was sent between them).
fn per_msg(a: &Sample, b: &Sample, v: impl Fn(&Sample) -> f64) -> String {
    let n = b.messages.saturating_sub(a.messages);
    if n == 0 {
        return "–".to_owned();
    }
    format!("{:.0}", (v(b) - v(a)) / n as f64)
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// The markdown of the long run's section (without the marker lines).
pub fn long_markdown(r: &LongResult, meta: &LongMeta) -> String {
    let mut o = String::new();
    let s = &r.samples;
    let (Some(first), Some(last)) = (s.first(), s.last()) else {
        return "No samples.\n".to_owned();
    };
    let mid = &s[s.len() / 2];
    let loads: Vec<u64> = s.iter().map(|x| (x.load1 * 100.0).round() as u64).collect();
    let load_max = loads.iter().copied().max().unwrap_or(0);
    let load_min = loads.iter().copied().min().unwrap_or(0);
    let _ = writeln!(
        o,
        "Run {} · {:.0} s of sending · `{}` · `{}`\n",
        meta.started, r.secs, meta.git, meta.command
    );
    let m = &meta.machine;
    let _ = writeln!(
        o,
        "- machine: `nproc` {} · {} · {}; load average (1/5/15 min) before: {} · after: {}; 1-minute load during the run: {:.2} – {:.2} (median {:.2}). **Other engineers' builds share these cores**: latency figures are noisy under that, memory and disk growth per message are not.",
        m.cores,
        m.memory,
        m.cpu,
        meta.load_before,
        meta.load_after,
        load_min as f64 / 100.0,
        load_max as f64 / 100.0,
        median(loads) as f64 / 100.0
    );
    let _ = writeln!(
        o,
        "- workload: {} subscribed with their own callback listeners, sessions opened and accepted first (they stay open); {} messages of {} characters sent open loop at {}/s over {} connections, message `seq` to session `seq mod M`; alongside, {} sessions opened, accepted and ended (`DELETE`) at an even pace by 1-1 pairs of users without subscriptions (a pool of 1,000 pairs); a sample every {:.0} s; samples in `{}`",
        r.plan,
        r.messages,
        r.text_len,
        r.rate,
        r.connections,
        r.sessions_planned,
        r.sample_secs,
        meta.csv
    );
    let _ = writeln!(
        o,
        "- netapi-chat: the release binary with its default settings, fresh data directory, log to /dev/null\n"
    );
    let _ = writeln!(
        o,
        "![Long run: RSS, data directory and WAL, latency, rates, load over time]({})\n",
        meta.chart
    );

    let msgs = last.messages.saturating_sub(first.messages);
    let hours_per_msg = 1.0 / (f64::from(r.rate) * 3600.0);
    let per_hour = |delta: f64| {
        if msgs == 0 {
            "–".to_owned()
        } else {
            format!(
                "{:.0}",
                delta / msgs as f64 / hours_per_msg / (1024.0 * 1024.0)
            )
        }
    };
    let rss = |x: &Sample| x.rss_kib as f64 * 1024.0;
    let data = |x: &Sample| x.data_bytes as f64;
    let db = |x: &Sample| x.data_bytes.saturating_sub(x.wal_bytes) as f64;
    let wal = |x: &Sample| x.wal_bytes as f64;
    let _ = writeln!(
        o,
        "| after {} messages and {} sessions ended | at start (set-up done) | at the end | growth | bytes per message, whole run | bytes per message, second half | MiB per hour at {}/s |\n|---|---:|---:|---:|---:|---:|---:|",
        msgs, last.sessions, r.rate
    );
    for (name, v) in [
        ("server RSS, MiB", &rss as &dyn Fn(&Sample) -> f64),
        ("data directory (all files), MiB", &data),
        ("data directory without the WAL, MiB", &db),
    ] {
        let _ = writeln!(
            o,
            "| {name} | {} | {} | {} | {} | {} | {} |",
            mib_s(v(first)),
            mib_s(v(last)),
            mib_s(v(last) - v(first)),
            per_msg(first, last, v),
            per_msg(mid, last, v),
            per_hour(v(last) - v(first))
        );
    }
    // The WAL grows and is reset over and over: a rate per message would only tell where in
    // its cycle the last sample fell.
    let _ = writeln!(
        o,
        "| WAL, MiB (grows and is reset: see below) | {} | {} | – | – | – | – |",
        mib_s(wal(first)),
        mib_s(wal(last))
    );
    let wal_max = s.iter().map(|x| x.wal_peak_bytes).max().unwrap_or(0);
    let resets: u64 = s.iter().map(|x| x.wal_resets).sum();
    let _ = writeln!(
        o,
        "\nPer message figures include that run's share of ended sessions ({:.2} per message); the data directory and WAL rows are read at the samples, so they move in steps with the WAL. WAL (polled every {} ms): largest {} MiB; reset (shrunk by half or more between two polls) {} time(s) in {:.0} s.\n",
        last.sessions as f64 / msgs.max(1) as f64,
        r.wal_poll_ms,
        mib_s(wal_max as f64),
        resets,
        last.t
    );

    let x = &r.overall;
    let n = x.notify.unwrap_or_default();
    let windows: Vec<&Sample> = s.iter().filter(|w| w.window.n > 0).collect();
    let p99s: Vec<u64> = windows.iter().map(|w| w.window.p99).collect();
    let p999s: Vec<u64> = windows.iter().map(|w| w.window.p999).collect();
    let over = windows
        .iter()
        .filter(|w| w.window.p999 > 10_000_000)
        .count();
    let _ = writeln!(
        o,
        "Message send over the whole run: achieved {:.0}/s of {}/s; POST p50 / p99 / p99.9 **{}** ms; POST → notification {} ms ({} of {} notifications received); {} failed sends; {} sessions cycled, {} failed{}.\n",
        x.achieved,
        r.rate,
        lat(&x.post),
        lat(&n),
        n.n,
        x.notify_expected,
        x.errors + x.skipped,
        r.cycled,
        r.cycle_errors,
        r.first_cycle_error
            .as_ref()
            .map(|e| format!(" (first: `{e}`)"))
            .unwrap_or_default()
    );
    if let Some(e) = &x.first_error {
        let _ = writeln!(o, "First failed send: `{e}`.\n");
    }
    let _ = writeln!(
        o,
        "Per {:.0} s window: p99 median {} ms, worst {} ms; p99.9 median {} ms, worst {} ms; windows with p99.9 > 10 ms: **{} of {}**.\n",
        r.sample_secs,
        ms(median(p99s.clone())),
        ms(p99s.iter().copied().max().unwrap_or(0)),
        ms(median(p999s.clone())),
        ms(p999s.iter().copied().max().unwrap_or(0)),
        over,
        windows.len()
    );

    o.push_str("| minute | messages | sessions ended | RSS MiB | data dir MiB | WAL MiB (largest in the window) | window p50 / p99 / p99.9 ms | worst window p99.9 since the row before, ms | msg/s | load (1 min) |\n|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|\n");
    let rows = 10.min(s.len().saturating_sub(1)).max(1);
    let mut prev = 0usize;
    for k in 1..=rows {
        let i = (k * (s.len() - 1)) / rows;
        let w = &s[i];
        let worst = s[prev + 1..=i.max(prev + 1).min(s.len() - 1)]
            .iter()
            .map(|y| y.window.p999)
            .max()
            .unwrap_or(0);
        // The last window is cut short where sending ended: its rate and latencies are noise.
        let full = w.window_secs >= r.sample_secs / 2.0;
        let _ = writeln!(
            o,
            "| {:.1} | {} | {} | {} | {} | {} ({}) | {} | {} | {} | {:.2} |",
            w.t / 60.0,
            w.messages,
            w.sessions,
            mib_s(rss(w)),
            mib_s(data(w)),
            mib_s(wal(w)),
            mib_s(w.wal_peak_bytes as f64),
            if full {
                lat(&w.window)
            } else {
                "(last, short window)".to_owned()
            },
            ms(worst),
            if full {
                format!("{:.0}", w.rate)
            } else {
                "–".to_owned()
            },
            w.load1
        );
        prev = i;
    }
    o.push('\n');

    let _ = writeln!(
        o,
        "#### Restart after SIGKILL, on the run's data directory\n"
    );
    match &r.restart {
        Ok(rs) => {
            let _ = writeln!(
                o,
                "| stored messages | sessions ended / open | data directory MiB (WAL) | RSS before the kill MiB | start → listening | start → first 2xx (GET …/subscriptions) | per stored message | RSS after restart MiB |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n| {} | {} / {} | {} ({}) | {} | {:.2} s | **{:.2} s** | {:.1} µs | {} |\n",
                rs.messages,
                rs.sessions_ended,
                rs.sessions_open,
                mib_s(rs.data_bytes as f64),
                mib_s(rs.wal_bytes as f64),
                mib_s(rs.rss_before_kib as f64 * 1024.0),
                rs.to_listen,
                rs.to_answer,
                rs.to_answer * 1e6 / rs.messages.max(1) as f64,
                mib_s(rs.rss_after_kib as f64 * 1024.0)
            );
        }
        Err(e) => {
            let _ = writeln!(o, "Failed: {e}\n");
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replaces the results section of `doc` (between [`START`] and [`END`]) with `section`,
    /// as `cargo xtask bench` writes it into BENCHMARKS.md.
    fn splice(doc: &str, section: &str) -> String {
        splice_between(doc, START, END, section)
    }

    #[test]
    fn splice_replaces_only_the_section() {
        let doc = format!("# B\n\nintro\n\n{START}\nold\n{END}\n\ntail\n");
        let out = splice(&doc, "new");
        assert!(out.starts_with("# B\n\nintro\n\n"));
        assert!(out.contains("\nnew\n"));
        assert!(!out.contains("old"));
        assert!(out.ends_with("tail\n"));
        assert_eq!(splice(&out, "new"), out);
        assert!(splice("# B\n", "x").contains(START));
        let both = splice_between(&out, LONG_START, LONG_END, "long");
        assert!(both.contains("\nnew\n") && both.contains("\nlong\n"));
        assert_eq!(splice(&both, "new"), both);
    }
}
