//! Backup and restore of a Kubernetes app through core's workflows. Core owns the sequence
//! (record, quiesce, snapshot, or stop, SnapRestore / FlexClone, recover, verify, record);
//! [`KubeAppPlugin`] is the app as core sees it, and adds what the cluster needs at each step:
//!
//! - backup: the database is frozen through an [`InClusterDb`] (see [`crate::quiesce`]);
//!   the app's objects are captured before the freeze and stored with the backup.
//! - in place: `stop` scales the Deployment/StatefulSet to 0 and waits until its pods are
//!   gone (volumes unmounted) before core's SnapRestore; `recover` checks each claim is still
//!   bound to its volume, scales back, waits for Ready, and verifies the database.
//! - to a new namespace: before any clone is made, [`KubeAppPlugin::precheck`] fails closed
//!   if the namespace holds any same-named object (the whole list is the error); core then
//!   FlexClones the volumes and `recover` creates PVs bound to the clones (NFS) or PVCs that
//!   import them (Trident), the captured objects with the namespace rewritten, waits until
//!   every claim is bound to its clone and the workload is Ready, and verifies the database.
//!   A failure removes what it created (and core removes the clones).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::{Api, Client};
use serde_json::{json, Value};
use stasis_core::catalog::Catalog;
use stasis_core::domain::{AppSpec, BackupRecord, ConsistencyPoint, RestoreRecord};
use stasis_core::plugin::{AppPlugin, PluginError, RecoveryReport, RecoveryTarget};
use stasis_core::storage::VolumeInfo;
use stasis_core::workflow::Orchestrator;
use tokio::time::Instant;

use crate::capture::{self, CapturedApp, CapturedClaim, ClaimSource};
use crate::error::{Context, K8sError, K8sResult};
use crate::workload::{self, WorkloadRef};
use crate::KubeCluster;

/// Trident's PVC annotations for importing an existing ONTAP volume (here: a FlexClone) as a
/// PV (what `tridentctl import volume` sets). Not managed: Trident neither renames nor
/// deletes the clone; it stays Stasis' (`delete_clone_restore`), like the NFS PVs' `Retain`.
pub const TRIDENT_IMPORT_NAME: &str = "trident.netapp.io/importOriginalName";
pub const TRIDENT_IMPORT_BACKEND: &str = "trident.netapp.io/importBackendUUID";
pub const TRIDENT_NOT_MANAGED: &str = "trident.netapp.io/notManaged";
/// Labels on what a restore creates, so an operator can find (and remove) it.
pub const LABEL_RESTORED_FROM: &str = "stasis.io/restored-from-namespace";

/// The database inside the cluster, as the backup and restore reach it.
#[async_trait]
pub trait InClusterDb: Send + Sync {
    /// Freeze the database `w` runs and read its consistency point under the lock.
    async fn quiesce(&self, w: &WorkloadRef) -> Result<ConsistencyPoint, PluginError>;
    /// Thaw; safe when not frozen and when called twice.
    async fn unquiesce(&self) -> Result<(), PluginError>;
    /// Check the database `w` runs on restored volumes (its pods are Ready): its data, the
    /// point it recovered to, whether it replayed a journal.
    async fn verify(&self, w: &WorkloadRef) -> Result<RecoveryReport, PluginError>;
    /// Remove whatever reaching the database left in place (a port-forward, a plugin pod).
    /// Called after every backup and restore, whatever their outcome.
    async fn release(&self) {}
}

/// Where a restore goes.
#[derive(Debug, Clone)]
pub enum Destination {
    InPlace,
    /// A new namespace, from the captured objects. `volume_order` is the app's volumes in
    /// the order core hands their clones to `recover`.
    Namespace { namespace: String, captured: CapturedApp, volume_order: Vec<String> },
}

/// Bounds for scaling and waiting.
#[derive(Debug, Clone, Copy)]
pub struct Waits {
    pub timeout: Duration,
    pub poll_interval: Duration,
}

impl Default for Waits {
    fn default() -> Self {
        Waits { timeout: Duration::from_secs(300), poll_interval: Duration::from_secs(2) }
    }
}

pub struct KubeAppPlugin {
    client: Client,
    workload: WorkloadRef,
    db: Arc<dyn InClusterDb>,
    destination: Destination,
    replicas_before: Mutex<Option<u32>>,
    stopped: AtomicBool,
    pub waits: Waits,
}

fn plugin_err(e: K8sError) -> PluginError {
    PluginError::App(e.to_string())
}

impl KubeAppPlugin {
    pub fn new(client: Client, workload: WorkloadRef, db: Arc<dyn InClusterDb>, destination: Destination) -> Self {
        KubeAppPlugin { client, workload, db, destination, replicas_before: Mutex::new(None), stopped: AtomicBool::new(false), waits: Waits::default() }
    }

    /// For a restore to a new namespace: every object it would create, checked for a
    /// same-named one, and every Secret the app refers to by reference, checked to exist
    /// there. Run before any storage change; the error lists every problem, and nothing is
    /// created.
    pub async fn precheck(&self) -> K8sResult<()> {
        let Destination::Namespace { namespace, captured, .. } = &self.destination else { return Ok(()) };
        let planned = namespace_objects(captured, namespace, None)?;
        let mut problems = capture::conflicts(&self.client, namespace, &planned).await?;
        let captured_secrets: Vec<String> = captured.objects.iter().filter(|o| o["kind"] == "Secret").map(capture::object_key).collect();
        for s in &captured.secret_refs {
            let key = format!("Secret/{}", s.name);
            if captured_secrets.contains(&key) {
                continue;
            }
            let probe = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": s.name}});
            if capture::conflicts(&self.client, namespace, &[probe]).await?.is_empty() {
                problems.push(format!("{key} is missing (captured by reference: create it in {namespace} first, or back up with Secret values)"));
            }
        }
        match problems.is_empty() {
            true => Ok(()),
            false => Err(K8sError::Conflicts { namespace: namespace.clone(), conflicts: problems }),
        }
    }

    fn saved_replicas(&self) -> u32 {
        self.replicas_before.lock().unwrap_or_else(|p| p.into_inner()).unwrap_or(1).max(1)
    }

    async fn scale_back(&self) -> K8sResult<()> {
        if !self.stopped.load(Ordering::SeqCst) {
            return Ok(());
        }
        workload::scale_and_wait(&self.client, &self.workload, self.saved_replicas(), self.waits.timeout, self.waits.poll_interval).await?;
        self.stopped.store(false, Ordering::SeqCst);
        Ok(())
    }

    async fn recover_in_place(&self, target: &RecoveryTarget) -> K8sResult<RecoveryReport> {
        for v in &target.volumes {
            check_volume(v)?;
        }
        self.scale_back().await?;
        Ok(self.db.verify(&self.workload).await?)
    }

    async fn recover_into(&self, namespace: &str, captured: &CapturedApp, volume_order: &[String], clones: &[VolumeInfo]) -> K8sResult<RecoveryReport> {
        let by_claim = clones_by_claim(captured, volume_order, clones)?;
        let objects = namespace_objects(captured, namespace, Some(&by_claim))?;
        let created = capture::create_all(&self.client, namespace, &objects).await?;
        let target = WorkloadRef { namespace: namespace.into(), ..captured.workload() };
        let checked = async {
            wait_claims_bound(&self.client, namespace, &by_claim, self.waits).await?;
            workload::wait_ready(&self.client, &target, captured.replicas.max(1), self.waits.timeout, self.waits.poll_interval).await?;
            Ok(self.db.verify(&target).await?)
        }
        .await;
        if checked.is_err() {
            // A copy that does not come up is of no use: remove its objects (core removes the
            // clones); the same-named objects are then free for another attempt.
            created.remove().await;
        }
        checked
    }
}

/// A restored volume must be online and writable.
fn check_volume(v: &VolumeInfo) -> K8sResult<()> {
    match (v.online, v.writable) {
        (true, true) => Ok(()),
        _ => Err(K8sError::Invalid(format!("restored volume {} is {} and {}", v.name, if v.online { "online" } else { "offline" }, if v.writable { "writable" } else { "read-only" }))),
    }
}

/// Each captured claim with the clone of its volume: core hands the clones in the app's
/// volume order, named `<volume>_<restore>` unless the caller chose names.
pub fn clones_by_claim<'a>(captured: &'a CapturedApp, volume_order: &[String], clones: &'a [VolumeInfo]) -> K8sResult<Vec<(&'a CapturedClaim, &'a VolumeInfo)>> {
    if volume_order.len() != clones.len() {
        return Err(K8sError::Invalid(format!("{} clones for an app of {} volumes", clones.len(), volume_order.len())));
    }
    let mut out = Vec::new();
    for claim in &captured.claims {
        let i = volume_order
            .iter()
            .position(|v| *v == claim.volume.volume)
            .ok_or_else(|| K8sError::Invalid(format!("claim {} is on volume {}, which is not one of the app's volumes ({})", claim.pvc, claim.volume.volume, volume_order.join(", "))))?;
        let clone = &clones[i];
        check_volume(clone)?;
        if clone.clone_parent_uuid.is_none() || clone.svm != claim.volume.svm {
            return Err(K8sError::Invalid(format!("volume {} handed for claim {} is not a clone in SVM {}", clone.name, claim.pvc, claim.volume.svm)));
        }
        out.push((claim, clone));
    }
    Ok(out)
}

/// Name of the PV Stasis creates for an NFS claim restored into `namespace`.
pub fn restored_pv_name(namespace: &str, pvc: &str) -> String {
    format!("stasis-{namespace}-{pvc}")
}

/// The objects a restore into `namespace` creates, in creation order: ConfigMaps (and
/// Secrets if captured), for each claim a PV on its clone (NFS) and the PVC bound to it, or
/// a PVC importing the clone (Trident), then Services and the workload. Without clones
/// (the conflict check, before any exists) the bodies carry empty volume names.
pub fn namespace_objects(captured: &CapturedApp, namespace: &str, clones: Option<&[(&CapturedClaim, &VolumeInfo)]>) -> K8sResult<Vec<Value>> {
    let (mut out, mut pvcs, mut rest) = (Vec::new(), Vec::new(), Vec::new());
    for o in &captured.objects {
        match o["kind"].as_str() {
            Some("ConfigMap" | "Secret") => out.push(o.clone()),
            Some("PersistentVolumeClaim") => pvcs.push(o.clone()),
            _ => rest.push(o.clone()),
        }
    }
    for mut pvc in pvcs {
        let name = pvc.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
        let claim = captured.claims.iter().find(|c| c.pvc == name).ok_or_else(|| K8sError::Invalid(format!("captured claim {name} has no volume recorded")))?;
        let clone = match clones {
            Some(list) => Some(list.iter().find(|(c, _)| c.pvc == name).map(|(_, v)| *v).ok_or_else(|| K8sError::Invalid(format!("no clone for claim {name}")))?),
            None => None,
        };
        let labels = pvc["metadata"].as_object_mut().expect("a manifest has metadata").entry("labels").or_insert_with(|| json!({}));
        labels[LABEL_RESTORED_FROM] = json!(captured.namespace);
        match &claim.source {
            ClaimSource::Trident { backend_uuid } => {
                let annotations = pvc["metadata"].as_object_mut().expect("a manifest has metadata").entry("annotations").or_insert_with(|| json!({}));
                annotations[TRIDENT_IMPORT_NAME] = json!(clone.map(|c| c.name.clone()).unwrap_or_default());
                annotations[TRIDENT_IMPORT_BACKEND] = json!(backend_uuid);
                annotations[TRIDENT_NOT_MANAGED] = json!("true");
            }
            ClaimSource::Nfs { server } => {
                let path = match clone {
                    Some(c) => c.junction_path.clone().ok_or_else(|| K8sError::Invalid(format!("clone {} has no junction path; an NFS PV needs one", c.name)))?,
                    None => String::new(),
                };
                let pv_name = restored_pv_name(namespace, &name);
                let storage = pvc.pointer("/spec/resources/requests/storage").cloned().unwrap_or(json!("1Gi"));
                let access = pvc.pointer("/spec/accessModes").cloned().unwrap_or(json!(["ReadWriteOnce"]));
                let mode = pvc.pointer("/spec/volumeMode").cloned().unwrap_or(json!("Filesystem"));
                out.push(json!({
                    "apiVersion": "v1",
                    "kind": "PersistentVolume",
                    "metadata": {"name": pv_name, "labels": {LABEL_RESTORED_FROM: captured.namespace, "stasis.io/restored-namespace": namespace}},
                    "spec": {
                        "capacity": {"storage": storage},
                        "accessModes": access,
                        // The clone is the restore's copy: deleting the claim must not delete it.
                        "persistentVolumeReclaimPolicy": "Retain",
                        // Empty: no provisioner and no other claim may take this PV.
                        "storageClassName": "",
                        "volumeMode": mode,
                        "nfs": {"server": server, "path": path},
                        "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": namespace, "name": name}
                    }
                }));
                pvc["spec"]["volumeName"] = json!(pv_name);
                pvc["spec"]["storageClassName"] = json!("");
            }
        }
        out.push(pvc);
    }
    out.extend(rest);
    Ok(out)
}

/// Wait until every claim is Bound, and bound to its clone: the NFS PV Stasis made, or the
/// PV Trident made for the import, whose `internalName` must be the clone's.
async fn wait_claims_bound(client: &Client, namespace: &str, clones: &[(&CapturedClaim, &VolumeInfo)], waits: Waits) -> K8sResult<()> {
    let pvc_api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let pv_api: Api<PersistentVolume> = Api::all(client.clone());
    let deadline = Instant::now() + waits.timeout;
    for (claim, clone) in clones {
        loop {
            let pvc = pvc_api.get(&claim.pvc).await.ctx(|| format!("reading persistentvolumeclaim {namespace}/{}", claim.pvc))?;
            let phase = pvc.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
            let bound_to = pvc.spec.as_ref().and_then(|s| s.volume_name.clone()).filter(|v| !v.is_empty());
            if phase == "Lost" {
                return Err(K8sError::Invalid(format!("claim {namespace}/{} is Lost", claim.pvc)));
            }
            if let (true, Some(pv_name)) = (phase == "Bound", bound_to) {
                let pv = pv_api.get(&pv_name).await.ctx(|| format!("reading persistentvolume {pv_name}"))?;
                let spec = pv.spec.unwrap_or_default();
                let on_clone = match &claim.source {
                    ClaimSource::Nfs { .. } => spec.nfs.as_ref().map(|n| n.path.as_str()) == clone.junction_path.as_deref(),
                    ClaimSource::Trident { .. } => spec.csi.as_ref().and_then(|c| c.volume_attributes.as_ref()).and_then(|a| a.get("internalName")) == Some(&clone.name),
                };
                if !on_clone {
                    return Err(K8sError::Invalid(format!("claim {namespace}/{} is bound to {pv_name}, which is not on clone {}", claim.pvc, clone.name)));
                }
                break;
            }
            if Instant::now() + waits.poll_interval > deadline {
                return Err(K8sError::Timeout { what: format!("claim {namespace}/{} being bound to clone {}", claim.pvc, clone.name), timeout: waits.timeout });
            }
            tokio::time::sleep(waits.poll_interval).await;
        }
    }
    Ok(())
}

#[async_trait]
impl AppPlugin for KubeAppPlugin {
    async fn quiesce(&self) -> Result<ConsistencyPoint, PluginError> {
        self.db.quiesce(&self.workload).await
    }

    async fn unquiesce(&self) -> Result<(), PluginError> {
        self.db.unquiesce().await
    }

    /// Scale to 0 and wait until every pod is gone: a SnapRestore under a mounted volume
    /// would hand the old server's cached pages to the new one. If the pods do not go, the
    /// workload is scaled back before the error is returned.
    async fn stop(&self) -> Result<(), PluginError> {
        let before = workload::set_replicas(&self.client, &self.workload, 0).await.map_err(plugin_err)?;
        {
            let mut saved = self.replicas_before.lock().unwrap_or_else(|p| p.into_inner());
            // A second stop (already at 0) must not forget the real count.
            if saved.is_none() || before > 0 {
                *saved = Some(before);
            }
        }
        self.stopped.store(true, Ordering::SeqCst);
        if let Err(e) = workload::wait_pods_gone(&self.client, &self.workload, self.waits.timeout, self.waits.poll_interval).await {
            if let Err(back) = self.scale_back().await {
                tracing::warn!(error = %back, "could not scale the workload back after its pods did not stop");
            }
            return Err(plugin_err(e));
        }
        Ok(())
    }

    async fn start(&self) -> Result<(), PluginError> {
        self.scale_back().await.map_err(plugin_err)
    }

    async fn recover(&self, target: &RecoveryTarget) -> Result<RecoveryReport, PluginError> {
        let result = match (&self.destination, target.in_place) {
            (_, true) => self.recover_in_place(target).await,
            (Destination::Namespace { namespace, captured, volume_order }, false) => self.recover_into(namespace, captured, volume_order, &target.volumes).await,
            (Destination::InPlace, false) => Err(K8sError::Invalid("a restore to clones needs a target namespace".into())),
        };
        result.map_err(|e| match e {
            K8sError::Db(p) => p,
            other => plugin_err(other),
        })
    }
}

/// Backup of a Kubernetes app: its objects are captured before the freeze (reading them
/// takes no lock), the backup runs through core, and the objects are stored with it.
pub async fn backup(
    orchestrator: &Orchestrator,
    catalog: &dyn Catalog,
    cluster: &KubeCluster,
    app: &AppSpec,
    w: &WorkloadRef,
    db: Arc<dyn InClusterDb>,
    include_secret_values: bool,
) -> K8sResult<BackupRecord> {
    let result = async {
        let captured = capture::capture(cluster, w, include_secret_values).await?;
        check_app_matches(app, &captured)?;
        let plugin = Arc::new(KubeAppPlugin::new(cluster.client().clone(), w.clone(), db.clone(), Destination::InPlace));
        let outcome = orchestrator.backup(app, plugin).await?;
        captured.store(catalog, &outcome.record.id)?;
        Ok(outcome.record)
    }
    .await;
    db.release().await;
    result
}

/// The app's volumes (the catalog's view) and the workload's claims must be the same set.
fn check_app_matches(app: &AppSpec, captured: &CapturedApp) -> K8sResult<()> {
    let mut on_claims: Vec<&str> = captured.claims.iter().map(|c| c.volume.volume.as_str()).collect();
    on_claims.sort_unstable();
    on_claims.dedup();
    let mut of_app: Vec<&str> = app.volumes.iter().map(String::as_str).collect();
    of_app.sort_unstable();
    let wrong_svm: Vec<&str> = captured.claims.iter().filter(|c| c.volume.svm != app.svm).map(|c| c.pvc.as_str()).collect();
    if on_claims != of_app || !wrong_svm.is_empty() {
        return Err(K8sError::Invalid(format!(
            "app {} is volumes [{}] in SVM {}, but {} uses [{}]{}",
            app.name,
            of_app.join(", "),
            app.svm,
            captured.workload().describe(),
            captured.claims.iter().map(|c| format!("{}:{}", c.volume.svm, c.volume.volume)).collect::<Vec<_>>().join(", "),
            if wrong_svm.is_empty() { String::new() } else { format!(" (claims {} are in another SVM)", wrong_svm.join(", ")) }
        )));
    }
    Ok(())
}

/// Restore a backup over the app's own volumes, with the workload scaled down meanwhile.
pub async fn restore_in_place(orchestrator: &Orchestrator, catalog: &dyn Catalog, client: &Client, app: &AppSpec, backup_id: &str, db: Arc<dyn InClusterDb>, waits: Waits) -> K8sResult<RestoreRecord> {
    let result = async {
        let captured = CapturedApp::load(catalog, backup_id)?;
        let mut plugin = KubeAppPlugin::new(client.clone(), captured.workload(), db.clone(), Destination::InPlace);
        plugin.waits = waits;
        Ok(orchestrator.restore_in_place(app, backup_id, Arc::new(plugin)).await?)
    }
    .await;
    db.release().await;
    result
}

/// Restore a backup into `namespace` from clones, next to the running app. Fails closed,
/// creating nothing and cloning nothing, if the namespace holds any same-named object.
#[allow(clippy::too_many_arguments)] // each is a distinct seam; the operator and the CLI fill them differently
pub async fn restore_to_namespace(
    orchestrator: &Orchestrator,
    catalog: &dyn Catalog,
    client: &Client,
    app: &AppSpec,
    backup_id: &str,
    namespace: &str,
    db: Arc<dyn InClusterDb>,
    waits: Waits,
) -> K8sResult<RestoreRecord> {
    let result = async {
        let captured = CapturedApp::load(catalog, backup_id)?;
        let destination = Destination::Namespace { namespace: namespace.into(), captured: captured.clone(), volume_order: app.volumes.clone() };
        let mut plugin = KubeAppPlugin::new(client.clone(), captured.workload(), db.clone(), destination);
        plugin.waits = waits;
        plugin.precheck().await?;
        Ok(orchestrator.restore_to_clone(app, backup_id, Arc::new(plugin)).await?)
    }
    .await;
    db.release().await;
    result
}
