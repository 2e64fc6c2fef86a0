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
/// Registry calls that failed for a reason waited out (never a DLQ). Labels: `kind`
/// (`unavailable`, `unauthorized`, `forbidden`, `not_found`, `refused`).
pub const REGISTRY_FAULTS: &str = "leadflow_registry_faults_total";
/// Stream threads and reference loaders waiting on the schema registry now (`/readyz` is
/// false while it is above 0).
pub const REGISTRY_WAITING: &str = "leadflow_registry_waiting";
/// Error events of the Kafka clients (librdkafka recovers from all but fatal ones). Labels:
/// `client` (`consumer`, `producer`, `reference`, `admin`, `reader`), `code`.
pub const KAFKA_ERRORS: &str = "leadflow_kafka_errors_total";
/// Outputs produced again after a retriable delivery failure. Labels: `output` (`routed`,
/// `late`, `dlq`).
pub const PRODUCE_RETRIES: &str = "leadflow_produce_retries_total";
/// Rebalances seen by the group consumer. Labels: `change` (`assigned`, `revoked`).
pub const REBALANCES: &str = "leadflow_rebalances_total";
/// Changelog records applied to local state while restoring tasks. Labels: `store`.
pub const RESTORED: &str = "leadflow_restored_records_total";
/// Seconds a task's restore took (every store of it).
pub const RESTORE_SECONDS: &str = "leadflow_restore_seconds";
/// Outputs produced again alone because the broker refused the batch that held them (a
/// topic's `max.message.bytes` applies to a whole batch). Labels: `output`.
pub const PRODUCED_ALONE: &str = "leadflow_outputs_produced_alone_total";
/// Outputs the producer or the broker refused as too large, replaced by a DLQ record (or, for
/// a DLQ record, by one with its value truncated). Labels: `output`.
pub const OUTPUTS_TOO_LARGE: &str = "leadflow_outputs_too_large_total";
/// Reference-table records that could not be applied (written with an unknown schema id, or
/// undecodable). Labels: `table`, `reason`.
pub const REFERENCE_SKIPPED: &str = "leadflow_reference_skipped_total";
/// 1 while the input partitions are paused because the processor is full (backpressure).
pub const CONSUMER_PAUSED: &str = "leadflow_consumer_paused";
/// Records processed whose outputs are not yet delivered and committed.
pub const IN_FLIGHT: &str = "leadflow_in_flight_records";
/// Waits for an empty input of a task that ran out: the task's other input was then processed
/// without it (Kafka Streams' enforced processing), so records may be decided out of timestamp
/// order. Labels: `input` (the topic waited for), `behind` (`true`: the broker held records of
/// it not received yet).
pub const ENFORCED_PROCESSING: &str = "leadflow_enforced_processing_total";
/// Records received and waiting in the input merge for their turn (timestamp order across a
/// task's inputs).
pub const BUFFERED: &str = "leadflow_buffered_records";
/// Reference-table records applied. Labels: `table`.
pub const REFERENCE_UPDATES: &str = "leadflow_reference_updates_total";
/// Seconds from reading a record to committing it.
pub const RECORD_LATENCY: &str = "leadflow_record_latency_seconds";
/// A task's event-time watermark, ms since the epoch (absent until it has one). Labels:
/// `partition`.
pub const WATERMARK: &str = "leadflow_watermark_ms";
/// Events behind their task's watermark. Labels: `input` (`contacts`, `engagements`),
/// `policy` (`side_output`, `process`, `drop`).
pub const LATE_EVENTS: &str = "leadflow_late_events_total";

/// Transactions ended under exactly-once. Labels: `outcome` (`committed`, `aborted`).
pub const TRANSACTIONS: &str = "leadflow_transactions_total";
/// Seconds a transaction's commit took (offsets sent and the commit acknowledged).
pub const TRANSACTION_SECONDS: &str = "leadflow_transaction_commit_seconds";

/// Tasks this instance keeps a standby copy of (`state.standby_replicas`).
pub const STANDBY_TASKS: &str = "leadflow_standby_tasks";
/// Changelog records applied to standby copies.
pub const STANDBY_RECORDS: &str = "leadflow_standby_records_total";

/// Registers descriptions so `/metrics` documents itself.
/// Acknowledgements read, by action and what they did (`on_time`, `late`, `unknown_decision`,
/// `ignored`).
pub const ACKS: &str = "leadflow_acks_total";
/// Seconds from a decision to its first `accepted` or `contacted` acknowledgement (the
/// acknowledgement's occurred_at), by the decision's priority; a histogram.
pub const TIME_TO_ACK: &str = "leadflow_time_to_ack_seconds";
/// SLA breaches, by the breached decision's priority and queue, and cause.
pub const SLA_BREACHES: &str = "leadflow_sla_breaches_total";
/// Decisions timed against their SLA (armed timers), by priority.
pub const SLA_TRACKED: &str = "leadflow_sla_tracked_total";
/// Decisions waiting for an acknowledgement (not acknowledged, not breached), by priority.
pub const SLA_OPEN: &str = "leadflow_sla_open_decisions";
/// Escalations (re-routes after a breach), by the escalated decision's priority.
pub const ESCALATIONS: &str = "leadflow_escalations_total";
/// `escalate(lead, breach)` calls that failed (the breach is recorded, not re-routed).
pub const ESCALATE_FAILURES: &str = "leadflow_escalate_failures_total";

/// Histogram buckets (seconds) of [`TIME_TO_ACK`]: around the SLA windows (1, 5, 30 min).
pub const TIME_TO_ACK_BUCKETS: [f64; 12] = [
    10.0, 30.0, 60.0, 120.0, 180.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 86400.0,
];

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
    describe_counter!(
        REGISTRY_FAULTS,
        "Schema registry calls that failed for a reason leadflow waits out (outage, refused \
         credentials, wrong path), by kind; never a reason to dead-letter a record"
    );
    describe_gauge!(
        REGISTRY_WAITING,
        "Stream threads and reference loaders waiting on the schema registry now"
    );
    describe_counter!(
        KAFKA_ERRORS,
        "Error events of the Kafka clients, by client and code (librdkafka recovers from all \
         but fatal ones)"
    );
    describe_counter!(
        PRODUCE_RETRIES,
        "Outputs produced again after a retriable delivery failure, by output"
    );
    describe_counter!(
        REBALANCES,
        "Assignments and revocations of the group consumer"
    );
    describe_counter!(
        RESTORED,
        "Changelog records applied to local state while restoring tasks, by store"
    );
    describe_histogram!(RESTORE_SECONDS, "Seconds a task's restore took");
    describe_gauge!(STANDBY_TASKS, "Tasks kept as standby copies");
    describe_counter!(
        STANDBY_RECORDS,
        "Changelog records applied to standby copies of tasks"
    );
    describe_counter!(
        TRANSACTIONS,
        "Transactions ended under exactly-once, by outcome (committed, aborted)"
    );
    describe_histogram!(
        TRANSACTION_SECONDS,
        "Seconds a transaction commit took (offsets sent and commit acknowledged)"
    );
    describe_counter!(
        PRODUCED_ALONE,
        "Outputs produced again alone after the broker refused the batch that held them, by \
         output"
    );
    describe_counter!(
        OUTPUTS_TOO_LARGE,
        "Outputs refused as too large and replaced by a (truncated) DLQ record, by output"
    );
    describe_counter!(
        REFERENCE_SKIPPED,
        "Reference-table records that could not be applied, by table and reason"
    );
    describe_gauge!(
        CONSUMER_PAUSED,
        "1 while the input partitions are paused because the processor is full"
    );
    describe_counter!(
        ENFORCED_PROCESSING,
        "Waits for an empty input that ran out: its task went on without it, by input and whether it was behind"
    );
    describe_gauge!(
        IN_FLIGHT,
        "Records processed whose outputs are not yet delivered and committed"
    );
    describe_gauge!(
        BUFFERED,
        "Records received and waiting in the input merge for their turn (timestamp order \
         across a task's inputs)"
    );
    describe_counter!(
        REFERENCE_UPDATES,
        "Reference table records applied, by table"
    );
    describe_histogram!(
        RECORD_LATENCY,
        "Seconds from reading a record to committing it"
    );
    describe_gauge!(
        WATERMARK,
        "Event-time watermark of a task (min stream time of its inputs minus grace), ms since \
         the epoch, by partition"
    );
    describe_counter!(
        LATE_EVENTS,
        "Events behind their task's watermark, by input and lateness policy"
    );
    describe_counter!(
        ACKS,
        "Acknowledgements read, by action and result (on_time, late, unknown_decision, ignored)"
    );
    describe_histogram!(
        TIME_TO_ACK,
        "Seconds from a decision to its first accepted or contacted acknowledgement, by priority"
    );
    describe_counter!(
        SLA_BREACHES,
        "SLA breaches, by the breached decision's priority and queue, and cause (deadline, rejected)"
    );
    describe_counter!(
        SLA_TRACKED,
        "Decisions timed against their SLA, by priority"
    );
    describe_gauge!(
        SLA_OPEN,
        "Decisions of this instance's tasks waiting for an acknowledgement before their deadline, by priority"
    );
    describe_counter!(
        ESCALATIONS,
        "Leads re-routed after a breach, by the new decision's priority"
    );
    describe_counter!(
        ESCALATE_FAILURES,
        "escalate(lead, breach) calls that failed; the breach is recorded without a re-route"
    );
}
