//! The audit topic (`outputs.audit`): one `LeadAudit` per event that reached routing, with
//! the lead as the script saw it, the outcome and the trace of what fired.
//!
//! The decision is always the live evaluation's (compiled where it could be); the trace and
//! the `lead` come from a traced rerun of the same script on the same lead
//! ([`Rules::explain`]), which costs an interpreted evaluation more per event.

use crate::codec::Encoder;
use crate::model::{Envelope, LeadAudit, TraceStep};
use crate::route::explain::Explanation;
use crate::route::{Decision, ScriptFailure};
use crate::sink::{OutputKind, OutputRecord};

pub(super) struct Audit {
    pub encoder: Encoder,
    pub topic: String,
}

impl Audit {
    /// An engagement of a contact with no profile yet: the script did not run.
    pub fn unknown_contact(
        &self,
        envelope: &Envelope,
        contact_id: &str,
        rule_version: &str,
        now: i64,
    ) -> Option<OutputRecord> {
        let audit = LeadAudit {
            outcome: "unknown_contact".into(),
            ..blank(envelope, contact_id, rule_version, now)
        };
        self.record(&audit)
    }

    /// An evaluation: `live` decided (`decision_id` set when it routed), `explained` is the
    /// traced rerun.
    pub fn evaluated(
        &self,
        envelope: &Envelope,
        contact_id: &str,
        explained: &Explanation,
        live: Result<Option<&Decision>, &ScriptFailure>,
        decision_id: Option<&str>,
        now: i64,
    ) -> Option<OutputRecord> {
        let outcome = crate::route::explain::outcome_of(live);
        if outcome != explained.outcome() {
            tracing::debug!(
                live = outcome,
                traced = explained.outcome(),
                "the traced evaluation ended otherwise than the live one (a wall-clock budget?)"
            );
        }
        let decision = live.ok().flatten();
        let audit = LeadAudit {
            outcome: outcome.into(),
            decision_id: decision_id.map(str::to_string),
            priority: decision.map(|d| d.priority.as_str().to_string()),
            queue: decision.map(|d| d.queue.clone()),
            owner_rep_id: decision.and_then(|d| d.owner.clone()),
            score: decision
                .map(|d| d.score)
                .or_else(|| explained.lead["score"].as_i64().map(|s| s as i32)),
            reasons: decision.map(|d| d.reasons.clone()).unwrap_or_default(),
            error: live.err().map(|f| f.to_string()),
            lead: Some(explained.lead.to_string()),
            trace: explained.trace.steps.iter().map(TraceStep::from).collect(),
            trace_truncated: explained.trace.truncated as i32,
            ..blank(envelope, contact_id, &explained.rule_version, now)
        };
        self.record(&audit)
    }

    fn record(&self, audit: &LeadAudit) -> Option<OutputRecord> {
        let value = match self.encoder.encode(audit) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "an audit record could not be encoded; it is left out");
                return None;
            }
        };
        Some(OutputRecord {
            kind: OutputKind::Audit,
            topic: self.topic.clone(),
            partition: None,
            key: Some(audit.contact_id.clone().into_bytes()),
            value: Some(value),
            headers: vec![
                ("event_id", audit.event_id.clone().into_bytes()),
                ("rule_version", audit.rule_version.clone().into_bytes()),
            ],
        })
    }
}

/// A record of the event with nothing evaluated yet.
fn blank(envelope: &Envelope, contact_id: &str, rule_version: &str, now: i64) -> LeadAudit {
    LeadAudit {
        event_id: envelope.event_id.clone(),
        contact_id: contact_id.to_string(),
        event_type: envelope.event_type.clone(),
        occurred_at: envelope.occurred_at,
        evaluated_at: now,
        rule_version: rule_version.to_string(),
        outcome: String::new(),
        decision_id: None,
        priority: None,
        queue: None,
        owner_rep_id: None,
        score: None,
        reasons: Vec::new(),
        error: None,
        lead: None,
        trace: Vec::new(),
        trace_truncated: 0,
    }
}
