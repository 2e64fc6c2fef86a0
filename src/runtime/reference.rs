//! Reference tables, like Kafka Streams' GlobalKTable: every instance reads every partition of
//! the accounts and reps topics from the beginning, signals when it has reached their end
//! (processing waits for that), then keeps applying updates while running.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use metrics::counter;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::oneshot;

use crate::codec::{decode, unframe, RegistryClient, SchemaKind};
use crate::kafka::read::{partitions, ReaderContext};
use crate::kafka::KafkaSettings;
use crate::metrics as m;
use crate::model::{AccountEvent, RepEvent};
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

/// Reads `topic` into `table` forever; sends on `ready` once every partition was read to its
/// end. One consumer per topic, because end-of-partition events name only the partition.
pub async fn follow(
    settings: KafkaSettings,
    group: String,
    topic: String,
    table: Table,
    registry: RegistryClient,
    store: Arc<StateStore>,
    ready: oneshot::Sender<()>,
) -> anyhow::Result<()> {
    let consumer: StreamConsumer<ReaderContext> = settings
        .consumer_config(&[
            ("group.id", group.as_str()),
            ("enable.auto.commit", "false"),
            ("enable.partition.eof", "true"),
        ])
        .create_with_context(ReaderContext)?;
    let parts = partitions(&consumer, &topic)?;
    if parts.is_empty() {
        anyhow::bail!("reference topic {topic} does not exist; create it (leadflow topics create)");
    }
    let mut assignment = TopicPartitionList::new();
    for p in &parts {
        assignment.add_partition_offset(&topic, *p, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let mut pending: HashSet<i32> = parts.into_iter().collect();
    let mut ready = Some(ready);
    loop {
        match consumer.recv().await {
            Err(KafkaError::PartitionEOF(p)) => {
                pending.remove(&p);
                if pending.is_empty() {
                    if let Some(tx) = ready.take() {
                        tracing::info!(%topic, "reference table loaded");
                        let _ = tx.send(());
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, %topic, "reference table consumer error"),
            Ok(message) => {
                let Some(key) = message
                    .key()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                else {
                    tracing::warn!(%topic, offset = message.offset(), "reference record without key skipped");
                    continue;
                };
                apply(&registry, &store, table, &topic, &key, message.payload()).await?;
            }
        }
    }
}

async fn apply(
    registry: &RegistryClient,
    store: &StateStore,
    table: Table,
    topic: &str,
    key: &str,
    value: Option<&[u8]>,
) -> anyhow::Result<()> {
    let is_accounts = table == Table::Accounts;
    let Some(value) = value else {
        // A tombstone removes the entry.
        if is_accounts {
            apply_account(store, key, None)?;
        } else {
            apply_rep(store, key, None)?;
        }
        counter!(m::REFERENCE_UPDATES, "table" => table.name()).increment(1);
        return Ok(());
    };
    let (id, datum) = match unframe(value) {
        Ok(parts) => parts,
        Err(e) => {
            tracing::warn!(%topic, %key, error = %e, "reference record skipped");
            return Ok(());
        }
    };
    let mut backoff = Duration::from_millis(100);
    let writer = loop {
        match registry.schema_by_id(id).await {
            Ok(schema) => break schema,
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, "registry unavailable; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                tracing::warn!(%topic, %key, error = %e, "reference record skipped");
                return Ok(());
            }
        }
    };
    let applied = if is_accounts {
        decode::<AccountEvent>(&writer, SchemaKind::AccountEvent, datum)
            .map(|e| apply_account(store, key, Some(&e.payload)))
    } else {
        decode::<RepEvent>(&writer, SchemaKind::RepEvent, datum)
            .map(|e| apply_rep(store, key, Some(&e.payload)))
    };
    match applied {
        Ok(result) => {
            result?;
            counter!(m::REFERENCE_UPDATES, "table" => table.name()).increment(1);
        }
        Err(e) => tracing::warn!(%topic, %key, error = %e, "reference record skipped"),
    }
    Ok(())
}
