//! The watermark of one task (one partition number across the co-partitioned inputs).
//!
//! *Stream time* of an input is the largest `occurred_at` seen on its partition. The task's
//! watermark is the minimum stream time over its inputs minus the grace period, and never
//! moves backwards. An event is *late* when its `occurred_at` is below the watermark as it was
//! before the event arrived; an event exactly at the watermark is on time.
//!
//! An input that has not been seen yet holds the watermark at "none" (nothing is late before
//! every input has been seen), so that a task starting on a backlog does not judge one input
//! against another that has not been read yet. An input partition without records for
//! `idle_timeout` of wall-clock time stops holding the watermark back (Flink's
//! `withIdleness`) until its records return; when every input is idle the watermark stays
//! where the last input to go idle left it. Records of an input that was idle may then be
//! late: that is the price of not stalling the other input forever.
//!
//! Per record this is a few comparisons over the (two) inputs and no allocation.

use serde::{Deserialize, Serialize};

use super::Lateness;

/// Wall-clock milliseconds; only differences matter (idleness), so any epoch will do. Passed
/// in by the caller so tests control time. A clock that jumps backwards only delays idleness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WallTime(pub i64);

/// What [`WatermarkTracker::observe`] found about one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// `occurred_at < watermark`.
    pub late: bool,
    /// The watermark the record was judged against (before it), `None` while some active
    /// input has not been seen. This is `LateEvent.watermark`.
    pub watermark: Option<i64>,
    /// `watermark − occurred_at` when late, else 0.
    pub lateness_ms: i64,
    /// The watermark after the record was counted (≥ `watermark`): the one to expire state at.
    pub watermark_after: Option<i64>,
}

impl Observation {
    /// What a record is when event time is not tracked: on time, no watermark.
    pub fn untracked() -> Observation {
        Observation {
            late: false,
            watermark: None,
            lateness_ms: 0,
            watermark_after: None,
        }
    }
}

/// Stream time per input, idleness and the monotonic watermark of one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatermarkTracker {
    grace_ms: i64,
    idle_ms: i64,
    /// Largest `occurred_at` per input; `None` before its first record.
    stream_time: Vec<Option<i64>>,
    /// Wall time of each input's last record, or of creation / restore.
    last_record: Vec<WallTime>,
    /// The highest watermark observed so far (the floor of every later one).
    watermark: Option<i64>,
}

/// What is persisted with the task's state: wall times are not (they mean nothing after a
/// restart; idleness is measured from the restore).
#[derive(Serialize)]
struct PersistedRef<'a> {
    watermark: Option<i64>,
    stream_time: &'a [Option<i64>],
}

#[derive(Deserialize)]
struct Persisted {
    watermark: Option<i64>,
    stream_time: Vec<Option<i64>>,
}

fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl WatermarkTracker {
    /// A task with `inputs` inputs (indexed `0..inputs`, e.g. 0 = contacts, 1 = engagements)
    /// and nothing seen yet, created at wall time `now`.
    pub fn new(lateness: &Lateness, inputs: usize, now: WallTime) -> WatermarkTracker {
        WatermarkTracker {
            grace_ms: millis(lateness.grace),
            idle_ms: millis(lateness.idle_timeout),
            stream_time: vec![None; inputs],
            last_record: vec![now; inputs],
            watermark: None,
        }
    }

    /// Counts one record of `input` (panics if `input` is out of range: a wiring bug).
    ///
    /// Lateness is judged against the watermark before the record. The record then raises its
    /// input's stream time even when it is late: stream time is the largest `occurred_at` seen,
    /// whatever happens to the event, and a late record of a non-idle input cannot raise it
    /// anyway (it is below that input's stream time − grace). It also marks the input active.
    pub fn observe(&mut self, input: usize, occurred_at: i64, now: WallTime) -> Observation {
        let before = self.watermark(now);
        let late = before.is_some_and(|w| occurred_at < w);
        // Keep what idleness released before this record re-activates its input.
        self.watermark = before;
        let stream_time = &mut self.stream_time[input];
        *stream_time = Some(stream_time.map_or(occurred_at, |t| t.max(occurred_at)));
        let last = &mut self.last_record[input];
        *last = (*last).max(now);
        self.watermark = self.watermark(now);
        Observation {
            late,
            watermark: before,
            lateness_ms: match before {
                Some(w) if late => w.saturating_sub(occurred_at),
                _ => 0,
            },
            watermark_after: self.watermark,
        }
    }

    /// The watermark at wall time `now`: never below one [`observe`](Self::observe) returned,
    /// and non-decreasing over calls with non-decreasing `now`.
    pub fn watermark(&self, now: WallTime) -> Option<i64> {
        self.watermark.max(self.candidate(now))
    }

    /// Stream time of `input`, `None` before its first record.
    pub fn stream_time(&self, input: usize) -> Option<i64> {
        self.stream_time[input]
    }

    /// Whether `input` has had no record for `idle_timeout` at `now`.
    pub fn is_idle(&self, input: usize, now: WallTime) -> bool {
        now.0.saturating_sub(self.last_record[input].0) >= self.idle_ms
    }

    pub fn inputs(&self) -> usize {
        self.stream_time.len()
    }

    /// Min stream time − grace over the inputs that count at `now`: the active ones, or if
    /// every input is idle, the last to go idle. `None` if one of those has not been seen.
    fn candidate(&self, now: WallTime) -> Option<i64> {
        let n = self.inputs();
        let any_active = (0..n).any(|i| !self.is_idle(i, now));
        let last_to_idle = self.last_record.iter().max().copied();
        let mut min: Option<i64> = None;
        for i in 0..n {
            let counts = if any_active {
                !self.is_idle(i, now)
            } else {
                Some(self.last_record[i]) == last_to_idle
            };
            if counts {
                let t = self.stream_time[i]?;
                min = Some(min.map_or(t, |m| m.min(t)));
            }
        }
        min.map(|m| m.saturating_sub(self.grace_ms))
    }

    /// The state to persist with the task (stream times and the watermark).
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_stdvec(&PersistedRef {
            watermark: self.watermark,
            stream_time: &self.stream_time,
        })
        .expect("postcard serializes plain structs")
    }

    /// A tracker restored from [`to_bytes`](Self::to_bytes) at wall time `now`, under the
    /// current `lateness` (grace may have changed; the restored watermark is kept as a floor,
    /// so it never goes back). Idleness is measured from `now`. A different number of inputs
    /// keeps the stream times of the inputs both have.
    pub fn from_bytes(
        bytes: &[u8],
        lateness: &Lateness,
        inputs: usize,
        now: WallTime,
    ) -> Result<WatermarkTracker, postcard::Error> {
        let p: Persisted = postcard::from_bytes(bytes)?;
        let mut t = WatermarkTracker::new(lateness, inputs, now);
        for (slot, stored) in t.stream_time.iter_mut().zip(p.stream_time) {
            *slot = stored;
        }
        t.watermark = p.watermark;
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const MIN: i64 = 60_000;
    const T: i64 = 1_767_600_000_000;
    const CONTACTS: usize = 0;
    const ENGAGEMENTS: usize = 1;

    fn lateness(grace_ms: u64, idle_ms: u64) -> Lateness {
        Lateness {
            grace: Duration::from_millis(grace_ms),
            idle_timeout: Duration::from_millis(idle_ms),
            ..Lateness::default()
        }
    }

    /// Grace 5 min, idle 1 min, two inputs, created at wall time 0.
    fn tracker() -> WatermarkTracker {
        WatermarkTracker::new(&lateness(5 * MIN as u64, MIN as u64), 2, WallTime(0))
    }

    #[test]
    fn nothing_is_late_before_every_input_is_seen() {
        let mut w = tracker();
        let o = w.observe(CONTACTS, T, WallTime(0));
        assert_eq!(
            (o.late, o.watermark, o.watermark_after),
            (false, None, None)
        );
        // Far behind the contacts' stream time, but engagements have not been seen.
        let o = w.observe(CONTACTS, T - 60 * MIN, WallTime(1));
        assert!(!o.late);
        assert_eq!(o.lateness_ms, 0);
        let o = w.observe(ENGAGEMENTS, T, WallTime(2));
        assert_eq!(o.watermark, None);
        assert_eq!(o.watermark_after, Some(T - 5 * MIN));
    }

    #[test]
    fn the_slower_input_holds_the_watermark() {
        let mut w = tracker();
        // Contacts advance a minute per record, engagements every fifth record only.
        for k in 0..50 {
            w.observe(CONTACTS, T + k * MIN, WallTime(k * 1000));
            if k % 5 == 0 {
                w.observe(ENGAGEMENTS, T + k * MIN, WallTime(k * 1000));
            }
        }
        assert_eq!(w.stream_time(CONTACTS), Some(T + 49 * MIN));
        assert_eq!(w.stream_time(ENGAGEMENTS), Some(T + 45 * MIN));
        assert_eq!(w.watermark(WallTime(50_000)), Some(T + 40 * MIN));
        // A contact event 20 minutes behind its own stream time is on time: the watermark
        // follows the engagements.
        let o = w.observe(CONTACTS, T + 40 * MIN, WallTime(50_000));
        assert!(!o.late);
        let o = w.observe(CONTACTS, T + 40 * MIN - 1, WallTime(50_000));
        assert!(o.late);
        assert_eq!(o.lateness_ms, 1);
    }

    #[test]
    fn grace_boundary() {
        let mut w = tracker();
        w.observe(CONTACTS, T, WallTime(0));
        w.observe(ENGAGEMENTS, T, WallTime(0));
        let wm = T - 5 * MIN;
        let o = w.observe(ENGAGEMENTS, wm, WallTime(0));
        assert_eq!((o.late, o.watermark, o.lateness_ms), (false, Some(wm), 0));
        let o = w.observe(ENGAGEMENTS, wm - 1, WallTime(0));
        assert_eq!((o.late, o.watermark, o.lateness_ms), (true, Some(wm), 1));
        // Zero grace: the watermark is the stream time itself.
        let mut w = WatermarkTracker::new(&lateness(0, 1000), 1, WallTime(0));
        w.observe(0, T, WallTime(0));
        assert!(!w.observe(0, T, WallTime(0)).late);
        assert!(w.observe(0, T - 1, WallTime(0)).late);
    }

    #[test]
    fn an_idle_input_is_released_after_the_timeout_and_holds_again_when_it_returns() {
        let mut w = tracker();
        w.observe(CONTACTS, T, WallTime(0));
        // Engagements never seen: held until a minute after creation.
        w.observe(CONTACTS, T + 10 * MIN, WallTime(MIN - 1));
        assert_eq!(w.watermark(WallTime(MIN - 1)), None);
        // Contacts stay active; engagements are idle from 1 min after creation.
        let o = w.observe(CONTACTS, T + 20 * MIN, WallTime(MIN));
        assert_eq!(o.watermark, Some(T + 5 * MIN));
        assert_eq!(o.watermark_after, Some(T + 15 * MIN));
        assert!(w.is_idle(ENGAGEMENTS, WallTime(MIN)));

        // Engagements return, behind: the one that brings them back is judged against the
        // released watermark, and they hold the watermark again (it stays where it was).
        let o = w.observe(ENGAGEMENTS, T + 12 * MIN, WallTime(MIN + 1));
        assert!(o.late);
        assert_eq!(o.lateness_ms, 3 * MIN);
        assert_eq!(o.watermark_after, Some(T + 15 * MIN));
        // Contacts advance, engagements do not: the watermark stays put...
        w.observe(CONTACTS, T + 60 * MIN, WallTime(MIN + 2));
        assert_eq!(w.watermark(WallTime(MIN + 2)), Some(T + 15 * MIN));
        // ...until engagements catch up,
        w.observe(ENGAGEMENTS, T + 30 * MIN, WallTime(MIN + 3));
        assert_eq!(w.watermark(WallTime(MIN + 3)), Some(T + 25 * MIN));
        // or go idle again a minute after their last record.
        assert!(w.is_idle(ENGAGEMENTS, WallTime(2 * MIN + 3)));
        w.observe(CONTACTS, T + 61 * MIN, WallTime(2 * MIN + 3));
        assert_eq!(w.watermark(WallTime(2 * MIN + 3)), Some(T + 56 * MIN));
    }

    #[test]
    fn when_every_input_is_idle_the_watermark_stays_where_the_last_one_left_it() {
        let mut w = tracker();
        w.observe(CONTACTS, T + 30 * MIN, WallTime(0));
        w.observe(ENGAGEMENTS, T, WallTime(10_000));
        w.observe(CONTACTS, T + 40 * MIN, WallTime(20_000));
        assert_eq!(w.watermark(WallTime(20_000)), Some(T - 5 * MIN));
        // Engagements idle at 70 s: contacts alone.
        assert_eq!(w.watermark(WallTime(70_000)), Some(T + 35 * MIN));
        // Contacts idle at 80 s too: contacts were the last to go idle.
        assert_eq!(w.watermark(WallTime(80_000)), Some(T + 35 * MIN));
        assert_eq!(w.watermark(WallTime(10_000_000)), Some(T + 35 * MIN));
        // Nothing ever seen and everything idle: still none.
        let w = tracker();
        assert_eq!(w.watermark(WallTime(10_000_000)), None);
    }

    #[test]
    fn the_watermark_never_moves_backwards() {
        let mut w = tracker();
        let mut last = None;
        let mut now = 0;
        // Alternating bursts and pauses make the inputs go idle and come back behind.
        for k in 0..200i64 {
            now += if k % 17 == 0 { 90_000 } else { 700 };
            let input = (k % 3 == 0) as usize;
            let at = T + (k * 7919 % 101) * MIN / 3 + k * 10_000;
            let o = w.observe(input, at, WallTime(now));
            assert!(o.watermark >= last && o.watermark_after >= o.watermark);
            assert!(w.watermark(WallTime(now + 30_000)) >= o.watermark_after);
            last = o.watermark_after;
        }
        assert!(last.is_some());
    }

    #[test]
    fn a_clock_going_backwards_does_not_lower_the_watermark() {
        let mut w = tracker();
        w.observe(CONTACTS, T, WallTime(0));
        w.observe(CONTACTS, T + 10 * MIN, WallTime(MIN));
        let released = w
            .observe(CONTACTS, T + 10 * MIN, WallTime(MIN))
            .watermark_after;
        assert_eq!(released, Some(T + 5 * MIN));
        assert_eq!(w.watermark(WallTime(0)), released);
        assert!(!w.observe(ENGAGEMENTS, T + 5 * MIN, WallTime(0)).late);
    }

    #[test]
    fn restore_keeps_stream_times_and_the_watermark() {
        let mut w = tracker();
        w.observe(CONTACTS, T + 20 * MIN, WallTime(0));
        w.observe(ENGAGEMENTS, T + 10 * MIN, WallTime(0));
        // Engagements idle: the watermark was released to contacts − grace.
        let o = w.observe(CONTACTS, T + 30 * MIN, WallTime(2 * MIN));
        assert_eq!(o.watermark_after, Some(T + 25 * MIN));
        let bytes = w.to_bytes();

        // Restored later with a longer grace: idleness restarts, the floor stays.
        let longer = lateness(60 * MIN as u64, MIN as u64);
        let r = WatermarkTracker::from_bytes(&bytes, &longer, 2, WallTime(1_000_000)).unwrap();
        assert_eq!(r.stream_time(CONTACTS), Some(T + 30 * MIN));
        assert_eq!(r.stream_time(ENGAGEMENTS), Some(T + 10 * MIN));
        assert!(!r.is_idle(ENGAGEMENTS, WallTime(1_000_000)));
        assert_eq!(r.watermark(WallTime(1_000_000)), Some(T + 25 * MIN));

        // Same settings: the same tracker apart from the wall times.
        let same = WatermarkTracker::from_bytes(
            &bytes,
            &lateness(5 * MIN as u64, MIN as u64),
            2,
            WallTime(2 * MIN),
        )
        .unwrap();
        assert_eq!(same.to_bytes(), bytes);
        assert_eq!(
            same.watermark(WallTime(2 * MIN)),
            w.watermark(WallTime(2 * MIN))
        );

        // A third input is new (holds the watermark at the restored floor until idle).
        let three = WatermarkTracker::from_bytes(&bytes, &longer, 3, WallTime(0)).unwrap();
        assert_eq!(three.stream_time(2), None);
        assert_eq!(three.watermark(WallTime(0)), Some(T + 25 * MIN));
        assert!(WatermarkTracker::from_bytes(&[0xff], &longer, 2, WallTime(0)).is_err());
    }
}
