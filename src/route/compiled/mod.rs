//! The rules compiler: `score` and `route` lowered at load time from Rhai's AST into native
//! closures over the typed [`Lead`], so that no `lead` map is built and no interpreter runs
//! per event (docs/performance.md has the figures).
//!
//! Exactness comes first: a compiled call either returns what the interpreter would return,
//! or gives up ("bails") and the call is run again by the interpreter, which then produces
//! the result, the error, or the over-budget failure exactly as before. A compiled call bails
//! on anything it cannot be sure of: a runtime error (type mismatch, overflow, bad index), a
//! value type it does not model, a result that is not a valid decision or score, more
//! operations than the limit (it counts at least as many as the interpreter), or the
//! wall-clock deadline. A function using a construct the lowering does not know is not
//! compiled at all, and neither is any function that calls it; `rules check` says which.

mod lower;
mod natives;
mod value;

use std::collections::HashMap;

use rhai::{Dynamic, Stmt, AST};

use self::lower::{Code, Exit, Frame, Lowerer};
use self::value::Val;
use super::engine::ScriptLimits;
use super::lead::{Decision, Lead, Priority};

/// Operations counted for entering `score` or `route` (the interpreter counts the call).
const ENTRY_OPS: u64 = 4;
/// The wall clock is read once every this many counted operations.
const CLOCK_CHECK_OPS: u64 = 512;

/// The limits a compiled call checks (the Rhai-enforced part of [`ScriptLimits`]).
#[derive(Debug, Clone)]
struct Limits {
    max_operations: u64,
    max_call_levels: usize,
    max_string_size: usize,
    max_array_size: usize,
    max_map_size: usize,
}

/// What compiled code reaches at run time: literals, functions, limits.
pub struct Env {
    strings: Vec<Box<str>>,
    functions: Vec<Function>,
    limits: Limits,
}

struct Function {
    slots: usize,
    body: Code,
}

/// Whether one script function runs compiled, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionReport {
    pub name: String,
    pub arity: usize,
    /// `Err(reason)`: it runs in the interpreter.
    pub compiled: Result<(), String>,
}

/// The compiled entry points of one script.
pub struct Compiled {
    env: Env,
    score: Option<usize>,
    route: Option<usize>,
    report: Vec<FunctionReport>,
}

impl Compiled {
    /// Lowers every function of `ast` (compiled from `source`) that can be lowered.
    pub fn new(ast: &AST, source: &str, limits: &ScriptLimits) -> Compiled {
        let limits = Limits {
            // Compiled calls count at least as many operations as the interpreter (measured by
            // a test); a fifth off the budget keeps a margin for constructs no test exercises.
            max_operations: if limits.max_operations == 0 {
                u64::MAX
            } else {
                limits.max_operations / 5 * 4 + limits.max_operations % 5 * 4 / 5
            },
            max_call_levels: limits.max_call_levels,
            max_string_size: limits.max_string_size,
            max_array_size: limits.max_array_size,
            max_map_size: limits.max_map_size,
        };
        let defs: Vec<_> = ast.iter_fn_def().collect();
        let index: HashMap<(String, usize), usize> = defs
            .iter()
            .enumerate()
            .map(|(i, d)| ((d.name.to_string(), d.params.len()), i))
            .collect();
        let bodies = function_bodies(ast, &defs);
        let literals = switch_literals(source);
        let top_level = !ast.statements().is_empty();

        let mut strings = Vec::new();
        let mut functions = Vec::with_capacity(defs.len());
        let mut results: Vec<Result<(), String>> = Vec::with_capacity(defs.len());
        let mut callees: Vec<Vec<usize>> = Vec::with_capacity(defs.len());
        for (def, body) in defs.iter().zip(&bodies) {
            let params: Vec<String> = def.params.iter().map(|p| p.to_string()).collect();
            let mut lowerer = Lowerer::new(&index, &literals, &mut strings, &params);
            let lowered = if top_level {
                Err(
                    "the script has statements outside functions, which run before every call"
                        .to_string(),
                )
            } else if def.this_type.is_some() {
                Err("is a method of a type".to_string())
            } else {
                lowerer.body(body)
            };
            let (slots, called) = (lowerer.slots, std::mem::take(&mut lowerer.callees));
            callees.push(called);
            match lowered {
                Ok(body) => {
                    functions.push(Function { slots, body });
                    results.push(Ok(()));
                }
                Err(reason) => {
                    functions.push(Function {
                        slots: 0,
                        body: Box::new(|_| Err(Exit::Bail)),
                    });
                    results.push(Err(reason));
                }
            }
        }
        // A function calling one that runs interpreted runs interpreted too.
        loop {
            let mut changed = false;
            for i in 0..results.len() {
                if results[i].is_err() {
                    continue;
                }
                if let Some(&bad) = callees[i].iter().find(|&&c| results[c].is_err()) {
                    results[i] = Err(format!(
                        "calls `{}`, which runs interpreted",
                        defs[bad].name
                    ));
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        let entry = |name: &str| {
            index
                .get(&(name.to_string(), 1))
                .copied()
                .filter(|&i| results[i].is_ok())
        };
        let (score, route) = (entry("score"), entry("route"));
        let report = defs
            .iter()
            .zip(results)
            .map(|(d, compiled)| FunctionReport {
                name: d.name.to_string(),
                arity: d.params.len(),
                compiled,
            })
            .collect();
        Compiled {
            env: Env {
                strings,
                functions,
                limits,
            },
            score,
            route,
            report,
        }
    }

    /// Every script function, in the order of the script's AST.
    pub fn report(&self) -> &[FunctionReport] {
        &self.report
    }

    pub fn has_score(&self) -> bool {
        self.score.is_some()
    }

    pub fn has_route(&self) -> bool {
        self.route.is_some()
    }

    /// `score(lead)`, if compiled and certain: a valid score (0..=100), else `None`.
    pub fn score(&self, lead: &Lead) -> Option<i32> {
        match self.run(self.score?, lead, lead.score.into())? {
            Val::Int(n) if (0..=100).contains(&n) => Some(n as i32),
            _ => None,
        }
    }

    /// `route(lead)` with `lead.score = score`, if compiled and certain: `()` or a valid
    /// decision, else `None`.
    pub fn route(&self, lead: &Lead, score: i32) -> Option<Option<Decision>> {
        let value = self.run(self.route?, lead, score.into())?;
        decision(value, score)
    }

    /// Operations a compiled `score` (or `route`) call counts; `None` when it bails.
    #[cfg(test)]
    fn ops(&self, route: bool, lead: &Lead, score: i32) -> Option<u64> {
        let index = if route { self.route? } else { self.score? };
        let mut frame = self.frame(index, lead, score.into());
        frame.tick(ENTRY_OPS).ok()?;
        (self.env.functions[index].body)(&mut frame).ok()?;
        Some(frame.ops)
    }

    fn run<'a>(&'a self, index: usize, lead: &'a Lead, score: i64) -> Option<Val<'a>> {
        let mut frame = self.frame(index, lead, score);
        frame.tick(ENTRY_OPS).ok()?;
        (self.env.functions[index].body)(&mut frame).ok()
    }

    /// A fresh evaluation of entry point `index` with `lead` (score `score`) as its argument.
    fn frame<'a>(&'a self, index: usize, lead: &'a Lead, score: i64) -> Frame<'a> {
        let mut stack = Vec::with_capacity(32);
        stack.push(Val::Lead(lead, score));
        stack.resize(self.env.functions[index].slots.max(1), Val::Unit);
        Frame {
            env: &self.env,
            stack,
            base: 0,
            ops: 0,
            depth: 1,
            next_clock_check: CLOCK_CHECK_OPS,
        }
    }
}

/// A compiled `route` result as a decision, when it is certainly valid (the interpreter's
/// validation, `convert::decision_from`, gives the message otherwise).
fn decision(value: Val, score: i32) -> Option<Option<Decision>> {
    let map = match value {
        Val::Unit => return Some(None),
        Val::Map(map) => map,
        _ => return None,
    };
    let (mut priority, mut queue, mut owner, mut reasons) = (None, None, None, Vec::new());
    for (key, value) in map {
        match (key.as_ref(), value) {
            ("priority", Val::Str(s)) => priority = Some(Priority::parse(&s)?),
            ("queue", Val::Str(s)) if !s.trim().is_empty() => queue = Some(s.into_owned()),
            ("owner", Val::Unit) => owner = None,
            ("owner", Val::Str(s)) => owner = (!s.trim().is_empty()).then(|| s.into_owned()),
            ("reasons", Val::Unit) => reasons = Vec::new(),
            ("reasons", Val::Array(items)) => {
                reasons = items
                    .into_iter()
                    .map(|i| match i {
                        Val::Str(s) => Some(s.into_owned()),
                        _ => None,
                    })
                    .collect::<Option<_>>()?;
            }
            _ => return None,
        }
    }
    Some(Some(Decision {
        priority: priority?,
        queue: queue?,
        owner,
        reasons,
        score,
    }))
}

/// Each function's top-level statements, found by position: the AST's function bodies are
/// reachable only through `AST::walk`, which visits them in order after the script's own
/// statements.
fn function_bodies(ast: &AST, defs: &[&rhai::Shared<rhai::ScriptFuncDef>]) -> Vec<Vec<Stmt>> {
    let key = |p: rhai::Position| (p.line().unwrap_or(0), p.position().unwrap_or(0));
    let ranges: Vec<_> = defs
        .iter()
        .map(|d| (key(d.body.start_position()), key(d.body.end_position())))
        .collect();
    let mut bodies = vec![Vec::new(); defs.len()];
    ast.walk(&mut |path: &[rhai::ASTNode]| {
        if let [rhai::ASTNode::Stmt(stmt)] = path {
            let at = key(stmt.position());
            // The innermost body holding it: a closure's body lies inside its function's.
            let holder = ranges
                .iter()
                .enumerate()
                .filter(|(_, &(a, b))| a <= at && at <= b)
                .max_by_key(|(_, &(a, _))| a)
                .map(|(i, _)| i);
            if let Some(i) = holder {
                bodies[i].push((*stmt).clone());
            }
        }
        true
    });
    bodies
}

/// The values `switch` cases may name, by the hash Rhai files them under: the script's
/// string, character and integer literals, booleans and `()`. Rhai keeps only the hash of a
/// case, so the candidates are put into one `switch` of their own, and Rhai's hash of each is
/// read back from that. A case whose hash is not among them leaves its function interpreted.
fn switch_literals(source: &str) -> HashMap<u64, Dynamic> {
    let engine = rhai::Engine::new_raw();
    let mut tokens = vec!["()".to_string(), "true".into(), "false".into()];
    tokens.extend(literal_tokens(source));
    // Each candidate once per value ("1_000" and "1000" are one case), and only real literals.
    let mut seen = std::collections::HashSet::new();
    let mut candidates: Vec<(String, Dynamic)> = Vec::new();
    for token in tokens {
        let Ok(value) = engine.eval_expression::<Dynamic>(&token) else {
            continue;
        };
        let simple = value.is_unit()
            || value.is_bool()
            || value.is_int()
            || value.is_char()
            || value.is_string();
        if simple && seen.insert((value.type_name(), value.to_string())) {
            candidates.push((token, value));
        }
    }
    let cases: Vec<String> = candidates
        .iter()
        .enumerate()
        .map(|(i, (t, _))| format!("{t} => {i}"))
        .collect();
    let probe = format!("switch x {{ {} }}", cases.join(", "));
    let Ok(ast) = engine.compile_with_scope(&scope_with_x(), &probe) else {
        return HashMap::new();
    };
    let Some(Stmt::Switch(switch, _)) = ast.statements().first() else {
        return HashMap::new();
    };
    let collection = &switch.1;
    collection
        .cases
        .iter()
        .filter_map(|(hash, list)| {
            let index = *list.blocks.first()?;
            match collection.expressions.get(index)?.rhs {
                rhai::Expr::IntegerConstant(i, _) => {
                    let (_, value) = candidates.get(usize::try_from(i).ok()?)?;
                    Some((*hash, value.clone()))
                }
                _ => None,
            }
        })
        .collect()
}

fn scope_with_x() -> rhai::Scope<'static> {
    let mut scope = rhai::Scope::new();
    scope.push("x", ());
    scope
}

/// The string, character and (non-negative) integer literals of a script, as written.
fn literal_tokens(source: &str) -> Vec<String> {
    let chars: Vec<char> = source.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                i += 1;
            }
            i += 1;
        } else if c == '"' || c == '\'' {
            let mut j = i + 1;
            while j < chars.len() && chars[j] != c && chars[j] != '\n' {
                if chars[j] == '\\' {
                    j += 1;
                }
                j += 1;
            }
            if j < chars.len() && chars[j] == c {
                out.push(chars[i..=j].iter().collect());
            }
            i = j;
        } else if c.is_ascii_digit() && (i == 0 || !is_word(chars[i - 1])) {
            let mut j = i;
            while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_') {
                j += 1;
            }
            let is_float =
                chars.get(j) == Some(&'.') && chars.get(j + 1).is_some_and(|d| d.is_ascii_digit());
            if !is_float {
                out.push(chars[i..j].iter().collect());
            }
            i = j - 1;
        }
        i += 1;
    }
    out
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '.'
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
