package leadflow.twin;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.util.Set;

import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.KeyValueStore;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import leadflow.twin.Events.Account;
import leadflow.twin.Events.Contact;

/**
 * The accounts reference table as a global store (leadflow's src/state/reference.rs and
 * src/enrich/accounts.rs): every instance reads the whole topic, and the store keeps accounts
 * by id ({@code a/<account_id>}) and a domain index ({@code d/<domain>} → account id), so a
 * contact is matched by its company domain, else its e-mail's domain, never a free-mail one.
 * Kafka Streams feeds the updater on restore too, so the index is always derived the same way.
 */
final class Accounts {
    private Accounts() {}

    static final String STORE = "accounts";

    /** Consumer mailbox providers (leadflow's FREE_MAIL_DOMAINS). */
    static final Set<String> FREE_MAIL = Set.of(
            "gmail.com", "googlemail.com", "yahoo.com", "yahoo.co.uk", "ymail.com", "outlook.com",
            "hotmail.com", "hotmail.co.uk", "live.com", "msn.com", "icloud.com", "me.com", "mac.com",
            "aol.com", "proton.me", "protonmail.com", "gmx.de", "gmx.net", "web.de", "mail.com",
            "yandex.ru", "qq.com", "163.com", "zoho.com", "fastmail.com");

    /** Lower-case (ASCII), trimmed, without trailing dots or a leading {@code www.}. */
    static String normalizeDomain(String domain) {
        String d = RustStrings.trim(domain);
        int end = d.length();
        while (end > 0 && d.charAt(end - 1) == '.') {
            end--;
        }
        d = RustStrings.asciiLowercase(d.substring(0, end));
        return d.startsWith("www.") ? d.substring(4) : d;
    }

    /** The account for {@code contact}: its company domain first, then its e-mail's domain. */
    static Account match(KeyValueStore<String, byte[]> store, Contact contact) {
        if (contact.companyDomain() != null) {
            Account a = byDomain(store, contact.companyDomain());
            if (a != null) {
                return a;
            }
        }
        String email = contact.email();
        if (email != null) {
            int at = email.lastIndexOf('@');
            if (at >= 0 && at + 1 < email.length()) {
                return byDomain(store, email.substring(at + 1));
            }
        }
        return null;
    }

    private static Account byDomain(KeyValueStore<String, byte[]> store, String domain) {
        String d = normalizeDomain(domain);
        if (FREE_MAIL.contains(d)) {
            return null;
        }
        byte[] id = store.get("d/" + d);
        if (id == null) {
            return null;
        }
        byte[] account = store.get("a/" + new String(id, StandardCharsets.UTF_8));
        return account == null ? null : decode(account);
    }

    /** An account topic's value: an upsert, a deletion (tombstone), or a record to skip. */
    record Update(Account account, String skipped) {}

    /** Decodes account values; never throws (a bad reference record is skipped and logged). */
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
            return Avro.readReference(registry, Avro.Kind.ACCOUNT_EVENT, value,
                    r -> new Update(Avro.account(r), null), skipped -> new Update(null, skipped));
        }
    }

    /** Keeps the global store: accounts by id and the domain index. */
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
            Account account = u == null ? null : u.account();
            byte[] old = store.get("a/" + key);
            String oldDomain = old == null ? null : normalizeDomain(decode(old).domain());
            String newDomain = account == null ? null : normalizeDomain(account.domain());
            if (oldDomain != null && !oldDomain.equals(newDomain)) {
                // Only drop the index entry if it still points at this account.
                byte[] owner = store.get("d/" + oldDomain);
                if (owner != null && new String(owner, StandardCharsets.UTF_8).equals(key)) {
                    store.delete("d/" + oldDomain);
                }
            }
            if (account == null) {
                store.delete("a/" + key);
                return;
            }
            store.put("a/" + key, encode(account));
            if (!newDomain.isEmpty()) {
                store.put("d/" + newDomain, key.getBytes(StandardCharsets.UTF_8));
            }
        }
    }

    static byte[] encode(Account a) {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream(128);
        try (DataOutputStream out = new DataOutputStream(bytes)) {
            ContactState.writeString(out, a.accountId());
            ContactState.writeString(out, a.domain());
            ContactState.writeString(out, a.name());
            out.writeBoolean(a.employees() != null);
            out.writeInt(a.employees() == null ? 0 : a.employees());
            out.writeBoolean(a.annualRevenue() != null);
            out.writeDouble(a.annualRevenue() == null ? 0 : a.annualRevenue());
            ContactState.writeNullable(out, a.industry());
            ContactState.writeNullable(out, a.region());
            ContactState.writeNullable(out, a.tier());
            ContactState.writeNullable(out, a.ownerRepId());
            out.writeLong(a.updatedAt());
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return bytes.toByteArray();
    }

    static Account decode(byte[] b) {
        try (DataInputStream in = new DataInputStream(new ByteArrayInputStream(b))) {
            String id = ContactState.readString(in);
            String domain = ContactState.readString(in);
            String name = ContactState.readString(in);
            boolean hasEmployees = in.readBoolean();
            int employees = in.readInt();
            boolean hasRevenue = in.readBoolean();
            double revenue = in.readDouble();
            return new Account(id, domain, name, hasEmployees ? employees : null, hasRevenue ? revenue : null,
                    ContactState.readNullable(in), ContactState.readNullable(in), ContactState.readNullable(in),
                    ContactState.readNullable(in), in.readLong());
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }
}
