//! Deployments and StatefulSets: find one by name, scale it through its `scale`
//! subresource (optimistic concurrency: a 409 re-reads and tries again, within a bound), and
//! wait until its pods are gone or Ready.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v1::{Scale, ScaleSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde::Serialize;
use tokio::time::Instant;

use crate::error::{Context, K8sError, K8sResult};

/// Scale writes that lose a race (409) are re-read and repeated at most this often.
pub const SCALE_CONFLICT_RETRIES_MAX: u32 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
}

impl WorkloadKind {
    pub fn parse(kind: &str) -> Option<WorkloadKind> {
        match kind {
            "Deployment" => Some(WorkloadKind::Deployment),
            "StatefulSet" => Some(WorkloadKind::StatefulSet),
            _ => None,
        }
    }
}

/// A Deployment or StatefulSet, by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadRef {
    pub namespace: String,
    pub kind: WorkloadKind,
    pub name: String,
}

impl WorkloadRef {
    /// Find `name` as a Deployment, else as a StatefulSet.
    pub async fn find(client: &Client, namespace: &str, name: &str) -> K8sResult<WorkloadRef> {
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
        if deployments.get_opt(name).await.ctx(|| format!("reading deployment {namespace}/{name}"))?.is_some() {
            return Ok(WorkloadRef { namespace: namespace.into(), kind: WorkloadKind::Deployment, name: name.into() });
        }
        let sets: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
        if sets.get_opt(name).await.ctx(|| format!("reading statefulset {namespace}/{name}"))?.is_some() {
            return Ok(WorkloadRef { namespace: namespace.into(), kind: WorkloadKind::StatefulSet, name: name.into() });
        }
        Err(K8sError::Api {
            what: format!("finding workload {namespace}/{name}"),
            code: 404,
            reason: "NotFound".into(),
            message: format!("no Deployment or StatefulSet named {name} in namespace {namespace}"),
        })
    }

    pub fn describe(&self) -> String {
        format!("{:?} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// What the wait loops read from a workload.
struct Observed {
    selector: BTreeMap<String, String>,
    generation: i64,
    observed_generation: i64,
    ready_replicas: i32,
    updated_replicas: i32,
}

async fn observe(client: &Client, w: &WorkloadRef) -> K8sResult<Observed> {
    let what = || format!("reading {}", w.describe());
    match w.kind {
        WorkloadKind::Deployment => {
            let d = Api::<Deployment>::namespaced(client.clone(), &w.namespace).get(&w.name).await.ctx(what)?;
            let status = d.status.unwrap_or_default();
            Ok(Observed {
                selector: d.spec.and_then(|s| s.selector.match_labels).unwrap_or_default(),
                generation: d.metadata.generation.unwrap_or(0),
                observed_generation: status.observed_generation.unwrap_or(0),
                ready_replicas: status.ready_replicas.unwrap_or(0),
                updated_replicas: status.updated_replicas.unwrap_or(0),
            })
        }
        WorkloadKind::StatefulSet => {
            let s = Api::<StatefulSet>::namespaced(client.clone(), &w.namespace).get(&w.name).await.ctx(what)?;
            let status = s.status.unwrap_or_default();
            Ok(Observed {
                selector: s.spec.and_then(|s| s.selector.match_labels).unwrap_or_default(),
                generation: s.metadata.generation.unwrap_or(0),
                observed_generation: status.observed_generation.unwrap_or(0),
                ready_replicas: status.ready_replicas.unwrap_or(0),
                updated_replicas: status.updated_replicas.unwrap_or(0),
            })
        }
    }
}

fn scale_api_get(client: &Client, w: &WorkloadRef) -> impl std::future::Future<Output = Result<Scale, kube::Error>> + use<> {
    let (client, w) = (client.clone(), w.clone());
    async move {
        match w.kind {
            WorkloadKind::Deployment => Api::<Deployment>::namespaced(client, &w.namespace).get_scale(&w.name).await,
            WorkloadKind::StatefulSet => Api::<StatefulSet>::namespaced(client, &w.namespace).get_scale(&w.name).await,
        }
    }
}

async fn scale_api_put(client: &Client, w: &WorkloadRef, scale: &Scale) -> Result<Scale, kube::Error> {
    let pp = PostParams::default();
    match w.kind {
        WorkloadKind::Deployment => Api::<Deployment>::namespaced(client.clone(), &w.namespace).replace_scale(&w.name, &pp, scale).await,
        WorkloadKind::StatefulSet => Api::<StatefulSet>::namespaced(client.clone(), &w.namespace).replace_scale(&w.name, &pp, scale).await,
    }
}

/// Set the workload's replicas through its `scale` subresource, carrying the
/// `resourceVersion` read just before (so a concurrent writer is never overwritten blindly).
/// Returns the replicas it had before.
pub async fn set_replicas(client: &Client, w: &WorkloadRef, replicas: u32) -> K8sResult<u32> {
    let replicas_i32 = i32::try_from(replicas).map_err(|_| K8sError::Invalid(format!("{replicas} replicas is out of range")))?;
    let mut conflicts = 0;
    loop {
        let current = scale_api_get(client, w).await.ctx(|| format!("reading the scale of {}", w.describe()))?;
        let before = current.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0).max(0) as u32;
        let body = Scale {
            metadata: ObjectMeta {
                name: Some(w.name.clone()),
                namespace: Some(w.namespace.clone()),
                resource_version: current.metadata.resource_version.clone(),
                ..Default::default()
            },
            spec: Some(ScaleSpec { replicas: Some(replicas_i32) }),
            status: None,
        };
        match scale_api_put(client, w, &body).await.ctx(|| format!("scaling {} to {replicas}", w.describe())) {
            Ok(_) => return Ok(before),
            Err(e) if e.is_conflict() && conflicts < SCALE_CONFLICT_RETRIES_MAX => {
                conflicts += 1;
                tracing::info!(workload = %w.describe(), conflicts, "scale lost a race (409); reading it again");
            }
            Err(e) => return Err(e),
        }
    }
}

/// Poll `check` until it answers `true`, at most until `timeout`.
async fn poll_until<F, Fut>(what: String, timeout: Duration, interval: Duration, mut check: F) -> K8sResult<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = K8sResult<bool>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await? {
            return Ok(());
        }
        if Instant::now() + interval > deadline {
            return Err(K8sError::Timeout { what, timeout });
        }
        tokio::time::sleep(interval).await;
    }
}

fn selector_string(labels: &BTreeMap<String, String>) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// The workload's pods (by its selector) that still exist, terminating ones included.
pub async fn pods_of(client: &Client, w: &WorkloadRef) -> K8sResult<Vec<Pod>> {
    let observed = observe(client, w).await?;
    if observed.selector.is_empty() {
        return Err(K8sError::Invalid(format!("{} has no matchLabels selector", w.describe())));
    }
    let api: Api<Pod> = Api::namespaced(client.clone(), &w.namespace);
    let lp = ListParams::default().labels(&selector_string(&observed.selector));
    Ok(api.list(&lp).await.ctx(|| format!("listing the pods of {}", w.describe()))?.items)
}

/// Scale to `replicas` and wait: for 0, until every pod is gone (not just terminating: the
/// volume must be unmounted before a SnapRestore); otherwise until all are Ready.
/// Returns the replicas the workload had before.
pub async fn scale_and_wait(client: &Client, w: &WorkloadRef, replicas: u32, timeout: Duration, interval: Duration) -> K8sResult<u32> {
    let before = set_replicas(client, w, replicas).await?;
    if replicas == 0 {
        wait_pods_gone(client, w, timeout, interval).await?;
    } else {
        wait_ready(client, w, replicas, timeout, interval).await?;
    }
    Ok(before)
}

/// Wait until the controller has seen the latest spec and `replicas` pods are updated and Ready.
pub async fn wait_ready(client: &Client, w: &WorkloadRef, replicas: u32, timeout: Duration, interval: Duration) -> K8sResult<()> {
    let want = i32::try_from(replicas).unwrap_or(i32::MAX);
    poll_until(format!("{} having {replicas} Ready pods", w.describe()), timeout, interval, || async {
        let o = observe(client, w).await?;
        Ok(o.observed_generation >= o.generation && o.ready_replicas >= want && o.updated_replicas >= want)
    })
    .await
}

/// Wait until every pod of the workload is gone (terminating ones included).
pub async fn wait_pods_gone(client: &Client, w: &WorkloadRef, timeout: Duration, interval: Duration) -> K8sResult<()> {
    poll_until(format!("the pods of {} being gone", w.describe()), timeout, interval, || async { Ok(pods_of(client, w).await?.is_empty()) }).await
}
