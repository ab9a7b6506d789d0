//! Quiesce in the cluster: the database is reached through a port-forward via the API
//! server (`pods/portforward`), and core's own database plugin (the same code that is tested
//! against real MariaDB/MySQL servers) freezes, thaws and verifies it through the forwarded
//! local port. Why a port-forward and not a plugin pod: see ARCHITECTURE.md ("Quiesce in
//! the cluster").
//!
//! [`PodForward`] listens on 127.0.0.1 (a free port) and opens one port-forward stream per
//! accepted connection (kube opens one WebSocket per forward). Dropping it stops the
//! listener and every stream: that is the cleanup, and it runs on every path (error, panic,
//! cancellation), leaving nothing behind in the cluster.
//!
//! The pod is chosen among the workload's pods that are Ready and not terminating. A pod
//! that vanishes between the choice and the forward (404) is dropped and the next Ready one
//! is tried, a bounded number of times. A pod that vanishes while the database is frozen
//! takes the lock session with it: the database released the lock, and the thaw reports the
//! session lost, which core records (the backup is not application-consistent).

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;
use kube::api::LogParams;
use kube::{Api, Client};
use stasis_core::domain::ConsistencyPoint;
use stasis_core::plugin::{AppPlugin, PluginError, RecoveryReport};
use stasis_core::plugins::mysql::MysqlPlugin;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use crate::error::{Context, K8sError, K8sResult};
use crate::restore::InClusterDb;
use crate::workload::{self, WorkloadRef};

/// Pods tried when the chosen one vanishes before the forward is open.
pub const POD_ATTEMPTS_MAX: usize = 3;
/// Lines of the container's log read for the crash-recovery check after a restore.
const LOG_TAIL_LINES: i64 = 2000;

/// Is the pod Ready and not on its way out?
pub fn is_ready(pod: &Pod) -> bool {
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let status = pod.status.as_ref();
    let running = status.and_then(|s| s.phase.as_deref()) == Some("Running");
    let ready = status.and_then(|s| s.conditions.as_ref()).is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    !terminating && running && ready
}

/// The workload's Ready pods, by name.
pub async fn ready_pods(client: &Client, w: &WorkloadRef) -> K8sResult<Vec<String>> {
    let mut names: Vec<String> = workload::pods_of(client, w).await?.iter().filter(|p| is_ready(p)).filter_map(|p| p.metadata.name.clone()).collect();
    names.sort();
    Ok(names)
}

/// A local TCP port forwarded to a port of a pod, through the API server.
pub struct PodForward {
    namespace: String,
    pod: String,
    local: SocketAddr,
    accept: JoinHandle<()>,
}

impl PodForward {
    /// Forward `port` of pod `namespace/pod`. The forward is tried once before the listener
    /// opens, so a pod that is gone (404) or a refusal (403) is an error here, not later.
    pub async fn open(client: &Client, namespace: &str, pod: &str, port: u16) -> K8sResult<PodForward> {
        let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let mut probe = api.portforward(pod, &[port]).await.ctx(|| format!("port-forwarding to pod {namespace}/{pod}:{port}"))?;
        let first = probe.take_stream(port).ok_or_else(|| K8sError::Invalid(format!("the port-forward to {namespace}/{pod} has no stream for port {port}")))?;
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.map_err(|e| K8sError::Transport { what: "binding a local port for the port-forward".into(), message: e.to_string() })?;
        let local = listener.local_addr().map_err(|e| K8sError::Transport { what: "reading the local port-forward address".into(), message: e.to_string() })?;
        let (ns, name) = (namespace.to_string(), pod.to_string());
        let accept = tokio::spawn(async move {
            // The streams live in this set: aborting the accept task drops it, which ends them.
            let mut streams = JoinSet::new();
            // The probe's stream serves the first connection.
            let mut first = Some((probe, first));
            loop {
                let (mut tcp, _) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "port-forward listener failed");
                        return;
                    }
                };
                let api = api.clone();
                let (ns, name) = (ns.clone(), name.clone());
                let ready = first.take();
                streams.spawn(async move {
                    let (forwarder, mut upstream) = match ready {
                        Some(r) => r,
                        None => {
                            let mut f = match api.portforward(&name, &[port]).await {
                                Ok(f) => f,
                                Err(e) => {
                                    tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "port-forward refused");
                                    return;
                                }
                            };
                            match f.take_stream(port) {
                                Some(s) => (f, s),
                                None => return,
                            }
                        }
                    };
                    if let Err(e) = tokio::io::copy_bidirectional(&mut tcp, &mut upstream).await {
                        tracing::debug!(pod = %format!("{ns}/{name}"), error = %e, "port-forward stream ended");
                    }
                    drop(upstream);
                    forwarder.abort();
                });
                // Reap finished streams so the set does not grow with every connection.
                while streams.try_join_next().is_some() {}
            }
        });
        Ok(PodForward { namespace: namespace.into(), pod: pod.into(), local, accept })
    }

    /// Forward `port` of one of the workload's Ready pods, trying the next if one vanishes.
    pub async fn to_workload(client: &Client, w: &WorkloadRef, port: u16) -> K8sResult<PodForward> {
        let mut vanished = Vec::new();
        for _ in 0..POD_ATTEMPTS_MAX {
            let pods = ready_pods(client, w).await?;
            let Some(pod) = pods.into_iter().find(|p| !vanished.contains(p)) else { break };
            match PodForward::open(client, &w.namespace, &pod, port).await {
                Ok(f) => return Ok(f),
                Err(e) if e.is_not_found() => {
                    tracing::info!(pod = %pod, "the chosen pod is gone; choosing another");
                    vanished.push(pod);
                }
                Err(e) => return Err(e),
            }
        }
        Err(K8sError::Invalid(format!(
            "{} has no Ready pod to reach the database through{}",
            w.describe(),
            if vanished.is_empty() { String::new() } else { format!(" (gone while choosing: {})", vanished.join(", ")) }
        )))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn pod(&self) -> &str {
        &self.pod
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }
}

impl Drop for PodForward {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// A database plugin that can also check a server it did not start.
#[async_trait]
pub trait ForwardedPlugin: AppPlugin {
    /// Check the running server (restored data): tables, recovered point; crash recovery is
    /// read from `log` (the container's log).
    async fn verify_running(&self, log: &str) -> Result<RecoveryReport, PluginError>;
}

#[async_trait]
impl ForwardedPlugin for MysqlPlugin {
    async fn verify_running(&self, log: &str) -> Result<RecoveryReport, PluginError> {
        MysqlPlugin::verify_running(self, log).await
    }
}

/// Makes the database plugin for a forwarded local address.
pub type PluginFactory = Arc<dyn Fn(SocketAddr) -> Result<Arc<dyn ForwardedPlugin>, PluginError> + Send + Sync>;

/// Core's MySQL/MariaDB plugin for a forwarded address, with the lock wait inside the
/// app's freeze bound (what `stasis k8s` and the operator use).
pub fn mysql_factory(user: String, password: secrecy::SecretString, freeze: std::time::Duration) -> PluginFactory {
    Arc::new(move |addr: SocketAddr| {
        let config = stasis_core::plugins::mysql::MysqlConfig {
            host: addr.ip().to_string(),
            port: addr.port(),
            user: user.clone(),
            password: password.clone(),
            freeze_timeout: freeze,
            lock_wait_timeout: (freeze / 2).max(std::time::Duration::from_secs(1)).min(freeze.saturating_sub(std::time::Duration::from_millis(500))),
            server_control: None,
        };
        Ok(Arc::new(MysqlPlugin::new(config)?) as Arc<dyn ForwardedPlugin>)
    })
}

/// The [`InClusterDb`] over a port-forward: one forward for a freeze (held until
/// [`InClusterDb::release`]), one per verification (closed when it returns).
pub struct ForwardedDb {
    client: Client,
    /// The database's port in the pod.
    port: u16,
    /// The container whose log tells whether crash recovery ran (None: the pod's only one).
    container: Option<String>,
    factory: PluginFactory,
    frozen: tokio::sync::Mutex<Option<(PodForward, Arc<dyn ForwardedPlugin>)>>,
}

impl ForwardedDb {
    pub fn new(client: Client, port: u16, container: Option<String>, factory: PluginFactory) -> Self {
        ForwardedDb { client, port, container, factory, frozen: tokio::sync::Mutex::new(None) }
    }

    /// Is a forward open (a freeze not yet released)?
    pub async fn holds_forward(&self) -> bool {
        self.frozen.lock().await.is_some()
    }
}

#[async_trait]
impl InClusterDb for ForwardedDb {
    async fn quiesce(&self, w: &WorkloadRef) -> Result<ConsistencyPoint, PluginError> {
        let mut frozen = self.frozen.lock().await;
        // A previous freeze's forward is closed first (its session, and any lock, go with it).
        *frozen = None;
        let forward = PodForward::to_workload(&self.client, w, self.port).await.map_err(|e| PluginError::App(e.to_string()))?;
        let plugin = (self.factory)(forward.local_addr())?;
        tracing::info!(pod = %forward.pod(), local = %forward.local_addr(), "freezing through a port-forward");
        let point = plugin.quiesce().await;
        // Kept even on failure: the thaw must reach the same session to release a half-taken lock.
        *frozen = Some((forward, plugin));
        point
    }

    async fn unquiesce(&self) -> Result<(), PluginError> {
        let plugin = self.frozen.lock().await.as_ref().map(|(_, p)| p.clone());
        match plugin {
            Some(p) => p.unquiesce().await,
            None => Ok(()),
        }
    }

    async fn verify(&self, w: &WorkloadRef) -> Result<RecoveryReport, PluginError> {
        let forward = PodForward::to_workload(&self.client, w, self.port).await.map_err(|e| PluginError::App(e.to_string()))?;
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &w.namespace);
        let lp = LogParams { container: self.container.clone(), tail_lines: Some(LOG_TAIL_LINES), ..Default::default() };
        let log = api.logs(forward.pod(), &lp).await.map_err(|e| PluginError::App(format!("reading the log of pod {}/{}: {e}", w.namespace, forward.pod())))?;
        let plugin = (self.factory)(forward.local_addr())?;
        let report = plugin.verify_running(&log).await;
        drop(forward);
        report
    }

    async fn release(&self) {
        if let Some((forward, plugin)) = self.frozen.lock().await.take() {
            // Thaw first in case a failed workflow never did (idempotent), then close.
            let _ = plugin.unquiesce().await;
            tracing::info!(pod = %forward.pod(), "closing the port-forward");
            drop(forward);
        }
    }
}
