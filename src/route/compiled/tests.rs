//! Differential tests: compiled and interpreted rules give identical decisions, scores,
//! reasons and errors, on the shipped rules (every `rules/tests` case and generated leads)
//! and on scripts written to exercise each construct and its edge cases.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;

use crate::model::{Account, Contact};
use crate::route::fixture_file;
use crate::route::lead::{EngagementStats, Lead, PreviousDecision, Priority};
use crate::route::{Rules, ScriptLimits};

const SHIPPED: &str = include_str!("../../../rules/routing.rhai");

/// No wall-clock budget: a slow, noisy machine must not make the two sides differ.
fn limits() -> ScriptLimits {
    ScriptLimits {
        timeout: Duration::ZERO,
        ..ScriptLimits::default()
    }
}

fn both(source: &str, limits: &ScriptLimits) -> (Rules, Rules) {
    let compiled = Rules::compile("t.rhai", source, limits).expect("compiles");
    let interpreted = Rules::compile("t.rhai", source, limits)
        .expect("compiles")
        .interpreted();
    (compiled, interpreted)
}

fn fixture_leads() -> Vec<(String, Lead)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/tests");
    let mut leads = Vec::new();
    for entry in std::fs::read_dir(dir).expect("rules/tests") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            for case in fixture_file::load_suite(&path)
                .expect("fixtures load")
                .cases
            {
                leads.push((case.name.clone(), case.lead.to_lead()));
            }
        }
    }
    assert!(leads.len() >= 10, "rules/tests has cases");
    leads
}

fn sample_lead() -> Lead {
    Lead {
        contact: Contact {
            contact_id: "c_1".into(),
            email: Some("ada@acme.com".into()),
            phone: None,
            first_name: Some("Ada".into()),
            last_name: None,
            title: Some("Vice President of Sales".into()),
            company_name: Some("Acme".into()),
            company_domain: Some("acme.com".into()),
            country: Some("GB".into()),
            region: Some("EMEA".into()),
            lifecycle_stage: Some("mql".into()),
            lead_source: None,
            product_interest: None,
            consent_marketing: true,
            attributes: BTreeMap::from([("plan".to_string(), "trial".to_string())]),
            updated_at: 1_000,
        },
        event_type: "Contact.updated".into(),
        source: "hubspot:acme".into(),
        occurred_at: 2_000,
        score: 42,
        account: Some(account(Some(12_000), Some(2.5e9), Some("enterprise"))),
        engagement: EngagementStats {
            count_24h: 3,
            count_7d: 7,
            pricing_views_7d: 2,
            demo_requested: false,
            last_type: Some("pricing_view".into()),
            last_at: Some(1_900),
        },
        previous: Some(PreviousDecision {
            decision_id: "d_1".into(),
            event_id: "e_0".into(),
            priority: Priority::P2,
            queue: "inside-sales".into(),
            owner: None,
            score: 10,
            routed_at: 1_500,
            rule_version: "abc".into(),
        }),
    }
}

fn account(employees: Option<i32>, revenue: Option<f64>, tier: Option<&str>) -> Account {
    Account {
        account_id: "a_1".into(),
        domain: "acme.com".into(),
        name: "Acme Inc".into(),
        employees,
        annual_revenue: revenue,
        industry: None,
        region: Some("NA".into()),
        tier: tier.map(str::to_string),
        owner_rep_id: Some("rep_7".into()),
        updated_at: 900,
    }
}

/// A handful of leads that take different paths through most scripts.
fn leads() -> Vec<Lead> {
    let full = sample_lead();
    let mut bare = sample_lead();
    bare.contact.title = None;
    bare.contact.region = None;
    bare.contact.lifecycle_stage = None;
    bare.contact.consent_marketing = false;
    bare.account = None;
    bare.previous = None;
    bare.engagement = EngagementStats::default();
    let mut odd = sample_lead();
    odd.contact.title = Some("Ärztin — Chief".into());
    odd.engagement.count_7d = i64::MAX;
    odd.engagement.pricing_views_7d = -3;
    odd.account = Some(account(None, Some(1e300), None));
    vec![full, bare, odd]
}

#[test]
fn shipped_rules_compile_completely() {
    let rules = Rules::compile("routing.rhai", SHIPPED, &limits()).expect("compiles");
    let report = rules.compiled_functions();
    assert!(report.len() >= 10, "{report:?}");
    for f in report {
        assert_eq!(
            f.compiled,
            Ok(()),
            "{}/{} runs interpreted",
            f.name,
            f.arity
        );
    }
}

/// Every `rules/tests` case: the compiled path answers by itself (no fallback) and agrees
/// with the interpreter.
#[test]
fn shipped_rules_agree_on_every_fixture_case_without_falling_back() {
    let limits = limits();
    let (compiled, interpreted) = both(SHIPPED, &limits);
    let direct = super::Compiled::new(&rhai_ast(SHIPPED), SHIPPED, &limits);
    for (name, lead) in fixture_leads() {
        let score = direct
            .score(&lead)
            .unwrap_or_else(|| panic!("{name}: score fell back"));
        assert!(
            direct.route(&lead, score).is_some(),
            "{name}: route fell back"
        );
        assert_eq!(
            compiled.evaluate(&lead),
            interpreted.evaluate(&lead),
            "{name}"
        );
    }
}

fn rhai_ast(source: &str) -> rhai::AST {
    rhai::Engine::new().compile(source).expect("parses")
}

fn text() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some(String::new())),
        prop::sample::select(vec![
            "CEO",
            "cto",
            "VP Marketing",
            "vice president",
            "Head of Growth",
            "Director",
            "Account Manager",
            "Chief Revenue Officer",
            "student",
            "Intern",
            "Engineer",
            "customer",
            "mql",
            "sql",
            "opportunity",
            "lead",
            "NA",
            "EMEA",
            "APAC",
            "LATAM",
            "enterprise",
            "mid_market",
            "smb",
            "support_ticket",
            "chat",
            "form_submit",
            "pricing_view",
            "demo_request",
            "Ärztin",
            "ǅ",
            "P0",
            "P1",
            "P2",
        ])
        .prop_map(|s| Some(s.to_string())),
        "[a-zA-Z _-]{0,12}".prop_map(Some),
    ]
}

fn number() -> impl Strategy<Value = i64> {
    prop_oneof![0i64..10, -5i64..2_000, any::<i64>()]
}

prop_compose! {
    fn arb_lead()(
        title in text(), stage in text(), region in text(), consent in any::<bool>(),
        tier in text(), employees in prop::option::of(prop_oneof![0i32..3_000, any::<i32>()]),
        revenue in prop::option::of(prop_oneof![0.0f64..2e8, any::<f64>()]),
        has_account in any::<bool>(), account_region in text(), owner in text(),
        counts in (number(), number(), number()), demo in any::<bool>(), last in text(),
        previous in prop::option::of((prop::sample::select(Priority::ALL.to_vec()), text())),
        score in 0i32..=100,
    ) -> Lead {
        let mut lead = sample_lead();
        lead.contact.title = title;
        lead.contact.lifecycle_stage = stage;
        lead.contact.region = region;
        lead.contact.consent_marketing = consent;
        lead.score = score;
        lead.account = has_account.then(|| {
            let mut a = account(employees, revenue, tier.as_deref());
            a.region = account_region;
            a.owner_rep_id = owner;
            a
        });
        lead.engagement = EngagementStats {
            count_24h: counts.0,
            count_7d: counts.1,
            pricing_views_7d: counts.2,
            demo_requested: demo,
            last_type: last,
            last_at: None,
        };
        lead.previous = previous.map(|(priority, queue)| PreviousDecision {
            priority,
            queue: queue.unwrap_or_default(),
            ..sample_lead().previous.expect("sample has one")
        });
        lead
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn shipped_rules_agree_on_generated_leads(lead in arb_lead()) {
        let (compiled, interpreted) = both(SHIPPED, &limits());
        prop_assert_eq!(compiled.evaluate(&lead), interpreted.evaluate(&lead));
    }

    /// Under any operation budget the two agree: a compiled call over the budget falls back,
    /// and the interpreter then fails (or not) exactly as it does alone.
    #[test]
    fn shipped_rules_agree_under_any_operation_budget(
        budget in 1u64..1_500, case in 0usize..64, lead in arb_lead(),
    ) {
        let limits = ScriptLimits { max_operations: budget, ..limits() };
        let (compiled, interpreted) = both(SHIPPED, &limits);
        let fixtures = fixture_leads();
        let lead = if case < fixtures.len() { fixtures[case].1.clone() } else { lead };
        prop_assert_eq!(compiled.evaluate(&lead), interpreted.evaluate(&lead));
    }
}

/// Scripts for each construct and its edge cases. Each must compile completely (so the
/// compiled side is what is tested), and agree with the interpreter on every lead.
const CONSTRUCTS: &[(&str, &str)] = &[
    (
        "let, if/else, comparisons",
        r#"
        fn route(lead) {
            let s = lead.engagement.count_7d;
            let r = [];
            if s > 5 { r.push("many"); } else if s == 0 { r.push("none"); } else { r.push("few"); }
            if lead.title == () { r.push("no title"); }
            if lead.account != () { r.push("account"); }
            if "abc" < "abd" && 1 < 1.5 && !(2.0 > 3) { r.push("ordering"); }
            if lead.title == 5 || lead.account == "x" { r.push("mixed kinds"); }
            if lead.region >= "M" { r.push("late region"); }
            #{ priority: "P2", queue: "q", reasons: r }
        }"#,
    ),
    (
        "() arithmetic and concatenation",
        r#"
        fn route(lead) {
            let t = lead.title + "!";
            let u = () + "x";
            let v = "y" + lead.phone;
            let w = lead.last_name + 1;
            #{ priority: "P1", queue: t + u + v, reasons: [w] }
        }"#,
    ),
    (
        "integer overflow and division",
        r#"
        fn score(lead) {
            let n = lead.engagement.count_7d * 3 + lead.engagement.count_24h;
            let d = 100 / (lead.engagement.pricing_views_7d - 2);
            min(max(n % 101 + d - d, 0), 100)
        }
        fn route(lead) { #{ priority: "P2", queue: `s${lead.score}` } }"#,
    ),
    (
        "string indexing and methods",
        r#"
        fn route(lead) {
            let t = lead.title;
            let first = t[0];
            let last = t[t.len() - 1];
            let far = if t.len() > 3 { t[3] } else { '-' };
            let up = t.to_upper() + t.to_lower();
            let r = [`${first}${last}${far}`, up, `${t.len()}`, `${t.contains("Chief")}`,
                     `${t.starts_with('V')}`, `${t.ends_with("es")}`, `${t.is_empty()}`];
            #{ priority: "P2", queue: "q", reasons: r }
        }"#,
    ),
    (
        "negative and out-of-range indexes",
        r#"
        fn route(lead) {
            let t = lead.title;
            let a = [1, 2, 3];
            let x = a[lead.engagement.count_24h];
            let c = t[-1];
            #{ priority: "P2", queue: `${x}${c}` }
        }"#,
    ),
    (
        "type errors",
        r#"
        fn route(lead) {
            if lead.title { return (); }
            let n = lead.engagement.count_7d && true;
            #{ priority: "P2", queue: "q" }
        }"#,
    ),
    (
        "switch: strings, ints, ranges, conditions, ()",
        r#"
        fn kind(x) {
            switch x {
                () => "nothing",
                "CEO" | "cto" => "exec",
                0 => "zero",
                1..3 => "small",
                3..=10 if x != 7 => "medium",
                'c' => "char",
                true => "yes",
                _ => "other",
            }
        }
        fn route(lead) {
            let r = [kind(lead.title), kind(lead.region), kind(lead.engagement.count_24h),
                     kind(lead.engagement.count_7d), kind(lead.consent_marketing), kind(7),
                     kind(2), kind('c'), kind(()), kind(4.0)];
            #{ priority: "P2", queue: "q", reasons: r }
        }"#,
    ),
    (
        "for, while, loop, do, break, continue",
        r#"
        fn route(lead) {
            let total = 0;
            for i in 0..lead.engagement.count_24h { if i == 2 { continue; } total += i; }
            for i in 1..=3 { total += i * 10; }
            for (x, i) in ["a", "b", "c"] { if x == "c" { break; } total += i * 100; }
            let n = 0;
            while n < 5 { n += 1; }
            loop { n += 2; if n > 9 { break; } }
            do { n -= 1; } until n < 4;
            let s = "";
            for c in [1, 2] { s += `${c}`; }
            #{ priority: "P2", queue: `${total}/${n}/${s}` }
        }"#,
    ),
    (
        "interpolation",
        r#"
        fn route(lead) {
            let r = [`${lead.score} ${true} ${'c'} ${"s"} ${lead.title}`, `${-3}${lead.region}`];
            #{ priority: "P2", queue: "q", reasons: r }
        }"#,
    ),
    (
        "interpolation the compiled code leaves to the interpreter",
        r#"
        fn route(lead) {
            let r = [`${()}`, `${lead.account.annual_revenue}`, `${[1, 2]}`, `${lead.account}`];
            #{ priority: "P2", queue: "q", reasons: r }
        }"#,
    ),
    (
        "map literals, properties and indexing",
        r#"
        fn route(lead) {
            let m = #{ a: 1, b: "two", c: [3] };
            let l = lead;
            let r = [`${m.a}`, m.b, `${m.c[0]}`, `${m.missing == ()}`, m["b"],
                     `${lead.attributes.plan}`, `${lead.attributes["nope"] == ()}`,
                     `${l.nothing_here == ()}`, `${m.len()}`, `${m.contains("a")}`];
            #{ priority: "P0", queue: lead.previous.queue, owner: lead.account.owner_rep_id,
               reasons: r }
        }"#,
    ),
    (
        "recursion and call depth",
        r#"
        fn fib(n) { if n < 2 { n } else { fib(n - 1) + fib(n - 2) } }
        fn deep(n) { if n == 0 { 0 } else { 1 + deep(n - 1) } }
        fn route(lead) {
            let d = deep(lead.engagement.count_24h * 10);
            #{ priority: "P2", queue: `${fib(12)}:${d}` }
        }"#,
    ),
    (
        "arrays: push, +=, append, len",
        r#"
        fn route(lead) {
            let a = ["x"];
            a.push("y");
            a += ["z"];
            a.append(["w"]);
            let b = a;
            b.push("only b");
            #{ priority: "P2", queue: `${a.len()}/${b.len()}`, reasons: a + b }
        }"#,
    ),
    (
        "floats",
        r#"
        fn route(lead) {
            let r = lead.account.annual_revenue;
            let m = (r / 1_000_000.0).to_int();
            let f = (lead.score.to_float() * 1.5).floor().to_int();
            let z = 1.0 / (lead.engagement.count_24h - 3);
            #{ priority: "P2", queue: `${m}/${f}`, reasons: [`${(2.5).round().to_int()}`] }
        }"#,
    ),
    (
        "return from nested blocks, implicit values",
        r#"
        fn first_big(xs) { for x in xs { if x > 2 { return x; } } -1 }
        fn nothing() { let x = 1; }
        fn route(lead) {
            let v = first_big([1, 5, 9]);
            let n = nothing();
            let w = { let y = 3; y * 2 };
            #{ priority: "P2", queue: `${v}/${n == ()}/${w}/${lead.title ?? "none"}` }
        }"#,
    ),
    (
        "invalid decisions",
        r#"
        fn route(lead) {
            switch lead.engagement.count_24h {
                0 => #{ priority: "P2", queue: "q", owner: "  " },
                1 => #{ priority: "P9", queue: "q" },
                2 => #{ priority: "P2", queue: " " },
                3 => #{ priority: "P2", queue: "q", reasons: [1] },
                4 => #{ priority: "P2", queue: "q", extra: 1 },
                5 => 42,
                _ => #{ priority: "P2" },
            }
        }"#,
    ),
    (
        "scores out of range",
        r#"
        fn score(lead) {
            switch lead.engagement.count_24h { 0 => 101, 1 => -1, 2 => 50.5, 3 => "x", _ => 100 }
        }
        fn route(lead) { #{ priority: "P2", queue: "q", reasons: [`${lead.score}`] } }"#,
    ),
    (
        "strings over the size limit",
        r#"
        fn route(lead) {
            let s = "x";
            for i in 0..lead.engagement.count_24h * 7 { s += s; }
            #{ priority: "P2", queue: `${s.len()}` }
        }"#,
    ),
];

fn construct_leads() -> Vec<Lead> {
    let mut out = leads();
    for n in 0..8 {
        let mut l = sample_lead();
        l.engagement.count_24h = n;
        out.push(l);
    }
    out
}

#[test]
fn every_construct_compiles_and_agrees_with_the_interpreter() {
    let limits = ScriptLimits {
        max_string_size: 4_096,
        ..limits()
    };
    for (name, source) in CONSTRUCTS {
        let (compiled, interpreted) = both(source, &limits);
        for f in compiled.compiled_functions() {
            assert_eq!(f.compiled, Ok(()), "{name}: {}", f.name);
        }
        for (i, lead) in construct_leads().iter().enumerate() {
            assert_eq!(
                compiled.evaluate(lead),
                interpreted.evaluate(lead),
                "{name}, lead {i}"
            );
        }
    }
}

/// The compiled path must be what answers the constructs, not the fallback: at least one
/// lead of each script that succeeds interpreted is answered without falling back.
#[test]
fn constructs_are_answered_by_compiled_code() {
    let limits = limits();
    let mut answered = 0;
    for (name, source) in CONSTRUCTS {
        let direct = super::Compiled::new(&rhai_ast(source), source, &limits);
        let (_, interpreted) = both(source, &limits);
        let any = construct_leads().iter().any(|lead| {
            let score = if direct.has_score() {
                direct.score(lead)
            } else {
                Some(lead.score)
            };
            score.is_some_and(|s| direct.route(lead, s).is_some())
        });
        let any_ok = construct_leads()
            .iter()
            .any(|l| interpreted.evaluate(l).is_ok());
        if any_ok && !name.contains("leaves to the interpreter") {
            assert!(any, "{name}: every lead fell back to the interpreter");
            answered += 1;
        }
    }
    assert!(answered >= 12, "{answered}");
}

#[test]
fn unsupported_constructs_stay_interpreted_with_a_reason() {
    let source = r#"
        fn helper(x) { try { x + 1 } catch (e) { 0 } }
        fn uses_helper(x) { helper(x) }
        fn plain(x) { x * 2 }
        fn route(lead) { #{ priority: "P2", queue: `${uses_helper(1)}${plain(2)}` } }
    "#;
    let (compiled, interpreted) = both(source, &limits());
    let report: BTreeMap<_, _> = compiled
        .compiled_functions()
        .iter()
        .map(|f| (f.name.as_str(), f.compiled.clone()))
        .collect();
    assert_eq!(report["plain"], Ok(()));
    assert!(
        report["helper"].as_ref().unwrap_err().contains("try"),
        "{report:?}"
    );
    assert!(report["uses_helper"]
        .as_ref()
        .unwrap_err()
        .contains("`helper`"));
    assert!(report["route"].is_err());
    let lead = sample_lead();
    assert_eq!(compiled.evaluate(&lead), interpreted.evaluate(&lead));
}

#[test]
fn top_level_statements_leave_everything_interpreted() {
    let source = "let x = 1;\nfn route(lead) { #{ priority: \"P2\", queue: \"q\" } }";
    let (compiled, _) = both(source, &limits());
    assert!(compiled
        .compiled_functions()
        .iter()
        .all(|f| f.compiled.is_err()));
}

/// Compiled calls count at least as many operations as the interpreter, so a call the
/// interpreter would stop over its budget never succeeds compiled.
#[test]
fn compiled_calls_count_at_least_the_interpreters_operations() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let limits = limits();
    let counted = std::sync::Arc::new(AtomicU64::new(0));
    let mut engine = rhai::Engine::new();
    let defaults = ScriptLimits::default();
    engine
        .set_max_operations(defaults.max_operations)
        .set_max_call_levels(defaults.max_call_levels)
        .set_max_string_size(defaults.max_string_size)
        .set_max_array_size(defaults.max_array_size)
        .set_max_map_size(defaults.max_map_size);
    let c = counted.clone();
    engine.on_progress(move |ops| {
        c.store(ops, Ordering::Relaxed);
        None
    });
    let mut leads: Vec<Lead> = fixture_leads().into_iter().map(|(_, l)| l).collect();
    leads.extend(construct_leads());
    let mut worst = (f64::MAX, String::new());
    let scripts = std::iter::once(("shipped", SHIPPED)).chain(CONSTRUCTS.iter().copied());
    for (script, source) in scripts {
        let ast = rhai_ast(source);
        let direct = super::Compiled::new(&ast, source, &limits);
        for lead in &leads {
            for route in [false, true] {
                let name = if route { "route" } else { "score" };
                let mut map = crate::route::convert::lead_map(lead);
                map.insert("score".into(), rhai::Dynamic::from_int(lead.score.into()));
                counted.store(0, Ordering::Relaxed);
                let lead_value = rhai::Dynamic::from_map(map);
                let ok = engine
                    .call_fn::<rhai::Dynamic>(&mut rhai::Scope::new(), &ast, name, (lead_value,))
                    .is_ok();
                let interpreted = counted.load(Ordering::Relaxed);
                if let (true, Some(ours)) = (ok, direct.ops(route, lead, lead.score)) {
                    assert!(
                        ours >= interpreted,
                        "{script}, {name}: {ours} < {interpreted}"
                    );
                    let ratio = ours as f64 / interpreted.max(1) as f64;
                    if ratio < worst.0 {
                        worst = (ratio, format!("{script}, {name}"));
                    }
                }
            }
        }
    }
    eprintln!(
        "compiled/interpreted operations: at least {:.2} ({})",
        worst.0, worst.1
    );
}

/// A closure's body lies inside its function's: its statements must not be taken for the
/// function's own.
#[test]
fn closures_do_not_leak_into_the_function_around_them() {
    let source = r#"
        fn route(lead) {
            let f = |x| x + 1;
            let n = f.call(1);
            #{ priority: "P2", queue: `q${n}` }
        }
        fn other(lead) { 1 }
    "#;
    let (compiled, interpreted) = both(source, &limits());
    let route = compiled
        .compiled_functions()
        .iter()
        .find(|f| f.name == "route")
        .expect("route reported");
    assert!(route.compiled.is_err(), "{route:?}");
    let lead = sample_lead();
    assert_eq!(compiled.evaluate(&lead), interpreted.evaluate(&lead));
}
