//! Start-up: the state rebuilt from the store's snapshot (live records and the undelivered
//! outbox; never messages), delivery queues resumed and deadlines re-armed.
//!
//! Kept apart from the flows because it is the one place that trusts nothing it reads: a record
//! that does not decode stops the start (see [`Chat::restore`]).

use super::records;
use super::state::{Invitation, Session, SubscriptionRecord};
use super::{Change, Chat};
use crate::notify::Delivery;
use crate::store::{Kind, Snapshot};
use slog::info;
use std::sync::Arc;

impl Chat {
    /// Rebuilds the state from the stored records (see [`records`]). A record that does not
    /// read as its stored type stops the start with an error naming it: guessing would serve
    /// wrong data, and skipping would lose it at the next write.
    pub(super) fn restore(self: &Arc<Self>, snapshot: Snapshot) -> Result<(), String> {
        let bad = |kind: Kind, key: &str, e: String| {
            format!("stored {} `{key}` is unreadable: {e}", kind.name())
        };
        if let Some(m) = &snapshot.migrated {
            info!(self.log, "stored format migrated"; "from_version" => m.from, "to_version" => m.to, "records_rewritten" => m.records, "notifications_rewritten" => m.outbox);
        }
        let mut state = self.lock();
        let mut subs: Vec<SubscriptionRecord> = Vec::new();
        let mut sessions: Vec<Session> = Vec::new();
        for (kind, key, value) in snapshot.records {
            match kind {
                Kind::Meta => {
                    state.counters =
                        records::decode_counters(&value).map_err(|e| bad(kind, &key, e))?
                }
                Kind::Subscription => {
                    subs.push(records::decode_subscription(&value).map_err(|e| bad(kind, &key, e))?)
                }
                Kind::Session => {
                    sessions.push(records::decode_session(&value).map_err(|e| bad(kind, &key, e))?)
                }
                // Messages stay in the store and are read on demand; a backend never hands
                // them over at start-up.
                Kind::Message => {
                    return Err(bad(
                        kind,
                        &key,
                        "messages are not loaded at start-up".to_owned(),
                    ));
                }
            }
        }
        sessions.sort_by_key(|s| s.seq);
        // Earlier versions kept ended sessions readable; they are gone now: their records
        // (and messages) are deleted once, here, instead of being loaded.
        let (ended, sessions): (Vec<Session>, Vec<Session>) =
            sessions.into_iter().partition(|s| s.ended);
        if !ended.is_empty() {
            let mut change = Change::default();
            for s in &ended {
                change.batch.deletes.push((Kind::Session, s.id.clone()));
            }
            self.store.submit_detached(change.batch);
        }
        for s in sessions {
            for p in &s.participants {
                state
                    .user_sessions
                    .entry(p.address.clone())
                    .or_default()
                    .push(s.id.clone());
            }
            state.sessions.insert(s.id.clone(), s);
        }
        subs.sort_by_key(|s| s.seq);
        for rec in subs {
            self.attach_subscription(&mut state, rec);
        }
        let mut resumed = 0usize;
        for e in snapshot.outbox {
            let Some(sub) = state.subscriptions.get(&e.subscription) else {
                continue;
            };
            let notification = records::decode_notification(&e.body)
                .map_err(|err| format!("stored notification {} is unreadable: {err}", e.id))?;
            sub.queue.push(Delivery {
                id: e.id,
                notification,
            });
            resumed += 1;
        }
        // Timers: what was pending before the restart fires as if the server had stayed up.
        let mut invitations = Vec::new();
        for s in state.sessions.values() {
            for p in &s.participants {
                if let Invitation::Pending { seq, deadline_ms } = p.invitation {
                    invitations.push((s.id.clone(), p.address.clone(), seq, deadline_ms));
                }
            }
        }
        let expiries: Vec<(String, i64)> = state
            .subscriptions
            .values()
            .filter_map(|s| s.rec.expires_at_ms.map(|t| (s.rec.id.clone(), t)))
            .collect();
        let counts = (state.sessions.len(), state.subscriptions.len());
        drop(state);
        for (sid, address, seq, deadline) in invitations {
            self.invitation_timer(sid, address, seq, deadline);
        }
        for (id, at) in expiries {
            self.expiry_timer(id, at);
        }
        info!(self.log, "state restored"; "sessions" => counts.0, "subscriptions" => counts.1, "pending_notifications" => resumed);
        Ok(())
    }
}
