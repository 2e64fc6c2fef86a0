package leadflow.twin;

import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ThreadLocalRandom;

import org.apache.avro.Schema;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

/**
 * A client of the Confluent Schema Registry REST API (also served by leadflow's development
 * registry and Apicurio's ccompat API): register a schema under a subject, fetch a writer
 * schema by id (cached). As in leadflow (docs/contracts.md §10.3), only error code 40403 on a
 * lookup makes a record a poison pill; an unreachable registry, 408, 429, 5xx and every other
 * refusal are waited out with backoff and jitter, for as long as they last.
 */
final class SchemaRegistry {
    private static final Logger log = LoggerFactory.getLogger(SchemaRegistry.class);
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final String CONTENT_TYPE = "application/vnd.schemaregistry.v1+json";

    /** The registry does not know a schema id: the record is at fault. */
    static final class UnknownSchemaException extends Exception {
        private static final long serialVersionUID = 1L;

        UnknownSchemaException(int id) {
            super("schema id " + id + " is not known to the registry (error 40403)");
        }
    }

    /** A refusal that waiting cannot fix (409 incompatible, 422 invalid). */
    static final class RegistryRefusal extends RuntimeException {
        private static final long serialVersionUID = 1L;

        RegistryRefusal(String message) {
            super(message);
        }
    }

    private final String base;
    private final HttpClient http;
    private final Map<Integer, Schema> byId = new ConcurrentHashMap<>();

    SchemaRegistry(String url) {
        this.base = url.endsWith("/") ? url.substring(0, url.length() - 1) : url;
        this.http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();
    }

    /** Registers {@code schema} under {@code subject} (a no-op if it is there); its id. */
    int register(String subject, String schema, Duration wait) throws InterruptedException {
        String body;
        try {
            body = JSON.writeValueAsString(Map.of("schema", schema));
        } catch (IOException e) {
            throw new IllegalStateException(e);
        }
        HttpRequest request = HttpRequest.newBuilder(URI.create(base + "/subjects/" + subject + "/versions"))
                .timeout(Duration.ofSeconds(10))
                .header("Content-Type", CONTENT_TYPE)
                .POST(HttpRequest.BodyPublishers.ofString(body))
                .build();
        long deadline = System.nanoTime() + wait.toNanos();
        for (int attempt = 0; ; attempt++) {
            String fault;
            try {
                HttpResponse<String> r = http.send(request, HttpResponse.BodyHandlers.ofString());
                if (r.statusCode() == 200) {
                    return JSON.readTree(r.body()).get("id").asInt();
                }
                if (r.statusCode() == 409 || r.statusCode() == 422) {
                    throw new RegistryRefusal("the registry refused the schema for " + subject
                            + " (" + r.statusCode() + "): " + r.body());
                }
                fault = "HTTP " + r.statusCode() + ": " + r.body();
            } catch (IOException e) {
                fault = e.toString();
            }
            if (System.nanoTime() > deadline) {
                throw new IllegalStateException("cannot register the schema for " + subject + ": " + fault);
            }
            backoff(attempt, "register " + subject, fault);
        }
    }

    /** The writer schema of {@code id}, waiting out registry faults. */
    Schema byId(int id) throws UnknownSchemaException, InterruptedException {
        Schema cached = byId.get(id);
        if (cached != null) {
            return cached;
        }
        HttpRequest request = HttpRequest.newBuilder(URI.create(base + "/schemas/ids/" + id))
                .timeout(Duration.ofSeconds(10))
                .header("Accept", CONTENT_TYPE)
                .GET()
                .build();
        for (int attempt = 0; ; attempt++) {
            String fault;
            try {
                HttpResponse<String> r = http.send(request, HttpResponse.BodyHandlers.ofString());
                if (r.statusCode() == 200) {
                    JsonNode node = JSON.readTree(r.body());
                    // One parser per schema: each writer schema names its own types.
                    Schema schema = new Schema.Parser().parse(node.get("schema").asText());
                    byId.put(id, schema);
                    return schema;
                }
                if (r.statusCode() == 404 && errorCode(r.body()) == 40403) {
                    throw new UnknownSchemaException(id);
                }
                fault = "HTTP " + r.statusCode() + ": " + r.body();
            } catch (IOException e) {
                fault = e.toString();
            }
            backoff(attempt, "fetch schema id " + id, fault);
        }
    }

    private static int errorCode(String body) {
        try {
            JsonNode code = JSON.readTree(body).get("error_code");
            return code == null ? 0 : code.asInt();
        } catch (IOException e) {
            return 0;
        }
    }

    /** Exponential backoff from 100 ms to 5 s, with full jitter. */
    private static void backoff(int attempt, String what, String fault) throws InterruptedException {
        long cap = Math.min(5_000, 100L << Math.min(attempt, 6));
        if (attempt % 10 == 0) {
            log.warn("cannot use the schema registry to {} ({}); waiting", what, fault);
        }
        Thread.sleep(ThreadLocalRandom.current().nextLong(cap / 2, cap + 1));
    }
}
