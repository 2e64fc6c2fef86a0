//! The processor's core, independent of Kafka: one input record in; its outputs and its state
//! writes out. The runtime feeds it from a consumer and commits each record's writes once its
//! outputs are delivered; topology tests feed it directly (like Kafka Streams'
//! TopologyTestDriver).
//!
//! Per record: key and decode checks (poison pills → DLQ), de-duplication by event_id (marks
//! kept in the contact's record, `state::dedup`), profile merge or engagement window update, account match, default score, the rule script,
//! and the routed lead on the topic of its priority.

mod assign;
mod audit;
pub mod decode;
mod shadow;
mod sla;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{counter, gauge};

use crate::codec::registry_client::retry_transient;
use crate::codec::{
    AvroCodecError, DatumDecoder, Encoder, RegistryClient, RegistryError, SchemaKind,
};
use crate::enrich::{
    accounts::AccountMatcher, contact::ContactState, engagement::WINDOW_MS, profile::Profile,
    score::default_score,
};
use crate::metrics as m;
use crate::model::Envelope;
use crate::route::live::RulesView;
use crate::route::reps::within;
use crate::route::{Lead, PreviousDecision, Priority, Rules};
use crate::sink::dlq::{dlq_record, truncate_value, DlqClass};
use crate::sink::late::{late_event, late_record, LateInput};
use crate::sink::routed::{decision_id, routed_lead, routed_record, RoutedInput};
use crate::sink::OutputRecord;
pub use crate::source::record::InputRecord;
use crate::state::dedup::{self, Lookup};
use crate::state::{partition_key, Cf, Staged, StateError, StateStore, Write};
use crate::time::{now_ms, LatenessPolicy, Observation, WallTime, WatermarkTracker};
use crate::topology::Topology;
use decode::{decode_input, Input, Rejection};

/// What happened to a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Routed(Priority),
    /// Processed and applied to state, but no decision: the script returned `()`, or the
    /// engagement's contact is not known yet.
    NoDecision(&'static str),
    /// A re-delivery of an event already processed.
    Duplicate,
    Dlq(DlqClass),
    /// Behind its task's watermark, and not processed: written to the late topic
    /// (`side_output`) or only counted (`drop`). Under `process` a late event is routed and
    /// its outcome is that of any other event.
    Late(LatenessPolicy),
    /// An acknowledgement, and what it did (`on_time`, `late`, `rejected`, `reassigned`,
    /// `ignored`, `unknown_decision`; the `leadflow_acks_total` results).
    Acknowledged(&'static str),
    /// A due timer of a decision nobody acknowledged: its breach was recorded.
    Breached,
    /// A timer with nothing left to do: a breached decision forgotten after
    /// `sla.ack_retention`, or one acknowledged meanwhile.
    TimerDone,
}

/// The record being routed: where it came from, its envelope, and its lateness under the
/// `process` policy.
#[derive(Clone, Copy)]
struct Trigger<'a> {
    source: &'a InputRecord<'a>,
    envelope: &'a Envelope,
    late: Option<&'a Observation>,
}

/// Index of each input in a task's watermark tracker.
const CONTACTS: usize = 0;
const ENGAGEMENTS: usize = 1;

/// A processed record: its outputs, and the state writes to commit once they are delivered.
#[derive(Debug)]
pub struct Processed {
    pub seq: u64,
    pub outcome: Outcome,
    pub outputs: Vec<OutputRecord>,
    pub writes: Vec<Write>,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The registry is unavailable or refuses us: retry the same record later; nothing was
    /// staged.
    #[error(transparent)]
    Registry(RegistryError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot encode a routed lead: {0}")]
    Encode(#[from] AvroCodecError),
}

/// Milliseconds since the epoch; injectable so tests control `routed_at`.
pub type Clock = Box<dyn Fn() -> i64 + Send>;

pub fn wall_clock() -> Clock {
    Box::new(crate::time::now_ms)
}

pub struct Pipeline {
    topology: Topology,
    /// The script in force (refreshed between records when it is reloaded).
    rules: RulesView,
    registry: RegistryClient,
    /// Input datums, read directly when written with our own schema.
    decoder: DatumDecoder,
    store: Arc<StateStore>,
    staged: Staged,
    accounts: AccountMatcher,
    /// RoutedLead encoders for P0, P1, P2 (each topic's subject may have its own id).
    routed: [Encoder; 3],
    late: Encoder,
    /// SlaBreach encoder, when acknowledgements are tracked (`inputs.acks`).
    breaches: Option<Encoder>,
    /// RoutedLead encoder of the assignments topic, when the topology names one.
    assignments: Option<Encoder>,
    /// The shadow script, with `rules_shadow`.
    shadow: Option<shadow::Shadow>,
    /// The audit topic's encoder, when the topology names one.
    audit: Option<audit::Audit>,
    /// The reps table and the tasks' assignment state (`assign`).
    rep_state: assign::RepState,
    /// Event time per task (partition), restored from the store on first use.
    trackers: HashMap<i32, WatermarkTracker>,
    /// Per task: its decisions waiting for an acknowledgement, by priority (counted from the
    /// store on first use).
    open_decisions: HashMap<i32, [i64; 3]>,
    /// Queues, per priority, whose breach counters exist (created at zero when a decision of
    /// the queue is first timed, so that `increase()` sees its first breach).
    breach_series: [std::collections::HashSet<String>; 3],
    clock: Clock,
    next_seq: u64,
}

impl Pipeline {
    /// Registers the RoutedLead schema under each priority topic's subject (waiting up to
    /// `registry_wait` for an unavailable registry) and builds the pipeline.
    pub async fn start(
        topology: Topology,
        rules: Arc<Rules>,
        registry: RegistryClient,
        store: Arc<StateStore>,
        clock: Clock,
        registry_wait: Duration,
    ) -> anyhow::Result<Pipeline> {
        let deadline = Instant::now() + registry_wait;
        let encoder = |topic: String, kind: SchemaKind| {
            let registry = registry.clone();
            async move {
                let subject = crate::topics::value_subject(&topic);
                let id = retry_transient(deadline, || registry.register(&subject, kind.source()))
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!("cannot register the {kind:?} schema for {subject}: {e}")
                    })?;
                anyhow::Ok(Encoder::new(kind, id)?)
            }
        };
        let o = &topology.outputs;
        let routed = [
            encoder(o.p0.clone(), SchemaKind::RoutedLead).await?,
            encoder(o.p1.clone(), SchemaKind::RoutedLead).await?,
            encoder(o.p2.clone(), SchemaKind::RoutedLead).await?,
        ];
        let late = encoder(o.late.clone(), SchemaKind::LateEvent).await?;
        let breaches = match &topology.acks {
            None => None,
            Some(_) => Some(encoder(o.escalations.clone(), SchemaKind::SlaBreach).await?),
        };
        let assignments = match &o.assignments {
            None => None,
            Some(topic) => Some(encoder(topic.clone(), SchemaKind::RoutedLead).await?),
        };
        let shadow = match &topology.rules_shadow {
            None => None,
            Some(path) => Some(shadow::Shadow {
                rules: Arc::new(Rules::load(
                    path,
                    &crate::route::ScriptLimits::of(&topology),
                )?),
                encoder: encoder(o.shadow_diff.clone(), SchemaKind::ShadowDiff).await?,
                topic: o.shadow_diff.clone(),
            }),
        };
        let audit = match &o.audit {
            None => None,
            Some(topic) => Some(audit::Audit {
                encoder: encoder(topic.clone(), SchemaKind::LeadAudit).await?,
                topic: topic.clone(),
            }),
        };
        Ok(Pipeline {
            topology,
            rules: RulesView::fixed(rules),
            registry,
            decoder: DatumDecoder::new(),
            store,
            staged: Staged::default(),
            accounts: AccountMatcher::default(),
            routed,
            late,
            breaches,
            assignments,
            shadow,
            audit,
            rep_state: assign::RepState::default(),
            trackers: HashMap::new(),
            open_decisions: HashMap::new(),
            breach_series: Default::default(),
            clock,
            next_seq: 0,
        })
    }

    pub fn rule_version(&self) -> &str {
        self.rules.version()
    }

    /// Follows `live` from now on: a reloaded script decides the records after it.
    pub fn follow_rules(&mut self, live: Arc<crate::route::live::LiveRules>) {
        self.rules = RulesView::following(live);
    }

    /// Takes a reloaded script, between two records.
    fn refresh_rules(&mut self) {
        if self.rules.refresh() {
            tracing::debug!(
                rule_version = self.rules.version(),
                "a stream thread took the reloaded rules"
            );
        }
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Processes one record. Its writes are staged (visible to later records) until
    /// [`Pipeline::commit`]; on `Err(Registry)` nothing happened and the record must be retried.
    pub async fn process(&mut self, rec: &InputRecord<'_>) -> Result<Processed, PipelineError> {
        self.refresh_rules();
        let (kind, input_name) = if rec.topic == self.topology.contacts {
            (SchemaKind::ContactEvent, "contacts")
        } else if self.topology.acks.as_deref() == Some(rec.topic) {
            (SchemaKind::LeadAckEvent, "acks")
        } else {
            (SchemaKind::EngagementEvent, "engagements")
        };
        counter!(m::RECORDS_IN, "input" => input_name).increment(1);
        let key = match rec.key.map(std::str::from_utf8) {
            Some(Ok(k)) if !k.is_empty() => k,
            Some(Ok(_)) | None => {
                return Ok(self.reject(
                    rec,
                    DlqClass::MissingKey,
                    "record has no key; the key must be the contact_id",
                ))
            }
            Some(Err(_)) => {
                return Ok(self.reject(
                    rec,
                    DlqClass::MissingKey,
                    "record key is not UTF-8; the key must be the contact_id",
                ))
            }
        };
        let max = self.topology.limits.max_record_bytes;
        let input = match decode_input(&self.registry, &mut self.decoder, kind, rec.value, max)
            .await
        {
            Ok(input) => input,
            Err(Rejection::Poison(class, message)) => return Ok(self.reject(rec, class, &message)),
            Err(Rejection::Wait(e)) => return Err(PipelineError::Registry(e)),
        };
        if let Some(problem) = self.clock_skew(&input) {
            return Ok(self.reject(rec, DlqClass::BadTimestamp, &problem));
        }
        let input = match input {
            Input::Ack(ack) => return self.acknowledge(rec, key, ack),
            other => other,
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        let envelope = match &input {
            Input::Contact(e) => &e.envelope,
            Input::Engagement(e) => &e.envelope,
            Input::Ack(e) => &e.envelope,
        };

        // The contact's record: it holds the event ids seen (de-duplication) and everything
        // else the event updates.
        let contact_key = partition_key(rec.partition, key.as_bytes());
        let mut state = match self.staged.get(&self.store, Cf::Contact, &contact_key)? {
            Some(b) => ContactState::from_bytes(&b).map_err(|e| corrupt(Cf::Contact, e))?,
            None => ContactState::default(),
        };
        let now = now_ms();
        let live_after = now.saturating_sub(self.topology.dedup_retention.as_millis() as i64);
        let id = dedup::event_hash(&envelope.event_id);
        let seen = match state.seen.lookup(id, live_after) {
            Lookup::Seen => true,
            Lookup::New => false,
            Lookup::AskStore => {
                let key = partition_key(rec.partition, envelope.event_id.as_bytes());
                self.staged
                    .get(&self.store, Cf::Dedup, &key)?
                    .is_some_and(|mark| StateStore::dedup_live(&mark, live_after))
            }
        };
        if seen {
            counter!(m::DUPLICATES).increment(1);
            return Ok(Processed {
                seq,
                outcome: Outcome::Duplicate,
                outputs: vec![],
                writes: vec![],
            });
        }
        let mut writes = Vec::with_capacity(2);
        if !state.seen.mark(id, now, live_after) {
            // The record holds as many marks as it may: this one goes to the dedup store.
            writes.push(Write {
                cf: Cf::Dedup,
                key: partition_key(rec.partition, envelope.event_id.as_bytes()),
                value: Some(StateStore::dedup_mark(now)),
            });
        }
        let input_index = match &input {
            Input::Engagement(_) => ENGAGEMENTS,
            Input::Contact(_) | Input::Ack(_) => CONTACTS,
        };
        let time = if self.topology.lateness.enabled {
            self.observe(
                rec.partition,
                input_index,
                envelope.occurred_at,
                &mut writes,
            )?
        } else {
            Observation::untracked()
        };
        let policy = self.topology.lateness.policy;
        if time.late {
            counter!(m::LATE_EVENTS, "input" => input_name, "policy" => policy.as_str())
                .increment(1);
            if policy != LatenessPolicy::Process {
                let envelope = envelope.clone();
                let outputs = match policy {
                    LatenessPolicy::SideOutput => {
                        vec![self.late_output(
                            rec,
                            &envelope,
                            time.watermark.unwrap_or(i64::MIN),
                        )?]
                    }
                    _ => vec![],
                };
                // Only its mark: a late event changes nothing else of the contact.
                self.write_contact(contact_key, state, &mut writes);
                return Ok(self.staged_outcome(seq, Outcome::Late(policy), outputs, writes));
            }
        }
        match &input {
            Input::Contact(e) => {
                state
                    .profile
                    .get_or_insert_with(|| Profile::new(key))
                    .merge(&e.payload);
            }
            Input::Ack(_) => unreachable!("acknowledgements are handled above"),
            Input::Engagement(e) => {
                let history = &mut state.history;
                history.record(e.payload.occurred_at, &e.payload.kind);
                // Nothing at or after the watermark looks back further than the window.
                // Without event-time tracking: 7 days behind the newest engagement.
                let horizon = time.watermark_after.or(history.newest());
                if let Some(w) = horizon {
                    history.expire_before(w.saturating_sub(WINDOW_MS));
                }
            }
        }
        let (outcome, outputs) = if state.profile.is_none() {
            // An engagement of a contact we have not seen: kept in its window, not routed.
            counter!(m::NO_DECISION, "reason" => "unknown_contact").increment(1);
            let audit = self.audit.as_ref().and_then(|a| {
                a.unknown_contact(envelope, key, self.rules.version(), (self.clock)())
            });
            (
                Outcome::NoDecision("unknown_contact"),
                audit.into_iter().collect(),
            )
        } else {
            let envelope = envelope.clone();
            let trigger = Trigger {
                source: rec,
                envelope: &envelope,
                late: time.late.then_some(&time),
            };
            self.route(&trigger, &mut state, &mut writes)?
        };
        self.write_contact(contact_key, state, &mut writes);
        Ok(self.staged_outcome(seq, outcome, outputs, writes))
    }

    /// Adds the contact's new record to `writes`.
    fn write_contact(&mut self, key: Vec<u8>, state: ContactState, writes: &mut Vec<Write>) {
        writes.push(Write {
            cf: Cf::Contact,
            key,
            value: Some(state.to_bytes()),
        });
    }

    /// Enriches, scores and runs the rules for a known contact.
    /// On a decision, it becomes the contact's `previous`.
    fn route(
        &mut self,
        trigger: &Trigger,
        state: &mut ContactState,
        writes: &mut Vec<Write>,
    ) -> Result<(Outcome, Vec<OutputRecord>), PipelineError> {
        let Trigger {
            source,
            envelope,
            late,
        } = *trigger;
        let contact = state
            .profile
            .as_ref()
            .expect("only known contacts are routed")
            .contact();
        let account = self.accounts.match_account(&self.store, &contact)?;
        let engagement = state.history.stats_at(envelope.occurred_at);
        let previous = state.previous.clone();
        let score = default_score(&contact, account.as_ref(), &engagement);
        let lead = Lead {
            contact,
            event_type: envelope.event_type.clone(),
            source: envelope.source.clone(),
            occurred_at: envelope.occurred_at,
            score,
            account,
            engagement,
            previous,
        };
        let rules = self.rules.clone();
        let version = rules.version();
        let mut reps =
            self.rep_context(source.partition, &lead.contact.contact_id, lead.occurred_at)?;
        let live = within(&mut reps, || self.rules.evaluate(&lead));
        let picks = reps
            .as_mut()
            .map(|c| std::mem::take(&mut c.picks))
            .unwrap_or_default();
        let diff = match &self.shadow {
            Some(shadow) => within(&mut reps, || {
                shadow.compare(&lead, envelope, &rules, &live, (self.clock)())
            }),
            None => None,
        };
        let explained = self
            .audit
            .as_ref()
            .map(|_| within(&mut reps, || rules.explain(&lead)));
        // Only the live script's picks count.
        if let Some(context) = reps.as_mut() {
            context.picks = picks;
        }

        let audit = |live: Result<Option<&crate::route::Decision>, &_>,
                     decision_id: Option<&str>,
                     now: i64| {
            let (audit, explained) = (self.audit.as_ref()?, explained.as_ref()?);
            let contact_id = &lead.contact.contact_id;
            audit.evaluated(envelope, contact_id, explained, live, decision_id, now)
        };
        let mut decision = match live {
            Ok(Some(decision)) => decision,
            Ok(None) => {
                counter!(m::NO_DECISION, "reason" => "script_returned_unit").increment(1);
                let audit = audit(Ok(None), None, (self.clock)());
                return Ok((
                    Outcome::NoDecision("script_returned_unit"),
                    diff.into_iter().chain(audit).collect(),
                ));
            }
            Err(failure) => {
                let class = DlqClass::from_script_failure(&failure);
                counter!(m::DLQ, "class" => class.as_str()).increment(1);
                let dlq = &self.topology.outputs.dlq;
                let record = dlq_record(dlq, source, class, &failure.to_string(), Some(version));
                let audit = audit(Err(&failure), None, (self.clock)());
                return Ok((
                    Outcome::Dlq(class),
                    [record].into_iter().chain(diff).chain(audit).collect(),
                ));
            }
        };
        assign::correct_owner(reps.as_ref(), &mut decision);
        if let Some(time) = late {
            decision.reasons.push(format!(
                "late: {} ms behind the watermark",
                time.lateness_ms
            ));
        }
        let index = priority_index(decision.priority);
        let routed_at = (self.clock)();
        let routed = routed_lead(&RoutedInput {
            decision_id: decision_id(&envelope.event_id, version),
            envelope,
            lead: &lead,
            decision: &decision,
            rule_version: version,
            routed_at,
            sla_ms: self.topology.sla[index].as_millis() as i64,
        });
        let mut record = routed_record(
            self.routed_topic(decision.priority),
            &self.routed[index],
            &routed,
            envelope.correlation_id.as_deref(),
        );
        if late.is_some() {
            record.headers.push(("late", b"true".to_vec()));
        }
        let assignment = self.assignment(&routed, envelope.correlation_id.as_deref());
        let audit = audit(Ok(Some(&decision)), Some(&routed.decision_id), routed_at);
        if self.sla_enabled() {
            let tracked = sla::tracked(&routed, envelope, decision.priority, None, 0);
            self.arm(source.partition, tracked, writes)?;
        }
        self.book_assignment(
            source.partition,
            &lead.contact.contact_id,
            &routed.decision_id,
            decision.owner.as_deref(),
            reps,
            writes,
        )?;
        state.previous = Some(PreviousDecision {
            decision_id: routed.decision_id,
            event_id: routed.event_id,
            priority: decision.priority,
            queue: decision.queue,
            owner: decision.owner,
            score: decision.score,
            routed_at,
            rule_version: version.to_string(),
        });
        counter!(m::ROUTED, "priority" => decision.priority.as_str()).increment(1);
        let mut outputs = vec![record];
        outputs.extend(assignment);
        outputs.extend(diff);
        outputs.extend(audit);
        Ok((Outcome::Routed(decision.priority), outputs))
    }

    /// Counts the event in its task's event time and stages the task's new state.
    fn observe(
        &mut self,
        partition: i32,
        input: usize,
        occurred_at: i64,
        writes: &mut Vec<Write>,
    ) -> Result<Observation, PipelineError> {
        let now = WallTime((self.clock)());
        let key = partition.to_be_bytes().to_vec();
        let tracker = match self.trackers.entry(partition) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let lateness = &self.topology.lateness;
                let restored = match self.staged.get(&self.store, Cf::Task, &key)? {
                    Some(b) => WatermarkTracker::from_bytes(&b, lateness, 2, now)
                        .map_err(|e| corrupt(Cf::Task, e))?,
                    None => WatermarkTracker::new(lateness, 2, now),
                };
                e.insert(restored)
            }
        };
        let before = tracker.stream_time(input);
        let time = tracker.observe(input, occurred_at, now);
        if time.watermark_after != time.watermark {
            if let Some(w) = time.watermark_after {
                gauge!(m::WATERMARK, "partition" => partition.to_string()).set(w as f64);
                self.store
                    .set_history_horizon(partition, w.saturating_sub(WINDOW_MS));
            }
        }
        if time.watermark_after != time.watermark || tracker.stream_time(input) != before {
            writes.push(Write {
                cf: Cf::Task,
                key,
                value: Some(tracker.to_bytes()),
            });
        }
        Ok(time)
    }

    /// The `LateEvent` for an event behind the watermark (the `side_output` policy).
    fn late_output(
        &self,
        rec: &InputRecord,
        envelope: &Envelope,
        watermark: i64,
    ) -> Result<OutputRecord, PipelineError> {
        let event = late_event(&LateInput {
            source: rec,
            envelope,
            watermark,
            observed_at: (self.clock)(),
        });
        Ok(late_record(
            &self.topology.outputs.late,
            &self.late,
            &event,
            rec,
            self.rules.version(),
            envelope.correlation_id.as_deref(),
        )?)
    }

    fn staged_outcome(
        &mut self,
        seq: u64,
        outcome: Outcome,
        outputs: Vec<OutputRecord>,
        writes: Vec<Write>,
    ) -> Processed {
        self.staged.stage(seq, &writes);
        Processed {
            seq,
            outcome,
            outputs,
            writes,
        }
    }

    /// Why the event's times cannot be trusted, if they cannot: an `occurred_at` (or a
    /// contact's `updated_at`) further ahead of the wall clock than `limits.max_clock_skew`
    /// would move the task's watermark (or a profile field's version) past every event still
    /// to come.
    fn clock_skew(&self, input: &Input) -> Option<String> {
        let limit = self.topology.limits.max_clock_skew;
        let now = (self.clock)();
        let times: [(&str, i64); 2] = match input {
            Input::Contact(e) => [
                ("occurred_at", e.envelope.occurred_at),
                ("updated_at", e.payload.updated_at),
            ],
            Input::Engagement(e) => [
                ("occurred_at", e.envelope.occurred_at),
                ("payload occurred_at", e.payload.occurred_at),
            ],
            Input::Ack(e) => [
                ("occurred_at", e.envelope.occurred_at),
                ("payload occurred_at", e.payload.occurred_at),
            ],
        };
        let (field, ahead) = times
            .iter()
            .map(|(field, t)| (*field, t.saturating_sub(now)))
            .max_by_key(|(_, ahead)| *ahead)?;
        (ahead > limit.as_millis() as i64).then(|| {
            format!(
                "{field} is {} ahead of the wall clock, more than limits.max_clock_skew ({}); \
                 a producer writing microseconds or seconds instead of milliseconds?",
                humantime::format_duration(Duration::from_secs((ahead / 1000) as u64)),
                humantime::format_duration(limit)
            )
        })
    }

    /// A poison pill: to the DLQ, no state touched. A record larger than the topology's
    /// record limit (an `oversize` one) keeps only the start of its value: its DLQ copy must
    /// fit the producer (see `limits.max_record_bytes`).
    fn reject(&mut self, source: &InputRecord, class: DlqClass, message: &str) -> Processed {
        counter!(m::DLQ, "class" => class.as_str()).increment(1);
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut record = dlq_record(&self.topology.outputs.dlq, source, class, message, None);
        let size =
            record.value.as_ref().map_or(0, Vec::len) + record.key.as_ref().map_or(0, Vec::len);
        if size > self.topology.limits.max_record_bytes {
            truncate_value(&mut record);
        }
        Processed {
            seq,
            outcome: Outcome::Dlq(class),
            outputs: vec![record],
            writes: vec![],
        }
    }

    /// Makes a processed record's state durable; call once all its outputs are delivered,
    /// in the order the records were processed.
    pub fn commit(&mut self, processed: &Processed) -> Result<(), StateError> {
        self.commit_all(std::iter::once(processed), &[])
    }

    /// [`commit`](Self::commit) for consecutive records at once, in one atomic write with
    /// `also` (the tasks' changelog checkpoints).
    pub fn commit_all<'a>(
        &mut self,
        processed: impl Iterator<Item = &'a Processed> + Clone,
        also: &[Write],
    ) -> Result<(), StateError> {
        self.staged.commit_all(
            &self.store,
            processed.map(|p| (p.seq, p.writes.as_slice())),
            also,
        )
    }

    /// Forgets what is cached of task `partition` (its event-time tracker, its count of open
    /// decisions): its stores are about to be restored, or it was revoked. Nothing of the task
    /// may be staged.
    pub fn forget_task(&mut self, partition: i32) {
        self.trackers.remove(&partition);
        self.rep_state.forget(partition);
        self.uncount_open(partition);
    }

    /// Staged writes not yet committed (for metrics and tests).
    pub fn staged_len(&self) -> usize {
        self.staged.len()
    }
}

/// The position of `p` in P0, P1, P2: its SLA window and `RoutedLead` encoder.
fn priority_index(p: Priority) -> usize {
    Priority::ALL.iter().position(|q| *q == p).unwrap_or(2)
}

impl Pipeline {
    /// The assignments record of a decision, when the topology names the topic.
    fn assignment(
        &self,
        lead: &crate::model::RoutedLead,
        correlation_id: Option<&str>,
    ) -> Option<OutputRecord> {
        let (topic, encoder) = (
            self.topology.outputs.assignments.as_ref()?,
            self.assignments.as_ref()?,
        );
        let mut record = routed_record(topic, encoder, lead, correlation_id);
        record.kind = crate::sink::OutputKind::Assignment;
        Some(record)
    }

    /// The delivery topic of priority `p`.
    fn routed_topic(&self, p: Priority) -> &str {
        match p {
            Priority::P0 => &self.topology.outputs.p0,
            Priority::P1 => &self.topology.outputs.p1,
            Priority::P2 => &self.topology.outputs.p2,
        }
    }
}

fn corrupt_text(cf: Cf, reason: &str) -> StateError {
    StateError::Corrupt {
        cf: cf.name(),
        reason: reason.to_string(),
    }
}

fn corrupt(cf: Cf, e: postcard::Error) -> StateError {
    StateError::Corrupt {
        cf: cf.name(),
        reason: e.to_string(),
    }
}
