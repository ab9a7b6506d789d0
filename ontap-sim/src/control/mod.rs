//! The simulator's own control API under `/sim/v1` (not ONTAP's namespace, same auth):
//! the data plane over HTTP, fault rules and the seed. Every operation here is also a method
//! of [`crate::sim::Simulator`] for in-process callers.

pub mod faults;
pub mod intercluster;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::api::ApiState;
use crate::error::{ErrorKind, OntapError};
use faults::FaultRuleSpec;

/// Largest file upload through the control API in one request.
pub const UPLOAD_BYTES_MAX: usize = 64 * 1024 * 1024;

type ControlResult = Result<Response, OntapError>;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/volumes/{uuid}/files", get(list_root))
        .route("/volumes/{uuid}/files/{*path}", get(read_file).put(write_file).delete(remove_file))
        .route("/volumes/{uuid}/snapshots/{name}/files", get(list_snapshot_root))
        .route("/volumes/{uuid}/snapshots/{name}/files/{*path}", get(read_snapshot_file))
        .route("/volumes/{uuid}/fill", post(fill))
        .route("/faults", get(list_faults).post(add_fault).delete(clear_faults))
        .route("/faults/{id}", axum::routing::delete(remove_fault))
        .route("/seed", post(reseed))
        .nest("/intercluster", intercluster::routes())
}

#[derive(Deserialize)]
struct Range {
    offset: Option<u64>,
    length: Option<u64>,
}

async fn body_bytes(req: Request) -> Result<Bytes, OntapError> {
    axum::body::to_bytes(req.into_body(), UPLOAD_BYTES_MAX)
        .await
        .map_err(|_| OntapError::new(ErrorKind::TooLarge, 262199, format!("Uploads through /sim/v1 are limited to {UPLOAD_BYTES_MAX} bytes per request; use ?offset= to write in parts.")))
}

fn json_body<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, OntapError> {
    serde_json::from_slice(bytes).map_err(|e| OntapError::new(ErrorKind::Invalid, 2, format!("Invalid request body: {e}.")))
}

fn octets(data: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/octet-stream")], data).into_response()
}

async fn list_root(State(st): State<ApiState>, Path(uuid): Path<String>) -> ControlResult {
    Ok(Json(json!({"records": st.sim.list_dir(&uuid, None, "")?})).into_response())
}

async fn list_snapshot_root(State(st): State<ApiState>, Path((uuid, name)): Path<(String, String)>) -> ControlResult {
    Ok(Json(json!({"records": st.sim.list_dir(&uuid, Some(&name), "")?})).into_response())
}

/// A path that names a directory answers with its listing; a file with its bytes.
fn read_any(st: &ApiState, uuid: &str, snapshot: Option<&str>, path: &str, range: &Range) -> ControlResult {
    let is_dir = st.sim.with_volume(uuid, |v| {
        let fs = match snapshot {
            Some(name) => &v.snapshot_by_name(name).ok_or_else(|| OntapError::not_found(&format!("snapshot {name}")))?.fs,
            None => &v.fs,
        };
        let ino = crate::model::volume::fs_result(fs.resolve(path))?;
        Ok(crate::model::volume::fs_result(fs.inode(ino))?.file_type() == crate::model::fs::FileType::Dir)
    })?;
    if is_dir {
        return Ok(Json(json!({"records": st.sim.list_dir(uuid, snapshot, path)?})).into_response());
    }
    let offset = range.offset.unwrap_or(0);
    let data = match snapshot {
        Some(name) => st.sim.read_snapshot_file(uuid, name, path, offset, range.length)?,
        None => st.sim.read_file(uuid, path, offset, range.length)?,
    };
    Ok(octets(data))
}

async fn read_file(State(st): State<ApiState>, Path((uuid, path)): Path<(String, String)>, Query(range): Query<Range>) -> ControlResult {
    read_any(&st, &uuid, None, &path, &range)
}

async fn read_snapshot_file(State(st): State<ApiState>, Path((uuid, name, path)): Path<(String, String, String)>, Query(range): Query<Range>) -> ControlResult {
    read_any(&st, &uuid, Some(&name), &path, &range)
}

/// Without `offset` the body replaces the file; with it, the body is written at that offset.
async fn write_file(State(st): State<ApiState>, Path((uuid, path)): Path<(String, String)>, Query(range): Query<Range>, req: Request) -> ControlResult {
    let data = body_bytes(req).await?;
    match range.offset {
        Some(offset) => st.sim.write_file(&uuid, &path, offset, &data)?,
        None => st.sim.put_file(&uuid, &path, &data)?,
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn remove_file(State(st): State<ApiState>, Path((uuid, path)): Path<(String, String)>) -> ControlResult {
    st.sim.remove_file(&uuid, &path)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FillRequest {
    bytes: u64,
    #[serde(default)]
    seed: u64,
    #[serde(default = "fill_path")]
    path: String,
}

fn fill_path() -> String {
    "fill.dat".to_string()
}

async fn fill(State(st): State<ApiState>, Path(uuid): Path<String>, req: Request) -> ControlResult {
    let bytes = body_bytes(req).await?;
    let request: FillRequest = json_body(&bytes)?;
    let sim = st.sim.clone();
    // Large fills take a while: keep them off the async workers.
    tokio::task::spawn_blocking(move || sim.fill(&uuid, &request.path, request.bytes, request.seed))
        .await
        .map_err(|e| OntapError::internal(format!("fill task failed: {e}")))??;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_faults(State(st): State<ApiState>) -> ControlResult {
    Ok(Json(json!({"records": st.sim.faults().list()})).into_response())
}

async fn add_fault(State(st): State<ApiState>, req: Request) -> ControlResult {
    let bytes = body_bytes(req).await?;
    let spec: FaultRuleSpec = json_body(&bytes)?;
    let id = st.sim.faults().add(spec).map_err(|message| OntapError::new(ErrorKind::Invalid, 2, message))?;
    Ok((StatusCode::CREATED, Json(json!({"id": id}))).into_response())
}

async fn clear_faults(State(st): State<ApiState>) -> ControlResult {
    st.sim.faults().clear();
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn remove_fault(State(st): State<ApiState>, Path(id): Path<u64>) -> ControlResult {
    if st.sim.faults().remove(id) {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(OntapError::not_found(&format!("fault rule {id}")))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedRequest {
    seed: u64,
}

async fn reseed(State(st): State<ApiState>, req: Request) -> ControlResult {
    let bytes = body_bytes(req).await?;
    let request: SeedRequest = json_body(&bytes)?;
    st.sim.faults().reseed(request.seed);
    Ok(StatusCode::NO_CONTENT.into_response())
}
