//! A deterministic synthetic CRM: accounts, reps, a pool of contacts, and the events they make.

use std::collections::{BTreeMap, HashSet, VecDeque};

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::names::*;
use crate::model::{
    Account, AccountEvent, Contact, ContactEvent, Engagement, EngagementEvent, Envelope, Event,
    Rep, RepEvent,
};

/// Contacts older than this many creations no longer receive updates or engagements, which
/// keeps memory flat on long runs.
const CONTACT_POOL: usize = 50_000;
/// Newest contacts are "hot": they get most of the engagements.
const HOT_CONTACTS: usize = 300;

/// An event of the keyed streams the processor consumes.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    Contact(ContactEvent),
    Engagement(EngagementEvent),
}

impl StreamEvent {
    pub fn envelope(&self) -> &Envelope {
        match self {
            StreamEvent::Contact(e) => &e.envelope,
            StreamEvent::Engagement(e) => &e.envelope,
        }
    }

    pub fn envelope_mut(&mut self) -> &mut Envelope {
        match self {
            StreamEvent::Contact(e) => &mut e.envelope,
            StreamEvent::Engagement(e) => &mut e.envelope,
        }
    }
}

/// Picks one item by relative weight.
pub fn weighted<'a, T>(rng: &mut ChaCha8Rng, items: &'a [(T, u32)]) -> &'a T {
    let total: u32 = items.iter().map(|(_, w)| w).sum();
    let mut roll = rng.random_range(0..total);
    for (item, w) in items {
        if roll < *w {
            return item;
        }
        roll -= w;
    }
    &items[items.len() - 1].0
}

fn one<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

fn hex_id(rng: &mut ChaCha8Rng, prefix: &str) -> String {
    format!("{prefix}{:016x}", rng.random::<u64>())
}

/// A random (v4-shaped) UUID drawn from the generator's RNG, so runs are reproducible.
pub fn uuid(rng: &mut ChaCha8Rng) -> String {
    let a: u128 = rng.random();
    crate::ids::uuid_text((a & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62))
}

fn slug(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// The synthetic CRM. All randomness comes from the RNG passed in, in call order.
pub struct World {
    pub accounts: Vec<Account>,
    pub reps: Vec<Rep>,
    contacts: VecDeque<Contact>,
    reference_time: i64,
}

impl World {
    /// Builds `n_accounts` accounts and `n_reps` reps, stamped `reference_time`.
    pub fn new(
        rng: &mut ChaCha8Rng,
        n_accounts: usize,
        n_reps: usize,
        reference_time: i64,
    ) -> World {
        let reps = make_reps(rng, n_reps, reference_time);
        let accounts = make_accounts(rng, n_accounts, &reps, reference_time);
        World {
            accounts,
            reps,
            contacts: VecDeque::new(),
            reference_time,
        }
    }

    pub fn account_events(&self, rng: &mut ChaCha8Rng) -> Vec<AccountEvent> {
        let accounts = self.accounts.clone();
        accounts
            .into_iter()
            .map(|a| Event {
                envelope: envelope(
                    rng,
                    "Account.upserted",
                    &a.account_id,
                    "salesforce:prod",
                    self.reference_time,
                ),
                payload: a,
            })
            .collect()
    }

    pub fn rep_events(&self, rng: &mut ChaCha8Rng) -> Vec<RepEvent> {
        let reps = self.reps.clone();
        reps.into_iter()
            .map(|r| Event {
                envelope: envelope(
                    rng,
                    "Rep.upserted",
                    &r.rep_id,
                    "salesops:admin",
                    self.reference_time,
                ),
                payload: r,
            })
            .collect()
    }

    /// The next contact or engagement event, happening at `occurred_at`.
    pub fn next_event(&mut self, rng: &mut ChaCha8Rng, occurred_at: i64) -> StreamEvent {
        let roll = rng.random_range(0..100);
        if self.contacts.is_empty() || roll < 35 {
            StreamEvent::Contact(self.create_contact(rng, occurred_at))
        } else if roll < 47 {
            StreamEvent::Contact(self.update_contact(rng, occurred_at))
        } else {
            StreamEvent::Engagement(self.engage(rng, occurred_at))
        }
    }

    fn create_contact(&mut self, rng: &mut ChaCha8Rng, at: i64) -> ContactEvent {
        let first = *one(rng, FIRST_NAMES);
        let last = *one(rng, LAST_NAMES);
        let local = format!("{}.{}", slug(first), slug(last));
        let roll = rng.random_range(0..100);
        // 72% work e-mail at a known account, 20% free-mail, 8% a company we do not know.
        let (email_domain, company_name, company_domain, region) = if roll < 72 {
            let a = one(rng, &self.accounts);
            let stated_domain = rng.random_bool(0.8).then(|| a.domain.clone());
            (
                a.domain.clone(),
                Some(a.name.clone()),
                stated_domain,
                a.region.clone(),
            )
        } else if roll < 92 {
            let domain = one(rng, FREE_MAIL_DOMAINS).to_string();
            let company = rng.random_bool(0.4).then(|| company_name(rng).0);
            (domain, company, None, None)
        } else {
            let (name, domain) = company_name(rng);
            (domain.clone(), Some(name), Some(domain), None)
        };
        let region = region.unwrap_or_else(|| weighted(rng, REGION_WEIGHTS).to_string());
        let country = country_in(rng, &region);
        let source = *weighted(rng, CONTACT_SOURCES);
        let scraped = source.starts_with("scraper:");
        let product = *weighted(rng, PRODUCTS);
        let mut attributes = BTreeMap::new();
        if rng.random_bool(0.5) {
            attributes.insert("utm_source".into(), one(rng, UTM_SOURCES).to_string());
            attributes.insert("utm_campaign".into(), one(rng, CAMPAIGNS).to_string());
        }
        let contact = Contact {
            contact_id: hex_id(rng, "ct_"),
            email: Some(format!("{local}@{email_domain}")),
            phone: (!scraped && rng.random_bool(0.6)).then(|| phone(rng, &country)),
            first_name: Some(first.to_string()),
            last_name: Some(last.to_string()),
            title: (!scraped || rng.random_bool(0.5)).then(|| weighted(rng, TITLES).to_string()),
            company_name,
            company_domain,
            country: Some(country),
            region: Some(region),
            lifecycle_stage: Some(weighted(rng, LIFECYCLE_STAGES).to_string()),
            lead_source: Some(weighted(rng, LEAD_SOURCES).to_string()),
            product_interest: (!product.is_empty()).then(|| product.to_string()),
            consent_marketing: rng.random_bool(0.7),
            attributes,
            updated_at: at,
        };
        self.contacts.push_back(contact.clone());
        if self.contacts.len() > CONTACT_POOL {
            self.contacts.pop_front();
        }
        Event {
            envelope: envelope(rng, "Contact.created", &contact.contact_id, source, at),
            payload: contact,
        }
    }

    fn update_contact(&mut self, rng: &mut ChaCha8Rng, at: i64) -> ContactEvent {
        let i = self.pick_contact(rng);
        let contact = &mut self.contacts[i];
        match rng.random_range(0..4) {
            0 | 1 => {
                let next = match contact.lifecycle_stage.as_deref() {
                    Some("lead") => "mql",
                    Some("mql") => "sql",
                    Some("sql") => "opportunity",
                    Some("opportunity") => "customer",
                    _ => "mql",
                };
                contact.lifecycle_stage = Some(next.to_string());
            }
            2 => contact.title = Some(weighted(rng, TITLES).to_string()),
            _ => contact.phone = Some(phone(rng, contact.country.as_deref().unwrap_or("US"))),
        }
        contact.updated_at = at;
        let payload = contact.clone();
        let source = *weighted(rng, CONTACT_SOURCES);
        Event {
            envelope: envelope(rng, "Contact.updated", &payload.contact_id, source, at),
            payload,
        }
    }

    fn engage(&mut self, rng: &mut ChaCha8Rng, at: i64) -> EngagementEvent {
        // 3% of engagements come from a tracker before the CRM knows the contact.
        let contact_id = if rng.random_bool(0.03) {
            hex_id(rng, "ct_")
        } else {
            let i = self.pick_contact(rng);
            self.contacts[i].contact_id.clone()
        };
        let kind = weighted(rng, ENGAGEMENT_TYPES);
        let campaign = (kind.channel == "email" || rng.random_bool(0.2))
            .then(|| one(rng, CAMPAIGNS).to_string());
        let outcome = (!kind.outcomes.is_empty()).then(|| one(rng, kind.outcomes).to_string());
        let payload = Engagement {
            engagement_id: hex_id(rng, "eng_"),
            contact_id,
            kind: kind.name.to_string(),
            channel: Some(kind.channel.to_string()),
            campaign,
            outcome,
            occurred_at: at,
        };
        let source = *weighted(rng, ENGAGEMENT_SOURCES);
        Event {
            envelope: envelope(rng, "Engagement.recorded", &payload.contact_id, source, at),
            payload,
        }
    }

    /// Index of a contact: mostly one of the newest (hot leads), else any in the pool.
    fn pick_contact(&self, rng: &mut ChaCha8Rng) -> usize {
        let n = self.contacts.len();
        if rng.random_bool(0.6) {
            n - 1 - rng.random_range(0..n.min(HOT_CONTACTS))
        } else {
            rng.random_range(0..n)
        }
    }
}

fn envelope(rng: &mut ChaCha8Rng, kind: &str, aggregate: &str, source: &str, at: i64) -> Envelope {
    Envelope {
        event_id: uuid(rng),
        event_type: kind.to_string(),
        aggregate_id: aggregate.to_string(),
        source: source.to_string(),
        occurred_at: at,
        delivery_attempt: 1,
        schema_version: "1".to_string(),
        correlation_id: rng
            .random_bool(0.3)
            .then(|| format!("corr-{:012x}", rng.random::<u64>() >> 16)),
    }
}

fn country_in(rng: &mut ChaCha8Rng, region: &str) -> String {
    let countries = COUNTRIES
        .iter()
        .find(|(r, _)| *r == region)
        .map(|(_, c)| *c)
        .unwrap_or(COUNTRIES[0].1);
    weighted(rng, countries).to_string()
}

fn phone(rng: &mut ChaCha8Rng, country: &str) -> String {
    let code = match country {
        "US" | "CA" => "1",
        "GB" => "44",
        "DE" => "49",
        "FR" => "33",
        "BR" => "55",
        "IN" => "91",
        "JP" => "81",
        "AU" => "61",
        _ => "65",
    };
    format!(
        "+{code}{:09}",
        rng.random_range(100_000_000..999_999_999u64)
    )
}

/// A company name and a domain derived from it.
fn company_name(rng: &mut ChaCha8Rng) -> (String, String) {
    let word = *one(rng, COMPANY_WORDS);
    let middle = *one(rng, COMPANY_MIDDLES);
    let suffix = *weighted(rng, COMPANY_SUFFIXES);
    let tld = *weighted(rng, TLDS);
    let base = if middle.is_empty() {
        word.to_string()
    } else {
        format!("{word} {middle}")
    };
    (format!("{base} {suffix}"), format!("{}.{tld}", slug(&base)))
}

fn make_reps(rng: &mut ChaCha8Rng, n: usize, at: i64) -> Vec<Rep> {
    let teams: [(&str, &[&str]); 9] = [
        ("enterprise-na", &["NA"]),
        ("enterprise-emea", &["EMEA"]),
        ("enterprise-apac", &["APAC", "LATAM"]),
        ("mid-market-na", &["NA"]),
        ("mid-market-emea", &["EMEA"]),
        ("mid-market-apac", &["APAC"]),
        ("mid-market-latam", &["LATAM"]),
        ("inside-sales", &["NA", "EMEA", "APAC", "LATAM"]),
        ("inside-sales", &["NA", "LATAM"]),
    ];
    (0..n)
        .map(|i| {
            let (team, regions) = teams[i % teams.len()];
            let home = regions[0];
            let zones = TIMEZONES
                .iter()
                .find(|(r, _)| *r == home)
                .map(|z| z.1)
                .unwrap_or(&[]);
            let first = *one(rng, FIRST_NAMES);
            let last = *one(rng, LAST_NAMES);
            let start_hour = rng.random_range(7..=10);
            Rep {
                rep_id: format!("rep_{:03}", i + 1),
                name: format!("{first} {last}"),
                team: team.to_string(),
                regions: regions.iter().map(|r| r.to_string()).collect(),
                max_open_leads: if team.starts_with("enterprise") {
                    rng.random_range(20..=40)
                } else {
                    rng.random_range(50..=150)
                },
                active: rng.random_bool(0.95),
                timezone: one(rng, zones).to_string(),
                working_hours: rng
                    .random_bool(0.9)
                    .then(|| format!("{start_hour:02}:00-{:02}:00", start_hour + 8)),
                updated_at: at,
            }
        })
        .collect()
}

fn make_accounts(rng: &mut ChaCha8Rng, n: usize, reps: &[Rep], at: i64) -> Vec<Account> {
    let mut domains = HashSet::new();
    let mut accounts = Vec::with_capacity(n);
    while accounts.len() < n {
        let (name, domain) = company_name(rng);
        if !domains.insert(domain.clone()) {
            continue;
        }
        // Company size from 5 to 200k employees, most of them small: about 20 % of accounts
        // reach 1,000 employees (enterprise), about one in ten 10,000.
        let employees = 10f64.powf(0.7 + 4.6 * rng.random::<f64>().powi(3)).round() as i32;
        let revenue_per_head = rng.random_range(80_000.0..320_000.0);
        let tier = match employees {
            e if e >= 1000 => "enterprise",
            e if e >= 200 => "mid_market",
            _ => "smb",
        };
        let region = weighted(rng, REGION_WEIGHTS).to_string();
        let wants_owner = match tier {
            "enterprise" => 0.95,
            "mid_market" => 0.7,
            _ => 0.2,
        };
        let owner = if rng.random_bool(wants_owner) {
            let prefix = if tier == "enterprise" {
                "enterprise"
            } else {
                "mid-market"
            };
            let candidates: Vec<&Rep> = reps
                .iter()
                .filter(|r| r.team.starts_with(prefix) && r.regions.contains(&region))
                .collect();
            (!candidates.is_empty()).then(|| one(rng, &candidates).rep_id.clone())
        } else {
            None
        };
        accounts.push(Account {
            account_id: format!("acc_{:05}", accounts.len() + 1),
            domain,
            name,
            employees: rng.random_bool(0.92).then_some(employees),
            annual_revenue: rng
                .random_bool(0.8)
                .then(|| (employees as f64 * revenue_per_head).round()),
            industry: Some(one(rng, INDUSTRIES).to_string()),
            region: Some(region),
            tier: Some(tier.to_string()),
            owner_rep_id: owner,
            updated_at: at,
        });
    }
    accounts
}
