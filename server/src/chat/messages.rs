//! Seed 7.1.9 (send) and 7.1.10 (confirm delivery), and the reads of messages and of their
//! delivery status.
//!
//! Messages live in the store, not in memory (issue 12): memory does not grow with
//! messages sent. A read checks the session under the state lock (it is in memory), lets
//! go of the lock, then reads the message(s) through the store thread, so that nobody
//! waits for another user's read. The store queue is FIFO, so a read sees every change
//! submitted before it: a message is readable as soon as its send was answered.
//!
//! Rules (plain functions, tested below): [`check_text`] and [`send`] for a send,
//! [`confirmable`] and [`confirm`] for a confirmation.

use super::page::{self, PageRequest};
use super::records;
use super::refused::Refused;
use super::state::{Message, Session, status_rank};
use super::views;
use super::{Change, Chat, MESSAGE_LOCKS, Outbox, durable, missing, read_failed, storage_failed};
use crate::store::{Backend, NotDone, StoreError, now_ms};
use crate::urls::Urls;
use netapi_chat_api::{
    ChatMessage, ChatMessageList, Created, MessageStatus, ParticipantStatus, ResourceReference,
};
use netapi_chat_runtime::ApiError;

impl Chat {
    /// Runs a read on the store thread. Never called with the state lock held.
    pub(super) async fn read<T, F>(&self, read: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn Backend) -> Result<T, StoreError> + Send + 'static,
    {
        let Some(answer) = super::bounded(self.store.read(read)).await else {
            return Err(super::storage_unavailable());
        };
        match answer {
            Ok(Ok(t)) => Ok(t),
            Ok(Err(NotDone::Unconfirmed)) => Err(super::storage_unavailable()),
            // Logged once, by the store, with what to do.
            Ok(Err(NotDone::Damaged(_))) => Err(super::read_damaged()),
            Ok(Err(NotDone::Failed(e))) => {
                tracing::error!(error = e, "reading the store failed");
                Err(read_failed())
            }
            // The database is unreachable: the read was refused (the server reconnects).
            Err(_) if self.store.is_down() => Err(super::storage_unavailable()),
            // The store stopped (fail-stop after a failed commit, or shutdown).
            Err(_) => Err(storage_failed()),
        }
    }

    /// Message `mid` of session `sid`, from the store.
    async fn stored_message(&self, sid: &str, mid: &str) -> Result<Option<Message>, ApiError> {
        let (sid, mid) = (sid.to_owned(), mid.to_owned());
        self.read(move |b| {
            b.message(&sid, &mid)?
                .map(|v| decode_stored_message(&sid, &mid, &v))
                .transpose()
        })
        .await
    }

    /// The lock that orders the read-modify-write steps on the messages of `sid` (see
    /// [`Chat::message_locks`]).
    pub(super) fn message_lock(&self, sid: &str) -> &tokio::sync::Mutex<()> {
        &self.message_locks[super::stripe(sid, MESSAGE_LOCKS)]
    }

    /// Seed 7.1.9: send a message to the other connected participants.
    pub async fn send_message(
        &self,
        user: &str,
        sid: &str,
        body: ChatMessage,
    ) -> Result<Created<ResourceReference>, ApiError> {
        self.post_message(user, sid, body, Urls::message).await
    }

    /// The one send of a message, whichever face asked: `url` is the face's URL for the new
    /// (or replayed) message (`urls`, user, session, message), its answer and `Location`.
    pub(super) async fn post_message(
        &self,
        user: &str,
        sid: &str,
        body: ChatMessage,
        url: impl Fn(&Urls, &str, &str, &str) -> String,
    ) -> Result<Created<ResourceReference>, ApiError> {
        super::within_answer(self.post_message_waiting(user, sid, body, url)).await
    }

    /// A message's body as every send takes it ([`Chat::post_message`], and the first message
    /// of an ad hoc chat, `oma2012`): its `clientCorrelator` normalized, its text checked.
    pub(super) fn prepared_message(&self, mut body: ChatMessage) -> Result<ChatMessage, ApiError> {
        body.client_correlator = super::correlator(body.client_correlator);
        check_text(&body.text, self.settings.limits.text_chars)
            .and_then(|()| check_reports(&body.report_request))
            .map_err(|r| r.into_api(String::new))?;
        Ok(body)
    }

    /// The send of a [`Chat::prepared_message`] under a lock of the state the caller holds:
    /// the read side ([`Chat::post_message`]), or the write side when the session is opened
    /// in the same step (the first message of an ad hoc chat: nothing can close the chat
    /// between its opening and its first message). The rule, then the message and its
    /// notifications handed to the store in this session's order (see
    /// `Chat::session_order`); the message's URL (`url`) and the commit to wait for.
    pub(super) fn send_under(
        &self,
        state: &super::state::State,
        user: &str,
        sid: &str,
        body: ChatMessage,
        url: impl Fn(&Urls, &str, &str, &str) -> String,
    ) -> Result<(String, super::Committed), ApiError> {
        let urls = &self.urls;
        let s = self.visible(state, user, sid)?;
        let order = self.session_order(sid);
        let (id, seq) = state.new_id("msg");
        let (message, outbox) = send(
            urls,
            s,
            user,
            Draft {
                id: id.clone(),
                seq,
                date_time: crate::time::now_rfc3339(),
            },
            body,
        )
        .map_err(|r| r.into_api(String::new))?;
        // What it stores counts against its sender's budget (a replay stores nothing and
        // does not come here).
        self.sent_bytes
            .take(
                user,
                super::sent_bytes::cost(
                    &message.text,
                    message.recipients.iter().map(|(r, _)| r.as_str()),
                ),
                std::time::Instant::now(),
            )
            .map_err(|budget| {
                Refused::TooMany {
                    what: "bytes of messages you sent that the server keeps (each message's \
                           text and its recipients' addresses, plus 256 bytes and 32 a \
                           recipient; they free up over the retention period)",
                    limit: usize::try_from(budget).unwrap_or(usize::MAX),
                }
                .into_api(String::new)
            })?;
        let mut change = Change::default();
        change.put_message(sid, &message, Some(now_ms()));
        // A session is idle from its last message or decision on (`sessions::idle`).
        if let Some(clock) = state.active.get(sid) {
            clock
                .at
                .fetch_max(now_ms(), std::sync::atomic::Ordering::Relaxed);
        }
        self.notify(state, &mut change, outbox);
        Ok((
            url(urls, user, sid, &id),
            self.submit_in_order(state, &order, sid, change),
        ))
    }

    /// [`Chat::post_message`], however long the store takes.
    async fn post_message_waiting(
        &self,
        user: &str,
        sid: &str,
        body: ChatMessage,
        url: impl Fn(&Urls, &str, &str, &str) -> String,
    ) -> Result<Created<ResourceReference>, ApiError> {
        let body = self.prepared_message(body)?;
        // A resend with the same clientCorrelator answers the first message. The lookup and
        // the send it may lead to hold the session's message lock, so two concurrent sends
        // with one correlator cannot both miss and both create a message.
        let _ordered = match &body.client_correlator {
            Some(_) => Some(self.message_lock(sid).lock().await),
            None => None,
        };
        let replay = match &body.client_correlator {
            Some(c) => {
                self.visible(&self.read_state(), user, sid)?;
                let (s, u, c) = (sid.to_owned(), user.to_owned(), c.clone());
                let first = self
                    .read(move |b| match b.message_by_correlator(&s, &u, &c)? {
                        Some(mid) => b
                            .message(&s, &mid)?
                            .map(|v| decode_stored_message(&s, &mid, &v))
                            .transpose(),
                        None => Ok(None),
                    })
                    .await?;
                match first {
                    Some(m) => {
                        same_message(&m, &body).map_err(|r| r.into_api(String::new))?;
                        Some(m.id)
                    }
                    None => None,
                }
            }
            None => None,
        };
        let (url, rx) = {
            // A send changes no map of the state: the read lock.
            let state = self.read_state();
            if let Some(mid) = replay {
                self.visible(&state, user, sid)?;
                return Ok(views::created(url(&self.urls, user, sid, &mid)));
            }
            self.send_under(&state, user, sid, body, url)?
        };
        durable(rx).await?;
        Ok(views::created(url))
    }

    /// Message `mid` as `user` may read it: in a session the user sees, sent or received by
    /// the user; 404 otherwise.
    async fn readable(&self, user: &str, sid: &str, mid: &str) -> Result<Message, ApiError> {
        self.visible(&self.read_state(), user, sid)?;
        self.stored_message(sid, mid)
            .await?
            .filter(|m| m.sender == user || m.recipients.iter().any(|(r, _)| r == user))
            .ok_or_else(|| missing(&self.urls.message(user, sid, mid)))
    }

    /// One page of the messages the user sent or received in the session, oldest first.
    /// The store walks the session's messages in `seq` order from the cursor (an index range,
    /// not the whole session), on the store thread, until it has the page's messages that the
    /// user may read plus one, to know whether more follow; only those become views. The walk
    /// is bounded by the page ([`readable_page`]): where it stopped before the end, the page
    /// (short, even empty) links the next one from there.
    pub async fn list_messages(
        &self,
        user: &str,
        sid: &str,
        req: PageRequest,
    ) -> Result<ChatMessageList, ApiError> {
        self.visible(&self.read_state(), user, sid)?;
        let (s, u) = (sid.to_owned(), user.to_owned());
        let walked = self
            .read(move |b| readable_page(b, &s, &u, req.after, req.limit.saturating_add(1)))
            .await?;
        let mut p = page::within(
            page::page(walked.found.into_iter().map(|m| (m.seq, m)), req),
            PAGE_STORED_BYTES,
            |m| m.text.len(),
            |m| m.seq,
        );
        if p.next.is_none() {
            p.next = walked.stopped_at;
        }
        let resource_url = self.urls.messages(user, sid);
        Ok(ChatMessageList {
            chat_message: p
                .items
                .iter()
                .map(|m| views::message(&self.urls, user, sid, m))
                .collect(),
            link: page::next_links(&resource_url, req, p.next),
            resource_url,
        })
    }

    /// One message.
    pub async fn get_message(
        &self,
        user: &str,
        sid: &str,
        mid: &str,
    ) -> Result<ChatMessage, ApiError> {
        let m = self.readable(user, sid, mid).await?;
        Ok(views::message(&self.urls, user, sid, &m))
    }

    /// A message's delivery status as the user sees it.
    pub async fn get_message_delivery_status(
        &self,
        user: &str,
        sid: &str,
        mid: &str,
    ) -> Result<MessageStatus, ApiError> {
        let m = self.readable(user, sid, mid).await?;
        views::delivery_status(user, &m)
            .ok_or_else(|| missing(&self.urls.message_status(user, sid, mid)))
    }

    /// Seed 7.1.10: a recipient confirms delivery (or display) of a message.
    ///
    /// Read, decide, write: the message is read from the store, `confirm` decides, and the
    /// new state is submitted, all under the session's message lock, so that two recipients
    /// confirming at once cannot overwrite each other's status (the second reads what the
    /// first submitted: the store queue is FIFO). A lock and not an update job on the store
    /// thread because the change also needs the core's state (the sender's subscriptions, the
    /// notification counter): it is handed to the store under the state's read lock and the
    /// session's order lock, like a send, so the session's changes reach the store in its
    /// order.
    pub async fn confirm_message_delivery(
        &self,
        user: &str,
        sid: &str,
        mid: &str,
        status: MessageStatus,
    ) -> Result<(), ApiError> {
        super::within_answer(self.confirm_waiting(user, sid, mid, status, Repeat::Refused)).await
    }

    /// OMA 2012's report (`PUT …/status`), [`Chat::confirm_message_delivery`] but for a report
    /// the recipient's status already covers, taken and changing nothing ([`covered`]).
    pub(super) async fn report_message_status(
        &self,
        user: &str,
        sid: &str,
        mid: &str,
        status: MessageStatus,
    ) -> Result<(), ApiError> {
        super::within_answer(self.confirm_waiting(user, sid, mid, status, Repeat::Taken)).await
    }

    /// [`Chat::confirm_message_delivery`], however long the store takes.
    async fn confirm_waiting(
        &self,
        user: &str,
        sid: &str,
        mid: &str,
        status: MessageStatus,
        repeat: Repeat,
    ) -> Result<(), ApiError> {
        confirmable(status).map_err(|r| r.into_api(String::new))?;
        let urls = &self.urls;
        let rx = {
            let _ordered = self.message_lock(sid).lock().await;
            self.visible(&self.read_state(), user, sid)?;
            let m = self
                .stored_message(sid, mid)
                .await?
                .ok_or_else(|| missing(&urls.message(user, sid, mid)))?;
            if repeat == Repeat::Taken && covered(&m, user, status) {
                return Ok(());
            }
            let confirmed = confirm(&m, user, status)
                .map_err(|r| r.into_api(|| urls.message(user, sid, mid)))?;
            let state = self.read_state();
            // The session may have ended while the message was read.
            self.visible(&state, user, sid)?;
            let order = self.session_order(sid);
            let m = &confirmed.message;
            let outbox: Outbox = confirmed
                .reports
                .into_iter()
                .map(|st| (m.sender.clone(), views::delivery(urls, sid, m, user, st)))
                .collect();
            let mut change = Change::default();
            change.put_message(sid, m, None);
            self.notify(&state, &mut change, outbox);
            self.submit_in_order(&state, &order, sid, change)
        };
        durable(rx).await
    }

    /// OMA 2012: the messages of session `sid` in `delivered` ((recipient, message id), in
    /// delivery order) reached their recipients' applications (`delivered`): each becomes
    /// `Delivered` for its recipient, as its report would make it, unless its status already
    /// covers that ([`covered`]), and the senders that asked are told. One read of the
    /// messages and one change for all of them (every recipient of a group message at once),
    /// under the session's message lock as a confirmation is. A message gone, or a recipient
    /// who no longer sees the session, is passed over.
    ///
    /// The notifications' outbox rows `ids` are forgotten in the same change: `true` when it
    /// was made, `false` when there was nothing to record (the caller forgets them then).
    pub(super) async fn record_delivered_in(
        &self,
        sid: &str,
        delivered: Vec<(String, String)>,
        ids: Vec<u64>,
    ) -> Result<bool, ApiError> {
        let urls = &self.urls;
        let rx = {
            let _ordered = self.message_lock(sid).lock().await;
            let mut mids: Vec<String> = delivered.iter().map(|(_, mid)| mid.clone()).collect();
            mids.sort_unstable();
            mids.dedup();
            let at = sid.to_owned();
            let mut stored = self
                .read(move |b| {
                    let mut found = std::collections::HashMap::with_capacity(mids.len());
                    for mid in mids {
                        let Some(v) = b.message(&at, &mid)? else {
                            continue;
                        };
                        // One unreadable message does not keep the others from their record.
                        match decode_stored_message(&at, &mid, &v) {
                            Ok(m) => {
                                found.insert(mid, m);
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "a delivered message is not recorded");
                            }
                        }
                    }
                    Ok(found)
                })
                .await?;
            let state = self.read_state();
            // Read after the messages: the session may have ended meanwhile.
            let Some(s) = state.sessions.get(sid) else {
                return Ok(false);
            };
            let mut changed: Vec<String> = Vec::new();
            let mut outbox: Outbox = Vec::new();
            for (user, mid) in &delivered {
                let Some(m) = stored.get_mut(mid) else {
                    continue;
                };
                if !super::visible_to(s, user) {
                    continue;
                }
                // Refused when its status already covers it (`Delivered` or further).
                let Ok(c) = confirm(m, user, MessageStatus::Delivered) else {
                    continue;
                };
                outbox.extend(c.reports.into_iter().map(|st| {
                    let told = views::delivery(urls, sid, &c.message, user, st);
                    (c.message.sender.clone(), told)
                }));
                *m = c.message;
                if !changed.contains(mid) {
                    changed.push(mid.clone());
                }
            }
            if changed.is_empty() {
                return Ok(false);
            }
            let order = self.session_order(sid);
            let mut change = Change::default();
            change.batch.forget = ids;
            for mid in &changed {
                if let Some(m) = stored.get(mid) {
                    change.put_message(sid, m, None);
                }
            }
            self.notify(&state, &mut change, outbox);
            self.submit_in_order(&state, &order, sid, change)
        };
        durable(rx).await.map(|()| true)
    }
}

/// Reads a stored message; an unreadable one is a storage error naming it.
fn decode_stored_message(sid: &str, mid: &str, value: &[u8]) -> Result<Message, StoreError> {
    records::decode_message(value)
        .map_err(|e| StoreError(format!("stored message `{sid}/{mid}` is unreadable: {e}")))
}

/// Rows the page walk reads from the store at a time, whatever the page's size: a stored
/// message holds its recipients too (a group's 99 addresses, up to 25 KiB), so reading a
/// page's 1,000 rows at once held up to 40 MB on the store thread.
const PAGE_CHUNK: usize = 64;

/// Rows of messages the user may not read that one page's walk passes at most, beyond the
/// page's own ([`readable_page`]): a user that was no recipient of a long stretch (invited
/// late, or away after leaving) gets short or empty pages linking on, instead of one request
/// reading the whole stretch on the store thread, which every commit waits for.
const PAGE_SKIP_ROWS: usize = 1024;

/// What a page's walk found ([`readable_page`]).
struct Walked {
    /// The messages the user may read, in seq order.
    found: Vec<Message>,
    /// Where the walk stopped before the session's end and before it found what it wanted
    /// (its row or byte budget spent): the next page goes on after it.
    stopped_at: Option<u64>,
}

/// Up to `want` messages of `sid` after `after` that `user` sent or received, in seq order
/// (runs on the store thread). Walks the session's index from the cursor in chunks, and
/// stops early once it has passed [`PAGE_SKIP_ROWS`] rows more than `want`, or found messages
/// of [`PAGE_STORED_BYTES`] as stored (text and recipients; the page's text is at most that):
/// its cost and what it holds follow the page asked for, whatever the session's history.
fn readable_page(
    b: &mut dyn Backend,
    sid: &str,
    user: &str,
    after: Option<u64>,
    want: usize,
) -> Result<Walked, StoreError> {
    let mut found = Vec::new();
    let mut cursor = after;
    let mut rows = 0usize;
    let mut held = 0usize;
    let most_rows = want.saturating_add(PAGE_SKIP_ROWS);
    loop {
        let chunk = b.messages_after(sid, cursor, PAGE_CHUNK)?;
        let full = chunk.len() >= PAGE_CHUNK;
        for (seq, value) in chunk {
            cursor = Some(seq);
            rows += 1;
            let m = decode_stored_message(sid, &format!("seq {seq}"), &value)?;
            if m.sender == user || m.recipients.iter().any(|(r, _)| r == user) {
                held = held.saturating_add(value.len());
                found.push(m);
                if found.len() >= want {
                    return Ok(Walked {
                        found,
                        stopped_at: None,
                    });
                }
            }
            if rows >= most_rows || held >= PAGE_STORED_BYTES {
                return Ok(Walked {
                    found,
                    stopped_at: cursor,
                });
            }
        }
        if !full {
            return Ok(Walked {
                found,
                stopped_at: None,
            });
        }
    }
}

/// Most bytes of messages, as stored, one page's walk holds ([`readable_page`]); the page's
/// text (`page::within`), a part of it, too.
const PAGE_STORED_BYTES: usize = page::PAGE_BYTES;

/// Seed 7.1.9, why connected participant `user` of `s` cannot send there while nobody else is
/// connected: while others are still invited, or nobody ever joined, the session is being
/// set up (`403 POL1012`); once everyone who joined has left, `409 SVC0001`. The same for an
/// `isComposing` (`composing`), which would tell nobody.
pub(super) fn nobody_connected(s: &Session, user: &str) -> Refused {
    let others = || s.participants.iter().filter(|p| p.address != user);
    let setting_up = others().any(|p| p.invitation.is_pending());
    let left = others().any(|p| p.has_joined() && p.status == ParticipantStatus::Disconnected);
    if left && !setting_up {
        Refused::EveryoneLeft { sid: s.id.clone() }
    } else {
        Refused::NobodyJoined
    }
}

/// OMA 2012, the rule on `reportRequest`: a recipient reports `Delivered` and `Displayed`
/// (seed 7.1.10); `Sent` and `Failed` are the server's own states, never reported, so asking
/// for one is a client's mistake told as such (`400 SVC0002`). Before, they were taken and
/// dropped: the send answered `201` and the message showed no `reportRequest` (the outside
/// review of 2026-12-07).
fn check_reports(asked: &[MessageStatus]) -> Result<(), Refused> {
    match asked
        .iter()
        .find(|s| !matches!(s, MessageStatus::Delivered | MessageStatus::Displayed))
    {
        Some(s) => Err(Refused::Invalid(format!(
            "reportRequest: `{s}` cannot be reported; a recipient reports `Delivered` and `Displayed` only"
        ))),
        None => Ok(()),
    }
}

/// Seed 7.1.9, the rule on the text: something to read (not empty, not only white space: a
/// chat client never sends that, so it is a client's mistake, told before any policy of the
/// session), at most `limit` characters (not bytes).
fn check_text(text: &str, limit: usize) -> Result<(), Refused> {
    if text.chars().all(char::is_whitespace) {
        return Err(Refused::TextBlank);
    }
    let chars = text.chars().count();
    if chars > limit {
        return Err(Refused::TextTooLong { chars, limit });
    }
    Ok(())
}

/// What the entry point gives a new message: its id, its place in creation order and its
/// time (the rule reads no counter and no clock).
struct Draft {
    id: String,
    seq: u64,
    date_time: String,
}

/// Seed 7.1.9, the rule: `user` sends `body` in `s` (which it sees). Only a connected
/// participant sends (an invitee has not accepted yet: `POL1012`; one who left must re-join),
/// and only when somebody else is connected (while others are still invited, or nobody ever
/// joined, that is the session's setup: `POL1012`; once everyone who joined left, `409`). The message's recipients are the other
/// connected participants, each at `Sent`, and each gets a message notification; the sender
/// asked for a `Delivered` report with `successReport` or `reportRequest`.
fn send(
    urls: &Urls,
    s: &Session,
    user: &str,
    draft: Draft,
    body: ChatMessage,
) -> Result<(Message, Outbox), Refused> {
    let me = s.participant(user).map(|p| (p.status, p.name.clone()));
    match me {
        Some((ParticipantStatus::Connected, _)) => {}
        Some((ParticipantStatus::Invited, _)) => return Err(Refused::NotYetAccepted),
        _ => {
            return Err(Refused::HasLeft {
                user: user.to_owned(),
                sid: s.id.clone(),
            });
        }
    }
    let recipients = s.connected_others(user);
    if recipients.is_empty() {
        return Err(nobody_connected(s, user));
    }
    let sender_name = me.and_then(|(_, n)| n);
    let (report_delivered, report_displayed) = reports_asked(&body);
    let message = Message {
        id: draft.id,
        seq: draft.seq,
        sender: user.to_owned(),
        text: body.text,
        date_time: draft.date_time,
        report_delivered,
        report_displayed,
        client_correlator: body.client_correlator,
        recipients: recipients
            .iter()
            .map(|r| (r.clone(), MessageStatus::Sent))
            .collect(),
    };
    let outbox = recipients
        .iter()
        .map(|r| {
            (
                r.clone(),
                views::message_notification(urls, r, s, &message, sender_name.clone()),
            )
        })
        .collect();
    Ok((message, outbox))
}

/// The reports a send asks for, (`Delivered`, `Displayed`): `Delivered` with `successReport`
/// or in `reportRequest`, `Displayed` in `reportRequest`.
fn reports_asked(body: &ChatMessage) -> (bool, bool) {
    (
        body.success_report == Some(true)
            || body.report_request.contains(&MessageStatus::Delivered),
        body.report_request.contains(&MessageStatus::Displayed),
    )
}

/// Seed 7.1.9, the rule on a `clientCorrelator` replay: a resend (the same text, asking for
/// the same reports) answers the first message; another request with the correlator is
/// refused (`409 SVC0005`, reference §3.4), rather than told a message was sent that never
/// was.
fn same_message(first: &Message, body: &ChatMessage) -> Result<(), Refused> {
    if first.text == body.text
        && (first.report_delivered, first.report_displayed) == reports_asked(body)
    {
        Ok(())
    } else {
        Err(Refused::reused(first.client_correlator.as_deref()))
    }
}

/// Seed 7.1.10, the rule on the status confirmed: `Delivered` or `Displayed`; `Sent` and
/// `Failed` are the server's to set.
fn confirmable(status: MessageStatus) -> Result<(), Refused> {
    match status {
        MessageStatus::Delivered | MessageStatus::Displayed => Ok(()),
        other => Err(Refused::ServerSetStatus(other)),
    }
}

/// What a confirmation the recipient's status already covers gets ([`covered`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Repeat {
    /// `409 SVC0001` (the seed face's `POST`: the client is told it changed nothing).
    Refused,
    /// Taken, changing nothing: OMA 2012's `PUT`, where `Delivered` is the server's too
    /// (`delivered`), and a `PUT` repeated is answered as the first.
    Taken,
}

/// OMA 2012, the rule on a report that moves nothing: recipient `user` of `m` already has
/// `status`, or reports `Delivered` after `Displayed` (the server records `Delivered` as the
/// message reaches the application, so a client's own `Delivered` may come after it, and
/// after the `Displayed` that followed). Not after `Failed`: that is refused as before.
fn covered(m: &Message, user: &str, status: MessageStatus) -> bool {
    let Some((_, was)) = m.recipients.iter().find(|(r, _)| r == user) else {
        return false;
    };
    *was == status || (*was == MessageStatus::Displayed && status == MessageStatus::Delivered)
}

/// A confirmation accepted: the message's new state, and the delivery reports the sender
/// asked for that it triggers.
#[derive(Debug)]
struct Confirmed {
    message: Message,
    reports: Vec<MessageStatus>,
}

/// Seed 7.1.10, the rule: `user` confirms `status` for message `m`. Only a recipient may
/// confirm; a status only moves forward. The sender is told `Delivered` when it asked for
/// that and this is the recipient's first confirmation (a `Displayed` straight from `Sent`
/// was delivered too), then `Displayed` when that is the status and it asked for it: one
/// asking for both gets both, in that order, whichever the recipient reports (GSMA clients
/// only ever report `Displayed`). Changes only this recipient's entry.
fn confirm(m: &Message, user: &str, status: MessageStatus) -> Result<Confirmed, Refused> {
    if m.sender == user {
        return Err(Refused::Sender);
    }
    let mut message = m.clone();
    let Some(entry) = message.recipients.iter_mut().find(|(r, _)| r == user) else {
        return Err(Refused::NotFound);
    };
    if status_rank(status) <= status_rank(entry.1) {
        return Err(Refused::MessageAlready {
            mid: m.id.clone(),
            user: user.to_owned(),
            was: entry.1,
        });
    }
    let was = entry.1;
    entry.1 = status;
    let mut reports = Vec::new();
    if message.report_delivered && was == MessageStatus::Sent {
        reports.push(MessageStatus::Delivered);
    }
    if status == MessageStatus::Displayed && message.report_displayed {
        reports.push(MessageStatus::Displayed);
    }
    Ok(Confirmed { message, reports })
}

#[cfg(test)]
mod tests {
    use super::super::state::Invitation;
    use super::super::testkit::*;
    use super::*;

    fn message(report_delivered: bool, report_displayed: bool) -> Message {
        Message {
            id: "msg-1".into(),
            seq: 1,
            sender: "tel:+1".into(),
            text: "hi".into(),
            date_time: "2026-12-03T00:00:00Z".into(),
            report_delivered,
            report_displayed,
            client_correlator: None,
            recipients: vec![
                ("tel:+2".into(), MessageStatus::Sent),
                ("tel:+3".into(), MessageStatus::Sent),
            ],
        }
    }

    fn status(m: &Message, who: &str) -> MessageStatus {
        m.recipients
            .iter()
            .find(|(r, _)| r == who)
            .map(|(_, s)| *s)
            .unwrap()
    }

    /// Only the confirming recipient's entry changes; the sender gets the reports it asked for.
    #[test]
    fn a_confirmation_changes_only_its_recipient() {
        let m = message(true, true);
        let c = confirm(&m, "tel:+2", MessageStatus::Delivered).unwrap();
        assert_eq!(status(&c.message, "tel:+2"), MessageStatus::Delivered);
        assert_eq!(status(&c.message, "tel:+3"), MessageStatus::Sent);
        assert_eq!(c.reports, [MessageStatus::Delivered]);
        // The next confirmation starts from the state the first one left (what the message
        // lock guarantees): both survive.
        let c2 = confirm(&c.message, "tel:+3", MessageStatus::Displayed).unwrap();
        assert_eq!(status(&c2.message, "tel:+2"), MessageStatus::Delivered);
        assert_eq!(status(&c2.message, "tel:+3"), MessageStatus::Displayed);
        // Both asked for and Displayed reported straight away: Delivered, then Displayed.
        assert_eq!(
            c2.reports,
            [MessageStatus::Delivered, MessageStatus::Displayed]
        );
        // Displayed after Delivered reports Displayed only when asked; Delivered is not repeated.
        let c3 = confirm(&c.message, "tel:+2", MessageStatus::Displayed).unwrap();
        assert_eq!(c3.reports, [MessageStatus::Displayed]);
        let quiet = confirm(&message(true, false), "tel:+2", MessageStatus::Delivered).unwrap();
        let later = confirm(&quiet.message, "tel:+2", MessageStatus::Displayed).unwrap();
        assert_eq!(later.reports, []);
        // Displayed straight from Sent, with only Delivered asked for: Delivered is reported.
        let skip = confirm(&message(true, false), "tel:+2", MessageStatus::Displayed).unwrap();
        assert_eq!(skip.reports, [MessageStatus::Delivered]);
        assert_eq!(
            confirm(&message(false, false), "tel:+2", MessageStatus::Displayed)
                .unwrap()
                .reports,
            []
        );
    }

    #[test]
    fn a_confirmation_is_refused_for_the_sender_strangers_and_backwards() {
        let m = message(true, true);
        assert_eq!(
            confirm(&m, "tel:+1", MessageStatus::Delivered).unwrap_err(),
            Refused::Sender
        );
        assert_eq!(
            confirm(&m, "tel:+9", MessageStatus::Delivered).unwrap_err(),
            Refused::NotFound
        );
        let shown = confirm(&m, "tel:+2", MessageStatus::Displayed)
            .unwrap()
            .message;
        for again in [MessageStatus::Delivered, MessageStatus::Displayed] {
            assert_eq!(
                confirm(&shown, "tel:+2", again).unwrap_err(),
                Refused::MessageAlready {
                    mid: "msg-1".into(),
                    user: "tel:+2".into(),
                    was: MessageStatus::Displayed
                }
            );
        }
    }

    /// A text is measured in characters, not bytes, and has something to read.
    #[test]
    fn a_text_has_at_most_the_limit_in_characters() {
        let cases = [
            ("", Err(Refused::TextBlank)),
            (" \t\n", Err(Refused::TextBlank)),
            ("\u{3000}", Err(Refused::TextBlank)),
            (" a ", Ok(())),
            ("four", Ok(())),
            ("ééé", Ok(())),
            ("fives", Err(Refused::TextTooLong { chars: 5, limit: 4 })),
            ("ééééé", Err(Refused::TextTooLong { chars: 5, limit: 4 })),
        ];
        for (text, expected) in cases {
            assert_eq!(check_text(text, 4), expected, "{text:?}");
        }
    }

    /// A report can be asked for `Delivered` and `Displayed` only.
    #[test]
    fn only_what_a_recipient_reports_can_be_asked_for() {
        use MessageStatus::{Delivered, Displayed, Failed, Sent};
        assert_eq!(check_reports(&[]), Ok(()));
        assert_eq!(check_reports(&[Delivered, Displayed]), Ok(()));
        for odd in [Sent, Failed] {
            let Err(Refused::Invalid(why)) = check_reports(&[Delivered, odd]) else {
                panic!("{odd} asked for");
            };
            assert!(why.starts_with(&format!("reportRequest: `{odd}`")), "{why}");
        }
    }

    fn draft() -> Draft {
        Draft {
            id: "msg-9".into(),
            seq: 9,
            date_time: "2026-12-03T00:00:00Z".into(),
        }
    }

    fn body(success_report: Option<bool>, report_request: Vec<MessageStatus>) -> ChatMessage {
        ChatMessage {
            text: "hello".into(),
            success_report,
            report_request,
            client_correlator: Some("c-1".into()),
            sender_address: None,
            date_time: None,
            resource_url: None,
        }
    }

    /// Seed 7.1.9: a message goes to the connected participants other than the sender, each
    /// at `Sent`; invitees and those who left get nothing.
    #[test]
    fn a_message_goes_to_the_other_connected_participants() {
        let s = session(
            true,
            &[
                (B, Connected, Invitation::Accepted),
                (C, Invited, pending(1)),
                (D, Disconnected, Invitation::Accepted),
            ],
        );
        let (m, outbox) = send(&urls(), &s, A, draft(), body(None, vec![])).unwrap();
        assert_eq!(m.recipients, [(B.to_owned(), MessageStatus::Sent)]);
        assert_eq!((m.id.as_str(), m.seq, m.sender.as_str()), ("msg-9", 9, A));
        assert_eq!(m.client_correlator.as_deref(), Some("c-1"));
        assert_eq!(told(&outbox), [format!("{B} <- message msg-9 from {A}")]);
        let (m, _) = send(&urls(), &s, B, draft(), body(None, vec![])).unwrap();
        assert_eq!(m.recipients, [(A.to_owned(), MessageStatus::Sent)]);
    }

    /// `successReport` (the seed) or `reportRequest` (OMA 2012) ask for the reports.
    #[test]
    fn the_sender_asks_for_delivery_reports() {
        let s = session(false, &[(B, Connected, Invitation::Accepted)]);
        use MessageStatus::{Delivered, Displayed};
        let cases = [
            (None, vec![], (false, false)),
            (Some(false), vec![], (false, false)),
            (Some(true), vec![], (true, false)),
            (None, vec![Delivered], (true, false)),
            (None, vec![Displayed], (false, true)),
            (Some(true), vec![Displayed], (true, true)),
        ];
        for (success, request, asked) in cases {
            let (m, _) = send(&urls(), &s, A, draft(), body(success, request.clone())).unwrap();
            assert_eq!(
                (m.report_delivered, m.report_displayed),
                asked,
                "{success:?} {request:?}"
            );
        }
    }

    #[test]
    fn only_a_connected_participant_with_someone_to_tell_sends() {
        let s = session(
            true,
            &[
                (B, Invited, pending(1)),
                (C, Disconnected, Invitation::Accepted),
            ],
        );
        let cases = [
            (B, Refused::NotYetAccepted),
            (
                C,
                Refused::HasLeft {
                    user: C.into(),
                    sid: "sess-1".into(),
                },
            ),
            (A, Refused::NobodyJoined),
        ];
        for (who, why) in cases {
            let r = send(&urls(), &s, who, draft(), body(None, vec![]));
            assert_eq!(r.map(|_| ()).unwrap_err(), why, "{who}");
        }
        // A 1-1 whose peer left is past its setup: not POL1012 "during session setup". So is
        // one whose originator left (it joined at the start, without an invitation): before,
        // only an accepted invitee's leaving counted (the seed conformance review).
        let left = session(false, &[(B, Disconnected, Invitation::Accepted)]);
        let mut originator_left = session(false, &[(B, Connected, Invitation::Accepted)]);
        originator_left.participants[0].status = Disconnected;
        for (s, who) in [(&left, A), (&originator_left, B)] {
            let r = send(&urls(), s, who, draft(), body(None, vec![]));
            assert_eq!(
                r.map(|_| ()).unwrap_err(),
                Refused::EveryoneLeft {
                    sid: "sess-1".into()
                },
                "{who}"
            );
        }
    }

    #[test]
    fn a_client_confirms_only_delivered_or_displayed() {
        for (status, ok) in [
            (MessageStatus::Delivered, true),
            (MessageStatus::Displayed, true),
            (MessageStatus::Sent, false),
            (MessageStatus::Failed, false),
        ] {
            assert_eq!(
                confirmable(status),
                if ok {
                    Ok(())
                } else {
                    Err(Refused::ServerSetStatus(status))
                }
            );
        }
    }

    /// A resend with the correlator answers the first message only when it asks the same:
    /// the same text and the same reports (`successReport` and `reportRequest: Delivered`
    /// ask the same); anything else is `409 SVC0005`.
    #[test]
    fn a_correlators_resend_must_ask_what_the_first_send_asked() {
        let mut first = message(true, false);
        first.text = "hello".into();
        first.client_correlator = Some("c-1".into());
        let dup = Err(Refused::DuplicateCorrelator("c-1".into()));
        let other_text = ChatMessage {
            text: "hello again".into(),
            ..body(Some(true), vec![])
        };
        let cases = [
            (body(Some(true), vec![]), Ok(())),
            (body(None, vec![MessageStatus::Delivered]), Ok(())),
            (other_text, dup.clone()),
            (body(None, vec![]), dup.clone()),
            (
                body(Some(true), vec![MessageStatus::Displayed]),
                dup.clone(),
            ),
        ];
        for (asked, want) in cases {
            assert_eq!(same_message(&first, &asked), want, "{asked:?}");
        }
    }

    #[test]
    fn a_report_the_status_already_covers_is_covered_but_not_after_failed() {
        use MessageStatus::{Delivered, Displayed, Failed, Sent};
        let mut m = message(true, true);
        for (was, reported, want) in [
            (Sent, Delivered, false),
            (Sent, Displayed, false),
            (Delivered, Delivered, true),
            (Delivered, Displayed, false),
            (Displayed, Displayed, true),
            (Displayed, Delivered, true),
            (Failed, Delivered, false),
            (Failed, Displayed, false),
        ] {
            m.recipients[0].1 = was;
            assert_eq!(
                covered(&m, "tel:+2", reported),
                want,
                "{was:?} {reported:?}"
            );
        }
        assert!(!covered(&m, "tel:+9", Delivered), "not a recipient");
        assert!(!covered(&m, "tel:+1", Delivered), "the sender");
    }
}
