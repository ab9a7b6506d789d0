//! Serving the API: a listener, optional TLS, and a shutdown signal from the caller.
//!
//! The accept loop is hyper's own rather than `axum::serve` so that an injected `drop` fault
//! can close a connection without answering, exactly as a crashed or partitioned array would.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::api::{router, Credentials, DropConnection};
use crate::model::cluster::ClusterConfig;
use crate::sim::Simulator;

/// How often scheduled SnapMirror updates are looked for.
const SCHEDULER_TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// Everything needed to run one simulated cluster's API.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub cluster: ClusterConfig,
    pub listen: SocketAddr,
    pub username: String,
    pub password: String,
    /// Serve HTTPS with a self-signed certificate written to this directory.
    pub tls_dir: Option<PathBuf>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            cluster: ClusterConfig::default(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            username: "admin".into(),
            password: "admin".into(),
            tls_dir: None,
        }
    }
}

/// A self-signed certificate for `localhost` and 127.0.0.1, and where it was written.
pub struct TlsMaterial {
    pub cert_pem: String,
    pub cert_path: PathBuf,
    acceptor: TlsAcceptor,
}

pub fn self_signed(dir: &Path) -> anyhow::Result<TlsMaterial> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()]).context("generating a self-signed certificate")?;
    let cert_pem = cert.cert.pem();
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let cert_path = dir.join("ontap-sim-cert.pem");
    std::fs::write(&cert_path, &cert_pem).with_context(|| format!("writing {}", cert_path.display()))?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let mut config = rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(vec![cert.cert.der().clone()], key).context("building the TLS configuration")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsMaterial { cert_pem, cert_path, acceptor: TlsAcceptor::from(Arc::new(config)) })
}

/// Serve `app` on `listener` until `shutdown` resolves. Connections in flight are dropped
/// at shutdown: a simulated array that goes away does not finish its answers either.
pub async fn run(listener: TcpListener, app: Router, tls: Option<TlsAcceptor>, shutdown: impl Future<Output = ()>) {
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let app = app.clone();
                async move {
                    let response = app.oneshot(req.map(axum::body::Body::new)).await.expect("axum routers are infallible");
                    if response.extensions().get::<DropConnection>().is_some() {
                        // An error from the service makes hyper close the connection unanswered.
                        return Err(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "injected connection drop"));
                    }
                    Ok(response)
                }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            let served = async {
                match tls {
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(tls_stream) => builder.serve_connection(TokioIo::new(tls_stream), service).await,
                        Err(e) => Err(e.into()),
                    },
                    None => builder.serve_connection(TokioIo::new(stream), service).await,
                }
            };
            tokio::select! {
                result = served => if let Err(e) = result { tracing::debug!(error = %e, "connection ended with an error") },
                _ = stop.wait_for(|stopped| *stopped) => {}
            }
        });
    }
    let _ = stop_tx.send(true);
}

/// A simulator serving on a socket, stopped when dropped.
pub struct RunningSim {
    addr: SocketAddr,
    sim: Simulator,
    scheme: &'static str,
    cert_pem: Option<String>,
    cert_path: Option<PathBuf>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    /// Scheduled SnapMirror updates (`transfer_schedule`).
    scheduler: JoinHandle<()>,
    /// What [`RunningSim::come_back`] serves again.
    app: Router,
    acceptor: Option<TlsAcceptor>,
}

impl RunningSim {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn sim(&self) -> &Simulator {
        &self.sim
    }
    /// `http://127.0.0.1:PORT` or `https://...`.
    pub fn base_url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }
    pub fn cert_pem(&self) -> Option<&str> {
        self.cert_pem.as_deref()
    }
    pub fn cert_path(&self) -> Option<&Path> {
        self.cert_path.as_deref()
    }
    /// Stop answering, keeping the state: the listener closes (connections are refused),
    /// open connections are cut unanswered and scheduled transfers stop, as when a site loses
    /// power or its network. The in-process handle ([`RunningSim::sim`]) and FUSE mounts
    /// over it keep working: they are the site's own disks. No-op when already offline.
    pub async fn go_offline(&mut self) {
        self.scheduler.abort();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Serve the same state on the same address again (peers know this address). Fails if
    /// the port was taken meanwhile. No-op when online.
    pub async fn come_back(&mut self) -> anyhow::Result<()> {
        if self.task.is_some() {
            return Ok(());
        }
        let listener = TcpListener::bind(self.addr).await.with_context(|| format!("binding {} again", self.addr))?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        self.task = Some(tokio::spawn(run(listener, self.app.clone(), self.acceptor.clone(), async {
            let _ = rx.await;
        })));
        self.shutdown = Some(tx);
        self.scheduler = tokio::spawn(crate::replication::scheduler(self.sim.clone(), SCHEDULER_TICK));
        Ok(())
    }

    /// Serving on the network (not [`RunningSim::go_offline`]).
    pub fn is_online(&self) -> bool {
        self.task.is_some()
    }

    pub async fn shutdown(mut self) {
        self.scheduler.abort();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        self.scheduler.abort();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Start a simulator on `config.listen` (port 0 picks a free port) in this tokio runtime.
pub async fn spawn(config: SimConfig) -> anyhow::Result<RunningSim> {
    spawn_with(Simulator::new(&config.cluster), config).await
}

/// Serve an existing simulator (e.g. one whose state a test prepared in-process).
pub async fn spawn_with(sim: Simulator, config: SimConfig) -> anyhow::Result<RunningSim> {
    let listener = TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    sim.set_address(addr.to_string());
    let tls = config.tls_dir.as_deref().map(self_signed).transpose()?;
    let app = router(sim.clone(), Credentials { username: config.username, password: config.password });
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let acceptor = tls.as_ref().map(|t| t.acceptor.clone());
    let task = tokio::spawn(run(listener, app.clone(), acceptor.clone(), async {
        let _ = rx.await;
    }));
    let scheduler = tokio::spawn(crate::replication::scheduler(sim.clone(), SCHEDULER_TICK));
    Ok(RunningSim {
        scheduler,
        addr,
        sim,
        scheme: if tls.is_some() { "https" } else { "http" },
        cert_pem: tls.as_ref().map(|t| t.cert_pem.clone()),
        cert_path: tls.map(|t| t.cert_path),
        shutdown: Some(tx),
        task: Some(task),
        app,
        acceptor,
    })
}
