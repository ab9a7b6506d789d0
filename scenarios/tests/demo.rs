//! `stasis demo` as a library call: every verification passes, the steps are the documented
//! ones, the freeze window stays far inside its bound, and the crash-vs-app comparison shows
//! every application-consistent restore exact.

use std::sync::Mutex;

use stasis_scenarios::demo::{self, DemoOptions, Observer, STEP_NAMES};

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
    assert!(json["failover"].is_null(), "failover is not built: null, not faked");
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

    // The narration says up front what the workload is and what is not built.
    let head: String = text.lines().take(8).collect::<Vec<_>>().join("\n");
    assert!(head.contains("SIMULATED database"), "{head}");
    assert!(head.contains("Not built yet"), "{head}");
    assert_eq!(json["freeze_window_ms"]["measured_by"], "as the database measured it");
    assert!(text.contains("failover") && text.contains("not built yet"));
}
