//! Kafka client settings shared by every command, topic administration, and topic stats.

pub mod admin;
pub mod context;
pub mod partition;
pub mod properties;
pub mod read;

use std::path::Path;

use rdkafka::ClientConfig;

pub use properties::{parse_override, PropertiesError};

/// Where the brokers are and any librdkafka properties the user passed through.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub bootstrap_servers: String,
    /// `--kafka key=value` pairs, applied last so they win over leadflow's defaults.
    pub overrides: Vec<(String, String)>,
}

impl KafkaSettings {
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        KafkaSettings {
            bootstrap_servers: bootstrap_servers.into(),
            overrides: Vec::new(),
        }
    }

    /// Settings from the command line: the properties of `config_file` (if any), then the
    /// `--kafka` flags, which win. Properties that carry leadflow's guarantees are refused,
    /// naming where they were set; secret values are registered for redaction.
    pub fn from_cli(
        bootstrap_servers: &str,
        config_file: Option<&Path>,
        flags: &[(String, String)],
    ) -> Result<Self, PropertiesError> {
        let file = match config_file {
            Some(path) => properties::read_file(path)?,
            None => Vec::new(),
        };
        let overrides = properties::combine(file, flags)?;
        for (k, v) in &overrides {
            if properties::is_secret(k) {
                crate::redact::register(v);
            }
        }
        Ok(KafkaSettings {
            bootstrap_servers: bootstrap_servers.to_string(),
            overrides,
        })
    }

    /// The user's last value for `key`, if any.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.overrides
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A client config with leadflow's `defaults`, then every user override.
    /// (For the admin client, which accepts both roles' properties silently.)
    pub fn client_config(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        self.config_for(None, defaults)
    }

    /// A consumer's config: `defaults`, then the user's overrides except producer-only ones,
    /// which librdkafka would only warn about (`CONFWARN ... will be ignored`).
    ///
    /// Every consumer prefetches at most [`CONSUMER_PREFETCH`] (librdkafka's defaults let each
    /// consumer queue 64 MiB and aim at 100,000 records a partition, which on a backlog is
    /// most of the process's memory and buys no throughput); the caller's defaults and the
    /// user's overrides come after, so either may change it.
    pub fn consumer_config(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut all = CONSUMER_PREFETCH.to_vec();
        all.extend_from_slice(defaults);
        self.config_for(Some(Role::Consumer), &all)
    }

    /// Producer defaults: idempotent, all replicas, Java-compatible key partitioning so that
    /// records keyed by contact_id land where Kafka Streams and Java producers put them.
    /// Consumer-only overrides (`group.instance.id`, `session.timeout.ms`, ...) are left out.
    pub fn producer_config(&self) -> ClientConfig {
        self.producer_config_with(&[])
    }

    /// [`producer_config`](Self::producer_config) with more defaults of the caller's
    /// (before the user's overrides).
    pub fn producer_config_with(&self, more: &[(&str, &str)]) -> ClientConfig {
        let mut defaults = vec![
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("partitioner", "murmur2_random"),
            ("linger.ms", "5"),
            ("message.timeout.ms", "60000"),
        ];
        defaults.extend_from_slice(more);
        self.config_for(Some(Role::Producer), &defaults)
    }

    fn config_for(&self, role: Option<Role>, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers);
        for (k, v) in defaults {
            config.set(*k, *v);
        }
        for (k, v) in &self.overrides {
            let other_role_only = match role {
                Some(Role::Consumer) => PRODUCER_ONLY.contains(&k.as_str()),
                Some(Role::Producer) => CONSUMER_ONLY.contains(&k.as_str()),
                None => false,
            };
            if !other_role_only {
                config.set(k, v);
            }
        }
        config
    }
}

/// The prefetch bounds of every consumer: 16 MiB queued (about 50,000 records of this
/// pipeline, seconds of work at its rate), and a refill once fewer than 10,000 records of a
/// partition are queued. A partition whose queue is full is fetched again after 10 ms rather
/// than librdkafka's 1 s (`fetch.queue.backoff.ms`), so a smaller queue does not stall the
/// fetcher.
pub const CONSUMER_PREFETCH: &[(&str, &str)] = &[
    ("queued.max.messages.kbytes", "16384"),
    ("queued.min.messages", "10000"),
    ("fetch.queue.backoff.ms", "10"),
];

#[derive(Debug, Clone, Copy)]
enum Role {
    Consumer,
    Producer,
}

/// librdkafka properties marked consumer-only ("C") in its CONFIGURATION.md.
const CONSUMER_ONLY: &[&str] = &[
    "auto.commit.interval.ms",
    "auto.offset.reset",
    "check.crcs",
    "consume.callback.max.messages",
    "coordinator.query.interval.ms",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.partition.eof",
    "fetch.error.backoff.ms",
    "fetch.max.bytes",
    "fetch.message.max.bytes",
    "fetch.min.bytes",
    "fetch.queue.backoff.ms",
    "fetch.wait.max.ms",
    "group.id",
    "group.instance.id",
    "group.protocol",
    "group.protocol.type",
    "group.remote.assignor",
    "heartbeat.interval.ms",
    "isolation.level",
    "max.partition.fetch.bytes",
    "max.poll.interval.ms",
    "partition.assignment.strategy",
    "queued.max.messages.kbytes",
    "queued.min.messages",
    "session.timeout.ms",
];

/// librdkafka properties marked producer-only ("P") in its CONFIGURATION.md.
const PRODUCER_ONLY: &[&str] = &[
    "acks",
    "batch.num.messages",
    "batch.size",
    "compression.codec",
    "compression.level",
    "compression.type",
    "delivery.report.only.error",
    "delivery.timeout.ms",
    "enable.gapless.guarantee",
    "enable.idempotence",
    "linger.ms",
    "message.send.max.retries",
    "message.timeout.ms",
    "partitioner",
    "queue.buffering.backpressure.threshold",
    "queue.buffering.max.kbytes",
    "queue.buffering.max.messages",
    "queue.buffering.max.ms",
    "request.required.acks",
    "request.timeout.ms",
    "retries",
    "retry.backoff.max.ms",
    "sticky.partitioning.linger.ms",
    "transaction.timeout.ms",
    "transactional.id",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumers_prefetch_a_bounded_amount_unless_told_otherwise() {
        let mut settings = KafkaSettings::new("b:9092");
        let consumer = settings.consumer_config(&[("group.id", "g")]);
        assert_eq!(consumer.get("queued.max.messages.kbytes"), Some("16384"));
        assert_eq!(consumer.get("queued.min.messages"), Some("10000"));
        assert_eq!(consumer.get("fetch.queue.backoff.ms"), Some("10"));
        settings.overrides = vec![parse_override("queued.max.messages.kbytes=65536").unwrap()];
        let consumer = settings.consumer_config(&[]);
        assert_eq!(consumer.get("queued.max.messages.kbytes"), Some("65536"));
        assert_eq!(settings.producer_config().get("queued.min.messages"), None);
    }

    #[test]
    fn each_role_gets_only_the_overrides_it_understands() {
        let mut settings = KafkaSettings::new("b:9092");
        settings.overrides = [
            "group.instance.id=a",
            "linger.ms=20",
            "security.protocol=SSL",
        ]
        .iter()
        .map(|a| parse_override(a).unwrap())
        .collect();
        let producer = settings.producer_config();
        assert_eq!(producer.get("group.instance.id"), None);
        assert_eq!(producer.get("linger.ms"), Some("20"));
        assert_eq!(producer.get("security.protocol"), Some("SSL"));
        let consumer = settings.consumer_config(&[("group.id", "g")]);
        assert_eq!(consumer.get("group.instance.id"), Some("a"));
        assert_eq!(consumer.get("linger.ms"), None);
        assert_eq!(consumer.get("security.protocol"), Some("SSL"));
        let admin = settings.client_config(&[]);
        assert_eq!(admin.get("linger.ms"), Some("20"));
    }

    #[test]
    fn guarantees_cannot_be_overridden_from_the_command_line() {
        let err = KafkaSettings::from_cli("b:9092", None, &[("acks".into(), "1".into())])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`acks` cannot be set"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("client.properties");
        std::fs::write(&file, "sasl.username=u\nsasl.password=pw-from-file\n").unwrap();
        let settings =
            KafkaSettings::from_cli("b:9092", Some(&file), &[("linger.ms".into(), "1".into())])
                .unwrap();
        assert_eq!(settings.get("sasl.password"), Some("pw-from-file"));
        assert_eq!(settings.get("linger.ms"), Some("1"));
        assert_eq!(crate::redact::redact("x pw-from-file y"), "x *** y");
    }

    #[test]
    fn overrides_win_over_defaults() {
        let mut settings = KafkaSettings::new("b:9092");
        settings.overrides = vec![parse_override("linger.ms=50").unwrap()];
        let config = settings.producer_config();
        assert_eq!(config.get("linger.ms"), Some("50"));
        assert_eq!(config.get("enable.idempotence"), Some("true"));
        assert!(parse_override("nonsense").is_err());
        assert_eq!(
            parse_override("sasl.password=a=b").unwrap(),
            ("sasl.password".into(), "a=b".into())
        );
    }
}
