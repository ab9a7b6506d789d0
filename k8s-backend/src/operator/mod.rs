//! `stasis operator`: kube-runtime controllers for the `stasis.io` resources, run only while
//! this replica holds the leader Lease ([`crate::leader`]).
//!
//! - `Backup` ([`backup`]): the core backup workflow on the app's volumes (found by
//!   discovery through the `Cluster` seam); status written before (intent) and after. A
//!   finalizer deletes the backup's snapshots on the array when the object is deleted.
//! - `BackupPolicy` ([`policy`]): creates `Backup` objects when due (names derived from the
//!   due time, so two leaders in succession never create the same backup twice) and deletes
//!   those its retention expires.
//! - `Restore` ([`restore`]): through an injected [`RestoreRunner`]; without one the Restore
//!   fails with condition `RestoreUnavailable`, never a pretend success.
//! - `DrPlan` ([`drplan`]): the SnapMirror relationships' state and lag from the
//!   `Replication` seam, the last failover's RPO/RTO from the catalog.
//!
//! State lives in the Kubernetes API: each workflow runs on a throw-away in-memory catalog
//! seeded from the objects, and its outcome is written back to their status.

pub mod backup;
pub mod drplan;
pub mod policy;
pub mod restore;
pub mod wired;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use stasis_core::catalog::Catalog;
use stasis_core::clock::Clock;
use stasis_core::cluster::{Cluster, Workload};
use stasis_core::domain::{AppSpec, BackupRecord, FREEZE_TIMEOUT_DEFAULT};
use stasis_core::plugin::AppPlugin;
use stasis_core::replication::Replication;
use stasis_core::storage::Storage;

use crate::crd::{self, AppRef, Backup, BackupPolicy, Condition, DrPlan, Restore, RestoreTarget};
use crate::leader::Leadership;

/// Errors a reconcile returns: the controller retries them with backoff. Outcomes of the
/// work itself (a failed backup) are not errors: they are written to status.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error(transparent)]
    Kube(#[from] crate::K8sError),
    #[error("{0}")]
    Storage(#[from] stasis_core::storage::StorageError),
    #[error("finalizer: {0}")]
    Finalizer(String),
    #[error("{0}")]
    Invalid(String),
}

pub type OpResult<T> = Result<T, OperatorError>;

/// Opens the plugin that quiesces an app's database (in the cluster: a plugin pod in the
/// app's namespace).
#[async_trait]
pub trait PluginFactory: Send + Sync {
    async fn plugin(&self, workload: &Workload, app: &AppSpec) -> Result<Arc<dyn AppPlugin>, String>;

    /// Run core's backup of `app` on `orchestrator` (whose catalog the reconciler reads the
    /// record from). The default freezes through [`PluginFactory::plugin`]; the in-cluster
    /// factory ([`wired::InClusterPlugins`]) also captures the app's objects, stored as the
    /// backup's attachment in the orchestrator's catalog, and closes its port-forward after.
    async fn backup(&self, orchestrator: &stasis_core::workflow::Orchestrator, workload: &Workload, app: &AppSpec) -> Result<BackupRecord, String> {
        let plugin = self.plugin(workload, app).await?;
        orchestrator.backup(app, plugin).await.map(|o| o.record).map_err(|e| e.to_string())
    }
}

/// Until a build wires the in-cluster plugin: every backup fails saying so.
pub struct NoPlugins(pub String);

#[async_trait]
impl PluginFactory for NoPlugins {
    async fn plugin(&self, workload: &Workload, _app: &AppSpec) -> Result<Arc<dyn AppPlugin>, String> {
        Err(format!("cannot quiesce {}/{}: {}", workload.namespace, workload.name, self.0))
    }
}

/// What a Restore asks for, resolved.
#[derive(Debug, Clone)]
pub struct RestoreRequest {
    pub restore_name: String,
    pub namespace: String,
    pub workload: Workload,
    pub app: AppSpec,
    pub backup: BackupRecord,
    pub target: RestoreTarget,
}

#[derive(Debug, Clone, Default)]
pub struct RestoreOutcome {
    pub restore_id: String,
    pub target_namespace: Option<String>,
    pub recovered_point: Option<String>,
}

/// The Kubernetes restore path (scale down, SnapRestore, scale up, verify; or clone into a
/// new namespace). Must report success only after the data checks and the database's
/// recovery succeeded.
#[async_trait]
pub trait RestoreRunner: Send + Sync {
    async fn restore(&self, request: RestoreRequest) -> Result<RestoreOutcome, String>;
}

#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// First retry after a reconcile error; doubles per consecutive error up to the max.
    pub error_backoff_min: Duration,
    pub error_backoff_max: Duration,
    /// How often a DrPlan's status is refreshed.
    pub drplan_refresh: Duration,
    /// Longest a BackupPolicy waits between passes (retention, a changed clock).
    pub policy_requeue_max: Duration,
    /// Backups running at once (each freezes an app).
    pub backup_concurrency: u16,
}

impl Default for OperatorConfig {
    fn default() -> Self {
        OperatorConfig {
            error_backoff_min: Duration::from_secs(5),
            error_backoff_max: Duration::from_secs(300),
            drplan_refresh: Duration::from_secs(60),
            policy_requeue_max: Duration::from_secs(3600),
            backup_concurrency: 4,
        }
    }
}

/// Everything the reconcilers share.
pub struct Context {
    pub client: Client,
    pub cluster: Arc<dyn Cluster>,
    pub storage: Arc<dyn Storage>,
    pub plugins: Arc<dyn PluginFactory>,
    pub restore: Option<Arc<dyn RestoreRunner>>,
    /// Replication per ONTAP cluster name (DrPlan destinations).
    pub replication: BTreeMap<String, Arc<dyn Replication>>,
    /// Where failovers are recorded (`stasis failover` writes them), for DrPlan status.
    pub catalog: Option<Arc<dyn Catalog>>,
    pub clock: Arc<dyn Clock>,
    pub config: OperatorConfig,
    /// Consecutive reconcile errors per object, for the backoff.
    errors: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(client: Client, cluster: Arc<dyn Cluster>, storage: Arc<dyn Storage>, plugins: Arc<dyn PluginFactory>, clock: Arc<dyn Clock>) -> Self {
        Context {
            client,
            cluster,
            storage,
            plugins,
            restore: None,
            replication: BTreeMap::new(),
            catalog: None,
            clock,
            config: OperatorConfig::default(),
            errors: Mutex::new(HashMap::new()),
        }
    }

    fn now_rfc3339(&self) -> String {
        rfc3339(self.clock.now())
    }

    /// The app a resource names, with its ONTAP volumes (all in one SVM).
    pub async fn resolve_app(&self, app: &AppRef, default_namespace: &str, freeze_timeout: Option<&str>) -> Result<(Workload, AppSpec), String> {
        let (namespace, name) = app.qualified(default_namespace);
        let workloads = self.cluster.discover(Some(&namespace)).await.map_err(|e| format!("discovering apps in namespace {namespace}: {e}"))?;
        let workload = workloads.into_iter().find(|w| w.name == name).ok_or_else(|| {
            format!("no Deployment or StatefulSet {namespace}/{name} with a database on ONTAP volumes was found (see `stasis discover -n {namespace}`)")
        })?;
        let svm = workload.mounts[0].svm.clone();
        if let Some(other) = workload.mounts.iter().find(|m| m.svm != svm) {
            return Err(format!("{namespace}/{name} has volumes in two SVMs ({svm} and {}): one backup snapshots one SVM's volumes", other.svm));
        }
        let freeze_timeout = match freeze_timeout {
            Some(text) => crd::parse_duration(text).map_err(|e| format!("freezeTimeout: {e}"))?,
            None => FREEZE_TIMEOUT_DEFAULT,
        };
        let mut volumes: Vec<String> = workload.mounts.iter().map(|m| m.volume.clone()).collect();
        volumes.dedup();
        let spec = AppSpec { name: format!("{namespace}/{name}"), kind: workload.kind, svm, volumes, freeze_timeout };
        Ok((workload, spec))
    }

    fn backoff(&self, key: &str) -> Duration {
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        let n = errors.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        let factor = 1u32 << (*n - 1).min(16);
        (self.config.error_backoff_min * factor).min(self.config.error_backoff_max)
    }

    fn succeeded(&self, key: &str) {
        self.errors.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

pub fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A `Ready` condition; the transition time is kept when the status does not change.
pub fn ready(previous: &[Condition], ok: bool, reason: &str, message: impl Into<String>, now: &str, generation: Option<i64>) -> Vec<Condition> {
    let status = if ok { "True" } else { "False" };
    let last_transition_time = previous.iter().find(|c| c.type_ == "Ready" && c.status == status).map(|c| c.last_transition_time.clone()).unwrap_or_else(|| now.to_string());
    vec![Condition { type_: "Ready".into(), status: status.into(), reason: reason.into(), message: message.into(), last_transition_time, observed_generation: generation }]
}

/// Write `status` through the status subresource (a merge patch). With `resource_version`
/// the write is conditional: it fails with 409 if anyone wrote the object since (a replica
/// that lost leadership cannot overwrite its successor). Returns the new resourceVersion.
pub async fn patch_status<K>(api: &Api<K>, name: &str, resource_version: Option<&str>, status: &impl Serialize) -> OpResult<Option<String>>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut patch = serde_json::json!({ "status": status });
    if let Some(rv) = resource_version {
        patch["metadata"] = serde_json::json!({ "resourceVersion": rv });
    }
    let written = api
        .patch_status(name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch))
        .await
        .map_err(|e| crate::K8sError::from_kube(format!("writing the status of {name}"), e))?;
    Ok(written.meta().resource_version.clone())
}

fn key_of<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!("{}/{}/{}", K::kind(&()), obj.namespace().unwrap_or_default(), obj.name_any())
}

fn error_policy<K: Resource<DynamicType = ()>>(obj: Arc<K>, error: &OperatorError, ctx: Arc<Context>) -> Action {
    let key = key_of(obj.as_ref());
    let wait = ctx.backoff(&key);
    tracing::warn!(object = %key, %error, retry_in = ?wait, "reconcile failed");
    Action::requeue(wait)
}

/// Wrap a reconciler: count errors for the backoff, reset on success.
async fn tracked<K, F, Fut>(obj: Arc<K>, ctx: Arc<Context>, f: F) -> OpResult<Action>
where
    K: Resource<DynamicType = ()>,
    F: FnOnce(Arc<K>, Arc<Context>) -> Fut,
    Fut: Future<Output = OpResult<Action>>,
{
    let key = key_of(obj.as_ref());
    let result = f(obj, ctx.clone()).await;
    if result.is_ok() {
        ctx.succeeded(&key);
    }
    result
}

/// What a controller's stream yields for each reconcile.
type ReconcileOutcome<K, E> = Result<(kube::runtime::reflector::ObjectRef<K>, Action), controller::Error<E, watcher::Error>>;

fn log_result<K: Resource, E: std::fmt::Display>(kind: &'static str) -> impl FnMut(ReconcileOutcome<K, E>) -> futures::future::Ready<()> {
    move |result| {
        match result {
            Ok((obj, _)) => tracing::debug!(kind, object = %obj.name, "reconciled"),
            Err(controller::Error::ReconcilerFailed(e, obj)) => tracing::debug!(kind, object = %obj.name, error = %e, "reconcile failed"),
            Err(e) => tracing::warn!(kind, error = %e, "controller"),
        }
        futures::future::ready(())
    }
}

/// The four controllers, until the future is dropped. Dropping it aborts every reconcile in
/// flight (kube-runtime's reconciler tasks are cancelled with their handles).
pub async fn run_controllers(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let backups = Controller::new(Api::<Backup>::all(client.clone()), watcher::Config::default())
        .with_config(controller::Config::default().concurrency(ctx.config.backup_concurrency))
        .run(|o, c| tracked(o, c, backup::reconcile), error_policy, ctx.clone())
        .for_each(log_result("Backup"));
    // A policy's pass runs again when one of its Backups changes (retention counts succeeded ones).
    let policies = Controller::new(Api::<BackupPolicy>::all(client.clone()), watcher::Config::default())
        .watches(Api::<Backup>::all(client.clone()), watcher::Config::default(), |b: Backup| {
            let policy = b.labels().get(policy::POLICY_LABEL)?.clone();
            Some(kube::runtime::reflector::ObjectRef::<BackupPolicy>::new(&policy).within(&b.namespace()?))
        })
        .run(|o, c| tracked(o, c, policy::reconcile), error_policy, ctx.clone())
        .for_each(log_result("BackupPolicy"));
    let restores = Controller::new(Api::<Restore>::all(client.clone()), watcher::Config::default())
        .with_config(controller::Config::default().concurrency(1))
        .run(|o, c| tracked(o, c, restore::reconcile), error_policy, ctx.clone())
        .for_each(log_result("Restore"));
    let drplans = Controller::new(Api::<DrPlan>::all(client), watcher::Config::default())
        .run(|o, c| tracked(o, c, drplan::reconcile), error_policy, ctx.clone())
        .for_each(log_result("DrPlan"));
    futures::join!(backups, policies, restores, drplans);
}

/// Reconcile while this replica leads; stop every controller (aborting reconciles in
/// flight) as soon as leadership is lost, and start afresh when it is regained. Returns
/// when `shutdown` resolves or the elector is gone.
pub async fn run(ctx: Arc<Context>, mut leadership: Leadership, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            leads = leadership.until_leader() => if !leads { return },
        }
        tracing::info!("leading: starting the controllers");
        let mut lost = leadership.clone();
        tokio::select! {
            _ = &mut shutdown => return,
            _ = lost.until_lost() => tracing::warn!("leadership lost: every controller stopped"),
            _ = run_controllers(ctx.clone()) => {
                tracing::warn!("the controllers ended; starting them again");
                tokio::time::sleep(ctx.config.error_backoff_min).await;
            }
        }
    }
}
