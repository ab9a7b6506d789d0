//! `stasis demo`: picks the workload, runs the walk-through (`stasis_scenarios::demo`),
//! prints its narration with progress bars or one JSON object, and with `--keep-running`
//! also hosts the dashboard (this package's server) over the demo's app until Ctrl-C.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::ValueEnum;
use stasis_scenarios::demo::{self, DemoOptions, Workload};

use crate::server::{self, AppHandle, Registry};

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Print one JSON object instead of the narration.
    #[arg(long)]
    json: bool,
    /// Leave the simulated clusters, the database and the dashboard running at the end
    /// (URLs, users, passwords and the API token are printed) until Ctrl-C.
    #[arg(long)]
    keep_running: bool,
    /// `auto`: MariaDB when mariadbd and FUSE are available here, else the simulated database.
    #[arg(long, value_enum, default_value = "auto")]
    workload: WorkloadArg,
}

#[derive(Clone, Copy, ValueEnum)]
enum WorkloadArg {
    Auto,
    Simdb,
    Mariadb,
}

/// The demo's narration on stdout, with a progress bar (on stderr, when it is a terminal)
/// for the long steps. Silent in JSON mode.
struct Console {
    quiet: bool,
    bar: std::sync::Mutex<Option<indicatif::ProgressBar>>,
}

impl demo::Observer for Console {
    fn say(&self, line: &str) {
        if self.quiet {
            return;
        }
        match self.bar.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            Some(bar) => bar.suspend(|| println!("{line}")),
            None => println!("{line}"),
        }
    }

    fn progress(&self, label: &str, done: u64, total: u64) {
        if self.quiet {
            return;
        }
        let mut bar = self.bar.lock().unwrap_or_else(|p| p.into_inner());
        if done >= total {
            if let Some(bar) = bar.take() {
                bar.finish_and_clear();
            }
            return;
        }
        let bar = bar.get_or_insert_with(|| {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(indicatif::ProgressStyle::with_template("      {bar:30} {pos}/{len} {msg}  {elapsed}").expect("valid template"));
            bar
        });
        bar.set_message(label.to_string());
        bar.set_position(done);
    }
}

async fn run_interruptible(opts: &DemoOptions, console: &Console) -> anyhow::Result<demo::DemoRun> {
    // Ctrl-C drops the run: its guards stop the servers and unmount the volumes.
    tokio::select! {
        r = demo::run(opts, console) => r,
        _ = tokio::signal::ctrl_c() => bail!("interrupted: everything the demo started was stopped"),
    }
}

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    if std::env::var_os("STASIS_LOG").is_some() {
        let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_env("STASIS_LOG")).with_writer(std::io::stderr).try_init();
    }
    let console = Console { quiet: args.json, bar: std::sync::Mutex::new(None) };
    let asked = match args.workload {
        WorkloadArg::Auto => Workload::Auto,
        WorkloadArg::Simdb => Workload::Simdb,
        WorkloadArg::Mariadb => Workload::Mariadb,
    };
    let (workload, mut why_simdb) = demo::choose(asked);
    let mut run = None;
    if workload == Workload::Mariadb {
        let opts = DemoOptions { keep_running: args.keep_running, ..DemoOptions::mariadb() };
        match run_interruptible(&opts, &console).await {
            Ok(r) => run = Some(r),
            Err(e) if asked == Workload::Auto && !format!("{e}").starts_with("interrupted") => {
                let reason = format!("the MariaDB walk-through could not be set up ({e:#})");
                demo::Observer::say(&console, &format!("{reason}: falling back to the simulated database"));
                why_simdb = Some(reason);
            }
            Err(e) => return Err(e.context("the MariaDB demo could not start")),
        }
    }
    let run = match run {
        Some(r) => r,
        None => {
            let opts = DemoOptions { keep_running: args.keep_running, why_simdb, ..DemoOptions::simdb() };
            run_interruptible(&opts, &console).await.context("the demo could not start")?
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&run.report).context("serialising the report")?);
    }
    if let Some(kept) = run.kept {
        let mut info = kept.info.clone();
        let dashboard = start_dashboard(&kept).await;
        match &dashboard {
            Ok((url, token, _)) => {
                info.push(format!("  dashboard   {url}/#token={token}"));
                info.push(format!("  REST API    {url}/api/v1   Authorization: Bearer {token}   (OpenAPI at {url}/api-docs/openapi.json)"));
            }
            Err(e) => info.push(format!("  dashboard   not started: {e:#}")),
        }
        // In JSON mode stdout holds exactly one object: the rest goes to stderr.
        for line in info {
            if args.json {
                eprintln!("{line}");
            } else {
                println!("{line}");
            }
        }
        let waited = tokio::signal::ctrl_c().await.context("waiting for Ctrl-C");
        if let Ok((_, _, stop)) = dashboard {
            stop.notify_one();
        }
        kept.stop().await;
        if !args.json {
            println!("stopped: servers, mounts and simulators");
        }
        waited?;
    }
    Ok(if run.report.ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Serve the dashboard and REST API over the demo's app on a free loopback port, with a
/// token generated for this run. Returns its URL, the token and the shutdown switch.
async fn start_dashboard(kept: &demo::Kept) -> anyhow::Result<(String, String, Arc<tokio::sync::Notify>)> {
    let token = format!("{:016x}{:016x}", rand::random::<u64>(), rand::random::<u64>());
    let app = AppHandle::new(kept.app.clone(), kept.cluster.clone(), kept.orchestrator.clone(), Ok(kept.plugin.clone()));
    let registry = Registry { apps: vec![app], catalog: kept.catalog.clone(), title: "stasis demo".into() };
    let (router, _state) = server::router(registry, token.clone())?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding the dashboard to 127.0.0.1")?;
    let url = format!("http://{}", listener.local_addr()?);
    let stop = Arc::new(tokio::sync::Notify::new());
    let stopped = stop.clone();
    tokio::spawn(async move {
        if let Err(e) = server::serve(listener, router, None, async move { stopped.notified().await }).await {
            eprintln!("the dashboard stopped: {e}");
        }
    });
    Ok((url, token, stop))
}
