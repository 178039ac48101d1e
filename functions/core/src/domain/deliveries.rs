//! Lost `queued` deliveries: GitHub never redelivers a failed webhook by itself
//! (<https://docs.github.com/en/webhooks/using-webhooks/handling-failed-webhook-deliveries>), so a
//! `queued` delivery that did not reach the webhook leaves its job queued on GitHub with no runner
//! coming. The App's delivery log (`GET /app/hook/deliveries`) shows every attempt; the rescue
//! sweep picks the `workflow_job`/`queued` deliveries none of whose attempts succeeded and asks
//! GitHub to redeliver them (`POST /app/hook/deliveries/{id}/attempts`), a bounded number of times.

use serde::Serialize;
use std::collections::BTreeMap;

/// One attempt GitHub made to deliver a webhook to the App (a `hook-delivery-item`). A
/// redelivery is a new attempt with its own `id` and the same `guid` (`X-GitHub-Delivery`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryAttempt {
    pub id: u64,
    pub guid: String,
    pub delivered_at_epoch: u64,
    pub redelivery: bool,
    /// The HTTP status the webhook answered; 0 when GitHub could not reach it at all.
    pub status_code: u16,
    pub event: String,
    pub action: Option<String>,
}

impl DeliveryAttempt {
    fn succeeded(&self) -> bool {
        (200..300).contains(&self.status_code)
    }

    fn is_queued_job(&self) -> bool {
        self.event == "workflow_job" && self.action.as_deref() == Some("queued")
    }
}

/// Attempts per delivery before the sweep stops asking: the first one and three redeliveries.
pub const MAX_DELIVERY_ATTEMPTS: usize = 4;

/// A `queued` delivery that never reached the webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LostDelivery {
    /// The newest attempt: the one to redeliver.
    pub id: u64,
    pub guid: String,
    pub attempts: usize,
}

/// The lost `queued` deliveries among `attempts` (any order), oldest first: every attempt failed
/// and fewer than [`MAX_DELIVERY_ATTEMPTS`] were made. A delivery with any successful attempt was
/// received, whatever the webhook then did with it.
pub fn lost_queued(attempts: &[DeliveryAttempt]) -> Vec<LostDelivery> {
    let mut by_guid: BTreeMap<&str, Vec<&DeliveryAttempt>> = BTreeMap::new();
    for attempt in attempts.iter().filter(|a| a.is_queued_job()) {
        by_guid.entry(&attempt.guid).or_default().push(attempt);
    }
    let mut lost: Vec<(u64, LostDelivery)> = by_guid
        .into_iter()
        .filter(|(_, tries)| tries.len() < MAX_DELIVERY_ATTEMPTS)
        .filter(|(_, tries)| !tries.iter().any(|a| a.succeeded()))
        .filter_map(|(guid, tries)| {
            let first = tries.iter().map(|a| a.delivered_at_epoch).min()?;
            let newest = tries.iter().max_by_key(|a| (a.delivered_at_epoch, a.id))?;
            Some((
                first,
                LostDelivery {
                    id: newest.id,
                    guid: guid.to_string(),
                    attempts: tries.len(),
                },
            ))
        })
        .collect();
    lost.sort_by_key(|(first, l)| (*first, l.id));
    lost.into_iter().map(|(_, l)| l).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn attempt(id: u64, guid: &str, at: u64, status_code: u16, action: &str) -> DeliveryAttempt {
        DeliveryAttempt {
            id,
            guid: guid.into(),
            delivered_at_epoch: at,
            redelivery: id > 100,
            status_code,
            event: "workflow_job".into(),
            action: Some(action.into()),
        }
    }

    #[test]
    fn a_queued_delivery_whose_every_attempt_failed_is_lost_and_redelivered_by_its_newest_attempt()
    {
        let attempts = [
            attempt(1, "a", 10, 502, "queued"),
            attempt(101, "a", 70, 0, "queued"),
            attempt(2, "b", 20, 202, "queued"),
            attempt(3, "c", 30, 500, "in_progress"),
        ];
        assert_eq!(
            lost_queued(&attempts),
            vec![LostDelivery {
                id: 101,
                guid: "a".into(),
                attempts: 2
            }]
        );
    }

    #[test]
    fn a_delivery_received_once_is_not_lost_even_if_other_attempts_failed() {
        let attempts = [
            attempt(1, "a", 10, 502, "queued"),
            attempt(101, "a", 70, 202, "queued"),
        ];
        assert!(lost_queued(&attempts).is_empty());
    }

    #[test]
    fn the_sweep_stops_asking_after_the_last_allowed_attempt() {
        let attempts: Vec<_> = (0..MAX_DELIVERY_ATTEMPTS as u64)
            .map(|i| attempt(100 + i, "a", i, 502, "queued"))
            .collect();
        assert!(lost_queued(&attempts).is_empty());
        assert_eq!(lost_queued(&attempts[..MAX_DELIVERY_ATTEMPTS - 1]).len(), 1);
    }

    #[test]
    fn other_events_and_actions_are_not_redelivered() {
        let mut ping = attempt(1, "p", 1, 0, "queued");
        ping.event = "ping".into();
        ping.action = None;
        assert!(lost_queued(&[ping, attempt(2, "w", 2, 0, "waiting")]).is_empty());
    }

    proptest! {
        #[test]
        fn a_lost_delivery_never_had_a_success_and_is_listed_once(
            raw in proptest::collection::vec((0u64..40, 0usize..5, 0u64..1000, prop_oneof![Just(0u16), Just(202u16), Just(502u16), Just(500u16)]), 0..60)
        ) {
            let attempts: Vec<_> = raw
                .iter()
                .map(|(id, guid, at, status)| attempt(*id, &format!("g{guid}"), *at, *status, "queued"))
                .collect();
            let lost = lost_queued(&attempts);
            let mut guids: Vec<_> = lost.iter().map(|l| l.guid.clone()).collect();
            guids.dedup();
            prop_assert_eq!(guids.len(), lost.len());
            for l in &lost {
                let tries: Vec<_> = attempts.iter().filter(|a| a.guid == l.guid).collect();
                prop_assert!(tries.iter().all(|a| !(200..300).contains(&a.status_code)));
                prop_assert!(tries.iter().any(|a| a.id == l.id));
                prop_assert!(tries.len() < MAX_DELIVERY_ATTEMPTS);
            }
        }
    }
}
