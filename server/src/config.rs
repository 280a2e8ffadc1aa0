//! Server configuration, read from the environment (every setting has a documented default, so
//! `cargo run --release` needs none).

use std::net::SocketAddr;
use std::time::Duration;

/// Everything an operator can set.
#[derive(Clone, Debug)]
pub struct Config {
    /// `NETAPI_CHAT_BIND`: address to listen on. Default `127.0.0.1:8080`.
    pub bind: SocketAddr,
    /// `NETAPI_CHAT_PUBLIC_URL`: base URL clients reach the server at, used in `resourceURL`,
    /// `Location` and notification links. Default `http://` + the bound address.
    pub public_url: Option<String>,
    /// `NETAPI_CHAT_INVITATION_TIMEOUT_SECS`: how long an invitation waits for an answer before
    /// it times out. Default 120 s.
    pub invitation_timeout: Duration,
    /// `NETAPI_CHAT_MAX_BODY_BYTES`: largest request body accepted (413 above). Default 64 KiB.
    pub max_body_bytes: usize,
    /// `NETAPI_CHAT_NOTIFY_ATTEMPTS`: delivery attempts per notification before it is dropped
    /// (and logged). Default 5.
    pub notify_attempts: u32,
    /// `NETAPI_CHAT_NOTIFY_BACKOFF_MS`: first retry delay; doubles on each retry. Default 200 ms.
    pub notify_backoff: Duration,
    /// `NETAPI_CHAT_NOTIFY_TIMEOUT_MS`: per-attempt timeout of a callback POST. Default 10 s.
    pub notify_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            invitation_timeout: Duration::from_secs(120),
            max_body_bytes: 64 * 1024,
            notify_attempts: 5,
            notify_backoff: Duration::from_millis(200),
            notify_timeout: Duration::from_secs(10),
        }
    }
}

/// A setting that is present but does not parse.
#[derive(Debug)]
pub struct ConfigError {
    /// The variable's name.
    pub variable: &'static str,
    /// Its value.
    pub value: String,
    /// What was expected.
    pub expected: &'static str,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}={:?} is not valid: expected {}",
            self.variable, self.value, self.expected
        )
    }
}

impl std::error::Error for ConfigError {}

fn var<T: std::str::FromStr>(
    name: &'static str,
    expected: &'static str,
) -> Result<Option<T>, ConfigError> {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().map(Some).map_err(|_| ConfigError {
            variable: name,
            value: v,
            expected,
        }),
        Err(_) => Ok(None),
    }
}

impl Config {
    /// Reads the `NETAPI_CHAT_*` variables over the defaults.
    pub fn from_env() -> Result<Config, ConfigError> {
        let d = Config::default();
        Ok(Config {
            bind: var("NETAPI_CHAT_BIND", "an address such as 127.0.0.1:8080")?.unwrap_or(d.bind),
            public_url: std::env::var("NETAPI_CHAT_PUBLIC_URL")
                .ok()
                .map(|u| u.trim_end_matches('/').to_owned()),
            invitation_timeout: var::<f64>(
                "NETAPI_CHAT_INVITATION_TIMEOUT_SECS",
                "seconds, e.g. 120 or 0.5",
            )?
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(Duration::from_secs_f64)
            .unwrap_or(d.invitation_timeout),
            max_body_bytes: var("NETAPI_CHAT_MAX_BODY_BYTES", "a byte count")?
                .unwrap_or(d.max_body_bytes),
            notify_attempts: var("NETAPI_CHAT_NOTIFY_ATTEMPTS", "a count >= 1")?
                .filter(|n| *n >= 1)
                .unwrap_or(d.notify_attempts),
            notify_backoff: var("NETAPI_CHAT_NOTIFY_BACKOFF_MS", "milliseconds")?
                .map(Duration::from_millis)
                .unwrap_or(d.notify_backoff),
            notify_timeout: var("NETAPI_CHAT_NOTIFY_TIMEOUT_MS", "milliseconds")?
                .map(Duration::from_millis)
                .unwrap_or(d.notify_timeout),
        })
    }
}
