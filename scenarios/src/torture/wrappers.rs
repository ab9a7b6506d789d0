//! What the harness puts between the orchestrator and the real parts: a catalog that can
//! fail its writes, the step hook that crashes the orchestrator, the crash-consistent mode
//! (no quiesce), and the two test-only mutants the checker must catch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use stasis_core::catalog::{Catalog, CatalogError, CatalogResult};
use stasis_core::domain::{AppSpec, BackupRecord, ConsistencyPoint, Policy, RestoreRecord};
use stasis_core::plugin::{AppPlugin, PluginError, RecoveryReport, RecoveryTarget};
use stasis_core::plugins::simdb::{consistency_point, SimDb};
use stasis_core::storage::{ConsistencyGroupInfo, SnapshotInfo, Storage, StorageResult, VolumeInfo};
use stasis_core::workflow::{Crashed, Step, StepHook};

/// A catalog whose n-th next write fails like a full disk: nothing is written.
pub struct FaultyCatalog<C> {
    inner: C,
    /// Writes left before the failure; `u32::MAX` = disarmed.
    fail_in: AtomicU32,
    pub failures: AtomicU32,
}

impl<C: Catalog> FaultyCatalog<C> {
    pub fn new(inner: C) -> Self {
        FaultyCatalog { inner, fail_in: AtomicU32::new(u32::MAX), failures: AtomicU32::new(0) }
    }
    /// Fail the write after `skip` successful ones.
    pub fn arm(&self, skip: u32) {
        self.fail_in.store(skip, Ordering::SeqCst);
    }
    pub fn disarm(&self) {
        self.fail_in.store(u32::MAX, Ordering::SeqCst);
    }
    fn write<T>(&self, f: impl FnOnce() -> CatalogResult<T>) -> CatalogResult<T> {
        let left = self.fail_in.load(Ordering::SeqCst);
        if left != u32::MAX {
            if left == 0 {
                self.fail_in.store(u32::MAX, Ordering::SeqCst);
                self.failures.fetch_add(1, Ordering::SeqCst);
                return Err(CatalogError::Write("database or disk is full (injected)".into()));
            }
            self.fail_in.store(left - 1, Ordering::SeqCst);
        }
        f()
    }
}

impl<C: Catalog> Catalog for FaultyCatalog<C> {
    fn put_app(&self, app: &AppSpec) -> CatalogResult<()> {
        self.write(|| self.inner.put_app(app))
    }
    fn app(&self, name: &str) -> CatalogResult<Option<AppSpec>> {
        self.inner.app(name)
    }
    fn apps(&self) -> CatalogResult<Vec<AppSpec>> {
        self.inner.apps()
    }
    fn set_app_policy(&self, app: &str, policy: Option<&str>) -> CatalogResult<()> {
        self.write(|| self.inner.set_app_policy(app, policy))
    }
    fn app_policy(&self, app: &str) -> CatalogResult<Option<String>> {
        self.inner.app_policy(app)
    }
    fn put_backup(&self, backup: &BackupRecord) -> CatalogResult<()> {
        self.write(|| self.inner.put_backup(backup))
    }
    fn backup(&self, id: &str) -> CatalogResult<Option<BackupRecord>> {
        self.inner.backup(id)
    }
    fn backups(&self, app: Option<&str>) -> CatalogResult<Vec<BackupRecord>> {
        self.inner.backups(app)
    }
    fn delete_backup(&self, id: &str) -> CatalogResult<()> {
        self.write(|| self.inner.delete_backup(id))
    }
    fn put_restore(&self, restore: &RestoreRecord) -> CatalogResult<()> {
        self.write(|| self.inner.put_restore(restore))
    }
    fn restore(&self, id: &str) -> CatalogResult<Option<RestoreRecord>> {
        self.inner.restore(id)
    }
    fn restores(&self, app: Option<&str>) -> CatalogResult<Vec<RestoreRecord>> {
        self.inner.restores(app)
    }
    fn put_policy(&self, policy: &Policy) -> CatalogResult<()> {
        self.write(|| self.inner.put_policy(policy))
    }
    fn policy(&self, name: &str) -> CatalogResult<Option<Policy>> {
        self.inner.policy(name)
    }
    fn policies(&self) -> CatalogResult<Vec<Policy>> {
        self.inner.policies()
    }
}

/// Something the harness does at a step boundary (inside the freeze: load, a killed
/// session, a vanished snapshot), and where the orchestrator "crashes".
pub type StepAction = Box<dyn Fn(Step) + Send + Sync>;

#[derive(Default)]
pub struct HarnessHook {
    crash_at: Mutex<Option<Step>>,
    crashed: Mutex<Option<Step>>,
    action: Mutex<Option<StepAction>>,
}

impl HarnessHook {
    pub fn crash_at(&self, step: Option<Step>) {
        *self.crash_at.lock() = step;
        *self.crashed.lock() = None;
    }
    pub fn take_crashed(&self) -> Option<Step> {
        self.crashed.lock().take()
    }
    pub fn set_action(&self, action: Option<StepAction>) {
        *self.action.lock() = action;
    }
    pub fn take_action(&self) -> Option<StepAction> {
        self.action.lock().take()
    }
}

impl StepHook for HarnessHook {
    fn at(&self, step: Step) -> Result<(), Crashed> {
        if let Some(action) = self.action.lock().as_ref() {
            action(step);
        }
        let mut crash_at = self.crash_at.lock();
        if *crash_at == Some(step) {
            *crash_at = None;
            *self.crashed.lock() = Some(step);
            return Err(Crashed(step));
        }
        Ok(())
    }
}

/// How the orchestrator reaches the database in a campaign.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PluginMode {
    /// The real quiesce.
    App,
    /// Crash-consistent: no quiesce; the "consistency point" is the last acknowledged
    /// commit read when the snapshot is about to be taken.
    Crash,
    /// Mutant: thaws right after the lock is granted, before the snapshot.
    EarlyThaw,
}

pub struct HarnessPlugin {
    pub db: Arc<SimDb>,
    pub mode: PluginMode,
}

#[async_trait]
impl AppPlugin for HarnessPlugin {
    async fn quiesce(&self) -> Result<ConsistencyPoint, PluginError> {
        match self.mode {
            PluginMode::App => self.db.quiesce().await,
            PluginMode::Crash => Ok(consistency_point(self.db.last_committed_txid().unwrap_or(0))),
            PluginMode::EarlyThaw => {
                let point = self.db.quiesce().await?;
                self.db.unquiesce().await?;
                Ok(point)
            }
        }
    }
    async fn unquiesce(&self) -> Result<(), PluginError> {
        self.db.unquiesce().await
    }
    async fn stop(&self) -> Result<(), PluginError> {
        self.db.stop().await
    }
    async fn start(&self) -> Result<(), PluginError> {
        self.db.start().await
    }
    async fn recover(&self, target: &RecoveryTarget) -> Result<RecoveryReport, PluginError> {
        self.db.recover(target).await
    }
}

/// Mutant storage: "verifies" a snapshot by remembering that it was created, never looking
/// at the array. A workflow on it marks backups complete without checking they exist.
pub struct SkipVerifyStorage {
    pub inner: Arc<dyn Storage>,
    created: Mutex<HashMap<(String, String), SnapshotInfo>>,
}

impl SkipVerifyStorage {
    pub fn new(inner: Arc<dyn Storage>) -> Self {
        SkipVerifyStorage { inner, created: Mutex::default() }
    }
}

#[async_trait]
impl Storage for SkipVerifyStorage {
    async fn warm_up(&self) -> StorageResult<()> {
        self.inner.warm_up().await
    }
    async fn volumes_by_name(&self, svm: &str, names: &[String]) -> StorageResult<Vec<VolumeInfo>> {
        self.inner.volumes_by_name(svm, names).await
    }
    async fn volume(&self, uuid: &str) -> StorageResult<VolumeInfo> {
        self.inner.volume(uuid).await
    }
    async fn create_snapshot(&self, volume_uuid: &str, name: &str, deadline: Duration) -> StorageResult<SnapshotInfo> {
        let s = self.inner.create_snapshot(volume_uuid, name, deadline).await?;
        self.created.lock().insert((volume_uuid.to_string(), name.to_string()), s.clone());
        Ok(s)
    }
    async fn snapshot_by_name(&self, volume_uuid: &str, name: &str) -> StorageResult<Option<SnapshotInfo>> {
        if let Some(s) = self.created.lock().get(&(volume_uuid.to_string(), name.to_string())) {
            return Ok(Some(s.clone()));
        }
        self.inner.snapshot_by_name(volume_uuid, name).await
    }
    async fn snapshots(&self, volume_uuid: &str) -> StorageResult<Vec<SnapshotInfo>> {
        self.inner.snapshots(volume_uuid).await
    }
    async fn delete_snapshot(&self, volume_uuid: &str, snapshot_uuid: &str) -> StorageResult<()> {
        self.created.lock().retain(|_, s| s.uuid != snapshot_uuid);
        self.inner.delete_snapshot(volume_uuid, snapshot_uuid).await
    }
    async fn ensure_consistency_group(&self, svm: &str, name: &str, volume_uuids: &[String]) -> StorageResult<ConsistencyGroupInfo> {
        self.inner.ensure_consistency_group(svm, name, volume_uuids).await
    }
    async fn create_cg_snapshot(&self, cg_uuid: &str, name: &str, deadline: Duration) -> StorageResult<Vec<SnapshotInfo>> {
        let snaps = self.inner.create_cg_snapshot(cg_uuid, name, deadline).await?;
        for s in &snaps {
            self.created.lock().insert((s.volume_uuid.clone(), name.to_string()), s.clone());
        }
        Ok(snaps)
    }
    async fn restore_volume(&self, volume_uuid: &str, snapshot_name: &str) -> StorageResult<()> {
        self.inner.restore_volume(volume_uuid, snapshot_name).await
    }
    async fn restore_consistency_group(&self, cg_uuid: &str, snapshot_name: &str) -> StorageResult<()> {
        self.inner.restore_consistency_group(cg_uuid, snapshot_name).await
    }
    async fn clone_volume(&self, parent_volume_uuid: &str, snapshot_name: &str, clone_name: &str, junction_path: Option<&str>) -> StorageResult<VolumeInfo> {
        self.inner.clone_volume(parent_volume_uuid, snapshot_name, clone_name, junction_path).await
    }
    async fn split_clone(&self, volume_uuid: &str) -> StorageResult<()> {
        self.inner.split_clone(volume_uuid).await
    }
    async fn delete_volume(&self, volume_uuid: &str) -> StorageResult<()> {
        self.inner.delete_volume(volume_uuid).await
    }
}
