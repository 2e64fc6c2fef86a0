//! SLA tracking in the pipeline (`crate::sla`): a routed lead's timer is staged with the
//! record that routed it; an acknowledgement stops it, reassigns it or escalates at once; the
//! punctuator fires due timers: a breach, and a re-route while the escalation allows one.
//!
//! Everything here is staged and committed like a record's state, so a crash replays it:
//! under exactly-once nothing is emitted twice; under at-least-once a breach or escalation
//! may be emitted again with the same ids (`decision_id` and `level`, `escalation_id`).

use metrics::{counter, gauge, histogram};

use super::{corrupt, priority_index, Outcome, Pipeline, PipelineError, Processed};
use crate::enrich::{contact::ContactState, score::default_score};
use crate::metrics as m;
use crate::model::{Contact, Envelope, LeadAckEvent, RoutedLead, SlaBreach};
use crate::route::{BreachInfo, Decision, Lead, PreviousDecision, Priority};
use crate::sink::breach::breach_record;
use crate::sink::dlq::DlqClass;
use crate::sink::routed::{routed_lead, routed_record, RoutedInput};
use crate::sink::OutputRecord;
use crate::sla::{self, decision_key, escalation_id, timer_key, Action, Tracked};
use crate::source::record::InputRecord;
use crate::state::{partition_key, Cf, Write};

/// Most timers one task fires per punctuation; the rest wait for the next one.
pub const MAX_FIRED_PER_PUNCTUATION: usize = 1_000;

/// Why a decision breached.
enum Cause<'a> {
    Deadline,
    Rejected { rep: &'a str },
}

impl Cause<'_> {
    fn as_str(&self) -> &'static str {
        match self {
            Cause::Deadline => "deadline",
            Cause::Rejected { .. } => "rejected",
        }
    }
}

/// The tracked state of a decision just made: open, due at its deadline.
pub(super) fn tracked(
    routed: &RoutedLead,
    envelope: &Envelope,
    priority: Priority,
    root: Option<&str>,
    level: u32,
) -> Tracked {
    Tracked {
        decision_id: routed.decision_id.clone(),
        contact_id: routed.contact_id.clone(),
        root: root.unwrap_or(&routed.decision_id).to_string(),
        event_id: envelope.event_id.clone(),
        event_type: envelope.event_type.clone(),
        source: envelope.source.clone(),
        occurred_at: envelope.occurred_at,
        correlation_id: envelope.correlation_id.clone(),
        priority,
        queue: routed.queue.clone(),
        owner: routed.owner_rep_id.clone(),
        score: routed.score,
        rule_version: routed.rule_version.clone(),
        routed_at: routed.routed_at,
        deadline: routed.sla_deadline,
        level,
        due: routed.sla_deadline,
        open: true,
        next: None,
    }
}

/// Sets (`set`) or deletes a timer.
fn timer(partition: i32, due: i64, decision_id: &str, set: bool) -> Write {
    Write {
        cf: Cf::Sla,
        key: timer_key(partition, due, decision_id),
        value: set.then(Vec::new),
    }
}

impl Pipeline {
    /// Stages a tracked decision and its timer.
    pub(super) fn arm(
        &mut self,
        partition: i32,
        tracked: Tracked,
        writes: &mut Vec<Write>,
    ) -> Result<(), PipelineError> {
        counter!(m::SLA_TRACKED, "priority" => tracked.priority.as_str()).increment(1);
        let known = &mut self.breach_series[priority_index(tracked.priority)];
        if !known.contains(tracked.queue.as_str()) {
            known.insert(tracked.queue.clone());
            for cause in [Cause::Deadline, Cause::Rejected { rep: "" }] {
                counter!(
                    m::SLA_BREACHES,
                    "priority" => tracked.priority.as_str(),
                    "queue" => tracked.queue.clone(),
                    "cause" => cause.as_str()
                )
                .absolute(0);
            }
        }
        self.count_open(partition, tracked.priority, 1)?;
        writes.push(timer(partition, tracked.due, &tracked.decision_id, true));
        writes.push(Write {
            cf: Cf::Sla,
            key: decision_key(partition, &tracked.decision_id),
            value: Some(tracked.to_bytes()),
        });
        Ok(())
    }

    /// Adds `delta` to the open decisions of `priority` of task `partition`
    /// (`leadflow_sla_open_decisions`), counting the task's stored ones first if it has not
    /// been counted since it was assigned.
    fn count_open(
        &mut self,
        partition: i32,
        priority: Priority,
        delta: i64,
    ) -> Result<(), PipelineError> {
        if !self.open_decisions.contains_key(&partition) {
            let (from, until) = sla::decision_range(partition);
            let mut counts = [0i64; 3];
            for (_, value) in self.store.entries_in(Cf::Sla, &from, &until, usize::MAX)? {
                let t = Tracked::from_bytes(&value).map_err(|e| corrupt(Cf::Sla, e))?;
                if t.open {
                    counts[priority_index(t.priority)] += 1;
                }
            }
            for (p, n) in Priority::ALL.iter().zip(counts) {
                gauge!(m::SLA_OPEN, "priority" => p.as_str()).increment(n as f64);
            }
            self.open_decisions.insert(partition, counts);
        }
        if let Some(counts) = self.open_decisions.get_mut(&partition) {
            counts[priority_index(priority)] += delta;
        }
        gauge!(m::SLA_OPEN, "priority" => priority.as_str()).increment(delta as f64);
        Ok(())
    }

    /// Takes task `partition`'s open decisions out of the gauge (the task goes, or is about
    /// to be restored: it is counted again at its next use).
    pub(super) fn uncount_open(&mut self, partition: i32) {
        if let Some(counts) = self.open_decisions.remove(&partition) {
            for (p, n) in Priority::ALL.iter().zip(counts) {
                gauge!(m::SLA_OPEN, "priority" => p.as_str()).decrement(n as f64);
            }
        }
    }

    /// Whether decisions are timed against their SLA (the topology has `inputs.acks`).
    pub(super) fn sla_enabled(&self) -> bool {
        self.topology.acks.is_some() && self.breaches.is_some()
    }

    /// The tracked decision `decision_id` of task `partition`, staged or stored.
    fn tracked_decision(
        &self,
        partition: i32,
        decision_id: &str,
    ) -> Result<Option<Tracked>, PipelineError> {
        let key = decision_key(partition, decision_id);
        Ok(match self.staged.get(&self.store, Cf::Sla, &key)? {
            Some(bytes) => Some(Tracked::from_bytes(&bytes).map_err(|e| corrupt(Cf::Sla, e))?),
            None => None,
        })
    }

    /// Applies one acknowledgement (`key` is the record's key).
    pub(super) fn acknowledge(
        &mut self,
        rec: &InputRecord,
        key: &str,
        ack: LeadAckEvent,
    ) -> Result<Processed, PipelineError> {
        let payload = &ack.payload;
        let Some(action) = Action::parse(&payload.action) else {
            // No field values in DLQ messages (contracts §5).
            let message = "action is not one of accepted, contacted, rejected, reassigned";
            return Ok(self.reject(rec, DlqClass::InvalidAck, message));
        };
        if payload.decision_id.is_empty() {
            return Ok(self.reject(rec, DlqClass::InvalidAck, "decision_id is empty"));
        }
        if payload.contact_id != key {
            return Ok(self.reject(
                rec,
                DlqClass::InvalidAck,
                "the record key is not the acknowledgement's contact_id; key acknowledgements \
                 by contact_id so that they reach the task that holds the decision",
            ));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let (mut writes, mut outputs) = (Vec::new(), Vec::new());
        let partition = rec.partition;
        let result = match self.tracked_decision(partition, &payload.decision_id)? {
            None => "unknown_decision",
            Some(t) if action.claims() => {
                let waited = payload.occurred_at.saturating_sub(t.routed_at).max(0);
                histogram!(m::TIME_TO_ACK, "priority" => t.priority.as_str())
                    .record(waited as f64 / 1000.0);
                let on_time = payload.occurred_at <= t.deadline;
                self.close_chain(partition, t, &mut writes)?;
                if on_time {
                    "on_time"
                } else {
                    "late"
                }
            }
            Some(t) if !t.open => "ignored",
            Some(t) if action == Action::Rejected => {
                let now = (self.clock)();
                let cause = Cause::Rejected {
                    rep: &payload.rep_id,
                };
                self.breach(partition, t, now, cause, &mut writes, &mut outputs)?;
                "rejected"
            }
            Some(mut t) => {
                t.owner = Some(payload.rep_id.clone());
                writes.push(Write {
                    cf: Cf::Sla,
                    key: decision_key(partition, &t.decision_id),
                    value: Some(t.to_bytes()),
                });
                "reassigned"
            }
        };
        let reassigned_to = (action == Action::Reassigned).then_some(payload.rep_id.as_str());
        self.release_assignment(
            partition,
            &payload.contact_id,
            &payload.decision_id,
            reassigned_to,
            &mut writes,
        )?;
        counter!(m::ACKS, "action" => action.as_str(), "result" => result).increment(1);
        Ok(self.staged_outcome(seq, Outcome::Acknowledged(result), outputs, writes))
    }

    /// Deletes the whole chain of decisions `t` belongs to (its first decision and every
    /// escalation of it still known) and their timers.
    fn close_chain(
        &mut self,
        partition: i32,
        t: Tracked,
        writes: &mut Vec<Write>,
    ) -> Result<(), PipelineError> {
        let start = if t.root == t.decision_id {
            Some(t.clone())
        } else {
            self.tracked_decision(partition, &t.root)?
        };
        let mut closed = Vec::new();
        let mut next = Some(start.unwrap_or(t.clone()));
        // A chain is at most max_escalations + 1 long; the bound only guards against a cycle.
        let bound = self.topology.escalation.max_escalations as usize + 2;
        while let Some(cur) = next.take() {
            if closed.len() > bound {
                break;
            }
            if cur.open {
                self.count_open(partition, cur.priority, -1)?;
            }
            writes.push(timer(partition, cur.due, &cur.decision_id, false));
            writes.push(Write {
                cf: Cf::Sla,
                key: decision_key(partition, &cur.decision_id),
                value: None,
            });
            closed.push(cur.decision_id.clone());
            if let Some(id) = &cur.next {
                next = if *id == t.decision_id {
                    Some(t.clone())
                } else {
                    self.tracked_decision(partition, id)?
                };
            }
        }
        if !closed.contains(&t.decision_id) {
            if t.open {
                self.count_open(partition, t.priority, -1)?;
            }
            writes.push(timer(partition, t.due, &t.decision_id, false));
            writes.push(Write {
                cf: Cf::Sla,
                key: decision_key(partition, &t.decision_id),
                value: None,
            });
        }
        Ok(())
    }

    /// Fires the due timers of task `partition` (at most [`MAX_FIRED_PER_PUNCTUATION`]): a
    /// breach for each decision still waiting for an acknowledgement, and forgets the
    /// breached decisions whose `sla.ack_retention` is over. Each timer is one processed
    /// "record" (no input, no offset), staged and committed like the others.
    pub fn punctuate(&mut self, partition: i32) -> Result<Vec<Processed>, PipelineError> {
        if !self.sla_enabled() {
            return Ok(Vec::new());
        }
        self.refresh_rules();
        let now = (self.clock)();
        let (from, until) = sla::due_range(partition, now);
        let mut keys: Vec<Vec<u8>> = self
            .store
            .entries_in(Cf::Sla, &from, &until, MAX_FIRED_PER_PUNCTUATION)?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        keys.extend(self.staged.keys_in(Cf::Sla, &from, &until));
        keys.sort();
        keys.dedup();
        keys.truncate(MAX_FIRED_PER_PUNCTUATION);
        let mut fired = Vec::new();
        for key in keys {
            // Fired, cancelled or moved by a record not committed yet.
            if self.staged.get(&self.store, Cf::Sla, &key)?.is_none() {
                continue;
            }
            let Some((due, id)) = sla::parse_timer_key(&key) else {
                continue;
            };
            let id = id.to_string();
            let mut writes = vec![Write {
                cf: Cf::Sla,
                key: key.clone(),
                value: None,
            }];
            let mut outputs = Vec::new();
            let outcome = match self.tracked_decision(partition, &id)? {
                Some(t) if t.due == due && t.open => {
                    self.breach(
                        partition,
                        t,
                        now,
                        Cause::Deadline,
                        &mut writes,
                        &mut outputs,
                    )?;
                    Outcome::Breached
                }
                Some(t) if t.due == due => {
                    writes.push(Write {
                        cf: Cf::Sla,
                        key: decision_key(partition, &t.decision_id),
                        value: None,
                    });
                    Outcome::TimerDone
                }
                // A timer its decision no longer has (it moved, or the decision is gone).
                _ => Outcome::TimerDone,
            };
            let seq = self.next_seq;
            self.next_seq += 1;
            fired.push(self.staged_outcome(seq, outcome, outputs, writes));
        }
        Ok(fired)
    }

    /// Records the breach of decision `t` at `now`: an `SlaBreach`, and a re-route (a new
    /// `RoutedLead` with its own timer) while `sla.max_escalations` allows one and the
    /// script's `escalate`, or else the topology's chain, gives one. `t` stays known, no
    /// longer open, until `sla.ack_retention` has passed.
    fn breach(
        &mut self,
        partition: i32,
        mut t: Tracked,
        now: i64,
        cause: Cause,
        writes: &mut Vec<Write>,
        outputs: &mut Vec<OutputRecord>,
    ) -> Result<(), PipelineError> {
        let level = t.level + 1;
        let window = self.topology.sla[priority_index(t.priority)];
        let overdue_ms = now.saturating_sub(t.deadline).max(0);
        let mut reasons = vec![match cause {
            Cause::Deadline => format!(
                "no acknowledgement within the {} SLA of {}: {} s overdue",
                t.priority.as_str(),
                humantime::format_duration(window),
                overdue_ms / 1000
            ),
            Cause::Rejected { rep } => format!("rejected by {rep}"),
        }];
        let info = BreachInfo {
            priority: t.priority,
            queue: t.queue.clone(),
            owner: t.owner.clone(),
            deadline: t.deadline,
            level,
            minutes_overdue: overdue_ms / 60_000,
            cause: cause.as_str(),
        };
        let contact_key = partition_key(partition, t.contact_id.as_bytes());
        let mut state = match self.staged.get(&self.store, Cf::Contact, &contact_key)? {
            Some(b) => Some(ContactState::from_bytes(&b).map_err(|e| corrupt(Cf::Contact, e))?),
            None => None,
        };
        let max = self.topology.escalation.max_escalations;
        let mut escalated = None;
        if level > max {
            reasons.push(format!(
                "not re-routed: sla.max_escalations ({max}) reached"
            ));
        } else {
            let lead = self.lead_of(&t, state.as_ref())?;
            let mut reps = self.rep_context(partition, &t.contact_id, now)?;
            let decision = if self.rules.has_escalate() {
                match crate::route::reps::within(&mut reps, || self.rules.escalate(&lead, &info)) {
                    Ok(Some(d)) => Some(d),
                    Ok(None) => {
                        reasons.push("not re-routed: escalate returned ()".into());
                        None
                    }
                    Err(failure) => {
                        counter!(m::ESCALATE_FAILURES).increment(1);
                        tracing::warn!(
                            decision_id = %t.decision_id,
                            level,
                            error = %failure,
                            "escalate(lead, breach) failed; the breach is recorded without a re-route"
                        );
                        reasons.push(format!(
                            "not re-routed: escalate failed ({})",
                            failure.class()
                        ));
                        None
                    }
                }
            } else {
                match self.topology.escalation.chain.get(level as usize - 1) {
                    Some(step) => Some(Decision {
                        priority: step.priority.unwrap_or(t.priority),
                        queue: step.queue.clone(),
                        owner: step.owner.clone(),
                        reasons: Vec::new(),
                        score: t.score,
                    }),
                    None => {
                        reasons.push(format!("not re-routed: sla.escalation has no step {level}"));
                        None
                    }
                }
            };
            escalated = decision.map(|d| (lead, d, reps));
        }
        let escalated_id = match escalated {
            None => None,
            Some((lead, mut decision, reps)) => {
                super::assign::correct_owner(reps.as_ref(), &mut decision);
                let id = escalation_id(&t.root, level);
                decision
                    .reasons
                    .push(format!("escalation level {level}: {}", reasons[0]));
                reasons.push(format!(
                    "re-routed to {} ({})",
                    decision.queue,
                    decision.priority.as_str()
                ));
                let envelope = envelope_of(&t);
                let index = priority_index(decision.priority);
                let rules = self.rules.clone();
                let version = rules.version();
                let routed = routed_lead(&RoutedInput {
                    decision_id: id.clone(),
                    envelope: &envelope,
                    lead: &lead,
                    decision: &decision,
                    rule_version: version,
                    routed_at: now,
                    sla_ms: self.topology.sla[index].as_millis() as i64,
                });
                let mut record = routed_record(
                    self.routed_topic(decision.priority),
                    &self.routed[index],
                    &routed,
                    envelope.correlation_id.as_deref(),
                );
                record
                    .headers
                    .push(("sla.level", level.to_string().into_bytes()));
                self.arm(
                    partition,
                    tracked(&routed, &envelope, decision.priority, Some(&t.root), level),
                    writes,
                )?;
                self.book_assignment(
                    partition,
                    &t.contact_id,
                    &id,
                    decision.owner.as_deref(),
                    reps,
                    writes,
                )?;
                if let Some(state) = state.as_mut() {
                    state.previous = Some(PreviousDecision {
                        decision_id: id.clone(),
                        event_id: routed.event_id.clone(),
                        priority: decision.priority,
                        queue: decision.queue.clone(),
                        owner: decision.owner.clone(),
                        score: decision.score,
                        routed_at: now,
                        rule_version: version.to_string(),
                    });
                    writes.push(Write {
                        cf: Cf::Contact,
                        key: contact_key,
                        value: Some(state.to_bytes()),
                    });
                }
                counter!(m::ESCALATIONS, "priority" => decision.priority.as_str()).increment(1);
                counter!(m::ROUTED, "priority" => decision.priority.as_str()).increment(1);
                let assignment = self.assignment(&routed, envelope.correlation_id.as_deref());
                outputs.push(record);
                outputs.extend(assignment);
                Some(id)
            }
        };
        counter!(
            m::SLA_BREACHES,
            "priority" => t.priority.as_str(),
            "queue" => t.queue.clone(),
            "cause" => cause.as_str()
        )
        .increment(1);
        let breach = SlaBreach {
            decision_id: t.decision_id.clone(),
            contact_id: t.contact_id.clone(),
            priority: t.priority.as_str().to_string(),
            queue: t.queue.clone(),
            owner_rep_id: t.owner.clone(),
            level: level as i32,
            sla_deadline: t.deadline,
            breached_at: now,
            escalated_decision_id: escalated_id.clone(),
            reasons,
            routed_at: t.routed_at,
            rule_version: self.rules.version().to_string(),
        };
        let encoder = self
            .breaches
            .as_ref()
            .expect("SLA tracking has its encoder");
        let record = breach_record(
            &self.topology.outputs.escalations,
            encoder,
            &breach,
            &t.event_id,
            t.correlation_id.as_deref(),
        )?;
        outputs.insert(0, record);
        // The breached decision: no longer open, known until a late acknowledgement cannot
        // count any more.
        self.count_open(partition, t.priority, -1)?;
        writes.push(timer(partition, t.due, &t.decision_id, false));
        t.open = false;
        t.next = escalated_id;
        t.due = now.saturating_add(self.topology.escalation.ack_retention.as_millis() as i64);
        writes.push(timer(partition, t.due, &t.decision_id, true));
        writes.push(Write {
            cf: Cf::Sla,
            key: decision_key(partition, &t.decision_id),
            value: Some(t.to_bytes()),
        });
        Ok(())
    }

    /// The lead as `escalate` sees it: the contact as it is now, its account and engagement
    /// statistics, and the event the lead was first decided on.
    fn lead_of(
        &mut self,
        t: &Tracked,
        state: Option<&ContactState>,
    ) -> Result<Lead, PipelineError> {
        let contact = state
            .and_then(|s| s.profile.as_ref())
            .map(|p| p.contact())
            .unwrap_or_else(|| unknown_contact(&t.contact_id));
        let account = self.accounts.match_account(&self.store, &contact)?;
        let engagement = state
            .map(|s| {
                let at = s
                    .history
                    .newest()
                    .unwrap_or(t.occurred_at)
                    .max(t.occurred_at);
                s.history.stats_at(at)
            })
            .unwrap_or_default();
        let score = default_score(&contact, account.as_ref(), &engagement);
        Ok(Lead {
            contact,
            event_type: t.event_type.clone(),
            source: t.source.clone(),
            occurred_at: t.occurred_at,
            score,
            account,
            engagement,
            previous: state.and_then(|s| s.previous.clone()),
        })
    }
}

/// The envelope of the event a tracked lead was first decided on (what its escalations'
/// `RoutedLead`s carry as `event_id`, `occurred_at` and `correlation_id`).
fn envelope_of(t: &Tracked) -> Envelope {
    Envelope {
        event_id: t.event_id.clone(),
        event_type: t.event_type.clone(),
        aggregate_id: t.contact_id.clone(),
        source: t.source.clone(),
        occurred_at: t.occurred_at,
        delivery_attempt: 1,
        schema_version: "1".into(),
        correlation_id: t.correlation_id.clone(),
    }
}

/// A contact of whom nothing but the id is known (its record expired meanwhile).
fn unknown_contact(contact_id: &str) -> Contact {
    Contact {
        contact_id: contact_id.to_string(),
        email: None,
        phone: None,
        first_name: None,
        last_name: None,
        title: None,
        company_name: None,
        company_domain: None,
        country: None,
        region: None,
        lifecycle_stage: None,
        lead_source: None,
        product_interest: None,
        consent_marketing: false,
        attributes: Default::default(),
        updated_at: 0,
    }
}
