package leadflow.twin;

import java.io.IOException;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

import org.apache.avro.Schema;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryDecoder;
import org.apache.avro.io.DecoderFactory;
import org.apache.kafka.common.errors.SerializationException;
import org.apache.kafka.common.serialization.Deserializer;

import leadflow.twin.Events.InputEvent;

/**
 * Value deserializer of the two keyed inputs (leadflow's src/pipeline/decode.rs): size, framing,
 * schema id (through the registry, cached) and datum, resolved from the writer's schema to
 * ours. A record that fails is a {@link PoisonPill} naming leadflow's DLQ class; Kafka
 * Streams hands it to {@link DeadLetters.Handler}. Registry faults are waited out inside (the
 * stream thread waits, as leadflow's does), so they never make a record a poison pill.
 *
 * <p>Shared by every task and stream thread of its source: thread-safe.
 */
final class InputDeserializer implements Deserializer<InputDeserializer.Input> {
    /** A decoded input event and the bytes it came from (for DLQ and late copies). */
    record Input(InputEvent event, byte[] raw) {}

    /** A record that cannot be decoded: its DLQ class (docs/contracts.md §5) and why. */
    static final class PoisonPill extends SerializationException {
        private static final long serialVersionUID = 1L;
        final String dlqClass;

        PoisonPill(String dlqClass, String message) {
            super(message);
            this.dlqClass = dlqClass;
        }
    }

    private final Avro.Kind kind;
    private final SchemaRegistry registry;
    private final int maxRecordBytes;
    private final Map<Integer, GenericDatumReader<GenericRecord>> readers = new ConcurrentHashMap<>();
    private final ThreadLocal<BinaryDecoder> decoders = new ThreadLocal<>();

    InputDeserializer(Avro.Kind kind, SchemaRegistry registry, int maxRecordBytes) {
        this.kind = kind;
        this.registry = registry;
        this.maxRecordBytes = maxRecordBytes;
    }

    @Override
    public Input deserialize(String topic, byte[] data) {
        byte[] value = data == null ? new byte[0] : data;
        if (value.length > maxRecordBytes) {
            throw new PoisonPill("oversize",
                    "value is " + value.length + " bytes, over the limit of " + maxRecordBytes);
        }
        if (value.length < 5) {
            throw new PoisonPill("bad_magic", "record of " + value.length
                    + " bytes is too short for the Confluent wire format (5-byte header)");
        }
        if (value[0] != Avro.MAGIC) {
            throw new PoisonPill("bad_magic", "magic byte is " + value[0] + ", expected 0");
        }
        int id = ((value[1] & 0xff) << 24) | ((value[2] & 0xff) << 16) | ((value[3] & 0xff) << 8)
                | (value[4] & 0xff);
        GenericDatumReader<GenericRecord> reader = readers.get(id);
        if (reader == null) {
            Schema writer;
            try {
                writer = registry.byId(id);
            } catch (SchemaRegistry.UnknownSchemaException e) {
                throw new PoisonPill("unknown_schema_id", e.getMessage());
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IllegalStateException("interrupted while waiting for the registry", e);
            }
            reader = new GenericDatumReader<>(writer, kind.schema);
            readers.put(id, reader);
        }
        try {
            BinaryDecoder decoder = DecoderFactory.get().binaryDecoder(value, 5, value.length - 5, decoders.get());
            decoders.set(decoder);
            GenericRecord record = reader.read(null, decoder);
            InputEvent event = kind == Avro.Kind.CONTACT_EVENT
                    ? Avro.contactEvent(record)
                    : Avro.engagementEvent(record);
            return new Input(event, data);
        } catch (IOException | RuntimeException e) {
            throw new PoisonPill("avro_decode", "schema id " + id + ": " + e);
        }
    }
}
