//! The administration commands of the server binary (issue 17 item 5), run by an operator on
//! the server's machine with the server's configuration: `tokens add|list|revoke` edit the
//! token file in place (see [`crate::auth::token_admin`]); a running server picks the change
//! up within [`CHECK_INTERVAL`] without a restart.

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
