//! The `Replication` seam over ONTAP REST: cluster peers (`/api/cluster/peers`), SVM peers
//! (`/api/svm/peers`), SnapMirror relationships (`/api/snapmirror/relationships`) and their
//! transfers, and `dp` volumes. ONTAP's JSON for these lives here and nowhere else.
//!
//! Retry shapes follow the rest of the client: reads retry; creates look their object up
//! (a relationship by its destination path, a peer by its remote) before sending again;
//! state changes (PATCH `state`) are awaited as jobs and never blindly repeated.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use stasis_core::replication::{
    ClusterIdentity, ClusterPeerInfo, MirrorState, NewClusterPeer, RelationshipInfo, Replication, SvmPeerInfo, TransferInfo,
    TransferState, TransferSummary, VolumePath,
};
use stasis_core::storage::{codes, Storage, StorageError, StorageResult, VolumeInfo};
use tracing::info;

use crate::client::{name_not_found, Lookup, OnAccepted, OntapClient};
use crate::http::{refused_locally, Written};
use crate::wire::{self, Reference};

/// ONTAP's generic "duplicate entry".
const CODE_DUPLICATE: u64 = 1;
/// Relationship create: "Relationship with specified destination volume already exists."
const CODE_RELATIONSHIP_EXISTS: u64 = 6_619_637;
/// A relationship uuid that no longer exists (ONTAP answers code 4 or this on DELETE).
const CODE_RELATIONSHIP_GONE: u64 = 13_303_812;

pub(crate) const RELATIONSHIP_FIELDS: &str =
    "uuid,source.path,destination.path,state,healthy,unhealthy_reason,lag_time,policy.name,transfer.uuid,transfer.state,transfer.bytes_transferred";
pub(crate) const TRANSFER_FIELDS: &str = "uuid,state,bytes_transferred,snapshot,end_time,error_info";
const CLUSTER_PEER_FIELDS: &str = "uuid,name,status.state,remote.ip_addresses";
const SVM_PEER_FIELDS: &str = "uuid,state,svm.name,peer.svm.name,peer.cluster.name";

// ---- ONTAP's JSON ----

#[derive(Debug, Deserialize)]
struct Endpoint {
    #[serde(default)]
    path: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Relationship {
    uuid: String,
    #[serde(default)]
    source: Option<Endpoint>,
    #[serde(default)]
    destination: Option<Endpoint>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    healthy: Option<bool>,
    #[serde(default)]
    unhealthy_reason: Option<Vec<UnhealthyReason>>,
    #[serde(default)]
    lag_time: Option<String>,
    #[serde(default)]
    policy: Option<Reference>,
    #[serde(default)]
    transfer: Option<RelationshipTransfer>,
}

#[derive(Debug, Deserialize)]
struct UnhealthyReason {
    #[serde(default)]
    message: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RelationshipTransfer {
    #[serde(default)]
    uuid: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    bytes_transferred: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct Transfer {
    uuid: String,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    bytes_transferred: Option<u64>,
    #[serde(default)]
    snapshot: Option<String>,
    #[serde(default)]
    end_time: Option<String>,
    #[serde(default)]
    error_info: Option<TransferError>,
}

#[derive(Debug, Deserialize)]
struct TransferError {
    #[serde(default)]
    code: Option<serde_json::Value>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Cluster {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    uuid: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ClusterPeer {
    uuid: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    status: Option<PeerStatus>,
    #[serde(default)]
    remote: Option<PeerRemote>,
    #[serde(default)]
    authentication: Option<PeerAuthentication>,
}

#[derive(Debug, Deserialize)]
struct PeerStatus {
    #[serde(default)]
    state: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PeerRemote {
    #[serde(default)]
    ip_addresses: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct PeerAuthentication {
    #[serde(default)]
    passphrase: Option<String>,
}

#[derive(Debug, Deserialize)]
struct SvmPeer {
    uuid: String,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    svm: Option<Reference>,
    #[serde(default)]
    peer: Option<SvmPeerRemote>,
}

#[derive(Debug, Deserialize)]
struct SvmPeerRemote {
    #[serde(default)]
    svm: Option<Reference>,
    #[serde(default)]
    cluster: Option<Reference>,
}

#[derive(Debug, Deserialize)]
struct Aggregate {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    space: Option<AggregateSpace>,
}

#[derive(Debug, Deserialize)]
struct AggregateSpace {
    #[serde(default)]
    block_storage: Option<BlockStorage>,
}

#[derive(Debug, Deserialize)]
struct BlockStorage {
    #[serde(default)]
    available: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct SnapshotDelta {
    #[serde(default)]
    delta: Option<Delta>,
}

#[derive(Debug, Deserialize)]
struct Delta {
    #[serde(default)]
    size_consumed: Option<u64>,
}

#[derive(Debug, Serialize)]
struct PathRef {
    path: String,
}

#[derive(Debug, Serialize)]
struct RelationshipCreate<'a> {
    source: PathRef,
    destination: PathRef,
    policy: wire::NameRef<'a>,
}

#[derive(Debug, Serialize)]
struct DpVolumeCreate<'a> {
    name: &'a str,
    svm: wire::NameRef<'a>,
    #[serde(rename = "type")]
    kind: &'static str,
    size: u64,
    aggregates: Vec<wire::NameRef<'a>>,
}

// ---- conversions ----

fn path_of(endpoint: Option<&Endpoint>, what: &str, uuid: &str) -> StorageResult<VolumePath> {
    let raw = endpoint.and_then(|e| e.path.as_deref()).unwrap_or("");
    VolumePath::parse(raw).ok_or_else(|| StorageError::Retryable {
        message: format!("relationship {uuid}: unusable {what}.path {raw:?}"),
    })
}

/// ONTAP durations are ISO 8601 (`PT1H2M3S`, `P1DT2H`); fractions of a second allowed.
pub(crate) fn parse_iso_duration(raw: &str) -> Option<Duration> {
    let rest = raw.strip_prefix('P')?;
    let (days, time) = match rest.split_once('T') {
        Some((d, t)) => (d, t),
        None => (rest, ""),
    };
    let mut secs = 0f64;
    let mut number = String::new();
    for c in days.chars() {
        match c {
            '0'..='9' | '.' => number.push(c),
            'D' => secs += number.parse::<f64>().ok()? * 86_400.0,
            'W' => secs += number.parse::<f64>().ok()? * 7.0 * 86_400.0,
            _ => return None,
        }
        if !c.is_ascii_digit() && c != '.' {
            number.clear();
        }
    }
    if !number.is_empty() {
        return None;
    }
    for c in time.chars() {
        match c {
            '0'..='9' | '.' => number.push(c),
            'H' => secs += number.parse::<f64>().ok()? * 3600.0,
            'M' => secs += number.parse::<f64>().ok()? * 60.0,
            'S' => secs += number.parse::<f64>().ok()?,
            _ => return None,
        }
        if !c.is_ascii_digit() && c != '.' {
            number.clear();
        }
    }
    if !number.is_empty() || !secs.is_finite() {
        return None;
    }
    Some(Duration::from_secs_f64(secs))
}

fn relationship_info(r: Relationship) -> StorageResult<RelationshipInfo> {
    let source = path_of(r.source.as_ref(), "source", &r.uuid)?;
    let destination = path_of(r.destination.as_ref(), "destination", &r.uuid)?;
    let unhealthy_reason = r
        .unhealthy_reason
        .map(|reasons| reasons.into_iter().filter_map(|x| x.message).collect::<Vec<_>>().join("; "))
        .filter(|s| !s.is_empty());
    Ok(RelationshipInfo {
        uuid: r.uuid,
        source,
        destination,
        state: MirrorState::from_ontap(r.state.as_deref().unwrap_or("")),
        healthy: r.healthy,
        unhealthy_reason,
        lag_time: r.lag_time.as_deref().and_then(parse_iso_duration),
        policy: r.policy.and_then(|p| p.name),
        transfer: r.transfer.and_then(|t| {
            Some(TransferSummary {
                uuid: t.uuid,
                state: TransferState::from_ontap(t.state.as_deref()?),
                bytes_transferred: t.bytes_transferred.unwrap_or(0),
            })
        }),
    })
}

fn transfer_info(t: Transfer, relationship_uuid: &str) -> TransferInfo {
    let error = t.error_info.and_then(|e| {
        let code = wire::parse_code(e.code.as_ref());
        match (code, e.message) {
            (None, None) => None,
            (code, message) => Some(format!("{}{}", code.map(|c| format!("ONTAP error {c}: ")).unwrap_or_default(), message.unwrap_or_default())),
        }
    });
    TransferInfo {
        uuid: t.uuid,
        relationship_uuid: relationship_uuid.to_string(),
        state: TransferState::from_ontap(t.state.as_deref().unwrap_or("")),
        bytes_transferred: t.bytes_transferred.unwrap_or(0),
        snapshot: t.snapshot,
        end_time: t.end_time.as_deref().and_then(wire::parse_time),
        error,
    }
}

fn peer_info(p: ClusterPeer) -> ClusterPeerInfo {
    ClusterPeerInfo {
        uuid: p.uuid,
        name: p.name.unwrap_or_default(),
        state: p.status.and_then(|s| s.state),
        remote_addresses: p.remote.and_then(|r| r.ip_addresses).unwrap_or_default(),
    }
}

fn svm_peer_info(p: SvmPeer) -> SvmPeerInfo {
    let peer = p.peer.unwrap_or(SvmPeerRemote { svm: None, cluster: None });
    SvmPeerInfo {
        uuid: p.uuid,
        svm: p.svm.and_then(|s| s.name).unwrap_or_default(),
        peer_svm: peer.svm.and_then(|s| s.name).unwrap_or_default(),
        peer_cluster: peer.cluster.and_then(|c| c.name).unwrap_or_default(),
        state: p.state.unwrap_or_default(),
    }
}

/// The last path segment of a `Location` naming an instance (`.../transfers/<uuid>`).
fn uuid_from_location(location: &str, collection: &str) -> Option<String> {
    let path = location.split('?').next()?;
    let (_, rest) = path.rsplit_once(&format!("/{collection}/"))?;
    let uuid = rest.trim_end_matches('/');
    (!uuid.is_empty() && !uuid.contains('/')).then(|| uuid.to_string())
}

impl OntapClient {
    async fn find_relationship(&self, destination: &VolumePath) -> StorageResult<Option<RelationshipInfo>> {
        let path = destination.to_string();
        let url = self.t().url(&["snapmirror", "relationships"], &[("destination.path", &path), ("fields", RELATIONSHIP_FIELDS)]);
        let records: Vec<Relationship> = self.t().get_collection(url, None).await?;
        for r in records {
            let info = relationship_info(r)?;
            if info.destination == *destination {
                return Ok(Some(info));
            }
        }
        Ok(None)
    }

    async fn find_cluster_peer(&self, remote_addresses: &[String]) -> StorageResult<Option<ClusterPeerInfo>> {
        let peers = Replication::cluster_peers(self).await?;
        Ok(peers.into_iter().find(|p| p.remote_addresses.iter().any(|a| remote_addresses.contains(a))))
    }

    async fn find_svm_peer(&self, svm: &str, peer_svm: &str, peer_cluster: &str) -> StorageResult<Option<SvmPeerInfo>> {
        let peers = Replication::svm_peers(self).await?;
        Ok(peers.into_iter().find(|p| p.svm == svm && p.peer_svm == peer_svm && p.peer_cluster == peer_cluster))
    }

    async fn find_dp_volume(&self, svm: &str, name: &str, purpose: Lookup) -> StorageResult<Option<VolumeInfo>> {
        let url = self.t().url(&["storage", "volumes"], &[("svm.name", svm), ("name", name), ("fields", wire::VOLUME_FIELDS)]);
        let records: Vec<wire::Volume> = self.t().get_collection(url, None).await?;
        let Some(volume) = records.into_iter().find(|v| v.name == name) else {
            return Ok(None);
        };
        let is_dp = volume.kind.as_deref().is_some_and(|k| k.eq_ignore_ascii_case("dp"));
        let info = self.volume_info(volume, svm).await?;
        if purpose == Lookup::Adopt && !is_dp {
            return Err(StorageError::Refused {
                code: codes::DUPLICATE_VOLUME_NAME,
                message: format!("volume {name} already exists in SVM {svm} and is not a data-protection (dp) volume"),
                target: Some("name".into()),
            });
        }
        Ok(Some(info))
    }

    /// The aggregate with the most free space (what ONTAP's own provisioning prefers).
    async fn roomiest_aggregate(&self) -> StorageResult<String> {
        let url = self.t().url(&["storage", "aggregates"], &[("fields", "name,space.block_storage.available")]);
        let records: Vec<Aggregate> = self.t().get_collection(url, None).await?;
        records
            .into_iter()
            .filter_map(|a| Some((a.space.and_then(|s| s.block_storage).and_then(|b| b.available).unwrap_or(0), a.name?)))
            .max_by_key(|(available, _)| *available)
            .map(|(_, name)| name)
            .ok_or_else(|| refused_locally("the destination cluster lists no aggregate to put a dp volume on".into()))
    }

    /// The transfer a relationship reports as current (when a transfer POST named none).
    async fn current_transfer(&self, relationship_uuid: &str) -> StorageResult<Option<String>> {
        let r = Replication::relationship(self, relationship_uuid).await?;
        Ok(r.transfer.and_then(|t| t.uuid))
    }
}

#[async_trait]
impl Replication for OntapClient {
    async fn cluster_identity(&self) -> StorageResult<ClusterIdentity> {
        let url = self.t().url(&["cluster"], &[("fields", "name,uuid")]);
        let cluster: Cluster = self.t().get_json(url, None).await?;
        Ok(ClusterIdentity { name: cluster.name.unwrap_or_default(), uuid: cluster.uuid.unwrap_or_default() })
    }

    async fn cluster_peers(&self) -> StorageResult<Vec<ClusterPeerInfo>> {
        let url = self.t().url(&["cluster", "peers"], &[("fields", CLUSTER_PEER_FIELDS)]);
        let records: Vec<ClusterPeer> = self.t().get_collection(url, None).await?;
        Ok(records.into_iter().map(peer_info).collect())
    }

    #[tracing::instrument(skip(self, passphrase), fields(accepting = passphrase.is_some()))]
    async fn create_cluster_peer(&self, remote_addresses: &[String], passphrase: Option<&str>) -> StorageResult<NewClusterPeer> {
        if remote_addresses.is_empty() {
            return Err(refused_locally("cluster peer: no remote intercluster address given".into()));
        }
        let authentication = match passphrase {
            Some(p) => serde_json::json!({"passphrase": p}),
            None => serde_json::json!({"generate_passphrase": true}),
        };
        let body = serde_json::json!({"remote": {"ip_addresses": remote_addresses}, "authentication": authentication});
        // The passphrase comes back only in the create's answer (`return_records`).
        let answer = self
            .t()
            .write_once_answer(Method::POST, self.t().url(&["cluster", "peers"], &[("return_records", "true")]), &body, self.t().bounds.request_timeout)
            .await;
        let answer = match answer {
            Ok(a) => a,
            Err(e) if e.is_indeterminate() || matches!(e, StorageError::Refused { code: CODE_DUPLICATE, .. }) => {
                // Landed earlier (or already peered): adopt it; a lost passphrase cannot be
                // recovered, so an offer without one is reported as such.
                return match self.find_cluster_peer(remote_addresses).await? {
                    Some(peer) => Ok(NewClusterPeer { peer, passphrase: None }),
                    None => Err(e),
                };
            }
            Err(e) => return Err(e),
        };
        if let Written::Accepted { job_uuid } = &answer.written {
            self.t().await_job(job_uuid).await?;
        }
        let created: Option<ClusterPeer> = answer
            .body
            .get("records")
            .and_then(|r| r.get(0))
            .cloned()
            .and_then(|r| serde_json::from_value(r).ok());
        let passphrase_out = created.as_ref().and_then(|c| c.authentication.as_ref()).and_then(|a| a.passphrase.clone());
        let peer = match created {
            Some(c) if c.remote.is_some() => peer_info(c),
            _ => self.find_cluster_peer(remote_addresses).await?.ok_or_else(|| StorageError::Indeterminate {
                message: format!("cluster peer to {remote_addresses:?}: created, but not listed"),
            })?,
        };
        info!(peer = %peer.name, uuid = %peer.uuid, "cluster peer created");
        Ok(NewClusterPeer { peer, passphrase: passphrase_out.or_else(|| passphrase.map(str::to_string)) })
    }

    async fn svm_peers(&self) -> StorageResult<Vec<SvmPeerInfo>> {
        let url = self.t().url(&["svm", "peers"], &[("fields", SVM_PEER_FIELDS)]);
        let records: Vec<SvmPeer> = self.t().get_collection(url, None).await?;
        Ok(records.into_iter().map(svm_peer_info).collect())
    }

    #[tracing::instrument(skip(self))]
    async fn create_svm_peer(&self, svm: &str, peer_svm: &str, peer_cluster: &str) -> StorageResult<SvmPeerInfo> {
        if let Some(existing) = self.find_svm_peer(svm, peer_svm, peer_cluster).await? {
            return Ok(existing);
        }
        let body = serde_json::json!({
            "svm": {"name": svm},
            "peer": {"svm": {"name": peer_svm}, "cluster": {"name": peer_cluster}},
            "applications": ["snapmirror"],
        });
        let post = |timeout: Duration| self.t().write_once(Method::POST, self.t().url(&["svm", "peers"], &[]), &body, timeout);
        let lookup = |_: Lookup| self.find_svm_peer(svm, peer_svm, peer_cluster);
        let what = format!("SVM peer {svm} -> {peer_cluster}:{peer_svm}");
        let peer = self.create_adopting(&what, None, OnAccepted::AwaitJob, &[CODE_DUPLICATE], post, lookup).await?;
        info!(uuid = %peer.uuid, state = %peer.state, "SVM peer requested");
        Ok(peer)
    }

    #[tracing::instrument(skip(self))]
    async fn accept_svm_peer(&self, uuid: &str) -> StorageResult<()> {
        let url = self.t().url(&["svm", "peers", uuid], &[]);
        match self.t().write_and_wait(Method::PATCH, url, &serde_json::json!({"state": "peered"})).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_indeterminate() => {
                // Accepting twice is harmless, but look rather than guess.
                let peered = Replication::svm_peers(self).await?.into_iter().any(|p| p.uuid == uuid && p.state == "peered");
                if peered {
                    Ok(())
                } else {
                    Err(e)
                }
            }
            Err(e) => Err(name_not_found(e, format!("SVM peer {uuid}"))),
        }
    }

    #[tracing::instrument(skip(self))]
    async fn create_dp_volume(&self, svm: &str, name: &str, size_bytes: u64) -> StorageResult<VolumeInfo> {
        if let Some(existing) = self.find_dp_volume(svm, name, Lookup::Adopt).await? {
            return Ok(existing);
        }
        let aggregate = self.roomiest_aggregate().await?;
        let body = DpVolumeCreate { name, svm: wire::NameRef { name: svm }, kind: "dp", size: size_bytes, aggregates: vec![wire::NameRef { name: &aggregate }] };
        let post = |timeout: Duration| self.t().write_once(Method::POST, self.t().url(&["storage", "volumes"], &[]), &body, timeout);
        let lookup = |purpose: Lookup| self.find_dp_volume(svm, name, purpose);
        let what = format!("dp volume {name} in SVM {svm}");
        let volume = self.create_adopting(&what, None, OnAccepted::AwaitJob, &[codes::DUPLICATE_VOLUME_NAME, CODE_DUPLICATE], post, lookup).await?;
        info!(volume = name, uuid = %volume.uuid, aggregate, "dp volume created");
        Ok(volume)
    }

    async fn mount_volume(&self, volume_uuid: &str, junction_path: &str) -> StorageResult<()> {
        let url = self.t().url(&["storage", "volumes", volume_uuid], &[]);
        let body = serde_json::json!({"nas": {"path": junction_path}});
        match self.t().write_and_wait(Method::PATCH, url, &body).await {
            Ok(()) => {}
            // Setting the same path twice is harmless; look before reporting the unknown outcome.
            Err(e) if e.is_indeterminate() => match Storage::volume(self, volume_uuid).await {
                Ok(v) if v.junction_path.as_deref() == Some(junction_path) => {}
                _ => return Err(e),
            },
            Err(e) => return Err(name_not_found(e, format!("volume {volume_uuid}"))),
        }
        info!(volume = volume_uuid, junction_path, "volume mounted");
        Ok(())
    }

    async fn relationships(&self, destination_svm: &str) -> StorageResult<Vec<RelationshipInfo>> {
        let url = self.t().url(&["snapmirror", "relationships"], &[("destination.svm.name", destination_svm), ("fields", RELATIONSHIP_FIELDS)]);
        let records: Vec<Relationship> = self.t().get_collection(url, None).await?;
        records.into_iter().map(relationship_info).filter(|r| r.as_ref().map_or(true, |r| r.destination.svm == destination_svm)).collect()
    }

    async fn relationship(&self, uuid: &str) -> StorageResult<RelationshipInfo> {
        let url = self.t().url(&["snapmirror", "relationships", uuid], &[("fields", RELATIONSHIP_FIELDS)]);
        let r: Relationship = self.t().get_json(url, None).await.map_err(|e| name_not_found(e, format!("SnapMirror relationship {uuid}")))?;
        relationship_info(r)
    }

    #[tracing::instrument(skip(self), fields(source = %source, destination = %destination))]
    async fn create_relationship(&self, source: &VolumePath, destination: &VolumePath, policy: &str) -> StorageResult<RelationshipInfo> {
        let adopt = |found: Option<RelationshipInfo>| -> StorageResult<Option<RelationshipInfo>> {
            match found {
                Some(r) if r.source != *source => Err(StorageError::Refused {
                    code: CODE_RELATIONSHIP_EXISTS,
                    message: format!("{destination} is already the destination of a relationship from {}", r.source),
                    target: Some("destination.path".into()),
                }),
                other => Ok(other),
            }
        };
        if let Some(existing) = adopt(self.find_relationship(destination).await?)? {
            return Ok(existing);
        }
        let body = RelationshipCreate {
            source: PathRef { path: source.to_string() },
            destination: PathRef { path: destination.to_string() },
            policy: wire::NameRef { name: policy },
        };
        let post = |timeout: Duration| self.t().write_once(Method::POST, self.t().url(&["snapmirror", "relationships"], &[]), &body, timeout);
        let lookup = |_: Lookup| async { adopt(self.find_relationship(destination).await?) };
        let what = format!("SnapMirror relationship {source} -> {destination}");
        let r = self.create_adopting(&what, None, OnAccepted::AwaitJob, &[CODE_RELATIONSHIP_EXISTS, CODE_DUPLICATE], post, lookup).await?;
        info!(uuid = %r.uuid, state = ?r.state, "relationship created");
        Ok(r)
    }

    #[tracing::instrument(skip(self))]
    async fn set_relationship_state(&self, uuid: &str, state: MirrorState) -> StorageResult<()> {
        let url = self.t().url(&["snapmirror", "relationships", uuid], &[]);
        match self.t().write_and_wait(Method::PATCH, url, &serde_json::json!({"state": state.as_ontap()})).await {
            Ok(()) => {
                info!(state = state.as_ontap(), "relationship state changed");
                Ok(())
            }
            Err(e) if e.is_indeterminate() => {
                // A state change asked twice is refused once it runs: look instead.
                match Replication::relationship(self, uuid).await {
                    Ok(r) if r.state == state => Ok(()),
                    _ => Err(e),
                }
            }
            Err(e) => Err(name_not_found(e, format!("SnapMirror relationship {uuid}"))),
        }
    }

    #[tracing::instrument(skip(self), fields(source = %source, destination = %destination))]
    async fn reverse_relationship(&self, uuid: &str, source: &VolumePath, destination: &VolumePath) -> StorageResult<()> {
        // ONTAP reverses a relationship by PATCHing it with the paths swapped.
        let url = self.t().url(&["snapmirror", "relationships", uuid], &[]);
        let body = serde_json::json!({
            "source": {"path": destination.to_string()},
            "destination": {"path": source.to_string()},
            "state": MirrorState::Snapmirrored.as_ontap(),
        });
        self.t()
            .write_and_wait(Method::PATCH, url, &body)
            .await
            .map_err(|e| name_not_found(e, format!("SnapMirror relationship {uuid}")))?;
        info!("relationship reversed");
        Ok(())
    }

    #[tracing::instrument(skip(self))]
    async fn delete_relationship(&self, uuid: &str) -> StorageResult<()> {
        let url = self.t().url(&["snapmirror", "relationships", uuid], &[]);
        self.delete_idempotent(url, &[CODE_RELATIONSHIP_GONE]).await
    }

    #[tracing::instrument(skip(self))]
    async fn start_transfer(&self, relationship_uuid: &str, source_snapshot: Option<&str>) -> StorageResult<TransferInfo> {
        let url = self.t().url(&["snapmirror", "relationships", relationship_uuid, "transfers"], &[("return_records", "true")]);
        let body = match source_snapshot {
            Some(s) => serde_json::json!({"source_snapshot": s}),
            None => serde_json::json!({}),
        };
        // Not repeated after an unknown outcome: a second update is harmless to the data
        // but would be a second transfer; the caller looks at the relationship instead.
        let answer = self
            .t()
            .write_once_answer(Method::POST, url, &body, self.t().bounds.request_timeout)
            .await
            .map_err(|e| name_not_found(e, format!("SnapMirror relationship {relationship_uuid}")))?;
        if let Written::Accepted { job_uuid } = &answer.written {
            self.t().await_job(job_uuid).await?;
        }
        let from_records = answer.body.get("records").and_then(|r| r.get(0)).and_then(|r| r.get("uuid")).and_then(|u| u.as_str()).map(str::to_string);
        let transfer_uuid = match answer.location.as_deref().and_then(|l| uuid_from_location(l, "transfers")).or(from_records) {
            Some(uuid) => uuid,
            None => self.current_transfer(relationship_uuid).await?.ok_or_else(|| StorageError::Indeterminate {
                message: format!("transfer on relationship {relationship_uuid}: started, but the array named no transfer"),
            })?,
        };
        info!(transfer = %transfer_uuid, snapshot = ?source_snapshot, "transfer started");
        Replication::transfer(self, relationship_uuid, &transfer_uuid).await
    }

    async fn transfer(&self, relationship_uuid: &str, transfer_uuid: &str) -> StorageResult<TransferInfo> {
        let url = self.t().url(&["snapmirror", "relationships", relationship_uuid, "transfers", transfer_uuid], &[("fields", TRANSFER_FIELDS)]);
        let t: Transfer = self.t().get_json(url, None).await.map_err(|e| name_not_found(e, format!("transfer {transfer_uuid} of relationship {relationship_uuid}")))?;
        Ok(transfer_info(t, relationship_uuid))
    }

    #[tracing::instrument(skip(self))]
    async fn abort_transfer(&self, relationship_uuid: &str, transfer_uuid: &str) -> StorageResult<()> {
        let url = self.t().url(&["snapmirror", "relationships", relationship_uuid, "transfers", transfer_uuid], &[]);
        self.t().write_and_wait(Method::PATCH, url, &serde_json::json!({"state": "aborted"})).await
    }

    async fn snapshot_delta_bytes(&self, volume_uuid: &str, snapshot_uuid: &str) -> StorageResult<Option<u64>> {
        let url = self.t().url(&["storage", "volumes", volume_uuid, "snapshots", snapshot_uuid], &[("fields", "delta")]);
        let s: SnapshotDelta = self.t().get_json(url, None).await.map_err(|e| name_not_found(e, format!("snapshot {snapshot_uuid} of volume {volume_uuid}")))?;
        Ok(s.delta.and_then(|d| d.size_consumed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_durations_parse_as_ontap_writes_them() {
        assert_eq!(parse_iso_duration("PT1H2M3S"), Some(Duration::from_secs(3723)));
        assert_eq!(parse_iso_duration("P1DT1S"), Some(Duration::from_secs(86_401)));
        assert_eq!(parse_iso_duration("PT0.5S"), Some(Duration::from_millis(500)));
        assert_eq!(parse_iso_duration("PT0S"), Some(Duration::ZERO));
        assert_eq!(parse_iso_duration("1H"), None);
        assert_eq!(parse_iso_duration("PT5X"), None);
        assert_eq!(parse_iso_duration("PT5"), None);
    }

    #[test]
    fn transfer_uuids_come_from_the_location() {
        assert_eq!(uuid_from_location("/api/snapmirror/relationships/r1/transfers/t-9", "transfers").as_deref(), Some("t-9"));
        assert_eq!(uuid_from_location("/api/snapmirror/relationships/r1/transfers/t-9/", "transfers").as_deref(), Some("t-9"));
        assert_eq!(uuid_from_location("/api/snapmirror/relationships/r1/transfers/?uuid=x", "transfers"), None);
        assert_eq!(uuid_from_location("/api/snapmirror/relationships/r1", "transfers"), None);
    }
}
