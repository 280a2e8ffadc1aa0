//! What every notification carries, over the spec's notification types: the subscription's
//! `callbackData` and its links, the last of which names the subscription (taken off by
//! [`Notified::subscription_link`], so a suite compares the links of what the notification
//! concerns).

use netapi_chat_api::{
    ChatEventNotification, ChatSessionInvitationNotification, GroupSessionInvitationNotification,
    Link, MessageDeliveryNotification, MessageNotification, MessageStatusNotification,
    ParticipantStatusNotification, SessionInvitationNotification,
    SubscriptionCancellationNotification,
};
use netapi_chat_runtime::wire::Document;
use std::fmt::Debug;

/// A notification document, with what every notification carries.
pub trait Notified: Document + Debug {
    fn callback_data(&self) -> Option<&str>;
    fn links(&self) -> &[Link];
    fn links_mut(&mut self) -> &mut Vec<Link>;

    /// Takes off the last link, which must name the subscription at `url` with `rel` (its
    /// face's: `ChatSubscription` or `ChatNotificationSubscription`); `body` for the message.
    #[track_caller]
    fn subscription_link(&mut self, rel: &str, url: &str, body: &str) {
        let last = self.links_mut().pop();
        assert_eq!(
            last.as_ref().map(|l| (l.rel.as_str(), l.href.as_str())),
            Some((rel, url)),
            "the subscription's link ends every notification: {body}"
        );
        assert!(
            !self.links().is_empty(),
            "every notification has a link to what it concerns: {body}"
        );
    }
}

macro_rules! notified {
    ($($t:ty),*) => {$(
        impl Notified for $t {
            fn callback_data(&self) -> Option<&str> {
                self.callback_data.as_deref()
            }
            fn links(&self) -> &[Link] {
                &self.link
            }
            fn links_mut(&mut self) -> &mut Vec<Link> {
                &mut self.link
            }
        }
    )*};
}

notified!(
    SessionInvitationNotification,
    ParticipantStatusNotification,
    ChatEventNotification,
    MessageNotification,
    MessageDeliveryNotification,
    SubscriptionCancellationNotification,
    ChatSessionInvitationNotification,
    GroupSessionInvitationNotification,
    MessageStatusNotification
);
