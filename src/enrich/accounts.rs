//! Matching a contact to an account: by company domain, else by the e-mail's domain
//! (free-mail domains never match).

use std::collections::HashMap;

use crate::model::{Account, Contact};
use crate::state::reference::{account_by_domain, normalize_domain};
use crate::state::{StateError, StateStore};

/// Consumer mailbox providers; a contact's address there says nothing about their company.
pub const FREE_MAIL_DOMAINS: &[&str] = &[
    "gmail.com",
    "googlemail.com",
    "yahoo.com",
    "yahoo.co.uk",
    "ymail.com",
    "outlook.com",
    "hotmail.com",
    "hotmail.co.uk",
    "live.com",
    "msn.com",
    "icloud.com",
    "me.com",
    "mac.com",
    "aol.com",
    "proton.me",
    "protonmail.com",
    "gmx.de",
    "gmx.net",
    "web.de",
    "mail.com",
    "yandex.ru",
    "qq.com",
    "163.com",
    "zoho.com",
    "fastmail.com",
];

pub fn is_free_mail(domain: &str) -> bool {
    FREE_MAIL_DOMAINS.contains(&normalize_domain(domain).as_str())
}

/// The domain part of an e-mail address, if it has one.
pub fn email_domain(email: &str) -> Option<&str> {
    email
        .rsplit_once('@')
        .map(|(_, d)| d)
        .filter(|d| !d.is_empty())
}

/// Most domains one cache holds; over it, the cache starts again empty.
const MAX_CACHED_DOMAINS: usize = 65_536;

/// Matches contacts to accounts, remembering the answer per domain.
///
/// Nearly every routed event looks up an account, and most name one of a few thousand company
/// domains: from RocksDB that is two lookups (domain index, then account) and a decode each
/// time. The cache forgets everything as soon as any reference table changes
/// ([`StateStore::reference_version`]), so a match is never staler than the store's.
#[derive(Debug, Default)]
pub struct AccountMatcher {
    version: u64,
    by_domain: HashMap<String, Option<Account>>,
}

impl AccountMatcher {
    /// The account for `contact`: its company domain first, then its e-mail's domain.
    pub fn match_account(
        &mut self,
        store: &StateStore,
        contact: &Contact,
    ) -> Result<Option<Account>, StateError> {
        // Read before any store lookup: a table changed after this is seen next time.
        let version = store.reference_version();
        if version != self.version {
            self.by_domain.clear();
            self.version = version;
        }
        if let Some(domain) = contact.company_domain.as_deref() {
            if let Some(account) = self.by_domain(store, domain)? {
                return Ok(Some(account));
            }
        }
        match contact.email.as_deref().and_then(email_domain) {
            Some(domain) => self.by_domain(store, domain),
            None => Ok(None),
        }
    }

    /// The account of `domain`; never one for a free-mail domain. Normalizes the domain once.
    fn by_domain(
        &mut self,
        store: &StateStore,
        domain: &str,
    ) -> Result<Option<Account>, StateError> {
        let domain = normalize_domain(domain);
        if FREE_MAIL_DOMAINS.contains(&domain.as_str()) {
            return Ok(None);
        }
        if let Some(known) = self.by_domain.get(&domain) {
            return Ok(known.clone());
        }
        let found = account_by_domain(store, &domain)?;
        if self.by_domain.len() >= MAX_CACHED_DOMAINS {
            self.by_domain.clear();
        }
        self.by_domain.insert(domain, found.clone());
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::reference::apply_account;
    use std::time::Duration;

    fn account(id: &str, domain: &str) -> Account {
        Account {
            account_id: id.into(),
            domain: domain.into(),
            name: "Acme".into(),
            employees: Some(50),
            annual_revenue: None,
            industry: None,
            region: None,
            tier: None,
            owner_rep_id: None,
            updated_at: 1,
        }
    }

    fn contact(company_domain: Option<&str>, email: &str) -> Contact {
        Contact {
            contact_id: "ct_1".into(),
            email: Some(email.into()),
            phone: None,
            first_name: None,
            last_name: None,
            title: None,
            company_name: None,
            company_domain: company_domain.map(str::to_string),
            country: None,
            region: None,
            lifecycle_stage: None,
            lead_source: None,
            product_interest: None,
            consent_marketing: true,
            attributes: Default::default(),
            updated_at: 1,
        }
    }

    fn matched(m: &mut AccountMatcher, store: &StateStore, c: &Contact) -> Option<String> {
        m.match_account(store, c).unwrap().map(|a| a.account_id)
    }

    #[test]
    fn company_domain_first_then_email_never_free_mail() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path(), Duration::from_secs(60)).unwrap();
        apply_account(&store, "acc_1", Some(&account("acc_1", "acme.com"))).unwrap();
        apply_account(&store, "acc_2", Some(&account("acc_2", "beta.io"))).unwrap();
        apply_account(&store, "acc_3", Some(&account("acc_3", "gmail.com"))).unwrap();
        let mut m = AccountMatcher::default();
        let both = contact(Some("WWW.Acme.com"), "x@beta.io");
        assert_eq!(matched(&mut m, &store, &both).as_deref(), Some("acc_1"));
        let unknown_company = contact(Some("nobody.org"), "x@beta.io");
        assert_eq!(
            matched(&mut m, &store, &unknown_company).as_deref(),
            Some("acc_2")
        );
        let free = contact(Some("gmail.com"), "x@gmail.com");
        assert_eq!(matched(&mut m, &store, &free), None);
        // Asked again: the same answers from the cache.
        assert_eq!(matched(&mut m, &store, &both).as_deref(), Some("acc_1"));
        assert_eq!(matched(&mut m, &store, &free), None);
    }

    #[test]
    fn cached_matches_follow_reference_updates() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path(), Duration::from_secs(60)).unwrap();
        let mut m = AccountMatcher::default();
        let c = contact(Some("acme.com"), "x@acme.com");
        assert_eq!(matched(&mut m, &store, &c), None, "no account yet");
        apply_account(&store, "acc_1", Some(&account("acc_1", "acme.com"))).unwrap();
        assert_eq!(matched(&mut m, &store, &c).as_deref(), Some("acc_1"));
        let mut renamed = account("acc_1", "acme.com");
        renamed.name = "Acme Group".into();
        apply_account(&store, "acc_1", Some(&renamed)).unwrap();
        let now = m.match_account(&store, &c).unwrap().unwrap();
        assert_eq!(
            now.name, "Acme Group",
            "an update replaces the cached account"
        );
        apply_account(&store, "acc_1", Some(&account("acc_1", "acme.io"))).unwrap();
        assert_eq!(matched(&mut m, &store, &c), None, "the domain moved away");
    }
}
