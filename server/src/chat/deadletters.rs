//! Catch up and replay (issue 13 item 3; an extension beside the OMA resources): what was not
//! delivered to a subscription is listed (`listDeadLetters`) and sent again
//! (`redeliverDeadLetters`).
//!
//! Dead letters are outbox rows with `dead_ms` set (see `notify` and `store::Bury`): at most
//! the backlog cap of them per subscription, deleted with it. A listing reads one page of them
//! through the store thread (an index range, never the whole set), a chunk at a time until the
//! page is full or its bytes reach the page budget ([`to_read`]), so it holds about one page.
//! A redelivery reads them all (bounded by the same cap: the queue would hold as many), then,
//! in one change under the lock, re-enables the subscription (record and queue), turns the
//! rows back into undelivered notifications (`store::Revive`, same ids so same
//! `webhook-id`s) and queues them right after that commit, in id order (two redeliveries of
//! one subscription take turns). A disabled subscription gets nothing new, so nothing created
//! after the request can be queued ahead of them; an active one's queue already holds what
//! was created before, and they go behind it.
//!
//! Rules (plain functions, tested below): [`parse_since`], [`bounds`], [`to_read`], [`entry`].

use super::page::{self, PageRequest};
use super::records;
use super::views::with_notification;
use super::{Change, Chat, durable, missing, read_failed};
use crate::address::encode_segment;
use crate::logsafe::Escaped;
use crate::notify::{Delivery, webhook_id};
use crate::store::{DeadLetterRow, Kind, Progress, Revive, now_ms};
use netapi_chat_api::{ChatSubscription, DeadLetter, DeadLetterList, Link, Notification};
use netapi_chat_runtime::ApiError;

/// Where a listing starts, as the client's `since` said it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Since {
    /// Dead letters created at or after this time (Unix ms).
    Time(i64),
    /// Dead letters after this outbox id (a `webhook-id`, `msg_<n>`).
    After(u64),
}

/// Reads `since`: a `webhook-id` (`msg_<n>`, as sent in the `webhook-id` header and listed) or
/// an RFC 3339 time; anything else is `400 SVC0002`. A time whose offset's `+` was written
/// as is into the query reaches here as a space (form decoding: `…T20:00:00 01:00`), which
/// nothing else an RFC 3339 time has there could be: read as the `+` it was (the HTTP review
/// of 2026-12-07: `400` for a time written by hand).
pub fn parse_since(text: &str) -> Result<Since, ApiError> {
    if let Some(n) = text.strip_prefix("msg_") {
        return page::parse_cursor(n)
            .map(Since::After)
            .map_err(|_| bad_since(text));
    }
    crate::time::parse_rfc3339(text)
        .or_else(|| crate::time::parse_rfc3339(&plus_of_the_offset(text)?))
        .map(Since::Time)
        .ok_or_else(|| bad_since(text))
}

/// `text` with the space before a trailing `hh:mm` offset read as `+`, if it has one.
fn plus_of_the_offset(text: &str) -> Option<String> {
    let (time, offset) = text.rsplit_once(' ')?;
    let b = offset.as_bytes();
    let hh_mm = b.len() == 5 && b[2] == b':' && [0, 1, 3, 4].iter().all(|&i| b[i].is_ascii_digit());
    hh_mm.then(|| format!("{time}+{offset}"))
}

fn bad_since(text: &str) -> ApiError {
    ApiError::invalid_input(format!(
        "`since` {text:?} is neither an RFC 3339 time (2026-12-03T17:00:00Z) nor a webhook-id (msg_42)"
    ))
}

/// The lower bounds of a listing: the id the walk goes on after (the larger of the page
/// cursor and a `since` id) and the earliest creation time (Unix ms) a listed one may have.
pub fn bounds(cursor: Option<u64>, since: Option<Since>) -> (Option<u64>, i64) {
    match since {
        None => (cursor, i64::MIN),
        Some(Since::Time(ms)) => (cursor, ms),
        Some(Since::After(id)) => (Some(cursor.map_or(id, |c| c.max(id))), i64::MIN),
    }
}

/// Up to `want` dead letters of `subscription` after `after`, created at or after `since_ms`,
/// read a few at a time ([`to_read`]) so that a page cut by bytes holds its budget and a
/// chunk, not `want` bodies (runs on the store thread, in one read, as a page of messages).
fn page_of_dead_letters(
    b: &mut dyn crate::store::Backend,
    subscription: &str,
    after: Option<u64>,
    since_ms: i64,
    want: usize,
) -> Result<Vec<DeadLetterRow>, crate::store::StoreError> {
    let mut rows: Vec<DeadLetterRow> = Vec::new();
    let mut cursor = after;
    loop {
        let n = to_read(rows.iter().map(|r| r.body.len()), want, page::PAGE_BYTES);
        if n == 0 {
            return Ok(rows);
        }
        let chunk = b.dead_letters(subscription, cursor, since_ms, n)?;
        let exhausted = chunk.len() < n;
        cursor = chunk.last().map(|r| r.id).or(cursor);
        rows.extend(chunk);
        if exhausted {
            return Ok(rows);
        }
    }
}

/// How many dead letters a listing reads at most at a time.
const CHUNK: usize = 32;

/// How many more dead letters a listing reads, given the body sizes (`weights`) of those read
/// so far: none once it holds `want` (the page and one more, which tells whether a next page
/// exists) or once the bodies reach the page's byte `budget` with one more read past it (the
/// page ends there and the next starts with it, [`page::within`]); otherwise up to [`CHUNK`],
/// one when the budget is reached by the last.
pub fn to_read(weights: impl ExactSizeIterator<Item = usize>, want: usize, budget: usize) -> usize {
    let read = weights.len();
    if read >= want {
        return 0;
    }
    let mut total = 0usize;
    let mut weights = weights;
    match weights.position(|w| {
        total = total.saturating_add(w);
        total >= budget
    }) {
        Some(last) if last + 1 < read => 0,
        Some(_) => 1,
        None => (want - read).min(CHUNK),
    }
}

/// RFC 3339 (UTC, seconds) of a Unix millisecond time.
fn at(ms: i64) -> String {
    crate::time::rfc3339(u64::try_from(ms.div_euclid(1000)).unwrap_or(0))
}

/// A dead letter as listed: its `webhook-id`, times and attempts, and the notification in
/// the one element named after its kind (what the callback's body would have held).
pub fn entry(row: &DeadLetterRow, n: Notification) -> DeadLetter {
    with_notification!(
        DeadLetter {
            webhook_id: webhook_id(row.id),
            created: at(row.created_ms),
            died: at(row.dead_ms),
            attempts: i64::from(row.attempts),
        },
        n
    )
}

impl Chat {
    /// `404` unless subscription `id` is `user`'s (another user's answers exactly as a
    /// missing one).
    fn check_owner(&self, user: &str, id: &str) -> Result<(), ApiError> {
        match self.read_state().subscriptions.get(id) {
            Some(s) if s.rec.user == user => Ok(()),
            _ => Err(missing(&self.urls.subscription(user, id))),
        }
    }

    /// The stored notifications of `rows`, decoded; a stored body that does not read is a
    /// storage fault (logged, `503`), not the client's.
    fn decoded(
        &self,
        rows: Vec<DeadLetterRow>,
    ) -> Result<Vec<(DeadLetterRow, Notification)>, ApiError> {
        rows.into_iter()
            .map(|r| match records::decode_notification(&r.body) {
                Ok(n) => Ok((r, n)),
                Err(e) => {
                    tracing::error!(id = r.id, error = %Escaped(&e), "stored dead letter is unreadable");
                    Err(read_failed())
                }
            })
            .collect()
    }

    /// `listDeadLetters`: one page of the dead letters of the user's subscription `id`,
    /// oldest first, from `since` on.
    pub async fn list_dead_letters(
        &self,
        user: &str,
        id: &str,
        req: PageRequest,
        since: Option<&str>,
    ) -> Result<DeadLetterList, ApiError> {
        let parsed = since.map(parse_since).transpose()?;
        self.check_owner(user, id)?;
        let (after, since_ms) = bounds(req.after, parsed);
        // One more than the page: tells whether a next page exists.
        let want = req.limit.saturating_add(1);
        let sub = id.to_owned();
        let rows = self
            .read(move |b| page_of_dead_letters(b, &sub, after, since_ms, want))
            .await?;
        let p = page::within(
            page::page(
                rows.into_iter().map(|r| (r.id, r)),
                PageRequest {
                    after: None,
                    limit: req.limit,
                },
            ),
            page::PAGE_BYTES,
            |r| r.body.len(),
            |r| r.id,
        );
        let resource_url = format!("{}/deadLetters", self.urls.subscription(user, id));
        let link = p
            .next
            .map(|n| {
                let mut href = page::next_url(&resource_url, req, n);
                if let Some(s) = since {
                    href = format!("{href}&since={}", encode_segment(s));
                }
                Link {
                    rel: page::NEXT.to_owned(),
                    href,
                }
            })
            .into_iter()
            .collect();
        Ok(DeadLetterList {
            dead_letter: self
                .decoded(p.items)?
                .into_iter()
                .map(|(r, n)| entry(&r, n))
                .collect(),
            resource_url,
            link,
        })
    }

    /// `redeliverDeadLetters`: the user's subscription `id` is enabled again and its dead
    /// letters go back into its queue, in order, with their ids, in one durable change (see
    /// the module documentation).
    pub async fn redeliver_dead_letters(
        &self,
        user: &str,
        id: &str,
    ) -> Result<ChatSubscription, ApiError> {
        self.check_owner(user, id)?;
        // Two redeliveries of one subscription take turns (one of the striped locks, keyed by
        // its id), so the second reads what the first left dead (nothing) instead of queueing
        // the same notifications twice.
        let _one_at_a_time = self.message_lock(id).lock().await;
        let sub = id.to_owned();
        // All of them: the backlog cap bounds them, and the queue will hold them anyway.
        let rows = self
            .read(move |b| b.dead_letters(&sub, None, i64::MIN, usize::MAX))
            .await?;
        let dead = self.decoded(rows)?;
        let count = dead.len();
        let (view, was_disabled, rx) = {
            let mut state = self.write_state();
            let Some(sub) = state
                .subscriptions
                .get_mut(id)
                .filter(|s| s.rec.user == user)
            else {
                // Deleted meanwhile.
                return Err(missing(&self.urls.subscription(user, id)));
            };
            let now = now_ms();
            let mut change = Change::default();
            let was_disabled = sub.rec.disabled.take().is_some();
            if was_disabled {
                change.put(
                    Kind::Subscription,
                    id.to_owned(),
                    records::encode_subscription(&sub.rec),
                );
            }
            sub.queue.enable();
            change.batch.revive.push(Revive {
                subscription: id.to_owned(),
                ids: dead.iter().map(|(r, _)| r.id).collect(),
                created_ms: now,
            });
            for (r, n) in dead {
                change.deliveries.push((
                    sub.queue.clone(),
                    Delivery {
                        id: r.id,
                        notification: n,
                        created_ms: now,
                        bytes: r.body.len(),
                        progress: Progress::default(),
                        deadline_ms: None,
                        best_effort: false,
                    },
                ));
            }
            let view = self.subscription_view(&sub.rec);
            (view, was_disabled, self.submit(&mut state, change))
        };
        durable(rx).await?;
        tracing::info!(user = %Escaped(user), subscription = %Escaped(id), count = count, re_enabled = was_disabled, "dead letters requeued");
        Ok(view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netapi_chat_api::{ChatEventNotification, EventType};

    #[test]
    fn since_is_a_webhook_id_or_an_rfc3339_time() {
        assert_eq!(parse_since("msg_42").ok(), Some(Since::After(42)));
        assert_eq!(
            parse_since("1970-01-01T00:00:01Z").ok(),
            Some(Since::Time(1000))
        );
        // `+01:00` written as is into a query arrives as ` 01:00`.
        for plus in ["1970-01-01T01:00:01+01:00", "1970-01-01T01:00:01 01:00"] {
            assert_eq!(parse_since(plus).ok(), Some(Since::Time(1000)), "{plus}");
        }
        for bad in [
            "",
            "msg_",
            "msg_-1",
            "msg_042",
            "42",
            "yesterday",
            "msg_1 ",
            "1970-01-01T01:00:01 1:00",
            "1970-01-01T01:00:01  01:00",
            " 01:00",
        ] {
            let e = parse_since(bad).err().map(|e| e.status.as_u16());
            assert_eq!(e, Some(400), "{bad:?}");
        }
    }

    /// A listing reads in chunks until it holds the page and one more, or until the bodies
    /// reach the byte budget and one more past it: never the page's count of large bodies.
    #[test]
    fn a_listing_reads_a_page_and_one_more_by_count_or_by_bytes() {
        let read = |w: &[usize], want| to_read(w.iter().copied(), want, 100);
        assert_eq!(read(&[], 11), 11);
        assert_eq!(read(&[], 1001), CHUNK);
        assert_eq!(read(&[1; 32], 1001), CHUNK);
        assert_eq!(read(&[1; 5], 6), 1);
        assert_eq!(read(&[1; 6], 6), 0);
        // The budget reached by the last read: one more, to tell whether a page follows.
        assert_eq!(read(&[60, 40], 1001), 1);
        assert_eq!(read(&[60, 40, 5], 1001), 0);
        // One body over the whole budget: it is the page, and one more is read.
        assert_eq!(read(&[1_000], 1001), 1);
        assert_eq!(read(&[1_000, 1], 1001), 0);
        assert_eq!(read(&[usize::MAX, usize::MAX], 1001), 0);
    }

    #[test]
    fn a_listing_starts_after_the_later_of_cursor_and_since() {
        assert_eq!(bounds(None, None), (None, i64::MIN));
        assert_eq!(bounds(Some(5), None), (Some(5), i64::MIN));
        assert_eq!(bounds(None, Some(Since::After(7))), (Some(7), i64::MIN));
        assert_eq!(bounds(Some(9), Some(Since::After(7))), (Some(9), i64::MIN));
        assert_eq!(bounds(Some(3), Some(Since::After(7))), (Some(7), i64::MIN));
        assert_eq!(bounds(Some(3), Some(Since::Time(100))), (Some(3), 100));
    }

    #[test]
    fn an_entry_carries_its_webhook_id_times_and_the_notification_in_its_kinds_element() {
        let row = DeadLetterRow {
            id: 12,
            body: Vec::new(),
            created_ms: 1_700_000_000_999,
            dead_ms: 1_700_000_060_000,
            attempts: 3,
        };
        let n = ChatEventNotification {
            event_type: EventType::SessionEnded,
            event_description: None,
            session_id: "s".into(),
            callback_data: Some("cb".into()),
            link: vec![],
        };
        let e = entry(&row, Notification::from(n.clone()));
        assert_eq!(e.webhook_id, "msg_12");
        assert_eq!(e.created, "2023-11-14T22:13:20Z");
        assert_eq!(e.died, "2023-11-14T22:14:20Z");
        assert_eq!(e.attempts, 3);
        assert_eq!(e.chat_event_notification, Some(n));
        assert!(e.message_notification.is_none() && e.session_invitation_notification.is_none());
    }
}
