//! Kafka client settings shared by every command, topic administration, and topic stats.

pub mod admin;
pub mod read;

use rdkafka::ClientConfig;

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

    /// A client config with leadflow's `defaults`, then the user's overrides.
    pub fn client_config(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers);
        for (k, v) in defaults {
            config.set(*k, *v);
        }
        for (k, v) in &self.overrides {
            config.set(k, v);
        }
        config
    }

    /// Producer defaults: idempotent, all replicas, Java-compatible key partitioning so that
    /// records keyed by contact_id land where Kafka Streams and Java producers put them.
    pub fn producer_config(&self) -> ClientConfig {
        self.client_config(&[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("partitioner", "murmur2_random"),
            ("linger.ms", "5"),
            ("message.timeout.ms", "60000"),
        ])
    }
}

/// Parses one `--kafka key=value` argument.
pub fn parse_override(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!(
            "'{arg}' is not key=value; write e.g. --kafka security.protocol=SASL_SSL"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_win_over_defaults() {
        let mut settings = KafkaSettings::new("b:9092");
        settings.overrides = vec![parse_override("acks=1").unwrap()];
        let config = settings.producer_config();
        assert_eq!(config.get("acks"), Some("1"));
        assert_eq!(config.get("enable.idempotence"), Some("true"));
        assert!(parse_override("nonsense").is_err());
        assert_eq!(
            parse_override("sasl.password=a=b").unwrap(),
            ("sasl.password".into(), "a=b".into())
        );
    }
}
