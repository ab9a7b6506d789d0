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
    /// The Kubernetes client (kubeconfig or in-cluster) the wired components share.
    pub client: kube::Client,
    pub storage: Arc<dyn Storage>,
    /// Replication per ONTAP cluster name (DrPlan destinations).
    pub replication: BTreeMap<String, Arc<dyn stasis_core::replication::Replication>>,
    pub catalog: Option<Arc<dyn Catalog>>,
    /// The in-cluster quiesce plugin; `None`: backups fail saying it is not available.
    pub plugins: Option<Arc<dyn crate::operator::PluginFactory>>,
    /// The Kubernetes restore path; `None`: Restores fail with `RestoreUnavailable`.
    pub restore: Option<Arc<dyn crate::operator::RestoreRunner>>,
}

impl OperatorWiring {
    /// The operator as `stasis operator` runs it: backups freeze the database through a
    /// port-forward and capture the app's objects ([`crate::operator::wired::InClusterPlugins`]),
    /// Restores run in place or into a new namespace ([`crate::operator::wired::KubeRestore`]).
    pub fn in_cluster(client: kube::Client, storage: Arc<dyn Storage>) -> OperatorWiring {
        use crate::operator::wired::{InClusterPlugins, KubeRestore};
        let plugins = Arc::new(InClusterPlugins::new(client.clone(), storage.clone()));
        let restore = Arc::new(KubeRestore::new(client.clone(), storage.clone(), Arc::new(stasis_core::clock::SystemClock)));
        OperatorWiring { client, storage, replication: BTreeMap::new(), catalog: None, plugins: Some(plugins), restore: Some(restore) }
    }
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

    let client = wiring.client;
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

/// `stasis k8s`: backup and restore of an app that runs in Kubernetes.
#[derive(clap::Subcommand, Debug)]
pub enum K8sCommand {
    /// Back up an app's Deployment/StatefulSet: capture its objects, freeze its database
    /// through a port-forward, snapshot its volumes, store the objects with the backup.
    Backup(K8sBackupArgs),
    /// Restore a backup in place (scale to 0, SnapRestore, scale back) or, with
    /// --to-namespace, into a new namespace from clones.
    Restore(K8sRestoreArgs),
}

#[derive(clap::Args, Debug)]
pub struct K8sBackupArgs {
    /// The app (of stasis.yaml): its volumes, SVM and database credentials.
    pub app: String,
    /// Its Deployment or StatefulSet.
    #[arg(long)]
    pub workload: String,
    /// Its namespace (default: the app's `namespace` in stasis.yaml).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Store the values of the Secrets the app uses with the backup (default: by reference).
    #[arg(long)]
    pub include_secret_values: bool,
    /// The database container (for its log; default: the pod's only container).
    #[arg(long)]
    pub container: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct K8sRestoreArgs {
    pub app: String,
    #[arg(long)]
    pub backup: String,
    /// Restore into this namespace from clones; without it, in place.
    #[arg(long)]
    pub to_namespace: Option<String>,
    /// Bound on each wait (pods gone, claims bound, pods Ready), in seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    #[arg(long)]
    pub container: Option<String>,
}

/// What the root binary hands over from `stasis.yaml` for `stasis k8s`.
pub struct K8sContext {
    pub orchestrator: stasis_core::workflow::Orchestrator,
    pub catalog: Arc<dyn Catalog>,
    pub storage: Arc<dyn Storage>,
    pub app: stasis_core::domain::AppSpec,
    pub namespace: Option<String>,
    /// The database's port in the pod, user and password (from the app's `mysql` section).
    pub db_port: u16,
    pub db_user: String,
    pub db_password: secrecy::SecretString,
}

fn mysql_factory(ctx: &K8sContext) -> crate::quiesce::PluginFactory {
    crate::quiesce::mysql_factory(ctx.db_user.clone(), ctx.db_password.clone(), ctx.app.freeze_timeout)
}

pub async fn k8s(command: K8sCommand, ctx: K8sContext) -> anyhow::Result<()> {
    let client = KubeCluster::client_from_env().await?;
    match command {
        K8sCommand::Backup(args) => {
            let namespace = args.namespace.or(ctx.namespace.clone()).ok_or_else(|| anyhow::anyhow!("app {}: give -n NAMESPACE or set its namespace in stasis.yaml", ctx.app.name))?;
            let cluster = KubeCluster::new(client.clone(), Some(ctx.storage.clone()), DiscoverOptions::default());
            let w = crate::workload::WorkloadRef::find(&client, &namespace, &args.workload).await?;
            let db = Arc::new(crate::quiesce::ForwardedDb::new(client, ctx.db_port, args.container, mysql_factory(&ctx)));
            let record = crate::restore::backup(&ctx.orchestrator, ctx.catalog.as_ref(), &cluster, &ctx.app, &w, db, args.include_secret_values).await?;
            println!("backup {} of {}: {:?}, {}", record.id, w.describe(), record.state, record.consistency.map(|c| format!("{c:?}")).unwrap_or_default());
        }
        K8sCommand::Restore(args) => {
            let waits = crate::restore::Waits { timeout: std::time::Duration::from_secs(args.timeout), ..Default::default() };
            let db = Arc::new(crate::quiesce::ForwardedDb::new(client.clone(), ctx.db_port, args.container, mysql_factory(&ctx)));
            let record = match &args.to_namespace {
                None => crate::restore::restore_in_place(&ctx.orchestrator, ctx.catalog.as_ref(), &client, &ctx.app, &args.backup, db, waits).await?,
                Some(ns) => crate::restore::restore_to_namespace(&ctx.orchestrator, ctx.catalog.as_ref(), &client, &ctx.app, &args.backup, ns, db, waits).await?,
            };
            println!(
                "restore {} of backup {}: {:?}, recovered to {}",
                record.id,
                record.backup_id,
                record.state,
                record.recovered_point.map(|p| p.0).unwrap_or_default()
            );
        }
    }
    Ok(())
}
