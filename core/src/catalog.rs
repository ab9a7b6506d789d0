//! The `Catalog` seam: where apps, backups, restores and policies are recorded.
//!
//! Each call is atomic: after a crash at any point the catalog holds either the state before
//! a call or the state after it, never a mix. The default implementation is SQLite in WAL
//! mode ([`crate::sqlite_catalog`]).

use crate::domain::{AppSpec, BackupRecord, Policy, RestoreRecord};
use crate::dr::{DrPlan, FailoverRecord};

#[derive(Debug, Clone, thiserror::Error)]
pub enum CatalogError {
    /// The write did not happen (disk full, I/O error, locked): nothing changed.
    #[error("catalog write failed: {0}")]
    Write(String),
    #[error("catalog read failed: {0}")]
    Read(String),
    #[error("catalog is corrupt: {0}")]
    Corrupt(String),
}

pub type CatalogResult<T> = Result<T, CatalogError>;

pub trait Catalog: Send + Sync {
    fn put_app(&self, app: &AppSpec) -> CatalogResult<()>;
    fn app(&self, name: &str) -> CatalogResult<Option<AppSpec>>;
    fn apps(&self) -> CatalogResult<Vec<AppSpec>>;
    /// Apps may be assigned an SLA policy by name.
    fn set_app_policy(&self, app: &str, policy: Option<&str>) -> CatalogResult<()>;
    fn app_policy(&self, app: &str) -> CatalogResult<Option<String>>;

    /// Insert or replace a backup record as a whole.
    fn put_backup(&self, backup: &BackupRecord) -> CatalogResult<()>;
    fn backup(&self, id: &str) -> CatalogResult<Option<BackupRecord>>;
    /// Backups of one app (or all), oldest first.
    fn backups(&self, app: Option<&str>) -> CatalogResult<Vec<BackupRecord>>;
    fn delete_backup(&self, id: &str) -> CatalogResult<()>;

    fn put_restore(&self, restore: &RestoreRecord) -> CatalogResult<()>;
    fn restore(&self, id: &str) -> CatalogResult<Option<RestoreRecord>>;
    fn restores(&self, app: Option<&str>) -> CatalogResult<Vec<RestoreRecord>>;

    fn put_policy(&self, policy: &Policy) -> CatalogResult<()>;
    fn policy(&self, name: &str) -> CatalogResult<Option<Policy>>;
    fn policies(&self) -> CatalogResult<Vec<Policy>>;

    /// A platform's record kept with a backup (the Kubernetes objects of the app), stored
    /// whole and deleted with the backup. Catalogs without the table refuse.
    fn put_backup_attachment(&self, backup_id: &str, _attachment: &serde_json::Value) -> CatalogResult<()> {
        Err(CatalogError::Write(format!("this catalog does not record backup attachments (backup {backup_id})")))
    }
    fn backup_attachment(&self, _backup_id: &str) -> CatalogResult<Option<serde_json::Value>> {
        Ok(None)
    }

    /// DR plans, one per app (replaced whole). Catalogs that predate DR refuse.
    fn put_dr_plan(&self, plan: &DrPlan) -> CatalogResult<()> {
        Err(CatalogError::Write(format!("this catalog does not record DR plans (app {})", plan.app)))
    }
    fn dr_plan(&self, _app: &str) -> CatalogResult<Option<DrPlan>> {
        Ok(None)
    }
    /// Failovers, failbacks and drills (with their RPO and RTO), inserted or replaced whole.
    fn put_failover(&self, record: &FailoverRecord) -> CatalogResult<()> {
        Err(CatalogError::Write(format!("this catalog does not record failovers ({})", record.id)))
    }
    /// Of one app (or all), oldest first.
    fn failovers(&self, _app: Option<&str>) -> CatalogResult<Vec<FailoverRecord>> {
        Ok(Vec::new())
    }
}
