//! Disaster recovery end to end: two simulators on 127.0.0.1, each reached only through the
//! ONTAP REST client (peering, dp volumes, SnapMirror relationships, transfers over the
//! simulators' intercluster link), the orchestrator's DR workflows, a SQLite catalog, and the
//! simulated database on site A's volumes (and started on site B's after a failover).

use std::time::Duration;

use stasis_core::catalog::Catalog;
use stasis_core::domain::Consistency;
use stasis_core::dr::{DrState, FailoverKind, FailoverState, Site};
use stasis_core::plugins::simdb::{consistency_point, SimDb};
use stasis_core::replication::MirrorState;
use stasis_core::workflow::dr::FailbackOutcome;
use stasis_scenarios::torture::dr::{TwoSites, TwoSitesConfig, SVM_B};

fn work(db: &SimDb, n: u32, salt: u32) {
    for i in 0..n {
        let k = (i * 7 + salt) % db.n_keys();
        db.try_transfer(k, (k + 1) % db.n_keys(), 1 + u64::from(i % 5)).expect("commit");
    }
}

async fn backup_replicated(s: &TwoSites) -> stasis_core::domain::BackupRecord {
    let (backup, update) = s.orchestrator.backup_and_replicate(&s.app, s.db.clone(), &s.site_b, true, s.bounds).await.expect("backup");
    assert_eq!(backup.consistency, Some(Consistency::Application));
    let transfers = update.expect("update carrying the backup's snapshot");
    assert!(transfers.iter().all(|t| t.snapshot.as_deref().is_none_or(|n| n == backup.snapshot_name)), "{transfers:?}");
    backup
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unplanned_failover_starts_site_b_at_the_newest_backup_that_reached_it() {
    let s = TwoSites::start(TwoSitesConfig { seed: 11, ..Default::default() }).await.unwrap();
    let plan = s.orchestrator.dr_setup(&s.app, &s.request(), &s.site_a, &s.site_b, s.bounds).await.expect("DR set-up");
    assert_eq!(plan.state, DrState::Mirrored);
    for pair in &plan.volumes {
        let r = s.site_b.replication.relationship(pair.relationship_uuid.as_deref().unwrap()).await.unwrap();
        assert_eq!(r.state, MirrorState::Snapmirrored, "{r:?}");
        assert_eq!(r.source.to_string(), format!("svm0:{}", pair.source));
    }
    // Set-up again adopts everything.
    let again = s.orchestrator.dr_setup(&s.app, &s.request(), &s.site_a, &s.site_b, s.bounds).await.expect("idempotent set-up");
    assert_eq!(again.volumes, plan.volumes);

    work(&s.db, 40, 1);
    let first = backup_replicated(&s).await;
    work(&s.db, 40, 2);
    let second = backup_replicated(&s).await;

    // A drill at B opens the newest mirrored backup on clones, and removes them.
    let drill = s.orchestrator.dr_drill(&s.app, &s.site_b, s.standby_b().unwrap()).await.expect("drill");
    assert!(drill.verified);
    assert_eq!(drill.restored_backup_id.as_deref(), Some(second.id.as_str()));
    assert!(drill.rpo.is_some() && drill.rto.is_some());
    let b_volumes: Vec<String> = s.b.sim().read(|st| st.volumes.values().map(|v| v.name.clone()).collect());
    assert!(b_volumes.iter().all(|n| !n.contains("_drill_")), "drill clones left: {b_volumes:?}");

    // A third backup completes on A but the link breaks under its update: B never gets it.
    work(&s.db, 40, 3);
    s.link_down(None);
    let (third, update) = s.orchestrator.backup_and_replicate(&s.app, s.db.clone(), &s.site_b, true, s.bounds).await.unwrap();
    assert!(update.is_err(), "the update over a broken link must fail: {update:?}");
    // More acknowledged writes on A that no backup holds, then site A is gone.
    work(&s.db, 40, 4);
    s.site_a_down();
    let lost_txid = s.db.last_committed_txid().unwrap();

    let standby = s.standby_b().unwrap();
    let record = s.orchestrator.failover_unplanned(&s.app, &s.site_b, standby.clone()).await.expect("unplanned failover");
    assert_eq!(record.kind, FailoverKind::Unplanned);
    assert_eq!(record.state, FailoverState::Complete);
    assert!(record.verified);
    assert_eq!(record.restored_backup_id.as_deref(), Some(second.id.as_str()), "the newest backup on B, not {third:?}");
    // B runs at exactly the second backup's point, with that backup's values.
    let point = second.evidence.consistency_point.clone().unwrap();
    assert_eq!(record.recovered_point.as_ref(), Some(&point));
    assert_eq!(consistency_point(standby.last_committed_txid().unwrap()), point);
    assert!(standby.last_committed_txid().unwrap() < lost_txid);
    let rpo = record.rpo.unwrap();
    let age = (record.started_at - second.evidence.lock_granted.unwrap()).to_std().unwrap();
    assert_eq!(rpo.as_millis(), age.as_millis(), "RPO is the age of the restored state");
    assert!(record.rto.unwrap() > Duration::ZERO);
    // B is writable and serving.
    work(&standby, 10, 5);
    let plan = s.catalog.dr_plan(&s.app.name).unwrap().unwrap();
    assert_eq!((plan.state, plan.active_site), (DrState::FailedOver, Site::B));
    let recorded = s.catalog.failovers(Some(&s.app.name)).unwrap();
    assert_eq!(recorded.iter().map(|f| f.kind).collect::<Vec<_>>(), [FailoverKind::Drill, FailoverKind::Unplanned]);
    drop(first);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn planned_failover_loses_nothing_and_failback_asks_before_discarding_site_a_writes() {
    let s = TwoSites::start(TwoSitesConfig { seed: 12, two_volumes: false, ..Default::default() }).await.unwrap();
    s.orchestrator.dr_setup(&s.app, &s.request(), &s.site_a, &s.site_b, s.bounds).await.expect("DR set-up");
    work(&s.db, 30, 1);
    backup_replicated(&s).await;
    work(&s.db, 30, 2);
    let last_on_a = s.db.last_committed_txid().unwrap();
    let values_on_a = s.db.values().unwrap();

    let standby = s.standby_b().unwrap();
    let record = s.orchestrator.failover_planned(&s.app, &s.site_a, &s.site_b, s.db.clone(), standby.clone(), s.bounds).await.expect("planned failover");
    assert!(record.verified);
    assert_eq!(record.rpo, Some(Duration::ZERO), "a planned failover loses nothing");
    assert_eq!(standby.last_committed_txid(), Some(last_on_a), "B starts at exactly A's last commit");
    assert_eq!(standby.values().unwrap(), values_on_a);
    assert!(!s.db.is_running(), "A was stopped");

    // Work on B, and a stray write on A after the failover (someone kept using site A).
    work(&standby, 25, 3);
    let uuid_a = s.volume_uuids_a().unwrap()[0].clone();
    s.a.sim().write_file(&uuid_a, "stray.txt", 0, &[7u8; 8192]).unwrap();
    let outcome = s.orchestrator.failback(&s.app, &s.site_a, &s.site_b, s.db.clone(), standby.clone(), false, s.bounds).await.expect("failback check");
    let divergence = match outcome {
        FailbackOutcome::NeedsConfirmation(d) => d,
        FailbackOutcome::Done(r) => panic!("failback discarded site A's writes without asking: {r:?}"),
    };
    assert!(divergence.bytes.unwrap_or(u64::MAX) >= 8192, "{divergence:?}");
    assert_eq!(s.catalog.dr_plan(&s.app.name).unwrap().unwrap().state, DrState::FailedOver, "nothing changed before confirmation");
    assert!(standby.is_running(), "B keeps serving");

    let last_on_b = standby.last_committed_txid().unwrap();
    let values_on_b = standby.values().unwrap();
    let outcome = s.orchestrator.failback(&s.app, &s.site_a, &s.site_b, s.db.clone(), standby.clone(), true, s.bounds).await.expect("failback");
    let FailbackOutcome::Done(back) = outcome else { panic!("confirmed failback did not run") };
    assert_eq!(back.kind, FailoverKind::Failback);
    assert!(back.verified && back.divergence.is_some());
    assert_eq!(s.db.last_committed_txid(), Some(last_on_b), "A runs at exactly B's last commit");
    assert_eq!(s.db.values().unwrap(), values_on_b);
    assert!(!standby.is_running());
    assert!(s.a.sim().read_file(&uuid_a, "stray.txt", 0, None).is_err(), "the stray write on A was discarded, as reported");
    let plan = s.catalog.dr_plan(&s.app.name).unwrap().unwrap();
    assert_eq!((plan.state, plan.active_site), (DrState::Mirrored, Site::A));
    for pair in &plan.volumes {
        let r = s.site_b.replication.relationship(pair.relationship_uuid.as_deref().unwrap()).await.unwrap();
        assert_eq!(r.state, MirrorState::Snapmirrored, "A -> B mirrors again: {r:?}");
        assert!(pair.reverse_relationship_uuid.is_none());
    }
    assert!(s.site_a.replication.relationships(&s.app.svm).await.unwrap().is_empty(), "the reverse relationship is gone");
    // Protected again: the next backup reaches B.
    work(&s.db, 10, 4);
    backup_replicated(&s).await;
    let _ = SVM_B;
    s.shutdown().await;
}
