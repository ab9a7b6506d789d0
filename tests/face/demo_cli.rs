//! `stasis demo --json`, the README's first command, run as a newcomer runs it: the binary
//! on its embedded defaults. On a machine prepared by `ci/install.sh` (mariadbd, FUSE) the
//! automatic choice is the real MariaDB workload, and every verification of the walk-through
//! must pass, the disaster-recovery steps included.

mod common;

use std::time::Duration;

use serde_json::Value;

/// Far above the demo's ~15 s in a release build; a debug build on a loaded CI machine is
/// several times slower.
const DEMO_WAIT_MAX: Duration = Duration::from_secs(600);

const STEPS: [&str; 12] = ["discover", "protect", "backup", "damage", "restore", "crash_vs_app", "replicate", "site_a_lost", "failover", "verify_site_b", "failback", "verify_site_a"];

async fn demo(args: &[&str]) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let run = tokio::process::Command::new(common::stasis_bin()).arg("demo").args(args).current_dir(dir.path()).env_remove("STASIS_LOG").kill_on_drop(true).output();
    let out = tokio::time::timeout(DEMO_WAIT_MAX, run).await.expect("the demo finished in time").expect("stasis runs");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn number(v: &Value, what: &str) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("{what} is not a number: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_on_embedded_defaults_passes_every_verification() {
    let (code, stdout, stderr) = demo(&["--json"]).await;
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}):\n{stdout}\nstderr:\n{stderr}"));
    assert_eq!(code, 0, "exit status 0 only if every verification passed:\n{report:#}\nstderr:\n{stderr}");
    assert_eq!(report["ok"], true, "{report:#}");
    assert_eq!(report["workload"], "mariadb", "with mariadbd and FUSE installed (ci/install.sh) the demo runs the real server: {}", report["workload_note"]);

    let steps = report["steps"].as_array().expect("steps");
    let names: Vec<&str> = steps.iter().map(|s| s["name"].as_str().expect("step name")).collect();
    assert_eq!(names, STEPS, "the documented walk-through, in order");
    for step in steps {
        assert_eq!(step["ok"], true, "step failed: {step}");
        assert!(number(&step["seconds"], "seconds") >= 0.0);
    }

    let freeze = &report["freeze_window_ms"];
    let (p50, p99) = (number(&freeze["p50"], "p50"), number(&freeze["p99"], "p99"));
    assert!(0.0 < p50 && p50 <= p99 && p99 <= number(&freeze["bound_ms"], "bound_ms"), "{freeze}");

    let app = &report["crash_vs_app"]["app"];
    assert!(app["restores"].as_u64().is_some_and(|n| n > 0) && app["exact"] == app["restores"], "every application-consistent restore exact: {}", report["crash_vs_app"]);

    for side in ["failover", "failback"] {
        let s = &report[side];
        assert_eq!(s["verified"], true, "{side}: {s}");
        assert!(number(&s["rpo_s"], "rpo_s") >= 0.0 && number(&s["rto_s"], "rto_s") > 0.0, "{side}: {s}");
    }
    // Site A was lost after the last replicated backup: an unplanned failover loses time.
    assert!(number(&report["failover"]["rpo_s"], "rpo_s") > 0.0, "{}", report["failover"]);
}

#[tokio::test]
async fn an_unknown_workload_is_refused_naming_the_choices() {
    let (code, stdout, stderr) = demo(&["--workload", "oracle", "--json"]).await;
    assert_eq!(code, 2, "a usage error: {stdout}{stderr}");
    assert!(stderr.contains("oracle") && stderr.contains("mariadb") && stderr.contains("simdb"), "{stderr}");
}
