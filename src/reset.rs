//! `leadflow reset`: makes an application process its inputs again from the start (or from a
//! time), as Kafka Streams' application reset tool does. With every instance stopped it
//! commits the group's input offsets at the start (or at the first record at or after the
//! time), deletes the application's changelog topics and removes the local state directory
//! of the application. The output topics are left alone: what was emitted stays, and the
//! reprocessed decisions follow it (with new `decision_id`s when the rules changed).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::kafka::context::Logged;
use crate::kafka::read::{partitions, snapshot_ends};
use crate::kafka::KafkaSettings;
use crate::state::changelog;
use crate::topology::Topology;

const TIMEOUT: Duration = Duration::from_secs(30);

/// What a reset will do, worked out before anything is changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub group: String,
    /// The offset each input partition will be committed at.
    pub offsets: Vec<(String, i32, i64)>,
    /// Changelog topics that exist and will be deleted.
    pub changelogs: Vec<String>,
    /// The local state directory that exists and will be removed.
    pub state: Option<PathBuf>,
}

/// Works out the reset of `topology`'s application: refuses while the group has members.
/// `to_ms`: the event time (record timestamp, ms) to restart from; `None`: the start.
pub fn plan(
    settings: &KafkaSettings,
    topology: &Topology,
    state_dir: &Path,
    to_ms: Option<i64>,
) -> anyhow::Result<Plan> {
    let group = topology.application_id.clone();
    let consumer: BaseConsumer<Logged> = settings
        .consumer_config(&[("group.id", &group), ("enable.auto.commit", "false")])
        .create_with_context(Logged::new("admin"))?;
    let groups = consumer
        .fetch_group_list(Some(&group), TIMEOUT)
        .map_err(|e| anyhow::anyhow!("cannot ask the broker about group {group}: {e}"))?;
    if let Some(info) = groups
        .groups()
        .iter()
        .find(|g| g.name() == group && !g.members().is_empty())
    {
        let members: Vec<String> = info
            .members()
            .iter()
            .map(|m| format!("{} on {}", m.client_id(), m.client_host()))
            .collect();
        anyhow::bail!(
            "the group {group} has {} active member(s) ({}); stop every `leadflow run` of this \
             application first (a static member stays until its session times out)",
            members.len(),
            members.join(", ")
        );
    }
    let mut offsets = Vec::new();
    for topic in [&topology.contacts, &topology.engagements] {
        let parts = partitions(&consumer, topic)?;
        anyhow::ensure!(!parts.is_empty(), "the input topic {topic} does not exist");
        let ends = snapshot_ends(&consumer, topic, &parts)?;
        let at_time = match to_ms {
            None => None,
            Some(ms) => {
                let mut tpl = TopicPartitionList::new();
                for p in &parts {
                    tpl.add_partition_offset(topic, *p, Offset::Offset(ms))?;
                }
                Some(consumer.offsets_for_times(tpl, TIMEOUT).map_err(|e| {
                    anyhow::anyhow!("cannot look up the offsets of {topic} at {ms}: {e}")
                })?)
            }
        };
        for p in parts {
            let (low, high) = ends.get(&p).copied().unwrap_or((0, 0));
            let offset = match &at_time {
                None => low,
                Some(found) => match found.find_partition(topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o.max(low),
                    // No record at or after the time: nothing of this partition is redone.
                    _ => high,
                },
            };
            offsets.push((topic.clone(), p, offset));
        }
    }
    let mut changelogs = Vec::new();
    for store in changelog::STORES {
        let topic = changelog::topic(&group, store);
        if !partitions(&consumer, &topic)?.is_empty() {
            changelogs.push(topic);
        }
    }
    let state = Some(state_dir.join(&group)).filter(|d| d.exists());
    Ok(Plan {
        group,
        offsets,
        changelogs,
        state,
    })
}

impl Plan {
    /// The plan, for the user to confirm.
    pub fn describe(&self) -> String {
        let mut out = format!("reset of application {}:\n", self.group);
        out.push_str("  commit the group's input offsets at:\n");
        for (topic, partition, offset) in &self.offsets {
            out.push_str(&format!("    {topic}:{partition} -> {offset}\n"));
        }
        if self.changelogs.is_empty() {
            out.push_str("  no changelog topic to delete\n");
        }
        for topic in &self.changelogs {
            out.push_str(&format!("  delete the changelog topic {topic}\n"));
        }
        match &self.state {
            Some(dir) => out.push_str(&format!("  remove the local state {}\n", dir.display())),
            None => out.push_str("  no local state here to remove\n"),
        }
        out
    }

    /// Carries the plan out: offsets first (a failure leaves state and changelogs as they
    /// were), then the changelogs, then the local state.
    pub async fn apply(&self, settings: &KafkaSettings) -> anyhow::Result<()> {
        let consumer: BaseConsumer<Logged> = settings
            .consumer_config(&[("group.id", &self.group), ("enable.auto.commit", "false")])
            .create_with_context(Logged::new("admin"))?;
        let mut tpl = TopicPartitionList::new();
        for (topic, partition, offset) in &self.offsets {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
        }
        let group = self.group.clone();
        tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync))
            .await?
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot commit the offsets of group {group} ({e}); is an instance running?"
                )
            })?;
        if !self.changelogs.is_empty() {
            let admin: AdminClient<Logged> = settings
                .client_config(&[])
                .create_with_context(Logged::new("admin"))?;
            let names: Vec<&str> = self.changelogs.iter().map(String::as_str).collect();
            let results = admin
                .delete_topics(
                    &names,
                    &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
                )
                .await?;
            for result in results {
                match result {
                    Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
                    Err((topic, code)) => {
                        anyhow::bail!("cannot delete the changelog topic {topic}: {code}")
                    }
                }
            }
        }
        if let Some(dir) = &self.state {
            std::fs::remove_dir_all(dir)
                .map_err(|e| anyhow::anyhow!("cannot remove {}: {e}", dir.display()))?;
        }
        Ok(())
    }
}

/// Reads a `--to-datetime` value: RFC 3339 (`2026-11-30T00:00:00Z`) or a date
/// (`2026-11-30`, midnight UTC); returns ms since the epoch.
pub fn parse_time(flag: &str, value: &str) -> anyhow::Result<i64> {
    let t = humantime::parse_rfc3339_weak(value)
        .or_else(|_| humantime::parse_rfc3339_weak(&format!("{value} 00:00:00")))
        .map_err(|_| {
            anyhow::anyhow!(
                "{flag} {value:?}: write a UTC time like 2026-11-30T08:00:00Z or a date like \
                 2026-11-30"
            )
        })?;
    Ok(t.duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_dates() {
        assert_eq!(parse_time("--x", "1970-01-02").unwrap(), 86_400_000);
        assert_eq!(parse_time("--x", "1970-01-01T00:00:01Z").unwrap(), 1_000);
        let err = parse_time("--to-datetime", "yesterday")
            .unwrap_err()
            .to_string();
        assert!(err.contains("--to-datetime \"yesterday\""), "{err}");
    }
}
