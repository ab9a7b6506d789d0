//! `/api/cluster/peers` and `/api/svm/peers`.

use std::net::SocketAddr;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use rand::distributions::{Alphanumeric, DistString};
use serde::Deserialize;
use serde_json::{json, Value};

use super::body::Body;
use super::fields::Resource;
use super::handlers::{collection, instance, query, write_async, ApiResult, Fault};
use super::render::{link, svm_ref, time};
use super::{encode, ApiState, JsonBody};
use crate::error::{ErrorKind, OntapError, SimResult};
use crate::model::cluster::{ClusterState, Selector, VERSION, VERSION_FULL};
use crate::model::peering::{validate_passphrase, ClusterPeer, PeerStatus, SvmPeer, SvmPeerState, PASSPHRASE_EXPIRY};
use crate::model::volume::Named;
use crate::replication;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/cluster/peers", get(list_cluster_peers).post(create_cluster_peer))
        .route("/cluster/peers/{uuid}", get(get_cluster_peer).delete(delete_cluster_peer))
        .route("/svm/peers", get(list_svm_peers).post(create_svm_peer))
        .route("/svm/peers/{uuid}", get(get_svm_peer).patch(modify_svm_peer).delete(delete_svm_peer))
}

pub fn cluster_peer(p: &ClusterPeer) -> Value {
    let mut out = json!({
        "uuid": p.uuid,
        "name": p.name,
        "remote": {"name": p.name, "ip_addresses": p.addresses},
        "status": {"state": p.status.as_str(), "update_time": time(&p.update_time)},
        "authentication": {
            "state": if p.status == PeerStatus::Pending { "pending" } else { "ok" },
            "in_use": "ok",
            "expiry_time": time(&p.expiry_time),
        },
        "encryption": {"state": "none", "proposed": "none"},
        "ipspace": {"name": "Default"},
        "peer_applications": ["snapmirror", "flexcache"],
        "version": {"full": VERSION_FULL, "generation": VERSION.0, "major": VERSION.1, "minor": VERSION.2},
        "_links": link(format!("/api/cluster/peers/{}", p.uuid)),
    });
    if let Some(address) = p.addresses.first() {
        out["ip_address"] = json!(address);
    }
    out
}

async fn list_cluster_peers(State(st): State<ApiState>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = query(&raw, Resource::ClusterPeer, &[])?;
    let records = st.sim.read(|s| {
        let mut peers: Vec<&ClusterPeer> = s.cluster_peers.values().collect();
        peers.sort_by_key(|p| p.seq);
        peers.into_iter().map(cluster_peer).collect()
    });
    collection(records, &q, "/api/cluster/peers", &["uuid", "name"])
}

async fn get_cluster_peer(State(st): State<ApiState>, Path(uuid): Path<String>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = query(&raw, Resource::ClusterPeer, &[])?;
    let record = st.sim.read(|s| s.cluster_peer(&uuid).map(cluster_peer))?;
    instance(record, &q, &["uuid", "name"])
}

/// `IP`, `IP:PORT` (a simulator extension, so simulators can share 127.0.0.1) or a host name
/// with a port. ONTAP's intercluster port is 11104; the simulator's peers speak HTTP on its
/// REST port, so a bare IP means port 443 would be wrong: a port is required in practice.
fn parse_address(address: &str) -> SimResult<String> {
    let invalid = || OntapError::new(ErrorKind::Invalid, 4653368, format!("Invalid peer address passed in \"ip_addresses\": \"{address}\". Verify that the peer address is correct, and then try the operation again.")).with_target("remote.ip_addresses");
    if address.parse::<SocketAddr>().is_ok() {
        return Ok(address.to_string());
    }
    if let Ok(ip) = address.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, 443).to_string());
    }
    Err(invalid())
}

#[derive(Deserialize)]
struct OfferAnswer {
    name: String,
    uuid: String,
    accepted: bool,
}

/// Cluster peer create answers 201 with the record (no job), as ONTAP does. With remote
/// addresses the simulator contacts the peer at once: if the peer has created its side with
/// the same passphrase both become `available`, otherwise this side is `pending`.
async fn create_cluster_peer(State(st): State<ApiState>, RawQuery(raw): RawQuery, JsonBody(json): JsonBody) -> ApiResult {
    query(&raw, Resource::ClusterPeer, &[])?;
    let mut body = Body::new(Resource::ClusterPeer, json)?;
    let addresses: Vec<String> = match body.take("remote.ip_addresses") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().ok_or_else(|| OntapError::invalid_field("remote.ip_addresses", "Each entry of \"remote.ip_addresses\" must be a string.")).and_then(parse_address))
            .collect::<SimResult<_>>()?,
        Some(_) => return Err(OntapError::invalid_field("remote.ip_addresses", "Field \"remote.ip_addresses\" must be an array.")),
    };
    let passphrase = body.take_str("authentication.passphrase")?;
    let generate = body.take_bool("authentication.generate_passphrase")?.unwrap_or(false);
    let _ = body.take("authentication.expiry_time");
    let _ = body.take_str("name")?;
    // Accepted and not modelled: encryption, ipspace, applications, initial SVMs, local LIFs.
    body.finish(&["uuid", "status", "version", "ip_address", "authentication.in_use", "authentication.state", "remote.name", "remote.serial_number"])?;
    if passphrase.is_some() && generate {
        return Err(OntapError::new(ErrorKind::Invalid, 4656077, "Specify either a passphrase or generate_passphrase, not both.").with_target("authentication.generate_passphrase"));
    }
    if passphrase.is_some() && addresses.is_empty() {
        return Err(OntapError::new(ErrorKind::Invalid, 4656069, "Specifying a passphrase without remote IP addresses is not supported.").with_target("authentication.passphrase"));
    }
    if let Some(p) = &passphrase {
        validate_passphrase(p)?;
    }
    let generated = passphrase.is_none();
    let passphrase = passphrase.unwrap_or_else(|| Alphanumeric.sample_string(&mut rand::thread_rng(), 24));
    let (local_name, local_uuid) = st.sim.read(|s| (s.name.clone(), s.uuid.clone()));
    // The introductory call: who is there, and has it already created its side?
    let mut answer: Option<OfferAnswer> = None;
    if !addresses.is_empty() {
        let offer = json!({"name": local_name, "uuid": local_uuid, "address": st.sim.address(), "passphrase": passphrase});
        let probe = ClusterPeer {
            uuid: String::new(),
            name: addresses.join(","),
            remote_uuid: None,
            addresses: addresses.clone(),
            passphrase: passphrase.clone(),
            generated,
            status: PeerStatus::Pending,
            expiry_time: st.sim.now(),
            update_time: st.sim.now(),
            seq: 0,
        };
        let response = replication::call(&st.sim, &probe, reqwest::Method::POST, "/sim/v1/intercluster/peer-offer", Some(&offer), replication::CALL_TIMEOUT).await.map_err(|mut e| {
            if e.kind == ErrorKind::Unavailable {
                e.kind = ErrorKind::Refused;
                e.target = Some("remote.ip_addresses".into());
            }
            e
        })?;
        answer = Some(response.json().await.map_err(|e| OntapError::new(ErrorKind::Refused, replication::UNREACHABLE_CODE, format!("The peer address did not answer as a cluster: {e}.")).with_target("remote.ip_addresses"))?);
    }
    let now = st.sim.now();
    let record = st.sim.transact(|s| {
        if let Some(a) = &answer {
            if s.cluster_peers.values().any(|p| p.remote_uuid.as_deref() == Some(a.uuid.as_str()) || (p.name == a.name && !a.name.is_empty())) {
                return Err(OntapError::new(ErrorKind::Duplicate, 4653075, "Cannot peer with two clusters using the same cluster peer relationship name: this cluster is already peered with it."));
            }
        }
        let uuid = s.new_uuid();
        let seq = s.next_seq();
        let peer = ClusterPeer {
            uuid: uuid.clone(),
            name: answer.as_ref().map(|a| a.name.clone()).unwrap_or_default(),
            remote_uuid: answer.as_ref().map(|a| a.uuid.clone()),
            addresses: addresses.clone(),
            passphrase: passphrase.clone(),
            generated,
            status: if answer.as_ref().is_some_and(|a| a.accepted) { PeerStatus::Available } else { PeerStatus::Pending },
            expiry_time: now + PASSPHRASE_EXPIRY,
            update_time: now,
            seq,
        };
        s.cluster_peers.insert(uuid, peer.clone());
        Ok(peer)
    })?;
    let mut authentication = json!({"expiry_time": time(&record.expiry_time)});
    if record.generated {
        authentication["passphrase"] = json!(record.passphrase);
    }
    let mut created = json!({"uuid": record.uuid, "name": record.name, "authentication": authentication, "_links": link(format!("/api/cluster/peers/{}", record.uuid))});
    if let Some(address) = record.addresses.first() {
        created["ip_address"] = json!(address);
    }
    let mut response = (StatusCode::CREATED, Json(json!({"num_records": 1, "records": [created]}))).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/api/cluster/peers/{}", record.uuid)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Deletes this cluster's side only, as ONTAP does; refused while SVM peers use it.
async fn delete_cluster_peer(State(st): State<ApiState>, Path(uuid): Path<String>, RawQuery(raw): RawQuery, JsonBody(json): JsonBody) -> ApiResult {
    query(&raw, Resource::ClusterPeer, &[])?;
    Body::new(Resource::ClusterPeer, json)?.finish_strict()?;
    st.sim.transact(|s| {
        let peer = s.cluster_peer(&uuid)?.clone();
        if s.svm_peers.values().any(|p| Some(&p.peer_cluster.uuid) == peer.remote_uuid.as_ref()) {
            return Err(OntapError::new(ErrorKind::Refused, 4653079, format!("Unable to delete peer relationship: SVM peer relationships with cluster \"{}\" exist. Delete them first.", peer.name)));
        }
        s.cluster_peers.remove(&uuid);
        Ok(())
    })?;
    Ok(StatusCode::OK.into_response())
}

// ---- SVM peers ----

pub fn svm_peer(p: &SvmPeer) -> Value {
    json!({
        "uuid": p.uuid,
        "name": p.peer_svm.name,
        "state": p.state.as_str(),
        "svm": svm_ref(&p.svm),
        "peer": {
            "svm": {"name": p.peer_svm.name, "uuid": p.peer_svm.uuid},
            "cluster": {"name": p.peer_cluster.name, "uuid": p.peer_cluster.uuid},
        },
        "applications": p.applications,
        "_links": link(format!("/api/svm/peers/{}", p.uuid)),
    })
}

async fn list_svm_peers(State(st): State<ApiState>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = query(&raw, Resource::SvmPeer, &[])?;
    let records = st.sim.read(|s| {
        let mut peers: Vec<&SvmPeer> = s.svm_peers.values().collect();
        peers.sort_by_key(|p| p.seq);
        peers.into_iter().map(svm_peer).collect()
    });
    collection(records, &q, "/api/svm/peers", &["uuid", "name"])
}

async fn get_svm_peer(State(st): State<ApiState>, Path(uuid): Path<String>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = query(&raw, Resource::SvmPeer, &[])?;
    let record = st.sim.read(|s| s.svm_peer(&uuid).map(svm_peer))?;
    instance(record, &q, &["uuid", "name"])
}

fn applications(value: Option<Value>) -> SimResult<Vec<String>> {
    match value {
        None => Ok(vec!["snapmirror".to_string()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v.as_str() {
                Some(a @ ("snapmirror" | "file_copy" | "lun_copy" | "flexcache")) => Ok(a.to_string()),
                _ => Err(OntapError::new(ErrorKind::Invalid, 26345579, format!("The specified field is invalid: {v} is not an SVM peer application.")).with_target("applications")),
            })
            .collect(),
        Some(_) => Err(OntapError::invalid_field("applications", "Field \"applications\" must be an array.")),
    }
}

/// An intercluster SVM peer: `initiated` here, `pending` on the peer until accepted there.
async fn create_svm_peer(State(st): State<ApiState>, f: Fault, RawQuery(raw): RawQuery, JsonBody(json): JsonBody) -> ApiResult {
    let q = query(&raw, Resource::SvmPeer, &[])?;
    let mut body = Body::new(Resource::SvmPeer, json)?;
    let svm_sel = body.take_selector("svm")?;
    let peer_svm = body.take_selector("peer.svm")?;
    let cluster_sel = body.take_selector("peer.cluster")?;
    let apps = applications(body.take("applications"))?;
    let _ = body.take_str("name")?;
    let _ = body.take_bool("force")?;
    body.finish_strict()?;
    let peer_svm_name = peer_svm.name.clone().ok_or_else(|| OntapError::new(ErrorKind::Invalid, 26345580, "SVM name or SVM UUID must be provided.").with_target("peer.svm.name"))?;
    if svm_sel.is_empty() {
        return Err(OntapError::new(ErrorKind::Invalid, 26345580, "SVM name or SVM UUID must be provided.").with_target("svm.name"));
    }
    let local_name = st.sim.read(|s| s.name.clone());
    if cluster_sel.is_empty() || cluster_sel.name.as_deref() == Some(local_name.as_str()) {
        return Err(OntapError::new(ErrorKind::Invalid, 2, "Intracluster SVM peering is not simulated: name a peer cluster in \"peer.cluster.name\".").with_target("peer.cluster"));
    }
    // Checked now so that a bad request fails at once, as on ONTAP.
    let (svm, peer) = st.sim.read(|s| {
        let svm = s.find_svm(&svm_sel)?;
        let peer = s.available_peer(&cluster_sel)?;
        s.check_svm_peer_free(&svm, &peer_svm_name, &peer.name)?;
        Ok::<_, OntapError>((svm, peer))
    })?;
    let location = format!("/api/svm/peers/?svm.name={}&peer.svm.name={}", encode(&svm.name), encode(&peer_svm_name));
    let sim = st.sim.clone();
    let op: super::AsyncOp = Box::pin(async move {
        let uuid = sim.transact(|s: &mut ClusterState| Ok(s.new_uuid()))?;
        let request = json!({"uuid": uuid, "svm": peer_svm_name, "peer_svm": {"name": svm.name, "uuid": svm.uuid}, "applications": apps});
        let remote: Named = replication::call_json(&sim, &peer, reqwest::Method::POST, "/sim/v1/intercluster/svm-peers", Some(&request)).await?;
        sim.transact(|s| {
            let seq = s.next_seq();
            let record = SvmPeer {
                uuid: uuid.clone(),
                svm: svm.clone(),
                peer_svm: remote.clone(),
                peer_cluster: Named { name: peer.name.clone(), uuid: peer.remote_uuid.clone().unwrap_or_default() },
                state: SvmPeerState::Initiated,
                applications: apps.clone(),
                seq,
            };
            s.svm_peers.insert(uuid.clone(), record);
            Ok(())
        })
    });
    write_async(&st, f, &q, format!("POST /api/svm/peers/{}", svm_sel.name.unwrap_or_default()), StatusCode::CREATED, Some(location), op).await
}

/// Accept (`state: peered`) a pending SVM peer: both clusters then show `peered`.
async fn modify_svm_peer(State(st): State<ApiState>, f: Fault, Path(uuid): Path<String>, RawQuery(raw): RawQuery, JsonBody(json): JsonBody) -> ApiResult {
    let q = query(&raw, Resource::SvmPeer, &[])?;
    let mut body = Body::new(Resource::SvmPeer, json)?;
    let state = body.take_str("state")?;
    let _ = body.take_bool("force")?;
    let _ = applications(body.take("applications"))?;
    body.finish_strict()?;
    let record = st.sim.read(|s| s.svm_peer(&uuid).cloned())?;
    match state.as_deref() {
        Some("peered") => {}
        None => return Err(OntapError::new(ErrorKind::Invalid, 26345577, "One of the following is required: applications, state, or name.")),
        Some(other) if ["rejected", "suspended"].contains(&other) => {
            return Err(OntapError::new(ErrorKind::Invalid, 26345576, format!("Changing an SVM peer to \"{other}\" is not simulated.")).with_target("state"))
        }
        Some(other) => return Err(OntapError::new(ErrorKind::Invalid, 26345576, format!("Given peer state \"{other}\" is invalid.")).with_target("state")),
    }
    if record.state == SvmPeerState::Peered {
        let op: super::AsyncOp = Box::pin(async { Ok(()) });
        return write_async(&st, f, &q, format!("PATCH /api/svm/peers/{uuid}"), StatusCode::OK, None, op).await;
    }
    if record.state != SvmPeerState::Pending {
        return Err(OntapError::new(ErrorKind::Refused, 26345576, format!("Given peer state is invalid: only a pending SVM peer can be accepted, this one is \"{}\".", record.state.as_str())).with_target("state"));
    }
    let peer = st.sim.read(|s| s.available_peer(&Selector { name: None, uuid: Some(record.peer_cluster.uuid.clone()) }))?;
    let sim = st.sim.clone();
    let id = uuid.clone();
    let op: super::AsyncOp = Box::pin(async move {
        replication::call(&sim, &peer, reqwest::Method::POST, &format!("/sim/v1/intercluster/svm-peers/{id}/accept"), None, replication::CALL_TIMEOUT).await?;
        sim.transact(|s| {
            s.svm_peers.get_mut(&id).ok_or_else(|| OntapError::not_found("SVM peer"))?.state = SvmPeerState::Peered;
            Ok(())
        })
    });
    write_async(&st, f, &q, format!("PATCH /api/svm/peers/{uuid}"), StatusCode::OK, None, op).await
}

/// Deleted on both clusters; with the peer cluster down, only here (ONTAP's `force`).
async fn delete_svm_peer(State(st): State<ApiState>, f: Fault, Path(uuid): Path<String>, RawQuery(raw): RawQuery, JsonBody(json): JsonBody) -> ApiResult {
    let q = query(&raw, Resource::SvmPeer, &["force"])?;
    Body::new(Resource::SvmPeer, json)?.finish_strict()?;
    let record = st.sim.read(|s| s.svm_peer(&uuid).cloned())?;
    let in_use = st.sim.read(|s| s.relationships.values().any(|r| r.destination.svm.uuid == record.svm.uuid && r.source.svm.name == record.peer_svm.name));
    if in_use {
        return Err(OntapError::new(ErrorKind::Refused, 9895956, "Cannot delete an SVM peer relationship that SnapMirror relationships use."));
    }
    let sim = st.sim.clone();
    let id = uuid.clone();
    let op: super::AsyncOp = Box::pin(async move {
        if let Ok(peer) = sim.read(|s| s.available_peer(&Selector { name: None, uuid: Some(record.peer_cluster.uuid.clone()) })) {
            let _ = replication::call(&sim, &peer, reqwest::Method::DELETE, &format!("/sim/v1/intercluster/svm-peers/{id}"), None, replication::CALL_TIMEOUT).await;
        }
        sim.transact(|s| {
            s.svm_peers.remove(&id);
            Ok(())
        })
    });
    write_async(&st, f, &q, format!("DELETE /api/svm/peers/{uuid}"), StatusCode::OK, None, op).await
}
