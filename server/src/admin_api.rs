//! Admin endpoints for what only the running server can do (issue 17 item 5): it holds the
//! database exclusively (`unix-excl`, see `store::sqlite`), so no other process can open it,
//! and a consistent copy or a count has to be made on its store thread. `netapi-chat backup`
//! and `netapi-chat summary` call these ([`crate::admin`]).
//!
//! - `POST /admin/backup?dir=/absolute/new/dir`: creates `dir` (mode `0700`; it must not exist,
//!   its parent must) and writes a data directory into it: the database by `VACUUM INTO`
//!   (one committed state, including every change already answered), the webhook secret and
//!   the token file, each `0600`. Starting a server on it (`NETAPI_CHAT_DATA_DIR=dir`) is the
//!   restore. Commits wait while `VACUUM INTO` runs (its time follows the database's size,
//!   stopped after [`BACKUP_HOLD_AT_MOST`]); it writes into the data directory, and a thread
//!   of its own copies that to `dir`, abandoned (`504`) once it makes no progress for
//!   [`BACKUP_STALL`]: a hung destination holds neither the store nor the request.
//! - `GET /admin/summary`: subscriptions (and those delivery disabled) and open sessions (in
//!   memory), messages, undelivered notifications and dead letters (counted in the
//!   database), and the subscriptions with the most undelivered notifications, at most
//!   [`SUMMARY_MOST`].
//!
//! Both exist only when `NETAPI_CHAT_ADMIN_TOKEN` is set, answer `401` to any other
//! credentials (API tokens included), and are unpublished (not in the OpenAPI).

use crate::handlers::ChatServer;
use dropshot::{Body, HttpError, Query, RequestContext, endpoint};
use http::{Response, StatusCode, header};
use schemars::JsonSchema;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// The admin routes and their methods, for the request gate.
pub const ROUTES: [(&str, &str); 2] = [("/admin/backup", "POST"), ("/admin/summary", "GET")];

/// Most subscriptions listed by undelivered notifications in a summary.
pub const SUMMARY_MOST: usize = 100;

/// What the admin endpoints need besides the chat core.
#[derive(Clone, Debug)]
pub struct Admin {
    /// `NETAPI_CHAT_ADMIN_TOKEN`.
    pub token: String,
    /// The data directory (for the webhook secret kept there).
    pub data_dir: PathBuf,
    /// The token file, when tokens come from one.
    pub token_file: Option<PathBuf>,
}

/// A JSON answer, never cached.
fn reply(status: StatusCode, body: serde_json::Value) -> Result<Response<Body>, HttpError> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from(body.to_string()))
        .map_err(|e| HttpError::for_internal_error(e.to_string()))
}

/// `{"error": text}` with `status`.
fn refuse(status: StatusCode, text: impl Into<String>) -> Result<Response<Body>, HttpError> {
    reply(status, serde_json::json!({ "error": text.into() }))
}

/// Why a request may not use the admin endpoints.
enum Denied {
    /// There are none (`NETAPI_CHAT_ADMIN_TOKEN` is unset): `404`, as for any unknown path.
    Off,
    /// Other credentials, or none: `401`.
    NotAdmin,
    /// The address failed to authenticate too often (the API's limit): `429`.
    TooMany(netapi_chat_runtime::ApiError),
}

impl Denied {
    fn answer(self) -> Result<Response<Body>, HttpError> {
        match self {
            Denied::TooMany(e) => {
                let mut response = refuse(e.status, e.rendered())?;
                for (name, value) in &e.headers {
                    response.headers_mut().insert(name.clone(), value.clone());
                }
                Ok(response)
            }
            Denied::Off => Err(HttpError::for_not_found(
                None,
                "no admin endpoints".to_owned(),
            )),
            Denied::NotAdmin => refuse(
                StatusCode::UNAUTHORIZED,
                "the admin token (NETAPI_CHAT_ADMIN_TOKEN) is required",
            )
            .map(|mut response| {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    http::HeaderValue::from_static("Bearer realm=\"netapi-chat admin\""),
                );
                response
            }),
        }
    }
}

/// The admin settings when the request carries the admin token; a wrong one counts against
/// the address's authentication failures, as on the API.
fn admitted(rqctx: &RequestContext<ChatServer>) -> Result<&Admin, Denied> {
    let admin = rqctx.context().admin.as_deref().ok_or(Denied::Off)?;
    let ok = rqctx
        .context()
        .auth_failures
        .operator_token(
            rqctx.request.remote_addr().ip(),
            rqctx.request.headers(),
            &admin.token,
        )
        .map_err(Denied::TooMany)?;
    if ok { Ok(admin) } else { Err(Denied::NotAdmin) }
}

/// Where to write a backup.
#[derive(Deserialize, JsonSchema)]
pub struct BackupQuery {
    /// An absolute path that does not exist yet (optional here so that a request without it is
    /// answered after the token is checked).
    dir: Option<String>,
}

/// The directory a backup may be written to: absolute (the server's working directory is not
/// the caller's), and not existing yet (a backup never overwrites anything).
pub fn backup_dir(dir: Option<&str>) -> Result<PathBuf, String> {
    let dir = dir
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .ok_or("give the directory to create: ?dir=/absolute/path".to_owned())?;
    let path = Path::new(dir);
    if !path.is_absolute() {
        return Err(format!("{dir} is not an absolute path"));
    }
    if path
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(format!("{dir} contains `..`"));
    }
    Ok(path.to_path_buf())
}

/// `POST /admin/backup?dir=…` (see the module documentation).
#[endpoint { method = POST, path = "/admin/backup", unpublished = true }]
pub async fn backup_endpoint(
    rqctx: RequestContext<ChatServer>,
    query: Query<BackupQuery>,
) -> Result<Response<Body>, HttpError> {
    let admin = match admitted(&rqctx) {
        Ok(admin) => admin.clone(),
        Err(denied) => return denied.answer(),
    };
    let unsupported = rqctx
        .context()
        .chat
        .store()
        .read(|backend| Ok(backend.backup_unsupported()))
        .await;
    if let Ok(Ok(Some(why))) = unsupported {
        return refuse(StatusCode::NOT_IMPLEMENTED, why);
    }
    let dir = match backup_dir(query.into_inner().dir.as_deref()) {
        Ok(dir) => dir,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, e),
    };
    let Some(running) = Running::take() else {
        return refuse(
            StatusCode::CONFLICT,
            "a backup is running already (or the copy of an abandoned one still hangs on its \
             destination): try again once it is over",
        );
    };
    let running = Arc::new(running);
    let started = std::time::Instant::now();
    // Everything that touches the destination runs on a thread of its own and is waited for
    // only while it makes progress (`on_destination`): a hung mount cannot hold this request,
    // a runtime thread or the store.
    let to = dir.clone();
    let created = on_destination(
        &running,
        move |_| {
            use std::os::unix::fs::DirBuilderExt as _;
            Ok(std::fs::DirBuilder::new()
                .mode(crate::data_dir::DIR_MODE)
                .create(&to))
        },
        || {},
    )
    .await;
    match created {
        Waited::Done(Ok(Ok(()))) => {}
        Waited::Done(Ok(Err(e))) => {
            let status = if e.kind() == std::io::ErrorKind::AlreadyExists {
                StatusCode::CONFLICT
            } else {
                StatusCode::BAD_REQUEST
            };
            return refuse(status, format!("cannot create {}: {e}", dir.display()));
        }
        Waited::Done(Err(e)) => return failed(&dir, &e),
        Waited::Stalled => return abandoned(&dir),
    }
    let part = admin.data_dir.join(crate::data_dir::BACKUP_PART);
    // Left by a crash during an earlier backup (`VACUUM INTO` needs a new file).
    let _ = std::fs::remove_file(&part);
    let into = part.clone();
    // Held by the store's job too: a client gone during the copy drops this request, not the
    // job, and another backup must not start on the same part file meanwhile.
    let job_holds = Arc::clone(&running);
    let vacuumed = rqctx
        .context()
        .chat
        .store()
        .read(move |backend| {
            let _running = job_holds;
            let done = backend.backup_into(&into, BACKUP_HOLD_AT_MOST);
            if done.is_err() {
                // On the store thread, before the next commit: a part file cut short by a
                // full disk must not hold the space the commits queued behind it need.
                let _ = std::fs::remove_file(&into);
            }
            done
        })
        .await;
    let vacuumed = match vacuumed {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err("the store has stopped".to_owned()),
    };
    if let Err(e) = vacuumed {
        let _ = std::fs::remove_file(&part);
        let (to, held) = (dir.clone(), Arc::clone(&running));
        // Not a backup: nothing half-made is left to be mistaken for one (off this thread:
        // the destination may hang).
        let _ = std::thread::Builder::new()
            .name("netapi-chat-backup".to_owned())
            .spawn(move || {
                let _running = held;
                remove_dir(&to);
            });
        return failed(&dir, &e);
    }
    let to = dir.clone();
    let undo = dir.clone();
    let copied = on_destination(
        &running,
        move |progress| copy_out(&part, &admin, &to, progress),
        move || remove_dir(&undo),
    )
    .await;
    match copied {
        Waited::Done(Ok(files)) => {
            let files: Vec<serde_json::Value> = files
                .into_iter()
                .map(|(name, bytes)| serde_json::json!({ "name": name, "bytes": bytes }))
                .collect();
            reply(
                StatusCode::CREATED,
                serde_json::json!({
                    "dir": dir.display().to_string(),
                    "files": files,
                    "tookMs": u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                }),
            )
        }
        Waited::Done(Err(e)) => failed(&dir, &e),
        Waited::Stalled => abandoned(&dir),
    }
}

/// The answer to a backup that failed (its directory is removed, or being removed).
fn failed(dir: &Path, e: &str) -> Result<Response<Body>, HttpError> {
    tracing::error!(dir = %dir.display(), error = e, "backup failed");
    refuse(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("the backup failed: {e}"),
    )
}

/// The answer to a backup whose destination stopped taking writes ([`BACKUP_STALL`]).
fn abandoned(dir: &Path) -> Result<Response<Body>, HttpError> {
    tracing::error!(
        dir = %dir.display(),
        "backup abandoned: its destination took no write for {} s",
        BACKUP_STALL.as_secs()
    );
    refuse(
        StatusCode::GATEWAY_TIMEOUT,
        format!(
            "the backup was abandoned: {} took no write for {} s (a hung or very slow file \
             system?); the server goes on, and removes the directory if the file system comes \
             back",
            dir.display(),
            BACKUP_STALL.as_secs()
        ),
    )
}

/// Removes a backup directory that is not a backup (failed, or abandoned and come back).
fn remove_dir(dir: &Path) {
    if std::fs::remove_dir_all(dir).is_ok() {
        tracing::warn!(dir = %dir.display(), "removed the directory of a backup that did not complete");
    }
}

/// Runs `work` on a thread of its own (it writes to a backup's destination, which may hang)
/// and waits for it while the counter it is given moves ([`wait_for_copy`], [`BACKUP_STALL`]).
/// `undo` runs on that thread when `work` failed, or when it returns after its caller gave up
/// on it. The thread holds `running`, so no other backup starts while it is stuck.
async fn on_destination<T: Send + 'static>(
    running: &Arc<Running>,
    work: impl FnOnce(&AtomicU64) -> Result<T, String> + Send + 'static,
    undo: impl FnOnce() + Send + 'static,
) -> Waited<Result<T, String>> {
    let progress = Arc::new(AtomicU64::new(0));
    let (done, rx) = tokio::sync::oneshot::channel();
    let (step, held) = (Arc::clone(&progress), Arc::clone(running));
    let spawned = std::thread::Builder::new()
        .name("netapi-chat-backup".to_owned())
        .spawn(move || {
            let _running = held;
            let result = work(&step);
            let ok = result.is_ok();
            if done.send(result).is_err() || !ok {
                undo();
            }
        });
    if let Err(e) = spawned {
        return Waited::Done(Err(format!("cannot start a thread for the copy: {e}")));
    }
    wait_for_copy(rx, &progress, BACKUP_STALL).await
}

/// Longest a backup's `VACUUM INTO` may hold the store thread (commits wait for it) before it
/// is stopped and the backup fails saying so: 30 s copies about 16 GiB at the speed measured
/// (`backup_cost`, ~570 MiB/s), and a request waiting 30 s is near its clients' time-outs.
pub const BACKUP_HOLD_AT_MOST: Duration = Duration::from_secs(30);

/// Longest the copy to a backup's destination may go without completing a write (or a sync)
/// before the backup is abandoned with `504`: a hung network share or disk would otherwise
/// keep the request (and the `netapi-chat backup` command) waiting for ever. The copy runs off
/// the store thread, so nothing else waits for it; a slow but working destination is given
/// as long as it keeps taking writes.
pub const BACKUP_STALL: Duration = Duration::from_secs(30);

/// Bytes written between two syncs of the copy: bounds what one sync has to flush, so that a
/// slow destination still shows progress within [`BACKUP_STALL`].
const COPY_SYNC_EVERY: u64 = 16 << 20;

/// Set while a backup runs, including the copy of one abandoned on a hung destination (its
/// thread cannot be stopped inside a write): one at a time, so they never share the part file
/// and an abandoned copy stuck on a hung mount does not have company.
static BACKUP_RUNNING: AtomicBool = AtomicBool::new(false);

/// [`BACKUP_RUNNING`] held; cleared when dropped (shared, through an `Arc`, by the request and
/// the threads that write to its destination: cleared once the last of them is over).
struct Running;

impl Running {
    fn take() -> Option<Running> {
        (!BACKUP_RUNNING.swap(true, Ordering::SeqCst)).then_some(Running)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        BACKUP_RUNNING.store(false, Ordering::SeqCst);
    }
}

/// How the wait for a backup's copy ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Waited<T> {
    /// The copy finished (or failed) and said so.
    Done(T),
    /// Its `progress` did not move for the stall limit: abandoned (the copy, if it ever
    /// returns, finds nobody waiting).
    Stalled,
}

/// Waits for the copy's answer on `rx` for as long as `progress` keeps moving, giving up once
/// it has not moved for `stall`. Exact at the edge: an answer sent before the give-up is taken,
/// and after it the copy's send fails, so both sides agree on whether it was abandoned.
pub async fn wait_for_copy<T>(
    mut rx: tokio::sync::oneshot::Receiver<Result<T, String>>,
    progress: &AtomicU64,
    stall: Duration,
) -> Waited<Result<T, String>> {
    let tick = (stall / 10).max(Duration::from_millis(10));
    let mut seen = progress.load(Ordering::SeqCst);
    let mut since = std::time::Instant::now();
    loop {
        match tokio::time::timeout(tick, &mut rx).await {
            Ok(Ok(result)) => return Waited::Done(result),
            Ok(Err(_)) => return Waited::Done(Err("the copy stopped unexpectedly".to_owned())),
            Err(_) => {
                let now = progress.load(Ordering::SeqCst);
                if now != seen {
                    (seen, since) = (now, std::time::Instant::now());
                } else if since.elapsed() >= stall {
                    rx.close();
                    return match rx.try_recv() {
                        Ok(result) => Waited::Done(result),
                        Err(_) => Waited::Stalled,
                    };
                }
            }
        }
    }
}

/// The copy thread's work: opens the part file and removes its name at once (the data
/// directory is clean whatever happens next; its space is freed when the copy ends), copies it
/// into `dir` under the same part name in steps, syncing every [`COPY_SYNC_EVERY`] bytes and
/// counting each step in `progress`, then the webhook secret and the token file, renames the
/// copy to the database's name last, and syncs `dir`.
/// Returns each file's name and size.
fn copy_out(
    part: &Path,
    admin: &Admin,
    dir: &Path,
    progress: &AtomicU64,
) -> Result<Vec<(&'static str, u64)>, String> {
    use std::io::{Read as _, Write as _};
    use std::os::unix::fs::OpenOptionsExt as _;
    let step = || progress.fetch_add(1, Ordering::SeqCst);
    let mut from =
        std::fs::File::open(part).map_err(|e| format!("reading {}: {e}", part.display()))?;
    let _ = std::fs::remove_file(part);
    // Under the part file's name until everything else is in place: a backup cut short (the
    // server killed, the destination lost) has no database, which a start refuses
    // (`store::sqlite`), rather than a truncated one or an empty store with a new token.
    let database = dir.join(crate::data_dir::BACKUP_PART);
    let failed = |e: std::io::Error| format!("writing {}: {e}", database.display());
    let mut to = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(crate::data_dir::FILE_MODE)
        .open(&database)
        .map_err(failed)?;
    step();
    let mut buf = vec![0u8; 1 << 20];
    let (mut bytes, mut unsynced) = (0u64, 0u64);
    loop {
        let n = from
            .read(&mut buf)
            .map_err(|e| format!("reading {}: {e}", part.display()))?;
        let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else {
            break;
        };
        to.write_all(chunk).map_err(failed)?;
        (bytes, unsynced) = (bytes + n as u64, unsynced + n as u64);
        if unsynced >= COPY_SYNC_EVERY {
            to.sync_data().map_err(failed)?;
            unsynced = 0;
        }
        step();
    }
    to.sync_all().map_err(failed)?;
    step();
    let mut files = vec![("netapi-chat.sqlite3", bytes)];
    files.extend(copy_files(admin, dir)?);
    let done = dir.join("netapi-chat.sqlite3");
    std::fs::rename(&database, &done).map_err(|e| format!("naming {}: {e}", done.display()))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("syncing {}: {e}", dir.display()))?;
    step();
    Ok(files)
}

/// Copies the webhook secret and the token file (when there are such files) into `dir`,
/// `0600`; returns their names and sizes.
fn copy_files(admin: &Admin, dir: &Path) -> Result<Vec<(&'static str, u64)>, String> {
    let mut copied = Vec::new();
    let sources = [
        (
            "webhook-secret",
            Some(admin.data_dir.join("webhook-secret")),
        ),
        ("tokens", admin.token_file.clone()),
    ];
    for (name, source) in sources {
        let Some(source) = source else { continue };
        let text = match std::fs::read_to_string(&source) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("{}: {e}", source.display())),
        };
        let target = dir.join(name);
        crate::data_dir::write_secret(&target, &text)
            .map_err(|e| format!("{}: {e}", target.display()))?;
        copied.push((name, text.len() as u64));
    }
    Ok(copied)
}

/// `GET /admin/summary` (see the module documentation).
#[endpoint { method = GET, path = "/admin/summary", unpublished = true }]
pub async fn summary_endpoint(
    rqctx: RequestContext<ChatServer>,
) -> Result<Response<Body>, HttpError> {
    if let Err(denied) = admitted(&rqctx) {
        return denied.answer();
    }
    let chat = &rqctx.context().chat;
    let (sessions, subscriptions) = chat.sizes();
    let disabled = chat.disabled_subscriptions();
    let counts = chat
        .store()
        .read(|backend| backend.counts(SUMMARY_MOST))
        .await;
    let counts = match counts {
        Ok(Ok(counts)) => counts,
        Ok(Err(e)) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(_) => return refuse(StatusCode::SERVICE_UNAVAILABLE, "the store has stopped"),
    };
    let by: Vec<serde_json::Value> = counts
        .undelivered_by_subscription
        .iter()
        .map(|(s, n)| serde_json::json!({ "subscription": s, "undelivered": n }))
        .collect();
    reply(
        StatusCode::OK,
        serde_json::json!({
            "subscriptions": subscriptions,
            "openSessions": sessions,
            "messages": counts.messages,
            "undeliveredNotifications": counts.undelivered,
            "undeliveredBySubscription": by,
            "listedAtMost": SUMMARY_MOST,
            "disabledSubscriptions": disabled,
            "deadLetters": counts.dead_letters,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_goes_to_a_new_absolute_directory() {
        assert_eq!(
            backup_dir(Some(" /var/backups/chat-1 ")),
            Ok(PathBuf::from("/var/backups/chat-1"))
        );
        for bad in [
            None,
            Some(""),
            Some("  "),
            Some("backups/chat"),
            Some("/var/../etc/x"),
        ] {
            assert!(backup_dir(bad).is_err(), "{bad:?}");
        }
    }

    /// The stall rule: a copy that stops counting progress is given up after the limit (its
    /// late answer then fails to send, so it knows to clean up); one that keeps counting is
    /// waited for however long it takes.
    #[tokio::test]
    async fn a_copy_is_waited_for_while_it_makes_progress() {
        let stall = Duration::from_millis(200);
        let progress = AtomicU64::new(0);
        let (done, rx) = tokio::sync::oneshot::channel::<Result<u8, String>>();
        let started = std::time::Instant::now();
        assert_eq!(wait_for_copy(rx, &progress, stall).await, Waited::Stalled);
        assert!(started.elapsed() >= stall);
        assert!(done.send(Ok(1)).is_err(), "the abandoned copy is told");

        let progress = Arc::new(AtomicU64::new(0));
        let (done, rx) = tokio::sync::oneshot::channel::<Result<u8, String>>();
        let step = Arc::clone(&progress);
        std::thread::spawn(move || {
            for _ in 0..10 {
                std::thread::sleep(Duration::from_millis(60));
                step.fetch_add(1, Ordering::SeqCst);
            }
            let _ = done.send(Ok(7));
        });
        assert_eq!(
            wait_for_copy(rx, &progress, stall).await,
            Waited::Done(Ok(7))
        );
    }
}
