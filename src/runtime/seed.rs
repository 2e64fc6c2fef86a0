//! Seeding a changelog created for a state directory that already holds state (written by a
//! leadflow from before changelogs): the local state is produced to the new changelog and
//! checkpointed, so that restoring the task keeps it instead of wiping it.

use std::collections::HashMap;

use crate::sink::producer::{Delivered, Sender};
use crate::state::changelog::{self, Checkpoint};
use crate::state::{Cf, StateStore, Write};
use crate::time::now_ms;

/// Keys read and produced at once.
const CHUNK: usize = 10_000;

/// Produces every key of `stores` to its (new, empty) changelog and writes the tasks'
/// checkpoints. Returns the records produced.
pub async fn seed_changelogs(
    store: &StateStore,
    sender: &Sender,
    application_id: &str,
    stores: &[Cf],
) -> anyhow::Result<u64> {
    let changelogs = changelog::Changelogs::new(application_id);
    let mut produced = 0u64;
    for &cf in stores {
        let mut next: HashMap<i32, i64> = HashMap::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let chunk = store.entries_after(cf, after.as_deref(), CHUNK)?;
            let Some((last, _)) = chunk.last() else {
                break;
            };
            after = Some(last.clone());
            let writes: Vec<Write> = chunk
                .into_iter()
                .map(|(key, value)| Write {
                    cf,
                    key,
                    value: Some(value),
                })
                .collect();
            let records = changelogs.records(&writes);
            let mut deliveries = Vec::with_capacity(records.len());
            for (_, record) in &records {
                deliveries.push(sender.enqueue(record).await?);
            }
            for ((_, record), delivery) in records.into_iter().zip(deliveries) {
                let Delivered { partition, offset } = sender.settle(record, delivery).await?;
                let slot = next.entry(partition).or_insert(0);
                *slot = (*slot).max(offset + 1);
                produced += 1;
            }
        }
        let written_at = now_ms();
        let checkpoints: Vec<Write> = next
            .iter()
            .map(|(&task, &next_offset)| {
                Checkpoint {
                    next_offset,
                    written_at,
                }
                .write(task, cf)
            })
            .collect();
        store.write(&checkpoints)?;
        if !next.is_empty() {
            tracing::info!(
                store = cf.name(),
                tasks = next.len(),
                "local state of an earlier leadflow written to its new changelog"
            );
        }
    }
    Ok(produced)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::DefaultProducerContext;

    use super::*;
    use crate::kafka::context::Logged;
    use crate::kafka::KafkaSettings;
    use crate::sink::producer::OutputProducer;
    use crate::source::restore::{restore_store, ChangelogReader};
    use crate::state::partition_key;

    #[tokio::test]
    async fn local_state_seeds_a_new_changelog_and_is_kept_by_the_restore() {
        let mock: MockCluster<'static, DefaultProducerContext> = MockCluster::new(1).unwrap();
        mock.create_topic("app-contact-changelog", 2, 1).unwrap();
        let settings = KafkaSettings::new(mock.bootstrap_servers());
        let config = settings.producer_config();
        let producer: OutputProducer = config.create_with_context(Logged::new("producer")).unwrap();
        let sender = Sender::new(producer, &config);
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path(), Duration::from_secs(3600)).unwrap();
        let put = |partition: i32, key: &str| Write {
            cf: Cf::Contact,
            key: partition_key(partition, key.as_bytes()),
            value: Some(format!("{partition}{key}").into_bytes()),
        };
        store
            .write(&[put(0, "a"), put(1, "b"), put(1, "c")])
            .unwrap();

        let produced = seed_changelogs(&store, &sender, "app", &[Cf::Contact])
            .await
            .unwrap();
        assert_eq!(produced, 3);
        assert_eq!(
            store
                .checkpoint(1, Cf::Contact)
                .unwrap()
                .map(|c| c.next_offset),
            Some(2)
        );

        let consumer = ChangelogReader::new(&settings, "seed-test").unwrap();
        let (store, consumer) = tokio::task::spawn_blocking(move || {
            for task in [0, 1] {
                let r = restore_store(
                    &consumer,
                    &store,
                    "app",
                    Cf::Contact,
                    task,
                    Duration::from_secs(86_400),
                )
                .unwrap();
                assert!(!r.wiped, "task {task} wiped: {r:?}");
                assert_eq!(r.records, 0);
            }
            (store, consumer)
        })
        .await
        .unwrap();
        drop(consumer);
        assert_eq!(store.entries(Cf::Contact).unwrap().len(), 3);

        // A fresh store restoring from the seeded changelog gets the same state.
        let fresh_dir = tempfile::tempdir().unwrap();
        let fresh = StateStore::open(fresh_dir.path(), Duration::from_secs(3600)).unwrap();
        let consumer = ChangelogReader::new(&settings, "seed-test-2").unwrap();
        let fresh = tokio::task::spawn_blocking(move || {
            for task in [0, 1] {
                restore_store(
                    &consumer,
                    &fresh,
                    "app",
                    Cf::Contact,
                    task,
                    Duration::from_secs(86_400),
                )
                .unwrap();
            }
            fresh
        })
        .await
        .unwrap();
        assert_eq!(
            fresh.entries(Cf::Contact).unwrap(),
            store.entries(Cf::Contact).unwrap()
        );
    }
}
