//! Shadow rules (`rules_shadow`): a candidate script decides every lead the live one decides,
//! on the same `lead`; nothing of its decisions is emitted, except a `ShadowDiff` to
//! `outputs.shadow_diff` where it disagrees (another outcome, priority, queue or owner).

use std::sync::Arc;

use metrics::counter;

use crate::codec::Encoder;
use crate::metrics as m;
use crate::model::{Envelope, ShadowDiff, ShadowSide};
use crate::route::{Decision, Lead, Rules, ScriptFailure};
use crate::sink::{OutputKind, OutputRecord};

/// The shadow script and how its disagreements are written.
pub(super) struct Shadow {
    pub rules: Arc<Rules>,
    pub encoder: Encoder,
    pub topic: String,
}

/// What one script did with a lead.
fn side(rules: &Rules, result: &Result<Option<Decision>, ScriptFailure>) -> ShadowSide {
    let outcome = crate::route::explain::outcome_of(result.as_ref().map(Option::as_ref));
    let (decision, reasons) = match result {
        Ok(Some(d)) => (Some(d), d.reasons.clone()),
        Ok(None) => (None, Vec::new()),
        Err(failure) => (None, vec![failure.to_string()]),
    };
    ShadowSide {
        rule_version: rules.version().to_string(),
        outcome: outcome.to_string(),
        priority: decision.map(|d| d.priority.as_str().to_string()),
        queue: decision.map(|d| d.queue.clone()),
        owner_rep_id: decision.and_then(|d| d.owner.clone()),
        reasons,
    }
}

/// `P2`, `none` or the failure class: one end of a transition.
fn end(side: &ShadowSide) -> &str {
    side.priority.as_deref().unwrap_or(&side.outcome)
}

impl Shadow {
    /// Runs the shadow script on `lead`; the record to write if it disagrees with `live`.
    pub fn compare(
        &self,
        lead: &Lead,
        envelope: &Envelope,
        live_rules: &Rules,
        live: &Result<Option<Decision>, ScriptFailure>,
        now: i64,
    ) -> Option<OutputRecord> {
        counter!(m::SHADOW_EVALUATIONS).increment(1);
        let shadow = self.rules.evaluate(lead);
        let (live, shadow) = (side(live_rules, live), side(&self.rules, &shadow));
        let same = live.outcome == shadow.outcome
            && live.priority == shadow.priority
            && live.queue == shadow.queue
            && live.owner_rep_id == shadow.owner_rep_id;
        if same {
            return None;
        }
        let transition = format!("{}->{}", end(&live), end(&shadow));
        counter!(m::SHADOW_DIFFS, "transition" => transition.clone()).increment(1);
        let diff = ShadowDiff {
            event_id: envelope.event_id.clone(),
            contact_id: lead.contact.contact_id.clone(),
            occurred_at: envelope.occurred_at,
            decided_at: now,
            transition,
            live,
            shadow,
        };
        let value = match self.encoder.encode(&diff) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "a shadow diff could not be encoded; it is left out");
                return None;
            }
        };
        Some(OutputRecord {
            kind: OutputKind::ShadowDiff,
            topic: self.topic.clone(),
            partition: None,
            key: Some(lead.contact.contact_id.clone().into_bytes()),
            value: Some(value),
            headers: vec![
                ("event_id", envelope.event_id.clone().into_bytes()),
                ("rule_version", diff.live.rule_version.into_bytes()),
                ("shadow_rule_version", diff.shadow.rule_version.into_bytes()),
            ],
        })
    }
}
