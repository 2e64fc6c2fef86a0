//! Turns Rhai's errors into messages a sales-ops person can act on, without lead data in them.
//!
//! Runtime messages end up in the DLQ's `error.message` header (contracts §5), which must not
//! carry personal data: values a script threw are never copied, only where it happened.

use rhai::{EvalAltResult, LexError, ParseError, ParseErrorType, Position};

use super::convert::describe;
use super::engine::{CompileError, ScriptLimits, TIMEOUT_TOKEN};
use super::lead::ScriptFailure;

const ROUTE_SHAPE: &str = "define `fn route(lead) { ... }` returning \
    #{ priority: \"P0\"|\"P1\"|\"P2\", queue: \"...\" } or () for no decision";

/// A syntax error, with a hint for the common ones.
pub(super) fn parse_error(file: &str, err: &ParseError) -> CompileError {
    let kind = err.err_type();
    let hint = match kind {
        ParseErrorType::VariableUndefined(name) => Some(format!(
            "every name must be declared first (`let {name} = ...;`) or be a function \
             parameter such as `lead`; check the spelling"
        )),
        ParseErrorType::Reserved(word) if word == "import" => {
            return at(
                file,
                err.position(),
                "`import` is not allowed: a routing script is one self-contained file".into(),
            )
        }
        ParseErrorType::BadInput(LexError::ImproperSymbol(word, _)) if word == "eval" => {
            return at(
                file,
                err.position(),
                "`eval` is not allowed in routing scripts".into(),
            )
        }
        ParseErrorType::MissingToken(token, _) if token == "}" => {
            Some("check that every `{` has a matching `}`".to_string())
        }
        ParseErrorType::MissingToken(token, _) if token == ";" => {
            Some("statements end with `;` (the last expression of a block may omit it)".to_string())
        }
        ParseErrorType::UnexpectedEOF => Some(
            "the script ends too early: look for an unclosed `{`, `(`, `[` or string".to_string(),
        ),
        ParseErrorType::ExprTooDeep => Some(
            "split long `if ... else if ...` chains or deeply nested expressions into helper \
             functions"
                .to_string(),
        ),
        _ => None,
    };
    let message = match hint {
        Some(hint) => format!("{kind}; {hint}"),
        None => kind.to_string(),
    };
    at(file, err.position(), message)
}

pub(super) fn missing_route(file: &str) -> CompileError {
    at(
        file,
        Position::NONE,
        format!("the script has no `route` function: {ROUTE_SHAPE}"),
    )
}

/// `route` or `score` exists, but not with exactly one parameter.
pub(super) fn wrong_arity(file: &str, source: &str, name: &str, found: &[usize]) -> CompileError {
    let found = found
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(" or ");
    let message = if name == "escalate" {
        format!(
            "`fn escalate` must take exactly two parameters, the lead and the breach: \
             `fn escalate(lead, breach) {{ ... }}` (it takes {found})"
        )
    } else {
        format!(
            "`fn {name}` must take exactly one parameter, the lead: `fn {name}(lead) {{ ... }}` \
             (it takes {found})"
        )
    };
    let (line, column) = find_fn(source, name).map_or((None, None), |(l, c)| (Some(l), Some(c)));
    CompileError {
        file: file.to_string(),
        line,
        column,
        message,
    }
}

/// A top-level statement failed while compiling (they run once, at load).
pub(super) fn top_level_error(
    file: &str,
    err: EvalAltResult,
    limits: &ScriptLimits,
) -> CompileError {
    match classify(err, limits) {
        Failure::Timeout(message) => at(
            file,
            Position::NONE,
            format!("the statements outside functions {message}"),
        ),
        Failure::Error {
            message, pos, hint, ..
        } => at(
            file,
            pos,
            format!(
                "{message} (in the statements outside functions, which run once at load){}",
                hint.map(|h| format!("; {h}")).unwrap_or_default()
            ),
        ),
    }
}

/// A failed call of `function` (`score` or `route`), as the DLQ will see it.
pub(super) fn runtime_failure(
    function: &str,
    err: EvalAltResult,
    limits: &ScriptLimits,
) -> ScriptFailure {
    match classify(err, limits) {
        Failure::Timeout(message) => ScriptFailure::Timeout(format!("`{function}` {message}")),
        Failure::Error {
            message,
            pos,
            chain,
            hint,
        } => {
            let innermost = chain.last().map_or(function, String::as_str);
            let mut text = format!("{message} in `{innermost}`");
            if let Some(line) = pos.line() {
                text.push_str(&format!(" at line {line}"));
                if let Some(column) = pos.position() {
                    text.push_str(&format!(", column {column}"));
                }
            }
            if !chain.is_empty() {
                text.push_str(&format!(" (called via {})", call_path(function, &chain)));
            }
            if let Some(hint) = hint {
                text.push_str("; ");
                text.push_str(hint);
            }
            ScriptFailure::Error(text)
        }
    }
}

enum Failure {
    Timeout(String),
    /// `chain` lists the script functions the error passed through, outermost first.
    Error {
        message: String,
        pos: Position,
        chain: Vec<String>,
        hint: Option<&'static str>,
    },
}

fn classify(err: EvalAltResult, limits: &ScriptLimits) -> Failure {
    let mut chain = Vec::new();
    let mut err = err;
    loop {
        match err {
            EvalAltResult::ErrorInFunctionCall(name, _, inner, _) => {
                chain.push(name);
                err = *inner;
            }
            EvalAltResult::ErrorInModule(_, inner, _) => err = *inner,
            _ => break,
        }
    }
    let pos = err.position();
    let special = match &err {
        EvalAltResult::ErrorTooManyOperations(_) => {
            return Failure::Timeout(format!(
                "used more than {} operations (is there a loop that never ends?)",
                limits.max_operations
            ))
        }
        EvalAltResult::ErrorTerminated(token, _) if is_timeout_token(token) => {
            return Failure::Timeout(format!(
                "ran longer than its time budget of {:?}",
                limits.timeout
            ))
        }
        // The thrown value is whatever the script put there, lead fields included.
        EvalAltResult::ErrorRuntime(value, _) => Some(format!(
            "the script threw an error ({}, not copied here)",
            describe(value)
        )),
        EvalAltResult::Exit(..) => Some("the script called `exit`".to_string()),
        // e.g. "Error parsing integer number 'x'": the quoted text may come from the lead.
        EvalAltResult::ErrorArithmetic(message, _) => Some(redact_quoted(message)),
        EvalAltResult::ErrorIndexNotFound(index, _) => {
            Some(format!("no such index ({})", describe(index)))
        }
        EvalAltResult::ErrorStackOverflow(_) => Some(format!(
            "functions called each other more than {} levels deep (does a function call itself \
             without end?)",
            limits.max_call_levels
        )),
        _ => None,
    };
    let message = special.unwrap_or_else(|| {
        let mut err = err;
        err.clear_position();
        err.to_string()
    });
    let hint = message.contains("type '()'").then_some(
        "a field that can be missing (like `lead.account`) is `()`: compare it with `()` \
         first, or read through it with `?.` as in `lead.account?.tier`",
    );
    Failure::Error {
        message,
        pos,
        chain,
        hint,
    }
}

/// `parsing 'abc' failed` → `parsing '…' failed`.
fn redact_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for (i, part) in message.split('\'').enumerate() {
        if i > 0 {
            out.push('\'');
        }
        // Odd parts are between quotes (an unmatched last quote leaves its text redacted too).
        out.push_str(if i % 2 == 1 { "…" } else { part });
    }
    out
}

fn is_timeout_token(token: &rhai::Dynamic) -> bool {
    token
        .clone()
        .into_immutable_string()
        .is_ok_and(|t| t.as_str() == TIMEOUT_TOKEN)
}

/// `route → helper → inner`.
fn call_path(function: &str, chain: &[String]) -> String {
    std::iter::once(function)
        .chain(chain.iter().map(String::as_str))
        .map(|f| format!("`{f}`"))
        .collect::<Vec<_>>()
        .join(" → ")
}

fn at(file: &str, pos: Position, message: String) -> CompileError {
    CompileError {
        file: file.to_string(),
        line: pos.line(),
        column: pos.line().and(pos.position()),
        message,
    }
}

/// 1-based line and column of `fn NAME` in the source text, if it is there.
fn find_fn(source: &str, name: &str) -> Option<(usize, usize)> {
    source.lines().enumerate().find_map(|(i, line)| {
        let code = line.split("//").next().unwrap_or(line);
        let mut from = 0;
        while let Some(offset) = code[from..].find("fn ") {
            let start = from + offset;
            let rest = code[start + 3..].trim_start();
            let boundary =
                start == 0 || !code[..start].ends_with(|c: char| c.is_alphanumeric() || c == '_');
            if boundary
                && rest
                    .strip_prefix(name)
                    .is_some_and(|r| r.trim_start().starts_with('('))
            {
                return Some((i + 1, code[..start].chars().count() + 1));
            }
            from = start + 3;
        }
        None
    })
}
