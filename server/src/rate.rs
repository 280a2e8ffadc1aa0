//! Request rate per access token: a token bucket per token (`rate` requests a second, bursts of
//! up to `burst`); a token over its rate gets `429` with `Retry-After`. And failed
//! authentication per client address ([`AuthFailures`]): an address that keeps presenting bad
//! credentials is refused before its credentials are even checked.

use netapi_chat_runtime::ApiError;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The `429` of both limits: `POL2005` with `text` (`%1` the limit, `%2` the wait), the wait
/// also in `Retry-After` (whole seconds), counted in the rate-limited metric as `kind`. One
/// builder so that a client handles both refusals alike.
fn too_many(text: &str, limit: String, wait: f64, kind: &'static str) -> ApiError {
    let mut e = ApiError::policy("POL2005", text, limit);
    e.variables.push(format!("{wait}"));
    crate::metrics::rate_limited(kind);
    e.status = http::StatusCode::TOO_MANY_REQUESTS;
    if let Ok(v) = http::HeaderValue::from_str(&format!("{wait}")) {
        e.headers.push((http::header::RETRY_AFTER, v));
    }
    e
}

/// Buckets of every token seen.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    /// The buckets, and how many there may be before the next sweep of idle ones.
    buckets: Mutex<(Buckets, usize)>,
}

/// Per token: requests left in its bucket and when it was last filled.
type Buckets = HashMap<String, (f64, Instant)>;

/// Buckets kept before idle ones are first swept. After a sweep the next one waits until
/// the table has doubled: sweeping on every request past a fixed count (as before) made each
/// request walk every bucket once more than this many tokens were in use (30,000 tokens: the
/// median request 60 % slower, throughput 2.5× lower), while memory stays bounded by the
/// tokens seen in the last [`IDLE`], twice over.
const SWEEP_FROM: usize = 10_000;

/// Tokens not seen for this long are forgotten (their bucket would be full anyway).
const IDLE: Duration = Duration::from_secs(600);

impl RateLimiter {
    /// `rate` requests a second with bursts of `burst`; a rate of 0 means no limit.
    pub fn new(rate: f64, burst: f64) -> RateLimiter {
        RateLimiter {
            rate,
            burst: burst.max(1.0),
            buckets: Mutex::new((HashMap::new(), SWEEP_FROM)),
        }
    }

    /// Takes one request from `token_id`'s bucket, or says when to come back.
    pub fn check(&self, token_id: &str) -> Result<(), ApiError> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut guard = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let (buckets, sweep_at) = &mut *guard;
        if buckets.len() > *sweep_at {
            buckets.retain(|_, (_, at)| now.duration_since(*at) < IDLE);
            *sweep_at = SWEEP_FROM.max(buckets.len().saturating_mul(2));
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
        Err(too_many(
            "Maximum number of requests exceeded: %1 requests a second for this token; retry after %2 s",
            format!("{}", self.rate),
            wait,
            "requests",
        ))
    }

    /// Charges `token_id` for the notifications a request it made caused, past what the
    /// request itself paid ([`units_beyond_request`]), after the fact: the request was
    /// admitted, and the token's next requests wait until its bucket has refilled. So a token's
    /// rate bounds the work it causes, not only the requests it sends: one message to a large
    /// group is many deliveries. The bucket owes at most one burst (a token is never refused
    /// for longer than a burst takes to refill).
    pub fn charge_notifications(&self, token_id: &str, notifications: usize) {
        let units = units_beyond_request(notifications);
        if self.rate <= 0.0 || units == 0 {
            return;
        }
        let now = Instant::now();
        let mut guard = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let (buckets, _) = &mut *guard;
        let (tokens, at) = buckets
            .entry(token_id.to_owned())
            .or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        *tokens = (*tokens - units as f64).max(-self.burst);
    }
}

/// Notifications one request unit covers ([`RateLimiter::charge_notifications`]): a request
/// that causes more counts one more per this many. A notification costs the server about a
/// quarter to a third of a request's CPU (a message to a 100-member group whose members hold
/// 20 subscriptions each made 1,980 of them, 170 ms of CPU, and counted as one request), so
/// ten of them weigh about what a few requests do; a one-to-one message or a small group's
/// (under ten notifications) costs one request as before.
pub const NOTIFICATIONS_PER_REQUEST: usize = 10;

/// The request units, beyond the request's own, of a request that caused `notifications`: one
/// per [`NOTIFICATIONS_PER_REQUEST`] begun, the first of which the request itself paid.
pub fn units_beyond_request(notifications: usize) -> usize {
    notifications
        .div_ceil(NOTIFICATIONS_PER_REQUEST)
        .saturating_sub(1)
}

/// Long polls waiting and notification sockets open, per access token: at most a quarter of
/// `NETAPI_CHAT_MAX_CONNECTIONS` each. A waiting poll or an open socket holds a connection
/// that is never idle, so the cap's shedding of the longest-idle connection never frees one:
/// one token acting for many users (ten channels each) re-polling at a tenth of its request
/// rate held all 500 places of a server and another tenant's GET waited 20 s. Past its share a
/// poll or a socket handshake is `429 POL2005` with `Retry-After`.
///
/// What the share counts is the channels a token is reading, not its connections: a newer
/// poll or socket on a channel the token already reads takes the channel over (the older one
/// is ended at once: `409` for a poll, `1008` for a socket) and needs no place of its own. A
/// client whose socket went half-dead (a NAT that dropped it: no FIN) must be able to take
/// its channel back at once; counted per connection, a token at its share was refused `429`
/// until the keep-alive closed the dead one, a minute or two later (the channels review).
/// Bounded all the same: the connections of one channel beyond the first are ending, and
/// every socket counts against the server's sockets' share. The entries are those of tokens
/// and channels being read, so the tables are bounded by the connections themselves.
#[derive(Debug)]
pub struct Waits {
    held: Mutex<Held>,
    max: usize,
}

/// What [`Waits`] counts.
#[derive(Debug, Default)]
struct Held {
    /// Channels being read, per token.
    per_token: HashMap<String, usize>,
    /// Readers (polls waiting, sockets open) per token and channel.
    per_channel: HashMap<(String, String), usize>,
}

/// One wait's place in its token's share ([`Waits::take`]), given back when dropped.
#[derive(Debug)]
pub struct WaitSlot {
    waits: std::sync::Arc<Waits>,
    /// The token and the channel it reads.
    key: (String, String),
}

impl Drop for WaitSlot {
    fn drop(&mut self) {
        let mut held = self.waits.held.lock().unwrap_or_else(|e| e.into_inner());
        let Some(readers) = held.per_channel.get_mut(&self.key) else {
            return;
        };
        *readers = readers.saturating_sub(1);
        if *readers > 0 {
            return;
        }
        held.per_channel.remove(&self.key);
        if let Some(n) = held.per_token.get_mut(&self.key.0) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.per_token.remove(&self.key.0);
            }
        }
    }
}

impl Waits {
    /// A quarter of `max_connections` per token (at least one).
    pub fn share_of(max_connections: usize) -> Waits {
        Waits {
            held: Mutex::new(Held::default()),
            max: (max_connections / 4).max(1),
        }
    }

    /// The most channels one token may read at once.
    pub fn per_token(&self) -> usize {
        self.max
    }

    /// A place for a poll or socket of `token_id` on channel `channel`, or the `429` past its
    /// share; free when the token reads that channel already (the newcomer takes it over).
    pub fn take(
        self: &std::sync::Arc<Self>,
        token_id: &str,
        channel: &str,
    ) -> Result<WaitSlot, ApiError> {
        let key = (token_id.to_owned(), channel.to_owned());
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(readers) = held.per_channel.get_mut(&key) {
            *readers += 1;
        } else {
            let n = held.per_token.entry(key.0.clone()).or_insert(0);
            if *n >= self.max {
                return Err(too_many(
                    "Maximum number of requests exceeded: %1 channels read at once (long polls waiting, notification sockets open) for this token; retry after %2 s",
                    format!("{}", self.max),
                    1.0,
                    "waits",
                ));
            }
            *n += 1;
            held.per_channel.insert(key.clone(), 1);
        }
        Ok(WaitSlot {
            waits: std::sync::Arc::clone(self),
            key,
        })
    }
}

/// Failed authentications per client address: after `limit` failures within `window`, the
/// address gets `429 POL2005` with `Retry-After` (until the window ends) without its
/// credentials being checked, so that guessing tokens (or JWT signature checks) cannot be done
/// at line rate. IPv6 clients are counted per /64, the block one subscriber usually holds.
#[derive(Debug)]
pub struct AuthFailures {
    limit: u32,
    window: Duration,
    /// The failures seen, per address.
    seen: Mutex<Seen>,
}

/// The failure table behind one lock.
#[derive(Debug, Default)]
struct Seen {
    /// Per address: failures in the current window and when that window began.
    by_address: HashMap<IpAddr, (u32, Instant)>,
    /// While the table is full of lockouts: until when (the earliest window end among them)
    /// nothing can be forgotten, so a new address is not counted without a pass over it.
    full_until: Option<Instant>,
}

/// Addresses kept at most (a flood of addresses must not grow memory without bound). Past
/// this, finished windows are forgotten first, then every address that is not locked out (its
/// count only starts again); locked-out addresses are never forgotten before their window
/// ends, and while every kept address is locked out a new one is not counted (holding that
/// many lockouts takes 20 failures from each of 100,000 addresses within the window). (The
/// table used to start afresh, so 100,000 addresses failing once each, 24 s from an IPv6 /48,
/// lifted every lockout under way.) A pass that frees room is paid for by the addresses that
/// filled it; one that frees nothing is not made again before the first lockout ends.
const MAX_ADDRESSES: usize = 100_000;

impl AuthFailures {
    /// `limit` failures per `window` per address; a limit of 0 means no limit.
    pub fn new(limit: u32, window: Duration) -> AuthFailures {
        AuthFailures {
            limit,
            window: window.max(Duration::from_secs(1)),
            seen: Mutex::new(Seen::default()),
        }
    }

    /// The key an address is counted under (IPv6: its /64).
    fn key(ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let s = v6.segments();
                    IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
                }
            },
        }
    }

    /// Refuses an address that has used up its failures in the current window.
    pub fn check(&self, ip: IpAddr) -> Result<(), ApiError> {
        if self.limit == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        match seen.by_address.get(&Self::key(ip)) {
            Some((count, start)) if *count >= self.limit && now < *start + self.window => {
                let wait = (*start + self.window - now).as_secs_f64().ceil().max(1.0);
                Err(too_many(
                    "Maximum number of requests exceeded: %1 failed authentications from this address; retry after %2 s",
                    self.limit.to_string(),
                    wait,
                    "auth_failures",
                ))
            }
            _ => Ok(()),
        }
    }

    /// An operator's token (`/metrics`, `/admin/…`), the request's `headers`' one
    /// `Authorization` field ([`crate::metrics::authorized`]), presented from `ip` against `expected`:
    /// `Err` with this limit's `429` when the address already failed too often, else whether
    /// it is `expected` (a wrong one counts as a failure, as on the API). The same budget as
    /// the API's, so guessing the admin token is no cheaper than guessing an API token.
    pub fn operator_token(
        &self,
        ip: IpAddr,
        headers: &http::HeaderMap,
        expected: &str,
    ) -> Result<bool, ApiError> {
        self.check(ip)?;
        let ok = crate::metrics::authorized(headers, expected);
        if !ok {
            self.failed(ip);
        }
        Ok(ok)
    }

    /// Counts one failed authentication from `ip`.
    pub fn failed(&self, ip: IpAddr) {
        if self.limit == 0 {
            return;
        }
        let now = Instant::now();
        let mut guard = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let Seen {
            by_address: seen,
            full_until,
        } = &mut *guard;
        let key = Self::key(ip);
        if seen.len() >= MAX_ADDRESSES && !seen.contains_key(&key) {
            if full_until.is_some_and(|until| now < until) {
                return;
            }
            let (window, limit) = (self.window, self.limit);
            seen.retain(|_, (_, start)| now < *start + window);
            if seen.len() >= MAX_ADDRESSES {
                seen.retain(|_, (count, _)| *count >= limit);
            }
            *full_until = None;
            if seen.len() >= MAX_ADDRESSES {
                // Every kept address is locked out: nothing frees before the first window
                // ends, and looking again sooner would be a pass per failure.
                *full_until = seen.values().map(|(_, start)| *start + window).min();
                return;
            }
        }
        let entry = seen.entry(key).or_insert((0, now));
        if now >= entry.1 + self.window {
            *entry = (0, now);
        }
        entry.0 = entry.0.saturating_add(1);
        if entry.0 == self.limit {
            // Once per address and window: every request from it (other clients behind the
            // same address included) is refused `429` from now on, which a metric alone did
            // not explain (a straggler still using a revoked token locks out its neighbours).
            let left = (entry.1 + self.window).saturating_duration_since(now);
            tracing::warn!(
                address = %key,
                failures = self.limit,
                refused_for_secs = left.as_secs().max(1),
                "authentication failure limit reached: this address is refused 429 until its window ends"
            );
        }
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

    #[test]
    fn a_request_pays_one_unit_per_ten_notifications_begun() {
        assert_eq!(units_beyond_request(0), 0);
        assert_eq!(units_beyond_request(1), 0);
        assert_eq!(units_beyond_request(10), 0);
        assert_eq!(units_beyond_request(11), 1);
        assert_eq!(units_beyond_request(20), 1);
        assert_eq!(units_beyond_request(1980), 197);
    }

    /// A request that caused many notifications makes its token's next requests wait, and the
    /// debt is at most one burst; other tokens are not charged.
    #[test]
    fn notifications_are_charged_to_the_token_that_caused_them() {
        let r = RateLimiter::new(0.001, 10.0);
        r.check("t").unwrap();
        r.charge_notifications("t", 50); // 4 units beyond the request: 5 left
        for _ in 0..5 {
            r.check("t").unwrap();
        }
        assert_eq!(r.check("t").unwrap_err().status, 429);
        r.check("other").unwrap();
        // A huge fan-out owes one burst at most.
        let r = RateLimiter::new(1000.0, 10.0);
        r.charge_notifications("t", 1_000_000);
        std::thread::sleep(Duration::from_millis(30));
        r.check("t").unwrap();
        // Off: nothing is charged.
        let off = RateLimiter::new(0.0, 0.0);
        off.charge_notifications("t", 1_000_000);
        off.check("t").unwrap();
    }

    /// A token reads at most its share of channels; a slot given back makes room; other
    /// tokens have their own share; a second reader of a channel the token reads already
    /// takes no place of its own (a takeover), and the channel's place goes when its last
    /// reader does; the tables forget a token reading nothing.
    #[test]
    fn a_token_reads_at_most_its_share_of_channels() {
        let w = std::sync::Arc::new(Waits::share_of(8));
        assert_eq!(w.per_token(), 2);
        let a = w.take("t", "c1").unwrap();
        let b = w.take("t", "c2").unwrap();
        let refused = w.take("t", "c3").unwrap_err();
        assert_eq!(refused.status, 429);
        assert_eq!(refused.message_id, "POL2005");
        let other = w.take("u", "c3").unwrap();
        // A takeover of c1, with the older reader still there: taken, and no room made.
        let a2 = w.take("t", "c1").unwrap();
        drop(a);
        assert!(w.take("t", "c3").is_err(), "c1 is still read");
        drop(a2);
        let c = w.take("t", "c3").unwrap();
        // Another token reading c2 needs a place of its own.
        let u2 = w.take("u", "c2").unwrap();
        assert!(w.take("u", "c4").is_err());
        drop((b, c, other, u2));
        let held = w.held.lock().unwrap();
        assert!(held.per_token.is_empty() && held.per_channel.is_empty());
    }

    /// A flood of addresses failing once each does not lift a lockout under way (the table
    /// used to start afresh when full); it forgets the addresses that are not locked out and
    /// goes on counting new ones.
    #[test]
    fn a_flood_of_addresses_does_not_lift_a_lockout() {
        let f = AuthFailures::new(3, Duration::from_secs(3600));
        let locked: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            f.failed(locked);
        }
        assert!(f.check(locked).is_err());
        for n in 0..u32::try_from(MAX_ADDRESSES).unwrap() + 10 {
            f.failed(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n)));
        }
        assert!(f.check(locked).is_err(), "still locked out");
        let late: IpAddr = "198.51.100.7".parse().unwrap();
        for _ in 0..3 {
            f.failed(late);
        }
        assert!(f.check(late).is_err(), "a new address is still counted");
        assert!(f.seen.lock().unwrap().by_address.len() <= MAX_ADDRESSES);

        // A table full of lockouts: a new address is not counted, and the pass that found
        // nothing to forget is not made again before the first lockout ends.
        let f = AuthFailures::new(1, Duration::from_secs(3600));
        for n in 0..u32::try_from(MAX_ADDRESSES).unwrap() {
            f.failed(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n)));
        }
        f.failed(late);
        assert!(
            f.check(late).is_ok(),
            "not counted while every place is a lockout"
        );
        assert!(f.seen.lock().unwrap().full_until.is_some());
        assert!(
            f.check("10.0.0.0".parse().unwrap()).is_err(),
            "lockouts kept"
        );
    }

    /// Idle buckets are swept once the table passes its size at the last sweep twice over, not
    /// on every request past a fixed count.
    #[test]
    fn idle_token_buckets_are_swept_now_and_then() {
        let r = RateLimiter::new(1000.0, 10.0);
        // The sweep comes with the first request that finds more than SWEEP_FROM buckets.
        for n in 0..SWEEP_FROM + 2 {
            r.check(&format!("t{n}")).unwrap();
        }
        // Nothing idle yet: the sweep kept all it found and waits for twice as many.
        let next = r.buckets.lock().unwrap().1;
        assert_eq!(next, 2 * (SWEEP_FROM + 1));
    }

    #[test]
    fn failed_authentications_are_limited_per_address() {
        let f = AuthFailures::new(3, Duration::from_secs(60));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let b_same_64: IpAddr = "2001:db8::ffff".parse().unwrap();
        for _ in 0..3 {
            f.check(a).unwrap();
            f.failed(a);
            f.failed(b);
        }
        let e = f.check(a).unwrap_err();
        assert_eq!((e.status.as_u16(), e.message_id), (429, "POL2005"));
        assert!(f.check(b_same_64).is_err(), "IPv6 is counted per /64");
        f.check("192.0.2.2".parse().unwrap()).unwrap();
        let off = AuthFailures::new(0, Duration::from_secs(60));
        off.failed(a);
        off.check(a).unwrap();
    }
}
