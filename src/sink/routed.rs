//! Building a `RoutedLead` (contracts §3) and its headers (§6) from a decision.

use sha2::{Digest, Sha256};

use super::OutputRecord;
use crate::codec::Encoder;
use crate::model::{Envelope, RoutedLead};
use crate::route::{Decision, Lead};

/// Deterministic id of the decision for `event_id` under `rule_version`: the same input under
/// the same rules always gets the same id, so consumers can de-duplicate on it. Formatted as a
/// UUID (version 8, "custom") from SHA-256.
pub fn decision_id(event_id: &str, rule_version: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(event_id.as_bytes());
    hash.update([0]);
    hash.update(rule_version.as_bytes());
    let mut b: [u8; 16] = hash.finalize()[..16].try_into().expect("16 of 32 bytes");
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    crate::ids::uuid_text(u128::from_be_bytes(b))
}

/// Everything a routed-lead record is made of.
pub struct RoutedInput<'a> {
    /// [`decision_id`] of the event and rules, or an escalation's id (`sla::escalation_id`).
    pub decision_id: String,
    pub envelope: &'a Envelope,
    pub lead: &'a Lead,
    pub decision: &'a Decision,
    pub rule_version: &'a str,
    pub routed_at: i64,
    pub sla_ms: i64,
}

pub fn routed_lead(input: &RoutedInput) -> RoutedLead {
    let RoutedInput {
        decision_id,
        envelope,
        lead,
        decision,
        rule_version,
        routed_at,
        sla_ms,
    } = input;
    let contact = &lead.contact;
    let account = lead.account.as_ref();
    RoutedLead {
        decision_id: decision_id.clone(),
        event_id: envelope.event_id.clone(),
        contact_id: contact.contact_id.clone(),
        priority: decision.priority.as_str().to_string(),
        queue: decision.queue.clone(),
        owner_rep_id: decision.owner.clone(),
        reasons: decision.reasons.clone(),
        rule_version: rule_version.to_string(),
        score: decision.score,
        sla_deadline: routed_at + sla_ms,
        occurred_at: envelope.occurred_at,
        routed_at: *routed_at,
        email: contact.email.clone(),
        first_name: contact.first_name.clone(),
        last_name: contact.last_name.clone(),
        company_name: contact.company_name.clone(),
        country: contact.country.clone(),
        region: contact.region.clone(),
        account_id: account.map(|a| a.account_id.clone()),
        account_name: account.map(|a| a.name.clone()),
        account_tier: account.and_then(|a| a.tier.clone()),
        employees: account.and_then(|a| a.employees),
        annual_revenue: account.and_then(|a| a.annual_revenue),
        engagements_24h: lead.engagement.count_24h as i32,
        engagements_7d: lead.engagement.count_7d as i32,
    }
}

/// The output record for `lead` on `topic`, with the contract's headers.
pub fn routed_record(
    topic: &str,
    encoder: &Encoder,
    lead: &RoutedLead,
    correlation_id: Option<&str>,
) -> OutputRecord {
    let mut headers = vec![
        ("event_id", lead.event_id.clone().into_bytes()),
        ("decision_id", lead.decision_id.clone().into_bytes()),
        ("rule_version", lead.rule_version.clone().into_bytes()),
    ];
    if let Some(c) = correlation_id {
        headers.push(("correlation_id", c.as_bytes().to_vec()));
    }
    OutputRecord {
        kind: super::OutputKind::Routed,
        topic: topic.to_string(),
        partition: None,
        key: Some(lead.contact_id.clone().into_bytes()),
        value: Some(encoder.encode_direct(lead)),
        headers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_ids_are_deterministic_and_depend_on_both_inputs() {
        let a = decision_id("evt-1", "abc");
        assert_eq!(a, decision_id("evt-1", "abc"));
        assert_ne!(a, decision_id("evt-1", "abd"));
        assert_ne!(a, decision_id("evt-2", "abc"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8");
    }
}
