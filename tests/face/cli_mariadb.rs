//! The config-driven CLI on real MariaDB: a `mariadbd` whose data directory is on a
//! FUSE-mounted simulator volume, a `stasis.yaml` with an app of kind mysql, and the
//! `stasis` binary run as a user runs it: backups under write load, the list, a restore to a
//! clone opened by a second `mariadbd`, an in-place restore refused without stop/start
//! commands and done with them. Restored rows must be exactly the acknowledged commits
//! within the backup's GTID point.
//!
//! Needs mariadbd, mariadb-install-db, /dev/fuse and fusermount3 (`bash ci/install.sh`).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::stasis_bin;
use serde_json::{json, Value};
use stasis_core::catalog::Catalog;
use stasis_core::domain::ConsistencyPoint;
use stasis_scenarios::mariadb::{instance_command, MariaDb, MariaDbOptions, SimWithMounts, APP_USER, DATA_SUBDIR, SIM_PASSWORD, SVM};
use stasis_tests::mariadb::{check_rows, create_schema_on, rows_on, server_is_frozen, Writers};

const VOLUME: &str = "ledger_data";

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Run `stasis --config CONFIG ARGS`; neither password may appear in what it prints.
async fn stasis(config: &Path, args: &[&str], secrets: &[&str]) -> Output {
    let out = tokio::process::Command::new(stasis_bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .env("STASIS_LOG", "debug")
        .kill_on_drop(true)
        .output()
        .await
        .expect("stasis runs");
    let o = Output { code: out.status.code().unwrap_or(-1), stdout: String::from_utf8_lossy(&out.stdout).into(), stderr: String::from_utf8_lossy(&out.stderr).into() };
    for secret in secrets {
        assert!(!o.stdout.contains(secret) && !o.stderr.contains(secret), "a password leaked from stasis {args:?}: {}\n{}", o.stdout, o.stderr);
    }
    o
}

async fn ok_json(config: &Path, args: &[&str], secrets: &[&str]) -> Value {
    let o = stasis(config, args, secrets).await;
    assert_eq!(o.code, 0, "stasis {args:?} failed: {}\n{}", o.stderr, o.stdout);
    serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("stasis {args:?} printed no JSON ({e}): {}", o.stdout))
}

/// The config file: one cluster (the simulator) and app `ledger` of kind mysql. Argument
/// vectors and paths go in as JSON (a subset of YAML), so no quoting can go wrong.
fn config_text(sim: &SimWithMounts, port: u16, stop_start: Option<(Vec<String>, Vec<String>)>) -> anyhow::Result<String> {
    let mut app = json!({
        "name": "ledger",
        "kind": "mysql",
        "cluster": "site-a",
        "svm": SVM,
        "volumes": [VOLUME],
        "freeze_timeout": "5s",
        "mysql": {
            "host": "127.0.0.1",
            "port": port,
            "user": APP_USER,
            "password_file": "mysql.pw",
            "lock_wait_timeout": "2s",
            "mount_root": sim.mount_root(),
            "data_subdir": DATA_SUBDIR,
            "instance_command": instance_command(&MariaDbOptions::default())?,
            "start_wait": "60s",
        },
    });
    if let Some((stop, start)) = stop_start {
        app["stop_command"] = json!(stop);
        app["start_command"] = json!(start);
    }
    Ok(format!(
        "clusters:\n  - name: site-a\n    url: {}\n    username: admin\n    password_file: ontap.pw\napps:\n  - {}\ncatalog: catalog.sqlite\n",
        sim.base_url(),
        serde_json::to_string(&app)?
    ))
}

fn point_of(backup: &Value) -> ConsistencyPoint {
    ConsistencyPoint(backup["consistency_point"].as_str().unwrap_or_else(|| panic!("no consistency_point: {backup}")).to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mysql_app_backup_list_clone_and_in_place_restore_through_the_cli() -> anyhow::Result<()> {
    let sim = SimWithMounts::start(21, SIM_PASSWORD).await?;
    let (_, mount_point) = sim.create_volume(VOLUME, 2 << 30).await?;
    let app_password = format!("mysql-canary-{:016x}", rand::random::<u64>());
    // Declared after `sim`: dropped (killed) before the unmount.
    let server = MariaDb::install_and_start(&mount_point.join(DATA_SUBDIR), &app_password, MariaDbOptions::default()).await?;
    let secrets = [SIM_PASSWORD, app_password.as_str()];
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("ontap.pw"), format!("{SIM_PASSWORD}\n"))?;
    std::fs::write(dir.path().join("mysql.pw"), format!("{app_password}\n"))?;
    let config: PathBuf = dir.path().join("stasis.yaml");
    std::fs::write(&config, config_text(&sim, server.port(), None)?)?;

    create_schema_on(&server, &app_password).await?;
    let writers = Writers::start_on(&server, &app_password, 4).await?;
    let mut backups = Vec::new();
    for _ in 0..2 {
        // Let the writers commit between backups (a condition, not a timing assertion).
        let before = writers.snapshot().acked.len();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while writers.snapshot().acked.len() < before + 30 {
            assert!(std::time::Instant::now() < deadline, "the writers stopped committing");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let backup = ok_json(&config, &["backup", "ledger", "--json"], &secrets).await;
        for key in ["id", "consistency_point", "freeze_window_ms", "snapshots"] {
            assert!(!backup[key].is_null(), "backup --json lacks {key}: {backup}");
        }
        assert_eq!(backup["consistency"], "application", "{backup}");
        assert!(point_of(&backup).0.starts_with("gtid=0-1-"), "{backup}");
        let freeze = backup["freeze_window_ms"].as_f64().expect("freeze_window_ms is a number");
        assert!(freeze > 0.0 && freeze < 5000.0, "freeze window {freeze} ms outside its 5 s bound");
        let snapshots = backup["snapshots"].as_array().expect("snapshots");
        assert_eq!(snapshots.len(), 1);
        assert_eq!(snapshots[0]["volume"], VOLUME);
        assert!(!server_is_frozen(&server).await?, "the server is thawed after the CLI's backup");
        backups.push(backup);
    }
    let history = writers.stop().await;
    let (first, second) = (&backups[0], &backups[1]);
    let first_id = first["id"].as_str().unwrap().to_string();
    let point = point_of(first);
    assert_ne!(point, point_of(second), "the writers committed between the backups");

    let list = ok_json(&config, &["backups", "list", "-o", "json"], &secrets).await;
    let ids: Vec<&str> = list.as_array().expect("a JSON array").iter().map(|b| b["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [first_id.as_str(), second["id"].as_str().unwrap()]);
    assert_eq!(list[0]["consistency_point"], first["consistency_point"]);

    // To a clone, no stop/start commands needed: the copy holds exactly the first backup.
    let restore = ok_json(&config, &["restore", &first_id, "--to-clone", "ledger_copy", "--json"], &secrets).await;
    assert_eq!(restore["mode"], "clone", "{restore}");
    assert_eq!(restore["clone_volumes"], json!(["ledger_copy"]));
    assert_eq!(restore["recovered_point"].as_str(), Some(point.0.as_str()), "{restore}");
    let clone_dir = sim.mounts().mount_point("/ledger_copy").join(DATA_SUBDIR);
    let second_server = MariaDb::start(&clone_dir, MariaDbOptions::default()).await?;
    let summary = check_rows(&rows_on(&second_server, &app_password).await?, &history, &point)?;
    assert!(summary.expected_rows > 0, "the first backup holds commits");
    second_server.shutdown().await?;
    // The production server was not touched: it still has every acknowledged row.
    let live = rows_on(&server, &app_password).await?;
    assert!(history.acked.keys().all(|k| live.contains(k)), "the clone restore changed the production data");
    // So the same check fails on it: the checker can fail.
    assert!(check_rows(&live, &history, &point).is_err(), "the live server is past the first backup's point");

    // In place without stop/start commands: refused while the server answers; nothing recorded.
    let o = stasis(&config, &["restore", &first_id], &secrets).await;
    assert_ne!(o.code, 0, "{}", o.stdout);
    assert!(o.stderr.contains("still answers") && o.stderr.contains("stop_command") && o.stderr.contains("--to-clone"), "{}", o.stderr);
    let catalog = stasis_core::sqlite_catalog::SqliteCatalog::open(dir.path().join("catalog.sqlite"))?;
    assert_eq!(catalog.restores(None)?.len(), 1, "the refused restore recorded something");
    assert_eq!(rows_on(&server, &app_password).await?, live, "the refusal left the server and its data alone");

    // With them: stasis stops the server, SnapRestores, verifies, starts it again.
    std::fs::write(&config, config_text(&sim, server.port(), Some((server.stop_command()?, server.start_command()?)))?)?;
    let restore = ok_json(&config, &["restore", &first_id, "--json"], &secrets).await;
    assert_eq!(restore["mode"], "in_place", "{restore}");
    assert_eq!(restore["state"], "complete", "{restore}");
    assert_eq!(restore["recovered_point"].as_str(), Some(point.0.as_str()), "{restore}");
    check_rows(&rows_on(&server, &app_password).await?, &history, &point)?;
    let list = ok_json(&config, &["backups", "list", "-o", "json"], &secrets).await;
    assert_eq!(list[1]["expired"], true, "the newer backup's snapshot went with the SnapRestore: {list}");
    Ok(())
}
