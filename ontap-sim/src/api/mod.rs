//! The ONTAP REST API: routing, authentication, fault injection, jobs, and errors as ONTAP
//! sends them. Handlers parse, call the model, and answer; the model knows no HTTP.

pub mod body;
pub mod fields;
mod handlers;
mod peers;
mod snapmirror;
pub mod query;
pub mod render;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequest, OriginalUri, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tower_http::catch_panic::CatchPanicLayer;

use crate::control::faults::FaultAction;
use crate::error::{ErrorKind, OntapError, SimResult};
use crate::model::cluster::ClusterState;
use crate::sim::Simulator;

/// User name and password every request must present (HTTP basic auth).
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).field("password", &"<redacted>").finish()
    }
}

#[derive(Clone)]
pub struct ApiState {
    pub sim: Simulator,
    credentials: Arc<Credentials>,
}

/// Marks a response whose connection the server must close without sending it
/// (an injected `drop` fault); the accept loop in `server` honours it.
#[derive(Clone, Copy, Debug)]
pub struct DropConnection;

/// A job fault for the write handler of this request.
#[derive(Clone, Debug)]
struct JobFault(FaultAction);

impl IntoResponse for OntapError {
    fn into_response(self) -> Response {
        let status = match self.kind {
            ErrorKind::Invalid | ErrorKind::Refused => StatusCode::BAD_REQUEST,
            ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Duplicate => StatusCode::CONFLICT,
            ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        };
        error_response(status, &self)
    }
}

pub fn error_body(e: &OntapError) -> Value {
    let mut error = json!({"message": e.message, "code": e.code.to_string()});
    if let Some(target) = &e.target {
        error["target"] = json!(target);
    }
    json!({ "error": error })
}

fn error_response(status: StatusCode, e: &OntapError) -> Response {
    let mut response = (status, Json(error_body(e))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"ontap-sim\""));
    }
    response
}

/// A JSON request body read with ONTAP's size limit and ONTAP's errors.
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = OntapError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::to_bytes(req.into_body(), body::BODY_BYTES_MAX)
            .await
            .map_err(|_| OntapError::new(ErrorKind::TooLarge, 262199, format!("The request body is larger than the {} bytes allowed.", body::BODY_BYTES_MAX)))?;
        body::parse_json(&bytes).map(JsonBody)
    }
}

pub fn router(sim: Simulator, credentials: Credentials) -> Router {
    let state = ApiState { sim, credentials: Arc::new(credentials) };
    let ontap = handlers::routes()
        .layer(middleware::from_fn_with_state(state.clone(), inject_faults))
        .fallback(not_simulated)
        .method_not_allowed_fallback(method_not_allowed);
    let app = Router::new()
        .nest("/api", ontap)
        .nest("/sim/v1", crate::control::routes())
        .route("/", get(|| async { "ontap-sim: the ONTAP REST API is under /api, the simulator's control API under /sim/v1\n" }))
        .fallback(not_simulated)
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(CatchPanicLayer::custom(|_panic| {
            // A bug in a handler must not take the server down; the lock-based state was
            // not changed (transactions commit only on success).
            OntapError::internal("Internal error in the simulator; the request had no effect.").into_response()
        }))
        .with_state(state);
    // Routing must see the path without a trailing slash, so the rewrite wraps the router.
    Router::new().fallback_service(tower::ServiceExt::map_request(app, trim_trailing_slash))
}

/// ONTAP's own `Location` headers have the form `/api/storage/volumes/?name=v`, and clients
/// GET them verbatim: a trailing slash names the same resource as the path without it.
fn trim_trailing_slash(mut req: Request) -> Request {
    let path = req.uri().path();
    if path.len() > 1 && path.ends_with('/') {
        let trimmed = match path.trim_end_matches('/') {
            "" => "/",
            p => p,
        };
        let path_and_query = match req.uri().query() {
            Some(q) => format!("{trimmed}?{q}"),
            None => trimmed.to_string(),
        };
        let mut parts = req.uri().clone().into_parts();
        if let Ok(pq) = path_and_query.parse() {
            parts.path_and_query = Some(pq);
            if let Ok(uri) = axum::http::Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
    req
}

async fn not_simulated(OriginalUri(uri): OriginalUri, req: Request) -> Response {
    OntapError::new(ErrorKind::NotFound, 3, format!("API not found: {} {} is not simulated by ontap-sim.", req.method(), uri.path())).into_response()
}

async fn method_not_allowed(OriginalUri(uri): OriginalUri, req: Request) -> Response {
    let e = OntapError::new(ErrorKind::Invalid, 3, format!("The method {} is not supported on {}.", req.method(), uri.path()));
    error_response(StatusCode::METHOD_NOT_ALLOWED, &e)
}

fn credentials_match(expected: &Credentials, header: Option<&HeaderValue>) -> bool {
    let Some(value) = header.and_then(|h| h.to_str().ok()) else { return false };
    let Some(encoded) = value.strip_prefix("Basic ").or_else(|| value.strip_prefix("basic ")) else { return false };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else { return false };
    let Ok(text) = String::from_utf8(decoded) else { return false };
    text.split_once(':').is_some_and(|(user, password)| user == expected.username && password == expected.password)
}

async fn authenticate(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    // Intercluster calls authenticate with the cluster peer passphrase instead.
    if req.uri().path().starts_with("/sim/v1/intercluster/") || credentials_match(&state.credentials, req.headers().get(header::AUTHORIZATION)) {
        return next.run(req).await;
    }
    OntapError::new(ErrorKind::Unauthorized, 6691623, "User is not authorized.").into_response()
}

async fn inject_faults(State(state): State<ApiState>, mut req: Request, next: Next) -> Response {
    let is_write = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let path = format!("/api{}", req.uri().path());
    let Some(action) = state.sim.faults().check(req.method().as_str(), &path, is_write) else {
        return next.run(req).await;
    };
    tracing::debug!(?action, %path, "injecting fault");
    match action {
        FaultAction::Error { status, code, message } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            error_response(status, &OntapError::new(ErrorKind::Unavailable, code, message))
        }
        FaultAction::Latency { ms, before: true } => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            next.run(req).await
        }
        FaultAction::Latency { ms, before: false } => {
            let response = next.run(req).await;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            response
        }
        FaultAction::Drop { after_apply } => {
            if after_apply {
                let _ = next.run(req).await;
            }
            let mut response = StatusCode::INTERNAL_SERVER_ERROR.into_response();
            response.extensions_mut().insert(DropConnection);
            response
        }
        job_fault => {
            req.extensions_mut().insert(JobFault(job_fault));
            next.run(req).await
        }
    }
}

/// A write: what it does to the cluster, run as an ONTAP job.
pub type WriteOp = Arc<dyn Fn(&mut ClusterState, DateTime<Utc>) -> SimResult<()> + Send + Sync>;

/// How a write ended by the time the server answers: `None` while its job still runs.
type Outcome = Option<SimResult<()>>;

/// Run `op` as a job. Without a job fault the change and its job record commit together and
/// at once. A job fault first checks the request (so invalid requests still fail at once, as
/// on ONTAP), then fails the job, leaves it running for good, or applies it after a delay.
async fn run_job(state: &ApiState, fault: Option<FaultAction>, description: String, return_timeout_s: u64, op: WriteOp) -> SimResult<(String, Outcome)> {
    let sim = &state.sim;
    let now = sim.now();
    match fault {
        None | Some(FaultAction::Error { .. } | FaultAction::Latency { .. } | FaultAction::Drop { .. }) => {
            let job = sim.transact(|s| {
                op(s, now)?;
                Ok(s.record_job(description, Some(&Ok(())), now))
            })?;
            Ok((job, Some(Ok(()))))
        }
        Some(FaultAction::JobFail { code, message }) => {
            sim.dry_run(|s| op(s, now))?;
            let failure = Err(OntapError::new(ErrorKind::Refused, code, message));
            let job = sim.transact(|s| Ok(s.record_job(description, Some(&failure), now)))?;
            Ok((job, Some(failure)))
        }
        Some(FaultAction::JobHang) => {
            sim.dry_run(|s| op(s, now))?;
            let job = sim.transact(|s| Ok(s.record_job(description, None, now)))?;
            tokio::time::sleep(Duration::from_secs(return_timeout_s)).await;
            Ok((job, None))
        }
        Some(FaultAction::JobDelay { ms }) => {
            sim.dry_run(|s| op(s, now))?;
            let job = sim.transact(|s| Ok(s.record_job(description, None, now)))?;
            let (sim2, job2) = (sim.clone(), job.clone());
            let task = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                let now = sim2.now();
                let result = sim2.transact(|s| op(s, now));
                let _ = sim2.transact(|s| {
                    s.finish_job(&job2, &result, now);
                    Ok(())
                });
                result
            });
            let wait = Duration::from_secs(return_timeout_s);
            match tokio::time::timeout(wait, task).await {
                Ok(Ok(result)) => Ok((job, Some(result))),
                Ok(Err(join_error)) => Err(OntapError::internal(format!("job task failed: {join_error}"))),
                Err(_) => Ok((job, None)),
            }
        }
    }
}

/// A write whose work is asynchronous (it talks to a peer cluster): run as a job.
pub type AsyncOp = std::pin::Pin<Box<dyn std::future::Future<Output = SimResult<()>> + Send>>;

/// Run `op` as a job in the background, answering once it ends or `return_timeout` passes.
/// Job faults apply as for [`run_job`]: `job_fail` fails it without running `op`, `job_hang`
/// never runs it, `job_delay` runs it late.
async fn run_async_job(state: &ApiState, fault: Option<FaultAction>, description: String, return_timeout_s: u64, op: AsyncOp) -> SimResult<(String, Outcome)> {
    let sim = &state.sim;
    let now = sim.now();
    let delay_ms = match fault {
        Some(FaultAction::JobFail { code, message }) => {
            let failure = Err(OntapError::new(ErrorKind::Refused, code, message));
            let job = sim.transact(|s| Ok(s.record_job(description, Some(&failure), now)))?;
            return Ok((job, Some(failure)));
        }
        Some(FaultAction::JobHang) => {
            let job = sim.transact(|s| Ok(s.record_job(description, None, now)))?;
            tokio::time::sleep(Duration::from_secs(return_timeout_s)).await;
            return Ok((job, None));
        }
        Some(FaultAction::JobDelay { ms }) => ms,
        _ => 0,
    };
    let job = sim.transact(|s| Ok(s.record_job(description, None, now)))?;
    let (sim2, job2) = (sim.clone(), job.clone());
    let task = tokio::spawn(async move {
        if delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        }
        let result = op.await;
        let now = sim2.now();
        let _ = sim2.transact(|s| {
            s.finish_job(&job2, &result, now);
            Ok(())
        });
        result
    });
    match tokio::time::timeout(Duration::from_secs(return_timeout_s), task).await {
        Ok(Ok(result)) => Ok((job, Some(result))),
        Ok(Err(join_error)) => Err(OntapError::internal(format!("job task failed: {join_error}"))),
        Err(_) => Ok((job, None)),
    }
}

/// Answer a write as ONTAP does: 202 and the job unless the job ended within
/// `return_timeout`; then `done` (201 for a create, 200 otherwise) or the job's error.
fn write_response(job: &str, outcome: Outcome, return_timeout_s: u64, done: StatusCode, location: Option<String>) -> Response {
    let body = Json(json!({ "job": render::job_link(job) }));
    let mut response = match outcome {
        Some(Ok(())) if return_timeout_s > 0 => (done, body).into_response(),
        Some(Err(e)) if return_timeout_s > 0 => return e.into_response(),
        _ => (StatusCode::ACCEPTED, body).into_response(),
    };
    if let Some(location) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// Percent-encode a value for a `Location` query.
fn encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}
