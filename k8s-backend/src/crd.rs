//! The operator's custom resources, group `stasis.io`, version `v1alpha1`: `BackupPolicy`,
//! `Backup`, `Restore` and `DrPlan`, derived with kube's `CustomResource` (schemas from
//! schemars). Each has a status subresource: users write `spec`, only the operator writes
//! `status`. `deploy/crds.yaml` is [`crds_yaml`]'s output (a test keeps them equal).
//!
//! Durations are strings with a unit (`90s`, `15m`, `12h`, `30d`); times are RFC 3339.

// kube's derive repeats `type_` once per printcolumn; clippy reads that as a duplicate.
#![allow(clippy::duplicated_attributes)]

use std::time::Duration;

use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "stasis.io";
pub const VERSION: &str = "v1alpha1";

/// An application: a Deployment or StatefulSet with a database on ONTAP volumes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppRef {
    /// The workload's namespace (default: the namespace of the resource naming it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The Deployment or StatefulSet.
    pub name: String,
}

impl AppRef {
    /// `namespace/name`, the namespace defaulting to `default_namespace`.
    pub fn qualified(&self, default_namespace: &str) -> (String, String) {
        (self.namespace.clone().unwrap_or_else(|| default_namespace.to_string()), self.name.clone())
    }
}

/// One status condition, as Kubernetes' own `metav1.Condition`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready` for every kind here.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// CamelCase reason, e.g. `BackupFailed`, `RestoreUnavailable`.
    pub reason: String,
    pub message: String,
    pub last_transition_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Where a `Backup`, `Restore` stands. Only `Succeeded` and `Failed` are final.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    #[default]
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl Phase {
    pub fn is_final(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

// ---------------------------------------------------------------- BackupPolicy

/// Backups on a schedule for the apps a selector picks, with retention.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "stasis.io",
    version = "v1alpha1",
    kind = "BackupPolicy",
    namespaced,
    status = "BackupPolicyStatus",
    shortname = "bpol",
    category = "stasis",
    doc = "Application-consistent backups on a schedule, with retention",
    printcolumn(name = "Schedule", type_ = "string", json_path = ".spec.schedule"),
    printcolumn(name = "Last", type_ = "string", json_path = ".status.lastScheduleTime"),
    printcolumn(name = "Next", type_ = "string", json_path = ".status.nextScheduleTime")
)]
#[serde(rename_all = "camelCase")]
pub struct BackupPolicySpec {
    /// A cron expression (`minute hour day-of-month month day-of-week`, UTC) or `@every
    /// <duration>` (e.g. `@every 15m`).
    pub schedule: String,
    #[serde(default)]
    pub retention: Retention,
    pub selector: AppSelector,
    /// How long an app may stay quiesced per backup (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze_timeout: Option<String>,
    /// No new backups while set (retention still applies).
    #[serde(default)]
    pub suspend: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// Keep at most this many succeeded backups per app (newest first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    /// Delete succeeded backups older than this (e.g. `30d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
}

/// Which apps a policy protects: the ones named, plus every database app found in the
/// namespaces listed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppSelector {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<AppRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupPolicyStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<String>,
    /// The Backup objects created at the last scheduled time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_backups: Vec<String>,
    /// Backups retention deleted at the last pass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expired: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

// ---------------------------------------------------------------- Backup

/// One application-consistent backup: quiesce, ONTAP snapshot(s), thaw, verify.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "stasis.io",
    version = "v1alpha1",
    kind = "Backup",
    namespaced,
    status = "BackupStatus",
    shortname = "sbk",
    category = "stasis",
    doc = "One application-consistent backup of an app's ONTAP volumes",
    printcolumn(name = "App", type_ = "string", json_path = ".spec.app.name"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Consistency", type_ = "string", json_path = ".status.consistency"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    pub app: AppRef,
    /// The BackupPolicy that created it (its retention applies), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// How long the app may stay quiesced (default: the policy's, else 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze_timeout: Option<String>,
}

/// One volume's snapshot of a backup, as the array reported it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotStatus {
    pub svm: String,
    pub volume: String,
    pub volume_uuid: String,
    pub snapshot: String,
    pub snapshot_uuid: String,
    pub create_time: String,
}

/// When the app was frozen (lock granted) and thawed (lock released).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FreezeWindow {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_requested: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_granted: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_released: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    #[serde(default)]
    pub phase: Phase,
    /// The catalog id, fixed before the workflow starts (derived from the object's uid), so
    /// a new leader finds what an interrupted one left behind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    /// The snapshot name on every volume (`stasis_<backupId>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub svm: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<SnapshotStatus>,
    /// `application` (quiesced, evidence holds) or `crash`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<String>,
    /// Where the app stood under the lock (e.g. a GTID set or an LSN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency_point: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze_window: Option<FreezeWindow>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

// ---------------------------------------------------------------- Restore

/// A restore of a succeeded Backup, in place or into a new namespace.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "stasis.io",
    version = "v1alpha1",
    kind = "Restore",
    namespaced,
    status = "RestoreStatus",
    shortname = "srs",
    category = "stasis",
    doc = "A restore of a Backup, in place (confirmed) or into a new namespace",
    printcolumn(name = "Backup", type_ = "string", json_path = ".spec.backup"),
    printcolumn(name = "Target", type_ = "string", json_path = ".spec.target.mode"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSpec {
    /// The Backup (in this namespace) to restore.
    pub backup: String,
    pub target: RestoreTarget,
    /// Required for `InPlace`: the app's current data is replaced and newer backups of it
    /// are lost (ONTAP deletes snapshots newer than the one restored).
    #[serde(default)]
    pub confirm: bool,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RestoreMode {
    InPlace,
    NewNamespace,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreTarget {
    pub mode: RestoreMode,
    /// For `NewNamespace`: where the copy goes (must not hold same-named objects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStatus {
    #[serde(default)]
    pub phase: Phase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_namespace: Option<String>,
    /// Where the restored app stands; must equal the backup's consistency point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered_point: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

// ---------------------------------------------------------------- DrPlan

/// SnapMirror protection of an app to a second cluster; the status shows the relationships.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "stasis.io",
    version = "v1alpha1",
    kind = "DrPlan",
    namespaced,
    status = "DrPlanStatus",
    shortname = "sdr",
    category = "stasis",
    doc = "Disaster recovery of an app's volumes to an SVM on another ONTAP cluster",
    printcolumn(name = "App", type_ = "string", json_path = ".spec.app.name"),
    printcolumn(name = "Destination", type_ = "string", json_path = ".spec.destination.cluster"),
    printcolumn(name = "State", type_ = "string", json_path = ".status.relationshipState"),
    printcolumn(name = "Lag", type_ = "integer", json_path = ".status.lagSeconds")
)]
#[serde(rename_all = "camelCase")]
pub struct DrPlanSpec {
    pub app: AppRef,
    pub destination: DrDestination,
    /// The SnapMirror policy (`Asynchronous`, `MirrorAllSnapshots`, `Sync`, ...).
    #[serde(default = "default_mirror_policy")]
    pub policy: String,
}

fn default_mirror_policy() -> String {
    stasis_core::dr::POLICY_ASYNC_DEFAULT.to_string()
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrDestination {
    /// The ONTAP cluster, by its name in the operator's configuration.
    pub cluster: String,
    pub svm: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RelationshipStatus {
    /// `svm:volume` on each side, as ONTAP writes paths.
    pub source: String,
    pub destination: String,
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_reason: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailoverSummary {
    /// `planned`, `unplanned`, `failback` or `drill`.
    pub kind: String,
    pub state: String,
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto_seconds: Option<f64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrPlanStatus {
    /// The relationships' common state (`snapmirrored`, `broken_off`, ...), `mixed` when
    /// they differ, `none` when there is no relationship yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relationship_state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
    /// The largest lag over the app's volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relationships: Vec<RelationshipStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failover: Option<FailoverSummary>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

// ---------------------------------------------------------------- generation

/// The four CustomResourceDefinitions as one multi-document YAML stream: what
/// `stasis crds` prints and `deploy/crds.yaml` holds.
pub fn crds_yaml() -> Result<String, String> {
    let crds = [BackupPolicy::crd(), Backup::crd(), Restore::crd(), DrPlan::crd()];
    let mut out = String::from("# Generated by `stasis crds`; do not edit (a test compares it with the code).\n");
    for crd in crds {
        let doc = serde_saphyr::to_string(&crd).map_err(|e| format!("rendering the CRD {}: {e}", crd.metadata.name.unwrap_or_default()))?;
        out.push_str("---\n");
        out.push_str(&doc);
        if !doc.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

/// Parse a duration with a unit: `500ms`, `90s`, `15m`, `12h`, `30d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| format!("duration {text:?} has no unit (ms, s, m, h or d)"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| format!("duration {text:?} does not start with a whole number"))?;
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("duration {text:?}: unknown unit {unit:?} (ms, s, m, h or d)")),
    };
    n.checked_mul(unit_ms).map(Duration::from_millis).ok_or_else(|| format!("duration {text:?} is too long"))
}

/// A policy's schedule in core's terms: `@every <duration>` or a cron expression.
pub fn parse_schedule(text: &str) -> Result<stasis_core::domain::Schedule, String> {
    use stasis_core::domain::Schedule;
    let text = text.trim();
    if let Some(every) = text.strip_prefix("@every") {
        let every = parse_duration(every)?;
        if every.is_zero() {
            return Err("@every needs a positive duration".into());
        }
        return Ok(Schedule::Interval { every });
    }
    let schedule = Schedule::Cron { expr: text.to_string() };
    // Validate now, so a bad expression is reported on the policy, not at its first run.
    stasis_core::workflow::next_due(&schedule, None, chrono::Utc::now())?;
    Ok(schedule)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_known_unit() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86400)));
        assert!(parse_duration("15").unwrap_err().contains("no unit"));
        assert!(parse_duration("15w").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }

    #[test]
    fn schedules_are_intervals_or_cron() {
        use stasis_core::domain::Schedule;
        assert_eq!(parse_schedule("@every 15m"), Ok(Schedule::Interval { every: Duration::from_secs(900) }));
        assert!(matches!(parse_schedule("0 3 * * *"), Ok(Schedule::Cron { .. })));
        assert!(parse_schedule("@every 0s").is_err());
        assert!(parse_schedule("not a cron").unwrap_err().contains("invalid cron"), "{:?}", parse_schedule("not a cron"));
    }

    #[test]
    fn crds_have_the_group_version_and_a_status_subresource() {
        for crd in [BackupPolicy::crd(), Backup::crd(), Restore::crd(), DrPlan::crd()] {
            assert_eq!(crd.spec.group, GROUP);
            let version = &crd.spec.versions[0];
            assert_eq!(version.name, VERSION);
            assert!(version.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some(), "{:?}", crd.metadata.name);
            assert_eq!(crd.spec.scope, "Namespaced");
        }
        assert_eq!(Backup::crd().metadata.name.as_deref(), Some("backups.stasis.io"));
        assert_eq!(DrPlan::crd().metadata.name.as_deref(), Some("drplans.stasis.io"));
    }
}
