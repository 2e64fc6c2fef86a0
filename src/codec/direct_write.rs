//! Writing the output records straight from their structs to Avro binary, in the canonical
//! schema's field order (Avro's binary encoding: zigzag varints, length-prefixed UTF-8
//! strings, `["null", T]` unions as a branch index then the value, arrays as one block of
//! items then an empty block, doubles as 8 little-endian bytes).
//!
//! apache-avro's serde writer looks each field up in the schema by name and checks its type
//! as it goes; for a struct whose schema we own that is all known when the code is written.
//! The differential tests below hold the bytes to apache-avro's, value for value.

use super::SchemaKind;
use crate::model::RoutedLead;

/// An output record that can be written as a datum of its canonical schema.
pub trait WriteDirect {
    /// The schema it is written in.
    const KIND: SchemaKind;
    /// Appends the datum to `out`.
    fn write_direct(&self, out: &mut Vec<u8>);
}

impl WriteDirect for RoutedLead {
    const KIND: SchemaKind = SchemaKind::RoutedLead;

    fn write_direct(&self, out: &mut Vec<u8>) {
        let mut w = Writer(out);
        w.string(&self.decision_id);
        w.string(&self.event_id);
        w.string(&self.contact_id);
        w.string(&self.priority);
        w.string(&self.queue);
        w.optional_string(self.owner_rep_id.as_deref());
        w.strings(&self.reasons);
        w.string(&self.rule_version);
        w.long(self.score.into());
        w.long(self.sla_deadline);
        w.long(self.occurred_at);
        w.long(self.routed_at);
        w.optional_string(self.email.as_deref());
        w.optional_string(self.first_name.as_deref());
        w.optional_string(self.last_name.as_deref());
        w.optional_string(self.company_name.as_deref());
        w.optional_string(self.country.as_deref());
        w.optional_string(self.region.as_deref());
        w.optional_string(self.account_id.as_deref());
        w.optional_string(self.account_name.as_deref());
        w.optional_string(self.account_tier.as_deref());
        match self.employees {
            Some(n) => {
                w.long(1);
                w.long(n.into());
            }
            None => w.long(0),
        }
        match self.annual_revenue {
            Some(x) => {
                w.long(1);
                w.0.extend_from_slice(&x.to_le_bytes());
            }
            None => w.long(0),
        }
        w.long(self.engagements_24h.into());
        w.long(self.engagements_7d.into());
    }
}

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    /// A zigzag varint (`int` and `long` alike).
    fn long(&mut self, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            self.0.push((z as u8) | 0x80);
            z >>= 7;
        }
        self.0.push(z as u8);
    }

    fn string(&mut self, s: &str) {
        self.long(s.len() as i64);
        self.0.extend_from_slice(s.as_bytes());
    }

    /// `["null", "string"]`.
    fn optional_string(&mut self, s: Option<&str>) {
        match s {
            Some(s) => {
                self.long(1);
                self.string(s);
            }
            None => self.long(0),
        }
    }

    /// An array of strings: one block, then the empty block that ends it.
    fn strings(&mut self, items: &[String]) {
        if !items.is_empty() {
            self.long(items.len() as i64);
            for s in items {
                self.string(s);
            }
        }
        self.long(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Encoder, SchemaKind};
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            "[a-z0-9_-]{1,12}",
            "\\PC{0,40}",
            // Long enough that its length takes a varint of two bytes or more.
            "[a-zA-Z ]{64,300}",
        ]
    }

    fn optional() -> impl Strategy<Value = Option<String>> {
        proptest::option::of(text())
    }

    fn long() -> impl Strategy<Value = i64> {
        prop_oneof![
            Just(0i64),
            Just(-1),
            Just(i64::MIN),
            Just(i64::MAX),
            -200i64..200,
            any::<i64>()
        ]
    }

    fn int() -> impl Strategy<Value = i32> {
        prop_oneof![Just(i32::MIN), Just(i32::MAX), -200i32..200, any::<i32>()]
    }

    fn lead() -> impl Strategy<Value = RoutedLead> {
        let ids = (text(), text(), text(), text(), text(), optional());
        let decision = (
            proptest::collection::vec(text(), 0..5),
            text(),
            int(),
            long(),
            long(),
            long(),
        );
        let contact = (
            optional(),
            optional(),
            optional(),
            optional(),
            optional(),
            optional(),
        );
        let account = (
            optional(),
            optional(),
            optional(),
            proptest::option::of(int()),
            proptest::option::of(prop_oneof![
                any::<f64>(),
                Just(0.0),
                Just(-0.0),
                Just(f64::INFINITY)
            ]),
            int(),
            int(),
        );
        (ids, decision, contact, account).prop_map(
            |(
                (decision_id, event_id, contact_id, priority, queue, owner_rep_id),
                (reasons, rule_version, score, sla_deadline, occurred_at, routed_at),
                (email, first_name, last_name, company_name, country, region),
                (
                    account_id,
                    account_name,
                    account_tier,
                    employees,
                    annual_revenue,
                    engagements_24h,
                    engagements_7d,
                ),
            )| RoutedLead {
                decision_id,
                event_id,
                contact_id,
                priority,
                queue,
                owner_rep_id,
                reasons,
                rule_version,
                score,
                sla_deadline,
                occurred_at,
                routed_at,
                email,
                first_name,
                last_name,
                company_name,
                country,
                region,
                account_id,
                account_name,
                account_tier,
                employees,
                annual_revenue,
                engagements_24h,
                engagements_7d,
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        /// Byte for byte what apache-avro writes for the canonical schema.
        #[test]
        fn a_routed_lead_is_written_as_apache_avro_writes_it(lead in lead()) {
            let reference = Encoder::new(SchemaKind::RoutedLead, 7).unwrap();
            let mut direct = Vec::new();
            lead.write_direct(&mut direct);
            prop_assert_eq!(&direct, &reference.datum(&lead).unwrap());
            prop_assert_eq!(reference.encode_direct(&lead), reference.encode(&lead).unwrap());
        }
    }
}
