//! What the kernel says about processes and the machine: resident memory, CPU time, load.

use anyhow::{Context, Result};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// Resident set size (`VmRSS`) of `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}

fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .filter(|t: &f64| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// CPU time (user + system) a process used so far, in seconds; `None` when unreadable.
/// `pid` `None` means this process.
pub fn cpu_secs(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// `/proc/loadavg`'s first three numbers.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// A description of the machine: cores, memory, CPU model, kernel.
#[derive(Clone, Debug, Default)]
pub struct Machine {
    /// `nproc`.
    pub cores: String,
    /// `MemTotal`, GiB.
    pub memory: String,
    /// CPU model name.
    pub cpu: String,
    /// `uname -sr`.
    pub kernel: String,
    /// `rustc --version`.
    pub rustc: String,
}

fn output(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

impl Machine {
    /// Reads the machine description.
    pub fn read() -> Machine {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|n| n.parse::<f64>().ok())
            .map(|kib| format!("{:.1} GiB", kib / 1024.0 / 1024.0))
            .unwrap_or_else(|| "unknown".to_owned());
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|v| v.split_once(':'))
            .map(|(_, m)| m.trim().to_owned())
            .unwrap_or_else(|| "unknown".to_owned());
        Machine {
            cores: output("nproc", &[]),
            memory,
            cpu,
            kernel: output("uname", &["-sr"]),
            rustc: output("rustc", &["--version"]),
        }
    }
}

/// A child process (killed and reaped on drop) that named its address on its first stdout line.
pub struct Server {
    /// The address it listens on.
    pub addr: SocketAddr,
    child: Child,
}

impl Server {
    /// Starts `cmd` (stdout is read here; stdin is a pipe the child may watch for EOF) and
    /// waits up to `wait` for the first stdout line naming `http://ADDR`.
    pub fn start(mut cmd: Command, wait: Duration) -> Result<Server> {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
        let stdout = child.stdout.take().context("child stdout")?;
        let (tx, rx) = std::sync::mpsc::channel::<std::io::Result<String>>();
        std::thread::spawn(move || drain(stdout, tx));
        let line = match rx.recv_timeout(wait) {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e).context("reading the start-up line");
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!("{cmd:?} printed no start-up line within {wait:?}");
            }
        };
        let addr = super::http::addr_in_line(&line)?;
        Ok(Server { addr, child })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills it with SIGKILL (no chance to flush or clean up: a crash, as far as its store can
    /// tell) and reaps it.
    pub fn kill(&mut self) -> Result<()> {
        self.child.kill().context("sending SIGKILL")?;
        self.child.wait().context("reaping the killed process")?;
        Ok(())
    }
}

/// Sends the first line to `tx`, then reads the rest of stdout until EOF so the child never
/// blocks on (or dies of) a full or closed pipe.
fn drain(stdout: ChildStdout, tx: std::sync::mpsc::Sender<std::io::Result<String>>) {
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    let first = match reader.read_line(&mut line) {
        Ok(0) => Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the process exited before printing its address",
        )),
        Ok(_) => Ok(line.clone()),
        Err(e) => Err(e),
    };
    let _ = tx.send(first);
    let mut sink = Vec::new();
    loop {
        sink.clear();
        match reader.read_until(b'\n', &mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The bearer token every benchmark request carries; the server is given a token file in
/// which it may act for every user (`*`). Servers without authentication ignore both.
pub const TOKEN: &str = "bench-token-0123456789abcdef";

/// `Authorization` header value for [`TOKEN`].
pub const AUTHORIZATION: &str = "Bearer bench-token-0123456789abcdef";

/// Where cargo puts build output: `CARGO_TARGET_DIR`, or `target/` under the workspace.
pub fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| if p.is_absolute() { p } else { root.join(p) })
        .unwrap_or_else(|| root.join("target"))
}

/// Bytes of all files under `dir` (0 when it does not exist).
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Size of the file at `path` in bytes (0 when it does not exist, e.g. a WAL between resets).
pub fn file_bytes(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The SQLite write-ahead log in a netapi-chat data directory.
pub fn wal_path(data_dir: &Path) -> PathBuf {
    data_dir.join("netapi-chat.sqlite3-wal")
}

/// A netapi-chat process and its (fresh) data directory.
pub struct NetapiChat {
    /// The process.
    pub server: Server,
    /// Its `NETAPI_CHAT_DATA_DIR`.
    pub data_dir: PathBuf,
}

/// Starts the release `netapi-chat` binary on a free loopback port, with a fresh data
/// directory `target/bench/data-{label}` (and a token file in it) and extra settings. Its log
/// (stderr) goes to /dev/null: still formatted and written by the server, not kept.
pub fn start_netapi_chat(root: &Path, label: &str, env: &[(&str, &str)]) -> Result<NetapiChat> {
    let bin = target_dir(root).join("release/netapi-chat");
    start_netapi_chat_bin(root, &bin, label, env)
}

/// [`start_netapi_chat`] with another build of the server (e.g. an earlier commit's, for a
/// before/after comparison in one run).
pub fn start_netapi_chat_bin(
    root: &Path,
    bin: &Path,
    label: &str,
    env: &[(&str, &str)],
) -> Result<NetapiChat> {
    let data_dir = target_dir(root).join("bench").join(format!("data-{label}"));
    if data_dir.exists() {
        std::fs::remove_dir_all(&data_dir)
            .with_context(|| format!("clearing {}", data_dir.display()))?;
    }
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let tokens = data_dir.join("tokens");
    std::fs::write(&tokens, format!("{TOKEN} *\n"))
        .with_context(|| format!("writing {}", tokens.display()))?;
    let server = spawn_bin(root, bin, &data_dir, env, Duration::from_secs(60))?;
    Ok(NetapiChat { server, data_dir })
}

/// Starts the release `netapi-chat` binary on a free loopback port with an existing data
/// directory (made by [`start_netapi_chat`]: its token file is reused), waiting up to `wait`
/// for its start-up line: a restart after a crash, on whatever history the directory holds.
pub fn spawn_netapi_chat(
    root: &Path,
    data_dir: &Path,
    env: &[(&str, &str)],
    wait: Duration,
) -> Result<Server> {
    let bin = target_dir(root).join("release/netapi-chat");
    spawn_bin(root, &bin, data_dir, env, wait)
}

/// The server's stderr (its log), in its data directory.
pub const LOG: &str = "netapi-chat.log";

fn spawn_bin(
    root: &Path,
    bin: &Path,
    data_dir: &Path,
    env: &[(&str, &str)],
    wait: Duration,
) -> Result<Server> {
    // Its log (warnings only, by default), kept beside its data for a phase to quote.
    let log = std::fs::File::create(data_dir.join(LOG))
        .with_context(|| format!("creating the log in {}", data_dir.display()))?;
    let mut cmd = Command::new(bin);
    cmd.env("NETAPI_CHAT_BIND", "127.0.0.1:0")
        .env("NETAPI_CHAT_DATA_DIR", data_dir)
        .env("NETAPI_CHAT_TOKEN_FILE", data_dir.join("tokens"))
        // The callback listeners are on loopback, and one token drives every simulated user.
        .env("NETAPI_CHAT_CALLBACK_ALLOW_LOOPBACK", "1")
        .env("NETAPI_CHAT_RATE_LIMIT", "0")
        // The scale phase opens more sessions than the server-wide default cap (older
        // binaries, `--before`, warn that these are no settings and go on).
        .env("NETAPI_CHAT_MAX_SESSIONS", "10000000")
        .env("NETAPI_CHAT_MAX_SUBSCRIPTIONS", "10000000")
        .stderr(log)
        .current_dir(root);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Server::start(cmd, wait).with_context(|| format!("starting {}", bin.display()))
}
