//! Disaster recovery through the `stasis` binary, as a user runs it: two simulated clusters,
//! each its own process on a free 127.0.0.1 port, a config file naming both, and
//! `dr setup`, `backup` (the update carries the backup), `dr status`, `dr drill`,
//! `failover --unplanned` with site A frozen or killed, `failback` (refused without `--yes`
//! while site A holds data the resync would discard) and `failover --planned`.
//!
//! `harness = false`: this binary is also the simulator. Run with `--sim-site NAME SVM SEED
//! [VOLUME...]` it serves one cluster (`ontap_sim::spawn`, what `ontap-sim serve` runs) until
//! its stdin closes, so a site can be SIGSTOPped, SIGKILLed or outlive no test. The `ontap-sim`
//! binary itself belongs to another package: cargo does not build it for these tests.

mod common;

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{stasis_bin, PASSWORD};
use serde_json::Value;

const SVM_A: &str = "svm0";
const SVM_B: &str = "svm_dr";
/// Bound on a simulator process printing its address.
const SIM_START_MAX: Duration = Duration::from_secs(30);

// ------------------------------------------------------------------ the site process

fn serve_site(args: &[String]) -> ! {
    let [name, svm, seed, volumes @ ..] = args else { panic!("--sim-site NAME SVM SEED [VOLUME...]") };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(async {
        use ontap_sim::model::cluster::{Selector, VolumeCreate};
        let config = ontap_sim::SimConfig {
            cluster: ontap_sim::ClusterConfig { name: name.clone(), svms: vec![svm.clone()], seed: seed.parse().expect("seed"), ..Default::default() },
            username: "admin".into(),
            password: PASSWORD.into(),
            ..Default::default()
        };
        let sim = ontap_sim::spawn(config).await.expect("simulator starts");
        for volume in volumes {
            let req = VolumeCreate {
                name: volume.clone(),
                svm: Selector { name: Some(svm.clone()), uuid: None },
                aggregates: vec![Selector { name: Some("aggr1".into()), uuid: None }],
                size: Some(256 << 20),
                junction_path: Some(format!("/{volume}")),
                ..Default::default()
            };
            sim.sim().transact(|s| s.create_volume(req, chrono::Utc::now())).expect("volume created");
        }
        println!("{}", sim.base_url());
        // Serve until the test closes stdin (or dies).
        let _ = tokio::task::spawn_blocking(|| for _ in std::io::stdin().lock().lines().map_while(Result::ok) {}).await;
        std::process::exit(0)
    })
}

/// A simulator process; killed and reaped on drop.
struct SiteProcess {
    child: Child,
    url: String,
}

impl SiteProcess {
    fn start(name: &str, svm: &str, seed: u64, volumes: &[&str]) -> SiteProcess {
        let mut child = Command::new(std::env::current_exe().expect("own path"))
            .args(["--sim-site", name, svm, &seed.to_string()])
            .args(volumes)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting a simulator process");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stdout).lines();
            let _ = tx.send(lines.next().and_then(Result::ok));
            for _ in lines {}
        });
        let mut site = SiteProcess { child, url: String::new() };
        // On a panic here the guard reaps the child.
        site.url = rx.recv_timeout(SIM_START_MAX).ok().flatten().unwrap_or_else(|| panic!("simulator {name} did not print its address within {SIM_START_MAX:?}"));
        site
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill").args([signal, &self.child.id().to_string()]).status().expect("kill runs");
        assert!(status.success(), "kill {signal} failed");
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SiteProcess {
    fn drop(&mut self) {
        self.signal_quietly();
        self.kill();
    }
}

impl SiteProcess {
    /// A stopped process must be continued to die of anything but SIGKILL; SIGKILL it is.
    fn signal_quietly(&self) {
        let _ = Command::new("kill").args(["-CONT", &self.child.id().to_string()]).stderr(Stdio::null()).status();
    }
}

// ------------------------------------------------------------------ driving stasis

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

fn stasis(config: &Path, args: &[&str]) -> Output {
    let out = Command::new(stasis_bin()).arg("--config").arg(config).args(args).env_remove("STASIS_LOG").env_remove("STASIS_CONFIG").output().expect("stasis runs");
    let o = Output { code: out.status.code().unwrap_or(-1), stdout: String::from_utf8_lossy(&out.stdout).into(), stderr: String::from_utf8_lossy(&out.stderr).into() };
    assert!(!o.stdout.contains(PASSWORD) && !o.stderr.contains(PASSWORD), "the array password leaked: {} {}", o.stdout, o.stderr);
    o
}

fn ok(config: &Path, args: &[&str]) -> String {
    let o = stasis(config, args);
    assert_eq!(o.code, 0, "stasis {args:?} failed: {}\n{}", o.stderr, o.stdout);
    o.stdout
}

fn ok_json(config: &Path, args: &[&str]) -> Value {
    let stdout = ok(config, args);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("stasis {args:?} printed no JSON ({e}): {stdout}"))
}

fn json_of(o: &Output) -> Value {
    serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("no JSON ({e}): {}\n{}", o.stdout, o.stderr))
}

const DR_SECTION: &str = "    dr:\n      cluster: site-b\n      svm: svm_dr\n      policy: Asynchronous\n      schedule: 1h\n";

fn config_text(url_a: &str, url_b: &str, dr_section: &str) -> String {
    format!(
        "clusters:\n  - name: site-a\n    url: {url_a}\n    username: admin\n    password_file: ontap.pw\n  - name: site-b\n    url: {url_b}\n    username: admin\n    password_file: ontap.pw\n\
         apps:\n  - name: bank\n    kind: simdb\n    cluster: site-a\n    svm: {SVM_A}\n    volumes: [bank_data, bank_log]\n    freeze_timeout: 2s\n{dr_section}\
         catalog: catalog.sqlite\n"
    )
}

struct World {
    a: SiteProcess,
    /// Site B: kept alive (and killed on drop) for the case.
    _b: SiteProcess,
    dir: tempfile::TempDir,
}

impl World {
    fn start(seed: u64) -> World {
        let a = SiteProcess::start("sim-a", SVM_A, seed, &["bank_data", "bank_log"]);
        let b = SiteProcess::start("sim-b", SVM_B, seed + 1, &[]);
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("ontap.pw"), format!("{PASSWORD}\n")).unwrap();
        std::fs::write(dir.path().join("stasis.yaml"), config_text(&a.url, &b.url, DR_SECTION)).unwrap();
        World { a, _b: b, dir }
    }

    fn config(&self) -> std::path::PathBuf {
        self.dir.path().join("stasis.yaml")
    }
}

/// The simulated database as `stasis simdb show` reads it where the app runs now.
fn show(config: &Path) -> (u64, Vec<u64>) {
    let db = ok_json(config, &["simdb", "show", "bank"]);
    let values = db["values"].as_array().expect("values").iter().map(|v| v.as_u64().unwrap()).collect();
    (db["last_txid"].as_u64().expect("last_txid"), values)
}

/// A backup whose update reached site B carrying its snapshot.
fn replicated_backup(config: &Path) -> Value {
    let backup = ok_json(config, &["backup", "bank", "--json"]);
    assert_eq!(backup["consistency"], "application", "{backup}");
    let r = &backup["replication"];
    assert_eq!(r["ok"], true, "the update after the backup failed: {backup}");
    assert_eq!(r["destination_cluster"], "site-b");
    assert_eq!(r["snapshot"], backup["snapshot_name"]);
    let transfers = r["transfers"].as_array().expect("transfers");
    assert_eq!(transfers.len(), 2, "one update per volume: {r}");
    for t in transfers {
        assert_eq!(t["state"], "success", "{t}");
        assert!(t["snapshot"].is_null() || t["snapshot"] == backup["snapshot_name"], "the update carried another snapshot: {t}");
    }
    assert!(transfers.iter().map(|t| t["bytes_transferred"].as_u64().unwrap()).sum::<u64>() > 0, "{r}");
    backup
}

// ------------------------------------------------------------------ the cases

/// setup -> backups (updates carried) -> status -> drill -> site A frozen -> unplanned
/// failover -> exactly the last replicated backup on B -> B diverges -> A back -> failback
/// refused without --yes, nothing lost -> with --yes -> planned failover and back.
fn failover_with_site_a_frozen_and_failback() {
    let w = World::start(21);
    let config = w.config();
    let config = config.as_path();
    ok(config, &["simdb", "init", "bank", "--keys", "8"]);
    ok(config, &["simdb", "set", "bank", "1=10", "2=20"]);

    let setup = ok_json(config, &["dr", "setup", "bank", "--json"]);
    assert_eq!((setup["state"].as_str(), setup["active_site"].as_str()), (Some("mirrored"), Some("a")), "{setup}");
    for v in setup["volumes"].as_array().expect("volumes") {
        assert_eq!(v["relationship_state"], "snapmirrored", "{v}");
    }
    // Set-up again adopts what exists.
    assert_eq!(ok_json(config, &["dr", "setup", "bank", "--json"])["volumes"].as_array().map(Vec::len), Some(2));

    let first = replicated_backup(config);
    assert_eq!(first["consistency_point"], "txid=1");
    ok(config, &["simdb", "set", "bank", "1=11", "3=30"]);
    let second = replicated_backup(config);
    assert_eq!(second["consistency_point"], "txid=2");
    let at_second = show(config);

    let status = ok_json(config, &["dr", "status", "bank", "-o", "json"]);
    assert_eq!((status["state"].as_str(), status["healthy"].as_bool()), (Some("mirrored"), Some(true)), "{status}");
    assert_eq!(status["schedule_s"].as_f64(), Some(3600.0));
    assert_eq!(status["restorable_backup"]["backup_id"], second["id"], "{status}");
    for v in status["volumes"].as_array().unwrap() {
        assert_eq!((v["relationship_state"].as_str(), v["healthy"].as_bool()), (Some("snapmirrored"), Some(true)), "{v}");
        assert_eq!(v["last_transferred_snapshot"], second["snapshot_name"], "{v}");
        assert!(v["lag_s"].as_f64().is_some_and(|l| l >= 0.0), "{v}");
        assert_eq!(v["last_transfer_state"], "success");
    }
    let table = ok(config, &["dr", "status", "bank"]);
    assert!(table.contains("snapmirrored") && table.contains(second["id"].as_str().unwrap()), "{table}");
    let yaml: Value = serde_norway::from_str(&ok(config, &["dr", "status", "bank", "-o", "yaml"])).expect("yaml parses");
    assert_eq!(yaml["state"], "mirrored");

    let drill = ok_json(config, &["dr", "drill", "bank", "--json"]);
    assert_eq!((drill["kind"].as_str(), drill["state"].as_str(), drill["verified"].as_bool()), (Some("drill"), Some("complete"), Some(true)), "{drill}");
    assert_eq!(drill["restored_backup_id"], second["id"]);
    assert_eq!(drill["recovered_point"], "txid=2");
    assert!(drill["rpo_ms"].as_f64().is_some_and(|r| r > 0.0) && drill["rto_ms"].as_f64().is_some_and(|r| r > 0.0), "{drill}");
    assert_eq!(ok_json(config, &["dr", "status", "bank", "-o", "json"])["state"], "mirrored", "the drill left the mirrors running");

    // Acknowledged on A, in no backup: lost to an unplanned failover (and then in A's way).
    ok(config, &["simdb", "set", "bank", "1=12", "4=40"]);
    w.a.signal("-STOP");
    let failover = ok_json(config, &["failover", "bank", "--unplanned", "--json"]);
    assert_eq!((failover["kind"].as_str(), failover["state"].as_str(), failover["verified"].as_bool()), (Some("unplanned"), Some("complete"), Some(true)), "{failover}");
    assert_eq!(failover["restored_backup_id"], second["id"], "{failover}");
    assert_eq!((failover["expected_point"].as_str(), failover["recovered_point"].as_str()), (Some("txid=2"), Some("txid=2")));
    assert_eq!(failover["to_cluster"], "site-b");
    let (rpo, rto) = (failover["rpo_ms"].as_f64().unwrap(), failover["rto_ms"].as_f64().unwrap());
    assert!(rpo > 0.0 && rto > 0.0, "{failover}");
    // Site B holds exactly the last replicated app-consistent backup.
    assert_eq!(show(config), at_second, "site B is not at backup {}", second["id"]);
    let status = ok_json(config, &["dr", "status", "bank", "-o", "json"]);
    assert_eq!((status["state"].as_str(), status["active_site"].as_str(), status["active_cluster"].as_str()), (Some("failed_over"), Some("b"), Some("site-b")), "{status}");
    assert_eq!(status["last_failover"]["id"], failover["id"]);
    assert!(status["volumes"].as_array().unwrap().iter().all(|v| v["relationship_state"] == "broken_off"), "{status}");

    // The app serves on B; site A comes back holding its unreplicated write.
    ok(config, &["simdb", "set", "bank", "5=50"]);
    let on_b = show(config);
    assert_eq!(on_b.1[5], 50);
    w.a.signal("-CONT");
    let refused = stasis(config, &["failback", "bank", "--json"]);
    assert_eq!(refused.code, 1, "failback must wait for --yes: {}\n{}", refused.stdout, refused.stderr);
    let report = json_of(&refused);
    assert_eq!(report["confirmation_needed"], true, "{report}");
    assert!(report["divergence"]["bytes"].as_u64().is_some_and(|b| b > 0), "A's unreplicated write is not reported: {report}");
    assert_eq!(report["divergence"]["common_snapshots"].as_array().map(Vec::len), Some(2), "{report}");
    let text = stasis(config, &["failback", "bank"]);
    assert!(text.code == 1 && text.stdout.contains("--yes") && text.stdout.contains("bytes"), "{}", text.stdout);
    // Nothing changed.
    assert_eq!(ok_json(config, &["dr", "status", "bank", "-o", "json"])["state"], "failed_over");
    assert_eq!(show(config), on_b);

    let back = ok_json(config, &["failback", "bank", "--yes", "--json"]);
    assert_eq!((back["kind"].as_str(), back["state"].as_str(), back["verified"].as_bool()), (Some("failback"), Some("complete"), Some(true)), "{back}");
    assert_eq!(back["to_cluster"], "site-a");
    assert!(back["divergence"]["bytes"].as_u64().is_some_and(|b| b > 0), "{back}");
    // A runs at exactly B's last commit; A's own unreplicated write is gone, as reported.
    assert_eq!(show(config), on_b);
    let status = ok_json(config, &["dr", "status", "bank", "-o", "json"]);
    assert_eq!((status["state"].as_str(), status["active_site"].as_str(), status["healthy"].as_bool()), (Some("mirrored"), Some("a"), Some(true)), "{status}");

    // Protected again; a planned failover loses nothing, and back without questions.
    ok(config, &["simdb", "set", "bank", "6=60"]);
    replicated_backup(config);
    ok(config, &["simdb", "set", "bank", "7=70"]);
    let before = show(config);
    let planned = ok_json(config, &["failover", "bank", "--planned", "--json"]);
    assert_eq!((planned["kind"].as_str(), planned["verified"].as_bool(), planned["rpo_ms"].as_f64()), (Some("planned"), Some(true), Some(0.0)), "{planned}");
    assert!(planned["rto_ms"].as_f64().is_some_and(|r| r > 0.0) && planned["bytes_transferred"].as_u64().is_some_and(|b| b > 0), "{planned}");
    assert_eq!(show(config), before, "B starts at exactly A's last commit");
    let back = ok_json(config, &["failback", "bank", "--json"]);
    assert_eq!((back["state"].as_str(), back["verified"].as_bool()), (Some("complete"), Some(true)), "{back}");
    assert_eq!(show(config), before);
    drop(w);
}

/// Site A's process is killed outright: the unplanned failover needs nothing from it.
fn unplanned_failover_with_site_a_killed() {
    let mut w = World::start(31);
    let config = w.config();
    let config = config.as_path();
    ok(config, &["simdb", "init", "bank", "--keys", "8"]);
    ok(config, &["dr", "setup", "bank"]);
    ok(config, &["simdb", "set", "bank", "1=7", "2=8"]);
    let backup = replicated_backup(config);
    let at_backup = show(config);
    ok(config, &["simdb", "set", "bank", "1=9"]);
    w.a.kill();
    let failover = stasis(config, &["failover", "bank", "--unplanned"]);
    assert_eq!(failover.code, 0, "{}\n{}", failover.stderr, failover.stdout);
    assert!(failover.stdout.contains("RPO") && failover.stdout.contains("RTO") && failover.stdout.contains(backup["id"].as_str().unwrap()), "{}", failover.stdout);
    assert_eq!(show(config), at_backup);
    // A planned failover needs site A: refused with the reason, B untouched.
    let o = stasis(config, &["failover", "bank", "--planned"]);
    assert!(o.code != 0 && o.stderr.contains("nothing to fail over"), "{}", o.stderr);
    drop(w);
}

/// Bad DR sections are refused before anything runs, naming the field.
fn bad_dr_config_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ontap.pw"), "x\n").unwrap();
    let file = dir.path().join("stasis.yaml");
    for (section, expect) in [
        (DR_SECTION.replace("cluster: site-b", "cluster: site-c"), "apps[0].dr.cluster: no cluster named \"site-c\" (defined: site-a, site-b)"),
        (DR_SECTION.replace("cluster: site-b", "cluster: site-a"), "apps[0].dr.cluster: the app already runs on \"site-a\""),
        (DR_SECTION.replace("      svm: svm_dr\n", ""), "apps[0].dr: missing field `svm`"),
        (DR_SECTION.replace("Asynchronous", "Async"), "apps[0].dr.policy: unknown variant `Async`"),
        (DR_SECTION.replace("1h", "soon"), "apps[0].dr.schedule"),
        (DR_SECTION.replace("svm: svm_dr", "svm: svm_dr\n      mode: fast"), "apps[0].dr: unknown field `mode`"),
    ] {
        std::fs::write(&file, config_text("http://127.0.0.1:9", "http://127.0.0.1:9", &section)).unwrap();
        let o = stasis(&file, &["dr", "status", "bank"]);
        assert_eq!(o.code, 2, "{}", o.stderr);
        assert!(o.stderr.contains(expect), "expected {expect:?} in: {}", o.stderr);
    }
    std::fs::write(&file, config_text("http://127.0.0.1:9", "http://127.0.0.1:9", "")).unwrap();
    let o = stasis(&file, &["failover", "bank", "--unplanned"]);
    assert!(o.code == 2 && o.stderr.contains("apps[0].dr: app bank has no dr section"), "{}", o.stderr);
    let o = stasis(&file, &["failover", "bank"]);
    assert!(o.code == 2 && o.stderr.contains("--planned"), "{}", o.stderr);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--sim-site") {
        serve_site(&args[1..]);
    }
    // libtest-style filtering: `cargo test --test dr_cli NAME`.
    let filter = args.iter().find(|a| !a.starts_with('-'));
    let cases: [(&str, fn()); 3] = [
        ("bad_dr_config_names_the_field", bad_dr_config_names_the_field),
        ("unplanned_failover_with_site_a_killed", unplanned_failover_with_site_a_killed),
        ("failover_with_site_a_frozen_and_failback", failover_with_site_a_frozen_and_failback),
    ];
    for (name, case) in cases {
        if filter.is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        let started = std::time::Instant::now();
        case();
        println!("test {name} ... ok ({:.1} s)", started.elapsed().as_secs_f64());
    }
}
