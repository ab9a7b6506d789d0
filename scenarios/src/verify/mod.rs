//! `stasis verify`: scenario files (`scenarios/*.yaml`, checked against
//! `scenarios/scenario.schema.json`) run as seeded campaigns on the torture harness. Each
//! scenario gets a verdict against its own expectations (a negative control passes when it
//! finds the violations it exists to catch), a JUnit test case, and for any failure the
//! one command that reproduces it.

pub mod dr;
pub mod exec;
pub mod format;
pub mod real;
pub mod yaml;

use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use serde::Serialize;

pub use format::{load, parse, Scenario, ScenarioError};
use format::{Kind, Mode, RestoreMode, Step, Verdict, Violation, WhichBackup};

use crate::torture::spec::{self, CaseSpec, Fault, Op};
use crate::torture::{self, FaultKind, FaultSet, PluginMode, TortureOptions, TortureReport};

/// Knobs of a `stasis verify` run; `None` takes the scenario's own value.
#[derive(Clone, Debug)]
pub struct VerifyOptions {
    pub cases: Option<u64>,
    pub seed: Option<u64>,
    /// Run only the case with this seed (as printed for a failure).
    pub case_seed: Option<u64>,
    /// Run exactly this case (the shrunk case printed for a failure), with `case_seed`.
    pub replay: Option<CaseSpec>,
    pub parallel: usize,
    pub client_timeout: Duration,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions { cases: None, seed: None, case_seed: None, replay: None, parallel: 2, client_timeout: crate::torture::world::CLIENT_TIMEOUT_DEFAULT }
    }
}

const CASES_DEFAULT: u64 = 20;
const SEED_DEFAULT: u64 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The checker concluded what the scenario expects.
    Pass,
    /// It did not: see the reasons and the reproduce command.
    Fail,
    /// The scenario asks for something this build cannot run yet: never a pass.
    Unsupported,
}

#[derive(Clone, Debug, Serialize)]
pub struct ScenarioResult {
    pub name: String,
    pub file: String,
    pub outcome: Outcome,
    /// What the verdict rests on (for a pass) or why it failed.
    pub reasons: Vec<String>,
    /// The one command that reproduces the failure.
    pub reproduce: Option<String>,
    pub seconds: f64,
    pub report: Option<TortureReport>,
}

/// Why this build cannot run the scenario yet, if it cannot.
pub fn unsupported(s: &Scenario) -> Option<String> {
    let failover = s.steps().any(|st| matches!(st, Step::Failover { .. }));
    match s.app.kind {
        Kind::Simdb if failover => dr::unsupported(s),
        Kind::Simdb => None,
        Kind::Mysql | Kind::Postgres => {
            let kind = if s.app.kind == Kind::Mysql { "mysql" } else { "postgres" };
            if failover {
                Some(format!("kind {kind}: failover cases run on the simulated database (kind simdb) in this build"))
            } else if s.faults.is_some() {
                Some(format!("kind {kind}: faults are injected on the simulated database (kind simdb) in this build; campaigns on a real server run without them (drop the faults section)"))
            } else if s.mode != Mode::App {
                Some(format!("kind {kind}: mode crash runs on the simulated database (kind simdb) in this build"))
            } else if s.app.existing_snapshots > 0 {
                Some(format!("kind {kind}: existing_snapshots is simulated on kind simdb only in this build"))
            } else if s.app.kind == Kind::Mysql && s.app.volumes.len() != 1 {
                Some("kind mysql: the harness runs MariaDB with its data directory on one volume".into())
            } else {
                None
            }
        }
        Kind::ExecHooks => {
            let in_place = s.steps().any(|st| matches!(st, Step::Restore { mode: RestoreMode::InPlace, .. }));
            if failover {
                Some("kind exec-hooks: failover cases run on the simulated database (kind simdb) in this build".into())
            } else if s.faults.is_some() {
                Some("kind exec-hooks: faults are injected on the simulated database (kind simdb) in this build; drop the faults section".into())
            } else if s.mode != Mode::App {
                Some("kind exec-hooks: mode crash runs on the simulated database; for a negative control give hooks that do not quiesce".into())
            } else if s.app.existing_snapshots > 0 {
                Some("kind exec-hooks: existing_snapshots is simulated on kind simdb only in this build".into())
            } else if in_place {
                Some("kind exec-hooks: the reference app is restored to clones only in this build (use restore: {mode: clone})".into())
            } else {
                None
            }
        }
    }
}

/// A case that runs real processes on FUSE mounts: one at a time, seeds reproduce it.
fn is_real_server(s: &Scenario) -> bool {
    matches!(s.app.kind, Kind::Mysql | Kind::Postgres | Kind::ExecHooks)
}

fn fault_strategy(step: &Step, s: &Scenario) -> BoxedStrategy<Option<Fault>> {
    let Some(faults) = &s.faults else { return Just(None).boxed() };
    let mut kinds: Vec<FaultKind> = faults.kinds.iter().copied().filter(|k| step.fault_kinds().contains(k)).collect();
    // Where a crash may hit: the world picks `workflow_steps[target % len]`.
    let crash_targets: Vec<u8> = match &faults.at_steps {
        None => (0..step.workflow_steps().len() as u8).collect(),
        Some(at) => step.workflow_steps().iter().enumerate().filter(|(_, w)| at.iter().any(|a| a.0 == **w)).map(|(i, _)| i as u8).collect(),
    };
    if crash_targets.is_empty() {
        kinds.retain(|k| *k != FaultKind::OrchestratorCrash);
    }
    if kinds.is_empty() || faults.probability <= 0.0 {
        return Just(None).boxed();
    }
    let crash_targets = if crash_targets.is_empty() { vec![0] } else { crash_targets };
    let fault = (proptest::sample::select(kinds), any::<u8>(), any::<u8>(), proptest::sample::select(crash_targets))
        .prop_map(|(kind, target, variant, crash_target)| Fault { kind, target: if kind == FaultKind::OrchestratorCrash { crash_target } else { target }, variant });
    proptest::option::weighted(faults.probability.min(1.0), fault).boxed()
}

fn range((low, high): (u8, u8)) -> BoxedStrategy<u8> {
    (low..=high).boxed()
}

fn op_strategy(step: &Step, s: &Scenario) -> BoxedStrategy<Op> {
    let fault = fault_strategy(step, s);
    match step {
        Step::Work { commits, background_steps } => {
            let commits = range(commits.unwrap_or(s.workload.commits).bounds());
            let background = range(background_steps.unwrap_or(s.workload.background_steps).bounds());
            (commits, background).prop_map(|(commits, background_steps)| Op::Work { commits, background_steps }).boxed()
        }
        Step::Backup => fault.prop_map(|fault| Op::Backup { fault }).boxed(),
        Step::Restore { mode, backup } => {
            let which = match backup {
                WhichBackup::Any => any::<u8>().boxed(),
                WhichBackup::Oldest => Just(0u8).boxed(),
            };
            let in_place = *mode == RestoreMode::InPlace;
            (which, fault).prop_map(move |(backup, fault)| if in_place { Op::RestoreInPlace { backup, fault } } else { Op::RestoreClone { backup, fault } }).boxed()
        }
        Step::Retention { keep_last } => {
            let keep_last = *keep_last;
            fault.prop_map(move |fault| Op::Retention { keep_last, fault }).boxed()
        }
        // DR cases draw their own disaster (`dr::run`); the strategy is not used for them.
        Step::Failover { .. } => Just(Op::Work { commits: 0, background_steps: 0 }).boxed(),
    }
}

/// The cases a scenario stands for: its schedule, with workload sizes and faults drawn from
/// each case's seed (and shrunk along the same tree).
pub fn case_strategy(s: &Scenario) -> BoxedStrategy<CaseSpec> {
    let ops: Vec<BoxedStrategy<Op>> = s.steps().map(|st| op_strategy(st, s)).collect();
    let two_volumes = s.app.volumes.len() == 2;
    let foreign_snapshots = s.app.existing_snapshots;
    (any::<u64>(), ops).prop_map(move |(seed, ops)| CaseSpec { seed, two_volumes, ops, foreign_snapshots }).boxed()
}

/// The client's request timeout for a scenario's cases. Short timeouts only make injected
/// late answers (request_timeout) cheap; without them a longer one costs nothing and keeps a
/// slow answer (a listing of 1023 snapshots in a debug build) from looking like a fault.
fn client_timeout(s: &Scenario, opts: &VerifyOptions) -> Duration {
    let late_answers = s.faults.as_ref().is_some_and(|f| f.kinds.contains(&FaultKind::RequestTimeout));
    if late_answers {
        opts.client_timeout
    } else {
        opts.client_timeout.max(CLIENT_TIMEOUT_WITHOUT_LATE_ANSWERS)
    }
}

const CLIENT_TIMEOUT_WITHOUT_LATE_ANSWERS: Duration = Duration::from_secs(2);

fn shell_quote(text: &str) -> String {
    if !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,".contains(c)) {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

fn count(report: &TortureReport, v: Violation) -> u64 {
    match v {
        Violation::InconsistentRestores => report.inconsistent_restores,
        Violation::FreezeBoundBreaches => report.freeze_bound_breaches,
        Violation::Orphans => report.orphans,
        Violation::DuplicateSnapshots => report.duplicate_snapshots,
        Violation::SecretLeaks => report.secret_leaks,
        Violation::Other => report.other_violations,
    }
}

const ALL_VIOLATIONS: [Violation; 6] = [Violation::InconsistentRestores, Violation::FreezeBoundBreaches, Violation::Orphans, Violation::DuplicateSnapshots, Violation::SecretLeaks, Violation::Other];

/// Run one scenario to its verdict.
pub async fn run_scenario(s: &Scenario, opts: &VerifyOptions, progress: impl FnMut(u64, u64)) -> ScenarioResult {
    run_scenario_with(s, opts, None, progress).await
}

/// Run one scenario with a broken DR system (`dr_mutant`, for negative controls).
pub async fn run_scenario_with(s: &Scenario, opts: &VerifyOptions, dr_mutant: Option<crate::torture::dr::DrMutant>, progress: impl FnMut(u64, u64)) -> ScenarioResult {
    let file = s.path.display().to_string();
    let mut result = ScenarioResult { name: s.name.clone(), file: file.clone(), outcome: Outcome::Unsupported, reasons: Vec::new(), reproduce: None, seconds: 0.0, report: None };
    if let Some(why) = unsupported(s) {
        result.reasons.push(why);
        return result;
    }
    let strategy = case_strategy(s);
    let seed = opts.seed.or(s.campaign.seed).unwrap_or(SEED_DEFAULT);
    let cases = opts.cases.or(s.campaign.cases).unwrap_or(CASES_DEFAULT);
    let replay = match (opts.case_seed, &opts.replay) {
        (Some(_), Some(case)) => Some(case.clone()),
        (Some(case_seed), None) => Some(spec::generate_from(case_seed, &strategy).current()),
        (None, _) => None,
    };
    let mode = match s.mode {
        Mode::App => PluginMode::App,
        Mode::Crash => PluginMode::Crash,
    };
    let negative_control = s.expect.verdict == Verdict::Violations;
    let torture_opts = TortureOptions {
        cases: if replay.is_some() { 1 } else { cases },
        seed: opts.case_seed.unwrap_or(seed),
        mode,
        faults: FaultSet(s.faults.as_ref().map(|f| f.kinds.clone()).unwrap_or_default()),
        mutant: None,
        freeze_timeout: Duration::from_millis(s.app.freeze_timeout_ms),
        client_timeout: client_timeout(s, opts),
        // A negative control's failures are its findings: nothing to shrink. A case on a real
        // server takes tens of seconds: its seed reproduces it, shrinking would take hours.
        shrink: !negative_control && !is_real_server(s),
        replay,
        failures_max: 3,
        // One real server at a time: a case's servers and FUSE threads fill two cores.
        parallel: if is_real_server(s) { 1 } else { opts.parallel.max(1) },
        strategy: Some(strategy),
    };
    let report = if s.steps().any(|st| matches!(st, Step::Failover { .. })) {
        dr::run(s, cases, seed, opts.case_seed, opts.parallel, dr_mutant, progress).await
    } else {
        let exec_runner = exec::ExecRunner { app: s.app.clone() };
        let runner: &dyn torture::CaseRunner = match s.app.kind {
            Kind::Mysql => &real::RealRunner { engine: real::Engine::Mysql },
            Kind::Postgres => &real::RealRunner { engine: real::Engine::Postgres },
            Kind::ExecHooks => &exec_runner,
            Kind::Simdb => &torture::SimdbRunner,
        };
        torture::run_campaign_with(&torture_opts, runner, progress).await
    };
    result.seconds = report.seconds;
    let here = if opts.case_seed.is_some() { format!("case seed {}", torture_opts.seed) } else { format!("{} cases, seed {seed}", report.cases) };
    let mut problems = Vec::new();
    let mut grounds = Vec::new();
    match s.expect.verdict {
        Verdict::Pass => {
            if report.violations() == 0 {
                grounds.push(format!("no violation in {here}: {} backups ({} complete), {} restores checked", report.backups, report.backups_complete, report.restores));
            } else {
                let found: Vec<String> = ALL_VIOLATIONS.iter().filter(|v| count(&report, **v) > 0).map(|v| format!("{} {}", count(&report, *v), v.name())).collect();
                problems.push(format!("violations in {here}: {}", found.join(", ")));
                for case in &report.failing_cases {
                    for v in case.violations.iter().take(3) {
                        problems.push(format!("case seed {}: {v}", case.case_seed));
                    }
                }
            }
        }
        Verdict::Violations => {
            for v in &s.expect.violations {
                match count(&report, *v) {
                    0 => problems.push(format!("negative control: expected the checker to find {} in {here}, and it found none", v.name())),
                    n => grounds.push(format!("negative control: found {n} {} as expected in {here}", v.name())),
                }
            }
        }
    }
    if let Some(bound) = s.expect.rpo_max_transactions {
        if report.rpo_transactions_max > bound {
            problems.push(format!("RPO bound exceeded: up to {} acknowledged transactions were in no live backup (bound {bound})", report.rpo_transactions_max));
        } else {
            grounds.push(format!("RPO within bound: at most {} transactions outside every live backup (bound {bound})", report.rpo_transactions_max));
        }
    }
    for kind in &s.expect.faults_hit {
        match report.faults.get(&kind.name()).copied().unwrap_or(0) {
            0 => problems.push(format!("fault {} never hit anything in {here}: the scenario did not test it (more cases, or a higher probability)", kind.name())),
            n => grounds.push(format!("fault {} hit {n} times", kind.name())),
        }
    }
    if let Some(min) = s.expect.backups_complete_min {
        if report.backups_complete < min {
            problems.push(format!("only {} backups completed (expected at least {min})", report.backups_complete));
        }
    }
    if let Some(min) = s.expect.backups_failed_min {
        let failed = report.backups - report.backups_complete;
        if failed < min {
            problems.push(format!("only {failed} backups failed (expected at least {min}: the scenario did not reach the condition it is about)"));
        } else {
            grounds.push(format!("{failed} backups failed cleanly"));
        }
    }
    let path = shell_quote(&file);
    result.reproduce = (!problems.is_empty()).then(|| match report.failing_cases.first() {
        // A case that broke an invariant: that case alone, shrunk when it could be.
        Some(case) if s.expect.verdict == Verdict::Pass => match &case.shrunk {
            Some(shrunk) => format!("stasis verify {path} --case-seed {} --replay {}", case.case_seed, shell_quote(&serde_json::to_string(shrunk).unwrap_or_default())),
            None => format!("stasis verify {path} --case-seed {}", case.case_seed),
        },
        // An expectation over the whole campaign: the campaign.
        _ => match opts.case_seed {
            Some(case_seed) => format!("stasis verify {path} --case-seed {case_seed}"),
            None => format!("stasis verify {path} --cases {cases} --seed {seed}"),
        },
    });
    result.outcome = if problems.is_empty() { Outcome::Pass } else { Outcome::Fail };
    result.reasons = if problems.is_empty() { grounds } else { problems };
    result.report = Some(report);
    result
}

/// Every result of a run, as `--json` prints it.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    pub scenarios: Vec<ScenarioResult>,
}

impl VerifyReport {
    pub fn all_passed(&self) -> bool {
        self.scenarios.iter().all(|s| s.outcome == Outcome::Pass)
    }
}

/// The verdicts for people.
pub fn render(report: &VerifyReport) -> String {
    let mut out: String = report.scenarios.iter().map(render_one).collect();
    out.push_str(&render_summary(report));
    out
}

/// One scenario's verdict, its grounds or reasons, and the reproduce command.
pub fn render_one(s: &ScenarioResult) -> String {
    let mut out = String::new();
    {
        let label = match s.outcome {
            Outcome::Pass => "PASS",
            Outcome::Fail => "FAIL",
            Outcome::Unsupported => "UNSUPPORTED",
        };
        out.push_str(&format!("{label:<11} {} ({}, {:.1} s)\n", s.name, s.file, s.seconds));
        for reason in &s.reasons {
            out.push_str(&format!("            {reason}\n"));
        }
        if let Some(cmd) = &s.reproduce {
            out.push_str(&format!("            reproduce: {cmd}\n"));
        }
    }
    out
}

/// The closing line: how many passed, failed, were unsupported.
pub fn render_summary(report: &VerifyReport) -> String {
    let n = |o: Outcome| report.scenarios.iter().filter(|s| s.outcome == o).count();
    format!("{} scenarios: {} passed, {} failed, {} unsupported\n", report.scenarios.len(), n(Outcome::Pass), n(Outcome::Fail), n(Outcome::Unsupported))
}

/// JUnit XML: one test suite, one test case per scenario. A failure carries its reasons and
/// the reproduce command; an unsupported scenario is an error, never a pass or a skip.
pub fn junit(report: &VerifyReport) -> anyhow::Result<String> {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let mut suite = TestSuite::new("stasis verify");
    let mut total = Duration::ZERO;
    for s in &report.scenarios {
        let status = match s.outcome {
            Outcome::Pass => TestCaseStatus::success(),
            Outcome::Fail | Outcome::Unsupported => {
                let (kind, ty) = if s.outcome == Outcome::Fail { (NonSuccessKind::Failure, "verdict") } else { (NonSuccessKind::Error, "unsupported") };
                let mut status = TestCaseStatus::non_success(kind);
                status.set_type(ty);
                status.set_message(s.reasons.first().cloned().unwrap_or_default());
                let mut text = s.reasons.join("\n");
                if let Some(cmd) = &s.reproduce {
                    text.push_str(&format!("\nreproduce: {cmd}"));
                }
                status.set_description(text);
                status
            }
        };
        let mut case = TestCase::new(s.name.clone(), status);
        case.set_classname(format!("stasis.verify.{}", Path::new(&s.file).file_stem().map(|x| x.to_string_lossy().into_owned()).unwrap_or_default()));
        let time = Duration::from_secs_f64(s.seconds.max(0.0));
        total += time;
        case.set_time(time);
        if s.outcome == Outcome::Pass {
            case.set_system_out(s.reasons.join("\n"));
        }
        suite.add_test_case(case);
    }
    suite.set_time(total);
    let mut junit = Report::new("stasis verify");
    junit.set_time(total);
    junit.add_test_suite(suite);
    Ok(junit.to_string()?)
}
