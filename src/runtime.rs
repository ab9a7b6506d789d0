//! From a config file to live parts: the catalog, one ONTAP client per cluster, an
//! orchestrator and a plugin per app.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use async_trait::async_trait;
use ontap_client::{OntapClient, OntapConfig, TlsTrust};
use stasis_core::catalog::Catalog;
use stasis_core::clock::SystemClock;
use stasis_core::domain::ConsistencyPoint;
use stasis_core::plugin::{AppPlugin, PluginError, RecoveryReport, RecoveryTarget};
use stasis_core::plugins::mysql::{MysqlConfig, MysqlPlugin, ServerControl};
use stasis_core::plugins::simdb::{SimDb, SimDbVolumes};
use stasis_core::sqlite_catalog::SqliteCatalog;
use stasis_core::storage::Storage;
use stasis_core::workflow::Orchestrator;

use crate::config::{read_secret, AppConfig, AppKindConfig, ClusterConfig, Config};
use crate::sim_plane::SimHttpVolumeData;

/// Bound on a configured stop or start command.
pub const HOOK_COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on the "does the server still answer?" probe before an in-place restore.
const SERVER_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Runtime {
    pub config: Config,
    pub catalog: Arc<SqliteCatalog>,
    clients: Mutex<HashMap<String, Arc<OntapClient>>>,
}

impl Runtime {
    /// Open the catalog named by the config (creating the file, not its directory) and make
    /// it agree with the config's apps and policies.
    pub fn open(config: Config) -> anyhow::Result<Runtime> {
        let path = config.catalog_path();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.is_dir() {
                bail!("catalog: the directory {} does not exist (create it, or point `catalog:` in {} elsewhere)", dir.display(), config.source.display());
            }
        }
        let catalog = Arc::new(SqliteCatalog::open(&path).with_context(|| format!("opening the catalog {}", path.display()))?);
        let runtime = Runtime { config, catalog, clients: Mutex::new(HashMap::new()) };
        runtime.sync_catalog()?;
        Ok(runtime)
    }

    pub fn load(path: &Path) -> anyhow::Result<Runtime> {
        Runtime::open(Config::load(path)?)
    }

    /// Apps and policies from the file go into the catalog; an app's policy from the file
    /// is assigned only if none is (the dashboard's Protect may have changed it).
    fn sync_catalog(&self) -> anyhow::Result<()> {
        for policy in self.config.policies()? {
            self.catalog.put_policy(&policy)?;
        }
        for app in &self.config.apps {
            self.catalog.put_app(&self.config.app_spec(app))?;
            if let Some(policy) = &app.policy {
                if self.catalog.app_policy(&app.name)?.is_none() {
                    self.catalog.set_app_policy(&app.name, Some(policy))?;
                }
            }
        }
        Ok(())
    }

    fn cluster_config(&self, name: &str) -> anyhow::Result<(usize, &ClusterConfig)> {
        self.config.cluster(name).ok_or_else(|| anyhow!("no cluster named {name:?}"))
    }

    /// The ONTAP client for a cluster (made once; the password file is read then).
    pub fn client(&self, cluster: &str) -> anyhow::Result<Arc<OntapClient>> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(cluster) {
            return Ok(c.clone());
        }
        let (i, c) = self.cluster_config(cluster)?;
        let config = self.ontap_config(i, c)?;
        let client = Arc::new(OntapClient::new(config).with_context(|| format!("clusters[{i}] ({})", c.name))?);
        clients.insert(cluster.to_string(), client.clone());
        Ok(client)
    }

    fn tls(&self, c: &ClusterConfig) -> TlsTrust {
        match (&c.ca_file, &c.pinned_certificate_file) {
            (Some(ca), _) => TlsTrust::CaFile(self.config.resolve(ca)),
            (None, Some(pin)) => TlsTrust::PinnedCertificate(self.config.resolve(pin)),
            (None, None) => TlsTrust::BuiltInRoots,
        }
    }

    fn ontap_config(&self, i: usize, c: &ClusterConfig) -> anyhow::Result<OntapConfig> {
        let password = read_secret(&format!("clusters[{i}].password_file"), &self.config.resolve(&c.password_file))?;
        let mut config = OntapConfig::new(c.url.trim_end_matches('/'), c.username.clone(), password);
        config.tls = self.tls(c);
        Ok(config)
    }

    pub fn orchestrator(&self, app: &AppConfig) -> anyhow::Result<Orchestrator> {
        let storage: Arc<dyn Storage> = self.client(&app.cluster)?;
        let catalog: Arc<dyn Catalog> = self.catalog.clone();
        Ok(Orchestrator::new(storage, catalog, Arc::new(SystemClock)))
    }

    /// The simulated database's files on the simulator that serves `cluster`.
    pub fn sim_data_plane(&self, cluster: &str) -> anyhow::Result<Arc<SimHttpVolumeData>> {
        let (i, c) = self.cluster_config(cluster)?;
        let password = read_secret(&format!("clusters[{i}].password_file"), &self.config.resolve(&c.password_file))?;
        let builder = ontap_client::http_client_builder(&self.tls(c)).with_context(|| format!("clusters[{i}] TLS settings"))?;
        Ok(Arc::new(SimHttpVolumeData::new(c.url.trim_end_matches('/'), &c.username, password, builder)?))
    }

    /// The simdb volumes of an app, resolved on its cluster.
    pub async fn simdb_volumes(&self, app: &AppConfig) -> anyhow::Result<SimDbVolumes> {
        let client = self.client(&app.cluster)?;
        let volumes = client.volumes_by_name(&app.svm, &app.volumes).await.with_context(|| format!("looking up the volumes of app {} on cluster {}", app.name, app.cluster))?;
        SimDbVolumes::from_volume_infos(&volumes).map_err(|e| anyhow!("{e}"))
    }

    /// Open the app's plugin. A simdb app's database is opened (crash recovery runs) from
    /// its volumes; this process is its server until the plugin is dropped.
    pub async fn plugin(&self, app: &AppConfig) -> anyhow::Result<Arc<dyn AppPlugin>> {
        let inner: Arc<dyn AppPlugin> = match app.kind {
            AppKindConfig::Simdb => Arc::new(self.open_simdb(app).await?),
            // The plugin runs stop_command and start_command itself (it waits for the pid file).
            AppKindConfig::Mysql => return Ok(Arc::new(self.mysql_plugin(app)?)),
        };
        Ok(match (&app.stop_command, &app.start_command) {
            (Some(stop), Some(start)) => Arc::new(CommandHooks { inner, stop: stop.clone(), start: start.clone() }),
            _ => inner,
        })
    }

    /// The MySQL/MariaDB plugin for a kind mysql app (the password file is read now).
    pub fn mysql_plugin(&self, app: &AppConfig) -> anyhow::Result<MysqlPlugin> {
        let (i, _) = self.config.app(&app.name).map_err(|m| anyhow!(m))?;
        let m = app.mysql.as_ref().ok_or_else(|| anyhow!("apps[{i}].mysql: kind mysql needs a mysql section"))?;
        let (lock_wait_timeout, start_wait) = self.config.mysql_timings(i, app)?;
        let password = read_secret(&format!("apps[{i}].mysql.password_file"), &self.config.resolve(&m.password_file))?;
        let server_control = match (&m.mount_root, &m.instance_command) {
            (Some(root), Some(instance)) => Some(ServerControl {
                stop_command: app.stop_command.clone().unwrap_or_default(),
                start_command: app.start_command.clone().unwrap_or_default(),
                mount_root: self.config.resolve(root),
                data_subdir: m.data_subdir.clone().unwrap_or_default(),
                instance_command: instance.clone(),
                start_wait,
            }),
            _ => None,
        };
        let config = MysqlConfig {
            host: m.host.clone(),
            port: m.port,
            user: m.user.clone(),
            password,
            freeze_timeout: self.config.app_spec(app).freeze_timeout,
            lock_wait_timeout,
            server_control,
        };
        MysqlPlugin::new(config).map_err(|e| anyhow!("apps[{i}] ({}): {e}", app.name))
    }

    /// Why no restore of `app` can run with this config, if none can: a kind mysql app
    /// needs to know where its restored copy appears and how to open it for verification.
    pub fn restore_refusal(&self, app: &AppConfig) -> Option<String> {
        let m = app.mysql.as_ref()?;
        if m.mount_root.is_some() && m.instance_command.is_some() {
            return None;
        }
        let i = self.config.app(&app.name).map(|(i, _)| i).unwrap_or_default();
        Some(format!(
            "cannot restore app {}: a restore opens the restored copy on a private server to verify it, so apps[{i}].mysql needs mount_root \
             (where this host sees the volumes by junction path) and instance_command (e.g. [\"mariadbd\", \"--no-defaults\", \"--datadir={{datadir}}\", \
             \"--port={{port}}\", \"--socket={{run_dir}}/mysqld.sock\", \"--pid-file={{run_dir}}/mysqld.pid\", \"--log-error={{run_dir}}/error.log\", \"--log-bin=mysql-bin\", \"--server-id=1\"]) in {}",
            app.name,
            self.config.source.display()
        ))
    }

    pub async fn open_simdb(&self, app: &AppConfig) -> anyhow::Result<SimDb> {
        let volumes = self.simdb_volumes(app).await?;
        let data = self.sim_data_plane(&app.cluster)?;
        let (db, _) = SimDb::open(data, volumes, Arc::new(SystemClock)).map_err(|e| {
            anyhow!("app {}: cannot open the simulated database on volumes {}: {e} (create it with `stasis --config {} simdb init {}`)", app.name, app.volumes.join(", "), self.config.source.display(), app.name)
        })?;
        Ok(db)
    }

    /// Why an in-place restore of `app` must not go ahead now, if it must not.
    pub async fn in_place_refusal(&self, app: &AppConfig) -> Option<String> {
        if app.stop_command.is_some() {
            return None;
        }
        match (&app.kind, &app.mysql) {
            (AppKindConfig::Mysql, Some(m)) => {
                let addr = format!("{}:{}", m.host, m.port);
                let answers = matches!(tokio::time::timeout(SERVER_PROBE_TIMEOUT, tokio::net::TcpStream::connect(&addr)).await, Ok(Ok(_)));
                answers.then(|| {
                    format!(
                        "refusing to restore app {} in place: its MySQL server at {addr} still answers, and a SnapRestore under a running server corrupts it. \
                         Stop the server first, or add stop_command and start_command (argument vectors, e.g. [\"systemctl\", \"stop\", \"mariadb\"]) to the app in {} \
                         so stasis stops and starts it, or restore to a clone with --to-clone NAME",
                        app.name,
                        self.config.source.display()
                    )
                })
            }
            // The simulated database has no server of its own: stasis opens it per command.
            _ => None,
        }
    }
}

/// Runs the app's configured stop and start commands (argument vectors, no shell) around
/// the plugin's own stop and start.
pub struct CommandHooks {
    pub inner: Arc<dyn AppPlugin>,
    pub stop: Vec<String>,
    pub start: Vec<String>,
}

async fn run_argv(what: &str, argv: &[String]) -> Result<(), PluginError> {
    let mut command = tokio::process::Command::new(&argv[0]);
    command.args(&argv[1..]).kill_on_drop(true).stdin(std::process::Stdio::null());
    let output = tokio::time::timeout(HOOK_COMMAND_TIMEOUT, command.output())
        .await
        .map_err(|_| PluginError::App(format!("{what} {:?} did not finish within {HOOK_COMMAND_TIMEOUT:?}", argv[0])))?
        .map_err(|e| PluginError::App(format!("{what} {:?} could not run: {e}", argv[0])))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(PluginError::App(format!("{what} {:?} failed ({}): {}", argv[0], output.status, stderr.trim().chars().take(500).collect::<String>())));
    }
    Ok(())
}

#[async_trait]
impl AppPlugin for CommandHooks {
    async fn quiesce(&self) -> Result<ConsistencyPoint, PluginError> {
        self.inner.quiesce().await
    }
    async fn unquiesce(&self) -> Result<(), PluginError> {
        self.inner.unquiesce().await
    }
    async fn stop(&self) -> Result<(), PluginError> {
        self.inner.stop().await?;
        run_argv("stop_command", &self.stop).await
    }
    async fn start(&self) -> Result<(), PluginError> {
        run_argv("start_command", &self.start).await?;
        self.inner.start().await
    }
    async fn recover(&self, target: &RecoveryTarget) -> Result<RecoveryReport, PluginError> {
        self.inner.recover(target).await
    }
}
