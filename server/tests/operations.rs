//! Issue 17 (operating it), against the real binary:
//!
//! - item 2: `/healthz` and `/readyz` answer without a token, `HEAD` works, other methods get
//!   the gate's 405, and `/readyz` says 503 while the data directory's disk is full (and 200
//!   again once it is not);
//! - item 4: `--help`, `--version`, `--config FILE`, `check-config` (valid and invalid files,
//!   unknown keys), and the environment overriding the file;
//! - item 1: `/metrics` opens only with the metrics token, and its counters move as a flow runs
//!   (requests by route and status, store commits, notifications, sizes, rate-limit refusals).

mod support;

use netapi_chat_runtime::Format;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{Listener, Server, send};

// ---------------------------------------------------------------- item 2: health

/// `GET` without any credentials.
async fn get_unauthenticated(url: &str) -> support::Answer {
    send("GET", url, &[("authorization", "")], None).await
}

/// Both endpoints answer 200 with a short plain-text body, with no token (a load balancer has
/// none), and nobody caches them.
#[tokio::test]
async fn healthz_and_readyz_answer_200_without_a_token() {
    let server = Server::default_for_tests();
    for (path, body) in [("/healthz", "ok\n"), ("/readyz", "ready\n")] {
        let a = get_unauthenticated(&format!("{}{path}", server.base)).await;
        assert_eq!(a.status, 200, "{path}: {}", a.body);
        assert_eq!(a.body, body, "{path}");
        assert!(a.content_type().starts_with("text/plain"), "{path}");
        assert_eq!(a.header("cache-control"), "no-store", "{path}");
    }
}

/// `HEAD` gets the `GET`'s status and headers without a body; any other method gets the
/// gate's OMA 405 with `Allow: GET, HEAD`, in the negotiated format.
#[tokio::test]
async fn head_works_and_other_methods_get_405() {
    let server = Server::default_for_tests();
    for path in ["/healthz", "/readyz"] {
        let url = format!("{}{path}", server.base);
        let a = send("HEAD", &url, &[("authorization", "")], None).await;
        assert_eq!(a.status, 200, "HEAD {path}");
        assert!(a.body.is_empty(), "HEAD {path} has a body: {:?}", a.body);
        assert!(a.content_type().starts_with("text/plain"), "HEAD {path}");
        for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
            for format in [Format::Json, Format::Xml] {
                let a = send(
                    method,
                    &url,
                    &[("authorization", ""), ("accept", format.media_type())],
                    None,
                )
                .await;
                a.assert_error(405, "SVC0002", format);
                assert_eq!(a.header("allow"), "GET, HEAD", "{method} {path}");
            }
        }
    }
}

/// The health endpoints are operational, not part of the OMA API: they are not in the
/// published OpenAPI document.
#[tokio::test]
async fn health_endpoints_are_not_in_the_published_openapi() {
    let server = Server::default_for_tests();
    let a = get_unauthenticated(&format!("{}/openapi.json", server.base)).await;
    assert_eq!(a.status, 200);
    let doc: serde_json::Value = serde_json::from_str(&a.body).expect("OpenAPI JSON");
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.keys().any(|p| p.starts_with("/v1/chat/")));
    for p in ["/healthz", "/readyz"] {
        assert!(!paths.contains_key(p), "{p} is published");
    }
}

/// A tmpfs of `size` mounted on a fresh directory (root with CAP_SYS_ADMIN, as in CI); unmounted
/// on drop. `None` where mounting is not permitted: the test then says it was skipped. (The
/// same helper as in `hardening_core.rs`.)
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = std::env::temp_dir().join(format!(
            "netapi-chat-operations-tmpfs-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).ok()?;
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = std::fs::remove_dir(&dir);
            eprintln!("SKIPPED: cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)");
            return None;
        }
        Some(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Polls `/readyz` until it answers `status` (a probe result is reused for a second, so the
/// change shows within a couple of seconds); panics with the last answer after 20 s.
async fn readyz_becomes(server: &Server, status: u16) -> support::Answer {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let a = get_unauthenticated(&format!("{}/readyz", server.base)).await;
        if a.status == status || Instant::now() > deadline {
            assert_eq!(a.status, status, "readyz: {}", a.body);
            return a;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The data directory's disk fills up: `/readyz` says 503 (a short text, no details for an
/// unauthenticated client) while `/healthz` stays 200 (the process is alive), and once space
/// is freed `/readyz` is 200 again. Nothing was committed meanwhile, so the server never had
/// to stop.
#[tokio::test]
async fn readyz_is_503_while_the_disk_is_full() {
    let Some(fs) = Tmpfs::mount("2m") else {
        return;
    };
    std::fs::write(fs.0.join("tokens"), format!("{} *\n", support::APP_TOKEN)).expect("tokens");
    let server = Server::start_in(&fs.0, &[], None);
    readyz_becomes(&server, 200).await;
    let filler = fs.0.join("filler");
    {
        let mut f = std::fs::File::create(&filler).expect("filler");
        let chunk = vec![0u8; 16 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
        while f.write_all(&[0u8; 512]).is_ok() {}
    }
    let a = readyz_becomes(&server, 503).await;
    assert!(a.body.starts_with("not ready"), "{}", a.body);
    assert!(
        !a.body.contains(&fs.0.display().to_string()),
        "the data directory is not told to anyone: {}",
        a.body
    );
    let h = get_unauthenticated(&format!("{}/healthz", server.base)).await;
    assert_eq!(h.status, 200, "alive while not ready");
    std::fs::remove_file(&filler).expect("free the disk");
    readyz_becomes(&server, 200).await;
    drop(server);
}

// ---------------------------------------------------------------- item 4: configuration

/// A configuration file holding `text`, removed on drop.
struct ConfigFile(PathBuf);

impl ConfigFile {
    fn new(text: &str) -> ConfigFile {
        let path = std::env::temp_dir().join(format!(
            "netapi-chat-operations-{}.toml",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::write(&path, text).expect("write config file");
        ConfigFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("UTF-8 temp path")
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// What a run of the binary that exits by itself printed.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the binary with `args` and `env` (and no other `NETAPI_CHAT_*` variable) to its end.
fn run(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_netapi-chat"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("NETAPI_CHAT_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run netapi-chat");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn version_prints_the_package_version() {
    let r = run(&["--version"], &[]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(
        r.stdout.trim(),
        format!("netapi-chat {}", env!("CARGO_PKG_VERSION"))
    );
}

/// `--help` shows the command line and every setting, by file key and variable, with its
/// default; an unknown argument is a usage error, not a started server.
#[test]
fn help_lists_the_commands_and_every_setting() {
    let r = run(&["--help"], &[]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    for word in ["--config", "check-config", "serve", "--version"] {
        assert!(
            r.stdout.contains(word),
            "--help lacks {word}:\n{}",
            r.stdout
        );
    }
    for s in netapi_chat::config::SETTINGS {
        assert!(
            r.stdout.contains(&format!("{}, {}", s.key(), s.env)),
            "--help lacks {}:\n{}",
            s.env,
            r.stdout
        );
    }
    let r = run(&["--no-such-option"], &[]);
    assert_eq!(r.code, Some(2));
    assert!(r.stderr.contains("--no-such-option"), "{}", r.stderr);
}

/// A valid file: `check-config` prints every setting as TOML with where its value comes from
/// (the environment over the file over the defaults), the webhook secret redacted; exit 0.
#[test]
fn check_config_prints_the_effective_configuration() {
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let f = ConfigFile::new(&format!(
        "max_body_bytes = 1000\nsync = \"full\"\nbind = \"127.0.0.1:9\"\nwebhook_secret = \"{secret}\"\n"
    ));
    let r = run(
        &["check-config", "--config", f.path()],
        &[("NETAPI_CHAT_MAX_BODY_BYTES", "2000")],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    for line in [
        "max_body_bytes = 2000  # NETAPI_CHAT_MAX_BODY_BYTES",
        "sync = \"full\"  # file",
        "bind = \"127.0.0.1:9\"  # file",
        "log_level = \"warn\"  # default",
        "webhook_secret = \"<redacted>\"  # file",
        "# public_url: not set",
    ] {
        assert!(
            r.stdout.lines().any(|l| l.starts_with(line)),
            "no {line:?} in:\n{}",
            r.stdout
        );
    }
    assert!(
        !r.stdout.contains("MfKQ9r8"),
        "secret printed:\n{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(f.path()),
        "the file is named:\n{}",
        r.stdout
    );
    assert_eq!(
        r.stdout
            .lines()
            .filter(|l| !l.starts_with("# netapi-chat"))
            .count(),
        netapi_chat::config::SETTINGS.len(),
        "one line per setting:\n{}",
        r.stdout
    );
}

/// Invalid configurations: exit 2, nothing on stdout, a message naming the file and the
/// setting; an unknown key is refused by its name.
#[test]
fn check_config_refuses_an_invalid_configuration() {
    let bad_value = ConfigFile::new("max_body_bytes = 1000\nsync = \"sometimes\"\n");
    let unknown = ConfigFile::new("max_body_bytes = 1000\nmax_bodybytes = 5\n");
    let not_toml = ConfigFile::new("max_body_bytes = \n");
    for (args, env, wanted) in [
        (
            vec!["check-config", "--config", bad_value.path()],
            vec![],
            vec![
                bad_value.path(),
                "sync = \"sometimes\" is not valid: expected normal or full",
            ],
        ),
        (
            vec!["--config", unknown.path(), "check-config"],
            vec![],
            vec![unknown.path(), "unknown setting `max_bodybytes`"],
        ),
        (
            vec!["check-config", "--config", not_toml.path()],
            vec![],
            vec![not_toml.path(), "not valid TOML"],
        ),
        (
            vec!["check-config"],
            vec![("NETAPI_CHAT_WEBHOOK_SECRET", "not-a-whsec-secret")],
            vec!["NETAPI_CHAT_WEBHOOK_SECRET"],
        ),
        (
            vec!["check-config"],
            vec![
                ("NETAPI_CHAT_JWKS_FILE", bad_value.path()),
                ("NETAPI_CHAT_JWT_ISSUER", "https://issuer.example"),
                ("NETAPI_CHAT_JWT_AUDIENCE", "chat"),
            ],
            vec!["not a JWKS"],
        ),
        (
            vec!["check-config"],
            vec![("NETAPI_CHAT_RATE_LIMIT", "fast")],
            vec!["NETAPI_CHAT_RATE_LIMIT=\"fast\" is not valid"],
        ),
        (
            vec!["check-config"],
            vec![("NETAPI_CHAT_CONFIG", "/nonexistent/netapi-chat.toml")],
            vec!["/nonexistent/netapi-chat.toml", "cannot read"],
        ),
    ] {
        let r = run(&args, &env);
        assert_eq!(r.code, Some(2), "{args:?} {env:?}: {}", r.stderr);
        assert!(r.stdout.is_empty(), "{args:?}: {}", r.stdout);
        for w in wanted {
            assert!(r.stderr.contains(w), "{args:?}: no {w:?} in {}", r.stderr);
        }
    }
}

/// A server started with `--config`: the file's settings are in force, and the environment
/// overrides them (a body over the file's `max_body_bytes` gets 413, unless the environment
/// raises it). An invalid file stops the start with exit 2.
#[tokio::test]
async fn the_server_runs_on_the_file_under_the_environment() {
    let f = ConfigFile::new("max_body_bytes = 300\nlog_level = \"warn\"\n");
    let body = format!(
        r#"{{"chatSessionInformation":{{"subject":"{}","participant":[{{"address":"sip:bob@example.com"}}]}}}}"#,
        "x".repeat(400)
    );
    let create = |server: &Server| {
        let url = server.urls().chat_sessions("tel:+15551230001");
        let body = body.clone();
        async move {
            send(
                "POST",
                &url,
                &[("content-type", "application/json")],
                Some(&body),
            )
            .await
        }
    };
    let from_file = Server::start_with_args(&["--config", f.path()], &[]);
    create(&from_file)
        .await
        .assert_error(413, "POL2004", Format::Json);
    let overridden = Server::start_with_args(
        &["--config", f.path()],
        &[("NETAPI_CHAT_MAX_BODY_BYTES", "65536")],
    );
    let a = create(&overridden).await;
    assert_eq!(a.status, 201, "{}", a.body);

    let bad = ConfigFile::new("max_body_bytes = -1\n");
    let r = run(
        &["--config", bad.path()],
        &[("NETAPI_CHAT_BIND", "127.0.0.1:0")],
    );
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(!r.stdout.contains("listening"), "{}", r.stdout);
    assert!(
        r.stderr.contains("max_body_bytes = \"-1\" is not valid"),
        "{}",
        r.stderr
    );
}

// ---------------------------------------------------------------- item 1: metrics

const METRICS_TOKEN: &str = "metrics-token-for-tests-0123456789";

/// The sum of the samples of `name` whose labels include every pair of `labels`, in a
/// Prometheus text exposition (`None` when there is none).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("a sample line");
        let (metric, rest) = match series.split_once('{') {
            Some((m, r)) => (m, r.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name {
            continue;
        }
        if labels
            .iter()
            .all(|(k, v)| rest.split(',').any(|kv| kv == format!("{k}=\"{v}\"")))
        {
            let v: f64 = value.parse().expect("a number");
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

async fn scrape(server: &Server) -> String {
    let a = send(
        "GET",
        &format!("{}/metrics", server.base),
        &[("authorization", &format!("Bearer {METRICS_TOKEN}"))],
        None,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(
        a.content_type().starts_with("text/plain"),
        "{}",
        a.content_type()
    );
    a.body
}

/// Without a metrics token configured there is no `/metrics` (404 like any unknown path);
/// with one, only that token opens it: none, or an API token, gets 401.
#[tokio::test]
async fn metrics_open_only_with_the_metrics_token() {
    let off = Server::default_for_tests();
    let a = send("GET", &format!("{}/metrics", off.base), &[], None).await;
    assert_eq!(a.status, 404, "{}", a.body);

    let on = Server::start(&[("NETAPI_CHAT_METRICS_TOKEN", METRICS_TOKEN)]);
    let url = format!("{}/metrics", on.base);
    let a = send("GET", &url, &[("authorization", "")], None).await;
    assert_eq!(a.status, 401);
    assert!(a.header("www-authenticate").starts_with("Bearer"));
    // `send` adds the application token: an API token does not open the metrics.
    let a = send("GET", &url, &[], None).await;
    assert_eq!(a.status, 401, "an API token opens /metrics");
    assert!(!a.body.contains("netapi_chat_"), "{}", a.body);
    let a = send("POST", &url, &[("accept", "application/json")], None).await;
    a.assert_error(405, "SVC0002", Format::Json);
    scrape(&on).await;
}

/// A flow runs (bob subscribes, alice starts a chat with him, bob's callback gets the
/// invitation, a token goes over its rate): the scraped counters say so.
#[tokio::test]
async fn metrics_follow_a_flow() {
    let server = Server::start(&[
        ("NETAPI_CHAT_METRICS_TOKEN", METRICS_TOKEN),
        ("NETAPI_CHAT_RATE_LIMIT", "1"),
        ("NETAPI_CHAT_RATE_BURST", "40"),
    ]);
    let before = scrape(&server).await;
    let sessions_route = [
        ("method", "POST"),
        ("route", "/v1/chat/{userId}/chatSessions"),
        ("status", "201"),
    ];
    assert_eq!(
        sample(&before, "netapi_chat_http_requests_total", &sessions_route),
        None
    );
    assert_eq!(sample(&before, "netapi_chat_sessions", &[]), Some(0.0));

    let bob = Listener::start().await;
    let a = send(
        "POST",
        &server.urls().subscriptions("sip:bob@example.com"),
        &[("content-type", "application/json")],
        Some(&format!(
            r#"{{"chatSubscription":{{"callbackReference":{{"notifyURL":"{}"}}}}}}"#,
            bob.url
        )),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let a = send(
        "POST",
        &server.urls().chat_sessions("tel:+15551230001"),
        &[("content-type", "application/json")],
        Some(r#"{"chatSessionInformation":{"participant":[{"address":"sip:bob@example.com"}]}}"#),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    bob.wait_for(1).await;
    let a = send(
        "GET",
        &format!("{}/nowhere/tel%3A%2B1", server.base),
        &[],
        None,
    )
    .await;
    assert_eq!(a.status, 404);
    // A user's own token, over the rate (1 a second, bursts of 40).
    let token = support::user_token("sip:mallory@example.com");
    let mut limited = 0;
    for _ in 0..45 {
        let a = send(
            "GET",
            &server.urls().subscriptions("sip:mallory@example.com"),
            &[("authorization", &format!("Bearer {token}"))],
            None,
        )
        .await;
        limited += usize::from(a.status == 429);
    }
    assert!(limited >= 1, "the rate limit was not reached");

    // Delivery is counted once the callback has answered: wait for it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = scrape(&server).await;
        // The delivered notification leaves the outbox in a commit of its own, just after.
        let delivered = sample(&text, "netapi_chat_notifications_delivered_total", &[]);
        let backlog = sample(&text, "netapi_chat_notifications_undelivered", &[]);
        if (delivered == Some(1.0) && backlog == Some(0.0)) || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let get = |name: &str, labels: &[(&str, &str)]| sample(&text, name, labels).unwrap_or(0.0);
    assert_eq!(
        get("netapi_chat_http_requests_total", &sessions_route),
        1.0,
        "{text}"
    );
    assert_eq!(
        get(
            "netapi_chat_http_requests_total",
            &[
                ("route", "/v1/chat/{userId}/subscriptions"),
                ("status", "201")
            ]
        ),
        1.0
    );
    assert_eq!(
        get(
            "netapi_chat_http_requests_total",
            &[("route", "other"), ("status", "404")]
        ),
        1.0,
        "an unknown path is counted under `other`, not its own path"
    );
    assert!(!text.contains("nowhere"), "a client's path became a label");
    assert_eq!(
        get(
            "netapi_chat_http_request_duration_seconds_count",
            &[
                ("route", "/v1/chat/{userId}/chatSessions"),
                ("method", "POST")
            ]
        ),
        1.0
    );
    assert_eq!(
        get("netapi_chat_http_requests_total", &[("status", "429")]),
        limited as f64
    );
    assert_eq!(
        get("netapi_chat_rate_limited_total", &[("limit", "requests")]),
        limited as f64
    );
    assert_eq!(get("netapi_chat_notifications_delivered_total", &[]), 1.0);
    assert_eq!(get("netapi_chat_notifications_queued_total", &[]), 1.0);
    assert_eq!(
        get(
            "netapi_chat_notification_attempts_total",
            &[("outcome", "delivered")]
        ),
        1.0
    );
    assert_eq!(get("netapi_chat_notifications_given_up_total", &[]), 0.0);
    assert!(
        get("netapi_chat_store_commit_duration_seconds_count", &[]) >= 2.0,
        "{text}"
    );
    assert!(
        get("netapi_chat_store_commit_group_size_count", &[]) >= 2.0,
        "{text}"
    );
    assert_eq!(
        get("netapi_chat_notifications_undelivered", &[]),
        0.0,
        "{text}"
    );
    assert_eq!(get("netapi_chat_sessions", &[]), 1.0);
    assert_eq!(get("netapi_chat_subscriptions", &[]), 1.0);
}

/// A callback that is down: the failed attempt is counted and the notification stays in the
/// durable backlog while it waits for its retry (an hour away here).
#[tokio::test]
async fn metrics_show_the_backlog_of_a_callback_that_is_down() {
    let server = Server::start(&[
        ("NETAPI_CHAT_METRICS_TOKEN", METRICS_TOKEN),
        ("NETAPI_CHAT_RETRY_SCHEDULE", "0,1h"),
    ]);
    let bob = Listener::start().await;
    bob.set_down(true);
    let a = send(
        "POST",
        &server.urls().subscriptions("sip:bob@example.com"),
        &[("content-type", "application/json")],
        Some(&format!(
            r#"{{"chatSubscription":{{"callbackReference":{{"notifyURL":"{}"}}}}}}"#,
            bob.url
        )),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let a = send(
        "POST",
        &server.urls().chat_sessions("tel:+15551230001"),
        &[("content-type", "application/json")],
        Some(r#"{"chatSessionInformation":{"participant":[{"address":"sip:bob@example.com"}]}}"#),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let deadline = Instant::now() + Duration::from_secs(20);
    let failed = [("outcome", "failed")];
    let text = loop {
        let text = scrape(&server).await;
        if sample(&text, "netapi_chat_notification_attempts_total", &failed).is_some()
            || Instant::now() > deadline
        {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let get = |name: &str, labels: &[(&str, &str)]| sample(&text, name, labels).unwrap_or(0.0);
    assert_eq!(
        get("netapi_chat_notification_attempts_total", &failed),
        1.0,
        "{text}"
    );
    assert_eq!(
        get("netapi_chat_notifications_undelivered", &[]),
        1.0,
        "{text}"
    );
    assert_eq!(get("netapi_chat_notifications_delivered_total", &[]), 0.0);
    assert_eq!(get("netapi_chat_notifications_given_up_total", &[]), 0.0);
}
