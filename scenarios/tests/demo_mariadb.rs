//! `stasis demo` on a real MariaDB (small counts): every verification passes, the in-place
//! restore holds exactly the acknowledged commits within the backup's GTID point (and there
//! were commits after it, so the check could fail), and the crash-vs-app comparison shows
//! the difference: every application-consistent restore exact, the crash-consistent ones
//! flagged. Then disaster recovery: site A's mariadbd killed and its simulator offline, a
//! second mariadbd on site B's mirror serving exactly the newest replicated backup's rows,
//! and back to site A with exactly what B had acknowledged. Nothing the demo started is
//! left running or mounted.
//!
//! Needs mariadbd, mariadb-install-db, /dev/fuse and fusermount3 (`bash ci/install.sh`):
//! without them the test fails saying so.

use std::sync::Mutex;
use std::time::Duration;

use stasis_scenarios::demo::{self, DemoOptions, Observer, Workload, STEP_NAMES};

#[derive(Default)]
struct Collect(Mutex<Vec<String>>);

impl Observer for Collect {
    fn say(&self, line: &str) {
        self.0.lock().unwrap().push(line.to_string());
    }
}

fn mounts_under(prefix: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default().lines().filter_map(|l| l.split(' ').nth(4)).filter(|m| m.contains(prefix)).map(String::from).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_mariadb_demo_passes_every_verification() {
    demo::mariadb_available().expect("the MariaDB demo needs mariadbd and FUSE: run `bash ci/install.sh`");
    assert_eq!(demo::choose(Workload::Auto).0, Workload::Mariadb, "auto picks MariaDB where it can run");
    assert_eq!(demo::choose(Workload::Simdb).0, Workload::Simdb);

    let opts = DemoOptions { backups: 3, crash_rounds: 1, writers: 3, freeze_timeout: Duration::from_secs(5), ..DemoOptions::mariadb() };
    let out = Collect::default();
    let run = demo::run(&opts, &out).await.expect("the MariaDB demo starts");
    let report = &run.report;
    let json = serde_json::to_value(report).expect("the report serialises");
    let text = out.0.lock().unwrap().join("\n");
    assert!(report.ok, "the demo failed:\n{text}\n{}", serde_json::to_string_pretty(&json).unwrap());
    assert!(run.kept.is_none());

    // The same shape as the simdb demo's report.
    assert_eq!(json["workload"], "mariadb");
    let names: Vec<&str> = report.steps.iter().map(|s| s.name).collect();
    assert_eq!(names, STEP_NAMES);
    assert!(names.ends_with(&["replicate", "site_a_lost", "failover", "verify_site_b", "failback", "verify_site_a"]), "{names:?}");
    for step in json["steps"].as_array().expect("steps") {
        assert!(step["name"].is_string() && step["ok"] == true && step["seconds"].is_number(), "{step}");
    }
    let freeze = report.freeze_window_ms.as_ref().expect("freeze windows measured");
    assert_eq!(freeze.samples, opts.backups as usize);
    assert!(freeze.p50 <= freeze.p99 && freeze.p99 <= freeze.max && freeze.max <= freeze.bound_ms as f64, "{freeze:?}");

    // The server really ran on the simulated volume.
    let server = report.server.as_ref().expect("server summary");
    assert!(server.version.contains("MariaDB"), "{}", server.version);
    assert!(server.data_dir.contains("shop_data"), "{}", server.data_dir);

    // Restore in place: exact, with commits after the point that had to be discarded.
    let backup = report.backup.as_ref().expect("backup summary");
    assert_eq!(backup.application_consistent, opts.backups);
    assert!(backup.commits_after_last_backup > 0, "the writers committed after the last backup, so an inexact restore would show");
    let restore = report.restore.as_ref().expect("restore summary");
    assert!(restore.exact && restore.detail["dropped_table_back"] == true && restore.detail["server_answers"] == true, "{restore:?}");
    assert_eq!(restore.recovered_point.as_deref(), Some(restore.consistency_point.as_str()));
    let rows = &restore.detail["rows"];
    assert!(rows["expected"].as_u64().unwrap() > 100 && rows["found"] == rows["expected"], "{rows}");
    assert_eq!((rows["missing"].as_u64(), rows["after_point"].as_u64(), rows["never_written"].as_u64()), (Some(0), Some(0), Some(0)));

    // Crash vs app: the app side exact, the crash side visibly not (MyISAM/Aria tables that
    // were being written are not closed properly in an unquiesced snapshot).
    let cva = report.crash_vs_app.as_ref().expect("crash-vs-app section");
    assert_eq!((cva.app.restores, cva.app.exact, cva.app.flagged_by_the_database, cva.app.lost_acknowledged_commits), (1, 1, 0, 0), "{:?}", cva.app);
    for r in &cva.app.results {
        assert_eq!(r.recovered_point.as_deref(), Some(r.claimed_point.as_str()), "{r:?}");
        assert!(r.detail["rows"]["expected"].as_u64().unwrap() > 0 && r.consistent_with_its_point && r.findings.is_empty(), "{r:?}");
    }
    assert_eq!(cva.crash.restores, 1);
    assert!(cva.crash.exact < cva.crash.restores, "the crash-consistent restore shows a difference: {:?}", cva.crash);
    assert!(cva.crash.flagged_by_the_database > 0 || cva.crash.off_their_point > 0 || cva.crash.lost_acknowledged_commits > 0, "{:?}", cva.crash);
    assert!(cva.crash.results.iter().all(|r| r.error.is_some() || r.needed_crash_recovery == Some(true)), "an unquiesced snapshot needs crash recovery: {:?}", cva.crash);

    // Disaster recovery on real servers: site B exactly at the newest replicated backup, rows
    // checked one by one, with commits after it on A that must be absent; back at A exactly
    // at B's final point.
    let failover = &json["failover"];
    assert_eq!((failover["verified"].as_bool(), failover["workflow_verified"].as_bool(), failover["site_a_unreachable"].as_bool()), (Some(true), Some(true), Some(true)), "{failover}");
    assert!(failover["rpo_s"].as_f64().is_some_and(|s| s >= 0.0) && failover["rto_s"].as_f64().is_some_and(|s| s >= 0.0), "{failover}");
    assert!(failover["commits_lost"].as_u64().unwrap() > 0, "{failover}");
    assert_eq!(failover["restored_backup"], *failover["replicated_backups"].as_array().unwrap().last().unwrap());
    let rows_b = &failover["check"]["rows"];
    assert!(rows_b["expected"].as_u64().unwrap() > 0 && rows_b["found"] == rows_b["expected"], "{rows_b}");
    assert_eq!((rows_b["missing"].as_u64(), rows_b["after_point"].as_u64(), rows_b["never_written"].as_u64()), (Some(0), Some(0), Some(0)));
    assert_eq!(failover["check"]["gtid_matches"], true);
    let failback = &json["failback"];
    assert_eq!((failback["verified"].as_bool(), failback["protected_again"].as_bool()), (Some(true), Some(true)), "{failback}");
    assert!(failback["rpo_s"].as_f64().is_some_and(|s| s >= 0.0) && failback["rto_s"].as_f64().is_some_and(|s| s >= 0.0), "{failback}");
    assert!(failback["commits_brought_back"].as_u64().unwrap() > 0, "{failback}");
    assert_eq!(failback["recovered_point"], failback["expected_point"]);
    let rows_a = &failback["check"]["rows"];
    assert!(rows_a["found"] == rows_a["expected"] && rows_a["expected"].as_u64() > rows_b["expected"].as_u64(), "A holds B's rows and the commits made at B: {rows_a}");

    // Everything stopped and unmounted (this run's mount root, not other tests').
    let root = server.data_dir.split("/shop_data").next().expect("a mount root").to_string();
    assert!(root.contains("stasis-mounts-"), "{root}");
    assert!(mounts_under(&root).is_empty(), "left mounted: {:?}", mounts_under(&root));
    assert!(!std::path::Path::new(&root).exists(), "the mount root {root} was removed");
}
