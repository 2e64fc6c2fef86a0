//! The input merge: records of a task's co-partitioned inputs are processed in timestamp
//! order, as Kafka Streams' `PartitionGroup` does, not in the order the consumer fetched them.
//!
//! A *task* is one partition number across the inputs (contacts and engagements are keyed by
//! contact_id with the same partition count, so a contact's records of both topics meet in
//! one task). Each task keeps one FIFO per input. While every input of a task has a buffered
//! record, the next record is the head with the lowest timestamp (ties: the lower input
//! index, so a contact event goes before an engagement stamped the same millisecond; a
//! record without a timestamp goes first). Order *within* an input partition never changes,
//! even when its timestamps go backwards: only heads are compared.
//!
//! When an input of a task is empty, a record of another input may be older than what that
//! input will deliver next, so the task is *blocked*: it waits until the empty input gets a
//! record, or until `max_task_idle` has passed since it blocked on that input (wall clock).
//! Then it processes its other inputs by timestamp ("enforced processing") until the empty
//! input gets a record, which resets that input's timer; it is re-armed the next time the task
//! blocks on it. `max_task_idle = 0` never waits.
//!
//! An empty input the caller knows to be *behind* (not fetched yet, or the broker holds
//! records of it not received yet: Kafka Streams' "lag > 0", KIP-695) is waited for longer,
//! up to `max_wait_behind` since the task blocked on it ([`Merge::wait_longer_when_behind`]):
//! its records exist, they are just not here yet, and processing the other input meanwhile
//! would decide its records out of order. Which inputs are behind is asked at each look at a blocked task
//! ([`Merge::pop_ready_with`]), so the merge itself knows nothing of Kafka.
//!
//! A record handed out while an input of its task is empty is *enforced* (Kafka Streams'
//! `enforced-processing`): [`Merge::take_enforced`] tells the caller, once per wait that ran
//! out, which input was given up on and after how long.
//!
//! Pure: no Kafka types, and the wall clock is passed in, so tests control time.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::time::{Duration, Instant};

/// Buffered records of every task, handed out in merge order.
#[derive(Debug)]
pub struct Merge<T> {
    inputs: usize,
    /// Inputs an empty queue of which never holds its task back (sparse inputs whose order
    /// against the others does not matter, like acknowledgements).
    not_waited_for: Vec<bool>,
    max_task_idle: Duration,
    max_wait_behind: Duration,
    tasks: BTreeMap<i32, Task<T>>,
    len: usize,
    /// The waits that ran out since the last [`Merge::take_enforced`].
    enforced: Vec<Enforced>,
    /// The task served last: the next search starts after it (round robin), so a task with a
    /// steady supply of ready records cannot starve the others.
    last: Option<i32>,
}

#[derive(Debug)]
struct Task<T> {
    queues: Vec<VecDeque<Buffered<T>>>,
    /// Per input: whether the task is blocked on it (the input empty while another holds
    /// records). Cleared when the input gets a record.
    blocked: Vec<Option<Blocked>>,
}

#[derive(Debug, Clone, Copy)]
struct Blocked {
    since: Instant,
    /// Known to be behind when last looked at.
    behind: bool,
    /// Whether a record of the task was handed out despite this wait (reported once).
    gave_up: bool,
}

/// A wait for an empty input that ran out: the task's other inputs are processed without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enforced {
    pub partition: i32,
    pub input: usize,
    /// How long the task had waited.
    pub waited: Duration,
    /// Whether the input was known to be behind when the wait ran out.
    pub behind: bool,
}

/// How long a task waits for an empty input.
#[derive(Debug, Clone, Copy)]
struct Limits<'a> {
    max_task_idle: Duration,
    max_wait_behind: Duration,
    not_waited_for: &'a [bool],
}

impl Limits<'_> {
    fn until(&self, blocked: Blocked) -> Instant {
        blocked.since
            + if blocked.behind {
                self.max_wait_behind
            } else {
                self.max_task_idle
            }
    }
}

#[derive(Debug)]
struct Buffered<T> {
    timestamp: Option<i64>,
    item: T,
}

impl<T> Task<T> {
    fn new(inputs: usize) -> Task<T> {
        Task {
            queues: (0..inputs).map(|_| VecDeque::new()).collect(),
            blocked: vec![None; inputs],
        }
    }

    fn is_empty(&self) -> bool {
        self.queues.iter().all(VecDeque::is_empty)
    }

    /// The input whose head goes next among the non-empty ones: lowest timestamp, then lowest
    /// input index (`None` sorts before every timestamp).
    fn next_input(&self) -> Option<usize> {
        self.queues
            .iter()
            .enumerate()
            .filter_map(|(input, q)| q.front().map(|b| (b.timestamp, input)))
            .min()
            .map(|(_, input)| input)
    }

    /// Its next record, if the task may process at `now`.
    /// Its next record, if task `partition` may process at `now`; the waits that ran out for
    /// it, the first time each does, go to `enforced`.
    fn pop_ready(
        &mut self,
        partition: i32,
        now: Instant,
        limits: Limits,
        behind: &mut dyn FnMut(usize) -> bool,
        enforced: &mut Vec<Enforced>,
    ) -> Option<T> {
        if self.release_at(now, limits, behind)? > now {
            // Blocked: only an input that is never waited for may go.
            let input = (0..self.queues.len())
                .find(|i| limits.not_waited_for[*i] && !self.queues[*i].is_empty())?;
            let buffered = self.queues[input].pop_front()?;
            self.release_at(now, limits, behind);
            return Some(buffered.item);
        }
        let input = self.next_input()?;
        let buffered = self.queues[input].pop_front()?;
        for (empty, blocked) in self.blocked.iter_mut().enumerate() {
            if let Some(blocked) = blocked.as_mut().filter(|b| !b.gave_up) {
                blocked.gave_up = true;
                enforced.push(Enforced {
                    partition,
                    input: empty,
                    waited: now.saturating_duration_since(blocked.since),
                    behind: blocked.behind,
                });
            }
        }
        // Blocked from now on if that emptied the input while another still holds records.
        self.release_at(now, limits, behind);
        Some(buffered.item)
    }

    /// When the timers of a task that holds records but waits on an empty input release it
    /// (as of the last look at it).
    fn deadline(&self, limits: Limits) -> Option<Instant> {
        if self.is_empty() {
            return None;
        }
        self.queues
            .iter()
            .zip(&self.blocked)
            .enumerate()
            .filter(|(input, (queue, _))| queue.is_empty() && !limits.not_waited_for[*input])
            .map(|(_, (_, blocked))| blocked.map(|b| limits.until(b)))
            .max()
            .flatten()
    }

    /// Arms the timer of every empty input if the task holds records (noting whether the
    /// input is behind), and returns when the task may process: `now` or earlier if it may
    /// now, `None` if it holds nothing.
    fn release_at(
        &mut self,
        now: Instant,
        limits: Limits,
        behind: &mut dyn FnMut(usize) -> bool,
    ) -> Option<Instant> {
        if self.is_empty() {
            return None;
        }
        let mut at = now;
        for (input, (queue, blocked)) in self.queues.iter().zip(&mut self.blocked).enumerate() {
            if queue.is_empty() && !limits.not_waited_for[input] {
                let blocked = blocked.get_or_insert(Blocked {
                    since: now,
                    behind: false,
                    gave_up: false,
                });
                blocked.behind = behind(input);
                at = at.max(limits.until(*blocked));
            }
        }
        Some(at)
    }
}

impl<T> Merge<T> {
    /// A merge of `inputs` inputs (indexed `0..inputs`; a lower index wins timestamp ties)
    /// that waits `max_task_idle` for an empty input, behind or not.
    pub fn new(inputs: usize, max_task_idle: Duration) -> Merge<T> {
        assert!(inputs > 0, "a merge needs at least one input");
        Merge {
            inputs,
            not_waited_for: vec![false; inputs],
            max_task_idle,
            max_wait_behind: max_task_idle,
            tasks: BTreeMap::new(),
            len: 0,
            enforced: Vec::new(),
            last: None,
        }
    }

    /// Waits up to `max_wait` (at least `max_task_idle`) for an empty input that is behind.
    pub fn wait_longer_when_behind(mut self, max_wait: Duration) -> Merge<T> {
        self.max_wait_behind = max_wait.max(self.max_task_idle);
        self
    }

    /// Never waits for `input` when it is empty: its records still go in timestamp order with
    /// the others' while it has some, but a task never blocks on it.
    pub fn never_wait_for(mut self, input: usize) -> Merge<T> {
        self.not_waited_for[input] = true;
        self
    }

    /// Starts every running wait afresh at `now`: the caller could not receive records
    /// meanwhile (it paused its inputs), so that time is not the inputs' delay.
    pub fn restart_waits(&mut self, now: Instant) {
        for task in self.tasks.values_mut() {
            for blocked in task.blocked.iter_mut().flatten() {
                blocked.since = now;
            }
        }
    }

    /// The waits that ran out since the last call: each is reported once, with the record
    /// handed out despite it.
    pub fn take_enforced(&mut self) -> Vec<Enforced> {
        std::mem::take(&mut self.enforced)
    }

    fn limits(&self) -> Limits<'_> {
        Limits {
            max_task_idle: self.max_task_idle,
            max_wait_behind: self.max_wait_behind,
            not_waited_for: &self.not_waited_for,
        }
    }

    /// Buffers `item`, read from `input`'s partition `partition` with record `timestamp`.
    pub fn push(&mut self, partition: i32, input: usize, timestamp: Option<i64>, item: T) {
        assert!(input < self.inputs, "input {input} of {}", self.inputs);
        let inputs = self.inputs;
        let task = self
            .tasks
            .entry(partition)
            .or_insert_with(|| Task::new(inputs));
        task.queues[input].push_back(Buffered { timestamp, item });
        task.blocked[input] = None;
        self.len += 1;
    }

    /// The next record of some task that may be processed at `now`, if any, no input being
    /// known to be behind. Returning `None` means every task was looked at, so
    /// [`Merge::next_deadline`] is then complete.
    pub fn pop_ready(&mut self, now: Instant) -> Option<T> {
        self.pop_ready_with(now, |_, _| false)
    }

    /// [`Merge::pop_ready`], asking `behind(partition, input)` about each empty input of a
    /// task that holds records.
    pub fn pop_ready_with(
        &mut self,
        now: Instant,
        mut behind: impl FnMut(i32, usize) -> bool,
    ) -> Option<T> {
        let limits = Limits {
            max_task_idle: self.max_task_idle,
            max_wait_behind: self.max_wait_behind,
            not_waited_for: &self.not_waited_for,
        };
        let after = match self.last {
            Some(last) => (Bound::Excluded(last), Bound::Unbounded),
            None => (Bound::Unbounded, Bound::Unbounded),
        };
        let enforced = &mut self.enforced;
        let mut try_task = |partition: &i32, task: &mut Task<T>| {
            let mut behind = |input| behind(*partition, input);
            task.pop_ready(*partition, now, limits, &mut behind, enforced)
                .map(|item| (*partition, item))
        };
        let mut found = self
            .tasks
            .range_mut(after)
            .find_map(|(p, task)| try_task(p, task));
        if let (None, Some(last)) = (&found, self.last) {
            found = self
                .tasks
                .range_mut(..=last)
                .find_map(|(p, task)| try_task(p, task));
        }
        let (partition, item) = found?;
        self.len -= 1;
        self.last = Some(partition);
        Some(item)
    }

    /// The earliest instant a blocked task is released by its timer (`None`: no task waits).
    /// Complete after [`Merge::pop_ready`] returned `None` (which arms every timer); an input
    /// that stops being behind may release its task earlier, at the next look.
    pub fn next_deadline(&self) -> Option<Instant> {
        let limits = self.limits();
        self.tasks
            .values()
            .filter_map(|task| task.deadline(limits))
            .min()
    }

    /// Whether some task waits on an input known to be behind (as of the last look): that
    /// may change without a record arriving, so the caller should look again soon.
    pub fn waiting_behind(&self) -> bool {
        self.tasks.values().any(|task| {
            !task.is_empty()
                && task
                    .queues
                    .iter()
                    .zip(&task.blocked)
                    .any(|(queue, blocked)| queue.is_empty() && blocked.is_some_and(|b| b.behind))
        })
    }

    /// Drops the buffered records of `input`'s partition `partition` (it was revoked) and
    /// returns how many there were. A task left without records is forgotten, timers and all.
    pub fn remove(&mut self, partition: i32, input: usize) -> usize {
        let Some(task) = self.tasks.get_mut(&partition) else {
            return 0;
        };
        let dropped = task.queues[input].len();
        task.queues[input].clear();
        task.blocked[input] = None;
        if task.is_empty() {
            self.tasks.remove(&partition);
        }
        self.len -= dropped;
        dropped
    }

    /// Every (partition, input) that holds buffered records.
    pub fn buffered(&self) -> Vec<(i32, usize)> {
        self.tasks
            .iter()
            .flat_map(|(p, task)| {
                task.queues
                    .iter()
                    .enumerate()
                    .filter(|(_, q)| !q.is_empty())
                    .map(move |(input, _)| (*p, input))
            })
            .collect()
    }

    /// Every empty (partition, input) of a task that holds records: what such a task may be
    /// waiting for.
    pub fn starved(&self) -> Vec<(i32, usize)> {
        self.tasks
            .iter()
            .filter(|(_, task)| !task.is_empty())
            .flat_map(|(p, task)| {
                task.queues
                    .iter()
                    .enumerate()
                    .filter(|(input, q)| q.is_empty() && !self.not_waited_for[*input])
                    .map(move |(input, _)| (*p, input))
            })
            .collect()
    }

    /// Records buffered over all tasks.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_input_never_waited_for_neither_waits_nor_holds_its_task_back() {
        let t0 = Instant::now();
        let mut m = Merge::new(3, Duration::from_secs(10)).never_wait_for(2);
        // Only the third input holds a record: it goes at once, although the others are empty.
        m.push(0, 2, Some(1), "a1");
        assert_eq!(m.pop_ready(t0), Some("a1"));
        m.push(0, 0, Some(10), "c10");
        m.push(0, 1, Some(20), "e20");
        m.push(0, 2, Some(5), "a5");
        // While every input holds records: timestamp order.
        assert_eq!(m.pop_ready(t0), Some("a5"));
        assert_eq!(m.pop_ready(t0), Some("c10"));
        // Contacts are empty: the task waits for them, not for the empty third input...
        assert_eq!(m.pop_ready(t0), None);
        assert_eq!(m.starved(), vec![(0, 0)]);
        assert_eq!(m.next_deadline(), Some(t0 + Duration::from_secs(10)));
        // ...and a record of the third input goes while the others wait.
        m.push(0, 2, Some(25), "a25");
        assert_eq!(m.pop_ready(t0), Some("a25"));
        assert_eq!(m.pop_ready(t0), None);
        assert_eq!(m.pop_ready(t0 + Duration::from_secs(10)), Some("e20"));
        assert!(m.is_empty());
    }

    const IDLE: Duration = Duration::from_millis(100);
    const CONTACTS: usize = 0;
    const ENGAGEMENTS: usize = 1;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Everything ready at `now`, in the order it comes out.
    fn drain<T>(merge: &mut Merge<T>, now: Instant) -> Vec<T> {
        std::iter::from_fn(|| merge.pop_ready(now)).collect()
    }

    #[test]
    fn merges_a_task_by_timestamp_contacts_first_on_ties() {
        let t0 = Instant::now();
        let mut m = Merge::new(2, IDLE);
        m.push(0, ENGAGEMENTS, Some(10), "e10");
        m.push(0, ENGAGEMENTS, Some(20), "e20");
        m.push(0, ENGAGEMENTS, Some(30), "e30");
        m.push(0, CONTACTS, Some(5), "c5");
        m.push(0, CONTACTS, Some(20), "c20");
        m.push(0, CONTACTS, Some(25), "c25");
        m.push(0, CONTACTS, Some(40), "c40");
        assert_eq!(m.len(), 7);
        // e30 goes before c40 although contacts then wait: both inputs still hold records.
        assert_eq!(drain(&mut m, t0), ["c5", "e10", "c20", "e20", "c25", "e30"]);
        // Only c40 is left and engagements are empty: it waits.
        assert_eq!(m.len(), 1);
        assert_eq!(m.next_deadline(), Some(t0 + IDLE));
    }

    #[test]
    fn a_record_without_a_timestamp_goes_first() {
        let t0 = Instant::now();
        let mut m = Merge::new(2, IDLE);
        m.push(3, CONTACTS, Some(1), "c1");
        m.push(3, ENGAGEMENTS, None, "e-none");
        m.push(3, ENGAGEMENTS, Some(2), "e2");
        m.push(3, CONTACTS, Some(3), "c3");
        assert_eq!(drain(&mut m, t0), ["e-none", "c1", "e2"]);
    }

    #[test]
    fn waits_for_the_empty_input() {
        let t0 = Instant::now();
        let mut m = Merge::new(2, IDLE);
        m.push(0, ENGAGEMENTS, Some(10), "e10");
        assert_eq!(m.pop_ready(t0), None);
        assert_eq!(m.next_deadline(), Some(t0 + IDLE));
        // Still waiting just before the deadline; the timer was armed at t0, not re-armed.
        assert_eq!(m.pop_ready(t0 + ms(99)), None);
        assert_eq!(m.next_deadline(), Some(t0 + IDLE));
        // The contact arrives in time and goes first.
        m.push(0, CONTACTS, Some(5), "c5");
        assert_eq!(drain(&mut m, t0 + ms(99)), ["c5"]);
        // Contacts are empty again: e10 waits on a fresh timer.
        assert_eq!(m.next_deadline(), Some(t0 + ms(99) + IDLE));
        assert_eq!(m.pop_ready(t0 + ms(150)), None);
        assert_eq!(drain(&mut m, t0 + ms(199)), ["e10"]);
        assert!(m.is_empty());
        assert_eq!(m.next_deadline(), None);
    }

    #[test]
    fn processes_the_other_input_after_max_task_idle_until_the_empty_one_has_data() {
        let t0 = Instant::now();
        let mut m = Merge::new(2, IDLE);
        m.push(0, ENGAGEMENTS, Some(10), "e10");
        m.push(0, ENGAGEMENTS, Some(20), "e20");
        assert_eq!(m.pop_ready(t0), None);
        assert_eq!(drain(&mut m, t0 + IDLE), ["e10", "e20"]);
        // Contacts have stayed empty: later engagements need not wait again...
        m.push(0, ENGAGEMENTS, Some(30), "e30");
        assert_eq!(drain(&mut m, t0 + ms(300)), ["e30"]);
        // ...until a contact arrives, which resets the timer; then both inputs merge again.
        m.push(0, CONTACTS, Some(35), "c35");
        m.push(0, ENGAGEMENTS, Some(31), "e31");
        m.push(0, ENGAGEMENTS, Some(40), "e40");
        assert_eq!(drain(&mut m, t0 + ms(300)), ["e31", "c35"]);
        // Contacts empty again: the task blocks on them anew (re-armed at 300 ms).
        assert_eq!(m.next_deadline(), Some(t0 + ms(300) + IDLE));
        assert_eq!(m.pop_ready(t0 + ms(399)), None);
        assert_eq!(drain(&mut m, t0 + ms(400)), ["e40"]);
    }

    #[test]
    fn the_timer_counts_from_when_the_task_blocked_not_from_its_first_record() {
        let t0 = Instant::now();
        let mut m = Merge::new(2, IDLE);
        m.push(0, CONTACTS, Some(1), "c1");
        m.push(0, CONTACTS, Some(2), "c2");
        m.push(0, ENGAGEMENTS, Some(3), "e3");
        assert_eq!(drain(&mut m, t0), ["c1", "c2"]);
        // Blocked on contacts since c2 left at t0, so e3 is released by then.
        assert_eq!(drain(&mut m, t0 + ms(500)), ["e3"]);

        // A task that held nothing was not blocked meanwhile: a contact arriving after a long
        // quiet spell waits for engagements on a fresh timer.
        let mut m = Merge::new(2, IDLE);
        m.push(1, ENGAGEMENTS, Some(2), "e2");
        assert_eq!(m.pop_ready(t0), None);
        assert_eq!(drain(&mut m, t0 + IDLE), ["e2"]);
        m.push(1, CONTACTS, Some(3), "c3");
        assert_eq!(m.pop_ready(t0 + ms(1000)), None);
        assert_eq!(m.next_deadline(), Some(t0 + ms(1000) + IDLE));
    }

    #[test]
    fn an_input_behind_is_waited_for_longer() {
        let t0 = Instant::now();
        let mut m = Merge::new(2, IDLE).wait_longer_when_behind(ms(1000));
        m.push(0, ENGAGEMENTS, Some(10), "e10");
        m.push(1, ENGAGEMENTS, Some(10), "p1-e10");
        // Contacts of partition 0 are behind (not fetched yet), those of partition 1 are not.
        let behind = |p: i32, input: usize| p == 0 && input == CONTACTS;
        assert_eq!(m.pop_ready_with(t0, behind), None);
        assert_eq!(m.next_deadline(), Some(t0 + IDLE));
        assert_eq!(m.pop_ready_with(t0 + IDLE, behind), Some("p1-e10"));
        assert_eq!(m.pop_ready_with(t0 + ms(500), behind), None);
        assert_eq!(m.next_deadline(), Some(t0 + ms(1000)));
        assert!(m.waiting_behind());
        // Caught up without delivering anything (the partition was empty): the wait counts
        // from when the task blocked, so e10 goes at once.
        assert_eq!(m.pop_ready_with(t0 + ms(500), |_, _| false), Some("e10"));
        assert!(!m.waiting_behind());

        // Still behind after max_wait_behind: processed anyway.
        m.push(0, ENGAGEMENTS, Some(20), "e20");
        m.push(0, CONTACTS, Some(15), "c15");
        assert_eq!(drain(&mut m, t0 + ms(600)), ["c15"]);
        assert_eq!(m.pop_ready_with(t0 + ms(1599), behind), None);
        assert_eq!(m.pop_ready_with(t0 + ms(1600), behind), Some("e20"));
    }

    #[test]
    fn zero_idle_never_waits() {
        let t0 = Instant::now();
        let mut m = Merge::new(2, Duration::ZERO);
        m.push(0, ENGAGEMENTS, Some(10), "e10");
        assert_eq!(m.pop_ready_with(t0, |_, _| true), Some("e10"));
        m.push(0, CONTACTS, Some(9), "c9");
        m.push(0, ENGAGEMENTS, Some(8), "e8");
        assert_eq!(drain(&mut m, t0), ["e8", "c9"]);
        assert_eq!(m.next_deadline(), None);
    }

    #[test]
    fn order_within_an_input_never_changes() {
        let t0 = Instant::now();
        let mut m = Merge::new(2, IDLE);
        // Engagement timestamps go backwards within the partition (a producer that sets them).
        m.push(0, ENGAGEMENTS, Some(50), "e50");
        m.push(0, ENGAGEMENTS, Some(10), "e10");
        m.push(0, ENGAGEMENTS, Some(5), "e5");
        m.push(0, CONTACTS, Some(20), "c20");
        m.push(0, CONTACTS, Some(60), "c60");
        // c20 < e50, then e50 < c60; e10 and e5 stay behind e50.
        assert_eq!(drain(&mut m, t0), ["c20", "e50", "e10", "e5"]);
        assert_eq!(drain(&mut m, t0 + IDLE), ["c60"]);
    }

    #[test]
    fn tasks_are_independent_and_served_in_turn() {
        let t0 = Instant::now();
        let mut m = Merge::new(2, IDLE);
        // Task 0 is blocked on contacts; task 1 and task 2 are ready.
        m.push(0, ENGAGEMENTS, Some(1), "p0-e1");
        for (p, c, e) in [(1, "p1-c", "p1-e"), (2, "p2-c", "p2-e")] {
            m.push(p, CONTACTS, Some(100), c);
            m.push(p, ENGAGEMENTS, Some(200), e);
            m.push(p, CONTACTS, Some(300), c);
            m.push(p, ENGAGEMENTS, Some(400), e);
        }
        // Round robin over the ready tasks; the blocked one holds nobody up.
        assert_eq!(
            drain(&mut m, t0),
            ["p1-c", "p2-c", "p1-e", "p2-e", "p1-c", "p2-c"]
        );
        // Task 0 alone is released by its timer; tasks 1 and 2 wait on their own.
        assert_eq!(m.next_deadline(), Some(t0 + IDLE));
        assert_eq!(drain(&mut m, t0 + ms(50)), Vec::<&str>::new());
        m.push(0, CONTACTS, Some(0), "p0-c0");
        assert_eq!(drain(&mut m, t0 + ms(50)), ["p0-c0"]);
        // Task 0's contacts emptied at 50 ms: its new timer ends after those of tasks 1 and 2.
        assert_eq!(m.next_deadline(), Some(t0 + IDLE));
        assert_eq!(drain(&mut m, t0 + IDLE), ["p1-e", "p2-e"]);
        assert_eq!(m.next_deadline(), Some(t0 + ms(50) + IDLE));
        assert_eq!(drain(&mut m, t0 + ms(150)), ["p0-e1"]);
        assert!(m.is_empty());
    }

    #[test]
    fn a_busy_task_does_not_starve_another() {
        let t0 = Instant::now();
        let mut m = Merge::new(2, IDLE);
        let mut served = Vec::new();
        m.push(7, CONTACTS, Some(1_000), 7);
        m.push(7, ENGAGEMENTS, Some(1_000), 7);
        for ts in 0..10 {
            m.push(1, CONTACTS, Some(ts), 1);
            m.push(1, ENGAGEMENTS, Some(ts), 1);
            served.push(m.pop_ready(t0).unwrap());
        }
        assert!(served.contains(&7), "{served:?}");
    }

    #[test]
    fn more_than_two_inputs() {
        let t0 = Instant::now();
        let mut m = Merge::new(3, IDLE);
        m.push(0, 2, Some(1), "i2");
        m.push(0, 1, Some(2), "i1");
        assert_eq!(m.pop_ready(t0), None);
        m.push(0, 0, Some(3), "i0");
        assert_eq!(drain(&mut m, t0), ["i2"]);
        // Input 2 empty now: blocked again.
        assert_eq!(m.pop_ready(t0 + ms(10)), None);
        assert_eq!(drain(&mut m, t0 + IDLE), ["i1"]);
        // Each input has its own timer: input 1 just emptied, so i0 waits for it afresh.
        assert_eq!(m.next_deadline(), Some(t0 + IDLE + IDLE));
        assert_eq!(drain(&mut m, t0 + IDLE + IDLE), ["i0"]);
    }

    #[test]
    fn removing_a_revoked_partition_drops_its_records() {
        let t0 = Instant::now();
        let mut m = Merge::new(2, IDLE);
        m.push(4, CONTACTS, Some(1), "c1");
        m.push(4, CONTACTS, Some(2), "c2");
        m.push(5, ENGAGEMENTS, Some(1), "other");
        // Both tasks blocked since t0.
        assert_eq!(m.pop_ready(t0), None);
        assert_eq!(m.remove(4, CONTACTS), 2);
        assert_eq!(m.remove(4, ENGAGEMENTS), 0);
        assert_eq!(m.remove(9, CONTACTS), 0);
        assert_eq!(m.len(), 1);
        // Partition 4, assigned again, starts afresh: its timer armed at t0 is gone.
        m.push(4, CONTACTS, Some(3), "c3");
        assert_eq!(drain(&mut m, t0 + IDLE), ["other"]);
        assert_eq!(m.next_deadline(), Some(t0 + IDLE + IDLE));
        assert_eq!(drain(&mut m, t0 + IDLE + IDLE), ["c3"]);
        assert!(m.is_empty());
    }

    #[test]
    fn a_wait_for_an_input_behind_that_runs_out_is_reported_as_behind() {
        let t0 = Instant::now();
        let mut m = Merge::new(2, IDLE).wait_longer_when_behind(ms(60_000));
        m.push(0, ENGAGEMENTS, Some(10), "e10");
        let behind = |_: i32, input: usize| input == CONTACTS;
        assert_eq!(m.pop_ready_with(t0, behind), None);
        assert_eq!(m.pop_ready_with(t0 + ms(59_999), behind), None);
        assert!(m.take_enforced().is_empty());
        assert_eq!(m.pop_ready_with(t0 + ms(60_000), behind), Some("e10"));
        assert_eq!(
            m.take_enforced(),
            [Enforced {
                partition: 0,
                input: CONTACTS,
                waited: ms(60_000),
                behind: true
            }]
        );
    }

    #[test]
    fn a_wait_that_runs_out_is_reported_once() {
        let t0 = Instant::now();
        let mut m = Merge::new(2, IDLE);
        m.push(3, ENGAGEMENTS, Some(10), "e10");
        m.push(3, ENGAGEMENTS, Some(20), "e20");
        m.push(4, CONTACTS, Some(1), "p4-c1");
        m.push(4, ENGAGEMENTS, Some(2), "p4-e2");
        // Task 4 merges without waiting: nothing enforced.
        assert_eq!(m.pop_ready(t0), Some("p4-c1"));
        assert!(m.take_enforced().is_empty());
        // Round robin: task 3 comes after task 4, served last.
        assert_eq!(drain(&mut m, t0 + IDLE), ["e10", "p4-e2", "e20"]);
        let enforced = m.take_enforced();
        assert_eq!(
            enforced
                .iter()
                .map(|e| (e.partition, e.input))
                .collect::<Vec<_>>(),
            [(3, CONTACTS), (4, CONTACTS)],
            "{enforced:?}"
        );
        // Task 4 blocked on its contacts once p4-c1 had left, at t0.
        assert!(enforced.iter().all(|e| e.waited == IDLE && !e.behind));
        // Engagements keep coming while contacts stay empty: no new report.
        m.push(3, ENGAGEMENTS, Some(30), "e30");
        assert_eq!(drain(&mut m, t0 + ms(500)), ["e30"]);
        assert!(m.take_enforced().is_empty());
    }

    #[test]
    fn restarted_waits_count_from_the_restart() {
        let t0 = Instant::now();
        let mut m = Merge::new(2, IDLE).wait_longer_when_behind(ms(1000));
        m.push(0, ENGAGEMENTS, Some(10), "e10");
        let behind = |_: i32, input: usize| input == CONTACTS;
        assert_eq!(m.pop_ready_with(t0, behind), None);
        assert_eq!(m.next_deadline(), Some(t0 + ms(1000)));
        // The inputs were paused from t0 to 900 ms: the wait starts again at 900 ms.
        m.restart_waits(t0 + ms(900));
        assert_eq!(m.pop_ready_with(t0 + ms(1000), behind), None);
        assert_eq!(m.next_deadline(), Some(t0 + ms(1900)));
        assert_eq!(m.pop_ready_with(t0 + ms(1900), behind), Some("e10"));
    }
}
