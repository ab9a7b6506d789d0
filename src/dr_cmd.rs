//! Disaster recovery from the config file: `stasis dr setup|status|drill`, `stasis failover`,
//! `stasis failback`, and the SnapMirror update after `stasis backup`. A thin face over
//! `stasis_core::workflow::dr`: this module builds the two sites and the app's instances on
//! them, runs one workflow, and prints its record.
//!
//! Site A is the app's `cluster`, site B its `dr.cluster`. Which site the app runs on is the
//! catalog's DR plan (`active_site`): after a failover, `backup` and `simdb` act on site B's
//! volumes. An unplanned failover builds nothing that talks to site A.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use serde::Serialize;
use stasis_core::catalog::Catalog;
use stasis_core::clock::SystemClock;
use stasis_core::domain::{AppSpec, BackupRecord};
use stasis_core::dr::{Divergence, DrPlan, DrState, FailoverRecord, Site};
use stasis_core::plugin::AppPlugin;
use stasis_core::plugins::simdb::{SimDb, SimDbVolumes};
use stasis_core::replication::{MirrorState, Replication, TransferInfo};
use stasis_core::storage::Storage;
use stasis_core::workflow::dr::{DrBounds, DrPlanRequest, DrSite, FailbackOutcome};
use stasis_core::workflow::Orchestrator;

use crate::cli::OutputFormat;
use crate::config::{parse_duration, AppConfig, AppKindConfig, DrConfig};
use crate::runtime::Runtime;

/// Exit status when a command did its part but something needs attention: a backup whose
/// update failed, a failback that waits for `--yes`.
pub const EXIT_ATTENTION: u8 = 1;

#[derive(Subcommand, Debug)]
pub enum DrCommand {
    /// Peer the clusters and SVMs, create the mirror volumes and relationships on site B
    /// (the app's `dr` section) and initialize them. Idempotent.
    Setup(DrAppArgs),
    /// The DR plan, each relationship's state, health, lag and last transferred snapshot,
    /// and the backup a failover would start from now.
    Status(DrStatusArgs),
    /// Non-disruptive test: clone the newest mirrored app-consistent backup on site B, open
    /// the app on the clone, verify it, report the RPO, delete the clone.
    Drill(DrAppArgs),
}

#[derive(Args, Debug)]
pub struct DrAppArgs {
    pub app: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct DrStatusArgs {
    pub app: String,
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: OutputFormat,
}

#[derive(Args, Debug)]
pub struct FailoverArgs {
    pub app: String,
    /// Site A answers: stop the app, send a final snapshot, break, start on site B (no loss).
    #[arg(long, conflicts_with = "unplanned", required_unless_present = "unplanned")]
    pub planned: bool,
    /// Site A is gone: break on site B, revert to the newest app-consistent backup there,
    /// start and verify. Talks to site B only.
    #[arg(long)]
    pub unplanned: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct FailbackArgs {
    pub app: String,
    /// Go ahead even though the reverse resync discards what site A wrote after the last
    /// snapshot both sites hold (without it, that is reported and nothing changes).
    #[arg(long)]
    pub yes: bool,
    #[arg(long)]
    pub json: bool,
}

// ------------------------------------------------------------------ views

#[derive(Debug, Clone, Serialize)]
pub struct VolumeSnapshotView {
    pub volume: String,
    pub snapshot: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct DivergenceView {
    /// Snapshots newer than the last common one, per volume: lost by the resync.
    pub snapshots: Vec<VolumeSnapshotView>,
    /// Bytes written since the last common snapshot (`null`: the array did not say).
    pub bytes: Option<u64>,
    /// What each volume reverts to.
    pub common_snapshots: Vec<VolumeSnapshotView>,
}

impl From<&Divergence> for DivergenceView {
    fn from(d: &Divergence) -> Self {
        let pairs = |v: &[(String, String)]| v.iter().map(|(volume, snapshot)| VolumeSnapshotView { volume: volume.clone(), snapshot: snapshot.clone() }).collect();
        DivergenceView { snapshots: pairs(&d.snapshots), bytes: d.bytes, common_snapshots: pairs(&d.common_snapshots) }
    }
}

/// A failover, failback or drill as the CLI prints it.
#[derive(Debug, Clone, Serialize)]
pub struct FailoverView {
    pub id: String,
    pub app: String,
    /// `planned`, `unplanned`, `failback` or `drill`.
    pub kind: String,
    pub state: String,
    pub from_site: String,
    pub to_site: String,
    /// The cluster the app runs on afterwards (for a drill: where the clone ran).
    pub to_cluster: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub restored_backup_id: Option<String>,
    pub restored_snapshot: Option<String>,
    /// When the restored state was the app's current one.
    pub restored_state_at: Option<String>,
    pub expected_point: Option<String>,
    pub recovered_point: Option<String>,
    /// Age of the restored state at the start (what was lost); 0 for planned moves.
    pub rpo_ms: Option<f64>,
    /// Start to app verified on the new side.
    pub rto_ms: Option<f64>,
    pub bytes_transferred: u64,
    pub verified: bool,
    pub divergence: Option<DivergenceView>,
    pub error: Option<String>,
}

fn snake<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

impl FailoverView {
    fn new(r: &FailoverRecord, plan: Option<&DrPlan>) -> Self {
        let to_cluster = plan.map(|p| if r.to_site == Site::B { p.destination_cluster.clone() } else { p.source_cluster.clone() }).unwrap_or_default();
        FailoverView {
            id: r.id.clone(),
            app: r.app.clone(),
            kind: snake(&r.kind),
            state: snake(&r.state),
            from_site: snake(&r.from_site),
            to_site: snake(&r.to_site),
            to_cluster,
            started_at: r.started_at.to_rfc3339(),
            finished_at: r.finished_at.map(|t| t.to_rfc3339()),
            restored_backup_id: r.restored_backup_id.clone(),
            restored_snapshot: r.restored_snapshot.clone(),
            restored_state_at: r.restored_state_at.map(|t| t.to_rfc3339()),
            expected_point: r.expected_point.as_ref().map(|p| p.0.clone()),
            recovered_point: r.recovered_point.as_ref().map(|p| p.0.clone()),
            rpo_ms: r.rpo.map(ms),
            rto_ms: r.rto.map(ms),
            bytes_transferred: r.bytes_transferred,
            verified: r.verified,
            divergence: r.divergence.as_ref().map(DivergenceView::from),
            error: r.error.clone(),
        }
    }

    fn print_text(&self) {
        let what = match self.kind.as_str() {
            "drill" => format!("drill {} of app {} on {}", self.id, self.app, self.to_cluster),
            "failback" => format!("failback {} of app {} to site A ({})", self.id, self.app, self.to_cluster),
            kind => format!("{kind} failover {} of app {} to site B ({})", self.id, self.app, self.to_cluster),
        };
        println!("{what}: {}{}", self.state, if self.verified { ", verified" } else { "" });
        if let Some(b) = &self.restored_backup_id {
            println!("  restored backup    {b} ({})", self.restored_snapshot.as_deref().unwrap_or("-"));
        } else if let Some(s) = &self.restored_snapshot {
            println!("  final snapshot     {s}");
        }
        println!("  recovered point    {}", self.recovered_point.as_deref().unwrap_or("-"));
        println!("  RPO                {}   (age of the state the app started from)", self.rpo_ms.map_or("-".into(), |m| format!("{:.3} s", m / 1000.0)));
        println!("  RTO                {}   (start to app verified)", self.rto_ms.map_or("-".into(), |m| format!("{:.3} s", m / 1000.0)));
        if self.kind != "drill" && self.kind != "unplanned" {
            println!("  bytes transferred  {}", self.bytes_transferred);
        }
    }
}

/// The SnapMirror update after a backup.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicationView {
    pub destination_cluster: String,
    pub snapshot: String,
    pub ok: bool,
    pub transfers: Vec<TransferView>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TransferView {
    pub relationship_uuid: String,
    pub uuid: String,
    pub state: String,
    pub snapshot: Option<String>,
    pub bytes_transferred: u64,
}

impl From<&TransferInfo> for TransferView {
    fn from(t: &TransferInfo) -> Self {
        TransferView { relationship_uuid: t.relationship_uuid.clone(), uuid: t.uuid.clone(), state: snake(&t.state), snapshot: t.snapshot.clone(), bytes_transferred: t.bytes_transferred }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DrStatusView {
    pub app: String,
    /// `planned`, `mirrored`, `failed_over`, `reverse_mirrored`.
    pub state: String,
    pub active_site: String,
    pub active_cluster: String,
    pub source: SideView,
    pub destination: SideView,
    pub policy: String,
    pub schedule_s: Option<f64>,
    /// Every relationship snapmirrored and healthy, and no lag beyond the schedule.
    pub healthy: bool,
    pub volumes: Vec<MirrorView>,
    /// What an unplanned failover would start site B from now.
    pub restorable_backup: Option<RestorableView>,
    pub last_failover: Option<FailoverView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SideView {
    pub cluster: String,
    pub svm: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct MirrorView {
    pub source: String,
    pub destination: String,
    pub relationship_uuid: Option<String>,
    /// ONTAP's relationship state (`snapmirrored`, `broken_off`, ...), `null` if unknown.
    pub relationship_state: Option<String>,
    pub healthy: Option<bool>,
    pub unhealthy_reason: Option<String>,
    pub lag_s: Option<f64>,
    pub last_transfer_state: Option<String>,
    pub last_transfer_bytes: Option<u64>,
    /// The newest snapshot the mirror holds (what the last transfer carried).
    pub last_transferred_snapshot: Option<String>,
    /// Why the array could not be asked, if it could not.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestorableView {
    pub backup_id: String,
    pub snapshot: String,
    pub consistency_point: Option<String>,
    /// How much a failover now would lose (age of that state).
    pub age_s: Option<f64>,
}

// ------------------------------------------------------------------ sites and instances

/// One app with a DR section, its two sites and an orchestrator.
struct DrApp {
    app: AppConfig,
    dr: DrConfig,
    spec: AppSpec,
    a: DrSite,
    b: DrSite,
    orchestrator: Orchestrator,
}

impl Runtime {
    /// A cluster as the DR workflows reach it (storage and replication over its client).
    pub fn dr_site(&self, cluster: &str) -> anyhow::Result<DrSite> {
        let (_, c) = self.config.cluster(cluster).ok_or_else(|| anyhow!("no cluster named {cluster:?}"))?;
        let addresses = match &c.intercluster_addresses {
            Some(a) => a.clone(),
            None => {
                let url = url::Url::parse(&c.url).with_context(|| format!("cluster {cluster}: url {:?}", c.url))?;
                let host = url.host_str().ok_or_else(|| anyhow!("cluster {cluster}: url {:?} has no host", c.url))?;
                vec![match url.port() {
                    Some(port) => format!("{host}:{port}"),
                    None => host.to_string(),
                }]
            }
        };
        let client = self.client(cluster)?;
        Ok(DrSite { name: cluster.to_string(), storage: client.clone() as Arc<dyn Storage>, replication: client as Arc<dyn Replication>, intercluster_addresses: addresses })
    }

    /// The app where it runs now: after a failover (the catalog's DR plan says site B), its
    /// cluster, SVM and volumes are the mirrors'.
    pub fn active_app(&self, app: &AppConfig) -> anyhow::Result<AppConfig> {
        let plan = self.catalog.dr_plan(&app.name)?;
        Ok(match plan {
            Some(plan) if plan.active_site == Site::B => AppConfig { cluster: plan.destination_cluster.clone(), svm: plan.destination_svm.clone(), volumes: plan.destination_volumes(), ..app.clone() },
            _ => app.clone(),
        })
    }

    /// A stopped simulated database on `volumes` of `svm` at `cluster`: what a failover or a
    /// drill opens.
    async fn simdb_standby(&self, cluster: &str, svm: &str, volumes: &[String]) -> anyhow::Result<Arc<SimDb>> {
        let client = self.client(cluster)?;
        let infos = client.volumes_by_name(svm, volumes).await.with_context(|| format!("looking up volumes {} on cluster {cluster}", volumes.join(", ")))?;
        let volumes = SimDbVolumes::from_volume_infos(&infos).map_err(|e| anyhow!("{e}"))?;
        Ok(Arc::new(SimDb::standby(self.sim_data_plane(cluster)?, volumes, Arc::new(SystemClock))))
    }

    /// The running simulated database at `cluster` (this process serves it until closed).
    async fn simdb_running(&self, app: &AppConfig) -> anyhow::Result<Arc<SimDb>> {
        Ok(Arc::new(self.open_simdb(app).await?))
    }

    fn dr_app(&self, name: &str) -> anyhow::Result<DrApp> {
        let (i, app) = self.config.app(name).map_err(|m| anyhow!(m))?;
        let dr = app.dr.clone().ok_or_else(|| anyhow!("apps[{i}].dr: app {name} has no dr section in {} (cluster, svm, policy, schedule)", self.config.source.display()))?;
        if app.kind != AppKindConfig::Simdb {
            bail!("app {name}: DR from the CLI supports kind simdb so far (a {:?} app needs a standby server on site B, which the config cannot describe yet)", app.kind);
        }
        let spec = self.config.app_spec(app);
        let a = self.dr_site(&app.cluster)?;
        let b = self.dr_site(&dr.cluster)?;
        let orchestrator = self.orchestrator(app)?;
        Ok(DrApp { app: app.clone(), dr, spec, a, b, orchestrator })
    }

    fn plan_of(&self, app: &str) -> anyhow::Result<DrPlan> {
        self.catalog.dr_plan(app)?.ok_or_else(|| anyhow!("app {app} has no DR plan yet: run `stasis dr setup {app}` first"))
    }
}

fn request(dr: &DrConfig) -> DrPlanRequest {
    DrPlanRequest {
        destination_svm: dr.svm.clone(),
        policy: dr.policy.ontap_name().to_string(),
        // Validated when the config was loaded.
        schedule: dr.schedule.as_deref().and_then(|s| parse_duration(s).ok()),
        destination_volumes: None,
    }
}

/// This process served the simulated database: close it cleanly (its writes reach the volume).
async fn close(db: &Arc<SimDb>) {
    if let Err(e) = AppPlugin::stop(db.as_ref()).await {
        tracing::warn!(error = %e, "closing the simulated database");
    }
}

fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

// ------------------------------------------------------------------ commands

pub async fn dr(config: &Path, command: DrCommand) -> anyhow::Result<ExitCode> {
    match command {
        DrCommand::Setup(args) => setup(config, args).await,
        DrCommand::Status(args) => status(config, args).await,
        DrCommand::Drill(args) => drill(config, args).await,
    }
}

async fn setup(config: &Path, args: DrAppArgs) -> anyhow::Result<ExitCode> {
    let rt = Runtime::load(config)?;
    let d = rt.dr_app(&args.app)?;
    let plan = d.orchestrator.dr_setup(&d.spec, &request(&d.dr), &d.a, &d.b, DrBounds::default()).await.with_context(|| format!("DR set-up of app {} to {} failed", d.app.name, d.dr.cluster))?;
    let view = status_view(&rt, &plan, &d).await?;
    if args.json {
        print_json(&view)?;
    } else {
        println!("app {} mirrored from {}:{} to {}:{} ({})", plan.app, plan.source_cluster, plan.source_svm, plan.destination_cluster, plan.destination_svm, plan.policy);
        print!("{}", mirrors_table(&view.volumes));
    }
    Ok(ExitCode::SUCCESS)
}

async fn status(config: &Path, args: DrStatusArgs) -> anyhow::Result<ExitCode> {
    let rt = Runtime::load(config)?;
    let d = rt.dr_app(&args.app)?;
    let plan = rt.plan_of(&d.app.name)?;
    let view = status_view(&rt, &plan, &d).await?;
    match args.output {
        OutputFormat::Json => print_json(&view)?,
        OutputFormat::Yaml => print!("{}", serde_norway::to_string(&view)?),
        OutputFormat::Table => {
            println!("app {}: {} ({}), running on site {} ({})", view.app, view.state, if view.healthy { "healthy" } else { "NOT healthy" }, view.active_site.to_uppercase(), view.active_cluster);
            println!("  site A  {}:{}", view.source.cluster, view.source.svm);
            println!("  site B  {}:{}   policy {}{}", view.destination.cluster, view.destination.svm, view.policy, view.schedule_s.map_or(String::new(), |s| format!(", schedule {s} s")));
            match &view.restorable_backup {
                Some(r) => println!("  a failover now starts from backup {} ({}), {} old", r.backup_id, r.consistency_point.as_deref().unwrap_or("-"), r.age_s.map_or("?".into(), |s| format!("{s:.1} s"))),
                None => println!("  no complete application-consistent backup is on site B yet"),
            }
            if let Some(f) = &view.last_failover {
                println!("  last {} {}: {} (RPO {}, RTO {})", f.kind, f.id, f.state, f.rpo_ms.map_or("-".into(), |m| format!("{:.3} s", m / 1000.0)), f.rto_ms.map_or("-".into(), |m| format!("{:.3} s", m / 1000.0)));
            }
            print!("{}", mirrors_table(&view.volumes));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The plan, and each relationship as the array (its destination) reports it.
async fn status_view(rt: &Runtime, plan: &DrPlan, d: &DrApp) -> anyhow::Result<DrStatusView> {
    // While failing back the mirrors run B -> A and live on A.
    let (mirror_site, mirror_svm, reversed) = match plan.state {
        DrState::ReverseMirrored => (&d.a, &plan.source_svm, true),
        _ => (&d.b, &plan.destination_svm, false),
    };
    let mut volumes = Vec::new();
    for pair in &plan.volumes {
        let (uuid, mirror_volume) = if reversed { (pair.reverse_relationship_uuid.clone(), &pair.source) } else { (pair.relationship_uuid.clone(), &pair.destination) };
        let mut view = MirrorView {
            source: format!("{}:{}", plan.source_svm, pair.source),
            destination: format!("{}:{}", plan.destination_svm, pair.destination),
            relationship_uuid: uuid.clone(),
            relationship_state: None,
            healthy: None,
            unhealthy_reason: None,
            lag_s: None,
            last_transfer_state: None,
            last_transfer_bytes: None,
            last_transferred_snapshot: None,
            error: None,
        };
        let looked_up: anyhow::Result<()> = async {
            if let Some(uuid) = &uuid {
                let r = mirror_site.replication.relationship(uuid).await?;
                view.relationship_state = Some(r.state.as_ontap().to_string());
                view.healthy = r.healthy;
                view.unhealthy_reason = r.unhealthy_reason;
                view.lag_s = r.lag_time.map(|d| d.as_secs_f64());
                if let Some(t) = r.transfer {
                    view.last_transfer_state = Some(snake(&t.state));
                    view.last_transfer_bytes = Some(t.bytes_transferred);
                    if let Some(transfer_uuid) = &t.uuid {
                        view.last_transferred_snapshot = mirror_site.replication.transfer(uuid, transfer_uuid).await?.snapshot;
                    }
                }
            }
            if view.last_transferred_snapshot.is_none() {
                // The array did not name it: the mirror's newest snapshot (create times are
                // whole seconds, so the listing's order breaks ties).
                let volume = mirror_site.storage.volumes_by_name(mirror_svm, std::slice::from_ref(mirror_volume)).await?;
                if let Some(v) = volume.first() {
                    let snapshots = mirror_site.storage.snapshots(&v.uuid).await?;
                    let newest = snapshots.iter().map(|s| s.create_time).max();
                    view.last_transferred_snapshot = snapshots.iter().rev().find(|s| Some(s.create_time) == newest).map(|s| s.name.clone());
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = looked_up {
            view.error = Some(format!("{e:#}"));
        }
        volumes.push(view);
    }
    let restorable = match plan.state {
        DrState::Mirrored => match d.orchestrator.newest_mirrored_backup(&plan.app, &d.b, plan).await {
            Ok(Some((b, _))) => Some(restorable_view(&b)),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "looking for the newest backup on site B");
                None
            }
        },
        _ => None,
    };
    let schedule = plan.schedule;
    let healthy = plan.state == DrState::Mirrored
        && volumes.iter().all(|v| {
            v.error.is_none()
                && matches!(v.relationship_state.as_deref(), Some(s) if s == MirrorState::Snapmirrored.as_ontap() || s == MirrorState::InSync.as_ontap())
                && v.healthy != Some(false)
                && schedule.is_none_or(|s| v.lag_s.is_none_or(|lag| lag <= s.as_secs_f64()))
        });
    let last_failover = rt.catalog.failovers(Some(&plan.app))?.last().map(|f| FailoverView::new(f, Some(plan)));
    Ok(DrStatusView {
        app: plan.app.clone(),
        state: snake(&plan.state),
        active_site: snake(&plan.active_site),
        active_cluster: if plan.active_site == Site::B { plan.destination_cluster.clone() } else { plan.source_cluster.clone() },
        source: SideView { cluster: plan.source_cluster.clone(), svm: plan.source_svm.clone() },
        destination: SideView { cluster: plan.destination_cluster.clone(), svm: plan.destination_svm.clone() },
        policy: plan.policy.clone(),
        schedule_s: schedule.map(|s| s.as_secs_f64()),
        healthy,
        volumes,
        restorable_backup: restorable,
        last_failover,
    })
}

fn restorable_view(b: &BackupRecord) -> RestorableView {
    RestorableView {
        backup_id: b.id.clone(),
        snapshot: b.snapshot_name.clone(),
        consistency_point: b.evidence.consistency_point.as_ref().map(|p| p.0.clone()),
        age_s: b.evidence.lock_granted.and_then(|t| (chrono::Utc::now() - t).to_std().ok()).map(|d| d.as_secs_f64()),
    }
}

fn mirrors_table(volumes: &[MirrorView]) -> String {
    let mut rows = vec![["SOURCE", "DESTINATION", "STATE", "HEALTHY", "LAG S", "LAST TRANSFER", "LAST SNAPSHOT"].map(String::from).to_vec()];
    for v in volumes {
        rows.push(vec![
            v.source.clone(),
            v.destination.clone(),
            v.relationship_state.clone().unwrap_or_else(|| "-".into()),
            v.healthy.map_or("-".into(), |h| if h { "yes".into() } else { format!("no: {}", v.unhealthy_reason.as_deref().unwrap_or("?")) }),
            v.lag_s.map_or("-".into(), |l| format!("{l:.0}")),
            match (&v.last_transfer_state, v.last_transfer_bytes) {
                (Some(s), Some(b)) => format!("{s}, {b} bytes"),
                _ => "-".into(),
            },
            v.error.as_ref().map_or_else(|| v.last_transferred_snapshot.clone().unwrap_or_else(|| "-".into()), |e| format!("error: {e}")),
        ]);
    }
    let widths: Vec<usize> = (0..rows[0].len()).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str(&format!("  {}\n", line.join("  ").trim_end()));
    }
    out
}

async fn drill(config: &Path, args: DrAppArgs) -> anyhow::Result<ExitCode> {
    let rt = Runtime::load(config)?;
    let d = rt.dr_app(&args.app)?;
    let plan = rt.plan_of(&d.app.name)?;
    let standby = rt.simdb_standby(&plan.destination_cluster, &plan.destination_svm, &plan.destination_volumes()).await?;
    let record = d.orchestrator.dr_drill(&d.spec, &d.b, standby).await.with_context(|| format!("DR drill of app {} failed (recorded in the catalog)", d.app.name))?;
    let view = FailoverView::new(&record, Some(&plan));
    if args.json {
        print_json(&view)?;
    } else {
        view.print_text();
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn failover(config: &Path, args: FailoverArgs) -> anyhow::Result<ExitCode> {
    let rt = Runtime::load(config)?;
    let d = rt.dr_app(&args.app)?;
    let plan = rt.plan_of(&d.app.name)?;
    // Checked before opening anything (a planned failover would open the app on site A).
    if plan.state != DrState::Mirrored {
        bail!("app {}: nothing to fail over (DR plan {}, running on site {})", d.app.name, snake(&plan.state), snake(&plan.active_site).to_uppercase());
    }
    let standby_b = rt.simdb_standby(&plan.destination_cluster, &plan.destination_svm, &plan.destination_volumes()).await?;
    let result = if args.planned {
        let running_a = rt.simdb_running(&d.app).await?;
        let result = d.orchestrator.failover_planned(&d.spec, &d.a, &d.b, running_a.clone(), standby_b.clone(), DrBounds::default()).await;
        close(&running_a).await;
        result
    } else {
        // Nothing here talks to site A: it may be gone.
        d.orchestrator.failover_unplanned(&d.spec, &d.b, standby_b.clone()).await
    };
    close(&standby_b).await;
    let kind = if args.planned { "planned" } else { "unplanned" };
    let record = result.with_context(|| format!("{kind} failover of app {} to {} failed (recorded in the catalog)", d.app.name, plan.destination_cluster))?;
    let view = FailoverView::new(&record, Some(&plan));
    if args.json {
        print_json(&view)?;
    } else {
        view.print_text();
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn failback(config: &Path, args: FailbackArgs) -> anyhow::Result<ExitCode> {
    let rt = Runtime::load(config)?;
    let d = rt.dr_app(&args.app)?;
    let plan = rt.plan_of(&d.app.name)?;
    if !matches!(plan.state, DrState::FailedOver | DrState::ReverseMirrored) {
        bail!("app {} is not failed over (DR plan {}): nothing to fail back", d.app.name, snake(&plan.state));
    }
    let standby_a = rt.simdb_standby(&plan.source_cluster, &plan.source_svm, &plan.source_volumes()).await?;
    let running_b = rt.simdb_running(&rt.active_app(&d.app)?).await?;
    let result = d.orchestrator.failback(&d.spec, &d.a, &d.b, standby_a.clone(), running_b.clone(), args.yes, DrBounds::default()).await;
    close(&running_b).await;
    close(&standby_a).await;
    match result.with_context(|| format!("failback of app {} to {} failed (recorded in the catalog)", d.app.name, plan.source_cluster))? {
        FailbackOutcome::NeedsConfirmation(divergence) => {
            let view = DivergenceView::from(&divergence);
            if args.json {
                print_json(&serde_json::json!({"confirmation_needed": true, "app": d.app.name, "divergence": view}))?;
            } else {
                println!("failback of app {} would discard what site A ({}) holds beyond the last snapshot both sites share:", d.app.name, plan.source_cluster);
                for s in &view.snapshots {
                    println!("  snapshot {} on {}", s.snapshot, s.volume);
                }
                println!("  {} written since {}", view.bytes.map_or("an unknown number of bytes".into(), |b| format!("{b} bytes")), view.common_snapshots.iter().map(|c| format!("{} ({})", c.snapshot, c.volume)).collect::<Vec<_>>().join(", "));
                println!("nothing was changed; run again with --yes to fail back and discard it");
            }
            eprintln!("failback needs confirmation: it would discard data on site A (see above); nothing was changed");
            Ok(ExitCode::from(EXIT_ATTENTION))
        }
        FailbackOutcome::Done(record) => {
            let view = FailoverView::new(&record, Some(&plan));
            if args.json {
                print_json(&view)?;
            } else {
                view.print_text();
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// After `stasis backup`: when the app's mirrors run A -> B, send this backup's snapshot
/// (as `backup_and_replicate` does) and wait for it. `None`: the app has no DR plan.
pub async fn replicate_backup(rt: &Runtime, app: &AppConfig, orchestrator: &Orchestrator, backup: &BackupRecord) -> Option<ReplicationView> {
    let dr = app.dr.as_ref()?;
    let plan = match rt.catalog.dr_plan(&app.name) {
        Ok(Some(plan)) => plan,
        Ok(None) => return None,
        Err(e) => return Some(ReplicationView { destination_cluster: dr.cluster.clone(), snapshot: backup.snapshot_name.clone(), ok: false, transfers: Vec::new(), error: Some(format!("reading the DR plan: {e}")) }),
    };
    let mut view = ReplicationView { destination_cluster: plan.destination_cluster.clone(), snapshot: backup.snapshot_name.clone(), ok: false, transfers: Vec::new(), error: None };
    let result: anyhow::Result<Vec<TransferInfo>> = async {
        match plan.state {
            DrState::Mirrored => {}
            DrState::Planned => bail!("DR set-up of app {} did not finish: run `stasis dr setup {}` again", app.name, app.name),
            _ => bail!("app {} runs on site B after a failover: nothing to replicate until failback", app.name),
        }
        if backup.consistency != Some(stasis_core::domain::Consistency::Application) {
            bail!("backup {} is not application-consistent: not replicated", backup.id);
        }
        let b = rt.dr_site(&plan.destination_cluster)?;
        let spec = rt.config.app_spec(app);
        Ok(orchestrator.dr_update(&spec, &backup.id, &b, true, DrBounds::default()).await?)
    }
    .await;
    match result {
        Ok(transfers) => {
            view.ok = true;
            view.transfers = transfers.iter().map(TransferView::from).collect();
        }
        Err(e) => view.error = Some(format!("{e:#}")),
    }
    Some(view)
}
