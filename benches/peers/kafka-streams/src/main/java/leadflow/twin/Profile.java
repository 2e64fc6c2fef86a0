package leadflow.twin;

import java.util.Map;
import java.util.TreeMap;

import leadflow.twin.Events.Contact;

/**
 * The merged profile of one contact (leadflow's src/enrich/profile.rs): updates merged field by
 * field, the newest {@code updated_at} winning; an absent field never erases. On equal times
 * the larger value wins, so the result does not depend on arrival order.
 */
final class Profile {
    static final int STRINGS = 12;

    final String contactId;
    /** The optional string fields in {@link Contact#optionalStrings()} order, and when each
     *  was set (0 before, as leadflow's default). */
    final String[] values = new String[STRINGS];
    final long[] setAt = new long[STRINGS];
    boolean consent = false;
    long consentAt = Long.MIN_VALUE;
    /** Attribute → (value, when set), in Rust's key order. */
    final TreeMap<String, Stamped> attributes = new TreeMap<>(RustStrings.ORDER);
    long updatedAt = Long.MIN_VALUE;

    static final class Stamped {
        String value;
        long at;

        Stamped(String value, long at) {
            this.value = value;
            this.at = at;
        }
    }

    Profile(String contactId) {
        this.contactId = contactId;
    }

    void merge(Contact update) {
        long at = update.updatedAt();
        String[] offered = update.optionalStrings();
        for (int i = 0; i < STRINGS; i++) {
            String v = offered[i];
            if (v == null) {
                continue;
            }
            // A present value is greater than an absent one.
            if (at > setAt[i]
                    || (at == setAt[i] && (values[i] == null || RustStrings.compare(v, values[i]) > 0))) {
                values[i] = v;
                setAt[i] = at;
            }
        }
        boolean c = update.consentMarketing();
        if (at > consentAt || (at == consentAt && c && !consent)) {
            consent = c;
            consentAt = at;
        }
        for (Map.Entry<String, String> e : update.attributes().entrySet()) {
            Stamped s = attributes.computeIfAbsent(e.getKey(), k -> new Stamped("", Long.MIN_VALUE));
            if (at > s.at || (at == s.at && RustStrings.compare(e.getValue(), s.value) > 0)) {
                s.value = e.getValue();
                s.at = at;
            }
        }
        updatedAt = Math.max(updatedAt, at);
    }

    Contact contact() {
        TreeMap<String, String> attrs = new TreeMap<>(RustStrings.ORDER);
        attributes.forEach((k, v) -> attrs.put(k, v.value));
        String[] v = values;
        return new Contact(
                contactId, v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11],
                consent, attrs, updatedAt);
    }
}
