//! One torture case, run for real: a simulator on loopback HTTP, the ONTAP client, the
//! orchestrator, the simulated database writing into the simulator's volumes, and the
//! reference model of what the database acknowledged. Faults are armed per operation;
//! after the last operation the faults heal, the orchestrator restarts and reconciles, and
//! the checker inspects the array, the catalog and every backup's restored data.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use ontap_client::{OntapClient, OntapConfig, SecretString, TlsTrust};
use ontap_sim::control::faults::{FaultAction, FaultRuleSpec};
use ontap_sim::model::cluster::{CloneRequest, Selector, SnapshotModify, VolumeCreate};
use ontap_sim::{ClusterConfig, RunningSim, SimConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use stasis_core::catalog::Catalog;
use stasis_core::clock::SystemClock;
use stasis_core::plugin::AppPlugin;
use stasis_core::domain::{AppKind, AppSpec, BackupRecord, BackupState, Consistency, Policy, RestoreMode, Schedule};
use stasis_core::plugins::simdb::{parse_consistency_point, read_recovered, RecoveryKind, SimDb, SimDbFault, SimDbVolumes};
use stasis_core::sqlite_catalog::SqliteCatalog;
use stasis_core::storage::Storage;
use stasis_core::workflow::{Orchestrator, SeededIds, Step, WorkflowError};

use super::spec::{CaseSpec, Fault, FaultKind, Op};
use super::wrappers::{FaultyCatalog, HarnessHook, HarnessPlugin, PluginMode, SkipVerifyStorage};
use crate::sim_data::SimVolumeData;

/// Values the simulated database holds (3 pages: pages newer than the log are possible).
const N_KEYS: u32 = 1200;
const INITIAL_BALANCE: u64 = 1000;
/// The harness's client answers fast on loopback (a request well under 1 ms; a whole
/// no-fault backup, 6-8 requests, p99 about 12 ms on a 2-core machine); its timeouts are
/// short so that injected timeouts cost little: they are much of a campaign's wall time.
/// (`CaseConfig::client_timeout`; loaded test machines use a longer one.)
pub const CLIENT_TIMEOUT_DEFAULT: Duration = Duration::from_millis(50);
const FILLER_PREFIX: &str = "filler_";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutant {
    /// The plugin thaws before the snapshot.
    EarlyThaw,
    /// Backups are marked complete without looking for the snapshot on the array.
    SkipVerify,
}

#[derive(Clone, Debug)]
pub struct CaseConfig {
    pub mode: PluginMode,
    pub mutant: Option<Mutant>,
    pub freeze_timeout: Duration,
    /// The ONTAP client's request timeout. An injected late answer arrives after twice
    /// this: after the client gave up (inside a freeze, the snapshot request waits for the
    /// time left in the freeze bound instead, so there it is slow but inside the bound).
    pub client_timeout: Duration,
    /// Planted as the array's password: it must never appear in any output.
    pub canary: String,
}

/// What a case did and what the checker found.
#[derive(Clone, Debug, Default)]
pub struct CaseResult {
    pub backups: u64,
    pub backups_complete: u64,
    pub restores: u64,
    pub faults: BTreeMap<FaultKind, u64>,
    pub inconsistent_restores: u64,
    pub freeze_bound_breaches: u64,
    pub orphans: u64,
    pub duplicate_snapshots: u64,
    pub incomplete_evidence: u64,
    /// The most acknowledged transactions that no live backup held, after any operation
    /// (what a disaster at that moment would have lost: the achieved RPO, in transactions).
    pub rpo_transactions_max: u64,
    /// Freeze windows as the database measured them, in milliseconds.
    pub freeze_windows_ms: Vec<f64>,
    pub violations: Vec<String>,
}

impl CaseResult {
    fn violation(&mut self, message: String) {
        tracing::warn!(%message, "violation");
        self.violations.push(message);
    }
}

struct World {
    cfg: CaseConfig,
    sim: RunningSim,
    data: Arc<SimVolumeData>,
    db: Arc<SimDb>,
    catalog: Arc<FaultyCatalog<SqliteCatalog>>,
    hook: Arc<HarnessHook>,
    orchestrator: Orchestrator,
    plugin: Arc<HarnessPlugin>,
    app: AppSpec,
    volume_uuids: Vec<String>,
    rng: ChaCha8Rng,
    /// Reference model: the database's acknowledged state after each txid of the current
    /// timeline (an in-place restore cuts the timeline back).
    states: BTreeMap<u64, imbl::Vector<u64>>,
    /// The state each backup must restore to, fixed when the backup completed.
    expected: HashMap<String, (u64, imbl::Vector<u64>)>,
    ids_seed: u64,
    result: CaseResult,
}

/// The ONTAP client as the harness configures it: short timeouts, tight retry and poll
/// bounds (loopback answers in well under a millisecond).
pub fn client_config(base_url: &str, canary: &str, timeout: Duration) -> OntapConfig {
    let mut config = OntapConfig::new(base_url, "admin", SecretString::from(canary.to_string()));
    config.tls = TlsTrust::BuiltInRoots;
    config.request_timeout = timeout;
    config.connect_timeout = timeout;
    config.retry_attempts_max = 2;
    config.retry_backoff_base = Duration::from_millis(2);
    config.retry_backoff_max = Duration::from_millis(10);
    config.job_poll_interval = Duration::from_millis(2);
    config.job_poll_interval_max = Duration::from_millis(20);
    config.job_wait_max = Duration::from_secs(2);
    config
}

impl World {
    async fn new(spec: &CaseSpec, cfg: CaseConfig) -> anyhow::Result<World> {
        let sim_config = SimConfig {
            cluster: ClusterConfig { seed: spec.seed, ..ClusterConfig::default() },
            password: cfg.canary.clone(),
            ..SimConfig::default()
        };
        let sim = ontap_sim::spawn(sim_config).await?;
        let names: Vec<String> = if spec.two_volumes { vec!["db_data".into(), "db_log".into()] } else { vec!["db_data".into()] };
        let mut volume_uuids = Vec::new();
        for name in &names {
            let req = VolumeCreate {
                name: name.clone(),
                svm: Selector { name: Some("svm0".into()), uuid: None },
                aggregates: vec![Selector { name: Some("aggr1".into()), uuid: None }],
                size: Some(1 << 30),
                junction_path: Some(format!("/{name}")),
                ..Default::default()
            };
            let uuid = sim.sim().transact(|s| s.create_volume(req.clone(), chrono::Utc::now())).map_err(|e| anyhow::anyhow!("{e}"))?;
            let now = chrono::Utc::now();
            sim.sim()
                .transact(|s| (0..spec.foreign_snapshots).try_for_each(|i| s.create_snapshot(&uuid, &format!("foreign_{i}"), SnapshotModify::default(), now).map(|_| ())))
                .map_err(|e| anyhow::anyhow!("creating foreign snapshots: {e}"))?;
            volume_uuids.push(uuid);
        }
        let data = Arc::new(SimVolumeData::new(sim.sim().clone()));
        let volumes = match volume_uuids.as_slice() {
            [one] => SimDbVolumes::single(one.clone()),
            [data_vol, log] => SimDbVolumes::split(data_vol.clone(), log.clone()),
            _ => unreachable!("one or two volumes"),
        };
        let initial = vec![INITIAL_BALANCE; N_KEYS as usize];
        let db = Arc::new(SimDb::create(data.clone(), volumes, &initial, true, Arc::new(SystemClock))?);
        let catalog = Arc::new(FaultyCatalog::new(SqliteCatalog::open_in_memory()?));
        let hook = Arc::new(HarnessHook::default());
        let app = AppSpec { name: "bank".into(), kind: AppKind::Simdb, svm: "svm0".into(), volumes: names, freeze_timeout: cfg.freeze_timeout };
        let plugin = Arc::new(HarnessPlugin { db: db.clone(), mode: cfg.mode });
        let mut states = BTreeMap::new();
        states.insert(0, initial.into_iter().collect());
        let orchestrator = Self::orchestrator(&sim, &cfg, catalog.clone(), hook.clone(), spec.seed)?;
        Ok(World {
            cfg,
            sim,
            data,
            db,
            catalog,
            hook,
            orchestrator,
            plugin,
            app,
            volume_uuids,
            rng: ChaCha8Rng::seed_from_u64(spec.seed),
            states,
            expected: HashMap::new(),
            ids_seed: spec.seed,
            result: CaseResult::default(),
        })
    }

    /// A fresh orchestrator process: new client (new connections), same durable catalog.
    fn orchestrator(sim: &RunningSim, cfg: &CaseConfig, catalog: Arc<FaultyCatalog<SqliteCatalog>>, hook: Arc<HarnessHook>, ids_seed: u64) -> anyhow::Result<Orchestrator> {
        let client: Arc<dyn Storage> = Arc::new(OntapClient::new(client_config(&sim.base_url(), &cfg.canary, cfg.client_timeout))?);
        let storage: Arc<dyn Storage> = match cfg.mutant {
            Some(Mutant::SkipVerify) => Arc::new(SkipVerifyStorage::new(client)),
            _ => client,
        };
        Ok(Orchestrator::new(storage, catalog, Arc::new(SystemClock)).with_ids(Arc::new(SeededIds::new(ids_seed))).with_hook(hook))
    }

    // ---- the workload and its reference model ----

    fn current_state(&self) -> imbl::Vector<u64> {
        self.states.values().next_back().cloned().unwrap_or_default()
    }

    fn work(&mut self, commits: u8, background_steps: u8) {
        for _ in 0..commits {
            let (from, to, amount) = (self.rng.gen_range(0..N_KEYS), self.rng.gen_range(0..N_KEYS), self.rng.gen_range(1..200));
            if let Ok((txid, writes)) = self.db.try_transfer(from, to, amount) {
                let mut state = self.current_state();
                for (key, value) in writes {
                    state.set(key as usize, value);
                }
                self.states.insert(txid, state);
            }
            if self.rng.gen_bool(0.5) {
                let _ = self.db.background_step(&mut self.rng);
            }
        }
        for _ in 0..background_steps {
            let _ = self.db.background_step(&mut self.rng);
        }
    }

    /// After the database reopened (an in-place restore, a restart), cut the reference back
    /// to what it recovered, and check that it recovered to a state the reference knows.
    fn resync_after_reopen(&mut self, why: &str) {
        let (Some(txid), Some(values)) = (self.db.last_committed_txid(), self.db.values()) else { return };
        let expected = match self.states.get(&txid) {
            Some(state) => state.clone(),
            None => {
                self.result.violation(format!("{why}: the database reopened at txid {txid}, which it never acknowledged on this timeline"));
                values.iter().copied().collect()
            }
        };
        if expected.iter().copied().ne(values.iter().copied()) {
            self.result.inconsistent_restores += 1;
            self.result.violation(format!("{why}: the database reopened at txid {txid} with values that differ from what it acknowledged"));
        }
        self.states.retain(|t, _| *t <= txid);
        self.states.insert(txid, values.into_iter().collect());
    }

    // ---- faults ----

    fn sim_fault(&self, method: &str, path: &str, action: FaultAction) {
        let spec = FaultRuleSpec { method: Some(method.into()), path: path.into(), action, probability: 1.0, count: Some(1) };
        self.sim.sim().faults().add(spec).expect("harness fault rules are valid");
    }

    /// Requests a fault of each array kind may hit, per operation.
    fn array_targets(op: &Op, two_volumes: bool) -> Vec<(&'static str, &'static str)> {
        match op {
            Op::Backup { .. } => vec![
                ("POST", if two_volumes { "/api/application/consistency-groups/*/snapshots" } else { "/api/storage/volumes/*/snapshots" }),
                ("GET", "/api/storage/volumes"),
                ("GET", "/api/storage/volumes/*/snapshots"),
                ("GET", "/api/cluster"),
            ],
            Op::RestoreInPlace { .. } => vec![
                ("PATCH", if two_volumes { "/api/application/consistency-groups/*" } else { "/api/storage/volumes/*" }),
                ("GET", "/api/cluster/jobs/*"),
                ("GET", "/api/storage/volumes"),
            ],
            Op::RestoreClone { .. } => vec![("POST", "/api/storage/volumes"), ("GET", "/api/storage/volumes"), ("GET", "/api/cluster/jobs/*")],
            _ => vec![("DELETE", "/api/storage/volumes/*/snapshots/*"), ("GET", "/api/storage/volumes/*/snapshots"), ("GET", "/api/cluster/jobs/*")],
        }
    }

    /// Arm `fault` for the next operation. Returns a healing action for after it.
    fn arm(&mut self, op: &Op, fault: Fault) -> Option<Heal> {
        let targets = Self::array_targets(op, self.volume_uuids.len() > 1);
        let (method, path) = targets[fault.target as usize % targets.len()];
        let write_targets: Vec<_> = targets.iter().filter(|(m, _)| *m != "GET").collect();
        let (write_method, write_path) = *write_targets.get(fault.target as usize % write_targets.len().max(1)).copied().unwrap_or(&targets[0]);
        match fault.kind {
            FaultKind::Ontap5xx => {
                let status = if fault.variant.is_multiple_of(2) { 500 } else { 503 };
                self.sim_fault(method, path, FaultAction::Error { status, code: 13, message: "Internal error (injected).".into() });
            }
            FaultKind::JobFailure => self.sim_fault(write_method, write_path, FaultAction::JobFail { code: 460770, message: "Job failed (injected).".into() }),
            FaultKind::RequestTimeout => {
                // Inside the freeze the snapshot request waits for the rest of the freeze
                // bound: one answer in four comes later than that, so the snapshot exists
                // but the backup must give it up (outcome unknown at the bound).
                let past_the_bound = method == "POST" && path.ends_with("/snapshots") && fault.variant.is_multiple_of(4);
                let ms = if past_the_bound { self.cfg.freeze_timeout.as_millis() as u64 + 50 } else { 2 * self.cfg.client_timeout.as_millis() as u64 };
                self.sim_fault(method, path, FaultAction::Latency { ms, before: false });
            }
            FaultKind::ConnectionReset => self.sim_fault(method, path, FaultAction::Drop { after_apply: fault.variant % 2 == 1 }),
            FaultKind::SlowJob => self.sim_fault(write_method, write_path, FaultAction::JobDelay { ms: 5 + u64::from(fault.variant % 60) }),
            FaultKind::AuthFailure => self.sim_fault(method, path, FaultAction::Error { status: 401, code: 6691623, message: "User is not authorized.".into() }),
            FaultKind::SnapshotLimit => {
                let volume = self.volume_uuids[fault.target as usize % self.volume_uuids.len()].clone();
                let now = chrono::Utc::now();
                self.sim
                    .sim()
                    .transact(|s| {
                        let n = s.volume(&volume)?.snapshots.len();
                        for i in n..1023 {
                            s.create_snapshot(&volume, &format!("{FILLER_PREFIX}{i}"), SnapshotModify::default(), now)?;
                        }
                        Ok(())
                    })
                    .expect("filling a volume with snapshots");
                return Some(Heal::Fillers(volume));
            }
            FaultKind::BusySnapshot => {
                // A clone of the oldest backup's snapshot: retention cannot delete it.
                let oldest = self.catalog.backups(Some(&self.app.name)).ok()?.into_iter().find(|b| b.state == BackupState::Complete && !b.expired)?;
                let volume = self.volume_uuids[0].clone();
                let req = VolumeCreate {
                    name: "busy_clone".into(),
                    svm: Selector { name: Some("svm0".into()), uuid: None },
                    clone: Some(CloneRequest { parent_volume: Selector { name: None, uuid: Some(volume) }, parent_snapshot: Selector { name: Some(oldest.snapshot_name), uuid: None } }),
                    ..Default::default()
                };
                let clone = self.sim.sim().transact(|s| s.create_volume(req.clone(), chrono::Utc::now())).ok()?;
                return Some(Heal::DeleteVolume(clone));
            }
            FaultKind::QuiesceFailure => self.db.inject_fault(SimDbFault::QuiesceFails),
            FaultKind::PluginHang => self.db.inject_fault(SimDbFault::QuiesceHangs),
            FaultKind::SessionKilled => {
                let db = self.db.clone();
                self.hook.set_action(Some(Box::new(move |step| {
                    if step == Step::Quiesced {
                        db.kill_session();
                    }
                })));
            }
            FaultKind::SnapshotVanished => {
                let (sim, volumes) = (self.sim.sim().clone(), self.volume_uuids.clone());
                let victim = volumes[fault.target as usize % volumes.len()].clone();
                self.hook.set_action(Some(Box::new(move |step| {
                    if step == Step::Unquiesced {
                        let _ = sim.transact(|s| {
                            let name = s.volume(&victim)?.snapshots.iter().rev().find(|snap| snap.name.starts_with("stasis_")).map(|snap| snap.uuid.clone());
                            match name {
                                Some(uuid) => s.delete_snapshot(&victim, &uuid),
                                None => Ok(()),
                            }
                        });
                    }
                })));
            }
            FaultKind::OrchestratorCrash => {
                let steps: &[Step] = match op {
                    Op::Backup { .. } => &Step::BACKUP,
                    Op::Retention { .. } => &[Step::RetentionExpired],
                    _ => &Step::RESTORE,
                };
                self.hook.crash_at(Some(steps[fault.target as usize % steps.len()]));
            }
            FaultKind::CatalogWriteFailure => self.catalog.arm(u32::from(fault.variant % 4)),
        }
        None
    }

    /// Clear every armed fault; report whether each one actually hit something.
    fn disarm(&mut self, fault: Fault, crashed: bool) -> bool {
        let rules = self.sim.sim().faults().list();
        self.sim.sim().faults().clear();
        self.db.clear_fault();
        self.hook.set_action(None);
        self.hook.crash_at(None);
        let catalog_failures = self.catalog.failures.swap(0, std::sync::atomic::Ordering::SeqCst);
        self.catalog.disarm();
        match fault.kind {
            FaultKind::Ontap5xx | FaultKind::JobFailure | FaultKind::RequestTimeout | FaultKind::ConnectionReset | FaultKind::SlowJob | FaultKind::AuthFailure => {
                rules.iter().any(|r| r.hits > 0)
            }
            FaultKind::OrchestratorCrash => crashed,
            FaultKind::CatalogWriteFailure => catalog_failures > 0,
            _ => true,
        }
    }

    /// The orchestrator process died: its tasks die with it, the database notices the dead
    /// session, and a new process starts and reconciles.
    async fn restart(&mut self) {
        self.orchestrator.background.abort_all();
        self.db.kill_session();
        self.ids_seed = self.ids_seed.wrapping_add(1);
        match Self::orchestrator(&self.sim, &self.cfg, self.catalog.clone(), self.hook.clone(), self.ids_seed) {
            Ok(o) => self.orchestrator = o,
            Err(e) => self.result.violation(format!("the orchestrator could not restart: {e}")),
        }
        if let Err(e) = self.orchestrator.reconcile(&self.app, self.plugin.clone()).await {
            self.result.violation(format!("reconciliation after a crash failed with no fault armed: {e}"));
        }
    }

    // ---- operations ----

    async fn run_op(&mut self, op: &Op) {
        let fault = op.fault();
        let heal = fault.and_then(|f| self.arm(op, f));
        let was_running = self.db.is_running();
        match op {
            Op::Work { commits, background_steps } => self.work(*commits, *background_steps),
            Op::Backup { .. } => self.backup().await,
            Op::RestoreInPlace { backup, .. } => self.restore(*backup, true).await,
            Op::RestoreClone { backup, .. } => self.restore(*backup, false).await,
            Op::Retention { keep_last, .. } => {
                let policy = Policy { name: "harness".into(), schedule: Schedule::Interval { every: Duration::from_secs(60) }, keep_last: Some(u32::from(*keep_last)), max_age: None };
                let _ = self.orchestrator.apply_retention(&self.app, &policy).await;
            }
        }
        let crashed = self.hook.take_crashed().is_some();
        if let Some(fault) = fault {
            if self.disarm(fault, crashed) {
                *self.result.faults.entry(fault.kind).or_insert(0) += 1;
            }
        }
        if let Some(heal) = heal {
            heal.apply(self);
        }
        if crashed {
            self.restart().await;
        }
        if !was_running || !self.db.is_running() || matches!(op, Op::RestoreInPlace { .. }) {
            if !self.db.is_running() {
                let _ = self.db.start().await;
            }
            self.resync_after_reopen("after an in-place restore or restart");
        }
        self.measure_rpo();
    }

    fn measure_rpo(&mut self) {
        let acknowledged = self.states.keys().next_back().copied().unwrap_or(0);
        let newest_backed_up = self.live_backups().iter().filter_map(|b| self.expected.get(&b.id).map(|(point, _)| *point)).max().unwrap_or(0);
        self.result.rpo_transactions_max = self.result.rpo_transactions_max.max(acknowledged.saturating_sub(newest_backed_up));
    }

    async fn backup(&mut self) {
        self.result.backups += 1;
        // Load inside the freeze: commits must be fenced, and background work must not
        // change what the snapshot captures.
        let db = self.db.clone();
        let seed = self.rng.gen::<u64>();
        let existing = self.hook.take_action();
        let load = Arc::new(parking_lot::Mutex::new((ChaCha8Rng::seed_from_u64(seed), Vec::<(u64, Vec<(u32, u64)>)>::new())));
        let load2 = load.clone();
        self.hook.set_action(Some(Box::new(move |step| {
            if let Some(action) = &existing {
                action(step);
            }
            if step == Step::Quiesced {
                let mut guard = load2.lock();
                let (rng, acked) = &mut *guard;
                for _ in 0..3 {
                    if let Ok(done) = db.try_transfer(rng.gen_range(0..N_KEYS), rng.gen_range(0..N_KEYS), rng.gen_range(1..200)) {
                        acked.push(done);
                    }
                    let _ = db.background_step(rng);
                }
            }
        })));
        let outcome = self.orchestrator.backup(&self.app, self.plugin.clone()).await;
        // Commits acknowledged inside the "freeze" (only possible when it is not real).
        for (txid, writes) in std::mem::take(&mut load.lock().1) {
            let mut state = self.current_state();
            for (key, value) in writes {
                state.set(key as usize, value);
            }
            self.states.insert(txid, state);
        }
        match outcome {
            Ok(done) => self.backup_completed(done.record).await,
            Err(WorkflowError::Crashed(_)) => {}
            Err(e) => tracing::debug!(error = %e, "backup failed"),
        }
    }

    async fn backup_completed(&mut self, record: BackupRecord) {
        self.result.backups_complete += 1;
        // Complete means its snapshots are on the array now.
        for s in &record.snapshots {
            let present = self.sim.sim().read(|st| st.volume(&s.volume_uuid).ok().and_then(|v| v.snapshot_by_uuid(&s.snapshot_uuid).map(|_| ())).is_some());
            if !present {
                self.result.orphans += 1;
                self.result.violation(format!("backup {} is complete but its snapshot on {} is not on the array", record.id, s.volume_name));
            }
        }
        if record.consistency == Some(Consistency::Application) {
            if let Err(e) = record.evidence.holds(&record.snapshots) {
                self.result.incomplete_evidence += 1;
                self.result.violation(format!("backup {} is labelled application-consistent but its evidence does not hold: {e}", record.id));
            }
        }
        let point = record.evidence.consistency_point.as_ref().and_then(parse_consistency_point);
        match point.and_then(|p| self.states.get(&p).map(|s| (p, s.clone()))) {
            Some(expected) => {
                self.expected.insert(record.id.clone(), expected);
            }
            None => self.result.violation(format!("backup {} records consistency point {point:?}, which the database never acknowledged", record.id)),
        }
    }

    fn live_backups(&self) -> Vec<BackupRecord> {
        self.catalog.backups(Some(&self.app.name)).unwrap_or_default().into_iter().filter(|b| b.state == BackupState::Complete && !b.expired).collect()
    }

    async fn restore(&mut self, which: u8, in_place: bool) {
        // In place only from application-consistent backups: a crash-consistent one is a
        // point-in-time image the harness makes no exactness claim about.
        let live: Vec<BackupRecord> = self.live_backups().into_iter().filter(|b| !in_place || b.consistency == Some(Consistency::Application)).collect();
        if live.is_empty() {
            return;
        }
        let backup = live[which as usize % live.len()].clone();
        self.result.restores += 1;
        let outcome = if in_place {
            self.orchestrator.restore_in_place(&self.app, &backup.id, self.plugin.clone()).await
        } else {
            self.orchestrator.restore_to_clone(&self.app, &backup.id, self.plugin.clone()).await
        };
        match outcome {
            Ok(record) => {
                self.check_restored(&backup, in_place);
                if let RestoreMode::Clone { .. } = record.mode {
                    if let Err(e) = self.orchestrator.delete_clone_restore(&record.id).await {
                        tracing::debug!(error = %e, "clone cleanup failed; reconciliation must finish it");
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "restore failed"),
        }
    }

    /// A restore completed: what the database recovered must be exactly the backup's state,
    /// without crash recovery, when the backup is labelled application-consistent.
    fn check_restored(&mut self, backup: &BackupRecord, in_place: bool) {
        let kind = if in_place { RecoveryKind::InPlace } else { RecoveryKind::Clone };
        let Some(recovered) = self.db.recoveries().into_iter().rev().find(|r| r.kind == kind).and_then(|r| r.outcome.ok()) else {
            self.result.violation(format!("restore of {} completed but the database recorded no successful recovery", backup.id));
            return;
        };
        if backup.consistency != Some(Consistency::Application) {
            return;
        }
        let Some((point, expected)) = self.expected.get(&backup.id).cloned() else { return };
        let exact = recovered.last_txid == point && expected.iter().copied().eq(recovered.values.iter().copied());
        if !exact || recovered.needed_crash_recovery || !recovered.anomalies.is_empty() {
            self.result.inconsistent_restores += 1;
            self.result.violation(format!(
                "restore of {} ({}) recovered txid {} (needed crash recovery: {}, anomalies: {:?}), but the backup's consistency point is txid {point}{}",
                backup.id,
                if in_place { "in place" } else { "clone" },
                recovered.last_txid,
                recovered.needed_crash_recovery,
                recovered.anomalies,
                if exact { "" } else { " and the values differ" }
            ));
        }
    }

    // ---- liveness and the final checks ----

    async fn heal_and_check(&mut self) {
        self.sim.sim().faults().clear();
        self.catalog.disarm();
        self.db.clear_fault();
        self.hook.set_action(None);
        // A restart with nothing injected must converge.
        self.restart().await;
        if let Err(e) = self.orchestrator.reconcile(&self.app, self.plugin.clone()).await {
            self.result.violation(format!("a second reconciliation failed: {e}"));
        }
        // Clone restores that completed although the case lost track of them (a crash after
        // the restore was recorded complete) are the user's copies: the user deletes them.
        for restore in self.catalog.restores(Some(&self.app.name)).unwrap_or_default() {
            if restore.state == stasis_core::domain::RestoreState::Complete && !restore.clone_volumes.is_empty() {
                if let Err(e) = self.orchestrator.delete_clone_restore(&restore.id).await {
                    self.result.violation(format!("deleting the clones of restore {} failed with no fault armed: {e}", restore.id));
                }
            }
        }
        self.check_array_agrees();
        self.check_no_duplicate_snapshots();
        // Every live backup restores exactly.
        for backup in self.live_backups() {
            self.result.restores += 1;
            match self.orchestrator.restore_to_clone(&self.app, &backup.id, self.plugin.clone()).await {
                Ok(record) => {
                    self.check_restored(&backup, false);
                    if let Err(e) = self.orchestrator.delete_clone_restore(&record.id).await {
                        self.result.violation(format!("deleting the verification clones of {} failed with no fault armed: {e}", backup.id));
                    }
                }
                Err(e) if backup.consistency == Some(Consistency::Application) => {
                    self.result.inconsistent_restores += 1;
                    self.result.violation(format!("restoring live application-consistent backup {} failed with no fault armed: {e}", backup.id));
                }
                // A crash-consistent image may need repairs its database cannot make: no claim.
                Err(e) => tracing::info!(backup = %backup.id, error = %e, "a crash-consistent backup did not restore cleanly"),
            }
        }
        self.check_freeze_bound();
        self.check_raw_snapshots();
    }

    /// After reconciliation: every `stasis_` snapshot belongs to a live backup, every live
    /// backup's snapshots are there, and no volume exists but the app's.
    fn check_array_agrees(&mut self) {
        let live = self.live_backups();
        let (snapshots, volumes) = self.sim.sim().read(|s| {
            let snaps: Vec<(String, String, String)> = self.volume_uuids.iter().filter_map(|v| s.volume(v).ok()).flat_map(|v| v.snapshots.iter().map(move |snap| (v.uuid.clone(), snap.uuid.clone(), snap.name.clone()))).collect();
            let vols: Vec<String> = s.volumes.values().map(|v| v.name.clone()).collect();
            (snaps, vols)
        });
        for (volume, uuid, name) in &snapshots {
            if name.starts_with("stasis_") && !live.iter().any(|b| b.snapshots.iter().any(|s| s.snapshot_uuid == *uuid && s.volume_uuid == *volume)) {
                self.result.orphans += 1;
                self.result.violation(format!("orphan snapshot {name} on volume {volume} after reconciliation"));
            }
        }
        for b in &live {
            for s in &b.snapshots {
                if !snapshots.iter().any(|(_, uuid, _)| *uuid == s.snapshot_uuid) {
                    self.result.orphans += 1;
                    self.result.violation(format!("live backup {} lacks its snapshot on {} after reconciliation", b.id, s.volume_name));
                }
            }
        }
        for name in volumes {
            if !self.app.volumes.contains(&name) {
                self.result.orphans += 1;
                self.result.violation(format!("orphan volume {name} after reconciliation"));
            }
        }
        for b in self.catalog.backups(Some(&self.app.name)).unwrap_or_default() {
            if !b.state.is_final() {
                self.result.violation(format!("backup {} is still {:?} after reconciliation", b.id, b.state));
            }
        }
    }

    /// No snapshot name was created twice (a retry must adopt, never duplicate).
    fn check_no_duplicate_snapshots(&mut self) {
        let mut created: HashMap<String, u32> = HashMap::new();
        self.sim.sim().read(|s| {
            for job in s.jobs.values() {
                if job.state == ontap_sim::model::cluster::JobState::Success && job.description.starts_with("POST ") && job.description.contains("/snapshots/stasis_") {
                    let name = job.description.rsplit('/').next().unwrap_or_default().to_string();
                    *created.entry(name).or_insert(0) += 1;
                }
            }
        });
        for (name, n) in created {
            if n > 1 {
                self.result.duplicate_snapshots += 1;
                self.result.violation(format!("snapshot {name} was created {n} times"));
            }
        }
    }

    fn check_freeze_bound(&mut self) {
        let now = tokio::time::Instant::now();
        for freeze in self.db.freeze_log() {
            let held = freeze.duration(now);
            if freeze.point.is_some() {
                self.result.freeze_windows_ms.push(held.as_secs_f64() * 1000.0);
            }
            if held > self.cfg.freeze_timeout || freeze.ended.is_none() {
                self.result.freeze_bound_breaches += 1;
                self.result.violation(format!("the database stayed quiesced for {held:?} (bound {:?}; ended: {:?})", self.cfg.freeze_timeout, freeze.end));
            }
        }
    }

    /// Read every live backup's snapshot straight from the array (no restore workflow): an
    /// application-consistent snapshot recovers exactly, with no replay.
    fn check_raw_snapshots(&mut self) {
        for backup in self.live_backups() {
            if backup.consistency != Some(Consistency::Application) {
                continue;
            }
            let Some((point, expected)) = self.expected.get(&backup.id).cloned() else { continue };
            // Clone each volume's snapshot into a scratch volume the checker reads.
            let names: Vec<String> = backup.snapshots.iter().enumerate().map(|(i, _)| format!("check_{i}")).collect();
            let mut scratch = Vec::new();
            for (s, name) in backup.snapshots.iter().zip(&names) {
                let req = VolumeCreate {
                    name: name.clone(),
                    svm: Selector { name: Some("svm0".into()), uuid: None },
                    clone: Some(CloneRequest { parent_volume: Selector { name: None, uuid: Some(s.volume_uuid.clone()) }, parent_snapshot: Selector { name: None, uuid: Some(s.snapshot_uuid.clone()) } }),
                    ..Default::default()
                };
                match self.sim.sim().transact(|st| st.create_volume(req.clone(), chrono::Utc::now())) {
                    Ok(uuid) => scratch.push(uuid),
                    Err(e) => self.result.violation(format!("cloning the snapshot of live backup {} failed: {e}", backup.id)),
                }
            }
            if scratch.len() == backup.snapshots.len() {
                let volumes = match scratch.as_slice() {
                    [one] => SimDbVolumes::single(one.clone()),
                    [d, l] => SimDbVolumes::split(d.clone(), l.clone()),
                    _ => unreachable!("one or two volumes"),
                };
                match read_recovered(self.data.as_ref(), &volumes) {
                    Ok(r) if r.last_txid == point && !r.needed_crash_recovery && expected.iter().copied().eq(r.values.iter().copied()) => {}
                    Ok(r) => {
                        self.result.inconsistent_restores += 1;
                        self.result.violation(format!("the snapshot of backup {} holds txid {} (replay needed: {}), not its consistency point txid {point}", backup.id, r.last_txid, r.needed_crash_recovery));
                    }
                    Err(e) => self.result.violation(format!("the snapshot of backup {} does not open: {e}", backup.id)),
                }
            }
            for uuid in scratch {
                let _ = self.sim.sim().transact(|st| st.delete_volume(&uuid));
            }
        }
    }
}

enum Heal {
    Fillers(String),
    DeleteVolume(String),
}

impl Heal {
    fn apply(self, world: &mut World) {
        let _ = match self {
            Heal::Fillers(volume) => world.sim.sim().transact(|s| {
                let fillers: Vec<String> = s.volume(&volume)?.snapshots.iter().filter(|x| x.name.starts_with(FILLER_PREFIX)).map(|x| x.uuid.clone()).collect();
                for uuid in fillers {
                    s.delete_snapshot(&volume, &uuid)?;
                }
                Ok(())
            }),
            Heal::DeleteVolume(uuid) => world.sim.sim().transact(|s| s.delete_volume(&uuid)),
        };
    }
}

/// Run one case to the end and check it.
pub async fn run_case(spec: &CaseSpec, cfg: CaseConfig) -> CaseResult {
    let mut world = match World::new(spec, cfg).await {
        Ok(w) => w,
        Err(e) => return CaseResult { violations: vec![format!("the case could not be set up: {e}")], ..Default::default() },
    };
    for op in &spec.ops {
        world.run_op(op).await;
    }
    world.heal_and_check().await;
    let result = std::mem::take(&mut world.result);
    world.sim.shutdown().await;
    result
}
