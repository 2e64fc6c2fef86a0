package leadflow.twin;

import java.util.SortedMap;

/**
 * The canonical events of docs/contracts.md §3 (avro/*.avsc), as Java records: optional fields
 * are null, timestamps are milliseconds since the epoch.
 */
final class Events {
    private Events() {}

    record Envelope(
            String eventId,
            String eventType,
            String aggregateId,
            String source,
            long occurredAt,
            int deliveryAttempt,
            String schemaVersion,
            String correlationId) {}

    record Contact(
            String contactId,
            String email,
            String phone,
            String firstName,
            String lastName,
            String title,
            String companyName,
            String companyDomain,
            String country,
            String region,
            String lifecycleStage,
            String leadSource,
            String productInterest,
            boolean consentMarketing,
            SortedMap<String, String> attributes,
            long updatedAt) {

        /** The twelve optional string fields, in the order {@link Profile} keeps them. */
        String[] optionalStrings() {
            return new String[] {
                email, phone, firstName, lastName, title, companyName, companyDomain, country,
                region, lifecycleStage, leadSource, productInterest
            };
        }
    }

    record Engagement(
            String engagementId,
            String contactId,
            String type,
            String channel,
            String campaign,
            String outcome,
            long occurredAt) {}

    record Account(
            String accountId,
            String domain,
            String name,
            Integer employees,
            Double annualRevenue,
            String industry,
            String region,
            String tier,
            String ownerRepId,
            long updatedAt) {}

    /** An event of one of the two keyed inputs. */
    sealed interface InputEvent permits ContactEvent, EngagementEvent {
        Envelope envelope();
    }

    record ContactEvent(Envelope envelope, Contact payload) implements InputEvent {}

    record EngagementEvent(Envelope envelope, Engagement payload) implements InputEvent {}
}
