use super::*;
use crate::route::{Rules, ScriptLimits};

/// 2026-01-05 (a Monday) 12:00 UTC.
const NOON_UTC: i64 = 1_767_614_400_000;
const HOUR: i64 = 3_600_000;

fn rep(id: &str, team: &str) -> Rep {
    Rep {
        rep_id: id.into(),
        name: format!("Rep {id}"),
        team: team.into(),
        regions: vec!["EMEA".into()],
        max_open_leads: 100,
        active: true,
        timezone: "UTC".into(),
        working_hours: None,
        updated_at: 0,
    }
}

fn context(reps: Vec<Rep>, load: TaskLoad, share: Share, at: i64) -> Context {
    Context::new(Arc::new(Roster::new(reps)), Arc::new(load), share, at)
}

/// Plays `n` leads through `round_robin(team)` as the pipeline books them: each pick becomes
/// the owner, an open lead, and the team's turn.
fn deal(c: &mut Context, team: &str, n: usize) -> Vec<String> {
    let mut owners = Vec::new();
    for _ in 0..n {
        let Some(rep) = c.round_robin(team).map(|r| r.rep_id.clone()) else {
            owners.push("-".into());
            continue;
        };
        let load = Arc::make_mut(&mut c.load);
        *load.open.entry(rep.clone()).or_default() += 1;
        load.last.insert(team.into(), rep.clone());
        owners.push(rep);
    }
    owners
}

#[test]
fn working_hours_are_read_in_the_reps_time_zone_and_may_wrap_past_midnight() {
    let mut tokyo = rep("r_tokyo", "t");
    tokyo.timezone = "Asia/Tokyo".into();
    tokyo.working_hours = Some("09:00-17:00".into());
    let mut night = rep("r_night", "t");
    night.timezone = "America/New_York".into();
    night.working_hours = Some("22:00-06:00".into());
    let mut bad_zone = rep("r_bad_zone", "t");
    bad_zone.timezone = "Mars/Olympus".into();
    let mut bad_hours = rep("r_bad_hours", "t");
    bad_hours.working_hours = Some("9 to 5".into());
    let always = rep("r_always", "t");
    let roster = Roster::new([tokyo, night, bad_zone, bad_hours, always]);
    // 12:00 UTC is 21:00 in Tokyo, 07:00 in New York (EST).
    assert!(!roster.is_working("r_tokyo", NOON_UTC));
    assert!(roster.is_working("r_tokyo", NOON_UTC - 10 * HOUR)); // 11:00 in Tokyo
    assert!(!roster.is_working("r_tokyo", NOON_UTC - 4 * HOUR)); // 17:00: the end is out
    assert!(roster.is_working("r_tokyo", NOON_UTC - 11 * HOUR)); // 10:00
    assert!(!roster.is_working("r_night", NOON_UTC)); // 07:00
    assert!(roster.is_working("r_night", NOON_UTC - 2 * HOUR)); // 05:00
    assert!(roster.is_working("r_night", NOON_UTC + 16 * HOUR)); // 23:00
    assert!(!roster.is_working("r_bad_zone", NOON_UTC));
    assert!(!roster.is_working("r_bad_hours", NOON_UTC));
    assert!(roster.is_working("r_always", NOON_UTC));
    assert!(!roster.is_working("r_unknown", NOON_UTC));
}

#[test]
fn summer_time_moves_the_working_day() {
    let mut berlin = rep("r_berlin", "t");
    berlin.timezone = "Europe/Berlin".into();
    berlin.working_hours = Some("09:00-17:00".into());
    let roster = Roster::new([berlin]);
    // 07:30 UTC: 08:30 in January (CET), 09:30 in July (CEST).
    let january = NOON_UTC - 4 * HOUR - HOUR / 2;
    let july = january + 181 * 24 * HOUR;
    assert!(!roster.is_working("r_berlin", january));
    assert!(roster.is_working("r_berlin", july));
}

#[test]
fn the_tasks_shares_of_a_capacity_add_up_to_it() {
    for max in [0, 1, 5, 6, 7, 25, 40, 150] {
        for tasks in [1, 2, 3, 6, 12] {
            let mut r = rep(&format!("r_{max}_{tasks}"), "t");
            r.max_open_leads = max;
            let shares: Vec<i64> = (0..tasks)
                .map(|task| Share { task, tasks }.capacity(&r))
                .collect();
            assert_eq!(
                shares.iter().sum::<i64>(),
                i64::from(max),
                "{max} over {tasks}: {shares:?}"
            );
            let (lo, hi) = (shares.iter().min().unwrap(), shares.iter().max().unwrap());
            assert!(hi - lo <= 1, "{max} over {tasks}: {shares:?}");
        }
    }
}

#[test]
fn round_robin_deals_evenly_among_eligible_reps_and_skips_the_others() {
    let mut off = rep("r_off_hours", "emea");
    off.timezone = "Asia/Tokyo".into();
    off.working_hours = Some("09:00-17:00".into());
    let mut inactive = rep("r_inactive", "emea");
    inactive.active = false;
    let mut small = rep("r_small", "emea");
    small.max_open_leads = 2;
    let reps = vec![
        rep("r_a", "emea"),
        rep("r_b", "emea"),
        small,
        off,
        inactive,
        rep("r_other_team", "na"),
    ];
    let mut c = context(reps, TaskLoad::default(), Share::ALL, NOON_UTC);
    let owners = deal(&mut c, "emea", 12);
    let count = |id: &str| owners.iter().filter(|o| *o == id).count();
    assert_eq!(
        owners[..6],
        ["r_a", "r_b", "r_small", "r_a", "r_b", "r_small"].map(String::from)
    );
    assert_eq!((count("r_a"), count("r_b"), count("r_small")), (5, 5, 2));
    assert_eq!(
        count("r_off_hours") + count("r_inactive") + count("r_other_team"),
        0
    );
    // Everyone at capacity: no one.
    let mut full = TaskLoad::default();
    full.open.insert("r_a".into(), 100);
    let c = context(vec![rep("r_a", "x")], full, Share::ALL, NOON_UTC);
    assert!(c.round_robin("x").is_none());
    assert!(c.least_loaded("x").is_none());
    assert!(c.round_robin("no-such-team").is_none());
}

#[test]
fn each_task_starts_a_team_at_a_different_rep_so_the_totals_stay_even() {
    let reps: Vec<Rep> = (0..3).map(|i| rep(&format!("r_{i}"), "t")).collect();
    let mut totals = HashMap::new();
    for task in 0..6 {
        let share = Share { task, tasks: 6 };
        let mut c = context(reps.clone(), TaskLoad::default(), share, NOON_UTC);
        for owner in deal(&mut c, "t", 2) {
            *totals.entry(owner).or_insert(0) += 1;
        }
    }
    assert_eq!(
        totals.values().copied().collect::<Vec<_>>(),
        vec![4, 4, 4],
        "{totals:?}"
    );
}

#[test]
fn least_loaded_takes_the_fewest_open_leads_then_the_turn() {
    let reps: Vec<Rep> = ["r_a", "r_b", "r_c"]
        .iter()
        .map(|id| rep(id, "t"))
        .collect();
    let mut load = TaskLoad::default();
    load.open.insert("r_a".into(), 3);
    load.open.insert("r_b".into(), 1);
    load.open.insert("r_c".into(), 1);
    load.last.insert("t".into(), "r_b".into());
    let c = context(reps, load, Share::ALL, NOON_UTC);
    assert_eq!(c.least_loaded("t").unwrap().rep_id, "r_c");
    assert_eq!(c.round_robin("t").unwrap().rep_id, "r_c");
}

fn rules(body: &str) -> Rules {
    let source = format!("fn route(lead) {{ {body} }}");
    Rules::compile("t.rhai", &source, &ScriptLimits::default()).unwrap()
}

fn lead(owner_rep_id: Option<&str>) -> crate::route::Lead {
    let spec: crate::route::fixture_file::LeadSpec = serde_norway::from_str(&format!(
        "{{occurred_at: {NOON_UTC}, account: {{owner_rep_id: {}}}}}",
        owner_rep_id.map_or("~".to_string(), |o| format!("{o:?}"))
    ))
    .unwrap();
    spec.to_lead()
}

#[test]
fn scripts_see_reps_teams_hours_load_and_picks() {
    let mut tokyo = rep("r_tokyo", "apac");
    tokyo.timezone = "Asia/Tokyo".into();
    tokyo.working_hours = Some("09:00-17:00".into());
    let mut gone = rep("r_gone", "emea");
    gone.active = false;
    let mut load = TaskLoad::default();
    load.open.insert("r_a".into(), 7);
    let reps = vec![rep("r_a", "emea"), rep("r_b", "emea"), gone, tokyo];
    let r = rules(
        r#"
        let o = lead.owner_rep;
        let checks = [
            o.rep_id == "r_a", o.team == "emea", o.open_leads == 7, o.capacity == 100,
            o.regions == ["EMEA"], o.working_hours == (), o.active,
            rep("r_tokyo").timezone == "Asia/Tokyo", rep("nobody") == (), rep(()) == (),
            team("emea").len() == 2, team("emea")[1].rep_id == "r_b", team("none") == [],
            !is_working("r_tokyo", lead.occurred_at), is_working(o, lead.occurred_at),
            is_working(rep("r_tokyo"), lead.occurred_at - 10 * 3600000),
            open_leads("r_a") == 7, open_leads(o) == 7, open_leads("r_b") == 0,
            round_robin("emea") == "r_a", least_loaded("emea") == "r_b",
            round_robin("apac") == (),
        ];
        let failed = [];
        for (ok, i) in checks { if !ok { failed.push(`check ${i}`); } }
        #{ priority: "P2", queue: "q", owner: least_loaded("emea"), reasons: failed }
        "#,
    );
    let lead = lead(Some("r_a"));
    let mut c = Some(context(reps, load, Share::ALL, NOON_UTC));
    let decision = within(&mut c, || r.evaluate(&lead)).unwrap().unwrap();
    assert!(decision.reasons.is_empty(), "{:?}", decision.reasons);
    assert_eq!(decision.owner.as_deref(), Some("r_b"));
    let picks = &c.unwrap().picks;
    assert_eq!(picks.len(), 3, "{picks:?}");
    assert!(picks.contains(&Pick {
        team: "emea".into(),
        rep: "r_b".into()
    }));
    // The explained run sees the same.
    let mut c = Some(context(
        vec![rep("r_a", "emea"), rep("r_b", "emea")],
        TaskLoad::default(),
        Share::ALL,
        NOON_UTC,
    ));
    let explained = within(&mut c, || r.explain(&lead));
    assert_eq!(explained.lead["owner_rep"]["rep_id"], "r_a");
}

#[test]
fn without_a_context_the_functions_find_no_one() {
    let r = rules(
        r#"
        if lead.owner_rep != () || rep("r_a") != () || team("emea") != []
            || round_robin("emea") != () || least_loaded("emea") != ()
            || is_working("r_a", 0) || open_leads("r_a") != 0 { throw "found someone"; }
        #{ priority: "P2", queue: "q" }
        "#,
    );
    assert!(r.evaluate(&lead(Some("r_a"))).unwrap().is_some());
}

#[test]
fn reading_the_owner_rep_runs_interpreted_with_the_same_result() {
    let r = rules(r#"#{ priority: "P1", queue: "q", owner: lead.owner_rep.rep_id }"#);
    assert!(r.compiled_functions().iter().all(|f| f.compiled.is_ok()));
    let lead = lead(Some("r_a"));
    let mut c = Some(context(
        vec![rep("r_a", "t")],
        TaskLoad::default(),
        Share::ALL,
        0,
    ));
    let compiled = within(&mut c, || r.evaluate(&lead)).unwrap().unwrap();
    let r = r.interpreted();
    let interpreted = within(&mut c, || r.evaluate(&lead)).unwrap().unwrap();
    assert_eq!(compiled.owner.as_deref(), Some("r_a"));
    assert_eq!(compiled, interpreted);
}
