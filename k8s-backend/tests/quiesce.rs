//! Quiesce in the cluster over a real port-forward: kube's client speaks the WebSocket
//! port-forward protocol (`v4.channel.k8s.io`: a channel byte per message, the port in the
//! first frame of each channel) to a fake API server on 127.0.0.1 (plain HTTP/1.1 with a
//! real Upgrade), which relays the pod's port to a real MariaDB started by the test. Core's
//! MySQL plugin freezes that server through the forward while the simulator snapshots.
//! Covered: the chosen pod vanishing before the forward opens (404: the next Ready pod is
//! used), a terminating pod never chosen, the forward closed after the backup and after a
//! failed one, verification of a running server through the forward with its log.

mod support;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use mysql_async::prelude::Queryable;
use ontap_client::{OntapClient, OntapConfig};
use ontap_sim::model::cluster::{Selector, VolumeCreate};
use ontap_sim::SimConfig;
use serde_json::{json, Value};
use stasis_core::clock::SystemClock;
use stasis_core::domain::{AppKind, AppSpec, BackupState, Consistency};
use stasis_core::plugin::PluginError;
use stasis_core::plugins::mysql::{MysqlConfig, MysqlPlugin};
use stasis_core::sqlite_catalog::SqliteCatalog;
use stasis_core::workflow::{Orchestrator, SeededIds};
use stasis_k8s::quiesce::{ForwardedDb, ForwardedPlugin, PluginFactory};
use stasis_k8s::restore::{self, InClusterDb};
use stasis_k8s::workload::{WorkloadKind, WorkloadRef};
use stasis_scenarios::mariadb::{MariaDb, MariaDbOptions, APP_USER};
use tokio::net::TcpListener;

const PASSWORD: &str = "k8s-forward-pw";

/// What the fake API server answers for plain requests: (method, path, query) -> status, body
/// (a JSON string body is sent as text/plain, as the `log` subresource does).
type Answer = Arc<dyn Fn(&str, &str, &str) -> (u16, Value) + Send + Sync>;

#[derive(Clone, Default)]
struct Forwards {
    /// Pod name -> the address its database port is relayed to; a pod not here answers 404.
    pods: Arc<Mutex<BTreeMap<String, SocketAddr>>>,
    opened: Arc<Mutex<Vec<String>>>,
    open_now: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
}

struct FakeApiServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(req: Request<Incoming>, forwards: Forwards, answer: Answer) -> Result<Response<Full<Bytes>>, Infallible> {
    let (path, query) = (req.uri().path().to_string(), req.uri().query().unwrap_or_default().to_string());
    forwards.requests.lock().unwrap().push(format!("{} {path}", req.method()));
    if let Some(rest) = path.strip_suffix("/portforward") {
        let pod = rest.rsplit('/').next().unwrap_or_default().to_string();
        let port: u16 = query.split('&').find_map(|kv| kv.strip_prefix("ports=")).and_then(|p| p.parse().ok()).unwrap_or(0);
        let backend = forwards.pods.lock().unwrap().get(&pod).copied();
        let Some(backend) = backend else {
            let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": format!("pods \"{pod}\" not found"), "reason": "NotFound", "details": {"name": pod, "kind": "pods"}, "code": 404});
            return Ok(Response::builder().status(404).header("content-type", "application/json").body(Full::from(serde_json::to_vec(&body).unwrap())).unwrap());
        };
        forwards.opened.lock().unwrap().push(pod.clone());
        return Ok(support::relay::accept(req, backend, port, forwards.open_now.clone()));
    }
    let _ = req.into_body().collect().await;
    let (code, body) = answer(forwards.requests.lock().unwrap().last().unwrap().split(' ').next().unwrap(), &path, &query);
    let (content_type, bytes) = match body {
        Value::String(text) => ("text/plain", text.into_bytes()),
        other => ("application/json", serde_json::to_vec(&other).unwrap()),
    };
    Ok(Response::builder().status(code).header("content-type", content_type).body(Full::from(bytes)).unwrap())
}

async fn fake_api(forwards: Forwards, answer: Answer) -> FakeApiServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((tcp, _)) = listener.accept().await {
            let (forwards, answer) = (forwards.clone(), answer.clone());
            conns.spawn(async move {
                let service = hyper::service::service_fn(move |req| handle(req, forwards.clone(), answer.clone()));
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service).with_upgrades().await;
            });
        }
    });
    FakeApiServer { addr, task }
}

fn kube_client(addr: SocketAddr) -> kube::Client {
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    kube::Client::try_from(config).expect("a client for the fake API server")
}

fn pod(name: &str, ready: bool, terminating: bool) -> Value {
    let mut p = support::fixtures::pod("shop", name, "mariadb:10.11", Some(("StatefulSet", "db")), &[("data", &format!("data-{name}"), "/var/lib/mysql")], json!([]));
    p["metadata"]["labels"] = json!({"app": "db"});
    if !ready {
        p["status"]["conditions"] = json!([{"type": "Ready", "status": "False"}]);
    }
    if terminating {
        p["metadata"]["deletionTimestamp"] = json!("2026-11-25T10:00:30Z");
    }
    p
}

fn statefulset() -> Value {
    json!({"kind": "StatefulSet", "apiVersion": "apps/v1",
           "metadata": {"name": "db", "namespace": "shop", "uid": "6c4b2a1f-9d3e-4f7a-8b1c-2d3e4f5a6b7c", "resourceVersion": "7001", "generation": 2, "creationTimestamp": "2026-11-01T10:00:00Z"},
           "spec": {"replicas": 3, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                    "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db", "image": "mariadb:10.11"}]}}},
           "status": {"observedGeneration": 2, "replicas": 3, "readyReplicas": 2, "updatedReplicas": 3}})
}

/// Pods: db-0 Ready but gone by the time it is forwarded to, db-1 terminating, db-2 Ready.
fn answers(log: &'static str) -> Answer {
    Arc::new(move |method, path, _query| match (method, path) {
        ("GET", "/apis/apps/v1/namespaces/shop/statefulsets/db") => (200, statefulset()),
        ("GET", "/api/v1/namespaces/shop/pods") => (200, support::list("PodList", "v1", vec![pod("db-0", true, false), pod("db-1", true, true), pod("db-2", true, false), pod("db-3", false, false)])),
        ("GET", p) if p.ends_with("/log") => (200, Value::String(log.to_string())),
        _ => (404, support::status(404, "NotFound", &format!("fake API server: no answer for {method} {path}"))),
    })
}

fn factory(password: &'static str) -> PluginFactory {
    Arc::new(move |addr: SocketAddr| {
        let config = MysqlConfig {
            host: addr.ip().to_string(),
            port: addr.port(),
            user: APP_USER.into(),
            password: password.to_string().into(),
            freeze_timeout: Duration::from_secs(10),
            lock_wait_timeout: Duration::from_secs(2),
            server_control: None,
        };
        Ok(Arc::new(MysqlPlugin::new(config)?) as Arc<dyn ForwardedPlugin>)
    })
}

struct World {
    _dir: tempfile::TempDir,
    mariadb: MariaDb,
    sim: ontap_sim::RunningSim,
    orchestrator: Orchestrator,
    app: AppSpec,
    forwards: Forwards,
}

async fn world() -> World {
    stasis_scenarios::mariadb::check_prerequisites().expect("MariaDB is installed (bash ci/install.sh)");
    let dir = tempfile::tempdir().unwrap();
    let mariadb = MariaDb::install_and_start(&dir.path().join("data"), PASSWORD, MariaDbOptions::default()).await.expect("mariadbd starts");
    let mut conn = mariadb.app_conn(PASSWORD, None).await.unwrap();
    conn.query_drop("CREATE DATABASE shop").await.unwrap();
    conn.query_drop("CREATE TABLE shop.orders (id INT PRIMARY KEY, item VARCHAR(40)) ENGINE=InnoDB").await.unwrap();
    conn.query_drop("INSERT INTO shop.orders VALUES (1, 'lamp'), (2, 'desk')").await.unwrap();
    conn.disconnect().await.unwrap();

    let sim = ontap_sim::spawn(SimConfig::default()).await.expect("simulator starts");
    let req = VolumeCreate {
        name: "db_data".into(),
        svm: Selector { name: Some("svm0".into()), uuid: None },
        aggregates: vec![Selector { name: Some("aggr1".into()), uuid: None }],
        size: Some(64 << 20),
        ..Default::default()
    };
    sim.sim().transact(|s| s.create_volume(req, chrono::Utc::now())).unwrap();
    let storage = Arc::new(OntapClient::new(OntapConfig::new(sim.base_url(), "admin", "admin".to_string().into())).unwrap());
    let catalog = Arc::new(SqliteCatalog::open_in_memory().unwrap());
    let orchestrator = Orchestrator::new(storage, catalog, Arc::new(SystemClock)).with_ids(Arc::new(SeededIds::new(11)));
    let app = AppSpec { name: "shop-db".into(), kind: AppKind::Mysql, svm: "svm0".into(), volumes: vec!["db_data".into()], freeze_timeout: Duration::from_secs(10) };
    let forwards = Forwards::default();
    // db-0 is listed Ready but is gone (no relay: 404); db-1 is terminating; db-2 serves.
    forwards.pods.lock().unwrap().insert("db-1".into(), SocketAddr::from(([127, 0, 0, 1], mariadb.port())));
    forwards.pods.lock().unwrap().insert("db-2".into(), SocketAddr::from(([127, 0, 0, 1], mariadb.port())));
    World { _dir: dir, mariadb, sim, orchestrator, app, forwards }
}

fn sts() -> WorkloadRef {
    WorkloadRef { namespace: "shop".into(), kind: WorkloadKind::StatefulSet, name: "db".into() }
}

async fn gtid(mariadb: &MariaDb) -> String {
    let mut conn = mariadb.app_conn(PASSWORD, None).await.unwrap();
    let g: Option<String> = conn.query_first("SELECT @@gtid_binlog_pos").await.unwrap();
    conn.disconnect().await.unwrap();
    g.unwrap_or_default()
}

#[tokio::test]
async fn a_freeze_through_the_port_forward_skips_a_vanished_pod_and_closes_the_forward() {
    let w = world().await;
    let api = fake_api(w.forwards.clone(), answers("")).await;
    let client = kube_client(api.addr);
    let db = Arc::new(ForwardedDb::new(client.clone(), 3306, Some("db".into()), factory(PASSWORD)));
    let plugin = Arc::new(restore::KubeAppPlugin::new(client, sts(), db.clone(), restore::Destination::InPlace));

    let outcome = w.orchestrator.backup(&w.app, plugin).await.expect("backup through the forward");
    assert_eq!(outcome.record.state, BackupState::Complete);
    assert_eq!(outcome.record.consistency, Some(Consistency::Application), "{:?}", outcome.record.evidence);
    let point = outcome.record.evidence.consistency_point.clone().unwrap().0;
    assert!(point.starts_with(&format!("gtid={};binlog=", gtid(&w.mariadb).await)), "the point was read from the real server under its lock: {point}");
    let requests = w.forwards.requests.lock().unwrap().clone();
    let forward_requests: Vec<&String> = requests.iter().filter(|r| r.ends_with("/portforward")).collect();
    assert_eq!(forward_requests.first().map(|s| s.as_str()), Some("GET /api/v1/namespaces/shop/pods/db-0/portforward"), "db-0 was chosen first: {requests:?}");
    assert!(forward_requests.iter().all(|r| !r.contains("db-1") && !r.contains("db-3")), "a terminating or unready pod is never chosen: {requests:?}");
    assert!(w.forwards.opened.lock().unwrap().iter().all(|p| p == "db-2"), "the freeze went through db-2");
    assert!(db.holds_forward().await, "the forward stays open until released (the thaw may still need it)");

    db.release().await;
    assert!(!db.holds_forward().await);
    wait_until(|| w.forwards.open_now.load(Ordering::SeqCst) == 0, "every forwarded stream closed").await;
    // The lock is gone: a write goes through at once.
    let mut conn = w.mariadb.app_conn(PASSWORD, None).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), conn.query_drop("INSERT INTO shop.orders VALUES (3, 'chair')")).await.expect("not blocked by a lock").unwrap();
    conn.disconnect().await.unwrap();
    w.sim.shutdown().await;
}

#[tokio::test]
async fn a_failed_backup_closes_the_forward_and_leaves_no_lock() {
    let w = world().await;
    let api = fake_api(w.forwards.clone(), answers("")).await;
    let client = kube_client(api.addr);
    // A wrong password: the freeze fails after the forward opened.
    let db = Arc::new(ForwardedDb::new(client.clone(), 3306, None, factory("wrong-password")));
    let plugin = Arc::new(restore::KubeAppPlugin::new(client.clone(), sts(), db.clone(), restore::Destination::InPlace));
    let err = w.orchestrator.backup(&w.app, plugin).await.unwrap_err();
    assert!(err.to_string().contains("Access denied"), "{err}");
    db.release().await;
    assert!(!db.holds_forward().await);
    wait_until(|| w.forwards.open_now.load(Ordering::SeqCst) == 0, "every forwarded stream closed").await;

    w.sim.shutdown().await;
}

#[tokio::test]
async fn verification_reads_the_running_server_and_its_log_through_the_forward() {
    let w = world().await;
    const LOG: &str = "2026-11-25 10:00:01 0 [Note] InnoDB: Starting crash recovery from checkpoint LSN=46846\n2026-11-25 10:00:02 0 [Note] mariadbd: ready for connections.\n";
    let api = fake_api(w.forwards.clone(), answers(LOG)).await;
    let client = kube_client(api.addr);
    let db = ForwardedDb::new(client, 3306, Some("db".into()), factory(PASSWORD));
    let report = db.verify(&sts()).await.expect("the restored server verifies");
    assert!(report.needed_crash_recovery, "read from the container log");
    assert!(report.detail.contains("1 table(s) checked OK"), "{}", report.detail);
    assert!(report.recovered_point.0.starts_with(&format!("gtid={}", gtid(&w.mariadb).await)), "{}", report.recovered_point.0);
    let requests = w.forwards.requests.lock().unwrap().clone();
    assert!(requests.contains(&"GET /api/v1/namespaces/shop/pods/db-2/log".to_string()), "{requests:?}");
    wait_until(|| w.forwards.open_now.load(Ordering::SeqCst) == 0, "the verification's forward closed").await;

    // A damaged table fails the verification (negative control for the check itself).
    let mut conn = w.mariadb.app_conn(PASSWORD, None).await.unwrap();
    conn.query_drop("CREATE TABLE shop.notes (id INT) ENGINE=MyISAM").await.unwrap();
    conn.disconnect().await.unwrap();
    let myd = w.mariadb.data_dir().join("shop").join("notes.MYI");
    std::fs::write(&myd, b"not an index").unwrap();
    let err = db.verify(&sts()).await.unwrap_err();
    assert!(matches!(err, PluginError::Verification(_) | PluginError::App(_)), "{err}");
    w.sim.shutdown().await;
}

async fn wait_until(mut cond: impl FnMut() -> bool, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "{what} did not happen within 10 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
