//! Reconciliation after a restart: every backup or restore left mid-flight is finished or
//! rolled back, the app is thawed, orphan snapshots and clones are deleted, and the catalog
//! is made to agree with the array.

use std::sync::Arc;

use super::{Orchestrator, WorkflowResult};
use crate::domain::{AppSpec, BackupState, Consistency, RestoreMode, RestoreState};
use crate::plugin::AppPlugin;
use crate::storage::StorageError;

/// Snapshots the orchestrator names start with this; others are never touched.
pub const SNAPSHOT_PREFIX: &str = "stasis_";

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReconcileReport {
    pub backups_completed: u32,
    pub backups_failed: u32,
    pub restores_completed: u32,
    pub restores_failed: u32,
    pub orphan_snapshots_deleted: u32,
    pub orphan_clones_deleted: u32,
    pub backups_marked_missing: u32,
}

impl Orchestrator {
    /// Repair everything the catalog and the array say about `app`. Idempotent: running it
    /// twice changes nothing the second time.
    pub async fn reconcile(&self, app: &AppSpec, plugin: Arc<dyn AppPlugin>) -> WorkflowResult<ReconcileReport> {
        let mut report = ReconcileReport::default();
        let span = tracing::info_span!("reconcile", app = %app.name);
        let _guard = span.enter();
        // A crash may have left the app frozen; thawing is idempotent.
        let _ = plugin.unquiesce().await;

        let volumes = self.storage.volumes_by_name(&app.svm, &app.volumes).await?;
        let volume_uuids: Vec<String> = volumes.iter().map(|v| v.uuid.clone()).collect();

        // 1. Backups in flight: finish forward when the snapshot and its record exist and
        // verify; otherwise roll back.
        for mut backup in self.catalog.backups(Some(&app.name))? {
            if backup.state.is_final() {
                continue;
            }
            if backup.state == BackupState::Snapshotted && self.verify_snapshots(&backup).await.is_ok() {
                let holds = backup.evidence.holds(&backup.snapshots).is_ok();
                backup.consistency = Some(if holds { Consistency::Application } else { Consistency::Crash });
                backup.state = BackupState::Complete;
                backup.finished_at = Some(self.clock.now());
                self.catalog.put_backup(&backup)?;
                report.backups_completed += 1;
            } else {
                self.delete_backup_snapshots(&backup.snapshot_name, volume_uuids.iter().map(String::as_str)).await?;
                backup.state = BackupState::Failed;
                backup.error.get_or_insert_with(|| "interrupted; rolled back by reconciliation".into());
                backup.finished_at = Some(self.clock.now());
                self.catalog.put_backup(&backup)?;
                report.backups_failed += 1;
            }
        }

        // 2. Restores in flight.
        for mut restore in self.catalog.restores(Some(&app.name))? {
            if restore.state == RestoreState::Failed && matches!(restore.mode, RestoreMode::Clone { .. }) {
                // A failed clone restore: its clean-up may not have finished, or a clone
                // whose create answered with an error may exist under its planned name.
                let n = restore.clone_volumes.len() as u32;
                if let Some(e) = self.delete_clones(&restore, Some(&app.svm)).await.into_iter().next() {
                    return Err(e.into());
                }
                if n > 0 {
                    report.orphan_clones_deleted += n;
                    restore.clone_volumes.clear();
                    self.catalog.put_restore(&restore)?;
                }
                continue;
            }
            if matches!(restore.state, RestoreState::Complete | RestoreState::Failed) {
                continue;
            }
            match (&restore.mode, restore.state) {
                (RestoreMode::InPlace, RestoreState::StorageRestored) => {
                    let Some(backup) = self.catalog.backup(&restore.backup_id)? else { continue };
                    match self.finish_in_place(&backup, &mut restore, app, plugin.clone()).await {
                        Ok(_) => report.restores_completed += 1,
                        Err(_) => report.restores_failed += 1,
                    }
                }
                (RestoreMode::InPlace, _) => {
                    // Stopped (or about to be) but the volumes were not all restored: the data
                    // is the app's own; start it again and record the restore failed.
                    let _ = plugin.start().await;
                    restore.state = RestoreState::Failed;
                    restore.error = Some("interrupted before the volumes were restored; the app was restarted on its data".into());
                    restore.finished_at = Some(self.clock.now());
                    self.catalog.put_restore(&restore)?;
                    report.restores_failed += 1;
                }
                (RestoreMode::Clone { .. }, _) => {
                    // Clones may exist that the record does not list yet (crash between the
                    // create and its record): `delete_clones` finds them by name.
                    let n = restore.clone_volumes.len() as u32;
                    if let Some(e) = self.delete_clones(&restore, Some(&app.svm)).await.into_iter().next() {
                        return Err(e.into());
                    }
                    report.orphan_clones_deleted += n;
                    restore.clone_volumes.clear();
                    restore.state = RestoreState::Failed;
                    restore.error = Some("interrupted; its clones were deleted by reconciliation".into());
                    restore.finished_at = Some(self.clock.now());
                    self.catalog.put_restore(&restore)?;
                    report.restores_failed += 1;
                }
            }
        }

        // 3. Array against catalog: every `stasis_` snapshot must belong to a live backup,
        // and every live backup must still have its snapshots.
        let backups = self.catalog.backups(Some(&app.name))?;
        let live: std::collections::HashSet<&str> = backups.iter().filter(|b| b.state == BackupState::Complete && !b.expired).map(|b| b.snapshot_name.as_str()).collect();
        for volume in &volume_uuids {
            for snapshot in self.storage.snapshots(volume).await? {
                if snapshot.name.starts_with(SNAPSHOT_PREFIX) && !live.contains(snapshot.name.as_str()) {
                    if !snapshot.owners.is_empty() {
                        // A clone still depends on it (e.g. a clone restore the user keeps).
                        continue;
                    }
                    match self.storage.delete_snapshot(volume, &snapshot.uuid).await {
                        Ok(()) | Err(StorageError::NotFound { .. }) => report.orphan_snapshots_deleted += 1,
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        for mut backup in backups {
            if backup.state != BackupState::Complete {
                continue;
            }
            if backup.expired {
                // Retention expired it; its snapshots are now gone: forget it.
                if self.snapshots_gone(&backup.snapshot_name, &volume_uuids).await? {
                    self.catalog.delete_backup(&backup.id)?;
                }
                continue;
            }
            if self.verify_snapshots(&backup).await.is_err() {
                backup.expired = true;
                backup.error = Some("its snapshots are no longer on the array".into());
                self.catalog.put_backup(&backup)?;
                report.backups_marked_missing += 1;
            }
        }
        if report != ReconcileReport::default() {
            tracing::info!(?report, "reconciled");
        }
        Ok(report)
    }

    async fn snapshots_gone(&self, name: &str, volumes: &[String]) -> WorkflowResult<bool> {
        for volume in volumes {
            if self.storage.snapshot_by_name(volume, name).await?.is_some() {
                return Ok(false);
            }
        }
        Ok(true)
    }
}
