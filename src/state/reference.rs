//! Reference tables read by every instance in full (Kafka Streams' GlobalKTable): accounts by
//! id and by domain, reps by id. Updates are applied straight to the store: they come from
//! compacted topics that are re-read from the beginning at every start.

use super::{Cf, StateError, StateStore, Write};
use crate::model::{Account, Rep};

/// Lower-case, trimmed, without a leading `www.`.
pub fn normalize_domain(domain: &str) -> String {
    let d = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    d.strip_prefix("www.").map(str::to_string).unwrap_or(d)
}

fn decode<T: serde::de::DeserializeOwned>(cf: Cf, bytes: &[u8]) -> Result<T, StateError> {
    postcard::from_bytes(bytes).map_err(|e| StateError::Corrupt {
        cf: cf.name(),
        reason: e.to_string(),
    })
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Serializing plain structs into a Vec cannot fail.
    postcard::to_stdvec(value).expect("postcard serializes plain structs")
}

pub fn account(store: &StateStore, id: &str) -> Result<Option<Account>, StateError> {
    store
        .get(Cf::Accounts, id.as_bytes())?
        .map(|b| decode(Cf::Accounts, &b))
        .transpose()
}

pub fn account_by_domain(store: &StateStore, domain: &str) -> Result<Option<Account>, StateError> {
    match store.get(Cf::Domains, normalize_domain(domain).as_bytes())? {
        Some(id) => account(store, &String::from_utf8_lossy(&id)),
        None => Ok(None),
    }
}

pub fn rep(store: &StateStore, id: &str) -> Result<Option<Rep>, StateError> {
    store
        .get(Cf::Reps, id.as_bytes())?
        .map(|b| decode(Cf::Reps, &b))
        .transpose()
}

/// Every rep of the reps table.
pub fn reps(store: &StateStore) -> Result<Vec<Rep>, StateError> {
    store
        .entries(Cf::Reps)?
        .iter()
        .map(|(_, value)| decode(Cf::Reps, value))
        .collect()
}

/// Upserts (or, with `None`, deletes) the account under `key`, keeping the domain index true.
pub fn apply_account(
    store: &StateStore,
    key: &str,
    account: Option<&Account>,
) -> Result<(), StateError> {
    let mut writes = Vec::new();
    let old_domain = self::account(store, key)?.map(|a| normalize_domain(&a.domain));
    let new_domain = account.map(|a| normalize_domain(&a.domain));
    if let Some(old) = old_domain.filter(|old| Some(old) != new_domain.as_ref()) {
        // Only drop the index entry if it still points at this account.
        if store.get(Cf::Domains, old.as_bytes())?.as_deref() == Some(key.as_bytes()) {
            writes.push(Write {
                cf: Cf::Domains,
                key: old.into_bytes(),
                value: None,
            });
        }
    }
    match account {
        Some(a) => {
            writes.push(Write {
                cf: Cf::Accounts,
                key: key.as_bytes().to_vec(),
                value: Some(encode(a)),
            });
            if let Some(domain) = new_domain.filter(|d| !d.is_empty()) {
                writes.push(Write {
                    cf: Cf::Domains,
                    key: domain.into_bytes(),
                    value: Some(key.as_bytes().to_vec()),
                });
            }
        }
        None => writes.push(Write {
            cf: Cf::Accounts,
            key: key.as_bytes().to_vec(),
            value: None,
        }),
    }
    store.write_reference(&writes)
}

pub fn apply_rep(store: &StateStore, key: &str, rep: Option<&Rep>) -> Result<(), StateError> {
    store.write_reference(&[Write {
        cf: Cf::Reps,
        key: key.as_bytes().to_vec(),
        value: rep.map(encode),
    }])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn acme(domain: &str) -> Account {
        Account {
            account_id: "acc_1".into(),
            domain: domain.into(),
            name: "Acme".into(),
            employees: Some(5000),
            annual_revenue: None,
            industry: None,
            region: Some("NA".into()),
            tier: Some("enterprise".into()),
            owner_rep_id: None,
            updated_at: 1,
        }
    }

    #[test]
    fn domain_index_follows_upserts_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path(), Duration::from_secs(60)).unwrap();
        apply_account(&store, "acc_1", Some(&acme("WWW.Acme.com"))).unwrap();
        assert_eq!(
            account_by_domain(&store, "acme.com")
                .unwrap()
                .unwrap()
                .account_id,
            "acc_1"
        );
        apply_account(&store, "acc_1", Some(&acme("acme.io"))).unwrap();
        assert!(account_by_domain(&store, "acme.com").unwrap().is_none());
        assert!(account_by_domain(&store, "acme.io").unwrap().is_some());
        apply_account(&store, "acc_1", None).unwrap();
        assert!(account(&store, "acc_1").unwrap().is_none());
        assert!(account_by_domain(&store, "acme.io").unwrap().is_none());
    }
}
