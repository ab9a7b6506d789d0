//! The restore workflows. In place: stop the app, SnapRestore each volume, recover, start.
//! To a clone: FlexClone each volume from the backup's snapshot and open a second instance
//! on the clones. Both are recorded step by step so reconciliation can finish or undo them.

use std::sync::Arc;

use super::{Orchestrator, Step, WorkflowError, WorkflowResult};
use crate::domain::{sanitize, AppSpec, BackupRecord, BackupState, Consistency, RestoreMode, RestoreRecord, RestoreState};
use crate::plugin::{AppPlugin, RecoveryTarget};
use crate::storage::{StorageError, VolumeInfo};

/// SnapRestore attempts when the outcome of one is unknown.
const RESTORE_ATTEMPTS_MAX: u32 = 3;

impl Orchestrator {
    fn restorable(&self, backup_id: &str, app: &AppSpec) -> WorkflowResult<BackupRecord> {
        let backup = self.catalog.backup(backup_id)?.ok_or_else(|| WorkflowError::Invalid(format!("no backup {backup_id}")))?;
        if backup.app != app.name {
            return Err(WorkflowError::Invalid(format!("backup {backup_id} belongs to app {}, not {}", backup.app, app.name)));
        }
        if backup.state != BackupState::Complete || backup.expired {
            return Err(WorkflowError::Invalid(format!("backup {backup_id} is not restorable (state {:?}{})", backup.state, if backup.expired { ", expired" } else { "" })));
        }
        Ok(backup)
    }

    fn new_restore(&self, backup: &BackupRecord, mode: RestoreMode) -> RestoreRecord {
        RestoreRecord {
            id: self.ids.next("r-"),
            backup_id: backup.id.clone(),
            app: backup.app.clone(),
            mode,
            state: RestoreState::Pending,
            clone_volumes: Vec::new(),
            started_at: self.clock.now(),
            finished_at: None,
            recovered_point: None,
            needed_crash_recovery: None,
            error: None,
        }
    }

    fn fail_restore(&self, record: &mut RestoreRecord, error: WorkflowError) -> WorkflowError {
        if let WorkflowError::Crashed(_) = error {
            return error;
        }
        tracing::warn!(error = %error, "restore failed");
        record.state = RestoreState::Failed;
        record.error = Some(error.to_string());
        record.finished_at = Some(self.clock.now());
        if let Err(e) = self.catalog.put_restore(record) {
            tracing::warn!(error = %e, "could not record the failed restore; reconciliation will");
        }
        error
    }

    /// A complete restore must bring back exactly the backup's consistency point when the
    /// backup is application-consistent.
    fn check_point(backup: &BackupRecord, report: &crate::plugin::RecoveryReport) -> WorkflowResult<()> {
        if backup.consistency == Some(Consistency::Application) && backup.evidence.consistency_point.as_ref() != Some(&report.recovered_point) {
            return Err(WorkflowError::Plugin(crate::plugin::PluginError::Verification(format!(
                "recovered to {} but the backup's consistency point is {}",
                report.recovered_point,
                backup.evidence.consistency_point.as_ref().map(|p| p.0.as_str()).unwrap_or("none")
            ))));
        }
        Ok(())
    }

    /// SnapRestore the app's volumes to `backup_id`. Everything newer on those volumes is
    /// lost, including newer backups' snapshots (ONTAP deletes them), which the catalog
    /// then records as expired.
    pub async fn restore_in_place(&self, app: &AppSpec, backup_id: &str, plugin: Arc<dyn AppPlugin>) -> WorkflowResult<RestoreRecord> {
        let backup = self.restorable(backup_id, app)?;
        let mut record = self.new_restore(&backup, RestoreMode::InPlace);
        let span = tracing::info_span!("restore", id = %record.id, app = %app.name, backup = %backup.id);
        let _guard = span.enter();
        self.catalog.put_restore(&record)?;
        self.step(Step::RestoreRecorded)?;

        if let Err(e) = plugin.stop().await {
            return Err(self.fail_restore(&mut record, e.into()));
        }
        record.state = RestoreState::AppStopped;
        if let Err(e) = self.catalog.put_restore(&record) {
            let _ = plugin.start().await;
            return Err(self.fail_restore(&mut record, e.into()));
        }
        self.step(Step::AppStopped)?;

        if let Err(e) = self.snap_restore(app, &backup).await {
            // The data is either all restored or all the app's own (one ONTAP operation per
            // app); the app is started on what is there and the failure recorded.
            let _ = plugin.start().await;
            return Err(self.fail_restore(&mut record, e));
        }
        self.expire_newer_than(&backup)?;
        record.state = RestoreState::StorageRestored;
        self.catalog.put_restore(&record)?;
        self.step(Step::StorageRestored)?;

        self.finish_in_place(&backup, &mut record, app, plugin).await
    }

    /// SnapRestore the backup's volumes: one volume directly, several through their
    /// consistency group so that all change at once. The app is stopped, so repeating a
    /// restore whose outcome is unknown is safe and is what happens, within a bound.
    async fn snap_restore(&self, app: &AppSpec, backup: &BackupRecord) -> WorkflowResult<()> {
        let cg_uuid = match backup.snapshots.as_slice() {
            [_] => None,
            snapshots => {
                let uuids: Vec<String> = snapshots.iter().map(|s| s.volume_uuid.clone()).collect();
                Some(self.storage.ensure_consistency_group(&app.svm, &app.consistency_group_name(), &uuids).await?.uuid)
            }
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = match &cg_uuid {
                Some(cg) => self.storage.restore_consistency_group(cg, &backup.snapshot_name).await,
                None => self.storage.restore_volume(&backup.snapshots[0].volume_uuid, &backup.snapshot_name).await,
            };
            match result {
                Ok(()) => return Ok(()),
                Err(e) if (e.is_indeterminate() || e.is_retryable()) && attempt < RESTORE_ATTEMPTS_MAX => {
                    tracing::warn!(error = %e, attempt, "SnapRestore outcome unknown; repeating it (the app is stopped)");
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Recover and start the app on its restored volumes, then record the restore complete.
    pub(super) async fn finish_in_place(&self, backup: &BackupRecord, record: &mut RestoreRecord, app: &AppSpec, plugin: Arc<dyn AppPlugin>) -> WorkflowResult<RestoreRecord> {
        let volumes = match self.storage.volumes_by_name(&app.svm, &app.volumes).await {
            Ok(v) => v,
            Err(e) => return Err(self.fail_restore(record, e.into())),
        };
        let report = match plugin.recover(&RecoveryTarget { volumes, in_place: true }).await {
            Ok(r) => r,
            Err(e) => return Err(self.fail_restore(record, e.into())),
        };
        record.recovered_point = Some(report.recovered_point.clone());
        record.needed_crash_recovery = Some(report.needed_crash_recovery);
        if let Err(e) = plugin.start().await {
            return Err(self.fail_restore(record, e.into()));
        }
        self.step(Step::Recovered)?;
        if let Err(e) = Self::check_point(backup, &report) {
            return Err(self.fail_restore(record, e));
        }
        self.complete_restore(record, backup)?;
        Ok(record.clone())
    }

    fn complete_restore(&self, record: &mut RestoreRecord, backup: &BackupRecord) -> WorkflowResult<()> {
        record.state = RestoreState::Complete;
        record.finished_at = Some(self.clock.now());
        self.catalog.put_restore(record)?;
        let mut verified = backup.clone();
        verified.verified = true;
        if let Some(current) = self.catalog.backup(&backup.id)? {
            if !current.expired {
                verified.expired = current.expired;
                self.catalog.put_backup(&verified)?;
            }
        }
        self.step(Step::RestoreCompleted)?;
        Ok(())
    }

    /// SnapRestore deleted every snapshot newer than the backup's: mark those backups.
    fn expire_newer_than(&self, backup: &BackupRecord) -> WorkflowResult<()> {
        for mut newer in self.catalog.backups(Some(&backup.app))? {
            if newer.id != backup.id && newer.started_at > backup.started_at && newer.state == BackupState::Complete && !newer.expired {
                newer.expired = true;
                newer.error = Some(format!("its snapshots were deleted by the in-place restore of backup {}", backup.id));
                self.catalog.put_backup(&newer)?;
            }
        }
        Ok(())
    }

    /// Clone each of the backup's volumes and open a second instance of the app on them.
    /// The clones are named `<volume>_<restore id>` and stay for the user; delete them with
    /// [`Orchestrator::delete_clone_restore`].
    pub async fn restore_to_clone(&self, app: &AppSpec, backup_id: &str, plugin: Arc<dyn AppPlugin>) -> WorkflowResult<RestoreRecord> {
        self.restore_to_clone_named(app, backup_id, plugin, None).await
    }

    /// As [`Orchestrator::restore_to_clone`], with the clones' names chosen by the caller
    /// (one per volume of the backup, in the backup's volume order).
    pub async fn restore_to_clone_named(&self, app: &AppSpec, backup_id: &str, plugin: Arc<dyn AppPlugin>, names: Option<Vec<String>>) -> WorkflowResult<RestoreRecord> {
        let backup = self.restorable(backup_id, app)?;
        let id = self.ids.next("r-");
        let clone_names: Vec<String> = match names {
            Some(names) if names.len() == backup.snapshots.len() => names,
            Some(names) => return Err(WorkflowError::Invalid(format!("{} clone names given for a backup of {} volumes", names.len(), backup.snapshots.len()))),
            None => backup.snapshots.iter().map(|s| format!("{}_{}", s.volume_name, sanitize(&id))).collect(),
        };
        let mut record = self.new_restore(&backup, RestoreMode::Clone { clone_names: clone_names.clone() });
        record.id = id;
        let span = tracing::info_span!("restore", id = %record.id, app = %app.name, backup = %backup.id);
        let _guard = span.enter();
        self.catalog.put_restore(&record)?;
        self.step(Step::RestoreRecorded)?;

        let mut clones: Vec<VolumeInfo> = Vec::new();
        for (s, clone_name) in backup.snapshots.iter().zip(&clone_names) {
            // Mounted at `/<clone name>` so that a second instance on this host (NFS, or the
            // simulator's FUSE mounts) can reach the copy.
            match self.storage.clone_volume(&s.volume_uuid, &backup.snapshot_name, clone_name, Some(&format!("/{clone_name}"))).await {
                Ok(v) => {
                    record.clone_volumes.push((v.uuid.clone(), v.name.clone()));
                    clones.push(v);
                    // Record each clone as it appears, so a crash leaves no unknown clone.
                    if let Err(e) = self.catalog.put_restore(&record) {
                        return Err(self.fail_clone_restore(&mut record, app, e.into()).await);
                    }
                }
                Err(e) => return Err(self.fail_clone_restore(&mut record, app, e.into()).await),
            }
        }
        record.state = RestoreState::StorageRestored;
        self.catalog.put_restore(&record)?;
        self.step(Step::StorageRestored)?;

        let report = match plugin.recover(&RecoveryTarget { volumes: clones, in_place: false }).await {
            Ok(r) => r,
            // A copy that does not open is of no use to anyone: remove it.
            Err(e) => return Err(self.fail_clone_restore(&mut record, app, e.into()).await),
        };
        record.recovered_point = Some(report.recovered_point.clone());
        record.needed_crash_recovery = Some(report.needed_crash_recovery);
        self.step(Step::Recovered)?;
        if let Err(e) = Self::check_point(&backup, &report) {
            // A copy at the wrong point must not be mistaken for the backup: remove it.
            return Err(self.fail_clone_restore(&mut record, app, e).await);
        }
        self.complete_restore(&mut record, &backup)?;
        Ok(record)
    }

    /// Record a clone restore failed and remove its clones (reconciliation retries what this
    /// could not delete).
    async fn fail_clone_restore(&self, record: &mut RestoreRecord, app: &AppSpec, error: WorkflowError) -> WorkflowError {
        let error = self.fail_restore(record, error);
        if self.delete_clones(record, Some(&app.svm)).await.is_empty() {
            record.clone_volumes.clear();
            let _ = self.catalog.put_restore(record);
        }
        error
    }

    /// Delete the clone volumes a restore created (tolerating ones already gone), including
    /// any whose create answered with an error but happened (found by its planned name).
    pub(super) async fn delete_clones(&self, record: &RestoreRecord, svm: Option<&str>) -> Vec<StorageError> {
        let mut errors = Vec::new();
        let mut uuids: Vec<String> = record.clone_volumes.iter().map(|(uuid, _)| uuid.clone()).collect();
        if let (RestoreMode::Clone { clone_names }, Some(svm)) = (&record.mode, svm) {
            for name in clone_names {
                match self.storage.volumes_by_name(svm, std::slice::from_ref(name)).await {
                    Ok(found) => {
                        for v in found {
                            if !uuids.contains(&v.uuid) {
                                uuids.push(v.uuid);
                            }
                        }
                    }
                    Err(StorageError::NotFound { .. }) => {}
                    Err(e) => errors.push(e),
                }
            }
        }
        for uuid in &uuids {
            match self.storage.delete_volume(uuid).await {
                Ok(()) | Err(StorageError::NotFound { .. }) => {}
                Err(e) => errors.push(e),
            }
        }
        errors
    }

    /// Remove a clone restore's volumes (after the user is done with the copy).
    pub async fn delete_clone_restore(&self, restore_id: &str) -> WorkflowResult<()> {
        let record = self.catalog.restore(restore_id)?.ok_or_else(|| WorkflowError::Invalid(format!("no restore {restore_id}")))?;
        // A complete clone restore lists every clone it made.
        if let Some(e) = self.delete_clones(&record, None).await.into_iter().next() {
            return Err(e.into());
        }
        let mut done = record;
        done.clone_volumes.clear();
        self.catalog.put_restore(&done)?;
        Ok(())
    }
}
