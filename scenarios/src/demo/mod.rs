//! `stasis demo`: the first thing a new user runs. Everything is embedded: two simulated
//! ONTAP clusters (site A with the app's volumes, site B for disaster recovery) in this
//! process on 127.0.0.1, a workload, a SQLite catalog in a temporary directory, and the real
//! orchestrator talking to the simulators over ONTAP REST.
//!
//! The walk-through is written once, here: discover -> protect -> backup under write load ->
//! damage -> restore in place -> crash-consistent vs application-consistent side by side ->
//! replicate to site B (peering, SnapMirror, each backup's snapshot sent by an update) ->
//! site A lost (its listener closed, its database killed) -> unplanned failover (break,
//! revert to the newest replicated backup, start at B) -> verify site B (exactly that
//! backup's state; RPO, RTO) -> failback (site A back, reverse resync, planned switch back)
//! -> verify site A (exactly what site B had acknowledged).
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
use stasis_core::dr::{DrPlan, DrState, FailoverRecord, FailoverState, Site, POLICY_ASYNC_DEFAULT};
use stasis_core::plugin::AppPlugin;
use stasis_core::replication::{MirrorState, Replication};
use stasis_core::sqlite_catalog::SqliteCatalog;
use stasis_core::storage::{Storage, VolumeInfo};
use stasis_core::workflow::dr::{DrBounds, DrPlanRequest, DrSite, FailbackOutcome};
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
/// Site B: its own cluster and SVM.
const CLUSTER_B: &str = "sim-b";
const SVM_B: &str = "svm_dr";
/// Backups the replicate step takes under load and sends to site B.
const REPLICATED_BACKUPS: u32 = 2;
/// The load goes on at site A this long after the last replicated backup: the commits an
/// unplanned failover then loses (what the RPO costs).
const LOAD_BEFORE_DISASTER: Duration = Duration::from_millis(500);
/// The app takes commits at site B this long before the failback brings them home.
const LOAD_AT_SITE_B: Duration = Duration::from_millis(500);
/// Bounds on waiting for transfers and peering (far above what the demo needs).
const DR_BOUNDS: DrBounds = DrBounds { transfer_wait_max: Duration::from_secs(60), peering_wait_max: Duration::from_secs(10) };

pub const STEP_NAMES: [&str; 12] =
    ["discover", "protect", "backup", "damage", "restore", "crash_vs_app", "replicate", "site_a_lost", "failover", "verify_site_b", "failback", "verify_site_a"];

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
    /// Negative control: right after the failover, commit one write at site B that the load
    /// never acknowledged (as a stray client would), so the verification of site B must
    /// fail, and the demo with it. Never set by `stasis demo`.
    pub tamper_site_b: bool,
}

impl DemoOptions {
    /// The simulated database: many fast backups and rounds.
    pub fn simdb() -> Self {
        DemoOptions { workload: Workload::Simdb, backups: 20, crash_rounds: 10, writers: 1, freeze_timeout: Duration::from_secs(1), seed: 1, keep_running: false, why_simdb: None, tamper_site_b: false }
    }

    /// A real MariaDB: each restore starts a server, so fewer rounds.
    pub fn mariadb() -> Self {
        DemoOptions { workload: Workload::Mariadb, backups: 5, crash_rounds: 2, writers: 4, freeze_timeout: Duration::from_secs(5), seed: 1, keep_running: false, why_simdb: None, tamper_site_b: false }
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
    /// Replication to site B and the unplanned failover (null if the demo did not get there).
    pub failover: Option<FailoverSummary>,
    /// Back to site A (null if the demo did not get there).
    pub failback: Option<FailbackSummary>,
    pub seconds: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct FailoverSummary {
    /// Age of the state site B started from, at the failover's start (seconds).
    pub rpo_s: f64,
    /// Failover start to the app recovered, verified and serving at site B (seconds).
    pub rto_s: f64,
    /// The failover workflow verified the recovered point AND the demo found exactly the
    /// newest replicated backup's state at site B.
    pub verified: bool,
    /// What the failover workflow alone found (the plugin's recovery check).
    pub workflow_verified: bool,
    pub kind: &'static str,
    pub site_b: ClusterSummary,
    pub policy: &'static str,
    /// Bytes of the baseline transfers (initialize) and of the backups' updates.
    pub baseline_bytes: u64,
    pub update_bytes: Vec<u64>,
    pub replicated_backups: Vec<String>,
    /// Site A's REST listener was closed and a request to it failed.
    pub site_a_unreachable: bool,
    pub restored_backup: Option<String>,
    pub restored_snapshot: Option<String>,
    pub expected_point: Option<String>,
    pub recovered_point: Option<String>,
    /// Commits site A acknowledged after the restored point: lost with site A.
    pub commits_lost: u64,
    /// The demo's check of site B (the workload's own evidence).
    pub check: serde_json::Value,
}

#[derive(Clone, Debug, Serialize)]
pub struct FailbackSummary {
    /// Zero for a planned switch: the state at site A is what site B had when it stopped.
    pub rpo_s: f64,
    /// Failback start (after the confirmation) to the app verified and serving at site A.
    pub rto_s: f64,
    /// The failback workflow verified the recovered point AND the demo found exactly what
    /// site B had acknowledged, at site A.
    pub verified: bool,
    pub workflow_verified: bool,
    /// What the reverse resync was to discard at site A, reported before it ran.
    pub discarded_snapshots: usize,
    pub discarded_bytes: Option<u64>,
    /// Reverse resync and the final update (B -> A).
    pub bytes_transferred: u64,
    pub final_snapshot: Option<String>,
    pub expected_point: Option<String>,
    pub recovered_point: Option<String>,
    /// Commits made at site B that came back to site A.
    pub commits_brought_back: u64,
    /// After failback: the app active at site A and mirrors A -> B again.
    pub protected_again: bool,
    pub check: serde_json::Value,
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
    /// Try to write through the hosts' data path into site B's mirror volumes: `Ok(true)` if
    /// a write was taken (it must not be, while they are snapmirrored).
    async fn mirror_writable(&self, ctx: &Ctx<'_>, b_volumes: &[VolumeInfo]) -> anyhow::Result<bool>;
    /// Site A is lost: the load stops and the app at A dies with no clean shutdown. Returns
    /// the commits acknowledged after `point` (they exist only at site A).
    async fn site_a_lost(&mut self, ctx: &Ctx<'_>, point: &ConsistencyPoint) -> anyhow::Result<u64>;
    /// A stopped instance of the app on site B's mirror volumes, for the failover to recover
    /// and start.
    async fn standby_on_b(&mut self, ctx: &Ctx<'_>, b_volumes: &[VolumeInfo]) -> anyhow::Result<Arc<dyn AppPlugin>>;
    /// The app's instance at `site` (at B only after [`WorkloadImpl::standby_on_b`]).
    fn plugin_at(&self, site: Site) -> Option<Arc<dyn AppPlugin>>;
    /// Negative control ([`DemoOptions::tamper_site_b`]): one commit at site B that the load
    /// never acknowledged.
    async fn tamper_on_b(&mut self) -> anyhow::Result<()>;
    /// The app running at `site` holds exactly the acknowledged state at `point`, nothing
    /// more, nothing less. From here on the timeline is that site's (commits after `point`
    /// elsewhere are gone) and the load runs there.
    async fn verify_site(&mut self, ctx: &Ctx<'_>, site: Site, point: &ConsistencyPoint) -> anyhow::Result<RestoreCheck>;
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

    fn running_mut(&mut self) -> &mut RunningSim {
        match self {
            SimHost::Plain(s) => s,
            SimHost::Mounted(m) => m.sim_mut(),
        }
    }

    /// The site goes dark: its REST listener and intercluster link close for real
    /// (connections are refused); its disks (state, FUSE mounts) persist.
    async fn go_offline(&mut self) {
        self.running_mut().go_offline().await;
    }

    /// The site is back on the same address with the same state.
    async fn come_back(&mut self) -> anyhow::Result<()> {
        self.running_mut().come_back().await
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
    pub(crate) site_b: SimHost,
    password: String,
    pub(crate) storage: Arc<OntapClient>,
    /// The two sites as the DR workflows reach them (each over its own ONTAP REST client).
    dr_a: DrSite,
    dr_b: DrSite,
    dr: DrProgress,
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

/// What the DR steps found so far.
#[derive(Default)]
struct DrProgress {
    plan: Option<DrPlan>,
    /// Site B's mirror volumes.
    b_volumes: Vec<VolumeInfo>,
    replicated: Vec<BackupRecord>,
    failover: Option<FailoverRecord>,
    failback: Option<FailoverRecord>,
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
            "replicate" => demo.replicate().await,
            "site_a_lost" => demo.site_a_lost().await,
            "failover" => demo.failover().await,
            "verify_site_b" => demo.verify_site_b().await,
            "failback" => demo.failback().await,
            "verify_site_a" => demo.verify_site_a().await,
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
        info.push(format!("  ONTAP REST  {}   (site B, {CLUSTER_B}, SVM {SVM_B}: the SnapMirror destinations)", ctx.site_b.sim().base_url()));
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
            hosts: vec![ctx.site_a, ctx.site_b],
            _catalog_dir: ctx.catalog_dir,
        })
    } else {
        wl.shutdown().await;
        drop(wl);
        ctx.site_a.shutdown().await;
        ctx.site_b.shutdown().await;
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
            obs.say("Stasis demo: application-consistent backup, restore and disaster recovery of a real MariaDB on (simulated) NetApp ONTAP");
            obs.say("  setting up: two simulated clusters, FUSE mounts, mariadb-install-db and mariadbd on the volume ...");
        } else {
            obs.say("Stasis demo: application-consistent backup, restore and disaster recovery on (simulated) NetApp ONTAP");
        }
        let cluster = ClusterConfig { name: CLUSTER_NAME.into(), svms: vec![SVM.into()], aggregate: AGGREGATE.into(), seed: opts.seed, ..ClusterConfig::default() };
        let site_a = SimHost::start(mariadb, cluster, &password).await.context("starting the simulated ONTAP cluster on 127.0.0.1")?;
        let cluster_b = ClusterConfig { name: CLUSTER_B.into(), svms: vec![SVM_B.into()], aggregate: AGGREGATE.into(), seed: opts.seed.wrapping_add(1), ..ClusterConfig::default() };
        let site_b = SimHost::start(mariadb, cluster_b, &password).await.context("starting the second simulated ONTAP cluster (site B) on 127.0.0.1")?;
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
        let storage_b = Arc::new(OntapClient::new(client_config(&site_b.sim().base_url(), &password)).context("configuring the ONTAP REST client for site B")?);
        let dr_site = |name: &str, client: &Arc<OntapClient>, host: &SimHost| DrSite {
            name: name.to_string(),
            storage: client.clone() as Arc<dyn Storage>,
            replication: client.clone() as Arc<dyn Replication>,
            intercluster_addresses: vec![host.sim().addr().to_string()],
        };
        let (dr_a, dr_b) = (dr_site(CLUSTER_NAME, &storage, &site_a), dr_site(CLUSTER_B, &storage_b, &site_b));
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
            failback: None,
            seconds: 0.0,
        };
        let ctx = Ctx {
            opts,
            obs,
            site_a,
            site_b,
            password,
            storage,
            dr_a,
            dr_b,
            dr: DrProgress::default(),
            catalog,
            orchestrator,
            app,
            policy,
            app_volumes: Vec::new(),
            last_backup: None,
            report,
            catalog_dir,
        };
        Ok(Demo { wl, ctx })
    }

    fn intro(&self) {
        let o = self.ctx.obs;
        o.say("");
        for line in self.wl.intro(&self.ctx) {
            o.say(&line);
        }
        o.say(&format!("  array     simulated ONTAP cluster {CLUSTER_NAME} (site A), in this process, ONTAP REST at {}", self.ctx.site_a.sim().base_url()));
        o.say(&format!("  DR site   simulated ONTAP cluster {CLUSTER_B} (site B), SVM {SVM_B}, ONTAP REST at {}", self.ctx.site_b.sim().base_url()));
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

    // ---- 7. replicate to site B ----

    async fn replicate(&mut self) -> anyhow::Result<Verdict> {
        self.wl.start_load(&self.ctx, 2).await?;
        tokio::time::sleep(self.wl.warm_up()).await;
        let ctx = &mut self.ctx;
        let request = DrPlanRequest { destination_svm: SVM_B.into(), policy: POLICY_ASYNC_DEFAULT.into(), schedule: Some(Duration::from_secs(3600)), destination_volumes: None };
        let plan = ctx.orchestrator.dr_setup(&ctx.app, &request, &ctx.dr_a, &ctx.dr_b, DR_BOUNDS).await.context("setting up DR to site B")?;
        ctx.say(format!("peered: cluster {CLUSTER_NAME} <-> {CLUSTER_B}, SVM {SVM} <-> {SVM_B} (passphrase offered by B, accepted by A)"));
        let b_volumes = ctx.dr_b.storage.volumes_by_name(SVM_B, &plan.destination_volumes()).await.context("reading site B's mirror volumes")?;
        let mut baseline_bytes = 0;
        let mut healthy = true;
        for (pair, v) in plan.volumes.iter().zip(&b_volumes) {
            let uuid = pair.relationship_uuid.as_deref().ok_or_else(|| anyhow!("volume {} has no relationship", pair.source))?;
            let r = ctx.dr_b.replication.relationship(uuid).await.with_context(|| format!("reading relationship {uuid}"))?;
            let bytes = r.transfer.as_ref().map_or(0, |t| t.bytes_transferred);
            baseline_bytes += bytes;
            healthy &= r.state == MirrorState::Snapmirrored && r.healthy != Some(false);
            ctx.say(format!(
                "{SVM}:{} -> {SVM_B}:{}  dp volume at {}, {:?}, baseline {} ({POLICY_ASYNC_DEFAULT})",
                pair.source,
                pair.destination,
                v.junction_path.as_deref().unwrap_or("(not mounted)"),
                r.state,
                human_bytes(bytes)
            ));
        }
        let writable = self.wl.mirror_writable(&self.ctx, &b_volumes).await?;
        let ctx = &mut self.ctx;
        ctx.say(format!("a write through site B's mount of the mirror: {}", if writable { "TAKEN (a mirror must be read-only)" } else { "refused, read-only until a break" }));
        let mut update_bytes = Vec::new();
        let mut problems = Vec::new();
        for i in 0..REPLICATED_BACKUPS {
            ctx.progress("replicated backups", u64::from(i), u64::from(REPLICATED_BACKUPS));
            let started = Instant::now();
            let (backup, update) = ctx.orchestrator.backup_and_replicate(&ctx.app, self.wl.plugin(), &ctx.dr_b, true, DR_BOUNDS).await.with_context(|| format!("replicated backup {} of {REPLICATED_BACKUPS}", i + 1))?;
            let point = backup.evidence.consistency_point.as_ref().map_or("none".into(), |p| p.0.clone());
            match update {
                Ok(transfers) => {
                    let bytes: u64 = transfers.iter().map(|t| t.bytes_transferred).sum();
                    ctx.say(format!("backup {} at {} -> update to site B: {} in {:.0} ms (backup included)", backup.id, self.wl.short_point(&point), human_bytes(bytes), started.elapsed().as_secs_f64() * 1000.0));
                    update_bytes.push(bytes);
                }
                Err(e) => problems.push(format!("the update carrying backup {} failed: {e}", backup.id)),
            }
            if backup.consistency != Some(Consistency::Application) {
                problems.push(format!("backup {} is {:?}", backup.id, backup.consistency));
            }
            ctx.dr.replicated.push(backup);
            tokio::time::sleep(self.wl.backup_gap()).await;
        }
        ctx.progress("replicated backups", u64::from(REPLICATED_BACKUPS), u64::from(REPLICATED_BACKUPS));
        // What a failover would start from: the newest backup whose snapshot is on every mirror.
        let newest = ctx.orchestrator.newest_mirrored_backup(&ctx.app.name, &ctx.dr_b, &plan).await.context("looking for the newest backup at site B")?.map(|(b, _)| b.id);
        let last = ctx.dr.replicated.last().map(|b| b.id.clone());
        ctx.say(format!("newest complete application-consistent backup on every volume at site B: {}", newest.as_deref().unwrap_or("none")));
        for p in &problems {
            ctx.say(format!("PROBLEM: {p}"));
        }
        // The load goes on at A: these commits are not at B yet.
        tokio::time::sleep(LOAD_BEFORE_DISASTER).await;
        let ok = problems.is_empty() && healthy && !writable && newest.is_some() && newest == last && baseline_bytes > 0 && update_bytes.iter().all(|b| *b > 0);
        let summary = format!(
            "{} volumes mirrored to {CLUSTER_B} (baseline {}), {} backups replicated (updates {})",
            plan.volumes.len(),
            human_bytes(baseline_bytes),
            update_bytes.len(),
            update_bytes.iter().map(|b| human_bytes(*b)).collect::<Vec<_>>().join(", ")
        );
        ctx.report.failover = Some(FailoverSummary {
            rpo_s: 0.0,
            rto_s: 0.0,
            verified: false,
            workflow_verified: false,
            kind: "unplanned",
            site_b: ClusterSummary { name: CLUSTER_B, site: "B", url: ctx.site_b.sim().base_url(), svm: SVM_B },
            policy: POLICY_ASYNC_DEFAULT,
            baseline_bytes,
            update_bytes,
            replicated_backups: ctx.dr.replicated.iter().map(|b| b.id.clone()).collect(),
            site_a_unreachable: false,
            restored_backup: None,
            restored_snapshot: None,
            expected_point: None,
            recovered_point: None,
            commits_lost: 0,
            check: serde_json::Value::Null,
        });
        ctx.dr.plan = Some(plan);
        ctx.dr.b_volumes = b_volumes;
        Ok(Verdict { ok, summary })
    }

    // ---- 8. site A lost ----

    async fn site_a_lost(&mut self) -> anyhow::Result<Verdict> {
        let newest = self.ctx.dr.replicated.last().cloned().ok_or_else(|| anyhow!("nothing was replicated"))?;
        let point = newest.evidence.consistency_point.clone().ok_or_else(|| anyhow!("backup {} has no consistency point", newest.id))?;
        let lost = self.wl.site_a_lost(&self.ctx, &point).await?;
        let ctx = &mut self.ctx;
        let url = ctx.site_a.sim().base_url();
        ctx.site_a.go_offline().await;
        // Not a flag: the client's next call to A must fail to connect.
        let probe = ctx.storage.warm_up().await;
        let unreachable = probe.is_err();
        ctx.say(format!("site A's ONTAP REST and intercluster listener at {url} closed; the app at site A was killed mid-write"));
        match &probe {
            Err(e) => ctx.say(format!("a request to site A now fails: {e}")),
            Ok(()) => ctx.say("PROBLEM: site A still answers"),
        }
        ctx.say(format!("{lost} commits were acknowledged at site A after the newest replicated backup ({}): only site A had them", self.wl.short_point(&point.0)));
        if let Some(f) = ctx.report.failover.as_mut() {
            f.site_a_unreachable = unreachable;
            f.commits_lost = lost;
        }
        Ok(Verdict { ok: unreachable && lost > 0, summary: format!("site A unreachable (connection refused), app killed; {lost} commits after the newest replicated backup are lost") })
    }

    // ---- 9. unplanned failover ----

    async fn failover(&mut self) -> anyhow::Result<Verdict> {
        let b_volumes = self.ctx.dr.b_volumes.clone();
        let plugin_b = self.wl.standby_on_b(&self.ctx, &b_volumes).await?;
        let ctx = &mut self.ctx;
        let record = ctx.orchestrator.failover_unplanned(&ctx.app, &ctx.dr_b, plugin_b).await.context("unplanned failover to site B")?;
        let newest = ctx.dr.replicated.last().map(|b| b.id.clone());
        let rpo = record.rpo.unwrap_or_default().as_secs_f64();
        let rto = record.rto.unwrap_or_default().as_secs_f64();
        let point_of = |p: &Option<ConsistencyPoint>| p.as_ref().map_or("none".to_string(), |p| p.0.clone());
        ctx.say(format!("broke off {} relationships at site B (site A was not asked: it is gone)", b_volumes.len()));
        ctx.say(format!(
            "reverted {} to {} (backup {}: the newest complete application-consistent backup on every volume at B)",
            b_volumes.iter().map(|v| v.name.as_str()).collect::<Vec<_>>().join(" + "),
            record.restored_snapshot.as_deref().unwrap_or("-"),
            record.restored_backup_id.as_deref().unwrap_or("-")
        ));
        ctx.say(format!("recovered and started the app at site B: point {} (the backup's {})", self.wl.short_point(&point_of(&record.recovered_point)), self.wl.short_point(&point_of(&record.expected_point))));
        ctx.say(format!("RPO {rpo:.2} s (age of the state site B restored, at the failover's start)"));
        ctx.say(format!("RTO {rto:.2} s (failover start -> app recovered, verified and serving at site B)"));
        let plan = ctx.catalog.dr_plan(&ctx.app.name).context("reading the DR plan")?;
        let moved = plan.as_ref().is_some_and(|p| p.state == DrState::FailedOver && p.active_site == Site::B);
        let ok = record.state == FailoverState::Complete && record.verified && record.restored_backup_id == newest && record.recovered_point == record.expected_point && moved;
        if let Some(f) = ctx.report.failover.as_mut() {
            f.rpo_s = rpo;
            f.rto_s = rto;
            f.workflow_verified = record.verified;
            f.restored_backup = record.restored_backup_id.clone();
            f.restored_snapshot = record.restored_snapshot.clone();
            f.expected_point = record.expected_point.as_ref().map(|p| p.0.clone());
            f.recovered_point = record.recovered_point.as_ref().map(|p| p.0.clone());
        }
        let summary = format!("site B serves from backup {}; RPO {rpo:.2} s, RTO {rto:.2} s", record.restored_backup_id.as_deref().unwrap_or("-"));
        ctx.dr.failover = Some(record);
        Ok(Verdict { ok, summary })
    }

    // ---- 10. verify site B ----

    async fn verify_site_b(&mut self) -> anyhow::Result<Verdict> {
        let record = self.ctx.dr.failover.clone().ok_or_else(|| anyhow!("no failover to verify"))?;
        let point = record.expected_point.clone().ok_or_else(|| anyhow!("the failover restored no known point"))?;
        if self.ctx.opts.tamper_site_b {
            self.ctx.say("NEGATIVE CONTROL: one commit at site B that the load never acknowledged");
            self.wl.tamper_on_b().await?;
        }
        let check = self.wl.verify_site(&self.ctx, Site::B, &point).await?;
        // The app serves at B: the load runs there now.
        self.wl.start_load(&self.ctx, 3).await?;
        tokio::time::sleep(LOAD_AT_SITE_B).await;
        let at_b = self.wl.load_stats(Some(&point)).after_point;
        let ctx = &mut self.ctx;
        ctx.say(format!("the load runs at site B now: {at_b} commits taken there so far"));
        let verified = check.ok && record.verified;
        if let Some(f) = ctx.report.failover.as_mut() {
            f.verified = verified;
            f.check = check.detail.clone();
        }
        Ok(Verdict { ok: verified && at_b > 0, summary: check.summary })
    }

    // ---- 11. failback ----

    async fn failback(&mut self) -> anyhow::Result<Verdict> {
        let failover_point = self.ctx.dr.failover.as_ref().and_then(|r| r.expected_point.clone()).ok_or_else(|| anyhow!("no failover to come back from"))?;
        // The planned switch stops the app at B: stop the load first (nothing is lost).
        self.wl.stop_load().await;
        let made_at_b = self.wl.load_stats(Some(&failover_point)).after_point;
        let plugin_a = self.wl.plugin_at(Site::A).ok_or_else(|| anyhow!("no app instance at site A"))?;
        let plugin_b = self.wl.plugin_at(Site::B).ok_or_else(|| anyhow!("no app instance at site B"))?;
        let ctx = &mut self.ctx;
        ctx.site_a.come_back().await.context("bringing site A back")?;
        ctx.say(format!("site A is back at {} with its disks as they were ({made_at_b} commits were made at site B meanwhile)", ctx.site_a.sim().base_url()));
        let first = ctx.orchestrator.failback(&ctx.app, &ctx.dr_a, &ctx.dr_b, plugin_a.clone(), plugin_b.clone(), false, DR_BOUNDS).await.context("failback to site A")?;
        let (record, divergence) = match first {
            FailbackOutcome::Done(record) => (record, None),
            FailbackOutcome::NeedsConfirmation(d) => {
                let snapshots = if d.snapshots.is_empty() { "no snapshots".to_string() } else { d.snapshots.iter().map(|(v, s)| format!("{v}:{s}")).collect::<Vec<_>>().join(", ") };
                ctx.say(format!(
                    "the reverse resync would discard at site A: {snapshots} and {} written after the common snapshot ({})",
                    d.bytes.map_or("an unknown amount".into(), human_bytes),
                    d.common_snapshots.iter().map(|(v, s)| format!("{v}:{s}")).collect::<Vec<_>>().join(", ")
                ));
                ctx.say("  (the commits site A took after the last replicated backup: lost in the disaster anyway); confirmed, as `stasis failback --yes` does");
                match ctx.orchestrator.failback(&ctx.app, &ctx.dr_a, &ctx.dr_b, plugin_a, plugin_b, true, DR_BOUNDS).await.context("failback to site A (confirmed)")? {
                    FailbackOutcome::Done(record) => (record, Some(d)),
                    FailbackOutcome::NeedsConfirmation(_) => bail!("the failback asked for confirmation twice"),
                }
            }
        };
        let rpo = record.rpo.unwrap_or_default().as_secs_f64();
        let rto = record.rto.unwrap_or_default().as_secs_f64();
        let point_of = |p: &Option<ConsistencyPoint>| p.as_ref().map_or("none".to_string(), |p| p.0.clone());
        ctx.say(format!("reverse resync B -> A, then the planned switch back: app stopped at site B at {}", self.wl.short_point(&point_of(&record.expected_point))));
        ctx.say(format!(
            "final snapshot {} sent to A ({} in all B -> A), A reverted to it, app started at A at {}",
            record.restored_snapshot.as_deref().unwrap_or("-"),
            human_bytes(record.bytes_transferred),
            self.wl.short_point(&point_of(&record.recovered_point))
        ));
        let plan = ctx.catalog.dr_plan(&ctx.app.name).context("reading the DR plan")?;
        let mut protected_again = plan.as_ref().is_some_and(|p| p.state == DrState::Mirrored && p.active_site == Site::A);
        if let Some(plan) = &plan {
            for pair in &plan.volumes {
                let Some(uuid) = pair.relationship_uuid.as_deref() else {
                    protected_again = false;
                    continue;
                };
                let r = ctx.dr_b.replication.relationship(uuid).await.with_context(|| format!("reading relationship {uuid}"))?;
                protected_again &= r.state == MirrorState::Snapmirrored && r.source.svm == SVM && r.destination.svm == SVM_B;
            }
        }
        ctx.say(format!("mirrors A -> B again: {protected_again}"));
        ctx.say(format!("failback RPO {rpo:.2} s (planned: nothing lost), RTO {rto:.2} s (start -> app verified at site A)"));
        let ok = record.state == FailoverState::Complete && record.verified && record.recovered_point == record.expected_point && protected_again;
        ctx.report.failback = Some(FailbackSummary {
            rpo_s: rpo,
            rto_s: rto,
            verified: false,
            workflow_verified: record.verified,
            discarded_snapshots: divergence.as_ref().map_or(0, |d| d.snapshots.len()),
            discarded_bytes: divergence.as_ref().and_then(|d| d.bytes),
            bytes_transferred: record.bytes_transferred,
            final_snapshot: record.restored_snapshot.clone(),
            expected_point: record.expected_point.as_ref().map(|p| p.0.clone()),
            recovered_point: record.recovered_point.as_ref().map(|p| p.0.clone()),
            commits_brought_back: made_at_b,
            protected_again,
            check: serde_json::Value::Null,
        });
        let summary = format!("back at site A (RTO {rto:.2} s), {made_at_b} commits made at B came with it; mirrors A -> B again: {protected_again}");
        ctx.dr.failback = Some(*record);
        Ok(Verdict { ok, summary })
    }

    // ---- 12. verify site A ----

    async fn verify_site_a(&mut self) -> anyhow::Result<Verdict> {
        let record = self.ctx.dr.failback.clone().ok_or_else(|| anyhow!("no failback to verify"))?;
        let point = record.expected_point.clone().ok_or_else(|| anyhow!("the failback recorded no point"))?;
        let check = self.wl.verify_site(&self.ctx, Site::A, &point).await?;
        let verified = check.ok && record.verified;
        if let Some(f) = self.ctx.report.failback.as_mut() {
            f.verified = verified;
            f.check = check.detail.clone();
        }
        Ok(Verdict { ok: verified, summary: check.summary })
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
        if let Some(f) = &r.failover {
            o.say(&format!("  failover: RPO {:.2} s, RTO {:.2} s, verified {}", f.rpo_s, f.rto_s, f.verified));
        }
        if let Some(f) = &r.failback {
            o.say(&format!("  failback: RPO {:.2} s, RTO {:.2} s, verified {}", f.rpo_s, f.rto_s, f.verified));
        }
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
