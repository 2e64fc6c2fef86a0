//! Unit tests of the sandbox: compile checks, the `lead` map, result validation, budgets.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::model::{Account, Contact};
use crate::route::lead::{EngagementStats, Lead, PreviousDecision, Priority, ScriptFailure};

fn contact() -> Contact {
    Contact {
        contact_id: "c_1".into(),
        email: Some("ada@example.com".into()),
        phone: None,
        first_name: Some("Ada".into()),
        last_name: Some("Lovelace".into()),
        title: Some("VP Engineering".into()),
        company_name: Some("Acme Inc".into()),
        company_domain: Some("acme.com".into()),
        country: Some("GB".into()),
        region: Some("EMEA".into()),
        lifecycle_stage: Some("mql".into()),
        lead_source: None,
        product_interest: None,
        consent_marketing: true,
        attributes: BTreeMap::from([("plan".to_string(), "trial".to_string())]),
        updated_at: 1_000,
    }
}

fn lead() -> Lead {
    Lead {
        contact: contact(),
        event_type: "Contact.updated".into(),
        source: "hubspot:acme".into(),
        occurred_at: 2_000,
        score: 42,
        account: None,
        engagement: EngagementStats::default(),
        previous: None,
    }
}

fn rules(source: &str) -> Rules {
    Rules::compile("test.rhai", source, &ScriptLimits::default()).expect("compiles")
}

fn compile_err(source: &str) -> CompileError {
    Rules::compile("test.rhai", source, &ScriptLimits::default()).expect_err("must not compile")
}

const P2: &str = r#"#{ priority: "P2", queue: "inside-sales" }"#;

fn route_returning(expr: &str) -> Rules {
    rules(&format!("fn route(lead) {{ {expr} }}"))
}

#[test]
fn rules_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Rules>();
}

#[test]
fn minimal_decision_uses_default_score() {
    let r = route_returning(P2);
    assert!(!r.has_score());
    assert_eq!(r.version().len(), 16);
    assert!(r.version().chars().all(|c| c.is_ascii_hexdigit()));
    let d = r.evaluate(&lead()).unwrap().unwrap();
    assert_eq!(d.priority, Priority::P2);
    assert_eq!(d.queue, "inside-sales");
    assert_eq!(d.owner, None);
    assert!(d.reasons.is_empty());
    assert_eq!(d.score, 42);
}

#[test]
fn version_is_the_script_hash() {
    let a = route_returning(P2);
    let b = route_returning(P2);
    let c = route_returning(r#"#{ priority: "P1", queue: "inside-sales" }"#);
    assert_eq!(a.version(), b.version());
    assert_ne!(a.version(), c.version());
}

#[test]
fn unit_means_no_decision() {
    assert_eq!(route_returning("()").evaluate(&lead()), Ok(None));
}

#[test]
fn full_decision_with_owner_and_reasons() {
    let r = route_returning(
        r#"#{ priority: "P0", queue: "enterprise-emea", owner: "rep_7", reasons: ["big", "hot"] }"#,
    );
    let d = r.evaluate(&lead()).unwrap().unwrap();
    assert_eq!(d.priority, Priority::P0);
    assert_eq!(d.owner.as_deref(), Some("rep_7"));
    assert_eq!(d.reasons, vec!["big", "hot"]);
}

#[test]
fn score_runs_first_and_replaces_lead_score() {
    let r = rules(
        r#"
        fn score(lead) { lead.score + 10 }
        fn route(lead) { #{ priority: "P1", queue: "q", reasons: [`score ${lead.score}`] } }
        "#,
    );
    assert!(r.has_score());
    let d = r.evaluate(&lead()).unwrap().unwrap();
    assert_eq!(d.score, 52);
    assert_eq!(d.reasons, vec!["score 52"]);
}

#[test]
fn score_must_be_a_whole_number_from_0_to_100() {
    for (body, needle) in [
        ("101", "returned 101"),
        ("-1", "returned -1"),
        ("50.5", "decimal number"),
        (r#""high""#, "a string"),
        ("()", "returned ()"),
    ] {
        let r = rules(&format!(
            "fn score(lead) {{ {body} }} fn route(lead) {{ {P2} }}"
        ));
        match r.evaluate(&lead()) {
            Err(ScriptFailure::InvalidDecision(m)) => assert!(m.contains(needle), "{body}: {m}"),
            other => panic!("{body}: {other:?}"),
        }
    }
}

#[test]
fn lead_map_has_every_field() {
    let r = route_returning(
        r#"
        let checks = [
            lead.contact_id == "c_1", lead.email == "ada@example.com", lead.phone == (),
            lead.first_name == "Ada", lead.last_name == "Lovelace", lead.title == "VP Engineering",
            lead.company_name == "Acme Inc", lead.company_domain == "acme.com",
            lead.country == "GB", lead.region == "EMEA", lead.lifecycle_stage == "mql",
            lead.lead_source == (), lead.product_interest == (), lead.consent_marketing == true,
            lead.attributes.plan == "trial", lead.updated_at == 1000,
            lead.event_type == "Contact.updated", lead.source == "hubspot:acme",
            lead.occurred_at == 2000, lead.score == 42,
            lead.account.account_id == "acc_1", lead.account.domain == "acme.com",
            lead.account.name == "Acme Inc", lead.account.employees == 12000,
            lead.account.annual_revenue == 2.5e9, lead.account.industry == (),
            lead.account.region == "EMEA", lead.account.tier == "enterprise",
            lead.account.owner_rep_id == "rep_7", lead.account.updated_at == 500,
            lead.engagement.count_24h == 3, lead.engagement.count_7d == 9,
            lead.engagement.pricing_views_7d == 2, lead.engagement.demo_requested == true,
            lead.engagement.last_type == "demo_request", lead.engagement.last_at == 1900,
            lead.previous.decision_id == "d_0", lead.previous.event_id == "e_0",
            lead.previous.priority == "P2", lead.previous.queue == "inside-sales",
            lead.previous.owner == (), lead.previous.score == 30,
            lead.previous.routed_at == 1500, lead.previous.rule_version == "abc",
            lead.owner_rep == (), lead.len() == 24,
        ];
        let failed = [];
        for (ok, i) in checks { if !ok { failed.push(`check ${i}`); } }
        #{ priority: "P2", queue: "q", reasons: failed }
        "#,
    );
    let mut l = lead();
    l.account = Some(Account {
        account_id: "acc_1".into(),
        domain: "acme.com".into(),
        name: "Acme Inc".into(),
        employees: Some(12_000),
        annual_revenue: Some(2.5e9),
        industry: None,
        region: Some("EMEA".into()),
        tier: Some("enterprise".into()),
        owner_rep_id: Some("rep_7".into()),
        updated_at: 500,
    });
    l.engagement = EngagementStats {
        count_24h: 3,
        count_7d: 9,
        pricing_views_7d: 2,
        demo_requested: true,
        last_type: Some("demo_request".into()),
        last_at: Some(1_900),
    };
    l.previous = Some(PreviousDecision {
        decision_id: "d_0".into(),
        event_id: "e_0".into(),
        priority: Priority::P2,
        queue: "inside-sales".into(),
        owner: None,
        score: 30,
        routed_at: 1_500,
        rule_version: "abc".into(),
    });
    let d = r.evaluate(&l).unwrap().unwrap();
    assert!(d.reasons.is_empty(), "failed checks: {:?}", d.reasons);
}

#[test]
fn absent_account_and_previous_are_unit() {
    let r = route_returning(
        r#"if lead.account == () && lead.previous == () && lead.account?.tier == () { () } else { "no" }"#,
    );
    assert_eq!(r.evaluate(&lead()), Ok(None));
}

#[test]
fn invalid_decisions_say_what_is_wrong_without_values() {
    let cases = [
        (r#""P1""#, "returned a string"),
        ("42", "returned a whole number"),
        ("[1]", "returned a list"),
        (r#"#{ priority: "P1" }"#, "no `queue`"),
        (r#"#{ queue: "q" }"#, "no `priority`"),
        (r#"#{ priority: "P3", queue: "q" }"#, "`P3`"),
        (r#"#{ priority: 1, queue: "q" }"#, "a whole number"),
        (r#"#{ priority: "P1", queue: "" }"#, "empty"),
        (
            r#"#{ priority: "P1", queue: 7 }"#,
            "`queue` must be a string",
        ),
        (r#"#{ priority: "P1", queue: "q", owner: 7 }"#, "`owner`"),
        (
            r#"#{ priority: "P1", queue: "q", reasons: "hot" }"#,
            "`reasons` must be a list",
        ),
        (
            r#"#{ priority: "P1", queue: "q", reasons: ["a", 2] }"#,
            "`reasons[1]`",
        ),
        (
            r#"#{ priority: "P1", queue: "q", prio: "P0" }"#,
            "unknown key `prio`",
        ),
        (r#"#{ priority: lead.email, queue: "q" }"#, "not shown"),
    ];
    for (expr, needle) in cases {
        match route_returning(expr).evaluate(&lead()) {
            Err(ScriptFailure::InvalidDecision(m)) => {
                assert!(m.contains(needle), "{expr}: {m}");
                assert!(!m.contains("ada@"), "{expr}: leaks the email: {m}");
            }
            other => panic!("{expr}: {other:?}"),
        }
    }
}

#[test]
fn empty_owner_means_no_owner() {
    let r = route_returning(r#"#{ priority: "P1", queue: "q", owner: "" }"#);
    assert_eq!(r.evaluate(&lead()).unwrap().unwrap().owner, None);
}

#[test]
fn endless_loop_times_out_quickly_and_rules_stay_usable() {
    let r = rules(&format!(
        "fn route(lead) {{ if lead.title == \"loop\" {{ loop {{}} }} {P2} }}"
    ));
    let mut looping = lead();
    looping.contact.title = Some("loop".into());
    let start = Instant::now();
    let result = r.evaluate(&looping);
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "{:?}",
        start.elapsed()
    );
    match result {
        Err(e @ ScriptFailure::Timeout(_)) => assert_eq!(e.class(), "script_timeout"),
        other => panic!("{other:?}"),
    }
    assert!(r.evaluate(&lead()).unwrap().is_some());
}

#[test]
fn wall_clock_budget_stops_a_loop_without_operation_limit() {
    let limits = ScriptLimits {
        max_operations: 0,
        timeout: Duration::from_millis(30),
        ..ScriptLimits::default()
    };
    let r = Rules::compile("t.rhai", "fn route(lead) { loop { let x = 1; } }", &limits).unwrap();
    let start = Instant::now();
    match r.evaluate(&lead()) {
        Err(ScriptFailure::Timeout(m)) => assert!(m.contains("time budget"), "{m}"),
        other => panic!("{other:?}"),
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(30) && took < Duration::from_millis(500),
        "{took:?}"
    );
}

#[test]
fn deadlines_are_per_thread() {
    let r = Arc::new(rules(&format!(
        "fn route(lead) {{ if lead.title == \"loop\" {{ loop {{}} }} {P2} }}"
    )));
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let r = Arc::clone(&r);
            std::thread::spawn(move || {
                let mut l = lead();
                if i % 2 == 0 {
                    l.contact.title = Some("loop".into());
                }
                (0..20).all(|_| match r.evaluate(&l) {
                    Err(ScriptFailure::Timeout(_)) => i % 2 == 0,
                    Ok(Some(_)) => i % 2 == 1,
                    _ => false,
                })
            })
        })
        .collect();
    for t in threads {
        assert!(t.join().unwrap());
    }
}

#[test]
fn runtime_errors_name_the_line_but_not_the_data() {
    let r = rules("fn route(lead) {\n  let n = 1;\n  n / 0\n}");
    match r.evaluate(&lead()) {
        Err(e @ ScriptFailure::Error(_)) => {
            assert_eq!(e.class(), "script_error");
            let m = e.to_string();
            assert!(
                m.contains("Division by zero") && m.contains("line 3"),
                "{m}"
            );
        }
        other => panic!("{other:?}"),
    }

    let r = rules("fn helper(lead) {\n  throw lead.email;\n}\nfn route(lead) { helper(lead) }");
    match r.evaluate(&lead()) {
        Err(ScriptFailure::Error(m)) => {
            assert!(!m.contains("ada@"), "{m}");
            assert!(
                m.contains("threw") && m.contains("line 2") && m.contains("helper"),
                "{m}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn parse_errors_do_not_copy_the_parsed_text() {
    let r = route_returning("lead.email.parse_int()");
    match r.evaluate(&lead()) {
        Err(ScriptFailure::Error(m)) => {
            assert!(!m.contains("ada@"), "{m}");
            assert!(m.contains("parsing integer") && m.contains("'…'"), "{m}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn property_of_missing_account_gets_a_hint() {
    let r = route_returning("lead.account.tier");
    match r.evaluate(&lead()) {
        Err(ScriptFailure::Error(m)) => assert!(m.contains("?."), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn endless_recursion_is_a_script_error() {
    let r = rules("fn again(n) { again(n + 1) } fn route(lead) { again(0) }");
    match r.evaluate(&lead()) {
        Err(ScriptFailure::Error(m)) => assert!(m.contains("levels deep"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn oversized_data_is_a_script_error() {
    let r = route_returning(r#"let s = "x"; loop { s += s; }"#);
    assert!(matches!(r.evaluate(&lead()), Err(ScriptFailure::Error(_))));
}

#[test]
fn syntax_error_has_file_line_and_column() {
    let e = compile_err("fn route(lead) {\n  let x = ;\n}");
    assert_eq!((e.line, e.column), (Some(2), Some(11)));
    assert!(e.to_string().starts_with("test.rhai:2:11: "), "{e}");
}

#[test]
fn missing_or_malformed_entry_points() {
    let e = compile_err("fn rout(lead) { () }");
    assert_eq!((e.line, e.column), (None, None));
    assert!(e.message.contains("fn route(lead)"), "{e}");
    assert!(e.to_string().starts_with("test.rhai: "), "{e}");

    let e = compile_err("// routes\nfn route(lead, extra) { () }");
    assert_eq!((e.line, e.column), (Some(2), Some(1)));
    assert!(e.message.contains("exactly one parameter"), "{e}");

    let e = compile_err("fn route(lead) { () }\n  fn score() { 1 }");
    assert_eq!((e.line, e.column), (Some(2), Some(3)));
    assert!(e.message.contains("fn score(lead)"), "{e}");

    // A method named `route` is not the entry point.
    let e = compile_err("fn Map.route(lead) { () }");
    assert!(e.message.contains("no `route` function"), "{e}");
}

#[test]
fn sandbox_rejects_eval_import_and_undefined_names() {
    let e = compile_err(r#"fn route(lead) { eval("1") }"#);
    assert!(e.message.contains("`eval` is not allowed"), "{e}");
    let e = compile_err("import \"x\" as x;\nfn route(lead) { () }");
    assert!(e.message.contains("`import` is not allowed"), "{e}");
    assert_eq!(e.line, Some(1));
    let e = compile_err("fn route(lead) { leed.title }");
    assert!(
        e.message.contains("leed") && e.message.contains("spelling"),
        "{e}"
    );
}

#[test]
fn top_level_constants_work_and_top_level_failures_are_compile_errors() {
    let r = rules("const QUEUE = \"inside-sales\";\nfn route(lead) { #{ priority: \"P2\", queue: global::QUEUE } }");
    assert_eq!(r.evaluate(&lead()).unwrap().unwrap().queue, "inside-sales");

    let e = compile_err("let x = 1 / 0;\nfn route(lead) { () }");
    assert_eq!(e.line, Some(1));
    assert!(e.message.contains("outside functions"), "{e}");

    let e = compile_err("loop {}\nfn route(lead) { () }");
    assert!(e.message.contains("operations"), "{e}");
}

#[test]
fn load_names_an_unreadable_file() {
    let e = Rules::load(
        std::path::Path::new("/nonexistent/x.rhai"),
        &ScriptLimits::default(),
    )
    .unwrap_err();
    assert_eq!(e.file, "/nonexistent/x.rhai");
    assert!(
        e.to_string()
            .starts_with("/nonexistent/x.rhai: cannot read"),
        "{e}"
    );
}

#[test]
fn print_and_debug_do_not_fail() {
    let r = route_returning(&format!("print(lead.contact_id); debug(lead.score); {P2}"));
    assert!(r.evaluate(&lead()).unwrap().is_some());
}

/// Thread CPU time, so the timing below is not skewed by other processes on a busy machine.
fn cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Rough CPU cost of one `evaluate`; run with
/// `cargo test --release --lib per_call_cost -- --ignored --nocapture`.
#[test]
#[ignore = "timing, not a check"]
fn per_call_cost() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/rules/routing.rhai");
    let shipped = Rules::load(std::path::Path::new(path), &ScriptLimits::default()).unwrap();
    let empty = route_returning("()");
    let mut p2 = lead();
    p2.contact.title = Some("Software Engineer".into());
    p2.contact.lifecycle_stage = Some("lead".into());
    p2.engagement.count_7d = 2;
    let mut p0 = lead();
    p0.account = Some(Account {
        account_id: "acc_1".into(),
        domain: "acme.com".into(),
        name: "Acme Inc".into(),
        employees: Some(12_000),
        annual_revenue: Some(2.5e9),
        industry: Some("Software".into()),
        region: Some("EMEA".into()),
        tier: Some("enterprise".into()),
        owner_rep_id: Some("rep_7".into()),
        updated_at: 500,
    });
    let n = 100_000u32;
    let runs = [
        ("fn route(lead) { () }", &empty, &p2),
        ("routing.rhai, P2 lead", &shipped, &p2),
        ("routing.rhai, P0 lead", &shipped, &p0),
    ];
    for (name, rules, lead) in runs {
        let start = cpu_time();
        for _ in 0..n {
            std::hint::black_box(rules.evaluate(std::hint::black_box(lead)).unwrap());
        }
        println!("{name}: {:?} CPU per evaluate", (cpu_time() - start) / n);
    }
    let start = cpu_time();
    for _ in 0..n {
        std::hint::black_box(super::convert::lead_map(std::hint::black_box(&p0)));
    }
    println!(
        "building the lead map alone: {:?} CPU",
        (cpu_time() - start) / n
    );
}
