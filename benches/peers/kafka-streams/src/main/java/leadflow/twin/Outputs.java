package leadflow.twin;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;

import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;

import leadflow.twin.Events.Account;
import leadflow.twin.Events.Contact;
import leadflow.twin.Events.Envelope;

/**
 * The records leadflow emits (src/sink/routed.rs, src/sink/late.rs): the {@code RoutedLead} of a
 * decision, with its deterministic {@code decision_id}, and the {@code LateEvent} of an event
 * behind the watermark.
 */
final class Outputs {
    private Outputs() {}

    /**
     * The id of the decision for {@code eventId} under {@code ruleVersion}: the first 16 bytes
     * of SHA-256(event_id, 0, rule_version) as a version-8 UUID.
     */
    static String decisionId(String eventId, String ruleVersion) {
        MessageDigest sha;
        try {
            sha = MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
        sha.update(eventId.getBytes(StandardCharsets.UTF_8));
        sha.update((byte) 0);
        sha.update(ruleVersion.getBytes(StandardCharsets.UTF_8));
        byte[] b = sha.digest();
        b[6] = (byte) ((b[6] & 0x0f) | 0x80);
        b[8] = (byte) ((b[8] & 0x3f) | 0x80);
        String h = HexFormat.of().formatHex(b, 0, 16);
        return h.substring(0, 8) + "-" + h.substring(8, 12) + "-" + h.substring(12, 16) + "-"
                + h.substring(16, 20) + "-" + h.substring(20);
    }

    static GenericRecord routedLead(Envelope envelope, RoutingRules.Lead lead, RoutingRules.Decision decision,
            String ruleVersion, String decisionId, long routedAt, long slaMs) {
        Contact c = lead.contact();
        Account a = lead.account();
        GenericData.Record r = new GenericData.Record(Avro.Kind.ROUTED_LEAD.schema);
        r.put("decision_id", decisionId);
        r.put("event_id", envelope.eventId());
        r.put("contact_id", c.contactId());
        r.put("priority", decision.priority());
        r.put("queue", decision.queue());
        r.put("owner_rep_id", decision.owner());
        r.put("reasons", decision.reasons());
        r.put("rule_version", ruleVersion);
        r.put("score", decision.score());
        r.put("sla_deadline", routedAt + slaMs);
        r.put("occurred_at", envelope.occurredAt());
        r.put("routed_at", routedAt);
        r.put("email", c.email());
        r.put("first_name", c.firstName());
        r.put("last_name", c.lastName());
        r.put("company_name", c.companyName());
        r.put("country", c.country());
        r.put("region", c.region());
        r.put("account_id", a == null ? null : a.accountId());
        r.put("account_name", a == null ? null : a.name());
        r.put("account_tier", a == null ? null : a.tier());
        r.put("employees", a == null ? null : a.employees());
        r.put("annual_revenue", a == null ? null : a.annualRevenue());
        r.put("engagements_24h", (int) lead.engagement().count24h());
        r.put("engagements_7d", (int) lead.engagement().count7d());
        return r;
    }

    static GenericRecord lateEvent(Envelope envelope, String sourceTopic, long watermark, long observedAt,
            byte[] original) {
        GenericData.Record r = new GenericData.Record(Avro.Kind.LATE_EVENT.schema);
        r.put("event_id", envelope.eventId());
        r.put("event_type", envelope.eventType());
        r.put("aggregate_id", envelope.aggregateId());
        r.put("source_topic", sourceTopic);
        r.put("occurred_at", envelope.occurredAt());
        r.put("watermark", watermark);
        r.put("observed_at", observedAt);
        r.put("lateness_ms", Watermarks.saturatingSub(watermark, envelope.occurredAt()));
        r.put("original", ByteBuffer.wrap(original == null ? new byte[0] : original));
        return r;
    }
}
