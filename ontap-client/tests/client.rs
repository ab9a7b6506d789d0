//! The client against what a real array would answer (wiremock), and against a server that
//! drops connections (the scripted server in `support`).

mod support;

use std::time::{Duration, Instant};

use ontap_client::{ConfigError, OntapClient, OntapConfig, SecretString, TlsTrust};
use serde_json::{json, Value};
use stasis_core::storage::{Storage, StorageError};
use support::{config, ScriptedServer, Step, PASSWORD};
use wiremock::matchers::{
    basic_auth, body_json, method, path, query_param, query_param_is_missing,
};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

fn client(base_url: &str) -> OntapClient {
    OntapClient::new(config(base_url)).expect("valid config")
}

fn job_accepted(uuid: &str) -> Value {
    json!({"job": {"uuid": uuid, "_links": {"self": {"href": format!("/api/cluster/jobs/{uuid}")}}}})
}

fn job(state: &str, code: u64, message: &str) -> Value {
    json!({"uuid": "j1", "state": state, "code": code, "message": message})
}

fn ontap_error(code: &str, message: &str, target: &str) -> Value {
    json!({"error": {"message": message, "code": code, "target": target}})
}

fn snapshot_record(uuid: &str, name: &str, create_time: &str) -> Value {
    json!({"uuid": uuid, "name": name, "create_time": create_time, "owners": []})
}

fn records(records: Vec<Value>) -> Value {
    let n = records.len();
    json!({"records": records, "num_records": n})
}

fn volume_record(uuid: &str, name: &str) -> Value {
    json!({
        "uuid": uuid, "name": name, "svm": {"name": "svm1"}, "state": "online", "type": "rw",
        "space": {"size": 1_073_741_824u64, "used": 4096}, "nas": {"path": format!("/{name}")}
    })
}

async fn requests_to(server: &MockServer, verb: &str, url_path: &str) -> Vec<Request> {
    server
        .received_requests()
        .await
        .expect("request recording on")
        .into_iter()
        .filter(|r| r.method.as_str() == verb && r.url.path() == url_path)
        .collect()
}

/// Answers the snapshot count every `VolumeInfo` needs.
async fn mount_snapshot_count(server: &MockServer, volume_uuid: &str, n: u64) {
    Mock::given(method("GET"))
        .and(path(format!(
            "/api/storage/volumes/{volume_uuid}/snapshots"
        )))
        .and(query_param("return_records", "false"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"num_records": n})))
        .mount(server)
        .await;
}

// ---------------------------------------------------------------- jobs

#[tokio::test]
async fn restore_polls_a_202_job_until_success() {
    let server = MockServer::start().await;
    Mock::given(method("PATCH"))
        .and(path("/api/storage/volumes/v1"))
        .and(query_param("restore_to.snapshot.name", "snap1"))
        .and(basic_auth("admin", PASSWORD))
        .respond_with(ResponseTemplate::new(202).set_body_json(job_accepted("j1")))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/cluster/jobs/j1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(job("running", 0, "restoring")))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/cluster/jobs/j1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(job("success", 0, "success")))
        .mount(&server)
        .await;

    client(&server.uri())
        .restore_volume("v1", "snap1")
        .await
        .expect("restore succeeds");

    let patches = requests_to(&server, "PATCH", "/api/storage/volumes/v1").await;
    assert_eq!(patches.len(), 1);
    assert_eq!(
        patches[0].body_json::<Value>().unwrap(),
        json!({}),
        "a restore carries no other change"
    );
    let polls = requests_to(&server, "GET", "/api/cluster/jobs/j1").await;
    assert_eq!(polls.len(), 3, "two polls saw running, the third success");
    let fields = polls[0]
        .url
        .query_pairs()
        .find(|(k, _)| k == "fields")
        .map(|(_, v)| v.to_string());
    assert_eq!(fields.as_deref(), Some("state,message,code"));
}

#[tokio::test]
async fn a_failed_job_is_its_typed_ontap_code() {
    let server = MockServer::start().await;
    Mock::given(method("DELETE"))
        .and(path("/api/storage/volumes/v1"))
        .and(body_json(json!({})))
        .respond_with(ResponseTemplate::new(202).set_body_json(job_accepted("j9")))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/cluster/jobs/j9"))
        .respond_with(ResponseTemplate::new(200).set_body_json(job(
            "failure",
            524615,
            "Failed to delete volume because it has one or more clones.",
        )))
        .mount(&server)
        .await;

    let error = client(&server.uri()).delete_volume("v1").await.unwrap_err();
    match error {
        StorageError::Refused { code, message, .. } => {
            assert_eq!(code, 524615);
            assert!(message.contains("clones"), "{message}");
        }
        other => panic!("expected Refused, got {other:?}"),
    }
}

#[tokio::test]
async fn a_job_that_never_finishes_is_indeterminate_within_job_wait_max() {
    let server = MockServer::start().await;
    Mock::given(method("PATCH"))
        .and(path("/api/storage/volumes/v1"))
        .respond_with(ResponseTemplate::new(202).set_body_json(job_accepted("j2")))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/cluster/jobs/j2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(job("running", 0, "")))
        .mount(&server)
        .await;
    let mut cfg = config(&server.uri());
    cfg.job_wait_max = Duration::from_millis(300);
    let started = Instant::now();
    let error = OntapClient::new(cfg)
        .unwrap()
        .split_clone("v1")
        .await
        .unwrap_err();
    assert!(error.is_indeterminate(), "{error:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "bounded by job_wait_max"
    );
    // The look that followed found no sign of the split.
}

// ---------------------------------------------------------------- snapshots

#[tokio::test]
async fn taking_a_snapshot_inside_a_freeze_is_one_request() {
    // Inside a freeze every round trip counts: take_snapshot answers on the POST's 201
    // and leaves reading the snapshot back to the caller, after the thaw.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/storage/volumes/v1/snapshots"))
        .and(body_json(json!({"name": "stasis-b1"})))
        .respond_with(ResponseTemplate::new(201).set_body_json(job_accepted("j1")))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&server)
        .await;
    client(&server.uri())
        .take_snapshot("v1", "stasis-b1", Duration::from_millis(1500))
        .await
        .expect("taken");
    assert_eq!(server.received_requests().await.expect("recorded").len(), 1, "one POST, nothing else");
}

#[tokio::test]
async fn snapshot_fast_path_201_reads_back_uuid_and_array_time() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/storage/volumes/v1/snapshots"))
        .and(query_param("return_timeout", "2"))
        .and(body_json(json!({"name": "stasis-b1"})))
        .respond_with(ResponseTemplate::new(201).set_body_json(job_accepted("j1")))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/storage/volumes/v1/snapshots"))
        .and(query_param("name", "stasis-b1"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(records(vec![snapshot_record(
                "s-uuid",
                "stasis-b1",
                "2024-05-01T12:00:01+02:00",
            )])),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/cluster/jobs/j1"))
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&server)
        .await;

    let snapshot = client(&server.uri())
        .create_snapshot("v1", "stasis-b1", Duration::from_millis(1500))
        .await
        .expect("created");
    assert_eq!(snapshot.uuid, "s-uuid");
    assert_eq!(snapshot.volume_uuid, "v1");
    assert_eq!(
        snapshot.create_time.to_rfc3339(),
        "2024-05-01T10:00:01+00:00"
    );
}

#[tokio::test]
async fn a_first_duplicate_is_refused_with_code_and_target_not_adopted() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/storage/volumes/v1/snapshots"))
        .respond_with(ResponseTemplate::new(409).set_body_json(ontap_error(
            "525059",
            "A snapshot with the specified name already exists.",
            "name",
        )))
        .expect(1)
        .mount(&server)
        .await;

    let error = client(&server.uri())
        .create_snapshot("v1", "stasis-b1", Duration::from_secs(2))
        .await
        .unwrap_err();
    assert_eq!(error.ontap_code(), Some(525059));
    match error {
        StorageError::Refused { target, .. } => assert_eq!(target.as_deref(), Some("name")),
        other => panic!("expected Refused, got {other:?}"),
    }
    // Nothing of ours could have landed, so the existing snapshot is someone else's.
    assert!(
        requests_to(&server, "GET", "/api/storage/volumes/v1/snapshots")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn a_snapshot_post_whose_connection_drops_is_adopted_after_one_lookup() {
    let found = records(vec![snapshot_record(
        "s-uuid",
        "stasis-b1",
        "2024-05-01T10:00:00Z",
    )])
    .to_string();
    let server = ScriptedServer::start(vec![
        ("POST", "/api/storage/volumes/v1/snapshots", Step::Drop),
        (
            "GET",
            "/api/storage/volumes/v1/snapshots?",
            Step::Reply(200, found),
        ),
    ])
    .await;

    let snapshot = client(&server.base_url)
        .create_snapshot("v1", "stasis-b1", Duration::from_secs(3))
        .await
        .expect("adopted");
    assert_eq!(snapshot.uuid, "s-uuid");
    assert_eq!(
        server.count("POST", "/api/storage/volumes/v1/snapshots"),
        1,
        "never re-POSTed: {:?}",
        server.seen()
    );
    assert_eq!(server.steps_left(), 0);
    let lookup = server
        .seen()
        .into_iter()
        .find(|s| s.method == "GET")
        .unwrap();
    assert!(
        lookup.target.contains("name=stasis-b1"),
        "{}",
        lookup.target
    );
}

#[tokio::test]
async fn a_duplicate_on_a_retried_create_means_the_first_landed() {
    let none = records(vec![]).to_string();
    let found = records(vec![snapshot_record(
        "s-uuid",
        "stasis-b1",
        "2024-05-01T10:00:00Z",
    )])
    .to_string();
    let duplicate = ontap_error(
        "525059",
        "A snapshot with the specified name already exists.",
        "name",
    )
    .to_string();
    let server = ScriptedServer::start(vec![
        ("POST", "/api/storage/volumes/v1/snapshots", Step::Drop),
        // The first POST is still being processed: not visible yet, so it is safe to send again...
        (
            "GET",
            "/api/storage/volumes/v1/snapshots?",
            Step::Reply(200, none),
        ),
        // ...and the second POST collides with the first.
        (
            "POST",
            "/api/storage/volumes/v1/snapshots",
            Step::Reply(409, duplicate),
        ),
        (
            "GET",
            "/api/storage/volumes/v1/snapshots?",
            Step::Reply(200, found),
        ),
    ])
    .await;

    let snapshot = client(&server.base_url)
        .create_snapshot("v1", "stasis-b1", Duration::from_secs(3))
        .await
        .expect("adopted");
    assert_eq!(snapshot.uuid, "s-uuid");
    assert_eq!(server.count("POST", "/api/storage/volumes/v1/snapshots"), 2);
    assert_eq!(server.steps_left(), 0, "{:?}", server.seen());
}

#[tokio::test]
async fn a_snapshot_past_its_deadline_is_indeterminate() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/storage/volumes/v1/snapshots"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(job_accepted("j1"))
                .set_delay(Duration::from_secs(5)),
        )
        .mount(&server)
        .await;

    let started = Instant::now();
    let error = client(&server.uri())
        .create_snapshot("v1", "stasis-b1", Duration::from_millis(400))
        .await
        .unwrap_err();
    assert!(error.is_indeterminate(), "{error:?}");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "took {:?}",
        started.elapsed()
    );
    let posts = requests_to(&server, "POST", "/api/storage/volumes/v1/snapshots").await;
    assert_eq!(posts.len(), 1);
    assert_eq!(
        posts[0].url.query(),
        Some("return_timeout=1"),
        "whole seconds, rounded up"
    );
}

#[tokio::test]
async fn a_202_at_the_deadline_is_indeterminate_without_polling() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/storage/volumes/v1/snapshots"))
        .respond_with(ResponseTemplate::new(202).set_body_json(job_accepted("j1")))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/cluster/jobs/j1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(job("success", 0, "")))
        .expect(0)
        .mount(&server)
        .await;

    let error = client(&server.uri())
        .create_snapshot("v1", "s", Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(error.is_indeterminate(), "{error:?}");
    assert!(error.to_string().contains("j1"), "names the job: {error}");
}

#[tokio::test]
async fn deleting_a_snapshot_that_is_gone_succeeds() {
    let server = MockServer::start().await;
    Mock::given(method("DELETE"))
        .and(path("/api/storage/volumes/v1/snapshots/s1"))
        .and(body_json(json!({})))
        .respond_with(ResponseTemplate::new(404).set_body_json(ontap_error(
            "4",
            "entry doesn't exist",
            "uuid",
        )))
        .expect(1)
        .mount(&server)
        .await;
    client(&server.uri())
        .delete_snapshot("v1", "s1")
        .await
        .expect("gone is done");
}

#[tokio::test]
async fn an_indeterminate_delete_is_asked_again_and_404_means_done() {
    let server = MockServer::start().await;
    Mock::given(method("DELETE"))
        .and(path("/api/storage/volumes/v1/snapshots/s1"))
        .respond_with(ResponseTemplate::new(502))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/api/storage/volumes/v1/snapshots/s1"))
        .respond_with(ResponseTemplate::new(404).set_body_json(ontap_error(
            "4",
            "entry doesn't exist",
            "uuid",
        )))
        .mount(&server)
        .await;
    client(&server.uri())
        .delete_snapshot("v1", "s1")
        .await
        .expect("the first delete landed");
    assert_eq!(
        requests_to(&server, "DELETE", "/api/storage/volumes/v1/snapshots/s1")
            .await
            .len(),
        2
    );
}

// ---------------------------------------------------------------- error classification

#[tokio::test]
async fn http_401_is_auth_and_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/storage/volumes/v1"))
        .respond_with(ResponseTemplate::new(401).set_body_json(ontap_error(
            "6",
            "not authorized",
            "",
        )))
        .expect(1)
        .mount(&server)
        .await;
    let error = client(&server.uri()).volume("v1").await.unwrap_err();
    assert!(matches!(error, StorageError::Auth { .. }), "{error:?}");
    assert!(!error.to_string().contains(PASSWORD));
}

#[tokio::test]
async fn a_4xx_ontap_error_is_refused_with_code_and_target() {
    let server = MockServer::start().await;
    Mock::given(method("PATCH"))
        .and(path("/api/storage/volumes/v1"))
        .respond_with(ResponseTemplate::new(400).set_body_json(ontap_error(
            "918251",
            "A restore cannot be combined with other changes.",
            "restore_to",
        )))
        .expect(1)
        .mount(&server)
        .await;
    let error = client(&server.uri())
        .restore_volume("v1", "snap1")
        .await
        .unwrap_err();
    match error {
        StorageError::Refused {
            code,
            target,
            message,
        } => {
            assert_eq!(code, 918251);
            assert_eq!(target.as_deref(), Some("restore_to"));
            assert!(message.contains("restore cannot be combined"), "{message}");
        }
        other => panic!("expected Refused, got {other:?}"),
    }
}

#[tokio::test]
async fn ontap_code_4_and_404_are_not_found() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/storage/volumes/missing"))
        .respond_with(ResponseTemplate::new(404).set_body_json(ontap_error(
            "4",
            "entry doesn't exist",
            "uuid",
        )))
        .mount(&server)
        .await;
    let error = client(&server.uri()).volume("missing").await.unwrap_err();
    match error {
        StorageError::NotFound { what } => assert!(what.contains("volume missing"), "{what}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[tokio::test]
async fn server_errors_on_reads_are_retried_then_succeed() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/storage/volumes/v1"))
        .respond_with(ResponseTemplate::new(500).set_body_json(ontap_error(
            "8",
            "internal error",
            "",
        )))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/storage/volumes/v1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(volume_record("v1", "data")))
        .mount(&server)
        .await;
    mount_snapshot_count(&server, "v1", 7).await;

    let volume = client(&server.uri())
        .volume("v1")
        .await
        .expect("third time lucky");
    assert_eq!(volume.name, "data");
    assert_eq!(volume.n_snapshots, 7);
    assert!(volume.online && volume.writable);
    assert_eq!(volume.junction_path.as_deref(), Some("/data"));
    assert_eq!(
        requests_to(&server, "GET", "/api/storage/volumes/v1")
            .await
            .len(),
        3
    );
}

#[tokio::test]
async fn reads_give_up_as_retryable_after_retry_attempts_max() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/storage/volumes/v1"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let error = client(&server.uri()).volume("v1").await.unwrap_err();
    assert!(error.is_retryable(), "{error:?}");
    assert_eq!(
        requests_to(&server, "GET", "/api/storage/volumes/v1")
            .await
            .len(),
        4,
        "1 + retry_attempts_max"
    );
}

#[tokio::test]
async fn a_write_answered_5xx_is_indeterminate_and_not_repeated() {
    let server = MockServer::start().await;
    Mock::given(method("PATCH"))
        .and(path("/api/storage/volumes/v1"))
        .respond_with(ResponseTemplate::new(500).set_body_json(ontap_error(
            "8",
            "internal error",
            "",
        )))
        .mount(&server)
        .await;
    let error = client(&server.uri())
        .restore_volume("v1", "snap1")
        .await
        .unwrap_err();
    assert!(error.is_indeterminate(), "{error:?}");
    assert_eq!(
        requests_to(&server, "PATCH", "/api/storage/volumes/v1")
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn connection_refused_is_retryable_even_for_a_snapshot() {
    // A port nobody listens on: the request can never have left.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let client = client(&format!("http://127.0.0.1:{port}"));
    let read = client.volume("v1").await.unwrap_err();
    assert!(read.is_retryable(), "{read:?}");
    let write = client
        .create_snapshot("v1", "s", Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(
        write.is_retryable(),
        "never sent, so not indeterminate: {write:?}"
    );
}

// ---------------------------------------------------------------- collections

#[tokio::test]
async fn collections_follow_next_links_verbatim() {
    let server = MockServer::start().await;
    let next = "/api/storage/volumes/v1/snapshots?fields=uuid,name,create_time,owners&start.uuid=s3&max_records=2";
    Mock::given(method("GET"))
        .and(path("/api/storage/volumes/v1/snapshots"))
        .and(query_param_is_missing("start.uuid"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "records": [
                snapshot_record("s2", "b", "2024-05-01T10:00:02Z"),
                snapshot_record("s1", "a", "2024-05-01T10:00:01Z"),
            ],
            "num_records": 2,
            "_links": {"self": {"href": "/api/storage/volumes/v1/snapshots"}, "next": {"href": next}}
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/storage/volumes/v1/snapshots"))
        .and(query_param("start.uuid", "s3"))
        .and(query_param("max_records", "2"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(records(vec![snapshot_record(
                "s3",
                "c",
                "2024-05-01T10:00:03Z",
            )])),
        )
        .expect(1)
        .mount(&server)
        .await;

    let snapshots = client(&server.uri())
        .snapshots("v1")
        .await
        .expect("two pages");
    let uuids: Vec<&str> = snapshots.iter().map(|s| s.uuid.as_str()).collect();
    assert_eq!(uuids, ["s1", "s2", "s3"], "all pages, oldest first");
    let second = requests_to(&server, "GET", "/api/storage/volumes/v1/snapshots")
        .await
        .pop()
        .unwrap();
    assert_eq!(
        format!("{}?{}", second.url.path(), second.url.query().unwrap()),
        next
    );
}

#[tokio::test]
async fn a_next_link_to_another_origin_is_not_followed() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/storage/volumes/v1/snapshots"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "records": [], "num_records": 0,
            "_links": {"next": {"href": "https://elsewhere.example/api/storage/volumes/v1/snapshots"}}
        })))
        .mount(&server)
        .await;
    let error = client(&server.uri()).snapshots("v1").await.unwrap_err();
    assert!(error.to_string().contains("another origin"), "{error}");
}

#[tokio::test]
async fn volumes_by_name_keeps_the_order_asked_and_reports_a_missing_name() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/storage/volumes"))
        .and(query_param("svm.name", "svm1"))
        .and(query_param("name", "logs|data"))
        .respond_with(ResponseTemplate::new(200).set_body_json(records(vec![
            volume_record("v1", "data"),
            volume_record("v2", "logs"),
        ])))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/storage/volumes"))
        .and(query_param("name", "logs|nope"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(records(vec![volume_record("v2", "logs")])),
        )
        .mount(&server)
        .await;
    mount_snapshot_count(&server, "v1", 1).await;
    mount_snapshot_count(&server, "v2", 2).await;

    let client = client(&server.uri());
    let volumes = client
        .volumes_by_name("svm1", &["logs".into(), "data".into()])
        .await
        .unwrap();
    let names: Vec<&str> = volumes.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["logs", "data"]);
    assert_eq!(volumes[0].svm, "svm1");
    assert_eq!(volumes[0].n_snapshots, 2);

    let error = client
        .volumes_by_name("svm1", &["logs".into(), "nope".into()])
        .await
        .unwrap_err();
    match error {
        StorageError::NotFound { what } => assert!(what.contains("nope"), "{what}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

// ---------------------------------------------------------------- consistency groups and clones

#[tokio::test]
async fn a_consistency_group_is_created_from_existing_volumes_and_snapshotted() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/storage/volumes"))
        .and(query_param("uuid", "v1|v2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(records(vec![
            volume_record("v1", "data"),
            volume_record("v2", "logs"),
        ])))
        .mount(&server)
        .await;
    // Absent at first, present once created.
    Mock::given(method("GET"))
        .and(path("/api/application/consistency-groups"))
        .and(query_param("name", "app1"))
        .and(query_param("svm.name", "svm1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(records(vec![])))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/application/consistency-groups"))
        .and(query_param("name", "app1"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(records(vec![json!({
                "uuid": "cg1", "name": "app1",
                "volumes": [{"uuid": "v1", "name": "data"}, {"uuid": "v2", "name": "logs"}]
            })])),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/application/consistency-groups"))
        .respond_with(ResponseTemplate::new(202).set_body_json(job_accepted("jcg")))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/cluster/jobs/jcg"))
        .respond_with(ResponseTemplate::new(200).set_body_json(job("success", 0, "")))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/application/consistency-groups/cg1/snapshots"))
        .and(body_json(json!({"name": "stasis-b1"})))
        .respond_with(ResponseTemplate::new(201).set_body_json(job_accepted("jsnap")))
        .expect(1)
        .mount(&server)
        .await;
    for (volume, snapshot) in [("v1", "s-v1"), ("v2", "s-v2")] {
        Mock::given(method("GET"))
            .and(path(format!("/api/storage/volumes/{volume}/snapshots")))
            .and(query_param("name", "stasis-b1"))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(records(vec![snapshot_record(
                    snapshot,
                    "stasis-b1",
                    "2024-05-01T10:00:00Z",
                )])),
            )
            .mount(&server)
            .await;
    }

    let client = client(&server.uri());
    let cg = client
        .ensure_consistency_group("svm1", "app1", &["v1".into(), "v2".into()])
        .await
        .unwrap();
    assert_eq!(cg.uuid, "cg1");
    assert_eq!(cg.volume_uuids, ["v1", "v2"]);
    let post = requests_to(&server, "POST", "/api/application/consistency-groups")
        .await
        .remove(0);
    assert_eq!(
        post.body_json::<Value>().unwrap(),
        json!({"name": "app1", "svm": {"name": "svm1"}, "volumes": [
            {"name": "data", "provisioning_options": {"action": "add"}},
            {"name": "logs", "provisioning_options": {"action": "add"}}
        ]})
    );

    let snapshots = client
        .create_cg_snapshot("cg1", "stasis-b1", Duration::from_secs(2))
        .await
        .unwrap();
    let pairs: Vec<(&str, &str)> = snapshots
        .iter()
        .map(|s| (s.volume_uuid.as_str(), s.uuid.as_str()))
        .collect();
    assert_eq!(pairs, [("v1", "s-v1"), ("v2", "s-v2")]);
}

#[tokio::test]
async fn an_existing_group_with_extra_volumes_is_refused() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/storage/volumes"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(records(vec![volume_record("v1", "data")])),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/application/consistency-groups"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(records(vec![json!({
                "uuid": "cg1", "name": "app1",
                "volumes": [{"uuid": "v1", "name": "data"}, {"uuid": "v9", "name": "other"}]
            })])),
        )
        .mount(&server)
        .await;
    let error = client(&server.uri())
        .ensure_consistency_group("svm1", "app1", &["v1".into()])
        .await
        .unwrap_err();
    assert!(matches!(error, StorageError::Refused { .. }), "{error:?}");
    assert!(error.to_string().contains("v9"), "{error}");
}

#[tokio::test]
async fn a_clone_is_created_from_a_snapshot_and_read_back() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/storage/volumes/v1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(volume_record("v1", "data")))
        .mount(&server)
        .await;
    mount_snapshot_count(&server, "v1", 1).await;
    mount_snapshot_count(&server, "c1", 0).await;
    Mock::given(method("POST"))
        .and(path("/api/storage/volumes"))
        .respond_with(
            ResponseTemplate::new(202)
                .set_body_json(job_accepted("jc"))
                .insert_header("Location", "/api/storage/volumes/?name=data_clone"),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/cluster/jobs/jc"))
        .respond_with(ResponseTemplate::new(200).set_body_json(job("success", 0, "")))
        .mount(&server)
        .await;
    let mut clone = volume_record("c1", "data_clone");
    clone["clone"] = json!({"is_flexclone": true, "parent_volume": {"uuid": "v1", "name": "data"}});
    Mock::given(method("GET"))
        .and(path("/api/storage/volumes"))
        .and(query_param("name", "data_clone"))
        .and(query_param("svm.name", "svm1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(records(vec![clone])))
        .mount(&server)
        .await;

    let volume = client(&server.uri())
        .clone_volume("v1", "stasis-b1", "data_clone", Some("/data_clone"))
        .await
        .unwrap();
    assert_eq!(volume.uuid, "c1");
    assert_eq!(volume.clone_parent_uuid.as_deref(), Some("v1"));
    let post = requests_to(&server, "POST", "/api/storage/volumes")
        .await
        .remove(0);
    assert_eq!(
        post.body_json::<Value>().unwrap(),
        json!({"name": "data_clone", "svm": {"name": "svm1"},
               "clone": {"parent_volume": {"uuid": "v1"}, "parent_snapshot": {"name": "stasis-b1"}, "is_flexclone": true},
               "nas": {"path": "/data_clone"}})
    );
}

#[tokio::test]
async fn split_sends_split_initiated_and_awaits_the_job() {
    let server = MockServer::start().await;
    Mock::given(method("PATCH"))
        .and(path("/api/storage/volumes/c1"))
        .and(body_json(json!({"clone": {"split_initiated": true}})))
        .respond_with(ResponseTemplate::new(202).set_body_json(job_accepted("js")))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/cluster/jobs/js"))
        .respond_with(ResponseTemplate::new(200).set_body_json(job("success", 0, "")))
        .expect(1)
        .mount(&server)
        .await;
    client(&server.uri()).split_clone("c1").await.unwrap();
}

#[tokio::test]
async fn warm_up_reads_the_cluster_version_and_checks_credentials() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/cluster"))
        .and(query_param("fields", "version"))
        .and(basic_auth("admin", PASSWORD))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"version": {"full": "NetApp Release 9.14.1"}})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let client: Box<dyn Storage> = Box::new(client(&server.uri()));
    client.warm_up().await.unwrap();
}

// ---------------------------------------------------------------- configuration

#[test]
fn the_password_never_appears_in_debug_output() {
    let cfg = config("https://array.example");
    let client = OntapClient::new(cfg.clone()).unwrap();
    for text in [
        format!("{client:?}"),
        format!("{client:#?}"),
        format!("{cfg:?}"),
    ] {
        assert!(!text.contains(PASSWORD), "{text}");
        assert!(text.contains("array.example"), "still useful: {text}");
    }
}

#[test]
fn a_garbage_pinned_certificate_is_a_clear_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("cluster.pem");
    std::fs::write(&garbage, "this is not a certificate\n").unwrap();
    let mut cfg = config("https://array.example");
    cfg.tls = TlsTrust::PinnedCertificate(garbage.clone());
    let error = OntapClient::new(cfg).unwrap_err();
    assert!(matches!(error, ConfigError::Pem { .. }), "{error:?}");
    let text = error.to_string();
    assert!(
        text.contains("cluster.pem") && text.contains("no -----BEGIN CERTIFICATE"),
        "{text}"
    );

    // PEM armour around bytes that are not X.509.
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let mut cfg = config("https://array.example");
    cfg.tls = TlsTrust::PinnedCertificate(garbage);
    let error = OntapClient::new(cfg).unwrap_err();
    assert!(error.to_string().contains("not valid X.509"), "{error}");

    let mut cfg = config("https://array.example");
    cfg.tls = TlsTrust::CaFile(dir.path().join("absent.pem"));
    assert!(matches!(
        OntapClient::new(cfg).unwrap_err(),
        ConfigError::ReadFile { .. }
    ));
}

#[test]
fn base_urls_are_checked_and_never_echo_a_password() {
    let bad = |url: &str| OntapClient::new(config(url)).unwrap_err();
    let error = bad("https://admin:hunter2@array.example");
    assert!(!error.to_string().contains("hunter2"), "{error}");
    assert!(matches!(
        bad("ftp://array.example"),
        ConfigError::BaseUrl { .. }
    ));
    assert!(matches!(
        bad("https://array.example/api"),
        ConfigError::BaseUrl { .. }
    ));
    assert!(matches!(bad("not a url"), ConfigError::BaseUrl { .. }));
    let mut cfg = config("https://array.example");
    cfg.username = String::new();
    assert!(matches!(
        OntapClient::new(cfg).unwrap_err(),
        ConfigError::EmptyUsername
    ));
    let mut cfg = config("https://array.example");
    cfg.retry_backoff_base = Duration::from_secs(10);
    assert!(matches!(
        OntapClient::new(cfg).unwrap_err(),
        ConfigError::BoundsInverted { .. }
    ));
}

#[test]
fn defaults_verify_tls_and_bound_everything() {
    let cfg = OntapConfig::new("https://array.example", "admin", SecretString::from("x"));
    assert_eq!(cfg.tls, TlsTrust::BuiltInRoots);
    assert_eq!(
        cfg.retry_attempts_max,
        ontap_client::RETRY_ATTEMPTS_MAX_DEFAULT
    );
    assert!(
        cfg.job_wait_max > cfg.job_poll_interval_max
            && cfg.job_poll_interval_max >= cfg.job_poll_interval
    );
}
