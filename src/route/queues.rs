//! The topology's `queues:` list: the queues a decision may name. A script naming another in
//! a `queue: "..."` literal is refused when it is loaded, with the literal's place; a
//! decision naming another at run time (a queue the script builds, e.g. `"mid-market-" +
//! region`) is an `invalid_decision`.

use rhai::{ASTNode, Dynamic, Expr, Map, Position, AST};

use super::engine::CompileError;
use super::lead::{Decision, ScriptFailure};

/// The known name nearest to `name`, if one is close enough to be a typo of it.
pub fn nearest<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    known
        .into_iter()
        .map(|k| (strsim::damerau_levenshtein(k, name), k))
        .min()
        .filter(|(distance, _)| *distance <= 2.max(name.len() / 3))
        .map(|(_, k)| k)
}

/// ` (did you mean `x`?)`, or nothing when no known name is close.
pub fn did_you_mean<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    nearest(name, known).map_or(String::new(), |k| format!(" (did you mean `{k}`?)"))
}

/// Every `queue: "literal"` entry of a map literal in the script whose queue is not listed.
pub(super) fn unlisted(file: &str, ast: &AST, queues: &[String]) -> Vec<CompileError> {
    let mut errors = Vec::new();
    let mut check = |queue: &str, pos: Position| {
        if !queues.iter().any(|q| q == queue) {
            errors.push(CompileError {
                file: file.to_string(),
                line: pos.line(),
                column: pos.line().and(pos.position()),
                message: format!(
                    "queue {queue:?} is not in the topology's `queues`{}: a decision naming it \
                     would be refused; add it to `queues` or fix the name",
                    did_you_mean(queue, queues.iter().map(String::as_str))
                ),
            });
        }
    };
    ast.walk(&mut |path: &[ASTNode]| {
        match path.last() {
            Some(ASTNode::Expr(Expr::Map(entries, _))) => {
                for (key, value) in &entries.0 {
                    if let ("queue", Expr::StringConstant(s, pos)) = (key.name.as_str(), value) {
                        check(s, *pos);
                    }
                }
            }
            // A map of constants only, folded into one value by the optimizer.
            Some(ASTNode::Expr(Expr::DynamicConstant(value, pos))) => {
                if let Some(map) = value.read_lock::<Map>() {
                    if let Some(queue) = map
                        .get("queue")
                        .and_then(Dynamic::read_lock::<rhai::ImmutableString>)
                    {
                        check(&queue, *pos);
                    }
                }
            }
            _ => {}
        }
        true
    });
    errors.sort_by_key(|e| (e.line, e.column));
    errors
}

/// `decision` if its queue is listed (or there is no list).
pub(super) fn admit(
    queues: Option<&[String]>,
    decision: Option<Decision>,
) -> Result<Option<Decision>, ScriptFailure> {
    match (queues, &decision) {
        (Some(queues), Some(d)) if !queues.contains(&d.queue) => {
            Err(ScriptFailure::InvalidDecision(format!(
                "queue {:?} is not in the topology's `queues`{}",
                d.queue,
                did_you_mean(&d.queue, queues.iter().map(String::as_str))
            )))
        }
        _ => Ok(decision),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::route::{Rules, ScriptLimits};

    fn limits() -> ScriptLimits {
        ScriptLimits {
            queues: Some(Arc::from(vec![
                "enterprise-na".to_string(),
                "inside-sales".to_string(),
            ])),
            ..ScriptLimits::default()
        }
    }

    fn compile(source: &str) -> Result<Rules, String> {
        Rules::compile("t.rhai", source, &limits()).map_err(|e| e.to_string())
    }

    #[test]
    fn a_queue_literal_not_in_the_list_refuses_the_script_with_its_place() {
        // A map of constants (folded into one value by Rhai's optimizer) ...
        let err =
            compile("fn route(lead) {\n    #{ priority: \"P2\", queue: \"insde-sales\" }\n}\n")
                .unwrap_err();
        assert!(err.starts_with("t.rhai:2:"), "{err}");
        assert!(
            err.contains("queue \"insde-sales\" is not in the topology's `queues` (did you mean `inside-sales`?)"),
            "{err}"
        );
        // ... and one built at run time.
        let err = compile(
            "fn route(lead) {\n    let p = \"P\" + 2;\n    #{ priority: p,\n       queue: \"enterprise-nz\" }\n}\n",
        )
        .unwrap_err();
        assert!(err.starts_with("t.rhai:4:15:"), "{err}");
        assert!(err.contains("did you mean `enterprise-na`?"), "{err}");
        assert!(
            compile("fn route(lead) { #{ priority: \"P2\", queue: \"inside-sales\" } }").is_ok()
        );
        // Without a list, any queue.
        assert!(Rules::compile(
            "t.rhai",
            "fn route(lead) { #{ priority: \"P2\", queue: \"anything\" } }",
            &ScriptLimits::default()
        )
        .is_ok());
    }

    #[test]
    fn a_decision_naming_an_unlisted_queue_at_run_time_is_invalid() {
        let rules = compile(
            "fn route(lead) { #{ priority: \"P0\", queue: \"enterprise-\" + lead.region.to_lower() } }",
        )
        .unwrap();
        let lead = |region: &str| {
            let yaml = format!("{{region: {region}}}");
            serde_norway::from_str::<super::super::fixture_file::LeadSpec>(&yaml)
                .unwrap()
                .to_lead()
        };
        assert_eq!(
            rules.evaluate(&lead("NA")).unwrap().unwrap().queue,
            "enterprise-na"
        );
        let failure = rules.evaluate(&lead("NZ")).unwrap_err();
        assert_eq!(failure.class(), "invalid_decision");
        assert!(
            failure.to_string().contains("queue \"enterprise-nz\" is not in the topology's `queues` (did you mean `enterprise-na`?)"),
            "{failure}"
        );
        // Interpreted, the same.
        let interpreted = compile(
            "fn route(lead) { #{ priority: \"P0\", queue: \"enterprise-\" + lead.region.to_lower() } }",
        )
        .unwrap()
        .interpreted();
        assert_eq!(interpreted.evaluate(&lead("NZ")).unwrap_err(), failure);
        assert_eq!(interpreted.explain(&lead("NZ")).result, Err(failure));
    }
}
