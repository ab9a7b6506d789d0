//! `/sim/v1/intercluster`: what simulated clusters say to each other (ONTAP's intercluster
//! LIFs). Authenticated by the cluster peer passphrase (bearer token) and the caller's cluster
//! uuid, not by the admin account; only the peering handshake itself (`peer-offer`) comes
//! before a peer exists, and it proves itself with the passphrase in its body.

use axum::body::Body as HttpBody;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::api::{ApiState, JsonBody};
use crate::control::faults::FaultAction;
use crate::error::{ErrorKind, OntapError, SimResult};
use crate::model::cluster::Selector;
use crate::model::peering::{ClusterPeer, PeerStatus, SvmPeer, SvmPeerState};
use crate::model::snapmirror::{Endpoint, RelState, Relationship, StreamRequest};
use crate::model::volume::{Named, VolumeType};
use crate::replication::{self, RemoteSnapshot, RemoteVolume, StreamHeader, PEER_HEADER};

type ControlResult = Result<Response, OntapError>;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/peer-offer", post(peer_offer))
        .route("/svm-peers", post(svm_peer_request))
        .route("/svm-peers/{uuid}", axum::routing::delete(svm_peer_remove))
        .route("/svm-peers/{uuid}/accept", post(svm_peer_accept))
        .route("/volumes", get(find_volume))
        .route("/volumes/{uuid}/snapshots", get(volume_snapshots))
        .route("/volumes/{uuid}/stream", post(stream))
        .route("/relationships/reverse", post(reverse_adopt))
        .route("/sync/{uuid}", post(sync_write))
}

fn auth_failed() -> OntapError {
    OntapError::new(ErrorKind::Unauthorized, 6691623, "User is not authorized: unknown peer cluster or wrong cluster peer passphrase.")
}

/// The peer record of the calling cluster, if its passphrase matches.
fn peer_of(st: &ApiState, headers: &HeaderMap) -> SimResult<ClusterPeer> {
    let caller = headers.get(PEER_HEADER).and_then(|v| v.to_str().ok()).ok_or_else(auth_failed)?;
    let token = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).ok_or_else(auth_failed)?;
    let peer = st.sim.read(|s| s.cluster_peer_by_remote_uuid(caller).cloned()).ok_or_else(auth_failed)?;
    if peer.passphrase != token || peer.status == PeerStatus::Pending {
        return Err(auth_failed());
    }
    Ok(peer)
}

/// A local SVM that is peered with an SVM of the calling cluster.
fn check_svm_peered(st: &ApiState, peer: &ClusterPeer, svm: &str) -> SimResult<()> {
    let ok = st.sim.read(|s| s.svm_peers.values().any(|p| p.svm.name == svm && p.state == SvmPeerState::Peered && Some(&p.peer_cluster.uuid) == peer.remote_uuid.as_ref()));
    if ok {
        Ok(())
    } else {
        Err(OntapError::new(ErrorKind::Refused, 13303925, format!("SnapMirror validation has failed: SVM \"{svm}\" of cluster \"{}\" is not peered with an SVM of the calling cluster.", st.sim.read(|s| s.name.clone()))))
    }
}

#[derive(Deserialize)]
struct Offer {
    name: String,
    uuid: String,
    address: Option<String>,
    passphrase: String,
}

/// The peering handshake. A cluster that has a record for the caller (or an unbound record
/// with this passphrase) completes the peering; one that has none answers who it is, and the
/// caller's record stays `pending` until this cluster creates its side.
async fn peer_offer(State(st): State<ApiState>, JsonBody(body): JsonBody) -> ControlResult {
    let offer: Offer = serde_json::from_value(body).map_err(|e| OntapError::new(ErrorKind::Invalid, 2, format!("Invalid peer offer: {e}.")))?;
    let now = st.sim.now();
    let accepted = st.sim.transact(|s| {
        if offer.uuid == s.uuid {
            return Err(OntapError::new(ErrorKind::Invalid, 4653058, "Cannot peer with self."));
        }
        if offer.name == s.name {
            return Err(OntapError::new(ErrorKind::Invalid, 4656071, "Cannot peer with a cluster bearing the same name as the local cluster."));
        }
        let bound = s.cluster_peers.values().find(|p| p.remote_uuid.as_deref() == Some(offer.uuid.as_str())).map(|p| p.uuid.clone());
        let unbound = s.cluster_peers.values().find(|p| p.remote_uuid.is_none() && p.passphrase == offer.passphrase).map(|p| p.uuid.clone());
        let Some(record) = bound.or(unbound) else { return Ok(false) };
        let peer = s.cluster_peers.get_mut(&record).expect("found above");
        if peer.passphrase != offer.passphrase {
            return Err(OntapError::new(ErrorKind::Refused, 2, "Cluster peer authentication failed: the passphrase does not match the one given on the peer cluster.").with_target("authentication.passphrase"));
        }
        if peer.expiry_time < now && peer.status == PeerStatus::Pending {
            return Err(OntapError::new(ErrorKind::Refused, 2, "Cluster peer authentication failed: the passphrase offer has expired.").with_target("authentication.passphrase"));
        }
        peer.name = offer.name.clone();
        peer.remote_uuid = Some(offer.uuid.clone());
        if peer.addresses.is_empty() {
            peer.addresses.extend(offer.address.clone());
        }
        peer.status = PeerStatus::Available;
        peer.update_time = now;
        Ok(true)
    })?;
    let (name, uuid) = st.sim.read(|s| (s.name.clone(), s.uuid.clone()));
    Ok(Json(json!({"name": name, "uuid": uuid, "accepted": accepted})).into_response())
}

#[derive(Deserialize)]
struct SvmPeerRequest {
    uuid: String,
    /// The SVM on this (the receiving) cluster.
    svm: String,
    peer_svm: Named,
    applications: Vec<String>,
}

async fn svm_peer_request(State(st): State<ApiState>, headers: HeaderMap, JsonBody(body): JsonBody) -> ControlResult {
    let peer = peer_of(&st, &headers)?;
    let req: SvmPeerRequest = serde_json::from_value(body).map_err(|e| OntapError::new(ErrorKind::Invalid, 2, format!("Invalid SVM peer request: {e}.")))?;
    let svm = st.sim.transact(|s| {
        let svm = s.find_svm(&Selector { name: Some(req.svm.clone()), uuid: None }).map_err(|e| e.with_target("peer.svm"))?;
        s.check_svm_peer_free(&svm, &req.peer_svm.name, &peer.name)?;
        let seq = s.next_seq();
        let record = SvmPeer {
            uuid: req.uuid.clone(),
            svm: svm.clone(),
            peer_svm: req.peer_svm.clone(),
            peer_cluster: Named { name: peer.name.clone(), uuid: peer.remote_uuid.clone().unwrap_or_default() },
            state: SvmPeerState::Pending,
            applications: req.applications.clone(),
            seq,
        };
        s.svm_peers.insert(req.uuid.clone(), record);
        Ok(svm)
    })?;
    Ok(Json(json!({"name": svm.name, "uuid": svm.uuid})).into_response())
}

fn svm_peer_of_caller<'a>(s: &'a crate::model::cluster::ClusterState, peer: &ClusterPeer, uuid: &str) -> SimResult<&'a SvmPeer> {
    s.svm_peer(uuid).and_then(|p| if Some(&p.peer_cluster.uuid) == peer.remote_uuid.as_ref() { Ok(p) } else { Err(auth_failed()) })
}

async fn svm_peer_accept(State(st): State<ApiState>, headers: HeaderMap, Path(uuid): Path<String>) -> ControlResult {
    let peer = peer_of(&st, &headers)?;
    st.sim.transact(|s| {
        svm_peer_of_caller(s, &peer, &uuid)?;
        s.svm_peers.get_mut(&uuid).expect("checked").state = SvmPeerState::Peered;
        Ok(())
    })?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn svm_peer_remove(State(st): State<ApiState>, headers: HeaderMap, Path(uuid): Path<String>) -> ControlResult {
    let peer = peer_of(&st, &headers)?;
    st.sim.transact(|s| {
        if svm_peer_of_caller(s, &peer, &uuid).is_ok() {
            s.svm_peers.remove(&uuid);
        }
        Ok(())
    })?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
struct VolumeQuery {
    svm: String,
    name: String,
}

async fn find_volume(State(st): State<ApiState>, headers: HeaderMap, Query(q): Query<VolumeQuery>) -> ControlResult {
    let peer = peer_of(&st, &headers)?;
    check_svm_peered(&st, &peer, &q.svm)?;
    let volume = st.sim.read(|s| {
        s.volumes.values().find(|v| v.svm.name == q.svm && v.name == q.name).map(|v| RemoteVolume {
            uuid: v.uuid.clone(),
            name: v.name.clone(),
            svm_uuid: v.svm.uuid.clone(),
            svm_name: v.svm.name.clone(),
            size: v.space().size,
            vtype: v.vtype.as_str().into(),
            state: v.state.as_str().into(),
        })
    });
    let volume = volume.ok_or_else(|| OntapError::new(ErrorKind::NotFound, 13303925, format!("SnapMirror validation has failed: volume \"{}:{}\" does not exist on cluster \"{}\".", q.svm, q.name, st.sim.read(|s| s.name.clone()))).with_target("source.path"))?;
    Ok(Json(volume).into_response())
}

fn peered_volume(st: &ApiState, peer: &ClusterPeer, uuid: &str) -> SimResult<()> {
    let svm = st.sim.read(|s| s.volume(uuid).map(|v| v.svm.name.clone()))?;
    check_svm_peered(st, peer, &svm)
}

async fn volume_snapshots(State(st): State<ApiState>, headers: HeaderMap, Path(uuid): Path<String>) -> ControlResult {
    let peer = peer_of(&st, &headers)?;
    peered_volume(&st, &peer, &uuid)?;
    let snapshots: Vec<RemoteSnapshot> = st.sim.read(|s| s.volume(&uuid).map(|v| v.snapshots.iter().map(|s| RemoteSnapshot { name: s.name.clone(), version_uuid: s.version_uuid.clone() }).collect()))?;
    Ok(Json(snapshots).into_response())
}

/// The source's half of a transfer. Fault rules on this path simulate the link: `error`
/// refuses the transfer, `latency` slows it, `drop` cuts the connection half-way through the
/// stream (the destination sees a truncated transfer).
async fn stream(State(st): State<ApiState>, headers: HeaderMap, Path(uuid): Path<String>, JsonBody(body): JsonBody) -> ControlResult {
    let path = format!("/sim/v1/intercluster/volumes/{uuid}/stream");
    let fault = st.sim.faults().check("POST", &path, true);
    if let Some(FaultAction::Error { status, code, message }) = &fault {
        let e = OntapError::new(ErrorKind::Unavailable, *code, message.clone());
        let mut response = e.into_response();
        *response.status_mut() = StatusCode::from_u16(*status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return Ok(response);
    }
    if let Some(FaultAction::Latency { ms, before: true }) = &fault {
        tokio::time::sleep(std::time::Duration::from_millis(*ms)).await;
    }
    let peer = peer_of(&st, &headers)?;
    peered_volume(&st, &peer, &uuid)?;
    let request: StreamRequest = serde_json::from_value(body).map_err(|e| OntapError::new(ErrorKind::Invalid, 2, format!("Invalid stream request: {e}.")))?;
    let now = st.sim.now();
    let plan = st.sim.transact(|s| s.stream_plan(&uuid, &request, &peer.uuid, now))?;
    let bytes = tokio::task::spawn_blocking(move || {
        let header = StreamHeader { snapshots: plan.snapshots.iter().map(|(m, _)| m.clone()).collect(), source_versions: plan.source_versions.clone() };
        replication::encode_stream(&header, plan.encode())
    })
    .await
    .map_err(|e| OntapError::internal(format!("encoding the stream failed: {e}")))?;
    let octets = [(header::CONTENT_TYPE, "application/octet-stream")];
    match fault {
        Some(FaultAction::Drop { .. }) => {
            // The link goes down mid-transfer: half the stream, then the connection breaks.
            // (The pause lets the first half reach the wire before the connection breaks.)
            let half = bytes::Bytes::from(bytes[..bytes.len() / 2].to_vec());
            let stream = futures::stream::unfold(Some(half), |first| async move {
                match first {
                    Some(half) => Some((Ok::<_, std::io::Error>(half), None)),
                    None => {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        Some((Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "injected link failure")), None))
                    }
                }
            });
            Ok((octets, HttpBody::from_stream(stream)).into_response())
        }
        Some(FaultAction::Latency { ms, before: false }) => {
            // A slow link: the first half now, the rest after the delay.
            let mid = bytes.len() / 2;
            let (first, rest) = (bytes::Bytes::from(bytes[..mid].to_vec()), bytes::Bytes::from(bytes[mid..].to_vec()));
            let stream = futures::stream::unfold(0u8, move |step| {
                let (first, rest) = (first.clone(), rest.clone());
                async move {
                    match step {
                        0 => Some((Ok::<_, std::io::Error>(first), 1)),
                        1 => {
                            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                            Some((Ok(rest), 2))
                        }
                        _ => None,
                    }
                }
            });
            Ok((octets, HttpBody::from_stream(stream)).into_response())
        }
        _ => Ok((octets, bytes).into_response()),
    }
}

#[derive(Deserialize)]
struct ReverseRequest {
    uuid: String,
    /// The caller's volume, the new source.
    source_svm: Named,
    source_volume: Named,
    /// This cluster's volume, the new destination.
    destination_svm: String,
    destination_volume: String,
    policy: String,
    throttle: u64,
    transfer_schedule: Option<String>,
}

/// Reverse resync, this cluster's half: the relationship now has its destination here. The
/// volume reverts to the newest snapshot the new source still holds and becomes DP, and the
/// resync transfer starts. On any failure nothing stays behind.
async fn reverse_adopt(State(st): State<ApiState>, headers: HeaderMap, JsonBody(body): JsonBody) -> ControlResult {
    let peer = peer_of(&st, &headers)?;
    let req: ReverseRequest = serde_json::from_value(body).map_err(|e| OntapError::new(ErrorKind::Invalid, 2, format!("Invalid reverse request: {e}.")))?;
    check_svm_peered(&st, &peer, &req.destination_svm)?;
    let now = st.sim.now();
    st.sim.transact(|s| {
        if s.relationships.contains_key(&req.uuid) {
            return Err(OntapError::new(ErrorKind::Duplicate, 6619637, "Relationship with specified destination volume already exists."));
        }
        let volume = s.volumes.values().find(|v| v.svm.name == req.destination_svm && v.name == req.destination_volume).cloned().ok_or_else(|| {
            OntapError::new(ErrorKind::NotFound, 4, format!("entry doesn't exist: volume \"{}:{}\"", req.destination_svm, req.destination_volume)).with_target("destination.path")
        })?;
        if s.relationship_of_destination(&volume.uuid).is_some() {
            return Err(OntapError::new(ErrorKind::Duplicate, 6619637, "Relationship with specified destination volume already exists."));
        }
        let policy = s.find_policy(&Selector { name: Some(req.policy.clone()), uuid: None })?;
        let seq = s.next_seq();
        let cluster = Named { name: peer.name.clone(), uuid: peer.remote_uuid.clone().unwrap_or_default() };
        let local = Named { name: s.name.clone(), uuid: s.uuid.clone() };
        s.relationships.insert(
            req.uuid.clone(),
            Relationship {
                uuid: req.uuid.clone(),
                source: Endpoint { svm: req.source_svm.clone(), volume: req.source_volume.clone(), cluster },
                destination: Endpoint { svm: volume.svm.clone(), volume: Named { uuid: volume.uuid.clone(), name: volume.name.clone() }, cluster: local },
                policy: Named { name: policy.name.to_string(), uuid: policy.uuid.clone() },
                policy_type: policy.ptype,
                state: RelState::BrokenOff,
                unhealthy_reason: None,
                exported_snapshot: None,
                last_transfer_type: None,
                transfers: imbl::Vector::new(),
                total_transfer_bytes: 0,
                total_transfer_duration_ms: 0,
                throttle: req.throttle,
                transfer_schedule: req.transfer_schedule.clone(),
                create_time: now,
                seq,
            },
        );
        Ok(())
    })?;
    let dest_type_before = st.sim.read(|s| s.relationship(&req.uuid).and_then(|r| s.volume(&r.destination.volume.uuid).map(|v| v.vtype)))?;
    if let Err(e) = replication::resync(&st.sim, &req.uuid).await {
        let _ = st.sim.transact(|s| {
            if let Ok(rel) = s.relationship(&req.uuid) {
                let volume = rel.destination.volume.uuid.clone();
                if dest_type_before == VolumeType::Rw {
                    if let Ok(v) = s.volume_mut(&volume) {
                        v.vtype = VolumeType::Rw;
                    }
                }
            }
            s.relationships.remove(&req.uuid);
            Ok(())
        });
        return Err(e);
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A write forwarded by a Sync source: applied to the destination before the source
/// acknowledges it to its client.
async fn sync_write(State(st): State<ApiState>, headers: HeaderMap, Path(uuid): Path<String>, body: axum::body::Bytes) -> ControlResult {
    let peer = peer_of(&st, &headers)?;
    if let Some(FaultAction::Error { status, code, message }) = st.sim.faults().check("POST", &format!("/sim/v1/intercluster/sync/{uuid}"), true) {
        let mut response = OntapError::new(ErrorKind::Unavailable, code, message).into_response();
        *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return Ok(response);
    }
    let delta = crate::model::delta::Decoder::new(&body).delta().map_err(|m| OntapError::new(ErrorKind::Invalid, 2, format!("Invalid sync write: {m}.")))?;
    let source = peer.remote_uuid.clone().unwrap_or_default();
    st.sim.transact(|s| s.apply_sync_write(&uuid, &source, &delta))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
