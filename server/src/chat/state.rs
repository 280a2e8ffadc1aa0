//! The records the chat core keeps: subscriptions, sessions, participants and messages.

use crate::notify::Queue;
use netapi_chat_api::{CallbackReference, MessageStatus, ParticipantStatus};
use std::collections::HashMap;
use std::time::Instant;

/// Everything the server knows, behind one lock (see [`super::Chat`]).
#[derive(Default)]
pub struct State {
    /// Subscriptions by id.
    pub subscriptions: HashMap<String, Subscription>,
    /// Subscription ids per user address, so a notification finds its callbacks at once.
    pub user_subscriptions: HashMap<String, Vec<String>>,
    /// Sessions by id.
    pub sessions: HashMap<String, Session>,
    /// Session ids per user address, in creation order.
    pub user_sessions: HashMap<String, Vec<String>>,
    /// Source of ids.
    pub next_id: u64,
}

impl State {
    /// A fresh id with a readable prefix (`sess-…`, `msg-…`, `sub-…`).
    pub fn new_id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!(
            "{prefix}-{}-{}",
            self.next_id,
            uuid::Uuid::new_v4().simple()
        )
    }
}

/// One chat notification subscription.
pub struct Subscription {
    pub id: String,
    pub user: String,
    pub callback: CallbackReference,
    /// Granted duration in seconds (0 = no expiry).
    pub duration: i64,
    pub expires_at: Option<Instant>,
    pub client_correlator: Option<String>,
    /// Its delivery queue.
    pub queue: Queue,
}

/// Where an invitation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invitation {
    /// The originator: never invited.
    None,
    /// Waiting for an answer; `seq` tells this invitation's timer from an older one's.
    Pending {
        seq: u64,
    },
    Accepted,
    Declined,
    /// Nobody answered in time: the session is no longer visible to the invitee.
    TimedOut,
    /// The inviter withdrew it: the session is no longer visible to the invitee.
    Cancelled,
}

/// A participant of a session.
#[derive(Clone, Debug)]
pub struct Participant {
    pub address: String,
    pub name: Option<String>,
    pub is_originator: bool,
    pub status: ParticipantStatus,
    pub invitation: Invitation,
    /// Who sent the invitation (the originator, or whoever extended the session).
    pub invited_by: String,
}

impl Participant {
    /// Whether the session is still a resource for this participant (seed 7.1.7 c: an
    /// invitation that timed out makes the session invalid for the invitee).
    pub fn sees_session(&self) -> bool {
        !matches!(
            self.invitation,
            Invitation::TimedOut | Invitation::Cancelled
        )
    }
}

/// A chat session (1-1 or group).
pub struct Session {
    pub id: String,
    pub subject: Option<String>,
    pub originator: String,
    pub originator_name: Option<String>,
    pub client_correlator: Option<String>,
    /// The originator first, then invitees in invitation order.
    pub participants: Vec<Participant>,
    pub messages: Vec<Message>,
    /// True once more than one invitee was ever invited.
    pub group: bool,
    pub ended: bool,
}

impl Session {
    /// The participant with this address.
    pub fn participant(&self, address: &str) -> Option<&Participant> {
        self.participants.iter().find(|p| p.address == address)
    }

    /// The participant with this address, for changes.
    pub fn participant_mut(&mut self, address: &str) -> Option<&mut Participant> {
        self.participants.iter_mut().find(|p| p.address == address)
    }

    /// Addresses of connected participants other than `except`.
    pub fn connected_others(&self, except: &str) -> Vec<String> {
        self.participants
            .iter()
            .filter(|p| p.address != except && p.status == ParticipantStatus::Connected)
            .map(|p| p.address.clone())
            .collect()
    }
}

/// A chat message and its delivery state per recipient.
pub struct Message {
    pub id: String,
    pub sender: String,
    pub text: String,
    pub date_time: String,
    pub report_delivered: bool,
    pub report_displayed: bool,
    pub client_correlator: Option<String>,
    /// Each recipient (connected when it was sent) and the status it confirmed.
    pub recipients: Vec<(String, MessageStatus)>,
}

/// Order of delivery statuses: a confirmation may only move forward.
pub fn status_rank(s: MessageStatus) -> u8 {
    match s {
        MessageStatus::Sent => 0,
        MessageStatus::Delivered => 1,
        MessageStatus::Displayed => 2,
        MessageStatus::Failed => 3,
    }
}
