//! The `Storage` seam: what the orchestrator needs from an array, in its own terms.
//!
//! One implementation, `ontap-client`, speaks ONTAP REST to a real array or to `ontap-sim`.
//! Nothing here knows HTTP or ONTAP JSON; errors are classified by what the orchestrator
//! must do next (retry, give up, or treat the outcome as unknown).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// A volume as the orchestrator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    pub uuid: String,
    pub name: String,
    pub svm: String,
    pub online: bool,
    /// Read-only volumes (e.g. SnapMirror destinations) cannot be snapshotted or restored.
    pub writable: bool,
    pub n_snapshots: u32,
    pub size_bytes: u64,
    pub used_bytes: u64,
    pub junction_path: Option<String>,
    /// Set for a FlexClone that has not been split: the parent volume's uuid.
    pub clone_parent_uuid: Option<String>,
}

/// A snapshot on the array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub uuid: String,
    pub name: String,
    pub volume_uuid: String,
    /// The array's own clock: the consistency proof compares it with the lock window.
    pub create_time: DateTime<Utc>,
    /// Owners that keep it from being deleted (e.g. `volume_clone`).
    pub owners: Vec<String>,
}

/// A consistency group, the array object that snapshots several volumes at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsistencyGroupInfo {
    pub uuid: String,
    pub name: String,
    pub volume_uuids: Vec<String>,
}

/// Why a storage call failed, in the terms the workflows act on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// The call did not happen (connection refused before sending, 503, throttled): retry.
    #[error("storage temporarily unavailable: {message}")]
    Retryable { message: String },
    /// The array refused the call with an ONTAP error; retrying gives the same answer.
    #[error("ONTAP error {code}: {message}")]
    Refused { code: u64, message: String, target: Option<String> },
    /// The object named does not exist.
    #[error("not found: {what}")]
    NotFound { what: String },
    /// The call may or may not have taken effect (timeout, connection lost after sending,
    /// a job still running at the deadline). Callers must look before acting again.
    #[error("outcome unknown: {message}")]
    Indeterminate { message: String },
    /// Credentials or TLS trust failed: no retry helps until the configuration changes.
    #[error("cannot authenticate to the array: {message}")]
    Auth { message: String },
}

impl StorageError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, StorageError::Retryable { .. })
    }
    pub fn is_indeterminate(&self) -> bool {
        matches!(self, StorageError::Indeterminate { .. })
    }
    /// The ONTAP error code, when the array gave one.
    pub fn ontap_code(&self) -> Option<u64> {
        match self {
            StorageError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

pub type StorageResult<T> = Result<T, StorageError>;

/// ONTAP error codes the workflows branch on.
pub mod codes {
    pub const DUPLICATE_SNAPSHOT_NAME: u64 = 525059;
    pub const TOO_MANY_SNAPSHOTS: u64 = 525062;
    pub const SNAPSHOT_HAS_OWNER: u64 = 1638543;
    pub const VOLUME_HAS_CLONES: u64 = 524615;
    pub const DUPLICATE_VOLUME_NAME: u64 = 917526;
}

/// The array, as the orchestrator uses it. Implementations retry what is safe to retry
/// within their own named bounds and await ONTAP jobs inside; what they return is final.
#[async_trait]
pub trait Storage: Send + Sync {
    /// Open (or re-use) the connection so that calls inside a freeze need no set-up.
    async fn warm_up(&self) -> StorageResult<()>;

    /// Volumes of `svm` by name, in the order asked; a missing name is `NotFound`.
    async fn volumes_by_name(&self, svm: &str, names: &[String]) -> StorageResult<Vec<VolumeInfo>>;
    async fn volume(&self, uuid: &str) -> StorageResult<VolumeInfo>;
    /// Volumes (of any SVM) mounted at `junction_path`, matched exactly: how an NFS export
    /// (a Kubernetes NFS PV's `path`) is traced back to its volume.
    async fn volumes_by_junction_path(&self, junction_path: &str) -> StorageResult<Vec<VolumeInfo>> {
        Err(StorageError::Refused { code: 0, message: format!("this storage cannot look volumes up by junction path ({junction_path})"), target: None })
    }

    /// Create a snapshot, waiting at most `deadline` for the array (ONTAP `return_timeout`,
    /// no job polling): a call still running at the deadline is `Indeterminate`.
    async fn create_snapshot(
        &self,
        volume_uuid: &str,
        name: &str,
        deadline: Duration,
    ) -> StorageResult<SnapshotInfo>;
    /// Take a snapshot inside a freeze: as `create_snapshot`, but done as soon as the array
    /// reports it taken, without reading it back (the caller reads it back after the thaw).
    async fn take_snapshot(&self, volume_uuid: &str, name: &str, deadline: Duration) -> StorageResult<()> {
        self.create_snapshot(volume_uuid, name, deadline).await.map(|_| ())
    }
    async fn snapshot_by_name(&self, volume_uuid: &str, name: &str) -> StorageResult<Option<SnapshotInfo>>;
    async fn snapshots(&self, volume_uuid: &str) -> StorageResult<Vec<SnapshotInfo>>;
    /// Deleting a snapshot that is already gone succeeds (the caller wanted it gone).
    async fn delete_snapshot(&self, volume_uuid: &str, snapshot_uuid: &str) -> StorageResult<()>;

    /// Find or create the consistency group `name` holding exactly these volumes.
    /// Done before a freeze, never inside one.
    async fn ensure_consistency_group(
        &self,
        svm: &str,
        name: &str,
        volume_uuids: &[String],
    ) -> StorageResult<ConsistencyGroupInfo>;
    /// One snapshot instant across the group's volumes; returns each member's snapshot.
    async fn create_cg_snapshot(
        &self,
        cg_uuid: &str,
        name: &str,
        deadline: Duration,
    ) -> StorageResult<Vec<SnapshotInfo>>;

    /// As `create_cg_snapshot`, without reading the member snapshots back (see `take_snapshot`).
    async fn take_cg_snapshot(&self, cg_uuid: &str, name: &str, deadline: Duration) -> StorageResult<()> {
        self.create_cg_snapshot(cg_uuid, name, deadline).await.map(|_| ())
    }

    /// SnapRestore: the volume's active file system becomes the snapshot; newer snapshots go.
    async fn restore_volume(&self, volume_uuid: &str, snapshot_name: &str) -> StorageResult<()>;
    /// Restore every volume of a consistency group to its same-named snapshot, atomically.
    async fn restore_consistency_group(&self, cg_uuid: &str, snapshot_name: &str) -> StorageResult<()>;
    /// FlexClone a new volume from a snapshot.
    async fn clone_volume(
        &self,
        parent_volume_uuid: &str,
        snapshot_name: &str,
        clone_name: &str,
        junction_path: Option<&str>,
    ) -> StorageResult<VolumeInfo>;
    async fn split_clone(&self, volume_uuid: &str) -> StorageResult<()>;
    /// Deleting a volume that is already gone succeeds.
    async fn delete_volume(&self, volume_uuid: &str) -> StorageResult<()>;
}
