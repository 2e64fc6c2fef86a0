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
    let results = create(&admin, &context, &new_topics).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot create topics on Kafka at {}: {e}",
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

/// How long the changelogs keep a tombstone (`delete.retention.ms`, Kafka's default): a
/// checkpoint older than this cannot be trusted to have seen every deletion since.
pub const CHANGELOG_TOMBSTONE_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// Creates the application's changelog topics that are missing (compacted; the
/// de-duplication store's also deleted after `dedup_retention`), with `partitions`
/// partitions and the broker's default replication, and checks that existing ones have
/// `partitions` partitions. Existing topics need no right to create topics. Returns the
/// stores whose changelog this call created.
pub async fn ensure_changelogs(
    settings: &KafkaSettings,
    application_id: &str,
    partitions: i32,
    dedup_retention: Duration,
    max_message_bytes: usize,
) -> anyhow::Result<Vec<crate::state::Cf>> {
    use crate::state::{changelog, Cf};
    let names: Vec<(Cf, String)> = changelog::STORES
        .iter()
        .map(|cf| (*cf, changelog::topic(application_id, *cf)))
        .collect();
    let missing: Vec<(Cf, String)> = {
        let (settings, names) = (settings.clone(), names.clone());
        tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<(Cf, String)>> {
            let consumer: BaseConsumer<Logged> = settings
                .consumer_config(&[("group.id", "leadflow-admin")])
                .create_with_context(Logged::new("admin"))?;
            let mut missing = Vec::new();
            for (cf, name) in names {
                match read::partitions(&consumer, &name)?.len() {
                    0 => missing.push((cf, name)),
                    found if found == partitions as usize => {}
                    found => anyhow::bail!(
                        "the changelog topic {name} has {found} partitions, the inputs \
                         {partitions}: its partitions no longer match the tasks. Stop every \
                         instance, delete the application's changelog topics and state \
                         directories, and start again"
                    ),
                }
            }
            Ok(missing)
        })
        .await??
    };
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    let context = Logged::new("admin");
    let admin: AdminClient<Logged> = settings
        .client_config(&[])
        .create_with_context(context.clone())?;
    let (retention, max_bytes, tombstones) = (
        dedup_retention.as_millis().to_string(),
        max_message_bytes.to_string(),
        CHANGELOG_TOMBSTONE_RETENTION.as_millis().to_string(),
    );
    let new_topics: Vec<NewTopic> = missing
        .iter()
        .map(|(cf, name)| {
            let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(-1))
                .set("max.message.bytes", &max_bytes)
                .set("delete.retention.ms", &tombstones);
            if *cf == Cf::Dedup {
                topic
                    .set("cleanup.policy", "compact,delete")
                    .set("retention.ms", &retention)
            } else {
                topic.set("cleanup.policy", "compact")
            }
        })
        .collect();
    let results = create(&admin, &context, &new_topics)
        .await
        .map_err(|e| anyhow::anyhow!("cannot create the changelog topics: {e}"))?;
    let mut created = Vec::new();
    for result in results {
        match result {
            Ok(name) => {
                tracing::info!(topic = name, partitions, "changelog topic created");
                created.extend(
                    missing
                        .iter()
                        .filter(|(_, n)| *n == name)
                        .map(|(cf, _)| *cf),
                );
            }
            // Another instance of the application created it meanwhile.
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => anyhow::bail!(
                "cannot create the changelog topic {name}: {code}. leadflow creates topics \
                 named <application_id>-<store>-changelog at start-up; grant it the right to, \
                 or create them: compacted, {partitions} partitions (docs/contracts.md §10)"
            ),
        }
    }
    Ok(created)
}

/// Creates `topics`; a request that fails as a whole names the client's last error.
async fn create(
    admin: &AdminClient<Logged>,
    context: &Logged,
    topics: &[NewTopic<'_>],
) -> Result<Vec<rdkafka::admin::TopicResult>, String> {
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    admin.create_topics(topics, &options).await.map_err(|e| {
        let cause = context
            .last_error()
            .map(|c| format!(" (last client error: {c})"))
            .unwrap_or_default();
        format!("{e}{cause}")
    })
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

/// How long [`max_message_bytes`] waits for a topic's configuration to be readable: a topic
/// created a moment ago (by this instance or another one starting beside it) is described
/// without its configuration until every broker has it.
const TOPIC_CONFIG_WAIT: Duration = Duration::from_secs(30);

/// Each topic's `max.message.bytes`: the largest record batch the broker accepts on it. A
/// topic the broker does not describe yet is asked again until [`TOPIC_CONFIG_WAIT`].
pub async fn max_message_bytes(
    settings: &KafkaSettings,
    topics: &[String],
) -> anyhow::Result<std::collections::HashMap<String, usize>> {
    let admin: AdminClient<Logged> = settings
        .client_config(&[])
        .create_with_context(Logged::new("admin"))?;
    let deadline = tokio::time::Instant::now() + TOPIC_CONFIG_WAIT;
    let mut limits = std::collections::HashMap::new();
    let mut pending: Vec<String> = topics.to_vec();
    let mut pause = Duration::from_millis(100);
    loop {
        let unread = describe_max_message_bytes(&admin, &pending, &mut limits).await?;
        let Some((topic, why)) = unread.first().cloned() else {
            return Ok(limits);
        };
        if tokio::time::Instant::now() + pause > deadline {
            anyhow::bail!(
                "{topic} has no readable max.message.bytes after {}s ({why}): check that the \
                 topic exists and that leadflow may describe its configuration \
                 (DescribeConfigs on the topic)",
                TOPIC_CONFIG_WAIT.as_secs()
            );
        }
        tracing::debug!(
            topic,
            why,
            "a topic's configuration is not readable yet; asking again"
        );
        pending = unread.into_iter().map(|(topic, _)| topic).collect();
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// Reads the `max.message.bytes` of `topics` into `limits`; returns the topics that had
/// none readable, each with why. Errors that waiting cannot cure end the call.
async fn describe_max_message_bytes(
    admin: &AdminClient<Logged>,
    topics: &[String],
    limits: &mut std::collections::HashMap<String, usize>,
) -> anyhow::Result<Vec<(String, String)>> {
    use rdkafka::admin::{OwnedResourceSpecifier, ResourceSpecifier};
    let specifiers: Vec<ResourceSpecifier<'_>> =
        topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
    let results = admin
        .describe_configs(
            &specifiers,
            &AdminOptions::new().request_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the configuration of the output topics: {e}"))?;
    // A failed resource does not say which topic it was: the topics left unread are those
    // that no described resource named.
    let mut why = String::from("not described");
    for result in results {
        let resource = match result {
            Ok(resource) => resource,
            Err(code @ RDKafkaErrorCode::UnknownTopicOrPartition) => {
                why = code.to_string();
                continue;
            }
            Err(code) => anyhow::bail!("cannot read a topic's configuration: {code}"),
        };
        let OwnedResourceSpecifier::Topic(topic) = &resource.specifier else {
            continue;
        };
        match resource
            .get("max.message.bytes")
            .and_then(|e| e.value.as_deref())
            .and_then(|v| v.parse::<usize>().ok())
        {
            Some(value) => {
                limits.insert(topic.clone(), value);
            }
            // rdkafka leaves out a resource's own error: a topic the broker does not know
            // (yet) comes back with no entries.
            None if resource.entries.is_empty() => {
                why = "described without configuration: the broker does not know it yet".into()
            }
            None => why = "max.message.bytes is missing from its configuration".into(),
        }
    }
    Ok(topics
        .iter()
        .filter(|topic| !limits.contains_key(*topic))
        .map(|topic| (topic.clone(), why.clone()))
        .collect())
}
