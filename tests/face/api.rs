//! The REST API of `stasis serve`: authentication, clear 4xx answers to bad input, the
//! OpenAPI document (valid, and every route in it), and a backup and restores through jobs
//! with live events and metrics.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::{registry, site, TOKEN};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

async fn call(router: &axum::Router, method: Method, path: &str, token: Option<&str>, body: Option<&str>) -> (StatusCode, String) {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        request = request.header("authorization", format!("Bearer {t}"));
    }
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let request = request.body(body.map(|b| Body::from(b.to_string())).unwrap_or_else(Body::empty)).unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

async fn json_ok(router: &axum::Router, method: Method, path: &str, body: Option<&str>) -> Value {
    let (status, text) = call(router, method.clone(), path, Some(TOKEN), body).await;
    assert!(status.is_success(), "{method} {path}: {status} {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}"))
}

async fn wait_job(router: &axum::Router, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let job = json_ok(router, Method::GET, &format!("/api/v1/jobs/{id}"), None).await;
        if job["state"] == "succeeded" || job["state"] == "failed" {
            return job;
        }
        assert!(tokio::time::Instant::now() < deadline, "job {id} did not finish: {job}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every (method, path) the API serves behind the token. The OpenAPI document must list
/// exactly these, and each must answer.
const ROUTES: [(&str, &str); 14] = [
    ("get", "/api/v1/apps"),
    ("get", "/api/v1/apps/{app}"),
    ("put", "/api/v1/apps/{app}/policy"),
    ("post", "/api/v1/apps/{app}/backups"),
    ("get", "/api/v1/backups"),
    ("get", "/api/v1/backups/{id}"),
    ("post", "/api/v1/backups/{id}/restore"),
    ("get", "/api/v1/restores"),
    ("get", "/api/v1/policies"),
    ("get", "/api/v1/jobs"),
    ("get", "/api/v1/jobs/{id}"),
    ("get", "/api/v1/jobs/events"),
    ("get", "/api/v1/dr"),
    ("get", "/metrics"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_is_required_and_bad_input_gets_clear_4xx() {
    let site = site("").await;
    let (registry, _db) = registry(&site).await;
    assert!(stasis::server::router(registry, "short".into()).is_err(), "a short token must be refused");
    let (registry, _db) = common::registry(&site).await;
    let (router, _) = stasis::server::router(registry, TOKEN.into()).unwrap();

    for (method, path) in ROUTES {
        let path = path.replace("{app}", "bank").replace("{id}", "x");
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let (status, text) = call(&router, method.clone(), &path, None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} without a token: {text}");
        assert!(text.contains("Bearer"), "{text}");
        let (status, _) = call(&router, method.clone(), &path, Some("wrong-token-0123456789"), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} with a wrong token");
    }
    // Public: the page, its assets, the OpenAPI document, health.
    for path in ["/", "/app.js", "/app.css", "/api-docs/openapi.json", "/healthz"] {
        assert_eq!(call(&router, Method::GET, path, None, None).await.0, StatusCode::OK, "{path}");
    }

    let cases: [(Method, &str, Option<&str>, StatusCode, &str); 9] = [
        (Method::GET, "/api/v1/apps/ledger", None, StatusCode::NOT_FOUND, "no app named \"ledger\" (known: bank)"),
        (Method::PUT, "/api/v1/apps/bank/policy", Some(r#"{"policy": "weekly"}"#), StatusCode::BAD_REQUEST, "no policy named \"weekly\" (known: daily, hourly)"),
        (Method::PUT, "/api/v1/apps/bank/policy", Some(r#"{"policy": "#), StatusCode::BAD_REQUEST, "EOF"),
        (Method::PUT, "/api/v1/apps/bank/policy", Some(r#"{"polcy": "hourly"}"#), StatusCode::UNPROCESSABLE_ENTITY, "unknown field `polcy`"),
        (Method::POST, "/api/v1/apps/ledger/backups", None, StatusCode::NOT_FOUND, "no app named"),
        (Method::POST, "/api/v1/backups/b-nosuch/restore", Some("{}"), StatusCode::NOT_FOUND, "no backup \"b-nosuch\""),
        (Method::GET, "/api/v1/backups?app=ledger", None, StatusCode::NOT_FOUND, "no app named"),
        (Method::GET, "/api/v1/jobs/j-nosuch", None, StatusCode::NOT_FOUND, "no job"),
        (Method::POST, "/api/v1/backups/b-nosuch/restore", Some(r#"{"mode": "sideways"}"#), StatusCode::UNPROCESSABLE_ENTITY, "unknown variant `sideways`"),
    ];
    for (method, path, body, expect, message) in cases {
        let (status, text) = call(&router, method.clone(), path, Some(TOKEN), body).await;
        assert_eq!(status, expect, "{method} {path} {body:?}: {text}");
        let error: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: the error is not JSON: {text}"));
        let got = error["error"]["message"].as_str().unwrap_or_default();
        assert!(got.contains(message), "{method} {path}: expected {message:?} in {got:?}");
    }

    // A backup to restore, then the restore's own checks.
    let job = json_ok(&router, Method::POST, "/api/v1/apps/bank/backups", None).await;
    let job = wait_job(&router, job["id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let id = job["backup_id"].as_str().unwrap().to_string();
    let restore = format!("/api/v1/backups/{id}/restore");
    for (body, expect, message) in [
        (r#"{"mode": "in_place"}"#, StatusCode::BAD_REQUEST, "confirm_discard_newer"),
        (r#"{"mode": "in_place", "confirm_discard_newer": false}"#, StatusCode::BAD_REQUEST, "discards everything"),
        (r#"{"mode": "clone", "clone_name": "9 bad"}"#, StatusCode::BAD_REQUEST, "clone_name"),
        (r#"{"mode": "in_place", "clone_name": "x", "confirm_discard_newer": true}"#, StatusCode::BAD_REQUEST, "clone_name is for mode clone"),
    ] {
        let (status, text) = call(&router, Method::POST, &restore, Some(TOKEN), Some(body)).await;
        assert_eq!(status, expect, "{body}: {text}");
        assert!(text.contains(message), "{body}: {text}");
    }
    // Nothing was started by the refused requests.
    let jobs = json_ok(&router, Method::GET, "/api/v1/jobs", None).await;
    assert_eq!(jobs.as_array().unwrap().len(), 1, "{jobs}");
    assert!(json_ok(&router, Method::GET, "/api/v1/restores", None).await.as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_valid_and_lists_every_route() {
    let site = site("").await;
    let (registry, _db) = registry(&site).await;
    let (router, _) = stasis::server::router(registry, TOKEN.into()).unwrap();
    let (status, text) = call(&router, Method::GET, "/api-docs/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let doc: Value = serde_json::from_str(&text).expect("the document is JSON");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{}", doc["openapi"]);
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");

    let mut documented = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().unwrap() {
            assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {path} documents no responses");
            for name in path.split('{').skip(1).map(|s| s.split('}').next().unwrap()) {
                let params = op["parameters"].as_array().cloned().unwrap_or_default();
                assert!(params.iter().any(|p| p["name"] == name && p["in"] == "path"), "{method} {path}: path parameter {name} undocumented");
            }
            documented.push((method.clone(), path.clone()));
        }
    }
    documented.sort();
    let mut expected: Vec<(String, String)> = ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    expected.sort();
    assert_eq!(documented, expected, "the OpenAPI document and the API's routes differ");

    // Every $ref points at a schema that exists.
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    let mut refs = Vec::new();
    fn collect(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|v| collect(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| collect(v, out)),
            _ => {}
        }
    }
    collect(&doc, &mut refs);
    assert!(refs.len() > 10, "expected schema references, found {}", refs.len());
    for r in refs {
        let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("unexpected $ref {r}"));
        assert!(schemas.contains_key(name), "$ref {r} has no schema");
    }

    // Every documented route is served (never 404/405 for the route itself).
    for (method, path) in ROUTES {
        if method != "get" || path.ends_with("/events") {
            continue;
        }
        let concrete = path.replace("{app}", "bank");
        if concrete.contains('{') {
            continue; // ids: covered by the flow tests
        }
        let (status, text) = call(&router, Method::GET, &concrete, Some(TOKEN), None).await;
        assert_eq!(status, StatusCode::OK, "GET {concrete}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protect_backup_and_restore_through_jobs_with_events_and_metrics() {
    let site = site("").await;
    let (registry, db) = registry(&site).await;
    let (router, _) = stasis::server::router(registry, TOKEN.into()).unwrap();
    // A real socket for the event stream (and to exercise `serve`).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(stasis::server::serve(listener, router.clone(), None, async {
        let _ = stop_rx.await;
    }));
    let http = reqwest::Client::new();
    let mut events = http.get(format!("http://{addr}/api/v1/jobs/events")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(events.status(), 200);

    let apps = json_ok(&router, Method::GET, "/api/v1/apps", None).await;
    assert_eq!(apps[0]["protection"], "unprotected");
    assert_eq!(apps[0]["namespace"], "finance");
    assert_eq!(apps[0]["volumes"][0]["junction_path"], "/bank/data");
    let app = json_ok(&router, Method::PUT, "/api/v1/apps/bank/policy", Some(r#"{"policy": "hourly"}"#)).await;
    assert_eq!((app["policy"].as_str(), app["protection"].as_str()), (Some("hourly"), Some("awaiting_first_backup")));

    let txid = db.try_commit(&[(1, 10)]).unwrap();
    let job = json_ok(&router, Method::POST, "/api/v1/apps/bank/backups", None).await;
    assert_eq!(job["kind"], "backup");
    let job = wait_job(&router, job["id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["steps_done"], job["steps_total"]);
    let backup_id = job["backup_id"].as_str().unwrap().to_string();
    let backup = json_ok(&router, Method::GET, &format!("/api/v1/backups/{backup_id}"), None).await;
    assert_eq!(backup["consistency_point"], format!("txid={txid}"));
    assert!(backup["freeze_window_ms"].as_f64().is_some());
    let app = json_ok(&router, Method::GET, "/api/v1/apps/bank", None).await;
    assert_eq!(app["protection"], "protected", "{app}");
    assert_eq!(app["last_backup"]["id"], backup_id.as_str());

    // The job's progress arrived as events: at least one intermediate step, then success.
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains("\"succeeded\"") {
        let chunk = tokio::time::timeout_at(deadline, events.chunk()).await.expect("events arrive").unwrap().expect("stream open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("event: job") && seen.contains("\"step\":\"volumes_resolved\""), "{seen}");

    // Damage, then restore to a clone (default) and in place (confirmed).
    db.try_commit(&[(1, 99)]).unwrap();
    let job = json_ok(&router, Method::POST, &format!("/api/v1/backups/{backup_id}/restore"), Some(r#"{"clone_name": "bank_copy"}"#)).await;
    assert_eq!(job["kind"], "restore_to_clone");
    let job = wait_job(&router, job["id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert!(job["message"].as_str().unwrap().contains("bank_copy_bank_data"), "{job}");
    assert_eq!(db.values().unwrap()[1], 99, "a clone restore touched the app");
    let job = json_ok(&router, Method::POST, &format!("/api/v1/backups/{backup_id}/restore"), Some(r#"{"mode": "in_place", "confirm_discard_newer": true}"#)).await;
    let job = wait_job(&router, job["id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(db.values().unwrap()[1], 10, "the in-place restore did not bring back the backup's state");
    let restores = json_ok(&router, Method::GET, "/api/v1/restores?app=bank", None).await;
    assert_eq!(restores.as_array().unwrap().len(), 2);

    // DR: no plan yet.
    let dr = json_ok(&router, Method::GET, "/api/v1/dr", None).await;
    assert_eq!(dr, json!([{"app": "bank", "status": "not_configured", "active_site": null, "destination_cluster": null, "destination_svm": null, "policy": null, "last_failover": null}]));

    // Metrics count what happened.
    let (status, metrics) = call(&router, Method::GET, "/metrics", Some(TOKEN), None).await;
    assert_eq!(status, 200);
    for line in [
        "stasis_backups_total{app=\"bank\",outcome=\"success\"} 1",
        "stasis_restores_total{app=\"bank\",mode=\"clone\",outcome=\"success\"} 1",
        "stasis_restores_total{app=\"bank\",mode=\"in_place\",outcome=\"success\"} 1",
        "stasis_freeze_window_seconds_count{app=\"bank\"} 1",
        "stasis_snapshot_latency_seconds_count{app=\"bank\"} 1",
        "stasis_jobs_running 0",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }
    let _ = stop_tx.send(());
    drop(events);
    tokio::time::timeout(Duration::from_secs(10), server).await.expect("the server stops").unwrap().unwrap();
}
