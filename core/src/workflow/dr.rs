//! Disaster recovery: set-up (peering, `dp` volumes, relationships, initialize), updates
//! after each app-consistent backup, planned and unplanned failover, failback and drills.
//! Every failover, failback and drill is recorded with its RPO (age of the state the new
//! side started from, at the failover's start) and RTO (failover start to app verified).
//!
//! Relationships live on their destination cluster: an unplanned failover talks to site B
//! only, so it works when site A does not answer at all. What site B starts from is always
//! the snapshot of one complete application-consistent backup (SnapRestore after the
//! break), never whatever an interrupted transfer left behind.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Orchestrator, WorkflowError, WorkflowResult};
use crate::domain::{sanitize, AppSpec, BackupRecord, BackupState, Consistency, ConsistencyPoint};
use crate::dr::{Divergence, DrPlan, DrState, FailoverKind, FailoverRecord, FailoverState, Site, VolumePair};
use crate::plugin::{AppPlugin, RecoveryTarget};
use crate::replication::{MirrorState, Replication, TransferInfo, TransferState, VolumePath};
use crate::storage::{Storage, StorageError, VolumeInfo};

/// Final snapshots of planned failovers and failbacks start with this. Not `stasis_`:
/// reconciliation deletes `stasis_` snapshots without a backup, and this one is the
/// common snapshot the next resync needs.
pub const DR_SNAPSHOT_PREFIX: &str = "stasisdr_";
/// Attempts at a SnapRestore or a break whose outcome is unknown or refused by a transfer
/// still winding down.
const ATTEMPTS_MAX: u32 = 5;
/// First pause between polls of a transfer or a relationship; doubles up to the max.
const POLL_INTERVAL_MIN: Duration = Duration::from_millis(5);
const POLL_INTERVAL_MAX: Duration = Duration::from_millis(500);

/// One site as the DR workflows reach it.
#[derive(Clone)]
pub struct DrSite {
    /// The cluster's name in the configuration.
    pub name: String,
    pub storage: Arc<dyn Storage>,
    pub replication: Arc<dyn Replication>,
    /// Where other clusters reach this one for peering (ONTAP: intercluster LIF addresses;
    /// the simulator also takes `IP:PORT`).
    pub intercluster_addresses: Vec<String>,
}

/// What a new DR plan asks for.
#[derive(Clone, Debug)]
pub struct DrPlanRequest {
    pub destination_svm: String,
    pub policy: String,
    /// Backup (and so update) interval: the RPO bound is this plus one transfer.
    pub schedule: Option<Duration>,
    /// Destination volume name per source volume; `None`: the same names.
    pub destination_volumes: Option<Vec<String>>,
}

/// Bounds on waiting for the arrays.
#[derive(Clone, Copy, Debug)]
pub struct DrBounds {
    /// Longest a baseline, an update or a resync may take.
    pub transfer_wait_max: Duration,
    /// Longest an SVM peer may take to become `peered`.
    pub peering_wait_max: Duration,
}

impl Default for DrBounds {
    fn default() -> Self {
        DrBounds { transfer_wait_max: Duration::from_secs(30 * 60), peering_wait_max: Duration::from_secs(60) }
    }
}

/// A failback either ran, or stopped before discarding anything.
#[derive(Clone, Debug)]
pub enum FailbackOutcome {
    /// The reverse resync would discard this at site A: confirm to go ahead.
    NeedsConfirmation(Divergence),
    Done(Box<FailoverRecord>),
}

fn elapsed(from: DateTime<Utc>, to: DateTime<Utc>) -> Duration {
    (to - from).to_std().unwrap_or_default()
}

fn invalid(message: impl Into<String>) -> WorkflowError {
    WorkflowError::Invalid(message.into())
}

/// The backup a failover may start from: complete, application-consistent, not expired.
fn restorable_backups(mut backups: Vec<BackupRecord>) -> Vec<BackupRecord> {
    backups.retain(|b| b.state == BackupState::Complete && b.consistency == Some(Consistency::Application) && !b.expired && b.evidence.lock_granted.is_some());
    // Newest consistency point first.
    backups.sort_by_key(|b| std::cmp::Reverse(b.evidence.lock_granted));
    backups
}

impl Orchestrator {
    fn new_failover(&self, app: &str, kind: FailoverKind, from: Site, to: Site) -> FailoverRecord {
        FailoverRecord {
            id: self.ids.next(match kind {
                FailoverKind::Drill => "d-",
                FailoverKind::Failback => "fb-",
                _ => "f-",
            }),
            app: app.to_string(),
            kind,
            state: FailoverState::Started,
            from_site: from,
            to_site: to,
            started_at: self.clock.now(),
            finished_at: None,
            restored_backup_id: None,
            restored_snapshot: None,
            restored_state_at: None,
            expected_point: None,
            recovered_point: None,
            rpo: None,
            rto: None,
            bytes_transferred: 0,
            verified: false,
            divergence: None,
            error: None,
        }
    }

    fn fail_failover(&self, record: &mut FailoverRecord, error: WorkflowError) -> WorkflowError {
        tracing::warn!(error = %error, kind = ?record.kind, "DR workflow failed");
        record.state = FailoverState::Failed;
        record.error = Some(error.to_string());
        record.finished_at = Some(self.clock.now());
        if let Err(e) = self.catalog.put_failover(record) {
            tracing::warn!(error = %e, "could not record the failed DR workflow");
        }
        error
    }

    fn dr_plan_of(&self, app: &str) -> WorkflowResult<DrPlan> {
        self.catalog.dr_plan(app)?.ok_or_else(|| invalid(format!("app {app} has no DR plan: run `stasis dr setup {app}` first")))
    }

    fn save_plan(&self, plan: &mut DrPlan) -> WorkflowResult<()> {
        plan.updated_at = self.clock.now();
        Ok(self.catalog.put_dr_plan(plan)?)
    }

    // ------------------------------------------------------------------ set-up

    /// Peer the clusters and SVMs, create the `dp` volumes and relationships on site B and
    /// initialize them. Idempotent: what exists is adopted.
    pub async fn dr_setup(&self, app: &AppSpec, request: &DrPlanRequest, a: &DrSite, b: &DrSite, bounds: DrBounds) -> WorkflowResult<DrPlan> {
        if app.volumes.is_empty() {
            return Err(invalid(format!("app {} has no volumes to replicate", app.name)));
        }
        let destination_names = request.destination_volumes.clone().unwrap_or_else(|| app.volumes.clone());
        if destination_names.len() != app.volumes.len() {
            return Err(invalid(format!("app {} has {} volumes but {} destination names were given", app.name, app.volumes.len(), destination_names.len())));
        }
        let mut plan = match self.catalog.dr_plan(&app.name)? {
            Some(plan) if matches!(plan.state, DrState::FailedOver | DrState::ReverseMirrored) => {
                return Err(invalid(format!("app {} is failed over to {}: fail back before setting up again", app.name, plan.destination_cluster)));
            }
            Some(plan) if plan.source_svm != app.svm || plan.source_volumes() != app.volumes || plan.destination_svm != request.destination_svm => {
                return Err(invalid(format!("app {} already has a different DR plan (to {}:{}); remove it first", app.name, plan.destination_cluster, plan.destination_svm)));
            }
            Some(plan) => plan,
            None => DrPlan {
                app: app.name.clone(),
                source_cluster: a.name.clone(),
                destination_cluster: b.name.clone(),
                source_svm: app.svm.clone(),
                destination_svm: request.destination_svm.clone(),
                volumes: app.volumes.iter().zip(&destination_names).map(|(s, d)| VolumePair { source: s.clone(), destination: d.clone(), relationship_uuid: None, reverse_relationship_uuid: None }).collect(),
                policy: request.policy.clone(),
                schedule: request.schedule,
                state: DrState::Planned,
                active_site: Site::A,
                updated_at: self.clock.now(),
            },
        };
        let span = tracing::info_span!("dr_setup", app = %app.name, to = %b.name);
        let _guard = span.enter();
        self.save_plan(&mut plan)?;

        let (cluster_a, _) = self.ensure_peering(a, b, &plan.source_svm, &plan.destination_svm, bounds).await?;
        let sources = a.storage.volumes_by_name(&plan.source_svm, &plan.source_volumes()).await?;
        for (pair, source) in plan.volumes.clone().iter().zip(&sources) {
            let destination = b.replication.create_dp_volume(&plan.destination_svm, &pair.destination, source.size_bytes).await?;
            // Hosts at B find the data where they found it at A (read-only until a break).
            if let (Some(path), None) = (source.junction_path.as_deref(), destination.junction_path.as_deref()) {
                b.replication.mount_volume(&destination.uuid, path).await?;
            }
            // ONTAP names the source by the peer SVM's name as the destination knows it.
            let relationship = b
                .replication
                .create_relationship(&VolumePath::new(&plan.source_svm, &pair.source), &VolumePath::new(&plan.destination_svm, &pair.destination), &plan.policy)
                .await?;
            if let Some(p) = plan.volumes.iter_mut().find(|p| p.destination == pair.destination) {
                p.relationship_uuid = Some(relationship.uuid.clone());
            }
            self.save_plan(&mut plan)?;
            if relationship.state == MirrorState::Uninitialized {
                b.replication.set_relationship_state(&relationship.uuid, MirrorState::Snapmirrored).await?;
            }
        }
        for pair in &plan.volumes {
            let uuid = pair.relationship_uuid.as_deref().unwrap_or_default();
            self.await_mirrored(b.replication.as_ref(), uuid, bounds).await?;
        }
        plan.state = DrState::Mirrored;
        self.save_plan(&mut plan)?;
        tracing::info!(cluster_a = %cluster_a, "DR set up: mirrors initialized");
        Ok(plan)
    }

    /// Cluster peering (offered by B, accepted by A with its passphrase) and SVM peering
    /// (requested on B, accepted on A). Returns the two clusters' names.
    async fn ensure_peering(&self, a: &DrSite, b: &DrSite, svm_a: &str, svm_b: &str, bounds: DrBounds) -> WorkflowResult<(String, String)> {
        let id_a = a.replication.cluster_identity().await?;
        let id_b = b.replication.cluster_identity().await?;
        if id_a.uuid == id_b.uuid && !id_a.uuid.is_empty() {
            return Err(invalid(format!("sites A and B are the same cluster ({})", id_a.name)));
        }
        let b_knows_a = b.replication.cluster_peers().await?.into_iter().any(|p| p.name == id_a.name);
        let a_knows_b = a.replication.cluster_peers().await?.into_iter().any(|p| p.name == id_b.name);
        match (b_knows_a, a_knows_b) {
            (true, true) => {}
            (false, false) => {
                let offer = b.replication.create_cluster_peer(&a.intercluster_addresses, None).await?;
                let passphrase = offer.passphrase.ok_or_else(|| invalid(format!("cluster {} offered a peering without a passphrase", id_b.name)))?;
                a.replication.create_cluster_peer(&b.intercluster_addresses, Some(&passphrase)).await?;
            }
            (b_side, _) => {
                let (has, lacks) = if b_side { (&id_b.name, &id_a.name) } else { (&id_a.name, &id_b.name) };
                return Err(invalid(format!(
                    "cluster {has} has a peer entry for {lacks} but not the other way round; its passphrase cannot be recovered: delete that cluster peer and run set-up again"
                )));
            }
        }
        let b_peer = b.replication.svm_peers().await?.into_iter().find(|p| p.svm == svm_b && p.peer_svm == svm_a && p.peer_cluster == id_a.name);
        let b_peer = match b_peer {
            Some(p) => p,
            None => b.replication.create_svm_peer(svm_b, svm_a, &id_a.name).await?,
        };
        let deadline = tokio::time::Instant::now() + bounds.peering_wait_max;
        let mut pause = POLL_INTERVAL_MIN;
        loop {
            if b.replication.svm_peers().await?.into_iter().any(|p| p.uuid == b_peer.uuid && p.state == "peered") {
                break;
            }
            if let Some(pending) = a.replication.svm_peers().await?.into_iter().find(|p| p.svm == svm_a && p.peer_svm == svm_b && p.peer_cluster == id_b.name && p.state == "pending") {
                a.replication.accept_svm_peer(&pending.uuid).await?;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(WorkflowError::Bound(format!("SVM peer {svm_b} -> {}:{svm_a} not peered within {:?}", id_a.name, bounds.peering_wait_max)));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(POLL_INTERVAL_MAX);
        }
        Ok((id_a.name, id_b.name))
    }

    /// Wait until a relationship is `snapmirrored` with no transfer running.
    async fn await_mirrored(&self, replication: &dyn Replication, uuid: &str, bounds: DrBounds) -> WorkflowResult<()> {
        let deadline = tokio::time::Instant::now() + bounds.transfer_wait_max;
        let mut pause = POLL_INTERVAL_MIN;
        loop {
            let r = replication.relationship(uuid).await?;
            let running = r.transfer.as_ref().is_some_and(|t| t.state.is_running());
            if r.state == MirrorState::Snapmirrored && !running {
                return Ok(());
            }
            if let Some(t) = r.transfer.as_ref().filter(|t| matches!(t.state, TransferState::Failed)) {
                if r.state != MirrorState::Snapmirrored {
                    return Err(invalid(format!("relationship {uuid} ({} -> {}): transfer {:?} failed{}", r.source, r.destination, t.uuid, r.unhealthy_reason.map(|m| format!(": {m}")).unwrap_or_default())));
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(WorkflowError::Bound(format!("relationship {uuid} not snapmirrored within {:?} (state {:?})", bounds.transfer_wait_max, r.state)));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(POLL_INTERVAL_MAX);
        }
    }

    /// Poll a transfer until it ends; `Success` or an error naming why not.
    pub async fn await_transfer(&self, replication: &dyn Replication, transfer: &TransferInfo, bounds: DrBounds) -> WorkflowResult<TransferInfo> {
        let deadline = tokio::time::Instant::now() + bounds.transfer_wait_max;
        let mut pause = POLL_INTERVAL_MIN;
        let mut current = transfer.clone();
        loop {
            match current.state {
                TransferState::Success => return Ok(current),
                ref s if !s.is_running() => {
                    return Err(WorkflowError::Storage(StorageError::Refused {
                        code: 0,
                        message: format!("transfer {} of relationship {} ended {s:?}{}", current.uuid, current.relationship_uuid, current.error.as_ref().map(|e| format!(": {e}")).unwrap_or_default()),
                        target: None,
                    }))
                }
                _ => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(WorkflowError::Bound(format!("transfer {} still {:?} after {:?}", current.uuid, current.state, bounds.transfer_wait_max)));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(POLL_INTERVAL_MAX);
            current = replication.transfer(&current.relationship_uuid, &current.uuid).await?;
        }
    }

    // ------------------------------------------------------------------ updates

    /// Send backup `backup_id`'s snapshot to site B (one update per relationship, carrying
    /// that snapshot). With `wait`, returns once every transfer succeeded and the snapshot is
    /// on every destination volume.
    pub async fn dr_update(&self, app: &AppSpec, backup_id: &str, b: &DrSite, wait: bool, bounds: DrBounds) -> WorkflowResult<Vec<TransferInfo>> {
        let plan = self.dr_plan_of(&app.name)?;
        if plan.state != DrState::Mirrored {
            return Err(invalid(format!("app {}: mirrors are {:?}, not running A -> B", app.name, plan.state)));
        }
        let backup = self.catalog.backup(backup_id)?.ok_or_else(|| invalid(format!("no backup {backup_id}")))?;
        if backup.app != app.name || backup.state != BackupState::Complete {
            return Err(invalid(format!("backup {backup_id} is not a complete backup of {}", app.name)));
        }
        let mut started = Vec::new();
        for pair in &plan.volumes {
            let uuid = pair.relationship_uuid.as_deref().ok_or_else(|| invalid(format!("volume {} has no relationship yet", pair.source)))?;
            started.push(b.replication.start_transfer(uuid, Some(&backup.snapshot_name)).await?);
        }
        if !wait {
            return Ok(started);
        }
        let mut done = Vec::new();
        for t in &started {
            done.push(self.await_transfer(b.replication.as_ref(), t, bounds).await?);
        }
        self.destination_volumes_with(b, &plan, &backup.snapshot_name).await?.ok_or_else(|| invalid(format!("the update succeeded but {} is not on every volume at {}", backup.snapshot_name, b.name)))?;
        Ok(done)
    }

    /// Back up, and when the backup is application-consistent, send it to site B. The backup
    /// stands even if the update fails (the next one carries a newer snapshot).
    pub async fn backup_and_replicate(&self, app: &AppSpec, plugin: Arc<dyn AppPlugin>, b: &DrSite, wait: bool, bounds: DrBounds) -> WorkflowResult<(BackupRecord, WorkflowResult<Vec<TransferInfo>>)> {
        let backup = self.backup(app, plugin).await?.record;
        let update = match backup.consistency {
            Some(Consistency::Application) => self.dr_update(app, &backup.id, b, wait, bounds).await,
            _ => Err(invalid(format!("backup {} is not application-consistent: not replicated", backup.id))),
        };
        Ok((backup, update))
    }

    /// B's destination volumes, if `snapshot` is on every one of them.
    async fn destination_volumes_with(&self, b: &DrSite, plan: &DrPlan, snapshot: &str) -> WorkflowResult<Option<Vec<VolumeInfo>>> {
        let volumes = b.storage.volumes_by_name(&plan.destination_svm, &plan.destination_volumes()).await?;
        for v in &volumes {
            if b.storage.snapshot_by_name(&v.uuid, snapshot).await?.is_none() {
                return Ok(None);
            }
        }
        Ok(Some(volumes))
    }

    /// The newest complete application-consistent backup whose snapshot is on every one of
    /// B's volumes.
    pub async fn newest_mirrored_backup(&self, app: &str, b: &DrSite, plan: &DrPlan) -> WorkflowResult<Option<(BackupRecord, Vec<VolumeInfo>)>> {
        for backup in restorable_backups(self.catalog.backups(Some(app))?) {
            if let Some(volumes) = self.destination_volumes_with(b, plan, &backup.snapshot_name).await? {
                return Ok(Some((backup, volumes)));
            }
        }
        Ok(None)
    }

    // ------------------------------------------------------------------ failover

    /// Break every relationship on `site` (the destination), aborting a transfer in flight.
    /// Needs only the destination cluster.
    async fn break_mirrors(&self, replication: &dyn Replication, uuids: &[String]) -> WorkflowResult<()> {
        for uuid in uuids {
            let mut attempt = 0;
            loop {
                attempt += 1;
                let r = replication.relationship(uuid).await?;
                if r.state == MirrorState::BrokenOff {
                    break;
                }
                if let Some(t) = r.transfer.as_ref().filter(|t| t.state.is_running()) {
                    if let Some(tu) = &t.uuid {
                        if let Err(e) = replication.abort_transfer(uuid, tu).await {
                            tracing::warn!(error = %e, transfer = %tu, "could not abort the transfer in flight; breaking anyway");
                        }
                    }
                }
                match replication.set_relationship_state(uuid, MirrorState::BrokenOff).await {
                    Ok(()) => break,
                    Err(e) if attempt < ATTEMPTS_MAX => {
                        tracing::warn!(error = %e, attempt, relationship = %uuid, "break refused or unknown; looking again");
                        tokio::time::sleep(POLL_INTERVAL_MIN * 2u32.pow(attempt)).await;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    /// SnapRestore each volume to `snapshot` (the app is stopped: repeating a restore whose
    /// outcome is unknown is safe).
    async fn revert_volumes(&self, storage: &dyn Storage, volumes: &[VolumeInfo], snapshot: &str) -> WorkflowResult<()> {
        for v in volumes {
            let mut attempt = 0;
            loop {
                attempt += 1;
                match storage.restore_volume(&v.uuid, snapshot).await {
                    Ok(()) => break,
                    Err(e) if (e.is_indeterminate() || e.is_retryable()) && attempt < ATTEMPTS_MAX => {
                        tracing::warn!(error = %e, attempt, volume = %v.name, "SnapRestore outcome unknown; repeating it");
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    /// Open the app on `volumes` (its own, in place), check it reached `expected`, start it.
    async fn start_verified(&self, plugin: &Arc<dyn AppPlugin>, volumes: Vec<VolumeInfo>, expected: Option<&ConsistencyPoint>, record: &mut FailoverRecord) -> WorkflowResult<()> {
        let report = plugin.recover(&RecoveryTarget { volumes, in_place: true }).await?;
        record.recovered_point = Some(report.recovered_point.clone());
        if let Some(expected) = expected {
            if *expected != report.recovered_point {
                return Err(WorkflowError::Plugin(crate::plugin::PluginError::Verification(format!("site started at {} but the restored state is {expected}", report.recovered_point))));
            }
        }
        plugin.start().await?;
        record.verified = true;
        Ok(())
    }

    fn relationship_uuids(plan: &DrPlan) -> WorkflowResult<Vec<String>> {
        plan.volumes.iter().map(|p| p.relationship_uuid.clone().ok_or_else(|| invalid(format!("volume {} has no relationship: DR set-up did not finish", p.source)))).collect()
    }

    fn finish_failover(&self, record: &mut FailoverRecord, plan: &mut DrPlan, state: DrState, active: Site) -> WorkflowResult<()> {
        let now = self.clock.now();
        record.state = FailoverState::Complete;
        record.finished_at = Some(now);
        record.rto = Some(elapsed(record.started_at, now));
        record.rpo = Some(record.restored_state_at.map(|t| elapsed(t, record.started_at)).unwrap_or_default());
        plan.state = state;
        plan.active_site = active;
        self.save_plan(plan)?;
        self.catalog.put_failover(record)?;
        tracing::info!(kind = ?record.kind, rpo = ?record.rpo, rto = ?record.rto, backup = ?record.restored_backup_id, "DR workflow complete");
        Ok(())
    }

    /// Site A is gone: break on B, revert B's volumes to the newest complete
    /// application-consistent backup there, start the app on B (`plugin_b`, an instance on
    /// B's volumes, stopped) and verify it reached that backup's point. Talks to B only.
    pub async fn failover_unplanned(&self, app: &AppSpec, b: &DrSite, plugin_b: Arc<dyn AppPlugin>) -> WorkflowResult<FailoverRecord> {
        let mut plan = self.dr_plan_of(&app.name)?;
        if plan.state != DrState::Mirrored {
            return Err(invalid(format!("app {}: nothing to fail over (DR plan {:?}, running on site {:?})", app.name, plan.state, plan.active_site)));
        }
        let mut record = self.new_failover(&app.name, FailoverKind::Unplanned, Site::A, Site::B);
        let span = tracing::info_span!("failover", id = %record.id, app = %app.name, kind = "unplanned");
        let _guard = span.enter();
        self.catalog.put_failover(&record)?;
        match self.unplanned_steps(app, b, &plugin_b, &mut plan, &mut record).await {
            Ok(()) => Ok(record),
            Err(e) => Err(self.fail_failover(&mut record, e)),
        }
    }

    async fn unplanned_steps(&self, app: &AppSpec, b: &DrSite, plugin_b: &Arc<dyn AppPlugin>, plan: &mut DrPlan, record: &mut FailoverRecord) -> WorkflowResult<()> {
        let uuids = Self::relationship_uuids(plan)?;
        self.break_mirrors(b.replication.as_ref(), &uuids).await?;
        record.state = FailoverState::Broken;
        self.catalog.put_failover(record)?;
        // B's active file system is whatever the last complete transfer left; only a
        // backup's snapshot is a known application-consistent state.
        let (backup, volumes) = self
            .newest_mirrored_backup(&app.name, b, plan)
            .await?
            .ok_or_else(|| invalid(format!("no complete application-consistent backup of {} is on every volume at {}", app.name, b.name)))?;
        self.revert_volumes(b.storage.as_ref(), &volumes, &backup.snapshot_name).await?;
        record.restored_backup_id = Some(backup.id.clone());
        record.restored_snapshot = Some(backup.snapshot_name.clone());
        record.restored_state_at = backup.evidence.lock_granted;
        record.expected_point = backup.evidence.consistency_point.clone();
        record.state = FailoverState::DataReady;
        self.catalog.put_failover(record)?;
        let volumes = b.storage.volumes_by_name(&plan.destination_svm, &plan.destination_volumes()).await?;
        self.start_verified(plugin_b, volumes, backup.evidence.consistency_point.as_ref(), record).await?;
        self.finish_failover(record, plan, DrState::FailedOver, Site::B)
    }

    /// Both sites answer: freeze and stop the app on A, snapshot, send that snapshot to B,
    /// quiesce and break the mirrors, start on B at exactly the stopped state. Nothing is
    /// lost (RPO 0). If anything fails before the break, the app starts again on A.
    pub async fn failover_planned(&self, app: &AppSpec, a: &DrSite, b: &DrSite, plugin_a: Arc<dyn AppPlugin>, plugin_b: Arc<dyn AppPlugin>, bounds: DrBounds) -> WorkflowResult<FailoverRecord> {
        let mut plan = self.dr_plan_of(&app.name)?;
        if plan.state != DrState::Mirrored {
            return Err(invalid(format!("app {}: nothing to fail over (DR plan {:?})", app.name, plan.state)));
        }
        let mut record = self.new_failover(&app.name, FailoverKind::Planned, Site::A, Site::B);
        let span = tracing::info_span!("failover", id = %record.id, app = %app.name, kind = "planned");
        let _guard = span.enter();
        self.catalog.put_failover(&record)?;
        let uuids = match Self::relationship_uuids(&plan) {
            Ok(u) => u,
            Err(e) => return Err(self.fail_failover(&mut record, e)),
        };
        let sources = (a.storage.as_ref(), &plan.source_svm, plan.source_volumes());
        let moved = self.switch_over(app, sources, b, &uuids, &plugin_a, &mut record, bounds).await;
        if let Err(e) = moved {
            return Err(self.fail_failover(&mut record, e));
        }
        let volumes = match b.storage.volumes_by_name(&plan.destination_svm, &plan.destination_volumes()).await {
            Ok(v) => v,
            Err(e) => return Err(self.fail_failover(&mut record, e.into())),
        };
        let snapshot = record.restored_snapshot.clone().unwrap_or_default();
        let started = async {
            self.revert_volumes(b.storage.as_ref(), &volumes, &snapshot).await?;
            let expected = record.expected_point.clone();
            self.start_verified(&plugin_b, volumes.clone(), expected.as_ref(), &mut record).await?;
            self.finish_failover(&mut record, &mut plan, DrState::FailedOver, Site::B)
        }
        .await;
        match started {
            Ok(()) => Ok(record),
            Err(e) => {
                // The mirrors are broken: record where things stand so failback can resume.
                plan.state = DrState::FailedOver;
                plan.active_site = Site::B;
                let _ = self.save_plan(&mut plan);
                Err(self.fail_failover(&mut record, e))
            }
        }
    }

    /// The planned switch from one side to the other over `relationship_uuids` (on
    /// `target`, the destination): freeze and stop the app on the source, take the final
    /// snapshot, send it, quiesce and break. Before the break, any failure restarts the app
    /// on the source.
    #[allow(clippy::too_many_arguments)]
    async fn switch_over(
        &self,
        app: &AppSpec,
        (source_storage, source_svm, source_volumes): (&dyn Storage, &String, Vec<String>),
        target: &DrSite,
        relationship_uuids: &[String],
        plugin_source: &Arc<dyn AppPlugin>,
        record: &mut FailoverRecord,
        bounds: DrBounds,
    ) -> WorkflowResult<()> {
        let volumes = source_storage.volumes_by_name(source_svm, &source_volumes).await?;
        source_storage.warm_up().await?;
        let point = match tokio::time::timeout(app.freeze_timeout, plugin_source.quiesce()).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                let _ = plugin_source.unquiesce().await;
                return Err(e.into());
            }
            Err(_) => {
                let _ = plugin_source.unquiesce().await;
                return Err(WorkflowError::Bound(format!("quiesce did not finish within {:?}", app.freeze_timeout)));
            }
        };
        // Commits are fenced: stopping now loses nothing acknowledged after `point`.
        let stopped_at = self.clock.now();
        if let Err(e) = plugin_source.stop().await {
            let _ = plugin_source.unquiesce().await;
            return Err(e.into());
        }
        record.expected_point = Some(point);
        record.restored_state_at = Some(stopped_at);
        record.state = FailoverState::SourceStopped;
        self.catalog.put_failover(record)?;
        let result: WorkflowResult<()> = async {
            let snapshot = format!("{DR_SNAPSHOT_PREFIX}{}", sanitize(&record.id));
            let deadline = bounds.transfer_wait_max.min(Duration::from_secs(120));
            match volumes.as_slice() {
                [one] => {
                    source_storage.create_snapshot(&one.uuid, &snapshot, deadline).await?;
                }
                many => {
                    let uuids: Vec<String> = many.iter().map(|v| v.uuid.clone()).collect();
                    let cg = source_storage.ensure_consistency_group(source_svm, &app.consistency_group_name(), &uuids).await?;
                    source_storage.create_cg_snapshot(&cg.uuid, &snapshot, deadline).await?;
                }
            }
            record.restored_snapshot = Some(snapshot.clone());
            let mut transfers = Vec::new();
            for uuid in relationship_uuids {
                transfers.push(target.replication.start_transfer(uuid, Some(&snapshot)).await?);
            }
            for t in &transfers {
                record.bytes_transferred += self.await_transfer(target.replication.as_ref(), t, bounds).await?.bytes_transferred;
            }
            for uuid in relationship_uuids {
                target.replication.set_relationship_state(uuid, MirrorState::Paused).await?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "switch-over failed before the break: starting the app again on the source");
            for uuid in relationship_uuids {
                let _ = target.replication.set_relationship_state(uuid, MirrorState::Snapmirrored).await;
            }
            let _ = plugin_source.start().await;
            return Err(e);
        }
        self.break_mirrors(target.replication.as_ref(), relationship_uuids).await?;
        record.state = FailoverState::Broken;
        self.catalog.put_failover(record)?;
        Ok(())
    }

    // ------------------------------------------------------------------ failback

    /// What a resync onto `dest` volumes would discard: snapshots newer than the newest one
    /// both sides hold, and bytes written since it.
    pub async fn divergence(&self, dest: &DrSite, dest_volumes: &[VolumeInfo], other: &DrSite, other_volumes: &[VolumeInfo]) -> WorkflowResult<Divergence> {
        let mut out = Divergence { bytes: Some(0), ..Default::default() };
        for (d, o) in dest_volumes.iter().zip(other_volumes) {
            let dest_snaps = dest.storage.snapshots(&d.uuid).await?;
            let other_names: std::collections::HashSet<String> = other.storage.snapshots(&o.uuid).await?.into_iter().map(|s| s.name).collect();
            let common = dest_snaps.iter().rposition(|s| other_names.contains(&s.name));
            let Some(common) = common else {
                return Err(invalid(format!("volumes {} and {} have no snapshot in common: a resync would need a new baseline", d.name, o.name)));
            };
            let common_snap = &dest_snaps[common];
            out.common_snapshots.push((d.name.clone(), common_snap.name.clone()));
            out.snapshots.extend(dest_snaps[common + 1..].iter().map(|s| (d.name.clone(), s.name.clone())));
            let bytes = dest.replication.snapshot_delta_bytes(&d.uuid, &common_snap.uuid).await?;
            out.bytes = match (out.bytes, bytes) {
                (Some(sum), Some(b)) => Some(sum + b),
                _ => None,
            };
        }
        Ok(out)
    }

    /// Back to site A: reverse resync (A becomes the mirror of B; what A wrote after the last
    /// common snapshot is discarded, so it is reported first and needs `confirm`), then the
    /// planned switch back (stop on B, final update, break, start on A), then A -> B mirrors
    /// again (reversed once more; B reverts to the final snapshot, which A holds too).
    #[allow(clippy::too_many_arguments)]
    pub async fn failback(&self, app: &AppSpec, a: &DrSite, b: &DrSite, plugin_a: Arc<dyn AppPlugin>, plugin_b: Arc<dyn AppPlugin>, confirm: bool, bounds: DrBounds) -> WorkflowResult<FailbackOutcome> {
        let mut plan = self.dr_plan_of(&app.name)?;
        if !matches!(plan.state, DrState::FailedOver | DrState::ReverseMirrored) {
            return Err(invalid(format!("app {} is not failed over (DR plan {:?})", app.name, plan.state)));
        }
        a.storage.warm_up().await.map_err(|e| invalid(format!("site A ({}) does not answer; failback needs it: {e}", a.name)))?;
        let a_volumes = a.storage.volumes_by_name(&plan.source_svm, &plan.source_volumes()).await?;
        let b_volumes = b.storage.volumes_by_name(&plan.destination_svm, &plan.destination_volumes()).await?;
        let divergence = if plan.state == DrState::FailedOver { Some(self.divergence(a, &a_volumes, b, &b_volumes).await?) } else { None };
        if let Some(d) = divergence.as_ref().filter(|d| !d.is_empty()) {
            if !confirm {
                return Ok(FailbackOutcome::NeedsConfirmation(d.clone()));
            }
        }
        let mut record = self.new_failover(&app.name, FailoverKind::Failback, Site::B, Site::A);
        record.divergence = divergence;
        let span = tracing::info_span!("failback", id = %record.id, app = %app.name);
        let _guard = span.enter();
        self.catalog.put_failover(&record)?;
        match self.failback_steps(app, a, b, &plugin_a, &plugin_b, &mut plan, &mut record, bounds).await {
            Ok(()) => Ok(FailbackOutcome::Done(Box::new(record))),
            Err(e) => Err(self.fail_failover(&mut record, e)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn failback_steps(&self, app: &AppSpec, a: &DrSite, b: &DrSite, plugin_a: &Arc<dyn AppPlugin>, plugin_b: &Arc<dyn AppPlugin>, plan: &mut DrPlan, record: &mut FailoverRecord, bounds: DrBounds) -> WorkflowResult<()> {
        // 1. Reverse resync: each A -> B relationship is reversed on B and lives on A as B -> A.
        if plan.state == DrState::FailedOver {
            for i in 0..plan.volumes.len() {
                let pair = plan.volumes[i].clone();
                let (on_a, on_b) = (VolumePath::new(&plan.source_svm, &pair.source), VolumePath::new(&plan.destination_svm, &pair.destination));
                let reversed = match Self::relationship_between(a, &plan.source_svm, &on_b, &on_a).await? {
                    Some(r) => r,
                    None => {
                        let uuid = pair.relationship_uuid.clone().ok_or_else(|| invalid(format!("volume {} has no relationship to reverse", pair.source)))?;
                        b.replication.reverse_relationship(&uuid, &on_a, &on_b).await?;
                        Self::relationship_between(a, &plan.source_svm, &on_b, &on_a).await?.ok_or_else(|| invalid(format!("relationship {on_b} -> {on_a} reversed but not listed at {}", a.name)))?
                    }
                };
                plan.volumes[i].reverse_relationship_uuid = Some(reversed.uuid);
                self.save_plan(plan)?;
            }
            for pair in plan.volumes.clone() {
                let uuid = pair.reverse_relationship_uuid.unwrap_or_default();
                self.await_mirrored(a.replication.as_ref(), &uuid, bounds).await?;
                if let Some(t) = a.replication.relationship(&uuid).await?.transfer {
                    record.bytes_transferred += t.bytes_transferred;
                }
            }
            plan.state = DrState::ReverseMirrored;
            self.save_plan(plan)?;
        }
        // 2. Planned switch back to A.
        let reverse: Vec<String> = plan.volumes.iter().map(|p| p.reverse_relationship_uuid.clone().ok_or_else(|| invalid(format!("volume {} has no reverse relationship", p.source)))).collect::<WorkflowResult<_>>()?;
        let sources = (b.storage.as_ref(), &plan.destination_svm, plan.destination_volumes());
        self.switch_over(app, sources, a, &reverse, plugin_b, record, bounds).await?;
        let a_volumes = a.storage.volumes_by_name(&plan.source_svm, &plan.source_volumes()).await?;
        let snapshot = record.restored_snapshot.clone().unwrap_or_default();
        self.revert_volumes(a.storage.as_ref(), &a_volumes, &snapshot).await?;
        plan.active_site = Site::A;
        self.save_plan(plan)?;
        let expected = record.expected_point.clone();
        self.start_verified(plugin_a, a_volumes, expected.as_ref(), record).await?;
        // 3. Protect again: reverse once more, so A -> B runs on B (B reverts to the final
        // snapshot, which both sides hold: nothing written at B is lost).
        for i in 0..plan.volumes.len() {
            let pair = plan.volumes[i].clone();
            let (on_a, on_b) = (VolumePath::new(&plan.source_svm, &pair.source), VolumePath::new(&plan.destination_svm, &pair.destination));
            let forward = match Self::relationship_between(b, &plan.destination_svm, &on_a, &on_b).await? {
                Some(r) => r,
                None => {
                    let uuid = pair.reverse_relationship_uuid.clone().unwrap_or_default();
                    a.replication.reverse_relationship(&uuid, &on_b, &on_a).await?;
                    Self::relationship_between(b, &plan.destination_svm, &on_a, &on_b).await?.ok_or_else(|| invalid(format!("relationship {on_a} -> {on_b} reversed but not listed at {}", b.name)))?
                }
            };
            plan.volumes[i].relationship_uuid = Some(forward.uuid);
            plan.volumes[i].reverse_relationship_uuid = None;
            self.save_plan(plan)?;
        }
        for pair in plan.volumes.clone() {
            self.await_mirrored(b.replication.as_ref(), pair.relationship_uuid.as_deref().unwrap_or_default(), bounds).await?;
        }
        self.finish_failover(record, plan, DrState::Mirrored, Site::A)
    }

    /// The relationship `source` -> `destination` listed on `site` (its destination).
    async fn relationship_between(site: &DrSite, destination_svm: &str, source: &VolumePath, destination: &VolumePath) -> WorkflowResult<Option<crate::replication::RelationshipInfo>> {
        Ok(site.replication.relationships(destination_svm).await?.into_iter().find(|r| r.source == *source && r.destination == *destination))
    }

    // ------------------------------------------------------------------ drill

    /// A non-disruptive test at site B: FlexClone the newest mirrored application-consistent
    /// backup's snapshot, open the app on the clones (a second instance through
    /// `plugin_b`), verify it reaches the backup's point, report the RPO (the age of that
    /// state now), delete the clones. The mirrors keep running.
    pub async fn dr_drill(&self, app: &AppSpec, b: &DrSite, plugin_b: Arc<dyn AppPlugin>) -> WorkflowResult<FailoverRecord> {
        let plan = self.dr_plan_of(&app.name)?;
        if plan.state != DrState::Mirrored {
            return Err(invalid(format!("app {}: a drill needs running A -> B mirrors (DR plan {:?})", app.name, plan.state)));
        }
        let mut record = self.new_failover(&app.name, FailoverKind::Drill, Site::A, Site::B);
        let span = tracing::info_span!("drill", id = %record.id, app = %app.name);
        let _guard = span.enter();
        self.catalog.put_failover(&record)?;
        let mut clones: Vec<VolumeInfo> = Vec::new();
        let result: WorkflowResult<()> = async {
            let (backup, volumes) = self
                .newest_mirrored_backup(&app.name, b, &plan)
                .await?
                .ok_or_else(|| invalid(format!("no complete application-consistent backup of {} is on every volume at {}", app.name, b.name)))?;
            record.restored_backup_id = Some(backup.id.clone());
            record.restored_snapshot = Some(backup.snapshot_name.clone());
            record.restored_state_at = backup.evidence.lock_granted;
            record.expected_point = backup.evidence.consistency_point.clone();
            for v in &volumes {
                let name = format!("{}_drill_{}", v.name, sanitize(&record.id));
                clones.push(b.storage.clone_volume(&v.uuid, &backup.snapshot_name, &name, None).await?);
            }
            record.state = FailoverState::DataReady;
            let report = plugin_b.recover(&RecoveryTarget { volumes: clones.clone(), in_place: false }).await?;
            record.recovered_point = Some(report.recovered_point.clone());
            if backup.evidence.consistency_point.as_ref() != Some(&report.recovered_point) {
                return Err(WorkflowError::Plugin(crate::plugin::PluginError::Verification(format!(
                    "the drill copy opened at {} but backup {} is at {}",
                    report.recovered_point,
                    backup.id,
                    backup.evidence.consistency_point.as_ref().map(|p| p.0.as_str()).unwrap_or("none")
                ))));
            }
            record.verified = true;
            Ok(())
        }
        .await;
        let mut cleanup_error = None;
        for c in &clones {
            if let Err(e) = b.storage.delete_volume(&c.uuid).await {
                cleanup_error.get_or_insert(e);
            }
        }
        if let Err(e) = result {
            return Err(self.fail_failover(&mut record, e));
        }
        if let Some(e) = cleanup_error {
            return Err(self.fail_failover(&mut record, invalid(format!("the drill passed but its clone could not be deleted: {e}"))));
        }
        let now = self.clock.now();
        record.state = FailoverState::Complete;
        record.finished_at = Some(now);
        record.rto = Some(elapsed(record.started_at, now));
        // A drill's RPO: how old the state a failover now would restore is.
        record.rpo = Some(record.restored_state_at.map(|t| elapsed(t, now)).unwrap_or_default());
        self.catalog.put_failover(&record)?;
        tracing::info!(rpo = ?record.rpo, rto = ?record.rto, "drill passed");
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Evidence, SnapshotRef};

    fn backup(id: &str, granted_s: i64, state: BackupState, consistency: Option<Consistency>, expired: bool) -> BackupRecord {
        let t = DateTime::<Utc>::from_timestamp(granted_s, 0).unwrap();
        BackupRecord {
            id: id.into(),
            app: "a".into(),
            snapshot_name: BackupRecord::snapshot_name_for(id),
            state,
            consistency,
            evidence: Evidence { lock_granted: Some(t), ..Default::default() },
            snapshots: vec![SnapshotRef { volume_uuid: "v".into(), volume_name: "v".into(), snapshot_uuid: "s".into(), create_time: t }],
            started_at: t,
            finished_at: Some(t),
            error: None,
            verified: false,
            expired,
        }
    }

    #[test]
    fn only_complete_application_consistent_live_backups_qualify_newest_first() {
        let app = Some(Consistency::Application);
        let got = restorable_backups(vec![
            backup("old", 10, BackupState::Complete, app, false),
            backup("crash", 40, BackupState::Complete, Some(Consistency::Crash), false),
            backup("new", 30, BackupState::Complete, app, false),
            backup("failed", 50, BackupState::Failed, app, false),
            backup("expired", 45, BackupState::Complete, app, true),
            backup("pending", 60, BackupState::Snapshotted, app, false),
        ]);
        assert_eq!(got.iter().map(|b| b.id.as_str()).collect::<Vec<_>>(), ["new", "old"]);
    }
}
