//! State follows its tasks: every committed state change goes to the changelogs, and a task
//! assigned to an instance is restored from them before it processes a record: in full into
//! an instance that has no state, only the tail into a former owner whose checkpoint is good.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::stack::{metric, rules, Stack, StackOptions};
use common::wait_until;
use leadflow::enrich::contact::ContactState;
use leadflow::state::{Cf, StateStore};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::Message;

/// Every per-partition store of a stopped instance: (store, key) → value.
fn dump(state_dir: &Path, application_id: &str) -> BTreeMap<(&'static str, Vec<u8>), Vec<u8>> {
    let store = StateStore::open(
        &state_dir.join(application_id),
        Duration::from_secs(7 * 86400),
    )
    .expect("the state store opens");
    let mut out = BTreeMap::new();
    for cf in [Cf::Contact, Cf::Dedup, Cf::Task] {
        for (k, v) in store.entries(cf).unwrap() {
            out.insert((cf.name(), k), v);
        }
    }
    out
}

fn count(dump: &BTreeMap<(&'static str, Vec<u8>), Vec<u8>>, store: &str) -> usize {
    dump.keys().filter(|(s, _)| *s == store).count()
}

/// Waits until the processor has restored `tasks` tasks.
fn wait_restored(metrics_url: &str, tasks: usize) {
    wait_until("every task restored", Duration::from_secs(60), || {
        metric(metrics_url, "leadflow_restore_seconds_count", "") >= tasks as f64
    });
}

fn wait_completed(metrics_url: &str, n: usize) {
    wait_until(
        "the input records completed",
        Duration::from_secs(120),
        || metric(metrics_url, "leadflow_record_latency_seconds_count", "") >= n as f64,
    );
}

fn stop(proc: &mut common::Proc) {
    let status = proc.signal_and_wait(libc::SIGTERM, Duration::from_secs(40));
    assert!(status.success(), "exit {status:?}:\n{}", proc.log_text());
}

/// Lines of the processor's log that report a restored task.
fn restore_lines(proc: &common::Proc) -> Vec<String> {
    proc.log_text()
        .lines()
        .filter(|l| l.contains("task restored from its changelogs"))
        .map(str::to_string)
        .collect()
}

#[test]
fn state_moves_with_its_tasks_through_the_changelogs() {
    const TASKS: usize = 4;
    let stack = Stack::with(
        "state",
        &rules("tests/fixtures/route_all.rhai"),
        StackOptions {
            partitions: TASKS as u32,
            ..StackOptions::default()
        },
    );
    let app = stack.application_id();
    let (dir_a, dir_b) = (stack.dir.path().join("a"), stack.dir.path().join("b"));

    // 1. Instance A processes the first traffic on its own.
    stack.gen("1200", "0.05");
    let contacts = stack.broker.read_all(&stack.topic("crm.contacts.v1"));
    let engagements = stack.broker.read_all(&stack.topic("crm.engagements.v1"));
    let first = contacts.len() + engagements.len();
    let (mut a, url) = stack.start_in(&dir_a, &[], &[]);
    wait_restored(&url, TASKS);
    wait_completed(&url, first);
    stop(&mut a);
    let after_first = dump(&dir_a, &app);
    assert!(count(&after_first, "contact") > 100, "A kept no contacts");
    let marks: usize = after_first
        .iter()
        .filter(|((store, _), _)| *store == "contact")
        .map(|(_, v)| {
            ContactState::from_bytes(v)
                .expect("a contact record")
                .seen
                .kept()
        })
        .sum();
    assert!(
        marks > 100,
        "only {marks} de-duplication marks in contact records"
    );
    assert_eq!(count(&after_first, "task"), TASKS);
    let decisions = stack.outputs().decisions.len();

    // 2. Instance B, with no state at all, takes every task: its state is A's, so events A
    //    processed and now sent again are duplicates, not new decisions.
    let (mut b, url) = stack.start_in(&dir_b, &[], &[]);
    wait_restored(&url, TASKS);
    let resent: Vec<_> = contacts
        .iter()
        .step_by(4)
        .chain(engagements.iter().step_by(4))
        .collect();
    let producer: ThreadedProducer<DefaultProducerContext> =
        stack.broker.client().create().unwrap();
    for m in &resent {
        let record = BaseRecord::to(m.topic())
            .partition(m.partition())
            .key(m.key().unwrap())
            .payload(m.payload().unwrap());
        producer.send(record).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    wait_completed(&url, resent.len());
    assert_eq!(
        metric(&url, "leadflow_duplicates_total", ""),
        resent.len() as f64,
        "a re-sent event was not recognised: its de-duplication mark was not restored"
    );
    stop(&mut b);
    assert!(
        restore_lines(&b).iter().all(|l| l.contains("wiped=[\"")),
        "B had no checkpoints, so it wipes and restores in full:\n{}",
        restore_lines(&b).join("\n")
    );
    assert_eq!(
        stack.outputs().decisions.len(),
        decisions,
        "re-sent events routed again"
    );
    assert!(
        dump(&dir_b, &app) == after_first,
        "B's restored state differs from A's"
    );

    // 3. B goes on with new contacts and events...
    let (mut b, url) = stack.start_in(&dir_b, &[], &[]);
    wait_restored(&url, TASKS);
    stack.gen_seeded(
        "12",
        "600",
        "0.0",
        &["--start", "2026-01-05T12:00:00Z", "--no-reference-data"],
    );
    let second = stack.broker.read_all(&stack.topic("crm.contacts.v1")).len()
        + stack
            .broker
            .read_all(&stack.topic("crm.engagements.v1"))
            .len()
        - first
        - resent.len();
    wait_completed(&url, second);
    stop(&mut b);
    let after_second = dump(&dir_b, &app);
    assert!(count(&after_second, "contact") > count(&after_first, "contact"));

    // 4. ...and the tasks come back to A, whose checkpoints are good: it reads only what B
    //    wrote since, and ends with B's state.
    let (mut a, url) = stack.start_in(&dir_a, &[], &[]);
    wait_restored(&url, TASKS);
    let tail = metric(&url, "leadflow_restored_records_total", "");
    stop(&mut a);
    let lines = restore_lines(&a);
    assert!(
        lines.iter().all(|l| l.contains("wiped=[]")),
        "A wiped a task it had a good checkpoint for:\n{}",
        lines.join("\n")
    );
    assert!(tail > 0.0, "A restored nothing of what B wrote");
    assert!(
        dump(&dir_a, &app) == after_second,
        "A's state after restoring the tail differs from B's"
    );
}

/// `leadflow reset` refuses while an instance runs and without confirmation; then the
/// group starts over: every input is processed again from empty state, and with the same
/// rules every decision comes again with its decision_id.
#[test]
fn reset_makes_the_application_process_everything_again() {
    let stack = Stack::with(
        "reset",
        &rules("tests/fixtures/route_all.rhai"),
        StackOptions {
            partitions: 2,
            ..StackOptions::default()
        },
    );
    let app = stack.application_id();
    let dir = stack.dir.path().join("a");
    stack.gen("300", "0.0");
    let inputs = stack.broker.read_all(&stack.topic("crm.contacts.v1")).len()
        + stack
            .broker
            .read_all(&stack.topic("crm.engagements.v1"))
            .len();
    let (mut a, url) = stack.start_in(&dir, &[], &[]);
    wait_completed(&url, inputs);
    let topology = stack.topology.display().to_string();
    let state_dir = dir.display().to_string();
    let reset = |extra: &[&str]| {
        let mut args = vec![
            "reset",
            "--topology",
            &topology,
            "--bootstrap-servers",
            &stack.bootstrap,
            "--state-dir",
            &state_dir,
        ];
        args.extend_from_slice(extra);
        common::stack::leadflow(&args)
    };
    let (ok, _, err) = reset(&["--yes"]);
    assert!(!ok, "reset went ahead while an instance runs");
    assert!(err.contains("active member"), "{err}");
    stop(&mut a);
    let first: Vec<String> = stack
        .outputs()
        .decisions
        .into_iter()
        .map(|d| d.decision_id)
        .collect();
    assert!(first.len() > 100, "only {} decisions", first.len());

    // No terminal and no --yes: nothing changes.
    let (ok, _, err) = reset(&[]);
    assert!(!ok);
    assert!(err.contains("pass --yes"), "{err}");
    assert!(dir.join(&app).exists());

    let (ok, out, err) = reset(&["--yes"]);
    assert!(ok, "{err}\n{out}");
    for store in ["contact", "dedup", "task"] {
        assert!(
            out.contains(&format!(
                "delete the changelog topic {app}-{store}-changelog"
            )),
            "{out}"
        );
    }
    assert!(!dir.join(&app).exists(), "the local state is still there");
    let consumer: rdkafka::consumer::BaseConsumer = stack.broker.client().create().unwrap();
    let changelog = format!("{app}-contact-changelog");
    let gone = leadflow::kafka::read::partitions(&consumer, &changelog).unwrap();
    assert!(gone.is_empty(), "{changelog} still exists");

    let (mut a, url) = stack.start_in(&dir, &[], &[]);
    wait_completed(&url, inputs);
    assert_eq!(
        metric(&url, "leadflow_duplicates_total", ""),
        0.0,
        "de-duplication marks survived the reset"
    );
    stop(&mut a);
    let mut all: Vec<String> = stack
        .outputs()
        .decisions
        .into_iter()
        .map(|d| d.decision_id)
        .collect();
    let mut twice: Vec<String> = first.iter().chain(&first).cloned().collect();
    all.sort();
    twice.sort();
    assert!(
        all == twice,
        "the second run did not decide every event again, alike"
    );
}
