//! `stasis`: application-consistent backup, restore and failover on NetApp ONTAP.
//! A thin CLI over `stasis-core` workflows and the `stasis-scenarios` harness.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use stasis_scenarios::torture::{self, FaultKind, FaultSet, Mutant, PluginMode, TortureOptions};

#[derive(Parser)]
#[command(name = "stasis", version, about = "Application-consistent backups of stateful workloads on NetApp ONTAP")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Prove that backups restore consistently: seeded cases of backups and restores of a
    /// simulated database on a simulated ONTAP array, with injected faults, every restore
    /// checked. Exit status 0 only when no invariant was violated.
    Torture(TortureArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    /// Quiesce the database around the snapshot (what Stasis does).
    App,
    /// No quiesce: crash-consistent snapshots. A negative control: violations expected.
    Crash,
}

#[derive(Clone, Copy, ValueEnum)]
enum MutantArg {
    /// Test-only: the plugin thaws before the snapshot.
    EarlyThaw,
    /// Test-only: backups complete without the snapshot being verified on the array.
    SkipVerify,
}

#[derive(clap::Args)]
struct TortureArgs {
    #[arg(long, default_value_t = 100)]
    cases: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, value_enum, default_value = "app")]
    mode: Mode,
    /// `all`, `none`, or a comma-separated list of fault kinds.
    #[arg(long, default_value = "all")]
    faults: String,
    /// Replay the single case with this seed (as printed for a failing case).
    #[arg(long, conflicts_with = "replay")]
    case_seed: Option<u64>,
    /// Replay a case given as JSON (the shrunk case printed for a failure).
    #[arg(long)]
    replay: Option<String>,
    /// The simulated database's freeze bound, in milliseconds.
    #[arg(long, default_value_t = 300)]
    freeze_timeout_ms: u64,
    #[arg(long, value_enum, hide = true)]
    mutant: Option<MutantArg>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

fn parse_faults(text: &str) -> anyhow::Result<FaultSet> {
    Ok(match text {
        "all" => FaultSet::all(),
        "none" => FaultSet::none(),
        list => FaultSet(
            list.split(',')
                .map(|name| {
                    FaultKind::parse(name.trim()).with_context(|| {
                        format!("unknown fault kind {name:?}; known: {}", FaultKind::ALL.iter().map(|k| k.name()).collect::<Vec<_>>().join(", "))
                    })
                })
                .collect::<anyhow::Result<_>>()?,
        ),
    })
}

async fn run_torture(args: TortureArgs) -> anyhow::Result<ExitCode> {
    if args.freeze_timeout_ms < 50 {
        bail!("--freeze-timeout-ms must be at least 50");
    }
    let replay = match &args.replay {
        Some(json) => Some(serde_json::from_str(json).context("--replay takes a case as JSON, as printed for a failing case")?),
        None => None,
    };
    let mut mode = match args.mode {
        Mode::App => PluginMode::App,
        Mode::Crash => PluginMode::Crash,
    };
    let mutant = args.mutant.map(|m| match m {
        MutantArg::EarlyThaw => {
            mode = PluginMode::EarlyThaw;
            Mutant::EarlyThaw
        }
        MutantArg::SkipVerify => Mutant::SkipVerify,
    });
    let opts = TortureOptions {
        cases: if args.case_seed.is_some() { 1 } else { args.cases },
        seed: args.case_seed.unwrap_or(args.seed),
        mode,
        faults: parse_faults(&args.faults)?,
        mutant,
        freeze_timeout: Duration::from_millis(args.freeze_timeout_ms),
        shrink: matches!(mode, PluginMode::App) && mutant.is_none(),
        replay: replay.or_else(|| args.case_seed.map(|s| torture::spec::generate(s, &parse_faults(&args.faults).unwrap_or_else(|_| FaultSet::all())).current())),
        failures_max: 5,
    };
    let bar = (!args.json).then(|| {
        let bar = indicatif::ProgressBar::new(opts.cases);
        bar.set_style(indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} cases  {elapsed_precise}  {msg}").expect("valid template"));
        bar
    });
    let report = torture::run_campaign(&opts, |done, _| {
        if let Some(bar) = &bar {
            bar.set_position(done);
        }
    })
    .await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", torture::render_table(&report));
    }
    Ok(if report.violations() == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Torture(args) => run_torture(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
