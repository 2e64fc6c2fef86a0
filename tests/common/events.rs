//! Sample canonical events for tests that produce their own records.

use leadflow::model::{Contact, ContactEvent, Engagement, EngagementEvent, Envelope, Event};

/// A plausible `Contact.updated` for `contact_id`, at `occurred_at` (ms since the epoch).
pub fn contact(event_id: &str, contact_id: &str, occurred_at: i64) -> ContactEvent {
    Event {
        envelope: Envelope {
            event_id: event_id.into(),
            event_type: "Contact.updated".into(),
            aggregate_id: contact_id.into(),
            source: "salesforce:prod".into(),
            occurred_at,
            delivery_attempt: 1,
            schema_version: "1".into(),
            correlation_id: Some(format!("corr-{event_id}")),
        },
        payload: Contact {
            contact_id: contact_id.into(),
            email: Some("linus@initech.de".into()),
            phone: None,
            first_name: Some("Linus".into()),
            last_name: None,
            title: Some("CTO".into()),
            company_name: Some("Initech GmbH".into()),
            company_domain: Some("initech.de".into()),
            country: Some("DE".into()),
            region: Some("EMEA".into()),
            lifecycle_stage: Some("lead".into()),
            lead_source: None,
            product_interest: None,
            consent_marketing: true,
            attributes: [("k".to_string(), "v".to_string())].into(),
            updated_at: occurred_at,
        },
    }
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A `demo_request` engagement of `contact_id`, at `occurred_at` (ms since the epoch).
pub fn engagement(event_id: &str, contact_id: &str, occurred_at: i64) -> EngagementEvent {
    Event {
        envelope: Envelope {
            event_id: event_id.into(),
            event_type: "Engagement.created".into(),
            aggregate_id: contact_id.into(),
            source: "hubspot:prod".into(),
            occurred_at,
            delivery_attempt: 1,
            schema_version: "1".into(),
            correlation_id: None,
        },
        payload: Engagement {
            engagement_id: format!("eng-{event_id}"),
            contact_id: contact_id.into(),
            kind: "demo_request".into(),
            channel: Some("web".into()),
            campaign: None,
            outcome: None,
            occurred_at,
        },
    }
}
