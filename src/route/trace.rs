//! What fired in one evaluation: the script functions called and the way each `if` went, in
//! the order they ran (`rules explain`, the audit topic).
//!
//! A trace comes from a second engine, the same sandbox with Rhai's debugger attached; it
//! steps into every statement and expression and notes two kinds of node. A call of a
//! function the script defines is a [`StepKind::Call`]. An `if` is a [`StepKind::If`] whose
//! outcome is read from the first node that runs after its condition at the same call level:
//! inside the `then` block means the condition held; anywhere else (the `else` block, or past
//! the statement) means it did not. Only the interpreter can be traced, so a traced run is
//! always interpreted (same results as the compiled one, see `route::compiled`).

use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::Arc;

use rhai::debugger::DebuggerCommand;
use rhai::{ASTNode, Engine, Expr, Position, Stmt, StmtBlock, AST};
use serde::Serialize;

use crate::model::TraceStep;

/// At most this many steps are kept per evaluation; the rest are only counted (a loop can
/// run an `if` thousands of times).
pub const MAX_STEPS: usize = 200;

/// One thing that fired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// Where in the script (1-based).
    pub line: u32,
    pub column: u32,
    /// The script function it ran in (`route`, `score`, or a helper).
    pub function: String,
    pub kind: StepKind,
    /// The function called, or the condition of the `if` as written.
    pub detail: String,
    /// For an `if`: whether its condition held; `None` when both its blocks are empty, so
    /// nothing shows which way it went.
    pub taken: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// A call of a function the script defines.
    Call,
    /// An `if` statement or expression.
    If,
}

impl StepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Call => "call",
            StepKind::If => "if",
        }
    }
}

/// A step as the audit topic carries it.
impl From<&Step> for TraceStep {
    fn from(s: &Step) -> TraceStep {
        TraceStep {
            line: s.line as i32,
            column: s.column as i32,
            function: s.function.clone(),
            kind: s.kind.as_str().to_string(),
            detail: s.detail.clone(),
            taken: s.taken,
        }
    }
}

/// A step read back from the audit topic (a `kind` other than `call` is an `if`).
impl From<&TraceStep> for Step {
    fn from(s: &TraceStep) -> Step {
        Step {
            line: s.line.max(0) as u32,
            column: s.column.max(0) as u32,
            function: s.function.clone(),
            kind: if s.kind == StepKind::Call.as_str() {
                StepKind::Call
            } else {
                StepKind::If
            },
            detail: s.detail.clone(),
            taken: s.taken,
        }
    }
}

/// The steps of one evaluation, and how many more there were than [`MAX_STEPS`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Trace {
    pub steps: Vec<Step>,
    pub truncated: usize,
}

impl Step {
    /// `12:5 route: if lead.score >= 80 -> true`, `14:16 route: calls pick_queue`.
    pub fn describe(&self) -> String {
        let at = format!("{}:{} {}:", self.line, self.column, self.function);
        match self.kind {
            StepKind::Call => format!("{at} calls {}", self.detail),
            StepKind::If => {
                let outcome = match self.taken {
                    Some(true) => "true",
                    Some(false) => "false",
                    None => "(both blocks empty)",
                };
                format!("{at} if {} -> {outcome}", self.detail)
            }
        }
    }
}

/// What the recorder needs of the script: its text and its function names.
struct Script {
    lines: Vec<String>,
    functions: HashSet<String>,
}

/// The sandbox engine with a debugger attached that feeds this thread's recorder.
pub(super) struct Tracer {
    pub engine: Engine,
    script: Arc<Script>,
}

impl Tracer {
    // Rhai marks its debugging interface as volatile (it may change between releases), not as
    // going away.
    #[allow(deprecated)]
    pub fn new(mut engine: Engine, ast: &AST, source: &str) -> Tracer {
        engine.register_debugger(
            |_, debugger| debugger,
            |context, _event, node, _source, position| {
                let level = context.call_level();
                let function = context
                    .global_runtime_state()
                    .debugger()
                    .call_stack()
                    .last()
                    .map(|frame| frame.fn_name.clone());
                RECORDER.with_borrow_mut(|recorder| {
                    if let Some(r) = recorder {
                        r.node(level, function, node, position);
                    }
                });
                Ok(DebuggerCommand::StepInto)
            },
        );
        let script = Script {
            lines: source.lines().map(str::to_string).collect(),
            functions: ast.iter_functions().map(|f| f.name.to_string()).collect(),
        };
        Tracer {
            engine,
            script: Arc::new(script),
        }
    }

    /// Records what runs on this thread until the recording is finished.
    pub fn record(&self) -> Recording {
        RECORDER.with_borrow_mut(|r| {
            *r = Some(Recorder {
                script: self.script.clone(),
                trace: Trace::default(),
                pending: Vec::new(),
            })
        });
        Recording { _private: () }
    }
}

/// An active recording; [`Recording::finish`] returns its trace.
pub(super) struct Recording {
    _private: (),
}

impl Recording {
    pub fn finish(self) -> Trace {
        let recorder = RECORDER.with_borrow_mut(Option::take);
        std::mem::forget(self);
        recorder.map(Recorder::finish).unwrap_or_default()
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        RECORDER.with_borrow_mut(|r| *r = None);
    }
}

thread_local! {
    /// The recording of the traced call running on this thread (a `Tracer` is shared).
    static RECORDER: RefCell<Option<Recorder>> = const { RefCell::new(None) };
}

/// An `if` whose condition is being evaluated.
struct PendingIf {
    level: usize,
    /// Its step in the trace (`None` past [`MAX_STEPS`]).
    step: Option<usize>,
    /// Where the `if` itself is.
    at: (usize, usize),
    /// Where the condition ends: the `then` block's `{`.
    body_start: (usize, usize),
    body_end: (usize, usize),
    body_empty: bool,
    else_empty: bool,
    /// The `else` block's `}`.
    else_end: (usize, usize),
}

struct Recorder {
    script: Arc<Script>,
    trace: Trace,
    pending: Vec<PendingIf>,
}

/// (line, column) of a position, `None` if it has none.
fn at(p: Position) -> Option<(usize, usize)> {
    Some((p.line()?, p.position().unwrap_or(0)))
}

impl Recorder {
    /// Called for every node the traced run steps on: only an `if` or a call of a script
    /// function becomes a step (and only then is the function's name copied).
    fn node(
        &mut self,
        level: usize,
        function: Option<rhai::ImmutableString>,
        node: ASTNode,
        position: Position,
    ) {
        if let Some(here) = at(position) {
            self.resolve(level, here);
        }
        let function = || function.as_deref().unwrap_or("(top level)").to_string();
        match node {
            ASTNode::Stmt(Stmt::If(flow, pos)) => {
                let detail = self.condition_text(*pos, &flow.body);
                let step = self.push(Step {
                    line: pos.line().unwrap_or(0) as u32,
                    column: pos.position().unwrap_or(0) as u32,
                    function: function(),
                    kind: StepKind::If,
                    detail,
                    taken: None,
                });
                let span = flow.body.span();
                self.pending.push(PendingIf {
                    level,
                    step,
                    at: at(*pos).unwrap_or((0, 0)),
                    body_start: at(span.start()).unwrap_or((usize::MAX, 0)),
                    body_end: at(span.end()).unwrap_or((usize::MAX, 0)),
                    body_empty: flow.body.is_empty(),
                    else_empty: flow.branch.is_empty(),
                    else_end: at(flow.branch.span().end()).unwrap_or((usize::MAX, 0)),
                });
            }
            ASTNode::Expr(Expr::FnCall(call, pos) | Expr::MethodCall(call, pos))
            | ASTNode::Stmt(Stmt::FnCall(call, pos))
                if call.op_token.is_none()
                    && self.script.functions.contains(call.name.as_str()) =>
            {
                self.push(Step {
                    line: pos.line().unwrap_or(0) as u32,
                    column: pos.position().unwrap_or(0) as u32,
                    function: function(),
                    kind: StepKind::Call,
                    detail: call.name.to_string(),
                    taken: None,
                });
            }
            _ => {}
        }
    }

    /// Settles the pending `if`s that a node at `level` and `here` decides.
    fn resolve(&mut self, level: usize, here: (usize, usize)) {
        while let Some(top) = self.pending.last() {
            let taken = if top.level > level || (top.level == level && here <= top.at) {
                // Its function returned, or a loop went round, before anything else ran
                // after the condition.
                exit_outcome(top)
            } else if top.level == level && here >= top.body_start {
                if !top.body_empty {
                    Some(here <= top.body_end)
                } else if !top.else_empty {
                    // Inside the `else` block, or past the statement (the empty `then` ran).
                    Some(here > top.else_end)
                } else {
                    None
                }
            } else {
                return;
            };
            let top = self.pending.pop().expect("checked above");
            self.settle(&top, taken);
        }
    }

    fn settle(&mut self, pending: &PendingIf, taken: Option<bool>) {
        if let Some(i) = pending.step {
            self.trace.steps[i].taken = taken;
        }
    }

    fn push(&mut self, step: Step) -> Option<usize> {
        if self.trace.steps.len() >= MAX_STEPS {
            self.trace.truncated += 1;
            return None;
        }
        self.trace.steps.push(step);
        Some(self.trace.steps.len() - 1)
    }

    fn finish(mut self) -> Trace {
        while let Some(top) = self.pending.pop() {
            let taken = exit_outcome(&top);
            self.settle(&top, taken);
        }
        self.trace
    }

    /// The condition of the `if` at `pos` as written: the text between `if` and its `{`, on
    /// one line.
    fn condition_text(&self, pos: Position, body: &StmtBlock) -> String {
        let Some((line, column)) = at(pos) else {
            return String::new();
        };
        let end = at(body.span().start());
        let mut text = String::new();
        for (n, source) in self.script.lines.iter().enumerate().skip(line - 1) {
            let n = n + 1;
            let chars: Vec<char> = source.chars().collect();
            let from = if n == line {
                column.saturating_sub(1)
            } else {
                0
            };
            let to = match end {
                Some((l, c)) if l == n => c.saturating_sub(1).min(chars.len()),
                _ => chars.len(),
            };
            if from < to {
                text.push_str(&chars[from..to].iter().collect::<String>());
                text.push(' ');
            }
            if end.is_none_or(|(l, _)| l <= n) {
                break;
            }
        }
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        text.strip_prefix("if ").unwrap_or(&text).to_string()
    }
}

/// How an `if` went when nothing ran after its condition at its level (its function
/// returned, or the evaluation ended): a non-empty `then` block would have run.
fn exit_outcome(pending: &PendingIf) -> Option<bool> {
    if !pending.body_empty {
        Some(false)
    } else if !pending.else_empty {
        Some(true)
    } else {
        None
    }
}
