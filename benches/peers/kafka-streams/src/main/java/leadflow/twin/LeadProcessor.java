package leadflow.twin;

import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;

import org.apache.kafka.common.header.Headers;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.processor.api.RecordMetadata;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.WindowStore;
import org.apache.kafka.streams.state.WindowStoreIterator;

import leadflow.twin.ContactState.PreviousDecision;
import leadflow.twin.DeadLetters.Source;
import leadflow.twin.Events.ContactEvent;
import leadflow.twin.Events.EngagementEvent;
import leadflow.twin.Events.Envelope;
import leadflow.twin.Events.InputEvent;
import leadflow.twin.InputDeserializer.Input;

/**
 * One stream task's processing of its contacts and engagements, which Kafka Streams hands it
 * merged in record-timestamp order (leadflow's src/pipeline/mod.rs, step for step): key check,
 * clock skew, de-duplication by event_id, event time (late events to the side output),
 * profile merge or engagement window, account match, the rules, and the routed lead on its
 * priority's topic. Kafka Streams creates one instance per task, so the task's watermark can
 * live in a field (and in the task's store).
 */
final class LeadProcessor implements Processor<byte[], Input, byte[], byte[]> {
    static final String CONTACT_STORE = "contact";
    static final String DEDUP_STORE = "dedup";
    static final String TASK_STORE = "task";
    static final String[] ROUTED_SINKS = {"routed-p0", "routed-p1", "routed-p2"};
    static final String LATE_SINK = "late";
    static final String DLQ_SINK = "dlq";
    private static final String[] PRIORITIES = {"P0", "P1", "P2"};
    private static final String TIME_KEY = "time";
    private static final int CONTACTS = 0;
    private static final int ENGAGEMENTS = 1;

    private final Settings settings;
    private ProcessorContext<byte[], byte[]> context;
    private KeyValueStore<String, ContactState> contacts;
    private WindowStore<String, Long> dedup;
    private KeyValueStore<String, byte[]> task;
    private KeyValueStore<String, byte[]> accounts;
    private KeyValueStore<String, byte[]> reps;
    private final Avro.Writer[] routed = new Avro.Writer[3];
    private Avro.Writer late;
    /** The task's event time, read from its store on first use. */
    private Watermarks time;

    LeadProcessor(Settings settings) {
        this.settings = settings;
    }

    @Override
    public void init(ProcessorContext<byte[], byte[]> context) {
        this.context = context;
        contacts = context.getStateStore(CONTACT_STORE);
        dedup = context.getStateStore(DEDUP_STORE);
        task = context.getStateStore(TASK_STORE);
        accounts = context.getStateStore(Accounts.STORE);
        reps = context.getStateStore(Reps.STORE);
        for (int i = 0; i < 3; i++) {
            routed[i] = new Avro.Writer(Avro.Kind.ROUTED_LEAD, settings.routedSchemaIds()[i]);
        }
        late = new Avro.Writer(Avro.Kind.LATE_EVENT, settings.lateSchemaId());
        // A task initialised again (after a restore) reads its event time from its store.
        time = null;
    }

    @Override
    public void process(Record<byte[], Input> record) {
        try {
            handle(record);
        } finally {
            Progress.RECORDS.increment();
        }
    }

    private void handle(Record<byte[], Input> record) {
        RecordMetadata meta = context.recordMetadata().orElseThrow();
        Input input = record.value();
        Source source = new Source(meta.topic(), meta.partition(), meta.offset(), record.timestamp(),
                record.key(), input.raw());
        String key = utf8Key(record.key());
        if (key == null || key.isEmpty()) {
            boolean notText = record.key() != null && key == null;
            deadLetter(source, "missing_key", notText
                    ? "record key is not UTF-8; the key must be the contact_id"
                    : "record has no key; the key must be the contact_id", null);
            return;
        }
        long now = System.currentTimeMillis();
        InputEvent event = input.event();
        String skew = clockSkew(event, now);
        if (skew != null) {
            deadLetter(source, "bad_timestamp", skew, null);
            return;
        }
        Envelope envelope = event.envelope();
        if (isDuplicate(envelope.eventId(), record.timestamp(), now)) {
            return;
        }
        dedup.put(envelope.eventId(), now, record.timestamp());

        Watermarks.Observation observed = observe(event instanceof ContactEvent ? CONTACTS : ENGAGEMENTS,
                envelope.occurredAt(), now);
        if (observed.late()) {
            // lateness.policy side_output: not applied to state, not routed.
            lateEvent(source, envelope, observed.watermark() == null ? Long.MIN_VALUE : observed.watermark(), now);
            return;
        }

        ContactState state = contacts.get(key);
        if (state == null) {
            state = new ContactState();
        }
        if (event instanceof ContactEvent c) {
            if (state.profile == null) {
                state.profile = new Profile(key);
            }
            state.profile.merge(c.payload());
        } else if (event instanceof EngagementEvent e) {
            state.history.record(e.payload().occurredAt(), e.payload().type());
            // Nothing at or after the watermark looks back further than the window; before
            // there is a watermark, 7 days behind the newest engagement.
            Long horizon = observed.watermarkAfter() != null ? observed.watermarkAfter() : state.history.newest();
            if (horizon != null) {
                state.history.expireBefore(Watermarks.saturatingSub(horizon, History.WINDOW_MS));
            }
        }
        if (state.profile != null) {
            route(source, key, envelope, state);
        }
        contacts.put(key, state);
    }

    /** Scores and routes a known contact; a decision becomes its {@code previous}. */
    private void route(Source source, String key, Envelope envelope, ContactState state) {
        var contact = state.profile.contact();
        var lead = new RoutingRules.Lead(contact, envelope.eventType(), envelope.source(), envelope.occurredAt(),
                0, Accounts.match(accounts, contact), state.history.statsAt(envelope.occurredAt()), state.previous);
        String version = settings.ruleVersion();
        RoutingRules.Decision decision;
        try {
            decision = RoutingRules.evaluate(lead);
        } catch (ArithmeticException e) {
            deadLetter(source, "script_error", "script error: " + e.getMessage(), version);
            return;
        }
        if (decision == null) {
            return; // route returned (): no decision
        }
        decision = Reps.correctOwner(reps, decision);
        int index = switch (decision.priority()) {
            case "P0" -> 0;
            case "P1" -> 1;
            default -> 2;
        };
        long routedAt = System.currentTimeMillis();
        String decisionId = Outputs.decisionId(envelope.eventId(), version);
        byte[] value = routed[index].write(Outputs.routedLead(envelope, lead, decision, version, decisionId, routedAt,
                settings.slaMs()[index]));
        Headers headers = new RecordHeaders();
        headers.add("event_id", DeadLetters.utf8(envelope.eventId()));
        headers.add("decision_id", DeadLetters.utf8(decisionId));
        headers.add("rule_version", DeadLetters.utf8(version));
        if (envelope.correlationId() != null) {
            headers.add("correlation_id", DeadLetters.utf8(envelope.correlationId()));
        }
        context.forward(new Record<>(DeadLetters.utf8(key), value, routedAt, headers), ROUTED_SINKS[index]);
        state.previous = new PreviousDecision(decisionId, envelope.eventId(), PRIORITIES[index], decision.queue(),
                decision.owner(), decision.score(), routedAt, version);
    }

    /** A live de-duplication mark of {@code eventId} (made within the retention, wall clock). */
    private boolean isDuplicate(String eventId, long timestamp, long now) {
        long retention = settings.dedupRetentionMs();
        try (WindowStoreIterator<Long> marks = dedup.fetch(eventId, timestamp - retention, timestamp + retention)) {
            while (marks.hasNext()) {
                if (marks.next().value >= now - retention) {
                    return true;
                }
            }
        }
        return false;
    }

    /** Counts the event in the task's event time; stores the task's time when it changed. */
    private Watermarks.Observation observe(int inputIndex, long occurredAt, long now) {
        if (time == null) {
            byte[] stored = task.get(TIME_KEY);
            time = stored == null
                    ? new Watermarks(settings.graceMs(), settings.idleMs(), 2, now)
                    : Watermarks.fromBytes(stored, settings.graceMs(), settings.idleMs(), 2, now);
        }
        Long before = time.streamTime(inputIndex);
        Watermarks.Observation o = time.observe(inputIndex, occurredAt, now);
        if (!java.util.Objects.equals(o.watermarkAfter(), o.watermark())
                || !java.util.Objects.equals(time.streamTime(inputIndex), before)) {
            task.put(TIME_KEY, time.toBytes());
        }
        return o;
    }

    private void lateEvent(Source source, Envelope envelope, long watermark, long now) {
        byte[] value = late.write(Outputs.lateEvent(envelope, source.topic(), watermark, now, source.value()));
        Headers headers = new RecordHeaders();
        headers.add("event_id", DeadLetters.utf8(envelope.eventId()));
        headers.add("rule_version", DeadLetters.utf8(settings.ruleVersion()));
        if (envelope.correlationId() != null) {
            headers.add("correlation_id", DeadLetters.utf8(envelope.correlationId()));
        }
        headers.add("source.topic", DeadLetters.utf8(source.topic()));
        headers.add("source.partition", DeadLetters.utf8(Integer.toString(source.partition())));
        headers.add("source.offset", DeadLetters.utf8(Long.toString(source.offset())));
        context.forward(new Record<>(DeadLetters.utf8(envelope.aggregateId()), value, now, headers), LATE_SINK);
    }

    private void deadLetter(Source source, String dlqClass, String message, String ruleVersion) {
        Headers headers = new RecordHeaders();
        byte[] value = DeadLetters.headersInto(headers, source, dlqClass, message, ruleVersion,
                settings.maxRecordBytes());
        context.forward(new Record<>(source.key(), value, System.currentTimeMillis(), headers), DLQ_SINK);
    }

    /** Why the event's times cannot be trusted: more than max_clock_skew ahead of the clock. */
    private String clockSkew(InputEvent event, long now) {
        long occurred = event.envelope().occurredAt();
        long other = event instanceof ContactEvent c ? c.payload().updatedAt()
                : ((EngagementEvent) event).payload().occurredAt();
        long ahead = Math.max(Watermarks.saturatingSub(occurred, now), Watermarks.saturatingSub(other, now));
        if (ahead > settings.maxClockSkewMs()) {
            return "event time is " + ahead / 1000 + "s ahead of the wall clock, more than limits.max_clock_skew ("
                    + settings.maxClockSkewMs() / 1000 + "s)";
        }
        return null;
    }

    /** The key as UTF-8 text; null if absent or not UTF-8. */
    private static String utf8Key(byte[] key) {
        if (key == null) {
            return null;
        }
        try {
            return StandardCharsets.UTF_8.newDecoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT)
                    .decode(ByteBuffer.wrap(key))
                    .toString();
        } catch (CharacterCodingException e) {
            return null;
        }
    }
}
