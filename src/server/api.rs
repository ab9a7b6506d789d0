//! The REST API under `/api/v1`, its OpenAPI document, and `/metrics`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use futures::Stream;
use serde::{Deserialize, Serialize};
use stasis_core::domain::{BackupState, Schedule};
use stasis_core::workflow::next_due;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::jobs::{Job, JobKind, JobProgress, JobState};
use super::{ApiError, AppHandle, SharedState};
use crate::cli::{BackupView, RestoreView, SnapshotView};
use crate::metrics::{AppLabels, OutcomeLabels, RestoreLabels};

type ApiResult<T> = Result<T, ApiError>;

#[derive(OpenApi)]
#[openapi(
    info(title = "Stasis API", description = "Application-consistent backup, restore and DR of databases on NetApp ONTAP. Every /api/v1 call needs `Authorization: Bearer <token>`."),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(Job, JobKind, JobState, BackupView, SnapshotView, RestoreView))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
    }
}

/// The authenticated routes, every one documented (`routes!` registers a handler and its
/// OpenAPI operation together).
pub fn routes(state: SharedState) -> Router {
    let (router, _) = documented(state);
    router
}

fn documented(state: SharedState) -> (Router, utoipa::openapi::OpenApi) {
    let (router, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(list_apps))
        .routes(routes!(get_app))
        .routes(routes!(protect_app))
        .routes(routes!(backup_now))
        .routes(routes!(list_backups))
        .routes(routes!(get_backup))
        .routes(routes!(restore_backup))
        .routes(routes!(list_restores))
        .routes(routes!(list_policies))
        .routes(routes!(list_jobs))
        .routes(routes!(get_job))
        .routes(routes!(job_events))
        .routes(routes!(dr_status))
        .routes(routes!(metrics))
        .with_state(state)
        .split_for_parts();
    (router, doc)
}

/// The OpenAPI document of every authenticated route.
pub fn openapi() -> utoipa::openapi::OpenApi {
    // Building the router needs a state; the document does not depend on it.
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let json = DOC.get_or_init(|| {
        let state = Arc::new(super::ServerState {
            registry: super::Registry { apps: Vec::new(), catalog: Arc::new(stasis_core::sqlite_catalog::SqliteCatalog::open_in_memory().expect("in-memory catalog")), title: String::new() },
            jobs: Default::default(),
            metrics: Default::default(),
            token: String::new(),
        });
        documented(state).1.to_json().expect("the OpenAPI document serialises")
    });
    serde_json::from_str(json).expect("the OpenAPI document parses")
}

pub fn public_routes() -> Router {
    Router::new()
        .route("/api-docs/openapi.json", get(|| async { ([(header::CONTENT_TYPE, "application/json")], openapi().to_json().unwrap_or_default()) }))
        .route("/healthz", get(|| async { "ok" }))
}

// ---------------------------------------------------------------------------------------
// Views
// ---------------------------------------------------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct VolumeView {
    pub name: String,
    /// Where the volume is mounted (its ONTAP junction path).
    pub junction_path: Option<String>,
    pub size_bytes: u64,
    pub used_bytes: u64,
    pub snapshots: u32,
}

#[derive(Serialize, ToSchema)]
pub struct LastBackup {
    pub id: String,
    pub finished_at: Option<String>,
    pub consistency: Option<String>,
}

/// One row of the resources table.
#[derive(Serialize, ToSchema)]
pub struct AppView {
    pub name: String,
    /// `simdb`, `mysql`, ...
    pub kind: String,
    pub namespace: String,
    /// Pod or workload name.
    pub workload: String,
    pub cluster: String,
    pub svm: String,
    pub volumes: Vec<VolumeView>,
    /// The assigned SLA policy, if any.
    pub policy: Option<String>,
    /// `unprotected`, `awaiting_first_backup`, `protected`, `overdue`, `last_backup_failed`
    /// or `unavailable`.
    pub protection: String,
    pub protection_detail: String,
    pub last_backup: Option<LastBackup>,
    /// Why the volumes or the app's plugin could not be reached, if so.
    pub error: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct PolicyView {
    pub name: String,
    /// `cron 0 * * * *` or `every 900s`.
    pub schedule: String,
    pub keep_last: Option<u32>,
    pub max_age_s: Option<u64>,
    /// Apps this policy protects.
    pub apps: Vec<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProtectRequest {
    /// The SLA policy to assign; `null` removes protection.
    pub policy: Option<String>,
}

#[derive(Deserialize, ToSchema, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RestoreModeRequest {
    /// FlexClone the backup's volumes; the app's own volumes are not touched.
    #[default]
    Clone,
    /// SnapRestore the app's volumes: everything newer than the backup is discarded.
    InPlace,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    #[serde(default)]
    pub mode: RestoreModeRequest,
    /// Clone mode: the new volume's name (several volumes get `NAME_<volume>`); default
    /// `<volume>_<restore id>`.
    #[serde(default)]
    pub clone_name: Option<String>,
    /// In-place mode must say `true` here: SnapRestore discards everything newer.
    #[serde(default)]
    pub confirm_discard_newer: bool,
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct AppFilter {
    /// Only this app's records.
    pub app: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct DrStatusView {
    pub app: String,
    /// `not_configured`, or the DR plan's state (`planned`, `mirrored`, `failed_over`,
    /// `reverse_mirrored`).
    pub status: String,
    pub active_site: Option<String>,
    pub destination_cluster: Option<String>,
    pub destination_svm: Option<String>,
    pub policy: Option<String>,
    pub last_failover: Option<FailoverView>,
}

#[derive(Serialize, ToSchema)]
pub struct FailoverView {
    pub id: String,
    pub kind: String,
    pub state: String,
    pub finished_at: Option<String>,
    pub rpo_s: Option<f64>,
    pub rto_s: Option<f64>,
    pub verified: bool,
}

/// A body that is not JSON (400), not the expected shape (422), or not declared as JSON
/// (415): axum's own status, with its message naming what is wrong.
fn bad_body(e: JsonRejection) -> ApiError {
    ApiError::new(e.status(), e.body_text())
}

fn snake<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Apps and policies
// ---------------------------------------------------------------------------------------

fn app_or_404<'a>(state: &'a SharedState, name: &str) -> ApiResult<&'a AppHandle> {
    state.registry.app(name).ok_or_else(|| {
        let known: Vec<&str> = state.registry.apps.iter().map(|a| a.spec.name.as_str()).collect();
        ApiError::not_found(format!("no app named {name:?} (known: {})", known.join(", ")))
    })
}

async fn app_view(state: &SharedState, app: &AppHandle) -> ApiResult<AppView> {
    let catalog = &state.registry.catalog;
    let policy_name = catalog.app_policy(&app.spec.name).map_err(|e| ApiError::internal("reading the catalog", e))?;
    let policy = match &policy_name {
        Some(p) => catalog.policy(p).map_err(|e| ApiError::internal("reading the catalog", e))?,
        None => None,
    };
    let backups = catalog.backups(Some(&app.spec.name)).map_err(|e| ApiError::internal("reading the catalog", e))?;
    let last_complete = backups.iter().rev().find(|b| b.state == BackupState::Complete && !b.expired);
    let last_any = backups.iter().rev().find(|b| b.state.is_final());
    let mut error = app.plugin.as_ref().err().cloned();
    let volumes = match app.orchestrator.storage.volumes_by_name(&app.spec.svm, &app.spec.volumes).await {
        Ok(vs) => vs.into_iter().map(|v| VolumeView { name: v.name, junction_path: v.junction_path, size_bytes: v.size_bytes, used_bytes: v.used_bytes, snapshots: v.n_snapshots }).collect(),
        Err(e) => {
            error.get_or_insert_with(|| format!("volumes: {e}"));
            app.spec.volumes.iter().map(|name| VolumeView { name: name.clone(), junction_path: None, size_bytes: 0, used_bytes: 0, snapshots: 0 }).collect()
        }
    };
    let now = Utc::now();
    let (protection, detail) = if app.plugin.is_err() {
        ("unavailable", error.clone().unwrap_or_default())
    } else {
        match (&policy, last_complete, last_any) {
            (None, _, _) => ("unprotected", "no SLA policy assigned".to_string()),
            (Some(_), _, Some(b)) if b.state == BackupState::Failed => ("last_backup_failed", b.error.clone().unwrap_or_default()),
            (Some(_), None, _) => ("awaiting_first_backup", "no complete backup yet".to_string()),
            (Some(p), Some(b), _) => match next_due(&p.schedule, Some(b.started_at), now) {
                Ok(due) if due < now - chrono::TimeDelta::minutes(5) => ("overdue", format!("a backup was due at {}", due.format("%Y-%m-%d %H:%M UTC"))),
                Ok(due) => ("protected", format!("next backup due {}", due.format("%Y-%m-%d %H:%M UTC"))),
                Err(e) => ("protected", e),
            },
        }
    };
    Ok(AppView {
        name: app.spec.name.clone(),
        kind: snake(&app.spec.kind),
        namespace: app.namespace.clone(),
        workload: app.workload.clone(),
        cluster: app.cluster.clone(),
        svm: app.spec.svm.clone(),
        volumes,
        policy: policy_name,
        protection: protection.to_string(),
        protection_detail: detail,
        last_backup: last_complete.map(|b| LastBackup { id: b.id.clone(), finished_at: b.finished_at.map(|t| t.to_rfc3339()), consistency: b.consistency.as_ref().map(snake) }),
        error,
    })
}

/// The resources table: every app, its volumes (read live from the array), policy and
/// protection status.
#[utoipa::path(get, path = "/api/v1/apps", tag = "apps", responses((status = 200, body = Vec<AppView>), (status = 401, description = "no or wrong bearer token")))]
async fn list_apps(State(state): State<SharedState>) -> ApiResult<Json<Vec<AppView>>> {
    let mut views = Vec::new();
    for app in &state.registry.apps {
        views.push(app_view(&state, app).await?);
    }
    Ok(Json(views))
}

#[utoipa::path(get, path = "/api/v1/apps/{app}", tag = "apps", params(("app" = String, Path, description = "app name")), responses((status = 200, body = AppView), (status = 404, description = "no such app")))]
async fn get_app(State(state): State<SharedState>, Path(app): Path<String>) -> ApiResult<Json<AppView>> {
    let handle = app_or_404(&state, &app)?;
    Ok(Json(app_view(&state, handle).await?))
}

/// Protect: assign an SLA policy to the app (or remove it with `null`).
#[utoipa::path(put, path = "/api/v1/apps/{app}/policy", tag = "apps", params(("app" = String, Path, description = "app name")), request_body = ProtectRequest,
    responses((status = 200, body = AppView), (status = 400, description = "bad body or unknown policy"), (status = 404, description = "no such app")))]
async fn protect_app(State(state): State<SharedState>, Path(app): Path<String>, body: Result<Json<ProtectRequest>, JsonRejection>) -> ApiResult<Json<AppView>> {
    let handle = app_or_404(&state, &app)?;
    let Json(request) = body.map_err(bad_body)?;
    let catalog = &state.registry.catalog;
    if let Some(policy) = &request.policy {
        if catalog.policy(policy).map_err(|e| ApiError::internal("reading the catalog", e))?.is_none() {
            let known: Vec<String> = catalog.policies().map_err(|e| ApiError::internal("reading the catalog", e))?.into_iter().map(|p| p.name).collect();
            return Err(ApiError::bad_request(format!("no policy named {policy:?} (known: {})", known.join(", "))));
        }
    }
    catalog.set_app_policy(&app, request.policy.as_deref()).map_err(|e| ApiError::internal("writing the catalog", e))?;
    tracing::info!(app = %app, policy = ?request.policy, "policy assigned");
    Ok(Json(app_view(&state, handle).await?))
}

#[utoipa::path(get, path = "/api/v1/policies", tag = "policies", responses((status = 200, body = Vec<PolicyView>)))]
async fn list_policies(State(state): State<SharedState>) -> ApiResult<Json<Vec<PolicyView>>> {
    let catalog = &state.registry.catalog;
    let policies = catalog.policies().map_err(|e| ApiError::internal("reading the catalog", e))?;
    let mut assigned = Vec::new();
    for app in &state.registry.apps {
        assigned.push((app.spec.name.clone(), catalog.app_policy(&app.spec.name).map_err(|e| ApiError::internal("reading the catalog", e))?));
    }
    Ok(Json(
        policies
            .into_iter()
            .map(|p| PolicyView {
                schedule: match &p.schedule {
                    Schedule::Cron { expr } => format!("cron {expr}"),
                    Schedule::Interval { every } => format!("every {}s", every.as_secs()),
                },
                keep_last: p.keep_last,
                max_age_s: p.max_age.map(|d| d.as_secs()),
                apps: assigned.iter().filter(|(_, a)| a.as_deref() == Some(p.name.as_str())).map(|(n, _)| n.clone()).collect(),
                name: p.name,
            })
            .collect(),
    ))
}

// ---------------------------------------------------------------------------------------
// Backups and restores
// ---------------------------------------------------------------------------------------

/// Back up now: starts a backup job and answers at once with it.
#[utoipa::path(post, path = "/api/v1/apps/{app}/backups", tag = "backups", params(("app" = String, Path, description = "app name")),
    responses((status = 202, body = Job, description = "the job; follow it at /api/v1/jobs/{id} or /api/v1/jobs/events"), (status = 404, description = "no such app"), (status = 409, description = "the app is unavailable")))]
async fn backup_now(State(state): State<SharedState>, Path(app): Path<String>) -> ApiResult<(StatusCode, Json<Job>)> {
    let handle = app_or_404(&state, &app)?;
    if let Err(why) = &handle.plugin {
        return Err(ApiError::conflict(format!("app {app} is unavailable: {why}")));
    }
    let job = start_backup(&state, &app, JobKind::Backup);
    Ok((StatusCode::ACCEPTED, Json(job)))
}

/// Start a backup job of `app` (which must be in the registry).
pub(crate) fn start_backup(state: &SharedState, app: &str, kind: JobKind) -> Job {
    let job = state.jobs.create(kind, app, None);
    let (state, app, id) = (state.clone(), app.to_string(), job.id.clone());
    tokio::spawn(async move {
        let Some(handle) = state.registry.app(&app) else { return };
        let _busy = handle.busy.lock().await;
        state.jobs.update(&id, |j| j.state = JobState::Running);
        state.metrics.jobs_running.inc();
        let progress = Arc::new(JobProgress::new(state.jobs.clone(), state.metrics.clone(), &id, &app));
        let orchestrator = handle.orchestrator.clone().with_hook(progress);
        let result = match &handle.plugin {
            Ok(plugin) => orchestrator.backup(&handle.spec, plugin.clone()).await.map_err(|e| e.to_string()),
            Err(why) => Err(why.clone()),
        };
        state.metrics.jobs_running.dec();
        let outcome = if result.is_ok() { "success" } else { "failure" };
        state.metrics.backups.get_or_create(&OutcomeLabels { app: app.clone(), outcome: outcome.into() }).inc();
        match result {
            Ok(done) => {
                let record = done.record;
                if let Some(window) = record.evidence.freeze_window() {
                    state.metrics.freeze_window.get_or_create(&AppLabels { app: app.clone() }).observe(window.as_secs_f64());
                }
                let view = BackupView::from(&record);
                tracing::info!(app = %app, backup = %record.id, "backup job done");
                state.jobs.update(&id, |j| {
                    j.state = JobState::Succeeded;
                    j.steps_done = j.steps_total;
                    j.backup_id = Some(record.id.clone());
                    j.finished_at = Some(Utc::now());
                    j.message = Some(format!(
                        "{} backup {} at {}; freeze {} ms",
                        view.consistency.as_deref().unwrap_or("?"),
                        view.id,
                        view.consistency_point.as_deref().unwrap_or("-"),
                        view.freeze_window_ms.map_or("-".into(), |f| format!("{f:.2}"))
                    ));
                });
                if let Some(policy) = state.registry.catalog.app_policy(&app).ok().flatten().and_then(|p| state.registry.catalog.policy(&p).ok().flatten()) {
                    if let Err(e) = handle.orchestrator.apply_retention(&handle.spec, &policy).await {
                        tracing::warn!(app = %app, error = %e, "retention after the backup failed");
                    }
                }
            }
            Err(error) => {
                tracing::warn!(app = %app, %error, "backup job failed");
                state.jobs.update(&id, |j| {
                    j.state = JobState::Failed;
                    j.finished_at = Some(Utc::now());
                    j.error = Some(error);
                });
            }
        }
    });
    job
}

/// Backups, oldest first; `?app=` for one app's.
#[utoipa::path(get, path = "/api/v1/backups", tag = "backups", params(AppFilter), responses((status = 200, body = Vec<BackupView>), (status = 404, description = "no such app")))]
async fn list_backups(State(state): State<SharedState>, Query(filter): Query<AppFilter>) -> ApiResult<Json<Vec<BackupView>>> {
    if let Some(app) = &filter.app {
        app_or_404(&state, app)?;
    }
    let backups = state.registry.catalog.backups(filter.app.as_deref()).map_err(|e| ApiError::internal("reading the catalog", e))?;
    Ok(Json(backups.iter().map(BackupView::from).collect()))
}

#[utoipa::path(get, path = "/api/v1/backups/{id}", tag = "backups", params(("id" = String, Path, description = "backup id")), responses((status = 200, body = BackupView), (status = 404, description = "no such backup")))]
async fn get_backup(State(state): State<SharedState>, Path(id): Path<String>) -> ApiResult<Json<BackupView>> {
    let backup = state.registry.catalog.backup(&id).map_err(|e| ApiError::internal("reading the catalog", e))?.ok_or_else(|| ApiError::not_found(format!("no backup {id:?}")))?;
    Ok(Json(BackupView::from(&backup)))
}

/// Restore a backup: to a clone by default; in place only with `confirm_discard_newer`.
#[utoipa::path(post, path = "/api/v1/backups/{id}/restore", tag = "restores", params(("id" = String, Path, description = "backup id")), request_body = RestoreRequest,
    responses((status = 202, body = Job), (status = 400, description = "bad body, unconfirmed in-place restore, backup not restorable"), (status = 404, description = "no such backup"), (status = 409, description = "the app's server still answers, or the app is unavailable")))]
async fn restore_backup(State(state): State<SharedState>, Path(id): Path<String>, body: Result<Json<RestoreRequest>, JsonRejection>) -> ApiResult<(StatusCode, Json<Job>)> {
    let Json(request) = body.map_err(bad_body)?;
    let backup = state.registry.catalog.backup(&id).map_err(|e| ApiError::internal("reading the catalog", e))?.ok_or_else(|| ApiError::not_found(format!("no backup {id:?}")))?;
    let handle = app_or_404(&state, &backup.app)?;
    if backup.state != BackupState::Complete || backup.expired {
        return Err(ApiError::bad_request(format!("backup {id} is not restorable (state {}{})", snake(&backup.state), if backup.expired { ", expired" } else { "" })));
    }
    if let Err(why) = &handle.plugin {
        return Err(ApiError::conflict(format!("app {} is unavailable: {why}", backup.app)));
    }
    let names = match (&request.mode, &request.clone_name) {
        (RestoreModeRequest::Clone, Some(name)) => Some(crate::cli::clone_names(name, &backup).map_err(|e| ApiError::bad_request(e.to_string().replace("--to-clone", "clone_name")))?),
        (RestoreModeRequest::InPlace, Some(_)) => return Err(ApiError::bad_request("clone_name is for mode clone")),
        _ => None,
    };
    if request.mode == RestoreModeRequest::InPlace {
        if !request.confirm_discard_newer {
            return Err(ApiError::bad_request(format!(
                "an in-place restore discards everything app {} wrote after backup {id} (and newer backups' snapshots): send \"confirm_discard_newer\": true to go ahead, or restore to a clone",
                backup.app
            )));
        }
        if let Some(addr) = &handle.refuse_in_place_while_answering {
            if matches!(tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await, Ok(Ok(_))) {
                return Err(ApiError::conflict(format!("refusing to restore app {} in place: its server at {addr} still answers; stop it first, configure stop_command/start_command, or restore to a clone", backup.app)));
            }
        }
    }
    let kind = if request.mode == RestoreModeRequest::InPlace { JobKind::RestoreInPlace } else { JobKind::RestoreToClone };
    let job = state.jobs.create(kind, &backup.app, Some(id.clone()));
    let (st, app, job_id) = (state.clone(), backup.app.clone(), job.id.clone());
    tokio::spawn(async move {
        let Some(handle) = st.registry.app(&app) else { return };
        let _busy = handle.busy.lock().await;
        st.jobs.update(&job_id, |j| j.state = JobState::Running);
        st.metrics.jobs_running.inc();
        let progress = Arc::new(JobProgress::new(st.jobs.clone(), st.metrics.clone(), &job_id, &app));
        let orchestrator = handle.orchestrator.clone().with_hook(progress);
        let result = match &handle.plugin {
            Ok(plugin) => match kind {
                JobKind::RestoreInPlace => orchestrator.restore_in_place(&handle.spec, &id, plugin.clone()).await,
                _ => orchestrator.restore_to_clone_named(&handle.spec, &id, plugin.clone(), names).await,
            }
            .map_err(|e| e.to_string()),
            Err(why) => Err(why.clone()),
        };
        st.metrics.jobs_running.dec();
        let mode = if kind == JobKind::RestoreInPlace { "in_place" } else { "clone" };
        st.metrics.restores.get_or_create(&RestoreLabels { app: app.clone(), mode: mode.into(), outcome: if result.is_ok() { "success" } else { "failure" }.into() }).inc();
        match result {
            Ok(record) => {
                let view = RestoreView::from(&record);
                st.jobs.update(&job_id, |j| {
                    j.state = JobState::Succeeded;
                    j.steps_done = j.steps_total;
                    j.restore_id = Some(record.id.clone());
                    j.finished_at = Some(Utc::now());
                    j.message = Some(match view.mode.as_str() {
                        "clone" => format!("cloned to {}; recovered {}", view.clone_volumes.join(", "), view.recovered_point.as_deref().unwrap_or("-")),
                        _ => format!("restored in place; recovered {}", view.recovered_point.as_deref().unwrap_or("-")),
                    });
                });
            }
            Err(error) => {
                tracing::warn!(app = %app, %error, "restore job failed");
                st.jobs.update(&job_id, |j| {
                    j.state = JobState::Failed;
                    j.finished_at = Some(Utc::now());
                    j.error = Some(error);
                });
            }
        }
    });
    Ok((StatusCode::ACCEPTED, Json(job)))
}

#[utoipa::path(get, path = "/api/v1/restores", tag = "restores", params(AppFilter), responses((status = 200, body = Vec<RestoreView>)))]
async fn list_restores(State(state): State<SharedState>, Query(filter): Query<AppFilter>) -> ApiResult<Json<Vec<RestoreView>>> {
    if let Some(app) = &filter.app {
        app_or_404(&state, app)?;
    }
    let restores = state.registry.catalog.restores(filter.app.as_deref()).map_err(|e| ApiError::internal("reading the catalog", e))?;
    Ok(Json(restores.iter().map(RestoreView::from).collect()))
}

// ---------------------------------------------------------------------------------------
// Jobs
// ---------------------------------------------------------------------------------------

#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", responses((status = 200, body = Vec<Job>)))]
async fn list_jobs(State(state): State<SharedState>) -> Json<Vec<Job>> {
    Json(state.jobs.list())
}

#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs", params(("id" = String, Path, description = "job id")), responses((status = 200, body = Job), (status = 404, description = "no such job")))]
async fn get_job(State(state): State<SharedState>, Path(id): Path<String>) -> ApiResult<Json<Job>> {
    state.jobs.get(&id).map(Json).ok_or_else(|| ApiError::not_found(format!("no job {id:?} (jobs are kept in memory while the server runs)")))
}

/// Live job progress as server-sent events: one `job` event (the job as JSON) for every
/// job at connect, then one per change.
#[utoipa::path(get, path = "/api/v1/jobs/events", tag = "jobs", responses((status = 200, description = "text/event-stream of `job` events", content_type = "text/event-stream", body = Job)))]
async fn job_events(State(state): State<SharedState>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let receiver = state.jobs.subscribe();
    let initial: Vec<Job> = state.jobs.list();
    let initial = futures::stream::iter(initial.into_iter().map(|job| Ok(job_event(&job))));
    let updates = futures::stream::unfold(receiver, |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok(job) => return Some((Ok(job_event(&job)), receiver)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    use futures::StreamExt;
    Sse::new(initial.chain(updates)).keep_alive(KeepAlive::default())
}

fn job_event(job: &Job) -> Event {
    Event::default().event("job").data(serde_json::to_string(job).unwrap_or_default())
}

// ---------------------------------------------------------------------------------------
// DR and metrics
// ---------------------------------------------------------------------------------------

/// Disaster-recovery status per app, from the app's DR plan in the catalog.
#[utoipa::path(get, path = "/api/v1/dr", tag = "dr", responses((status = 200, body = Vec<DrStatusView>)))]
async fn dr_status(State(state): State<SharedState>) -> ApiResult<Json<Vec<DrStatusView>>> {
    let catalog = &state.registry.catalog;
    let mut views = Vec::new();
    for app in &state.registry.apps {
        let name = &app.spec.name;
        let plan = catalog.dr_plan(name).map_err(|e| ApiError::internal("reading the catalog", e))?;
        let last = catalog.failovers(Some(name)).map_err(|e| ApiError::internal("reading the catalog", e))?.into_iter().last();
        views.push(match plan {
            None => DrStatusView { app: name.clone(), status: "not_configured".into(), active_site: None, destination_cluster: None, destination_svm: None, policy: None, last_failover: None },
            Some(plan) => DrStatusView {
                app: name.clone(),
                status: snake(&plan.state),
                active_site: Some(snake(&plan.active_site)),
                destination_cluster: Some(plan.destination_cluster.clone()),
                destination_svm: Some(plan.destination_svm.clone()),
                policy: Some(plan.policy.clone()),
                last_failover: last.map(|f| FailoverView {
                    id: f.id.clone(),
                    kind: snake(&f.kind),
                    state: snake(&f.state),
                    finished_at: f.finished_at.map(|t| t.to_rfc3339()),
                    rpo_s: f.rpo.map(|d| d.as_secs_f64()),
                    rto_s: f.rto.map(|d| d.as_secs_f64()),
                    verified: f.verified,
                }),
            },
        });
    }
    Ok(Json(views))
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "metrics", responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
async fn metrics(State(state): State<SharedState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.encode())
}
