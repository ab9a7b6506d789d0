//! The ONTAP REST API and the `/sim/v1` control API, driven over real HTTP.
//!
//! Every test starts its own simulator on 127.0.0.1 port 0, so the tests run in parallel and
//! share nothing. What is asserted is ONTAP's behaviour (shared/ontap/README.md and the
//! documented error codes), not whatever the simulator happens to do.

use std::time::{Duration, Instant};

use ontap_sim::model::cluster::SnapshotModify;
use ontap_sim::{spawn, ClusterConfig, RunningSim, SimConfig};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const MIB: u64 = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Helpers

#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    base: String,
    user: String,
    password: String,
}

impl Client {
    fn new(sim: &RunningSim) -> Self {
        Client { http: reqwest::Client::new(), base: sim.base_url(), user: "admin".into(), password: "admin".into() }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A request with credentials; `body` is sent as JSON.
    fn request(&self, method: Method, path: &str, body: Option<&Value>) -> reqwest::RequestBuilder {
        let mut rb = self.http.request(method, self.url(path)).basic_auth(&self.user, Some(&self.password));
        if let Some(body) = body {
            rb = rb.json(body);
        }
        rb
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let response = rb.send().await.expect("request failed");
        let status = response.status();
        let bytes = response.bytes().await.expect("reading the body");
        let value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into())) };
        (status, value)
    }

    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> (StatusCode, Value) {
        self.send(self.request(method, path, body)).await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(&body)).await
    }

    async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PATCH, path, Some(&body)).await
    }

    /// DELETE with the `{}` body ONTAP clients send.
    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, Some(&json!({}))).await
    }

    /// GET that must succeed.
    async fn get_ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    /// Poll a job until it ends; returns the job record.
    async fn wait_job(&self, uuid: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let job = self.get_ok(&format!("/api/cluster/jobs/{uuid}")).await;
            let state = job["state"].as_str().unwrap().to_string();
            assert!(["queued", "running", "paused", "success", "failure"].contains(&state.as_str()), "job state {state}");
            if state == "success" || state == "failure" {
                return job;
            }
            assert!(Instant::now() < deadline, "job {uuid} never ended: {job}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A write that must be accepted: 202 and a job that succeeds, or 200/201 at once.
    async fn write_ok(&self, method: Method, path: &str, body: Value) -> Value {
        let (status, resp) = self.call(method.clone(), path, Some(&body)).await;
        match status {
            StatusCode::ACCEPTED => {
                let job = self.wait_job(resp["job"]["uuid"].as_str().expect("job uuid")).await;
                assert_eq!(job["state"], "success", "{method} {path}: {job}");
            }
            StatusCode::OK | StatusCode::CREATED => {}
            other => panic!("{method} {path} {body}: {other} {resp}"),
        }
        resp
    }

    async fn create_volume(&self, name: &str, extra: Value) -> String {
        let mut body = json!({"name": name, "svm": {"name": "svm0"}, "aggregates": [{"name": "aggr1"}]});
        for (k, v) in extra.as_object().expect("object") {
            body[k] = v.clone();
        }
        let (status, resp) = self.post("/api/storage/volumes?return_timeout=30", body).await;
        assert_eq!(status, StatusCode::CREATED, "create {name}: {resp}");
        self.volume_uuid(name).await
    }

    async fn volume_uuid(&self, name: &str) -> String {
        let list = self.get_ok(&format!("/api/storage/volumes?name={name}")).await;
        assert_eq!(list["num_records"], 1, "volume {name}: {list}");
        list["records"][0]["uuid"].as_str().unwrap().to_string()
    }

    async fn volume(&self, uuid: &str) -> Value {
        self.get_ok(&format!("/api/storage/volumes/{uuid}?fields=**")).await
    }

    async fn create_snapshot(&self, volume: &str, name: &str) -> String {
        let (status, resp) = self.post(&format!("/api/storage/volumes/{volume}/snapshots?return_timeout=30"), json!({"name": name})).await;
        assert_eq!(status, StatusCode::CREATED, "snapshot {name}: {resp}");
        self.snapshot_uuid(volume, name).await
    }

    async fn snapshot_uuid(&self, volume: &str, name: &str) -> String {
        let list = self.get_ok(&format!("/api/storage/volumes/{volume}/snapshots?name={name}")).await;
        assert_eq!(list["num_records"], 1, "snapshot {name}: {list}");
        list["records"][0]["uuid"].as_str().unwrap().to_string()
    }

    async fn snapshot_names(&self, volume: &str) -> Vec<String> {
        names(&self.get_ok(&format!("/api/storage/volumes/{volume}/snapshots")).await)
    }

    async fn put_file(&self, volume: &str, path: &str, data: &[u8]) {
        let rb = self.request(Method::PUT, &format!("/sim/v1/volumes/{volume}/files/{path}"), None).body(data.to_vec());
        let (status, body) = self.send(rb).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "PUT {path}: {body}");
    }

    async fn read_file(&self, volume: &str, path: &str) -> Vec<u8> {
        self.read_raw(&format!("/sim/v1/volumes/{volume}/files/{path}")).await
    }

    async fn read_raw(&self, path: &str) -> Vec<u8> {
        let response = self.request(Method::GET, path, None).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.bytes().await.unwrap().to_vec()
    }

    async fn add_fault(&self, rule: Value) -> u64 {
        let (status, body) = self.post("/sim/v1/faults", rule.clone()).await;
        assert_eq!(status, StatusCode::CREATED, "fault {rule}: {body}");
        body["id"].as_u64().unwrap()
    }
}

async fn start() -> (RunningSim, Client) {
    start_with(SimConfig::default()).await
}

async fn start_with(config: SimConfig) -> (RunningSim, Client) {
    let sim = spawn(config).await.expect("simulator starts");
    let client = Client::new(&sim);
    (sim, client)
}

/// The ONTAP error code of an error body (a string of digits, as ONTAP sends it).
fn code(body: &Value) -> &str {
    let code = body["error"]["code"].as_str().unwrap_or_else(|| panic!("not an ONTAP error: {body}"));
    assert!(!code.is_empty() && code.bytes().all(|b| b.is_ascii_digit()), "code {code:?}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "no message: {body}");
    code
}

fn target(body: &Value) -> &str {
    body["error"]["target"].as_str().unwrap_or_else(|| panic!("no target: {body}"))
}

fn assert_error(status: StatusCode, body: &Value, expected_status: StatusCode, expected_code: &str) {
    assert_eq!(status, expected_status, "{body}");
    assert_eq!(code(body), expected_code, "{body}");
}

fn names(list: &Value) -> Vec<String> {
    list["records"].as_array().unwrap_or_else(|| panic!("no records: {list}")).iter().map(|r| r["name"].as_str().unwrap().to_string()).collect()
}

fn keys(v: &Value) -> Vec<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

// ---------------------------------------------------------------------------------------------
// Cluster, SVMs, aggregates, HAL

#[tokio::test]
async fn cluster_svms_and_aggregates() {
    let config = SimConfig { cluster: ClusterConfig { svms: vec!["svm0".into(), "svm1".into()], ..ClusterConfig::default() }, ..SimConfig::default() };
    let (_sim, c) = start_with(config).await;

    let cluster = c.get_ok("/api/cluster").await;
    assert_eq!(cluster["name"], "sim-a");
    assert_eq!((cluster["version"]["generation"].as_u64(), cluster["version"]["major"].as_u64()), (Some(9), Some(19)));
    assert_eq!(cluster["_links"]["self"]["href"], "/api/cluster");
    let version_only = c.get_ok("/api/cluster?fields=version").await;
    assert!(version_only.get("version").is_some() && version_only.get("name").is_none(), "{version_only}");

    let svms = c.get_ok("/api/svm/svms").await;
    assert_eq!(svms["num_records"], 2);
    assert_eq!(names(&svms), ["svm0", "svm1"]);
    assert_eq!(keys(&svms["records"][0]), ["uuid", "name", "_links"], "a collection GET gives keys and links only");
    let svm1 = svms["records"][1]["uuid"].as_str().unwrap();
    assert_eq!(svms["records"][1]["_links"]["self"]["href"], format!("/api/svm/svms/{svm1}"));
    let svm = c.get_ok(&format!("/api/svm/svms/{svm1}")).await;
    assert_eq!((svm["name"].as_str(), svm["state"].as_str()), (Some("svm1"), Some("running")));
    assert_eq!(names(&c.get_ok("/api/svm/svms?name=*1").await), ["svm1"]);
    let (status, body) = c.get("/api/svm/svms/00000000-0000-0000-0000-000000000000").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "4");

    let aggrs = c.get_ok("/api/storage/aggregates?fields=space.block_storage.size").await;
    assert_eq!(names(&aggrs), ["aggr1"]);
    assert_eq!(aggrs["records"][0]["space"]["block_storage"]["size"], 1u64 << 50);
    let aggr_uuid = aggrs["records"][0]["uuid"].as_str().unwrap();
    let aggr = c.get_ok(&format!("/api/storage/aggregates/{aggr_uuid}")).await;
    assert_eq!((aggr["name"].as_str(), aggr["state"].as_str()), (Some("aggr1"), Some("online")));
    let (status, body) = c.get("/api/storage/aggregates/nope").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "4");
}

#[tokio::test]
async fn hal_links_lead_to_the_objects() {
    let (_sim, c) = start().await;
    let uuid = c.create_volume("v1", json!({})).await;
    let snap = c.create_snapshot(&uuid, "s1").await;
    let vols = c.get_ok("/api/storage/volumes").await;
    assert_eq!(vols["_links"]["self"]["href"], "/api/storage/volumes");
    let href = vols["records"][0]["_links"]["self"]["href"].as_str().unwrap();
    assert_eq!(href, format!("/api/storage/volumes/{uuid}"));
    let vol = c.get_ok(href).await;
    assert_eq!(vol["uuid"], uuid.as_str());
    assert_eq!(vol["_links"]["self"]["href"], href);
    // Nested references carry links too.
    let svm_href = vol["svm"]["_links"]["self"]["href"].as_str().unwrap();
    assert_eq!(c.get_ok(svm_href).await["name"], "svm0");
    let snapshot = c.get_ok(&format!("/api/storage/volumes/{uuid}/snapshots/{snap}")).await;
    assert_eq!(snapshot["_links"]["self"]["href"], format!("/api/storage/volumes/{uuid}/snapshots/{snap}"));
    assert_eq!(c.get_ok(snapshot["volume"]["_links"]["self"]["href"].as_str().unwrap()).await["name"], "v1");
}

// ---------------------------------------------------------------------------------------------
// Jobs, return_timeout, Location

#[tokio::test]
async fn writes_are_jobs() {
    let (_sim, c) = start().await;
    // Default return_timeout for writes is 0: 202 with the job.
    let (status, body) = c.post("/api/storage/volumes", json!({"name": "v1", "svm": {"name": "svm0"}, "aggregates": [{"name": "aggr1"}]})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let job_uuid = body["job"]["uuid"].as_str().unwrap().to_string();
    assert_eq!(body["job"]["_links"]["self"]["href"], format!("/api/cluster/jobs/{job_uuid}"));
    let job = c.wait_job(&job_uuid).await;
    assert_eq!(job["state"], "success");
    assert_eq!(job["code"], 0);
    for field in ["uuid", "description", "state", "message", "code", "start_time", "end_time", "_links"] {
        assert!(job.get(field).is_some(), "job lacks {field}: {job}");
    }
    let jobs = c.get_ok("/api/cluster/jobs?fields=state").await;
    assert!(jobs["records"].as_array().unwrap().iter().any(|j| j["uuid"] == job_uuid.as_str() && j["state"] == "success"), "{jobs}");
    let (status, body) = c.get("/api/cluster/jobs/no-such-job").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "4");

    // A job that ends within return_timeout: 201 for a create, 200 otherwise; the job is
    // still included.
    let (status, body) = c.post("/api/storage/volumes?return_timeout=15", json!({"name": "v2", "svm": {"name": "svm0"}, "aggregates": [{"name": "aggr1"}]})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(body["job"]["uuid"].is_string(), "{body}");
    let uuid = c.volume_uuid("v2").await;
    let (status, body) = c.patch(&format!("/api/storage/volumes/{uuid}?return_timeout=15"), json!({"comment": "c"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["job"]["uuid"].is_string(), "{body}");
    let (status, body) = c.patch(&format!("/api/storage/volumes/{uuid}"), json!({"comment": "d"})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, body) = c.call(Method::DELETE, &format!("/api/storage/volumes/{uuid}?return_timeout=15"), Some(&json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = c.get(&format!("/api/storage/volumes/{uuid}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, body) = c.get("/api/storage/volumes?return_timeout=121").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "2");
}

#[tokio::test]
async fn location_header_is_the_partial_form_and_resolves() {
    let (_sim, c) = start().await;
    let response = c
        .request(Method::POST, "/api/storage/volumes", Some(&json!({"name": "vol1", "svm": {"name": "svm0"}, "aggregates": [{"name": "aggr1"}]})))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = response.headers().get("location").expect("Location header").to_str().unwrap().to_string();
    assert!(location.starts_with("/api/storage/volumes/?name=vol1"), "{location}");
    let found = c.get_ok(&location).await;
    assert_eq!(found["num_records"], 1, "{found}");
    assert_eq!(found["records"][0]["name"], "vol1");

    let uuid = found["records"][0]["uuid"].as_str().unwrap().to_string();
    let response = c.request(Method::POST, &format!("/api/storage/volumes/{uuid}/snapshots"), Some(&json!({"name": "snap+1"}))).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = response.headers().get("location").unwrap().to_str().unwrap().to_string();
    assert!(location.starts_with(&format!("/api/storage/volumes/{uuid}/snapshots/?name=")), "{location}");
    let found = c.get_ok(&location).await;
    assert_eq!(names(&found), ["snap+1"], "{location}");
}

// ---------------------------------------------------------------------------------------------
// fields, filters, order_by, paging

async fn four_volumes(c: &Client) -> Vec<String> {
    let mut uuids = Vec::new();
    for (name, size_mib, path) in [("alpha", 30, Some("/alpha")), ("beta", 40, None), ("gamma", 50, Some("/gamma")), ("Delta", 20, None)] {
        let mut extra = json!({"size": size_mib * MIB});
        if let Some(p) = path {
            extra["nas"] = json!({"path": p});
        }
        uuids.push(c.create_volume(name, extra).await);
    }
    uuids
}

#[tokio::test]
async fn fields_selection() {
    let (_sim, c) = start().await;
    let uuids = four_volumes(&c).await;

    // Collection without fields: keys and links only.
    let plain = c.get_ok("/api/storage/volumes").await;
    for r in plain["records"].as_array().unwrap() {
        assert_eq!(keys(r), ["uuid", "name", "_links"], "{r}");
    }
    // Instance without fields: the ordinary fields.
    let inst = c.get_ok(&format!("/api/storage/volumes/{}", uuids[0])).await;
    for f in ["uuid", "name", "size", "state", "svm", "space", "aggregates", "_links"] {
        assert!(inst.get(f).is_some(), "instance lacks {f}: {inst}");
    }
    assert_eq!(inst["nas"]["path"], "/alpha");

    let star = c.get_ok("/api/storage/volumes?fields=*").await;
    assert_eq!(star["records"][0]["space"]["size"], 30 * MIB);
    assert_eq!(star["records"][0]["svm"]["name"], "svm0");
    let all = c.get_ok("/api/storage/volumes?fields=**").await;
    assert_eq!(all["records"][1]["size"], 40 * MIB);
    assert!(all["records"][1]["space"]["snapshot"].get("reserve_percent").is_some());

    // Nested paths select just those leaves (keys and links always come along).
    let nested = c.get_ok("/api/storage/volumes?fields=space.used,svm.name").await;
    let r = &nested["records"][0];
    assert_eq!(keys(r), ["uuid", "name", "svm", "space", "_links"], "{r}");
    assert_eq!(keys(&r["space"]), ["used"]);
    assert_eq!(keys(&r["svm"]), ["name"]);
    let inst = c.get_ok(&format!("/api/storage/volumes/{}?fields=space.snapshot.reserve_percent", uuids[1])).await;
    assert_eq!(inst["space"], json!({"snapshot": {"reserve_percent": 5}}));

    // Documented fields the simulator does not model are accepted (absent).
    let (status, body) = c.get(&format!("/api/storage/volumes/{}?fields=efficiency.compression,tiering.policy,guarantee.type,name", uuids[0])).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Unknown fields: 262179 naming the field.
    for (path, bad) in [
        ("/api/storage/volumes?fields=name,bogus".to_string(), "bogus"),
        (format!("/api/storage/volumes/{}?fields=space.bogus", uuids[0]), "space.bogus"),
        ("/api/cluster?fields=nope".to_string(), "nope"),
        (format!("/api/storage/volumes/{}/snapshots?fields=space.used", uuids[0]), "space.used"),
    ] {
        let (status, body) = c.get(&path).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "262179");
        assert_eq!(target(&body), bad, "{path}");
    }
    // An unknown filter field, and an unknown order_by field, too.
    let (status, body) = c.get("/api/storage/volumes?colour=red").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "262179");
    assert_eq!(target(&body), "colour");
    let (status, body) = c.get("/api/storage/volumes?order_by=colour").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "262179");
}

#[tokio::test]
async fn filters_and_operators() {
    let (_sim, c) = start().await;
    four_volumes(&c).await;
    let q = |query: &'static str| {
        let c = c.clone();
        async move {
            let mut n = names(&c.get_ok(&format!("/api/storage/volumes?{query}")).await);
            n.sort();
            n
        }
    };
    assert_eq!(q("name=alpha").await, ["alpha"]);
    assert_eq!(q("name=a*").await, ["alpha"]);
    assert_eq!(q("name=*a").await, ["Delta", "alpha", "beta", "gamma"]);
    assert_eq!(q("name=d*").await, ["Delta"], "wildcards are case-insensitive");
    assert_eq!(q("name=alpha|gamma").await, ["alpha", "gamma"]);
    assert_eq!(q("name=!alpha").await, ["Delta", "beta", "gamma"]);
    assert_eq!(q("name=!alpha&name=!beta").await, ["Delta", "gamma"], "filters combine with and");
    assert_eq!(q("size=<41943040").await, ["Delta", "alpha"]);
    assert_eq!(q("size=<=41943040").await, ["Delta", "alpha", "beta"]);
    assert_eq!(q("size=>41943040").await, ["gamma"]);
    assert_eq!(q("size=>=41943040").await, ["beta", "gamma"]);
    assert_eq!(q("size=31457280..41943040").await, ["alpha", "beta"]);
    assert_eq!(q("nas.path=null").await, ["Delta", "beta"]);
    assert_eq!(q("nas.path=!null").await, ["alpha", "gamma"]);
    assert_eq!(q("nas.path=/gamma").await, ["gamma"]);
    assert_eq!(q("svm.name=svm0&state=online").await.len(), 4);
    assert_eq!(q("svm.name=svm9").await, Vec::<String>::new());
    assert_eq!(q("aggregates.name=aggr1&size=>=52428800").await, ["gamma"]);
    assert_eq!(q("clone.is_flexclone=false").await.len(), 4);

    // A filtered field comes back in the records.
    let r = c.get_ok("/api/storage/volumes?size=>=52428800").await;
    assert_eq!(r["records"][0]["size"], 50 * MIB, "{r}");
}

#[tokio::test]
async fn order_by_and_paging() {
    let (_sim, c) = start().await;
    four_volumes(&c).await;
    for i in 0..5 {
        c.create_volume(&format!("extra{i}"), json!({"size": (21 + i) * MIB})).await;
    }
    let by_size = c.get_ok("/api/storage/volumes?order_by=size%20desc&fields=size").await;
    let sizes: Vec<u64> = by_size["records"].as_array().unwrap().iter().map(|r| r["size"].as_u64().unwrap()).collect();
    assert_eq!(sizes.len(), 9);
    assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{sizes:?}");
    assert_eq!(names(&by_size)[0], "gamma");
    assert_eq!(names(&c.get_ok("/api/storage/volumes?order_by=name&name=*a").await), ["Delta", "alpha", "beta", "gamma"]);
    assert_eq!(names(&c.get_ok("/api/storage/volumes?order_by=name%20desc&name=*a").await), ["gamma", "beta", "alpha", "Delta"]);

    for query in ["fields=size,comment&order_by=name%20desc&name=!beta", "order_by=size", "fields=*"] {
        let unpaged = c.get_ok(&format!("/api/storage/volumes?{query}")).await;
        assert!(unpaged["_links"].get("next").is_none());
        let mut collected = Vec::new();
        let mut href = format!("/api/storage/volumes?{query}&max_records=2");
        let mut pages = 0;
        loop {
            let page = c.get_ok(&href).await;
            let recs = page["records"].as_array().unwrap();
            assert!(recs.len() <= 2 && !recs.is_empty(), "{page}");
            assert_eq!(page["num_records"], recs.len());
            collected.extend(recs.iter().cloned());
            pages += 1;
            match page["_links"].get("next") {
                Some(next) => {
                    href = next["href"].as_str().unwrap().to_string();
                    assert!(href.starts_with("/api/storage/volumes?"), "{href}");
                    // Every parameter of the first request is repeated.
                    for param in query.split('&').chain(["max_records=2"]) {
                        let key = param.split('=').next().unwrap();
                        assert!(href.contains(&format!("{key}=")), "{href} lacks {key}");
                    }
                }
                None => break,
            }
            assert!(pages < 20);
        }
        assert_eq!(collected, unpaged["records"].as_array().unwrap().clone(), "{query}");
        assert_eq!(pages, unpaged["num_records"].as_u64().unwrap().div_ceil(2) as usize);
    }

    // return_records=false counts all matches.
    let counted = c.get_ok("/api/storage/volumes?return_records=false&size=<26214400").await;
    assert_eq!(counted["num_records"], 5, "{counted}");
    assert!(counted.get("records").is_none(), "{counted}");
    let (status, body) = c.get("/api/storage/volumes?max_records=0").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "2");
    let (status, body) = c.get("/api/storage/volumes?return_records=maybe").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "2");
}

#[tokio::test]
async fn instance_get_tolerates_filter_params() {
    let (_sim, c) = start().await;
    let uuid = c.create_volume("v1", json!({})).await;
    let v = c.get_ok(&format!("/api/storage/volumes/{uuid}?name=v1&svm.name=svm0")).await;
    assert_eq!(v["uuid"], uuid.as_str());
    let v = c.get_ok(&format!("/api/storage/volumes/{uuid}?fields=name,size&name=v1")).await;
    assert_eq!(v["size"], 20 * MIB);
    let snap = c.create_snapshot(&uuid, "s1").await;
    let s = c.get_ok(&format!("/api/storage/volumes/{uuid}/snapshots/{snap}?name=s1&fields=create_time")).await;
    assert!(s["create_time"].is_string(), "{s}");
}

// ---------------------------------------------------------------------------------------------
// Request handling: auth, bodies, unknown paths

#[tokio::test]
async fn authentication() {
    let (_sim, c) = start().await;
    for path in ["/api/cluster", "/api/storage/volumes", "/sim/v1/faults", "/api/nope"] {
        let (status, body) = c.send(c.http.get(c.url(path))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        code(&body);
        let (status, body) = c.send(c.http.get(c.url(path)).basic_auth("admin", Some("wrong"))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        code(&body);
        let response = c.http.get(c.url(path)).send().await.unwrap();
        assert!(response.headers().get("www-authenticate").is_some_and(|h| h.to_str().unwrap().starts_with("Basic")), "{path}");
        let (status, _) = c.send(c.http.get(c.url(path)).basic_auth("root", Some("admin"))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }
    // A write without credentials changes nothing.
    let (status, _) = c.send(c.http.post(c.url("/api/storage/volumes")).json(&json!({"name": "v", "svm": {"name": "svm0"}, "aggregates": [{"name": "aggr1"}]}))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(c.get_ok("/api/storage/volumes").await["num_records"], 0);
    let config = SimConfig { username: "ops".into(), password: "s3cret:x".into(), ..SimConfig::default() };
    let (_sim2, mut c2) = start_with(config).await;
    assert_eq!(c2.get("/api/cluster").await.0, StatusCode::UNAUTHORIZED);
    c2.user = "ops".into();
    c2.password = "s3cret:x".into();
    assert_eq!(c2.get("/api/cluster").await.0, StatusCode::OK);
}

#[tokio::test]
async fn bad_request_bodies() {
    let (_sim, c) = start().await;
    let uuid = c.create_volume("v1", json!({})).await;
    let vol = format!("/api/storage/volumes/{uuid}");

    // Malformed JSON.
    let rb = c.request(Method::POST, "/api/storage/volumes", None).header("content-type", "application/json").body("{\"name\": \"v2\",");
    let (status, body) = c.send(rb).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    code(&body);
    let rb = c.request(Method::PATCH, &vol, None).header("content-type", "application/json").body("[1, 2]");
    let (status, body) = c.send(rb).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    code(&body);

    // Unknown field: code 2 naming it; read-only fields likewise.
    let (status, body) = c.post("/api/storage/volumes", json!({"name": "v2", "svm": {"name": "svm0"}, "aggregates": [{"name": "aggr1"}], "bogus": 1})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "2");
    assert_eq!(target(&body), "bogus");
    let (status, body) = c.patch(&vol, json!({"space": {"bogus": 1}})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "2");
    assert_eq!(target(&body), "space.bogus");
    let (status, body) = c.patch(&vol, json!({"space": {"used": 5}})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "2");
    assert_eq!(target(&body), "space.used");
    let (status, body) = c.patch(&vol, json!({"uuid": "x", "comment": "c"})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "2");
    assert_eq!(target(&body), "uuid");
    let (status, body) = c.post("/api/storage/volumes", json!({"name": "v2", "svm": {"name": "svm0"}, "aggregates": [{"name": "aggr1"}], "create_time": "2024-01-01T00:00:00Z"})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "2");
    assert_eq!(target(&body), "create_time");
    let (status, body) = c.patch(&vol, json!({"size": "big"})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "2");
    assert_eq!(target(&body), "size");
    let (status, body) = c.post(&format!("{vol}/snapshots"), json!({"name": "s", "bogus": true})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(target(&body), "bogus");
    let (status, body) = c.post("/api/storage/volumes", json!({"svm": {"name": "svm0"}, "aggregates": [{"name": "aggr1"}]})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "2");
    assert_eq!(target(&body), "name");
    // Nothing was stored or changed by any of those.
    assert_eq!(names(&c.get_ok("/api/storage/volumes").await), ["v1"]);
    let v = c.volume(&uuid).await;
    assert!(v.get("comment").is_none() && v["size"] == 20 * MIB, "{v}");
    assert!(c.snapshot_names(&uuid).await.is_empty());

    // More than 1 MiB: 413.
    let big = format!("{{\"name\": \"v3\", \"comment\": \"{}\"}}", "x".repeat(1024 * 1024));
    let rb = c.request(Method::POST, "/api/storage/volumes", None).header("content-type", "application/json").body(big);
    let (status, body) = c.send(rb).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    code(&body);
    // Just under the limit is accepted as a body (and then judged on its fields).
    let comment = "y".repeat(1000 * 1000);
    let (status, body) = c.patch(&vol, json!({"comment": comment})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
}

#[tokio::test]
async fn unknown_paths_and_methods() {
    let (_sim, c) = start().await;
    for path in ["/api/storage/bogus", "/api/storage/volumes/x/y/z", "/api", "/nothing"] {
        let (status, body) = c.get(path).await;
        assert_error(status, &body, StatusCode::NOT_FOUND, "3");
    }
    let (status, body) = c.delete("/api/cluster").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    code(&body);
    let (status, body) = c.get("/api/storage/volumes/00000000-0000-0000-0000-000000000000").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "4");
    let (status, body) = c.delete("/api/storage/volumes/00000000-0000-0000-0000-000000000000").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "4");
}

#[tokio::test]
async fn delete_accepts_an_empty_json_body_or_none() {
    let (_sim, c) = start().await;
    let a = c.create_volume("a", json!({})).await;
    let b = c.create_volume("b", json!({})).await;
    c.write_ok(Method::DELETE, &format!("/api/storage/volumes/{a}"), json!({})).await;
    let (status, body) = c.send(c.request(Method::DELETE, &format!("/api/storage/volumes/{b}"), None)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(c.get_ok("/api/storage/volumes").await["num_records"], 0);
}

// ---------------------------------------------------------------------------------------------
// Volumes

#[tokio::test]
async fn volume_create_and_modify() {
    let (_sim, c) = start().await;
    let uuid = c.create_volume("v1", json!({"size": 100 * MIB, "comment": "first", "nas": {"path": "/v1"}, "space": {"snapshot": {"reserve_percent": 10}}})).await;
    let path = format!("/api/storage/volumes/{uuid}");
    let v = c.volume(&uuid).await;
    assert_eq!(v["size"], 100 * MIB);
    assert_eq!(v["space"]["size"], 100 * MIB);
    assert_eq!(v["space"]["used"], 0);
    assert_eq!(v["space"]["snapshot"]["reserve_percent"], 10);
    assert_eq!(v["comment"], "first");
    assert_eq!(v["nas"]["path"], "/v1");
    assert_eq!((v["state"].as_str(), v["type"].as_str()), (Some("online"), Some("rw")));
    assert_eq!(v["svm"]["name"], "svm0");
    assert_eq!(v["aggregates"][0]["name"], "aggr1");

    // Resize.
    c.write_ok(Method::PATCH, &path, json!({"size": 200 * MIB})).await;
    assert_eq!(c.volume(&uuid).await["space"]["size"], 200 * MIB);
    c.write_ok(Method::PATCH, &path, json!({"space": {"size": 150 * MIB}})).await;
    assert_eq!(c.volume(&uuid).await["size"], 150 * MIB);
    let (status, body) = c.patch(&path, json!({"size": MIB})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "917534");
    assert_eq!(c.volume(&uuid).await["size"], 150 * MIB);
    // Rename, comment, junction path, reserve.
    c.write_ok(Method::PATCH, &path, json!({"name": "renamed", "comment": "second"})).await;
    let v = c.volume(&uuid).await;
    assert_eq!((v["name"].as_str(), v["comment"].as_str()), (Some("renamed"), Some("second")));
    assert_eq!(c.volume_uuid("renamed").await, uuid);
    c.write_ok(Method::PATCH, &path, json!({"nas.path": "/data/renamed"})).await;
    assert_eq!(c.volume(&uuid).await["nas"]["path"], "/data/renamed");
    assert_eq!(names(&c.get_ok("/api/storage/volumes?nas.path=/data/*").await), ["renamed"]);
    let (status, body) = c.patch(&path, json!({"nas": {"path": "relative"}})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "918252");
    c.write_ok(Method::PATCH, &path, json!({"nas": {"path": ""}})).await;
    assert!(c.volume(&uuid).await["nas"].get("path").is_none(), "an empty path unmounts");
    c.write_ok(Method::PATCH, &path, json!({"space": {"snapshot": {"reserve_percent": 20}}})).await;
    assert_eq!(c.volume(&uuid).await["space"]["snapshot"]["reserve_percent"], 20);
    // State.
    c.write_ok(Method::PATCH, &path, json!({"state": "offline"})).await;
    assert_eq!(c.volume(&uuid).await["state"], "offline");
    assert_eq!(names(&c.get_ok("/api/storage/volumes?state=offline").await), ["renamed"]);
    let (status, body) = c.post(&format!("{path}/snapshots"), json!({"name": "s"})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "524479");
    c.write_ok(Method::PATCH, &path, json!({"state": "online"})).await;
    let (status, body) = c.patch(&path, json!({"state": "error"})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "918652");
    assert_eq!(c.volume(&uuid).await["state"], "online");

    // Documented fields the simulator does not model read back as set.
    c.write_ok(Method::PATCH, &path, json!({"efficiency": {"compression": "inline"}, "snapshot_policy": {"name": "default"}})).await;
    let v = c.get_ok(&format!("{path}?fields=efficiency.compression,snapshot_policy.name")).await;
    assert_eq!(v["efficiency"]["compression"], "inline");
    assert_eq!(v["snapshot_policy"]["name"], "default");
}

#[tokio::test]
async fn volume_create_errors() {
    let (_sim, c) = start().await;
    let uuid = c.create_volume("v1", json!({"nas": {"path": "/v1"}})).await;
    let base = json!({"svm": {"name": "svm0"}, "aggregates": [{"name": "aggr1"}]});
    let post = |name: Value, extra: Value| {
        let c = c.clone();
        let mut body = base.clone();
        body["name"] = name;
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        async move { c.post("/api/storage/volumes?return_timeout=10", body).await }
    };
    let (status, body) = post(json!("v1"), json!({})).await;
    assert_error(status, &body, StatusCode::CONFLICT, "917526");
    assert_eq!(target(&body), "name");
    let (status, body) = post(json!("x".repeat(204)), json!({})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "917886");
    let (status, body) = post(json!("1vol"), json!({})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "917887");
    let (status, body) = post(json!(""), json!({})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "917887");
    let (status, body) = post(json!("bad-name"), json!({})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "917888");
    let (status, body) = post(json!("bad.name"), json!({})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "917888");
    let (status, _) = post(json!(format!("_{}", "y".repeat(202))), json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "203 characters starting with _ is fine");
    let (status, body) = post(json!("v2"), json!({"size": MIB})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "917534");
    let (status, body) = post(json!("v2"), json!({"svm": {"name": "nosuch"}})).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "2621462");
    let (status, body) = post(json!("v2"), json!({"aggregates": [{"name": "nosuch"}]})).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "917508");
    let (status, body) = post(json!("v2"), json!({"nas": {"path": "/v1"}})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "918252");
    let (status, body) = post(json!("v2"), json!({"space": {"snapshot": {"reserve_percent": 91}}})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "917835");
    let (status, body) = post(json!("v2"), json!({"state": "error"})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "918652");
    let mut no_svm = base.clone();
    no_svm["name"] = json!("v2");
    no_svm.as_object_mut().unwrap().remove("svm");
    let (status, body) = c.post("/api/storage/volumes", no_svm).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "2621707");
    // Nothing invalid was stored.
    let mut stored = names(&c.get_ok("/api/storage/volumes").await);
    stored.sort();
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert_eq!(stored[1], "v1");

    // Renaming onto an existing name or to a bad name is refused too.
    let other = c.create_volume("v3", json!({})).await;
    let (status, body) = c.patch(&format!("/api/storage/volumes/{other}"), json!({"name": "v1"})).await;
    assert_error(status, &body, StatusCode::CONFLICT, "917526");
    let (status, body) = c.patch(&format!("/api/storage/volumes/{other}"), json!({"name": "9lives"})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "917887");
    let (status, body) = c.patch(&format!("/api/storage/volumes/{other}"), json!({"nas": {"path": "/v1"}})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "918252");
    assert_eq!(c.volume(&other).await["name"], "v3");
    assert_eq!(c.volume(&uuid).await["name"], "v1");
}

/// Three generations of one file with a snapshot after the first two.
async fn restore_fixture(c: &Client, name: &str) -> String {
    let uuid = c.create_volume(name, json!({})).await;
    c.put_file(&uuid, "data/f", b"one").await;
    c.create_snapshot(&uuid, "s1").await;
    c.put_file(&uuid, "data/f", b"two").await;
    c.create_snapshot(&uuid, "s2").await;
    c.put_file(&uuid, "data/f", b"three").await;
    c.put_file(&uuid, "data/g", b"new").await;
    uuid
}

async fn assert_restored_to_s1(c: &Client, uuid: &str) {
    assert_eq!(c.read_file(uuid, "data/f").await, b"one");
    let listing = c.get_ok(&format!("/sim/v1/volumes/{uuid}/files/data")).await;
    assert_eq!(names(&listing), ["f"], "data/g came after s1");
    assert_eq!(c.snapshot_names(uuid).await, ["s1"], "newer snapshots are deleted");
}

#[tokio::test]
async fn restore_as_query_parameter_dotted_body_and_nested_body() {
    let (_sim, c) = start().await;
    let a = restore_fixture(&c, "a").await;
    c.write_ok(Method::PATCH, &format!("/api/storage/volumes/{a}?restore_to.snapshot.name=s1"), json!({})).await;
    assert_restored_to_s1(&c, &a).await;

    let b = restore_fixture(&c, "b").await;
    c.write_ok(Method::PATCH, &format!("/api/storage/volumes/{b}"), json!({"restore_to.snapshot.name": "s1"})).await;
    assert_restored_to_s1(&c, &b).await;

    let d = restore_fixture(&c, "d").await;
    c.write_ok(Method::PATCH, &format!("/api/storage/volumes/{d}?return_timeout=10"), json!({"restore_to": {"snapshot": {"name": "s1"}}})).await;
    assert_restored_to_s1(&c, &d).await;

    let e = restore_fixture(&c, "e").await;
    let s1 = c.snapshot_uuid(&e, "s1").await;
    c.write_ok(Method::PATCH, &format!("/api/storage/volumes/{e}?restore_to.snapshot.uuid={s1}"), json!({})).await;
    assert_restored_to_s1(&c, &e).await;
    // The restored volume is writable and can be snapshotted again under a deleted name.
    c.put_file(&e, "data/f", b"four").await;
    c.create_snapshot(&e, "s2").await;
    assert_eq!(c.read_raw(&format!("/sim/v1/volumes/{e}/snapshots/s1/files/data/f")).await, b"one");

    let (status, body) = c.patch(&format!("/api/storage/volumes/{a}?restore_to.snapshot.name=nope"), json!({})).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "524511");
}

#[tokio::test]
async fn restore_combined_with_another_change_is_refused() {
    let (_sim, c) = start().await;
    let uuid = restore_fixture(&c, "v").await;
    let path = format!("/api/storage/volumes/{uuid}");
    for (query, body) in [
        ("?restore_to.snapshot.name=s1", json!({"comment": "x"})),
        ("", json!({"restore_to.snapshot.name": "s1", "size": 40 * MIB})),
        ("", json!({"restore_to": {"snapshot": {"name": "s1"}}, "name": "w"})),
        ("?restore_to.snapshot.name=s1", json!({"nas": {"path": "/x"}})),
    ] {
        let (status, resp) = c.patch(&format!("{path}{query}"), body.clone()).await;
        assert_error(status, &resp, StatusCode::BAD_REQUEST, "918251");
    }
    // Nothing happened: no restore, no other change.
    assert_eq!(c.read_file(&uuid, "data/f").await, b"three");
    assert_eq!(c.snapshot_names(&uuid).await, ["s1", "s2"]);
    let v = c.volume(&uuid).await;
    assert_eq!((v["name"].as_str(), v["size"].as_u64()), (Some("v"), Some(20 * MIB)));
    assert!(v.get("comment").is_none() && v["nas"].get("path").is_none(), "{v}");
}

// ---------------------------------------------------------------------------------------------
// Snapshots

#[tokio::test]
async fn snapshot_lifecycle() {
    let (_sim, c) = start().await;
    let uuid = c.create_volume("v1", json!({})).await;
    let snaps = format!("/api/storage/volumes/{uuid}/snapshots");
    let (status, body) = c.post(&format!("{snaps}?return_timeout=10"), json!({"name": "s1", "comment": "c1", "snapmirror_label": "daily"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let s1 = c.snapshot_uuid(&uuid, "s1").await;
    let snap = c.get_ok(&format!("{snaps}/{s1}")).await;
    assert_eq!((snap["comment"].as_str(), snap["snapmirror_label"].as_str()), (Some("c1"), Some("daily")));
    assert_eq!(snap["volume"]["uuid"], uuid.as_str());
    assert!(snap["create_time"].is_string() && snap.get("owners").is_none(), "{snap}");
    assert_eq!(c.volume(&uuid).await["snapshot_count"], 1);

    let (status, body) = c.post(&snaps, json!({"name": "s1"})).await;
    assert_error(status, &body, StatusCode::CONFLICT, "525059");
    let (status, body) = c.post(&snaps, json!({"name": "bad name"})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "1638518");

    // Rename, comment, label.
    c.write_ok(Method::PATCH, &format!("{snaps}/{s1}"), json!({"name": "s1b", "comment": "c2", "snapmirror_label": "weekly"})).await;
    let snap = c.get_ok(&format!("{snaps}/{s1}")).await;
    assert_eq!((snap["name"].as_str(), snap["comment"].as_str(), snap["snapmirror_label"].as_str()), (Some("s1b"), Some("c2"), Some("weekly")));
    c.create_snapshot(&uuid, "s2").await;
    let (status, body) = c.patch(&format!("{snaps}/{s1}"), json!({"name": "s2"})).await;
    assert_error(status, &body, StatusCode::CONFLICT, "525059");
    let (status, body) = c.patch(&format!("{snaps}/{s1}"), json!({"name": "a/b"})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "524508");
    let (status, body) = c.patch(&format!("{snaps}/{s1}"), json!({"volume": {"name": "x"}})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "2");
    assert_eq!(c.snapshot_names(&uuid).await, ["s1b", "s2"]);
    let listed = c.get_ok(&format!("{snaps}?fields=comment,snapmirror_label&snapmirror_label=weekly")).await;
    assert_eq!(names(&listed), ["s1b"]);

    let (status, body) = c.get(&format!("{snaps}/00000000-0000-0000-0000-000000000000")).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "1638600");
    let (status, body) = c.patch(&format!("{snaps}/00000000-0000-0000-0000-000000000000"), json!({"comment": "x"})).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "1638600");
    let (status, body) = c.get("/api/storage/volumes/00000000-0000-0000-0000-000000000000/snapshots").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "4");

    c.write_ok(Method::DELETE, &format!("{snaps}/{s1}"), json!({})).await;
    assert_eq!(c.snapshot_names(&uuid).await, ["s2"]);
    let (status, body) = c.delete(&format!("{snaps}/{s1}")).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "1638600");
}

#[tokio::test]
async fn snapshot_limit_is_1023() {
    let (sim, c) = start().await;
    let uuid = c.create_volume("v1", json!({})).await;
    let now = sim.sim().now();
    sim.sim()
        .transact(|s| {
            for i in 0..1023 {
                s.create_snapshot(&uuid, &format!("s{i:04}"), SnapshotModify::default(), now)?;
            }
            Ok(())
        })
        .unwrap();
    let snaps = format!("/api/storage/volumes/{uuid}/snapshots");
    assert_eq!(c.get_ok(&format!("{snaps}?return_records=false")).await["num_records"], 1023);
    let (status, body) = c.post(&snaps, json!({"name": "one_more"})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "525062");
    let (status, body) = c.post(&snaps, json!({"name": "s0000"})).await;
    assert_error(status, &body, StatusCode::CONFLICT, "525059");
    // Deleting one makes room again.
    let first = c.snapshot_uuid(&uuid, "s0000").await;
    c.write_ok(Method::DELETE, &format!("{snaps}/{first}"), json!({})).await;
    c.create_snapshot(&uuid, "one_more").await;
    assert_eq!(c.get_ok(&format!("{snaps}?return_records=false")).await["num_records"], 1023);
    // Paging through a big collection.
    let page = c.get_ok(&format!("{snaps}?max_records=1000")).await;
    assert_eq!(page["num_records"], 1000);
    let next = page["_links"]["next"]["href"].as_str().unwrap();
    let rest = c.get_ok(next).await;
    assert_eq!(rest["num_records"], 23);
    assert_eq!(rest["records"][22]["name"], "one_more");
}

#[tokio::test]
async fn snapshots_of_every_volume_with_star() {
    let (_sim, c) = start().await;
    let a = c.create_volume("a", json!({})).await;
    let b = c.create_volume("b", json!({})).await;
    c.create_snapshot(&a, "sa1").await;
    c.create_snapshot(&b, "sb1").await;
    c.create_snapshot(&a, "sa2").await;
    let all = c.get_ok("/api/storage/volumes/*/snapshots?fields=volume.name").await;
    assert_eq!(all["num_records"], 3, "{all}");
    let mut pairs: Vec<(String, String)> =
        all["records"].as_array().unwrap().iter().map(|r| (r["volume"]["name"].as_str().unwrap().to_string(), r["name"].as_str().unwrap().to_string())).collect();
    pairs.sort();
    assert_eq!(pairs, [("a".into(), "sa1".into()), ("a".into(), "sa2".into()), ("b".into(), "sb1".into())]);
    assert_eq!(names(&c.get_ok("/api/storage/volumes/*/snapshots?volume.name=b").await), ["sb1"]);
    assert_eq!(names(&c.get_ok("/api/storage/volumes/*/snapshots?name=sa*&order_by=name%20desc").await), ["sa2", "sa1"]);
    // Each record's link names its own volume.
    for r in all["records"].as_array().unwrap() {
        let href = r["_links"]["self"]["href"].as_str().unwrap();
        assert_eq!(c.get_ok(href).await["name"], r["name"]);
    }
    // Paging works across volumes.
    let page = c.get_ok("/api/storage/volumes/*/snapshots?max_records=2").await;
    let next = c.get_ok(page["_links"]["next"]["href"].as_str().unwrap()).await;
    assert_eq!(page["num_records"].as_u64().unwrap() + next["num_records"].as_u64().unwrap(), 3);
}

// ---------------------------------------------------------------------------------------------
// FlexClone

async fn owners(c: &Client, volume: &str, snapshot: &str) -> Value {
    c.get_ok(&format!("/api/storage/volumes/{volume}/snapshots/{snapshot}?fields=owners")).await.get("owners").cloned().unwrap_or(Value::Null)
}

#[tokio::test]
async fn flexclone_create_split_delete() {
    let (_sim, c) = start().await;
    let parent = c.create_volume("parent", json!({"size": 64 * MIB})).await;
    c.put_file(&parent, "f", b"from the snapshot").await;
    let s1 = c.create_snapshot(&parent, "s1").await;
    c.put_file(&parent, "f", b"after").await;

    let (status, body) = c
        .post(
            "/api/storage/volumes?return_timeout=10",
            json!({"name": "clone1", "svm": {"name": "svm0"}, "clone": {"parent_volume": {"name": "parent"}, "parent_snapshot": {"name": "s1"}, "is_flexclone": true}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let clone = c.volume_uuid("clone1").await;
    let v = c.volume(&clone).await;
    assert_eq!(v["clone"]["is_flexclone"], true);
    assert_eq!(v["clone"]["parent_volume"]["name"], "parent");
    assert_eq!(v["clone"]["parent_snapshot"]["name"], "s1");
    assert_eq!(v["size"], 64 * MIB);
    assert_eq!(c.read_file(&clone, "f").await, b"from the snapshot");
    assert_eq!(owners(&c, &parent, &s1).await, json!(["volume_clone"]));
    assert_eq!(names(&c.get_ok("/api/storage/volumes?clone.is_flexclone=true").await), ["clone1"]);
    // The clone is independent of its parent.
    c.put_file(&clone, "f", b"clone data").await;
    assert_eq!(c.read_file(&parent, "f").await, b"after");

    // A restore to an older snapshot would delete the clone's base: refused, nothing changed.
    let s0 = c.create_snapshot(&parent, "s0_after").await;
    c.write_ok(Method::DELETE, &format!("/api/storage/volumes/{parent}/snapshots/{s0}"), json!({})).await;
    let parent_path = format!("/api/storage/volumes/{parent}");
    let (status, body) = c.patch(&format!("{parent_path}?restore_to.snapshot.name=s1"), json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "restoring to the clone's own base is fine: {body}");
    assert_eq!(c.read_file(&parent, "f").await, b"from the snapshot");
    c.put_file(&parent, "f", b"after").await;
    c.create_snapshot(&parent, "s2").await;
    let (status, body) = c
        .post("/api/storage/volumes?return_timeout=10", json!({"name": "clone_s2", "svm": {"name": "svm0"}, "clone": {"parent_volume": {"name": "parent"}, "parent_snapshot": {"name": "s2"}, "is_flexclone": true}}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    c.put_file(&parent, "f", b"latest").await;
    let (status, body) = c.patch(&format!("{parent_path}?restore_to.snapshot.name=s1"), json!({})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "1638480");
    assert_eq!(c.read_file(&parent, "f").await, b"latest");
    assert_eq!(c.snapshot_names(&parent).await, ["s1", "s2"]);
    let clone_s2 = c.volume_uuid("clone_s2").await;
    c.write_ok(Method::DELETE, &format!("/api/storage/volumes/{clone_s2}"), json!({})).await;
    let s2 = c.snapshot_uuid(&parent, "s2").await;
    c.write_ok(Method::DELETE, &format!("/api/storage/volumes/{parent}/snapshots/{s2}"), json!({})).await;
    c.put_file(&parent, "f", b"after").await;

    // The base snapshot and the parent are protected while the clone exists.
    let (status, body) = c.delete(&format!("/api/storage/volumes/{parent}/snapshots/{s1}")).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "1638543");
    let (status, body) = c.delete(&format!("/api/storage/volumes/{parent}")).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "524615");
    assert_eq!(c.snapshot_names(&parent).await, ["s1"]);

    // Split: the clone becomes an ordinary volume and lets go of the snapshot.
    let (status, body) = c.patch(&format!("/api/storage/volumes/{clone}"), json!({"clone": {"split_initiated": true}, "comment": "x"})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "918248");
    c.write_ok(Method::PATCH, &format!("/api/storage/volumes/{clone}"), json!({"clone": {"split_initiated": true}})).await;
    assert_eq!(c.volume(&clone).await["clone"]["is_flexclone"], false);
    assert_eq!(owners(&c, &parent, &s1).await, Value::Null);
    assert_eq!(c.read_file(&clone, "f").await, b"clone data");
    let (status, body) = c.patch(&format!("/api/storage/volumes/{clone}"), json!({"clone": {"split_initiated": true}})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "only FlexClones split: {body}");
    c.write_ok(Method::DELETE, &format!("/api/storage/volumes/{parent}/snapshots/{s1}"), json!({})).await;

    // A clone without a named snapshot gets a fresh snapshot of the parent; deleting the
    // clone frees that snapshot and then the parent.
    let (status, body) = c.post("/api/storage/volumes?return_timeout=10", json!({"name": "clone2", "svm": {"name": "svm0"}, "clone": {"parent_volume": {"uuid": parent}, "is_flexclone": true}})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let clone2 = c.volume_uuid("clone2").await;
    assert_eq!(c.read_file(&clone2, "f").await, b"after");
    let base = c.volume(&clone2).await["clone"]["parent_snapshot"]["uuid"].as_str().unwrap().to_string();
    assert_eq!(owners(&c, &parent, &base).await, json!(["volume_clone"]));
    let (status, body) = c.delete(&format!("/api/storage/volumes/{parent}")).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "524615");
    c.write_ok(Method::DELETE, &format!("/api/storage/volumes/{clone2}"), json!({})).await;
    assert_eq!(owners(&c, &parent, &base).await, Value::Null);
    c.write_ok(Method::DELETE, &format!("/api/storage/volumes/{parent}/snapshots/{base}"), json!({})).await;
    c.write_ok(Method::DELETE, &format!("/api/storage/volumes/{parent}"), json!({})).await;
    assert_eq!(names(&c.get_ok("/api/storage/volumes").await), ["clone1"]);

    // Clone errors.
    let (status, body) = c.post("/api/storage/volumes", json!({"name": "c3", "svm": {"name": "svm0"}, "clone": {"parent_volume": {"name": "gone"}, "is_flexclone": true}})).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "524601");
    let (status, body) = c.post("/api/storage/volumes", json!({"name": "c3", "svm": {"name": "svm0"}, "clone": {"parent_volume": {"name": "clone1"}, "parent_snapshot": {"name": "nope"}, "is_flexclone": true}})).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "1638600");
    assert_eq!(c.get_ok("/api/storage/volumes").await["num_records"], 1);
}

// ---------------------------------------------------------------------------------------------
// Consistency groups

async fn create_cg(c: &Client, name: &str, volumes: &[&str]) -> String {
    let members: Vec<Value> = volumes.iter().map(|v| json!({"name": v})).collect();
    let (status, body) = c.post("/api/application/consistency-groups?return_timeout=10", json!({"name": name, "svm": {"name": "svm0"}, "volumes": members})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let list = c.get_ok(&format!("/api/application/consistency-groups?name={name}")).await;
    list["records"][0]["uuid"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn consistency_groups() {
    let (_sim, c) = start().await;
    let v1 = c.create_volume("v1", json!({})).await;
    let v2 = c.create_volume("v2", json!({})).await;
    c.create_volume("v3", json!({})).await;
    c.put_file(&v1, "f", b"v1 old").await;
    c.put_file(&v2, "f", b"v2 old").await;

    let response = c
        .request(Method::POST, "/api/application/consistency-groups", Some(&json!({"name": "cg1", "svm": {"name": "svm0"}, "volumes": [{"name": "v1"}, {"name": "v2"}]})))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = response.headers().get("location").expect("Location header").to_str().unwrap().to_string();
    assert!(location.starts_with("/api/application/consistency-groups/?name=cg1"), "{location}");
    let found = c.get_ok(&location).await;
    assert_eq!(names(&found), ["cg1"]);
    let cg = found["records"][0]["uuid"].as_str().unwrap().to_string();
    let cg_path = format!("/api/application/consistency-groups/{cg}");
    let record = c.get_ok(&cg_path).await;
    assert_eq!(record["name"], "cg1");
    assert_eq!(record["svm"]["name"], "svm0");
    let mut members: Vec<&str> = record["volumes"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
    members.sort();
    assert_eq!(members, ["v1", "v2"]);
    assert_eq!(record["_links"]["self"]["href"], cg_path);
    assert_eq!(names(&c.get_ok("/api/application/consistency-groups?volumes.name=v2").await), ["cg1"]);

    // A group snapshot is a same-named snapshot in every member.
    let (status, body) = c.post(&format!("{cg_path}/snapshots?return_timeout=10"), json!({"name": "cs1", "comment": "group"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(c.snapshot_names(&v1).await, ["cs1"]);
    assert_eq!(c.snapshot_names(&v2).await, ["cs1"]);
    let cs = c.get_ok(&format!("{cg_path}/snapshots?fields=comment,consistency_group.name")).await;
    assert_eq!(names(&cs), ["cs1"]);
    assert_eq!(cs["records"][0]["consistency_group"]["name"], "cg1");
    let cs1 = cs["records"][0]["uuid"].as_str().unwrap().to_string();
    let one = c.get_ok(&format!("{cg_path}/snapshots/{cs1}")).await;
    assert_eq!((one["comment"].as_str(), one["is_partial"].as_bool()), (Some("group"), Some(false)));
    assert_eq!(c.get_ok(&format!("/api/storage/volumes/{v2}/snapshots/{}", c.snapshot_uuid(&v2, "cs1").await)).await["comment"], "group");
    let (status, body) = c.post(&format!("{cg_path}/snapshots"), json!({"name": "cs1"})).await;
    assert_error(status, &body, StatusCode::CONFLICT, "525059");

    c.put_file(&v1, "f", b"v1 new").await;
    c.put_file(&v2, "f", b"v2 new").await;
    c.write_ok(Method::POST, &format!("{cg_path}/snapshots"), json!({"name": "cs2"})).await;
    c.put_file(&v1, "f", b"v1 newest").await;

    // Restore is a body field; all members go back, newer group snapshots go.
    let (status, body) = c.patch(&cg_path, json!({"restore_to": {"snapshot": {"name": "cs1"}}, "name": "x"})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "918251");
    assert_eq!(c.read_file(&v1, "f").await, b"v1 newest");
    c.write_ok(Method::PATCH, &cg_path, json!({"restore_to": {"snapshot": {"name": "cs1"}}})).await;
    assert_eq!(c.read_file(&v1, "f").await, b"v1 old");
    assert_eq!(c.read_file(&v2, "f").await, b"v2 old");
    assert_eq!(c.snapshot_names(&v1).await, ["cs1"]);
    assert_eq!(names(&c.get_ok(&format!("{cg_path}/snapshots")).await), ["cs1"]);
    c.write_ok(Method::PATCH, &cg_path, json!({"restore_to.snapshot.uuid": cs1})).await;
    let (status, body) = c.patch(&cg_path, json!({"restore_to": {"snapshot": {"name": "nope"}}})).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "1638600");
    let (status, body) = c.patch(&cg_path, json!({"name": "renamed"})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "2");

    // Deleting the group snapshot deletes each member's.
    c.write_ok(Method::DELETE, &format!("{cg_path}/snapshots/{cs1}"), json!({})).await;
    assert!(c.snapshot_names(&v1).await.is_empty() && c.snapshot_names(&v2).await.is_empty());
    let (status, body) = c.delete(&format!("{cg_path}/snapshots/{cs1}")).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "1638600");

    // Deleting the group keeps its volumes.
    c.write_ok(Method::DELETE, &cg_path, json!({})).await;
    let (status, body) = c.get(&cg_path).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "53411843");
    assert_eq!(c.get_ok("/api/storage/volumes").await["num_records"], 3);
    create_cg(&c, "cg1", &["v1", "v2", "v3"]).await;
}

#[tokio::test]
async fn consistency_group_errors() {
    let (_sim, c) = start().await;
    c.create_volume("v1", json!({})).await;
    c.create_volume("v2", json!({})).await;
    create_cg(&c, "cg1", &["v1"]).await;
    let post = |body: Value| {
        let c = c.clone();
        async move { c.post("/api/application/consistency-groups?return_timeout=10", body).await }
    };
    let (status, body) = post(json!({"name": "cg2", "svm": {"name": "svm0"}, "volumes": [{"name": "v1"}]})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "53411865");
    let (status, body) = post(json!({"name": "cg2", "svm": {"name": "svm0"}, "volumes": [{"name": "v2"}, {"name": "nope"}]})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    code(&body);
    let (status, body) = post(json!({"name": "cg1", "svm": {"name": "svm0"}, "volumes": [{"name": "v2"}]})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    code(&body);
    let (status, body) = post(json!({"name": "bad name", "svm": {"name": "svm0"}, "volumes": [{"name": "v2"}]})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "5376461");
    let (status, body) = post(json!({"name": "cg2", "volumes": [{"name": "v2"}]})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "2621707");
    let (status, body) = post(json!({"name": "cg2", "svm": {"name": "svm0"}})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "2");
    let (status, body) = post(json!({"name": "cg2", "svm": {"name": "svm0"}, "volumes": [{"name": "v2", "colour": "red"}]})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "2");
    // None of those made a group, and v2 is still free.
    assert_eq!(names(&c.get_ok("/api/application/consistency-groups").await), ["cg1"]);
    create_cg(&c, "cg2", &["v2"]).await;
    let (status, body) = c.get("/api/application/consistency-groups/nope").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "53411843");
    let (status, body) = c.post("/api/application/consistency-groups/nope/snapshots", json!({"name": "s"})).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "53411843");
}

#[tokio::test]
async fn failed_group_snapshot_leaves_no_member_snapshot() {
    let (_sim, c) = start().await;
    let v1 = c.create_volume("v1", json!({})).await;
    let v2 = c.create_volume("v2", json!({})).await;
    let v3 = c.create_volume("v3", json!({})).await;
    let cg = create_cg(&c, "cg", &["v1", "v2", "v3"]).await;
    let snaps = format!("/api/application/consistency-groups/{cg}/snapshots");
    // v3 already has a snapshot of the name: the whole group snapshot is refused.
    c.create_snapshot(&v3, "daily").await;
    let (status, body) = c.post(&format!("{snaps}?return_timeout=10"), json!({"name": "daily"})).await;
    assert_error(status, &body, StatusCode::CONFLICT, "525059");
    assert!(c.snapshot_names(&v1).await.is_empty());
    assert!(c.snapshot_names(&v2).await.is_empty());
    // An offline member: likewise.
    c.write_ok(Method::PATCH, &format!("/api/storage/volumes/{v2}"), json!({"state": "offline"})).await;
    let (status, body) = c.post(&snaps, json!({"name": "hourly"})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "524479");
    assert!(c.snapshot_names(&v1).await.is_empty());
    assert_eq!(c.snapshot_names(&v3).await, ["daily"]);
    assert_eq!(c.get_ok(&snaps).await["num_records"], 0);
    // A restore that cannot complete on every member changes none.
    c.write_ok(Method::PATCH, &format!("/api/storage/volumes/{v2}"), json!({"state": "online"})).await;
    c.put_file(&v1, "f", b"old").await;
    c.write_ok(Method::POST, &snaps, json!({"name": "hourly"})).await;
    c.put_file(&v1, "f", b"new").await;
    c.write_ok(Method::PATCH, &format!("/api/storage/volumes/{v3}"), json!({"state": "offline"})).await;
    let (status, body) = c.patch(&format!("/api/application/consistency-groups/{cg}"), json!({"restore_to": {"snapshot": {"name": "hourly"}}})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "917775");
    assert_eq!(c.read_file(&v1, "f").await, b"new");
    c.write_ok(Method::PATCH, &format!("/api/storage/volumes/{v3}"), json!({"state": "online"})).await;

    // A group snapshot one member's clone depends on: deleting it is refused on every member,
    // and a restore that would delete it (to an older group snapshot) is refused too.
    c.write_ok(Method::POST, &snaps, json!({"name": "later"})).await;
    let (status, body) = c
        .post("/api/storage/volumes?return_timeout=10", json!({"name": "c2", "svm": {"name": "svm0"}, "clone": {"parent_volume": {"name": "v2"}, "parent_snapshot": {"name": "later"}, "is_flexclone": true}}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let group = c.get_ok(&format!("{snaps}?name=later")).await;
    let later = group["records"][0]["uuid"].as_str().unwrap();
    let (status, body) = c.delete(&format!("{snaps}/{later}")).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "1638543");
    for v in [&v1, &v2, &v3] {
        assert!(c.snapshot_names(v).await.contains(&"later".to_string()));
    }
    let (status, body) = c.patch(&format!("/api/application/consistency-groups/{cg}"), json!({"restore_to": {"snapshot": {"name": "hourly"}}})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "1638480");
    assert_eq!(c.read_file(&v1, "f").await, b"new");
    assert_eq!(c.snapshot_names(&v1).await, ["hourly", "later"]);
    assert_eq!(names(&c.get_ok(&snaps).await), ["hourly", "later"]);
}

// ---------------------------------------------------------------------------------------------
// The /sim/v1 data plane

#[tokio::test]
async fn control_files_and_listings() {
    let (_sim, c) = start().await;
    let uuid = c.create_volume("v1", json!({})).await;
    let files = format!("/sim/v1/volumes/{uuid}/files");
    c.put_file(&uuid, "dir/a.txt", b"hello world").await;
    assert_eq!(c.read_file(&uuid, "dir/a.txt").await, b"hello world");
    // A write at an offset patches the file in place.
    let rb = c.request(Method::PUT, &format!("{files}/dir/a.txt?offset=6"), None).body("WORLD!");
    assert_eq!(c.send(rb).await.0, StatusCode::NO_CONTENT);
    assert_eq!(c.read_file(&uuid, "dir/a.txt").await, b"hello WORLD!");
    assert_eq!(c.read_raw(&format!("{files}/dir/a.txt?offset=6&length=3")).await, b"WOR");
    assert_eq!(c.read_raw(&format!("{files}/dir/a.txt?offset=100")).await, b"");
    // A PUT without offset replaces the whole file.
    c.put_file(&uuid, "dir/b.txt", b"0123456789").await;
    c.put_file(&uuid, "dir/b.txt", b"abc").await;
    assert_eq!(c.read_file(&uuid, "dir/b.txt").await, b"abc");

    let root = c.get_ok(&files).await;
    assert_eq!(root["records"], json!([{"name": "dir", "type": "directory", "size": 2}]));
    let dir = c.get_ok(&format!("{files}/dir")).await;
    assert_eq!(dir["records"], json!([{"name": "a.txt", "type": "file", "size": 12}, {"name": "b.txt", "type": "file", "size": 3}]));

    // Snapshot reads see the snapshot's content, not the active file system's.
    c.create_snapshot(&uuid, "s1").await;
    c.put_file(&uuid, "dir/a.txt", b"changed").await;
    c.put_file(&uuid, "later.txt", b"x").await;
    assert_eq!(c.read_raw(&format!("/sim/v1/volumes/{uuid}/snapshots/s1/files/dir/a.txt")).await, b"hello WORLD!");
    assert_eq!(c.read_raw(&format!("/sim/v1/volumes/{uuid}/snapshots/s1/files/dir/a.txt?offset=6&length=5")).await, b"WORLD");
    let snap_root = c.get_ok(&format!("/sim/v1/volumes/{uuid}/snapshots/s1/files")).await;
    assert_eq!(names(&snap_root), ["dir"]);
    assert_eq!(names(&c.get_ok(&format!("/sim/v1/volumes/{uuid}/snapshots/s1/files/dir")).await), ["a.txt", "b.txt"]);
    assert_eq!(names(&c.get_ok(&files).await), ["dir", "later.txt"]);

    // Removal, and errors.
    let (status, _) = c.call(Method::DELETE, &format!("{files}/dir/b.txt"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = c.get(&format!("{files}/dir/b.txt")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    code(&body);
    let (status, body) = c.get(&format!("/sim/v1/volumes/{uuid}/snapshots/nope/files/dir/a.txt")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    code(&body);
    let (status, body) = c.get("/sim/v1/volumes/nope/files/x").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    code(&body);
    // An offline volume takes no writes.
    c.write_ok(Method::PATCH, &format!("/api/storage/volumes/{uuid}"), json!({"state": "offline"})).await;
    let rb = c.request(Method::PUT, &format!("{files}/x"), None).body("x");
    let (status, body) = c.send(rb).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn control_fill_and_space() {
    let (_sim, c) = start().await;
    let a = c.create_volume("a", json!({"size": 64 * MIB})).await;
    let b = c.create_volume("b", json!({"size": 64 * MIB})).await;
    let fill = |uuid: String, body: Value| {
        let c = c.clone();
        async move { c.post(&format!("/sim/v1/volumes/{uuid}/fill"), body).await }
    };
    let (status, body) = fill(a.clone(), json!({"bytes": 3 * MIB, "seed": 42})).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let space = c.volume(&a).await["space"].clone();
    assert_eq!(space["used"], 3 * MIB);
    assert_eq!(space["available"].as_u64().unwrap() + 3 * MIB + space["snapshot"]["reserve_size"].as_u64().unwrap(), 64 * MIB, "{space}");
    let data_a = c.read_file(&a, "fill.dat").await;
    assert_eq!(data_a.len() as u64, 3 * MIB);
    assert!(data_a.iter().any(|b| *b != 0));

    // Same seed, same bytes; another seed, other bytes; a named path and an odd size.
    fill(b.clone(), json!({"bytes": 3 * MIB, "seed": 42})).await;
    assert_eq!(c.read_file(&b, "fill.dat").await, data_a);
    fill(b.clone(), json!({"bytes": 5000, "seed": 43, "path": "d/other.dat"})).await;
    let other = c.read_file(&b, "d/other.dat").await;
    assert_eq!(other.len(), 5000);
    assert_ne!(other[..4096], data_a[..4096]);
    assert_eq!(c.volume(&b).await["space"]["used"], 3 * MIB + 8192);

    // Overwriting what a snapshot holds moves space into the snapshot.
    c.create_snapshot(&a, "s1").await;
    fill(a.clone(), json!({"bytes": 3 * MIB, "seed": 7})).await;
    let space = c.volume(&a).await["space"].clone();
    assert_eq!(space["used"], 3 * MIB);
    assert_eq!(space["snapshot"]["used"], 3 * MIB);
    let s1 = c.snapshot_uuid(&a, "s1").await;
    assert_eq!(c.get_ok(&format!("/api/storage/volumes/{a}/snapshots/{s1}?fields=size")).await["size"], 3 * MIB);
    assert_eq!(c.read_raw(&format!("/sim/v1/volumes/{a}/snapshots/s1/files/fill.dat")).await, data_a);

    // Too much for the volume: refused, nothing written.
    let (status, body) = fill(b.clone(), json!({"bytes": 100 * MIB, "path": "huge"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    code(&body);
    assert_eq!(c.volume(&b).await["space"]["used"], 3 * MIB + 8192);
    let (status, _) = fill(b.clone(), json!({"bytes": 1, "colour": "red"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

// ---------------------------------------------------------------------------------------------
// Fault injection

fn plain_client() -> reqwest::Client {
    // No connection reuse, so a dropped connection affects exactly one request.
    reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap()
}

#[tokio::test]
async fn fault_error_and_rule_management() {
    let (_sim, c) = start().await;
    let id = c.add_fault(json!({"method": "POST", "path": "/api/storage/volumes", "action": {"kind": "error", "status": 503, "code": 9000001, "message": "busy"}})).await;
    let (status, body) = c.post("/api/storage/volumes", json!({"name": "v", "svm": {"name": "svm0"}, "aggregates": [{"name": "aggr1"}]})).await;
    assert_error(status, &body, StatusCode::SERVICE_UNAVAILABLE, "9000001");
    assert_eq!(body["error"]["message"], "busy");
    assert_eq!(c.get_ok("/api/storage/volumes").await["num_records"], 0, "an error fault changes nothing");
    // Other methods and paths are untouched.
    assert_eq!(c.get("/api/storage/volumes").await.0, StatusCode::OK);
    let rules = c.get_ok("/sim/v1/faults").await;
    assert_eq!(rules["records"][0]["id"], id);
    assert_eq!(rules["records"][0]["hits"], 1);
    let (status, _) = c.call(Method::DELETE, &format!("/sim/v1/faults/{id}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = c.call(Method::DELETE, &format!("/sim/v1/faults/{id}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    c.create_volume("v", json!({})).await;

    // Globs: `*` within a segment, `**` across.
    c.add_fault(json!({"path": "/api/storage/volumes/*/snapshots", "action": {"kind": "error", "status": 500, "code": 1}})).await;
    let uuid = c.volume_uuid("v").await;
    assert_eq!(c.get(&format!("/api/storage/volumes/{uuid}/snapshots")).await.0, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(c.get(&format!("/api/storage/volumes/{uuid}")).await.0, StatusCode::OK);
    let (status, _) = c.call(Method::DELETE, "/sim/v1/faults", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(c.get_ok("/sim/v1/faults").await["records"], json!([]));
    assert_eq!(c.get(&format!("/api/storage/volumes/{uuid}/snapshots")).await.0, StatusCode::OK);

    // Bad rules are refused.
    for rule in [
        json!({"path": "/api/**", "action": {"kind": "error", "status": 200, "code": 1}}),
        json!({"path": "/api/**", "probability": 1.5, "action": {"kind": "job_hang"}}),
        json!({"path": "api", "action": {"kind": "job_hang"}}),
        json!({"path": "/api/**", "action": {"kind": "explode"}}),
    ] {
        let (status, body) = c.post("/sim/v1/faults", rule.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{rule}: {body}");
    }
}

#[tokio::test]
async fn fault_count_limits_hits() {
    let (_sim, c) = start().await;
    c.add_fault(json!({"method": "GET", "path": "/api/cluster", "count": 2, "action": {"kind": "error", "status": 502, "code": 7}})).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(c.get("/api/cluster").await.0.as_u16());
    }
    assert_eq!(statuses, [502, 502, 200, 200]);
}

#[tokio::test]
async fn fault_latency() {
    let (_sim, c) = start().await;
    c.add_fault(json!({"method": "GET", "path": "/api/cluster", "action": {"kind": "latency", "ms": 300}})).await;
    let started = Instant::now();
    assert_eq!(c.get("/api/cluster").await.0, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
    let started = Instant::now();
    assert_eq!(c.get("/api/svm/svms").await.0, StatusCode::OK);
    assert!(started.elapsed() < Duration::from_millis(300));

    // Latency after the change: a client that gives up early still changed the volume.
    c.add_fault(json!({"method": "POST", "path": "/api/storage/volumes", "action": {"kind": "latency", "ms": 1500}})).await;
    let impatient = c.request(Method::POST, "/api/storage/volumes", Some(&json!({"name": "v", "svm": {"name": "svm0"}, "aggregates": [{"name": "aggr1"}]}))).timeout(Duration::from_millis(200));
    assert!(impatient.send().await.is_err(), "the client timed out");
    assert_eq!(names(&c.get_ok("/api/storage/volumes").await), ["v"]);
}

#[tokio::test]
async fn fault_drop() {
    let (_sim, mut c) = start().await;
    c.http = plain_client();
    c.add_fault(json!({"method": "GET", "path": "/api/cluster", "count": 1, "action": {"kind": "drop"}})).await;
    let result = c.request(Method::GET, "/api/cluster", None).send().await;
    assert!(result.is_err(), "the connection was dropped: {result:?}");
    assert_eq!(c.get("/api/cluster").await.0, StatusCode::OK, "the server lives on");

    let create = |name: &str| json!({"name": name, "svm": {"name": "svm0"}, "aggregates": [{"name": "aggr1"}]});
    c.add_fault(json!({"method": "POST", "path": "/api/storage/volumes", "count": 1, "action": {"kind": "drop"}})).await;
    assert!(c.request(Method::POST, "/api/storage/volumes", Some(&create("lost"))).send().await.is_err());
    assert_eq!(c.get_ok("/api/storage/volumes").await["num_records"], 0, "without after_apply nothing changed");

    c.add_fault(json!({"method": "POST", "path": "/api/storage/volumes", "count": 1, "action": {"kind": "drop", "after_apply": true}})).await;
    assert!(c.request(Method::POST, "/api/storage/volumes", Some(&create("applied"))).send().await.is_err());
    assert_eq!(names(&c.get_ok("/api/storage/volumes").await), ["applied"], "with after_apply the change happened");
}

#[tokio::test]
async fn fault_job_fail() {
    let (_sim, c) = start().await;
    let uuid = c.create_volume("v", json!({})).await;
    c.add_fault(json!({"method": "POST", "path": "/api/storage/volumes/*/snapshots", "count": 1, "action": {"kind": "job_fail", "code": 1638537, "message": "Cannot determine the status."}})).await;
    let (status, body) = c.post(&format!("/api/storage/volumes/{uuid}/snapshots"), json!({"name": "s1"})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let job = c.wait_job(body["job"]["uuid"].as_str().unwrap()).await;
    assert_eq!(job["state"], "failure");
    assert_eq!(job["code"], 1638537);
    assert_eq!(job["message"], "Cannot determine the status.");
    assert!(job["end_time"].is_string());
    assert!(c.snapshot_names(&uuid).await.is_empty(), "a failed job changed nothing");
    // The rule is spent: the next one works.
    c.create_snapshot(&uuid, "s1").await;

    // An invalid request still fails at once, job fault or not.
    c.add_fault(json!({"path": "/api/storage/volumes/*", "action": {"kind": "job_fail", "code": 1}})).await;
    let (status, body) = c.patch(&format!("/api/storage/volumes/{uuid}"), json!({"bogus": 1})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "2");
    // With a return_timeout the failure is the answer.
    let (status, body) = c.patch(&format!("/api/storage/volumes/{uuid}?return_timeout=5"), json!({"comment": "x"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(code(&body), "1");
    assert!(c.volume(&uuid).await.get("comment").is_none());
    // Reads are never job-faulted.
    assert_eq!(c.get(&format!("/api/storage/volumes/{uuid}")).await.0, StatusCode::OK);
}

#[tokio::test]
async fn fault_job_hang() {
    let (_sim, c) = start().await;
    let uuid = c.create_volume("v", json!({})).await;
    c.add_fault(json!({"method": "DELETE", "path": "/api/storage/volumes/*", "action": {"kind": "job_hang"}})).await;
    let (status, body) = c.delete(&format!("/api/storage/volumes/{uuid}")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let job_uuid = body["job"]["uuid"].as_str().unwrap();
    for _ in 0..3 {
        let job = c.get_ok(&format!("/api/cluster/jobs/{job_uuid}")).await;
        assert_eq!(job["state"], "running", "{job}");
        assert!(job.get("end_time").is_none(), "{job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(c.get(&format!("/api/storage/volumes/{uuid}")).await.0, StatusCode::OK, "a hung job changed nothing");
    // With a return_timeout the server waits that long, then answers 202.
    let started = Instant::now();
    let (status, _) = c.call(Method::DELETE, &format!("/api/storage/volumes/{uuid}?return_timeout=1"), Some(&json!({}))).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(c.get(&format!("/api/storage/volumes/{uuid}")).await.0, StatusCode::OK);
}

#[tokio::test]
async fn fault_job_delay() {
    let (_sim, c) = start().await;
    c.add_fault(json!({"method": "POST", "path": "/api/storage/volumes", "action": {"kind": "job_delay", "ms": 400}})).await;
    let (status, body) = c.post("/api/storage/volumes", json!({"name": "slow", "svm": {"name": "svm0"}, "aggregates": [{"name": "aggr1"}]})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let job_uuid = body["job"]["uuid"].as_str().unwrap().to_string();
    let job = c.get_ok(&format!("/api/cluster/jobs/{job_uuid}")).await;
    assert_eq!(job["state"], "running");
    assert_eq!(c.get_ok("/api/storage/volumes").await["num_records"], 0, "not applied yet");
    let job = c.wait_job(&job_uuid).await;
    assert_eq!(job["state"], "success");
    assert_eq!(names(&c.get_ok("/api/storage/volumes").await), ["slow"]);

    // Within return_timeout: the answer waits for the job and is 201.
    let started = Instant::now();
    let (status, body) = c.post("/api/storage/volumes?return_timeout=5", json!({"name": "slow2", "svm": {"name": "svm0"}, "aggregates": [{"name": "aggr1"}]})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(started.elapsed() >= Duration::from_millis(400));
    c.volume_uuid("slow2").await;
    // A request the job could never carry out is refused at once, before any job.
    let jobs_before = c.get_ok("/api/cluster/jobs?return_records=false").await["num_records"].clone();
    let (status, body) = c.post("/api/storage/volumes", json!({"name": "slow", "svm": {"name": "svm0"}, "aggregates": [{"name": "aggr1"}]})).await;
    assert_error(status, &body, StatusCode::CONFLICT, "917526");
    assert_eq!(c.get_ok("/api/cluster/jobs?return_records=false").await["num_records"], jobs_before);
}

#[tokio::test]
async fn fault_probability_is_seeded() {
    async fn pattern(c: &Client) -> Vec<bool> {
        let mut hits = Vec::new();
        for _ in 0..32 {
            hits.push(c.get("/api/cluster").await.0 == StatusCode::SERVICE_UNAVAILABLE);
        }
        hits
    }
    let rule = json!({"method": "GET", "path": "/api/cluster", "probability": 0.5, "action": {"kind": "error", "status": 503, "code": 1}});
    let seeded = |seed| SimConfig { cluster: ClusterConfig { seed, ..ClusterConfig::default() }, ..SimConfig::default() };
    let (_a, ca) = start_with(seeded(7)).await;
    let (_b, cb) = start_with(seeded(7)).await;
    let (_d, cd) = start_with(seeded(8)).await;
    for c in [&ca, &cb, &cd] {
        c.add_fault(rule.clone()).await;
    }
    let (pa, pb, pd) = (pattern(&ca).await, pattern(&cb).await, pattern(&cd).await);
    assert_eq!(pa, pb, "same seed, same faults");
    assert_ne!(pa, pd, "another seed, other faults");
    let hits = pa.iter().filter(|h| **h).count();
    assert!((6..=26).contains(&hits), "probability 0.5 hit {hits}/32");
    // Reseeding replays the sequence.
    let (status, _) = ca.post("/sim/v1/seed", json!({"seed": 7})).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(pattern(&ca).await, pa);
    let (status, _) = ca.post("/sim/v1/seed", json!({"seed": "x"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // The seed also fixes the uuids handed out.
    c_clear_faults(&[&ca, &cb, &cd]).await;
    let (ua, ub, ud) = (ca.create_volume("v", json!({})).await, cb.create_volume("v", json!({})).await, cd.create_volume("v", json!({})).await);
    assert_eq!(ua, ub);
    assert_ne!(ua, ud);
}

async fn c_clear_faults(clients: &[&Client]) {
    for c in clients {
        let (status, _) = c.call(Method::DELETE, "/sim/v1/faults", None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
    }
}

// ---------------------------------------------------------------------------------------------
// TLS

#[tokio::test]
async fn tls_with_the_written_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let config = SimConfig { tls_dir: Some(dir.path().to_path_buf()), ..SimConfig::default() };
    let sim = spawn(config).await.unwrap();
    assert!(sim.base_url().starts_with("https://127.0.0.1:"), "{}", sim.base_url());
    let cert_path = dir.path().join("ontap-sim-cert.pem");
    assert_eq!(sim.cert_path(), Some(cert_path.as_path()));
    let pem = std::fs::read(&cert_path).unwrap();
    assert_eq!(sim.cert_pem().unwrap().as_bytes(), pem.as_slice());

    let pinned = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let response = pinned.get(format!("{}/api/cluster", sim.base_url())).basic_auth("admin", Some("admin")).send().await.expect("TLS with the pinned certificate");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.unwrap()["name"], "sim-a");
    let by_name = pinned.get(format!("https://localhost:{}/api/cluster", sim.addr().port())).basic_auth("admin", Some("admin")).send().await.expect("localhost is in the certificate");
    assert_eq!(by_name.status(), StatusCode::OK);

    let unpinned = reqwest::Client::builder().tls_built_in_root_certs(true).build().unwrap();
    assert!(unpinned.get(format!("{}/api/cluster", sim.base_url())).send().await.is_err(), "an unknown self-signed certificate is refused");
    let plain_http = reqwest::Client::new().get(format!("http://{}/api/cluster", sim.addr())).basic_auth("admin", Some("admin")).send().await;
    assert!(plain_http.is_err() || !plain_http.unwrap().status().is_success(), "plain HTTP is not served on the TLS port");
    sim.shutdown().await;
}


// ---------------------------------------------------------------------------------------------
// Reading back what was set; robustness

#[tokio::test]
async fn patch_never_makes_a_volume_read_back_as_what_it_is_not() {
    let (_sim, c) = start().await;
    let uuid = c.create_volume("v1", json!({"nas": {"path": "/v1"}, "size": 40 * MIB})).await;
    let path = format!("/api/storage/volumes/{uuid}");
    // Empty objects set nothing.
    c.write_ok(Method::PATCH, &path, json!({"nas": {}, "space": {}})).await;
    let v = c.volume(&uuid).await;
    assert_eq!(v["nas"]["path"], "/v1", "{v}");
    assert_eq!(v["space"]["size"], 40 * MIB, "{v}");
    // Modelled fields fixed at creation cannot be PATCHed (nor stored as if they were).
    for (body, field) in [
        (json!({"svm": {"name": "other"}}), "svm.name"),
        (json!({"type": "dp"}), "type"),
        (json!({"aggregates": [{"name": "aggr9"}]}), "aggregates"),
        (json!({"style": "flexgroup"}), "style"),
        (json!({"clone": {"parent_volume": {"name": "x"}}}), "clone.parent_volume.name"),
        (json!({"clone": {"is_flexclone": true}}), "clone.is_flexclone"),
    ] {
        let (status, resp) = c.patch(&path, body.clone()).await;
        assert_error(status, &resp, StatusCode::BAD_REQUEST, "2");
        assert_eq!(target(&resp), field, "{body}");
    }
    let v = c.volume(&uuid).await;
    assert_eq!((v["svm"]["name"].as_str(), v["type"].as_str(), v["style"].as_str()), (Some("svm0"), Some("rw"), Some("flexvol")));
    assert_eq!(v["aggregates"][0]["name"], "aggr1");
    assert_eq!(v["clone"]["is_flexclone"], false);

    // Snapshot reserve: up to 100 percent by PATCH (90 at create), never more.
    let (status, body) = c.patch(&path, json!({"space": {"snapshot": {"reserve_percent": 150}}})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "2");
    assert_eq!(target(&body), "space.snapshot.reserve_percent");
    c.write_ok(Method::PATCH, &path, json!({"space": {"snapshot": {"reserve_percent": 100}}})).await;
    let v = c.volume(&uuid).await;
    assert_eq!(v["space"]["snapshot"]["reserve_percent"], 100);
    assert_eq!(v["space"]["available"], 0);
    assert_eq!(c.get_ok("/api/storage/volumes?fields=space").await["num_records"], 1);
    let (status, body) = c.post("/api/storage/volumes", json!({"name": "v2", "svm": {"name": "svm0"}, "aggregates": [{"name": "aggr1"}], "space": {"snapshot": {"reserve_percent": 95}}})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "917835");
    assert_eq!(target(&body), "space.snapshot.reserve_percent");

    // A clone takes the reserve it is asked for, like any create.
    c.write_ok(Method::PATCH, &path, json!({"space": {"snapshot": {"reserve_percent": 5}}})).await;
    let (status, body) = c
        .post("/api/storage/volumes?return_timeout=10", json!({"name": "c1", "svm": {"name": "svm0"}, "clone": {"parent_volume": {"name": "v1"}, "is_flexclone": true}, "space": {"snapshot": {"reserve_percent": 12}}}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let clone = c.volume_uuid("c1").await;
    assert_eq!(c.volume(&clone).await["space"]["snapshot"]["reserve_percent"], 12);
}

#[tokio::test]
async fn control_offsets_are_bounded() {
    let (_sim, c) = start().await;
    let uuid = c.create_volume("v1", json!({})).await;
    c.put_file(&uuid, "f", b"hello").await;
    let files = format!("/sim/v1/volumes/{uuid}/files");
    for offset in [u64::MAX - 1, 1 << 50, 20 * MIB] {
        let started = Instant::now();
        let rb = c.request(Method::PUT, &format!("{files}/f?offset={offset}"), None).body("xyz");
        let (status, body) = c.send(rb).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "offset {offset}: {body}");
        assert_eq!(target(&body), "offset");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    // Up to the volume's size is fine, and sparse.
    let rb = c.request(Method::PUT, &format!("{files}/g?offset={}", 20 * MIB - 3), None).body("end");
    assert_eq!(c.send(rb).await.0, StatusCode::NO_CONTENT);
    assert_eq!(c.read_raw(&format!("{files}/g?offset={}", 20 * MIB - 4)).await, b"\0end");
    assert_eq!(c.volume(&uuid).await["space"]["used"], 2 * 4096);
    // Reads past the end, or longer than anything, just stop at the end.
    assert_eq!(c.read_raw(&format!("{files}/f?offset=1&length={}", u64::MAX)).await, b"ello");
    assert_eq!(c.read_raw(&format!("{files}/f?offset={}&length={}", u64::MAX, u64::MAX)).await, b"");
    assert_eq!(c.read_file(&uuid, "f").await, b"hello");
}

/// A clock that can be made to fail: the simulator's injectable clock is how a panic can be
/// provoked inside request handling without any test-only code in the simulator.
struct FailingClock(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl ontap_sim::sim::Clock for FailingClock {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        assert!(!self.0.load(std::sync::atomic::Ordering::SeqCst), "injected clock failure");
        chrono::Utc::now()
    }
}

#[tokio::test]
async fn a_panicking_request_is_an_ontap_500_and_changes_nothing() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let failing = Arc::new(AtomicBool::new(false));
    let sim = ontap_sim::Simulator::with_clock(&ClusterConfig::default(), Arc::new(FailingClock(failing.clone())));
    let running = ontap_sim::server::spawn_with(sim, SimConfig::default()).await.unwrap();
    let c = Client::new(&running);
    let uuid = c.create_volume("v1", json!({})).await;
    c.put_file(&uuid, "f", b"before").await;

    failing.store(true, Ordering::SeqCst);
    let (status, body) = c.post(&format!("/api/storage/volumes/{uuid}/snapshots"), json!({"name": "s1"})).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    code(&body);
    let rb = c.request(Method::PUT, &format!("/sim/v1/volumes/{uuid}/files/f"), None).body("during");
    let (status, body) = c.send(rb).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    code(&body);
    // The server still answers, and nothing changed.
    assert_eq!(c.get_ok(&format!("/api/storage/volumes/{uuid}")).await["name"], "v1");
    assert!(c.snapshot_names(&uuid).await.is_empty());
    assert_eq!(c.read_file(&uuid, "f").await, b"before");

    failing.store(false, Ordering::SeqCst);
    c.create_snapshot(&uuid, "s1").await;
    c.put_file(&uuid, "f", b"after").await;
    assert_eq!(c.read_file(&uuid, "f").await, b"after");
    running.shutdown().await;
}

#[tokio::test]
async fn group_snapshot_whose_members_were_deleted_is_gone() {
    let (_sim, c) = start().await;
    let v1 = c.create_volume("v1", json!({})).await;
    let v2 = c.create_volume("v2", json!({})).await;
    let cg = create_cg(&c, "cg1", &["v1", "v2"]).await;
    let snaps = format!("/api/application/consistency-groups/{cg}/snapshots");
    c.write_ok(Method::POST, &snaps, json!({"name": "s"})).await;
    // Retention deletes member snapshots through the volume API.
    let s1 = c.snapshot_uuid(&v1, "s").await;
    c.write_ok(Method::DELETE, &format!("/api/storage/volumes/{v1}/snapshots/{s1}"), json!({})).await;
    let list = c.get_ok(&format!("{snaps}?fields=is_partial")).await;
    assert_eq!(list["records"][0]["is_partial"], json!(true), "one member left: partial");
    let s2 = c.snapshot_uuid(&v2, "s").await;
    c.write_ok(Method::DELETE, &format!("/api/storage/volumes/{v2}/snapshots/{s2}"), json!({})).await;
    assert_eq!(c.get_ok(&snaps).await["num_records"], 0, "no member left: the group snapshot is gone");
    // ... and its name is free again.
    c.write_ok(Method::POST, &snaps, json!({"name": "s"})).await;
    assert_eq!(c.snapshot_names(&v1).await, ["s"]);
}
