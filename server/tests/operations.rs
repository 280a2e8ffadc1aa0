//! Issue 17 (operating it), against the real binary:
//!
//! - item 2: `/healthz` and `/readyz` answer without a token, `HEAD` works, other methods get
//!   the gate's 405, and `/readyz` says 503 while the data directory's disk is full (and 200
//!   again once it is not);
//! - item 4: `--help`, `--version`, `--config FILE`, `check-config` (valid and invalid files,
//!   unknown keys), and the environment overriding the file.

mod support;

use netapi_chat_runtime::Format;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{Server, send};

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
