//! The canonical schemas of `avro/`, compiled into the binary and parsed once.

use std::sync::OnceLock;

use apache_avro::Schema;

/// One canonical schema, by the record it describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchemaKind {
    ContactEvent,
    EngagementEvent,
    AccountEvent,
    RepEvent,
    RoutedLead,
    LateEvent,
    LeadAckEvent,
    SlaBreach,
    ShadowDiff,
    LeadAudit,
}

impl SchemaKind {
    pub const ALL: [SchemaKind; 10] = [
        SchemaKind::ContactEvent,
        SchemaKind::EngagementEvent,
        SchemaKind::AccountEvent,
        SchemaKind::RepEvent,
        SchemaKind::RoutedLead,
        SchemaKind::LateEvent,
        SchemaKind::LeadAckEvent,
        SchemaKind::SlaBreach,
        SchemaKind::ShadowDiff,
        SchemaKind::LeadAudit,
    ];

    /// File name under `avro/`.
    pub fn file_name(self) -> &'static str {
        match self {
            SchemaKind::ContactEvent => "contact_event.avsc",
            SchemaKind::EngagementEvent => "engagement_event.avsc",
            SchemaKind::AccountEvent => "account_event.avsc",
            SchemaKind::RepEvent => "rep_event.avsc",
            SchemaKind::RoutedLead => "routed_lead.avsc",
            SchemaKind::LateEvent => "late_event.avsc",
            SchemaKind::LeadAckEvent => "lead_ack_event.avsc",
            SchemaKind::SlaBreach => "sla_breach.avsc",
            SchemaKind::ShadowDiff => "shadow_diff.avsc",
            SchemaKind::LeadAudit => "lead_audit.avsc",
        }
    }

    /// The schema text as shipped in `avro/`.
    pub fn source(self) -> &'static str {
        match self {
            SchemaKind::ContactEvent => include_str!("../../avro/contact_event.avsc"),
            SchemaKind::EngagementEvent => include_str!("../../avro/engagement_event.avsc"),
            SchemaKind::AccountEvent => include_str!("../../avro/account_event.avsc"),
            SchemaKind::RepEvent => include_str!("../../avro/rep_event.avsc"),
            SchemaKind::RoutedLead => include_str!("../../avro/routed_lead.avsc"),
            SchemaKind::LateEvent => include_str!("../../avro/late_event.avsc"),
            SchemaKind::LeadAckEvent => include_str!("../../avro/lead_ack_event.avsc"),
            SchemaKind::SlaBreach => include_str!("../../avro/sla_breach.avsc"),
            SchemaKind::ShadowDiff => include_str!("../../avro/shadow_diff.avsc"),
            SchemaKind::LeadAudit => include_str!("../../avro/lead_audit.avsc"),
        }
    }
}

/// Parsed canonical schemas, indexed by [`SchemaKind`].
pub struct CanonicalSchemas {
    parsed: Vec<Schema>,
}

impl CanonicalSchemas {
    fn load() -> Self {
        let parsed = SchemaKind::ALL
            .iter()
            .map(|kind| {
                Schema::parse_str(kind.source()).unwrap_or_else(|e| {
                    // The files are compiled in and covered by tests: a failure is a build bug.
                    panic!("avro/{} does not parse: {e}", kind.file_name())
                })
            })
            .collect();
        CanonicalSchemas { parsed }
    }

    pub fn get(&self, kind: SchemaKind) -> &Schema {
        &self.parsed[kind as usize]
    }
}

/// The process-wide parsed schemas.
pub fn canonical() -> &'static CanonicalSchemas {
    static SCHEMAS: OnceLock<CanonicalSchemas> = OnceLock::new();
    SCHEMAS.get_or_init(CanonicalSchemas::load)
}
