//! The operator as `stasis operator` wires it (`operator::wired`: the in-cluster quiesce and
//! the Kubernetes restore path), end to end: the in-memory API server (watches, status
//! subresources, finalizers, scale, 404/409) served over real HTTP so kube's client speaks
//! the real port-forward protocol (WebSocket, `v4.channel.k8s.io`) to a real MariaDB, and
//! the in-process ONTAP simulator through the real ONTAP client. A small controller loop
//! plays Kubernetes' own controllers (PV binding, Trident's import, Deployments' pods).
//!
//! One run covers: a Backup frozen through the port-forward with the credentials read from
//! the pod template's Secret reference; a Backup whose pod is gone (Failed, nothing left);
//! a Restore into a new namespace (PVC/PV/objects created, verified through a port-forward
//! to the copy); a Restore into a namespace that holds same-named objects (Failed closed, no
//! clone); an in-place Restore (scale 0, SnapRestore, scale back, verify); a policy and a
//! DrPlan. Then least privilege: the (verb, resource) pairs the operator issued are exactly
//! those deploy/rbac.yaml grants.

mod apiserver;
#[path = "support/fixtures.rs"]
mod fixtures;
#[path = "support/relay.rs"]
mod relay;

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apiserver::{Access, ApiServer};
use fixtures::*;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use mysql_async::prelude::Queryable;
use ontap_client::{OntapClient, OntapConfig};
use serde_json::{json, Value};
use stasis_core::clock::SystemClock;
use stasis_core::storage::Storage;
use stasis_k8s::leader::{LeaderElector, LeaseConfig};
use stasis_k8s::operator::wired::{InClusterPlugins, KubeRestore};
use stasis_k8s::operator::{self, Context};
use stasis_k8s::restore::Waits;
use stasis_k8s::{DiscoverOptions, KubeCluster};
use stasis_scenarios::mariadb::{MariaDb, MariaDbOptions, SimWithMounts, APP_USER};
use tokio::net::TcpListener;

const VOLUME: &str = "trident_pvc_0b6f2c1e";
const PASSWORD: &str = "wired-operator-pw-7c1e";
const BACKUPS: &str = "/apis/stasis.io/v1alpha1/namespaces/shop/backups";
const RESTORES: &str = "/apis/stasis.io/v1alpha1/namespaces/shop/restores";
const POLICIES: &str = "/apis/stasis.io/v1alpha1/namespaces/shop/backuppolicies";
const DRPLANS: &str = "/apis/stasis.io/v1alpha1/namespaces/shop/drplans";
/// The binary logs' volume, a plain NFS PV.
const LOG_VOLUME: &str = "db_log";
const NFS_SERVER: &str = "192.0.2.20";
/// Claims never bound here (a restore that times out).
const STUCK: &str = "shop-stuck";
const CLAIMS: [(&str, &str, &str); 2] = [("data", "db-data", "/var/lib/mysql"), ("log", "db-log", "/var/log/mysql")];
const SOURCE_POD: &str = "db-7d9f8c6b5-x2x9k";
const DB_LOG: &str = "2026-11-25 10:00:02 0 [Note] mariadbd: ready for connections.\n";

/// The pods' databases: a port-forward reaches the `mariadbd` the controller loop started
/// for that pod on its claim's volume, except pods marked gone (listed, but the kubelet
/// answers 404).
#[derive(Clone, Default)]
struct Forwards {
    /// Pod name -> its server's port.
    ports: Arc<Mutex<BTreeMap<String, u16>>>,
    gone: Arc<Mutex<BTreeSet<String>>>,
    opened: Arc<Mutex<Vec<String>>>,
    open_now: Arc<AtomicUsize>,
}

type Body = BoxBody<Bytes, Infallible>;

fn status_response(code: u16, reason: &str, message: String) -> Response<Body> {
    let body = apiserver::status(code, reason, &message, json!({}));
    Response::builder().status(code).header("content-type", "application/json").body(Full::from(serde_json::to_vec(&body).unwrap()).boxed()).unwrap()
}

async fn route(req: Request<Incoming>, server: ApiServer, client: &'static str, forwards: Forwards) -> Result<Response<Body>, Infallible> {
    let (method, path, query) = (req.method().to_string(), req.uri().path().to_string(), req.uri().query().unwrap_or_default().to_string());
    if let Some(pod_path) = path.strip_suffix("/portforward") {
        let pod = pod_path.rsplit('/').next().unwrap_or_default().to_string();
        let backend = forwards.ports.lock().unwrap().get(&pod).copied().filter(|_| server.get(pod_path).is_some() && !forwards.gone.lock().unwrap().contains(&pod));
        let there = backend.is_some();
        let code = if there { 101 } else { 404 };
        // The WebSocket upgrade is a GET; the API server also authorizes it as `create`
        // (Kubernetes 1.35+ checks both for pods/portforward).
        server.note(client, &method, &path, &query, "get", code);
        server.note(client, &method, &path, &query, "create", code);
        if !there {
            return Ok(status_response(404, "NotFound", format!("pods \"{pod}\" not found")));
        }
        let port: u16 = query.split('&').find_map(|kv| kv.strip_prefix("ports=")).and_then(|p| p.parse().ok()).unwrap_or(0);
        forwards.opened.lock().unwrap().push(pod);
        let backend = SocketAddr::from(([127, 0, 0, 1], backend.unwrap()));
        return Ok(relay::accept(req, backend, port, forwards.open_now.clone()).map(|b| b.boxed()));
    }
    if let Some(pod_path) = path.strip_suffix("/log") {
        let there = server.get(pod_path).is_some();
        server.note(client, &method, &path, &query, "get", if there { 200 } else { 404 });
        if !there {
            return Ok(status_response(404, "NotFound", format!("pods \"{}\" not found", pod_path.rsplit('/').next().unwrap_or_default())));
        }
        return Ok(Response::builder().status(200).header("content-type", "text/plain").body(Full::from(DB_LOG).boxed()).unwrap());
    }
    let content_type = req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let bytes = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    Ok(server.handle(client, &method, &path, &query, &content_type, &bytes).map(|b| b.boxed()))
}

/// The API server on 127.0.0.1 for one client (requests are logged under its name).
async fn serve_http(server: ApiServer, client: &'static str, forwards: Forwards) -> (kube::Client, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((tcp, _)) = listener.accept().await {
            let (server, forwards) = (server.clone(), forwards.clone());
            conns.spawn(async move {
                let service = hyper::service::service_fn(move |req| route(req, server.clone(), client, forwards.clone()));
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service).with_upgrades().await;
            });
        }
    });
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    (kube::Client::try_from(config).expect("a client for the HTTP front"), task)
}

/// A Secret's `data` value, base64 as the API server returns it.
fn b64(text: &str) -> String {
    serde_json::to_value(k8s_openapi::ByteString(text.as_bytes().to_vec())).unwrap().as_str().unwrap().to_string()
}

fn db_env() -> Value {
    json!([{"name": "MARIADB_USER", "value": APP_USER},
           {"name": "MARIADB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db-secret", "key": "password"}}}])
}

fn deployment() -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "db", "labels": {"app": "db"}},
           "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "db"}}, "strategy": {"type": "Recreate"},
                    "template": {"metadata": {"labels": {"app": "db"}},
                                 "spec": {"containers": [{"name": "db", "image": "docker.io/library/mariadb:10.11", "env": db_env(),
                                                          "envFrom": [{"configMapRef": {"name": "db-config"}}],
                                                          "ports": [{"name": "mysql", "containerPort": 3306, "protocol": "TCP"}],
                                                          "volumeMounts": [{"name": "data", "mountPath": "/var/lib/mysql"}, {"name": "log", "mountPath": "/var/log/mysql"}]}],
                                          "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "db-data"}}, {"name": "log", "persistentVolumeClaim": {"claimName": "db-log"}}]}}},
           "status": {"observedGeneration": 1, "replicas": 1, "readyReplicas": 1, "updatedReplicas": 1, "availableReplicas": 1}})
}

fn secret(namespace: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": {"name": "db-secret", "namespace": namespace}, "data": {"password": b64(PASSWORD)}})
}

/// The shop's MariaDB Deployment on a Trident volume, with its ConfigMap, Secret and Service.
fn seed_cluster(server: &ApiServer) {
    server.seed("/apis/apps/v1/namespaces/shop/deployments", deployment());
    server.seed("/apis/apps/v1/namespaces/shop/replicasets", replica_set("shop", "db-7d9f8c6b5", "db"));
    let mut pod = pod("shop", SOURCE_POD, "docker.io/library/mariadb:10.11", Some(("ReplicaSet", "db-7d9f8c6b5")), &CLAIMS, db_env());
    pod["metadata"]["labels"] = json!({"app": "db", "pod-template-hash": "7d9f8c6b5"});
    server.seed("/api/v1/namespaces/shop/pods", pod);
    server.seed("/api/v1/namespaces/shop/persistentvolumeclaims", pvc("shop", "db-data", Some("pvc-0b6f2c1e")));
    server.seed("/api/v1/persistentvolumes", trident_pv("pvc-0b6f2c1e", Some(("shop", "db-data")), VOLUME, TRIDENT_BACKEND_UUID));
    let mut log = pvc("shop", "db-log", Some("pv-nfs-db-log"));
    log["spec"]["storageClassName"] = json!("");
    server.seed("/api/v1/namespaces/shop/persistentvolumeclaims", log);
    server.seed("/api/v1/persistentvolumes", nfs_pv("pv-nfs-db-log", Some(("shop", "db-log")), NFS_SERVER, &format!("/{LOG_VOLUME}")));
    server.seed("/apis/trident.netapp.io/v1/namespaces/trident/tridentbackends", trident_backend(TRIDENT_BACKEND_UUID, "svm0"));
    server.seed("/api/v1/namespaces/shop/secrets", secret("shop"));
    server.seed("/api/v1/namespaces/shop/configmaps", json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "db-config"}, "data": {"MARIADB_DATABASE": "shop"}}));
    server.seed("/api/v1/namespaces/shop/services", json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"},
        "spec": {"selector": {"app": "db"}, "ports": [{"name": "mysql", "port": 3306, "targetPort": 3306, "protocol": "TCP"}], "clusterIP": "10.96.14.7", "clusterIPs": ["10.96.14.7"], "type": "ClusterIP"}}));
    // The namespaces copies are restored into hold the Secret the app refers to by reference.
    server.seed("/api/v1/namespaces/shop-copy/secrets", secret("shop-copy"));
    server.seed("/api/v1/namespaces/shop-stuck/secrets", secret("shop-stuck"));
}

/// Kubernetes' controllers and kubelet, as far as the operator depends on them: Trident
/// imports a claim's volume into a PV and binds it; a Deployment's pods follow
/// `spec.replicas`, each running a real `mariadbd` on its claim's volume (FUSE-mounted from
/// the simulator: a clone, or the SnapRestored original), Ready once it accepts connections;
/// a pod removed by a scale-down has its server killed first, as the kubelet would.
async fn controllers(server: ApiServer, forwards: Forwards, mounts: PathBuf, mut running: BTreeMap<String, MariaDb>) {
    let (kubelet, _) = server.client("kube-controller-manager");
    let mut serial = 0;
    loop {
        for claim in server.list("/api/v1/persistentvolumeclaims") {
            let (ns, name) = (claim["metadata"]["namespace"].as_str().unwrap().to_string(), claim["metadata"]["name"].as_str().unwrap().to_string());
            if ns == STUCK || claim.pointer("/status/phase").and_then(Value::as_str) == Some("Bound") {
                continue;
            }
            if let Some(pv) = claim.pointer("/spec/volumeName").and_then(Value::as_str) {
                // Pre-bound to a PV Stasis made: the binder completes it.
                if server.update(&format!("/api/v1/persistentvolumes/{pv}"), |v| v["status"] = json!({"phase": "Bound"})) {
                    server.update(&format!("/api/v1/namespaces/{ns}/persistentvolumeclaims/{name}"), |c| c["status"] = json!({"phase": "Bound", "accessModes": ["ReadWriteOnce"], "capacity": {"storage": "10Gi"}}));
                }
                continue;
            }
            let Some(original) = claim.pointer("/metadata/annotations/trident.netapp.io~1importOriginalName").and_then(Value::as_str) else { continue };
            let pv_name = format!("pvc-import-{ns}-{name}");
            server.seed("/api/v1/persistentvolumes", trident_pv(&pv_name, Some((&ns, &name)), original, TRIDENT_BACKEND_UUID));
            server.update(&format!("/api/v1/namespaces/{ns}/persistentvolumeclaims/{name}"), |c| {
                c["spec"]["volumeName"] = json!(pv_name);
                c["status"] = json!({"phase": "Bound", "accessModes": ["ReadWriteOnce"], "capacity": {"storage": "10Gi"}});
            });
        }
        for d in server.list("/apis/apps/v1/deployments") {
            let ns = d["metadata"]["namespace"].as_str().unwrap().to_string();
            let name = d["metadata"]["name"].as_str().unwrap().to_string();
            let want = d.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1) as usize;
            let labels = d.pointer("/spec/selector/matchLabels").cloned().unwrap_or(json!({}));
            let pods: Vec<Value> = server
                .list(&format!("/api/v1/namespaces/{ns}/pods"))
                .into_iter()
                .filter(|p| labels.as_object().unwrap().iter().all(|(k, v)| p["metadata"]["labels"][k] == *v))
                .collect();
            if pods.len() > want {
                for p in &pods[want..] {
                    let pod_name = p["metadata"]["name"].as_str().unwrap().to_string();
                    forwards.ports.lock().unwrap().remove(&pod_name);
                    if let Some(mut db) = running.remove(&pod_name) {
                        db.kill();
                    }
                    let path = format!("/api/v1/namespaces/{ns}/pods/{pod_name}");
                    let _: Value = kubelet.request(http::Request::delete(&path).body(Vec::new()).unwrap()).await.unwrap();
                }
            } else if pods.len() < want {
                let template = &d["spec"]["template"];
                let claim_name = template.pointer("/spec/volumes/0/persistentVolumeClaim/claimName").and_then(Value::as_str).unwrap();
                let volume = server
                    .get(&format!("/api/v1/namespaces/{ns}/persistentvolumeclaims/{claim_name}"))
                    .and_then(|c| c.pointer("/spec/volumeName").and_then(Value::as_str).map(String::from))
                    .and_then(|pv| server.get(&format!("/api/v1/persistentvolumes/{pv}")))
                    .and_then(|pv| pv.pointer("/spec/csi/volumeAttributes/internalName").and_then(Value::as_str).map(String::from));
                // The kubelet waits for the claim to be bound and the volume to be mounted.
                let data_dir = volume.map(|v| mounts.join(v).join("mysql")).filter(|d| d.join("mysql").exists());
                if let Some(data_dir) = data_dir {
                    serial += 1;
                    let pod_name = format!("{name}-5f6d7c8b9-{serial:05}");
                    let db = MariaDb::start(&data_dir, MariaDbOptions::default()).await.expect("mariadbd starts on the pod's volume");
                    let rs = format!("{name}-5f6d7c8b9");
                    if server.get(&format!("/apis/apps/v1/namespaces/{ns}/replicasets/{rs}")).is_none() {
                        server.seed(&format!("/apis/apps/v1/namespaces/{ns}/replicasets"), replica_set(&ns, &rs, &name));
                    }
                    let mut pod = pod(&ns, &pod_name, template.pointer("/spec/containers/0/image").and_then(Value::as_str).unwrap(), Some(("ReplicaSet", &rs)), &CLAIMS, template.pointer("/spec/containers/0/env").cloned().unwrap_or(json!([])));
                    pod["metadata"]["labels"] = template["metadata"]["labels"].clone();
                    forwards.ports.lock().unwrap().insert(pod_name.clone(), db.port());
                    running.insert(pod_name, db);
                    server.seed(&format!("/api/v1/namespaces/{ns}/pods"), pod);
                    continue;
                }
            }
            let ready = pods.len().min(want) as i64;
            let status = json!({"observedGeneration": d["metadata"]["generation"], "replicas": ready, "readyReplicas": ready, "updatedReplicas": ready, "availableReplicas": ready});
            if d.get("status") != Some(&status) && pods.len() == want {
                server.update(&format!("/apis/apps/v1/namespaces/{ns}/deployments/{name}"), |d| d["status"] = status);
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Field order is drop order: the servers (owned by the controller loop) stop before the
/// simulator's volumes are unmounted.
struct Rig {
    server: ApiServer,
    storage: Arc<OntapClient>,
    forwards: Forwards,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    background: Vec<tokio::task::JoinHandle<()>>,
    sim: SimWithMounts,
}

impl Rig {
    async fn start() -> Rig {
        stasis_scenarios::mariadb::check_prerequisites().expect("MariaDB is installed (bash ci/install.sh)");
        let sim = SimWithMounts::start(5, "admin").await.expect("simulator with FUSE mounts starts (bash ci/install.sh)");
        let (_, mount) = sim.create_volume(VOLUME, 256 << 20).await.expect("volume created and mounted");
        sim.create_volume(LOG_VOLUME, 64 << 20).await.expect("volume created and mounted");
        let mariadb = MariaDb::install_and_start(&mount.join("mysql"), PASSWORD, MariaDbOptions::default()).await.expect("mariadbd starts on the volume");
        let mut conn = mariadb.app_conn(PASSWORD, None).await.unwrap();
        conn.query_drop("CREATE DATABASE shop").await.unwrap();
        conn.query_drop("CREATE TABLE shop.orders (id INT PRIMARY KEY, item VARCHAR(40)) ENGINE=InnoDB").await.unwrap();
        conn.query_drop("INSERT INTO shop.orders VALUES (1, 'lamp'), (2, 'desk')").await.unwrap();
        conn.disconnect().await.unwrap();
        let storage = Arc::new(OntapClient::new(OntapConfig::new(sim.base_url(), "admin", "admin".to_string().into())).expect("client config"));

        let server = ApiServer::new();
        seed_cluster(&server);
        let forwards = Forwards::default();
        forwards.ports.lock().unwrap().insert(SOURCE_POD.into(), mariadb.port());
        let (client, http) = serve_http(server.clone(), "operator", forwards.clone()).await;
        let running = BTreeMap::from([(SOURCE_POD.to_string(), mariadb)]);
        let background = vec![http, tokio::spawn(controllers(server.clone(), forwards.clone(), sim.mount_root(), running))];

        // What `stasis operator` builds from OperatorWiring::in_cluster (waits shortened).
        let cluster = Arc::new(KubeCluster::new(client.clone(), Some(storage.clone() as Arc<dyn Storage>), DiscoverOptions::default()));
        let plugins = Arc::new(InClusterPlugins::new(client.clone(), storage.clone()));
        let mut restore = KubeRestore::new(client.clone(), storage.clone(), Arc::new(SystemClock));
        restore.waits = Waits { timeout: Duration::from_secs(15), poll_interval: Duration::from_millis(20) };
        let mut ctx = Context::new(client.clone(), cluster, storage.clone(), plugins, Arc::new(SystemClock));
        ctx.restore = Some(Arc::new(restore));
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
        Rig { server, storage, forwards, stop, tasks: vec![controllers, election], background, sim }
    }

    async fn wait_for(&self, path: &str, what: &str, cond: impl Fn(Option<&Value>) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let obj = self.server.get(path);
            if cond(obj.as_ref()) {
                return obj.unwrap_or(Value::Null);
            }
            assert!(tokio::time::Instant::now() < deadline, "{what}: not within 60 s; last seen {obj:#?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn final_phase(&self, path: &str) -> Value {
        self.wait_for(path, "final phase", |o| matches!(phase(o), Some("Succeeded" | "Failed"))).await
    }

    async fn no_forward_open(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.forwards.open_now.load(Ordering::SeqCst) != 0 {
            assert!(tokio::time::Instant::now() < deadline, "a port-forward is still open");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn snapshots(&self) -> Vec<String> {
        let volume = self.storage.volumes_by_name("svm0", &[VOLUME.to_string()]).await.unwrap().remove(0);
        self.storage.snapshots(&volume.uuid).await.unwrap().into_iter().map(|s| s.name).collect()
    }

    fn volumes(&self) -> BTreeMap<String, bool> {
        self.sim.sim().sim().read(|s| s.volumes.values().map(|v| (v.name.clone(), v.clone.is_some())).collect())
    }

    /// A query on the server of `pod`, straight (not through the operator's forward).
    async fn sql(&self, pod: &str, statement: &str) -> Vec<String> {
        let port = *self.forwards.ports.lock().unwrap().get(pod).unwrap_or_else(|| panic!("no server for pod {pod}"));
        let opts = mysql_async::OptsBuilder::default().ip_or_hostname("127.0.0.1").tcp_port(port).user(Some(APP_USER)).pass(Some(PASSWORD));
        let mut conn = mysql_async::Conn::new(opts).await.unwrap();
        let out: Vec<String> = conn.query(statement).await.unwrap();
        conn.disconnect().await.unwrap();
        out
    }

    fn pods(&self, namespace: &str) -> Vec<String> {
        self.server.list(&format!("/api/v1/namespaces/{namespace}/pods")).iter().map(|p| p["metadata"]["name"].as_str().unwrap().to_string()).collect()
    }

    async fn stop(self) -> ApiServer {
        self.stop.send(true).unwrap();
        for t in self.tasks {
            tokio::time::timeout(Duration::from_secs(10), t).await.expect("the operator stops").unwrap();
        }
        for t in self.background {
            t.abort();
            // The loop's servers are killed as its future is dropped, before the unmount.
            let _ = t.await;
        }
        self.server
    }
}

fn phase(obj: Option<&Value>) -> Option<&str> {
    obj?.pointer("/status/phase")?.as_str()
}

fn backup(name: &str) -> Value {
    json!({"apiVersion": "stasis.io/v1alpha1", "kind": "Backup", "metadata": {"name": name, "namespace": "shop"}, "spec": {"app": {"name": "db"}, "freezeTimeout": "10s"}})
}

fn restore(name: &str, backup: &str, target: Value) -> Value {
    json!({"apiVersion": "stasis.io/v1alpha1", "kind": "Restore", "metadata": {"name": name, "namespace": "shop"}, "spec": {"backup": backup, "target": target, "confirm": true}})
}

async fn create(client: &kube::Client, path: &str, body: Value) {
    let req = http::Request::post(path).header("content-type", "application/json").body(serde_json::to_vec(&body).unwrap()).unwrap();
    let _: Value = client.request(req).await.unwrap_or_else(|e| panic!("creating {path}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wired_operator_backs_up_and_restores_through_the_cluster_with_least_privilege() {
    let rig = Rig::start().await;
    let (user, _) = rig.server.client("user");

    // 1. A Backup: frozen through a port-forward to the pod, with the credentials its pod
    // template refers to; the app's objects kept in a ConfigMap owned by the Backup.
    create(&user, BACKUPS, backup("nightly-1")).await;
    let done = rig.final_phase(&format!("{BACKUPS}/nightly-1")).await;
    let status = &done["status"];
    assert_eq!(status["phase"], "Succeeded", "{status:#}");
    assert_eq!(status["consistency"], "application", "{status:#}");
    let point = status["consistencyPoint"].as_str().unwrap().to_string();
    let gtid = rig.sql(SOURCE_POD, "SELECT @@gtid_binlog_pos").await.remove(0);
    assert!(point.starts_with(&format!("gtid={gtid};binlog=")), "the point was read from the real server under its lock: {point}");
    assert_eq!(rig.forwards.opened.lock().unwrap().as_slice(), [SOURCE_POD], "the freeze went through the app's pod");
    let id = status["backupId"].as_str().unwrap().to_string();
    let capture = rig.server.get(&format!("/api/v1/namespaces/shop/configmaps/stasis-capture-{id}")).expect("the captured objects are kept with the Backup");
    assert_eq!(capture["metadata"]["ownerReferences"][0]["kind"], "Backup");
    assert_eq!(capture["metadata"]["ownerReferences"][0]["uid"], done["metadata"]["uid"]);
    let captured: Value = serde_json::from_str(capture["data"]["capture.json"].as_str().unwrap()).unwrap();
    let kinds: Vec<&str> = captured["kubernetes"]["objects"].as_array().unwrap().iter().map(|o| o["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ConfigMap", "PersistentVolumeClaim", "PersistentVolumeClaim", "Service", "Deployment"]);
    assert!(!capture.to_string().contains(&b64(PASSWORD)) && !capture.to_string().contains(PASSWORD), "Secrets are kept by reference only");
    assert_eq!(rig.snapshots().await, vec![status["snapshotName"].as_str().unwrap().to_string()]);
    rig.no_forward_open().await;
    // Thawed: a write goes through at once. It is after the backup: no restore may bring it.
    tokio::time::timeout(Duration::from_secs(5), rig.sql(SOURCE_POD, "INSERT INTO shop.orders VALUES (3, 'chair')")).await.expect("not blocked by a lock");

    // 2. The pod is gone when the backup reaches for it (listed, but the kubelet has no such
    // pod): Failed, naming it; no snapshot, no capture, no forward left.
    rig.forwards.gone.lock().unwrap().insert(SOURCE_POD.into());
    create(&user, BACKUPS, backup("during-outage")).await;
    let failed = rig.final_phase(&format!("{BACKUPS}/during-outage")).await;
    assert_eq!(failed["status"]["phase"], "Failed", "{:#}", failed["status"]);
    let error = failed["status"]["error"].as_str().unwrap();
    assert!(error.contains("no Ready pod") && error.contains(SOURCE_POD), "{error}");
    assert_eq!(failed["status"]["conditions"][0]["reason"], "BackupFailed");
    assert_eq!(rig.snapshots().await.len(), 1, "no snapshot of the failed backup");
    let failed_id = failed["status"]["backupId"].as_str().unwrap();
    assert!(rig.server.get(&format!("/api/v1/namespaces/shop/configmaps/stasis-capture-{failed_id}")).is_none());
    rig.no_forward_open().await;
    rig.forwards.gone.lock().unwrap().clear();

    // 3. A Restore into a new namespace: FlexClone, PVC importing it, objects re-created
    // there, verified through a port-forward to the copy's pod.
    let volumes_before = rig.volumes();
    create(&user, RESTORES, restore("to-copy", "nightly-1", json!({"mode": "NewNamespace", "namespace": "shop-copy"}))).await;
    let done = rig.final_phase(&format!("{RESTORES}/to-copy")).await;
    assert_eq!(done["status"]["phase"], "Succeeded", "{:#}", done["status"]);
    assert_eq!(done["status"]["recoveredPoint"], point.as_str());
    assert_eq!(done["status"]["targetNamespace"], "shop-copy");
    let clones: Vec<String> = rig.volumes().into_iter().filter(|(n, is_clone)| *is_clone && !volumes_before.contains_key(n)).map(|(n, _)| n).collect();
    assert_eq!(clones.len(), 2, "a FlexClone per volume: {clones:?}");
    let data_clone = clones.iter().find(|c| c.starts_with(&format!("{VOLUME}_"))).expect("the data volume's clone").clone();
    let log_clone = clones.iter().find(|c| c.starts_with(&format!("{LOG_VOLUME}_"))).expect("the log volume's clone").clone();
    let claim = rig.server.get("/api/v1/namespaces/shop-copy/persistentvolumeclaims/db-data").expect("the claim was created");
    assert_eq!(claim["metadata"]["annotations"]["trident.netapp.io/importOriginalName"], data_clone.as_str());
    assert_eq!(claim["metadata"]["annotations"]["trident.netapp.io/importBackendUUID"], TRIDENT_BACKEND_UUID);
    assert_eq!(claim["metadata"]["annotations"]["trident.netapp.io/notManaged"], "true");
    assert_eq!(claim["metadata"]["labels"]["stasis.io/restored-from-namespace"], "shop");
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "10Gi");
    let pv = rig.server.get("/api/v1/persistentvolumes/pvc-import-shop-copy-db-data").expect("Trident imported the clone");
    assert_eq!(pv["spec"]["csi"]["volumeAttributes"]["internalName"], data_clone.as_str());
    // The NFS claim: a PV on the clone's junction path, pre-bound to the new claim, Retain.
    let nfs = rig.server.get("/api/v1/persistentvolumes/stasis-shop-copy-db-log").expect("a PV on the NFS clone");
    assert_eq!(nfs["spec"]["nfs"], json!({"server": NFS_SERVER, "path": format!("/{log_clone}")}));
    assert_eq!(nfs["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    assert_eq!(nfs["spec"]["claimRef"]["namespace"], "shop-copy");
    assert_eq!(nfs["spec"]["claimRef"]["name"], "db-log");
    let log_claim = rig.server.get("/api/v1/namespaces/shop-copy/persistentvolumeclaims/db-log").unwrap();
    assert_eq!(log_claim["spec"]["volumeName"], "stasis-shop-copy-db-log");
    assert_eq!(log_claim["spec"]["storageClassName"], "");
    let copy = rig.server.get("/apis/apps/v1/namespaces/shop-copy/deployments/db").expect("the workload was re-created");
    assert_eq!(copy["metadata"]["namespace"], "shop-copy");
    assert_eq!(copy["spec"]["template"]["spec"]["containers"][0]["env"], db_env(), "the same Secret reference");
    assert!(copy["metadata"].get("uid").is_some_and(|u| u != &rig.server.get("/apis/apps/v1/namespaces/shop/deployments/db").unwrap()["metadata"]["uid"]));
    let service = rig.server.get("/api/v1/namespaces/shop-copy/services/db").expect("the Service was re-created");
    assert!(service["spec"].get("clusterIP").is_none(), "the copy gets its own address: {service:#}");
    assert!(rig.server.get("/api/v1/namespaces/shop-copy/configmaps/db-config").is_some());
    let copy_pods = rig.pods("shop-copy");
    assert_eq!(copy_pods.len(), 1, "{copy_pods:?}");
    assert!(rig.forwards.opened.lock().unwrap().contains(&copy_pods[0]), "verified through the copy's pod");
    // The copy runs on the clone: the backup's rows, not the later one; the source keeps it.
    assert_eq!(rig.sql(&copy_pods[0], "SELECT item FROM shop.orders ORDER BY id").await, ["lamp", "desk"]);
    assert_eq!(rig.sql(SOURCE_POD, "SELECT item FROM shop.orders ORDER BY id").await, ["lamp", "desk", "chair"]);
    rig.no_forward_open().await;

    // 4. The same again: the namespace now holds those objects; the Restore fails closed with
    // the list, before any clone is made.
    let volumes_before = rig.volumes();
    create(&user, RESTORES, restore("again", "nightly-1", json!({"mode": "NewNamespace", "namespace": "shop-copy"}))).await;
    let refused = rig.final_phase(&format!("{RESTORES}/again")).await;
    assert_eq!(refused["status"]["phase"], "Failed");
    let error = refused["status"]["error"].as_str().unwrap();
    assert!(error.contains("shop-copy already holds") && error.contains("ConfigMap/db-config") && error.contains("Deployment/db") && error.contains("PersistentVolumeClaim/db-data"), "{error}");
    assert_eq!(refused["status"]["conditions"][0]["reason"], "RestoreFailed");
    assert_eq!(rig.volumes(), volumes_before, "no clone was made or left");
    rig.no_forward_open().await;

    // 4b. Into a namespace where the claims never bind: after the bound wait, everything it
    // created is deleted again, and so are its clones.
    let volumes_before = rig.volumes();
    create(&user, RESTORES, restore("stuck", "nightly-1", json!({"mode": "NewNamespace", "namespace": STUCK}))).await;
    let stuck = rig.final_phase(&format!("{RESTORES}/stuck")).await;
    assert_eq!(stuck["status"]["phase"], "Failed");
    let error = stuck["status"]["error"].as_str().unwrap();
    assert!(error.contains("being bound") && error.contains(STUCK), "{error}");
    assert_eq!(rig.volumes(), volumes_before, "its clones were deleted");
    let left: Vec<String> = ["configmaps", "services", "persistentvolumeclaims", "pods"].iter().flat_map(|r| rig.server.list(&format!("/api/v1/namespaces/{STUCK}/{r}"))).map(|o| o["metadata"]["name"].to_string()).collect();
    assert!(left.is_empty(), "objects left in {STUCK}: {left:?}");
    assert!(rig.server.list(&format!("/apis/apps/v1/namespaces/{STUCK}/deployments")).is_empty());
    assert!(rig.server.get(&format!("/api/v1/persistentvolumes/stasis-{STUCK}-db-log")).is_none());
    rig.no_forward_open().await;

    // 5. In place: scaled to 0, SnapRestore, scaled back to 1, verified.
    let source = rig.server.get("/apis/apps/v1/namespaces/shop/deployments/db").unwrap();
    create(&user, RESTORES, restore("in-place", "nightly-1", json!({"mode": "InPlace"}))).await;
    let done = rig.final_phase(&format!("{RESTORES}/in-place")).await;
    assert_eq!(done["status"]["phase"], "Succeeded", "{:#}", done["status"]);
    assert_eq!(done["status"]["recoveredPoint"], point.as_str());
    let after = rig.server.get("/apis/apps/v1/namespaces/shop/deployments/db").unwrap();
    assert_eq!(after["spec"]["replicas"], 1);
    assert_eq!(after["metadata"]["generation"].as_i64(), source["metadata"]["generation"].as_i64().map(|g| g + 2), "scaled down and up again");
    let pods = rig.pods("shop");
    assert!(pods.len() == 1 && pods[0] != SOURCE_POD, "the old pod was stopped, a new one runs: {pods:?}");
    assert_eq!(rig.sql(&pods[0], "SELECT item FROM shop.orders ORDER BY id").await, ["lamp", "desk"], "the volume is back at the backup");
    rig.no_forward_open().await;

    // 6. A policy (its Backup, retention of an old one) and a DrPlan, so every rule is used.
    let mut old = backup("hourly-old");
    old["metadata"]["labels"] = json!({"stasis.io/policy": "hourly", "stasis.io/app": "shop.db"});
    old["metadata"]["finalizers"] = json!(["stasis.io/snapshots"]);
    let two_days_ago = operator::rfc3339(chrono::Utc::now() - chrono::TimeDelta::days(2));
    old["status"] = json!({"phase": "Succeeded", "backupId": "b-000000000001", "snapshotName": "stasis_b_000000000001", "svm": "svm0", "volumes": [VOLUME], "startedAt": two_days_ago});
    rig.server.seed(BACKUPS, old);
    create(&user, POLICIES, json!({"apiVersion": "stasis.io/v1alpha1", "kind": "BackupPolicy", "metadata": {"name": "hourly"},
        "spec": {"schedule": "@every 1h", "retention": {"keepLast": 1}, "selector": {"apps": [{"name": "db"}]}, "freezeTimeout": "10s"}})).await;
    let policy = rig.wait_for(&format!("{POLICIES}/hourly"), "policy scheduled", |o| o.and_then(|o| o.pointer("/status/lastBackups/0")).is_some()).await;
    let scheduled = policy["status"]["lastBackups"][0].as_str().unwrap().to_string();
    let done = rig.final_phase(&format!("{BACKUPS}/{scheduled}")).await;
    assert_eq!(done["status"]["phase"], "Succeeded", "{:#}", done["status"]);
    rig.wait_for(&format!("{BACKUPS}/hourly-old"), "retention", |o| o.is_none()).await;
    create(&user, DRPLANS, json!({"apiVersion": "stasis.io/v1alpha1", "kind": "DrPlan", "metadata": {"name": "db-dr"},
        "spec": {"app": {"name": "db"}, "destination": {"cluster": "site-b", "svm": "svm0"}}})).await;
    rig.wait_for(&format!("{DRPLANS}/db-dr"), "drplan status", |o| o.and_then(|o| o.pointer("/status/conditions/0")).is_some()).await;
    rig.no_forward_open().await;

    let server = rig.stop().await;
    let used: BTreeSet<Access> = server.log().into_iter().filter(|l| l.client == "operator").map(|l| l.access).collect();
    let (not_granted, unused) = rbac_diff(&used, &rbac_rules());
    assert!(not_granted.is_empty(), "the operator issued requests deploy/rbac.yaml does not grant: {not_granted:#?}");
    assert!(unused.is_empty(), "deploy/rbac.yaml grants what the operator never used (not least privilege): {unused:#?}");
}

/// (requests not granted, grants never used). Deployments and StatefulSets go through the
/// same code (`WorkloadKind` picks the path), so a request on one counts as used for both.
fn rbac_diff(used: &BTreeSet<Access>, granted: &BTreeSet<Access>) -> (Vec<Access>, Vec<Access>) {
    let mut both = used.clone();
    for a in used.iter().filter(|a| a.group == "apps") {
        if let Some(rest) = a.resource.strip_prefix("deployments") {
            both.insert(Access { resource: format!("statefulsets{rest}"), ..a.clone() });
        }
    }
    (used.difference(granted).cloned().collect(), granted.difference(&both).cloned().collect())
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

/// Negative control for the comparison: a verb the wired paths need, dropped from the rules,
/// is reported as not granted; a rule nobody uses is reported as unused.
#[test]
fn the_rbac_comparison_catches_a_missing_verb_and_an_unused_grant() {
    let granted = rbac_rules();
    for needed in [("create", "", "pods/portforward"), ("get", "", "pods/log"), ("update", "apps", "deployments/scale"), ("create", "", "persistentvolumes"), ("get", "", "secrets")] {
        let access = Access { verb: needed.0.into(), group: needed.1.into(), resource: needed.2.into() };
        assert!(granted.contains(&access), "deploy/rbac.yaml grants {access:?}");
        let mut fewer = granted.clone();
        fewer.remove(&access);
        let (not_granted, unused) = rbac_diff(&granted, &fewer);
        assert_eq!(not_granted, vec![access.clone()]);
        assert!(unused.is_empty());
    }
    let mut more = granted.clone();
    let extra = Access { verb: "delete".into(), group: "".into(), resource: "secrets".into() };
    assert!(!granted.contains(&extra), "Secrets are never deleted");
    more.insert(extra.clone());
    assert_eq!(rbac_diff(&granted, &more).1, vec![extra]);
}
