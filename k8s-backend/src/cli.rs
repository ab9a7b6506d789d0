//! The `stasis discover` and `stasis operator` subcommands (the root binary only holds the
//! variants and dispatches here).

use std::collections::BTreeMap;
use std::sync::Arc;

use clap::ValueEnum;
use stasis_core::catalog::Catalog;
use stasis_core::storage::Storage;

use crate::report::{self, DiscoverReport};
use crate::{DiscoverOptions, KubeCluster};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Yaml,
}

/// What the root binary hands over from `stasis.yaml`: the ONTAP connection (for tracing
/// NFS exports to volumes) and the catalog (for SLA policy and protection status).
#[derive(Default, Clone)]
pub struct DiscoverContext {
    pub storage: Option<Arc<dyn Storage>>,
    pub catalog: Option<Arc<dyn Catalog>>,
}

#[derive(clap::Args, Debug)]
pub struct DiscoverArgs {
    /// Only this namespace (default: all namespaces).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: OutputFormat,
    /// The ONTAP cluster of `stasis.yaml` to trace NFS exports on (default: the only one).
    #[arg(long)]
    pub cluster: Option<String>,
    /// NFS server address = SVM, for junction paths that exist in several SVMs (repeatable).
    #[arg(long = "nfs-server", value_name = "ADDRESS=SVM")]
    pub nfs_servers: Vec<String>,
}

impl DiscoverArgs {
    pub fn options(&self) -> anyhow::Result<DiscoverOptions> {
        let mut nfs_servers = BTreeMap::new();
        for pair in &self.nfs_servers {
            let Some((server, svm)) = pair.split_once('=').filter(|(a, b)| !a.is_empty() && !b.is_empty()) else {
                anyhow::bail!("--nfs-server takes ADDRESS=SVM, got {pair:?}");
            };
            nfs_servers.insert(server.to_string(), svm.to_string());
        }
        Ok(DiscoverOptions { nfs_servers })
    }
}

/// Render a discovery for printing.
pub fn render(format: OutputFormat, report: &DiscoverReport) -> anyhow::Result<String> {
    Ok(match format {
        OutputFormat::Table => report::table(&report.rows, &report.inventory.warnings),
        OutputFormat::Json => serde_json::to_string_pretty(report)? + "\n",
        OutputFormat::Yaml => serde_saphyr::to_string(report).map_err(|e| anyhow::anyhow!("rendering YAML: {e}"))?,
    })
}

/// `stasis discover`: against the cluster of the current kubeconfig context (or the
/// in-cluster service account).
pub async fn discover(args: DiscoverArgs, ctx: DiscoverContext) -> anyhow::Result<()> {
    let options = args.options()?;
    let client = KubeCluster::client_from_env().await?;
    let cluster = KubeCluster::new(client, ctx.storage, options);
    let inventory = cluster.inventory(args.namespace.as_deref()).await?;
    let rows = report::rows(&inventory, ctx.catalog.as_deref()).map_err(|e| anyhow::anyhow!("reading the catalog: {e}"))?;
    print!("{}", render(args.output, &DiscoverReport { rows, inventory })?);
    Ok(())
}

/// `stasis crds`: the operator's CustomResourceDefinitions as YAML (what deploy/crds.yaml holds).
pub fn crds() -> anyhow::Result<()> {
    print!("{}", crate::crd::crds_yaml().map_err(|e| anyhow::anyhow!(e))?);
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct OperatorArgs {
    /// The ONTAP cluster of `stasis.yaml` that holds the apps' volumes (default: the only one).
    #[arg(long)]
    pub cluster: Option<String>,
    /// Run without leader election (exactly one replica!).
    #[arg(long)]
    pub no_leader_election: bool,
    /// Namespace of the leader Lease (in a pod: its own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "stasis-system")]
    pub lease_namespace: String,
    #[arg(long, default_value = "stasis-operator")]
    pub lease_name: String,
    /// This replica's identity in the Lease (in a pod: its name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Lease duration, renew deadline, retry period (client-go's defaults).
    #[arg(long, default_value = "15s", value_parser = duration_arg)]
    pub lease_duration: std::time::Duration,
    #[arg(long, default_value = "10s", value_parser = duration_arg)]
    pub renew_deadline: std::time::Duration,
    #[arg(long, default_value = "2s", value_parser = duration_arg)]
    pub retry_period: std::time::Duration,
}

fn duration_arg(text: &str) -> Result<std::time::Duration, String> {
    crate::crd::parse_duration(text)
}

/// What the root binary wires from `stasis.yaml` into the operator.
pub struct OperatorWiring {
    pub storage: Arc<dyn Storage>,
    /// Replication per ONTAP cluster name (DrPlan destinations).
    pub replication: BTreeMap<String, Arc<dyn stasis_core::replication::Replication>>,
    pub catalog: Option<Arc<dyn Catalog>>,
    /// The in-cluster quiesce plugin; `None`: backups fail saying it is not available.
    pub plugins: Option<Arc<dyn crate::operator::PluginFactory>>,
    /// The Kubernetes restore path; `None`: Restores fail with `RestoreUnavailable`.
    pub restore: Option<Arc<dyn crate::operator::RestoreRunner>>,
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// `stasis operator`: the controllers, while this replica holds the leader Lease. On
/// SIGTERM the controllers stop first, then the Lease is released for the next replica.
pub async fn operator(args: OperatorArgs, wiring: OperatorWiring) -> anyhow::Result<()> {
    use crate::leader::{LeaderElector, LeaseConfig, Leadership};
    use crate::operator::{self, Context, NoPlugins};

    let client = KubeCluster::client_from_env().await?;
    let cluster = Arc::new(KubeCluster::new(client.clone(), Some(wiring.storage.clone()), DiscoverOptions::default()));
    let plugins = wiring.plugins.unwrap_or_else(|| Arc::new(NoPlugins("quiescing a database inside the cluster is not wired into this build of the operator".into())));
    let mut ctx = Context::new(client.clone(), cluster, wiring.storage, plugins, Arc::new(stasis_core::clock::SystemClock));
    ctx.replication = wiring.replication;
    ctx.catalog = wiring.catalog;
    ctx.restore = wiring.restore;
    let ctx = Arc::new(ctx);
    if args.no_leader_election {
        tracing::warn!("leader election is off: run exactly one replica");
        operator::run(ctx, Leadership::always(), shutdown_signal()).await;
        return Ok(());
    }
    let identity = match args.identity {
        Some(i) => i,
        None => std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default(),
    };
    let config = LeaseConfig {
        lease_duration: args.lease_duration,
        renew_deadline: args.renew_deadline,
        retry_period: args.retry_period,
        ..LeaseConfig::new(args.lease_namespace, args.lease_name, identity)
    };
    let elector = LeaderElector::new(client, config).map_err(|e| anyhow::anyhow!(e))?;
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let (leadership, election) = elector.spawn(async move {
        let _ = stop_rx.wait_for(|stop| *stop).await;
    });
    operator::run(ctx, leadership, shutdown_signal()).await;
    // The controllers are stopped; now step down and release the Lease.
    let _ = stop_tx.send(true);
    let _ = election.await;
    Ok(())
}
