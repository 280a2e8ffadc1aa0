//! One HTTP client per callback endpoint, shared by every subscription that delivers there, so
//! that deliveries reuse kept-alive connections instead of opening one per subscription (and
//! again every minute) (issue 13 item 5).
//!
//! An endpoint is a URL's origin (scheme, host, port). Its client is pinned to the addresses
//! [`resolve_checked`] returned for the host (no second DNS lookup inside the client, no proxy,
//! no redirects: see `crate::callback_guard`), so **every connection it opens or reuses goes to
//! an address the callback policy allowed**. The addresses are checked again after
//! [`PIN_FOR`], and before the next attempt after a failed one: the same answer keeps the
//! client and its connections; a different one replaces the client (its pooled connections
//! close when the last attempt using it ends); a refused or unresolvable one drops the entry,
//! so nothing reaches the old addresses any more.
//!
//! Bounds: at most [`MAX_ENDPOINTS`] endpoints (the least recently used goes first), each
//! keeping at most [`MAX_IDLE_PER_ENDPOINT`] idle connections for [`IDLE_FOR`]; connections in
//! use are bounded by the delivery tasks (one attempt in flight per subscription).
//!
//! HTTP/1.1 only: the client is built without TLS (an `https` callback fails as before), so
//! there is no ALPN to offer HTTP/2 with, and HTTP/2 by prior knowledge would fail every
//! delivery to the many receivers that only speak HTTP/1.1.

use crate::callback_guard::{CallbackPolicy, resolve_checked};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// How long a checked DNS answer (and so its client) is used before the host is resolved and
/// checked again.
pub const PIN_FOR: Duration = Duration::from_secs(60);

/// Most endpoints with a client at once; past it the least recently used one is dropped.
pub const MAX_ENDPOINTS: usize = 512;

/// Most idle kept-alive connections per endpoint (so at most 1,024 idle sockets in all).
pub const MAX_IDLE_PER_ENDPOINT: usize = 2;

/// How long an idle connection is kept. Shorter than the usual receivers' own keep-alive
/// timeouts would not help (they close first and the pool notices), longer holds sockets
/// for endpoints that went quiet.
pub const IDLE_FOR: Duration = Duration::from_secs(30);

/// A URL's origin: what a client (and its connections) is shared by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    /// The origin of `url`, if it has a host and a port.
    pub fn of(url: &reqwest::Url) -> Option<Origin> {
        Some(Origin {
            scheme: url.scheme().to_owned(),
            host: url.host_str()?.to_owned(),
            port: url.port_or_known_default()?,
        })
    }
}

struct Entry {
    client: reqwest::Client,
    addrs: Vec<SocketAddr>,
    checked_at: Instant,
    /// Set after a failed attempt: check the addresses again before the next one.
    stale: bool,
    used: Instant,
}

/// The shared clients, by endpoint; cheap to clone.
#[derive(Clone, Default)]
pub struct Endpoints {
    map: Arc<Mutex<HashMap<Origin, Entry>>>,
}

impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoints").finish_non_exhaustive()
    }
}

/// Whether an entry checked at `checked_at` (and `stale` or not) may still be used at `now`.
pub fn usable(checked_at: Instant, stale: bool, now: Instant) -> bool {
    !stale && now.saturating_duration_since(checked_at) < PIN_FOR
}

impl Endpoints {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Origin, Entry>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The client for `url`'s endpoint: the shared one while its addresses are fresh, else
    /// after resolving and checking the host again. The error is for the operator's log.
    pub async fn client(
        &self,
        url: &reqwest::Url,
        origin: &Origin,
        policy: &CallbackPolicy,
        timeout: Duration,
    ) -> Result<reqwest::Client, String> {
        let now = Instant::now();
        if let Some(e) = self.lock().get_mut(origin)
            && usable(e.checked_at, e.stale, now)
        {
            e.used = now;
            return Ok(e.client.clone());
        }
        let checked = tokio::time::timeout(Duration::from_secs(5), resolve_checked(url, policy))
            .await
            .map_err(|_| "resolving the callback host timed out".to_owned())
            .and_then(|r| r.map_err(|e| e.detail().to_string()));
        let mut addrs = match checked {
            Ok(a) => a,
            Err(e) => {
                // Nothing goes to the old addresses any more.
                self.lock().remove(origin);
                return Err(e);
            }
        };
        addrs.sort();
        let now = Instant::now();
        let mut map = self.lock();
        if let Some(e) = map.get_mut(origin)
            && e.addrs == addrs
        {
            (e.checked_at, e.stale, e.used) = (now, false, now);
            return Ok(e.client.clone());
        }
        let client = pinned_client(url, &addrs, timeout)?;
        if map.len() >= MAX_ENDPOINTS && !map.contains_key(origin) {
            let oldest = map
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(o, _)| o.clone());
            if let Some(o) = oldest {
                map.remove(&o);
            }
        }
        map.insert(
            origin.clone(),
            Entry {
                client: client.clone(),
                addrs,
                checked_at: now,
                stale: false,
                used: now,
            },
        );
        Ok(client)
    }

    /// An attempt at `origin` failed: its host is resolved and checked again before the next
    /// attempt (the same answer keeps the connections).
    pub fn failed(&self, origin: &Origin) {
        if let Some(e) = self.lock().get_mut(origin) {
            e.stale = true;
        }
    }
}

/// An HTTP client that can only reach `addrs` (checked by [`resolve_checked`]) for the URL's
/// host: no second DNS lookup (so no rebinding), no proxy, no redirects; HTTP/1.1 keep-alive
/// with a bounded idle pool.
fn pinned_client(
    url: &reqwest::Url,
    addrs: &[SocketAddr],
    timeout: Duration,
) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(timeout)
        .pool_max_idle_per_host(MAX_IDLE_PER_ENDPOINT)
        .pool_idle_timeout(IDLE_FOR)
        .tcp_nodelay(true);
    if let Some(host) = url.host_str() {
        builder = builder.resolve_to_addrs(host, addrs);
    }
    builder.build().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checked_answer_is_used_for_a_minute_unless_an_attempt_failed() {
        let t = Instant::now();
        assert!(usable(t, false, t));
        assert!(usable(t, false, t + PIN_FOR - Duration::from_millis(1)));
        assert!(!usable(t, false, t + PIN_FOR));
        assert!(!usable(t, true, t));
    }

    #[test]
    fn endpoints_are_origins() {
        let a = reqwest::Url::parse("http://example.com/a").unwrap();
        let b = reqwest::Url::parse("http://example.com:80/b?x=1").unwrap();
        let c = reqwest::Url::parse("http://example.com:8080/a").unwrap();
        let d = reqwest::Url::parse("https://example.com/a").unwrap();
        assert_eq!(Origin::of(&a), Origin::of(&b));
        assert_ne!(Origin::of(&a), Origin::of(&c));
        assert_ne!(Origin::of(&a), Origin::of(&d));
    }
}
