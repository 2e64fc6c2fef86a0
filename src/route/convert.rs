//! The `lead` map a script sees (contracts §4), and validation of what `score`/`route` return.

use rhai::{Array, Dynamic, Map};

use super::lead::{
    BreachInfo, Decision, EngagementStats, Lead, PreviousDecision, Priority, ScriptFailure,
};
use crate::model::Account;

/// Builds the script's `lead`: every contact field at top level (absent ones are `()`), the
/// event fields, `score`, and the `account`, `engagement` and `previous` maps.
///
/// This runs per event, so each map is built in one go from its entries listed in key order
/// (`BTreeMap::from_iter` then only checks the order instead of searching per insert). Keys
/// are short enough for Rhai to store inline; each string value costs one allocation.
pub(super) fn lead_map(lead: &Lead) -> Map {
    let c = &lead.contact;
    let attributes: Map = c
        .attributes
        .iter()
        .map(|(k, v)| (k.as_str().into(), text(v)))
        .collect();
    map([
        (
            "account",
            lead.account.as_ref().map_or(Dynamic::UNIT, account_map),
        ),
        ("attributes", Dynamic::from_map(attributes)),
        ("company_domain", opt_text(&c.company_domain)),
        ("company_name", opt_text(&c.company_name)),
        ("consent_marketing", Dynamic::from_bool(c.consent_marketing)),
        ("contact_id", text(&c.contact_id)),
        ("country", opt_text(&c.country)),
        ("email", opt_text(&c.email)),
        ("engagement", engagement_map(&lead.engagement)),
        ("event_type", text(&lead.event_type)),
        ("first_name", opt_text(&c.first_name)),
        ("last_name", opt_text(&c.last_name)),
        ("lead_source", opt_text(&c.lead_source)),
        ("lifecycle_stage", opt_text(&c.lifecycle_stage)),
        ("occurred_at", Dynamic::from_int(lead.occurred_at)),
        (
            "owner_rep",
            super::reps::owner_rep(
                lead.account
                    .as_ref()
                    .and_then(|a| a.owner_rep_id.as_deref()),
            ),
        ),
        ("phone", opt_text(&c.phone)),
        (
            "previous",
            lead.previous.as_ref().map_or(Dynamic::UNIT, previous_map),
        ),
        ("product_interest", opt_text(&c.product_interest)),
        ("region", opt_text(&c.region)),
        ("score", Dynamic::from_int(lead.score.into())),
        ("source", text(&lead.source)),
        ("title", opt_text(&c.title)),
        ("updated_at", Dynamic::from_int(c.updated_at)),
    ])
}

fn account_map(a: &Account) -> Dynamic {
    Dynamic::from_map(map([
        ("account_id", text(&a.account_id)),
        (
            "annual_revenue",
            a.annual_revenue.map_or(Dynamic::UNIT, Dynamic::from_float),
        ),
        ("domain", text(&a.domain)),
        ("employees", opt_int(a.employees.map(i64::from))),
        ("industry", opt_text(&a.industry)),
        ("name", text(&a.name)),
        ("owner_rep_id", opt_text(&a.owner_rep_id)),
        ("region", opt_text(&a.region)),
        ("tier", opt_text(&a.tier)),
        ("updated_at", Dynamic::from_int(a.updated_at)),
    ]))
}

fn engagement_map(e: &EngagementStats) -> Dynamic {
    Dynamic::from_map(map([
        ("count_24h", Dynamic::from_int(e.count_24h)),
        ("count_7d", Dynamic::from_int(e.count_7d)),
        ("demo_requested", Dynamic::from_bool(e.demo_requested)),
        ("last_at", opt_int(e.last_at)),
        ("last_type", opt_text(&e.last_type)),
        ("pricing_views_7d", Dynamic::from_int(e.pricing_views_7d)),
    ]))
}

fn previous_map(p: &PreviousDecision) -> Dynamic {
    Dynamic::from_map(map([
        ("decision_id", text(&p.decision_id)),
        ("event_id", text(&p.event_id)),
        ("owner", opt_text(&p.owner)),
        ("priority", p.priority.as_str().into()),
        ("queue", text(&p.queue)),
        ("routed_at", Dynamic::from_int(p.routed_at)),
        ("rule_version", text(&p.rule_version)),
        ("score", Dynamic::from_int(p.score.into())),
    ]))
}

/// The `breach` map of `escalate(lead, breach)`.
pub(super) fn breach_map(b: &BreachInfo) -> Map {
    map([
        ("cause", b.cause.into()),
        ("deadline", Dynamic::from_int(b.deadline)),
        ("level", Dynamic::from_int(b.level.into())),
        ("minutes_overdue", Dynamic::from_int(b.minutes_overdue)),
        ("owner", opt_text(&b.owner)),
        ("priority", b.priority.as_str().into()),
        ("queue", text(&b.queue)),
    ])
}

fn map<const N: usize>(entries: [(&str, Dynamic); N]) -> Map {
    entries.into_iter().map(|(k, v)| (k.into(), v)).collect()
}

fn opt_int(n: Option<i64>) -> Dynamic {
    n.map_or(Dynamic::UNIT, Dynamic::from_int)
}

fn text(s: &str) -> Dynamic {
    s.into()
}

fn opt_text(s: &Option<String>) -> Dynamic {
    s.as_deref().map_or(Dynamic::UNIT, text)
}

/// Validates what `score(lead)` returned: a whole number 0..=100.
pub(super) fn score_from(value: Dynamic) -> Result<i32, ScriptFailure> {
    let value = value.flatten();
    match value.as_int() {
        Ok(n) if (0..=100).contains(&n) => Ok(n as i32),
        Ok(n) => Err(invalid(format!(
            "`score` must return a whole number from 0 to 100, but it returned {n}; \
             cap it with `min(max(s, 0), 100)`"
        ))),
        Err(_) if value.is_float() => Err(invalid(
            "`score` must return a whole number from 0 to 100, but it returned a decimal \
             number; round it with `s.round().to_int()`"
                .to_string(),
        )),
        Err(_) => Err(invalid(format!(
            "`score` must return a whole number from 0 to 100, but it returned {}",
            describe(&value)
        ))),
    }
}

/// Validates what `route(lead)` returned: `()` for no decision, or a decision map.
pub(super) fn decision_from(value: Dynamic, score: i32) -> Result<Option<Decision>, ScriptFailure> {
    let value = value.flatten();
    if value.is_unit() {
        return Ok(None);
    }
    let returned = describe(&value);
    let Some(map) = value.try_cast::<Map>() else {
        return Err(invalid(format!(
            "`route` must return a map such as #{{ priority: \"P2\", queue: \"inside-sales\" }} \
             or () for no decision, but it returned {returned}"
        )));
    };

    let (mut priority, mut queue, mut owner, mut reasons) = (None, None, None, Vec::new());
    for (key, value) in map {
        let value = value.flatten();
        match key.as_str() {
            "priority" => priority = Some(priority_from(value)?),
            "queue" => queue = Some(queue_from(value)?),
            "owner" => owner = owner_from(value)?,
            "reasons" => reasons = reasons_from(value)?,
            other => {
                return Err(invalid(format!(
                    "the decision has an unknown key {}: the allowed keys are priority, queue, \
                     owner and reasons",
                    quote_if_plain(other)
                )))
            }
        }
    }
    let priority = priority.ok_or_else(|| {
        invalid("the decision has no `priority`: add priority: \"P0\", \"P1\" or \"P2\"".into())
    })?;
    let queue = queue.ok_or_else(|| {
        invalid("the decision has no `queue`: add e.g. queue: \"inside-sales\"".into())
    })?;
    Ok(Some(Decision {
        priority,
        queue,
        owner,
        reasons,
        score,
    }))
}

fn priority_from(value: Dynamic) -> Result<Priority, ScriptFailure> {
    let what = describe(&value);
    match value.into_immutable_string() {
        Ok(s) => Priority::parse(&s).ok_or_else(|| {
            invalid(format!(
                "`priority` must be \"P0\", \"P1\" or \"P2\", but it is the string {}",
                quote_if_plain(&s)
            ))
        }),
        Err(_) => Err(invalid(format!(
            "`priority` must be \"P0\", \"P1\" or \"P2\", but it is {what}"
        ))),
    }
}

fn queue_from(value: Dynamic) -> Result<String, ScriptFailure> {
    let what = describe(&value);
    match value.into_immutable_string() {
        Ok(s) if !s.trim().is_empty() => Ok(s.to_string()),
        Ok(_) => Err(invalid("`queue` is an empty string".into())),
        Err(_) => Err(invalid(format!(
            "`queue` must be a string, but it is {what}"
        ))),
    }
}

/// `()` and `""` both mean "no owner".
fn owner_from(value: Dynamic) -> Result<Option<String>, ScriptFailure> {
    if value.is_unit() {
        return Ok(None);
    }
    let what = describe(&value);
    match value.into_immutable_string() {
        Ok(s) if s.trim().is_empty() => Ok(None),
        Ok(s) => Ok(Some(s.to_string())),
        Err(_) => Err(invalid(format!(
            "`owner` must be a rep id string or (), but it is {what}"
        ))),
    }
}

fn reasons_from(value: Dynamic) -> Result<Vec<String>, ScriptFailure> {
    if value.is_unit() {
        return Ok(Vec::new());
    }
    let what = describe(&value);
    let Some(items) = value.try_cast::<Array>() else {
        return Err(invalid(format!(
            "`reasons` must be a list of strings such as [\"demo requested\"], but it is {what}"
        )));
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let item = item.flatten();
            let what = describe(&item);
            item.into_immutable_string()
                .map(|s| s.to_string())
                .map_err(|_| invalid(format!("`reasons[{i}]` must be a string, but it is {what}")))
        })
        .collect()
}

fn invalid(message: String) -> ScriptFailure {
    ScriptFailure::InvalidDecision(message)
}

/// The kind of a value for messages, never the value itself (it may be personal data).
pub(super) fn describe(value: &Dynamic) -> &'static str {
    match value.type_name() {
        "()" => "()",
        "bool" => "a true/false value",
        "i64" | "i32" => "a whole number",
        "f64" | "f32" => "a decimal number",
        "string" | "char" => "a string",
        "array" => "a list",
        "map" => "a map",
        "Fn" => "a function pointer",
        "timestamp" => "a timestamp",
        "range" | "range=" => "a range",
        _ => "a value of another type",
    }
}

/// Shows a short, name-like script value (`"p1"`, `"prio"`) in backticks; anything else, which
/// could be copied from the lead, is described instead of shown.
fn quote_if_plain(s: &str) -> String {
    let plain = s.len() <= 24
        && !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if plain {
        format!("`{s}`")
    } else {
        "(not shown: it does not look like a name)".to_string()
    }
}

/// A script value as JSON (`rules explain`, the audit topic's `lead`): keys sorted as in
/// Rhai's maps, `()` is `null`, values JSON has no type for are shown as their Rhai text.
pub(super) fn to_json(value: &Dynamic) -> serde_json::Value {
    use serde_json::Value;
    if value.is_unit() {
        return Value::Null;
    }
    if let Ok(b) = value.as_bool() {
        return Value::Bool(b);
    }
    if let Ok(n) = value.as_int() {
        return Value::from(n);
    }
    if let Ok(f) = value.as_float() {
        return serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number);
    }
    if let Some(s) = value.read_lock::<rhai::ImmutableString>() {
        return Value::String(s.to_string());
    }
    if let Some(map) = value.read_lock::<Map>() {
        return Value::Object(
            map.iter()
                .map(|(k, v)| (k.to_string(), to_json(v)))
                .collect(),
        );
    }
    if let Some(items) = value.read_lock::<Array>() {
        return Value::Array(items.iter().map(to_json).collect());
    }
    Value::String(value.to_string())
}
