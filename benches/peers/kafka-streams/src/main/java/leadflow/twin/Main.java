package leadflow.twin;

import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.HexFormat;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicBoolean;

import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;

import com.sun.net.httpserver.HttpServer;

/**
 * The Kafka Streams twin of {@code leadflow run}: parses the command line, registers the output
 * schemas, starts the topology, and runs until SIGTERM (a shutdown hook closes Kafka Streams
 * cleanly: in-flight work committed, stores flushed and checkpointed).
 */
public final class Main {
    private Main() {}

    /** The command line (run.sh's usage). */
    record Options(String bootstrapServers, String registryUrl, String applicationId, String stateDir,
            String topicPrefix, int threads, boolean exactlyOnce, Path rules, String metricsAddr,
            int maxRecordBytes) {

        static final String USAGE = "usage: run.sh --bootstrap-servers B --schema-registry-url U"
                + " --application-id A --state-dir D --topic-prefix P [--threads N] [--exactly-once]"
                + " [--rules FILE] [--metrics-addr HOST:PORT] [--max-record-bytes N]";

        static Options parse(String[] args) {
            String bootstrap = null, registry = null, app = null, state = null, prefix = null, metrics = null;
            Path rules = null;
            int threads = Runtime.getRuntime().availableProcessors();
            int maxRecordBytes = Settings.MAX_RECORD_BYTES;
            boolean eos = false;
            for (int i = 0; i < args.length; i++) {
                String a = args[i];
                if (a.equals("--exactly-once")) {
                    eos = true;
                    continue;
                }
                if (i + 1 >= args.length) {
                    throw new IllegalArgumentException(a + " needs a value\n" + USAGE);
                }
                String v = args[++i];
                switch (a) {
                    case "--bootstrap-servers" -> bootstrap = v;
                    case "--schema-registry-url" -> registry = v;
                    case "--application-id" -> app = v;
                    case "--state-dir" -> state = v;
                    case "--topic-prefix" -> prefix = v;
                    case "--threads" -> threads = Integer.parseInt(v);
                    case "--rules" -> rules = Path.of(v);
                    case "--metrics-addr" -> metrics = v;
                    case "--max-record-bytes" -> maxRecordBytes = Integer.parseInt(v);
                    default -> throw new IllegalArgumentException("unknown option " + a + "\n" + USAGE);
                }
            }
            if (bootstrap == null || registry == null || app == null || state == null || prefix == null
                    || rules == null) {
                throw new IllegalArgumentException(USAGE);
            }
            if (threads < 1) {
                throw new IllegalArgumentException("--threads must be at least 1");
            }
            return new Options(bootstrap, registry, app, state, prefix, threads, eos, rules, metrics, maxRecordBytes);
        }
    }

    public static void main(String[] args) throws Exception {
        Options o;
        try {
            o = Options.parse(args);
        } catch (IllegalArgumentException e) {
            System.err.println("error: " + e.getMessage());
            System.exit(2);
            return;
        }
        String version = ruleVersion(o.rules());
        if (!version.equals(RoutingRules.PORTED_VERSION)) {
            System.err.printf("error: %s has rule_version %s, but the Java port in RoutingRules.java is of %s;"
                    + " port the script's change to RoutingRules.java and update PORTED_VERSION%n",
                    o.rules(), version, RoutingRules.PORTED_VERSION);
            System.exit(2);
        }

        Settings.Topics topics = Settings.Topics.withPrefix(o.topicPrefix());
        SchemaRegistry registry = new SchemaRegistry(o.registryUrl());
        Duration wait = Duration.ofMinutes(5);
        int[] routedIds = new int[3];
        for (int i = 0; i < 3; i++) {
            routedIds[i] = registry.register(topics.routed(i) + "-value", Avro.Kind.ROUTED_LEAD.text, wait);
        }
        int lateId = registry.register(topics.late() + "-value", Avro.Kind.LATE_EVENT.text, wait);
        Settings settings = new Settings(topics, version, Settings.SLA_MS, Settings.GRACE_MS, Settings.IDLE_MS,
                Settings.DEDUP_RETENTION_MS, Settings.MAX_CLOCK_SKEW_MS, o.maxRecordBytes(), routedIds, lateId);

        KafkaStreams streams = new KafkaStreams(TwinTopology.build(settings, registry), properties(o, topics));
        CountDownLatch stopped = new CountDownLatch(1);
        AtomicBoolean terminating = new AtomicBoolean(false);
        streams.setStateListener((now, before) -> {
            System.err.println("twin: " + before + " -> " + now);
            if (now == KafkaStreams.State.ERROR || now == KafkaStreams.State.NOT_RUNNING) {
                stopped.countDown();
            }
        });
        streams.setUncaughtExceptionHandler(e -> {
            System.err.println("twin: stream thread failed: " + e);
            e.printStackTrace();
            return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            terminating.set(true);
            System.err.println("twin: stopping");
            streams.close(Duration.ofSeconds(30));
            System.err.println("twin: stopped");
            stopped.countDown();
        }, "twin-shutdown"));
        if (o.metricsAddr() != null) {
            serveMetrics(o.metricsAddr(), streams);
        }
        System.err.printf("twin: application %s, %d stream threads, %s, rule_version %s, topics %s…%n",
                o.applicationId(), o.threads(), o.exactlyOnce() ? "exactly-once" : "at-least-once", version,
                o.topicPrefix());
        streams.start();
        stopped.await();
        if (!terminating.get()) {
            streams.close(Duration.ofSeconds(30));
            System.exit(1);
        }
    }

    static Properties properties(Options o, Settings.Topics topics) {
        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, o.applicationId());
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, o.bootstrapServers());
        p.put(StreamsConfig.STATE_DIR_CONFIG, o.stateDir());
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, o.threads());
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG,
                o.exactlyOnce() ? StreamsConfig.EXACTLY_ONCE_V2 : StreamsConfig.AT_LEAST_ONCE);
        // leadflow's processing.commit_interval: 1 s at least once, 100 ms exactly once.
        p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, o.exactlyOnce() ? 100 : 1000);
        p.put(StreamsConfig.MAX_TASK_IDLE_MS_CONFIG, Settings.MAX_TASK_IDLE_MS);
        p.put(StreamsConfig.DESERIALIZATION_EXCEPTION_HANDLER_CLASS_CONFIG, DeadLetters.Handler.class);
        p.put(DeadLetters.TOPIC_CONFIG, topics.dlq());
        p.put(DeadLetters.MAX_RECORD_BYTES_CONFIG, Integer.toString(o.maxRecordBytes()));
        p.put(StreamsConfig.ROCKSDB_CONFIG_SETTER_CLASS_CONFIG, BoundedRocksDb.class);
        // Kafka Streams' recommendation (the default from 5.0 on).
        p.put("processing.exception.handler.global.enabled", true);
        // leadflow's producer settings (linger.ms 5; idempotent, acks=all are the defaults).
        p.put(StreamsConfig.producerPrefix(ProducerConfig.LINGER_MS_CONFIG), 5);
        return p;
    }

    /** leadflow's rule_version: the first 16 hex digits of the script's SHA-256. */
    static String ruleVersion(Path rules) throws Exception {
        byte[] text = Files.readAllBytes(rules);
        byte[] digest = MessageDigest.getInstance("SHA-256").digest(text);
        return HexFormat.of().formatHex(digest, 0, 8);
    }

    /** {@code /metrics}: input records handled, for the bench (Prometheus text format). */
    static void serveMetrics(String addr, KafkaStreams streams) throws IOException {
        int colon = addr.lastIndexOf(':');
        HttpServer server = HttpServer.create(
                new InetSocketAddress(addr.substring(0, colon), Integer.parseInt(addr.substring(colon + 1))), 16);
        server.createContext("/metrics", exchange -> {
            byte[] body = ("leadflow_twin_records_total " + Progress.RECORDS.sum() + "\n"
                    + "leadflow_twin_running " + (streams.state() == KafkaStreams.State.RUNNING ? 1 : 0) + "\n")
                    .getBytes(StandardCharsets.UTF_8);
            exchange.getResponseHeaders().add("Content-Type", "text/plain; version=0.0.4");
            exchange.sendResponseHeaders(200, body.length);
            try (OutputStream out = exchange.getResponseBody()) {
                out.write(body);
            }
        });
        server.setExecutor(null);
        server.start();
        InetSocketAddress bound = server.getAddress();
        System.err.println("twin: serving /metrics addr=" + bound.getHostString() + ":" + bound.getPort());
    }
}
