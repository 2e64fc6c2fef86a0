//! Reference tables, like Kafka Streams' GlobalKTable: every instance reads every partition of
//! the accounts and reps topics from the beginning, signals when it has reached the end they
//! had when it started (processing waits for that), then keeps applying updates while running.
//!
//! A record is never skipped because of the registry: an outage or a refusal (401, 403, a
//! wrong path) is waited out, so "loaded" always means every record up to the end was applied.
//! Only a record that is itself bad (unknown schema id, not Confluent framing, undecodable, no
//! key) is skipped, logged and counted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use metrics::counter;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::oneshot;

use crate::codec::{decode, unframe, RegistryClient, RegistryError, SchemaKind};
use crate::kafka::context::{client_error, is_fatal, Logged};
use crate::kafka::read::{partitions, snapshot_ends};
use crate::kafka::KafkaSettings;
use crate::metrics as m;
use crate::model::{AccountEvent, RepEvent};
use crate::runtime::health::Health;
use crate::state::reference::{apply_account, apply_rep};
use crate::state::StateStore;

/// Which reference table a topic feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Accounts,
    Reps,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::Accounts => "accounts",
            Table::Reps => "reps",
        }
    }
}

/// How often a loader that has not reached the end looks at its consumer's positions (the
/// end may be a transaction marker, which delivers no record).
const CHECK_END: Duration = Duration::from_millis(200);

/// One reference topic, read into its table.
pub struct Follower {
    pub settings: KafkaSettings,
    pub group: String,
    pub topic: String,
    pub table: Table,
    pub registry: RegistryClient,
    pub store: Arc<StateStore>,
    pub health: Arc<Health>,
}

impl Follower {
    /// Reads the topic into the table for ever; sends on `ready` once every partition was
    /// read to the end it had at the start.
    pub async fn follow(self, ready: oneshot::Sender<()>) -> anyhow::Result<()> {
        let topic = self.topic.clone();
        let context = Logged::new("reference");
        let consumer: StreamConsumer<Logged> = self
            .settings
            .consumer_config(&[
                ("group.id", self.group.as_str()),
                ("enable.auto.commit", "false"),
                ("isolation.level", "read_committed"),
            ])
            .create_with_context(context.clone())
            .map_err(|e| anyhow::anyhow!("cannot create the consumer of {topic}: {e}"))?;
        // Metadata and ListOffsets calls block: off the async worker's hands.
        let parts = tokio::task::block_in_place(|| partitions(&consumer, &topic)).map_err(|e| {
            anyhow::anyhow!(
                "cannot read the metadata of {topic}: {e}{}",
                context
                    .last_error()
                    .map(|c| format!(" (last client error: {c})"))
                    .unwrap_or_default()
            )
        })?;
        if parts.is_empty() {
            anyhow::bail!(
                "reference topic {topic} does not exist; create it (leadflow topics create)"
            );
        }
        // Where "loaded" is: each partition's end now.
        let mut remaining: HashMap<i32, i64> =
            tokio::task::block_in_place(|| snapshot_ends(&consumer, &topic, &parts))?
                .into_iter()
                .filter(|(_, (low, high))| high > low)
                .map(|(p, (_, high))| (p, high))
                .collect();
        let mut assignment = TopicPartitionList::new();
        for p in &parts {
            assignment.add_partition_offset(&topic, *p, Offset::Beginning)?;
        }
        consumer.assign(&assignment)?;
        let mut ready = Some(ready);
        loop {
            if remaining.is_empty() {
                if let Some(tx) = ready.take() {
                    tracing::info!(%topic, "reference table loaded");
                    let _ = tx.send(());
                }
            }
            let message = match tokio::time::timeout(CHECK_END, consumer.recv()).await {
                Err(_) => {
                    drop_reached(&consumer, &topic, &mut remaining);
                    continue;
                }
                Ok(Err(e)) if is_fatal(&e) => {
                    anyhow::bail!("fatal error of the consumer of {topic}: {e}")
                }
                Ok(Err(e)) => {
                    client_error("reference", &e, "consume");
                    continue;
                }
                Ok(Ok(message)) => message,
            };
            if let Some(end) = remaining.get(&message.partition()) {
                if message.offset() + 1 >= *end {
                    remaining.remove(&message.partition());
                }
            }
            let Some(key) = message
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned())
            else {
                self.skipped(message.offset(), "missing_key", "a record without key");
                continue;
            };
            self.apply(&key, message.offset(), message.payload())
                .await?;
        }
    }

    /// Applies one record (a tombstone removes the key), waiting out registry faults.
    async fn apply(&self, key: &str, offset: i64, value: Option<&[u8]>) -> anyhow::Result<()> {
        let is_accounts = self.table == Table::Accounts;
        let Some(value) = value else {
            if is_accounts {
                apply_account(&self.store, key, None)?;
            } else {
                apply_rep(&self.store, key, None)?;
            }
            counter!(m::REFERENCE_UPDATES, "table" => self.table.name()).increment(1);
            return Ok(());
        };
        let (id, datum) = match unframe(value) {
            Ok(parts) => parts,
            Err(e) => {
                self.skipped(offset, "bad_magic", &e.to_string());
                return Ok(());
            }
        };
        let mut delays = crate::retry::backoff();
        let mut waiting = None;
        let writer = loop {
            match self.registry.schema_by_id(id).await {
                Ok(schema) => break schema,
                Err(e) if e.should_wait() => {
                    if waiting.is_none() {
                        tracing::warn!(topic = self.topic, error = %e, "cannot use the schema registry; waiting");
                    }
                    waiting = Some(self.health.registry_fault(&e, waiting));
                    tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(5))).await;
                }
                Err(e @ RegistryError::UnknownId(_)) => {
                    self.skipped(offset, "unknown_schema_id", &e.to_string());
                    return Ok(());
                }
                Err(e) => {
                    self.skipped(offset, "avro_decode", &e.to_string());
                    return Ok(());
                }
            }
        };
        drop(waiting);
        let applied = if is_accounts {
            decode::<AccountEvent>(&writer, SchemaKind::AccountEvent, datum)
                .map(|e| apply_account(&self.store, key, Some(&e.payload)))
        } else {
            decode::<RepEvent>(&writer, SchemaKind::RepEvent, datum)
                .map(|e| apply_rep(&self.store, key, Some(&e.payload)))
        };
        match applied {
            Ok(result) => {
                result?;
                counter!(m::REFERENCE_UPDATES, "table" => self.table.name()).increment(1);
            }
            Err(e) => self.skipped(offset, "avro_decode", &e.to_string()),
        }
        Ok(())
    }

    /// A record that cannot be applied: logged (no key or values: they may be personal data)
    /// and counted.
    fn skipped(&self, offset: i64, reason: &'static str, error: &str) {
        counter!(m::REFERENCE_SKIPPED, "table" => self.table.name(), "reason" => reason)
            .increment(1);
        tracing::warn!(
            topic = self.topic,
            offset,
            reason,
            error,
            "reference record skipped"
        );
    }
}

/// Forgets the partitions whose position reached their end (their last offsets may be
/// transaction markers, which deliver no record).
fn drop_reached(consumer: &StreamConsumer<Logged>, topic: &str, remaining: &mut HashMap<i32, i64>) {
    if remaining.is_empty() {
        return;
    }
    let Ok(positions) = consumer.position() else {
        return;
    };
    remaining.retain(|p, end| {
        !matches!(
            positions.find_partition(topic, *p).map(|e| e.offset()),
            Some(Offset::Offset(at)) if at >= *end
        )
    });
}
