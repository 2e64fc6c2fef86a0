package leadflow.twin;

import java.util.ArrayList;
import java.util.List;

import org.apache.avro.generic.GenericRecord;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.KeyValueIterator;
import org.apache.kafka.streams.state.KeyValueStore;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The reps reference table as a global store, as far as the twin needs it: whether each rep
 * is active (leadflow's src/route/reps.rs {@code correct_owner}, contracts §10.20). A
 * decision whose owner is not an active rep of a non-empty table loses its owner, with a
 * reason.
 */
final class Reps {
    private Reps() {}

    static final String STORE = "reps";

    private static final byte[] ACTIVE = {1};
    private static final byte[] INACTIVE = {0};

    /** {@code decision} as leadflow emits it: an owner who is not an active rep cleared. */
    static RoutingRules.Decision correctOwner(KeyValueStore<String, byte[]> store, RoutingRules.Decision decision) {
        String owner = decision.owner();
        if (owner == null) {
            return decision;
        }
        byte[] rep = store.get(owner);
        String words;
        if (rep == null) {
            try (KeyValueIterator<String, byte[]> all = store.all()) {
                if (!all.hasNext()) {
                    return decision; // no reps table: owners are kept
                }
            }
            words = "is not in the reps table";
        } else if (rep[0] == 0) {
            words = "is not an active rep";
        } else {
            return decision;
        }
        List<String> reasons = new ArrayList<>(decision.reasons());
        reasons.add("owner " + owner + " " + words + ": left to the queue");
        return new RoutingRules.Decision(decision.priority(), decision.queue(), null, reasons, decision.score());
    }

    /** A reps topic's value: active or not, a deletion (tombstone), or a record to skip. */
    record Update(Boolean active, String skipped) {}

    /** Decodes rep values; never throws (a bad reference record is skipped and logged). */
    static final class UpdateDeserializer implements Deserializer<Update> {
        private final SchemaRegistry registry;

        UpdateDeserializer(SchemaRegistry registry) {
            this.registry = registry;
        }

        @Override
        public Update deserialize(String topic, byte[] value) {
            if (value == null) {
                return new Update(null, null);
            }
            return Avro.readReference(registry, Avro.Kind.REP_EVENT, value,
                    rep -> new Update((Boolean) ((GenericRecord) rep.get("payload")).get("active"), null),
                    skipped -> new Update(null, skipped));
        }
    }

    /** Keeps the global store: rep id → active. */
    static final class Updater implements Processor<String, Update, Void, Void> {
        private static final Logger log = LoggerFactory.getLogger(Updater.class);
        private KeyValueStore<String, byte[]> store;

        @Override
        public void init(ProcessorContext<Void, Void> context) {
            store = context.getStateStore(STORE);
        }

        @Override
        public void process(Record<String, Update> record) {
            String key = record.key();
            Update u = record.value();
            if (key == null || (u != null && u.skipped() != null)) {
                log.warn("reference record skipped: {}", key == null ? "missing_key" : u.skipped());
                return;
            }
            if (u == null || u.active() == null) {
                store.delete(key);
            } else {
                store.put(key, u.active() ? ACTIVE : INACTIVE);
            }
        }
    }
}
