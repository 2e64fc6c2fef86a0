//! `leadflow explain CONTACT_ID`: a contact's trail from the audit topic, oldest first: every
//! event that reached routing, what came of it and why.
//!
//! Only the contact's partition is read (the audit topic is keyed by contact_id and written
//! with Kafka's default partitioner, `kafka::partition`), from its start to its end now.

use std::time::Duration;

use anyhow::{bail, Context};
use rdkafka::Message;

use crate::codec::{RegistryClient, SchemaKind};
use crate::kafka::KafkaSettings;
use crate::model::LeadAudit;
use crate::route::trace::Step;

/// A contact's audit records, in the order they were written, and where they were read.
#[derive(Debug)]
pub struct Trail {
    pub topic: String,
    pub partition: i32,
    pub records: Vec<LeadAudit>,
}

/// Reads `contact_id`'s records of the audit `topic`.
pub async fn read(
    settings: &KafkaSettings,
    registry: &RegistryClient,
    topic: &str,
    contact_id: &str,
    timeout: Duration,
) -> anyhow::Result<Trail> {
    let (settings, name, key) = (settings.clone(), topic.to_string(), contact_id.to_string());
    let (partition, messages) = tokio::task::spawn_blocking(move || {
        let mut partition = None;
        let mut messages = Vec::new();
        crate::kafka::read::for_each_to_end_of(
            &settings,
            &name,
            |all| {
                let p = crate::kafka::partition::for_key(key.as_bytes(), all.len() as i32);
                partition = (!all.is_empty()).then_some(p);
                partition.into_iter().collect()
            },
            timeout,
            |m| {
                if m.key() == Some(key.as_bytes()) {
                    messages.push(m);
                }
            },
        )?;
        anyhow::Ok((partition, messages))
    })
    .await??;
    let Some(partition) = partition else {
        bail!("the audit topic {topic} does not exist: name it as outputs.audit in the topology, create it (leadflow topics create) and restart the processor");
    };
    let mut records = Vec::with_capacity(messages.len());
    for m in messages {
        let at = format!("{topic}:{partition}@{}", m.offset());
        let Some(payload) = m.payload() else { continue };
        let (id, datum) = crate::codec::unframe(payload)
            .with_context(|| format!("{at}: not in the Confluent wire format"))?;
        let writer = registry
            .schema_by_id(id)
            .await
            .with_context(|| format!("{at}: cannot fetch its schema {id}"))?;
        let audit = crate::codec::decode::<LeadAudit>(&writer, SchemaKind::LeadAudit, datum)
            .with_context(|| format!("{at}: not a LeadAudit"))?;
        records.push(audit);
    }
    Ok(Trail {
        topic: topic.to_string(),
        partition,
        records,
    })
}

impl Trail {
    /// For people: a header, then per record its time, event, outcome, reasons and trace.
    pub fn render(&self, contact_id: &str) -> String {
        let mut out = format!(
            "contact {contact_id}: {} audit record(s) on {} (partition {})\n",
            self.records.len(),
            self.topic,
            self.partition
        );
        for r in &self.records {
            out += &format!(
                "\n{}  {} {}  rule_version {}\n",
                time(r.occurred_at),
                r.event_type,
                r.event_id,
                r.rule_version
            );
            out += &format!("  outcome: {}\n", outcome(r));
            for reason in &r.reasons {
                out += &format!("    - {reason}\n");
            }
            if let Some(e) = &r.error {
                out += &format!("  error: {e}\n");
            }
            if !r.trace.is_empty() {
                out += "  what fired:\n";
                for s in &r.trace {
                    out += &format!("    {}\n", Step::from(s).describe());
                }
                if r.trace_truncated > 0 {
                    out += &format!("    ... and {} more steps\n", r.trace_truncated);
                }
            }
        }
        out
    }
}

fn outcome(r: &LeadAudit) -> String {
    match r.outcome.as_str() {
        "routed" => format!(
            "routed to {}, queue {}, {}, score {}",
            r.priority.as_deref().unwrap_or("?"),
            r.queue.as_deref().unwrap_or("?"),
            r.owner_rep_id
                .as_deref()
                .map_or("no owner".to_string(), |o| format!("owner {o}")),
            r.score.map_or("?".to_string(), |s| s.to_string())
        ),
        "none" => "no decision (route returned ())".to_string(),
        "unknown_contact" => {
            "not routed: an engagement of a contact with no profile yet".to_string()
        }
        class => format!("{class} (the event is on the DLQ)"),
    }
}

fn time(ms: i64) -> String {
    match std::time::UNIX_EPOCH.checked_add(Duration::from_millis(ms.max(0) as u64)) {
        Some(t) => humantime::format_rfc3339_millis(t).to_string(),
        None => ms.to_string(),
    }
}
