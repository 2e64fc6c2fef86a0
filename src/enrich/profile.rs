//! The contact profile: updates merged field by field, the newest `updated_at` winning.
//!
//! An absent field in an update means "not provided", never "erase". On equal timestamps the
//! larger value wins, so the result does not depend on the order updates arrive in.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::Contact;

/// One field's value and when the source last set it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Stamped<T> {
    value: T,
    at: i64,
}

impl<T: PartialOrd> Stamped<T> {
    fn offer(&mut self, value: T, at: i64) {
        if at > self.at || (at == self.at && value > self.value) {
            self.value = value;
            self.at = at;
        }
    }
}

/// The merged state of one contact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    contact_id: String,
    strings: [Stamped<Option<String>>; 12],
    consent_marketing: Stamped<bool>,
    attributes: BTreeMap<String, Stamped<String>>,
    updated_at: i64,
}

/// The optional string fields, in a fixed order.
fn string_fields(c: &Contact) -> [&Option<String>; 12] {
    [
        &c.email,
        &c.phone,
        &c.first_name,
        &c.last_name,
        &c.title,
        &c.company_name,
        &c.company_domain,
        &c.country,
        &c.region,
        &c.lifecycle_stage,
        &c.lead_source,
        &c.product_interest,
    ]
}

impl Profile {
    pub fn new(contact_id: &str) -> Profile {
        Profile {
            contact_id: contact_id.to_string(),
            strings: Default::default(),
            consent_marketing: Stamped {
                value: false,
                at: i64::MIN,
            },
            attributes: BTreeMap::new(),
            updated_at: i64::MIN,
        }
    }

    /// Merges one contact update.
    pub fn merge(&mut self, update: &Contact) {
        let at = update.updated_at;
        for (slot, value) in self.strings.iter_mut().zip(string_fields(update)) {
            if let Some(v) = value {
                slot.offer(Some(v.clone()), at);
            }
        }
        self.consent_marketing.offer(update.consent_marketing, at);
        for (k, v) in &update.attributes {
            self.attributes
                .entry(k.clone())
                .or_insert_with(|| Stamped {
                    value: String::new(),
                    at: i64::MIN,
                })
                .offer(v.clone(), at);
        }
        self.updated_at = self.updated_at.max(at);
    }

    /// The merged contact.
    pub fn contact(&self) -> Contact {
        let s = |i: usize| self.strings[i].value.clone();
        Contact {
            contact_id: self.contact_id.clone(),
            email: s(0),
            phone: s(1),
            first_name: s(2),
            last_name: s(3),
            title: s(4),
            company_name: s(5),
            company_domain: s(6),
            country: s(7),
            region: s(8),
            lifecycle_stage: s(9),
            lead_source: s(10),
            product_interest: s(11),
            consent_marketing: self.consent_marketing.value,
            attributes: self
                .attributes
                .iter()
                .map(|(k, v)| (k.clone(), v.value.clone()))
                .collect(),
            updated_at: self.updated_at,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("postcard serializes plain structs")
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Profile, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(at: i64, title: Option<&str>, stage: Option<&str>) -> Contact {
        Contact {
            contact_id: "ct_1".into(),
            email: Some("a@acme.com".into()),
            phone: None,
            first_name: None,
            last_name: None,
            title: title.map(Into::into),
            company_name: None,
            company_domain: None,
            country: None,
            region: None,
            lifecycle_stage: stage.map(Into::into),
            lead_source: None,
            product_interest: None,
            consent_marketing: true,
            attributes: [("utm".to_string(), format!("v{at}"))].into(),
            updated_at: at,
        }
    }

    #[test]
    fn newest_wins_per_field_and_absent_never_erases() {
        let mut p = Profile::new("ct_1");
        p.merge(&update(10, Some("CTO"), Some("lead")));
        p.merge(&update(30, None, Some("sql")));
        p.merge(&update(20, Some("VP Sales"), Some("mql"))); // late, older than the sql update
        let c = p.contact();
        assert_eq!(
            c.title.as_deref(),
            Some("VP Sales"),
            "title set at 20 beats 10"
        );
        assert_eq!(
            c.lifecycle_stage.as_deref(),
            Some("sql"),
            "stage set at 30 beats 20"
        );
        assert_eq!(c.attributes["utm"], "v30");
        assert_eq!(c.updated_at, 30);
        assert_eq!(Profile::from_bytes(&p.to_bytes()).unwrap(), p);
    }

    #[test]
    fn order_does_not_matter() {
        let updates = [
            update(5, Some("A"), None),
            update(5, Some("B"), Some("mql")),
            update(7, None, Some("lead")),
            update(1, Some("C"), Some("sql")),
        ];
        let mut reference = Profile::new("ct_1");
        updates.iter().for_each(|u| reference.merge(u));
        for rotation in 0..updates.len() {
            let mut p = Profile::new("ct_1");
            updates
                .iter()
                .cycle()
                .skip(rotation)
                .take(updates.len())
                .for_each(|u| p.merge(u));
            assert_eq!(p.contact(), reference.contact());
        }
    }
}
