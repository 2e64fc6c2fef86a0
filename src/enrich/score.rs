//! The default lead score (0..=100), used when the rule script defines no `score(lead)`.
//!
//! Fit (who they are: seniority, company size) plus intent (what they did: lifecycle stage,
//! recent engagement, pricing views, demo requests).

use crate::model::{Account, Contact};
use crate::route::EngagementStats;

pub fn default_score(
    contact: &Contact,
    account: Option<&Account>,
    engagement: &EngagementStats,
) -> i32 {
    let mut score = match contact.lifecycle_stage.as_deref() {
        Some("opportunity") => 40,
        Some("sql") => 35,
        Some("mql") => 25,
        Some("customer") => 15,
        _ => 10,
    };
    let title = contact
        .title
        .as_deref()
        .unwrap_or_default()
        .to_ascii_lowercase();
    score += if ["ceo", "cto", "cfo", "coo", "cio", "founder", "chief"]
        .iter()
        .any(|t| title.contains(t))
    {
        20
    } else if title.starts_with("vp") || title.contains("vice president") {
        15
    } else if title.contains("head of") || title.contains("director") {
        10
    } else if title.contains("manager") {
        5
    } else {
        0
    };
    score += match account.and_then(|a| a.tier.as_deref()) {
        Some("enterprise") => 15,
        Some("mid_market") => 8,
        Some(_) => 3,
        None => 0,
    };
    score += (engagement.count_7d * 2).min(15) as i32;
    score += (engagement.pricing_views_7d * 5).min(10) as i32;
    if engagement.demo_requested {
        score += 20;
    }
    score.clamp(0, 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_in_range_and_rewards_intent() {
        let mut contact = crate::model::Contact {
            contact_id: "c".into(),
            email: None,
            phone: None,
            first_name: None,
            last_name: None,
            title: Some("CTO".into()),
            company_name: None,
            company_domain: None,
            country: None,
            region: None,
            lifecycle_stage: Some("opportunity".into()),
            lead_source: None,
            product_interest: None,
            consent_marketing: true,
            attributes: Default::default(),
            updated_at: 0,
        };
        let hot = EngagementStats {
            count_24h: 9,
            count_7d: 30,
            pricing_views_7d: 5,
            demo_requested: true,
            last_type: None,
            last_at: None,
        };
        assert_eq!(default_score(&contact, None, &hot), 100);
        contact.title = None;
        contact.lifecycle_stage = None;
        let cold = default_score(&contact, None, &EngagementStats::default());
        assert_eq!(cold, 10);
        assert!(default_score(&contact, None, &hot) > cold);
    }
}
