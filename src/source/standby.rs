//! Standby replicas (`state.standby_replicas`, Kafka Streams' standby tasks): an instance
//! keeps warm copies of tasks it does not own by tailing their changelogs into its local
//! stores, with checkpoints, so that when such a task moves to it the restore reads only the
//! tail.
//!
//! Which instance keeps a standby of which task is decided without an assignor of our own:
//! every instance reads the group's members and their assignments from the coordinator, and
//! for each task ranks the members other than its owner by a hash of (member, task)
//! (rendezvous hashing); the first `standby_replicas` of them keep it. Members are told
//! apart by their `client.id` (`leadflow-<instance>`), so every instance computes the same
//! answer.
//!
//! A task this instance owns is never written by the tailer: the tailer applies each batch
//! under a lock and skips the tasks claimed; a restore takes the same lock to claim its task
//! ([`Standby::claim`]) before it reads the checkpoint the tailer left, and the claim lasts
//! until the task is revoked ([`Standby::release`], once the revocation completed its work).
//! The tailer has clients of its own and never calls the group consumer.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metrics::{counter, gauge};
use rdkafka::consumer::Consumer;
use rdkafka::{Message, Offset, TopicPartitionList};

use super::restore::{starting_point, ChangelogReader};
use crate::kafka::context::{client_error, is_fatal};
use crate::kafka::read::snapshot_ends;
use crate::kafka::KafkaSettings;
use crate::metrics as m;
use crate::state::changelog::{self, At, Checkpoint};
use crate::state::{Cf, StateStore, Write};
use crate::time::now_ms;

/// How often the group's assignment is read again.
const MEMBERSHIP_INTERVAL: Duration = Duration::from_secs(3);
/// Records applied per write at most, and how long a record may wait to be applied.
const BATCH: usize = 5_000;
const FLUSH_INTERVAL: Duration = Duration::from_millis(500);

/// The group consumer's `client.id`: how the other instances recognise this one.
pub fn client_id(instance: &str) -> String {
    format!("leadflow-{instance}")
}

/// What the tailer and the restores share.
#[derive(Default)]
pub struct Standby {
    /// Tasks claimed by a restore (owned by this instance) until they are revoked.
    claimed: Mutex<HashSet<i32>>,
}

impl Standby {
    /// Called by a restore before it reads task `task`'s checkpoints: from now on the
    /// tailer does not write the task (it waits for a batch being applied to end).
    pub fn claim(&self, task: i32) {
        self.claimed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(task);
    }

    /// Called once revoked tasks' work is completed: the tailer may copy them again.
    pub fn release(&self, tasks: &[i32]) {
        let mut claimed = self.claimed.lock().unwrap_or_else(|e| e.into_inner());
        for task in tasks {
            claimed.remove(task);
        }
    }
}

/// A member of the group and the tasks it owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub client_id: String,
    pub tasks: HashSet<i32>,
}

/// The tasks `me` keeps a standby of: for each of the `tasks` tasks with a known owner, the
/// `replicas` members other than the owner that rank first by hash(member, task).
pub fn standby_tasks(members: &[Member], me: &str, tasks: i32, replicas: usize) -> HashSet<i32> {
    let mut out = HashSet::new();
    for task in 0..tasks {
        let Some(owner) = members.iter().find(|m| m.tasks.contains(&task)) else {
            continue;
        };
        let mut others: Vec<&Member> = members
            .iter()
            .filter(|m| m.client_id != owner.client_id)
            .collect();
        others.sort_by_key(|m| std::cmp::Reverse(fnv1a(&m.client_id, task)));
        others.dedup_by(|a, b| a.client_id == b.client_id);
        if others.iter().take(replicas).any(|m| m.client_id == me) {
            out.insert(task);
        }
    }
    out
}

fn fnv1a(name: &str, task: i32) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes().chain(task.to_be_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The partitions of `topic` in a member's assignment (Kafka's consumer protocol:
/// version, then topics with their partitions, then user data).
pub fn assigned_partitions(assignment: &[u8], topic: &str) -> Option<HashSet<i32>> {
    let mut r = Reader(assignment);
    r.i16()?;
    let mut out = HashSet::new();
    for _ in 0..r.i32()?.max(0) {
        let name_len = r.i16()?.max(0) as usize;
        let mine = r.take(name_len)? == topic.as_bytes();
        let count = r.i32()?.max(0);
        for _ in 0..count {
            let p = r.i32()?;
            if mine {
                out.insert(p);
            }
        }
    }
    Some(out)
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
}

/// Tails the changelogs of this instance's standby tasks into the local stores (a thread of
/// its own; it ends when `stop` is set).
pub struct Tailer {
    pub settings: KafkaSettings,
    pub application_id: String,
    pub store: Arc<StateStore>,
    pub standby: Arc<Standby>,
    pub me: String,
    pub contacts_topic: String,
    pub tasks: i32,
    pub replicas: usize,
    pub tombstone_retention: Duration,
    pub stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Tailer {
    pub fn run(self) -> anyhow::Result<()> {
        let reader =
            ChangelogReader::new(&self.settings, &format!("{}-standby", self.application_id))?;
        let topics: HashMap<String, Cf> = changelog::STORES
            .iter()
            .map(|cf| (changelog::topic(&self.application_id, *cf), *cf))
            .collect();
        let mut tailing: HashSet<i32> = HashSet::new();
        let mut next_membership = Instant::now();
        let mut pending: HashMap<(Cf, i32), (Vec<Write>, i64)> = HashMap::new();
        let mut pending_records = 0usize;
        let mut last_flush = Instant::now();
        while !self.stop.load(std::sync::atomic::Ordering::Acquire) {
            if Instant::now() >= next_membership {
                next_membership = Instant::now() + MEMBERSHIP_INTERVAL;
                if let Some(wanted) = self.wanted(&reader) {
                    if wanted != tailing {
                        self.flush(&reader, &mut pending, &topics)?;
                        pending_records = 0;
                        self.tail(&reader, &wanted)?;
                        tracing::info!(tasks = ?sorted(&wanted), "standby tasks");
                        gauge!(m::STANDBY_TASKS).set(wanted.len() as f64);
                        tailing = wanted;
                    }
                }
            }
            if tailing.is_empty() {
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            match reader.records.poll(Duration::from_millis(100)) {
                None => {}
                Some(Err(e)) if is_fatal(&e) => return Err(e.into()),
                Some(Err(e)) => client_error("standby", &e, "standby"),
                Some(Ok(message)) => {
                    let Some(&cf) = topics.get(message.topic()) else {
                        continue;
                    };
                    let at = At {
                        topic: message.topic(),
                        partition: message.partition(),
                        offset: message.offset(),
                    };
                    let write = changelog::decode(cf, at, message.key(), message.payload())?;
                    let slot = pending
                        .entry((cf, message.partition()))
                        .or_insert_with(|| (Vec::new(), 0));
                    slot.0.push(write);
                    slot.1 = message.offset() + 1;
                    pending_records += 1;
                }
            }
            if pending_records >= BATCH || last_flush.elapsed() >= FLUSH_INTERVAL {
                self.flush(&reader, &mut pending, &topics)?;
                pending_records = 0;
                last_flush = Instant::now();
            }
        }
        self.flush(&reader, &mut pending, &topics)?;
        Ok(())
    }

    /// The standby tasks this instance should keep now, from the group's members (None when
    /// the coordinator cannot say, or a rebalance is under way).
    fn wanted(&self, reader: &ChangelogReader) -> Option<HashSet<i32>> {
        let groups = match reader
            .ends
            .fetch_group_list(Some(&self.application_id), Duration::from_secs(5))
        {
            Ok(g) => g,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the group's members");
                return None;
            }
        };
        let info = groups
            .groups()
            .iter()
            .find(|g| g.name() == self.application_id)?;
        if info.state() != "Stable" {
            return None;
        }
        let members: Vec<Member> = info
            .members()
            .iter()
            .map(|m| Member {
                client_id: m.client_id().to_string(),
                tasks: m
                    .assignment()
                    .and_then(|a| assigned_partitions(a, &self.contacts_topic))
                    .unwrap_or_default(),
            })
            .collect();
        Some(standby_tasks(&members, &self.me, self.tasks, self.replicas))
    }

    /// Assigns the restore-style reader to the changelogs of `tasks`, each from its local
    /// checkpoint (or from the start of a wiped task).
    fn tail(&self, reader: &ChangelogReader, tasks: &HashSet<i32>) -> anyhow::Result<()> {
        let mut assignment = TopicPartitionList::new();
        let claimed = self
            .standby
            .claimed
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for &task in tasks {
            if claimed.contains(&task) {
                continue;
            }
            for cf in changelog::STORES {
                let topic = changelog::topic(&self.application_id, cf);
                let ends = snapshot_ends(&reader.ends, &topic, &[task])?
                    .remove(&task)
                    .unwrap_or((0, 0));
                let (from, _) =
                    starting_point(&self.store, cf, task, ends, self.tombstone_retention)?;
                assignment.add_partition_offset(&topic, task, Offset::Offset(from))?;
            }
        }
        drop(claimed);
        reader.records.assign(&assignment)?;
        Ok(())
    }

    /// Applies what was read, with the new checkpoints, except for tasks this instance owns
    /// or is restoring. A task whose reader went past its last record (transaction markers)
    /// gets its checkpoint moved there too.
    fn flush(
        &self,
        reader: &ChangelogReader,
        pending: &mut HashMap<(Cf, i32), (Vec<Write>, i64)>,
        topics: &HashMap<String, Cf>,
    ) -> anyhow::Result<()> {
        let positions = reader.records.position().ok();
        let claimed = self
            .standby
            .claimed
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut next: HashMap<(Cf, i32), i64> = pending
            .iter()
            .map(|(key, (_, next))| (*key, *next))
            .collect();
        if let Some(positions) = &positions {
            for e in positions.elements() {
                if let (Some(&cf), Offset::Offset(at)) = (topics.get(e.topic()), e.offset()) {
                    let slot = next.entry((cf, e.partition())).or_insert(at);
                    *slot = (*slot).max(at);
                }
            }
        }
        let now = now_ms();
        let mut writes: Vec<Write> = Vec::new();
        let mut applied = 0u64;
        for ((cf, task), next_offset) in next {
            if claimed.contains(&task) {
                continue;
            }
            let known = self.store.checkpoint(task, cf)?.map(|c| c.next_offset);
            let records = pending.remove(&(cf, task)).map(|p| p.0).unwrap_or_default();
            if records.is_empty() && known == Some(next_offset) {
                continue;
            }
            applied += records.len() as u64;
            writes.extend(records);
            writes.push(
                Checkpoint {
                    next_offset,
                    written_at: now,
                }
                .write(task, cf),
            );
        }
        pending.clear();
        if !writes.is_empty() {
            self.store.write(&writes)?;
        }
        drop(claimed);
        counter!(m::STANDBY_RECORDS).increment(applied);
        Ok(())
    }
}

fn sorted(tasks: &HashSet<i32>) -> Vec<i32> {
    let mut v: Vec<i32> = tasks.iter().copied().collect();
    v.sort_unstable();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, tasks: &[i32]) -> Member {
        Member {
            client_id: name.into(),
            tasks: tasks.iter().copied().collect(),
        }
    }

    #[test]
    fn every_task_gets_its_replicas_on_members_other_than_its_owner() {
        let members = [
            member("leadflow-a", &[0, 1]),
            member("leadflow-b", &[2, 3]),
            member("leadflow-c", &[4, 5]),
        ];
        for replicas in [1, 2] {
            let mut count: HashMap<i32, usize> = HashMap::new();
            for m in &members {
                let mine = standby_tasks(&members, &m.client_id, 6, replicas);
                assert!(
                    mine.is_disjoint(&m.tasks),
                    "{} keeps a standby of its own task",
                    m.client_id
                );
                for t in mine {
                    *count.entry(t).or_default() += 1;
                }
            }
            assert_eq!(count.len(), 6);
            assert!(count.values().all(|n| *n == replicas), "{count:?}");
        }
        // Every instance computes the same answer: the ranking does not depend on the order
        // members are listed in.
        let mut reversed = members.clone();
        reversed.reverse();
        assert_eq!(
            standby_tasks(&members, "leadflow-a", 6, 1),
            standby_tasks(&reversed, "leadflow-a", 6, 1)
        );
        // A task without an owner (a rebalance) has no standby.
        let alone = [member("leadflow-a", &[0]), member("leadflow-b", &[])];
        assert_eq!(
            standby_tasks(&alone, "leadflow-b", 2, 1),
            HashSet::from([0])
        );
    }

    #[test]
    fn assignments_are_read_in_the_consumer_protocol() {
        let mut bytes = vec![0, 0, 0, 0, 0, 2];
        for (topic, parts) in [
            ("contacts", &[1i32, 4][..]),
            ("engagements", &[1i32, 4][..]),
        ] {
            bytes.extend((topic.len() as i16).to_be_bytes());
            bytes.extend(topic.as_bytes());
            bytes.extend((parts.len() as i32).to_be_bytes());
            for p in parts {
                bytes.extend(p.to_be_bytes());
            }
        }
        bytes.extend((-1i32).to_be_bytes());
        assert_eq!(
            assigned_partitions(&bytes, "contacts"),
            Some(HashSet::from([1, 4]))
        );
        assert_eq!(assigned_partitions(&bytes[..9], "contacts"), None);
    }
}
