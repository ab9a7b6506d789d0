//! `stasis torture`: seeded campaigns of backup/restore cases with injected faults, each
//! checked against the invariants in DESIGN.md. The same seed gives the same cases; a
//! failing case is shrunk and printed with the command that replays it.

pub mod dr;
pub mod spec;
pub mod world;
pub mod wrappers;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;

pub use spec::{CaseSpec, FaultKind, FaultSet};
pub use world::{run_case, CaseConfig, CaseResult, Mutant};
pub use wrappers::PluginMode;

#[derive(Clone, Debug)]
pub struct TortureOptions {
    pub cases: u64,
    pub seed: u64,
    pub mode: PluginMode,
    pub faults: FaultSet,
    pub mutant: Option<Mutant>,
    pub freeze_timeout: Duration,
    /// The ONTAP client's request timeout in the cases.
    pub client_timeout: Duration,
    /// Shrink the first failing case (app mode); off for negative controls, where failures
    /// are the expected finding.
    pub shrink: bool,
    /// Run exactly this case instead of generating cases (a replay).
    pub replay: Option<CaseSpec>,
    /// Stop after this many failing cases (their seeds are listed).
    pub failures_max: usize,
    /// Cases run at once. A case mostly waits (injected hangs, late answers), so a few in
    /// flight use the machine better; each has its own simulator and seed, so results do
    /// not depend on it.
    pub parallel: usize,
    /// Generate cases from this strategy instead of the default one (a scenario file's).
    pub strategy: Option<proptest::strategy::BoxedStrategy<CaseSpec>>,
}

impl Default for TortureOptions {
    fn default() -> Self {
        TortureOptions {
            cases: 100,
            seed: 1,
            mode: PluginMode::App,
            faults: FaultSet::all(),
            mutant: None,
            freeze_timeout: Duration::from_millis(300),
            client_timeout: world::CLIENT_TIMEOUT_DEFAULT,
            shrink: true,
            replay: None,
            failures_max: 5,
            parallel: 2,
            strategy: None,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct FailingCase {
    pub case_seed: u64,
    pub violations: Vec<String>,
    /// The smallest case proptest found that still fails (JSON), if shrinking ran.
    pub shrunk: Option<CaseSpec>,
    /// The command that reproduces it.
    pub reproduce: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct TortureReport {
    pub mode: String,
    pub seed: u64,
    pub cases: u64,
    pub backups: u64,
    pub backups_complete: u64,
    pub restores: u64,
    pub faults: BTreeMap<String, u64>,
    pub inconsistent_restores: u64,
    pub freeze_bound_breaches: u64,
    pub orphans: u64,
    pub duplicate_snapshots: u64,
    pub secret_leaks: u64,
    pub other_violations: u64,
    pub freeze_window_ms: Percentiles,
    /// The worst achieved RPO of any case, in acknowledged transactions no live backup held.
    pub rpo_transactions_max: u64,
    pub first_failing_seed: Option<u64>,
    pub failing_cases: Vec<FailingCase>,
    pub seconds: f64,
    pub cases_per_minute: f64,
}

impl TortureReport {
    pub fn violations(&self) -> u64 {
        self.inconsistent_restores + self.freeze_bound_breaches + self.orphans + self.duplicate_snapshots + self.secret_leaks + self.other_violations
    }
}

/// Everything the orchestrator logs during a campaign, so the checker can look for secrets.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    pub fn take(&self) -> String {
        let mut buf = self.0.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&std::mem::take(&mut *buf)).into_owned()
    }
}

impl Write for LogCapture {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Install (once per process) a subscriber that records every log line at `info` and
/// above for the secret check.
pub fn capture_logs() -> LogCapture {
    static CAPTURE: OnceLock<LogCapture> = OnceLock::new();
    CAPTURE
        .get_or_init(|| {
            let capture = LogCapture::default();
            let writer = capture.clone();
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("STASIS_LOG").unwrap_or_else(|_| "info".into()))
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .try_init();
            capture
        })
        .clone()
}

fn percentiles(mut values: Vec<f64>) -> Percentiles {
    if values.is_empty() {
        return Percentiles { p50: 0.0, p99: 0.0, max: 0.0 };
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    Percentiles { p50: at(0.5), p99: at(0.99), max: *values.last().expect("non-empty") }
}

fn mode_name(mode: PluginMode) -> &'static str {
    match mode {
        PluginMode::App => "app",
        PluginMode::Crash => "crash",
        PluginMode::EarlyThaw => "early-thaw-mutant",
    }
}

/// Runs one case of a campaign: the simulated database ([`SimdbRunner`]) or a real server
/// (`verify::real`). Generation, shrinking and the report are the same for all.
pub trait CaseRunner: Sync {
    fn run<'a>(&'a self, spec: &'a CaseSpec, cfg: CaseConfig) -> futures::future::BoxFuture<'a, CaseResult>;
}

/// Cases on the simulated database, in the simulator's data plane.
pub struct SimdbRunner;

impl CaseRunner for SimdbRunner {
    fn run<'a>(&'a self, spec: &'a CaseSpec, cfg: CaseConfig) -> futures::future::BoxFuture<'a, CaseResult> {
        Box::pin(run_case(spec, cfg))
    }
}

struct Campaign<'a> {
    opts: &'a TortureOptions,
    logs: LogCapture,
    runner: &'a dyn CaseRunner,
}

impl Campaign<'_> {
    fn config(&self, case_seed: u64) -> CaseConfig {
        CaseConfig {
            mode: self.opts.mode,
            mutant: self.opts.mutant,
            freeze_timeout: self.opts.freeze_timeout,
            client_timeout: self.opts.client_timeout,
            canary: format!("canary-{case_seed:016x}-pw"),
        }
    }

    /// Run one case and add the secret check: the canary password in no log line.
    async fn run(&self, spec: &CaseSpec, case_seed: u64) -> CaseResult {
        self.run_batch(&[(spec.clone(), case_seed)]).await.pop().expect("one case in, one result out")
    }

    /// Run cases at once; the logs of the batch are searched for every case's canary (the
    /// log capture is shared, and each canary is unique to its case).
    async fn run_batch(&self, cases: &[(CaseSpec, u64)]) -> Vec<CaseResult> {
        let configs: Vec<CaseConfig> = cases.iter().map(|(_, seed)| self.config(*seed)).collect();
        let runs = cases.iter().zip(&configs).map(|((spec, _), cfg)| self.runner.run(spec, cfg.clone()));
        let mut results = futures::future::join_all(runs).await;
        let logs = self.logs.take();
        for (result, cfg) in results.iter_mut().zip(&configs) {
            if logs.contains(&cfg.canary) {
                result.violations.push("the array password appeared in the logs".into());
            }
        }
        results
    }
}

fn command(opts: &TortureOptions, case_seed: u64) -> String {
    let faults = if opts.faults == FaultSet::all() {
        "all".to_string()
    } else if opts.faults.0.is_empty() {
        "none".to_string()
    } else {
        opts.faults.0.iter().map(|k| k.name()).collect::<Vec<_>>().join(",")
    };
    format!("stasis torture --case-seed {case_seed} --mode {} --faults {faults}", mode_name(opts.mode))
}

/// Run a campaign. `progress` is called after each case with (done, total).
pub async fn run_campaign(opts: &TortureOptions, progress: impl FnMut(u64, u64)) -> TortureReport {
    run_campaign_with(opts, &SimdbRunner, progress).await
}

/// A campaign whose cases `runner` runs.
pub async fn run_campaign_with(opts: &TortureOptions, runner: &dyn CaseRunner, mut progress: impl FnMut(u64, u64)) -> TortureReport {
    let started = Instant::now();
    let campaign = Campaign { opts, logs: capture_logs(), runner };
    let mut report = TortureReport {
        mode: mode_name(opts.mode).into(),
        seed: opts.seed,
        cases: 0,
        backups: 0,
        backups_complete: 0,
        restores: 0,
        faults: FaultKind::ALL.iter().filter(|k| opts.faults.0.contains(k)).map(|k| (k.name(), 0)).collect(),
        inconsistent_restores: 0,
        freeze_bound_breaches: 0,
        orphans: 0,
        duplicate_snapshots: 0,
        secret_leaks: 0,
        other_violations: 0,
        freeze_window_ms: percentiles(Vec::new()),
        rpo_transactions_max: 0,
        first_failing_seed: None,
        failing_cases: Vec::new(),
        seconds: 0.0,
        cases_per_minute: 0.0,
    };
    let mut windows = Vec::new();
    let total = if opts.replay.is_some() { 1 } else { opts.cases };
    let parallel = opts.parallel.max(1) as u64;
    for first in (0..total).step_by(parallel as usize) {
        let batch: Vec<(u64, Box<dyn proptest::strategy::ValueTree<Value = CaseSpec>>)> = (first..total.min(first + parallel))
            .map(|index| {
                let case_seed = if opts.replay.is_some() { opts.seed } else { spec::case_seed(opts.seed, index) };
                (case_seed, match &opts.strategy {
                    Some(strategy) => spec::generate_from(case_seed, strategy),
                    None => spec::generate(case_seed, &opts.faults),
                })
            })
            .collect();
        let cases: Vec<(CaseSpec, u64)> = batch.iter().map(|(seed, tree)| (opts.replay.clone().unwrap_or_else(|| tree.current()), *seed)).collect();
        let results = campaign.run_batch(&cases).await;
        for (((case_seed, tree), result), index) in batch.into_iter().zip(results).zip(first..) {
            report.add_case(opts, &campaign, case_seed, tree, result, &mut windows).await;
            progress(index + 1, total);
        }
    }
    report.freeze_window_ms = percentiles(windows);
    report.seconds = started.elapsed().as_secs_f64();
    report.cases_per_minute = report.cases as f64 * 60.0 / report.seconds.max(1e-9);
    report
}

impl TortureReport {
    async fn add_case(&mut self, opts: &TortureOptions, campaign: &Campaign<'_>, case_seed: u64, tree: Box<dyn proptest::strategy::ValueTree<Value = CaseSpec>>, result: CaseResult, windows: &mut Vec<f64>) {
        let report = self;
        report.cases += 1;
        report.backups += result.backups;
        report.backups_complete += result.backups_complete;
        report.restores += result.restores;
        for (kind, n) in &result.faults {
            *report.faults.entry(kind.name()).or_insert(0) += n;
        }
        report.inconsistent_restores += result.inconsistent_restores;
        report.freeze_bound_breaches += result.freeze_bound_breaches;
        report.orphans += result.orphans;
        report.duplicate_snapshots += result.duplicate_snapshots;
        report.rpo_transactions_max = report.rpo_transactions_max.max(result.rpo_transactions_max);
        let leaked = result.violations.iter().any(|v| v.contains("password appeared"));
        report.secret_leaks += u64::from(leaked);
        let counted = result.inconsistent_restores + result.freeze_bound_breaches + result.orphans + result.duplicate_snapshots + u64::from(leaked);
        if result.violations.len() as u64 > counted {
            report.other_violations += result.violations.len() as u64 - counted;
        }
        windows.extend(result.freeze_windows_ms.iter().copied());
        if !result.violations.is_empty() {
            report.first_failing_seed.get_or_insert(case_seed);
            if report.failing_cases.len() < opts.failures_max {
                let shrunk = if opts.shrink && opts.replay.is_none() && report.failing_cases.is_empty() { Some(shrink(campaign, tree, case_seed).await) } else { None };
                report.failing_cases.push(FailingCase { case_seed, violations: result.violations.clone(), shrunk, reproduce: command(opts, case_seed) });
            }
        }
    }
}

/// How many simplification steps the shrinker tries before it settles.
const SHRINK_STEPS_MAX: u32 = 64;

async fn shrink(campaign: &Campaign<'_>, mut tree: Box<dyn proptest::strategy::ValueTree<Value = CaseSpec>>, case_seed: u64) -> CaseSpec {
    let mut smallest = tree.current();
    let mut failing = true;
    for _ in 0..SHRINK_STEPS_MAX {
        let moved = if failing { tree.simplify() } else { tree.complicate() };
        if !moved {
            break;
        }
        let candidate = tree.current();
        failing = !campaign.run(&candidate, case_seed).await.violations.is_empty();
        if failing {
            smallest = candidate;
        }
    }
    smallest
}

/// The report as a table for people.
pub fn render_table(report: &TortureReport) -> String {
    let mut out = String::new();
    let line = |out: &mut String, k: &str, v: String| out.push_str(&format!("  {k:<26} {v}\n"));
    out.push_str(&format!("stasis torture: mode={} seed={} cases={} ({:.0} cases/min)\n", report.mode, report.seed, report.cases, report.cases_per_minute));
    line(&mut out, "backups (complete)", format!("{} ({})", report.backups, report.backups_complete));
    line(&mut out, "restores checked", report.restores.to_string());
    line(&mut out, "inconsistent restores", report.inconsistent_restores.to_string());
    line(&mut out, "freeze-bound breaches", report.freeze_bound_breaches.to_string());
    line(&mut out, "orphans", report.orphans.to_string());
    line(&mut out, "duplicate snapshots", report.duplicate_snapshots.to_string());
    line(&mut out, "secret leaks", report.secret_leaks.to_string());
    line(&mut out, "other violations", report.other_violations.to_string());
    line(&mut out, "freeze window ms", format!("p50 {:.2}  p99 {:.2}  max {:.2}", report.freeze_window_ms.p50, report.freeze_window_ms.p99, report.freeze_window_ms.max));
    out.push_str("  faults injected:\n");
    for (kind, n) in &report.faults {
        out.push_str(&format!("    {kind:<24} {n}\n"));
    }
    for case in &report.failing_cases {
        out.push_str(&format!("  FAILING case seed {}:\n", case.case_seed));
        for v in case.violations.iter().take(5) {
            out.push_str(&format!("    - {v}\n"));
        }
        out.push_str(&format!("    reproduce: {}\n", case.reproduce));
        if let Some(shrunk) = &case.shrunk {
            let json = serde_json::to_string(shrunk).unwrap_or_default();
            out.push_str(&format!("    shrunk case: {json}\n"));
            out.push_str(&format!("    replay it:   stasis torture --mode {} --seed {} --replay '{json}'\n", report.mode, case.case_seed));
        }
    }
    out.push_str(&format!("verdict: {}\n", if report.violations() == 0 { "PASS (no violation)" } else { "VIOLATIONS FOUND" }));
    out
}
