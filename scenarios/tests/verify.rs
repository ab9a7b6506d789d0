//! `stasis verify`: every shipped scenario gives its expected verdict with a small case
//! count (the negative control must find what it exists to catch), malformed files are
//! refused with the line and the field, a failure's reproduce command reproduces it, and
//! the JUnit output says what CI systems read.

use std::path::{Path, PathBuf};
use std::time::Duration;

use stasis_scenarios::torture::dr::DrMutant;
use stasis_scenarios::verify::{self, Outcome, ScenarioResult, VerifyOptions, VerifyReport};

fn scenario_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("{name}.yaml"))
}

fn options(cases: u64) -> VerifyOptions {
    // Tests share two cores with each other and with debug builds: a longer client timeout
    // keeps a scheduling stall from looking like an injected fault (as in torture.rs).
    VerifyOptions { cases: Some(cases), client_timeout: Duration::from_millis(150), ..VerifyOptions::default() }
}

async fn run(name: &str, cases: u64) -> ScenarioResult {
    let scenario = verify::load(&scenario_path(name)).unwrap_or_else(|e| panic!("{name} does not load: {e:?}"));
    assert_eq!(scenario.name, name, "a scenario is named like its file");
    verify::run_scenario(&scenario, &options(cases), |_, _| {}).await
}

fn show(r: &ScenarioResult) -> String {
    verify::render_one(r)
}

#[test]
fn the_library_has_the_scenarios_the_issue_lists() {
    let mut names: Vec<String> = std::fs::read_dir(env!("CARGO_MANIFEST_DIR"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".yaml").map(str::to_string))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "array-timeouts-and-job-failures",
            "cg-multi-volume",
            "crash-consistent-negative-control",
            "exec-hooks-app",
            "exec-hooks-failing-hook",
            "exec-hooks-no-quiesce-negative-control",
            "orchestrator-crash-mid-backup",
            "postgres-data-and-wal",
            "restore-to-clone",
            "retention-at-snapshot-limit",
            "single-volume-mysql",
            "unplanned-dr-failover"
        ],
        "every shipped scenario has a test below"
    );
    for name in &names {
        verify::load(&scenario_path(name)).unwrap_or_else(|e| panic!("{name}: {e:?}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cg_multi_volume_passes() {
    let r = run("cg-multi-volume", 6).await;
    assert_eq!(r.outcome, Outcome::Pass, "{}", show(&r));
    let report = r.report.as_ref().unwrap();
    assert!(report.backups_complete > 0 && report.restores > report.backups_complete, "{}", show(&r));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_consistent_negative_control_finds_inconsistent_restores() {
    let r = run("crash-consistent-negative-control", 6).await;
    assert_eq!(r.outcome, Outcome::Pass, "the negative control must find what it exists to catch: {}", show(&r));
    assert!(r.report.as_ref().unwrap().inconsistent_restores > 0);
    assert!(r.reasons[0].contains("found") && r.reasons[0].contains("inconsistent_restores"), "{}", show(&r));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn array_timeouts_and_job_failures_pass_with_every_fault_hit() {
    let r = run("array-timeouts-and-job-failures", 8).await;
    assert_eq!(r.outcome, Outcome::Pass, "{}", show(&r));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orchestrator_crash_mid_backup_passes() {
    let r = run("orchestrator-crash-mid-backup", 6).await;
    assert_eq!(r.outcome, Outcome::Pass, "{}", show(&r));
    assert!(r.report.as_ref().unwrap().faults["orchestrator_crash"] > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_to_clone_passes() {
    let r = run("restore-to-clone", 6).await;
    assert_eq!(r.outcome, Outcome::Pass, "{}", show(&r));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_at_the_snapshot_limit_passes_and_reaches_the_limit() {
    let r = run("retention-at-snapshot-limit", 4).await;
    assert_eq!(r.outcome, Outcome::Pass, "{}", show(&r));
    let report = r.report.as_ref().unwrap();
    assert!(report.backups > report.backups_complete, "no backup met the limit: {}", show(&r));
}

/// The ledger app on two FUSE-mounted volumes, paused and resumed by its hooks: every
/// backup completes application-consistent and every clone restore checks out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exec_hooks_app_passes() {
    let r = run("exec-hooks-app", 2).await;
    assert_eq!(r.outcome, Outcome::Pass, "{}", show(&r));
    let report = r.report.as_ref().unwrap();
    assert_eq!((report.backups, report.backups_complete, report.restores), (6, 6, 6), "{}", show(&r));
}

/// Hooks that read the position but do not pause: the checker must find torn or
/// point-mismatched copies, and at least one must be torn data (not only a wrong point).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exec_hooks_negative_control_finds_torn_records() {
    let r = run("exec-hooks-no-quiesce-negative-control", 3).await;
    assert_eq!(r.outcome, Outcome::Pass, "the negative control must find what it exists to catch: {}", show(&r));
    let report = r.report.as_ref().unwrap();
    assert!(report.inconsistent_restores > 0, "{}", show(&r));
    let findings: Vec<&String> = report.failing_cases.iter().flat_map(|c| c.violations.iter()).collect();
    assert!(findings.iter().any(|v| v.contains("torn")), "the checker found no torn record: {findings:?}");
}

/// A pre-snapshot hook that times out with on_error fail: every backup fails cleanly (no
/// snapshot left, checked at the end of each case) and the app is resumed at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exec_hooks_failing_hook_fails_backups_cleanly_and_resumes_the_app() {
    let r = run("exec-hooks-failing-hook", 2).await;
    assert_eq!(r.outcome, Outcome::Pass, "{}", show(&r));
    let report = r.report.as_ref().unwrap();
    assert_eq!((report.backups, report.backups_complete, report.freeze_bound_breaches, report.orphans), (4, 0, 0, 0), "{}", show(&r));
}

/// The checker of the failing-hook scenario can fail: the same hooks without the resume
/// leave the app paused (until its lease), which the runner must report.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_app_left_paused_is_reported() {
    let text = std::fs::read_to_string(scenario_path("exec-hooks-failing-hook")).unwrap();
    let text = text.replace("      - argv: [stasis-ledger-app, resume]\n", "      - argv: [stasis-ledger-app, status]\n");
    let scenario = verify::parse(Path::new("no-resume.yaml"), &text).unwrap_or_else(|e| panic!("{e:?}\n{text}"));
    let r = verify::run_scenario(&scenario, &options(1), |_, _| {}).await;
    assert_eq!(r.outcome, Outcome::Fail, "{}", show(&r));
    assert!(r.report.as_ref().unwrap().freeze_bound_breaches > 0, "{}", show(&r));
    assert!(r.reasons.iter().any(|x| x.contains("left paused")), "{}", show(&r));
}

/// on_error continue: a failing pre-snapshot hook lets the backup go on; it completes but
/// is kept as crash-consistent with the reason in its evidence, and the app is resumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_hook_with_continue_completes_a_crash_consistent_backup() {
    use stasis_scenarios::verify::exec::LedgerRig;
    use stasis_scenarios::verify::format::{Hook, Hooks, OnError};
    let hook = |argv: &[&str], on_error| Hook { argv: argv.iter().map(|a| a.to_string()).collect(), timeout_ms: 2000, on_error };
    let hooks = Hooks { pre_snapshot: vec![hook(&["false"], OnError::Continue), hook(&["stasis-ledger-app", "pause", "--lease-ms", "10000"], OnError::Fail)], post_snapshot: vec![hook(&["stasis-ledger-app", "resume"], OnError::Fail)] };
    let volumes = vec!["ledger_objects".to_string(), "ledger_index".to_string()];
    let rig = LedgerRig::start("ledger", &volumes, &hooks, 5, Duration::from_secs(3), Duration::from_secs(2)).await.unwrap();
    rig.process.wait_for(5, Duration::from_secs(10)).await.unwrap();
    let record = rig.orchestrator.backup(&rig.app, rig.plugin_dyn()).await.unwrap().record;
    assert_eq!(record.state, stasis_core::domain::BackupState::Complete);
    assert_eq!(record.consistency, Some(stasis_core::domain::Consistency::Crash), "{record:?}");
    let why = record.evidence.thaw_error.clone().unwrap_or_default();
    assert!(why.contains("not proven") && why.contains("\"false\""), "{why}");
    rig.check_writing().await.unwrap();

    // The same hooks without the failing one: application-consistent, at the paused record.
    let hooks = Hooks { pre_snapshot: hooks.pre_snapshot[1..].to_vec(), ..hooks };
    let rig = LedgerRig::start("ledger", &volumes, &hooks, 6, Duration::from_secs(3), Duration::from_secs(2)).await.unwrap();
    rig.process.wait_for(5, Duration::from_secs(10)).await.unwrap();
    let record = rig.orchestrator.backup(&rig.app, rig.plugin_dyn()).await.unwrap().record;
    assert_eq!(record.consistency, Some(stasis_core::domain::Consistency::Application), "{record:?}");
    assert!(record.evidence.consistency_point.as_ref().unwrap().0.starts_with("record="), "{record:?}");
}

/// A real mariadbd per case on a FUSE-mounted volume: backups under load, clone and in-place
/// restores checked row by row.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn single_volume_mysql_passes_on_a_real_mariadb() {
    let r = run("single-volume-mysql", 1).await;
    assert_eq!(r.outcome, Outcome::Pass, "{}", show(&r));
    let report = r.report.as_ref().unwrap();
    assert_eq!((report.backups, report.backups_complete, report.restores), (2, 2, 4), "{}", show(&r));
    assert!(report.rpo_transactions_max > 0, "the writers committed after the backups: {}", show(&r));
}

/// A real PostgreSQL per case, data and WAL on two volumes of one consistency group.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_data_and_wal_passes_on_a_real_postgres() {
    let r = run("postgres-data-and-wal", 1).await;
    assert_eq!(r.outcome, Outcome::Pass, "{}", show(&r));
    let report = r.report.as_ref().unwrap();
    assert_eq!((report.backups, report.backups_complete, report.restores), (2, 2, 4), "{}", show(&r));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unplanned_dr_failover_passes() {
    let r = run("unplanned-dr-failover", 6).await;
    assert_eq!(r.outcome, Outcome::Pass, "{}", show(&r));
    let report = r.report.as_ref().unwrap();
    assert_eq!(report.restores, 6, "one failover per case: {}", show(&r));
    assert!(report.faults.keys().filter(|k| k.starts_with("disaster_")).count() >= 2, "disaster kinds: {:?}", report.faults);
}

/// DR negative control: a system whose catalog forgets the newest backups before the
/// failover starts site B from an older backup than had reached it; the same scenario must
/// fail, name the finding and print the command that reproduces the case.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dr_scenario_fails_on_a_system_that_restores_an_older_backup() {
    let scenario = verify::load(&scenario_path("unplanned-dr-failover")).unwrap();
    let r = verify::run_scenario_with(&scenario, &options(4), Some(DrMutant::ForgetNewestBackups), |_, _| {}).await;
    assert_eq!(r.outcome, Outcome::Fail, "{}", show(&r));
    assert!(r.reasons[0].contains("inconsistent_restores"), "{}", show(&r));
    assert!(r.reproduce.as_deref().unwrap_or("").contains("--case-seed "), "{}", show(&r));
}

/// What this build cannot run is UNSUPPORTED (a JUnit error) with the reason, never a pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_cannot_run_is_reported_unsupported_with_the_reason() {
    let mysql = std::fs::read_to_string(scenario_path("single-volume-mysql")).unwrap();
    let cases = [
        (mysql.replace("expect:\n", "faults:\n  kinds: [ontap5xx]\nexpect:\n"), "faults are injected on the simulated database"),
        (
            std::fs::read_to_string(scenario_path("exec-hooks-app")).unwrap().replace("{mode: clone}", "{mode: in_place}"),
            "kind exec-hooks: the reference app is restored to clones only",
        ),
        (mysql.replace("[mysql_data]", "[mysql_data, mysql_log]"), "MariaDB with its data directory on one volume"),
    ];
    for (text, reason) in cases {
        let scenario = verify::parse(Path::new("variant.yaml"), &text).unwrap_or_else(|e| panic!("{e:?}\n{text}"));
        let r = verify::run_scenario(&scenario, &options(1), |_, _| {}).await;
        assert_eq!(r.outcome, Outcome::Unsupported, "{}", show(&r));
        assert!(r.reasons[0].contains(reason), "{}", show(&r));
    }
}

/// A scenario that expects a pass but cannot get one (no quiesce): it fails, names a case,
/// and the printed command (case seed + shrunk case) fails the same way when run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_prints_one_command_that_reproduces_it() {
    let text = std::fs::read_to_string(scenario_path("crash-consistent-negative-control")).unwrap();
    let text = text.replace("  verdict: violations\n  violations: [inconsistent_restores]\n", "  verdict: pass\n");
    let path = Path::new("wrongly-expects-pass.yaml");
    let scenario = verify::parse(path, &text).expect("still a valid scenario");
    let r = verify::run_scenario(&scenario, &options(4), |_, _| {}).await;
    assert_eq!(r.outcome, Outcome::Fail, "{}", show(&r));
    let cmd = r.reproduce.clone().expect("a reproduce command");
    assert!(cmd.starts_with("stasis verify wrongly-expects-pass.yaml --case-seed "), "{cmd}");
    assert!(cmd.contains(" --replay '{"), "the shrunk case is part of the command: {cmd}");
    // Run what the command says.
    let words: Vec<&str> = cmd.splitn(6, ' ').collect();
    let case_seed: u64 = words[4].parse().unwrap();
    let json = words[5].strip_prefix("--replay '").and_then(|j| j.strip_suffix('\'')).unwrap();
    let replay = serde_json::from_str(json).unwrap();
    let again = verify::run_scenario(&scenario, &VerifyOptions { case_seed: Some(case_seed), replay: Some(replay), ..options(1) }, |_, _| {}).await;
    assert_eq!(again.outcome, Outcome::Fail, "the command did not reproduce the failure: {}", show(&again));
    assert_eq!(again.report.as_ref().unwrap().cases, 1);
    // The seed alone reproduces it too.
    let by_seed = verify::run_scenario(&scenario, &VerifyOptions { case_seed: Some(case_seed), ..options(1) }, |_, _| {}).await;
    assert_eq!(by_seed.outcome, Outcome::Fail, "{}", show(&by_seed));
}

fn errors_of(text: &str) -> Vec<String> {
    match verify::parse(Path::new("bad.yaml"), text) {
        Ok(_) => panic!("accepted a malformed scenario:\n{text}"),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
    }
}

const GOOD: &str = "name: ok
app:
  name: bank
  kind: simdb
  volumes: [bank_data]
schedule:
  steps:
    - work
    - backup
expect:
  verdict: pass
";

#[test]
fn a_minimal_scenario_is_valid() {
    let s = verify::parse(Path::new("ok.yaml"), GOOD).unwrap();
    assert_eq!(s.app.volumes, ["bank_data"]);
    assert_eq!(s.sites[0].svm, "svm0");
}

#[test]
fn malformed_scenarios_name_the_line_and_the_field() {
    let check = |text: &str, expected: &[&str]| {
        let errors = errors_of(text);
        let joined = errors.join("\n");
        for e in expected {
            assert!(joined.contains(e), "expected {e:?} in:\n{joined}");
        }
    };
    // A misspelt key: the line of the key itself.
    check(&GOOD.replace("  volumes: [bank_data]", "  volumes: [bank_data]\n  freez_timeout_ms: 300"), &["bad.yaml:6:3: app.freez_timeout_ms: ", "not allowed"]);
    // A wrong enum value.
    check(&GOOD.replace("kind: simdb", "kind: oracle"), &["bad.yaml:4:", "app.kind: ", "oracle"]);
    // A wrong type, deep in a list.
    check(&GOOD.replace("    - backup\n", "    - backup\n    - retention: {keep_last: many}\n"), &["bad.yaml:10:", "schedule.steps[2].retention.keep_last", "many"]);
    // An unknown step: the deepest error of the alternatives, not "matches no schema".
    check(&GOOD.replace("    - backup\n", "    - backup\n    - restroe: {mode: clone}\n"), &["bad.yaml:10:", "schedule.steps[2]", "restroe"]);
    // An invalid ONTAP volume name.
    check(&GOOD.replace("[bank_data]", "[bank-data]"), &["bad.yaml:5:", "app.volumes[0]", "bank-data"]);
    // A missing required field.
    check(&GOOD.replace("expect:\n  verdict: pass\n", ""), &["bad.yaml:1:1: ", "expect"]);
    // YAML syntax errors.
    check(&GOOD.replace("[bank_data]", "[bank_data"), &["bad.yaml:", "not valid YAML"]);
    check(&GOOD.replace("  kind: simdb\n", "  kind: simdb\n  kind: mysql\n"), &["bad.yaml:5:", "duplicate key \"kind\""]);
    // Checks beyond the schema, still with line and field.
    check(&GOOD.replace("    - backup\n", "    - backup\nfaults:\n  kinds: [busy_snapshot]\n"), &["bad.yaml:11:", "faults.kinds[0]", "busy_snapshot can hit no step", "retention"]);
    check(&GOOD.replace("  verdict: pass\n", "  verdict: violations\n"), &["bad.yaml:", "expect: ", "must list which violations"]);
    check(&GOOD.replace("  name: bank\n", "  name: bank\n  site: b\n"), &["bad.yaml:4:", "app.site", "no site is named \"b\""]);
    check(&GOOD.replace("    - work\n    - backup\n", "    - work\n"), &["schedule.steps", "takes no backup"]);
    check(&GOOD.replace("    - backup\n", "    - backup\n    - failover\n"), &["bad.yaml:10:", "needs a second site"]);
    check(&GOOD.replace("kind: simdb", "kind: exec-hooks"), &["kind exec-hooks needs hooks"]);
    check(&GOOD.replace("[bank_data]", "[a, b, c]"), &["bad.yaml:5:", "app.volumes", "one volume"]);
}

#[test]
fn a_missing_file_is_an_error_not_a_panic() {
    let errors = verify::load(Path::new("/nonexistent/scenario.yaml")).unwrap_err();
    assert!(errors[0].to_string().contains("cannot read the file"), "{errors:?}");
}

#[test]
fn junit_has_a_test_case_per_scenario_with_failures_and_the_reproduce_command() {
    let result = |name: &str, outcome, reasons: &[&str], reproduce: Option<&str>| ScenarioResult {
        name: name.into(),
        file: format!("scenarios/{name}.yaml"),
        outcome,
        reasons: reasons.iter().map(|r| r.to_string()).collect(),
        reproduce: reproduce.map(str::to_string),
        seconds: 1.5,
        report: None,
    };
    let report = VerifyReport {
        scenarios: vec![
            result("good", Outcome::Pass, &["no violation in 20 cases"], None),
            result("bad", Outcome::Fail, &["violations in 20 cases: 2 orphans <&>"], Some("stasis verify scenarios/bad.yaml --case-seed 7")),
            result("later", Outcome::Unsupported, &["step failover: not yet"], None),
        ],
    };
    let xml = verify::junit(&report).unwrap();
    assert!(xml.contains("<testsuite name=\"stasis verify\" tests=\"3\""), "{xml}");
    assert!(xml.contains("failures=\"1\"") && xml.contains("errors=\"1\""), "{xml}");
    assert!(xml.contains("<testcase name=\"good\" classname=\"stasis.verify.good\""), "{xml}");
    assert!(xml.contains("reproduce: stasis verify scenarios/bad.yaml --case-seed 7"), "{xml}");
    assert!(xml.contains("2 orphans &lt;&amp;&gt;"), "text is escaped: {xml}");
    assert!(xml.contains("type=\"unsupported\""), "{xml}");
    assert!(!report.all_passed());
}
