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
