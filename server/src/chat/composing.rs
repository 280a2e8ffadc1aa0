//! OMA 2012 `isComposing` (issue 16) on both faces: a participant tells the others it is
//! composing (`active`) or stopped (`idle`).
//!
//! **Never stored.** An indication is told to the connected others and forgotten: no outbox
//! entry, no history, no dead letter, nothing resent after a restart (best effort). It still
//! goes through `Chat::submit`, because its notification id comes from the counters, which are
//! committed before an id is used (a crash must not hand that id to another notification).
//! Its delivery carries a deadline, the indication's `refresh`: a queue that cannot deliver it
//! by then (a failing callback) drops it instead of delivering it late.
//!
//! **Rate.** One indication per sender per [`GAP`], plus the `idle` that ends an `active`
//! ([`Log::admit`]); the log is bounded
//! ([`LOG_CAP`] senders, the oldest forgotten first), so memory does not grow with senders.
//!
//! Rules (plain functions, tested below): [`indication`], [`Log::admit`].

use super::refused::Refused;
use super::views;
use super::{Change, Chat, durable};
use crate::notify::Notification;
use crate::store::now_ms;
use netapi_chat_api::{IsComposing, MessageNotification, ParticipantStatus};
use netapi_chat_runtime::ApiError;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The least time between two indications of one sender.
pub const GAP: Duration = Duration::from_secs(1);

/// The most senders the rate log remembers at once.
pub const LOG_CAP: usize = 65_536;

/// `refresh` when the client sends none (seconds; RFC 3994's default is 120, OMA gives none).
pub const DEFAULT_REFRESH: i64 = 60;

/// The longest `refresh` (seconds): how long an indication may wait in a queue.
pub const MAX_REFRESH: i64 = 300;

/// When each sender last indicated, and what (not persisted).
#[derive(Debug, Default)]
pub struct Log {
    last: HashMap<String, Last>,
}

/// A sender's last admitted indication.
#[derive(Debug)]
struct Last {
    at: Instant,
    sid: String,
    active: bool,
}

impl Last {
    /// Less than [`GAP`] before `now`: it still decides.
    fn recent(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.at) < GAP
    }
}

impl Log {
    /// The rate rule: `sender` may indicate (`active` or idle) in session `sid` at `now` when
    /// its last indication is at least [`GAP`] old, or when this one is the `idle` that ends
    /// an `active` it sent in the same session: a client that starts and stops typing within
    /// a second must be able to say it stopped, or its peer shows it typing until the
    /// `refresh` runs out. So a sender gets at most two indications per gap (`active`, then
    /// `idle`); an admitted one is remembered. A full log first forgets every entry older
    /// than the gap (they decide nothing any more), and when all are recent, the oldest.
    pub fn admit(&mut self, sender: &str, sid: &str, active: bool, now: Instant) -> bool {
        if let Some(last) = self.last.get(sender)
            && last.recent(now)
            && (active || !last.active || last.sid != sid)
        {
            return false;
        }
        if self.last.len() >= LOG_CAP && !self.last.contains_key(sender) {
            self.last.retain(|_, l| l.recent(now));
            if self.last.len() >= LOG_CAP
                && let Some(oldest) = self
                    .last
                    .iter()
                    .min_by_key(|(_, l)| l.at)
                    .map(|(k, _)| k.clone())
            {
                self.last.remove(&oldest);
            }
        }
        self.last.insert(
            sender.to_owned(),
            Last {
                at: now,
                sid: sid.to_owned(),
                active,
            },
        );
        true
    }

    /// Whether [`Log::admit`] would admit an indication of `sender` in a session it has not
    /// indicated in yet, at `now`: its last indication is at least [`GAP`] old. Remembers
    /// nothing. What an indication that would open an OMA 2012 ad hoc chat is weighed by
    /// before the chat is opened, so that one refused by the rate opens nothing (it left an
    /// open chat behind, ended only when idle).
    pub fn admits_in_new_session(&self, sender: &str, now: Instant) -> bool {
        self.last.get(sender).is_none_or(|last| !last.recent(now))
    }

    /// Senders remembered.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.last.len()
    }
}

/// The rule on an `isComposing` body: `state` (or `status`) is `active` or `idle` (any case; answered in
/// lower case, as RFC 3994 writes it), `refresh` 1-[`MAX_REFRESH`] s ([`DEFAULT_REFRESH`] when
/// absent), `lastActive` a date-time (OMA types it `xsd:dateTime`: it is told to recipients,
/// and one bound to OMA's type cannot read `yesterday`), told in its canonical spelling. The
/// indication as it is told, with its `refresh` set.
pub fn indication(body: IsComposing) -> Result<IsComposing, Refused> {
    // `state`, or the GSMA gateways' `status` (the schema admits exactly one of them).
    let given = body
        .state
        .as_deref()
        .or(body.status.as_deref())
        .unwrap_or("");
    let state = given.trim().to_ascii_lowercase();
    if state != "active" && state != "idle" {
        return Err(Refused::Invalid(format!(
            "state: `active` or `idle`, not {given:?}"
        )));
    }
    let refresh = body.refresh.unwrap_or(DEFAULT_REFRESH);
    if !(1..=MAX_REFRESH).contains(&refresh) {
        return Err(Refused::Invalid(format!(
            "refresh: 1 to {MAX_REFRESH} seconds, not {refresh}"
        )));
    }
    // A date-time `xsd:dateTime` takes too (`date_time::parse`), told in the spelling every
    // reader takes (`2026-12-03t17:00:00z` as `2026-12-03T17:00:00Z`).
    let last_active = body
        .last_active
        .as_deref()
        .map(|at| {
            netapi_chat_runtime::date_time::canonical(at).ok_or_else(|| {
                Refused::Invalid(format!(
                    "lastActive: a date-time such as 2026-12-03T17:00:00Z, not {at:?}"
                ))
            })
        })
        .transpose()?;
    Ok(IsComposing {
        state: Some(state),
        status: None,
        refresh: Some(refresh),
        last_active,
        ..body
    })
}

impl Chat {
    /// OMA 2012 `isComposing` (both faces): tells the other connected participants of `sid`
    /// that `user` is composing or stopped. Only a connected participant may, and only while
    /// someone else is connected, as for a message (the seed's send rule: `403 POL1012` before
    /// accepting or while the session is set up, `409 SVC0001` once everyone else left).
    /// Before, an indication to nobody was taken, and a client could not learn from it that
    /// its peer had gone (the outside review of 2026-12-07).
    pub async fn indicate_composing(
        &self,
        user: &str,
        sid: &str,
        body: IsComposing,
    ) -> Result<(), ApiError> {
        let ind = indication(body).map_err(|r| r.into_api(String::new))?;
        let rx = self.compose_under(&mut self.write_state(), user, sid, &ind)?;
        durable(rx).await
    }

    /// The indication `ind` (an [`indication`]) under the write lock the caller holds (also
    /// the step that opens an ad hoc chat, `oma2012`): the rate, then the notifications handed
    /// over; the commit (of the counters) to wait for.
    pub(super) fn compose_under(
        &self,
        state: &mut super::state::State,
        user: &str,
        sid: &str,
        ind: &IsComposing,
    ) -> Result<super::Committed, ApiError> {
        let s = self.visible(state, user, sid)?;
        let me = s
            .participant(user)
            .ok_or_else(|| Refused::NotFound.into_api(|| self.urls.session(user, sid)))?;
        match me.status {
            ParticipantStatus::Connected => {}
            ParticipantStatus::Invited => {
                return Err(Refused::NotYetAccepted.into_api(String::new));
            }
            ParticipantStatus::Disconnected => {
                return Err(Refused::HasLeft {
                    user: user.to_owned(),
                    sid: sid.to_owned(),
                }
                .into_api(String::new));
            }
        }
        let name = me.name.clone();
        let others = s.connected_others(user);
        if others.is_empty() {
            return Err(super::messages::nobody_connected(s, user).into_api(String::new));
        }
        if !state.composing.admit(
            user,
            sid,
            ind.state.as_deref() == Some("active"),
            Instant::now(),
        ) {
            return Err(Refused::ComposingRate.into_api(String::new));
        }
        // OMA's XSD requires a `messageId` on every messageNotification: an indication
        // gets one of its own, which names no stored message (`composing-…`).
        let (indication_id, _) = state.new_id("composing");
        let outbox = others
            .into_iter()
            .map(|to| {
                let n = Notification::from(MessageNotification {
                    sender_address: user.to_owned(),
                    sender_name: name.clone(),
                    chat_message: None,
                    is_composing: Some(ind.clone()),
                    date_time: Some(crate::time::now_rfc3339()),
                    session_id: sid.to_owned(),
                    message_id: Some(indication_id.clone()),
                    callback_data: None,
                    link: vec![views::session_link(&self.urls, &to, sid)],
                });
                (to, n)
            })
            .collect();
        let deadline = now_ms() + ind.refresh.unwrap_or(DEFAULT_REFRESH) * 1000;
        let mut change = Change::default();
        self.notify_transient(state, &mut change, outbox, deadline);
        Ok(self.submit(state, change))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(state: &str, refresh: Option<i64>) -> IsComposing {
        IsComposing {
            state: Some(state.to_owned()),
            status: None,
            last_active: None,
            content_type: Some("text/plain".to_owned()),
            refresh,
        }
    }

    #[test]
    fn an_indication_is_active_or_idle_with_a_bounded_refresh() {
        let ok = indication(body("Active", None)).expect("active");
        assert_eq!(ok.state.as_deref(), Some("active"));
        assert_eq!(ok.refresh, Some(DEFAULT_REFRESH));
        assert_eq!(ok.content_type.as_deref(), Some("text/plain"));
        assert_eq!(
            indication(body("idle", Some(1))).expect("idle").refresh,
            Some(1)
        );
        assert!(indication(body("idle", Some(MAX_REFRESH))).is_ok());
        // The GSMA gateways' spelling is read as `state`, and told as `state`.
        let gsma = IsComposing {
            state: None,
            status: Some("ACTIVE".to_owned()),
            ..body("x", None)
        };
        let told = indication(gsma).expect("status read as state");
        assert_eq!((told.state.as_deref(), told.status), (Some("active"), None));
        let at = |t: &str| IsComposing {
            last_active: Some(t.to_owned()),
            ..body("active", None)
        };
        assert!(indication(at("2026-12-03T17:00:00Z")).is_ok());
        assert!(indication(at("2026-12-03T17:00:00.250+01:00")).is_ok());
        // Told in the spelling typed and XML Schema readers take, the value unchanged.
        let told = indication(at(" 2026-12-03t17:00:00.250z")).expect("a date-time");
        assert_eq!(
            told.last_active.as_deref(),
            Some("2026-12-03T17:00:00.250Z")
        );
        for bad in [
            body("typing", None),
            body("", None),
            body("active", Some(0)),
            body("active", Some(MAX_REFRESH + 1)),
            body("active", Some(-5)),
            at("yesterday"),
            at("2026-02-30T10:00:00Z"),
            at(""),
        ] {
            assert!(
                matches!(indication(bad.clone()), Err(Refused::Invalid(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn one_indication_per_sender_per_gap_and_the_log_is_bounded() {
        let mut log = Log::default();
        let t0 = Instant::now();
        assert!(log.admit("a", "s1", true, t0));
        assert!(!log.admit("a", "s1", true, t0 + GAP / 2), "too soon");
        assert!(
            log.admit("b", "s1", true, t0 + GAP / 2),
            "another sender is not limited"
        );
        assert!(log.admit("a", "s1", true, t0 + GAP));
        // Full of recent senders: the oldest is forgotten, the log never passes its cap.
        let mut log = Log::default();
        for i in 0..LOG_CAP {
            assert!(log.admit(&format!("s{i}"), "s", true, t0));
        }
        assert!(log.admit("late", "s", true, t0 + GAP / 2));
        assert_eq!(log.len(), LOG_CAP);
        // Once the gap has passed, a full log drops every stale entry.
        assert!(log.admit("later", "s", true, t0 + GAP * 2));
        assert!(log.len() <= 2, "{}", log.len());
    }

    #[test]
    fn the_idle_that_ends_an_active_is_admitted_at_once_and_only_once() {
        let mut log = Log::default();
        let t0 = Instant::now();
        assert!(log.admit("a", "s1", true, t0));
        assert!(
            !log.admit("a", "s2", false, t0 + GAP / 4),
            "an idle in another session ends nothing"
        );
        assert!(log.admit("a", "s1", false, t0 + GAP / 4), "stopped typing");
        assert!(!log.admit("a", "s1", false, t0 + GAP / 2), "a second idle");
        assert!(
            !log.admit("a", "s1", true, t0 + GAP / 2),
            "typing again waits a gap"
        );
        assert!(log.admit("a", "s1", true, t0 + GAP / 4 + GAP));
        // An idle first is limited like any indication.
        let mut log = Log::default();
        assert!(log.admit("a", "s1", false, t0));
        assert!(!log.admit("a", "s1", false, t0 + GAP / 2));
    }

    #[test]
    fn a_new_session_is_weighed_as_admit_weighs_it_without_being_remembered() {
        let mut log = Log::default();
        let t0 = Instant::now();
        assert!(log.admits_in_new_session("a", t0), "never indicated");
        assert!(log.admit("a", "s1", true, t0));
        assert!(!log.admits_in_new_session("a", t0 + GAP / 2));
        assert!(!log.admit("a", "s2", true, t0 + GAP / 2), "the same answer");
        assert!(log.admits_in_new_session("b", t0 + GAP / 2));
        assert!(log.admits_in_new_session("a", t0 + GAP));
        assert_eq!(log.len(), 1, "weighing remembers nothing");
        assert!(log.admit("a", "s2", true, t0 + GAP));
    }
}
