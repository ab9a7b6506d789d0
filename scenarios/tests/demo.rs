//! `stasis demo` as a library call: every verification passes, the steps are the documented
//! ones, the freeze window stays far inside its bound, the crash-vs-app comparison shows
//! every application-consistent restore exact, and the disaster-recovery walk-through fails
//! over to site B and back with measured RPO and RTO. A negative control shows the site
//! verification failing (and the demo with it) when site B holds a commit nobody acknowledged.

use std::sync::Mutex;

use stasis_scenarios::demo::{self, DemoOptions, Observer, STEP_NAMES};

/// The DR steps, in order, at the end of the walk-through.
const DR_STEPS: [&str; 6] = ["replicate", "site_a_lost", "failover", "verify_site_b", "failback", "verify_site_a"];

#[derive(Default)]
struct Collect(Mutex<Vec<String>>);

impl Observer for Collect {
    fn say(&self, line: &str) {
        self.0.lock().unwrap().push(line.to_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_passes_every_verification() {
    let opts = DemoOptions::default();
    let out = Collect::default();
    let run = demo::run(&opts, &out).await.expect("the demo starts");
    let report = &run.report;
    let json = serde_json::to_value(report).expect("the report serialises");
    let text = out.0.lock().unwrap().join("\n");
    assert!(report.ok, "the demo failed:\n{text}\n{}", serde_json::to_string_pretty(&json).unwrap());
    assert!(run.kept.is_none(), "the simulator is stopped unless asked to keep running");

    let names: Vec<&str> = report.steps.iter().map(|s| s.name).collect();
    assert_eq!(names, STEP_NAMES);
    assert!(report.steps.iter().all(|s| s.ok && s.error.is_none()));
    assert_eq!(json["workload"], "simdb");
    assert!(names.ends_with(&DR_STEPS), "{names:?}");
    for step in json["steps"].as_array().expect("steps") {
        assert!(step["name"].is_string() && step["ok"].is_boolean() && step["seconds"].is_number(), "{step}");
    }

    let freeze = report.freeze_window_ms.as_ref().expect("freeze windows measured");
    assert_eq!(freeze.samples, opts.backups as usize);
    assert!(freeze.p50 < opts.freeze_timeout.as_secs_f64() * 1000.0, "freeze p50 {} ms", freeze.p50);
    assert!(freeze.p99 <= freeze.max && freeze.p50 <= freeze.p99);

    let restore = report.restore.as_ref().expect("restore summary");
    assert!(restore.exact && restore.detail["values_exact"] == true && restore.needed_crash_recovery == Some(false), "{restore:?}");
    assert!(restore.commits_discarded > 0, "commits after the backup had to be discarded, so an inexact restore would show");
    assert_eq!(restore.recovered_point.as_deref(), Some(restore.consistency_point.as_str()));

    let cva = report.crash_vs_app.as_ref().expect("crash-vs-app section");
    assert_eq!(cva.app.restores, opts.crash_rounds);
    assert_eq!(cva.app.exact, cva.app.restores, "every application-consistent restore is exact");
    assert_eq!((cva.app.needed_crash_recovery, cva.app.lost_acknowledged_commits, cva.app.off_their_point, cva.app.flagged_by_the_database), (0, 0, 0, 0));
    for r in &cva.app.results {
        assert_eq!(r.recovered_point.as_deref(), Some(r.claimed_point.as_str()), "{r:?}");
    }
    assert_eq!(cva.crash.restores, opts.crash_rounds);
    // The crash side is reported as found; it must at least have been measured.
    assert!(cva.crash.results.iter().all(|r| r.recovered_point.is_some() || r.error.is_some()));

    // The narration says up front what the workload is and that there are two sites.
    let head: String = text.lines().take(10).collect::<Vec<_>>().join("\n");
    assert!(head.contains("SIMULATED database"), "{head}");
    assert!(head.contains("site B"), "{head}");
    assert_eq!(json["freeze_window_ms"]["measured_by"], "as the database measured it");

    // Disaster recovery: measured, verified, and what was lost is what A took after the
    // newest replicated backup.
    let failover = &json["failover"];
    assert_eq!(failover["verified"], true, "{failover}");
    assert_eq!(failover["workflow_verified"], true);
    assert!(failover["rpo_s"].as_f64().is_some_and(|s| s >= 0.0) && failover["rto_s"].as_f64().is_some_and(|s| s >= 0.0), "{failover}");
    assert_eq!(failover["site_a_unreachable"], true);
    assert!(failover["commits_lost"].as_u64().unwrap() > 0, "A committed after the newest replicated backup, so an inexact site B would show");
    assert!(failover["baseline_bytes"].as_u64().unwrap() > 0 && failover["update_bytes"].as_array().unwrap().iter().all(|b| b.as_u64().unwrap() > 0), "{failover}");
    let replicated = failover["replicated_backups"].as_array().unwrap();
    assert_eq!(failover["restored_backup"], *replicated.last().unwrap(), "B restored the newest replicated backup");
    assert_eq!(failover["recovered_point"], failover["expected_point"]);
    assert_eq!(failover["check"]["values_exact"], true);
    let failback = &json["failback"];
    assert_eq!(failback["verified"], true, "{failback}");
    assert!(failback["rpo_s"].as_f64().is_some_and(|s| s >= 0.0) && failback["rto_s"].as_f64().is_some_and(|s| s >= 0.0), "{failback}");
    assert_eq!(failback["protected_again"], true);
    assert!(failback["commits_brought_back"].as_u64().unwrap() > 0, "commits made at B came back to A");
    assert!(failback["discarded_bytes"].as_u64().is_some_and(|b| b > 0), "A's writes after the common snapshot were reported before the resync: {failback}");
    assert_eq!(failback["recovered_point"], failback["expected_point"]);
    assert!(text.contains("RPO") && text.contains("RTO"));
}

/// Negative control: a commit at site B that the load never acknowledged must make the
/// verification of site B fail, and the whole demo with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_b_that_differs_from_the_backup_fails_the_demo() {
    let opts = DemoOptions { backups: 2, crash_rounds: 1, tamper_site_b: true, ..DemoOptions::default() };
    let out = Collect::default();
    let run = demo::run(&opts, &out).await.expect("the demo starts");
    let report = &run.report;
    let text = out.0.lock().unwrap().join("\n");
    assert!(!report.ok, "a tampered site B must fail the demo:\n{text}");
    let step = |name: &str| report.steps.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("step {name}"));
    for name in ["replicate", "site_a_lost", "failover"] {
        assert!(step(name).ok, "{name} is not what was tampered with:\n{text}");
    }
    assert!(!step("verify_site_b").ok, "{text}");
    let failover = report.failover.as_ref().expect("failover section");
    assert!(failover.workflow_verified, "the workflow's own check ran before the stray commit");
    assert!(!failover.verified, "the demo's check of site B caught the stray commit");
    assert_eq!(failover.check["values_exact"], false);
}
