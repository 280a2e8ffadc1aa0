//! Issue 17 (operating it), against the real binary:
//!
//! - item 2: `/healthz` and `/readyz` answer without a token, `HEAD` works, other methods get
//!   the gate's 405, and `/readyz` says 503 while the data directory's disk is full (and 200
//!   again once it is not);
//! - item 4: `--help`, `--version`, `--config FILE`, `check-config` (valid and invalid files,
//!   unknown keys), and the environment overriding the file;
//! - item 1: `/metrics` opens only with the metrics token, and its counters move as a flow runs
//!   (requests by route and status, store commits, notifications, sizes, rate-limit refusals);
//! - item 3: `x-request-id` echoed (a sane incoming one) or made, and JSON log lines that
//!   parse and carry it;
//! - item 5: `tokens add|list|revoke` change who gets in on a running server, without a
//!   restart; `summary` counts what it stores and `backup` copies it while it runs (and a
//!   server started on the copy has the state of that moment).

mod support;

use netapi_chat_runtime::Format;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{Listener, Ran, Server, Tmpfs, run_command as run, send, send_authorized, within};

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
                let a = send_authorized(method, &url, "", format).await;
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
    for word in ["--config", "check-config", "serve", "tokens", "--version"] {
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
        "max_body_bytes = 1000\nsync = \"full\"\nbind = \"127.0.0.1:10\"\nwebhook_secret = \"{secret}\"\n"
    ));
    let r = run(
        &["check-config", "--config", f.path()],
        &[("NETAPI_CHAT_MAX_BODY_BYTES", "2000")],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    for line in [
        "max_body_bytes = 2000  # NETAPI_CHAT_MAX_BODY_BYTES",
        "sync = \"full\"  # file",
        "bind = \"127.0.0.1:10\"  # file",
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
    // Refused past parsing (ops review O7: named by its environment variable, which the
    // operator never set).
    let short_secret = ConfigFile::new("webhook_secret = \"whsec_AA==\"\n");
    let short_secret_named = format!("`webhook_secret` (in {})", short_secret.path());
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
            vec!["check-config", "--config", short_secret.path()],
            vec![],
            vec![
                short_secret_named.as_str(),
                "webhook secret is 1 bytes long",
            ],
        ),
        (
            vec!["check-config"],
            vec![
                ("NETAPI_CHAT_JWKS_FILE", bad_value.path()),
                ("NETAPI_CHAT_JWT_ISSUER", "https://issuer.example"),
                ("NETAPI_CHAT_JWT_AUDIENCE", "chat"),
            ],
            // The setting and the file are named, not only what is wrong.
            vec!["NETAPI_CHAT_JWKS_FILE", bad_value.path(), "not a JWKS"],
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
        // Every duration is less than 10⁹ s, the retention's too.
        (
            vec!["check-config"],
            vec![("NETAPI_CHAT_RETENTION", "1000000000000000000s")],
            vec![
                "NETAPI_CHAT_RETENTION=\"1000000000000000000s\" is not valid",
                "less than 1000000000s",
            ],
        ),
        (
            vec!["check-config"],
            vec![("NETAPI_CHAT_RETENTION", "300000y")],
            vec!["NETAPI_CHAT_RETENTION=\"300000y\" is not valid"],
        ),
        // A switch is true, false, 1 or 0 (blank is not given): not yes, not on.
        (
            vec!["check-config"],
            vec![("NETAPI_CHAT_CALLBACK_ALLOW_LOOPBACK", "yes")],
            vec![
                "NETAPI_CHAT_CALLBACK_ALLOW_LOOPBACK=\"yes\" is not valid: expected true, false, 1 or 0",
            ],
        ),
        (
            vec!["check-config"],
            vec![("NETAPI_CHAT_CALLBACK_ALLOW_PRIVATE", "on")],
            vec![
                "NETAPI_CHAT_CALLBACK_ALLOW_PRIVATE=\"on\" is not valid: expected true, false, 1 or 0",
            ],
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

/// An unset give-up age is shown as the total of the retry schedule in force (it said "about
/// 27 h", the default schedule's, whatever the schedule).
#[test]
fn check_config_shows_the_give_up_age_of_the_schedule_in_force() {
    for (schedule, shown) in [
        (None, "1day 3h 35m 5s"),
        (Some("0,5s"), "5s"),
        (Some("0,1m,2h"), "2h 1m"),
    ] {
        let env: Vec<(&str, &str)> = schedule
            .map(|s| ("NETAPI_CHAT_RETRY_SCHEDULE", s))
            .into_iter()
            .collect();
        let r = run(&["check-config"], &env);
        assert_eq!(r.code, Some(0), "{schedule:?}: {}", r.stderr);
        let line =
            format!("# delivery_give_up_after: not set (the retry schedule's total: {shown})");
        assert!(
            r.stdout.lines().any(|l| l == line),
            "{schedule:?}: no {line:?} in:\n{}",
            r.stdout
        );
    }
}

/// `check-config` says what the start would make (it makes nothing itself): a data directory
/// or a token file that does not exist, the token file with a new `*` token (a typo in
/// `NETAPI_CHAT_TOKEN_FILE` made one in an unexpected place, unsaid); nothing of the kind once
/// they exist.
#[test]
fn check_config_says_what_the_start_would_make() {
    let dir = support::temp_dir();
    let data = dir.join("data");
    let tokens = dir.join("secrets").join("tokens");
    let env = [
        ("NETAPI_CHAT_DATA_DIR", data.to_str().expect("UTF-8")),
        ("NETAPI_CHAT_TOKEN_FILE", tokens.to_str().expect("UTF-8")),
    ];
    let r = run(&["check-config"], &env);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "{} does not exist: the start creates it",
            data.display()
        )) && r.stderr.contains(&format!(
            "the token file {} does not exist: a first start creates it with a new token",
            tokens.display()
        )),
        "{}",
        r.stderr
    );
    assert!(
        !data.exists() && !tokens.exists(),
        "check-config makes nothing"
    );
    std::fs::create_dir_all(&data).expect("data dir");
    std::fs::create_dir_all(tokens.parent().expect("a parent")).expect("secrets dir");
    std::fs::write(&tokens, format!("{} *\n", "t".repeat(40))).expect("token file");
    let r = run(&["check-config"], &env);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(!r.stderr.contains("does not exist"), "{}", r.stderr);
}

/// Bound to every address without `NETAPI_CHAT_PUBLIC_URL`, every link names `0.0.0.0`
/// (as documented), which no client on another machine can follow: `check-config` and the
/// start warn, saying what to set. With a public URL, or bound to one address, no warning.
#[test]
fn every_address_without_a_public_url_is_warned_about() {
    const WARNING: &str = "NETAPI_CHAT_BIND is 0.0.0.0:8080, every address, and \
        NETAPI_CHAT_PUBLIC_URL is not set: every Location, resourceURL and notification link \
        will name 0.0.0.0 (http://0.0.0.0:8080/…)";
    let r = run(&["check-config"], &[("NETAPI_CHAT_BIND", "0.0.0.0:8080")]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stderr
            .contains(&format!("netapi-chat: warning: {WARNING}"))
            && r.stderr
                .contains("set NETAPI_CHAT_PUBLIC_URL to the URL clients reach"),
        "{}",
        r.stderr
    );
    // A data directory and token file that exist, so that nothing else is warned about.
    let made = support::temp_dir();
    let tokens = made.join("tokens");
    std::fs::write(&tokens, format!("{} *\n", "t".repeat(40))).expect("token file");
    let (made, tokens) = (
        made.to_str().expect("UTF-8"),
        tokens.to_str().expect("UTF-8"),
    );
    for quiet in [
        &[
            ("NETAPI_CHAT_BIND", "0.0.0.0:8080"),
            ("NETAPI_CHAT_PUBLIC_URL", "https://chat.example.com"),
        ][..],
        &[("NETAPI_CHAT_BIND", "127.0.0.1:8080")],
    ] {
        let mut env = vec![
            ("NETAPI_CHAT_DATA_DIR", made),
            ("NETAPI_CHAT_TOKEN_FILE", tokens),
        ];
        env.extend_from_slice(quiet);
        let r = run(&["check-config"], &env);
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        assert!(!r.stderr.contains("warning"), "{quiet:?}: {}", r.stderr);
    }

    let dir = support::temp_data_dir();
    let mut server = support::Launch {
        data_dir: dir.to_path_buf(),
        bind: Some("0.0.0.0:0"),
        stderr: support::Stderr::Collect,
        ..support::Launch::default()
    }
    .spawn();
    let base = server
        .base
        .clone()
        .unwrap_or_else(|| panic!("not listening: {}", server.stderr()));
    assert!(base.starts_with("http://0.0.0.0:"), "{base}");
    let _ = server.child.kill();
    server.wait_exit(10).expect("killed");
    let log = server.stderr();
    assert!(
        log.contains("WARN")
            && log.contains("NETAPI_CHAT_BIND is 0.0.0.0:0, every address, and NETAPI_CHAT_PUBLIC_URL is not set")
            && log.contains("set NETAPI_CHAT_PUBLIC_URL"),
        "{log}"
    );
}

/// `NETAPI_CHAT_OTLP_ENDPOINT` in a binary built without the `otel` feature: `check-config`
/// and the start refuse it saying so (exit 2 and 1); built with it, `check-config` accepts it.
#[test]
fn an_otlp_endpoint_needs_a_binary_built_with_otel() {
    let env = [("NETAPI_CHAT_OTLP_ENDPOINT", "http://127.0.0.1:4318")];
    let r = run(&["check-config"], &env);
    if cfg!(feature = "otel") {
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        assert!(
            r.stdout
                .contains("otlp_endpoint = \"http://127.0.0.1:4318\""),
            "{}",
            r.stdout
        );
        return;
    }
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(
        r.stderr.contains("NETAPI_CHAT_OTLP_ENDPOINT is set")
            && r.stderr.contains("built without OpenTelemetry export")
            && r.stderr.contains("--features otel"),
        "{}",
        r.stderr
    );
    let dir = support::temp_data_dir();
    let (status, stderr) = support::run_to_exit(&dir, &env);
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("built without OpenTelemetry export"),
        "{stderr}"
    );
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
    // The scheme is read in any case, as on the API; two `Authorization` fields do not open
    // it, as they do not pass the API (before, the first was read).
    let lower = format!("bearer {METRICS_TOKEN}");
    let a = send("GET", &url, &[("authorization", &lower)], None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let right = format!("Bearer {METRICS_TOKEN}");
    let two = [
        ("authorization", right.as_str()),
        ("authorization", "Bearer other"),
    ];
    assert_eq!(send("GET", &url, &two, None).await.status, 401);
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
    bob_invited(&server, &bob).await;
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
    bob_invited(&server, &bob).await;
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

/// Every notification queued leaves delivery once, counted as delivered, given up (a dead
/// letter) or discarded, so an operator's ledger balances: `queued` = `delivered` +
/// `given_up` + `discarded` + `undelivered`. Here one is delivered; one to a receiver that
/// answers `410` becomes a dead letter with its disabled subscription; one whose receiver is
/// down is dropped when its subscription is deleted. Before, the last was counted nowhere
/// (the one-hour soak: `queued` one more than the rest with nothing undelivered) and the
/// disabled subscription's dead letter was not counted as given up.
#[tokio::test]
async fn every_notification_queued_is_counted_once_as_it_leaves_delivery() {
    let server = Server::start(&[
        ("NETAPI_CHAT_METRICS_TOKEN", METRICS_TOKEN),
        ("NETAPI_CHAT_RETRY_SCHEDULE", "0,1h"),
    ]);
    let subscribe = async |user: &str, listener: &Listener| {
        let a = subscribed(&server, user, listener).await;
        a.headers["location"].to_str().unwrap().to_owned()
    };
    let invite = async |user: &str| {
        let a = send(
            "POST",
            &server.urls().chat_sessions("tel:+15551230001"),
            &[("content-type", "application/json")],
            Some(&format!(
                r#"{{"chatSessionInformation":{{"participant":[{{"address":"{user}"}}]}}}}"#
            )),
        )
        .await;
        assert_eq!(a.status, 201, "{}", a.body);
    };
    let (taker, gone, down) = (
        Listener::start().await,
        Listener::start().await,
        Listener::start().await,
    );
    gone.set_status(410);
    down.set_down(true);
    subscribe("sip:taker@example.com", &taker).await;
    subscribe("sip:gone@example.com", &gone).await;
    let held = subscribe("sip:down@example.com", &down).await;
    for user in [
        "sip:taker@example.com",
        "sip:gone@example.com",
        "sip:down@example.com",
    ] {
        invite(user).await;
    }
    taker.wait_for(1).await;
    let failed = [("outcome", "failed")];
    support::within_20s(Duration::from_millis(100), async || {
        let text = scrape(&server).await;
        match sample(&text, "netapi_chat_notification_attempts_total", &failed) {
            Some(_) => Ok(()),
            None => Err(format!(
                "the receiver that is down was not tried yet: {text}"
            )),
        }
    })
    .await;
    assert_eq!(send("DELETE", &held, &[], None).await.status, 204);
    let ledger = support::within_20s(Duration::from_millis(100), async || {
        let text = scrape(&server).await;
        let get = |name: &str| sample(&text, name, &[]).unwrap_or(0.0);
        let ledger = [
            get("netapi_chat_notifications_queued_total"),
            get("netapi_chat_notifications_delivered_total"),
            get("netapi_chat_notifications_given_up_total"),
            get("netapi_chat_notifications_discarded_total"),
            get("netapi_chat_notifications_undelivered"),
        ];
        if ledger == [3.0, 1.0, 1.0, 1.0, 0.0] {
            Ok(ledger)
        } else {
            Err(format!(
                "queued, delivered, given up, discarded, undelivered: {ledger:?}"
            ))
        }
    })
    .await;
    assert_eq!(ledger[0], ledger[1..].iter().sum::<f64>());
}

// ---------------------------------------------------------------- item 5: admin CLI

/// Status of `GET …/{user}/subscriptions` with `token`.
async fn status_with(server: &Server, token: &str, user: &str) -> u16 {
    let auth = format!("Bearer {token}");
    send(
        "GET",
        &server.url(user, "/subscriptions"),
        &[("authorization", &auth)],
        None,
    )
    .await
    .status
}

/// Polls [`status_with`] until it is `wanted` (the server looks at the token file at most every
/// 250 ms); panics with the last status after 10 s.
async fn becomes(server: &Server, token: &str, user: &str, wanted: u16) {
    within(
        Duration::from_secs(10),
        Duration::from_millis(50),
        async || {
            let status = status_with(server, token, user).await;
            if status == wanted {
                return Ok(());
            }
            Err(format!("still {status} for {user}, expected {wanted}"))
        },
    )
    .await
}

/// `tokens …` run against `server`'s data directory.
fn tokens(server: &Server, args: &[&str]) -> Ran {
    let dir = server.data_dir.to_string_lossy().into_owned();
    let mut all = vec!["tokens"];
    all.extend_from_slice(args);
    run(&all, &[("NETAPI_CHAT_DATA_DIR", dir.as_str())])
}

/// The fingerprint `tokens list` shows for the token of `users`.
fn fingerprint_of(server: &Server, users: &str) -> String {
    let r = tokens(server, &["list"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    r.stdout
        .lines()
        .find_map(|l| {
            let (fp, rest) = l.split_once(' ')?;
            (rest.trim() == users).then(|| fp.to_owned())
        })
        .unwrap_or_else(|| panic!("no token of {users} in\n{}", r.stdout))
}

/// A token added with the CLI works on the running server without a restart, for its users
/// only; `tokens list` shows fingerprints, never tokens; a revoked token (by fingerprint or by
/// itself) gets 401 while the others keep working; the file stays private.
#[tokio::test]
async fn tokens_added_and_revoked_with_the_cli_apply_to_the_running_server() {
    // Polling an unknown token is a run of failed authentications: not what is tested here.
    let server = Server::start(&[("NETAPI_CHAT_AUTH_FAILURE_LIMIT", "0")]);
    const NEW: &str = "cli-added-token-0123456789";
    const USER: &str = "tel:+15557770001";
    assert_eq!(status_with(&server, NEW, USER).await, 401);

    let r = tokens(&server, &["add", NEW, "tel:+1-555-777-0001"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stderr.contains("added token sha256:"), "{}", r.stderr);
    becomes(&server, NEW, USER, 200).await;
    assert_eq!(status_with(&server, NEW, "tel:+15557770002").await, 403);

    // The same token twice is refused, and says so without printing it.
    let r = tokens(&server, &["add", NEW, "*"]);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("already in the file"), "{}", r.stderr);
    assert!(!r.stderr.contains(NEW), "{}", r.stderr);

    let listed = tokens(&server, &["list"]);
    assert_eq!(listed.code, Some(0), "{}", listed.stderr);
    assert!(!listed.stdout.contains(NEW), "{}", listed.stdout);
    assert!(
        !listed.stdout.contains(support::APP_TOKEN),
        "{}",
        listed.stdout
    );
    let fingerprint = fingerprint_of(&server, USER);
    assert!(fingerprint.starts_with("sha256:"), "{fingerprint}");

    let r = tokens(&server, &["revoke", &fingerprint]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    becomes(&server, NEW, USER, 401).await;
    assert_eq!(
        status_with(&server, support::APP_TOKEN, USER).await,
        200,
        "other tokens keep working"
    );

    // A generated token is printed once, on stdout, and works; revoked by itself, from stdin.
    let r = tokens(&server, &["add", "--generate", "sip:gen@example.com"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let generated = r.stdout.trim().to_owned();
    assert!(generated.len() >= 43, "{generated}");
    becomes(&server, &generated, "sip:gen@example.com", 200).await;
    let dir = server.data_dir.to_string_lossy().into_owned();
    let mut child = Command::new(env!("CARGO_BIN_EXE_netapi-chat"))
        .args(["tokens", "revoke", "-"])
        .env("NETAPI_CHAT_DATA_DIR", &dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tokens revoke -");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{generated}\n").as_bytes())
        .expect("write token");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    becomes(&server, &generated, "sip:gen@example.com", 401).await;

    let r = tokens(&server, &["revoke", "sha256:0000000000000000"]);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("no such token"), "{}", r.stderr);

    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(server.data_dir.join("tokens"))
        .expect("token file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789";

/// `summary --json` of the server at `base`, parsed.
fn summary_json(base: &str) -> serde_json::Value {
    let r = run(
        &["summary", "--json", "--url", base],
        &[("NETAPI_CHAT_ADMIN_TOKEN", ADMIN_TOKEN)],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout))
}

/// Alice (tel:+15551230001) sends `text` in session `sid`.
async fn alice_sends(server: &Server, sid: &str, text: &str) {
    let a = send(
        "POST",
        &server.url("tel:+15551230001", &format!("/chatSessions/{sid}/messages")),
        &[("content-type", "application/json")],
        Some(&format!(r#"{{"chatMessage":{{"text":"{text}"}}}}"#)),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
}

/// `summary` counts what the running server stores (subscriptions, open sessions, messages,
/// undelivered notifications per subscription); `backup` writes a private data directory of one
/// committed state while the server runs, and a server started on it has exactly that; both
/// need the admin token, which API tokens are not.
#[tokio::test]
async fn summary_and_backup_go_through_the_running_server() {
    let server = Server::start(&[
        ("NETAPI_CHAT_ADMIN_TOKEN", ADMIN_TOKEN),
        ("NETAPI_CHAT_RETRY_SCHEDULE", "0,1h"),
    ]);
    let bob = Listener::start().await;
    bob.set_down(true);
    let a = bob_invited(&server, &bob).await;
    let location = a.headers["location"].to_str().expect("location").to_owned();
    let sid = location.rsplit('/').next().expect("session id").to_owned();
    let a = send(
        "POST",
        &server.url(
            "sip:bob@example.com",
            &format!("/chatSessions/{sid}/participants/sip%3Abob%40example.com/status"),
        ),
        &[("content-type", "application/json")],
        Some(r#"{"participantSessionStatus":{"status":"Connected"}}"#),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    for text in ["one", "two", "three"] {
        alice_sends(&server, &sid, text).await;
    }

    let s = summary_json(&server.base);
    assert_eq!(s["subscriptions"], 1, "{s}");
    assert_eq!(s["openSessions"], 1, "{s}");
    assert_eq!(s["messages"], 3, "{s}");
    // Bob's listener is down: his invitation and the three messages wait in the outbox.
    let undelivered = s["undeliveredNotifications"].as_u64().expect("count");
    assert!(undelivered >= 4, "{s}");
    let by = s["undeliveredBySubscription"].as_array().expect("list");
    assert_eq!(by.len(), 1, "{s}");
    assert_eq!(by[0]["undelivered"], undelivered, "{s}");
    let text = run(
        &["summary", "--url", &server.base],
        &[("NETAPI_CHAT_ADMIN_TOKEN", ADMIN_TOKEN)],
    );
    assert!(
        text.stdout.contains("messages                    3\n"),
        "{}",
        text.stdout
    );

    // Other credentials get 401: a wrong admin token through the CLI, an API token directly.
    let r = run(
        &["summary", "--url", &server.base],
        &[("NETAPI_CHAT_ADMIN_TOKEN", "not-the-admin-token-0123")],
    );
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("401"), "{}", r.stderr);
    let a = send("GET", &format!("{}/admin/summary", server.base), &[], None).await;
    assert_eq!(a.status, 401, "{}", a.body);
    assert_eq!(
        a.headers["www-authenticate"],
        "Bearer realm=\"netapi-chat admin\""
    );
    // A backup asked with an API token writes nothing.
    let nowhere = std::env::temp_dir().join(format!("netapi-chat-no-backup-{}", uuid_like()));
    let a = send(
        "POST",
        &format!("{}/admin/backup?dir={}", server.base, nowhere.display()),
        &[],
        None,
    )
    .await;
    assert_eq!(a.status, 401, "{}", a.body);
    assert!(!nowhere.exists());

    let parent = std::env::temp_dir().join(format!("netapi-chat-backup-{}", uuid_like()));
    std::fs::create_dir_all(&parent).expect("parent");
    let dir = parent.join("b1");
    let dir_text = dir.to_string_lossy().into_owned();
    let r = run(
        &["backup", &dir_text, "--url", &server.base],
        &[("NETAPI_CHAT_ADMIN_TOKEN", ADMIN_TOKEN)],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stderr.contains("backup written to"), "{}", r.stderr);
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: PathBuf| std::fs::metadata(&p).expect("exists").permissions().mode() & 0o777;
    assert_eq!(mode(dir.clone()), 0o700);
    // Subscriptions' signing secrets are in the database; a `webhook-secret` file exists only
    // when an earlier version made one, and is then copied too.
    for file in ["netapi-chat.sqlite3", "tokens"] {
        assert_eq!(mode(dir.join(file)), 0o600, "{file}");
    }
    assert_eq!(
        dir.join("webhook-secret").exists(),
        server.data_dir.join("webhook-secret").exists()
    );
    // After the backup: not in it.
    alice_sends(&server, &sid, "four").await;
    // A backup never overwrites.
    let r = run(
        &["backup", &dir_text, "--url", &server.base],
        &[("NETAPI_CHAT_ADMIN_TOKEN", ADMIN_TOKEN)],
    );
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("409"), "{}", r.stderr);

    // The restore: a server on the backup has the state of the moment it was made.
    let restored = Server::start_in(&dir, &[("NETAPI_CHAT_ADMIN_TOKEN", ADMIN_TOKEN)], None);
    let s = summary_json(&restored.base);
    assert_eq!(s["messages"], 3, "{s}");
    assert_eq!(s["subscriptions"], 1, "{s}");
    assert_eq!(s["openSessions"], 1, "{s}");
    assert_eq!(s["undeliveredNotifications"], undelivered, "{s}");
    assert_eq!(summary_json(&server.base)["messages"], 4);
    drop(restored);
    let _ = std::fs::remove_dir_all(&parent);
}

/// What delivery gave up on shows in `summary`: a subscription whose callback answered `410`
/// is disabled, its backlog kept as dead letters, which are no longer undelivered. Before, the
/// summary counted neither, and read as if nothing were owed (the notification review).
#[tokio::test]
async fn summary_counts_disabled_subscriptions_and_their_dead_letters() {
    let server = Server::start(&[("NETAPI_CHAT_ADMIN_TOKEN", ADMIN_TOKEN)]);
    let bob = Listener::start().await;
    bob.set_status(410);
    bob_invited(&server, &bob).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let s = loop {
        let s = summary_json(&server.base);
        // Disabled, then its backlog buried: the invitation.
        if s["disabledSubscriptions"] == 1 && s["deadLetters"] == 1 {
            break s;
        }
        assert!(Instant::now() < deadline, "never disabled: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(s["subscriptions"], 1, "{s}");
    assert_eq!(s["undeliveredNotifications"], 0, "{s}");
    let text = run(
        &["summary", "--url", &server.base],
        &[("NETAPI_CHAT_ADMIN_TOKEN", ADMIN_TOKEN)],
    );
    assert!(
        text.stdout.contains("  disabled by delivery      1\n")
            && text.stdout.contains("dead letters                1\n"),
        "{}",
        text.stdout
    );
}

/// A FUSE file system (tests/fixtures/hangfs) whose writes block while a flag file exists:
/// a hung network share. Unmounted (and its flag removed, releasing what waits) on drop.
struct HangFs {
    mount: PathBuf,
    flag: PathBuf,
    root: PathBuf,
    daemon: std::process::Child,
}

impl HangFs {
    /// Mounts one with the Python `cargo xtask test` found importing fusepy
    /// (`NETAPI_CHAT_TEST_FUSEPY_PYTHON`, set wherever the machine has FUSE: it installs
    /// python3-fusepy, and fails rather than leave the variable unset there), or `None` (the
    /// test says SKIPPED) without it, or where mounting is refused (no CAP_SYS_ADMIN). A test
    /// that passed without running hid this one for sessions (an outside review): CI runs it.
    fn mount() -> Option<HangFs> {
        let Ok(python) = std::env::var("NETAPI_CHAT_TEST_FUSEPY_PYTHON") else {
            eprintln!(
                "SKIPPED: NETAPI_CHAT_TEST_FUSEPY_PYTHON is not set (`cargo xtask test` sets it \
                 where the machine has /dev/fuse)"
            );
            return None;
        };
        let base = std::env::temp_dir().join(format!("netapi-chat-hangfs-{}", uuid_like()));
        let (root, mount, flag) = (base.join("root"), base.join("mnt"), base.join("HANG"));
        for d in [&root, &mount] {
            std::fs::create_dir_all(d).expect("hangfs dirs");
        }
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("server/tests/fixtures/hangfs/hangfs.py");
        let daemon = Command::new(python)
            .arg(script)
            .args([&root, &mount, &flag])
            .stderr(Stdio::null())
            .spawn()
            .expect("start hangfs");
        let mut fs = HangFs {
            mount,
            flag,
            root,
            daemon,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
            // Mounted, and serving: a file written through it reads back (listed in
            // /proc/mounts is not yet served by the daemon's loop).
            let probe = fs.mount.join("probe");
            if mounts.contains(&*fs.mount.to_string_lossy())
                && std::fs::write(&probe, "ok").is_ok()
                && std::fs::read_to_string(&probe).is_ok_and(|t| t == "ok")
            {
                let _ = std::fs::remove_file(&probe);
                return Some(fs);
            }
            if let Ok(Some(_)) = fs.daemon.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("SKIPPED: the FUSE file system did not mount");
        fs.flag = PathBuf::new();
        None
    }

    /// Makes its writes block (`true`) or go through again.
    fn hang(&self, on: bool) {
        if on {
            std::fs::write(&self.flag, "").expect("flag");
        } else {
            let _ = std::fs::remove_file(&self.flag);
        }
    }
}

impl Drop for HangFs {
    fn drop(&mut self) {
        self.hang(false);
        let _ = Command::new("fusermount")
            .arg("-uz")
            .arg(&self.mount)
            .status();
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.mount)
            .stderr(Stdio::null())
            .status();
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        if let Some(base) = self.root.parent() {
            let _ = std::fs::remove_dir_all(base);
        }
    }
}

/// A backup into a destination that hangs (a hung network share) does not stop the service:
/// the copy to the destination runs off the store thread, so sends keep answering `201` at
/// once, a second backup is refused `409` while the first is stuck, and the backup itself is
/// abandoned with `504` once its destination has taken no write for 30 s
/// (`admin_api::BACKUP_STALL`), its half-made directory removed when the file system comes
/// back. Before, `VACUUM INTO` wrote to the destination on the store thread: every write of
/// the service waited as long as the share hung, with no time-out and no `503`.
#[tokio::test]
async fn a_backup_into_a_hung_destination_does_not_stop_writes() {
    let server = Server::start(&[("NETAPI_CHAT_ADMIN_TOKEN", ADMIN_TOKEN)]);
    // Mounted after the server starts, so dropped (releasing the hang) before it is: a server
    // stuck in a write to it could not be stopped otherwise.
    let Some(fs) = HangFs::mount() else { return };
    let bob = Listener::start().await;
    bob.set_down(true);
    let a = bob_invited(&server, &bob).await;
    let location = a.headers["location"].to_str().expect("location").to_owned();
    let sid = location.rsplit('/').next().expect("session id").to_owned();
    let a = send(
        "POST",
        &server.url(
            "sip:bob@example.com",
            &format!("/chatSessions/{sid}/participants/sip%3Abob%40example.com/status"),
        ),
        &[("content-type", "application/json")],
        Some(r#"{"participantSessionStatus":{"status":"Connected"}}"#),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    for i in 0..50 {
        alice_sends(
            &server,
            &sid,
            &format!("before the backup {i} {}", "x".repeat(2000)),
        )
        .await;
    }

    fs.hang(true);
    let dir = fs.mount.join("bk1");
    let backup_url = format!("{}/admin/backup?dir={}", server.base, dir.display());
    let admin = format!("Bearer {ADMIN_TOKEN}");
    let started = Instant::now();
    let backup = {
        let (url, admin) = (backup_url.clone(), admin.clone());
        tokio::spawn(async move { send("POST", &url, &[("authorization", &admin)], None).await })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    if backup.is_finished() {
        let answer = backup.await.expect("the backup task");
        panic!(
            "the backup should be stuck on its destination; it answered {}: {}",
            answer.status, answer.body
        );
    }
    // Writes go on while the backup's destination hangs.
    for i in 0..5 {
        let sent = Instant::now();
        tokio::time::timeout(
            Duration::from_secs(5),
            alice_sends(&server, &sid, &format!("during the backup {i}")),
        )
        .await
        .unwrap_or_else(|_| panic!("a send waited more than 5 s behind the backup"));
        assert!(
            sent.elapsed() < Duration::from_secs(2),
            "{:?}",
            sent.elapsed()
        );
    }
    // One backup at a time: the stuck one still holds its place.
    let other = std::env::temp_dir().join(format!("netapi-chat-bk2-{}", uuid_like()));
    let a = send(
        "POST",
        &format!("{}/admin/backup?dir={}", server.base, other.display()),
        &[("authorization", &admin)],
        None,
    )
    .await;
    assert_eq!(a.status, 409, "{}", a.body);
    assert!(a.body.contains("a backup is running already"), "{}", a.body);
    assert!(!other.exists());
    // Cut short, the copy is not under the database's name (see the next test).
    assert!(dir.join("backup-in-progress.sqlite3").exists());
    assert!(!dir.join("netapi-chat.sqlite3").exists());

    // Abandoned with a clear answer once the destination took no write for 30 s.
    let answer = tokio::time::timeout(Duration::from_secs(45), backup)
        .await
        .expect("the backup is answered within its stall limit")
        .expect("the backup task");
    assert_eq!(answer.status, 504, "{}", answer.body);
    assert!(
        answer.body.contains("took no write for 30 s"),
        "{}",
        answer.body
    );
    assert!(
        started.elapsed() >= Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    // The part file in the data directory is gone already.
    assert!(!server.data_dir.join("backup-in-progress.sqlite3").exists());
    // The share comes back: the abandoned copy ends, its directory is removed, and backups
    // work again.
    fs.hang(false);
    within(
        Duration::from_secs(20),
        Duration::from_millis(100),
        async || {
            if dir.exists() {
                Err(format!("{} still there", dir.display()))
            } else {
                Ok(())
            }
        },
    )
    .await;
    let again = fs.mount.join("bk2");
    let a = within(
        Duration::from_secs(20),
        Duration::from_millis(200),
        async || {
            let a = send(
                "POST",
                &format!("{}/admin/backup?dir={}", server.base, again.display()),
                &[("authorization", &admin)],
                None,
            )
            .await;
            if a.status == 409 { Err(a.body) } else { Ok(a) }
        },
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let restored = Server::start_in(&again, &[("NETAPI_CHAT_ADMIN_TOKEN", ADMIN_TOKEN)], None);
    assert_eq!(summary_json(&restored.base)["messages"], 55);
    drop(restored);
    drop(fs);
}

/// A name unique to this run.
fn uuid_like() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    )
}

// ---------------------------------------------------------------- item 3: logs

/// Every response carries `x-request-id`: the client's own when it is sane (echoed), a fresh one
/// otherwise; with `NETAPI_CHAT_LOG_FORMAT=json` every stderr line is a JSON object (`msg`,
/// `level`, `ts`), and the request's lines carry its id as `req_id`: dropshot's (bridged from
/// slog) and the server's own (inside the request's span).
#[tokio::test]
async fn request_ids_are_echoed_and_json_logs_parse() {
    let dir = support::temp_data_dir();
    let mut server = support::Launch {
        data_dir: dir.to_path_buf(),
        env: &[
            ("NETAPI_CHAT_LOG_FORMAT", "json"),
            ("NETAPI_CHAT_LOG_LEVEL", "info"),
        ],
        stderr: support::Stderr::Collect,
        ..support::Launch::default()
    }
    .spawn();
    let base = server
        .base
        .clone()
        .unwrap_or_else(|| panic!("not listening: {}", server.stderr()));
    let url = format!("{base}/v1/chat/tel%3A%2B15551230001/subscriptions");
    let id_of = |a: &support::Answer| {
        a.headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };

    // Echoed, on a success and on an error (no token).
    let ok = send("GET", &url, &[("x-request-id", "client-req:42.a_b")], None).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(id_of(&ok), "client-req:42.a_b");
    let refused = send(
        "GET",
        &url,
        &[("x-request-id", "client-req-401"), ("authorization", "")],
        None,
    )
    .await;
    assert_eq!(refused.status, 401);
    assert_eq!(id_of(&refused), "client-req-401");
    // Not sane (too long, or characters outside the set): replaced by a fresh id.
    for bad in [
        "x".repeat(65),
        "has space".to_owned(),
        "quote\"d".to_owned(),
    ] {
        let a = send("GET", &url, &[("x-request-id", &bad)], None).await;
        assert_eq!(a.status, 200, "{}", a.body);
        let id = id_of(&a);
        assert!(!id.is_empty() && id != bad, "{bad:?} -> {id:?}");
    }
    // None sent: one is made, different each time.
    let a = id_of(&send("GET", &url, &[], None).await);
    let b = id_of(&send("GET", &url, &[], None).await);
    assert!(!a.is_empty() && a != b, "{a} {b}");
    // The server's own line inside a request ("subscription created") carries its id too.
    let body = support::docs::encode(
        Format::Json,
        &support::docs::subscription("http://127.0.0.1:10/notify"),
    );
    let created = send(
        "POST",
        &url,
        &[
            ("x-request-id", "client-create-7"),
            ("content-type", "application/json"),
        ],
        Some(&body),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    // A token sent as the RFC 6750 query parameter (a client's mistake: the server reads only
    // the header) is not written to the log in clear; the rest of the target is.
    let leaked = send(
        "GET",
        &format!("{url}?maxEntries=5&ACCESS_TOKEN=sekrit-token-in-a-url"),
        &[("x-request-id", "client-query-token")],
        None,
    )
    .await;
    assert_eq!(leaked.status, 200, "{}", leaked.body);

    let _ = server.child.kill();
    server.wait_exit(10).expect("killed");
    let logs = server.stderr();
    assert!(
        !logs.contains("sekrit-token"),
        "the token is logged:\n{logs}"
    );
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: not JSON: {l}")))
        .collect();
    let completed = |id: &str| {
        lines
            .iter()
            .find(|l| l["req_id"] == id && l["msg"] == "request completed")
    };
    let line = completed("client-req:42.a_b")
        .unwrap_or_else(|| panic!("no line for the request in\n{logs}"));
    assert_eq!(line["response_code"], 200, "{line}");
    assert_eq!(line["level"], "INFO", "{line}");
    assert!(line["ts"].is_string(), "{line}");
    assert_eq!(
        completed("client-req-401").expect("401 line")["response_code"],
        401
    );
    assert!(completed(&a).is_some(), "generated id {a} not logged");
    let line = completed("client-query-token").expect("the query-token request's line");
    assert!(
        line["uri"]
            .as_str()
            .is_some_and(|u| u.ends_with("?maxEntries=5&ACCESS_TOKEN=REDACTED")),
        "{line}"
    );
    let ours = lines
        .iter()
        .find(|l| l["msg"] == "subscription created")
        .unwrap_or_else(|| panic!("no subscription created line in\n{logs}"));
    assert_eq!(ours["req_id"], "client-create-7", "{ours}");
    assert_eq!(ours["level"], "INFO", "{ours}");
    for l in &lines {
        assert!(
            l["msg"].is_string() && l["level"].is_string() && l["ts"].is_string(),
            "{l}"
        );
    }
}

/// `user` subscribes (JSON) with `listener` as its callback; must succeed.
async fn subscribed(server: &Server, user: &str, listener: &Listener) -> support::Answer {
    let a = send(
        "POST",
        &server.urls().subscriptions(user),
        &[("content-type", "application/json")],
        Some(&format!(
            r#"{{"chatSubscription":{{"callbackReference":{{"notifyURL":"{}"}}}}}}"#,
            listener.url
        )),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    a
}

/// The set-up of the metrics and admin tests: `sip:bob@example.com` subscribes (JSON, no
/// `callbackData`) to `bob`, then `tel:+15551230001` invites him into a new 1-1 session; each
/// step is asserted `201`. The session's creation answer, for its `Location`.
async fn bob_invited(server: &Server, bob: &Listener) -> support::Answer {
    subscribed(server, "sip:bob@example.com", bob).await;
    let a = send(
        "POST",
        &server.urls().chat_sessions("tel:+15551230001"),
        &[("content-type", "application/json")],
        Some(r#"{"chatSessionInformation":{"participant":[{"address":"sip:bob@example.com"}]}}"#),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    a
}

/// A data directory whose database is gone (a volume that did not mount, a restore without
/// it) is not started as an empty server without a word: with the database's write-ahead log
/// still there (after a SIGKILL) the start stops, exit 1, naming the log, which is kept (it
/// was deleted: the only copy of those changes); without one, a directory that shows it was
/// used (its generated token file) starts empty with a warning saying what was found. A fresh
/// directory still starts without one.
#[tokio::test]
async fn a_data_directory_whose_database_is_gone_is_not_started_empty_silently() {
    if support::Backend::for_tests() != support::Backend::Sqlite {
        return;
    }
    // A first start generates the token file, as README's first command does.
    let dir = support::temp_dir();
    let first = support::Launch {
        data_dir: dir.to_path_buf(),
        stderr: support::Stderr::Collect,
        ..support::Launch::default()
    }
    .spawn();
    assert!(first.base.is_some(), "{}", first.stderr());
    assert!(
        !first.stderr().contains("new, empty store"),
        "{}",
        first.stderr()
    );
    drop(first); // killed: SIGKILL, the write-ahead log stays
    let (db, wal) = (
        dir.join("netapi-chat.sqlite3"),
        dir.join("netapi-chat.sqlite3-wal"),
    );
    std::fs::write(&wal, vec![1u8; 4096]).expect("a log with changes");
    std::fs::remove_file(&db).expect("remove the database");

    let (status, stderr) = support::run_to_exit(&dir, &[]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("is missing, but its write-ahead log")
            && stderr.contains("netapi-chat.sqlite3-wal"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::metadata(&wal).map(|m| m.len()).ok(),
        Some(4096),
        "the log is kept"
    );

    // The log moved away: it starts, empty, and says the directory was used before.
    std::fs::remove_file(&wal).expect("move the log away");
    let again = support::Launch {
        data_dir: dir.to_path_buf(),
        stderr: support::Stderr::Collect,
        ..support::Launch::default()
    }
    .spawn();
    assert!(again.base.is_some(), "{}", again.stderr());
    let said = within(
        Duration::from_secs(5),
        Duration::from_millis(50),
        async || {
            let text = again.stderr();
            if text.contains("starting with a new, empty store") {
                Ok(text)
            } else {
                Err(text)
            }
        },
    )
    .await;
    assert!(
        said.contains("a token file generated at a first start"),
        "{said}"
    );
}

/// A backup that did not complete (the server killed during the copy, its destination lost)
/// holds its copy under the part name and no database: started on, as the README's restore
/// says, it is refused (exit 1) as an incomplete backup. Before, it held an empty or truncated
/// `netapi-chat.sqlite3` and no token file, and "restored" into an empty server with a new
/// `*` token.
#[tokio::test]
async fn an_interrupted_backup_is_not_restored_as_an_empty_server() {
    if support::Backend::for_tests() != support::Backend::Sqlite {
        return;
    }
    let dir = support::temp_dir();
    std::fs::write(dir.join("backup-in-progress.sqlite3"), vec![0u8; 8192]).expect("part");
    let (status, stderr) = support::run_to_exit(&dir, &[]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("a backup that did not complete"),
        "{stderr}"
    );
    assert!(!dir.join("tokens").exists(), "no token was minted");
}

/// A token file that went missing on a server with data (a wrong `NETAPI_CHAT_TOKEN_FILE`, a
/// secret volume that did not mount) stops the start, saying so, instead of generating a new
/// full-access token: that locked every client out while the server said it was ready, and
/// printed the new token into the logs. At a first start (an empty store) it is still
/// generated.
#[tokio::test]
async fn a_missing_token_file_over_existing_data_stops_the_start() {
    let srv = Server::default_for_tests();
    let listener = Listener::start().await;
    support::chat::subscribe(&srv, "tel:+15551230001", &listener, Format::Json).await;
    let dir = srv.terminate();
    let tokens = dir.join("tokens");
    let kept = std::fs::read(&tokens).expect("the token file");
    std::fs::remove_file(&tokens).expect("remove it");
    let (status, stderr) = support::run_to_exit(&dir, &[]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("does not exist, but the store already holds data")
            && stderr.contains("netapi-chat tokens add"),
        "{stderr}"
    );
    assert!(!tokens.exists(), "no token file was generated");
    // Put back, the server starts on its data.
    std::fs::write(&tokens, kept).expect("put it back");
    let again = Server::restart(dir, &[]);
    let a = send_authorized(
        "GET",
        &again.urls().subscriptions("tel:+15551230001"),
        &format!("Bearer {}", support::APP_TOKEN),
        Format::Json,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body.contains("chatSubscription\":[{"), "{}", a.body);
}

/// A misspelt setting in the environment (`NETAPI_CHAT_SYNCH=full`) was ignored without a word,
/// its default kept; `check-config` and the server's log now name it, with the setting it most
/// likely meant (the configuration file already refused unknown keys).
#[tokio::test]
async fn a_misspelt_setting_variable_is_named_by_check_config_and_the_log() {
    let dir = support::temp_data_dir();
    let out = Command::new(env!("CARGO_BIN_EXE_netapi-chat"))
        .arg("check-config")
        .env("NETAPI_CHAT_DATA_DIR", dir.path())
        .env("NETAPI_CHAT_SYNCH", "full")
        .output()
        .expect("run check-config");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("NETAPI_CHAT_SYNCH (did you mean NETAPI_CHAT_SYNC?) is not a setting"),
        "{stderr}"
    );
    let srv = Server::logged(&[("NETAPI_CHAT_RETENTON", "7d")]);
    let log = srv.log_text();
    assert!(
        log.contains("NETAPI_CHAT_RETENTON (did you mean NETAPI_CHAT_RETENTION?) is not a setting"),
        "{log}"
    );
}

/// Storage review F3: under a small open-files limit (48), a flood of idle connections held at
/// the connection cap leaves the server the descriptors of its own work: a callback is
/// delivered and a backup is written. Before, the listener's share (¾ of the limit) took all
/// but a few, and both failed with `EMFILE` (the backup answered `500`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_a_small_open_files_limit_a_flood_leaves_the_server_its_own_files() {
    let dir = support::temp_data_dir();
    let server = Server::launch(
        support::Launch {
            data_dir: dir.to_path_buf(),
            env: &[("NETAPI_CHAT_ADMIN_TOKEN", ADMIN_TOKEN)],
            run_under: &["prlimit", "--nofile=48:48"],
            ..support::Launch::default()
        },
        Some(dir),
    );
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut flood = Vec::new();
    for _ in 0..96 {
        if let Ok(Ok(c)) = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(&addr),
        )
        .await
        {
            flood.push(c);
        }
    }
    let bob = Listener::start().await;
    bob_invited(&server, &bob).await;
    let got = bob.wait_for(1).await;
    assert_eq!(got.len(), 1, "the invitation arrives");
    let parent = std::env::temp_dir().join(format!("netapi-chat-backup-{}", uuid_like()));
    std::fs::create_dir_all(&parent).expect("parent");
    let backup = parent.join("b");
    let r = run(
        &["backup", &backup.to_string_lossy(), "--url", &server.base],
        &[("NETAPI_CHAT_ADMIN_TOKEN", ADMIN_TOKEN)],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(backup.join("netapi-chat.sqlite3").exists());
    drop(flood);
    let _ = std::fs::remove_dir_all(&parent);
}

/// SIGHUP (what operators send by habit to reload, and a closing terminal sends) is logged and
/// ignored: the server keeps serving, a long request under way when it comes is answered,
/// and SIGTERM still stops it gracefully. Before, SIGHUP's default action killed it on the
/// spot (requests in flight reset, nothing logged: ops review O3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_is_logged_and_ignored() {
    let mut server = Server::logged(&[]);
    let url = server.urls().subscriptions("sip:bob@example.com");
    let a = send("GET", &url, &[], None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let pid = server.pid().to_string();
    let sent = Command::new("kill").args(["-HUP", &pid]).status();
    assert!(sent.is_ok_and(|s| s.success()), "kill -HUP {pid}");
    within(
        Duration::from_secs(5),
        Duration::from_millis(50),
        async || {
            let log = server.log_text();
            if log.contains("SIGHUP ignored") {
                Ok(())
            } else {
                Err(format!("no SIGHUP line: {log}"))
            }
        },
    )
    .await;
    assert!(server.wait_exit(1).is_none(), "still running");
    let a = send("GET", &url, &[], None).await;
    assert_eq!(a.status, 200, "{}", a.body);
}

/// Clients that connected and sent their request just before a SIGTERM (in the listen
/// backlog, or accepted with the request still unread) get their answer, not a reset
/// connection they cannot tell from one carried out (ops review O10: hyper's graceful
/// shutdown closed a connection with no request under way at once, and closing the listener
/// reset the backlog). The server is frozen while they connect, so that all of them are
/// there when it stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_queued_when_sigterm_arrives_are_answered() {
    let mut server = Server::start(&[]);
    let url = server.urls().subscriptions("sip:bob@example.com");
    support::answers_what_is_queued_at_a_stop(&mut server, &url).await;
}

/// While a graceful stop winds its callback attempts down (a receiver that never answers
/// holds one, up to half the grace), the server still answers, and every answer says
/// `Connection: close`: a client then sends its next request on a new connection, instead of
/// writing it into a kept-alive one the listener's drain closes unanswered (an outside
/// review of rolling restarts: 8 of 8 kept-alive connections to a stopping leader broke on
/// their next request, `POST`s included, which no balancer sends again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_while_stopping_say_the_connection_closes() {
    let mut server = Server::start(&[("NETAPI_CHAT_SHUTDOWN_GRACE_SECS", "6")]);
    // A receiver that takes connections and never answers.
    let receiver = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let receiver_url = format!("http://{}/hung", receiver.local_addr().expect("addr"));
    let (taken, attempt) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in receiver.incoming().flatten() {
            held.push(stream);
            let _ = taken.send(());
        }
    });
    const BOB: &str = "sip:bob@example.com";
    let urls = server.urls();
    let subscribe =
        support::docs::encode(Format::Json, &support::docs::subscription(&receiver_url));
    let json = [("content-type", "application/json")];
    let created = send("POST", &urls.subscriptions(BOB), &json, Some(&subscribe)).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let invite = support::docs::encode(
        Format::Json,
        &support::docs::session("to a hung receiver", &[BOB]),
    );
    let alice = "tel:+15551230001";
    let made = send("POST", &urls.chat_sessions(alice), &json, Some(&invite)).await;
    assert_eq!(made.status, 201, "{}", made.body);
    tokio::task::block_in_place(|| attempt.recv_timeout(Duration::from_secs(10)))
        .expect("the invitation's attempt reached the receiver");

    let path = urls
        .subscriptions(BOB)
        .trim_start_matches(&server.base)
        .to_owned();
    let mut kept = support::KeptAlive::connect(&server.base);
    let (head, _) = kept.get(&path).expect("answered before the stop");
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!head.contains("connection: close"), "{head}");
    let pid = server.pid().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The attempt still waits on the receiver: the server answers, and says it closes.
    let (head, _) = kept.get(&path).expect("answered while stopping");
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert!(kept.closed_by_server(), "closed after that answer");
    let status = tokio::task::block_in_place(|| server.wait_exit(30));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

/// Every answer but the published documents says `Cache-Control: no-store`: a subscription's
/// `201` shows its `signingSecret`, a session's messages are a user's, an error is about a
/// moment; no cache, a browser's included, should keep them (the HTTP review of 2026-12-07:
/// none said anything of caching). The documents are the same for everyone and may be kept
/// five minutes; an error on a document's path is not (before, it said nothing, and a `404`
/// is kept by a cache's heuristics).
#[tokio::test]
async fn answers_with_user_data_are_not_to_be_stored() {
    let server = Server::default_for_tests();
    let urls = server.urls();
    for f in [Format::Json, Format::Xml] {
        let body = support::docs::encode(
            f,
            &support::docs::subscription("http://127.0.0.1:10/notify"),
        );
        let created = support::post_raw(&urls.subscriptions("tel:+15551230001"), f, f, &body).await;
        assert_eq!(created.status, 201, "{}", created.body);
        assert!(created.body.contains("signingSecret"), "{}", created.body);
        assert_eq!(created.header("cache-control"), "no-store", "{f:?}");
        let listed = send("GET", &urls.subscriptions("tel:+15551230001"), &[], None).await;
        assert_eq!(listed.status, 200, "{}", listed.body);
        assert_eq!(listed.header("cache-control"), "no-store");
        let refused = send("GET", &format!("{}/nope", server.base), &[], None).await;
        assert_eq!(refused.status, 404, "{}", refused.body);
        assert_eq!(refused.header("cache-control"), "no-store");
    }
    for document in ["/openapi.json", "/xsd/rest_netapi_chat-v1_0.xsd"] {
        let a = send("GET", &format!("{}{document}", server.base), &[], None).await;
        assert_eq!(a.status, 200, "{document}");
        assert_eq!(a.header("cache-control"), "max-age=300", "{document}");
    }
    for (method, path) in [("GET", "/xsd/nope.xsd"), ("POST", "/openapi.json")] {
        let a = send(method, &format!("{}{path}", server.base), &[], None).await;
        assert!(a.status >= 400, "{method} {path}: {}", a.status);
        assert_eq!(a.header("cache-control"), "no-store", "{method} {path}");
    }
}
