//! Seed 7.1.7 (accept / decline, and an invitation nobody answered) and 7.1.8 (leave /
//! re-join): a participant's own status, and the reads of participants.
//!
//! A participant is never removed from its session (its position names it for good); what
//! changes is its `status` and its `invitation`, which together say whether the session is still
//! a resource for it (`Participant::sees_session`).
//!
//! Rules (plain functions, tested below): [`set_status`] (accept, decline, leave, re-join)
//! and [`time_out`] (an invitation nobody answered).

use super::page::{self, PageRequest};
use super::refused::Refused;
use super::sessions::end_for_all;
use super::state::{Invitation, Session};
use super::views;
use super::{Chat, Decision, Outbox, durable, missing};
use crate::urls::Urls;
use netapi_chat_api::{
    EventType, ParticipantInformation, ParticipantList, ParticipantSessionStatus, ParticipantStatus,
};
use netapi_chat_runtime::ApiError;

impl Chat {
    /// Seed 7.1.7 c: nobody answered the invitation in time. The invitee's status becomes
    /// `Disconnected`, the session disappears for it, the inviter and the invitee get a
    /// `Timeout` event and the other connected participants a status notification. A 1-1
    /// session whose only invitation timed out ends. The rule is `time_out`.
    pub(super) fn invitation_timed_out(&self, sid: &str, address: &str, seq: u64) {
        let mut state = self.write_state();
        let Some(d) = state
            .sessions
            .get(sid)
            .and_then(|s| time_out(&self.urls, s, address, seq))
        else {
            return;
        };
        // Nobody waits: a timer (or the delivery task) made this change.
        drop(self.apply(&mut state, d));
    }

    /// One page of the session's participants: the originator first, then in invitation
    /// order. A participant's position is its place in the session (1 for the originator);
    /// participants are never removed from a session, so a position always names the same one.
    pub fn list_participants(
        &self,
        user: &str,
        sid: &str,
        req: PageRequest,
    ) -> Result<ParticipantList, ApiError> {
        let state = self.read_state();
        let s = self.visible(&state, user, sid)?;
        let entries = (1u64..).zip(&s.participants);
        let p = page::page(entries, req);
        let resource_url = self.urls.participants(user, sid);
        Ok(ParticipantList {
            participant: p
                .items
                .into_iter()
                .map(|p| views::participant(&self.urls, user, s, p))
                .collect(),
            link: page::next_links(&resource_url, req, p.next),
            resource_url: Some(resource_url),
        })
    }

    /// One participant.
    pub fn get_participant(
        &self,
        user: &str,
        sid: &str,
        pid: &str,
    ) -> Result<ParticipantInformation, ApiError> {
        let state = self.read_state();
        let s = self.visible(&state, user, sid)?;
        let p = s
            .participant(pid)
            .ok_or_else(|| missing(&self.urls.participant(user, sid, pid)))?;
        Ok(views::participant(&self.urls, user, s, p))
    }

    /// A participant's status.
    pub fn get_participant_status(
        &self,
        user: &str,
        sid: &str,
        pid: &str,
    ) -> Result<ParticipantSessionStatus, ApiError> {
        let state = self.read_state();
        let s = self.visible(&state, user, sid)?;
        let p = s
            .participant(pid)
            .ok_or_else(|| missing(&self.urls.participant_status(user, sid, pid)))?;
        Ok(ParticipantSessionStatus { status: p.status })
    }

    /// Seed 7.1.7 (accept / decline) and 7.1.8 (leave / re-join): the participant sets its
    /// own status. The rule is `set_status`.
    pub async fn update_participant_status(
        &self,
        user: &str,
        sid: &str,
        pid: &str,
        wanted: ParticipantStatus,
    ) -> Result<ParticipantSessionStatus, ApiError> {
        let rx = {
            let mut state = self.write_state();
            let connected_now = state.open_sessions(user);
            let s = self.visible(&state, user, sid)?;
            let d = set_status(
                &self.urls,
                s,
                user,
                pid,
                wanted,
                connected_now,
                self.settings.limits.sessions_per_user,
            )
            .map_err(|r| r.into_api(|| self.urls.participant_status(user, sid, pid)))?;
            self.apply(&mut state, d)
        };
        durable(rx).await?;
        Ok(ParticipantSessionStatus { status: wanted })
    }
}

/// Seed 7.1.7 c, the rule: the invitation `seq` of `address` in `s` ran out. Nothing happens
/// unless it is still that participant's pending invitation (answered, cancelled or replaced
/// since: the timer is stale). Otherwise the invitee is `Disconnected` and no longer sees the
/// session, the inviter and the invitee get a `Timeout` event, the other connected
/// participants its new status, and a 1-1 session ends. In a group, which goes on, a connected
/// inviter gets the new status too, after the event: a client keeps its roster from status
/// notifications (OMA 2012's `participantStatusNotification`), and a decline tells it so.
fn time_out(urls: &Urls, s: &Session, address: &str, seq: u64) -> Option<Decision> {
    let p = s.participant(address)?;
    if !matches!(p.invitation, Invitation::Pending { seq: current, .. } if current == seq) {
        return None;
    }
    let inviter = p.invited_by.clone();
    let mut s = s.clone();
    if let Some(p) = s.participant_mut(address) {
        p.invitation = Invitation::TimedOut;
        p.status = ParticipantStatus::Disconnected;
    }
    let text = format!("the invitation of {address} was not answered in time");
    let mut outbox = vec![
        (
            inviter.clone(),
            views::event(urls, &inviter, &s, EventType::Timeout, text.clone()),
        ),
        (
            address.to_owned(),
            views::event(urls, address, &s, EventType::Timeout, text),
        ),
    ];
    if s.group
        && s.participant(&inviter)
            .is_some_and(|i| i.status == ParticipantStatus::Connected)
        && let Some(p) = s.participant(address)
    {
        outbox.push((
            inviter.clone(),
            views::participant_status(urls, &inviter, &s, &[p]),
        ));
    }
    outbox.extend(invitation_gone(
        urls,
        &mut s,
        address,
        &inviter,
        "the only invitation timed out",
    ));
    Some(Decision { session: s, outbox })
}

/// Seed 7.1.7 / 7.1.8, the rule: `user` sets the status of `pid` in `s` (which it sees) to
/// `wanted`.
///
/// Only its own status, never `Invited`, never the one it has. With an invitation pending,
/// `Connected` accepts and `Disconnected` declines; a declined invitee cannot join; otherwise
/// `Disconnected` leaves and `Connected` re-joins. Accepting or re-joining needs room under
/// `limit` open sessions (`user` is connected to `open_sessions`). The connected others are
/// told the new status, and so is the inviter of an answered invitation; a declined 1-1
/// session ends for everyone.
pub(super) fn set_status(
    urls: &Urls,
    s: &Session,
    user: &str,
    pid: &str,
    wanted: ParticipantStatus,
    open_sessions: usize,
    limit: usize,
) -> Result<Decision, Refused> {
    let p = s.participant(pid).ok_or(Refused::NotFound)?;
    if pid != user {
        return Err(Refused::NotOwnStatus {
            user: user.to_owned(),
            pid: pid.to_owned(),
        });
    }
    let (next_invitation, event) = match (wanted, p.invitation, p.status) {
        (ParticipantStatus::Invited, ..) => return Err(Refused::InvitedIsServerSet),
        (s2, _, current) if s2 == current => {
            return Err(Refused::AlreadyStatus {
                pid: pid.to_owned(),
                current,
            });
        }
        (ParticipantStatus::Connected, Invitation::Pending { .. }, _) => {
            (Invitation::Accepted, Some(EventType::Accepted))
        }
        (ParticipantStatus::Disconnected, Invitation::Pending { .. }, _) => {
            (Invitation::Declined, Some(EventType::Declined))
        }
        (ParticipantStatus::Connected, Invitation::Declined, _) => {
            return Err(Refused::Declined {
                pid: pid.to_owned(),
                sid: s.id.clone(),
            });
        }
        (_, inv, _) => (inv, None),
    };
    // Accepting or re-joining makes one more open session for this user (it is not
    // connected here yet: that was refused above).
    if wanted == ParticipantStatus::Connected && open_sessions >= limit {
        return Err(Refused::TooMany {
            what: "open sessions of this user",
            limit,
        });
    }
    let mut s = s.clone();
    if let Some(p) = s.participant_mut(pid) {
        p.status = wanted;
        p.invitation = next_invitation;
    }
    let mut outbox = Outbox::new();
    if let Some(p) = s.participant(pid) {
        let mut told = s.connected_others(pid);
        if event.is_some() && !told.contains(&p.invited_by) && p.invited_by != pid {
            told.push(p.invited_by.clone());
        }
        for other in told {
            outbox.push((
                other.clone(),
                views::participant_status(urls, &other, &s, &[p]),
            ));
        }
    }
    if event == Some(EventType::Declined) && !s.group {
        s.ended = true;
        outbox.extend(end_for_all(
            urls,
            &mut s,
            "the invitation was declined",
            Some(pid),
        ));
    }
    Ok(Decision { session: s, outbox })
}

/// An invitation that ended unanswered (timed out or cancelled): the connected participants
/// other than the inviter (who is told otherwise) see the invitee `Disconnected`, and a 1-1
/// session, whose only invitation this was, ends.
pub(super) fn invitation_gone(
    urls: &Urls,
    s: &mut Session,
    invitee: &str,
    inviter: &str,
    why: &str,
) -> Outbox {
    let mut outbox = Outbox::new();
    if let Some(p) = s.participant(invitee) {
        for other in s
            .connected_others(invitee)
            .into_iter()
            .filter(|o| o != inviter)
        {
            outbox.push((
                other.clone(),
                views::participant_status(urls, &other, s, &[p]),
            ));
        }
    }
    if !s.group && !s.ended {
        s.ended = true;
        outbox.extend(end_for_all(urls, s, why, Some(inviter)));
    }
    outbox
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::super::visible_to;
    use super::*;

    /// (status, invitation) of each participant after the change, the session ended or not,
    /// and who was told what.
    fn outcome(d: &Decision, who: &str) -> ((ParticipantStatus, Invitation), bool, Vec<String>) {
        (state_of(&d.session, who), d.session.ended, told(&d.outbox))
    }

    /// Seed 7.1.7 and 7.1.8: each answer an invitee or participant can give, its new state,
    /// whether the session ends, and who hears of it.
    #[test]
    fn a_participant_sets_its_own_status() {
        let one = |b: (ParticipantStatus, Invitation)| session(false, &[(B, b.0, b.1)]);
        let group = |b: (ParticipantStatus, Invitation)| {
            session(true, &[(B, b.0, b.1), (C, Connected, Invitation::Accepted)])
        };
        let cases = [
            (
                "accept",
                one((Invited, pending(1))),
                Connected,
                (Connected, Invitation::Accepted),
                false,
                vec![format!("{A} <- status {B}=Connected")],
            ),
            (
                "decline a 1-1 invitation: the session ends",
                one((Invited, pending(1))),
                Disconnected,
                (Disconnected, Invitation::Declined),
                true,
                vec![
                    format!("{A} <- status {B}=Disconnected"),
                    format!("{A} <- SessionEnded"),
                ],
            ),
            (
                "decline a group invitation",
                group((Invited, pending(1))),
                Disconnected,
                (Disconnected, Invitation::Declined),
                false,
                vec![
                    format!("{A} <- status {B}=Disconnected"),
                    format!("{C} <- status {B}=Disconnected"),
                ],
            ),
            (
                "leave",
                group((Connected, Invitation::Accepted)),
                Disconnected,
                (Disconnected, Invitation::Accepted),
                false,
                vec![
                    format!("{A} <- status {B}=Disconnected"),
                    format!("{C} <- status {B}=Disconnected"),
                ],
            ),
            (
                "re-join",
                group((Disconnected, Invitation::Accepted)),
                Connected,
                (Connected, Invitation::Accepted),
                false,
                vec![
                    format!("{A} <- status {B}=Connected"),
                    format!("{C} <- status {B}=Connected"),
                ],
            ),
            (
                "leave a 1-1 session: it stays, for re-joining",
                one((Connected, Invitation::Accepted)),
                Disconnected,
                (Disconnected, Invitation::Accepted),
                false,
                vec![format!("{A} <- status {B}=Disconnected")],
            ),
        ];
        for (case, s, wanted, state, ended, notified) in cases {
            let d = set_status(&urls(), &s, B, B, wanted, 0, 10).unwrap();
            assert_eq!(outcome(&d, B), (state, ended, notified), "{case}");
        }
    }

    /// The inviter hears the answer to its invitation even when it is no longer connected;
    /// a participant that merely leaves is told to the connected ones only.
    #[test]
    fn the_inviter_hears_the_answer_even_when_it_left() {
        let mut s = session(
            true,
            &[
                (B, Invited, pending(1)),
                (C, Connected, Invitation::Accepted),
            ],
        );
        if let Some(a) = s.participant_mut(A) {
            a.status = Disconnected;
        }
        let d = set_status(&urls(), &s, B, B, Connected, 0, 10).unwrap();
        assert_eq!(
            told(&d.outbox),
            [
                format!("{C} <- status {B}=Connected"),
                format!("{A} <- status {B}=Connected")
            ]
        );
    }

    #[test]
    fn a_status_change_is_refused() {
        let s = session(
            true,
            &[
                (B, Connected, Invitation::Accepted),
                (C, Disconnected, Invitation::Declined),
                (D, Invited, pending(1)),
            ],
        );
        let limit = Refused::TooMany {
            what: "open sessions of this user",
            limit: 3,
        };
        let cases = [
            (
                "double accept",
                B,
                B,
                Connected,
                0,
                Refused::AlreadyStatus {
                    pid: B.into(),
                    current: Connected,
                },
            ),
            (
                "join after declining",
                C,
                C,
                Connected,
                0,
                Refused::Declined {
                    pid: C.into(),
                    sid: "sess-1".into(),
                },
            ),
            (
                "leave twice",
                C,
                C,
                Disconnected,
                0,
                Refused::AlreadyStatus {
                    pid: C.into(),
                    current: Disconnected,
                },
            ),
            (
                "Invited is the server's",
                D,
                D,
                Invited,
                0,
                Refused::InvitedIsServerSet,
            ),
            (
                "someone else's status",
                A,
                B,
                Disconnected,
                0,
                Refused::NotOwnStatus {
                    user: A.into(),
                    pid: B.into(),
                },
            ),
            (
                "no such participant",
                A,
                STRANGER,
                Disconnected,
                0,
                Refused::NotFound,
            ),
            (
                "accept with no room for one more session",
                D,
                D,
                Connected,
                3,
                limit,
            ),
        ];
        for (case, user, pid, wanted, open, why) in cases {
            let d = set_status(&urls(), &s, user, pid, wanted, open, 3);
            assert_eq!(d.map(|_| ()).unwrap_err(), why, "{case}");
        }
        // Only connecting needs room: declining or leaving at the limit is fine.
        assert!(set_status(&urls(), &s, D, D, Disconnected, 3, 3).is_ok());
        assert!(set_status(&urls(), &s, B, B, Disconnected, 3, 3).is_ok());
    }

    /// Seed 7.1.7 c: an invitation nobody answered. Both ends hear `Timeout`, the other
    /// connected participants (in a group, the inviter too) the invitee's new status; a 1-1
    /// session ends; the invitee no
    /// longer sees the session, so accepting afterwards is a 404.
    #[test]
    fn an_unanswered_invitation_times_out() {
        let one = session(false, &[(B, Invited, pending(1))]);
        let d = time_out(&urls(), &one, B, 1).unwrap();
        assert_eq!(
            outcome(&d, B),
            (
                (Disconnected, Invitation::TimedOut),
                true,
                vec![format!("{A} <- Timeout"), format!("{B} <- Timeout")]
            )
        );

        let group = session(
            true,
            &[
                (B, Connected, Invitation::Accepted),
                (C, Invited, pending(1)),
            ],
        );
        let d = time_out(&urls(), &group, C, 1).unwrap();
        assert_eq!(
            outcome(&d, C),
            (
                (Disconnected, Invitation::TimedOut),
                false,
                vec![
                    format!("{A} <- Timeout"),
                    format!("{C} <- Timeout"),
                    format!("{A} <- status {C}=Disconnected"),
                    format!("{B} <- status {C}=Disconnected"),
                ]
            )
        );
        assert!(
            !visible_to(&d.session, C),
            "accepting after the timeout is a 404"
        );
        assert!(visible_to(&d.session, B));
    }

    /// A timer whose invitation was answered, replaced or never existed does nothing.
    #[test]
    fn a_stale_timer_does_nothing() {
        let s = session(
            true,
            &[
                (B, Invited, pending(2)),
                (C, Connected, Invitation::Accepted),
            ],
        );
        assert!(
            time_out(&urls(), &s, B, 1).is_none(),
            "an older invitation's timer"
        );
        assert!(
            time_out(&urls(), &s, C, 2).is_none(),
            "an accepted invitation"
        );
        assert!(
            time_out(&urls(), &s, STRANGER, 2).is_none(),
            "no such participant"
        );
        assert!(time_out(&urls(), &s, B, 2).is_some());
    }
}
