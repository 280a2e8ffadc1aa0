//! A throwaway PostgreSQL cluster for the tests' PostgreSQL pass (`cargo xtask test`).
//!
//! Uses the server binaries of the Debian package (`/usr/lib/postgresql/<major>/bin`),
//! installing `postgresql` with apt-get when none is there. PostgreSQL refuses to run as root
//! (CI runs as root), so as root the cluster belongs to an unprivileged system user
//! ([`PG_USER`], created when missing) and its commands run through `runuser`. The cluster
//! lives in a temporary directory, listens on a unix socket in it and on 127.0.0.1 (the same
//! free port) with TLS on, a self-signed certificate for `127.0.0.1` made here (the tests of
//! TLS to the database), runs with `fsync=off` (the tests kill netapi-chat, never the
//! database's machine) and is stopped and deleted when dropped.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The OS user that owns the test cluster when xtask runs as root.
pub const PG_USER: &str = "netapi-pg";

/// A running throwaway cluster.
pub struct Cluster {
    dir: PathBuf,
    /// `pg_ctl` wrapper (runs as the cluster's owner with the cluster's options): what the
    /// tests use to stop and start the database (`NETAPI_CHAT_TEST_PG_CTL`).
    pub ctl: PathBuf,
    /// The URL of its `postgres` database, as the `postgres` superuser, over the socket.
    pub url: String,
    /// The same database over TCP with TLS required (`NETAPI_CHAT_TEST_DATABASE_TLS_URL`).
    pub tls_url: String,
    /// The PEM certificate the cluster's TLS uses, to trust (`NETAPI_CHAT_TEST_DATABASE_CA`).
    pub ca: PathBuf,
}

/// The newest `/usr/lib/postgresql/<major>/bin` that has `initdb`, `pg_ctl` and `postgres`.
fn server_bin() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let major: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            ["initdb", "pg_ctl", "postgres"]
                .iter()
                .all(|b| bin.join(b).is_file())
                .then_some((major, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

fn run(what: &str, cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The server binaries, installed from Debian's `postgresql` package when missing.
fn ensure_installed() -> Result<PathBuf> {
    if let Some(bin) = server_bin() {
        return Ok(bin);
    }
    println!("PostgreSQL server binaries not found: installing postgresql with apt-get");
    let sudo = !super::is_root();
    for args in [
        vec!["apt-get", "update", "-qq"],
        vec!["apt-get", "install", "-y", "-qq", "postgresql"],
    ] {
        let mut all: Vec<&str> = if sudo { vec!["sudo"] } else { vec![] };
        all.extend(args);
        run(
            "apt-get",
            Command::new(all[0])
                .args(&all[1..])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }
    server_bin().context("apt-get installed postgresql but no /usr/lib/postgresql/*/bin/initdb")
}

/// As root: the unprivileged owner of the cluster, created when missing.
fn ensure_user() -> Result<()> {
    let exists = Command::new("id")
        .arg(PG_USER)
        .output()
        .is_ok_and(|o| o.status.success());
    if !exists {
        run(
            "useradd",
            Command::new("useradd").args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                PG_USER,
            ]),
        )?;
    }
    Ok(())
}

/// A port nobody listens on now (it names the socket file, and the cluster's TCP listener on
/// 127.0.0.1), below Linux's ephemeral range (32768 on): the tests stop and start the
/// cluster on it, and a port the kernel hands out could meanwhile go to another process's
/// connection or listener (as a server's own probe-and-rebind once failed CI).
fn free_port() -> Result<u16> {
    let from = 20_000 + u16::try_from(std::process::id() % 10_000).unwrap_or(0);
    (from..32_000)
        .chain(20_000..from)
        .find(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .context("finding a free port below the ephemeral range")
}

/// The bytes of the files under `dir` (0 for what cannot be read: the cluster's owner's files
/// are readable by root, and by us when we are the owner).
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

fn percent_encode_path(p: &Path) -> String {
    p.display()
        .to_string()
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Cluster {
    /// initdb in a new temporary directory and start it, `fsync=off` (tests); stopped and
    /// deleted on drop.
    pub fn start() -> Result<Cluster> {
        Cluster::start_with(false)
    }

    /// Creates database `name` in this cluster (over TCP as `postgres`; the cluster trusts
    /// local connections) and returns its URL, shaped like [`Cluster::url`]: a second
    /// database for a second netapi-chat cluster on the same PostgreSQL.
    pub fn database(&self, name: &str) -> Result<String> {
        let bin = server_bin().context("no PostgreSQL binaries")?;
        let port = self
            .tls_url
            .split_once("127.0.0.1:")
            .and_then(|(_, rest)| rest.split_once('/'))
            .map(|(port, _)| port.to_owned())
            .context("no port in the cluster's URL")?;
        run(
            "createdb",
            Command::new(bin.join("createdb"))
                .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres"])
                .arg(name),
        )?;
        let (base, _) = self
            .url
            .rsplit_once('/')
            .context("no database in the cluster's URL")?;
        Ok(format!("{base}/{name}"))
    }

    /// One line on the cluster's disk: the size of its data directory and the space left on
    /// its filesystem. Printed after each run of the PostgreSQL pass: a test run whose
    /// databases outlive their tests fills the disk, and PostgreSQL then stops and recovers
    /// (`the database system is in recovery mode`) under every test at once.
    pub fn footprint(&self) -> String {
        let used = dir_size(&self.dir.join("data"));
        let free = Command::new("df")
            .args(["-Pk"])
            .arg(&self.dir)
            .output()
            .ok()
            .and_then(|o| {
                let out = String::from_utf8_lossy(&o.stdout).into_owned();
                let kib: u64 = out
                    .lines()
                    .nth(1)?
                    .split_whitespace()
                    .nth(3)?
                    .parse()
                    .ok()?;
                Some(format!("{} MiB free on its filesystem", kib / 1024))
            })
            .unwrap_or_else(|| "free space unknown (df)".to_owned());
        format!(
            "test PostgreSQL: {} MiB in its data directory, {free}",
            used >> 20
        )
    }

    /// The last `lines` lines of the cluster's log (what PostgreSQL said when it stopped,
    /// crashed or refused): printed when a run of the PostgreSQL pass fails, since the
    /// directory is deleted with the cluster.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The postmaster's process id (the first line of `postmaster.pid`).
    pub fn postmaster_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("data/postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// As [`Cluster::start`]; `durable`: PostgreSQL's default `fsync=on` (benchmarks) instead
    /// of `fsync=off`.
    pub fn start_with(durable: bool) -> Result<Cluster> {
        let bin = ensure_installed()?;
        let root = super::is_root();
        if root {
            ensure_user()?;
        }
        // As root, in /tmp rather than $TMPDIR, which the cluster's owner might not reach.
        let tmp = if root {
            PathBuf::from("/tmp")
        } else {
            std::env::temp_dir()
        };
        let dir = tmp.join(format!("netapi-chat-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).context("creating the cluster directory")?;
        if root {
            run("chown", Command::new("chown").arg(PG_USER).arg(&dir))?;
        }
        let port = free_port()?;
        let data = dir.join("data");
        // TLS on the TCP listener: a self-signed certificate for 127.0.0.1, its key readable
        // by the cluster's owner only (PostgreSQL refuses a key others can read).
        let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
            .context("making the test cluster's certificate")?;
        let (ca, key) = (dir.join("server.crt"), dir.join("server.key"));
        std::fs::write(&ca, made.cert.pem())?;
        std::fs::write(&key, made.signing_key.serialize_pem())?;
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
        }
        if root {
            run(
                "chown",
                Command::new("chown").arg(PG_USER).arg(&ca).arg(&key),
            )?;
        }
        // The wrapper every pg_ctl call goes through (ours and the outage test's). Checkpoints
        // are not logged: each test's database dropped forces one, and the log's end, printed
        // when a step fails, would show nothing else.
        let as_owner = if root {
            format!("runuser -u {PG_USER} -- ")
        } else {
            String::new()
        };
        let ctl = dir.join("pg_ctl");
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200 \
             -c ssl=on -c ssl_cert_file={} -c ssl_key_file={} -c log_checkpoints=off{}",
            dir.display(),
            ca.display(),
            key.display(),
            if durable {
                ""
            } else {
                " -c fsync=off -c full_page_writes=off"
            }
        );
        std::fs::write(
            &ctl,
            format!(
                "#!/bin/sh\n# pg_ctl for the test cluster in {dir}\nexec {as_owner}{pg_ctl} -D {data} -o \"{options}\" -l {dir}/log \"$@\"\n",
                dir = dir.display(),
                pg_ctl = bin.join("pg_ctl").display(),
                data = data.display(),
            ),
        )?;
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&ctl, std::fs::Permissions::from_mode(0o755))?;
        }
        let cluster = Cluster {
            url: format!(
                "postgres://postgres@{}:{port}/postgres",
                percent_encode_path(&dir)
            ),
            tls_url: format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=require"),
            ca,
            dir,
            ctl,
        };
        let mut initdb = if root {
            let mut c = Command::new("runuser");
            c.args(["-u", PG_USER, "--"]).arg(bin.join("initdb"));
            c
        } else {
            Command::new(bin.join("initdb"))
        };
        run(
            "initdb",
            initdb
                .arg("-D")
                .arg(&data)
                .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"])
                .arg("--no-sync"),
        )?;
        run(
            "pg_ctl start",
            Command::new(&cluster.ctl).args(["start", "-w"]),
        )?;
        println!("test PostgreSQL running in {}", cluster.dir.display());
        Ok(cluster)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(&self.ctl)
            .args(["stop", "-m", "immediate", "-w"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
