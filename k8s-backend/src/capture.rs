//! Resource capture: the app's workload, Services, ConfigMaps and PVCs, cleaned of what the
//! API server fills in, its Secrets by reference (name and keys, never values unless the
//! user opts in), and the ONTAP volume behind each claim; stored with each backup in the
//! catalog. And the way back: check a namespace for same-named objects, and create them.
//!
//! The claims come from the workload's spec (pod template volumes, and a StatefulSet's
//! `volumeClaimTemplates` per ordinal), not from its pods: a pod that is restarting or gone
//! mid-backup changes nothing about what is captured.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, PersistentVolumeClaim, Secret, Service};
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams};
use kube::{Api, Client};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use stasis_core::catalog::Catalog;

use crate::discovery::{self, Backing, OntapVolume};
use crate::error::{Context, K8sError, K8sResult};
use crate::workload::{WorkloadKind, WorkloadRef};
use crate::KubeCluster;

/// Version of the stored document; a newer one is refused, not misread.
pub const CAPTURE_FORMAT: u32 = 1;

/// A Secret the app uses, by reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRef {
    pub name: String,
    /// The keys it held at backup time (never the values).
    pub keys: Vec<String>,
}

/// How a claim's volume was provisioned, so a restore can bind a clone the same way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClaimSource {
    /// A Trident CSI volume of this backend.
    Trident { backend_uuid: String },
    /// A plain NFS PV served by this address.
    Nfs { server: String },
}

/// A claim of the app and the ONTAP volume behind it at backup time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturedClaim {
    pub pvc: String,
    pub pv: String,
    pub volume: OntapVolume,
    pub source: ClaimSource,
}

/// What is stored with a backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapturedApp {
    pub format: u32,
    pub namespace: String,
    pub workload_kind: WorkloadKind,
    pub workload_name: String,
    /// Replicas at capture time (a restore into a new namespace waits for this many Ready).
    pub replicas: u32,
    /// Cleaned manifests, in the order they are re-applied: ConfigMaps, Secrets (only if
    /// opted in), PVCs, Services, the workload last.
    pub objects: Vec<Value>,
    pub secret_refs: Vec<SecretRef>,
    pub claims: Vec<CapturedClaim>,
}

impl CapturedApp {
    pub fn workload(&self) -> WorkloadRef {
        WorkloadRef { namespace: self.namespace.clone(), kind: self.workload_kind, name: self.workload_name.clone() }
    }

    /// Store it with backup `backup_id` (the backup must be recorded already).
    pub fn store(&self, catalog: &dyn Catalog, backup_id: &str) -> K8sResult<()> {
        let doc = serde_json::to_value(self).map_err(|e| K8sError::Invalid(format!("encoding the captured objects: {e}")))?;
        catalog.put_backup_attachment(backup_id, &json!({ "kubernetes": doc })).map_err(|e| K8sError::Invalid(format!("storing the captured objects with backup {backup_id}: {e}")))
    }

    /// What was stored with backup `backup_id`.
    pub fn load(catalog: &dyn Catalog, backup_id: &str) -> K8sResult<CapturedApp> {
        let doc = catalog.backup_attachment(backup_id).map_err(|e| K8sError::Invalid(format!("reading the objects of backup {backup_id}: {e}")))?;
        let Some(doc) = doc.and_then(|d| d.get("kubernetes").cloned()) else {
            return Err(K8sError::Invalid(format!("backup {backup_id} has no captured Kubernetes objects (it was not taken through the Kubernetes backend)")));
        };
        let format = doc.get("format").and_then(Value::as_u64).unwrap_or(0);
        if format != u64::from(CAPTURE_FORMAT) {
            return Err(K8sError::Invalid(format!("backup {backup_id}: captured objects in format {format}, this build reads {CAPTURE_FORMAT}: upgrade stasis")));
        }
        serde_json::from_value(doc).map_err(|e| K8sError::Invalid(format!("backup {backup_id}: unreadable captured objects: {e}")))
    }
}

/// Metadata the API server owns.
const SERVER_FIELDS: &[&str] =
    &["uid", "resourceVersion", "creationTimestamp", "generation", "managedFields", "ownerReferences", "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds"];
/// Annotations that describe one cluster's state of the object, not its intent.
const STATE_ANNOTATION_PREFIXES: &[&str] =
    &["kubectl.kubernetes.io/last-applied-configuration", "deployment.kubernetes.io/", "pv.kubernetes.io/", "volume.beta.kubernetes.io/", "volume.kubernetes.io/"];

/// Strip what the API server filled in, so the manifest can be created anew elsewhere.
pub fn clean(mut object: Value) -> Value {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        for f in SERVER_FIELDS {
            meta.remove(*f);
        }
        meta.remove("namespace");
        if let Some(ann) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            ann.retain(|k, _| !STATE_ANNOTATION_PREFIXES.iter().any(|p| k.starts_with(p)));
        }
        if meta.get("annotations").and_then(Value::as_object).is_some_and(|a| a.is_empty()) {
            meta.remove("annotations");
        }
    }
    if let Some(o) = object.as_object_mut() {
        o.remove("status");
    }
    match object.get("kind").and_then(Value::as_str) {
        Some("Service") => {
            // Addresses are allocated per cluster; a copy gets its own (a headless Service
            // keeps `None`, which is intent, not an allocation).
            if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
                if spec.get("clusterIP").and_then(Value::as_str) != Some("None") {
                    spec.remove("clusterIP");
                    spec.remove("clusterIPs");
                }
                for p in spec.get_mut("ports").and_then(Value::as_array_mut).into_iter().flatten() {
                    if let Some(p) = p.as_object_mut() {
                        p.remove("nodePort");
                    }
                }
                spec.remove("healthCheckNodePort");
            }
        }
        Some("PersistentVolumeClaim") => {
            // The binding is made anew by the restore (to a clone's PV).
            if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
                spec.remove("volumeName");
            }
            if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.remove("finalizers");
            }
        }
        _ => {}
    }
    object
}

fn to_value<T: Serialize>(kind: &str, api_version: &str, object: &T) -> K8sResult<Value> {
    let mut v = serde_json::to_value(object).map_err(|e| K8sError::Invalid(format!("encoding a {kind}: {e}")))?;
    v["kind"] = json!(kind);
    v["apiVersion"] = json!(api_version);
    Ok(v)
}

/// Names of the ConfigMaps and Secrets a pod spec refers to.
fn references(pod_spec: &Value) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut config_maps, mut secrets) = (BTreeSet::new(), BTreeSet::new());
    let str_at = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_str).map(String::from);
    for v in pod_spec.get("volumes").and_then(Value::as_array).into_iter().flatten() {
        config_maps.extend(str_at(v, "/configMap/name"));
        secrets.extend(str_at(v, "/secret/secretName"));
        for s in v.pointer("/projected/sources").and_then(Value::as_array).into_iter().flatten() {
            config_maps.extend(str_at(s, "/configMap/name"));
            secrets.extend(str_at(s, "/secret/name"));
        }
    }
    let containers = ["containers", "initContainers"].into_iter().flat_map(|k| pod_spec.get(k).and_then(Value::as_array).into_iter().flatten());
    for c in containers {
        for e in c.get("env").and_then(Value::as_array).into_iter().flatten() {
            config_maps.extend(str_at(e, "/valueFrom/configMapKeyRef/name"));
            secrets.extend(str_at(e, "/valueFrom/secretKeyRef/name"));
        }
        for e in c.get("envFrom").and_then(Value::as_array).into_iter().flatten() {
            config_maps.extend(str_at(e, "/configMapRef/name"));
            secrets.extend(str_at(e, "/secretRef/name"));
        }
    }
    for s in pod_spec.get("imagePullSecrets").and_then(Value::as_array).into_iter().flatten() {
        secrets.extend(str_at(s, "/name"));
    }
    (config_maps, secrets)
}

/// The claims a workload's pods use, from its spec: the pod template's claim volumes, and a
/// StatefulSet's `volumeClaimTemplates` for each ordinal (`<template>-<set>-<ordinal>`).
pub fn claim_names(workload: &Value) -> Vec<String> {
    let mut names = BTreeSet::new();
    for v in workload.pointer("/spec/template/spec/volumes").and_then(Value::as_array).into_iter().flatten() {
        if let Some(c) = v.pointer("/persistentVolumeClaim/claimName").and_then(Value::as_str) {
            names.insert(c.to_string());
        }
    }
    if workload["kind"] == "StatefulSet" {
        let set = workload.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        let replicas = workload.pointer("/spec/replicas").and_then(Value::as_u64).unwrap_or(1);
        for t in workload.pointer("/spec/volumeClaimTemplates").and_then(Value::as_array).into_iter().flatten() {
            if let Some(tpl) = t.pointer("/metadata/name").and_then(Value::as_str) {
                for ordinal in 0..replicas {
                    names.insert(format!("{tpl}-{set}-{ordinal}"));
                }
            }
        }
    }
    names.into_iter().collect()
}

fn workload_resource(kind: WorkloadKind) -> ApiResource {
    let k = match kind {
        WorkloadKind::Deployment => "Deployment",
        WorkloadKind::StatefulSet => "StatefulSet",
    };
    api_resource(k, "apps/v1").expect("a workload kind is re-applicable")
}

/// Resolve each claim to its PV and ONTAP volume. Every claim must be bound (both ways)
/// to a Trident or NFS volume whose ONTAP volume is known; the error lists every one that is
/// not, so a backup never records a partial picture of the app.
pub async fn resolve_claims(cluster: &KubeCluster, namespace: &str, names: &[String]) -> K8sResult<(Vec<CapturedClaim>, Vec<PersistentVolumeClaim>)> {
    let client = cluster.client();
    let pvc_api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let pv_api: Api<PersistentVolume> = Api::all(client.clone());
    let mut warnings = Vec::new();
    let trident_svms: BTreeMap<String, String> = cluster.trident_svms(&mut warnings).await?;
    let (mut claims, mut pvcs, mut problems) = (Vec::new(), Vec::new(), Vec::new());
    for name in names {
        let Some(pvc) = pvc_api.get_opt(name).await.ctx(|| format!("reading persistentvolumeclaim {namespace}/{name}"))? else {
            problems.push(format!("{name}: the claim does not exist"));
            continue;
        };
        let pv_name = pvc.spec.as_ref().and_then(|s| s.volume_name.clone()).unwrap_or_default();
        let pv = match pv_name.is_empty() {
            true => None,
            false => pv_api.get_opt(&pv_name).await.ctx(|| format!("reading persistentvolume {pv_name}"))?,
        };
        let pvs: BTreeMap<&str, &PersistentVolume> = pv.iter().map(|p| (pv_name.as_str(), p)).collect();
        let (_, backing) = discovery::backing(namespace, &pvc, &pvs);
        let resolved = match backing {
            Backing::Trident { internal_name, backend_uuid } => match backend_uuid.as_ref().and_then(|u| trident_svms.get(u).map(|svm| (u, svm))) {
                Some((uuid, svm)) => Ok((OntapVolume { svm: svm.clone(), volume: internal_name }, ClaimSource::Trident { backend_uuid: uuid.clone() })),
                None => Err(format!("Trident backend {} is not known, so its SVM is unknown", backend_uuid.as_deref().unwrap_or("(none recorded)"))),
            },
            Backing::Nfs { server, path } => cluster.nfs_volume(&server, &path).await?.map(|v| (v, ClaimSource::Nfs { server })),
            Backing::NotOntap { source } => Err(format!("not an ONTAP volume ({source})")),
            Backing::Unbound { reason } => Err(reason),
        };
        match resolved {
            Ok((volume, source)) => {
                claims.push(CapturedClaim { pvc: name.clone(), pv: pv_name, volume, source });
                pvcs.push(pvc);
            }
            Err(problem) => problems.push(format!("{name}: {problem}")),
        }
    }
    if !problems.is_empty() {
        return Err(K8sError::Invalid(format!("claims of namespace {namespace} that cannot be backed up: {}", problems.join("; "))));
    }
    Ok((claims, pvcs))
}

/// Read the app's objects. Secret values are kept only when `include_secret_values` (the
/// user opted in); otherwise each Secret is recorded by name and keys.
pub async fn capture(cluster: &KubeCluster, w: &WorkloadRef, include_secret_values: bool) -> K8sResult<CapturedApp> {
    let client = cluster.client();
    let ns = w.namespace.as_str();
    let workload: DynamicObject = Api::namespaced_with(client.clone(), ns, &workload_resource(w.kind)).get(&w.name).await.ctx(|| format!("reading {}", w.describe()))?;
    let mut workload = serde_json::to_value(&workload).map_err(|e| K8sError::Invalid(e.to_string()))?;
    workload["kind"] = json!(match w.kind {
        WorkloadKind::Deployment => "Deployment",
        WorkloadKind::StatefulSet => "StatefulSet",
    });
    workload["apiVersion"] = json!("apps/v1");
    let replicas = workload.pointer("/spec/replicas").and_then(Value::as_u64).unwrap_or(1) as u32;
    let template = workload.pointer("/spec/template").cloned().unwrap_or(Value::Null);
    let template_labels = template.pointer("/metadata/labels").and_then(Value::as_object).cloned().unwrap_or_default();
    let (config_maps, secrets) = references(template.get("spec").unwrap_or(&Value::Null));

    let mut objects = Vec::new();
    let cm_api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    for name in &config_maps {
        // A ConfigMap marked optional that does not exist is simply not captured.
        if let Some(cm) = cm_api.get_opt(name).await.ctx(|| format!("reading configmap {ns}/{name}"))? {
            objects.push(clean(to_value("ConfigMap", "v1", &cm)?));
        }
    }
    let secret_api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let mut secret_refs = Vec::new();
    for name in &secrets {
        if let Some(s) = secret_api.get_opt(name).await.ctx(|| format!("reading secret {ns}/{name}"))? {
            let keys = s.data.as_ref().map(|d| d.keys().cloned().collect()).unwrap_or_default();
            secret_refs.push(SecretRef { name: name.clone(), keys });
            if include_secret_values {
                objects.push(clean(to_value("Secret", "v1", &s)?));
            }
        }
    }
    let (claims, pvcs) = resolve_claims(cluster, ns, &claim_names(&workload)).await?;
    for pvc in &pvcs {
        objects.push(clean(to_value("PersistentVolumeClaim", "v1", pvc)?));
    }
    let services: Vec<Service> = KubeCluster::list_all(&Api::namespaced(client.clone(), ns), "services").await?;
    for s in services {
        // The Services that select this workload's pods (a selector that is a subset of the
        // pod template's labels).
        let selector = s.spec.as_ref().and_then(|sp| sp.selector.clone()).unwrap_or_default();
        let selects_app = !selector.is_empty() && selector.iter().all(|(k, v)| template_labels.get(k).and_then(Value::as_str) == Some(v.as_str()));
        if selects_app {
            objects.push(clean(to_value("Service", "v1", &s)?));
        }
    }
    objects.push(clean(workload));
    Ok(CapturedApp { format: CAPTURE_FORMAT, namespace: ns.into(), workload_kind: w.kind, workload_name: w.name.clone(), replicas, objects, secret_refs, claims })
}

/// `Kind/name` of a manifest.
pub fn object_key(object: &Value) -> String {
    format!("{}/{}", object["kind"].as_str().unwrap_or("?"), object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("?"))
}

fn api_resource(kind: &str, api_version: &str) -> K8sResult<ApiResource> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let plural = match kind {
        "ConfigMap" => "configmaps",
        "Secret" => "secrets",
        "PersistentVolumeClaim" => "persistentvolumeclaims",
        "PersistentVolume" => "persistentvolumes",
        "Service" => "services",
        "Deployment" => "deployments",
        "StatefulSet" => "statefulsets",
        other => return Err(K8sError::Invalid(format!("Stasis does not re-apply objects of kind {other}"))),
    };
    Ok(ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural))
}

fn api_resource_of(object: &Value) -> K8sResult<ApiResource> {
    let kind = object["kind"].as_str().ok_or_else(|| K8sError::Invalid(format!("captured object without kind: {}", object_key(object))))?;
    api_resource(kind, object["apiVersion"].as_str().unwrap_or("v1"))
}

fn is_cluster_scoped(object: &Value) -> bool {
    object["kind"] == "PersistentVolume"
}

fn dynamic_api(client: &Client, namespace: &str, object: &Value) -> K8sResult<Api<DynamicObject>> {
    let resource = api_resource_of(object)?;
    Ok(match is_cluster_scoped(object) {
        true => Api::all_with(client.clone(), &resource),
        false => Api::namespaced_with(client.clone(), namespace, &resource),
    })
}

/// Every object of `objects` that already exists (namespaced ones in `namespace`), as
/// `Kind/name`. All are checked, so the user sees the whole list at once.
pub async fn conflicts(client: &Client, namespace: &str, objects: &[Value]) -> K8sResult<Vec<String>> {
    let mut found = Vec::new();
    for o in objects {
        let name = o.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        let api = dynamic_api(client, namespace, o)?;
        if api.get_opt(name).await.ctx(|| format!("checking for {} in {namespace}", object_key(o)))?.is_some() {
            found.push(object_key(o));
        }
    }
    Ok(found)
}

/// Create each object (namespaced ones in `namespace`), in order. Creation, never apply or
/// replace: an object that appeared since the conflict check fails the restore (409) instead
/// of being taken over. On any failure the objects created so far are deleted again, newest
/// first, and the first error is returned.
pub async fn create_all(client: &Client, namespace: &str, objects: &[Value]) -> K8sResult<Created> {
    let mut created = Created(Vec::new());
    for o in objects {
        let mut body = o.clone();
        if !is_cluster_scoped(o) {
            body["metadata"]["namespace"] = json!(namespace);
        }
        let result = match serde_json::from_value::<DynamicObject>(body) {
            Ok(object) => {
                let api = dynamic_api(client, namespace, o)?;
                api.create(&PostParams::default(), &object).await.ctx(|| format!("creating {} in {namespace}", object_key(o))).map(|_| (api, object.metadata.name.unwrap_or_default()))
            }
            Err(e) => Err(K8sError::Invalid(format!("{}: {e}", object_key(o)))),
        };
        match result {
            Ok(done) => created.0.push(done),
            Err(e) => {
                created.remove().await;
                return Err(e);
            }
        }
    }
    Ok(created)
}

/// What [`create_all`] created, to be removed again if the restore fails later.
pub struct Created(Vec<(Api<DynamicObject>, String)>);

impl Created {
    pub fn names(&self) -> Vec<String> {
        self.0.iter().map(|(_, n)| n.clone()).collect()
    }

    /// Delete them, newest first; one already gone is fine.
    pub async fn remove(self) {
        for (api, name) in self.0.into_iter().rev() {
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => tracing::warn!(object = %name, error = %e, "could not remove an object of the failed restore"),
            }
        }
    }
}
