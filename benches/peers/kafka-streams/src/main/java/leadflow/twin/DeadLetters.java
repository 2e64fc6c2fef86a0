package leadflow.twin;

import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.List;
import java.util.Map;

import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.header.Headers;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.streams.errors.DeserializationExceptionHandler;
import org.apache.kafka.streams.errors.ErrorHandlerContext;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Dead-letter records with leadflow's headers (docs/contracts.md §5, src/sink/dlq.rs): the
 * original key and value, {@code error.class}, {@code error.message} (quoted values removed),
 * the source coordinates, and a value cut to 1,024 bytes (header {@code original.size}) when
 * the copy would exceed the record limit.
 */
final class DeadLetters {
    private DeadLetters() {}

    static final String TOPIC_CONFIG = "leadflow.twin.dlq.topic";
    static final String MAX_RECORD_BYTES_CONFIG = "leadflow.twin.max.record.bytes";
    static final int TRUNCATED_VALUE_BYTES = 1024;
    static final String WRITER = "leadflow-kafka-streams-twin";

    /** Where a record came from. */
    record Source(String topic, int partition, long offset, long timestamp, byte[] key, byte[] value) {}

    /** A DLQ copy of {@code source}: its headers, and its value truncated if need be. */
    static byte[] headersInto(Headers headers, Source source, String dlqClass, String message,
            String ruleVersion, int maxRecordBytes) {
        headers.add("error.class", utf8(dlqClass));
        headers.add("error.message", utf8(sanitize(message)));
        headers.add("source.topic", utf8(source.topic()));
        headers.add("source.partition", utf8(Integer.toString(source.partition())));
        headers.add("source.offset", utf8(Long.toString(source.offset())));
        headers.add("source.timestamp", utf8(Long.toString(source.timestamp())));
        headers.add("leadflow.version", utf8(WRITER));
        if (ruleVersion != null) {
            headers.add("rule.version", utf8(ruleVersion));
        }
        byte[] value = source.value();
        int size = (value == null ? 0 : value.length) + (source.key() == null ? 0 : source.key().length);
        if (value != null && size > maxRecordBytes && value.length > TRUNCATED_VALUE_BYTES) {
            headers.add("original.size", utf8(Integer.toString(value.length)));
            value = Arrays.copyOf(value, TRUNCATED_VALUE_BYTES);
        }
        return value;
    }

    /** leadflow's message sanitising: quoted parts (which may hold personal data) become "…". */
    static String sanitize(String message) {
        StringBuilder out = new StringBuilder();
        int bytes = 0;
        boolean quoted = false;
        for (int i = 0; i < message.length(); ) {
            int c = message.codePointAt(i);
            i += Character.charCount(c);
            if (c == '"') {
                if (!quoted) {
                    out.append("\"…");
                    bytes += 4;
                }
                quoted = !quoted;
                if (!quoted) {
                    out.append('"');
                    bytes += 1;
                }
            } else if (!quoted) {
                out.appendCodePoint(c);
                bytes += c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
            }
            if (bytes >= 300) {
                break;
            }
        }
        return out.toString();
    }

    static byte[] utf8(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    /**
     * The Kafka Streams way to dead-letter records that cannot be deserialized (KIP-1034): the
     * handler returns the DLQ record and processing resumes; Kafka Streams produces it with the
     * task's producer (in the task's transaction under exactly-once).
     */
    public static final class Handler implements DeserializationExceptionHandler {
        private static final Logger log = LoggerFactory.getLogger(Handler.class);
        private String topic;
        private int maxRecordBytes;

        @Override
        public void configure(Map<String, ?> configs) {
            topic = (String) configs.get(TOPIC_CONFIG);
            maxRecordBytes = Integer.parseInt(configs.get(MAX_RECORD_BYTES_CONFIG).toString());
        }

        @Override
        public Response handleError(ErrorHandlerContext context, ConsumerRecord<byte[], byte[]> record,
                Exception exception) {
            String dlqClass = exception instanceof InputDeserializer.PoisonPill p ? p.dlqClass : "avro_decode";
            Source source = new Source(record.topic(), record.partition(), record.offset(), record.timestamp(),
                    record.key(), record.value());
            Headers headers = new RecordHeaders();
            byte[] value = headersInto(headers, source, dlqClass, String.valueOf(exception.getMessage()), null,
                    maxRecordBytes);
            Progress.RECORDS.increment();
            log.debug("dead-lettered {}:{}:{} as {}", record.topic(), record.partition(), record.offset(), dlqClass);
            return Response.resume(List.of(new ProducerRecord<>(topic, null, null, record.key(), value, headers)));
        }
    }
}
