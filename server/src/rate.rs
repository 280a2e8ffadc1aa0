//! Request rate per access token: a token bucket per token (`rate` requests a second, bursts of
//! up to `burst`); a token over its rate gets `429` with `Retry-After`.

use netapi_chat_runtime::ApiError;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Buckets of every token seen.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

/// Tokens not seen for this long are forgotten (their bucket would be full anyway).
const IDLE: Duration = Duration::from_secs(600);

impl RateLimiter {
    /// `rate` requests a second with bursts of `burst`; a rate of 0 means no limit.
    pub fn new(rate: f64, burst: f64) -> RateLimiter {
        RateLimiter {
            rate,
            burst: burst.max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `token_id`'s bucket, or says when to come back.
    pub fn check(&self, token_id: &str) -> Result<(), ApiError> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > 10_000 {
            buckets.retain(|_, (_, at)| now.duration_since(*at) < IDLE);
        }
        let (tokens, at) = buckets
            .entry(token_id.to_owned())
            .or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            return Ok(());
        }
        let wait = ((1.0 - *tokens) / self.rate).ceil().max(1.0);
        let mut e = ApiError::policy(
            "POL2005",
            "Maximum number of requests exceeded: %1 requests a second for this token; retry after %2 s",
            format!("{}", self.rate),
        );
        e.variables.push(format!("{wait}"));
        e.status = http::StatusCode::TOO_MANY_REQUESTS;
        if let Ok(v) = http::HeaderValue::from_str(&format!("{wait}")) {
            e.headers.push((http::header::RETRY_AFTER, v));
        }
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refuses_with_retry_after() {
        let r = RateLimiter::new(2.0, 3.0);
        for _ in 0..3 {
            r.check("t").unwrap();
        }
        let e = r.check("t").unwrap_err();
        assert_eq!(e.status, 429);
        assert!(
            e.headers
                .iter()
                .any(|(k, _)| k == http::header::RETRY_AFTER)
        );
        r.check("other").unwrap();
        assert!(RateLimiter::new(0.0, 0.0).check("t").is_ok());
    }
}
