//! The config-driven commands: `backup`, `restore`, `backups list`, and `simdb` (the
//! simulated database's own tooling). `main.rs` parses, this module runs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;
use stasis_core::domain::{BackupRecord, RestoreMode, RestoreRecord};
use stasis_core::plugin::AppPlugin;
use stasis_core::plugins::simdb::{consistency_point, format as simdb_format, read_recovered, SimDbVolumes};

use crate::config::AppKindConfig;
use crate::runtime::Runtime;

/// Where the config is looked for when `--config` is not given.
pub const CONFIG_DEFAULT: &str = "stasis.yaml";

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// The app's name in the config file.
    pub app: String,
    /// Print one JSON object: id, consistency_point, freeze_window_ms, snapshots, ...
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    pub backup_id: String,
    /// Restore to a new FlexClone volume with this name instead of in place (an app on
    /// several volumes gets NAME_<volume> for each).
    #[arg(long, value_name = "NEW_VOLUME_NAME")]
    pub to_clone: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum BackupsCommand {
    /// List backups, oldest first.
    List(ListArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Yaml,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only this app's backups.
    #[arg(long)]
    pub app: Option<String>,
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: OutputFormat,
}

#[derive(Subcommand, Debug)]
pub enum SimdbCommand {
    /// Create an empty simulated database (keys 0..N, all zero) on the app's volumes.
    Init {
        app: String,
        #[arg(long, default_value_t = 1000)]
        keys: u32,
    },
    /// Commit one transaction setting KEY=VALUE pairs, then close the database cleanly.
    Set {
        app: String,
        #[arg(required = true, value_name = "KEY=VALUE")]
        writes: Vec<String>,
    },
    /// Print the database's last transaction and values as JSON (read-only; `--volumes`
    /// reads other volumes, e.g. a clone restore's).
    Show {
        app: String,
        #[arg(long, value_delimiter = ',')]
        volumes: Option<Vec<String>>,
    },
}

/// A backup as the CLI and the API print it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BackupView {
    pub id: String,
    pub app: String,
    pub state: String,
    pub consistency: Option<String>,
    pub consistency_point: Option<String>,
    pub freeze_window_ms: Option<f64>,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub snapshot_name: String,
    pub snapshots: Vec<SnapshotView>,
    pub verified: bool,
    pub expired: bool,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SnapshotView {
    pub volume: String,
    pub volume_uuid: String,
    pub name: String,
    pub uuid: String,
    pub create_time: String,
}

fn snake<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

impl From<&BackupRecord> for BackupView {
    fn from(b: &BackupRecord) -> Self {
        BackupView {
            id: b.id.clone(),
            app: b.app.clone(),
            state: snake(&b.state),
            consistency: b.consistency.as_ref().map(snake),
            consistency_point: b.evidence.consistency_point.as_ref().map(|p| p.0.clone()),
            freeze_window_ms: b.evidence.freeze_window().map(|d| (d.as_secs_f64() * 1e6).round() / 1e3),
            started_at: b.started_at.to_rfc3339(),
            finished_at: b.finished_at.map(|t| t.to_rfc3339()),
            snapshot_name: b.snapshot_name.clone(),
            snapshots: b
                .snapshots
                .iter()
                .map(|s| SnapshotView { volume: s.volume_name.clone(), volume_uuid: s.volume_uuid.clone(), name: b.snapshot_name.clone(), uuid: s.snapshot_uuid.clone(), create_time: s.create_time.to_rfc3339() })
                .collect(),
            verified: b.verified,
            expired: b.expired,
            error: b.error.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RestoreView {
    pub id: String,
    pub backup_id: String,
    pub app: String,
    /// `in_place` or `clone`.
    pub mode: String,
    pub clone_volumes: Vec<String>,
    pub state: String,
    pub recovered_point: Option<String>,
    pub needed_crash_recovery: Option<bool>,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub error: Option<String>,
}

impl From<&RestoreRecord> for RestoreView {
    fn from(r: &RestoreRecord) -> Self {
        RestoreView {
            id: r.id.clone(),
            backup_id: r.backup_id.clone(),
            app: r.app.clone(),
            mode: match &r.mode {
                RestoreMode::InPlace => "in_place".into(),
                RestoreMode::Clone { .. } => "clone".into(),
            },
            clone_volumes: match &r.mode {
                RestoreMode::Clone { clone_names } => clone_names.clone(),
                RestoreMode::InPlace => Vec::new(),
            },
            state: snake(&r.state),
            recovered_point: r.recovered_point.as_ref().map(|p| p.0.clone()),
            needed_crash_recovery: r.needed_crash_recovery,
            started_at: r.started_at.to_rfc3339(),
            finished_at: r.finished_at.map(|t| t.to_rfc3339()),
            error: r.error.clone(),
        }
    }
}

pub fn config_path(given: Option<&Path>) -> PathBuf {
    given.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(CONFIG_DEFAULT))
}

pub async fn backup(config: &Path, args: BackupArgs) -> anyhow::Result<ExitCode> {
    let rt = Runtime::load(config)?;
    let (_, configured) = rt.config.app(&args.app).map_err(|m| anyhow!(m))?;
    let configured = configured.clone();
    // After a failover the app runs on site B: back it up there.
    let app = rt.active_app(&configured)?;
    let spec = rt.config.app_spec(&app);
    let orchestrator = rt.orchestrator(&app)?;
    let plugin = rt.plugin(&app).await?;
    let result = orchestrator.backup(&spec, plugin.clone()).await;
    // This process was the simulated database's server: close it cleanly.
    close(&app.kind, &plugin).await;
    let outcome = result.with_context(|| format!("backup of app {} failed (recorded in the catalog)", app.name))?;
    let view = BackupView::from(&outcome.record);
    let replication = crate::dr_cmd::replicate_backup(&rt, &configured, &orchestrator, &outcome.record).await;
    let code = match &replication {
        Some(r) if !r.ok => {
            eprintln!("warning: backup {} stands, but it did not reach {}: {}", view.id, r.destination_cluster, r.error.as_deref().unwrap_or("?"));
            ExitCode::from(crate::dr_cmd::EXIT_ATTENTION)
        }
        _ => ExitCode::SUCCESS,
    };
    if args.json {
        let mut json = serde_json::to_value(&view)?;
        if let (Some(r), Some(object)) = (&replication, json.as_object_mut()) {
            object.insert("replication".into(), serde_json::to_value(r)?);
        }
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        println!("backup {} of app {} complete ({})", view.id, view.app, view.consistency.as_deref().unwrap_or("?"));
        println!("  consistency point  {}", view.consistency_point.as_deref().unwrap_or("-"));
        println!("  freeze window      {} ms", view.freeze_window_ms.map_or("-".into(), |f| format!("{f:.2}")));
        for s in &view.snapshots {
            println!("  snapshot           {} on {} ({})", s.name, s.volume, s.create_time);
        }
        if let Some(r) = replication.as_ref().filter(|r| r.ok) {
            let bytes: u64 = r.transfers.iter().map(|t| t.bytes_transferred).sum();
            println!("  replicated to      {} ({bytes} bytes transferred)", r.destination_cluster);
        }
    }
    Ok(code)
}

async fn close(kind: &AppKindConfig, plugin: &Arc<dyn AppPlugin>) {
    if *kind == AppKindConfig::Simdb {
        if let Err(e) = plugin.stop().await {
            tracing::warn!(error = %e, "closing the simulated database");
        }
    }
}

pub async fn restore(config: &Path, args: RestoreArgs) -> anyhow::Result<ExitCode> {
    let rt = Runtime::load(config)?;
    let backup = stasis_core::catalog::Catalog::backup(rt.catalog.as_ref(), &args.backup_id)?
        .ok_or_else(|| anyhow!("no backup {:?} in the catalog {} (see `stasis backups list`)", args.backup_id, rt.config.catalog_path().display()))?;
    let (_, app) = rt.config.app(&backup.app).map_err(|m| anyhow!("backup {} belongs to app {:?}, which the config no longer defines: {m}", backup.id, backup.app))?;
    let app = app.clone();
    let spec = rt.config.app_spec(&app);
    if args.to_clone.is_none() {
        if rt.active_app(&app)?.cluster != app.cluster {
            bail!("app {} runs on site B after a failover: restore to a clone (--to-clone NAME), or fail back first", app.name);
        }
        if let Some(refusal) = rt.in_place_refusal(&app).await {
            bail!(refusal);
        }
    }
    if let Some(refusal) = rt.restore_refusal(&app) {
        bail!(refusal);
    }
    let orchestrator = rt.orchestrator(&app)?;
    let plugin = rt.plugin(&app).await?;
    let result = match &args.to_clone {
        Some(name) => {
            let names = clone_names(name, &backup)?;
            orchestrator.restore_to_clone_named(&spec, &backup.id, plugin.clone(), Some(names)).await
        }
        None => orchestrator.restore_in_place(&spec, &backup.id, plugin.clone()).await,
    };
    close(&app.kind, &plugin).await;
    let record = result.with_context(|| format!("restore of backup {} failed (recorded in the catalog)", backup.id))?;
    let view = RestoreView::from(&record);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        match view.mode.as_str() {
            "clone" => println!("restore {}: backup {} cloned to {}", view.id, view.backup_id, view.clone_volumes.join(", ")),
            _ => println!("restore {}: app {} restored in place to backup {}", view.id, view.app, view.backup_id),
        }
        println!("  recovered point    {}", view.recovered_point.as_deref().unwrap_or("-"));
        println!("  crash recovery     {}", view.needed_crash_recovery.map_or("-", |b| if b { "needed" } else { "not needed" }));
    }
    Ok(ExitCode::SUCCESS)
}

/// One clone per volume: the name itself for one volume, `NAME_<volume>` for several.
pub fn clone_names(name: &str, backup: &BackupRecord) -> anyhow::Result<Vec<String>> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || name.starts_with(|c: char| c.is_ascii_digit()) {
        bail!("--to-clone {name:?}: an ONTAP volume name is letters, digits and _ and does not start with a digit");
    }
    Ok(match backup.snapshots.as_slice() {
        [_] => vec![name.to_string()],
        snapshots => snapshots.iter().map(|s| format!("{name}_{}", s.volume_name)).collect(),
    })
}

pub async fn backups_list(config: &Path, args: ListArgs) -> anyhow::Result<ExitCode> {
    let rt = Runtime::load(config)?;
    if let Some(app) = &args.app {
        rt.config.app(app).map_err(|m| anyhow!(m))?;
    }
    let backups: Vec<BackupView> = stasis_core::catalog::Catalog::backups(rt.catalog.as_ref(), args.app.as_deref())?.iter().map(BackupView::from).collect();
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&backups)?),
        OutputFormat::Yaml => print!("{}", serde_norway::to_string(&backups)?),
        OutputFormat::Table => print!("{}", backups_table(&backups)),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn backups_table(backups: &[BackupView]) -> String {
    let mut rows = vec![["ID", "APP", "STATE", "CONSISTENCY", "STARTED", "FREEZE MS", "CONSISTENCY POINT"].map(String::from).to_vec()];
    for b in backups {
        let state = if b.expired { format!("{} (expired)", b.state) } else { b.state.clone() };
        rows.push(vec![
            b.id.clone(),
            b.app.clone(),
            state,
            b.consistency.clone().unwrap_or_else(|| "-".into()),
            b.started_at.chars().take(19).collect(),
            b.freeze_window_ms.map_or("-".into(), |f| format!("{f:.2}")),
            b.consistency_point.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    let widths: Vec<usize> = (0..rows[0].len()).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    if backups.is_empty() {
        out.push_str("(no backups)\n");
    }
    out
}

pub async fn simdb(config: &Path, command: SimdbCommand) -> anyhow::Result<ExitCode> {
    let rt = Runtime::load(config)?;
    let simdb_app = |name: &str| -> anyhow::Result<crate::config::AppConfig> {
        let (_, app) = rt.config.app(name).map_err(|m| anyhow!(m))?;
        if app.kind != AppKindConfig::Simdb {
            bail!("app {name} is of kind mysql; `stasis simdb` works on kind simdb apps");
        }
        // Where the app runs now (site B after a failover).
        rt.active_app(app)
    };
    match command {
        SimdbCommand::Init { app, keys } => {
            let app = simdb_app(&app)?;
            let volumes = rt.simdb_volumes(&app).await?;
            let data = rt.sim_data_plane(&app.cluster)?;
            if read_recovered(data.as_ref(), &volumes).is_ok() {
                bail!("app {}: volumes {} already hold a simulated database; refusing to overwrite it", app.name, app.volumes.join(", "));
            }
            simdb_format(data.as_ref(), &volumes, &vec![0; keys as usize], false).map_err(|e| anyhow!("formatting the simulated database: {e}"))?;
            println!("simulated database of app {} created on {} ({keys} keys, txid 0)", app.name, app.volumes.join(", "));
        }
        SimdbCommand::Set { app, writes } => {
            let app = simdb_app(&app)?;
            let writes = writes
                .iter()
                .map(|w| {
                    let (k, v) = w.split_once('=').ok_or_else(|| anyhow!("{w:?}: expected KEY=VALUE"))?;
                    Ok((k.trim().parse::<u32>().with_context(|| format!("{w:?}: the key is a number"))?, v.trim().parse::<u64>().with_context(|| format!("{w:?}: the value is a number"))?))
                })
                .collect::<anyhow::Result<Vec<(u32, u64)>>>()?;
            let db = rt.open_simdb(&app).await?;
            let committed = db.try_commit(&writes).map_err(|e| anyhow!("commit refused: {e}"));
            // Close cleanly so the commit (acknowledged, not yet flushed) reaches the volume.
            let closed = AppPlugin::stop(&db).await.map_err(|e| anyhow!("closing the database: {e}"));
            let txid = committed?;
            closed?;
            println!("committed txid {txid} ({})", consistency_point(txid));
        }
        SimdbCommand::Show { app, volumes } => {
            let app = simdb_app(&app)?;
            let client = rt.client(&app.cluster)?;
            let names = volumes.unwrap_or_else(|| app.volumes.clone());
            let infos = client.volumes_by_name(&app.svm, &names).await.with_context(|| format!("looking up volumes {}", names.join(", ")))?;
            let volumes = SimDbVolumes::from_volume_infos(&infos).map_err(|e| anyhow!("{e}"))?;
            let data = rt.sim_data_plane(&app.cluster)?;
            let db = read_recovered(data.as_ref(), &volumes).map_err(|e| anyhow!("reading the simulated database on {}: {e}", names.join(", ")))?;
            let json = serde_json::json!({
                "volumes": names,
                "last_txid": db.last_txid,
                "consistency_point": consistency_point(db.last_txid).0,
                "needed_crash_recovery": db.needed_crash_recovery,
                "anomalies": db.anomalies,
                "values": db.values,
            });
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}
