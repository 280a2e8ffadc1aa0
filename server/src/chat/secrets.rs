//! Per-subscription signing secrets (an extension; issue 13 item 4).
//!
//! Each subscription signs its notifications with its own Standard Webhooks secret, so a
//! receiver given one application's secret cannot forge notifications to another. The secret
//! is the client's (sent on create) or made by the server, shown once (the create's answer),
//! and replaced by the client's new one with `rotateSubscriptionSecret`: the replaced one
//! keeps signing for the rotation
//! window (`NETAPI_CHAT_WEBHOOK_ROTATION_WINDOW`), every notification then carrying one
//! signature per secret. A subscription without a secret of its own (made when the operator
//! chose one server-wide secret with `NETAPI_CHAT_WEBHOOK_SECRET`, or by an earlier version)
//! is signed with the server-wide one.

use super::state::{MAX_SECRETS, SigningSecret};
use super::{Change, Chat, durable, missing};
use crate::signing::Signer;
use crate::store::{Kind, now_ms};
use netapi_chat_api::SubscriptionSecret;
use netapi_chat_runtime::ApiError;
use std::sync::Arc;

/// A client-sent secret, checked: `400 SVC0002` naming `field` when it is not a Standard
/// Webhooks secret of 24-64 bytes.
fn accept(supplied: &str, field: &str) -> Result<String, ApiError> {
    let s = supplied.trim();
    Signer::from_secret(s).map_err(|e| ApiError::invalid_input(format!("{field}: {e}")))?;
    if s.len() > 128 {
        return Err(ApiError::invalid_input(format!(
            "{field}: at most 64 bytes of key (whsec_ + base64)"
        )));
    }
    Ok(s.to_owned())
}

/// The secret a new subscription gets: the client's (checked), else a new one when
/// subscriptions have their own (`own`), else none (the server-wide secret signs).
pub(super) fn for_new_subscription(
    supplied: Option<&str>,
    own: bool,
) -> Result<Option<String>, ApiError> {
    match supplied {
        Some(s) => accept(s, "signingSecret").map(Some),
        None if own => Ok(Some(Signer::generate().1)),
        None => Ok(None),
    }
}

/// The signing keys of stored secrets, for the delivery queue. A stored secret that no longer
/// reads as one (it was checked when it was given) is left out rather than stopping delivery.
pub(super) fn keys(secrets: &[SigningSecret]) -> Vec<(Arc<Signer>, Option<i64>)> {
    secrets
        .iter()
        .filter_map(|s| Some((Arc::new(Signer::from_secret(&s.secret).ok()?), s.until_ms)))
        .collect()
}

/// The rotation rule: `new` becomes the current secret; the current one(s) keep signing until
/// `now_ms + window_ms`; ones whose window is over are dropped; at most [`MAX_SECRETS`] are
/// kept (the oldest window ends first). Answers the new list and until when the previous
/// secret signs (`None` when there was no current secret of its own).
pub(super) fn rotated(
    secrets: &[SigningSecret],
    new: String,
    now_ms: i64,
    window_ms: i64,
) -> (Vec<SigningSecret>, Option<i64>) {
    let until = now_ms.saturating_add(window_ms);
    let mut previous = None;
    let mut list = vec![SigningSecret {
        secret: new,
        until_ms: None,
    }];
    for s in secrets {
        match s.until_ms {
            None => {
                previous = Some(until);
                list.push(SigningSecret {
                    secret: s.secret.clone(),
                    until_ms: Some(until),
                });
            }
            Some(u) if u > now_ms => list.push(s.clone()),
            Some(_) => {}
        }
    }
    list.truncate(MAX_SECRETS);
    (list, previous)
}

impl Chat {
    /// `rotateSubscriptionSecret`: the client's new secret for the user's subscription `id`;
    /// the previous one keeps signing for the rotation window.
    pub async fn rotate_subscription_secret(
        &self,
        user: &str,
        id: &str,
        supplied: &str,
    ) -> Result<SubscriptionSecret, ApiError> {
        let new = accept(supplied, "signingSecret")?;
        let window = i64::try_from(self.settings.rotation_window.as_millis()).unwrap_or(i64::MAX);
        let (previous, rx) = {
            let mut state = self.write_state();
            let sub = match state.subscriptions.get_mut(id) {
                Some(s) if s.rec.user == user => s,
                _ => return Err(missing(&self.urls.subscription(user, id))),
            };
            let (list, previous) = rotated(&sub.rec.secrets, new.clone(), now_ms(), window);
            sub.rec.secrets = list;
            sub.queue.set_keys(keys(&sub.rec.secrets));
            let mut change = Change::default();
            change.put(
                Kind::Subscription,
                id.to_owned(),
                super::records::encode_subscription(&sub.rec),
            );
            (previous, self.submit(&mut state, change))
        };
        durable(rx).await?;
        Ok(SubscriptionSecret {
            signing_secret: new,
            previous_secret_expires: previous
                .map(|ms| crate::time::rfc3339(u64::try_from(ms / 1000).unwrap_or(0))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str, until_ms: Option<i64>) -> SigningSecret {
        SigningSecret {
            secret: s.into(),
            until_ms,
        }
    }

    #[test]
    fn rotation_keeps_the_previous_secret_for_the_window_and_at_most_three() {
        // No secret of its own: the new one alone, no window.
        assert_eq!(
            rotated(&[], "a".into(), 1000, 500),
            (vec![secret("a", None)], None)
        );
        // The current one signs until now + window.
        let (list, previous) = rotated(&[secret("a", None)], "b".into(), 1000, 500);
        assert_eq!(list, vec![secret("b", None), secret("a", Some(1500))]);
        assert_eq!(previous, Some(1500));
        // Windows that are over are dropped; ones still open are kept.
        let (list, _) = rotated(&list, "c".into(), 1400, 500);
        assert_eq!(
            list,
            vec![
                secret("c", None),
                secret("b", Some(1900)),
                secret("a", Some(1500))
            ]
        );
        let (list, _) = rotated(&list, "d".into(), 1600, 500);
        assert_eq!(
            list,
            vec![
                secret("d", None),
                secret("c", Some(2100)),
                secret("b", Some(1900))
            ]
        );
        // At most three: the oldest window ends first.
        let (list, _) = rotated(&list, "e".into(), 1700, 500);
        assert_eq!(list.len(), MAX_SECRETS);
        assert_eq!(list[0], secret("e", None));
        assert_eq!(list[2], secret("c", Some(2100)));
    }

    #[test]
    fn a_new_subscription_gets_the_clients_secret_or_one_of_its_own() {
        let (_, good) = Signer::generate();
        assert_eq!(
            for_new_subscription(Some(&good), true).unwrap(),
            Some(good.clone())
        );
        assert_eq!(
            for_new_subscription(Some(&good), false).unwrap(),
            Some(good)
        );
        let made = for_new_subscription(None, true).unwrap().unwrap();
        assert!(made.starts_with("whsec_") && Signer::from_secret(&made).is_ok());
        assert_eq!(for_new_subscription(None, false).unwrap(), None);
        let e = for_new_subscription(Some("whsec_c2hvcnQ="), true).unwrap_err();
        assert_eq!(e.status, http::StatusCode::BAD_REQUEST);
        assert!(for_new_subscription(Some("not base64 !"), true).is_err());
    }
}
