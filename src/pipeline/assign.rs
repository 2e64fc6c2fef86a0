//! Reps in scripts, the pipeline's side (contracts §10.20): the reps table as a [`Roster`]
//! (read again when a reference table changes), each task's [`TaskLoad`] (read from the task
//! store on first use), and the bookkeeping after a decision and after an acknowledgement.
//!
//! A task's assignment state lives in its task store (`Cf::Task`, after the partition), so
//! it is committed with the record that changed it, changelogged, and restored with the
//! task:
//! - `LOAD` + rep id → the rep's open leads of this task (8 bytes, big-endian);
//! - `TURN` + team → the rep the team's turn last went to;
//! - `OPEN` + contact id → the contact's open lead: rep id, `\0`, decision id.
//!
//! A lead is open from the decision that gives it to a rep until an acknowledgement of that
//! decision (any action), or until a later decision of the contact gives it to someone else
//! (or to nobody).

use std::collections::HashMap;
use std::sync::Arc;

use metrics::counter;

use crate::metrics as m;
use crate::route::reps::{Context, Roster, Share, TaskLoad};
use crate::route::Decision;
use crate::state::{partition_key, Cf, StateError, Write};

use super::{corrupt_text, Pipeline, PipelineError};

const LOAD: &[u8] = b"\x01l";
const TURN: &[u8] = b"\x01t";
const OPEN: &[u8] = b"\x01o";

/// The reps table and the tasks' assignment state, as far as they have been read.
#[derive(Default)]
pub(super) struct RepState {
    /// The roster and the store's reference version it was read at.
    roster: Option<(u64, Arc<Roster>)>,
    loads: HashMap<i32, Arc<TaskLoad>>,
    /// The application's task count (the inputs' partitions); 1 until the runtime says.
    tasks: i32,
}

impl RepState {
    pub(super) fn forget(&mut self, partition: i32) {
        self.loads.remove(&partition);
    }
}

fn key(partition: i32, kind: &[u8], name: &str) -> Vec<u8> {
    let mut k = partition_key(partition, kind);
    k.extend_from_slice(name.as_bytes());
    k
}

/// The key range `partition` + `kind` + anything: (first key, the key after the last).
fn range(partition: i32, kind: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let from = partition_key(partition, kind);
    let mut until = from.clone();
    *until.last_mut().expect("kinds are not empty") += 1;
    (from, until)
}

impl Pipeline {
    /// Tells the pipeline how many tasks the application has (the inputs' partition count):
    /// each task holds its share of every rep's `max_open_leads`.
    pub fn set_tasks(&mut self, tasks: i32) {
        self.rep_state.tasks = tasks.max(1);
        self.rep_state.loads.clear();
    }

    /// The reps table, read again when a reference table changed since.
    fn roster(&mut self) -> Result<Arc<Roster>, StateError> {
        let version = self.store.reference_version();
        match &self.rep_state.roster {
            Some((read_at, roster)) if *read_at == version => Ok(roster.clone()),
            _ => {
                let roster = Arc::new(Roster::new(crate::state::reference::reps(&self.store)?));
                self.rep_state.roster = Some((version, roster.clone()));
                Ok(roster)
            }
        }
    }

    /// Task `partition`'s assignment state (read from the store on first use: nothing of
    /// the task is staged then).
    fn task_load(&mut self, partition: i32) -> Result<Arc<TaskLoad>, PipelineError> {
        if let Some(load) = self.rep_state.loads.get(&partition) {
            return Ok(load.clone());
        }
        let mut load = TaskLoad::default();
        let prefix = partition_key(partition, LOAD).len();
        let (from, until) = range(partition, LOAD);
        for (k, v) in self.store.entries_in(Cf::Task, &from, &until, usize::MAX)? {
            let count = <[u8; 8]>::try_from(v.as_slice())
                .map(i64::from_be_bytes)
                .map_err(|_| corrupt_text(Cf::Task, "an open-leads count is not 8 bytes"))?;
            load.open
                .insert(String::from_utf8_lossy(&k[prefix..]).into(), count);
        }
        let (from, until) = range(partition, TURN);
        for (k, v) in self.store.entries_in(Cf::Task, &from, &until, usize::MAX)? {
            load.last.insert(
                String::from_utf8_lossy(&k[prefix..]).into(),
                String::from_utf8_lossy(&v).into(),
            );
        }
        let load = Arc::new(load);
        self.rep_state.loads.insert(partition, load.clone());
        Ok(load)
    }

    /// Task `partition`'s assignment state taken out of the cache to be changed (in place,
    /// when no script context holds it any more); put back with the change.
    fn own_task_load(&mut self, partition: i32) -> Result<Arc<TaskLoad>, PipelineError> {
        self.task_load(partition)?;
        Ok(self
            .rep_state
            .loads
            .remove(&partition)
            .expect("read just before"))
    }

    /// What the script functions read for a lead of `contact_id` in task `partition` at
    /// event time `at`; `None` while the reps table is empty.
    pub(super) fn rep_context(
        &mut self,
        partition: i32,
        contact_id: &str,
        at: i64,
    ) -> Result<Option<Context>, PipelineError> {
        let roster = self.roster()?;
        if roster.is_empty() {
            return Ok(None);
        }
        let share = Share {
            task: partition,
            tasks: self.rep_state.tasks.max(1),
        };
        let open_key = key(partition, OPEN, contact_id);
        let holder = self
            .staged
            .get(&self.store, Cf::Task, &open_key)?
            .map(|open| open_rep(&open));
        let mut context = Context::new(roster, self.task_load(partition)?, share, at);
        context.holder = holder;
        Ok(Some(context))
    }

    /// Books decision `decision_id` of `contact_id`, which gives the lead to `owner`: the
    /// contact's open lead (held by `context.holder`) moves to them (if they are a rep), and
    /// each team whose pick (`context.picks`) was that rep has its turn moved on. `context`
    /// is the one the decision was made in; without one (no reps) nothing is booked.
    pub(super) fn book_assignment(
        &mut self,
        partition: i32,
        contact_id: &str,
        decision_id: &str,
        owner: Option<&str>,
        context: Option<Context>,
        writes: &mut Vec<Write>,
    ) -> Result<(), PipelineError> {
        let Some(Context {
            roster,
            holder,
            load: seen,
            picks,
            ..
        }) = context
        else {
            return Ok(());
        };
        // The last other holder of the task's state: it is changed in place below.
        drop(seen);
        let mut load = self.own_task_load(partition)?;
        let open_key = key(partition, OPEN, contact_id);
        let owner = owner.filter(|o| roster.rep(o).is_some());
        let changes = Arc::make_mut(&mut load);
        if let Some(rep) = &holder {
            add_open(changes, partition, rep, -1, writes);
        }
        match owner {
            Some(rep) => {
                add_open(changes, partition, rep, 1, writes);
                writes.push(Write {
                    cf: Cf::Task,
                    key: open_key,
                    value: Some(open_value(rep, decision_id)),
                });
                for pick in picks.iter().filter(|p| p.rep == rep) {
                    changes.last.insert(pick.team.clone(), rep.to_string());
                    writes.push(Write {
                        cf: Cf::Task,
                        key: key(partition, TURN, &pick.team),
                        value: Some(rep.as_bytes().to_vec()),
                    });
                }
            }
            None if holder.is_some() => writes.push(Write {
                cf: Cf::Task,
                key: open_key,
                value: None,
            }),
            None => {}
        }
        self.rep_state.loads.insert(partition, load);
        Ok(())
    }

    /// An acknowledgement of `decision_id`: if it is the contact's open lead, the lead is
    /// no longer open, or (`reassigned_to`) it moves to that rep (if they are one).
    pub(super) fn release_assignment(
        &mut self,
        partition: i32,
        contact_id: &str,
        decision_id: &str,
        reassigned_to: Option<&str>,
        writes: &mut Vec<Write>,
    ) -> Result<(), PipelineError> {
        let open_key = key(partition, OPEN, contact_id);
        let Some(open) = self.staged.get(&self.store, Cf::Task, &open_key)? else {
            return Ok(());
        };
        let (rep, of) = split_open(&open);
        if of != decision_id.as_bytes() {
            return Ok(());
        }
        let rep = String::from_utf8_lossy(rep).into_owned();
        let roster = self.roster()?;
        let to = reassigned_to.filter(|to| roster.rep(to).is_some());
        let mut load = self.own_task_load(partition)?;
        let changes = Arc::make_mut(&mut load);
        add_open(changes, partition, &rep, -1, writes);
        match to {
            Some(to) => {
                add_open(changes, partition, to, 1, writes);
                writes.push(Write {
                    cf: Cf::Task,
                    key: open_key,
                    value: Some(open_value(to, decision_id)),
                });
            }
            None => writes.push(Write {
                cf: Cf::Task,
                key: open_key,
                value: None,
            }),
        }
        self.rep_state.loads.insert(partition, load);
        Ok(())
    }
}

/// `rep`'s open leads plus `delta` (never below 0), in `load` and as a write.
fn add_open(load: &mut TaskLoad, partition: i32, rep: &str, delta: i64, writes: &mut Vec<Write>) {
    let count = (load.open_leads(rep) + delta).max(0);
    let key = key(partition, LOAD, rep);
    if count == 0 {
        load.open.remove(rep);
        writes.push(Write {
            cf: Cf::Task,
            key,
            value: None,
        });
    } else {
        load.open.insert(rep.to_string(), count);
        writes.push(Write {
            cf: Cf::Task,
            key,
            value: Some(count.to_be_bytes().to_vec()),
        });
    }
}

/// Clears `decision`'s owner if the reps table of `context` (the one the decision was made
/// in; none while the table is empty) does not hold them as an active rep, with a reason, and
/// counts it.
pub(super) fn correct_owner(context: Option<&Context>, decision: &mut Decision) {
    let Some(context) = context else {
        return;
    };
    if let Some(reason) = crate::route::reps::correct_owner(&context.roster, decision) {
        counter!(m::OWNER_CORRECTIONS, "reason" => reason).increment(1);
    }
}

fn open_value(rep: &str, decision_id: &str) -> Vec<u8> {
    let mut value = rep.as_bytes().to_vec();
    value.push(0);
    value.extend_from_slice(decision_id.as_bytes());
    value
}

fn split_open(value: &[u8]) -> (&[u8], &[u8]) {
    match value.iter().position(|b| *b == 0) {
        Some(i) => (&value[..i], &value[i + 1..]),
        None => (value, &[]),
    }
}

fn open_rep(value: &[u8]) -> String {
    String::from_utf8_lossy(split_open(value).0).into_owned()
}
