//! The config-driven CLI, driven as a user would: the `stasis` binary against a simulator
//! on loopback, with a temporary config file and catalog.

mod common;

use std::path::Path;

use common::{site, stasis_bin, PASSWORD};
use serde_json::Value;

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn stasis(config: &Path, args: &[&str]) -> Output {
    let out = tokio::process::Command::new(stasis_bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("STASIS_LOG")
        .kill_on_drop(true)
        .output()
        .await
        .expect("stasis runs");
    let o = Output { code: out.status.code().unwrap_or(-1), stdout: String::from_utf8_lossy(&out.stdout).into(), stderr: String::from_utf8_lossy(&out.stderr).into() };
    assert!(!o.stdout.contains(PASSWORD) && !o.stderr.contains(PASSWORD), "the array password leaked: {} {}", o.stdout, o.stderr);
    o
}

async fn ok_json(config: &Path, args: &[&str]) -> Value {
    let o = stasis(config, args).await;
    assert_eq!(o.code, 0, "stasis {args:?} failed: {}\n{}", o.stderr, o.stdout);
    serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("stasis {args:?} printed no JSON ({e}): {}", o.stdout))
}

async fn ok(config: &Path, args: &[&str]) -> String {
    let o = stasis(config, args).await;
    assert_eq!(o.code, 0, "stasis {args:?} failed: {}\n{}", o.stderr, o.stdout);
    o.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_list_and_restore_to_a_clone_and_in_place() {
    let site = site("").await;
    let config = site.config.as_path();
    ok(config, &["simdb", "init", "bank", "--keys", "16"]).await;
    assert!(ok(config, &["simdb", "set", "bank", "1=10", "2=20"]).await.contains("txid=1"));

    let backup = ok_json(config, &["backup", "bank", "--json"]).await;
    let id = backup["id"].as_str().expect("id").to_string();
    assert_eq!(backup["consistency_point"], "txid=1", "{backup}");
    assert_eq!(backup["consistency"], "application");
    let freeze = backup["freeze_window_ms"].as_f64().expect("freeze_window_ms");
    assert!((0.0..2000.0).contains(&freeze), "freeze {freeze} ms outside its 2 s bound");
    let snapshots = backup["snapshots"].as_array().expect("snapshots");
    let on: Vec<&str> = snapshots.iter().map(|s| s["volume"].as_str().unwrap()).collect();
    assert_eq!(on, ["bank_data", "bank_log"]);
    // The snapshot is on the array, under the recorded name.
    let uuid = snapshots[0]["volume_uuid"].as_str().unwrap();
    let name = snapshots[0]["name"].as_str().unwrap();
    assert!(site.sim.sim().read(|s| s.volume(uuid).map(|v| v.snapshot_by_name(name).is_some()).unwrap_or(false)), "snapshot {name} not on the array");

    // Damage after the backup.
    assert!(ok(config, &["simdb", "set", "bank", "1=99", "3=30"]).await.contains("txid=2"));

    // Listing in the three formats.
    let list = ok_json(config, &["backups", "list", "-o", "json"]).await;
    assert_eq!(list.as_array().map(|a| a.len()), Some(1));
    assert_eq!(list[0]["id"], id.as_str());
    let yaml = ok(config, &["backups", "list", "-o", "yaml"]).await;
    let parsed: Value = serde_norway::from_str(&yaml).expect("yaml output parses");
    assert_eq!(parsed[0]["consistency_point"], "txid=1");
    let table = ok(config, &["backups", "list"]).await;
    assert!(table.starts_with("ID") && table.contains(&id) && table.contains("txid=1"), "{table}");

    // To a clone: the copy holds exactly the backup's state; the original is untouched.
    let restore = ok_json(config, &["restore", &id, "--to-clone", "bank_copy", "--json"]).await;
    assert_eq!(restore["mode"], "clone");
    assert_eq!(restore["state"], "complete", "{restore}");
    assert_eq!(restore["recovered_point"], "txid=1");
    assert_eq!(restore["clone_volumes"], serde_json::json!(["bank_copy_bank_data", "bank_copy_bank_log"]));
    let copy = ok_json(config, &["simdb", "show", "bank", "--volumes", "bank_copy_bank_data,bank_copy_bank_log"]).await;
    assert_eq!((copy["last_txid"].as_u64(), copy["values"][1].as_u64(), copy["values"][3].as_u64()), (Some(1), Some(10), Some(0)), "{copy}");
    let original = ok_json(config, &["simdb", "show", "bank"]).await;
    assert_eq!((original["last_txid"].as_u64(), original["values"][1].as_u64()), (Some(2), Some(99)));

    // In place: the damage is gone, the point is the backup's.
    let restore = ok_json(config, &["restore", &id, "--json"]).await;
    assert_eq!((restore["mode"].as_str(), restore["state"].as_str(), restore["recovered_point"].as_str()), (Some("in_place"), Some("complete"), Some("txid=1")), "{restore}");
    let back = ok_json(config, &["simdb", "show", "bank"]).await;
    assert_eq!((back["last_txid"].as_u64(), back["values"][1].as_u64(), back["values"][2].as_u64(), back["values"][3].as_u64()), (Some(1), Some(10), Some(20), Some(0)), "{back}");

    // Bad input: clear messages, nothing recorded.
    let o = stasis(config, &["restore", "b-nosuch"]).await;
    assert!(o.code != 0 && o.stderr.contains("no backup \"b-nosuch\""), "{}", o.stderr);
    let o = stasis(config, &["restore", &id, "--to-clone", "bad name!"]).await;
    assert!(o.code != 0 && o.stderr.contains("--to-clone"), "{}", o.stderr);
    let o = stasis(config, &["backup", "ledger"]).await;
    assert!(o.code != 0 && o.stderr.contains("no app named \"ledger\"") && o.stderr.contains("defined: bank"), "{}", o.stderr);
    let o = stasis(config, &["simdb", "init", "bank"]).await;
    assert!(o.code != 0 && o.stderr.contains("already hold a simulated database"), "{}", o.stderr);
    assert_eq!(ok_json(config, &["backups", "list", "-o", "json"]).await.as_array().map(|a| a.len()), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_errors_name_the_field_and_what_to_do() {
    let site = site("").await;
    let text = std::fs::read_to_string(&site.config).unwrap();
    let bad = site.dir.path().join("bad.yaml");
    for (from, to, expect) in [
        ("kind: simdb", "kind: oracle", "apps[0].kind: unknown variant `oracle`"),
        ("cluster: site-a\n", "cluster: site-b\n", "apps[0].cluster: no cluster named \"site-b\" (defined: site-a)"),
        ("freeze_timeout: 2s", "freeze_timeout: soon", "apps[0].freeze_timeout"),
        ("catalog: catalog.sqlite", "catalog: nodir/catalog.sqlite", "the directory"),
    ] {
        assert!(text.contains(from), "{from}");
        std::fs::write(&bad, text.replacen(from, to, 1)).unwrap();
        let o = stasis(&bad, &["backups", "list"]).await;
        assert_eq!(o.code, 2, "{}", o.stderr);
        assert!(o.stderr.contains(expect), "expected {expect:?} in: {}", o.stderr);
    }
    let o = stasis(&site.dir.path().join("missing.yaml"), &["backups", "list"]).await;
    assert!(o.code == 2 && o.stderr.contains("cannot read the config file"), "{}", o.stderr);
    // A wrong password file: the error names the field, the array says no.
    std::fs::write(site.dir.path().join("ontap.pw"), "wrong\n").unwrap();
    let o = stasis(&site.config, &["backup", "bank"]).await;
    assert!(o.code != 0 && o.stderr.to_lowercase().contains("authenticate"), "{}", o.stderr);
    std::fs::remove_file(site.dir.path().join("ontap.pw")).unwrap();
    let o = stasis(&site.config, &["backup", "bank"]).await;
    assert!(o.code != 0 && o.stderr.contains("clusters[0].password_file"), "{}", o.stderr);
}

/// An in-place restore under a server that still answers is refused; the catalog records
/// nothing and the array is not touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_place_restore_is_refused_while_the_server_answers() {
    use stasis_core::catalog::Catalog;
    use stasis_core::domain::*;

    let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = server.local_addr().unwrap().port();
    let ledger = format!(
        "  - name: ledger\n    kind: mysql\n    cluster: site-a\n    svm: svm0\n    volumes: [bank_data]\n    mysql: {{host: 127.0.0.1, port: {port}, user: backup, password_file: mysql.pw}}\n"
    );
    let site = site(&ledger).await;
    let catalog = stasis_core::sqlite_catalog::SqliteCatalog::open(site.dir.path().join("catalog.sqlite")).unwrap();
    let now = chrono::Utc::now();
    let record = BackupRecord {
        id: "b-ledger1".into(),
        app: "ledger".into(),
        snapshot_name: "stasis_b_ledger1".into(),
        state: BackupState::Complete,
        consistency: Some(Consistency::Application),
        evidence: Evidence::default(),
        snapshots: vec![SnapshotRef { volume_uuid: "u".into(), volume_name: "bank_data".into(), snapshot_uuid: "s".into(), create_time: now }],
        started_at: now,
        finished_at: Some(now),
        error: None,
        verified: false,
        expired: false,
    };
    catalog.put_backup(&record).unwrap();
    let o = stasis(&site.config, &["restore", "b-ledger1"]).await;
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains(&format!("its MySQL server at 127.0.0.1:{port} still answers")) && o.stderr.contains("--to-clone"), "{}", o.stderr);
    assert!(catalog.restores(None).unwrap().is_empty(), "a refused restore recorded something");
    drop(server);
    // With the server gone the refusal no longer applies (what fails next is the plugin).
    let o = stasis(&site.config, &["restore", "b-ledger1"]).await;
    assert!(!o.stderr.contains("still answers"), "{}", o.stderr);
}
