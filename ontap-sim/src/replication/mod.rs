//! Replication between simulators: intercluster calls and SnapMirror transfers.
//!
//! Simulators talk to each other over HTTP under `/sim/v1/intercluster` (see
//! `control::intercluster`), authenticated by the cluster peer passphrase rather than the
//! admin account, as ONTAP's intercluster LIFs are. The destination pulls: it asks the source
//! for a stream of the snapshots to send, each as the delta from the one before (the last
//! common snapshot first), and applies the whole stream in one state transition. A stream
//! that fails or ends early changes nothing on the destination.

pub mod sync;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ErrorKind, OntapError, SimResult};
use crate::model::cluster::Selector;
use crate::model::delta::Decoder;
use crate::model::peering::{ClusterPeer, PeerStatus};
use crate::model::snapmirror::{Received, RelState, SnapshotMeta, StreamRequest, TransferType};
use crate::sim::Simulator;

/// Bound on connecting to a peer: a peer that does not answer is down, not slow.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Bound on one intercluster control call (not a transfer stream).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on a whole transfer stream.
pub const STREAM_TIMEOUT: Duration = Duration::from_secs(600);
/// Header naming the calling cluster (by uuid); the passphrase comes as a bearer token.
pub const PEER_HEADER: &str = "x-ontap-sim-cluster";

/// Code for "the peer cluster did not answer" (ONTAP's introductory RPC failure).
pub const UNREACHABLE_CODE: u64 = 4653215;

/// The stream's header: what the snapshots are, before their deltas.
#[derive(Serialize, Deserialize)]
pub struct StreamHeader {
    pub snapshots: Vec<SnapshotMeta>,
    pub source_versions: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct RemoteSnapshot {
    pub name: String,
    pub version_uuid: String,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct RemoteVolume {
    pub uuid: String,
    pub name: String,
    pub svm_uuid: String,
    pub svm_name: String,
    pub size: u64,
    #[serde(rename = "type")]
    pub vtype: String,
    pub state: String,
}

fn unreachable(peer: &ClusterPeer, detail: impl std::fmt::Display) -> OntapError {
    OntapError::new(
        ErrorKind::Unavailable,
        UNREACHABLE_CODE,
        format!("An introductory RPC to the peer address failed to connect: cluster peer \"{}\" did not answer ({detail}).", peer.name),
    )
}

fn base_url(address: &str) -> String {
    format!("http://{address}")
}

/// A request to a peer, tried at each of its addresses until one answers. A peer that
/// answers with an error is not retried elsewhere: the error is the peer's answer.
pub async fn call(sim: &Simulator, peer: &ClusterPeer, method: reqwest::Method, path: &str, body: Option<&Value>, timeout: Duration) -> SimResult<reqwest::Response> {
    let local_uuid = sim.read(|s| s.uuid.clone());
    let mut last_error = String::from("no address");
    for address in &peer.addresses {
        let mut rb = sim.http().request(method.clone(), format!("{}{path}", base_url(address))).timeout(timeout).header(PEER_HEADER, &local_uuid).bearer_auth(&peer.passphrase);
        if let Some(body) = body {
            rb = rb.json(body);
        }
        match rb.send().await {
            Ok(response) => {
                mark_peer(sim, &peer.uuid, PeerStatus::Available);
                return remote_error(peer, response).await;
            }
            Err(e) => last_error = format!("{address}: {e}"),
        }
    }
    mark_peer(sim, &peer.uuid, PeerStatus::Unavailable);
    Err(unreachable(peer, last_error))
}

fn mark_peer(sim: &Simulator, peer_uuid: &str, status: PeerStatus) {
    let now = sim.now();
    let _ = sim.transact(|s| {
        if let Some(p) = s.cluster_peers.get_mut(peer_uuid) {
            if p.status != PeerStatus::Pending && p.status != status {
                p.status = status;
                p.update_time = now;
            }
        }
        Ok(())
    });
}

/// An ONTAP error from the peer, passed on as the peer gave it.
async fn remote_error(peer: &ClusterPeer, response: reqwest::Response) -> SimResult<reqwest::Response> {
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let error = &body["error"];
    let code = error["code"].as_str().and_then(|c| c.parse().ok()).unwrap_or(1);
    let message = error["message"].as_str().map(str::to_string).unwrap_or_else(|| format!("peer cluster \"{}\" answered HTTP {status}", peer.name));
    let kind = match status.as_u16() {
        404 => ErrorKind::NotFound,
        409 => ErrorKind::Duplicate,
        400..=499 => ErrorKind::Refused,
        _ => ErrorKind::Unavailable,
    };
    Err(OntapError::new(kind, code, message))
}

pub async fn call_json<T: for<'de> Deserialize<'de>>(sim: &Simulator, peer: &ClusterPeer, method: reqwest::Method, path: &str, body: Option<&Value>) -> SimResult<T> {
    let response = call(sim, peer, method, path, body, CALL_TIMEOUT).await?;
    response.json().await.map_err(|e| unreachable(peer, format!("bad answer: {e}")))
}

/// The available peer record of the cluster named `cluster`.
pub fn peer_named(sim: &Simulator, cluster: &str) -> SimResult<ClusterPeer> {
    sim.read(|s| s.available_peer(&Selector { name: Some(cluster.to_string()), uuid: None }))
}

pub async fn remote_snapshots(sim: &Simulator, peer: &ClusterPeer, volume_uuid: &str) -> SimResult<Vec<RemoteSnapshot>> {
    call_json(sim, peer, reqwest::Method::GET, &format!("/sim/v1/intercluster/volumes/{volume_uuid}/snapshots"), None).await
}

pub async fn remote_volume(sim: &Simulator, peer: &ClusterPeer, svm: &str, volume: &str) -> SimResult<RemoteVolume> {
    let path = format!("/sim/v1/intercluster/volumes?svm={}&name={}", enc(svm), enc(volume));
    call_json(sim, peer, reqwest::Method::GET, &path, None).await
}

fn enc(v: &str) -> String {
    url::form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

/// Start a transfer of `rel_uuid` in the background; returns the transfer's uuid at once.
pub fn start_transfer(sim: &Simulator, rel_uuid: &str, ttype: TransferType, source_snapshot: Option<String>) -> SimResult<String> {
    let now = sim.now();
    let (transfer_uuid, request, peer, source_volume) = sim.transact(|s| {
        let rel = s.relationship(rel_uuid)?.clone();
        let peer = s.available_peer(&Selector { name: None, uuid: Some(rel.source.cluster.uuid.clone()) })?;
        let request = s.stream_request(rel_uuid, source_snapshot.clone())?;
        let uuid = s.begin_transfer(rel_uuid, ttype, source_snapshot.clone(), now)?;
        Ok((uuid, request, peer, rel.source.volume.uuid.clone()))
    })?;
    let (sim2, rel, tuuid) = (sim.clone(), rel_uuid.to_string(), transfer_uuid.clone());
    tokio::spawn(async move {
        let outcome = fetch_stream(&sim2, &peer, &source_volume, &request).await;
        let now = sim2.now();
        let result = match outcome {
            Ok(received) => {
                let bytes = received.bytes;
                sim2.transact(|s| s.commit_transfer(&rel, &tuuid, received, now)).map_err(|e| (e, bytes))
            }
            Err(failure) => Err(failure),
        };
        if let Err((e, bytes)) = result {
            tracing::info!(relationship = %rel, error = %e, "SnapMirror transfer failed");
            let _ = sim2.transact(|s| {
                s.fail_transfer(&rel, &tuuid, &e, bytes, now);
                Ok(())
            });
        }
    });
    Ok(transfer_uuid)
}

/// Pull the stream and decode all of it; any failure (peer down, cut connection, refused)
/// is an error and nothing is applied.
async fn fetch_stream(sim: &Simulator, peer: &ClusterPeer, source_volume: &str, request: &StreamRequest) -> Result<Received, (OntapError, u64)> {
    let body = serde_json::to_value(request).expect("serializable");
    let path = format!("/sim/v1/intercluster/volumes/{source_volume}/stream");
    let mut response = call(sim, peer, reqwest::Method::POST, &path, Some(&body), STREAM_TIMEOUT).await.map_err(|e| (e, 0))?;
    let mut bytes = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(e) => {
                let n = bytes.len() as u64;
                return Err((OntapError::new(ErrorKind::Unavailable, 13303844, format!("Update operation failed: the transfer from cluster \"{}\" was interrupted after {n} bytes ({e}).", peer.name)), n));
            }
        }
    }
    let n = bytes.len() as u64;
    decode_stream(&bytes).map_err(|m| (OntapError::new(ErrorKind::Unavailable, 13303844, format!("Update operation failed: {m}.")), n))
}

pub fn decode_stream(bytes: &[u8]) -> Result<Received, String> {
    let mut dec = Decoder::new(bytes);
    let header_len = dec.u64()? as usize;
    let header: StreamHeader = serde_json::from_slice(dec.take(header_len)?).map_err(|e| format!("bad stream header: {e}"))?;
    let mut snapshots = Vec::with_capacity(header.snapshots.len());
    for meta in header.snapshots {
        snapshots.push((meta, dec.delta()?));
    }
    if !dec.at_end() {
        return Err("trailing bytes after the last snapshot".into());
    }
    Ok(Received { snapshots, source_versions: header.source_versions, bytes: bytes.len() as u64 })
}

pub fn encode_stream(header: &StreamHeader, deltas: Vec<u8>) -> Vec<u8> {
    let header = serde_json::to_vec(header).expect("serializable");
    let mut out = Vec::with_capacity(8 + header.len() + deltas.len());
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&deltas);
    out
}

/// Resync (broken_off -> snapmirrored) and the destination half of a reverse resync: ask the
/// source which snapshots it still holds, revert the destination to the newest common one,
/// make it DP again, and transfer what the source has beyond it.
pub async fn resync(sim: &Simulator, rel_uuid: &str) -> SimResult<()> {
    let (peer, source_volume, dest_volume) = sim.read(|s| {
        let rel = s.relationship(rel_uuid)?;
        let peer = s.available_peer(&Selector { name: None, uuid: Some(rel.source.cluster.uuid.clone()) })?;
        Ok::<_, OntapError>((peer, rel.source.volume.uuid.clone(), rel.destination.volume.uuid.clone()))
    })?;
    let versions: Vec<String> = remote_snapshots(sim, &peer, &source_volume).await?.into_iter().map(|s| s.version_uuid).collect();
    sim.transact(|s| {
        if s.relationship(rel_uuid)?.current_transfer().is_some() {
            return Err(OntapError::new(ErrorKind::Refused, 13303830, "Transient state: a transfer is already in progress for this relationship."));
        }
        s.revert_to_common(&dest_volume, &versions).map(|_| ())
    })?;
    start_transfer(sim, rel_uuid, TransferType::Resync, None).map(|_| ())
}

/// Is this relationship mirrored and without a transfer running (scheduler, tests)?
pub fn idle_mirrored(sim: &Simulator, rel_uuid: &str) -> bool {
    sim.read(|s| s.relationship(rel_uuid).map(|r| r.state == RelState::Snapmirrored && r.current_transfer().is_none()).unwrap_or(false))
}

/// Schedules the simulator understands (ONTAP's built-in cron schedules), as intervals.
pub fn schedule_interval(name: &str) -> Option<chrono::Duration> {
    Some(match name {
        "5min" => chrono::Duration::minutes(5),
        "hourly" => chrono::Duration::hours(1),
        "8hour" => chrono::Duration::hours(8),
        "daily" => chrono::Duration::days(1),
        "weekly" => chrono::Duration::weeks(1),
        _ => return None,
    })
}

/// Run scheduled updates: every `tick`, each snapmirrored relationship whose schedule
/// interval has passed since its last transfer started gets an update.
pub async fn scheduler(sim: Simulator, tick: Duration) {
    loop {
        tokio::time::sleep(tick).await;
        let now = sim.now();
        let due: Vec<String> = sim.read(|s| {
            s.relationships
                .values()
                .filter(|r| r.state == RelState::Snapmirrored && r.current_transfer().is_none())
                .filter(|r| {
                    let schedule = r.transfer_schedule.clone().or_else(|| s.find_policy(&Selector { name: Some(r.policy.name.clone()), uuid: None }).ok().and_then(|p| p.transfer_schedule.map(str::to_string)));
                    let Some(interval) = schedule.as_deref().and_then(schedule_interval) else { return false };
                    let last = r.last_transfer().map(|t| t.start_time).unwrap_or(r.create_time);
                    now - last >= interval
                })
                .map(|r| r.uuid.clone())
                .collect()
        });
        for rel in due {
            if let Err(e) = start_transfer(&sim, &rel, TransferType::Update, None) {
                tracing::debug!(relationship = %rel, error = %e, "scheduled update not started");
            }
        }
    }
}
