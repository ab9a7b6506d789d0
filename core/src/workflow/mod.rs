//! Workflows: backup, restore, reconciliation and retention, each an explicit sequence of
//! steps with compensation, written once and used by the CLI, the harness, the demo and the
//! operator.
//!
//! Every step boundary calls [`StepHook::at`]; the product's hook does nothing, the harness's
//! hook may "crash" the orchestrator there (the workflow stops dead, compensating nothing,
//! as a killed process would), after which [`Orchestrator::reconcile`] must repair things.

mod backup;
pub mod dr;
mod reconcile;
mod restore;
mod retention;

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::catalog::{Catalog, CatalogError};
use crate::clock::Clock;
use crate::plugin::PluginError;
use crate::storage::{Storage, StorageError};

pub use backup::BackupOutcome;
pub use reconcile::ReconcileReport;
pub use retention::{next_due, select_expired, RetentionReport};

/// The places a workflow can be interrupted. Listed in the order a backup or restore
/// passes them; the harness crashes the orchestrator at each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Step {
    BackupRecorded,
    VolumesResolved,
    QuiesceIntentRecorded,
    /// Inside the freeze: quiesced, before the snapshot request.
    Quiesced,
    /// Inside the freeze: the snapshot request returned, before unquiesce.
    SnapshotTaken,
    Unquiesced,
    SnapshotRecorded,
    BackupCompleted,
    RestoreRecorded,
    AppStopped,
    StorageRestored,
    Recovered,
    RestoreCompleted,
    RetentionExpired,
}

impl Step {
    pub const BACKUP: [Step; 8] = [
        Step::BackupRecorded,
        Step::VolumesResolved,
        Step::QuiesceIntentRecorded,
        Step::Quiesced,
        Step::SnapshotTaken,
        Step::Unquiesced,
        Step::SnapshotRecorded,
        Step::BackupCompleted,
    ];
    pub const RESTORE: [Step; 5] = [Step::RestoreRecorded, Step::AppStopped, Step::StorageRestored, Step::Recovered, Step::RestoreCompleted];

    pub fn is_inside_freeze(self) -> bool {
        matches!(self, Step::Quiesced | Step::SnapshotTaken)
    }
}

/// The orchestrator stopped dead at a step (a simulated process crash).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crashed(pub Step);

pub trait StepHook: Send + Sync {
    fn at(&self, step: Step) -> Result<(), Crashed>;
}

/// The product's hook: never interrupts.
pub struct NoHook;

impl StepHook for NoHook {
    fn at(&self, _step: Step) -> Result<(), Crashed> {
        Ok(())
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum WorkflowError {
    #[error("orchestrator crashed at {0:?}")]
    Crashed(Step),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// The request itself is wrong (unknown app, backup not restorable, ...).
    #[error("{0}")]
    Invalid(String),
    /// A bound was exceeded (freeze timeout, snapshot after the freeze bound).
    #[error("{0}")]
    Bound(String),
}

impl From<Crashed> for WorkflowError {
    fn from(c: Crashed) -> Self {
        WorkflowError::Crashed(c.0)
    }
}

pub type WorkflowResult<T> = Result<T, WorkflowError>;

/// Identifiers for backups and restores: random in the product, seeded in the harness.
pub trait Ids: Send + Sync {
    fn next(&self, prefix: &str) -> String;
}

pub struct SeededIds(std::sync::Mutex<ChaCha8Rng>);

impl SeededIds {
    pub fn new(seed: u64) -> Self {
        SeededIds(std::sync::Mutex::new(ChaCha8Rng::seed_from_u64(seed)))
    }
    pub fn random() -> Self {
        Self::new(rand::random())
    }
}

impl Ids for SeededIds {
    fn next(&self, prefix: &str) -> String {
        let mut rng = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        format!("{prefix}{:012x}", rng.gen::<u64>() & 0xffff_ffff_ffff)
    }
}

/// Tasks that belong to this orchestrator process (freeze watchdogs): a simulated process
/// death aborts them, as a real one would.
#[derive(Default)]
pub struct BackgroundTasks(std::sync::Mutex<Vec<tokio::task::AbortHandle>>);

impl BackgroundTasks {
    pub fn register(&self, task: tokio::task::AbortHandle) {
        let mut tasks = self.0.lock().unwrap_or_else(|p| p.into_inner());
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }

    /// Abort every task still running (simulated process death).
    pub fn abort_all(&self) {
        for task in self.0.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            task.abort();
        }
    }
}

/// What every workflow needs: the seams and the injected clock, ids and hook.
#[derive(Clone)]
pub struct Orchestrator {
    pub storage: Arc<dyn Storage>,
    pub catalog: Arc<dyn Catalog>,
    pub clock: Arc<dyn Clock>,
    pub ids: Arc<dyn Ids>,
    pub hook: Arc<dyn StepHook>,
    pub background: Arc<BackgroundTasks>,
}

impl Orchestrator {
    pub fn new(storage: Arc<dyn Storage>, catalog: Arc<dyn Catalog>, clock: Arc<dyn Clock>) -> Self {
        Orchestrator { storage, catalog, clock, ids: Arc::new(SeededIds::random()), hook: Arc::new(NoHook), background: Arc::default() }
    }

    pub fn with_ids(mut self, ids: Arc<dyn Ids>) -> Self {
        self.ids = ids;
        self
    }

    pub fn with_hook(mut self, hook: Arc<dyn StepHook>) -> Self {
        self.hook = hook;
        self
    }

    fn step(&self, step: Step) -> Result<(), Crashed> {
        self.hook.at(step)
    }
}
