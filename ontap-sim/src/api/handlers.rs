//! One handler per ONTAP endpoint the simulator serves.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::Value;

use super::body::Body;
use super::fields::Resource;
use super::query::{collection_response, project, OntapQuery};
use super::{encode, render, run_job, write_response, ApiState, JobFault, JsonBody, WriteOp};
use crate::error::{ErrorKind, OntapError, SimResult};
use crate::model::cluster::{ClusterState, CloneRequest, Selector, SnapshotModify, VolumeCreate, VolumeModify};
use crate::model::volume::{VolumeState, VolumeType};

pub(super) type Fault = Option<Extension<JobFault>>;
pub(super) type ApiResult = Result<Response, OntapError>;

const VOLUME_KEYS: &[&str] = &["uuid", "name"];
const RESTORE_PARAMS: &[&str] = &["restore_to.snapshot.name", "restore_to.snapshot.uuid"];
/// Volume fields that describe state rather than configuration: never settable.
const VOLUME_READ_ONLY: &[&str] = &[
    "uuid", "create_time", "snapshot_count", "statistics", "metric", "_links", "is_svm_root", "files", "status",
    "space.used", "space.available", "space.afs_total", "space.snapshot.used", "space.snapshot.reserve_size",
    "space.snapshot.reserve_available", "space.snapshot.space_used_percent", "space.physical_used", "space.logical_space.used",
    "clone.split_complete_percent", "clone.split_estimate", "clone.inherited_physical_used", "clone.inherited_savings",
    "clone.has_flexclone", "style_extended", "msid", "error_state", "cloud_retrieval_policy_effective",
];
/// Modelled volume fields a PATCH cannot change (set at create, or by other operations):
/// stored as unmodelled extras they would read back as something the volume is not.
const VOLUME_FIXED_AFTER_CREATE: &[&str] = &["svm", "aggregates", "type", "style", "clone"];

pub fn routes() -> Router<ApiState> {
    Router::new()
        .merge(super::peers::routes())
        .merge(super::snapmirror::routes())
        .route("/cluster", get(get_cluster))
        .route("/cluster/jobs", get(list_jobs))
        .route("/cluster/jobs/{uuid}", get(get_job))
        .route("/svm/svms", get(list_svms))
        .route("/svm/svms/{uuid}", get(get_svm))
        .route("/storage/aggregates", get(list_aggregates))
        .route("/storage/aggregates/{uuid}", get(get_aggregate))
        .route("/storage/volumes", get(list_volumes).post(create_volume))
        .route("/storage/volumes/{uuid}", get(get_volume).patch(modify_volume).delete(delete_volume))
        .route("/storage/volumes/{uuid}/snapshots", get(list_snapshots).post(create_snapshot))
        .route("/storage/volumes/{uuid}/snapshots/{snapshot}", get(get_snapshot).patch(modify_snapshot).delete(delete_snapshot))
        .route("/application/consistency-groups", get(list_cgs).post(create_cg))
        .route("/application/consistency-groups/{uuid}", get(get_cg).patch(modify_cg).delete(delete_cg))
        .route("/application/consistency-groups/{uuid}/snapshots", get(list_cg_snapshots).post(create_cg_snapshot))
        .route("/application/consistency-groups/{uuid}/snapshots/{snapshot}", get(get_cg_snapshot).delete(delete_cg_snapshot))
}

pub(super) fn query(raw: &Option<String>, resource: Resource, operation: &[&str]) -> SimResult<OntapQuery> {
    OntapQuery::parse(raw.as_deref(), resource, operation)
}

pub(super) fn collection(records: Vec<Value>, q: &OntapQuery, path: &str, keys: &[&str]) -> ApiResult {
    Ok(Json(collection_response(records, q, path, keys, &[], "uuid")?).into_response())
}

pub(super) fn instance(full: Value, q: &OntapQuery, keys: &[&str]) -> ApiResult {
    Ok(Json(project(&full, q.fields.as_deref(), keys, &[], &[], true)).into_response())
}

pub(super) fn fault(f: Fault) -> Option<crate::control::faults::FaultAction> {
    f.map(|Extension(JobFault(action))| action)
}

/// Default `return_timeout` for writes is 0: answer 202 at once with the job.
pub(super) fn return_timeout(q: &OntapQuery) -> u64 {
    q.return_timeout_s.unwrap_or(0)
}

pub(super) async fn write(state: &ApiState, f: Fault, q: &OntapQuery, description: String, done: StatusCode, location: Option<String>, op: WriteOp) -> ApiResult {
    let timeout = return_timeout(q);
    let (job, outcome) = run_job(state, fault(f), description, timeout, op).await?;
    Ok(write_response(&job, outcome, timeout, done, location))
}

/// A write that talks to a peer cluster: the same answer, the work in a background job.
pub(super) async fn write_async(state: &ApiState, f: Fault, q: &OntapQuery, description: String, done: StatusCode, location: Option<String>, op: super::AsyncOp) -> ApiResult {
    let timeout = return_timeout(q);
    let (job, outcome) = super::run_async_job(state, fault(f), description, timeout, op).await?;
    Ok(write_response(&job, outcome, timeout, done, location))
}

// ---- cluster, jobs, svms, aggregates ----

async fn get_cluster(State(st): State<ApiState>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = query(&raw, Resource::Cluster, &[])?;
    instance(st.sim.read(render::cluster), &q, &[])
}

async fn list_jobs(State(st): State<ApiState>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = query(&raw, Resource::Job, &[])?;
    let records = st.sim.read(|s| {
        let mut jobs: Vec<_> = s.jobs.values().collect();
        jobs.sort_by_key(|j| j.seq);
        jobs.into_iter().map(render::job).collect()
    });
    collection(records, &q, "/api/cluster/jobs", &["uuid"])
}

async fn get_job(State(st): State<ApiState>, Path(uuid): Path<String>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = query(&raw, Resource::Job, &[])?;
    let job = st.sim.read(|s| s.jobs.get(&uuid).map(render::job)).ok_or_else(|| OntapError::not_found("job").with_target("uuid"))?;
    instance(job, &q, &["uuid"])
}

async fn list_svms(State(st): State<ApiState>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = query(&raw, Resource::Svm, &[])?;
    let records = st.sim.read(|s| s.svms.iter().map(|svm| render::svm(s, svm)).collect());
    collection(records, &q, "/api/svm/svms", &["uuid", "name"])
}

async fn get_svm(State(st): State<ApiState>, Path(uuid): Path<String>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = query(&raw, Resource::Svm, &[])?;
    let svm = st.sim.read(|s| s.svms.iter().find(|v| v.uuid == uuid).map(|v| render::svm(s, v))).ok_or_else(|| OntapError::not_found("svm").with_target("uuid"))?;
    instance(svm, &q, &["uuid", "name"])
}

async fn list_aggregates(State(st): State<ApiState>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = query(&raw, Resource::Aggregate, &[])?;
    let records = st.sim.read(|s| s.aggregates.iter().map(|a| render::aggregate(s, a)).collect());
    collection(records, &q, "/api/storage/aggregates", &["uuid", "name"])
}

async fn get_aggregate(State(st): State<ApiState>, Path(uuid): Path<String>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = query(&raw, Resource::Aggregate, &[])?;
    let aggr = st
        .sim
        .read(|s| s.aggregates.iter().find(|a| a.uuid == uuid).map(|a| render::aggregate(s, a)))
        .ok_or_else(|| OntapError::not_found("aggregate").with_target("uuid"))?;
    instance(aggr, &q, &["uuid", "name"])
}

// ---- volumes ----

async fn list_volumes(State(st): State<ApiState>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = query(&raw, Resource::Volume, &[])?;
    let records = st.sim.read(|s| s.volumes_in_order().into_iter().map(render::volume).collect());
    collection(records, &q, "/api/storage/volumes", VOLUME_KEYS)
}

async fn get_volume(State(st): State<ApiState>, Path(uuid): Path<String>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = query(&raw, Resource::Volume, RESTORE_PARAMS)?;
    let volume = st.sim.read(|s| s.volume(&uuid).map(render::volume))?;
    instance(volume, &q, VOLUME_KEYS)
}

fn parse_state(body: &mut Body) -> SimResult<Option<VolumeState>> {
    body.take_str("state")?.map(|s| VolumeState::parse(&s)).transpose()
}

async fn create_volume(State(st): State<ApiState>, f: Fault, RawQuery(raw): RawQuery, JsonBody(json): JsonBody) -> ApiResult {
    let q = query(&raw, Resource::Volume, &[])?;
    let mut body = Body::new(Resource::Volume, json)?;
    let name = body.require_str("name")?;
    let is_clone = body.take_bool("clone.is_flexclone")?;
    let clone = if is_clone == Some(true) || body.contains("clone.parent_volume") {
        Some(CloneRequest { parent_volume: body.take_selector("clone.parent_volume")?, parent_snapshot: body.take_selector("clone.parent_snapshot")? })
    } else {
        None
    };
    let vtype = match body.take_str("type")?.as_deref() {
        None | Some("rw") => None,
        Some("dp") => Some(VolumeType::Dp),
        Some(other) => return Err(OntapError::invalid_field("type", format!("\"{other}\" is an invalid value for field \"type\". Valid values are \"rw\" and \"dp\"."))),
    };
    let req = VolumeCreate {
        name: name.clone(),
        svm: body.take_selector("svm")?,
        aggregates: body.take_selectors("aggregates")?,
        size: body.take_u64("size")?.or(body.take_u64("space.size")?),
        comment: body.take_str("comment")?,
        junction_path: body.take_str("nas.path")?,
        reserve_percent: body.take_u64("space.snapshot.reserve_percent")?,
        state: parse_state(&mut body)?,
        vtype: vtype.or(if clone.is_some() { Some(VolumeType::Rw) } else { None }),
        clone,
    };
    let extras = body.finish(VOLUME_READ_ONLY)?;
    let svm_name = req.svm.name.clone();
    let op: WriteOp = Arc::new(move |s: &mut ClusterState, now| {
        let uuid = s.create_volume(req.clone(), now)?;
        let volume = s.volume_mut(&uuid)?;
        for (path, value) in &extras {
            volume.extras.insert(path.clone(), value.clone());
        }
        Ok(())
    });
    let mut location = format!("/api/storage/volumes/?name={}", encode(&name));
    if let Some(svm) = svm_name {
        location.push_str(&format!("&svm.name={}", encode(&svm)));
    }
    write(&st, f, &q, format!("POST /api/storage/volumes/{name}"), StatusCode::CREATED, Some(location), op).await
}

async fn modify_volume(State(st): State<ApiState>, f: Fault, Path(uuid): Path<String>, RawQuery(raw): RawQuery, JsonBody(json): JsonBody) -> ApiResult {
    let q = query(&raw, Resource::Volume, RESTORE_PARAMS)?;
    let mut body = Body::new(Resource::Volume, json)?;
    st.sim.read(|s| s.volume(&uuid).map(|_| ()))?;
    // SnapRestore comes as a query parameter (netapp-ontap) or in the body (Ansible).
    let mut restore = Selector::default();
    for (name, value) in &q.operation {
        match name.as_str() {
            "restore_to.snapshot.name" => restore.name = Some(value.clone()),
            _ => restore.uuid = Some(value.clone()),
        }
    }
    if restore.name.is_none() {
        restore.name = body.take_str("restore_to.snapshot.name")?;
    }
    if restore.uuid.is_none() {
        restore.uuid = body.take_str("restore_to.snapshot.uuid")?;
    }
    let op: WriteOp = if !restore.is_empty() {
        if let Some(other) = body.keys().next() {
            return Err(OntapError::new(ErrorKind::Invalid, 918251, "Specifying a value is not valid for a snapshot restore operation.").with_target(other.clone()));
        }
        let uuid = uuid.clone();
        Arc::new(move |s: &mut ClusterState, _| s.restore_volume(&uuid, &restore))
    } else {
        let split = body.take_bool("clone.split_initiated")?;
        if split == Some(false) {
            return Err(OntapError::invalid_field("clone.split_initiated", "A FlexClone split cannot be undone; only \"true\" is valid."));
        }
        // A split is a request of its own: checked before the other fields are taken.
        if split == Some(true) {
            if let Some(other) = body.keys().next() {
                return Err(OntapError::new(ErrorKind::Invalid, 918248, "Specifying a value is not valid for initiating volume FlexClone split operation.").with_target(other.clone()));
            }
        }
        let m = VolumeModify {
            name: body.take_str("name")?,
            size: body.take_u64("size")?.or(body.take_u64("space.size")?),
            comment: body.take_str("comment")?,
            junction_path: if body.contains("nas.path") { Some(body.take_str("nas.path")?.filter(|p| !p.is_empty())) } else { None },
            reserve_percent: body.take_u64("space.snapshot.reserve_percent")?,
            state: parse_state(&mut body)?,
            split_clone: split == Some(true),
        };
        let read_only: Vec<&str> = VOLUME_READ_ONLY.iter().chain(VOLUME_FIXED_AFTER_CREATE).copied().collect();
        let extras = body.finish(&read_only)?;
        let uuid = uuid.clone();
        Arc::new(move |s: &mut ClusterState, _| {
            s.modify_volume(&uuid, m.clone())?;
            let volume = s.volume_mut(&uuid)?;
            for (path, value) in &extras {
                volume.extras.insert(path.clone(), value.clone());
            }
            Ok(())
        })
    };
    write(&st, f, &q, format!("PATCH /api/storage/volumes/{uuid}"), StatusCode::OK, None, op).await
}

async fn delete_volume(State(st): State<ApiState>, f: Fault, Path(uuid): Path<String>, RawQuery(raw): RawQuery, JsonBody(json): JsonBody) -> ApiResult {
    let q = query(&raw, Resource::Volume, &[])?;
    Body::new(Resource::Volume, json)?.finish_strict()?;
    st.sim.read(|s| s.volume(&uuid).map(|_| ()))?;
    let target = uuid.clone();
    write(&st, f, &q, format!("DELETE /api/storage/volumes/{uuid}"), StatusCode::OK, None, Arc::new(move |s: &mut ClusterState, _| s.delete_volume(&target))).await
}

// ---- snapshots ----

/// Snapshots to render for a listing. An exact `name=` filter (how clients look a snapshot
/// up) picks before rendering: rendering computes each snapshot's exclusive size, and a
/// volume may hold 1023. The generic filters still run on what is rendered.
fn snapshots_of(s: &ClusterState, volume_uuid: &str, exact_name: Option<&str>) -> SimResult<Vec<Value>> {
    let wanted = |snap: &&crate::model::volume::Snapshot| exact_name.is_none_or(|n| snap.name == n);
    if volume_uuid == "*" {
        return Ok(s.volumes_in_order().into_iter().flat_map(|v| v.snapshots.iter().filter(wanted).map(move |snap| render::snapshot(v, snap))).collect());
    }
    let v = s.volume(volume_uuid)?;
    Ok(v.snapshots.iter().filter(wanted).map(|snap| render::snapshot(v, snap)).collect())
}

fn exact_name_filter(q: &OntapQuery) -> Option<&str> {
    q.filters.iter().find(|f| f.path == "name").and_then(|f| match f.alternatives.as_slice() {
        [super::query::Alternative { negated: false, test: super::query::Test::Eq(name) }] => Some(name.as_str()),
        _ => None,
    })
}

async fn list_snapshots(State(st): State<ApiState>, Path(volume): Path<String>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = query(&raw, Resource::Snapshot, &[])?;
    let records = st.sim.read(|s| snapshots_of(s, &volume, exact_name_filter(&q)))?;
    collection(records, &q, &format!("/api/storage/volumes/{volume}/snapshots"), &["uuid", "name"])
}

async fn get_snapshot(State(st): State<ApiState>, Path((volume, uuid)): Path<(String, String)>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = query(&raw, Resource::Snapshot, &[])?;
    let snapshot = st.sim.read(|s| {
        let v = s.volume(&volume)?;
        let snap = v.snapshot_by_uuid(&uuid).ok_or_else(|| OntapError::new(ErrorKind::NotFound, 1638600, "The snapshot does not exist.").with_target("uuid"))?;
        let mut out = render::snapshot(v, snap);
        // As on ONTAP, `delta` (snapshot vs active file system) is computed only on request.
        if q.fields.as_ref().is_some_and(|f| f.iter().any(|f| f == "delta" || f.starts_with("delta.") || f == "**")) {
            let changed = crate::model::delta::diff(Some(&snap.fs), &v.fs).data_blocks() as u64;
            let elapsed = (chrono::Utc::now() - snap.create_time).num_seconds().max(0);
            out["delta"] = serde_json::json!({"size_consumed": changed * crate::model::fs::BLOCK_SIZE as u64, "time_elapsed": super::snapmirror::iso_duration(elapsed)});
        }
        Ok::<_, OntapError>(out)
    })?;
    instance(snapshot, &q, &["uuid", "name"])
}

fn snapshot_modify(body: &mut Body) -> SimResult<SnapshotModify> {
    let expiry_time = match body.take_str("expiry_time")? {
        None => None,
        Some(t) => Some(
            chrono::DateTime::parse_from_rfc3339(&t)
                .map_err(|_| OntapError::invalid_field("expiry_time", format!("\"{t}\" is not a valid date and time.")))?
                .with_timezone(&chrono::Utc),
        ),
    };
    Ok(SnapshotModify { name: None, comment: body.take_str("comment")?, snapmirror_label: body.take_str("snapmirror_label")?, expiry_time })
}

async fn create_snapshot(State(st): State<ApiState>, f: Fault, Path(volume): Path<String>, RawQuery(raw): RawQuery, JsonBody(json): JsonBody) -> ApiResult {
    let q = query(&raw, Resource::Snapshot, &[])?;
    let mut body = Body::new(Resource::Snapshot, json)?;
    let name = body.require_str("name")?;
    let m = snapshot_modify(&mut body)?;
    // Keys from the path may be repeated in the body.
    if let Some(v) = body.take_str("volume.uuid")? {
        if v != volume {
            return Err(OntapError::invalid_field("volume.uuid", "The volume in the body is not the volume in the path."));
        }
    }
    body.take("volume.name");
    body.finish_strict().map_err(|e| if e.code == 2 { OntapError::new(ErrorKind::Invalid, 1638618, "The property cannot be specified for snapshot create.").with_target(e.target.unwrap_or_default()) } else { e })?;
    st.sim.read(|s| s.volume(&volume).map(|_| ()))?;
    let location = format!("/api/storage/volumes/{volume}/snapshots/?name={}", encode(&name));
    let (vol, snap_name) = (volume.clone(), name.clone());
    let op: WriteOp = Arc::new(move |s: &mut ClusterState, now| s.create_snapshot(&vol, &snap_name, m.clone(), now).map(|_| ()));
    write(&st, f, &q, format!("POST /api/storage/volumes/{volume}/snapshots/{name}"), StatusCode::CREATED, Some(location), op).await
}

async fn modify_snapshot(State(st): State<ApiState>, f: Fault, Path((volume, uuid)): Path<(String, String)>, RawQuery(raw): RawQuery, JsonBody(json): JsonBody) -> ApiResult {
    let q = query(&raw, Resource::Snapshot, &[])?;
    let mut body = Body::new(Resource::Snapshot, json)?;
    let name = body.take_str("name")?;
    let mut m = snapshot_modify(&mut body)?;
    m.name = name;
    body.finish_strict()?;
    st.sim.read(|s| s.volume(&volume)?.snapshot_by_uuid(&uuid).map(|_| ()).ok_or_else(|| OntapError::new(ErrorKind::NotFound, 1638600, "The snapshot does not exist.").with_target("uuid")))?;
    let (vol, snap) = (volume.clone(), uuid.clone());
    let op: WriteOp = Arc::new(move |s: &mut ClusterState, _| s.modify_snapshot(&vol, &snap, m.clone()));
    write(&st, f, &q, format!("PATCH /api/storage/volumes/{volume}/snapshots/{uuid}"), StatusCode::OK, None, op).await
}

async fn delete_snapshot(State(st): State<ApiState>, f: Fault, Path((volume, uuid)): Path<(String, String)>, RawQuery(raw): RawQuery, JsonBody(json): JsonBody) -> ApiResult {
    let q = query(&raw, Resource::Snapshot, &[])?;
    Body::new(Resource::Snapshot, json)?.finish_strict()?;
    st.sim.read(|s| s.volume(&volume)?.snapshot_by_uuid(&uuid).map(|_| ()).ok_or_else(|| OntapError::new(ErrorKind::NotFound, 1638600, "The snapshot does not exist.").with_target("uuid")))?;
    let (vol, snap) = (volume.clone(), uuid.clone());
    let op: WriteOp = Arc::new(move |s: &mut ClusterState, _| s.delete_snapshot(&vol, &snap));
    write(&st, f, &q, format!("DELETE /api/storage/volumes/{volume}/snapshots/{uuid}"), StatusCode::OK, None, op).await
}

// ---- consistency groups ----

async fn list_cgs(State(st): State<ApiState>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = query(&raw, Resource::ConsistencyGroup, &[])?;
    let records = st.sim.read(|s| {
        let mut cgs: Vec<_> = s.cgs.values().collect();
        cgs.sort_by_key(|c| c.seq);
        cgs.into_iter().map(|cg| render::consistency_group(s, cg)).collect()
    });
    collection(records, &q, "/api/application/consistency-groups", &["uuid", "name"])
}

async fn get_cg(State(st): State<ApiState>, Path(uuid): Path<String>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = query(&raw, Resource::ConsistencyGroup, &[])?;
    let cg = st.sim.read(|s| s.cg(&uuid).map(|cg| render::consistency_group(s, cg)))?;
    instance(cg, &q, &["uuid", "name"])
}

/// Member volumes of a new group: existing volumes by name or uuid. ONTAP's
/// `provisioning_options.action: add` (or no action) adds an existing volume; creating new
/// volumes through a consistency group is not simulated.
fn cg_members(value: Option<Value>) -> SimResult<Vec<Selector>> {
    let Some(Value::Array(items)) = value else {
        return Err(OntapError::missing_field("volumes"));
    };
    items
        .into_iter()
        .map(|item| {
            let mut entry = Body::new(Resource::ConsistencyGroup, item).map_err(|_| OntapError::invalid_field("volumes", "Each entry of \"volumes\" must be an object."))?;
            let sel = Selector { name: entry.take_str("name")?, uuid: entry.take_str("uuid")? };
            match entry.take_str("provisioning_options.action")?.as_deref() {
                None | Some("add") => {}
                Some(other) => return Err(OntapError::new(ErrorKind::Invalid, 2, format!("provisioning_options.action \"{other}\" is not simulated: add existing volumes."))
                    .with_target("volumes.provisioning_options.action")),
            }
            if let Some(key) = entry.keys().next() {
                return Err(OntapError::unknown_field(&format!("volumes.{key}")));
            }
            if sel.is_empty() {
                return Err(OntapError::missing_field("volumes.name"));
            }
            Ok(sel)
        })
        .collect()
}

async fn create_cg(State(st): State<ApiState>, f: Fault, RawQuery(raw): RawQuery, JsonBody(json): JsonBody) -> ApiResult {
    let q = query(&raw, Resource::ConsistencyGroup, &[])?;
    let mut body = Body::new(Resource::ConsistencyGroup, json)?;
    let name = body.require_str("name")?;
    let svm = body.take_selector("svm")?;
    let volumes = cg_members(body.take("volumes"))?;
    body.finish_strict()?;
    let location = format!("/api/application/consistency-groups/?name={}", encode(&name));
    let cg_name = name.clone();
    let op: WriteOp = Arc::new(move |s: &mut ClusterState, _| s.create_cg(&cg_name, &svm, &volumes).map(|_| ()));
    write(&st, f, &q, format!("POST /api/application/consistency-groups/{name}"), StatusCode::CREATED, Some(location), op).await
}

async fn modify_cg(State(st): State<ApiState>, f: Fault, Path(uuid): Path<String>, RawQuery(raw): RawQuery, JsonBody(json): JsonBody) -> ApiResult {
    let q = query(&raw, Resource::ConsistencyGroup, &[])?;
    let mut body = Body::new(Resource::ConsistencyGroup, json)?;
    let restore = body.take_selector("restore_to.snapshot")?;
    if restore.is_empty() {
        return match body.keys().next() {
            Some(key) => Err(OntapError::new(ErrorKind::Invalid, 2, format!("Modifying \"{key}\" of a consistency group is not simulated.")).with_target(key.clone())),
            None => Err(OntapError::missing_field("restore_to.snapshot")),
        };
    }
    if let Some(other) = body.keys().next() {
        return Err(OntapError::new(ErrorKind::Invalid, 918251, "Specifying a value is not valid for a snapshot restore operation.").with_target(other.clone()));
    }
    st.sim.read(|s| s.cg(&uuid).map(|_| ()))?;
    let cg = uuid.clone();
    let op: WriteOp = Arc::new(move |s: &mut ClusterState, _| s.restore_cg(&cg, &restore));
    write(&st, f, &q, format!("PATCH /api/application/consistency-groups/{uuid}"), StatusCode::OK, None, op).await
}

async fn delete_cg(State(st): State<ApiState>, f: Fault, Path(uuid): Path<String>, RawQuery(raw): RawQuery, JsonBody(json): JsonBody) -> ApiResult {
    let q = query(&raw, Resource::ConsistencyGroup, &[])?;
    Body::new(Resource::ConsistencyGroup, json)?.finish_strict()?;
    st.sim.read(|s| s.cg(&uuid).map(|_| ()))?;
    let cg = uuid.clone();
    write(&st, f, &q, format!("DELETE /api/application/consistency-groups/{uuid}"), StatusCode::OK, None, Arc::new(move |s: &mut ClusterState, _| s.delete_cg(&cg))).await
}

async fn list_cg_snapshots(State(st): State<ApiState>, Path(uuid): Path<String>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = query(&raw, Resource::ConsistencyGroupSnapshot, &[])?;
    let records = st.sim.read(|s| s.cg(&uuid).map(|cg| cg.snapshots.iter().map(|snap| render::cg_snapshot(s, cg, snap)).collect::<Vec<_>>()))?;
    collection(records, &q, &format!("/api/application/consistency-groups/{uuid}/snapshots"), &["uuid", "name"])
}

async fn get_cg_snapshot(State(st): State<ApiState>, Path((uuid, snapshot)): Path<(String, String)>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = query(&raw, Resource::ConsistencyGroupSnapshot, &[])?;
    let record = st.sim.read(|s| {
        let cg = s.cg(&uuid)?;
        let snap = cg.snapshots.iter().find(|x| x.uuid == snapshot).ok_or_else(|| OntapError::new(ErrorKind::NotFound, 1638600, "The snapshot does not exist.").with_target("uuid"))?;
        Ok::<_, OntapError>(render::cg_snapshot(s, cg, snap))
    })?;
    instance(record, &q, &["uuid", "name"])
}

async fn create_cg_snapshot(State(st): State<ApiState>, f: Fault, Path(uuid): Path<String>, RawQuery(raw): RawQuery, JsonBody(json): JsonBody) -> ApiResult {
    let q = query(&raw, Resource::ConsistencyGroupSnapshot, &[])?;
    let mut body = Body::new(Resource::ConsistencyGroupSnapshot, json)?;
    let name = body.require_str("name")?;
    let comment = body.take_str("comment")?;
    if let Some(cg) = body.take_str("consistency_group.uuid")? {
        if cg != uuid {
            return Err(OntapError::invalid_field("consistency_group.uuid", "The consistency group in the body is not the one in the path."));
        }
    }
    body.finish_strict()?;
    st.sim.read(|s| s.cg(&uuid).map(|_| ()))?;
    let location = format!("/api/application/consistency-groups/{uuid}/snapshots/?name={}", encode(&name));
    let (cg, snap_name) = (uuid.clone(), name.clone());
    let op: WriteOp = Arc::new(move |s: &mut ClusterState, now| s.create_cg_snapshot(&cg, &snap_name, comment.clone(), now).map(|_| ()));
    write(&st, f, &q, format!("POST /api/application/consistency-groups/{uuid}/snapshots/{name}"), StatusCode::CREATED, Some(location), op).await
}

async fn delete_cg_snapshot(State(st): State<ApiState>, f: Fault, Path((uuid, snapshot)): Path<(String, String)>, RawQuery(raw): RawQuery, JsonBody(json): JsonBody) -> ApiResult {
    let q = query(&raw, Resource::ConsistencyGroupSnapshot, &[])?;
    Body::new(Resource::ConsistencyGroupSnapshot, json)?.finish_strict()?;
    st.sim.read(|s| s.cg(&uuid).map(|_| ()))?;
    let (cg, snap) = (uuid.clone(), snapshot.clone());
    let op: WriteOp = Arc::new(move |s: &mut ClusterState, _| s.delete_cg_snapshot(&cg, &snap));
    write(&st, f, &q, format!("DELETE /api/application/consistency-groups/{uuid}/snapshots/{snapshot}"), StatusCode::OK, None, op).await
}
