//! The full ONTAP JSON of each resource: every field the simulator models, with HAL links.
//! `query::project` then cuts it down to what a request asked for.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

use super::body::unflatten_into;
use crate::model::cluster::{Aggregate, ClusterState, ConsistencyGroup, CgSnapshot, Job, VERSION, VERSION_FULL};
use crate::model::volume::{Named, Snapshot, Volume};

/// ONTAP timestamps have whole seconds and an offset, e.g. `2024-05-01T10:00:00+00:00`.
pub fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, false)
}

pub fn link(href: String) -> Value {
    json!({"self": {"href": href}})
}

fn named(n: &Named, href: String) -> Value {
    json!({"name": n.name, "uuid": n.uuid, "_links": link(href)})
}

pub fn svm_ref(n: &Named) -> Value {
    named(n, format!("/api/svm/svms/{}", n.uuid))
}

pub fn volume_ref(n: &Named) -> Value {
    named(n, format!("/api/storage/volumes/{}", n.uuid))
}

pub fn cluster(state: &ClusterState) -> Value {
    json!({
        "name": state.name,
        "uuid": state.uuid,
        "version": {"full": VERSION_FULL, "generation": VERSION.0, "major": VERSION.1, "minor": VERSION.2},
        "_links": link("/api/cluster".into()),
    })
}

pub fn svm(state: &ClusterState, svm: &Named) -> Value {
    json!({
        "uuid": svm.uuid,
        "name": svm.name,
        "state": "running",
        "subtype": "default",
        "language": "c.utf_8",
        "aggregates": state.aggregates.iter().map(|a| json!({"name": a.name, "uuid": a.uuid})).collect::<Vec<_>>(),
        "nfs": {"enabled": true},
        "_links": link(format!("/api/svm/svms/{}", svm.uuid)),
    })
}

pub fn aggregate(state: &ClusterState, aggr: &Aggregate) -> Value {
    let used: u64 = state.volumes.values().filter(|v| v.aggregate.uuid == aggr.uuid).map(|v| v.space().size).sum();
    json!({
        "uuid": aggr.uuid,
        "name": aggr.name,
        "state": "online",
        "node": {"name": format!("{}-01", state.name)},
        "space": {"block_storage": {"size": aggr.size, "used": used.min(aggr.size), "available": aggr.size.saturating_sub(used)}},
        "_links": link(format!("/api/storage/aggregates/{}", aggr.uuid)),
    })
}

pub fn volume(v: &Volume) -> Value {
    let space = v.space();
    let mut out = json!({
        "uuid": v.uuid,
        "name": v.name,
        "type": v.vtype.as_str(),
        "style": "flexvol",
        "state": v.state.as_str(),
        "svm": svm_ref(&v.svm),
        "aggregates": [{"name": v.aggregate.name, "uuid": v.aggregate.uuid}],
        "size": space.size,
        "create_time": time(&v.create_time),
        "language": "c.utf_8",
        "snapshot_policy": {"name": "none"},
        "snapshot_count": v.snapshots.len(),
        "nas": {"security_style": "unix"},
        "space": {
            "size": space.size,
            "available": space.available,
            "used": space.used,
            "afs_total": space.size - space.snapshot_reserve_size,
            "snapshot": {
                "used": space.snapshot_used,
                "reserve_percent": space.snapshot_reserve_percent,
                "reserve_size": space.snapshot_reserve_size,
                "reserve_available": space.snapshot_reserve_size.saturating_sub(space.snapshot_used),
                "space_used_percent": (space.snapshot_used * 100).checked_div(space.snapshot_reserve_size).unwrap_or(0),
            },
        },
        "clone": {"is_flexclone": v.clone.is_some()},
        "_links": link(format!("/api/storage/volumes/{}", v.uuid)),
    });
    let obj = out.as_object_mut().expect("object");
    if let Some(comment) = &v.comment {
        obj.insert("comment".into(), json!(comment));
    }
    if let Some(path) = &v.junction_path {
        obj["nas"]["path"] = json!(path);
    }
    if let Some(parent) = &v.clone {
        obj.insert(
            "clone".into(),
            json!({
                "is_flexclone": true,
                "parent_volume": volume_ref(&parent.volume),
                "parent_snapshot": {"name": parent.snapshot.name, "uuid": parent.snapshot.uuid,
                    "_links": link(format!("/api/storage/volumes/{}/snapshots/{}", parent.volume.uuid, parent.snapshot.uuid))},
                "parent_svm": svm_ref(&v.svm),
                "split_initiated": parent.split_initiated,
            }),
        );
    }
    for (path, value) in &v.extras {
        unflatten_into(obj, path, value.clone());
    }
    out
}

pub fn snapshot(v: &Volume, s: &Snapshot) -> Value {
    let mut out = json!({
        "uuid": s.uuid,
        "name": s.name,
        "volume": volume_ref(&Named { uuid: v.uuid.clone(), name: v.name.clone() }),
        "svm": svm_ref(&v.svm),
        "create_time": time(&s.create_time),
        "size": v.snapshot_size(s),
        "state": "valid",
        "version_uuid": s.version_uuid,
        "_links": link(format!("/api/storage/volumes/{}/snapshots/{}", v.uuid, s.uuid)),
    });
    let obj = out.as_object_mut().expect("object");
    let owners = s.owners();
    if !owners.is_empty() {
        obj.insert("owners".into(), json!(owners));
    }
    if let Some(comment) = &s.comment {
        obj.insert("comment".into(), json!(comment));
    }
    if let Some(label) = &s.snapmirror_label {
        obj.insert("snapmirror_label".into(), json!(label));
    }
    if let Some(expiry) = &s.expiry_time {
        obj.insert("expiry_time".into(), json!(time(expiry)));
    }
    out
}

pub fn consistency_group(state: &ClusterState, cg: &ConsistencyGroup) -> Value {
    let volumes: Vec<Value> = cg
        .volumes
        .iter()
        .map(|member| {
            let mut entry = volume_ref(member);
            if let Ok(v) = state.volume(&member.uuid) {
                entry["space"] = json!({"size": v.space().size, "used": v.space().used, "available": v.space().available});
            }
            entry
        })
        .collect();
    let (size, used, available) = cg.volumes.iter().filter_map(|m| state.volume(&m.uuid).ok()).fold((0u64, 0u64, 0u64), |acc, v| {
        let s = v.space();
        (acc.0 + s.size, acc.1 + s.used, acc.2 + s.available)
    });
    json!({
        "uuid": cg.uuid,
        "name": cg.name,
        "svm": svm_ref(&cg.svm),
        "volumes": volumes,
        "space": {"size": size, "used": used, "available": available},
        "replicated": false,
        "_links": link(format!("/api/application/consistency-groups/{}", cg.uuid)),
    })
}

pub fn cg_snapshot(state: &ClusterState, cg: &ConsistencyGroup, s: &CgSnapshot) -> Value {
    let present = s.members.iter().filter(|(vol, snap)| state.volume(vol).ok().is_some_and(|v| v.snapshot_by_uuid(snap).is_some())).count();
    let mut out = json!({
        "uuid": s.uuid,
        "name": s.name,
        "consistency_group": {"name": cg.name, "uuid": cg.uuid, "_links": link(format!("/api/application/consistency-groups/{}", cg.uuid))},
        "svm": svm_ref(&cg.svm),
        "create_time": time(&s.create_time),
        "consistency_type": "crash",
        "is_partial": present != s.members.len(),
        "_links": link(format!("/api/application/consistency-groups/{}/snapshots/{}", cg.uuid, s.uuid)),
    });
    if let Some(comment) = &s.comment {
        out["comment"] = json!(comment);
    }
    out
}

pub fn job(j: &Job) -> Value {
    let mut out = Map::new();
    out.insert("uuid".into(), json!(j.uuid));
    out.insert("description".into(), json!(j.description));
    out.insert("state".into(), json!(j.state.as_str()));
    out.insert("message".into(), json!(j.message));
    out.insert("code".into(), json!(j.code));
    out.insert("start_time".into(), json!(time(&j.start_time)));
    if let Some(end) = &j.end_time {
        out.insert("end_time".into(), json!(time(end)));
    }
    out.insert("_links".into(), link(format!("/api/cluster/jobs/{}", j.uuid)));
    Value::Object(out)
}

/// The `job` object a write answers with.
pub fn job_link(uuid: &str) -> Value {
    json!({"uuid": uuid, "_links": link(format!("/api/cluster/jobs/{uuid}"))})
}
