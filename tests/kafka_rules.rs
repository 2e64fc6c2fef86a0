//! The routing script replaced while `leadflow run` runs on a real broker: a broken file
//! changes nothing (the error is logged with its line and counted), a valid one takes over
//! between two records, and no event is lost or decided twice across the swap.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::stack::{metric, rules, Stack};
use common::wait_until;
use leadflow::route::Rules;
use rdkafka::Message;

/// Waits until the processor has completed every input record on the broker.
fn wait_all_completed(stack: &Stack, url: &str) {
    wait_until(
        "every input record completed",
        Duration::from_secs(60),
        || {
            let inputs = stack.broker.read_all(&stack.topic("crm.contacts.v1")).len()
                + stack
                    .broker
                    .read_all(&stack.topic("crm.engagements.v1"))
                    .len();
            metric(url, "leadflow_record_latency_seconds_count", "") >= inputs as f64
        },
    );
}

#[test]
fn a_broken_rules_file_changes_nothing_and_a_valid_one_takes_over_between_records() {
    let scripts = tempfile::tempdir().unwrap();
    let path = scripts.path().join("routing.rhai");
    let v1 = std::fs::read_to_string(rules("tests/fixtures/route_all.rhai")).unwrap();
    let v2 = v1.replace(r#"queue: "q-" + p"#, r#"queue: "r-" + p"#);
    assert_ne!(v1, v2);
    std::fs::write(&path, &v1).unwrap();
    let (version1, version2) = (Rules::version_of(&v1), Rules::version_of(&v2));
    let stack = Stack::new("reload", path.to_str().unwrap());
    let (mut proc, url) = stack.start();
    stack.gen_seeded("21", "300", "0.0", &[]);
    wait_all_completed(&stack, &url);

    // A syntax error on a known line: nothing changes, the error names the line.
    let broken_line = v1.lines().count() + 2;
    std::fs::write(&path, format!("{v1}\nlet x = ;\n")).unwrap();
    let located = format!("{}:{broken_line}", path.display());
    wait_until(
        "the broken file to be refused",
        Duration::from_secs(30),
        || {
            metric(&url, "leadflow_rules_reload_failures_total", "") == 1.0
                && proc.log_text().contains("rules not reloaded")
        },
    );
    let log = proc.log_text();
    let refusal = log
        .lines()
        .find(|l| l.contains("rules not reloaded"))
        .unwrap();
    assert!(refusal.contains(&located), "{refusal}");
    assert!(
        metric(
            &url,
            "leadflow_rules_info",
            &format!("rule_version=\"{version1}\"")
        ) == 1.0,
        "the running version stays"
    );
    stack.gen_seeded("22", "300", "0.0", &[]);
    wait_all_completed(&stack, &url);
    let before = stack.outputs().decisions;
    assert!(before.len() > 100);
    assert!(before.iter().all(|d| d.rule_version == version1));

    // A valid new version while records flow: it takes over between two records.
    let mut gen = stack.gen_seeded_in_background("23", "600", &["--rate", "150"]);
    wait_until(
        "the third run to be under way",
        Duration::from_secs(30),
        || stack.outputs().decisions.len() > before.len() + 50,
    );
    std::fs::write(&path, &v2).unwrap();
    let status = gen.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "{}", gen.log_text());
    wait_all_completed(&stack, &url);
    assert!(
        proc.log_text().contains("rules reloaded"),
        "{}",
        proc.log_text()
    );

    let decisions = stack.outputs().decisions;
    let mut per_event: HashMap<&str, usize> = HashMap::new();
    for d in &decisions {
        *per_event.entry(d.event_id.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = per_event.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "decided twice: {twice:?}");
    // None lost: every input record was decided or counted as a known reason not to be.
    let inputs = metric(&url, "leadflow_records_in_total", "");
    let undecided = metric(&url, "leadflow_no_decision_total", "");
    assert_eq!(
        decisions.len() as f64 + undecided,
        inputs,
        "decisions + no decision = inputs"
    );
    for d in &decisions {
        assert!(
            (d.rule_version == version1 && d.queue.starts_with("q-"))
                || (d.rule_version == version2 && d.queue.starts_with("r-")),
            "{d:?}"
        );
    }
    let after = decisions
        .iter()
        .filter(|d| d.rule_version == version2)
        .count();
    let late_v1 = decisions.len() - before.len() - after;
    assert!(
        after > 50 && late_v1 > 0,
        "{late_v1} by v1 then {after} by v2"
    );
    // Per output partition (the order its task decided in), once v2, never v1 again.
    for topic in ["leads.routed.p0", "leads.routed.p1", "leads.routed.p2"] {
        let mut seen_v2: BTreeMap<i32, bool> = BTreeMap::new();
        for m in stack.broker.read_all(&stack.topic(topic)) {
            let lead = common::stack::routed_lead(&m);
            let v2_seen = seen_v2.entry(m.partition()).or_default();
            if lead.rule_version == version2 {
                *v2_seen = true;
            } else {
                assert!(
                    !*v2_seen,
                    "{topic}[{}]: v1 after v2 at {}",
                    m.partition(),
                    m.offset()
                );
            }
        }
    }
    assert_eq!(
        metric(
            &url,
            "leadflow_rules_info",
            &format!("rule_version=\"{version2}\"")
        ),
        1.0
    );
    assert_eq!(
        metric(
            &url,
            "leadflow_rules_info",
            &format!("rule_version=\"{version1}\"")
        ),
        0.0
    );
    let status = proc.signal_and_wait(libc::SIGTERM, Duration::from_secs(40));
    assert!(status.success(), "{}", proc.log_text());
}

/// A shadow script that moves EMEA's P1 leads to P0, beside the shipped one: the shadow diff
/// holds exactly the events the live script routed P1 in EMEA, each once, as `P1->P0`, and
/// nothing of the shadow's decisions reaches the priority topics.
#[test]
fn a_shadow_script_reports_exactly_the_leads_it_would_route_otherwise() {
    let scripts = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(rules("rules/routing.rhai")).unwrap();
    assert!(shipped.contains("fn route(lead) {"));
    let candidate = shipped.replace("fn route(lead) {", "fn route_live(lead) {")
        + r#"
fn route(lead) {
    let d = route_live(lead);
    if d != () && d.priority == "P1" && lead.region == "EMEA" {
        d.priority = "P0";
        d.reasons.push("candidate: EMEA P1 leads are P0");
    }
    d
}
"#;
    let path = scripts.path().join("candidate.rhai");
    std::fs::write(&path, &candidate).unwrap();
    let stack = Stack::new("shadow", &rules("rules/routing.rhai"));
    let yaml = std::fs::read_to_string(&stack.topology).unwrap().replace(
        "# rules_shadow: rules/candidate.rhai",
        &format!("rules_shadow: {}", path.display()),
    );
    assert!(yaml.contains("rules_shadow: /"), "{yaml}");
    std::fs::write(&stack.topology, yaml).unwrap();
    let (mut proc, url) = stack.start();
    stack.gen_seeded("31", "2000", "0.0", &[]);
    wait_all_completed(&stack, &url);

    let decisions = stack.outputs().decisions;
    let live_version = Rules::version_of(&shipped);
    assert!(decisions.iter().all(|d| d.rule_version == live_version));
    let mut expected: Vec<&str> = decisions
        .iter()
        .filter(|d| d.priority == "P1" && d.region.as_deref() == Some("EMEA"))
        .map(|d| d.event_id.as_str())
        .collect();
    assert!(expected.len() >= 5, "{} EMEA P1 leads", expected.len());
    let diffs: Vec<leadflow::model::ShadowDiff> = stack
        .broker
        .read_all(&stack.topic("leads.shadow.diff"))
        .iter()
        .map(|m| {
            leadflow::codec::decode(
                leadflow::codec::canonical().get(leadflow::codec::SchemaKind::ShadowDiff),
                leadflow::codec::SchemaKind::ShadowDiff,
                &m.payload().unwrap()[5..],
            )
            .unwrap()
        })
        .collect();
    let mut got: Vec<&str> = diffs.iter().map(|d| d.event_id.as_str()).collect();
    expected.sort_unstable();
    got.sort_unstable();
    assert_eq!(got, expected, "the diff is exactly the EMEA P1 leads");
    for d in &diffs {
        assert_eq!(d.transition, "P1->P0", "{d:?}");
        assert_eq!(d.live.rule_version, live_version);
        assert_eq!(d.shadow.rule_version, Rules::version_of(&candidate));
        assert_eq!(d.live.queue, d.shadow.queue);
        assert!(d.shadow.reasons.iter().any(|r| r.contains("candidate")));
    }
    assert_eq!(
        metric(&url, "leadflow_shadow_diffs_total", "transition=\"P1->P0\""),
        diffs.len() as f64
    );
    assert_eq!(
        metric(&url, "leadflow_shadow_diffs_total", ""),
        diffs.len() as f64
    );
    let status = proc.signal_and_wait(libc::SIGTERM, Duration::from_secs(40));
    assert!(status.success(), "{}", proc.log_text());
}
