//! `leadflow gen`: realistic, reproducible CRM traffic in the Confluent wire format.
//!
//! Reference data (accounts, reps) goes first, then a stream of contact and engagement events
//! with the requested share of duplicates, out-of-order and late events. Every stream record
//! carries two headers that say what the generator did, for verifiers:
//! `leadflow.gen.seq` (production order, decimal) and `leadflow.gen.disorder`.

pub mod acks;
mod names;
pub mod plan;
pub mod world;

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

use crate::codec::registry_client::{retry_transient, RegistryConfig};
use crate::codec::{Encoder, RegistryClient, SchemaKind};
use crate::kafka::context::Logged;
use crate::kafka::KafkaSettings;
use crate::topics;
pub use acks::{AckSpec, AckSummary};
pub use plan::{classify, Disorder, DisorderSpec, Planned, Planner};
pub use world::{StreamEvent, World};

/// Header naming a stream record's position in the generator's production order.
pub const SEQ_HEADER: &str = "leadflow.gen.seq";
/// Header naming what the generator did to the record (see [`Disorder::as_str`]).
pub const DISORDER_HEADER: &str = "leadflow.gen.disorder";

/// Most records awaiting delivery at once; bounds memory on fast runs.
const MAX_IN_FLIGHT: usize = 20_000;

/// Everything `leadflow gen` needs, already validated.
#[derive(Debug, Clone)]
pub struct GenConfig {
    pub kafka: KafkaSettings,
    pub registry: RegistryConfig,
    /// How long to retry an unavailable registry.
    pub registry_wait: Duration,
    pub topic_prefix: String,
    pub seed: u64,
    /// Contact and engagement records to produce (duplicates included).
    pub count: u64,
    pub accounts: usize,
    pub reps: usize,
    /// Produce the accounts and reps reference tables first.
    pub reference_data: bool,
    /// Events per second; 0 = as fast as possible.
    pub rate: f64,
    /// Event time of the first event, ms since the epoch.
    pub start_ms: i64,
    pub disorder: DisorderSpec,
    /// Acknowledge the decisions made meanwhile (`--acks`), like a delivery worker.
    pub acks: Option<AckSpec>,
    pub progress: bool,
}

impl GenConfig {
    /// Generating in process, with no broker or registry (benches and tests): seed `seed`,
    /// an endless stream in order from 2026-01-05, 2,000 accounts and 48 reps, no disorder.
    pub fn in_process(seed: u64) -> GenConfig {
        GenConfig {
            kafka: KafkaSettings::new("unused:9092"),
            registry: RegistryConfig::default(),
            registry_wait: Duration::from_secs(1),
            topic_prefix: String::new(),
            seed,
            count: u64::MAX,
            accounts: 2_000,
            reps: 48,
            reference_data: true,
            rate: 0.0,
            start_ms: 1_767_600_000_000,
            disorder: DisorderSpec {
                duplicates: 0.0,
                out_of_order: 0.0,
                late: 0.0,
                bound_ms: 300_000,
                mean_gap_ms: 1000,
            },
            acks: None,
            progress: false,
        }
    }
}

/// What a run produced.
#[derive(Debug, Default, Clone)]
pub struct GenSummary {
    pub per_topic: BTreeMap<String, u64>,
    pub per_disorder: BTreeMap<&'static str, u64>,
    /// What the acknowledging side did, with `--acks`.
    pub acks: Option<AckSummary>,
    pub elapsed: Duration,
}

/// The reference data and stream of a run, in production order, without Kafka.
pub struct Traffic {
    rng: ChaCha8Rng,
    world: World,
    planner: Planner,
}

impl Traffic {
    pub fn new(config: &GenConfig) -> Traffic {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let world = World::new(&mut rng, config.accounts, config.reps, config.start_ms);
        let planner = Planner::new(config.disorder, config.count, config.start_ms);
        Traffic {
            rng,
            world,
            planner,
        }
    }

    pub fn reference(&mut self) -> (Vec<crate::model::AccountEvent>, Vec<crate::model::RepEvent>) {
        let accounts = self.world.account_events(&mut self.rng);
        let reps = self.world.rep_events(&mut self.rng);
        (accounts, reps)
    }

    pub fn next_event(&mut self) -> Planned {
        self.planner.next(&mut self.rng, &mut self.world)
    }
}

struct Encoders {
    contact: Encoder,
    engagement: Encoder,
    account: Encoder,
    rep: Encoder,
}

/// Registers the input schemas (if missing) under `<topic>-value` and builds encoders.
async fn encoders(config: &GenConfig) -> anyhow::Result<Encoders> {
    let registry = RegistryClient::with_config(&config.registry)?;
    let deadline = Instant::now() + config.registry_wait;
    let make = async |topic: &str, kind: SchemaKind| -> anyhow::Result<Encoder> {
        let subject = topics::value_subject(&topics::with_prefix(&config.topic_prefix, topic));
        let id = retry_transient(deadline, || registry.register(&subject, kind.source()))
            .await
            .map_err(|e| anyhow::anyhow!("cannot register schema for {subject}: {e}"))?;
        Ok(Encoder::new(kind, id)?)
    };
    Ok(Encoders {
        contact: make(topics::CONTACTS, SchemaKind::ContactEvent).await?,
        engagement: make(topics::ENGAGEMENTS, SchemaKind::EngagementEvent).await?,
        account: make(topics::ACCOUNTS, SchemaKind::AccountEvent).await?,
        rep: make(topics::REPS, SchemaKind::RepEvent).await?,
    })
}

/// Sends records, keeping at most [`MAX_IN_FLIGHT`] unacknowledged.
struct Sender {
    producer: FutureProducer<Logged>,
    in_flight: VecDeque<DeliveryFuture>,
}

impl Sender {
    async fn send(
        &mut self,
        topic: &str,
        key: &str,
        value: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> anyhow::Result<()> {
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            self.await_oldest().await?;
        }
        let mut record = FutureRecord::to(topic).key(key).payload(value);
        if let Some(h) = headers {
            record = record.headers(h);
        }
        loop {
            match self.producer.send_result(record) {
                Ok(delivery) => {
                    self.in_flight.push_back(delivery);
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    if self.in_flight.is_empty() {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    } else {
                        self.await_oldest().await?;
                    }
                }
                Err((e, _)) => anyhow::bail!("cannot produce to {topic}: {e}"),
            }
        }
    }

    async fn await_oldest(&mut self) -> anyhow::Result<()> {
        if let Some(delivery) = self.in_flight.pop_front() {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => anyhow::bail!("a record was not delivered: {e}"),
                Err(_) => anyhow::bail!("the producer shut down before delivering a record"),
            }
        }
        Ok(())
    }

    async fn finish(&mut self) -> anyhow::Result<()> {
        while !self.in_flight.is_empty() {
            self.await_oldest().await?;
        }
        Ok(())
    }
}

/// Produces the configured traffic to Kafka.
pub async fn run(config: &GenConfig) -> anyhow::Result<GenSummary> {
    config.disorder.validate().map_err(anyhow::Error::msg)?;
    let started = Instant::now();
    let enc = encoders(config).await?;
    let producer: FutureProducer<Logged> = config
        .kafka
        .producer_config()
        .create_with_context(Logged::new("producer"))
        .map_err(|e| anyhow::anyhow!("cannot create the producer: {e}"))?;
    // The acknowledging side reads the decisions made from now on.
    let (events_done, done_rx) = tokio::sync::watch::channel(false);
    let acker = match config.acks {
        Some(spec) if spec.fraction > 0.0 => {
            let acker = acks::Acker::new(config, spec).await?;
            Some(tokio::spawn(acker.run(
                producer.clone(),
                done_rx,
                config.progress,
            )))
        }
        _ => None,
    };
    let mut sender = Sender {
        producer,
        in_flight: VecDeque::new(),
    };
    let mut summary = GenSummary::default();
    let topic = |t: &str| topics::with_prefix(&config.topic_prefix, t);
    let mut traffic = Traffic::new(config);

    let (accounts, reps) = traffic.reference();
    if config.reference_data {
        let accounts_topic = topic(topics::ACCOUNTS);
        for a in &accounts {
            sender
                .send(
                    &accounts_topic,
                    &a.payload.account_id,
                    &enc.account.encode(a)?,
                    None,
                )
                .await?;
        }
        let reps_topic = topic(topics::REPS);
        for r in &reps {
            sender
                .send(&reps_topic, &r.payload.rep_id, &enc.rep.encode(r)?, None)
                .await?;
        }
        summary
            .per_topic
            .insert(accounts_topic, accounts.len() as u64);
        summary.per_topic.insert(reps_topic, reps.len() as u64);
    }

    let contacts_topic = topic(topics::CONTACTS);
    let engagements_topic = topic(topics::ENGAGEMENTS);
    let stream_started = Instant::now();
    let mut last_progress = Instant::now();
    for i in 0..config.count {
        if config.rate > 0.0 {
            let due = stream_started + Duration::from_secs_f64(i as f64 / config.rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let planned = traffic.next_event();
        let (topic_name, value) = match &planned.event {
            StreamEvent::Contact(e) => (&contacts_topic, enc.contact.encode(e)?),
            StreamEvent::Engagement(e) => (&engagements_topic, enc.engagement.encode(e)?),
        };
        let seq = planned.seq.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: SEQ_HEADER,
                value: Some(seq.as_bytes()),
            })
            .insert(Header {
                key: DISORDER_HEADER,
                value: Some(planned.disorder.as_str().as_bytes()),
            });
        let key = &planned.event.envelope().aggregate_id;
        sender.send(topic_name, key, &value, Some(headers)).await?;
        *summary.per_topic.entry(topic_name.clone()).or_default() += 1;
        *summary
            .per_disorder
            .entry(planned.disorder.as_str())
            .or_default() += 1;
        if config.progress && last_progress.elapsed() >= Duration::from_secs(2) {
            last_progress = Instant::now();
            let rate = (i + 1) as f64 / stream_started.elapsed().as_secs_f64();
            eprintln!("gen: {}/{} events ({rate:.0}/s)", i + 1, config.count);
        }
    }
    sender.finish().await?;
    let _ = events_done.send(true);
    if let Some(acker) = acker {
        if config.progress {
            eprintln!("gen: events done; acknowledging the decisions still coming");
        }
        summary.acks = Some(acker.await??);
    }
    summary.elapsed = started.elapsed();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(seed: u64) -> GenConfig {
        GenConfig {
            registry: RegistryConfig::new("http://unused"),
            count: 500,
            accounts: 100,
            reps: 12,
            disorder: DisorderSpec {
                duplicates: 0.05,
                out_of_order: 0.1,
                late: 0.02,
                bound_ms: 300_000,
                mean_gap_ms: 1000,
            },
            ..GenConfig::in_process(seed)
        }
    }

    /// Every value the run would produce, encoded with fixed schema ids.
    fn render(seed: u64) -> Vec<Vec<u8>> {
        let config = config(seed);
        let mut traffic = Traffic::new(&config);
        let (accounts, reps) = traffic.reference();
        let mut out = Vec::new();
        let account = Encoder::new(SchemaKind::AccountEvent, 1).unwrap();
        let rep = Encoder::new(SchemaKind::RepEvent, 2).unwrap();
        let contact = Encoder::new(SchemaKind::ContactEvent, 3).unwrap();
        let engagement = Encoder::new(SchemaKind::EngagementEvent, 4).unwrap();
        out.extend(accounts.iter().map(|a| account.encode(a).unwrap()));
        out.extend(reps.iter().map(|r| rep.encode(r).unwrap()));
        for _ in 0..config.count {
            out.push(match traffic.next_event().event {
                StreamEvent::Contact(e) => contact.encode(&e).unwrap(),
                StreamEvent::Engagement(e) => engagement.encode(&e).unwrap(),
            });
        }
        out
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let a = render(7);
        assert_eq!(a, render(7));
        assert_ne!(a, render(8));
        assert_eq!(a.len(), 100 + 12 + 500);
    }
}
