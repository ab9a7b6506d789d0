//! SnapMirror between two simulators over real HTTP on 127.0.0.1: peering, relationship
//! states, incremental transfers, atomicity under faults, read-only DP volumes, break with the
//! source gone, resync reverting, and reverse resync. What is asserted is ONTAP's behaviour.

use std::time::{Duration, Instant};

use ontap_sim::{spawn, ClusterConfig, RunningSim, SimConfig};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const MIB: u64 = 1024 * 1024;
const PASSPHRASE: &str = "dr-test-passphrase";

#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn new(sim: &RunningSim) -> Self {
        Client { http: reqwest::Client::new(), base: sim.base_url() }
    }

    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> (StatusCode, Value) {
        let mut rb = self.http.request(method, format!("{}{}", self.base, path)).basic_auth("admin", Some("admin"));
        if let Some(body) = body {
            rb = rb.json(body);
        }
        let response = rb.send().await.expect("request failed");
        let status = response.status();
        let bytes = response.bytes().await.expect("body");
        (status, if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) })
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self.call(Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    /// A write that must end in a successful job (or answer at once); returns the final body.
    async fn write_ok(&self, method: Method, path: &str, body: Value) -> Value {
        let (status, answer) = self.call(method.clone(), path, Some(&body)).await;
        assert!(status.is_success(), "{method} {path} {body}: {status} {answer}");
        if let Some(job) = answer["job"]["uuid"].as_str() {
            let job = self.wait_job(job).await;
            assert_eq!(job["state"], "success", "{method} {path} {body}: job {job}");
        }
        answer
    }

    /// A write whose job (or answer) must fail: returns the ONTAP error code.
    async fn write_err(&self, method: Method, path: &str, body: Value) -> (u64, String) {
        let (status, answer) = self.call(method.clone(), path, Some(&body)).await;
        if let Some(job) = answer["job"]["uuid"].as_str() {
            let job = self.wait_job(job).await;
            assert_eq!(job["state"], "failure", "{method} {path}: expected failure, job {job}");
            return (job["code"].as_u64().unwrap(), job["message"].as_str().unwrap().to_string());
        }
        assert!(status.is_client_error() || status.is_server_error(), "{method} {path}: expected an error, got {status} {answer}");
        (answer["error"]["code"].as_str().unwrap().parse().unwrap(), answer["error"]["message"].as_str().unwrap().to_string())
    }

    async fn wait_job(&self, uuid: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let job = self.get(&format!("/api/cluster/jobs/{uuid}")).await;
            if job["state"] == "success" || job["state"] == "failure" {
                return job;
            }
            assert!(Instant::now() < deadline, "job {uuid} did not end: {job}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn relationship(&self, uuid: &str) -> Value {
        self.get(&format!("/api/snapmirror/relationships/{uuid}?fields=*")).await
    }

    /// Wait until the relationship's last transfer has ended; returns the relationship.
    async fn wait_idle(&self, uuid: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let rel = self.relationship(uuid).await;
            let state = rel["transfer"]["state"].as_str().unwrap_or("none");
            if !matches!(state, "queued" | "transferring") {
                return rel;
            }
            assert!(Instant::now() < deadline, "transfer did not end: {rel}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn volume_uuid(&self, svm: &str, name: &str) -> String {
        let body = self.get(&format!("/api/storage/volumes?name={name}&svm.name={svm}")).await;
        body["records"][0]["uuid"].as_str().unwrap_or_else(|| panic!("no volume {svm}:{name}: {body}")).to_string()
    }

    async fn put_file(&self, volume: &str, path: &str, data: &[u8]) -> StatusCode {
        let response = self.http.put(format!("{}/sim/v1/volumes/{volume}/files/{path}", self.base)).basic_auth("admin", Some("admin")).body(data.to_vec()).send().await.unwrap();
        response.status()
    }

    async fn write_at(&self, volume: &str, path: &str, offset: u64, data: &[u8]) -> StatusCode {
        let response = self.http.put(format!("{}/sim/v1/volumes/{volume}/files/{path}?offset={offset}", self.base)).basic_auth("admin", Some("admin")).body(data.to_vec()).send().await.unwrap();
        response.status()
    }

    async fn read_file(&self, volume: &str, path: &str) -> Vec<u8> {
        let response = self.http.get(format!("{}/sim/v1/volumes/{volume}/files/{path}", self.base)).basic_auth("admin", Some("admin")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.bytes().await.unwrap().to_vec()
    }

    async fn snapshot_names(&self, volume: &str) -> Vec<String> {
        let body = self.get(&format!("/api/storage/volumes/{volume}/snapshots")).await;
        body["records"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap().to_string()).collect()
    }
}

/// Two clusters, A (svm0) and B (svm1), peered both ways, with svm0 and svm1 peered.
struct Sites {
    a: RunningSim,
    b: RunningSim,
    ca: Client,
    cb: Client,
}

async fn cluster(name: &str, svm: &str) -> RunningSim {
    let config = SimConfig { cluster: ClusterConfig { name: name.into(), svms: vec![svm.into()], seed: name.len() as u64 * 7919, ..ClusterConfig::default() }, ..SimConfig::default() };
    spawn(config).await.unwrap()
}

async fn peer_clusters(ca: &Client, a: &RunningSim, cb: &Client, b: &RunningSim) {
    let (status, body) = ca.call(Method::POST, "/api/cluster/peers", Some(&json!({"remote": {"ip_addresses": [b.addr().to_string()]}, "authentication": {"passphrase": PASSPHRASE}}))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = cb.call(Method::POST, "/api/cluster/peers", Some(&json!({"remote": {"ip_addresses": [a.addr().to_string()]}, "authentication": {"passphrase": PASSPHRASE}}))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

async fn sites() -> Sites {
    let a = cluster("sim-a", "svm0").await;
    let b = cluster("sim-b", "svm1").await;
    let (ca, cb) = (Client::new(&a), Client::new(&b));
    peer_clusters(&ca, &a, &cb, &b).await;
    ca.write_ok(Method::POST, "/api/svm/peers", json!({"svm": {"name": "svm0"}, "peer": {"svm": {"name": "svm1"}, "cluster": {"name": "sim-b"}}, "applications": ["snapmirror"]})).await;
    let pending = cb.get("/api/svm/peers?fields=state").await;
    let uuid = pending["records"][0]["uuid"].as_str().unwrap().to_string();
    cb.write_ok(Method::PATCH, &format!("/api/svm/peers/{uuid}"), json!({"state": "peered"})).await;
    Sites { a, b, ca, cb }
}

impl Sites {
    async fn source_volume(&self, name: &str) -> String {
        self.ca.write_ok(Method::POST, "/api/storage/volumes", json!({"name": name, "svm": {"name": "svm0"}, "aggregates": [{"name": "aggr1"}], "size": 64 * MIB})).await;
        self.ca.volume_uuid("svm0", name).await
    }

    /// A relationship svm0:`name` -> svm1:`name`_dst (destination created by the request).
    async fn relationship(&self, name: &str, policy: &str) -> String {
        self.cb
            .write_ok(
                Method::POST,
                "/api/snapmirror/relationships",
                json!({"source": {"path": format!("svm0:{name}")}, "destination": {"path": format!("svm1:{name}_dst")}, "policy": {"name": policy}, "create_destination": {"enabled": true}}),
            )
            .await;
        let body = self.cb.get(&format!("/api/snapmirror/relationships?destination.path=svm1:{name}_dst")).await;
        body["records"][0]["uuid"].as_str().expect("relationship listed on the destination").to_string()
    }

    async fn transfer(&self, rel: &str, body: Value) -> Value {
        let (status, answer) = self.cb.call(Method::POST, &format!("/api/snapmirror/relationships/{rel}/transfers"), Some(&body)).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        self.cb.wait_idle(rel).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn peering_needs_both_sides_and_matching_passphrases() {
    let a = cluster("sim-a", "svm0").await;
    let b = cluster("sim-b", "svm1").await;
    let c = cluster("sim-c", "svm2").await;
    let (ca, cb, cc) = (Client::new(&a), Client::new(&b), Client::new(&c));
    // One side only: pending.
    let (status, body) = ca.call(Method::POST, "/api/cluster/peers", Some(&json!({"remote": {"ip_addresses": [b.addr().to_string()]}, "authentication": {"passphrase": PASSPHRASE}}))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let uuid = body["records"][0]["uuid"].as_str().unwrap().to_string();
    let peer = ca.get(&format!("/api/cluster/peers/{uuid}?fields=*")).await;
    assert_eq!((peer["name"].as_str(), peer["status"]["state"].as_str()), (Some("sim-b"), Some("pending")));
    // The other side with a wrong passphrase is refused, and records nothing.
    let (code, _) = cb.write_err(Method::POST, "/api/cluster/peers", json!({"remote": {"ip_addresses": [a.addr().to_string()]}, "authentication": {"passphrase": "not-the-same-one"}})).await;
    assert_eq!(code, 2);
    assert_eq!(cb.get("/api/cluster/peers").await["num_records"], 0);
    // Too short, and self-peering.
    let (code, _) = cc.write_err(Method::POST, "/api/cluster/peers", json!({"remote": {"ip_addresses": [a.addr().to_string()]}, "authentication": {"passphrase": "short"}})).await;
    assert_eq!(code, 4653236);
    let (code, _) = ca.write_err(Method::POST, "/api/cluster/peers", json!({"remote": {"ip_addresses": [a.addr().to_string()]}, "authentication": {"passphrase": PASSPHRASE}})).await;
    assert_eq!(code, 4653058);
    // The right one: available on both.
    let (status, body) = cb.call(Method::POST, "/api/cluster/peers", Some(&json!({"remote": {"ip_addresses": [a.addr().to_string()]}, "authentication": {"passphrase": PASSPHRASE}}))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(ca.get(&format!("/api/cluster/peers/{uuid}?fields=status")).await["status"]["state"], "available");
    assert_eq!(cb.get("/api/cluster/peers?fields=status,name").await["records"][0]["status"]["state"], "available");
    // A generated passphrase, the other side offering it.
    let (status, body) = cc.call(Method::POST, "/api/cluster/peers", Some(&json!({"authentication": {"generate_passphrase": true}}))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let generated = body["records"][0]["authentication"]["passphrase"].as_str().expect("generated passphrase shown once").to_string();
    let (status, body) = ca.call(Method::POST, "/api/cluster/peers", Some(&json!({"remote": {"ip_addresses": [c.addr().to_string()]}, "authentication": {"passphrase": generated}}))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let on_c = cc.get("/api/cluster/peers?fields=name,status").await;
    assert_eq!((on_c["records"][0]["name"].as_str(), on_c["records"][0]["status"]["state"].as_str()), (Some("sim-a"), Some("available")));
    // An address nobody answers at.
    let (code, _) = cb.write_err(Method::POST, "/api/cluster/peers", json!({"remote": {"ip_addresses": ["127.0.0.1:1"]}, "authentication": {"passphrase": PASSPHRASE}})).await;
    assert_eq!(code, 4653215);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn svm_peering_is_required_and_must_be_accepted() {
    let a = cluster("sim-a", "svm0").await;
    let b = cluster("sim-b", "svm1").await;
    let (ca, cb) = (Client::new(&a), Client::new(&b));
    // No cluster peer yet.
    let (code, _) = ca.write_err(Method::POST, "/api/svm/peers", json!({"svm": {"name": "svm0"}, "peer": {"svm": {"name": "svm1"}, "cluster": {"name": "sim-b"}}})).await;
    assert_eq!(code, 26345581);
    peer_clusters(&ca, &a, &cb, &b).await;
    cb.write_ok(Method::POST, "/api/storage/volumes", json!({"name": "v_dst", "svm": {"name": "svm1"}, "aggregates": [{"name": "aggr1"}], "size": 64 * MIB, "type": "dp"})).await;
    ca.write_ok(Method::POST, "/api/storage/volumes", json!({"name": "v", "svm": {"name": "svm0"}, "aggregates": [{"name": "aggr1"}], "size": 64 * MIB})).await;
    let create = json!({"source": {"path": "svm0:v"}, "destination": {"path": "svm1:v_dst"}});
    // Clusters peered, SVMs not: refused.
    let (code, message) = cb.write_err(Method::POST, "/api/snapmirror/relationships", create.clone()).await;
    assert_eq!(code, 13303925, "{message}");
    ca.write_ok(Method::POST, "/api/svm/peers", json!({"svm": {"name": "svm0"}, "peer": {"svm": {"name": "svm1"}, "cluster": {"name": "sim-b"}}})).await;
    let on_a = ca.get("/api/svm/peers?fields=*").await;
    let on_b = cb.get("/api/svm/peers?fields=*").await;
    assert_eq!(on_a["records"][0]["state"], "initiated");
    assert_eq!(on_b["records"][0]["state"], "pending");
    assert_eq!(on_b["records"][0]["peer"]["cluster"]["name"], "sim-a");
    assert_eq!(on_a["records"][0]["uuid"], on_b["records"][0]["uuid"]);
    // Initiated, not accepted: still refused.
    let (code, _) = cb.write_err(Method::POST, "/api/snapmirror/relationships", create.clone()).await;
    assert_eq!(code, 13303925);
    let uuid = on_b["records"][0]["uuid"].as_str().unwrap();
    cb.write_ok(Method::PATCH, &format!("/api/svm/peers/{uuid}"), json!({"state": "peered"})).await;
    assert_eq!(ca.get(&format!("/api/svm/peers/{uuid}")).await["state"], "peered");
    cb.write_ok(Method::POST, "/api/snapmirror/relationships", create.clone()).await;
    // One relationship per destination; a read-write destination is refused.
    let (code, _) = cb.write_err(Method::POST, "/api/snapmirror/relationships", create).await;
    assert_eq!(code, 6619637);
    cb.write_ok(Method::POST, "/api/storage/volumes", json!({"name": "rw_dst", "svm": {"name": "svm1"}, "aggregates": [{"name": "aggr1"}], "size": 64 * MIB})).await;
    let (code, _) = cb.write_err(Method::POST, "/api/snapmirror/relationships", json!({"source": {"path": "svm0:v"}, "destination": {"path": "svm1:rw_dst"}})).await;
    assert_eq!(code, 6619546);
    let (code, _) = cb.write_err(Method::POST, "/api/snapmirror/relationships", json!({"source": {"path": "svm0v"}, "destination": {"path": "svm1:rw_dst"}})).await;
    assert_eq!(code, 13303852);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn initialize_update_break_with_incremental_transfers() {
    let s = sites().await;
    let src = s.source_volume("app").await;
    let block = |seed: u8| vec![seed; 4096];
    let big: Vec<u8> = (0..256).flat_map(|i| block(i as u8)).collect();
    assert_eq!(s.ca.put_file(&src, "data/big.dat", &big).await, StatusCode::NO_CONTENT);
    s.ca.write_ok(Method::POST, &format!("/api/storage/volumes/{src}/snapshots"), json!({"name": "backup_1"})).await;
    let rel = s.relationship("app", "MirrorAllSnapshots").await;
    let r = s.cb.relationship(&rel).await;
    assert_eq!((r["state"].as_str(), r["healthy"].as_bool()), (Some("uninitialized"), Some(true)), "{r}");
    assert_eq!(r["source"]["path"], "svm0:app");
    assert_eq!(r["source"]["cluster"]["name"], "sim-a");
    assert_eq!(r["policy"]["name"], "MirrorAllSnapshots");
    let dst = s.cb.volume_uuid("svm1", "app_dst").await;
    assert_eq!(s.cb.get(&format!("/api/storage/volumes/{dst}?fields=type")).await["type"], "dp");

    // Initialize (PATCH state): the baseline carries every block once.
    s.cb.write_ok(Method::PATCH, &format!("/api/snapmirror/relationships/{rel}"), json!({"state": "snapmirrored"})).await;
    let r = s.cb.wait_idle(&rel).await;
    assert_eq!(r["state"], "snapmirrored", "{r}");
    assert_eq!(r["transfer"]["state"], "success");
    assert_eq!(r["last_transfer_type"], "initialize");
    let baseline = r["transfer"]["bytes_transferred"].as_u64().unwrap();
    assert!((256 * 4096..256 * 4096 + 64 * 1024).contains(&baseline), "baseline {baseline}");
    assert_eq!(s.cb.read_file(&dst, "data/big.dat").await, big);
    let snaps = s.cb.snapshot_names(&dst).await;
    assert!(snaps.contains(&"backup_1".to_string()) && snaps.iter().any(|n| n.starts_with("snapmirror.")), "{snaps:?}");
    assert!(r["exported_snapshot"].as_str().unwrap().starts_with("snapmirror."));
    assert!(r["lag_time"].as_str().unwrap().starts_with("PT"));

    // Read-only while mirrored: the data plane and snapshot creates are refused.
    assert_eq!(s.cb.put_file(&dst, "data/big.dat", b"nope").await, StatusCode::BAD_REQUEST);
    let (code, _) = s.cb.write_err(Method::POST, &format!("/api/storage/volumes/{dst}/snapshots"), json!({"name": "mine"})).await;
    assert_eq!(code, 1638461);

    // Update carrying a named snapshot: only the 3 changed blocks cross.
    let mut changed = big.clone();
    for i in [3usize, 100, 200] {
        changed[i * 4096..(i + 1) * 4096].copy_from_slice(&block(0xEE - i as u8));
        assert_eq!(s.ca.write_at(&src, "data/big.dat", i as u64 * 4096, &block(0xEE - i as u8)).await, StatusCode::NO_CONTENT);
    }
    s.ca.write_ok(Method::POST, &format!("/api/storage/volumes/{src}/snapshots"), json!({"name": "backup_2"})).await;
    let r = s.transfer(&rel, json!({"source_snapshot": "backup_2"})).await;
    assert_eq!((r["transfer"]["state"].as_str(), r["exported_snapshot"].as_str()), (Some("success"), Some("backup_2")), "{r}");
    let bytes = r["transfer"]["bytes_transferred"].as_u64().unwrap();
    assert!((3 * 4096..3 * 4096 + 8192).contains(&bytes), "incremental update sent {bytes} bytes");
    assert_eq!(s.cb.read_file(&dst, "data/big.dat").await, changed);
    assert_eq!(r["last_transfer_type"], "update");
    let transfers = s.cb.get(&format!("/api/snapmirror/relationships/{rel}/transfers?fields=*")).await;
    assert_eq!(transfers["num_records"], 2);

    // Nothing changed: an update creates a snapshot and sends (almost) nothing.
    let r = s.transfer(&rel, json!({})).await;
    assert!(r["transfer"]["bytes_transferred"].as_u64().unwrap() < 4096, "{r}");

    // Pause refuses updates; resume allows them again.
    s.cb.write_ok(Method::PATCH, &format!("/api/snapmirror/relationships/{rel}"), json!({"state": "paused"})).await;
    let (code, _) = s.cb.write_err(Method::POST, &format!("/api/snapmirror/relationships/{rel}/transfers"), json!({})).await;
    assert_eq!(code, 13303844);
    s.cb.write_ok(Method::PATCH, &format!("/api/snapmirror/relationships/{rel}"), json!({"state": "snapmirrored"})).await;
    assert_eq!(s.cb.relationship(&rel).await["state"], "snapmirrored");

    // Break: the destination becomes read-write at its newest snapshot.
    s.cb.write_ok(Method::PATCH, &format!("/api/snapmirror/relationships/{rel}"), json!({"state": "broken_off"})).await;
    let r = s.cb.relationship(&rel).await;
    assert_eq!(r["state"], "broken_off");
    assert_eq!(s.cb.get(&format!("/api/storage/volumes/{dst}?fields=type")).await["type"], "rw");
    assert_eq!(s.cb.put_file(&dst, "written_on_b.txt", b"site B").await, StatusCode::NO_CONTENT);
    // Updates need a resync first.
    let (code, _) = s.cb.write_err(Method::POST, &format!("/api/snapmirror/relationships/{rel}/transfers"), json!({})).await;
    assert_eq!(code, 13303844);
    drop(s.a);
}

impl Sites {
    /// Source volume `name` with `a.txt` = `content`, a relationship to svm1, initialized.
    async fn mirrored(&self, name: &str, content: &[u8]) -> (String, String, String) {
        let src = self.source_volume(name).await;
        assert_eq!(self.ca.put_file(&src, "a.txt", content).await, StatusCode::NO_CONTENT);
        let rel = self.relationship(name, "MirrorAllSnapshots").await;
        self.cb.write_ok(Method::PATCH, &format!("/api/snapmirror/relationships/{rel}"), json!({"state": "snapmirrored"})).await;
        let r = self.cb.wait_idle(&rel).await;
        assert_eq!(r["state"], "snapmirrored", "{r}");
        let dst = self.cb.volume_uuid("svm1", &format!("{name}_dst")).await;
        (src, rel, dst)
    }

    async fn add_fault(&self, client: &Client, rule: Value) {
        let (status, body) = client.call(Method::POST, "/sim/v1/faults", Some(&rule)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn interrupted_or_failed_transfers_leave_the_destination_at_its_last_snapshot() {
    let s = sites().await;
    let (src, rel, dst) = s.mirrored("app", b"version 1").await;
    let before = s.cb.snapshot_names(&dst).await;
    let exported = s.cb.relationship(&rel).await["exported_snapshot"].clone();
    s.ca.put_file(&src, "a.txt", &vec![b'2'; 64 * 1024]).await;
    s.ca.put_file(&src, "b.txt", b"new file").await;

    // The link goes down half-way through the stream.
    s.add_fault(&s.ca, json!({"method": "POST", "path": "/sim/v1/intercluster/volumes/*/stream", "action": {"kind": "drop"}, "count": 1})).await;
    let r = s.transfer(&rel, json!({})).await;
    assert_eq!(r["transfer"]["state"], "failed", "{r}");
    assert_eq!(r["healthy"], false);
    assert!(r["unhealthy_reason"][0]["message"].as_str().unwrap().contains("interrupted"), "{r}");
    assert!(r["transfer"]["bytes_transferred"].as_u64().unwrap() > 0, "half the stream arrived: {r}");
    assert_eq!(r["exported_snapshot"], exported);
    assert_eq!(s.cb.read_file(&dst, "a.txt").await, b"version 1");
    assert_eq!(s.cb.snapshot_names(&dst).await, before);
    let (status, _) = s.cb.call(Method::GET, &format!("/sim/v1/volumes/{dst}/files/b.txt"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing of the cut transfer may show");

    // The source refuses the transfer outright.
    s.add_fault(&s.ca, json!({"method": "POST", "path": "/sim/v1/intercluster/volumes/*/stream", "action": {"kind": "error", "status": 503, "code": 13303844, "message": "injected transfer failure"}, "count": 1})).await;
    let r = s.transfer(&rel, json!({})).await;
    assert_eq!((r["transfer"]["state"].as_str(), r["healthy"].as_bool()), (Some("failed"), Some(false)), "{r}");
    assert_eq!(s.cb.read_file(&dst, "a.txt").await, b"version 1");
    let failed = s.cb.get(&format!("/api/snapmirror/relationships/{rel}/transfers/{}?fields=*", r["transfer"]["uuid"].as_str().unwrap())).await;
    assert_eq!(failed["error_info"]["message"], "injected transfer failure");

    // The destination cluster down: the client gets ONTAP's error, nothing changes.
    s.add_fault(&s.cb, json!({"path": "/api/snapmirror/**", "action": {"kind": "error", "status": 503, "code": 13303816}, "count": 1})).await;
    let (code, _) = s.cb.write_err(Method::POST, &format!("/api/snapmirror/relationships/{rel}/transfers"), json!({})).await;
    assert_eq!(code, 13303816);

    // Healed: the next update brings everything, and the relationship is healthy again.
    let r = s.transfer(&rel, json!({})).await;
    assert_eq!((r["transfer"]["state"].as_str(), r["healthy"].as_bool()), (Some("success"), Some(true)), "{r}");
    assert!(r.get("unhealthy_reason").is_none());
    assert_eq!(s.cb.read_file(&dst, "a.txt").await, vec![b'2'; 64 * 1024]);
    assert_eq!(s.cb.read_file(&dst, "b.txt").await, b"new file");
    // The source keeps only the common update snapshot and the newest (the failed one's went).
    let source_sm: Vec<String> = s.ca.snapshot_names(&src).await.into_iter().filter(|n| n.starts_with("snapmirror.")).collect();
    assert_eq!(source_sm.len(), 2, "{source_sm:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn break_needs_no_source_and_resync_needs_it() {
    let s = sites().await;
    let (_src, rel, dst) = s.mirrored("app", b"version 1").await;
    let Sites { a, b: _b, ca: _, cb } = s;
    a.shutdown().await;
    // Site A is gone: the break is local to B.
    cb.write_ok(Method::PATCH, &format!("/api/snapmirror/relationships/{rel}"), json!({"state": "broken_off"})).await;
    assert_eq!(cb.relationship(&rel).await["state"], "broken_off");
    assert_eq!(cb.read_file(&dst, "a.txt").await, b"version 1");
    assert_eq!(cb.put_file(&dst, "a.txt", b"served from B").await, StatusCode::NO_CONTENT);
    // Resync must reach the source: the job fails and nothing changes.
    let (code, _) = cb.write_err(Method::PATCH, &format!("/api/snapmirror/relationships/{rel}"), json!({"state": "snapmirrored"})).await;
    assert_eq!(code, 4653215);
    assert_eq!(cb.relationship(&rel).await["state"], "broken_off");
    assert_eq!(cb.read_file(&dst, "a.txt").await, b"served from B");
    assert_eq!(cb.get(&format!("/api/storage/volumes/{dst}?fields=type")).await["type"], "rw");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn break_restores_a_named_snapshot_and_resync_reverts_to_the_common_one() {
    let s = sites().await;
    let (src, rel, dst) = s.mirrored("app", b"version 1").await;
    s.ca.write_ok(Method::POST, &format!("/api/storage/volumes/{src}/snapshots"), json!({"name": "app_consistent_1"})).await;
    s.ca.put_file(&src, "a.txt", b"version 2").await;
    s.transfer(&rel, json!({})).await;
    assert_eq!(s.cb.read_file(&dst, "a.txt").await, b"version 2");
    // Unplanned failover to the app-consistent snapshot, inside the break.
    s.cb.write_ok(Method::PATCH, &format!("/api/snapmirror/relationships/{rel}"), json!({"state": "broken_off", "restore_to_snapshot": "app_consistent_1"})).await;
    assert_eq!(s.cb.read_file(&dst, "a.txt").await, b"version 1");
    s.cb.put_file(&dst, "only_on_b.txt", b"diverged").await;
    s.ca.put_file(&src, "a.txt", b"version 3").await;
    // Resync: B's own writes are discarded, it reverts to the common snapshot and catches up.
    s.cb.write_ok(Method::PATCH, &format!("/api/snapmirror/relationships/{rel}"), json!({"state": "snapmirrored"})).await;
    let r = s.cb.wait_idle(&rel).await;
    assert_eq!((r["state"].as_str(), r["last_transfer_type"].as_str()), (Some("snapmirrored"), Some("resync")), "{r}");
    assert_eq!(s.cb.get(&format!("/api/storage/volumes/{dst}?fields=type")).await["type"], "dp");
    assert_eq!(s.cb.read_file(&dst, "a.txt").await, b"version 3");
    let (status, _) = s.cb.call(Method::GET, &format!("/sim/v1/volumes/{dst}/files/only_on_b.txt"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // An invalid transition and an unknown state are ONTAP errors.
    let (code, _) = s.cb.write_err(Method::PATCH, &format!("/api/snapmirror/relationships/{rel}"), json!({"state": "in_sync"})).await;
    assert_eq!(code, 13303831);
    let (code, _) = s.cb.write_err(Method::PATCH, &format!("/api/snapmirror/relationships/{rel}"), json!({"state": "sideways"})).await;
    assert_eq!(code, 13303817);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reverse_resync_fails_back_and_forth() {
    let s = sites().await;
    let (src, rel, dst) = s.mirrored("app", b"version 1").await;
    // Failover: break on B, B serves and diverges.
    s.cb.write_ok(Method::PATCH, &format!("/api/snapmirror/relationships/{rel}"), json!({"state": "broken_off"})).await;
    s.cb.put_file(&dst, "a.txt", b"written at B").await;
    s.cb.put_file(&dst, "new_on_b.txt", b"B").await;
    s.ca.put_file(&src, "a.txt", b"lost at A").await;
    // Swapped paths on anything but the relationship's own are refused.
    let (code, _) = s.cb.write_err(Method::PATCH, &format!("/api/snapmirror/relationships/{rel}"), json!({"source": {"path": "svm1:app_dst"}, "destination": {"path": "svm0:other"}, "state": "snapmirrored"})).await;
    assert_eq!(code, 13304120);
    // Reverse resync: the relationship moves to A, A reverts to the common snapshot and
    // receives B's data; B stays read-write.
    s.cb.write_ok(Method::PATCH, &format!("/api/snapmirror/relationships/{rel}"), json!({"source": {"path": "svm1:app_dst"}, "destination": {"path": "svm0:app"}, "state": "snapmirrored"})).await;
    assert_eq!(s.cb.get("/api/snapmirror/relationships").await["num_records"], 0);
    let on_a = s.ca.get("/api/snapmirror/relationships?fields=*").await;
    assert_eq!(on_a["num_records"], 1, "{on_a}");
    assert_eq!((on_a["records"][0]["source"]["path"].as_str(), on_a["records"][0]["destination"]["path"].as_str()), (Some("svm1:app_dst"), Some("svm0:app")));
    let back = on_a["records"][0]["uuid"].as_str().unwrap().to_string();
    let r = s.ca.wait_idle(&back).await;
    assert_eq!(r["state"], "snapmirrored", "{r}");
    assert_eq!(s.ca.get(&format!("/api/storage/volumes/{src}?fields=type")).await["type"], "dp");
    assert_eq!(s.cb.get(&format!("/api/storage/volumes/{dst}?fields=type")).await["type"], "rw");
    assert_eq!(s.ca.read_file(&src, "a.txt").await, b"written at B");
    assert_eq!(s.ca.read_file(&src, "new_on_b.txt").await, b"B");

    // Planned switch back: final update, break on A, reverse again from A.
    s.cb.put_file(&dst, "a.txt", b"last write at B").await;
    let (status, body) = s.ca.call(Method::POST, &format!("/api/snapmirror/relationships/{back}/transfers"), Some(&json!({}))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    s.ca.wait_idle(&back).await;
    s.ca.write_ok(Method::PATCH, &format!("/api/snapmirror/relationships/{back}"), json!({"state": "broken_off"})).await;
    s.ca.write_ok(Method::PATCH, &format!("/api/snapmirror/relationships/{back}"), json!({"source": {"path": "svm0:app"}, "destination": {"path": "svm1:app_dst"}, "state": "snapmirrored"})).await;
    let r = s.cb.wait_idle(&back).await;
    assert_eq!(r["state"], "snapmirrored", "{r}");
    assert_eq!(s.ca.read_file(&src, "a.txt").await, b"last write at B");
    assert_eq!(s.cb.read_file(&dst, "a.txt").await, b"last write at B");
    assert_eq!(s.ca.put_file(&src, "a.txt", b"A serves again").await, StatusCode::NO_CONTENT);
    assert_eq!(s.cb.put_file(&dst, "a.txt", b"no").await, StatusCode::BAD_REQUEST, "B is a read-only mirror again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_acknowledges_a_write_only_once_both_sides_have_it() {
    let s = sites().await;
    let src = s.source_volume("sync").await;
    s.ca.put_file(&src, "a.txt", b"baseline").await;
    let rel = s.relationship("sync", "Sync").await;
    // A Sync relationship initializes to in_sync, not snapmirrored.
    let (code, _) = s.cb.write_err(Method::PATCH, &format!("/api/snapmirror/relationships/{rel}"), json!({"state": "snapmirrored"})).await;
    assert_eq!(code, 13303831);
    s.cb.write_ok(Method::PATCH, &format!("/api/snapmirror/relationships/{rel}"), json!({"state": "in_sync"})).await;
    let r = s.cb.wait_idle(&rel).await;
    assert_eq!(r["state"], "in_sync", "{r}");
    let dst = s.cb.volume_uuid("svm1", "sync_dst").await;
    // Every acknowledged write is on B already, over REST and in-process, with no transfer.
    for i in 0..5 {
        let data = format!("write {i}");
        assert_eq!(s.ca.put_file(&src, "a.txt", data.as_bytes()).await, StatusCode::NO_CONTENT);
        assert_eq!(s.cb.read_file(&dst, "a.txt").await, data.as_bytes());
    }
    s.a.sim().write_file(&src, "b.txt", 0, b"in-process write").unwrap();
    assert_eq!(s.cb.read_file(&dst, "b.txt").await, b"in-process write");
    // Negative control: an async mirror does not have the write until a transfer.
    let (asrc, _arel, adst) = s.mirrored("async", b"v1").await;
    s.ca.put_file(&asrc, "a.txt", b"v2").await;
    assert_eq!(s.cb.read_file(&adst, "a.txt").await, b"v1");
    // Failover loses nothing: the break keeps the last acknowledged write.
    s.ca.put_file(&src, "a.txt", b"last acknowledged").await;
    s.cb.write_ok(Method::PATCH, &format!("/api/snapmirror/relationships/{rel}"), json!({"state": "broken_off"})).await;
    assert_eq!(s.cb.read_file(&dst, "a.txt").await, b"last acknowledged");
    // Broken off, B refuses forwarded writes: Sync lets the source go on, out of sync.
    assert_eq!(s.ca.put_file(&src, "a.txt", b"after the break").await, StatusCode::NO_CONTENT);
    assert_eq!(s.cb.read_file(&dst, "a.txt").await, b"last acknowledged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn strict_sync_fails_a_write_the_destination_did_not_take() {
    let s = sites().await;
    let src = s.source_volume("strict").await;
    s.ca.put_file(&src, "a.txt", b"baseline").await;
    let rel = s.relationship("strict", "StrictSync").await;
    s.cb.write_ok(Method::PATCH, &format!("/api/snapmirror/relationships/{rel}"), json!({"state": "in_sync"})).await;
    assert_eq!(s.cb.wait_idle(&rel).await["state"], "in_sync");
    let dst = s.cb.volume_uuid("svm1", "strict_dst").await;
    assert_eq!(s.ca.put_file(&src, "a.txt", b"replicated").await, StatusCode::NO_CONTENT);
    s.add_fault(&s.cb, json!({"path": "/sim/v1/intercluster/sync/*", "action": {"kind": "error", "status": 503, "code": 13303816}, "count": 1})).await;
    assert_eq!(s.ca.put_file(&src, "a.txt", b"refused").await, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(s.ca.read_file(&src, "a.txt").await, b"replicated", "the failed write is undone at the source");
    assert_eq!(s.cb.read_file(&dst, "a.txt").await, b"replicated");
    assert_eq!(s.ca.put_file(&src, "a.txt", b"healed").await, StatusCode::NO_CONTENT);
    assert_eq!(s.cb.read_file(&dst, "a.txt").await, b"healed");
}
