//! End to end on real MariaDB: the data directory on a FUSE-mounted simulator volume,
//! backups taken by the orchestrator through the ONTAP REST client under concurrent
//! writers, restored to a FlexClone served by a second `mariadbd` and in place. The
//! restored rows must be exactly the acknowledged commits within each backup's GTID point,
//! in InnoDB, MyISAM and Aria tables alike.
//!
//! Needs mariadbd, mariadb-install-db, /dev/fuse and fusermount3 (`bash ci/install.sh`):
//! without them the tests fail saying so.

use std::time::Duration;

use stasis_core::domain::{Consistency, RestoreMode};
use stasis_scenarios::mariadb::{MariaDb, MariaDbOptions, MariaDbRig, RigOptions, DATA_SUBDIR};
use stasis_tests::mariadb::{check_rows, create_schema, init_tracing, rows_on, server_is_frozen, Writers};

const N_WRITERS: u32 = 4;
const N_BACKUPS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backups_under_load_restore_exactly_to_a_clone_and_in_place() -> anyhow::Result<()> {
    init_tracing();
    let rig = MariaDbRig::start(RigOptions::default()).await?;
    create_schema(&rig).await?;
    let writers = Writers::start(&rig, N_WRITERS).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut backups = Vec::new();
    for _ in 0..N_BACKUPS {
        let outcome = rig.orchestrator.backup(&rig.app, rig.plugin_dyn()).await?;
        assert_eq!(outcome.record.consistency, Some(Consistency::Application), "backup {} under load is application-consistent", outcome.record.id);
        assert!(!server_is_frozen(&rig.server).await?, "the server is thawed after backup {}", outcome.record.id);
        backups.push(outcome.record);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let history = writers.stop().await;
    assert!(history.acked.len() > 50, "the writers committed too little to prove anything: {}", history.acked.len());

    // Each backup to its own FlexClone, served by a second mariadbd.
    for backup in &backups {
        let point = backup.evidence.consistency_point.clone().expect("a complete backup has a point");
        let restore = rig.orchestrator.restore_to_clone(&rig.app, &backup.id, rig.plugin_dyn()).await?;
        assert_eq!(restore.recovered_point.as_ref(), Some(&point), "the recovery instance reports the backup's point");
        let RestoreMode::Clone { clone_names } = &restore.mode else { panic!("a clone restore") };
        let clone_dir = rig.sim.mounts().mount_point(&format!("/{}", clone_names[0])).join(DATA_SUBDIR);
        let second = MariaDb::start(&clone_dir, MariaDbOptions::default()).await?;
        let rows = rows_on(&second, &rig.app_password).await?;
        let summary = check_rows(&rows, &history, &point)?;
        assert!(summary.expected_rows > 0, "backup {} holds commits", backup.id);
        for (table, _) in stasis_tests::mariadb::TABLES {
            assert!(rows.iter().any(|r| r.0 == table), "backup {} holds rows of {table}", backup.id);
        }
        second.shutdown().await?;
        rig.orchestrator.delete_clone_restore(&restore.id).await?;
    }
    // The commits after the last backup's point exist: the check above could fail.
    let last = stasis_tests::mariadb::gtid_seq(stasis_core::plugins::mysql::gtid_of(backups.last().unwrap().evidence.consistency_point.as_ref().unwrap())).unwrap();
    assert!(history.acked.values().any(|seq| *seq > last), "writers committed after the last backup");

    // In place: stop, SnapRestore, recover, start the production server again.
    let chosen = &backups[1];
    let point = chosen.evidence.consistency_point.clone().unwrap();
    let restore = rig.orchestrator.restore_in_place(&rig.app, &chosen.id, rig.plugin_dyn()).await?;
    assert_eq!(restore.recovered_point.as_ref(), Some(&point));
    assert!(rig.plugin.answers().await, "the production server runs again after the in-place restore");
    let rows = rows_on(&rig.server, &rig.app_password).await?;
    check_rows(&rows, &history, &point)?;
    let backups_now = rig.orchestrator.catalog.backups(Some(&rig.app.name))?;
    assert!(backups_now.iter().any(|b| b.id == backups[2].id && b.expired), "the newer backup expired with its snapshot");
    Ok(())
}
