//! A simulator that goes offline stops answering on the network for real (the connection
//! is refused), keeps its state, and comes back on the same address with that state.

use ontap_sim::model::cluster::{Selector, VolumeCreate};
use ontap_sim::{spawn, SimConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_refuses_connections_and_come_back_keeps_the_state() {
    let mut sim = spawn(SimConfig::default()).await.expect("simulator starts");
    let url = format!("{}/api/storage/volumes?fields=name", sim.base_url());
    let http = reqwest::Client::new();
    let get = || http.get(&url).basic_auth("admin", Some("admin")).send();
    assert!(get().await.expect("online").status().is_success());

    sim.go_offline().await;
    assert!(!sim.is_online());
    let refused = get().await.expect_err("an offline simulator must not answer");
    assert!(refused.is_connect(), "the connection is refused, not answered: {refused:?}");
    // Its disks persist: the in-process handle still works while it is offline.
    let req = VolumeCreate {
        name: "made_offline".into(),
        svm: Selector { name: Some("svm0".into()), uuid: None },
        aggregates: vec![Selector { name: Some("aggr1".into()), uuid: None }],
        size: Some(1 << 30),
        ..Default::default()
    };
    sim.sim().transact(|s| s.create_volume(req, chrono::Utc::now())).expect("volume created in-process");

    let addr = sim.addr();
    sim.come_back().await.expect("the simulator comes back");
    assert!(sim.is_online() && sim.addr() == addr);
    let body: serde_json::Value = get().await.expect("online again").json().await.expect("json");
    let names: Vec<&str> = body["records"].as_array().expect("records").iter().filter_map(|r| r["name"].as_str()).collect();
    assert!(names.contains(&"made_offline"), "{body}");
    sim.shutdown().await;
}
