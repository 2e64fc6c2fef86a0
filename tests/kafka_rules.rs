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

/// The shipped script, except that EMEA's P1 leads are P0: the known change of the shadow and
/// backtest tests.
fn emea_p1_to_p0(shipped: &str) -> String {
    assert!(shipped.contains("fn route(lead) {"));
    shipped.replace("fn route(lead) {", "fn route_live(lead) {")
        + r#"
fn route(lead) {
    let d = route_live(lead);
    if d != () && d.priority == "P1" && lead.region == "EMEA" {
        d.priority = "P0";
        d.reasons.push("candidate: EMEA P1 leads are P0");
    }
    d
}
"#
}

/// A shadow script that moves EMEA's P1 leads to P0, beside the shipped one: the shadow diff
/// holds exactly the events the live script routed P1 in EMEA, each once, as `P1->P0`, and
/// nothing of the shadow's decisions reaches the priority topics.
#[test]
fn a_shadow_script_reports_exactly_the_leads_it_would_route_otherwise() {
    let scripts = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(rules("rules/routing.rhai")).unwrap();
    let candidate = emea_p1_to_p0(&shipped);
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

/// With `outputs.audit`, every event that reached routing has one audit record: each decision
/// (same priority, queue and decision_id), each "no decision" and unknown contact, each script
/// failure (as on the DLQ), with the lead as the script saw it and a trace; `leadflow explain`
/// prints a contact's records from its partition.
#[test]
fn every_evaluated_event_is_audited_and_explain_prints_a_contacts_trail() {
    let scripts = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(rules("rules/routing.rhai")).unwrap();
    // The shipped rules, but a script error for contacts whose id ends in 7.
    let script = shipped.replace("fn route(lead) {", "fn route_shipped(lead) {")
        + r#"
fn route(lead) {
    if lead.contact_id.ends_with("7") {
        throw "contacts ending in 7 are not routed today";
    }
    route_shipped(lead)
}
"#;
    let path = scripts.path().join("routing.rhai");
    std::fs::write(&path, &script).unwrap();
    let stack = Stack::new("audit", path.to_str().unwrap());
    let audit_topic = stack.topic("leads.audit");
    let yaml = std::fs::read_to_string(&stack.topology).unwrap().replace(
        &format!("# audit: {audit_topic}"),
        &format!("audit: {audit_topic}"),
    );
    assert!(
        yaml.contains(&format!("\n  audit: {audit_topic}\n")),
        "{yaml}"
    );
    std::fs::write(&stack.topology, yaml).unwrap();
    let (mut proc, url) = stack.start();
    stack.gen_seeded("41", "1500", "0.0", &[]);
    wait_all_completed(&stack, &url);

    let audits: Vec<(String, leadflow::model::LeadAudit)> = stack
        .broker
        .read_all(&audit_topic)
        .iter()
        .map(|m| {
            let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
            let audit = leadflow::codec::decode(
                leadflow::codec::canonical().get(leadflow::codec::SchemaKind::LeadAudit),
                leadflow::codec::SchemaKind::LeadAudit,
                &m.payload().unwrap()[5..],
            )
            .unwrap();
            (key, audit)
        })
        .collect();
    let outputs = stack.outputs();
    let count = |outcome: &str| audits.iter().filter(|(_, a)| a.outcome == outcome).count();
    let failed_ids: Vec<String> = outputs
        .dlq
        .iter()
        .filter(|m| common::header(m, "error.class").as_deref() == Some("script_error"))
        .filter_map(|m| common::stack::dlq_event_id(&stack, m))
        .collect();
    assert!(failed_ids.len() >= 5, "{} script errors", failed_ids.len());
    assert_eq!(count("routed"), outputs.decisions.len());
    assert_eq!(count("script_error"), failed_ids.len());
    let none = metric(
        &url,
        "leadflow_no_decision_total",
        "reason=\"script_returned_unit\"",
    );
    let unknown = metric(
        &url,
        "leadflow_no_decision_total",
        "reason=\"unknown_contact\"",
    );
    assert!(unknown >= 1.0, "gen sends engagements of unknown contacts");
    assert_eq!(count("none") as f64, none);
    assert_eq!(count("unknown_contact") as f64, unknown);
    assert_eq!(
        audits.len(),
        outputs.decisions.len() + failed_ids.len() + (none + unknown) as usize,
        "nothing else is audited"
    );

    // One record per event, keyed by its contact, agreeing with what was emitted.
    let by_event: HashMap<&str, &leadflow::model::LeadAudit> = audits
        .iter()
        .map(|(_, a)| (a.event_id.as_str(), a))
        .collect();
    assert_eq!(by_event.len(), audits.len(), "each event audited once");
    for (key, a) in &audits {
        assert_eq!(key, &a.contact_id);
        assert_eq!(a.rule_version, Rules::version_of(&script));
        if a.outcome == "unknown_contact" {
            assert!(a.lead.is_none() && a.trace.is_empty(), "{a:?}");
            continue;
        }
        let lead: serde_json::Value = serde_json::from_str(a.lead.as_deref().unwrap()).unwrap();
        assert_eq!(lead["contact_id"], a.contact_id.as_str());
        assert_eq!(lead["score"].as_i64().map(|s| s as i32), a.score);
        assert!(!a.trace.is_empty(), "every evaluation runs an if: {a:?}");
        assert!(
            a.trace.iter().all(|s| s.kind != "if" || s.taken.is_some()),
            "{a:?}"
        );
        // `score` runs first; the first thing `route` does is the contact-id check.
        assert_eq!(a.trace[0].function, "score", "{a:?}");
        let first = a.trace.iter().find(|s| s.function == "route").unwrap();
        assert_eq!(
            (
                first.function.as_str(),
                first.kind.as_str(),
                first.detail.as_str()
            ),
            ("route", "if", "lead.contact_id.ends_with(\"7\")")
        );
        assert_eq!(first.taken, Some(a.contact_id.ends_with('7')), "{a:?}");
    }
    for d in &outputs.decisions {
        let a = by_event[d.event_id.as_str()];
        assert_eq!(a.outcome, "routed");
        assert_eq!(a.decision_id.as_deref(), Some(d.decision_id.as_str()));
        assert_eq!(a.priority.as_deref(), Some(d.priority.as_str()));
        assert_eq!(a.queue.as_deref(), Some(d.queue.as_str()));
        assert_eq!(a.owner_rep_id, d.owner_rep_id);
        assert_eq!(a.reasons, d.reasons);
        assert!(a
            .trace
            .iter()
            .any(|s| s.kind == "call" && s.detail == "route_shipped"));
    }
    for id in &failed_ids {
        let a = by_event[id.as_str()];
        assert_eq!(a.outcome, "script_error");
        assert!(
            a.error.as_deref().unwrap().contains("threw an error"),
            "{a:?}"
        );
    }

    // `leadflow explain` of the contact with the most records prints all of them, in order.
    let mut per_contact: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (key, a) in &audits {
        per_contact
            .entry(key)
            .or_default()
            .push(a.event_id.as_str());
    }
    let (contact, events) = per_contact.iter().max_by_key(|(_, e)| e.len()).unwrap();
    assert!(events.len() >= 3, "{contact}: {events:?}");
    let topology = stack.topology.to_str().unwrap();
    let explain = |extra: &[&str]| {
        let args = [&["explain", contact, "--topology", topology][..], extra].concat();
        stack.command_output(&args)
    };
    let text = explain(&[]);
    assert!(
        text.starts_with(&format!(
            "contact {contact}: {} audit record(s) on {audit_topic}",
            events.len()
        )),
        "{text}"
    );
    let mut at = 0;
    for event in events {
        at += text[at..]
            .find(event)
            .unwrap_or_else(|| panic!("{event} in order in:\n{text}"));
    }
    assert!(text.contains("what fired:"), "{text}");
    let json = explain(&["--json", "--last", "2"]);
    let last: Vec<leadflow::model::LeadAudit> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let want: Vec<&str> = events[events.len() - 2..].to_vec();
    assert_eq!(
        last.iter().map(|a| a.event_id.as_str()).collect::<Vec<_>>(),
        want
    );

    let status = proc.signal_and_wait(libc::SIGTERM, Duration::from_secs(40));
    assert!(status.success(), "{}", proc.log_text());
}

/// `leadflow rules backtest` of the EMEA change against the shipped script, on traffic the
/// processor routed: the current script's mix is the processor's, and the only transitions
/// are P1->P0, exactly the EMEA P1 leads the processor routed. Nothing is written to Kafka.
#[test]
fn a_backtest_of_a_known_change_names_exactly_the_leads_it_moves() {
    let scripts = tempfile::tempdir().unwrap();
    let shipped = rules("rules/routing.rhai");
    let candidate = scripts.path().join("candidate.rhai");
    std::fs::write(
        &candidate,
        emea_p1_to_p0(&std::fs::read_to_string(&shipped).unwrap()),
    )
    .unwrap();
    let stack = Stack::new("backtest", &shipped);
    // All the traffic is on the broker before the processor starts, so that it takes each
    // task's records in the order a replay does.
    stack.gen_seeded("51", "2000", "0.0", &[]);
    let (mut proc, url) = stack.start();
    wait_all_completed(&stack, &url);
    let decisions = stack.outputs().decisions;
    let status = proc.signal_and_wait(libc::SIGTERM, Duration::from_secs(40));
    assert!(status.success(), "{}", proc.log_text());
    let outputs_now = || -> Vec<usize> {
        [
            "leads.routed.p0",
            "leads.routed.p1",
            "leads.routed.p2",
            "leads.dlq",
        ]
        .iter()
        .map(|t| stack.broker.read_all(&stack.topic(t)).len())
        .collect()
    };
    let outputs_before = outputs_now();

    // `rules backtest` of the candidate against the shipped script, its stdout.
    let (candidate, topology) = (
        candidate.to_str().unwrap(),
        stack.topology.to_str().unwrap(),
    );
    let backtest = |since: &str, extra: &[&str]| -> String {
        let args = [
            "rules",
            "backtest",
            candidate,
            "--against",
            &shipped,
            "--since",
            since,
        ];
        let args = [&args[..], &["--topology", topology, "--quiet"], extra].concat();
        stack.command_output(&args)
    };
    let json = |since: &str| -> serde_json::Value {
        serde_json::from_str(&backtest(since, &["--json", "--examples", "100000"])).unwrap()
    };
    let report = json("2000-01-01");
    let inputs = stack.broker.read_all(&stack.topic("crm.contacts.v1")).len()
        + stack
            .broker
            .read_all(&stack.topic("crm.engagements.v1"))
            .len();
    assert_eq!(report["records"], inputs as u64);
    assert_eq!(report["counted"], inputs as u64);
    let outcomes = |side: &str, key: &str| report[side]["outcomes"][key].as_u64().unwrap_or(0);
    for p in ["P0", "P1", "P2"] {
        let live = decisions.iter().filter(|d| d.priority == p).count() as u64;
        assert_eq!(outcomes("current", p), live, "{p}: {report:#}");
    }
    let mut expected: Vec<String> = decisions
        .iter()
        .filter(|d| d.priority == "P1" && d.region.as_deref() == Some("EMEA"))
        .map(|d| d.event_id.clone())
        .collect();
    assert!(expected.len() >= 5, "{} EMEA P1 leads", expected.len());
    let transitions = report["transitions"].as_object().unwrap();
    assert_eq!(
        transitions.keys().collect::<Vec<_>>(),
        ["P1->P0"],
        "{report:#}"
    );
    assert_eq!(transitions["P1->P0"], expected.len() as u64);
    let mut got: Vec<String> = report["examples"]["P1->P0"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect();
    expected.sort_unstable();
    got.sort_unstable();
    assert_eq!(
        got, expected,
        "the transitions are exactly the EMEA P1 leads"
    );
    let n = expected.len() as u64;
    assert_eq!(outcomes("candidate", "P0"), outcomes("current", "P0") + n);
    assert_eq!(outcomes("candidate", "P1"), outcomes("current", "P1") - n);
    let queues = |side: &str| report[side]["queues"].clone();
    assert_eq!(
        queues("current"),
        queues("candidate"),
        "the change keeps the queues"
    );

    // Events before --since build state but are not counted.
    let later = json("2999-01-01");
    assert_eq!(later["records"], inputs as u64);
    assert_eq!(later["counted"], 0);

    // The text form names the transition; nothing was written to the output topics.
    let text = backtest("2000-01-01", &[]);
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("P1->P0"))
        .unwrap_or_else(|| panic!("no P1->P0 line in:\n{text}"));
    assert_eq!(
        line.split_whitespace().nth(1),
        Some(n.to_string().as_str()),
        "{line}"
    );
    assert!(text.contains("decisions per queue:"), "{text}");
    assert_eq!(
        outputs_now(),
        outputs_before,
        "nothing written to the outputs"
    );
}
