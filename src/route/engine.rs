//! The script sandbox: one Rhai engine with hard limits and one compiled script, both built
//! once at start-up and shared by every thread that routes leads.

use std::cell::Cell;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rhai::{CallFnOptions, Dynamic, Engine, FuncArgs, Scope, AST};
use sha2::{Digest, Sha256};

use super::compiled::{Compiled, FunctionReport};
use super::convert;
use super::diagnose;
use super::explain::Explanation;
use super::lead::{BreachInfo, Decision, Lead, ScriptFailure};
use super::trace::Tracer;

/// Sandbox limits for one script; all configurable from the topology file later.
///
/// Every limit applies to each call of `score` or `route` on its own. For the Rhai-enforced
/// limits 0 means "no limit", and a zero `timeout` disables the wall-clock budget.
#[derive(Debug, Clone)]
pub struct ScriptLimits {
    /// Rhai operations (roughly: expressions evaluated) per call.
    pub max_operations: u64,
    /// Wall-clock budget per call, checked every few hundred operations.
    pub timeout: Duration,
    /// How deeply functions may call functions (stops runaway recursion).
    pub max_call_levels: usize,
    /// How deeply expressions may nest, at top level and inside functions.
    pub max_expr_depth: usize,
    /// Longest string a script may build, in bytes.
    pub max_string_size: usize,
    pub max_array_size: usize,
    pub max_map_size: usize,
    /// The topology's `queues:` (sorted): a decision naming another queue is an
    /// `invalid_decision`, and a `queue: "..."` literal naming one refuses the script.
    /// `None`: any queue.
    pub queues: Option<Arc<[String]>>,
}

impl ScriptLimits {
    /// The topology's `limits.script_max_operations`, `limits.script_timeout` and `queues`.
    pub fn of(topology: &crate::topology::Topology) -> ScriptLimits {
        ScriptLimits {
            max_operations: topology.limits.script_max_operations,
            timeout: topology.limits.script_timeout,
            queues: topology.queues.as_deref().map(Arc::from),
            ..ScriptLimits::default()
        }
    }
}

impl Default for ScriptLimits {
    fn default() -> Self {
        ScriptLimits {
            max_operations: 100_000,
            timeout: Duration::from_millis(50),
            max_call_levels: 32,
            max_expr_depth: 64,
            max_string_size: 64 * 1024,
            max_array_size: 10_000,
            max_map_size: 10_000,
            queues: None,
        }
    }
}

/// A script that cannot be used: unreadable, a syntax error, or a missing or malformed
/// `route`/`score`. Displays as `FILE:LINE:COLUMN: MESSAGE` (1-based, unknown parts omitted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct CompileError {
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// What is wrong and, where sensible, how to fix it.
    pub message: String,
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

/// A compiled routing script, ready to evaluate leads from any thread.
///
/// `score` and `route` run as native code where the rules compiler could lower them
/// (`route::compiled`), and in the Rhai interpreter otherwise, or when a compiled call gives
/// up; the results are the same either way.
pub struct Rules {
    engine: Engine,
    ast: AST,
    version: String,
    has_score: bool,
    has_escalate: bool,
    limits: ScriptLimits,
    compiled: Option<Compiled>,
    /// The script text (for traces: the conditions as written).
    source: Arc<str>,
    /// The traced engine of [`Rules::explain`], built on first use.
    tracer: OnceLock<Tracer>,
}

impl fmt::Debug for Rules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rules")
            .field("version", &self.version)
            .field("has_score", &self.has_score)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Rules {
    /// Compiles `source` (named `file` in errors) and checks its entry points.
    ///
    /// Top-level statements (e.g. `const` declarations) run once here, under the same limits,
    /// so that a script failing outside its functions is rejected now rather than per event.
    pub fn compile(file: &str, source: &str, limits: &ScriptLimits) -> Result<Rules, CompileError> {
        let engine = sandbox_engine(limits);
        let ast = engine
            .compile(source)
            .map_err(|e| diagnose::parse_error(file, &e))?;
        let mut unknown = super::fields::unknown_fields(file, &ast);
        if let Some(queues) = &limits.queues {
            unknown.extend(super::queues::unlisted(file, &ast, queues));
            unknown.sort_by_key(|e| (e.line, e.column));
        }
        let mut unknown = unknown.into_iter();
        if let Some(mut first) = unknown.next() {
            let more = unknown.count();
            if more > 0 {
                first.message += &format!(" (and {more} more unknown name(s) after it)");
            }
            return Err(first);
        }

        match arities(&ast, "route").as_slice() {
            [] => return Err(diagnose::missing_route(file)),
            a if a.contains(&1) => {}
            a => return Err(diagnose::wrong_arity(file, source, "route", a)),
        }
        let has_score = match arities(&ast, "score").as_slice() {
            [] => false,
            a if a.contains(&1) => true,
            a => return Err(diagnose::wrong_arity(file, source, "score", a)),
        };
        let has_escalate = match arities(&ast, "escalate").as_slice() {
            [] => false,
            a if a.contains(&2) => true,
            a => return Err(diagnose::wrong_arity(file, source, "escalate", a)),
        };

        {
            let _deadline = Deadline::start(limits.timeout);
            engine
                .run_ast(&ast)
                .map_err(|e| diagnose::top_level_error(file, *e, limits))?;
        }

        let compiled = Compiled::new(&ast, source, limits);
        Ok(Rules {
            engine,
            ast,
            version: rule_version(source),
            has_score,
            has_escalate,
            limits: limits.clone(),
            compiled: Some(compiled),
            source: source.into(),
            tracer: OnceLock::new(),
        })
    }

    /// The same rules, always interpreted: the baseline of benches and differential tests.
    pub fn interpreted(mut self) -> Rules {
        self.compiled = None;
        self
    }

    /// Which script functions run compiled, and why the others do not (empty when
    /// [`Rules::interpreted`]).
    pub fn compiled_functions(&self) -> &[FunctionReport] {
        self.compiled.as_ref().map_or(&[], |c| c.report())
    }

    /// Reads and compiles a script file; an unreadable file is a [`CompileError`] naming it.
    pub fn load(path: &Path, limits: &ScriptLimits) -> Result<Rules, CompileError> {
        let file = path.display().to_string();
        let source = std::fs::read_to_string(path).map_err(|e| CompileError {
            file: file.clone(),
            line: None,
            column: None,
            message: format!("cannot read the script: {e}"),
        })?;
        Rules::compile(&file, &source, limits)
    }

    /// `rule_version`: first 16 hex chars of the SHA-256 of the script text.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The `rule_version` a script with this text has.
    pub fn version_of(source: &str) -> String {
        rule_version(source)
    }

    /// Whether the script defines `fn score(lead)`.
    pub fn has_score(&self) -> bool {
        self.has_score
    }

    /// Whether the script defines `fn escalate(lead, breach)`.
    pub fn has_escalate(&self) -> bool {
        self.has_escalate
    }

    /// Runs `escalate(lead, breach)` (always interpreted; it runs once per breach, not per
    /// event): the decision the lead is re-routed to, or `Ok(None)` to record the breach
    /// only. `lead.score` is the default score, or `score(lead)`'s if the script has one.
    /// Without `escalate` in the script: `Ok(None)`.
    pub fn escalate(
        &self,
        lead: &Lead,
        breach: &BreachInfo,
    ) -> Result<Option<Decision>, ScriptFailure> {
        if !self.has_escalate {
            return Ok(None);
        }
        let score = if self.has_score {
            self.score(lead)?
        } else {
            lead.score
        };
        let mut map = convert::lead_map(lead);
        map.insert("score".into(), Dynamic::from_int(score.into()));
        let breach = Dynamic::from_map(convert::breach_map(breach));
        let value = self.call("escalate", (Dynamic::from_map(map), breach))?;
        self.admit(convert::decision_from(value, score)?)
    }

    /// The limits this script runs under.
    pub fn limits(&self) -> &ScriptLimits {
        &self.limits
    }

    /// Runs `score(lead)` if defined (its result must be an int 0..=100 and replaces
    /// `lead.score`), then `route(lead)`; `Ok(None)` when `route` returns `()`.
    pub fn evaluate(&self, lead: &Lead) -> Result<Option<Decision>, ScriptFailure> {
        let score = if self.has_score {
            self.score(lead)?
        } else {
            lead.score
        };
        self.route(lead, score)
    }

    fn score(&self, lead: &Lead) -> Result<i32, ScriptFailure> {
        if let Some(compiled) = &self.compiled {
            let _deadline = Deadline::start(self.limits.timeout);
            if let Some(score) = compiled.score(lead) {
                return Ok(score);
            }
        }
        let value = self.call("score", (Dynamic::from_map(convert::lead_map(lead)),))?;
        convert::score_from(value)
    }

    fn route(&self, lead: &Lead, score: i32) -> Result<Option<Decision>, ScriptFailure> {
        if let Some(compiled) = &self.compiled {
            let _deadline = Deadline::start(self.limits.timeout);
            if let Some(decision) = compiled.route(lead, score) {
                return self.admit(decision);
            }
        }
        let mut map = convert::lead_map(lead);
        map.insert("score".into(), Dynamic::from_int(score.into()));
        let value = self.call("route", (Dynamic::from_map(map),))?;
        self.admit(convert::decision_from(value, score)?)
    }

    /// A valid decision whose queue the topology lists (when it lists queues).
    fn admit(&self, decision: Option<Decision>) -> Result<Option<Decision>, ScriptFailure> {
        super::queues::admit(self.limits.queues.as_deref(), decision)
    }

    /// Evaluates `lead` as [`Rules::evaluate`] does, but interpreted and traced: the result,
    /// the `lead` map `route` saw, and what fired. The operation limit is the same; the
    /// wall-clock budget is [`TRACE_SLACK`] times longer, as stepping through every node is
    /// slower.
    pub fn explain(&self, lead: &Lead) -> Explanation {
        let tracer = self
            .tracer
            .get_or_init(|| Tracer::new(sandbox_engine(&self.limits), &self.ast, &self.source));
        let recording = tracer.record();
        let mut seen = convert::lead_map(lead);
        let result = self.traced_evaluate(&tracer.engine, &mut seen, lead.score);
        Explanation {
            lead: convert::to_json(&Dynamic::from_map(seen)),
            result,
            trace: recording.finish(),
            rule_version: self.version.clone(),
        }
    }

    /// `score` (if any) then `route` on `engine`; `seen` ends as the `lead` `route` got.
    fn traced_evaluate(
        &self,
        engine: &Engine,
        seen: &mut rhai::Map,
        default_score: i32,
    ) -> Result<Option<Decision>, ScriptFailure> {
        let timeout = self.limits.timeout.saturating_mul(TRACE_SLACK);
        let score = if self.has_score {
            let value =
                self.call_on(engine, "score", (Dynamic::from_map(seen.clone()),), timeout)?;
            convert::score_from(value)?
        } else {
            default_score
        };
        seen.insert("score".into(), Dynamic::from_int(score.into()));
        let value = self.call_on(engine, "route", (Dynamic::from_map(seen.clone()),), timeout)?;
        self.admit(convert::decision_from(value, score)?)
    }

    /// Calls one entry point under a fresh operation count and wall-clock deadline.
    fn call(&self, name: &'static str, args: impl FuncArgs) -> Result<Dynamic, ScriptFailure> {
        self.call_on(&self.engine, name, args, self.limits.timeout)
    }

    fn call_on(
        &self,
        engine: &Engine,
        name: &'static str,
        args: impl FuncArgs,
        timeout: Duration,
    ) -> Result<Dynamic, ScriptFailure> {
        let _deadline = Deadline::start(timeout);
        // No variables are shared between calls: each gets an empty scope, and the top-level
        // statements (normally none, or a few `const`s) run again so `global::NAME` resolves.
        engine
            .call_fn_with_options::<Dynamic>(
                CallFnOptions::new(),
                &mut Scope::new(),
                &self.ast,
                name,
                args,
            )
            .map_err(|e| diagnose::runtime_failure(name, *e, &self.limits))
    }
}

/// The sandboxed engine: limits, no `eval`, no `import`, `print`/`debug` to the log.
fn sandbox_engine(limits: &ScriptLimits) -> Engine {
    let mut engine = Engine::new();
    engine
        .set_max_operations(limits.max_operations)
        .set_max_call_levels(limits.max_call_levels)
        .set_max_expr_depths(limits.max_expr_depth, limits.max_expr_depth)
        .set_max_string_size(limits.max_string_size)
        .set_max_array_size(limits.max_array_size)
        .set_max_map_size(limits.max_map_size)
        // No string interning at run time: once its cache is full, Rhai's interner scans the
        // whole cache on every insert, under a lock that all stream threads share (a profile
        // showed it at 3 % of the pipeline); allocating the few strings a call builds is cheaper.
        .set_max_strings_interned(0)
        // A variable that was never declared is a compile error, so typos like `leed.title`
        // are caught by `rules check` instead of misrouting leads.
        .set_strict_variables(true)
        .set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new())
        .on_print(|text| tracing::debug!(target: "leadflow::script", "{text}"))
        .on_debug(|text, _source, pos| {
            tracing::debug!(target: "leadflow::script", line = pos.line(), "{text}")
        })
        .on_progress(|ops| {
            (ops & CLOCK_CHECK_MASK == 0 && past_deadline()).then(|| Dynamic::from(TIMEOUT_TOKEN))
        });
    // Scripts are self-contained: no code from strings, no modules from files.
    engine.disable_symbol("eval").disable_symbol("import");
    super::reps::register(&mut engine);
    engine
}

/// Arity of every free function (not a method) named `name`.
fn arities(ast: &AST, name: &str) -> Vec<usize> {
    ast.iter_functions()
        .filter(|f| f.name == name && f.this_type.is_none())
        .map(|f| f.params.len())
        .collect()
}

fn rule_version(source: &str) -> String {
    let digest = Sha256::digest(source.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// A traced call may take this many times the script's wall-clock budget.
const TRACE_SLACK: u32 = 10;

/// The wall clock is read once every `CLOCK_CHECK_MASK + 1` operations.
const CLOCK_CHECK_MASK: u64 = 511;
/// Marks an abort by the wall-clock check, as opposed to any other `ErrorTerminated`.
pub(super) const TIMEOUT_TOKEN: &str = "leadflow: wall-clock budget exceeded";

thread_local! {
    /// Deadline of the script call running on this thread. A thread-local rather than a field
    /// because one `Rules` (and its `on_progress` hook) is shared by many threads.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Sets this thread's deadline for one call; restores the previous one when dropped.
struct Deadline {
    previous: Option<Instant>,
}

impl Deadline {
    fn start(timeout: Duration) -> Deadline {
        let at = if timeout.is_zero() {
            None
        } else {
            Instant::now().checked_add(timeout)
        };
        Deadline {
            previous: DEADLINE.replace(at),
        }
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        DEADLINE.set(self.previous);
    }
}

pub(super) fn past_deadline() -> bool {
    DEADLINE.get().is_some_and(|at| Instant::now() >= at)
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
