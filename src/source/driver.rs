//! The driver: receives the group consumer's records, buffers them in the input merge, and
//! hands each record the merge releases to the stream thread owning its task; pauses the
//! inputs when the stream threads stop taking records; applies assignment changes.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{counter, gauge};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::Message;
use tokio::sync::mpsc;

use super::assignment::{self, GroupContext, InputPartitions};
use super::merge::Merge;
use super::record::{Received, Work};
use crate::kafka::context::{client_error, is_fatal};
use crate::kafka::KafkaSettings;
use crate::metrics as m;
use crate::topology::{Guarantee, Topology};

/// How long the merge waits at most for an empty input known to be behind (not fetched yet, or
/// fetched past what we received): its records exist, and going on without them decides the
/// other input's records out of order (Kafka Streams waits without a bound, KIP-695). The
/// bound is a safety net against an input that looks behind for good; the time the inputs are
/// paused does not count. Raised to `max_task_idle` if that is longer.
const MAX_WAIT_BEHIND: Duration = Duration::from_secs(60);
/// How often to look again at tasks waiting on an input that is behind: it may catch up
/// without delivering a record (an empty partition's first fetch).
const RECHECK_BEHIND: Duration = Duration::from_millis(20);
/// How long a stream thread may refuse work while the buffer is full before the driver pauses
/// every input partition and polls the consumer again: a thread that takes work within this
/// is working through a backlog (no pause, so nothing librdkafka prefetched is dropped and
/// fetched again); one that does not is blocked (a registry outage, a long restore), and the
/// group must still see us poll within `max.poll.interval.ms`.
const FULL_BEFORE_PAUSE: Duration = Duration::from_secs(2);
/// The group consumer of the topology's inputs, subscribed, and the partitions it follows.
pub fn subscribe(
    kafka: &KafkaSettings,
    topology: &Topology,
    static_member: Option<&str>,
    client_id: &str,
) -> anyhow::Result<(Arc<StreamConsumer<GroupContext>>, InputPartitions)> {
    let (partitions, context) = InputPartitions::new(input_topics(topology))?;
    // Under exactly-once the offsets are committed by the stream threads' transactions only.
    let exactly_once = topology.processing.guarantee == Guarantee::ExactlyOnce;
    let interval = topology
        .processing
        .commit_interval
        .as_millis()
        .max(1)
        .to_string();
    let stats_interval = crate::metrics::STATISTICS_INTERVAL_MS.to_string();
    let mut config = vec![
        ("group.id", topology.application_id.as_str()),
        (
            "enable.auto.commit",
            if exactly_once { "false" } else { "true" },
        ),
        ("auto.commit.interval.ms", interval.as_str()),
        ("enable.auto.offset.store", "false"),
        ("auto.offset.reset", "earliest"),
        ("isolation.level", "read_committed"),
        // Both inputs have the same partition count and every member subscribes to
        // both, so range gives each member whole tasks (checked on every assignment).
        ("partition.assignment.strategy", "range"),
        // Consumer lag per partition, as a metric.
        ("statistics.interval.ms", &stats_interval),
    ];
    if let Some(id) = static_member {
        config.push(("group.instance.id", id));
    }
    let consumer: Arc<StreamConsumer<GroupContext>> = Arc::new(
        kafka
            .consumer_config(&config)
            // Whatever --kafka says: standby replicas tell the instances apart by it.
            .set("client.id", client_id)
            .create_with_context(context)
            .map_err(|e| anyhow::anyhow!("cannot create the input consumer: {e}"))?,
    );
    let topics = input_topics(topology);
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    Ok((consumer, partitions))
}

/// The topology's keyed inputs by merge input index: contacts 0 (first on timestamp ties),
/// engagements 1, and acknowledgements 2 when SLAs are tracked.
fn input_topics(topology: &Topology) -> Vec<String> {
    let mut topics = vec![topology.contacts.clone(), topology.engagements.clone()];
    topics.extend(topology.acks.clone());
    topics
}

pub struct Driver {
    consumer: Arc<StreamConsumer<GroupContext>>,
    /// The stream threads' inputs; task (partition) `p` goes to `workers[p % len]`.
    workers: Vec<mpsc::Sender<Work>>,
    /// Bounds the records buffered in the merge.
    max_buffered: usize,
    /// Records received but not processed yet, released in timestamp order per task.
    merge: Merge<Received>,
    /// The input topics by merge input index (contacts 0, first on timestamp ties;
    /// engagements 1) and their partitions assigned to us.
    partitions: InputPartitions,
    /// Work for a stream thread whose queue is full, and that thread.
    held: Option<(usize, Work)>,
    /// Tasks assigned whose restore is not handed to their stream thread yet (it goes before
    /// any of their records).
    restores: VecDeque<i32>,
    /// Since when the buffer has been full while a stream thread refuses work, if it is.
    stuck_since: Option<Instant>,
    /// Whether every input partition is paused (stuck for longer than [`FULL_BEFORE_PAUSE`]).
    paused: bool,
    /// Whether the buffer is full while some task waits for an empty input that is behind.
    starving: bool,
    /// The partitions holding buffered records, paused while starving so that the records a
    /// task waits for can be received (they may sit in the client behind those).
    made_room: Vec<(usize, i32)>,
}

/// The input merge of `inputs` inputs: waits `max_task_idle` for an empty contacts or
/// engagements input, up to [`MAX_WAIT_BEHIND`] for one known to be behind, never with `0s`;
/// never for acknowledgements (input 2), which refer to decisions made long before.
fn merge_for(inputs: usize, max_task_idle: Duration) -> Merge<Received> {
    let behind = if max_task_idle.is_zero() {
        Duration::ZERO
    } else {
        MAX_WAIT_BEHIND
    };
    let merge = Merge::new(inputs, max_task_idle).wait_longer_when_behind(behind);
    if inputs > 2 {
        merge.never_wait_for(2)
    } else {
        merge
    }
}

impl Driver {
    /// A driver feeding `workers` (task `p` goes to `workers[p % len]`), buffering at most
    /// `max_buffered` records.
    pub fn new(
        consumer: Arc<StreamConsumer<GroupContext>>,
        workers: Vec<mpsc::Sender<Work>>,
        partitions: InputPartitions,
        max_buffered: usize,
        max_task_idle: Duration,
    ) -> Driver {
        Driver {
            consumer,
            workers,
            max_buffered,
            merge: merge_for(partitions.inputs(), max_task_idle),
            partitions,
            held: None,
            restores: VecDeque::new(),
            stuck_since: None,
            paused: false,
            starving: false,
            made_room: Vec::new(),
        }
    }

    /// Receives, merges and dispatches records until an error. While the buffer is full the
    /// driver stops receiving (unless a task waits for an input behind: see
    /// [`Driver::make_room_if_starving`]); if a stream thread refuses work all the while for
    /// [`FULL_BEFORE_PAUSE`] (blocked, say on a registry outage) it pauses every input
    /// partition and polls the consumer again, which keeps the group membership
    /// (`max.poll.interval.ms`) and serves rebalances, until that thread takes work. The
    /// merge's waits start afresh then: nothing could be received meanwhile.
    pub async fn consume(&mut self) -> anyhow::Result<()> {
        loop {
            self.apply_rebalances()?;
            self.make_room_if_starving();
            self.dispatch_ready().await?;
            let room = self.merge.len() < self.max_buffered;
            let now = Instant::now();
            let stuck_since = if room || self.held.is_none() {
                self.stuck_since = None;
                if self.paused {
                    self.pause_all(false);
                    self.merge.restart_waits(now);
                }
                None
            } else {
                Some(*self.stuck_since.get_or_insert(now))
            };
            let pause_at = stuck_since.map(|since| since + FULL_BEFORE_PAUSE);
            if !self.paused && pause_at.is_some_and(|at| at <= now) {
                self.pause_all(true);
            }
            let receive = room || self.paused || self.starving;
            // Nothing may be processed now: every task with records waits for an empty input,
            // or the stream thread of the next record is full. Timer waits end by `wake`; a
            // full thread by its permit; an empty input by a record.
            let mut wake = self.merge.next_deadline();
            if self.merge.waiting_behind() {
                let recheck = Instant::now() + RECHECK_BEHIND;
                wake = Some(wake.map_or(recheck, |w| w.min(recheck)));
            }
            if !self.paused {
                if let Some(at) = pause_at {
                    wake = Some(wake.map_or(at, |w| w.min(at)));
                }
            }
            let full_worker = self.held.as_ref().map(|(w, _)| self.workers[*w].clone());
            tokio::select! {
                biased;
                permit = reserve(full_worker.as_ref()), if full_worker.is_some() => {
                    let Ok(permit) = permit else {
                        anyhow::bail!("a stream thread stopped");
                    };
                    if let Some((_, received)) = self.held.take() {
                        permit.send(received);
                    }
                }
                message = self.consumer.recv(), if receive => match message {
                    // (While paused, a record fetched before the pause may still come: it is
                    // buffered, one over the bound.)
                    Ok(message) => {
                        let message = message.detach();
                        // A revocation handled inside this recv() concerns only records
                        // received before it: forget those before buffering this one.
                        self.apply_rebalances()?;
                        self.buffer(message)?;
                    }
                    Err(e) if is_fatal(&e) => {
                        anyhow::bail!("fatal error of the input consumer: {e}")
                    }
                    Err(e) => client_error("consumer", &e, "consume"),
                },
                // An assignment change handled inside recv() while no record comes.
                () = self.partitions.changed() => {}
                () = sleep_until(wake), if wake.is_some() => {}
            }
        }
    }

    /// Hands every pending restore, then every record the merge releases now, to its stream
    /// thread, until one's queue is full (that work is held until it has room).
    async fn dispatch_ready(&mut self) -> anyhow::Result<()> {
        loop {
            let threads = self.workers.len();
            let (worker, work) = match self.held.take() {
                Some(held) => held,
                None => match self.restores.pop_front() {
                    Some(task) => (task.unsigned_abs() as usize % threads, Work::Restore(task)),
                    None => match self.pop_ready() {
                        Some(received) => {
                            self.report_enforced();
                            let worker =
                                received.message.partition().unsigned_abs() as usize % threads;
                            (worker, Work::Record(received))
                        }
                        None => return Ok(()),
                    },
                },
            };
            match self.workers[worker].try_send(work) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(work)) => {
                    self.held = Some((worker, work));
                    return Ok(());
                }
                // Its own error is what the run reports.
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    anyhow::bail!("a stream thread stopped")
                }
            }
            gauge!(m::BUFFERED).set(self.merge.len() as f64);
            // A long run of ready records must still let the shutdown signal in.
            tokio::task::consume_budget().await;
        }
    }

    /// The next record in merge order, if one may be processed now. An empty input that is
    /// behind is waited for longer, up to [`MAX_WAIT_BEHIND`], also when the buffer is full
    /// (its records are made room for: [`Driver::make_room_if_starving`]).
    fn pop_ready(&mut self) -> Option<Received> {
        let Driver {
            merge,
            partitions,
            consumer,
            ..
        } = self;
        merge.pop_ready_with(Instant::now(), |partition, input| {
            partitions.behind(consumer, input, partition)
        })
    }

    /// Counts and logs the merge's waits that ran out: a task went on without one of its
    /// inputs, so its records may be decided out of timestamp order.
    fn report_enforced(&mut self) {
        for e in self.merge.take_enforced() {
            let topic = self.partitions.topic(e.input).unwrap_or("?").to_string();
            counter!(m::ENFORCED_PROCESSING, "input" => topic.clone(), "behind" => e.behind.to_string())
                .increment(1);
            if e.behind {
                tracing::warn!(
                    partition = e.partition,
                    input = %topic,
                    waited_ms = e.waited.as_millis() as u64,
                    "a task goes on without an input the broker holds records of (enforced \
                     processing): its records may be decided out of timestamp order"
                );
            } else {
                tracing::debug!(
                    partition = e.partition,
                    input = %topic,
                    waited_ms = e.waited.as_millis() as u64,
                    "a task goes on without an empty input (enforced processing)"
                );
            }
        }
    }

    /// While the buffer is full, a task may wait for an empty input whose records the broker
    /// holds (behind): they may sit in the client's queue behind records we cannot take. Then
    /// the partitions holding buffered records are paused (librdkafka drops what it
    /// prefetched of them and fetches it again on resume), and receiving goes on, so that
    /// only the waited-for partitions deliver; once there is room they are resumed. Without
    /// this the task would give up waiting and process the other input first: a backlog of
    /// engagements would overtake their contacts.
    fn make_room_if_starving(&mut self) {
        let full = self.merge.len() >= self.max_buffered;
        self.starving =
            full && !self.paused
                && self.merge.starved().into_iter().any(|(partition, input)| {
                    self.partitions.behind(&self.consumer, input, partition)
                });
        if !full && !self.made_room.is_empty() {
            let made_room = std::mem::take(&mut self.made_room);
            self.set_paused(&made_room, false);
        }
        if self.starving && self.made_room.is_empty() {
            let buffered: Vec<(usize, i32)> = self
                .merge
                .buffered()
                .into_iter()
                .map(|(partition, input)| (input, partition))
                .collect();
            self.set_paused(&buffered, true);
            tracing::debug!(
                partitions = buffered.len(),
                "buffer full while a task waits for a partition behind: pausing the others"
            );
            self.made_room = buffered;
        }
    }

    /// Pauses or resumes some input partitions.
    fn set_paused(&self, which: &[(usize, i32)], pause: bool) {
        let mut tpl = rdkafka::TopicPartitionList::new();
        for (input, partition) in which {
            if let Some(topic) = self.partitions.topic(*input) {
                tpl.add_partition(topic, *partition);
            }
        }
        self.pause_list(&tpl, pause);
    }

    /// Pauses or resumes the partitions of `tpl`; whether that worked (a failure is logged).
    fn pause_list(&self, tpl: &rdkafka::TopicPartitionList, pause: bool) -> bool {
        let result = if pause {
            self.consumer.pause(tpl)
        } else {
            self.consumer.resume(tpl)
        };
        if let Err(e) = &result {
            tracing::warn!(error = %e, pause, "pause/resume of input partitions failed");
        }
        result.is_ok()
    }

    /// Pauses (or resumes) fetching every assigned input partition.
    fn pause_all(&mut self, pause: bool) {
        let tpl = match self.consumer.assignment() {
            Ok(tpl) => tpl,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the assignment to pause or resume it");
                return;
            }
        };
        if !self.pause_list(&tpl, pause) {
            return;
        }
        if pause {
            tracing::info!(
                buffered = self.merge.len(),
                "the stream threads are not taking records: input partitions paused, polling on"
            );
        } else {
            tracing::info!("input partitions resumed");
        }
        self.paused = pause;
        self.made_room.clear();
        gauge!(m::CONSUMER_PAUSED).set(if pause { 1.0 } else { 0.0 });
    }

    /// Puts a received record into the merge: its input from its topic, its position from the
    /// Kafka record timestamp (CreateTime, like Kafka Streams' default extractor).
    fn buffer(&mut self, message: OwnedMessage) -> anyhow::Result<()> {
        let Some(input) = self.partitions.input(message.topic()) else {
            anyhow::bail!("a record of {}, which is not an input", message.topic());
        };
        let partition = message.partition();
        tracing::trace!(
            topic = message.topic(),
            partition,
            offset = message.offset(),
            "received"
        );
        self.partitions.received(input, partition, message.offset());
        let timestamp = message.timestamp().to_millis();
        let received = Received {
            message,
            read_at: Instant::now(),
        };
        self.merge.push(partition, input, timestamp, received);
        gauge!(m::BUFFERED).set(self.merge.len() as f64);
        Ok(())
    }

    /// Applies assignment changes. The buffered records of revoked partitions are dropped:
    /// they are not ours to process any more (their offsets were never stored, so their next
    /// owner, maybe us again, reads them from the last commit). Records of a revoked
    /// partition already processed are unaffected: storing their offset fails (librdkafka
    /// refuses offsets of unassigned partitions) and is only logged. Newly assigned partitions
    /// start fetching. An assignment that splits a task fails the run.
    fn apply_rebalances(&mut self) -> anyhow::Result<()> {
        let assignment::Rebalanced { revoked, assigned } = self.partitions.apply_rebalances();
        if self.partitions.fence().failed() {
            anyhow::bail!(
                "a revocation could not complete the work in flight in time; stopping so that \
                 the tasks' next owners do not race with it (the uncompleted records are \
                 replayed)"
            );
        }
        // Work held for a stream thread that belongs to a revoked task is not ours any more.
        if let Some((_, Work::Record(received))) = &self.held {
            let partition = received.message.partition();
            if revoked.iter().any(|(_, p)| *p == partition) {
                self.held = None;
            }
        }
        for &(input, partition) in &revoked {
            if input == 0 {
                self.restores.retain(|task| *task != partition);
            }
        }
        self.made_room.retain(|p| !revoked.contains(p));
        for (input, partition) in revoked {
            let dropped = self.merge.remove(partition, input);
            if dropped > 0 {
                tracing::info!(
                    input,
                    partition,
                    dropped,
                    "partition revoked: its buffered records are left to its next owner"
                );
                gauge!(m::BUFFERED).set(self.merge.len() as f64);
            }
        }
        if assigned.is_empty() {
            return Ok(());
        }
        // A task is its contacts partition and its engagements partition (checked below).
        self.restores.extend(
            assigned
                .iter()
                .filter(|(input, _)| *input == 0)
                .map(|(_, partition)| *partition),
        );
        // Newly assigned partitions start fetching; while paused, they must not.
        if self.paused {
            self.pause_all(true);
        }
        let unpaired = self.partitions.unpaired();
        if !unpaired.is_empty() {
            let names: Vec<String> = unpaired.iter().map(|(t, p)| format!("{t}:{p}")).collect();
            anyhow::bail!(
                "the group assigned this instance only half of some tasks: {} went to another \
                 member. Every member of the group must run leadflow with the same input topics \
                 (is another application using the group id?)",
                names.join(", ")
            );
        }
        Ok(())
    }
}

/// A permit to send to `worker` (never resolves without one: the branch is disabled then).
async fn reserve(
    worker: Option<&mpsc::Sender<Work>>,
) -> Result<mpsc::Permit<'_, Work>, mpsc::error::SendError<()>> {
    match worker {
        Some(w) => w.reserve().await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `deadline`, or forever without one (the select branch is disabled then).
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
