//! Disaster recovery nouns: a DR plan per app and the record of every failover, failback
//! and drill. Plain data, serialisable for the catalog; the workflows are in
//! `workflow/dr.rs`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::ConsistencyPoint;

/// SnapMirror's default asynchronous policy (ONTAP 9.x): transfers on demand or on a schedule.
pub const POLICY_ASYNC_DEFAULT: &str = "Asynchronous";

/// One source volume and its mirror on site B.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumePair {
    /// The app's volume on site A (in the app's SVM).
    pub source: String,
    /// Its `dp` mirror on site B.
    pub destination: String,
    /// The SnapMirror relationship on site B, once created.
    #[serde(default)]
    pub relationship_uuid: Option<String>,
    /// The reverse relationship (B -> A) on site A while failing back.
    #[serde(default)]
    pub reverse_relationship_uuid: Option<String>,
}

/// Where the app runs now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Site {
    A,
    B,
}

/// Where a DR plan stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DrState {
    /// Recorded; relationships not (all) initialized yet.
    Planned,
    /// A -> B mirrors run; the app runs on A.
    Mirrored,
    /// The mirrors are broken; the app runs on B.
    FailedOver,
    /// B -> A mirrors run (reverse resync); the app still runs on B.
    ReverseMirrored,
}

/// Per app: which volumes replicate from site A to which SVM on site B, how, and how often.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrPlan {
    pub app: String,
    /// Cluster names as the configuration names them (site A, site B).
    pub source_cluster: String,
    pub destination_cluster: String,
    pub source_svm: String,
    pub destination_svm: String,
    pub volumes: Vec<VolumePair>,
    /// A SnapMirror policy name (`Asynchronous`, `MirrorAllSnapshots`, `Sync`).
    pub policy: String,
    /// How often app-consistent backups (and so updates) are taken: the RPO is bounded by
    /// this plus the time one transfer takes.
    #[serde(with = "option_duration_ms", default)]
    pub schedule: Option<Duration>,
    pub state: DrState,
    pub active_site: Site,
    pub updated_at: DateTime<Utc>,
}

impl DrPlan {
    /// The destination volume names, in the app's volume order.
    pub fn destination_volumes(&self) -> Vec<String> {
        self.volumes.iter().map(|p| p.destination.clone()).collect()
    }
    pub fn source_volumes(&self) -> Vec<String> {
        self.volumes.iter().map(|p| p.source.clone()).collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailoverKind {
    /// Site A answers: stop, final update, break, start on B. No data lost.
    Planned,
    /// Site A is gone: break on B, revert to the newest complete app-consistent backup.
    Unplanned,
    /// Back to A: reverse resync, planned switch back, resync A -> B.
    Failback,
    /// FlexClone on B, start the app on the clone, verify, delete the clone.
    Drill,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailoverState {
    Started,
    /// The app on the old side was stopped (planned / failback).
    SourceStopped,
    /// The mirrors were broken: the new side is writable.
    Broken,
    /// The new side holds the state it will start from.
    DataReady,
    Complete,
    Failed,
}

/// Snapshots and bytes a resync would discard on its destination.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Divergence {
    /// Per volume: snapshots newer than the last common snapshot.
    pub snapshots: Vec<(String, String)>,
    /// Bytes written since the last common snapshot, summed over the volumes; `None` when
    /// the array did not say for some volume.
    pub bytes: Option<u64>,
    /// The last common snapshot per volume (what the destination reverts to).
    pub common_snapshots: Vec<(String, String)>,
}

impl Divergence {
    /// Nothing would be lost (no newer snapshot, no byte written; unknown counts as lost).
    pub fn is_empty(&self) -> bool {
        self.snapshots.is_empty() && self.bytes == Some(0)
    }
}

/// One failover, failback or drill, with its measured RPO and RTO.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverRecord {
    pub id: String,
    pub app: String,
    pub kind: FailoverKind,
    pub state: FailoverState,
    pub from_site: Site,
    pub to_site: Site,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The backup whose state the new side restored (unplanned, drill), if any.
    pub restored_backup_id: Option<String>,
    /// The snapshot the new side started from.
    pub restored_snapshot: Option<String>,
    /// When the restored state was the app's current state (lock granted for a backup,
    /// the stop for a planned failover).
    pub restored_state_at: Option<DateTime<Utc>>,
    pub expected_point: Option<ConsistencyPoint>,
    pub recovered_point: Option<ConsistencyPoint>,
    /// Age of the restored state at the failover's start (0 when nothing was lost).
    #[serde(with = "option_duration_ms", default)]
    pub rpo: Option<Duration>,
    /// Failover start to app verified on the new side.
    #[serde(with = "option_duration_ms", default)]
    pub rto: Option<Duration>,
    /// Bytes the final update (or the reverse resync) moved.
    pub bytes_transferred: u64,
    pub verified: bool,
    /// What a resync discarded (failback), as reported before it was confirmed.
    #[serde(default)]
    pub divergence: Option<Divergence>,
    pub error: Option<String>,
}

mod option_duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_secs_f64() * 1000.0)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1000.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divergence_is_empty_only_when_known_to_be_nothing() {
        assert!(Divergence { bytes: Some(0), ..Default::default() }.is_empty());
        assert!(!Divergence { bytes: None, ..Default::default() }.is_empty(), "unknown bytes may be lost");
        assert!(!Divergence { bytes: Some(4096), ..Default::default() }.is_empty());
        assert!(!Divergence { bytes: Some(0), snapshots: vec![("v".into(), "s".into())], ..Default::default() }.is_empty());
    }
}
