//! SnapMirror: policies, relationships and transfers, as pure state.
//!
//! A relationship lives on its destination cluster. A transfer has two halves: the source
//! cluster picks the snapshots to send and encodes what changed since the last common
//! snapshot ([`ClusterState::stream_plan`], then `delta::diff`), the destination applies
//! all of it in one state transition ([`ClusterState::commit_transfer`]): an interrupted
//! or failed transfer changes nothing, so the destination stays at its last complete snapshot.

use chrono::{DateTime, Utc};
use imbl::Vector;

use super::cluster::{ClusterState, Selector};
use super::delta::{self, FsDelta};
use super::fs::Fs;
use super::volume::{Named, Snapshot, VolumeState, VolumeType};
use crate::error::{ErrorKind, OntapError, SimResult};

/// Transfers kept per relationship for clients to read back.
pub const TRANSFERS_KEPT: usize = 32;
/// Prefix of the snapshots SnapMirror creates on the source (`snapmirror.<svm>_<volume>.<time>`).
pub const SM_SNAPSHOT_PREFIX: &str = "snapmirror.";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyType {
    Async,
    Sync,
}

impl PolicyType {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyType::Async => "async",
            PolicyType::Sync => "sync",
        }
    }
}

/// A SnapMirror policy (the cluster-scoped built-ins ONTAP ships).
#[derive(Clone, Debug)]
pub struct Policy {
    pub name: &'static str,
    pub uuid: String,
    pub ptype: PolicyType,
    pub sync_type: Option<&'static str>,
    /// Every source snapshot is replicated (`all_source_snapshots`), not only labelled ones.
    pub copy_all_source_snapshots: bool,
    pub create_snapshot_on_source: bool,
    /// Retention rules: (snapmirror label, count). `sm_created` is the snapshot SnapMirror
    /// creates on the source for each update.
    pub rules: Vec<(&'static str, u64)>,
    pub transfer_schedule: Option<&'static str>,
    pub comment: &'static str,
}

impl Policy {
    fn labels(&self) -> Vec<String> {
        self.rules.iter().map(|(l, _)| l.to_string()).filter(|l| l != "sm_created" && l != "all_source_snapshots").collect()
    }

    /// Which source snapshots a transfer with this policy carries.
    pub fn selection(&self) -> Selection {
        if self.copy_all_source_snapshots {
            Selection::All
        } else {
            Selection::Labels(self.labels())
        }
    }
}

/// The built-in policies, with uuids derived from the cluster's so they are stable.
pub fn builtin_policies(cluster_uuid: &str) -> Vec<Policy> {
    let id = |n: u8| format!("{}{:02x}", &cluster_uuid[..cluster_uuid.len() - 2], n);
    vec![
        Policy { name: "Asynchronous", uuid: id(1), ptype: PolicyType::Async, sync_type: None, copy_all_source_snapshots: false, create_snapshot_on_source: true,
            rules: vec![("sm_created", 1), ("daily", 7), ("weekly", 52)], transfer_schedule: Some("hourly"),
            comment: "A unified SnapMirror asynchronous and vault policy for mirroring the latest active file system and daily and weekly snapshots with an hourly transfer schedule." },
        Policy { name: "MirrorAllSnapshots", uuid: id(2), ptype: PolicyType::Async, sync_type: None, copy_all_source_snapshots: true, create_snapshot_on_source: true,
            rules: vec![("sm_created", 1), ("all_source_snapshots", 1)], transfer_schedule: None,
            comment: "Asynchronous SnapMirror policy for mirroring all snapshots and the latest active file system." },
        Policy { name: "MirrorLatest", uuid: id(3), ptype: PolicyType::Async, sync_type: None, copy_all_source_snapshots: false, create_snapshot_on_source: true,
            rules: vec![("sm_created", 1)], transfer_schedule: None, comment: "Asynchronous SnapMirror policy for mirroring the latest active file system." },
        Policy { name: "MirrorAndVault", uuid: id(4), ptype: PolicyType::Async, sync_type: None, copy_all_source_snapshots: false, create_snapshot_on_source: true,
            rules: vec![("sm_created", 1), ("daily", 7), ("weekly", 52)], transfer_schedule: None,
            comment: "A unified SnapMirror asynchronous and vault policy for mirroring the latest active file system and daily and weekly snapshots." },
        Policy { name: "Sync", uuid: id(5), ptype: PolicyType::Sync, sync_type: Some("sync"), copy_all_source_snapshots: false, create_snapshot_on_source: true,
            rules: vec![("sm_created", 2)], transfer_schedule: None, comment: "Policy for SnapMirror Synchronous for Business Continuity." },
        Policy { name: "StrictSync", uuid: id(6), ptype: PolicyType::Sync, sync_type: Some("strict_sync"), copy_all_source_snapshots: false, create_snapshot_on_source: true,
            rules: vec![("sm_created", 2)], transfer_schedule: None, comment: "Policy for SnapMirror Synchronous with zero RTO guarantee where client access will be disrupted on replication failure." },
    ]
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Selection {
    All,
    /// The target snapshot, plus older ones carrying one of these labels.
    Labels(Vec<String>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelState {
    Uninitialized,
    Snapmirrored,
    BrokenOff,
    Paused,
    InSync,
    OutOfSync,
}

impl RelState {
    pub fn as_str(self) -> &'static str {
        match self {
            RelState::Uninitialized => "uninitialized",
            RelState::Snapmirrored => "snapmirrored",
            RelState::BrokenOff => "broken_off",
            RelState::Paused => "paused",
            RelState::InSync => "in_sync",
            RelState::OutOfSync => "out_of_sync",
        }
    }

    pub fn parse(s: &str) -> SimResult<Self> {
        Ok(match s {
            "uninitialized" => RelState::Uninitialized,
            "snapmirrored" => RelState::Snapmirrored,
            "broken_off" => RelState::BrokenOff,
            "paused" => RelState::Paused,
            "in_sync" => RelState::InSync,
            "out_of_sync" => RelState::OutOfSync,
            _ => return Err(OntapError::new(ErrorKind::Invalid, 13303817, format!("Unknown value for the SnapMirror state: \"{s}\".")).with_target("state")),
        })
    }

    /// Mirrored: the destination is read-only and follows the source.
    pub fn is_mirrored(self) -> bool {
        matches!(self, RelState::Snapmirrored | RelState::InSync | RelState::OutOfSync)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferType {
    Initialize,
    Update,
    Resync,
}

impl TransferType {
    pub fn as_str(self) -> &'static str {
        match self {
            TransferType::Initialize => "initialize",
            TransferType::Update => "update",
            TransferType::Resync => "resync",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferState {
    Queued,
    Transferring,
    Success,
    Failed,
    Aborted,
}

impl TransferState {
    pub fn as_str(self) -> &'static str {
        match self {
            TransferState::Queued => "queued",
            TransferState::Transferring => "transferring",
            TransferState::Success => "success",
            TransferState::Failed => "failed",
            TransferState::Aborted => "aborted",
        }
    }
    pub fn is_active(self) -> bool {
        matches!(self, TransferState::Queued | TransferState::Transferring)
    }
}

#[derive(Clone, Debug)]
pub struct Transfer {
    pub uuid: String,
    pub ttype: TransferType,
    pub state: TransferState,
    pub bytes_transferred: u64,
    /// The snapshot being transferred (known once the source has chosen or created it).
    pub snapshot: Option<String>,
    pub source_snapshot: Option<String>,
    pub start_time: DateTime<Utc>,
    pub end_time: Option<DateTime<Utc>>,
    pub last_updated_time: DateTime<Utc>,
    pub error: Option<(u64, String)>,
}

/// One end of a relationship. The source end names the peer SVM as this cluster knows it.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub svm: Named,
    pub volume: Named,
    pub cluster: Named,
}

impl Endpoint {
    pub fn path(&self) -> String {
        format!("{}:{}", self.svm.name, self.volume.name)
    }
}

#[derive(Clone, Debug)]
pub struct Relationship {
    pub uuid: String,
    pub source: Endpoint,
    pub destination: Endpoint,
    pub policy: Named,
    pub policy_type: PolicyType,
    pub state: RelState,
    /// Why the last operation failed, if it did (cleared by the next success).
    pub unhealthy_reason: Option<(u64, String)>,
    /// The newest snapshot the destination holds complete: (name, source create time).
    pub exported_snapshot: Option<(String, DateTime<Utc>)>,
    pub last_transfer_type: Option<TransferType>,
    pub transfers: Vector<Transfer>,
    pub total_transfer_bytes: u64,
    pub total_transfer_duration_ms: u64,
    pub throttle: u64,
    pub transfer_schedule: Option<String>,
    pub create_time: DateTime<Utc>,
    pub seq: u64,
}

impl Relationship {
    pub fn current_transfer(&self) -> Option<&Transfer> {
        self.transfers.back().filter(|t| t.state.is_active())
    }
    pub fn last_transfer(&self) -> Option<&Transfer> {
        self.transfers.back()
    }
    pub fn transfer(&self, uuid: &str) -> Option<&Transfer> {
        self.transfers.iter().find(|t| t.uuid == uuid)
    }
    fn transfer_mut(&mut self, uuid: &str) -> Option<&mut Transfer> {
        self.transfers.iter_mut().find(|t| t.uuid == uuid)
    }
    pub fn healthy(&self) -> bool {
        self.unhealthy_reason.is_none()
    }
    /// The prefix of the snapshots this relationship creates on its source.
    pub fn sm_prefix(&self) -> String {
        format!("{SM_SNAPSHOT_PREFIX}{}_{}.", self.destination.svm.uuid, self.destination.volume.uuid)
    }
}

/// A snapshot as it crosses: everything but its tree.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct SnapshotMeta {
    pub name: String,
    pub version_uuid: String,
    pub create_time: DateTime<Utc>,
    pub comment: Option<String>,
    pub snapmirror_label: Option<String>,
}

impl SnapshotMeta {
    pub fn of(s: &Snapshot) -> Self {
        SnapshotMeta { name: s.name.clone(), version_uuid: s.version_uuid.clone(), create_time: s.create_time, comment: s.comment.clone(), snapmirror_label: s.snapmirror_label.clone() }
    }
}

/// What the destination asks the source for.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct StreamRequest {
    /// The common snapshot (by version uuid); none for a baseline.
    pub base: Option<String>,
    /// Transfer up to this existing snapshot (`source_snapshot`); otherwise create one
    /// named `<sm_prefix><time>` when the policy says so, or take the newest.
    pub source_snapshot: Option<String>,
    pub sm_prefix: String,
    pub create_snapshot: bool,
    pub selection: Selection,
    /// For a Sync relationship: after this transfer the source forwards every write.
    #[serde(default)]
    pub sync: Option<SyncTarget>,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SyncTarget {
    pub relationship: String,
    pub destination_volume: String,
    /// StrictSync: a write that cannot reach the destination fails.
    pub strict: bool,
}

/// The source's record of a Sync relationship: where writes go, and the tree the
/// destination is known to hold (the base of the next forwarded delta).
#[derive(Clone, Debug)]
pub struct SyncSource {
    pub target: SyncTarget,
    /// The calling cluster's peer record here.
    pub peer_uuid: String,
    pub base: Fs,
    pub in_sync: bool,
}

/// The source's half of a transfer: the snapshots to send, each with the tree before it.
pub struct StreamPlan {
    pub base: Option<Fs>,
    pub snapshots: Vec<(SnapshotMeta, Fs)>,
    /// Version uuids of every snapshot the source holds (MirrorAllSnapshots mirrors deletions).
    pub source_versions: Vec<String>,
}

impl StreamPlan {
    /// Encode the deltas (CPU work: call it outside the simulator's lock).
    pub fn encode(&self) -> Vec<u8> {
        let mut enc = delta::Encoder::default();
        let mut prev = self.base.as_ref();
        for (_, fs) in &self.snapshots {
            enc.put_delta(&delta::diff(prev, fs));
            prev = Some(fs);
        }
        enc.out
    }
}

/// What arrived at the destination, decoded.
pub struct Received {
    pub snapshots: Vec<(SnapshotMeta, FsDelta)>,
    pub source_versions: Vec<String>,
    pub bytes: u64,
}

fn no_common_snapshot() -> OntapError {
    OntapError::new(ErrorKind::Refused, 13303844, "Update operation failed: the source volume has no snapshot in common with the destination volume (the last common snapshot was deleted). Resynchronize or re-initialize the relationship.")
}

impl ClusterState {
    pub fn policies(&self) -> Vec<Policy> {
        builtin_policies(&self.uuid)
    }

    pub fn find_policy(&self, sel: &Selector) -> SimResult<Policy> {
        self.policies()
            .into_iter()
            .find(|p| sel.name.as_deref().is_none_or(|n| n == p.name) && sel.uuid.as_deref().is_none_or(|u| u == p.uuid))
            .ok_or_else(|| OntapError::new(ErrorKind::NotFound, 13303821, "Invalid SnapMirror policy name/UUID.").with_target("policy"))
    }

    pub fn relationship(&self, uuid: &str) -> SimResult<&Relationship> {
        self.relationships.get(uuid).ok_or_else(|| OntapError::new(ErrorKind::NotFound, 4, "entry doesn't exist: SnapMirror relationship").with_target("uuid"))
    }

    pub fn relationship_mut(&mut self, uuid: &str) -> SimResult<&mut Relationship> {
        self.relationships.get_mut(uuid).ok_or_else(|| OntapError::new(ErrorKind::NotFound, 4, "entry doesn't exist: SnapMirror relationship").with_target("uuid"))
    }

    /// The relationship whose destination is this local volume.
    pub fn relationship_of_destination(&self, volume_uuid: &str) -> Option<&Relationship> {
        self.relationships.values().find(|r| r.destination.volume.uuid == volume_uuid)
    }

    /// Record a new transfer as running; refused while another one runs.
    pub fn begin_transfer(&mut self, rel_uuid: &str, ttype: TransferType, source_snapshot: Option<String>, now: DateTime<Utc>) -> SimResult<String> {
        let uuid = self.new_uuid();
        let rel = self.relationship_mut(rel_uuid)?;
        if rel.current_transfer().is_some() {
            return Err(OntapError::new(ErrorKind::Refused, 13303830, "Transient state: a transfer is already in progress for this relationship."));
        }
        rel.transfers.push_back(Transfer {
            uuid: uuid.clone(),
            ttype,
            state: TransferState::Transferring,
            bytes_transferred: 0,
            snapshot: source_snapshot.clone(),
            source_snapshot,
            start_time: now,
            end_time: None,
            last_updated_time: now,
            error: None,
        });
        while rel.transfers.len() > TRANSFERS_KEPT {
            rel.transfers.pop_front();
        }
        Ok(uuid)
    }

    /// The request the destination sends for this relationship's next transfer.
    pub fn stream_request(&self, rel_uuid: &str, source_snapshot: Option<String>) -> SimResult<StreamRequest> {
        let rel = self.relationship(rel_uuid)?;
        let policy = self.find_policy(&Selector { name: Some(rel.policy.name.clone()), uuid: None })?;
        let volume = self.volume(&rel.destination.volume.uuid)?;
        let base = if rel.state == RelState::Uninitialized { None } else { volume.snapshots.back().map(|s| s.version_uuid.clone()) };
        Ok(StreamRequest {
            base,
            create_snapshot: source_snapshot.is_none() && policy.create_snapshot_on_source,
            source_snapshot,
            sm_prefix: rel.sm_prefix(),
            selection: policy.selection(),
            sync: (policy.ptype == PolicyType::Sync).then(|| SyncTarget {
                relationship: rel.uuid.clone(),
                destination_volume: rel.destination.volume.uuid.clone(),
                strict: policy.sync_type == Some("strict_sync"),
            }),
        })
    }

    /// The transfer ended without touching the destination.
    pub fn fail_transfer(&mut self, rel_uuid: &str, transfer_uuid: &str, error: &OntapError, bytes: u64, now: DateTime<Utc>) {
        let Ok(rel) = self.relationship_mut(rel_uuid) else { return };
        let Some(t) = rel.transfer_mut(transfer_uuid) else { return };
        if !t.state.is_active() {
            return;
        }
        t.state = TransferState::Failed;
        t.bytes_transferred = bytes;
        t.end_time = Some(now);
        t.last_updated_time = now;
        t.error = Some((error.code, error.message.clone()));
        rel.unhealthy_reason = Some((error.code, error.message.clone()));
        if rel.state == RelState::InSync {
            rel.state = RelState::OutOfSync;
        }
    }

    /// Abort a running transfer (break, delete): whatever it brings is thrown away.
    pub fn abort_transfer(&mut self, rel_uuid: &str, now: DateTime<Utc>) {
        let Ok(rel) = self.relationship_mut(rel_uuid) else { return };
        if let Some(t) = rel.transfers.back_mut().filter(|t| t.state.is_active()) {
            t.state = TransferState::Aborted;
            t.end_time = Some(now);
            t.last_updated_time = now;
            t.error = Some((13303844, "Transfer aborted.".into()));
        }
    }

    /// Apply a complete transfer in one step: the destination volume gets every snapshot
    /// sent, its active file system becomes the newest, and retention runs. Anything wrong
    /// (relationship broken meanwhile, transfer aborted, base gone) refuses the whole thing.
    pub fn commit_transfer(&mut self, rel_uuid: &str, transfer_uuid: &str, received: Received, now: DateTime<Utc>) -> SimResult<()> {
        let rel = self.relationship(rel_uuid)?.clone();
        let transfer = rel.transfer(transfer_uuid).cloned().ok_or_else(|| OntapError::internal("transfer record missing"))?;
        if !transfer.state.is_active() {
            return Err(OntapError::new(ErrorKind::Refused, 13303844, "Update operation failed: the transfer was aborted."));
        }
        let policy = self.find_policy(&Selector { name: Some(rel.policy.name.clone()), uuid: None })?;
        let volume = self.volume_mut(&rel.destination.volume.uuid)?;
        if volume.vtype != VolumeType::Dp {
            return Err(OntapError::new(ErrorKind::Refused, 6619546, "Destination must be a dp volume."));
        }
        if volume.state != VolumeState::Online {
            return Err(OntapError::new(ErrorKind::Refused, 917775, format!("Volume \"{}:{}\" is not online.", volume.svm.name, volume.name)));
        }
        // A DP volume's active file system is its newest snapshot; start from exactly that.
        if let Some(newest) = volume.snapshots.back() {
            if !volume.fs.inodes.ptr_eq(&newest.fs.inodes) {
                let name = newest.name.clone();
                volume.restore(&name)?;
            }
        }
        let mut last = None;
        for (meta, d) in &received.snapshots {
            let mut fs = volume.fs.clone();
            delta::apply(&mut fs, d, &mut volume.ledger);
            volume.fs = fs;
            if let Some(existing) = volume.snapshot_by_name(&meta.name) {
                if existing.version_uuid == meta.version_uuid {
                    continue;
                }
                return Err(OntapError::new(ErrorKind::Refused, 13303844, format!("Update operation failed: the destination already has a different snapshot named \"{}\".", meta.name)));
            }
            let uuid = uuid_like(&meta.version_uuid, &rel.destination.volume.uuid).to_string();
            volume.add_replica_snapshot(uuid, meta)?;
            last = Some(meta.clone());
        }
        // Retention on the destination.
        let sm_prefix = rel.sm_prefix();
        let newest = volume.snapshots.back().map(|s| s.version_uuid.clone());
        let doomed: Vec<String> = if policy.copy_all_source_snapshots {
            // A mirror of every snapshot: what the source deleted goes here too.
            volume.snapshots.iter().filter(|s| Some(&s.version_uuid) != newest.as_ref() && !received.source_versions.contains(&s.version_uuid)).map(|s| s.uuid.clone()).collect()
        } else {
            let mut doomed = Vec::new();
            let sm: Vec<&Snapshot> = volume.snapshots.iter().filter(|s| s.name.starts_with(&sm_prefix) && Some(&s.version_uuid) != newest.as_ref()).collect();
            doomed.extend(sm.iter().map(|s| s.uuid.clone()));
            for (label, keep) in &policy.rules {
                let labelled: Vec<&Snapshot> = volume.snapshots.iter().filter(|s| s.snapmirror_label.as_deref() == Some(label) && Some(&s.version_uuid) != newest.as_ref()).collect();
                let excess = labelled.len().saturating_sub(*keep as usize);
                doomed.extend(labelled.iter().take(excess).map(|s| s.uuid.clone()));
            }
            doomed
        };
        for uuid in doomed {
            if volume.snapshot_by_uuid(&uuid).is_some_and(|s| s.clone_uuids.is_empty()) {
                volume.remove_replica_snapshot(&uuid);
            }
        }
        let rel = self.relationship_mut(rel_uuid)?;
        let t = rel.transfer_mut(transfer_uuid).expect("checked above");
        t.state = TransferState::Success;
        t.bytes_transferred = received.bytes;
        t.end_time = Some(now);
        t.last_updated_time = now;
        if let Some(meta) = &last {
            t.snapshot = Some(meta.name.clone());
        }
        let duration = (now - t.start_time).num_milliseconds().max(0) as u64;
        rel.total_transfer_bytes += received.bytes;
        rel.total_transfer_duration_ms += duration;
        rel.last_transfer_type = Some(transfer.ttype);
        rel.unhealthy_reason = None;
        if let Some(meta) = last {
            rel.exported_snapshot = Some((meta.name, meta.create_time));
        }
        if matches!(rel.state, RelState::Uninitialized | RelState::BrokenOff | RelState::OutOfSync) {
            rel.state = if rel.policy_type == PolicyType::Sync { RelState::InSync } else { RelState::Snapmirrored };
        }
        Ok(())
    }

    /// Break: the destination becomes read-write at its newest complete snapshot (or at
    /// `restore_to`, a SnapRestore inside the break). Needs nothing from the source.
    pub fn break_relationship(&mut self, rel_uuid: &str, restore_to: Option<&str>, now: DateTime<Utc>) -> SimResult<()> {
        let rel = self.relationship(rel_uuid)?.clone();
        match rel.state {
            RelState::Snapmirrored | RelState::Paused | RelState::InSync | RelState::OutOfSync => {}
            RelState::BrokenOff if restore_to.is_none() => return Ok(()),
            RelState::BrokenOff => {}
            RelState::Uninitialized => return Err(OntapError::new(ErrorKind::Refused, 13303818, "Invalid state transition requested: an uninitialized relationship cannot be broken off.").with_target("state")),
        }
        self.abort_transfer(rel_uuid, now);
        let volume = self.volume_mut(&rel.destination.volume.uuid)?;
        // An async destination serves its newest complete snapshot; a Sync one keeps every
        // write it acknowledged since (that is the point of Sync: no loss).
        if let Some(newest) = volume.snapshots.back().filter(|_| rel.policy_type == PolicyType::Async) {
            if !volume.fs.inodes.ptr_eq(&newest.fs.inodes) {
                let name = newest.name.clone();
                volume.restore(&name)?;
            }
        }
        if let Some(name) = restore_to {
            if volume.snapshot_by_name(name).is_none() {
                return Err(OntapError::new(ErrorKind::NotFound, 13303808, format!("Transition to broken_off state failed: snapshot \"{name}\" does not exist on the destination.")).with_target("restore_to_snapshot"));
            }
            volume.restore(name)?;
        }
        volume.vtype = VolumeType::Rw;
        let rel = self.relationship_mut(rel_uuid)?;
        rel.state = RelState::BrokenOff;
        Ok(())
    }

    /// Apply a write forwarded by a Sync source: only while in sync (otherwise the source
    /// must catch up by a transfer first).
    pub fn apply_sync_write(&mut self, volume_uuid: &str, source_cluster: &str, d: &FsDelta) -> SimResult<()> {
        let rel = self.relationship_of_destination(volume_uuid).cloned().ok_or_else(|| OntapError::not_found("SnapMirror relationship of this volume"))?;
        if rel.source.cluster.uuid != source_cluster || rel.state != RelState::InSync || rel.current_transfer().is_some() {
            return Err(OntapError::new(ErrorKind::Refused, 13303829, format!("Invalid state: the relationship is \"{}\", not in sync.", rel.state.as_str())));
        }
        let volume = self.volume_mut(volume_uuid)?;
        let mut fs = volume.fs.clone();
        delta::apply(&mut fs, d, &mut volume.ledger);
        volume.fs = fs;
        Ok(())
    }

    /// Resync's first half: revert the destination to the newest snapshot the source still
    /// holds (everything written or received since is discarded) and make it DP again.
    /// Returns the common snapshot's name.
    pub fn revert_to_common(&mut self, volume_uuid: &str, source_versions: &[String]) -> SimResult<String> {
        let volume = self.volume_mut(volume_uuid)?;
        let common = volume.snapshots.iter().rev().find(|s| source_versions.contains(&s.version_uuid)).map(|s| s.name.clone()).ok_or_else(no_common_snapshot)?;
        volume.restore(&common)?;
        volume.vtype = VolumeType::Dp;
        Ok(common)
    }

    /// The source's half: make the update snapshot if asked, pick the snapshots to send.
    pub fn stream_plan(&mut self, volume_uuid: &str, req: &StreamRequest, peer_uuid: &str, now: DateTime<Utc>) -> SimResult<StreamPlan> {
        let snap_uuid = self.new_uuid();
        let volume = self.volume_mut(volume_uuid)?;
        if volume.state != VolumeState::Online {
            return Err(OntapError::new(ErrorKind::Refused, 917775, format!("Source volume \"{}:{}\" is not online.", volume.svm.name, volume.name)));
        }
        let base_index = match &req.base {
            None => None,
            Some(v) => Some(volume.snapshots.iter().position(|s| &s.version_uuid == v).ok_or_else(no_common_snapshot)?),
        };
        let target_index = if let Some(name) = &req.source_snapshot {
            volume.snapshots.iter().position(|s| &s.name == name).ok_or_else(|| {
                OntapError::new(ErrorKind::NotFound, 13303844, format!("Update operation failed: snapshot \"{name}\" does not exist on the source volume.")).with_target("source_snapshot")
            })?
        } else if req.create_snapshot {
            if volume.vtype != VolumeType::Rw {
                return Err(OntapError::new(ErrorKind::Refused, 13303844, "Update operation failed: the source volume is not read-write."));
            }
            let stamp = now.format("%Y-%m-%d_%H%M%S").to_string();
            let mut name = format!("{}{stamp}", req.sm_prefix);
            let mut n = 1;
            while volume.snapshot_by_name(&name).is_some() {
                name = format!("{}{stamp}.{n}", req.sm_prefix);
                n += 1;
            }
            volume.create_snapshot(snap_uuid, &name, now)?;
            volume.snapshots.len() - 1
        } else {
            volume.snapshots.len().checked_sub(1).ok_or_else(|| OntapError::new(ErrorKind::Refused, 13303812, "Initialize operation failed: the source volume has no snapshot to transfer."))?
        };
        if base_index.is_some_and(|b| b > target_index) {
            return Err(OntapError::new(ErrorKind::Refused, 13303844, "Update operation failed: the requested snapshot is older than the destination's newest snapshot.").with_target("source_snapshot"));
        }
        let first = base_index.map_or(0, |b| b + 1);
        let chosen: Vec<&Snapshot> = (first..=target_index)
            .filter(|&i| {
                i == target_index
                    || match &req.selection {
                        Selection::All => true,
                        Selection::Labels(labels) => volume.snapshots[i].snapmirror_label.as_ref().is_some_and(|l| labels.contains(l)),
                    }
            })
            .map(|i| &volume.snapshots[i])
            .collect();
        let plan = StreamPlan {
            base: base_index.map(|b| volume.snapshots[b].fs.clone()),
            snapshots: chosen.iter().map(|s| (SnapshotMeta::of(s), s.fs.clone())).collect(),
            source_versions: volume.snapshots.iter().map(|s| s.version_uuid.clone()).collect(),
        };
        // The update snapshots of earlier transfers are no longer needed once a newer one is
        // the base: the source keeps only the common one and the one being sent.
        let keep: Vec<String> = base_index.map(|b| volume.snapshots[b].uuid.clone()).into_iter().chain([volume.snapshots[target_index].uuid.clone()]).collect();
        let stale: Vec<String> = volume.snapshots.iter().filter(|s| s.name.starts_with(&req.sm_prefix) && !keep.contains(&s.uuid) && s.clone_uuids.is_empty()).map(|s| s.uuid.clone()).collect();
        if base_index.is_some() {
            for uuid in stale {
                let _ = volume.delete_snapshot(&uuid);
            }
        }
        if let (Some(target), Some((_, fs))) = (&req.sync, plan.snapshots.last()) {
            let record = SyncSource { target: target.clone(), peer_uuid: peer_uuid.to_string(), base: fs.clone(), in_sync: true };
            self.sync_sources.insert(volume_uuid.to_string(), record);
        }
        Ok(plan)
    }
}

/// A destination snapshot's uuid: derived from the source's version uuid and the volume, so
/// it is stable and distinct per copy.
fn uuid_like(version: &str, volume: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in version.bytes().chain(volume.bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    let mut g = h ^ 0x9E37_79B9_7F4A_7C15;
    g = (g ^ (g >> 31)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let hex = format!("{h:016x}{g:016x}");
    format!("{}-{}-4{}-8{}-{}", &hex[0..8], &hex[8..12], &hex[13..16], &hex[17..20], &hex[20..32])
}
