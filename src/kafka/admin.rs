//! Creating the contract's topics and reading how many records each holds.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::BaseConsumer;
use rdkafka::error::RDKafkaErrorCode;

use super::context::Logged;
use super::{read, KafkaSettings};
use crate::topics::{with_prefix, TopicKind, CONTRACT_TOPICS};

/// What happened to one topic on `create_contract_topics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicOutcome {
    Created,
    AlreadyExists,
}

/// Creates every contract topic (with `prefix`) that is missing: streams with
/// `partitions` partitions, reference tables compacted.
pub async fn create_contract_topics(
    settings: &KafkaSettings,
    prefix: &str,
    partitions: i32,
    replication: i32,
) -> anyhow::Result<Vec<(String, TopicOutcome)>> {
    let context = Logged::new("admin");
    let admin: AdminClient<Logged> = settings
        .client_config(&[])
        .create_with_context(context.clone())?;
    let names: Vec<(String, TopicKind)> = CONTRACT_TOPICS
        .iter()
        .map(|(t, k)| (with_prefix(prefix, t), *k))
        .collect();
    let new_topics: Vec<NewTopic> = names
        .iter()
        .map(|(name, kind)| {
            let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(replication));
            match kind {
                TopicKind::Table => topic.set("cleanup.policy", "compact"),
                TopicKind::Stream => topic,
            }
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(&new_topics, &options)
        .await
        .map_err(|e| {
            let cause = context
                .last_error()
                .map(|c| format!(" (last client error: {c})"))
                .unwrap_or_default();
            anyhow::anyhow!(
                "cannot create topics on Kafka at {}: {e}{cause}",
                settings.bootstrap_servers
            )
        })?;
    let mut outcomes = Vec::new();
    for result in results {
        match result {
            Ok(name) => outcomes.push((name, TopicOutcome::Created)),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                outcomes.push((name, TopicOutcome::AlreadyExists))
            }
            Err((name, code)) => anyhow::bail!("cannot create topic {name}: {code}"),
        }
    }
    Ok(outcomes)
}

/// Partition count and record count of one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicStats {
    pub topic: String,
    pub partitions: usize,
    pub records: usize,
}

/// Stats for each topic, counted by reading it to its end (see [`super::read`]); a topic
/// that does not exist is reported with 0 partitions.
pub fn topic_stats(settings: &KafkaSettings, topics: &[String]) -> anyhow::Result<Vec<TopicStats>> {
    let consumer: BaseConsumer<Logged> = settings
        .consumer_config(&[("group.id", "leadflow-stats")])
        .create_with_context(Logged::new("admin"))?;
    let mut stats = Vec::new();
    for topic in topics {
        let partitions = read::partitions(&consumer, topic)?.len();
        let records = if partitions == 0 {
            0
        } else {
            read::for_each_to_end(settings, topic, Duration::from_secs(120), |_| {})?
        };
        stats.push(TopicStats {
            topic: topic.clone(),
            partitions,
            records,
        });
    }
    Ok(stats)
}
