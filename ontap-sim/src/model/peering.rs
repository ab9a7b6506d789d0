//! Cluster peers and SVM peers: what must exist before a SnapMirror relationship can.
//!
//! Both sides of a peering keep their own record. A cluster peer is `pending` until the other
//! cluster has created its side with the same passphrase, then `available`. An intercluster
//! SVM peer is `initiated` on the cluster that asked and `pending` on the other, until the
//! other accepts it (PATCH `state: peered`); then `peered` on both.

use chrono::{DateTime, Utc};

use super::cluster::{ClusterState, Selector};
use super::volume::Named;
use crate::error::{ErrorKind, OntapError, SimResult};

/// Shortest passphrase ONTAP accepts.
pub const PASSPHRASE_LEN_MIN: usize = 8;
/// How long a cluster peer passphrase offer stays valid by default (ONTAP: one hour).
pub const PASSPHRASE_EXPIRY: chrono::Duration = chrono::Duration::hours(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerStatus {
    /// Created here, the other cluster has not created its side yet.
    Pending,
    Available,
    /// The other cluster did not answer the last intercluster call.
    Unavailable,
}

impl PeerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerStatus::Pending => "pending",
            PeerStatus::Available => "available",
            PeerStatus::Unavailable => "unavailable",
        }
    }
}

#[derive(Clone, Debug)]
pub struct ClusterPeer {
    pub uuid: String,
    /// The remote cluster's name (empty until it is known).
    pub name: String,
    pub remote_uuid: Option<String>,
    /// `remote.ip_addresses` as given; the simulator also accepts `IP:PORT`.
    pub addresses: Vec<String>,
    pub passphrase: String,
    /// The passphrase was generated here, so it is shown once in the create response.
    pub generated: bool,
    pub status: PeerStatus,
    pub expiry_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
    pub seq: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SvmPeerState {
    Initiated,
    Pending,
    Peered,
    Rejected,
    Suspended,
}

impl SvmPeerState {
    pub fn as_str(self) -> &'static str {
        match self {
            SvmPeerState::Initiated => "initiated",
            SvmPeerState::Pending => "pending",
            SvmPeerState::Peered => "peered",
            SvmPeerState::Rejected => "rejected",
            SvmPeerState::Suspended => "suspended",
        }
    }
}

#[derive(Clone, Debug)]
pub struct SvmPeer {
    /// The same uuid on both clusters.
    pub uuid: String,
    pub svm: Named,
    pub peer_svm: Named,
    pub peer_cluster: Named,
    pub state: SvmPeerState,
    pub applications: Vec<String>,
    pub seq: u64,
}

fn peer_not_found() -> OntapError {
    OntapError::new(ErrorKind::NotFound, 4, "entry doesn't exist: cluster peer").with_target("uuid")
}

impl ClusterState {
    pub fn cluster_peer(&self, uuid: &str) -> SimResult<&ClusterPeer> {
        self.cluster_peers.get(uuid).ok_or_else(peer_not_found)
    }

    /// The peer record of the cluster named `name` (or with that uuid).
    pub fn cluster_peer_by(&self, sel: &Selector) -> Option<&ClusterPeer> {
        self.cluster_peers.values().find(|p| sel.name.as_deref().is_none_or(|n| n == p.name) && sel.uuid.as_deref().is_none_or(|u| Some(u) == p.remote_uuid.as_deref()))
    }

    pub fn cluster_peer_by_remote_uuid(&self, remote_uuid: &str) -> Option<&ClusterPeer> {
        self.cluster_peers.values().find(|p| p.remote_uuid.as_deref() == Some(remote_uuid))
    }

    /// An available peer, for intercluster work.
    pub fn available_peer(&self, sel: &Selector) -> SimResult<ClusterPeer> {
        match self.cluster_peer_by(sel) {
            Some(p) if p.status != PeerStatus::Pending => Ok(p.clone()),
            Some(p) => Err(OntapError::new(ErrorKind::Refused, 26345581, format!("Peer cluster \"{}\" has not accepted the cluster peer relationship yet.", p.name))),
            None => Err(OntapError::new(
                ErrorKind::NotFound,
                26345581,
                format!("Peer cluster name could not be retrieved or validated: no cluster peer \"{}\".", sel.name.clone().or(sel.uuid.clone()).unwrap_or_default()),
            )
            .with_target("peer.cluster")),
        }
    }

    pub fn svm_peer(&self, uuid: &str) -> SimResult<&SvmPeer> {
        self.svm_peers.get(uuid).ok_or_else(|| OntapError::new(ErrorKind::NotFound, 4, "entry doesn't exist: SVM peer").with_target("uuid"))
    }

    /// The peered SVM peer between local `svm` and `peer_svm` (named as the peer calls it).
    pub fn peered_svm(&self, svm: &str, peer_svm: &str) -> Option<&SvmPeer> {
        self.svm_peers.values().find(|p| p.svm.name == svm && p.peer_svm.name == peer_svm && p.state == SvmPeerState::Peered)
    }

    pub fn check_svm_peer_free(&self, svm: &Named, peer_svm: &str, peer_cluster: &str) -> SimResult<()> {
        if self.svm_peers.values().any(|p| p.svm.uuid == svm.uuid && p.peer_svm.name == peer_svm && p.peer_cluster.name == peer_cluster) {
            return Err(OntapError::new(ErrorKind::Duplicate, 1, format!("Duplicate entry: SVM \"{}\" is already peered with SVM \"{peer_svm}\" of cluster \"{peer_cluster}\".", svm.name)));
        }
        Ok(())
    }
}

pub fn validate_passphrase(passphrase: &str) -> SimResult<()> {
    if passphrase.chars().count() < PASSPHRASE_LEN_MIN {
        return Err(OntapError::new(ErrorKind::Invalid, 4653236, "The specified passphrase is too short.").with_target("authentication.passphrase"));
    }
    Ok(())
}
