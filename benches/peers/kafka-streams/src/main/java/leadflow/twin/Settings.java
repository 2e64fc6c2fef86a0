package leadflow.twin;

/**
 * What the twin runs with: the shipped topology's settings (topologies/lead-routing.yaml), its
 * topic names under the prefix, and the schema ids of the outputs.
 */
record Settings(
        Topics topics,
        String ruleVersion,
        /** SLA window of P0, P1, P2 (sla: 1m, 5m, 30m). */
        long[] slaMs,
        /** lateness.grace, lateness.idle_timeout (policy side_output). */
        long graceMs,
        long idleMs,
        /** state.dedup_retention. */
        long dedupRetentionMs,
        /** limits.max_clock_skew, limits.max_record_bytes. */
        long maxClockSkewMs,
        int maxRecordBytes,
        /** Registry ids of RoutedLead under each priority topic's subject, and of LateEvent. */
        int[] routedSchemaIds,
        int lateSchemaId) {

    static final long MINUTE_MS = 60_000L;
    static final long[] SLA_MS = {MINUTE_MS, 5 * MINUTE_MS, 30 * MINUTE_MS};
    static final long GRACE_MS = 5 * MINUTE_MS;
    static final long IDLE_MS = MINUTE_MS;
    static final long DEDUP_RETENTION_MS = 7 * History.DAY_MS;
    static final long MAX_CLOCK_SKEW_MS = 60 * MINUTE_MS;
    static final int MAX_RECORD_BYTES = 1 << 20;
    /** limits.max_task_idle: Kafka Streams' max.task.idle.ms. */
    static final long MAX_TASK_IDLE_MS = 100;

    /** The topics of the topology, each with the prefix (as leadflow gen --topic-prefix). */
    record Topics(String contacts, String engagements, String accounts, String reps, String p0, String p1,
            String p2, String late, String dlq) {
        static Topics withPrefix(String p) {
            return new Topics(p + "crm.contacts.v1", p + "crm.engagements.v1", p + "crm.accounts.v1",
                    p + "crm.reps.v1",
                    p + "leads.routed.p0", p + "leads.routed.p1", p + "leads.routed.p2", p + "leads.late",
                    p + "leads.dlq");
        }

        String routed(int priority) {
            return switch (priority) {
                case 0 -> p0;
                case 1 -> p1;
                default -> p2;
            };
        }
    }
}
