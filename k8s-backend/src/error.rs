//! One error type for the crate, classified the way callers act on it.

use std::time::Duration;

use stasis_core::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    /// The API server answered with a `Status` failure (404, 409, 410, 403, ...).
    #[error("Kubernetes API refused {what}: {code} {reason}: {message}")]
    Api { what: String, code: u16, reason: String, message: String },
    /// The API server could not be reached or its answer could not be read.
    #[error("Kubernetes API: {what}: {message}")]
    Transport { what: String, message: String },
    /// A restore into a namespace that already holds same-named objects: nothing was changed.
    #[error("namespace {namespace} already holds objects the restore would create: {}; nothing was restored", conflicts.join(", "))]
    Conflicts { namespace: String, conflicts: Vec<String> },
    #[error("{what} did not happen within {timeout:?}")]
    Timeout { what: String, timeout: Duration },
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Core's backup or restore workflow failed (it recorded the failure in the catalog).
    #[error(transparent)]
    Workflow(#[from] stasis_core::workflow::WorkflowError),
    /// The database refused, failed or failed its verification.
    #[error(transparent)]
    Db(#[from] stasis_core::plugin::PluginError),
    /// The request or the cluster's objects are not what Stasis can work with.
    #[error("{0}")]
    Invalid(String),
}

impl K8sError {
    pub fn from_kube(what: impl Into<String>, e: kube::Error) -> K8sError {
        let what = what.into();
        match e {
            kube::Error::Api(status) => K8sError::Api { what, code: status.code, reason: status.reason.clone(), message: status.message.clone() },
            other => K8sError::Transport { what, message: other.to_string() },
        }
    }

    pub fn code(&self) -> Option<u16> {
        match self {
            K8sError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.code() == Some(404)
    }

    pub fn is_conflict(&self) -> bool {
        self.code() == Some(409)
    }
}

pub type K8sResult<T> = Result<T, K8sError>;

/// Attach what was being done to a kube call's error.
pub(crate) trait Context<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> K8sResult<T>;
}

impl<T> Context<T> for Result<T, kube::Error> {
    fn ctx(self, what: impl FnOnce() -> String) -> K8sResult<T> {
        self.map_err(|e| K8sError::from_kube(what(), e))
    }
}
