package leadflow.twin;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;

/**
 * Everything kept about one contact, as one store record (leadflow's
 * src/enrich/contact.rs): the merged profile (null until the first contact event), the
 * engagement history and the last decision emitted ({@code lead.previous}).
 */
final class ContactState {
    /** The last decision emitted for a contact. */
    record PreviousDecision(
            String decisionId,
            String eventId,
            String priority,
            String queue,
            String owner,
            int score,
            long routedAt,
            String ruleVersion) {}

    Profile profile;
    final History history;
    PreviousDecision previous;

    ContactState() {
        this(null, new History(), null);
    }

    ContactState(Profile profile, History history, PreviousDecision previous) {
        this.profile = profile;
        this.history = history;
        this.previous = previous;
    }

    /** The store's serde: a small binary layout of the twin's own (version byte 1). */
    static Serde<ContactState> serde() {
        Serializer<ContactState> ser = (topic, state) -> state == null ? null : encode(state);
        Deserializer<ContactState> de = (topic, bytes) -> bytes == null ? null : decode(bytes);
        return Serdes.serdeFrom(ser, de);
    }

    static byte[] encode(ContactState s) {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream(256);
        try (DataOutputStream out = new DataOutputStream(bytes)) {
            out.writeByte(1);
            out.writeBoolean(s.profile != null);
            if (s.profile != null) {
                Profile p = s.profile;
                writeString(out, p.contactId);
                for (int i = 0; i < Profile.STRINGS; i++) {
                    writeNullable(out, p.values[i]);
                    out.writeLong(p.setAt[i]);
                }
                out.writeBoolean(p.consent);
                out.writeLong(p.consentAt);
                out.writeInt(p.attributes.size());
                for (Map.Entry<String, Profile.Stamped> e : p.attributes.entrySet()) {
                    writeString(out, e.getKey());
                    writeString(out, e.getValue().value);
                    out.writeLong(e.getValue().at);
                }
                out.writeLong(p.updatedAt);
            }
            out.writeInt(s.history.entries.size());
            for (History.Entry e : s.history.entries) {
                out.writeLong(e.at());
                writeString(out, e.type());
            }
            out.writeBoolean(s.previous != null);
            if (s.previous != null) {
                PreviousDecision d = s.previous;
                writeString(out, d.decisionId());
                writeString(out, d.eventId());
                writeString(out, d.priority());
                writeString(out, d.queue());
                writeNullable(out, d.owner());
                out.writeInt(d.score());
                out.writeLong(d.routedAt());
                writeString(out, d.ruleVersion());
            }
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return bytes.toByteArray();
    }

    static ContactState decode(byte[] bytes) {
        try (DataInputStream in = new DataInputStream(new ByteArrayInputStream(bytes))) {
            int layout = in.readByte();
            if (layout != 1) {
                throw new IllegalStateException("contact state layout " + layout + " is not 1");
            }
            Profile profile = null;
            if (in.readBoolean()) {
                profile = new Profile(readString(in));
                for (int i = 0; i < Profile.STRINGS; i++) {
                    profile.values[i] = readNullable(in);
                    profile.setAt[i] = in.readLong();
                }
                profile.consent = in.readBoolean();
                profile.consentAt = in.readLong();
                int n = in.readInt();
                for (int i = 0; i < n; i++) {
                    String k = readString(in);
                    profile.attributes.put(k, new Profile.Stamped(readString(in), in.readLong()));
                }
                profile.updatedAt = in.readLong();
            }
            int n = in.readInt();
            List<History.Entry> entries = new ArrayList<>(n + 1);
            for (int i = 0; i < n; i++) {
                entries.add(new History.Entry(in.readLong(), readString(in)));
            }
            PreviousDecision previous = null;
            if (in.readBoolean()) {
                previous = new PreviousDecision(readString(in), readString(in), readString(in),
                        readString(in), readNullable(in), in.readInt(), in.readLong(), readString(in));
            }
            return new ContactState(profile, new History(entries), previous);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    static void writeString(DataOutputStream out, String s) throws IOException {
        byte[] b = s.getBytes(StandardCharsets.UTF_8);
        out.writeInt(b.length);
        out.write(b);
    }

    static String readString(DataInputStream in) throws IOException {
        byte[] b = new byte[in.readInt()];
        in.readFully(b);
        return new String(b, StandardCharsets.UTF_8);
    }

    static void writeNullable(DataOutputStream out, String s) throws IOException {
        out.writeBoolean(s != null);
        if (s != null) {
            writeString(out, s);
        }
    }

    static String readNullable(DataInputStream in) throws IOException {
        return in.readBoolean() ? readString(in) : null;
    }
}
