//! The hand-written handler bodies: one method per operation of the spec, each naming the seed
//! section (flow) it serves. They check the addresses in the request and hand over to the chat
//! core ([`crate::chat`]); formats, negotiation and error rendering are generated around them.

use crate::address;
use crate::auth::{self, TokenVerifier};
use crate::chat::Chat;
use crate::chat::page::{self, PageRequest};
use crate::rate::{AuthFailures, RateLimiter};
use netapi_chat_api::{
    ChatMessage, ChatMessageList, ChatNotificationSubscription, ChatService,
    ChatSessionInformation, ChatSessionList, ChatSubscription, ChatSubscriptionList, Created,
    DeadLetterList, GroupChatSessionInformation, Headed, IsComposing,
    ListChatNotificationSubscriptionsHeaders, ListChatNotificationSubscriptionsQuery,
    ListChatSessionsHeaders, ListChatSessionsQuery, ListChatSubscriptionsHeaders,
    ListChatSubscriptionsQuery, ListDeadLettersHeaders, ListDeadLettersQuery,
    ListGroupChatParticipantsHeaders, ListGroupChatParticipantsQuery, ListMessagesHeaders,
    ListMessagesQuery, ListNotificationChannelsHeaders, ListNotificationChannelsQuery,
    ListParticipantsHeaders, ListParticipantsQuery, MessageDeliveryStatus, MessageStatusReport,
    NotificationChannel, NotificationChannelLifetime, NotificationChannelList, NotificationList,
    ParticipantInformation, ParticipantList, ParticipantSessionStatus, PollNotificationsHeaders,
    PollNotificationsQuery, ResourceReference, SubscriptionSecret,
};
use netapi_chat_runtime::ApiError;
use netapi_chat_runtime::wire::OneOf;
use std::net::SocketAddr;
use std::sync::Arc;

/// The server: the chat core behind the generated [`ChatService`] trait.
#[derive(Clone)]
pub struct ChatServer {
    /// The chat core.
    pub chat: Arc<Chat>,
    /// Checks access tokens (token file or JWT).
    pub verifier: Arc<dyn TokenVerifier>,
    /// Request rate per token.
    pub rate: Arc<RateLimiter>,
    /// Failed authentications per client address.
    pub auth_failures: Arc<AuthFailures>,
    /// Readiness (`/readyz`, see [`crate::health`]).
    pub health: Arc<crate::health::Health>,
    /// The token that opens `/metrics` (see [`crate::metrics`]); `None`: metrics are off.
    pub metrics_token: Option<String>,
    /// The admin endpoints' settings (see [`crate::admin_api`]); `None`: there are none.
    pub admin: Option<Arc<crate::admin_api::Admin>>,
    /// The published OpenAPI document as this server serves it (`/openapi.json`): its
    /// `servers` name this server's public URL ([`crate::server::published_document`]).
    pub openapi: bytes::Bytes,
    /// Notification-channel WebSockets open, against their share of the connection cap
    /// ([`crate::channel_socket::Sockets`]).
    pub sockets: Arc<crate::channel_socket::Sockets>,
    /// Long polls waiting and sockets open per token, against each token's share of the
    /// connection cap ([`crate::rate::Waits`]).
    pub waits: Arc<crate::rate::Waits>,
}

/// An address the client gave, as the core knows it: `acr:auth` (OMA's name for the token's
/// own user) is `user`, the path's user it was already resolved to; any other is put in its
/// canonical form (400 `SVC0004` for one that is not a user address).
fn resolved(user: &str, given: &str) -> Result<String, ApiError> {
    if auth::is_acr_auth(given) {
        return Ok(user.to_owned());
    }
    address::canonical(given)
}

/// OMA 2012's flat one-to-one addresses of a start body (`tParticipantAddress`,
/// `originatorAddress`) [`resolved`]: compared with the URL's users and the `participant`s
/// as every address is, in canonical form (on either face).
fn canonical_flat_addresses(user: &str, body: &mut ChatSessionInformation) -> Result<(), ApiError> {
    for a in [
        &mut body.t_participant_address,
        &mut body.originator_address,
    ]
    .into_iter()
    .flatten()
    {
        *a = resolved(user, a)?;
    }
    Ok(())
}

/// Every participant address of a body [`resolved`].
fn canonical_participants(user: &str, list: &mut [ParticipantInformation]) -> Result<(), ApiError> {
    for p in list {
        p.address = resolved(user, &p.address)?;
    }
    Ok(())
}

/// A participant id of a path [`resolved`]; one that is no address at all names nothing (404
/// later).
fn participant(user: &str, id: String) -> String {
    resolved(user, &address::from_path(&id)).unwrap_or(id)
}

impl ChatServer {
    /// A place among the channels the token `authorization` names reads
    /// ([`crate::rate::Waits`]): a long poll or a socket on `channel` holds it while it waits.
    pub(crate) fn wait_slot(
        &self,
        authorization: Option<&str>,
        channel: &str,
    ) -> Result<crate::rate::WaitSlot, ApiError> {
        let principal = auth::authenticate(self.verifier.as_ref(), authorization)?;
        self.waits.take(&principal.token_id, channel)
    }

    /// The token of the request being served ([`auth::Principal::token_id`], which
    /// `authorize` has just verified): what a session, subscription or channel it makes counts
    /// against, its share of the server-wide cap (`NETAPI_CHAT_TOKEN_SHARE_PERCENT`). Read
    /// from a verification (a JWT's verdict cache, else its signature checked again), not
    /// from `TokenVerifier::token_id_of`, which for a JWT the cache does not hold (its users
    /// too many to cache, or evicted) gives the token's digest: a subject fetching a new JWT
    /// for each create then held a share per token (the diff review). Every operation runs in
    /// its request's credentials' scope, so it is never empty there.
    fn owner(&self) -> String {
        let credentials = netapi_chat_runtime::negotiate::request_credentials();
        match auth::authenticate(self.verifier.as_ref(), credentials.as_deref()) {
            Ok(principal) => principal.token_id,
            // Revoked since `authorize` (a token file reloaded in between): its fingerprint.
            Err(_) => auth::bearer_token(credentials.as_deref())
                .map(|bearer| self.verifier.token_id_of(bearer))
                .unwrap_or_default(),
        }
    }
}

impl ChatService for ChatServer {
    /// Every operation: who is calling (401 without valid credentials), and may it act for the
    /// path's user (403 otherwise)? Answers the canonical address (`acr:auth` resolved). An
    /// address with too many recent failures gets 429 before its credentials are looked at.
    /// After a storage failure every operation is 503 until the process has stopped.
    fn authorize(
        &self,
        authorization: Option<&str>,
        user: &str,
        peer: SocketAddr,
    ) -> Result<String, ApiError> {
        self.chat.check_store()?;
        self.auth_failures.check(peer.ip())?;
        let principal = match auth::authenticate(self.verifier.as_ref(), authorization) {
            Ok(p) => p,
            Err(e) => {
                self.auth_failures.failed(peer.ip());
                return Err(e.into());
            }
        };
        self.rate.check(&principal.token_id)?;
        Ok(auth::resolve_user(&principal, user)?)
    }

    /// One page of the user's subscriptions ("Lists are paged" in the spec).
    async fn list_chat_subscriptions(
        &self,
        user_id: String,
        query: ListChatSubscriptionsQuery,
    ) -> Result<Headed<ChatSubscriptionList, ListChatSubscriptionsHeaders>, ApiError> {
        let req = PageRequest::new(query.max_entries, query.cursor.as_deref())?;
        let body = self.chat.list_subscriptions(&user_id, req);
        let link = page::link_header(&body.link);
        Ok(Headed {
            body,
            headers: ListChatSubscriptionsHeaders { link },
        })
    }

    /// Seed 7.1.1 "Subscribe and unsubscribe to chat notifications": subscribe.
    async fn create_chat_subscription(
        &self,
        user_id: String,
        body: ChatSubscription,
    ) -> Result<Created<ChatSubscription>, ApiError> {
        self.chat
            .create_subscription(&user_id, &self.owner(), body)
            .await
    }

    async fn get_chat_subscription(
        &self,
        user_id: String,
        subscription_id: String,
    ) -> Result<ChatSubscription, ApiError> {
        self.chat.get_subscription(&user_id, &subscription_id)
    }

    /// Seed 7.1.1 "Subscribe and unsubscribe to chat notifications": unsubscribe.
    async fn delete_chat_subscription(
        &self,
        user_id: String,
        subscription_id: String,
    ) -> Result<(), ApiError> {
        self.chat
            .delete_subscription(&user_id, &subscription_id)
            .await
    }

    /// Extension: a new signing secret for one subscription (the previous one signs too for a
    /// while).
    async fn rotate_subscription_secret(
        &self,
        user_id: String,
        subscription_id: String,
        body: SubscriptionSecret,
    ) -> Result<SubscriptionSecret, ApiError> {
        self.chat
            .rotate_subscription_secret(&user_id, &subscription_id, &body.signing_secret)
            .await
    }

    /// (extension, issue 13 item 3) One page of what was not delivered to the user's
    /// subscription, oldest first.
    async fn list_dead_letters(
        &self,
        user_id: String,
        subscription_id: String,
        query: ListDeadLettersQuery,
    ) -> Result<Headed<DeadLetterList, ListDeadLettersHeaders>, ApiError> {
        let req = PageRequest::new(query.max_entries, query.cursor.as_deref())?;
        let body = self
            .chat
            .list_dead_letters(&user_id, &subscription_id, req, query.since.as_deref())
            .await?;
        let link = page::link_header(&body.link);
        Ok(Headed {
            body,
            headers: ListDeadLettersHeaders { link },
        })
    }

    /// (extension, issue 13 item 3) Enables the user's subscription again and sends its dead
    /// letters again, in order, with their `webhook-id`s.
    async fn redeliver_dead_letters(
        &self,
        user_id: String,
        subscription_id: String,
    ) -> Result<ChatSubscription, ApiError> {
        self.chat
            .redeliver_dead_letters(&user_id, &subscription_id)
            .await
    }

    /// One page of the sessions the user takes part in.
    async fn list_chat_sessions(
        &self,
        user_id: String,
        query: ListChatSessionsQuery,
    ) -> Result<Headed<ChatSessionList, ListChatSessionsHeaders>, ApiError> {
        let req = PageRequest::new(query.max_entries, query.cursor.as_deref())?;
        let body = self.chat.list_sessions(&user_id, req);
        let link = page::link_header(&body.link);
        Ok(Headed {
            body,
            headers: ListChatSessionsHeaders { link },
        })
    }

    /// Seed 7.1.2 "Start a 1-1 chat" and 7.1.4 "Start group chat".
    async fn create_chat_session(
        &self,
        user_id: String,
        mut body: ChatSessionInformation,
    ) -> Result<Created<ChatSessionInformation>, ApiError> {
        canonical_participants(&user_id, &mut body.participant)?;
        canonical_flat_addresses(&user_id, &mut body)?;
        self.chat
            .create_session(&user_id, &self.owner(), body)
            .await
    }

    async fn get_chat_session(
        &self,
        user_id: String,
        session_id: String,
    ) -> Result<ChatSessionInformation, ApiError> {
        self.chat.get_session(&user_id, &session_id)
    }

    /// Seed 7.1.5 "Ending a chat session".
    async fn delete_chat_session(
        &self,
        user_id: String,
        session_id: String,
    ) -> Result<(), ApiError> {
        self.chat.delete_session(&user_id, &session_id).await
    }

    /// One page of a session's participants.
    async fn list_participants(
        &self,
        user_id: String,
        session_id: String,
        query: ListParticipantsQuery,
    ) -> Result<Headed<ParticipantList, ListParticipantsHeaders>, ApiError> {
        let req = PageRequest::new(query.max_entries, query.cursor.as_deref())?;
        let body = self.chat.list_participants(&user_id, &session_id, req)?;
        let link = page::link_header(&body.link);
        Ok(Headed {
            body,
            headers: ListParticipantsHeaders { link },
        })
    }

    /// Seed 7.1.3 "Extending a 1-1 chat to group chat".
    async fn add_participants(
        &self,
        user_id: String,
        session_id: String,
        body: OneOf<ParticipantInformation, ParticipantList>,
    ) -> Result<Created<ParticipantList>, ApiError> {
        // The seed's figure posts one `participantInformation`; a list is the same invitation.
        let mut body = match body {
            OneOf::A(one) => ParticipantList {
                participant: vec![one],
                resource_url: None,
                link: Vec::new(),
            },
            OneOf::B(list) => list,
        };
        canonical_participants(&user_id, &mut body.participant)?;
        self.chat
            .add_participants(&user_id, &session_id, body)
            .await
    }

    async fn get_participant(
        &self,
        user_id: String,
        session_id: String,
        participant_id: String,
    ) -> Result<ParticipantInformation, ApiError> {
        self.chat.get_participant(
            &user_id,
            &session_id,
            &participant(&user_id, participant_id),
        )
    }

    /// Seed 7.1.6 "Cancel a chat invitation".
    async fn cancel_invitation(
        &self,
        user_id: String,
        session_id: String,
        participant_id: String,
    ) -> Result<(), ApiError> {
        self.chat
            .cancel_invitation(
                &user_id,
                &session_id,
                &participant(&user_id, participant_id),
            )
            .await
    }

    async fn get_participant_status(
        &self,
        user_id: String,
        session_id: String,
        participant_id: String,
    ) -> Result<ParticipantSessionStatus, ApiError> {
        self.chat.get_participant_status(
            &user_id,
            &session_id,
            &participant(&user_id, participant_id),
        )
    }

    /// Seed 7.1.7 "Accept or decline a chat session invitation" and 7.1.8 "Leave and re-join a
    /// chat session".
    async fn update_participant_status(
        &self,
        user_id: String,
        session_id: String,
        participant_id: String,
        body: ParticipantSessionStatus,
    ) -> Result<ParticipantSessionStatus, ApiError> {
        self.chat
            .update_participant_status(
                &user_id,
                &session_id,
                &participant(&user_id, participant_id),
                body.status,
            )
            .await
    }

    /// One page of a session's messages, oldest first.
    async fn list_messages(
        &self,
        user_id: String,
        session_id: String,
        query: ListMessagesQuery,
    ) -> Result<Headed<ChatMessageList, ListMessagesHeaders>, ApiError> {
        let req = PageRequest::new(query.max_entries, query.cursor.as_deref())?;
        let body = self.chat.list_messages(&user_id, &session_id, req).await?;
        let link = page::link_header(&body.link);
        Ok(Headed {
            body,
            headers: ListMessagesHeaders { link },
        })
    }

    /// Seed 7.1.9 "Sending a chat message".
    async fn send_message(
        &self,
        user_id: String,
        session_id: String,
        body: ChatMessage,
    ) -> Result<Created<ResourceReference>, ApiError> {
        self.chat.send_message(&user_id, &session_id, body).await
    }

    async fn get_message(
        &self,
        user_id: String,
        session_id: String,
        message_id: String,
    ) -> Result<ChatMessage, ApiError> {
        self.chat
            .get_message(&user_id, &session_id, &message_id)
            .await
    }

    async fn get_message_delivery_status(
        &self,
        user_id: String,
        session_id: String,
        message_id: String,
    ) -> Result<MessageDeliveryStatus, ApiError> {
        let status = self
            .chat
            .get_message_delivery_status(&user_id, &session_id, &message_id)
            .await?;
        Ok(MessageDeliveryStatus { status })
    }

    /// OMA 2012 `isComposing` on the seed face.
    async fn indicate_composing(
        &self,
        user_id: String,
        session_id: String,
        body: IsComposing,
    ) -> Result<(), ApiError> {
        self.chat
            .indicate_composing(&user_id, &session_id, body)
            .await
    }

    /// Seed 7.1.10 "Confirm message delivery success".
    async fn confirm_message_delivery(
        &self,
        user_id: String,
        session_id: String,
        message_id: String,
        body: MessageDeliveryStatus,
    ) -> Result<(), ApiError> {
        self.chat
            .confirm_message_delivery(&user_id, &session_id, &message_id, body.status)
            .await
    }

    // ---------------------------------------------------------------- OMA 2012 face
    // `/chat/v1/{userId}/oneToOne/…` (issue 16): each hands over to the core's adapter of the
    // same name, which checks the peer and calls the seed's entry point (`chat/oma2012.rs`).

    /// OMA 2012 subscriptions: one page of the user's subscriptions as this face shows them.
    async fn list_chat_notification_subscriptions(
        &self,
        user_id: String,
        query: ListChatNotificationSubscriptionsQuery,
    ) -> Result<Headed<ChatSubscriptionList, ListChatNotificationSubscriptionsHeaders>, ApiError>
    {
        let req = PageRequest::new(query.max_entries, query.cursor.as_deref())?;
        let body = self.chat.list_notification_subscriptions(&user_id, req);
        let link = page::link_header(&body.link);
        Ok(Headed {
            body,
            headers: ListChatNotificationSubscriptionsHeaders { link },
        })
    }

    /// OMA 2012 "Subscribe to chat notifications" (seed 7.1.1 on this face; the 2012 profile).
    async fn create_chat_notification_subscription(
        &self,
        user_id: String,
        body: ChatNotificationSubscription,
    ) -> Result<Created<ChatNotificationSubscription>, ApiError> {
        self.chat
            .create_notification_subscription(&user_id, &self.owner(), body)
            .await
    }

    async fn get_chat_notification_subscription(
        &self,
        user_id: String,
        subscription_id: String,
    ) -> Result<ChatNotificationSubscription, ApiError> {
        self.chat
            .get_notification_subscription(&user_id, &subscription_id)
    }

    /// OMA 2012 subscriptions: refresh with PUT (a decision: OMA 2012 has no update).
    async fn update_chat_notification_subscription(
        &self,
        user_id: String,
        subscription_id: String,
        body: ChatNotificationSubscription,
    ) -> Result<ChatNotificationSubscription, ApiError> {
        self.chat
            .update_notification_subscription(&user_id, &subscription_id, body)
            .await
    }

    /// OMA 2012 "Unsubscribe" (seed 7.1.1).
    async fn delete_chat_notification_subscription(
        &self,
        user_id: String,
        subscription_id: String,
    ) -> Result<(), ApiError> {
        self.chat
            .delete_notification_subscription(&user_id, &subscription_id)
            .await
    }

    /// OMA 2012 "Create a confirmed one-to-one chat session" (seed 7.1.2 on this face).
    async fn create_one_to_one_chat_session(
        &self,
        user_id: String,
        other_user_id: String,
        mut body: ChatSessionInformation,
    ) -> Result<Created<ChatSessionInformation>, ApiError> {
        let other = address::canonical_in_path(&other_user_id)?;
        canonical_flat_addresses(&user_id, &mut body)?;
        self.chat
            .create_one_to_one_session(&user_id, &self.owner(), &other, body)
            .await
    }

    async fn get_one_to_one_chat_session(
        &self,
        user_id: String,
        other_user_id: String,
        session_id: String,
    ) -> Result<ChatSessionInformation, ApiError> {
        self.chat.get_one_to_one_session(
            &user_id,
            &participant(&user_id, other_user_id),
            &session_id,
        )
    }

    /// OMA 2012 "Close a one-to-one session" by either side, or decline (seed 7.1.5 / 7.1.7).
    async fn delete_one_to_one_chat_session(
        &self,
        user_id: String,
        other_user_id: String,
        session_id: String,
    ) -> Result<(), ApiError> {
        self.chat
            .delete_one_to_one_session(&user_id, &participant(&user_id, other_user_id), &session_id)
            .await
    }

    /// OMA 2012 "Accept a one-to-one invitation" with PUT (seed 7.1.7).
    /// OMA 2012 §6.2's accept at the session's own link: the same as at `…/status`, a PUT
    /// with no body included.
    async fn update_one_to_one_chat_session(
        &self,
        user_id: String,
        other_user_id: String,
        session_id: String,
        body: Option<OneOf<ParticipantSessionStatus, ChatSessionInformation>>,
    ) -> Result<(), ApiError> {
        // OMA 2012 §6.2 literally: the session PUT back with the `status` asked for.
        let asked = match body {
            None => None,
            Some(OneOf::A(status)) => Some(status),
            Some(OneOf::B(session)) => session
                .status
                .map(|status| ParticipantSessionStatus { status }),
        };
        self.chat
            .update_one_to_one_session(
                &user_id,
                &participant(&user_id, other_user_id),
                &session_id,
                crate::chat::asked_status(asked),
            )
            .await
    }

    /// OMA 2012 "Accept a one-to-one invitation" at `…/status`; a PUT with no body accepts,
    /// as the GSMA gateways' clients send it (`asked_status`).
    async fn update_one_to_one_chat_session_status(
        &self,
        user_id: String,
        other_user_id: String,
        session_id: String,
        body: Option<ParticipantSessionStatus>,
    ) -> Result<(), ApiError> {
        self.chat
            .update_one_to_one_session_status(
                &user_id,
                &participant(&user_id, other_user_id),
                &session_id,
                crate::chat::asked_status(body),
            )
            .await
    }

    /// OMA 2012 "Send a chat message" (seed 7.1.9), or an `isComposing`.
    async fn send_one_to_one_chat_message(
        &self,
        user_id: String,
        other_user_id: String,
        session_id: String,
        body: OneOf<ChatMessage, IsComposing>,
    ) -> Result<Created<ResourceReference>, ApiError> {
        // A send to `adhoc` may open a chat with the peer, which must then be a user address
        // (400 `SVC0004`, as for a create), held by the token sending ([`ChatServer::owner`],
        // read only then: a second verification per message on the send path otherwise);
        // elsewhere the peer only has to match the session.
        let (other, owner) = if session_id == crate::chat::ADHOC {
            (address::canonical_in_path(&other_user_id)?, self.owner())
        } else {
            (participant(&user_id, other_user_id), String::new())
        };
        match body {
            OneOf::A(message) => {
                self.chat
                    .send_one_to_one_message(&user_id, &owner, &other, &session_id, message)
                    .await
            }
            OneOf::B(composing) => {
                self.chat
                    .one_to_one_composing(&user_id, &owner, &other, &session_id, composing)
                    .await
            }
        }
    }

    /// OMA 2012 "Read a message" in a one-to-one chat (the seed's `getMessage`).
    async fn get_one_to_one_chat_message(
        &self,
        user_id: String,
        other_user_id: String,
        session_id: String,
        message_id: String,
    ) -> Result<ChatMessage, ApiError> {
        self.chat
            .get_one_to_one_message(
                &user_id,
                &participant(&user_id, other_user_id),
                &session_id,
                &message_id,
            )
            .await
    }

    async fn get_one_to_one_chat_message_status(
        &self,
        user_id: String,
        other_user_id: String,
        session_id: String,
        message_id: String,
    ) -> Result<MessageStatusReport, ApiError> {
        self.chat
            .get_one_to_one_message_status(
                &user_id,
                &participant(&user_id, other_user_id),
                &session_id,
                &message_id,
            )
            .await
    }

    /// OMA 2012 "Message status report" with PUT (seed 7.1.10).
    async fn update_one_to_one_chat_message_status(
        &self,
        user_id: String,
        other_user_id: String,
        session_id: String,
        message_id: String,
        body: MessageStatusReport,
    ) -> Result<(), ApiError> {
        self.chat
            .update_one_to_one_message_status(
                &user_id,
                &participant(&user_id, other_user_id),
                &session_id,
                &message_id,
                body.status,
            )
            .await
    }

    /// OMA 2012 "Create a group chat session" (seed 7.1.4 on this face).
    async fn create_group_chat_session(
        &self,
        user_id: String,
        mut body: GroupChatSessionInformation,
    ) -> Result<Created<ResourceReference>, ApiError> {
        canonical_participants(&user_id, &mut body.participant)?;
        self.chat
            .create_group_session(&user_id, &self.owner(), body)
            .await
    }

    async fn get_group_chat_session(
        &self,
        user_id: String,
        session_id: String,
    ) -> Result<GroupChatSessionInformation, ApiError> {
        self.chat.get_group_session(&user_id, &session_id)
    }

    /// OMA 2012 "Terminate a group chat" (seed 7.1.5 on this face).
    async fn delete_group_chat_session(
        &self,
        user_id: String,
        session_id: String,
    ) -> Result<(), ApiError> {
        self.chat.delete_group_session(&user_id, &session_id).await
    }

    async fn list_group_chat_participants(
        &self,
        user_id: String,
        session_id: String,
        query: ListGroupChatParticipantsQuery,
    ) -> Result<Headed<ParticipantList, ListGroupChatParticipantsHeaders>, ApiError> {
        let req = PageRequest::new(query.max_entries, query.cursor.as_deref())?;
        let body = self
            .chat
            .list_group_participants(&user_id, &session_id, req)?;
        let link = page::link_header(&body.link);
        Ok(Headed {
            body,
            headers: ListGroupChatParticipantsHeaders { link },
        })
    }

    async fn get_group_chat_participant(
        &self,
        user_id: String,
        session_id: String,
        participant_id: String,
    ) -> Result<ParticipantInformation, ApiError> {
        self.chat.get_group_participant(
            &user_id,
            &session_id,
            &participant(&user_id, participant_id),
        )
    }

    /// OMA 2012 "Add participants": one `participantInformation` or a `participantList`
    /// (seed 7.1.3).
    async fn add_group_chat_participant(
        &self,
        user_id: String,
        session_id: String,
        body: OneOf<ParticipantInformation, ParticipantList>,
    ) -> Result<Created<ResourceReference>, ApiError> {
        match body {
            OneOf::A(mut one) => {
                one.address = address::canonical(&one.address)?;
                self.chat
                    .add_group_participant(&user_id, &session_id, one)
                    .await
            }
            OneOf::B(mut list) => {
                canonical_participants(&user_id, &mut list.participant)?;
                self.chat
                    .add_group_participants(&user_id, &session_id, list)
                    .await
            }
        }
    }

    /// OMA 2012 "Leave / decline" (own participant) or withdraw an invitation (seed 7.1.6-7.1.8).
    async fn delete_group_chat_participant(
        &self,
        user_id: String,
        session_id: String,
        participant_id: String,
    ) -> Result<(), ApiError> {
        self.chat
            .delete_group_participant(
                &user_id,
                &session_id,
                &participant(&user_id, participant_id),
            )
            .await
    }

    /// OMA 2012 "Accept a group chat invitation" with PUT (seed 7.1.7); a PUT with no body
    /// accepts, as on a one-to-one session (`asked_status`).
    async fn update_group_chat_participant_status(
        &self,
        user_id: String,
        session_id: String,
        participant_id: String,
        body: Option<ParticipantSessionStatus>,
    ) -> Result<(), ApiError> {
        self.chat
            .update_group_participant_status(
                &user_id,
                &session_id,
                &participant(&user_id, participant_id),
                crate::chat::asked_status(body),
            )
            .await
    }

    /// OMA 2012 "Send a group chat message" (seed 7.1.9), or an `isComposing`.
    async fn send_group_chat_message(
        &self,
        user_id: String,
        session_id: String,
        body: OneOf<ChatMessage, IsComposing>,
    ) -> Result<Created<ResourceReference>, ApiError> {
        match body {
            OneOf::A(message) => {
                self.chat
                    .send_group_message(&user_id, &session_id, message)
                    .await
            }
            OneOf::B(composing) => {
                self.chat
                    .group_composing(&user_id, &session_id, composing)
                    .await
            }
        }
    }

    /// OMA 2012 "Read a message" in a group chat (the seed's `getMessage`).
    async fn get_group_chat_message(
        &self,
        user_id: String,
        session_id: String,
        message_id: String,
    ) -> Result<ChatMessage, ApiError> {
        self.chat
            .get_group_message(&user_id, &session_id, &message_id)
            .await
    }

    async fn get_group_chat_message_status(
        &self,
        user_id: String,
        session_id: String,
        message_id: String,
    ) -> Result<MessageStatusReport, ApiError> {
        self.chat
            .get_group_message_status(&user_id, &session_id, &message_id)
            .await
    }

    /// OMA 2012 "Message status report" in a group chat (seed 7.1.10).
    async fn update_group_chat_message_status(
        &self,
        user_id: String,
        session_id: String,
        message_id: String,
        body: MessageStatusReport,
    ) -> Result<(), ApiError> {
        self.chat
            .update_group_message_status(&user_id, &session_id, &message_id, body.status)
            .await
    }

    /// Notification channel (issue 15): one page of the user's channels.
    async fn list_notification_channels(
        &self,
        user_id: String,
        query: ListNotificationChannelsQuery,
    ) -> Result<Headed<NotificationChannelList, ListNotificationChannelsHeaders>, ApiError> {
        let req = PageRequest::new(query.max_entries, query.cursor.as_deref())?;
        let body = self.chat.list_notification_channels(&user_id, req);
        let link = page::link_header(&body.link);
        Ok(Headed {
            body,
            headers: ListNotificationChannelsHeaders { link },
        })
    }

    /// Notification channel: create one (the seed's optional Notification Server).
    async fn create_notification_channel(
        &self,
        user_id: String,
        body: NotificationChannel,
    ) -> Result<Created<NotificationChannel>, ApiError> {
        self.chat
            .create_notification_channel(&user_id, &self.owner(), body)
            .await
    }

    async fn get_notification_channel(
        &self,
        user_id: String,
        channel_id: String,
    ) -> Result<NotificationChannel, ApiError> {
        self.chat.get_notification_channel(&user_id, &channel_id)
    }

    async fn delete_notification_channel(
        &self,
        user_id: String,
        channel_id: String,
    ) -> Result<(), ApiError> {
        self.chat
            .delete_notification_channel(&user_id, &channel_id)
            .await
    }

    async fn get_channel_lifetime(
        &self,
        user_id: String,
        channel_id: String,
    ) -> Result<NotificationChannelLifetime, ApiError> {
        self.chat.get_channel_lifetime(&user_id, &channel_id)
    }

    async fn refresh_channel_lifetime(
        &self,
        user_id: String,
        channel_id: String,
        body: NotificationChannelLifetime,
    ) -> Result<NotificationChannelLifetime, ApiError> {
        self.chat
            .refresh_channel_lifetime(&user_id, &channel_id, body)
            .await
    }

    /// Notification channel: the long poll at a channel's `channelURL`.
    async fn poll_notifications(
        &self,
        user_id: String,
        channel_id: String,
        query: PollNotificationsQuery,
    ) -> Result<Headed<NotificationList, PollNotificationsHeaders>, ApiError> {
        let ack = crate::chat::channels::parse_ack(query.ack.as_deref())?;
        // The request's credentials, checked again whenever the poll wakes (see
        // `Chat::poll_notifications`), as `authorize` checked them when it came.
        let credentials = netapi_chat_runtime::negotiate::request_credentials();
        // Held while the poll waits: its token's share of the connection cap.
        let _slot = self.wait_slot(credentials.as_deref(), &channel_id)?;
        let grant = || {
            auth::still_grants(
                self.verifier.as_ref(),
                credentials.as_deref(),
                &user_id,
                &user_id,
            )
        };
        self.chat
            .poll_notifications(&user_id, &channel_id, ack, &grant)
            .await
    }
}
