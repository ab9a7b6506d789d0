//! End to end on a real PostgreSQL: the data directory on one FUSE-mounted simulator volume
//! and the WAL on a second (`initdb --waldir`), so each backup is one consistency-group
//! snapshot taken between `pg_backup_start` and `pg_backup_stop` (one held session) by the
//! orchestrator through the ONTAP REST client, while three writers commit. Each backup is
//! restored to FlexClones (the plugin recovers the copy on a private server) and opened by a
//! second server, and one is restored in place; every restore must hold exactly the
//! acknowledged transactions up to its WAL end (commit order read from the source's WAL with
//! `pg_waldump`), including all of those committed before the backup's consistency point,
//! and the copy's control file must show the backup's checkpoint.
//!
//! Needs PostgreSQL, /dev/fuse and fusermount3 (`bash ci/install.sh`); without them the
//! test fails saying so.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use stasis_core::domain::{Consistency, RestoreMode};
use stasis_scenarios::postgres::{self, check_restore, commit_lsns, parse_lsn, Ack, PgRig, PgRigOptions, Postgres};

const WRITERS: i32 = 3;
const BACKUPS: usize = 3;
/// Acknowledged transactions between two backups (and before the first, after the last).
const COMMITS_BETWEEN: usize = 150;

fn point_lsn(point: &Option<stasis_core::domain::ConsistencyPoint>) -> u64 {
    let text = &point.as_ref().expect("a consistency point").0;
    parse_lsn(text.strip_prefix("redo=").expect("redo=<lsn>")).expect("an LSN")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backups_under_load_restore_exactly_to_clones_and_in_place_on_a_real_postgres() -> anyhow::Result<()> {
    postgres::check_prerequisites().expect("PostgreSQL for the end-to-end test");
    let rig = PgRig::start(PgRigOptions { seed: 5, ..Default::default() }).await?;
    let writers = postgres::writers(rig.server.port(), 0, WRITERS).await?;
    writers.wait_for(COMMITS_BETWEEN).await?;

    let mut backups = Vec::new();
    for _ in 0..BACKUPS {
        let outcome = rig.orchestrator.backup(&rig.app, rig.plugin_dyn()).await?;
        let done = Instant::now();
        let record = outcome.record;
        assert_eq!(record.consistency, Some(Consistency::Application), "{record:?}");
        assert_eq!(record.snapshots.len(), 2, "one consistency-group snapshot of data and WAL: {record:?}");
        backups.push((record, done));
        writers.wait_for(COMMITS_BETWEEN).await?;
    }
    let acks: Vec<Ack> = writers.stop().await?;

    // The backup session is gone after the thaw (its pg_backup_start with it).
    let admin = rig.server.client().await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sessions: i64 = admin.query_one("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'stasis'", &[]).await?.get(0);
        if sessions == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{sessions} plugin sessions still open after every thaw");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Commit order from the source's WAL, before an in-place restore rewinds it.
    let commits = commit_lsns(&rig.wal_dir)?;

    for (backup, done) in &backups {
        let restore = rig.orchestrator.restore_to_clone(&rig.app, &backup.id, rig.plugin_dyn()).await?;
        assert_eq!(restore.recovered_point, backup.evidence.consistency_point, "the copy's control file shows the backup's checkpoint");
        assert_eq!(restore.needed_crash_recovery, Some(true), "a snapshot of a running server replays its WAL");
        let RestoreMode::Clone { clone_names } = &restore.mode else { panic!("a clone restore: {restore:?}") };
        // recover() pointed the data clone's pg_wal at the WAL clone: a second server opens it.
        let copy = Postgres::start(&rig.clone_data_dir(&clone_names[0])).await?;
        let rows = postgres::rows(&copy.client().await?).await?;
        drop(copy);
        let check = check_restore(&acks, &commits, &rows, point_lsn(&backup.evidence.consistency_point), *done).map_err(|e| anyhow::anyhow!("backup {}: {e}", backup.id))?;
        assert!(check.before_point > 0 && check.after_restore > 0, "the check could fail on both sides: {check:?}");
        rig.orchestrator.delete_clone_restore(&restore.id).await?;
    }

    // In place: the server is stopped, the group reverted, the copy recovered and the server
    // started again on it.
    let (first, done) = &backups[0];
    let restore = rig.orchestrator.restore_in_place(&rig.app, &first.id, rig.plugin_dyn()).await?;
    assert_eq!(restore.recovered_point, first.evidence.consistency_point);
    let rows = postgres::rows(&rig.server.client().await?).await?;
    let check = check_restore(&acks, &commits, &rows, point_lsn(&first.evidence.consistency_point), *done).map_err(|e| anyhow::anyhow!("in place: {e}"))?;
    assert!(check.after_restore > 0, "{check:?}");
    // The restored server takes writes again.
    rig.server.client().await?.execute("INSERT INTO acked VALUES (99, 1)", &[]).await?;
    Ok(())
}

/// The checker is not vacuous: a lost commit, a torn restore (a hole) and a row written after
/// the backup are each reported.
#[test]
fn the_checker_catches_lost_commits_holes_and_rows_from_after_the_backup() {
    let t0 = Instant::now();
    let acks: Vec<Ack> = (1..=10).map(|seq| Ack { writer: 0, seq, txid: 100 + seq as u64, issued: t0 + Duration::from_millis(seq as u64), acked: t0 + Duration::from_millis(seq as u64) }).collect();
    let commits = acks.iter().map(|a| (a.txid, 1000 + a.seq as u64 * 10)).collect();
    let done = t0 + Duration::from_millis(7);
    let point = 1000 + 40; // rows 1..=3 committed before the point
    let good: BTreeSet<(i32, i64)> = (1..=6).map(|s| (0, s)).collect();
    let check = check_restore(&acks, &commits, &good, point, done).unwrap();
    assert_eq!((check.rows, check.before_point, check.after_restore), (6, 3, 4));

    let hole: BTreeSet<_> = good.iter().copied().filter(|r| r.1 != 4).collect();
    assert!(check_restore(&acks, &commits, &hole, point, done).unwrap_err().contains("missing, first (0, 4)"));
    let lost: BTreeSet<_> = [(0, 1), (0, 2)].into();
    assert!(check_restore(&acks, &commits, &lost, point, done).unwrap_err().contains("before the backup's consistency point"));
    let late: BTreeSet<_> = (1..=9).map(|s| (0, s)).collect();
    assert!(check_restore(&acks, &commits, &late, point, done).unwrap_err().contains("issued after the backup had finished"));
    let unknown: BTreeSet<_> = [(0, 1), (5, 1)].into();
    assert!(check_restore(&acks, &commits, &unknown, point, done).unwrap_err().contains("no writer saw it acknowledged"));
}
