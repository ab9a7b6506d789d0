//! The `Replication` seam: SnapMirror, cluster peering and SVM peering, as the DR workflows
//! need them, in their own terms. Next to [`crate::storage::Storage`]; one implementation,
//! `ontap-client`, speaks ONTAP REST (`/api/cluster/peers`, `/api/svm/peers`,
//! `/api/snapmirror/relationships` and their `/transfers`).
//!
//! A handle talks to one cluster. Relationships live on their destination cluster (as on
//! ONTAP), so every relationship call goes to the destination's handle; breaking a mirror
//! needs only the destination, which is what lets an unplanned failover work when the
//! source does not answer at all.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::storage::{StorageResult, VolumeInfo};

/// A SnapMirror endpoint: `svm:volume` on ONTAP's wire.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VolumePath {
    pub svm: String,
    pub volume: String,
}

impl VolumePath {
    pub fn new(svm: impl Into<String>, volume: impl Into<String>) -> Self {
        VolumePath { svm: svm.into(), volume: volume.into() }
    }

    /// Parses `svm:volume`; anything else (no colon, an empty part) is `None`.
    pub fn parse(path: &str) -> Option<VolumePath> {
        let (svm, volume) = path.split_once(':')?;
        (!svm.is_empty() && !volume.is_empty()).then(|| VolumePath::new(svm, volume))
    }
}

impl fmt::Display for VolumePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.svm, self.volume)
    }
}

/// A relationship's state, as ONTAP names them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MirrorState {
    Uninitialized,
    /// Transfers run; the destination is read-only.
    Snapmirrored,
    /// Broken: the destination is writable (failover).
    BrokenOff,
    /// Quiesced: no new transfer starts.
    Paused,
    /// Synchronous relationships in step.
    InSync,
    /// A state this client does not act on (`synchronizing`, `out_of_sync`, ...).
    Other(String),
}

impl MirrorState {
    /// ONTAP's name of the state (what a PATCH sends).
    pub fn as_ontap(&self) -> &str {
        match self {
            MirrorState::Uninitialized => "uninitialized",
            MirrorState::Snapmirrored => "snapmirrored",
            MirrorState::BrokenOff => "broken_off",
            MirrorState::Paused => "paused",
            MirrorState::InSync => "in_sync",
            MirrorState::Other(s) => s,
        }
    }

    pub fn from_ontap(name: &str) -> MirrorState {
        match name {
            "uninitialized" => MirrorState::Uninitialized,
            "snapmirrored" => MirrorState::Snapmirrored,
            "broken_off" => MirrorState::BrokenOff,
            "paused" => MirrorState::Paused,
            "in_sync" => MirrorState::InSync,
            other => MirrorState::Other(other.to_string()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferState {
    Queued,
    Transferring,
    Success,
    Failed,
    Aborted,
    HardAborted,
    Other(String),
}

impl TransferState {
    pub fn from_ontap(name: &str) -> TransferState {
        match name {
            "queued" => TransferState::Queued,
            "transferring" => TransferState::Transferring,
            "success" => TransferState::Success,
            "failed" => TransferState::Failed,
            "aborted" => TransferState::Aborted,
            "hard_aborted" => TransferState::HardAborted,
            other => TransferState::Other(other.to_string()),
        }
    }

    /// Still running: poll again.
    pub fn is_running(&self) -> bool {
        matches!(self, TransferState::Queued | TransferState::Transferring)
    }
}

/// One transfer (initialize, update, resync) of a relationship.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferInfo {
    pub uuid: String,
    pub relationship_uuid: String,
    pub state: TransferState,
    /// Bytes that crossed so far (the real count: only blocks that differ cross).
    pub bytes_transferred: u64,
    /// The snapshot the transfer carries, when the array says.
    pub snapshot: Option<String>,
    pub end_time: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelationshipInfo {
    pub uuid: String,
    pub source: VolumePath,
    pub destination: VolumePath,
    pub state: MirrorState,
    pub healthy: Option<bool>,
    pub unhealthy_reason: Option<String>,
    /// Age of the newest snapshot the destination holds from the source.
    pub lag_time: Option<Duration>,
    pub policy: Option<String>,
    /// The transfer running now, or the last one, if the array reports it.
    pub transfer: Option<TransferSummary>,
}

/// The `transfer.*` fields of a relationship.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferSummary {
    pub uuid: Option<String>,
    pub state: TransferState,
    pub bytes_transferred: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterIdentity {
    pub name: String,
    pub uuid: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterPeerInfo {
    pub uuid: String,
    /// The remote cluster's name.
    pub name: String,
    /// `available`, `unavailable`, `pending`, ...
    pub state: Option<String>,
    pub remote_addresses: Vec<String>,
}

/// A cluster peer just offered: the passphrase the other side must accept it with.
#[derive(Clone, PartialEq, Eq)]
pub struct NewClusterPeer {
    pub peer: ClusterPeerInfo,
    pub passphrase: Option<String>,
}

impl fmt::Debug for NewClusterPeer {
    // The passphrase authenticates the peering: never print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewClusterPeer").field("peer", &self.peer).field("passphrase", &self.passphrase.as_ref().map(|_| "<redacted>")).finish()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SvmPeerInfo {
    pub uuid: String,
    pub svm: String,
    pub peer_svm: String,
    pub peer_cluster: String,
    /// `peered`, `pending` (waiting for this side to accept), `initiated`, `rejected`, ...
    pub state: String,
}

/// SnapMirror and peering on one cluster. Implementations retry what is safe within their
/// own bounds and await ONTAP jobs inside, like `Storage`.
#[async_trait]
pub trait Replication: Send + Sync {
    async fn cluster_identity(&self) -> StorageResult<ClusterIdentity>;
    async fn cluster_peers(&self) -> StorageResult<Vec<ClusterPeerInfo>>;
    /// Offer a peering to the cluster at `remote_addresses` (no passphrase: the array
    /// generates one and returns it), or accept one offered there (with its passphrase).
    async fn create_cluster_peer(&self, remote_addresses: &[String], passphrase: Option<&str>) -> StorageResult<NewClusterPeer>;
    async fn svm_peers(&self) -> StorageResult<Vec<SvmPeerInfo>>;
    /// Ask to peer local `svm` with `peer_svm` on `peer_cluster`, for SnapMirror.
    async fn create_svm_peer(&self, svm: &str, peer_svm: &str, peer_cluster: &str) -> StorageResult<SvmPeerInfo>;
    /// Accept a pending SVM peer request made on the other cluster.
    async fn accept_svm_peer(&self, uuid: &str) -> StorageResult<()>;

    /// Create a data-protection (`dp`) volume: a SnapMirror destination, read-only until broken.
    async fn create_dp_volume(&self, svm: &str, name: &str, size_bytes: u64) -> StorageResult<VolumeInfo>;
    /// Mount a volume in its SVM's namespace at `junction_path` (ONTAP's `nas.path`). A `dp`
    /// volume is served read-only until its relationship is broken.
    async fn mount_volume(&self, volume_uuid: &str, junction_path: &str) -> StorageResult<()>;

    /// Relationships whose destination is on this cluster, in `destination_svm`.
    async fn relationships(&self, destination_svm: &str) -> StorageResult<Vec<RelationshipInfo>>;
    async fn relationship(&self, uuid: &str) -> StorageResult<RelationshipInfo>;
    /// Create (or adopt, when one with this destination and source exists) a relationship.
    async fn create_relationship(&self, source: &VolumePath, destination: &VolumePath, policy: &str) -> StorageResult<RelationshipInfo>;
    /// Initialize / resync / resume (`Snapmirrored`), break (`BrokenOff`), quiesce (`Paused`).
    async fn set_relationship_state(&self, uuid: &str, state: MirrorState) -> StorageResult<()>;
    /// Reverse resync (failback): on the destination's cluster, swap the paths with state
    /// `snapmirrored`. The old source reverts to the newest common snapshot and becomes the
    /// mirror; the relationship now lives on the old source's cluster.
    async fn reverse_relationship(&self, uuid: &str, source: &VolumePath, destination: &VolumePath) -> StorageResult<()>;
    /// Delete the relationship (on the destination; the source's side is released).
    async fn delete_relationship(&self, uuid: &str) -> StorageResult<()>;

    /// Start an update carrying `source_snapshot` (or the policy's choice). Returns at once.
    async fn start_transfer(&self, relationship_uuid: &str, source_snapshot: Option<&str>) -> StorageResult<TransferInfo>;
    async fn transfer(&self, relationship_uuid: &str, transfer_uuid: &str) -> StorageResult<TransferInfo>;
    async fn abort_transfer(&self, relationship_uuid: &str, transfer_uuid: &str) -> StorageResult<()>;

    /// Bytes that differ between a snapshot and the volume's active file system (ONTAP's
    /// snapshot `delta.size_consumed`); `None` when the array does not report it.
    async fn snapshot_delta_bytes(&self, volume_uuid: &str, snapshot_uuid: &str) -> StorageResult<Option<u64>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip_and_refuse_malformed() {
        let p = VolumePath::parse("svm1:vol_a").unwrap();
        assert_eq!(p, VolumePath::new("svm1", "vol_a"));
        assert_eq!(p.to_string(), "svm1:vol_a");
        assert_eq!(VolumePath::parse("novolume"), None);
        assert_eq!(VolumePath::parse("svm:"), None);
        assert_eq!(VolumePath::parse(":vol"), None);
    }

    #[test]
    fn states_map_to_ontap_names() {
        for s in [MirrorState::Uninitialized, MirrorState::Snapmirrored, MirrorState::BrokenOff, MirrorState::Paused, MirrorState::InSync] {
            assert_eq!(MirrorState::from_ontap(s.as_ontap()), s);
        }
        assert_eq!(MirrorState::from_ontap("out_of_sync"), MirrorState::Other("out_of_sync".into()));
        assert!(TransferState::from_ontap("transferring").is_running());
        assert!(!TransferState::from_ontap("success").is_running());
    }

    #[test]
    fn a_new_peer_never_prints_its_passphrase() {
        let p = NewClusterPeer {
            peer: ClusterPeerInfo { uuid: "u".into(), name: "b".into(), state: None, remote_addresses: vec![] },
            passphrase: Some("s3cret-pass".into()),
        };
        assert!(!format!("{p:?}").contains("s3cret-pass"));
    }
}
