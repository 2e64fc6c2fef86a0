//! What leaves the processor: routed leads on their priority topic, late events, DLQ
//! records, and the changelogs of the tasks' state.

pub mod breach;
pub mod dlq;
pub mod late;
pub mod producer;
pub mod routed;

/// Which of the processor's outputs a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    Routed,
    Late,
    Dlq,
    /// An SLA breach (`SlaBreach`).
    Breach,
    /// A contact's latest decision on the compacted assignments topic.
    Assignment,
    /// Where the shadow script disagrees (`ShadowDiff`).
    ShadowDiff,
    /// What an evaluation did and why (`LeadAudit`).
    Audit,
    /// A state change of a task (`state::changelog`).
    Changelog,
}

impl OutputKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OutputKind::Routed => "routed",
            OutputKind::Late => "late",
            OutputKind::Dlq => "dlq",
            OutputKind::Breach => "breach",
            OutputKind::Assignment => "assignment",
            OutputKind::ShadowDiff => "shadow_diff",
            OutputKind::Audit => "audit",
            OutputKind::Changelog => "changelog",
        }
    }
}

/// A record to produce.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputRecord {
    pub kind: OutputKind,
    pub topic: String,
    /// The partition to produce to; `None`: by key (Java's murmur2, as Kafka Streams).
    pub partition: Option<i32>,
    /// `None` only on DLQ records whose input had no key.
    pub key: Option<Vec<u8>>,
    /// `None` only on DLQ records whose input had no value.
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(&'static str, Vec<u8>)>,
}
