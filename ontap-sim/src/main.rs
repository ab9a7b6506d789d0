//! `ontap-sim serve`: run one simulated ONTAP cluster's REST API.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ontap_sim::{ClusterConfig, SimConfig};

#[derive(Parser)]
#[command(name = "ontap-sim", version, about = "A faithful ONTAP REST API simulator with a copy-on-write volume model")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the ONTAP REST API (under /api) and the simulator's control API (under /sim/v1).
    Serve(ServeArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (the chosen address is printed).
    #[arg(long, env = "ONTAP_SIM_LISTEN", default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// Serve HTTPS with a freshly generated self-signed certificate.
    #[arg(long)]
    tls: bool,
    /// Where the TLS certificate is written (default: a temporary directory).
    #[arg(long, requires = "tls")]
    tls_dir: Option<PathBuf>,
    #[arg(long, env = "ONTAP_SIM_USER", default_value = "admin")]
    user: String,
    /// Password for basic auth. Prefer --password-file or the environment over the command line.
    #[arg(long, env = "ONTAP_SIM_PASSWORD", default_value = "admin", hide_env_values = true)]
    password: String,
    /// Read the password from this file (first line) instead.
    #[arg(long, conflicts_with = "password")]
    password_file: Option<PathBuf>,
    #[arg(long, default_value = "sim-a")]
    cluster_name: String,
    /// An SVM to create; repeat for more.
    #[arg(long = "svm", default_values_t = vec!["svm0".to_string()])]
    svms: Vec<String>,
    #[arg(long, default_value = "aggr1")]
    aggregate: String,
    /// Seed for uuids and fault decisions: the same seed replays the same run.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Mount every volume that has a junction path (`nas.path`) at DIR/<junction path> (FUSE),
    /// following creates, path changes and deletes; everything is unmounted at shutdown.
    #[cfg(feature = "fuse")]
    #[arg(long, value_name = "DIR", env = "ONTAP_SIM_MOUNT_ROOT")]
    mount_root: Option<PathBuf>,
}

/// How often the mount watcher compares junction paths with what is mounted.
#[cfg(feature = "fuse")]
const MOUNT_RECONCILE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into())).with_writer(std::io::stderr).init();
    let Command::Serve(args) = Cli::parse().command;
    let password = match &args.password_file {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading the password file {}", path.display()))?.lines().next().unwrap_or_default().to_string(),
        None => args.password.clone(),
    };
    #[cfg(feature = "fuse")]
    let mount_root = args.mount_root.clone();
    let tls_dir = args.tls.then(|| args.tls_dir.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("ontap-sim-{}", std::process::id()))));
    let config = SimConfig {
        cluster: ClusterConfig { name: args.cluster_name, svms: args.svms, aggregate: args.aggregate, seed: args.seed, ..ClusterConfig::default() },
        listen: args.listen,
        username: args.user,
        password,
        tls_dir,
    };
    let running = ontap_sim::spawn(config).await?;
    println!("ontap-sim listening on {}", running.base_url());
    if let Some(path) = running.cert_path() {
        println!("TLS certificate (pin it in clients): {}", path.display());
    }
    #[cfg(feature = "fuse")]
    let mounts = match mount_root {
        Some(root) => {
            let manager = ontap_sim::fuse::MountManager::new(running.sim().clone(), &root, ontap_sim::fuse::MountOptions::default())?;
            for e in manager.reconcile() {
                tracing::warn!("{e:#}");
            }
            manager.start(MOUNT_RECONCILE_INTERVAL);
            println!("mounting volumes with a junction path under {}", manager.root().display());
            Some(manager)
        }
        None => None,
    };
    shutdown_signal().await;
    println!("ontap-sim shutting down");
    #[cfg(feature = "fuse")]
    if let Some(manager) = mounts {
        // Unmounting waits on the kernel: not on the runtime's threads.
        let _ = tokio::task::spawn_blocking(move || manager.shutdown()).await;
    }
    running.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
