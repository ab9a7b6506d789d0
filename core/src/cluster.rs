//! The `Cluster` seam: where workloads run. Discovery (which apps, on which volumes), scaling
//! an app down and up around an in-place restore, and running a command in the app's
//! container (exec hooks, plugins). `k8s-backend` implements it over kube-rs; [`LocalCluster`]
//! is the implementation for a single host (demo, harness, bare-metal databases).

use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::AsyncReadExt;

use crate::domain::AppKind;

/// Where a workload keeps data: a mount path and the ONTAP volume behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub path: String,
    pub svm: String,
    pub volume: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub namespace: String,
    pub name: String,
    pub kind: AppKind,
    pub mounts: Vec<Mount>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub status: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClusterError {
    #[error("workload {0} not found")]
    NotFound(String),
    #[error("{0} is not supported by this cluster backend")]
    Unsupported(&'static str),
    #[error("command {argv0:?} did not finish within {timeout:?}; it was killed")]
    Timeout { argv0: String, timeout: Duration },
    #[error("cluster I/O: {0}")]
    Io(String),
}

#[async_trait]
pub trait Cluster: Send + Sync {
    async fn discover(&self, namespace: Option<&str>) -> Result<Vec<Workload>, ClusterError>;
    /// Scale the workload to `replicas` and wait until it is there (0: every pod gone).
    async fn scale(&self, namespace: &str, name: &str, replicas: u32) -> Result<(), ClusterError>;
    /// Run `argv` (an argument vector, never a shell string) in the workload's container.
    async fn exec(&self, namespace: &str, name: &str, argv: &[String], timeout: Duration) -> Result<ExecOutput, ClusterError>;
}

/// Output kept from a command, per stream.
const EXEC_OUTPUT_BYTES_MAX: u64 = 1 << 20;

/// A single host: workloads are declared, not discovered from an API; commands run as local
/// processes. Scaling is not a host concept: stop and start go through the app's plugin.
pub struct LocalCluster {
    workloads: Vec<Workload>,
    /// Set for every command, as a container's environment is (e.g. where the app's
    /// control socket is, `PATH` with the app's tools first).
    env: Vec<(String, String)>,
}

impl LocalCluster {
    pub fn new(workloads: Vec<Workload>) -> Self {
        LocalCluster { workloads, env: Vec::new() }
    }

    /// Run every command with `key=value` in its environment.
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    fn find(&self, namespace: &str, name: &str) -> Result<&Workload, ClusterError> {
        self.workloads.iter().find(|w| w.namespace == namespace && w.name == name).ok_or_else(|| ClusterError::NotFound(format!("{namespace}/{name}")))
    }
}

#[async_trait]
impl Cluster for LocalCluster {
    async fn discover(&self, namespace: Option<&str>) -> Result<Vec<Workload>, ClusterError> {
        Ok(self.workloads.iter().filter(|w| namespace.is_none_or(|ns| ns == w.namespace)).cloned().collect())
    }

    async fn scale(&self, namespace: &str, name: &str, _replicas: u32) -> Result<(), ClusterError> {
        self.find(namespace, name)?;
        Err(ClusterError::Unsupported("scaling a workload on a single host"))
    }

    async fn exec(&self, namespace: &str, name: &str, argv: &[String], timeout: Duration) -> Result<ExecOutput, ClusterError> {
        self.find(namespace, name)?;
        let (program, args) = argv.split_first().ok_or_else(|| ClusterError::Io("empty argument vector".into()))?;
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| ClusterError::Io(format!("starting {program:?}: {e}")))?;
        let mut stdout = child.stdout.take().expect("piped").take(EXEC_OUTPUT_BYTES_MAX);
        let mut stderr = child.stderr.take().expect("piped").take(EXEC_OUTPUT_BYTES_MAX);
        let run = async {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let (r1, r2, status) = tokio::join!(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err), child.wait());
            r1.and(r2).map_err(|e| ClusterError::Io(e.to_string()))?;
            let status = status.map_err(|e| ClusterError::Io(e.to_string()))?;
            Ok::<_, ClusterError>(ExecOutput { status: status.code().unwrap_or(-1), stdout: out, stderr: err })
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(result) => result,
            // Dropping the future drops the child: kill_on_drop ends it.
            Err(_) => Err(ClusterError::Timeout { argv0: program.clone(), timeout }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> LocalCluster {
        LocalCluster::new(vec![Workload {
            namespace: "default".into(),
            name: "bank".into(),
            kind: AppKind::Simdb,
            mounts: vec![Mount { path: "/data".into(), svm: "svm0".into(), volume: "db_data".into() }],
        }])
    }

    #[tokio::test]
    async fn exec_takes_an_argument_vector_not_a_shell_string() {
        let hostile = "x; touch /tmp/stasis-should-not-exist".to_string();
        let out = cluster().exec("default", "bank", &["echo".into(), hostile.clone()], Duration::from_secs(5)).await.unwrap();
        assert_eq!(out.status, 0);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim_end(), hostile, "the argument arrives verbatim, unexpanded");
    }

    #[tokio::test]
    async fn exec_is_bounded_by_its_timeout() {
        let started = std::time::Instant::now();
        let err = cluster().exec("default", "bank", &["sleep".into(), "10".into()], Duration::from_millis(100)).await.unwrap_err();
        assert!(matches!(err, ClusterError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn discovery_and_unknown_workloads() {
        let c = cluster();
        assert_eq!(c.discover(Some("default")).await.unwrap().len(), 1);
        assert!(c.discover(Some("other")).await.unwrap().is_empty());
        assert!(matches!(c.exec("default", "nope", &["true".into()], Duration::from_secs(1)).await, Err(ClusterError::NotFound(_))));
        assert!(matches!(c.scale("default", "bank", 0).await, Err(ClusterError::Unsupported(_))));
        assert_eq!(c.exec("default", "bank", &["false".into()], Duration::from_secs(5)).await.unwrap().status, 1);
    }
}
