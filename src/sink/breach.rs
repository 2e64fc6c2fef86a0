//! The `SlaBreach` record (contracts §3) of a decision nobody acknowledged in time, and its
//! headers (§6).

use super::OutputRecord;
use crate::codec::{AvroCodecError, Encoder};
use crate::model::SlaBreach;

/// The output record for `breach` on `topic`, keyed by the contact id, with the contract's
/// headers: `event_id` (the input the lead was first decided on), `decision_id` (the breached
/// decision), `rule_version`, `correlation_id` when the input had one, and `sla.level`.
pub fn breach_record(
    topic: &str,
    encoder: &Encoder,
    breach: &SlaBreach,
    event_id: &str,
    correlation_id: Option<&str>,
) -> Result<OutputRecord, AvroCodecError> {
    let mut headers = vec![
        ("event_id", event_id.as_bytes().to_vec()),
        ("decision_id", breach.decision_id.clone().into_bytes()),
        ("rule_version", breach.rule_version.clone().into_bytes()),
    ];
    if let Some(c) = correlation_id {
        headers.push(("correlation_id", c.as_bytes().to_vec()));
    }
    headers.push(("sla.level", breach.level.to_string().into_bytes()));
    Ok(OutputRecord {
        kind: super::OutputKind::Breach,
        topic: topic.to_string(),
        partition: None,
        key: Some(breach.contact_id.clone().into_bytes()),
        value: Some(encoder.encode(breach)?),
        headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{canonical, decode, SchemaKind};

    #[test]
    fn a_breach_round_trips_through_its_schema_with_its_headers() {
        let breach = SlaBreach {
            decision_id: "d-1".into(),
            contact_id: "ct_1".into(),
            priority: "P0".into(),
            queue: "enterprise-ae".into(),
            owner_rep_id: Some("rep_7".into()),
            level: 1,
            sla_deadline: 1_000,
            breached_at: 61_000,
            escalated_decision_id: Some("d-2".into()),
            reasons: vec!["no acknowledgement".into()],
            routed_at: 0,
            rule_version: "abc".into(),
        };
        let encoder = Encoder::new(SchemaKind::SlaBreach, 9).unwrap();
        let record =
            breach_record("leads.escalations", &encoder, &breach, "e-1", Some("c")).unwrap();
        let value = record.value.unwrap();
        assert_eq!(&value[..5], &[0, 0, 0, 0, 9]);
        let back: SlaBreach = decode(
            canonical().get(SchemaKind::SlaBreach),
            SchemaKind::SlaBreach,
            &value[5..],
        )
        .unwrap();
        assert_eq!(back, breach);
        assert_eq!(record.key.as_deref(), Some(&b"ct_1"[..]));
        let header = |k: &str| {
            record
                .headers
                .iter()
                .find(|(h, _)| *h == k)
                .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
        };
        assert_eq!(header("event_id").as_deref(), Some("e-1"));
        assert_eq!(header("decision_id").as_deref(), Some("d-1"));
        assert_eq!(header("correlation_id").as_deref(), Some("c"));
        assert_eq!(header("sla.level").as_deref(), Some("1"));
    }
}
