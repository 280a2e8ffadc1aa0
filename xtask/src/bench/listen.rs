//! Callback listeners (one real HTTP server per user, `netapi_chat_webhooks::listen`) and the collector that matches each
//! received message to its send by the sequence number carried in the message text.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The marker every benchmark message text starts with: `bench#STEP#SEQ#`.
pub const MARKER: &[u8] = b"bench#";

/// The text of message `seq` of step `step`, padded with `x` to `len` characters.
pub fn message_text(step: u32, seq: u64, len: usize) -> String {
    let mut t = format!("bench#{step}#{seq}#");
    while t.len() < len {
        t.push('x');
    }
    t
}

/// When message `seq` of a step that starts at `start` with `interval_ns` between sends is
/// meant to be sent (the load generator and the collector use this one formula).
pub fn intended(start: Instant, seq: u64, interval_ns: f64) -> Instant {
    start + Duration::from_nanos((seq as f64 * interval_ns).round() as u64)
}

/// Finds `bench#STEP#SEQ#` in `body`.
pub fn parse_marker(body: &[u8]) -> Option<(u32, u64)> {
    let at = body.windows(MARKER.len()).position(|w| w == MARKER)?;
    let rest = &body[at + MARKER.len()..];
    let mut parts = rest.splitn(3, |b| *b == b'#');
    let step = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let seq = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    parts.next()?;
    Some((step, seq))
}

#[derive(Default)]
struct Track {
    step: u32,
    start: Option<Instant>,
    interval_ns: f64,
    samples: Vec<u64>,
    stray: u64,
}

/// Receipt latencies of the current step: intended send time of the message → arrival.
#[derive(Default)]
pub struct Collector {
    track: Mutex<Track>,
}

impl Collector {
    fn lock(&self) -> MutexGuard<'_, Track> {
        self.track.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts step `step`: message `seq` was meant to be sent at `start + seq * interval_ns`.
    pub fn begin(&self, step: u32, start: Instant, interval_ns: f64) {
        let mut t = self.lock();
        *t = Track {
            step,
            start: Some(start),
            interval_ns,
            samples: Vec::new(),
            stray: 0,
        };
    }

    /// Records a received body (or message text) that arrived at `at`; bodies without a
    /// marker (other notifications) are ignored, markers of another step counted as stray.
    pub fn record(&self, body: &[u8], at: Instant) {
        let Some((step, seq)) = parse_marker(body) else {
            return;
        };
        let mut t = self.lock();
        match t.start {
            Some(start) if step == t.step => {
                let ns = at
                    .saturating_duration_since(intended(start, seq, t.interval_ns))
                    .as_nanos();
                t.samples.push(u64::try_from(ns).unwrap_or(u64::MAX));
            }
            _ => t.stray += 1,
        }
    }

    /// How many matched receipts the current step has.
    pub fn count(&self) -> usize {
        self.lock().samples.len()
    }

    /// Takes the current step's latencies (ns) and the count of stray receipts.
    pub fn take(&self) -> (Vec<u64>, u64) {
        let mut t = self.lock();
        (std::mem::take(&mut t.samples), t.stray)
    }
}

/// A callback listener on a free loopback port (the project's one listener,
/// `netapi_chat_webhooks::listen`); answers 204 to every POST and hands each body to the
/// collector, keeping nothing. Stopped on drop.
pub struct Listener {
    /// Its notifyURL.
    pub url: String,
    _listener: netapi_chat_webhooks::listen::Listener,
}

impl Listener {
    /// Starts a listener that hands every body to `collector`.
    pub async fn start(collector: Arc<Collector>) -> anyhow::Result<Listener> {
        use netapi_chat_webhooks::listen::{self, Options, Received};
        let listener = listen::Listener::start(
            "127.0.0.1:0",
            Options {
                keep: 0,
                on_receive: Some(Arc::new(move |r: &Received| {
                    collector.record(r.body.as_bytes(), r.at)
                })),
                ..Options::default()
            },
        )
        .await?;
        Ok(Listener {
            url: listener.url(),
            _listener: listener,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_round_trip() {
        let t = message_text(3, 12345, 120);
        assert_eq!(t.len(), 120);
        let json = format!("{{\"chatMessage\":{{\"text\":\"{t}\"}}}}");
        assert_eq!(parse_marker(json.as_bytes()), Some((3, 12345)));
        assert_eq!(parse_marker(b"no marker here"), None);
        assert_eq!(parse_marker(b"bench#1#2"), None);
    }
}
