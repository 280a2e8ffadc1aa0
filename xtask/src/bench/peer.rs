//! The real peer: Synapse, the Matrix homeserver, from PyPI (into a venv under
//! `target/bench/`), on its default embedded SQLite store, driven through the client-server
//! API with the same users, sessions (rooms), rate steps and message size as netapi-chat:
//! `PUT /_matrix/client/v3/rooms/{roomId}/send/m.room.message/{txnId}` to send, one `/sync`
//! long-poll loop per user to receive.
//!
//! Anything that goes wrong here makes the peer "unavailable: reason" in the report; it never
//! fails the whole bench.

use super::chat::Plan;
use super::http::{Conn, Reply, encode, request};
use super::listen::{Collector, message_text};
use super::load::{MakeRequest, Options, Series, Target, run_series};
use super::proc;
use anyhow::{Context, Result, bail};
use http::Method;
use sha1::{Digest, Sha1};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What the peer phase found.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Not measured, and why.
    Unavailable(String),
    /// Measured.
    Ran(PeerRun),
}

/// A measured peer.
#[derive(Clone, Debug)]
pub struct PeerRun {
    /// e.g. "Synapse 1.163.2 (SQLite)".
    pub name: String,
    /// The message-send series.
    pub series: Series,
    /// RSS after the series, KiB.
    pub rss_kib: Option<u64>,
    /// Seconds spent installing (0 when the venv was already there).
    pub install_secs: f64,
    /// Timelines Synapse cut short (`limited`) during the series: messages a /sync skipped.
    pub limited: u64,
    /// /sync requests that failed.
    pub sync_errors: u64,
}

/// Runs the peer phase, never failing: a failure becomes [`Outcome::Unavailable`].
pub async fn run(
    root: &Path,
    plan: &Plan,
    opts: &Options,
    rates: &[u32],
    text_len: usize,
    budget: Duration,
) -> Outcome {
    let deadline = Instant::now() + budget;
    match try_run(root, plan, opts, rates, text_len, deadline).await {
        Ok(r) => Outcome::Ran(r),
        Err(e) => {
            let mut reason = format!("{e:#}").replace('\n', " ");
            reason.truncate(400);
            Outcome::Unavailable(reason)
        }
    }
}

/// Creates the venv and installs Synapse when it is not there yet.
async fn install(venv: &Path, deadline: Instant) -> Result<f64> {
    let python = venv.join("bin/python");
    let has_synapse = |py: &Path| {
        Command::new(py)
            .args(["-c", "import synapse.app.homeserver"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if has_synapse(&python) {
        return Ok(0.0);
    }
    let t0 = Instant::now();
    let left = deadline.saturating_duration_since(Instant::now());
    let step = |mut cmd: tokio::process::Command, what: &'static str| async move {
        cmd.kill_on_drop(true).stdout(Stdio::null());
        let out = tokio::time::timeout(left, cmd.output())
            .await
            .with_context(|| format!("{what} took longer than {left:?}"))?
            .with_context(|| format!("running {what}"))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let tail: String = err.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
            bail!("{what} failed: {tail}");
        }
        Ok(())
    };
    let mut venv_cmd = tokio::process::Command::new("python3");
    venv_cmd.arg("-m").arg("venv").arg(venv);
    step(venv_cmd, "python3 -m venv").await?;
    let mut pip = tokio::process::Command::new(venv.join("bin/pip"));
    pip.args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "matrix-synapse",
    ]);
    step(pip, "pip install matrix-synapse").await?;
    if !has_synapse(&python) {
        bail!("matrix-synapse installed but `import synapse.app.homeserver` fails");
    }
    Ok(t0.elapsed().as_secs_f64())
}

/// The Synapse process; killed on drop.
struct Synapse {
    child: Child,
    addr: SocketAddr,
    secret: String,
}

impl Drop for Synapse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Not a secret worth keeping: the homeserver only listens on loopback for this run.
fn throwaway_secret(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    hex(&Sha1::digest(format!(
        "{tag}-{nanos}-{}",
        std::process::id()
    )))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// HMAC-SHA1 (RFC 2104), as Synapse's shared-secret registration wants.
fn hmac_sha1(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..20].copy_from_slice(&Sha1::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha1::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let inner = inner.finalize();
    let mut outer = Sha1::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner);
    outer.finalize().to_vec()
}

/// A rate limit no benchmark reaches (Synapse's defaults would throttle every user to a
/// fraction of a message per second).
const UNLIMITED: &str = "{per_second: 1000000, burst_count: 1000000}";

fn config(dir: &Path, port: u16, secret: &str) -> String {
    let d = dir.display();
    let mac = throwaway_secret("macaroon");
    let form = throwaway_secret("form");
    format!(
        r#"server_name: "bench.localhost"
pid_file: {d}/homeserver.pid
listeners:
  - port: {port}
    bind_addresses: ['127.0.0.1']
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
database:
  name: sqlite3
  args:
    database: {d}/homeserver.db
log_config: {d}/log.yaml
media_store_path: {d}/media_store
registration_shared_secret: "{secret}"
report_stats: false
macaroon_secret_key: "{mac}"
form_secret: "{form}"
signing_key_path: {d}/signing.key
trusted_key_servers: []
suppress_key_server_warning: true
presence:
  enabled: false
enable_metrics: false
rc_message: {UNLIMITED}
rc_registration: {UNLIMITED}
rc_login:
  address: {UNLIMITED}
  account: {UNLIMITED}
  failed_attempts: {UNLIMITED}
rc_joins:
  local: {UNLIMITED}
  remote: {UNLIMITED}
rc_joins_per_room: {UNLIMITED}
rc_invites:
  per_room: {UNLIMITED}
  per_user: {UNLIMITED}
  per_issuer: {UNLIMITED}
rc_room_creation: {UNLIMITED}
"#
    )
}

fn log_config(dir: &Path) -> String {
    format!(
        r#"version: 1
formatters:
  precise:
    format: '%(asctime)s - %(name)s - %(levelname)s - %(message)s'
handlers:
  file:
    class: logging.FileHandler
    formatter: precise
    filename: {}/homeserver.log
root:
  level: WARNING
  handlers: [file]
disable_existing_loggers: false
"#,
        dir.display()
    )
}

fn tail(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .rev()
        .take(3)
        .collect::<Vec<_>>()
        .join(" | ")
}

async fn start(venv: &Path, dir: &Path, deadline: Instant) -> Result<Synapse> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir)?;
    let port = free_port()?;
    let secret = throwaway_secret("registration");
    let cfg = dir.join("homeserver.yaml");
    std::fs::write(&cfg, config(dir, port, &secret))?;
    std::fs::write(dir.join("log.yaml"), log_config(dir))?;
    let python = venv.join("bin/python");
    let keys = Command::new(&python)
        .args(["-m", "synapse.app.homeserver", "-c"])
        .arg(&cfg)
        .arg("--generate-keys")
        .output()
        .context("generating Synapse's signing key")?;
    if !keys.status.success() {
        bail!(
            "synapse --generate-keys failed: {}",
            String::from_utf8_lossy(&keys.stderr)
        );
    }
    let out = std::fs::File::create(dir.join("stdout.log"))?;
    let child = Command::new(&python)
        .args(["-m", "synapse.app.homeserver", "-c"])
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .current_dir(dir)
        .spawn()
        .context("starting Synapse")?;
    let mut syn = Synapse {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        secret,
    };
    let mut conn = Conn::new(syn.addr);
    let until = (Instant::now() + Duration::from_secs(180)).min(deadline);
    loop {
        if let Ok(Some(status)) = syn.child.try_wait() {
            bail!(
                "Synapse exited ({status}) while starting: {}",
                tail(&dir.join("stdout.log"))
            );
        }
        let req = request(Method::GET, "/_matrix/client/versions", &[], "")?;
        if conn
            .send(req, Duration::from_secs(2))
            .await
            .is_ok_and(|r| r.ok())
        {
            return Ok(syn);
        }
        if Instant::now() > until {
            bail!(
                "Synapse did not answer within 180 s: {}",
                tail(&dir.join("stdout.log"))
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

async fn call(
    conn: &mut Conn,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: String,
) -> Result<Reply> {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("authorization", a));
    }
    let r = conn
        .send(
            request(method.clone(), path, &headers, body)?,
            SETUP_TIMEOUT,
        )
        .await?;
    if !r.ok() {
        bail!("{method} {path}: status {}: {}", r.status, r.text());
    }
    Ok(r)
}

fn str_field(v: &serde_json::Value, key: &str) -> Result<String> {
    v.get(key)
        .and_then(|x| x.as_str())
        .map(str::to_owned)
        .with_context(|| format!("no {key:?} in {v}"))
}

/// A registered Matrix user.
struct MatrixUser {
    id: String,
    token: String,
}

/// Shared-secret registration (`/_synapse/admin/v1/register`).
async fn register(conn: &mut Conn, secret: &str, name: &str) -> Result<MatrixUser> {
    let path = "/_synapse/admin/v1/register";
    let nonce = str_field(
        &call(conn, Method::GET, path, None, String::new())
            .await?
            .json()?,
        "nonce",
    )?;
    let password = format!("pw-{name}");
    let msg = format!("{nonce}\0{name}\0{password}\0notadmin");
    let mac = hex(&hmac_sha1(secret.as_bytes(), msg.as_bytes()));
    let body = serde_json::json!({
        "nonce": nonce, "username": name, "password": password, "admin": false, "mac": mac,
    });
    let v = call(conn, Method::POST, path, None, body.to_string())
        .await?
        .json()?;
    Ok(MatrixUser {
        id: str_field(&v, "user_id")?,
        token: str_field(&v, "access_token")?,
    })
}

/// The /sync filter: only message events in joined rooms' timelines.
const FILTER: &str = r#"{"room":{"timeline":{"limit":1000,"types":["m.room.message"]},"state":{"types":[]},"ephemeral":{"types":[]},"account_data":{"types":[]}},"presence":{"types":[]},"account_data":{"types":[]}}"#;

fn sync_path(since: Option<&str>, timeout_ms: u64) -> String {
    let mut p = format!(
        "/_matrix/client/v3/sync?timeout={timeout_ms}&filter={}",
        encode(FILTER)
    );
    if let Some(s) = since {
        p.push_str("&since=");
        p.push_str(&encode(s));
    }
    p
}

/// Counters shared by the /sync loops.
#[derive(Default)]
struct SyncStats {
    limited: AtomicU64,
    errors: AtomicU64,
}

/// One user's /sync long-poll loop: every message from someone else goes to `collector`,
/// stamped with the time its /sync answer arrived. Stops when `stop` is set (checked after each
/// long poll of at most 5 s) or at `deadline`.
async fn sync_loop(
    addr: SocketAddr,
    user: Arc<MatrixUser>,
    mut since: String,
    collector: Arc<Collector>,
    stats: Arc<SyncStats>,
    stop: Arc<AtomicBool>,
    deadline: Instant,
) {
    let mut conn = Conn::new(addr);
    let auth = format!("Bearer {}", user.token);
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let Ok(req) = request(
            Method::GET,
            &sync_path(Some(&since), 5000),
            &[("authorization", &auth)],
            "",
        ) else {
            break;
        };
        let reply = conn.send(req, Duration::from_secs(30)).await;
        let at = Instant::now();
        let v = match reply.and_then(|r| {
            if r.ok() {
                r.json()
            } else {
                bail!("status {}", r.status)
            }
        }) {
            Ok(v) => v,
            Err(_) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if let Some(rooms) = v.pointer("/rooms/join").and_then(|j| j.as_object()) {
            for room in rooms.values() {
                if room.pointer("/timeline/limited") == Some(&serde_json::Value::Bool(true)) {
                    stats.limited.fetch_add(1, Ordering::Relaxed);
                }
                let events = room
                    .pointer("/timeline/events")
                    .and_then(|e| e.as_array())
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                for e in events {
                    if e.get("sender").and_then(|s| s.as_str()) == Some(user.id.as_str()) {
                        continue;
                    }
                    if let Some(body) = e.pointer("/content/body").and_then(|b| b.as_str()) {
                        collector.record(body.as_bytes(), at);
                    }
                }
            }
        }
        match v.get("next_batch").and_then(|n| n.as_str()) {
            Some(n) => since = n.to_owned(),
            None => break,
        }
    }
}

async fn try_run(
    root: &Path,
    plan: &Plan,
    opts: &Options,
    rates: &[u32],
    text_len: usize,
    deadline: Instant,
) -> Result<PeerRun> {
    let base: PathBuf = root.join("target/bench");
    let venv = base.join("synapse-venv");
    println!(
        "  peer: installing Synapse into {} (if missing)",
        venv.display()
    );
    let install_secs = install(&venv, deadline).await?;
    let version = Command::new(venv.join("bin/python"))
        .args(["-c", "import synapse; print(synapse.__version__)"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let version = version.split_whitespace().next().unwrap_or("?").to_owned();
    println!("  peer: starting Synapse {version}");
    let syn = start(&venv, &base.join("synapse-run"), deadline).await?;

    let mut conn = Conn::new(syn.addr);
    let mut users = Vec::new();
    for i in 0..plan.users() {
        users.push(Arc::new(
            register(&mut conn, &syn.secret, &format!("bench{i}")).await?,
        ));
    }
    let mut rooms: Vec<(String, Vec<usize>)> = Vec::new();
    for members in plan.sessions() {
        let creator = &users[members[0]];
        let invite: Vec<&str> = members[1..].iter().map(|&m| users[m].id.as_str()).collect();
        let body = serde_json::json!({
            "preset": "private_chat", "name": "bench", "invite": invite,
            "is_direct": members.len() == 2,
        });
        let v = call(
            &mut conn,
            Method::POST,
            "/_matrix/client/v3/createRoom",
            Some(&creator.token),
            body.to_string(),
        )
        .await?
        .json()?;
        let room = str_field(&v, "room_id")?;
        for &m in &members[1..] {
            call(
                &mut conn,
                Method::POST,
                &format!("/_matrix/client/v3/join/{}", encode(&room)),
                Some(&users[m].token),
                "{}".to_owned(),
            )
            .await?;
        }
        rooms.push((room, members));
    }

    // Each user's /sync position now, then its long-poll loop.
    let collector = Arc::new(Collector::default());
    let stats = Arc::new(SyncStats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut loops = Vec::new();
    for u in &users {
        let req = request(
            Method::GET,
            &sync_path(None, 0),
            &[("authorization", &format!("Bearer {}", u.token))],
            "",
        )?;
        let r = conn.send(req, SETUP_TIMEOUT).await?;
        if !r.ok() {
            bail!("initial /sync: status {}: {}", r.status, r.text());
        }
        let since = str_field(&r.json()?, "next_batch")?;
        loops.push(tokio::spawn(sync_loop(
            syn.addr,
            Arc::clone(u),
            since,
            Arc::clone(&collector),
            Arc::clone(&stats),
            Arc::clone(&stop),
            deadline + Duration::from_secs(60),
        )));
    }

    // Message `seq` goes to room `seq % M`, sent by its members in turn.
    let routes: Vec<Vec<(String, String)>> = rooms
        .iter()
        .map(|(room, members)| {
            members
                .iter()
                .map(|&m| {
                    (
                        format!(
                            "/_matrix/client/v3/rooms/{}/send/m.room.message/",
                            encode(room)
                        ),
                        format!("Bearer {}", users[m].token),
                    )
                })
                .collect()
        })
        .collect();
    let make: MakeRequest = Arc::new(move |step, seq| {
        let m = routes.len().max(1) as u64;
        let members = routes.get((seq % m) as usize).context("no rooms")?;
        let (path, auth) = &members[((seq / m) % members.len().max(1) as u64) as usize];
        let body = serde_json::json!({
            "msgtype": "m.text", "body": message_text(step, seq, text_len),
        });
        let req = request(
            Method::PUT,
            &format!("{path}b{step}x{seq}"),
            &[
                ("content-type", "application/json"),
                ("authorization", auth),
            ],
            body.to_string(),
        )?;
        Ok((req, u32::try_from(members.len() - 1).unwrap_or(0)))
    });
    let target = Target {
        addr: syn.addr,
        make,
        collector: Some(collector),
        server_pid: Some(syn.child.id()),
        tap: None,
    };
    let result = run_series("synapse", &target, opts, rates, Some(deadline)).await;
    stop.store(true, Ordering::Relaxed);
    let rss_kib = proc::rss_kib(syn.child.id()).ok();
    for l in loops {
        l.abort();
    }
    drop(syn);
    Ok(PeerRun {
        name: format!("Synapse {version} (SQLite)"),
        series: result?,
        rss_kib,
        install_secs,
        limited: stats.limited.load(Ordering::Relaxed),
        sync_errors: stats.errors.load(Ordering::Relaxed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha1_matches_rfc_2202() {
        // RFC 2202 test case 2.
        let mac = hmac_sha1(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(hex(&mac), "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79");
    }
}
