//! The `Replication` seam against answers shaped as a real ONTAP 9.x array gives them
//! (wiremock): peering, relationships, state changes, transfers, dp volumes.

mod support;

use std::time::Duration;

use ontap_client::OntapClient;
use serde_json::{json, Value};
use stasis_core::replication::{MirrorState, Replication, TransferState, VolumePath};
use stasis_core::storage::StorageError;
use support::{config, PASSWORD};
use wiremock::matchers::{basic_auth, body_json, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn client(server: &MockServer) -> OntapClient {
    OntapClient::new(config(&server.uri())).expect("valid config")
}

fn job_accepted(uuid: &str) -> Value {
    json!({"job": {"uuid": uuid, "_links": {"self": {"href": format!("/api/cluster/jobs/{uuid}")}}}})
}

async fn mount_job(server: &MockServer, uuid: &str, state: &str, code: u64, message: &str) {
    Mock::given(method("GET"))
        .and(path(format!("/api/cluster/jobs/{uuid}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"uuid": uuid, "state": state, "code": code, "message": message})))
        .mount(server)
        .await;
}

fn records(records: Vec<Value>) -> Value {
    let n = records.len();
    json!({"records": records, "num_records": n})
}

/// A relationship as `GET /api/snapmirror/relationships?fields=...` returns it.
fn relationship(uuid: &str, source: &str, destination: &str, state: &str) -> Value {
    json!({
        "uuid": uuid,
        "source": {"path": source, "svm": {"name": source.split(':').next().unwrap(), "uuid": "s-svm"}, "cluster": {"name": "sim-a", "uuid": "c-a"}},
        "destination": {"path": destination, "svm": {"name": destination.split(':').next().unwrap(), "uuid": "d-svm"}},
        "policy": {"name": "Asynchronous", "uuid": "p1", "type": "async"},
        "state": state,
        "healthy": state != "broken_off",
        "lag_time": "PT2M31S",
        "transfer": {"uuid": "t-old", "state": "success", "bytes_transferred": 8192},
        "_links": {"self": {"href": format!("/api/snapmirror/relationships/{uuid}")}}
    })
}

#[tokio::test]
async fn a_relationship_is_created_as_documented_and_read_back() {
    let server = MockServer::start().await;
    let lookups = Mock::given(method("GET"))
        .and(path("/api/snapmirror/relationships"))
        .and(query_param("destination.path", "svm_dr:db_data"));
    // First lookup (before the create): none. Then the created one.
    lookups
        .respond_with(ResponseTemplate::new(200).set_body_json(records(vec![])))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/snapmirror/relationships"))
        .and(query_param("destination.path", "svm_dr:db_data"))
        .respond_with(ResponseTemplate::new(200).set_body_json(records(vec![relationship("r1", "svm0:db_data", "svm_dr:db_data", "uninitialized")])))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/snapmirror/relationships"))
        .and(basic_auth("admin", PASSWORD))
        .and(body_json(json!({"source": {"path": "svm0:db_data"}, "destination": {"path": "svm_dr:db_data"}, "policy": {"name": "Asynchronous"}})))
        .respond_with(ResponseTemplate::new(202).set_body_json(job_accepted("j1")).insert_header("Location", "/api/snapmirror/relationships/?destination.path=svm_dr:db_data"))
        .expect(1)
        .mount(&server)
        .await;
    mount_job(&server, "j1", "success", 0, "success").await;

    let r = client(&server)
        .create_relationship(&VolumePath::new("svm0", "db_data"), &VolumePath::new("svm_dr", "db_data"), "Asynchronous")
        .await
        .unwrap();
    assert_eq!(r.uuid, "r1");
    assert_eq!(r.source, VolumePath::new("svm0", "db_data"));
    assert_eq!(r.state, MirrorState::Uninitialized);
    assert_eq!(r.lag_time, Some(Duration::from_secs(151)));
    assert_eq!(r.policy.as_deref(), Some("Asynchronous"));
    let t = r.transfer.unwrap();
    assert_eq!((t.state, t.bytes_transferred), (TransferState::Success, 8192));
}

#[tokio::test]
async fn an_existing_relationship_is_adopted_but_one_from_another_source_is_refused() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/snapmirror/relationships"))
        .and(query_param("destination.path", "svm_dr:db_data"))
        .respond_with(ResponseTemplate::new(200).set_body_json(records(vec![relationship("r1", "svm0:db_data", "svm_dr:db_data", "snapmirrored")])))
        .mount(&server)
        .await;
    let c = client(&server);
    let r = c.create_relationship(&VolumePath::new("svm0", "db_data"), &VolumePath::new("svm_dr", "db_data"), "Asynchronous").await.unwrap();
    assert_eq!((r.uuid.as_str(), r.state), ("r1", MirrorState::Snapmirrored));
    let err = c.create_relationship(&VolumePath::new("svm0", "other"), &VolumePath::new("svm_dr", "db_data"), "Asynchronous").await.unwrap_err();
    assert!(matches!(err, StorageError::Refused { code: 6_619_637, .. }), "{err:?}");
    assert_eq!(server.received_requests().await.unwrap().iter().filter(|r| r.method.as_str() == "POST").count(), 0, "never POSTed over an existing relationship");
}

#[tokio::test]
async fn state_changes_are_patches_awaited_as_jobs_and_job_failures_carry_ontap_codes() {
    let server = MockServer::start().await;
    Mock::given(method("PATCH"))
        .and(path("/api/snapmirror/relationships/r1"))
        .and(body_json(json!({"state": "broken_off"})))
        .respond_with(ResponseTemplate::new(202).set_body_json(job_accepted("j-break")))
        .expect(1)
        .mount(&server)
        .await;
    mount_job(&server, "j-break", "success", 0, "success").await;
    Mock::given(method("PATCH"))
        .and(path("/api/snapmirror/relationships/r2"))
        .and(body_json(json!({"state": "snapmirrored"})))
        .respond_with(ResponseTemplate::new(202).set_body_json(job_accepted("j-resync")))
        .mount(&server)
        .await;
    mount_job(&server, "j-resync", "failure", 13303810, "Transition to snapmirrored state failed").await;

    let c = client(&server);
    c.set_relationship_state("r1", MirrorState::BrokenOff).await.unwrap();
    let err = c.set_relationship_state("r2", MirrorState::Snapmirrored).await.unwrap_err();
    assert!(matches!(err, StorageError::Refused { code: 13303810, .. }), "{err:?}");
}

#[tokio::test]
async fn a_reverse_resync_patches_the_swapped_paths_with_state_snapmirrored() {
    let server = MockServer::start().await;
    Mock::given(method("PATCH"))
        .and(path("/api/snapmirror/relationships/r1"))
        .and(body_json(json!({"source": {"path": "svm_dr:db_data"}, "destination": {"path": "svm0:db_data"}, "state": "snapmirrored"})))
        .respond_with(ResponseTemplate::new(202).set_body_json(job_accepted("j-rev")))
        .expect(1)
        .mount(&server)
        .await;
    mount_job(&server, "j-rev", "success", 0, "success").await;
    client(&server).reverse_relationship("r1", &VolumePath::new("svm0", "db_data"), &VolumePath::new("svm_dr", "db_data")).await.unwrap();
}

#[tokio::test]
async fn an_update_names_its_snapshot_and_is_followed_by_its_location() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/snapmirror/relationships/r1/transfers"))
        .and(body_json(json!({"source_snapshot": "stasis_b-1"})))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"num_records": 1, "records": [{"uuid": "t1"}]})).insert_header("Location", "/api/snapmirror/relationships/r1/transfers/t1"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/snapmirror/relationships/r1/transfers/t1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "uuid": "t1", "state": "transferring", "bytes_transferred": 65536, "snapshot": "stasis_b-1",
            "relationship": {"uuid": "r1", "destination": {"path": "svm_dr:db_data"}},
            "_links": {"self": {"href": "/api/snapmirror/relationships/r1/transfers/t1"}}
        })))
        .mount(&server)
        .await;
    let t = client(&server).start_transfer("r1", Some("stasis_b-1")).await.unwrap();
    assert_eq!(t.uuid, "t1");
    assert_eq!(t.state, TransferState::Transferring);
    assert_eq!(t.bytes_transferred, 65536);
    assert_eq!(t.snapshot.as_deref(), Some("stasis_b-1"));
}

#[tokio::test]
async fn a_failed_transfer_reports_its_error_info() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/snapmirror/relationships/r1/transfers/t2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "uuid": "t2", "state": "failed", "bytes_transferred": 4096, "end_time": "2026-01-01T10:00:00-05:00",
            "error_info": {"code": 13303844, "message": "Update operation failed"}
        })))
        .mount(&server)
        .await;
    let t = client(&server).transfer("r1", "t2").await.unwrap();
    assert_eq!(t.state, TransferState::Failed);
    assert!(t.error.as_deref().unwrap().contains("13303844"), "{:?}", t.error);
    assert_eq!(t.end_time.unwrap().to_rfc3339(), "2026-01-01T15:00:00+00:00");
}

#[tokio::test]
async fn cluster_peering_offers_with_a_generated_passphrase_and_accepts_with_it() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/cluster/peers"))
        .and(query_param("return_records", "true"))
        .and(body_json(json!({"remote": {"ip_addresses": ["10.0.0.2"]}, "authentication": {"generate_passphrase": true}})))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"num_records": 1, "records": [{
            "uuid": "cp1", "name": "sim-b", "remote": {"ip_addresses": ["10.0.0.2"]},
            "authentication": {"passphrase": "pDzCrZfCp1Mjjmg2sQbRXf3d", "expiry_time": "2026-01-01T12:00:00Z"},
            "ip_address": "10.0.0.1"
        }]})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/cluster/peers"))
        .and(body_json(json!({"remote": {"ip_addresses": ["10.0.0.1"]}, "authentication": {"passphrase": "pDzCrZfCp1Mjjmg2sQbRXf3d"}})))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"num_records": 1, "records": [{"uuid": "cp2", "name": "sim-a", "remote": {"ip_addresses": ["10.0.0.1"]}}]})))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);
    let offer = c.create_cluster_peer(&["10.0.0.2".into()], None).await.unwrap();
    assert_eq!(offer.peer.name, "sim-b");
    let passphrase = offer.passphrase.clone().unwrap();
    let accepted = c.create_cluster_peer(&["10.0.0.1".into()], Some(&passphrase)).await.unwrap();
    assert_eq!((accepted.peer.uuid.as_str(), accepted.peer.name.as_str()), ("cp2", "sim-a"));
}

#[tokio::test]
async fn svm_peering_is_requested_for_snapmirror_and_accepted_by_patch() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/svm/peers"))
        .respond_with(ResponseTemplate::new(200).set_body_json(records(vec![])))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/svm/peers"))
        .respond_with(ResponseTemplate::new(200).set_body_json(records(vec![json!({
            "uuid": "sp1", "state": "initiated", "svm": {"name": "svm_dr", "uuid": "x"},
            "peer": {"svm": {"name": "svm0", "uuid": "y"}, "cluster": {"name": "sim-a", "uuid": "z"}},
            "applications": ["snapmirror"]
        })])))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/svm/peers"))
        .and(body_json(json!({"svm": {"name": "svm_dr"}, "peer": {"svm": {"name": "svm0"}, "cluster": {"name": "sim-a"}}, "applications": ["snapmirror"]})))
        .respond_with(ResponseTemplate::new(202).set_body_json(job_accepted("j-sp")))
        .expect(1)
        .mount(&server)
        .await;
    mount_job(&server, "j-sp", "success", 0, "success").await;
    Mock::given(method("PATCH"))
        .and(path("/api/svm/peers/sp9"))
        .and(body_json(json!({"state": "peered"})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);
    let p = c.create_svm_peer("svm_dr", "svm0", "sim-a").await.unwrap();
    assert_eq!((p.uuid.as_str(), p.state.as_str(), p.peer_cluster.as_str()), ("sp1", "initiated", "sim-a"));
    c.accept_svm_peer("sp9").await.unwrap();
}

#[tokio::test]
async fn a_dp_volume_goes_on_the_roomiest_aggregate_and_a_rw_namesake_is_refused() {
    let server = MockServer::start().await;
    let dp = json!({"uuid": "v-dp", "name": "db_data", "svm": {"name": "svm_dr"}, "state": "online", "type": "dp", "space": {"size": 1_073_741_824u64, "used": 0}});
    Mock::given(method("GET"))
        .and(path("/api/storage/volumes"))
        .and(query_param("name", "db_data"))
        .respond_with(ResponseTemplate::new(200).set_body_json(records(vec![])))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/storage/volumes"))
        .and(query_param("name", "db_data"))
        .respond_with(ResponseTemplate::new(200).set_body_json(records(vec![dp])))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/storage/volumes"))
        .and(query_param("name", "taken"))
        .respond_with(ResponseTemplate::new(200).set_body_json(records(vec![json!({"uuid": "v-rw", "name": "taken", "svm": {"name": "svm_dr"}, "state": "online", "type": "rw"})])))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/storage/aggregates"))
        .respond_with(ResponseTemplate::new(200).set_body_json(records(vec![
            json!({"uuid": "a1", "name": "aggr_small", "space": {"block_storage": {"available": 10}}}),
            json!({"uuid": "a2", "name": "aggr_big", "space": {"block_storage": {"available": 1_000_000}}}),
        ])))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/storage/volumes"))
        .and(body_json(json!({"name": "db_data", "svm": {"name": "svm_dr"}, "type": "dp", "size": 1_073_741_824u64, "aggregates": [{"name": "aggr_big"}]})))
        .respond_with(ResponseTemplate::new(202).set_body_json(job_accepted("j-vol")))
        .expect(1)
        .mount(&server)
        .await;
    mount_job(&server, "j-vol", "success", 0, "success").await;
    for uuid in ["v-dp", "v-rw"] {
        Mock::given(method("GET"))
            .and(path(format!("/api/storage/volumes/{uuid}/snapshots")))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"num_records": 0})))
            .mount(&server)
            .await;
    }
    let c = client(&server);
    let v = c.create_dp_volume("svm_dr", "db_data", 1 << 30).await.unwrap();
    assert_eq!(v.uuid, "v-dp");
    assert!(!v.writable, "a dp volume is read-only");
    let err = c.create_dp_volume("svm_dr", "taken", 1 << 30).await.unwrap_err();
    assert!(matches!(err, StorageError::Refused { code: 917526, .. }), "{err:?}");
}

#[tokio::test]
async fn snapshot_delta_reads_size_consumed_and_tolerates_its_absence() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/storage/volumes/v1/snapshots/s1"))
        .and(query_param("fields", "delta"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"uuid": "s1", "name": "n", "delta": {"size_consumed": 139264, "time_elapsed": "PT1S"}})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/storage/volumes/v1/snapshots/s2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"uuid": "s2", "name": "m"})))
        .mount(&server)
        .await;
    let c = client(&server);
    assert_eq!(c.snapshot_delta_bytes("v1", "s1").await.unwrap(), Some(139264));
    assert_eq!(c.snapshot_delta_bytes("v1", "s2").await.unwrap(), None);
}
