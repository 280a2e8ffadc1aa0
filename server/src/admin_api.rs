//! Admin endpoints for what only the running server can do (issue 17 item 5): it holds the
//! database exclusively (`unix-excl`, see `store::sqlite`), so no other process can open it,
//! and a consistent copy or a count has to be made on its store thread. `netapi-chat backup`
//! and `netapi-chat summary` call these ([`crate::admin`]).
//!
//! - `POST /admin/backup?dir=/absolute/new/dir`: creates `dir` (mode `0700`; it must not exist,
//!   its parent must) and writes a data directory into it: the database by `VACUUM INTO`
//!   (one committed state, including every change already answered), the webhook secret and
//!   the token file, each `0600`. Starting a server on it (`NETAPI_CHAT_DATA_DIR=dir`) is the
//!   restore. Commits wait while the copy runs: its time follows the database's size.
//! - `GET /admin/summary`: subscriptions and open sessions (in memory), messages and
//!   undelivered notifications (counted in the database), and the subscriptions with the most
//!   undelivered notifications, at most [`SUMMARY_MOST`].
//!
//! Both exist only when `NETAPI_CHAT_ADMIN_TOKEN` is set, answer `401` to any other
//! credentials (API tokens included), and are unpublished (not in the OpenAPI).

use crate::handlers::ChatServer;
use dropshot::{Body, HttpError, Query, RequestContext, endpoint};
use http::{Response, StatusCode, header};
use schemars::JsonSchema;
use serde::Deserialize;
use std::path::{Path, PathBuf};

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
            rqctx.request.headers().get(header::AUTHORIZATION),
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
    {
        use std::os::unix::fs::DirBuilderExt as _;
        if let Err(e) = std::fs::DirBuilder::new()
            .mode(crate::data_dir::DIR_MODE)
            .create(&dir)
        {
            let status = if e.kind() == std::io::ErrorKind::AlreadyExists {
                StatusCode::CONFLICT
            } else {
                StatusCode::BAD_REQUEST
            };
            return refuse(status, format!("cannot create {}: {e}", dir.display()));
        }
    }
    let started = std::time::Instant::now();
    let database = dir.join("netapi-chat.sqlite3");
    let into = database.clone();
    let copied = rqctx
        .context()
        .chat
        .store()
        .read(move |backend| backend.backup_into(&into))
        .await;
    let copied = match copied {
        Ok(Ok(())) => copy_files(&admin, &dir),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("the store has stopped".to_owned()),
    };
    match copied {
        Ok(mut files) => {
            files.insert(0, ("netapi-chat.sqlite3", file_len(&database)));
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
        Err(e) => {
            // Not a backup: nothing half-made is left to be mistaken for one.
            let _ = std::fs::remove_dir_all(&dir);
            tracing::error!(dir = %dir.display(), error = &e, "backup failed");
            refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the backup failed: {e}"),
            )
        }
    }
}

/// Size of a file, 0 when it cannot be read.
fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
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
    let counts = chat
        .store()
        .read(|backend| backend.counts(SUMMARY_MOST))
        .await;
    let counts = match counts {
        Ok(Ok(counts)) => counts,
        Ok(Err(e)) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, e),
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
}
