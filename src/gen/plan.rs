//! Disorder: which generated events are re-sent, out of order, or late, and by how much.
//!
//! The generator keeps *stream time* M, the largest `occurred_at` it has emitted (duplicates
//! aside). An in-order event happens at the nominal clock (≥ M). An out-of-order event is put
//! within `bound` behind M; a late event more than `bound + LATE_MARGIN` behind M. The same
//! classification computed from the produced data (see [`classify`]) therefore gives back
//! exactly the generator's labels, and a processor whose per-partition watermark is
//! `stream time - grace` (grace = bound) sees every late event as late and no other.

use std::collections::{HashSet, VecDeque};

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::world::{StreamEvent, World};

/// Late events are at least this much beyond the bound, so per-partition watermarks, which
/// trail the generator's global stream time by a few seconds, still see them as late.
pub const LATE_MARGIN_MS: i64 = 10 * 60 * 1000;
/// The furthest a late event goes back beyond bound + margin.
pub const LATE_SPREAD_MS: i64 = 2 * 60 * 60 * 1000;
/// How many recent events a duplicate may re-send.
const RECENT: usize = 64;

/// What the generator did to one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Disorder {
    InOrder,
    OutOfOrder,
    Late,
    Duplicate,
}

impl Disorder {
    pub fn as_str(self) -> &'static str {
        match self {
            Disorder::InOrder => "in_order",
            Disorder::OutOfOrder => "out_of_order",
            Disorder::Late => "late",
            Disorder::Duplicate => "duplicate",
        }
    }

    pub fn parse(s: &str) -> Option<Disorder> {
        [
            Disorder::InOrder,
            Disorder::OutOfOrder,
            Disorder::Late,
            Disorder::Duplicate,
        ]
        .into_iter()
        .find(|d| d.as_str() == s)
    }
}

/// Fractions and bounds of disorder, as the user asked for them.
#[derive(Debug, Clone, Copy)]
pub struct DisorderSpec {
    pub duplicates: f64,
    pub out_of_order: f64,
    pub late: f64,
    pub bound_ms: i64,
    /// Mean event-time gap between consecutive events.
    pub mean_gap_ms: i64,
}

impl DisorderSpec {
    /// Checks the fractions make sense together; returns what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("--duplicates", self.duplicates),
            ("--out-of-order", self.out_of_order),
            ("--late", self.late),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!(
                    "{name} must be a fraction between 0 and 1, got {v}"
                ));
            }
        }
        if self.duplicates + self.out_of_order + self.late > 0.9 {
            return Err(format!(
                "--duplicates + --out-of-order + --late is {:.2}; keep it at most 0.9 so most \
                 events stay in order",
                self.duplicates + self.out_of_order + self.late
            ));
        }
        if self.bound_ms < 2 {
            return Err("--lateness-bound must be at least 2ms".into());
        }
        Ok(())
    }
}

/// One stream record the generator produced.
#[derive(Debug, Clone)]
pub struct Planned {
    pub seq: u64,
    pub disorder: Disorder,
    pub event: StreamEvent,
}

/// Produces the stream of contact and engagement events with the requested disorder.
pub struct Planner {
    spec: DisorderSpec,
    total: u64,
    warmup: u64,
    nominal: i64,
    stream_time: Option<i64>,
    seq: u64,
    recent: VecDeque<StreamEvent>,
}

impl Planner {
    /// A planner for `total` records starting at event time `start_ms`.
    ///
    /// The first `warmup` records (10 % of the run, at most 200) are all in order so every
    /// partition has a stream time before anything is shifted behind it; shift probabilities
    /// are raised to compensate, so the fractions over the whole run match the spec.
    pub fn new(spec: DisorderSpec, total: u64, start_ms: i64) -> Planner {
        Planner {
            spec,
            total,
            warmup: (total / 10).min(200),
            nominal: start_ms,
            stream_time: None,
            seq: 0,
            recent: VecDeque::with_capacity(RECENT),
        }
    }

    pub fn next(&mut self, rng: &mut ChaCha8Rng, world: &mut World) -> Planned {
        let seq = self.seq;
        self.seq += 1;
        self.nominal += rng.random_range(0..=2 * self.spec.mean_gap_ms);

        if !self.recent.is_empty() && rng.random_bool(self.spec.duplicates) {
            let i = rng.random_range(0..self.recent.len());
            let mut event = self.recent[i].clone();
            event.envelope_mut().delivery_attempt += 1;
            return Planned {
                seq,
                disorder: Disorder::Duplicate,
                event,
            };
        }

        let disorder = self.roll_disorder(rng, seq);
        let occurred_at = match (disorder, self.stream_time) {
            (Disorder::OutOfOrder, Some(m)) => m - rng.random_range(1..=self.spec.bound_ms),
            (Disorder::Late, Some(m)) => {
                m - self.spec.bound_ms - LATE_MARGIN_MS - rng.random_range(1..=LATE_SPREAD_MS)
            }
            _ => self.nominal,
        };
        let disorder = if self.stream_time.is_none() {
            Disorder::InOrder
        } else {
            disorder
        };
        self.stream_time = Some(self.stream_time.map_or(occurred_at, |m| m.max(occurred_at)));
        let event = world.next_event(rng, occurred_at);
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(event.clone());
        Planned {
            seq,
            disorder,
            event,
        }
    }

    fn roll_disorder(&self, rng: &mut ChaCha8Rng, seq: u64) -> Disorder {
        if seq < self.warmup {
            return Disorder::InOrder;
        }
        // P(shift | not duplicate, after warm-up) so the run-wide fractions match the spec.
        let scale = self.total as f64
            / (self.total - self.warmup) as f64
            / (1.0 - self.spec.duplicates).max(f64::EPSILON);
        let roll: f64 = rng.random();
        let late = (self.spec.late * scale).min(1.0);
        let ooo = (self.spec.out_of_order * scale).min(1.0 - late);
        if roll < late {
            Disorder::Late
        } else if roll < late + ooo {
            Disorder::OutOfOrder
        } else {
            Disorder::InOrder
        }
    }
}

/// Classifies records the way [`Planner`] labels them, from data alone: `(event_id,
/// occurred_at)` in production order. Used by tests and by anyone checking a topic.
pub fn classify<'a>(
    records: impl IntoIterator<Item = (&'a str, i64)>,
    bound_ms: i64,
) -> Vec<Disorder> {
    let mut seen = HashSet::new();
    let mut stream_time: Option<i64> = None;
    records
        .into_iter()
        .map(|(event_id, at)| {
            if !seen.insert(event_id.to_string()) {
                return Disorder::Duplicate;
            }
            let class = match stream_time {
                Some(m) if at < m - bound_ms => Disorder::Late,
                Some(m) if at < m => Disorder::OutOfOrder,
                _ => Disorder::InOrder,
            };
            stream_time = Some(stream_time.map_or(at, |m| m.max(at)));
            class
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn run(seed: u64, n: u64, spec: DisorderSpec) -> Vec<Planned> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut world = World::new(&mut rng, 200, 18, 1_700_000_000_000);
        let mut planner = Planner::new(spec, n, 1_700_000_000_000);
        (0..n).map(|_| planner.next(&mut rng, &mut world)).collect()
    }

    fn spec() -> DisorderSpec {
        DisorderSpec {
            duplicates: 0.05,
            out_of_order: 0.2,
            late: 0.02,
            bound_ms: 300_000,
            mean_gap_ms: 1000,
        }
    }

    #[test]
    fn labels_equal_classification_from_data() {
        let planned = run(7, 20_000, spec());
        let data: Vec<(String, i64)> = planned
            .iter()
            .map(|p| {
                let e = p.event.envelope();
                (e.event_id.clone(), e.occurred_at)
            })
            .collect();
        let measured = classify(data.iter().map(|(id, at)| (id.as_str(), *at)), 300_000);
        let labels: Vec<Disorder> = planned.iter().map(|p| p.disorder).collect();
        assert_eq!(measured, labels);
    }

    #[test]
    fn fractions_match_the_spec() {
        let planned = run(11, 20_000, spec());
        let share = |d: Disorder| {
            planned.iter().filter(|p| p.disorder == d).count() as f64 / planned.len() as f64
        };
        assert!(
            (share(Disorder::Duplicate) - 0.05).abs() < 0.01,
            "{}",
            share(Disorder::Duplicate)
        );
        assert!(
            (share(Disorder::OutOfOrder) - 0.2).abs() < 0.015,
            "{}",
            share(Disorder::OutOfOrder)
        );
        assert!(
            (share(Disorder::Late) - 0.02).abs() < 0.005,
            "{}",
            share(Disorder::Late)
        );
    }

    #[test]
    fn no_disorder_means_monotonic_event_time() {
        let none = DisorderSpec {
            duplicates: 0.0,
            out_of_order: 0.0,
            late: 0.0,
            ..spec()
        };
        let planned = run(3, 2_000, none);
        assert!(planned.iter().all(|p| p.disorder == Disorder::InOrder));
        let times: Vec<i64> = planned
            .iter()
            .map(|p| p.event.envelope().occurred_at)
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn rejects_fractions_out_of_range() {
        assert!(DisorderSpec {
            late: 1.5,
            ..spec()
        }
        .validate()
        .is_err());
        assert!(DisorderSpec {
            duplicates: 0.5,
            out_of_order: 0.5,
            ..spec()
        }
        .validate()
        .is_err());
        assert!(spec().validate().is_ok());
    }
}
