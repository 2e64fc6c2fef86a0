//! Default topic names from the external contract (contracts §1) and how a prefix applies;
//! `peek` shows a topic's last records.

pub mod peek;

/// Contact events, keyed by contact_id.
pub const CONTACTS: &str = "crm.contacts.v1";
/// Engagement events, keyed by contact_id; co-partitioned with contacts.
pub const ENGAGEMENTS: &str = "crm.engagements.v1";
/// Account reference table (compacted), keyed by account_id.
pub const ACCOUNTS: &str = "crm.accounts.v1";
/// Rep reference table (compacted), keyed by rep_id.
pub const REPS: &str = "crm.reps.v1";
/// Routed leads per priority.
pub const ROUTED_P0: &str = "leads.routed.p0";
pub const ROUTED_P1: &str = "leads.routed.p1";
pub const ROUTED_P2: &str = "leads.routed.p2";
/// Events behind the watermark.
pub const LATE: &str = "leads.late";
/// Poison pills with error headers.
pub const DLQ: &str = "leads.dlq";
/// Acknowledgements of routed leads, keyed by contact_id; co-partitioned with the inputs.
pub const ACKS: &str = "leads.acks";
/// One record per SLA breach and level.
pub const ESCALATIONS: &str = "leads.escalations";
/// Compacted: each contact's latest `RoutedLead`, keyed by contact_id.
pub const ASSIGNMENTS: &str = "leads.assignments";
/// Where a shadow script (`rules_shadow`) disagrees with the live one.
pub const SHADOW_DIFF: &str = "leads.shadow.diff";
/// One record per evaluated event, when the topology names it as `outputs.audit`.
pub const AUDIT: &str = "leads.audit";

/// How a contract topic is laid out when leadflow creates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    /// A keyed event stream (delete retention).
    Stream,
    /// A reference table: compacted, latest value per key.
    Table,
}

/// Every topic of the contract with its kind, in a stable order.
pub const CONTRACT_TOPICS: [(&str, TopicKind); 14] = [
    (CONTACTS, TopicKind::Stream),
    (ENGAGEMENTS, TopicKind::Stream),
    (ACCOUNTS, TopicKind::Table),
    (REPS, TopicKind::Table),
    (ROUTED_P0, TopicKind::Stream),
    (ROUTED_P1, TopicKind::Stream),
    (ROUTED_P2, TopicKind::Stream),
    (LATE, TopicKind::Stream),
    (DLQ, TopicKind::Stream),
    (ACKS, TopicKind::Stream),
    (ESCALATIONS, TopicKind::Stream),
    (ASSIGNMENTS, TopicKind::Table),
    (SHADOW_DIFF, TopicKind::Stream),
    (AUDIT, TopicKind::Stream),
];

/// The topic name with an optional prefix (used to isolate test runs and demos).
pub fn with_prefix(prefix: &str, topic: &str) -> String {
    format!("{prefix}{topic}")
}

/// Schema Registry subject of a topic's values (TopicNameStrategy, contracts §2).
pub fn value_subject(topic: &str) -> String {
    format!("{topic}-value")
}
