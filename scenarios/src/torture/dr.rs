//! Disaster recovery over two simulated clusters: the two-site world (site A with the app,
//! site B its mirror, each a simulator on loopback HTTP reached through the real ONTAP
//! client) that the DR torture cases, the demo, the benchmark and the end-to-end tests share.

use std::sync::Arc;
use std::time::Duration;

use ontap_client::OntapClient;
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
