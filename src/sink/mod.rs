//! What leaves the processor: routed leads on their priority topic, late events and DLQ
//! records.

pub mod dlq;
pub mod late;
pub mod routed;

/// A record to produce.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputRecord {
    pub topic: String,
    /// `None` only on DLQ records whose input had no key.
    pub key: Option<Vec<u8>>,
    /// `None` only on DLQ records whose input had no value.
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(&'static str, Vec<u8>)>,
}
