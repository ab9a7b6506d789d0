//! `stasis demo`: the first thing a new user runs. Everything is embedded: a simulated ONTAP
//! cluster (site A) in this process on 127.0.0.1, the app's volumes on it, a workload, a
//! SQLite catalog in a temporary directory, and the real orchestrator talking to the
//! simulator over ONTAP REST.
//!
//! The walk-through is written once, here: discover -> protect -> backup under write load ->
//! damage -> restore in place -> crash-consistent vs application-consistent side by side.
//! What differs between workloads sits behind [`Workload`]: [`simdb`] (the simulated
//! database, checked against a reference model of every acknowledged transaction) and
//! [`mariadb`] (a real `mariadbd` on a FUSE-mounted simulated volume, checked row by row
//! against the GTID of every acknowledged commit). Every claim the demo prints is checked,
//! and the report's `ok` is true only if every check passed.
//!
//! Drop order matters for MariaDB: the workload (servers, writers) is declared before the
//! simulator host (mounts), so servers stop before the volumes they run on go away, also
//! when a step fails or the future is dropped (Ctrl-C).

mod mariadb;
mod simdb;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use ontap_client::{OntapClient, OntapConfig, SecretString, TlsTrust};
use ontap_sim::model::cluster::{Selector, VolumeCreate};
use ontap_sim::{ClusterConfig, RunningSim, SimConfig};
use serde::Serialize;
use stasis_core::catalog::Catalog;
use stasis_core::clock::SystemClock;
use stasis_core::domain::{AppSpec, BackupRecord, BackupState, Consistency, ConsistencyPoint, Policy, RestoreRecord, Schedule};
use stasis_core::plugin::AppPlugin;
use stasis_core::sqlite_catalog::SqliteCatalog;
use stasis_core::storage::VolumeInfo;
use stasis_core::workflow::{next_due, Orchestrator};

use crate::mariadb::SimWithMounts;

pub use mariadb::{RowCheck, ServerSummary};

// ---------------------------------------------------------------------------------------
// Embedded defaults
// ---------------------------------------------------------------------------------------

const CLUSTER_NAME: &str = "sim-a";
const SVM: &str = "svm0";
const AGGREGATE: &str = "aggr1";
const USERNAME: &str = "admin";
/// A volume in the same SVM that does not belong to the app (discovery shows the difference).
const OTHER_VOLUME: &str = "web_content";
const OTHER_VOLUME_SIZE: u64 = 10 << 30;
const OTHER_VOLUME_FILL: u64 = 64 << 20;
const POLICY_NAME: &str = "hourly";
const POLICY_CRON: &str = "0 * * * *";
const POLICY_KEEP: u32 = 24;

pub const STEP_NAMES: [&str; 6] = ["discover", "protect", "backup", "damage", "restore", "crash_vs_app"];

// ---------------------------------------------------------------------------------------
// Options and the choice of workload
// ---------------------------------------------------------------------------------------

/// Which workload `stasis demo` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// MariaDB when it can run here, else the simulated database.
    Auto,
    Simdb,
    Mariadb,
}

/// Can the MariaDB walk-through run on this machine? `Err` says what is missing.
pub fn mariadb_available() -> anyhow::Result<()> {
    crate::mariadb::check_prerequisites()?;
    ontap_sim::fuse::check_prerequisites()?;
    Ok(())
}

/// Resolve `Auto`: `(Mariadb, None)` or `(Simdb, Some(why))`. An explicit choice stays.
pub fn choose(asked: Workload) -> (Workload, Option<String>) {
    match asked {
        Workload::Auto => match mariadb_available() {
            Ok(()) => (Workload::Mariadb, None),
            Err(e) => (Workload::Simdb, Some(format!("the real MariaDB workload cannot run here ({e:#})"))),
        },
        Workload::Simdb => (Workload::Simdb, Some("--workload simdb was asked for".into())),
        Workload::Mariadb => (Workload::Mariadb, None),
    }
}

#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// `Simdb` or `Mariadb` (resolve `Auto` with [`choose`] first).
    pub workload: Workload,
    /// Application-consistent backups taken under load in the backup step.
    pub backups: u32,
    /// Rounds of the crash-vs-app comparison (one crash snapshot and one backup each).
    pub crash_rounds: u32,
    /// Concurrent writer connections (MariaDB).
    pub writers: u32,
    /// The app's freeze bound.
    pub freeze_timeout: Duration,
    /// Seeds the load and the simulators' uuids.
    pub seed: u64,
    /// Leave everything running at the end (returned in [`DemoRun::kept`]).
    pub keep_running: bool,
    /// Why the simulated database runs rather than MariaDB (said in the intro and the report).
    pub why_simdb: Option<String>,
}

impl DemoOptions {
    /// The simulated database: many fast backups and rounds.
    pub fn simdb() -> Self {
        DemoOptions { workload: Workload::Simdb, backups: 20, crash_rounds: 10, writers: 1, freeze_timeout: Duration::from_secs(1), seed: 1, keep_running: false, why_simdb: None }
    }

    /// A real MariaDB: each restore starts a server, so fewer rounds.
    pub fn mariadb() -> Self {
        DemoOptions { workload: Workload::Mariadb, backups: 5, crash_rounds: 2, writers: 4, freeze_timeout: Duration::from_secs(5), seed: 1, keep_running: false, why_simdb: None }
    }
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions::simdb()
    }
}

/// Fail fast on options that cannot make a meaningful demo.
pub fn validate(opts: &DemoOptions) -> anyhow::Result<()> {
    if opts.workload == Workload::Auto {
        bail!("resolve the workload first (demo::choose)");
    }
    if opts.backups == 0 || opts.crash_rounds == 0 || opts.writers == 0 {
        bail!("the demo needs at least one backup, one crash-vs-app round and one writer");
    }
    if opts.freeze_timeout < Duration::from_millis(50) {
        bail!("the freeze bound must be at least 50 ms");
    }
    Ok(())
}

/// Where the demo's narration goes. The binary prints it (and draws progress bars); tests
/// may collect or drop it.
pub trait Observer: Send + Sync {
    /// One line of narration.
    fn say(&self, line: &str);
    /// Progress of a long step: `done` of `total`; `done == total` ends it.
    fn progress(&self, _label: &str, _done: u64, _total: u64) {}
}

/// Drops the narration.
pub struct Silent;

impl Observer for Silent {
    fn say(&self, _line: &str) {}
}

// ---------------------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug, Serialize)]
pub struct DemoReport {
    /// True only if every verification passed.
    pub ok: bool,
    /// `simdb` or `mariadb`.
    pub workload: &'static str,
    pub workload_note: String,
    /// The real database server (MariaDB only).
    pub server: Option<ServerSummary>,
    pub cluster: ClusterSummary,
    pub volumes: Vec<VolumeRow>,
    pub steps: Vec<StepReport>,
    /// Freeze windows of the backup step.
    pub freeze_window_ms: Option<FreezeStats>,
    pub backup: Option<BackupSummary>,
    /// What the damage step did (the workload's own detail).
    pub damage: Option<serde_json::Value>,
    pub restore: Option<RestoreSummary>,
    pub crash_vs_app: Option<CrashVsApp>,
    /// Disaster recovery (site B, SnapMirror) is not part of the walk-through yet: null.
    pub failover: Option<serde_json::Value>,
    pub not_built: Vec<&'static str>,
    pub seconds: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ClusterSummary {
    pub name: &'static str,
    pub site: &'static str,
    pub url: String,
    pub svm: &'static str,
}

#[derive(Clone, Debug, Serialize)]
pub struct VolumeRow {
    pub name: String,
    pub junction_path: Option<String>,
    pub size_bytes: u64,
    pub used_bytes: u64,
    pub snapshots: u32,
    /// `data` or `log` for the app's volumes.
    pub app_role: Option<&'static str>,
}

#[derive(Clone, Debug, Serialize)]
pub struct StepReport {
    pub name: &'static str,
    pub ok: bool,
    pub seconds: f64,
    pub summary: String,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct FreezeStats {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub samples: usize,
    pub bound_ms: u64,
    /// Who measured the windows.
    pub measured_by: &'static str,
}

#[derive(Clone, Debug, Serialize)]
pub struct BackupSummary {
    pub taken: u32,
    pub application_consistent: u32,
    /// Commits the load had acknowledged while the backups ran.
    pub commits_during: u64,
    /// Commits acknowledged after the last backup's point (the in-place restore discards them).
    pub commits_after_last_backup: u64,
    /// Commit attempts that met a freeze and retried (simdb; MariaDB's writers just wait).
    pub commits_that_met_a_freeze: u64,
    /// Writer statements that failed (MariaDB; none expected).
    pub writer_failures: u64,
    pub backup_seconds_p50: f64,
    pub last_backup_id: String,
    pub last_consistency_point: String,
    /// (volume, snapshot name)
    pub last_snapshots: Vec<(String, String)>,
    pub retention_expired: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct RestoreSummary {
    pub backup_id: String,
    pub consistency_point: String,
    pub recovered_point: Option<String>,
    pub needed_crash_recovery: Option<bool>,
    /// Exactly the acknowledged state at the consistency point.
    pub exact: bool,
    pub commits_discarded: u64,
    /// The workload's own evidence (simdb: values and balances; MariaDB: the row check).
    pub detail: serde_json::Value,
}

#[derive(Clone, Debug, Serialize)]
pub struct CrashVsApp {
    pub rounds: u32,
    pub crash: SideSummary,
    pub app: SideSummary,
}

#[derive(Clone, Debug, Serialize)]
pub struct SideSummary {
    pub how: &'static str,
    pub restores: u32,
    /// Recovered exactly the claimed point, data equal to what the app acknowledged there.
    pub exact: u32,
    pub needed_crash_recovery: u32,
    /// Restores that lost at least one commit acknowledged before the snapshot.
    pub lost_acknowledged_commits: u32,
    pub max_commits_lost: u64,
    /// Restores whose data is not what the app acknowledged at the point they report
    /// (simdb: torn or at another txid; MariaDB: an engine ahead of or behind the binlog).
    pub off_their_point: u32,
    /// Restores in which the database itself found something wrong (simdb: recovery
    /// anomalies; MariaDB: `CHECK TABLE`).
    pub flagged_by_the_database: u32,
    pub did_not_open: u32,
    pub results: Vec<RestoreOutcome>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RestoreOutcome {
    pub round: u32,
    pub snapshot: String,
    /// App: the consistency point read under the lock. Crash: the last commit acknowledged
    /// when the snapshot was requested (what a backup "as of now" would have to hold).
    pub claimed_point: String,
    pub recovered_point: Option<String>,
    pub needed_crash_recovery: Option<bool>,
    /// Acknowledged before the snapshot, missing from the restore (a lower bound for crash
    /// snapshots: more commits may have been acknowledged while the snapshot was taken).
    pub lost_acknowledged_commits: u64,
    /// The restored data is what the app acknowledged at the point it reports.
    pub consistent_with_its_point: bool,
    /// What the database itself found wrong.
    pub findings: Vec<String>,
    pub exact: bool,
    pub error: Option<String>,
    /// One line: what this restore came back as.
    pub state: String,
    /// The workload's own evidence.
    pub detail: serde_json::Value,
}

impl RestoreOutcome {
    fn new(round: u32, snapshot: String, claimed_point: String) -> Self {
        RestoreOutcome {
            round,
            snapshot,
            claimed_point,
            recovered_point: None,
            needed_crash_recovery: None,
            lost_acknowledged_commits: 0,
            consistent_with_its_point: false,
            findings: Vec::new(),
            exact: false,
            error: None,
            state: String::new(),
            detail: serde_json::Value::Null,
        }
    }
}

/// What is left running with `--keep-running`. [`Kept::stop`] (or dropping it) stops the
/// servers, unmounts the volumes and stops the simulators.
pub struct Kept {
    /// Lines to print: where everything is and how to reach it.
    pub info: Vec<String>,
    /// What a dashboard needs to drive the app: its spec, an orchestrator on site A, the
    /// plugin, the catalog, and site A's cluster name.
    pub app: AppSpec,
    pub orchestrator: Orchestrator,
    pub plugin: Arc<dyn AppPlugin>,
    pub catalog: Arc<dyn Catalog>,
    pub cluster: String,
    workload: Box<dyn WorkloadImpl>,
    hosts: Vec<SimHost>,
    _catalog_dir: tempfile::TempDir,
}

impl Kept {
    /// Stop everything cleanly: servers first, then mounts and simulators.
    pub async fn stop(mut self) {
        self.workload.shutdown().await;
        for host in std::mem::take(&mut self.hosts) {
            host.shutdown().await;
        }
    }
}

pub struct DemoRun {
    pub report: DemoReport,
    pub kept: Option<Kept>,
}

// ---------------------------------------------------------------------------------------
// The workload seam
// ---------------------------------------------------------------------------------------

/// One step's verdict: whether its checks passed, and a one-line summary.
pub(crate) struct Verdict {
    ok: bool,
    summary: String,
}

/// What the load acknowledged, as of now.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct LoadStats {
    /// Acknowledged commits on the current timeline (in this load phase and before).
    acknowledged: u64,
    /// Of those, acknowledged after `point` (when one was given).
    after_point: u64,
    met_a_freeze: u64,
    failures: u64,
}

/// What a restore check found.
pub(crate) struct RestoreCheck {
    ok: bool,
    exact: bool,
    summary: String,
    commits_discarded: u64,
    detail: serde_json::Value,
}

/// The workload-specific half of the walk-through. The walk-through calls these in order;
/// each narrates through `ctx.say`.
#[async_trait::async_trait]
pub(crate) trait WorkloadImpl: Send + Sync {
    fn name(&self) -> &'static str;
    fn note(&self) -> String;
    fn server(&self) -> Option<ServerSummary> {
        None
    }
    /// Lines of the intro describing the workload.
    fn intro(&self, ctx: &Ctx<'_>) -> Vec<String>;
    fn plugin(&self) -> Arc<dyn AppPlugin>;
    /// `data` / `log` for the app's volumes.
    fn volume_role(&self, volume: &str) -> Option<&'static str>;
    /// Describes the app for the protect step.
    fn app_line(&self, app: &AppSpec) -> String;
    fn headline(&self, step: &str, opts: &DemoOptions) -> String;
    /// Workload-specific checks of the discovered app volumes.
    async fn check_discovered(&mut self, ctx: &Ctx<'_>, app_volumes: &[VolumeInfo]) -> anyhow::Result<bool>;
    /// Start the write load (`phase` 0: the backup step, 1: the crash-vs-app step).
    async fn start_load(&mut self, ctx: &Ctx<'_>, phase: u32) -> anyhow::Result<()>;
    async fn stop_load(&mut self);
    fn warm_up(&self) -> Duration;
    fn backup_gap(&self) -> Duration;
    fn load_stats(&self, point: Option<&ConsistencyPoint>) -> LoadStats;
    /// Is `point` a state the app acknowledged?
    fn point_known(&self, point: &ConsistencyPoint) -> bool;
    /// A mark before the backups, for [`WorkloadImpl::freeze_windows`].
    fn freeze_mark(&self) -> usize;
    /// Freeze windows (ms) of the backups since `mark`, and whether every freeze ended
    /// within `bound`.
    fn freeze_windows(&self, mark: usize, records: &[BackupRecord], bound: Duration) -> (Vec<f64>, bool);
    fn freeze_measured_by(&self) -> &'static str;
    async fn damage(&mut self, ctx: &Ctx<'_>, last: &BackupRecord) -> anyhow::Result<(Verdict, serde_json::Value)>;
    fn restore_mark(&self) -> usize;
    async fn check_restore(&mut self, ctx: &Ctx<'_>, last: &BackupRecord, record: &RestoreRecord, mark: usize) -> anyhow::Result<RestoreCheck>;
    fn crash_vs_app_intro(&self) -> Vec<&'static str>;
    /// How the crash side and the app side were taken and opened.
    fn sides(&self) -> [&'static str; 2];
    fn short_point(&self, point: &str) -> String;
    async fn crash_round(&mut self, ctx: &Ctx<'_>, round: u32) -> anyhow::Result<RestoreOutcome>;
    async fn app_round(&mut self, ctx: &Ctx<'_>, round: u32) -> anyhow::Result<RestoreOutcome>;
    /// Workload invariants over the whole run (e.g. the reference model saw no gap).
    fn healthy(&self) -> bool {
        true
    }
    /// Lines for `--keep-running` about the workload.
    fn kept_info(&self) -> Vec<String> {
        Vec::new()
    }
    /// Stop servers cleanly (the guards kill whatever is left).
    async fn shutdown(&mut self);
}

// ---------------------------------------------------------------------------------------
// The simulator host: plain, or with FUSE mounts
// ---------------------------------------------------------------------------------------

/// A simulated cluster on loopback HTTP; with FUSE mounts for a real database.
pub(crate) enum SimHost {
    Plain(RunningSim),
    Mounted(SimWithMounts),
}

impl SimHost {
    async fn start(mounted: bool, cluster: ClusterConfig, password: &str) -> anyhow::Result<SimHost> {
        if mounted {
            return Ok(SimHost::Mounted(SimWithMounts::start_cluster(cluster, password).await?));
        }
        let sim = ontap_sim::spawn(SimConfig { cluster, password: password.to_string(), username: USERNAME.into(), ..SimConfig::default() }).await?;
        Ok(SimHost::Plain(sim))
    }

    pub(crate) fn sim(&self) -> &RunningSim {
        match self {
            SimHost::Plain(s) => s,
            SimHost::Mounted(m) => m.sim(),
        }
    }

    pub(crate) fn mounted(&self) -> Option<&SimWithMounts> {
        match self {
            SimHost::Plain(_) => None,
            SimHost::Mounted(m) => Some(m),
        }
    }

    /// Create a volume in `svm` at `junction_path` (mounted when the host mounts).
    pub(crate) fn create_volume(&self, svm: &str, name: &str, junction_path: &str, size: u64) -> anyhow::Result<String> {
        let req = VolumeCreate {
            name: name.into(),
            svm: Selector { name: Some(svm.into()), uuid: None },
            aggregates: vec![Selector { name: Some(AGGREGATE.into()), uuid: None }],
            size: Some(size),
            junction_path: Some(junction_path.into()),
            ..Default::default()
        };
        let uuid = self.sim().sim().transact(|s| s.create_volume(req, chrono::Utc::now())).map_err(|e| anyhow!("{e}")).with_context(|| format!("creating volume {name} on the simulator"))?;
        if let Some(m) = self.mounted() {
            if let Some(e) = m.mounts().reconcile().into_iter().next() {
                return Err(e.context(format!("mounting {junction_path}")));
            }
        }
        Ok(uuid)
    }

    async fn shutdown(self) {
        match self {
            SimHost::Plain(s) => s.shutdown().await,
            SimHost::Mounted(m) => drop(m),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Formatting helpers
// ---------------------------------------------------------------------------------------

pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else if value >= 10.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Nearest-rank percentile of sorted values.
pub(crate) fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn client_config(base_url: &str, password: &str) -> OntapConfig {
    let mut config = OntapConfig::new(base_url, USERNAME, SecretString::from(password.to_string()));
    config.tls = TlsTrust::BuiltInRoots; // plain HTTP on loopback: no TLS in play
    config.request_timeout = Duration::from_secs(10);
    config.connect_timeout = Duration::from_secs(2);
    config.retry_backoff_base = Duration::from_millis(20);
    config.retry_backoff_max = Duration::from_millis(200);
    config.job_poll_interval = Duration::from_millis(2);
    config.job_poll_interval_max = Duration::from_millis(50);
    config.job_wait_max = Duration::from_secs(30);
    config
}

// ---------------------------------------------------------------------------------------
// The walk-through
// ---------------------------------------------------------------------------------------

/// What every step shares: the options, the narration, site A, the client, the catalog and
/// the orchestrator, the app and what the steps found so far.
pub(crate) struct Ctx<'a> {
    pub(crate) opts: DemoOptions,
    obs: &'a dyn Observer,
    pub(crate) site_a: SimHost,
    password: String,
    pub(crate) storage: Arc<OntapClient>,
    catalog: Arc<SqliteCatalog>,
    pub(crate) orchestrator: Orchestrator,
    pub(crate) app: AppSpec,
    policy: Policy,
    /// The app's volumes as discovered.
    pub(crate) app_volumes: Vec<VolumeInfo>,
    last_backup: Option<BackupRecord>,
    report: DemoReport,
    catalog_dir: tempfile::TempDir,
}

impl Ctx<'_> {
    /// One indented line of narration inside a step.
    pub(crate) fn say(&self, line: impl AsRef<str>) {
        match line.as_ref() {
            "" => self.obs.say(""),
            line => self.obs.say(&format!("      {line}")),
        }
    }

    pub(crate) fn progress(&self, label: &str, done: u64, total: u64) {
        self.obs.progress(label, done, total);
    }
}

/// Field order is drop order: the workload (servers, writers) before the simulators (mounts).
struct Demo<'a> {
    wl: Box<dyn WorkloadImpl>,
    ctx: Ctx<'a>,
}

/// Run the whole demo. `Err` only when the demo could not be set up at all (then nothing it
/// started is left running); a failing step is reported in [`DemoReport::steps`] and makes
/// `ok` false.
pub async fn run(opts: &DemoOptions, obs: &dyn Observer) -> anyhow::Result<DemoRun> {
    validate(opts)?;
    let started = Instant::now();
    let mut demo = Demo::setup(opts.clone(), obs).await?;
    demo.intro();
    let mut failed = None;
    for (index, &name) in STEP_NAMES.iter().enumerate() {
        if let Some(first) = failed {
            demo.ctx.report.steps.push(StepReport { name, ok: false, seconds: 0.0, summary: String::new(), error: Some(format!("not run: step {first} could not run")) });
            continue;
        }
        obs.say("");
        obs.say(&format!("[{}/{}] {}", index + 1, STEP_NAMES.len(), demo.wl.headline(name, &demo.ctx.opts)));
        let step_started = Instant::now();
        let result = match name {
            "discover" => demo.discover().await,
            "protect" => demo.protect().await,
            "backup" => demo.backup().await,
            "damage" => demo.damage().await,
            "restore" => demo.restore().await,
            "crash_vs_app" => demo.crash_vs_app().await,
            other => Err(anyhow!("unknown step {other}")),
        };
        let seconds = step_started.elapsed().as_secs_f64();
        obs.progress(name, 1, 1);
        let step = match result {
            Ok(v) => {
                obs.say(&format!("      {}  ({seconds:.2} s)  {}", if v.ok { "ok" } else { "FAILED" }, v.summary));
                StepReport { name, ok: v.ok, seconds, summary: v.summary, error: None }
            }
            Err(e) => {
                failed = Some(name);
                let error = format!("{e:#}");
                obs.say(&format!("      FAILED  ({seconds:.2} s)  {error}"));
                StepReport { name, ok: false, seconds, summary: String::new(), error: Some(error) }
            }
        };
        demo.ctx.report.steps.push(step);
    }
    demo.wl.stop_load().await;
    obs.say("");
    obs.say("[-] failover: disaster recovery to site B (SnapMirror, a second simulated cluster) is not part of the walk-through yet; nothing is shown.");
    demo.ctx.report.ok = demo.ctx.report.steps.iter().all(|s| s.ok) && demo.wl.healthy();
    demo.ctx.report.seconds = started.elapsed().as_secs_f64();
    demo.summary();
    let report = demo.ctx.report.clone();
    let Demo { mut wl, ctx } = demo;
    let kept = if opts.keep_running {
        let mut info = vec![String::new(), "Still running (Ctrl-C stops the servers, unmounts the volumes and stops the simulator):".to_string()];
        let url = ctx.site_a.sim().base_url();
        let auth = format!("{USERNAME}:{}", ctx.password);
        info.push(format!("  ONTAP REST  {url}   (site A, {CLUSTER_NAME})   user {USERNAME}, password {}   (generated for this run)", ctx.password));
        info.extend(wl.kept_info());
        info.push("  try:".into());
        info.push(format!("    curl -s -u '{auth}' '{url}/api/storage/volumes?fields=name,nas.path,space.size,space.used'"));
        if let Some(v) = ctx.app_volumes.first() {
            info.push(format!("    curl -s -u '{auth}' '{url}/api/storage/volumes/{}/snapshots?fields=name,create_time'   # {}", v.uuid, v.name));
        }
        Some(Kept {
            info,
            plugin: wl.plugin(),
            app: ctx.app.clone(),
            orchestrator: ctx.orchestrator.clone(),
            catalog: ctx.catalog.clone(),
            cluster: CLUSTER_NAME.into(),
            workload: wl,
            hosts: vec![ctx.site_a],
            _catalog_dir: ctx.catalog_dir,
        })
    } else {
        wl.shutdown().await;
        drop(wl);
        ctx.site_a.shutdown().await;
        None
    };
    Ok(DemoRun { report, kept })
}

impl<'a> Demo<'a> {
    async fn setup(opts: DemoOptions, obs: &'a dyn Observer) -> anyhow::Result<Demo<'a>> {
        let password = format!("demo-{:016x}", rand::random::<u64>());
        let mariadb = opts.workload == Workload::Mariadb;
        if mariadb {
            mariadb_available()?;
            obs.say("Stasis demo: application-consistent backup and restore of a real MariaDB on (simulated) NetApp ONTAP");
            obs.say("  setting up: simulated cluster, FUSE mounts, mariadb-install-db and mariadbd on the volume ...");
        } else {
            obs.say("Stasis demo: application-consistent backup and restore on (simulated) NetApp ONTAP");
        }
        let cluster = ClusterConfig { name: CLUSTER_NAME.into(), svms: vec![SVM.into()], aggregate: AGGREGATE.into(), seed: opts.seed, ..ClusterConfig::default() };
        let site_a = SimHost::start(mariadb, cluster, &password).await.context("starting the simulated ONTAP cluster on 127.0.0.1")?;
        let other = site_a.create_volume(SVM, OTHER_VOLUME, &format!("/{OTHER_VOLUME}"), OTHER_VOLUME_SIZE)?;
        site_a.sim().sim().fill(&other, "site/assets.bin", OTHER_VOLUME_FILL, opts.seed).map_err(|e| anyhow!("{e}")).with_context(|| format!("writing sample data to {OTHER_VOLUME}"))?;
        let (wl, app): (Box<dyn WorkloadImpl>, AppSpec) = if mariadb {
            let (wl, app) = mariadb::MariaDbWorkload::setup(&site_a, &opts).await?;
            (Box::new(wl), app)
        } else {
            let (wl, app) = simdb::SimdbWorkload::setup(&site_a, &opts)?;
            (Box::new(wl), app)
        };
        let catalog_dir = tempfile::Builder::new().prefix("stasis-demo-").tempdir().context("creating a temporary directory for the catalog")?;
        let catalog_path = catalog_dir.path().join("catalog.sqlite");
        let catalog = Arc::new(SqliteCatalog::open(&catalog_path).with_context(|| format!("opening the catalog {}", catalog_path.display()))?);
        let storage = Arc::new(OntapClient::new(client_config(&site_a.sim().base_url(), &password)).context("configuring the ONTAP REST client")?);
        let orchestrator = Orchestrator::new(storage.clone(), catalog.clone(), Arc::new(SystemClock));
        let policy = Policy { name: POLICY_NAME.into(), schedule: Schedule::Cron { expr: POLICY_CRON.into() }, keep_last: Some(POLICY_KEEP), max_age: None };
        let report = DemoReport {
            ok: false,
            workload: wl.name(),
            workload_note: wl.note(),
            server: wl.server(),
            cluster: ClusterSummary { name: CLUSTER_NAME, site: "A", url: site_a.sim().base_url(), svm: SVM },
            volumes: Vec::new(),
            steps: Vec::new(),
            freeze_window_ms: None,
            backup: None,
            damage: None,
            restore: None,
            crash_vs_app: None,
            failover: None,
            not_built: vec!["failover: disaster recovery to site B (SnapMirror)"],
            seconds: 0.0,
        };
        let ctx = Ctx { opts, obs, site_a, password, storage, catalog, orchestrator, app, policy, app_volumes: Vec::new(), last_backup: None, report, catalog_dir };
        Ok(Demo { wl, ctx })
    }

    fn intro(&self) {
        let o = self.ctx.obs;
        o.say("");
        for line in self.wl.intro(&self.ctx) {
            o.say(&line);
        }
        o.say("            Not built yet: disaster recovery (site B, SnapMirror).");
        o.say(&format!("  array     simulated ONTAP cluster {CLUSTER_NAME} (site A), in this process, ONTAP REST at {}", self.ctx.site_a.sim().base_url()));
        o.say(&format!("  catalog   SQLite in a temporary directory (removed at exit); freeze bound {} ms", self.ctx.opts.freeze_timeout.as_millis()));
    }

    // ---- 1. discover ----

    async fn discover(&mut self) -> anyhow::Result<Verdict> {
        let ctx = &mut self.ctx;
        // The client's Storage seam has no "list every volume" call yet: the names come from
        // the simulator, every detail below is read over ONTAP REST by the client.
        let names: Vec<String> = ctx.site_a.sim().sim().read(|s| s.volumes_in_order().into_iter().filter(|v| v.svm.name == SVM).map(|v| v.name.clone()).collect());
        let infos = ctx.storage.volumes_by_name(SVM, &names).await.context("reading the SVM's volumes over ONTAP REST")?;
        let app_name = ctx.app.name.clone();
        ctx.say(format!("{:<13} {:<14} {:>8} {:>9} {:>9}  {}", "VOLUME", "JUNCTION PATH", "SIZE", "USED", "SNAPSHOTS", "APP"));
        for v in &infos {
            let app = self.wl.volume_role(&v.name).map_or("-".to_string(), |r| format!("{app_name} ({r})"));
            ctx.say(format!(
                "{:<13} {:<14} {:>8} {:>9} {:>9}  {}",
                v.name,
                v.junction_path.as_deref().unwrap_or("-"),
                human_bytes(v.size_bytes),
                human_bytes(v.used_bytes),
                v.n_snapshots,
                app
            ));
        }
        ctx.say("(volume names enumerated in-process: the client has no list call yet; details over REST)");
        ctx.report.volumes = infos
            .iter()
            .map(|v| VolumeRow { name: v.name.clone(), junction_path: v.junction_path.clone(), size_bytes: v.size_bytes, used_bytes: v.used_bytes, snapshots: v.n_snapshots, app_role: self.wl.volume_role(&v.name) })
            .collect();
        let mut app_volumes = Vec::new();
        for name in &ctx.app.volumes {
            let v = infos.iter().find(|v| &v.name == name).ok_or_else(|| anyhow!("the app's volume {name} was not discovered"))?;
            app_volumes.push(v.clone());
        }
        // Online, writable and mounted; the first volume holds the database's files already.
        let usable = app_volumes.iter().all(|v| v.online && v.writable && v.junction_path.is_some()) && app_volumes.first().is_some_and(|v| v.used_bytes > 0);
        ctx.app_volumes = app_volumes;
        let checked = self.wl.check_discovered(&self.ctx, &self.ctx.app_volumes.clone()).await?;
        let n = self.ctx.app_volumes.len();
        Ok(Verdict { ok: usable && checked, summary: format!("{} volumes, {n} belong to app {app_name} (online, writable, mounted)", infos.len()) })
    }

    // ---- 2. protect ----

    async fn protect(&mut self) -> anyhow::Result<Verdict> {
        let ctx = &self.ctx;
        let (app, policy) = (&ctx.app, &ctx.policy);
        ctx.catalog.put_policy(policy).context("storing the policy")?;
        ctx.catalog.put_app(app).context("storing the app")?;
        ctx.catalog.set_app_policy(&app.name, Some(POLICY_NAME)).context("assigning the policy")?;
        let app_back = ctx.catalog.app(&app.name).context("reading the app back")?;
        let policy_back = ctx.catalog.policy(POLICY_NAME).context("reading the policy back")?;
        let assigned = ctx.catalog.app_policy(&app.name).context("reading the assignment back")?;
        let ok = app_back.as_ref() == Some(app) && policy_back.as_ref() == Some(policy) && assigned.as_deref() == Some(POLICY_NAME);
        let next = next_due(&policy.schedule, None, chrono::Utc::now()).map_err(|e| anyhow!(e)).context("computing the next scheduled backup")?;
        ctx.say(format!("app     {}: {}, freeze bound {} ms", app.name, self.wl.app_line(app), app.freeze_timeout.as_millis()));
        ctx.say(format!("policy  {POLICY_NAME}: cron \"{POLICY_CRON}\", keep the last {POLICY_KEEP} backups"));
        ctx.say(format!("next scheduled backup {} UTC (this demo takes its backups now, on demand)", next.format("%H:%M")));
        Ok(Verdict { ok, summary: format!("app {} and policy {POLICY_NAME} (hourly, keep {POLICY_KEEP}) stored and read back", app.name) })
    }

    // ---- 3. backup under load ----

    async fn backup(&mut self) -> anyhow::Result<Verdict> {
        self.wl.start_load(&self.ctx, 0).await?;
        tokio::time::sleep(self.wl.warm_up()).await;
        let ctx = &mut self.ctx;
        let freeze_mark = self.wl.freeze_mark();
        let acked_before = self.wl.load_stats(None).acknowledged;
        let n = ctx.opts.backups;
        let (mut records, mut durations, mut problems) = (Vec::new(), Vec::new(), Vec::new());
        let mut app_consistent = 0;
        for i in 0..n {
            ctx.progress("backups", u64::from(i), u64::from(n));
            let started = Instant::now();
            let record = ctx.orchestrator.backup(&ctx.app, self.wl.plugin()).await.with_context(|| format!("backup {} of {n}", i + 1))?.record;
            durations.push(started.elapsed().as_secs_f64());
            let point = record.evidence.consistency_point.as_ref();
            let known = point.is_some_and(|p| self.wl.point_known(p));
            let holds = record.evidence.holds(&record.snapshots);
            if record.state == BackupState::Complete && record.consistency == Some(Consistency::Application) && holds.is_ok() && known {
                app_consistent += 1;
            } else {
                problems.push(format!("backup {} is {:?}/{:?}, evidence {holds:?}, point {point:?} acknowledged: {known}", record.id, record.state, record.consistency));
            }
            records.push(record);
            tokio::time::sleep(self.wl.backup_gap()).await;
        }
        ctx.progress("backups", u64::from(n), u64::from(n));
        let (mut windows, ended_in_bound) = self.wl.freeze_windows(freeze_mark, &records, ctx.opts.freeze_timeout);
        windows.sort_by(|a, b| a.total_cmp(b));
        durations.sort_by(|a, b| a.total_cmp(b));
        let stats = FreezeStats {
            p50: percentile(&windows, 0.5),
            p99: percentile(&windows, 0.99),
            max: windows.last().copied().unwrap_or(0.0),
            samples: windows.len(),
            bound_ms: ctx.opts.freeze_timeout.as_millis() as u64,
            measured_by: self.wl.freeze_measured_by(),
        };
        let retention = ctx.orchestrator.apply_retention(&ctx.app, &ctx.policy).await.context("applying the retention policy")?;
        let last = records.last().cloned().ok_or_else(|| anyhow!("no backup was taken"))?;
        let last_point = last.evidence.consistency_point.clone().ok_or_else(|| anyhow!("the last backup has no consistency point"))?;
        let load = self.wl.load_stats(Some(&last_point));
        let commits_during = load.acknowledged - acked_before;
        ctx.say(format!("{app_consistent}/{n} complete and application-consistent (quiesce -> snapshot -> thaw)"));
        ctx.say(format!("commits acknowledged while backing up: {commits_during}; commit attempts that met a freeze and retried: {}; writer statements failed: {}", load.met_a_freeze, load.failures));
        ctx.say(format!("freeze window ({}): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (bound {} ms)", stats.measured_by, stats.p50, stats.p99, stats.max, stats.bound_ms));
        ctx.say(format!("backup workflow time: p50 {:.1} ms (catalog writes and verification are outside the freeze)", percentile(&durations, 0.5) * 1000.0));
        ctx.say(format!("last backup {}: consistency point {last_point}", last.id));
        for s in &last.snapshots {
            ctx.say(format!("  snapshot {} on {} (created {})", last.snapshot_name, s.volume_name, s.create_time.format("%H:%M:%S")));
        }
        ctx.say(format!("{} commits acknowledged after it (the load went on: the app was thawed)", load.after_point));
        ctx.say(format!("retention ({POLICY_KEEP} kept): {} expired", retention.expired.len()));
        for p in &problems {
            ctx.say(format!("PROBLEM: {p}"));
        }
        if !ended_in_bound {
            ctx.say(format!("PROBLEM: a freeze exceeded the bound of {} ms or never ended", stats.bound_ms));
        }
        let ok = app_consistent == n && ended_in_bound && stats.samples == n as usize && load.failures == 0 && load.after_point > 0;
        let summary = format!("{app_consistent}/{n} application-consistent under load; freeze p50 {:.2} ms, p99 {:.2} ms", stats.p50, stats.p99);
        ctx.report.freeze_window_ms = Some(stats);
        ctx.report.backup = Some(BackupSummary {
            taken: n,
            application_consistent: app_consistent,
            commits_during,
            commits_after_last_backup: load.after_point,
            commits_that_met_a_freeze: load.met_a_freeze,
            writer_failures: load.failures,
            backup_seconds_p50: percentile(&durations, 0.5),
            last_backup_id: last.id.clone(),
            last_consistency_point: last_point.0.clone(),
            last_snapshots: last.snapshots.iter().map(|s| (s.volume_name.clone(), last.snapshot_name.clone())).collect(),
            retention_expired: retention.expired.len(),
        });
        ctx.last_backup = Some(last);
        Ok(Verdict { ok, summary })
    }

    // ---- 4. damage ----

    async fn damage(&mut self) -> anyhow::Result<Verdict> {
        let last = self.ctx.last_backup.clone().ok_or_else(|| anyhow!("no backup to compare with"))?;
        let (verdict, detail) = self.wl.damage(&self.ctx, &last).await?;
        self.ctx.report.damage = Some(detail);
        Ok(verdict)
    }

    // ---- 5. restore in place ----

    async fn restore(&mut self) -> anyhow::Result<Verdict> {
        let ctx = &self.ctx;
        let last = ctx.last_backup.clone().ok_or_else(|| anyhow!("no backup to restore"))?;
        let point = last.evidence.consistency_point.clone().ok_or_else(|| anyhow!("the last backup has no consistency point"))?;
        let mark = self.wl.restore_mark();
        let record = ctx.orchestrator.restore_in_place(&ctx.app, &last.id, self.wl.plugin()).await.with_context(|| format!("restoring backup {} in place", last.id))?;
        ctx.say(format!("stopped the app, SnapRestore of {} to {}, recovery check, started it again", ctx.app.volumes.join(" + "), last.snapshot_name));
        ctx.say(format!(
            "recovered point {} (the backup's point {point}); crash recovery at start: {}",
            record.recovered_point.as_ref().map_or("none".into(), |p| p.0.clone()),
            match record.needed_crash_recovery {
                Some(true) => "YES",
                Some(false) => "no",
                None => "unknown",
            }
        ));
        let check = self.wl.check_restore(&self.ctx, &last, &record, mark).await?;
        let point_matches = record.recovered_point.as_ref() == Some(&point);
        self.ctx.report.restore = Some(RestoreSummary {
            backup_id: last.id.clone(),
            consistency_point: point.0.clone(),
            recovered_point: record.recovered_point.as_ref().map(|p| p.0.clone()),
            needed_crash_recovery: record.needed_crash_recovery,
            exact: check.exact && point_matches,
            commits_discarded: check.commits_discarded,
            detail: check.detail,
        });
        Ok(Verdict { ok: check.ok && point_matches, summary: check.summary })
    }

    // ---- 6. crash-consistent vs application-consistent ----

    async fn crash_vs_app(&mut self) -> anyhow::Result<Verdict> {
        for line in self.wl.crash_vs_app_intro() {
            self.ctx.say(line);
        }
        self.wl.start_load(&self.ctx, 1).await?;
        tokio::time::sleep(self.wl.warm_up()).await;
        let rounds = self.ctx.opts.crash_rounds;
        let (mut crash, mut app) = (Vec::new(), Vec::new());
        for round in 1..=rounds {
            self.ctx.progress("rounds", u64::from(round - 1), u64::from(rounds));
            crash.push(self.wl.crash_round(&self.ctx, round).await.with_context(|| format!("crash-consistent round {round}"))?);
            app.push(self.wl.app_round(&self.ctx, round).await.with_context(|| format!("application-consistent round {round}"))?);
        }
        self.ctx.progress("rounds", u64::from(rounds), u64::from(rounds));
        self.wl.stop_load().await;

        let ctx = &mut self.ctx;
        ctx.say("");
        ctx.say(format!("{:<5} {:<6} {:>12} {:>12} {:>9} {:>7}  {}", "ROUND", "KIND", "POINT", "RECOVERED", "CRASH REC", "LOST", "STATE"));
        for (c, a) in crash.iter().zip(&app) {
            for (kind, r) in [("crash", c), ("app", a)] {
                ctx.say(format!(
                    "{:<5} {:<6} {:>12} {:>12} {:>9} {:>7}  {}",
                    r.round,
                    kind,
                    self.wl.short_point(&r.claimed_point),
                    r.recovered_point.as_deref().map_or("-".into(), |p| self.wl.short_point(p)),
                    match r.needed_crash_recovery {
                        Some(true) => "yes",
                        Some(false) => "no",
                        None => "-",
                    },
                    if kind == "crash" && r.lost_acknowledged_commits > 0 { format!(">= {}", r.lost_acknowledged_commits) } else { r.lost_acknowledged_commits.to_string() },
                    r.state
                ));
            }
        }
        let [crash_how, app_how] = self.wl.sides();
        let crash = summarize(crash_how, crash);
        let app = summarize(app_how, app);
        ctx.say("");
        ctx.say(format!(
            "crash-consistent:       {}/{} exact; {} needed crash recovery; {} lost acknowledged commits (up to {}); {} off their own point; {} flagged by the database itself",
            crash.exact, crash.restores, crash.needed_crash_recovery, crash.lost_acknowledged_commits, crash.max_commits_lost, crash.off_their_point, crash.flagged_by_the_database
        ));
        ctx.say(format!(
            "application-consistent: {}/{} exact at their consistency point; {} needed crash recovery; {} lost acknowledged commits; {} flagged",
            app.exact, app.restores, app.needed_crash_recovery, app.lost_acknowledged_commits, app.flagged_by_the_database
        ));
        if crash.exact == crash.restores {
            ctx.say(format!("note: this time all {} crash snapshots came back exact; nothing in flight is luck, not a guarantee", crash.restores));
        }
        let ok = app.exact == app.restores && app.restores == rounds;
        let summary = format!(
            "crash: {}/{} exact, {} lost acked commits, {} off their point, {} flagged; app: {}/{} exact",
            crash.exact, crash.restores, crash.lost_acknowledged_commits, crash.off_their_point, crash.flagged_by_the_database, app.exact, app.restores
        );
        ctx.report.crash_vs_app = Some(CrashVsApp { rounds, crash, app });
        Ok(Verdict { ok, summary })
    }

    // ---- the final table ----

    fn summary(&self) {
        let o = self.ctx.obs;
        let r = &self.ctx.report;
        o.say("");
        o.say("Summary");
        o.say(&format!("  {:<13} {:<7} {:>8}  {}", "STEP", "RESULT", "TIME", "DETAIL"));
        for s in &r.steps {
            let detail = s.error.clone().unwrap_or_else(|| s.summary.clone());
            o.say(&format!("  {:<13} {:<7} {:>6.2} s  {}", s.name, if s.ok { "ok" } else { "FAILED" }, s.seconds, detail));
        }
        o.say(&format!("  {:<13} {:<7} {:>8}  {}", "failover", "n/a", "-", "not built yet (site B, SnapMirror)"));
        o.say(&format!(
            "verdict: {}  (workload: {}; total {:.1} s)",
            if r.ok { "PASS, every verification passed" } else { "FAIL, see the steps above" },
            self.wl.name(),
            r.seconds
        ));
    }
}

fn summarize(how: &'static str, results: Vec<RestoreOutcome>) -> SideSummary {
    let count = |f: &dyn Fn(&RestoreOutcome) -> bool| results.iter().filter(|r| f(r)).count() as u32;
    SideSummary {
        how,
        restores: results.len() as u32,
        exact: count(&|r| r.exact),
        needed_crash_recovery: count(&|r| r.needed_crash_recovery == Some(true)),
        lost_acknowledged_commits: count(&|r| r.lost_acknowledged_commits > 0),
        max_commits_lost: results.iter().map(|r| r.lost_acknowledged_commits).max().unwrap_or(0),
        off_their_point: count(&|r| r.error.is_none() && !r.consistent_with_its_point),
        flagged_by_the_database: count(&|r| !r.findings.is_empty()),
        did_not_open: count(&|r| r.error.is_some()),
        results,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1 << 30), "1.0 GiB");
        assert_eq!(human_bytes(10 << 30), "10 GiB");
        assert_eq!(percentile(&[1.0, 2.0, 3.0], 0.5), 2.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
