//! `stasis serve`: the REST API (OpenAPI at `/api-docs/openapi.json`), the web dashboard,
//! and `/metrics`, over the same workflows as the CLI.
//!
//! A library function over an app [`Registry`], so `stasis serve` (apps from the config
//! file) and `stasis demo --keep-running` (apps on in-process simulators) host the same
//! server: build a `Registry`, call [`router`], and [`serve`] it on a listener with a
//! shutdown signal.

mod api;
mod dashboard;
pub mod jobs;

use std::future::Future;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use stasis_core::catalog::Catalog;
use stasis_core::domain::AppSpec;
use stasis_core::plugin::AppPlugin;
use stasis_core::workflow::Orchestrator;

pub use api::ApiDoc;
pub use jobs::{Job, JobKind, JobState, Jobs};

use crate::metrics::Metrics;

/// One protected application as the server drives it.
pub struct AppHandle {
    pub spec: AppSpec,
    /// Kubernetes namespace, or `local` for an app outside Kubernetes.
    pub namespace: String,
    /// The pod or workload name shown in the resources table.
    pub workload: String,
    /// The ONTAP cluster (by its configured name) that holds the app's volumes.
    pub cluster: String,
    pub orchestrator: Orchestrator,
    /// The app's plugin, or why it is unavailable (jobs on the app then fail with that).
    pub plugin: Result<Arc<dyn AppPlugin>, String>,
    /// `host:port` of the app's own server: an in-place restore is refused while it
    /// answers (the app has no stop/start commands the workflow could use).
    pub refuse_in_place_while_answering: Option<String>,
    /// One workflow at a time per app: a backup and an in-place restore must not overlap.
    pub(crate) busy: tokio::sync::Mutex<()>,
}

impl AppHandle {
    pub fn new(spec: AppSpec, cluster: impl Into<String>, orchestrator: Orchestrator, plugin: Result<Arc<dyn AppPlugin>, String>) -> Self {
        AppHandle {
            workload: spec.name.clone(),
            spec,
            namespace: "local".into(),
            cluster: cluster.into(),
            orchestrator,
            plugin,
            refuse_in_place_while_answering: None,
            busy: tokio::sync::Mutex::new(()),
        }
    }
}

/// What the server serves: the apps and the catalog they share.
pub struct Registry {
    pub apps: Vec<AppHandle>,
    pub catalog: Arc<dyn Catalog>,
    /// Shown in the dashboard's header (e.g. the config file or "demo").
    pub title: String,
}

impl Registry {
    pub fn app(&self, name: &str) -> Option<&AppHandle> {
        self.apps.iter().find(|a| a.spec.name == name)
    }
}

pub struct ServerState {
    pub registry: Registry,
    pub jobs: Arc<Jobs>,
    pub metrics: Arc<Metrics>,
    token: String,
}

pub type SharedState = Arc<ServerState>;

/// The API token: at least 16 characters, so a guessable one is refused.
pub const TOKEN_LEN_MIN: usize = 16;

/// The whole server as a router: public `/`, static assets, `/healthz` and the OpenAPI
/// document; everything under `/api/v1` and `/metrics` needs `Authorization: Bearer TOKEN`.
pub fn router(registry: Registry, token: String) -> anyhow::Result<(Router, SharedState)> {
    if token.len() < TOKEN_LEN_MIN {
        anyhow::bail!("the API token must be at least {TOKEN_LEN_MIN} characters");
    }
    let state = Arc::new(ServerState { registry, jobs: Arc::new(Jobs::default()), metrics: Arc::new(Metrics::new()), token });
    let protected = api::routes(state.clone()).layer(axum::middleware::from_fn_with_state(state.clone(), require_token));
    let router = Router::new().merge(protected).merge(dashboard::routes()).merge(api::public_routes());
    Ok((router, state))
}

/// Serve `router` on `listener` (HTTPS when `tls` is given) until `shutdown` completes.
pub async fn serve(listener: std::net::TcpListener, router: Router, tls: Option<axum_server::tls_rustls::RustlsConfig>, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopper.graceful_shutdown(Some(std::time::Duration::from_secs(5)));
    });
    let service = router.into_make_service();
    match tls {
        Some(tls) => axum_server::from_tcp_rustls(listener, tls).handle(handle).serve(service).await,
        None => axum_server::from_tcp(listener).handle(handle).serve(service).await,
    }
}

/// A TLS configuration from PEM files (the ring provider, as everywhere in Stasis).
pub async fn tls_config(cert: &std::path::Path, key: &std::path::Path) -> anyhow::Result<axum_server::tls_rustls::RustlsConfig> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
        .await
        .map_err(|e| anyhow::anyhow!("loading the TLS certificate {} and key {}: {e}", cert.display(), key.display()))
}

/// Compare without an early exit, so response timing does not reveal a token prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn require_token(State(state): State<SharedState>, request: Request, next: Next) -> Response {
    let presented = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(token) if constant_time_eq(token.trim().as_bytes(), state.token.as_bytes()) => next.run(request).await,
        Some(_) => unauthorized("the bearer token is not valid"),
        None => unauthorized("this endpoint needs `Authorization: Bearer <token>` (the token `stasis serve` printed at first start, or the content of its token file)"),
    }
}

fn unauthorized(message: &str) -> Response {
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    response
}

/// An error answer: `{"error": {"status": 404, "message": "..."}}`. Internal details are
/// logged, never returned.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into() }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }
    pub fn internal(context: &str, error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "{context}");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{context} failed; see the server log"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"status": self.status.as_u16(), "message": self.message}});
        (self.status, axum::Json(body)).into_response()
    }
}

/// Generate a token: 32 random bytes, hex.
pub fn generate_token() -> String {
    (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect()
}

/// How often the scheduler looks for apps whose SLA policy says a backup is due.
pub const SCHEDULER_PERIOD: std::time::Duration = std::time::Duration::from_secs(30);

/// Run scheduled backups: every `period`, each app with a policy whose next backup is due
/// (after its last backup, complete or not) gets a backup job, unless one of its jobs is
/// still queued or running. Retention runs after each backup job.
pub fn spawn_scheduler(state: SharedState, period: std::time::Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            let now = chrono::Utc::now();
            for app in &state.registry.apps {
                let name = &app.spec.name;
                if app.plugin.is_err() || state.jobs.list().iter().any(|j| &j.app == name && matches!(j.state, JobState::Queued | JobState::Running)) {
                    continue;
                }
                let catalog = &state.registry.catalog;
                let Some(policy) = catalog.app_policy(name).ok().flatten().and_then(|p| catalog.policy(&p).ok().flatten()) else { continue };
                let last = catalog.backups(Some(name)).ok().and_then(|b| b.last().map(|b| b.started_at));
                // Never backed up: the first scheduled backup is the next due time from now.
                let Some(last) = last else { continue };
                match stasis_core::workflow::next_due(&policy.schedule, Some(last), now) {
                    Ok(due) if due <= now => {
                        tracing::info!(app = %name, policy = %policy.name, "scheduled backup due");
                        api::start_backup(&state, name, JobKind::ScheduledBackup);
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(app = %name, error = %e, "policy schedule"),
                }
            }
        }
    })
}
