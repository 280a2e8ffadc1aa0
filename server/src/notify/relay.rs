//! Callback attempts carried by standbys (issue 14 item 3): a second machine adds delivery
//! capacity, not only availability.
//!
//! The leader still decides everything about a notification: which subscription gets it, its
//! order (one attempt in flight per subscription), its signature, its retries, when it is given
//! up, when a subscription is disabled. Only the *attempt* — resolving the callback's host,
//! checking it against the callback policy, opening (or reusing) the connection, TLS, writing
//! the POST and reading the answer — is handed to a standby, as one frame on a connection that
//! carries every attempt. What that saves the leader depends on the receivers (BENCHMARKS.md,
//! "Delivery by the standbys"): about half its CPU per message when each attempt needs a new
//! connection and a TLS handshake, 0–17 % when receivers keep their connections alive (a
//! frame then costs about what the exchange did). Each standby dials the leader ([`PATH`],
//! upgraded with the cluster key, `cluster::carry_deliveries`) and carries the attempts the
//! leader sends it ([`carry`]); the leader spreads attempts over the standbys connected
//! ([`Relays::pick`]: by callback origin, so each standby's kept-alive connections to an
//! endpoint are reused) and makes them itself while none is.
//!
//! **Invariant: a notification's order and fate are decided where they were.** A carried
//! attempt is one `await` in the subscription's own delivery task (`notify::attempt`), so
//! order per subscription, backoff, budgets and disabling are untouched by who carried it.
//!
//! **Invariant: an attempt whose carrier is lost is made again, by the leader.** A standby
//! that closes its connection, or says nothing for [`SILENT_FOR`] (each side sends a beat
//! after [`BEAT_EVERY`] of silence), is dropped; every attempt it held is made again at once
//! by the leader itself: at least once, same `webhook-id`, so a receiver may see a
//! notification twice when a standby dies after sending it, as after a leader's crash. What a
//! standby still has under way when its connection ends is aborted there, so the leader's
//! retry does not race it (a standby frozen past [`SILENT_FOR`] that runs again before it
//! notices may still finish one: the one case where it could arrive after its successor).
//!
//! An attempt the leader drops (the subscription deleted, its backlog disabled while the
//! attempt waited) is cancelled on the standby too ([`Head::Cancel`]). Each attempt carries
//! the leader's callback policy, and the standby applies the stricter of it and its own, so a
//! standby configured more loosely never reaches what the leader would refuse. A leader that
//! stops gracefully hands no new attempt to its standbys, waits for the ones they hold and
//! then closes their connections ([`Relays::release`]), so its stop is not held for the grace.
//!
//! API Boundary: the frames ([`Head`], a length-prefixed JSON head and the raw body) are
//! between instances of one cluster, behind the cluster key; nothing else speaks them. A
//! frame of a kind this build does not know is ignored ([`Head::Unknown`]), so two builds can
//! run side by side during a rolling upgrade.

use super::endpoints::{Answer, Endpoint, Endpoints, Failure, Origin};
use crate::callback_guard::CallbackPolicy;
use bytes::{BufMut as _, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::hash::{Hash as _, Hasher as _};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::{mpsc, oneshot};

/// The path a standby upgrades to carry attempts (not in the public API: the leader's request
/// gate answers it, only with the cluster key; without it, the router's `404`).
pub const PATH: &str = "/.netapi-chat/cluster/deliveries";

/// The `Upgrade` protocol token of that connection.
pub const PROTOCOL: &str = "netapi-chat-deliveries/1";

/// Largest frame either side sends or reads (length prefix included): a notification's body
/// is far smaller (request bodies are capped well below), so a longer one is a broken peer.
pub const MAX_FRAME: usize = 16 * 1024 * 1024;

/// Each side sends a beat after this long without sending anything.
pub const BEAT_EVERY: Duration = Duration::from_secs(1);

/// A side that hears nothing (not even a beat) for this long is taken for gone: a standby
/// frozen or cut off (a silent link) gives its attempts back within this time.
pub const SILENT_FOR: Duration = Duration::from_secs(5);

/// Most standbys a leader lets carry at once.
pub const MAX_CARRIERS: usize = 64;

static CARRIED: AtomicU64 = AtomicU64::new(0);
static TAKEN_BACK: AtomicU64 = AtomicU64::new(0);

static MADE: AtomicU64 = AtomicU64::new(0);

/// Attempts this instance made as a standby, for the leader.
pub fn made_count() -> u64 {
    MADE.load(Ordering::Relaxed)
}

/// Attempts standbys carried (answered, refused or unreachable) since start.
pub fn carried_count() -> u64 {
    CARRIED.load(Ordering::Relaxed)
}

/// Attempts whose standby was lost before it said how they went, made again by this instance.
pub fn taken_back_count() -> u64 {
    TAKEN_BACK.load(Ordering::Relaxed)
}

/// A frame's head; the body (a notification, as sent) follows it raw.
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
#[serde(tag = "t", rename_all = "snake_case")]
enum Head {
    /// Leader → standby: POST the body to `url` with `headers` (signature included).
    Post {
        seq: u64,
        url: String,
        headers: Vec<(String, String)>,
        timeout_ms: u64,
        /// The leader's callback policy (`allow_loopback`, `allow_private`): the standby
        /// applies the stricter of it and its own.
        allow: (bool, bool),
    },
    /// Leader → standby: the attempt `seq` is not wanted any more (its subscription was
    /// deleted or disabled meanwhile): abort it if it is still under way.
    Cancel { seq: u64 },
    /// Standby → leader: the callback answered `status`.
    Answered {
        seq: u64,
        status: u16,
        retry_after: Option<String>,
    },
    /// Standby → leader: the callback policy refused the host, or it does not resolve.
    Refused { seq: u64, why: String },
    /// Standby → leader: no connection, or no whole answer in time.
    Unreachable { seq: u64, why: String },
    /// Either way: still here.
    Beat,
    /// Standby → leader: stopping (SIGTERM); send nothing more. Leader → standby (in answer,
    /// or when the leader stops): nothing more comes after this frame.
    Leaving,
    /// A frame of a later version of this protocol: ignored, so instances of two builds can
    /// run side by side during a rolling upgrade.
    #[serde(other)]
    Unknown,
}

struct Frame {
    head: Head,
    body: Bytes,
}

impl Frame {
    fn beat() -> Frame {
        Frame {
            head: Head::Beat,
            body: Bytes::new(),
        }
    }
}

/// Appends `frame` to `out`: `u32` length of the rest, `u32` length of the head, the head
/// (JSON), the body.
fn encode(frame: &Frame, out: &mut BytesMut) -> std::io::Result<()> {
    let head = serde_json::to_vec(&frame.head)?;
    let rest = 4 + head.len() + frame.body.len();
    if rest + 4 > MAX_FRAME {
        return Err(invalid("frame too long"));
    }
    out.reserve(rest + 4);
    out.put_u32(u32::try_from(rest).map_err(|_| invalid("frame too long"))?);
    out.put_u32(u32::try_from(head.len()).map_err(|_| invalid("head too long"))?);
    out.put_slice(&head);
    out.put_slice(&frame.body);
    Ok(())
}

fn invalid(why: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_owned())
}

/// The next frame; `None` when the peer closed between two frames.
async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<Frame>> {
    let rest = match r.read_u32().await {
        Ok(n) => usize::try_from(n).map_err(|_| invalid("frame too long"))?,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    };
    if !(4..=MAX_FRAME - 4).contains(&rest) {
        return Err(invalid("frame length out of bounds"));
    }
    let mut buf = vec![0; rest];
    r.read_exact(&mut buf).await?;
    let head_len = buf
        .get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
        .and_then(|n| usize::try_from(n).ok())
        .filter(|n| *n <= rest - 4)
        .ok_or_else(|| invalid("head length out of bounds"))?;
    let head = serde_json::from_slice(&buf[4..4 + head_len])?;
    let body = Bytes::from(buf).slice(4 + head_len..);
    Ok(Some(Frame { head, body }))
}

/// Writes what `rx` brings, in batches (whatever waits is written together, one flush), and a
/// beat after [`BEAT_EVERY`] without anything. Ends when `rx` closes or the write fails.
async fn write_frames<W: AsyncWrite + Unpin>(
    mut w: W,
    mut rx: mpsc::UnboundedReceiver<Frame>,
) -> std::io::Result<()> {
    const BATCH: usize = 256 * 1024;
    let mut buf = BytesMut::new();
    loop {
        let first = match tokio::time::timeout(BEAT_EVERY, rx.recv()).await {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(()),
            Err(_) => Frame::beat(),
        };
        encode(&first, &mut buf)?;
        while buf.len() < BATCH
            && let Ok(f) = rx.try_recv()
        {
            encode(&f, &mut buf)?;
        }
        w.write_all(&buf).await?;
        w.flush().await?;
        buf.clear();
    }
}

/// The next frame within [`SILENT_FOR`]; an error for a closed or silent peer.
async fn next_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Frame> {
    match tokio::time::timeout(SILENT_FOR, read_frame(r)).await {
        Ok(Ok(Some(f))) => Ok(f),
        Ok(Ok(None)) => Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "closed",
        )),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("silent for {} s", SILENT_FOR.as_secs()),
        )),
    }
}

/// The frames read from `r`, by a task of its own, in order; the last item is the error that
/// ended the reading (the peer closed, went silent, or sent something unreadable).
///
/// Why a task: a frame read is not cancel-safe (bytes taken from the buffer are lost if its
/// future is dropped half-way), and both sides wait for frames in a `select!` beside other
/// events; a channel's `recv` is cancel-safe. (Reading in the `select!` itself lost half-read
/// frames whenever an attempt finished meanwhile, and the stream was misread from there: an
/// outside review reproduced it.) The task ends with the returned [`Reader`]'s drop.
fn read_in_task<R>(r: R) -> Reader
where
    R: AsyncRead + Send + Unpin + 'static,
{
    let (tx, frames) = mpsc::channel(64);
    let task = tokio::spawn(async move {
        let mut r = tokio::io::BufReader::new(r);
        loop {
            let read = next_frame(&mut r).await;
            let failed = read.is_err();
            if tx.send(read).await.is_err() || failed {
                return;
            }
        }
    });
    Reader { frames, task }
}

/// The frames a [`read_in_task`] task reads; aborts the task when dropped.
struct Reader {
    frames: mpsc::Receiver<std::io::Result<Frame>>,
    task: tokio::task::JoinHandle<()>,
}

impl Reader {
    /// The next frame, or why there is none (cancel-safe).
    async fn next(&mut self) -> std::io::Result<Frame> {
        match self.frames.recv().await {
            Some(read) => read,
            None => Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed",
            )),
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Outcome = Result<Answer, Failure>;

/// One standby carrying attempts, as the leader sees it.
pub(crate) struct Carrier {
    /// For the log: the standby's address.
    peer: String,
    tx: mpsc::UnboundedSender<Frame>,
    /// Attempts sent and not answered yet, by sequence number. Bounded by the attempts in
    /// flight, one per subscription; each removed when answered, given up on, or dropped.
    pending: Mutex<HashMap<u64, oneshot::Sender<Outcome>>>,
    seq: AtomicU64,
    /// Set once the connection ended; what is pending then is taken back.
    closed: AtomicBool,
    /// Given a permit when an attempt's wait ends (answered or dropped): a leader that stops
    /// waits for its carriers' pending attempts ([`Relays::release`]).
    settled: tokio::sync::Notify,
}

impl Carrier {
    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Outcome>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn resolve(&self, seq: u64, outcome: Outcome) {
        if let Some(tx) = self.pending().remove(&seq) {
            CARRIED.fetch_add(1, Ordering::Relaxed);
            let _ = tx.send(outcome);
        }
    }

    /// The connection ended: nothing more is sent to it, and every attempt it holds is
    /// answered "lost" (its sender dropped), so its task makes it elsewhere. Returns how many
    /// were taken back.
    fn close(&self) -> usize {
        self.closed.store(true, Ordering::SeqCst);
        let taken = std::mem::take(&mut *self.pending());
        TAKEN_BACK.fetch_add(taken.len() as u64, Ordering::Relaxed);
        taken.len()
    }

    /// POSTs through this standby ([`Relays::pick`]): `None` when it was lost before it said
    /// how the attempt went, or the body is too long for a frame (the caller then makes the
    /// attempt itself).
    ///
    /// No bound of its own on the wait: a standby that beats is alive, and waiting there (for
    /// a connection under its caps, then the attempt's `timeout`) is what the attempt would
    /// wait here; a silent one is dropped within [`SILENT_FOR`], and its attempts with it.
    pub(crate) async fn post(
        &self,
        ep: &Endpoint,
        policy: CallbackPolicy,
        headers: &http::HeaderMap,
        body: &Bytes,
        timeout: Duration,
    ) -> Option<Outcome> {
        if body.len() > MAX_FRAME / 2 {
            return None;
        }
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending().insert(seq, tx);
        let waiting = Waiting { carrier: self, seq };
        // Closed after the insert: `close` may have taken the map before it.
        if self.closed.load(Ordering::SeqCst) {
            return None;
        }
        let frame = Frame {
            head: Head::Post {
                seq,
                url: ep.url.to_string(),
                headers: headers
                    .iter()
                    .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                    .collect(),
                timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                allow: (policy.allow_loopback, policy.allow_private),
            },
            body: body.clone(),
        };
        if self.tx.send(frame).is_err() {
            return None;
        }
        // `Err`: lost with the standby, made again by the caller.
        let outcome = rx.await.ok();
        drop(waiting);
        outcome
    }
}

/// Removes an attempt's entry when its wait ends any way (answered, timed out, or the task
/// dropped the attempt): nothing pending outlives its attempt.
struct Waiting<'a> {
    carrier: &'a Carrier,
    seq: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        // Still pending: the attempt was dropped before its outcome came (or the carrier was
        // closed, and then nothing is read any more): the standby aborts it.
        if self.carrier.pending().remove(&self.seq).is_some() {
            let _ = self.carrier.tx.send(Frame {
                head: Head::Cancel { seq: self.seq },
                body: Bytes::new(),
            });
        }
        // A permit, not a wake-up: the frame loop takes it only once the leader is released
        // and waits for what is pending to empty.
        self.carrier.settled.notify_one();
    }
}

/// The standbys carrying this leader's attempts; cheap to clone. Empty on a lone server and
/// while no standby is connected: then every attempt is made here.
#[derive(Clone, Default)]
pub struct Relays {
    carriers: Arc<RwLock<Vec<Arc<Carrier>>>>,
    /// `carriers.len()`, written under its lock: read by every attempt, which then takes the
    /// lock only while a standby is connected.
    count: Arc<AtomicUsize>,
    /// Set when the leader stops ([`Relays::release`]): no attempt is handed over any more.
    released: Arc<AtomicBool>,
    /// Rung by [`Relays::release`]: each carrier's task then ends once nothing is pending.
    releasing: Arc<tokio::sync::Notify>,
    /// Set by [`Relays::let_go`]: each carrier's task ends now, pending attempts or not.
    let_go: Arc<AtomicBool>,
    /// Rung when a carrier is removed ([`Relays::gone`]).
    closed: Arc<tokio::sync::Notify>,
    /// Set by [`Relays::say_leaving`]: a standby that connects later is told at once.
    told: Arc<AtomicBool>,
}

/// How often [`Relays::gone`] looks at the count besides being rung.
const GONE_LOOK_EVERY: std::time::Duration = std::time::Duration::from_millis(10);

impl std::fmt::Debug for Relays {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relays")
            .field("carriers", &self.connected())
            .finish()
    }
}

impl Relays {
    /// How many standbys carry attempts now.
    pub fn connected(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Whether another standby may connect ([`MAX_CARRIERS`]).
    pub fn has_room(&self) -> bool {
        self.connected() < MAX_CARRIERS
    }

    /// The standby that carries attempts to `origin`, if any is connected (and this leader is
    /// not stopping): always the same one while the set is unchanged, so its kept-alive
    /// connections to that endpoint serve. No lock is taken while none is connected.
    pub(crate) fn pick(&self, origin: &Origin) -> Option<Arc<Carrier>> {
        if self.connected() == 0 || self.released.load(Ordering::SeqCst) {
            return None;
        }
        let carriers = self.carriers.read().ok()?;
        if carriers.is_empty() {
            return None;
        }
        let mut h = std::hash::DefaultHasher::new();
        origin.hash(&mut h);
        let i = usize::try_from(h.finish() % carriers.len() as u64).unwrap_or(0);
        carriers.get(i).cloned()
    }

    /// The leader stops: no attempt is handed over any more; the ones the standbys hold are
    /// answered as they finish (the stop waits for them, bounded by its deadline, as for its
    /// own). Each standby's connection closes once it has answered [`Relays::say_leaving`].
    pub fn release(&self) {
        self.released.store(true, Ordering::SeqCst);
        self.releasing.notify_waiters();
    }

    /// The leader's listener is about to drain (its attempts under way answered, or their
    /// wait over): `Leaving` tells each standby nothing more follows, and that it must stop
    /// reusing its kept-alive connections to this leader; [`Relays::gone`] waits for their
    /// answers. Said only now, not at [`Relays::release`], so that a standby holds its
    /// requests for the next leader (`cluster::Forwarder::holds`) for the drain's moment,
    /// not for the whole wait for slow receivers (up to half the grace, while this leader
    /// still serves them).
    pub fn say_leaving(&self) {
        self.told.store(true, Ordering::SeqCst);
        if let Ok(c) = self.carriers.read() {
            for carrier in c.iter() {
                let _ = carrier.tx.send(Frame {
                    head: Head::Leaving,
                    body: Bytes::new(),
                });
            }
        }
    }

    /// Resolves once no standby carries attempts any more, or at `deadline`. A stopping
    /// leader waits for this after [`Relays::say_leaving`], before its listener drains: each
    /// standby, told `Leaving`, stops reusing its kept-alive connections to this leader
    /// (`cluster::Forwarder::leader_leaving`) and then says `Leaving` itself, which removes
    /// it here; so the drain closes none of those connections idle just as the standby
    /// writes a request into it (a request with a body cut there cannot go again: the
    /// issue-14 re-run review's `503`s to writes at a rolling restart). A standby of an
    /// older version never answers: the wait ends at `deadline`.
    pub async fn gone(&self, deadline: tokio::time::Instant) {
        while self.connected() > 0 && tokio::time::Instant::now() < deadline {
            tokio::select! {
                () = self.closed.notified() => {}
                // A carrier removed between the count and the wait rang nobody.
                () = tokio::time::sleep(GONE_LOOK_EVERY) => {}
            }
        }
    }

    /// Ends every standby's connection now, with what it still holds (a stopping leader whose
    /// wait for attempts under way ran out, `Chat::let_go_of_standbys`): each such attempt
    /// resolves lost, and is not made again here (the delivery is stopping: it stays in the
    /// outbox for whoever leads next), and the standby aborts it. The connections then no
    /// longer hold the listener's drain, which a hand-over of the lead waits for.
    pub fn let_go(&self) {
        self.let_go.store(true, Ordering::SeqCst);
        self.releasing.notify_waiters();
    }

    /// New attempts may go to `carrier`.
    fn add(&self, carrier: Arc<Carrier>) {
        if let Ok(mut c) = self.carriers.write() {
            c.push(carrier);
            self.count.store(c.len(), Ordering::Relaxed);
        }
    }

    /// No new attempt goes to `carrier`.
    fn remove(&self, carrier: &Arc<Carrier>) {
        if let Ok(mut c) = self.carriers.write() {
            c.retain(|other| !Arc::ptr_eq(other, carrier));
            self.count.store(c.len(), Ordering::Relaxed);
        }
        self.closed.notify_waiters();
    }

    /// Carries attempts over `io` (a standby's upgraded connection, the cluster key checked)
    /// until it ends, in a task of its own.
    pub fn accept<S>(&self, io: S, peer: String)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        let carrier = Arc::new(Carrier {
            peer,
            tx,
            pending: Mutex::default(),
            seq: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            settled: tokio::sync::Notify::new(),
        });
        self.add(Arc::clone(&carrier));
        // Dialed after this leader said `Leaving`: told at once, like the others, so that it
        // answers too ([`Relays::gone`]).
        if self.told.load(Ordering::SeqCst) {
            let _ = carrier.tx.send(Frame {
                head: Head::Leaving,
                body: Bytes::new(),
            });
        }
        tracing::info!(
            standby = %carrier.peer,
            carriers = self.connected(),
            "a standby carries callback attempts"
        );
        let relays = self.clone();
        tokio::spawn(async move {
            let (r, w) = tokio::io::split(io);
            let mut frames = read_in_task(r);
            // Set when the standby said it is stopping: its connection closing then is the
            // end of a rolling restart, not a loss.
            let left = AtomicBool::new(false);
            let answers = async {
                loop {
                    // Released, it waits for the standby's `Leaving` too ([`Relays::gone`];
                    // `let_go` ends a wait for one that never comes).
                    if relays.let_go.load(Ordering::SeqCst)
                        || (relays.released.load(Ordering::SeqCst)
                            && carrier.pending().is_empty()
                            && left.load(Ordering::Relaxed))
                    {
                        return Ok(());
                    }
                    let frame = tokio::select! {
                        frame = frames.next() => frame?,
                        () = relays.releasing.notified() => continue,
                        // Once released, each attempt that ends may be the last pending.
                        () = carrier.settled.notified(), if relays.released.load(Ordering::SeqCst) => continue,
                    };
                    match frame.head {
                        Head::Answered {
                            seq,
                            status,
                            retry_after,
                        } => {
                            let status = http::StatusCode::from_u16(status)
                                .map_err(|_| invalid("not a status"))?;
                            let retry_after =
                                retry_after.and_then(|v| http::HeaderValue::try_from(v).ok());
                            carrier.resolve(
                                seq,
                                Ok(Answer {
                                    status,
                                    retry_after,
                                }),
                            );
                        }
                        Head::Refused { seq, why } => {
                            carrier.resolve(seq, Err(Failure::Refused(why)))
                        }
                        Head::Unreachable { seq, why } => {
                            carrier.resolve(seq, Err(Failure::Unreachable(why)));
                        }
                        Head::Beat | Head::Unknown => {}
                        Head::Leaving => {
                            // No new attempt goes to it; the ones it holds are answered as
                            // they finish, and those sent before this is read are made too
                            // (or, should it close first, taken back). After this leader's
                            // own `Leaving`, it is the standby's answer ([`Relays::gone`]).
                            relays.remove(&carrier);
                            left.store(true, Ordering::Relaxed);
                            let _ = carrier.tx.send(Frame {
                                head: Head::Leaving,
                                body: Bytes::new(),
                            });
                            match relays.told.load(Ordering::SeqCst) {
                                true => {
                                    tracing::info!(standby = %carrier.peer, "a standby has seen this leader stop")
                                }
                                false => {
                                    tracing::info!(standby = %carrier.peer, "a standby is stopping: it makes no new attempts")
                                }
                            }
                        }
                        Head::Post { .. } | Head::Cancel { .. } => {
                            return Err(invalid("a standby sent an attempt"));
                        }
                    }
                }
            };
            let why: std::io::Result<()> = tokio::select! {
                r = write_frames(w, rx) => r,
                r = answers => r,
            };
            relays.remove(&carrier);
            let taken = carrier.close();
            match why {
                // Released: this leader is stopping.
                Ok(()) => {
                    tracing::info!(standby = %carrier.peer, "a standby's attempts are answered; its connection is closed")
                }
                Err(_) if taken == 0 && left.load(Ordering::Relaxed) => tracing::info!(
                    standby = %carrier.peer,
                    carriers = relays.connected(),
                    "a standby that is stopping answered its attempts and closed its connection"
                ),
                Err(e) => tracing::warn!(
                    standby = %carrier.peer,
                    why = %e,
                    carriers = relays.connected(),
                    taken_back = taken,
                    "a standby stopped carrying callback attempts; this instance makes them"
                ),
            }
        });
    }
}

/// What a standby makes attempts with: its own connections and the callback policy (the
/// same settings as the leader's, read from its own environment).
pub struct Carry {
    /// Kept-alive connections per callback endpoint, under this instance's caps.
    pub endpoints: Endpoints,
    /// Which callback addresses may be reached, checked after DNS here as on the leader.
    pub callbacks: CallbackPolicy,
}

/// A standby's side: makes the attempts the leader sends over `io` and answers how each
/// went, until the connection ends or goes silent ([`SILENT_FOR`]) (attempts under way then
/// are aborted: the leader makes them again), or until `leave` turns `true` (a graceful stop):
/// then it tells the leader, makes what the leader sent before its answer, says how each went,
/// and returns `Ok` once all are answered, so a rolling restart hands nothing back to be sent
/// twice. A leader that stops sends the same answer unasked, and is answered the same way:
/// `on_leaving` is called first, then the standby says `Leaving` too (the leader waits for that
/// before its listener drains: [`Relays::gone`]).
pub async fn carry<S>(
    io: S,
    with: Arc<Carry>,
    mut leave: tokio::sync::watch::Receiver<bool>,
    on_leaving: impl Fn(),
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (r, w) = tokio::io::split(io);
    let mut frames = read_in_task(r);
    let (tx, rx) = mpsc::unbounded_channel();
    let mut writer = tokio::spawn(write_frames(w, rx));
    let mut under_way = tokio::task::JoinSet::new();
    // The attempts under way, by sequence number, to abort one the leader cancels.
    let mut aborts: HashMap<u64, tokio::task::AbortHandle> = HashMap::new();
    let mut leaving = false;
    // This standby said `Leaving` (asked to stop, or answering the leader's).
    let mut left = false;
    // The leader said nothing more comes: done once what is under way is answered (frames
    // are still read meanwhile: a `Cancel`, or the connection ending, which aborts the rest).
    let mut draining = false;
    let attempts = async {
        loop {
            if draining && under_way.is_empty() {
                return Ok(());
            }
            let frame = tokio::select! {
                frame = frames.next() => frame?,
                asked = leave.wait_for(|l| *l), if !leaving => {
                    leaving = true;
                    if asked.is_ok() && !std::mem::replace(&mut left, true) {
                        let _ = tx.send(Frame { head: Head::Leaving, body: Bytes::new() });
                    }
                    continue;
                }
                // Finished attempts are reaped as they go (the set holds those under way).
                Some(done) = under_way.join_next(), if !under_way.is_empty() => {
                    match done {
                        Ok(seq) => {
                            aborts.remove(&seq);
                        }
                        // A task that panicked said nothing: the leader, which waits for
                        // every outcome, is told it failed (one cancelled is not waited for).
                        Err(e) if e.is_panic() => {
                            let seq = aborts.iter().find(|(_, h)| h.id() == e.id()).map(|(s, _)| *s);
                            if let Some(seq) = seq {
                                aborts.remove(&seq);
                                let why = "the attempt failed on the standby".to_owned();
                                let _ = tx.send(Frame { head: Head::Unreachable { seq, why }, body: Bytes::new() });
                            }
                        }
                        Err(_) => {}
                    }
                    continue;
                }
            };
            let (seq, url, headers, timeout_ms, allow) = match frame.head {
                Head::Post {
                    seq,
                    url,
                    headers,
                    timeout_ms,
                    allow,
                } => (seq, url, headers, timeout_ms, allow),
                Head::Cancel { seq } => {
                    if let Some(a) = aborts.remove(&seq) {
                        a.abort();
                    }
                    continue;
                }
                Head::Beat | Head::Unknown => continue,
                // The leader sends nothing after this (an answer to ours, or it stops):
                // finish what is under way. A leader that stops is answered in kind once
                // `leaving` has run, so that it knows this standby has seen its stop.
                Head::Leaving => {
                    // Only a leader that stops is left for the next: one answering this
                    // standby's own `Leaving` (it stops itself) still serves, and what the
                    // standby forwards while it drains goes to it (before, held 3 s each:
                    // the code review).
                    if !left {
                        on_leaving();
                    }
                    if !std::mem::replace(&mut left, true) {
                        let _ = tx.send(Frame {
                            head: Head::Leaving,
                            body: Bytes::new(),
                        });
                    }
                    draining = true;
                    continue;
                }
                Head::Answered { .. } | Head::Refused { .. } | Head::Unreachable { .. } => {
                    return Err(invalid("the leader sent an outcome"));
                }
            };
            let policy = stricter(with.callbacks, allow);
            let (with, tx) = (Arc::clone(&with), tx.clone());
            let handle = under_way.spawn(async move {
                let made = make(&with, policy, &url, &headers, frame.body, timeout_ms).await;
                MADE.fetch_add(1, Ordering::Relaxed);
                let head = match made {
                    Ok(a) => Head::Answered {
                        seq,
                        status: a.status.as_u16(),
                        retry_after: a
                            .retry_after
                            .and_then(|v| v.to_str().ok().map(str::to_owned)),
                    },
                    Err(Failure::Refused(why)) => Head::Refused { seq, why },
                    Err(Failure::Unreachable(why)) => Head::Unreachable { seq, why },
                };
                let _ = tx.send(Frame {
                    head,
                    body: Bytes::new(),
                });
                seq
            });
            aborts.insert(seq, handle);
        }
    };
    let ended = tokio::select! {
        r = &mut writer => return r.unwrap_or_else(|e| Err(std::io::Error::other(e))),
        r = attempts => r,
    };
    if ended.is_err() {
        writer.abort();
        // What is still under way is dropped with the set (aborted): the leader takes it back
        // and makes it again, and an attempt finished here too would only reach the receiver
        // twice.
        return ended;
    }
    // Left: every outcome is queued; the writer writes them and ends once the queue closes.
    drop(tx);
    writer
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

/// The stricter of a standby's own callback policy and its leader's (`allow_loopback`,
/// `allow_private`), which the standby applies to what it carries: one set more loosely than
/// its leader never reaches what the leader would refuse.
fn stricter(own: CallbackPolicy, (loopback, private): (bool, bool)) -> CallbackPolicy {
    CallbackPolicy {
        allow_loopback: own.allow_loopback && loopback,
        allow_private: own.allow_private && private,
    }
}

/// One attempt, as the leader would make it (`Endpoints::post`).
async fn make(
    with: &Carry,
    policy: CallbackPolicy,
    url: &str,
    headers: &[(String, String)],
    body: Bytes,
    timeout_ms: u64,
) -> Result<Answer, Failure> {
    let ep = Endpoint::parse(url).map_err(Failure::Refused)?;
    let mut map = http::HeaderMap::new();
    for (name, value) in headers {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::try_from(name.as_str()),
            http::HeaderValue::try_from(value.as_str()),
        ) {
            map.append(n, v);
        }
    }
    with.endpoints
        .post(&ep, &policy, map, body, Duration::from_millis(timeout_ms))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames read back as written, several in one buffer; a length out of bounds is refused
    /// before anything is allocated for it; a clean end between frames is `None`.
    #[tokio::test]
    async fn frames_read_back_as_written_and_bad_lengths_are_refused() {
        let mut buf = BytesMut::new();
        let post = Frame {
            head: Head::Post {
                seq: 7,
                url: "http://127.0.0.1:10/cb".into(),
                headers: vec![("webhook-id".into(), "msg_7".into())],
                timeout_ms: 10_000,
                allow: (true, false),
            },
            body: Bytes::from_static(b"{\"x\":1}"),
        };
        encode(&post, &mut buf).unwrap();
        encode(&Frame::beat(), &mut buf).unwrap();
        let mut r = &buf[..];
        let first = read_frame(&mut r).await.unwrap().unwrap();
        assert_eq!(first.head, post.head);
        assert_eq!(first.body, post.body);
        assert_eq!(read_frame(&mut r).await.unwrap().unwrap().head, Head::Beat);
        assert!(read_frame(&mut r).await.unwrap().is_none());

        let huge = (MAX_FRAME as u32).to_be_bytes();
        assert!(read_frame(&mut &huge[..]).await.is_err());
        let mut bad_head = BytesMut::new();
        bad_head.put_u32(8);
        bad_head.put_u32(99);
        bad_head.put_u32(0);
        assert!(read_frame(&mut &bad_head[..]).await.is_err());
        let too_long = Frame {
            head: Head::Beat,
            body: Bytes::from(vec![0; MAX_FRAME]),
        };
        assert!(encode(&too_long, &mut BytesMut::new()).is_err());
    }

    /// A frame that arrives in pieces while the wait for it is given up (another event won
    /// the `select!`) is still read whole: the reading goes on in its own task.
    #[tokio::test]
    async fn a_frame_read_in_pieces_survives_the_wait_being_dropped() {
        use tokio::io::AsyncWriteExt as _;
        let (mut near, far) = tokio::io::duplex(1024);
        let mut reader = read_in_task(far);
        let mut buf = BytesMut::new();
        let frame = Frame {
            head: Head::Cancel { seq: 42 },
            body: Bytes::from_static(b"some body bytes"),
        };
        encode(&frame, &mut buf).unwrap();
        let (first, rest) = buf.split_at(7);
        near.write_all(first).await.unwrap();
        for _ in 0..3 {
            tokio::select! {
                _ = reader.next() => panic!("half a frame is not a frame"),
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
        near.write_all(rest).await.unwrap();
        let read = reader.next().await.unwrap();
        assert_eq!(read.head, frame.head);
        assert_eq!(read.body, frame.body);
    }

    /// A standby applies whichever of its own policy and its leader's allows less.
    #[test]
    fn the_stricter_policy_of_standby_and_leader_applies() {
        let loose = CallbackPolicy {
            allow_loopback: true,
            allow_private: true,
        };
        assert_eq!(stricter(loose, (false, false)), CallbackPolicy::default());
        assert_eq!(
            stricter(loose, (true, false)),
            CallbackPolicy::allowing_loopback()
        );
        assert_eq!(
            stricter(CallbackPolicy::default(), (true, true)),
            CallbackPolicy::default()
        );
        assert_eq!(stricter(loose, (true, true)), loose);
    }

    /// Attempts go to one standby per origin while the set is unchanged, and none is picked
    /// while none is connected; none once released (the leader stops).
    #[test]
    fn one_standby_per_origin() {
        let relays = Relays::default();
        let ep = Endpoint::parse("http://a.example/cb").unwrap();
        assert!(relays.pick(&ep.origin).is_none());
        for i in 0..3 {
            let (tx, _rx) = mpsc::unbounded_channel();
            relays.add(Arc::new(Carrier {
                peer: format!("s{i}"),
                tx,
                pending: Mutex::default(),
                seq: AtomicU64::new(0),
                closed: AtomicBool::new(false),
                settled: tokio::sync::Notify::new(),
            }));
        }
        let first = relays.pick(&ep.origin).unwrap().peer.clone();
        for _ in 0..10 {
            assert_eq!(relays.pick(&ep.origin).unwrap().peer, first);
        }
        relays.release();
        assert!(relays.pick(&ep.origin).is_none());
    }
}
