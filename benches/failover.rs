//! Restore and failover through a real broker (Apache Kafka, one KRaft node on the same
//! machine), with the release `leadflow run`:
//!
//! 1. **restore rate**: instance A processes N generated events and stops; instance B, on an
//!    empty state directory, takes every task and restores it from the changelogs. Reported:
//!    records restored, the tasks' restore seconds, and restored records per second of wall
//!    clock from B's start to its last restored task.
//! 2. **failover time**, with 0 and then 1 standby replica: A (state intact) and C, a new
//!    instance, run as one group while events keep arriving; A is killed with kill -9; the
//!    time from the kill to the first routed lead C writes for one of A's tasks, and what C
//!    restored for them (everything without a standby, the tail with one). Both run with
//!    `session.timeout.ms=6000` (the broker's minimum), so the figure is detection (≤ 6 s) +
//!    rebalance + restore + the first commit.
//!
//! ```text
//! make bench-failover                              # 100,000 events
//! make bench-failover EVENTS=1000000
//! ```
//! Without `--bench` (`cargo test --all-targets`) it runs once on 2,000 events, to keep working.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

use common::stack::{metric, rules, Stack, StackOptions};
use common::wait_until;
use rdkafka::Message;

const TASKS: u32 = 6;
/// `leadflow gen`'s default start, 2026-01-05T09:00:00Z.
const GEN_START_MS: i64 = 1_767_603_600_000;
/// The bench's processes log at info: a trace line per record would be what is measured.
const LOG: (&str, &str) = ("RUST_LOG", "info,rdkafka=warn");

fn events() -> u64 {
    let mut events = if std::env::args().any(|a| a == "--bench") {
        100_000
    } else {
        2_000
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--events" => {
                events = args
                    .next()
                    .and_then(|v| v.replace('_', "").parse().ok())
                    .expect("--events needs a number")
            }
            "--bench" => {}
            other => panic!("unknown argument {other}; use --events N"),
        }
    }
    events
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn main() {
    let events = events();
    let stack = Stack::with(
        "failover",
        &rules("rules/routing.rhai"),
        StackOptions {
            partitions: TASKS,
            ..StackOptions::default()
        },
    );
    let started = Instant::now();
    stack.gen(&events.to_string(), "0.0");
    let inputs = stack.broker.read_all(&stack.topic("crm.contacts.v1")).len()
        + stack
            .broker
            .read_all(&stack.topic("crm.engagements.v1"))
            .len();
    eprintln!(
        "failover bench: {events} events ({inputs} input records) generated in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let (dir_a, dir_b) = (stack.dir.path().join("a"), stack.dir.path().join("b"));

    // 1. A processes everything on its own, then stops.
    let (mut a, url) = stack.start_in(&dir_a, &[], &[LOG]);
    let started = Instant::now();
    wait_until("A completes every input", Duration::from_secs(3600), || {
        metric(&url, "leadflow_record_latency_seconds_count", "") >= inputs as f64
    });
    eprintln!(
        "A processed {inputs} records in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    stop(&mut a);

    // 2. B, with no state, restores every task.
    let started = Instant::now();
    let (mut b, url) = stack.start_in(&dir_b, &[], &[LOG]);
    wait_until("B restores every task", Duration::from_secs(3600), || {
        metric(&url, "leadflow_restore_seconds_count", "") >= TASKS as f64
    });
    let wall = started.elapsed().as_secs_f64();
    let mut records = 0.0;
    let mut per_store = Vec::new();
    for store in ["contact", "dedup", "task"] {
        let n = metric(
            &url,
            "leadflow_restored_records_total",
            &format!("store=\"{store}\""),
        );
        records += n;
        per_store.push(format!("{store} {n:.0}"));
    }
    let task_seconds = metric(&url, "leadflow_restore_seconds_sum", "");
    println!(
        "restore into an empty instance: {records:.0} records ({}) for {TASKS} tasks; {wall:.1} s \
         from the process start to the last task restored ({:.0} records/s); the tasks' restores \
         took {task_seconds:.2} s in all ({:.0} records/s per stream thread)",
        per_store.join(", "),
        records / wall,
        records / task_seconds.max(1e-3)
    );

    stop(&mut b);

    // 3. A (its state intact) and C, a new instance, share the tasks while events keep
    //    arriving; A is killed and its tasks move to C: without standby replicas C restores
    //    them in full, with one it kept them warm and reads only the tail.
    let start_ms = GEN_START_MS + events as i64 * 2_000 + 86_400_000;
    for (round, replicas) in [0, 1].into_iter().enumerate() {
        let yaml = std::fs::read_to_string(&stack.topology).unwrap();
        let yaml = yaml
            .lines()
            .map(|l| {
                if l.trim_start().starts_with("standby_replicas:") {
                    format!("  standby_replicas: {replicas}")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&stack.topology, yaml).unwrap();
        let dir_c = stack.dir.path().join(format!("c{replicas}"));
        // A first, with every task: C, joining after, must never have held A's tasks.
        let (mut a, url_a) = stack.start_in(&dir_a, &[], &[LOG]);
        wait_until("A restores every task", Duration::from_secs(600), || {
            metric(&url_a, "leadflow_restore_seconds_count", "") >= TASKS as f64
        });
        let (mut c, url_c) = stack.start_in(&dir_c, &[], &[LOG]);
        // New contacts and events (another seed each round), later in event time than
        // everything before (one second apart on average), so that none of them is late.
        let begin = start_ms + round as i64 * 30 * 86_400_000;
        let start = humantime::format_rfc3339_seconds(
            SystemTime::UNIX_EPOCH + Duration::from_millis(begin as u64),
        )
        .to_string();
        let seed = (12 + round).to_string();
        let mut traffic = stack.gen_seeded_in_background(
            &seed,
            "1000000",
            &["--rate", "200", "--start", &start, "--no-reference-data"],
        );
        wait_until("A and C share the tasks", Duration::from_secs(600), || {
            !tasks_of(&a.log_text()).is_empty()
                && !tasks_of(&c.log_text()).is_empty()
                && metric(&url_a, "leadflow_routed_total", "") > 20.0
                && metric(&url_c, "leadflow_routed_total", "") > 20.0
        });
        if replicas > 0 {
            // C's copies of A's tasks have caught up once C applies only what the live traffic
            // adds (200 events/s, a few changelog records each) for 3 s in a row.
            let mut last = (Instant::now(), 0.0);
            let mut steady_since: Option<Instant> = None;
            wait_until(
                "C's standby copies catch up",
                Duration::from_secs(600),
                || {
                    if last.0.elapsed() < Duration::from_secs(1) {
                        return false;
                    }
                    let now = metric(&url_c, "leadflow_standby_records_total", "");
                    let rate = (now - last.1) / last.0.elapsed().as_secs_f64();
                    last = (Instant::now(), now);
                    if now > 0.0 && rate < 2_000.0 {
                        let since = *steady_since.get_or_insert_with(Instant::now);
                        since.elapsed() >= Duration::from_secs(3)
                    } else {
                        steady_since = None;
                        false
                    }
                },
            );
        }
        let a_tasks = tasks_of(&a.log_text());
        let before = metric(&url_c, "leadflow_restored_records_total", "");
        let killed_at = now_ms();
        let kill = Instant::now();
        a.signal_and_wait(libc::SIGKILL, Duration::from_secs(10));
        let mut first = None;
        wait_until(
            "C routes a lead of one of A's tasks",
            Duration::from_secs(600),
            || {
                first = first_output_after(&stack, &a_tasks, killed_at);
                first.is_some()
            },
        );
        let seen = kill.elapsed().as_secs_f64();
        let first_ms = first.unwrap() - killed_at;
        let restored = metric(&url_c, "leadflow_restored_records_total", "") - before;
        println!(
            "failover, {replicas} standby (kill -9 of A, its tasks {:?} to C, session.timeout.ms=6000): \
             first routed lead of a moved task {:.2} s after the kill; C restored {restored:.0} \
             records for them (seen by the bench after {seen:.1} s)",
            sorted(&a_tasks),
            first_ms as f64 / 1000.0
        );
        traffic.signal_and_wait(libc::SIGKILL, Duration::from_secs(10));
        stop(&mut c);
    }
}

fn sorted(tasks: &HashSet<i32>) -> Vec<i32> {
    let mut v: Vec<i32> = tasks.iter().copied().collect();
    v.sort_unstable();
    v
}

fn stop(proc: &mut common::Proc) {
    let status = proc.signal_and_wait(libc::SIGTERM, Duration::from_secs(60));
    assert!(status.success(), "exit {status:?}:\n{}", proc.log_text());
}

/// The tasks of the last assignment a log reports.
fn tasks_of(log: &str) -> HashSet<i32> {
    log.lines()
        .rfind(|l| l.contains("partitions assigned"))
        .and_then(|l| l.split("tasks=").nth(1))
        .map(|t| {
            t.split_whitespace()
                .next()
                .unwrap_or("")
                .split(',')
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The timestamp of the earliest routed lead written after `after_ms` on a partition of
/// `tasks` (an output keyed by contact lands on its task's partition number).
fn first_output_after(stack: &Stack, tasks: &HashSet<i32>, after_ms: i64) -> Option<i64> {
    ["leads.routed.p0", "leads.routed.p1", "leads.routed.p2"]
        .iter()
        .flat_map(|t| stack.broker.read_all(&stack.topic(t)))
        .filter(|m| tasks.contains(&m.partition()))
        .filter_map(|m| m.timestamp().to_millis())
        .filter(|ts| *ts > after_ms)
        .min()
}
