//! The operator end to end: its controllers (behind a real leader election) against the
//! in-memory API server (watch events, status subresources, finalizers, 409s) and the
//! in-process ONTAP simulator over HTTP through the real ONTAP client. And least privilege:
//! every (verb, resource) the operator issued is granted by deploy/rbac.yaml (that every
//! rule is used: tests/operator_wired.rs).

mod apiserver;
#[path = "support/fixtures.rs"]
mod fixtures;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apiserver::{Access, ApiServer};
use async_trait::async_trait;
use fixtures::*;
use ontap_client::{OntapClient, OntapConfig};
use ontap_sim::model::cluster::{Selector, VolumeCreate};
use ontap_sim::{ClusterConfig, SimConfig};
use serde_json::{json, Value};
use stasis_core::clock::SystemClock;
use stasis_core::cluster::Workload;
use stasis_core::domain::{AppSpec, ConsistencyPoint};
use stasis_core::plugin::{AppPlugin, PluginError, RecoveryReport, RecoveryTarget};
use stasis_core::storage::Storage;
use stasis_k8s::leader::{LeaderElector, LeaseConfig};
use stasis_k8s::operator::{self, Context, PluginFactory};
use stasis_k8s::{DiscoverOptions, KubeCluster};

const VOLUME: &str = "trident_pvc_0b6f2c1e";
const BACKUPS: &str = "/apis/stasis.io/v1alpha1/namespaces/shop/backups";
const POLICIES: &str = "/apis/stasis.io/v1alpha1/namespaces/shop/backuppolicies";
const RESTORES: &str = "/apis/stasis.io/v1alpha1/namespaces/shop/restores";
const DRPLANS: &str = "/apis/stasis.io/v1alpha1/namespaces/shop/drplans";

/// The database side of a backup, as the in-cluster plugin would report it; records when
/// the app was frozen and thawed so the test can check the snapshot fell inside.
#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<String>>,
    fail_quiesce: Option<String>,
}

#[async_trait]
impl AppPlugin for Recorder {
    async fn quiesce(&self) -> Result<ConsistencyPoint, PluginError> {
        self.calls.lock().unwrap().push("quiesce".into());
        match &self.fail_quiesce {
            Some(e) => Err(PluginError::App(e.clone())),
            None => Ok(ConsistencyPoint("gtid=0-1-42;binlog=mysql-bin.000003:1337".into())),
        }
    }
    async fn unquiesce(&self) -> Result<(), PluginError> {
        self.calls.lock().unwrap().push("unquiesce".into());
        Ok(())
    }
    async fn stop(&self) -> Result<(), PluginError> {
        Err(PluginError::App("not used by backups".into()))
    }
    async fn start(&self) -> Result<(), PluginError> {
        Err(PluginError::App("not used by backups".into()))
    }
    async fn recover(&self, _target: &RecoveryTarget) -> Result<RecoveryReport, PluginError> {
        Err(PluginError::App("not used by backups".into()))
    }
}

struct Plugins(Arc<Recorder>);

#[async_trait]
impl PluginFactory for Plugins {
    async fn plugin(&self, workload: &Workload, app: &AppSpec) -> Result<Arc<dyn AppPlugin>, String> {
        assert_eq!((workload.namespace.as_str(), workload.name.as_str()), ("shop", "db"));
        assert_eq!(app.volumes, vec![VOLUME.to_string()]);
        Ok(self.0.clone())
    }
}

/// The shop's MariaDB Deployment on a Trident volume, as discovery lists it.
fn seed_cluster(server: &ApiServer) {
    server.seed("/api/v1/namespaces/shop/pods", pod("shop", "db-7d9f8c6b5-x2x9k", "docker.io/library/mariadb:10.11", Some(("ReplicaSet", "db-7d9f8c6b5")), &[("data", "db-data", "/var/lib/mysql")], secret_env("MARIADB_ROOT_PASSWORD", "db-secret", "root-password")));
    server.seed("/api/v1/namespaces/shop/persistentvolumeclaims", pvc("shop", "db-data", Some("pvc-0b6f2c1e")));
    server.seed("/apis/apps/v1/namespaces/shop/replicasets", replica_set("shop", "db-7d9f8c6b5", "db"));
    server.seed("/api/v1/persistentvolumes", trident_pv("pvc-0b6f2c1e", Some(("shop", "db-data")), VOLUME, TRIDENT_BACKEND_UUID));
    server.seed("/apis/trident.netapp.io/v1/namespaces/trident/tridentbackends", trident_backend(TRIDENT_BACKEND_UUID, "svm0"));
}

async fn simulator() -> (ontap_sim::RunningSim, Arc<OntapClient>) {
    let sim = ontap_sim::spawn(SimConfig { cluster: ClusterConfig { svms: vec!["svm0".into()], ..Default::default() }, ..Default::default() }).await.expect("simulator starts on 127.0.0.1");
    let req = VolumeCreate {
        name: VOLUME.into(),
        svm: Selector { name: Some("svm0".into()), uuid: None },
        aggregates: vec![Selector { name: Some("aggr1".into()), uuid: None }],
        size: Some(64 << 20),
        junction_path: Some("/db".into()),
        ..Default::default()
    };
    sim.sim().transact(|s| s.create_volume(req, chrono::Utc::now())).expect("volume created");
    let client = OntapClient::new(OntapConfig::new(sim.base_url(), "admin", "admin".to_string().into())).expect("client config");
    (sim, Arc::new(client))
}

struct Rig {
    server: ApiServer,
    storage: Arc<OntapClient>,
    recorder: Arc<Recorder>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _sim: ontap_sim::RunningSim,
}

impl Rig {
    /// The operator as `stasis operator` runs it: leader election, then the controllers.
    async fn start(recorder: Recorder) -> Rig {
        let (sim, storage) = simulator().await;
        let server = ApiServer::new();
        seed_cluster(&server);
        let (client, _) = server.client("operator");
        let recorder = Arc::new(recorder);
        let cluster = Arc::new(KubeCluster::new(client.clone(), Some(storage.clone() as Arc<dyn Storage>), DiscoverOptions::default()));
        let mut ctx = Context::new(client.clone(), cluster, storage.clone(), Arc::new(Plugins(recorder.clone())), Arc::new(SystemClock));
        ctx.replication.insert("site-b".into(), storage.clone());
        let ctx = Arc::new(ctx);
        let lease = LeaseConfig { lease_duration: Duration::from_secs(2), renew_deadline: Duration::from_millis(1500), retry_period: Duration::from_millis(200), ..LeaseConfig::new("stasis-system", "stasis-operator", "operator-0") };
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let mut rx1 = stop_rx.clone();
        let (leadership, election) = LeaderElector::new(client, lease).unwrap().spawn(async move {
            let _ = rx1.wait_for(|s| *s).await;
        });
        let mut rx2 = stop_rx;
        let controllers = tokio::spawn(operator::run(ctx, leadership, async move {
            let _ = rx2.wait_for(|s| *s).await;
        }));
        Rig { server, storage, recorder, stop, tasks: vec![controllers, election], _sim: sim }
    }

    /// Wait for a condition on the stored object (with a deadline; never a bare sleep).
    async fn wait_for(&self, path: &str, what: &str, cond: impl Fn(Option<&Value>) -> bool) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let obj = self.server.get(path);
            if cond(obj.as_ref()) {
                return obj;
            }
            assert!(tokio::time::Instant::now() < deadline, "{what}: not within 30 s; last seen {obj:#?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn snapshots(&self) -> Vec<String> {
        let volume = self.storage.volumes_by_name("svm0", &[VOLUME.to_string()]).await.unwrap().remove(0);
        self.storage.snapshots(&volume.uuid).await.unwrap().into_iter().map(|s| s.name).collect()
    }

    async fn stop(self) -> ApiServer {
        self.stop.send(true).unwrap();
        for t in self.tasks {
            tokio::time::timeout(Duration::from_secs(10), t).await.expect("the operator stops").unwrap();
        }
        self.server
    }
}

fn phase(obj: Option<&Value>) -> Option<&str> {
    obj?.pointer("/status/phase")?.as_str()
}

fn backup(name: &str) -> Value {
    json!({"apiVersion": "stasis.io/v1alpha1", "kind": "Backup", "metadata": {"name": name, "namespace": "shop"},
           "spec": {"app": {"name": "db"}, "freezeTimeout": "5s"}})
}

async fn create(client: &kube::Client, path: &str, body: Value) {
    let req = http::Request::post(path).header("content-type", "application/json").body(serde_json::to_vec(&body).unwrap()).unwrap();
    let _: Value = client.request(req).await.unwrap_or_else(|e| panic!("creating {path}: {e}"));
}

async fn delete(client: &kube::Client, path: &str) {
    let req = http::Request::delete(path).body(Vec::new()).unwrap();
    let _: Value = client.request(req).await.unwrap_or_else(|e| panic!("deleting {path}: {e}"));
}

#[tokio::test]
async fn a_backup_resource_becomes_an_application_consistent_snapshot_and_its_deletion_removes_it() {
    let rig = Rig::start(Recorder::default()).await;
    let (user, _) = rig.server.client("user");
    create(&user, BACKUPS, backup("nightly-1")).await;
    let done = rig.wait_for(&format!("{BACKUPS}/nightly-1"), "Backup final", |o| matches!(phase(o), Some("Succeeded" | "Failed"))).await.unwrap();
    let status = &done["status"];
    assert_eq!(status["phase"], "Succeeded", "{status:#}");
    assert_eq!(status["consistency"], "application");
    assert_eq!(status["consistencyPoint"], "gtid=0-1-42;binlog=mysql-bin.000003:1337");
    let snapshot = status["snapshotName"].as_str().unwrap().to_string();
    assert!(snapshot.starts_with("stasis_b_"), "{snapshot}");
    assert_eq!(status["snapshots"][0]["volume"], VOLUME);
    assert_eq!(status["snapshots"][0]["svm"], "svm0");
    assert_eq!(status["conditions"][0]["type"], "Ready");
    assert_eq!(status["conditions"][0]["status"], "True");
    assert!(status["freezeWindow"]["lockGranted"].is_string() && status["freezeWindow"]["lockReleased"].is_string(), "{status:#}");
    assert_eq!(done["metadata"]["finalizers"], json!(["stasis.io/snapshots"]));
    // The snapshot is on the array, under the name the status gives.
    assert_eq!(rig.snapshots().await, vec![snapshot.clone()]);
    assert_eq!(*rig.recorder.calls.lock().unwrap(), vec!["quiesce", "unquiesce"]);

    // Deleting the Backup deletes its snapshot (finalizer), then the object goes.
    delete(&user, &format!("{BACKUPS}/nightly-1")).await;
    rig.wait_for(&format!("{BACKUPS}/nightly-1"), "Backup gone", |o| o.is_none()).await;
    assert!(rig.snapshots().await.is_empty(), "the finalizer deleted the snapshot");
    rig.stop().await;
}

#[tokio::test]
async fn a_failing_backup_reaches_failed_with_the_error_and_leaves_no_snapshot() {
    let rig = Rig::start(Recorder { fail_quiesce: Some("Lock wait timeout exceeded; try restarting transaction (1205)".into()), ..Default::default() }).await;
    let (user, _) = rig.server.client("user");
    create(&user, BACKUPS, backup("b1")).await;
    let done = rig.wait_for(&format!("{BACKUPS}/b1"), "Backup final", |o| matches!(phase(o), Some("Succeeded" | "Failed"))).await.unwrap();
    let status = &done["status"];
    assert_eq!(status["phase"], "Failed", "{status:#}");
    assert!(status["error"].as_str().unwrap().contains("Lock wait timeout exceeded"), "{status:#}");
    assert_eq!(status["conditions"][0]["reason"], "BackupFailed");
    assert!(rig.snapshots().await.is_empty());
    // The app was thawed although the quiesce failed.
    assert_eq!(rig.recorder.calls.lock().unwrap().last().map(String::as_str), Some("unquiesce"));

    // A Backup of an app that does not exist fails naming it.
    create(&user, BACKUPS, json!({"apiVersion": "stasis.io/v1alpha1", "kind": "Backup", "metadata": {"name": "b2"}, "spec": {"app": {"name": "nope"}}})).await;
    let done = rig.wait_for(&format!("{BACKUPS}/b2"), "Backup final", |o| matches!(phase(o), Some("Failed"))).await.unwrap();
    assert!(done["status"]["error"].as_str().unwrap().contains("shop/nope"), "{:#}", done["status"]);
    rig.stop().await;
}

/// A Backup left `Running` by a replica that died mid-workflow: the next leader deletes its
/// snapshot by name and fails it, never reports it done.
#[tokio::test]
async fn an_interrupted_backup_is_failed_and_its_snapshot_removed() {
    let rig = Rig::start(Recorder::default()).await;
    let volume = rig.storage.volumes_by_name("svm0", &[VOLUME.to_string()]).await.unwrap().remove(0);
    rig.storage.create_snapshot(&volume.uuid, "stasis_b_00000000dead", Duration::from_secs(5)).await.unwrap();
    let mut b = backup("orphan");
    b["metadata"]["finalizers"] = json!(["stasis.io/snapshots"]);
    b["status"] = json!({"phase": "Running", "backupId": "b-00000000dead", "snapshotName": "stasis_b_00000000dead", "svm": "svm0", "volumes": [VOLUME]});
    rig.server.seed(BACKUPS, b);
    let done = rig.wait_for(&format!("{BACKUPS}/orphan"), "Backup final", |o| matches!(phase(o), Some("Succeeded" | "Failed"))).await.unwrap();
    assert_eq!(done["status"]["phase"], "Failed");
    assert!(done["status"]["error"].as_str().unwrap().contains("interrupted"));
    assert!(rig.snapshots().await.is_empty());
    assert!(rig.recorder.calls.lock().unwrap().is_empty(), "nothing was re-run");
    rig.stop().await;
}

/// Every resource kind, every path that talks to the API; then the RBAC comparison.
#[tokio::test]
async fn policies_restores_drplans_and_least_privilege_rbac() {
    let rig = Rig::start(Recorder::default()).await;
    let (user, _) = rig.server.client("user");

    // A succeeded backup of the policy from two days ago, beyond keepLast 1.
    let mut old = backup("hourly-old");
    old["metadata"]["labels"] = json!({"stasis.io/policy": "hourly", "stasis.io/app": "shop.db"});
    old["metadata"]["finalizers"] = json!(["stasis.io/snapshots"]);
    let two_days_ago = stasis_k8s::operator::rfc3339(chrono::Utc::now() - chrono::TimeDelta::days(2));
    old["status"] = json!({"phase": "Succeeded", "backupId": "b-000000000001", "snapshotName": "stasis_b_000000000001", "svm": "svm0", "volumes": [VOLUME], "startedAt": two_days_ago});
    rig.server.seed(BACKUPS, old);
    create(&user, POLICIES, json!({"apiVersion": "stasis.io/v1alpha1", "kind": "BackupPolicy", "metadata": {"name": "hourly"},
        "spec": {"schedule": "@every 1h", "retention": {"keepLast": 1}, "selector": {"namespaces": ["shop"]}, "freezeTimeout": "5s"}})).await;
    // Due at once (never ran): one Backup for the one app, which runs and succeeds; then
    // retention deletes the old one.
    let policy = rig.wait_for(&format!("{POLICIES}/hourly"), "policy scheduled", |o| o.and_then(|o| o.pointer("/status/lastBackups/0")).is_some()).await.unwrap();
    let created = policy["status"]["lastBackups"][0].as_str().unwrap().to_string();
    assert!(created.starts_with("hourly-shop-db-"), "{created}");
    let done = rig.wait_for(&format!("{BACKUPS}/{created}"), "scheduled backup", |o| matches!(phase(o), Some("Succeeded" | "Failed"))).await.unwrap();
    assert_eq!(done["status"]["phase"], "Succeeded", "{:#}", done["status"]);
    rig.wait_for(&format!("{BACKUPS}/hourly-old"), "retention", |o| o.is_none()).await;
    let policy = rig.wait_for(&format!("{POLICIES}/hourly"), "policy status", |o| o.and_then(|o| o.pointer("/status/nextScheduleTime")).is_some()).await.unwrap();
    assert_eq!(policy["status"]["conditions"][0]["reason"], "Scheduled", "{:#}", policy["status"]);

    // An invalid schedule is reported on the policy.
    create(&user, POLICIES, json!({"apiVersion": "stasis.io/v1alpha1", "kind": "BackupPolicy", "metadata": {"name": "broken"},
        "spec": {"schedule": "every hour", "selector": {"apps": [{"name": "db"}]}}})).await;
    let broken = rig.wait_for(&format!("{POLICIES}/broken"), "invalid schedule", |o| o.and_then(|o| o.pointer("/status/conditions/0")).is_some()).await.unwrap();
    assert_eq!(broken["status"]["conditions"][0]["reason"], "InvalidSchedule");

    // Restores: in place needs confirm; a confirmed one fails closed: no restore path here.
    create(&user, RESTORES, json!({"apiVersion": "stasis.io/v1alpha1", "kind": "Restore", "metadata": {"name": "r1"}, "spec": {"backup": created, "target": {"mode": "InPlace"}}})).await;
    let r1 = rig.wait_for(&format!("{RESTORES}/r1"), "restore judged", |o| phase(o) == Some("Failed")).await.unwrap();
    assert_eq!(r1["status"]["conditions"][0]["reason"], "ConfirmationRequired");
    create(&user, RESTORES, json!({"apiVersion": "stasis.io/v1alpha1", "kind": "Restore", "metadata": {"name": "r2"}, "spec": {"backup": created, "target": {"mode": "InPlace"}, "confirm": true}})).await;
    let r2 = rig.wait_for(&format!("{RESTORES}/r2"), "restore judged", |o| phase(o) == Some("Failed")).await.unwrap();
    assert_eq!(r2["status"]["conditions"][0]["reason"], "RestoreUnavailable", "{:#}", r2["status"]);
    assert_eq!(r2["status"]["conditions"][0]["status"], "False");
    assert_eq!(rig.snapshots().await.len(), 1, "nothing was restored or deleted");

    // DrPlan: relationships read from site-b's Replication seam (none here).
    create(&user, DRPLANS, json!({"apiVersion": "stasis.io/v1alpha1", "kind": "DrPlan", "metadata": {"name": "db-dr"},
        "spec": {"app": {"name": "db"}, "destination": {"cluster": "site-b", "svm": "svm0"}}})).await;
    let dr = rig.wait_for(&format!("{DRPLANS}/db-dr"), "drplan status", |o| o.and_then(|o| o.pointer("/status/conditions/0")).is_some()).await.unwrap();
    assert_eq!(dr["status"]["relationshipState"], "none");
    assert_eq!(dr["status"]["conditions"][0]["reason"], "NotReplicated", "{:#}", dr["status"]);
    create(&user, DRPLANS, json!({"apiVersion": "stasis.io/v1alpha1", "kind": "DrPlan", "metadata": {"name": "elsewhere"},
        "spec": {"app": {"name": "db"}, "destination": {"cluster": "site-z", "svm": "svm9"}}})).await;
    let dr = rig.wait_for(&format!("{DRPLANS}/elsewhere"), "drplan status", |o| o.and_then(|o| o.pointer("/status/conditions/0")).is_some()).await.unwrap();
    assert_eq!(dr["status"]["conditions"][0]["reason"], "UnknownCluster");

    let server = rig.stop().await;
    let used: BTreeSet<Access> = server.log().into_iter().filter(|l| l.client == "operator").map(|l| l.access).collect();
    let granted = rbac_rules();
    let not_granted: Vec<&Access> = used.iter().filter(|a| !granted.contains(a)).collect();
    assert!(not_granted.is_empty(), "the operator issued requests deploy/rbac.yaml does not grant: {not_granted:#?}");
    // That every rule is used is checked by tests/operator_wired.rs, which runs the operator
    // with its real quiesce and restore paths (this run has neither).
}

/// Every (verb, group, resource) deploy/rbac.yaml grants, over its Roles and ClusterRoles.
fn rbac_rules() -> BTreeSet<Access> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/rbac.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut out = BTreeSet::new();
    for doc in text.split("\n---\n") {
        let v: Value = serde_saphyr::from_str(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if !matches!(v["kind"].as_str(), Some("Role" | "ClusterRole")) {
            continue;
        }
        for rule in v["rules"].as_array().unwrap() {
            let strings = |k: &str| rule[k].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect::<Vec<_>>();
            for group in strings("apiGroups") {
                for resource in strings("resources") {
                    for verb in strings("verbs") {
                        assert_ne!(verb, "*", "no wildcards");
                        out.insert(Access { verb, group: group.clone(), resource: resource.clone() });
                    }
                }
            }
        }
    }
    out
}

/// Negative control for the RBAC check: a request outside the rules is caught.
#[test]
fn the_rbac_check_catches_an_ungranted_request() {
    let granted = rbac_rules();
    assert!(granted.contains(&Access { verb: "patch".into(), group: "stasis.io".into(), resource: "backups/status".into() }));
    assert!(!granted.contains(&Access { verb: "list".into(), group: "".into(), resource: "secrets".into() }), "secrets are never listed");
    assert!(!granted.contains(&Access { verb: "update".into(), group: "stasis.io".into(), resource: "backups".into() }));
}
