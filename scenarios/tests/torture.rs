//! The harness against the real stack (simulator on loopback HTTP, ONTAP client, workflows,
//! SQLite catalog, simulated database), and the negative controls that show its checker can
//! fail: a checker that cannot fail proves nothing.

use std::time::Duration;

use proptest::strategy::ValueTree;

use stasis_scenarios::torture::{self, FaultKind, FaultSet, Mutant, PluginMode, TortureOptions, TortureReport};

fn options(cases: u64, seed: u64) -> TortureOptions {
    // Tests share two cores with each other and with debug builds: a longer client timeout
    // keeps a scheduling stall from looking like an injected fault.
    TortureOptions { cases, seed, shrink: false, freeze_timeout: Duration::from_millis(400), client_timeout: Duration::from_millis(150), ..TortureOptions::default() }
}

async fn campaign(opts: TortureOptions) -> TortureReport {
    torture::run_campaign(&opts, |_, _| {}).await
}

fn summary(report: &TortureReport) -> String {
    format!("{}\n{:#?}", torture::render_table(report), report.failing_cases)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_mode_with_every_fault_kind_finds_no_violation() {
    let report = campaign(options(60, 11)).await;
    assert_eq!(report.violations(), 0, "{}", summary(&report));
    assert_eq!(report.first_failing_seed, None);
    assert!(report.backups_complete >= 60, "too few complete backups to mean anything: {}", summary(&report));
    assert!(report.restores >= 60, "{}", summary(&report));
    let total: u64 = report.faults.values().sum();
    let kinds = report.faults.values().filter(|n| **n > 0).count();
    assert!(total >= 60 && kinds >= 10, "faults were not injected widely enough: {:?}", report.faults);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_crash_mode_finds_inconsistent_restores() {
    // Without quiesce, acknowledged commits in flight and pages ahead of the log reach the
    // snapshot: the same checker must see it (the brief asks within 300 cases).
    let report = campaign(TortureOptions { mode: PluginMode::Crash, faults: FaultSet::none(), ..options(40, 3) }).await;
    assert!(report.inconsistent_restores > 0, "crash-consistent snapshots were never caught: {}", summary(&report));
    assert!(report.first_failing_seed.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_mutant_that_thaws_before_the_snapshot_is_caught() {
    let report = campaign(TortureOptions { mode: PluginMode::EarlyThaw, mutant: Some(Mutant::EarlyThaw), faults: FaultSet::none(), ..options(40, 5) }).await;
    assert!(report.inconsistent_restores > 0, "the early-thaw mutant was not caught: {}", summary(&report));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_mutant_that_skips_snapshot_verification_is_caught() {
    // The array loses the new snapshot before verification: a workflow that does not look
    // marks the backup complete without its snapshot.
    let faults = FaultSet(vec![FaultKind::SnapshotVanished]);
    let report = campaign(TortureOptions { mutant: Some(Mutant::SkipVerify), faults: faults.clone(), ..options(40, 9) }).await;
    assert!(report.orphans > 0, "the skip-verify mutant was not caught: {}", summary(&report));
    // The same faults without the mutant are handled.
    let control = campaign(TortureOptions { faults, ..options(40, 9) }).await;
    assert_eq!(control.violations(), 0, "{}", summary(&control));
    assert!(control.faults["snapshot_vanished"] > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_seed_gives_the_same_cases_and_verdicts() {
    let a = campaign(TortureOptions { faults: FaultSet::none(), ..options(8, 21) }).await;
    let b = campaign(TortureOptions { faults: FaultSet::none(), ..options(8, 21) }).await;
    assert_eq!((a.backups, a.backups_complete, a.restores, a.violations()), (b.backups, b.backups_complete, b.restores, b.violations()));
    let c = campaign(TortureOptions { mode: PluginMode::Crash, faults: FaultSet::none(), ..options(8, 21) }).await;
    let d = campaign(TortureOptions { mode: PluginMode::Crash, faults: FaultSet::none(), ..options(8, 21) }).await;
    assert_eq!(c.first_failing_seed, d.first_failing_seed, "a failing case must fail again on replay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_case_replays_from_its_seed() {
    let first = campaign(TortureOptions { mode: PluginMode::Crash, faults: FaultSet::none(), ..options(20, 3) }).await;
    let seed = first.first_failing_seed.expect("crash mode fails some case");
    let case = torture::spec::generate(seed, &FaultSet::none()).current();
    let replay = campaign(TortureOptions { mode: PluginMode::Crash, faults: FaultSet::none(), replay: Some(case), seed, ..options(1, seed) }).await;
    assert!(replay.violations() > 0, "the printed seed did not reproduce the failure: {}", summary(&replay));
}

#[test]
fn the_secret_check_sees_a_leaked_password() {
    let logs = torture::capture_logs();
    let _ = logs.take();
    tracing::info!(password = "canary-leak-test", "a careless log line");
    assert!(logs.take().contains("canary-leak-test"), "the log capture must see what is logged");
}
