//! Every metric leadflow exports, by name, with its labels (low cardinality only: topic,
//! priority, error class, outcome; never a contact or event id).

/// Records read from an input topic. Labels: `input` (`contacts`, `engagements`, `acks`).
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
/// Seconds from reading a record to committing it (outputs delivered, state and offset
/// stored); a histogram.
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

/// Acknowledgements read. Labels: `action`, `result` (`on_time`, `late`, `rejected`,
/// `reassigned`, `ignored`, `unknown_decision`).
pub const ACKS: &str = "leadflow_acks_total";
/// Seconds from a decision to its first `accepted` or `contacted` acknowledgement (the
/// acknowledgement's occurred_at), by the decision's priority; a histogram.
pub const TIME_TO_ACK: &str = "leadflow_time_to_ack_seconds";
/// SLA breaches. Labels: `priority` and `queue` of the breached decision, `cause`
/// (`deadline`, `rejected`); created at zero for a queue when its first decision is timed.
pub const SLA_BREACHES: &str = "leadflow_sla_breaches_total";
/// Decisions timed against their SLA (armed timers), by priority.
pub const SLA_TRACKED: &str = "leadflow_sla_tracked_total";
/// Decisions waiting for an acknowledgement (not acknowledged, not breached), by priority.
pub const SLA_OPEN: &str = "leadflow_sla_open_decisions";
/// Escalations (re-routes after a breach), by the escalated decision's priority.
pub const ESCALATIONS: &str = "leadflow_escalations_total";
/// `escalate(lead, breach)` calls that failed (the breach is recorded, not re-routed).
pub const ESCALATE_FAILURES: &str = "leadflow_escalate_failures_total";
/// Decisions whose owner is not an active rep, emitted without the owner (contracts §10.20).
/// Labels: `reason` (`inactive`, `unknown`).
pub const OWNER_CORRECTIONS: &str = "leadflow_owner_corrections_total";

/// 1, with the build's `version` and the routing script's `rule_version` as labels.
pub const BUILD_INFO: &str = "leadflow_build_info";
/// Records on the broker not yet read by this instance, per input partition it owns (from
/// librdkafka's statistics, every 5 s ([`STATISTICS_INTERVAL_MS`]); 0 for a partition it does not
/// own). Labels: `topic`, `partition`.
pub const CONSUMER_LAG: &str = "leadflow_consumer_lag";
/// Stream threads of this instance, and how many are stuck now (a step running longer than
/// `limits.stuck_thread_timeout`; `/healthz` fails while one is). Labels: `state` (`running`,
/// `stuck`).
pub const STREAM_THREADS: &str = "leadflow_stream_threads";

/// 1 for the routing script in force, 0 for one it replaced. Labels: `rule_version`.
pub const RULES_INFO: &str = "leadflow_rules_info";
/// Reloads of the routing script. Labels: `outcome` (`loaded`, `failed`).
pub const RULES_RELOADS: &str = "leadflow_rules_reloads_total";
/// Reloads refused (the file does not compile, fails its checks or its `rules_tests`); the
/// running script stays.
pub const RULES_RELOAD_FAILURES: &str = "leadflow_rules_reload_failures_total";

/// Events the shadow script (`rules_shadow`) decided otherwise than the live one. Labels:
/// `transition` (`P2->P0`, `none->P1`, `P1->script_error`, `P1->P1` for another queue or
/// owner).
pub const SHADOW_DIFFS: &str = "leadflow_shadow_diffs_total";
/// Events both scripts decided (the shadow's share of the traffic).
pub const SHADOW_EVALUATIONS: &str = "leadflow_shadow_evaluations_total";

/// How often the group consumer reports its statistics (consumer lag).
pub const STATISTICS_INTERVAL_MS: u32 = 5_000;

/// Histogram buckets (seconds) of [`RECORD_LATENCY`]: from a millisecond to the commit
/// interval's multiples.
pub const RECORD_LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Histogram buckets (seconds) of [`TRANSACTION_SECONDS`].
pub const TRANSACTION_BUCKETS: [f64; 10] =
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];
/// Histogram buckets (seconds) of [`RESTORE_SECONDS`].
pub const RESTORE_BUCKETS: [f64; 10] = [0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0];

/// Histogram buckets (seconds) of [`TIME_TO_ACK`]: around the SLA windows (1, 5, 30 min).
pub const TIME_TO_ACK_BUCKETS: [f64; 12] = [
    10.0, 30.0, 60.0, 120.0, 180.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 86400.0,
];

/// The Prometheus recorder with every histogram's buckets (a histogram, unlike a summary,
/// aggregates across instances).
pub fn recorder_builder() -> metrics_exporter_prometheus::PrometheusBuilder {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let buckets: [(&str, &[f64]); 4] = [
        (TIME_TO_ACK, &TIME_TO_ACK_BUCKETS),
        (RECORD_LATENCY, &RECORD_LATENCY_BUCKETS),
        (TRANSACTION_SECONDS, &TRANSACTION_BUCKETS),
        (RESTORE_SECONDS, &RESTORE_BUCKETS),
    ];
    let mut builder = PrometheusBuilder::new();
    for (name, buckets) in buckets {
        builder = builder
            .set_buckets_for_metric(Matcher::Full(name.into()), buckets)
            .expect("bucket lists are not empty");
    }
    builder
}

/// What the processor runs with, for the series that exist from start-up.
pub struct StartUp<'a> {
    pub rule_version: &'a str,
    /// Acknowledgements are read (SLA tracking on).
    pub sla: bool,
    pub exactly_once: bool,
    pub stream_threads: usize,
}

/// Creates the series a dashboard or an alert rule reads at zero, so that `rate()` and
/// `increase()` see the first event and an absent series means a broken scrape, not "none
/// yet". Series whose labels are only known later (queues, partitions, error codes) appear
/// with their first value.
pub fn zero_series(start: &StartUp<'_>) {
    use crate::route::Priority;
    use crate::sink::dlq::DlqClass;
    use metrics::{counter, gauge, histogram};
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "rule_version" => start.rule_version.to_string()).set(1.0);
    gauge!(RULES_INFO, "rule_version" => start.rule_version.to_string()).set(1.0);
    for outcome in ["loaded", "failed"] {
        counter!(RULES_RELOADS, "outcome" => outcome).absolute(0);
    }
    counter!(RULES_RELOAD_FAILURES).absolute(0);
    gauge!(STREAM_THREADS, "state" => "running").set(start.stream_threads as f64);
    gauge!(STREAM_THREADS, "state" => "stuck").set(0.0);
    let mut inputs = vec!["contacts", "engagements"];
    if start.sla {
        inputs.push("acks");
    }
    for input in inputs {
        counter!(RECORDS_IN, "input" => input).absolute(0);
    }
    for input in ["contacts", "engagements"] {
        for policy in ["side_output", "process", "drop"] {
            counter!(LATE_EVENTS, "input" => input, "policy" => policy).absolute(0);
        }
    }
    for class in DlqClass::ALL {
        counter!(DLQ, "class" => class.as_str()).absolute(0);
    }
    for reason in ["script_returned_unit", "unknown_contact"] {
        counter!(NO_DECISION, "reason" => reason).absolute(0);
    }
    for reason in ["inactive", "unknown"] {
        counter!(OWNER_CORRECTIONS, "reason" => reason).absolute(0);
    }
    counter!(DUPLICATES).absolute(0);
    counter!(REGISTRY_RETRIES).absolute(0);
    gauge!(REGISTRY_WAITING).set(0.0);
    gauge!(CONSUMER_PAUSED).set(0.0);
    gauge!(IN_FLIGHT).set(0.0);
    gauge!(BUFFERED).set(0.0);
    for change in ["assigned", "revoked"] {
        counter!(REBALANCES, "change" => change).absolute(0);
    }
    for table in ["accounts", "reps"] {
        counter!(REFERENCE_UPDATES, "table" => table).absolute(0);
    }
    let _ = histogram!(RECORD_LATENCY);
    if start.exactly_once {
        for outcome in ["committed", "aborted"] {
            counter!(TRANSACTIONS, "outcome" => outcome).absolute(0);
        }
        let _ = histogram!(TRANSACTION_SECONDS);
    }
    for p in Priority::ALL {
        counter!(ROUTED, "priority" => p.as_str()).absolute(0);
        if start.sla {
            counter!(SLA_TRACKED, "priority" => p.as_str()).absolute(0);
            counter!(ESCALATIONS, "priority" => p.as_str()).absolute(0);
            gauge!(SLA_OPEN, "priority" => p.as_str()).set(0.0);
            let _ = histogram!(TIME_TO_ACK, "priority" => p.as_str());
        }
    }
    if start.sla {
        counter!(ESCALATE_FAILURES).absolute(0);
    }
}

/// Every metric leadflow itself exports (process metrics aside), with its Prometheus type.
pub const CATALOGUE: &[(&str, &str)] = &[
    (RECORDS_IN, "counter"),
    (ROUTED, "counter"),
    (DLQ, "counter"),
    (DUPLICATES, "counter"),
    (NO_DECISION, "counter"),
    (REGISTRY_RETRIES, "counter"),
    (REGISTRY_FAULTS, "counter"),
    (REGISTRY_WAITING, "gauge"),
    (KAFKA_ERRORS, "counter"),
    (PRODUCE_RETRIES, "counter"),
    (REBALANCES, "counter"),
    (RESTORED, "counter"),
    (RESTORE_SECONDS, "histogram"),
    (PRODUCED_ALONE, "counter"),
    (OUTPUTS_TOO_LARGE, "counter"),
    (REFERENCE_SKIPPED, "counter"),
    (CONSUMER_PAUSED, "gauge"),
    (IN_FLIGHT, "gauge"),
    (ENFORCED_PROCESSING, "counter"),
    (BUFFERED, "gauge"),
    (REFERENCE_UPDATES, "counter"),
    (RECORD_LATENCY, "histogram"),
    (WATERMARK, "gauge"),
    (LATE_EVENTS, "counter"),
    (TRANSACTIONS, "counter"),
    (TRANSACTION_SECONDS, "histogram"),
    (STANDBY_TASKS, "gauge"),
    (STANDBY_RECORDS, "counter"),
    (ACKS, "counter"),
    (TIME_TO_ACK, "histogram"),
    (SLA_BREACHES, "counter"),
    (SLA_TRACKED, "counter"),
    (SLA_OPEN, "gauge"),
    (ESCALATIONS, "counter"),
    (ESCALATE_FAILURES, "counter"),
    (OWNER_CORRECTIONS, "counter"),
    (BUILD_INFO, "gauge"),
    (CONSUMER_LAG, "gauge"),
    (STREAM_THREADS, "gauge"),
    (RULES_INFO, "gauge"),
    (RULES_RELOADS, "counter"),
    (RULES_RELOAD_FAILURES, "counter"),
    (SHADOW_DIFFS, "counter"),
    (SHADOW_EVALUATIONS, "counter"),
];

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
    describe_gauge!(
        BUILD_INFO,
        "1, labelled with the build's version and the routing script's rule_version"
    );
    describe_gauge!(
        CONSUMER_LAG,
        "Records on the broker not yet read, per input partition this instance owns (0 for one it does not)"
    );
    describe_gauge!(
        STREAM_THREADS,
        "Stream threads, by state (running, stuck: a step longer than limits.stuck_thread_timeout)"
    );
    describe_gauge!(
        RULES_INFO,
        "1 for the routing script in force (by rule_version), 0 for one it replaced"
    );
    describe_counter!(RULES_RELOADS, "Reloads of the routing script, by outcome");
    describe_counter!(
        SHADOW_DIFFS,
        "Events the shadow script decided otherwise than the live one, by transition"
    );
    describe_counter!(SHADOW_EVALUATIONS, "Events the shadow script decided too");
    describe_counter!(
        RULES_RELOAD_FAILURES,
        "Reloads of the routing script refused; the running script stays"
    );
    describe_counter!(
        ESCALATE_FAILURES,
        "escalate(lead, breach) calls that failed; the breach is recorded without a re-route"
    );
    describe_counter!(
        OWNER_CORRECTIONS,
        "Decisions whose owner is not an active rep, emitted without the owner, by reason"
    );
}
