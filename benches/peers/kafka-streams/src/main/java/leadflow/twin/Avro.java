package leadflow.twin;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.util.Map;
import java.util.TreeMap;
import java.util.function.Function;

import org.apache.avro.Schema;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericDatumWriter;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryEncoder;
import org.apache.avro.io.DecoderFactory;
import org.apache.avro.io.EncoderFactory;

import leadflow.twin.Events.Account;
import leadflow.twin.Events.Contact;
import leadflow.twin.Events.ContactEvent;
import leadflow.twin.Events.Engagement;
import leadflow.twin.Events.EngagementEvent;
import leadflow.twin.Events.Envelope;

/**
 * The canonical schemas (the repository's avro/ directory, on the classpath), the Confluent
 * wire format (magic byte 0, 4-byte big-endian schema id, Avro binary), and conversion between
 * Avro records and {@link Events}.
 */
final class Avro {
    private Avro() {}

    /** One of the canonical schemas, by its file in avro/. */
    enum Kind {
        CONTACT_EVENT("contact_event.avsc"),
        ENGAGEMENT_EVENT("engagement_event.avsc"),
        ACCOUNT_EVENT("account_event.avsc"),
        REP_EVENT("rep_event.avsc"),
        ROUTED_LEAD("routed_lead.avsc"),
        LATE_EVENT("late_event.avsc");

        final String text;
        final Schema schema;

        Kind(String file) {
            try (InputStream in = Avro.class.getResourceAsStream("/avro/" + file)) {
                if (in == null) {
                    throw new IllegalStateException("avro/" + file + " is not on the classpath");
                }
                this.text = new String(in.readAllBytes(), StandardCharsets.UTF_8);
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
            this.schema = new Schema.Parser().parse(text);
        }
    }

    static final byte MAGIC = 0;

    /** Confluent framing of an Avro datum written with schema {@code id}. */
    static final class Writer {
        private final int id;
        private final GenericDatumWriter<GenericRecord> writer;
        private final ByteArrayOutputStream buffer = new ByteArrayOutputStream(512);
        private BinaryEncoder encoder;

        Writer(Kind kind, int id) {
            this.id = id;
            this.writer = new GenericDatumWriter<>(kind.schema);
        }

        /** Not thread-safe: one per stream task. */
        byte[] write(GenericRecord record) {
            buffer.reset();
            buffer.write(MAGIC);
            buffer.write(id >>> 24);
            buffer.write(id >>> 16);
            buffer.write(id >>> 8);
            buffer.write(id);
            encoder = EncoderFactory.get().binaryEncoder(buffer, encoder);
            try {
                writer.write(record, encoder);
                encoder.flush();
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
            return buffer.toByteArray();
        }
    }

    static String str(Object o) {
        return o == null ? null : o.toString();
    }

    static Envelope envelope(GenericRecord r) {
        return new Envelope(
                str(r.get("event_id")),
                str(r.get("event_type")),
                str(r.get("aggregate_id")),
                str(r.get("source")),
                (Long) r.get("occurred_at"),
                (Integer) r.get("delivery_attempt"),
                str(r.get("schema_version")),
                str(r.get("correlation_id")));
    }

    static ContactEvent contactEvent(GenericRecord r) {
        GenericRecord p = (GenericRecord) r.get("payload");
        TreeMap<String, String> attributes = new TreeMap<>(RustStrings.ORDER);
        Object attrs = p.get("attributes");
        if (attrs instanceof Map<?, ?> m) {
            m.forEach((k, v) -> attributes.put(k.toString(), v.toString()));
        }
        Contact c = new Contact(
                str(p.get("contact_id")),
                str(p.get("email")),
                str(p.get("phone")),
                str(p.get("first_name")),
                str(p.get("last_name")),
                str(p.get("title")),
                str(p.get("company_name")),
                str(p.get("company_domain")),
                str(p.get("country")),
                str(p.get("region")),
                str(p.get("lifecycle_stage")),
                str(p.get("lead_source")),
                str(p.get("product_interest")),
                (Boolean) p.get("consent_marketing"),
                attributes,
                (Long) p.get("updated_at"));
        return new ContactEvent(envelope((GenericRecord) r.get("envelope")), c);
    }

    static EngagementEvent engagementEvent(GenericRecord r) {
        GenericRecord p = (GenericRecord) r.get("payload");
        Engagement e = new Engagement(
                str(p.get("engagement_id")),
                str(p.get("contact_id")),
                str(p.get("type")),
                str(p.get("channel")),
                str(p.get("campaign")),
                str(p.get("outcome")),
                (Long) p.get("occurred_at"));
        return new EngagementEvent(envelope((GenericRecord) r.get("envelope")), e);
    }

    /**
     * A reference topic's framed value read against {@code kind} and turned into a {@code T} by
     * {@code read}; a value that cannot be read becomes {@code skip} of its DLQ-style class
     * ({@code bad_magic}, {@code unknown_schema_id}, {@code avro_decode}). Never throws but
     * on interruption.
     */
    static <T> T readReference(SchemaRegistry registry, Kind kind, byte[] value, Function<GenericRecord, T> read,
            Function<String, T> skip) {
        if (value.length < 5 || value[0] != MAGIC) {
            return skip.apply("bad_magic");
        }
        int id = ((value[1] & 0xff) << 24) | ((value[2] & 0xff) << 16) | ((value[3] & 0xff) << 8)
                | (value[4] & 0xff);
        try {
            Schema writer = registry.byId(id);
            GenericDatumReader<GenericRecord> reader = new GenericDatumReader<>(writer, kind.schema);
            return read.apply(reader.read(null, DecoderFactory.get().binaryDecoder(value, 5, value.length - 5, null)));
        } catch (SchemaRegistry.UnknownSchemaException e) {
            return skip.apply("unknown_schema_id");
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException(e);
        } catch (IOException | RuntimeException e) {
            return skip.apply("avro_decode");
        }
    }

    static Account account(GenericRecord r) {
        GenericRecord p = (GenericRecord) r.get("payload");
        return new Account(
                str(p.get("account_id")),
                str(p.get("domain")),
                str(p.get("name")),
                (Integer) p.get("employees"),
                (Double) p.get("annual_revenue"),
                str(p.get("industry")),
                str(p.get("region")),
                str(p.get("tier")),
                str(p.get("owner_rep_id")),
                (Long) p.get("updated_at"));
    }
}
