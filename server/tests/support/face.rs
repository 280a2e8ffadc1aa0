//! The two-format client: the API as a test uses it, in one format. JSON goes through the
//! generated progenitor client (`netapi_chat_client`), XML over raw HTTP to the request line
//! of the generated request builders (`netapi_chat_api::Requests`: the spec's method and URL),
//! with every body validated against the generated XSD; both answer a [`Resp`] (status,
//! `Location`, decoded body or decoded `requestError`), so a scenario is written once and runs
//! in both faces.

use netapi_chat_api::{
    ChannelType, ChatMessage, ChatMessageList, ChatNotificationSubscription,
    ChatSessionInformation, ChatSessionList, ChatSubscription, ChatSubscriptionList,
    GroupChatSessionInformation, MessageDeliveryStatus, MessageStatus, MessageStatusReport,
    NotificationChannel, NotificationFormat, ParticipantInformation, ParticipantList,
    ParticipantSessionStatus, ParticipantStatus, RequestError, Requests, ResourceReference,
};
use netapi_chat_client::types as ct;
use netapi_chat_client::{Error as ClientError, ResponseValue};
use netapi_chat_runtime::Format;
use netapi_chat_runtime::url::OperationRequest;
use netapi_chat_runtime::wire::{self, Document};
use netapi_chat_runtime::xml::XmlLimits;
use serde::Serialize;
use std::fmt::Debug;

use super::{Answer, Server, send_doc, send_empty};

/// Which face of the API a run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    /// JSON through the progenitor client.
    Json,
    /// XML over raw HTTP.
    Xml,
}

impl Wire {
    pub fn format(self) -> Format {
        match self {
            Wire::Json => Format::Json,
            Wire::Xml => Format::Xml,
        }
    }

    pub fn notification_format(self) -> NotificationFormat {
        match self {
            Wire::Json => NotificationFormat::Json,
            Wire::Xml => NotificationFormat::Xml,
        }
    }
}

/// One answer, whatever the face: status, `Location`, the decoded body or the decoded error.
#[derive(Debug)]
pub struct Resp<T> {
    pub status: u16,
    pub location: Option<String>,
    pub body: Option<T>,
    pub error: Option<RequestError>,
}

impl<T: Debug> Resp<T> {
    /// Asserts a success `status` with a body, and returns the body.
    #[track_caller]
    pub fn ok(self, status: u16) -> T {
        assert_eq!(self.status, status, "status; error: {:?}", self.error);
        self.body.expect("a response body")
    }

    /// Asserts a success `status` with a body, and returns the `Location` header and the body.
    #[track_caller]
    pub fn created(self) -> (String, T) {
        assert_eq!(self.status, 201, "status; error: {:?}", self.error);
        let location = self.location.expect("a Location header on 201");
        (location, self.body.expect("a response body"))
    }

    /// Asserts a body-less success.
    #[track_caller]
    pub fn no_content(self) {
        assert_eq!(self.status, 204, "status; error: {:?}", self.error);
        assert!(self.body.is_none(), "204 has no body: {:?}", self.body);
    }

    /// Asserts an OMA error: status and exception id (`None`: any service exception).
    #[track_caller]
    pub fn fails(self, status: u16, message_id: Option<&str>) {
        assert_eq!(self.status, status, "status; body: {:?}", self.body);
        let e = self.error.expect("an OMA requestError");
        let ex = e
            .service_exception
            .as_ref()
            .or(e.policy_exception.as_ref())
            .expect("an exception");
        match message_id {
            Some(id) => assert_eq!(ex.message_id, id, "exception id: {ex:?}"),
            None => assert!(e.service_exception.is_some(), "a serviceException: {e:?}"),
        }
        if ex.message_id.starts_with("POL") {
            assert!(
                e.policy_exception.is_some(),
                "POL ids are policyExceptions: {e:?}"
            );
        }
    }
}

type ClientResult<C> = Result<ResponseValue<C>, ClientError<ct::RequestErrorRoot>>;

fn header(h: &http::HeaderMap, name: &str) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// A progenitor (JSON) value as the server's document type: the same JSON, decoded by the
/// runtime that decodes request bodies.
fn doc<C: Serialize, T: Document>(c: C) -> Option<T> {
    let json = serde_json::to_vec(&c).expect("progenitor value serializes");
    Some(
        wire::decode(Format::Json, &json, &XmlLimits::default())
            .unwrap_or_else(|e| panic!("{} from the client: {e:?}", T::NAME)),
    )
}

/// A document as the progenitor client's request type (same JSON).
fn to_client<C: serde::de::DeserializeOwned, T: Document>(d: &T) -> C {
    serde_json::from_slice(&wire::encode(Format::Json, d)).expect("progenitor type takes the JSON")
}

fn nothing<C>(_: C) -> Option<()> {
    None
}

async fn from_client<C: Serialize, T>(r: ClientResult<C>, conv: fn(C) -> Option<T>) -> Resp<T> {
    match r {
        Ok(v) => {
            let status = v.status().as_u16();
            let location = header(v.headers(), "location");
            let content_type = header(v.headers(), "content-type").unwrap_or_default();
            let body = conv(v.into_inner());
            if body.is_some() {
                assert!(
                    content_type.starts_with("application/json"),
                    "Content-Type {content_type}"
                );
            }
            Resp {
                status,
                location,
                body,
                error: None,
            }
        }
        Err(ClientError::ErrorResponse(v)) => {
            let status = v.status().as_u16();
            let content_type = header(v.headers(), "content-type").unwrap_or_default();
            assert!(
                content_type.starts_with("application/json"),
                "error Content-Type {content_type}"
            );
            Resp {
                status,
                location: None,
                body: None,
                error: doc(v.into_inner()),
            }
        }
        Err(ClientError::UnexpectedResponse(r)) => {
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            panic!("a response the spec does not declare: {status} {body}")
        }
        Err(e) => panic!("client error: {e}"),
    }
}

/// Sends an operation's request (from the generated [`Requests`]) with `doc` in `format`,
/// asking for `format` back: the XML face's request line comes from the spec, not from here.
async fn xml_send<T: Document>(request: OperationRequest, format: Format, doc: &T) -> Answer {
    send_doc(request.method.as_str(), &request.url, format, doc).await
}

/// [`xml_send`] for an operation without a request body.
async fn xml_send_empty(request: OperationRequest, format: Format) -> Answer {
    send_empty(request.method.as_str(), &request.url, format).await
}

fn xml_doc<T: Document>(a: &Answer) -> T {
    a.decode()
}

fn from_xml<T>(a: Answer, conv: fn(&Answer) -> T) -> Resp<T> {
    let location = Some(a.header("location").to_owned()).filter(|l| !l.is_empty());
    if (200..300).contains(&a.status) {
        let body = (!a.body.is_empty()).then(|| {
            assert!(
                a.content_type().starts_with("application/xml"),
                "Content-Type {}",
                a.content_type()
            );
            conv(&a)
        });
        Resp {
            status: a.status,
            location,
            body,
            error: None,
        }
    } else {
        assert!(
            a.content_type().starts_with("application/xml"),
            "error Content-Type {}",
            a.content_type()
        );
        Resp {
            status: a.status,
            location,
            body: None,
            error: Some(a.decode()),
        }
    }
}

/// Where a face's users get their notifications (the flows run once per way).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// POSTed to the user's callback listener.
    Callback,
    /// Through a long-poll notification channel (relayed to the listener by
    /// [`Relay`](super::channel::Relay)).
    Channel,
    /// Through a WebSockets notification channel (relayed to the listener by
    /// [`Relay`](super::channel::Relay)).
    Socket,
}

/// The API as a flow uses it, in one format. Ids are plain (unencoded); each face builds its
/// own URLs: the JSON face in the progenitor client, the XML face with the generated request
/// builders.
pub struct Face<'s> {
    pub wire: Wire,
    /// Where its users' notifications come from.
    pub via: Via,
    pub server: &'s Server,
    client: netapi_chat_client::Client,
    /// The XML face's request lines (method and URL of each operation, from the spec).
    requests: Requests,
}

impl<'s> Face<'s> {
    pub fn new(wire: Wire, server: &'s Server) -> Self {
        Face {
            wire,
            via: Via::Callback,
            server,
            client: server.client(),
            requests: Requests::new(server.urls()),
        }
    }

    /// A face whose users get their notifications through notification channels (long
    /// polling, or WebSockets when `socket`).
    pub fn via_channel(wire: Wire, server: &'s Server, socket: bool) -> Self {
        Face {
            via: if socket { Via::Socket } else { Via::Channel },
            ..Face::new(wire, server)
        }
    }

    /// The face of `format`: JSON through the progenitor client, XML over raw HTTP.
    pub fn for_format(format: Format, server: &'s Server) -> Self {
        let wire = match format {
            Format::Json => Wire::Json,
            Format::Xml => Wire::Xml,
        };
        Face::new(wire, server)
    }

    pub fn fmt(&self) -> Format {
        self.wire.format()
    }

    // --- the URLs the server is expected to hand out (resourceURL, Location, links)

    pub fn subs_url(&self, user: &str) -> String {
        self.server.urls().subscriptions(user)
    }
    pub fn sub_url(&self, user: &str, id: &str) -> String {
        self.server.urls().subscription(user, id)
    }
    pub fn sessions_url(&self, user: &str) -> String {
        self.server.urls().chat_sessions(user)
    }
    pub fn session_url(&self, user: &str, sid: &str) -> String {
        self.server.urls().session(user, sid)
    }
    pub fn participants_url(&self, user: &str, sid: &str) -> String {
        self.server.urls().participants(user, sid)
    }
    pub fn participant_url(&self, user: &str, sid: &str, pid: &str) -> String {
        self.server.urls().participant(user, sid, pid)
    }
    pub fn pstatus_url(&self, user: &str, sid: &str, pid: &str) -> String {
        self.server.urls().participant_status(user, sid, pid)
    }
    pub fn messages_url(&self, user: &str, sid: &str) -> String {
        self.server.urls().messages(user, sid)
    }
    pub fn message_url(&self, user: &str, sid: &str, mid: &str) -> String {
        self.server.urls().message(user, sid, mid)
    }
    pub fn mstatus_url(&self, user: &str, sid: &str, mid: &str) -> String {
        self.server.urls().message_status(user, sid, mid)
    }

    // --- the operations

    /// One operation that answers a document, in this face: `json` (the progenitor client's
    /// call) or `xml` (raw HTTP: [`xml_send`] or [`xml_send_empty`]). Both are futures and only
    /// this face's is awaited, so only it is sent; a JSON call that takes a body converts it
    /// ([`to_client`]) inside an `async` block, so the XML face never converts it. Every
    /// operation goes through here or [`Face::call_bare`]: one place decides how each face's
    /// answer is read.
    async fn call<C: Serialize, T: Document>(
        &self,
        json: impl Future<Output = ClientResult<C>>,
        xml: impl Future<Output = Answer>,
    ) -> Resp<T> {
        match self.wire {
            Wire::Json => from_client(json.await, doc).await,
            Wire::Xml => from_xml(xml.await, xml_doc),
        }
    }

    /// [`Face::call`] for an operation whose answer has no document to read.
    async fn call_bare<C: Serialize>(
        &self,
        json: impl Future<Output = ClientResult<C>>,
        xml: impl Future<Output = Answer>,
    ) -> Resp<()> {
        match self.wire {
            Wire::Json => from_client(json.await, nothing).await,
            Wire::Xml => from_xml(xml.await, |_| ()),
        }
    }

    pub async fn create_subscription(
        &self,
        user: &str,
        body: &ChatSubscription,
    ) -> Resp<ChatSubscription> {
        self.call(
            async {
                self.client
                    .create_chat_subscription(user, &to_client(body))
                    .await
            },
            xml_send(
                self.requests.create_chat_subscription(user),
                self.fmt(),
                body,
            ),
        )
        .await
    }

    pub async fn list_subscriptions(&self, user: &str) -> Resp<ChatSubscriptionList> {
        self.call(
            self.client.list_chat_subscriptions(user, None, None),
            xml_send_empty(
                self.requests.list_chat_subscriptions(user, None, None),
                self.fmt(),
            ),
        )
        .await
    }

    pub async fn get_subscription(&self, user: &str, id: &str) -> Resp<ChatSubscription> {
        self.call(
            self.client.get_chat_subscription(user, id),
            xml_send_empty(self.requests.get_chat_subscription(user, id), self.fmt()),
        )
        .await
    }

    pub async fn delete_subscription(&self, user: &str, id: &str) -> Resp<()> {
        self.call_bare(
            self.client.delete_chat_subscription(user, id),
            xml_send_empty(self.requests.delete_chat_subscription(user, id), self.fmt()),
        )
        .await
    }

    // --- the OMA 2012 face's subscriptions (`/chat/v1/{userId}/subscriptions`)

    pub async fn create_notification_subscription(
        &self,
        user: &str,
        body: &ChatNotificationSubscription,
    ) -> Resp<ChatNotificationSubscription> {
        self.call(
            async {
                self.client
                    .create_chat_notification_subscription(user, &to_client(body))
                    .await
            },
            xml_send(
                self.requests.create_chat_notification_subscription(user),
                self.fmt(),
                body,
            ),
        )
        .await
    }

    pub async fn list_notification_subscriptions(&self, user: &str) -> Resp<ChatSubscriptionList> {
        self.call(
            self.client
                .list_chat_notification_subscriptions(user, None, None),
            xml_send_empty(
                self.requests
                    .list_chat_notification_subscriptions(user, None, None),
                self.fmt(),
            ),
        )
        .await
    }

    pub async fn get_notification_subscription(
        &self,
        user: &str,
        id: &str,
    ) -> Resp<ChatNotificationSubscription> {
        self.call(
            self.client.get_chat_notification_subscription(user, id),
            xml_send_empty(
                self.requests.get_chat_notification_subscription(user, id),
                self.fmt(),
            ),
        )
        .await
    }

    pub async fn put_notification_subscription(
        &self,
        user: &str,
        id: &str,
        body: &ChatNotificationSubscription,
    ) -> Resp<ChatNotificationSubscription> {
        self.call(
            async {
                self.client
                    .update_chat_notification_subscription(user, id, &to_client(body))
                    .await
            },
            xml_send(
                self.requests
                    .update_chat_notification_subscription(user, id),
                self.fmt(),
                body,
            ),
        )
        .await
    }

    pub async fn delete_notification_subscription(&self, user: &str, id: &str) -> Resp<()> {
        self.call_bare(
            self.client.delete_chat_notification_subscription(user, id),
            xml_send_empty(
                self.requests
                    .delete_chat_notification_subscription(user, id),
                self.fmt(),
            ),
        )
        .await
    }

    pub async fn create_session(
        &self,
        user: &str,
        body: &ChatSessionInformation,
    ) -> Resp<ChatSessionInformation> {
        self.call(
            async {
                self.client
                    .create_chat_session(user, &to_client(body))
                    .await
            },
            xml_send(self.requests.create_chat_session(user), self.fmt(), body),
        )
        .await
    }

    pub async fn list_sessions(&self, user: &str) -> Resp<ChatSessionList> {
        self.call(
            self.client.list_chat_sessions(user, None, None),
            xml_send_empty(
                self.requests.list_chat_sessions(user, None, None),
                self.fmt(),
            ),
        )
        .await
    }

    pub async fn get_session(&self, user: &str, sid: &str) -> Resp<ChatSessionInformation> {
        self.call(
            self.client.get_chat_session(user, sid),
            xml_send_empty(self.requests.get_chat_session(user, sid), self.fmt()),
        )
        .await
    }

    pub async fn end_session(&self, user: &str, sid: &str) -> Resp<()> {
        self.call_bare(
            self.client.delete_chat_session(user, sid),
            xml_send_empty(self.requests.delete_chat_session(user, sid), self.fmt()),
        )
        .await
    }

    pub async fn list_participants(&self, user: &str, sid: &str) -> Resp<ParticipantList> {
        self.call(
            self.client.list_participants(user, sid, None, None),
            xml_send_empty(
                self.requests.list_participants(user, sid, None, None),
                self.fmt(),
            ),
        )
        .await
    }

    pub async fn add_participants(
        &self,
        user: &str,
        sid: &str,
        body: &ParticipantList,
    ) -> Resp<ParticipantList> {
        self.call(
            async {
                self.client
                    .add_participants(user, sid, &to_client(body))
                    .await
            },
            xml_send(self.requests.add_participants(user, sid), self.fmt(), body),
        )
        .await
    }

    pub async fn get_participant(
        &self,
        user: &str,
        sid: &str,
        pid: &str,
    ) -> Resp<ParticipantInformation> {
        self.call(
            self.client.get_participant(user, sid, pid),
            xml_send_empty(self.requests.get_participant(user, sid, pid), self.fmt()),
        )
        .await
    }

    pub async fn cancel_invitation(&self, user: &str, sid: &str, pid: &str) -> Resp<()> {
        self.call_bare(
            self.client.cancel_invitation(user, sid, pid),
            xml_send_empty(self.requests.cancel_invitation(user, sid, pid), self.fmt()),
        )
        .await
    }

    pub async fn get_status(
        &self,
        user: &str,
        sid: &str,
        pid: &str,
    ) -> Resp<ParticipantSessionStatus> {
        self.call(
            self.client.get_participant_status(user, sid, pid),
            xml_send_empty(
                self.requests.get_participant_status(user, sid, pid),
                self.fmt(),
            ),
        )
        .await
    }

    pub async fn set_status(
        &self,
        user: &str,
        sid: &str,
        pid: &str,
        status: ParticipantStatus,
    ) -> Resp<ParticipantSessionStatus> {
        let body = ParticipantSessionStatus { status };
        self.call(
            async {
                self.client
                    .update_participant_status(user, sid, pid, &to_client(&body))
                    .await
            },
            xml_send(
                self.requests.update_participant_status(user, sid, pid),
                self.fmt(),
                &body,
            ),
        )
        .await
    }

    pub async fn list_messages(&self, user: &str, sid: &str) -> Resp<ChatMessageList> {
        self.call(
            self.client.list_messages(user, sid, None, None),
            xml_send_empty(
                self.requests.list_messages(user, sid, None, None),
                self.fmt(),
            ),
        )
        .await
    }

    pub async fn send_message(
        &self,
        user: &str,
        sid: &str,
        body: &ChatMessage,
    ) -> Resp<ResourceReference> {
        self.call(
            async { self.client.send_message(user, sid, &to_client(body)).await },
            xml_send(self.requests.send_message(user, sid), self.fmt(), body),
        )
        .await
    }

    pub async fn get_message(&self, user: &str, sid: &str, mid: &str) -> Resp<ChatMessage> {
        self.call(
            self.client.get_message(user, sid, mid),
            xml_send_empty(self.requests.get_message(user, sid, mid), self.fmt()),
        )
        .await
    }

    pub async fn get_delivery(
        &self,
        user: &str,
        sid: &str,
        mid: &str,
    ) -> Resp<MessageDeliveryStatus> {
        self.call(
            self.client.get_message_delivery_status(user, sid, mid),
            xml_send_empty(
                self.requests.get_message_delivery_status(user, sid, mid),
                self.fmt(),
            ),
        )
        .await
    }

    pub async fn confirm(
        &self,
        user: &str,
        sid: &str,
        mid: &str,
        status: MessageStatus,
    ) -> Resp<()> {
        let body = MessageDeliveryStatus { status };
        self.call_bare(
            async {
                self.client
                    .confirm_message_delivery(user, sid, mid, &to_client(&body))
                    .await
            },
            xml_send(
                self.requests.confirm_message_delivery(user, sid, mid),
                self.fmt(),
                &body,
            ),
        )
        .await
    }

    // --- the OMA 2012 face (`/chat/v1/{userId}/oneToOne/…`, issue 16); `other` is the peer

    pub fn one_to_one_url(&self, user: &str, other: &str, sid: &str) -> String {
        self.server.urls().one_to_one_session(user, other, sid)
    }

    pub fn one_to_one_mstatus_url(&self, user: &str, other: &str, sid: &str, mid: &str) -> String {
        self.server
            .urls()
            .one_to_one_message_status(user, other, sid, mid)
    }

    pub async fn create_one_to_one(
        &self,
        user: &str,
        other: &str,
        body: &ChatSessionInformation,
    ) -> Resp<ChatSessionInformation> {
        self.call(
            async {
                self.client
                    .create_one_to_one_chat_session(user, other, &to_client(body))
                    .await
            },
            xml_send(
                self.requests.create_one_to_one_chat_session(user, other),
                self.fmt(),
                body,
            ),
        )
        .await
    }

    pub async fn get_one_to_one(
        &self,
        user: &str,
        other: &str,
        sid: &str,
    ) -> Resp<ChatSessionInformation> {
        self.call(
            self.client.get_one_to_one_chat_session(user, other, sid),
            xml_send_empty(
                self.requests.get_one_to_one_chat_session(user, other, sid),
                self.fmt(),
            ),
        )
        .await
    }

    pub async fn delete_one_to_one(&self, user: &str, other: &str, sid: &str) -> Resp<()> {
        self.call_bare(
            self.client.delete_one_to_one_chat_session(user, other, sid),
            xml_send_empty(
                self.requests
                    .delete_one_to_one_chat_session(user, other, sid),
                self.fmt(),
            ),
        )
        .await
    }

    pub async fn put_one_to_one_status(
        &self,
        user: &str,
        other: &str,
        sid: &str,
        status: ParticipantStatus,
    ) -> Resp<()> {
        let body = ParticipantSessionStatus { status };
        self.call_bare(
            async {
                self.client
                    .update_one_to_one_chat_session_status(user, other, sid, &to_client(&body))
                    .await
            },
            xml_send(
                self.requests
                    .update_one_to_one_chat_session_status(user, other, sid),
                self.fmt(),
                &body,
            ),
        )
        .await
    }

    /// POST a `chatMessage` or an `isComposing` (OMA 2012 takes either).
    pub async fn send_one_to_one<T: Document>(
        &self,
        user: &str,
        other: &str,
        sid: &str,
        body: &T,
    ) -> Resp<ResourceReference> {
        self.call(
            async {
                self.client
                    .send_one_to_one_chat_message(user, other, sid, &to_client(body))
                    .await
            },
            xml_send(
                self.requests.send_one_to_one_chat_message(user, other, sid),
                self.fmt(),
                body,
            ),
        )
        .await
    }

    /// The seed face's `isComposing` (`chatSessions/{sessionId}/isComposing`).
    pub async fn indicate_composing(
        &self,
        user: &str,
        sid: &str,
        body: &netapi_chat_api::IsComposing,
    ) -> Resp<()> {
        self.call_bare(
            async {
                self.client
                    .indicate_composing(user, sid, &to_client(body))
                    .await
            },
            xml_send(
                self.requests.indicate_composing(user, sid),
                self.fmt(),
                body,
            ),
        )
        .await
    }

    pub async fn get_one_to_one_mstatus(
        &self,
        user: &str,
        other: &str,
        sid: &str,
        mid: &str,
    ) -> Resp<MessageStatusReport> {
        self.call(
            self.client
                .get_one_to_one_chat_message_status(user, other, sid, mid),
            xml_send_empty(
                self.requests
                    .get_one_to_one_chat_message_status(user, other, sid, mid),
                self.fmt(),
            ),
        )
        .await
    }

    pub async fn put_one_to_one_mstatus(
        &self,
        user: &str,
        other: &str,
        sid: &str,
        mid: &str,
        status: MessageStatus,
    ) -> Resp<()> {
        let body = MessageStatusReport { status };
        self.call_bare(
            async {
                self.client
                    .update_one_to_one_chat_message_status(user, other, sid, mid, &to_client(&body))
                    .await
            },
            xml_send(
                self.requests
                    .update_one_to_one_chat_message_status(user, other, sid, mid),
                self.fmt(),
                &body,
            ),
        )
        .await
    }

    // --- the OMA 2012 face's group chat (`/chat/v1/{userId}/group/…`)

    pub async fn create_group(
        &self,
        user: &str,
        body: &GroupChatSessionInformation,
    ) -> Resp<ResourceReference> {
        self.call(
            async {
                self.client
                    .create_group_chat_session(user, &to_client(body))
                    .await
            },
            xml_send(
                self.requests.create_group_chat_session(user),
                self.fmt(),
                body,
            ),
        )
        .await
    }

    pub async fn get_group(&self, user: &str, sid: &str) -> Resp<GroupChatSessionInformation> {
        self.call(
            self.client.get_group_chat_session(user, sid),
            xml_send_empty(self.requests.get_group_chat_session(user, sid), self.fmt()),
        )
        .await
    }

    pub async fn delete_group(&self, user: &str, sid: &str) -> Resp<()> {
        self.call_bare(
            self.client.delete_group_chat_session(user, sid),
            xml_send_empty(
                self.requests.delete_group_chat_session(user, sid),
                self.fmt(),
            ),
        )
        .await
    }

    pub async fn list_group_participants(&self, user: &str, sid: &str) -> Resp<ParticipantList> {
        self.call(
            self.client
                .list_group_chat_participants(user, sid, None, None),
            xml_send_empty(
                self.requests
                    .list_group_chat_participants(user, sid, None, None),
                self.fmt(),
            ),
        )
        .await
    }

    pub async fn get_group_participant(
        &self,
        user: &str,
        sid: &str,
        pid: &str,
    ) -> Resp<ParticipantInformation> {
        self.call(
            self.client.get_group_chat_participant(user, sid, pid),
            xml_send_empty(
                self.requests.get_group_chat_participant(user, sid, pid),
                self.fmt(),
            ),
        )
        .await
    }

    /// POST a `participantInformation` or a `participantList` (OMA 2012 takes either).
    pub async fn add_group_participant<T: Document>(
        &self,
        user: &str,
        sid: &str,
        body: &T,
    ) -> Resp<ResourceReference> {
        self.call(
            async {
                self.client
                    .add_group_chat_participant(user, sid, &to_client(body))
                    .await
            },
            xml_send(
                self.requests.add_group_chat_participant(user, sid),
                self.fmt(),
                body,
            ),
        )
        .await
    }

    pub async fn delete_group_participant(&self, user: &str, sid: &str, pid: &str) -> Resp<()> {
        self.call_bare(
            self.client.delete_group_chat_participant(user, sid, pid),
            xml_send_empty(
                self.requests.delete_group_chat_participant(user, sid, pid),
                self.fmt(),
            ),
        )
        .await
    }

    pub async fn put_group_status(
        &self,
        user: &str,
        sid: &str,
        pid: &str,
        status: ParticipantStatus,
    ) -> Resp<()> {
        let body = ParticipantSessionStatus { status };
        self.call_bare(
            async {
                self.client
                    .update_group_chat_participant_status(user, sid, pid, &to_client(&body))
                    .await
            },
            xml_send(
                self.requests
                    .update_group_chat_participant_status(user, sid, pid),
                self.fmt(),
                &body,
            ),
        )
        .await
    }

    pub async fn send_group(
        &self,
        user: &str,
        sid: &str,
        body: &ChatMessage,
    ) -> Resp<ResourceReference> {
        self.call(
            async {
                self.client
                    .send_group_chat_message(user, sid, &to_client(body))
                    .await
            },
            xml_send(
                self.requests.send_group_chat_message(user, sid),
                self.fmt(),
                body,
            ),
        )
        .await
    }

    pub async fn get_group_mstatus(
        &self,
        user: &str,
        sid: &str,
        mid: &str,
    ) -> Resp<MessageStatusReport> {
        self.call(
            self.client.get_group_chat_message_status(user, sid, mid),
            xml_send_empty(
                self.requests.get_group_chat_message_status(user, sid, mid),
                self.fmt(),
            ),
        )
        .await
    }

    pub async fn put_group_mstatus(
        &self,
        user: &str,
        sid: &str,
        mid: &str,
        status: MessageStatus,
    ) -> Resp<()> {
        let body = MessageStatusReport { status };
        self.call_bare(
            async {
                self.client
                    .update_group_chat_message_status(user, sid, mid, &to_client(&body))
                    .await
            },
            xml_send(
                self.requests
                    .update_group_chat_message_status(user, sid, mid),
                self.fmt(),
                &body,
            ),
        )
        .await
    }

    // --- notification channels (issue 15)

    pub async fn create_channel(
        &self,
        user: &str,
        body: &NotificationChannel,
    ) -> Resp<NotificationChannel> {
        match self.wire {
            Wire::Json => {
                from_client(
                    self.client
                        .create_notification_channel(user, &to_client(body))
                        .await,
                    doc,
                )
                .await
            }
            Wire::Xml => from_xml(
                xml_send(
                    self.requests.create_notification_channel(user),
                    self.fmt(),
                    body,
                )
                .await,
                xml_doc,
            ),
        }
    }

    /// Creates a channel of `channel_type` for `user` whose polls wait at most 1 s and answer
    /// at most 5 notifications (so a relay notices a finished test quickly); asserts `201`
    /// and returns its callbackURL and channelURL.
    pub async fn channel(&self, user: &str, channel_type: ChannelType) -> (String, String) {
        let request = NotificationChannel {
            application_tag: Some("flows".to_owned()),
            ..super::docs::channel(channel_type, Some(5), Some(1))
        };
        let (_, ch) = self.create_channel(user, &request).await.created();
        let data = ch.channel_data.expect("channelData");
        (
            ch.callback_url.expect("a callbackURL"),
            data.channel_url.expect("a channelURL"),
        )
    }
}
