//! The tests' callback receiver: the project's one listener (`netapi_chat_webhooks::listen`,
//! also `netapi-chat client listen`, `cargo xtask listen` and the bench's), wrapped with what
//! the suites want from it: a wait that fails the test after 10 s, and readers that panic
//! with the body when a notification is not what the test expected (XML checked against the
//! XSD too). The test controls (answer another status, go down, list what was refused) are
//! the shared listener's own, so a suite tests the receiver users run.
//!
//! The listener here checks no signature (the suites that check signatures verify them
//! themselves, from [`Received`]'s headers) and keeps every notification (at most
//! [`netapi_chat_webhooks::listen::DEFAULT_KEEP`], far more than a test sends).

use netapi_chat_runtime::Format;
use netapi_chat_runtime::wire::Document;
use netapi_chat_webhooks::listen;
use std::time::Duration;

use super::http::{decode_body, format_of};

/// Longest [`Listener::wait_for`] waits before failing the test.
const PATIENCE: Duration = Duration::from_secs(10);

/// One notification as the callback listener received it: the shared listener's record
/// (`id`, `timestamp`, `signature`, `content_type`, `body`, … through `Deref`), read the
/// way a test wants.
#[derive(Clone, Debug)]
pub struct Received(listen::Received);

impl std::ops::Deref for Received {
    type Target = listen::Received;

    fn deref(&self) -> &listen::Received {
        &self.0
    }
}

impl Received {
    /// JSON or XML, by Content-Type.
    pub fn format(&self) -> Format {
        format_of(&self.content_type)
    }

    /// The root element name (XML) or single key (JSON); panics when there is none.
    pub fn kind(&self) -> String {
        self.0.kind().unwrap_or_else(|| {
            panic!(
                "a notification is one JSON object of one key or an XML document ({}): {}",
                self.content_type, self.body
            )
        })
    }

    /// Decodes the body as `T`, validating XML against the XSD first.
    pub fn decode<T: Document>(&self) -> T {
        decode_body(self.format(), &self.body, "notification")
    }

    /// A message notification as (`webhook-id`, message text): what the delivery suites
    /// compare (order, ids kept across retries and restarts). Panics when it holds no message.
    pub fn id_and_text(&self) -> (String, String) {
        let text = self
            .decode::<netapi_chat_api::MessageNotification>()
            .chat_message
            .expect("a message")
            .text;
        (self.id.clone(), text)
    }
}

/// A real HTTP callback receiver on a loopback port: records every POST it accepts and
/// answers 204 (or what [`Listener::set_status`] says). Stopped on drop.
pub struct Listener {
    /// Its notifyURL.
    pub url: String,
    inner: listen::Listener,
}

impl Listener {
    /// Starts a listener on a free port.
    pub async fn start() -> Listener {
        Listener::start_on("127.0.0.1:0").await
    }

    /// Starts a listener on a given address (e.g. the notifyURL a stored fixture holds).
    pub async fn start_on(addr: &str) -> Listener {
        let inner = listen::Listener::start(addr, listen::Options::default())
            .await
            .unwrap_or_else(|e| panic!("bind listener on {addr}: {e}"));
        Listener {
            url: inner.url(),
            inner,
        }
    }

    /// Takes the listener down (new connections are closed at once, requests on open ones
    /// without an answer: what the server sees of a receiver that is gone) or back up.
    pub fn set_down(&self, down: bool) {
        self.inner.set_down(down);
    }

    /// `webhook-id`s of the notifications refused (a non-2xx answer, or a request closed
    /// while down), in order.
    pub fn refused_ids(&self) -> Vec<String> {
        self.inner.refused_ids()
    }

    /// Makes the listener answer `code` (a non-2xx answer is not recorded).
    pub fn set_status(&self, code: u16) {
        self.inner.set_status(code);
    }

    /// Waits (up to 10 s) until at least `n` notifications arrived; returns all of them.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        match self.inner.wait_for(n, PATIENCE).await {
            Ok(got) => got.into_iter().map(Received).collect(),
            Err(got) => panic!(
                "expected {n} notifications at {}, got {}: {got:#?}",
                self.url,
                got.len()
            ),
        }
    }

    /// Waits for the `n`-th notification (1-based) and returns it.
    pub async fn nth(&self, n: usize) -> Received {
        self.wait_for(n).await[n - 1].clone()
    }

    /// Everything received so far.
    pub fn all(&self) -> Vec<Received> {
        self.inner.received().into_iter().map(Received).collect()
    }

    /// Asserts that nothing more than `n` notifications arrives within `wait`.
    pub async fn assert_count_stays(&self, n: usize, wait: Duration) {
        tokio::time::sleep(wait).await;
        let got = self.all();
        assert_eq!(
            got.len(),
            n,
            "unexpected notifications at {}: {got:#?}",
            self.url
        );
    }
}
