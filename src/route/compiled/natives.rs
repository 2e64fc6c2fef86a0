//! The native functions and methods compiled rules may call, with Rhai's semantics for the
//! argument types they accept; any other types bail (the interpreter decides).

use std::borrow::Cow;

use super::value::{Bail, Res, Val};

pub type Pure = fn(Vec<Val<'_>>) -> Res<Val<'_>>;
pub type Mutating = for<'x> fn(&mut Val<'x>, Vec<Val<'x>>) -> Res<Val<'static>>;

/// Methods that change the variable they are called on.
pub fn mutates(name: &str, args: usize) -> bool {
    matches!((name, args), ("push" | "append", 1))
}

/// `variable.name(args)` for the mutating methods.
pub fn mutating(name: &str, args: usize) -> Option<Mutating> {
    Some(match (name, args) {
        ("push", 1) => |target, mut args| match target {
            Val::Array(items) => {
                items.push(args.pop().ok_or(Bail)?);
                Ok(Val::Unit)
            }
            _ => Err(Bail),
        },
        ("append", 1) => |target, mut args| match (target, args.pop().ok_or(Bail)?) {
            (Val::Array(items), Val::Array(more)) => {
                items.extend(more);
                Ok(Val::Unit)
            }
            _ => Err(Bail),
        },
        _ => return None,
    })
}

/// `name(args)` / `args[0].name(args[1..])` for the functions that change nothing.
pub fn pure(name: &str, args: usize) -> Option<Pure> {
    Some(match (name, args) {
        ("len", 1) => |a| match first(a)? {
            Val::Str(s) => count(s.chars().count()),
            Val::Array(items) => count(items.len()),
            Val::Map(entries) => count(entries.len()),
            _ => Err(Bail),
        },
        ("is_empty", 1) => |a| match first(a)? {
            Val::Str(s) => Ok(Val::Bool(s.is_empty())),
            Val::Array(items) => Ok(Val::Bool(items.is_empty())),
            Val::Map(entries) => Ok(Val::Bool(entries.is_empty())),
            _ => Err(Bail),
        },
        ("to_upper", 1) => |a| match first(a)? {
            Val::Str(s) => Ok(Val::Str(Cow::Owned(s.to_uppercase()))),
            _ => Err(Bail),
        },
        ("to_lower", 1) => |a| match first(a)? {
            Val::Str(s) => Ok(Val::Str(Cow::Owned(s.to_lowercase()))),
            _ => Err(Bail),
        },
        ("starts_with", 2) => |a| match two(a)? {
            (Val::Str(s), Val::Str(p)) => Ok(Val::Bool(s.starts_with(p.as_ref()))),
            (Val::Str(s), Val::Char(c)) => Ok(Val::Bool(s.starts_with(c))),
            _ => Err(Bail),
        },
        ("ends_with", 2) => |a| match two(a)? {
            (Val::Str(s), Val::Str(p)) => Ok(Val::Bool(s.ends_with(p.as_ref()))),
            (Val::Str(s), Val::Char(c)) => Ok(Val::Bool(s.ends_with(c))),
            _ => Err(Bail),
        },
        ("contains", 2) => |a| match two(a)? {
            (Val::Str(s), Val::Str(p)) => Ok(Val::Bool(s.contains(p.as_ref()))),
            (Val::Str(s), Val::Char(c)) => Ok(Val::Bool(s.contains(c))),
            (Val::Map(entries), Val::Str(k)) => Ok(Val::Bool(entries.contains_key(&k))),
            _ => Err(Bail),
        },
        ("to_int", 1) => |a| match first(a)? {
            Val::Int(n) => Ok(Val::Int(n)),
            // Rhai refuses values outside the integer range; NaN is left to it as well.
            Val::Float(x) if x.is_finite() && x > -9.2e18 && x < 9.2e18 => {
                Ok(Val::Int(x.trunc() as i64))
            }
            _ => Err(Bail),
        },
        ("to_float", 1) => |a| match first(a)? {
            Val::Int(n) => Ok(Val::Float(n as f64)),
            Val::Float(x) => Ok(Val::Float(x)),
            _ => Err(Bail),
        },
        ("floor", 1) => |a| float(a, f64::floor),
        ("ceiling", 1) => |a| float(a, f64::ceil),
        ("round", 1) => |a| float(a, f64::round),
        ("abs", 1) => |a| match first(a)? {
            Val::Int(n) => n.checked_abs().map(Val::Int).ok_or(Bail),
            Val::Float(x) => Ok(Val::Float(x.abs())),
            _ => Err(Bail),
        },
        ("min", 2) => |a| match two(a)? {
            (Val::Int(x), Val::Int(y)) => Ok(Val::Int(x.min(y))),
            _ => Err(Bail),
        },
        ("max", 2) => |a| match two(a)? {
            (Val::Int(x), Val::Int(y)) => Ok(Val::Int(x.max(y))),
            _ => Err(Bail),
        },
        _ => return None,
    })
}

fn first(mut args: Vec<Val<'_>>) -> Res<Val<'_>> {
    args.pop().ok_or(Bail)
}

fn two(mut args: Vec<Val<'_>>) -> Res<(Val<'_>, Val<'_>)> {
    let b = args.pop().ok_or(Bail)?;
    let a = args.pop().ok_or(Bail)?;
    Ok((a, b))
}

fn count(n: usize) -> Res<Val<'static>> {
    i64::try_from(n).map(Val::Int).map_err(|_| Bail)
}

fn float(args: Vec<Val<'_>>, f: fn(f64) -> f64) -> Res<Val<'_>> {
    match first(args)? {
        Val::Float(x) => Ok(Val::Float(f(x))),
        _ => Err(Bail),
    }
}
