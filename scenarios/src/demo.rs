//! `stasis demo`: the first thing a new user runs. Everything is embedded: a simulated ONTAP
//! cluster (site A) in this process on 127.0.0.1, two volumes, the simulated database (simdb)
//! with its data on one volume and its write-ahead log on the other, a SQLite catalog in a
//! temporary directory, and the real orchestrator talking to the simulator over ONTAP REST.
//!
//! The walk-through: discover -> protect -> backup under write load -> damage -> restore in
//! place -> crash-consistent vs application-consistent side by side. Every claim the demo
//! prints is checked against a reference model of what the database acknowledged, and the
//! report's `ok` is true only if every check passed.
//!
//! What is not built yet is said, not faked: disaster recovery (site B, SnapMirror) is not
//! built. The real-MariaDB walk-through is `demo_mariadb.rs`; this one runs when MariaDB or
//! FUSE is not available here (`DemoOptions::why_simdb` says why) or when asked for.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use ontap_client::{OntapClient, OntapConfig, SecretString, TlsTrust};
use ontap_sim::model::cluster::{Selector, VolumeCreate};
use ontap_sim::{ClusterConfig, RunningSim, SimConfig};
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use stasis_core::catalog::Catalog;
use stasis_core::clock::SystemClock;
use stasis_core::domain::{AppKind, AppSpec, BackupRecord, BackupState, Consistency, Policy, Schedule};
use stasis_core::plugin::AppPlugin;
use stasis_core::plugins::simdb::{consistency_point, parse_consistency_point, read_recovered, CommitError, RecoveredDb, RecoveryKind, SimDb, SimDbVolumes};
use stasis_core::sqlite_catalog::SqliteCatalog;
use stasis_core::storage::VolumeInfo;
use stasis_core::workflow::{next_due, Orchestrator};

use crate::sim_data::SimVolumeData;

// ---------------------------------------------------------------------------------------
// Embedded defaults
// ---------------------------------------------------------------------------------------

const CLUSTER_NAME: &str = "sim-a";
const SVM: &str = "svm0";
const AGGREGATE: &str = "aggr1";
const USERNAME: &str = "admin";
const APP_NAME: &str = "bank";
const DATA_VOLUME: &str = "bank_data";
const LOG_VOLUME: &str = "bank_log";
/// A volume in the same SVM that does not belong to the app (discovery shows the difference).
const OTHER_VOLUME: &str = "web_content";
const DB_VOLUME_SIZE: u64 = 1 << 30;
const OTHER_VOLUME_SIZE: u64 = 10 << 30;
const OTHER_VOLUME_FILL: u64 = 256 << 20;
/// Accounts in the bank (3 data pages: a page can be written back ahead of the log).
const N_ACCOUNTS: u32 = 1200;
const INITIAL_BALANCE: u64 = 1000;
/// The "dropped table": these accounts are zeroed by the damage step.
const DAMAGE_FIRST: u32 = 100;
const DAMAGE_LAST: u32 = 299;
const POLICY_NAME: &str = "hourly";
const POLICY_CRON: &str = "0 * * * *";
const POLICY_KEEP: u32 = 24;
/// The load commits this many transfers, then sleeps `LOAD_PAUSE`.
const LOAD_BATCH: u32 = 16;
const LOAD_PAUSE: Duration = Duration::from_millis(1);
/// Chance of one step of background I/O (WAL flush, page write-back, checkpoint) per commit.
const LOAD_BACKGROUND_IO: f64 = 0.5;
/// The load runs this long before the first backup, so there is something in flight.
const LOAD_WARM_UP: Duration = Duration::from_millis(100);
/// Pause between two backups of the backup step.
const BACKUP_GAP: Duration = Duration::from_millis(20);

pub const STEP_NAMES: [&str; 6] = ["discover", "protect", "backup", "damage", "restore", "crash_vs_app"];

#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Application-consistent backups taken under load in the backup step.
    pub backups: u32,
    /// Rounds of the crash-vs-app comparison (one crash snapshot and one backup each).
    pub crash_rounds: u32,
    /// The database's freeze bound.
    pub freeze_timeout: Duration,
    /// Seeds the load and the simulator's uuids.
    pub seed: u64,
    /// Leave the simulator serving at the end (returned in [`DemoRun::kept`]).
    pub keep_running: bool,
    /// Why the simulated database runs rather than MariaDB (said in the intro and the report).
    pub why_simdb: Option<String>,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions { backups: 20, crash_rounds: 10, freeze_timeout: Duration::from_secs(1), seed: 1, keep_running: false, why_simdb: None }
    }
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
    pub workload: &'static str,
    pub workload_note: String,
    pub cluster: ClusterSummary,
    pub volumes: Vec<VolumeRow>,
    pub steps: Vec<StepReport>,
    /// Freeze windows of the backup step, as the database measured them.
    pub freeze_window_ms: Option<FreezeStats>,
    pub backup: Option<BackupSummary>,
    pub damage: Option<DamageSummary>,
    pub restore: Option<RestoreSummary>,
    pub crash_vs_app: Option<CrashVsApp>,
    /// Disaster recovery (site B, SnapMirror) is not built yet: always null for now.
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
}

#[derive(Clone, Debug, Serialize)]
pub struct BackupSummary {
    pub taken: u32,
    pub application_consistent: u32,
    pub commits_during: u64,
    pub commits_that_met_a_freeze: u64,
    pub backup_seconds_p50: f64,
    pub last_backup_id: String,
    pub last_consistency_point: String,
    /// (volume, snapshot name)
    pub last_snapshots: Vec<(String, String)>,
    pub retention_expired: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct DamageSummary {
    pub accounts_zeroed: String,
    pub txid: u64,
    pub total_before: u128,
    pub total_after: u128,
    pub commits_after_last_backup: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct RestoreSummary {
    pub backup_id: String,
    pub consistency_point: String,
    pub recovered_point: Option<String>,
    pub needed_crash_recovery: Option<bool>,
    pub values_exact: bool,
    pub total_after: u128,
    pub commits_discarded: u64,
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
    /// Recovered exactly the claimed point, values equal to what the database acknowledged.
    pub exact: u32,
    pub needed_crash_recovery: u32,
    /// Restores that lost at least one commit acknowledged before the snapshot.
    pub lost_acknowledged_commits: u32,
    pub max_commits_lost: u64,
    /// Restores whose values match no state the database ever acknowledged.
    pub torn: u32,
    /// Restores in which the database itself found something wrong.
    pub with_anomalies: u32,
    pub did_not_open: u32,
    pub results: Vec<RestoreOutcome>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RestoreOutcome {
    pub round: u32,
    pub snapshot: String,
    /// App: the consistency point read under the lock. Crash: the last txid acknowledged
    /// when the snapshot was requested (what a backup "as of now" would have to hold).
    pub claimed_point: String,
    pub recovered_point: Option<String>,
    pub needed_crash_recovery: Option<bool>,
    pub wal_records_replayed: u64,
    pub wal_bytes_discarded: u64,
    /// Acknowledged before the snapshot, missing from the restore (a lower bound for crash
    /// snapshots: more commits may have been acknowledged while the snapshot was taken).
    pub lost_acknowledged_commits: u64,
    pub values_match_recovered_point: bool,
    /// When the values are not those of the recovered point: the first txid whose
    /// acknowledged state they equal, if any.
    pub values_match_txid: Option<u64>,
    pub torn: bool,
    pub anomalies: Vec<String>,
    pub error: Option<String>,
    pub exact: bool,
}

/// What is left running with `--keep-running`.
pub struct KeptSim {
    pub sim: RunningSim,
    pub username: String,
    /// Generated for this run; printed only when the user asked to keep the simulator.
    pub password: String,
    /// (name, uuid) of the app's volumes, for example commands.
    pub volumes: Vec<(String, String)>,
}

pub struct DemoRun {
    pub report: DemoReport,
    pub kept: Option<KeptSim>,
}

// ---------------------------------------------------------------------------------------
// The reference model and the write load
// ---------------------------------------------------------------------------------------

/// What the database acknowledged: the values at `base_txid` and every commit after it.
struct Reference {
    base_txid: u64,
    base: Vec<u64>,
    log: Vec<(u64, Vec<(u32, u64)>)>,
    /// Commits whose txid did not follow the previous one (never expected).
    gaps: u64,
}

impl Reference {
    fn new(base: Vec<u64>) -> Self {
        Reference { base_txid: 0, base, log: Vec::new(), gaps: 0 }
    }

    fn last_txid(&self) -> u64 {
        self.log.last().map_or(self.base_txid, |(t, _)| *t)
    }

    fn push(&mut self, txid: u64, writes: Vec<(u32, u64)>) {
        if txid != self.last_txid() + 1 {
            self.gaps += 1;
        }
        self.log.push((txid, writes));
    }

    /// The values after `txid`, if the database acknowledged it on this timeline.
    fn at(&self, txid: u64) -> Option<Vec<u64>> {
        if txid < self.base_txid || txid > self.last_txid() {
            return None;
        }
        let mut values = self.base.clone();
        for (t, writes) in &self.log {
            if *t > txid {
                break;
            }
            for &(key, value) in writes {
                values[key as usize] = value;
            }
        }
        Some(values)
    }

    /// An in-place restore cut the timeline back to `txid`: later txids will be reused.
    fn truncate(&mut self, txid: u64) {
        self.log.retain(|(t, _)| *t <= txid);
    }

    /// The first txid whose state equals `values`, if any (one pass, counting mismatches).
    fn first_match(&self, values: &[u64]) -> Option<u64> {
        if values.len() != self.base.len() {
            return None;
        }
        let mut state = self.base.clone();
        let mut mismatches = state.iter().zip(values).filter(|(a, b)| a != b).count();
        if mismatches == 0 {
            return Some(self.base_txid);
        }
        for (t, writes) in &self.log {
            for &(key, value) in writes {
                let k = key as usize;
                let was = state[k] != values[k];
                state[k] = value;
                let is = state[k] != values[k];
                match (was, is) {
                    (true, false) => mismatches -= 1,
                    (false, true) => mismatches += 1,
                    _ => {}
                }
            }
            if mismatches == 0 {
                return Some(*t);
            }
        }
        None
    }
}

/// What the load did so far, readable while it runs.
#[derive(Debug, Default)]
struct LoadCounters {
    commits: AtomicU64,
    /// Commit attempts refused because the database was frozen (the client retries).
    met_a_freeze: AtomicU64,
}

impl LoadCounters {
    fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }
    fn met_a_freeze(&self) -> u64 {
        self.met_a_freeze.load(Ordering::Relaxed)
    }
}

/// Bank transfers committed continuously by a background task, each recorded in the
/// reference model under the same lock as the commit (so the model never lags).
struct Load {
    stop: Arc<AtomicBool>,
    counters: Arc<LoadCounters>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(db: Arc<SimDb>, reference: Arc<Mutex<Reference>>, seed: u64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(LoadCounters::default());
        let (flag, count) = (stop.clone(), counters.clone());
        let task = tokio::spawn(async move {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let n_keys = db.n_keys();
            while !flag.load(Ordering::Relaxed) {
                for _ in 0..LOAD_BATCH {
                    let (from, to, amount) = (rng.gen_range(0..n_keys), rng.gen_range(0..n_keys), rng.gen_range(1..200));
                    let committed = {
                        let mut reference = reference.lock();
                        db.try_transfer(from, to, amount).map(|(txid, writes)| reference.push(txid, writes))
                    };
                    match committed {
                        Ok(()) => {
                            count.commits.fetch_add(1, Ordering::Relaxed);
                            if rng.gen_bool(LOAD_BACKGROUND_IO) {
                                let _ = db.background_step(&mut rng);
                            }
                        }
                        Err(CommitError::Frozen) => {
                            count.met_a_freeze.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                tokio::time::sleep(LOAD_PAUSE).await;
            }
        });
        Load { stop, counters, task: Some(task) }
    }

    /// Stop the load and wait for its task to end.
    async fn stop(mut self) -> Arc<LoadCounters> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.counters.clone()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(task) = self.task.take() {
            task.abort();
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

fn grouped(n: u128) -> String {
    let digits = n.to_string();
    let mut groups: Vec<&str> = digits.as_bytes().rchunks(3).map(|g| std::str::from_utf8(g).unwrap_or_default()).collect();
    groups.reverse();
    groups.join(",")
}

fn total(values: &[u64]) -> u128 {
    values.iter().map(|&v| u128::from(v)).sum()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Nearest-rank percentile of sorted values.
pub(crate) fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
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
// The demo
// ---------------------------------------------------------------------------------------

/// One step's verdict: whether its checks passed, and a one-line summary.
struct Verdict {
    ok: bool,
    summary: String,
}

struct Demo<'a> {
    opts: DemoOptions,
    obs: &'a dyn Observer,
    sim: Option<RunningSim>,
    password: String,
    data: Arc<SimVolumeData>,
    db: Arc<SimDb>,
    plugin: Arc<dyn AppPlugin>,
    storage: Arc<OntapClient>,
    catalog: Arc<SqliteCatalog>,
    orchestrator: Orchestrator,
    app: AppSpec,
    policy: Policy,
    /// The app's volumes as discovered (data, log).
    app_volumes: Vec<VolumeInfo>,
    reference: Arc<Mutex<Reference>>,
    load: Option<Load>,
    load_seed: u64,
    rng: ChaCha8Rng,
    last_backup: Option<BackupRecord>,
    report: DemoReport,
    _catalog_dir: tempfile::TempDir,
}

/// Run the whole demo. `Err` only when the demo could not be set up at all; a failing step
/// is reported in [`DemoReport::steps`] and makes `ok` false.
pub async fn run(opts: &DemoOptions, obs: &dyn Observer) -> anyhow::Result<DemoRun> {
    validate(opts)?;
    let started = Instant::now();
    let mut demo = Demo::setup(opts.clone(), obs).await?;
    demo.intro();
    let mut failed = None;
    for (index, &name) in STEP_NAMES.iter().enumerate() {
        if let Some(first) = failed {
            demo.report.steps.push(StepReport { name, ok: false, seconds: 0.0, summary: String::new(), error: Some(format!("not run: step {first} could not run")) });
            continue;
        }
        obs.say("");
        obs.say(&format!("[{}/{}] {}", index + 1, STEP_NAMES.len(), demo.headline(name)));
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
        demo.report.steps.push(step);
    }
    if let Some(load) = demo.load.take() {
        load.stop().await;
    }
    obs.say("");
    obs.say("[-] failover: disaster recovery to site B (SnapMirror, a second simulated cluster) is not built yet; nothing is shown.");
    demo.report.ok = demo.report.steps.iter().all(|s| s.ok) && demo.reference.lock().gaps == 0;
    demo.report.seconds = started.elapsed().as_secs_f64();
    demo.summary();
    let report = demo.report.clone();
    let sim = demo.sim.take().ok_or_else(|| anyhow!("the simulator handle was lost"))?;
    let kept = if opts.keep_running {
        Some(KeptSim {
            sim,
            username: USERNAME.into(),
            password: demo.password.clone(),
            volumes: demo.app_volumes.iter().map(|v| (v.name.clone(), v.uuid.clone())).collect(),
        })
    } else {
        sim.shutdown().await;
        None
    };
    Ok(DemoRun { report, kept })
}

impl<'a> Demo<'a> {
    async fn setup(opts: DemoOptions, obs: &'a dyn Observer) -> anyhow::Result<Demo<'a>> {
        let password = format!("demo-{:016x}", rand::random::<u64>());
        let sim = ontap_sim::spawn(SimConfig {
            cluster: ClusterConfig { name: CLUSTER_NAME.into(), svms: vec![SVM.into()], aggregate: AGGREGATE.into(), seed: opts.seed, ..ClusterConfig::default() },
            password: password.clone(),
            username: USERNAME.into(),
            ..SimConfig::default()
        })
        .await
        .context("starting the simulated ONTAP cluster on 127.0.0.1")?;
        let create = |name: &str, path: &str, size: u64| {
            let req = VolumeCreate {
                name: name.into(),
                svm: Selector { name: Some(SVM.into()), uuid: None },
                aggregates: vec![Selector { name: Some(AGGREGATE.into()), uuid: None }],
                size: Some(size),
                junction_path: Some(path.into()),
                ..Default::default()
            };
            sim.sim().transact(|s| s.create_volume(req, chrono::Utc::now())).map_err(|e| anyhow!("{e}")).with_context(|| format!("creating volume {name} on the simulator"))
        };
        let data_uuid = create(DATA_VOLUME, "/bank/data", DB_VOLUME_SIZE)?;
        let log_uuid = create(LOG_VOLUME, "/bank/log", DB_VOLUME_SIZE)?;
        let other_uuid = create(OTHER_VOLUME, "/web", OTHER_VOLUME_SIZE)?;
        sim.sim().fill(&other_uuid, "site/assets.bin", OTHER_VOLUME_FILL, opts.seed).map_err(|e| anyhow!("{e}")).context("writing sample data to the web_content volume")?;

        let data = Arc::new(SimVolumeData::new(sim.sim().clone()));
        let initial = vec![INITIAL_BALANCE; N_ACCOUNTS as usize];
        let db = Arc::new(SimDb::create(data.clone(), SimDbVolumes::split(data_uuid, log_uuid), &initial, true, Arc::new(SystemClock)).context("creating the simulated database on the simulator's volumes")?);
        let plugin: Arc<dyn AppPlugin> = db.clone();

        let catalog_dir = tempfile::Builder::new().prefix("stasis-demo-").tempdir().context("creating a temporary directory for the catalog")?;
        let catalog_path = catalog_dir.path().join("catalog.sqlite");
        let catalog = Arc::new(SqliteCatalog::open(&catalog_path).with_context(|| format!("opening the catalog {}", catalog_path.display()))?);
        let storage = Arc::new(OntapClient::new(client_config(&sim.base_url(), &password)).context("configuring the ONTAP REST client")?);
        let orchestrator = Orchestrator::new(storage.clone(), catalog.clone(), Arc::new(SystemClock));
        let app = AppSpec {
            name: APP_NAME.into(),
            kind: AppKind::Simdb,
            svm: SVM.into(),
            volumes: vec![DATA_VOLUME.into(), LOG_VOLUME.into()],
            freeze_timeout: opts.freeze_timeout,
        };
        let policy = Policy { name: POLICY_NAME.into(), schedule: Schedule::Cron { expr: POLICY_CRON.into() }, keep_last: Some(POLICY_KEEP), max_age: None };
        let report = DemoReport {
            ok: false,
            workload: "simdb",
            workload_note: format!(
                "the simulated database (simdb), a bank of accounts whose transfers keep the total constant; {}",
                opts.why_simdb.as_deref().unwrap_or("chosen by the caller")
            ),
            cluster: ClusterSummary { name: CLUSTER_NAME, site: "A", url: sim.base_url(), svm: SVM },
            volumes: Vec::new(),
            steps: Vec::new(),
            freeze_window_ms: None,
            backup: None,
            damage: None,
            restore: None,
            crash_vs_app: None,
            failover: None,
            not_built: vec!["failover: disaster recovery to site B (SnapMirror)", "web dashboard"],
            seconds: 0.0,
        };
        Ok(Demo {
            load_seed: opts.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            rng: ChaCha8Rng::seed_from_u64(opts.seed),
            opts,
            obs,
            sim: Some(sim),
            password,
            data,
            db,
            plugin,
            storage,
            catalog,
            orchestrator,
            app,
            policy,
            app_volumes: Vec::new(),
            reference: Arc::new(Mutex::new(Reference::new(initial))),
            load: None,
            last_backup: None,
            report,
            _catalog_dir: catalog_dir,
        })
    }

    fn sim(&self) -> &RunningSim {
        self.sim.as_ref().expect("the simulator runs until the demo returns")
    }

    fn say(&self, line: impl AsRef<str>) {
        match line.as_ref() {
            "" => self.obs.say(""),
            line => self.obs.say(&format!("      {line}")),
        }
    }

    fn intro(&self) {
        let o = self.obs;
        o.say("Stasis demo: application-consistent backup and restore on (simulated) NetApp ONTAP");
        o.say("");
        o.say(&format!("  workload  simdb, the SIMULATED database: a bank of {N_ACCOUNTS} accounts; transfers keep the total"));
        o.say(&format!("            constant. Data file on volume {DATA_VOLUME}, write-ahead log on {LOG_VOLUME}. It acknowledges"));
        o.say("            commits before they are flushed, as a tuned production database does.");
        o.say(&format!("            Why not MariaDB: {}.", self.opts.why_simdb.as_deref().unwrap_or("chosen by the caller")));
        o.say("            Not built yet: disaster recovery (site B, SnapMirror).");
        o.say(&format!("  array     simulated ONTAP cluster {CLUSTER_NAME} (site A), in this process, ONTAP REST at {}", self.sim().base_url()));
        o.say(&format!("  catalog   SQLite in a temporary directory (removed at exit); freeze bound {} ms", self.opts.freeze_timeout.as_millis()));
    }

    fn headline(&self, step: &str) -> String {
        match step {
            "discover" => format!("discover: the volumes of SVM {SVM}, read through the ONTAP REST client"),
            "protect" => format!("protect: record app {APP_NAME} and an SLA policy in the catalog"),
            "backup" => format!("backup under write load: {} application-consistent backups while transfers commit", self.opts.backups),
            "damage" => format!("damage: zero accounts {DAMAGE_FIRST}-{DAMAGE_LAST} (a \"dropped table\"), committed like any write"),
            "restore" => "restore in place to the last backup, then verify against what the database acknowledged".into(),
            "crash_vs_app" => format!("crash-consistent vs application-consistent, {} rounds under write load", self.opts.crash_rounds),
            other => other.to_string(),
        }
    }

    // ---- 1. discover ----

    async fn discover(&mut self) -> anyhow::Result<Verdict> {
        // The client's Storage seam has no "list every volume" call yet: the names come from
        // the simulator, every detail below is read over ONTAP REST by the client.
        let names: Vec<String> = self.sim().sim().read(|s| s.volumes_in_order().into_iter().filter(|v| v.svm.name == SVM).map(|v| v.name.clone()).collect());
        let infos = self.storage.volumes_by_name(SVM, &names).await.context("reading the SVM's volumes over ONTAP REST")?;
        let role = |name: &str| match name {
            DATA_VOLUME => Some("data"),
            LOG_VOLUME => Some("log"),
            _ => None,
        };
        self.say(format!("{:<13} {:<14} {:>8} {:>9} {:>9}  {}", "VOLUME", "JUNCTION PATH", "SIZE", "USED", "SNAPSHOTS", "APP"));
        for v in &infos {
            let app = role(&v.name).map_or("-".to_string(), |r| format!("{APP_NAME} ({r})"));
            self.say(format!(
                "{:<13} {:<14} {:>8} {:>9} {:>9}  {}",
                v.name,
                v.junction_path.as_deref().unwrap_or("-"),
                human_bytes(v.size_bytes),
                human_bytes(v.used_bytes),
                v.n_snapshots,
                app
            ));
        }
        self.say("(volume names enumerated in-process: the client has no list call yet; details over REST)");
        self.report.volumes = infos
            .iter()
            .map(|v| VolumeRow { name: v.name.clone(), junction_path: v.junction_path.clone(), size_bytes: v.size_bytes, used_bytes: v.used_bytes, snapshots: v.n_snapshots, app_role: role(&v.name) })
            .collect();
        let mut app_volumes = Vec::new();
        for name in &self.app.volumes {
            let v = infos.iter().find(|v| &v.name == name).ok_or_else(|| anyhow!("the app's volume {name} was not discovered"))?;
            app_volumes.push(v.clone());
        }
        // Online, writable and mounted; the data volume holds the database's files already
        // (the log volume's WAL is empty until the first commit is flushed).
        let usable = app_volumes.iter().all(|v| v.online && v.writable && v.junction_path.is_some()) && app_volumes.first().is_some_and(|v| v.used_bytes > 0);
        self.app_volumes = app_volumes;
        Ok(Verdict { ok: usable, summary: format!("{} volumes, 2 belong to app {APP_NAME} (online, writable, mounted)", infos.len()) })
    }

    // ---- 2. protect ----

    async fn protect(&mut self) -> anyhow::Result<Verdict> {
        self.catalog.put_policy(&self.policy).context("storing the policy")?;
        self.catalog.put_app(&self.app).context("storing the app")?;
        self.catalog.set_app_policy(APP_NAME, Some(POLICY_NAME)).context("assigning the policy")?;
        let app_back = self.catalog.app(APP_NAME).context("reading the app back")?;
        let policy_back = self.catalog.policy(POLICY_NAME).context("reading the policy back")?;
        let assigned = self.catalog.app_policy(APP_NAME).context("reading the assignment back")?;
        let ok = app_back.as_ref() == Some(&self.app) && policy_back.as_ref() == Some(&self.policy) && assigned.as_deref() == Some(POLICY_NAME);
        let next = next_due(&self.policy.schedule, None, chrono::Utc::now()).map_err(|e| anyhow!(e)).context("computing the next scheduled backup")?;
        self.say(format!("app     {APP_NAME}: kind simdb, SVM {SVM}, volumes {DATA_VOLUME} + {LOG_VOLUME} (one consistency group), freeze bound {} ms", self.app.freeze_timeout.as_millis()));
        self.say(format!("policy  {POLICY_NAME}: cron \"{POLICY_CRON}\", keep the last {POLICY_KEEP} backups"));
        self.say(format!("next scheduled backup {} UTC (this demo takes its backups now, on demand)", next.format("%H:%M")));
        Ok(Verdict { ok, summary: format!("app {APP_NAME} and policy {POLICY_NAME} (hourly, keep {POLICY_KEEP}) stored and read back") })
    }

    // ---- 3. backup under load ----

    async fn backup(&mut self) -> anyhow::Result<Verdict> {
        self.load = Some(Load::start(self.db.clone(), self.reference.clone(), self.load_seed));
        tokio::time::sleep(LOAD_WARM_UP).await;
        let freezes_before = self.db.freeze_log().len();
        let txid_before = self.reference.lock().last_txid();
        let n = self.opts.backups;
        let mut durations = Vec::new();
        let mut app_consistent = 0;
        let mut problems = Vec::new();
        for i in 0..n {
            self.obs.progress("backups", u64::from(i), u64::from(n));
            let started = Instant::now();
            let outcome = self.orchestrator.backup(&self.app, self.plugin.clone()).await.with_context(|| format!("backup {} of {n}", i + 1))?;
            durations.push(started.elapsed().as_secs_f64());
            let record = outcome.record;
            let point = record.evidence.consistency_point.as_ref().and_then(parse_consistency_point);
            let known = point.is_some_and(|p| self.reference.lock().at(p).is_some());
            let holds = record.evidence.holds(&record.snapshots);
            if record.state == BackupState::Complete && record.consistency == Some(Consistency::Application) && holds.is_ok() && known {
                app_consistent += 1;
            } else {
                problems.push(format!("backup {} is {:?}/{:?}, evidence {holds:?}, point {point:?} acknowledged: {known}", record.id, record.state, record.consistency));
            }
            self.last_backup = Some(record);
            tokio::time::sleep(BACKUP_GAP).await;
        }
        self.obs.progress("backups", u64::from(n), u64::from(n));
        let txid_after = self.reference.lock().last_txid();
        let freezes: Vec<_> = self.db.freeze_log().into_iter().skip(freezes_before).collect();
        let now = tokio::time::Instant::now();
        let mut windows: Vec<f64> = freezes.iter().filter(|f| f.point.is_some()).map(|f| ms(f.duration(now))).collect();
        windows.sort_by(|a, b| a.total_cmp(b));
        let bound = ms(self.opts.freeze_timeout);
        let within_bound = freezes.iter().all(|f| f.ended.is_some() && ms(f.duration(now)) <= bound);
        let stats = FreezeStats { p50: percentile(&windows, 0.5), p99: percentile(&windows, 0.99), max: windows.last().copied().unwrap_or(0.0), samples: windows.len(), bound_ms: self.opts.freeze_timeout.as_millis() as u64 };
        durations.sort_by(|a, b| a.total_cmp(b));
        let retention = self.orchestrator.apply_retention(&self.app, &self.policy).await.context("applying the retention policy")?;
        let last = self.last_backup.clone().ok_or_else(|| anyhow!("no backup was taken"))?;
        let last_point = last.evidence.consistency_point.clone().map(|p| p.0).unwrap_or_default();
        let met_freeze = self.load.as_ref().map_or(0, |l| l.counters.met_a_freeze());

        self.say(format!("{app_consistent}/{n} complete and application-consistent (quiesce -> one consistency-group snapshot -> thaw)"));
        self.say(format!("commits during the backups: {} (txid {} -> {}); commit attempts that met a freeze and retried: {met_freeze}", txid_after - txid_before, txid_before, txid_after));
        self.say(format!(
            "freeze window, as the database measured it: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (bound {} ms)",
            stats.p50, stats.p99, stats.max, stats.bound_ms
        ));
        self.say(format!("backup workflow time: p50 {:.1} ms (catalog writes and verification are outside the freeze)", percentile(&durations, 0.5) * 1000.0));
        self.say(format!("last backup {}: consistency point {last_point}", last.id));
        for s in &last.snapshots {
            self.say(format!("  snapshot {} on {} (created {})", last.snapshot_name, s.volume_name, s.create_time.format("%H:%M:%S")));
        }
        self.say(format!("retention ({POLICY_KEEP} kept): {} expired", retention.expired.len()));
        for p in &problems {
            self.say(format!("PROBLEM: {p}"));
        }
        if !within_bound {
            self.say(format!("PROBLEM: a freeze exceeded the bound of {} ms or never ended", stats.bound_ms));
        }
        let ok = app_consistent == n && within_bound && stats.samples == n as usize;
        let summary = format!("{app_consistent}/{n} application-consistent under load; freeze p50 {:.2} ms, p99 {:.2} ms", stats.p50, stats.p99);
        self.report.freeze_window_ms = Some(stats);
        self.report.backup = Some(BackupSummary {
            taken: n,
            application_consistent: app_consistent,
            commits_during: txid_after - txid_before,
            commits_that_met_a_freeze: met_freeze,
            backup_seconds_p50: percentile(&durations, 0.5),
            last_backup_id: last.id.clone(),
            last_consistency_point: last_point,
            last_snapshots: last.snapshots.iter().map(|s| (s.volume_name.clone(), last.snapshot_name.clone())).collect(),
            retention_expired: retention.expired.len(),
        });
        Ok(Verdict { ok, summary })
    }

    // ---- 4. damage ----

    async fn damage(&mut self) -> anyhow::Result<Verdict> {
        let load = self.load.take().ok_or_else(|| anyhow!("the write load is not running"))?;
        let stats = load.stop().await;
        self.say(format!("write load stopped after {} transfers ({} commit attempts met a freeze and retried)", stats.commits(), stats.met_a_freeze()));
        let last = self.last_backup.clone().ok_or_else(|| anyhow!("no backup to compare with"))?;
        let point = last.evidence.consistency_point.as_ref().and_then(parse_consistency_point).ok_or_else(|| anyhow!("the last backup has no consistency point"))?;
        let before = self.db.values().ok_or_else(|| anyhow!("the database is not running"))?;
        let writes: Vec<(u32, u64)> = (DAMAGE_FIRST..=DAMAGE_LAST).map(|k| (k, 0)).collect();
        let txid = {
            let mut reference = self.reference.lock();
            let txid = self.db.try_commit(&writes).map_err(|e| anyhow!("{e}")).context("committing the damage")?;
            reference.push(txid, writes.clone());
            txid
        };
        let after = self.db.values().ok_or_else(|| anyhow!("the database is not running"))?;
        let at_backup = self.reference.lock().at(point).ok_or_else(|| anyhow!("the reference lost txid {point}"))?;
        let zeroed = (DAMAGE_FIRST..=DAMAGE_LAST).all(|k| after[k as usize] == 0);
        let differs = after != at_backup;
        let (total_before, total_after) = (total(&before), total(&after));
        let sample = DAMAGE_FIRST as usize + 7;
        self.say(format!("one transaction, txid {txid}: accounts {DAMAGE_FIRST}-{DAMAGE_LAST} set to 0 (account {sample}: {} -> 0)", before[sample]));
        self.say(format!("sum of all balances {} -> {}: the books no longer balance", grouped(total_before), grouped(total_after)));
        self.say(format!("{} commits since the last backup (txid {} -> {txid}), the damage included", txid - point, point));
        self.report.damage = Some(DamageSummary { accounts_zeroed: format!("{DAMAGE_FIRST}-{DAMAGE_LAST}"), txid, total_before, total_after, commits_after_last_backup: txid - point });
        Ok(Verdict { ok: zeroed && differs && total_after < total_before, summary: format!("accounts {DAMAGE_FIRST}-{DAMAGE_LAST} zeroed at txid {txid}; total {} -> {}", grouped(total_before), grouped(total_after)) })
    }

    // ---- 5. restore in place ----

    async fn restore(&mut self) -> anyhow::Result<Verdict> {
        let last = self.last_backup.clone().ok_or_else(|| anyhow!("no backup to restore"))?;
        let point = last.evidence.consistency_point.as_ref().and_then(parse_consistency_point).ok_or_else(|| anyhow!("the last backup has no consistency point"))?;
        let before_txid = self.reference.lock().last_txid();
        let recoveries_before = self.db.recoveries().len();
        let record = self.orchestrator.restore_in_place(&self.app, &last.id, self.plugin.clone()).await.with_context(|| format!("restoring backup {} in place", last.id))?;
        let expected = self.reference.lock().at(point).ok_or_else(|| anyhow!("the reference lost txid {point}"))?;
        let values = self.db.values().ok_or_else(|| anyhow!("the database did not come back up after the restore"))?;
        let txid = self.db.last_committed_txid().unwrap_or_default();
        let recovered = self.db.recoveries().into_iter().skip(recoveries_before).rev().find(|r| r.kind == RecoveryKind::InPlace).and_then(|r| r.outcome.ok());
        let values_exact = values == expected && txid == point;
        let clean = recovered.as_ref().is_some_and(|r| !r.needed_crash_recovery && r.anomalies.is_empty() && r.last_txid == point);
        let point_matches = record.recovered_point.as_ref() == Some(&consistency_point(point));
        let balanced = total(&values) == u128::from(N_ACCOUNTS) * u128::from(INITIAL_BALANCE);
        let matching = values.iter().zip(&expected).filter(|(a, b)| a == b).count();
        self.say(format!("SnapRestore of {DATA_VOLUME} + {LOG_VOLUME} (their consistency group) to {}", last.snapshot_name));
        self.say(format!(
            "recovered {}: {matching}/{N_ACCOUNTS} accounts equal what the database had acknowledged at its consistency point {}",
            record.recovered_point.as_ref().map_or("nothing".into(), |p| p.0.clone()),
            consistency_point(point)
        ));
        match &recovered {
            Some(r) => self.say(format!(
                "crash recovery needed: {} ({} WAL records replayed, {} bytes discarded, {} anomalies)",
                if r.needed_crash_recovery { "YES" } else { "no" },
                r.n_replayed,
                r.discarded_wal_bytes,
                r.anomalies.len()
            )),
            None => self.say("PROBLEM: the database recorded no successful in-place recovery"),
        }
        self.say(format!("sum of all balances {} ({})", grouped(total(&values)), if balanced { "balanced again" } else { "STILL WRONG" }));
        self.say(format!("{} commits after the backup were discarded, as an in-place restore does", before_txid - point));
        // The timeline is cut back: txids after the point will be reused.
        self.reference.lock().truncate(point);
        let ok = values_exact && clean && point_matches && balanced;
        self.report.restore = Some(RestoreSummary {
            backup_id: last.id.clone(),
            consistency_point: consistency_point(point).0,
            recovered_point: record.recovered_point.as_ref().map(|p| p.0.clone()),
            needed_crash_recovery: record.needed_crash_recovery,
            values_exact,
            total_after: total(&values),
            commits_discarded: before_txid - point,
        });
        let summary = if ok { format!("exact at txid={point}, no crash recovery, books balance") } else { format!("NOT exact at txid={point} (values exact: {values_exact}, clean recovery: {clean}, point recorded: {point_matches})") };
        Ok(Verdict { ok, summary })
    }

    // ---- 6. crash-consistent vs application-consistent ----

    async fn crash_vs_app(&mut self) -> anyhow::Result<Verdict> {
        let cg_name = self.app.consistency_group_name();
        let cg_uuid = self
            .sim()
            .sim()
            .read(|s| s.cgs.values().find(|cg| cg.name == cg_name).map(|cg| cg.uuid.clone()))
            .ok_or_else(|| anyhow!("consistency group {cg_name} does not exist (the backups create it)"))?;
        self.say("crash: an array-side consistency-group snapshot with NO quiesce (like a storage snapshot policy),");
        self.say("       FlexCloned over ONTAP REST, opened by the database's own recovery (read-only)");
        self.say("app:   Stasis's backup workflow (quiesce, snapshot, thaw), restored to a FlexClone by restore_to_clone");
        self.load = Some(Load::start(self.db.clone(), self.reference.clone(), self.load_seed.wrapping_add(1)));
        tokio::time::sleep(LOAD_WARM_UP).await;
        let rounds = self.opts.crash_rounds;
        let mut crash = Vec::new();
        let mut app = Vec::new();
        for round in 1..=rounds {
            self.obs.progress("rounds", u64::from(round - 1), u64::from(rounds));
            tokio::time::sleep(Duration::from_millis(self.rng.gen_range(3..20))).await;
            crash.push(self.crash_round(round, &cg_uuid).await.with_context(|| format!("crash-consistent round {round}"))?);
            app.push(self.app_round(round).await.with_context(|| format!("application-consistent round {round}"))?);
        }
        self.obs.progress("rounds", u64::from(rounds), u64::from(rounds));
        if let Some(load) = self.load.take() {
            load.stop().await;
        }

        self.say("");
        self.say(format!("{:<5} {:<6} {:>12} {:>12} {:>7} {:>11}  {}", "ROUND", "KIND", "ACKED/POINT", "RECOVERED", "REPLAY", "LOST ACKED", "STATE"));
        for (c, a) in crash.iter().zip(&app) {
            for (kind, r) in [("crash", c), ("app", a)] {
                self.say(format!(
                    "{:<5} {:<6} {:>12} {:>12} {:>7} {:>11}  {}",
                    r.round,
                    kind,
                    r.claimed_point,
                    r.recovered_point.as_deref().unwrap_or("-"),
                    match r.needed_crash_recovery {
                        Some(true) => format!("{} rec", r.wal_records_replayed),
                        Some(false) => "none".into(),
                        None => "-".into(),
                    },
                    if kind == "crash" && r.lost_acknowledged_commits > 0 { format!(">= {}", r.lost_acknowledged_commits) } else { r.lost_acknowledged_commits.to_string() },
                    state_text(r)
                ));
            }
        }
        let crash = summarize("array snapshot without quiesce, FlexClone, database recovery (read-only)", crash);
        let app = summarize("Stasis backup (quiesce, consistency-group snapshot, thaw), restore_to_clone", app);
        self.say("");
        self.say(format!(
            "crash-consistent:       {}/{} exact; {} needed crash recovery; {} lost acknowledged commits (up to {}); {} torn; {} with anomalies the database itself saw",
            crash.exact, crash.restores, crash.needed_crash_recovery, crash.lost_acknowledged_commits, crash.max_commits_lost, crash.torn, crash.with_anomalies
        ));
        self.say(format!(
            "application-consistent: {}/{} exact at their consistency point; {} needed crash recovery; {} lost acknowledged commits",
            app.exact, app.restores, app.needed_crash_recovery, app.lost_acknowledged_commits
        ));
        if crash.lost_acknowledged_commits == 0 && crash.torn == 0 && crash.with_anomalies == 0 && crash.did_not_open == 0 {
            self.say(format!("note: this time none of the {} crash snapshots lost a commit or came back torn; nothing in flight is luck, not a guarantee", crash.restores));
        }
        let ok = app.exact == app.restores && app.restores == rounds;
        let summary = format!(
            "crash: {}/{} exact, {} lost acked commits, {} torn; app: {}/{} exact",
            crash.exact, crash.restores, crash.lost_acknowledged_commits, crash.torn, app.exact, app.restores
        );
        self.report.crash_vs_app = Some(CrashVsApp { rounds, crash, app });
        Ok(Verdict { ok, summary })
    }

    /// Snapshot the consistency group without quiescing, clone it over REST, and read what
    /// the database's recovery makes of it. The clones and the snapshot are removed again.
    async fn crash_round(&mut self, round: u32, cg_uuid: &str) -> anyhow::Result<RestoreOutcome> {
        let name = format!("demo_crash_{round:02}");
        let acked = self.db.last_committed_txid().unwrap_or_default();
        let cg_snapshot = self
            .sim()
            .sim()
            .transact(|s| s.create_cg_snapshot(cg_uuid, &name, Some("crash-consistent: no quiesce".into()), chrono::Utc::now()))
            .map_err(|e| anyhow!("{e}"))
            .context("taking the crash-consistent snapshot")?;
        let mut clones = Vec::new();
        let mut error = None;
        for v in &self.app_volumes {
            match self.storage.clone_volume(&v.uuid, &name, &format!("{}_crash{round:02}", v.name), None).await {
                Ok(c) => clones.push(c),
                Err(e) => {
                    error = Some(anyhow!("cloning {} from {name}: {e}", v.name));
                    break;
                }
            }
        }
        let recovered = match (&error, clones.as_slice()) {
            (None, [data, log]) => Some(read_recovered(self.data.as_ref(), &SimDbVolumes::split(data.uuid.clone(), log.uuid.clone()))),
            _ => None,
        };
        for c in &clones {
            self.storage.delete_volume(&c.uuid).await.with_context(|| format!("deleting clone {}", c.name))?;
        }
        self.sim().sim().transact(|s| s.delete_cg_snapshot(cg_uuid, &cg_snapshot)).map_err(|e| anyhow!("{e}")).with_context(|| format!("deleting snapshot {name}"))?;
        if let Some(e) = error {
            return Err(e);
        }
        let recovered = recovered.ok_or_else(|| anyhow!("no clones to read"))?;
        Ok(self.judge(round, name, acked, recovered.map_err(|e| e.to_string()), false))
    }

    /// One backup through the workflow, restored to a clone by the workflow, checked, and
    /// the clone deleted.
    async fn app_round(&mut self, round: u32) -> anyhow::Result<RestoreOutcome> {
        let outcome = self.orchestrator.backup(&self.app, self.plugin.clone()).await.context("backup")?;
        let record = outcome.record;
        let point = record.evidence.consistency_point.as_ref().and_then(parse_consistency_point).ok_or_else(|| anyhow!("backup {} has no consistency point", record.id))?;
        let recoveries_before = self.db.recoveries().len();
        let restore = self.orchestrator.restore_to_clone(&self.app, &record.id, self.plugin.clone()).await;
        let recovered = match &restore {
            Ok(_) => self.db.recoveries().into_iter().skip(recoveries_before).rev().find(|r| r.kind == RecoveryKind::Clone).map(|r| r.outcome).unwrap_or_else(|| Err("no clone recovery recorded".into())),
            Err(e) => Err(format!("restore_to_clone failed: {e}")),
        };
        if let Ok(r) = &restore {
            self.orchestrator.delete_clone_restore(&r.id).await.with_context(|| format!("deleting the clones of restore {}", r.id))?;
        }
        let mut judged = self.judge(round, record.snapshot_name.clone(), point, recovered, true);
        if record.consistency != Some(Consistency::Application) {
            judged.exact = false;
            judged.error = Some(format!("the backup was labelled {:?}", record.consistency));
        }
        if let Ok(r) = &restore {
            if r.recovered_point.as_ref() != Some(&consistency_point(point)) {
                judged.exact = false;
            }
        }
        Ok(judged)
    }

    /// Compare what a restore recovered with the reference model.
    fn judge(&self, round: u32, snapshot: String, claimed: u64, recovered: Result<RecoveredDb, String>, app: bool) -> RestoreOutcome {
        let mut out = RestoreOutcome {
            round,
            snapshot,
            claimed_point: consistency_point(claimed).0,
            recovered_point: None,
            needed_crash_recovery: None,
            wal_records_replayed: 0,
            wal_bytes_discarded: 0,
            lost_acknowledged_commits: 0,
            values_match_recovered_point: false,
            values_match_txid: None,
            torn: false,
            anomalies: Vec::new(),
            error: None,
            exact: false,
        };
        let r = match recovered {
            Ok(r) => r,
            Err(e) => {
                out.error = Some(e);
                return out;
            }
        };
        let reference = self.reference.lock();
        out.recovered_point = Some(consistency_point(r.last_txid).0);
        out.needed_crash_recovery = Some(r.needed_crash_recovery);
        out.wal_records_replayed = r.n_replayed;
        out.wal_bytes_discarded = r.discarded_wal_bytes;
        out.lost_acknowledged_commits = claimed.saturating_sub(r.last_txid);
        out.values_match_recovered_point = reference.at(r.last_txid).is_some_and(|v| v == r.values);
        if !out.values_match_recovered_point {
            out.values_match_txid = reference.first_match(&r.values);
            out.torn = out.values_match_txid.is_none();
        }
        out.anomalies = r.anomalies.clone();
        out.exact = out.values_match_recovered_point && r.last_txid == claimed && r.anomalies.is_empty() && (!app || !r.needed_crash_recovery);
        out
    }

    // ---- the final table ----

    fn summary(&self) {
        let o = self.obs;
        o.say("");
        o.say("Summary");
        o.say(&format!("  {:<13} {:<7} {:>8}  {}", "STEP", "RESULT", "TIME", "DETAIL"));
        for s in &self.report.steps {
            let detail = s.error.clone().unwrap_or_else(|| s.summary.clone());
            o.say(&format!("  {:<13} {:<7} {:>6.2} s  {}", s.name, if s.ok { "ok" } else { "FAILED" }, s.seconds, detail));
        }
        o.say(&format!("  {:<13} {:<7} {:>8}  {}", "failover", "n/a", "-", "not built yet (site B, SnapMirror)"));
        o.say(&format!(
            "verdict: {}  (workload: simdb, the simulated database; total {:.1} s)",
            if self.report.ok { "PASS, every verification passed" } else { "FAIL, see the steps above" },
            self.report.seconds
        ));
    }
}

fn state_text(r: &RestoreOutcome) -> String {
    if let Some(e) = &r.error {
        return format!("did not open: {e}");
    }
    let mut parts = Vec::new();
    if r.exact {
        parts.push("exact".to_string());
    } else if r.values_match_recovered_point {
        parts.push("consistent, at an earlier point".to_string());
    } else if r.torn {
        parts.push("TORN: matches no acknowledged state".to_string());
    } else if let Some(txid) = r.values_match_txid {
        parts.push(format!("values are those of txid={txid}, not of the point it reports"));
    }
    if let Some(a) = r.anomalies.first() {
        parts.push(format!("database saw: {a}"));
    }
    parts.join("; ")
}

fn summarize(how: &'static str, results: Vec<RestoreOutcome>) -> SideSummary {
    SideSummary {
        how,
        restores: results.len() as u32,
        exact: results.iter().filter(|r| r.exact).count() as u32,
        needed_crash_recovery: results.iter().filter(|r| r.needed_crash_recovery == Some(true)).count() as u32,
        lost_acknowledged_commits: results.iter().filter(|r| r.lost_acknowledged_commits > 0).count() as u32,
        max_commits_lost: results.iter().map(|r| r.lost_acknowledged_commits).max().unwrap_or(0),
        torn: results.iter().filter(|r| r.torn).count() as u32,
        with_anomalies: results.iter().filter(|r| !r.anomalies.is_empty()).count() as u32,
        did_not_open: results.iter().filter(|r| r.error.is_some()).count() as u32,
        results,
    }
}

/// Fail fast on options that cannot make a meaningful demo.
pub fn validate(opts: &DemoOptions) -> anyhow::Result<()> {
    if opts.backups == 0 || opts.crash_rounds == 0 {
        bail!("the demo needs at least one backup and one crash-vs-app round");
    }
    if opts.freeze_timeout < Duration::from_millis(50) {
        bail!("the freeze bound must be at least 50 ms");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_replays_and_finds_states() {
        let mut r = Reference::new(vec![5, 5, 5]);
        r.push(1, vec![(0, 4), (1, 6)]);
        r.push(2, vec![(2, 0)]);
        assert_eq!(r.at(0), Some(vec![5, 5, 5]));
        assert_eq!(r.at(1), Some(vec![4, 6, 5]));
        assert_eq!(r.at(2), Some(vec![4, 6, 0]));
        assert_eq!(r.at(3), None);
        assert_eq!(r.first_match(&[4, 6, 5]), Some(1));
        assert_eq!(r.first_match(&[4, 5, 0]), None, "torn: txid 2 without txid 1");
        r.truncate(1);
        assert_eq!(r.last_txid(), 1);
        r.push(2, vec![(0, 9)]);
        assert_eq!(r.at(2), Some(vec![9, 6, 5]));
        assert_eq!(r.gaps, 0);
    }

    #[test]
    fn formatting() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1 << 30), "1.0 GiB");
        assert_eq!(human_bytes(10 << 30), "10 GiB");
        assert_eq!(grouped(1_200_000), "1,200,000");
        assert_eq!(grouped(999), "999");
    }
}
