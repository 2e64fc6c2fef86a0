//! Restoring a task's stores from their changelogs before the task processes a record.
//!
//! For each store, the task's checkpoint says up to which changelog offset the local state
//! includes the changelog. It is used when it lies within the changelog and either nothing
//! was written since or it is younger than the changelogs' `delete.retention.ms` (so that no
//! tombstone written since can have been compacted away). Then only the tail is read.
//! Otherwise the task's keys are wiped and the changelog is read from its beginning. Records
//! are applied in batches; the last batch carries the new checkpoint.
//!
//! A restore reads committed records only, and reads up to the changelog's high watermark,
//! not to its last stable offset: a transaction left open by a crashed former owner holds the
//! last stable offset back while the task's next owners commit after it, and stopping there
//! would miss their state. So a restore behind an open transaction waits until the broker
//! aborts it (`transaction.timeout.ms`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{counter, histogram};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::kafka::context::{client_error, is_fatal, Logged};
use crate::kafka::read::snapshot_ends;
use crate::kafka::KafkaSettings;
use crate::metrics as m;
use crate::state::changelog::{self, At, Checkpoint};
use crate::state::{Cf, StateStore, Write};
use crate::time::now_ms;

/// Records applied per RocksDB write while restoring.
const BATCH: usize = 5_000;
/// How long a restore may go without reading a record before it fails.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Restores tasks of one stream thread.
pub struct Restorer {
    settings: KafkaSettings,
    application_id: String,
    store: Arc<StateStore>,
    /// The changelogs' `delete.retention.ms`: how long a tombstone is kept.
    tombstone_retention: Duration,
    reader: Option<Arc<ChangelogReader>>,
    /// With standby replicas: claims a task from the standby tailer before restoring it.
    standby: Option<Arc<super::standby::Standby>>,
}

/// Reads changelogs: committed records, up to the end of the log.
pub struct ChangelogReader {
    /// `read_committed`: an aborted transaction's records are never applied.
    pub(super) records: BaseConsumer<Logged>,
    /// `read_uncommitted`, for the high watermark: a `read_committed` client is told the last
    /// stable offset instead.
    pub(super) ends: BaseConsumer<Logged>,
}

impl ChangelogReader {
    pub fn new(settings: &KafkaSettings, group: &str) -> anyhow::Result<ChangelogReader> {
        let create = |isolation| -> anyhow::Result<BaseConsumer<Logged>> {
            settings
                .consumer_config(&[
                    ("group.id", group),
                    ("enable.auto.commit", "false"),
                    ("isolation.level", isolation),
                    ("fetch.wait.max.ms", "10"),
                ])
                .create_with_context(Logged::new("restore"))
                .map_err(|e| anyhow::anyhow!("cannot create the restore consumer: {e}"))
        };
        Ok(ChangelogReader {
            records: create("read_committed")?,
            ends: create("read_uncommitted")?,
        })
    }
}

/// What restoring one store of a task did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub store: Cf,
    /// Whether the task's local state was wiped first (no usable checkpoint).
    pub wiped: bool,
    pub from: i64,
    pub to: i64,
    pub records: u64,
}

impl Restorer {
    pub fn new(
        settings: KafkaSettings,
        application_id: String,
        store: Arc<StateStore>,
        tombstone_retention: Duration,
    ) -> Restorer {
        Restorer {
            settings,
            application_id,
            store,
            tombstone_retention,
            reader: None,
            standby: None,
        }
    }

    /// Restores claim their task from `standby`'s tailer first.
    pub fn with_standby(mut self, standby: Option<Arc<super::standby::Standby>>) -> Restorer {
        self.standby = standby;
        self
    }

    /// Creates the changelog readers and has them fetch the changelogs' metadata, so that the
    /// first restore does not wait for connections and leaders (about 2 s on a local broker).
    pub async fn warm_up(&mut self) -> anyhow::Result<()> {
        let reader = self.reader()?;
        let topics: Vec<String> = changelog::STORES
            .iter()
            .map(|cf| changelog::topic(&self.application_id, *cf))
            .collect();
        tokio::task::spawn_blocking(move || {
            for topic in &topics {
                for client in [&reader.records, &reader.ends] {
                    if let Err(e) = snapshot_ends(client, topic, &[0]) {
                        tracing::debug!(%topic, error = %e, "changelog reader warm-up");
                    }
                }
            }
        })
        .await?;
        Ok(())
    }

    fn reader(&mut self) -> anyhow::Result<Arc<ChangelogReader>> {
        Ok(match &self.reader {
            Some(r) => r.clone(),
            None => {
                let group = format!("{}-restore", self.application_id);
                let r = Arc::new(ChangelogReader::new(&self.settings, &group)?);
                self.reader = Some(r.clone());
                r
            }
        })
    }

    /// Brings every store of `task` to the end its changelog has now.
    pub async fn restore(&mut self, task: i32) -> anyhow::Result<()> {
        if let Some(standby) = &self.standby {
            standby.claim(task);
        }
        let reader = self.reader()?;
        let (store, app, retention) = (
            self.store.clone(),
            self.application_id.clone(),
            self.tombstone_retention,
        );
        let started = Instant::now();
        let restored = tokio::task::spawn_blocking(move || {
            changelog::STORES
                .iter()
                .map(|cf| restore_store(&reader, &store, &app, *cf, task, retention))
                .collect::<anyhow::Result<Vec<Restored>>>()
        })
        .await??;
        let seconds = started.elapsed().as_secs_f64();
        histogram!(m::RESTORE_SECONDS).record(seconds);
        let records: u64 = restored.iter().map(|r| r.records).sum();
        let wiped: Vec<&str> = restored
            .iter()
            .filter(|r| r.wiped)
            .map(|r| r.store.name())
            .collect();
        tracing::info!(
            task,
            records,
            seconds = format!("{seconds:.3}"),
            wiped = ?wiped,
            "task restored from its changelogs"
        );
        Ok(())
    }
}

/// Restores one store of `task` (blocking).
pub fn restore_store(
    reader: &ChangelogReader,
    store: &StateStore,
    application_id: &str,
    cf: Cf,
    task: i32,
    tombstone_retention: Duration,
) -> anyhow::Result<Restored> {
    let topic = changelog::topic(application_id, cf);
    let consumer = &reader.records;
    let (low, high) = snapshot_ends(&reader.ends, &topic, &[task])?
        .remove(&task)
        .unwrap_or((0, 0));
    let (from, wiped) = starting_point(store, cf, task, (low, high), tombstone_retention)?;
    let done = Checkpoint {
        next_offset: high,
        written_at: now_ms(),
    };
    if from >= high {
        store.write(&[done.write(task, cf)])?;
        return Ok(Restored {
            store: cf,
            wiped,
            from,
            to: high,
            records: 0,
        });
    }
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(&topic, task, Offset::Offset(from))?;
    consumer.assign(&assignment)?;
    let mut batch: Vec<Write> = Vec::with_capacity(BATCH);
    let mut records = 0u64;
    let mut last_progress = Instant::now();
    loop {
        match consumer.poll(Duration::from_millis(200)) {
            None => {
                if reached(consumer, &topic, task, high)? {
                    break;
                }
                if last_progress.elapsed() > STALL_TIMEOUT {
                    anyhow::bail!(
                        "restoring {topic}:{task} read nothing for {STALL_TIMEOUT:?} before \
                         offset {high}"
                    );
                }
            }
            Some(Err(e)) if is_fatal(&e) => return Err(e.into()),
            Some(Err(e)) => client_error("restore", &e, "restore"),
            Some(Ok(message)) => {
                last_progress = Instant::now();
                if message.offset() >= high {
                    break;
                }
                let at = At {
                    topic: &topic,
                    partition: task,
                    offset: message.offset(),
                };
                batch.push(changelog::decode(cf, at, message.key(), message.payload())?);
                records += 1;
                if batch.len() >= BATCH {
                    store.write(&batch)?;
                    counter!(m::RESTORED, "store" => cf.name()).increment(batch.len() as u64);
                    batch.clear();
                }
                if message.offset() + 1 >= high {
                    break;
                }
            }
        }
    }
    counter!(m::RESTORED, "store" => cf.name()).increment(batch.len() as u64);
    batch.push(done.write(task, cf));
    store.write(&batch)?;
    consumer.unassign()?;
    Ok(Restored {
        store: cf,
        wiped,
        from,
        to: high,
        records,
    })
}

/// Where reading `cf`'s changelog of `task` (between `low` and `high`) starts: at the local
/// checkpoint when it is usable, else at `low` after wiping the task's keys (then `true`).
pub fn starting_point(
    store: &StateStore,
    cf: Cf,
    task: i32,
    (low, high): (i64, i64),
    tombstone_retention: Duration,
) -> anyhow::Result<(i64, bool)> {
    let checkpoint = store.checkpoint(task, cf)?;
    let usable = checkpoint.filter(|c| {
        (low..=high).contains(&c.next_offset)
            && (c.next_offset == high
                || now_ms() - c.written_at < tombstone_retention.as_millis() as i64)
    });
    Ok(match usable {
        Some(c) => (c.next_offset, false),
        None => {
            store.wipe_partition(cf, task)?;
            (low, true)
        }
    })
}

/// Whether the consumer's position in `topic`:`task` is at `end` or past it (the last
/// records may be compacted away, or be transaction markers: no record says so).
fn reached(
    consumer: &BaseConsumer<Logged>,
    topic: &str,
    task: i32,
    end: i64,
) -> anyhow::Result<bool> {
    let positions = consumer.position()?;
    Ok(matches!(
        positions.find_partition(topic, task).map(|e| e.offset()),
        Some(Offset::Offset(at)) if at >= end
    ))
}

#[cfg(test)]
mod tests {
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseProducer, BaseRecord, DefaultProducerContext, Producer};

    use super::*;
    use crate::state::changelog::encode;
    use crate::state::partition_key;

    const TOPIC: &str = "app-contact-changelog";
    const DAY: Duration = Duration::from_secs(86_400);

    struct Fixture {
        // Dropped last: the clients below talk to it.
        reader: ChangelogReader,
        producer: BaseProducer<DefaultProducerContext>,
        store: StateStore,
        _dir: tempfile::TempDir,
        _mock: MockCluster<'static, DefaultProducerContext>,
    }

    impl Fixture {
        fn new() -> Fixture {
            let mock = MockCluster::new(1).unwrap();
            mock.create_topic(TOPIC, 2, 1).unwrap();
            let settings = KafkaSettings::new(mock.bootstrap_servers());
            let producer = settings.producer_config().create().unwrap();
            let reader = ChangelogReader::new(&settings, "restore-test").unwrap();
            let dir = tempfile::tempdir().unwrap();
            let store = StateStore::open(dir.path(), DAY).unwrap();
            Fixture {
                reader,
                producer,
                store,
                _dir: dir,
                _mock: mock,
            }
        }

        fn produce(&self, key: &str, value: Option<Vec<u8>>) {
            let key = partition_key(1, key.as_bytes());
            let mut record: BaseRecord<'_, [u8], [u8]> =
                BaseRecord::to(TOPIC).partition(1).key(&key);
            if let Some(v) = &value {
                record = record.payload(v);
            }
            self.producer.send(record).map_err(|(e, _)| e).unwrap();
            self.producer.flush(Duration::from_secs(10)).unwrap();
        }

        fn restore(&self) -> anyhow::Result<Restored> {
            restore_store(&self.reader, &self.store, "app", Cf::Contact, 1, DAY)
        }

        fn get(&self, key: &str) -> Option<Vec<u8>> {
            self.store
                .get(Cf::Contact, &partition_key(1, key.as_bytes()))
                .unwrap()
        }
    }

    #[test]
    fn without_a_checkpoint_the_task_is_wiped_and_restored_in_full_then_only_the_tail() {
        let f = Fixture::new();
        f.produce("a", Some(encode(b"a1")));
        f.produce("b", Some(encode(b"b1")));
        f.produce("a", Some(encode(b"a2")));
        f.produce("b", None);
        // Local state of the task with no checkpoint, and another task's key.
        let put = |partition: i32, key: &str| crate::state::Write {
            cf: Cf::Contact,
            key: partition_key(partition, key.as_bytes()),
            value: Some(b"local".to_vec()),
        };
        f.store.write(&[put(1, "stale"), put(0, "other")]).unwrap();

        let full = f.restore().unwrap();
        assert_eq!(
            (full.wiped, full.from, full.to, full.records),
            (true, 0, 4, 4)
        );
        assert_eq!(f.get("a"), Some(b"a2".to_vec()));
        assert_eq!(f.get("b"), None, "a tombstone deletes");
        assert_eq!(f.get("stale"), None, "unchecked local state is not trusted");
        assert_eq!(
            f.store
                .get(Cf::Contact, &partition_key(0, b"other"))
                .unwrap(),
            Some(b"local".to_vec()),
            "another task's state is left alone"
        );
        assert_eq!(
            f.store
                .checkpoint(1, Cf::Contact)
                .unwrap()
                .unwrap()
                .next_offset,
            4
        );

        let again = f.restore().unwrap();
        assert_eq!((again.wiped, again.records), (false, 0));

        f.produce("c", Some(encode(b"c1")));
        let tail = f.restore().unwrap();
        assert_eq!(
            (tail.wiped, tail.from, tail.to, tail.records),
            (false, 4, 5, 1)
        );
        assert_eq!(f.get("c"), Some(b"c1".to_vec()));
        assert_eq!(f.get("a"), Some(b"a2".to_vec()));
    }

    #[test]
    fn a_checkpoint_older_than_the_tombstone_retention_or_past_the_end_is_not_used() {
        let f = Fixture::new();
        f.produce("a", Some(encode(b"a1")));
        f.restore().unwrap();
        f.produce("a", None);
        // Old enough that the tombstone above may have been compacted away.
        let old = Checkpoint {
            next_offset: 1,
            written_at: now_ms() - 2 * DAY.as_millis() as i64,
        };
        f.store.write(&[old.write(1, Cf::Contact)]).unwrap();
        let r = f.restore().unwrap();
        assert!(r.wiped);
        assert_eq!((r.from, r.records), (0, 2));
        assert_eq!(f.get("a"), None);

        // A checkpoint past the changelog's end (the topic was re-created).
        let ahead = Checkpoint {
            next_offset: 99,
            written_at: now_ms(),
        };
        f.store.write(&[ahead.write(1, Cf::Contact)]).unwrap();
        assert!(f.restore().unwrap().wiped);
    }

    #[test]
    fn a_record_of_an_unknown_layout_stops_the_restore_with_the_fix() {
        let f = Fixture::new();
        f.produce("a", Some(vec![7, 1, 2, 3]));
        let err = f.restore().unwrap_err().to_string();
        assert!(err.contains("layout 7"), "{err}");
        assert!(err.contains("changelog topics"), "{err}");
    }
}
