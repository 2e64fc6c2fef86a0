//! What leaves the processor: routed leads on their priority topic, late events and DLQ
//! records.

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
}

impl OutputKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OutputKind::Routed => "routed",
            OutputKind::Late => "late",
            OutputKind::Dlq => "dlq",
        }
    }
}

/// A record to produce.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputRecord {
    pub kind: OutputKind,
    pub topic: String,
    /// `None` only on DLQ records whose input had no key.
    pub key: Option<Vec<u8>>,
    /// `None` only on DLQ records whose input had no value.
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(&'static str, Vec<u8>)>,
}
