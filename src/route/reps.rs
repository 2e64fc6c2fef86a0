//! Reps in scripts (contracts §10.20): the reps table as a script sees it (`rep(id)`,
//! `team(name)`, `lead.owner_rep`), working hours, and the assignment state that
//! `open_leads`, `round_robin` and `least_loaded` read.
//!
//! A script call runs inside a [`Context`] installed on its thread ([`with_context`]): the
//! reps table of the moment ([`Roster`]), the assignment state of the lead's task
//! ([`TaskLoad`]), the task's place among all tasks ([`Share`]) and the lead's event time.
//! The functions never change anything: `round_robin(team)` names the rep the team's turn
//! is at and notes the pick; the pipeline moves the turn on only when the decision it
//! emits gives the lead to that rep. Without a context (no reps known) `rep` answers `()`,
//! `team` an empty array, and `round_robin`/`least_loaded` `()`.
//!
//! Assignment state belongs to a task (one input partition), like every other state: it is
//! committed with the record that changed it, changelogged, and moves with the task, so a
//! replay makes the same picks. A rep's `max_open_leads` is divided among the tasks (the
//! shares add up to it), so a rep never holds more open leads than that in total; each task
//! starts a team's turn at a different rep, so that the tasks' turns do not all begin with
//! the same one.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use rhai::{Array, Dynamic, Engine, Map};

use super::lead::Decision;
use crate::model::Rep;

/// A rep and what is parsed of it once: time zone and working hours.
#[derive(Debug, Clone)]
struct Entry {
    rep: Rep,
    hours: Hours,
}

/// When a rep works, in their own time zone.
#[derive(Debug, Clone)]
enum Hours {
    /// No `working_hours`: any time.
    Always,
    /// Minutes after local midnight, `[start, end)`; an `end` before `start` wraps past
    /// midnight.
    Window(jiff::tz::TimeZone, u16, u16),
    /// An unknown time zone or unreadable hours: never working (and logged once when the
    /// table is read).
    Invalid,
}

/// The reps table, indexed by id and by team.
#[derive(Debug, Default)]
pub struct Roster {
    by_id: HashMap<String, Entry>,
    /// Team → its reps' ids (active or not), sorted.
    teams: HashMap<String, Vec<String>>,
}

impl Roster {
    pub fn new(reps: impl IntoIterator<Item = Rep>) -> Roster {
        let mut roster = Roster::default();
        for rep in reps {
            let hours = match hours_of(&rep) {
                Ok(hours) => hours,
                Err(why) => {
                    tracing::warn!(rep_id = rep.rep_id, "{why}: the rep is never working");
                    Hours::Invalid
                }
            };
            roster
                .teams
                .entry(rep.team.clone())
                .or_default()
                .push(rep.rep_id.clone());
            roster
                .by_id
                .insert(rep.rep_id.clone(), Entry { rep, hours });
        }
        for ids in roster.teams.values_mut() {
            ids.sort();
            ids.dedup();
        }
        roster
    }

    pub fn rep(&self, id: &str) -> Option<&Rep> {
        self.by_id.get(id).map(|e| &e.rep)
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Whether rep `id` works at `at` (ms since the epoch) by their time zone and hours.
    pub fn is_working(&self, id: &str, at: i64) -> bool {
        self.by_id.get(id).is_some_and(|e| working(&e.hours, at))
    }

    /// The ids of team `name`'s reps, sorted.
    fn team(&self, name: &str) -> &[String] {
        self.teams.get(name).map_or(&[], Vec::as_slice)
    }
}

/// The time zone and hours of `rep`, or why they cannot be read.
fn hours_of(rep: &Rep) -> Result<Hours, String> {
    let zone = jiff::tz::TimeZone::get(&rep.timezone)
        .map_err(|_| format!("timezone {:?} is not an IANA time zone", rep.timezone))?;
    let Some(text) = rep.working_hours.as_deref() else {
        return Ok(Hours::Always);
    };
    let unreadable = || format!("working_hours {text:?} is not of the form \"09:00-17:00\"");
    let (start, end) = text.split_once('-').ok_or_else(unreadable)?;
    let minutes = |hhmm: &str| -> Option<u16> {
        let (h, m) = hhmm.trim().split_once(':')?;
        let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
        (h <= 24 && m < 60 && h * 60 + m <= 24 * 60).then_some(h * 60 + m)
    };
    match (minutes(start), minutes(end)) {
        (Some(start), Some(end)) => Ok(Hours::Window(zone, start, end)),
        _ => Err(unreadable()),
    }
}

fn working(hours: &Hours, at: i64) -> bool {
    let (zone, start, end) = match hours {
        Hours::Always => return true,
        Hours::Invalid => return false,
        Hours::Window(zone, start, end) => (zone, *start, *end),
    };
    let Ok(instant) = jiff::Timestamp::from_millisecond(at) else {
        return false;
    };
    let local = instant.to_zoned(zone.clone());
    let now = local.hour() as u16 * 60 + local.minute() as u16;
    if start <= end {
        start <= now && now < end
    } else {
        now >= start || now < end
    }
}

/// Clears `decision`'s owner if the reps table (when not empty) does not hold them as an
/// active rep, and says why in a reason; returns the metric label (`inactive`, `unknown`).
pub fn correct_owner(roster: &Roster, decision: &mut Decision) -> Option<&'static str> {
    let owner = decision.owner.as_deref()?;
    if roster.is_empty() {
        return None;
    }
    let (label, words) = match roster.rep(owner) {
        None => ("unknown", "is not in the reps table"),
        Some(rep) if !rep.active => ("inactive", "is not an active rep"),
        Some(_) => return None,
    };
    decision
        .reasons
        .push(format!("owner {owner} {words}: left to the queue"));
    decision.owner = None;
    Some(label)
}

/// One task's assignment state: open leads per rep, and where each team's turn is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskLoad {
    /// Rep → leads of this task given to them and not yet acknowledged or moved on.
    pub open: HashMap<String, i64>,
    /// Team → the rep its turn last went to (`round_robin` / `least_loaded`).
    pub last: HashMap<String, String>,
}

impl TaskLoad {
    pub fn open_leads(&self, rep: &str) -> i64 {
        self.open.get(rep).copied().unwrap_or(0)
    }
}

/// A task's place among the application's tasks (the inputs' partition count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    pub task: i32,
    pub tasks: i32,
}

impl Share {
    /// A lone task: everything is its own.
    pub const ALL: Share = Share { task: 0, tasks: 1 };

    /// This task's part of `rep`'s `max_open_leads`: the parts of all tasks add up to it,
    /// the remainder spread over the tasks by the rep's id.
    pub fn capacity(self, rep: &Rep) -> i64 {
        let (max, tasks) = (
            i64::from(rep.max_open_leads.max(0)),
            i64::from(self.tasks.max(1)),
        );
        let slot = (i64::from(self.task) + i64::from(spread(&rep.rep_id))) % tasks;
        max / tasks + i64::from(slot < max % tasks)
    }

    /// Where this task starts a team of `n` reps that has had no turn yet.
    fn first_turn(self, n: usize) -> usize {
        let tasks = self.tasks.max(1) as usize;
        (self.task.max(0) as usize % tasks) * n / tasks
    }
}

/// A stable number for `id` (the same on every instance and version).
fn spread(id: &str) -> u16 {
    (crate::kafka::partition::murmur2(id.as_bytes()) & 0x7fff) as u16
}

/// A rep a script's `round_robin` or `least_loaded` named for a team.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pick {
    pub team: String,
    pub rep: String,
}

/// What the script functions read during one call.
pub struct Context {
    pub roster: Arc<Roster>,
    pub load: Arc<TaskLoad>,
    pub share: Share,
    /// The lead's event time: who is working, for `round_robin` and `least_loaded`.
    pub at: i64,
    /// The rep holding this lead's open lead, if any: keeping it is not one more lead.
    pub holder: Option<String>,
    /// The picks made so far.
    pub picks: Vec<Pick>,
}

impl Context {
    pub fn new(roster: Arc<Roster>, load: Arc<TaskLoad>, share: Share, at: i64) -> Context {
        Context {
            roster,
            load,
            share,
            at,
            holder: None,
            picks: Vec::new(),
        }
    }

    /// Whether `rep` may be given the lead now: active, working, and under their share (not
    /// counting this lead, if they hold it already).
    fn eligible(&self, rep: &Rep) -> bool {
        let held = i64::from(self.holder.as_deref() == Some(rep.rep_id.as_str()));
        rep.active
            && self.roster.is_working(&rep.rep_id, self.at)
            && self.load.open_leads(&rep.rep_id) - held < self.share.capacity(rep)
    }

    /// Team `name`'s reps in turn order: from the one after its last pick, round.
    fn turn_order<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a Rep> + 'a {
        let ids = self.roster.team(name);
        let start = match self.load.last.get(name) {
            Some(last) => ids.partition_point(|id| id <= last),
            None => self.share.first_turn(ids.len()),
        };
        (0..ids.len())
            .map(move |i| &ids[(start + i) % ids.len()])
            .filter_map(move |id| self.roster.rep(id))
    }

    /// The first eligible rep in turn order.
    pub fn round_robin(&self, team: &str) -> Option<&Rep> {
        self.turn_order(team).find(|rep| self.eligible(rep))
    }

    /// The eligible rep with the fewest open leads; among equals, the first in turn order.
    pub fn least_loaded(&self, team: &str) -> Option<&Rep> {
        self.turn_order(team)
            .filter(|rep| self.eligible(rep))
            .min_by_key(|rep| self.load.open_leads(&rep.rep_id))
    }

    /// `rep` as the script's map.
    fn rep_map(&self, rep: &Rep) -> Dynamic {
        rep_map(
            rep,
            self.load.open_leads(&rep.rep_id),
            self.share.capacity(rep),
        )
    }
}

/// A rep as a script sees it (contracts §10.20): the table's fields, plus `open_leads` and
/// `capacity` (this task's share of `max_open_leads`).
pub fn rep_map(rep: &Rep, open_leads: i64, capacity: i64) -> Dynamic {
    let text = |s: &str| Dynamic::from(rhai::ImmutableString::from(s));
    let regions: Array = rep.regions.iter().map(|r| text(r)).collect();
    let entries = [
        ("active", Dynamic::from_bool(rep.active)),
        ("capacity", Dynamic::from_int(capacity)),
        (
            "max_open_leads",
            Dynamic::from_int(rep.max_open_leads.into()),
        ),
        ("name", text(&rep.name)),
        ("open_leads", Dynamic::from_int(open_leads)),
        ("regions", Dynamic::from_array(regions)),
        ("rep_id", text(&rep.rep_id)),
        ("team", text(&rep.team)),
        ("timezone", text(&rep.timezone)),
        (
            "working_hours",
            rep.working_hours.as_deref().map_or(Dynamic::UNIT, text),
        ),
    ];
    Dynamic::from_map(
        entries
            .into_iter()
            .map(|(k, v)| (k.into(), v))
            .collect::<Map>(),
    )
}

thread_local! {
    /// The context of the script call running on this thread (a thread-local, like the
    /// engine's deadline, because one compiled script serves every stream thread).
    static CONTEXT: RefCell<Option<Context>> = const { RefCell::new(None) };
}

/// Runs `f` with `context` installed for the script functions; gives it back (with the
/// picks made) after. Nested calls see the innermost context.
pub fn with_context<R>(context: Context, f: impl FnOnce() -> R) -> (R, Context) {
    struct Restore(Option<Context>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            CONTEXT.with_borrow_mut(|c| *c = previous);
        }
    }
    let restore = Restore(CONTEXT.with_borrow_mut(|c| c.replace(context)));
    let result = f();
    let context = CONTEXT
        .with_borrow_mut(|c| c.take())
        .expect("the context installed for this call");
    drop(restore);
    (result, context)
}

/// [`with_context`] with the context in `context`, if any (put back after); `f` alone
/// without.
pub fn within<R>(context: &mut Option<Context>, f: impl FnOnce() -> R) -> R {
    match context.take() {
        None => f(),
        Some(installed) => {
            let (result, back) = with_context(installed, f);
            *context = Some(back);
            result
        }
    }
}

/// Runs `f` on this thread's context, if one is installed.
fn with<R>(f: impl FnOnce(&mut Context) -> R) -> Option<R> {
    CONTEXT.with_borrow_mut(|c| c.as_mut().map(f))
}

/// The rep id a script passed: an id string, or a rep map (its `rep_id`).
fn rep_id(value: &Dynamic) -> Option<String> {
    if let Some(id) = value.read_lock::<rhai::ImmutableString>() {
        return Some(id.to_string());
    }
    let map = value.read_lock::<Map>()?;
    map.get("rep_id")?
        .read_lock::<rhai::ImmutableString>()
        .map(|id| id.to_string())
}

/// The rep of `lead.owner_rep`: `owner_rep_id`'s rep map, or `()`.
pub fn owner_rep(owner_rep_id: Option<&str>) -> Dynamic {
    owner_rep_id
        .and_then(|id| with(|c| c.roster.rep(id).map(|rep| c.rep_map(rep))).flatten())
        .unwrap_or(Dynamic::UNIT)
}

/// Registers `rep`, `team`, `is_working`, `open_leads`, `round_robin` and `least_loaded`.
pub fn register(engine: &mut Engine) {
    engine.register_fn("rep", |id: Dynamic| -> Dynamic {
        rep_id(&id)
            .and_then(|id| with(|c| c.roster.rep(&id).map(|rep| c.rep_map(rep))).flatten())
            .unwrap_or(Dynamic::UNIT)
    });
    engine.register_fn("team", |name: &str| -> Array {
        with(|c| {
            c.roster
                .team(name)
                .iter()
                .filter_map(|id| c.roster.rep(id))
                .filter(|rep| rep.active)
                .map(|rep| c.rep_map(rep))
                .collect()
        })
        .unwrap_or_default()
    });
    engine.register_fn("is_working", |rep: Dynamic, at: i64| -> bool {
        rep_id(&rep)
            .and_then(|id| with(|c| c.roster.is_working(&id, at)))
            .unwrap_or(false)
    });
    engine.register_fn("open_leads", |rep: Dynamic| -> i64 {
        rep_id(&rep)
            .and_then(|id| with(|c| c.load.open_leads(&id)))
            .unwrap_or(0)
    });
    engine.register_fn("round_robin", |team: &str| -> Dynamic {
        pick(team, |c, team| {
            c.round_robin(team).map(|r| r.rep_id.clone())
        })
    });
    engine.register_fn("least_loaded", |team: &str| -> Dynamic {
        pick(team, |c, team| {
            c.least_loaded(team).map(|r| r.rep_id.clone())
        })
    });
}

/// A pick for `team` by `choose`, noted in the context; its rep id, or `()` for none.
fn pick(team: &str, choose: impl FnOnce(&Context, &str) -> Option<String>) -> Dynamic {
    with(|c| {
        let rep = choose(c, team)?;
        c.picks.push(Pick {
            team: team.to_string(),
            rep: rep.clone(),
        });
        Some(Dynamic::from(rhai::ImmutableString::from(rep)))
    })
    .flatten()
    .unwrap_or(Dynamic::UNIT)
}

#[cfg(test)]
#[path = "reps_tests.rs"]
mod tests;
