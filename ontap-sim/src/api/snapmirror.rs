//! `/api/snapmirror/relationships`, their `/transfers`, and `/api/snapmirror/policies`.
//!
//! Relationships are created and listed on the destination cluster. State changes go by
//! PATCH `state` and only trigger the transition, as on ONTAP: a client polls `state`,
//! `healthy` and the transfer. Transfers run in the background (`replication`).

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::body::Body;
use super::fields::Resource;
use super::handlers::{collection, instance, query, write, write_async, ApiResult, Fault};
use super::render::{link, time};
use super::{encode, ApiState, JsonBody, WriteOp};
use crate::error::{ErrorKind, OntapError, SimResult};
use crate::model::cluster::{ClusterState, Selector, VolumeCreate};
use crate::model::snapmirror::{Endpoint, Policy, PolicyType, RelState, Relationship, Transfer, TransferType};
use crate::model::volume::{Named, VolumeType};
use crate::replication;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/snapmirror/relationships", get(list_relationships).post(create_relationship))
        .route("/snapmirror/relationships/{uuid}", get(get_relationship).patch(modify_relationship).delete(delete_relationship))
        .route("/snapmirror/relationships/{uuid}/transfers", get(list_transfers).post(create_transfer))
        .route("/snapmirror/relationships/{uuid}/transfers/{transfer}", get(get_transfer).patch(modify_transfer))
        .route("/snapmirror/policies", get(list_policies))
        .route("/snapmirror/policies/{uuid}", get(get_policy))
}

/// ISO 8601 duration as ONTAP writes it, e.g. `PT8H35M42S`, `P1DT2H0M0S`.
pub fn iso_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    let (d, h, m, sec) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    if d > 0 {
        format!("P{d}DT{h}H{m}M{sec}S")
    } else {
        format!("PT{h}H{m}M{sec}S")
    }
}

fn endpoint(e: &Endpoint, with_cluster: bool) -> Value {
    let mut out = json!({"path": e.path(), "svm": {"name": e.svm.name, "uuid": e.svm.uuid, "_links": link(format!("/api/svm/svms/{}", e.svm.uuid))}});
    if with_cluster {
        out["cluster"] = json!({"name": e.cluster.name, "uuid": e.cluster.uuid, "_links": link(format!("/api/cluster/peers/{}", e.cluster.uuid))});
    }
    out
}

fn transfer_summary(rel: &Relationship, t: &Transfer, now: DateTime<Utc>) -> Value {
    let end = t.end_time.unwrap_or(now);
    let mut out = json!({
        "uuid": t.uuid,
        "state": t.state.as_str(),
        "type": t.ttype.as_str(),
        "bytes_transferred": t.bytes_transferred,
        "last_updated_time": time(&t.last_updated_time),
        "total_duration": iso_duration((end - t.start_time).num_seconds()),
        "_links": link(format!("/api/snapmirror/relationships/{}/transfers/{}", rel.uuid, t.uuid)),
    });
    if let Some(e) = &t.end_time {
        out["end_time"] = json!(time(e));
    }
    out
}

pub fn relationship(rel: &Relationship, now: DateTime<Utc>) -> Value {
    let mut out = json!({
        "uuid": rel.uuid,
        "source": endpoint(&rel.source, true),
        "destination": endpoint(&rel.destination, false),
        "policy": {"name": rel.policy.name, "uuid": rel.policy.uuid, "type": rel.policy_type.as_str(), "_links": link(format!("/api/snapmirror/policies/{}", rel.policy.uuid))},
        "state": rel.state.as_str(),
        "healthy": rel.healthy(),
        "group_type": "none",
        "backoff_level": "high",
        "restore": false,
        "throttle": rel.throttle,
        "total_transfer_bytes": rel.total_transfer_bytes,
        "total_transfer_duration": iso_duration((rel.total_transfer_duration_ms / 1000) as i64),
        "_links": link(format!("/api/snapmirror/relationships/{}", rel.uuid)),
    });
    if let Some((code, message)) = &rel.unhealthy_reason {
        out["unhealthy_reason"] = json!([{"code": code.to_string(), "message": message, "arguments": []}]);
    }
    if let Some((name, created)) = &rel.exported_snapshot {
        out["exported_snapshot"] = json!(name);
        out["lag_time"] = json!(iso_duration((now - *created).num_seconds()));
    }
    if let Some(t) = rel.last_transfer_type {
        out["last_transfer_type"] = json!(t.as_str());
    }
    if let Some(t) = rel.last_transfer() {
        out["transfer"] = transfer_summary(rel, t, now);
    }
    if let Some(schedule) = &rel.transfer_schedule {
        out["transfer_schedule"] = json!({"name": schedule});
    }
    out
}

pub fn transfer(rel: &Relationship, t: &Transfer, now: DateTime<Utc>) -> Value {
    let end = t.end_time.unwrap_or(now);
    let mut out = json!({
        "uuid": t.uuid,
        "state": t.state.as_str(),
        "bytes_transferred": t.bytes_transferred,
        "relationship": {"uuid": rel.uuid, "destination": {"path": rel.destination.path()}, "restore": false,
            "_links": link(format!("/api/snapmirror/relationships/{}", rel.uuid))},
        "last_updated_time": time(&t.last_updated_time),
        "total_duration": iso_duration((end - t.start_time).num_seconds()),
        "checkpoint_size": 0,
        "throttle": rel.throttle,
        "storage_efficiency_enabled": true,
        "network_compression_ratio": "1",
        "_links": link(format!("/api/snapmirror/relationships/{}/transfers/{}", rel.uuid, t.uuid)),
    });
    if let Some(name) = &t.snapshot {
        out["snapshot"] = json!(name);
    }
    if let Some(name) = &t.source_snapshot {
        out["source_snapshot"] = json!(name);
    }
    if let Some(e) = &t.end_time {
        out["end_time"] = json!(time(e));
    }
    if let Some((code, message)) = &t.error {
        out["error_info"] = json!({"code": code, "message": message});
    }
    out
}

pub fn policy(p: &Policy) -> Value {
    let mut out = json!({
        "uuid": p.uuid,
        "name": p.name,
        "type": p.ptype.as_str(),
        "scope": "cluster",
        "comment": p.comment,
        "copy_all_source_snapshots": p.copy_all_source_snapshots,
        "copy_latest_source_snapshot": false,
        "create_snapshot_on_source": p.create_snapshot_on_source,
        "network_compression_enabled": false,
        "throttle": 0,
        // ONTAP 9.19's schema types `count` as a string (the netapp-ontap client rejects a number).
        "retention": p.rules.iter().map(|(label, count)| json!({"label": label, "count": count.to_string(), "preserve": false, "warn": 0})).collect::<Vec<_>>(),
        "_links": link(format!("/api/snapmirror/policies/{}", p.uuid)),
    });
    if let Some(t) = p.sync_type {
        out["sync_type"] = json!(t);
    }
    if p.ptype == PolicyType::Async {
        out["identity_preservation"] = json!("exclude_network_and_protocol_config");
    }
    if let Some(s) = p.transfer_schedule {
        out["transfer_schedule"] = json!({"name": s});
    }
    out
}

async fn list_policies(State(st): State<ApiState>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = query(&raw, Resource::SnapmirrorPolicy, &[])?;
    let records = st.sim.read(|s| s.policies().iter().map(policy).collect());
    collection(records, &q, "/api/snapmirror/policies", &["uuid", "name"])
}

async fn get_policy(State(st): State<ApiState>, Path(uuid): Path<String>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = query(&raw, Resource::SnapmirrorPolicy, &[])?;
    let record = st.sim.read(|s| s.find_policy(&Selector { name: None, uuid: Some(uuid.clone()) }).map(|p| policy(&p)))?;
    instance(record, &q, &["uuid", "name"])
}

async fn list_relationships(State(st): State<ApiState>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = query(&raw, Resource::SnapmirrorRelationship, &[])?;
    let now = st.sim.now();
    let records = st.sim.read(|s| {
        let mut rels: Vec<&Relationship> = s.relationships.values().collect();
        rels.sort_by_key(|r| r.seq);
        rels.into_iter().map(|r| relationship(r, now)).collect()
    });
    collection(records, &q, "/api/snapmirror/relationships", &["uuid"])
}

async fn get_relationship(State(st): State<ApiState>, Path(uuid): Path<String>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = query(&raw, Resource::SnapmirrorRelationship, &[])?;
    let now = st.sim.now();
    let record = st.sim.read(|s| s.relationship(&uuid).map(|r| relationship(r, now)))?;
    instance(record, &q, &["uuid"])
}

/// `svm:volume`.
fn split_path(path: &str, field: &str) -> SimResult<(String, String)> {
    match path.split_once(':') {
        Some((svm, volume)) if !svm.is_empty() && !volume.is_empty() => Ok((svm.to_string(), volume.to_string())),
        Some((_, "")) => Err(OntapError::new(ErrorKind::Invalid, 13303841, "This operation is not supported for SnapMirror relationships between these endpoints: SVM-DR (\"svm:\") is not simulated.").with_target(field)),
        _ => Err(OntapError::new(ErrorKind::Invalid, 13303852, format!("{field} provided does not contain \":\".")).with_target(field)),
    }
}

fn policy_selector(body: &mut Body) -> SimResult<Selector> {
    // ONTAP's own examples also send `"policy": "Asynchronous"`.
    if let Some(Value::String(name)) = body.take("policy") {
        return Ok(Selector { name: Some(name), uuid: None });
    }
    body.take_selector("policy")
}

async fn create_relationship(State(st): State<ApiState>, f: Fault, RawQuery(raw): RawQuery, JsonBody(json): JsonBody) -> ApiResult {
    let q = query(&raw, Resource::SnapmirrorRelationship, &[])?;
    let mut body = Body::new(Resource::SnapmirrorRelationship, json)?;
    let source_path = body.require_str("source.path")?;
    let dest_path = body.require_str("destination.path")?;
    let source_cluster = body.take_selector("source.cluster")?;
    let _ = body.take_selector("destination.cluster")?;
    let policy_sel = policy_selector(&mut body)?;
    let create_destination = body.take_bool("create_destination.enabled")?.unwrap_or(false);
    let state = body.take_str("state")?.map(|s| RelState::parse(&s)).transpose()?;
    let throttle = body.take_u64("throttle")?.unwrap_or(0);
    let schedule = body.take_str("transfer_schedule.name")?;
    if body.take_bool("restore")? == Some(true) {
        return Err(OntapError::new(ErrorKind::Invalid, 13303841, "Restore relationships are not simulated.").with_target("restore"));
    }
    body.finish(&["uuid", "state", "healthy", "unhealthy_reason", "lag_time", "exported_snapshot", "transfer", "total_transfer_bytes", "total_transfer_duration", "last_transfer_type"])?;
    let (src_svm, src_vol) = split_path(&source_path, "source.path")?;
    let (dst_svm, dst_vol) = split_path(&dest_path, "destination.path")?;
    if let Some(s) = state {
        if !create_destination {
            return Err(OntapError::new(ErrorKind::Invalid, 13303873, "Specifying a state when creating a relationship is only supported when creating a destination endpoint.").with_target("state"));
        }
        if !matches!(s, RelState::Snapmirrored | RelState::InSync) {
            return Err(OntapError::new(ErrorKind::Invalid, 13303874, "Specified state is not supported when creating this relationship.").with_target("state"));
        }
    }
    if let Some(s) = &schedule {
        if replication::schedule_interval(s).is_none() {
            return Err(OntapError::new(ErrorKind::NotFound, 6619699, format!("Schedule \"{s}\" not found.")).with_target("transfer_schedule.name"));
        }
    }
    // Everything this cluster alone can check, checked now.
    let (dest_svm, policy, peer, svm_peer) = st.sim.read(|s| {
        let dest_svm = s.find_svm(&Selector { name: Some(dst_svm.clone()), uuid: None }).map_err(|e| e.with_target("destination.path"))?;
        let policy = match policy_sel.is_empty() {
            true => s.find_policy(&Selector { name: Some("MirrorAllSnapshots".into()), uuid: None })?,
            false => s.find_policy(&policy_sel)?,
        };
        let svm_peer = s.peered_svm(&dst_svm, &src_svm).cloned().ok_or_else(|| {
            OntapError::new(ErrorKind::Refused, 13303925, format!("SnapMirror validation has failed: SVM \"{dst_svm}\" is not peered with SVM \"{src_svm}\". Create and accept an SVM peer relationship first.")).with_target("source.path")
        })?;
        if source_cluster.name.as_ref().is_some_and(|n| n != &svm_peer.peer_cluster.name) {
            return Err(OntapError::new(ErrorKind::Invalid, 13303878, "The specified fields do not match: source.cluster is not the cluster of the source SVM.").with_target("source.cluster"));
        }
        let peer = s.available_peer(&Selector { name: None, uuid: Some(svm_peer.peer_cluster.uuid.clone()) })?;
        if let Some(v) = s.volumes.values().find(|v| v.svm.uuid == dest_svm.uuid && v.name == dst_vol) {
            if s.relationship_of_destination(&v.uuid).is_some() {
                return Err(OntapError::new(ErrorKind::Duplicate, 6619637, "Relationship with specified destination volume already exists.").with_target("destination.path"));
            }
            if create_destination {
                return Err(OntapError::new(ErrorKind::Duplicate, 917526, "The volume name specified is a duplicate.").with_target("destination.path"));
            }
            if v.vtype != VolumeType::Dp {
                return Err(OntapError::new(ErrorKind::Refused, 6619546, "Destination must be a dp volume.").with_target("destination.path"));
            }
        } else if !create_destination {
            return Err(OntapError::new(ErrorKind::NotFound, 4, format!("entry doesn't exist: volume \"{dst_svm}:{dst_vol}\". Create it with type dp, or set create_destination.enabled.")).with_target("destination.path"));
        }
        Ok::<_, OntapError>((dest_svm, policy, peer, svm_peer))
    })?;
    let location = format!("/api/snapmirror/relationships/?destination.path={}", encode(&dest_path));
    let sim = st.sim.clone();
    let op: super::AsyncOp = Box::pin(async move {
        // The source cluster checks its side: the volume exists, online, read-write.
        let remote = replication::remote_volume(&sim, &peer, &svm_peer.peer_svm.name, &src_vol).await?;
        if remote.vtype != "rw" && state.is_some() {
            return Err(OntapError::new(ErrorKind::Refused, 13303925, format!("SnapMirror validation has failed: source volume \"{source_path}\" is not read-write.")));
        }
        let now = sim.now();
        let rel_uuid = sim.transact(|s| {
            let volume_uuid = match s.volumes.values().find(|v| v.svm.uuid == dest_svm.uuid && v.name == dst_vol) {
                Some(v) => v.uuid.clone(),
                None => {
                    let aggregate = s.aggregates.iter().next().map(|a| Selector { name: Some(a.name.clone()), uuid: None }).into_iter().collect();
                    let req = VolumeCreate {
                        name: dst_vol.clone(),
                        svm: Selector { name: Some(dest_svm.name.clone()), uuid: None },
                        aggregates: aggregate,
                        size: Some(remote.size),
                        vtype: Some(VolumeType::Dp),
                        ..VolumeCreate::default()
                    };
                    s.create_volume(req, now)?
                }
            };
            if s.relationship_of_destination(&volume_uuid).is_some() {
                return Err(OntapError::new(ErrorKind::Duplicate, 6619637, "Relationship with specified destination volume already exists."));
            }
            let uuid = s.new_uuid();
            let seq = s.next_seq();
            let local = Named { name: s.name.clone(), uuid: s.uuid.clone() };
            s.relationships.insert(
                uuid.clone(),
                Relationship {
                    uuid: uuid.clone(),
                    source: Endpoint {
                        svm: Named { name: svm_peer.peer_svm.name.clone(), uuid: remote.svm_uuid.clone() },
                        volume: Named { name: remote.name.clone(), uuid: remote.uuid.clone() },
                        cluster: svm_peer.peer_cluster.clone(),
                    },
                    destination: Endpoint { svm: dest_svm.clone(), volume: Named { name: dst_vol.clone(), uuid: volume_uuid }, cluster: local },
                    policy: Named { name: policy.name.to_string(), uuid: policy.uuid.clone() },
                    policy_type: policy.ptype,
                    state: RelState::Uninitialized,
                    unhealthy_reason: None,
                    exported_snapshot: None,
                    last_transfer_type: None,
                    transfers: imbl::Vector::new(),
                    total_transfer_bytes: 0,
                    total_transfer_duration_ms: 0,
                    throttle,
                    transfer_schedule: schedule.clone(),
                    create_time: now,
                    seq,
                },
            );
            Ok(uuid)
        })?;
        if state.is_some() {
            replication::start_transfer(&sim, &rel_uuid, TransferType::Initialize, None)?;
        }
        Ok(())
    });
    write_async(&st, f, &q, format!("POST /api/snapmirror/relationships/{dest_path}"), StatusCode::CREATED, Some(location), op).await
}

const PATCH_PARAMS: &[&str] = &["force", "failback", "failover", "force_failover"];

async fn modify_relationship(State(st): State<ApiState>, f: Fault, Path(uuid): Path<String>, RawQuery(raw): RawQuery, JsonBody(json): JsonBody) -> ApiResult {
    let q = query(&raw, Resource::SnapmirrorRelationship, PATCH_PARAMS)?;
    if let Some((name, _)) = q.operation.iter().find(|(_, v)| v == "true") {
        return Err(OntapError::new(ErrorKind::Invalid, 13304093, format!("The property \"{name}\" is not supported for the specified relationships (volume relationships).")).with_target(name.clone()));
    }
    let mut body = Body::new(Resource::SnapmirrorRelationship, json)?;
    let state = body.take_str("state")?.map(|s| RelState::parse(&s)).transpose()?;
    let source_path = body.take_str("source.path")?;
    let dest_path = body.take_str("destination.path")?;
    let policy_sel = policy_selector(&mut body)?;
    let throttle = body.take_u64("throttle")?;
    let schedule = if body.contains("transfer_schedule") { Some(body.take_str("transfer_schedule.name")?) } else { None };
    let _ = body.take("transfer_schedule.uuid");
    let restore_to = body.take_str("restore_to_snapshot")?;
    let preserve = body.take_bool("preserve")?;
    let _ = body.take_bool("quick_resync")?;
    body.finish_strict()?;
    let rel = st.sim.read(|s| s.relationship(&uuid).cloned())?;
    if let Some(Some(s)) = &schedule {
        if replication::schedule_interval(s).is_none() {
            return Err(OntapError::new(ErrorKind::NotFound, 6619699, format!("Schedule \"{s}\" not found.")).with_target("transfer_schedule.name"));
        }
    }
    if (restore_to.is_some()) && state != Some(RelState::BrokenOff) {
        return Err(OntapError::new(ErrorKind::Invalid, 13303835, "Given flag is valid only when PATCH state is broken_off.").with_target("restore_to_snapshot"));
    }
    if preserve.is_some() && state != Some(RelState::Snapmirrored) {
        return Err(OntapError::new(ErrorKind::Invalid, 13303836, "Given flag is valid only when PATCH state is snapmirrored or in_sync.").with_target("preserve"));
    }
    let description = format!("PATCH /api/snapmirror/relationships/{uuid}");
    // Reverse resync: the paths swapped, with state snapmirrored.
    if source_path.is_some() || dest_path.is_some() {
        let swapped = source_path.as_deref() == Some(rel.destination.path().as_str()) && dest_path.as_deref() == Some(rel.source.path().as_str());
        if !swapped {
            return Err(OntapError::new(ErrorKind::Invalid, 13304120, "Values specified for the source.path and destination.path properties do not match the relationship's source.path or destination.path properties.").with_target("source.path"));
        }
        if !matches!(state, Some(RelState::Snapmirrored) | Some(RelState::InSync)) {
            return Err(OntapError::new(ErrorKind::Invalid, 13303818, "Invalid state transition requested: reversing a relationship needs state \"snapmirrored\".").with_target("state"));
        }
        if throttle.is_some() || schedule.is_some() || !policy_sel.is_empty() {
            return Err(OntapError::new(ErrorKind::Invalid, 13304081, "Modifying a property during the operation is not supported: transfer_schedule, throttle and policy cannot change while the direction is reversed."));
        }
        let sim = st.sim.clone();
        let op: super::AsyncOp = Box::pin(async move { reverse(&sim, &uuid).await });
        return write_async(&st, f, &q, description, StatusCode::OK, None, op).await;
    }
    let policy = if policy_sel.is_empty() { None } else { Some(st.sim.read(|s| s.find_policy(&policy_sel))?) };
    if let Some(p) = &policy {
        if p.ptype != rel.policy_type {
            return Err(OntapError::new(ErrorKind::Refused, 13303866, "Cannot use the specified policy to modify the policy of the relationship: the policy type differs.").with_target("policy"));
        }
    }
    // Settings first (ONTAP: "first the schedule is modified ... then the operation").
    let settings = {
        let (rel_id, policy, schedule) = (uuid.clone(), policy.clone(), schedule.clone());
        move |s: &mut ClusterState| -> SimResult<()> {
            let r = s.relationship_mut(&rel_id)?;
            if let Some(p) = &policy {
                r.policy = Named { name: p.name.to_string(), uuid: p.uuid.clone() };
            }
            if let Some(t) = throttle {
                r.throttle = t;
            }
            if let Some(sched) = &schedule {
                r.transfer_schedule = sched.clone();
            }
            Ok(())
        }
    };
    let target = match state {
        None => {
            return write(&st, f, &q, description, StatusCode::OK, None, std::sync::Arc::new(move |s: &mut ClusterState, _| settings(s))).await;
        }
        Some(t) => t,
    };
    let mirrored_target = if rel.policy_type == PolicyType::Sync { RelState::InSync } else { RelState::Snapmirrored };
    match (rel.state, target) {
        (_, RelState::BrokenOff) => {
            let op: WriteOp = std::sync::Arc::new(move |s: &mut ClusterState, now| {
                settings(s)?;
                s.break_relationship(&uuid, restore_to.as_deref(), now)
            });
            write(&st, f, &q, description, StatusCode::OK, None, op).await
        }
        (RelState::Uninitialized | RelState::Snapmirrored | RelState::InSync | RelState::OutOfSync, RelState::Paused) => {
            let op: WriteOp = std::sync::Arc::new(move |s: &mut ClusterState, _| {
                settings(s)?;
                s.relationship_mut(&uuid)?.state = RelState::Paused;
                Ok(())
            });
            write(&st, f, &q, description, StatusCode::OK, None, op).await
        }
        (RelState::Paused, RelState::Paused) => write(&st, f, &q, description, StatusCode::OK, None, std::sync::Arc::new(move |s: &mut ClusterState, _| settings(s))).await,
        (from, RelState::Snapmirrored | RelState::InSync) if target != mirrored_target => Err(OntapError::new(
            ErrorKind::Invalid,
            13303831,
            format!("Invalid state for {} SnapMirror relationship: use \"{}\", not \"{}\" (from \"{}\").", rel.policy_type.as_str(), mirrored_target.as_str(), target.as_str(), from.as_str()),
        )
        .with_target("state")),
        (RelState::Uninitialized, _) => {
            // Initialize: the state turns snapmirrored when the baseline transfer succeeds.
            let sim = st.sim.clone();
            let op: super::AsyncOp = Box::pin(async move {
                sim.transact(|s| settings(s))?;
                if sim.read(|s| s.relationship(&uuid).map(|r| r.current_transfer().is_none()))? {
                    replication::start_transfer(&sim, &uuid, TransferType::Initialize, None)?;
                }
                Ok(())
            });
            write_async(&st, f, &q, description, StatusCode::OK, None, op).await
        }
        (RelState::Paused, _) => {
            // Resume: back to mirrored (initialized before the pause) or uninitialized.
            let op: WriteOp = std::sync::Arc::new(move |s: &mut ClusterState, _| {
                settings(s)?;
                let initialized = s.relationship(&uuid)?.exported_snapshot.is_some();
                s.relationship_mut(&uuid)?.state = if initialized { mirrored_target } else { RelState::Uninitialized };
                Ok(())
            });
            write(&st, f, &q, description, StatusCode::OK, None, op).await
        }
        (RelState::BrokenOff, _) => {
            // Resync: needs the source (to find the newest common snapshot).
            let sim = st.sim.clone();
            let op: super::AsyncOp = Box::pin(async move {
                sim.transact(|s| settings(s))?;
                replication::resync(&sim, &uuid).await
            });
            write_async(&st, f, &q, description, StatusCode::OK, None, op).await
        }
        (RelState::Snapmirrored | RelState::InSync | RelState::OutOfSync, _) => {
            write(&st, f, &q, description, StatusCode::OK, None, std::sync::Arc::new(move |s: &mut ClusterState, _| settings(s))).await
        }
    }
}

/// Reverse resync from the current destination: its volume becomes the source (read-write),
/// and the relationship moves to the old source's cluster, whose volume reverts to the newest
/// common snapshot and becomes DP. The old source must answer.
async fn reverse(sim: &crate::sim::Simulator, uuid: &str) -> SimResult<()> {
    let (rel, peer) = sim.read(|s| {
        let rel = s.relationship(uuid)?.clone();
        let peer = s.available_peer(&Selector { name: None, uuid: Some(rel.source.cluster.uuid.clone()) })?;
        Ok::<_, OntapError>((rel, peer))
    })?;
    if rel.state == RelState::Uninitialized || rel.current_transfer().is_some() {
        return Err(OntapError::new(ErrorKind::Refused, 13303818, "Invalid state transition requested: the relationship is not initialized or a transfer is running."));
    }
    let request = json!({
        "uuid": rel.uuid,
        "source_svm": rel.destination.svm,
        "source_volume": rel.destination.volume,
        "destination_svm": rel.source.svm.name,
        "destination_volume": rel.source.volume.name,
        "policy": rel.policy.name,
        "throttle": rel.throttle,
        "transfer_schedule": rel.transfer_schedule,
    });
    // This volume serves data now: read-write before the other side pulls from it.
    let now = sim.now();
    sim.transact(|s| {
        if s.relationship(uuid)?.state != RelState::BrokenOff {
            s.break_relationship(uuid, None, now)?;
        }
        Ok(())
    })?;
    replication::call(sim, &peer, reqwest::Method::POST, "/sim/v1/intercluster/relationships/reverse", Some(&request), replication::CALL_TIMEOUT).await?;
    sim.transact(|s| {
        s.relationships.remove(uuid);
        Ok(())
    })
}

const DELETE_PARAMS: &[&str] = &["destination_only", "source_only", "source_info_only", "delete_lun_maps_in_destination", "unmap_namespace"];

async fn delete_relationship(State(st): State<ApiState>, f: Fault, Path(uuid): Path<String>, RawQuery(raw): RawQuery, JsonBody(json): JsonBody) -> ApiResult {
    let q = query(&raw, Resource::SnapmirrorRelationship, DELETE_PARAMS)?;
    Body::new(Resource::SnapmirrorRelationship, json)?.finish_strict()?;
    st.sim.read(|s| s.relationship(&uuid).map(|_| ()))?;
    let op: WriteOp = std::sync::Arc::new(move |s: &mut ClusterState, now| {
        s.abort_transfer(&uuid, now);
        s.relationships.remove(&uuid);
        Ok(())
    });
    write(&st, f, &q, "DELETE /api/snapmirror/relationships".into(), StatusCode::OK, None, op).await
}

async fn list_transfers(State(st): State<ApiState>, Path(uuid): Path<String>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = query(&raw, Resource::SnapmirrorTransfer, &[])?;
    let now = st.sim.now();
    let records = st.sim.read(|s| s.relationship(&uuid).map(|r| r.transfers.iter().map(|t| transfer(r, t, now)).collect::<Vec<_>>()))?;
    collection(records, &q, &format!("/api/snapmirror/relationships/{uuid}/transfers"), &["uuid"])
}

fn transfer_not_found() -> OntapError {
    OntapError::new(ErrorKind::NotFound, 4, "entry doesn't exist: SnapMirror transfer").with_target("uuid")
}

async fn get_transfer(State(st): State<ApiState>, Path((uuid, tuuid)): Path<(String, String)>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = query(&raw, Resource::SnapmirrorTransfer, &[])?;
    let now = st.sim.now();
    let record = st.sim.read(|s| {
        let rel = s.relationship(&uuid)?;
        rel.transfer(&tuuid).map(|t| transfer(rel, t, now)).ok_or_else(transfer_not_found)
    })?;
    instance(record, &q, &["uuid"])
}

/// Start a transfer: initialize an uninitialized relationship, update a mirrored one
/// (up to `source_snapshot` if given). Answers 201 with the transfer's Location, no job.
async fn create_transfer(State(st): State<ApiState>, Path(uuid): Path<String>, RawQuery(raw): RawQuery, JsonBody(json): JsonBody) -> ApiResult {
    query(&raw, Resource::SnapmirrorTransfer, &[])?;
    let mut body = Body::new(Resource::SnapmirrorTransfer, json)?;
    let source_snapshot = body.take_str("source_snapshot")?;
    let _ = body.take_u64("throttle")?;
    let _ = body.take_bool("storage_efficiency_enabled")?;
    let _ = body.take_str("relationship.uuid")?;
    body.finish_strict()?;
    let rel = st.sim.read(|s| s.relationship(&uuid).cloned())?;
    let ttype = match rel.state {
        RelState::Uninitialized => TransferType::Initialize,
        RelState::Snapmirrored | RelState::InSync | RelState::OutOfSync => TransferType::Update,
        RelState::Paused => return Err(OntapError::new(ErrorKind::Refused, 13303844, "Update operation failed: the relationship is quiesced (paused). Resume it first.")),
        RelState::BrokenOff => return Err(OntapError::new(ErrorKind::Refused, 13303844, "Update operation failed: the relationship is broken off. Resync it first.")),
    };
    if ttype == TransferType::Initialize && source_snapshot.is_some() {
        // ONTAP allows a named snapshot for initialize too; it is the baseline's target.
    }
    let tuuid = replication::start_transfer(&st.sim, &uuid, ttype, source_snapshot)?;
    let now = st.sim.now();
    let record = st.sim.read(|s| s.relationship(&uuid).map(|r| r.transfer(&tuuid).map(|t| transfer(r, t, now))))?.ok_or_else(transfer_not_found)?;
    let mut response = (StatusCode::CREATED, Json(json!({"num_records": 1, "records": [record]}))).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/api/snapmirror/relationships/{uuid}/transfers/{tuuid}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// `{"state": "aborted"}` aborts a running transfer; the destination keeps what it had.
async fn modify_transfer(State(st): State<ApiState>, Path((uuid, tuuid)): Path<(String, String)>, RawQuery(raw): RawQuery, JsonBody(json): JsonBody) -> ApiResult {
    query(&raw, Resource::SnapmirrorTransfer, &[])?;
    let mut body = Body::new(Resource::SnapmirrorTransfer, json)?;
    let state = body.take_str("state")?;
    body.finish_strict()?;
    if !matches!(state.as_deref(), Some("aborted") | Some("hard_aborted")) {
        return Err(OntapError::new(ErrorKind::Invalid, 13303849, "SnapMirror transfer state is invalid: only \"aborted\" or \"hard_aborted\" can be set.").with_target("state"));
    }
    let now = st.sim.now();
    st.sim.transact(|s| {
        let rel = s.relationship(&uuid)?;
        let t = rel.transfer(&tuuid).ok_or_else(transfer_not_found)?;
        if rel.policy_type == PolicyType::Sync && rel.state == RelState::InSync {
            return Err(OntapError::new(ErrorKind::Refused, 13303848, "Abort of sync SnapMirror is not allowed."));
        }
        if t.state.is_active() {
            s.abort_transfer(&uuid, now);
        }
        Ok(())
    })?;
    Ok(StatusCode::OK.into_response())
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_as_ontap_writes_them() {
        assert_eq!(super::iso_duration(0), "PT0H0M0S");
        assert_eq!(super::iso_duration(8 * 3600 + 35 * 60 + 42), "PT8H35M42S");
        assert_eq!(super::iso_duration(86_400 + 7200), "P1DT2H0M0S");
    }
}
