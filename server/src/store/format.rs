//! The stored format's version, and the steps that bring an older data directory up to it.
//!
//! What a record looks like on disk is a contract between this binary and every data directory
//! an earlier one wrote, so it is defined by the server's own record types
//! (`crate::chat::records`), never by the types the spec generates: a spec edit cannot change
//! it. It changes only together with [`CURRENT`] and a step here that rewrites what the
//! previous version wrote. A backend stores the version next to the data (SQLite:
//! `PRAGMA user_version`) and, when it opens a data directory:
//!
//! - of a newer version than [`CURRENT`]: refuses to start ([`check`]); this binary cannot know
//!   what the records mean;
//! - of an older version: runs [`steps`] over every record and outbox entry and stamps
//!   [`CURRENT`], all in one transaction, before anything is loaded (logged once, by the core);
//! - new (empty): stamps [`CURRENT`].
//!
//! A step is frozen code: it knows the shape its version wrote, not today's types, so later
//! steps can never break it. It works on the JSON as stored (`serde_json::Value`, which keeps
//! key order here), touching only what changed and passing everything else through.

use super::{Kind, MessageRow};
use serde_json::Value;

/// The format this binary writes and reads.
///
/// - 1: the serde form of the chat core's types, which held generated API types (written up to
///   commit 95dd6bb; those data directories carry no version, see [`UNVERSIONED`]).
/// - 2: the server's own record types (`crate::chat::records`); a message's recipients became
///   named objects (`{"address":…,"status":…}`) instead of `[address, status]` pairs. Every
///   other record and every outbox entry is byte-for-byte what version 1 wrote.
/// - 3: messages leave the `records` table for one of their own, indexed by (session, seq),
///   (session, id) and (session, sender, correlator), so that they are read on demand instead
///   of being loaded (and held in memory) at start-up. The message records themselves are
///   byte-for-byte what version 2 wrote; see [`MESSAGES_TABLE`].
/// - 4: a message row also holds the time it was sent (`sent_ms`, Unix milliseconds), so that
///   retention (`crate::retention`) tells a session's expired messages without reading their
///   records (not indexed: it walks each session from its oldest); rows of earlier versions get
///   it from their record's `date_time` ([`message_time`]). The records themselves are
///   unchanged; see [`MESSAGE_TIMES`].
/// - 5: delivery state is stored: each outbox row gains `attempts`, `next_attempt_ms`,
///   `failing_since_ms` (a restart resumes a retry schedule where it was) and `dead_ms`
///   (set when the notification became a dead letter); a subscription record may carry
///   `disabled` (`{"reason":…,"at_ms":…}`, absent while it is active). Every value version 4
///   wrote reads unchanged; see [`DELIVERY_COLUMNS`]. A subscription record may also carry
///   `secrets` (`[{"secret":"whsec_…","until_ms":…}]`, its own signing secrets; absent: the
///   server-wide secret signs, as for every subscription version 4 stored).
/// - 6: records of a new kind, `channel` (notification channels, `crate::chat::records`
///   `StoredChannel`); nothing version 5 wrote changes. The bump keeps a version-5 binary
///   from starting on a directory that holds channels it would not know.
/// - 7: the OMA 2012 face's subscriptions (issue 16): a subscription record may carry
///   `face` (`"oma2012"`; absent: the seed face, as every record version 6 wrote reads), and
///   outbox entries may hold the OMA 2012 profile's notifications
///   (`ChatSessionInvitationNotification`, `GroupSessionInvitationNotification`,
///   `MessageStatusNotification`). Nothing version 6 wrote changes; the bump keeps a version-6
///   binary from starting on a directory whose subscribers it would tell in the wrong profile
///   (or whose outbox it could not read).
/// - 8: OMA 2012 ad hoc one-to-one chats (issue 16): a session record may carry `adhoc`
///   (`true`; absent: a session of another kind, as every record version 7 wrote reads).
///   Nothing version 7 wrote changes; the bump keeps a version-7 binary from starting on a
///   directory whose ad hoc sessions it would take for confirmed ones (and never end).
/// - 9: a session record may carry `changed_ms` (Unix ms of the last decision that changed it:
///   a start, an invitation, an answer, a time-out, a leave), from which the server ends a
///   session idle for `NETAPI_CHAT_SESSION_IDLE_SECS` across restarts (absent: every record
///   version 8 wrote; the first start of this version writes the start's time into each, so
///   their idle time counts from there, or from a later stored message). Nothing version 8
///   wrote changes; the bump keeps a version-8 binary from rewriting sessions without it
///   (their idle time would start again at each restart, and a session nobody uses could
///   outlive its idle time for good).
/// - 10: a subscription record may carry `expired_until_ms` (Unix ms): the subscription
///   expired, and its record and outbox rows are kept only until then, so that what it had not
///   delivered and its cancellation notice still go out after a restart or a takeover within
///   that minute (absent: a live subscription, as every record version 9 wrote reads). Nothing
///   version 9 wrote changes; the bump keeps a version-9 binary from taking such a record for
///   a live subscription (it would come back to its user).
/// - 11: a subscription, session or channel record may carry `owner`: the token that made it
///   (`Principal::token_id`), whose share of the server-wide cap it counts against
///   (`NETAPI_CHAT_TOKEN_SHARE_PERCENT`; absent: every record version 10 wrote, counted for no
///   token). Nothing version 10 wrote changes; the bump keeps a version-10 binary from
///   rewriting records without it (the token's share would forget them).
pub const CURRENT: u32 = 11;

/// The version from which a message row holds its sending time. Like [`MESSAGES_TABLE`] the
/// step to it changes the layout (a column), which the backend does when it runs
/// the step (SQLite: `sqlite::stamp_message_times`), reading each time with [`message_time`].
pub const MESSAGE_TIMES: u32 = 4;

/// The version from which outbox rows carry their delivery state. The step to it adds columns
/// (existing rows: no attempt made, due at once, not dead), which a value rewrite cannot
/// express: the backend does it when it runs the step (SQLite: `sqlite::add_delivery_columns`).
pub const DELIVERY_COLUMNS: u32 = 5;

/// The version from which messages are stored in a table of their own. The step to it moves
/// rows, which a value rewrite cannot express: the backend does that part when it runs the
/// step (SQLite: `sqlite::move_messages`), reading each row's columns with [`message_row`].
pub const MESSAGES_TABLE: u32 = 3;

/// The version of a data directory that has data but no version stamp: version 1 wrote none.
pub const UNVERSIONED: u32 = 1;

/// What a step makes of one stored value: the new value, or `None` when it stays as it is.
/// `Err` names what is wrong; the caller adds which record it was and refuses to start.
pub type Rewrite = Result<Option<Vec<u8>>, String>;

/// One migration step: rewrites what version `from` wrote into what `from + 1` reads.
pub struct Step {
    /// The version it starts from.
    pub from: u32,
    /// What it changes, for the log.
    pub what: &'static str,
    /// Rewrites a record (of the given kind).
    pub record: fn(Kind, &[u8]) -> Rewrite,
    /// Rewrites an outbox entry's body.
    pub outbox: fn(&[u8]) -> Rewrite,
}

/// Every step, in order (`STEPS[i].from == i + 1`).
static STEPS: &[Step] = &[
    Step {
        from: 1,
        what: "message recipients become {address, status} objects",
        record: v1_to_v2_record,
        outbox: unchanged,
    },
    Step {
        from: 2,
        what: "messages move to a table of their own (values unchanged)",
        record: record_unchanged,
        outbox: unchanged,
    },
    Step {
        from: 3,
        what: "messages get their sending time as a column (values unchanged)",
        record: record_unchanged,
        outbox: unchanged,
    },
    Step {
        from: 4,
        what: "outbox rows gain their delivery state (values unchanged)",
        record: record_unchanged,
        outbox: unchanged,
    },
    Step {
        from: 5,
        what: "notification channels may be stored (values unchanged)",
        record: record_unchanged,
        outbox: unchanged,
    },
    Step {
        from: 6,
        what: "subscriptions may carry the face they were made through (values unchanged)",
        record: record_unchanged,
        outbox: unchanged,
    },
    Step {
        from: 7,
        what: "sessions may be OMA 2012 ad hoc chats (values unchanged)",
        record: record_unchanged,
        outbox: unchanged,
    },
    Step {
        from: 8,
        what: "sessions may carry the time of their last change (values unchanged)",
        record: record_unchanged,
        outbox: unchanged,
    },
    Step {
        from: 9,
        what: "expired subscriptions may be kept for their last notifications (values unchanged)",
        record: record_unchanged,
        outbox: unchanged,
    },
    Step {
        from: 10,
        what: "subscriptions, sessions and channels may name the token that made them (values unchanged)",
        record: record_unchanged,
        outbox: unchanged,
    },
];

/// Whether this binary can open a data directory of format `found`; the error is the message
/// to stop with.
pub fn check(found: u32, place: &str) -> Result<(), String> {
    if found > CURRENT {
        Err(format!(
            "{place} holds stored format version {found}, newer than the version {CURRENT} this \
             netapi-chat reads: it was written by a newer netapi-chat. Refusing to start rather \
             than misread it; run that newer version (or restore a backup made for this one)"
        ))
    } else if found < UNVERSIONED {
        Err(format!(
            "{place} holds stored format version {found}, which no netapi-chat ever wrote"
        ))
    } else {
        Ok(())
    }
}

/// The steps from version `found` to [`CURRENT`], in order (none when it is current).
pub fn steps(found: u32) -> impl Iterator<Item = &'static Step> {
    STEPS.iter().filter(move |s| s.from >= found)
}

fn unchanged(_: &[u8]) -> Rewrite {
    Ok(None)
}

fn record_unchanged(_: Kind, _: &[u8]) -> Rewrite {
    Ok(None)
}

/// Version 2 → 3, the layout part: the row a version-2 message record (key
/// `sessionId/messageId`) becomes, its columns read from the record as version 2 wrote it
/// (`seq`, `id`, `sender`, `client_correlator`); the value itself is kept as it is.
pub fn message_row(key: &str, value: &[u8]) -> Result<MessageRow, String> {
    let (session, _) = key
        .split_once('/')
        .ok_or("the key is not `sessionId/messageId`")?;
    let m: Value = serde_json::from_slice(value).map_err(|e| format!("not JSON: {e}"))?;
    let text = |name: &str| {
        m.get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("no `{name}` string"))
    };
    let correlator = match m.get("client_correlator") {
        None | Some(Value::Null) => None,
        Some(Value::String(c)) => Some(c.clone()),
        Some(other) => return Err(format!("`client_correlator` is not a string: {other}")),
    };
    Ok(MessageRow {
        session: session.to_owned(),
        seq: m
            .get("seq")
            .and_then(Value::as_u64)
            .ok_or("no `seq` number")?,
        id: text("id")?,
        sender: text("sender")?,
        correlator,
        value: value.to_vec(),
        // Version 3 rows had no time: the step to version 4 reads it ([`message_time`]).
        sent_ms: None,
    })
}

/// Version 3 → 4, the layout part: the sending time (Unix milliseconds) of a message as
/// versions 1 to 3 wrote it: its `date_time`, which they always wrote as RFC 3339 UTC with
/// whole seconds (`2026-12-03T14:51:54Z`). Anything else is an error naming what it found,
/// not a guess (a guessed time would purge a message early or keep it forever).
pub fn message_time(value: &[u8]) -> Result<i64, String> {
    let m: Value = serde_json::from_slice(value).map_err(|e| format!("not JSON: {e}"))?;
    let text = m
        .get("date_time")
        .and_then(Value::as_str)
        .ok_or("no `date_time` string")?;
    // The project's one RFC 3339 reader (also what `since` of the dead-letter list goes by).
    crate::time::parse_rfc3339(text)
        .ok_or_else(|| format!("`date_time` {text:?} is not an RFC 3339 time"))
}

/// Version 1 → 2: `"recipients": [["tel:…", "Sent"], …]` in a message becomes
/// `"recipients": [{"address": "tel:…", "status": "Sent"}, …]`; nothing else changes.
fn v1_to_v2_record(kind: Kind, value: &[u8]) -> Rewrite {
    if kind != Kind::Message {
        return Ok(None);
    }
    let mut message: Value = serde_json::from_slice(value).map_err(|e| format!("not JSON: {e}"))?;
    let recipients = message
        .get_mut("recipients")
        .and_then(Value::as_array_mut)
        .ok_or("no `recipients` array")?;
    for r in recipients.iter_mut() {
        let pair = match r.as_array().map(Vec::as_slice) {
            Some([address @ Value::String(_), status @ Value::String(_)]) => {
                let mut o = serde_json::Map::new();
                o.insert("address".to_owned(), address.clone());
                o.insert("status".to_owned(), status.clone());
                Value::Object(o)
            }
            _ => return Err(format!("a recipient is not an [address, status] pair: {r}")),
        };
        *r = pair;
    }
    serde_json::to_vec(&message)
        .map(Some)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_versions_are_refused_with_a_clear_message() {
        let e = check(99, "/data/netapi-chat.sqlite3").unwrap_err();
        assert!(e.contains("version 99") && e.contains("newer"), "{e}");
        assert!(check(0, "x").is_err());
        for v in UNVERSIONED..=CURRENT {
            assert!(check(v, "x").is_ok());
        }
    }

    #[test]
    fn steps_are_contiguous_and_reach_the_current_version() {
        for (i, s) in STEPS.iter().enumerate() {
            assert_eq!(s.from as usize, i + 1);
        }
        assert_eq!(STEPS.len() as u32 + 1, CURRENT);
        assert_eq!(steps(1).count(), STEPS.len());
        assert_eq!(steps(CURRENT).count(), 0);
    }

    /// Step 1 → 2 on what version 1 wrote (taken from the v1 fixture).
    #[test]
    fn step_1_to_2_names_message_recipients() {
        let v1 = br#"{"id":"msg-6-8c7b","seq":6,"sender":"tel:+15551230001","text":"hello from v1","date_time":"2026-12-03T14:51:54Z","report_delivered":true,"report_displayed":true,"client_correlator":null,"recipients":[["sip:bob@example.com","Delivered"],["tel:+15551230003","Sent"]]}"#;
        let v2 = br#"{"id":"msg-6-8c7b","seq":6,"sender":"tel:+15551230001","text":"hello from v1","date_time":"2026-12-03T14:51:54Z","report_delivered":true,"report_displayed":true,"client_correlator":null,"recipients":[{"address":"sip:bob@example.com","status":"Delivered"},{"address":"tel:+15551230003","status":"Sent"}]}"#;
        let step = &STEPS[0];
        let out = (step.record)(Kind::Message, v1).unwrap().unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            std::str::from_utf8(v2).unwrap()
        );
        // Other kinds and the outbox stay as they are.
        for kind in [Kind::Session, Kind::Subscription, Kind::Meta] {
            assert_eq!(
                (step.record)(kind, b"{\"x\":[[\"a\",\"b\"]]}").unwrap(),
                None
            );
        }
        assert_eq!((step.outbox)(b"{}").unwrap(), None);
        // What it cannot read is an error, not a guess.
        assert!((step.record)(Kind::Message, b"{\"recipients\":[[\"a\"]]}").is_err());
        assert!((step.record)(Kind::Message, b"{}").is_err());
        assert!((step.record)(Kind::Message, b"not json").is_err());
    }

    /// Step 2 → 3 reads a message's columns from what version 2 wrote and keeps the value.
    #[test]
    fn step_2_to_3_reads_the_message_columns() {
        let v2 = br#"{"id":"msg-6-8c7b","seq":6,"sender":"tel:+15551230001","text":"hi","date_time":"2026-12-03T14:51:54Z","report_delivered":true,"report_displayed":true,"client_correlator":"c-1","recipients":[{"address":"sip:bob@example.com","status":"Delivered"}]}"#;
        let row = message_row("sess-2-ab/msg-6-8c7b", v2).unwrap();
        assert_eq!(
            (row.session.as_str(), row.seq, row.id.as_str()),
            ("sess-2-ab", 6, "msg-6-8c7b")
        );
        assert_eq!(row.sender, "tel:+15551230001");
        assert_eq!(row.correlator.as_deref(), Some("c-1"));
        assert_eq!(row.value, v2.to_vec());
        let no_correlator = br#"{"id":"m","seq":1,"sender":"s","client_correlator":null}"#;
        assert_eq!(message_row("s/m", no_correlator).unwrap().correlator, None);
        assert!(message_row("no-slash", no_correlator).is_err());
        assert!(message_row("s/m", br#"{"id":"m","sender":"s"}"#).is_err());
        assert!(
            message_row(
                "s/m",
                br#"{"id":"m","seq":1,"sender":"s","client_correlator":5}"#
            )
            .is_err()
        );
        assert_eq!((STEPS[1].record)(Kind::Message, v2).unwrap(), None);
    }

    /// Step 3 → 4 reads a message's sending time from the `date_time` earlier versions wrote.
    #[test]
    fn step_3_to_4_reads_the_sending_time() {
        let v3 = br#"{"id":"msg-6-8c7b","seq":6,"sender":"tel:+1","text":"hi","date_time":"2026-12-03T14:51:54Z","recipients":[]}"#;
        assert_eq!(message_time(v3), Ok(1_796_309_514_000));
        assert_eq!(
            message_time(br#"{"date_time":"1970-01-01T00:00:01Z"}"#),
            Ok(1000)
        );
        for bad in [
            &br#"{"id":"m"}"#[..],
            br#"{"date_time":5}"#,
            br#"{"date_time":"yesterday"}"#,
            br#"{"date_time":"2026-12-03 14:51:54"}"#,
            b"not json",
        ] {
            assert!(
                message_time(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!((STEPS[2].record)(Kind::Message, v3).unwrap(), None);
        assert_eq!((STEPS[2].outbox)(b"{}").unwrap(), None);
    }

    /// Step 6 → 7 changes no value: a version-6 subscription record (no `face`) is read as a
    /// seed-face subscription by `records` (tested there), and the outbox is untouched.
    #[test]
    fn step_6_to_7_keeps_every_value() {
        let v6 = br#"{"id":"sub-1-ab","user":"tel:+1","callback":{"notifyURL":"http://cb.test/n"},"duration":0,"expires_at_ms":null,"client_correlator":null,"seq":1}"#;
        let step = &STEPS[5];
        assert_eq!(step.from, 6);
        assert_eq!((step.record)(Kind::Subscription, v6).unwrap(), None);
        assert_eq!(
            (step.outbox)(b"{\"MessageNotification\":{}}").unwrap(),
            None
        );
        let rec = crate::chat::records::decode_subscription(v6).expect("a v6 record reads");
        assert_eq!(rec.face, crate::chat::Face::Seed);
    }

    /// Step 7 → 8 changes no value: a version-7 session record (no `adhoc`) reads as a
    /// session that is not ad hoc, and the outbox is untouched.
    #[test]
    fn step_7_to_8_keeps_every_value() {
        let v7 = br#"{"id":"sess-1-ab","seq":1,"subject":"hi","originator":"tel:+1","originator_name":null,"client_correlator":null,"participants":[],"group":false,"ended":false}"#;
        let step = &STEPS[6];
        assert_eq!(step.from, 7);
        assert_eq!((step.record)(Kind::Session, v7).unwrap(), None);
        assert_eq!(
            (step.outbox)(b"{\"MessageNotification\":{}}").unwrap(),
            None
        );
        let s = crate::chat::records::decode_session(v7).expect("a v7 record reads");
        assert!(!s.adhoc);
    }
}
