//! Matching a contact to an account: by company domain, else by the e-mail's domain
//! (free-mail domains never match).

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

/// The account for `contact`: its company domain first, then its e-mail's domain.
pub fn match_account(store: &StateStore, contact: &Contact) -> Result<Option<Account>, StateError> {
    if let Some(domain) = contact
        .company_domain
        .as_deref()
        .filter(|d| !is_free_mail(d))
    {
        if let Some(account) = account_by_domain(store, domain)? {
            return Ok(Some(account));
        }
    }
    match contact.email.as_deref().and_then(email_domain) {
        Some(domain) if !is_free_mail(domain) => account_by_domain(store, domain),
        _ => Ok(None),
    }
}
