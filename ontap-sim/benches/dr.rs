//! SnapMirror transfer size: two simulators on 127.0.0.1, a 1 GiB source volume filled and
//! mirrored, then 1% of its blocks overwritten with distinct data and one update sent.
//!
//! `cargo bench -p ontap-sim --bench dr` prints the update's `bytes_transferred` (the bytes
//! that really crossed between the simulators) as a share of the volume, goal <= 1.2%, and
//! the baseline's bytes and the update's wall time. A report, not a test.

use std::time::{Duration, Instant};

use ontap_sim::{spawn, ClusterConfig, RunningSim, SimConfig};
use serde_json::{json, Value};

const GIB: u64 = 1 << 30;
const BLOCK: u64 = 4096;

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(sim: &RunningSim) -> Self {
        Api { http: reqwest::Client::new(), base: sim.base_url() }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let response = self.http.request(method.clone(), format!("{}{path}", self.base)).basic_auth("admin", Some("admin")).json(&body).send().await.expect("request");
        let status = response.status();
        let value: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{method} {path}: {status} {value}");
        if let Some(job) = value["job"]["uuid"].as_str() {
            loop {
                let j = self.get(&format!("/api/cluster/jobs/{job}")).await;
                match j["state"].as_str() {
                    Some("success") => break,
                    Some("failure") => panic!("{method} {path}: {j}"),
                    _ => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
        }
        value
    }

    async fn get(&self, path: &str) -> Value {
        self.http.get(format!("{}{path}", self.base)).basic_auth("admin", Some("admin")).send().await.expect("request").json().await.expect("json")
    }

    async fn wait_idle(&self, rel: &str) -> Value {
        loop {
            let r = self.get(&format!("/api/snapmirror/relationships/{rel}?fields=*")).await;
            if !matches!(r["transfer"]["state"].as_str(), Some("queued" | "transferring")) {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let config = |name: &str, svm: &str| SimConfig { cluster: ClusterConfig { name: name.into(), svms: vec![svm.into()], ..ClusterConfig::default() }, ..SimConfig::default() };
    let a = spawn(config("sim-a", "svm0")).await.unwrap();
    let b = spawn(config("sim-b", "svm1")).await.unwrap();
    let (ca, cb) = (Api::new(&a), Api::new(&b));
    let passphrase = "bench-passphrase";
    ca.call(reqwest::Method::POST, "/api/cluster/peers", json!({"remote": {"ip_addresses": [b.addr().to_string()]}, "authentication": {"passphrase": passphrase}})).await;
    cb.call(reqwest::Method::POST, "/api/cluster/peers", json!({"remote": {"ip_addresses": [a.addr().to_string()]}, "authentication": {"passphrase": passphrase}})).await;
    ca.call(reqwest::Method::POST, "/api/svm/peers", json!({"svm": {"name": "svm0"}, "peer": {"svm": {"name": "svm1"}, "cluster": {"name": "sim-b"}}})).await;
    let peer = cb.get("/api/svm/peers").await["records"][0]["uuid"].as_str().unwrap().to_string();
    cb.call(reqwest::Method::PATCH, &format!("/api/svm/peers/{peer}"), json!({"state": "peered"})).await;

    // A 1 GiB volume, filled (synthetic data, in-process), mirrored.
    let size = GIB + GIB / 10;
    ca.call(reqwest::Method::POST, "/api/storage/volumes", json!({"name": "vol1", "svm": {"name": "svm0"}, "aggregates": [{"name": "aggr1"}], "size": size})).await;
    let src = a.sim().volume_uuid("svm0", "vol1").unwrap();
    a.sim().fill(&src, "data.bin", GIB, 7).unwrap();
    cb.call(reqwest::Method::POST, "/api/snapmirror/relationships", json!({"source": {"path": "svm0:vol1"}, "destination": {"path": "svm1:vol1_dst"}, "policy": {"name": "MirrorAllSnapshots"}, "create_destination": {"enabled": true}})).await;
    let rel = cb.get("/api/snapmirror/relationships").await["records"][0]["uuid"].as_str().unwrap().to_string();
    let started = Instant::now();
    cb.call(reqwest::Method::PATCH, &format!("/api/snapmirror/relationships/{rel}"), json!({"state": "snapmirrored"})).await;
    let r = cb.wait_idle(&rel).await;
    assert_eq!(r["state"], "snapmirrored", "{r}");
    let baseline_bytes = r["transfer"]["bytes_transferred"].as_u64().unwrap();
    let baseline_time = started.elapsed();

    // Overwrite 1% of the blocks, spread over the file, each with distinct data.
    let blocks = GIB / BLOCK;
    let n = blocks / 100;
    let mut state = 42u64;
    let mut chosen = std::collections::BTreeSet::new();
    while (chosen.len() as u64) < n {
        state = splitmix(state);
        chosen.insert(state % blocks);
    }
    for (i, index) in chosen.iter().enumerate() {
        let mut data = vec![0u8; BLOCK as usize];
        for (j, chunk) in data.chunks_mut(8).enumerate() {
            chunk.copy_from_slice(&splitmix((i as u64) << 32 | j as u64).to_le_bytes());
        }
        a.sim().write_file(&src, "data.bin", index * BLOCK, &data).unwrap();
    }
    let started = Instant::now();
    let (status, body) = {
        let response = cb.http.post(format!("{}/api/snapmirror/relationships/{rel}/transfers", cb.base)).basic_auth("admin", Some("admin")).json(&json!({})).send().await.unwrap();
        (response.status(), response.text().await.unwrap())
    };
    assert_eq!(status.as_u16(), 201, "{body}");
    let r = cb.wait_idle(&rel).await;
    let update_time = started.elapsed();
    assert_eq!(r["transfer"]["state"], "success", "{r}");
    let update_bytes = r["transfer"]["bytes_transferred"].as_u64().unwrap();
    // The destination must now read what the source holds.
    let dst = b.sim().volume_uuid("svm1", "vol1_dst").unwrap();
    let probe = *chosen.iter().nth(n as usize / 2).unwrap() * BLOCK;
    assert_eq!(a.sim().read_file(&src, "data.bin", probe, Some(BLOCK)).unwrap(), b.sim().read_file(&dst, "data.bin", probe, Some(BLOCK)).unwrap());

    let share = update_bytes as f64 / GIB as f64 * 100.0;
    println!("SnapMirror update after overwriting 1% of a 1 GiB volume ({n} of {blocks} blocks):");
    println!("  bytes_transferred      {update_bytes} bytes = {share:.3}% of the volume (goal <= 1.2%: {})", if share <= 1.2 { "MET" } else { "MISSED" });
    println!("  changed data           {} bytes; stream overhead {:.2}%", n * BLOCK, (update_bytes as f64 / (n * BLOCK) as f64 - 1.0) * 100.0);
    println!("  update wall time       {:.0} ms", update_time.as_secs_f64() * 1000.0);
    println!("  baseline (initialize)  {baseline_bytes} bytes for 1 GiB of synthetic data (16 distinct blocks: each sent once, the rest as 13-byte references), {:.0} ms", baseline_time.as_secs_f64() * 1000.0);
}
