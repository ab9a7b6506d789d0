//! Backups and restores of a Kubernetes app through core's workflows, with the Kubernetes
//! side on a fake API server (real request and response shapes: kinds, resourceVersions,
//! list kinds, Status 404/409) and the storage side on ontap-sim through the real ONTAP
//! client: capture stored with the backup; in place (a 409 on the scale-down, pods still
//! terminating, SnapRestore, scale back, Ready, verify); to a new namespace (conflicts fail
//! closed before any clone; PV/PVC/object bodies bound to the clones, NFS and Trident).

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use ontap_client::{OntapClient, OntapConfig};
use ontap_sim::model::cluster::{Selector, VolumeCreate};
use ontap_sim::{RunningSim, SimConfig};
use serde_json::{json, Value};
use stasis_core::catalog::Catalog;
use stasis_core::clock::SystemClock;
use stasis_core::domain::{AppKind, AppSpec, BackupState, ConsistencyPoint, RestoreState};
use stasis_core::plugin::{PluginError, RecoveryReport};
use stasis_core::sqlite_catalog::SqliteCatalog;
use stasis_core::workflow::{Orchestrator, SeededIds};
use stasis_k8s::capture::{self, CapturedApp, ClaimSource};
use stasis_k8s::restore::{self, InClusterDb, Waits};
use stasis_k8s::workload::{WorkloadKind, WorkloadRef};
use stasis_k8s::{DiscoverOptions, K8sError, KubeCluster};
use support::fixtures::TRIDENT_BACKEND_UUID;
use support::store::Store;
use support::{conflict, fixed, list, rule};

const POINT: &str = "gtid=0-1-42";
const SECRET_VALUE_B64: &str = "Y2FuYXJ5LXB3LTNmOWExYw==";

/// The database inside the pods: it cannot run here (the quiesce suite freezes a real
/// MariaDB through a real port-forward), so it records what it was asked.
struct RecordingDb {
    calls: Mutex<Vec<String>>,
    /// `verify` fails (a database that does not recover).
    broken: AtomicBool,
}

#[async_trait]
impl InClusterDb for RecordingDb {
    async fn quiesce(&self, w: &WorkloadRef) -> Result<ConsistencyPoint, PluginError> {
        self.calls.lock().unwrap().push(format!("quiesce {}", w.describe()));
        Ok(ConsistencyPoint(POINT.into()))
    }
    async fn unquiesce(&self) -> Result<(), PluginError> {
        self.calls.lock().unwrap().push("unquiesce".into());
        Ok(())
    }
    async fn verify(&self, w: &WorkloadRef) -> Result<RecoveryReport, PluginError> {
        self.calls.lock().unwrap().push(format!("verify {}", w.describe()));
        if self.broken.load(Ordering::SeqCst) {
            return Err(PluginError::Verification("CHECK TABLE found 1 table(s) damaged".into()));
        }
        Ok(RecoveryReport { needed_crash_recovery: false, recovered_point: ConsistencyPoint(POINT.into()), detail: "ok".into() })
    }
    async fn release(&self) {
        self.calls.lock().unwrap().push("release".into());
    }
}

struct World {
    sim: RunningSim,
    data_uuid: String,
    log_uuid: String,
    orchestrator: Orchestrator,
    catalog: Arc<SqliteCatalog>,
    storage: Arc<OntapClient>,
    app: AppSpec,
    db: Arc<RecordingDb>,
}

/// Two volumes in svm0: `db_data` (exported over NFS at /db_data) and a Trident volume.
async fn world() -> World {
    let sim = ontap_sim::spawn(SimConfig::default()).await.expect("simulator starts");
    let mut uuids = Vec::new();
    for (name, path) in [("db_data", "/db_data"), ("trident_pvc_5e1a", "/trident_pvc_5e1a")] {
        let req = VolumeCreate {
            name: name.into(),
            svm: Selector { name: Some("svm0".into()), uuid: None },
            aggregates: vec![Selector { name: Some("aggr1".into()), uuid: None }],
            size: Some(64 << 20),
            junction_path: Some(path.into()),
            ..Default::default()
        };
        uuids.push(sim.sim().transact(|s| s.create_volume(req, chrono::Utc::now())).unwrap());
    }
    sim.sim().put_file(&uuids[0], "ibdata1", b"at-backup").unwrap();
    sim.sim().put_file(&uuids[1], "ib_logfile0", b"log-at-backup").unwrap();
    let storage = Arc::new(OntapClient::new(OntapConfig::new(sim.base_url(), "admin", "admin".to_string().into())).unwrap());
    let catalog = Arc::new(SqliteCatalog::open_in_memory().unwrap());
    let orchestrator = Orchestrator::new(storage.clone(), catalog.clone(), Arc::new(SystemClock)).with_ids(Arc::new(SeededIds::new(7)));
    let app = AppSpec { name: "shop-db".into(), kind: AppKind::Mysql, svm: "svm0".into(), volumes: vec!["db_data".into(), "trident_pvc_5e1a".into()], freeze_timeout: Duration::from_secs(5) };
    catalog.put_app(&app).unwrap();
    let db = Arc::new(RecordingDb { calls: Mutex::new(Vec::new()), broken: AtomicBool::new(false) });
    World { data_uuid: uuids[0].clone(), log_uuid: uuids[1].clone(), sim, orchestrator, catalog, storage, app, db }
}

fn fast() -> Waits {
    Waits { timeout: Duration::from_secs(10), poll_interval: Duration::from_millis(5) }
}

fn deployment(namespace: &str, replicas: i64, ready: i64, generation: i64) -> Value {
    json!({"kind": "Deployment", "apiVersion": "apps/v1",
           "metadata": {"name": "db", "namespace": namespace, "uid": "5b3a1f7e-8c2d-4e6f-9a0b-1c2d3e4f5a6b", "resourceVersion": "4711", "generation": generation,
                        "creationTimestamp": "2026-11-01T10:00:00Z", "labels": {"app": "db"},
                        "annotations": {"deployment.kubernetes.io/revision": "3", "kubectl.kubernetes.io/last-applied-configuration": "{}"},
                        "managedFields": [{"manager": "kubectl-client-side-apply", "operation": "Update", "apiVersion": "apps/v1", "time": "2026-11-01T10:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}]},
           "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "db"}},
                    "template": {"metadata": {"labels": {"app": "db"}},
                                 "spec": {"containers": [{"name": "db", "image": "mariadb:10.11",
                                                           "env": [{"name": "MARIADB_ROOT_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db-secret", "key": "root-password"}}}],
                                                           "envFrom": [{"configMapRef": {"name": "db-config"}}],
                                                           "volumeMounts": [{"name": "data", "mountPath": "/var/lib/mysql"}, {"name": "log", "mountPath": "/var/log/mysql"}]}],
                                          "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "db-data"}}, {"name": "log", "persistentVolumeClaim": {"claimName": "db-log"}}]}},
                    "strategy": {"type": "Recreate"}, "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600},
           "status": {"observedGeneration": generation, "replicas": ready, "readyReplicas": ready, "updatedReplicas": ready, "availableReplicas": ready}})
}

fn scale(replicas: i64, rv: &str) -> Value {
    json!({"kind": "Scale", "apiVersion": "autoscaling/v1",
           "metadata": {"name": "db", "namespace": "shop", "uid": "5b3a1f7e-8c2d-4e6f-9a0b-1c2d3e4f5a6b", "resourceVersion": rv, "creationTimestamp": "2026-11-01T10:00:00Z"},
           "spec": {"replicas": replicas}, "status": {"replicas": replicas, "selector": "app=db"}})
}

/// The source namespace `shop` as the API server holds it, and the cluster's PVs.
fn source_objects(store: &Store) {
    store.put("/apis/apps/v1/namespaces/shop/deployments", deployment("shop", 1, 1, 3));
    store.put("/api/v1/namespaces/shop/configmaps", json!({"kind": "ConfigMap", "apiVersion": "v1",
        "metadata": {"name": "db-config", "namespace": "shop", "uid": "0d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6", "resourceVersion": "311", "creationTimestamp": "2026-11-01T10:00:00Z"},
        "data": {"MARIADB_DATABASE": "shop"}}));
    store.put("/api/v1/namespaces/shop/secrets", json!({"kind": "Secret", "apiVersion": "v1", "type": "Opaque",
        "metadata": {"name": "db-secret", "namespace": "shop", "uid": "1e2f3a4b-5c6d-4e7f-8091-a2b3c4d5e6f7", "resourceVersion": "312", "creationTimestamp": "2026-11-01T10:00:00Z"},
        "data": {"root-password": SECRET_VALUE_B64}}));
    let mut data = support::fixtures::pvc("shop", "db-data", Some("pv-nfs-db"));
    data["spec"]["storageClassName"] = json!("ontap-nfs");
    store.put("/api/v1/namespaces/shop/persistentvolumeclaims", data);
    store.put("/api/v1/namespaces/shop/persistentvolumeclaims", support::fixtures::pvc("shop", "db-log", Some("pvc-5e1a")));
    store.put("/api/v1/persistentvolumes", support::fixtures::nfs_pv("pv-nfs-db", Some(("shop", "db-data")), "192.0.2.20", "/db_data"));
    store.put("/api/v1/persistentvolumes", support::fixtures::trident_pv("pvc-5e1a", Some(("shop", "db-log")), "trident_pvc_5e1a", TRIDENT_BACKEND_UUID));
    store.put("/api/v1/namespaces/shop/services", json!({"kind": "Service", "apiVersion": "v1",
        "metadata": {"name": "db", "namespace": "shop", "uid": "2f3a4b5c-6d7e-4f80-91a2-b3c4d5e6f7a8", "resourceVersion": "313", "creationTimestamp": "2026-11-01T10:00:00Z"},
        "spec": {"selector": {"app": "db"}, "ports": [{"name": "mysql", "port": 3306, "protocol": "TCP", "targetPort": 3306, "nodePort": 31306}],
                 "clusterIP": "10.96.14.2", "clusterIPs": ["10.96.14.2"], "type": "NodePort", "ipFamilies": ["IPv4"], "sessionAffinity": "None"},
        "status": {"loadBalancer": {}}}));
    store.put("/api/v1/namespaces/shop/services", json!({"kind": "Service", "apiVersion": "v1", "metadata": {"name": "web", "namespace": "shop", "uid": "3a4b5c6d-7e8f-4091-a2b3-c4d5e6f7a8b9", "resourceVersion": "314"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}], "clusterIP": "10.96.14.3"}}));
}

fn trident_backends() -> support::Rule {
    fixed("GET", "/apis/trident.netapp.io/v1/tridentbackends", 200, list("TridentBackendList", "trident.netapp.io/v1", vec![support::fixtures::trident_backend(TRIDENT_BACKEND_UUID, "svm0")]))
}

/// Play the controllers for what a restore creates: the PV controller binds a claim to the
/// PV it names; Trident imports an annotated claim's volume into a new PV; a Deployment
/// becomes Ready at once.
fn controllers(store: &Store) {
    store.on_create(|objects, collection, o| match o["kind"].as_str() {
        Some("PersistentVolumeClaim") => {
            let ns = o["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
            if let Some(clone) = o.pointer("/metadata/annotations/trident.netapp.io~1importOriginalName").and_then(Value::as_str).map(String::from) {
                let pv_name = format!("pvc-{}", &o["metadata"]["uid"].as_str().unwrap()[24..]);
                let claim = o["metadata"]["name"].as_str().unwrap().to_string();
                let mut pv = support::fixtures::trident_pv(&pv_name, Some((&ns, &claim)), &clone, TRIDENT_BACKEND_UUID);
                pv["metadata"]["annotations"]["trident.netapp.io/importedVolume"] = json!("true");
                objects.insert(format!("/api/v1/persistentvolumes/{pv_name}"), pv);
                o["spec"]["volumeName"] = json!(pv_name);
            }
            o["status"] = json!({"phase": "Bound", "accessModes": o["spec"]["accessModes"], "capacity": {"storage": "10Gi"}});
            let _ = collection;
        }
        Some("Deployment") => {
            let r = o["spec"]["replicas"].clone();
            o["status"] = json!({"observedGeneration": 1, "replicas": r, "readyReplicas": r, "updatedReplicas": r, "availableReplicas": r});
        }
        _ => {}
    });
}

async fn backed_up(w: &World, store: &Store, extra: Vec<support::Rule>) -> (String, support::FakeApi, KubeCluster) {
    let mut rules = extra;
    rules.push(trident_backends());
    rules.extend(store.rules());
    let (client, fake) = support::client(rules);
    let cluster = KubeCluster::new(client, Some(w.storage.clone()), DiscoverOptions::default());
    let src = WorkloadRef { namespace: "shop".into(), kind: WorkloadKind::Deployment, name: "db".into() };
    let record = restore::backup(&w.orchestrator, w.catalog.as_ref(), &cluster, &w.app, &src, w.db.clone(), false).await.expect("backup");
    assert_eq!(record.state, BackupState::Complete);
    (record.id, fake, cluster)
}

#[tokio::test]
async fn capture_is_stored_with_the_backup_secrets_by_reference_server_fields_stripped() {
    let w = world().await;
    let store = Store::default();
    source_objects(&store);
    let (backup_id, fake, cluster) = backed_up(&w, &store, vec![]).await;
    assert!(fake.unmatched().is_empty(), "{:?}", fake.unmatched());
    assert_eq!(w.db.calls.lock().unwrap().clone(), ["quiesce Deployment shop/db", "unquiesce", "release"]);

    let captured = CapturedApp::load(w.catalog.as_ref(), &backup_id).expect("captured objects stored with the backup");
    let keys: Vec<String> = captured.objects.iter().map(capture::object_key).collect();
    assert_eq!(keys, ["ConfigMap/db-config", "PersistentVolumeClaim/db-data", "PersistentVolumeClaim/db-log", "Service/db", "Deployment/db"], "the web Service selects other pods");
    assert_eq!(captured.secret_refs, vec![capture::SecretRef { name: "db-secret".into(), keys: vec!["root-password".into()] }]);
    assert_eq!(captured.replicas, 1);
    let claims: Vec<(String, String, ClaimSource)> = captured.claims.iter().map(|c| (c.pvc.clone(), format!("{}:{}", c.volume.svm, c.volume.volume), c.source.clone())).collect();
    assert_eq!(claims, [
        ("db-data".to_string(), "svm0:db_data".to_string(), ClaimSource::Nfs { server: "192.0.2.20".into() }),
        ("db-log".to_string(), "svm0:trident_pvc_5e1a".to_string(), ClaimSource::Trident { backend_uuid: TRIDENT_BACKEND_UUID.into() }),
    ]);
    let text = serde_json::to_string(&w.catalog.backup_attachment(&backup_id).unwrap()).unwrap();
    assert!(!text.contains(SECRET_VALUE_B64), "no Secret value is stored unless opted in");
    for o in &captured.objects {
        for f in ["uid", "resourceVersion", "creationTimestamp", "namespace", "managedFields", "generation"] {
            assert!(o["metadata"].get(f).is_none(), "{f} left in {}", capture::object_key(o));
        }
        assert!(o.get("status").is_none(), "status left in {}", capture::object_key(o));
    }
    let svc = &captured.objects[3];
    assert!(svc["spec"].get("clusterIP").is_none() && svc["spec"].get("clusterIPs").is_none(), "a copy gets its own address");
    assert!(svc["spec"]["ports"][0].get("nodePort").is_none());
    assert_eq!(svc["spec"]["ports"][0]["port"], 3306, "intent is kept");
    let pvc = &captured.objects[1];
    assert!(pvc["spec"].get("volumeName").is_none() && pvc["metadata"].get("finalizers").is_none());
    assert!(pvc["metadata"].get("annotations").is_none(), "bind annotations are cluster state");
    assert!(captured.objects[4]["metadata"].get("annotations").is_none(), "revision and last-applied annotations are cluster state");
    assert_eq!(captured.objects[4]["spec"]["template"]["spec"]["containers"][0]["image"], "mariadb:10.11");

    // Opting in keeps the Secret itself (cleaned like the rest).
    let src = WorkloadRef { namespace: "shop".into(), kind: WorkloadKind::Deployment, name: "db".into() };
    let with_values = capture::capture(&cluster, &src, true).await.unwrap();
    let secret = with_values.objects.iter().find(|o| o["kind"] == "Secret").expect("the Secret is captured");
    assert_eq!(secret["data"]["root-password"], SECRET_VALUE_B64);
    assert!(secret["metadata"].get("uid").is_none());
    w.sim.shutdown().await;
}

#[tokio::test]
async fn a_backup_whose_claim_is_not_on_ontap_fails_before_the_freeze_naming_the_claim() {
    let w = world().await;
    let store = Store::default();
    source_objects(&store);
    store.put("/api/v1/namespaces/shop/persistentvolumeclaims", support::fixtures::pvc("shop", "db-log", None));
    let (client, _fake) = support::client(std::iter::once(trident_backends()).chain(store.rules()).collect());
    let cluster = KubeCluster::new(client, Some(w.storage.clone()), DiscoverOptions::default());
    let src = WorkloadRef { namespace: "shop".into(), kind: WorkloadKind::Deployment, name: "db".into() };
    let err = restore::backup(&w.orchestrator, w.catalog.as_ref(), &cluster, &w.app, &src, w.db.clone(), false).await.unwrap_err();
    assert!(err.to_string().contains("db-log: claim is Pending"), "{err}");
    assert_eq!(w.db.calls.lock().unwrap().clone(), ["release"], "never frozen");
    assert!(w.catalog.backups(None).unwrap().is_empty(), "no backup recorded");
    w.sim.shutdown().await;
}

#[tokio::test]
async fn in_place_retries_the_409_waits_for_pods_restores_then_scales_back_to_ready() {
    let w = world().await;
    let store = Store::default();
    source_objects(&store);
    let (backup_id, _, _) = backed_up(&w, &store, vec![]).await;
    w.sim.sim().put_file(&w.data_uuid, "ibdata1", b"damaged!!").unwrap();

    let scale_puts = Arc::new(AtomicUsize::new(0));
    let pod_lists = Arc::new(AtomicUsize::new(0));
    let scaled_up = Arc::new(AtomicBool::new(false));
    let restored_before_scale_up = Arc::new(AtomicBool::new(false));
    let deployment_gets = Arc::new(AtomicUsize::new(0));
    let (sim, uuid) = (w.sim.sim().clone(), w.data_uuid.clone());
    let terminating = {
        let mut p = support::fixtures::pod("shop", "db-7d9f8c6b5-x2x9k", "mariadb:10.11", Some(("ReplicaSet", "db-7d9f8c6b5")), &[("data", "db-data", "/var/lib/mysql")], json!([]));
        p["metadata"]["deletionTimestamp"] = json!("2026-11-25T10:00:30Z");
        p["metadata"]["deletionGracePeriodSeconds"] = json!(30);
        p
    };
    let rules = vec![
        {
            let puts = scale_puts.clone();
            rule("GET", "/apis/apps/v1/namespaces/shop/deployments/db/scale", move |_| {
                // Read before the first PUT: 2 replicas at rv 100; a concurrent writer then bumps it to 101.
                match puts.load(Ordering::SeqCst) {
                    0 => (200, scale(2, "100")),
                    1 => (200, scale(2, "101")),
                    _ => (200, scale(0, "102")),
                }
            })
        },
        {
            let (puts, up, restored) = (scale_puts.clone(), scaled_up.clone(), restored_before_scale_up.clone());
            rule("PUT", "/apis/apps/v1/namespaces/shop/deployments/db/scale", move |r| {
                let n = puts.fetch_add(1, Ordering::SeqCst);
                let body = r.body.clone().unwrap();
                if n == 0 {
                    return conflict("deployments", "apps", "db");
                }
                let replicas = body["spec"]["replicas"].as_i64().unwrap();
                if replicas > 0 {
                    up.store(true, Ordering::SeqCst);
                    restored.store(sim.read_file(&uuid, "ibdata1", 0, None).unwrap() == b"at-backup", Ordering::SeqCst);
                }
                (200, scale(replicas, "103"))
            })
        },
        {
            let lists = pod_lists.clone();
            rule("GET", "/api/v1/namespaces/shop/pods", move |r| {
                assert!(r.query.contains("labelSelector=app%3Ddb"), "{}", r.query);
                let items = if lists.fetch_add(1, Ordering::SeqCst) == 0 { vec![terminating.clone()] } else { vec![] };
                (200, list("PodList", "v1", items))
            })
        },
        {
            let (up, gets) = (scaled_up.clone(), deployment_gets.clone());
            rule("GET", "/apis/apps/v1/namespaces/shop/deployments/db", move |_| {
                if !up.load(Ordering::SeqCst) {
                    return (200, deployment("shop", 0, 0, 8));
                }
                // The controller has not caught up at first, then one pod, then both Ready.
                match gets.fetch_add(1, Ordering::SeqCst) {
                    0 => {
                        let mut d = deployment("shop", 2, 0, 9);
                        d["status"]["observedGeneration"] = json!(8);
                        (200, d)
                    }
                    1 => (200, deployment("shop", 2, 1, 9)),
                    _ => (200, deployment("shop", 2, 2, 9)),
                }
            })
        },
    ];
    let (client, fake) = support::client(rules);
    let restore = restore::restore_in_place(&w.orchestrator, w.catalog.as_ref(), &client, &w.app, &backup_id, w.db.clone(), fast()).await.expect("restore in place");

    assert_eq!(restore.state, RestoreState::Complete);
    assert!(fake.unmatched().is_empty(), "{:?}", fake.unmatched());
    assert!(restored_before_scale_up.load(Ordering::SeqCst), "the volume was restored before the app came back");
    let puts = fake.bodies("PUT", "/apis/apps/v1/namespaces/shop/deployments/db/scale");
    let replicas: Vec<i64> = puts.iter().map(|b| b["spec"]["replicas"].as_i64().unwrap()).collect();
    assert_eq!(replicas, [0, 0, 2], "409 on the first scale-down, repeated with the fresh resourceVersion, scaled back to 2");
    let versions: Vec<&str> = puts.iter().map(|b| b["metadata"]["resourceVersion"].as_str().unwrap()).collect();
    assert_eq!(versions, ["100", "101", "102"], "each write carries the resourceVersion read just before");
    assert_eq!(puts[0]["kind"], "Scale");
    assert_eq!(puts[0]["apiVersion"], "autoscaling/v1");
    assert!(pod_lists.load(Ordering::SeqCst) >= 2, "waited while a pod was still terminating");
    assert!(deployment_gets.load(Ordering::SeqCst) >= 3, "waited for observedGeneration and Ready");
    assert_eq!(w.sim.sim().read_file(&w.data_uuid, "ibdata1", 0, None).unwrap(), b"at-backup");
    let calls = w.db.calls.lock().unwrap().clone();
    assert_eq!(calls[calls.len() - 2..], ["verify Deployment shop/db", "release"]);
    w.sim.shutdown().await;
}

#[tokio::test]
async fn pods_that_do_not_stop_fail_the_restore_and_the_workload_is_scaled_back() {
    let w = world().await;
    let store = Store::default();
    source_objects(&store);
    let (backup_id, _, _) = backed_up(&w, &store, vec![]).await;
    let stuck = support::fixtures::pod("shop", "db-7d9f8c6b5-x2x9k", "mariadb:10.11", Some(("ReplicaSet", "db-7d9f8c6b5")), &[], json!([]));
    let rules = vec![
        fixed("GET", "/apis/apps/v1/namespaces/shop/deployments/db/scale", 200, scale(1, "100")),
        rule("PUT", "/apis/apps/v1/namespaces/shop/deployments/db/scale", |r| (200, scale(r.body.as_ref().unwrap()["spec"]["replicas"].as_i64().unwrap(), "101"))),
        fixed("GET", "/api/v1/namespaces/shop/pods", 200, list("PodList", "v1", vec![stuck])),
        fixed("GET", "/apis/apps/v1/namespaces/shop/deployments/db", 200, deployment("shop", 1, 1, 4)),
    ];
    let (client, fake) = support::client(rules);
    let waits = Waits { timeout: Duration::from_millis(200), poll_interval: Duration::from_millis(5) };
    let err = restore::restore_in_place(&w.orchestrator, w.catalog.as_ref(), &client, &w.app, &backup_id, w.db.clone(), waits).await.unwrap_err();
    assert!(err.to_string().contains("being gone"), "{err}");
    let replicas: Vec<i64> = fake.bodies("PUT", "/apis/apps/v1/namespaces/shop/deployments/db/scale").iter().map(|b| b["spec"]["replicas"].as_i64().unwrap()).collect();
    assert_eq!(replicas, [0, 1], "scaled back to its replicas after the pods did not go");
    assert_eq!(w.sim.sim().read_file(&w.data_uuid, "ibdata1", 0, None).unwrap(), b"at-backup", "no SnapRestore under running pods");
    let restores = w.catalog.restores(None).unwrap();
    assert_eq!(restores[0].state, RestoreState::Failed);
    w.sim.shutdown().await;
}

#[tokio::test]
async fn restore_to_a_new_namespace_creates_pvs_pvcs_and_objects_bound_to_the_clones() {
    let w = world().await;
    let store = Store::default();
    source_objects(&store);
    controllers(&store);
    let (backup_id, _, _) = backed_up(&w, &store, vec![]).await;
    // The Secret is referenced, not captured: the user created it in the target namespace.
    store.put("/api/v1/namespaces/shop-restore/secrets", json!({"kind": "Secret", "apiVersion": "v1", "type": "Opaque", "metadata": {"name": "db-secret", "namespace": "shop-restore", "uid": "4b5c6d7e-8f90-41a2-b3c4-d5e6f7a8b9c0", "resourceVersion": "900"}}));
    // The source keeps running and changing after the backup.
    w.sim.sim().put_file(&w.data_uuid, "ibdata1", b"after-backup").unwrap();

    let (client, fake) = support::client(store.rules());
    let restore = restore::restore_to_namespace(&w.orchestrator, w.catalog.as_ref(), &client, &w.app, &backup_id, "shop-restore", w.db.clone(), fast()).await.expect("restore to shop-restore");
    assert_eq!(restore.state, RestoreState::Complete);
    assert!(fake.unmatched().is_empty(), "{:?}", fake.unmatched());
    let (data_clone, log_clone) = (restore.clone_volumes[0].1.clone(), restore.clone_volumes[1].1.clone());
    assert!(data_clone.starts_with("db_data_") && log_clone.starts_with("trident_pvc_5e1a_"), "{data_clone} {log_clone}");

    let creates: Vec<String> = fake.log().iter().filter(|r| r.method == "POST").map(|r| format!("{} {}", r.path, r.body.as_ref().unwrap()["metadata"]["name"].as_str().unwrap())).collect();
    assert_eq!(creates, [
        "/api/v1/namespaces/shop-restore/configmaps db-config",
        "/api/v1/persistentvolumes stasis-shop-restore-db-data",
        "/api/v1/namespaces/shop-restore/persistentvolumeclaims db-data",
        "/api/v1/namespaces/shop-restore/persistentvolumeclaims db-log",
        "/api/v1/namespaces/shop-restore/services db",
        "/apis/apps/v1/namespaces/shop-restore/deployments db",
    ]);
    // NFS: a PV on the clone's export, pre-bound to the claim, kept when the claim goes.
    let pv = &fake.bodies("POST", "/api/v1/persistentvolumes")[0];
    assert_eq!(pv["kind"], "PersistentVolume");
    assert_eq!(pv["spec"]["nfs"], json!({"server": "192.0.2.20", "path": format!("/{data_clone}")}));
    assert_eq!(pv["spec"]["claimRef"], json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": "shop-restore", "name": "db-data"}));
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    assert_eq!(pv["spec"]["capacity"]["storage"], "10Gi");
    assert_eq!(pv["spec"]["accessModes"], json!(["ReadWriteOnce"]));
    assert_eq!(pv["spec"]["storageClassName"], "");
    let pvcs = fake.bodies("POST", "/api/v1/namespaces/shop-restore/persistentvolumeclaims");
    assert_eq!(pvcs[0]["metadata"]["namespace"], "shop-restore");
    assert_eq!(pvcs[0]["spec"]["volumeName"], "stasis-shop-restore-db-data");
    assert_eq!(pvcs[0]["spec"]["storageClassName"], "", "no provisioner may step in");
    assert_eq!(pvcs[0]["metadata"]["labels"]["stasis.io/restored-from-namespace"], "shop");
    // Trident: a claim importing the clone, not managed (the clone stays Stasis').
    assert_eq!(pvcs[1]["metadata"]["annotations"], json!({
        "trident.netapp.io/importOriginalName": log_clone,
        "trident.netapp.io/importBackendUUID": TRIDENT_BACKEND_UUID,
        "trident.netapp.io/notManaged": "true"
    }));
    assert_eq!(pvcs[1]["spec"]["storageClassName"], "ontap-gold", "Trident import needs the class");
    assert!(pvcs[1]["spec"].get("volumeName").is_none());
    for body in fake.log().iter().filter(|r| r.method == "POST").filter_map(|r| r.body.clone()) {
        assert!(body["metadata"].get("resourceVersion").is_none() && body["metadata"].get("uid").is_none() && body.get("status").is_none(), "{body}");
    }
    let dep = &fake.bodies("POST", "/apis/apps/v1/namespaces/shop-restore/deployments")[0];
    assert_eq!(dep["metadata"]["namespace"], "shop-restore");
    assert_eq!(dep["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"], "db-data");
    assert_eq!(dep["spec"]["replicas"], 1);
    let svc = &fake.bodies("POST", "/api/v1/namespaces/shop-restore/services")[0];
    assert!(svc["spec"].get("clusterIP").is_none());
    assert_eq!(svc["spec"]["selector"], json!({"app": "db"}));
    // The clones hold the backup's data; the source is untouched.
    let clone_uuid = w.sim.sim().volume_uuid("svm0", &data_clone).unwrap();
    assert_eq!(w.sim.sim().read_file(&clone_uuid, "ibdata1", 0, None).unwrap(), b"at-backup");
    let log_uuid = w.sim.sim().volume_uuid("svm0", &log_clone).unwrap();
    assert_eq!(w.sim.sim().read_file(&log_uuid, "ib_logfile0", 0, None).unwrap(), b"log-at-backup");
    assert_eq!(w.sim.sim().read_file(&w.data_uuid, "ibdata1", 0, None).unwrap(), b"after-backup");
    let _ = &w.log_uuid;
    let calls = w.db.calls.lock().unwrap().clone();
    assert_eq!(calls[calls.len() - 2..], ["verify Deployment shop-restore/db", "release"]);
    w.sim.shutdown().await;
}

#[tokio::test]
async fn a_namespace_with_same_named_objects_fails_closed_with_the_list_and_nothing_changes() {
    let w = world().await;
    let store = Store::default();
    source_objects(&store);
    let (backup_id, _, _) = backed_up(&w, &store, vec![]).await;
    // Restoring into the app's own namespace: everything is there already but the NFS PV name.
    store.put("/api/v1/namespaces/shop/secrets", json!({"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "other"}}));
    let (client, fake) = support::client(store.rules());
    let before = store.paths();
    let err = restore::restore_to_namespace(&w.orchestrator, w.catalog.as_ref(), &client, &w.app, &backup_id, "shop", w.db.clone(), fast()).await.unwrap_err();
    match &err {
        K8sError::Conflicts { namespace, conflicts } => {
            assert_eq!(namespace, "shop");
            assert_eq!(conflicts, &["ConfigMap/db-config", "PersistentVolumeClaim/db-data", "PersistentVolumeClaim/db-log", "Service/db", "Deployment/db"]);
        }
        other => panic!("expected the conflict list, got {other}"),
    }
    assert!(err.to_string().contains("nothing was restored"), "{err}");
    assert!(fake.log().iter().all(|r| r.method == "GET"), "nothing was created: {:?}", fake.lines());
    assert_eq!(store.paths(), before);
    let volumes = w.sim.sim().read(|s| s.volumes_in_order().iter().map(|v| v.name.clone()).collect::<Vec<_>>());
    assert_eq!(volumes, ["db_data", "trident_pvc_5e1a"], "no clone was made");
    assert!(w.catalog.restores(None).unwrap().is_empty(), "no restore started");

    // A missing referenced Secret is listed too.
    let (client, _) = support::client(store.rules());
    let err = restore::restore_to_namespace(&w.orchestrator, w.catalog.as_ref(), &client, &w.app, &backup_id, "empty-ns", w.db.clone(), fast()).await.unwrap_err();
    assert!(matches!(&err, K8sError::Conflicts { conflicts, .. } if conflicts.len() == 1 && conflicts[0].starts_with("Secret/db-secret is missing")), "{err}");
    w.sim.shutdown().await;
}

#[tokio::test]
async fn a_copy_whose_database_does_not_verify_is_removed_objects_and_clones() {
    let w = world().await;
    let store = Store::default();
    source_objects(&store);
    controllers(&store);
    let (backup_id, _, _) = backed_up(&w, &store, vec![]).await;
    store.put("/api/v1/namespaces/shop-restore/secrets", json!({"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "db-secret", "namespace": "shop-restore"}}));
    let before = store.paths();
    w.db.broken.store(true, Ordering::SeqCst);
    let (client, fake) = support::client(store.rules());
    let err = restore::restore_to_namespace(&w.orchestrator, w.catalog.as_ref(), &client, &w.app, &backup_id, "shop-restore", w.db.clone(), fast()).await.unwrap_err();
    assert!(err.to_string().contains("verification failed"), "{err}");
    let deletes: Vec<String> = fake.log().iter().filter(|r| r.method == "DELETE").map(|r| r.path.clone()).collect();
    assert_eq!(deletes.len(), 6, "every created object is deleted again, newest first: {deletes:?}");
    assert_eq!(deletes[0], "/apis/apps/v1/namespaces/shop-restore/deployments/db");
    // Trident's PV goes with its claim (its own controller's work); ours are all gone.
    let left: Vec<String> = store.paths().into_iter().filter(|p| !before.contains(p) && !p.starts_with("/api/v1/persistentvolumes/pvc-")).collect();
    assert!(left.is_empty(), "{left:?}");
    let restores = w.catalog.restores(None).unwrap();
    assert_eq!(restores[0].state, RestoreState::Failed);
    let volumes = w.sim.sim().read(|s| s.volumes_in_order().iter().map(|v| v.name.clone()).collect::<Vec<_>>());
    assert_eq!(volumes, ["db_data", "trident_pvc_5e1a"], "the clones were deleted");
    w.sim.shutdown().await;
}
