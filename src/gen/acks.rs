//! `leadflow gen --acks FRACTION --ack-delay DURATION`: a delivery worker for demos and load
//! tests. It reads the routed leads decided while it runs (every priority's topic, from their
//! ends at start-up) and acknowledges a share of them on `leads.acks` after a random delay:
//! some within their SLA, some after it, some never, so that the processor's SLA tracking has
//! breaches and escalations to show.
//!
//! What happens to a decision is a function of the seed and its `decision_id` only: the same
//! decision, read twice (a replay), gets the same acknowledgement with the same `event_id`.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use sha2::{Digest, Sha256};

use crate::codec::{decode, unframe, Encoder, RegistryClient, SchemaKind};
use crate::kafka::context::Logged;
use crate::model::{Envelope, LeadAck, LeadAckEvent, RoutedLead};
use crate::topics;

/// How the generator acknowledges decisions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AckSpec {
    /// Share of the decisions acknowledged at all (0 to 1).
    pub fraction: f64,
    /// Mean delay from a decision to its acknowledgement: delays are exponential, capped at
    /// five times this.
    pub mean_delay: Duration,
    /// After the last event is produced, stop once no decision arrived for this long and
    /// every acknowledgement due is sent.
    pub idle: Duration,
}

impl AckSpec {
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.fraction) {
            return Err(format!(
                "--acks {} is not a fraction between 0 and 1",
                self.fraction
            ));
        }
        if self.mean_delay.is_zero() && self.fraction > 0.0 {
            return Err("--ack-delay must be more than 0s".into());
        }
        Ok(())
    }

    /// What the generator does with `decision_id`: `None` never acknowledges it, else the
    /// delay after `routed_at` and the action (`accepted` or `contacted`).
    pub fn plan(&self, seed: u64, decision_id: &str) -> Option<(Duration, &'static str)> {
        let digest = Sha256::new()
            .chain_update(seed.to_be_bytes())
            .chain_update(decision_id.as_bytes())
            .finalize();
        let unit = |i: usize| {
            let bytes: [u8; 8] = digest[i * 8..i * 8 + 8].try_into().expect("8 bytes");
            (u64::from_be_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
        };
        if unit(0) >= self.fraction {
            return None;
        }
        let mean = self.mean_delay.as_secs_f64();
        let delay = (-mean * (1.0 - unit(1)).ln()).min(5.0 * mean);
        let action = if unit(2) < 0.7 {
            "accepted"
        } else {
            "contacted"
        };
        Some((Duration::from_secs_f64(delay), action))
    }
}

/// What the acknowledging side did, per priority.
#[derive(Debug, Default, Clone)]
pub struct AckSummary {
    /// Decisions read, by priority (escalations included).
    pub decisions: BTreeMap<String, u64>,
    /// Acknowledgements sent by their decision's deadline, by priority.
    pub in_time: BTreeMap<String, u64>,
    /// Acknowledgements sent after their decision's deadline, by priority.
    pub late: BTreeMap<String, u64>,
    /// Decisions never acknowledged, by priority.
    pub never: BTreeMap<String, u64>,
}

/// An acknowledgement waiting for its time.
struct Due {
    at_ms: i64,
    decision: RoutedLead,
    action: &'static str,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.at_ms == other.at_ms && self.decision.decision_id == other.decision.decision_id
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at_ms, &self.decision.decision_id).cmp(&(other.at_ms, &other.decision.decision_id))
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The current end of every partition of `topics`. Topics just created may not have a
/// leader yet: their metadata is asked for again for up to 30 s.
fn ends_of(
    consumer: &StreamConsumer<Logged>,
    topics: &[String],
) -> anyhow::Result<TopicPartitionList> {
    let timeout = Duration::from_secs(10);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut delays = crate::retry::backoff();
    loop {
        let attempt = || -> anyhow::Result<TopicPartitionList> {
            let mut assignment = TopicPartitionList::new();
            for topic in topics {
                let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
                let partitions = metadata
                    .topics()
                    .first()
                    .map(|t| t.partitions().len())
                    .unwrap_or(0);
                anyhow::ensure!(
                    partitions > 0,
                    "{topic} does not exist: create the topics first (leadflow topics create)"
                );
                for p in 0..partitions as i32 {
                    let (_, high) = consumer.fetch_watermarks(topic, p, timeout)?;
                    assignment.add_partition_offset(topic, p, Offset::Offset(high))?;
                }
            }
            Ok(assignment)
        };
        match attempt() {
            Ok(assignment) => return Ok(assignment),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "the routed topics' ends are not known yet; asking again");
                std::thread::sleep(delays.next().unwrap_or(Duration::from_secs(1)));
            }
            Err(e) => return Err(e.context("cannot find the ends of the routed topics")),
        }
    }
}

/// The acknowledging side of a run: reads decisions from the routed topics' ends as they were
/// when it was created.
pub struct Acker {
    spec: AckSpec,
    seed: u64,
    consumer: StreamConsumer<Logged>,
    registry: RegistryClient,
    encoder: Encoder,
    acks_topic: String,
}

impl Acker {
    /// Positions a reader at the end of every routed topic (`leads.routed.p0` to `p2`) and
    /// registers the acknowledgement schema.
    pub async fn new(config: &super::GenConfig, spec: AckSpec) -> anyhow::Result<Acker> {
        spec.validate().map_err(anyhow::Error::msg)?;
        let registry = RegistryClient::with_config(&config.registry)?;
        let acks_topic = topics::with_prefix(&config.topic_prefix, topics::ACKS);
        let subject = topics::value_subject(&acks_topic);
        let deadline = Instant::now() + config.registry_wait;
        let id = crate::codec::registry_client::retry_transient(deadline, || {
            registry.register(&subject, SchemaKind::LeadAckEvent.source())
        })
        .await
        .map_err(|e| anyhow::anyhow!("cannot register schema for {subject}: {e}"))?;
        let encoder = Encoder::new(SchemaKind::LeadAckEvent, id)?;
        let consumer: StreamConsumer<Logged> = config
            .kafka
            .consumer_config(&[
                ("group.id", "leadflow-gen-acks"),
                ("enable.auto.commit", "false"),
                ("isolation.level", "read_committed"),
            ])
            .create_with_context(Logged::new("reader"))
            .map_err(|e| anyhow::anyhow!("cannot create the decision reader: {e}"))?;
        let routed: Vec<String> = [topics::ROUTED_P0, topics::ROUTED_P1, topics::ROUTED_P2]
            .iter()
            .map(|t| topics::with_prefix(&config.topic_prefix, t))
            .collect();
        let consumer = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let assignment = ends_of(&consumer, &routed)?;
            consumer.assign(&assignment)?;
            Ok(consumer)
        })
        .await??;
        Ok(Acker {
            spec,
            seed: config.seed,
            consumer,
            registry,
            encoder,
            acks_topic,
        })
    }

    /// Acknowledges decisions as they come, until `events_done` is set, no decision came for
    /// [`AckSpec::idle`] and nothing is due any more.
    pub async fn run(
        self,
        producer: rdkafka::producer::FutureProducer<Logged>,
        mut events_done: tokio::sync::watch::Receiver<bool>,
        progress: bool,
    ) -> anyhow::Result<AckSummary> {
        let mut summary = AckSummary::default();
        let mut due: BinaryHeap<Reverse<Due>> = BinaryHeap::new();
        let mut last_decision = Instant::now();
        let mut last_progress = Instant::now();
        let mut sent = 0u64;
        let mut sender = super::Sender {
            producer,
            in_flight: std::collections::VecDeque::new(),
        };
        loop {
            let done = *events_done.borrow();
            if done && due.is_empty() && last_decision.elapsed() >= self.spec.idle {
                break;
            }
            let next_due = due.peek().map(|Reverse(d)| d.at_ms);
            let wait = next_due.map_or(Duration::from_secs(1), |at| {
                Duration::from_millis((at - now_ms()).clamp(0, 1000) as u64)
            });
            tokio::select! {
                message = self.consumer.recv() => {
                    // Copied out: a borrowed message cannot be held across an await.
                    let value = match message {
                        Ok(m) => m.payload().map(<[u8]>::to_vec),
                        Err(e) => anyhow::bail!("reading decisions: {e}"),
                    };
                    let Some(value) = value else { continue };
                    let decision = self.decode(&value).await?;
                    last_decision = Instant::now();
                    *summary.decisions.entry(decision.priority.clone()).or_default() += 1;
                    match self.spec.plan(self.seed, &decision.decision_id) {
                        None => *summary.never.entry(decision.priority.clone()).or_default() += 1,
                        Some((delay, action)) => {
                            let at_ms = decision.routed_at + delay.as_millis() as i64;
                            due.push(Reverse(Due { at_ms, decision, action }));
                        }
                    }
                }
                _ = tokio::time::sleep(wait) => {
                    while due.peek().is_some_and(|Reverse(d)| d.at_ms <= now_ms()) {
                        let Reverse(d) = due.pop().expect("peeked");
                        let at = now_ms();
                        let bucket = if at <= d.decision.sla_deadline { &mut summary.in_time } else { &mut summary.late };
                        *bucket.entry(d.decision.priority.clone()).or_default() += 1;
                        // Enqueued, not awaited one by one: thousands are due at once.
                        let value = self.ack_value(&d, at)?;
                        sender.send(&self.acks_topic, &d.decision.contact_id, &value, None).await?;
                        sent += 1;
                    }
                }
                _ = events_done.changed(), if !done => {}
            }
            if progress && last_progress.elapsed() >= Duration::from_secs(5) {
                last_progress = Instant::now();
                eprintln!(
                    "gen: {} decisions read, {sent} acknowledged, {} due",
                    summary.decisions.values().sum::<u64>(),
                    due.len()
                );
            }
        }
        sender.finish().await?;
        Ok(summary)
    }

    async fn decode(&self, value: &[u8]) -> anyhow::Result<RoutedLead> {
        let (id, datum) = unframe(value).map_err(|e| anyhow::anyhow!("a routed lead: {e}"))?;
        let writer = self
            .registry
            .schema_by_id(id)
            .await
            .map_err(|e| anyhow::anyhow!("the schema of a routed lead (id {id}): {e}"))?;
        Ok(decode(&writer, SchemaKind::RoutedLead, datum)?)
    }

    /// The acknowledgement of `due`, sent at `at_ms`, encoded.
    fn ack_value(&self, due: &Due, at_ms: i64) -> anyhow::Result<Vec<u8>> {
        let d = &due.decision;
        let ack = LeadAckEvent {
            envelope: Envelope {
                event_id: format!("ack-{}", d.decision_id),
                event_type: "Lead.acknowledged".into(),
                aggregate_id: d.contact_id.clone(),
                source: "leadflow-gen".into(),
                occurred_at: at_ms,
                delivery_attempt: 1,
                schema_version: "1".into(),
                correlation_id: None,
            },
            payload: LeadAck {
                decision_id: d.decision_id.clone(),
                contact_id: d.contact_id.clone(),
                rep_id: d
                    .owner_rep_id
                    .clone()
                    .unwrap_or_else(|| format!("queue:{}", d.queue)),
                action: due.action.into(),
                occurred_at: at_ms,
            },
        };
        Ok(self.encoder.encode(&ack)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_are_a_function_of_seed_and_decision_with_the_requested_shares() {
        let spec = AckSpec {
            fraction: 0.8,
            mean_delay: Duration::from_secs(30),
            idle: Duration::from_secs(1),
        };
        let ids: Vec<String> = (0..10_000).map(|i| format!("d-{i}")).collect();
        let plans: Vec<_> = ids.iter().map(|id| spec.plan(7, id)).collect();
        assert_eq!(
            plans,
            ids.iter().map(|id| spec.plan(7, id)).collect::<Vec<_>>()
        );
        assert_ne!(
            plans,
            ids.iter().map(|id| spec.plan(8, id)).collect::<Vec<_>>()
        );
        let acked: Vec<Duration> = plans.iter().flatten().map(|(d, _)| *d).collect();
        let share = acked.len() as f64 / ids.len() as f64;
        assert!((0.78..0.82).contains(&share), "{share}");
        // Exponential with mean 30s, capped at 150s: about e^-2 = 13.5 % over a 60s SLA.
        let over = acked.iter().filter(|d| d.as_secs() >= 60).count() as f64 / acked.len() as f64;
        assert!((0.11..0.16).contains(&over), "{over}");
        assert!(acked.iter().all(|d| *d <= Duration::from_secs(150)));
        let mean = acked.iter().map(Duration::as_secs_f64).sum::<f64>() / acked.len() as f64;
        assert!((27.0..31.0).contains(&mean), "{mean}");
        assert!(AckSpec {
            fraction: 1.5,
            ..spec
        }
        .validate()
        .is_err());
    }
}
