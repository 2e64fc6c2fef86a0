//! The fields a script can read from `lead` and `breach`, and the check that it reads no
//! other: `lead.compnay` would be `()` for every lead (Rhai maps answer `()` for a missing
//! key), so a typo silently changes routing. A script is refused with the place of the
//! unknown field and the nearest known one.

use rhai::{ASTNode, Expr, AST};

use super::engine::CompileError;

/// `lead`'s top-level fields (contracts §4).
pub const LEAD: &[&str] = &[
    "account",
    "attributes",
    "company_domain",
    "company_name",
    "consent_marketing",
    "contact_id",
    "country",
    "email",
    "engagement",
    "event_type",
    "first_name",
    "last_name",
    "lead_source",
    "lifecycle_stage",
    "occurred_at",
    "owner_rep",
    "phone",
    "previous",
    "product_interest",
    "region",
    "score",
    "source",
    "title",
    "updated_at",
];
/// `lead.account`'s fields.
pub const ACCOUNT: &[&str] = &[
    "account_id",
    "annual_revenue",
    "domain",
    "employees",
    "industry",
    "name",
    "owner_rep_id",
    "region",
    "tier",
    "updated_at",
];
/// A rep's fields (`lead.owner_rep`, `rep(id)`, the items of `team(name)`).
pub const REP: &[&str] = &[
    "active",
    "capacity",
    "max_open_leads",
    "name",
    "open_leads",
    "regions",
    "rep_id",
    "team",
    "timezone",
    "working_hours",
];
/// `lead.engagement`'s fields.
pub const ENGAGEMENT: &[&str] = &[
    "count_24h",
    "count_7d",
    "demo_requested",
    "last_at",
    "last_type",
    "pricing_views_7d",
];
/// `lead.previous`'s fields.
pub const PREVIOUS: &[&str] = &[
    "decision_id",
    "event_id",
    "owner",
    "priority",
    "queue",
    "routed_at",
    "rule_version",
    "score",
];
/// `breach`'s fields (`escalate(lead, breach)`).
pub const BREACH: &[&str] = &[
    "cause",
    "deadline",
    "level",
    "minutes_overdue",
    "owner",
    "priority",
    "queue",
];

/// The fields of the map `name` (a variable or a field path) when they are known.
fn fields_of(path: &[&str]) -> Option<&'static [&'static str]> {
    match path {
        ["lead"] => Some(LEAD),
        ["lead", "account"] => Some(ACCOUNT),
        ["lead", "engagement"] => Some(ENGAGEMENT),
        ["lead", "previous"] => Some(PREVIOUS),
        ["lead", "owner_rep"] => Some(REP),
        ["breach"] => Some(BREACH),
        // `lead.attributes` holds whatever the CRM sent.
        _ => None,
    }
}

/// Every read of an unknown field of `lead` (or of its `account`, `engagement`, `previous`)
/// or of `breach`, in variables of those names, as errors with line and column.
pub fn unknown_fields(file: &str, ast: &AST) -> Vec<CompileError> {
    let mut errors = Vec::new();
    ast.walk(&mut |path: &[ASTNode]| {
        if let Some(ASTNode::Expr(Expr::Dot(x, _, _))) = path.last() {
            if let Expr::Variable(var, _, _) = &x.lhs {
                let root = var.1.as_str();
                if root == "lead" || root == "breach" {
                    check_chain(file, &mut vec![root], &x.rhs, &mut errors);
                }
            }
        }
        true
    });
    errors.sort_by_key(|e| (e.line, e.column));
    errors.dedup_by(|a, b| a.line == b.line && a.column == b.column);
    errors
}

/// Checks the property chain `rhs` read from the map at `path`.
fn check_chain(file: &str, path: &mut Vec<&str>, rhs: &Expr, errors: &mut Vec<CompileError>) {
    match rhs {
        Expr::Property(p, pos) => {
            check_one(file, path, p.2.as_str(), *pos, errors);
        }
        Expr::Dot(x, _, _) | Expr::Index(x, _, _) => {
            if let Expr::Property(p, pos) = &x.lhs {
                let name = p.2.as_str();
                if check_one(file, path, name, *pos, errors) {
                    if let Expr::Dot(..) = rhs {
                        let mut deeper = path.clone();
                        deeper.push(name);
                        check_chain(file, &mut deeper, &x.rhs, errors);
                    }
                }
            }
        }
        _ => {}
    }
}

/// Whether `name` is a known field of the map at `path` (or the map's fields are not known);
/// records an error if not.
fn check_one(
    file: &str,
    path: &[&str],
    name: &str,
    pos: rhai::Position,
    errors: &mut Vec<CompileError>,
) -> bool {
    let Some(fields) = fields_of(path) else {
        return true;
    };
    if fields.contains(&name) {
        return true;
    }
    let hint = match super::queues::nearest(name, fields.iter().copied()) {
        Some(f) => format!("did you mean `{}.{f}`?", path.join(".")),
        None => format!("its fields are {}", fields.join(", ")),
    };
    errors.push(CompileError {
        file: file.to_string(),
        line: pos.line(),
        column: pos.line().and(pos.position()),
        message: format!(
            "`{}.{name}` is not a field of {}: it would be () for every lead; {hint}",
            path.join("."),
            path.join(".")
        ),
    });
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(source: &str) -> Vec<String> {
        let engine = rhai::Engine::new();
        let ast = engine.compile(source).unwrap();
        unknown_fields("t.rhai", &ast)
            .into_iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn misspelt_fields_are_found_with_their_place_and_the_nearest_name() {
        let found = errors(
            "fn route(lead) {\n    let c = lead.compnay_name;\n    if lead.account.teir == \"x\" { }\n    lead.engagement.count_7d + lead.attributes.whatever\n}\nfn escalate(lead, breach) { breach.levl }\n",
        );
        assert_eq!(found.len(), 3, "{found:#?}");
        assert!(found[0].starts_with("t.rhai:2:"), "{}", found[0]);
        assert!(
            found[0].contains("did you mean `lead.company_name`?"),
            "{}",
            found[0]
        );
        assert!(found[1].starts_with("t.rhai:3:"), "{}", found[1]);
        assert!(found[1].contains("`lead.account.tier`"), "{}", found[1]);
        assert!(found[2].contains("`breach.level`"), "{}", found[2]);
        assert!(errors("fn route(lead) { lead.zzzzzzzzzz }")[0].contains("its fields are account,"));
        // Method calls and indexing are not field reads.
        assert!(errors(
            "fn route(lead) { lead.title.to_lower(); lead[\"title\"]; lead.account.tier.len() }"
        )
        .is_empty());
    }

    #[test]
    fn the_lists_are_the_maps_the_script_gets() {
        use crate::route::lead::{BreachInfo, Priority};
        let spec: super::super::fixture_file::LeadSpec = serde_norway::from_str(
            "account: {name: A, tier: enterprise}\nprevious: {priority: P1, queue: q}\n",
        )
        .unwrap();
        let lead = spec.to_lead();
        let map = super::super::convert::lead_map(&lead);
        let keys = |m: &rhai::Map| m.keys().map(|k| k.to_string()).collect::<Vec<_>>();
        assert_eq!(keys(&map), LEAD);
        let sub = |name: &str| map[name].clone().cast::<rhai::Map>();
        assert_eq!(keys(&sub("account")), ACCOUNT);
        assert_eq!(keys(&sub("engagement")), ENGAGEMENT);
        assert_eq!(keys(&sub("previous")), PREVIOUS);
        let breach = super::super::convert::breach_map(&BreachInfo {
            cause: "deadline",
            deadline: 0,
            level: 1,
            minutes_overdue: 0,
            owner: None,
            priority: Priority::P0,
            queue: "q".into(),
        });
        assert_eq!(keys(&breach), BREACH);
    }
}
