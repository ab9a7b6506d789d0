//! Disaster recovery end to end on real MariaDB: site A is a simulator whose volume holds a
//! running `mariadbd`'s data directory (FUSE mount), site B a second simulator (its own
//! cluster, SVM and FUSE mounts); SnapMirror between them over their intercluster link.
//! Writers record the GTID of every acknowledged commit; app-consistent backups are
//! replicated; then site A is lost (its server killed, its API and link dead) and an
//! unplanned failover starts a second `mariadbd` on site B's volume. Its rows must be
//! exactly the commits within the consistency point of the backup site B restored.
//!
//! Needs mariadbd, mariadb-install-db, /dev/fuse and fusermount3 (`bash ci/install.sh`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use ontap_sim::control::faults::{FaultAction, FaultRuleSpec};
use ontap_sim::model::cluster::VolumeModify;
use stasis_core::catalog::Catalog;
use stasis_core::domain::{AppKind, AppSpec, Consistency};
use stasis_core::dr::{DrState, FailoverKind, FailoverState, Site, POLICY_ASYNC_DEFAULT};
use stasis_core::plugin::AppPlugin;
use stasis_core::plugins::mysql::{MysqlConfig, MysqlPlugin, ServerControl};
use stasis_core::sqlite_catalog::SqliteCatalog;
use stasis_core::workflow::dr::{DrBounds, DrPlanRequest};
use stasis_core::workflow::{Orchestrator, SeededIds};
use stasis_scenarios::mariadb::{instance_command, MariaDb, MariaDbOptions, SimWithMounts, APP_USER, DATA_SUBDIR, SIM_PASSWORD, START_WAIT_MAX};
use stasis_scenarios::torture::dr::{site, TwoSitesConfig, LINK_PATH};
use stasis_tests::mariadb::{check_rows, create_schema_on, init_tracing, rows_on, Writers, DATABASE};

const VOLUME: &str = "mdb_data";
const SVM_A: &str = "svm0";
const SVM_B: &str = "svm_dr";
const FREEZE: Duration = Duration::from_secs(5);

fn plugin(port: u16, password: &str, control: ServerControl) -> anyhow::Result<Arc<MysqlPlugin>> {
    let config = MysqlConfig {
        host: "127.0.0.1".into(),
        port,
        user: APP_USER.into(),
        password: ontap_client::SecretString::from(password.to_string()),
        freeze_timeout: FREEZE,
        lock_wait_timeout: Duration::from_secs(2),
        server_control: Some(control),
    };
    Ok(Arc::new(MysqlPlugin::new(config).map_err(|e| anyhow::anyhow!("{e}"))?))
}

/// Wait (bounded) until the writers acknowledged `more` commits beyond what they had.
async fn more_commits(writers: &Writers, more: usize) {
    let target = writers.snapshot().acked.len() + more;
    let deadline = Instant::now() + Duration::from_secs(30);
    while writers.snapshot().acked.len() < target {
        assert!(Instant::now() < deadline, "the writers stopped committing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn drop_everything(sim: &SimWithMounts, method: Option<&str>, path: &str) {
    let rule = FaultRuleSpec { method: method.map(str::to_string), path: path.into(), action: FaultAction::Drop { after_apply: false }, probability: 1.0, count: None };
    sim.sim().sim().faults().add(rule).expect("valid fault rule");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_fails_over_to_site_b_at_exactly_the_newest_replicated_backup() -> anyhow::Result<()> {
    init_tracing();
    let cluster = |name: &str, svm: &str, seed: u64| ontap_sim::ClusterConfig { name: name.into(), svms: vec![svm.into()], seed, ..Default::default() };
    let sim_a = SimWithMounts::start_cluster(cluster("sim-a", SVM_A, 31), SIM_PASSWORD).await?;
    let sim_b = SimWithMounts::start_cluster(cluster("sim-b", SVM_B, 32), SIM_PASSWORD).await?;
    let (_, mount_a) = sim_a.create_volume(VOLUME, 2 << 30).await?;
    let password = format!("app-canary-{:016x}", rand::random::<u64>());
    // Servers are declared after the simulators: dropped (killed) before the unmounts.
    let mut server_a = MariaDb::install_and_start(&mount_a.join(DATA_SUBDIR), &password, MariaDbOptions::default()).await?;
    let plugin_a = plugin(
        server_a.port(),
        &password,
        ServerControl {
            stop_command: server_a.stop_command()?,
            start_command: server_a.start_command()?,
            mount_root: sim_a.mount_root(),
            data_subdir: DATA_SUBDIR.into(),
            instance_command: instance_command(&MariaDbOptions::default())?,
            start_wait: START_WAIT_MAX,
        },
    )?;

    let cfg = TwoSitesConfig { password: SIM_PASSWORD.into(), client_timeout: Duration::from_secs(10), ..Default::default() };
    let site_a = site(sim_a.sim(), "sim-a", &cfg)?;
    let site_b = site(sim_b.sim(), "sim-b", &cfg)?;
    let catalog = Arc::new(SqliteCatalog::open_in_memory()?);
    let app = AppSpec { name: "ledger".into(), kind: AppKind::Mysql, svm: SVM_A.into(), volumes: vec![VOLUME.into()], freeze_timeout: FREEZE };
    catalog.put_app(&app)?;
    let orchestrator = Orchestrator::new(site_a.storage.clone(), catalog.clone(), Arc::new(stasis_core::clock::SystemClock)).with_ids(Arc::new(SeededIds::new(31)));
    let bounds = DrBounds { transfer_wait_max: Duration::from_secs(60), peering_wait_max: Duration::from_secs(10) };

    create_schema_on(&server_a, &password).await?;
    let writers = Writers::start_on(&server_a, &password, 4).await?;
    more_commits(&writers, 30).await;
    let request = DrPlanRequest { destination_svm: SVM_B.into(), policy: POLICY_ASYNC_DEFAULT.into(), schedule: Some(Duration::from_secs(60)), destination_volumes: None };
    let plan = orchestrator.dr_setup(&app, &request, &site_a, &site_b, bounds).await?;
    assert_eq!(plan.state, DrState::Mirrored);

    // The administrator mounts B's mirror in B's namespace (ONTAP mounts dp volumes too).
    let uuid_b = sim_b.sim().sim().volume_uuid(SVM_B, &plan.volumes[0].destination).map_err(|e| anyhow::anyhow!("{e}"))?;
    let junction_b = format!("/{}", plan.volumes[0].destination);
    sim_b.sim().sim().transact(|s| s.modify_volume(&uuid_b, VolumeModify { junction_path: Some(Some(junction_b.clone())), ..Default::default() })).map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(e) = sim_b.mounts().reconcile().into_iter().next() {
        return Err(e);
    }
    let data_b = sim_b.mounts().mount_point(&junction_b).join(DATA_SUBDIR);
    // A mirror is read-only to its hosts until it is broken off (ONTAP's dp volume).
    assert!(data_b.join("ibdata1").is_file(), "B's mount shows the mirrored data directory");
    let write = std::fs::write(data_b.join("stray"), b"x");
    assert_eq!(write.as_ref().map_err(|e| e.raw_os_error()), Err(Some(30)), "writing to a snapmirrored dp volume must fail with EROFS: {write:?}");

    // App-consistent backups under load, each carried to B by an update.
    let mut replicated = Vec::new();
    for _ in 0..2 {
        more_commits(&writers, 30).await;
        let (backup, update) = orchestrator.backup_and_replicate(&app, plugin_a.clone(), &site_b, true, bounds).await?;
        assert_eq!(backup.consistency, Some(Consistency::Application), "{backup:?}");
        let transfers = update?;
        assert!(transfers.iter().all(|t| t.snapshot.as_deref().is_none_or(|n| n == backup.snapshot_name)), "{transfers:?}");
        replicated.push(backup);
    }
    // One more backup on A whose update dies with the link: B never holds it.
    more_commits(&writers, 30).await;
    drop_everything(&sim_a, Some("POST"), LINK_PATH);
    let (unreplicated, update) = orchestrator.backup_and_replicate(&app, plugin_a.clone(), &site_b, true, bounds).await?;
    assert_eq!(unreplicated.consistency, Some(Consistency::Application));
    assert!(update.is_err(), "an update over a dead link must fail: {update:?}");

    // Site A is lost: its server dies mid-write, its API stops answering.
    more_commits(&writers, 30).await;
    server_a.kill();
    drop_everything(&sim_a, None, "/api/**");
    let history = writers.stop().await;

    // Unplanned failover: break, revert to the newest backup on B, verify, start mariadbd on B.
    let server_b = MariaDb::planned(&data_b, MariaDbOptions::default())?;
    let plugin_b = plugin(
        server_b.port(),
        &password,
        ServerControl {
            stop_command: server_b.stop_command()?,
            start_command: server_b.start_command()?,
            mount_root: sim_b.mount_root(),
            data_subdir: DATA_SUBDIR.into(),
            instance_command: instance_command(&MariaDbOptions::default())?,
            start_wait: START_WAIT_MAX,
        },
    )?;
    let record = orchestrator.failover_unplanned(&app, &site_b, plugin_b.clone() as Arc<dyn AppPlugin>).await?;
    let newest = replicated.last().unwrap();
    assert_eq!((record.kind, record.state), (FailoverKind::Unplanned, FailoverState::Complete));
    assert!(record.verified);
    assert_eq!(record.restored_backup_id.as_deref(), Some(newest.id.as_str()), "B restores the newest backup it holds, not {}", unreplicated.id);
    let point = newest.evidence.consistency_point.clone().expect("a complete backup has a point");
    assert_eq!(record.recovered_point.as_ref(), Some(&point));

    // The second mariadbd serves exactly the commits within that backup's point.
    assert!(plugin_b.answers().await, "the failover started mariadbd on site B");
    let rows = rows_on(&server_b, &password).await?;
    let summary = check_rows(&rows, &history, &point)?;
    assert!(summary.expected_rows > 0);
    // What A acknowledged later (in the unreplicated backup and after) is lost, so the same
    // check against the lost backup's point fails: the checker can fail.
    let lost_point = unreplicated.evidence.consistency_point.clone().unwrap();
    assert!(check_rows(&rows, &history, &lost_point).is_err(), "B must not hold the backup that never reached it");
    // B's volume is writable now and the server takes commits.
    let mut conn = server_b.app_conn(&password, Some(DATABASE)).await?;
    conn.query_drop("INSERT INTO t_innodb (writer, n, payload) VALUES (99, 1, 'after failover')").await?;
    conn.disconnect().await?;

    let rpo = record.rpo.expect("RPO measured");
    let rto = record.rto.expect("RTO measured");
    let age = (record.started_at - newest.evidence.lock_granted.unwrap()).to_std()?;
    assert_eq!(rpo.as_millis(), age.as_millis(), "RPO is the age of the state B restored");
    assert!(rto > Duration::ZERO);
    println!(
        "unplanned failover of MariaDB to site B: RPO {:.0} ms (backup {}), RTO {:.0} ms; {} acknowledged commits, {} restored",
        rpo.as_secs_f64() * 1e3,
        newest.id,
        rto.as_secs_f64() * 1e3,
        history.acked.len(),
        summary.expected_rows
    );
    let plan = catalog.dr_plan(&app.name)?.expect("plan");
    assert_eq!((plan.state, plan.active_site), (DrState::FailedOver, Site::B));
    drop(server_b);
    drop(server_a);
    Ok(())
}
