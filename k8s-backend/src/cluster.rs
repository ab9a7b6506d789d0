//! [`KubeCluster`]: the `Cluster` seam over a Kubernetes API server (kubeconfig or
//! in-cluster), and the listing and resolution behind `stasis discover`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use stasis_core::cluster::{Cluster, ClusterError, ExecOutput, Mount, Workload};
use stasis_core::storage::{Storage, StorageError};

use crate::discovery::{self, Backing, ClusterObjects, Inventory, OntapVolume};
use crate::error::{Context, K8sError, K8sResult};
use crate::workload::{self, WorkloadRef};

/// Objects per list page, and pages per list: a bound on one listing (500,000 objects).
const LIST_PAGE_SIZE: u32 = 500;
const LIST_PAGES_MAX: usize = 1000;

/// How discovery maps what Kubernetes records to ONTAP.
#[derive(Debug, Clone, Default)]
pub struct DiscoverOptions {
    /// NFS server address (a data LIF) -> SVM, for junction paths that exist in several SVMs.
    pub nfs_servers: BTreeMap<String, String>,
}

pub struct KubeCluster {
    client: Client,
    /// The array, for tracing NFS exports back to volumes (`None`: NFS claims stay unresolved).
    storage: Option<Arc<dyn Storage>>,
    options: DiscoverOptions,
    /// Bounds for scaling (wait for pods gone / Ready).
    pub scale_timeout: Duration,
    pub poll_interval: Duration,
}

impl KubeCluster {
    pub fn new(client: Client, storage: Option<Arc<dyn Storage>>, options: DiscoverOptions) -> Self {
        KubeCluster { client, storage, options, scale_timeout: Duration::from_secs(300), poll_interval: Duration::from_secs(2) }
    }

    /// A client from the environment: `KUBECONFIG` / `~/.kube/config`, else the in-cluster
    /// service account.
    pub async fn client_from_env() -> K8sResult<Client> {
        Client::try_default().await.map_err(|e| K8sError::Transport { what: "loading kubeconfig or in-cluster config".into(), message: e.to_string() })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    fn api<K>(&self, namespace: Option<&str>) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        match namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }

    /// List every object, page by page. An expired continue token (410 Gone) restarts the
    /// listing once from the start, as the API server asks.
    pub(crate) async fn list_all<K>(api: &Api<K>, what: &str) -> K8sResult<Vec<K>>
    where
        K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    {
        let mut restarted = false;
        'listing: loop {
            let mut items = Vec::new();
            let mut token: Option<String> = None;
            for _ in 0..LIST_PAGES_MAX {
                let mut lp = ListParams::default().limit(LIST_PAGE_SIZE);
                if let Some(t) = &token {
                    lp = lp.continue_token(t);
                }
                let page = match api.list(&lp).await.ctx(|| format!("listing {what}")) {
                    Ok(p) => p,
                    Err(e) if e.code() == Some(410) && !restarted => {
                        tracing::info!(what, "list continue token expired; listing again from the start");
                        restarted = true;
                        continue 'listing;
                    }
                    Err(e) => return Err(e),
                };
                items.extend(page.items);
                match page.metadata.continue_.filter(|t| !t.is_empty()) {
                    Some(t) => token = Some(t),
                    None => return Ok(items),
                }
            }
            return Err(K8sError::Invalid(format!("listing {what} took more than {LIST_PAGES_MAX} pages")));
        }
    }

    /// Trident's backends (`tridentbackends.trident.netapp.io`): `backendUUID` -> SVM. No
    /// Trident installed (404) is an empty map; a refusal (403) is a warning, not a failure.
    pub(crate) async fn trident_svms(&self, warnings: &mut Vec<String>) -> K8sResult<BTreeMap<String, String>> {
        let gvk = GroupVersionKind::gvk("trident.netapp.io", "v1", "TridentBackend");
        let resource = ApiResource::from_gvk_with_plural(&gvk, "tridentbackends");
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource);
        let backends = match Self::list_all(&api, "Trident backends").await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Ok(BTreeMap::new()),
            Err(e) if e.code() == Some(403) => {
                warnings.push(format!("cannot read Trident backends ({e}); Trident volumes' SVMs stay unknown"));
                return Ok(BTreeMap::new());
            }
            Err(e) => return Err(e),
        };
        Ok(backends
            .iter()
            .filter_map(|b| {
                // TridentBackend keeps its fields at the top level, not under `spec`.
                let uuid = b.data.get("backendUUID")?.as_str()?;
                let svm = b.data.pointer("/config/ontap_config/svm")?.as_str()?;
                Some((uuid.to_string(), svm.to_string()))
            })
            .collect())
    }

    /// Everything discovery reads, in one consistent-enough pass.
    pub async fn list_objects(&self, namespace: Option<&str>) -> K8sResult<(ClusterObjects, Vec<String>)> {
        let mut warnings = Vec::new();
        let pods = Self::list_all(&self.api::<Pod>(namespace), "pods").await?;
        let pvcs = Self::list_all(&self.api::<PersistentVolumeClaim>(namespace), "persistentvolumeclaims").await?;
        let replica_sets = Self::list_all(&self.api::<ReplicaSet>(namespace), "replicasets").await?;
        let pvs = Self::list_all(&Api::<PersistentVolume>::all(self.client.clone()), "persistentvolumes").await?;
        let trident_svms = self.trident_svms(&mut warnings).await?;
        Ok((ClusterObjects { pods, pvcs, pvs, replica_sets, trident_svms }, warnings))
    }

    /// Discover apps and their volumes, resolving NFS exports to ONTAP volumes.
    pub async fn inventory(&self, namespace: Option<&str>) -> K8sResult<Inventory> {
        let (objects, warnings) = self.list_objects(namespace).await?;
        let mut inv = discovery::inventory(&objects);
        inv.warnings.splice(0..0, warnings);
        self.resolve_nfs(&mut inv).await?;
        Ok(inv)
    }

    /// Trace each NFS claim's export path to the ONTAP volume mounted there.
    async fn resolve_nfs(&self, inv: &mut Inventory) -> K8sResult<()> {
        for claim in &mut inv.claims {
            let Backing::Nfs { server, path } = &claim.backing else { continue };
            match self.nfs_volume(server, path).await? {
                Ok(v) => claim.ontap = Some(v),
                Err(problem) => claim.problem = Some(problem),
            }
        }
        Ok(())
    }

    /// The ONTAP volume exported as `server:path`, or why it cannot be told (no ONTAP
    /// connection, no such junction path, one in several SVMs).
    pub(crate) async fn nfs_volume(&self, server: &str, path: &str) -> K8sResult<Result<OntapVolume, String>> {
        let Some(storage) = &self.storage else {
            return Ok(Err("no ONTAP connection configured to trace the NFS export to its volume".into()));
        };
        let found = match storage.volumes_by_junction_path(path).await {
            Ok(v) => v,
            Err(e @ (StorageError::Refused { .. } | StorageError::NotFound { .. })) => return Ok(Err(format!("looking up junction path {path}: {e}"))),
            Err(e) => return Err(e.into()),
        };
        let wanted_svm = self.options.nfs_servers.get(server);
        let candidates: Vec<_> = found.iter().filter(|v| wanted_svm.is_none_or(|svm| &v.svm == svm)).collect();
        Ok(match candidates.as_slice() {
            [v] => Ok(OntapVolume { svm: v.svm.clone(), volume: v.name.clone() }),
            [] => Err(match wanted_svm {
                Some(svm) => format!("no volume of SVM {svm} (server {server}) is mounted at {path}"),
                None => format!("no ONTAP volume is mounted at {path} (server {server})"),
            }),
            many => {
                let svms: Vec<&str> = many.iter().map(|v| v.svm.as_str()).collect();
                Err(format!("{path} is a junction path in several SVMs ({}); map server {server} to its SVM in the configuration", svms.join(", ")))
            }
        })
    }
}

fn cluster_err(e: K8sError) -> ClusterError {
    match e {
        K8sError::Api { code: 404, what, .. } => ClusterError::NotFound(what),
        K8sError::Timeout { what, timeout } => ClusterError::Timeout { argv0: what, timeout },
        other => ClusterError::Io(other.to_string()),
    }
}

#[async_trait]
impl Cluster for KubeCluster {
    /// Apps with a database and at least one claim resolved to an ONTAP volume.
    async fn discover(&self, namespace: Option<&str>) -> Result<Vec<Workload>, ClusterError> {
        let inv = self.inventory(namespace).await.map_err(cluster_err)?;
        let mut out = Vec::new();
        for app in &inv.apps {
            let Some(db) = app.db else { continue };
            let mut mounts = Vec::new();
            for pod in app.pods.iter().take(1) {
                for m in &pod.mounts {
                    if let Some(OntapVolume { svm, volume }) = inv.claim(&app.namespace, &m.pvc).and_then(|c| c.ontap.clone()) {
                        mounts.push(Mount { path: m.mount_path.clone(), svm, volume });
                    }
                }
            }
            if !mounts.is_empty() {
                out.push(Workload { namespace: app.namespace.clone(), name: app.owner.name.clone(), kind: db.app_kind(), mounts });
            }
        }
        Ok(out)
    }

    async fn scale(&self, namespace: &str, name: &str, replicas: u32) -> Result<(), ClusterError> {
        let target = WorkloadRef::find(&self.client, namespace, name).await.map_err(cluster_err)?;
        workload::scale_and_wait(&self.client, &target, replicas, self.scale_timeout, self.poll_interval).await.map_err(cluster_err)?;
        Ok(())
    }

    /// Stasis reaches databases through a plugin pod in the app's namespace, never by exec
    /// into the app's own container (see ARCHITECTURE.md).
    async fn exec(&self, _namespace: &str, _name: &str, _argv: &[String], _timeout: Duration) -> Result<ExecOutput, ClusterError> {
        Err(ClusterError::Unsupported("exec into an app's container (Stasis uses a plugin pod in the app's namespace)"))
    }
}
