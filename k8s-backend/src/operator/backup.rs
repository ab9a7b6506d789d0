//! The `Backup` reconciler: intent in status, then core's backup workflow, then the outcome
//! in status. A `Running` status found at the start of a reconcile was left by a process
//! that died or lost leadership mid-backup: its snapshot is deleted by name and the backup
//! fails (a backup is never resumed half-way: the freeze it started is long over).

use std::sync::Arc;

use kube::runtime::controller::Action;
use kube::runtime::finalizer::{finalizer, Event};
use kube::{Api, ResourceExt};
use stasis_core::catalog::Catalog;
use stasis_core::domain::{AppSpec, BackupRecord, BackupState, Consistency};
use stasis_core::sqlite_catalog::SqliteCatalog;
use stasis_core::storage::StorageError;
use stasis_core::workflow::{Ids, Orchestrator};

use super::{patch_status, ready, rfc3339, Context, OpResult, OperatorError};
use crate::crd::{Backup, BackupStatus, FreezeWindow, Phase, SnapshotStatus};

/// Removed only after the backup's snapshots are gone from the array.
pub const FINALIZER: &str = "stasis.io/snapshots";

/// The workflow's id is fixed by the object (its uid), so the snapshot name is known before
/// the workflow starts and a successor finds it.
struct FixedId(String);

impl Ids for FixedId {
    fn next(&self, prefix: &str) -> String {
        format!("{prefix}{}", self.0)
    }
}

/// The last 12 hex digits of the object's uid (random in a v4 uuid).
pub fn backup_id(backup: &Backup) -> Result<String, String> {
    let uid = backup.metadata.uid.as_deref().ok_or("the Backup has no uid yet")?;
    let hex: String = uid.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    if hex.len() < 12 {
        return Err(format!("the Backup's uid {uid:?} is not a uuid"));
    }
    Ok(format!("b-{}", hex[hex.len() - 12..].to_ascii_lowercase()))
}

pub async fn reconcile(backup: Arc<Backup>, ctx: Arc<Context>) -> OpResult<Action> {
    let namespace = backup.namespace().ok_or_else(|| OperatorError::Invalid("Backup without a namespace".into()))?;
    let api: Api<Backup> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, backup, |event| async {
        match event {
            Event::Apply(b) => apply(&api, &b, &ctx).await,
            Event::Cleanup(b) => cleanup(&b, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e) | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => OperatorError::Finalizer(other.to_string()),
    })
}

fn failed(mut status: BackupStatus, error: String, now: &str, generation: Option<i64>) -> BackupStatus {
    status.conditions = ready(&status.conditions, false, "BackupFailed", error.clone(), now, generation);
    status.phase = Phase::Failed;
    status.error = Some(error);
    status.finished_at = Some(now.to_string());
    status.observed_generation = generation;
    status
}

async fn apply(api: &Api<Backup>, cached: &Backup, ctx: &Context) -> OpResult<Action> {
    let name = cached.name_any();
    let namespace = cached.namespace().unwrap_or_default();
    if cached.status.as_ref().is_some_and(|s| s.phase.is_final()) {
        return Ok(Action::await_change());
    }
    // The controller's cache may lag our own writes: decide on a fresh read, and make every
    // status write conditional on the resourceVersion it follows.
    let Some(backup) = api.get_opt(&name).await.map_err(|e| crate::K8sError::from_kube(format!("reading Backup {namespace}/{name}"), e))? else {
        return Ok(Action::await_change());
    };
    let generation = backup.metadata.generation;
    let mut rv = backup.metadata.resource_version.clone();
    let status = backup.status.clone().unwrap_or_default();
    match status.phase {
        Phase::Succeeded | Phase::Failed => return Ok(Action::await_change()),
        Phase::Running => {
            let removed = delete_snapshots(ctx, &status).await;
            let why = match removed {
                Ok(()) => "interrupted: the operator stopped (or lost leadership) during this backup; its snapshot, if any, was deleted".to_string(),
                Err(e) => format!("interrupted: the operator stopped (or lost leadership) during this backup; deleting its snapshot failed ({e}) and is retried when the Backup is deleted"),
            };
            tracing::warn!(backup = %name, %namespace, "{why}");
            patch_status(api, &name, rv.as_deref(), &failed(status, why, &ctx.now_rfc3339(), generation)).await?;
            return Ok(Action::await_change());
        }
        Phase::Pending => {}
    }

    let id = backup_id(&backup).map_err(OperatorError::Invalid)?;
    let now = ctx.now_rfc3339();
    let (workload, app) = match ctx.resolve_app(&backup.spec.app, &namespace, backup.spec.freeze_timeout.as_deref()).await {
        Ok(found) => found,
        Err(e) => {
            patch_status(api, &name, rv.as_deref(), &failed(status, e, &now, generation)).await?;
            return Ok(Action::await_change());
        }
    };

    // Intent first: a successor that finds `Running` knows which snapshot to remove.
    let mut status = BackupStatus {
        phase: Phase::Running,
        backup_id: Some(id.clone()),
        snapshot_name: Some(BackupRecord::snapshot_name_for(&id)),
        svm: Some(app.svm.clone()),
        volumes: app.volumes.clone(),
        started_at: Some(now.clone()),
        observed_generation: generation,
        conditions: ready(&status.conditions, false, "BackupRunning", format!("backing up {} ({})", app.name, app.volumes.join(", ")), &now, generation),
        ..Default::default()
    };
    rv = patch_status(api, &name, rv.as_deref(), &status).await?;

    let catalog = Arc::new(SqliteCatalog::open_in_memory().map_err(|e| OperatorError::Invalid(format!("opening an in-memory catalog: {e}")))?);
    catalog.put_app(&app).map_err(|e| OperatorError::Invalid(e.to_string()))?;
    let id_suffix = id.trim_start_matches("b-").to_string();
    let orchestrator = Orchestrator::new(ctx.storage.clone(), catalog.clone(), ctx.clock.clone()).with_ids(Arc::new(FixedId(id_suffix)));
    let span = tracing::info_span!("backup", id = %id, app = %app.name, object = %format!("{namespace}/{name}"));
    let mut result = tracing::Instrument::instrument(ctx.plugins.backup(&orchestrator, &workload, &app), span).await;
    // The app's captured objects (if the factory took them) live in Kubernetes with the
    // Backup, not in this throw-away catalog: a restore on any replica reads them there.
    if result.is_ok() {
        if let Some(doc) = catalog.backup_attachment(&id).ok().flatten() {
            if let Err(e) = super::wired::store_capture(&ctx.client, &backup, &id, &doc).await {
                let removed = delete_snapshots(ctx, &status).await.err().map(|e| format!("; deleting its snapshot failed ({e}) and is retried when the Backup is deleted")).unwrap_or_default();
                result = Err(format!("the backup's Kubernetes objects could not be stored, so it could not be restored: {e}{removed}"));
            }
        }
    }
    let record = catalog.backup(&id).ok().flatten();
    let now = ctx.now_rfc3339();
    if let Some(record) = &record {
        fill_from_record(&mut status, record, &app);
    }
    match result {
        Ok(outcome) => {
            fill_from_record(&mut status, &outcome, &app);
            status.phase = Phase::Succeeded;
            status.finished_at = Some(outcome.finished_at.map(rfc3339).unwrap_or_else(|| now.clone()));
            let label = status.consistency.clone().unwrap_or_default();
            let message = format!("{label}-consistent backup of {}: snapshot {} on {}", app.name, outcome.snapshot_name, app.volumes.join(", "));
            status.conditions = ready(&status.conditions, true, "BackupSucceeded", message, &now, generation);
            finish(api, &name, rv, &id, &status).await?;
        }
        Err(e) => {
            let error = record.as_ref().and_then(|r| r.error.clone()).unwrap_or(e);
            finish(api, &name, rv, &id, &failed(status, error, &now, generation)).await?;
        }
    }
    Ok(Action::await_change())
}

/// Status writes of the outcome after a 409 (someone edited labels or spec meanwhile): read
/// again and write again while the object still shows this run as `Running`; if a
/// successor already judged it, its verdict stands.
const OUTCOME_CONFLICTS_MAX: u32 = 5;

async fn finish(api: &Api<Backup>, name: &str, mut rv: Option<String>, id: &str, status: &BackupStatus) -> OpResult<()> {
    let mut conflicts = 0;
    loop {
        match patch_status(api, name, rv.as_deref(), status).await {
            Err(OperatorError::Kube(e)) if e.is_conflict() && conflicts < OUTCOME_CONFLICTS_MAX => {
                conflicts += 1;
                let Some(current) = api.get_opt(name).await.map_err(|e| crate::K8sError::from_kube(format!("reading Backup {name}"), e))? else { return Ok(()) };
                let ours = current.status.as_ref().is_some_and(|s| s.phase == Phase::Running && s.backup_id.as_deref() == Some(id));
                if !ours {
                    tracing::warn!(backup = %name, "the Backup was judged by another replica meanwhile; keeping its verdict");
                    return Ok(());
                }
                rv = current.metadata.resource_version;
            }
            other => return other.map(|_| ()),
        }
    }
}

fn fill_from_record(status: &mut BackupStatus, record: &BackupRecord, app: &AppSpec) {
    let e = &record.evidence;
    status.consistency = record.consistency.map(|c| match c {
        Consistency::Application => "application".to_string(),
        Consistency::Crash => "crash".to_string(),
    });
    status.consistency_point = e.consistency_point.as_ref().map(|p| p.0.clone());
    if e.lock_requested.is_some() {
        status.freeze_window = Some(FreezeWindow {
            lock_requested: e.lock_requested.map(rfc3339),
            lock_granted: e.lock_granted.map(rfc3339),
            lock_released: e.lock_released.map(rfc3339),
            duration_ms: e.freeze_window().map(|d| d.as_millis() as u64),
        });
    }
    status.snapshots = record
        .snapshots
        .iter()
        .map(|s| SnapshotStatus {
            svm: app.svm.clone(),
            volume: s.volume_name.clone(),
            volume_uuid: s.volume_uuid.clone(),
            snapshot: record.snapshot_name.clone(),
            snapshot_uuid: s.snapshot_uuid.clone(),
            create_time: rfc3339(s.create_time),
        })
        .collect();
}

/// The core record a Succeeded Backup stands for (what a restore needs).
pub fn record_of(backup: &Backup, app: &str) -> Result<BackupRecord, String> {
    let status = backup.status.as_ref().ok_or("the Backup has no status")?;
    let parse = |t: &str| chrono::DateTime::parse_from_rfc3339(t).map(|t| t.with_timezone(&chrono::Utc)).map_err(|e| format!("time {t:?}: {e}"));
    let snapshots = status
        .snapshots
        .iter()
        .map(|s| {
            Ok(stasis_core::domain::SnapshotRef { volume_uuid: s.volume_uuid.clone(), volume_name: s.volume.clone(), snapshot_uuid: s.snapshot_uuid.clone(), create_time: parse(&s.create_time)? })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let window = status.freeze_window.clone().unwrap_or_default();
    let opt = |t: &Option<String>| t.as_deref().map(parse).transpose();
    Ok(BackupRecord {
        id: status.backup_id.clone().ok_or("the Backup's status has no backupId")?,
        app: app.to_string(),
        snapshot_name: status.snapshot_name.clone().ok_or("the Backup's status has no snapshotName")?,
        state: if status.phase == Phase::Succeeded { BackupState::Complete } else { BackupState::Failed },
        consistency: match status.consistency.as_deref() {
            Some("application") => Some(Consistency::Application),
            Some("crash") => Some(Consistency::Crash),
            _ => None,
        },
        evidence: stasis_core::domain::Evidence {
            lock_requested: opt(&window.lock_requested)?,
            lock_granted: opt(&window.lock_granted)?,
            lock_released: opt(&window.lock_released)?,
            consistency_point: status.consistency_point.clone().map(stasis_core::domain::ConsistencyPoint),
            thaw_error: None,
        },
        snapshots,
        started_at: opt(&status.started_at)?.unwrap_or_default(),
        finished_at: opt(&status.finished_at)?,
        error: status.error.clone(),
        verified: false,
        expired: false,
    })
}

/// Delete the backup's snapshot (by its name) on each of its volumes; gone already is fine.
async fn delete_snapshots(ctx: &Context, status: &BackupStatus) -> Result<(), StorageError> {
    let (Some(svm), Some(snapshot)) = (&status.svm, &status.snapshot_name) else { return Ok(()) };
    if status.volumes.is_empty() {
        return Ok(());
    }
    let volumes = match ctx.storage.volumes_by_name(svm, &status.volumes).await {
        Ok(v) => v,
        // The volumes are gone, and their snapshots with them.
        Err(StorageError::NotFound { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    for volume in volumes {
        match ctx.storage.snapshot_by_name(&volume.uuid, snapshot).await {
            Ok(Some(s)) => ctx.storage.delete_snapshot(&volume.uuid, &s.uuid).await?,
            Ok(None) | Err(StorageError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn cleanup(backup: &Backup, ctx: &Context) -> OpResult<Action> {
    let status = backup.status.clone().unwrap_or_default();
    delete_snapshots(ctx, &status).await?;
    tracing::info!(backup = %backup.name_any(), snapshot = ?status.snapshot_name, "deleted the backup's snapshots");
    Ok(Action::await_change())
}
