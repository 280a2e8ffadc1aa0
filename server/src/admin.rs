//! The administration commands of the server binary (issue 17 item 5), run by an operator on
//! the server's machine with the server's configuration: `tokens add|list|revoke` edit the
//! token file in place (see [`crate::auth::token_admin`]); a running server picks the change
//! up within [`CHECK_INTERVAL`] without a restart. `backup` and `summary` need the database,
//! which only the running server can open (held exclusively, `unix-excl`): they call its admin
//! endpoints ([`crate::admin_api`]) with `NETAPI_CHAT_ADMIN_TOKEN`, at `--url` or at the
//! configured bind address: over HTTPS when the configuration has `NETAPI_CHAT_TLS_CERT`,
//! trusting that certificate ([`server_url`], [`trust`]).

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

/// Where the running server is called.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    /// The base URL (no trailing slash).
    pub url: String,
    /// The URL's host and where it is connected to instead of being looked up: the
    /// configured bind address, when the URL names the server by a DNS name of its
    /// certificate.
    pub at: Option<(String, std::net::SocketAddr)>,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.at {
            Some((_, at)) => write!(
                f,
                "{} (connecting to {at}, the configured bind address)",
                self.url
            ),
            None => f.write_str(&self.url),
        }
    }
}

/// Where the running server is: `url` when given, else the configured bind address (an
/// unspecified address, e.g. `0.0.0.0`, reached on loopback): `http://` + it, or with
/// `NETAPI_CHAT_TLS_CERT` `https://`. Over HTTPS the certificate is verified for the URL's
/// host, so the URL names the server as its certificate does ([`crate::tls::own_host`]):
/// by that address when the certificate carries it as an IP SAN, else by the certificate's
/// first DNS name, connecting to the bind address all the same ([`Target::at`]); a
/// certificate made for `chat.example.com` then verifies for `chat.example.com` while the
/// command talks to `127.0.0.1:8443`.
pub fn server_url(config: &Config, url: Option<&str>) -> Result<Target, String> {
    if let Some(url) = url {
        return Ok(Target {
            url: url.trim_end_matches('/').to_owned(),
            at: None,
        });
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
    let Some(files) = &config.tls else {
        return Ok(Target {
            url: format!("http://{addr}"),
            at: None,
        });
    };
    Ok(match crate::tls::own_host(files, addr.ip()) {
        Some(host) => Target {
            url: format!("https://{host}:{}", addr.port()),
            at: Some((host, addr)),
        },
        None => Target {
            url: format!("https://{addr}"),
            at: None,
        },
    })
}

/// What `backup` and `summary` trust for an `https://` server: Mozilla's roots, the server's
/// own certificate file (`NETAPI_CHAT_TLS_CERT`: its certificate, or what issued it) and
/// `NETAPI_CHAT_CLUSTER_CA_FILE` (the private CA of a cluster's instances).
pub fn trust(config: &Config) -> crate::reach::Trust {
    crate::reach::Trust::new(
        "run the command with the server's configuration (NETAPI_CHAT_TLS_CERT), or set \
         NETAPI_CHAT_CLUSTER_CA_FILE to the certificate of the CA that issued the server's",
    )
    .with(
        "NETAPI_CHAT_TLS_CERT",
        config.tls.as_ref().map(|files| files.cert.as_path()),
    )
    .with(
        "NETAPI_CHAT_CLUSTER_CA_FILE",
        config.cluster_ca_file.as_deref(),
    )
}

/// The HTTP client of a command that may take `wait`, for `target`.
fn http_client(
    config: &Config,
    target: &Target,
    wait: std::time::Duration,
) -> Result<(reqwest::Client, crate::reach::Trust), String> {
    let trust = trust(config);
    let mut builder = trust.client_builder()?.timeout(wait);
    if let Some((host, at)) = &target.at {
        builder = builder.resolve(host, *at);
    }
    let client = builder.build().map_err(|e| e.to_string())?;
    Ok((client, trust))
}

/// Longest a backup may take before the command gives up waiting (the server finishes it
/// anyway).
const BACKUP_WAIT: std::time::Duration = std::time::Duration::from_secs(3600);
/// Longest a summary may take.
const SUMMARY_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Calls an admin endpoint: the JSON answer on 2xx, the server's `error` text otherwise.
async fn call(
    config: &Config,
    target: &Target,
    trust: &crate::reach::Trust,
    request: reqwest::RequestBuilder,
) -> Result<serde_json::Value, String> {
    let token = config.admin_token.as_deref().ok_or(
        "NETAPI_CHAT_ADMIN_TOKEN is not set: set it (the server must run with the same) to use backup and summary",
    )?;
    let answer = request
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| crate::reach::unreachable(&target.to_string(), &e, trust))?;
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
    let target = server_url(config, url)?;
    let dir = std::path::absolute(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let dir_text = dir
        .to_str()
        .ok_or_else(|| format!("{} is not UTF-8", dir.display()))?;
    let (client, trust) = http_client(config, &target, BACKUP_WAIT)?;
    let answer = call(
        config,
        &target,
        &trust,
        client
            .post(format!("{}/admin/backup", target.url))
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
    let target = server_url(config, url)?;
    let (client, trust) = http_client(config, &target, SUMMARY_WAIT)?;
    let answer = call(
        config,
        &target,
        &trust,
        client.get(format!("{}/admin/summary", target.url)),
    )
    .await?;
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
        "subscriptions               {}\n  disabled by delivery      {}\nopen sessions               {}\nmessages                    {}\nundelivered notifications   {}\ndead letters                {}\n",
        n("subscriptions"),
        n("disabledSubscriptions"),
        n("openSessions"),
        n("messages"),
        n("undeliveredNotifications"),
        n("deadLetters")
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
        let url = |config: &Config, given: Option<&str>| server_url(config, given).map(|t| t.url);
        assert_eq!(url(&config, None).as_deref(), Ok("http://127.0.0.1:8080"));
        config.bind = "[::]:9000".parse().expect("addr");
        assert_eq!(url(&config, None).as_deref(), Ok("http://[::1]:9000"));
        config.bind = "10.0.0.5:8080".parse().expect("addr");
        assert_eq!(url(&config, None).as_deref(), Ok("http://10.0.0.5:8080"));
        assert_eq!(
            url(&config, Some("https://chat.example/")).as_deref(),
            Ok("https://chat.example")
        );
        config.bind = "127.0.0.1:0".parse().expect("addr");
        assert!(server_url(&config, None).is_err());
    }

    /// A certificate with these subjectAltNames, as the configured `tls` of a configuration
    /// bound to `bind`, in `dir`.
    fn with_certificate(dir: &std::path::Path, bind: &str, sans: &[&str]) -> Config {
        let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
        let made = rcgen::generate_simple_self_signed(sans).expect("certificate");
        let files = crate::tls::TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&files.cert, made.cert.pem()).expect("write");
        std::fs::write(&files.key, made.signing_key.serialize_pem()).expect("write");
        Config {
            bind: bind.parse().expect("addr"),
            tls: Some(files),
            ..Config::default()
        }
    }

    /// With `NETAPI_CHAT_TLS_CERT` the server is called over HTTPS at its bind address, named
    /// as its certificate names it: the address itself when it is an IP SAN, else the first
    /// DNS name (not a wildcard), connected to at the address all the same.
    #[test]
    fn with_tls_the_server_is_called_by_a_name_its_certificate_carries() {
        let dir =
            std::env::temp_dir().join(format!("netapi-chat-admin-url-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let at = |config: &Config| server_url(config, None).expect("url");
        let config = with_certificate(&dir, "127.0.0.1:8443", &["localhost", "127.0.0.1"]);
        assert_eq!(
            at(&config),
            Target {
                url: "https://127.0.0.1:8443".to_owned(),
                at: None
            }
        );
        let config = with_certificate(&dir, "0.0.0.0:8443", &["*.chat.example", "chat.example"]);
        let target = at(&config);
        assert_eq!(
            target,
            Target {
                url: "https://chat.example:8443".to_owned(),
                at: Some((
                    "chat.example".to_owned(),
                    "127.0.0.1:8443".parse().expect("addr")
                ))
            }
        );
        assert_eq!(
            target.to_string(),
            "https://chat.example:8443 (connecting to 127.0.0.1:8443, the configured bind address)"
        );
        // No name to use: the address, whose failure will say what the certificate names.
        let config = with_certificate(&dir, "[::]:8443", &["*.chat.example", "10.0.0.1"]);
        assert_eq!(at(&config).url, "https://[::1]:8443");
        // A given URL is used as it is.
        assert_eq!(
            server_url(&config, Some("https://chat.example:9443/")).expect("url"),
            Target {
                url: "https://chat.example:9443".to_owned(),
                at: None
            }
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_summary_reads_as_aligned_lines() {
        let answer = serde_json::json!({
            "subscriptions": 2, "openSessions": 1, "messages": 30,
            "undeliveredNotifications": 4, "listedAtMost": 100,
            "undeliveredBySubscription": [{"subscription": "s1", "undelivered": 4}],
            "disabledSubscriptions": 1, "deadLetters": 7,
        });
        let text = render_summary(&answer);
        assert!(text.contains("messages                    30\n"), "{text}");
        assert!(text.contains("  disabled by delivery      1\n"), "{text}");
        assert!(text.contains("dead letters                7\n"), "{text}");
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
