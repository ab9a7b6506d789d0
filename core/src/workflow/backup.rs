//! The backup workflow: resolve -> pre-check -> record intent -> quiesce -> snapshot ->
//! unquiesce -> record -> verify -> complete, with the freeze bound enforced by a watchdog
//! task that outlives the workflow itself (errors, hangs, even a panic of the workflow).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Orchestrator, Step, WorkflowError, WorkflowResult};
use crate::clock::Clock;
use crate::domain::{AppSpec, BackupRecord, BackupState, Consistency, Evidence, SnapshotRef};
use crate::plugin::{AppPlugin, PluginError};
use crate::storage::{SnapshotInfo, StorageError, VolumeInfo};

/// ONTAP's limit of snapshots per volume; a backup needs one free slot on every volume.
pub const SNAPSHOTS_PER_VOLUME_MAX: u32 = 1023;
/// The watchdog thaws the app at this fraction of its freeze timeout, leaving the rest for
/// the thaw itself to reach the application.
const WATCHDOG_FRACTION: f64 = 0.9;
/// Longest an unquiesce call may take before it is abandoned (the app's own session
/// timeout is then the last line of defence).
const UNQUIESCE_WAIT_MAX: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct BackupOutcome {
    pub record: BackupRecord,
}

/// A quiesced application with its watchdog. Dropping it without `release` leaves the
/// watchdog armed: that is the point (a crashed or panicking workflow still thaws the app).
struct Freeze {
    plugin: Arc<dyn AppPlugin>,
    clock: Arc<dyn Clock>,
    deadline: Instant,
    fired_at: Arc<std::sync::Mutex<Option<DateTime<Utc>>>>,
    watchdog: JoinHandle<()>,
}

impl Freeze {
    fn arm(plugin: Arc<dyn AppPlugin>, clock: Arc<dyn Clock>, freeze_timeout: Duration) -> Freeze {
        let deadline = Instant::now() + freeze_timeout.mul_f64(WATCHDOG_FRACTION);
        let fired_at = Arc::new(std::sync::Mutex::new(None));
        let watchdog = {
            let (plugin, clock, fired_at) = (plugin.clone(), clock.clone(), fired_at.clone());
            tokio::spawn(async move {
                tokio::time::sleep_until(deadline).await;
                tracing::warn!("freeze bound reached: the watchdog thaws the application");
                let _ = tokio::time::timeout(UNQUIESCE_WAIT_MAX, plugin.unquiesce()).await;
                *fired_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(clock.now());
            })
        };
        Freeze { plugin, clock, deadline, fired_at, watchdog }
    }

    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// Thaw now. Returns when the app was released and whether the thaw reported success.
    async fn release(self) -> (DateTime<Utc>, Result<(), PluginError>) {
        self.watchdog.abort();
        // Unquiesce is idempotent: call it even if the watchdog did, in case the abort
        // interrupted the watchdog's own call half-way.
        let result = match tokio::time::timeout(UNQUIESCE_WAIT_MAX, self.plugin.unquiesce()).await {
            Ok(r) => r,
            Err(_) => Err(PluginError::App(format!("unquiesce did not return within {UNQUIESCE_WAIT_MAX:?}"))),
        };
        let fired = *self.fired_at.lock().unwrap_or_else(|p| p.into_inner());
        (fired.unwrap_or_else(|| self.clock.now()), result)
    }
}

fn snapshot_ref(volume: &VolumeInfo, s: &SnapshotInfo) -> SnapshotRef {
    SnapshotRef { volume_uuid: volume.uuid.clone(), volume_name: volume.name.clone(), snapshot_uuid: s.uuid.clone(), create_time: s.create_time }
}

impl Orchestrator {
    /// Take one backup of `app`. On success the record is complete and labelled
    /// application- or crash-consistent by its evidence; on failure it is recorded failed
    /// and no snapshot of it is left on the array (or reconciliation will remove it).
    pub async fn backup(&self, app: &AppSpec, plugin: Arc<dyn AppPlugin>) -> WorkflowResult<BackupOutcome> {
        let id = self.ids.next("b-");
        let mut record = BackupRecord {
            snapshot_name: BackupRecord::snapshot_name_for(&id),
            id,
            app: app.name.clone(),
            state: BackupState::Pending,
            consistency: None,
            evidence: Evidence::default(),
            snapshots: Vec::new(),
            started_at: self.clock.now(),
            finished_at: None,
            error: None,
            verified: false,
            expired: false,
        };
        let span = tracing::info_span!("backup", id = %record.id, app = %app.name);
        let _guard = span.enter();
        self.catalog.put_backup(&record)?;
        self.step(Step::BackupRecorded)?;

        let volumes = match self.prepare(app).await {
            Ok(v) => v,
            Err(e) => return Err(self.fail(&mut record, e)),
        };
        let cg_uuid = match volumes.len() {
            1 => None,
            _ => match self.storage.ensure_consistency_group(&app.svm, &app.consistency_group_name(), &volumes.iter().map(|v| v.uuid.clone()).collect::<Vec<_>>()).await {
                Ok(cg) => Some(cg.uuid),
                Err(e) => return Err(self.fail(&mut record, e.into())),
            },
        };
        if let Err(e) = self.storage.warm_up().await {
            return Err(self.fail(&mut record, e.into()));
        }
        self.step(Step::VolumesResolved)?;

        // Write-ahead intent: from here the app may hold a lock, and reconciliation must thaw
        // it. Nothing is written to the catalog inside the freeze.
        record.state = BackupState::Quiesced;
        record.evidence.lock_requested = Some(self.clock.now());
        if let Err(e) = self.catalog.put_backup(&record) {
            return Err(self.fail(&mut record, e.into()));
        }
        self.step(Step::QuiesceIntentRecorded)?;

        let freeze = Freeze::arm(plugin.clone(), self.clock.clone(), app.freeze_timeout);
        self.background.register(freeze.watchdog.abort_handle());
        let point = match tokio::time::timeout(freeze.remaining(), plugin.quiesce()).await {
            Ok(Ok(point)) => point,
            Ok(Err(e)) => {
                let _ = freeze.release().await;
                return Err(self.fail(&mut record, e.into()));
            }
            Err(_) => {
                let _ = freeze.release().await;
                return Err(self.fail(&mut record, WorkflowError::Bound(format!("quiesce did not finish within the freeze bound ({:?})", app.freeze_timeout))));
            }
        };
        record.evidence.lock_granted = Some(self.clock.now());
        record.evidence.consistency_point = Some(point);
        self.step(Step::Quiesced)?;

        // One request inside the freeze; the snapshot is read back after the thaw.
        let deadline = freeze.remaining();
        let snapshot = tokio::time::timeout(deadline, async {
            match &cg_uuid {
                Some(cg) => self.storage.take_cg_snapshot(cg, &record.snapshot_name, deadline).await,
                None => self.storage.take_snapshot(&volumes[0].uuid, &record.snapshot_name, deadline).await,
            }
        })
        .await
        .unwrap_or_else(|_| Err(StorageError::Indeterminate { message: "snapshot request still running at the freeze bound".into() }));
        let in_bound = !freeze.expired();
        self.step(Step::SnapshotTaken)?;
        let (released_at, thaw) = freeze.release().await;
        record.evidence.lock_released = Some(released_at);
        record.evidence.thaw_error = thaw.err().map(|e| e.to_string());
        self.step(Step::Unquiesced)?;

        match (snapshot, in_bound) {
            (Ok(()), true) => {}
            (Ok(()), false) => {
                return Err(self.fail_and_clean(&mut record, &volumes, WorkflowError::Bound("the snapshot finished after the freeze bound; it was deleted".into())).await);
            }
            (Err(e), _) => return Err(self.fail_and_clean(&mut record, &volumes, e.into()).await),
        }
        // Only a snapshot seen on the array makes a backup complete: read each back (its
        // uuid, and its create time for the evidence).
        record.snapshots = match self.read_back_snapshots(&record.snapshot_name, &volumes).await {
            Ok(refs) => refs,
            Err(e) => return Err(self.fail_and_clean(&mut record, &volumes, e).await),
        };
        record.state = BackupState::Snapshotted;
        if let Err(e) = self.catalog.put_backup(&record) {
            return Err(self.fail_and_clean(&mut record, &volumes, e.into()).await);
        }
        self.step(Step::SnapshotRecorded)?;
        record.consistency = Some(match record.evidence.holds(&record.snapshots) {
            Ok(()) => Consistency::Application,
            Err(why) => {
                tracing::warn!(%why, "backup kept as crash-consistent: the application-consistency evidence does not hold");
                Consistency::Crash
            }
        });
        record.state = BackupState::Complete;
        record.finished_at = Some(self.clock.now());
        if let Err(e) = self.catalog.put_backup(&record) {
            return Err(self.fail_and_clean(&mut record, &volumes, e.into()).await);
        }
        self.step(Step::BackupCompleted)?;
        tracing::info!(consistency = ?record.consistency, point = ?record.evidence.consistency_point, freeze = ?record.evidence.freeze_window(), "backup complete");
        Ok(BackupOutcome { record })
    }

    /// Resolve the app's volumes and check a backup can be taken on each.
    async fn prepare(&self, app: &AppSpec) -> WorkflowResult<Vec<VolumeInfo>> {
        if app.volumes.is_empty() {
            return Err(WorkflowError::Invalid(format!("app {} has no volumes", app.name)));
        }
        let volumes = self.storage.volumes_by_name(&app.svm, &app.volumes).await?;
        for v in &volumes {
            if !v.online {
                return Err(WorkflowError::Invalid(format!("volume {} is not online", v.name)));
            }
            if !v.writable {
                return Err(WorkflowError::Invalid(format!("volume {} is read-only (a SnapMirror destination?)", v.name)));
            }
            if v.n_snapshots >= SNAPSHOTS_PER_VOLUME_MAX {
                return Err(WorkflowError::Invalid(format!("volume {} already holds {} snapshots, ONTAP's maximum", v.name, v.n_snapshots)));
            }
        }
        Ok(volumes)
    }

    async fn read_back_snapshots(&self, name: &str, volumes: &[VolumeInfo]) -> WorkflowResult<Vec<SnapshotRef>> {
        let mut refs = Vec::with_capacity(volumes.len());
        for v in volumes {
            match self.storage.snapshot_by_name(&v.uuid, name).await? {
                Some(s) => refs.push(snapshot_ref(v, &s)),
                None => return Err(WorkflowError::Invalid(format!("snapshot {name} is not on volume {}", v.name))),
            }
        }
        Ok(refs)
    }

    pub(super) async fn verify_snapshots(&self, record: &BackupRecord) -> WorkflowResult<()> {
        for s in &record.snapshots {
            match self.storage.snapshot_by_name(&s.volume_uuid, &record.snapshot_name).await? {
                Some(found) if found.uuid == s.snapshot_uuid => {}
                Some(found) => return Err(WorkflowError::Invalid(format!("snapshot {} on {} has uuid {}, not {}", record.snapshot_name, s.volume_name, found.uuid, s.snapshot_uuid))),
                None => return Err(WorkflowError::Invalid(format!("snapshot {} is not on volume {}", record.snapshot_name, s.volume_name))),
            }
        }
        Ok(())
    }

    /// Record the backup failed (best effort: the catalog may be what failed).
    fn fail(&self, record: &mut BackupRecord, error: WorkflowError) -> WorkflowError {
        if let WorkflowError::Crashed(_) = error {
            return error;
        }
        tracing::warn!(error = %error, "backup failed");
        record.state = BackupState::Failed;
        record.error = Some(error.to_string());
        record.finished_at = Some(self.clock.now());
        if let Err(e) = self.catalog.put_backup(record) {
            tracing::warn!(error = %e, "could not record the failed backup; reconciliation will");
        }
        error
    }

    /// Fail the backup and delete whatever snapshot of it exists, looking it up by name (a
    /// timed-out create may have happened).
    async fn fail_and_clean(&self, record: &mut BackupRecord, volumes: &[VolumeInfo], error: WorkflowError) -> WorkflowError {
        if let Err(e) = self.delete_backup_snapshots(&record.snapshot_name, volumes.iter().map(|v| v.uuid.as_str())).await {
            tracing::warn!(error = %e, "could not delete the failed backup's snapshots; reconciliation will");
        }
        self.fail(record, error)
    }

    /// Delete the snapshot `name` from each volume where it exists.
    pub(super) async fn delete_backup_snapshots<'a>(&self, name: &str, volume_uuids: impl Iterator<Item = &'a str>) -> Result<(), StorageError> {
        let mut first_error = None;
        for volume in volume_uuids {
            let result = match self.storage.snapshot_by_name(volume, name).await {
                Ok(Some(s)) => self.storage.delete_snapshot(volume, &s.uuid).await,
                Ok(None) | Err(StorageError::NotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
