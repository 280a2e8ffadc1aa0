//! The real `netapi-chat` binary under test: started on a free loopback port with its own data
//! directory and the test token file, on the store backend [`Backend::for_tests`] chooses.
//!
//! Every server a suite starts goes through [`Launch::spawn`], the one place the binary, its
//! baseline settings and its backend are chosen: [`Server`] (the usual handle), [`Launch`]
//! itself for the suites that read the server's log or start it under a umask.

use netapi_chat_api::Urls;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Percent-encodes an address for a path segment (same rule as the server's).
pub fn enc(s: &str) -> String {
    netapi_chat::address::encode_segment(s)
}

/// The application token every helper sends unless told otherwise: it may act for any user
/// (`*` in the token file the harness writes).
pub const APP_TOKEN: &str = "test-application-token-0123456789";

/// Users with a token of their own (for tests of who may act for whom).
pub const USERS_WITH_TOKENS: &[&str] = &[
    "tel:+15551230001",
    "tel:+15551230002",
    "sip:alice@example.com",
    "sip:bob@example.com",
    "sip:mallory@example.com",
];

/// The token of one of [`USERS_WITH_TOKENS`] (it may act for that user only).
pub fn user_token(user: &str) -> String {
    let hex: String = user.bytes().map(|b| format!("{b:02x}")).collect();
    format!("user-{hex}")
}

/// The test token file's contents: [`APP_TOKEN`] for anyone, one token per user of
/// [`USERS_WITH_TOKENS`].
pub fn token_file() -> String {
    let mut tokens = format!("{APP_TOKEN} *\n");
    for u in USERS_WITH_TOKENS {
        tokens.push_str(&format!("{} {u}\n", user_token(u)));
    }
    tokens
}

/// A directory a test made under the system temp dir, removed with everything in it when
/// this is dropped: whoever creates one owns it (a test's local, a [`Server`] that made its
/// own data directory), so that a test that ends, passes or panics, leaves nothing in `/tmp`.
/// A test that needs the directory to outlive its owner takes the path with
/// [`TempDir::keep`] (and removes it itself). Reads as a [`Path`].
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
    /// False once kept: not removed on drop.
    remove: bool,
}

impl TempDir {
    /// Owns `path` from now on (an existing directory, e.g. one a killed server left).
    pub fn adopt(path: PathBuf) -> TempDir {
        TempDir { path, remove: true }
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Gives the directory up: its path, no longer removed by this guard.
    pub fn keep(mut self) -> PathBuf {
        self.remove = false;
        std::mem::take(&mut self.path)
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.remove {
            drop_postgres_database_for(&self.path);
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A fresh, empty directory under the system temp dir (`netapi-chat-test-<uuid>`), removed
/// when the guard is dropped.
pub fn temp_dir() -> TempDir {
    let dir = std::env::temp_dir().join(format!(
        "netapi-chat-test-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).expect("create a temporary directory");
    TempDir::adopt(dir)
}

/// A fresh data directory under the system temp dir, holding the test token file; removed
/// when the guard is dropped (a server started on it must be dropped first: declare the
/// directory before the server, so that it is dropped after it).
pub fn temp_data_dir() -> TempDir {
    let dir = temp_dir();
    std::fs::write(dir.join("tokens"), token_file()).expect("write token file");
    dir
}

/// A reqwest client that sends `Authorization: Bearer <token>` on every request.
pub fn http_client(token: &str) -> reqwest::Client {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        http::HeaderValue::from_str(&format!("Bearer {token}")).expect("token header"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("client")
}

/// The store backend a test server runs on. Chosen in one place, [`Launch::spawn`], so that
/// every suite runs unchanged on each backend: a backend is one arm here (its settings for a
/// fresh server, e.g. a fresh database per server), never a change in a suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The embedded SQLite database in the server's data directory (the default).
    Sqlite,
    /// PostgreSQL (`cargo xtask test`'s PostgreSQL pass): each data directory gets a database
    /// of its own on the server `NETAPI_CHAT_TEST_DATABASE_URL` names
    /// ([`postgres_database_for`]).
    Postgres,
}

impl Backend {
    /// The backend of this test run: `NETAPI_CHAT_TEST_BACKEND` (`sqlite` or `postgres`);
    /// unset, PostgreSQL when `NETAPI_CHAT_TEST_DATABASE_URL` is set (the PostgreSQL pass of
    /// `cargo xtask test` sets it), SQLite otherwise.
    pub fn for_tests() -> Backend {
        let database = std::env::var_os("NETAPI_CHAT_TEST_DATABASE_URL").is_some();
        match std::env::var("NETAPI_CHAT_TEST_BACKEND").as_deref() {
            Err(_) | Ok("") if database => Backend::Postgres,
            Err(_) | Ok("") | Ok("sqlite") => Backend::Sqlite,
            Ok("postgres") if database => Backend::Postgres,
            Ok("postgres") => panic!(
                "NETAPI_CHAT_TEST_BACKEND=postgres needs NETAPI_CHAT_TEST_DATABASE_URL (`cargo xtask test` sets it)"
            ),
            Ok(other) => {
                panic!(
                    "NETAPI_CHAT_TEST_BACKEND={other}: the harness knows `sqlite` and `postgres`"
                )
            }
        }
    }

    /// The settings a server on this backend gets on top of its data directory.
    fn settings(self, data_dir: &Path) -> Vec<(&'static str, String)> {
        match self {
            Backend::Sqlite => Vec::new(),
            Backend::Postgres => postgres_database_for(data_dir)
                .map(|url| ("NETAPI_CHAT_DATABASE_URL", url))
                .into_iter()
                .collect(),
        }
    }
}

/// Runs the test cluster's `pg_ctl` with `args` (`NETAPI_CHAT_TEST_PG_CTL`, set by the
/// PostgreSQL pass of `cargo xtask test`): how the outage and cluster suites stop and start
/// the database.
pub fn pg_ctl(args: &[&str]) {
    let ctl = std::env::var("NETAPI_CHAT_TEST_PG_CTL")
        .expect("NETAPI_CHAT_TEST_PG_CTL: run through `cargo xtask test`");
    let out = std::process::Command::new(ctl)
        .args(args)
        .output()
        .expect("run pg_ctl");
    assert!(
        out.status.success(),
        "pg_ctl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The test databases this process created ([`postgres_database_for`]) and has not dropped
/// yet: what [`TempDir`]'s drop looks up, so that a directory that never had a database costs
/// no connection.
static TEST_DATABASES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The name of `data_dir`'s test database: `t_` and the directory's last 60 characters, each
/// one PostgreSQL would need quoted made `_` (the directories are unique per test).
fn test_database_name(data_dir: &Path) -> String {
    let name: String = data_dir
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("t_{}", &name[name.len().saturating_sub(60)..])
}

/// Runs `work` with a blocking client of the test PostgreSQL server (`admin`'s URL), on a
/// thread of its own: the blocking client runs a runtime, and tests call this from inside
/// tokio's. A connection the cluster refuses while it starts up or recovers from a crash
/// (SQLSTATE 57P03) is tried again for up to a minute; the error that ends the wait is
/// PostgreSQL's, which names the cluster's state.
fn with_test_postgres(
    admin: &str,
    work: impl FnOnce(&mut postgres::Client) -> Result<(), postgres::Error> + Send + 'static,
) -> Result<(), String> {
    let url = admin.to_owned();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut client = loop {
            match postgres::Client::connect(&url, postgres::NoTls) {
                Ok(client) => break client,
                Err(e)
                    if Instant::now() < deadline
                        && e.code() == Some(&postgres::error::SqlState::CANNOT_CONNECT_NOW) =>
                {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(format!("connecting to the test PostgreSQL: {e}")),
            }
        };
        work(&mut client).map_err(|e| e.to_string())
    })
    .join()
    .unwrap_or_else(|_| Err("the test PostgreSQL client panicked".to_owned()))
}

/// The database of `data_dir` on the test PostgreSQL server, when
/// `NETAPI_CHAT_TEST_DATABASE_URL` names one: created on first use and named after the
/// directory, so a server restarted on the same directory (after a kill) finds its data again;
/// dropped with the directory's [`TempDir`] (a whole test run's databases would otherwise stay
/// until the cluster is removed: about 8 MB each, several GB a run). Its URL is what the
/// server is started with. `None` (SQLite in the data directory) otherwise.
pub fn postgres_database_for(data_dir: &Path) -> Option<String> {
    let admin = std::env::var("NETAPI_CHAT_TEST_DATABASE_URL").ok()?;
    let name = test_database_name(data_dir);
    let db = name.clone();
    with_test_postgres(&admin, move |client| {
        let exists = client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&db])?
            .is_some();
        if !exists {
            client.batch_execute(&format!("CREATE DATABASE {db}"))?;
        }
        Ok(())
    })
    .unwrap_or_else(|e| panic!("create the test database {name}: {e}"));
    {
        let mut created = TEST_DATABASES.lock().unwrap_or_else(|e| e.into_inner());
        if !created.contains(&name) {
            created.push(name.clone());
        }
    }
    // The same server and credentials, another database.
    let (base, query) = admin.split_once('?').unwrap_or((admin.as_str(), ""));
    let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
    Some(if query.is_empty() {
        format!("{base}/{name}")
    } else {
        format!("{base}/{name}?{query}")
    })
}

/// Drops `data_dir`'s test database if this process created one ([`postgres_database_for`]),
/// ending whatever connections are left on it (a server the test did not stop first). Best
/// effort, as the directory's removal is: a database left behind goes with the cluster.
fn drop_postgres_database_for(data_dir: &Path) {
    let name = test_database_name(data_dir);
    {
        let mut created = TEST_DATABASES.lock().unwrap_or_else(|e| e.into_inner());
        let Some(at) = created.iter().position(|n| *n == name) else {
            return;
        };
        created.swap_remove(at);
    }
    let Ok(admin) = std::env::var("NETAPI_CHAT_TEST_DATABASE_URL") else {
        return;
    };
    let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    if let Err(e) = with_test_postgres(&admin, move |client| client.batch_execute(&drop)) {
        eprintln!(
            "could not drop the test database of {}: {e}",
            data_dir.display()
        );
    }
}

/// Where a started server's stderr (its log) goes.
#[derive(Clone, Debug, Default)]
pub enum Stderr {
    /// Not shown, unless `NETAPI_CHAT_TEST_LOGS` is set (then shown); its first
    /// [`QUIET_KEPT`] bytes are kept, so that a server that fails to start says why in the
    /// test's failure ([`Server::launch`]).
    #[default]
    Quiet,
    /// Written to this file, for a test that reads the operator's log.
    File(PathBuf),
    /// Collected in memory ([`Spawned::stderr`]).
    Collect,
}

/// How to start the binary: everything but the baseline settings, which [`Launch::spawn`]
/// adds for every server (loopback callbacks allowed, no request rate limit, a fast retry
/// schedule) before `env`, so a test overrides any of them.
#[derive(Clone, Debug, Default)]
pub struct Launch<'a> {
    /// The data directory (it must exist and hold the token file, see [`temp_data_dir`]).
    pub data_dir: PathBuf,
    /// Extra `NETAPI_CHAT_*` settings.
    pub env: &'a [(&'a str, &'a str)],
    /// Command-line arguments (e.g. `--config FILE`).
    pub args: &'a [&'a str],
    /// The address to listen on (`127.0.0.1:0` when `None`).
    pub bind: Option<&'a str>,
    /// Where stderr goes.
    pub stderr: Stderr,
    /// Started through `sh -c 'umask U; exec …'` (no `pre_exec`, no unsafe) when given.
    pub umask: Option<&'a str>,
    /// A command that runs the binary (its path appended), e.g.
    /// `["prlimit", "--nofile=256:256"]`; empty: run directly.
    pub run_under: &'a [&'a str],
}

/// A started process: its base URL once it said it listens (`None` if it exited first).
/// Killed on drop.
pub struct Spawned {
    pub child: Child,
    /// e.g. `http://127.0.0.1:41234`
    pub base: Option<String>,
    stderr: Arc<Mutex<String>>,
    stdout: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

impl Spawned {
    /// What the process wrote on stderr so far ([`Stderr::Collect`] only).
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// What the process wrote on stdout after its first line, so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// The URL builders generated from the spec's paths, for this server (it must listen).
    pub fn urls(&self) -> Urls {
        Urls::new(self.base.as_deref().expect("listening"))
    }

    /// Waits (up to `secs`) for the process to exit; its status, or `None` if it still runs.
    /// Once it exited, everything it wrote is in [`Spawned::stdout`] and [`Spawned::stderr`].
    pub fn wait_exit(&mut self, secs: u64) -> Option<ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                for reader in self.readers.drain(..) {
                    let _ = reader.join();
                }
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary on `data_dir` under `umask` with `env` and its stderr collected, whether
/// or not it comes up ([`Spawned::base`] says).
pub fn start_under_umask(data_dir: &Path, env: &[(&str, &str)], umask: &str) -> Spawned {
    Launch {
        data_dir: data_dir.to_path_buf(),
        env,
        umask: Some(umask),
        stderr: Stderr::Collect,
        ..Launch::default()
    }
    .spawn()
}

/// What a run of the binary that exits by itself printed.
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the binary with `args` and `env` (and no other `NETAPI_CHAT_*` variable) to its end:
/// a command (`check-config`, `tokens`, `summary`, …), not a server.
pub fn run_command(args: &[&str], env: &[(&str, &str)]) -> Ran {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_netapi-chat"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("NETAPI_CHAT_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .args(args)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run netapi-chat");
    Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Starts the binary on `data_dir` with `env`, for a start that must fail: its exit status
/// and stderr. Panics (naming `env`) if it still runs after 20 s.
pub fn run_to_exit(data_dir: &Path, env: &[(&str, &str)]) -> (ExitStatus, String) {
    let mut spawned = Launch {
        data_dir: data_dir.to_path_buf(),
        env,
        stderr: Stderr::Collect,
        ..Launch::default()
    }
    .spawn();
    let status = spawned
        .wait_exit(20)
        .unwrap_or_else(|| panic!("the server started with {env:?} (it should have refused)"));
    (status, spawned.stderr())
}

impl Launch<'_> {
    /// Starts the binary (`NETAPI_CHAT_TEST_BIN` runs another build instead, e.g. an older
    /// one, to write a stored-format fixture: see tests/stored_format.rs) and reads its first
    /// line for the address it listens on.
    pub fn spawn(&self) -> Spawned {
        let bin: std::ffi::OsString = std::env::var_os("NETAPI_CHAT_TEST_BIN")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_netapi-chat").into());
        let mut cmd = match (self.umask, self.run_under) {
            (Some(umask), _) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("umask {umask}; exec \"$0\" \"$@\""))
                    .args(self.run_under)
                    .arg(bin);
                c
            }
            (None, [wrapper, wrapper_args @ ..]) => {
                let mut c = Command::new(wrapper);
                c.args(wrapper_args).arg(bin);
                c
            }
            (None, []) => Command::new(bin),
        };
        cmd.args(self.args)
            .env("NETAPI_CHAT_BIND", self.bind.unwrap_or("127.0.0.1:0"))
            .env("NETAPI_CHAT_DATA_DIR", &self.data_dir)
            .env("NETAPI_CHAT_CALLBACK_ALLOW_LOOPBACK", "1")
            // One token drives many users here; the rate limit has tests of its own.
            .env("NETAPI_CHAT_RATE_LIMIT", "0")
            .env("NETAPI_CHAT_RETRY_SCHEDULE", "0,50ms,100ms,200ms,400ms")
            .stdout(Stdio::piped());
        for (k, v) in Backend::for_tests().settings(&self.data_dir) {
            cmd.env(k, v);
        }
        match &self.stderr {
            Stderr::Quiet if std::env::var_os("NETAPI_CHAT_TEST_LOGS").is_some() => {
                cmd.stderr(Stdio::inherit())
            }
            Stderr::Quiet => cmd.stderr(Stdio::piped()),
            Stderr::File(path) => {
                cmd.stderr(std::fs::File::create(path).expect("create the log file"))
            }
            Stderr::Collect => cmd.stderr(Stdio::piped()),
        };
        for (k, v) in self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start netapi-chat");
        let (stderr, stdout) = (Arc::default(), Arc::default());
        let mut readers = Vec::new();
        if let Some(err) = child.stderr.take() {
            let kept = match self.stderr {
                Stderr::Quiet => QUIET_KEPT,
                _ => usize::MAX,
            };
            readers.push(collect_at_most(err, Arc::clone(&stderr), kept));
        }
        let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
        // The first line says where it listens; a server that never says it (hung at its
        // start) is killed after `FIRST_LINE_WITHIN`, so that the test fails with its stderr
        // instead of waiting for CI's time limit (`cargo test` has no per-test timeout).
        let (first, said) = std::sync::mpsc::channel();
        let kept = Arc::clone(&stdout);
        readers.push(std::thread::spawn(move || {
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = first.send(line);
            // Keep reading the rest, so the server never writes into a closed pipe.
            let _ = collect(reader, kept).join();
        }));
        let line = said.recv_timeout(FIRST_LINE_WITHIN).unwrap_or_else(|_| {
            let _ = child.kill();
            String::new()
        });
        let base = line
            .split_whitespace()
            .find(|w| w.starts_with("http://") || w.starts_with("https://"))
            .map(str::to_owned);
        Spawned {
            child,
            base,
            stderr,
            stdout,
            readers,
        }
    }
}

/// How long a server may take to say where it listens (a start waiting for a database the
/// test brings up later included) before it is taken for hung.
const FIRST_LINE_WITHIN: std::time::Duration = std::time::Duration::from_secs(180);

/// How much of a quiet server's stderr is kept ([`Stderr::Quiet`]): its start and what
/// stopped it, not a long test's request log.
const QUIET_KEPT: usize = 64 * 1024;

/// Reads `from` to its end into `into`, on a thread of its own.
fn collect(from: impl Read + Send + 'static, into: Arc<Mutex<String>>) -> JoinHandle<()> {
    collect_at_most(from, into, usize::MAX)
}

/// Reads `from` to its end, on a thread of its own, keeping about its first `kept` bytes in
/// `into` (whole reads; the rest is read and dropped, so the writer never blocks).
fn collect_at_most(
    mut from: impl Read + Send + 'static,
    into: Arc<Mutex<String>>,
    kept: usize,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut read = 0usize;
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            if read < kept {
                into.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            read = read.saturating_add(n);
        }
    })
}

/// The real `netapi-chat` binary, started on a free loopback port with its own data
/// directory; killed on drop (the directory is removed unless it was given by the test).
pub struct Server {
    /// e.g. `http://127.0.0.1:41234`
    pub base: String,
    /// The data directory.
    pub data_dir: PathBuf,
    process: Spawned,
    /// Where its stderr went, when a file ([`Server::logged`]).
    log: Option<PathBuf>,
    /// The data directory when this server owns it (it made it, or took it over with
    /// [`Server::restart`]): removed once the process is gone. Declared after `process`, so
    /// dropped after it.
    owned_dir: Option<TempDir>,
}

impl Server {
    /// Starts the server with extra `NETAPI_CHAT_*` settings, on a fresh data directory.
    pub fn start(env: &[(&str, &str)]) -> Server {
        Server::start_with_args(&[], env)
    }

    /// Starts the server on `data_dir` (e.g. again after a kill), optionally on a given address.
    pub fn start_in(data_dir: &Path, env: &[(&str, &str)], bind: Option<&str>) -> Server {
        Server::launch(
            Launch {
                data_dir: data_dir.to_path_buf(),
                env,
                bind,
                ..Launch::default()
            },
            None,
        )
    }

    /// Starts the server again on the data directory a killed server left ([`Server::kill`]),
    /// and owns it from now on: removed when this one is dropped.
    pub fn restart(data_dir: PathBuf, env: &[(&str, &str)]) -> Server {
        let owned = TempDir::adopt(data_dir.clone());
        Server::launch(
            Launch {
                data_dir,
                env,
                ..Launch::default()
            },
            Some(owned),
        )
    }

    /// Starts the server with command-line arguments (e.g. `--config FILE`) and extra
    /// settings, on a fresh data directory.
    pub fn start_with_args(args: &[&str], env: &[(&str, &str)]) -> Server {
        let dir = temp_data_dir();
        Server::launch(
            Launch {
                data_dir: dir.to_path_buf(),
                env,
                args,
                ..Launch::default()
            },
            Some(dir),
        )
    }

    /// Starts the server on a fresh data directory with its stderr (the operator's log) in a
    /// file the test reads with [`Server::log_text`], at log level `info` (the most it
    /// writes), plus `env`.
    pub fn logged(env: &[(&str, &str)]) -> Server {
        let dir = temp_data_dir();
        let log = dir.join("stderr.log");
        let mut all = vec![("NETAPI_CHAT_LOG_LEVEL", "info")];
        all.extend_from_slice(env);
        let mut s = Server::launch(
            Launch {
                data_dir: dir.to_path_buf(),
                env: &all,
                stderr: Stderr::File(log.clone()),
                ..Launch::default()
            },
            Some(dir),
        );
        s.log = Some(log);
        s
    }

    /// Starts `launch`; `owned_dir`: its data directory when the server is to own it (removed
    /// with the server, also when it fails to start).
    pub fn launch(launch: Launch<'_>, owned_dir: Option<TempDir>) -> Server {
        let mut process = launch.spawn();
        let Some(base) = process.base.clone() else {
            let status = process.wait_exit(10);
            panic!(
                "the server did not say where it listens (exit: {status:?}); its stderr:\n{}",
                process.stderr()
            );
        };
        Server {
            base,
            data_dir: launch.data_dir,
            process,
            log: None,
            owned_dir,
        }
    }

    /// Starts the server with defaults suited to tests.
    pub fn default_for_tests() -> Server {
        Server::start(&[])
    }

    /// Kills the process with SIGKILL (no clean shutdown) and keeps the data directory.
    pub fn kill(mut self) -> PathBuf {
        let _ = self.process.child.kill();
        let _ = self.process.child.wait();
        if let Some(dir) = self.owned_dir.take() {
            dir.keep();
        }
        self.data_dir.clone()
    }

    /// Stops the process with SIGTERM (the graceful stop), waits for it to exit, and keeps
    /// the data directory.
    pub fn terminate(mut self) -> PathBuf {
        let pid = self.process.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
        let _ = self.process.child.wait();
        if let Some(dir) = self.owned_dir.take() {
            dir.keep();
        }
        self.data_dir.clone()
    }

    /// What the process wrote on stdout after its first line, so far (e.g. a cluster's
    /// instance that started over says where it listens again).
    pub fn stdout(&self) -> String {
        self.process.stdout()
    }

    /// Waits (up to `secs`) for the process to exit by itself; its status, or `None`.
    pub fn wait_exit(&mut self, secs: u64) -> Option<ExitStatus> {
        self.process.wait_exit(secs)
    }

    /// The process id (benches read its RSS from `/proc`).
    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }

    /// The `host:port` it listens on.
    pub fn addr(&self) -> String {
        self.base
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .to_owned()
    }

    /// The URLs of this server's resources: the builders generated from the spec's paths
    /// (`netapi_chat_api::Urls`), the same ones the server writes its `resourceURL`s with.
    pub fn urls(&self) -> Urls {
        Urls::new(&self.base)
    }

    /// `{base}/v1/chat/{user}` + `rest`, for a URL the spec has no path for (a typo, a
    /// trailing slash, a raw segment a test wants as it is); every path of the spec is built
    /// by [`Server::urls`].
    pub fn url(&self, user: &str, rest: &str) -> String {
        format!("{}/v1/chat/{}{rest}", self.base, enc(user))
    }

    /// The progenitor client for this server, authenticated with [`APP_TOKEN`].
    pub fn client(&self) -> netapi_chat_client::Client {
        netapi_chat_client::Client::with_token(&self.base, APP_TOKEN).expect("client")
    }

    /// Its log so far ([`Server::logged`] only).
    pub fn log_text(&self) -> String {
        let path = self
            .log
            .as_ref()
            .expect("a server started with Server::logged");
        std::fs::read_to_string(path).unwrap_or_default()
    }
}

impl Drop for Server {
    /// Kills the process; its data directory, if owned, goes right after (`owned_dir`).
    fn drop(&mut self) {
        let _ = self.process.child.kill();
        let _ = self.process.child.wait();
    }
}
