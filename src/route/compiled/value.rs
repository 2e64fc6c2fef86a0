//! Values of compiled rules: Rhai's dynamic values, plus read-only views of the typed lead.
//!
//! The views (`Lead`, `Account`, ...) stand for the maps the interpreter would build (contracts
//! §4, `convert::lead_map`): reading a property of a view reads the Rust field, so no map is
//! built per event. Every operation here either gives exactly the interpreter's result or
//! answers [`Bail`], and the call is run again in the interpreter.

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::model::Account;
use crate::route::lead::{EngagementStats, Lead, PreviousDecision};

/// "Not sure this is what the interpreter would do": run the call interpreted instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bail;

pub type Res<T> = Result<T, Bail>;

#[derive(Debug, Clone)]
pub enum Val<'a> {
    Unit,
    Bool(bool),
    Int(i64),
    Float(f64),
    Char(char),
    Str(Cow<'a, str>),
    Array(Vec<Val<'a>>),
    Map(BTreeMap<Cow<'a, str>, Val<'a>>),
    /// The script's `lead`, with the score in force (`score(lead)`'s result in `route`).
    Lead(&'a Lead, i64),
    Account(&'a Account),
    Engagement(&'a EngagementStats),
    Previous(&'a PreviousDecision),
    Attributes(&'a BTreeMap<String, String>),
}

/// Sizes the interpreter checks against its limits: (array items, map entries, string bytes),
/// counted through nested arrays and maps as Rhai does.
pub fn data_sizes(v: &Val) -> (usize, usize, usize) {
    match v {
        Val::Str(s) => (0, 0, s.len()),
        Val::Array(items) => items.iter().fold((0, 0, 0), |(a, m, s), item| {
            let (ia, im, is) = data_sizes(item);
            (a + ia + 1, m + im, s + is)
        }),
        Val::Map(entries) => entries.values().fold((0, 0, 0), |(a, m, s), item| {
            let (ia, im, is) = data_sizes(item);
            (a + ia, m + im + 1, s + is)
        }),
        // Views are the lead's own maps: the interpreter builds them without a size check.
        _ => (0, 0, 0),
    }
}

fn text(s: &str) -> Val<'_> {
    Val::Str(Cow::Borrowed(s))
}

fn opt_text(s: &Option<String>) -> Val<'_> {
    s.as_deref().map_or(Val::Unit, text)
}

fn opt_int(n: Option<i64>) -> Val<'static> {
    n.map_or(Val::Unit, Val::Int)
}

impl<'a> Val<'a> {
    pub fn is_unit(&self) -> bool {
        matches!(self, Val::Unit)
    }

    pub fn as_bool(&self) -> Res<bool> {
        match self {
            Val::Bool(b) => Ok(*b),
            _ => Err(Bail),
        }
    }

    pub fn as_int(&self) -> Res<i64> {
        match self {
            Val::Int(n) => Ok(*n),
            _ => Err(Bail),
        }
    }

    /// Kinds the comparison rules tell apart; views count as maps.
    fn kind(&self) -> Kind {
        match self {
            Val::Unit => Kind::Unit,
            Val::Bool(_) => Kind::Bool,
            Val::Int(_) | Val::Float(_) => Kind::Number,
            Val::Char(_) => Kind::Char,
            Val::Str(_) => Kind::Str,
            Val::Array(_) => Kind::Array,
            _ => Kind::Map,
        }
    }

    /// `value.name` on a map or a view: the entry, or `()` when there is none (Rhai's default).
    pub fn property(&self, name: &str) -> Res<Val<'a>> {
        Ok(match *self {
            // The owner's rep map depends on the task's assignment state: interpreted.
            Val::Lead(_, _) if name == "owner_rep" => return Err(Bail),
            Val::Lead(lead, score) => lead_property(lead, score, name),
            Val::Account(a) => account_property(a, name),
            Val::Engagement(e) => engagement_property(e, name),
            Val::Previous(p) => previous_property(p, name),
            Val::Attributes(attributes) => attributes.get(name).map_or(Val::Unit, |v| text(v)),
            Val::Map(ref entries) => entries.get(name).cloned().unwrap_or(Val::Unit),
            _ => return Err(Bail),
        })
    }

    /// `value[index]`: a character of a string, an item of an array, an entry of a map.
    pub fn index(&self, index: &Val<'a>) -> Res<Val<'a>> {
        match (self, index) {
            // A negative index counts from the end, as in Rhai; out of range is an error.
            (Val::Str(s), &Val::Int(i)) => {
                let c = if i >= 0 {
                    s.chars().nth(usize::try_from(i).map_err(|_| Bail)?)
                } else {
                    let back = usize::try_from(i.unsigned_abs()).map_err(|_| Bail)?;
                    s.chars().rev().nth(back - 1)
                };
                c.map(Val::Char).ok_or(Bail)
            }
            (Val::Array(items), &Val::Int(i)) => {
                let len = items.len();
                let at = if i >= 0 {
                    usize::try_from(i).ok().filter(|&i| i < len)
                } else {
                    usize::try_from(i.unsigned_abs())
                        .ok()
                        .filter(|&back| back <= len)
                        .map(|back| len - back)
                };
                at.and_then(|i| items.get(i)).cloned().ok_or(Bail)
            }
            (Val::Str(_) | Val::Array(_), _) => Err(Bail),
            (Val::Unit | Val::Bool(_) | Val::Int(_) | Val::Float(_) | Val::Char(_), _) => Err(Bail),
            (map, Val::Str(key)) => map.property(key),
            _ => Err(Bail),
        }
    }

    /// The text `${value}` inserts; numbers other than whole ones are left to the interpreter.
    pub fn push_display(&self, out: &mut String) -> Res<()> {
        use std::fmt::Write;
        match self {
            Val::Str(s) => out.push_str(s),
            Val::Char(c) => out.push(*c),
            Val::Int(n) => write!(out, "{n}").map_err(|_| Bail)?,
            Val::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            _ => return Err(Bail),
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Unit,
    Bool,
    Number,
    Char,
    Str,
    Array,
    Map,
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
}

impl Cmp {
    fn holds(self, ordering: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            Cmp::Eq => ordering == Equal,
            Cmp::Ne => ordering != Equal,
            Cmp::Lt => ordering == Less,
            Cmp::Gt => ordering == Greater,
            Cmp::Le => ordering != Greater,
            Cmp::Ge => ordering != Less,
        }
    }
}

/// `a OP b` for the comparison operators, as Rhai's built-in operators decide it.
pub fn compare(op: Cmp, a: &Val, b: &Val) -> Res<bool> {
    match (a, b) {
        (Val::Int(x), Val::Int(y)) => Ok(op.holds(x.cmp(y))),
        (Val::Str(x), Val::Str(y)) => Ok(op.holds(x.as_ref().cmp(y.as_ref()))),
        (Val::Bool(x), Val::Bool(y)) => Ok(op.holds(x.cmp(y))),
        (Val::Char(x), Val::Char(y)) => Ok(op.holds(x.cmp(y))),
        (Val::Float(_) | Val::Int(_), Val::Float(_) | Val::Int(_)) => {
            let (x, y) = (as_float(a), as_float(b));
            Ok(match op {
                Cmp::Eq => x == y,
                Cmp::Ne => x != y,
                Cmp::Lt => x < y,
                Cmp::Gt => x > y,
                Cmp::Le => x <= y,
                Cmp::Ge => x >= y,
            })
        }
        // `() == ()` is true; `()` against anything else: only `!=` holds.
        (Val::Unit, Val::Unit) => Ok(op == Cmp::Eq),
        _ => {
            let (ka, kb) = (a.kind(), b.kind());
            // Different kinds, one of them `()` or both unrelated scalars and maps: Rhai's
            // fallback for different non-numeric types. Char against string has its own
            // rules, and arrays or maps of one kind compare item by item: left to Rhai.
            let unrelated = ka != kb
                && (ka == Kind::Unit || kb == Kind::Unit || (ka == Kind::Map) != (kb == Kind::Map))
                && !matches!((ka, kb), (Kind::Char, Kind::Str) | (Kind::Str, Kind::Char));
            if unrelated {
                Ok(op == Cmp::Ne)
            } else {
                Err(Bail)
            }
        }
    }
}

fn as_float(v: &Val) -> f64 {
    match v {
        Val::Int(n) => *n as f64,
        Val::Float(x) => *x,
        _ => f64::NAN,
    }
}

/// An arithmetic operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arith {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

/// `a OP b` for numbers (checked: an overflow or a division by zero is an error in Rhai),
/// and `+` for strings, characters and arrays.
pub fn arith<'a>(op: Arith, a: Val<'a>, b: &Val<'a>) -> Res<Val<'a>> {
    match (a, b) {
        (Val::Int(x), Val::Int(y)) => {
            let y = *y;
            match op {
                Arith::Add => x.checked_add(y),
                Arith::Sub => x.checked_sub(y),
                Arith::Mul => x.checked_mul(y),
                Arith::Div => x.checked_div(y),
                Arith::Rem => x.checked_rem(y),
            }
            .map(Val::Int)
            .ok_or(Bail)
        }
        (a @ (Val::Float(_) | Val::Int(_)), Val::Float(_) | Val::Int(_)) => {
            let (x, y) = (as_float(&a), as_float(b));
            if matches!(op, Arith::Div | Arith::Rem) && y == 0.0 {
                return Err(Bail);
            }
            Ok(Val::Float(match op {
                Arith::Add => x + y,
                Arith::Sub => x - y,
                Arith::Mul => x * y,
                Arith::Div => x / y,
                Arith::Rem => x % y,
            }))
        }
        (Val::Str(x), b) if op == Arith::Add => {
            let mut x = x.into_owned();
            append_text(&mut x, b)?;
            Ok(Val::Str(Cow::Owned(x)))
        }
        (Val::Char(c), Val::Str(y)) if op == Arith::Add => {
            let mut x = String::with_capacity(y.len() + 4);
            x.push(c);
            x.push_str(y);
            Ok(Val::Str(Cow::Owned(x)))
        }
        (Val::Unit, Val::Str(y)) if op == Arith::Add => Ok(Val::Str(y.clone())),
        (Val::Array(mut x), Val::Array(y)) if op == Arith::Add => {
            x.extend(y.iter().cloned());
            Ok(Val::Array(x))
        }
        _ => Err(Bail),
    }
}

/// `string + b` / `string += b` for the right-hand sides whose result is certain.
pub fn append_text(x: &mut String, b: &Val) -> Res<()> {
    match b {
        Val::Str(y) => x.push_str(y),
        Val::Char(c) => x.push(*c),
        Val::Unit => {}
        _ => return Err(Bail),
    }
    Ok(())
}

fn lead_property<'a>(lead: &'a Lead, score: i64, name: &str) -> Val<'a> {
    let c = &lead.contact;
    match name {
        "account" => lead.account.as_ref().map_or(Val::Unit, Val::Account),
        "attributes" => Val::Attributes(&c.attributes),
        "company_domain" => opt_text(&c.company_domain),
        "company_name" => opt_text(&c.company_name),
        "consent_marketing" => Val::Bool(c.consent_marketing),
        "contact_id" => text(&c.contact_id),
        "country" => opt_text(&c.country),
        "email" => opt_text(&c.email),
        "engagement" => Val::Engagement(&lead.engagement),
        "event_type" => text(&lead.event_type),
        "first_name" => opt_text(&c.first_name),
        "last_name" => opt_text(&c.last_name),
        "lead_source" => opt_text(&c.lead_source),
        "lifecycle_stage" => opt_text(&c.lifecycle_stage),
        "occurred_at" => Val::Int(lead.occurred_at),
        "phone" => opt_text(&c.phone),
        "previous" => lead.previous.as_ref().map_or(Val::Unit, Val::Previous),
        "product_interest" => opt_text(&c.product_interest),
        "region" => opt_text(&c.region),
        "score" => Val::Int(score),
        "source" => text(&lead.source),
        "title" => opt_text(&c.title),
        "updated_at" => Val::Int(c.updated_at),
        _ => Val::Unit,
    }
}

fn account_property<'a>(a: &'a Account, name: &str) -> Val<'a> {
    match name {
        "account_id" => text(&a.account_id),
        "annual_revenue" => a.annual_revenue.map_or(Val::Unit, Val::Float),
        "domain" => text(&a.domain),
        "employees" => opt_int(a.employees.map(i64::from)),
        "industry" => opt_text(&a.industry),
        "name" => text(&a.name),
        "owner_rep_id" => opt_text(&a.owner_rep_id),
        "region" => opt_text(&a.region),
        "tier" => opt_text(&a.tier),
        "updated_at" => Val::Int(a.updated_at),
        _ => Val::Unit,
    }
}

fn engagement_property<'a>(e: &'a EngagementStats, name: &str) -> Val<'a> {
    match name {
        "count_24h" => Val::Int(e.count_24h),
        "count_7d" => Val::Int(e.count_7d),
        "demo_requested" => Val::Bool(e.demo_requested),
        "last_at" => opt_int(e.last_at),
        "last_type" => opt_text(&e.last_type),
        "pricing_views_7d" => Val::Int(e.pricing_views_7d),
        _ => Val::Unit,
    }
}

fn previous_property<'a>(p: &'a PreviousDecision, name: &str) -> Val<'a> {
    match name {
        "decision_id" => text(&p.decision_id),
        "event_id" => text(&p.event_id),
        "owner" => opt_text(&p.owner),
        "priority" => text(p.priority.as_str()),
        "queue" => text(&p.queue),
        "routed_at" => Val::Int(p.routed_at),
        "rule_version" => text(&p.rule_version),
        "score" => Val::Int(p.score.into()),
        _ => Val::Unit,
    }
}
