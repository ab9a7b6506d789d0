//! The orchestrator's nouns: apps, backups, restores, policies, and the evidence that makes a
//! backup application-consistent. Plain data, serialisable for the catalog.

use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

/// Default bound on how long an app may stay quiesced.
pub const FREEZE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppKind {
    /// The simulated database of the harness.
    Simdb,
    Mysql,
    Postgres,
    ExecHooks,
}

/// An application to protect: where its data lives and how long it may be frozen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppSpec {
    pub name: String,
    pub kind: AppKind,
    pub svm: String,
    /// Volume names in `svm`. More than one needs a consistency-group snapshot.
    pub volumes: Vec<String>,
    #[serde(with = "duration_ms")]
    pub freeze_timeout: Duration,
}

impl AppSpec {
    /// Name of the ONTAP consistency group that snapshots this app's volumes together.
    pub fn consistency_group_name(&self) -> String {
        format!("stasis_{}", sanitize(&self.name))
    }
}

/// ONTAP object names allow letters, digits and `_`: map anything else to `_`.
pub fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

/// Where the application stood when it was quiesced: a GTID set, a WAL position, or the
/// simulated database's last committed transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyPoint(pub String);

impl std::fmt::Display for ConsistencyPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupState {
    Pending,
    Quiesced,
    Snapshotted,
    Complete,
    Failed,
}

impl BackupState {
    pub fn is_final(self) -> bool {
        matches!(self, BackupState::Complete | BackupState::Failed)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    /// Quiesced, snapshotted inside the lock window, point read under the lock: evidence holds.
    Application,
    /// A point-in-time image without proof of quiesce: restorable, with journal replay.
    Crash,
}

/// One volume snapshot that belongs to a backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRef {
    pub volume_uuid: String,
    pub volume_name: String,
    pub snapshot_uuid: String,
    /// The array's clock at creation (ONTAP reports whole seconds).
    pub create_time: DateTime<Utc>,
}

/// What makes a backup application-consistent, recorded as it happens.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    pub lock_requested: Option<DateTime<Utc>>,
    pub lock_granted: Option<DateTime<Utc>>,
    pub lock_released: Option<DateTime<Utc>>,
    pub consistency_point: Option<ConsistencyPoint>,
    /// Why the thaw did not find the lock still held (the session was lost, the app dropped
    /// the freeze itself): then nobody knows whether the lock covered the snapshot.
    #[serde(default)]
    pub thaw_error: Option<String>,
}

impl Evidence {
    /// The evidence holds when the lock was granted and released in order, a consistency
    /// point was read under it, and every snapshot was created inside the lock window. The
    /// array's clock has whole seconds, so the window is widened to whole seconds; the
    /// orchestrator's and the array's clocks are assumed synchronised (NTP) to well under that.
    pub fn holds(&self, snapshots: &[SnapshotRef]) -> Result<(), String> {
        let (Some(requested), Some(granted), Some(released)) = (self.lock_requested, self.lock_granted, self.lock_released) else {
            return Err("the lock was not requested, granted and released".into());
        };
        if !(requested <= granted && granted <= released) {
            return Err(format!("lock times out of order: requested {requested}, granted {granted}, released {released}"));
        }
        if self.consistency_point.is_none() {
            return Err("no consistency point was read under the lock".into());
        }
        if let Some(why) = &self.thaw_error {
            return Err(format!("the lock may have been lost before the thaw: {why}"));
        }
        if snapshots.is_empty() {
            return Err("no snapshot".into());
        }
        let second = TimeDelta::seconds(1);
        let from = granted.duration_trunc(second).unwrap_or(granted);
        let to = released.duration_trunc(second).map(|t| if t == released { t } else { t + second }).unwrap_or(released);
        for s in snapshots {
            if s.create_time < from || s.create_time > to {
                return Err(format!("snapshot of {} was created at {} outside the lock window [{from}, {to}]", s.volume_name, s.create_time));
            }
        }
        Ok(())
    }

    pub fn freeze_window(&self) -> Option<Duration> {
        Some((self.lock_released? - self.lock_granted?).to_std().unwrap_or_default())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRecord {
    pub id: String,
    pub app: String,
    /// Deterministic per backup, so a retry after a crash adopts what exists.
    pub snapshot_name: String,
    pub state: BackupState,
    pub consistency: Option<Consistency>,
    pub evidence: Evidence,
    pub snapshots: Vec<SnapshotRef>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    /// A restore of this backup was verified good.
    pub verified: bool,
    /// Retention expired it: its snapshots are being (or were) deleted.
    pub expired: bool,
}

impl BackupRecord {
    pub fn snapshot_name_for(id: &str) -> String {
        format!("stasis_{}", sanitize(id))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum RestoreMode {
    /// SnapRestore the app's own volumes: everything newer is lost.
    InPlace,
    /// FlexClone each volume; a second instance runs on the clones.
    Clone { clone_names: Vec<String> },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestoreState {
    Pending,
    AppStopped,
    StorageRestored,
    Complete,
    Failed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreRecord {
    pub id: String,
    pub backup_id: String,
    pub app: String,
    pub mode: RestoreMode,
    pub state: RestoreState,
    /// Volumes created by a clone restore (uuid, name).
    pub clone_volumes: Vec<(String, String)>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub recovered_point: Option<ConsistencyPoint>,
    pub needed_crash_recovery: Option<bool>,
    pub error: Option<String>,
}

/// An SLA policy: when to back up and how long to keep backups.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub name: String,
    pub schedule: Schedule,
    /// Keep at most this many complete backups per app (newest first).
    pub keep_last: Option<u32>,
    /// Expire complete backups older than this.
    #[serde(with = "option_duration_s", default)]
    pub max_age: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Schedule {
    Interval {
        #[serde(with = "duration_ms")]
        every: Duration,
    },
    /// A cron expression (minute hour day-of-month month day-of-week).
    Cron { expr: String },
}

mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

mod option_duration_s {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs()),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn snap(t: &str) -> SnapshotRef {
        SnapshotRef { volume_uuid: "u".into(), volume_name: "v".into(), snapshot_uuid: "s".into(), create_time: at(t) }
    }

    fn evidence() -> Evidence {
        Evidence {
            lock_requested: Some(at("2026-01-01T00:00:10.100Z")),
            lock_granted: Some(at("2026-01-01T00:00:10.200Z")),
            lock_released: Some(at("2026-01-01T00:00:10.300Z")),
            consistency_point: Some(ConsistencyPoint("tx=5".into())),
            thaw_error: None,
        }
    }

    #[test]
    fn evidence_holds_inside_the_widened_window() {
        assert_eq!(evidence().holds(&[snap("2026-01-01T00:00:10Z")]), Ok(()));
        assert_eq!(evidence().holds(&[snap("2026-01-01T00:00:11Z")]), Ok(()));
        assert!(evidence().holds(&[snap("2026-01-01T00:00:12Z")]).is_err());
        assert!(evidence().holds(&[snap("2026-01-01T00:00:09Z")]).is_err());
    }

    #[test]
    fn evidence_needs_every_part() {
        let mut e = evidence();
        e.consistency_point = None;
        assert!(e.holds(&[snap("2026-01-01T00:00:10Z")]).is_err());
        let mut e = evidence();
        e.lock_released = None;
        assert!(e.holds(&[snap("2026-01-01T00:00:10Z")]).is_err());
        assert!(evidence().holds(&[]).is_err());
        let mut e = evidence();
        e.thaw_error = Some("session lost".into());
        assert!(e.holds(&[snap("2026-01-01T00:00:10Z")]).is_err(), "a lost session voids the evidence");
        let mut e = evidence();
        e.lock_granted = Some(at("2026-01-01T00:00:10.400Z"));
        assert!(e.holds(&[snap("2026-01-01T00:00:10Z")]).is_err(), "granted after released");
    }
}
