//! The administration commands of the server binary (issue 17 item 5), run by an operator on
//! the server's machine with the server's configuration: `tokens add|list|revoke` edit the
//! token file in place (see [`crate::auth::token_admin`]); a running server picks the change
//! up within [`CHECK_INTERVAL`] without a restart. `backup` and `summary` need the database,
//! which only the running server can open (held exclusively, `unix-excl`): they call its admin
//! endpoints ([`crate::admin_api`]) with `NETAPI_CHAT_ADMIN_TOKEN`, at `--url` or at the
//! configured bind address.

use crate::auth::token_admin::{self, Listed};
use crate::auth::watched::CHECK_INTERVAL;
use crate::config::Config;
use std::path::PathBuf;

/// What a command prints: `stdout` for what scripts read (a listing, a generated token),
/// `stderr` for what the operator is told.
#[derive(Debug, Default)]
pub struct Output {
    /// For scripts.
    pub stdout: String,
    /// For the operator.
    pub stderr: String,
}

/// One `tokens` command.
#[derive(Debug)]
pub enum TokensCommand {
    /// Adds `token` (or, when `None`, a freshly generated one, printed on stdout) for `users`.
    Add {
        /// The token; `None` to generate one.
        token: Option<String>,
        /// Its users: `tel:`/`sip:` addresses, or `*` for any user.
        users: Vec<String>,
    },
    /// Lists the tokens by fingerprint with their users.
    List,
    /// Removes a token given by itself or by its fingerprint.
    Revoke(String),
}

/// The token file the configuration names, or why there is none.
fn token_file(config: &Config) -> Result<PathBuf, String> {
    config.token_file().ok_or_else(|| {
        "tokens are JWTs from an identity provider (NETAPI_CHAT_JWKS_FILE is set): there is no token file to manage"
            .to_owned()
    })
}

/// `user1 user2 …` for a message.
fn users_text(listed: &[String]) -> String {
    listed.join(" ")
}

/// Runs a `tokens` command against the configured token file.
pub fn tokens(config: &Config, command: TokensCommand) -> Result<Output, String> {
    let path = token_file(config)?;
    let within = format!(
        "a running server uses the change within {} ms",
        CHECK_INTERVAL.as_millis()
    );
    match command {
        TokensCommand::Add { token, users } => {
            let generated = token.is_none();
            let token = token.unwrap_or_else(token_admin::fresh_token);
            let fingerprint =
                token_admin::edit(&path, |text| token_admin::add(text, &token, &users))?;
            Ok(Output {
                stdout: if generated {
                    format!("{token}\n")
                } else {
                    String::new()
                },
                stderr: format!(
                    "netapi-chat: added token {fingerprint} to {} ({within})\n",
                    path.display()
                ),
            })
        }
        TokensCommand::List => {
            let text = token_admin::read(&path)?;
            let listed = token_admin::list(&text).map_err(|e| e.to_string())?;
            Ok(Output {
                stdout: render_list(&listed),
                stderr: format!(
                    "netapi-chat: {} token(s) in {}\n",
                    listed.len(),
                    path.display()
                ),
            })
        }
        TokensCommand::Revoke(which) => {
            let removed = token_admin::edit(&path, |text| {
                token_admin::revoke(text.unwrap_or_default(), &which)
            })?;
            Ok(Output {
                stdout: String::new(),
                stderr: format!(
                    "netapi-chat: revoked token {} of {} from {} ({within})\n",
                    removed.fingerprint,
                    users_text(&removed.users),
                    path.display()
                ),
            })
        }
    }
}

/// Where the running server is: `url` when given, else `http://` + the configured bind
/// address (an unspecified address, e.g. `0.0.0.0`, reached on loopback).
pub fn server_url(config: &Config, url: Option<&str>) -> Result<String, String> {
    if let Some(url) = url {
        return Ok(url.trim_end_matches('/').to_owned());
    }
    let mut addr = config.bind;
    if addr.port() == 0 {
        return Err(
            "the configured bind address has port 0: give the server's address with --url"
                .to_owned(),
        );
    }
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    Ok(format!("http://{addr}"))
}

/// Longest a backup may take before the command gives up waiting (the server finishes it
/// anyway).
const BACKUP_WAIT: std::time::Duration = std::time::Duration::from_secs(3600);
/// Longest a summary may take.
const SUMMARY_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Calls an admin endpoint: the JSON answer on 2xx, the server's `error` text otherwise.
async fn call(
    config: &Config,
    request: reqwest::RequestBuilder,
) -> Result<serde_json::Value, String> {
    let token = config.admin_token.as_deref().ok_or(
        "NETAPI_CHAT_ADMIN_TOKEN is not set: set it (the server must run with the same) to use backup and summary",
    )?;
    let answer = request
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| format!("cannot reach the server: {e}"))?;
    let status = answer.status();
    let text = answer
        .text()
        .await
        .map_err(|e| format!("reading the server's answer: {e}"))?;
    let json: Option<serde_json::Value> = serde_json::from_str(&text).ok();
    if status.is_success() {
        return json.ok_or_else(|| format!("the server answered {status} with no JSON"));
    }
    let why = json
        .as_ref()
        .and_then(|j| j.get("error"))
        .and_then(|e| e.as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| match status.as_u16() {
            404 => {
                "the server has no admin endpoints (is it running with NETAPI_CHAT_ADMIN_TOKEN?)"
                    .to_owned()
            }
            _ => text.trim().chars().take(200).collect(),
        });
    Err(format!("the server answered {status}: {why}"))
}

/// `netapi-chat backup DIR`: has the running server write a consistent copy of its data
/// directory into `dir` (created; relative to this command's working directory).
pub async fn backup(
    config: &Config,
    url: Option<&str>,
    dir: &std::path::Path,
) -> Result<Output, String> {
    let base = server_url(config, url)?;
    let dir = std::path::absolute(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let dir_text = dir
        .to_str()
        .ok_or_else(|| format!("{} is not UTF-8", dir.display()))?;
    let client = reqwest::Client::builder()
        .timeout(BACKUP_WAIT)
        .build()
        .map_err(|e| e.to_string())?;
    let answer = call(
        config,
        client
            .post(format!("{base}/admin/backup"))
            .query(&[("dir", dir_text)]),
    )
    .await?;
    let files: Vec<String> = answer
        .get("files")
        .and_then(|f| f.as_array())
        .map(|files| {
            files
                .iter()
                .map(|f| {
                    format!(
                        "{} ({} bytes)",
                        f.get("name").and_then(|n| n.as_str()).unwrap_or("?"),
                        f.get("bytes").and_then(|b| b.as_u64()).unwrap_or(0)
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Output {
        stdout: format!("{}\n", dir.display()),
        stderr: format!(
            "netapi-chat: backup written to {}: {} in {} ms; to restore, run a server with NETAPI_CHAT_DATA_DIR set to it\n",
            dir.display(),
            files.join(", "),
            answer.get("tookMs").and_then(|t| t.as_u64()).unwrap_or(0)
        ),
    })
}

/// `netapi-chat summary`: what the running server stores, as text (or its JSON).
pub async fn summary(config: &Config, url: Option<&str>, json: bool) -> Result<Output, String> {
    let base = server_url(config, url)?;
    let client = reqwest::Client::builder()
        .timeout(SUMMARY_WAIT)
        .build()
        .map_err(|e| e.to_string())?;
    let answer = call(config, client.get(format!("{base}/admin/summary"))).await?;
    let stdout = if json {
        format!("{answer:#}\n")
    } else {
        render_summary(&answer)
    };
    Ok(Output {
        stdout,
        stderr: String::new(),
    })
}

/// The summary as aligned text lines.
pub fn render_summary(answer: &serde_json::Value) -> String {
    let n = |key: &str| answer.get(key).and_then(|v| v.as_u64()).unwrap_or(0);
    let mut out = format!(
        "subscriptions               {}\nopen sessions               {}\nmessages                    {}\nundelivered notifications   {}\n",
        n("subscriptions"),
        n("openSessions"),
        n("messages"),
        n("undeliveredNotifications")
    );
    let by = answer
        .get("undeliveredBySubscription")
        .and_then(|b| b.as_array())
        .cloned()
        .unwrap_or_default();
    if !by.is_empty() {
        out.push_str(&format!(
            "undelivered by subscription (most first, at most {}):\n",
            n("listedAtMost")
        ));
        for entry in &by {
            out.push_str(&format!(
                "  {:<40} {}\n",
                entry
                    .get("subscription")
                    .and_then(|s| s.as_str())
                    .unwrap_or("?"),
                entry
                    .get("undelivered")
                    .and_then(|u| u.as_u64())
                    .unwrap_or(0)
            ));
        }
    }
    out
}

/// The listing: a header, then `FINGERPRINT  USERS` per token, in file order.
pub fn render_list(listed: &[Listed]) -> String {
    let mut out = String::from("FINGERPRINT              USERS\n");
    for l in listed {
        out.push_str(&format!("{:<24} {}\n", l.fingerprint, users_text(&l.users)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listing_has_one_aligned_line_per_token() {
        let listed = [Listed {
            fingerprint: "sha256:0123456789abcdef".to_owned(),
            users: vec!["*".to_owned(), "tel:+15550100".to_owned()],
            line: 3,
        }];
        assert_eq!(
            render_list(&listed),
            "FINGERPRINT              USERS\nsha256:0123456789abcdef  * tel:+15550100\n"
        );
    }

    #[test]
    fn the_server_is_found_at_the_bind_address_or_the_given_url() {
        let mut config = Config {
            bind: "0.0.0.0:8080".parse().expect("addr"),
            ..Config::default()
        };
        assert_eq!(
            server_url(&config, None).as_deref(),
            Ok("http://127.0.0.1:8080")
        );
        config.bind = "[::]:9000".parse().expect("addr");
        assert_eq!(
            server_url(&config, None).as_deref(),
            Ok("http://[::1]:9000")
        );
        config.bind = "10.0.0.5:8080".parse().expect("addr");
        assert_eq!(
            server_url(&config, None).as_deref(),
            Ok("http://10.0.0.5:8080")
        );
        assert_eq!(
            server_url(&config, Some("https://chat.example/")).as_deref(),
            Ok("https://chat.example")
        );
        config.bind = "127.0.0.1:0".parse().expect("addr");
        assert!(server_url(&config, None).is_err());
    }

    #[test]
    fn the_summary_reads_as_aligned_lines() {
        let answer = serde_json::json!({
            "subscriptions": 2, "openSessions": 1, "messages": 30,
            "undeliveredNotifications": 4, "listedAtMost": 100,
            "undeliveredBySubscription": [{"subscription": "s1", "undelivered": 4}],
        });
        let text = render_summary(&answer);
        assert!(text.contains("messages                    30\n"), "{text}");
        assert!(text.contains("(most first, at most 100)"), "{text}");
        assert!(text.contains("  s1 "), "{text}");
        assert!(text.trim_end().ends_with(" 4"), "{text}");
    }

    #[test]
    fn jwt_configurations_have_no_token_file() {
        let mut config = Config::default();
        assert!(token_file(&config).is_ok());
        config.auth = crate::config::AuthConfig::Jwt {
            jwks: "jwks.json".into(),
            issuer: "https://issuer".to_owned(),
            audience: "chat".to_owned(),
            user_claim: "sub".to_owned(),
            scope: "chat".to_owned(),
        };
        let e = tokens(&config, TokensCommand::List).unwrap_err();
        assert!(e.contains("JWT"), "{e}");
    }
}
