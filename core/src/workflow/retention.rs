//! Retention and scheduling: which backups a policy expires, and when the next one is due.

use chrono::{DateTime, Utc};

use super::{Orchestrator, Step, WorkflowError, WorkflowResult};
use crate::domain::{AppSpec, BackupRecord, BackupState, Policy, Schedule};
use crate::storage::StorageError;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RetentionReport {
    pub expired: Vec<String>,
    /// Expired but not yet deletable (e.g. a clone depends on the snapshot): retried later.
    pub pending: Vec<String>,
    /// Kept although the policy would expire it: the app's last verified-good backup.
    pub protected: Option<String>,
}

/// When the next backup is due under `schedule`, given the last one's start (if any).
pub fn next_due(schedule: &Schedule, last: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    match schedule {
        Schedule::Interval { every } => {
            let every = chrono::TimeDelta::from_std(*every).map_err(|e| format!("interval out of range: {e}"))?;
            if every <= chrono::TimeDelta::zero() {
                return Err("the interval must be positive".into());
            }
            Ok(last.map_or(now, |t| t + every))
        }
        Schedule::Cron { expr } => {
            let cron: croner::Cron = expr.parse().map_err(|e| format!("invalid cron expression {expr:?}: {e}"))?;
            cron.find_next_occurrence(&last.unwrap_or(now), false).map_err(|e| format!("cron expression {expr:?} has no next occurrence: {e}"))
        }
    }
}

/// Which complete backups `policy` expires at `now`. Newest first, keep the first
/// `keep_last`, expire those older than `max_age`; never the newest verified-good backup.
pub fn select_expired<'a>(policy: &Policy, backups: &'a [BackupRecord], now: DateTime<Utc>) -> (Vec<&'a BackupRecord>, Option<&'a BackupRecord>) {
    let mut complete: Vec<&BackupRecord> = backups.iter().filter(|b| b.state == BackupState::Complete && !b.expired).collect();
    complete.sort_by(|a, b| b.started_at.cmp(&a.started_at).then_with(|| b.id.cmp(&a.id)));
    let protected = complete.iter().copied().find(|b| b.verified);
    let mut expired = Vec::new();
    let mut protected_hit = None;
    for (index, backup) in complete.iter().enumerate() {
        let too_many = policy.keep_last.is_some_and(|n| index >= n as usize);
        let too_old = policy.max_age.is_some_and(|age| chrono::TimeDelta::from_std(age).is_ok_and(|age| now - backup.started_at > age));
        if too_many || too_old {
            if protected.is_some_and(|p| p.id == backup.id) {
                protected_hit = Some(*backup);
            } else {
                expired.push(*backup);
            }
        }
    }
    (expired, protected_hit)
}

impl Orchestrator {
    /// Apply `policy` to `app`: expired backups are marked in the catalog first (so a crash
    /// half-way never leaves a live record without its snapshot), then their snapshots are
    /// deleted on the array, then the records go.
    pub async fn apply_retention(&self, app: &AppSpec, policy: &Policy) -> WorkflowResult<RetentionReport> {
        let backups = self.catalog.backups(Some(&app.name))?;
        let now = self.clock.now();
        let (expired, protected) = select_expired(policy, &backups, now);
        let mut report = RetentionReport { protected: protected.map(|b| b.id.clone()), ..Default::default() };
        let volumes = self.storage.volumes_by_name(&app.svm, &app.volumes).await?;
        for backup in expired {
            let mut record = backup.clone();
            record.expired = true;
            self.catalog.put_backup(&record)?;
            self.step(Step::RetentionExpired)?;
            match self.delete_backup_snapshots(&record.snapshot_name, volumes.iter().map(|v| v.uuid.as_str())).await {
                Ok(()) => {
                    self.catalog.delete_backup(&record.id)?;
                    report.expired.push(record.id);
                }
                Err(StorageError::Refused { code, .. }) if code == crate::storage::codes::SNAPSHOT_HAS_OWNER => report.pending.push(record.id),
                Err(e) => return Err(WorkflowError::Storage(e)),
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::{Consistency, Evidence};

    fn backup(id: &str, minutes_ago: i64, verified: bool, now: DateTime<Utc>) -> BackupRecord {
        BackupRecord {
            id: id.into(),
            app: "a".into(),
            snapshot_name: format!("stasis_{id}"),
            state: BackupState::Complete,
            consistency: Some(Consistency::Application),
            evidence: Evidence::default(),
            snapshots: Vec::new(),
            started_at: now - chrono::TimeDelta::minutes(minutes_ago),
            finished_at: None,
            error: None,
            verified,
            expired: false,
        }
    }

    fn policy(keep_last: Option<u32>, max_age_min: Option<u64>) -> Policy {
        Policy { name: "p".into(), schedule: Schedule::Interval { every: Duration::from_secs(60) }, keep_last, max_age: max_age_min.map(|m| Duration::from_secs(m * 60)) }
    }

    #[test]
    fn keep_last_expires_the_oldest() {
        let now = Utc::now();
        let backups = vec![backup("b1", 30, false, now), backup("b2", 20, false, now), backup("b3", 10, false, now)];
        let (expired, protected) = select_expired(&policy(Some(2), None), &backups, now);
        assert_eq!(expired.iter().map(|b| b.id.as_str()).collect::<Vec<_>>(), ["b1"]);
        assert!(protected.is_none());
    }

    #[test]
    fn the_last_verified_backup_is_never_expired() {
        let now = Utc::now();
        let backups = vec![backup("b1", 300, true, now), backup("b2", 200, false, now), backup("b3", 5, false, now)];
        let (expired, protected) = select_expired(&policy(Some(1), Some(50)), &backups, now);
        assert_eq!(expired.iter().map(|b| b.id.as_str()).collect::<Vec<_>>(), ["b2"], "b3 is kept by keep_last, b1 is protected");
        assert_eq!(protected.map(|b| b.id.as_str()), Some("b1"));
    }

    #[test]
    fn max_age_expires_old_ones() {
        let now = Utc::now();
        let backups = vec![backup("old", 120, false, now), backup("new", 5, false, now)];
        let (expired, _) = select_expired(&policy(None, Some(60)), &backups, now);
        assert_eq!(expired.iter().map(|b| b.id.as_str()).collect::<Vec<_>>(), ["old"]);
    }

    #[test]
    fn schedules() {
        let now: DateTime<Utc> = "2026-01-01T10:07:00Z".parse().unwrap();
        let every = Schedule::Interval { every: Duration::from_secs(600) };
        assert_eq!(next_due(&every, None, now).unwrap(), now);
        assert_eq!(next_due(&every, Some(now), now).unwrap(), now + chrono::TimeDelta::minutes(10));
        let cron = Schedule::Cron { expr: "*/15 * * * *".into() };
        assert_eq!(next_due(&cron, None, now).unwrap(), "2026-01-01T10:15:00Z".parse::<DateTime<Utc>>().unwrap());
        assert!(next_due(&Schedule::Cron { expr: "not cron".into() }, None, now).is_err());
        assert!(next_due(&Schedule::Interval { every: Duration::ZERO }, None, now).is_err());
    }
}
