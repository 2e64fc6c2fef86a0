//! Every metric leadflow exports, by name, with its labels (low cardinality only: topic,
//! priority, error class, outcome; never a contact or event id).

/// Records read from an input topic. Labels: `input` (`contacts`, `engagements`).
pub const RECORDS_IN: &str = "leadflow_records_in_total";
/// Decisions emitted. Labels: `priority`.
pub const ROUTED: &str = "leadflow_routed_total";
/// Records sent to the DLQ. Labels: `class`.
pub const DLQ: &str = "leadflow_dlq_total";
/// Events skipped because their event_id was seen before.
pub const DUPLICATES: &str = "leadflow_duplicates_total";
/// Events processed without a decision. Labels: `reason` (`script_returned_unit`,
/// `unknown_contact`).
pub const NO_DECISION: &str = "leadflow_no_decision_total";
/// Registry calls that failed transiently and were retried.
pub const REGISTRY_RETRIES: &str = "leadflow_registry_retries_total";
/// Records read but not yet delivered and committed.
pub const IN_FLIGHT: &str = "leadflow_in_flight_records";
/// Reference-table records applied. Labels: `table`.
pub const REFERENCE_UPDATES: &str = "leadflow_reference_updates_total";
/// Seconds from reading a record to committing it.
pub const RECORD_LATENCY: &str = "leadflow_record_latency_seconds";

/// Registers descriptions so `/metrics` documents itself.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(RECORDS_IN, "Records read from an input topic");
    describe_counter!(ROUTED, "Routing decisions emitted, by priority");
    describe_counter!(DLQ, "Records sent to the dead-letter queue, by error class");
    describe_counter!(
        DUPLICATES,
        "Events skipped as re-deliveries of a seen event_id"
    );
    describe_counter!(
        NO_DECISION,
        "Events processed without a routing decision, by reason"
    );
    describe_counter!(
        REGISTRY_RETRIES,
        "Schema registry calls retried after a transient failure"
    );
    describe_gauge!(
        IN_FLIGHT,
        "Records read but not yet delivered and committed"
    );
    describe_counter!(
        REFERENCE_UPDATES,
        "Reference table records applied, by table"
    );
    describe_histogram!(
        RECORD_LATENCY,
        "Seconds from reading a record to committing it"
    );
}
