//! `stasis serve`: the API and dashboard over the apps of a config file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;

use crate::config::AppKindConfig;
use crate::runtime::Runtime;
use crate::server::{self, AppHandle, Registry};

pub const LISTEN_DEFAULT: &str = "127.0.0.1:7070";

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (default: the config's server.listen, else 127.0.0.1:7070).
    #[arg(long)]
    pub listen: Option<String>,
    /// File holding the API token; created with a new token if missing (default: the
    /// config's server.token_file, else stasis-api.token beside the config file).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Serve HTTPS with this certificate chain (PEM) ...
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// ... and this private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Do not run scheduled backups (SLA policies); backups only on request.
    #[arg(long)]
    pub no_scheduler: bool,
}

/// Read the token file, or create it (mode 0600) with a new token. Returns the token and
/// whether it was created now.
pub fn load_or_create_token(path: &Path) -> anyhow::Result<(String, bool)> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let token = text.trim().to_string();
            if token.len() < server::TOKEN_LEN_MIN {
                bail!("the token file {} holds fewer than {} characters; put a longer token there or delete it to have one generated", path.display(), server::TOKEN_LEN_MIN);
            }
            Ok((token, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = server::generate_token();
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(path).with_context(|| format!("creating the token file {}", path.display()))?;
            writeln!(file, "{token}").with_context(|| format!("writing the token file {}", path.display()))?;
            Ok((token, true))
        }
        Err(e) => Err(e).with_context(|| format!("reading the token file {}", path.display())),
    }
}

pub async fn serve(config: &Path, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let rt = Runtime::load(config)?;
    let server_config = rt.config.server.clone();
    let listen = args.listen.clone().or(server_config.listen.clone()).unwrap_or_else(|| LISTEN_DEFAULT.to_string());
    let token_file = args.token_file.clone().or_else(|| server_config.token_file.as_ref().map(|p| rt.config.resolve(p))).unwrap_or_else(|| rt.config.resolve(Path::new("stasis-api.token")));
    let tls_files = match (args.tls_cert.clone(), args.tls_key.clone()) {
        (Some(c), Some(k)) => Some((c, k)),
        _ => server_config.tls_cert_file.as_ref().zip(server_config.tls_key_file.as_ref()).map(|(c, k)| (rt.config.resolve(c), rt.config.resolve(k))),
    };
    let (token, created) = load_or_create_token(&token_file)?;
    let tls = match &tls_files {
        Some((cert, key)) => Some(server::tls_config(cert, key).await?),
        None => None,
    };

    let mut apps = Vec::new();
    for app in &rt.config.apps {
        let spec = rt.config.app_spec(app);
        let orchestrator = rt.orchestrator(app)?;
        let plugin = rt.plugin(app).await.map_err(|e| format!("{e:#}"));
        if let Err(why) = &plugin {
            tracing::warn!(app = %app.name, %why, "app unavailable");
        }
        if let Ok(plugin) = &plugin {
            // Finish or undo whatever a previous run left half-done.
            match orchestrator.reconcile(&spec, plugin.clone()).await {
                Ok(report) => tracing::info!(app = %app.name, ?report, "reconciled"),
                Err(e) => tracing::warn!(app = %app.name, error = %e, "reconciliation failed"),
            }
        }
        let mut handle = AppHandle::new(spec, app.cluster.clone(), orchestrator, plugin);
        handle.namespace = app.namespace.clone().unwrap_or_else(|| "local".into());
        if app.stop_command.is_none() {
            handle.refuse_in_place_while_answering = app.mysql.as_ref().map(|m| format!("{}:{}", m.host, m.port));
        }
        apps.push(handle);
    }
    let simdb_plugins: Vec<_> = apps.iter().zip(&rt.config.apps).filter(|(_, a)| a.kind == AppKindConfig::Simdb).filter_map(|(h, _)| h.plugin.as_ref().ok().cloned()).collect();
    let registry = Registry { apps, catalog: rt.catalog.clone(), title: rt.config.source.display().to_string() };
    let (router, state) = server::router(registry, token.clone())?;
    let listener = std::net::TcpListener::bind(&listen).with_context(|| format!("listening on {listen}"))?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    if created {
        println!("API token (new; saved to {}): {token}", token_file.display());
    } else {
        println!("API token: in {}", token_file.display());
    }
    println!("Stasis dashboard: {scheme}://{addr}/#token=<API token>");
    println!("OpenAPI document: {scheme}://{addr}/api-docs/openapi.json   metrics: {scheme}://{addr}/metrics (bearer token)");
    let _ = std::io::stdout().flush();
    let scheduler = (!args.no_scheduler).then(|| server::spawn_scheduler(state.clone(), server::SCHEDULER_PERIOD));
    server::serve(listener, router, tls, shutdown_signal()).await.context("serving")?;
    if let Some(s) = scheduler {
        s.abort();
    }
    // This process was the simulated databases' server: close them cleanly.
    for plugin in simdb_plugins {
        let _ = plugin.stop().await;
    }
    drop(state);
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutting down");
}
