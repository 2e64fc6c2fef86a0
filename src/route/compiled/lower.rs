//! Lowering: one script function's Rhai AST into a tree of native closures.
//!
//! Each node becomes a boxed closure over a [`Frame`] (the call stack of one evaluation).
//! Variables are resolved to stack slots at load time; script functions are called by index.
//! Anything this module does not know is refused with a reason (the function then stays
//! interpreted); anything it cannot be sure of at run time answers [`Exit::Bail`] and the
//! whole call is run again by the interpreter.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use rhai::{ASTFlags, BinaryExpr, Dynamic, Expr, FnCallExpr, Stmt, StmtBlock};

use super::natives;
use super::value::{arith, compare, data_sizes, Arith, Bail, Cmp, Val};
use super::Env;

/// Operations counted per statement, on top of its expressions' own: enough that a compiled
/// call always counts more than the interpreter (a test measures the margin).
const STATEMENT_OPS: u64 = 2;

/// How a node's evaluation ended other than with a value.
pub enum Exit<'a> {
    Return(Val<'a>),
    Break,
    Continue,
    Bail,
}

impl From<Bail> for Exit<'_> {
    fn from(_: Bail) -> Self {
        Exit::Bail
    }
}

pub type Flow<'a> = Result<Val<'a>, Exit<'a>>;
pub type Code = Box<dyn for<'a> Fn(&mut Frame<'a>) -> Flow<'a> + Send + Sync>;

/// The state of one evaluation of `score` or `route`.
pub struct Frame<'a> {
    pub env: &'a Env,
    pub stack: Vec<Val<'a>>,
    /// Where the running function's slots start.
    pub base: usize,
    /// Operations counted so far, at least as many as the interpreter would count.
    pub ops: u64,
    /// Script function calls in progress.
    pub depth: usize,
    pub next_clock_check: u64,
}

impl<'a> Frame<'a> {
    /// Counts `n` operations; over the budget (or past the wall-clock deadline) is a bail.
    #[inline]
    pub fn tick(&mut self, n: u64) -> Result<(), Exit<'a>> {
        self.ops += n;
        if self.ops > self.env.limits.max_operations {
            return Err(Exit::Bail);
        }
        if self.ops >= self.next_clock_check {
            self.next_clock_check = self.ops + super::CLOCK_CHECK_OPS;
            if crate::route::engine::past_deadline() {
                return Err(Exit::Bail);
            }
        }
        Ok(())
    }

    fn slot(&mut self, slot: usize) -> &mut Val<'a> {
        let i = self.base + slot;
        &mut self.stack[i]
    }

    /// Bails when `v` is over a size limit the interpreter enforces.
    pub fn check_size(&self, v: &Val) -> Result<(), Exit<'a>> {
        let limits = &self.env.limits;
        let over = |n: usize, max: usize| max != 0 && n > max;
        match v {
            Val::Str(s) if over(s.len(), limits.max_string_size) => return Err(Exit::Bail),
            Val::Array(_) | Val::Map(_) => {}
            _ => return Ok(()),
        }
        let (arrays, maps, strings) = data_sizes(v);
        if over(arrays, limits.max_array_size)
            || over(maps, limits.max_map_size)
            || over(strings, limits.max_string_size)
        {
            return Err(Exit::Bail);
        }
        Ok(())
    }
}

/// Why a function cannot be compiled (it then runs interpreted).
pub type Refusal = String;
type Lowered<T> = Result<T, Refusal>;

/// Lowers one function body.
pub struct Lowerer<'s> {
    /// Every script function, by (name, arity): its index in the program.
    pub functions: &'s HashMap<(String, usize), usize>,
    /// Literal candidates of `switch` cases, by Rhai's hash of the value.
    pub switch_literals: &'s HashMap<u64, Dynamic>,
    /// The program's string literals; closures refer to them by index.
    pub strings: &'s mut Vec<Box<str>>,
    /// Names in scope, innermost last, with their slots.
    scope: Vec<(String, usize)>,
    pub slots: usize,
    /// Script functions this one calls.
    pub callees: Vec<usize>,
}

impl<'s> Lowerer<'s> {
    pub fn new(
        functions: &'s HashMap<(String, usize), usize>,
        switch_literals: &'s HashMap<u64, Dynamic>,
        strings: &'s mut Vec<Box<str>>,
        params: &[String],
    ) -> Self {
        let scope: Vec<_> = params.iter().cloned().zip(0..).collect();
        Lowerer {
            functions,
            switch_literals,
            strings,
            slots: scope.len(),
            scope,
            callees: Vec::new(),
        }
    }

    fn declare(&mut self, name: &str) -> usize {
        let slot = self.slots;
        self.slots += 1;
        self.scope.push((name.to_string(), slot));
        slot
    }

    fn lookup(&self, name: &str) -> Lowered<usize> {
        self.scope
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|&(_, slot)| slot)
            .ok_or_else(|| format!("uses `{name}`, which is not a local variable"))
    }

    fn string(&mut self, s: &str) -> usize {
        self.strings.push(s.into());
        self.strings.len() - 1
    }

    /// A function body: its value is its last statement's, or what `return` gives.
    pub fn body(&mut self, statements: &[Stmt]) -> Lowered<Code> {
        let block = self.statements(statements)?;
        Ok(Box::new(move |f| match block(f) {
            Ok(v) | Err(Exit::Return(v)) => Ok(v),
            Err(Exit::Bail) => Err(Exit::Bail),
            Err(Exit::Break | Exit::Continue) => Err(Exit::Bail),
        }))
    }

    fn block(&mut self, block: &StmtBlock) -> Lowered<Code> {
        let mark = self.scope.len();
        let code = self.statements(block.statements());
        self.scope.truncate(mark);
        code
    }

    fn statements(&mut self, statements: &[Stmt]) -> Lowered<Code> {
        let mut codes: Vec<Code> = statements
            .iter()
            .filter(|s| !s.is_noop())
            .map(|s| self.stmt(s))
            .collect::<Lowered<_>>()?;
        Ok(match codes.len() {
            0 => Box::new(|_| Ok(Val::Unit)),
            1 => {
                let only = codes.pop().expect("one statement");
                Box::new(move |f| {
                    f.tick(STATEMENT_OPS)?;
                    only(f)
                })
            }
            _ => {
                let last = codes.pop().expect("statements");
                Box::new(move |f| {
                    for code in &codes {
                        f.tick(STATEMENT_OPS)?;
                        code(f)?;
                    }
                    f.tick(STATEMENT_OPS)?;
                    last(f)
                })
            }
        })
    }

    fn stmt(&mut self, stmt: &Stmt) -> Lowered<Code> {
        match stmt {
            Stmt::Noop(_) => Ok(Box::new(|_| Ok(Val::Unit))),
            Stmt::Expr(e) => self.expr(e),
            Stmt::FnCall(call, _) => self.call(call),
            Stmt::Block(block) => self.block(block),
            Stmt::Var(x, flags, _) => {
                if flags.contains(ASTFlags::EXPORTED) {
                    return Err("exports a variable".into());
                }
                let (ident, value, _) = &**x;
                let value = self.expr(value)?;
                let slot = self.declare(&ident.name);
                Ok(Box::new(move |f| {
                    f.tick(1)?;
                    let v = value(f)?;
                    f.check_size(&v)?;
                    *f.slot(slot) = v;
                    Ok(Val::Unit)
                }))
            }
            Stmt::Assignment(x) => self.assignment(&x.0, &x.1),
            Stmt::If(x, _) => {
                let cond = self.expr(&x.expr)?;
                let then = self.block(&x.body)?;
                let otherwise = self.block(&x.branch)?;
                Ok(Box::new(move |f| {
                    f.tick(1)?;
                    if cond(f)?.as_bool()? {
                        then(f)
                    } else {
                        otherwise(f)
                    }
                }))
            }
            Stmt::Switch(x, _) => self.switch(&x.0, &x.1),
            Stmt::While(x, _) => {
                let forever = matches!(x.expr, Expr::Unit(_));
                let cond = self.expr(&x.expr)?;
                let body = self.block(&x.body)?;
                Ok(Box::new(move |f| loop {
                    f.tick(1)?;
                    if !forever && !cond(f)?.as_bool()? {
                        return Ok(Val::Unit);
                    }
                    match body(f) {
                        Ok(_) | Err(Exit::Continue) => {}
                        Err(Exit::Break) => return Ok(Val::Unit),
                        Err(e) => return Err(e),
                    }
                }))
            }
            Stmt::Do(x, flags, _) => {
                let until = flags.contains(ASTFlags::NEGATED);
                let cond = self.expr(&x.expr)?;
                let body = self.block(&x.body)?;
                Ok(Box::new(move |f| loop {
                    f.tick(1)?;
                    match body(f) {
                        Ok(_) | Err(Exit::Continue) => {}
                        Err(Exit::Break) => return Ok(Val::Unit),
                        Err(e) => return Err(e),
                    }
                    if cond(f)?.as_bool()? == until {
                        return Ok(Val::Unit);
                    }
                }))
            }
            Stmt::For(x, _) => self.for_loop(&x.0.name, x.1.as_ref().map(|c| &*c.name), &x.2),
            Stmt::BreakLoop(value, flags, _) => {
                if value.is_some() {
                    return Err("breaks out of a loop with a value".into());
                }
                let brk = flags.contains(ASTFlags::BREAK);
                Ok(Box::new(move |f| {
                    f.tick(1)?;
                    Err(if brk { Exit::Break } else { Exit::Continue })
                }))
            }
            Stmt::Return(value, flags, _) => {
                if flags.contains(ASTFlags::BREAK) {
                    return Err("uses `throw`".into());
                }
                let value = match value {
                    Some(e) => Some(self.expr(e)?),
                    None => None,
                };
                Ok(Box::new(move |f| {
                    f.tick(1)?;
                    let v = match &value {
                        Some(code) => code(f)?,
                        None => Val::Unit,
                    };
                    Err(Exit::Return(v))
                }))
            }
            Stmt::TryCatch(..) => Err("uses `try`/`catch`".into()),
            _ => Err("uses a statement leadflow cannot compile (import, export or closure)".into()),
        }
    }

    fn assignment(&mut self, op: &rhai::OpAssignment, x: &BinaryExpr) -> Lowered<Code> {
        let Expr::Variable(var, _, _) = &x.lhs else {
            return Err("assigns to a property or an index".into());
        };
        if !var.2.is_empty() {
            return Err("assigns to a variable of a module".into());
        }
        let slot = self.lookup(&var.1)?;
        let value = self.expr(&x.rhs)?;
        let Some((.., op_syntax)) = op.get_op_assignment_info() else {
            return Ok(Box::new(move |f| {
                f.tick(1)?;
                let v = value(f)?;
                f.check_size(&v)?;
                *f.slot(slot) = v;
                Ok(Val::Unit)
            }));
        };
        let op = arith_op(op_syntax).ok_or_else(|| format!("uses `{op_syntax}=`"))?;
        Ok(Box::new(move |f| {
            f.tick(2)?;
            let rhs = value(f)?;
            let target = f.slot(slot);
            match (&mut *target, op) {
                (Val::Str(s), Arith::Add) => {
                    super::value::append_text(s.to_mut(), &rhs)?;
                }
                (Val::Array(items), Arith::Add) => match rhs {
                    Val::Array(more) => items.extend(more),
                    _ => return Err(Exit::Bail),
                },
                _ => {
                    let current = std::mem::replace(target, Val::Unit);
                    *f.slot(slot) = arith(op, current, &rhs)?;
                }
            }
            let v = &f.stack[f.base + slot];
            f.check_size(v)?;
            Ok(Val::Unit)
        }))
    }

    fn for_loop(
        &mut self,
        var: &str,
        counter: Option<&str>,
        x: &rhai::FlowControl,
    ) -> Lowered<Code> {
        // `for i in a..b` / `a..=b` iterates the integers without building anything.
        let range = match &x.expr {
            Expr::FnCall(call, _) if call.namespace.is_empty() && call.args.len() == 2 => {
                match call.name.as_str() {
                    ".." => Some(false),
                    "..=" => Some(true),
                    _ => None,
                }
            }
            _ => None,
        };
        // A range of constants the optimiser folded.
        let folded = match &x.expr {
            Expr::DynamicConstant(d, _) => {
                if let Some(r) = d.read_lock::<std::ops::Range<i64>>() {
                    Some((r.start, r.end, false))
                } else {
                    d.read_lock::<std::ops::RangeInclusive<i64>>()
                        .map(|r| (*r.start(), *r.end(), true))
                }
            }
            _ => None,
        };
        let range = folded.map(|(.., inclusive)| inclusive).or(range);
        let (from, to, iterable) = match (folded, range, &x.expr) {
            (Some((a, b, _)), ..) => (
                Some(constant(Val::Int(a))),
                Some(constant(Val::Int(b))),
                None,
            ),
            (None, Some(_), Expr::FnCall(call, _)) => (
                Some(self.expr(&call.args[0])?),
                Some(self.expr(&call.args[1])?),
                None,
            ),
            _ => (None, None, Some(self.expr(&x.expr)?)),
        };
        let mark = self.scope.len();
        let var_slot = self.declare(var);
        let counter_slot = counter.map(|c| self.declare(c));
        let body = self.block(&x.body)?;
        self.scope.truncate(mark);

        Ok(Box::new(move |f| {
            f.tick(1)?;
            let items: Box<dyn Iterator<Item = Val<'_>>> = match (&from, &to, &iterable) {
                (Some(from), Some(to), _) => {
                    let (a, b) = (from(f)?.as_int()?, to(f)?.as_int()?);
                    if range == Some(true) {
                        Box::new((a..=b).map(Val::Int))
                    } else {
                        Box::new((a..b).map(Val::Int))
                    }
                }
                (_, _, Some(iterable)) => match iterable(f)? {
                    Val::Array(items) => Box::new(items.into_iter()),
                    _ => return Err(Exit::Bail),
                },
                _ => return Err(Exit::Bail),
            };
            for (i, item) in items.enumerate() {
                f.tick(1)?;
                *f.slot(var_slot) = item;
                if let Some(c) = counter_slot {
                    *f.slot(c) = Val::Int(i64::try_from(i).map_err(|_| Exit::Bail)?);
                }
                match body(f) {
                    Ok(_) | Err(Exit::Continue) => {}
                    Err(Exit::Break) => break,
                    Err(e) => return Err(e),
                }
            }
            Ok(Val::Unit)
        }))
    }

    fn switch(&mut self, value: &Expr, cases: &rhai::SwitchCasesCollection) -> Lowered<Code> {
        let value = self.expr(value)?;
        // Each case's condition (None = always) and result, and the literal each case matches.
        let mut exprs: Vec<Code> = Vec::new();
        let mut conds: Vec<Option<Code>> = Vec::new();
        for b in cases.expressions.iter() {
            exprs.push(self.expr(&b.rhs)?);
            conds.push(match b.lhs {
                Expr::BoolConstant(true, _) => None,
                ref c => Some(self.expr(c)?),
            });
        }
        let range_cases: Vec<usize> = cases.ranges.iter().map(|r| r.index()).collect();
        let mut table: Vec<(Val<'static>, Vec<usize>)> = Vec::new();
        for (hash, list) in cases.cases.iter() {
            // Rhai files a range case under the range's own hash too; no value compiled code
            // switches on is a range, so those entries never match.
            if list.blocks.iter().all(|b| range_cases.contains(b)) {
                continue;
            }
            let literal = self
                .switch_literals
                .get(hash)
                .and_then(literal_val)
                .ok_or("has a `switch` case leadflow cannot read back")?;
            table.push((literal, list.blocks.to_vec()));
        }
        let ranges: Vec<(i64, i64, bool, usize)> = cases
            .ranges
            .iter()
            .map(|r| match r {
                rhai::RangeCase::ExclusiveInt(r, i) => (r.start, r.end, false, *i),
                rhai::RangeCase::InclusiveInt(r, i) => (*r.start(), *r.end(), true, *i),
            })
            .collect();
        let default = cases.def_case;
        Ok(Box::new(move |f| {
            f.tick(1)?;
            let v = value(f)?;
            let mut chosen = None;
            // Cases are literals of the types `same_literal` compares; a value of another type
            // (a float, a map) matches none of them, as its hash matches none in Rhai.
            if let Some((_, blocks)) = table.iter().find(|(lit, _)| same_literal(lit, &v)) {
                for &i in blocks {
                    let ok = match &conds[i] {
                        None => true,
                        Some(c) => c(f)?.as_bool()?,
                    };
                    if ok {
                        chosen = Some(i);
                        break;
                    }
                }
            }
            if chosen.is_none() {
                for &(a, b, inclusive, i) in &ranges {
                    let inside = match v {
                        Val::Int(n) => n >= a && if inclusive { n <= b } else { n < b },
                        Val::Float(x) => {
                            let (a, b) = (a as f64, b as f64);
                            x >= a && if inclusive { x <= b } else { x < b }
                        }
                        _ => false,
                    };
                    if inside {
                        let ok = match &conds[i] {
                            None => true,
                            Some(c) => c(f)?.as_bool()?,
                        };
                        if ok {
                            chosen = Some(i);
                            break;
                        }
                    }
                }
            }
            match chosen.or(default) {
                Some(i) => exprs[i](f),
                None => Ok(Val::Unit),
            }
        }))
    }

    pub fn expr(&mut self, expr: &Expr) -> Lowered<Code> {
        match expr {
            Expr::Unit(_) => Ok(constant(Val::Unit)),
            Expr::BoolConstant(b, _) => Ok(constant(Val::Bool(*b))),
            Expr::IntegerConstant(n, _) => Ok(constant(Val::Int(*n))),
            Expr::FloatConstant(x, _) => Ok(constant(Val::Float(**x))),
            Expr::CharConstant(c, _) => Ok(constant(Val::Char(*c))),
            Expr::StringConstant(s, _) => {
                let i = self.string(s);
                Ok(Box::new(move |f| {
                    f.tick(1)?;
                    Ok(Val::Str(Cow::Borrowed(&f.env.strings[i])))
                }))
            }
            Expr::DynamicConstant(d, _) => {
                let v = self.dynamic(d)?;
                Ok(Box::new(move |f| {
                    f.tick(1)?;
                    Ok(v.clone().materialise(f.env))
                }))
            }
            Expr::InterpolatedString(parts, _) => {
                let parts: Vec<Code> =
                    parts.iter().map(|p| self.expr(p)).collect::<Lowered<_>>()?;
                Ok(Box::new(move |f| {
                    f.tick(1)?;
                    let mut out = String::new();
                    for part in &parts {
                        // The interpreter turns each part into text with a function call.
                        f.tick(2)?;
                        part(f)?.push_display(&mut out)?;
                    }
                    let v = Val::Str(Cow::Owned(out));
                    f.check_size(&v)?;
                    Ok(v)
                }))
            }
            Expr::Array(items, _) => {
                let items: Vec<Code> =
                    items.iter().map(|p| self.expr(p)).collect::<Lowered<_>>()?;
                Ok(Box::new(move |f| {
                    f.tick(1)?;
                    let mut out = Vec::with_capacity(items.len());
                    for item in &items {
                        out.push(item(f)?);
                    }
                    let v = Val::Array(out);
                    f.check_size(&v)?;
                    Ok(v)
                }))
            }
            Expr::Map(x, _) => {
                let mut template: Vec<(usize, Literal)> = Vec::new();
                for (key, value) in &x.1 {
                    let k = self.string(key);
                    template.push((k, self.dynamic(value)?));
                }
                let mut entries: Vec<(usize, Code)> = Vec::new();
                for (ident, value) in x.0.iter() {
                    let k = self.string(&ident.name);
                    entries.push((k, self.expr(value)?));
                }
                Ok(Box::new(move |f| {
                    f.tick(1)?;
                    let env = f.env;
                    let mut map = BTreeMap::new();
                    for (k, v) in &template {
                        map.insert(Cow::Borrowed(&*env.strings[*k]), v.clone().materialise(env));
                    }
                    for (k, code) in &entries {
                        let v = code(f)?;
                        map.insert(Cow::Borrowed(&*env.strings[*k]), v);
                    }
                    let v = Val::Map(map);
                    f.check_size(&v)?;
                    Ok(v)
                }))
            }
            Expr::Variable(x, _, _) => {
                if !x.2.is_empty() {
                    return Err(format!("uses `{}` from a module", x.1));
                }
                let slot = self.lookup(&x.1)?;
                Ok(Box::new(move |f| {
                    f.tick(1)?;
                    Ok(f.stack[f.base + slot].clone())
                }))
            }
            Expr::Stmt(block) => self.block(block),
            Expr::FnCall(call, _) => self.call(call),
            Expr::And(list, _) | Expr::Or(list, _) => {
                let and = matches!(expr, Expr::And(..));
                let list: Vec<Code> = list.iter().map(|e| self.expr(e)).collect::<Lowered<_>>()?;
                Ok(Box::new(move |f| {
                    f.tick(1)?;
                    for e in &list {
                        if e(f)?.as_bool()? != and {
                            return Ok(Val::Bool(!and));
                        }
                    }
                    Ok(Val::Bool(and))
                }))
            }
            Expr::Coalesce(list, _) => {
                let list: Vec<Code> = list.iter().map(|e| self.expr(e)).collect::<Lowered<_>>()?;
                Ok(Box::new(move |f| {
                    f.tick(1)?;
                    for e in &list {
                        let v = e(f)?;
                        if !v.is_unit() {
                            return Ok(v);
                        }
                    }
                    Ok(Val::Unit)
                }))
            }
            Expr::Dot(x, flags, _) => {
                if flags.contains(ASTFlags::NEGATED) {
                    return Err("uses `?.`".into());
                }
                self.dot(&x.lhs, &x.rhs)
            }
            Expr::Index(x, flags, _) => {
                if flags.contains(ASTFlags::NEGATED) {
                    return Err("uses `?[`".into());
                }
                if matches!(x.rhs, Expr::Dot(..) | Expr::Index(..))
                    && !flags.contains(ASTFlags::BREAK)
                {
                    return Err("chains indexing with more indexing or properties".into());
                }
                let object = self.expr(&x.lhs)?;
                let index = self.expr(&x.rhs)?;
                Ok(Box::new(move |f| {
                    f.tick(2)?;
                    let o = object(f)?;
                    let i = index(f)?;
                    Ok(o.index(&i)?)
                }))
            }
            Expr::ThisPtr(_) => Err("uses `this`".into()),
            Expr::Property(..) | Expr::MethodCall(..) => {
                Err("uses a property or method outside a chain".into())
            }
            _ => Err("uses an expression leadflow cannot compile".into()),
        }
    }

    /// `lhs.rhs`: properties of maps and views, and method calls.
    fn dot(&mut self, lhs: &Expr, rhs: &Expr) -> Lowered<Code> {
        // A mutating method on a variable changes the variable itself.
        if let (Expr::Variable(var, _, _), Expr::MethodCall(call, _)) = (lhs, rhs) {
            if natives::mutates(&call.name, call.args.len()) {
                if !var.2.is_empty() {
                    return Err(format!("calls `{}` on a module variable", call.name));
                }
                let slot = self.lookup(&var.1)?;
                let args = self.args(call)?;
                let method = natives::mutating(&call.name, call.args.len())
                    .ok_or_else(|| format!("calls the method `{}`", call.name))?;
                return Ok(Box::new(move |f| {
                    f.tick(3)?;
                    let mut values = Vec::with_capacity(args.len());
                    for a in &args {
                        values.push(a(f)?);
                    }
                    let i = f.base + slot;
                    let result = method(&mut f.stack[i], values)?;
                    let target = &f.stack[i];
                    f.check_size(target)?;
                    Ok(result)
                }));
            }
        }
        let object = self.expr(lhs)?;
        self.chain(object, rhs)
    }

    fn chain(&mut self, object: Code, rhs: &Expr) -> Lowered<Code> {
        match rhs {
            Expr::Property(p, _) => {
                let name = self.string(&p.2);
                Ok(Box::new(move |f| {
                    f.tick(1)?;
                    let o = object(f)?;
                    Ok(o.property(&f.env.strings[name])?)
                }))
            }
            Expr::MethodCall(call, _) => self.method(object, call),
            Expr::Dot(x, flags, _) => {
                if flags.contains(ASTFlags::NEGATED) {
                    return Err("uses `?.`".into());
                }
                let inner = self.chain(object, &x.lhs)?;
                self.chain(inner, &x.rhs)
            }
            Expr::Index(x, flags, _) => {
                if flags.contains(ASTFlags::NEGATED) {
                    return Err("uses `?[`".into());
                }
                if matches!(x.rhs, Expr::Dot(..) | Expr::Index(..))
                    && !flags.contains(ASTFlags::BREAK)
                {
                    return Err("chains indexing with more indexing or properties".into());
                }
                let inner = self.chain(object, &x.lhs)?;
                let index = self.expr(&x.rhs)?;
                Ok(Box::new(move |f| {
                    f.tick(2)?;
                    let o = inner(f)?;
                    let i = index(f)?;
                    Ok(o.index(&i)?)
                }))
            }
            _ => Err("uses an expression leadflow cannot compile in a chain".into()),
        }
    }

    fn method(&mut self, object: Code, call: &FnCallExpr) -> Lowered<Code> {
        let arity = call.args.len();
        if self
            .functions
            .contains_key(&(call.name.to_string(), arity + 1))
            || self.functions.contains_key(&(call.name.to_string(), arity))
        {
            return Err(format!(
                "calls the script function `{}` as a method",
                call.name
            ));
        }
        if natives::mutates(&call.name, arity) {
            return Err(format!(
                "calls `{}` on a value that is not a variable",
                call.name
            ));
        }
        let method = natives::pure(&call.name, arity + 1)
            .ok_or_else(|| format!("calls the method `{}`", call.name))?;
        let args = self.args(call)?;
        Ok(Box::new(move |f| {
            f.tick(3)?;
            let mut values = Vec::with_capacity(args.len() + 1);
            values.push(object(f)?);
            for a in &args {
                values.push(a(f)?);
            }
            let v = method(values)?;
            f.check_size(&v)?;
            Ok(v)
        }))
    }

    fn args(&mut self, call: &FnCallExpr) -> Lowered<Vec<Code>> {
        call.args.iter().map(|a| self.expr(a)).collect()
    }

    /// A function call: an operator, a script function, or a known native function.
    fn call(&mut self, call: &FnCallExpr) -> Lowered<Code> {
        if !call.namespace.is_empty() {
            return Err(format!("calls `{}` from a module", call.name));
        }
        if call.capture_parent_scope {
            return Err(format!(
                "calls `{}!` (capturing the caller's variables)",
                call.name
            ));
        }
        let name = call.name.as_str();
        let arity = call.args.len();
        if let Some(&index) = self.functions.get(&(name.to_string(), arity)) {
            self.callees.push(index);
            let args = self.args(call)?;
            return Ok(Box::new(move |f| {
                f.tick(3)?;
                let max_levels = f.env.limits.max_call_levels;
                if max_levels != 0 && f.depth + 2 >= max_levels {
                    return Err(Exit::Bail);
                }
                let function = &f.env.functions[index];
                let base = f.stack.len();
                for a in &args {
                    let v = a(f)?;
                    f.stack.push(v);
                }
                f.stack.resize(base + function.slots, Val::Unit);
                let caller = std::mem::replace(&mut f.base, base);
                f.depth += 1;
                let result = (function.body)(f);
                f.depth -= 1;
                f.base = caller;
                f.stack.truncate(base);
                let v = result?;
                f.check_size(&v)?;
                Ok(v)
            }));
        }
        if let Some(code) = self.operator(name, call)? {
            return Ok(code);
        }
        if natives::mutates(name, arity) {
            return Err(format!("calls `{name}` as a function"));
        }
        let Some(function) = natives::pure(name, arity) else {
            return Err(format!(
                "calls `{name}`, a function leadflow cannot compile"
            ));
        };
        let args = self.args(call)?;
        Ok(Box::new(move |f| {
            f.tick(3)?;
            let mut values = Vec::with_capacity(args.len());
            for a in &args {
                values.push(a(f)?);
            }
            let v = function(values)?;
            f.check_size(&v)?;
            Ok(v)
        }))
    }

    fn operator(&mut self, name: &str, call: &FnCallExpr) -> Lowered<Option<Code>> {
        let args = &call.args;
        if args.len() == 2 {
            if let Some(op) = cmp_op(name) {
                let (a, b) = (self.expr(&args[0])?, self.expr(&args[1])?);
                return Ok(Some(Box::new(move |f| {
                    f.tick(2)?;
                    let (x, y) = (a(f)?, b(f)?);
                    Ok(Val::Bool(compare(op, &x, &y)?))
                })));
            }
            if let Some(op) = arith_op(name) {
                let (a, b) = (self.expr(&args[0])?, self.expr(&args[1])?);
                return Ok(Some(Box::new(move |f| {
                    f.tick(2)?;
                    let x = a(f)?;
                    let y = b(f)?;
                    let v = arith(op, x, &y)?;
                    if let Val::Float(x) = v {
                        if !x.is_finite() {
                            return Err(Exit::Bail);
                        }
                    }
                    f.check_size(&v)?;
                    Ok(v)
                })));
            }
        }
        if args.len() == 1 {
            match name {
                "!" => {
                    let a = self.expr(&args[0])?;
                    return Ok(Some(Box::new(move |f| {
                        f.tick(2)?;
                        Ok(Val::Bool(!a(f)?.as_bool()?))
                    })));
                }
                "-" => {
                    let a = self.expr(&args[0])?;
                    return Ok(Some(Box::new(move |f| {
                        f.tick(2)?;
                        match a(f)? {
                            Val::Int(n) => n.checked_neg().map(Val::Int).ok_or(Exit::Bail),
                            Val::Float(x) => Ok(Val::Float(-x)),
                            _ => Err(Exit::Bail),
                        }
                    })));
                }
                _ => {}
            }
        }
        let is_operator =
            !name.is_empty() && name.chars().all(|c| !c.is_alphanumeric() && c != '_');
        if is_operator {
            return Err(format!("uses the operator `{name}`"));
        }
        Ok(None)
    }

    /// A constant the optimiser folded (e.g. a literal array).
    fn dynamic(&mut self, d: &Dynamic) -> Lowered<Literal> {
        let d = d.flatten_clone();
        if d.is_unit() {
            return Ok(Literal::Unit);
        }
        if let Ok(b) = d.as_bool() {
            return Ok(Literal::Bool(b));
        }
        if let Ok(n) = d.as_int() {
            return Ok(Literal::Int(n));
        }
        if let Ok(x) = d.as_float() {
            return Ok(Literal::Float(x));
        }
        if let Ok(c) = d.as_char() {
            return Ok(Literal::Char(c));
        }
        if d.is_string() {
            let s = d.into_immutable_string().map_err(|_| "a constant")?;
            return Ok(Literal::Str(self.string(&s)));
        }
        if d.is_array() {
            let items = d.into_array().map_err(|_| "a constant")?;
            let items = items
                .iter()
                .map(|i| self.dynamic(i))
                .collect::<Lowered<_>>()?;
            return Ok(Literal::Array(items));
        }
        if d.is_map() {
            let map = d.cast::<rhai::Map>();
            let entries = map
                .iter()
                .map(|(k, v)| Ok((self.string(k), self.dynamic(v)?)))
                .collect::<Lowered<_>>()?;
            return Ok(Literal::Map(entries));
        }
        Err(format!("uses a constant of type {}", d.type_name()))
    }
}

/// A constant value, with its strings in the program's string table.
#[derive(Debug, Clone)]
pub enum Literal {
    Unit,
    Bool(bool),
    Int(i64),
    Float(f64),
    Char(char),
    Str(usize),
    Array(Vec<Literal>),
    /// Keys are string-table indexes.
    Map(Vec<(usize, Literal)>),
}

impl Literal {
    fn materialise(self, env: &Env) -> Val<'_> {
        match self {
            Literal::Unit => Val::Unit,
            Literal::Bool(b) => Val::Bool(b),
            Literal::Int(n) => Val::Int(n),
            Literal::Float(x) => Val::Float(x),
            Literal::Char(c) => Val::Char(c),
            Literal::Str(i) => Val::Str(Cow::Borrowed(&env.strings[i])),
            Literal::Array(items) => {
                Val::Array(items.into_iter().map(|i| i.materialise(env)).collect())
            }
            Literal::Map(entries) => Val::Map(
                entries
                    .into_iter()
                    .map(|(k, v)| (Cow::Borrowed(&*env.strings[k]), v.materialise(env)))
                    .collect(),
            ),
        }
    }
}

fn constant(v: Val<'static>) -> Code {
    Box::new(move |f| {
        f.tick(1)?;
        Ok(v.clone())
    })
}

/// A `switch` case's literal as a value the cases are compared with.
fn literal_val(d: &Dynamic) -> Option<Val<'static>> {
    if d.is_unit() {
        return Some(Val::Unit);
    }
    if let Ok(b) = d.as_bool() {
        return Some(Val::Bool(b));
    }
    if let Ok(n) = d.as_int() {
        return Some(Val::Int(n));
    }
    if let Ok(c) = d.as_char() {
        return Some(Val::Char(c));
    }
    if d.is_string() {
        return Some(Val::Str(Cow::Owned(d.clone().into_string().ok()?)));
    }
    None
}

/// Whether a switch value matches a case literal: same type and value (Rhai hashes both).
fn same_literal(lit: &Val, v: &Val) -> bool {
    match (lit, v) {
        (Val::Unit, Val::Unit) => true,
        (Val::Bool(a), Val::Bool(b)) => a == b,
        (Val::Int(a), Val::Int(b)) => a == b,
        (Val::Char(a), Val::Char(b)) => a == b,
        (Val::Str(a), Val::Str(b)) => a == b,
        _ => false,
    }
}

fn cmp_op(name: &str) -> Option<Cmp> {
    Some(match name {
        "==" => Cmp::Eq,
        "!=" => Cmp::Ne,
        "<" => Cmp::Lt,
        ">" => Cmp::Gt,
        "<=" => Cmp::Le,
        ">=" => Cmp::Ge,
        _ => return None,
    })
}

fn arith_op(name: &str) -> Option<Arith> {
    Some(match name {
        "+" => Arith::Add,
        "-" => Arith::Sub,
        "*" => Arith::Mul,
        "/" => Arith::Div,
        "%" => Arith::Rem,
        _ => return None,
    })
}
