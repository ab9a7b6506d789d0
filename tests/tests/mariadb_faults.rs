//! Faults over a real MariaDB on a FUSE-mounted simulator volume.
//!
//! - A small proptest (8 seeded cases, two backups each, writers running): ONTAP errors and
//!   hangs on the snapshot request (the simulator's fault rules), the plugin's lock session
//!   killed while the lock is held, the orchestrator killed at a step of the backup (its
//!   tasks aborted and its connections closed, then a new one reconciles). Invariants: no
//!   server keeps a backup lock past the freeze bound; every complete backup's snapshot is
//!   on the array and every `stasis_` snapshot belongs to a complete backup; every
//!   application-consistent backup restores (to a FlexClone, served by a second mariadbd)
//!   to exactly the commits within its GTID point.
//! - The negative control: the same checker, with a plugin that reads the point but takes
//!   no lock (crash-consistent snapshots while MyISAM and Aria are written), must catch
//!   restores that are wrong or need repair.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use ontap_sim::control::faults::{FaultAction, FaultRuleSpec};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use stasis_core::domain::{BackupState, Consistency, ConsistencyPoint, RestoreMode};
use stasis_core::plugin::{AppPlugin, PluginError, RecoveryReport, RecoveryTarget};
use stasis_core::plugins::mysql::{point, MysqlPlugin};
use stasis_core::workflow::{Orchestrator, Step};
use stasis_scenarios::mariadb::{MariaDb, MariaDbOptions, MariaDbRig, RigOptions, DATA_SUBDIR};
use stasis_scenarios::torture::wrappers::HarnessHook;
use stasis_tests::mariadb::{check_rows, create_schema, init_tracing, kill_sessions_of, rows_on, server_is_frozen, Writers};

const FREEZE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy)]
enum Fault {
    None,
    OntapError,
    /// The snapshot answer comes after the freeze bound (it was taken, late).
    OntapHang,
    SessionKilled,
    OrchestratorKilled(Step),
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        Just(Fault::None),
        Just(Fault::OntapError),
        Just(Fault::OntapHang),
        Just(Fault::SessionKilled),
        prop::sample::select(vec![Step::QuiesceIntentRecorded, Step::Quiesced, Step::SnapshotTaken, Step::Unquiesced, Step::SnapshotRecorded]).prop_map(Fault::OrchestratorKilled),
    ]
}

/// The real plugin, optionally killing its own lock session right after the lock is granted.
struct FaultyPlugin {
    inner: MysqlPlugin,
    port: u16,
    kill_session: bool,
}

#[async_trait::async_trait]
impl AppPlugin for FaultyPlugin {
    async fn quiesce(&self) -> Result<ConsistencyPoint, PluginError> {
        let point = self.inner.quiesce().await?;
        if self.kill_session {
            kill_sessions_of(self.port, stasis_scenarios::mariadb::APP_USER).await.map_err(|e| PluginError::App(e.to_string()))?;
        }
        Ok(point)
    }
    async fn unquiesce(&self) -> Result<(), PluginError> {
        self.inner.unquiesce().await
    }
    async fn stop(&self) -> Result<(), PluginError> {
        self.inner.stop().await
    }
    async fn start(&self) -> Result<(), PluginError> {
        self.inner.start().await
    }
    async fn recover(&self, target: &RecoveryTarget) -> Result<RecoveryReport, PluginError> {
        self.inner.recover(target).await
    }
}

/// A new orchestrator "process" on the rig's durable catalog.
fn orchestrator_process(rig: &MariaDbRig, hook: Arc<HarnessHook>) -> anyhow::Result<Orchestrator> {
    let fresh = MariaDbRig::orchestrator(&rig.sim, Duration::from_secs(5), rand::random())?;
    Ok(Orchestrator::new(fresh.storage, rig.orchestrator.catalog.clone(), fresh.clock).with_hook(hook))
}

/// Restore `backup_id` to a clone, serve it with a second mariadbd and check its rows.
async fn check_restore(rig: &MariaDbRig, orchestrator: &Orchestrator, backup_id: &str, history: &stasis_tests::mariadb::History, point: &ConsistencyPoint) -> anyhow::Result<()> {
    let restore = orchestrator.restore_to_clone(&rig.app, backup_id, rig.plugin_dyn()).await?;
    let RestoreMode::Clone { clone_names } = &restore.mode else { anyhow::bail!("not a clone restore") };
    let dir = rig.sim.mounts().mount_point(&format!("/{}", clone_names[0])).join(DATA_SUBDIR);
    let second = MariaDb::start(&dir, MariaDbOptions::default()).await?;
    let rows = rows_on(&second, &rig.app_password).await;
    second.shutdown().await?;
    orchestrator.delete_clone_restore(&restore.id).await?;
    check_rows(&rows?, history, point)?;
    Ok(())
}

async fn run_case(rig: &MariaDbRig, faults: &[Fault]) -> anyhow::Result<()> {
    let writers = Writers::start(rig, 2).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut finished = Vec::new();
    for fault in faults {
        let hook = Arc::new(HarnessHook::default());
        let orchestrator = orchestrator_process(rig, hook.clone())?;
        let plugin = Arc::new(FaultyPlugin { inner: MysqlPlugin::new(rig.plugin.config().clone())?, port: rig.server.port(), kill_session: matches!(fault, Fault::SessionKilled) });
        let faults = rig.sim.sim().sim().faults();
        match fault {
            Fault::OntapError => {
                faults.add(FaultRuleSpec { method: Some("POST".into()), path: "/api/storage/volumes/*/snapshots".into(), action: FaultAction::Error { status: 500, code: 13, message: "Internal error (injected).".into() }, probability: 1.0, count: Some(1) }).map_err(anyhow::Error::msg)?;
            }
            Fault::OntapHang => {
                let ms = FREEZE.as_millis() as u64 + 300;
                faults.add(FaultRuleSpec { method: Some("POST".into()), path: "/api/storage/volumes/*/snapshots".into(), action: FaultAction::Latency { ms, before: false }, probability: 1.0, count: Some(1) }).map_err(anyhow::Error::msg)?;
            }
            Fault::OrchestratorKilled(step) => hook.crash_at(Some(*step)),
            Fault::None | Fault::SessionKilled => {}
        }
        let started = Instant::now();
        let result = orchestrator.backup(&rig.app, plugin.clone()).await;
        faults.clear();
        if matches!(result, Err(stasis_core::workflow::WorkflowError::Crashed(_))) {
            // The process dies: its tasks stop and its connections close (the plugin goes).
            orchestrator.background.abort_all();
            drop(plugin);
            let next = orchestrator_process(rig, Arc::new(HarnessHook::default()))?;
            next.reconcile(&rig.app, rig.plugin_dyn()).await?;
        } else {
            drop(plugin);
        }
        // Invariant: no lock past the bound.
        tokio::time::sleep(FREEZE.saturating_sub(started.elapsed())).await;
        anyhow::ensure!(!server_is_frozen(&rig.server).await?, "{fault:?}: the server is still frozen after the freeze bound");
        if let Ok(outcome) = &result {
            finished.push(outcome.record.id.clone());
        }
    }
    let history = writers.stop().await;

    // Invariant: the catalog and the array agree.
    let records = rig.orchestrator.catalog.backups(Some(&rig.app.name))?;
    let snapshots = rig.orchestrator.storage.snapshots(&rig.volume_uuid).await?;
    for s in snapshots.iter().filter(|s| s.name.starts_with("stasis_")) {
        anyhow::ensure!(records.iter().any(|b| b.snapshot_name == s.name && b.state == BackupState::Complete && !b.expired), "orphan snapshot {} ({faults:?})", s.name);
    }
    for b in &records {
        anyhow::ensure!(b.state.is_final(), "backup {} left {:?} ({faults:?})", b.id, b.state);
        if b.state == BackupState::Complete && !b.expired {
            anyhow::ensure!(snapshots.iter().any(|s| s.name == b.snapshot_name), "complete backup {} has no snapshot ({faults:?})", b.id);
        }
    }
    // Invariant: every application-consistent backup of this case restores exactly.
    let orchestrator = orchestrator_process(rig, Arc::new(HarnessHook::default()))?;
    for id in finished {
        let b = records.iter().find(|b| b.id == id).expect("recorded");
        if b.consistency == Some(Consistency::Application) {
            let point = b.evidence.consistency_point.clone().expect("point");
            check_restore(rig, &orchestrator, &b.id, &history, &point).await.map_err(|e| anyhow::anyhow!("{faults:?}: backup {}: {e:#}", b.id))?;
        }
    }
    // Start the next case from a clean table set (the writers restart their numbering).
    let mut conn = rig.conn(Some(stasis_tests::mariadb::DATABASE)).await?;
    for (table, _) in stasis_tests::mariadb::TABLES {
        conn.query_drop(format!("DELETE FROM {table}")).await?;
    }
    conn.disconnect().await?;
    Ok(())
}

#[test]
fn faults_never_leave_a_lock_or_a_wrong_restore() {
    init_tracing();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().expect("runtime");
    let rig = runtime
        .block_on(async {
            let rig = MariaDbRig::start(RigOptions { freeze_timeout: FREEZE, lock_wait_timeout: Duration::from_secs(1), ..Default::default() }).await?;
            create_schema(&rig).await?;
            anyhow::Ok(rig)
        })
        .expect("starting MariaDB on a simulated volume (run `bash ci/install.sh`)");
    let cases: u32 = std::env::var("MARIADB_FAULT_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(8);
    let config = Config { cases, max_shrink_iters: 4, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let result = runner.run(&prop::collection::vec(fault(), 2), |faults| {
        eprintln!("case: {faults:?}");
        runtime.block_on(run_case(&rig, &faults)).map_err(|e| TestCaseError::fail(format!("{e:#}")))
    });
    runtime.block_on(async move { drop(rig) });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Crash-consistent mode: the point is read, but no lock is taken.
struct NoLockPlugin {
    inner: Arc<MysqlPlugin>,
    port: u16,
    password: String,
}

#[async_trait::async_trait]
impl AppPlugin for NoLockPlugin {
    async fn quiesce(&self) -> Result<ConsistencyPoint, PluginError> {
        let opts = mysql_async::OptsBuilder::default().ip_or_hostname("127.0.0.1").tcp_port(self.port).user(Some(stasis_scenarios::mariadb::APP_USER)).pass(Some(self.password.clone())).prefer_socket(false);
        let mut conn = mysql_async::Conn::new(opts).await.map_err(|e| PluginError::App(e.to_string()))?;
        let gtid: Option<String> = conn.query_first("SELECT @@gtid_binlog_pos").await.map_err(|e| PluginError::App(e.to_string()))?;
        let status: Option<(String, u64)> = conn.query_first("SHOW MASTER STATUS").await.ok().flatten().and_then(|r: mysql_async::Row| Some((r.get(0)?, r.get(1)?)));
        let _ = conn.disconnect().await;
        Ok(point(&gtid.unwrap_or_default(), status.as_ref().map(|(f, p)| (f.as_str(), *p))))
    }
    async fn unquiesce(&self) -> Result<(), PluginError> {
        Ok(())
    }
    async fn stop(&self) -> Result<(), PluginError> {
        self.inner.stop().await
    }
    async fn start(&self) -> Result<(), PluginError> {
        self.inner.start().await
    }
    async fn recover(&self, target: &RecoveryTarget) -> Result<RecoveryReport, PluginError> {
        self.inner.recover(target).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn negative_control_crash_consistent_snapshots_are_caught() -> anyhow::Result<()> {
    init_tracing();
    const ATTEMPTS_MAX: usize = 8;
    let rig = MariaDbRig::start(RigOptions::default()).await?;
    create_schema(&rig).await?;
    let plugin = Arc::new(NoLockPlugin { inner: rig.plugin.clone(), port: rig.server.port(), password: rig.app_password.clone() });
    let writers = Writers::start(&rig, 4).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut backups = Vec::new();
    for _ in 0..ATTEMPTS_MAX {
        let outcome = rig.orchestrator.backup(&rig.app, plugin.clone()).await?;
        backups.push(outcome.record);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let history = writers.stop().await;
    let mut caught = Vec::new();
    for b in &backups {
        let point = b.evidence.consistency_point.clone().expect("point");
        if let Err(e) = check_restore(&rig, &rig.orchestrator, &b.id, &history, &point).await {
            caught.push(format!("{}: {e:#}", b.id));
        }
    }
    eprintln!("negative control: {} of {} unlocked snapshots caught:\n{}", caught.len(), backups.len(), caught.join("\n"));
    assert!(!caught.is_empty(), "the checker accepted every crash-consistent snapshot taken while MyISAM/Aria were written: it cannot fail");
    Ok(())
}
