//! Reading the input events straight from Avro binary into their structs, for datums written
//! with exactly our canonical schema (the common case, see [`super::DatumDecoder`]).
//!
//! apache-avro builds a `Value` tree and then deserializes it: two passes and an allocation
//! per field. Here each field is read in schema order (Avro's binary encoding: zigzag varints,
//! length-prefixed UTF-8 strings, `["null", T]` unions as a branch index, maps as blocks of
//! entries) into the struct directly. What apache-avro refuses is refused here too (a
//! truncated datum, a varint longer than 10 bytes, an `int` out of range, a boolean other than
//! 0 or 1, a union branch that does not exist, invalid UTF-8), so a record goes to the DLQ or
//! not exactly as before; the differential tests below hold the two readers to the same answers.

use std::collections::BTreeMap;

use crate::model::{
    Contact, ContactEvent, Engagement, EngagementEvent, Envelope, Event, LeadAck, LeadAckEvent,
};

/// Why a datum cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} at byte {at}")]
pub struct Malformed {
    pub what: &'static str,
    pub at: usize,
}

/// An input event that can be read from a datum of its canonical schema.
pub trait ReadDirect: Sized {
    fn read_direct(datum: &[u8]) -> Result<Self, Malformed>;
}

impl ReadDirect for ContactEvent {
    fn read_direct(datum: &[u8]) -> Result<Self, Malformed> {
        let mut r = Reader::new(datum);
        let envelope = r.envelope()?;
        let payload = Contact {
            contact_id: r.string()?,
            email: r.optional_string()?,
            phone: r.optional_string()?,
            first_name: r.optional_string()?,
            last_name: r.optional_string()?,
            title: r.optional_string()?,
            company_name: r.optional_string()?,
            company_domain: r.optional_string()?,
            country: r.optional_string()?,
            region: r.optional_string()?,
            lifecycle_stage: r.optional_string()?,
            lead_source: r.optional_string()?,
            product_interest: r.optional_string()?,
            consent_marketing: r.boolean()?,
            attributes: r.string_map()?,
            updated_at: r.long()?,
        };
        Ok(Event { envelope, payload })
    }
}

impl ReadDirect for EngagementEvent {
    fn read_direct(datum: &[u8]) -> Result<Self, Malformed> {
        let mut r = Reader::new(datum);
        let envelope = r.envelope()?;
        let payload = Engagement {
            engagement_id: r.string()?,
            contact_id: r.string()?,
            kind: r.string()?,
            channel: r.optional_string()?,
            campaign: r.optional_string()?,
            outcome: r.optional_string()?,
            occurred_at: r.long()?,
        };
        Ok(Event { envelope, payload })
    }
}

impl ReadDirect for LeadAckEvent {
    fn read_direct(datum: &[u8]) -> Result<Self, Malformed> {
        let mut r = Reader::new(datum);
        let envelope = r.envelope()?;
        let payload = LeadAck {
            decision_id: r.string()?,
            contact_id: r.string()?,
            rep_id: r.string()?,
            action: r.string()?,
            occurred_at: r.long()?,
        };
        Ok(Event { envelope, payload })
    }
}

struct Reader<'a> {
    datum: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(datum: &'a [u8]) -> Reader<'a> {
        Reader { datum, at: 0 }
    }

    fn fail<T>(&self, what: &'static str) -> Result<T, Malformed> {
        Err(Malformed { what, at: self.at })
    }

    fn byte(&mut self) -> Result<u8, Malformed> {
        match self.datum.get(self.at) {
            Some(&b) => {
                self.at += 1;
                Ok(b)
            }
            None => self.fail("unexpected end of datum"),
        }
    }

    /// A zigzag varint of at most 10 bytes.
    fn long(&mut self) -> Result<i64, Malformed> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
            }
        }
        self.fail("varint longer than 10 bytes")
    }

    fn int(&mut self) -> Result<i32, Malformed> {
        let v = self.long()?;
        i32::try_from(v).or_else(|_| self.fail("int out of range"))
    }

    fn boolean(&mut self) -> Result<bool, Malformed> {
        match self.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => self.fail("boolean neither 0 nor 1"),
        }
    }

    fn string(&mut self) -> Result<String, Malformed> {
        let len = self.long()?;
        let Ok(len) = usize::try_from(len) else {
            return self.fail("negative string length");
        };
        let Some(bytes) = self.datum.get(self.at..).and_then(|rest| rest.get(..len)) else {
            return self.fail("string longer than the datum");
        };
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                self.at += len;
                Ok(s.to_string())
            }
            Err(_) => self.fail("string is not UTF-8"),
        }
    }

    /// A `["null", "string"]` union.
    fn optional_string(&mut self) -> Result<Option<String>, Malformed> {
        match self.long()? {
            0 => Ok(None),
            1 => self.string().map(Some),
            _ => self.fail("union branch out of range"),
        }
    }

    /// A map of strings: blocks of entries, a block with a negative count also carries its
    /// size in bytes, and a count of 0 ends the map.
    fn string_map(&mut self) -> Result<BTreeMap<String, String>, Malformed> {
        let mut map = BTreeMap::new();
        loop {
            let count = self.long()?;
            if count == 0 {
                return Ok(map);
            }
            if count < 0 {
                self.long()?; // the block's size in bytes, not needed to read it
            }
            for _ in 0..count.unsigned_abs() {
                let key = self.string()?;
                let value = self.string()?;
                map.insert(key, value);
            }
        }
    }

    fn envelope(&mut self) -> Result<Envelope, Malformed> {
        Ok(Envelope {
            event_id: self.string()?,
            event_type: self.string()?,
            aggregate_id: self.string()?,
            source: self.string()?,
            occurred_at: self.long()?,
            delivery_attempt: self.int()?,
            schema_version: self.string()?,
            correlation_id: self.optional_string()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{canonical, Encoder, SchemaKind};
    use crate::gen::{GenConfig, StreamEvent, Traffic};
    use apache_avro::from_value;
    use apache_avro::reader::datum::GenericDatumReader;
    use serde::de::DeserializeOwned;

    /// What apache-avro reads from `datum` (canonical writer and reader).
    fn reference<T: DeserializeOwned>(kind: SchemaKind, mut datum: &[u8]) -> Option<T> {
        let reader = GenericDatumReader::builder(canonical().get(kind))
            .build()
            .unwrap();
        let value = reader.read_value(&mut datum).ok()?;
        from_value(&value).ok()
    }

    fn traffic() -> Vec<StreamEvent> {
        let config = GenConfig::in_process(7);
        let mut traffic = Traffic::new(&config);
        (0..600).map(|_| traffic.next_event().event).collect()
    }

    fn first_contact() -> ContactEvent {
        traffic()
            .into_iter()
            .find_map(|e| match e {
                StreamEvent::Contact(e) => Some(e),
                StreamEvent::Engagement(_) => None,
            })
            .expect("the traffic has contact events")
    }

    fn datums() -> Vec<(SchemaKind, Vec<u8>)> {
        let contacts = Encoder::new(SchemaKind::ContactEvent, 1).unwrap();
        let engagements = Encoder::new(SchemaKind::EngagementEvent, 2).unwrap();
        traffic()
            .iter()
            .map(|e| match e {
                StreamEvent::Contact(e) => (
                    SchemaKind::ContactEvent,
                    contacts.encode(e).unwrap()[5..].to_vec(),
                ),
                StreamEvent::Engagement(e) => (
                    SchemaKind::EngagementEvent,
                    engagements.encode(e).unwrap()[5..].to_vec(),
                ),
            })
            .collect()
    }

    /// Both readers give the same event, or both refuse the datum.
    fn agree(kind: SchemaKind, datum: &[u8]) {
        match kind {
            SchemaKind::ContactEvent => assert_eq!(
                ContactEvent::read_direct(datum).ok(),
                reference::<ContactEvent>(kind, datum),
                "{datum:?}"
            ),
            _ => assert_eq!(
                EngagementEvent::read_direct(datum).ok(),
                reference::<EngagementEvent>(kind, datum),
                "{datum:?}"
            ),
        }
    }

    #[test]
    fn generated_events_read_as_apache_avro_reads_them() {
        let datums = datums();
        assert!(datums.iter().any(|(k, _)| *k == SchemaKind::ContactEvent));
        assert!(datums
            .iter()
            .any(|(k, _)| *k == SchemaKind::EngagementEvent));
        for (kind, datum) in &datums {
            agree(*kind, datum);
            let read_back = match kind {
                SchemaKind::ContactEvent => ContactEvent::read_direct(datum).is_ok(),
                _ => EngagementEvent::read_direct(datum).is_ok(),
            };
            assert!(read_back, "a valid datum was refused");
        }
    }

    #[test]
    fn a_contact_with_attributes_and_every_optional_field_reads_the_same() {
        let contacts = Encoder::new(SchemaKind::ContactEvent, 1).unwrap();
        let mut event = first_contact();
        event.envelope.correlation_id = Some("corr-ü".into());
        event.envelope.delivery_attempt = i32::MIN;
        event.payload.phone = Some(String::new());
        event.payload.attributes = (0..40)
            .map(|i| (format!("key-{i}"), "v".repeat(i)))
            .collect();
        event.payload.updated_at = i64::MAX;
        let datum = contacts.encode(&event).unwrap()[5..].to_vec();
        assert_eq!(ContactEvent::read_direct(&datum), Ok(event));
    }

    #[test]
    fn truncated_and_corrupted_datums_are_refused_as_apache_avro_refuses_them() {
        for (kind, datum) in datums().iter().take(60) {
            for len in 0..datum.len() {
                agree(*kind, &datum[..len]);
            }
            for i in 0..datum.len() {
                for flip in [0x01u8, 0x80, 0xff] {
                    let mut bad = datum.clone();
                    bad[i] ^= flip;
                    agree(*kind, &bad);
                }
            }
        }
    }

    #[test]
    fn acknowledgements_read_as_apache_avro_reads_them_whole_cut_or_corrupted() {
        let acks = Encoder::new(SchemaKind::LeadAckEvent, 3).unwrap();
        let mut envelope = first_contact().envelope;
        envelope.event_type = "Lead.acknowledged".into();
        for (i, action) in ["accepted", "contacted", "rejected", "reassigned", ""]
            .iter()
            .enumerate()
        {
            envelope.correlation_id = (i % 2 == 0).then(|| format!("corr-{i}"));
            let ack = LeadAckEvent {
                envelope: envelope.clone(),
                payload: LeadAck {
                    decision_id: format!("d-{i}"),
                    contact_id: envelope.aggregate_id.clone(),
                    rep_id: "rep_ü".into(),
                    action: action.to_string(),
                    occurred_at: i64::MIN + i as i64,
                },
            };
            let datum = acks.encode(&ack).unwrap()[5..].to_vec();
            assert_eq!(LeadAckEvent::read_direct(&datum), Ok(ack));
            let reference_ack = |d: &[u8]| reference::<LeadAckEvent>(SchemaKind::LeadAckEvent, d);
            for len in 0..datum.len() {
                assert_eq!(
                    LeadAckEvent::read_direct(&datum[..len]).ok(),
                    reference_ack(&datum[..len])
                );
            }
            for at in 0..datum.len() {
                let mut bad = datum.clone();
                bad[at] ^= 0x80;
                assert_eq!(
                    LeadAckEvent::read_direct(&bad).ok(),
                    reference_ack(&bad),
                    "{bad:?}"
                );
            }
        }
    }

    #[test]
    fn blocks_of_a_map_with_a_byte_size_are_read() {
        // The contact up to its attributes, then one block of -1 entry with its size in
        // bytes, the end of the map, and updated_at.
        let contacts = Encoder::new(SchemaKind::ContactEvent, 1).unwrap();
        let mut event = first_contact();
        event.payload.attributes.clear();
        let plain = contacts.encode(&event).unwrap()[5..].to_vec();
        // With no attributes the map is the single 0 byte before updated_at's varint.
        let zigzag = ((event.payload.updated_at << 1) ^ (event.payload.updated_at >> 63)) as u64;
        let updated_at_len = (64 - zigzag.leading_zeros()).div_ceil(7).max(1) as usize;
        let map_at = plain.len() - updated_at_len - 1;
        assert_eq!(plain[map_at], 0);
        let mut datum = plain[..map_at].to_vec();
        // count -1 (zigzag 1), size 4 (zigzag 8), "k" (len 1 → 2), "v"
        datum.extend([1, 8, 2, b'k', 2, b'v', 0]);
        datum.extend(&plain[map_at + 1..]);
        agree(SchemaKind::ContactEvent, &datum);
        let read = ContactEvent::read_direct(&datum).unwrap();
        assert_eq!(
            read.payload.attributes.get("k").map(String::as_str),
            Some("v")
        );
    }
}
