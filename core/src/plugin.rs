//! The `AppPlugin` seam: how the orchestrator freezes, thaws, stops, starts and recovers an
//! application. MySQL/MariaDB, PostgreSQL, exec hooks and the simulated database plug in here.

use async_trait::async_trait;

use crate::domain::ConsistencyPoint;
use crate::storage::VolumeInfo;

#[derive(Debug, Clone, thiserror::Error)]
pub enum PluginError {
    /// The application refused or failed the operation (e.g. lock wait timeout).
    #[error("application error: {0}")]
    App(String),
    /// The session holding the quiesce was lost; the application released the lock itself.
    #[error("application session lost: {0}")]
    SessionLost(String),
    /// Recovery or verification found the restored data wrong.
    #[error("verification failed: {0}")]
    Verification(String),
}

/// What opening an application on restored volumes found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The application had to replay a journal (crash recovery) to open.
    pub needed_crash_recovery: bool,
    /// Where the recovered application stands (e.g. its GTID position).
    pub recovered_point: ConsistencyPoint,
    /// Human-readable summary of what was checked.
    pub detail: String,
}

/// Where a restored copy lives.
#[derive(Debug, Clone)]
pub struct RecoveryTarget {
    /// The volumes in the app's own order (the restored originals or their clones).
    pub volumes: Vec<VolumeInfo>,
    /// In place: the app's own instance restarts; otherwise a second instance starts.
    pub in_place: bool,
}

#[async_trait]
pub trait AppPlugin: Send + Sync {
    /// Freeze the application: flush what it holds in memory, block new commits, and read
    /// the consistency point under the lock. The caller bounds this with the freeze timeout.
    async fn quiesce(&self) -> Result<ConsistencyPoint, PluginError>;
    /// Thaw. Must be safe to call when not quiesced and more than once (the freeze-bound
    /// watchdog and the workflow may both call it).
    async fn unquiesce(&self) -> Result<(), PluginError>;
    /// Stop the application before an in-place restore.
    async fn stop(&self) -> Result<(), PluginError>;
    /// Start it again on its own volumes.
    async fn start(&self) -> Result<(), PluginError>;
    /// Open the application on restored volumes, let it recover, verify its data, and report.
    /// For a clone restore this is a second instance that is shut down again afterwards.
    async fn recover(&self, target: &RecoveryTarget) -> Result<RecoveryReport, PluginError>;
}
