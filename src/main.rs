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
    /// The config file for real clusters (apps, ONTAP endpoints, policies, catalog).
    #[arg(long, global = true, env = "STASIS_CONFIG", value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// Log lines on stderr as text or JSON (level from STASIS_LOG).
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: stasis::telemetry::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Prove that backups restore consistently: seeded cases of backups and restores of a
    /// simulated database on a simulated ONTAP array, with injected faults, every restore
    /// checked. Exit status 0 only when no invariant was violated.
    Torture(TortureArgs),
    /// Walk through discover -> protect -> backup under load -> damage -> restore ->
    /// crash-consistent vs application-consistent, on a simulated ONTAP cluster started in
    /// this process. The workload is a real MariaDB on a FUSE-mounted simulated volume when
    /// mariadbd and FUSE are available, else the simulated database. Nothing to configure.
    Demo(stasis::demo_cmd::DemoArgs),
    /// Back up one app of the config file now.
    Backup(stasis::cli::BackupArgs),
    /// Restore a backup in place (refused while the app's server answers, unless the app
    /// has stop/start commands) or to a new clone volume.
    Restore(stasis::cli::RestoreArgs),
    /// The catalog's backups.
    #[command(subcommand)]
    Backups(stasis::cli::BackupsCommand),
    /// The simulated database's tooling for kind simdb apps (on ontap-sim volumes).
    #[command(subcommand)]
    Simdb(stasis::cli::SimdbCommand),
    /// Run scenario files (scenarios/*.yaml) as seeded campaigns and give each its verdict;
    /// --junit writes JUnit XML for CI. Exit status 0 only when every scenario passed.
    Verify(VerifyArgs),
    /// List pods with their mount paths, volumes (Trident CSI and NFS, traced to ONTAP),
    /// database kind, SLA policy and protection status, from the current kubeconfig context
    /// or the in-cluster service account.
    Discover(stasis_k8s::cli::DiscoverArgs),
    /// Print the operator's CustomResourceDefinitions (BackupPolicy, Backup, Restore,
    /// DrPlan in group stasis.io) as YAML: `stasis crds | kubectl apply -f -`.
    Crds,
    /// Run the Kubernetes operator: reconcile Backup, BackupPolicy, Restore and DrPlan
    /// resources while this replica holds the leader Lease (see deploy/).
    Operator(stasis_k8s::cli::OperatorArgs),
    /// Back up and restore an app that runs in Kubernetes (its Deployment/StatefulSet, its
    /// objects, its database frozen through a port-forward).
    #[command(subcommand)]
    K8s(stasis_k8s::cli::K8sCommand),
    /// Disaster recovery of a config file's app to its `dr` cluster: setup, status, drill.
    #[command(subcommand)]
    Dr(stasis::dr_cmd::DrCommand),
    /// Move an app to its DR site: --planned (no loss) or --unplanned (site A gone); prints
    /// RPO and RTO.
    Failover(stasis::dr_cmd::FailoverArgs),
    /// Move a failed-over app back to site A (asks for --yes before discarding site A data).
    Failback(stasis::dr_cmd::FailbackArgs),
    /// The REST API (OpenAPI at /api-docs/openapi.json), the web dashboard and /metrics
    /// over the config file's apps; scheduled backups by SLA policy.
    Serve(stasis::serve_cmd::ServeArgs),
}

#[derive(clap::Args)]
struct VerifyArgs {
    /// Scenario files (YAML, see scenarios/scenario.schema.json).
    #[arg(required = true)]
    files: Vec<std::path::PathBuf>,
    /// Cases per scenario (default: the scenario's campaign.cases, else 20).
    #[arg(long)]
    cases: Option<u64>,
    /// Campaign seed (default: the scenario's campaign.seed, else 1).
    #[arg(long)]
    seed: Option<u64>,
    /// Run only the case with this seed (as printed for a failure).
    #[arg(long)]
    case_seed: Option<u64>,
    /// Run exactly this case, given as JSON (the shrunk case printed for a failure); needs --case-seed.
    #[arg(long, requires = "case_seed")]
    replay: Option<String>,
    /// Write JUnit XML here.
    #[arg(long)]
    junit: Option<std::path::PathBuf>,
    /// Print one JSON object instead of the verdicts.
    #[arg(long)]
    json: bool,
    /// Cases run at once per scenario.
    #[arg(long, default_value_t = 2)]
    parallel: usize,
    /// The ONTAP client's request timeout in the cases, in milliseconds (raise it on a loaded machine).
    #[arg(long, default_value_t = 50)]
    client_timeout_ms: u64,
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
    /// Cases run at once (each has its own simulator and seed).
    #[arg(long, default_value_t = 2)]
    parallel: usize,
    /// The ONTAP client's request timeout, in milliseconds. Injected late answers arrive
    /// after twice this. Raise it on a loaded machine.
    #[arg(long, default_value_t = 50)]
    client_timeout_ms: u64,
    #[arg(long, value_enum, hide = true)]
    mutant: Option<MutantArg>,
    /// Disaster-recovery cases instead: two simulated sites, replicated backups under link
    /// faults, an unplanned failover at a random point; site B must start at exactly the
    /// newest app-consistent backup that reached it. Uses --cases, --seed, --parallel, --json.
    #[arg(long, conflicts_with_all = ["mode", "faults", "case_seed", "replay", "mutant"])]
    dr: bool,
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
    if args.dr {
        return run_torture_dr(&args).await;
    }
    if args.freeze_timeout_ms < 50 {
        bail!("--freeze-timeout-ms must be at least 50");
    }
    if args.client_timeout_ms < 5 {
        bail!("--client-timeout-ms must be at least 5");
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
        client_timeout: Duration::from_millis(args.client_timeout_ms),
        shrink: matches!(mode, PluginMode::App) && mutant.is_none(),
        replay: replay.or_else(|| args.case_seed.map(|s| torture::spec::generate(s, &parse_faults(&args.faults).unwrap_or_else(|_| FaultSet::all())).current())),
        failures_max: 5,
        parallel: args.parallel.max(1),
        strategy: None,
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

async fn run_torture_dr(args: &TortureArgs) -> anyhow::Result<ExitCode> {
    let bar = (!args.json).then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_message(format!("{} DR cases", args.cases));
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    });
    let report = torture::dr::run_dr_campaign(args.cases, args.seed, args.parallel.max(1)).await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", torture::dr::render_dr_table(&report));
    }
    Ok(if report.violations == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn run_verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    use stasis_scenarios::verify;
    // Every file is checked before anything runs: a typo in the last one fails at once.
    let mut scenarios = Vec::new();
    let mut invalid = false;
    for file in &args.files {
        match verify::load(file) {
            Ok(s) => scenarios.push(s),
            Err(errors) => {
                invalid = true;
                for e in errors {
                    eprintln!("error: {e}");
                }
            }
        }
    }
    if invalid {
        bail!("invalid scenario file(s): nothing was run");
    }
    let replay = match &args.replay {
        Some(json) => Some(serde_json::from_str(json).context("--replay takes a case as JSON, as printed for a failing case")?),
        None => None,
    };
    let opts = verify::VerifyOptions {
        cases: args.cases,
        seed: args.seed,
        case_seed: args.case_seed,
        replay,
        parallel: args.parallel.max(1),
        client_timeout: Duration::from_millis(args.client_timeout_ms.max(5)),
    };
    let mut report = verify::VerifyReport { scenarios: Vec::new() };
    for scenario in &scenarios {
        let bar = (!args.json).then(|| {
            let bar = indicatif::ProgressBar::new(opts.cases.unwrap_or(0));
            bar.set_style(indicatif::ProgressStyle::with_template("{msg:30} {bar:30} {pos}/{len} cases  {elapsed}").expect("valid template"));
            bar.set_message(scenario.name.clone());
            bar
        });
        let result = verify::run_scenario(scenario, &opts, |done, total| {
            if let Some(bar) = &bar {
                bar.set_length(total);
                bar.set_position(done);
            }
        })
        .await;
        if let Some(bar) = bar {
            bar.finish_and_clear();
            print!("{}", verify::render_one(&result));
        }
        report.scenarios.push(result);
    }
    if let Some(path) = &args.junit {
        std::fs::write(path, verify::junit(&report)?).with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", verify::render_summary(&report));
    }
    Ok(if report.all_passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `stasis discover` works without a config file; with one, its ONTAP cluster traces NFS
/// exports to volumes and its catalog tells what is protected.
fn discover_context(config: &std::path::Path, cluster: Option<&str>) -> anyhow::Result<stasis_k8s::cli::DiscoverContext> {
    if !config.exists() {
        return Ok(Default::default());
    }
    let rt = stasis::runtime::Runtime::load(config)?;
    let name = match (cluster, rt.config.clusters.as_slice()) {
        (Some(name), _) => Some(name.to_string()),
        (None, [only]) => Some(only.name.clone()),
        (None, _) => None,
    };
    let storage: Option<std::sync::Arc<dyn stasis_core::storage::Storage>> = match name {
        Some(name) => Some(rt.client(&name)?),
        None => None,
    };
    Ok(stasis_k8s::cli::DiscoverContext { storage, catalog: Some(rt.catalog.clone()) })
}

/// The operator's ONTAP clusters and catalog, from `stasis.yaml`; the Kubernetes client from
/// the kubeconfig or the in-cluster service account. Backups and Restores run through the same
/// components as `stasis k8s backup|restore` (the database's credentials are read from the
/// Secret its pod template refers to).
async fn operator_wiring(config: &std::path::Path, cluster: Option<&str>) -> anyhow::Result<stasis_k8s::cli::OperatorWiring> {
    let rt = stasis::runtime::Runtime::load(config)?;
    let name = match (cluster, rt.config.clusters.as_slice()) {
        (Some(name), _) => name.to_string(),
        (None, [only]) => only.name.clone(),
        (None, _) => bail!("{} names several ONTAP clusters: choose the apps' one with --cluster NAME", config.display()),
    };
    let storage: std::sync::Arc<dyn stasis_core::storage::Storage> = rt.client(&name)?;
    let mut replication = std::collections::BTreeMap::new();
    for c in &rt.config.clusters {
        let client: std::sync::Arc<dyn stasis_core::replication::Replication> = rt.client(&c.name)?;
        replication.insert(c.name.clone(), client);
    }
    let client = stasis_k8s::KubeCluster::client_from_env().await?;
    let wiring = stasis_k8s::cli::OperatorWiring::in_cluster(client, storage);
    Ok(stasis_k8s::cli::OperatorWiring { replication, catalog: Some(rt.catalog.clone()), ..wiring })
}

/// `stasis k8s` needs the app of `stasis.yaml`: its volumes, cluster and `mysql` credentials.
fn k8s_context(config: &std::path::Path, app: &str) -> anyhow::Result<stasis_k8s::cli::K8sContext> {
    let rt = stasis::runtime::Runtime::load(config)?;
    let (i, app) = rt.config.app(app).map_err(|e| anyhow::anyhow!(e))?;
    let Some(mysql) = &app.mysql else { bail!("app {}: stasis k8s needs its `mysql` section (user, password_file, port)", app.name) };
    let password = stasis::config::read_secret(&format!("apps[{i}].mysql.password_file"), &rt.config.resolve(&mysql.password_file))?;
    Ok(stasis_k8s::cli::K8sContext {
        orchestrator: rt.orchestrator(app)?,
        catalog: rt.catalog.clone(),
        storage: rt.client(&app.cluster)?,
        app: rt.config.app_spec(app),
        namespace: app.namespace.clone(),
        db_port: mysql.port,
        db_user: mysql.user.clone(),
        db_password: password,
    })
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
    let config = stasis::cli::config_path(cli.config.as_deref());
    // torture and verify install their own subscriber: it captures log lines for the secret check.
    if !matches!(cli.command, Command::Demo(_) | Command::Torture(_) | Command::Verify(_)) {
        stasis::telemetry::init(cli.log_format, if matches!(cli.command, Command::Serve(_) | Command::Operator(_)) { "info" } else { "warn" });
    }
    let result = runtime.block_on(async {
        match cli.command {
            Command::Backup(args) => stasis::cli::backup(&config, args).await,
            Command::Restore(args) => stasis::cli::restore(&config, args).await,
            Command::Backups(stasis::cli::BackupsCommand::List(args)) => stasis::cli::backups_list(&config, args).await,
            Command::Simdb(command) => stasis::cli::simdb(&config, command).await,
            Command::Serve(args) => stasis::serve_cmd::serve(&config, args).await,
            Command::Dr(command) => stasis::dr_cmd::dr(&config, command).await,
            Command::Failover(args) => stasis::dr_cmd::failover(&config, args).await,
            Command::Failback(args) => stasis::dr_cmd::failback(&config, args).await,
            Command::Torture(args) => run_torture(args).await,
            Command::Demo(args) => stasis::demo_cmd::run(args).await,
            Command::Verify(args) => run_verify(args).await,
            Command::Crds => stasis_k8s::cli::crds().map(|()| ExitCode::SUCCESS),
            Command::Operator(args) => {
                let wiring = operator_wiring(&config, args.cluster.as_deref()).await?;
                stasis_k8s::cli::operator(args, wiring).await.map(|()| ExitCode::SUCCESS)
            }
            Command::Discover(args) => {
                let ctx = discover_context(&config, args.cluster.as_deref())?;
                stasis_k8s::cli::discover(args, ctx).await.map(|()| ExitCode::SUCCESS)
            }
            Command::K8s(command) => {
                let app = match &command {
                    stasis_k8s::cli::K8sCommand::Backup(a) => a.app.clone(),
                    stasis_k8s::cli::K8sCommand::Restore(a) => a.app.clone(),
                };
                let ctx = k8s_context(&config, &app)?;
                stasis_k8s::cli::k8s(command, ctx).await.map(|()| ExitCode::SUCCESS)
            }
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
