package leadflow.twin;

import java.time.Duration;

import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.state.Stores;

/**
 * The processor topology: both co-partitioned inputs into one processor (Kafka Streams merges
 * a task's partitions in record-timestamp order), its three stores (with changelogs), the
 * accounts and reps global stores, and one sink per output topic.
 *
 * <pre>
 *   contacts ─┐                                  ┌─ routed-p0 / -p1 / -p2
 *             ├─ route [contact, dedup, task] ───┼─ late
 * engagements ┘  (reads global accounts, reps)   └─ dlq
 * </pre>
 */
final class TwinTopology {
    private TwinTopology() {}

    static Topology build(Settings s, SchemaRegistry registry) {
        Settings.Topics topics = s.topics();
        Topology t = new Topology();
        t.addSource("contacts", new ByteArrayDeserializer(),
                new InputDeserializer(Avro.Kind.CONTACT_EVENT, registry, s.maxRecordBytes()), topics.contacts());
        t.addSource("engagements", new ByteArrayDeserializer(),
                new InputDeserializer(Avro.Kind.ENGAGEMENT_EVENT, registry, s.maxRecordBytes()), topics.engagements());
        t.addProcessor("route", () -> new LeadProcessor(s), "contacts", "engagements");

        // A busy contact's record is read and written many times per commit: the record cache
        // keeps it, and the changelog gets its last value per commit.
        t.addStateStore(Stores.keyValueStoreBuilder(
                        Stores.persistentKeyValueStore(LeadProcessor.CONTACT_STORE), Serdes.String(), ContactState.serde())
                .withCachingEnabled(), "route");
        // Every event id is new: a cache would only add work. A window store expires the marks
        // after the retention, and its changelog is compact,delete with that retention.
        Duration retention = Duration.ofMillis(s.dedupRetentionMs());
        t.addStateStore(Stores.windowStoreBuilder(
                        Stores.persistentWindowStore(LeadProcessor.DEDUP_STORE, retention, retention, false),
                        Serdes.String(), Serdes.Long())
                .withCachingDisabled(), "route");
        t.addStateStore(Stores.keyValueStoreBuilder(
                        Stores.persistentKeyValueStore(LeadProcessor.TASK_STORE), Serdes.String(), Serdes.ByteArray())
                .withCachingEnabled(), "route");

        // The topic is the store's changelog: no changelog of its own.
        t.addGlobalStore(Stores.keyValueStoreBuilder(
                        Stores.persistentKeyValueStore(Accounts.STORE), Serdes.String(), Serdes.ByteArray())
                .withLoggingDisabled(),
                "accounts-source", new StringDeserializer(), new Accounts.UpdateDeserializer(registry),
                topics.accounts(), "accounts-updater", Accounts.Updater::new);
        t.addGlobalStore(Stores.keyValueStoreBuilder(
                        Stores.persistentKeyValueStore(Reps.STORE), Serdes.String(), Serdes.ByteArray())
                .withLoggingDisabled(),
                "reps-source", new StringDeserializer(), new Reps.UpdateDeserializer(registry),
                topics.reps(), "reps-updater", Reps.Updater::new);

        for (int i = 0; i < 3; i++) {
            t.addSink(LeadProcessor.ROUTED_SINKS[i], topics.routed(i), new ByteArraySerializer(),
                    new ByteArraySerializer(), "route");
        }
        t.addSink(LeadProcessor.LATE_SINK, topics.late(), new ByteArraySerializer(), new ByteArraySerializer(),
                "route");
        t.addSink(LeadProcessor.DLQ_SINK, topics.dlq(), new ByteArraySerializer(), new ByteArraySerializer(),
                "route");
        return t;
    }
}
