//! Project automation, run as `cargo xtask <command>`.
//!
//! - `codegen`: regenerate `generated/` from `spec/`.
//! - `codegen --check`: fail (exit 1) if `generated/` is not what `spec/` generates; for CI.
//! - `test`: install what the tests need (xmllint, fusepy) when missing, then `cargo test --workspace`
//!   (SQLite), then the suites that need a cargo feature ([`FEATURE_SUITES`]: OpenTelemetry
//!   export), then the PostgreSQL pass: a throwaway cluster ([`pg`]) and the suites of the
//!   backend matrix against it ([`postgres_pass`]).
//! - `bench [--smoke] [--no-peer] [--long]`: the benchmark harness (release build); writes
//!   BENCHMARKS.md (`--long`: only its "Long run" section and BENCHMARKS-long.svg).
//! - `listen [PORT] [--secret S]…`: the callback receiver that prints every notification
//!   POSTed to it, verifying signatures with the secrets given (for trying the API by hand;
//!   see the README walkthrough); the same as `netapi-chat client listen`.

mod bench;
mod pg;

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// What a Python must import for the hung-backup test: fusepy, under either of its module
/// names (PyPI's `fuse`, Debian python3-fusepy's `fusepy`).
const FUSEPY_PROBE: &str = "try:\n from fuse import FUSE, Operations\nexcept ImportError:\n from fusepy import FUSE, Operations";

/// Whether `command args` runs and succeeds (its stderr discarded).
fn succeeds(command: &str, args: &[&str]) -> bool {
    Command::new(command)
        .args(args)
        .stderr(std::process::Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The first Python that imports fusepy: `python3` on the path (perhaps a pyenv one, with
/// PyPI's `fuse`) or Debian's own.
fn fusepy_python() -> Option<&'static str> {
    ["python3", "/usr/bin/python3"]
        .into_iter()
        .find(|python| succeeds(python, &["-c", FUSEPY_PROBE]))
}

/// What the tests run besides cargo, each installed from its Debian package when missing:
/// the XML tests validate against the XSD with `xmllint` (libxml2-utils); the hung-backup
/// test of `operations.rs` mounts a FUSE file system written with fusepy (python3-fusepy),
/// needed only where the machine has FUSE (`/dev/fuse`; without it that test says it is
/// skipped, and so does this). The Python that imports fusepy, for the tests
/// (`NETAPI_CHAT_TEST_FUSEPY_PYTHON`), where the machine has FUSE.
fn ensure_test_tools() -> Result<Option<&'static str>> {
    let mut missing = Vec::new();
    if !succeeds("xmllint", &["--version"]) {
        missing.push("libxml2-utils");
    }
    let fuse = Path::new("/dev/fuse").exists();
    if !fuse {
        println!("no /dev/fuse here: the hung-backup test (operations.rs) will be skipped");
    } else if fusepy_python().is_none() {
        missing.push("python3-fusepy");
    }
    if !missing.is_empty() {
        install(&missing)?;
    }
    match (fuse, fusepy_python()) {
        (false, _) => Ok(None),
        (true, Some(python)) => Ok(Some(python)),
        (true, None) => bail!("python3-fusepy is installed, but no python3 imports fusepy"),
    }
}

/// Installs the Debian packages `missing` with apt-get (through sudo when not root).
fn install(missing: &[&str]) -> Result<()> {
    println!("installing {} with apt-get", missing.join(" "));
    let sudo: &[&str] = if succeeds("sudo", &["--version"]) && !is_root() {
        &["sudo"]
    } else {
        &[]
    };
    let install = [&["apt-get", "install", "-y", "-qq"][..], missing].concat();
    for args in [vec!["apt-get", "update", "-qq"], install] {
        let mut all: Vec<&str> = sudo.to_vec();
        all.extend(args);
        let status = Command::new(all[0])
            .args(&all[1..])
            .status()
            .context("running apt-get")?;
        if !status.success() {
            bail!(
                "could not install {}; install them by hand and rerun",
                missing.join(" ")
            );
        }
    }
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn workspace_root() -> Result<PathBuf> {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent()
        .map(Path::to_path_buf)
        .context("xtask must live one level below the workspace root")
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root()?;
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["codegen"] => {
            let files = netapi_chat_codegen::generate(&netapi_chat_codegen::read_spec(&root)?)?;
            let changed = netapi_chat_codegen::write(&root, &files)?;
            if changed.is_empty() {
                println!("generated/ is up to date ({} files)", files.len());
            }
            for p in changed {
                println!("wrote {}", p.display());
            }
            Ok(())
        }
        ["codegen", "--check"] => {
            let files = netapi_chat_codegen::generate(&netapi_chat_codegen::read_spec(&root)?)?;
            let stale = netapi_chat_codegen::stale(&root, &files);
            if stale.is_empty() {
                println!("generated/ matches spec/ ({} files)", files.len());
                Ok(())
            } else {
                for p in &stale {
                    eprintln!("stale: {}", p.display());
                }
                bail!(
                    "generated/ is out of date with spec/: run `cargo xtask codegen` and commit the result"
                )
            }
        }
        ["test", rest @ ..] => {
            let fusepy = ensure_test_tools()?;
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
            let mut test = Command::new(cargo);
            test.current_dir(&root)
                .args(["test", "--workspace"])
                .args(rest.iter());
            if let Some(python) = fusepy {
                test.env("NETAPI_CHAT_TEST_FUSEPY_PYTHON", python);
            }
            let status = test.status().context("running cargo test")?;
            if !status.success() {
                bail!("tests failed");
            }
            feature_suites(&root)?;
            postgres_pass(&root)
        }
        ["bench", rest @ ..] => bench::main(&root, rest),
        ["listen", rest @ ..] => listen(rest),
        _ => bail!(
            "usage: cargo xtask codegen [--check] | cargo xtask test [cargo test args] | cargo xtask bench [--smoke] [--no-peer] [--long] | cargo xtask listen [PORT] [--secret whsec_…]"
        ),
    }
}

/// The suites built only with a cargo feature of the server (`required-features` in the root
/// `Cargo.toml`, so `cargo test --workspace` skips them), each with its feature: only the
/// server crate is rebuilt for them.
const FEATURE_SUITES: [(&str, &str); 1] = [("otel", "otel")];

/// Runs [`FEATURE_SUITES`], one `cargo test` each.
fn feature_suites(root: &Path) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    for (suite, feature) in FEATURE_SUITES {
        println!("== suite {suite} (--features {feature})");
        let status = Command::new(&cargo)
            .current_dir(root)
            .args([
                "test",
                "-p",
                "netapi-chat",
                "--features",
                feature,
                "--test",
                suite,
            ])
            .status()
            .context("running cargo test")?;
        if !status.success() {
            bail!("tests failed ({suite}, --features {feature})");
        }
    }
    Ok(())
}

/// The black-box suites that run against PostgreSQL as well (the backend matrix): the
/// flows, errors, durability (restart and SIGKILL: nothing answered 2xx lost), security,
/// limits, paging, retention, delivery (issue 14's list and what depends on the store) and
/// channels (channel records and their mailboxes' outbox rows, sockets on both bindings). The
/// other suites test what does not depend on the store, or SQLite itself.
const POSTGRES_SUITES: [&str; 9] = [
    "flows",
    "errors",
    "durability",
    "security",
    "limits",
    "paging",
    "retention",
    "delivery",
    "channels",
];

/// Tests of the PostgreSQL pass that read, edit or copy the SQLite file directly (so mean
/// nothing there).
const SQLITE_ONLY: [&str; 3] = [
    "a_dead_receivers_backlog_stops_at_the_cap_and_the_subscription_is_disabled",
    "a_notify_url_that_cannot_be_delivered_to_disables_its_subscription",
    "a_restored_backup_does_not_reuse_webhook_ids",
];

/// The PostgreSQL pass of `cargo xtask test`: starts a throwaway cluster and runs, with
/// `NETAPI_CHAT_TEST_DATABASE_URL` set (each test server then gets a database of its own, see
/// `server/tests/support`): the backend's unit tests (ignored without a database), the
/// [`POSTGRES_SUITES`], then the outage suite (`pg_outage`: the database stopped and started
/// under a running server) and the several-instances suite (`cluster`), which need the
/// cluster to themselves. Skipped with
/// `NETAPI_CHAT_TEST_BACKENDS=sqlite`.
fn postgres_pass(root: &Path) -> Result<()> {
    if std::env::var("NETAPI_CHAT_TEST_BACKENDS").is_ok_and(|b| !b.contains("postgres")) {
        println!("NETAPI_CHAT_TEST_BACKENDS has no `postgres`: PostgreSQL pass skipped");
        return Ok(());
    }
    let cluster = pg::Cluster::start()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut suites = vec!["--no-fail-fast", "-p", "netapi-chat"];
    for s in POSTGRES_SUITES {
        suites.extend(["--test", s]);
    }
    suites.push("--");
    for t in SQLITE_ONLY {
        suites.extend(["--skip", t]);
    }
    let runs: [(&str, Vec<&str>); 4] = [
        (
            "unit tests of the PostgreSQL backend",
            vec![
                "-p",
                "netapi-chat",
                "--lib",
                "--",
                "--ignored",
                "store::postgres::tests::pg_",
            ],
        ),
        ("the suites of the backend matrix on PostgreSQL", suites),
        (
            "losing the database, one server per database (pg_outage)",
            vec![
                "-p",
                "netapi-chat",
                "--test",
                "pg_outage",
                "--",
                "--ignored",
                // One at a time: one of them stops the database under the other.
                "--test-threads=1",
            ],
        ),
        (
            "several instances on one database (cluster)",
            vec![
                "-p",
                "netapi-chat",
                "--test",
                "cluster",
                "--",
                "--ignored",
                // One at a time: one of them stops the database under the others.
                "--test-threads=1",
            ],
        ),
    ];
    for (what, args) in runs {
        println!("== PostgreSQL pass: {what}");
        let status = Command::new(&cargo)
            .current_dir(root)
            .arg("test")
            .args(&args)
            .env("NETAPI_CHAT_TEST_DATABASE_URL", &cluster.url)
            .env("NETAPI_CHAT_TEST_DATABASE_TLS_URL", &cluster.tls_url)
            .env("NETAPI_CHAT_TEST_DATABASE_CA", &cluster.ca)
            .env("NETAPI_CHAT_TEST_PG_CTL", &cluster.ctl)
            .status()
            .context("running cargo test")?;
        println!("{}", cluster.footprint());
        if !status.success() {
            println!(
                "== the test PostgreSQL's log, its end:\n{}",
                cluster.log_tail(60)
            );
            bail!("tests failed on PostgreSQL ({what})");
        }
    }
    Ok(())
}

/// `cargo xtask listen [PORT] [--secret whsec_…]…`: the project's printing callback listener
/// (`netapi_chat_webhooks::listen::serve_printing`, the same as `netapi-chat client listen`)
/// on 127.0.0.1:PORT (default 9000): prints every notification POSTed to it and answers 204,
/// verifying signatures when given secrets. For trying the API by hand (README walkthrough).
fn listen(args: &[&str]) -> Result<()> {
    let mut port = 9000u16;
    let mut secrets = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match *arg {
            "--secret" => {
                let secret = args.next().context("--secret needs a whsec_… value")?;
                secrets.push(
                    netapi_chat_webhooks::signing::Signer::from_secret(secret)
                        .map_err(|e| anyhow::anyhow!("--secret: {e}"))?,
                );
            }
            p => port = p.parse().context("PORT must be a number")?,
        }
    }
    tokio::runtime::Runtime::new()?
        .block_on(netapi_chat_webhooks::listen::serve_printing(
            &format!("127.0.0.1:{port}"),
            secrets,
        ))
        .with_context(|| format!("listening on 127.0.0.1:{port}"))
}
