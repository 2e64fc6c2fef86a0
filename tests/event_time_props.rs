//! Event-time properties: (a) disorder within grace does not change the merged profile or the
//! engagement windows; (b) the watermark tracker calls exactly the events late that a
//! from-scratch reference model of the definition calls late, with one or more inputs and
//! idle inputs; (c) a restore in the middle of a stream changes nothing.

use std::time::Duration;

use leadflow::enrich::engagement::{History, WINDOW_MS};
use leadflow::enrich::profile::Profile;
use leadflow::model::Contact;
use leadflow::time::{Lateness, WallTime, WatermarkTracker};
use proptest::prelude::*;

const T0: i64 = 1_767_600_000_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
const CONTACTS: usize = 0;
const ENGAGEMENTS: usize = 1;
/// Idleness never kicks in.
const NEVER: Duration = Duration::from_secs(1 << 40);

const KINDS: [&str; 5] = [
    "email_open",
    "web_visit",
    "pricing_page_view",
    "demo_request",
    "call",
];

fn lateness(grace_ms: i64, idle: Duration) -> Lateness {
    Lateness {
        grace: Duration::from_millis(grace_ms as u64),
        idle_timeout: idle,
        ..Lateness::default()
    }
}

// ---------------------------------------------------------------------------------------------
// (a) Order independence within grace.

#[derive(Debug, Clone)]
enum Ev {
    Contact(Box<Contact>),
    Engagement { at: i64, kind: &'static str },
}

impl Ev {
    fn at(&self) -> i64 {
        match self {
            Ev::Contact(c) => c.updated_at,
            Ev::Engagement { at, .. } => *at,
        }
    }

    fn input(&self) -> usize {
        match self {
            Ev::Contact(_) => CONTACTS,
            Ev::Engagement { .. } => ENGAGEMENTS,
        }
    }
}

/// Event times on an hourly grid over ~17 days, so ties are common and windows expire.
fn event_time() -> impl Strategy<Value = i64> {
    (0i64..400).prop_map(|h| T0 + h * HOUR)
}

fn value() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop::sample::select(vec!["a", "b", "c"]).prop_map(String::from))
}

fn contact() -> impl Strategy<Value = Contact> {
    (
        event_time(),
        (value(), value(), value(), value()),
        any::<bool>(),
        prop::collection::btree_map(
            prop::sample::select(vec!["utm", "src"]).prop_map(String::from),
            prop::sample::select(vec!["x", "y"]).prop_map(String::from),
            0..2,
        ),
    )
        .prop_map(
            |(updated_at, (email, title, stage, country), consent, attributes)| Contact {
                contact_id: "ct_1".into(),
                email,
                phone: None,
                first_name: None,
                last_name: None,
                title,
                company_name: None,
                company_domain: None,
                country,
                region: None,
                lifecycle_stage: stage,
                lead_source: None,
                product_interest: None,
                consent_marketing: consent,
                attributes,
                updated_at,
            },
        )
}

fn event() -> impl Strategy<Value = Ev> {
    prop_oneof![
        contact().prop_map(|c| Ev::Contact(Box::new(c))),
        (event_time(), prop::sample::select(KINDS.to_vec()))
            .prop_map(|(at, kind)| Ev::Engagement { at, kind }),
    ]
}

/// Events, a grace period, and an arrival order in which no event is more than grace behind
/// any event that arrived before it: each event arrives at `at + delay` with delay in
/// `0..=grace` (ties in any order), so the stream time it meets is at most `at + grace`.
fn disordered_within_grace() -> impl Strategy<Value = (Vec<Ev>, i64, Vec<usize>)> {
    (
        prop::collection::vec(event(), 1..40),
        prop::sample::select(vec![0, HOUR, 5 * HOUR, DAY, 8 * DAY]),
    )
        .prop_flat_map(|(events, grace)| {
            let n = events.len();
            (
                Just(events),
                Just(grace),
                prop::collection::vec((0..=1000i64, any::<u32>()), n),
            )
        })
        .prop_map(|(events, grace, delays)| {
            let mut order: Vec<usize> = (0..events.len()).collect();
            order.sort_by_key(|&i| (events[i].at() + grace * delays[i].0 / 1000, delays[i].1));
            (events, grace, order)
        })
}

/// A history holding exactly `entries`, built from its stored form rather than with
/// `History::record` (whose behaviour is under test): a sorted list of (time, type).
fn history_of(entries: &[(i64, &str)]) -> History {
    let mut sorted: Vec<(i64, String)> =
        entries.iter().map(|(at, k)| (*at, k.to_string())).collect();
    sorted.sort();
    History::from_bytes(&postcard::to_stdvec(&sorted).unwrap()).unwrap()
}

struct Outcome {
    profile: Profile,
    history: History,
    watermark: Option<i64>,
    late: usize,
}

/// What the pipeline will do: observe, merge or record, expire the history at the watermark.
/// Checks on the way that the history only depends on which engagements have arrived and on
/// the expiry cutoff, never on their order (pruning relative to the newest entry did).
fn process(events: &[Ev], order: &[usize], grace: i64) -> Outcome {
    let mut tracker = WatermarkTracker::new(&lateness(grace, NEVER), 2, WallTime(0));
    let mut profile = Profile::new("ct_1");
    let mut history = History::default();
    let mut arrived = Vec::new();
    let mut late = 0;
    let mut now = 0;
    for &i in order {
        now += 10;
        let ev = &events[i];
        let o = tracker.observe(ev.input(), ev.at(), WallTime(now));
        late += o.late as usize;
        match ev {
            Ev::Contact(c) => profile.merge(c),
            Ev::Engagement { at, kind } => {
                history.record(*at, kind);
                arrived.push((*at, *kind));
                let cutoff = o.watermark_after.map(|w| w - WINDOW_MS);
                if let Some(cutoff) = cutoff {
                    history.expire_before(cutoff);
                }
                let kept: Vec<(i64, &str)> = arrived
                    .iter()
                    .copied()
                    .filter(|(at, _)| cutoff.is_none_or(|c| *at >= c))
                    .collect();
                assert_eq!(
                    history,
                    history_of(&kept),
                    "after {} engagements",
                    arrived.len()
                );
            }
        }
    }
    let watermark = tracker.watermark(WallTime(now));
    if let Some(w) = watermark {
        history.expire_before(w - WINDOW_MS);
    }
    Outcome {
        profile,
        history,
        watermark,
        late,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn disorder_within_grace_changes_nothing((events, grace, arrival) in disordered_within_grace()) {
        let mut in_order: Vec<usize> = (0..events.len()).collect();
        in_order.sort_by_key(|&i| events[i].at());
        let a = process(&events, &in_order, grace);
        let b = process(&events, &arrival, grace);
        prop_assert_eq!(a.late, 0);
        prop_assert_eq!(b.late, 0, "disorder within grace is never late");
        prop_assert_eq!(a.watermark, b.watermark);
        prop_assert_eq!(&a.profile, &b.profile);
        prop_assert_eq!(a.profile.contact(), b.profile.contact());
        prop_assert_eq!(&a.history, &b.history);
        let t_final = events.iter().map(Ev::at).max().unwrap();
        prop_assert_eq!(a.history.stats_at(t_final), b.history.stats_at(t_final));
    }
}

// ---------------------------------------------------------------------------------------------
// (b) The tracker against a reference model.

#[derive(Debug, Clone, Copy)]
struct Rec {
    input: usize,
    at: i64,
    /// Wall time the record is read (non-decreasing).
    now: i64,
}

/// The definition, recomputed from scratch at every step from the records before it (the
/// tracker was created at wall time 0):
/// - stream time of an input: the largest `at` among its records so far;
/// - an input is idle when `idle` ms have passed since its last record (or since 0);
/// - the inputs that count are the non-idle ones, or if all are idle, those whose last
///   record is latest (the last to go idle);
/// - the candidate is min stream time − grace over the inputs that count, none if one of them
///   has no stream time;
/// - the watermark before record k is the largest candidate at any record up to k (it never
///   goes back; between records the candidate only grows as inputs go idle).
fn reference(recs: &[Rec], inputs: usize, grace: i64, idle: i64) -> Vec<(bool, Option<i64>)> {
    let candidate = |j: usize| -> Option<i64> {
        let prefix = &recs[..j];
        let now = recs[j].now;
        let stream_time = |i: usize| prefix.iter().filter(|r| r.input == i).map(|r| r.at).max();
        let last = |i: usize| {
            prefix
                .iter()
                .filter(|r| r.input == i)
                .map(|r| r.now)
                .max()
                .unwrap_or(0)
        };
        let active: Vec<usize> = (0..inputs).filter(|&i| now - last(i) < idle).collect();
        let counted = if active.is_empty() {
            let latest = (0..inputs).map(last).max().unwrap_or(0);
            (0..inputs).filter(|&i| last(i) == latest).collect()
        } else {
            active
        };
        let times: Option<Vec<i64>> = counted.iter().map(|&i| stream_time(i)).collect();
        Some(times?.into_iter().min()? - grace)
    };
    (0..recs.len())
        .map(|k| {
            let watermark = (0..=k).map(candidate).max().flatten();
            (watermark.is_some_and(|w| recs[k].at < w), watermark)
        })
        .collect()
}

/// Without idleness the definition has a closed form: once every input has been seen, an
/// event is late iff it is more than grace behind the slowest input's largest event time.
fn reference_no_idle(recs: &[Rec], inputs: usize, grace: i64) -> Vec<bool> {
    (0..recs.len())
        .map(|k| {
            let slowest = (0..inputs)
                .map(|i| {
                    recs[..k]
                        .iter()
                        .filter(|r| r.input == i)
                        .map(|r| r.at)
                        .max()
                })
                .collect::<Option<Vec<i64>>>()
                .and_then(|m| m.into_iter().min());
            slowest.is_some_and(|s| recs[k].at < s - grace)
        })
        .collect()
}

/// 1 to 3 inputs; event times with plenty of disorder; wall-clock gaps that make inputs go
/// idle and come back.
fn stream() -> impl Strategy<Value = (usize, i64, i64, Vec<Rec>)> {
    (1usize..=3, 0i64..50, 1i64..60).prop_flat_map(|(inputs, grace, idle)| {
        let rec = (
            0..inputs,
            0i64..300,
            prop_oneof![4 => 0i64..5, 1 => 0i64..100],
        );
        (
            Just(inputs),
            Just(grace),
            Just(idle),
            prop::collection::vec(rec, 0..60).prop_map(|raw| {
                let mut now = 0;
                raw.into_iter()
                    .map(|(input, at, gap)| {
                        now += gap;
                        Rec { input, at, now }
                    })
                    .collect()
            }),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn late_is_what_the_reference_model_says((inputs, grace, idle, recs) in stream()) {
        let l = lateness(grace, Duration::from_millis(idle as u64));
        let mut tracker = WatermarkTracker::new(&l, inputs, WallTime(0));
        let expected = reference(&recs, inputs, grace, idle);
        let mut previous = None;
        for (k, r) in recs.iter().enumerate() {
            let o = tracker.observe(r.input, r.at, WallTime(r.now));
            prop_assert_eq!((o.late, o.watermark), expected[k], "record {}: {:?}", k, r);
            prop_assert_eq!(o.lateness_ms, o.watermark.filter(|_| o.late).map_or(0, |w| w - r.at));
            prop_assert!(o.watermark >= previous && o.watermark_after >= o.watermark);
            previous = o.watermark_after;
        }
    }

    #[test]
    fn without_idleness_late_is_behind_the_slowest_input((inputs, grace, _idle, recs) in stream()) {
        let mut tracker = WatermarkTracker::new(&lateness(grace, NEVER), inputs, WallTime(0));
        let late: Vec<bool> = recs
            .iter()
            .map(|r| tracker.observe(r.input, r.at, WallTime(r.now)).late)
            .collect();
        prop_assert_eq!(late, reference_no_idle(&recs, inputs, grace));
    }

    // (c) Persisting and restoring in the middle of a stream changes nothing (without
    // idleness: a restore restarts the idle clocks by design).
    #[test]
    fn a_restore_midway_changes_nothing(
        (inputs, grace, _idle, recs) in stream(),
        split in any::<prop::sample::Index>(),
    ) {
        let l = lateness(grace, NEVER);
        let split = if recs.is_empty() { 0 } else { split.index(recs.len() + 1) };
        let mut straight = WatermarkTracker::new(&l, inputs, WallTime(0));
        let mut restored = WatermarkTracker::new(&l, inputs, WallTime(0));
        for (k, r) in recs.iter().enumerate() {
            if k == split {
                let floor = restored.watermark(WallTime(r.now));
                restored = WatermarkTracker::from_bytes(
                    &restored.to_bytes(), &l, inputs, WallTime(r.now),
                ).unwrap();
                prop_assert!(restored.watermark(WallTime(r.now)) >= floor);
            }
            let a = straight.observe(r.input, r.at, WallTime(r.now));
            let b = restored.observe(r.input, r.at, WallTime(r.now));
            prop_assert_eq!(a, b, "record {}", k);
        }
    }
}
