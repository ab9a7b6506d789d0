//! Disaster recovery over two simulated clusters: the two-site world (site A with the app,
//! site B its mirror, each a simulator on loopback HTTP reached through the real ONTAP
//! client) that the DR torture cases, the demo, the benchmark and the end-to-end tests share.

use std::sync::Arc;
use std::time::Duration;

use ontap_client::OntapClient;
use serde::Serialize;
use ontap_sim::control::faults::{FaultAction, FaultRuleSpec};
use ontap_sim::model::cluster::{Selector, VolumeCreate};
use ontap_sim::{ClusterConfig, RunningSim, SimConfig};
use stasis_core::catalog::Catalog;
use stasis_core::clock::SystemClock;
use stasis_core::domain::{AppKind, AppSpec};
use stasis_core::dr::{DrPlan, POLICY_ASYNC_DEFAULT};
use stasis_core::plugins::simdb::{SimDb, SimDbVolumes};
use stasis_core::replication::Replication;
use stasis_core::sqlite_catalog::SqliteCatalog;
use stasis_core::storage::Storage;
use stasis_core::workflow::dr::{DrBounds, DrPlanRequest, DrSite};
use stasis_core::workflow::{Orchestrator, SeededIds};

use super::world::client_config;
use crate::sim_data::SimVolumeData;

pub const CLUSTER_A: &str = "sim-a";
pub const CLUSTER_B: &str = "sim-b";
pub const SVM_A: &str = "svm0";
pub const SVM_B: &str = "svm_dr";
pub const APP: &str = "bank";
/// The stream path on the source that a transfer pulls (the simulator's intercluster link).
pub const LINK_PATH: &str = "/sim/v1/intercluster/volumes/*/stream";

#[derive(Clone, Debug)]
pub struct TwoSitesConfig {
    pub seed: u64,
    pub two_volumes: bool,
    pub n_keys: u32,
    pub password: String,
    pub client_timeout: Duration,
    pub freeze_timeout: Duration,
}

impl Default for TwoSitesConfig {
    fn default() -> Self {
        TwoSitesConfig { seed: 1, two_volumes: true, n_keys: 1200, password: "admin".into(), client_timeout: Duration::from_secs(5), freeze_timeout: Duration::from_secs(2) }
    }
}

/// Site A (the app's cluster, with simdb on its volumes) and site B (an empty cluster with
/// SVM `svm_dr`), a SQLite catalog and an orchestrator on A.
pub struct TwoSites {
    pub cfg: TwoSitesConfig,
    pub a: RunningSim,
    pub b: RunningSim,
    pub site_a: DrSite,
    pub site_b: DrSite,
    pub data_a: Arc<SimVolumeData>,
    pub data_b: Arc<SimVolumeData>,
    pub app: AppSpec,
    /// The app on site A.
    pub db: Arc<SimDb>,
    pub catalog: Arc<SqliteCatalog>,
    pub orchestrator: Orchestrator,
    pub bounds: DrBounds,
}

pub fn site(sim: &RunningSim, name: &str, cfg: &TwoSitesConfig) -> anyhow::Result<DrSite> {
    let client = Arc::new(OntapClient::new(client_config(&sim.base_url(), &cfg.password, cfg.client_timeout))?);
    Ok(DrSite {
        name: name.to_string(),
        storage: client.clone() as Arc<dyn Storage>,
        replication: client as Arc<dyn Replication>,
        intercluster_addresses: vec![sim.addr().to_string()],
    })
}

impl TwoSites {
    pub async fn start(cfg: TwoSitesConfig) -> anyhow::Result<TwoSites> {
        let spawn = |name: &str, svm: &str, seed: u64| {
            let config = SimConfig {
                cluster: ClusterConfig { name: name.into(), svms: vec![svm.into()], seed, ..ClusterConfig::default() },
                password: cfg.password.clone(),
                ..SimConfig::default()
            };
            ontap_sim::spawn(config)
        };
        let a = spawn(CLUSTER_A, SVM_A, cfg.seed).await?;
        let b = spawn(CLUSTER_B, SVM_B, cfg.seed.wrapping_add(1)).await?;
        let names: Vec<String> = if cfg.two_volumes { vec!["db_data".into(), "db_log".into()] } else { vec!["db_data".into()] };
        let mut uuids = Vec::new();
        for name in &names {
            let req = VolumeCreate {
                name: name.clone(),
                svm: Selector { name: Some(SVM_A.into()), uuid: None },
                aggregates: vec![Selector { name: Some("aggr1".into()), uuid: None }],
                size: Some(1 << 30),
                junction_path: Some(format!("/{name}")),
                ..Default::default()
            };
            uuids.push(a.sim().transact(|s| s.create_volume(req.clone(), chrono::Utc::now())).map_err(|e| anyhow::anyhow!("{e}"))?);
        }
        let data_a = Arc::new(SimVolumeData::new(a.sim().clone()));
        let data_b = Arc::new(SimVolumeData::new(b.sim().clone()));
        let initial = vec![1000u64; cfg.n_keys as usize];
        let db = Arc::new(SimDb::create(data_a.clone(), volumes_of(&uuids), &initial, true, Arc::new(SystemClock))?);
        let catalog = Arc::new(SqliteCatalog::open_in_memory()?);
        let app = AppSpec { name: APP.into(), kind: AppKind::Simdb, svm: SVM_A.into(), volumes: names, freeze_timeout: cfg.freeze_timeout };
        catalog.put_app(&app)?;
        let site_a = site(&a, CLUSTER_A, &cfg)?;
        let site_b = site(&b, CLUSTER_B, &cfg)?;
        let orchestrator = Orchestrator::new(site_a.storage.clone(), catalog.clone(), Arc::new(SystemClock)).with_ids(Arc::new(SeededIds::new(cfg.seed)));
        let bounds = DrBounds { transfer_wait_max: Duration::from_secs(30), peering_wait_max: Duration::from_secs(10) };
        Ok(TwoSites { cfg, a, b, site_a, site_b, data_a, data_b, app, db, catalog, orchestrator, bounds })
    }

    pub fn request(&self) -> DrPlanRequest {
        DrPlanRequest { destination_svm: SVM_B.into(), policy: POLICY_ASYNC_DEFAULT.into(), schedule: Some(Duration::from_secs(60)), destination_volumes: None }
    }

    pub fn plan(&self) -> anyhow::Result<DrPlan> {
        self.catalog.dr_plan(APP)?.ok_or_else(|| anyhow::anyhow!("no DR plan"))
    }

    /// A stopped simdb on B's mirror volumes: what a failover starts.
    pub fn standby_b(&self) -> anyhow::Result<Arc<SimDb>> {
        let plan = self.plan()?;
        let uuids = plan.volumes.iter().map(|p| self.b.sim().volume_uuid(SVM_B, &p.destination).map_err(|e| anyhow::anyhow!("{e}"))).collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Arc::new(SimDb::standby(self.data_b.clone(), volumes_of(&uuids), Arc::new(SystemClock))))
    }

    /// The app's volume uuids on site A.
    pub fn volume_uuids_a(&self) -> anyhow::Result<Vec<String>> {
        self.app.volumes.iter().map(|n| self.a.sim().volume_uuid(SVM_A, n).map_err(|e| anyhow::anyhow!("{e}"))).collect()
    }

    /// Site A stops answering: every REST call and every transfer stream is dropped.
    pub fn site_a_down(&self) {
        for (method, path) in [(None, "/api/**"), (Some("POST"), LINK_PATH)] {
            let rule = FaultRuleSpec { method: method.map(str::to_string), path: path.into(), action: FaultAction::Drop { after_apply: false }, probability: 1.0, count: None };
            self.a.sim().faults().add(rule).expect("valid fault rule");
        }
    }

    /// The link between the sites breaks `count` transfers half-way (None: until healed).
    pub fn link_down(&self, count: Option<u64>) {
        let rule = FaultRuleSpec { method: Some("POST".into()), path: LINK_PATH.into(), action: FaultAction::Drop { after_apply: false }, probability: 1.0, count };
        self.a.sim().faults().add(rule).expect("valid fault rule");
    }

    pub fn heal(&self) {
        self.a.sim().faults().clear();
        self.b.sim().faults().clear();
    }

    pub async fn shutdown(self) {
        self.a.shutdown().await;
        self.b.shutdown().await;
    }
}

pub fn volumes_of(uuids: &[String]) -> SimDbVolumes {
    match uuids {
        [one] => SimDbVolumes::single(one.clone()),
        [data, log, ..] => SimDbVolumes::split(data.clone(), log.clone()),
        [] => SimDbVolumes::single(String::new()),
    }
}

// ------------------------------------------------------------------ DR torture cases

/// Where the disaster strikes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Disaster {
    /// Between operations, all transfers done.
    Idle,
    /// The last update's stream is cut half-way, then site A is gone.
    MidTransferLinkCut,
    /// The last update is still streaming over a slow link when site A goes.
    MidTransferInFlight,
    /// The link has been down for the last updates, then site A is gone.
    LinkDownThenSiteDown,
}

const DISASTERS: [Disaster; 4] = [Disaster::Idle, Disaster::MidTransferLinkCut, Disaster::MidTransferInFlight, Disaster::LinkDownThenSiteDown];

/// What one DR case did and what its checker found.
#[derive(Clone, Debug, Default)]
pub struct DrCaseResult {
    pub disaster: Option<Disaster>,
    pub backups: u64,
    pub updates_ok: u64,
    pub updates_failed: u64,
    pub failovers: u64,
    pub rpo_ms: Option<f64>,
    /// Acknowledged transactions on A that the state B started from does not hold.
    pub rpo_transactions: Option<u64>,
    pub rto_ms: Option<f64>,
    /// B started at a state that is not exactly one complete app-consistent backup's.
    pub torn_or_inexact: u64,
    /// B started from an older backup than the newest one that had reached it.
    pub needless_loss: u64,
    pub rpo_bound_breaches: u64,
    /// Failovers refused because no backup had reached B (correct: nothing consistent there).
    pub refused_nothing_on_b: u64,
    pub violations: Vec<String>,
}

impl DrCaseResult {
    fn violation(&mut self, message: String) {
        tracing::warn!(%message, "DR violation");
        self.violations.push(message);
    }
}

struct Taken {
    id: String,
    txid: u64,
    values: Vec<u64>,
    started: std::time::Instant,
    /// The update carrying it succeeded (awaited), failed, or was left in flight.
    update: UpdateOutcome,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UpdateOutcome {
    Ok,
    Failed,
    InFlight,
}

/// One DR case from a seed: set up DR, run work and replicated backups with link faults,
/// strike a disaster at a random point (idle, mid-transfer with the link cut, mid-transfer
/// in flight, link down then site down), fail over unplanned to site B and check that B
/// started at exactly the state of the newest complete app-consistent backup that had
/// fully reached it (never a torn mid-transfer state), and that RPO <= the backup interval
/// plus one transfer whenever the link was up.
pub async fn run_dr_case(seed: u64) -> DrCaseResult {
    run_dr_case_with(seed, None).await
}

/// Broken systems the DR checker must catch (negative controls).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrMutant {
    /// The catalog forgets the newest backups before the failover: B restores an older one.
    ForgetNewestBackups,
    /// Site B commits once more before the checker looks: not the backup's state.
    WriteBeforeCheck,
}

pub async fn run_dr_case_with(seed: u64, mutant: Option<DrMutant>) -> DrCaseResult {
    run_dr_case_shaped(seed, None, mutant).await
}

/// What a scenario file fixes about a DR case (the rest is drawn from the seed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DrShape {
    /// Data and log on two volumes (one consistency group).
    pub two_volumes: bool,
    /// Replicated backups before the disaster (at least 1).
    pub backups: usize,
}

/// A DR case with `shape` (None: drawn from the seed, as `stasis torture --dr` does).
pub async fn run_dr_case_shaped(seed: u64, shape: Option<DrShape>, mutant: Option<DrMutant>) -> DrCaseResult {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut result = DrCaseResult::default();
    // Drawn even when the shape fixes it, so a seed gives the same rest of the case.
    let two_volumes = rng.gen_bool(0.5);
    let two_volumes = shape.map_or(two_volumes, |s| s.two_volumes);
    let cfg = TwoSitesConfig { seed, two_volumes, client_timeout: Duration::from_secs(2), freeze_timeout: Duration::from_millis(500), ..Default::default() };
    let s = match TwoSites::start(cfg).await {
        Ok(s) => s,
        Err(e) => {
            result.violation(format!("the case could not be set up: {e}"));
            return result;
        }
    };
    if let Err(e) = s.orchestrator.dr_setup(&s.app, &s.request(), &s.site_a, &s.site_b, s.bounds).await {
        result.violation(format!("DR set-up failed with no fault armed: {e}"));
        s.shutdown().await;
        return result;
    }
    let disaster = DISASTERS[rng.gen_range(0..DISASTERS.len())];
    result.disaster = Some(disaster);
    let n_ops = rng.gen_range(2..6);
    let n_ops = shape.map_or(n_ops, |s| s.backups.max(1) - 1);
    let mut taken: Vec<Taken> = Vec::new();
    let mut transfer_max = Duration::ZERO;
    let mut link_faulted_at: Option<usize> = None;
    for op in 0..=n_ops {
        let last = op == n_ops;
        for _ in 0..rng.gen_range(5..40) {
            let n = s.db.n_keys();
            let _ = s.db.try_transfer(rng.gen_range(0..n), rng.gen_range(0..n), rng.gen_range(1..100));
            if rng.gen_bool(0.3) {
                let _ = s.db.background_step(&mut rng);
            }
        }
        // Faults for this update.
        let link_cut = (rng.gen_bool(0.2) && !last) || (last && disaster == Disaster::MidTransferLinkCut) || (disaster == Disaster::LinkDownThenSiteDown && op + 2 >= n_ops);
        let slow = last && disaster == Disaster::MidTransferInFlight;
        if link_cut {
            s.link_down(Some(1));
            link_faulted_at.get_or_insert(taken.len());
        }
        if slow {
            let rule = FaultRuleSpec { method: Some("POST".into()), path: LINK_PATH.into(), action: FaultAction::Latency { ms: 40, before: false }, probability: 1.0, count: Some(1) };
            s.a.sim().faults().add(rule).expect("valid fault rule");
        }
        let started = std::time::Instant::now();
        let backup = match s.orchestrator.backup(&s.app, s.db.clone()).await {
            Ok(b) => b.record,
            Err(e) => {
                result.violation(format!("a backup failed with no backup fault armed: {e}"));
                continue;
            }
        };
        result.backups += 1;
        let txid = backup.evidence.consistency_point.as_ref().and_then(stasis_core::plugins::simdb::parse_consistency_point).unwrap_or(0);
        if s.db.last_committed_txid() != Some(txid) {
            result.violation(format!("backup {} at txid {txid}, but the database stands at {:?} with no commit since", backup.id, s.db.last_committed_txid()));
        }
        let values = s.db.values().unwrap_or_default();
        let wait = !(last && matches!(disaster, Disaster::MidTransferLinkCut | Disaster::MidTransferInFlight));
        let t0 = std::time::Instant::now();
        let update = match s.orchestrator.dr_update(&s.app, &backup.id, &s.site_b, wait, s.bounds).await {
            Ok(_) if !wait => UpdateOutcome::InFlight,
            Ok(_) => {
                transfer_max = transfer_max.max(t0.elapsed());
                result.updates_ok += 1;
                UpdateOutcome::Ok
            }
            Err(e) => {
                if !link_cut {
                    result.violation(format!("an update failed with the link up: {e}"));
                }
                result.updates_failed += 1;
                UpdateOutcome::Failed
            }
        };
        taken.push(Taken { id: backup.id, txid, values, started, update });
        if link_cut && wait {
            s.heal();
        }
    }
    // More acknowledged work that no backup holds, then the disaster.
    for _ in 0..rng.gen_range(0..20) {
        let n = s.db.n_keys();
        let _ = s.db.try_transfer(rng.gen_range(0..n), rng.gen_range(0..n), 1);
    }
    let acknowledged_on_a = s.db.last_committed_txid().unwrap_or(0);
    s.site_a_down();
    let standby = match s.standby_b() {
        Ok(p) => p,
        Err(e) => {
            result.violation(format!("no standby on site B: {e}"));
            s.shutdown().await;
            return result;
        }
    };
    if mutant == Some(DrMutant::ForgetNewestBackups) {
        let newest_ok = taken.iter().rposition(|t| t.update == UpdateOutcome::Ok).unwrap_or(taken.len());
        for t in &taken[newest_ok.min(taken.len())..] {
            if let Ok(Some(mut b)) = s.catalog.backup(&t.id) {
                b.expired = true;
                let _ = s.catalog.put_backup(&b);
            }
        }
    }
    let failover_started = std::time::Instant::now();
    let outcome = s.orchestrator.failover_unplanned(&s.app, &s.site_b, standby.clone()).await;
    result.failovers += 1;
    match outcome {
        // With no backup on B there is no application-consistent state to start from:
        // refusing is right, as long as B was not started.
        Err(e) if taken.iter().all(|t| t.update == UpdateOutcome::Failed) && !standby.is_running() => {
            result.refused_nothing_on_b += 1;
            tracing::info!(error = %e, "failover refused: no backup had reached site B");
        }
        Err(e) => result.violation(format!("unplanned failover failed: {e}")),
        Ok(record) => {
            result.rpo_ms = record.rpo.map(|d| d.as_secs_f64() * 1000.0);
            result.rto_ms = record.rto.map(|d| d.as_secs_f64() * 1000.0);
            if mutant == Some(DrMutant::WriteBeforeCheck) {
                let _ = standby.try_transfer(0, 1, 1);
            }
            if let Some(t) = record.restored_backup_id.as_ref().and_then(|id| taken.iter().find(|t| &t.id == id)) {
                result.rpo_transactions = Some(acknowledged_on_a.saturating_sub(t.txid));
            }
            check_failover(&mut result, &taken, &record, &standby, transfer_max, link_faulted_at, failover_started);
        }
    }
    s.shutdown().await;
    result
}

fn check_failover(
    result: &mut DrCaseResult,
    taken: &[Taken],
    record: &stasis_core::dr::FailoverRecord,
    standby: &SimDb,
    transfer_max: Duration,
    link_faulted_at: Option<usize>,
    failover_started: std::time::Instant,
) {
    let Some(restored) = record.restored_backup_id.as_ref().and_then(|id| taken.iter().position(|t| &t.id == id)) else {
        result.violation(format!("failover {} restored {:?}, not a backup of this case", record.id, record.restored_backup_id));
        return;
    };
    let t = &taken[restored];
    // Exactly that backup's state, opened without crash recovery: never a torn state.
    let clean = standby.recoveries().last().and_then(|r| r.outcome.as_ref().ok().map(|db| !db.needed_crash_recovery && db.anomalies.is_empty())).unwrap_or(false);
    if standby.last_committed_txid() != Some(t.txid) || standby.values().as_deref() != Some(&t.values[..]) || !clean {
        result.torn_or_inexact += 1;
        result.violation(format!("site B started at txid {:?} (clean open: {clean}), not exactly backup {} at txid {}", standby.last_committed_txid(), t.id, t.txid));
    }
    // The newest backup that had fully reached B: the last one whose awaited update
    // succeeded, or an in-flight one that finished before the break.
    let newest_ok = taken.iter().rposition(|x| x.update == UpdateOutcome::Ok);
    let newest_possible = taken.iter().rposition(|x| x.update != UpdateOutcome::Failed);
    if newest_ok.is_some_and(|n| restored < n) || newest_possible.is_some_and(|n| restored > n) {
        result.needless_loss += 1;
        result.violation(format!("site B restored backup #{restored}, but #{newest_ok:?} had reached it (latest possible #{newest_possible:?})"));
    }
    // RPO <= backup interval + one transfer, while the link was up after the restored backup.
    let link_up_since = link_faulted_at.is_none_or(|f| f <= restored);
    let rpo = record.rpo.unwrap_or_default();
    if link_up_since && taken[restored + 1..].iter().all(|x| x.update != UpdateOutcome::Failed) {
        let next_attempt = taken.get(restored + 1).map(|x| x.started).unwrap_or(failover_started);
        let interval = next_attempt.saturating_duration_since(t.started);
        let since_next = failover_started.saturating_duration_since(next_attempt);
        // What was already scheduled after the restored backup counts as interval too.
        let bound = interval + since_next + transfer_max + Duration::from_millis(50);
        if rpo > bound {
            result.rpo_bound_breaches += 1;
            result.violation(format!("RPO {rpo:?} exceeds backup interval + transfer ({bound:?})"));
        }
    }
}

/// A campaign of DR cases, `parallel` at a time.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DrCampaignReport {
    pub cases: u64,
    pub seed: u64,
    pub backups: u64,
    pub updates_ok: u64,
    pub updates_failed: u64,
    pub failovers: u64,
    pub disasters: std::collections::BTreeMap<String, u64>,
    pub torn_or_inexact: u64,
    pub needless_loss: u64,
    pub rpo_bound_breaches: u64,
    pub refused_nothing_on_b: u64,
    pub violations: u64,
    pub rpo_ms_p50: f64,
    pub rpo_ms_max: f64,
    pub rto_ms_p50: f64,
    pub rto_ms_max: f64,
    pub failing_seeds: Vec<(u64, String)>,
    pub elapsed_s: f64,
}

pub async fn run_dr_campaign(cases: u64, seed: u64, parallel: usize) -> DrCampaignReport {
    let started = std::time::Instant::now();
    let mut report = DrCampaignReport { cases, seed, ..Default::default() };
    let (mut rpos, mut rtos) = (Vec::new(), Vec::new());
    let seeds: Vec<u64> = (0..cases).map(|i| super::spec::case_seed(seed, i)).collect();
    for batch in seeds.chunks(parallel.max(1)) {
        let results = futures::future::join_all(batch.iter().map(|s| run_dr_case(*s))).await;
        for (case_seed, r) in batch.iter().zip(results) {
            report.backups += r.backups;
            report.updates_ok += r.updates_ok;
            report.updates_failed += r.updates_failed;
            report.failovers += r.failovers;
            if let Some(d) = r.disaster {
                *report.disasters.entry(serde_json::to_value(d).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()).or_insert(0) += 1;
            }
            report.torn_or_inexact += r.torn_or_inexact;
            report.needless_loss += r.needless_loss;
            report.rpo_bound_breaches += r.rpo_bound_breaches;
            report.refused_nothing_on_b += r.refused_nothing_on_b;
            report.violations += r.violations.len() as u64;
            rpos.extend(r.rpo_ms);
            rtos.extend(r.rto_ms);
            if let Some(first) = r.violations.first() {
                report.failing_seeds.push((*case_seed, first.clone()));
            }
        }
    }
    let median_max = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        (v.get(v.len() / 2).copied().unwrap_or(0.0), v.last().copied().unwrap_or(0.0))
    };
    (report.rpo_ms_p50, report.rpo_ms_max) = median_max(rpos);
    (report.rto_ms_p50, report.rto_ms_max) = median_max(rtos);
    report.elapsed_s = started.elapsed().as_secs_f64();
    report
}

pub fn render_dr_table(r: &DrCampaignReport) -> String {
    let mut out = String::new();
    out.push_str(&format!("stasis torture --dr: {} cases, seed {}, {:.1} s\n", r.cases, r.seed, r.elapsed_s));
    let rows = [
        ("backups (updates ok / failed under link faults)", format!("{} ({} / {})", r.backups, r.updates_ok, r.updates_failed)),
        ("unplanned failovers (refused: no backup on B)", format!("{} ({})", r.failovers, r.refused_nothing_on_b)),
        ("disasters", r.disasters.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")),
        ("torn or inexact site B states", r.torn_or_inexact.to_string()),
        ("needless loss (older backup than reached B)", r.needless_loss.to_string()),
        ("RPO bound breaches (link up)", r.rpo_bound_breaches.to_string()),
        ("RPO ms p50 / max", format!("{:.1} / {:.1}", r.rpo_ms_p50, r.rpo_ms_max)),
        ("RTO ms p50 / max", format!("{:.1} / {:.1}", r.rto_ms_p50, r.rto_ms_max)),
        ("violations", r.violations.to_string()),
    ];
    for (k, v) in rows {
        out.push_str(&format!("  {k:<48} {v}\n"));
    }
    for (seed, why) in &r.failing_seeds {
        out.push_str(&format!("  FAIL case seed {seed}: {why}\n"));
    }
    out.push_str(if r.violations == 0 { "PASS\n" } else { "FAIL\n" });
    out
}
