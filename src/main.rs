//! The `leadflow` binary: parse the command line, set up logging, run one command.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use leadflow::cli::{
    Cli, Command, GenArgs, KafkaArgs, LogFormat, RegistryCommand, ResetArgs, RulesCommand, RunArgs,
    TopicsCommand,
};
use leadflow::gen::{AckSpec, DisorderSpec, GenConfig};
use leadflow::kafka::{admin, KafkaSettings};
use leadflow::route::{Rules, ScriptLimits};
use leadflow::runtime::RunConfig;
use leadflow::topics::{with_prefix, CONTRACT_TOPICS};
use std::sync::Arc;

/// mimalloc: the pipeline allocates many small, short-lived values per event (decoded
/// strings, the script's maps, state values); glibc malloc was 19 % of a profile of the
/// in-process pipeline.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let text = format!("{e:#}");
            let message = leadflow::redact::redact(&text);
            match cli.log_format {
                // A log pipeline gets the reason as one more JSON line.
                LogFormat::Json => tracing::error!(error = %message, "stopped"),
                LogFormat::Text => eprintln!("error: {message}"),
            }
            ExitCode::FAILURE
        }
    }
}

/// Log lines go to stderr, redacted, as text or as JSON objects (one per line).
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,rdkafka=warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(leadflow::redact::RedactingStderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .flatten_event(true)
            .init(),
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(args) => run_processor(args).await,
        Command::Reset(args) => reset(args).await,
        Command::Rules(RulesCommand::Check { file, topology }) => {
            let summary = leadflow::route::fixtures::check(&file, &script_limits(topology)?)?;
            println!("{summary}");
            Ok(())
        }
        Command::Rules(RulesCommand::Test {
            file,
            fixtures,
            topology,
        }) => {
            let report =
                leadflow::route::fixtures::test(&file, &fixtures, &script_limits(topology)?)?;
            print!("{}", report.text);
            println!("{} passed, {} failed", report.passed, report.failed);
            if report.failed > 0 {
                anyhow::bail!("{} fixture case(s) failed", report.failed);
            }
            Ok(())
        }
        Command::Rules(RulesCommand::Explain {
            file,
            lead,
            case,
            json,
        }) => {
            let explanation = leadflow::route::explain::explain_file(
                &file,
                &lead,
                case.as_deref(),
                &ScriptLimits::default(),
            )?;
            if json {
                println!("{}", explanation.to_json());
            } else {
                print!("{}", explanation.render());
            }
            Ok(())
        }
        Command::Explain(args) => explain(args).await,
        Command::Rules(RulesCommand::Backtest(args)) => backtest(args).await,
        Command::Registry(RegistryCommand::Serve { addr, data_dir }) => {
            leadflow::registry::serve(addr, data_dir, shutdown_signal()).await
        }
        Command::Gen(args) => gen(args).await,
        Command::Validate(args) => {
            let connections = if args.kafka_check {
                Some(leadflow::validate::Connections {
                    kafka: settings(args.kafka)?,
                    registry: args.registry.config(),
                })
            } else {
                None
            };
            let report =
                leadflow::validate::validate(&args.topology, args.rules.as_deref(), connections)
                    .await;
            for line in &report.lines {
                println!("{line}");
            }
            if report.failed > 0 {
                anyhow::bail!("{} check(s) failed", report.failed);
            }
            Ok(())
        }
        Command::Topics(TopicsCommand::Create {
            kafka,
            topic_prefix,
            partitions,
            replication_factor,
        }) => {
            let outcomes = admin::create_contract_topics(
                &settings(kafka)?,
                &topic_prefix,
                partitions,
                replication_factor,
            )
            .await?;
            for (topic, outcome) in outcomes {
                println!("{topic}: {outcome:?}");
            }
            Ok(())
        }
        Command::Topics(TopicsCommand::Peek {
            topic,
            kafka,
            registry,
            limit,
        }) => {
            leadflow::topics::peek::peek(&settings(kafka)?, &registry.config(), &topic, limit).await
        }
        Command::Topics(TopicsCommand::Stats {
            kafka,
            topic_prefix,
        }) => {
            let names: Vec<String> = CONTRACT_TOPICS
                .iter()
                .map(|(t, _)| with_prefix(&topic_prefix, t))
                .collect();
            let settings = settings(kafka)?;
            let stats = tokio::task::spawn_blocking(move || admin::topic_stats(&settings, &names))
                .await??;
            println!("{:<40} {:>10} {:>10}", "topic", "partitions", "records");
            for s in stats {
                println!("{:<40} {:>10} {:>10}", s.topic, s.partitions, s.records);
            }
            Ok(())
        }
    }
}

/// Validates the topology and rules (exiting before touching Kafka if either is wrong), then
/// runs the processor until SIGTERM/SIGINT.
async fn run_processor(args: RunArgs) -> anyhow::Result<()> {
    let shutdown = shutdown_signal();
    let overrides = leadflow::topology::Overrides {
        rules: args.rules,
        application_id: args.app.application_id,
    };
    let topology = leadflow::topology::load_with(&args.app.topology, &overrides)?;
    let limits = ScriptLimits::of(&topology);
    let rules = Arc::new(Rules::load(&topology.rules, &limits)?);
    if let Some(shadow) = &topology.rules_shadow {
        Rules::load(shadow, &limits)?;
    }
    if !topology.rules_tests.is_empty() {
        let report = leadflow::route::fixtures::test_rules(&rules, &topology.rules_tests)?;
        if report.failed > 0 {
            anyhow::bail!(
                "{}: {} of the rules_tests case(s) failed; not starting:\n{}",
                topology.rules.display(),
                report.failed,
                report.text
            );
        }
    }
    let config = RunConfig {
        topology,
        rules,
        kafka: settings(args.kafka)?,
        registry: args.registry.config(),
        state_dir: args.app.state_dir,
        metrics_addr: args.metrics_addr,
        instance_id: args.instance_id,
    };
    leadflow::runtime::run(config, shutdown).await
}

/// `leadflow reset`: shows what it will do, asks (unless `--yes`), does it.
async fn reset(args: ResetArgs) -> anyhow::Result<()> {
    let overrides = leadflow::topology::Overrides {
        rules: None,
        application_id: args.app.application_id,
    };
    let topology = leadflow::topology::load_with(&args.app.topology, &overrides)?;
    let settings = settings(args.kafka)?;
    let to = args
        .to_datetime
        .as_deref()
        .map(|t| leadflow::reset::parse_time("--to-datetime", t))
        .transpose()?;
    let plan = {
        let (settings, state_dir) = (settings.clone(), args.app.state_dir.clone());
        tokio::task::spawn_blocking(move || {
            leadflow::reset::plan(&settings, &topology, &state_dir, to)
        })
        .await??
    };
    print!("{}", plan.describe());
    if !args.yes {
        confirm(&plan.group)?;
    }
    plan.apply(&settings).await?;
    println!(
        "reset done: the next `leadflow run` of {} processes its inputs again",
        plan.group
    );
    Ok(())
}

/// Asks the user to type the application id.
fn confirm(group: &str) -> anyhow::Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        anyhow::bail!(
            "not resetting {group} without confirmation: pass --yes (nothing was changed)"
        );
    }
    eprint!("type the application id ({group}) to reset it: ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    anyhow::ensure!(line.trim() == group, "not confirmed; nothing was changed");
    Ok(())
}

/// Kafka settings from the flags and the properties file, guarantees refused.
fn settings(args: KafkaArgs) -> anyhow::Result<KafkaSettings> {
    Ok(KafkaSettings::from_cli(
        &args.bootstrap_servers,
        args.kafka_config.as_deref(),
        &args.kafka,
    )?)
}

async fn gen(args: GenArgs) -> anyhow::Result<()> {
    let start_ms = if args.start == "now" {
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64
    } else {
        humantime::parse_rfc3339_weak(&args.start)
            .map_err(|e| anyhow::anyhow!("--start {:?}: {e}; use RFC 3339 or `now`", args.start))?
            .duration_since(UNIX_EPOCH)?
            .as_millis() as i64
    };
    let config = GenConfig {
        kafka: settings(args.kafka)?,
        registry: args.registry.config(),
        registry_wait: args.registry_wait,
        topic_prefix: args.topic_prefix,
        seed: args.seed,
        count: args.count,
        accounts: args.accounts.max(1),
        reps: args.reps.max(1),
        reference_data: !args.no_reference_data,
        rate: args.rate,
        start_ms,
        disorder: DisorderSpec {
            duplicates: args.duplicates,
            out_of_order: args.out_of_order,
            late: args.late,
            bound_ms: args.lateness_bound.as_millis() as i64,
            mean_gap_ms: args.mean_gap.as_millis() as i64,
        },
        acks: (args.acks > 0.0).then_some(AckSpec {
            fraction: args.acks,
            mean_delay: args.ack_delay,
            idle: args.ack_idle,
        }),
        progress: !args.quiet,
    };
    if let Some(spec) = &config.acks {
        spec.validate().map_err(anyhow::Error::msg)?;
    }
    let summary = leadflow::gen::run(&config).await?;
    let secs = summary.elapsed.as_secs_f64();
    println!("gen: done in {secs:.1}s (seed {})", config.seed);
    for (topic, n) in &summary.per_topic {
        println!("  {topic:<40} {n:>9} records");
    }
    let total = config.count.max(1) as f64;
    for (kind, n) in &summary.per_disorder {
        println!("  {kind:<40} {n:>9} ({:.1}%)", 100.0 * *n as f64 / total);
    }
    if let Some(acks) = &summary.acks {
        println!(
            "  {:<10} {:>9} {:>9} {:>9} {:>9}",
            "acks", "decisions", "in time", "late", "never"
        );
        for (priority, n) in &acks.decisions {
            let get =
                |m: &std::collections::BTreeMap<String, u64>| m.get(priority).copied().unwrap_or(0);
            println!(
                "  {priority:<10} {n:>9} {:>9} {:>9} {:>9}",
                get(&acks.in_time),
                get(&acks.late),
                get(&acks.never)
            );
        }
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
/// Listens for SIGTERM and SIGINT from now on and resolves at the first. Called before
/// start-up, so that a signal that arrives while the processor starts is kept until it can
/// stop cleanly, instead of killing it with the signal's default action.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let (mut term, mut int) = signals;
            tokio::select! {
                _ = next_signal(term.as_mut()) => {},
                _ = next_signal(int.as_mut()) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutting down");
    }
}

/// The next delivery of a signal listened for, or never when it could not be listened for.
#[cfg(unix)]
async fn next_signal(signal: Option<&mut tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// `leadflow explain CONTACT_ID`.
async fn explain(args: leadflow::cli::ExplainArgs) -> anyhow::Result<()> {
    let topic = match args.topic {
        Some(topic) => topic,
        None => {
            let topology = leadflow::topology::load(&args.topology)?;
            match topology.outputs.audit {
                Some(topic) => topic,
                None => anyhow::bail!(
                    "{}: names no outputs.audit, so nothing is audited: add `audit: leads.audit` \
                     under outputs (and restart the processor), or pass --topic",
                    args.topology.display()
                ),
            }
        }
    };
    let registry = leadflow::codec::RegistryClient::with_config(&args.registry.config())?;
    let mut trail = leadflow::trail::read(
        &settings(args.kafka)?,
        &registry,
        &topic,
        &args.contact_id,
        Duration::from_secs(120),
    )
    .await?;
    if let Some(n) = args.last {
        let skip = trail.records.len().saturating_sub(n);
        trail.records.drain(..skip);
    }
    if args.json {
        for r in &trail.records {
            println!("{}", serde_json::to_string(r)?);
        }
    } else {
        print!("{}", trail.render(&args.contact_id));
    }
    Ok(())
}

/// The script limits (and `queues:`) of `topology`, or the defaults without one.
fn script_limits(topology: Option<std::path::PathBuf>) -> anyhow::Result<ScriptLimits> {
    Ok(match topology {
        Some(path) => ScriptLimits::of(&leadflow::topology::load(&path)?),
        None => ScriptLimits::default(),
    })
}

/// `leadflow rules backtest`.
async fn backtest(args: Box<leadflow::cli::BacktestArgs>) -> anyhow::Result<()> {
    let topology = leadflow::topology::load(&args.topology)?;
    let window = leadflow::backtest::Window {
        since: leadflow::reset::parse_time("--since", &args.since)?,
        until: match &args.until {
            Some(t) => leadflow::reset::parse_time("--until", t)?,
            None => i64::MAX,
        },
        examples: args.examples,
    };
    let current = args
        .against
        .clone()
        .unwrap_or_else(|| topology.rules.clone());
    let registry = leadflow::codec::RegistryClient::with_config(&args.registry.config())?;
    let bar = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(0).with_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} replaying {pos}/{len} records [{bar:30}] {percent}% {eta} left",
            )?
            .progress_chars("=> "),
        )
    };
    let report = leadflow::backtest::run(
        &settings(args.kafka)?,
        &registry,
        &topology,
        &current,
        &args.file,
        &window,
        |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        },
    )
    .await?;
    bar.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(())
}
