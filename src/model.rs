//! The canonical events of contracts §3 as Rust types, field for field with `avro/*.avsc`.
//!
//! Optional fields are `Option`, timestamps are milliseconds since the epoch, and maps are
//! `BTreeMap` so that encoding is byte-for-byte deterministic.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Metadata common to every input event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub event_id: String,
    pub event_type: String,
    pub aggregate_id: String,
    pub source: String,
    pub occurred_at: i64,
    pub delivery_attempt: i32,
    pub schema_version: String,
    pub correlation_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    pub contact_id: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub title: Option<String>,
    pub company_name: Option<String>,
    pub company_domain: Option<String>,
    pub country: Option<String>,
    pub region: Option<String>,
    pub lifecycle_stage: Option<String>,
    pub lead_source: Option<String>,
    pub product_interest: Option<String>,
    pub consent_marketing: bool,
    pub attributes: BTreeMap<String, String>,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Engagement {
    pub engagement_id: String,
    pub contact_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub channel: Option<String>,
    pub campaign: Option<String>,
    pub outcome: Option<String>,
    pub occurred_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub account_id: String,
    pub domain: String,
    pub name: String,
    pub employees: Option<i32>,
    pub annual_revenue: Option<f64>,
    pub industry: Option<String>,
    pub region: Option<String>,
    pub tier: Option<String>,
    pub owner_rep_id: Option<String>,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rep {
    pub rep_id: String,
    pub name: String,
    pub team: String,
    pub regions: Vec<String>,
    pub max_open_leads: i32,
    pub active: bool,
    pub timezone: String,
    pub working_hours: Option<String>,
    pub updated_at: i64,
}

/// An input event: envelope plus the payload of its topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event<P> {
    pub envelope: Envelope,
    pub payload: P,
}

pub type ContactEvent = Event<Contact>;
pub type EngagementEvent = Event<Engagement>;
pub type AccountEvent = Event<Account>;
pub type RepEvent = Event<Rep>;
pub type LeadAckEvent = Event<LeadAck>;

/// An acknowledgement of a routed lead (`leads.acks`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeadAck {
    pub decision_id: String,
    pub contact_id: String,
    pub rep_id: String,
    /// `accepted`, `contacted`, `rejected` or `reassigned`.
    pub action: String,
    pub occurred_at: i64,
}

/// Output: a routed lead not acknowledged in time (or rejected), at one escalation level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlaBreach {
    pub decision_id: String,
    pub contact_id: String,
    pub priority: String,
    pub queue: String,
    pub owner_rep_id: Option<String>,
    pub level: i32,
    pub sla_deadline: i64,
    pub breached_at: i64,
    pub escalated_decision_id: Option<String>,
    pub reasons: Vec<String>,
    pub routed_at: i64,
    pub rule_version: String,
}

/// Output: one routing decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoutedLead {
    pub decision_id: String,
    pub event_id: String,
    pub contact_id: String,
    pub priority: String,
    pub queue: String,
    pub owner_rep_id: Option<String>,
    pub reasons: Vec<String>,
    pub rule_version: String,
    pub score: i32,
    pub sla_deadline: i64,
    pub occurred_at: i64,
    pub routed_at: i64,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub company_name: Option<String>,
    pub country: Option<String>,
    pub region: Option<String>,
    pub account_id: Option<String>,
    pub account_name: Option<String>,
    pub account_tier: Option<String>,
    pub employees: Option<i32>,
    pub annual_revenue: Option<f64>,
    pub engagements_24h: i32,
    pub engagements_7d: i32,
}

/// Output: an input event that arrived behind the watermark.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LateEvent {
    pub event_id: String,
    pub event_type: String,
    pub aggregate_id: String,
    pub source_topic: String,
    pub occurred_at: i64,
    pub watermark: i64,
    pub observed_at: i64,
    pub lateness_ms: i64,
    #[serde(with = "apache_avro::serde::bytes")]
    pub original: Vec<u8>,
}

/// Output: an event where the shadow script decided otherwise than the live one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowDiff {
    pub event_id: String,
    pub contact_id: String,
    pub occurred_at: i64,
    pub decided_at: i64,
    /// `P2->P0`, `none->P1`, `P1->script_error`, ...
    pub transition: String,
    pub live: ShadowSide,
    pub shadow: ShadowSide,
}

/// What one script decided, in a [`ShadowDiff`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowSide {
    pub rule_version: String,
    /// `routed`, `none`, or the failure class.
    pub outcome: String,
    pub priority: Option<String>,
    pub queue: Option<String>,
    pub owner_rep_id: Option<String>,
    pub reasons: Vec<String>,
}

/// Output: one record per event that reached routing, on the audit topic (`outputs.audit`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeadAudit {
    pub event_id: String,
    pub contact_id: String,
    pub event_type: String,
    pub occurred_at: i64,
    pub evaluated_at: i64,
    pub rule_version: String,
    /// `routed`, `none`, `unknown_contact`, or the failure class.
    pub outcome: String,
    pub decision_id: Option<String>,
    pub priority: Option<String>,
    pub queue: Option<String>,
    pub owner_rep_id: Option<String>,
    pub score: Option<i32>,
    pub reasons: Vec<String>,
    pub error: Option<String>,
    /// The `lead` map as JSON.
    pub lead: Option<String>,
    pub trace: Vec<TraceStep>,
    pub trace_truncated: i32,
}

/// One step of a [`LeadAudit`]'s trace (`route::trace::Step`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceStep {
    pub line: i32,
    pub column: i32,
    pub function: String,
    /// `call` or `if`.
    pub kind: String,
    pub detail: String,
    pub taken: Option<bool>,
}
